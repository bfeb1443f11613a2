//! `RoundRobin`: sorted partitions dealt to sorted workers.

use crate::assignment;
use crate::{Assignment, Strategy, StrategyError, StrategyInput, Worker};

/// Deals partitions, sorted by id, to workers, sorted by id, like cards: partition k goes
/// to worker k mod N.
///
/// Guarantees (property tests): every partition assigned exactly once; partition counts
/// differ by at most one; deterministic and independent of input order. It ignores weights,
/// capacities and the previous assignment, so a change of worker set typically moves most
/// partitions — use [`Sticky`](crate::Sticky) when movement matters.
///
/// ```
/// use parti_strategy::{Partition, RoundRobin, Strategy, StrategyInput, Worker};
///
/// let workers = [Worker::new("b"), Worker::new("a")];
/// let partitions: Vec<Partition> =
///     ["p1", "p2", "p3"].iter().map(Partition::new).collect::<Result<_, _>>()?;
/// let assignment = RoundRobin::new().assign(&StrategyInput::new(&workers, &partitions))?;
/// assert_eq!(assignment.partitions_of(&"a".into()).len(), 2); // p1 and p3
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundRobin {
    _private: (),
}

impl RoundRobin {
    /// The round-robin strategy.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Strategy for RoundRobin {
    fn name(&self) -> &str {
        "round-robin"
    }

    fn assign(&self, input: &StrategyInput<'_>) -> Result<Assignment, StrategyError> {
        input.validate_except_duplicate_partitions()?;
        let mut workers: Vec<&Worker> = input.workers.iter().collect();
        workers.sort_unstable_by(|a, b| a.id().cmp(b.id()));
        // Sorting by the first eight bytes first keeps most comparisons on contiguous
        // integers; it is the same order as sorting the ids, which hold no NUL byte.
        let ids = |i: usize| input.partitions[i].id();
        let mut order: Vec<(u64, usize)> = input
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| (sort_prefix(p.id().as_str()), i))
            .collect();
        order.sort_unstable_by(|(ka, a), (kb, b)| ka.cmp(kb).then_with(|| ids(*a).cmp(ids(*b))));
        let mut owners = vec![0; input.partitions.len()];
        for (k, (_, i)) in order.into_iter().enumerate() {
            owners[i] = (k % workers.len()) as u32;
        }
        let workers = workers.iter().map(|w| w.id());
        let listed = assignment::listing(input.previous, input.partitions);
        assignment::build(workers, input.partitions, owners, listed)
    }
}

/// The first eight bytes of `id`, big-endian, zero-padded: ordering these orders the ids,
/// up to ties that a full comparison settles.
fn sort_prefix(id: &str) -> u64 {
    let mut prefix = [0u8; 8];
    let bytes = id.as_bytes();
    let n = bytes.len().min(8);
    prefix[..n].copy_from_slice(&bytes[..n]);
    u64::from_be_bytes(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_order_agrees_with_string_order() {
        let mut ids = [
            "p-10",
            "p-2",
            "p-1",
            "orders.eu.10",
            "orders.eu.9",
            "a",
            "ab",
            "abcdefghij",
            "abcdefghi",
        ];
        let mut by_prefix = ids;
        by_prefix.sort_by(|a, b| sort_prefix(a).cmp(&sort_prefix(b)).then_with(|| a.cmp(b)));
        ids.sort();
        assert_eq!(by_prefix, ids);
    }
}
