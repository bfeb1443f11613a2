//! The one place where async-nats errors become parti's [`StoreError`]s, by explicit match.

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::kv::{EntryErrorKind, WatchErrorKind};
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use parti_core::store::{Operation, StoreError};

/// Who an error is about: the operation, bucket and key (empty for bucket-level operations).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    pub(crate) operation: Operation,
    pub(crate) bucket: &'a str,
    pub(crate) key: &'a str,
}

impl Target<'_> {
    pub(crate) fn unavailable(
        &self,
        message: impl Into<String>,
        source: impl Into<Option<parti_core::store::BoxError>>,
    ) -> StoreError {
        StoreError::Unavailable {
            operation: self.operation,
            message: message.into(),
            source: source.into(),
        }
    }

    pub(crate) fn backend(
        &self,
        message: impl Into<String>,
        source: impl Into<Option<parti_core::store::BoxError>>,
    ) -> StoreError {
        StoreError::Backend {
            operation: self.operation,
            message: message.into(),
            source: source.into(),
        }
    }

    pub(crate) fn outcome_unknown(
        &self,
        message: impl Into<String>,
        source: impl Into<Option<parti_core::store::BoxError>>,
    ) -> StoreError {
        StoreError::OutcomeUnknown {
            operation: self.operation,
            bucket: self.bucket.to_owned(),
            key: self.key.to_owned(),
            message: message.into(),
            source: source.into(),
        }
    }

    pub(crate) fn not_found(&self) -> StoreError {
        StoreError::NotFound {
            bucket: self.bucket.to_owned(),
        }
    }

    pub(crate) fn invalid_key(&self) -> StoreError {
        StoreError::InvalidKey {
            key: self.key.to_owned(),
            reason: "NATS refused the key",
        }
    }
}

/// What a failed publish (a write) means.
///
/// `StreamNotFound` is ambiguous — async-nats also reports it when nobody answers, which is
/// what a restarting server looks like — so it is returned as [`PublishFailure::NoStream`]
/// for the caller to check whether the bucket really is gone.
#[derive(Debug)]
pub(crate) enum PublishFailure {
    /// The key was not at the expected revision.
    WrongRevision,
    /// No stream answered: the bucket is gone, or the server is not ready.
    NoStream,
    /// The stream's files are gone from the server's disk, so it stores nothing any more
    /// (nats-server removes a deleted stream's files in the background; a stream created
    /// again under the same name at once can lose its files to that removal). Only
    /// deleting the stream and creating it again heals it.
    StorageLost(StoreError),
    /// Anything else, already mapped.
    Other(StoreError),
}

pub(crate) fn publish_failure(
    target: Target<'_>,
    error: async_nats::jetstream::context::PublishError,
) -> PublishFailure {
    if is_wrong_last_sequence(&error) {
        return PublishFailure::WrongRevision;
    }
    let kind = error.kind();
    let message = error.to_string();
    let storage_lost = is_storage_lost(&error);
    let source: parti_core::store::BoxError = Box::new(error);
    if storage_lost {
        return PublishFailure::StorageLost(target.unavailable(message, source));
    }
    PublishFailure::Other(match kind {
        PublishErrorKind::WrongLastSequence => return PublishFailure::WrongRevision,
        PublishErrorKind::StreamNotFound => return PublishFailure::NoStream,
        // Sent, but no acknowledgement came back: it may or may not have been applied.
        // async-nats raises `BrokenPipe` when the connection drops the publish's reply
        // channel (the connection was lost) — before or after the publish went out, it
        // cannot say: so it may have been applied too, and is the same case.
        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => {
            target.outcome_unknown(message, source)
        }
        // Refused before being stored: safe to retry.
        PublishErrorKind::MaxAckPending => target.unavailable(message, source),
        PublishErrorKind::MaxPayloadExceeded
        | PublishErrorKind::WrongLastMessageId
        | PublishErrorKind::Other => target.backend(message, source),
    })
}

