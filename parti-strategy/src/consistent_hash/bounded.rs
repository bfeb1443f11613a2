//! Bounded loads on the ring (Mirrokni, Thorup and Zadimoghaddam), keeping partitions where
//! they are when the previous assignment allows it.
//!
//! Every partition has a *first choice*: the owner of the first ring point at or after its
//! hash. Placement runs in four passes over the partitions in ring order (hash, then id), each
//! placing a partition only where it fits under the worker's cap:
//!
//! 1. **home**: a partition already on its first choice stays;
//! 2. **parked**: a partition on another live worker stays, unless its first choice is a
//!    *joiner* (a worker that owned nothing before);
//! 3. **claim**: a partition whose first choice is a joiner goes to it, or else stays where
//!    it was;
//! 4. **walk**: everything left (new partitions, those of departed workers, those shed by a
//!    lowered cap) walks clockwise from its hash to the first worker with room.
//!
//! Without a previous assignment every worker is a joiner, so passes 1 and 2 place nothing:
//! the MTZ placement, with every first choice that fits filled before any overflow walks.
//! With one, a join moves only partitions onto the joiner, a leave only the leaver's, and a
//! new partition nothing else, unless a worker's cap fell below its load.

use crate::assignment::{self, Listed, NONE};
use crate::hash::FastMap;
use crate::{Assignment, Partition, StrategyError, StrategyInput, Worker, WorkerId};

use super::ring::{Ring, by_hash};

/// One partition to place, with what the passes look at (indices are u32 to keep the
/// candidates compact: the ring holds at most 2²⁶ points, so at most that many workers).
struct Candidate {
    /// Index into the input partitions.
    partition: usize,
    /// Ring position of the partition's hash: where its walk starts.
    start: u32,
    /// The worker of that position.
    first: u32,
    /// Its owner in the previous assignment if that worker is still listed, else [`NONE`].
    before: u32,
    weight: u32,
}

/// Per-worker caps and loads, and where each candidate went.
struct Placement {
    cap: Vec<u64>,
    load: Vec<u64>,
    owner: Vec<u32>,
}

impl Placement {
    /// Places candidate `c` on `worker` if it is still unplaced and fits under the cap.
    fn try_place(&mut self, c: usize, weight: u32, worker: u32) -> bool {
        if self.owner[c] != NONE || !self.fits(worker as usize, weight) {
            return false;
        }
        self.place(c, weight, worker);
        true
    }

    fn fits(&self, worker: usize, weight: u32) -> bool {
        self.load[worker] + u64::from(weight) <= self.cap[worker]
    }

    fn place(&mut self, c: usize, weight: u32, worker: u32) {
        self.load[worker as usize] += u64::from(weight);
        self.owner[c] = worker;
    }
}

/// The bounded-load assignment of `input` over `workers` (sorted by id) on `ring`.
pub(super) fn assign(
    ring: &Ring,
    workers: &[&Worker],
    input: &StrategyInput<'_>,
    epsilon: f64,
    seed: u64,
) -> Result<Assignment, StrategyError> {
    let partitions = input.partitions;
    let total: u128 = partitions.iter().map(|p| u128::from(p.weight())).sum();
    let capacity: u128 = workers.iter().map(|w| u128::from(w.capacity())).sum();
    let share = |w: usize| total * u128::from(workers[w].capacity());
    let previous = Previous::new(workers, input);
    // Looked up in input order: much faster than in ring order, which jumps about memory.
    let before: Vec<u32> = previous.owners(partitions);
    let order = by_hash(partitions, seed);
    let starts = ring.starts(order.iter().map(|&(hash, _)| hash));
    let candidates: Vec<Candidate> = order
        .iter()
        .zip(starts)
        .map(|(&(_, i), start)| Candidate {
            partition: i,
            start: start as u32,
            first: ring.owner_at(start) as u32,
            before: before[i],
            weight: partitions[i].weight(),
        })
        .collect();
    let mut placement = Placement {
        // Saturating: a huge ε gives a cap beyond u64, which binds nothing anyway.
        cap: (0..workers.len())
            .map(|w| u64::try_from(cap_of(share(w), capacity, epsilon)).unwrap_or(u64::MAX))
            .collect(),
        load: vec![0; workers.len()],
        owner: vec![NONE; candidates.len()],
    };

    // 1. home, 2. parked (see the module docs).
    for (c, candidate) in candidates.iter().enumerate() {
        if candidate.before == candidate.first {
            placement.try_place(c, candidate.weight, candidate.first);
        }
    }
    for (c, candidate) in candidates.iter().enumerate() {
        if candidate.before != NONE && !previous.joined[candidate.first as usize] {
            placement.try_place(c, candidate.weight, candidate.before);
        }
    }
    // 3. claim.
    for (c, candidate) in candidates.iter().enumerate() {
        if previous.joined[candidate.first as usize]
            && !placement.try_place(c, candidate.weight, candidate.first)
            && candidate.before != NONE
        {
            placement.try_place(c, candidate.weight, candidate.before);
        }
    }
    // 4. walk, in the same ring order, while building the result.
    let mut owners = vec![NONE; partitions.len()];
    for (c, candidate) in candidates.iter().enumerate() {
        if placement.owner[c] == NONE {
            let with_room = ring
                .clockwise(candidate.start as usize)
                .find(|&w| placement.fits(w, candidate.weight));
            // Only unequal weights can leave no worker with room: then the partition goes
            // to the worker furthest below its share.
            let owner = with_room.unwrap_or_else(|| {
                (0..workers.len())
                    .max_by_key(|&w| {
                        let load = u128::from(placement.load[w]) * capacity;
                        (share(w) as i128 - load as i128, std::cmp::Reverse(w))
                    })
                    .unwrap_or(0)
            });
            placement.place(c, candidate.weight, owner as u32);
        }
        owners[candidate.partition] = placement.owner[c];
    }
    let workers = workers.iter().map(|w| w.id());
    assignment::build(workers, partitions, owners, previous.listed)
}

