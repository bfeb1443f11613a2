//! The leader's calculator as a machine with no I/O and no clock: it observes heartbeats
//! (by watch and by listing), classifies topology changes, asks for rebalances when the
//! [`RebalanceScheduler`] says so, and moves the records towards the target in the steps
//! the [`Handoff`] planner allows. The runtime's executor feeds it events with the time,
//! carries out the [`CalculatorAction`]s it returns (one store call or computation at a
//! time; heartbeats keep arriving meanwhile) and wakes it at
//! [`CalculatorMachine::next_deadline`].
//!
//! The rules:
//! - it never stops observing: every call has a deadline (listings a heartbeat interval,
//!   everything else `heartbeat_ttl`), and a failure is a retry scheduled as data (the
//!   handoff after a short delay; the source with capped exponential backoff, as a refresh);
//! - an emergency never waits on the source: it plans with the last good partition list;
//!   while the source fails every rebalance uses that list (and a refresh is scheduled);
//! - after a write fails or is abandoned its outcome is unknown: the records are read back
//!   and the planner reconciled before anything else is written;
//! - after a write that revokes, the heartbeats are listed at once, so a crashed worker's
//!   absence confirms its release and the next step can grant; so they are when a worker
//!   the handoff waits for is seen gone;
//! - a new leader counts no worker absent before its first *answered* listing (what the
//!   watch showed until then proves nobody's absence);
//! - otherwise heartbeats are listed every `poll_interval` only while the watch is silent
//!   (it delivers nothing for a heartbeat TTL — every live worker, the leader included,
//!   writes one per interval, so a working watch is never silent that long); while it
//!   delivers, every `backstop_interval`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use parti_strategy::{Assignment, Partition, WorkerId};

use super::Machine;
use super::op::{OpId, OpIds};
use super::{
    Backoff, Beat, ChangeKind, Decision, EmergencyDetector, Handoff, ListingTicket,
    RebalanceReason, RebalanceScheduler, RecordChange, Slot, Step, StoredRecord, WindowPolicy,
    classify,
};
use crate::wire::Lifecycle;

/// The timings and policies the calculator works with (from
/// [`Config`](crate::config::Config)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalculatorTimings {
    /// How often heartbeats are listed while their watch is silent (and the longest a
    /// listing may take).
    pub poll_interval: Duration,
    /// How often heartbeats are listed while their watch delivers.
    pub backstop_interval: Duration,
    /// Whether heartbeats go to two buckets, each with its own watch
    /// ([`Config::writes_two_heartbeats`](crate::config::Config::writes_two_heartbeats)):
    /// then either watch silent makes the listings frequent.
    pub two_heartbeats: bool,
    /// The longest any other call may take (`heartbeat_ttl`).
    pub call_timeout: Duration,
    /// The heartbeat TTL: after the heartbeat bucket is lost, how long absence proves
    /// nothing.
    pub heartbeat_ttl: Duration,
    /// How long to wait before writing again after a failed write.
    pub retry: Duration,
    /// How long a worker may be missing before it counts as lost.
    pub emergency_grace: Duration,
    /// The share of the fleet that, gone together, counts as a restart.
    pub restart_ratio: f64,
    /// How long a parked worker (stopped gracefully, expected back) stays in the plan.
    pub restart_grace: Duration,
    /// The id claims' TTL (`id_ttl`): after the claims could not be watched, how long a
    /// heartbeat needs no claim to count (every live worker's renewal has written its
    /// claim again by then).
    pub claim_ttl: Duration,
    /// The windows and the cooldown.
    pub windows: WindowPolicy,
}

/// The assignment records as read from the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordsRead {
    /// Each record (an unreadable one at version `u64::MAX`, granting nothing).
    pub contents: Vec<StoredRecord>,
    /// Who owns what by the records (the first record naming a partition wins).
    pub assignment: Assignment,
    /// The highest leader term any record was written under.
    pub highest_term: u64,
}

/// A rebalance computed: the strategy's assignment and the partitions it used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Computed {
    /// The new target.
    pub assignment: Assignment,
    /// The partitions it assigns.
    pub partitions: Vec<Partition>,
    /// Whether the source failed and the last good list was used.
    pub source_failed: bool,
}

/// A record change written by a [`CalculatorAction::Write`].
pub type Committed = (WorkerId, RecordChange, u64);

