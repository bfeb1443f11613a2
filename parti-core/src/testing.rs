//! The Store conformance suite: one plain async function per behaviour of the
//! [`Store`] contract, for every backend's tests to call.
//!
//! Each function opens its own uniquely named bucket, so the functions can run in parallel
//! against one server. They panic with a message naming the broken rule.
//!
//! The [`store_conformance_tests!`](crate::store_conformance_tests) macro writes one test per
//! function for a backend:
//!
//! ```
//! mod conformance {
//!     use std::time::Duration;
//!     use parti_core::{store::MemoryStore, testing::TtlTiming};
//!
//!     parti_core::store_conformance_tests! {
//!         #[tokio::test(start_paused = true)]
//!         store = MemoryStore::new();
//!         timing = TtlTiming::exact(Duration::from_secs(1));
//!     }
//! }
//! # fn main() {}
//! ```
//!
//! Time-based functions take a [`TtlTiming`]: a backend on tokio's paused clock can demand
//! exact expiry, a real server gets a tolerance.

pub use crate::runtime::freeze::Freezer;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::store::{
    Bucket, BucketSpec, DeleteReason, Entry, Revision, Store, StoreError, WatchEvent, WatchFrom,
    WatchStream,
};

/// How long to wait for a watch event before failing.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The TTL to test expiry with, and how far from exact the backend may be — in two bounds,
/// because they matter differently:
///
/// - **early**: an entry must still be live at its write's *send* time + `ttl` − `early`.
///   parti's safety argument rests on this one (a worker fences itself at send time + ttl −
///   margin, and its revoke hook is cut half the margin later, so the entry must outlive
///   that): backends must pass with `early` at most half the default margin, max(100 ms,
///   10 % of the TTL) / 2.
/// - **late**: an entry must be gone by its acknowledgement + `ttl` + `late`. This only
///   delays failover, so a real server may take longer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlTiming {
    /// The bucket TTL.
    pub ttl: Duration,
    /// How much before `send + ttl` the entry may vanish (zero: not before).
    pub early: Duration,
    /// How much after `ack + ttl` the entry may linger (zero: not after).
    pub late: Duration,
}

impl TtlTiming {
    /// Expiry must happen exactly `ttl` after the last write (paused clock).
    pub fn exact(ttl: Duration) -> Self {
        Self {
            ttl,
            early: Duration::ZERO,
            late: Duration::ZERO,
        }
    }

    /// A real server: the entry may vanish at most half the default safety margin before
    /// `send + ttl` (what the safety argument needs), and linger up to `late` after
    /// `ack + ttl`.
    pub fn real(ttl: Duration, late: Duration) -> Self {
        let margin = (ttl / 10).max(Duration::from_millis(100));
        Self {
            ttl,
            early: margin / 2,
            late,
        }
    }

    /// The last instant the entry must still be there.
    fn still_live_at(&self, sent: Instant) -> Instant {
        sent + self.ttl - self.early.max(Duration::from_millis(1))
    }

    /// The instant by which the entry must be gone.
    fn gone_by(&self, acked: Instant) -> Instant {
        acked + self.ttl + self.late
    }
}

/// Writes one test per conformance function for a backend. See the [module docs](self).
#[macro_export]
macro_rules! store_conformance_tests {
    (#[$attr:meta] store = $store:expr; timing = $timing:expr $(;)?) => {
        $crate::store_conformance_tests!(@each #[$attr] ($store) ($timing)
            plain: get_missing_key_is_none, create_then_get, create_existing_key_fails,
                create_over_deleted_key_succeeds, update_at_current_revision_succeeds,
                update_at_stale_revision_conflicts, update_of_missing_key_conflicts,
                put_overwrites, delete_without_revision, delete_with_revision,
                revisions_strictly_increase_and_are_never_reused, keys_and_entries_by_prefix,
                invalid_keys_are_rejected, create_race_exactly_one_wins,
                update_race_exactly_one_wins, watch_sees_puts_and_deletes_in_revision_order,
                watch_filters_by_prefix, watch_key_sees_only_its_key,
                watch_from_current_replays_then_follows,
                watch_from_revision_resumes, reopening_a_bucket_binds_to_it,
                reopening_with_another_ttl_is_a_mismatch, deleted_bucket_is_not_found,
                reads_see_every_acknowledged_write;
            timed: ttl_expires_exactly_after_the_last_write, ttl_is_measured_from_the_last_write,
                ttl_expiry_is_seen_by_watchers
        );
    };
    (@each #[$attr:meta] ($store:expr) ($timing:expr)
        plain: $($plain:ident),* ; timed: $($timed:ident),*) => {
        $(
            #[$attr]
            async fn $plain() {
                let store = $store;
                $crate::testing::$plain(&store).await;
            }
        )*
        $(
            #[$attr]
            async fn $timed() {
                let store = $store;
                $crate::testing::$timed(&store, $timing).await;
            }
        )*
    };
}

