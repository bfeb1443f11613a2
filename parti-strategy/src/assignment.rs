//! The assignment map: which worker owns each partition.

use std::collections::BTreeMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::sync::{Arc, OnceLock};

use crate::hash::{FastMap, map_with_capacity};
use crate::{Partition, PartitionId, StrategyError, WorkerId};

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
    /// The partitions, shared by the assignments computed over one partition list (a
    /// strategy that finds its input listed in the previous assignment's table reuses it).
    table: Arc<Table>,
    /// `owners[i]`: the index in `workers` of the owner of `table.ids[i]` ([`NONE`]: not
    /// assigned, after [`Assignment::unassign`]).
    owners: Vec<u32>,
    /// How many partitions are assigned.
    len: usize,
}

/// No owner: in an assignment's owner list, and in the strategies' own per-partition
/// owner lists.
pub(crate) const NONE: u32 = u32::MAX;

/// Partition ids in a fixed order, each once, with their positions looked up by a map built
/// when first needed (a strategy that walks the table by position never builds it).
#[derive(Debug, Clone, Default)]
struct Table {
    ids: Vec<PartitionId>,
    index: OnceLock<FastMap<PartitionId, u32>>,
}

impl Table {
    fn index(&self) -> &FastMap<PartitionId, u32> {
        self.index.get_or_init(|| {
            let mut index = map_with_capacity(self.ids.len());
            for (position, id) in self.ids.iter().enumerate() {
                index.insert(id.clone(), position as u32);
            }
            index
        })
    }

    fn index_mut(&mut self) -> &mut FastMap<PartitionId, u32> {
        self.index();
        self.index.get_mut().expect("built just now")
    }

    fn position(&self, partition: &PartitionId) -> Option<usize> {
        self.index()
            .get(partition)
            .map(|&position| position as usize)
    }

    /// Whether it lists exactly `partitions`, in their order (`Arc` equality compares
    /// pointers first, so a list built from this table's ids is checked without reading
    /// them).
    fn lists(&self, partitions: &[Partition]) -> bool {
        self.ids.len() == partitions.len()
            && self.ids.iter().zip(partitions).all(|(id, p)| id == p.id())
    }
}

impl Assignment {
    /// An empty assignment.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty assignment with room for `partitions` entries.
    pub fn with_capacity(partitions: usize) -> Self {
        Self {
            table: Arc::new(Table {
                ids: Vec::with_capacity(partitions),
                index: OnceLock::from(map_with_capacity(partitions)),
            }),
            owners: Vec::with_capacity(partitions),
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
        let table = Arc::make_mut(&mut self.table);
        match table.index_mut().get(&partition) {
            Some(&position) => {
                let before = std::mem::replace(&mut self.owners[position as usize], index);
                if before == NONE {
                    self.len += 1;
                    None
                } else {
                    Some(self.workers[before as usize].clone())
                }
            }
            None => {
                let position = table.ids.len() as u32;
                table.index_mut().insert(partition.clone(), position);
                table.ids.push(partition);
                self.owners.push(index);
                self.len += 1;
                None
            }
        }
    }

    /// Removes `partition`, returning its owner if it had one.
    pub fn unassign(&mut self, partition: &PartitionId) -> Option<WorkerId> {
        let position = self.table.position(partition)?;
        match std::mem::replace(&mut self.owners[position], NONE) {
            NONE => None,
            before => {
                self.len -= 1;
                Some(self.workers[before as usize].clone())
            }
        }
    }

    /// The owner of `partition`.
    pub fn owner(&self, partition: &PartitionId) -> Option<&WorkerId> {
        self.owner_index(partition)
            .map(|index| &self.workers[index as usize])
    }

    /// Number of assigned partitions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no partition is assigned.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every (partition, owner) pair, in unspecified order.
    pub fn iter(&self) -> impl Iterator<Item = (&PartitionId, &WorkerId)> + '_ {
        self.table
            .ids
            .iter()
            .zip(&self.owners)
            .filter(|(_, index)| **index != NONE)
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
        for &index in self.owners.iter().filter(|&&index| index != NONE) {
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
        if Arc::ptr_eq(&self.table, &previous.table) {
            // One table: compare by position.
            return self
                .owners
                .iter()
                .zip(&previous.owners)
                .filter(|&(&now, &before)| {
                    now != NONE
                        && before != NONE
                        && self.workers[now as usize] != previous.workers[before as usize]
                })
                .count();
        }
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
        let position = self.table.position(partition)?;
        Some(self.owners[position]).filter(|&index| index != NONE)
    }

    /// This assignment, if its table lists exactly `partitions` in their order (`None`:
    /// look each one up, and build a new table).
    pub(crate) fn listing(&self, partitions: &[Partition]) -> Option<Listed<'_>> {
        self.table.lists(partitions).then_some(Listed(self))
    }

    /// For each entry of [`Assignment::worker_table`], whether it owns a partition (the
    /// table keeps workers that lost their last one).
    pub(crate) fn owns_any(&self) -> Vec<bool> {
        let mut owns = vec![false; self.workers.len()];
        for &index in self.owners.iter().filter(|&&index| index != NONE) {
            owns[index as usize] = true;
        }
        owns
    }

    /// The interned worker table that [`Assignment::owner_index`] points into.
    pub(crate) fn worker_table(&self) -> &[WorkerId] {
        &self.workers
    }
}