/// What happened, fed to [`CalculatorMachine::handle`].
#[derive(Debug, Clone, PartialEq)]
pub enum CalculatorEvent {
    /// The records were read (at the start, or after a write failed).
    Loaded {
        /// The read.
        op: OpId,
        /// What was read (`Err`: failed, already reported).
        outcome: Result<RecordsRead, ()>,
    },
    /// A heartbeat listing finished: the workers present and the version each reported.
    Listed {
        /// The listing.
        op: OpId,
        /// The readable heartbeats, by worker (`Err`: the listing failed, already
        /// reported).
        outcome: Result<BTreeMap<WorkerId, Beat>, ()>,
        /// Workers whose heartbeat key holds a value that is not a heartbeat. They are not
        /// live (garbage is no worker), but not absent either: a worker whose key is present
        /// is never confirmed released by its absence.
        unreadable: BTreeSet<WorkerId>,
        /// Whether the listing failed because the heartbeat bucket was gone (it is created
        /// again: see [`LostBucket::Heartbeats`]).
        bucket_lost: bool,
    },
    /// A step was written, completely or (`failed`) up to a failure; `committed` are the
    /// changes that were acknowledged, in order.
    Written {
        /// The write.
        op: OpId,
        /// The changes acknowledged.
        committed: Vec<Committed>,
        /// Whether it stopped at a failure (already reported).
        failed: bool,
    },
    /// A rebalance was computed (`Err`: the source failed with no list to fall back on,
    /// or the strategy failed; already reported).
    Computed {
        /// The computation.
        op: OpId,
        /// Its result.
        outcome: Result<Computed, ()>,
    },
    /// A new leader's coverage check finished: whether the records cover the source's
    /// partitions exactly, and those partitions (`Err`: the source failed).
    Covered {
        /// The check.
        op: OpId,
        /// Its result.
        outcome: Result<(bool, Vec<Partition>), ()>,
    },
    /// A heartbeat watch saw a worker's heartbeat (`None`: the value is not a heartbeat;
    /// it makes nobody live).
    Heartbeat {
        /// The worker.
        worker: WorkerId,
        /// The heartbeat (with two buckets, what both show: see
        /// [`HeartbeatView`](super::HeartbeatView)).
        beat: Option<Beat>,
        /// The bucket whose watch saw it.
        via: Slot,
    },
    /// A heartbeat watch (of the bucket in the slot) saw a worker's heartbeat expire (or
    /// go, for a reason it cannot tell), and no bucket holds one.
    HeartbeatGone(WorkerId, Slot),
    /// A heartbeat watch saw a worker's heartbeat deleted: the worker stopped gracefully.
    /// Like [`HeartbeatGone`](Self::HeartbeatGone), but the worker is lost with no
    /// `emergency_grace` and its departure is a [`ChangeKind::Leave`], not an emergency.
    HeartbeatDeleted(WorkerId, Slot),
    /// The heartbeat watch was set up (again): what changed while it was down is for a
    /// listing to find.
    HeartbeatWatchStarted,
    /// The id claim of `worker` was seen: only a claimed id's heartbeat makes a worker
    /// join the plan. `parked`: a worker with a static identity stopped gracefully and is
    /// expected back; it stays in the plan, its partitions waiting for it, for
    /// `restart_grace` (or until its claim is taken back or goes).
    Claimed {
        /// The worker id.
        worker: WorkerId,
        /// Whether the claim is parked.
        parked: bool,
    },
    /// The id claim of `worker` is gone.
    Unclaimed(WorkerId),
    /// The claims could not be watched (their bucket lost, or the watch failing): for
    /// `claim_ttl`, a heartbeat needs no claim to count.
    ClaimsUnknown,
    /// A bucket was found gone (deleted, or lost with a server restarted without its data).
    BucketLost(LostBucket),
    /// A heartbeat may have vanished before its TTL with no loss of the bucket seen: this
    /// process's own heartbeat did, or the process began less than a TTL ago (a loss just
    /// before it began is one it could not see). Until `until`, absence proves nothing:
    /// workers missing stay in the plan and no release is confirmed by it.
    AbsenceUnproven {
        /// When every lease of before has ended.
        until: Instant,
    },
    /// A partition refresh was requested.
    Refresh,
    /// The deadline passed (or the executor wants the machine to look at the time).
    Tick,
}

/// A protocol bucket the calculator depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostBucket {
    /// The heartbeats: entries may have vanished without expiring, so absence proves no
    /// release until every lease of before has ended.
    Heartbeats,
    /// The assignment records: they are read back and written again.
    Records,
}

/// What the machine asks the executor to do.
#[derive(Debug, Clone, PartialEq)]
pub enum CalculatorAction {
    /// Read the assignment records; answer with [`CalculatorEvent::Loaded`].
    Load(OpId),
    /// List the heartbeats; answer with [`CalculatorEvent::Listed`].
    List(OpId),
    /// Write a step at a version above `min_version` (and above every record); answer
    /// with [`CalculatorEvent::Written`].
    Write {
        /// The write.
        op: OpId,
        /// The records to change.
        step: Step,
        /// The phase written into the records.
        lifecycle: Lifecycle,
        /// The highest version a heartbeat reported: the new version goes above it.
        min_version: u64,
        /// The heartbeat session each written record is for (the worker's newest); a
        /// record keeps its tokens only if written for the same session.
        holders: BTreeMap<WorkerId, u64>,
    },
    /// Compute a rebalance with the strategy: the partitions from the source (within the
    /// call timeout), or `fallback` if it fails — or, with `source` false, `fallback`
    /// without asking; answer with [`CalculatorEvent::Computed`].
    Compute {
        /// The computation.
        op: OpId,
        /// Why.
        reason: RebalanceReason,
        /// The workers to assign to.
        workers: Vec<WorkerId>,
        /// The current target (for stickiness).
        previous: Assignment,
        /// The last good partition list.
        fallback: Option<Vec<Partition>>,
        /// Whether to ask the source.
        source: bool,
    },
    /// Check that the records cover the source's partitions exactly; answer with
    /// [`CalculatorEvent::Covered`].
    CheckCoverage(OpId),
    /// Abandon an operation; no answer expected.
    Cancel(OpId),
    /// Publish this phase (it goes into the leader record).
    Phase(Lifecycle),
    /// Step down: a term at least `above` exists (in the records or a worker's heartbeat)
    /// that this leader's term does not exceed — the election bucket was lost and its
    /// revisions started again. The calculator is finished; the next campaign takes a term
    /// above `above`.
    Resign {
        /// The highest term seen.
        above: u64,
    },
    /// Something to log or count.
    Note(CalculatorNote),
}

