//! The `parti` command: look at a fleet on NATS without taking part in it.
//!
//! ```text
//! parti status   [--nats URL] [--prefix P] [--json]    leader, term, versions, every worker
//! parti describe PARTITION [...]                       owner, fencing token, since when
//! parti watch    [...] [--max-updates N]               the status, redrawn on every change
//! ```
//!
//! Read-only: it never creates or changes a bucket; a fleet whose buckets are absent is a
//! clear error. The binary (`src/bin/parti.rs`, feature `cli`) calls [`main`](crate::cli::main); tests call
//! [`run`](crate::cli::run) with the arguments and a writer.

mod render;
mod snapshot;

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use parti_core::store::{Bucket, StoreError, WatchFrom};
use parti_nats::NatsStore;
use parti_strategy::PartitionId;

use self::snapshot::{FleetBuckets, SnapshotError};

/// Look at a parti fleet on NATS: who leads, who owns what. Read-only.
#[derive(Debug, Parser)]
#[command(name = "parti", version)]
struct Cli {
    /// NATS server URL (or a comma-separated list of one cluster's servers).
    #[arg(long, global = true, default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// The fleet's bucket prefix (`Config::buckets`, `BucketNames::with_prefix`).
    #[arg(long, global = true, default_value = "parti")]
    prefix: String,
    /// Print JSON (one document per line) instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The leader, its term and phase, the published version, and every worker: id,
    /// state, partitions, applied and published versions, heartbeat age, instance,
    /// identity, host; values that could not be read.
    Status,
    /// Who owns a partition, with which fencing token, since which version.
    Describe {
        /// The partition id.
        partition: String,
    },
    /// The status, redrawn whenever a bucket changes (and every second for the ages).
    Watch {
        /// Stop after this many redraws (default: until interrupted).
        #[arg(long)]
        max_updates: Option<u64>,
    },
}

/// Why the command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The arguments are wrong.
    #[error("{0}")]
    Usage(String),
    /// NATS could not be reached.
    #[error("cannot reach NATS at {url}: {source}")]
    Connect {
        /// The URL given.
        url: String,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// The fleet could not be read.
    #[error("{0}")]
    Read(String),
    /// No worker is assigned the partition.
    #[error(
        "partition `{0}` is in no worker's assignment: unowned, or not a partition of this fleet"
    )]
    Unowned(String),
    /// The output could not be written.
    #[error("writing the output failed: {0}")]
    Output(#[from] std::io::Error),
}

impl From<SnapshotError> for CliError {
    fn from(error: SnapshotError) -> Self {
        Self::Read(error.to_string())
    }
}

/// Runs the command line `args` (the program name first), writing to `out`.
///
/// # Errors
/// [`CliError`] saying what went wrong; `--help` and `--version` are not errors.
pub async fn run<I, T>(args: I, out: &mut (dyn Write + Send)) -> Result<(), CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            write!(out, "{}", e.render())?;
            return Ok(());
        }
        Err(e) => return Err(CliError::Usage(e.render().to_string())),
    };
    let store = NatsStore::connect(&cli.nats)
        .await
        .map_err(|source| CliError::Connect {
            url: cli.nats.clone(),
            source,
        })?;
    let buckets = FleetBuckets::open(&store, &cli.prefix).await?;
    match cli.command {
        Command::Status => {
            let fleet = buckets.snapshot().await?;
            if cli.json {
                out.write_all(render::json(&fleet).as_bytes())?;
            } else {
                out.write_all(render::status(&fleet).as_bytes())?;
            }
        }
        Command::Describe { partition } => {
            let id = PartitionId::parse(&partition)
                .map_err(|e| CliError::Usage(format!("`{partition}` is no partition id: {e}")))?;
            let fleet = buckets.snapshot().await?;
            let owner = fleet.partitions.get(id.as_str());
            if cli.json {
                let described = render::Described {
                    partition: id.as_str(),
                    owner,
                };
                out.write_all(render::json(&described).as_bytes())?;
            } else {
                let text = render::describe(id.as_str(), owner)
                    .ok_or_else(|| CliError::Unowned(partition.clone()))?;
                out.write_all(text.as_bytes())?;
            }
        }
        Command::Watch { max_updates } => watch(&buckets, cli.json, max_updates, out).await?,
    }
    out.flush()?;
    Ok(())
}

/// Redraws the status whenever any of the fleet's buckets changes, and every second.
async fn watch(
    buckets: &FleetBuckets,
    json: bool,
    max_updates: Option<u64>,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let (changed_tx, mut changed) = tokio::sync::mpsc::channel::<()>(1);
    let mut watchers = tokio::task::JoinSet::new();
    for bucket in buckets.all() {
        let bucket = bucket.clone();
        let changed_tx = changed_tx.clone();
        watchers.spawn(async move {
            // A watch that fails is set up again; the periodic redraw covers the gap.
            loop {
                if let Ok(mut events) = bucket.watch("", WatchFrom::Now).await {
                    while let Some(Ok(_)) = events.next().await {
                        let _ = changed_tx.try_send(());
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    let mut drawn = 0;
    loop {
        let fleet = buckets.snapshot().await?;
        if json {
            out.write_all(render::json(&fleet).as_bytes())?;
        } else {
            // Clear the screen, then draw from the top.
            write!(out, "\x1b[2J\x1b[H{}", render::status(&fleet))?;
        }
        out.flush()?;
        drawn += 1;
        if max_updates.is_some_and(|max| drawn >= max) {
            return Ok(());
        }
        tokio::select! {
            _ = changed.recv() => {
                // Let a burst of changes (a rebalance) land before redrawing.
                tokio::time::sleep(Duration::from_millis(200)).await;
                while changed.try_recv().is_ok() {}
            }
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// The `parti` binary: runs [`run`] on the process's arguments and prints errors to
/// standard error. Exit codes: 0 done, 1 failed, 2 wrong arguments.
pub fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("parti: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout();
    match runtime.block_on(run(std::env::args_os(), &mut stdout)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Usage(message)) => {
            eprintln!("{}", message.trim_end());
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("parti: {e}");
            ExitCode::FAILURE
        }
    }
}
