//! The follower machine: the rules by which a worker holds partitions, with no I/O and no
//! clock. The runtime's executor feeds it events (records read or delivered, lease renewals,
//! finished reads and hooks, the passing of its deadline) with the time, carries out the
//! [`FollowerAction`]s it returns, and wakes it at [`FollowerMachine::next_deadline`].
//!
//! The rules (ARCHITECTURE.md, "Why ownership is exclusive"):
//! - partitions are held only while the heartbeat lease is valid; when it lapses everything
//!   is released at once — a read, a term check or a grant hook in flight is abandoned — and
//!   the revoke hook gets until half the margin after the lease end (before the heartbeat
//!   entry can expire);
//! - after a lapse, and at the start, the worker holds nothing until it has read its record
//!   with a read issued while the lease is valid again (records delivered by the watch may
//!   predate a revocation);
//! - a record that adds partitions is applied only if its term is the current leader's
//!   (read from the election entry);
//! - a record written for another heartbeat session (another process that held this
//!   worker id, or this one before its heartbeat expired) grants nothing: its tokens are
//!   that session's, so it counts as no record until the leader writes one for this
//!   session;
//! - revocations are drained (bounded by `drain_timeout` and the lease) before the record's
//!   version is reported, and grants are started after;
//! - a grant hook is never cancelled while the lease holds;
//! - every read has a deadline: the lease end, and at most `read_timeout`; one that fails,
//!   times out, or whose record's term is not the current leader's is tried again after
//!   `read_timeout`;
//! - while the lease holds, the record is read again every `poll_interval` — a backstop for
//!   a watch that is alive but behind (a watch loses nothing: it resumes where it was).
//!
//! One operation runs at a time; records delivered meanwhile wait (the newest one only —
//! the watch delivers in order).

use std::time::{Duration, Instant};

use parti_strategy::PartitionId;

use super::Machine;
use super::WorkerAssignment;
use super::op::{OpId, OpIds};
use crate::wire::{AssignmentRecord, Grant};

/// The timings the follower works with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerTimings {
    /// How often the record is read as a backstop for the watch.
    pub poll_interval: Duration,
    /// The longest a read may take.
    pub read_timeout: Duration,
    /// The longest a revoke hook may drain, and a grant hook may delay a stop.
    pub drain_timeout: Duration,
    /// How long after the lease end the heartbeat entry is certainly still live: half the
    /// safety margin. A revoke hook is cut there.
    pub release_slack: Duration,
}

/// A renewal of the heartbeat lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRenewal {
    /// The new end of the lease (the heartbeat's send time + `heartbeat_ttl` − margin).
    pub until: Instant,
    /// When the heartbeat's acknowledgement arrived. A renewal acknowledged before the
    /// previous lease ended continues it; one acknowledged later comes after a lapse, even
    /// if the machine hears of it late.
    pub acknowledged: Instant,
    /// The heartbeat session it renews ([`wire::Heartbeat::session`](crate::wire::Heartbeat::session)):
    /// only records written for it grant anything.
    pub session: u64,
}

/// What happened, fed to [`FollowerMachine::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowerEvent {
    /// The heartbeat lease was renewed (`None`: no heartbeat acknowledged in this session
    /// yet).
    Lease(Option<LeaseRenewal>),
    /// The watch delivered this worker's record (`None`: the record was deleted).
    Delivered(Option<AssignmentRecord>),
    /// A read of the record finished: the record, `None` when there is none, or a failure
    /// (already reported by the executor: unreachable store, unreadable value).
    RecordRead {
        /// The read.
        op: OpId,
        /// What it found.
        outcome: Result<Option<AssignmentRecord>, ()>,
    },
    /// The watch of the record was set up (again): what changed before is read afresh.
    WatchStarted,
    /// The watch of the record failed (it is set up again after a delay): until it is, the
    /// record is read every `read_timeout`, not only at the backstop read — a replicated
    /// store that lost a node may refuse new watches for seconds while reads work.
    WatchFailed,
    /// A read of the election entry finished: the current term (`None`: no leader), or a
    /// failure (already reported).
    TermRead {
        /// The read.
        op: OpId,
        /// The current leader's term.
        outcome: Result<Option<u64>, ()>,
    },
    /// A hook finished (`panicked`: it panicked instead; the executor reports it).
    HookDone {
        /// The hook's operation.
        op: OpId,
        /// Whether it panicked.
        panicked: bool,
    },
    /// The manager is stopping: release everything and finish.
    Stop,
    /// The deadline passed (or the executor just wants the machine to look at the time).
    Tick,
}

