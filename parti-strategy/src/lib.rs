//! Partition assignment for parti — usable on its own, with no async runtime.
//!
//! This crate holds the vocabulary of assignment and the strategies:
//!
//! - [`PartitionId`] and [`Partition`]: what is assigned (an id built from one or more keys,
//!   with a stable string and NATS-subject form, and a weight);
//! - [`WorkerId`] and [`Worker`]: who it is assigned to (with a capacity);
//! - [`Assignment`]: which worker owns each partition; [`Assignment::moved_from`] and
//!   [`Balance`] measure movement and balance;
//! - [`Strategy`] and [`StrategyInput`]: the computation from workers, partitions and the
//!   *previous* assignment to a new assignment, or a typed [`StrategyError`];
//! - the strategies: [`Sticky`] (the default), [`ConsistentHash`] (plain or with bounded
//!   loads) and [`RoundRobin`].
//!
//! # Standalone use
//!
//! The crate depends on nothing asynchronous (no tokio, no NATS client, no metrics): a
//! program that only wants assignment adds this one crate. With the `serde` feature the id
//! types and [`Partition`] implement `Serialize`/`Deserialize`.
//!
//! ```
//! use parti_strategy::{Partition, Sticky, Strategy, StrategyInput, Worker};
//!
//! let partitions: Vec<Partition> = (0..1_000)
//!     .map(|n| Partition::from_keys(["orders", &n.to_string()]))
//!     .collect::<Result<_, _>>()?;
//! let mut workers: Vec<Worker> = (0..8).map(|n| Worker::new(format!("worker-{n}"))).collect();
//!
//! let strategy = Sticky::new();
//! let before = strategy.assign(&StrategyInput::new(&workers, &partitions))?;
//!
//! // A ninth worker joins: exactly ⌊1000 / 9⌋ partitions move, all onto it.
//! workers.push(Worker::new("worker-8"));
//! let after = strategy.assign(&StrategyInput::new(&workers, &partitions).with_previous(&before))?;
//! assert_eq!(after.moved_from(&before), 111);
//! assert_eq!(after.partitions_of(workers[8].id()).len(), 111);
//!
//! // Each partition's subject, for a NATS consumer filter.
//! assert_eq!(partitions[7].id().subject("work"), "work.orders.7");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Which strategy
//!
//! | | [`Sticky`] (default) | [`ConsistentHash::bounded`] (ε = 0.25) | [`ConsistentHash::new`] (plain) | [`RoundRobin`] |
//! |---|---|---|---|---|
//! | previous assignment | needed (the leader stores it) | used to keep partitions in place; optional | not used | not used |
//! | hash affinity | none | most partitions on their first choice (94–99 % measured below) | every partition | none |
//! | balance (equal weights) | max − min ≤ 1 | max ≤ max(⌈avg⌉, ⌊1.25·avg⌋) | hash luck | max − min ≤ 1 |
//! | movement on a join or leave | exactly the minimum | only onto the joiner / off the leaver (while no cap falls) | only onto the joiner / off the leaver | almost everything |
//!
//! Each guarantee is stated on the strategy's type and is a property test
//! (`tests/properties.rs`, 1,000 cases each).
//!
//! # Measured
//!
//! `cargo xtask strategy-report --partitions P --workers N` (release build, this project's
//! 2-core machine; compute = median of 20 full computes from the previous assignment;
//! movement = mean over 10 different joining / leaving workers, as partitions whose owner
//! changed over the optimum ⌊P/(N+1)⌋ for a join and the leaver's count for a leave):
//!
//! | P × N | strategy | compute | max / avg | max − min | moved / optimal, join | leave |
//! |---|---|---|---|---|---|---|
//! | 10k × 200 | sticky | 0.15 ms | 1.000 | 0 | 1.000 | 1.000 |
//! | 10k × 200 | consistent hash ε=0.25 | 1.6 ms | 1.240 | 32 | 0.924 | 1.000 |
//! | 10k × 200 | consistent hash plain | 2.0 ms | 1.480 | 44 | 0.924 | 1.000 |
//! | 10k × 200 | round robin | 0.41 ms | 1.000 | 0 | 204 | 198 |
//! | 100k × 10k | sticky | 4.8 ms | 1.000 | 0 | 1.000 | 1.000 |
//! | 100k × 10k | consistent hash ε=0.25 | 94 ms | 1.200 | 11 | 1.089 | 1.000 |
//! | 100k × 10k | consistent hash plain | 90 ms | 2.600 | 26 | 1.100 | 1.000 |
//! | 100k × 10k | round robin | 6.0 ms | 1.000 | 0 | 11 111 | 9 600 |
//!
//! Compute times on this shared machine vary by up to 1.5× (at times 2×) from run to run;
//! `cargo bench -p parti-strategy` (criterion) gave 0.19, 2.1, 1.7 and 0.37 ms at 10k × 200
//! and 4.2, 76, 80 and 5.3 ms at 100k × 10k, in the same order.
//!
//! Most of a steady-state compute used to be hashing partition ids and touching each id's
//! allocation (about 20 ms of sticky's 22 at 100k × 10k): an [`Assignment`] keeps its
//! partitions in a table shared by the assignments computed over the same partition list,
//! with owners as a dense list by position, so a strategy given the partition list of its
//! previous assignment finds each previous owner by position and hashes nothing; the
//! id → position map is built only when an assignment is looked up by id.
//!
//! A ring's joiner takes what hashes to it, which may be less than ⌊P/(N+1)⌋ (so the ratio
//! can fall below one) or more. The bounded ring stays that close to the minimum because it
//! keeps partitions in place: with only ten partitions per worker (100k × 10k) the cap of
//! ⌊1.25 × 10⌋ = 12 binds often, and the first version of this ring, which ignored the
//! previous assignment, moved 1.67× the optimum on a join and 1.44× on a leave there (every
//! change set off chains of partitions returning to first choices that gained room).
//!
//! The price is affinity: a partition pushed off its full first choice stays off it until its
//! worker leaves. `--churn K` measures it over K pseudo-random joins and leaves, each computed
//! from the assignment before. At 10k × 200 with `--churn 2000`, the share of partitions on
//! their first choice went from 99.3 % to 98.4 %, and a change moved 49.1 partitions on
//! average (the plain ring: 48.9). At 100k × 10k with `--churn 200`, it went from 94.4 % to
//! 94.0 %, at 9.5 partitions per change (the plain ring: 9.8).
//!
//! [`ConsistentHash::DEFAULT_VNODES`] = 160 was chosen with
//! `cargo xtask strategy-report … --vnodes V --only consistent --trials 20` over
//! V ∈ {64, 100, 160, 256}: the bounded ring's movement barely depends on V (it follows the
//! joiner's arcs); the plain ring's balance at 10k × 200 is best at 160 (max/avg 1.48,
//! against 1.64 at 64, 1.54 at 100 and 1.52 at 256), and compute grows with V — at
//! 100k × 10k, 52 ms at 64, 93 ms at 160 and 166 ms at 256, close to the 200 ms budget.
//!
//! With `--weights skewed` (5 % of partitions weigh 10, 15 % weigh 3) at 10k × 200,
//! sticky keeps the heaviest load within 1.007 of the mean, a leave moves exactly the
//! leaver's partitions, and a join moves 1.67× ⌊P/(N+1)⌋ partitions (the joiner's share is
//! filled by weight, heaviest first). The bounded ring keeps the heaviest load at 1.25 of the
//! mean; a leave moves exactly the leaver's partitions, a join 1.35× ⌊P/(N+1)⌋ (the joiner
//! takes what hashes to it, by count, whatever it weighs).

mod assignment;
mod consistent_hash;
mod error;
mod hash;
mod measure;
mod partition;
mod round_robin;
mod sticky;
mod strategy;
mod worker;

pub use assignment::Assignment;
pub use consistent_hash::{ConsistentHash, MAX_RING_POINTS};
pub use error::StrategyError;
pub use measure::Balance;
pub use partition::{KEY_SEPARATOR, Partition, PartitionId, PartitionIdError};
pub use round_robin::RoundRobin;
pub use sticky::Sticky;
pub use strategy::{Strategy, StrategyInput};
pub use worker::{Worker, WorkerId};
