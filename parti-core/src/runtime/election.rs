//! Leader election: every worker tries to `create` the leader key; the winner's term is the
//! revision of that create. The leader renews by compare-and-set every `election_ttl / 3`,
//! writes its calculator's phase into the record, and on any failed renewal stops its
//! calculator *before* anything else. A leader never acts past the end of its lease, which
//! it measures from the send time of its last acknowledged renewal (minus the safety margin).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until};

use super::PartitionSource;
use super::context::{Session, next_event, stopped};
use super::hooks::LeadershipChange;
use super::leader;
use super::status::LeaderInfo;
use crate::Error;
use crate::store::{Bucket, Entry, Revision, StoreError, WatchEvent, WatchFrom};
use crate::wire::{LEADER_KEY, LeaderRecord, Lifecycle, WireRecord};

/// The end of the leader's lease as the leader measures it, shared with its calculator.
#[derive(Debug)]
pub(crate) struct Lease {
    valid_until: Mutex<Instant>,
}

impl Lease {
    fn new(valid_until: Instant) -> Self {
        Self {
            valid_until: Mutex::new(valid_until),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Instant> {
        self.valid_until.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the leader may still act.
    pub(crate) fn is_valid(&self) -> bool {
        Instant::now() < *self.lock()
    }

    fn valid_until(&self) -> Instant {
        *self.lock()
    }

    fn extend(&self, until: Instant) {
        let mut valid_until = self.lock();
        *valid_until = until.max(*valid_until);
    }
}

/// Campaigns, leads when elected, and campaigns again after losing the lease, until `stop`.
pub(crate) async fn run<B: Bucket, P: PartitionSource>(
    session: Arc<Session<B, P>>,
    mut stop: watch::Receiver<bool>,
) {
    while let Some(won) = campaign(&session, &mut stop).await {
        lead(&session, won, &mut stop).await;
        if *stop.borrow() {
            return;
        }
    }
}

/// A won election: the create's revision (the term) and when the create was sent.
struct Won {
    revision: Revision,
    sent: Instant,
}

fn leader_info(entry: &Entry, record: &LeaderRecord) -> LeaderInfo {
    LeaderInfo {
        worker_id: record.worker_id.clone(),
        term: record.term_at(entry.revision.get()),
        phase: record.phase,
    }
}

/// Follows the leader key until this worker wins it (`None`: stopped first).
async fn campaign<B: Bucket, P: PartitionSource>(
    session: &Session<B, P>,
    stop: &mut watch::Receiver<bool>,
) -> Option<Won> {
    let bucket = &session.buckets.election;
    let poll = session.config.election_renew_interval();
    let retry = retry_delay(poll);
    let mut watch = None;
    loop {
        if watch.is_none() {
            let started = tokio::select! {
                biased;
                () = stopped(stop) => return None,
                started = bucket.watch(LEADER_KEY, WatchFrom::Now) => started,
            };
            match started {
                Ok(stream) => watch = Some(stream),
                Err(e) => session.report("watching the leader failed", e),
            }
        }
        let current = tokio::select! {
            biased;
            () = stopped(stop) => return None,
            current = bucket.get(LEADER_KEY) => current,
        };
        match current {
            Ok(Some(entry)) => observe(session, &entry),
            Ok(None) => {
                session.status.set_leader(None);
                let record = LeaderRecord {
                    worker_id: session.worker_id.clone(),
                    instance_id: session.instance.to_string(),
                    term: 0,
                    phase: Lifecycle::Stable,
                };
                let sent = Instant::now();
                let value = record.encode().ok()?;
                let created = tokio::select! {
                    biased;
                    () = stopped(stop) => return None,
                    created = bucket.create(LEADER_KEY, value) => created,
                };
                match created {
                    Ok(revision) => return Some(Won { revision, sent }),
                    Err(StoreError::AlreadyExists { .. }) => continue,
                    Err(e) => session.report("campaigning failed", e),
                }
            }
            Err(e) => session.report("reading the leader failed", e),
        }
        // Wait for the key to change (puts are read straight from the event), or poll.
        let deadline = Instant::now() + poll;
        loop {
            tokio::select! {
                biased;
                () = stopped(stop) => return None,
                event = next_event(&mut watch) => match event {
                    Some(Ok(WatchEvent::Put(entry))) if entry.key == LEADER_KEY => {
                        observe(session, &entry);
                        continue;
                    }
                    Some(Ok(WatchEvent::Delete { .. })) => {}
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        session.report("leader watch failed", e);
                        watch = None;
                        sleep(retry).await;
                    }
                    None => watch = None,
                },
                () = sleep_until(deadline) => {}
            }
            break;
        }
    }
}

fn observe<B: Bucket, P>(session: &Session<B, P>, entry: &Entry) {
    match LeaderRecord::decode(&entry.value) {
        Ok(record) => session.status.set_leader(Some(leader_info(entry, &record))),
        Err(source) => {
            session.status.set_leader(None);
            session.report(
                "the leader record is unreadable; waiting for it to expire",
                Error::Corrupt {
                    bucket: session.buckets.election.name().to_owned(),
                    key: entry.key.clone(),
                    source,
                },
            );
        }
    }
}

/// The leader lease ended before a renewal was acknowledged: stop leading (not a stop).
fn lease_ran_out<B: Bucket, P>(session: &Session<B, P>, term: u64) -> bool {
    tracing::warn!(worker = %session.worker_id, term, "leader lease ran out");
    false
}

/// How long to wait before retrying a failed store operation.
fn retry_delay(interval: Duration) -> Duration {
    (interval / 4).clamp(Duration::from_millis(10), Duration::from_millis(250))
}

/// Leads until the lease is lost or `stop`; the calculator has ended when this returns, and
/// on `stop` the lease is released so that another worker takes over at once.
async fn lead<B: Bucket, P: PartitionSource>(
    session: &Arc<Session<B, P>>,
    won: Won,
    stop: &mut watch::Receiver<bool>,
) {
    let config = &session.config;
    let bucket = &session.buckets.election;
    let term = won.revision.get();
    let hold = config.election_ttl - config.margin_for(config.election_ttl);
    let lease = Arc::new(Lease::new(won.sent + hold));
    let mut revision = won.revision;
    let mut record = LeaderRecord {
        worker_id: session.worker_id.clone(),
        instance_id: session.instance.to_string(),
        term,
        phase: Lifecycle::Stable,
    };
    tracing::info!(worker = %session.worker_id, term, "elected leader");
    session.status.set_is_leader(LeadershipChange {
        is_leader: true,
        term,
    });
    let (phase_tx, mut phase_rx) = watch::channel(Lifecycle::Stable);
    let calculator = session.spawn(leader::run(session.clone(), term, lease.clone(), phase_tx));
    let renew_every = config.election_renew_interval();
    let retry = retry_delay(renew_every);
    // The first renewal writes the term into the record at once.
    let mut next_renewal = Instant::now();
    let mut reread = false;
    let stopping = loop {
        tokio::select! {
            biased;
            () = stopped(stop) => break true,
            () = sleep_until(lease.valid_until()) => break lease_ran_out(session, term),
            Ok(()) = phase_rx.changed() => next_renewal = Instant::now(),
            () = sleep_until(next_renewal) => {}
        }
        if Instant::now() < next_renewal {
            continue;
        }
        if calculator.is_finished() {
            session.report("leader", Error::TaskEnded { task: "calculator" });
            break false;
        }
        // Every store call races the lease end (and `stop`): a call that hangs must not keep
        // this worker the leader past its lease.
        let lease_end = lease.valid_until();
        if reread {
            // The last renewal's outcome is unknown: adopt it if it landed.
            let current = tokio::select! {
                biased;
                () = stopped(stop) => break true,
                () = sleep_until(lease_end) => break lease_ran_out(session, term),
                current = bucket.get(LEADER_KEY) => current,
            };
            match current {
                Ok(Some(entry)) => match LeaderRecord::decode(&entry.value) {
                    Ok(current)
                        if current.instance_id == record.instance_id
                            && current.term_at(entry.revision.get()) == term =>
                    {
                        revision = entry.revision;
                        reread = false;
                    }
                    _ => break false,
                },
                Ok(None) => break false,
                Err(e) => {
                    session.report("reading the leader lease failed", e);
                    next_renewal = Instant::now() + retry;
                    continue;
                }
            }
        }
        record.phase = *phase_rx.borrow_and_update();
        let sent = Instant::now();
        let value = match record.encode() {
            Ok(value) => value,
            Err(e) => {
                session.report("encoding the leader record failed", e);
                break false;
            }
        };
        let renewed = tokio::select! {
            biased;
            () = stopped(stop) => break true,
            () = sleep_until(lease_end) => break lease_ran_out(session, term),
            renewed = bucket.update(LEADER_KEY, value, revision) => renewed,
        };
        match renewed {
            Ok(new_revision) => {
                revision = new_revision;
                lease.extend(sent + hold);
                next_renewal = sent + renew_every;
                session.status.set_leader(Some(LeaderInfo {
                    worker_id: session.worker_id.clone(),
                    term,
                    phase: record.phase,
                }));
            }
            Err(StoreError::Conflict { .. }) => break false,
            Err(e) => {
                reread = true;
                session.report("renewing the leader lease failed", e);
                next_renewal = Instant::now() + retry;
            }
        }
    };
    // Stop the calculator before anything else: it must not act on a lost lease. (Aborting
    // cancels its I/O at once; awaiting waits only for the task to be dropped.) Then tell
    // the application: the leadership hook is user code.
    calculator.abort().await;
    session.status.set_is_leader(LeadershipChange {
        is_leader: false,
        term,
    });
    tracing::info!(worker = %session.worker_id, term, stopping, "no longer leader");
    if stopping {
        // Release at our revision: a successor's lease (if any) is left alone. Bounded: a
        // release that cannot get through only means the lease expires by its TTL.
        match tokio::time::timeout(renew_every, bucket.delete(LEADER_KEY, Some(revision))).await {
            Ok(Ok(()) | Err(StoreError::Conflict { .. })) => {}
            Ok(Err(e)) => session.report("releasing the leader lease failed", e),
            Err(_) => tracing::warn!(
                worker = %session.worker_id,
                "releasing the leader lease timed out; it expires by its TTL"
            ),
        }
    }
    session.status.set_leader(None);
}
