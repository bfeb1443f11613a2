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
//!
//! With [`Config::writes_two_heartbeats`](crate::config::Config::writes_two_heartbeats) a
//! second writer keeps a copy of the session's heartbeat in the second bucket, at its own
//! pace (a write hanging on one bucket never delays the other). The session begins in the
//! first bucket; an entry created later counts only once confirmed
//! ([`HeartbeatLease`] has the rule and its reason), and an entry that vanished while the
//! other one carries the lease is created again in the same session.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout};

use super::PartitionSource;
use super::context::{Session, stopped, within};
use crate::decide::{HeartbeatLease, Slot, Wrote};
use crate::store::{Bucket, Operation, Revision, StoreError};
use crate::telemetry;
use crate::wire::{AssignmentRecord, Heartbeat, WireRecord};
use crate::{Error, Result};

/// What a read of a heartbeat key after a refused or unanswered write found.
enum Found {
    /// Nothing: the next write creates the entry.
    Nothing,
    /// A heartbeat this process wrote, at `revision`, in heartbeat session `session` (0:
    /// the first write of a session, which is then named by `revision`).
    Own { revision: Revision, session: u64 },
    /// A value that is no heartbeat: it is overwritten.
    Garbage(Revision),
    /// Another process's heartbeat.
    Other(String),
}

/// What the two writers share (under a lock never held across an `.await`).
struct Pair {
    /// The session's lease over its entries; a new one for each session.
    lease: HeartbeatLease,
    /// The heartbeat session, once its first write was acknowledged.
    session: Option<u64>,
    /// The revision each entry was last written at (`None`: the next write creates it).
    revisions: [Option<Revision>; 2],
    /// Whether each writer's last write is unanswered (in flight or failed).
    unanswered: [bool; 2],
    /// The latest acknowledged write of either entry.
    last_ack: Instant,
    /// Until when the lease of the session that ended last held.
    ended_lease: Option<std::time::Instant>,
}

