//! Outages of the store on the real runtime, on `MemoryStore` with the default timings and
//! tokio's paused clock: a worker whose heartbeat lease lapses is `Degraded` — it owns
//! nothing and says why — and leaves that state by itself when the store answers; after an
//! outage of the whole fleet every worker gets its id and its partitions back with nothing
//! moved (with a static identity also after an outage longer than `id_ttl`).

use std::collections::BTreeMap;
use std::time::Duration;

use parti_core::config::Config;
use parti_core::decide::{DegradedReason, ManagerState};
use parti_core::store::MemoryStore;
use parti_strategy::WorkerId;
use tests::fleet::Fleet;
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
