//! parti's end-to-end tests.
//!
//! The test files in `tests/` run the shared suites against every backend:
//!
//! - `store_memory.rs`: the Store conformance suite
//!   ([`parti_core::testing`]) against the embedded `MemoryStore`, on tokio's paused clock.
//!
//! This library will hold what the test files share: the real-server harness for the NATS
//! backend and the invariant checker of the scenario suite.
