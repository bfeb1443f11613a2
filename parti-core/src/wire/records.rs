//! The records of the protocol, one type per bucket.

use parti_strategy::{PartitionId, WorkerId};
use serde::{Deserialize, Serialize};

use super::WireRecord;

/// A worker's claim on a stable id, stored under `worker-<n>` in the ids bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdClaim {
    /// The process instance holding the claim (unique per process start).
    pub instance_id: String,
    /// The host the process runs on, for operators.
    pub host: String,
    /// When the claim was first made, in milliseconds since the Unix epoch.
    pub since_unix_ms: u64,
    /// The worker's static identity (a pod name, say), if it has one: a process with the
    /// same identity takes this id back at once.
    pub identity: Option<String>,
    /// Whether the worker stopped gracefully and is expected back (a worker with an
    /// identity): its claim is left to expire instead of released, and the leader keeps its
    /// partitions for it for `restart_grace`.
    pub parked: bool,
}

impl WireRecord for IdClaim {
    const KIND: &'static str = "id claim";
}

/// The leader lease, stored under [`LEADER_KEY`](super::LEADER_KEY) in the election bucket.
/// The leader's *term* is the revision of the `create` that won the lease; the create itself
/// carries `term: 0` (its revision is not known before it is written) and every renewal
/// carries the term, so [`LeaderRecord::term_at`] gives it from any version of the entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRecord {
    /// The leader's worker id.
    pub worker_id: WorkerId,
    /// The leader's process instance.
    pub instance_id: String,
    /// The term, or 0 in the winning create (whose term is its revision, raised to
    /// `floor`).
    pub term: u64,
    /// In the create: the lowest term the candidate may take — above every term it has
    /// seen, so terms keep growing when the election bucket was lost and its revisions start
    /// again from 1. 0 elsewhere.
    pub floor: u64,
    /// What the leader's calculator is doing, so every worker can follow the fleet's phase
    /// from this one key.
    pub phase: Lifecycle,
}

impl LeaderRecord {
    /// The term of the leader whose record was read at `revision`.
    ///
    /// ```
    /// use parti_core::wire::{LeaderRecord, Lifecycle, worker_id};
    ///
    /// let mut record = LeaderRecord {
    ///     worker_id: worker_id(0),
    ///     instance_id: "i-1".into(),
    ///     term: 0,
    ///     floor: 0,
    ///     phase: Lifecycle::Stable,
    /// };
    /// assert_eq!(record.term_at(17), 17); // the winning create
    /// record.floor = 40; // the candidate had seen term 39 (the bucket was lost since)
    /// assert_eq!(record.term_at(17), 40);
    /// record.floor = 0;
    /// record.term = 17;
    /// assert_eq!(record.term_at(21), 17); // a later renewal
    /// ```
    pub fn term_at(&self, revision: u64) -> u64 {
        if self.term == 0 {
            revision.max(self.floor)
        } else {
            self.term
        }
    }
}

impl WireRecord for LeaderRecord {
    const KIND: &'static str = "leader";
}

/// A worker's heartbeat, stored under its worker id in the heartbeat bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The process instance publishing it.
    pub instance_id: String,
    /// Which heartbeat session of the worker this is: the revision of the session's first
    /// write, or 0 in that first write itself (its revision is not known before it is
    /// written — its number is then that revision raised to `floor`). A session lasts while
    /// the heartbeat entry does; assignment records are written for one session
    /// ([`AssignmentRecord::holder`]).
    pub session: u64,
    /// In a session's first write: the lowest number the session may take — above the
    /// session the worker's record was last written for, so sessions keep growing when the
    /// heartbeat bucket was lost and its revisions start again from 1. 0 elsewhere.
    pub floor: u64,
    /// The version of the last assignment record the worker applied (0: none yet).
    pub applied_version: u64,
    /// The highest leader term the worker has seen.
    pub term_seen: u64,
}

impl WireRecord for Heartbeat {
    const KIND: &'static str = "heartbeat";
}

/// What the leader's calculator was doing when it wrote an assignment record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Lifecycle {
    /// Nothing pending: the fleet is stable.
    Stable,
    /// A stabilization window is running; a rebalance will follow.
    Scaling,
    /// A planned rebalance is being applied.
    Rebalancing,
    /// A worker was lost; its partitions are being re-owned without waiting.
    Emergency,
}

/// Proof of a grant: the leader term and assignment version at which a worker was granted a
/// partition. Tokens of one partition only grow, so a downstream system that remembers the
/// highest token it has seen can reject writes from a stale owner.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct FencingToken {
    /// The leader term of the grant (compared first).
    pub term: u64,
    /// The assignment version of the grant.
    pub version: u64,
}

/// One partition in an assignment record, with its fencing token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The partition.
    pub partition: PartitionId,
    /// The token of the grant.
    pub token: FencingToken,
}

/// A worker's assignment, stored under its worker id in the assignment bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignmentRecord {
    /// The assignment version: strictly increasing, also across leaders.
    pub version: u64,
    /// The term of the leader that wrote it.
    pub term: u64,
    /// The heartbeat session it was written for ([`Heartbeat::session`]; 0: none). Another
    /// session — another process that claimed this worker id, or this one after its
    /// heartbeat expired — applies none of it: it waits for a record written for itself,
    /// whose grants carry new tokens, so no two processes ever hold a grant with the same
    /// token.
    pub holder: u64,
    /// What the calculator was doing.
    pub lifecycle: Lifecycle,
    /// The partitions granted to the worker.
    pub partitions: Vec<Grant>,
}

impl WireRecord for AssignmentRecord {
    const KIND: &'static str = "assignment";
}
