//! `Sticky`: balanced assignment that moves the fewest partitions possible.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::assignment::{self, Listed, NONE};
use crate::hash::{FastMap, hash64};
use crate::{Assignment, Partition, Strategy, StrategyError, StrategyInput, Worker, WorkerId};

/// Seed of the hash that orders partitions (tie-breaks and fill order only).
const ORDER_SEED: u64 = 0x7061_7274_692d_7374; // "parti-st"

/// The default strategy: balanced like round robin, sticky like nothing else.
///
/// It keeps every partition on its previous owner unless balance requires a move, and moves
/// the minimum. Because the leader stores the previous assignment, it does not need a hash
/// to be stable: it only needs to know where things are.
///
/// Guarantees (each one is a property test):
///
/// - **Coverage**: every partition is assigned exactly once, to a listed worker.
/// - **Balance, equal weights**: each worker gets ⌊P·cᵢ/C⌋ or ⌊P·cᵢ/C⌋ + 1 partitions, where
///   cᵢ is its capacity and C the total — with equal capacities, max − min ≤ 1.
/// - **Balance, weighted partitions**: no worker carries more than its fair share
///   W·cᵢ/C plus the largest single weight.
/// - **Minimal movement, equal weights**: the number of partitions that change owner is the
///   least any assignment meeting the balance bound could achieve. In particular, from a
///   balanced assignment, N→N+1 workers moves exactly ⌊P/(N+1)⌋ partitions, all onto the new
///   worker; N→N−1 moves exactly the lost worker's partitions; adding partitions moves
///   nothing else.
/// - **Determinism**: the result depends only on the sets of workers and partitions and the
///   previous assignment, never on their order.
///
/// Cost: O(P + N log N) in the steady state; a cold start (no previous owners) also sorts
/// the P partitions by a 64-bit hash, O(P log P).
///
/// ```
/// use parti_strategy::{Partition, Sticky, Strategy, StrategyInput, Worker};
///
/// let partitions: Vec<Partition> =
///     (0..12).map(|n| Partition::new(format!("p{n}"))).collect::<Result<_, _>>()?;
/// let three: Vec<Worker> = (0..3).map(|n| Worker::new(format!("worker-{n}"))).collect();
/// let before = Sticky::new().assign(&StrategyInput::new(&three, &partitions))?;
///
/// let mut four = three.clone();
/// four.push(Worker::new("worker-3"));
/// let after = Sticky::new().assign(&StrategyInput::new(&four, &partitions).with_previous(&before))?;
/// assert_eq!(after.moved_from(&before), 3); // ⌊12 / 4⌋, all onto worker-3
/// assert_eq!(after.partitions_of(four[3].id()).len(), 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sticky {
    _private: (),
}

impl Sticky {
    /// The sticky strategy.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Strategy for Sticky {
    fn name(&self) -> &str {
        "sticky"
    }

    fn assign(&self, input: &StrategyInput<'_>) -> Result<Assignment, StrategyError> {
        input.validate_except_duplicate_partitions()?;
        if input.partitions.is_empty() {
            return Ok(Assignment::new());
        }
        let mut plan = Plan::new(input);
        let first_weight = input.partitions[0].weight();
        if input.partitions.iter().all(|p| p.weight() == first_weight) {
            plan.balance_counts();
        } else {
            plan.balance_weights();
        }
        plan.into_assignment()
    }
}

/// Where every partition goes, by index into the sorted worker list and the input
/// partition list.
struct Plan<'a> {
    /// Workers sorted by id: index order is the deterministic tie-break.
    workers: Vec<&'a Worker>,
    partitions: &'a [Partition],
    /// Per worker, the partitions it keeps (at first: all it owned before).
    kept: Vec<Vec<usize>>,
    /// Partitions without a live previous owner, or released by theirs.
    pool: Vec<usize>,
    /// The previous assignment, if it lists exactly the input partitions in their order.
    listed: Option<Listed<'a>>,
}

impl<'a> Plan<'a> {
    fn new(input: &StrategyInput<'a>) -> Self {
        let mut workers: Vec<&Worker> = input.workers.iter().collect();
        workers.sort_unstable_by(|a, b| a.id().cmp(b.id()));
        let index: FastMap<&WorkerId, usize> = workers
            .iter()
            .enumerate()
            .map(|(i, w)| (w.id(), i))
            .collect();
        let mut kept = vec![Vec::new(); workers.len()];
        let mut pool = Vec::new();
        let listed = assignment::listing(input.previous, input.partitions);
        match input.previous {
            None => pool.extend(0..input.partitions.len()),
            Some(previous) => {
                // The previous owners by their index in `previous`, translated once to
                // indices in `workers` (None: the owner is gone).
                let live: Vec<Option<usize>> = previous
                    .worker_table()
                    .iter()
                    .map(|owner| index.get(owner).copied())
                    .collect();
                let owner_of = |owner: u32| live[owner as usize];
                // Each partition's live previous owner: by position when the partition list
                // is the one of last time (the steady state: nothing hashed), else by id.
                let previous_owners: Vec<Option<usize>> = match listed {
                    Some(listed) => listed
                        .owners()
                        .iter()
                        .map(|&owner| Some(owner).filter(|&o| o != NONE).and_then(owner_of))
                        .collect(),
                    None => input
                        .partitions
                        .iter()
                        .map(|p| previous.owner_index(p.id()).and_then(owner_of))
                        .collect(),
                };
                // Sized once: no list grows partition by partition.
                let mut counts = vec![0usize; workers.len()];
                for w in previous_owners.iter().flatten() {
                    counts[*w] += 1;
                }
                kept = counts.into_iter().map(Vec::with_capacity).collect();
                for (p, owner) in previous_owners.into_iter().enumerate() {
                    match owner {
                        Some(w) => kept[w].push(p),
                        None => pool.push(p),
                    }
                }
            }
        }
        Self {
            workers,
            partitions: input.partitions,
            kept,
            pool,
            listed,
        }
    }

