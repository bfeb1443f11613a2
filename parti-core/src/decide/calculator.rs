//! The leader calculator's state machine: when to rebalance after a topology change.
//!
//! It decides only *when*; what to compute is the strategy's job and doing it is the
//! async shell's. Time is an argument, so every rule is tested on plain instants.

use std::time::{Duration, Instant};

use super::ChangeKind;
use crate::wire::Lifecycle;

/// Whether the calculator may move from phase `from` to `to`: Stable → Scaling →
/// Rebalancing → Stable, Stable/Scaling → Emergency → Stable, and a change during a
/// rebalance opening a window right after it (Rebalancing/Emergency → Scaling). The phases
/// are [`Lifecycle`]'s: what the scheduler is doing is what the leader publishes.
pub fn phase_can_become(from: Lifecycle, to: Lifecycle) -> bool {
    use Lifecycle::*;
    matches!(
        (from, to),
        (Stable, Scaling)
            | (Stable, Emergency)
            | (Stable, Rebalancing)
            | (Scaling, Rebalancing)
            | (Scaling, Emergency)
            | (Rebalancing, Stable)
            | (Rebalancing, Scaling)
            | (Rebalancing, Emergency)
            | (Rebalancing, Rebalancing)
            | (Emergency, Stable)
            | (Emergency, Rebalancing)
            | (Emergency, Scaling)
            | (Emergency, Emergency)
    )
}

/// Why a rebalance runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RebalanceReason {
    /// After the cold-start window.
    ColdStart,
    /// After the planned-scale window (and the cooldown).
    PlannedScale,
    /// After a fleet restart's window.
    Restart,
    /// Workers were lost: at once.
    Emergency,
    /// Workers stopped gracefully: at once.
    Leave,
    /// The partition set changed: at once.
    Refresh,
}

impl RebalanceReason {
    /// The reason's name, as used in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ColdStart => "cold_start",
            Self::PlannedScale => "planned_scale",
            Self::Restart => "restart",
            Self::Emergency => "emergency",
            Self::Leave => "leave",
            Self::Refresh => "refresh",
        }
    }

    /// The phase the leader publishes while this rebalance runs: only a lost worker is an
    /// emergency; a graceful leave and a refresh of the partition set are rebalances, also
    /// when they run at once.
    pub fn lifecycle(self) -> Lifecycle {
        match self {
            Self::Emergency => Lifecycle::Emergency,
            Self::ColdStart | Self::PlannedScale | Self::Restart | Self::Leave | Self::Refresh => {
                Lifecycle::Rebalancing
            }
        }
    }
}

impl From<ChangeKind> for RebalanceReason {
    /// The rebalance a topology change of this kind leads to.
    fn from(kind: ChangeKind) -> Self {
        match kind {
            ChangeKind::ColdStart => Self::ColdStart,
            ChangeKind::PlannedScale => Self::PlannedScale,
            ChangeKind::Restart => Self::Restart,
            ChangeKind::Emergency => Self::Emergency,
            ChangeKind::Leave => Self::Leave,
        }
    }
}

/// What the shell should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nothing until the next event.
    Nothing,
    /// Call [`RebalanceScheduler::poll`] at this instant (or on the next event, if sooner).
    WakeAt(Instant),
    /// Compute and publish an assignment now, then call [`RebalanceScheduler::finished`].
    Rebalance(RebalanceReason),
}

/// The windows and the cooldown (from [`Config`](crate::config::Config)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowPolicy {
    /// Wait after a cold start or a fleet restart.
    pub cold_start_window: Duration,
    /// Wait after workers join.
    pub planned_scale_window: Duration,
    /// Least time between the end of one rebalance and a planned one.
    pub cooldown: Duration,
}

/// After the last arrival in a cold-start window, a tenth of the window stays quiet.
const COLD_START_QUIET_PARTS: u32 = 10;

#[derive(Debug, Clone, Copy)]
struct Window {
    reason: RebalanceReason,
    opened: Instant,
    length: Duration,
    due: Instant,
}

impl Window {
    fn open(reason: RebalanceReason, length: Duration, now: Instant) -> Self {
        Self {
            reason,
            opened: now,
            length,
            due: now + length,
        }
    }

