//! The data of one memory bucket and every change to it, under one lock.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::store::{DeleteReason, Entry, Revision, StoreError, StoreResult, WatchEvent, WatchFrom};

/// What a watcher's channel carries.
#[derive(Debug)]
pub(super) enum WatchMessage {
    Event(WatchEvent),
    BucketDeleted,
}

/// A bucket shared by every connection that opened it.
#[derive(Debug)]
pub(super) struct BucketCore {
    pub(super) name: String,
    pub(super) ttl: Option<Duration>,
    state: Mutex<BucketState>,
    /// Operations fail for every connection (an injected outage of the bucket).
    failing: std::sync::atomic::AtomicBool,
}

impl BucketCore {
    pub(super) fn new(name: String, ttl: Option<Duration>) -> Self {
        Self {
            name,
            ttl,
            state: Mutex::new(BucketState::new(ttl)),
            failing: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Starts or ends an outage of this bucket for every connection.
    pub(super) fn set_failing(&self, failing: bool) {
        self.failing
            .store(failing, std::sync::atomic::Ordering::SeqCst);
    }

    /// `Unavailable` during an outage of the bucket.
    pub(super) fn check_available(&self, operation: crate::store::Operation) -> StoreResult<()> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::unavailable(
                operation,
                format!("bucket `{}` has no leader (injected outage)", self.name),
            ));
        }
        Ok(())
    }

    /// Runs `change` on the bucket's state after applying every expiry due by now. The lock
    /// is never held across an `.await`: `change` is synchronous.
    pub(super) fn with_state<T>(
        &self,
        change: impl FnOnce(&mut BucketState, Instant) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.deleted {
            return Err(StoreError::NotFound {
                bucket: self.name.clone(),
            });
        }
        let now = Instant::now();
        state.expire(now);
        change(&mut state, now)
    }

    fn lock(&self) -> MutexGuard<'_, BucketState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies every expiry due by now (watchers call this when a deadline passes).
    pub(super) fn expire_due(&self) {
        let _ = self.with_state(|_, _| Ok(()));
    }

    /// When the next entry expires (or a tombstone ages out), if any.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.lock().deadlines.first().map(|(deadline, _)| *deadline)
    }

    /// Marks the bucket deleted, drops its data and ends its watches.
    pub(super) fn mark_deleted(&self) {
        // A deleted bucket is `NotFound` through its old handles, outage or not.
        self.set_failing(false);
        let mut state = self.lock();
        state.deleted = true;
        state.records.clear();
        state.deadlines.clear();
        for watcher in state.watchers.drain(..) {
            let _ = watcher.tx.send(WatchMessage::BucketDeleted);
        }
    }
}

#[derive(Debug, Clone)]
enum Body {
    Value(Bytes),
    Tombstone(DeleteReason),
}

#[derive(Debug, Clone)]
struct Record {
    body: Body,
    revision: Revision,
    written: Instant,
}

impl Record {
    fn event(&self, key: &str) -> WatchEvent {
        match &self.body {
            Body::Value(value) => WatchEvent::Put(Entry {
                key: key.to_owned(),
                value: value.clone(),
                revision: self.revision,
            }),
            Body::Tombstone(reason) => WatchEvent::Delete {
                key: key.to_owned(),
                revision: self.revision,
                reason: *reason,
            },
        }
    }
}

#[derive(Debug)]
struct Watcher {
    prefix: String,
    tx: mpsc::UnboundedSender<WatchMessage>,
}

/// Records (values and tombstones), revisions, TTL deadlines and watchers of one bucket.
#[derive(Debug)]
pub(super) struct BucketState {
    ttl: Option<Duration>,
    last_revision: u64,
    records: HashMap<String, Record>,
    /// (deadline, key) of every record in a bucket with a TTL: a value expires at its
    /// deadline, a tombstone is forgotten at its deadline.
    deadlines: BTreeSet<(Instant, String)>,
    watchers: Vec<Watcher>,
    deleted: bool,
}

