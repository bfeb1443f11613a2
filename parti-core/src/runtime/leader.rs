//! The leader's calculator shell: [`CalculatorMachine`] (the rules live there: observe,
//! classify, schedule, plan, hand off, retry) run by the [executor](super::executor). Its
//! inputs are the watch of the heartbeats (the fast path; listings are the machine's
//! safety net) and the watch of the `refresh` key; its operations are reading the
//! assignment records, listing heartbeats, writing handoff steps (compare-and-set, checked
//! against the election lease before each write), computing a rebalance with the source
//! and the strategy, and a new leader's coverage check. Heartbeats keep arriving while an
//! operation runs, and every operation has the machine's deadline.
//!
//! The leader's copy of the records ([`Records`]) is shared with the operation that uses
//! it: taken for a write and put back after; an abandoned write loses it, and the machine
//! reads the records back before writing again.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use parti_strategy::{Partition, PartitionId, StrategyInput, Worker, WorkerId};
use tokio::sync::watch;
use tokio::time::{Instant, timeout};
use tracing::Instrument;

use super::PartitionSource;
use super::context::{OwnedTask, Session};
use super::election::Lease;
use super::executor::{self, Delivery, KeyWatch, Operation, Shell};
use super::publish::Records;
use crate::decide::{
    Backoff, Beat, CalculatorAction, CalculatorCall, CalculatorEvent, CalculatorMachine,
    CalculatorNote, CalculatorTimings, Computed, HeartbeatView, LostBucket, RecordsRead, Slot,
    WindowPolicy, merge_listings,
};
use crate::store::{Bucket, DeleteReason, Entry, Operation as StoreOperation, StoreError};
use crate::telemetry;
use crate::wire::{
    Heartbeat, IdClaim, Lifecycle, REFRESH_KEY, WORKER_ID_PREFIX, WireError, WireRecord,
    worker_number,
};
use crate::{Error, Result};

/// Runs the calculator of the leader of `term` until aborted (by the election, when the
/// lease ends).
pub(crate) async fn run<B: Bucket, P: PartitionSource>(
    session: Arc<Session<B, P>>,
    term: u64,
    lease: Arc<Lease>,
    phase: watch::Sender<Lifecycle>,
) {
    let config = &session.config;
    let retry = retry_delay(config.heartbeat_interval);
    let timings = CalculatorTimings {
        poll_interval: config.heartbeat_poll_interval(),
        backstop_interval: config.backstop_interval(),
        two_heartbeats: config.writes_two_heartbeats(),
        call_timeout: config.heartbeat_ttl,
        heartbeat_ttl: config.heartbeat_ttl,
        retry,
        emergency_grace: config.emergency_grace,
        restart_ratio: config.restart_ratio,
        restart_grace: config.effective_restart_grace(),
        claim_ttl: config.id_ttl,
        windows: WindowPolicy {
            cold_start_window: config.cold_start_window,
            planned_scale_window: config.planned_scale_window,
            cooldown: config.cooldown,
        },
    };
    let backoff = Backoff::new(
        retry,
        config.heartbeat_ttl.max(config.heartbeat_interval),
        worker_number(session.worker_id.as_str())
            .unwrap_or(0)
            .into(),
    );
    let mut machine = CalculatorMachine::new(term, timings, backoff, Instant::now().into_std());
    let heartbeats = KeyWatch::prefix(session.buckets.heartbeat.clone(), WORKER_ID_PREFIX, retry);
    let second_two = session.buckets.second_heartbeat.is_some();
    let second_heartbeats = session
        .buckets
        .second_heartbeat
        .clone()
        .map(|bucket| KeyWatch::prefix(bucket, WORKER_ID_PREFIX, retry));
    let refreshes = KeyWatch::new(session.buckets.election.clone(), REFRESH_KEY, retry);
    // From the current claims: a new leader learns of workers parked before it led.
    let claims =
        KeyWatch::prefix(session.buckets.ids.clone(), WORKER_ID_PREFIX, retry).with_current();
    // Only to learn that the records' bucket was lost (the calculator writes the records).
    let records_watch =
        KeyWatch::prefix(session.buckets.assignment.clone(), WORKER_ID_PREFIX, retry);
    // A loss found by another task less than a TTL before this leader took office counts
    // too: leases of before it may still run.
    let heartbeat_lost = session
        .heartbeat_losses
        .last()
        .filter(|at| Instant::now() >= *at + config.heartbeat_ttl);
    let source_changes = session.source.subscribe_changes();
    // While this worker leads: the two heartbeat buckets' leaders on different nodes.
    let _apart = session.buckets.second_heartbeat.clone().map(|second| {
        let first = session.buckets.heartbeat.clone();
        let period = config.heartbeat_ttl;
        OwnedTask::spawn(keep_heartbeats_apart(first, second, period))
    });
    let mut shell = CalculatorShell {
        session,
        term,
        lease,
        phase,
        records: Arc::default(),
        garbage: Arc::default(),
        heartbeats,
        second_heartbeats,
        view: HeartbeatView::new(second_two),
        refreshes,
        claims,
        records_watch,
        source_changes,
        heartbeat_revisions: [0, 0],
        heartbeat_lost,
        heartbeat_doubt: None,
        call_timeout: timings.call_timeout,
    };
    executor::run(&mut machine, &mut shell, CalculatorEvent::Tick).await;
}

