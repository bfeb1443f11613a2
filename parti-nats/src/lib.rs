//! The NATS JetStream backend for parti: [`NatsStore`] implements parti's
//! [`Store`](parti_core::store::Store) contract on JetStream key-value buckets.
//!
//! - **Buckets** are created or bound with history 1, the spec's TTL as `max_age`, its
//!   replicas and storage, and limit markers (nats-server ≥ 2.11) so that an expiry reaches
//!   watchers as a delete with [`DeleteReason::Expired`](parti_core::store::DeleteReason).
//!   Binding a bucket that exists with another TTL fails with
//!   [`StoreError::BucketMismatch`](parti_core::store::StoreError::BucketMismatch); a server
//!   older than 2.11 is refused with a message that says so.
//! - **Writes** are published with JetStream's expected-last-subject-sequence header:
//!   `create` expects no record (or writes over a delete or expiry marker at its revision),
//!   `update` and `delete` with a revision expect exactly that one. A wrong revision is
//!   [`Conflict`](parti_core::store::StoreError::Conflict) or
//!   [`AlreadyExists`](parti_core::store::StoreError::AlreadyExists); a missing
//!   acknowledgement is [`OutcomeUnknown`](parti_core::store::StoreError::OutcomeUnknown);
//!   a known-lost connection fails fast with
//!   [`Unavailable`](parti_core::store::StoreError::Unavailable) without sending anything.
//! - **Watches** resume by themselves after a reconnect or a server restart, from the
//!   revision after the last one delivered: nothing lost, nothing twice.
//!
//! - **Consuming** (the [`consumer`] module): [`PartitionConsumer`] reads a JetStream stream
//!   with Kafka-group semantics — one durable pull consumer per owned partition, handed over
//!   with a drain when the partition moves.
//!
//! The whole Store conformance suite runs against a real `nats-server`, single node and a
//! 3-node cluster with 3 replicas (`tests/tests/store_nats.rs` in the repository).

mod bucket;
pub mod consumer;
mod errors;
mod placement;
mod source;
mod store;
mod watch;

pub use bucket::NatsBucket;
pub use consumer::{ConsumerConfig, ConsumerConfigError, MessageContext, PartitionConsumer};
pub use source::{BadEntry, KvPartitionSource};
pub use store::{DEFAULT_REQUEST_TIMEOUT, MIN_SERVER_VERSION, NatsStore};
