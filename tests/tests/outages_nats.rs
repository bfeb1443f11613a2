//! Store outages, lost buckets and garbage on a real `nats-server` (short timings, real
//! clock): the server restarted with and without its data, each protocol bucket deleted
//! under a running fleet, garbage under a worker-shaped heartbeat key. Each time the fleet rejoins by itself — every partition owned once by a
//! live worker — with no two owners of a partition at once and no token shared by two
//! processes.

use std::time::Duration;

use parti_core::config::Config;
use parti_core::store::{Bucket, Store};
use tests::fleet::Fleet;
use tests::nats::{NatsFixture, Servers};
use tokio::time::Instant;

async fn fleet() -> (Fleet<NatsFixture>, NatsFixture) {
    let nats = NatsFixture::single().await;
    let connect = nats.clone();
    (
        Fleet::new(move || connect.clone(), Config::short_timings(), 30),
        nats,
    )
}

/// How long the fleet may take to rejoin after the server answers again.
fn rejoin_bound(config: &Config) -> Duration {
    // Reconnecting, the lost leases' TTL, a new leader, a cold-start window at worst.
    config.cold_start_window * 2 + config.election_ttl + 4 * config.heartbeat_ttl
}

/// Watches the fleet for `length` (every member's `owns()`, versions, the ledger).
async fn watch_for(fleet: &mut Fleet<NatsFixture>, length: Duration) {
    let until = Instant::now() + length;
    fleet
        .wait_for("the fault to play out", length * 2, |_| {
            if Instant::now() >= until {
                Ok(())
            } else {
                Err("watching".into())
            }
        })
        .await;
}

async fn server_restart(empty: bool) {
    let (mut fleet, nats) = fleet().await;
    fleet.start(4).await;
    let bound = rejoin_bound(&fleet.config);
    fleet.settle(bound).await;
    nats.with_servers(|servers| match servers {
        Servers::Single(server) if empty => server.restart_empty(),
        Servers::Single(server) => server.restart(),
        Servers::Cluster(_) => unreachable!("a single server"),
    });
    let watch = 2 * fleet.config.heartbeat_ttl;
    watch_for(&mut fleet, watch).await;
    fleet.settle(bound).await;
    fleet.check_ledger();
    fleet.stop_all().await;
    fleet.check_ledger();
}

/// The server restarted with its data: the fleet rejoins by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_with_its_data_is_ridden_out() {
    server_restart(false).await;
}

/// The server restarted without its data — every bucket gone: the buckets are created
/// again and the fleet rejoins by itself, without a process restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restarted_empty_is_ridden_out() {
    server_restart(true).await;
}

/// Each protocol bucket deleted, one after the other, under the running fleet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bucket_deleted_under_the_fleet_is_created_again() {
    let (mut fleet, nats) = fleet().await;
    fleet.start(4).await;
    let bound = rejoin_bound(&fleet.config);
    fleet.settle(bound).await;
    for bucket in [
        "parti-heartbeat",
        "parti-assignment",
        "parti-ids",
        "parti-election",
    ] {
        nats.store()
            .delete_bucket(bucket)
            .await
            .unwrap_or_else(|e| panic!("deleting {bucket}: {e}"));
        let watch = 2 * fleet.config.heartbeat_ttl;
        watch_for(&mut fleet, watch).await;
        let lost = Instant::now();
        let bound = rejoin_bound(&fleet.config);
        fleet.settle(bound).await;
        eprintln!("{bucket}: settled {:?} after the watch", lost.elapsed());
        fleet.check_ledger();
    }
    fleet.stop_all().await;
    fleet.check_ledger();
}

/// Garbage under a worker-shaped heartbeat key (a foreign writer, say), kept there for a
/// while: it is no worker — nothing is assigned to it, nothing moves — and the fleet stays
/// settled throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_under_a_heartbeat_key_is_no_worker() {
    let (mut fleet, nats) = fleet().await;
    fleet.start(3).await;
    let bound = rejoin_bound(&fleet.config);
    fleet.settle(bound).await;
    let before = fleet.assignment().unwrap();
    let heartbeats = nats
        .bucket(&fleet.config.heartbeat_bucket().unwrap())
        .await
        .unwrap();
    let until = Instant::now() + 4 * fleet.config.heartbeat_ttl;
    while Instant::now() < until {
        heartbeats
            .put(
                "worker-9",
                bytes::Bytes::from_static(b"\xffnot a heartbeat"),
            )
            .await
            .unwrap();
        let step = fleet.config.heartbeat_ttl / 2;
        watch_for(&mut fleet, step).await;
        fleet.settle(Duration::from_millis(1)).await;
    }
    assert_eq!(fleet.assignment().unwrap().moved_from(&before), 0);
    assert!(
        !fleet
            .ids()
            .contains(&parti_strategy::WorkerId::new("worker-9"))
    );
    fleet.check_ledger();
    fleet.stop_all().await;
}
