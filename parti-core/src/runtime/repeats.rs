//! Rate-limiting repeated reports: during an outage the same failure comes every few hundred
//! milliseconds from every task. The first of a kind (by its context) is reported at once;
//! repeats within [`QUIET`] are counted, and the next report after it says how many there
//! were.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// How long repeats of one kind of report are only counted.
pub const QUIET: Duration = Duration::from_secs(5);

/// What to do with a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Report it; `suppressed` repeats were only counted since the last one reported.
    Report {
        /// Repeats only counted since the last one reported.
        suppressed: u64,
    },
    /// Only count it.
    Count,
}

/// Counts reports by kind.
#[derive(Debug, Default)]
pub struct Repeats(Mutex<HashMap<String, Window>>);

#[derive(Debug)]
struct Window {
    reported: Instant,
    suppressed: u64,
}

impl Repeats {
    /// A report of `kind` now: report it, or only count it.
    pub fn verdict(&self, kind: &str) -> Verdict {
        let now = Instant::now();
        let mut windows = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match windows.get_mut(kind) {
            Some(window) if now < window.reported + QUIET => {
                window.suppressed += 1;
                Verdict::Count
            }
            Some(window) => {
                let suppressed = std::mem::take(&mut window.suppressed);
                window.reported = now;
                Verdict::Report { suppressed }
            }
            None => {
                windows.insert(
                    kind.to_owned(),
                    Window {
                        reported: now,
                        suppressed: 0,
                    },
                );
                Verdict::Report { suppressed: 0 }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn repeats_within_the_quiet_time_are_counted_then_reported_with_the_count() {
        let repeats = Repeats::default();
        assert_eq!(repeats.verdict("a"), Verdict::Report { suppressed: 0 });
        assert_eq!(
            repeats.verdict("b"),
            Verdict::Report { suppressed: 0 },
            "kinds apart"
        );
        for _ in 0..7 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert_eq!(repeats.verdict("a"), Verdict::Count);
        }
        tokio::time::sleep(QUIET).await;
        assert_eq!(repeats.verdict("a"), Verdict::Report { suppressed: 7 });
        assert_eq!(repeats.verdict("a"), Verdict::Count);
    }
}
