//! Partition assignment for parti — usable on its own, with no async runtime.
//!
//! This crate holds the vocabulary of assignment and the [`Strategy`] trait:
//!
//! - [`PartitionId`] and [`Partition`]: what is assigned (an id built from one or more keys,
//!   with a stable string and NATS-subject form, and a weight);
//! - [`WorkerId`] and [`Worker`]: who it is assigned to (with a capacity);
//! - [`Assignment`]: which worker owns each partition, with balance and movement measures;
//! - [`Strategy`] and [`StrategyInput`]: the computation from workers, partitions and the
//!   *previous* assignment (so strategies can be sticky) to a new assignment, or a typed
//!   [`StrategyError`].
//!
//! The strategies themselves (sticky-balanced, consistent hash with bounded load, round robin)
//! build on these types.
//!
//! # Standalone use
//!
//! The crate depends on nothing asynchronous (no tokio, no NATS client, no metrics), so a
//! program that only wants assignment adds this one crate. With the `serde` feature the id
//! types and [`Partition`] implement `Serialize`/`Deserialize`.
//!
//! ```
//! use parti_strategy::{Partition, PartitionId, StrategyInput, Worker};
//!
//! let workers = [Worker::new("worker-0"), Worker::new("worker-1").with_capacity(2)];
//! let partitions: Vec<Partition> = (0..6)
//!     .map(|n| Partition::from_keys(["orders", &n.to_string()]))
//!     .collect::<Result<_, _>>()?;
//! let input = StrategyInput::new(&workers, &partitions);
//! input.validate()?;
//! assert_eq!(partitions[3].id().subject("work"), "work.orders.3");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod assignment;
mod error;
mod partition;
mod strategy;
mod worker;

pub use assignment::Assignment;
pub use error::StrategyError;
pub use partition::{KEY_SEPARATOR, Partition, PartitionId, PartitionIdError};
pub use strategy::{Strategy, StrategyInput};
pub use worker::{Worker, WorkerId};
