//! A [`Bucket`] wrapper that records the latency and errors of every operation (see
//! [`telemetry`](crate::telemetry)), so the runtime measures the store in one place.

use std::future::Future;

use bytes::Bytes;
use tokio::time::Instant;

use crate::store::{Bucket, Entry, Operation, Revision, StoreResult, WatchFrom, WatchStream};
use crate::telemetry::{self, WorkerLabel};

/// `B`, with every operation timed and its errors counted under the manager's worker label.
#[derive(Debug, Clone)]
pub(crate) struct Instrumented<B>(pub(crate) B, pub(crate) WorkerLabel);

impl<B> Instrumented<B> {
    async fn timed<T>(
        &self,
        operation: Operation,
        fut: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        let start = Instant::now();
        let result = fut.await;
        telemetry::store_operation(&self.1, operation, start.elapsed(), result.as_ref().err());
        result
    }
}

impl<B: Bucket> Bucket for Instrumented<B> {
    fn name(&self) -> &str {
        self.0.name()
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Entry>> {
        self.timed(Operation::Get, self.0.get(key)).await
    }

    async fn create(&self, key: &str, value: Bytes) -> StoreResult<Revision> {
        self.timed(Operation::Create, self.0.create(key, value))
            .await
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> StoreResult<Revision> {
        self.timed(Operation::Update, self.0.update(key, value, expected))
            .await
    }

    async fn put(&self, key: &str, value: Bytes) -> StoreResult<Revision> {
        self.timed(Operation::Put, self.0.put(key, value)).await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> StoreResult<()> {
        self.timed(Operation::Delete, self.0.delete(key, expected))
            .await
    }

    async fn keys(&self, prefix: &str) -> StoreResult<Vec<String>> {
        self.timed(Operation::Keys, self.0.keys(prefix)).await
    }

    async fn entries(&self, prefix: &str) -> StoreResult<Vec<Entry>> {
        self.timed(Operation::Keys, self.0.entries(prefix)).await
    }

    async fn watch(&self, prefix: &str, from: WatchFrom) -> StoreResult<WatchStream> {
        self.timed(Operation::Watch, self.0.watch(prefix, from))
            .await
    }

    async fn watch_key(&self, key: &str, from: WatchFrom) -> StoreResult<WatchStream> {
        self.timed(Operation::Watch, self.0.watch_key(key, from))
            .await
    }

    async fn keep_leader_apart_from(&self, other: &Self) -> StoreResult<bool> {
        self.0.keep_leader_apart_from(&other.0).await
    }
}
