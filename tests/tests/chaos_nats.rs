//! The chaos run on a real `nats-server`: 6 workers, 120 partitions, 60 s of random crashes
//! (each followed by a replacement), leader kills, one worker's NATS connection severed
//! through a proxy and restored — twice — and black-holed (nothing forwarded, the socket
//! kept open, longer than the heartbeat TTL) and restored — twice; the first worker's grant
//! hook takes 1.5 s, longer than its heartbeat lease. The ownership ledger must show no
//! overlaps and tokens that only grow; at the end every partition is owned exactly once.
//!
//! It prints a report: the longest time a moved partition had no owner, and how long the
//! partitions of each crashed, killed or severed worker took to be owned again. Run it with
//! `cargo test -p tests --test chaos_nats -- --nocapture` to see it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use parti_core::config::Config;
use parti_nats::NatsStore;
use parti_strategy::PartitionId;
use tests::fleet::Fleet;
use tests::ledger::{Ledger, Owner};
use tests::nats::wait_for_jetstream;
use tests::nats_server::NatsServer;
use tests::proxy::Proxy;
use tests::rng::Rng;
use tokio::time::{Instant, sleep};

const WORKERS: usize = 6;
const PARTITIONS: usize = 120;
const CHAOS: Duration = Duration::from_secs(60);
/// Connections made up front, one per worker start (the fleet's connect is synchronous).
const CONNECTIONS: usize = 48;

/// A worker that lost its partitions at `at`, and which partitions.
struct Loss {
    what: &'static str,
    at: Instant,
    owner: Owner,
    partitions: Vec<PartitionId>,
}

impl Loss {
    fn of(what: &'static str, ledger: &Ledger, owner: Owner) -> Self {
        let partitions = ledger
            .owners_now()
            .into_iter()
            .filter(|(_, owners)| owners.contains(&owner))
            .map(|(partition, _)| partition)
            .collect();
        Self {
            what,
            at: Instant::now(),
            owner,
            partitions,
        }
    }