/// What the calculator tells the logs and the metrics.
#[derive(Debug, Clone, PartialEq)]
pub enum CalculatorNote {
    /// The live set changed the plan's members.
    TopologyChange {
        /// The kind of change.
        kind: ChangeKind,
        /// Workers that joined.
        joined: Vec<WorkerId>,
        /// Workers that left.
        left: Vec<WorkerId>,
    },
    /// A new target was planned.
    Planned {
        /// Why.
        reason: RebalanceReason,
        /// How many workers it assigns to.
        workers: usize,
        /// How many partitions.
        partitions: usize,
        /// How many changed owner.
        moved: usize,
        /// How long the computation took.
        took: Duration,
    },
    /// A rebalance was due but no worker is live: the records are kept.
    NoWorkers(RebalanceReason),
    /// A heartbeat under an id nobody claimed (a foreign writer's, say): it is no worker.
    /// Noted once per id (again only after the id was claimed in between).
    Unclaimed(WorkerId),
    /// A rebalance failed; it is retried as a refresh after `retry_in`.
    RebalanceFailed {
        /// Retried after this long.
        retry_in: Duration,
    },
    /// A handoff step was written.
    StepWritten {
        /// Records written or deleted.
        changes: usize,
        /// Workers whose release the handoff waits for.
        waiting_for: Vec<WorkerId>,
    },
    /// The records reached the target and every release is confirmed.
    HandoffComplete {
        /// Since the rebalance that began it.
        took: Duration,
    },
    /// A call ran into its deadline and was abandoned.
    TimedOut(CalculatorCall),
}

/// The kinds of calls the calculator makes, to name one that timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalculatorCall {
    /// Reading the assignment records.
    Load,
    /// Listing heartbeats.
    List,
    /// Writing a handoff step.
    Write,
    /// Computing a rebalance (the source and the strategy).
    Compute,
    /// A new leader's coverage check.
    Coverage,
}

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Load {
        id: OpId,
        deadline: Instant,
    },
    List {
        id: OpId,
        ticket: ListingTicket,
        deadline: Instant,
    },
    Write {
        id: OpId,
        deadline: Instant,
    },
    Compute {
        id: OpId,
        reason: RebalanceReason,
        started: Instant,
        deadline: Instant,
    },
    Coverage {
        id: OpId,
        deadline: Instant,
    },
}

impl Op {
    fn id(&self) -> OpId {
        match self {
            Op::Load { id, .. }
            | Op::List { id, .. }
            | Op::Write { id, .. }
            | Op::Compute { id, .. }
            | Op::Coverage { id, .. } => *id,
        }
    }

    fn deadline(&self) -> Instant {
        match self {
            Op::Load { deadline, .. }
            | Op::List { deadline, .. }
            | Op::Write { deadline, .. }
            | Op::Compute { deadline, .. }
            | Op::Coverage { deadline, .. } => *deadline,
        }
    }

    fn call(&self) -> CalculatorCall {
        match self {
            Op::Load { .. } => CalculatorCall::Load,
            Op::List { .. } => CalculatorCall::List,
            Op::Write { .. } => CalculatorCall::Write,
            Op::Compute { .. } => CalculatorCall::Compute,
            Op::Coverage { .. } => CalculatorCall::Coverage,
        }
    }
}

/// The leader's calculator: feed it [`CalculatorEvent`]s with the time, carry out the
/// [`CalculatorAction`]s it returns, and wake it at [`next_deadline`](Self::next_deadline).
///
/// ```
/// use std::time::{Duration, Instant};
/// use parti_core::decide::{
///     Backoff, CalculatorAction, CalculatorEvent, CalculatorMachine, CalculatorTimings,
///     Machine, RecordsRead, WindowPolicy,
/// };
///
/// let s = Duration::from_secs(1);
/// let timings = CalculatorTimings {
///     poll_interval: s / 2,
///     backstop_interval: 30 * s,
///     two_heartbeats: false,
///     call_timeout: 3 * s,
///     heartbeat_ttl: 3 * s,
///     retry: s / 2,
///     emergency_grace: s,
///     restart_ratio: 0.5,
///     restart_grace: 30 * s,
///     claim_ttl: 15 * s,
///     windows: WindowPolicy { cold_start_window: 30 * s, planned_scale_window: 10 * s, cooldown: 10 * s },
/// };
/// let t0 = Instant::now();
/// let mut calculator = CalculatorMachine::new(7, timings, Backoff::new(s / 2, 3 * s, 0), t0);
/// // It reads the records first, then lists the heartbeats.
/// let actions = calculator.handle(CalculatorEvent::Tick, t0);
/// let CalculatorAction::Load(load) = actions[0] else { panic!("loads first") };
/// let actions = calculator.handle(
///     CalculatorEvent::Loaded { op: load, outcome: Ok(RecordsRead::default()) },
///     t0,
/// );
/// assert!(matches!(actions[..], [CalculatorAction::List(_)]));
/// ```
#[derive(Debug, Clone)]
pub struct CalculatorMachine {
    term: u64,
    timings: CalculatorTimings,
    loaded: bool,
    /// The workers the plan counts in.
    members: BTreeSet<WorkerId>,
    /// The workers with a live heartbeat.
    live: BTreeSet<WorkerId>,
    /// The claimed worker ids.
    claimed: BTreeSet<WorkerId>,
    /// Until when a heartbeat needs no claim to count (the claims could not be watched).
    claims_unknown_until: Option<Instant>,
    /// Unclaimed ids with a heartbeat, already noted.
    unclaimed_noted: BTreeSet<WorkerId>,
    /// Workers that deleted their own heartbeat (a graceful stop) and were not seen live
    /// since: their departure is a leave, not an emergency.
    left_gracefully: BTreeSet<WorkerId>,
    /// Parked workers (stopped, expected back) and until when they stay in the plan.
    parked: BTreeMap<WorkerId, Instant>,
    /// After the heartbeat bucket was lost: until when absence proves nothing (workers
    /// missing meanwhile stay in the plan).
    blind_until: Option<Instant>,
    /// The heartbeat bucket was lost before the records were read (their sessions count as
    /// of before the loss).
    lost_before_load: bool,
    /// It stepped down (a higher term exists): it does nothing more.
    resigned: bool,
    /// The term that made it step down, until the action says so.
    resign_above: Option<u64>,
    detector: EmergencyDetector,
    scheduler: RebalanceScheduler,
    handoff: Handoff,
    /// The assignment aimed at.
    target: Assignment,
    /// The phase of the rebalance whose handoff is under way, and when it began.
    handing_off: Option<(Lifecycle, Instant)>,
    /// The last partitions the source gave.
    last_partitions: Option<Vec<Partition>>,
    source_backoff: Backoff,
    /// The highest applied version any heartbeat reported.
    highest_applied: u64,
    op: Option<Op>,
    ops: OpIds,
    /// When the scheduler asked to be polled.
    wake: Option<Instant>,
    /// When the last listing was asked for.
    last_listing: Instant,
    /// When each heartbeat watch last delivered (by [`Slot::index`]; the second unused
    /// with one bucket).
    last_delivery: [Option<Instant>; 2],
    /// When to try the handoff's writes again after a failure.
    retry_handoff: Option<Instant>,
    /// When to ask the source again after it failed (a refresh then).
    retry_refresh: Option<Instant>,
    /// Work waiting for the operation in flight to end: reading the records (at this
    /// instant; nothing is written while a read is wanted), listing, advancing the handoff,
    /// checking coverage, rebalancing.
    want_load: Option<Instant>,
    want_list: bool,
    want_advance: bool,
    want_coverage: bool,
    want_rebalance: Option<RebalanceReason>,
    /// Whether the first listing has been taken (a resume waits for it).
    listed_once: bool,
    /// The records were not empty at the start: a new leader resumes a fleet.
    resuming: bool,
    phase: Lifecycle,
}

