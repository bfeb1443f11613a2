//! The election machine: campaigning for the leader entry, holding it by compare-and-set
//! renewals, and letting go — with no I/O and no clock. The runtime's executor feeds it
//! events (the entry read or delivered by the watch, finished creates and renewals, the
//! calculator's phase, the passing of its deadline) with the time, carries out the
//! [`ElectionAction`]s it returns, and wakes it at [`ElectionMachine::next_deadline`].
//!
//! The rules (ARCHITECTURE.md, "Why ownership is exclusive", rules 6 and 9):
//! - a worker campaigns only when it has read the entry absent (or seen it deleted); the
//!   winning create's revision is the term;
//! - the lease is measured from the *send* time of the create or of the last acknowledged
//!   renewal (the instant the machine asked for it), plus `election_ttl` minus the margin;
//! - the leader is deposed at the lease end whatever is in flight (the call is abandoned),
//!   when a re-read after an unknown outcome or a conflicting renewal shows another entry,
//!   and when its calculator ends by itself;
//! - after an unknown outcome, and after a conflicting renewal (an earlier renewal that
//!   timed out may have landed after the re-read meant to find it: a NATS stream failing
//!   over stores it late), the entry is re-read before the next renewal, and adopted if it
//!   is this leader's of this term;
//! - every call has a deadline: reads and creates a poll interval, renewals the lease end,
//!   the release on stop one renewal interval.

use std::time::{Duration, Instant};

use parti_strategy::WorkerId;

use super::Machine;
use super::op::{OpId, OpIds};
use crate::wire::{LeaderRecord, Lifecycle};

/// The timings the election works with (from [`Config`](crate::config::Config)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElectionTimings {
    /// How long a lease lasts from the send time of its create or renewal: `election_ttl`
    /// minus the safety margin.
    pub hold: Duration,
    /// How often the leader renews (and the longest a read or a create may take).
    pub renew_interval: Duration,
    /// How long a follower goes without the entry showing, by watch or read, before it
    /// reads it: a backstop for a watch that is behind. While a leader leads, its renewals
    /// show every `renew_interval`, so an idle follower does not read at all; an entry
    /// that expires shows as a delete, and the follower campaigns at once.
    pub read_after_silence: Duration,
    /// How long to wait before trying a failed call again.
    pub retry: Duration,
}

/// The leader entry as read: its revision and its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderEntry {
    /// The entry's revision.
    pub revision: u64,
    /// Its record.
    pub record: LeaderRecord,
}

impl LeaderEntry {
    /// The term of the leader this entry names.
    pub fn term(&self) -> u64 {
        self.record.term_at(self.revision)
    }
}

/// How a create of the leader entry ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateOutcome {
    /// Created: the entry is at `revision`, and names `term` (the revision raised to the
    /// create's [`floor`](crate::wire::LeaderRecord::floor); renewals are compare-and-set
    /// at the revision, which is not the term when the floor raised it).
    Won {
        /// The revision of the create.
        revision: u64,
        /// The term won.
        term: u64,
    },
    /// Another worker holds the entry.
    Taken,
    /// Failed (already reported): not created, or unknown.
    Failed,
}

/// How a renewal ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewOutcome {
    /// Written at this revision.
    Renewed(u64),
    /// The entry changed under us: the lease is lost.
    Conflict,
    /// Failed (already reported); it may have landed.
    Failed,
}

/// What happened, fed to [`ElectionMachine::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElectionEvent {
    /// The watch delivered the entry (`None`: it was deleted or expired).
    Delivered(Option<LeaderEntry>),
    /// The watch of the entry was set up (again): a follower reads the entry now, for
    /// what changed while the watch was down.
    WatchStarted,
    /// A read of the entry finished (`Err`: failed, already reported).
    Read {
        /// The read.
        op: OpId,
        /// What it found.
        outcome: Result<Option<LeaderEntry>, ()>,
    },
    /// A create of the entry finished.
    Created {
        /// The create.
        op: OpId,
        /// How it ended.
        outcome: CreateOutcome,
    },
    /// A renewal finished.
    Renewed {
        /// The renewal.
        op: OpId,
        /// How it ended.
        outcome: RenewOutcome,
    },
    /// The release of the entry (on stop) finished, however it ended.
    Released {
        /// The release.
        op: OpId,
    },
    /// The calculator's phase changed: it is written into the entry at once.
    Phase(Lifecycle),
    /// The calculator ended by itself (a bug or a panic): stop leading.
    CalculatorEnded,
    /// The manager is stopping: release the entry if leading, and finish.
    Stop,
    /// The deadline passed (or the executor wants the machine to look at the time).
    Tick,
}

