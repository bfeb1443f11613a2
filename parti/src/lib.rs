//! parti gives a fleet of worker processes exclusive, sticky, fast-failover ownership of
//! partitions (shards, tenants, NATS subjects, stream partitions) — what Kafka consumer groups
//! give Kafka users, for systems built on NATS.
//!
//! This crate is the facade: it re-exports the crates that make up parti.
//!
//! | path | crate | feature |
//! |---|---|---|
//! | [`strategy`] | `parti-strategy`: partitions, workers, assignments, strategies | always |
//! | [`Manager`], [`store`], [`config`], [`wire`], [`decide`], [`runtime`], [`telemetry`], [`Error`] | `parti-core`: the `Manager`, the `Store` contract, the embedded `MemoryStore`, configuration, wire records, the protocol's decision logic and runtime, metric names | always |
//! | `nats` | `parti-nats`: the NATS JetStream KV backend | `nats` (default) |
//! | `metrics` | `parti-metrics`: metric names and the Prometheus exporter | `prometheus` |
//!
//! A worker joins the fleet with a [`Manager`] and learns what it owns from
//! [`Manager::watch_assignment`] (or [`Hooks`]):
//!
//! ```
//! use std::time::Duration;
//! use parti::decide::ManagerState;
//! use parti::store::MemoryStore;
//! use parti::strategy::Sticky;
//! use parti::{Hooks, Manager, StaticSource};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> parti::Result<()> {
//! // In production: `parti::nats::NatsStore::connect("nats://…").await?`.
//! let store = MemoryStore::new();
//! let source = StaticSource::numbered("tenants", 16).expect("valid keys");
//! let hooks = Hooks::new()
//!     .on_assigned(|grants| async move { /* start consuming these partitions */ })
//!     .on_revoked(|partitions| async move { /* drain and stop these */ });
//! let manager = Manager::builder(store, source, Sticky::default())
//!     .hooks(hooks)
//!     .start()
//!     .await?;
//! manager.wait_state(ManagerState::Stable, Duration::from_secs(60)).await?;
//! let mine = manager.assignment();
//! println!("{} owns {} partitions at version {}", manager.worker_id(), mine.len(), mine.version());
//! manager.stop().await?;
//! # Ok(())
//! # }
//! ```

pub use parti_core::runtime::{
    Hooks, Manager, ManagerBuilder, PartitionSource, StaticSource, WorkerAssignment,
};
pub use parti_core::{Error, Result, config, decide, runtime, store, telemetry, wire};
pub use parti_strategy as strategy;

#[cfg(feature = "nats")]
pub use parti_nats as nats;

/// The README's snippets, compiled with the doc tests so that they stay true.
#[cfg(all(doctest, feature = "nats"))]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

#[cfg(feature = "prometheus")]
pub use parti_metrics as metrics;
