//! `fleet-bench`: a fleet of N managers (each with its own connection) over P partitions
//! on a pinned nats-server it starts itself (or on the memory store), measured phase by
//! phase: cold start, idle cost, a join, a graceful leave, a crash and a leader abort. One
//! JSON line per phase, then a table. Run it through `cargo xtask fleet-bench`, which
//! installs the server and builds this in release mode.
//!
//! Times are from the harness's view of the fleet (every partition owned once by a live
//! worker, one leader, every worker `Stable` and following it), looked at every 10 ms.
//! Idle cost comes from the server's monitoring endpoints (`/varz` messages, `/jsz` API
//! requests) and `/proc` (CPU, resident memory).

use std::collections::BTreeMap;
use std::time::Duration;

use parti_core::config::Config;
use parti_core::store::{MemoryStore, Store};
use parti_nats::NatsStore;
use parti_strategy::WorkerId;
use tests::fleet::Fleet;
use tests::nats_server::{NatsServer, http_get, number_after};
use tokio::time::Instant;

const USAGE: &str = "\
usage: fleet-bench [--workers N] [--partitions P] [--timings short|default]
                   [--store nats|memory] [--idle SECONDS] [--check]

--check: exit with status 1 when the idle cost is over its bound: a worker's own connection
(the median one) sending more than 1.2 times its heartbeat rate, or the whole fleet more
than 10 JetStream API requests a second. (Every phase must complete in any case.)";

struct Args {
    workers: usize,
    partitions: usize,
    timings: String,
    store: String,
    idle: Duration,
    check: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        workers: 20,
        partitions: 1_000,
        timings: "short".into(),
        store: "nats".into(),
        idle: Duration::from_secs(30),
        check: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: not a number: {v}"))
        };
        match flag.as_str() {
            "--workers" => args.workers = number(value()?)? as usize,
            "--partitions" => args.partitions = number(value()?)? as usize,
            "--timings" => args.timings = value()?,
            "--store" => args.store = value()?,
            "--idle" => args.idle = Duration::from_secs(number(value()?)?),
            "--check" => args.check = true,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if args.workers < 3 {
        return Err(
            "--workers must be at least 3 (a crash and a leader abort need survivors)".into(),
        );
    }
    if !["short", "default"].contains(&args.timings.as_str()) {
        return Err(format!(
            "--timings must be short or default, got {}",
            args.timings
        ));
    }
    if !["nats", "memory"].contains(&args.store.as_str()) {
        return Err(format!(
            "--store must be nats or memory, got {}",
            args.store
        ));
    }
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (rows, over) = runtime.block_on(run(&args));
    println!();
    println!("| phase | seconds | detail |");
    println!("|---|---|---|");
    for (phase, seconds, detail) in rows {
        println!("| {phase} | {seconds:.2} | {detail} |");
    }
    if args.check && !over.is_empty() {
        eprintln!("\nover the bound:");
        for line in &over {
            eprintln!("  {line}");
        }
        std::process::exit(1);
    }
}

/// Rows of the table, and the idle costs over their bound.
type Results = (Vec<(String, f64, String)>, Vec<String>);

/// What the server says about its traffic, and CPU counters.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    in_msgs: u64,
    out_msgs: u64,
    api_requests: u64,
    server_cpu_ticks: u64,
    fleet_cpu_ticks: u64,
}

async fn run(args: &Args) -> Results {
    let config = if args.timings == "short" {
        Config::short_timings()
    } else {
        Config::default()
    };
    match args.store.as_str() {
        "memory" => {
            let store = MemoryStore::new();
            let fleet = Fleet::new(move || store.connect(), config, args.partitions);
            phases(args, fleet, None).await
        }
        _ => {
            let server = NatsServer::start_monitored();
            let url = server.url();
            // Each manager its own connection, as separate processes would have — made
            // before the clock starts, all at once (the fleet asks for them one by one,
            // which at 200 workers took longer than the cold start itself).
            let mut connecting = tokio::task::JoinSet::new();
            for _ in 0..args.workers + 3 {
                let url = url.clone();
                connecting.spawn(async move { NatsStore::connect(&url).await });
            }
            let mut pool = Vec::new();
            while let Some(store) = connecting.join_next().await {
                pool.push(
                    store
                        .expect("a connect task")
                        .expect("connecting to the bench's server"),
                );
            }
            let pool = std::sync::Mutex::new(pool);
            let fleet = Fleet::new(
                move || {
                    if let Some(store) = pool.lock().unwrap().pop() {
                        return store;
                    }
                    let url = url.clone();
                    tokio::task::block_in_place(|| {
                        tokio::runtime::Handle::current()
                            .block_on(NatsStore::connect(&url))
                            .expect("connecting to the bench's server")
                    })
                },
                config,
                args.partitions,
            );
            phases(args, fleet, Some(&server)).await
        }
    }
}

