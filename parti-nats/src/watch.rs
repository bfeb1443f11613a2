//! Watches that survive reconnects: every watch is "from a revision", and when the
//! underlying consumer fails or ends it is re-created from the revision after the last one
//! delivered, dropping anything already seen.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::kv;
use async_nats::jetstream::message::StreamMessage;
use futures_util::{FutureExt, StreamExt};
use parti_core::store::{
    DeleteReason, Entry, Operation, Revision, StoreResult, WatchEvent, WatchFrom, WatchStream,
};

use crate::bucket::removal;
use crate::errors::{Target, watch_error};
use crate::store::NatsStore;

/// The first and the longest wait before re-creating a failed watch.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// How long creating a watch's consumer may take before it is tried again. Creating one
/// takes milliseconds. But on a cluster with one node down, the server places about one
/// ephemeral consumer in three on the dead node — for minutes after the kill: it does not
/// know the node is gone — and that request is never answered: waiting the request timeout
/// (twice over, in async-nats' watch) left a watch deaf for 10 s at a time, and a worker
/// granted partitions applied them that late. A creation that takes longer than this is
/// dropped and tried again (its consumer, if the node ever creates it, goes away unused);
/// after [`OPEN_TIMEOUTS_BEFORE_WAITING_LONGER`] timeouts in a row each one doubles the
/// wait, up to the store's request timeout, so a server that is merely slow is still
/// waited for.
const OPEN_TIMEOUT: Duration = Duration::from_secs(1);

/// How many consumer creations in a row may time out after [`OPEN_TIMEOUT`] before the
/// watch waits longer: with a node of three down, 3 in a row happen once in 27 tries.
const OPEN_TIMEOUTS_BEFORE_WAITING_LONGER: u32 = 3;

/// After this long without an event, a watch of a replicated bucket asks the server whether
/// the bucket moved past what it delivered; if so its consumer is stuck and is re-created.
/// (An ordered consumer on a replicated stream can stall silently, and async-nats only
/// notices after missed heartbeats, several seconds later.) A bucket on one server is not
/// asked: each ask is a JetStream API request, and every idle watch of a fleet asking once
/// a second was most of a quiet fleet's API traffic. Every watch looks this often, without
/// asking anything, whether its client connected again since it last looked (see
/// [`ResumingWatch::after_reconnect`]).
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// What a watch delivers.
#[derive(Debug, Clone)]
pub(crate) enum Watched {
    /// Every key starting with this (the consumer gets every record; filtered here).
    Prefix(String),
    /// This key only (the consumer is filtered on its subject by the server).
    Key(String),
}

impl Watched {
    fn as_str(&self) -> &str {
        match self {
            Self::Prefix(prefix) | Self::Key(prefix) => prefix,
        }
    }

    fn matches(&self, key: &str) -> bool {
        match self {
            Self::Prefix(prefix) => key.starts_with(prefix.as_str()),
            Self::Key(watched) => key == watched,
        }
    }
}

struct ResumingWatch {
    store: NatsStore,
    kv: kv::Store,
    watched: Watched,
    /// The revision the next delivered event must have at least.
    next: u64,
    /// `WatchFrom::Current`: records up to here are the snapshot, whose deletes are skipped.
    snapshot_end: u64,
    consumer: Option<kv::Watch>,
    /// The client's connection count when the watch last looked.
    connects: u64,
    /// Whether to ask the server after [`IDLE_CHECK`] without an event (replicated buckets).
    idle_check: bool,
    /// JetStream's advisory that the bucket's stream was deleted: the watch then ends.
    deleted: async_nats::Subscriber,
    retry: Duration,
    /// How many consumer creations in a row timed out.
    open_timeouts: u32,
}

