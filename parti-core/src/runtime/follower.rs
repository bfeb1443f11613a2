//! The follower: watches this worker's assignment record (with a periodic read as the
//! safety net), ignores stale records, runs the hooks and publishes what it applied.

use std::collections::BTreeSet;
use std::sync::Arc;

use parti_strategy::PartitionId;
use tokio::sync::watch;
use tokio::time::sleep;

use super::PartitionSource;
use super::context::{Applied, Session, next_event, stopped};
use super::status::WorkerAssignment;
use crate::Error;
use crate::store::{Bucket, Entry, WatchEvent, WatchFrom};
use crate::wire::{AssignmentRecord, WireRecord};

/// What the follower holds.
struct Follower<B, P> {
    session: Arc<Session<B, P>>,
    /// The record applied last (`None` before the first, or after the leader deleted it).
    current: WorkerAssignment,
    has_record: bool,
    highest_term: u64,
}

/// Follows this worker's record until `stop`. Returns with the assignment still published:
/// the session revokes it when it ends.
pub(crate) async fn run<B: Bucket, P: PartitionSource>(
    session: Arc<Session<B, P>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut follower = Follower {
        session,
        current: WorkerAssignment::default(),
        has_record: false,
        highest_term: 0,
    };
    let poll = follower.session.config.heartbeat_interval;
    let mut watch = None;
    loop {
        let session = &follower.session;
        let key = session.worker_id.as_str();
        if watch.is_none() {
            match session
                .buckets
                .assignment
                .watch(key, WatchFrom::Current)
                .await
            {
                Ok(stream) => watch = Some(stream),
                Err(e) => session.report("watching the assignment failed", e),
            }
        }
        tokio::select! {
            () = stopped(&mut stop) => return,
            event = next_event(&mut watch) => match event {
                Some(Ok(WatchEvent::Put(entry))) if entry.key == key => follower.on_entry(&entry).await,
                Some(Ok(WatchEvent::Delete { key: deleted, .. })) if deleted == key => {
                    follower.on_deleted().await;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    follower.session.report("assignment watch failed", e);
                    watch = None;
                }
                None => watch = None,
            },
            () = sleep(poll) => match session.buckets.assignment.get(key).await {
                Ok(Some(entry)) => follower.on_entry(&entry).await,
                Ok(None) => follower.on_deleted().await,
                Err(e) => follower.session.report("reading the assignment failed", e),
            },
        }
    }
}

impl<B: Bucket, P: PartitionSource> Follower<B, P> {
    async fn on_entry(&mut self, entry: &Entry) {
        let record = match AssignmentRecord::decode(&entry.value) {
            Ok(record) => record,
            Err(source) => {
                let error = Error::Corrupt {
                    bucket: self.session.buckets.assignment.name().to_owned(),
                    key: entry.key.clone(),
                    source,
                };
                self.session
                    .report("ignoring an unreadable assignment", error);
                return;
            }
        };
        // Versions grow across leaders; a record from an older term, or not newer than the
        // one applied, comes from a stale leader or is a repeat.
        if self.has_record && record.version <= self.current.version()
            || record.term < self.highest_term
        {
            return;
        }
        self.highest_term = record.term;
        let next = WorkerAssignment::new(record.version, record.term, record.partitions);
        self.apply(next).await;
    }

    /// The leader deleted this worker's record: it no longer counts this worker in.
    async fn on_deleted(&mut self) {
        if !self.has_record {
            return;
        }
        let next = WorkerAssignment::new(self.current.version(), self.current.term(), []);
        self.apply(next).await;
    }

    async fn apply(&mut self, next: WorkerAssignment) {
        let old: BTreeSet<&PartitionId> = self.current.partitions().collect();
        let revoked: Vec<PartitionId> = self
            .current
            .partitions()
            .filter(|p| !next.contains(p))
            .cloned()
            .collect();
        let assigned = next
            .grants()
            .filter(|(p, _)| !old.contains(p))
            .map(|(partition, token)| crate::wire::Grant {
                partition: partition.clone(),
                token,
            })
            .collect();
        let hooks = self.session.status.hooks();
        hooks.revoked(revoked).await;
        hooks.assigned(assigned).await;
        tracing::debug!(
            worker = %self.session.worker_id,
            version = next.version(),
            partitions = next.len(),
            "applied assignment"
        );
        self.session.applied.send_replace(Applied {
            version: next.version(),
            term_seen: self.highest_term,
        });
        self.has_record = true;
        self.current = next.clone();
        self.session.status.set_assignment(Some(next));
    }
}
