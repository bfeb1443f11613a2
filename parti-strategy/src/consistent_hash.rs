//! `ConsistentHash`: a hash ring with virtual nodes, optionally with bounded loads.

use crate::assignment::AssignmentBuilder;
use crate::hash::hash64;
use crate::{Assignment, Strategy, StrategyError, StrategyInput, Worker};

/// The most ring points (virtual nodes × capacity, summed over workers) a ring may have.
pub const MAX_RING_POINTS: u64 = 1 << 26;

/// Consistent hashing on a ring of virtual nodes, for zero-coordination affinity: a
/// partition's owner depends only on the hash of its id and the set of workers.
///
/// Each worker gets `vnodes × capacity` points on a 64-bit ring (xxh3, seeded); a partition
/// goes to the first point at or after its own hash. The default of
/// [`ConsistentHash::DEFAULT_VNODES`] points per unit of capacity was chosen by measurement
/// (see the crate docs): more points balance better but make the ring slower to build.
///
/// **Bounded load** ([`ConsistentHash::bounded`], after Mirrokni, Thorup and
/// Zadimoghaddam, *Consistent Hashing with Bounded Loads*): each worker accepts at most
/// max(⌈aᵢ⌉, ⌊(1+ε)·aᵢ⌋) of weight, where aᵢ = W·cᵢ/C is its fair share; a partition whose
/// first choice is full walks on clockwise to the next worker with room. Partitions are
/// placed in ring order, so the result does not depend on input order.
///
/// Guarantees (each one is a property test):
///
/// - every partition is assigned exactly once, to a listed worker; deterministic and
///   independent of input order;
/// - **plain mode is monotone**: when a worker joins, partitions move only to it;
/// - **bounded mode caps every worker's load** at max(⌈aᵢ⌉, ⌊(1+ε)·aᵢ⌋) (equal weights;
///   with unequal weights a worker may exceed it only when no worker has room for a
///   partition, which then goes to the worker furthest below its share).
///
/// ```
/// use parti_strategy::{ConsistentHash, Partition, Strategy, StrategyInput, Worker};
///
/// let workers: Vec<Worker> = (0..4).map(|n| Worker::new(format!("worker-{n}"))).collect();
/// let partitions: Vec<Partition> =
///     (0..100).map(|n| Partition::new(format!("p{n}"))).collect::<Result<_, _>>()?;
/// let ring = ConsistentHash::bounded();
/// let assignment = ring.assign(&StrategyInput::new(&workers, &partitions))?;
/// assert!(assignment.counts().values().all(|&n| n <= 31)); // ⌊1.25 × 25⌋
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConsistentHash {
    vnodes: u32,
    seed: u64,
    epsilon: Option<f64>,
}

impl Default for ConsistentHash {
    fn default() -> Self {
        Self::new()
    }
}

impl ConsistentHash {
    /// Virtual nodes per unit of worker capacity, unless set otherwise.
    pub const DEFAULT_VNODES: u32 = 160;

    /// The load bound ε of [`ConsistentHash::bounded`].
    pub const DEFAULT_EPSILON: f64 = 0.25;

    /// A plain ring (no load bound) with the default virtual nodes and seed 0.
    pub fn new() -> Self {
        Self {
            vnodes: Self::DEFAULT_VNODES,
            seed: 0,
            epsilon: None,
        }
    }

    /// A ring with bounded loads, ε = [`ConsistentHash::DEFAULT_EPSILON`].
    pub fn bounded() -> Self {
        Self {
            epsilon: Some(Self::DEFAULT_EPSILON),
            ..Self::new()
        }
    }

    /// The same ring with load bound `epsilon`: each worker takes at most (1+ε) times its
    /// fair share.
    ///
    /// # Errors
    /// [`StrategyError::InvalidParameter`] unless `epsilon` is finite and positive.
    pub fn with_epsilon(mut self, epsilon: f64) -> Result<Self, StrategyError> {
        if !(epsilon.is_finite() && epsilon > 0.0) {
            return Err(StrategyError::InvalidParameter {
                parameter: "epsilon",
                reason: format!("must be finite and greater than 0, got {epsilon}"),
            });
        }
        self.epsilon = Some(epsilon);
        Ok(self)
    }

