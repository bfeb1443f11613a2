//! A live fleet on the embedded store: five workers share 60 partitions, one crashes, two
//! join. Every change of ownership is printed as a table; the run ends with a summary.
//!
//! ```text
//! cargo run -p parti --example cluster
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use parti::strategy::{Assignment, Sticky, WorkerId};
use parti::{Config, Manager, MemoryStore, StaticSource};
use tokio::time::{Instant, sleep};

const PARTITIONS: usize = 60;

type Fleet = BTreeMap<WorkerId, Manager<MemoryStore>>;

async fn start(fleet: &mut Fleet, store: &MemoryStore, source: &StaticSource, n: usize) {
    for _ in 0..n {
        let manager = Manager::builder(store.connect(), source.clone(), Sticky::default())
            .config(Config::short_timings())
            .start()
            .await
            .expect("the embedded store is always reachable");
        println!("+ {} joined", manager.worker_id());
        fleet.insert(manager.worker_id(), manager);
    }
}

/// Who owns each partition (by the workers' applied assignments).
/// Who owns what, as the workers themselves report it.
fn owners(fleet: &Fleet) -> Assignment {
    fleet
        .iter()
        .flat_map(|(id, m)| {
            m.assignment()
                .partitions()
                .map(|p| (p.clone(), id.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn table(fleet: &Fleet) -> String {
    let mut out = String::new();
    for (id, manager) in fleet {
        let assignment = manager.assignment();
        out += &format!(
            "  {:<9} {:>3} partitions  v{:<3} {:<19}{}\n",
            id.as_str(),
            assignment.len(),
            assignment.version(),
            manager.state().to_string(),
            if manager.is_leader() { "leader" } else { "" }
        );
    }
    out
}

/// Prints the table whenever it changes, until `done` holds (or 30 s pass); returns when.
async fn watch_until(fleet: &Fleet, started: Instant, done: impl Fn(&Fleet) -> bool) -> Instant {
    let mut last = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = table(fleet);
        if now != last {
            println!("[{:>6.2}s]\n{now}", started.elapsed().as_secs_f64());
            last = now;
        }
        if done(fleet) || Instant::now() > deadline {
            return Instant::now();
        }
        sleep(Duration::from_millis(50)).await;
    }
}

/// Every partition owned exactly once by a running worker, everyone `Stable`.
fn settled(fleet: &Fleet) -> bool {
    let owned: usize = fleet.values().map(|m| m.assignment().len()).sum();
    owned == PARTITIONS
        && owners(fleet).len() == PARTITIONS
        && fleet
            .values()
            .all(|m| m.state() == parti::ManagerState::Stable)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let started = Instant::now();
    let store = MemoryStore::new();
    let source = StaticSource::numbered("orders", PARTITIONS).expect("valid keys");
    let mut fleet = Fleet::new();

    // Short timings, so that the whole story fits in a few seconds of real time.
    let config = Config::short_timings();
    println!(
        "== cold start: 5 workers, {PARTITIONS} partitions ({:?} window)",
        config.cold_start_window
    );
    start(&mut fleet, &store, &source, 5).await;
    watch_until(&fleet, started, settled).await;
    let before_crash = owners(&fleet);

    let victim = fleet
        .keys()
        .find(|id| !fleet[*id].is_leader())
        .cloned()
        .expect("a follower");
    let lost = fleet[&victim].assignment().len();
    println!("== crash: {victim} dies without cleanup ({lost} partitions)");
    let crashed = Instant::now();
    fleet.remove(&victim).expect("running").abort().await;
    let reowned = watch_until(&fleet, started, settled).await - crashed;
    let after_crash = owners(&fleet);

    println!(
        "== scale out: two workers join ({:?} window)",
        config.planned_scale_window
    );
    let before_join = after_crash.clone();
    start(&mut fleet, &store, &source, 2).await;
    watch_until(&fleet, started, settled).await;
    let after_join = owners(&fleet);

    let minimum_join = 2 * (PARTITIONS / fleet.len());
    println!("== summary");
    let bound = config.heartbeat_ttl + config.emergency_grace + Duration::from_millis(500);
    println!(
        "  crash: {} partitions moved (minimum {lost}), re-owned in {:.2} s (bound: heartbeat_ttl + grace + 0.5 s = {bound:?})",
        after_crash.moved_from(&before_crash),
        reowned.as_secs_f64()
    );
    println!(
        "  join of 2: {} partitions moved (minimum {minimum_join})",
        after_join.moved_from(&before_join)
    );
    for (_, manager) in fleet {
        manager.stop().await.expect("clean stop");
    }
    println!(
        "  all workers stopped after {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
