//! The fleet's partition source: a [`StaticSource`] that a test can make fail or hang, as a
//! partition database that is down or a query that never returns.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use parti_core::runtime::{PartitionSource, StaticSource};
use parti_core::store::BoxError;
use parti_strategy::{Partition, PartitionIdError};

const ANSWERS: u8 = 0;
const FAILS: u8 = 1;
const HANGS: u8 = 2;

/// A partition list shared by every manager of a fleet; clones share the list and the mode.
#[derive(Clone, Default)]
pub struct TestSource {
    list: StaticSource,
    mode: Arc<AtomicU8>,
}

impl TestSource {
    /// `count` partitions named `<prefix>.<n>`.
    ///
    /// # Errors
    /// When `prefix` is not a valid partition key.
    pub fn numbered(prefix: &str, count: usize) -> Result<Self, PartitionIdError> {
        Ok(Self {
            list: StaticSource::numbered(prefix, count)?,
            mode: Arc::default(),
        })
    }

    /// The partitions now.
    pub fn get(&self) -> Vec<Partition> {
        self.list.get()
    }

    /// Replaces the partitions.
    pub fn set(&self, partitions: impl IntoIterator<Item = Partition>) {
        self.list.set(partitions);
    }

    /// Every call fails from now on, until [`recover`](Self::recover).
    pub fn fail(&self) {
        self.mode.store(FAILS, Ordering::Relaxed);
    }

    /// Every call hangs (never answers) from now on, until [`recover`](Self::recover).
    pub fn hang(&self) {
        self.mode.store(HANGS, Ordering::Relaxed);
    }

    /// Answers again.
    pub fn recover(&self) {
        self.mode.store(ANSWERS, Ordering::Relaxed);
    }
}

impl PartitionSource for TestSource {
    async fn partitions(&self) -> Result<Vec<Partition>, BoxError> {
        match self.mode.load(Ordering::Relaxed) {
            ANSWERS => self.list.partitions().await,
            FAILS => Err("the partition database is down (injected)".into()),
            _ => std::future::pending().await,
        }
    }
}
