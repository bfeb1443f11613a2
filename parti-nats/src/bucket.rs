//! `NatsBucket`: the key-value operations on one JetStream KV bucket.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use async_nats::HeaderMap;
use async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE;
use async_nats::jetstream::consumer::{DeliverPolicy, ReplayPolicy, push};
use async_nats::jetstream::kv;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use bytes::Bytes;
use futures_util::StreamExt;
use parti_core::store::{
    Bucket, DeleteReason, Entry, Operation, Revision, StoreError, StoreResult, WatchFrom,
    WatchStream, check_key, check_prefix,
};

use crate::errors::{
    PublishFailure, Target, entry_error, info_error, publish_failure, raw_read_error,
};
use crate::store::NatsStore;
use crate::watch::{self, Watched};

/// The header JetStream KV uses to mark a delete.
const KV_OPERATION: &str = "KV-Operation";
const KV_OPERATION_DELETE: &str = "DEL";
const KV_OPERATION_PURGE: &str = "PURGE";

/// How many times `create` retries when the key changes between its attempts.
const CREATE_ATTEMPTS: usize = 3;

/// How many reads of one listing are in flight at once.
const LISTING_READS_IN_FLIGHT: usize = 16;

/// The header a server puts on the marker it writes when a limit (a TTL) removes an entry.
const NATS_MARKER_REASON: &str = "Nats-Marker-Reason";

/// How a stored KV message removed its key, by its headers: `None` for a put; a delete;
/// or an expiry (a purge marker, which parti never writes, or the server's expiry marker).
pub(crate) fn removal(headers: &HeaderMap) -> Option<DeleteReason> {
    match headers.get(KV_OPERATION).map(|op| op.as_str()) {
        Some(KV_OPERATION_DELETE) => Some(DeleteReason::Deleted),
        Some(KV_OPERATION_PURGE) => Some(DeleteReason::Expired),
        _ if headers.get(NATS_MARKER_REASON).is_some() => Some(DeleteReason::Expired),
        _ => None,
    }
}

/// One bucket of a [`NatsStore`].
#[derive(Clone)]
pub struct NatsBucket {
    store: NatsStore,
    kv: kv::Store,
}

impl fmt::Debug for NatsBucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsBucket")
            .field("name", &self.kv.name)
            .finish()
    }
}

/// A write that did not happen.
enum WriteError {
    /// The key was not at the expected revision.
    WrongRevision,
    Failed(StoreError),
}

impl From<StoreError> for WriteError {
    fn from(error: StoreError) -> Self {
        Self::Failed(error)
    }
}

impl NatsBucket {
    pub(crate) fn new(store: NatsStore, kv: kv::Store) -> Self {
        Self { store, kv }
    }

    /// The live entry of `key` and when the server stored it (for status views: how old a
    /// heartbeat is, when a record was written). `None` when it is absent, deleted or
    /// expired.
    ///
    /// # Errors
    /// As [`Bucket::get`].
    pub async fn get_with_time(&self, key: &str) -> StoreResult<Option<(Entry, SystemTime)>> {
        Ok(self
            .record(Operation::Get, key)
            .await?
            .filter(|entry| entry.operation == kv::Operation::Put)
            .map(|entry| {
                let stored = SystemTime::from(entry.created);
                let entry = Entry {
                    key: key.to_owned(),
                    value: entry.value,
                    revision: Revision::new(entry.revision),
                };
                (entry, stored)
            }))
    }

    fn target<'a>(&'a self, operation: Operation, key: &'a str) -> Target<'a> {
        Target {
            operation,
            bucket: &self.kv.name,
            key,
        }
    }

