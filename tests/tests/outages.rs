//! Outages of the store on the real runtime, on `MemoryStore` with the default timings and
//! tokio's paused clock: a worker whose heartbeat lease lapses is `Degraded` — it owns
//! nothing and says why — and leaves that state by itself when the store answers; after an
//! outage of the whole fleet every worker gets its id and its partitions back with nothing
//! moved (with a static identity also after an outage longer than `id_ttl`).

use std::collections::BTreeMap;
use std::time::Duration;

use parti_core::config::Config;
use parti_core::decide::{DegradedReason, ManagerState};
use parti_core::store::{MemoryStore, Store};
use parti_strategy::WorkerId;
use tests::fleet::{Fleet, reown_bound};
use tokio::time::{Instant, sleep};

const SETTLE: Duration = Duration::from_secs(120);

fn fleet() -> Fleet<MemoryStore> {
    let store = MemoryStore::new();
    Fleet::new(move || store.connect(), Config::default(), 30)
}

const CUT_OFF: ManagerState = ManagerState::Degraded {
    reason: DegradedReason::StoreUnreachable,
};

/// A worker cut off from the store is `Degraded` (store unreachable) once its heartbeat
/// lease lapses — within `heartbeat_ttl` — owning nothing; when the store answers again it
/// leaves the state by itself and the fleet settles, every partition owned once.
#[tokio::test(start_paused = true)]
async fn a_cut_off_worker_is_degraded_and_owns_nothing_until_the_store_answers() {
    let mut fleet = fleet();
    fleet.start(3).await;
    fleet.settle(SETTLE).await;
    let cut = fleet.follower();
    let ttl = fleet.config.heartbeat_ttl;
    let member = fleet.member(&cut);
    let mut transitions = member.manager.subscribe_transitions();
    member.store.disconnect();
    let cut_at = Instant::now();
    member
        .manager
        .wait_state(CUT_OFF, ttl)
        .await
        .expect("degraded within heartbeat_ttl");
    assert!(Instant::now() - cut_at <= ttl);
    assert!(member.manager.assignment().is_empty(), "owns nothing");
    // It stays degraded while the store is away (its id claim outlives this outage).
    sleep(Duration::from_secs(10)).await;
    assert_eq!(member.manager.state(), CUT_OFF);
    member.store.reconnect();
    fleet.settle(SETTLE).await;
    let mut seen = Vec::new();
    while let Ok(transition) = transitions.try_recv() {
        seen.push(transition.to);
    }
    let degraded_at = seen.iter().position(|s| *s == CUT_OFF).expect("entered");
    assert!(
        seen[degraded_at + 1..].iter().any(|s| s.is_running()),
        "left by itself: {seen:?}"
    );
    fleet.check_ledger();
    fleet.stop_all().await;
}

/// Each process's worker id, by its label in the fleet.
fn ids_by_process(fleet: &Fleet<MemoryStore>) -> BTreeMap<usize, WorkerId> {
    fleet
        .members()
        .values()
        .map(|m| (m.owner, m.manager.worker_id()))
        .collect()
}

/// Cuts the whole fleet off for `length`, checking every worker is degraded meanwhile;
/// returns the ids before and after, and how many partitions moved.
async fn whole_fleet_outage(fleet: &mut Fleet<MemoryStore>, length: Duration) -> usize {
    fleet.settle(SETTLE).await;
    let before = fleet.assignment().unwrap();
    let ids = ids_by_process(fleet);
    for member in fleet.members().values() {
        member.store.disconnect();
    }
    let ttl = fleet.config.heartbeat_ttl;
    sleep(ttl + Duration::from_millis(100)).await;
    for (id, member) in fleet.members() {
        assert!(
            matches!(member.manager.state(), ManagerState::Degraded { .. }),
            "{id} is {}",
            member.manager.state()
        );
        assert!(member.manager.assignment().is_empty());
    }
    sleep(length - ttl - Duration::from_millis(100)).await;
    // The highest id back first: were it to claim the lowest free id, ids would change.
    for member in fleet.members().values().rev() {
        member.store.reconnect();
        sleep(Duration::from_millis(50)).await;
    }
    fleet.settle(SETTLE).await;
    assert_eq!(ids_by_process(fleet), ids, "every worker has its id back");
    fleet.check_ledger();
    fleet.assignment().unwrap().moved_from(&before)
}

