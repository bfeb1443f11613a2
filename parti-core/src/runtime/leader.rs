//! The leader's calculator: a thin shell that feeds heartbeats, refresh requests and time to
//! the pure [`decide`](crate::decide) logic and carries out its decisions with the strategy
//! and the publisher.
//!
//! Heartbeats arrive by watch (the fast path) and by listing every `heartbeat_interval / 2`
//! (the safety net, and the way to notice expiry on a backend that cannot report it). They
//! also carry each worker's applied version, which is what the [handoff
//! planner](crate::decide::Handoff) waits for before granting a moved partition: every
//! rebalance only sets a target, and the records move towards it in safe steps.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use parti_strategy::{Assignment, Partition, PartitionId, StrategyInput, Worker, WorkerId};
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until, timeout};

use super::PartitionSource;
use super::context::{Session, next_event, within};
use super::election::Lease;
use super::publish::Records;
use crate::decide::{
    Backoff, CalculatorPhase, Decision, EmergencyDetector, Handoff, RebalanceReason,
    RebalanceScheduler, WindowPolicy, classify,
};
use crate::store::Operation::{Keys, Update};
use crate::store::{Bucket, WatchEvent, WatchFrom};
use crate::telemetry;
use crate::wire::{Heartbeat, Lifecycle, REFRESH_KEY, WORKER_ID_PREFIX, WireRecord, worker_number};
use crate::{Error, Result};

/// Runs the calculator of the leader of `term` until aborted (by the election, when the
/// lease ends).
pub(crate) async fn run<B: Bucket, P: PartitionSource>(
    session: Arc<Session<B, P>>,
    term: u64,
    lease: Arc<Lease>,
    phase: watch::Sender<Lifecycle>,
) {
    let poll = session.config.heartbeat_poll_interval();
    let records = loop {
        let report = |e| session.report("reading the assignment records failed", e);
        let bucket = &session.buckets.assignment;
        let load = Records::load(bucket, report);
        match within(session.config.heartbeat_ttl, Keys, bucket.name(), "", load).await {
            Ok(records) => break records,
            Err(e) => session.report("reading the assignment records failed", e),
        }
        sleep(poll).await;
    };
    let config = &session.config;
    let mut calculator = Calculator {
        term,
        lease,
        phase,
        target: records.assignment(),
        members: records.workers(),
        handoff: Handoff::resume(records.contents()),
        handing_off: None,
        retry_handoff: None,
        live: BTreeSet::new(),
        detector: EmergencyDetector::new(config.emergency_grace),
        scheduler: RebalanceScheduler::new(WindowPolicy {
            cold_start_window: config.cold_start_window,
            planned_scale_window: config.planned_scale_window,
            cooldown: config.cooldown,
        }),
        records,
        wake: None,
        last_partitions: None,
        retry_refresh: None,
        source_backoff: Backoff::new(
            retry_delay(config.heartbeat_interval),
            config.heartbeat_ttl.max(config.heartbeat_interval),
            worker_number(session.worker_id.as_str())
                .unwrap_or(0)
                .into(),
        ),
        session,
    };
    calculator.run().await;
}

struct Calculator<B, P> {
    session: Arc<Session<B, P>>,
    term: u64,
    lease: Arc<Lease>,
    phase: watch::Sender<Lifecycle>,
    records: Records,
    /// The assignment aimed at (at first, what the records say).
    target: Assignment,
    /// Moves the records towards `target` without granting anything still held elsewhere.
    handoff: Handoff,
    /// The lifecycle of the rebalance whose handoff is still under way, and when it began.
    handing_off: Option<(Lifecycle, Instant)>,
    /// When to try the handoff's writes again after a failure.
    retry_handoff: Option<Instant>,
    /// The workers the current plan counts in.
    members: BTreeSet<WorkerId>,
    /// The workers with a live heartbeat.
    live: BTreeSet<WorkerId>,
    detector: EmergencyDetector,
    scheduler: RebalanceScheduler,
    /// When the scheduler asked to be polled.
    wake: Option<Instant>,
    /// The partitions the source gave last: what a rebalance uses while the source fails.
    last_partitions: Option<Vec<Partition>>,
    /// When to ask the source again after it failed (a refresh then).
    retry_refresh: Option<Instant>,
    /// How long to wait between failed source or strategy calls.
    source_backoff: Backoff,
}

