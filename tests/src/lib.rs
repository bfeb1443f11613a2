//! parti's end-to-end tests and what they share.
//!
//! Test files (in `tests/`):
//!
//! - `store_memory.rs`: the Store conformance suite ([`parti_core::testing`]) against the
//!   embedded `MemoryStore`, on tokio's paused clock;
//! - `store_nats.rs`: the same suite against a real `nats-server`, single node and a 3-node
//!   cluster with 3 replicas, plus fault tests (server restarts, a killed cluster node).
//!
//! - `scenarios.rs`: the coordination scenario suite ([`scenarios`]) on `MemoryStore` (paused
//!   clock, default timings) and on a real `nats-server` (short timings).
//!
//! - `simulation.rs`: random fault schedules on `MemoryStore` and the paused clock, checked
//!   by the ownership ledger; `chaos_nats.rs`: the same checks on a real server;
//!   `runtime_faults.rs`: slow faults (stalls, slow and panicking hooks, a failing source)
//!   one at a time.
//!
//! Shared here: [`fleet`] (a fleet of managers with the invariant checks), [`ledger`] (who
//! owned what when, from the hooks), [`proxy`] (a TCP proxy that severs or black-holes),
//! [`rng`] (seeded schedules), [`source`] (a partition source that can fail or hang),
//! [`nats_server`] (real server processes on loopback), [`nats`] (a `Store` fixture that
//! owns its servers) and [`outage`] (cutting a fleet off from its store, on every backend).
//! A fleet prints the library's events when `PARTI_TEST_LOG` names a level ([`log`]).

pub mod consumer;
pub mod fleet;
pub mod ledger;
pub mod log;
pub mod nats;
pub mod nats_server;
pub mod outage;
pub mod proxy;
pub mod rng;
pub mod scenarios;
pub mod source;
