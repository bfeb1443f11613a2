//! The scenario suite on the embedded `MemoryStore`, with the default timings on tokio's
//! paused clock (fast and deterministic).

use std::time::Duration;

use parti_core::config::Config;
use parti_core::store::MemoryStore;
use tests::fleet::Fleet;
use tokio::time::Instant;

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
    // Not `follower()`: right after the leader's stop there may be no leader yet.
    let other = ids.iter().find(|id| **id != leader).unwrap().clone();
    fleet.crash(&other).await;
    // Stopped one by one from this task, and counted with no `.await` in between, so a
    // task still winding down after `stop` returned would be counted.
    for id in fleet.ids() {
        fleet.stop(&id).await;
    }
    assert_eq!(alive(), before, "tasks left running after stop");
}

/// A worker cut off from the store fences itself: its revoke hook runs before its heartbeat
/// can expire, `owns` turns false at once, and the leader gives its partitions to the others
/// only after that; healed, it rejoins and the fleet settles with exclusive ownership.
#[tokio::test(start_paused = true)]
async fn a_cut_off_worker_fences_itself() {
    a_worker_off_the_store_fences_itself(MemoryStore::disconnect, MemoryStore::reconnect).await;
}

/// The same with a link that black-holes (requests get no answer, the socket stays open):
/// every read and heartbeat of the worker hangs, yet it fences by its lease end.
#[tokio::test(start_paused = true)]
async fn a_stalled_worker_fences_by_its_lease_end() {
    a_worker_off_the_store_fences_itself(MemoryStore::stall, MemoryStore::unstall).await;
}

async fn a_worker_off_the_store_fences_itself(cut: fn(&MemoryStore), heal: fn(&MemoryStore)) {
    let mut fleet = fleet();
    fleet.start(3).await;
    fleet.settle(Duration::from_secs(120)).await;
    let victim = fleet.follower();
    let member = fleet.member(&victim);
    let owned = member.manager.assignment();
    let (partition, token) = owned.grants().next().map(|(p, t)| (p.clone(), t)).unwrap();
    assert!(member.manager.owns(&partition, token));
    let stale = parti_core::wire::FencingToken {
        version: token.version + 1,
        ..token
    };
    assert!(
        !member.manager.owns(&partition, stale),
        "only the granted token"
    );

    let config = fleet.config.clone();
    let cut_at = Instant::now();
    cut(&member.store);
    // The last heartbeat before the cut was sent at most one interval before it.
    let fence_by = cut_at + config.heartbeat_ttl - config.margin_for(config.heartbeat_ttl) / 2;
    fleet
        .wait_for(
            "the cut-off worker to release everything",
            Duration::from_secs(10),
            |f| match f.member(&victim).manager.assignment().is_empty() {
                true => Ok(()),
                false => Err("still holding".into()),
            },
        )
        .await;
    assert!(Instant::now() <= fence_by, "fenced too late");
    let member = fleet.member(&victim);
    assert!(!member.manager.owns(&partition, token));
    let released: Vec<_> = fleet
        .ledger
        .intervals()
        .into_iter()
        .filter(|i| i.owner == member.owner)
        .collect();
    assert!(
        released.iter().all(|i| i.to.is_some()),
        "every interval closed: the revoke hook has finished"
    );
    // The others take its partitions over (the ledger checks none overlaps the release).
    fleet
        .wait_for(
            "its partitions to be re-owned",
            Duration::from_secs(30),
            |f| {
                let owners = f.ledger.owners_now();
                match owners.get(&partition) {
                    Some(owner) if !owner.contains(&f.member(&victim).owner) => Ok(()),
                    _ => Err(format!("{partition}: {:?}", owners.get(&partition))),
                }
            },
        )
        .await;
    heal(&fleet.member(&victim).store);
    fleet.settle(Duration::from_secs(120)).await;
    fleet.check_ledger();
    fleet.stop_all().await;
}

/// A revoke hook that never returns holds a moving partition only for `drain_timeout`: the
/// worker then releases it anyway, and the new owner gets it right after.
#[tokio::test(start_paused = true)]
async fn a_hanging_revoke_hook_is_cut_at_the_drain_timeout() {
    let mut fleet = fleet();
    fleet.hooks.drain = Duration::from_secs(3600);
    fleet.start(3).await;
    fleet.settle(Duration::from_secs(120)).await;
    let intervals_before = fleet.ledger.intervals().len();
    let joined = Instant::now();
    fleet.start(1).await;
    fleet.settle(Duration::from_secs(120)).await;
    assert_eq!(
        fleet.ledger.intervals().len() - intervals_before,
        7,
        "30 over 4: 7 move"
    );
    // The revocations start when the planned-scale window closes; each hook is dropped at
    // the drain timeout, and the new owner gets the partition right after.
    let revoked_at = joined + fleet.config.planned_scale_window;
    let cut_at = revoked_at + fleet.config.drain_timeout;
    let handoffs = fleet.ledger.handoffs();
    assert_eq!(handoffs.len(), 7);
    for handoff in &handoffs {
        assert!(
            handoff.released >= cut_at && handoff.released < cut_at + Duration::from_secs(1),
            "released {:?} after the window closed, drain timeout {:?}",
            handoff.released - revoked_at,
            fleet.config.drain_timeout
        );
        assert!(handoff.gap < Duration::from_secs(1), "{handoff:?}");
    }
    fleet.check_ledger();
    fleet.stop_all().await;
}
