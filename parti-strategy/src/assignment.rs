//! The assignment map: which worker owns each partition.

use std::collections::BTreeMap;
use std::fmt;

use crate::hash::{FastMap, map_with_capacity};
use crate::{PartitionId, StrategyError, WorkerId};

/// Which worker owns each partition.
///
/// An assignment maps every partition to exactly one worker, so "owned twice" cannot be
/// represented. Iteration order of [`Assignment::iter`] is unspecified; the views that
/// return collections ([`Assignment::by_worker`], [`Assignment::counts`]) are sorted so they
/// are deterministic.
///
/// ```
/// use parti_strategy::{Assignment, PartitionId, WorkerId};
///
/// let p = |s| PartitionId::new(s).unwrap();
/// let (a, b) = (WorkerId::new("worker-0"), WorkerId::new("worker-1"));
///
/// let before: Assignment = [(p("x"), a.clone()), (p("y"), a.clone())].into_iter().collect();
/// let after: Assignment = [(p("x"), a.clone()), (p("y"), b.clone())].into_iter().collect();
///
/// assert_eq!(after.owner(&p("y")), Some(&b));
/// assert_eq!(after.partitions_of(&a), [p("x")]);
/// assert_eq!(after.moved_from(&before), 1);
/// ```
#[derive(Clone, Default)]
pub struct Assignment {
    /// Interned owners: partitions point into this table. A worker stays in the table after
    /// losing its last partition; views only report owners.
    workers: Vec<WorkerId>,
    /// Index of each worker in `workers`, built when first needed by [`Assignment::assign`].
    worker_index: FastMap<WorkerId, u32>,
    owners: FastMap<PartitionId, u32>,
}

impl Assignment {
    /// An empty assignment.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty assignment with room for `partitions` entries.
    pub fn with_capacity(partitions: usize) -> Self {
        Self {
            owners: map_with_capacity(partitions),
            ..Self::default()
        }
    }

    /// Gives `partition` to `worker`, returning its previous owner if it had one.
    pub fn assign(&mut self, partition: PartitionId, worker: WorkerId) -> Option<WorkerId> {
        if self.worker_index.len() != self.workers.len() {
            self.worker_index = self
                .workers
                .iter()
                .enumerate()
                .map(|(i, w)| (w.clone(), i as u32))
                .collect();
        }
        let index = match self.worker_index.get(&worker) {
            Some(&index) => index,
            None => {
                let index = self.workers.len() as u32;
                self.workers.push(worker.clone());
                self.worker_index.insert(worker, index);
                index
            }
        };
        self.owners
            .insert(partition, index)
            .map(|before| self.workers[before as usize].clone())
    }

    /// Removes `partition`, returning its owner if it had one.
    pub fn unassign(&mut self, partition: &PartitionId) -> Option<WorkerId> {
        self.owners
            .remove(partition)
            .map(|index| self.workers[index as usize].clone())
    }

    /// The owner of `partition`.
    pub fn owner(&self, partition: &PartitionId) -> Option<&WorkerId> {
        self.owners
            .get(partition)
            .map(|&index| &self.workers[index as usize])
    }

    /// Number of assigned partitions.
    pub fn len(&self) -> usize {
        self.owners.len()
    }

    /// Whether no partition is assigned.
    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    /// Every (partition, owner) pair, in unspecified order.
    pub fn iter(&self) -> impl Iterator<Item = (&PartitionId, &WorkerId)> + '_ {
        self.owners
            .iter()
            .map(|(partition, &index)| (partition, &self.workers[index as usize]))
    }

    /// The partitions `worker` owns, sorted.
    pub fn partitions_of(&self, worker: &WorkerId) -> Vec<PartitionId> {
        let mut partitions: Vec<PartitionId> = self
            .iter()
            .filter(|(_, owner)| *owner == worker)
            .map(|(partition, _)| partition.clone())
            .collect();
        partitions.sort_unstable();
        partitions
    }

    /// Each owning worker with its partitions, all sorted. Workers that own nothing are absent.
    pub fn by_worker(&self) -> BTreeMap<WorkerId, Vec<PartitionId>> {
        let mut by_worker: BTreeMap<WorkerId, Vec<PartitionId>> = BTreeMap::new();
        for (partition, worker) in self.iter() {
            by_worker
                .entry(worker.clone())
                .or_default()
                .push(partition.clone());
        }
        for partitions in by_worker.values_mut() {
            partitions.sort_unstable();
        }
        by_worker
    }

    /// How many partitions each owning worker has, sorted by worker.
    pub fn counts(&self) -> BTreeMap<WorkerId, usize> {
        let mut per_index = vec![0usize; self.workers.len()];
        for &index in self.owners.values() {
            per_index[index as usize] += 1;
        }
        self.workers
            .iter()
            .zip(per_index)
            .filter(|(_, count)| *count > 0)
            .map(|(worker, count)| (worker.clone(), count))
            .collect()
    }

    /// How many partitions changed owner between `previous` and `self`.
    ///
    /// Only partitions present in both count: a partition that is new, or that was removed,
    /// did not move.
    pub fn moved_from(&self, previous: &Assignment) -> usize {
        self.iter()
            .filter(|(partition, owner)| {
                previous
                    .owner(partition)
                    .is_some_and(|before| before != *owner)
            })
            .count()
    }

    /// The interned worker table and the index of `partition`'s owner in it.
    pub(crate) fn owner_index(&self, partition: &PartitionId) -> Option<u32> {
        self.owners.get(partition).copied()
    }

    /// For each entry of [`Assignment::worker_table`], whether it owns a partition (the
    /// table keeps workers that lost their last one).
    pub(crate) fn owns_any(&self) -> Vec<bool> {
        let mut owns = vec![false; self.workers.len()];
        for &index in self.owners.values() {
            owns[index as usize] = true;
        }
        owns
    }

    /// The interned worker table that [`Assignment::owner_index`] points into.
    pub(crate) fn worker_table(&self) -> &[WorkerId] {
        &self.workers
    }
}