    /// A further change at `now` extends the window, never past twice its length from
    /// opening. A cold-start (or restart) window stays anchored at its opening — a fleet
    /// starting together is counted in over its length — and only leaves a tenth of it
    /// quiet after the last arrival, so a burst still under way is not cut; a
    /// planned-scale window restarts, so joins spread over time make one rebalance.
    fn extend(&mut self, now: Instant) {
        let wanted = match self.reason {
            RebalanceReason::ColdStart | RebalanceReason::Restart => {
                self.due.max(now + self.length / COLD_START_QUIET_PARTS)
            }
            _ => now + self.length,
        };
        self.due = wanted.min(self.opened + self.length * 2);
    }
}

/// Decides when the leader rebalances.
///
/// - A cold start or a fleet restart opens the cold-start window, joins the planned-scale
///   window, and one rebalance at its end covers every change during it. A cold-start
///   window ends its length after it opened, or a tenth of its length after the last
///   arrival if that is later (a burst of starts still under way); a planned-scale window
///   restarts with each join. Neither lasts past twice its length.
/// - A planned rebalance also waits for the cooldown since the last rebalance ended.
/// - An emergency (or a refresh of the partition set) rebalances at once: it closes any open
///   window (its rebalance covers the joins too) and never waits for the cooldown.
/// - A change that arrives while a rebalance is running is handled when it finishes.
///
/// ```
/// use std::time::{Duration, Instant};
/// use parti_core::decide::{ChangeKind, Decision, RebalanceReason, RebalanceScheduler, WindowPolicy};
///
/// let s = Duration::from_secs(1);
/// let policy = WindowPolicy { cold_start_window: 30 * s, planned_scale_window: 10 * s, cooldown: 10 * s };
/// let mut scheduler = RebalanceScheduler::new(policy);
/// let t0 = Instant::now();
/// assert_eq!(scheduler.on_change(ChangeKind::ColdStart, t0), Decision::WakeAt(t0 + 30 * s));
/// assert_eq!(scheduler.poll(t0 + 30 * s), Decision::Rebalance(RebalanceReason::ColdStart));
/// assert_eq!(scheduler.finished(t0 + 30 * s), Decision::Nothing);
/// assert_eq!(
///     scheduler.on_change(ChangeKind::Emergency, t0 + 31 * s),
///     Decision::Rebalance(RebalanceReason::Emergency)
/// );
/// ```
#[derive(Debug, Clone)]
pub struct RebalanceScheduler {
    policy: WindowPolicy,
    phase: Lifecycle,
    window: Option<Window>,
    last_rebalance_end: Option<Instant>,
    /// Changes seen during a running rebalance: the most urgent immediate reason, and
    /// whether window-driven changes arrived (with their kind).
    queued_immediate: Option<RebalanceReason>,
    queued_windowed: Option<ChangeKind>,
}