impl<B: Bucket, P: PartitionSource> Calculator<B, P> {
    async fn run(&mut self) {
        let poll = self.session.config.heartbeat_poll_interval();
        let buckets = self.session.buckets.clone();
        let mut heartbeats = None;
        let mut refreshes = None;
        // The first listing happens once the watch is set up, so nothing falls in between.
        let mut next_poll = Instant::now();
        let mut first = true;
        loop {
            if heartbeats.is_none() {
                match buckets
                    .heartbeat
                    .watch(WORKER_ID_PREFIX, WatchFrom::Now)
                    .await
                {
                    Ok(stream) => heartbeats = Some(stream),
                    Err(e) => self.session.report("watching heartbeats failed", e),
                }
            }
            if refreshes.is_none() {
                match buckets.election.watch(REFRESH_KEY, WatchFrom::Now).await {
                    Ok(stream) => refreshes = Some(stream),
                    Err(e) => self.session.report("watching refresh requests failed", e),
                }
            }
            if std::mem::take(&mut first) {
                self.list_heartbeats().await;
                next_poll = Instant::now() + poll;
                if !self.records.is_empty() {
                    self.resume().await;
                }
            }
            let deadline = [
                self.wake,
                self.retry_handoff,
                self.retry_refresh,
                self.detector.next_deadline().map(Instant::from_std),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(next_poll)
            .min(next_poll);
            let decision = tokio::select! {
                biased;
                event = next_event(&mut heartbeats) => {
                    match event {
                        Some(Ok(WatchEvent::Put(entry))) => {
                            if let Some(worker) = heartbeat_worker(&entry.key) {
                                let applied = applied_version(&entry.value);
                                self.records.raise_version(applied);
                                if self.handoff.applied(&worker, applied) {
                                    self.advance().await;
                                }
                                self.live.insert(worker);
                            }
                        }
                        Some(Ok(WatchEvent::Delete { key, .. })) => {
                            self.live.remove(&WorkerId::new(&key));
                        }
                        Some(Err(e)) => {
                            self.session.report("heartbeat watch failed", e);
                            heartbeats = None;
                        }
                        None => heartbeats = None,
                    }
                    self.observe()
                }
                event = next_event(&mut refreshes) => match event {
                    Some(Ok(WatchEvent::Put(entry))) if entry.key == REFRESH_KEY => {
                        tracing::info!(term = self.term, "partition refresh requested");
                        self.scheduler.on_refresh(Instant::now().into_std())
                    }
                    Some(Ok(_)) => Decision::Nothing,
                    Some(Err(e)) => {
                        self.session.report("refresh watch failed", e);
                        refreshes = None;
                        Decision::Nothing
                    }
                    None => {
                        refreshes = None;
                        Decision::Nothing
                    }
                },
                () = sleep_until(deadline) => {
                    if Instant::now() >= next_poll {
                        next_poll = Instant::now() + poll;
                        if self.list_heartbeats().await {
                            self.advance().await;
                        }
                    }
                    if self.retry_handoff.is_some_and(|at| Instant::now() >= at) {
                        self.retry_handoff = None;
                        self.advance().await;
                    }
                    let retry = self.retry_refresh.is_some_and(|at| Instant::now() >= at);
                    match self.observe() {
                        Decision::Nothing if retry => {
                            self.retry_refresh = None;
                            self.scheduler.on_refresh(Instant::now().into_std())
                        }
                        Decision::Nothing => self.scheduler.poll(Instant::now().into_std()),
                        decision => decision,
                    }
                }
            };
            self.carry_out(decision).await;
        }
    }

    /// A new leader of a fleet that already holds assignments: no cold start, planned
    /// changes respect the cooldown from now, every record is stamped with this term (so
    /// workers re-reading one accept it), and records that do not cover the partitions
    /// exactly (a predecessor's half-done handoff) lead to a rebalance at once.
    async fn resume(&mut self) {
        self.scheduler.resume_after(Instant::now().into_std());
        self.handoff.rewrite_all();
        self.handoff.plan(self.members.clone(), &self.target);
        self.advance().await;
        let decision = self.check_coverage().await;
        self.carry_out(decision).await;
    }

    /// Lists the heartbeats: the live set, and for the handoff, who reported what and who
    /// is absent. Returns whether that confirmed a worker's release.
    async fn list_heartbeats(&mut self) -> bool {
        let ticket = self.handoff.listing_ticket();
        // Bounded: a listing that hangs (a stream electing its leader) is retried at the
        // next poll rather than holding the calculator.
        let limit = self.session.config.heartbeat_interval;
        let bucket = &self.session.buckets.heartbeat;
        let listing = bucket.entries(WORKER_ID_PREFIX);
        match within(limit, Keys, bucket.name(), WORKER_ID_PREFIX, listing).await {
            Ok(entries) => {
                let present: BTreeMap<WorkerId, u64> = entries
                    .iter()
                    .filter_map(|entry| {
                        let worker = heartbeat_worker(&entry.key)?;
                        Some((worker, applied_version(&entry.value)))
                    })
                    .collect();
                if let Some(highest) = present.values().max() {
                    self.records.raise_version(*highest);
                }
                self.live = present.keys().cloned().collect();
                self.handoff.listed(ticket, &present)
            }
            Err(e) => {
                self.session.report("listing heartbeats failed", e);
                false
            }
        }
    }

    /// Feeds the live set to the detector and the scheduler.
    fn observe(&mut self) -> Decision {
        let now = Instant::now().into_std();
        let lost = self.detector.observe(&self.members, &self.live, now);
        let joined: Vec<WorkerId> = self.live.difference(&self.members).cloned().collect();
        if lost.is_empty() && joined.is_empty() {
            return Decision::Nothing;
        }
        let mut next = self.members.clone();
        for worker in &lost {
            next.remove(worker);
        }
        next.extend(joined);
        let Some(change) = classify(&self.members, &next, self.session.config.restart_ratio) else {
            return Decision::Nothing;
        };
        tracing::info!(
            term = self.term,
            kind = change.kind.as_str(),
            joined = ?change.joined,
            left = ?change.left,
            "topology change"
        );
        self.members = next;
        // Lost workers are out of the plan; forget them so a return counts as a join.
        self.detector.observe(&self.members, &self.live, now);
        self.scheduler.on_change(change.kind, now)
    }

    /// A new leader checks that the records cover the partitions exactly once.
    async fn check_coverage(&mut self) -> Decision {
        match self.partitions().await {
            Ok(partitions) => {
                let ids: BTreeSet<PartitionId> =
                    partitions.iter().map(|p| p.id().clone()).collect();
                if self.records.covers_exactly(&ids) {
                    Decision::Nothing
                } else {
                    self.scheduler.on_refresh(Instant::now().into_std())
                }
            }
            Err(e) => {
                self.session.report("reading partitions failed", e);
                self.scheduler.on_refresh(Instant::now().into_std())
            }
        }
    }

    /// The source's partitions, within `heartbeat_ttl` (a source that hangs is a failure).
    /// Success is remembered: a rebalance while the source fails uses the last good list.
    async fn partitions(&mut self) -> Result<Vec<Partition>> {
        let limit = self.session.config.heartbeat_ttl;
        let partitions = match timeout(limit, self.session.source.partitions()).await {
            Ok(Ok(partitions)) => partitions,
            Ok(Err(e)) => return Err(Error::Source(e)),
            Err(_) => {
                return Err(Error::Source(format!("no answer within {limit:?}").into()));
            }
        };
        self.last_partitions = Some(partitions.clone());
        Ok(partitions)
    }

    /// The partitions to plan with: the source's, or while it fails the last good ones (and
    /// a refresh is scheduled).
    async fn partitions_or_last(&mut self) -> Result<Vec<Partition>> {
        match self.partitions().await {
            Ok(partitions) => Ok(partitions),
            Err(e) => match self.last_partitions.clone() {
                Some(last) => {
                    self.session
                        .report("reading partitions failed; using the last good list", e);
                    self.schedule_retry();
                    Ok(last)
                }
                None => Err(e),
            },
        }
    }

    /// Asks for a refresh after the next backoff delay.
    fn schedule_retry(&mut self) {
        let at = Instant::now() + self.source_backoff.next_delay();
        self.retry_refresh = Some(self.retry_refresh.map_or(at, |current| current.min(at)));
    }

    /// Carries out a decision and every one that follows from it.
    async fn carry_out(&mut self, mut decision: Decision) {
        loop {
            self.publish_phase();
            match decision {
                Decision::Nothing => return,
                Decision::WakeAt(at) => {
                    self.wake = Some(Instant::from_std(at));
                    return;
                }
                Decision::Rebalance(reason) => {
                    self.wake = None;
                    if let Err(e) = self.rebalance(reason).await {
                        // A retry as data: the main loop asks again (as a refresh) at the
                        // deadline, and goes on observing meanwhile.
                        self.session.report("rebalance failed", e);
                        self.schedule_retry();
                    }
                    decision = self.scheduler.finished(Instant::now().into_std());
                }
            }
        }
    }

    fn publish_phase(&self) {
        let lifecycle = match self.scheduler.phase() {
            CalculatorPhase::Idle => self.handing_off.map_or(Lifecycle::Stable, |(l, _)| l),
            CalculatorPhase::Scaling => Lifecycle::Scaling,
            CalculatorPhase::Rebalancing => Lifecycle::Rebalancing,
            CalculatorPhase::Emergency => Lifecycle::Emergency,
        };
        self.phase.send_if_modified(|current| {
            let changed = *current != lifecycle;
            *current = lifecycle;
            changed
        });
    }

    /// After a failed write: re-read the records and tell the planner what they are.
    async fn reload(&mut self) {
        let report = |e| {
            self.session
                .report("reading the assignment records failed", e)
        };
        let bucket = &self.session.buckets.assignment;
        let load = Records::load(bucket, report);
        let limit = self.session.config.heartbeat_ttl;
        if let Ok(records) = within(limit, Keys, bucket.name(), "", load).await {
            self.handoff.reconcile(records.contents());
            let version = self.records.version().max(records.version());
            self.records = records;
            self.records.raise_version(version);
        }
    }

    /// Writes every step the handoff planner allows now. After writes that revoke, a fresh
    /// heartbeat listing may confirm releases at once (a crashed worker is absent), so the
    /// next step can grant.
    async fn advance(&mut self) {
        let lifecycle = self.handing_off.map_or(Lifecycle::Stable, |(l, _)| l);
        for round in 0.. {
            if round == MAX_STEPS_PER_ADVANCE {
                // Go on at the next turn of the loop, after the events waiting.
                self.retry_handoff = Some(Instant::now());
                return;
            }
            let step = self.handoff.step();
            if step.is_empty() {
                break;
            }
            let lease = self.lease.clone();
            let limit = self.session.config.heartbeat_ttl;
            let write = self.records.write(
                &self.session.buckets.assignment,
                &step,
                &mut self.handoff,
                self.term,
                lifecycle,
                || lease.is_valid(),
            );
            // Bounded: a write cut here has an unknown outcome, like a timed-out one; the
            // records are re-read below before anything else is written.
            let bucket = self.session.buckets.assignment.name();
            let written = within(limit, Update, bucket, "", write).await;
            match written {
                Ok(published) => tracing::debug!(
                    term = self.term,
                    version = published.version,
                    written = published.written,
                    deleted = published.deleted,
                    waiting_for = ?self.handoff.waiting_for().collect::<Vec<_>>(),
                    "handoff step"
                ),
                Err(e) => {
                    self.session.report("writing assignment records failed", e);
                    self.reload().await;
                    self.retry_handoff =
                        Some(Instant::now() + retry_delay(self.session.config.heartbeat_interval));
                    return;
                }
            }
            if self.handoff.waiting_for().next().is_some() {
                self.list_heartbeats().await;
            }
        }
        if let Some((_, began)) = self.handing_off {
            if self.handoff.is_settled() {
                tracing::info!(term = self.term, took = ?began.elapsed(), "handoff complete");
                telemetry::handoff(&self.session.worker_id, began.elapsed());
                self.handing_off = None;
                self.publish_phase();
            }
        }
    }

    async fn rebalance(&mut self, reason: RebalanceReason) -> Result<()> {
        let started = Instant::now();
        // An emergency never waits on the source: the partitions of a lost worker are
        // re-owned from the list known already (a changed list comes with a refresh).
        let partitions = match (&reason, &self.last_partitions) {
            (RebalanceReason::Emergency, Some(last)) => last.clone(),
            _ => self.partitions_or_last().await?,
        };
        if self.members.is_empty() {
            // Keep the records: returning workers get their partitions back unmoved.
            tracing::info!(
                term = self.term,
                reason = reason.as_str(),
                "no workers to assign to"
            );
            return Ok(());
        }
        let workers: Vec<Worker> = self.members.iter().cloned().map(Worker::new).collect();
        let input = StrategyInput::new(&workers, &partitions).with_previous(&self.target);
        // The strategy may be the user's: a panic is a failure to retry, not the end of the
        // calculator.
        let strategy = &self.session.strategy;
        let next = catch_unwind(AssertUnwindSafe(|| strategy.assign(&input)))
            .map_err(|_| Error::StrategyPanicked)??;
        if self.retry_refresh.is_none() {
            self.source_backoff.reset();
        }
        let moved = moved(&self.target, &next);
        let lifecycle = match reason {
            RebalanceReason::Emergency | RebalanceReason::Refresh => Lifecycle::Emergency,
            _ => Lifecycle::Rebalancing,
        };
        let began = self.handing_off.map_or(started, |(_, began)| began);
        self.handing_off = Some((lifecycle, began));
        self.handoff.plan(self.members.clone(), &next);
        self.target = next;
        self.advance().await;
        tracing::info!(
            term = self.term,
            reason = reason.as_str(),
            workers = self.members.len(),
            partitions = partitions.len(),
            moved,
            waiting_for = ?self.handoff.waiting_for().collect::<Vec<_>>(),
            "planned assignment"
        );
        telemetry::rebalance(
            &self.session.worker_id,
            reason,
            started.elapsed(),
            moved,
            self.members.len(),
        );
        Ok(())
    }
}

/// Write rounds per call of `advance` before it yields to other events (each round needs a
/// confirmation the previous one produced, so more than a few in a row is unusual).
const MAX_STEPS_PER_ADVANCE: usize = 8;

/// The applied version a heartbeat reports (0 if unreadable: it confirms nothing).
fn applied_version(value: &[u8]) -> u64 {
    Heartbeat::decode(value).map_or(0, |beat| beat.applied_version)
}

/// Partitions whose owner changed (partitions added or removed do not count).
fn moved(previous: &Assignment, next: &Assignment) -> usize {
    next.iter()
        .filter(|(p, owner)| previous.owner(p).is_some_and(|old| old != *owner))
        .count()
}

fn heartbeat_worker(key: &str) -> Option<WorkerId> {
    worker_number(key).map(|_| WorkerId::new(key))
}

fn retry_delay(interval: Duration) -> Duration {
    (interval / 2).max(Duration::from_millis(10))
}
