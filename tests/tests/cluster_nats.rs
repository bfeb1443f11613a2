//! A fleet on a 3-node NATS cluster (every bucket with 3 replicas), each manager on its own
//! connection made the ordinary way, with default timings: what losing or restarting one
//! node costs (issue 19).

use std::time::Duration;

use tokio::time::Instant;

use parti_core::config::Config;
use parti_core::store::Store;
use tests::fleet::{Fleet, reown_bound};
use tests::nats::{NatsFixture, Servers, stream_leader, wait_for_jetstream};

const WORKERS: usize = 6;

/// The tests of this file run one at a time also under `cargo test` (nextest runs them one
/// at a time by its test group): a 3-node cluster and a fleet on it take most of a 2-core
/// machine, and two at once starve each other past their leases.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const PARTITIONS: usize = 60;

/// Each node restarted in turn the way an operator does for an upgrade — lame-duck mode
/// (`nats-server --signal ldm`: it hands its stream leaderships over and lets its clients
/// go), then started again with its data: no partition changes hands or is unowned at any
/// moment, and no worker loses its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lame_duck_restart_of_each_node_costs_nothing() {
    each_node_in_turn(
        Config::default().with_replicas(3),
        "lame-duck restart",
        |server| {
            server.lame_duck_restart();
        },
        Afterwards::Crash,
    )
    .await;
}

/// How long a killed node stays down: longer than a stream's failover (6.3–8.4 s measured).
const DOWN: Duration = Duration::from_secs(10);

/// Each node killed (SIGKILL) in turn, down for [`DOWN`], then started again with its data,
/// with the default timings and `replicas` 3 — so each worker writes two heartbeats, whose
/// buckets' leaders the parti leader keeps on different nodes: no partition changes hands
/// or is unowned at any moment, and no worker loses its id. (With one heartbeat —
/// `with_two_heartbeats(false)` — the first kill of the heartbeat stream's leader ends all
/// 60 ownerships: the stream fails over in 3.6–6.9 s, longer than the 3 s TTL.) Then, with
/// one node killed and its streams failed over, a worker crash is re-owned within the bound
/// of a healthy cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_costs_nothing() {
    let config = Config::default().with_replicas(3);
    each_node_in_turn(
        config,
        "kill",
        |server| {
            server.kill();
            // The fault's length, on the blocking thread that plays the operator; the fleet
            // is watched meanwhile.
            std::thread::sleep(DOWN);
            server.resume();
        },
        Afterwards::CrashWithANodeDown,
    )
    .await;
}

/// What [`each_node_in_turn`] does after its rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Afterwards {
    /// Crashes a worker: re-owned within [`reown_bound`].
    Crash,
    /// Kills a node, waits until every bucket's stream has a leader again, then crashes a
    /// worker: re-owned within [`reown_bound`] all the same.
    CrashWithANodeDown,
}

