//! The scenario suite on the embedded `MemoryStore`, with the default timings on tokio's
//! paused clock (fast and deterministic).

use parti_core::config::Config;
use parti_core::store::MemoryStore;
use tests::fleet::Fleet;

fn fleet() -> Fleet<MemoryStore> {
    let store = MemoryStore::new();
    // Each manager gets its own connection to the same data.
    Fleet::new(move || store.connect(), Config::default(), 30)
}

tests::scenario_tests! {
    #[tokio::test(start_paused = true)]
    fleet = fleet();
}

/// Every task a manager starts has ended when `stop` (or `abort`) returns: the runtime has
/// exactly the tasks it had before the fleet started.
#[tokio::test(start_paused = true)]
async fn no_task_outlives_stop() {
    let alive = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let before = alive();
    let mut fleet = fleet();
    let ids = fleet.start(4).await;
    fleet.settle(std::time::Duration::from_secs(120)).await;
    assert!(alive() > before + 4, "the managers run tasks");
    // One graceful stop of the leader (it runs the calculator), one crash, then the rest.
    let leader = fleet.leader();
    fleet.stop(&leader).await;
    let other = ids.iter().find(|id| **id != leader).unwrap().clone();
    fleet.crash(&other).await;
    // Stopped one by one from this task, and counted with no `.await` in between, so a
    // task still winding down after `stop` returned would be counted.
    for id in fleet.ids() {
        fleet.stop(&id).await;
    }
    assert_eq!(alive(), before, "tasks left running after stop");
}