/// Why a leader stopped leading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deposed {
    /// The lease ended before a renewal was acknowledged.
    LeaseEnded,
    /// A renewal conflicted, or the entry names another leader now.
    Replaced,
    /// The calculator ended by itself.
    CalculatorEnded,
    /// The manager is stopping.
    Stopping,
}

/// What the machine asks the executor to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElectionAction {
    /// Read the entry; answer with [`ElectionEvent::Read`].
    Read(OpId),
    /// Create the entry with this record; answer with [`ElectionEvent::Created`].
    Create(OpId, LeaderRecord),
    /// Write this record over `revision`; answer with [`ElectionEvent::Renewed`].
    Renew {
        /// The renewal.
        op: OpId,
        /// The revision it must replace.
        revision: u64,
        /// The record to write.
        record: LeaderRecord,
    },
    /// Delete the entry if still at `revision`; answer with [`ElectionEvent::Released`].
    Release {
        /// The release.
        op: OpId,
        /// The revision it must still be at.
        revision: u64,
    },
    /// Abandon an operation; no answer expected.
    Cancel(OpId),
    /// Won: start the calculator of `term`, which may act until `lease_end`.
    Elected {
        /// The term.
        term: u64,
        /// The end of the first lease.
        lease_end: Instant,
    },
    /// The lease now ends at `lease_end` (tell the calculator).
    LeaseExtended {
        /// The new end.
        lease_end: Instant,
    },
    /// Stop leading: abort the calculator first, then tell the application.
    Deposed {
        /// The term that ended.
        term: u64,
        /// Why.
        reason: Deposed,
    },
    /// Publish who leads, as far as this worker knows (`None`: nobody).
    ShowLeader(Option<LeaderEntry>),
    /// A call ran into its deadline and was abandoned.
    TimedOut(ElectionCall),
    /// Stopped; the machine does nothing more.
    Finished,
}

/// The kinds of calls the election makes, to name one that timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionCall {
    /// A read of the entry.
    Read,
    /// A create (a campaign).
    Create,
    /// A renewal, or the re-read after an unknown outcome.
    Renew,
    /// The release on stop.
    Release,
}

