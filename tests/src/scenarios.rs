//! The coordination scenarios, one public function each, generic over the store so that
//! every backend runs the same steps and assertions (see `scenario_tests!`).
//!
//! Each takes a [`Fleet`] with no members yet. Timings come from the fleet's configuration:
//! the memory store runs the defaults on tokio's paused clock, NATS runs short ones.

use std::collections::BTreeMap;
use std::time::Duration;

use parti_core::decide::ManagerState;
use parti_core::runtime::Transition;
use parti_core::store::Store;
use parti_strategy::{Partition, PartitionId, WorkerId};
use tokio::time::Instant;

use crate::fleet::Fleet;
use crate::outage::Outage;

/// Slack for the scheduling of the test itself (observing the fleet every 10 ms).
const SLACK: Duration = Duration::from_millis(100);

fn settle_timeout<S: Store>(fleet: &Fleet<S>) -> Duration {
    let c = &fleet.config;
    c.cold_start_window * 2 + c.cooldown + c.election_ttl + c.heartbeat_ttl + Duration::from_secs(5)
}

/// The crash bound T5: partitions of a crashed worker are re-owned within this.
fn reown_bound<S: Store>(fleet: &Fleet<S>) -> Duration {
    fleet.config.heartbeat_ttl + fleet.config.emergency_grace + Duration::from_millis(500)
}

/// Waits (bounded) until every partition of `orphans` is owned, and checks that it was
/// within the crash bound T5 of `crashed`.
async fn reowned_within_t5<S: Store>(
    fleet: &mut Fleet<S>,
    orphans: &[PartitionId],
    crashed: Instant,
) {
    let timeout = settle_timeout(fleet);
    let owned = fleet
        .wait_for("the crashed worker's partitions owned", timeout, |f| {
            let owners = f.ownership()?;
            match orphans.iter().find(|p| !owners.contains_key(*p)) {
                Some(p) => Err(format!("{p} unowned")),
                None => Ok(()),
            }
        })
        .await;
    assert!(
        owned - crashed <= reown_bound(fleet) + SLACK,
        "re-owned after {:?}",
        owned - crashed
    );
}

/// Crashes a worker that is not the leader and checks its partitions are re-owned within
/// the crash bound T5 (no window, no cooldown).
async fn crash_a_follower_and_expect_reown<S: Store>(fleet: &mut Fleet<S>) {
    let victim = fleet.follower();
    let crashed = Instant::now();
    fleet.crash(&victim).await;
    let settled = fleet.settle(settle_timeout(fleet)).await;
    assert!(
        settled - crashed <= reown_bound(fleet) + SLACK,
        "re-owned after {:?}",
        settled - crashed
    );
}

/// Cold start 0 → 3: one window, then one rebalance (version 1) and `Stable`.
pub async fn cold_start<S: Store>(mut fleet: Fleet<S>) {
    let started = Instant::now();
    fleet.start(3).await;
    let settled = fleet.settle(settle_timeout(&fleet)).await;
    assert!(
        settled - started >= fleet.config.cold_start_window,
        "settled after {:?}, before the cold-start window",
        settled - started
    );
    for (id, member) in fleet.members() {
        assert_eq!(
            member.manager.assignment().version(),
            1,
            "{id}: one rebalance only"
        );
        assert_eq!(
            member.manager.assignment().len(),
            10,
            "{id}: 30 partitions over 3"
        );
    }
    fleet.stop_all().await;
}

/// Planned scale 3 → 5: the window is honoured and sticky moves exactly the minimum.
pub async fn planned_scale<S: Store>(mut fleet: Fleet<S>) {
    fleet.start(3).await;
    fleet.settle(settle_timeout(&fleet)).await;
    let before = fleet.assignment().unwrap();
    let grants_before = fleet.ledger.intervals().len();
    let joined_at = Instant::now();
    let new = fleet.start(2).await;
    let settled = fleet.settle(settle_timeout(&fleet)).await;
    assert!(
        settled - joined_at >= fleet.config.planned_scale_window,
        "rebalanced {:?} after the join, inside the window",
        settled - joined_at
    );
    let after = fleet.assignment().unwrap();
    // 30 partitions: 10 each over 3, 6 each over 5: the two new workers take 12, nothing else moves.
    assert_eq!(after.moved_from(&before), 12);
    for id in &new {
        assert_eq!(fleet.member(id).manager.assignment().len(), 6);
    }
    // One rebalance: each moved partition was granted once.
    assert_eq!(fleet.ledger.intervals().len(), grants_before + 12);
    fleet.stop_all().await;
}

