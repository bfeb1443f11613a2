//! What a manager publishes about itself: its state (validated, every transition delivered),
//! its assignment and what it knows of the leader. One lock orders every change; no `.await`
//! happens under it and no hook is called under it (hooks are queued in order and called
//! after the lock is released, so a hook may call any `Manager` method).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use parti_strategy::{PartitionId, WorkerId};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::Hooks;
use super::hooks::LeadershipChange;
pub use crate::decide::WorkerAssignment;
use crate::decide::{DegradedReason, LeaseRenewal, ManagerState};
use crate::telemetry::{self, WorkerLabel};
use crate::wire::{FencingToken, Lifecycle};

/// The leader as a worker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderInfo {
    /// The leader's worker id.
    pub worker_id: WorkerId,
    /// Its term.
    pub term: u64,
    /// What its calculator is doing.
    pub phase: Lifecycle,
}

/// One state transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state left.
    pub from: ManagerState,
    /// The state entered.
    pub to: ManagerState,
}

#[derive(Debug)]
struct Inputs {
    /// Which part of its life the manager is in: `Init`, `ClaimingId`, `Election` (an id is
    /// claimed: the running states follow from the leader and the assignment) or
    /// `Shutdown`.
    stage: ManagerState,
    worker_id: WorkerId,
    leader: Option<LeaderInfo>,
    has_assignment: bool,
    /// Why the heartbeat lease lapsed, while it is lapsed.
    degraded: Option<DegradedReason>,
    transitions: Vec<mpsc::UnboundedSender<Transition>>,
    /// Hook calls waiting to be made, in order, outside the lock.
    hook_calls: VecDeque<HookCall>,
    /// Whether a caller is making the queued hook calls now (the others leave them to it).
    delivering: bool,
}

/// A notification hook to call.
#[derive(Debug, Clone, Copy)]
enum HookCall {
    State(Transition),
    Leadership(LeadershipChange),
}

/// The shared, published status of one manager.
#[derive(Debug)]
pub(crate) struct Status {
    inputs: Mutex<Inputs>,
    state: watch::Sender<ManagerState>,
    assignment: watch::Sender<Arc<WorkerAssignment>>,
    leader: watch::Sender<Option<LeaderInfo>>,
    is_leader: watch::Sender<bool>,
    /// Until when this worker may act on its partitions: the send time of its last
    /// acknowledged heartbeat plus `heartbeat_ttl` minus the margin, and when that
    /// acknowledgement came (`None`: no heartbeat acknowledged in this session yet).
    lease: watch::Sender<Option<LeaseRenewal>>,
    /// Whether the last heartbeat write is unanswered — in flight or failed (a lapse is
    /// then blamed on the store, else on the process).
    heartbeat_unanswered: AtomicBool,
    hooks: Hooks,
    /// The `worker` label of this manager's metrics.
    label: WorkerLabel,
}

