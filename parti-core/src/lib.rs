//! The core of parti: the coordination contract and everything that does not depend on a
//! particular backend.
//!
//! - [`store`]: the [`Store`](store::Store)/[`Bucket`](store::Bucket) contract (key-value with
//!   revisions, create-if-absent, compare-and-set, TTL buckets, watch) and the embedded
//!   [`MemoryStore`](store::MemoryStore), with fault injection for tests;
//! - [`config`]: every knob of the protocol with its default, and validation that names the
//!   field and the rule;
//! - [`wire`]: the records stored in the protocol's buckets and their versioned binary
//!   encoding;
//! - [`Error`]: typed errors with [`Error::is_transient`] for retry decisions;
//! - [`decide`]: the pure decision logic of the coordination protocol (state machines,
//!   change classification, emergency detection, windows and cooldown), free of I/O and
//!   clocks;
//! - `testing` (feature `testing`): the conformance suite every `Store` backend runs.
//!
//! - [`runtime`]: the coordination runtime, generic over the store: the
//!   [`Manager`](runtime::Manager) a worker runs (stable id, heartbeat, election, the
//!   leader's calculator, the follower of its assignment), hooks and partition sources;
//! - [`telemetry`]: the metrics the runtime records through the `metrics` facade.
//!
//! ```
//! use std::time::Duration;
//! use parti_core::config::Config;
//! use parti_core::store::{Bucket, MemoryStore, Store};
//! use parti_core::wire::{Heartbeat, WireRecord};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> parti_core::Result<()> {
//! let config = Config::default();
//! config.validate()?;
//! let store = MemoryStore::new();
//! let heartbeats = store.bucket(&config.heartbeat_bucket()?).await?;
//! let beat = Heartbeat { instance_id: "i-1".into(), session: 0, floor: 0, applied_version: 0, term_seen: 0 };
//! heartbeats.put("worker-0", beat.encode()?).await?;
//! let stored = heartbeats.get("worker-0").await?.expect("just written");
//! assert_eq!(Heartbeat::decode(&stored.value)?, beat);
//! # Ok(())
//! # }
//! ```

pub mod config;
pub mod decide;
mod error;
pub mod runtime;
pub mod store;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod wire;

pub use error::{Error, Result};
