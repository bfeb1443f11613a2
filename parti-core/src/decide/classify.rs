//! Classifying a change of the live worker set: what kind of change it is decides how long
//! the leader waits before rebalancing.

use std::collections::BTreeSet;

use parti_strategy::WorkerId;

/// What kind of topology change happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// Workers appeared where there were none: wait the cold-start window for the rest.
    ColdStart,
    /// Workers joined (and none left): wait the planned-scale window.
    PlannedScale,
    /// Most of the fleet vanished together (at least `restart_ratio` of it, and more than
    /// one worker): a fleet restart. Wait the cold-start window for the stable ids to come
    /// back instead of piling everything onto the survivors.
    Restart,
    /// Workers left (crashed past their grace, or vanished with no word): re-own their
    /// partitions now, with no window and no cooldown.
    Emergency,
    /// Every worker that left stopped gracefully (deleted its own heartbeat): re-own their
    /// partitions now, as for an emergency, but nothing failed. [`classify`] sees only sets
    /// and says [`ChangeKind::Emergency`]; the leader, which saw the deletions, makes it a
    /// leave.
    Leave,
}

impl ChangeKind {
    /// The kind's name, as used in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        // The label is that of the rebalance this kind of change leads to.
        super::RebalanceReason::from(self).as_str()
    }
}

/// A classified change: its kind and who joined and left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyChange {
    /// The kind.
    pub kind: ChangeKind,
    /// Workers live now that were not known.
    pub joined: BTreeSet<WorkerId>,
    /// Known workers no longer live.
    pub left: BTreeSet<WorkerId>,
}

/// Classifies the move from the `known` workers to the `live` ones; `None` when the sets
/// are equal. `running` are the live workers that still follow the assignment they were
/// given (they did not restart).
///
/// Leaves take precedence over joins (a worker replaced by another is still a loss to
/// re-own now). A departure counts as a restart — a whole fleet restarting, its workers
/// expected back within the cold-start window — only when more than one worker and at least
/// `restart_ratio` of the known ones left together *and* no live known worker is running:
/// while any worker still holds its partitions, the others' partitions are orphans, and
/// orphans never wait on a window (an emergency).
///
/// ```
/// use std::collections::BTreeSet;
/// use parti_core::decide::{ChangeKind, classify};
/// use parti_strategy::WorkerId;
///
/// let set = |ids: &[&str]| ids.iter().map(|id| WorkerId::new(id)).collect::<BTreeSet<_>>();
/// let known = set(&["w0", "w1", "w2"]);
/// let none = set(&[]);
/// assert_eq!(classify(&none, &known, &none, 0.5).unwrap().kind, ChangeKind::ColdStart);
/// let four = set(&["w0", "w1", "w2", "w3"]);
/// assert_eq!(classify(&known, &four, &known, 0.5).unwrap().kind, ChangeKind::PlannedScale);
/// let two = set(&["w0", "w1"]);
/// assert_eq!(classify(&known, &two, &two, 0.5).unwrap().kind, ChangeKind::Emergency);
/// // Two of three gone: w0 restarted too, so the fleet is restarting ...
/// assert_eq!(classify(&known, &set(&["w0"]), &none, 0.5).unwrap().kind, ChangeKind::Restart);
/// // ... but while w0 still holds its partitions, theirs are orphans.
/// let w0 = set(&["w0"]);
/// assert_eq!(classify(&known, &w0, &w0, 0.5).unwrap().kind, ChangeKind::Emergency);
/// assert!(classify(&known, &known, &known, 0.5).is_none());
/// ```
pub fn classify(
    known: &BTreeSet<WorkerId>,
    live: &BTreeSet<WorkerId>,
    running: &BTreeSet<WorkerId>,
    restart_ratio: f64,
) -> Option<TopologyChange> {
    let joined: BTreeSet<WorkerId> = live.difference(known).cloned().collect();
    let left: BTreeSet<WorkerId> = known.difference(live).cloned().collect();
    let kind = if joined.is_empty() && left.is_empty() {
        return None;
    } else if known.is_empty() {
        ChangeKind::ColdStart
    } else if left.is_empty() {
        ChangeKind::PlannedScale
    } else if left.len() > 1
        && left.len() as f64 >= restart_ratio * known.len() as f64
        && known.intersection(live).all(|w| !running.contains(w))
    {
        ChangeKind::Restart
    } else {
        ChangeKind::Emergency
    };
    Some(TopologyChange { kind, joined, left })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn set(ns: impl IntoIterator<Item = u32>) -> BTreeSet<WorkerId> {
        ns.into_iter()
            .map(|n| WorkerId::new(format!("worker-{n}")))
            .collect()
    }

    #[test]
    fn one_of_two_leaving_is_an_emergency_not_a_restart() {
        let change = classify(&set([0, 1]), &set([0]), &set([]), 0.5).unwrap();
        assert_eq!(change.kind, ChangeKind::Emergency);
        assert_eq!(change.left, set([1]));
    }

    #[test]
    fn the_whole_fleet_vanishing_is_a_restart() {
        let change = classify(&set(0..10), &set([]), &set([]), 0.5).unwrap();
        assert_eq!(change.kind, ChangeKind::Restart);
        assert_eq!(change.left.len(), 10);
    }

    #[test]
    fn the_restart_ratio_is_inclusive() {
        assert_eq!(
            classify(&set(0..10), &set(5..10), &set([]), 0.5)
                .unwrap()
                .kind,
            ChangeKind::Restart
        );
        assert_eq!(
            classify(&set(0..10), &set(4..10), &set([]), 0.5)
                .unwrap()
                .kind,
            ChangeKind::Emergency
        );
    }

    #[test]
    fn most_of_the_fleet_gone_while_one_still_runs_is_an_emergency() {
        let change = classify(&set(0..10), &set([8, 9]), &set([9]), 0.5).unwrap();
        assert_eq!(change.kind, ChangeKind::Emergency);
        assert_eq!(change.left, set(0..8));
    }

    #[test]
    fn a_replaced_worker_is_an_emergency() {
        let change = classify(&set([0, 1, 2]), &set([0, 1, 3]), &set([]), 0.5).unwrap();
        assert_eq!(change.kind, ChangeKind::Emergency);
        assert_eq!((change.joined, change.left), (set([3]), set([2])));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1_000))]

        #[test]
        fn classification_follows_the_rules(
            known in proptest::collection::btree_set(0u32..20, 0..12),
            live in proptest::collection::btree_set(0u32..20, 0..12),
            running in proptest::collection::btree_set(0u32..20, 0..12),
            ratio in 0.05f64..=1.0,
        ) {
            let (known, live, running) = (set(known), set(live), set(running));
            let Some(change) = classify(&known, &live, &running, ratio) else {
                prop_assert_eq!(known, live);
                return Ok(());
            };
            prop_assert!(change.joined.iter().all(|w| live.contains(w) && !known.contains(w)));
            prop_assert!(change.left.iter().all(|w| known.contains(w) && !live.contains(w)));
            let expected = if known.is_empty() {
                ChangeKind::ColdStart
            } else if change.left.is_empty() {
                ChangeKind::PlannedScale
            } else if change.left.len() >= 2
                && change.left.len() as f64 >= ratio * known.len() as f64
                && !live.iter().any(|w| known.contains(w) && running.contains(w))
            {
                ChangeKind::Restart
            } else {
                ChangeKind::Emergency
            };
            prop_assert_eq!(change.kind, expected);
        }
    }
}