static BUCKETS: AtomicU64 = AtomicU64::new(0);

/// A bucket name no other conformance function of this process uses.
fn unique_name(tag: &str) -> String {
    let n = BUCKETS.fetch_add(1, Ordering::Relaxed);
    format!("conf-{tag}-{}-{n}", std::process::id())
}

async fn open<S: Store>(store: &S, tag: &str) -> S::Bucket {
    open_spec(
        store,
        BucketSpec::new(unique_name(tag)).expect("valid name"),
    )
    .await
}

async fn open_spec<S: Store>(store: &S, spec: BucketSpec) -> S::Bucket {
    match store.bucket(&spec).await {
        Ok(bucket) => bucket,
        Err(e) => panic!("opening bucket {}: {e}", spec.name()),
    }
}

fn value(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn must<T>(what: &str, result: Result<T, StoreError>) -> T {
    match result {
        Ok(t) => t,
        Err(e) => panic!("{what} failed: {e}"),
    }
}

async fn get<B: Bucket>(bucket: &B, key: &str) -> Option<Entry> {
    must(&format!("get {key}"), bucket.get(key).await)
}

async fn next_event(watch: &mut WatchStream) -> WatchEvent {
    match tokio::time::timeout(EVENT_TIMEOUT, watch.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended while an event was expected"),
        Err(_) => panic!("no watch event within {EVENT_TIMEOUT:?}"),
    }
}

fn assert_put(event: &WatchEvent, key: &str, val: &str, revision: Revision) {
    match event {
        WatchEvent::Put(entry) => {
            assert_eq!(
                (entry.key.as_str(), &entry.value[..], entry.revision),
                (key, val.as_bytes(), revision),
                "unexpected put event"
            );
        }
        other => panic!("expected a put of {key}@{revision}, got {other:?}"),
    }
}

/// A change a test made, as a watcher should see it.
#[derive(Debug, Clone, Copy)]
enum Change<'a> {
    /// `key` written with `value`, at this revision.
    Put(&'a str, &'a str, Revision),
    /// `key` deleted (the revision is the store's to choose).
    Delete(&'a str, DeleteReason),
}

impl Change<'_> {
    fn key(&self) -> &str {
        match self {
            Self::Put(key, ..) | Self::Delete(key, _) => key,
        }
    }

    fn is(&self, event: &WatchEvent) -> bool {
        match (*self, event) {
            (Self::Put(key, val, revision), WatchEvent::Put(entry)) => {
                (entry.key.as_str(), &entry.value[..], entry.revision)
                    == (key, val.as_bytes(), revision)
            }
            (
                Self::Delete(key, reason),
                WatchEvent::Delete {
                    key: k, reason: r, ..
                },
            ) => k == key && *r == reason,
            _ => false,
        }
    }
}