/// What the machine asks the executor to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowerAction {
    /// Read this worker's record; answer with [`FollowerEvent::RecordRead`].
    ReadRecord(OpId),
    /// Read the election entry; answer with [`FollowerEvent::TermRead`].
    ReadTerm(OpId),
    /// Run the revoke hook; answer with [`FollowerEvent::HookDone`].
    Revoke(OpId, Vec<PartitionId>),
    /// Run the grant hook; answer with [`FollowerEvent::HookDone`].
    Grant(OpId, Vec<Grant>),
    /// Abandon an operation (drop the read, abort the hook); no answer expected.
    Cancel(OpId),
    /// Publish what the worker holds now.
    Publish(WorkerAssignment),
    /// Report this applied version (and the highest term seen) in the heartbeat.
    ReportApplied {
        /// The version of the record applied.
        version: u64,
        /// The highest leader term seen.
        term_seen: u64,
    },
    /// The lease, valid before, lapsed: the worker is degraded until it is valid again.
    LeaseLapsed,
    /// The lease is valid again after a lapse.
    LeaseRestored,
    /// The lease lapsed while holding partitions: everything is being released.
    Fenced {
        /// How many partitions were held.
        partitions: usize,
    },
    /// A revoke hook was cut at its deadline; the partitions are released anyway.
    DrainCutShort {
        /// How many partitions it was draining.
        partitions: usize,
        /// How long it ran.
        waited: Duration,
    },
    /// A read ran into its deadline and was abandoned.
    ReadTimedOut,
    /// Stopped: nothing held, nothing running. The machine does nothing more.
    Finished,
}

/// What a running revoke hook leads to when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AfterRevoke {
    /// Finish applying this record.
    Apply(WorkerAssignment),
    /// Release these partitions too (fenced or stopping during a revocation).
    Release(Vec<PartitionId>),
    /// Nothing more.
    Done,
}

/// The one operation in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Read {
        id: OpId,
        deadline: Instant,
    },
    Term {
        id: OpId,
        record: AssignmentRecord,
        deadline: Instant,
    },
    Revoke {
        id: OpId,
        partitions: usize,
        started: Instant,
        drain_end: Instant,
        then: AfterRevoke,
    },
    Grant {
        id: OpId,
        /// When stopping: the grant hook gets until here before it is abandoned.
        stop_deadline: Option<Instant>,
    },
}

impl Op {
    fn id(&self) -> OpId {
        match self {
            Op::Read { id, .. }
            | Op::Term { id, .. }
            | Op::Revoke { id, .. }
            | Op::Grant { id, .. } => *id,
        }
    }
}

/// The worker-side protocol as a machine with no I/O and no clock: feed it
/// [`FollowerEvent`]s with the time, carry out the [`FollowerAction`]s it returns, and wake it
/// at [`next_deadline`](Self::next_deadline). It holds partitions only under the heartbeat
/// lease, trusts only fresh reads after a lapse, checks the term before a grant, drains
/// revocations before reporting a version, and never cancels a grant hook while the lease
/// holds.
#[derive(Debug, Clone)]
pub struct FollowerMachine {
    timings: FollowerTimings,
    lease_end: Option<Instant>,
    /// The heartbeat session of the lease.
    session: u64,
    /// Whether the lease was valid when the machine last looked.
    was_valid: bool,
    /// Whether the lease lapsed after being valid, and is not valid again yet.
    lapsed: bool,
    /// What the worker holds (published), without partitions being revoked.
    held: WorkerAssignment,
    /// The version of the record applied last (what the heartbeat reports).
    applied: u64,
    /// Whether a record has been applied in this session.
    has_record: bool,
    highest_term: u64,
    /// Whether only a fresh read counts (after a lapse, at the start, after a read found no
    /// record).
    resync: bool,
    next_poll: Option<Instant>,
    op: Option<Op>,
    ops: OpIds,
    /// The newest record the watch delivered while an operation ran.
    pending: Option<Option<AssignmentRecord>>,
    stopping: bool,
    finished: bool,
}

