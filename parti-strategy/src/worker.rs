//! Workers: who partitions are assigned to.

use std::fmt;
use std::sync::Arc;

/// The identity of a worker, such as `worker-3`.
///
/// In a parti fleet the manager claims these ids (`worker-0`, `worker-1`, …) so that a worker
/// restarting within its grace period gets the same id back and therefore the same partitions.
/// Used standalone, any string is accepted; strategies only compare and hash ids. Cloning is
/// cheap (a reference-counted string).
///
/// ```
/// use parti_strategy::WorkerId;
///
/// let id = WorkerId::new("worker-3");
/// assert_eq!(id.as_str(), "worker-3");
/// assert_eq!(WorkerId::from("worker-3"), id);
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(from = "String", into = "String"))]
pub struct WorkerId(Arc<str>);

impl WorkerId {
    /// A worker id from any string.
    pub fn new(id: impl AsRef<str>) -> Self {
        Self(Arc::from(id.as_ref()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WorkerId({:?})", &*self.0)
    }
}

impl From<&str> for WorkerId {
    fn from(id: &str) -> Self {
        Self::new(id)
    }
}

impl From<String> for WorkerId {
    fn from(id: String) -> Self {
        Self(Arc::from(id))
    }
}

impl From<WorkerId> for String {
    fn from(id: WorkerId) -> Self {
        id.0.to_string()
    }
}

impl AsRef<str> for WorkerId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A worker as strategies see it: its id and its capacity.
///
/// Capacity says how much work the worker takes relative to the others (default 1): a worker
/// of capacity 2 gets about twice the share of one with capacity 1. Capacity 0 is rejected by
/// every strategy with
/// [`StrategyError::InvalidCapacity`](crate::StrategyError::InvalidCapacity).
///
/// ```
/// use parti_strategy::Worker;
///
/// let big = Worker::new("worker-0").with_capacity(2);
/// assert_eq!(big.id().as_str(), "worker-0");
/// assert_eq!(big.capacity(), 2);
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Worker {
    id: WorkerId,
    capacity: u32,
}

impl Worker {
    /// A worker with capacity 1.
    pub fn new(id: impl Into<WorkerId>) -> Self {
        Self {
            id: id.into(),
            capacity: 1,
        }
    }

    /// The same worker with another capacity.
    #[must_use]
    pub fn with_capacity(mut self, capacity: u32) -> Self {
        self.capacity = capacity;
        self
    }

    /// The worker's id.
    pub fn id(&self) -> &WorkerId {
        &self.id
    }

    /// The worker's capacity.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }
}

impl From<WorkerId> for Worker {
    fn from(id: WorkerId) -> Self {
        Self::new(id)
    }
}