/// The leader's copy of the assignment records, shared with the operation using it, and
/// the highest version it has ever known (kept when the copy is lost with an abandoned
/// write, so versions never repeat).
#[derive(Debug, Default)]
struct SharedRecords {
    records: Mutex<Option<Records>>,
    version: AtomicU64,
}

impl SharedRecords {
    fn lock(&self) -> MutexGuard<'_, Option<Records>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the copy (`None`: lost, or in use).
    fn take(&self) -> Option<Records> {
        self.lock().take()
    }

    /// Puts a copy back, its version raised to the highest ever known.
    fn put(&self, mut records: Records) {
        let version = self.version.fetch_max(records.version(), Ordering::SeqCst);
        records.raise_version(version);
        *self.lock() = Some(records);
    }
}

struct CalculatorShell<B, P> {
    session: Arc<Session<B, P>>,
    term: u64,
    lease: Arc<Lease>,
    phase: watch::Sender<Lifecycle>,
    records: Arc<SharedRecords>,
    garbage: Arc<Garbage>,
    heartbeats: KeyWatch<B>,
    /// The second heartbeat bucket's, when heartbeats go to two.
    second_heartbeats: Option<KeyWatch<B>>,
    /// What the heartbeat watches showed, one beat per worker.
    view: HeartbeatView,
    refreshes: KeyWatch<B>,
    /// The id claims, for workers that parked (stopped, expected back).
    claims: KeyWatch<B>,
    /// The records, for their bucket being lost.
    records_watch: KeyWatch<B>,
    /// The partition source's own change notices, if it has them.
    source_changes: Option<watch::Receiver<u64>>,
    /// The highest revision each heartbeat watch delivered: a lower one means the bucket
    /// was created again.
    heartbeat_revisions: [u64; 2],
    /// The last loss of the heartbeat bucket the machine has been told of.
    heartbeat_lost: Option<Instant>,
    /// The last doubt about heartbeats' absence the machine has been told of.
    heartbeat_doubt: Option<Instant>,
    call_timeout: Duration,
}