impl FollowerMachine {
    /// A follower that holds nothing and has no lease yet.
    pub fn new(timings: FollowerTimings) -> Self {
        Self {
            timings,
            lease_end: None,
            session: 0,
            was_valid: false,
            lapsed: false,
            held: WorkerAssignment::default(),
            applied: 0,
            has_record: false,
            highest_term: 0,
            resync: true,
            next_poll: None,
            op: None,
            ops: OpIds::default(),
            pending: None,
            stopping: false,
            finished: false,
        }
    }

    /// What the worker holds now.
    pub fn held(&self) -> &WorkerAssignment {
        &self.held
    }

    /// The operation in flight, if any.
    pub fn in_flight(&self) -> Option<OpId> {
        self.op.as_ref().map(Op::id)
    }

    fn lease_valid(&self, now: Instant) -> bool {
        self.lease_end.is_some_and(|end| now < end)
    }

    /// The instant a revoke hook started at `started` is cut: its drain timeout, or half the
    /// margin after the lease end, whichever is first.
    fn revoke_deadline(&self, started: Instant, drain_end: Instant) -> Instant {
        let hard = self
            .lease_end
            .map_or(started, |end| end + self.timings.release_slack);
        hard.min(drain_end)
    }

    fn start_op(
        &mut self,
        op: impl FnOnce(OpId) -> (Op, FollowerAction),
        actions: &mut Vec<FollowerAction>,
    ) {
        let id = self.ops.next();
        let (op, action) = op(id);
        self.op = Some(op);
        actions.push(action);
    }

    /// Takes the operation in flight if it is `id` and of the expected kind.
    fn take_op(&mut self, id: OpId, kind: impl Fn(&Op) -> bool) -> Option<Op> {
        match &self.op {
            Some(op) if op.id() == id && kind(op) => self.op.take(),
            _ => None,
        }
    }

    fn cancel_op(&mut self, actions: &mut Vec<FollowerAction>) {
        if let Some(op) = self.op.take() {
            actions.push(FollowerAction::Cancel(op.id()));
        }
    }

    /// Fences when the lease has lapsed; schedules a fresh read when it is valid again.
    fn check_lease(&mut self, now: Instant, actions: &mut Vec<FollowerAction>) {
        let valid = self.lease_valid(now);
        if valid {
            if !self.was_valid {
                // (Again) valid: read the record afresh now.
                self.next_poll = Some(now);
                if self.lapsed {
                    self.lapsed = false;
                    actions.push(FollowerAction::LeaseRestored);
                }
            }
            self.was_valid = true;
            return;
        }
        if self.was_valid {
            self.lapsed = true;
            actions.push(FollowerAction::LeaseLapsed);
        }
        self.was_valid = false;
        self.resync = true;
        self.pending = None;
        if matches!(
            self.op,
            Some(Op::Read { .. } | Op::Term { .. } | Op::Grant { .. })
        ) {
            // A read may be older than a revocation by now; a grant hook may not outlive the
            // lease.
            self.cancel_op(actions);
        }
        if let Some(Op::Revoke { then, .. }) = &mut self.op {
            if matches!(then, AfterRevoke::Apply(_)) {
                // The record being applied may be older than a revocation by now.
                *then = AfterRevoke::Done;
            }
        }
        if self.held.is_empty() {
            return;
        }
        actions.push(FollowerAction::Fenced {
            partitions: self.held.len(),
        });
        self.release_held(now, actions);
    }