    /// How long until every partition lost was owned by another worker.
    fn reowned_after(&self, ledger: &Ledger) -> Option<Duration> {
        let intervals = ledger.intervals();
        self.partitions
            .iter()
            .map(|partition| {
                intervals
                    .iter()
                    .filter(|i| {
                        &i.partition == partition && i.owner != self.owner && i.from.0 >= self.at
                    })
                    .map(|i| i.from.0 - self.at)
                    .min()
            })
            .try_fold(Duration::ZERO, |longest, next| Some(longest.max(next?)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_on_nats_never_double_owns() {
    let server = NatsServer::start();
    let url = server.url();
    wait_for_jetstream(&url, 1).await;
    let upstream = url.trim_start_matches("nats://").to_owned();
    let mut proxies = Vec::new();
    let mut stores = Vec::new();
    for _ in 0..CONNECTIONS {
        let proxy = Proxy::start(&upstream).await;
        let store = NatsStore::connect(&proxy.url())
            .await
            .expect("connecting through the proxy");
        proxies.push(proxy);
        stores.push(store);
    }
    // The k-th worker started gets the k-th connection (and is label k + 1 in the ledger).
    let pool = Arc::new(Mutex::new(stores.into_iter().rev().collect::<Vec<_>>()));
    let mut fleet = Fleet::new(
        move || pool.lock().unwrap().pop().expect("enough connections"),
        Config::short_timings(),
        PARTITIONS,
    );
    fleet.hooks.drain = Duration::from_millis(50);
    fleet.hooks.grant_delay = Duration::from_millis(1_500);
    fleet.hooks.slow_grants_of = Some(1);
    fleet.start(WORKERS).await;
    fleet.settle(Duration::from_secs(60)).await;

    let mut rng = Rng::new(0x5EED);
    let mut losses = Vec::new();
    let began = Instant::now();
    // Network faults at fixed points: severed (the connection closes) and black-holed (it
    // stays open and delivers nothing), each for longer than the heartbeat TTL.
    let mut cuts = vec![
        (began + CHAOS / 5, "severed"),
        (began + CHAOS * 2 / 5, "black-holed"),
        (began + CHAOS * 3 / 5, "severed"),
        (began + CHAOS * 4 / 5, "black-holed"),
    ]
    .into_iter()
    .peekable();
    while began.elapsed() < CHAOS {
        sleep(rng.millis(1_500, 4_000)).await;
        let ids: Vec<_> = fleet.ids().into_iter().collect();
        if let Some((_, what)) = cuts.next_if(|(at, _)| Instant::now() >= *at) {
            let id = rng.pick(&ids).expect("members");
            let owner = fleet.member(id).owner;
            losses.push(Loss::of(what, &fleet.ledger, owner));
            let proxy = &proxies[owner - 1];
            if what == "severed" {
                proxy.sever();
            } else {
                proxy.black_hole();
            }
            sleep(rng.millis(2_000, 4_000)).await;
            proxy.restore();
            continue;
        }
        let (what, id) = if rng.below(3) == 0 {
            match &fleet.leaders()[..] {
                [leader] => ("leader killed", leader.clone()),
                _ => continue,
            }
        } else {
            ("crashed", rng.pick(&ids).expect("members").clone())
        };
        let owner = fleet.member(&id).owner;
        losses.push(Loss::of(what, &fleet.ledger, owner));
        fleet.crash(&id).await;
        fleet.start(1).await;
    }
    fleet.settle(Duration::from_secs(60)).await;
    let owners = fleet.ownership().expect("exclusive");
    assert_eq!(owners.len(), PARTITIONS);
    fleet.check_ledger();

    let mut report = String::from("chaos report:\n");
    // Moves between live workers (revoke, drain, report, grant), apart from the re-owning
    // of partitions whose owner crashed or was cut off, which is reported per loss below.
    let handoffs = fleet.ledger.handoffs();
    let moved: Vec<_> = handoffs
        .iter()
        .filter(|h| {
            !losses
                .iter()
                .any(|loss| loss.owner == h.from && h.released >= loss.at)
        })
        .collect();
    let longest = moved
        .iter()
        .max_by_key(|h| h.gap)
        .expect("partitions moved");
    let mut gaps: Vec<Duration> = moved.iter().map(|h| h.gap).collect();
    gaps.sort();
    report += &format!(
        "  {} ownership intervals, {} changes of owner, 0 overlaps\n  \
         {} moved between live workers: median gap without an owner {:?}, longest {:?} ({})\n",
        fleet.ledger.intervals().len(),
        handoffs.len(),
        moved.len(),
        gaps[gaps.len() / 2],
        longest.gap,
        longest.partition,
    );
    let mut by_kind: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    for loss in &losses {
        let reowned = loss.reowned_after(&fleet.ledger).unwrap_or_else(|| {
            panic!(
                "the partitions of a {} worker were never re-owned",
                loss.what
            )
        });
        by_kind.entry(loss.what).or_default().push(reowned);
        report += &format!(
            "  {} worker (label {}): {} partitions re-owned after {:?}\n",
            loss.what,
            loss.owner,
            loss.partitions.len(),
            reowned
        );
    }
    for (what, times) in &by_kind {
        report += &format!(
            "  {what}: {} times, re-owned after at most {:?}\n",
            times.len(),
            times.iter().max().expect("one")
        );
    }
    println!("{report}");
    assert!(by_kind.contains_key("crashed") && by_kind.contains_key("leader killed"));
    assert_eq!(by_kind.get("severed").map(Vec::len), Some(2));
    assert_eq!(by_kind.get("black-holed").map(Vec::len), Some(2));
    assert!(
        fleet
            .hooks
            .grants_finished
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0,
        "grant hooks ran to their end"
    );
    fleet.stop_all().await;
    fleet.check_ledger();
}