/// Reads `watch` until it delivered the last of `changes` (made in this order) and checks
/// what it delivered against the contract: revisions strictly increasing, each event one of
/// `changes` in their order, and a change missing only where a later change of the same key
/// superseded it — so each key's last change is always delivered.
async fn assert_watch_shows(watch: &mut WatchStream, changes: &[Change<'_>]) {
    let mut delivered: Vec<WatchEvent> = Vec::new();
    let mut next = 0;
    while next < changes.len() {
        let event = next_event(watch).await;
        if let Some(before) = delivered.last() {
            assert!(
                before.revision() < event.revision(),
                "revisions must strictly increase: {event:?} after {before:?}"
            );
        }
        let Some(offset) = changes[next..].iter().position(|c| c.is(&event)) else {
            panic!(
                "{event:?} is none of the changes still due, {:?}",
                &changes[next..]
            );
        };
        for (skipped, change) in changes[next..next + offset].iter().enumerate() {
            let superseded = changes[next + skipped + 1..]
                .iter()
                .any(|later| later.key() == change.key());
            assert!(
                superseded,
                "{change:?} was not delivered and nothing superseded it (got {event:?})"
            );
        }
        next += offset + 1;
        delivered.push(event);
    }
}

fn assert_delete(event: &WatchEvent, key: &str, reason: DeleteReason) -> Revision {
    match event {
        WatchEvent::Delete {
            key: k,
            revision,
            reason: r,
        } if k == key && *r == reason => *revision,
        other => panic!("expected a {reason:?} delete of {key}, got {other:?}"),
    }
}

/// `get` of a key never written returns `None`.
pub async fn get_missing_key_is_none<S: Store>(store: &S) {
    let bucket = open(store, "get-missing").await;
    assert_eq!(get(&bucket, "nobody").await, None);
}

/// `create` returns a revision; `get` returns the value with that revision.
pub async fn create_then_get<S: Store>(store: &S) {
    let bucket = open(store, "create-get").await;
    let revision = must("create", bucket.create("k", value("v1")).await);
    let entry = get(&bucket, "k").await.expect("created key must be live");
    assert_eq!(entry.key, "k");
    assert_eq!(&entry.value[..], b"v1");
    assert_eq!(entry.revision, revision);
}

/// `create` of a live key fails with `AlreadyExists` and leaves the value alone.
pub async fn create_existing_key_fails<S: Store>(store: &S) {
    let bucket = open(store, "create-existing").await;
    let revision = must("create", bucket.create("k", value("first")).await);
    match bucket.create("k", value("second")).await {
        Err(StoreError::AlreadyExists { bucket: b, key }) => {
            assert_eq!((b.as_str(), key.as_str()), (bucket.name(), "k"));
        }
        other => panic!("create of a live key must fail with AlreadyExists, got {other:?}"),
    }
    let entry = get(&bucket, "k").await.expect("still live");
    assert_eq!(
        (&entry.value[..], entry.revision),
        (&b"first"[..], revision)
    );
}

/// `create` succeeds over a deleted key.
pub async fn create_over_deleted_key_succeeds<S: Store>(store: &S) {
    let bucket = open(store, "create-deleted").await;
    let first = must("create", bucket.create("k", value("a")).await);
    must("delete", bucket.delete("k", None).await);
    let second = must("re-create", bucket.create("k", value("b")).await);
    assert!(
        second > first,
        "re-create revision {second} must exceed {first}"
    );
    assert_eq!(&get(&bucket, "k").await.expect("live").value[..], b"b");
}

/// `update` at the current revision writes and returns a higher revision.
pub async fn update_at_current_revision_succeeds<S: Store>(store: &S) {
    let bucket = open(store, "update-current").await;
    let r1 = must("create", bucket.create("k", value("a")).await);
    let r2 = must("update", bucket.update("k", value("b"), r1).await);
    assert!(r2 > r1);
    let entry = get(&bucket, "k").await.expect("live");
    assert_eq!((&entry.value[..], entry.revision), (&b"b"[..], r2));
}

/// `update` at an old revision fails with `Conflict` and changes nothing.
pub async fn update_at_stale_revision_conflicts<S: Store>(store: &S) {
    let bucket = open(store, "update-stale").await;
    let r1 = must("create", bucket.create("k", value("a")).await);
    let r2 = must("update", bucket.update("k", value("b"), r1).await);
    match bucket.update("k", value("c"), r1).await {
        Err(StoreError::Conflict { key, expected, .. }) => {
            assert_eq!((key.as_str(), expected), ("k", r1));
        }
        other => panic!("update at a stale revision must conflict, got {other:?}"),
    }
    let entry = get(&bucket, "k").await.expect("live");
    assert_eq!((&entry.value[..], entry.revision), (&b"b"[..], r2));
}

/// `update` of an absent or deleted key fails with `Conflict`.
pub async fn update_of_missing_key_conflicts<S: Store>(store: &S) {
    let bucket = open(store, "update-missing").await;
    let r1 = must("create", bucket.create("other", value("x")).await);
    assert!(
        matches!(
            bucket.update("never", value("v"), r1).await,
            Err(StoreError::Conflict { .. })
        ),
        "update of a key never written must conflict"
    );
    must("delete", bucket.delete("other", None).await);
    assert!(
        matches!(
            bucket.update("other", value("v"), r1).await,
            Err(StoreError::Conflict { .. })
        ),
        "update of a deleted key must conflict"
    );
    assert_eq!(get(&bucket, "other").await, None);
}

/// `put` writes whether or not the key exists, each time with a higher revision.
pub async fn put_overwrites<S: Store>(store: &S) {
    let bucket = open(store, "put").await;
    let r1 = must("put", bucket.put("k", value("a")).await);
    let r2 = must("put", bucket.put("k", value("b")).await);
    assert!(r2 > r1);
    let entry = get(&bucket, "k").await.expect("live");
    assert_eq!((&entry.value[..], entry.revision), (&b"b"[..], r2));
}

/// `delete` without a revision removes a live key, and succeeds on an absent one.
pub async fn delete_without_revision<S: Store>(store: &S) {
    let bucket = open(store, "delete").await;
    must("put", bucket.put("k", value("a")).await);
    must("delete", bucket.delete("k", None).await);
    assert_eq!(get(&bucket, "k").await, None);
    must(
        "delete of an absent key",
        bucket.delete("never", None).await,
    );
}

/// `delete` with a revision removes the key only at that revision.
pub async fn delete_with_revision<S: Store>(store: &S) {
    let bucket = open(store, "delete-rev").await;
    let r1 = must("create", bucket.create("k", value("a")).await);
    let r2 = must("update", bucket.update("k", value("b"), r1).await);
    assert!(
        matches!(
            bucket.delete("k", Some(r1)).await,
            Err(StoreError::Conflict { .. })
        ),
        "delete at a stale revision must conflict"
    );
    assert!(
        get(&bucket, "k").await.is_some(),
        "a refused delete removes nothing"
    );
    must(
        "delete at the current revision",
        bucket.delete("k", Some(r2)).await,
    );
    assert_eq!(get(&bucket, "k").await, None);
    assert!(
        matches!(
            bucket.delete("k", Some(r2)).await,
            Err(StoreError::Conflict { .. })
        ),
        "delete with a revision of a deleted key must conflict"
    );
}

/// Revisions grow with every write, across keys, deletes and re-creates.
pub async fn revisions_strictly_increase_and_are_never_reused<S: Store>(store: &S) {
    let bucket = open(store, "revisions").await;
    let mut watch = must("watch", bucket.watch("", WatchFrom::Now).await);
    let mut written = Vec::new();
    written.push(must("create a", bucket.create("a", value("1")).await));
    written.push(must("put b", bucket.put("b", value("1")).await));
    written.push(must(
        "update a",
        bucket.update("a", value("2"), written[0]).await,
    ));
    must("delete a", bucket.delete("a", None).await);
    written.push(must("re-create a", bucket.create("a", value("3")).await));
    must("delete b", bucket.delete("b", Some(written[1])).await);
    written.push(must("put b", bucket.put("b", value("2")).await));
    assert!(
        written.windows(2).all(|w| w[0] < w[1]),
        "revisions must strictly increase: {written:?}"
    );

    // The deletes' revisions are checked by the watch: strictly between their neighbours'.
    let deleted = DeleteReason::Deleted;
    assert_watch_shows(
        &mut watch,
        &[
            Change::Put("a", "1", written[0]),
            Change::Put("b", "1", written[1]),
            Change::Put("a", "2", written[2]),
            Change::Delete("a", deleted),
            Change::Put("a", "3", written[3]),
            Change::Delete("b", deleted),
            Change::Put("b", "2", written[4]),
        ],
    )
    .await;
}

/// `keys` and `entries` list live keys under a prefix, sorted; deleted keys are absent.
pub async fn keys_and_entries_by_prefix<S: Store>(store: &S) {
    let bucket = open(store, "keys").await;
    for key in ["job.2", "job.1", "job.3", "other"] {
        must("put", bucket.put(key, value(key)).await);
    }
    must("delete", bucket.delete("job.3", None).await);
    assert_eq!(must("keys", bucket.keys("job.").await), ["job.1", "job.2"]);
    assert_eq!(
        must("keys", bucket.keys("").await),
        ["job.1", "job.2", "other"]
    );
    assert!(must("keys", bucket.keys("none").await).is_empty());
    let entries = must("entries", bucket.entries("job.").await);
    let listed: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|e| (e.key.as_str(), &e.value[..]))
        .collect();
    assert_eq!(listed, [("job.1", &b"job.1"[..]), ("job.2", &b"job.2"[..])]);
}