    /// Publishes a value (or a delete marker) to `key`, expecting the key's last revision to
    /// be `expected` (0: the key has no record) when given.
    async fn write(
        &self,
        operation: Operation,
        key: &str,
        value: Bytes,
        expected: Option<u64>,
        delete: bool,
    ) -> Result<Revision, WriteError> {
        let target = self.target(operation, key);
        check_key(key)?;
        self.store.check_connected(target)?;
        let mut headers = HeaderMap::new();
        if let Some(expected) = expected {
            headers.insert(
                NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                expected.to_string().as_str(),
            );
        }
        if delete {
            headers.insert(KV_OPERATION, KV_OPERATION_DELETE);
        }
        let subject = format!("{}{key}", self.kv.prefix);
        let sent = self
            .store
            .jetstream()
            .publish_with_headers(subject, headers, value)
            .await;
        let acked = match sent {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        match acked {
            Ok(ack) => Ok(Revision::new(ack.sequence)),
            Err(e) => match publish_failure(target, e) {
                PublishFailure::WrongRevision => Err(WriteError::WrongRevision),
                PublishFailure::Other(e) => Err(WriteError::Failed(e)),
                PublishFailure::NoStream => Err(WriteError::Failed(self.no_stream(target).await)),
                PublishFailure::StorageLost(e) => {
                    Err(WriteError::Failed(self.storage_lost(target, e).await))
                }
            },
        }
    }

    /// The server lost the stream's files (see [`PublishFailure::StorageLost`]): when the
    /// stream is still the one this handle opened, it is deleted, and the bucket reported
    /// gone, so that it is created again (see `parti-core`'s reopening of lost buckets);
    /// a stream created since is left alone (this handle is the stale one). Nothing it held
    /// can be read or written any more.
    async fn storage_lost(&self, target: Target<'_>, lost: StoreError) -> StoreError {
        let info = match self.kv.stream.get_info().await {
            Ok(info) => info,
            Err(e) => {
                return match info_error(target, e) {
                    gone @ StoreError::NotFound { .. } => gone,
                    _ => lost,
                };
            }
        };
        if info.created != self.kv.stream.cached_info().created {
            return target.not_found();
        }
        tracing::warn!(
            bucket = %self.kv.name,
            error = %lost,
            "the server lost this bucket's files and can store nothing in it: deleting it to create it again"
        );
        match self
            .store
            .jetstream()
            .delete_stream(&self.kv.stream_name)
            .await
        {
            Ok(_) => target.not_found(),
            Err(e) => {
                tracing::debug!(bucket = %self.kv.name, error = %e, "deleting the broken bucket failed");
                lost
            }
        }
    }

    /// The error for "nobody answered for this bucket": gone, or the server is not ready.
    async fn no_stream(&self, target: Target<'_>) -> StoreError {
        match self.store.stream_exists(target).await {
            Ok(false) => target.not_found(),
            Ok(true) => target.unavailable("JetStream did not answer", None),
            Err(e) => e,
        }
    }

    fn conflict(&self, key: &str, expected: Revision) -> StoreError {
        StoreError::Conflict {
            bucket: self.kv.name.clone(),
            key: key.to_owned(),
            expected,
        }
    }

    /// The live entries under `prefix`, sorted by key, read from the stream's leader.
    ///
    /// The leader lists the stream's subjects (one per key: its last put, or a delete or
    /// expiry marker, history being 1), then each key's last message is read from it. A key
    /// live when the listing began has a subject in the list, and its read comes later, so
    /// each key is reported as it was at some instant of the listing: it sees every write
    /// acknowledged before it began. On one server an ordered consumer delivers the keys'
    /// last records first ([`last_records`](Self::last_records): one request), and only the
    /// keys it missed are read one by one. (On a cluster a consumer may be placed on any
    /// replica, one that has not caught up included, so every key is read from the leader.)
    async fn listing(&self, prefix: &str) -> StoreResult<Vec<Entry>> {
        let target = self.target(Operation::Keys, prefix);
        check_prefix(prefix)?;
        self.store.check_connected(target)?;
        let stored = format!("$KV.{}.", self.kv.name);
        let mut subjects = match self
            .kv
            .stream
            .info_with_subjects(format!("{stored}>"))
            .await
        {
            Ok(subjects) => subjects,
            Err(e) => return Err(self.read_failure(target, info_error(target, e)).await),
        };
        // Created again since this handle was opened (deleted, or lost with a server
        // restarted empty): the bucket this handle opened is gone, and an empty listing of
        // the new one must not pass for workers that all left.
        if subjects.info.created != self.kv.stream.cached_info().created {
            return Err(target.not_found());
        }
        // A replica answers for the stream only while it has no leader, and then from what
        // it has stored, which may be behind.
        if subjects
            .info
            .cluster
            .as_ref()
            .is_some_and(|cluster| cluster.leader.as_deref().is_none_or(str::is_empty))
        {
            return Err(target.unavailable(
                format!("stream {} has no leader", self.kv.stream_name),
                None,
            ));
        }
        let mut keys = Vec::new();
        while let Some(subject) = subjects.next().await {
            let (subject, _) = subject.map_err(|e| info_error(target, e))?;
            if let Some(key) = subject.strip_prefix(&stored) {
                if key.starts_with(prefix) {
                    keys.push(key.to_owned());
                }
            }
        }
        keys.sort_unstable();
        // On one server, a consumer delivers every key's last record in one request; the
        // keys it did not deliver (it can miss one written again under its feet) are read
        // one by one like every key of a replicated bucket.
        let mut entries = Vec::new();
        if self.kv.stream.cached_info().config.num_replicas <= 1 {
            match self.last_records(prefix, target).await {
                Ok(delivered) => {
                    keys.retain(|key| !delivered.contains_key(key));
                    entries.extend(delivered.into_values().flatten());
                }
                Err(e) => {
                    tracing::debug!(bucket = %self.kv.name, error = %e, "listing key by key");
                }
            }
        }
        // The reads are independent: keep several in flight.
        let mut reads = futures_util::stream::iter(keys)
            .map(|key| {
                let subject = format!("{stored}{key}");
                async move {
                    let read = self
                        .kv
                        .stream
                        .get_last_raw_message_by_subject(&subject)
                        .await;
                    (key, read)
                }
            })
            .buffered(LISTING_READS_IN_FLIGHT);
        while let Some((key, read)) = reads.next().await {
            let message = match read {
                Ok(message) => message,
                // Expired and its marker gone since the subjects were listed.
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => continue,
                Err(e) => return Err(self.read_failure(target, raw_read_error(target, e)).await),
            };
            if removal(&message.headers).is_none() {
                entries.push(Entry {
                    key,
                    value: message.payload,
                    revision: Revision::new(message.sequence),
                });
            }
        }
        entries.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        Ok(entries)
    }

    /// Each key's last record under `prefix` as an ordered consumer delivers them (on one
    /// server, from the store that acknowledged every write): the entry, or `None` for a
    /// delete or an expiry marker. The consumer starts after the call began and delivers in
    /// order until it has caught up, so each key's value is one it had during the call.
    /// With history 1 a key written again while the consumer runs can be missing: callers
    /// read the keys it did not deliver.
    async fn last_records(
        &self,
        prefix: &str,
        target: Target<'_>,
    ) -> StoreResult<BTreeMap<String, Option<Entry>>> {
        let unavailable = |e: &dyn std::fmt::Display| target.unavailable(e.to_string(), None);
        let consumer = self
            .kv
            .stream
            .create_consumer(push::OrderedConfig {
                deliver_subject: self.store.client().new_inbox(),
                description: Some("parti listing".to_owned()),
                filter_subject: format!("{}>", self.kv.prefix),
                deliver_policy: DeliverPolicy::LastPerSubject,
                replay_policy: ReplayPolicy::Instant,
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable(&e))?;
        let mut records = BTreeMap::new();
        if consumer.cached_info().num_pending == 0 {
            return Ok(records);
        }
        let mut messages = consumer.messages().await.map_err(|e| unavailable(&e))?;
        while let Some(message) = messages.next().await {
            let message = message.map_err(|e| unavailable(&e))?;
            let info = message.info().map_err(|e| unavailable(&e))?;
            let (sequence, pending) = (info.stream_sequence, info.pending);
            let key = message
                .subject
                .as_str()
                .strip_prefix(self.kv.prefix.as_str());
            if let Some(key) = key.filter(|key| key.starts_with(prefix)) {
                let live = message
                    .headers
                    .as_ref()
                    .is_none_or(|headers| removal(headers).is_none());
                let entry = live.then(|| Entry {
                    key: key.to_owned(),
                    value: message.payload.clone(),
                    revision: Revision::new(sequence),
                });
                records.insert(key.to_owned(), entry);
            }
            if pending == 0 {
                break;
            }
        }
        Ok(records)
    }

    /// A failed read: `NotFound` when the bucket is gone, else the mapped error.
    async fn read_failure(&self, target: Target<'_>, mapped: StoreError) -> StoreError {
        if matches!(mapped, StoreError::Unavailable { .. })
            && matches!(self.store.stream_exists(target).await, Ok(false))
        {
            return target.not_found();
        }
        mapped
    }

    /// The latest record of `key`, live or not.
    async fn record(&self, operation: Operation, key: &str) -> StoreResult<Option<kv::Entry>> {
        let target = self.target(operation, key);
        check_key(key)?;
        self.store.check_connected(target)?;
        // The bucket was bound with direct gets off, so this asks the stream leader.
        match self.kv.entry(key).await {
            Ok(entry) => Ok(entry),
            Err(e) => Err(self.read_failure(target, entry_error(target, e)).await),
        }
    }
}

impl Bucket for NatsBucket {
    fn name(&self) -> &str {
        &self.kv.name
    }

    async fn keep_leader_apart_from(&self, other: &Self) -> StoreResult<bool> {
        crate::placement::keep_apart(&self.store, &self.kv, &other.kv).await
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Entry>> {
        Ok(self.get_with_time(key).await?.map(|(entry, _)| entry))
    }

    async fn create(&self, key: &str, value: Bytes) -> StoreResult<Revision> {
        let already_exists = || StoreError::AlreadyExists {
            bucket: self.kv.name.clone(),
            key: key.to_owned(),
        };
        // Expect no record at all; if there is one, expect it to be a delete or an expiry
        // marker and write over it at its revision.
        let mut expected = 0;
        for _ in 0..CREATE_ATTEMPTS {
            match self
                .write(Operation::Create, key, value.clone(), Some(expected), false)
                .await
            {
                Ok(revision) => return Ok(revision),
                Err(WriteError::Failed(e)) => return Err(e),
                Err(WriteError::WrongRevision) => {}
            }
            match self.record(Operation::Create, key).await? {
                Some(entry) if entry.operation == kv::Operation::Put => {
                    return Err(already_exists());
                }
                Some(entry) => expected = entry.revision,
                None => expected = 0,
            }
        }
        // The key kept changing under us: somebody else is writing it.
        Err(already_exists())
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> StoreResult<Revision> {
        match self
            .write(Operation::Update, key, value, Some(expected.get()), false)
            .await
        {
            Ok(revision) => Ok(revision),
            Err(WriteError::WrongRevision) => Err(self.conflict(key, expected)),
            Err(WriteError::Failed(e)) => Err(e),
        }
    }

    async fn put(&self, key: &str, value: Bytes) -> StoreResult<Revision> {
        match self.write(Operation::Put, key, value, None, false).await {
            Ok(revision) => Ok(revision),
            // Cannot happen without an expected revision; reported rather than hidden.
            Err(WriteError::WrongRevision) => Err(self
                .target(Operation::Put, key)
                .backend("unexpected revision conflict on an unconditional put", None)),
            Err(WriteError::Failed(e)) => Err(e),
        }
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> StoreResult<()> {
        if expected.is_none() && self.get(key).await?.is_none() {
            // Nothing to delete: do not write a marker for an absent key.
            return Ok(());
        }
        match self
            .write(
                Operation::Delete,
                key,
                Bytes::new(),
                expected.map(Revision::get),
                true,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(WriteError::WrongRevision) => {
                Err(self.conflict(key, expected.unwrap_or(Revision::new(0))))
            }
            Err(WriteError::Failed(e)) => Err(e),
        }
    }

    async fn keys(&self, prefix: &str) -> StoreResult<Vec<String>> {
        Ok(self
            .listing(prefix)
            .await?
            .into_iter()
            .map(|entry| entry.key)
            .collect())
    }

    async fn entries(&self, prefix: &str) -> StoreResult<Vec<Entry>> {
        self.listing(prefix).await
    }

    async fn watch(&self, prefix: &str, from: WatchFrom) -> StoreResult<WatchStream> {
        let target = self.target(Operation::Watch, prefix);
        check_prefix(prefix)?;
        self.store.check_connected(target)?;
        let watched = Watched::Prefix(prefix.to_owned());
        watch::start(self.store.clone(), self.kv.clone(), watched, from).await
    }

    /// A consumer filtered on the key's subject: the server sends this key's records only.
    async fn watch_key(&self, key: &str, from: WatchFrom) -> StoreResult<WatchStream> {
        let target = self.target(Operation::Watch, key);
        check_key(key)?;
        self.store.check_connected(target)?;
        let watched = Watched::Key(key.to_owned());
        watch::start(self.store.clone(), self.kv.clone(), watched, from).await
    }
}
