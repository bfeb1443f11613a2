//! parti gives a fleet of worker processes exclusive, sticky, fast-failover ownership of
//! partitions (shards, tenants, NATS subjects, stream partitions) — what Kafka consumer groups
//! give Kafka users, for systems built on NATS.
//!
//! This crate is the facade: it re-exports the crates that make up parti.
//!
//! | path | crate | feature |
//! |---|---|---|
//! | [`strategy`] | `parti-strategy`: partitions, workers, assignments, strategies | always |
//! | [`store`], [`config`], [`wire`], [`decide`], [`runtime`], [`Error`] | `parti-core`: the `Store` contract, the embedded `MemoryStore`, configuration, wire records, the protocol's decision logic and runtime pieces | always |
//! | `nats` | `parti-nats`: the NATS JetStream KV backend | `nats` (default) |
//! | `metrics` | `parti-metrics`: metric names and the Prometheus exporter | `prometheus` |
//!
//! ```
//! use parti::store::{Bucket, BucketSpec, MemoryStore, Store};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), parti::store::StoreError> {
//! let store = MemoryStore::new();
//! let ids = store.bucket(&BucketSpec::new("parti-ids")?).await?;
//! let revision = ids.create("worker-0", "claimed".into()).await?;
//! assert_eq!(ids.get("worker-0").await?.map(|e| e.revision), Some(revision));
//! # Ok(())
//! # }
//! ```

pub use parti_core::{Error, Result, config, decide, runtime, store, wire};
pub use parti_strategy as strategy;

#[cfg(feature = "nats")]
pub use parti_nats as nats;

#[cfg(feature = "prometheus")]
pub use parti_metrics as metrics;