/// Builds an [`Assignment`] from worker indices, refusing a partition given twice. Strategies
/// use it so that the duplicate check costs no separate pass over the input.
pub(crate) struct AssignmentBuilder {
    workers: Vec<WorkerId>,
    owners: FastMap<PartitionId, u32>,
}

impl AssignmentBuilder {
    /// A builder whose worker indices refer to `workers`.
    pub(crate) fn new<'w>(
        workers: impl IntoIterator<Item = &'w WorkerId>,
        partitions: usize,
    ) -> Self {
        Self {
            workers: workers.into_iter().cloned().collect(),
            owners: map_with_capacity(partitions),
        }
    }

    /// Gives `partition` to the worker at `worker`.
    pub(crate) fn give(
        &mut self,
        partition: &PartitionId,
        worker: usize,
    ) -> Result<(), StrategyError> {
        match self.owners.insert(partition.clone(), worker as u32) {
            None => Ok(()),
            Some(_) => Err(StrategyError::DuplicatePartition(partition.clone())),
        }
    }

    pub(crate) fn finish(self) -> Assignment {
        Assignment {
            workers: self.workers,
            worker_index: FastMap::default(),
            owners: self.owners,
        }
    }
}

impl PartialEq for Assignment {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self
                .iter()
                .all(|(partition, owner)| other.owner(partition) == Some(owner))
    }
}

impl Eq for Assignment {}

impl FromIterator<(PartitionId, WorkerId)> for Assignment {
    fn from_iter<I: IntoIterator<Item = (PartitionId, WorkerId)>>(iter: I) -> Self {
        let mut assignment = Self::new();
        assignment.extend(iter);
        assignment
    }
}

impl Extend<(PartitionId, WorkerId)> for Assignment {
    fn extend<I: IntoIterator<Item = (PartitionId, WorkerId)>>(&mut self, iter: I) {
        for (partition, worker) in iter {
            self.assign(partition, worker);
        }
    }
}

impl fmt::Debug for Assignment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sorted: BTreeMap<&PartitionId, &WorkerId> = self.iter().collect();
        f.debug_map().entries(sorted).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PartitionId {
        PartitionId::new(s).unwrap()
    }

    #[test]
    fn reassigning_returns_the_previous_owner() {
        let mut a = Assignment::new();
        assert_eq!(a.assign(p("x"), WorkerId::new("w0")), None);
        assert_eq!(
            a.assign(p("x"), WorkerId::new("w1")),
            Some(WorkerId::new("w0"))
        );
        assert_eq!(a.len(), 1);
        assert_eq!(a.unassign(&p("x")), Some(WorkerId::new("w1")));
        assert!(a.is_empty());
    }

    #[test]
    fn views_are_sorted() {
        let a: Assignment = [("c", "w1"), ("a", "w1"), ("b", "w0")]
            .into_iter()
            .map(|(part, w)| (p(part), WorkerId::new(w)))
            .collect();
        let by_worker = a.by_worker();
        assert_eq!(by_worker[&WorkerId::new("w1")], [p("a"), p("c")]);
        assert_eq!(
            a.counts().into_iter().collect::<Vec<_>>(),
            [(WorkerId::new("w0"), 1), (WorkerId::new("w1"), 2)]
        );
        let debug = format!("{a:?}");
        let at = |s: &str| debug.find(s).unwrap();
        assert!(
            at("\"a\"") < at("\"b\"") && at("\"b\"") < at("\"c\""),
            "{debug}"
        );
    }

    #[test]
    fn movement_ignores_added_and_removed_partitions() {
        let before: Assignment = [(p("x"), "w0".into()), (p("gone"), "w0".into())]
            .into_iter()
            .collect();
        let after: Assignment = [(p("x"), "w0".into()), (p("new"), "w1".into())]
            .into_iter()
            .collect();
        assert_eq!(after.moved_from(&before), 0);
    }
}