    /// Releases everything held: published as held by nobody at once, then drained. During
    /// a revocation the rest follows it, and nothing more is applied.
    fn release_held(&mut self, now: Instant, actions: &mut Vec<FollowerAction>) {
        let all: Vec<PartitionId> = self.held.partitions().cloned().collect();
        self.held = self.held.retain(|_| false);
        actions.push(FollowerAction::Publish(self.held.clone()));
        match &mut self.op {
            Some(Op::Revoke { then, .. }) => {
                if !all.is_empty() {
                    *then = AfterRevoke::Release(all);
                } else if matches!(then, AfterRevoke::Apply(_)) {
                    *then = AfterRevoke::Done;
                }
            }
            _ => {
                if !all.is_empty() {
                    self.start_revoke(all, AfterRevoke::Done, now, actions);
                }
            }
        }
    }

    fn start_revoke(
        &mut self,
        partitions: Vec<PartitionId>,
        then: AfterRevoke,
        now: Instant,
        actions: &mut Vec<FollowerAction>,
    ) {
        let drain_end = now + self.timings.drain_timeout;
        let count = partitions.len();
        self.start_op(
            |id| {
                (
                    Op::Revoke {
                        id,
                        partitions: count,
                        started: now,
                        drain_end,
                        then,
                    },
                    FollowerAction::Revoke(id, partitions),
                )
            },
            actions,
        );
    }

    fn after_revoke(&mut self, then: AfterRevoke, now: Instant, actions: &mut Vec<FollowerAction>) {
        match then {
            AfterRevoke::Apply(next) => self.finish_apply(next, actions),
            AfterRevoke::Release(rest) => self.start_revoke(rest, AfterRevoke::Done, now, actions),
            AfterRevoke::Done => {}
        }
    }

    /// Moves on: deadlines, stopping, the next delivered record, the periodic read.
    fn settle(&mut self, now: Instant, actions: &mut Vec<FollowerAction>) {
        loop {
            match self.op.clone() {
                Some(Op::Read { deadline, .. } | Op::Term { deadline, .. }) if now >= deadline => {
                    self.cancel_op(actions);
                    actions.push(FollowerAction::ReadTimedOut);
                    self.read_again_soon(now);
                    continue;
                }
                Some(Op::Revoke {
                    partitions,
                    started,
                    drain_end,
                    then,
                    ..
                }) if now >= self.revoke_deadline(started, drain_end) => {
                    self.cancel_op(actions);
                    actions.push(FollowerAction::DrainCutShort {
                        partitions,
                        waited: now.saturating_duration_since(started),
                    });
                    self.after_revoke(then, now, actions);
                    continue;
                }
                Some(Op::Grant { stop_deadline, .. }) if self.stopping => match stop_deadline {
                    Some(at) if now >= at => {
                        self.cancel_op(actions);
                        continue;
                    }
                    Some(_) => {}
                    None => {
                        if let Some(Op::Grant { stop_deadline, .. }) = &mut self.op {
                            *stop_deadline = Some(now + self.timings.drain_timeout);
                        }
                    }
                },
                Some(Op::Read { .. } | Op::Term { .. }) if self.stopping => {
                    self.cancel_op(actions);
                    continue;
                }
                Some(Op::Revoke {
                    then: AfterRevoke::Apply(_),
                    ..
                }) if self.stopping => {
                    self.release_held(now, actions);
                }
                Some(_) => {}
                None if self.stopping => {
                    if self.held.is_empty() {
                        self.finished = true;
                        actions.push(FollowerAction::Finished);
                    } else {
                        self.release_held(now, actions);
                        continue;
                    }
                }
                None => {
                    if let Some(delivered) = self.pending.take() {
                        match delivered {
                            Some(record) => self.on_record(record, false, now, actions),
                            None => self.on_deleted(false, now, actions),
                        }
                        continue;
                    }
                    if self.lease_valid(now) && self.next_poll.is_some_and(|at| now >= at) {
                        self.next_poll = Some(now + self.timings.poll_interval);
                        let deadline = self.read_deadline(now);
                        self.start_op(
                            |id| (Op::Read { id, deadline }, FollowerAction::ReadRecord(id)),
                            actions,
                        );
                    }
                }
            }
            return;
        }
    }

