//! The manager's state machine: which states exist and which moves between them are valid.

use std::fmt;

use crate::wire::Lifecycle;

/// Where a worker's manager is in its life.
///
/// ```text
/// Init → ClaimingId → Election → WaitingAssignment → Stable ⇄ {Scaling → Rebalancing, Emergency}
///                 ↑________________ id lost ____________________|
/// WaitingAssignment and the running states ⇄ Degraded (the heartbeat lease lapsed)
/// any state but Shutdown → Shutdown (terminal)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ManagerState {
    /// Created, not started.
    Init,
    /// Claiming a stable worker id (also after losing it).
    ClaimingId,
    /// Taking part in leader election for the first time.
    Election,
    /// Running, waiting for the first assignment.
    WaitingAssignment,
    /// Owning its assignment; nothing pending.
    Stable,
    /// A stabilization window is open: a rebalance will follow.
    Scaling,
    /// A planned rebalance is being applied.
    Rebalancing,
    /// A worker was lost; its partitions are being re-owned without a window.
    Emergency,
    /// The worker's heartbeat lease lapsed: it released everything and owns nothing
    /// (`assignment()` is empty, `owns` is false) until its heartbeats get through again,
    /// which it keeps trying; then it takes its partitions back by itself.
    Degraded {
        /// Why.
        reason: DegradedReason,
    },
    /// Stopped; terminal.
    Shutdown,
}

/// Why a manager is [`ManagerState::Degraded`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum DegradedReason {
    /// Its heartbeat writes fail: the store is unreachable, or refuses them.
    StoreUnreachable,
    /// Its heartbeat lease ran out with no write failing: the store answered too late, or
    /// the process was paused.
    LeaseLapsed,
}

impl DegradedReason {
    /// The reason's name, as used in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StoreUnreachable => "store_unreachable",
            Self::LeaseLapsed => "lease_lapsed",
        }
    }
}

impl ManagerState {
    /// Every state, in declaration order (each reason of `Degraded` once).
    pub const ALL: [ManagerState; 11] = [
        Self::Init,
        Self::ClaimingId,
        Self::Election,
        Self::WaitingAssignment,
        Self::Stable,
        Self::Scaling,
        Self::Rebalancing,
        Self::Emergency,
        Self::Degraded {
            reason: DegradedReason::StoreUnreachable,
        },
        Self::Degraded {
            reason: DegradedReason::LeaseLapsed,
        },
        Self::Shutdown,
    ];

    /// Whether the manager is past start-up and following assignments.
    pub fn is_running(self) -> bool {
        matches!(
            self,
            Self::Stable | Self::Scaling | Self::Rebalancing | Self::Emergency
        )
    }

    /// Whether `self → to` is a valid transition. Staying in a state is not a transition.
    pub fn can_become(self, to: ManagerState) -> bool {
        use ManagerState::*;
        match (self, to) {
            (Shutdown, _) => false,
            (from, to) if from == to => false,
            (_, Shutdown) => true,
            (Init, ClaimingId) => true,
            (ClaimingId, Election) => true,
            (Election, WaitingAssignment) => true,
            // Losing the id (a failed renewal) sends any later state back to claiming one.
            (
                Election
                | WaitingAssignment
                | Stable
                | Scaling
                | Rebalancing
                | Emergency
                | Degraded { .. },
                ClaimingId,
            ) => true,
            // A lapsed lease degrades a worker that has started following assignments; it
            // comes back to whatever the leader's phase says (or to waiting for a record).
            (WaitingAssignment | Stable | Scaling | Rebalancing | Emergency, Degraded { .. }) => {
                true
            }
            (Degraded { .. }, Degraded { .. }) => true,
            (Degraded { .. }, WaitingAssignment | Stable | Scaling | Rebalancing | Emergency) => {
                true
            }
            // The first assignment may arrive in any phase of the leader's calculator.
            (WaitingAssignment, Stable | Scaling | Rebalancing | Emergency) => true,
            // Between the running states every move is valid: the leader's phase drives them.
            (
                Stable | Scaling | Rebalancing | Emergency,
                Stable | Scaling | Rebalancing | Emergency,
            ) => true,
            _ => false,
        }
    }

    /// `to`, if `self → to` is valid.
    ///
    /// # Errors
    /// [`InvalidTransition`] naming both states otherwise.
    pub fn become_(self, to: ManagerState) -> Result<ManagerState, InvalidTransition> {
        if self.can_become(to) {
            Ok(to)
        } else {
            Err(InvalidTransition { from: self, to })
        }
    }