    /// The same ring with `vnodes` points per unit of worker capacity.
    ///
    /// # Errors
    /// [`StrategyError::InvalidParameter`] if `vnodes` is 0.
    pub fn with_vnodes(mut self, vnodes: u32) -> Result<Self, StrategyError> {
        if vnodes == 0 {
            return Err(StrategyError::InvalidParameter {
                parameter: "vnodes",
                reason: "must be at least 1".to_owned(),
            });
        }
        self.vnodes = vnodes;
        Ok(self)
    }

    /// The same ring with another hash seed (every worker of a fleet must use the same).
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The load bound ε, if the ring bounds loads.
    pub fn epsilon(&self) -> Option<f64> {
        self.epsilon
    }

    /// Virtual nodes per unit of worker capacity.
    pub fn vnodes(&self) -> u32 {
        self.vnodes
    }

    fn build_ring(&self, workers: &[&Worker]) -> Result<Vec<(u64, u32)>, StrategyError> {
        let points: u64 = workers
            .iter()
            .map(|w| u64::from(self.vnodes) * u64::from(w.capacity()))
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
            let worker_seed = hash64(worker.id().as_str().as_bytes(), self.seed);
            let count = u64::from(self.vnodes) * u64::from(worker.capacity());
            // At most MAX_RING_POINTS workers, so the index fits in u32.
            let index = index as u32;
            ring.extend((0..count).map(|k| (hash64(&k.to_le_bytes(), worker_seed), index)));
        }
        // Equal points (a 64-bit collision) are ordered by worker id.
        ring.sort_unstable();
        Ok(ring)
    }
}

impl Strategy for ConsistentHash {
    fn name(&self) -> &str {
        if self.epsilon.is_some() {
            "consistent-hash-bounded"
        } else {
            "consistent-hash"
        }
    }

    fn assign(&self, input: &StrategyInput<'_>) -> Result<Assignment, StrategyError> {
        input.validate_except_duplicate_partitions()?;
        if input.partitions.is_empty() {
            return Ok(Assignment::new());
        }
        let mut workers: Vec<&Worker> = input.workers.iter().collect();
        workers.sort_unstable_by(|a, b| a.id().cmp(b.id()));
        let ring = self.build_ring(&workers)?;
        let start_of = |hash: u64| ring.partition_point(|&(point, _)| point < hash) % ring.len();

        let mut assignment =
            AssignmentBuilder::new(workers.iter().map(|w| w.id()), input.partitions.len());
        let Some(epsilon) = self.epsilon else {
            for partition in input.partitions {
                let hash = hash64(partition.id().as_str().as_bytes(), self.seed);
                assignment.give(partition.id(), ring[start_of(hash)].1 as usize)?;
            }
            return Ok(assignment.finish());
        };

        let total: u128 = input
            .partitions
            .iter()
            .map(|p| u128::from(p.weight()))
            .sum();
        let capacity: u128 = workers.iter().map(|w| u128::from(w.capacity())).sum();
        let cap: Vec<u128> = workers
            .iter()
            .map(|w| {
                let share = total * u128::from(w.capacity());
                let ceil = share.div_ceil(capacity);
                let bounded = ((1.0 + epsilon) * share as f64 / capacity as f64).floor() as u128;
                ceil.max(bounded)
            })
            .collect();
        let mut load = vec![0u128; workers.len()];

        // MTZ: partitions in ring order (hash, then id), each to the first worker at or
        // after its hash that has room.
        let mut order: Vec<(u64, usize)> = input
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| (hash64(p.id().as_str().as_bytes(), self.seed), i))
            .collect();
        order.sort_unstable_by(|a, b| {
            (a.0, input.partitions[a.1].id()).cmp(&(b.0, input.partitions[b.1].id()))
        });
        for (hash, i) in order {
            let partition = &input.partitions[i];
            let weight = u128::from(partition.weight());
            let start = start_of(hash);
            let with_room = (0..ring.len())
                .map(|step| ring[(start + step) % ring.len()].1 as usize)
                .find(|&w| load[w] + weight <= cap[w]);
            // Only unequal weights can leave no worker with room: then the partition goes
            // to the worker furthest below its share.
            let owner = with_room.unwrap_or_else(|| {
                (0..workers.len())
                    .max_by_key(|&w| {
                        let share = total * u128::from(workers[w].capacity());
                        (
                            share as i128 - (load[w] * capacity) as i128,
                            std::cmp::Reverse(w),
                        )
                    })
                    .unwrap_or(0)
            });
            load[owner] += weight;
            assignment.give(partition.id(), owner)?;
        }
        Ok(assignment.finish())
    }
}