/// Through a planned rebalance (3 → 5) the partitions that stay where they are keep their
/// owner without a pause — no revoke, no new grant — while each moved one is released by its
/// old owner before its new owner gets it.
pub async fn unmoved_partitions_are_never_paused<S: Store>(mut fleet: Fleet<S>) {
    fleet.start(3).await;
    fleet.settle(settle_timeout(&fleet)).await;
    let before = fleet.ownership().unwrap();
    let intervals_before = fleet.ledger.intervals().len();
    fleet.start(2).await;
    fleet.settle(settle_timeout(&fleet)).await;
    let after = fleet.ownership().unwrap();
    let intervals = fleet.ledger.intervals();
    let mut unmoved = 0;
    for (partition, owner) in &before {
        let of_partition: Vec<_> = intervals
            .iter()
            .filter(|i| &i.partition == partition)
            .collect();
        if after[partition] == *owner {
            unmoved += 1;
            assert_eq!(
                of_partition.len(),
                1,
                "{partition} stayed with {owner} but was revoked or granted again: {of_partition:?}"
            );
            assert!(of_partition[0].to.is_none(), "{partition} is still owned");
        } else {
            let [old, new] = of_partition[..] else {
                panic!("{partition} moved once, but: {of_partition:?}");
            };
            let released = old.to.expect("the old owner released it");
            assert!(
                released.1 < new.from.1,
                "{partition}: granted before released"
            );
            assert!(new.token > old.token, "{partition}: the token must grow");
        }
    }
    assert_eq!(unmoved, 18, "30 partitions, 12 move to the 2 new workers");
    assert_eq!(intervals.len(), intervals_before + 12);
    fleet.check_ledger();
    fleet.stop_all().await;
}

/// Crash 1 of 3 (no `stop`): re-owned within heartbeat_ttl + grace + 0.5 s, no window.
pub async fn crash_one_of_three<S: Store>(mut fleet: Fleet<S>) {
    fleet.start(3).await;
    fleet.settle(settle_timeout(&fleet)).await;
    crash_a_follower_and_expect_reown(&mut fleet).await;
    fleet.stop_all().await;
}

/// A graceful stop: the partitions are re-owned without waiting for the heartbeat TTL.
pub async fn graceful_stop<S: Store>(mut fleet: Fleet<S>) {
    fleet.start(3).await;
    fleet.settle(settle_timeout(&fleet)).await;
    let leaving = fleet.follower();
    let stopped = Instant::now();
    let member = fleet.stop(&leaving).await;
    assert_eq!(member.manager.state(), ManagerState::Shutdown);
    assert!(member.manager.assignment().is_empty());
    let settled = fleet.settle(settle_timeout(&fleet)).await;
    assert!(
        settled - stopped < fleet.config.heartbeat_ttl,
        "re-owned after {:?}",
        settled - stopped
    );
    fleet.stop_all().await;
}

/// A graceful stop of the leader: a new leader at once, not after the election TTL.
pub async fn leader_stop<S: Store>(mut fleet: Fleet<S>) {
    fleet.start(3).await;
    fleet.settle(settle_timeout(&fleet)).await;
    let leader = fleet.leader();
    let stopped = Instant::now();
    fleet.stop(&leader).await;
    let elected = fleet
        .wait_for("a new leader", settle_timeout(&fleet), |f| {
            (f.leaders().len() == 1)
                .then_some(())
                .ok_or_else(|| "no leader".to_owned())
        })
        .await;
    assert!(
        elected - stopped < fleet.config.election_ttl / 2,
        "new leader after {:?}",
        elected - stopped
    );
    fleet.settle(settle_timeout(&fleet)).await;
    fleet.stop_all().await;
}

/// Fleet restart 10 → 0 → 10 within id_ttl: the same ids, zero partitions moved.
pub async fn fleet_restart<S: Store>(mut fleet: Fleet<S>) {
    let ids = fleet.start(10).await;
    fleet.settle(settle_timeout(&fleet)).await;
    let before = fleet.assignment().unwrap();
    let version = fleet.max_version();
    fleet.stop_all().await;
    let again = fleet.start(10).await;
    assert_eq!(again, ids, "the same ids are claimed again");
    fleet.settle(settle_timeout(&fleet)).await;
    let after = fleet.assignment().unwrap();
    assert_eq!(after.moved_from(&before), 0);
    assert_eq!(before, after);
    assert!(fleet.max_version() >= version);
    fleet.stop_all().await;
}

