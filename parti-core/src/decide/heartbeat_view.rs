//! The leader's view of heartbeats kept in two buckets
//! ([`Config::writes_two_heartbeats`](crate::config::Config::writes_two_heartbeats)): one
//! beat per worker, as the calculator has always seen it.
//!
//! A worker is present while either bucket holds its heartbeat. A session begins in the
//! first bucket only where no heartbeat is, but the previous session may still live in the
//! second (its first entry expired while its stream failed over, say), so a later session
//! proves that the earlier one ended only once both buckets hold it
//! ([`Beat::confirms_session`]); until then the view shows the older of two sessions, and a
//! beat seen in one bucket only confirms nothing. Revisions of the two buckets are not
//! comparable, so a beat not taken from the first carries revision 0 (ordered by session).
//!
//! A bucket whose watch stops delivering has no say: every live worker, the leader
//! included, writes to both buckets every interval, so a working watch is never silent for
//! a TTL; once one is ([`HeartbeatView::heard`]), what it showed is forgotten, and absence
//! from its bucket is for listings to find.
//!
//! Pure: no I/O, no clock (the time comes with each call).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use parti_strategy::WorkerId;

use super::{Beat, Slot};

/// The heartbeats seen in each bucket, and the one beat per worker they make.
///
/// ```
/// use parti_core::decide::{Beat, HeartbeatView, Slot};
/// use parti_strategy::WorkerId;
///
/// let worker = WorkerId::new("worker-0");
/// let beat = |holder, revision| Beat {
///     holder, revision, applied: 1, term_seen: 1, confirms_session: true,
/// };
/// let mut view = HeartbeatView::new(true);
/// view.put(Slot::Second, &worker, beat(4, 9));
/// // A later session in the first bucket: the view keeps the older one.
/// let shown = view.put(Slot::First, &worker, beat(5, 30));
/// assert_eq!((shown.holder, shown.confirms_session), (4, false));
/// // Gone from the second bucket, the later one shows, but confirms nothing yet...
/// let shown = view.remove(Slot::Second, &worker).unwrap();
/// assert_eq!((shown.holder, shown.confirms_session), (5, false));
/// // ... until the second bucket holds it too.
/// assert!(view.put(Slot::Second, &worker, beat(5, 10)).confirms_session);
/// view.remove(Slot::Second, &worker);
/// assert_eq!(view.remove(Slot::First, &worker), None, "gone from both: absent");
/// ```
#[derive(Debug, Clone, Default)]
pub struct HeartbeatView {
    /// Whether heartbeats go to two buckets (with one, beats pass through as they are).
    two: bool,
    known: [BTreeMap<WorkerId, Beat>; 2],
    /// When each bucket's watch last delivered (`None`: not since it was last forgotten).
    heard: [Option<Instant>; 2],
}

impl HeartbeatView {
    /// An empty view of one heartbeat bucket, or of two.
    pub fn new(two_buckets: bool) -> Self {
        Self {
            two: two_buckets,
            known: Default::default(),
            heard: [None; 2],
        }
    }

    /// `slot`'s watch delivered something at `now`. If the other bucket's watch delivered
    /// before but nothing for `silence` since (a heartbeat TTL), it has stopped working:
    /// what it showed is forgotten, so that its last beats keep no worker present — a
    /// worker gone from the working bucket is then gone, unless a listing finds it in the
    /// other.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use parti_core::decide::{Beat, HeartbeatView, Slot};
    /// use parti_strategy::WorkerId;
    ///
    /// let (worker, ttl, t0) = (WorkerId::new("worker-0"), Duration::from_secs(3), Instant::now());
    /// let beat = Beat { holder: 4, revision: 9, applied: 1, term_seen: 1, confirms_session: true };
    /// let mut view = HeartbeatView::new(true);
    /// view.heard(Slot::Second, t0, ttl);
    /// view.put(Slot::Second, &worker, beat);
    /// // The second bucket's watch says nothing more; the first's goes on for a TTL.
    /// view.heard(Slot::First, t0 + ttl, ttl);
    /// view.put(Slot::First, &worker, beat);
    /// assert_eq!(view.remove(Slot::First, &worker), None, "the silent bucket has no say");
    /// ```
    pub fn heard(&mut self, slot: Slot, now: Instant, silence: Duration) {
        self.heard[slot.index()] = Some(now);
        let other = slot.other().index();
        if self.heard[other].is_some_and(|at| now.saturating_duration_since(at) >= silence) {
            self.heard[other] = None;
            self.known[other].clear();
        }
    }

    /// `slot`'s bucket holds `beat` for `worker` now; returns the worker's beat.
    pub fn put(&mut self, slot: Slot, worker: &WorkerId, beat: Beat) -> Beat {
        self.known[slot.index()].insert(worker.clone(), beat);
        self.beat(worker).unwrap_or(beat)
    }

    /// `slot`'s bucket no longer holds `worker`'s heartbeat; returns the worker's beat if
    /// the other bucket still holds one (`None`: gone from both).
    pub fn remove(&mut self, slot: Slot, worker: &WorkerId) -> Option<Beat> {
        self.known[slot.index()].remove(worker);
        self.beat(worker)
    }

