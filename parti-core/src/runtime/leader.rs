//! The leader's calculator: a thin shell that feeds heartbeats, refresh requests and time to
//! the pure [`decide`](crate::decide) logic and carries out its decisions with the strategy
//! and the publisher.
//!
//! Heartbeats arrive by watch (the fast path) and by listing every `heartbeat_interval / 2`
//! (the safety net, and the way to notice expiry on a backend that cannot report it).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use parti_strategy::{Assignment, PartitionId, StrategyInput, Worker, WorkerId};
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until};

use super::PartitionSource;
use super::context::{Session, next_event};
use super::election::Lease;
use super::publish::Records;
use crate::decide::{
    CalculatorPhase, Decision, EmergencyDetector, RebalanceReason, RebalanceScheduler,
    WindowPolicy, classify,
};
use crate::store::{Bucket, WatchEvent, WatchFrom};
use crate::telemetry;
use crate::wire::{Lifecycle, REFRESH_KEY, WORKER_ID_PREFIX, worker_number};
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
        match Records::load(&session.buckets.assignment, report).await {
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
        current: records.assignment(),
        members: records.workers(),
        live: BTreeSet::new(),
        detector: EmergencyDetector::new(config.emergency_grace),
        scheduler: RebalanceScheduler::new(WindowPolicy {
            cold_start_window: config.cold_start_window,
            planned_scale_window: config.planned_scale_window,
            cooldown: config.cooldown,
        }),
        records,
        wake: None,
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
    /// The assignment last published (or read from the records).
    current: Assignment,
    /// The workers the current plan counts in.
    members: BTreeSet<WorkerId>,
    /// The workers with a live heartbeat.
    live: BTreeSet<WorkerId>,
    detector: EmergencyDetector,
    scheduler: RebalanceScheduler,
    /// When the scheduler asked to be polled.
    wake: Option<Instant>,
}

impl<B: Bucket, P: PartitionSource> Calculator<B, P> {
    async fn run(&mut self) {
        let poll = self.session.config.heartbeat_poll_interval();
        let buckets = self.session.buckets.clone();
        if !self.records.is_empty() {
            // A fleet that already holds assignments: no cold start; planned changes
            // respect the cooldown from now.
            self.scheduler.resume_after(Instant::now().into_std());
            let decision = self.check_coverage().await;
            self.carry_out(decision).await;
        }
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
            }
            let deadline = [
                self.wake,
                self.detector.next_deadline().map(Instant::from_std),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(next_poll)
            .min(next_poll);
            let decision = tokio::select! {
                event = next_event(&mut heartbeats) => {
                    match event {
                        Some(Ok(WatchEvent::Put(entry))) => {
                            if let Some(worker) = heartbeat_worker(&entry.key) {
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
                        self.list_heartbeats().await;
                    }
                    match self.observe() {
                        Decision::Nothing => self.scheduler.poll(Instant::now().into_std()),
                        decision => decision,
                    }
                }
            };
            self.carry_out(decision).await;
        }
    }

    async fn list_heartbeats(&mut self) {
        match self.session.buckets.heartbeat.keys(WORKER_ID_PREFIX).await {
            Ok(keys) => self.live = keys.iter().filter_map(|k| heartbeat_worker(k)).collect(),
            Err(e) => self.session.report("listing heartbeats failed", e),
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

    async fn partitions(&self) -> Result<Vec<parti_strategy::Partition>> {
        self.session
            .source
            .partitions()
            .await
            .map_err(Error::Source)
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
                        self.session.report("rebalance failed", e);
                        // Try again shortly as a refresh (at once, after re-reading).
                        sleep(retry_delay(self.session.config.heartbeat_interval)).await;
                        self.reload().await;
                        let now = Instant::now().into_std();
                        self.scheduler.finished(now);
                        decision = self.scheduler.on_refresh(now);
                        continue;
                    }
                    decision = self.scheduler.finished(Instant::now().into_std());
                }
            }
        }
    }

    fn publish_phase(&self) {
        let lifecycle = match self.scheduler.phase() {
            CalculatorPhase::Idle => Lifecycle::Stable,
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

    async fn reload(&mut self) {
        let report = |e| {
            self.session
                .report("reading the assignment records failed", e)
        };
        if let Ok(records) = Records::load(&self.session.buckets.assignment, report).await {
            self.current = records.assignment();
            self.records = records;
        }
    }

    async fn rebalance(&mut self, reason: RebalanceReason) -> Result<()> {
        let started = Instant::now();
        let partitions = self.partitions().await?;
        if self.members.is_empty() {
            tracing::info!(
                term = self.term,
                reason = reason.as_str(),
                "no workers to assign to"
            );
            return Ok(());
        }
        let workers: Vec<Worker> = self.members.iter().cloned().map(Worker::new).collect();
        let input = StrategyInput::new(&workers, &partitions).with_previous(&self.current);
        let next = self.session.strategy.assign(&input)?;
        let moved = moved(&self.current, &next);
        let lifecycle = match reason {
            RebalanceReason::Emergency | RebalanceReason::Refresh => Lifecycle::Emergency,
            _ => Lifecycle::Rebalancing,
        };
        let lease = self.lease.clone();
        let published = self
            .records
            .publish(
                &self.session.buckets.assignment,
                &next,
                &self.members,
                self.term,
                lifecycle,
                || lease.is_valid(),
            )
            .await?;
        tracing::info!(
            term = self.term,
            reason = reason.as_str(),
            version = published.version,
            workers = self.members.len(),
            partitions = partitions.len(),
            moved,
            written = published.written,
            deleted = published.deleted,
            "published assignment"
        );
        telemetry::rebalance(
            &self.session.worker_id,
            reason,
            started.elapsed(),
            moved,
            self.members.len(),
        );
        self.current = next;
        Ok(())
    }
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
