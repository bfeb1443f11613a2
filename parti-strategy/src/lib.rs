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
//! | needs the previous assignment | yes (the leader stores it) | no | no | no |
//! | balance (equal weights) | max − min ≤ 1 | max ≤ max(⌈avg⌉, ⌊1.25·avg⌋) | hash luck | max − min ≤ 1 |
//! | movement on a join or leave | exactly the minimum | near the minimum with many partitions per worker | only to a joiner / from a leaver | almost everything |
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
//! | 10k × 200 | sticky | 0.75 ms | 1.000 | 0 | 1.000 | 1.000 |
//! | 10k × 200 | consistent hash ε=0.25 | 2.0 ms | 1.240 | 32 | 1.039 | 1.063 |
//! | 10k × 200 | consistent hash plain | 2.2 ms | 1.480 | 44 | 0.924 | 1.000 |
//! | 10k × 200 | round robin | 0.47 ms | 1.000 | 0 | 204 | 198 |
//! | 100k × 10k | sticky | 37 ms | 1.000 | 0 | 1.000 | 1.000 |
//! | 100k × 10k | consistent hash ε=0.25 | 148 ms | 1.200 | 11 | 1.667 | 1.440 |
//! | 100k × 10k | consistent hash plain | 246 ms | 2.600 | 26 | 1.100 | 1.000 |
//! | 100k × 10k | round robin | 9.3 ms | 1.000 | 0 | 11 111 | 9 600 |
//!
//! With only ten partitions per worker (100k × 10k), hashing alone leaves counts spread like
//! a Poisson law, so a load cap of ⌊1.25 × 10⌋ = 12 binds often and every join or leave
//! sets off chains of partitions returning to their first choice: the bounded ring moves
//! 1.4–1.7× the optimum there (re-hashing overflow instead of walking the ring, or placing
//! first choices before overflow, did not change that). With fifty per worker it is within
//! 1.07. [`Sticky`] does not hash, so it is exact at every scale.
//!
//! [`ConsistentHash::DEFAULT_VNODES`] = 160 was chosen with
//! `cargo xtask strategy-report … --vnodes V --only consistent --trials 20` over
//! V ∈ {64, 100, 160, 256}: at 10k × 200, 160 points per worker gave the lowest bounded-ring
//! movement (1.04 on a join, against 1.17 at 64 and 1.09 at 100) and better plain balance
//! than 64 or 100, while 256 doubled the 100k × 10k compute time for no gain.
//!
//! With `--weights skewed` (5 % of partitions weigh 10, 15 % weigh 3) at 10k × 200,
//! sticky keeps the heaviest load within 1.007 of the mean, a leave moves exactly the
//! leaver's partitions, and a join moves 1.67× ⌊P/(N+1)⌋ partitions (the joiner's share is
//! filled by weight, heaviest first).
//!
//! Criterion benches of the same computations: `cargo bench -p parti-strategy`.

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