impl<B: Bucket, P: PartitionSource> Shell<CalculatorMachine> for CalculatorShell<B, P> {
    fn carry_out(&mut self, action: CalculatorAction, operation: &mut Operation<CalculatorEvent>) {
        let session = &self.session;
        match action {
            CalculatorAction::Load(op) => {
                let (session, shared) = (session.clone(), self.records.clone());
                operation.start(op, async move {
                    let report = |e| session.report("reading the assignment records failed", e);
                    let outcome = match Records::load(&session.buckets.assignment, report).await {
                        Ok(records) => {
                            let read = RecordsRead {
                                contents: records.contents(),
                                assignment: records.assignment(),
                                highest_term: records.highest_term(),
                            };
                            shared.put(records);
                            Ok(read)
                        }
                        Err(e) => {
                            session.report("reading the assignment records failed", e);
                            Err(())
                        }
                    };
                    CalculatorEvent::Loaded { op, outcome }
                });
            }
            CalculatorAction::List(op) => {
                let (session, garbage) = (session.clone(), self.garbage.clone());
                let lost_before = session.heartbeat_losses.last();
                operation.start(op, async move {
                    // One listing per heartbeat bucket, at once. With two, a worker is
                    // absent only if both lack it, and only if they were taken within half
                    // a TTL of each other (the confirmation rule of `HeartbeatLease` rests
                    // on it).
                    let started = Instant::now();
                    let listings = futures_util::future::join_all(
                        session
                            .buckets
                            .heartbeats()
                            .map(|bucket| bucket.entries(WORKER_ID_PREFIX)),
                    )
                    .await;
                    let two = listings.len() == 2;
                    let mut unreadable = BTreeMap::new();
                    // Found gone meanwhile by any task of this manager (which may have
                    // created it again before this listing ran).
                    let mut bucket_lost = session.heartbeat_losses.last() != lost_before;
                    let mut each = Vec::new();
                    let mut failed = false;
                    for listing in listings {
                        match listing {
                            Ok(entries) => each.push(read_listing(&entries, &mut unreadable)),
                            Err(e) => {
                                bucket_lost |= matches!(e, StoreError::NotFound { .. });
                                session.report("listing heartbeats failed", e);
                                failed = true;
                            }
                        }
                    }
                    if two && !failed && started.elapsed() > session.config.heartbeat_ttl / 2 {
                        session.report(
                            "listing heartbeats took more than half a TTL; not trusted",
                            Error::Store(StoreError::unavailable(
                                StoreOperation::Keys,
                                format!("took {:?}", started.elapsed()),
                            )),
                        );
                        failed = true;
                    }
                    let outcome = if failed {
                        Err(())
                    } else {
                        let mut each = each.into_iter();
                        let first = each.next().unwrap_or_default();
                        let present = match each.next() {
                            Some(second) => merge_listings(first, second),
                            None => first,
                        };
                        unreadable.retain(|worker, _| !present.contains_key(worker));
                        garbage.seen(&session, &unreadable, present.keys());
                        Ok(present)
                    };
                    CalculatorEvent::Listed {
                        op,
                        outcome,
                        unreadable: unreadable.into_keys().collect(),
                        bucket_lost,
                    }
                });
            }
            CalculatorAction::Write {
                op,
                step,
                lifecycle,
                min_version,
                holders,
            } => {
                let (session, shared, lease) =
                    (session.clone(), self.records.clone(), self.lease.clone());
                let term = self.term;
                let span = tracing::info_span!("handoff_step", changes = step.len());
                let write = async move {
                    let mut committed = Vec::new();
                    let Some(mut records) = shared.take() else {
                        // Lost with an abandoned write: the machine reads them back first,
                        // so this does not happen; if it did, a read-back is what helps.
                        return CalculatorEvent::Written {
                            op,
                            committed,
                            failed: true,
                        };
                    };
                    records.raise_version(min_version);
                    let bucket = &session.buckets.assignment;
                    let written = records
                        .write(
                            bucket,
                            &step,
                            &holders,
                            &mut committed,
                            (term, lifecycle),
                            || lease.is_valid(),
                        )
                        .await;
                    shared.put(records);
                    let failed = match written {
                        Ok(published) => {
                            tracing::debug!(
                                term,
                                version = published.version,
                                written = published.written,
                                deleted = published.deleted,
                                "handoff step"
                            );
                            false
                        }
                        Err(e) => {
                            session.report("writing assignment records failed", e);
                            true
                        }
                    };
                    CalculatorEvent::Written {
                        op,
                        committed,
                        failed,
                    }
                };
                operation.start(op, write.instrument(span));
            }
            CalculatorAction::Compute {
                op,
                reason,
                workers,
                previous,
                fallback,
                source,
            } => {
                let session = session.clone();
                let limit = self.call_timeout;
                let span = tracing::info_span!("rebalance", reason = reason.as_str());
                let compute = async move {
                    let asked = if source {
                        Some(partitions(&session, limit).await)
                    } else {
                        None
                    };
                    let (partitions, source_failed) = match (asked, fallback) {
                        (Some(Ok(partitions)), _) => (partitions, false),
                        (None, Some(last)) => (last, false),
                        (Some(Err(e)), Some(last)) => {
                            let context = "reading partitions failed; using the last good list";
                            session.report(context, e);
                            (last, true)
                        }
                        (Some(Err(e)), None) => {
                            session.report("rebalance failed", e);
                            return CalculatorEvent::Computed {
                                op,
                                outcome: Err(()),
                            };
                        }
                        // (The machine skips the source only when it has a list.)
                        (None, None) => {
                            return CalculatorEvent::Computed {
                                op,
                                outcome: Err(()),
                            };
                        }
                    };
                    let workers: Vec<Worker> = workers.into_iter().map(Worker::new).collect();
                    let input = StrategyInput::new(&workers, &partitions).with_previous(&previous);
                    // The strategy may be the user's: a panic is a failure to retry, not
                    // the end of the calculator.
                    let strategy = &session.strategy;
                    let assigned = catch_unwind(AssertUnwindSafe(|| strategy.assign(&input)))
                        .map_err(|_| Error::StrategyPanicked)
                        .and_then(|assigned| assigned.map_err(Error::from));
                    let outcome = match assigned {
                        Ok(assignment) => Ok(Computed {
                            assignment,
                            partitions,
                            source_failed,
                        }),
                        Err(e) => {
                            session.report("rebalance failed", e);
                            Err(())
                        }
                    };
                    tracing::trace!(reason = reason.as_str(), "rebalance computed");
                    CalculatorEvent::Computed { op, outcome }
                };
                operation.start(op, compute.instrument(span));
            }
            CalculatorAction::CheckCoverage(op) => {
                let (session, shared) = (session.clone(), self.records.clone());
                let limit = self.call_timeout;
                operation.start(op, async move {
                    let outcome = match partitions(&session, limit).await {
                        Ok(partitions) => {
                            let ids: BTreeSet<PartitionId> =
                                partitions.iter().map(|p| p.id().clone()).collect();
                            let covered = shared
                                .lock()
                                .as_ref()
                                .is_some_and(|records| records.covers_exactly(&ids));
                            Ok((covered, partitions))
                        }
                        Err(e) => {
                            session.report("reading partitions failed", e);
                            Err(())
                        }
                    };
                    CalculatorEvent::Covered { op, outcome }
                });
            }
            CalculatorAction::Cancel(op) => operation.cancel(op),
            CalculatorAction::Phase(lifecycle) => {
                self.phase.send_if_modified(|current| {
                    let changed = *current != lifecycle;
                    *current = lifecycle;
                    changed
                });
            }
            CalculatorAction::Note(note) => self.note(note),
            CalculatorAction::Resign { above } => {
                // The next campaign of this worker takes a term above it.
                session.highest_term.fetch_max(above, Ordering::Relaxed);
                tracing::warn!(
                    worker = %session.worker_id,
                    term = self.term,
                    seen = above,
                    "a higher term than this leader's was seen (the election bucket was lost?): stepping down"
                );
            }
        }
    }

