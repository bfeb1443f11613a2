//! One worker process of a fleet on NATS: start several (each in its own terminal, or in
//! the background) and look at them with the `parti` command. Ctrl-C (SIGINT) stops it
//! gracefully; `kill -9` is a crash, as the fleet sees it.
//!
//! ```text
//! nats-server -js &
//! cargo run -p parti --example worker -- nats://127.0.0.1:4222 pod-0 &
//! cargo run -p parti --example worker -- nats://127.0.0.1:4222 pod-1 &
//! cargo run -p parti --features cli --bin parti -- status
//! ```
//!
//! Arguments: the NATS URL (default `nats://127.0.0.1:4222`) and an optional static
//! identity. Short timings (`Config::short_timings`), so a fleet settles in seconds; 60
//! partitions. With the `prometheus` feature and `PARTI_METRICS=127.0.0.1:9090` in the
//! environment, it serves its metrics at `http://127.0.0.1:9090/metrics`.

use parti::strategy::Sticky;
use parti::{Config, Hooks, Manager, NatsStore, StaticSource};

#[tokio::main]
async fn main() -> parti::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "nats://127.0.0.1:4222".to_owned());
    let identity = args.next();
    #[cfg(feature = "prometheus")]
    let _metrics = match std::env::var("PARTI_METRICS") {
        Ok(addr) => Some(
            parti::metrics::serve(addr)
                .await
                .expect("the metrics address can be bound"),
        ),
        Err(_) => None,
    };
    let store = NatsStore::connect(&url).await?;
    let source = StaticSource::numbered("p", 60)?;
    let hooks = Hooks::new()
        .on_assigned(|grants, _ctx| async move {
            let names: Vec<String> = grants.iter().map(|g| g.partition.to_string()).collect();
            println!("+ {}", names.join(" "));
        })
        .on_revoked(|partitions, _ctx| async move {
            let names: Vec<String> = partitions.iter().map(ToString::to_string).collect();
            println!("- {}", names.join(" "));
        });
    let mut builder = Manager::builder(store, source, Sticky::default())
        .config(Config::short_timings())
        .hooks(hooks);
    if let Some(identity) = identity {
        builder = builder.identity(identity);
    }
    let manager = builder.start().await?;
    println!("{} started; Ctrl-C stops it", manager.worker_id());
    tokio::signal::ctrl_c()
        .await
        .expect("Ctrl-C can be waited for");
    manager.stop().await?;
    Ok(())
}
