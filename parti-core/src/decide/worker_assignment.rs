//! What a worker holds: its partitions with their fencing tokens and the version of the
//! assignment record that granted them.

use std::collections::BTreeMap;

use parti_strategy::PartitionId;

use crate::wire::{FencingToken, Grant};

/// The partitions this worker owns, with the version of the assignment that granted them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerAssignment {
    version: u64,
    term: u64,
    partitions: BTreeMap<PartitionId, FencingToken>,
}

impl WorkerAssignment {
    /// An assignment of `grants` at record `version`, written by the leader of `term`.
    pub fn new(version: u64, term: u64, grants: impl IntoIterator<Item = Grant>) -> Self {
        Self {
            version,
            term,
            partitions: grants
                .into_iter()
                .map(|grant| (grant.partition, grant.token))
                .collect(),
        }
    }

    /// The same assignment with only the partitions `keep` accepts.
    pub fn retain(&self, mut keep: impl FnMut(&PartitionId) -> bool) -> Self {
        Self {
            version: self.version,
            term: self.term,
            partitions: self
                .partitions
                .iter()
                .filter(|(p, _)| keep(p))
                .map(|(p, token)| (p.clone(), *token))
                .collect(),
        }
    }

    /// The version of the assignment record applied (0 before the first one).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The term of the leader that wrote the record.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// The owned partitions, in order.
    pub fn partitions(&self) -> impl ExactSizeIterator<Item = &PartitionId> + '_ {
        self.partitions.keys()
    }

    /// The owned partitions with their fencing tokens, in order.
    pub fn grants(&self) -> impl ExactSizeIterator<Item = (&PartitionId, FencingToken)> + '_ {
        self.partitions.iter().map(|(p, token)| (p, *token))
    }

    /// Whether this worker owns `partition`.
    pub fn contains(&self, partition: &PartitionId) -> bool {
        self.partitions.contains_key(partition)
    }

    /// The fencing token of an owned partition.
    pub fn token(&self, partition: &PartitionId) -> Option<FencingToken> {
        self.partitions.get(partition).copied()
    }

    /// How many partitions this worker owns.
    pub fn len(&self) -> usize {
        self.partitions.len()
    }

    /// Whether this worker owns nothing.
    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }
}
