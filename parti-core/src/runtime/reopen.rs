//! [`Reopening`]: a bucket handle that opens its bucket again — creating it — when it finds
//! it gone (deleted, or lost with a server restarted without its data), so a fleet rejoins
//! by itself instead of failing on "bucket not found" until its processes are restarted.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::time::Instant;

use crate::store::{
    Bucket, BucketSpec, Entry, Revision, Store, StoreError, StoreResult, WatchFrom, WatchStream,
};

/// The bucket of `spec` in `S`, opened again whenever an operation finds it gone. The
/// failing operation still fails (with [`StoreError::NotFound`]): its caller retries as
/// after any failure, and finds the bucket back.
pub(crate) struct Reopening<S: Store> {
    inner: Arc<Inner<S>>,
    /// The bucket's name.
    name: String,
}

struct Inner<S: Store> {
    store: S,
    spec: BucketSpec,
    current: Mutex<S::Bucket>,
    /// When the bucket was last found gone (shared with whoever must know).
    losses: Arc<Losses>,
}

/// When a bucket was last found gone by any task of a manager.
#[derive(Debug, Default)]
pub(crate) struct Losses {
    last: Mutex<Option<Instant>>,
}

impl Losses {
    /// Notes that the bucket (or, for [`Shared::heartbeat_doubts`], one of its entries)
    /// was found gone now.
    ///
    /// [`Shared::heartbeat_doubts`]: super::context::Shared::heartbeat_doubts
    pub(crate) fn lost(&self) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }

    /// Losses with one noted now.
    pub(crate) fn began_now() -> Self {
        let losses = Self::default();
        losses.lost();
        losses
    }

    /// When the bucket was last found gone.
    pub(crate) fn last(&self) -> Option<Instant> {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<S: Store> Clone for Reopening<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            name: self.name.clone(),
        }
    }
}

impl<S: Store> std::fmt::Debug for Reopening<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reopening")
            .field("bucket", &self.name)
            .field("last_lost", &self.inner.losses.last())
            .finish()
    }
}

impl<S: Store> Reopening<S> {
    /// Opens (creates or binds) the bucket of `spec`; each time it is found gone, `losses`
    /// notes when.
    pub(crate) async fn open(store: S, spec: BucketSpec, losses: Arc<Losses>) -> StoreResult<Self> {
        let bucket = store.bucket(&spec).await?;
        Ok(Self {
            name: spec.name().to_owned(),
            inner: Arc::new(Inner {
                store,
                spec,
                current: Mutex::new(bucket),
                losses,
            }),
        })
    }

    fn current(&self) -> S::Bucket {
        self.inner
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Passes `result` on; when it says the bucket is gone, opens it again first (creating
    /// it). A failed reopen is left to the next operation.
    async fn checked<T>(&self, result: StoreResult<T>) -> StoreResult<T> {
        if let Err(StoreError::NotFound { .. }) = &result {
            self.inner.losses.lost();
            match self.inner.store.bucket(&self.inner.spec).await {
                Ok(bucket) => {
                    tracing::warn!(bucket = %self.name, "bucket was gone: created it again");
                    *self
                        .inner
                        .current
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = bucket;
                }
                Err(e) => {
                    tracing::debug!(bucket = %self.name, error = %e, "reopening the bucket failed");
                }
            }
        }
        result
    }
}

impl<S: Store> Bucket for Reopening<S> {
    fn name(&self) -> &str {
        &self.name
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Entry>> {
        let result = self.current().get(key).await;
        self.checked(result).await
    }

    async fn create(&self, key: &str, value: Bytes) -> StoreResult<Revision> {
        let result = self.current().create(key, value).await;
        self.checked(result).await
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> StoreResult<Revision> {
        let result = self.current().update(key, value, expected).await;
        self.checked(result).await
    }

    async fn put(&self, key: &str, value: Bytes) -> StoreResult<Revision> {
        let result = self.current().put(key, value).await;
        self.checked(result).await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> StoreResult<()> {
        let result = self.current().delete(key, expected).await;
        self.checked(result).await
    }

    async fn keys(&self, prefix: &str) -> StoreResult<Vec<String>> {
        let result = self.current().keys(prefix).await;
        self.checked(result).await
    }

    async fn entries(&self, prefix: &str) -> StoreResult<Vec<Entry>> {
        let result = self.current().entries(prefix).await;
        self.checked(result).await
    }

    async fn watch(&self, prefix: &str, from: WatchFrom) -> StoreResult<WatchStream> {
        let result = self.current().watch(prefix, from).await;
        self.checked(result).await
    }

    async fn watch_key(&self, key: &str, from: WatchFrom) -> StoreResult<WatchStream> {
        let result = self.current().watch_key(key, from).await;
        self.checked(result).await
    }

    async fn keep_leader_apart_from(&self, other: &Self) -> StoreResult<bool> {
        let result = self
            .current()
            .keep_leader_apart_from(&other.current())
            .await;
        self.checked(result).await
    }
}
