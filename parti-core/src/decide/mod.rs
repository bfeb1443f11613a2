//! Pure decision logic: the three machines the runtime's one executor runs — the follower
//! (the worker side of the protocol), the election and the leader's calculator — and what
//! they are built from: the manager's states, the classifier of topology changes, the
//! emergency detector, stabilization windows and the cooldown, the handoff planner, backoff.
//!
//! Nothing here does I/O or reads a clock: time is an argument ([`std::time::Instant`]) and
//! decisions are return values, so every rule is tested exhaustively or by property; the
//! async runtime feeds these events and carries out their decisions.

mod backoff;
mod calculator;
mod classify;
mod election;
mod emergency;
mod follower;
mod handoff;
mod heartbeat_lease;
mod heartbeat_view;
mod leader;
mod machine;
mod manager_state;
mod op;
mod worker_assignment;

pub use backoff::Backoff;
pub use calculator::{
    Decision, RebalanceReason, RebalanceScheduler, WindowPolicy, phase_can_become,
};
pub use classify::{ChangeKind, TopologyChange, classify};
pub use election::{
    Candidate, CreateOutcome, Deposed, ElectionAction, ElectionCall, ElectionEvent,
    ElectionMachine, ElectionTimings, LeaderEntry, RenewOutcome,
};
pub use emergency::EmergencyDetector;
pub use follower::{FollowerAction, FollowerEvent, FollowerMachine, FollowerTimings, LeaseRenewal};
pub use handoff::{Beat, Handoff, ListingTicket, RecordChange, Step, StoredRecord};
pub use heartbeat_lease::{HeartbeatLease, Slot, Wrote};
pub use heartbeat_view::{HeartbeatView, merge as merge_beats, merge_listings};
pub use leader::{
    CalculatorAction, CalculatorCall, CalculatorEvent, CalculatorMachine, CalculatorNote,
    CalculatorTimings, Committed, Computed, LostBucket, RecordsRead,
};
pub use machine::Machine;
pub use manager_state::{DegradedReason, InvalidTransition, ManagerState};
pub use op::OpId;
pub use worker_assignment::WorkerAssignment;
