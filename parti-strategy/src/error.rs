//! Why a strategy could not compute an assignment.

use crate::{PartitionId, WorkerId};

/// Why a strategy refused its input. Every strategy checks its input the same way, with
/// [`StrategyInput::validate`](crate::StrategyInput::validate).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StrategyError {
    /// The same partition id appears twice in the partition list.
    #[error("partition `{0}` is listed more than once; partition ids must be unique")]
    DuplicatePartition(PartitionId),

    /// The same worker id appears twice in the worker list.
    #[error("worker `{0}` is listed more than once; worker ids must be unique")]
    DuplicateWorker(WorkerId),

    /// There are partitions to assign but no worker to give them to.
    #[error("{partitions} partitions to assign but no workers")]
    NoWorkers {
        /// How many partitions were waiting.
        partitions: usize,
    },

    /// A partition has a weight strategies cannot use.
    #[error("partition `{partition}` has weight {weight}; weights must be at least 1")]
    InvalidWeight {
        /// The partition.
        partition: PartitionId,
        /// Its weight.
        weight: u32,
    },

    /// A strategy was configured with a parameter it cannot use.
    #[error("invalid strategy parameter `{parameter}`: {reason}")]
    InvalidParameter {
        /// The parameter.
        parameter: &'static str,
        /// Why it is invalid.
        reason: String,
    },

    /// A worker has a capacity strategies cannot use.
    #[error("worker `{worker}` has capacity {capacity}; capacities must be at least 1")]
    InvalidCapacity {
        /// The worker.
        worker: WorkerId,
        /// Its capacity.
        capacity: u32,
    },
}
