//! Values in the protocol's buckets that are not what the protocol wrote — garbage from a
//! foreign writer, a bug, a half-migrated deployment — on the real runtime (`MemoryStore`,
//! default timings, paused clock). They get a clear error, reported once, and lose nothing.

use std::time::Duration;

use parti_core::config::Config;
use parti_core::decide::ManagerState;
use parti_core::store::{Bucket, MemoryStore, Store};
use parti_strategy::WorkerId;
use tests::fleet::Fleet;

/// Garbage under a worker-shaped heartbeat key is no worker: the leader neither counts it as
/// live nor assigns it anything, nothing moves, and the unreadable key is reported once,
/// not at every listing.
#[tokio::test(start_paused = true)]
async fn garbage_under_a_heartbeat_key_is_no_worker() {
    let store = MemoryStore::new();
    let config = Config::default();
    let heartbeats = store
        .bucket(&config.heartbeat_bucket().unwrap())
        .await
        .unwrap();
    let mut fleet = Fleet::new(move || store.connect(), config, 30);
    fleet.start(3).await;
    fleet.settle(Duration::from_secs(120)).await;
    let before = fleet.assignment().unwrap();
    // 20 s of garbage under `worker-9` (written again before its TTL runs out) — longer
    // than the planned-scale window: nobody joins, so the fleet stays stable and every
    // partition stays owned all along.
    for _ in 0..40 {
        heartbeats
            .put("worker-9", b"\xffnot a heartbeat".to_vec().into())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        fleet.look_at_owns();
        let owned = fleet.ownership().unwrap();
        assert_eq!(owned.len(), 30, "partitions left unowned");
        for id in fleet.ids() {
            let state = fleet.member(&id).manager.state();
            assert_eq!(state, ManagerState::Stable, "{id} is {state}");
        }
    }
    fleet.settle(Duration::from_secs(60)).await;
    let after = fleet.assignment().unwrap();
    assert_eq!(after.moved_from(&before), 0, "nothing moved");
    assert!(
        !after
            .iter()
            .any(|(_, owner)| *owner == WorkerId::new("worker-9")),
        "garbage was given partitions"
    );
    let errors = fleet.hooks.errors.lock().unwrap().clone();
    let reported = errors.iter().filter(|e| e.contains("worker-9")).count();
    assert_eq!(
        reported, 1,
        "reported once, not at every listing: {errors:?}"
    );
    fleet.check_ledger();
    fleet.stop_all().await;
}

/// Garbage over every worker's assignment record (a foreign writer, a bug): the workers keep
/// what they hold (an unreadable record is skipped and reported), and when the leader then
/// crashes, its successor — finding only unreadable records — opens no window: the fleet is
/// settled again within `election_ttl` plus T5 (`heartbeat_ttl` + `emergency_grace` +
/// 0.5 s) of the crash, and nothing is ever owned twice.
#[tokio::test(start_paused = true)]
async fn garbage_over_the_assignment_records_opens_no_window() {
    let store = MemoryStore::new();
    let config = Config::default();
    let records = store
        .bucket(&config.assignment_bucket().unwrap())
        .await
        .unwrap();
    let mut fleet = Fleet::new(move || store.connect(), config.clone(), 30);
    fleet.start(3).await;
    fleet.settle(Duration::from_secs(120)).await;
    for id in fleet.ids() {
        records
            .put(id.as_str(), b"\xffnot a record".to_vec().into())
            .await
            .unwrap();
    }
    // The workers keep what they hold.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        fleet.look_at_owns();
        assert_eq!(
            fleet.ownership().unwrap().len(),
            30,
            "partitions left unowned"
        );
    }
    let leader = fleet.leaders().pop().expect("a leader");
    fleet.crash(&leader).await;
    let bound = config.election_ttl
        + config.heartbeat_ttl
        + config.emergency_grace
        + Duration::from_millis(500);
    fleet.settle(bound).await;
    fleet.check_ledger();
    fleet.stop_all().await;
}