/// Keys and prefixes outside the allowed characters are refused with `InvalidKey`.
pub async fn invalid_keys_are_rejected<S: Store>(store: &S) {
    let bucket = open(store, "invalid").await;
    for key in [
        "",
        "has space",
        "star*",
        "gt>",
        ".lead",
        "trail.",
        "dou..ble",
    ] {
        assert!(
            matches!(
                bucket.put(key, value("x")).await,
                Err(StoreError::InvalidKey { .. })
            ),
            "put of {key:?} must be refused"
        );
        assert!(
            matches!(bucket.get(key).await, Err(StoreError::InvalidKey { .. })),
            "get of {key:?} must be refused"
        );
    }
    assert!(matches!(
        bucket.keys("a b").await,
        Err(StoreError::InvalidKey { .. })
    ));
    assert!(matches!(
        bucket.watch(">", WatchFrom::Now).await,
        Err(StoreError::InvalidKey { .. })
    ));
    assert!(matches!(
        store
            .bucket(&BucketSpec::new("ok").expect("valid").with_replicas(0))
            .await,
        Err(StoreError::InvalidBucket { .. })
    ));
}

/// 32 tasks `create` the same key at once: exactly one succeeds, the rest see
/// `AlreadyExists`.
pub async fn create_race_exactly_one_wins<S: Store>(store: &S) {
    let bucket = open(store, "create-race").await;
    let mut tasks = JoinSet::new();
    for task in 0..32 {
        let bucket = bucket.clone();
        tasks.spawn(async move {
            let result = bucket
                .create("contended", value(&format!("task-{task}")))
                .await;
            (task, result)
        });
    }
    let mut winners = Vec::new();
    let mut losers = 0;
    while let Some(joined) = tasks.join_next().await {
        let (task, result) = joined.expect("create task panicked");
        match result {
            Ok(revision) => winners.push((task, revision)),
            Err(StoreError::AlreadyExists { .. }) => losers += 1,
            Err(e) => panic!("create race: unexpected error {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one create must win: {winners:?}");
    assert_eq!(losers, 31);
    let (task, revision) = winners[0];
    let entry = get(&bucket, "contended").await.expect("live");
    assert_eq!(entry.revision, revision);
    assert_eq!(&entry.value[..], format!("task-{task}").as_bytes());
}

/// 32 tasks `update` the same key from the same revision: exactly one succeeds, the rest see
/// `Conflict`.
pub async fn update_race_exactly_one_wins<S: Store>(store: &S) {
    let bucket = open(store, "update-race").await;
    let start = must("create", bucket.create("contended", value("start")).await);
    let mut tasks = JoinSet::new();
    for task in 0..32 {
        let bucket = bucket.clone();
        tasks.spawn(async move {
            let result = bucket
                .update("contended", value(&format!("task-{task}")), start)
                .await;
            (task, result)
        });
    }
    let mut winners = Vec::new();
    let mut losers = 0;
    while let Some(joined) = tasks.join_next().await {
        let (task, result) = joined.expect("update task panicked");
        match result {
            Ok(revision) => winners.push((task, revision)),
            Err(StoreError::Conflict { .. }) => losers += 1,
            Err(e) => panic!("update race: unexpected error {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one update must win: {winners:?}");
    assert_eq!(losers, 31);
    let (task, revision) = winners[0];
    let entry = get(&bucket, "contended").await.expect("live");
    assert_eq!(entry.revision, revision);
    assert_eq!(&entry.value[..], format!("task-{task}").as_bytes());
}

/// A watcher sees puts and deletes in revision order, with the revisions the writes
/// returned: each key's last change, and every earlier one not superseded before delivery.
/// (On NATS a change is skipped when a later write of its key lands before the watch's
/// consumer reads it: the bucket keeps one record per key.)
pub async fn watch_sees_puts_and_deletes_in_revision_order<S: Store>(store: &S) {
    let bucket = open(store, "watch-order").await;
    let mut watch = must("watch", bucket.watch("", WatchFrom::Now).await);
    let r1 = must("put a", bucket.put("a", value("1")).await);
    let r2 = must("create b", bucket.create("b", value("1")).await);
    must("delete a", bucket.delete("a", None).await);
    let r4 = must("create a", bucket.create("a", value("2")).await);
    let r5 = must("update b", bucket.update("b", value("2"), r2).await);
    must("delete b", bucket.delete("b", Some(r5)).await);

    let deleted = DeleteReason::Deleted;
    assert_watch_shows(
        &mut watch,
        &[
            Change::Put("a", "1", r1),
            Change::Put("b", "1", r2),
            Change::Delete("a", deleted),
            Change::Put("a", "2", r4),
            Change::Put("b", "2", r5),
            Change::Delete("b", deleted),
        ],
    )
    .await;
}

/// A watcher of a prefix sees only keys under it.
pub async fn watch_filters_by_prefix<S: Store>(store: &S) {
    let bucket = open(store, "watch-prefix").await;
    let mut watch = must("watch", bucket.watch("job.", WatchFrom::Now).await);
    must("put", bucket.put("other", value("x")).await);
    let r = must("put", bucket.put("job.1", value("y")).await);
    must("put", bucket.put("jobless", value("z")).await);
    must("delete", bucket.delete("job.1", None).await);
    assert_watch_shows(
        &mut watch,
        &[
            Change::Put("job.1", "y", r),
            Change::Delete("job.1", DeleteReason::Deleted),
        ],
    )
    .await;
    let last = must("put", bucket.put("job.2", value("w")).await);
    assert_put(&next_event(&mut watch).await, "job.2", "w", last);
}

/// A key watch sees that key's writes and deletions only — not those of keys it prefixes —
/// and, from `Current`, starts with the key's value.
pub async fn watch_key_sees_only_its_key<S: Store>(store: &S) {
    let bucket = open(store, "watch-key").await;
    let first = must("put", bucket.put("job", value("0")).await);
    must("put", bucket.put("job2", value("x")).await);
    let mut current = must("watch", bucket.watch_key("job", WatchFrom::Current).await);
    assert_put(&next_event(&mut current).await, "job", "0", first);
    let mut watch = must("watch", bucket.watch_key("job", WatchFrom::Now).await);
    must("put", bucket.put("job2", value("y")).await);
    must("put", bucket.put("jo", value("z")).await);
    let r = must("put", bucket.put("job", value("1")).await);
    must("put", bucket.put("job.1", value("w")).await);
    must("delete", bucket.delete("job", None).await);
    for watch in [&mut current, &mut watch] {
        let changes = [
            Change::Put("job", "1", r),
            Change::Delete("job", DeleteReason::Deleted),
        ];
        assert_watch_shows(watch, &changes).await;
    }
    let last = must("put", bucket.put("job", value("2")).await);
    assert_put(&next_event(&mut watch).await, "job", "2", last);
}

/// `WatchFrom::Current` replays live values in revision order, then follows changes.
pub async fn watch_from_current_replays_then_follows<S: Store>(store: &S) {
    let bucket = open(store, "watch-current").await;
    let ra = must("put a", bucket.put("a", value("1")).await);
    must("put b", bucket.put("b", value("1")).await);
    let rc = must("put c", bucket.put("c", value("1")).await);
    must("delete b", bucket.delete("b", None).await);
    let ra2 = must("put a", bucket.put("a", value("2")).await);
    let mut watch = must("watch", bucket.watch("", WatchFrom::Current).await);
    assert_put(&next_event(&mut watch).await, "c", "1", rc);
    assert_put(&next_event(&mut watch).await, "a", "2", ra2);
    assert!(ra < rc);
    let rd = must("put d", bucket.put("d", value("1")).await);
    assert_put(&next_event(&mut watch).await, "d", "1", rd);
}

/// `WatchFrom::Revision` replays the latest record of each key from that revision on —
/// deletes included — then follows changes.
pub async fn watch_from_revision_resumes<S: Store>(store: &S) {
    let bucket = open(store, "watch-revision").await;
    must("put a", bucket.put("a", value("1")).await);
    let rb = must("put b", bucket.put("b", value("1")).await);
    must("delete a", bucket.delete("a", None).await);
    let rc = must("put c", bucket.put("c", value("1")).await);
    let mut watch = must("watch", bucket.watch("", WatchFrom::Revision(rb)).await);
    assert_put(&next_event(&mut watch).await, "b", "1", rb);
    let deleted = assert_delete(&next_event(&mut watch).await, "a", DeleteReason::Deleted);
    assert!(rb < deleted && deleted < rc);
    assert_put(&next_event(&mut watch).await, "c", "1", rc);
    let rd = must("put d", bucket.put("d", value("1")).await);
    assert_put(&next_event(&mut watch).await, "d", "1", rd);
}

/// Opening an existing bucket with the same spec binds to it: the data is shared.
pub async fn reopening_a_bucket_binds_to_it<S: Store>(store: &S) {
    let spec = BucketSpec::new(unique_name("reopen"))
        .expect("valid")
        .with_ttl(Duration::from_secs(60));
    let first = open_spec(store, spec.clone()).await;
    let r = must("put", first.put("k", value("v")).await);
    let second = open_spec(&store.clone(), spec).await;
    let entry = get(&second, "k").await.expect("the same bucket");
    assert_eq!(entry.revision, r);
}

/// Opening an existing bucket with another TTL fails with `BucketMismatch`.
pub async fn reopening_with_another_ttl_is_a_mismatch<S: Store>(store: &S) {
    let spec = BucketSpec::new(unique_name("mismatch"))
        .expect("valid")
        .with_ttl(Duration::from_secs(60));
    open_spec(store, spec.clone()).await;
    let other = spec.with_ttl(Duration::from_secs(30));
    match store.bucket(&other).await {
        Err(StoreError::BucketMismatch { bucket, .. }) => assert_eq!(bucket, other.name()),
        other => panic!("a TTL mismatch must be refused, got {other:?}"),
    }
}

/// A deleted bucket is `NotFound` through old handles, its watches end, and opening it again
/// gives an empty bucket.
pub async fn deleted_bucket_is_not_found<S: Store>(store: &S) {
    let spec = BucketSpec::new(unique_name("deleted")).expect("valid");
    let bucket = open_spec(store, spec.clone()).await;
    must("put", bucket.put("k", value("v")).await);
    let mut watch = must("watch", bucket.watch("", WatchFrom::Now).await);
    must("delete bucket", store.delete_bucket(spec.name()).await);
    match tokio::time::timeout(EVENT_TIMEOUT, watch.next()).await {
        Ok(None | Some(Err(_))) => {}
        Ok(Some(Ok(event))) => panic!("watch of a deleted bucket yielded {event:?}"),
        Err(_) => panic!("watch of a deleted bucket did not end within {EVENT_TIMEOUT:?}"),
    }
    assert!(
        matches!(bucket.get("k").await, Err(StoreError::NotFound { .. })),
        "a handle to a deleted bucket must report NotFound"
    );
    assert!(matches!(
        store.delete_bucket(spec.name()).await,
        Err(StoreError::NotFound { .. })
    ));
    let again = open_spec(store, spec).await;
    assert_eq!(get(&again, "k").await, None);
}

/// What a read-your-writes run found: reads that returned less than an acknowledged write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadReport {
    /// `get`s made.
    pub reads: usize,
    /// `get`s that returned a value older than a write acknowledged before they began.
    pub stale_reads: usize,
    /// Listings (`keys` or `entries`) made.
    pub listings: usize,
    /// Listings that missed a write acknowledged before they began.
    pub stale_listings: usize,
}

/// How often (in rounds) [`reads_see_acknowledged_writes`] also checks a listing.
const LISTING_EVERY: usize = 10;

/// Keys the background writer cycles through.
const BACKGROUND_KEYS: usize = 8;

/// The background writer's pause between writes: a steady load, not a flood.
const BACKGROUND_PAUSE: Duration = Duration::from_millis(1);

/// `get`, `keys` and `entries` see every write acknowledged before they began, with one
/// client writing and reading (two handles of `store`). See
/// [`reads_see_acknowledged_writes`] for the cross-client form a clustered backend needs.
pub async fn reads_see_every_acknowledged_write<S: Store>(store: &S) {
    reads_see_acknowledged_writes(store, &[store.clone(), store.clone()], 500).await;
}

/// Read-your-writes across clients: in each of `rounds` rounds `writer` puts `k = round`
/// and, once that is acknowledged, every reader `get`s `k` and must see that value or a
/// newer one; every tenth round the writer also puts or deletes `list` and a
/// reader's `keys` or `entries` must agree. Another task writes other keys meanwhile, so
/// the store is never idle.
///
/// On a clustered backend, pin the writer and each reader to different nodes: a replica that
/// answers before it has caught up is what this catches. Panics with the counts when any
/// read was stale; returns them otherwise.
pub async fn reads_see_acknowledged_writes<W: Store, R: Store>(
    writer: &W,
    readers: &[R],
    rounds: usize,
) -> ReadReport {
    let spec = BucketSpec::new(unique_name("ryw")).expect("valid name");
    let written = open_spec(writer, spec.clone()).await;
    let mut reading = Vec::with_capacity(readers.len());
    for reader in readers {
        reading.push(open_spec(reader, spec.clone()).await);
    }

    let load = {
        let bucket = written.clone();
        tokio::spawn(async move {
            for n in 0usize.. {
                let key = format!("bg-{}", n % BACKGROUND_KEYS);
                // Errors are not this test's subject; the foreground reports the store's.
                let _ = bucket.put(&key, value(&n.to_string())).await;
                tokio::time::sleep(BACKGROUND_PAUSE).await;
            }
        })
    };

    let mut report = ReadReport::default();
    for round in 1..=rounds {
        must("put", written.put("k", value(&round.to_string())).await);
        for bucket in &reading {
            report.reads += 1;
            let seen = get(bucket, "k").await.and_then(|entry| {
                std::str::from_utf8(&entry.value)
                    .ok()
                    .and_then(|v| v.parse::<usize>().ok())
            });
            if seen.is_none_or(|seen| seen < round) {
                report.stale_reads += 1;
            }
        }
        if round % LISTING_EVERY == 0 {
            // Listings alternate put/delete, and (in pairs) `keys`/`entries`, so each
            // listing sees both outcomes.
            let listing = round / LISTING_EVERY;
            let listed_expected = listing % 2 == 1;
            if listed_expected {
                must("put", written.put("list", value(&round.to_string())).await);
            } else {
                must("delete", written.delete("list", None).await);
            }
            let bucket = &reading[round % reading.len()];
            report.listings += 1;
            let fresh = if (listing / 2) % 2 == 0 {
                let keys = must("keys", bucket.keys("list").await);
                keys.len() == usize::from(listed_expected)
            } else {
                let entries = must("entries", bucket.entries("list").await);
                match &entries[..] {
                    [] => !listed_expected,
                    [entry] => listed_expected && entry.value == value(&round.to_string()),
                    _ => false,
                }
            };
            if !fresh {
                report.stale_listings += 1;
            }
        }
    }
    load.abort();
    assert!(
        report.stale_reads == 0 && report.stale_listings == 0,
        "reads missed acknowledged writes: {report:?}"
    );
    report
}

async fn open_ttl<S: Store>(store: &S, tag: &str, timing: TtlTiming) -> S::Bucket {
    let spec = BucketSpec::new(unique_name(tag))
        .expect("valid")
        .with_ttl(timing.ttl);
    open_spec(store, spec).await
}

/// An entry is live until `ttl` after its write and gone at `ttl` (within the early and
/// late bounds) — for `get`, `keys` and `entries` alike — and can be created again after.
pub async fn ttl_expires_exactly_after_the_last_write<S: Store>(store: &S, timing: TtlTiming) {
    let bucket = open_ttl(store, "ttl", timing).await;
    let sent = Instant::now();
    let written = must("put", bucket.put("k", value("v")).await);
    let acked = Instant::now();

    tokio::time::sleep_until(timing.still_live_at(sent)).await;
    assert!(
        get(&bucket, "k").await.is_some(),
        "entry expired before its TTL"
    );
    tokio::time::sleep_until(timing.gone_by(acked)).await;
    assert_eq!(get(&bucket, "k").await, None, "entry outlived its TTL");
    assert!(must("keys", bucket.keys("").await).is_empty());
    assert!(must("entries", bucket.entries("").await).is_empty());
    let again = must("create after expiry", bucket.create("k", value("w")).await);
    assert!(again > written);
}

/// Every write restarts the TTL: expiry is measured from the last write, not the first.
pub async fn ttl_is_measured_from_the_last_write<S: Store>(store: &S, timing: TtlTiming) {
    assert!(
        timing.ttl > timing.late * 4,
        "the TTL must exceed four times the late bound for this test"
    );
    let bucket = open_ttl(store, "ttl-last", timing).await;
    let first_acked = {
        must("put", bucket.put("k", value("1")).await);
        Instant::now()
    };
    tokio::time::sleep_until(first_acked + timing.ttl / 2).await;
    let second_sent = Instant::now();
    must("put again", bucket.put("k", value("2")).await);
    let second_acked = Instant::now();

    // Past the first write's expiry, within the second's.
    tokio::time::sleep_until(timing.gone_by(first_acked)).await;
    assert!(
        get(&bucket, "k").await.is_some(),
        "expiry was measured from the first write"
    );
    tokio::time::sleep_until(timing.still_live_at(second_sent)).await;
    assert!(get(&bucket, "k").await.is_some());
    tokio::time::sleep_until(timing.gone_by(second_acked)).await;
    assert_eq!(
        get(&bucket, "k").await,
        None,
        "entry outlived its last write's TTL"
    );
}

/// A watcher sees an expiry as a delete with reason `Expired`, when it is due, with a
/// revision above the write's.
pub async fn ttl_expiry_is_seen_by_watchers<S: Store>(store: &S, timing: TtlTiming) {
    let bucket = open_ttl(store, "ttl-watch", timing).await;
    let mut watch = must("watch", bucket.watch("", WatchFrom::Now).await);
    let sent = Instant::now();
    let written = must("put", bucket.put("k", value("v")).await);
    let acked = Instant::now();
    assert_put(&next_event(&mut watch).await, "k", "v", written);

    let expired = assert_delete(&next_event(&mut watch).await, "k", DeleteReason::Expired);
    let seen = Instant::now();
    assert!(
        expired > written,
        "expiry revision {expired} not above {written}"
    );
    assert!(
        seen > timing.still_live_at(sent),
        "expiry seen {:?} after the write, before the TTL",
        seen - sent
    );
    assert!(
        seen <= timing.gone_by(acked) + timing.late,
        "expiry seen {:?} after the write, too late",
        seen - acked
    );
    assert_eq!(get(&bucket, "k").await, None);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, val: &str, revision: u64) -> WatchEvent {
        WatchEvent::Put(Entry {
            key: key.to_owned(),
            value: value(val),
            revision: Revision::new(revision),
        })
    }

    fn delete(key: &str, revision: u64) -> WatchEvent {
        WatchEvent::Delete {
            key: key.to_owned(),
            revision: Revision::new(revision),
            reason: DeleteReason::Deleted,
        }
    }

    /// Whether `assert_watch_shows` accepts `events` for: put a@1, put b@2, put a@3,
    /// delete a, put b@5.
    async fn accepts(events: Vec<WatchEvent>) -> bool {
        let mut watch = WatchStream::new(futures_util::stream::iter(events.into_iter().map(Ok)));
        let changes = [
            Change::Put("a", "1", Revision::new(1)),
            Change::Put("b", "1", Revision::new(2)),
            Change::Put("a", "2", Revision::new(3)),
            Change::Delete("a", DeleteReason::Deleted),
            Change::Put("b", "2", Revision::new(5)),
        ];
        let check = tokio::spawn(async move { assert_watch_shows(&mut watch, &changes).await });
        check.await.is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_may_skip_only_superseded_changes() {
        let every = || {
            vec![
                put("a", "1", 1),
                put("b", "1", 2),
                put("a", "2", 3),
                delete("a", 4),
                put("b", "2", 5),
            ]
        };
        assert!(accepts(every()).await, "every change");
        let superseded = vec![put("b", "1", 2), delete("a", 4), put("b", "2", 5)];
        assert!(accepts(superseded).await, "a's puts and b's first skipped");

        let latest_missing = vec![
            put("a", "1", 1),
            put("b", "1", 2),
            put("a", "2", 3),
            put("b", "2", 5),
        ];
        assert!(
            !accepts(latest_missing).await,
            "a's delete is its latest change"
        );
        let out_of_order = vec![
            put("b", "1", 2),
            put("a", "1", 1),
            delete("a", 4),
            put("b", "2", 5),
        ];
        assert!(!accepts(out_of_order).await, "revisions go back");
        let repeated = vec![
            put("a", "1", 1),
            put("a", "1", 1),
            delete("a", 4),
            put("b", "2", 5),
        ];
        assert!(!accepts(repeated).await, "a change twice");
        let foreign = vec![
            put("a", "1", 1),
            put("c", "1", 2),
            delete("a", 4),
            put("b", "2", 5),
        ];
        assert!(!accepts(foreign).await, "a change nobody made");
        let wrong_value = vec![put("a", "9", 1), delete("a", 4), put("b", "2", 5)];
        assert!(!accepts(wrong_value).await, "a value nobody wrote");
    }
}