/// An assignment whose table lists exactly a strategy's input partitions, in their order
/// ([`Assignment::listing`]): its owners are read by position and its table is shared.
#[derive(Clone, Copy)]
pub(crate) struct Listed<'a>(&'a Assignment);

impl<'a> Listed<'a> {
    /// The owner index of each input partition, by position ([`NONE`]: none).
    pub(crate) fn owners(self) -> &'a [u32] {
        &self.0.owners
    }
}

/// [`Assignment::listing`] of `previous`, if there is one.
pub(crate) fn listing<'a>(
    previous: Option<&'a Assignment>,
    partitions: &[Partition],
) -> Option<Listed<'a>> {
    previous.and_then(|previous| previous.listing(partitions))
}

/// How strategies build their result: the assignment of `partitions[i]` to the worker at
/// `owners[i]` (an index into `workers`, or [`NONE`]). With the previous assignment
/// `listed` as listing exactly these partitions, its table is shared — nothing is hashed or
/// copied per partition, and the list cannot hold a partition twice, because a table never
/// does; otherwise the table is built, refusing a partition listed twice.
pub(crate) fn build<'w>(
    workers: impl IntoIterator<Item = &'w WorkerId>,
    partitions: &[Partition],
    owners: Vec<u32>,
    listed: Option<Listed<'_>>,
) -> Result<Assignment, StrategyError> {
    debug_assert_eq!(partitions.len(), owners.len());
    let table = match listed {
        Some(Listed(previous)) => Arc::clone(&previous.table),
        None => {
            let mut ids = Vec::with_capacity(partitions.len());
            let mut index = map_with_capacity(partitions.len());
            for partition in partitions {
                let id = partition.id();
                match index.entry(id.clone()) {
                    Entry::Occupied(_) => {
                        return Err(StrategyError::DuplicatePartition(id.clone()));
                    }
                    Entry::Vacant(vacant) => vacant.insert(ids.len() as u32),
                };
                ids.push(id.clone());
            }
            Arc::new(Table {
                ids,
                index: OnceLock::from(index),
            })
        }
    };
    Ok(Assignment {
        workers: workers.into_iter().cloned().collect(),
        worker_index: FastMap::default(),
        len: owners.iter().filter(|&&owner| owner != NONE).count(),
        table,
        owners,
    })
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

    fn listed(ids: &[&str]) -> Vec<Partition> {
        ids.iter().map(|id| Partition::new(*id).unwrap()).collect()
    }

    #[test]
    fn a_result_over_the_previous_partition_list_shares_its_table() {
        let workers = [WorkerId::new("w0"), WorkerId::new("w1")];
        let partitions = listed(&["a", "b", "c"]);
        let first = build(&workers, &partitions, vec![0, 1, 0], None).unwrap();
        let second = build(
            &workers,
            &partitions,
            vec![0, 1, 1],
            first.listing(&partitions),
        )
        .unwrap();
        assert!(Arc::ptr_eq(&first.table, &second.table));
        assert_eq!(second.moved_from(&first), 1);
        assert_eq!(second.owner(&p("c")), Some(&workers[1]));
        // Another order (or another list) builds its own table, with the same meaning.
        let reordered = listed(&["c", "a", "b"]);
        let third = build(
            &workers,
            &reordered,
            vec![1, 0, 1],
            second.listing(&reordered),
        )
        .unwrap();
        assert!(!Arc::ptr_eq(&second.table, &third.table));
        assert_eq!(third, second);
        assert_eq!(third.moved_from(&second), 0);
    }

    #[test]
    fn a_partition_listed_twice_is_refused_unless_the_list_is_the_previous_one() {
        let workers = [WorkerId::new("w0")];
        let twice = listed(&["a", "b", "a"]);
        let err = build(&workers, &twice, vec![0, 0, 0], None).unwrap_err();
        assert_eq!(err, StrategyError::DuplicatePartition(p("a")));
        let once = build(&workers, &listed(&["a", "b", "c"]), vec![0; 3], None).unwrap();
        let err = build(&workers, &twice, vec![0, 0, 0], once.listing(&twice)).unwrap_err();
        assert_eq!(err, StrategyError::DuplicatePartition(p("a")));
    }

    #[test]
    fn unassigned_entries_are_skipped_and_can_be_assigned_again() {
        let workers = [WorkerId::new("w0"), WorkerId::new("w1")];
        let partitions = listed(&["a", "b"]);
        let mut a = build(&workers, &partitions, vec![0, NONE], None).unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a.iter().count(), 1);
        assert_eq!(a.owner(&p("b")), None);
        let shared = a.clone();
        assert_eq!(a.unassign(&p("a")), Some(workers[0].clone()));
        assert!(a.is_empty() && a.counts().is_empty());
        assert_eq!(a.assign(p("b"), workers[1].clone()), None);
        assert_eq!(a.assign(p("z"), workers[0].clone()), None);
        assert_eq!(a.len(), 2);
        // The clone made before is untouched (its table was shared, then copied on write).
        assert_eq!(shared.owner(&p("a")), Some(&workers[0]));
        assert_eq!(shared.owner(&p("z")), None);
        assert_eq!(a.moved_from(&shared), 0, "b and z are new; a was removed");
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