impl CalculatorMachine {
    /// The calculator of the leader of `term`, starting at `now`.
    pub fn new(term: u64, timings: CalculatorTimings, backoff: Backoff, now: Instant) -> Self {
        Self {
            term,
            timings,
            loaded: false,
            members: BTreeSet::new(),
            live: BTreeSet::new(),
            claimed: BTreeSet::new(),
            claims_unknown_until: None,
            unclaimed_noted: BTreeSet::new(),
            left_gracefully: BTreeSet::new(),
            parked: BTreeMap::new(),
            blind_until: None,
            lost_before_load: false,
            resigned: false,
            resign_above: None,
            detector: EmergencyDetector::new(timings.emergency_grace),
            scheduler: RebalanceScheduler::new(timings.windows),
            handoff: Handoff::new(),
            target: Assignment::new(),
            handing_off: None,
            last_partitions: None,
            source_backoff: backoff,
            highest_applied: 0,
            op: None,
            ops: OpIds::default(),
            wake: None,
            last_listing: now,
            last_delivery: [None; 2],
            retry_handoff: None,
            retry_refresh: None,
            want_load: Some(now),
            want_list: false,
            want_advance: false,
            want_coverage: false,
            want_rebalance: None,
            listed_once: false,
            resuming: false,
            phase: Lifecycle::Stable,
        }
    }

    /// The term it calculates for.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// The phase it publishes.
    pub fn phase(&self) -> Lifecycle {
        self.phase
    }

    /// The workers the plan counts in.
    pub fn members(&self) -> &BTreeSet<WorkerId> {
        &self.members
    }

    /// The assignment aimed at.
    pub fn target(&self) -> &Assignment {
        &self.target
    }

    /// The handoff planner (what the records say, whom it waits for).
    pub fn handoff(&self) -> &Handoff {
        &self.handoff
    }

    fn take_op(&mut self, id: OpId) -> Option<Op> {
        match &self.op {
            Some(op) if op.id() == id => self.op.take(),
            _ => None,
        }
    }

    fn loaded_records(&mut self, outcome: Result<RecordsRead, ()>, now: Instant) {
        let Ok(read) = outcome else {
            // Try again after a poll interval; nothing is written meanwhile.
            self.want_load = Some(now + self.timings.poll_interval);
            return;
        };
        if self.loaded {
            // Read back after a failed write: the planner learns what the records are.
            self.handoff.reconcile(read.contents);
            return;
        }
        self.loaded = true;
        if read.highest_term >= self.term {
            // Written under a term this one does not exceed: another leader's, of a lost
            // election bucket. Records written now would be refused (or worse, accepted).
            self.resign(read.highest_term);
            return;
        }
        self.resuming = !read.contents.is_empty();
        self.members = read.contents.iter().map(|r| r.worker.clone()).collect();
        self.target = read.assignment;
        self.handoff = Handoff::resume(read.contents);
        if self.lost_before_load {
            // The heartbeat bucket was lost before the records were read.
            self.handoff.heartbeats_lost();
        }
        if self.blind_until.is_some() {
            self.handoff.distrust_absence();
        }
        self.highest_applied = 0;
        self.want_list = true;
    }

    /// The heartbeat bucket was lost: absence and new sessions prove nothing until every
    /// lease of before has ended, and workers missing meanwhile stay in the plan.
    fn heartbeats_lost(&mut self, now: Instant) {
        self.handoff.heartbeats_lost();
        self.lost_before_load |= !self.loaded;
        self.distrust_absence(now + self.timings.heartbeat_ttl);
    }