/// The cap of a worker whose fair share is `share / capacity`: max(⌈share⌉, ⌊(1+ε)·share⌋).
fn cap_of(share: u128, capacity: u128, epsilon: f64) -> u128 {
    let ceil = share.div_ceil(capacity);
    let bounded = ((1.0 + epsilon) * share as f64 / capacity as f64).floor() as u128;
    ceil.max(bounded)
}

/// The previous assignment, seen from the listed workers.
struct Previous<'a> {
    assignment: Option<&'a Assignment>,
    /// The previous assignment, if it lists exactly the input partitions in their order.
    listed: Option<Listed<'a>>,
    /// For each worker of the previous assignment's table, its index in `workers` if listed.
    live: Vec<u32>,
    /// For each listed worker, whether it is a joiner: it owned nothing before. Without a
    /// previous assignment every worker is one.
    joined: Vec<bool>,
}

impl<'a> Previous<'a> {
    fn new(workers: &[&Worker], input: &StrategyInput<'a>) -> Self {
        let mut joined = vec![true; workers.len()];
        let Some(previous) = input.previous else {
            return Self {
                assignment: None,
                listed: None,
                live: Vec::new(),
                joined,
            };
        };
        let index: FastMap<&WorkerId, u32> = workers
            .iter()
            .enumerate()
            .map(|(i, w)| (w.id(), i as u32))
            .collect();
        let live: Vec<u32> = previous
            .worker_table()
            .iter()
            .map(|owner| index.get(owner).copied().unwrap_or(NONE))
            .collect();
        for (table_index, owns) in previous.owns_any().into_iter().enumerate() {
            if owns && live[table_index] != NONE {
                joined[live[table_index] as usize] = false;
            }
        }
        Self {
            assignment: Some(previous),
            listed: previous.listing(input.partitions),
            live,
            joined,
        }
    }

    /// For each of `partitions`, the listed worker that owned it before, or [`NONE`]: by
    /// position when the previous assignment lists exactly these partitions, else by id.
    fn owners(&self, partitions: &[Partition]) -> Vec<u32> {
        let Some(previous) = self.assignment else {
            return vec![NONE; partitions.len()];
        };
        let live = |owner: u32| {
            if owner == NONE {
                NONE
            } else {
                self.live[owner as usize]
            }
        };
        match self.listed {
            Some(listed) => listed.owners().iter().map(|&owner| live(owner)).collect(),
            None => partitions
                .iter()
                .map(|p| previous.owner_index(p.id()).map_or(NONE, live))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{ConsistentHash, Partition, Strategy, StrategyInput, Worker};

    #[test]
    fn an_epsilon_too_large_to_bind_gives_the_plain_ring() {
        // (1 + 2⁶⁴)·share does not fit u64: the cap must clamp, not wrap to nothing.
        let workers: Vec<Worker> = (0..3).map(|n| Worker::new(format!("w{n}"))).collect();
        let partitions: Vec<Partition> = (0..60)
            .map(|n| Partition::new(format!("p{n}")))
            .collect::<Result<_, _>>()
            .unwrap();
        let input = StrategyInput::new(&workers, &partitions);
        let loose = ConsistentHash::new().with_epsilon(2f64.powi(64)).unwrap();
        assert_eq!(
            loose.assign(&input).unwrap(),
            ConsistentHash::new().assign(&input).unwrap()
        );
    }
}