impl BucketState {
    fn new(ttl: Option<Duration>) -> Self {
        Self {
            ttl,
            last_revision: 0,
            records: HashMap::new(),
            deadlines: BTreeSet::new(),
            watchers: Vec::new(),
            deleted: false,
        }
    }

    /// The live entry of `key`.
    pub(super) fn live(&self, key: &str) -> Option<Entry> {
        let record = self.records.get(key)?;
        match &record.body {
            Body::Value(value) => Some(Entry {
                key: key.to_owned(),
                value: value.clone(),
                revision: record.revision,
            }),
            Body::Tombstone(_) => None,
        }
    }

    /// The live entries under `prefix`, sorted by key.
    pub(super) fn live_under(&self, prefix: &str) -> Vec<Entry> {
        let mut entries: Vec<Entry> = self
            .records
            .keys()
            .filter(|key| key.starts_with(prefix))
            .filter_map(|key| self.live(key))
            .collect();
        entries.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        entries
    }

    /// Stores `value` under `key` with a new revision.
    pub(super) fn write(&mut self, key: &str, value: Bytes, now: Instant) -> Revision {
        self.set(key, Body::Value(value), now)
    }

    /// Replaces the live value of `key` with a tombstone. Returns `None` if it was not live.
    pub(super) fn remove(
        &mut self,
        key: &str,
        reason: DeleteReason,
        now: Instant,
    ) -> Option<Revision> {
        self.live(key)?;
        Some(self.set(key, Body::Tombstone(reason), now))
    }

    fn set(&mut self, key: &str, body: Body, now: Instant) -> Revision {
        self.last_revision += 1;
        let revision = Revision::new(self.last_revision);
        let record = Record {
            body,
            revision,
            written: now,
        };
        if let Some(ttl) = self.ttl {
            if let Some(old) = self.records.get(key) {
                self.deadlines.remove(&(old.written + ttl, key.to_owned()));
            }
            self.deadlines.insert((now + ttl, key.to_owned()));
        }
        let event = record.event(key);
        self.records.insert(key.to_owned(), record);
        self.notify(event);
        revision
    }

    /// Expires the values whose deadline has passed (a new revision each, in deadline order)
    /// and forgets the tombstones whose deadline has passed.
    fn expire(&mut self, now: Instant) {
        while self
            .deadlines
            .first()
            .is_some_and(|(deadline, _)| *deadline <= now)
        {
            let Some((deadline, key)) = self.deadlines.pop_first() else {
                break;
            };
            match self.records.get(&key).map(|record| &record.body) {
                Some(Body::Value(_)) => {
                    self.set(&key, Body::Tombstone(DeleteReason::Expired), deadline);
                }
                Some(Body::Tombstone(_)) => {
                    self.records.remove(&key);
                }
                None => {}
            }
        }
    }

    fn notify(&mut self, event: WatchEvent) {
        let key = event.key();
        self.watchers.retain(|watcher| {
            !key.starts_with(&watcher.prefix)
                || watcher.tx.send(WatchMessage::Event(event.clone())).is_ok()
        });
    }

    /// Registers a watcher of `prefix` and queues what `from` asks to replay.
    pub(super) fn subscribe(
        &mut self,
        prefix: &str,
        from: WatchFrom,
    ) -> mpsc::UnboundedReceiver<WatchMessage> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut replay: Vec<WatchEvent> = match from {
            WatchFrom::Now => Vec::new(),
            WatchFrom::Current => self
                .records
                .iter()
                .filter(|(key, record)| {
                    key.starts_with(prefix) && matches!(record.body, Body::Value(_))
                })
                .map(|(key, record)| record.event(key))
                .collect(),
            WatchFrom::Revision(from) => self
                .records
                .iter()
                .filter(|(key, record)| key.starts_with(prefix) && record.revision >= from)
                .map(|(key, record)| record.event(key))
                .collect(),
        };
        replay.sort_unstable_by_key(WatchEvent::revision);
        for event in replay {
            // The receiver is still in our hands: sending cannot fail.
            let _ = tx.send(WatchMessage::Event(event));
        }
        self.watchers.push(Watcher {
            prefix: prefix.to_owned(),
            tx,
        });
        rx
    }
}