impl RebalanceScheduler {
    /// A scheduler in [`Lifecycle::Stable`].
    pub fn new(policy: WindowPolicy) -> Self {
        Self {
            policy,
            phase: Lifecycle::Stable,
            window: None,
            last_rebalance_end: None,
            queued_immediate: None,
            queued_windowed: None,
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Lifecycle {
        self.phase
    }

    /// Treats the last rebalance as having ended at `at` (a new leader resuming a fleet that
    /// already holds assignments: planned rebalances then respect the cooldown from there).
    pub fn resume_after(&mut self, at: Instant) {
        self.last_rebalance_end = Some(at);
    }

    fn enter(&mut self, phase: Lifecycle) {
        debug_assert!(
            self.phase == phase || phase_can_become(self.phase, phase),
            "calculator transition {:?} → {phase:?}",
            self.phase
        );
        self.phase = phase;
    }

    fn rebalancing(&self) -> bool {
        matches!(self.phase, Lifecycle::Rebalancing | Lifecycle::Emergency)
    }

    /// A topology change of `kind` happened at `now`.
    pub fn on_change(&mut self, kind: ChangeKind, now: Instant) -> Decision {
        if self.rebalancing() {
            match kind {
                ChangeKind::Emergency => self.queued_immediate = Some(RebalanceReason::Emergency),
                ChangeKind::Leave => {
                    if self.queued_immediate != Some(RebalanceReason::Emergency) {
                        self.queued_immediate = Some(RebalanceReason::Leave);
                    }
                }
                windowed => {
                    self.queued_windowed = Some(match (self.queued_windowed, windowed) {
                        // A cold start or restart outweighs joins.
                        (
                            Some(stronger @ (ChangeKind::ColdStart | ChangeKind::Restart)),
                            ChangeKind::PlannedScale,
                        ) => stronger,
                        _ => windowed,
                    })
                }
            }
            return Decision::Nothing;
        }
        match kind {
            ChangeKind::Emergency | ChangeKind::Leave => self.immediately(kind.into()),
            ChangeKind::ColdStart | ChangeKind::Restart => {
                match &mut self.window {
                    Some(window)
                        if matches!(
                            window.reason,
                            RebalanceReason::ColdStart | RebalanceReason::Restart
                        ) =>
                    {
                        window.extend(now);
                    }
                    _ => {
                        self.window = Some(Window::open(
                            kind.into(),
                            self.policy.cold_start_window,
                            now,
                        ));
                    }
                }
                self.enter(Lifecycle::Scaling);
                self.poll(now)
            }
            ChangeKind::PlannedScale => {
                match &mut self.window {
                    // Joins during any open window are more of the same arrivals.
                    Some(window) => window.extend(now),
                    None => {
                        self.window = Some(Window::open(
                            kind.into(),
                            self.policy.planned_scale_window,
                            now,
                        ));
                    }
                }
                self.enter(Lifecycle::Scaling);
                self.poll(now)
            }
        }
    }

    /// The partition set changed: rebalance at once (after a running rebalance).
    pub fn on_refresh(&mut self, _now: Instant) -> Decision {
        if self.rebalancing() {
            self.queued_immediate
                .get_or_insert(RebalanceReason::Refresh);
            return Decision::Nothing;
        }
        self.immediately(RebalanceReason::Refresh)
    }

    fn immediately(&mut self, reason: RebalanceReason) -> Decision {
        // The rebalance covers whatever the open window was waiting for.
        self.window = None;
        self.enter(reason.lifecycle());
        Decision::Rebalance(reason)
    }

    /// Time passed: rebalance if the open window is due and the cooldown allows.
    pub fn poll(&mut self, now: Instant) -> Decision {
        let Some(window) = self.window else {
            return Decision::Nothing;
        };
        if self.rebalancing() {
            return Decision::Nothing;
        }
        let cooldown_end = self
            .last_rebalance_end
            .map(|end| end + self.policy.cooldown)
            .filter(|_| window.reason == RebalanceReason::PlannedScale);
        let ready_at = match cooldown_end {
            Some(cooldown_end) => window.due.max(cooldown_end),
            None => window.due,
        };
        if now < ready_at {
            return Decision::WakeAt(ready_at);
        }
        self.window = None;
        self.enter(Lifecycle::Rebalancing);
        Decision::Rebalance(window.reason)
    }

    /// The running rebalance was published (or given up) at `now`.
    pub fn finished(&mut self, now: Instant) -> Decision {
        if !self.rebalancing() {
            return Decision::Nothing;
        }
        self.last_rebalance_end = Some(now);
        if let Some(reason) = self.queued_immediate.take() {
            // Pending window changes are covered by this rebalance too.
            self.queued_windowed = None;
            self.enter(reason.lifecycle());
            return Decision::Rebalance(reason);
        }
        self.enter(Lifecycle::Stable);
        match self.queued_windowed.take() {
            Some(kind) => self.on_change(kind, now),
            None => Decision::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn only_a_lost_worker_makes_an_emergency_phase() {
        let policy = WindowPolicy {
            cold_start_window: 30 * S,
            planned_scale_window: 10 * S,
            cooldown: 10 * S,
        };
        let t0 = Instant::now();
        for (kind, reason, phase) in [
            (
                Some(ChangeKind::Emergency),
                RebalanceReason::Emergency,
                Lifecycle::Emergency,
            ),
            (
                Some(ChangeKind::Leave),
                RebalanceReason::Leave,
                Lifecycle::Rebalancing,
            ),
            (None, RebalanceReason::Refresh, Lifecycle::Rebalancing),
        ] {
            let mut scheduler = RebalanceScheduler::new(policy);
            let decision = match kind {
                Some(kind) => scheduler.on_change(kind, t0),
                None => scheduler.on_refresh(t0),
            };
            assert_eq!(decision, Decision::Rebalance(reason), "at once, no window");
            assert_eq!(scheduler.phase(), phase, "{reason:?}");
            assert_eq!(scheduler.finished(t0), Decision::Nothing);
            assert_eq!(scheduler.phase(), Lifecycle::Stable);
        }
    }

    fn policy() -> WindowPolicy {
        WindowPolicy {
            cold_start_window: 30 * S,
            planned_scale_window: 10 * S,
            cooldown: 10 * S,
        }
    }

    #[test]
    fn a_cold_start_waits_its_window() {
        let mut scheduler = RebalanceScheduler::new(policy());
        let t0 = Instant::now();
        assert_eq!(
            scheduler.on_change(ChangeKind::ColdStart, t0),
            Decision::WakeAt(t0 + 30 * S)
        );
        assert_eq!(scheduler.phase(), Lifecycle::Scaling);
        assert_eq!(scheduler.poll(t0 + 29 * S), Decision::WakeAt(t0 + 30 * S));
        assert_eq!(
            scheduler.poll(t0 + 30 * S),
            Decision::Rebalance(RebalanceReason::ColdStart)
        );
        assert_eq!(scheduler.phase(), Lifecycle::Rebalancing);
        assert_eq!(scheduler.finished(t0 + 30 * S), Decision::Nothing);
        assert_eq!(scheduler.phase(), Lifecycle::Stable);
    }

    #[test]
    fn a_cold_start_window_stays_anchored_and_leaves_a_quiet_tenth_after_the_last_arrival() {
        let mut scheduler = RebalanceScheduler::new(policy());
        let t0 = Instant::now();
        scheduler.on_change(ChangeKind::ColdStart, t0);
        // The fleet arriving over its first seconds: the window still ends 30 s after it
        // opened (it used to restart with each arrival: 33.5 s).
        for ms in (100..=3_500).step_by(100) {
            assert_eq!(
                scheduler.on_change(ChangeKind::PlannedScale, t0 + Duration::from_millis(ms)),
                Decision::WakeAt(t0 + 30 * S),
                "an arrival {ms} ms in"
            );
        }
        // A late arrival leaves a tenth of the window quiet after it.
        assert_eq!(
            scheduler.on_change(ChangeKind::PlannedScale, t0 + 29 * S),
            Decision::WakeAt(t0 + 32 * S)
        );
        // Arrivals that never stop: twice the window at most.
        for s in 30..59 {
            scheduler.on_change(ChangeKind::ColdStart, t0 + s * S);
        }
        assert_eq!(scheduler.poll(t0 + 59 * S), Decision::WakeAt(t0 + 60 * S));
        assert_eq!(
            scheduler.poll(t0 + 60 * S),
            Decision::Rebalance(RebalanceReason::ColdStart)
        );
    }

    #[test]
    fn several_joins_in_one_window_make_one_rebalance_and_the_window_is_capped_at_twice() {
        let mut scheduler = RebalanceScheduler::new(policy());
        let t0 = Instant::now();
        assert_eq!(
            scheduler.on_change(ChangeKind::PlannedScale, t0),
            Decision::WakeAt(t0 + 10 * S)
        );
        assert_eq!(
            scheduler.on_change(ChangeKind::PlannedScale, t0 + 5 * S),
            Decision::WakeAt(t0 + 15 * S)
        );
        assert_eq!(
            scheduler.on_change(ChangeKind::PlannedScale, t0 + 14 * S),
            Decision::WakeAt(t0 + 20 * S),
            "capped at twice the window from its opening"
        );
        assert_eq!(
            scheduler.poll(t0 + 20 * S),
            Decision::Rebalance(RebalanceReason::PlannedScale)
        );
        assert_eq!(scheduler.finished(t0 + 20 * S), Decision::Nothing);
        assert_eq!(
            scheduler.poll(t0 + 40 * S),
            Decision::Nothing,
            "one rebalance covered all joins"
        );
    }

    #[test]
    fn an_emergency_pre_empts_an_open_window() {
        let mut scheduler = RebalanceScheduler::new(policy());
        let t0 = Instant::now();
        scheduler.on_change(ChangeKind::PlannedScale, t0);
        assert_eq!(
            scheduler.on_change(ChangeKind::Emergency, t0 + S),
            Decision::Rebalance(RebalanceReason::Emergency)
        );
        assert_eq!(scheduler.phase(), Lifecycle::Emergency);
        assert_eq!(scheduler.finished(t0 + S), Decision::Nothing);
        assert_eq!(
            scheduler.poll(t0 + 11 * S),
            Decision::Nothing,
            "the window was covered"
        );
    }

    #[test]
    fn a_planned_rebalance_waits_for_the_cooldown_but_an_emergency_does_not() {
        let policy = WindowPolicy {
            cold_start_window: 30 * S,
            planned_scale_window: 5 * S,
            cooldown: 10 * S,
        };
        let mut scheduler = RebalanceScheduler::new(policy);
        let t0 = Instant::now();
        assert_eq!(
            scheduler.on_change(ChangeKind::Emergency, t0),
            Decision::Rebalance(RebalanceReason::Emergency)
        );
        scheduler.finished(t0);
        // Window due at t0+6, cooldown until t0+10.
        assert_eq!(
            scheduler.on_change(ChangeKind::PlannedScale, t0 + S),
            Decision::WakeAt(t0 + 10 * S)
        );
        assert_eq!(scheduler.poll(t0 + 6 * S), Decision::WakeAt(t0 + 10 * S));
        // An emergency during the cooldown goes at once.
        assert_eq!(
            scheduler.on_change(ChangeKind::Emergency, t0 + 7 * S),
            Decision::Rebalance(RebalanceReason::Emergency)
        );
        scheduler.finished(t0 + 7 * S);
        // A new planned change waits for the cooldown from the emergency's end.
        assert_eq!(
            scheduler.on_change(ChangeKind::PlannedScale, t0 + 8 * S),
            Decision::WakeAt(t0 + 17 * S)
        );
        assert_eq!(
            scheduler.poll(t0 + 17 * S),
            Decision::Rebalance(RebalanceReason::PlannedScale)
        );
    }

    #[test]
    fn a_restart_replaces_a_planned_window_with_the_cold_start_window() {
        let mut scheduler = RebalanceScheduler::new(policy());
        let t0 = Instant::now();
        scheduler.on_change(ChangeKind::PlannedScale, t0);
        assert_eq!(
            scheduler.on_change(ChangeKind::Restart, t0 + S),
            Decision::WakeAt(t0 + 31 * S)
        );
        assert_eq!(
            scheduler.poll(t0 + 31 * S),
            Decision::Rebalance(RebalanceReason::Restart)
        );
    }

    #[test]
    fn changes_during_a_rebalance_are_handled_when_it_finishes() {
        let mut scheduler = RebalanceScheduler::new(policy());
        let t0 = Instant::now();
        scheduler.on_change(ChangeKind::Emergency, t0);
        assert_eq!(
            scheduler.on_change(ChangeKind::PlannedScale, t0),
            Decision::Nothing
        );
        assert_eq!(scheduler.on_refresh(t0), Decision::Nothing);
        assert_eq!(
            scheduler.finished(t0 + S),
            Decision::Rebalance(RebalanceReason::Refresh)
        );
        assert_eq!(
            scheduler.finished(t0 + S),
            Decision::Nothing,
            "the refresh covered the join"
        );

        scheduler.on_change(ChangeKind::Emergency, t0 + 2 * S);
        scheduler.on_change(ChangeKind::PlannedScale, t0 + 2 * S);
        assert_eq!(
            scheduler.finished(t0 + 3 * S),
            Decision::WakeAt(t0 + 13 * S),
            "a queued join opens its window when the rebalance ends"
        );
    }

    #[derive(Debug, Clone)]
    enum Event {
        Change(ChangeKind),
        Refresh,
        Advance(u64),
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            3 => prop_oneof![
                Just(ChangeKind::ColdStart),
                Just(ChangeKind::PlannedScale),
                Just(ChangeKind::Restart),
                Just(ChangeKind::Emergency),
            ].prop_map(Event::Change),
            1 => Just(Event::Refresh),
            4 => (1u64..20_000).prop_map(Event::Advance),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1_000))]

        /// Driving the scheduler like the shell does (rebalances finish at once), with random
        /// changes and time: transitions stay valid (checked inside), immediate reasons are
        /// never delayed, windowed ones never come early nor later than twice their window
        /// (plus the cooldown for planned ones).
        #[test]
        fn the_scheduler_keeps_its_promises(events in proptest::collection::vec(event(), 1..60)) {
            let policy = WindowPolicy { cold_start_window: 3 * S, planned_scale_window: 2 * S, cooldown: S };
            let mut scheduler = RebalanceScheduler::new(policy);
            let t0 = Instant::now();
            let mut now = t0;
            let mut wake: Option<Instant> = None;
            let mut window_opened: Option<Instant> = None;
            // Whether the open window is the cold-start one: a cold start or restart
            // replaces a planned-scale window with a new one, opened then.
            let mut window_is_cold = false;
            let mut last_end: Option<Instant> = None;
            for event in events {
                let decision = match event {
                    Event::Change(kind) => {
                        match kind {
                            ChangeKind::Emergency => {}
                            ChangeKind::ColdStart | ChangeKind::Restart if !window_is_cold => {
                                window_opened = Some(now);
                                window_is_cold = true;
                            }
                            _ if window_opened.is_none() => window_opened = Some(now),
                            _ => {}
                        }
                        let d = scheduler.on_change(kind, now);
                        if kind == ChangeKind::Emergency {
                            prop_assert_eq!(d, Decision::Rebalance(RebalanceReason::Emergency));
                        }
                        d
                    }
                    Event::Refresh => {
                        let d = scheduler.on_refresh(now);
                        prop_assert_eq!(d, Decision::Rebalance(RebalanceReason::Refresh));
                        d
                    }
                    Event::Advance(ms) => {
                        let target = now + Duration::from_millis(ms);
                        // The shell wakes at every requested instant on the way.
                        let mut d = Decision::Nothing;
                        while let Some(at) = wake.filter(|at| *at <= target) {
                            now = at;
                            d = scheduler.poll(now);
                            wake = None;
                            if let Decision::WakeAt(next) = d { wake = Some(next); }
                            if matches!(d, Decision::Rebalance(_)) { break; }
                        }
                        if !matches!(d, Decision::Rebalance(_)) { now = target; }
                        d
                    }
                };
                let mut decision = decision;
                loop {
                    match decision {
                        Decision::Rebalance(reason) => {
                            if matches!(reason, RebalanceReason::PlannedScale | RebalanceReason::ColdStart | RebalanceReason::Restart) {
                                let opened = window_opened.expect("a window was open");
                                let length = if reason == RebalanceReason::PlannedScale { policy.planned_scale_window } else { policy.cold_start_window };
                                prop_assert!(now >= opened + length.min(policy.planned_scale_window), "early: {:?}", now - opened);
                                let mut latest = opened + 2 * policy.cold_start_window;
                                if let Some(end) = last_end { latest = latest.max(end + policy.cooldown); }
                                prop_assert!(now <= latest, "late: {:?}", now - opened);
                                if reason == RebalanceReason::PlannedScale {
                                    if let Some(end) = last_end {
                                        prop_assert!(now >= end + policy.cooldown, "cooldown not respected");
                                    }
                                }
                            }
                            window_opened = None;
                            window_is_cold = false;
                            last_end = Some(now);
                            decision = scheduler.finished(now);
                            if let Decision::WakeAt(_) = decision { window_opened = Some(now); }
                        }
                        Decision::WakeAt(at) => { wake = Some(at); break; }
                        Decision::Nothing => break,
                    }
                }
            }
        }
    }
}
