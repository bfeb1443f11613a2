//! The election's shell: [`ElectionMachine`] (the rules live there: campaign on an absent
//! entry, the term is the winning create's revision, renew by compare-and-set every
//! `election_ttl / 3`, the lease measured from the send time of the last acknowledged
//! renewal minus the safety margin, deposed at its end whatever is in flight) run by the
//! [executor](super::executor). Its inputs are `stop`, the watch of the leader entry and, while
//! leading, the calculator's phase and end; its operations are the reads, the create, the
//! renewals and the release on stop. When deposed it stops the calculator *before* anything
//! else, then fires the leadership hook.

use std::future::pending;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use super::PartitionSource;
use super::context::{OwnedTask, Session, stopped};
use super::executor::{self, Delivery, KeyWatch, Operation, Shell};
use super::hooks::LeadershipChange;
use super::leader;
use super::status::LeaderInfo;
use crate::Error;
use crate::decide::{
    Candidate, CreateOutcome, Deposed, ElectionAction, ElectionCall, ElectionEvent,
    ElectionMachine, ElectionTimings, LeaderEntry, RenewOutcome,
};
use crate::store::{Bucket, Entry, Revision, StoreError};
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

    fn extend(&self, until: Instant) {
        let mut valid_until = self.lock();
        *valid_until = until.max(*valid_until);
    }
}

/// Campaigns, leads when elected, and campaigns again after losing the lease, until `stop`.
pub(crate) async fn run<B: Bucket, P: PartitionSource>(
    session: Arc<Session<B, P>>,
    stop: watch::Receiver<bool>,
) {
    let config = &session.config;
    let renew_interval = config.election_renew_interval();
    let timings = ElectionTimings {
        hold: config.election_ttl - config.margin_for(config.election_ttl),
        renew_interval,
        read_after_silence: config.election_ttl,
        retry: retry_delay(renew_interval),
    };
    let me = Candidate {
        worker_id: session.worker_id.clone(),
        instance_id: session.instance.to_string(),
    };
    let mut machine = ElectionMachine::new(me, timings, Instant::now().into_std());
    let watch = KeyWatch::new(session.buckets.election.clone(), LEADER_KEY, timings.retry);
    let mut shell = ElectionShell {
        session: session.clone(),
        stop,
        stop_sent: false,
        watch,
        leading: None,
    };
    executor::run(&mut machine, &mut shell, ElectionEvent::Tick).await;
    // (Deposed first, if it led: the machine asks for that before it finishes.)
    session.status.set_leader(None);
}

/// What a leader runs: its calculator, the lease it shares with it, and the calculator's
/// phase (dropping it aborts the calculator).
struct Leadership {
    lease: Arc<Lease>,
    calculator: OwnedTask<()>,
    phase: watch::Receiver<Lifecycle>,
}

/// The election's inputs and outputs: `stop`, the watch of the leader entry, the
/// calculator (its phase, its end), the store and the status.
struct ElectionShell<B, P> {
    session: Arc<Session<B, P>>,
    stop: watch::Receiver<bool>,
    stop_sent: bool,
    watch: KeyWatch<B>,
    leading: Option<Leadership>,
}

