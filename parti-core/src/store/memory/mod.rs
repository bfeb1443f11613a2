//! The embedded store: a complete in-process implementation of the [`Store`] contract.
//!
//! [`MemoryStore`] keeps buckets in memory and shares them between every handle made from
//! it, so a whole fleet of managers can run in one process — each with its own *connection*
//! ([`MemoryStore::connect`]) whose faults can be injected separately: lose the connection,
//! fail the next operations, add latency. Time is `tokio::time`, so on a paused clock
//! (`#[tokio::test(start_paused = true)]`) TTL expiry happens exactly when due and tests are
//! deterministic.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;

use super::{
    Bucket, BucketSpec, DeleteReason, Entry, Operation, Revision, Store, StoreError, StoreResult,
    WatchFrom, WatchStream, check_bucket_name, check_key, check_prefix,
};

mod connection;
mod state;
mod watch;

use connection::Connection;
pub use connection::Fault;
use state::BucketCore;

/// The embedded, in-memory [`Store`].
///
/// Cloning a `MemoryStore` gives another handle on the same connection;
/// [`MemoryStore::connect`] gives a new connection to the same data, with its own faults.
///
/// ```
/// use std::time::Duration;
/// use parti_core::store::{Bucket, BucketSpec, Fault, MemoryStore, Store, StoreError};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), StoreError> {
/// let store = MemoryStore::new();
/// let worker = store.connect(); // a second "process" on the same data
/// let spec = BucketSpec::new("parti-heartbeat")?.with_ttl(Duration::from_secs(3));
/// let seen_by_worker = worker.bucket(&spec).await?;
/// let seen_by_store = store.bucket(&spec).await?;
///
/// seen_by_worker.put("worker-0", "alive".into()).await?;
/// assert!(seen_by_store.get("worker-0").await?.is_some());
///
/// worker.disconnect();
/// assert!(seen_by_worker.put("worker-0", "alive".into()).await.unwrap_err().is_transient());
/// worker.reconnect();
///
/// worker.fail_next(1, Fault::Timeout { applied: true });
/// let err = seen_by_worker.put("worker-0", "again".into()).await.unwrap_err();
/// assert!(err.is_outcome_unknown());
/// assert_eq!(&seen_by_store.get("worker-0").await?.unwrap().value[..], b"again");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct MemoryStore {
    buckets: Arc<Mutex<HashMap<String, Arc<BucketCore>>>>,
    connection: Arc<Connection>,
}

impl MemoryStore {
    /// A new, empty store with one connection.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new connection to the same data, with no faults. Give each simulated worker its own.
    pub fn connect(&self) -> Self {
        Self {
            buckets: Arc::clone(&self.buckets),
            connection: Arc::new(Connection::new()),
        }
    }

    /// Cuts this connection: its operations fail with [`StoreError::Unavailable`] and its
    /// watches deliver nothing until [`MemoryStore::reconnect`]; then they resume where they
    /// were, losing nothing. Other connections are not affected.
    pub fn disconnect(&self) {
        self.connection.set_connected(false);
    }

    /// Restores this connection after [`MemoryStore::disconnect`].
    pub fn reconnect(&self) {
        self.connection.set_connected(true);
    }

    /// Whether this connection is up.
    pub fn is_connected(&self) -> bool {
        self.connection.is_connected()
    }

    /// Whether a bucket of this name exists (inspection for tests: it opens nothing).
    pub fn bucket_exists(&self, name: &str) -> bool {
        self.buckets().contains_key(name)
    }

    /// Black-holes this connection, as a link that stops delivering without closing:
    /// operations get no answer and watches deliver nothing until [`MemoryStore::unstall`]
    /// (then they go on, losing nothing) or [`MemoryStore::disconnect`] (then they fail).
    pub fn stall(&self) {
        self.connection.set_stalled(true);
    }

    /// Lifts [`MemoryStore::stall`].
    pub fn unstall(&self) {
        self.connection.set_stalled(false);
    }

    /// Makes the next `count` operations on this connection fail with `fault`.
    pub fn fail_next(&self, count: usize, fault: Fault) {
        self.connection.fail_next(count, fault);
    }

    /// Delays every operation on this connection by `latency` (zero to stop).
    pub fn set_latency(&self, latency: Duration) {
        self.connection.set_latency(latency);
    }

    /// Makes every operation on bucket `name`, through any connection, fail with
    /// [`StoreError::Unavailable`] until [`MemoryStore::restore_bucket`] — as a replicated
    /// bucket whose leader died fails until the other replicas elect one. Its data stays
    /// (entries whose TTL ran out meanwhile are gone when it is back); watches go on.
    /// Returns whether the bucket exists.
    pub fn fail_bucket(&self, name: &str) -> bool {
        self.set_bucket_failing(name, true)
    }

    /// Ends [`MemoryStore::fail_bucket`]. Returns whether the bucket exists.
    pub fn restore_bucket(&self, name: &str) -> bool {
        self.set_bucket_failing(name, false)
    }

    fn set_bucket_failing(&self, name: &str, failing: bool) -> bool {
        let core = self.buckets().get(name).cloned();
        core.map(|core| core.set_failing(failing)).is_some()
    }

    /// Removes every injected fault and reconnects.
    pub fn clear_faults(&self) {
        self.connection.clear_faults();
    }