/// The whole fleet cut off from the store for longer than `id_ttl` (on NATS: the server
/// stopped and started again with its data). Every id claim lapses and the processes may
/// come back on one another's ids, whose records still grant partitions: no process may
/// apply a record written for another, so no grant is ever held by two processes with the
/// same token — and the fleet settles again by itself, every partition owned once.
pub async fn outage_longer_than_id_ttl<S: Store + Outage>(mut fleet: Fleet<S>) {
    fleet.start(4).await;
    fleet.settle(settle_timeout(&fleet)).await;
    let stores: Vec<S> = fleet.members().values().map(|m| m.store.clone()).collect();
    stores.iter().for_each(Outage::cut);
    // The outage's length, not a wait for something to happen.
    tokio::time::sleep(fleet.config.id_ttl + fleet.config.heartbeat_ttl).await;
    // The highest id back first: it claims the lowest free id, another process's, whose
    // record is still there.
    for store in stores.iter().rev() {
        store.restore();
        tokio::time::sleep(fleet.config.heartbeat_interval).await;
    }
    fleet.settle(settle_timeout(&fleet) * 2).await;
    fleet.check_ledger();
    fleet.stop_all().await;
    fleet.check_ledger();
}

/// A rolling update with static identities: ten workers, each stopped gracefully and
/// replaced half a heartbeat TTL later by a new process with the same identity, once the
/// fleet has settled again. Each identity gets its id back, its partitions wait for it (they
/// do not move to the others), and in the end not one partition has moved — with new
/// tokens for the new processes.
pub async fn rolling_update_with_identities<S: Store>(mut fleet: Fleet<S>) {
    let identities: Vec<String> = (0..10).map(|n| format!("pod-{n}")).collect();
    let ids = fleet
        .start_with(identities.iter().cloned().map(Some).collect())
        .await;
    fleet.settle(settle_timeout(&fleet)).await;
    let before = fleet.assignment().unwrap();
    let mut ids_by_identity = BTreeMap::new();
    for id in &ids {
        let identity = fleet
            .member(id)
            .manager
            .identity()
            .expect("an identity")
            .to_owned();
        ids_by_identity.insert(identity, id.clone());
    }
    for identity in &identities {
        let id = ids_by_identity[identity].clone();
        let mine = before.partitions_of(&id);
        fleet.stop(&id).await;
        tokio::time::sleep(fleet.config.heartbeat_ttl / 2).await;
        // Meanwhile nobody else took its partitions.
        let owners = fleet.ownership().unwrap();
        assert!(
            mine.iter().all(|p| !owners.contains_key(p)),
            "{identity}'s partitions moved while it restarted"
        );
        let back = fleet.start_as(identity).await;
        assert_eq!(back, id, "{identity} gets its id back");
        fleet.settle(settle_timeout(&fleet)).await;
    }
    let after = fleet.assignment().unwrap();
    assert_eq!(
        after.moved_from(&before),
        0,
        "a rolling update moves nothing"
    );
    fleet.check_ledger();
    fleet.stop_all().await;
}

/// A worker with a static identity crashes and is restarted at once: it gets its own id
/// back (not a new one, as a worker without an identity would while its old claim lives),
/// and its partitions are owned again within the crash bound T5.
pub async fn crash_restart_with_identity<S: Store>(mut fleet: Fleet<S>) {
    fleet.start(2).await;
    let id = fleet.start_as("pod-a").await;
    fleet.settle(settle_timeout(&fleet)).await;
    let orphans = fleet.assignment().unwrap().partitions_of(&id);
    let crashed = Instant::now();
    fleet.crash(&id).await;
    let back = fleet.start_as("pod-a").await;
    assert_eq!(back, id, "the identity gets its id back at once");
    reowned_within_t5(&mut fleet, &orphans, crashed).await;
    fleet.settle(settle_timeout(&fleet)).await;
    fleet.check_ledger();
    fleet.stop_all().await;
}

/// A worker crashes at the moment another joins: the crashed worker's partitions are
/// owned again within the crash bound T5 — the join's window does not hold them up.
pub async fn crash_during_a_join<S: Store>(mut fleet: Fleet<S>) {
    fleet.start(3).await;
    fleet.settle(settle_timeout(&fleet)).await;
    let victim = fleet.follower();
    let orphans = fleet.assignment().unwrap().partitions_of(&victim);
    let crashed = Instant::now();
    fleet.crash(&victim).await;
    fleet.start(1).await;
    reowned_within_t5(&mut fleet, &orphans, crashed).await;
    fleet.settle(settle_timeout(&fleet)).await;
    fleet.stop_all().await;
}

