//! KV operation latency of `NatsStore` against real `nats-server`s on loopback: get, put,
//! compare-and-set update, a 200-key listing, and the delay from a put to its watch
//! notification, as p50 and p99 over many samples — on one server and on a 3-node cluster
//! with 3 replicas; and on the cluster how long a bucket's stream takes to take writes again
//! after its leader's node is killed (`stream_failover`), and the longest run of failed
//! writes while that node restarts in lame-duck mode (`lame_duck_write_gap`). `get_direct`
//! is the read parti no longer uses: a direct get (any replica may answer, possibly stale)
//! through a plain async-nats handle, measured for comparison.
//! Run it with `cargo xtask nats-latency` (release build, installs the server when
//! missing); prints one JSON object per line.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use parti_core::store::{Bucket, BucketSpec, Store, WatchEvent, WatchFrom};
use parti_nats::{NatsBucket, NatsStore};
use tests::nats::wait_for_jetstream;
use tests::nats_server::{NatsCluster, NatsServer};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// How long writes go on being measured after a node restarted in lame-duck mode is back:
/// it may take stream leaderships back meanwhile, which could cost writes too.
const WATCHED_AFTER_RESTART: Duration = Duration::from_secs(2);

/// Keys in the listing measured, as many as a fleet of 200 workers has heartbeats.
const LISTED_KEYS: usize = 200;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1e3
}