/// A 3-node cluster, the fleet's buckets on it, and a fleet of [`WORKERS`] with `config`,
/// settled.
async fn settled_fleet(config: &Config) -> (NatsFixture, Fleet<NatsFixture>) {
    let nats = NatsFixture::cluster().await;
    let connect = nats.clone();
    // The buckets first, one at a time: six clients creating the same replicated streams at
    // once can time out while the cluster's meta leader works through them.
    let mut specs = vec![
        config.ids_bucket(),
        config.election_bucket(),
        config.heartbeat_bucket(),
        config.assignment_bucket(),
    ];
    if config.writes_two_heartbeats() {
        specs.push(config.second_heartbeat_bucket());
    }
    for spec in specs {
        let spec = spec.expect("a valid bucket");
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Err(e) = nats.bucket(&spec).await {
            assert!(Instant::now() < deadline, "creating {}: {e}", spec.name());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let mut fleet = Fleet::new(move || connect.own_connection(), config.clone(), PARTITIONS);
    fleet.start(WORKERS).await;
    fleet
        .settle(2 * config.cold_start_window + 4 * config.election_ttl)
        .await;
    (nats, fleet)
}

/// Kills node `node` and waits, watching the fleet, until each of the fleet's buckets has a
/// stream leader again; the fleet's ownerships meanwhile as in the rounds: none ended.
async fn kill_and_wait_for_failover(
    nats: &NatsFixture,
    fleet: &mut Fleet<NatsFixture>,
    config: &Config,
    node: usize,
) {
    let leaders = heartbeat_leaders(nats, config).await;
    println!(
        "kill of node-{node} with a crash to come; the heartbeat streams' leaders: {leaders:?}"
    );
    nats.with_servers(|servers| match servers {
        Servers::Cluster(cluster) => cluster.nodes()[node].kill(),
        Servers::Single(_) => unreachable!("a cluster"),
    });
    let killed = Instant::now();
    let buckets = [
        &config.buckets.ids,
        &config.buckets.election,
        &config.buckets.heartbeat,
        &config.buckets.second_heartbeat,
        &config.buckets.assignment,
    ];
    // A client of a surviving node (the fixture's own may have been on the killed one).
    let survivor = nats.pinned((node + 1) % 3).await;
    for bucket in buckets {
        loop {
            let leader = stream_leader(survivor.store().client(), bucket).await;
            if leader.is_some_and(|leader| !leader.is_empty()) {
                break;
            }
            assert!(
                killed.elapsed() < Duration::from_secs(60),
                "{bucket}: no stream leader 60 s after node {node} was killed"
            );
            fleet
                .watch_until(Instant::now() + Duration::from_millis(200))
                .await;
        }
    }
    println!(
        "node-{node} killed; every stream has a leader after {:?}",
        killed.elapsed()
    );
    let ended = ended_ownerships(fleet);
    assert!(
        ended.is_empty(),
        "node {node}'s kill: {ended:?} ended\n{}",
        fleet.describe()
    );
}

/// The nodes leading the two heartbeat buckets' streams (empty: none, or no answer).
async fn heartbeat_leaders(nats: &NatsFixture, config: &Config) -> Vec<String> {
    let mut leaders = Vec::new();
    for bucket in [&config.buckets.heartbeat, &config.buckets.second_heartbeat] {
        let leader = stream_leader(nats.store().client(), bucket).await;
        leaders.push(leader.unwrap_or_default());
    }
    leaders
}

/// The partitions whose ownership ended.
fn ended_ownerships(fleet: &Fleet<NatsFixture>) -> Vec<String> {
    fleet
        .ledger
        .intervals()
        .into_iter()
        .filter(|interval| interval.to.is_some())
        .map(|interval| interval.partition.to_string())
        .collect()
}

/// Runs a fleet of [`WORKERS`] on a 3-node cluster with `config`, disrupts each node in
/// turn with `disrupt` (on a blocking thread, while the fleet is watched), and asserts that
/// no ownership ended and no id changed, round after round.
async fn each_node_in_turn(
    config: Config,
    what: &'static str,
    disrupt: fn(&mut tests::nats_server::NatsServer),
    afterwards: Afterwards,
) {
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    let (nats, mut fleet) = settled_fleet(&config).await;
    let ids = fleet.ids();
    let url = nats.url();
    for node in 0..3 {
        let leaders = heartbeat_leaders(&nats, &config).await;
        println!("{what} of node-{node}; the heartbeat streams' leaders: {leaders:?}");
        let servers = nats.clone();
        let restart = tokio::task::spawn_blocking(move || {
            servers.with_servers(|servers| match servers {
                Servers::Cluster(cluster) => {
                    let server = &mut cluster.nodes()[node];
                    let before = server.pid();
                    disrupt(server);
                    assert_ne!(server.pid(), before, "node {node} was restarted");
                }
                Servers::Single(_) => unreachable!("a cluster"),
            });
        });
        while !restart.is_finished() {
            fleet
                .watch_until(Instant::now() + Duration::from_millis(500))
                .await;
        }
        restart.await.expect("the node's disruption");
        wait_for_jetstream(&url, 3).await;
        // A while after: the node takes its part again (leaderships may move back).
        fleet
            .watch_until(Instant::now() + 2 * config.heartbeat_ttl)
            .await;
        let ended = ended_ownerships(&fleet);
        assert!(
            ended.is_empty(),
            "node {node}'s {what}: {} ownerships ended ({ended:?})\n{}",
            ended.len(),
            fleet.describe()
        );
        assert_eq!(fleet.ids(), ids, "node {node}'s {what}: ids changed");
        fleet.check_ledger();
    }
    fleet.settle(Duration::ZERO).await;
    if afterwards == Afterwards::CrashWithANodeDown {
        kill_and_wait_for_failover(&nats, &mut fleet, &config, 1).await;
    }
    // After all that, a worker crash is re-owned as fast as ever (two heartbeats do not
    // slow failover down): within the bound the scenarios hold every fleet to.
    let victim = fleet.follower();
    tracing::info!(%victim, "crashing a worker");
    let crashed = Instant::now();
    fleet.crash(&victim).await;
    fleet.settle(Duration::from_secs(60)).await;
    let reowned = fleet.reowned_since(crashed);
    println!("{what}: after the last one, a crashed worker's partitions re-owned in {reowned:?}");
    assert!(
        reowned <= reown_bound(&config),
        "a crash re-owned in {reowned:?}, above {:?}",
        reown_bound(&config)
    );
    fleet.stop_all().await;
    fleet.check_ledger();
}
