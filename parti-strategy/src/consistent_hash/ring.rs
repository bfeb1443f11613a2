//! The ring itself: every worker's points, sorted, and the walk from a hash.

use crate::hash::hash64;
use crate::{Partition, StrategyError, Worker};

use super::MAX_RING_POINTS;

/// Points on a 64-bit ring, each naming a worker by its index in the sorted worker list.
pub(super) struct Ring {
    /// (point, worker index), sorted; equal points (a 64-bit collision) by worker index.
    points: Vec<(u64, u32)>,
}

impl Ring {
    /// `vnodes × capacity` points for each of `workers` (sorted by id), hashed with `seed`.
    ///
    /// # Errors
    /// [`StrategyError::InvalidParameter`] when the ring would exceed [`MAX_RING_POINTS`].
    pub(super) fn build(
        workers: &[&Worker],
        vnodes: u32,
        seed: u64,
    ) -> Result<Self, StrategyError> {
        let points: u64 = workers
            .iter()
            .map(|w| u64::from(vnodes) * u64::from(w.capacity()))
            .sum();
        if points > MAX_RING_POINTS {
            return Err(StrategyError::InvalidParameter {
                parameter: "vnodes",
                reason: format!(
                    "vnodes × capacities give {points} ring points, more than {MAX_RING_POINTS}; \
                     lower the vnodes or the capacities"
                ),
            });
        }
        let mut ring = Vec::with_capacity(points as usize);
        for (index, worker) in workers.iter().enumerate() {
            let worker_seed = hash64(worker.id().as_str().as_bytes(), seed);
            let count = u64::from(vnodes) * u64::from(worker.capacity());
            // At most MAX_RING_POINTS workers, so the index fits in u32.
            let index = index as u32;
            ring.extend((0..count).map(|k| (hash64(&k.to_le_bytes(), worker_seed), index)));
        }
        // Equal points (a 64-bit collision) are ordered by worker index.
        ring.sort_unstable();
        Ok(Self { points: ring })
    }

    /// For each of `hashes`, which must be sorted, the position of the first point at or
    /// after it (wrapping past the top; the ring must not be empty). One forward sweep of the
    /// ring: on a large ring, a binary search per hash misses the cache at every step.
    pub(super) fn starts(&self, hashes: impl Iterator<Item = u64>) -> impl Iterator<Item = usize> {
        let mut position = 0;
        hashes.map(move |hash| {
            while position < self.points.len() && self.points[position].0 < hash {
                position += 1;
            }
            position % self.points.len()
        })
    }

    /// The worker of the point at `position`.
    pub(super) fn owner_at(&self, position: usize) -> usize {
        self.points[position].1 as usize
    }

    /// The workers of every point, walking clockwise once around from `start` (a worker
    /// appears once per point it has).
    pub(super) fn clockwise(&self, start: usize) -> impl Iterator<Item = usize> + '_ {
        let len = self.points.len();
        (0..len).map(move |step| self.owner_at((start + step) % len))
    }
}

/// The partitions' hashes (with `seed`) and indices, sorted by hash and then by id — never by
/// index, so that input order does not matter.
pub(super) fn by_hash(partitions: &[Partition], seed: u64) -> Vec<(u64, usize)> {
    let mut order: Vec<(u64, usize)> = partitions
        .iter()
        .enumerate()
        .map(|(i, p)| (hash64(p.id().as_str().as_bytes(), seed), i))
        .collect();
    order.sort_unstable();
    // Equal 64-bit hashes are all but impossible; order each run of them by id.
    let mut run_start = 0;
    for end in 1..=order.len() {
        if end == order.len() || order[end].0 != order[run_start].0 {
            if end - run_start > 1 {
                order[run_start..end]
                    .sort_unstable_by(|a, b| partitions[a.1].id().cmp(partitions[b.1].id()));
            }
            run_start = end;
        }
    }
    order
}