impl Status {
    pub(crate) fn new(hooks: Hooks) -> Self {
        Self {
            inputs: Mutex::new(Inputs {
                stage: ManagerState::Init,
                worker_id: WorkerId::new("unclaimed"),
                leader: None,
                has_assignment: false,
                degraded: None,
                transitions: Vec::new(),
                hook_calls: VecDeque::new(),
                delivering: false,
            }),
            state: watch::Sender::new(ManagerState::Init),
            assignment: watch::Sender::new(Arc::default()),
            leader: watch::Sender::new(None),
            is_leader: watch::Sender::new(false),
            lease: watch::Sender::new(None),
            heartbeat_unanswered: AtomicBool::new(false),
            hooks,
            label: WorkerLabel::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inputs> {
        // Nothing panics under this lock; if something ever did, the inputs are still whole.
        self.inputs.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn worker_label(&self) -> WorkerLabel {
        self.label.clone()
    }

    pub(crate) fn hooks(&self) -> &Hooks {
        &self.hooks
    }

    pub(crate) fn state(&self) -> ManagerState {
        *self.state.borrow()
    }

    pub(crate) fn watch_state(&self) -> watch::Receiver<ManagerState> {
        self.state.subscribe()
    }

    pub(crate) fn subscribe_transitions(&self) -> mpsc::UnboundedReceiver<Transition> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().transitions.push(tx);
        rx
    }

    pub(crate) fn worker_id(&self) -> WorkerId {
        self.lock().worker_id.clone()
    }

    pub(crate) fn assignment(&self) -> Arc<WorkerAssignment> {
        self.assignment.borrow().clone()
    }

    pub(crate) fn watch_assignment(&self) -> watch::Receiver<Arc<WorkerAssignment>> {
        self.assignment.subscribe()
    }

    pub(crate) fn leader(&self) -> Option<LeaderInfo> {
        self.leader.borrow().clone()
    }

    pub(crate) fn is_leader(&self) -> bool {
        *self.is_leader.borrow()
    }

    /// Resets the heartbeat lease (a new session has not had a heartbeat acknowledged).
    pub(crate) fn reset_lease(&self) {
        self.lease.send_replace(None);
        self.set_degraded(None);
    }

    /// Extends the heartbeat lease of heartbeat session `session` to `until` (never
    /// shortens it), acknowledged now.
    pub(crate) fn extend_lease(&self, until: Instant, session: u64) {
        let renewal = LeaseRenewal {
            until: until.into_std(),
            acknowledged: Instant::now().into_std(),
            session,
        };
        self.lease.send_if_modified(|lease| {
            let extended = lease.is_none_or(|current| renewal.until > current.until);
            if extended {
                *lease = Some(renewal);
            }
            extended
        });
    }

    /// Records whether the last heartbeat write is unanswered (in flight or failed).
    pub(crate) fn set_heartbeat_unanswered(&self, unanswered: bool) {
        self.heartbeat_unanswered
            .store(unanswered, Ordering::Relaxed);
    }

    /// Whether the last heartbeat write is unanswered (in flight or failed).
    pub(crate) fn heartbeat_unanswered(&self) -> bool {
        self.heartbeat_unanswered.load(Ordering::Relaxed)
    }

    /// The heartbeat lease lapsed (`Some`: the manager is degraded, for this reason) or is
    /// valid again (`None`).
    pub(crate) fn set_degraded(&self, reason: Option<DegradedReason>) {
        let mut inputs = self.lock();
        if inputs.degraded == reason {
            return;
        }
        inputs.degraded = reason;
        telemetry::degraded(&self.label, reason.is_some());
        self.update(&mut inputs);
        self.deliver(inputs);
    }

    pub(crate) fn watch_lease(&self) -> watch::Receiver<Option<LeaseRenewal>> {
        self.lease.subscribe()
    }

    /// Whether this worker owns `partition` under `token` now: it is in the published
    /// assignment with that token, and the heartbeat lease is valid.
    pub(crate) fn owns(&self, partition: &PartitionId, token: FencingToken) -> bool {
        self.assignment().token(partition) == Some(token) && self.lease_valid()
    }

    /// Whether the heartbeat lease is valid now.
    pub(crate) fn lease_valid(&self) -> bool {
        self.lease
            .borrow()
            .is_some_and(|lease| Instant::now().into_std() < lease.until)
    }

    /// Makes the queued hook calls, in order, with the lock released: hooks are user code
    /// and may call back into the manager. Whoever finds calls queued and nobody delivering
    /// delivers them all, also those queued meanwhile (by a hook, say).
    fn deliver<'a>(&'a self, mut inputs: MutexGuard<'a, Inputs>) {
        if inputs.delivering {
            return;
        }
        inputs.delivering = true;
        while let Some(call) = inputs.hook_calls.pop_front() {
            drop(inputs);
            match call {
                HookCall::State(Transition { from, to }) => self.hooks.state_changed(from, to),
                HookCall::Leadership(change) => self.hooks.leadership_changed(change),
            }
            inputs = self.lock();
        }
        inputs.delivering = false;
    }

    /// Enters a stage of the manager's life: `ClaimingId`, `Election` (an id is claimed) or
    /// `Shutdown`.
    pub(crate) fn set_stage(&self, stage: ManagerState) {
        debug_assert!(matches!(
            stage,
            ManagerState::ClaimingId | ManagerState::Election | ManagerState::Shutdown
        ));
        let mut inputs = self.lock();
        inputs.stage = stage;
        if stage != ManagerState::Election {
            inputs.has_assignment = false;
        }
        self.update(&mut inputs);
        self.deliver(inputs);
    }

    pub(crate) fn set_worker_id(&self, worker_id: WorkerId) {
        let mut inputs = self.lock();
        self.label.claimed(&worker_id, self.state());
        inputs.worker_id = worker_id;
    }

    pub(crate) fn set_leader(&self, leader: Option<LeaderInfo>) {
        let mut inputs = self.lock();
        if inputs.leader == leader {
            return;
        }
        inputs.leader = leader.clone();
        self.leader.send_replace(leader);
        self.update(&mut inputs);
        self.deliver(inputs);
    }

    pub(crate) fn set_is_leader(&self, change: LeadershipChange) {
        let mut inputs = self.lock();
        if self.is_leader.send_replace(change.is_leader) != change.is_leader {
            telemetry::leadership(&self.label, change.is_leader);
            inputs.hook_calls.push_back(HookCall::Leadership(change));
        }
        self.deliver(inputs);
    }

    /// Publishes an applied assignment (`None`: this worker holds none, as after losing its
    /// id).
    pub(crate) fn set_assignment(&self, assignment: Option<WorkerAssignment>) {
        let mut inputs = self.lock();
        inputs.has_assignment = assignment.is_some() && inputs.stage == ManagerState::Election;
        // Holding nothing keeps the version last applied: versions a manager shows only grow.
        let assignment = assignment.unwrap_or_else(|| self.assignment.borrow().retain(|_| false));
        telemetry::applied(&self.label, assignment.version(), assignment.len());
        self.assignment.send_replace(Arc::new(assignment));
        self.update(&mut inputs);
        self.deliver(inputs);
    }

    /// Moves the state to what the inputs say, through the intermediate states the
    /// transition table requires, publishing every step.
    fn update(&self, inputs: &mut Inputs) {
        let mut current = self.state();
        let target = target_state(inputs, current);
        while current != target {
            let next = if current.can_become(target) {
                target
            } else {
                match current {
                    ManagerState::Init => ManagerState::ClaimingId,
                    ManagerState::ClaimingId => ManagerState::Election,
                    ManagerState::Election => ManagerState::WaitingAssignment,
                    _ => {
                        tracing::error!(from = %current, to = %target, "no valid path between states");
                        return;
                    }
                }
            };
            self.state.send_replace(next);
            inputs.transitions.retain(|tx| {
                tx.send(Transition {
                    from: current,
                    to: next,
                })
                .is_ok()
            });
            telemetry::state_transition(&self.label, current, next);
            tracing::debug!(worker = %inputs.worker_id, from = %current, to = %next, "state");
            inputs.hook_calls.push_back(HookCall::State(Transition {
                from: current,
                to: next,
            }));
            current = next;
        }
    }
}

/// The state the inputs call for, given the current one (a worker that has had an
/// assignment keeps running while the leader changes).
fn target_state(inputs: &Inputs, current: ManagerState) -> ManagerState {
    match inputs.stage {
        ManagerState::Election if inputs.degraded.is_some() => ManagerState::Degraded {
            reason: inputs.degraded.unwrap_or(DegradedReason::LeaseLapsed),
        },
        ManagerState::Election if !inputs.has_assignment => {
            if inputs.leader.is_some() || current == ManagerState::WaitingAssignment {
                ManagerState::WaitingAssignment
            } else {
                ManagerState::Election
            }
        }
        ManagerState::Election => match &inputs.leader {
            Some(leader) => leader.phase.into(),
            None if current.is_running() => current,
            None => ManagerState::Stable,
        },
        stage => stage,
    }
}