    /// Until `until`, absence proves nothing (see [`CalculatorEvent::AbsenceUnproven`]).
    fn distrust_absence(&mut self, until: Instant) {
        self.handoff.distrust_absence();
        self.blind_until = Some(self.blind_until.map_or(until, |at| at.max(until)));
    }

    fn resign(&mut self, above: u64) {
        self.resigned = true;
        self.op = None;
        self.resign_above = Some(above);
    }

    fn listed(
        &mut self,
        ticket: ListingTicket,
        outcome: Result<BTreeMap<WorkerId, Beat>, ()>,
        unreadable: &BTreeSet<WorkerId>,
        now: Instant,
        actions: &mut Vec<CalculatorAction>,
    ) {
        let answered = outcome.is_ok();
        if let Ok(beats) = outcome {
            if let Some(seen) = beats
                .values()
                .map(|b| b.term_seen)
                .max()
                .filter(|t| *t > self.term)
            {
                self.resign(seen);
                return;
            }
            if let Some(highest) = beats.values().map(|beat| beat.applied).max() {
                self.highest_applied = self.highest_applied.max(highest);
            }
            if self.blind_until.is_some() {
                // Absence proves nothing now: only arrivals count.
                self.live.extend(beats.keys().cloned());
            } else {
                self.live = beats.keys().cloned().collect();
            }
            // An unreadable key is present, reporting nothing: it confirms no release.
            if self.handoff.listed(ticket, &beats, unreadable) {
                self.want_advance = true;
            }
        }
        if !self.listed_once {
            // Only an answered listing is the first: until one, this leader has seen no
            // worker's absence (a failed first listing taken for one made a new leader, on
            // a cluster with a node down, find every worker of the fleet lost and revoke
            // everything). The next listing comes a poll interval on.
            if !answered {
                return;
            }
            self.listed_once = true;
            if self.resuming {
                self.resume(now);
            }
        }
        self.observe(now, actions);
    }

    /// A new leader of a fleet that already holds assignments: no cold start, planned
    /// changes respect the cooldown from now, every record is stamped with this term (so
    /// workers re-reading one accept it), and records that do not cover the partitions
    /// exactly (a predecessor's half-done handoff) lead to a rebalance at once.
    fn resume(&mut self, now: Instant) {
        self.scheduler.resume_after(now);
        self.handoff.rewrite_all();
        self.handoff.plan(self.members.clone(), &self.target);
        self.want_advance = true;
        self.want_coverage = true;
    }

    fn written(
        &mut self,
        committed: Vec<Committed>,
        failed: bool,
        now: Instant,
        actions: &mut Vec<CalculatorAction>,
    ) {
        let changes = committed.len();
        for (worker, change, version) in &committed {
            self.handoff.committed(worker, change, *version);
        }
        if failed {
            self.write_failed(now);
            return;
        }
        actions.push(CalculatorAction::Note(CalculatorNote::StepWritten {
            changes,
            waiting_for: self.handoff.waiting_for().cloned().collect(),
        }));
        // After revocations a fresh listing may confirm releases at once (a crashed worker
        // is absent), so the next step can grant.
        if self.handoff.waiting_for().next().is_some() {
            self.want_list = true;
        }
        self.want_advance = true;
    }

    /// A write failed or was abandoned: its outcome is unknown. Read the records back
    /// before anything else is written, and try again after a delay.
    fn write_failed(&mut self, now: Instant) {
        self.want_load = Some(now);
        self.want_advance = false;
        self.retry_handoff = Some(now + self.timings.retry);
    }

    fn computed(
        &mut self,
        reason: RebalanceReason,
        started: Instant,
        outcome: Result<Computed, ()>,
        now: Instant,
        actions: &mut Vec<CalculatorAction>,
    ) {
        match outcome {
            Ok(computed) => {
                if computed.source_failed {
                    self.schedule_retry(now);
                } else {
                    self.last_partitions = Some(computed.partitions.clone());
                    if self.retry_refresh.is_none() {
                        self.source_backoff.reset();
                    }
                }
                let next = computed.assignment;
                let moved = next
                    .iter()
                    .filter(|(p, owner)| self.target.owner(p).is_some_and(|old| old != *owner))
                    .count();
                let lifecycle = reason.lifecycle();
                let began = self.handing_off.map_or(started, |(_, began)| began);
                self.handing_off = Some((lifecycle, began));
                self.handoff.plan(self.members.clone(), &next);
                self.target = next;
                self.want_advance = true;
                actions.push(CalculatorAction::Note(CalculatorNote::Planned {
                    reason,
                    workers: self.members.len(),
                    partitions: computed.partitions.len(),
                    moved,
                    took: now.saturating_duration_since(started),
                }));
            }
            Err(()) => {
                let retry_in = self.schedule_retry(now);
                actions.push(CalculatorAction::Note(CalculatorNote::RebalanceFailed {
                    retry_in,
                }));
            }
        }
        let decision = self.scheduler.finished(now);
        self.decide(decision);
    }

    /// Asks for a refresh after the next backoff delay; returns the delay.
    fn schedule_retry(&mut self, now: Instant) -> Duration {
        let delay = self.source_backoff.next_delay();
        let at = now + delay;
        self.retry_refresh = Some(self.retry_refresh.map_or(at, |current| current.min(at)));
        delay
    }