/// Eight of ten workers crash together: the two survivors own everything within the crash
/// bound T5. Only a fleet that restarted as a whole (nobody left holding its partitions)
/// waits the cold-start window for its workers to come back.
pub async fn most_of_the_fleet_crashes<S: Store>(mut fleet: Fleet<S>) {
    fleet.start(10).await;
    fleet.settle(settle_timeout(&fleet)).await;
    let ids: Vec<WorkerId> = fleet.ids().into_iter().collect();
    let crashed = Instant::now();
    for id in &ids[..8] {
        fleet.crash(id).await;
    }
    let settled = fleet.settle(settle_timeout(&fleet)).await;
    assert!(
        settled - crashed <= reown_bound(&fleet) + fleet.config.election_ttl + SLACK,
        "re-owned after {:?}",
        settled - crashed
    );
    fleet.stop_all().await;
}

/// Leader crash: a new leader within election_ttl + 0.5 s, versions continue above the
/// old maximum, nothing orphaned or doubled.
pub async fn leader_crash<S: Store>(mut fleet: Fleet<S>) {
    fleet.start(3).await;
    fleet.settle(settle_timeout(&fleet)).await;
    crash_leader_and_recover(&mut fleet).await;
    fleet.stop_all().await;
}

async fn crash_leader_and_recover<S: Store>(fleet: &mut Fleet<S>) {
    let leader = fleet.leader();
    let old_max = fleet.max_version();
    let crashed = Instant::now();
    fleet.crash(&leader).await;
    let bound = fleet.config.election_ttl + Duration::from_millis(500);
    let elected = fleet
        .wait_for("a new leader", bound * 2, |f| {
            (f.leaders().len() == 1)
                .then_some(())
                .ok_or_else(|| "no leader".to_owned())
        })
        .await;
    assert!(
        elected - crashed <= bound + SLACK,
        "new leader after {:?}",
        elected - crashed
    );
    fleet.settle(settle_timeout(fleet)).await;
    assert!(
        fleet.max_version() > old_max,
        "the new leader published above {old_max}"
    );
}

/// Five leader crashes in a row.
pub async fn five_leader_crashes<S: Store>(mut fleet: Fleet<S>) {
    fleet.start(6).await;
    fleet.settle(settle_timeout(&fleet)).await;
    for _ in 0..5 {
        crash_leader_and_recover(&mut fleet).await;
    }
    assert_eq!(fleet.members().len(), 1);
    fleet.stop_all().await;
}

/// Refresh from a follower with partitions added, removed and re-weighted: covered at
/// once (no window).
pub async fn refresh<S: Store>(mut fleet: Fleet<S>) {
    let ids = fleet.start(3).await;
    fleet.settle(settle_timeout(&fleet)).await;
    let version = fleet.max_version();
    let mut partitions = fleet.source.get();
    partitions.retain(|p| !p.id().as_str().ends_with(".7")); // removed
    partitions
        .iter_mut()
        .take(4)
        .for_each(|p| *p = p.clone().with_weight(3)); // re-weighted
    partitions.extend((30..36).map(|n| Partition::from_keys(["p", &n.to_string()]).unwrap()));
    fleet.source.set(partitions);
    let follower = ids
        .iter()
        .find(|id| **id != fleet.leader())
        .unwrap()
        .clone();
    let asked = Instant::now();
    fleet
        .member(&follower)
        .manager
        .refresh_partitions()
        .await
        .unwrap();
    let settled = fleet.settle(settle_timeout(&fleet)).await;
    assert!(
        settled - asked < fleet.config.planned_scale_window,
        "refresh took {:?}",
        settled - asked
    );
    assert!(fleet.max_version() > version);
    fleet.stop_all().await;
}

/// A planned change during the cooldown waits for it; an emergency during it does not.
pub async fn cooldown<S: Store>(mut fleet: Fleet<S>) {
    fleet.start(3).await;
    let rebalanced = fleet.settle(settle_timeout(&fleet)).await;
    // A join right after the cold-start rebalance: it waits for the cooldown.
    fleet.start(1).await;
    let settled = fleet.settle(settle_timeout(&fleet)).await;
    assert!(
        settled - rebalanced >= fleet.config.cooldown,
        "planned rebalance {:?} after the last one, inside the cooldown",
        settled - rebalanced
    );
    // A crash right after that rebalance: re-owned at once, cooldown or not.
    crash_a_follower_and_expect_reown(&mut fleet).await;
    fleet.stop_all().await;
}

