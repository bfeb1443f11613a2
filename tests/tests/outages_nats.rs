//! Store outages, lost buckets and garbage on a real `nats-server` (short timings, real
//! clock): the server restarted with and without its data, each protocol bucket deleted
//! under a running fleet, garbage under a worker-shaped heartbeat key. Each time the fleet rejoins by itself — every partition owned once by a
//! live worker — with no two owners of a partition at once and no token shared by two
//! processes.

use std::time::Duration;

use parti_core::config::Config;
use parti_core::store::{Bucket, Store};
use parti_core::wire::{Heartbeat, WireRecord};
use parti_strategy::WorkerId;
use tests::fleet::{Fleet, reown_bound};
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

/// How long a fleet may take to settle at its start (a cold-start window and a leader).
fn start_bound(config: &Config) -> Duration {
    config.cold_start_window * 2 + config.election_ttl + 4 * config.heartbeat_ttl
}

/// How long a fault is watched after the server answers: every lease and election of
/// before it has ended by then.
fn aftermath(config: &Config) -> Duration {
    2 * config.election_ttl.max(config.heartbeat_ttl) + config.emergency_grace
}

/// Every partition is owned again within [`reown_bound`] after the server answers or the
/// bucket was lost, and
/// the fleet is never without a leader for more than `election_ttl` + 0.5 s; `slack` is
/// added to both (after a restart, each connection must first notice it and reconnect).
fn check_recovery(
    config: &Config,
    what: &str,
    reowned: Duration,
    leaderless: Duration,
    slack: Duration,
) {
    eprintln!(
        "{what}: every partition owned again {reowned:?} after, longest without a leader {leaderless:?}"
    );
    assert!(
        reowned <= reown_bound(config) + slack,
        "{what}: every partition owned again only {reowned:?} after"
    );
    assert!(
        leaderless <= config.election_ttl + Duration::from_millis(500) + slack,
        "{what}: no leader for {leaderless:?}"
    );
}

async fn server_restart(empty: bool) {
    let (mut fleet, nats) = fleet().await;
    fleet.start(4).await;
    let config = fleet.config.clone();
    fleet.settle(start_bound(&config)).await;
    nats.with_servers(|servers| match servers {
        Servers::Single(server) if empty => server.restart_empty(),
        Servers::Single(server) => server.restart(),
        Servers::Cluster(_) => unreachable!("a single server"),
    });
    let answered = Instant::now();
    let leaderless = fleet.watch_until(answered + aftermath(&config)).await;
    fleet.settle(Duration::ZERO).await;
    let what = if empty {
        "restarted empty"
    } else {
        "restarted"
    };
    let reowned = fleet.reowned_since(answered);
    check_recovery(&config, what, reowned, leaderless, config.heartbeat_ttl);
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
    let config = fleet.config.clone();
    fleet.settle(start_bound(&config)).await;
    for bucket in [
        "parti-heartbeat",
        "parti-assignment",
        "parti-ids",
        "parti-election",
    ] {
        let lost = Instant::now();
        nats.store()
            .delete_bucket(bucket)
            .await
            .unwrap_or_else(|e| panic!("deleting {bucket}: {e}"));
        let leaderless = fleet.watch_until(lost + aftermath(&config)).await;
        fleet.settle(Duration::ZERO).await;
        let what = format!("{bucket} deleted");
        let reowned = fleet.reowned_since(lost);
        check_recovery(&config, &what, reowned, leaderless, Duration::ZERO);
        fleet.check_ledger();
    }
    fleet.stop_all().await;
    fleet.check_ledger();
}

/// Garbage under a worker-shaped heartbeat key, and a well-formed heartbeat under an id
/// nobody claimed (a foreign writer, say), kept there for a while: neither is a worker —
/// nothing is assigned to it, nothing moves — and the fleet stays settled throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_under_a_heartbeat_key_is_no_worker() {
    let (mut fleet, nats) = fleet().await;
    fleet.start(3).await;
    fleet.settle(start_bound(&fleet.config)).await;
    let before = fleet.assignment().unwrap();
    let heartbeats = nats
        .bucket(&fleet.config.heartbeat_bucket().unwrap())
        .await
        .unwrap();
    let foreign = Heartbeat {
        instance_id: "not-a-parti-worker".into(),
        session: 0,
        floor: 0,
        applied_version: 0,
        term_seen: 0,
    }
    .encode()
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
        heartbeats.put("worker-8", foreign.clone()).await.unwrap();
        let step = fleet.config.heartbeat_ttl / 2;
        fleet.watch_until(Instant::now() + step).await;
        fleet.settle(Duration::from_millis(1)).await;
    }
    assert_eq!(fleet.assignment().unwrap().moved_from(&before), 0);
    // The leader never planned with them: no assignment record was ever written for them.
    let records = nats
        .bucket(&fleet.config.assignment_bucket().unwrap())
        .await
        .unwrap();
    for foreign in ["worker-8", "worker-9"] {
        assert!(!fleet.ids().contains(&WorkerId::new(foreign)));
        assert_eq!(
            records.get(foreign).await.unwrap(),
            None,
            "{foreign}'s record"
        );
    }
    fleet.check_ledger();
    fleet.stop_all().await;
}