    /// Feeds the live set — with the parked members, whose partitions wait for them — to
    /// the detector and the scheduler.
    fn observe(&mut self, now: Instant, actions: &mut Vec<CalculatorAction>) {
        self.parked.retain(|_, until| now < *until);
        // Before its first answered listing, the live set is only what the watch showed so
        // far: absence from it proves nothing.
        if !self.listed_once {
            return;
        }
        let present: BTreeSet<WorkerId> = self
            .live
            .iter()
            .chain(self.parked.keys().filter(|w| self.members.contains(*w)))
            .cloned()
            .collect();
        let lost = self.detector.observe(&self.members, &present, now);
        let claims_unknown = self.claims_unknown_until.is_some_and(|until| now < until);
        let (joined, unclaimed): (Vec<WorkerId>, Vec<WorkerId>) = present
            .difference(&self.members)
            .cloned()
            .partition(|worker| claims_unknown || self.claimed.contains(worker));
        for worker in unclaimed {
            if self.unclaimed_noted.insert(worker.clone()) {
                actions.push(CalculatorAction::Note(CalculatorNote::Unclaimed(worker)));
            }
        }
        if lost.is_empty() && joined.is_empty() {
            return;
        }
        let mut next = self.members.clone();
        for worker in &lost {
            next.remove(worker);
        }
        next.extend(joined);
        // Live workers that did not restart: their heartbeats come from the session their
        // record was written for.
        let running: BTreeSet<WorkerId> = next
            .iter()
            .filter(|w| self.handoff.follows_its_record(w))
            .cloned()
            .collect();
        let Some(mut change) = classify(&self.members, &next, &running, self.timings.restart_ratio)
        else {
            return;
        };
        if change.kind == ChangeKind::Emergency
            && change.left.iter().all(|w| self.left_gracefully.contains(w))
        {
            change.kind = ChangeKind::Leave;
        }
        for worker in &change.left {
            self.left_gracefully.remove(worker);
        }
        // Kept only while it can still matter: for a worker in the plan, or one whose claim
        // is yet to go.
        let (members, claimed) = (&self.members, &self.claimed);
        self.left_gracefully
            .retain(|w| next.contains(w) || members.contains(w) || claimed.contains(w));
        actions.push(CalculatorAction::Note(CalculatorNote::TopologyChange {
            kind: change.kind,
            joined: change.joined.iter().cloned().collect(),
            left: change.left.iter().cloned().collect(),
        }));
        self.members = next;
        // Lost workers are out of the plan; forget them so a return counts as a join.
        self.detector.observe(&self.members, &present, now);
        let decision = self.scheduler.on_change(change.kind, now);
        self.decide(decision);
    }

    /// When the next listing is due: a poll interval after the last one while a
    /// heartbeat watch is silent (a TTL without a delivery, or none yet), a backstop
    /// interval after it while every watch delivers. (With two buckets, one watch that
    /// broke must not hide behind the other that works: absence from its bucket is then
    /// seen by listings only.)
    fn listing_due(&self) -> Instant {
        let poll = self.last_listing + self.timings.poll_interval;
        let watches = if self.timings.two_heartbeats { 2 } else { 1 };
        // The watch heard from least recently (`None`, never heard from, first).
        let least_recent = self.last_delivery[..watches]
            .iter()
            .copied()
            .min()
            .flatten();
        match least_recent {
            None => poll,
            Some(delivered) => {
                let silent_from = delivered + self.timings.heartbeat_ttl;
                (self.last_listing + self.timings.backstop_interval).min(poll.max(silent_from))
            }
        }
    }

    fn decide(&mut self, decision: Decision) {
        match decision {
            Decision::Nothing => {}
            Decision::WakeAt(at) => self.wake = Some(at),
            Decision::Rebalance(reason) => {
                self.wake = None;
                self.want_rebalance = Some(reason);
            }
        }
    }

    /// Deadlines: a call in flight that ran out, the poll, the retries, the windows.
    fn timers(&mut self, now: Instant, actions: &mut Vec<CalculatorAction>) {
        if let Some(op) = self.op.clone().filter(|op| now >= op.deadline()) {
            self.op = None;
            actions.push(CalculatorAction::Cancel(op.id()));
            actions.push(CalculatorAction::Note(CalculatorNote::TimedOut(op.call())));
            match op {
                Op::Load { .. } => self.want_load = Some(now + self.timings.poll_interval),
                Op::List { .. } => {}
                Op::Write { .. } => self.write_failed(now),
                Op::Compute {
                    started, reason, ..
                } => {
                    self.computed(reason, started, Err(()), now, actions);
                }
                Op::Coverage { .. } => {
                    let decision = self.scheduler.on_refresh(now);
                    self.decide(decision);
                }
            }
        }
        if !self.loaded {
            return;
        }
        if now >= self.listing_due() {
            self.want_list = true;
            self.last_listing = now;
        }
        if self.retry_handoff.is_some_and(|at| now >= at) {
            self.retry_handoff = None;
            self.want_advance = true;
        }
        if self.blind_until.is_some_and(|at| now >= at) {
            // Every lease of before the loss has ended: absence and new sessions prove
            // releases again.
            self.blind_until = None;
            self.handoff.see_again();
            self.want_list = true;
            self.want_advance = true;
        }
        let parking_ends = self.parked.values().min().is_some_and(|at| now >= *at);
        if parking_ends || self.detector.next_deadline().is_some_and(|at| now >= at) {
            self.observe(now, actions);
        }
        if self.retry_refresh.is_some_and(|at| now >= at) && self.want_rebalance.is_none() {
            self.retry_refresh = None;
            let decision = self.scheduler.on_refresh(now);
            self.decide(decision);
        }
        if self.wake.is_some_and(|at| now >= at) {
            self.wake = None;
            let decision = self.scheduler.poll(now);
            self.decide(decision);
        }
    }

