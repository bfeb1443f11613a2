//! The heartbeat: this worker's liveness and what it has applied, written every
//! `heartbeat_interval` (and at once when the applied assignment changes), deleted on stop.
//! Each acknowledged write extends the worker's lease on its partitions to the write's
//! *send* time + `heartbeat_ttl` − margin; the follower fences the worker when it runs out.
//!
//! Heartbeats are written by compare-and-set: the first one of a session is a `create`,
//! which waits while another process's heartbeat is under the key, and each later one an
//! update at the revision of the last. So a process's heartbeat exists only after every
//! earlier process's heartbeat under its worker id expired or was deleted — by then that
//! process had fenced itself or released everything — and a late write of an earlier
//! process can never overwrite it. The leader relies on this: a heartbeat of a new process
//! tells it that the previous one holds nothing.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout};

use super::PartitionSource;
use super::context::{Session, stopped, within};
use crate::store::{Bucket, Operation, Revision, StoreError};
use crate::telemetry;
use crate::wire::{AssignmentRecord, Heartbeat, WireRecord};
use crate::{Error, Result};

/// What a read of the heartbeat key after a refused or unanswered write found.
enum Found {
    /// Nothing: the next write creates the heartbeat (a new heartbeat session).
    Nothing,
    /// A heartbeat this process wrote, at `revision`, in heartbeat session `session` (0:
    /// the first write of a session, which is then named by `revision`).
    Own { revision: Revision, session: u64 },
    /// A value that is no heartbeat: it is overwritten (a new heartbeat session).
    Garbage(Revision),
    /// Another process's heartbeat.
    Other(String),
}

/// Beats until `stop`, then deletes the heartbeat (at its last revision, so a heartbeat that
/// another process writes under the same id after this one lost it is left alone). Returns
/// early if another process's heartbeat replaced this one's (the id is no longer ours).
pub(crate) async fn run<B: Bucket, P: PartitionSource>(
    session: Arc<Session<B, P>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut applied = session.applied.subscribe();
    let bucket = &session.buckets.heartbeat;
    let key = session.worker_id.as_str();
    let interval = session.config.heartbeat_interval;
    let config = &session.config;
    let lease = config.heartbeat_ttl - config.margin_for(config.heartbeat_ttl);
    let instance = session.instance.to_string();
    // The heartbeat session (the revision of its first write), once one is acknowledged.
    let mut beating: Option<u64> = None;
    // Where the next write goes: `None` creates the key.
    let mut last_revision: Option<Revision> = None;
    let mut last_ack = Instant::now();
    let mut floor = 0;
    loop {
        if beating.is_none() {
            // A new session numbers itself above the one its record was written for, also
            // when the heartbeat bucket was lost and its revisions start again. Not knowing
            // that session, it waits: a session numbered below it would never be given a
            // record (the leader takes it for an older one).
            match recorded_session(&session, interval).await {
                Ok(recorded) => floor = floor.max(recorded + 1),
                Err(e) => {
                    session.report("reading this worker's assignment record failed", e);
                    tokio::select! {
                        biased;
                        () = stopped(&mut stop) => break,
                        () = tokio::time::sleep(interval) => continue,
                    }
                }
            }
        }
        let current = *applied.borrow_and_update();
        let beat = Heartbeat {
            instance_id: instance.clone(),
            session: beating.unwrap_or(0),
            floor: if beating.is_none() { floor } else { 0 },
            applied_version: current.version,
            term_seen: current.term_seen,
        };
        let sent = Instant::now();
        session.status.set_heartbeat_unanswered(true);
        let written = match beat.encode() {
            // Bounded by the lease it would extend: an acknowledgement after that is worth
            // nothing, and a write stuck on a black-holed link must not keep the next one
            // (with a newer applied version) from being sent.
            Ok(value) => {
                let operation = match last_revision {
                    None => Operation::Create,
                    Some(_) => Operation::Update,
                };
                let write = async {
                    match last_revision {
                        None => bucket.create(key, value).await,
                        Some(revision) => bucket.update(key, value, revision).await,
                    }
                };
                tokio::select! {
                    biased;
                    () = stopped(&mut stop) => break,
                    written = within(lease, operation, bucket.name(), key, write) => written,
                }
            }
            Err(e) => Err(Error::from(e)),
        };
        session.status.set_heartbeat_unanswered(written.is_err());
        match written {
            Ok(revision) => {
                let heartbeat_session = *beating.get_or_insert(revision.get().max(floor));
                last_revision = Some(revision);
                last_ack = sent;
                // The store stamps the write after `sent`, so the entry outlives this
                // lease by at least the margin: the worker fences itself first.
                session.status.extend_lease(sent + lease, heartbeat_session);
            }
            Err(Error::Store(
                e @ (StoreError::AlreadyExists { .. }
                | StoreError::Conflict { .. }
                | StoreError::OutcomeUnknown { .. }),
            )) => match read_back(&session, &instance, interval).await {
                Ok(Found::Own { revision, session }) => {
                    // A write of ours landed unacknowledged. A first write names its session.
                    let named = if session == 0 {
                        revision.get().max(floor)
                    } else {
                        session
                    };
                    if beating.is_some_and(|current| current != named) {
                        beating = None;
                    } else if beating.is_none() && session == 0 {
                        beating = Some(named);
                    }
                    last_revision = Some(revision);
                }
                // The session's entry is gone (or was overwritten): the next write begins a
                // new session, and the follower fences what the old one held.
                Ok(Found::Nothing) => {
                    if beating.is_some() && Instant::now() < last_ack + config.heartbeat_ttl {
                        // Gone before it could expire: deleted, or its bucket was lost and
                        // created again. A calculator of this process must not trust absence
                        // until every lease of before has ended.
                        session.heartbeat_doubts.lost();
                    }
                    beating = None;
                    last_revision = None;
                }
                Ok(Found::Garbage(revision)) => {
                    beating = None;
                    last_revision = Some(revision);
                }
                Ok(Found::Other(other)) if beating.is_none() => {
                    session.report_ref(
                        "waiting for the heartbeat of the previous process of this worker id to end",
                        &Error::Store(e),
                    );
                    tracing::debug!(worker = %session.worker_id, other, "heartbeat key taken");
                }
                Ok(Found::Other(other)) => {
                    session.report(
                        "another process took over this worker id's heartbeat",
                        Error::HeartbeatTaken {
                            worker_id: session.worker_id.clone(),
                            instance: other,
                        },
                    );
                    return;
                }
                Err(read) => {
                    session.report("heartbeat failed", Error::Store(e));
                    session.report("reading the heartbeat back failed", read);
                }
            },
            Err(e) => session.report("heartbeat failed", e),
        }
        telemetry::heartbeat_age(&session.worker_id, Instant::now() - last_ack);
        tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            () = sleep_until(sent + interval) => {}
            Ok(()) = applied.changed() => {}
        }
    }
    if let Some(revision) = last_revision {
        // Bounded: a delete that cannot get through only means the entry expires by its TTL.
        let delete = delete_own(&session, &instance, revision, interval);
        match timeout(interval, delete).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => session.report("deleting the heartbeat failed", e),
            Err(_) => tracing::warn!(
                worker = %session.worker_id,
                "deleting the heartbeat timed out; it expires by its TTL"
            ),
        }
    }
}