impl<B: Bucket, P: PartitionSource> Shell<ElectionMachine> for ElectionShell<B, P> {
    fn carry_out(&mut self, action: ElectionAction, operation: &mut Operation<ElectionEvent>) {
        let session = &self.session;
        match action {
            ElectionAction::Read(op) => {
                let session = session.clone();
                operation.start(op, async move {
                    let outcome = read_leader(&session, "reading the leader failed").await;
                    ElectionEvent::Read { op, outcome }
                });
            }
            ElectionAction::Create(op, mut record) => {
                let session = session.clone();
                // Above every term this worker has seen, also if the election bucket was
                // lost and its revisions start again; and not below the wall clock, so
                // terms keep growing even when the election bucket and the records were
                // lost while every worker that saw the old terms was away.
                let seen = session
                    .highest_term
                    .load(Ordering::Relaxed)
                    .max(session.applied.borrow().term_seen);
                record.floor = seen.saturating_add(1).max(clock_term(SystemTime::now()));
                operation.start(op, async move {
                    let bucket = &session.buckets.election;
                    let outcome = match encode(&record) {
                        Ok(value) => match bucket.create(LEADER_KEY, value).await {
                            Ok(revision) => CreateOutcome::Won {
                                revision: revision.get(),
                                term: record.term_at(revision.get()),
                            },
                            Err(StoreError::AlreadyExists { .. }) => CreateOutcome::Taken,
                            Err(e) => {
                                session.report("campaigning failed", e);
                                CreateOutcome::Failed
                            }
                        },
                        Err(e) => {
                            session.report("encoding the leader record failed", e);
                            CreateOutcome::Failed
                        }
                    };
                    ElectionEvent::Created { op, outcome }
                });
            }
            ElectionAction::Renew {
                op,
                revision,
                record,
            } => {
                let session = session.clone();
                operation.start(op, async move {
                    let bucket = &session.buckets.election;
                    let outcome = match encode(&record) {
                        Ok(value) => {
                            match bucket
                                .update(LEADER_KEY, value, Revision::new(revision))
                                .await
                            {
                                Ok(revision) => RenewOutcome::Renewed(revision.get()),
                                Err(StoreError::Conflict { .. }) => RenewOutcome::Conflict,
                                Err(e) => {
                                    session.report("renewing the leader lease failed", e);
                                    RenewOutcome::Failed
                                }
                            }
                        }
                        Err(e) => {
                            session.report("encoding the leader record failed", e);
                            RenewOutcome::Failed
                        }
                    };
                    ElectionEvent::Renewed { op, outcome }
                });
            }
            ElectionAction::Release { op, revision } => {
                let session = session.clone();
                operation.start(op, async move {
                    let bucket = &session.buckets.election;
                    match bucket
                        .delete(LEADER_KEY, Some(Revision::new(revision)))
                        .await
                    {
                        // A successor's entry (a conflict) is left alone.
                        Ok(()) | Err(StoreError::Conflict { .. }) => {}
                        Err(e) => session.report("releasing the leader lease failed", e),
                    }
                    ElectionEvent::Released { op }
                });
            }
            ElectionAction::Cancel(op) => operation.cancel(op),
            ElectionAction::Elected { term, lease_end } => {
                tracing::info!(worker = %session.worker_id, term, "elected leader");
                let lease = Arc::new(Lease::new(Instant::from_std(lease_end)));
                let (phase_tx, phase) = watch::channel(Lifecycle::Stable);
                let span = tracing::info_span!("term", term);
                let calculator = session.spawn(
                    leader::run(session.clone(), term, lease.clone(), phase_tx).instrument(span),
                );
                self.leading = Some(Leadership {
                    lease,
                    calculator,
                    phase,
                });
                session.status.set_is_leader(LeadershipChange {
                    is_leader: true,
                    term,
                });
            }
            ElectionAction::LeaseExtended { lease_end } => {
                if let Some(leading) = &self.leading {
                    leading.lease.extend(Instant::from_std(lease_end));
                }
            }
            ElectionAction::Deposed { term, reason } => {
                // Stop the calculator before anything else: it must not act on a lost
                // lease (aborted, it is not polled again). Then tell the application: the
                // leadership hook is user code.
                drop(self.leading.take());
                match reason {
                    Deposed::LeaseEnded => {
                        tracing::warn!(worker = %session.worker_id, term, "leader lease ran out");
                    }
                    Deposed::CalculatorEnded => {
                        session.report("leader", Error::TaskEnded { task: "calculator" });
                    }
                    Deposed::Replaced | Deposed::Stopping => {}
                }
                session.status.set_is_leader(LeadershipChange {
                    is_leader: false,
                    term,
                });
                tracing::info!(worker = %session.worker_id, term, ?reason, "no longer leader");
            }
            ElectionAction::ShowLeader(entry) => {
                session.status.set_leader(entry.map(|entry| LeaderInfo {
                    worker_id: entry.record.worker_id.clone(),
                    term: entry.term(),
                    phase: entry.record.phase,
                }));
            }
            ElectionAction::TimedOut(ElectionCall::Release) => tracing::warn!(
                worker = %session.worker_id,
                "releasing the leader lease timed out; it expires by its TTL"
            ),
            ElectionAction::TimedOut(call) => {
                tracing::debug!(worker = %session.worker_id, ?call, "an election call ran into its deadline");
            }
            ElectionAction::Finished => {}
        }
    }