async fn phases<S: Store>(
    args: &Args,
    mut fleet: Fleet<S>,
    server: Option<&NatsServer>,
) -> Results {
    let mut over = Vec::new();
    let config = fleet.config.clone();
    let limit = 4 * config.cold_start_window + 10 * config.election_ttl + Duration::from_secs(60);
    let mut rows = Vec::new();
    let mut report = |phase: &str, seconds: f64, detail: String| {
        println!(
            "{{\"phase\":\"{phase}\",\"store\":\"{}\",\"timings\":\"{}\",\"workers\":{},\"partitions\":{},\"seconds\":{seconds:.3}{detail}}}",
            args.store, args.timings, args.workers, args.partitions
        );
        let readable = detail.trim_start_matches(',').replace('"', "");
        rows.push((phase.to_owned(), seconds, readable));
    };
    let rss_before = resident_kib();

    // Cold start: every manager at once; the cold-start window is subtracted.
    let before_start = counters(server).await;
    let started = Instant::now();
    fleet.start(args.workers).await;
    // Every manager started: its buckets open and its id claimed.
    let all_started = started.elapsed();
    let after_start = counters(server).await;
    let settled = fleet.settle(limit).await;
    let after_cold = counters(server).await;
    let cold = (settled - started).saturating_sub(config.cold_start_window);
    report(
        "cold_start",
        cold.as_secs_f64(),
        format!(
            ",\"window\":{:.3},\"all_started\":{:.3},\"js_api_starting\":{},\"js_api_total\":{}",
            config.cold_start_window.as_secs_f64(),
            all_started.as_secs_f64(),
            after_start.api_requests - before_start.api_requests,
            after_cold.api_requests - before_start.api_requests,
        ),
    );

    // Idle: traffic and CPU over `idle`, memory per manager.
    let before = counters(server).await;
    let connections_before = per_connection_in_msgs(server).await;
    let from = Instant::now();
    fleet.watch_until(from + args.idle).await;
    let after = counters(server).await;
    let connections_after = per_connection_in_msgs(server).await;
    let secs = from.elapsed().as_secs_f64();
    let per = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / secs;
    let heartbeats = 1.0 / config.heartbeat_interval.as_secs_f64();
    let rss = resident_kib().saturating_sub(rss_before) as f64 / args.workers as f64;
    // Per connection (one per manager): the typical one and the busiest (the leader's).
    let mut rates: Vec<f64> = connections_after
        .iter()
        .map(|(cid, after)| {
            let before = connections_before.get(cid).copied().unwrap_or(0);
            per(before, *after)
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    let median = rates.get(rates.len() / 2).copied().unwrap_or(0.0);
    let busiest = rates.last().copied().unwrap_or(0.0);
    let api = per(before.api_requests, after.api_requests);
    if server.is_some() {
        if median > 1.2 * heartbeats {
            over.push(format!(
                "a worker's connection sent {median:.2} messages a second idle, over 1.2 x its {heartbeats:.2} heartbeats"
            ));
        }
        if api > 10.0 {
            over.push(format!(
                "the idle fleet made {api:.1} JetStream API requests a second, over 10"
            ));
        }
    }
    report(
        "idle",
        secs,
        format!(
            ",\"in_msgs_per_s\":{:.1},\"out_msgs_per_s\":{:.1},\"in_msgs_per_worker_s\":{:.2},\"heartbeats_per_worker_s\":{heartbeats:.2},\"js_api_per_s\":{:.1},\"in_msgs_per_s_median_connection\":{median:.2},\"in_msgs_per_s_busiest_connection\":{busiest:.1},\"server_cpu\":{:.3},\"fleet_cpu\":{:.3},\"rss_kib_per_manager\":{rss:.0}",
            per(before.in_msgs, after.in_msgs),
            per(before.out_msgs, after.out_msgs),
            per(before.in_msgs, after.in_msgs) / args.workers as f64,
            api,
            per(before.server_cpu_ticks, after.server_cpu_ticks) / TICKS_PER_SECOND,
            per(before.fleet_cpu_ticks, after.fleet_cpu_ticks) / TICKS_PER_SECOND,
        ),
    );

    // A join: from its start until the fleet (with it owning its share) is settled.
    let before = counters(server).await;
    let joined_at = Instant::now();
    let joined = fleet.start(1).await.pop().expect("one started");
    let settled = fleet
        .wait_for("the joiner to own its share", limit, |fleet| {
            fleet.settled()?;
            let owns = fleet.assignment()?.partitions_of(&joined).len();
            if owns > 0 {
                Ok(())
            } else {
                Err("the joiner owns nothing yet".into())
            }
        })
        .await;
    let after = counters(server).await;
    report(
        "join",
        (settled - joined_at).as_secs_f64(),
        format!(
            ",\"window\":{:.3},\"server_in_msgs\":{}",
            config.planned_scale_window.as_secs_f64(),
            after.in_msgs.saturating_sub(before.in_msgs)
        ),
    );

    // A graceful leave: the joiner stops; until the others own its partitions.
    let leaving = Instant::now();
    fleet.stop(&joined).await;
    let settled = fleet.settle(limit).await;
    report(
        "graceful_leave",
        (settled - leaving).as_secs_f64(),
        String::new(),
    );

    // A crash (T5): a follower aborted; until its partitions are owned again.
    let leader = fleet.leaders().pop().expect("a leader");
    let victim = fleet
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    let crashed = Instant::now();
    fleet.crash(&victim).await;
    let settled = fleet.settle(limit).await;
    let t5 = config.heartbeat_ttl + config.emergency_grace + Duration::from_millis(500);
    report(
        "crash",
        (settled - crashed).as_secs_f64(),
        format!(",\"bound\":{:.3}", t5.as_secs_f64()),
    );

    // A leader abort (T6): until every worker follows a leader of a higher term.
    let leader = fleet.leaders().pop().expect("a leader");
    let term = leader_term(&fleet, &leader);
    let aborted = Instant::now();
    fleet.crash(&leader).await;
    let on_new_term = fleet
        .wait_for("every worker on the new term", limit, |fleet| {
            let behind = fleet
                .ids()
                .into_iter()
                .filter(|id| {
                    fleet
                        .member(id)
                        .manager
                        .leader()
                        .is_none_or(|leader| leader.term <= term)
                })
                .count();
            if behind == 0 {
                Ok(())
            } else {
                Err(format!("{behind} workers not on a new term"))
            }
        })
        .await;
    let settled = fleet.settle(limit).await;
    let t6 = config.election_ttl + Duration::from_millis(500);
    report(
        "leader_abort",
        (on_new_term - aborted).as_secs_f64(),
        format!(
            ",\"bound\":{:.3},\"settled\":{:.3}",
            t6.as_secs_f64(),
            (settled - aborted).as_secs_f64()
        ),
    );
    fleet.check_ledger();
    fleet.stop_all().await;
    fleet.check_ledger();
    (rows, over)
}

fn leader_term<S: Store>(fleet: &Fleet<S>, leader: &WorkerId) -> u64 {
    fleet
        .member(leader)
        .manager
        .leader()
        .map_or(0, |info| info.term)
}

/// Clock ticks per second in `/proc/*/stat` (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

async fn counters(server: Option<&NatsServer>) -> Counters {
    let mut counters = Counters {
        fleet_cpu_ticks: cpu_ticks("self"),
        ..Counters::default()
    };
    let Some(server) = server else {
        return counters;
    };
    if let Some(pid) = server.pid() {
        counters.server_cpu_ticks = cpu_ticks(&pid.to_string());
    }
    let monitor = server.monitor_url().expect("a monitored server");
    let varz = http_get(&monitor, "/varz").await;
    counters.in_msgs = number_after(&varz, "\"in_msgs\"").unwrap_or(0);
    counters.out_msgs = number_after(&varz, "\"out_msgs\"").unwrap_or(0);
    let jsz = http_get(&monitor, "/jsz").await;
    counters.api_requests = jsz
        .find("\"api\"")
        .and_then(|at| number_after(&jsz[at..], "\"total\""))
        .unwrap_or(0);
    counters
}

/// Messages each client connection has sent the server so far, by connection id (none
/// on the memory store).
async fn per_connection_in_msgs(server: Option<&NatsServer>) -> BTreeMap<u64, u64> {
    let Some(monitor) = server.and_then(NatsServer::monitor_url) else {
        return BTreeMap::new();
    };
    let connz = http_get(&monitor, "/connz?limit=100000").await;
    // Each connection object holds its "cid" before its "in_msgs".
    connz
        .split("\"cid\"")
        .skip(1)
        .filter_map(|connection| {
            let cid = number_after(connection, "")?;
            let in_msgs = number_after(connection, "\"in_msgs\"")?;
            Some((cid, in_msgs))
        })
        .collect()
}

/// utime + stime of a process, in clock ticks (0 if unreadable).
fn cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line; `rest` starts at field 3.
    let field = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(14) + field(15)
}

/// This process's resident memory, in KiB (0 if unreadable).
fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
