//! The assignment map: which worker owns each partition.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::{PartitionId, WorkerId};

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
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    owners: HashMap<PartitionId, WorkerId>,
}

impl Assignment {
    /// An empty assignment.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty assignment with room for `partitions` entries.
    pub fn with_capacity(partitions: usize) -> Self {
        Self {
            owners: HashMap::with_capacity(partitions),
        }
    }

    /// Gives `partition` to `worker`, returning its previous owner if it had one.
    pub fn assign(&mut self, partition: PartitionId, worker: WorkerId) -> Option<WorkerId> {
        self.owners.insert(partition, worker)
    }

    /// Removes `partition`, returning its owner if it had one.
    pub fn unassign(&mut self, partition: &PartitionId) -> Option<WorkerId> {
        self.owners.remove(partition)
    }

    /// The owner of `partition`.
    pub fn owner(&self, partition: &PartitionId) -> Option<&WorkerId> {
        self.owners.get(partition)
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
        self.owners.iter()
    }

    /// The partitions `worker` owns, sorted.
    pub fn partitions_of(&self, worker: &WorkerId) -> Vec<PartitionId> {
        let mut partitions: Vec<PartitionId> = self
            .owners
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
        for (partition, worker) in &self.owners {
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
        let mut counts: BTreeMap<WorkerId, usize> = BTreeMap::new();
        for worker in self.owners.values() {
            *counts.entry(worker.clone()).or_default() += 1;
        }
        counts
    }

    /// How many partitions changed owner between `previous` and `self`.
    ///
    /// Only partitions present in both count: a partition that is new, or that was removed,
    /// did not move.
    pub fn moved_from(&self, previous: &Assignment) -> usize {
        self.owners
            .iter()
            .filter(|(partition, owner)| {
                previous
                    .owners
                    .get(*partition)
                    .is_some_and(|before| before != *owner)
            })
            .count()
    }
}

impl FromIterator<(PartitionId, WorkerId)> for Assignment {
    fn from_iter<I: IntoIterator<Item = (PartitionId, WorkerId)>>(iter: I) -> Self {
        Self {
            owners: iter.into_iter().collect(),
        }
    }
}

impl Extend<(PartitionId, WorkerId)> for Assignment {
    fn extend<I: IntoIterator<Item = (PartitionId, WorkerId)>>(&mut self, iter: I) {
        self.owners.extend(iter);
    }
}

impl fmt::Debug for Assignment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sorted: BTreeMap<&PartitionId, &WorkerId> = self.owners.iter().collect();
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