    /// A total order of partitions independent of input order: by hash, then id. Hash
    /// order spreads neighbouring ids over workers.
    fn sort_by_hash(&self, indices: &mut [usize]) {
        let partitions = self.partitions;
        indices.sort_by_cached_key(|&p| {
            let id = partitions[p].id();
            (hash64(id.as_str().as_bytes(), ORDER_SEED), id.clone())
        });
    }

    /// Equal weights: integer quotas in proportion to capacity, the spare units going first
    /// to workers that already hold more than their floor (which is what makes the movement
    /// minimal), then keep up to the quota and fill the rest from the pool.
    fn balance_counts(&mut self) {
        let total = self.partitions.len() as u128;
        let capacity: u128 = self.workers.iter().map(|w| u128::from(w.capacity())).sum();
        let mut quota: Vec<usize> = Vec::with_capacity(self.workers.len());
        let mut remainder: Vec<u128> = Vec::with_capacity(self.workers.len());
        for worker in &self.workers {
            let share = total * u128::from(worker.capacity());
            // share / capacity ≤ total, which fits in usize.
            quota.push(usize::try_from(share / capacity).unwrap_or(usize::MAX));
            remainder.push(share % capacity);
        }
        let spare = self.partitions.len() - quota.iter().sum::<usize>();
        let mut order: Vec<usize> = (0..self.workers.len()).collect();
        order.sort_unstable_by_key(|&w| {
            (
                Reverse(self.kept[w].len() > quota[w]),
                Reverse(remainder[w]),
                w,
            )
        });
        for &w in order.iter().take(spare) {
            quota[w] += 1;
        }

        for (w, &quota) in quota.iter().enumerate() {
            if self.kept[w].len() > quota {
                let mut owned = std::mem::take(&mut self.kept[w]);
                self.sort_by_hash(&mut owned);
                self.pool.extend(owned.drain(quota..));
                self.kept[w] = owned;
            }
        }
        let mut pool = std::mem::take(&mut self.pool);
        self.sort_by_hash(&mut pool);
        let mut next = pool.into_iter();
        for (kept, &quota) in self.kept.iter_mut().zip(&quota) {
            let room = quota - kept.len();
            kept.extend(next.by_ref().take(room));
        }
    }

    /// Weighted partitions: each worker keeps its partitions (in hash order) while it is
    /// below its fair share W·cᵢ/C, then the pool goes heaviest first to the worker
    /// furthest below its share. A worker only takes a partition while below its share, so
    /// none ends above share + the largest weight; letting the last kept partition cross
    /// the share is what keeps a shrinking share from shedding more than it must.
    fn balance_weights(&mut self) {
        let weight = |p: usize| u128::from(self.partitions[p].weight());
        let total: u128 = (0..self.partitions.len()).map(weight).sum();
        let capacity: u128 = self.workers.iter().map(|w| u128::from(w.capacity())).sum();
        // Everything is scaled by `capacity` to stay in exact integers: a worker's share
        // is total·cᵢ, its load is load·capacity.
        let share: Vec<u128> = self
            .workers
            .iter()
            .map(|w| total * u128::from(w.capacity()))
            .collect();
        let mut load = vec![0u128; self.workers.len()];

        for w in 0..self.workers.len() {
            let owned_weight: u128 = self.kept[w].iter().map(|&p| weight(p)).sum();
            if owned_weight * capacity <= share[w] {
                load[w] = owned_weight * capacity;
                continue;
            }
            let mut owned = std::mem::take(&mut self.kept[w]);
            self.sort_by_hash(&mut owned);
            for p in owned {
                if load[w] < share[w] {
                    load[w] += weight(p) * capacity;
                    self.kept[w].push(p);
                } else {
                    self.pool.push(p);
                }
            }
        }

        let mut pool = std::mem::take(&mut self.pool);
        self.sort_by_hash(&mut pool);
        // Stable sort: heaviest first, hash order within a weight.
        pool.sort_by_key(|&p| Reverse(self.partitions[p].weight()));
        let deficit = |w: usize, load: &[u128]| share[w] as i128 - load[w] as i128;
        let mut neediest: BinaryHeap<(i128, Reverse<usize>)> = (0..self.workers.len())
            .map(|w| (deficit(w, &load), Reverse(w)))
            .collect();
        for p in pool {
            let Some((_, Reverse(w))) = neediest.pop() else {
                break; // validated: there is at least one worker
            };
            self.kept[w].push(p);
            load[w] += weight(p) * capacity;
            neediest.push((deficit(w, &load), Reverse(w)));
        }
    }

    fn into_assignment(self) -> Result<Assignment, StrategyError> {
        let mut owners = vec![NONE; self.partitions.len()];
        for (w, partitions) in self.kept.iter().enumerate() {
            for &p in partitions {
                owners[p] = w as u32;
            }
        }
        let workers = self.workers.iter().map(|w| w.id());
        assignment::build(workers, self.partitions, owners, self.listed)
    }
}
