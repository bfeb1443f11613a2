//! `ConsistentHash`: a hash ring with virtual nodes, optionally with bounded loads.

mod bounded;
mod ring;

use crate::assignment;
use crate::{Assignment, Strategy, StrategyError, StrategyInput, Worker};

use ring::Ring;

/// The most ring points (virtual nodes × capacity, summed over workers) a ring may have.
pub const MAX_RING_POINTS: u64 = 1 << 26;

/// Consistent hashing on a ring of virtual nodes, for hash affinity: a partition's owner
/// follows from the hash of its id.
///
/// Each worker gets `vnodes × capacity` points on a 64-bit ring (xxh3, seeded); a partition's
/// *first choice* is the worker of the first point at or after its own hash. The default of
/// [`ConsistentHash::DEFAULT_VNODES`] points per unit of capacity was chosen by measurement
/// (see the crate docs): more points balance better but make the ring slower to build.
///
/// **Plain** ([`ConsistentHash::new`]): every partition goes to its first choice. The owner
/// depends only on the partition's id and the set of workers — any process can compute it
/// alone, without the partition list or the previous assignment — but loads vary as hash
/// luck does.
///
/// **Bounded load** ([`ConsistentHash::bounded`], after Mirrokni, Thorup and
/// Zadimoghaddam, *Consistent Hashing with Bounded Loads*): each worker accepts at most
/// max(⌈aᵢ⌉, ⌊(1+ε)·aᵢ⌋) of weight, where aᵢ = W·cᵢ/C is its fair share; a partition whose
/// first choice is full walks on clockwise to the next worker with room. Partitions are
/// placed in ring order (hash, then id), so the result does not depend on input order.
/// Bounded mode also uses [`StrategyInput::previous`]: a partition stays on its worker
/// unless its first choice became a *joiner* (a worker that owned nothing before), its worker
/// is gone, or its worker's cap fell below its load. Without a previous assignment it is the
/// MTZ placement, first choices first. Keeping partitions in place is what holds movement near
/// the minimum when caps bind often (few partitions per worker): without it, every join or
/// leave sets off chains of partitions returning to first choices that gained room. The
/// price is that a partition pushed off its first choice stays off it until its worker
/// leaves; the crate docs measure how few those are. The previous assignment is taken to be
/// the ring's own: given one made by another strategy, bounded mode keeps that layout
/// wherever it fits under the caps. To start a fleet that switches to it from the ring's own
/// placement, compute once without the previous assignment.
///
/// Guarantees (each one is a property test):
///
/// - every partition is assigned exactly once, to a listed worker; deterministic and
///   independent of input order;
/// - **plain mode is monotone**: when a worker joins, partitions move only to it;
/// - **bounded mode caps every worker's load** at max(⌈aᵢ⌉, ⌊(1+ε)·aᵢ⌋) (equal weights;
///   with unequal weights a worker may exceed it only when no worker has room for a
///   partition, which then goes to the worker furthest below its share);
/// - **bounded mode moves a partition only for a reason** (equal weights, from its own
///   previous result): to a joiner, away from a departed worker, or off a worker whose cap
///   fell below what it kept — and then no more than that excess. So a join moves partitions
///   only onto the joiner, which takes exactly the partitions whose first choice it became,
///   up to its cap; a leave moves exactly the leaver's partitions; new partitions move
///   nothing else.
///
/// ```
/// use parti_strategy::{ConsistentHash, Partition, Strategy, StrategyInput, Worker};
///
/// let mut workers: Vec<Worker> = (0..4).map(|n| Worker::new(format!("worker-{n}"))).collect();
/// let partitions: Vec<Partition> =
///     (0..100).map(|n| Partition::new(format!("p{n}"))).collect::<Result<_, _>>()?;
/// let ring = ConsistentHash::bounded();
/// let before = ring.assign(&StrategyInput::new(&workers, &partitions))?;
/// assert!(before.counts().values().all(|&n| n <= 31)); // ⌊1.25 × 25⌋
///
/// // worker-3 leaves: only its partitions move.
/// let gone = workers.pop().expect("four workers");
/// let after = ring.assign(&StrategyInput::new(&workers, &partitions).with_previous(&before))?;
/// assert_eq!(after.moved_from(&before), before.partitions_of(gone.id()).len());
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
        let ring = Ring::build(&workers, self.vnodes, self.seed)?;
        if let Some(epsilon) = self.epsilon {
            return bounded::assign(&ring, &workers, input, epsilon, self.seed);
        }
        let mut owners = vec![0; input.partitions.len()];
        // In hash order, so that finding each partition's point is one sweep of the ring.
        let by_hash = ring::by_hash(input.partitions, self.seed);
        let starts = ring.starts(by_hash.iter().map(|&(hash, _)| hash));
        for (&(_, i), start) in by_hash.iter().zip(starts) {
            owners[i] = ring.owner_at(start) as u32;
        }
        let workers = workers.iter().map(|w| w.id());
        let listed = assignment::listing(input.previous, input.partitions);
        assignment::build(workers, input.partitions, owners, listed)
    }
}