    async fn next_input(&mut self) -> CalculatorEvent {
        let lost = self.session.heartbeat_losses.last();
        if lost != self.heartbeat_lost {
            self.heartbeat_lost = lost;
            return CalculatorEvent::BucketLost(LostBucket::Heartbeats);
        }
        let doubt = self.session.heartbeat_doubts.last();
        if doubt != self.heartbeat_doubt {
            self.heartbeat_doubt = doubt;
            if let Some(at) = doubt {
                let until = (at + self.session.config.heartbeat_ttl).into_std();
                return CalculatorEvent::AbsenceUnproven { until };
            }
        }
        let (slot, delivered) = tokio::select! {
            biased;
            delivered = self.heartbeats.next() => (Slot::First, delivered),
            Some(delivered) = next_of(&mut self.second_heartbeats) => (Slot::Second, delivered),
            delivered = self.records_watch.next() => return match delivered {
                Delivery::Failed(e @ StoreError::NotFound { .. }) => {
                    self.session.report("the assignment bucket is gone", e);
                    CalculatorEvent::BucketLost(LostBucket::Records)
                }
                Delivery::Failed(e) => {
                    self.session.report("assignment watch failed", e);
                    CalculatorEvent::Tick
                }
                Delivery::Put(_) | Delivery::Deleted(..) | Delivery::Started => CalculatorEvent::Tick,
            },
            delivered = self.claims.next() => return match delivered {
                Delivery::Put(entry) => match worker_of(&entry.key) {
                    Some(worker) => CalculatorEvent::Claimed {
                        worker,
                        // Something is there (an unreadable claim is written over by
                        // its owner's next renewal).
                        parked: IdClaim::decode(&entry.value).is_ok_and(|claim| claim.parked),
                    },
                    None => CalculatorEvent::Tick,
                },
                Delivery::Deleted(key, _) => match worker_of(&key) {
                    Some(worker) => CalculatorEvent::Unclaimed(worker),
                    None => CalculatorEvent::Tick,
                },
                // It delivers the current claims first.
                Delivery::Started => CalculatorEvent::Tick,
                Delivery::Failed(e) => {
                    self.session.report("id claim watch failed", e);
                    CalculatorEvent::ClaimsUnknown
                }
            },
            Some(changed) = source_changed(&mut self.source_changes) => {
                return if changed {
                    tracing::info!(term = self.term, "the partition source changed");
                    CalculatorEvent::Refresh
                } else {
                    // The source stopped sending: only refreshes from now on.
                    self.source_changes = None;
                    CalculatorEvent::Tick
                };
            }
            delivered = self.refreshes.next() => return match delivered {
                Delivery::Put(_) => {
                    tracing::info!(term = self.term, "partition refresh requested");
                    CalculatorEvent::Refresh
                }
                Delivery::Deleted(..) | Delivery::Started => CalculatorEvent::Tick,
                Delivery::Failed(e) => {
                    self.session.report("refresh watch failed", e);
                    CalculatorEvent::Tick
                }
            },
        };
        self.heartbeat_delivery(slot, delivered)
    }
}