    /// After a read or a term check that failed, timed out or found a stale term: the
    /// record is read again after `read_timeout`, not at the next backstop read.
    fn read_again_soon(&mut self, now: Instant) {
        let soon = now + self.timings.read_timeout;
        self.next_poll = Some(self.next_poll.map_or(soon, |at| at.min(soon)));
    }

    /// A read started at `now` is abandoned at the lease end, or after `read_timeout`.
    fn read_deadline(&self, now: Instant) -> Instant {
        let cap = now + self.timings.read_timeout;
        self.lease_end.map_or(cap, |end| end.min(cap))
    }

    /// A record read (`fresh`: by a read issued while the lease was valid) or delivered.
    fn on_record(
        &mut self,
        record: AssignmentRecord,
        fresh: bool,
        now: Instant,
        actions: &mut Vec<FollowerAction>,
    ) {
        if self.resync && !fresh {
            // It may predate what a fresh read would show; but a record changed: read
            // afresh now rather than at the next backstop read.
            if self.lease_valid(now) {
                self.next_poll = Some(now);
            }
            return;
        }
        if record.holder != self.session {
            // Written for another session of this id: nothing in it is ours.
            self.on_deleted(fresh, now, actions);
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
            let deadline = self.read_deadline(now);
            self.start_op(
                |id| {
                    (
                        Op::Term {
                            id,
                            record,
                            deadline,
                        },
                        FollowerAction::ReadTerm(id),
                    )
                },
                actions,
            );
        } else {
            self.accept(record, now, actions);
        }
    }

    /// The leader deleted this worker's record (it had emptied it first): hold nothing.
    /// After a read found no record, only fresh reads count until one finds a record: the
    /// watch may still deliver older versions, and with no record there is no applied
    /// version to tell them by.
    fn on_deleted(&mut self, fresh: bool, now: Instant, actions: &mut Vec<FollowerAction>) {
        if fresh {
            self.resync = true;
        }
        if !self.has_record && self.held.is_empty() {
            return;
        }
        let next = WorkerAssignment::new(self.applied, self.held.term(), []);
        self.apply(next, now, actions);
    }

    fn accept(
        &mut self,
        record: AssignmentRecord,
        now: Instant,
        actions: &mut Vec<FollowerAction>,
    ) {
        self.highest_term = record.term;
        self.resync = false;
        let next = WorkerAssignment::new(record.version, record.term, record.partitions);
        self.apply(next, now, actions);
    }

    /// Applies `next`: revocations first (drained, bounded), then the report of the applied
    /// version, then the grants.
    fn apply(&mut self, next: WorkerAssignment, now: Instant, actions: &mut Vec<FollowerAction>) {
        let revoked: Vec<PartitionId> = self
            .held
            .partitions()
            .filter(|p| !next.contains(p))
            .cloned()
            .collect();
        if revoked.is_empty() {
            self.finish_apply(next, actions);
            return;
        }
        self.held = self.held.retain(|p| next.contains(p));
        actions.push(FollowerAction::Publish(self.held.clone()));
        self.start_revoke(revoked, AfterRevoke::Apply(next), now, actions);
    }

    fn finish_apply(&mut self, next: WorkerAssignment, actions: &mut Vec<FollowerAction>) {
        let assigned: Vec<Grant> = next
            .grants()
            .filter(|(p, _)| !self.held.contains(p))
            .map(|(partition, token)| Grant {
                partition: partition.clone(),
                token,
            })
            .collect();
        self.applied = next.version();
        self.has_record = true;
        actions.push(FollowerAction::ReportApplied {
            version: next.version(),
            term_seen: self.highest_term,
        });
        self.held = next;
        // The grant hook is called before the grants are published: nothing shows a
        // partition as owned (`owns`, the assignment watch) before the application has
        // been told of it.
        if !assigned.is_empty() {
            self.start_op(
                |id| {
                    (
                        Op::Grant {
                            id,
                            stop_deadline: None,
                        },
                        FollowerAction::Grant(id, assigned),
                    )
                },
                actions,
            );
        }
        actions.push(FollowerAction::Publish(self.held.clone()));
    }
}

