//! The errors every `Store` backend reports.

use std::fmt;

use super::Revision;

/// A boxed error from a backend's own client library, kept as the source of a [`StoreError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The operation a [`StoreError`] happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// Connecting to the store.
    Connect,
    /// Opening (creating or binding) a bucket.
    OpenBucket,
    /// Deleting a bucket.
    DeleteBucket,
    /// Reading one key.
    Get,
    /// Creating a key that must not exist.
    Create,
    /// Writing a key at an expected revision.
    Update,
    /// Writing a key unconditionally.
    Put,
    /// Deleting a key.
    Delete,
    /// Listing keys.
    Keys,
    /// Starting a watch.
    Watch,
}

impl Operation {
    /// Whether the operation changes the store.
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Self::Create | Self::Update | Self::Put | Self::Delete | Self::DeleteBucket
        )
    }

    /// The operation's name, as used in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::OpenBucket => "open_bucket",
            Self::DeleteBucket => "delete_bucket",
            Self::Get => "get",
            Self::Create => "create",
            Self::Update => "update",
            Self::Put => "put",
            Self::Delete => "delete",
            Self::Keys => "keys",
            Self::Watch => "watch",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong in a [`Store`](super::Store) or [`Bucket`](super::Bucket) operation.
///
/// Variants say *what* happened so callers can branch on them: [`AlreadyExists`] and
/// [`Conflict`] are the expected outcomes of lost races, [`Unavailable`] and
/// [`OutcomeUnknown`] are worth retrying ([`StoreError::is_transient`]), the rest are
/// permanent. Backends keep their client library's errors as sources.
///
/// [`AlreadyExists`]: StoreError::AlreadyExists
/// [`Conflict`]: StoreError::Conflict
/// [`Unavailable`]: StoreError::Unavailable
/// [`OutcomeUnknown`]: StoreError::OutcomeUnknown
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// `create` found the key live.
    #[error("key `{key}` already exists in bucket `{bucket}`")]
    AlreadyExists {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },

    /// `update` or `delete` with an expected revision found the key at another revision, or
    /// absent.
    #[error(
        "key `{key}` in bucket `{bucket}` is no longer at revision {expected} \
         (it was written or deleted since)"
    )]
    Conflict {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The revision the caller expected.
        expected: Revision,
    },

    /// The bucket does not exist (it was deleted after it was opened).
    #[error("bucket `{bucket}` does not exist; open it again to re-create it")]
    NotFound {
        /// The bucket.
        bucket: String,
    },

    /// The bucket exists with a configuration that differs from the one asked for.
    #[error(
        "bucket `{bucket}` already exists with another configuration ({detail}); \
         use the same settings everywhere, or delete the bucket first"
    )]
    BucketMismatch {
        /// The bucket.
        bucket: String,
        /// What differs.
        detail: String,
    },

    /// A key or key prefix the store cannot hold.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The rejected key or prefix.
        key: String,
        /// Why.
        reason: &'static str,
    },

    /// A bucket specification the store cannot use.
    #[error("invalid bucket `{bucket}`: {reason}")]
    InvalidBucket {
        /// The bucket name as given.
        bucket: String,
        /// Why.
        reason: String,
    },

    /// The store cannot be reached now (connection lost, server restarting). The operation
    /// did not happen; retrying later may succeed.
    #[error("store unavailable during `{operation}`: {message}")]
    Unavailable {
        /// The operation that failed.
        operation: Operation,
        /// What the backend said.
        message: String,
        /// The backend's error.
        #[source]
        source: Option<BoxError>,
    },

    /// A write was sent but its result never arrived (a timeout): it may or may not have been
    /// applied. Re-read the key before deciding whether to retry.
    #[error(
        "outcome of `{operation}` on key `{key}` in bucket `{bucket}` is unknown ({message}); \
         re-read the key before retrying"
    )]
    OutcomeUnknown {
        /// The write that timed out.
        operation: Operation,
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// What the backend said.
        message: String,
        /// The backend's error.
        #[source]
        source: Option<BoxError>,
    },

    /// Any other failure of the backend; not worth retrying as is.
    #[error("store backend failed during `{operation}`: {message}")]
    Backend {
        /// The operation that failed.
        operation: Operation,
        /// What the backend said.
        message: String,
        /// The backend's error.
        #[source]
        source: Option<BoxError>,
    },
}

impl StoreError {
    /// Whether retrying the operation later may succeed: [`StoreError::Unavailable`] and
    /// [`StoreError::OutcomeUnknown`] (re-read first for the latter).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::OutcomeUnknown { .. })
    }

    /// A short name of the error's kind (`conflict`, `unavailable`, …), for metric labels.
    pub fn kind_str(&self) -> &'static str {
        match self {
            Self::AlreadyExists { .. } => "already_exists",
            Self::Conflict { .. } => "conflict",
            Self::NotFound { .. } => "not_found",
            Self::BucketMismatch { .. } => "bucket_mismatch",
            Self::InvalidKey { .. } => "invalid_key",
            Self::InvalidBucket { .. } => "invalid_bucket",
            Self::Unavailable { .. } => "unavailable",
            Self::OutcomeUnknown { .. } => "outcome_unknown",
            Self::Backend { .. } => "backend",
        }
    }

    /// Whether a write may or may not have been applied.
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, Self::OutcomeUnknown { .. })
    }

    /// An [`StoreError::Unavailable`] with a message and no source.
    pub fn unavailable(operation: Operation, message: impl Into<String>) -> Self {
        Self::Unavailable {
            operation,
            message: message.into(),
            source: None,
        }
    }
}

/// Shorthand for results of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unavailable_and_outcome_unknown_are_transient() {
        let transient = [
            StoreError::unavailable(Operation::Get, "connection lost"),
            StoreError::OutcomeUnknown {
                operation: Operation::Put,
                bucket: "b".into(),
                key: "k".into(),
                message: "timed out".into(),
                source: None,
            },
        ];
        assert!(transient.iter().all(StoreError::is_transient));
        let permanent = [
            StoreError::AlreadyExists {
                bucket: "b".into(),
                key: "k".into(),
            },
            StoreError::Conflict {
                bucket: "b".into(),
                key: "k".into(),
                expected: Revision::new(3),
            },
            StoreError::NotFound { bucket: "b".into() },
            StoreError::InvalidKey {
                key: "a b".into(),
                reason: "space",
            },
        ];
        assert!(!permanent.iter().any(StoreError::is_transient));
    }

    #[test]
    fn messages_name_bucket_key_and_revision() {
        let err = StoreError::Conflict {
            bucket: "parti-ids".into(),
            key: "worker-3".into(),
            expected: Revision::new(17),
        };
        let text = err.to_string();
        assert!(text.contains("parti-ids") && text.contains("worker-3") && text.contains("17"));
    }
}
