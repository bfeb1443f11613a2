//! parti gives a fleet of worker processes exclusive, sticky, fast-failover ownership of
//! partitions (shards, tenants, NATS subjects, stream partitions) — what Kafka consumer groups
//! give Kafka users, for systems built on NATS.
//!
//! This crate is the facade: everything a worker needs is at its top level.
//!
//! | item | what it is |
//! |---|---|
//! | [`Manager`], [`ManagerBuilder`] | the coordinator each worker process runs |
//! | [`Hooks`], [`HookContext`], [`LeadershipChange`] | callbacks for grants, revocations, state, leadership, errors; what they know of their manager |
//! | [`WorkerAssignment`], [`Grant`], [`FencingToken`] | what a worker owns, and the token of each partition |
//! | [`ManagerState`], [`DegradedReason`], [`Transition`], [`LeaderInfo`] | where a manager is, and who leads |
//! | [`Config`] | every timing and bucket setting, built with `with_*` methods |
//! | [`PartitionSource`], [`StaticSource`] | what the leader assigns |
//! | [`MemoryStore`], `NatsStore` (feature `nats`) | where the fleet coordinates |
//! | [`Error`], [`Result`] | typed errors, [`Error::is_transient`] for retries |
//!
//! And in modules: [`strategy`] (partitions, workers, the assignment strategies — usable
//! alone), [`store`] (the `Store` contract for writing a backend), [`config`] (bucket names
//! and validation errors), [`telemetry`] (metric names), `nats` (the NATS JetStream KV
//! backend, feature `nats`, default), `metrics` (the Prometheus exporter and its HTTP
//! endpoint, feature `prometheus`).
//!
//! A worker joins the fleet with a [`Manager`] and learns what it owns from
//! [`Manager::watch_assignment`] (or [`Hooks`]):
//!
//! ```
//! use std::time::Duration;
//! use parti::strategy::Sticky;
//! use parti::{Hooks, Manager, ManagerState, MemoryStore, StaticSource};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> parti::Result<()> {
//! // In production: `parti::NatsStore::connect("nats://…").await?`.
//! let store = MemoryStore::new();
//! let source = StaticSource::numbered("tenants", 16)?;
//! let hooks = Hooks::new()
//!     .on_assigned(|grants, _ctx| async move { /* start consuming these partitions */ })
//!     .on_revoked(|partitions, _ctx| async move { /* drain and stop these */ });
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
//!
//! The protocol's internals (`decide`: the state machines; `wire`: the stored records;
//! `runtime`: the tasks around them) are reachable for the project's own tests and tools but
//! are not part of the API: they change without notice.

pub use parti_core::config::Config;
pub use parti_core::decide::{DegradedReason, ManagerState};
pub use parti_core::runtime::{
    HookContext, Hooks, InstanceId, LeaderInfo, LeadershipChange, Manager, ManagerBuilder,
    PartitionSource, StaticSource, Transition, WorkerAssignment,
};
pub use parti_core::store::MemoryStore;
pub use parti_core::wire::{FencingToken, Grant};
pub use parti_core::{Error, Result, config, store, telemetry};
pub use parti_strategy as strategy;

#[doc(hidden)]
pub use parti_core::{decide, runtime, wire};

#[cfg(feature = "nats")]
pub use parti_nats as nats;
#[cfg(feature = "nats")]
pub use parti_nats::NatsStore;

/// The README's snippets, compiled with the doc tests so that they stay true.
#[cfg(all(doctest, feature = "nats"))]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

#[cfg(feature = "prometheus")]
pub use parti_metrics as metrics;

/// The `parti` command's implementation (feature `cli`): the binary calls [`cli::main`].
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod cli;
