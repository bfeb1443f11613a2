//! The `Store` contract: the key-value operations parti coordinates through, and the
//! embedded [`MemoryStore`].
//!
//! A [`Store`] opens [`Bucket`]s described by a [`BucketSpec`] (name, optional TTL, replicas,
//! storage). A bucket holds one value per key, each stamped with a [`Revision`]:
//!
//! - revisions are per bucket, strictly increasing and never reused, also across deletes and
//!   re-creates — so the revision of a successful `create` is a valid monotonic epoch (parti's
//!   leader term is one);
//! - [`Bucket::create`] succeeds only if the key is not live, else
//!   [`StoreError::AlreadyExists`];
//! - [`Bucket::update`] and [`Bucket::delete`] with an expected revision succeed only if the
//!   key is live at that revision, else [`StoreError::Conflict`] — compare-and-set;
//! - in a bucket with a TTL, an entry expires that long after its *last* write; expiry is seen
//!   by [`Bucket::get`] and [`Bucket::keys`] at once and by watchers as a
//!   [`WatchEvent::Delete`] with [`DeleteReason::Expired`] (where the backend can report it:
//!   the memory store always does);
//! - [`Bucket::watch`] yields puts and deletes of keys under a prefix in revision order,
//!   each key's latest change always (see below for what it may skip).
//!
//! # Reads see every acknowledged write
//!
//! Every backend must give these two read guarantees; parti's safety argument rests on them
//! (ARCHITECTURE.md, "Why ownership is exclusive"):
//!
//! - **`get` is never stale**: it returns a value at least as new as every write that was
//!   acknowledged — to any client of the store — before the `get` began.
//! - **A listing reflects every acknowledged write**: [`Bucket::keys`] and
//!   [`Bucket::entries`] report each key as it was at some instant between the call and its
//!   return, so every write acknowledged before the call began is in it (or a later write of
//!   the same key is).
//!
//! The runtime trusts what these reads return: a worker's fresh read of its record after its
//! lease is renewed, the term check before it applies a grant, the id claim's reads, and the
//! leader's heartbeat listing that confirms a worker let go of its partitions. A backend
//! that may answer reads from a replica must send these to the replica that orders the
//! writes (NATS: the stream leader, with direct gets off).
//!
//! Watches promise less: a watch yields the changes after its start in revision order, none
//! twice, and each key's latest change always — but it may skip a change that a later change
//! of the same key superseded before the watch delivered it (a bucket keeps one record per
//! key: a NATS watch reads the bucket's stream at its own pace, and the server drops a
//! key's older record when the key is written again), and it may deliver late (NATS runs it
//! on whichever replica hosts its consumer). The runtime uses watches to learn of changes
//! sooner, never to conclude that something is absent or released, and never counts on
//! seeing a key's every intermediate value.
//!
//! Errors are typed ([`StoreError`]); [`StoreError::is_transient`] tells whether a retry may
//! help, and [`StoreError::OutcomeUnknown`] marks a write whose result never arrived.
//!
//! # Implementing a backend
//!
//! Implement [`Store`] and [`Bucket`] (the methods may be written as `async fn`), validate
//! names with [`BucketSpec::validate`] and the `check_*` functions here, and run the
//! conformance suite in `parti_core::testing` (feature `testing`) from your tests.
//!
//! # Example: a compare-and-set loop
//!
//! ```
//! use parti_core::store::{Bucket, BucketSpec, MemoryStore, Store, StoreError};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), StoreError> {
//! let store = MemoryStore::new();
//! let counters = store.bucket(&BucketSpec::new("counters")?).await?;
//! counters.create("hits", "0".into()).await?;
//!
//! // Increment without losing concurrent increments: retry on conflict.
//! loop {
//!     let current = counters.get("hits").await?.expect("created above");
//!     let n: u64 = std::str::from_utf8(&current.value).unwrap().parse().unwrap();
//!     match counters.update("hits", (n + 1).to_string().into(), current.revision).await {
//!         Ok(_) => break,
//!         Err(StoreError::Conflict { .. }) => continue,
//!         Err(e) => return Err(e),
//!     }
//! }
//! assert_eq!(&counters.get("hits").await?.unwrap().value[..], b"1");
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;

use bytes::Bytes;

mod error;
pub mod memory;
mod names;
mod spec;
mod watch;

pub use error::{BoxError, Operation, StoreError, StoreResult};
pub use memory::{Fault, MemoryBucket, MemoryStore};
pub use names::{check_bucket_name, check_key, check_prefix};
pub use spec::{BucketSpec, MAX_REPLICAS, StorageKind};
pub use watch::{DeleteReason, WatchEvent, WatchFrom, WatchStream};

/// The revision of a write in a bucket: strictly increasing per bucket, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision(u64);

impl Revision {
    /// A revision from its number.
    pub const fn new(revision: u64) -> Self {
        Self(revision)
    }

    /// The revision's number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<Revision> for u64 {
    fn from(revision: Revision) -> Self {
        revision.0
    }
}

