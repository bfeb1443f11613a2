//! Deterministic simulation of exclusive ownership.
//!
//! Each seed drives one run on the embedded store and tokio's paused clock, on one thread:
//! a random schedule of joins, graceful stops, crashes (tasks aborted, no cleanup), a worker
//! cut off from the store and healed, leader crashes and partition refreshes, in a fleet
//! whose revoke hooks drain for a seed-chosen time (sometimes longer than the drain
//! timeout). The ownership ledger built from the hooks must show no two owners of a
//! partition at once, tokens that only grow and no token held by two processes; once the
//! schedule ends and the fleet
//! settles, every partition is owned exactly once.
//!
//! Slow faults join in: a worker's link slower than the heartbeat TTL, a link that
//! black-holes and then resumes or closes, writes that time out after taking effect, grant
//! hooks slower than the lease, grant hooks that panic, a partition source that fails or
//! hangs, the whole fleet cut off for longer than `id_ttl` (every claim lapses; processes
//! come back on one another's ids, whose records still grant partitions), a protocol bucket
//! lost (deleted under the running fleet), a bucket without a leader for a while (every
//! connection's operations on it fail; half the seeds write two heartbeats, as a fleet on
//! a replicated store does), and a frozen worker: all its tasks paused, like a process under `SIGSTOP`, for
//! up to 8 s. While one is frozen, every member's `owns()` is looked at every 10 ms: no
//! partition may be owned by two at once, and a frozen owner's hold ends (for the ledger)
//! where its `owns()` turns false — after the thaw it must not own that grant again. The
//! run prints one summary line (`cargo test -p tests --test simulation -- --nocapture`):
//! seeds, overlaps, shared tokens, intervals and how often each fault was injected.
//!
//! The seeds run on both cores. `PARTI_SIM_SEEDS=N` runs N seeds (default 500);
//! `PARTI_SIM_SEED=S` runs only seed S — a failure prints the command that replays it, and a
//! replay is exact (see `a_seed_replays_exactly`).

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use parti_core::config::Config;
use std::sync::atomic::Ordering;

use parti_core::store::{Fault, MemoryStore, Store};
use parti_core::testing::Freezer;
use parti_strategy::{Partition, WorkerId};
use tests::fleet::Fleet;
use tests::ledger::{Ledger, Owner};
use tests::rng::Rng;
use tests::source::TestSource;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep};

const DEFAULT_SEEDS: u64 = 500;
/// Threads the seeds are run on (the machine has two cores).
const THREADS: u64 = 2;
const PARTITIONS: usize = 24;

/// The default timings with short windows, so a schedule packs many rebalances.
fn config() -> Config {
    let mut config = Config::default();
    config.cold_start_window = Duration::from_secs(2);
    config.planned_scale_window = Duration::from_secs(1);
    config.cooldown = Duration::from_secs(1);
    config.drain_timeout = Duration::from_secs(2);
    config
}

/// What one run saw.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    /// Every ownership interval: (partition, owner label, token, from, to), in ms.
    intervals: Vec<String>,
    /// How many events of each kind ran.
    kinds: BTreeMap<&'static str, usize>,
}

/// A fault to lift later.
enum Heal {
    Reconnect(MemoryStore),
    Latency(MemoryStore),
    /// A black hole that resumes, or ends with the connection closed (then restored).
    Stall {
        store: MemoryStore,
        close: bool,
    },
    Source,
    /// A frozen worker (its ledger label), thawed.
    Thaw(Freezer, Owner),
    /// A bucket without a leader, back.
    Bucket(MemoryStore, String),
}

impl Heal {
    fn apply(&self, source: &TestSource, ledger: &Ledger) {
        match self {
            Self::Reconnect(store) => store.reconnect(),
            Self::Latency(store) => store.set_latency(Duration::ZERO),
            Self::Stall { store, close } => {
                if *close {
                    store.disconnect();
                }
                store.unstall();
                store.reconnect();
            }
            Self::Source => source.recover(),
            Self::Bucket(store, name) => {
                store.restore_bucket(name);
            }
            Self::Thaw(freezer, owner) => {
                ledger.thawed(*owner);
                freezer.thaw();
            }
        }
    }
}

