//! The emergency detector: a worker is lost only once it has been missing longer than the
//! grace period, so a worker that flaps within the grace is not an emergency.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use parti_strategy::WorkerId;

/// Tracks since when each known worker has been missing, and says which are lost.
///
/// ```
/// use std::collections::BTreeSet;
/// use std::time::{Duration, Instant};
/// use parti_core::decide::EmergencyDetector;
/// use parti_strategy::WorkerId;
///
/// let known: BTreeSet<_> = [WorkerId::new("w0"), WorkerId::new("w1")].into();
/// let live: BTreeSet<_> = [WorkerId::new("w0")].into();
/// let mut detector = EmergencyDetector::new(Duration::from_secs(1));
/// let t0 = Instant::now();
/// assert!(detector.observe(&known, &live, t0).is_empty());
/// assert_eq!(detector.next_deadline(), Some(t0 + Duration::from_secs(1)));
/// assert_eq!(detector.observe(&known, &live, t0 + Duration::from_secs(1)), [WorkerId::new("w1")]);
/// ```
#[derive(Debug, Clone)]
pub struct EmergencyDetector {
    grace: Duration,
    missing_since: BTreeMap<WorkerId, Instant>,
    /// Workers that said they left (a graceful stop): lost with no grace.
    left: BTreeSet<WorkerId>,
}

impl EmergencyDetector {
    /// A detector with the given grace period.
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            missing_since: BTreeMap::new(),
            left: BTreeSet::new(),
        }
    }

    /// Records what is live at `now` and returns the known workers missing for at least the
    /// grace period, sorted. A worker seen live again is forgiven; workers no longer known
    /// are forgotten.
    pub fn observe(
        &mut self,
        known: &BTreeSet<WorkerId>,
        live: &BTreeSet<WorkerId>,
        now: Instant,
    ) -> Vec<WorkerId> {
        self.missing_since
            .retain(|worker, _| known.contains(worker) && !live.contains(worker));
        self.left
            .retain(|worker| known.contains(worker) && !live.contains(worker));
        for worker in known.difference(live) {
            self.missing_since.entry(worker.clone()).or_insert(now);
        }
        self.missing_since
            .iter()
            .filter(|(worker, since)| {
                self.left.contains(*worker) || now.saturating_duration_since(**since) >= self.grace
            })
            .map(|(worker, _)| worker.clone())
            .collect()
    }

    /// `worker` left on purpose (it stopped gracefully): missing at the next
    /// [`observe`](Self::observe), it is lost at once, with no grace — there is no blip to
    /// wait out. Seen live again (or no longer known), it is forgotten.
    pub fn left(&mut self, worker: WorkerId) {
        self.left.insert(worker);
    }

    /// Whether `worker` left on purpose ([`EmergencyDetector::left`]) and was not seen live
    /// since.
    pub fn has_left(&self, worker: &WorkerId) -> bool {
        self.left.contains(worker)
    }

    /// When the next missing worker's grace runs out, if any is missing.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.missing_since
            .values()
            .min()
            .map(|since| *since + self.grace)
    }

    /// The workers missing but still within their grace period, sorted.
    pub fn pending(&self) -> impl Iterator<Item = &WorkerId> {
        self.missing_since.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[&str]) -> BTreeSet<WorkerId> {
        ids.iter().map(WorkerId::new).collect()
    }

    const GRACE: Duration = Duration::from_secs(1);

    #[test]
    fn a_worker_that_left_on_purpose_is_lost_with_no_grace_and_forgotten_when_back() {
        let mut detector = EmergencyDetector::new(GRACE);
        let t0 = Instant::now();
        let known = set(&["w0", "w1"]);
        detector.left(WorkerId::new("w1"));
        assert!(detector.has_left(&WorkerId::new("w1")));
        assert_eq!(
            detector.observe(&known, &set(&["w0"]), t0),
            set(&["w1"]).into_iter().collect::<Vec<_>>()
        );
        // Back before it was taken out of the plan: forgiven, and a later absence has its grace.
        assert!(detector.observe(&known, &known, t0).is_empty());
        assert!(!detector.has_left(&WorkerId::new("w1")));
        assert!(detector.observe(&known, &set(&["w0"]), t0).is_empty());
    }

    #[test]
    fn a_worker_is_lost_exactly_when_its_grace_runs_out() {
        let mut detector = EmergencyDetector::new(GRACE);
        let t0 = Instant::now();
        let (known, live) = (set(&["a", "b"]), set(&["a"]));
        assert!(detector.observe(&known, &live, t0).is_empty());
        let just_before = t0 + GRACE - Duration::from_millis(1);
        assert!(detector.observe(&known, &live, just_before).is_empty());
        assert_eq!(
            detector.observe(&known, &live, t0 + GRACE),
            set(&["b"]).into_iter().collect::<Vec<_>>()
        );
    }

    #[test]
    fn flapping_within_the_grace_is_not_an_emergency() {
        let mut detector = EmergencyDetector::new(GRACE);
        let t0 = Instant::now();
        let known = set(&["a", "b"]);
        detector.observe(&known, &set(&["a"]), t0);
        // b is back before its grace ran out: forgiven.
        assert!(detector.observe(&known, &known, t0 + GRACE / 2).is_empty());
        assert_eq!(detector.next_deadline(), None);
        // Missing again later: the grace starts over.
        let t1 = t0 + GRACE;
        assert!(detector.observe(&known, &set(&["a"]), t1).is_empty());
        assert!(
            detector
                .observe(&known, &set(&["a"]), t1 + GRACE / 2)
                .is_empty()
        );
        assert_eq!(detector.observe(&known, &set(&["a"]), t1 + GRACE).len(), 1);
    }

    #[test]
    fn forgotten_workers_are_dropped() {
        let mut detector = EmergencyDetector::new(GRACE);
        let t0 = Instant::now();
        detector.observe(&set(&["a", "b"]), &set(&["a"]), t0);
        assert_eq!(detector.pending().count(), 1);
        // The leader rebalanced without b: b is no longer known.
        assert!(
            detector
                .observe(&set(&["a"]), &set(&["a"]), t0 + GRACE)
                .is_empty()
        );
        assert_eq!(detector.pending().count(), 0);
    }

    #[test]
    fn the_next_deadline_is_the_earliest_grace_end() {
        let mut detector = EmergencyDetector::new(GRACE);
        let t0 = Instant::now();
        let known = set(&["a", "b", "c"]);
        detector.observe(&known, &set(&["a", "c"]), t0);
        detector.observe(&known, &set(&["a"]), t0 + GRACE / 2);
        assert_eq!(detector.next_deadline(), Some(t0 + GRACE));
    }
}