/// A live key with its value and the revision of its last write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Bytes,
    /// The revision of the write that stored this value.
    pub revision: Revision,
}

/// A key-value backend that parti coordinates through: it opens [`Bucket`]s.
///
/// Handles are cheap to clone and share one connection. See the [module docs](self) for the
/// contract every backend keeps.
pub trait Store: Clone + fmt::Debug + Send + Sync + 'static {
    /// The bucket handle type.
    type Bucket: Bucket;

    /// Opens the bucket `spec` describes, creating it if it does not exist.
    ///
    /// # Errors
    /// [`StoreError::InvalidBucket`] for an invalid spec, [`StoreError::BucketMismatch`] when
    /// the bucket exists with another TTL, transient errors when the store is unreachable.
    fn bucket(&self, spec: &BucketSpec) -> impl Future<Output = StoreResult<Self::Bucket>> + Send;

    /// Deletes a bucket and everything in it. Open handles to it then fail with
    /// [`StoreError::NotFound`] and its watches end.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when there is no such bucket.
    fn delete_bucket(&self, name: &str) -> impl Future<Output = StoreResult<()>> + Send;
}

/// One bucket of a [`Store`]: keys with values and revisions.
pub trait Bucket: Clone + fmt::Debug + Send + Sync + 'static {
    /// The bucket's name.
    fn name(&self) -> &str;

    /// The live entry of `key`, or `None` if it is absent, deleted or expired — at least as
    /// new as every write acknowledged before this call began ([module docs](self)).
    fn get(&self, key: &str) -> impl Future<Output = StoreResult<Option<Entry>>> + Send;

    /// Writes `key` only if it is not live (absent, deleted or expired), returning the new
    /// revision.
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`] when the key is live.
    fn create(&self, key: &str, value: Bytes)
    -> impl Future<Output = StoreResult<Revision>> + Send;

    /// Writes `key` only if it is live at `expected`, returning the new revision.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the key is at another revision or not live.
    fn update(
        &self,
        key: &str,
        value: Bytes,
        expected: Revision,
    ) -> impl Future<Output = StoreResult<Revision>> + Send;

    /// Writes `key` unconditionally, returning the new revision.
    fn put(&self, key: &str, value: Bytes) -> impl Future<Output = StoreResult<Revision>> + Send;

    /// Deletes `key`. With `expected`, only if the key is live at that revision (release
    /// "if still mine"); without, unconditionally — deleting an absent key then succeeds.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when `expected` is given and does not match.
    fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// The live keys starting with `prefix` (`""` for all), sorted; each as it was at some
    /// instant during the call, so every write acknowledged before it began is reflected.
    fn keys(&self, prefix: &str) -> impl Future<Output = StoreResult<Vec<String>>> + Send;

    /// The live entries whose keys start with `prefix`, sorted by key; like
    /// [`Bucket::keys`], each as it was at some instant during the call.
    ///
    /// The provided implementation reads [`Bucket::keys`] and then each key; backends with a
    /// faster way to list values should override it.
    fn entries(&self, prefix: &str) -> impl Future<Output = StoreResult<Vec<Entry>>> + Send {
        async move {
            let keys = self.keys(prefix).await?;
            let mut entries = Vec::with_capacity(keys.len());
            for key in keys {
                if let Some(entry) = self.get(&key).await? {
                    entries.push(entry);
                }
            }
            Ok(entries)
        }
    }

    /// Watches the keys starting with `prefix` (`""` for all), from `from`: their changes in
    /// revision order, none twice, each key's latest always; a change superseded by a later
    /// change of its key before it was delivered may be skipped (see the
    /// [module docs](self)).
    fn watch(
        &self,
        prefix: &str,
        from: WatchFrom,
    ) -> impl Future<Output = StoreResult<WatchStream>> + Send;

    /// Watches the one key `key`, from `from`: the events [`watch`](Self::watch) gives for
    /// it, and no other key's. The default filters a prefix watch; a backend that can have
    /// the server filter (NATS: a consumer on the key's subject) overrides it, so that a
    /// watcher does not receive every other key's writes.
    fn watch_key(
        &self,
        key: &str,
        from: WatchFrom,
    ) -> impl Future<Output = StoreResult<WatchStream>> + Send {
        async move { Ok(self.watch(key, from).await?.only_key(key)) }
    }

    /// Asks a replicated backend to keep this bucket's leader on another node than
    /// `other`'s. parti writes heartbeats to two buckets so that losing one node stops at
    /// most one of them — which holds only while their leaders differ; the parti leader
    /// calls this every heartbeat TTL. Returns whether it moved a leader. The default, for
    /// backends without per-bucket leaders (the memory store, one server), does nothing.
    fn keep_leader_apart_from(
        &self,
        other: &Self,
    ) -> impl Future<Output = StoreResult<bool>> + Send {
        let _ = other;
        async { Ok(false) }
    }
}