/// This worker, as it appears in the leader entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its worker id.
    pub worker_id: WorkerId,
    /// Its process instance.
    pub instance_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Following the entry; campaigning when it is absent.
    Following {
        op: Option<FollowOp>,
        next_read: Instant,
    },
    Leading(Leading),
    /// Stopped as leader: releasing the entry.
    Releasing {
        op: OpId,
        deadline: Instant,
    },
    Finished,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FollowOp {
    Read {
        id: OpId,
        deadline: Instant,
    },
    Create {
        id: OpId,
        sent: Instant,
        deadline: Instant,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Leading {
    term: u64,
    revision: u64,
    lease_end: Instant,
    next_renewal: Instant,
    op: Option<LeadOp>,
    /// The last renewal's outcome is unknown: re-read before renewing again.
    unknown: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeadOp {
    Renew { id: OpId, sent: Instant },
    Reread { id: OpId },
}

impl LeadOp {
    fn id(self) -> OpId {
        match self {
            Self::Renew { id, .. } | Self::Reread { id } => id,
        }
    }
}

/// Leader election as a machine with no I/O and no clock: feed it [`ElectionEvent`]s with the
/// time, carry out the [`ElectionAction`]s it returns, and wake it at
/// [`next_deadline`](Self::next_deadline).
///
/// ```
/// use std::time::{Duration, Instant};
/// use parti_core::decide::{
///     Candidate, CreateOutcome, ElectionAction, ElectionEvent, ElectionMachine, ElectionTimings,
///     Machine,
/// };
/// use parti_strategy::WorkerId;
///
/// let timings = ElectionTimings {
///     hold: Duration::from_millis(4_500),
///     renew_interval: Duration::from_millis(1_666),
///     read_after_silence: Duration::from_secs(5),
///     retry: Duration::from_millis(250),
/// };
/// let me = Candidate { worker_id: WorkerId::new("worker-0"), instance_id: "i-1".into() };
/// let start = Instant::now();
/// let mut election = ElectionMachine::new(me, timings, start);
/// let actions = election.handle(ElectionEvent::Tick, start);
/// let ElectionAction::Read(read) = actions[0] else { panic!("reads first") };
/// // Nobody leads: campaign.
/// let actions = election.handle(ElectionEvent::Read { op: read, outcome: Ok(None) }, start);
/// let create = actions.iter().find_map(|a| match a {
///     ElectionAction::Create(op, _) => Some(*op),
///     _ => None,
/// }).expect("a campaign");
/// let won = election.handle(ElectionEvent::Created { op: create, outcome: CreateOutcome::Won { revision: 7, term: 7 } }, start);
/// assert!(won.iter().any(|a| matches!(a, ElectionAction::Elected { term: 7, .. })));
/// assert!(election.is_leader(start));
/// // With no renewal acknowledged, the lease ends after `hold`.
/// assert!(!election.is_leader(start + timings.hold));
/// ```
#[derive(Debug, Clone)]
pub struct ElectionMachine {
    me: Candidate,
    timings: ElectionTimings,
    state: State,
    phase: Lifecycle,
    ops: OpIds,
}

impl ElectionMachine {
    /// A follower that reads the entry at `now`.
    pub fn new(me: Candidate, timings: ElectionTimings, now: Instant) -> Self {
        Self {
            me,
            timings,
            state: State::Following {
                op: None,
                next_read: now,
            },
            phase: Lifecycle::Stable,
            ops: OpIds::default(),
        }
    }

    /// The term this worker leads, if its lease holds at `now`.
    pub fn leading(&self, now: Instant) -> Option<u64> {
        match &self.state {
            State::Leading(leading) if now < leading.lease_end => Some(leading.term),
            _ => None,
        }
    }

    /// Whether this worker leads at `now`.
    pub fn is_leader(&self, now: Instant) -> bool {
        self.leading(now).is_some()
    }

    fn check_lease(&mut self, now: Instant, actions: &mut Vec<ElectionAction>) {
        if matches!(&self.state, State::Leading(leading) if now >= leading.lease_end) {
            self.depose(Deposed::LeaseEnded, now, actions);
        }
    }

    /// Stops leading (the calculator first), and follows again.
    fn depose(&mut self, reason: Deposed, now: Instant, actions: &mut Vec<ElectionAction>) {
        let State::Leading(leading) = &self.state else {
            return;
        };
        if let Some(op) = leading.op {
            actions.push(ElectionAction::Cancel(op.id()));
        }
        actions.push(ElectionAction::Deposed {
            term: leading.term,
            reason,
        });
        actions.push(ElectionAction::ShowLeader(None));
        self.state = State::Following {
            op: None,
            next_read: now,
        };
    }

    fn stop(&mut self, now: Instant, actions: &mut Vec<ElectionAction>) {
        match &self.state {
            State::Leading(leading) => {
                let revision = leading.revision;
                self.depose(Deposed::Stopping, now, actions);
                // Released at our revision: a successor's entry (if any) is left alone.
                let op = self.ops.next();
                actions.push(ElectionAction::Release { op, revision });
                self.state = State::Releasing {
                    op,
                    deadline: now + self.timings.renew_interval,
                };
            }
            State::Following { op, .. } => {
                match op {
                    Some(FollowOp::Read { id, .. } | FollowOp::Create { id, .. }) => {
                        actions.push(ElectionAction::Cancel(*id));
                    }
                    None => {}
                }
                self.finish(actions);
            }
            State::Releasing { .. } | State::Finished => {}
        }
    }

    fn finish(&mut self, actions: &mut Vec<ElectionAction>) {
        self.state = State::Finished;
        actions.push(ElectionAction::Finished);
    }

    fn delivered(
        &mut self,
        entry: Option<LeaderEntry>,
        now: Instant,
        actions: &mut Vec<ElectionAction>,
    ) {
        // While leading, the renewals say all: a change shows as a conflict.
        if let State::Following { op, next_read } = &mut self.state {
            match entry {
                Some(entry) => {
                    actions.push(ElectionAction::ShowLeader(Some(entry)));
                    // The watch works: no backstop read while it keeps showing renewals.
                    if op.is_none() {
                        *next_read = now + self.timings.read_after_silence;
                    }
                }
                None => {
                    actions.push(ElectionAction::ShowLeader(None));
                    // Gone: campaign at once (after the call in flight, if any).
                    if op.is_none() {
                        *next_read = now;
                    }
                }
            }
        }
    }

    fn read(
        &mut self,
        id: OpId,
        outcome: Result<Option<LeaderEntry>, ()>,
        now: Instant,
        actions: &mut Vec<ElectionAction>,
    ) {
        match &self.state {
            State::Following {
                op: Some(FollowOp::Read { id: ours, .. }),
                ..
            } if *ours == id => self.followers_read(outcome, now, actions),
            State::Leading(leading) if leading.op == Some(LeadOp::Reread { id }) => {
                self.leaders_reread(outcome, now, actions);
            }
            _ => {}
        }
    }

    /// A follower read the entry: show it, or campaign if it is absent.
    fn followers_read(
        &mut self,
        outcome: Result<Option<LeaderEntry>, ()>,
        now: Instant,
        actions: &mut Vec<ElectionAction>,
    ) {
        self.state = match outcome {
            Ok(Some(entry)) => {
                actions.push(ElectionAction::ShowLeader(Some(entry)));
                // The watch reports changes; read again only if it goes silent.
                State::Following {
                    op: None,
                    next_read: now + self.timings.read_after_silence,
                }
            }
            Ok(None) => {
                actions.push(ElectionAction::ShowLeader(None));
                let id = self.ops.next();
                actions.push(ElectionAction::Create(id, self.record(0)));
                State::Following {
                    op: Some(FollowOp::Create {
                        id,
                        sent: now,
                        deadline: now + self.timings.renew_interval,
                    }),
                    next_read: now,
                }
            }
            Err(()) => State::Following {
                op: None,
                next_read: now + self.timings.retry,
            },
        };
    }

    /// The leader read the entry back after an unknown outcome: adopt the write if it
    /// landed, or stop leading if the entry is another's.
    fn leaders_reread(
        &mut self,
        outcome: Result<Option<LeaderEntry>, ()>,
        now: Instant,
        actions: &mut Vec<ElectionAction>,
    ) {
        let instance = &self.me.instance_id;
        let State::Leading(leading) = &mut self.state else {
            return;
        };
        leading.op = None;
        match outcome {
            Ok(Some(entry))
                if entry.record.instance_id == *instance && entry.term() == leading.term =>
            {
                // The write landed: adopt it and renew on.
                leading.revision = entry.revision;
                leading.unknown = false;
            }
            Ok(_) => self.depose(Deposed::Replaced, now, actions),
            Err(()) => leading.next_renewal = now + self.timings.retry,
        }
    }

    fn created(
        &mut self,
        id: OpId,
        outcome: CreateOutcome,
        now: Instant,
        actions: &mut Vec<ElectionAction>,
    ) {
        let State::Following {
            op: Some(FollowOp::Create { id: ours, sent, .. }),
            ..
        } = self.state
        else {
            return;
        };
        if ours != id {
            return;
        }
        let lease_end = sent + self.timings.hold;
        self.state = match outcome {
            CreateOutcome::Won { revision, term } if now < lease_end => {
                // A new calculator starts idle, whatever an earlier term ended in.
                self.phase = Lifecycle::Stable;
                actions.push(ElectionAction::Elected { term, lease_end });
                State::Leading(Leading {
                    term,
                    revision,
                    lease_end,
                    // The first renewal writes the term into the record at once.
                    next_renewal: now,
                    op: None,
                    unknown: false,
                })
            }
            // Won too late to act on it: the entry expires by itself.
            CreateOutcome::Won { .. } | CreateOutcome::Taken => State::Following {
                op: None,
                next_read: now,
            },
            CreateOutcome::Failed => State::Following {
                op: None,
                next_read: now + self.timings.retry,
            },
        };
    }

    fn renewed(
        &mut self,
        id: OpId,
        outcome: RenewOutcome,
        now: Instant,
        actions: &mut Vec<ElectionAction>,
    ) {
        let record = |term| record(&self.me, self.phase, term);
        let State::Leading(leading) = &mut self.state else {
            return;
        };
        let Some(LeadOp::Renew { id: ours, sent }) = leading.op else {
            return;
        };
        if ours != id {
            return;
        }
        leading.op = None;
        match outcome {
            RenewOutcome::Renewed(revision) => {
                leading.revision = revision;
                leading.lease_end = leading.lease_end.max(sent + self.timings.hold);
                leading.next_renewal = sent + self.timings.renew_interval;
                actions.push(ElectionAction::LeaseExtended {
                    lease_end: leading.lease_end,
                });
                let entry = LeaderEntry {
                    revision,
                    record: record(leading.term),
                };
                actions.push(ElectionAction::ShowLeader(Some(entry)));
            }
            // Another's entry, or an earlier renewal of ours that landed unseen: the re-read
            // tells, at once.
            RenewOutcome::Conflict => {
                leading.unknown = true;
                leading.next_renewal = now;
            }
            RenewOutcome::Failed => {
                leading.unknown = true;
                leading.next_renewal = now + self.timings.retry;
            }
        }
    }

    /// Deadlines of calls in flight, and the calls that are due.
    fn settle(&mut self, now: Instant, actions: &mut Vec<ElectionAction>) {
        match &mut self.state {
            State::Following { op, next_read } => {
                match *op {
                    Some(FollowOp::Read { id, deadline }) if now >= deadline => {
                        actions.push(ElectionAction::Cancel(id));
                        actions.push(ElectionAction::TimedOut(ElectionCall::Read));
                        *op = None;
                        *next_read = now + self.timings.retry;
                    }
                    Some(FollowOp::Create { id, deadline, .. }) if now >= deadline => {
                        actions.push(ElectionAction::Cancel(id));
                        actions.push(ElectionAction::TimedOut(ElectionCall::Create));
                        *op = None;
                        // It may have landed: read before campaigning again, now.
                        *next_read = now;
                        self.settle(now, actions);
                    }
                    Some(_) => {}
                    None if now >= *next_read => {
                        let id = self.ops.next();
                        *op = Some(FollowOp::Read {
                            id,
                            deadline: now + self.timings.renew_interval,
                        });
                        actions.push(ElectionAction::Read(id));
                    }
                    None => {}
                }
            }
            State::Leading(leading) => {
                if leading.op.is_none() && now >= leading.next_renewal {
                    let id = self.ops.next();
                    if leading.unknown {
                        leading.op = Some(LeadOp::Reread { id });
                        actions.push(ElectionAction::Read(id));
                    } else {
                        leading.op = Some(LeadOp::Renew { id, sent: now });
                        let (revision, term) = (leading.revision, leading.term);
                        actions.push(ElectionAction::Renew {
                            op: id,
                            revision,
                            record: self.record(term),
                        });
                    }
                }
            }
            State::Releasing { op, deadline } if now >= *deadline => {
                actions.push(ElectionAction::Cancel(*op));
                actions.push(ElectionAction::TimedOut(ElectionCall::Release));
                self.finish(actions);
            }
            State::Releasing { .. } | State::Finished => {}
        }
    }

    fn record(&self, term: u64) -> LeaderRecord {
        record(&self.me, self.phase, term)
    }
}

/// The record `me` writes as the leader of `term` (0: the campaign's create).
fn record(me: &Candidate, phase: Lifecycle, term: u64) -> LeaderRecord {
    LeaderRecord {
        worker_id: me.worker_id.clone(),
        instance_id: me.instance_id.clone(),
        term,
        floor: 0,
        phase,
    }
}

impl Machine for ElectionMachine {
    type Event = ElectionEvent;
    type Action = ElectionAction;

    fn is_finished(&self) -> bool {
        self.state == State::Finished
    }

    fn next_deadline(&self) -> Option<Instant> {
        match &self.state {
            State::Following {
                op: None,
                next_read,
            } => Some(*next_read),
            State::Following {
                op: Some(FollowOp::Read { deadline, .. } | FollowOp::Create { deadline, .. }),
                ..
            } => Some(*deadline),
            State::Leading(leading) => Some(match leading.op {
                Some(_) => leading.lease_end,
                None => leading.lease_end.min(leading.next_renewal),
            }),
            State::Releasing { deadline, .. } => Some(*deadline),
            State::Finished => None,
        }
    }

    fn handle(&mut self, event: ElectionEvent, now: Instant) -> Vec<ElectionAction> {
        let mut actions = Vec::new();
        // The lease end first: nothing that arrives after it may count.
        self.check_lease(now, &mut actions);
        match event {
            ElectionEvent::Tick => {}
            ElectionEvent::Stop => self.stop(now, &mut actions),
            ElectionEvent::Phase(phase) => {
                self.phase = phase;
                if let State::Leading(leading) = &mut self.state {
                    leading.next_renewal = now;
                }
            }
            ElectionEvent::CalculatorEnded => {
                self.depose(Deposed::CalculatorEnded, now, &mut actions);
            }
            ElectionEvent::Delivered(entry) => self.delivered(entry, now, &mut actions),
            ElectionEvent::WatchStarted => {
                if let State::Following {
                    op: None,
                    next_read,
                } = &mut self.state
                {
                    *next_read = now;
                }
            }
            ElectionEvent::Read { op, outcome } => self.read(op, outcome, now, &mut actions),
            ElectionEvent::Created { op, outcome } => self.created(op, outcome, now, &mut actions),
            ElectionEvent::Renewed { op, outcome } => self.renewed(op, outcome, now, &mut actions),
            ElectionEvent::Released { op } => {
                if matches!(self.state, State::Releasing { op: ours, .. } if ours == op) {
                    self.finish(&mut actions);
                }
            }
        }
        self.settle(now, &mut actions);
        actions
    }

    fn tick() -> ElectionEvent {
        ElectionEvent::Tick
    }
}

#[cfg(test)]
mod tests;
