//! The follower: owns this worker's partitions. It watches the worker's assignment record
//! (with a periodic read as the safety net), applies newer records — revocations first,
//! drained within `drain_timeout` — and fences the worker when its heartbeat lease runs out.
//!
//! The rules that keep ownership exclusive on this side:
//! - partitions are held only while the heartbeat lease is valid; when it lapses every
//!   partition is released at once (the revoke hook gets at most half the margin);
//! - after a lapse (and at the start of a session) the worker holds nothing until it has
//!   read its record afresh, after the heartbeat that renewed the lease;
//! - a record that *adds* partitions is applied only if its term is the current leader's
//!   term, read from the election entry (a deposed leader's late write adds nothing);
//! - the heartbeat reports a record's version only once the revocations it asks for are
//!   done.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use parti_strategy::PartitionId;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use super::PartitionSource;
use super::context::{Applied, Session, next_event, stopped};
use super::status::WorkerAssignment;
use crate::store::{Bucket, Entry, WatchEvent, WatchFrom};
use crate::wire::{AssignmentRecord, Grant, LEADER_KEY, LeaderRecord, WireRecord};
use crate::{Error, Result};

/// What the follower holds.
struct Follower<B, P> {
    session: Arc<Session<B, P>>,
    lease: watch::Receiver<Option<Instant>>,
    /// The partitions held now, with the version and term of the record that granted them.
    held: WorkerAssignment,
    /// The version of the record applied last (what the heartbeat reports).
    applied: u64,
    /// Whether a record has been applied in this session.
    has_record: bool,
    highest_term: u64,
    /// Whether the next record must come from a fresh read (after a lease lapse, and at the
    /// start): records already on their way may be older than a revocation.
    resync: bool,
}

/// Follows this worker's record until `stop`, then releases every partition.
pub(crate) async fn run<B: Bucket, P: PartitionSource>(
    session: Arc<Session<B, P>>,
    mut stop: watch::Receiver<bool>,
) {
    let lease = session.status.watch_lease();
    let mut follower = Follower {
        session,
        lease,
        held: WorkerAssignment::default(),
        applied: 0,
        has_record: false,
        highest_term: 0,
        resync: true,
    };
    let poll = follower.session.config.heartbeat_interval;
    let mut watch = None;
    let mut next_poll = Instant::now();
    let mut was_valid = false;
    loop {
        let session = follower.session.clone();
        let key = session.worker_id.as_str();
        if watch.is_none() {
            match session.buckets.assignment.watch(key, WatchFrom::Now).await {
                Ok(stream) => watch = Some(stream),
                Err(e) => session.report("watching the assignment failed", e),
            }
        }
        let lease_end = follower.lease_end();
        let valid = follower.lease_valid();
        if !valid {
            if !follower.held.is_empty() {
                follower.fence().await;
                continue;
            }
            follower.resync = true;
        } else if !was_valid {
            // The lease is (again) valid: read the record afresh now.
            next_poll = Instant::now();
        }
        was_valid = valid;
        tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            // Wake when the lease runs out (to fence), or when it is renewed.
            () = sleep_until(lease_end.unwrap_or_else(Instant::now)), if valid => {}
            Ok(()) = follower.lease.changed(), if !valid => {}
            () = sleep_until(next_poll), if valid => {
                next_poll = Instant::now() + poll;
                match session.buckets.assignment.get(key).await {
                    Ok(Some(entry)) => follower.on_entry(&entry, true).await,
                    Ok(None) => follower.on_deleted(true).await,
                    Err(e) => follower.session.report("reading the assignment failed", e),
                }
            }
            event = next_event(&mut watch) => match event {
                Some(Ok(WatchEvent::Put(entry))) if entry.key == key && valid => {
                    follower.on_entry(&entry, false).await;
                }
                Some(Ok(WatchEvent::Delete { key: deleted, .. })) if deleted == key && valid => {
                    follower.on_deleted(false).await;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    follower.session.report("assignment watch failed", e);
                    watch = None;
                }
                None => watch = None,
            },
        }
    }
    follower.release_all("stopping").await;
    follower
        .session
        .status
        .set_assignment(None::<WorkerAssignment>);
}

impl<B: Bucket, P: PartitionSource> Follower<B, P> {
    fn lease_end(&self) -> Option<Instant> {
        *self.lease.borrow()
    }

    fn lease_valid(&self) -> bool {
        self.lease_end().is_some_and(|end| Instant::now() < end)
    }

    /// A record read (`fresh`: by a read issued now, rather than delivered by the watch).
    async fn on_entry(&mut self, entry: &Entry, fresh: bool) {
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
        if self.resync && !fresh {
            return;
        }
        // Versions grow across leaders; a record from an older term, or not newer than the
        // one applied, comes from a deposed leader or is a repeat.
        let repeat = self.has_record && record.version <= self.applied && !self.resync;
        if repeat || record.term < self.highest_term {
            return;
        }
        let adds = record
            .partitions
            .iter()
            .any(|grant| !self.held.contains(&grant.partition));
        if adds {
            match self.current_term().await {
                Ok(Some(term)) if term == record.term => {}
                Ok(current) => {
                    tracing::debug!(
                        worker = %self.session.worker_id,
                        record_term = record.term,
                        current_term = ?current,
                        "not applying a grant from a leader that is not the current one"
                    );
                    return;
                }
                Err(e) => {
                    self.session
                        .report("reading the leader before applying a grant failed", e);
                    return;
                }
            }
        }
        if !self.lease_valid() {
            // The lease ran out while reading the leader: this record may be stale.
            self.resync = true;
            return;
        }
        self.highest_term = record.term;
        self.resync = false;
        let next = WorkerAssignment::new(record.version, record.term, record.partitions);
        self.apply(next).await;
    }