/// Starts a watch of `watched` in `kv` from `from`.
pub(crate) async fn start(
    store: NatsStore,
    kv: kv::Store,
    watched: Watched,
    from: WatchFrom,
) -> StoreResult<WatchStream> {
    let target = Target {
        operation: Operation::Watch,
        bucket: &kv.name,
        key: watched.as_str(),
    };
    let deleted = store
        .client()
        .subscribe(format!(
            "$JS.EVENT.ADVISORY.STREAM.DELETED.{}",
            crate::store::stream_name(&kv.name)
        ))
        .await
        .map_err(|e| target.unavailable(e.to_string(), Some(Box::new(e) as _)))?;
    let last = last_revision(&store, &kv, target).await?;
    let (next, snapshot_end) = match from {
        WatchFrom::Now => (last + 1, 0),
        WatchFrom::Current => (1, last),
        WatchFrom::Revision(revision) => (revision.get().max(1), 0),
    };
    let idle_check = kv.stream.cached_info().config.num_replicas > 1;
    let connects = connects(&store);
    let mut watch = ResumingWatch {
        connects,
        store,
        kv,
        watched,
        next,
        snapshot_end,
        idle_check,
        consumer: None,
        deleted,
        retry: RETRY_MIN,
        open_timeouts: 0,
    };
    // A creation that timed out is tried again by the watch itself, which delivers from
    // `next` once it has a consumer: nothing after `from` is lost meanwhile.
    match watch.open().await {
        Ok(consumer) => watch.consumer = Some(consumer),
        Err(OpenFailure::TimedOut) => {}
        Err(OpenFailure::Failed(e)) => return Err(e),
    }
    Ok(WatchStream::new(futures_util::stream::unfold(
        Some(watch),
        |state| async move {
            let mut watch = state?;
            match watch.next().await {
                Ok(event) => Some((Ok(event), Some(watch))),
                // The bucket is gone: report it and end.
                Err(e) => Some((Err(e), None)),
            }
        },
    )))
}

/// How many times the store's client has connected (the first time included).
fn connects(store: &NatsStore) -> u64 {
    store.client().statistics().connects.load(Ordering::Relaxed)
}

/// The bucket's last revision (0 when empty), asked of the server (the client's cached
/// stream info is as old as the handle).
async fn last_revision(store: &NatsStore, kv: &kv::Store, target: Target<'_>) -> StoreResult<u64> {
    match kv.stream.get_info().await {
        Ok(info) => Ok(info.state.last_sequence),
        Err(e) => match store.stream_exists(target).await {
            Ok(false) => Err(target.not_found()),
            _ => Err(target.unavailable(e.to_string(), Some(Box::new(e) as _))),
        },
    }
}

fn watch_target<'a>(kv: &'a kv::Store, prefix: &'a str) -> Target<'a> {
    Target {
        operation: Operation::Watch,
        bucket: &kv.name,
        key: prefix,
    }
}

/// How long a consumer creation may take after `timeouts` in a row, with the store's
/// `request_timeout`.
fn open_timeout(timeouts: u32, request_timeout: Duration) -> Duration {
    let doublings = timeouts.saturating_sub(OPEN_TIMEOUTS_BEFORE_WAITING_LONGER - 1);
    OPEN_TIMEOUT
        .saturating_mul(1 << doublings.min(16))
        .min(request_timeout.max(OPEN_TIMEOUT))
}

/// What a watch's idle look found the server holding beyond what it delivered.
enum Missed {
    /// Nothing (or the server could not tell).
    Nothing,
    /// Records of a prefix watch: its consumer is re-created from `next`.
    Records,
    /// The latest record of a key watch's key.
    Latest(StreamMessage),
}

/// Why a consumer could not be created.
enum OpenFailure {
    /// Not within the watch's open timeout.
    TimedOut,
    /// The server refused, or the request timed out inside the client.
    Failed(parti_core::store::StoreError),
}

impl ResumingWatch {
    /// A consumer of the records the watch needs, from revision `next` on, created within
    /// the open timeout.
    async fn open(&mut self) -> Result<kv::Watch, OpenFailure> {
        let consumer = match &self.watched {
            Watched::Prefix(_) => self.kv.watch_all_from_revision(self.next).boxed(),
            Watched::Key(key) => self.kv.watch_from_revision(key, self.next).boxed(),
        };
        let timeout = self.open_timeout();
        match tokio::time::timeout(timeout, consumer).await {
            Ok(Ok(consumer)) => {
                self.open_timeouts = 0;
                Ok(consumer)
            }
            Ok(Err(e)) => Err(OpenFailure::Failed(watch_error(
                watch_target(&self.kv, self.watched.as_str()),
                e,
            ))),
            Err(_) => {
                tracing::debug!(bucket = %self.kv.name, ?timeout, "creating the watch's consumer timed out");
                self.open_timeouts += 1;
                Err(OpenFailure::TimedOut)
            }
        }
    }

