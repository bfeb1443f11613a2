//! Balance measures: how evenly an assignment spreads partitions (or their weight) over
//! workers. Movement is [`Assignment::moved_from`].

use crate::hash::FastMap;

use crate::{Assignment, Partition, Worker, WorkerId};

/// The spread of per-worker amounts (partition counts, or summed weights) over a set of
/// workers. Workers that own nothing count as 0.
///
/// ```
/// use parti_strategy::{Assignment, Balance, PartitionId, Worker, WorkerId};
///
/// let workers = [Worker::new("a"), Worker::new("b")];
/// let assignment: Assignment = ["p1", "p2", "p3"]
///     .into_iter()
///     .map(|p| (PartitionId::new(p).unwrap(), WorkerId::new("a")))
///     .collect();
/// let balance = Balance::of_counts(&assignment, &workers);
/// assert_eq!((balance.min, balance.max, balance.total), (0, 3, 3));
/// assert_eq!(balance.max_over_mean(), 2.0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Balance {
    /// Number of workers measured.
    pub workers: usize,
    /// The smallest amount a worker has.
    pub min: u64,
    /// The largest amount a worker has.
    pub max: u64,
    /// The sum over all workers.
    pub total: u64,
}

impl Balance {
    /// Partition counts per worker of `workers`.
    pub fn of_counts(assignment: &Assignment, workers: &[Worker]) -> Self {
        Self::measure(assignment, workers, |_| 1)
    }

    /// Summed partition weights per worker of `workers`. Partitions missing from
    /// `partitions` weigh 1.
    pub fn of_weights(
        assignment: &Assignment,
        workers: &[Worker],
        partitions: &[Partition],
    ) -> Self {
        let weights: FastMap<_, _> = partitions
            .iter()
            .map(|p| (p.id(), u64::from(p.weight())))
            .collect();
        Self::measure(assignment, workers, |p| {
            weights.get(p).copied().unwrap_or(1)
        })
    }

    fn measure(
        assignment: &Assignment,
        workers: &[Worker],
        amount: impl Fn(&crate::PartitionId) -> u64,
    ) -> Self {
        let mut per_worker: FastMap<&WorkerId, u64> = workers.iter().map(|w| (w.id(), 0)).collect();
        for (partition, owner) in assignment.iter() {
            if let Some(sum) = per_worker.get_mut(owner) {
                *sum += amount(partition);
            }
        }
        let min = per_worker.values().copied().min().unwrap_or(0);
        let max = per_worker.values().copied().max().unwrap_or(0);
        Self {
            workers: workers.len(),
            min,
            max,
            total: per_worker.values().sum(),
        }
    }

    /// The mean amount per worker.
    pub fn mean(&self) -> f64 {
        if self.workers == 0 {
            0.0
        } else {
            self.total as f64 / self.workers as f64
        }
    }

    /// The largest amount over the mean (1.0 is perfect balance; 0 when there is nothing).
    pub fn max_over_mean(&self) -> f64 {
        let mean = self.mean();
        if mean == 0.0 {
            0.0
        } else {
            self.max as f64 / mean
        }
    }

    /// The largest amount minus the smallest.
    pub fn spread(&self) -> u64 {
        self.max - self.min
    }
}
