//! Watches that survive reconnects: every watch is "from a revision", and when the
//! underlying consumer fails or ends it is re-created from the revision after the last one
//! delivered, dropping anything already seen.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use parti_core::store::{
    DeleteReason, Entry, Operation, Revision, StoreResult, WatchEvent, WatchFrom, WatchStream,
};

use crate::errors::{Target, watch_error};
use crate::store::NatsStore;

/// The first and the longest wait before re-creating a failed watch.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);

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
    };
    watch.consumer = Some(open(&watch.kv, &watch.watched, watch.next).await?);
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

/// A consumer of the records `watched` needs, from revision `next` on.
async fn open(kv: &kv::Store, watched: &Watched, next: u64) -> StoreResult<kv::Watch> {
    let consumer = match watched {
        Watched::Prefix(_) => kv.watch_all_from_revision(next).await,
        Watched::Key(key) => kv.watch_from_revision(key, next).await,
    };
    consumer.map_err(|e| watch_error(watch_target(kv, watched.as_str()), e))
}

impl ResumingWatch {
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
                        let target = watch_target(&self.kv, self.watched.as_str());
                        if let Ok(last) = last_revision(&self.store, &self.kv, target).await {
                            if last >= self.next {
                                tracing::debug!(bucket = %self.kv.name, "watch consumer stalled; resuming");
                                self.consumer = None;
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
        let target = watch_target(&self.kv, self.watched.as_str());
        match open(&self.kv, &self.watched, self.next).await {
            Ok(consumer) => {
                self.consumer = Some(consumer);
                Ok(())
            }
            Err(e) => match self.store.stream_exists(target).await {
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
        if !self.watched.matches(&entry.key) {
            return None;
        }
        let revision = Revision::new(entry.revision);
        let reason = match entry.operation {
            kv::Operation::Put => {
                return Some(WatchEvent::Put(Entry {
                    key: entry.key,
                    value: entry.value,
                    revision,
                }));
            }
            kv::Operation::Delete => DeleteReason::Deleted,
            // parti never purges: a purge marker is the server's expiry marker.
            kv::Operation::Purge => DeleteReason::Expired,
        };
        if entry.revision <= self.snapshot_end {
            return None; // a snapshot shows live values only
        }
        Some(WatchEvent::Delete {
            key: entry.key,
            revision,
            reason,
        })
    }
}
