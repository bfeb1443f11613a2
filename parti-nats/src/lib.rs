//! NATS JetStream backend for parti.
//!
//! This crate will hold `NatsStore`: an implementation of parti's
//! [`Store`](parti_core::store::Store) contract on NATS JetStream key-value buckets (bucket
//! provisioning with TTL, replicas and limit markers, compare-and-set mapped to parti's typed
//! errors, watches that resume after a reconnect), and a consumer helper whose JetStream filter
//! subjects follow the worker's assignment. It is the production backend: the NATS cluster is
//! the distributed engine that parti coordinates through.
//!
//! It has no code yet; the embedded [`MemoryStore`](parti_core::store::MemoryStore) in
//! `parti-core` implements the same contract today.
