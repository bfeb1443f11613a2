//! Metrics for parti.
//!
//! This crate will hold the names and descriptions of every metric parti records through the
//! [`metrics`](https://docs.rs/metrics) facade (state transitions, rebalances by reason and
//! duration, workers, partitions owned, KV operation latency and errors, handoff wait time,
//! heartbeat age), and the setup of a Prometheus exporter
//! ([`metrics-exporter-prometheus`](https://docs.rs/metrics-exporter-prometheus)) so an
//! application can expose them with one call.
//!
//! It has no code yet: the coordination runtime that records these metrics comes first.