/// An outage of the whole fleet longer than `heartbeat_ttl` but shorter than `id_ttl`:
/// every worker is degraded meanwhile, and afterwards has its id and its partitions back.
#[tokio::test(start_paused = true)]
async fn after_an_outage_shorter_than_id_ttl_nothing_moves() {
    let mut fleet = fleet();
    fleet.start(4).await;
    let moved = whole_fleet_outage(&mut fleet, Duration::from_secs(10)).await;
    assert_eq!(moved, 0);
    fleet.stop_all().await;
}

/// With static identities, even an outage longer than `id_ttl` (every claim lapses) moves
/// nothing: each worker claims its own id again and gets its partitions back.
#[tokio::test(start_paused = true)]
async fn with_identities_an_outage_longer_than_id_ttl_moves_nothing() {
    let mut fleet = fleet();
    fleet
        .start_with((0..4).map(|n| Some(format!("pod-{n}"))).collect())
        .await;
    let length = fleet.config.id_ttl + Duration::from_secs(10);
    let moved = whole_fleet_outage(&mut fleet, length).await;
    assert_eq!(moved, 0);
    fleet.stop_all().await;
}

/// What a lost bucket cost a fleet.
struct Recovery {
    /// From the loss until every partition was owned again (zero: none was released).
    reowned: Duration,
    /// The longest time without a leader after the loss.
    leaderless: Duration,
}

/// Deletes the bucket `name` under a settled fleet of four, checks that it is created again
/// within two heartbeat intervals, and watches the fleet until every lease of before the
/// loss has ended (and the election's too), checking all along that no two own a partition
/// at once and no token is shared or goes down; then the fleet must be settled. Returns
/// what the loss cost.
async fn bucket_lost(name: &str) -> Recovery {
    let mut fleet = fleet();
    fleet.start(4).await;
    fleet.settle(SETTLE).await;
    let store = fleet.members().values().next().unwrap().store.clone();
    let lost = Instant::now();
    store.delete_bucket(name).await.expect("deleted");
    let interval = fleet.config.heartbeat_interval;
    fleet
        .wait_for("the bucket created again", 2 * interval, |_| {
            if store.bucket_exists(name) {
                Ok(())
            } else {
                Err(format!("{name} is gone"))
            }
        })
        .await;
    let c = &fleet.config;
    let aftermath = 2 * c.election_ttl.max(c.heartbeat_ttl) + c.emergency_grace;
    let leaderless = fleet.watch_until(lost + aftermath).await;
    fleet.settle(Duration::ZERO).await;
    let reowned = fleet.reowned_since(lost);
    fleet.check_ledger();
    fleet.stop_all().await;
    fleet.check_ledger();
    Recovery {
        reowned,
        leaderless,
    }
}

/// Loses `bucket` under a fleet and checks that every partition is owned again within
/// [`reown_bound`].
async fn rejoins_in_time(bucket: &str) {
    let bound = reown_bound(&Config::default());
    let recovery = bucket_lost(bucket).await;
    assert!(
        recovery.reowned <= bound,
        "re-owned {:?} after the loss",
        recovery.reowned
    );
}

/// Losing the heartbeat bucket: every worker's next heartbeat finds it gone, creates it
/// again and begins a new heartbeat session; its partitions are granted again (new
/// sessions, new tokens) within two heartbeat TTLs and the interval of the write that
/// found the loss.
#[tokio::test(start_paused = true)]
async fn a_lost_heartbeat_bucket_is_recreated_and_the_fleet_rejoins() {
    rejoins_in_time("parti-heartbeat").await;
}

