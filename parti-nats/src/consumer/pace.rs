//! Pacing the creation of durable consumers, so that a fleet starting at once (100 workers ×
//! 6,000 partitions) does not send the server thousands of creations in the same instant:
//! at most `rate` per second per worker, each also delayed by a jitter spread over its
//! slot's length, so workers do not fire in step.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Hands out creation slots.
#[derive(Debug)]
pub(crate) struct Pace {
    spacing: Duration,
    next: Mutex<Option<Instant>>,
}

impl Pace {
    /// At most `per_second` slots per second (at least 1).
    pub(crate) fn new(per_second: u32) -> Self {
        Self {
            spacing: Duration::from_secs(1) / per_second.max(1),
            next: Mutex::new(None),
        }
    }

    /// The instant the caller may create at: the next free slot, plus a jitter in
    /// `[0, spacing)` derived from `spread` (a hash of what is being created).
    pub(crate) fn slot(&self, spread: u64) -> Instant {
        let now = Instant::now();
        let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = next.map_or(now, |next| next.max(now));
        *next = Some(slot + self.spacing);
        let nanos = u64::try_from(self.spacing.as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        slot + Duration::from_nanos(spread % nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn slots_are_spaced_by_the_rate_with_a_jitter_inside_each() {
        let pace = Pace::new(10);
        let t0 = Instant::now();
        let slots: Vec<Instant> = (0..20u64).map(|i| pace.slot(i * 7_919_000)).collect();
        for (i, slot) in slots.iter().enumerate() {
            let start = t0 + Duration::from_millis(100) * i as u32;
            assert!(
                *slot >= start && *slot < start + Duration::from_millis(100),
                "{i}"
            );
        }
        // Once time has passed, a slot is never in the past.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(pace.slot(0) >= Instant::now());
    }
}
