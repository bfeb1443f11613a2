//! Watching a bucket: where a watch starts, what it yields, and the stream type.

use std::fmt;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;

use super::{Entry, Revision, StoreError};

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WatchFrom {
    /// Only changes made after the watch started — each key's latest always; a change
    /// superseded by a later change of its key before delivery may be skipped (see
    /// [`Bucket::watch`](super::Bucket::watch)).
    Now,
    /// The current value of every matching key (as [`WatchEvent::Put`], in revision order),
    /// then the changes after that (as [`Now`](Self::Now) gives them), with no gap between
    /// the two.
    Current,
    /// The latest record of every matching key whose revision is at least this one — values
    /// as puts, deletions and expiries as deletes — in revision order, then every change.
    /// Buckets keep one record per key, so earlier records of a key rewritten since are not
    /// replayed. Used to resume a watch after the last revision seen.
    Revision(Revision),
}

/// Why a key disappeared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeleteReason {
    /// Somebody deleted it.
    Deleted,
    /// Its bucket's TTL ran out since its last write.
    Expired,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WatchEvent {
    /// A key was written.
    Put(Entry),
    /// A key was deleted or expired.
    Delete {
        /// The key.
        key: String,
        /// The revision of the deletion.
        revision: Revision,
        /// Deleted by someone, or expired.
        reason: DeleteReason,
    },
}

impl WatchEvent {
    /// The key that changed.
    pub fn key(&self) -> &str {
        match self {
            Self::Put(entry) => &entry.key,
            Self::Delete { key, .. } => key,
        }
    }

    /// The revision of the change.
    pub fn revision(&self) -> Revision {
        match self {
            Self::Put(entry) => entry.revision,
            Self::Delete { revision, .. } => *revision,
        }
    }
}

/// The stream of changes returned by [`Bucket::watch`](super::Bucket::watch).
///
/// Events come in revision order. An `Err` item reports a failure of the watch itself (for
/// example the bucket was deleted); whether more items follow depends on the error: after
/// [`StoreError::NotFound`] the stream ends. It implements [`Stream`], and [`WatchStream::next`]
/// reads it without any stream extension trait.
pub struct WatchStream {
    inner: Pin<Box<dyn Stream<Item = Result<WatchEvent, StoreError>> + Send>>,
}

impl WatchStream {
    /// Wraps a backend's stream of events.
    pub fn new<S>(stream: S) -> Self
    where
        S: Stream<Item = Result<WatchEvent, StoreError>> + Send + 'static,
    {
        Self {
            inner: Box::pin(stream),
        }
    }

    /// The next event, or `None` when the watch has ended.
    pub async fn next(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        poll_fn(|cx| self.inner.as_mut().poll_next(cx)).await
    }

    /// The same stream with only the events of `key` (errors pass through): how
    /// [`Bucket::watch_key`](super::Bucket::watch_key) is built on a prefix watch.
    pub fn only_key(self, key: impl Into<String>) -> Self {
        let key = key.into();
        Self::new(futures_util::StreamExt::filter(self, move |item| {
            let keep = item.as_ref().map_or(true, |event| event.key() == key);
            std::future::ready(keep)
        }))
    }
}

impl Stream for WatchStream {
    type Item = Result<WatchEvent, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchStream").finish_non_exhaustive()
    }
}
