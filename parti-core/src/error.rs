//! The error type of parti's API.

use parti_strategy::{PartitionIdError, StrategyError};

use crate::config::ConfigError;
use crate::store::StoreError;
use crate::wire::WireError;

/// Everything that can go wrong in parti, by cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration breaks a rule.
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// A store operation failed.
    #[error(transparent)]
    Store(#[from] StoreError),

    /// A value in the store is corrupt or was not written by this version of parti. Nothing
    /// was changed because of it.
    #[error("value of `{key}` in bucket `{bucket}` is unreadable: {source}")]
    Corrupt {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// Why it could not be decoded.
        #[source]
        source: WireError,
    },

    /// A record could not be encoded.
    #[error(transparent)]
    Wire(#[from] WireError),

    /// A partition id that cannot be used (building a partition source, say): `?` on
    /// [`PartitionId::new`](parti_strategy::PartitionId::new) or
    /// [`StaticSource::numbered`](crate::runtime::StaticSource::numbered) in a function
    /// returning [`Result`] works.
    #[error(transparent)]
    PartitionId(#[from] PartitionIdError),

    /// A static identity that cannot be used: empty, or longer than 256 bytes.
    #[error("invalid identity {identity:?}: {reason}")]
    InvalidIdentity {
        /// The identity given.
        identity: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// Every stable worker id of the configured range is claimed by a live worker.
    #[error(
        "no free worker id: worker-{min} to worker-{max} are all claimed; widen \
         min_worker_id..max_worker_id or stop some workers"
    )]
    NoFreeWorkerId {
        /// The lowest id number of the range.
        min: u32,
        /// The highest id number of the range.
        max: u32,
    },

    /// The worker's id claim was lost (it expired and was claimed again, or was deleted):
    /// the worker must stop owning partitions and claim an id anew.
    #[error("worker id `{worker_id}` was lost: its claim changed under this worker")]
    IdLost {
        /// The id that was lost.
        worker_id: parti_strategy::WorkerId,
    },

    /// Another running process holds the claim of this worker's static identity: two
    /// processes were given one identity. The one that started last keeps it; this one
    /// stops.
    #[error(
        "identity `{identity}` is in use by process `{instance}` (as `{worker_id}`): two processes were given one identity"
    )]
    IdentityInUse {
        /// The identity.
        identity: String,
        /// The worker id its claim is on.
        worker_id: parti_strategy::WorkerId,
        /// The process holding it.
        instance: String,
    },

    /// Another process's heartbeat replaced this worker's under its id: the id is no longer
    /// this process's (its claim lapsed and another process took it).
    #[error("the heartbeat of worker id `{worker_id}` was taken over by process `{instance}`")]
    HeartbeatTaken {
        /// The worker id.
        worker_id: parti_strategy::WorkerId,
        /// The process whose heartbeat is there now.
        instance: String,
    },

    /// The strategy refused its input.
    #[error("assignment strategy failed: {0}")]
    Strategy(#[from] StrategyError),

    /// The partition source failed; the leader keeps the current assignment and retries.
    #[error("partition source failed: {0}")]
    Source(#[source] crate::store::BoxError),

    /// One of the manager's tasks ended when it should not have (a bug, or a panic in a
    /// hook); the manager recovers by starting it again where it can.
    #[error("the manager's {task} task ended unexpectedly")]
    TaskEnded {
        /// Which task.
        task: &'static str,
    },

    /// The leader's lease ran out (or was taken) while it was publishing; the new leader
    /// finishes the work.
    #[error("the leader lease was lost while publishing an assignment")]
    LeaseLost,

    /// An assignment record changed under the leader (another writer, or a stale view);
    /// the leader re-reads the records and computes again.
    #[error("assignment record of `{worker_id}` changed under the leader")]
    RecordChanged {
        /// The worker whose record changed.
        worker_id: parti_strategy::WorkerId,
    },

    /// The manager has stopped.
    #[error("the manager has stopped")]
    Stopped,

    /// A revoke hook did not finish within `drain_timeout` (or before the heartbeat lease
    /// ran out): the worker released the partitions anyway and dropped the hook's future.
    #[error(
        "released {partitions} partition(s) after {waited:?} with their revoke hook unfinished"
    )]
    DrainCutShort {
        /// How many partitions the hook was draining.
        partitions: usize,
        /// How long the hook ran.
        waited: std::time::Duration,
    },

    /// A hook panicked. The manager carried on as if it had returned: a revoke hook's
    /// partitions are released, a grant hook's partitions are held.
    #[error("the {hook} hook panicked")]
    HookPanicked {
        /// Which hook: `on_assigned` or `on_revoked`.
        hook: &'static str,
    },

    /// The assignment strategy panicked. The leader keeps the current assignment and tries
    /// again after a backoff, as for a strategy error.
    #[error("the assignment strategy panicked")]
    StrategyPanicked,

    /// `wait_state` timed out.
    #[error("timed out after {waited:?} waiting for state {wanted}; the state is {current}")]
    WaitTimeout {
        /// The state waited for.
        wanted: crate::decide::ManagerState,
        /// The state when the wait ended.
        current: crate::decide::ManagerState,
        /// How long the wait lasted.
        waited: std::time::Duration,
    },
}

impl Error {
    /// Whether retrying later may succeed (the store was unreachable, or a write's outcome
    /// is unknown — re-read before retrying).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Store(err) if err.is_transient())
    }
}

/// `Result` with parti's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Operation;

    #[test]
    fn an_invalid_partition_id_converts_with_question_mark() {
        fn source() -> Result<crate::runtime::StaticSource> {
            Ok(crate::runtime::StaticSource::numbered("bad key", 4)?)
        }
        let err = source().unwrap_err();
        assert!(matches!(err, Error::PartitionId(_)), "{err:?}");
        assert!(!err.is_transient());
    }

    #[test]
    fn transient_only_for_transient_store_errors() {
        assert!(Error::from(StoreError::unavailable(Operation::Put, "down")).is_transient());
        assert!(!Error::from(StoreError::NotFound { bucket: "b".into() }).is_transient());
        let corrupt = Error::Corrupt {
            bucket: "parti-heartbeat".into(),
            key: "worker-1".into(),
            source: WireError::Empty { kind: "heartbeat" },
        };
        assert!(!corrupt.is_transient());
        let text = corrupt.to_string();
        assert!(
            text.contains("parti-heartbeat") && text.contains("worker-1"),
            "{text}"
        );
    }
}