impl<B: Bucket, P> CalculatorShell<B, P> {
    /// The calculator's event for what the heartbeat watch of `slot`'s bucket delivered,
    /// through the view of both buckets (with one, the view adds nothing).
    fn heartbeat_delivery(&mut self, slot: Slot, delivered: Delivery) -> CalculatorEvent {
        let i = slot.index();
        let bucket = match slot {
            Slot::First => Some(&self.session.buckets.heartbeat),
            Slot::Second => self.session.buckets.second_heartbeat.as_ref(),
        };
        let bucket = bucket.map_or_else(String::new, |bucket| bucket.name().to_owned());
        if matches!(delivered, Delivery::Put(_) | Delivery::Deleted(..)) {
            let now = Instant::now().into_std();
            self.view
                .heard(slot, now, self.session.config.heartbeat_ttl);
        }
        match delivered {
            Delivery::Put(entry) if entry.revision.get() < self.heartbeat_revisions[i] => {
                self.heartbeat_revisions[i] = entry.revision.get();
                self.view.forget(slot);
                self.session.report(
                    "the heartbeat bucket was created again",
                    Error::Store(StoreError::NotFound { bucket }),
                );
                CalculatorEvent::BucketLost(LostBucket::Heartbeats)
            }
            Delivery::Put(entry) => {
                self.heartbeat_revisions[i] = entry.revision.get();
                let Some(worker) = worker_of(&entry.key) else {
                    return CalculatorEvent::Tick;
                };
                let beat = match beat(&entry) {
                    Ok(beat) => Some(self.view.put(slot, &worker, beat)),
                    // Not a heartbeat: it makes nobody live (the other bucket may).
                    Err(_) => self.view.remove(slot, &worker),
                };
                CalculatorEvent::Heartbeat {
                    worker,
                    beat,
                    via: slot,
                }
            }
            Delivery::Deleted(key, reason) => {
                let Some(worker) = worker_of(&key) else {
                    return CalculatorEvent::Tick;
                };
                match (self.view.remove(slot, &worker), reason) {
                    // Still in the other bucket: present.
                    (Some(beat), _) => CalculatorEvent::Heartbeat {
                        worker,
                        beat: Some(beat),
                        via: slot,
                    },
                    (None, DeleteReason::Deleted) => {
                        CalculatorEvent::HeartbeatDeleted(worker, slot)
                    }
                    (None, DeleteReason::Expired) => CalculatorEvent::HeartbeatGone(worker, slot),
                }
            }
            Delivery::Started => {
                // What changed while it was down is for a listing to find.
                self.view.forget(slot);
                CalculatorEvent::HeartbeatWatchStarted
            }
            Delivery::Failed(e @ StoreError::NotFound { .. }) => {
                self.view.forget(slot);
                self.session.report("the heartbeat bucket is gone", e);
                CalculatorEvent::BucketLost(LostBucket::Heartbeats)
            }
            Delivery::Failed(e) => {
                self.session.report("heartbeat watch failed", e);
                CalculatorEvent::Tick
            }
        }
    }

