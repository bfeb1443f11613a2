//! The `Strategy` trait and its input.

use std::sync::Arc;

use crate::hash::set_with_capacity;
use crate::{Assignment, Partition, StrategyError, Worker};

/// Decides which worker owns each partition.
///
/// A strategy is a pure function of its [`StrategyInput`]: the live workers, the partitions and
/// the previous assignment (so that sticky strategies can keep partitions where they are). It
/// must be deterministic — every worker of a fleet computing with the same input gets the same
/// answer — and must assign every partition to exactly one listed worker, or return an error.
///
/// Implementations must be `Send + Sync`: the leader's calculator runs them from async tasks.
///
/// ```
/// use parti_strategy::{Assignment, Partition, Strategy, StrategyError, StrategyInput, Worker};
///
/// /// Gives every partition to the first worker (a toy, to show the trait).
/// struct Everything;
///
/// impl Strategy for Everything {
///     fn name(&self) -> &str {
///         "everything"
///     }
///
///     fn assign(&self, input: &StrategyInput<'_>) -> Result<Assignment, StrategyError> {
///         input.validate()?;
///         let Some(first) = input.workers.first() else {
///             return Ok(Assignment::new());
///         };
///         Ok(input.partitions.iter().map(|p| (p.id().clone(), first.id().clone())).collect())
///     }
/// }
///
/// let workers = [Worker::new("worker-0"), Worker::new("worker-1")];
/// let partitions = [Partition::new("a")?, Partition::new("b")?];
/// let assignment = Everything.assign(&StrategyInput::new(&workers, &partitions))?;
/// assert_eq!(assignment.len(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Strategy: Send + Sync {
    /// A short, stable name for logs, metrics and reports (for example `"sticky"`).
    fn name(&self) -> &str;

    /// Computes the assignment for `input`.
    ///
    /// # Errors
    /// A [`StrategyError`] when the input is invalid (see [`StrategyInput::validate`]).
    fn assign(&self, input: &StrategyInput<'_>) -> Result<Assignment, StrategyError>;
}

impl<S: Strategy + ?Sized> Strategy for &S {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn assign(&self, input: &StrategyInput<'_>) -> Result<Assignment, StrategyError> {
        (**self).assign(input)
    }
}

impl<S: Strategy + ?Sized> Strategy for Box<S> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn assign(&self, input: &StrategyInput<'_>) -> Result<Assignment, StrategyError> {
        (**self).assign(input)
    }
}

impl<S: Strategy + ?Sized> Strategy for Arc<S> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn assign(&self, input: &StrategyInput<'_>) -> Result<Assignment, StrategyError> {
        (**self).assign(input)
    }
}

/// What a [`Strategy`] computes from.
///
/// Built with [`StrategyInput::new`] and, for sticky strategies, [`StrategyInput::with_previous`].
/// The order of `workers` and `partitions` must not change the result.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct StrategyInput<'a> {
    /// The live workers.
    pub workers: &'a [Worker],
    /// The partitions to assign.
    pub partitions: &'a [Partition],
    /// The assignment currently in force, if any. It may mention workers that are gone and
    /// partitions that no longer exist.
    pub previous: Option<&'a Assignment>,
}

impl<'a> StrategyInput<'a> {
    /// Input with no previous assignment.
    pub fn new(workers: &'a [Worker], partitions: &'a [Partition]) -> Self {
        Self {
            workers,
            partitions,
            previous: None,
        }
    }

    /// The same input with the assignment currently in force.
    #[must_use]
    pub fn with_previous(mut self, previous: &'a Assignment) -> Self {
        self.previous = Some(previous);
        self
    }

    /// Checks what every strategy requires: unique partition ids, unique worker ids, weights
    /// and capacities of at least 1, and at least one worker when there are partitions.
    /// An empty partition list is valid (the result is an empty assignment).
    ///
    /// # Errors
    /// The first problem found, as a [`StrategyError`].
    pub fn validate(&self) -> Result<(), StrategyError> {
        self.validate_except_duplicate_partitions()?;
        let mut seen = set_with_capacity(self.partitions.len());
        match self.partitions.iter().find(|p| !seen.insert(p.id())) {
            Some(duplicate) => Err(StrategyError::DuplicatePartition(duplicate.id().clone())),
            None => Ok(()),
        }
    }

    /// [`StrategyInput::validate`] but for duplicate partitions, which the built-in
    /// strategies detect while building their result (no separate pass).
    pub(crate) fn validate_except_duplicate_partitions(&self) -> Result<(), StrategyError> {
        let mut seen_workers = set_with_capacity(self.workers.len());
        for worker in self.workers {
            if worker.capacity() == 0 {
                return Err(StrategyError::InvalidCapacity {
                    worker: worker.id().clone(),
                    capacity: worker.capacity(),
                });
            }
            if !seen_workers.insert(worker.id()) {
                return Err(StrategyError::DuplicateWorker(worker.id().clone()));
            }
        }
        if let Some(partition) = self.partitions.iter().find(|p| p.weight() == 0) {
            return Err(StrategyError::InvalidWeight {
                partition: partition.id().clone(),
                weight: partition.weight(),
            });
        }
        if self.workers.is_empty() && !self.partitions.is_empty() {
            return Err(StrategyError::NoWorkers {
                partitions: self.partitions.len(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(ids: &[&str]) -> Vec<Partition> {
        ids.iter().map(|id| Partition::new(id).unwrap()).collect()
    }

    #[test]
    fn empty_input_is_valid() {
        assert_eq!(StrategyInput::new(&[], &[]).validate(), Ok(()));
        assert_eq!(
            StrategyInput::new(&[Worker::new("w")], &[]).validate(),
            Ok(())
        );
    }

    #[test]
    fn partitions_without_workers_are_refused() {
        let partitions = parts(&["a", "b"]);
        assert_eq!(
            StrategyInput::new(&[], &partitions).validate(),
            Err(StrategyError::NoWorkers { partitions: 2 })
        );
    }

    #[test]
    fn duplicates_are_named() {
        let partitions = parts(&["a", "b", "a"]);
        let workers = [Worker::new("w")];
        assert_eq!(
            StrategyInput::new(&workers, &partitions).validate(),
            Err(StrategyError::DuplicatePartition("a".parse().unwrap()))
        );
        let workers = [Worker::new("w"), Worker::new("w")];
        assert_eq!(
            StrategyInput::new(&workers, &[]).validate(),
            Err(StrategyError::DuplicateWorker("w".into()))
        );
    }

    #[test]
    fn zero_weight_and_zero_capacity_are_refused() {
        let partitions = [Partition::new("a").unwrap().with_weight(0)];
        let workers = [Worker::new("w")];
        let err = StrategyInput::new(&workers, &partitions)
            .validate()
            .unwrap_err();
        assert!(matches!(
            err,
            StrategyError::InvalidWeight { weight: 0, .. }
        ));
        assert!(err.to_string().contains("`a`"));

        let workers = [Worker::new("w").with_capacity(0)];
        let err = StrategyInput::new(&workers, &[]).validate().unwrap_err();
        assert!(matches!(
            err,
            StrategyError::InvalidCapacity { capacity: 0, .. }
        ));
    }
}