/// Deletes this process's heartbeat at `revision` — or, when it changed (a write abandoned
/// at the stop landed after all), at the revision read back, if the entry is still this
/// process's: left there, it would live out its TTL, and the leader would take the worker
/// for crashed rather than gone.
async fn delete_own<B: Bucket, P>(
    session: &Session<B, P>,
    instance: &str,
    mut revision: Revision,
    limit: std::time::Duration,
) -> Result<()> {
    let bucket = &session.buckets.heartbeat;
    let key = session.worker_id.as_str();
    for _ in 0..3 {
        match bucket.delete(key, Some(revision)).await {
            Err(StoreError::Conflict { .. }) => match read_back(session, instance, limit).await? {
                Found::Own { revision: now, .. } => revision = now,
                // Gone, or not this process's any more: nothing of ours to delete.
                _ => return Ok(()),
            },
            deleted => return Ok(deleted?),
        }
    }
    Ok(())
}

/// The session this worker's assignment record was last written for (0: none, or not a
/// record — the leader writes it again), read within `limit`.
async fn recorded_session<B: Bucket, P>(
    session: &Session<B, P>,
    limit: std::time::Duration,
) -> Result<u64> {
    let bucket = &session.buckets.assignment;
    let key = session.worker_id.as_str();
    let entry = within(limit, Operation::Get, bucket.name(), key, bucket.get(key)).await?;
    Ok(entry.map_or(0, |entry| {
        AssignmentRecord::decode(&entry.value).map_or(0, |r| r.holder)
    }))
}

/// Reads the heartbeat key after a write was refused or not answered (bounded by `limit`).
async fn read_back<B: Bucket, P>(
    session: &Session<B, P>,
    instance: &str,
    limit: std::time::Duration,
) -> Result<Found> {
    let bucket = &session.buckets.heartbeat;
    let key = session.worker_id.as_str();
    let entry = within(limit, Operation::Get, bucket.name(), key, bucket.get(key)).await?;
    Ok(match entry {
        None => Found::Nothing,
        Some(entry) => match Heartbeat::decode(&entry.value) {
            Ok(beat) if beat.instance_id == instance => Found::Own {
                revision: entry.revision,
                session: beat.session,
            },
            Ok(beat) => Found::Other(beat.instance_id),
            Err(_) => Found::Garbage(entry.revision),
        },
    })
}