fn partition(n: usize) -> Partition {
    Partition::from_keys(["p", n.to_string().as_str()]).expect("a valid key")
}

/// How long `owns()` is still looked at after a thaw.
const LOOK_AFTER_THAW: Duration = Duration::from_secs(5);
/// How often `owns()` is looked at meanwhile.
const LOOK_EVERY: Duration = Duration::from_millis(10);

/// Lets `length` pass; while a worker is `frozen` or until `look_until`, looks at every
/// member's `owns()` every [`LOOK_EVERY`] (the ledger ends a frozen owner's hold where its
/// `owns()` turns false).
async fn pass(fleet: &Fleet<MemoryStore>, length: Duration, frozen: bool, look_until: Instant) {
    let end = Instant::now() + length;
    loop {
        let now = Instant::now();
        if now >= end {
            return;
        }
        if frozen || now < look_until {
            fleet.look_at_owns();
            sleep(LOOK_EVERY.min(end - now)).await;
        } else {
            sleep(end - now).await;
        }
    }
}

/// Awaits `future`; if `looking`, looks at every member's `owns()` meanwhile (a call into
/// a manager whose link hangs may take seconds).
async fn looking_meanwhile<T>(
    fleet: &Fleet<MemoryStore>,
    looking: bool,
    future: impl Future<Output = T>,
) -> T {
    let mut future = std::pin::pin!(future);
    loop {
        tokio::select! {
            biased;
            done = &mut future => return done,
            () = sleep(LOOK_EVERY), if looking => fleet.look_at_owns(),
        }
    }
}

/// With `PARTI_SIM_TRACE` set, prints each event of a run as it is injected (to read a
/// replayed seed).
fn trace(start: Instant, kind: &str, ids: &[WorkerId]) {
    if std::env::var_os("PARTI_SIM_TRACE").is_some() {
        eprintln!(
            "{:?} {:>8?} {kind} (members {ids:?})",
            Instant::now(),
            Instant::now() - start
        );
    }
}