impl Machine for FollowerMachine {
    type Event = FollowerEvent;
    type Action = FollowerAction;

    fn is_finished(&self) -> bool {
        self.finished
    }

    fn next_deadline(&self) -> Option<Instant> {
        if self.finished {
            return None;
        }
        let lease = self.lease_end.filter(|_| self.was_valid);
        let op = match &self.op {
            Some(Op::Read { deadline, .. } | Op::Term { deadline, .. }) => Some(*deadline),
            Some(Op::Revoke {
                started, drain_end, ..
            }) => Some(self.revoke_deadline(*started, *drain_end)),
            Some(Op::Grant { stop_deadline, .. }) => *stop_deadline,
            None => None,
        };
        let poll = self
            .next_poll
            .filter(|_| self.op.is_none() && self.was_valid && !self.stopping);
        [lease, op, poll].into_iter().flatten().min()
    }

    fn handle(&mut self, event: FollowerEvent, now: Instant) -> Vec<FollowerAction> {
        let mut actions = Vec::new();
        if self.finished {
            return actions;
        }
        if let FollowerEvent::Lease(renewal) = event {
            if renewal.is_some_and(|renewal| renewal.session != self.session) {
                // A new heartbeat session: the old one's entry is gone — expired, or deleted
                // early by someone else, in which case the leader may already count this
                // worker's partitions as released. What the old session held ends now.
                self.lease_end = self.lease_end.map(|end| end.min(now));
            }
            let continues = renewal.is_some_and(|renewal| {
                renewal.session == self.session
                    && self.lease_end.is_some_and(|end| renewal.acknowledged < end)
            });
            if !continues {
                // What was due under the old lease happens first: a renewal acknowledged
                // after the old lease ended does not undo the lapse (or a revoke hook's cut).
                // One acknowledged before it did not lapse, however late the machine hears.
                self.check_lease(now, &mut actions);
                self.settle(now, &mut actions);
            }
            self.lease_end = renewal.map(|renewal| renewal.until);
            self.session = renewal.map_or(0, |renewal| renewal.session);
        }
        // The lease first: a completion that arrives after the lease ended must not count.
        self.check_lease(now, &mut actions);
        match event {
            FollowerEvent::Lease(_) | FollowerEvent::Tick => {}
            // A change while the watch was down is found by a read issued now (the watch
            // delivers every later one).
            FollowerEvent::WatchStarted => self.next_poll = Some(now),
            FollowerEvent::WatchFailed => self.read_again_soon(now),
            FollowerEvent::Stop => self.stopping = true,
            FollowerEvent::Delivered(record) => {
                if self.lease_valid(now) && !self.stopping {
                    self.pending = Some(record);
                }
            }
            FollowerEvent::RecordRead { op, outcome } => {
                if self
                    .take_op(op, |op| matches!(op, Op::Read { .. }))
                    .is_some()
                {
                    match outcome {
                        Ok(Some(record)) => self.on_record(record, true, now, &mut actions),
                        Ok(None) => self.on_deleted(true, now, &mut actions),
                        Err(()) => self.read_again_soon(now),
                    }
                }
            }
            FollowerEvent::TermRead { op, outcome } => {
                if let Some(Op::Term { record, .. }) =
                    self.take_op(op, |op| matches!(op, Op::Term { .. }))
                {
                    if outcome == Ok(Some(record.term)) && self.lease_valid(now) {
                        self.accept(record, now, &mut actions);
                    } else {
                        // Not applied: the record (or the leader entry) is about to change,
                        // or the read failed. Look again soon, not at the backstop read.
                        self.read_again_soon(now);
                    }
                }
            }
            FollowerEvent::HookDone { op, .. } => match self.op.clone() {
                Some(Op::Revoke { id, then, .. }) if id == op => {
                    self.op = None;
                    self.after_revoke(then, now, &mut actions);
                }
                Some(Op::Grant { id, .. }) if id == op => self.op = None,
                _ => {}
            },
        }
        self.settle(now, &mut actions);
        actions
    }

    fn tick() -> FollowerEvent {
        FollowerEvent::Tick
    }
}

#[cfg(test)]
mod tests;