    /// Forgets what `slot`'s bucket held (its watch starts again, or the bucket was lost).
    pub fn forget(&mut self, slot: Slot) {
        self.known[slot.index()].clear();
        self.heard[slot.index()] = None;
    }

    /// The worker's beat, if either bucket holds one.
    pub fn beat(&self, worker: &WorkerId) -> Option<Beat> {
        let (first, second) = (self.known[0].get(worker), self.known[1].get(worker));
        if self.two {
            merge(first.copied(), second.copied())
        } else {
            first.copied()
        }
    }
}

/// The beat of one worker of a fleet with two heartbeat buckets, from what each holds: one
/// session in both — the most advanced report (highest applied version and term seen), with
/// the first bucket's revision, confirming its session; else the older session, or the one
/// there is, confirming nothing, with revision 0 (the second's revisions are not comparable
/// to the first's).
pub fn merge(first: Option<Beat>, second: Option<Beat>) -> Option<Beat> {
    let unconfirmed = |beat: Beat| Beat {
        revision: 0,
        confirms_session: false,
        ..beat
    };
    match (first, second) {
        (None, None) => None,
        (Some(one), None) | (None, Some(one)) => Some(unconfirmed(one)),
        (Some(first), Some(second)) if first.holder == second.holder => Some(Beat {
            applied: first.applied.max(second.applied),
            term_seen: first.term_seen.max(second.term_seen),
            confirms_session: true,
            ..first
        }),
        (Some(first), Some(second)) => Some(unconfirmed(if second.holder < first.holder {
            second
        } else {
            first
        })),
    }
}

/// One listing of each bucket, merged per worker with [`merge`].
pub fn merge_listings(
    first: BTreeMap<WorkerId, Beat>,
    mut second: BTreeMap<WorkerId, Beat>,
) -> BTreeMap<WorkerId, Beat> {
    let mut merged: BTreeMap<WorkerId, Beat> = first
        .into_iter()
        .filter_map(|(worker, beat)| {
            let other = second.remove(&worker);
            merge(Some(beat), other).map(|beat| (worker, beat))
        })
        .collect();
    for (worker, beat) in second {
        if let Some(beat) = merge(None, Some(beat)) {
            merged.insert(worker, beat);
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(holder: u64, revision: u64, applied: u64) -> Beat {
        Beat {
            holder,
            revision,
            applied,
            term_seen: 1,
            confirms_session: true,
        }
    }

    #[test]
    fn one_session_in_both_reports_the_most_advanced() {
        let merged = merge(Some(beat(5, 30, 2)), Some(beat(5, 7, 3))).unwrap();
        assert_eq!((merged.holder, merged.revision, merged.applied), (5, 30, 3));
        assert!(merged.confirms_session);
    }

    #[test]
    fn the_older_session_shows_until_it_is_gone_from_both() {
        let older = merge(Some(beat(6, 40, 0)), Some(beat(5, 7, 3))).unwrap();
        assert_eq!(
            (older.holder, older.revision, older.confirms_session),
            (5, 0, false)
        );
        let older = merge(Some(beat(5, 40, 3)), Some(beat(6, 7, 0))).unwrap();
        assert_eq!(
            (older.holder, older.revision, older.confirms_session),
            (5, 0, false)
        );
        let alone = merge(Some(beat(7, 41, 0)), None).unwrap();
        assert_eq!(
            (alone.holder, alone.revision, alone.confirms_session),
            (7, 0, false)
        );
    }

    #[test]
    fn a_worker_is_present_while_either_bucket_holds_it() {
        let worker = WorkerId::new("worker-1");
        let mut view = HeartbeatView::new(true);
        view.put(Slot::First, &worker, beat(5, 30, 1));
        view.put(Slot::Second, &worker, beat(5, 9, 1));
        assert!(view.remove(Slot::First, &worker).is_some());
        view.put(Slot::First, &worker, beat(5, 31, 1));
        assert!(view.remove(Slot::Second, &worker).is_some());
        assert!(view.remove(Slot::First, &worker).is_none());
        view.put(Slot::Second, &worker, beat(5, 10, 1));
        view.forget(Slot::Second);
        assert!(view.beat(&worker).is_none());
    }

    #[test]
    fn listings_merge_per_worker() {
        let (a, b, c) = (
            WorkerId::new("worker-0"),
            WorkerId::new("worker-1"),
            WorkerId::new("worker-2"),
        );
        let first = BTreeMap::from([(a.clone(), beat(5, 30, 1)), (b.clone(), beat(6, 31, 1))]);
        let second = BTreeMap::from([(b.clone(), beat(4, 9, 1)), (c.clone(), beat(7, 10, 2))]);
        let merged = merge_listings(first, second);
        assert_eq!(merged[&a].holder, 5);
        assert_eq!((merged[&b].holder, merged[&b].revision), (4, 0));
        assert_eq!((merged[&c].holder, merged[&c].revision), (7, 0));
        assert!(!merged[&a].confirms_session && !merged[&c].confirms_session);
    }

    #[test]
    fn with_one_bucket_beats_pass_through() {
        let worker = WorkerId::new("worker-1");
        let mut view = HeartbeatView::new(false);
        assert_eq!(
            view.put(Slot::First, &worker, beat(5, 30, 1)),
            beat(5, 30, 1)
        );
        assert_eq!(view.remove(Slot::First, &worker), None);
    }
}