async fn simulate(seed: u64) -> Outcome {
    let mut rng = Rng::new(seed);
    let store = MemoryStore::new();
    // Half the seeds write two heartbeats, as a fleet on a replicated store does.
    let two_heartbeats = rng.below(2) == 0;
    let config = config().with_two_heartbeats(two_heartbeats);
    let buckets = config.buckets.clone();
    let mut fleet = Fleet::new(move || store.connect(), config, PARTITIONS);
    fleet.hooks.drain = [0, 100, 800, 3_000].map(Duration::from_millis)[rng.below(4) as usize];
    // Grant hooks: instant, or slower than the heartbeat lease (never cut while it holds).
    fleet.hooks.grant_delay = [0, 0, 300, 3_500].map(Duration::from_millis)[rng.below(4) as usize];
    let mut kinds = BTreeMap::new();
    if fleet.hooks.grant_delay >= fleet.config.heartbeat_ttl {
        kinds.insert("slow_hook", 1);
    }
    if two_heartbeats {
        kinds.insert("two_heartbeats", 1);
    }
    let start = Instant::now();
    fleet.start(3 + rng.below(3) as usize).await;
    let mut next_partition = PARTITIONS;
    let mut stopping = JoinSet::new();
    let mut cut: Vec<(Instant, Heal)> = Vec::new();
    let mut refresh_failed = false;
    // Until when to look at every member's `owns()`: while a worker is frozen and for a
    // while after its thaw.
    let mut look_until = start;
    for _ in 0..8 + rng.below(10) {
        let frozen = cut.iter().any(|(_, heal)| matches!(heal, Heal::Thaw(..)));
        pass(&fleet, rng.millis(200, 6_000), frozen, look_until).await;
        let now = Instant::now();
        cut.retain(|(heal_at, heal)| {
            let due = *heal_at <= now;
            if due {
                heal.apply(&fleet.source, &fleet.ledger);
                if matches!(heal, Heal::Thaw(..)) {
                    look_until = now + LOOK_AFTER_THAW;
                }
            }
            !due
        });
        // After an outage longer than `id_ttl`, workers may hold other ids.
        fleet.rekey();
        let ids: Vec<WorkerId> = fleet.ids().into_iter().collect();
        // Slow faults, a quarter of the events: a link slower than the heartbeat TTL, a link
        // that black-holes (then resumes or closes), writes that time out after taking
        // effect, a worker frozen (like SIGSTOP), a grant hook that panics, a partition
        // source that fails or hangs.
        if rng.below(4) == 0 {
            let heal_at = now + rng.millis(500, 8_000);
            let kind = match rng.below(10) {
                0 => {
                    let Some(id) = rng.pick(&ids) else { continue };
                    let store = fleet.member(id).store.clone();
                    store.set_latency(rng.millis(3_200, 6_000));
                    cut.push((heal_at, Heal::Latency(store)));
                    "latency"
                }
                1 => {
                    let Some(id) = rng.pick(&ids) else { continue };
                    let store = fleet.member(id).store.clone();
                    store.stall();
                    let close = rng.below(3) == 0;
                    cut.push((heal_at, Heal::Stall { store, close }));
                    "stall"
                }
                2 => {
                    let Some(id) = rng.pick(&ids) else { continue };
                    let store = &fleet.member(id).store;
                    store.fail_next(1 + rng.below(4) as usize, Fault::Timeout { applied: true });
                    "timeout_applied"
                }
                3 => {
                    fleet.hooks.grant_panics.fetch_add(1, Ordering::Relaxed);
                    "hook_panic"
                }
                4 => {
                    let Some(id) = rng.pick(&ids) else { continue };
                    let freezer = fleet.member(id).freezer.clone();
                    freezer.freeze();
                    let owner = fleet.member(id).owner;
                    fleet.ledger.frozen(owner);
                    cut.push((heal_at, Heal::Thaw(freezer, owner)));
                    "freeze"
                }
                5 => {
                    // The whole fleet cut off for longer than `id_ttl`: every claim lapses,
                    // and the processes may come back on one another's ids.
                    let back = now + fleet.config.id_ttl + rng.millis(1_000, 8_000);
                    for member in fleet.members().values() {
                        member.store.disconnect();
                        cut.push((back, Heal::Reconnect(member.store.clone())));
                    }
                    "outage"
                }
                6 => {
                    // A protocol bucket lost (deleted, or a server restarted without it).
                    let bucket = [
                        "parti-ids",
                        "parti-heartbeat",
                        "parti-assignment",
                        "parti-election",
                    ][rng.below(4) as usize];
                    let Some(id) = rng.pick(&ids) else { continue };
                    // Bounded: the member's link may be black-holed (then nothing is lost).
                    let delete = fleet.member(id).store.delete_bucket(bucket);
                    let _ = tokio::time::timeout(Duration::from_secs(5), delete).await;
                    trace(start, bucket, &ids);
                    "lost_bucket"
                }
                7 => {
                    // A bucket without a leader for a while (a replicated store's node
                    // died; the other replicas elect one): every connection's operations
                    // on it fail.
                    // (Not the ids bucket: a manager starting meanwhile would fail to, and
                    // the harness counts on starts; `outages.rs` tests that bucket.)
                    let bucket = [
                        &buckets.heartbeat,
                        &buckets.second_heartbeat,
                        &buckets.assignment,
                        &buckets.election,
                    ][rng.below(4) as usize]
                        .clone();
                    let Some(id) = rng.pick(&ids) else { continue };
                    let store = fleet.member(id).store.clone();
                    if !store.fail_bucket(&bucket) {
                        continue;
                    }
                    trace(start, &bucket, &ids);
                    cut.push((heal_at, Heal::Bucket(store, bucket)));
                    "leaderless_bucket"
                }
                _ => {
                    if rng.below(2) == 0 {
                        fleet.source.fail();
                    } else {
                        fleet.source.hang();
                    }
                    cut.push((heal_at, Heal::Source));
                    "source_fail"
                }
            };
            trace(start, kind, &ids);
            *kinds.entry(kind).or_default() += 1;
            continue;
        }
        let kind = match rng.below(100) {
            // Join.
            0..25 if ids.len() < 7 => {
                fleet.start(1).await;
                "join"
            }
            // Graceful stop, running alongside what follows.
            25..40 if ids.len() > 1 => {
                let id = rng.pick(&ids).expect("members").clone();
                let member = fleet.take(&id);
                stopping.spawn(async move {
                    // A worker cut off from the store cannot clean up; that is fine here.
                    let _ = member.manager.stop().await;
                });
                "stop"
            }
            // Crash.
            40..55 if ids.len() > 1 => {
                let id = rng.pick(&ids).expect("members").clone();
                fleet.crash(&id).await;
                "crash"
            }
            // Cut a worker off from the store, healed later.
            55..75 => {
                let Some(id) = rng.pick(&ids) else { continue };
                let store = fleet.member(id).store.clone();
                store.disconnect();
                cut.push((now + rng.millis(500, 8_000), Heal::Reconnect(store)));
                "cut off"
            }
            // Crash the leader.
            75..88 => match &fleet.leaders()[..] {
                [leader] if ids.len() > 1 => {
                    let leader = leader.clone();
                    fleet.crash(&leader).await;
                    "leader crash"
                }
                _ => continue,
            },
            // Add or remove a partition and ask for a refresh.
            _ => {
                let mut partitions = fleet.source.get();
                if rng.below(2) == 0 || partitions.len() < 8 {
                    partitions.push(partition(next_partition));
                    next_partition += 1;
                } else {
                    partitions.remove(rng.below(partitions.len() as u64) as usize);
                }
                fleet.source.set(partitions);
                if let Some(id) = rng.pick(&ids) {
                    // A worker cut off from the store cannot pass the request on; like
                    // any caller seeing the error, the harness asks again later.
                    let refresh = fleet.member(id).manager.refresh_partitions();
                    let looking = frozen || Instant::now() < look_until;
                    refresh_failed |= looking_meanwhile(&fleet, looking, refresh).await.is_err();
                }
                "refresh"
            }
        };
        trace(start, kind, &ids);
        *kinds.entry(kind).or_default() += 1;
    }
    for (_, heal) in cut.drain(..) {
        heal.apply(&fleet.source, &fleet.ledger);
    }
    // Injected timeouts not yet used up would fail the final clean stops.
    for member in fleet.members().values() {
        member.store.clear_faults();
    }
    while let Some(done) = stopping.join_next().await {
        done.expect("stop task");
    }
    if fleet.ids().is_empty() {
        fleet.start(1).await;
    }
    if refresh_failed {
        let id = fleet.ids().into_iter().next().expect("a member");
        fleet
            .member(&id)
            .manager
            .refresh_partitions()
            .await
            .expect("refresh after healing");
    }
    fleet.settle(Duration::from_secs(300)).await;
    // Settled: the managers' views agree, and so must the ledger — one open interval per
    // partition, held by a live member.
    let owners = fleet.ownership().expect("exclusive");
    let ledger_owners = fleet.ledger.owners_now();
    assert_eq!(ledger_owners.len(), owners.len(), "ledger vs managers");
    for (partition, worker) in &owners {
        let owner = fleet.member(worker).owner;
        assert_eq!(ledger_owners[partition], [owner], "{partition}");
    }
    fleet.stop_all().await;
    fleet.check_ledger();
    let recorded = fleet.ledger.intervals();
    // Terms are raised to the wall clock (see `runtime/election.rs`): a replay compares them
    // by rank, which the run decides.
    let terms: BTreeSet<u64> = recorded.iter().map(|i| i.token.term).collect();
    let rank = |term: u64| terms.range(..term).count();
    let intervals = recorded
        .iter()
        .map(|i| {
            format!(
                "{} {} term#{} v{} {:?} {:?}",
                i.partition,
                i.owner,
                rank(i.token.term),
                i.token.version,
                (i.from.0 - start).as_millis(),
                i.to.map(|t| (t.0 - start).as_millis())
            )
        })
        .collect();
    Outcome { intervals, kinds }
}