    async fn next_input(&mut self) -> ElectionEvent {
        tokio::select! {
            biased;
            () = stopped(&mut self.stop), if !self.stop_sent => {
                self.stop_sent = true;
                ElectionEvent::Stop
            }
            event = leadership_event(&mut self.leading) => event,
            delivered = self.watch.next() => match delivered {
                Delivery::Put(entry) => match decode(&self.session, &entry) {
                    Ok(entry) => ElectionEvent::Delivered(Some(entry)),
                    Err(()) => ElectionEvent::Tick,
                },
                Delivery::Deleted(..) => ElectionEvent::Delivered(None),
                Delivery::Started => ElectionEvent::WatchStarted,
                Delivery::Failed(e) => {
                    self.session.report("leader watch failed", e);
                    ElectionEvent::Tick
                }
            },
        }
    }
}

/// The calculator's end or its next phase; pending while none runs.
async fn leadership_event(leading: &mut Option<Leadership>) -> ElectionEvent {
    let Some(leading) = leading else {
        return pending().await;
    };
    tokio::select! {
        biased;
        () = leading.calculator.ended() => ElectionEvent::CalculatorEnded,
        Ok(()) = leading.phase.changed() => {
            ElectionEvent::Phase(*leading.phase.borrow_and_update())
        }
        else => pending().await,
    }
}

/// The lowest term a campaign at `now` takes: milliseconds since the Unix epoch. A term
/// is also above every term its candidate has seen, so this only matters when nothing
/// remembers the old terms (the election bucket and the records lost while every worker
/// that saw them was away): the new terms are then above every term taken before, as long
/// as the candidates' clocks are not behind the earlier leaders' by more than the time
/// the fleet was away.
fn clock_term(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).map_or(0, |since| {
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    })
}

fn encode(record: &LeaderRecord) -> Result<bytes::Bytes, Error> {
    record.encode().map_err(Into::into)
}

/// Reads the leader entry; a failure is reported (under `context`, or as an unreadable
/// record) and returned as `Err(())`.
pub(crate) async fn read_leader<B: Bucket, P>(
    session: &Session<B, P>,
    context: &str,
) -> Result<Option<LeaderEntry>, ()> {
    match session.buckets.election.get(LEADER_KEY).await {
        Ok(Some(entry)) => {
            let entry = decode(session, &entry)?;
            session
                .highest_term
                .fetch_max(entry.term(), Ordering::Relaxed);
            Ok(Some(entry))
        }
        Ok(None) => Ok(None),
        Err(e) => {
            session.report(context, e);
            Err(())
        }
    }
}

/// Decodes the leader entry; an unreadable one is reported (it is waited out: it expires by
/// its TTL) and shows as no leader.
fn decode<B: Bucket, P>(session: &Session<B, P>, entry: &Entry) -> Result<LeaderEntry, ()> {
    match LeaderRecord::decode(&entry.value) {
        Ok(record) => Ok(LeaderEntry {
            revision: entry.revision.get(),
            record,
        }),
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
            Err(())
        }
    }
}

/// How long to wait before retrying a failed store operation.
fn retry_delay(interval: Duration) -> Duration {
    (interval / 4).clamp(Duration::from_millis(10), Duration::from_millis(250))
}