    /// The leader deleted this worker's record (it had emptied it first): hold nothing.
    /// After a read found no record, only fresh reads count until one finds a record: the
    /// watch may still deliver older versions, and with no record there is no applied
    /// version to tell them by.
    async fn on_deleted(&mut self, fresh: bool) {
        if fresh {
            self.resync = true;
        }
        if !self.has_record && self.held.is_empty() {
            return;
        }
        let next = WorkerAssignment::new(self.applied, self.held.term(), []);
        self.apply(next).await;
    }

    /// The term of the current leader, from the election entry.
    async fn current_term(&self) -> Result<Option<u64>> {
        let Some(entry) = self.session.buckets.election.get(LEADER_KEY).await? else {
            return Ok(None);
        };
        let record = LeaderRecord::decode(&entry.value).map_err(|source| Error::Corrupt {
            bucket: self.session.buckets.election.name().to_owned(),
            key: entry.key.clone(),
            source,
        })?;
        Ok(Some(record.term_at(entry.revision.get())))
    }

    /// Applies `next`: revocations first (drained, bounded), then the report of the applied
    /// version, then the grants.
    async fn apply(&mut self, next: WorkerAssignment) {
        let revoked: Vec<PartitionId> = self
            .held
            .partitions()
            .filter(|p| !next.contains(p))
            .cloned()
            .collect();
        let assigned: Vec<Grant> = next
            .grants()
            .filter(|(p, _)| !self.held.contains(p))
            .map(|(partition, token)| Grant {
                partition: partition.clone(),
                token,
            })
            .collect();
        if !revoked.is_empty() {
            let kept = self.held.retain(|p| next.contains(p));
            self.session.status.set_assignment(Some(kept.clone()));
            self.drain(revoked, "revoked").await;
            self.held = kept;
        }
        self.applied = next.version();
        self.has_record = true;
        self.session.applied.send_replace(Applied {
            version: next.version(),
            term_seen: self.highest_term,
        });
        self.held = next.clone();
        self.session.status.set_assignment(Some(next.clone()));
        if !assigned.is_empty() {
            // A grant hook that outlives the lease is cut short; the loop then fences.
            let session = self.session.clone();
            let hook = pin!(session.status.hooks().assigned(assigned));
            let lease = self.lease_end();
            tokio::select! {
                biased;
                () = hook => {}
                () = sleep_until(lease.unwrap_or_else(Instant::now)) => {
                    tracing::warn!(
                        worker = %self.session.worker_id,
                        "the lease ran out during the assign hook"
                    );
                }
            }
        }
        tracing::debug!(
            worker = %self.session.worker_id,
            version = next.version(),
            partitions = next.len(),
            "applied assignment"
        );
    }

    /// The heartbeat lease ran out: release everything at once, and hold nothing until a
    /// fresh read after the lease is renewed.
    async fn fence(&mut self) {
        tracing::warn!(
            worker = %self.session.worker_id,
            partitions = self.held.len(),
            "heartbeat lease lapsed: releasing every partition"
        );
        self.release_all("fenced").await;
        self.resync = true;
    }

    async fn release_all(&mut self, why: &'static str) {
        if self.held.is_empty() {
            return;
        }
        let all: Vec<PartitionId> = self.held.partitions().cloned().collect();
        let none = self.held.retain(|_| false);
        self.session.status.set_assignment(Some(none.clone()));
        self.drain(all, why).await;
        self.held = none;
    }

    /// Runs the revoke hook until it returns, `drain_timeout` passes, or the lease is about
    /// to expire in the store (half the margin before), whichever comes first.
    async fn drain(&mut self, partitions: Vec<PartitionId>, why: &'static str) {
        let count = partitions.len();
        let started = Instant::now();
        let drain_end = started + self.session.config.drain_timeout;
        let half_margin = self.half_margin();
        let session = self.session.clone();
        let mut hook = pin!(session.status.hooks().revoked(partitions));
        loop {
            let hard_end = self
                .lease_end()
                .map_or(started, |end| end + half_margin)
                .min(drain_end);
            tokio::select! {
                biased;
                () = &mut hook => return,
                Ok(()) = self.lease.changed() => {}
                () = sleep_until(hard_end) => break,
            }
        }
        let waited = started.elapsed();
        tracing::warn!(
            worker = %self.session.worker_id,
            partitions = count,
            ?waited,
            why,
            "revoke hook cut short: releasing anyway"
        );
        self.session.report_ref(
            "draining revoked partitions",
            &Error::DrainCutShort {
                partitions: count,
                waited,
            },
        );
    }

    fn half_margin(&self) -> Duration {
        let config = &self.session.config;
        config.margin_for(config.heartbeat_ttl) / 2
    }
}