/// Whether the server refused a write for its expected revision. async-nats names the
/// single-server code (10071) `WrongLastSequence`, but a clustered stream answers with
/// 10164, which it files under `Other`: look at the server's code itself.
fn is_wrong_last_sequence(error: &async_nats::jetstream::context::PublishError) -> bool {
    error.kind() == PublishErrorKind::WrongLastSequence
        || matches!(
            jetstream_code(error),
            Some(
                ErrorCode::STREAM_WRONG_LAST_SEQUENCE
                    | ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT
            )
        )
}

/// Whether the server failed to store a write because the stream's files are missing
/// (code 10077 with the operating system's "file not found"): they do not come back.
fn is_storage_lost(error: &async_nats::jetstream::context::PublishError) -> bool {
    /// How Linux and macOS (`ENOENT`) and Windows word a missing file.
    const MISSING: [&str; 2] = [
        "no such file or directory",
        "cannot find the file specified",
    ];
    let message = error.to_string().to_ascii_lowercase();
    jetstream_code(error) == Some(ErrorCode::STREAM_STORE_FAILED)
        && MISSING.iter().any(|missing| message.contains(missing))
}

/// A failed read of one key.
pub(crate) fn entry_error(
    target: Target<'_>,
    error: async_nats::jetstream::kv::EntryError,
) -> StoreError {
    let kind = error.kind();
    let message = error.to_string();
    let source: parti_core::store::BoxError = Box::new(error);
    match kind {
        EntryErrorKind::InvalidKey => target.invalid_key(),
        EntryErrorKind::TimedOut => target.unavailable(message, source),
        // "Other" covers no responders (server restarting) and a deleted stream; the
        // caller tells them apart by looking the stream up.
        EntryErrorKind::Other => target.unavailable(message, source),
    }
}

/// A failed read through the stream leader (`STREAM.MSG.GET`), other than "no message".
pub(crate) fn raw_read_error(
    target: Target<'_>,
    error: async_nats::jetstream::stream::RawMessageError,
) -> StoreError {
    let kind = error.kind();
    let message = error.to_string();
    let source: parti_core::store::BoxError = Box::new(error);
    match kind {
        LastRawMessageErrorKind::JetStream(js)
            if js.error_code() == ErrorCode::STREAM_NOT_FOUND =>
        {
            target.not_found()
        }
        LastRawMessageErrorKind::InvalidSubject => target.invalid_key(),
        // Timeouts, no responders (a restarting server), a stream without a leader for now
        // (a cluster electing one): worth retrying. `NoMessageFound` is the caller's to
        // handle; reaching here with it is as transient as the rest.
        LastRawMessageErrorKind::NoMessageFound
        | LastRawMessageErrorKind::JetStream(_)
        | LastRawMessageErrorKind::Other => target.unavailable(message, source),
    }
}

/// A failed stream info request (a listing's subjects).
pub(crate) fn info_error(
    target: Target<'_>,
    error: async_nats::jetstream::stream::InfoError,
) -> StoreError {
    if jetstream_code(&error) == Some(ErrorCode::STREAM_NOT_FOUND) {
        return target.not_found();
    }
    // Timeouts, no responders, a stream electing a leader: worth retrying.
    target.unavailable(error.to_string(), Some(Box::new(error) as _))
}