/// Losing the assignment bucket: the workers see their records gone and release; the
/// leader writes them again within two heartbeat TTLs and an interval.
#[tokio::test(start_paused = true)]
async fn a_lost_assignment_bucket_is_recreated_and_the_fleet_rejoins() {
    rejoins_in_time("parti-assignment").await;
}

/// Losing the election bucket: no partition is released; the leader is deposed at its
/// lease end at the latest, and a leader is elected again within `election_ttl` + 0.5 s.
#[tokio::test(start_paused = true)]
async fn a_lost_election_bucket_is_recreated_and_a_leader_is_elected_again() {
    let c = Config::default();
    let recovery = bucket_lost("parti-election").await;
    assert_eq!(recovery.reowned, Duration::ZERO, "nothing was released");
    assert!(
        recovery.leaderless <= c.election_ttl + Duration::from_millis(500),
        "no leader for {:?}",
        recovery.leaderless
    );
}

/// Losing the ids bucket: every worker's next renewal finds its claim gone and claims it
/// again, so every worker keeps its id and its partitions.
#[tokio::test(start_paused = true)]
async fn a_lost_ids_bucket_is_recreated_and_every_worker_keeps_its_id() {
    let mut fleet = fleet();
    fleet.start(4).await;
    fleet.settle(SETTLE).await;
    let ids = ids_by_process(&fleet);
    let before = fleet.assignment().unwrap();
    let store = fleet.members().values().next().unwrap().store.clone();
    store.delete_bucket("parti-ids").await.expect("deleted");
    // Past every renewal (a third of id_ttl) and the claim's hold, watching.
    let lost = Instant::now();
    fleet
        .watch_until(lost + fleet.config.id_ttl + fleet.config.heartbeat_ttl)
        .await;
    fleet.settle(SETTLE).await;
    assert_eq!(ids_by_process(&fleet), ids);
    assert_eq!(
        fleet.assignment().unwrap().moved_from(&before),
        0,
        "each renewal claimed its id again: nothing moved"
    );
    fleet.check_ledger();
    fleet.stop_all().await;
}

/// The election bucket and the records lost while the whole fleet is away, so that no
/// worker remembers the old terms: the new fleet's terms — and so its tokens — are still
/// above the old ones (terms are raised to the wall clock).
#[tokio::test(start_paused = true)]
async fn terms_keep_growing_when_every_trace_of_them_is_lost() {
    let store = MemoryStore::new();
    let connect = store.clone();
    let mut fleet = Fleet::new(move || connect.connect(), Config::default(), 30);
    fleet.start(3).await;
    fleet.settle(SETTLE).await;
    let old = fleet.ledger.intervals().iter().map(|i| i.token.term).max();
    fleet.stop_all().await;
    for bucket in ["parti-election", "parti-assignment"] {
        store.delete_bucket(bucket).await.expect("deleted");
    }
    fleet.start(3).await;
    fleet.settle(SETTLE).await;
    let new = fleet
        .ledger
        .intervals()
        .iter()
        .filter(|i| i.to.is_none())
        .map(|i| i.token.term)
        .min();
    assert!(new > old, "terms went from {old:?} down to {new:?}");
    fleet.check_ledger();
    fleet.stop_all().await;
}

/// How long a bucket is without a leader in [`a_bucket_without_leader`]: more than the
/// longest stream failover measured on a 3-node NATS cluster (6.9 s), more than twice the
/// default `heartbeat_ttl`.
const LEADERLESS: Duration = Duration::from_secs(8);