fn report(setup: &str, op: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{{\"setup\":\"{setup}\",\"op\":\"{op}\",\"samples\":{},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3}}}",
        samples.len(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        percentile(&samples, 1.0),
    );
}

/// Times `samples` runs of `op(i)`.
async fn time<F, Fut>(samples: usize, mut op: F) -> Result<Vec<Duration>>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result>,
{
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples {
        let start = Instant::now();
        op(i).await?;
        times.push(start.elapsed());
    }
    Ok(times)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result {
    let samples: usize = match std::env::args().skip_while(|a| a != "--samples").nth(1) {
        Some(n) => n.parse()?,
        None => 2_000,
    };
    {
        let server = NatsServer::start();
        wait_for_jetstream(&server.url(), 1).await;
        measure("single", &server.url(), 1, samples).await?;
    }
    let mut cluster = NatsCluster::start();
    wait_for_jetstream(&cluster.url(), 3).await;
    measure("cluster-r3", &cluster.url(), 3, samples).await?;
    report(
        "cluster-r3",
        "stream_failover",
        stream_failovers(&mut cluster, 5).await?,
    );
    report(
        "cluster-r3",
        "lame_duck_write_gap",
        lame_duck_gaps(&mut cluster, 2).await?,
    );
    Ok(())
}

/// The longest time writes to a bucket's stream fail while the node leading it restarts
/// in lame-duck mode (the planned restart of an upgrade), seen by a client connected the
/// ordinary way and writing every 20 ms: `rounds` times (0 when no write failed).
async fn lame_duck_gaps(cluster: &mut NatsCluster, rounds: usize) -> Result<Vec<Duration>> {
    let url = cluster.url();
    let mut gaps = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let (bucket, node) = bucket_and_leader(cluster, "lame-duck", round).await?;
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let writer = tokio::spawn(async move {
            let mut longest = Duration::ZERO;
            let mut failing_since: Option<Instant> = None;
            loop {
                match bucket.put("k", "during".into()).await {
                    Ok(_) => {
                        if let Some(since) = failing_since.take() {
                            longest = longest.max(since.elapsed());
                        }
                        if *stopped.borrow() {
                            return longest;
                        }
                    }
                    Err(_) => {
                        let since = *failing_since.get_or_insert_with(Instant::now);
                        if *stopped.borrow() && since.elapsed() > Duration::from_secs(30) {
                            return since.elapsed();
                        }
                    }
                }
                tokio::select! {
                    _ = stopped.changed() => {}
                    () = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
        });
        tokio::task::block_in_place(|| cluster.nodes()[node].lame_duck_restart());
        wait_for_jetstream(&url, 3).await;
        tokio::time::sleep(WATCHED_AFTER_RESTART).await;
        stop.send(true)?;
        gaps.push(writer.await?);
    }
    Ok(gaps)
}

/// The bucket `name` (3 replicas) on a new connection to the cluster made the ordinary way
/// (500 ms request timeout), written once, and the index of the node leading its stream.
async fn bucket_and_leader(
    cluster: &mut NatsCluster,
    name: &str,
    round: usize,
) -> Result<(NatsBucket, usize)> {
    let client = NatsStore::connect(&cluster.url()).await?.client().clone();
    let store = NatsStore::with_request_timeout(client.clone(), Duration::from_millis(500));
    let bucket = store
        .bucket(&BucketSpec::new(name)?.with_replicas(3))
        .await?;
    bucket.put("k", format!("{round}").into()).await?;
    let info = jetstream::new(client)
        .get_stream(format!("KV_{name}"))
        .await?
        .info()
        .await?
        .clone();
    let leader = info
        .cluster
        .and_then(|cluster| cluster.leader)
        .ok_or("the stream has no leader")?;
    let node = cluster
        .nodes()
        .iter()
        .position(|node| node.name() == leader)
        .ok_or_else(|| format!("no node named {leader}"))?;
    Ok((bucket, node))
}

/// How long a bucket's stream takes to accept writes again after the node leading it is
/// killed (SIGKILL), seen by a client connected the ordinary way (to any node): `rounds`
/// times, the node restarted with its data between rounds.
async fn stream_failovers(cluster: &mut NatsCluster, rounds: usize) -> Result<Vec<Duration>> {
    let url = cluster.url();
    let mut times = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let (bucket, node) = bucket_and_leader(cluster, "failover", round).await?;
        let leader = cluster.nodes()[node].name().to_owned();
        let killed = Instant::now();
        cluster.nodes()[node].kill();
        loop {
            if bucket.put("k", "after".into()).await.is_ok() {
                break;
            }
            if killed.elapsed() > Duration::from_secs(60) {
                return Err(format!("{leader}'s streams never took writes again").into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        times.push(killed.elapsed());
        cluster.nodes()[node].restart();
        wait_for_jetstream(&url, 3).await;
    }
    Ok(times)
}

async fn measure(setup: &str, url: &str, replicas: usize, samples: usize) -> Result {
    let store = NatsStore::connect(url).await?;
    let bucket = store
        .bucket(
            &BucketSpec::new("latency")?
                .with_ttl(Duration::from_secs(30))
                .with_replicas(replicas),
        )
        .await?;
    let value = bytes::Bytes::from_static(b"a heartbeat-sized value of about forty bytes");
    let key = |i: usize| format!("worker-{}", i % LISTED_KEYS);

    // Warm up the connection and the stream, and write every listed key.
    for i in 0..LISTED_KEYS.max(100) {
        bucket.put(&key(i), value.clone()).await?;
    }

    let puts = time(samples, |i| {
        let (bucket, value) = (&bucket, value.clone());
        async move { Ok(bucket.put(&key(i), value).await.map(drop)?) }
    })
    .await?;
    report(setup, "put", puts);

    let gets = time(samples, |i| {
        let bucket = &bucket;
        async move { Ok(bucket.get(&key(i)).await.map(drop)?) }
    })
    .await?;
    report(setup, "get", gets);

    report(
        setup,
        "get_direct",
        direct_gets(&store, &bucket, samples).await?,
    );

    let mut revision = bucket.put("cas", value.clone()).await?;
    let mut updates = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        revision = bucket.update("cas", value.clone(), revision).await?;
        updates.push(start.elapsed());
    }
    report(setup, "update_cas", updates);

    let listings = time(samples / 20, |_| {
        let bucket = &bucket;
        async move {
            let entries = bucket.entries("worker-").await?;
            assert_eq!(entries.len(), LISTED_KEYS);
            Ok(())
        }
    })
    .await?;
    report(setup, "entries_200", listings);

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
    report(setup, "watch_notification", delays);

    report(
        setup,
        "expiry_notification",
        expiry_delays(&store, replicas, samples / 100).await?,
    );
    Ok(())
}

/// How long after its TTL a key's expiry reaches a watcher (the server's limit marker):
/// keys written a little apart to a bucket with a 1 s TTL, each timed from its write's
/// acknowledgement plus the TTL to its expiry event.
async fn expiry_delays(store: &NatsStore, replicas: usize, keys: usize) -> Result<Vec<Duration>> {
    const TTL: Duration = Duration::from_secs(1);
    let bucket = store
        .bucket(
            &BucketSpec::new("latency-expiry")?
                .with_ttl(TTL)
                .with_replicas(replicas),
        )
        .await?;
    let mut watch = bucket.watch("", WatchFrom::Now).await?;
    let mut due = std::collections::HashMap::new();
    for i in 0..keys {
        bucket.put(&format!("k{i}"), "v".into()).await?;
        due.insert(format!("k{i}"), Instant::now() + TTL);
        tokio::time::sleep(Duration::from_millis(37)).await;
    }
    let mut delays = Vec::with_capacity(keys);
    while delays.len() < keys {
        match tokio::time::timeout(TTL * 10, watch.next()).await {
            Ok(Some(Ok(WatchEvent::Delete { key, .. }))) => {
                let at = due
                    .remove(&key)
                    .ok_or("an expiry event for a key not written")?;
                delays.push(Instant::now().saturating_duration_since(at));
            }
            Ok(Some(Ok(_))) => {}
            other => return Err(format!("no expiry event: {other:?}").into()),
        }
    }
    Ok(delays)
}

/// Direct gets of the same keys through a plain async-nats handle on a stream with direct
/// gets turned back on (what async-nats creates by default), for comparison; turned off
/// again afterwards.
async fn direct_gets(
    store: &NatsStore,
    bucket: &NatsBucket,
    samples: usize,
) -> Result<Vec<Duration>> {
    let js = jetstream::new(store.client().clone());
    let stream_name = format!("KV_{}", bucket.name());
    let mut config = js
        .get_stream(&stream_name)
        .await?
        .cached_info()
        .config
        .clone();
    config.allow_direct = true;
    js.update_stream(&config).await?;
    let kv = js.get_key_value(bucket.name()).await?;
    assert!(kv.stream.cached_info().config.allow_direct);
    let times = time(samples, |i| {
        let kv = &kv;
        async move {
            kv.entry(format!("worker-{}", i % LISTED_KEYS)).await?;
            Ok(())
        }
    })
    .await?;
    config.allow_direct = false;
    js.update_stream(&config).await?;
    Ok(times)
}