    /// Starts the most urgent work waiting, if nothing is in flight.
    fn dispatch(&mut self, now: Instant, actions: &mut Vec<CalculatorAction>) {
        if self.op.is_some() {
            return;
        }
        let timeout = self.timings.call_timeout;
        if self.want_load.is_some_and(|at| now >= at) {
            self.want_load = None;
            let id = self.ops.next();
            self.op = Some(Op::Load {
                id,
                deadline: now + timeout,
            });
            actions.push(CalculatorAction::Load(id));
            return;
        }
        if !self.loaded {
            return;
        }
        if self.want_list {
            self.want_list = false;
            self.last_listing = now;
            let id = self.ops.next();
            self.op = Some(Op::List {
                id,
                ticket: self.handoff.listing_ticket(),
                deadline: now + self.timings.poll_interval,
            });
            actions.push(CalculatorAction::List(id));
            return;
        }
        if !self.listed_once {
            return;
        }
        if let Some(reason) = self.want_rebalance.take() {
            if self.members.is_empty() {
                // Keep the records: returning workers get their partitions back unmoved.
                actions.push(CalculatorAction::Note(CalculatorNote::NoWorkers(reason)));
                let decision = self.scheduler.finished(now);
                self.decide(decision);
                return self.dispatch(now, actions);
            }
            // An emergency never waits on the source: the partitions of a lost worker are
            // re-owned from the list known already (a changed list comes with a refresh).
            let source = !(reason == RebalanceReason::Emergency && self.last_partitions.is_some());
            if self.retry_refresh.is_some_and(|at| now >= at) {
                // A retry of the source that is due: this computation asks the source (so
                // it serves the retry), or the refresh queues behind it.
                self.retry_refresh = None;
                if !source {
                    let decision = self.scheduler.on_refresh(now);
                    self.decide(decision);
                }
            }
            let id = self.ops.next();
            // The executor bounds the source call by the call timeout (then falls back on
            // the last good list); this bound is for the whole computation.
            self.op = Some(Op::Compute {
                id,
                reason,
                started: now,
                deadline: now + 2 * timeout,
            });
            actions.push(CalculatorAction::Compute {
                op: id,
                reason,
                workers: self.members.iter().cloned().collect(),
                previous: self.target.clone(),
                fallback: self.last_partitions.clone(),
                source,
            });
            return;
        }
        // Nothing is written while the records must be read back.
        if self.want_advance && self.want_load.is_none() {
            self.want_advance = false;
            let step = self.handoff.step();
            if !step.is_empty() {
                let holders = step
                    .keys()
                    .map(|worker| (worker.clone(), self.handoff.holder(worker)))
                    .collect();
                let id = self.ops.next();
                self.op = Some(Op::Write {
                    id,
                    deadline: now + timeout,
                });
                actions.push(CalculatorAction::Write {
                    op: id,
                    step,
                    lifecycle: self.handing_off.map_or(Lifecycle::Stable, |(l, _)| l),
                    min_version: self.highest_applied,
                    holders,
                });
                return;
            }
            if let Some((_, began)) = self.handing_off {
                if self.handoff.is_settled() {
                    self.handing_off = None;
                    actions.push(CalculatorAction::Note(CalculatorNote::HandoffComplete {
                        took: now.saturating_duration_since(began),
                    }));
                }
            }
        }
        if self.want_coverage {
            self.want_coverage = false;
            let id = self.ops.next();
            self.op = Some(Op::Coverage {
                id,
                deadline: now + timeout,
            });
            actions.push(CalculatorAction::CheckCoverage(id));
        }
    }

    fn publish_phase(&mut self, actions: &mut Vec<CalculatorAction>) {
        // A handoff still under way keeps the phase of the rebalance that began it.
        let phase = match self.scheduler.phase() {
            Lifecycle::Stable => self.handing_off.map_or(Lifecycle::Stable, |(l, _)| l),
            phase => phase,
        };
        if phase != self.phase {
            self.phase = phase;
            actions.push(CalculatorAction::Phase(phase));
        }
    }
}

impl Machine for CalculatorMachine {
    type Event = CalculatorEvent;
    type Action = CalculatorAction;

    fn is_finished(&self) -> bool {
        self.resigned
    }