    fn note(&self, note: CalculatorNote) {
        let (session, term) = (&self.session, self.term);
        match note {
            CalculatorNote::TopologyChange { kind, joined, left } => tracing::info!(
                term,
                kind = kind.as_str(),
                joined = %plain(&joined),
                left = %plain(&left),
                "topology change"
            ),
            CalculatorNote::Planned {
                reason,
                workers,
                partitions,
                moved,
                took,
            } => {
                tracing::info!(
                    term,
                    reason = reason.as_str(),
                    workers,
                    partitions,
                    moved,
                    "assignment computed"
                );
                telemetry::rebalance(
                    &session.worker_id,
                    telemetry::Rebalance {
                        reason,
                        took,
                        moved,
                        workers,
                        partitions,
                    },
                );
            }
            CalculatorNote::NoWorkers(reason) => {
                tracing::info!(term, reason = reason.as_str(), "no workers to assign to")
            }
            CalculatorNote::Unclaimed(worker) => tracing::warn!(
                term,
                worker = %worker,
                "a heartbeat under an id nobody claimed: it is no worker"
            ),
            CalculatorNote::RebalanceFailed { retry_in } => {
                tracing::debug!(term, ?retry_in, "rebalance failed; retried as a refresh");
            }
            CalculatorNote::StepWritten {
                changes,
                waiting_for,
            } => tracing::debug!(
                term,
                changes,
                waiting_for = %plain(&waiting_for),
                "handoff step written"
            ),
            CalculatorNote::HandoffComplete { took } => {
                tracing::info!(term, ?took, "handoff complete");
                telemetry::handoff(&session.worker_id, took);
            }
            CalculatorNote::TimedOut(call) => {
                let message = format!("no answer within the deadline ({call:?})");
                let error = match call {
                    CalculatorCall::Load | CalculatorCall::List => {
                        Error::Store(StoreError::unavailable(StoreOperation::Keys, message))
                    }
                    CalculatorCall::Write => Error::Store(StoreError::OutcomeUnknown {
                        operation: StoreOperation::Update,
                        bucket: session.buckets.assignment.name().to_owned(),
                        key: String::new(),
                        message,
                        source: None,
                    }),
                    CalculatorCall::Compute | CalculatorCall::Coverage => {
                        Error::Source(message.into())
                    }
                };
                session.report("the leader abandoned a call", error);
            }
        }
    }
}

/// The source's partitions, within `limit` (a source that hangs is a failure).
async fn partitions<B, P: PartitionSource>(
    session: &Session<B, P>,
    limit: Duration,
) -> Result<Vec<Partition>> {
    match timeout(limit, session.source.partitions()).await {
        Ok(Ok(partitions)) => Ok(partitions),
        Ok(Err(e)) => Err(Error::Source(e)),
        Err(_) => Err(Error::Source(format!("no answer within {limit:?}").into())),
    }
}

/// The next change notice of the partition source: `Some(true)` a change, `Some(false)`
/// the source stopped sending; pending forever without a subscription. Cancel-safe.
async fn source_changed(changes: &mut Option<watch::Receiver<u64>>) -> Option<bool> {
    match changes {
        Some(changes) => Some(changes.changed().await.is_ok()),
        None => std::future::pending().await,
    }
}