/// Fails `bucket` (as a replicated bucket whose stream leader died fails until the other
/// replicas elect one) under a settled fleet of four for [`LEADERLESS`] — crashing the
/// parti leader as it begins if `crash_leader`, so that a new leader takes office during
/// the outage and lists the heartbeats after it — watches the fleet through it and a while
/// after, and returns the partitions of the surviving workers whose ownership ended (the
/// ledger checks exclusivity and tokens all along) and whether their ids stayed.
async fn a_bucket_without_leader(
    config: Config,
    bucket: &str,
    crash_leader: bool,
) -> (Vec<String>, bool) {
    let store = MemoryStore::new();
    let connect = store.clone();
    let mut fleet = Fleet::new(move || connect.connect(), config, 30);
    fleet.start(4).await;
    fleet.settle(SETTLE).await;
    assert!(store.fail_bucket(bucket), "{bucket} exists");
    let mut crashed = None;
    if crash_leader {
        let leader = fleet.leader();
        crashed = Some(fleet.member(&leader).owner);
        fleet.crash(&leader).await;
    }
    let ids = fleet.ids();
    fleet.watch_until(Instant::now() + LEADERLESS).await;
    store.restore_bucket(bucket);
    let ttl = fleet.config.heartbeat_ttl;
    fleet.watch_until(Instant::now() + 3 * ttl).await;
    fleet.settle(SETTLE).await;
    let ended = fleet
        .ledger
        .intervals()
        .into_iter()
        .filter(|interval| interval.to.is_some() && Some(interval.owner) != crashed)
        .map(|interval| interval.partition.to_string())
        .collect();
    let same_ids = fleet.ids().is_superset(&ids);
    fleet.check_ledger();
    fleet.stop_all().await;
    fleet.check_ledger();
    (ended, same_ids)
}

/// With two heartbeats (what a replicated fleet writes by default), either heartbeat
/// bucket — or the ids, election or assignment bucket — without a leader for longer than
/// two heartbeat TTLs costs nothing: no partition is unowned at any moment, no id changes.
#[tokio::test(start_paused = true)]
async fn with_two_heartbeats_a_bucket_without_leader_costs_nothing() {
    let config = Config::default().with_two_heartbeats(true);
    let names = config.buckets.clone();
    for bucket in [
        &names.heartbeat,
        &names.second_heartbeat,
        &names.ids,
        &names.election,
        &names.assignment,
    ] {
        costs_nothing(&config, bucket, false).await;
    }
}

/// [`a_bucket_without_leader`] ended no ownership of a surviving worker and changed no id.
async fn costs_nothing(config: &Config, bucket: &str, crash_leader: bool) {
    let (ended, same_ids) = a_bucket_without_leader(config.clone(), bucket, crash_leader).await;
    assert!(
        ended.is_empty(),
        "{bucket} without leader: {} ownerships ended",
        ended.len()
    );
    assert!(same_ids, "{bucket} without leader: ids changed");
}

/// The same while the parti leader crashes as the first heartbeat bucket loses its
/// leader: the new leader learns the fleet from listings of both buckets, and takes no
/// worker riding on its second heartbeat for gone — only the crashed one's partitions move.
#[tokio::test(start_paused = true)]
async fn with_two_heartbeats_a_new_leader_during_the_outage_moves_only_the_crashed() {
    let config = Config::default().with_two_heartbeats(true);
    for bucket in [&config.buckets.heartbeat, &config.buckets.second_heartbeat] {
        costs_nothing(&config, bucket, true).await;
    }
}

/// The contrast, which shows the test above can fail: with one heartbeat, the heartbeat
/// bucket without a leader for longer than a TTL fences every worker.
#[tokio::test(start_paused = true)]
async fn with_one_heartbeat_a_heartbeat_bucket_without_leader_fences_the_fleet() {
    let config = Config::default().with_two_heartbeats(false);
    let bucket = config.buckets.heartbeat.clone();
    let (ended, _) = a_bucket_without_leader(config, &bucket, false).await;
    assert_eq!(ended.len(), 30, "every ownership ended: {ended:?}");
}