    fn next_deadline(&self) -> Option<Instant> {
        if self.resigned {
            return None;
        }
        let op = self.op.as_ref().map(Op::deadline);
        let poll = self.loaded.then(|| self.listing_due());
        let load = self.want_load.filter(|_| self.op.is_none());
        [
            op,
            poll,
            load,
            self.wake,
            self.retry_handoff.filter(|_| self.loaded),
            // A retry waits while a rebalance is pending anyway.
            self.retry_refresh.filter(|_| self.want_rebalance.is_none()),
            self.detector.next_deadline(),
            self.parked.values().min().copied().filter(|_| self.loaded),
            self.blind_until.filter(|_| self.loaded),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn handle(&mut self, event: CalculatorEvent, now: Instant) -> Vec<CalculatorAction> {
        let mut actions = Vec::new();
        if self.resigned {
            return actions;
        }
        if let CalculatorEvent::Heartbeat { via, .. }
        | CalculatorEvent::HeartbeatGone(_, via)
        | CalculatorEvent::HeartbeatDeleted(_, via) = event
        {
            self.last_delivery[via.index()] = Some(now);
        }
        let deleted = matches!(event, CalculatorEvent::HeartbeatDeleted(..));
        match event {
            CalculatorEvent::Tick => {}
            CalculatorEvent::Loaded { op, outcome } => {
                if self.take_op(op).is_some() {
                    self.loaded_records(outcome, now);
                }
            }
            CalculatorEvent::Listed {
                op,
                outcome,
                unreadable,
                bucket_lost,
            } => {
                if bucket_lost {
                    self.heartbeats_lost(now);
                }
                if let Some(Op::List { ticket, .. }) = self.take_op(op) {
                    self.listed(ticket, outcome, &unreadable, now, &mut actions);
                }
            }
            CalculatorEvent::Written {
                op,
                committed,
                failed,
            } => {
                if self.take_op(op).is_some() {
                    self.written(committed, failed, now, &mut actions);
                }
            }
            CalculatorEvent::Computed { op, outcome } => {
                if let Some(Op::Compute {
                    reason, started, ..
                }) = self.take_op(op)
                {
                    self.computed(reason, started, outcome, now, &mut actions);
                }
            }
            CalculatorEvent::Covered { op, outcome } => {
                if self.take_op(op).is_some() {
                    let decision = match outcome {
                        Ok((covered, partitions)) => {
                            self.last_partitions = Some(partitions);
                            if covered {
                                Decision::Nothing
                            } else {
                                self.scheduler.on_refresh(now)
                            }
                        }
                        Err(()) => self.scheduler.on_refresh(now),
                    };
                    self.decide(decision);
                }
            }
            CalculatorEvent::Heartbeat {
                worker,
                beat: Some(beat),
                ..
            } => {
                if beat.term_seen > self.term {
                    self.resign(beat.term_seen);
                } else if self.loaded {
                    self.highest_applied = self.highest_applied.max(beat.applied);
                    if self.handoff.heartbeat(&worker, &beat) {
                        self.want_advance = true;
                    }
                    self.left_gracefully.remove(&worker);
                    self.live.insert(worker);
                    self.observe(now, &mut actions);
                }
            }
            CalculatorEvent::Heartbeat { beat: None, .. } => {}
            CalculatorEvent::HeartbeatWatchStarted => self.want_list |= self.loaded,
            CalculatorEvent::HeartbeatGone(worker, _)
            | CalculatorEvent::HeartbeatDeleted(worker, _)
                if self.loaded && self.blind_until.is_none() =>
            {
                if deleted {
                    self.left_gracefully.insert(worker.clone());
                    // Lost at once only once its claim is gone too (a worker without an
                    // identity releases it right after): a worker with one parks its claim
                    // instead, and that notice comes through another watch, maybe later —
                    // the grace waits for it.
                    let claims_known = self.claims_unknown_until.is_none_or(|until| now >= until);
                    if claims_known && !self.claimed.contains(&worker) {
                        self.detector.left(worker.clone());
                    }
                }
                // A listing confirms a release by absence (the watch may be behind).
                if self.handoff.waiting_for().any(|w| *w == worker) {
                    self.want_list = true;
                }
                self.live.remove(&worker);
                self.observe(now, &mut actions);
            }
            CalculatorEvent::HeartbeatGone(..) | CalculatorEvent::HeartbeatDeleted(..) => {}
            CalculatorEvent::Claimed { worker, parked } => {
                self.unclaimed_noted.remove(&worker);
                let new = self.claimed.insert(worker.clone());
                let unparked = if parked {
                    let until = now + self.timings.restart_grace;
                    self.parked.entry(worker).or_insert(until);
                    false
                } else {
                    self.parked.remove(&worker).is_some()
                };
                if (new || unparked) && self.loaded {
                    self.observe(now, &mut actions);
                }
            }
            CalculatorEvent::Unclaimed(worker) => {
                self.claimed.remove(&worker);
                if self.left_gracefully.contains(&worker) && !self.live.contains(&worker) {
                    self.detector.left(worker.clone());
                    if self.loaded {
                        self.observe(now, &mut actions);
                    }
                }
                if self.parked.remove(&worker).is_some() && self.loaded {
                    self.observe(now, &mut actions);
                }
            }
            CalculatorEvent::ClaimsUnknown => {
                self.claims_unknown_until = Some(now + self.timings.claim_ttl);
                if self.loaded {
                    self.observe(now, &mut actions);
                }
            }
            CalculatorEvent::BucketLost(LostBucket::Heartbeats) => self.heartbeats_lost(now),
            CalculatorEvent::AbsenceUnproven { until } => {
                if until > now {
                    self.distrust_absence(until);
                }
            }
            CalculatorEvent::BucketLost(LostBucket::Records) => {
                // What was written may be gone: read back before writing anything (a
                // calculator still reading them for the first time reads the new bucket).
                if self.loaded {
                    self.want_load = Some(now);
                    self.retry_handoff = Some(now);
                }
            }
            CalculatorEvent::Refresh => {
                let decision = self.scheduler.on_refresh(now);
                self.decide(decision);
            }
        }
        if self.resigned {
            if let Some(above) = self.resign_above.take() {
                actions.push(CalculatorAction::Resign { above });
            }
            return actions;
        }
        // Until nothing is due at `now` (what one step starts can make another due: a
        // retry that waited for a rebalance to be started, say).
        for _ in 0..8 {
            self.timers(now, &mut actions);
            self.dispatch(now, &mut actions);
            if self.next_deadline().is_none_or(|at| at > now) {
                break;
            }
        }
        self.publish_phase(&mut actions);
        actions
    }

    fn tick() -> CalculatorEvent {
        CalculatorEvent::Tick
    }
}

#[cfg(test)]
mod tests;
