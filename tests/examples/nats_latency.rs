//! KV operation latency of `NatsStore` against a real `nats-server` on loopback: get, put,
//! compare-and-set update, and the delay from a put to its watch notification, as p50 and
//! p99 over many samples. Run it with `cargo xtask nats-latency` (release build, installs
//! the server when missing); prints one JSON object per line.

use std::time::{Duration, Instant};

use parti_core::store::{Bucket, BucketSpec, Store, WatchEvent, WatchFrom};
use parti_nats::NatsStore;
use tests::nats::wait_for_jetstream;
use tests::nats_server::NatsServer;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1e3
}

fn report(op: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{{\"op\":\"{op}\",\"samples\":{},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3}}}",
        samples.len(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        percentile(&samples, 1.0),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let samples: usize = match std::env::args().skip_while(|a| a != "--samples").nth(1) {
        Some(n) => n.parse()?,
        None => 2_000,
    };
    let server = NatsServer::start();
    wait_for_jetstream(&server.url(), 1).await;
    let store = NatsStore::connect(&server.url()).await?;
    let bucket = store
        .bucket(&BucketSpec::new("latency")?.with_ttl(Duration::from_secs(30)))
        .await?;
    let value = bytes::Bytes::from_static(b"a heartbeat-sized value of about forty bytes");

    // Warm up the connection and the stream.
    for _ in 0..100 {
        bucket.put("warm", value.clone()).await?;
    }

    let mut puts = Vec::with_capacity(samples);
    for i in 0..samples {
        let start = Instant::now();
        bucket
            .put(&format!("worker-{}", i % 200), value.clone())
            .await?;
        puts.push(start.elapsed());
    }
    report("put", puts);

    let mut gets = Vec::with_capacity(samples);
    for i in 0..samples {
        let start = Instant::now();
        bucket.get(&format!("worker-{}", i % 200)).await?;
        gets.push(start.elapsed());
    }
    report("get", gets);

    let mut revision = bucket.put("cas", value.clone()).await?;
    let mut updates = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        revision = bucket.update("cas", value.clone(), revision).await?;
        updates.push(start.elapsed());
    }
    report("update_cas", updates);

    let mut watch = bucket.watch("notify", WatchFrom::Now).await?;
    let mut delays = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        let written = bucket.put("notify", value.clone()).await?;
        loop {
            match watch.next().await {
                Some(Ok(WatchEvent::Put(entry))) if entry.revision == written => break,
                Some(Ok(_)) => continue,
                other => return Err(format!("watch ended: {other:?}").into()),
            }
        }
        delays.push(start.elapsed());
    }
    report("watch_notification", delays);
    Ok(())
}