    /// How long the next consumer creation may take.
    fn open_timeout(&self) -> Duration {
        open_timeout(self.open_timeouts, self.store.request_timeout())
    }

    /// The next event, re-creating the consumer as often as needed; `Err` only when the
    /// bucket no longer exists.
    async fn next(&mut self) -> StoreResult<WatchEvent> {
        loop {
            let Some(consumer) = self.consumer.as_mut() else {
                self.reopen().await?;
                continue;
            };
            let next = tokio::select! {
                next = consumer.next() => next,
                _ = self.deleted.next() => {
                    return Err(watch_target(&self.kv, self.watched.as_str()).not_found());
                }
                () = tokio::time::sleep(IDLE_CHECK) => {
                    if connects(&self.store) != self.connects {
                        self.after_reconnect().await?;
                    } else if self.idle_check {
                        match self.missed().await {
                            Missed::Nothing => {}
                            Missed::Records => {
                                tracing::debug!(bucket = %self.kv.name, "watch consumer stalled; resuming");
                                self.consumer = None;
                            }
                            Missed::Latest(record) => {
                                // The key's latest record is at hand: delivered now, not
                                // after the new consumer is up (which can take seconds
                                // with a node down). The records before it are superseded.
                                tracing::debug!(bucket = %self.kv.name, "watch consumer stalled; delivering the key's latest record and resuming");
                                self.consumer = None;
                                self.next = record.sequence + 1;
                                if let Some(event) = self.raw_event(&record) {
                                    return Ok(event);
                                }
                            }
                        }
                    }
                    continue;
                }
            };
            match next {
                Some(Ok(entry)) => {
                    self.retry = RETRY_MIN;
                    if entry.revision < self.next {
                        continue; // already delivered before a resume
                    }
                    self.next = entry.revision + 1;
                    if let Some(event) = self.event(entry) {
                        return Ok(event);
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(bucket = %self.kv.name, error = %e, "watch consumer failed; resuming");
                    self.consumer = None;
                }
                None => {
                    tracing::debug!(bucket = %self.kv.name, "watch consumer ended; resuming");
                    self.consumer = None;
                }
            }
        }
    }

    /// What the server holds that the consumer should have delivered by now. A prefix
    /// watch's consumer gets every record of the bucket (it is filtered here, and `next`
    /// follows each), so the bucket's last revision tells. A key watch's consumer gets the
    /// key's records only: the key's last record tells — the bucket's revision would count
    /// every other key's writes as missed, and re-create a healthy consumer each second —
    /// and is itself what to deliver. [`Missed::Nothing`] also when the server cannot tell
    /// now (asked again at the next look).
    async fn missed(&mut self) -> Missed {
        match &self.watched {
            Watched::Prefix(_) => {
                let target = watch_target(&self.kv, self.watched.as_str());
                match last_revision(&self.store, &self.kv, target).await {
                    Ok(last) if last >= self.next => Missed::Records,
                    _ => Missed::Nothing,
                }
            }
            Watched::Key(key) => {
                let subject = format!("{}{key}", self.kv.prefix);
                match self
                    .kv
                    .stream
                    .get_last_raw_message_by_subject(&subject)
                    .await
                {
                    Ok(record) if record.sequence >= self.next => Missed::Latest(record),
                    _ => Missed::Nothing,
                }
            }
        }
    }

    /// The event for a key's record read from the stream, or `None` when it is not one to
    /// deliver (as [`Self::event`]).
    fn raw_event(&self, record: &StreamMessage) -> Option<WatchEvent> {
        let key = record
            .subject
            .as_str()
            .strip_prefix(self.kv.prefix.as_str())?;
        let value = record.payload.clone();
        let removed = removal(&record.headers);
        self.event_for(key.to_owned(), value, record.sequence, removed)
    }

    /// The client connected again: the server may have restarted without its data, and
    /// the bucket been created again (by anyone) with revisions starting over — which the
    /// consumer, resumed by async-nats after the revision it saw last, would never deliver.
    /// Asks the server once: a stream created anew, or behind what was delivered, ends the
    /// watch as `NotFound` (the bucket this watch followed is gone); the caller watches
    /// the new one from then on, and reads what it missed.
    async fn after_reconnect(&mut self) -> StoreResult<()> {
        let target = watch_target(&self.kv, self.watched.as_str());
        let info = match self.kv.stream.get_info().await {
            Ok(info) => info,
            Err(e) => {
                return match self.store.stream_exists(target).await {
                    Ok(false) => Err(target.not_found()),
                    // Asked again at the next look.
                    _ => {
                        tracing::debug!(bucket = %self.kv.name, error = %e, "cannot check the bucket after a reconnect yet");
                        Ok(())
                    }
                };
            }
        };
        self.connects = connects(&self.store);
        let created_again = info.created != self.kv.stream.cached_info().created;
        if created_again || info.state.last_sequence + 1 < self.next {
            return Err(target.not_found());
        }
        Ok(())
    }

    /// Waits, then tries once to re-create the consumer from the next revision.
    async fn reopen(&mut self) -> StoreResult<()> {
        tokio::time::sleep(self.retry).await;
        self.retry = (self.retry * 2).min(RETRY_MAX);
        let opened = self.open().await;
        let target = watch_target(&self.kv, self.watched.as_str());
        match opened {
            Ok(consumer) => {
                self.consumer = Some(consumer);
                Ok(())
            }
            // The timeout spaced the attempts already: tried again right after the
            // shortest wait.
            Err(OpenFailure::TimedOut) => {
                self.retry = RETRY_MIN;
                Ok(())
            }
            Err(OpenFailure::Failed(e)) => match self.store.stream_exists(target).await {
                Ok(false) => Err(target.not_found()),
                _ => {
                    tracing::debug!(bucket = %self.kv.name, error = %e, "cannot resume watch yet");
                    Ok(())
                }
            },
        }
    }

    /// The event for a record, or `None` when it is not one to deliver.
    fn event(&self, entry: kv::Entry) -> Option<WatchEvent> {
        let removed = match entry.operation {
            kv::Operation::Put => None,
            kv::Operation::Delete => Some(DeleteReason::Deleted),
            // parti never purges: a purge marker is the server's expiry marker.
            kv::Operation::Purge => Some(DeleteReason::Expired),
        };
        self.event_for(entry.key, entry.value, entry.revision, removed)
    }

    /// The event for a record of `key` at `revision` (`removed`: how it removed the key,
    /// `None` for a put), or `None` when it is not one to deliver: another key's, or a
    /// removal within the snapshot of `WatchFrom::Current`.
    fn event_for(
        &self,
        key: String,
        value: bytes::Bytes,
        revision: u64,
        removed: Option<DeleteReason>,
    ) -> Option<WatchEvent> {
        if !self.watched.matches(&key) {
            return None;
        }
        let at = Revision::new(revision);
        let Some(reason) = removed else {
            return Some(WatchEvent::Put(Entry {
                key,
                value,
                revision: at,
            }));
        };
        if revision <= self.snapshot_end {
            return None; // a snapshot shows live values only
        }
        Some(WatchEvent::Delete {
            key,
            revision: at,
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_creation_waits_longer_only_after_three_timeouts_in_a_row() {
        let request = Duration::from_secs(5);
        let waits: Vec<_> = (0..7).map(|n| open_timeout(n, request).as_secs()).collect();
        assert_eq!(waits, [1, 1, 1, 2, 4, 5, 5]);
        assert_eq!(open_timeout(u32::MAX, request), request);
        // A request timeout below a second does not make the first tries shorter.
        assert_eq!(open_timeout(0, Duration::from_millis(300)), OPEN_TIMEOUT);
    }
}
