//! Retries as data: when to try a failed operation again — capped exponential backoff with
//! jitter — as an answer the caller turns into a deadline, never a sleep inside a loop.

use std::time::Duration;

/// Capped exponential backoff with deterministic jitter: the `n`-th retry after a failure
/// waits between half and all of `min(base × 2ⁿ, cap)`, the share chosen by hashing `seed`
/// and `n` (so runs on a paused clock replay exactly, while workers with different seeds
/// spread out).
///
/// ```
/// use std::time::Duration;
/// use parti_core::decide::Backoff;
///
/// let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2), 7);
/// let first = backoff.next_delay();
/// assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
/// for _ in 0..10 {
///     assert!(backoff.next_delay() <= Duration::from_secs(2));
/// }
/// backoff.reset();
/// assert!(backoff.next_delay() <= Duration::from_millis(100));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    seed: u64,
    attempt: u32,
}

impl Backoff {
    /// A backoff starting at `base`, never above `cap`, jittered by `seed`.
    pub fn new(base: Duration, cap: Duration, seed: u64) -> Self {
        Self {
            base,
            cap: cap.max(base),
            seed,
            attempt: 0,
        }
    }

    /// How long to wait before the next attempt; each call counts one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let full = self
            .base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        // Half of the delay is fixed, the other half jittered in [0, 1).
        let share = (mix(self.seed ^ u64::from(self.attempt)) >> 11) as f64 / (1u64 << 53) as f64;
        full / 2 + full.mul_f64(share / 2.0)
    }

    /// After a success: the next failure starts again from `base`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// How many failures in a row were counted.
    pub fn failures(&self) -> u32 {
        self.attempt
    }
}

/// A 64-bit mixer (splitmix64's finaliser).
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Every delay is within half and all of the capped exponential, and grows until
        /// the cap.
        #[test]
        fn delays_stay_within_their_bounds(base_ms in 1u64..1000, cap_ms in 1u64..60_000, seed: u64) {
            let base = Duration::from_millis(base_ms);
            let cap = Duration::from_millis(cap_ms).max(base);
            let mut backoff = Backoff::new(base, cap, seed);
            for n in 0..30u32 {
                let full = base.saturating_mul(1 << n.min(20)).min(cap);
                let delay = backoff.next_delay();
                prop_assert!(delay >= full / 2 && delay <= full, "{n}: {delay:?} vs {full:?}");
            }
        }
    }

    #[test]
    fn same_seed_same_delays() {
        let run = |seed| {
            let mut b = Backoff::new(Duration::from_millis(10), Duration::from_secs(1), seed);
            (0..8).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }
}
