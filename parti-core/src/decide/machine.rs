//! What the protocol's machines have in common, for the runtime's one executor.

use std::time::Instant;

/// A sans-IO state machine: fed events with the time, it returns what to do and when it
/// must next be woken; it never does I/O and never reads a clock. The runtime's executor
/// runs each one (the follower, the election, the leader's calculator), racing the
/// operations it asks for against [`next_deadline`](Self::next_deadline).
pub trait Machine {
    /// What it is fed.
    type Event;
    /// What it asks for.
    type Action;

    /// Feeds one event at `now`; returns what to do, in order. Every call looks at the
    /// time first, so a deadline that passed counts even if its tick comes late.
    fn handle(&mut self, event: Self::Event, now: Instant) -> Vec<Self::Action>;

    /// When it must next be woken with [`tick`](Self::tick), if ever.
    fn next_deadline(&self) -> Option<Instant>;

    /// Whether it has finished: it does nothing more.
    fn is_finished(&self) -> bool {
        false
    }

    /// The event that only tells it the time.
    fn tick() -> Self::Event;
}
