//! `PartitionConsumer` on a real nats-server: a stream of 60 partitions, a producer
//! publishing 20,000 messages with a per-partition sequence number, and a fleet whose workers
//! are killed, stopped and started — the leader killed too — while it consumes. The ledger
//! checks every handling as it happens.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream;
use parti::nats::{ConsumerConfig, PartitionConsumer};
use parti::store::BoxError;
use parti::strategy::{PartitionId, Sticky};
use parti::{Config, Manager, NatsStore, StaticSource};
use tests::consumer::Ledger;
use tests::nats_server::NatsServer;
use tokio::time::{Instant, sleep};

const PARTITIONS: u64 = 60;
const MESSAGES: u64 = 20_000;
const STREAM: &str = "EVENTS";

struct Worker {
    label: String,
    manager: Manager<NatsStore>,
    consumer: PartitionConsumer,
}

async fn start_worker(url: &str, label: String, ledger: &Ledger) -> Worker {
    let store = NatsStore::connect(url).await.unwrap();
    let (ledger, handler_label) = (ledger.clone(), label.clone());
    let config = ConsumerConfig::new(STREAM, "events")
        .with_ack_wait(Duration::from_secs(2))
        .with_fetch_expiry(Duration::from_millis(300));
    let consumer = PartitionConsumer::new(&store, config, move |message, ctx| {
        let (ledger, label) = (ledger.clone(), handler_label.clone());
        async move {
            let seq: u64 = std::str::from_utf8(&message.payload)?.parse()?;
            let handling = ledger.start(ctx.partition.as_str(), &label, seq);
            // Some work, so handlers are caught in flight by revokes and kills: every 25th
            // message of a partition takes longer than a handoff.
            let work = if seq % 25 == 0 { 300 } else { 1 };
            sleep(Duration::from_millis(work)).await;
            handling.done();
            Ok::<_, BoxError>(())
        }
    })
    .unwrap();
    let source = StaticSource::numbered("p", PARTITIONS as usize).unwrap();
    let manager = Manager::builder(store, source, Sticky::default())
        .config(Config::short_timings())
        .hooks(consumer.hooks())
        .start()
        .await
        .unwrap();
    Worker {
        label,
        manager,
        consumer,
    }
}

/// A crash: nothing acked, naked or released; the connection goes with the process.
async fn kill(worker: Worker) {
    worker.consumer.abort();
    worker.manager.abort().await;
}

/// Publishes `MESSAGES` round-robin over the partitions, message `i` of a partition
/// carrying sequence number `i` (from 1), over about 12 seconds.
async fn produce(url: String) -> BTreeMap<String, u64> {
    let client = async_nats::connect(&url).await.unwrap();
    let js = jetstream::new(client);
    let mut published = BTreeMap::new();
    let mut acks = Vec::new();
    for i in 0..MESSAGES {
        let partition = PartitionId::from_keys(["p", &(i % PARTITIONS).to_string()]).unwrap();
        let seq = i / PARTITIONS + 1;
        published.insert(partition.to_string(), seq);
        let ack = js
            .publish(partition.subject("events"), seq.to_string().into())
            .await
            .unwrap();
        acks.push(ack);
        if acks.len() == 200 {
            for ack in acks.drain(..) {
                ack.await.unwrap();
            }
            sleep(Duration::from_millis(120)).await;
        }
    }
    for ack in acks {
        ack.await.unwrap();
    }
    published
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_follow_ownership_through_kills_stops_and_joins() {
    let server = NatsServer::start();
    let url = server.url();
    let js = jetstream::new(async_nats::connect(&url).await.unwrap());
    js.create_stream(jetstream::stream::Config {
        name: STREAM.into(),
        subjects: vec!["events.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let ledger = Ledger::default();
    let mut workers = Vec::new();
    let mut started = 0;
    for _ in 0..4 {
        started += 1;
        workers.push(start_worker(&url, format!("w{started}"), &ledger).await);
    }
    let producer = tokio::spawn(produce(url.clone()));
    let begun = Instant::now();
    let (mut kills, mut stops) = (0, 0);
    let at = |secs: u64| sleep_until_after(begun, secs);
    // The schedule: a join, a crash, a graceful stop, the leader killed, two joins, a crash.
    at(2).await;
    started += 1;
    workers.push(start_worker(&url, format!("w{started}"), &ledger).await);
    at(4).await;
    let victim = workers.iter().position(|w| !w.manager.is_leader()).unwrap();
    kill(workers.remove(victim)).await;
    kills += 1;
    at(6).await;
    let leaving = workers.iter().position(|w| !w.manager.is_leader()).unwrap();
    workers.remove(leaving).manager.stop().await.unwrap();
    stops += 1;
    at(8).await;
    if let Some(leader) = workers.iter().position(|w| w.manager.is_leader()) {
        kill(workers.remove(leader)).await;
        kills += 1;
    }
    at(10).await;
    for _ in 0..2 {
        started += 1;
        workers.push(start_worker(&url, format!("w{started}"), &ledger).await);
    }
    at(12).await;
    let victim = workers.iter().position(|w| !w.manager.is_leader()).unwrap();
    kill(workers.remove(victim)).await;
    kills += 1;
    let published = producer.await.unwrap();
    assert_eq!(published.values().sum::<u64>(), MESSAGES);

    // Everything is handled, within a bound.
    let deadline = Instant::now() + Duration::from_secs(60);
    while ledger.handled() < MESSAGES && Instant::now() < deadline {
        sleep(Duration::from_millis(100)).await;
    }
    let report = ledger.report(&published);
    println!(
        "consumer fleet: {} messages, {} workers started, {kills} killed (one the leader), \
         {stops} stopped; lost {}, duplicates {} ({} messages), longest wait between two \
         first handlings of a partition {:?}, overlaps {}, out of order {}",
        report.published,
        started,
        report.lost,
        report.duplicates,
        report.duplicated_messages,
        report.longest_gap,
        report.overlaps.len(),
        report.out_of_order.len()
    );
    assert_eq!(report.lost, 0, "every message handled");
    let first = |list: &[String]| list.iter().take(10).cloned().collect::<Vec<_>>();
    assert!(report.overlaps.is_empty(), "{:?}", first(&report.overlaps));
    assert!(
        report.out_of_order.is_empty(),
        "{:?}",
        first(&report.out_of_order)
    );
    // At most one message per partition was in flight at each crash.
    assert!(
        report.duplicates <= kills * PARTITIONS,
        "{} duplicates after {kills} kills",
        report.duplicates
    );

    // Every message acknowledged: no durable has anything pending or unacknowledged.
    let stream = js.get_stream(STREAM).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (pending, unacked) = outstanding(&stream).await;
        if pending == 0 && unacked == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{pending} pending, {unacked} unacknowledged"
        );
        sleep(Duration::from_millis(200)).await;
    }

    for worker in workers {
        worker.manager.stop().await.unwrap();
        assert!(
            worker.consumer.partitions().is_empty(),
            "{} let go of everything at stop",
            worker.label
        );
    }
}

async fn sleep_until_after(begun: Instant, secs: u64) {
    tokio::time::sleep_until(begun + Duration::from_secs(secs)).await;
}

/// Messages not yet delivered, and delivered but not acknowledged, over every durable.
async fn outstanding(stream: &jetstream::stream::Stream) -> (u64, u64) {
    use futures_util::StreamExt;
    let mut consumers = stream.consumers();
    let (mut pending, mut unacked) = (0, 0);
    while let Some(info) = consumers.next().await {
        let info = info.unwrap();
        pending += info.num_pending;
        unacked += info.num_ack_pending as u64;
    }
    (pending, unacked)
}
