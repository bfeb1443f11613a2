//! The protocol on the wire: bucket keys and the records stored under them.
//!
//! | bucket ([`Config::buckets`](crate::config::Config::buckets)) | key | record |
//! |---|---|---|
//! | ids (TTL `id_ttl`) | `worker-<n>` | [`IdClaim`] |
//! | election (TTL `election_ttl`) | [`LEADER_KEY`] | [`LeaderRecord`]; term = revision of the winning create |
//! | election | [`REFRESH_KEY`] | any value: a worker asks the leader to re-read its partitions |
//! | heartbeat (TTL `heartbeat_ttl`) | worker id | [`Heartbeat`] |
//! | assignment (no TTL) | worker id | [`AssignmentRecord`] |
//!
//! Every value is one format-version byte ([`FORMAT_VERSION`]) followed by the record in
//! postcard; see [`WireRecord`]. A value that is corrupt or was written by something else is a
//! [`WireError`], never a panic.
//!
//! ```
//! use parti_core::wire::{Heartbeat, WireError, WireRecord};
//!
//! let beat = Heartbeat { instance_id: "a1b2".into(), session: 5, floor: 0, applied_version: 7, term_seen: 3 };
//! let bytes = beat.encode()?;
//! assert_eq!(Heartbeat::decode(&bytes)?, beat);
//! assert!(matches!(
//!     Heartbeat::decode(br#"{"json":true}"#),
//!     Err(WireError::UnsupportedVersion { .. })
//! ));
//! # Ok::<(), WireError>(())
//! ```

use parti_strategy::WorkerId;

mod codec;
mod records;

pub use codec::{FORMAT_VERSION, WireError, WireRecord};
pub use records::{
    AssignmentRecord, FencingToken, Grant, Heartbeat, IdClaim, LeaderRecord, Lifecycle,
};

/// The key of the leader lease in the election bucket.
pub const LEADER_KEY: &str = "leader";

/// The key in the election bucket any worker writes to ask the leader to re-read its
/// partition source (`Manager::refresh_partitions`); the value is not interpreted, and the
/// bucket's TTL removes it.
pub const REFRESH_KEY: &str = "refresh";

/// The prefix of every stable worker id.
pub const WORKER_ID_PREFIX: &str = "worker-";

/// The stable worker id with number `n`: `worker-<n>`.
pub fn worker_id(n: u32) -> WorkerId {
    WorkerId::new(format!("{WORKER_ID_PREFIX}{n}"))
}

/// The number of a stable worker id, if it is one (`worker-<n>` with `n` in canonical
/// decimal form).
pub fn worker_number(id: &str) -> Option<u32> {
    let digits = id.strip_prefix(WORKER_ID_PREFIX)?;
    let n: u32 = digits.parse().ok()?;
    (n.to_string() == digits).then_some(n)
}

#[cfg(test)]
mod tests;