impl Pair {
    fn lock(pair: &Mutex<Pair>) -> std::sync::MutexGuard<'_, Pair> {
        pair.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Beats until `stop`, then deletes the heartbeat (at its last revision, so a heartbeat that
/// another process writes under the same id after this one lost it is left alone). Returns
/// early if another process's heartbeat replaced this one's (the id is no longer ours).
pub(crate) async fn run<B: Bucket, P: PartitionSource>(
    session: Arc<Session<B, P>>,
    stop: watch::Receiver<bool>,
) {
    let config = &session.config;
    let lease = config.heartbeat_ttl - config.margin_for(config.heartbeat_ttl);
    let pair = Mutex::new(Pair {
        lease: HeartbeatLease::new(lease),
        session: None,
        revisions: [None, None],
        unanswered: [false, false],
        last_ack: Instant::now(),
        ended_lease: None,
    });
    // The session the second writer keeps a copy of (`None`: none yet, or it ended).
    let (sessions, sessions_rx) = watch::channel(None::<u64>);
    let first = first_writer(&session, &pair, &sessions, stop.clone());
    match &session.buckets.second_heartbeat {
        Some(bucket) => {
            let second = second_writer(&session, bucket, &pair, sessions_rx, stop);
            // The second writer runs until `stop`; the first also ends when the id is taken.
            tokio::select! {
                () = first => {}
                () = second => {}
            }
        }
        None => first.await,
    }
    let revisions = Pair::lock(&pair).revisions;
    let buckets = session.buckets.heartbeats();
    let deletes = buckets.zip(revisions).filter_map(|(bucket, revision)| {
        let revision = revision?;
        let session = &session;
        Some(async move {
            // Bounded: a delete that cannot get through only means the entry expires by
            // its TTL.
            let delete = delete_own(session, bucket, revision, session.config.heartbeat_interval);
            match timeout(session.config.heartbeat_interval, delete).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => session.report("deleting the heartbeat failed", e),
                Err(_) => tracing::warn!(
                    worker = %session.worker_id,
                    bucket = bucket.name(),
                    "deleting the heartbeat timed out; it expires by its TTL"
                ),
            }
        })
    });
    futures_util::future::join_all(deletes).await;
}

/// Notes the outcome of a write of `slot` for the status (unanswered only when every
/// writer's last write is).
fn set_unanswered<B, P>(session: &Session<B, P>, pair: &Mutex<Pair>, slot: Slot, unanswered: bool) {
    let all = {
        let mut pair = Pair::lock(pair);
        pair.unanswered[slot.index()] = unanswered;
        let writers = 1 + usize::from(session.buckets.second_heartbeat.is_some());
        pair.unanswered[..writers].iter().all(|u| *u)
    };
    session.status.set_heartbeat_unanswered(all);
}

/// A write of `slot` sent at `sent` was acknowledged at `revision`: counts it towards the
/// lease and extends the follower's lease if it grew.
fn acknowledged<B, P>(
    session: &Session<B, P>,
    pair: &Mutex<Pair>,
    slot: Slot,
    wrote: Wrote,
    sent: Instant,
    revision: Revision,
) {
    let extended = {
        let mut pair = Pair::lock(pair);
        pair.revisions[slot.index()] = Some(revision);
        pair.last_ack = pair.last_ack.max(sent);
        let grown =
            pair.lease
                .acknowledged(slot, wrote, sent.into_std(), Instant::now().into_std());
        grown.zip(pair.session)
    };
    if let Some((until, heartbeat_session)) = extended {
        // The store stamps the write after `sent`, so the entry outlives this lease by at
        // least the margin: the worker fences itself first.
        session
            .status
            .extend_lease(Instant::from_std(until), heartbeat_session);
    }
}

/// The first bucket's writer: begins each heartbeat session, and keeps the entry there.
async fn first_writer<B: Bucket, P: PartitionSource>(
    session: &Session<B, P>,
    pair: &Mutex<Pair>,
    sessions: &watch::Sender<Option<u64>>,
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
    // Begins (`Some`) or ends the heartbeat session, with a lease of its own; the second
    // writer follows.
    let set_session = |beating: &mut Option<u64>, named: Option<u64>| {
        *beating = named;
        let mut pair = Pair::lock(pair);
        if named.is_none() {
            pair.ended_lease = pair.lease.until();
        }
        pair.lease = HeartbeatLease::new(lease);
        pair.session = named;
        drop(pair);
        sessions.send_replace(named);
    };
    let two = session.buckets.second_heartbeat.is_some();
    loop {
        if beating.is_some() && !Pair::lock(pair).lease.is_alive() {
            // Both entries were found gone (with one bucket, this one was): no write can
            // extend this session's lease again. The next write begins a new session.
            set_session(&mut beating, None);
        }
        let ended_lease = Pair::lock(pair).ended_lease;
        if let Some(until) = ended_lease.filter(|_| two && beating.is_none()) {
            // With two entries, the first one's absence does not show that the session
            // before let go (it may live on in the second): a new session, which the
            // leader takes for proof of that, begins only once the old lease ended.
            tokio::select! {
                biased;
                () = stopped(&mut stop) => return,
                () = sleep_until(Instant::from_std(until)) => {}
            }
        }
        if beating.is_none() {
            // A new session numbers itself above the one its record was written for, also
            // when the heartbeat bucket was lost and its revisions start again. Not knowing
            // that session, it waits: a session numbered below it would never be given a
            // record (the leader takes it for an older one).
            match recorded_session(session, interval).await {
                Ok(recorded) => floor = floor.max(recorded + 1),
                Err(e) => {
                    session.report("reading this worker's assignment record failed", e);
                    tokio::select! {
                        biased;
                        () = stopped(&mut stop) => return,
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
        set_unanswered(session, pair, Slot::First, true);
        let Some(written) = write_beat(bucket, key, &beat, last_revision, lease, &mut stop).await
        else {
            return;
        };
        set_unanswered(session, pair, Slot::First, written.is_err());
        let next_write = sent + next_write_after(interval, written.is_err());
        match written {
            Ok(revision) => {
                // The session's first write counts at once; a create within a session (the
                // entry vanished while the second carried the lease) once confirmed.
                let wrote = if beating.is_none() || last_revision.is_none() {
                    Wrote::Create
                } else {
                    Wrote::Update
                };
                if beating.is_none() {
                    let named = revision.get().max(floor);
                    set_session(&mut beating, Some(named));
                }
                last_revision = Some(revision);
                last_ack = sent;
                acknowledged(session, pair, Slot::First, wrote, sent, revision);
            }
            Err(Error::Store(
                e @ (StoreError::AlreadyExists { .. }
                | StoreError::Conflict { .. }
                | StoreError::OutcomeUnknown { .. }),
            )) => match read_back(session, bucket, &instance, interval).await {
                Ok(Found::Own {
                    revision,
                    session: found,
                }) => {
                    // A write of ours landed unacknowledged. A first write names its session.
                    let named = if found == 0 {
                        revision.get().max(floor)
                    } else {
                        found
                    };
                    last_revision = Some(revision);
                    if beating.is_some_and(|current| current != named) {
                        set_session(&mut beating, None);
                        Pair::lock(pair).revisions[Slot::First.index()] = Some(revision);
                    } else {
                        if beating.is_none() && found == 0 {
                            set_session(&mut beating, Some(named));
                        }
                        // A create of ours landed (the session's first write, or the entry
                        // made again): it counts, but credits nothing — the write that
                        // landed may be an earlier one than the last sent.
                        let mut pair = Pair::lock(pair);
                        pair.revisions[Slot::First.index()] = Some(revision);
                        if !pair.lease.has_entry(Slot::First) {
                            pair.lease
                                .create_landed(Slot::First, Instant::now().into_std());
                        }
                    }
                }
                // The entry is gone (or was overwritten). If the second entry carries the
                // lease, the session goes on and the entry is created again in it; else the
                // next write begins a new session, and the follower fences what the old one
                // held.
                Ok(Found::Nothing) => {
                    if beating.is_some() && Instant::now() < last_ack + config.heartbeat_ttl {
                        // Gone before it could expire: deleted, or its bucket was lost and
                        // created again. A calculator of this process must not trust absence
                        // until every lease of before has ended.
                        session.heartbeat_doubts.lost();
                    }
                    last_revision = None;
                    let rides_on_second = {
                        let mut pair = Pair::lock(pair);
                        pair.lease.lost(Slot::First);
                        pair.revisions[Slot::First.index()] = None;
                        pair.lease.is_alive()
                    };
                    if !rides_on_second {
                        set_session(&mut beating, None);
                    }
                }
                Ok(Found::Garbage(revision)) => {
                    set_session(&mut beating, None);
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
        let last_any = Pair::lock(pair).last_ack.max(last_ack);
        telemetry::heartbeat_age(&session.worker_id, Instant::now() - last_any);
        tokio::select! {
            biased;
            () = stopped(&mut stop) => return,
            () = sleep_until(next_write) => {}
            Ok(()) = applied.changed() => {}
        }
    }
}

/// The second bucket's writer: keeps a copy of the current session's heartbeat there.
async fn second_writer<B: Bucket, P: PartitionSource>(
    session: &Session<B, P>,
    bucket: &B,
    pair: &Mutex<Pair>,
    mut sessions: watch::Receiver<Option<u64>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut applied = session.applied.subscribe();
    let key = session.worker_id.as_str();
    let interval = session.config.heartbeat_interval;
    let config = &session.config;
    let lease = config.heartbeat_ttl - config.margin_for(config.heartbeat_ttl);
    let instance = session.instance.to_string();
    // The revision of the entry last written or read here, and the session it holds.
    let mut last: Option<(Revision, u64)> = None;
    let mut last_ack = Instant::now();
    loop {
        let current_session = {
            let wait = sessions.wait_for(Option::is_some);
            tokio::select! {
                biased;
                () = stopped(&mut stop) => return,
                found = wait => match found {
                    Ok(found) => found.unwrap_or_default(),
                    Err(_) => return,
                },
            }
        };
        let current = *applied.borrow_and_update();
        let beat = Heartbeat {
            instance_id: instance.clone(),
            session: current_session,
            floor: 0,
            applied_version: current.version,
            term_seen: current.term_seen,
        };
        let sent = Instant::now();
        set_unanswered(session, pair, Slot::Second, true);
        let revision = last.map(|(revision, _)| revision);
        let Some(written) = write_beat(bucket, key, &beat, revision, lease, &mut stop).await else {
            return;
        };
        set_unanswered(session, pair, Slot::Second, written.is_err());
        let next_write = sent + next_write_after(interval, written.is_err());
        match written {
            Ok(revision) => {
                // Over an entry of this session: a renewal; anything else begins the entry.
                let wrote = match last {
                    Some((_, held)) if held == current_session => Wrote::Update,
                    _ => Wrote::Create,
                };
                last = Some((revision, current_session));
                last_ack = sent;
                if *sessions.borrow() == Some(current_session) {
                    acknowledged(session, pair, Slot::Second, wrote, sent, revision);
                }
            }
            Err(Error::Store(
                e @ (StoreError::AlreadyExists { .. }
                | StoreError::Conflict { .. }
                | StoreError::OutcomeUnknown { .. }),
            )) => match read_back(session, bucket, &instance, interval).await {
                Ok(Found::Own {
                    revision,
                    session: found,
                }) => {
                    // A write of ours landed unacknowledged (a create of it counts, crediting
                    // nothing), or an entry of an earlier session of this process is there
                    // (written over next).
                    last = Some((revision, found));
                    Pair::lock(pair).revisions[Slot::Second.index()] = Some(revision);
                    if found == current_session && *sessions.borrow() == Some(current_session) {
                        let mut pair = Pair::lock(pair);
                        if !pair.lease.has_entry(Slot::Second) {
                            pair.lease
                                .create_landed(Slot::Second, Instant::now().into_std());
                        }
                    }
                }
                Ok(Found::Nothing) => {
                    if last.is_some_and(|(_, held)| held == current_session)
                        && Instant::now() < last_ack + config.heartbeat_ttl
                    {
                        session.heartbeat_doubts.lost();
                    }
                    last = None;
                    let mut pair = Pair::lock(pair);
                    pair.lease.lost(Slot::Second);
                    pair.revisions[Slot::Second.index()] = None;
                }
                Ok(Found::Garbage(revision)) => {
                    last = Some((revision, 0));
                    Pair::lock(pair).lease.lost(Slot::Second);
                }
                Ok(Found::Other(other)) => {
                    // An earlier process's copy, which expires (a later process of this
                    // id shows in the first bucket, where the first writer sees it).
                    session.report_ref(
                        "waiting for another process's heartbeat copy under this worker id to end",
                        &Error::Store(e),
                    );
                    tracing::debug!(worker = %session.worker_id, other, "second heartbeat key taken");
                }
                Err(read) => {
                    session.report("heartbeat failed", Error::Store(e));
                    session.report("reading the heartbeat back failed", read);
                }
            },
            Err(e) => session.report("heartbeat failed", e),
        }
        tokio::select! {
            biased;
            () = stopped(&mut stop) => return,
            () = sleep_until(next_write) => {}
            Ok(()) = applied.changed() => {}
            Ok(()) = sessions.changed() => {}
        }
    }
}

/// How long after a write's send the next one goes: a heartbeat interval — or a quarter of
/// it after a failure, so that a worker whose client reconnected (its node died) or whose
/// stream has a leader again renews its lease well before it runs out, not an interval
/// later. (Failing writes while the store is away cost little: a client that knows it is
/// disconnected fails them at once.)
fn next_write_after(interval: std::time::Duration, failed: bool) -> std::time::Duration {
    if failed {
        (interval / 4).max(std::time::Duration::from_millis(10))
    } else {
        interval
    }
}

/// Writes `beat` under `key` — a create where `last` is `None`, else an update at `last` —
/// bounded by `limit`, the lease it would extend: an acknowledgement after that is worth
/// nothing, and a write stuck on a black-holed link must not keep the next one (with a
/// newer applied version) from being sent. `None` if `stop` came first.
async fn write_beat<B: Bucket>(
    bucket: &B,
    key: &str,
    beat: &Heartbeat,
    last: Option<Revision>,
    limit: std::time::Duration,
    stop: &mut watch::Receiver<bool>,
) -> Option<Result<Revision>> {
    let value = match beat.encode() {
        Ok(value) => value,
        Err(e) => return Some(Err(Error::from(e))),
    };
    let operation = match last {
        None => Operation::Create,
        Some(_) => Operation::Update,
    };
    let write = async {
        match last {
            None => bucket.create(key, value).await,
            Some(revision) => bucket.update(key, value, revision).await,
        }
    };
    tokio::select! {
        biased;
        () = stopped(stop) => None,
        written = within(limit, operation, bucket.name(), key, write) => Some(written),
    }
}

/// Deletes this process's heartbeat in `bucket` at `revision` — or, when it changed (a
/// write abandoned at the stop landed after all), at the revision read back, if the entry is
/// still this process's: left there, it would live out its TTL, and the leader would take
/// the worker for crashed rather than gone.
async fn delete_own<B: Bucket, P>(
    session: &Session<B, P>,
    bucket: &B,
    mut revision: Revision,
    limit: std::time::Duration,
) -> Result<()> {
    let key = session.worker_id.as_str();
    let instance = session.instance.to_string();
    for _ in 0..3 {
        match bucket.delete(key, Some(revision)).await {
            Err(StoreError::Conflict { .. }) => {
                match read_back(session, bucket, &instance, limit).await? {
                    Found::Own { revision: now, .. } => revision = now,
                    // Gone, or not this process's any more: nothing of ours to delete.
                    _ => return Ok(()),
                }
            }
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

/// Reads this worker's heartbeat key in `bucket` after a write was refused or not answered
/// (bounded by `limit`).
async fn read_back<B: Bucket, P>(
    session: &Session<B, P>,
    bucket: &B,
    instance: &str,
    limit: std::time::Duration,
) -> Result<Found> {
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