    /// The state's name, as used in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Init => "init",
            Self::ClaimingId => "claiming_id",
            Self::Election => "election",
            Self::WaitingAssignment => "waiting_assignment",
            Self::Stable => "stable",
            Self::Scaling => "scaling",
            Self::Rebalancing => "rebalancing",
            Self::Emergency => "emergency",
            Self::Degraded { .. } => "degraded",
            Self::Shutdown => "shutdown",
        }
    }
}

impl fmt::Display for ManagerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Degraded { reason } => write!(f, "degraded ({})", reason.as_str()),
            state => f.write_str(state.as_str()),
        }
    }
}

/// A state change the manager's state machine does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid manager state transition {from} → {to}")]
pub struct InvalidTransition {
    /// The current state.
    pub from: ManagerState,
    /// The refused next state.
    pub to: ManagerState,
}

impl From<Lifecycle> for ManagerState {
    /// The running state that mirrors the leader's phase.
    fn from(phase: Lifecycle) -> Self {
        match phase {
            Lifecycle::Stable => Self::Stable,
            Lifecycle::Scaling => Self::Scaling,
            Lifecycle::Rebalancing => Self::Rebalancing,
            Lifecycle::Emergency => Self::Emergency,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DegradedReason::{LeaseLapsed, StoreUnreachable};
    use super::ManagerState::{self, *};

    /// The full table, written out: every pair not listed is invalid.
    const VALID: &[(ManagerState, ManagerState)] = &[
        (Init, ClaimingId),
        (Init, Shutdown),
        (ClaimingId, Election),
        (ClaimingId, Shutdown),
        (Election, ClaimingId),
        (Election, WaitingAssignment),
        (Election, Shutdown),
        (WaitingAssignment, ClaimingId),
        (WaitingAssignment, Stable),
        (WaitingAssignment, Scaling),
        (WaitingAssignment, Rebalancing),
        (WaitingAssignment, Emergency),
        (WaitingAssignment, Shutdown),
        (Stable, ClaimingId),
        (Stable, Scaling),
        (Stable, Rebalancing),
        (Stable, Emergency),
        (Stable, Shutdown),
        (Scaling, ClaimingId),
        (Scaling, Stable),
        (Scaling, Rebalancing),
        (Scaling, Emergency),
        (Scaling, Shutdown),
        (Rebalancing, ClaimingId),
        (Rebalancing, Stable),
        (Rebalancing, Scaling),
        (Rebalancing, Emergency),
        (Rebalancing, Shutdown),
        (Emergency, ClaimingId),
        (Emergency, Stable),
        (Emergency, Scaling),
        (Emergency, Rebalancing),
        (Emergency, Shutdown),
        (WaitingAssignment, STORE),
        (WaitingAssignment, LAPSED),
        (Stable, STORE),
        (Stable, LAPSED),
        (Scaling, STORE),
        (Scaling, LAPSED),
        (Rebalancing, STORE),
        (Rebalancing, LAPSED),
        (Emergency, STORE),
        (Emergency, LAPSED),
        (STORE, LAPSED),
        (LAPSED, STORE),
        (STORE, ClaimingId),
        (STORE, WaitingAssignment),
        (STORE, Stable),
        (STORE, Scaling),
        (STORE, Rebalancing),
        (STORE, Emergency),
        (STORE, Shutdown),
        (LAPSED, ClaimingId),
        (LAPSED, WaitingAssignment),
        (LAPSED, Stable),
        (LAPSED, Scaling),
        (LAPSED, Rebalancing),
        (LAPSED, Emergency),
        (LAPSED, Shutdown),
    ];

    const STORE: ManagerState = Degraded {
        reason: StoreUnreachable,
    };
    const LAPSED: ManagerState = Degraded {
        reason: LeaseLapsed,
    };

    #[test]
    fn every_pair_of_states_matches_the_table() {
        for from in ManagerState::ALL {
            for to in ManagerState::ALL {
                let expected = VALID.contains(&(from, to));
                assert_eq!(from.can_become(to), expected, "{from} → {to}");
                assert_eq!(from.become_(to).is_ok(), expected, "{from} → {to}");
            }
        }
    }

    #[test]
    fn shutdown_is_terminal_and_reachable_from_everywhere_else() {
        for state in ManagerState::ALL {
            assert!(!Shutdown.can_become(state));
            assert_eq!(state.can_become(Shutdown), state != Shutdown);
        }
    }

    #[test]
    fn errors_name_both_states() {
        let err = Init.become_(Stable).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid manager state transition init → stable"
        );
    }
}