/// The JetStream error code an error carries somewhere in its chain of sources.
fn jetstream_code(error: &(dyn std::error::Error + 'static)) -> Option<ErrorCode> {
    let mut next = Some(error);
    while let Some(cause) = next {
        if let Some(js) = cause.downcast_ref::<async_nats::jetstream::Error>() {
            return Some(js.error_code());
        }
        next = cause.source();
    }
    None
}

/// A failed start of a watch.
pub(crate) fn watch_error(
    target: Target<'_>,
    error: async_nats::jetstream::kv::WatchError,
) -> StoreError {
    let kind = error.kind();
    let message = error.to_string();
    let source: parti_core::store::BoxError = Box::new(error);
    match kind {
        WatchErrorKind::InvalidKey => target.invalid_key(),
        WatchErrorKind::TimedOut | WatchErrorKind::ConsumerCreate | WatchErrorKind::Other => {
            target.unavailable(message, source)
        }
    }
}

#[cfg(test)]
mod tests {
    use async_nats::jetstream::context::PublishError;
    use async_nats::jetstream::kv::{EntryError, WatchError};

    use super::*;

    const TARGET: Target<'static> = Target {
        operation: Operation::Update,
        bucket: "parti-ids",
        key: "worker-1",
    };

    #[test]
    fn publish_errors_map_by_kind() {
        let map = |kind| publish_failure(TARGET, PublishError::new(kind));
        assert!(matches!(
            map(PublishErrorKind::WrongLastSequence),
            PublishFailure::WrongRevision
        ));
        assert!(matches!(
            map(PublishErrorKind::StreamNotFound),
            PublishFailure::NoStream
        ));
        for kind in [PublishErrorKind::TimedOut, PublishErrorKind::BrokenPipe] {
            let PublishFailure::Other(unknown) = map(kind) else {
                panic!("{kind:?} is an error to report");
            };
            assert!(unknown.is_outcome_unknown(), "{kind:?} -> {unknown:?}");
            assert!(unknown.to_string().contains("worker-1"));
        }
        let PublishFailure::Other(err) = map(PublishErrorKind::MaxAckPending) else {
            panic!("MaxAckPending is an error to report");
        };
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
        for kind in [
            PublishErrorKind::MaxPayloadExceeded,
            PublishErrorKind::WrongLastMessageId,
            PublishErrorKind::Other,
        ] {
            let PublishFailure::Other(err) = map(kind) else {
                panic!("{kind:?}");
            };
            assert!(
                matches!(err, StoreError::Backend { .. }),
                "{kind:?} -> {err:?}"
            );
            assert!(!err.is_transient());
        }
    }

    /// A publish refused by the server with JetStream error `code` and `description`.
    fn refused(code: u64, description: &str) -> PublishError {
        let refusal: async_nats::jetstream::Error = serde_json::from_value(serde_json::json!({
            "code": 503,
            "err_code": code,
            "description": description,
        }))
        .unwrap();
        PublishError::with_source(PublishErrorKind::Other, refusal)
    }

    #[test]
    fn a_stream_whose_files_are_gone_is_told_apart() {
        let lost = refused(
            10077,
            "error opening msg block file [\"/js/streams/KV_parti-ids/msgs/1.blk\"]: open \
             /js/streams/KV_parti-ids/msgs/1.blk: no such file or directory",
        );
        let PublishFailure::StorageLost(err) = publish_failure(TARGET, lost) else {
            panic!("a stream without its files is storage lost");
        };
        assert!(err.is_transient(), "{err:?}");
        assert!(err.to_string().contains("no such file"), "{err}");
        // The same code for another cause (a full disk, say) is only reported.
        let full = refused(10077, "write /js/1.blk: no space left on device");
        assert!(matches!(
            publish_failure(TARGET, full),
            PublishFailure::Other(StoreError::Backend { .. })
        ));
        // A clustered stream's "wrong last sequence" is a conflict, not a failure.
        assert!(matches!(
            publish_failure(TARGET, refused(10164, "wrong last sequence: 4")),
            PublishFailure::WrongRevision
        ));
    }

    #[test]
    fn entry_errors_map_by_kind() {
        let map = |kind| entry_error(TARGET, EntryError::new(kind));
        assert!(matches!(
            map(EntryErrorKind::InvalidKey),
            StoreError::InvalidKey { .. }
        ));
        assert!(map(EntryErrorKind::TimedOut).is_transient());
        assert!(map(EntryErrorKind::Other).is_transient());
    }

    #[test]
    fn watch_errors_map_by_kind() {
        let map = |kind| watch_error(TARGET, WatchError::new(kind));
        assert!(matches!(
            map(WatchErrorKind::InvalidKey),
            StoreError::InvalidKey { .. }
        ));
        for kind in [
            WatchErrorKind::TimedOut,
            WatchErrorKind::ConsumerCreate,
            WatchErrorKind::Other,
        ] {
            assert!(map(kind).is_transient(), "{kind:?}");
        }
    }
}