    fn buckets(&self) -> MutexGuard<'_, HashMap<String, Arc<BucketCore>>> {
        self.buckets.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("buckets", &self.buckets().len())
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl Store for MemoryStore {
    type Bucket = MemoryBucket;

    async fn bucket(&self, spec: &BucketSpec) -> StoreResult<MemoryBucket> {
        spec.validate()?;
        self.connection
            .begin(Operation::OpenBucket, spec.name(), "")
            .await?;
        let mut buckets = self.buckets();
        let core = match buckets.get(spec.name()) {
            Some(core) if core.ttl == spec.ttl() => Arc::clone(core),
            Some(core) => {
                return Err(StoreError::BucketMismatch {
                    bucket: spec.name().to_owned(),
                    detail: format!("ttl is {:?}, asked for {:?}", core.ttl, spec.ttl()),
                });
            }
            None => {
                let core = Arc::new(BucketCore::new(spec.name().to_owned(), spec.ttl()));
                buckets.insert(spec.name().to_owned(), Arc::clone(&core));
                core
            }
        };
        Ok(MemoryBucket {
            core,
            connection: Arc::clone(&self.connection),
        })
    }

    async fn delete_bucket(&self, name: &str) -> StoreResult<()> {
        check_bucket_name(name)?;
        self.connection
            .begin(Operation::DeleteBucket, name, "")
            .await?;
        let core = self
            .buckets()
            .remove(name)
            .ok_or_else(|| StoreError::NotFound {
                bucket: name.to_owned(),
            })?;
        core.mark_deleted();
        Ok(())
    }
}

/// A bucket of a [`MemoryStore`], seen through one connection.
#[derive(Clone)]
pub struct MemoryBucket {
    core: Arc<BucketCore>,
    connection: Arc<Connection>,
}

impl fmt::Debug for MemoryBucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBucket")
            .field("name", &self.core.name)
            .field("ttl", &self.core.ttl)
            .finish()
    }
}

impl MemoryBucket {
    /// Runs a write through the connection's faults, then applies `change`.
    async fn write<T>(
        &self,
        operation: Operation,
        key: &str,
        change: impl FnOnce(&mut state::BucketState, tokio::time::Instant) -> StoreResult<T>,
    ) -> StoreResult<T> {
        check_key(key)?;
        let after = self
            .connection
            .begin(operation, &self.core.name, key)
            .await?;
        self.core.check_available(operation)?;
        let result = self.core.with_state(change);
        after.finish(operation, &self.core.name, key, result)
    }

    fn conflict(&self, key: &str, expected: Revision) -> StoreError {
        StoreError::Conflict {
            bucket: self.core.name.clone(),
            key: key.to_owned(),
            expected,
        }
    }
}

impl Bucket for MemoryBucket {
    fn name(&self) -> &str {
        &self.core.name
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Entry>> {
        check_key(key)?;
        self.connection
            .begin(Operation::Get, &self.core.name, key)
            .await?;
        self.core.check_available(Operation::Get)?;
        self.core.with_state(|state, _| Ok(state.live(key)))
    }

    async fn create(&self, key: &str, value: Bytes) -> StoreResult<Revision> {
        self.write(Operation::Create, key, |state, now| {
            if state.live(key).is_some() {
                return Err(StoreError::AlreadyExists {
                    bucket: self.core.name.clone(),
                    key: key.to_owned(),
                });
            }
            Ok(state.write(key, value, now))
        })
        .await
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> StoreResult<Revision> {
        self.write(Operation::Update, key, |state, now| match state.live(key) {
            Some(entry) if entry.revision == expected => Ok(state.write(key, value, now)),
            _ => Err(self.conflict(key, expected)),
        })
        .await
    }

    async fn put(&self, key: &str, value: Bytes) -> StoreResult<Revision> {
        self.write(Operation::Put, key, |state, now| {
            Ok(state.write(key, value, now))
        })
        .await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> StoreResult<()> {
        self.write(Operation::Delete, key, |state, now| {
            match (expected, state.live(key)) {
                (Some(expected), Some(entry)) if entry.revision != expected => {
                    Err(self.conflict(key, expected))
                }
                (Some(expected), None) => Err(self.conflict(key, expected)),
                _ => {
                    state.remove(key, DeleteReason::Deleted, now);
                    Ok(())
                }
            }
        })
        .await
    }

    async fn keys(&self, prefix: &str) -> StoreResult<Vec<String>> {
        check_prefix(prefix)?;
        self.connection
            .begin(Operation::Keys, &self.core.name, prefix)
            .await?;
        self.core.check_available(Operation::Keys)?;
        self.core.with_state(|state, _| {
            Ok(state
                .live_under(prefix)
                .into_iter()
                .map(|entry| entry.key)
                .collect())
        })
    }

    async fn entries(&self, prefix: &str) -> StoreResult<Vec<Entry>> {
        check_prefix(prefix)?;
        self.connection
            .begin(Operation::Keys, &self.core.name, prefix)
            .await?;
        self.core.check_available(Operation::Keys)?;
        self.core
            .with_state(|state, _| Ok(state.live_under(prefix)))
    }

    async fn watch(&self, prefix: &str, from: WatchFrom) -> StoreResult<WatchStream> {
        check_prefix(prefix)?;
        self.connection
            .begin(Operation::Watch, &self.core.name, prefix)
            .await?;
        self.core.check_available(Operation::Watch)?;
        let rx = self
            .core
            .with_state(|state, _| Ok(state.subscribe(prefix, from)))?;
        Ok(watch::watch_stream(
            Arc::clone(&self.core),
            Arc::clone(&self.connection),
            rx,
        ))
    }
}