/// Several joins during one window produce one rebalance.
pub async fn joins_in_one_window<S: Store>(mut fleet: Fleet<S>) {
    fleet.start(2).await;
    fleet.settle(settle_timeout(&fleet)).await;
    let before = fleet.assignment().unwrap();
    let grants_before = fleet.ledger.intervals().len();
    let step = fleet.config.planned_scale_window / 4;
    for _ in 0..3 {
        fleet.start(1).await;
        tokio::time::sleep(step).await; // spacing the joins is the scenario, not a sync
    }
    fleet.settle(settle_timeout(&fleet)).await;
    let after = fleet.assignment().unwrap();
    // 2 → 5 in one rebalance moves 18 of 30, each once; three rebalances would move more.
    assert_eq!(after.moved_from(&before), 18);
    assert_eq!(
        fleet.ledger.intervals().len() - grants_before,
        18,
        "one rebalance for three joins: every moved partition granted once"
    );
    fleet.stop_all().await;
}

/// Ten managers started at once: exactly one leader, and everyone follows it.
pub async fn ten_at_once_one_leader<S: Store>(mut fleet: Fleet<S>) {
    fleet.start(10).await;
    fleet.settle(settle_timeout(&fleet)).await;
    let leader = fleet.leader();
    let term = fleet.member(&leader).manager.leader().unwrap().term;
    for member in fleet.members().values() {
        assert_eq!(member.manager.leader().unwrap().term, term);
    }
    fleet.stop_all().await;
}

/// A state subscriber sees every transition in order, and the hook saw every one from
/// `Init` to `Shutdown`, each valid.
pub async fn transitions_in_order<S: Store>(mut fleet: Fleet<S>) {
    let ids = fleet.start(2).await;
    let mut subscribers: BTreeMap<WorkerId, _> = ids
        .iter()
        .map(|id| (id.clone(), fleet.member(id).manager.subscribe_transitions()))
        .collect();
    fleet.settle(settle_timeout(&fleet)).await;
    let logs: BTreeMap<WorkerId, _> = ids
        .iter()
        .map(|id| (id.clone(), fleet.member(id).log.clone()))
        .collect();
    fleet.stop_all().await;
    for id in &ids {
        let log = logs[id].lock().unwrap().clone();
        assert_eq!(
            log.first().map(|t| t.from),
            Some(ManagerState::Init),
            "{id}"
        );
        assert_eq!(
            log.last().map(|t| t.to),
            Some(ManagerState::Shutdown),
            "{id}"
        );
        for pair in log.windows(2) {
            assert_eq!(pair[0].to, pair[1].from, "{id}: a gap in {log:?}");
        }
        assert!(log.iter().all(|t| t.from.can_become(t.to)), "{id}: {log:?}");
        assert!(
            log.iter().any(|t| t.to == ManagerState::Stable),
            "{id}: {log:?}"
        );
        let subscriber = subscribers.get_mut(id).unwrap();
        let mut seen: Vec<Transition> = Vec::new();
        while let Ok(t) = subscriber.try_recv() {
            seen.push(t);
        }
        assert!(!seen.is_empty());
        assert!(
            log.ends_with(&seen),
            "{id}: subscriber {seen:?} vs hook {log:?}"
        );
    }
}

/// Writes one test per scenario: `#[attribute] async fn <scenario>() { <scenario>(fleet) }`,
/// with `fleet` an expression giving a fresh, empty [`Fleet`] (it may `.await`).
#[macro_export]
macro_rules! scenario_tests {
    (#[$attribute:meta] fleet = $fleet:expr;) => {
        $crate::scenario_tests!(@each #[$attribute] $fleet; cold_start, planned_scale,
            unmoved_partitions_are_never_paused,
            crash_one_of_three, graceful_stop, leader_stop, fleet_restart, leader_crash,
            five_leader_crashes, refresh, cooldown, joins_in_one_window,
            ten_at_once_one_leader, transitions_in_order, outage_longer_than_id_ttl,
            rolling_update_with_identities, crash_restart_with_identity, crash_during_a_join,
            most_of_the_fleet_crashes);
    };
    (@each #[$attribute:meta] $fleet:expr; $($name:ident),*) => {$(
        #[$attribute]
        async fn $name() {
            $crate::scenarios::$name($fleet).await;
        }
    )*};
}