/// The heartbeats of one listing by worker; keys holding something else go to
/// `unreadable`.
fn read_listing(
    entries: &[Entry],
    unreadable: &mut BTreeMap<WorkerId, WireError>,
) -> BTreeMap<WorkerId, Beat> {
    let mut present = BTreeMap::new();
    for entry in entries {
        let Some(worker) = worker_of(&entry.key) else {
            continue;
        };
        match beat(entry) {
            Ok(beat) => {
                present.insert(worker, beat);
            }
            Err(e) => {
                unreadable.insert(worker, e);
            }
        }
    }
    present
}

/// Every `period`, asks the store to keep the second heartbeat bucket's leader off the
/// first's node (each call bounded by `period`); failures are for the next round.
async fn keep_heartbeats_apart<B: Bucket>(first: B, second: B, period: Duration) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match timeout(period, second.keep_leader_apart_from(&first)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "keeping the heartbeat buckets' leaders apart failed")
            }
            Err(_) => tracing::debug!("keeping the heartbeat buckets' leaders apart timed out"),
        }
    }
}

/// The next delivery of a watch that may not exist (pending forever then). Cancel-safe.
async fn next_of<B: Bucket>(watch: &mut Option<KeyWatch<B>>) -> Option<Delivery> {
    match watch {
        Some(watch) => Some(watch.next().await),
        None => std::future::pending().await,
    }
}

/// A heartbeat entry as the calculator sees it (`Err`: the value is not a heartbeat).
fn beat(entry: &Entry) -> std::result::Result<Beat, WireError> {
    Heartbeat::decode(&entry.value).map(|heartbeat| Beat {
        // The first write of a session names it by its own revision.
        holder: match heartbeat.session {
            0 => entry.revision.get().max(heartbeat.floor),
            session => session,
        },
        revision: entry.revision.get(),
        applied: heartbeat.applied_version,
        term_seen: heartbeat.term_seen,
        confirms_session: true,
    })
}

/// The heartbeat keys seen holding values that are not heartbeats, so that each is
/// reported once (again only after it held a heartbeat in between), not at every listing.
#[derive(Debug, Default)]
struct Garbage(Mutex<BTreeSet<WorkerId>>);

impl Garbage {
    fn seen<'a, B: Bucket, P>(
        &self,
        session: &Session<B, P>,
        unreadable: &BTreeMap<WorkerId, WireError>,
        readable: impl Iterator<Item = &'a WorkerId>,
    ) {
        let mut reported = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for worker in readable {
            reported.remove(worker);
        }
        let new: Vec<(&WorkerId, &WireError)> = unreadable
            .iter()
            .filter(|(worker, _)| reported.insert((*worker).clone()))
            .collect();
        drop(reported);
        for (worker, error) in new {
            session.report(
                &format!("{worker}: a heartbeat key holds a value that is not a heartbeat; it counts as no worker"),
                Error::Corrupt {
                    bucket: session.buckets.heartbeat.name().to_owned(),
                    key: worker.to_string(),
                    source: error.clone(),
                },
            );
        }
    }
}

/// The worker a key of the heartbeat or ids bucket belongs to (`None`: not a worker key).
/// Worker ids for a log line, as plain names: `worker-1, worker-2` (not
/// `[WorkerId("worker-1"), …]`).
fn plain(workers: &[WorkerId]) -> String {
    let names: Vec<&str> = workers.iter().map(WorkerId::as_str).collect();
    names.join(", ")
}

fn worker_of(key: &str) -> Option<WorkerId> {
    worker_number(key).map(|_| WorkerId::new(key))
}

fn retry_delay(interval: Duration) -> Duration {
    (interval / 2).max(Duration::from_millis(10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_ids_are_logged_as_plain_names() {
        let workers = [WorkerId::new("worker-1"), WorkerId::new("worker-12")];
        assert_eq!(plain(&workers), "worker-1, worker-12");
        assert_eq!(plain(&[]), "");
    }
}