/// Runs one seed on a fresh single-threaded runtime with a paused clock.
fn run(seed: u64) -> Outcome {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime")
        .block_on(simulate(seed))
}

fn env(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {value:?}")),
    )
}

/// Runs one seed; a failure names the seed and how to replay it.
fn run_checked(seed: u64) -> Outcome {
    match catch_unwind(AssertUnwindSafe(|| run(seed))) {
        Ok(outcome) => outcome,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            panic!(
                "simulation seed {seed} failed: {message}\n\
                 replay it with: PARTI_SIM_SEED={seed} cargo test -p tests --test simulation"
            );
        }
    }
}

/// The fault kinds the summary line reports, in its order.
const FAULTS: [&str; 11] = [
    "two_heartbeats",
    "leaderless_bucket",
    "latency",
    "stall",
    "timeout_applied",
    "freeze",
    "slow_hook",
    "hook_panic",
    "outage",
    "lost_bucket",
    "source_fail",
];

/// Runs every seed, on one thread per core (a runtime each), and prints one summary line:
/// seeds, overlaps (a run with one fails), ownership intervals, and how often each slow
/// fault was injected.
#[test]
fn seeds() {
    let seeds: Vec<u64> = match env("PARTI_SIM_SEED") {
        Some(seed) => vec![seed],
        None => (0..env("PARTI_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS)).collect(),
    };
    let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..THREADS)
            .map(|thread| {
                let seeds = &seeds;
                scope.spawn(move || {
                    seeds
                        .iter()
                        .filter(|seed| *seed % THREADS == thread)
                        .map(|&seed| run_checked(seed))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|thread| match thread.join() {
                Ok(outcomes) => outcomes,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    });
    let intervals: usize = outcomes.iter().map(|o| o.intervals.len()).sum();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for outcome in &outcomes {
        for (kind, count) in &outcome.kinds {
            *kinds.entry(kind).or_default() += count;
        }
    }
    let faults = FAULTS
        .iter()
        .map(|fault| format!("\"{fault}\":{}", kinds.get(fault).copied().unwrap_or(0)))
        .collect::<Vec<_>>()
        .join(",");
    println!(
        "{{\"seeds\":{},\"overlaps\":0,\"shared_tokens\":0,\"intervals\":{intervals},\"faults\":{{{faults}}}}}",
        seeds.len()
    );
    if seeds.len() >= 500 {
        for fault in FAULTS {
            let count = kinds.get(fault).copied().unwrap_or(0);
            assert!(
                count >= 100,
                "{fault} injected only {count} times: {kinds:?}"
            );
        }
        for kind in [
            "join",
            "stop",
            "crash",
            "cut off",
            "leader crash",
            "refresh",
        ] {
            assert!(kinds.contains_key(kind), "no {kind} event: {kinds:?}");
        }
    }
}

/// The same seed gives the same run, to the millisecond: a failing seed replays exactly.
#[test]
fn a_seed_replays_exactly() {
    let first = run(7);
    let second = run(7);
    assert!(!first.kinds.is_empty() && !first.intervals.is_empty());
    assert_eq!(first, second);
    // And different seeds give different runs.
    assert_ne!(run(8).intervals, first.intervals);
}
