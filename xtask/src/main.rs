//! parti's project tasks, run as `cargo xtask <task>`.
//!
//! - `cargo xtask test`: formatting check, clippy and rustdoc with warnings denied, every
//!   test (nextest when installed, plus doc tests), after making sure a `nats-server` ≥ 2.11 is available
//!   for the NATS tests (installing a pinned one under `target/` when none is found), then a
//!   small `fleet_bench --check` (20 workers × 1,000 partitions: every phase completes, the
//!   idle cost stays within its bound).
//! - `cargo xtask nats-latency`: KV operation latency against a real `nats-server`.
//! - `cargo xtask fleet-bench …`: a fleet of managers measured phase by phase (cold start,
//!   idle cost, join, leave, crash, leader abort) on a real `nats-server` (release build).
//! - `cargo xtask consumer-demo`: `PartitionConsumer` on a real `nats-server`, with a
//!   worker killed and one added while messages flow (release build).
//! - `cargo xtask strategy-report …`: compute time, balance and movement of every
//!   assignment strategy (always measured on a release build).

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

mod nats_server;
mod strategy_report;

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  test    fmt check, clippy and rustdoc -D warnings, all tests (nextest if present),
          doc tests and a fleet-bench check (20 x 1,000: phases complete, idle cost
          within its bound);
          installs nats-server 2.12.8 under target/ when no nats-server >= 2.11 is found
  nats-latency [--samples N]
          p50/p99 of NatsStore get (through the stream leader, next to the direct get it
          replaced), put, CAS update, a 200-key listing and watch notification, on one
          nats-server and on a 3-node cluster on loopback, and on the cluster the time a
          stream takes writes again after its leader's node is killed and the longest
          write gap while that node restarts in lame-duck mode (release build); one JSON
          object per line
  fleet-bench [--workers N] [--partitions P] [--timings short|default]
              [--store nats|memory] [--idle SECONDS]
          N managers (each its own connection) over P partitions on a nats-server it
          starts (release build): cold start, idle cost (server messages, JetStream API
          requests, CPU, memory), join, graceful leave, crash, leader abort; one JSON
          object per phase, then a table
  consumer-demo
          a stream of 60 partitions consumed by 3 workers on a nats-server it starts,
          with a producer; one worker killed, one added; per-partition counts,
          duplicates and gaps at the end (release build)
";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") if args.len() == 1 => test(),
        Some("strategy-report") => strategy_report(&args[1..]),
        Some("nats-latency") => nats_latency(&args[1..]),
        Some("fleet-bench") => release_example("fleet_bench", &args[1..]),
        Some("consumer-demo") => release_example("consumer_demo", &args[1..]),
        Some("help" | "--help" | "-h") => {
            println!("{USAGE}{}", strategy_report::USAGE);
            Ok(())
        }
        _ => Err(format!(
            "unknown or missing task: {args:?}\n\n{USAGE}{}",
            strategy_report::USAGE
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (the parent of this crate's directory).
fn workspace_root() -> PathBuf {
    let xtask_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask_dir.parent().unwrap_or(xtask_dir).to_path_buf()
}

/// The target directory cargo uses for this workspace.
fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn cargo() -> Command {
    let mut command = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

/// Runs `command`, echoing it first, and fails if it fails.
fn run(mut command: Command) -> Result<(), String> {
    let shown = format!("{command:?}").replace('"', "");
    println!("\n==> {shown}");
    let status = command
        .status()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed ({status})"))
    }
}

/// Measures strategies. Timings mean nothing in a debug build, so a debug xtask re-runs
/// itself in release.
fn strategy_report(args: &[String]) -> Result<(), String> {
    let options = strategy_report::Options::parse(args)?;
    if cfg!(debug_assertions) {
        let mut release = cargo();
        release
            .args(["run", "--release", "--quiet", "--package", "xtask", "--"])
            .arg("strategy-report")
            .args(args);
        let status = release
            .status()
            .map_err(|e| format!("cannot run the release build: {e}"))?;
        return if status.success() {
            Ok(())
        } else {
            Err(format!("the release strategy report failed ({status})"))
        };
    }
    strategy_report::run(&options)
}

/// Runs the NATS latency example in release against a server found or installed here.
fn nats_latency(args: &[String]) -> Result<(), String> {
    release_example("nats_latency", args)
}

/// Runs the `tests` crate's example `name` in release, with a server found or installed
/// here.
fn release_example(name: &str, args: &[String]) -> Result<(), String> {
    let server = nats_server::ensure(&target_dir())?;
    let mut command = cargo();
    command
        .args([
            "run",
            "--release",
            "--quiet",
            "--package",
            "tests",
            "--example",
        ])
        .arg(name)
        .arg("--")
        .args(args)
        .env("NATS_SERVER_BIN", &server.path);
    run(command)
}

fn has_nextest() -> bool {
    cargo()
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|out| out.status.success())
}

fn test() -> Result<(), String> {
    let server = nats_server::ensure(&target_dir())?;
    println!(
        "==> using nats-server {} at {}",
        server.version,
        server.path.display()
    );
    // The test processes find the server through NATS_SERVER_BIN.
    let with_nats = |mut command: Command| {
        command.env("NATS_SERVER_BIN", &server.path);
        command
    };

    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    run(fmt)?;

    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]);
    run(clippy)?;

    let mut docs = cargo();
    docs.args(["doc", "--workspace", "--no-deps", "--all-features"])
        .env("RUSTDOCFLAGS", "-D warnings");
    run(docs)?;

    if has_nextest() {
        let mut tests = cargo();
        tests.args([
            "nextest",
            "run",
            "--workspace",
            "--all-features",
            "--no-fail-fast",
        ]);
        run(with_nats(tests))?;
        let mut doc_tests = cargo();
        doc_tests.args(["test", "--workspace", "--all-features", "--doc"]);
        run(with_nats(doc_tests))?;
    } else {
        println!("==> cargo-nextest not found; running cargo test");
        let mut tests = cargo();
        tests.args(["test", "--workspace", "--all-features", "--no-fail-fast"]);
        run(with_nats(tests))?;
    }
    // A small fleet on a real server: every phase must complete, and the idle cost stay
    // within its bound (counts, not times; a debug build, as the tests).
    let mut fleet = cargo();
    fleet
        .args([
            "run",
            "--quiet",
            "--package",
            "tests",
            "--example",
            "fleet_bench",
            "--",
        ])
        .args(["--workers", "20", "--partitions", "1000", "--check"]);
    run(with_nats(fleet))?;

    println!("\n==> all checks passed");
    Ok(())
}
