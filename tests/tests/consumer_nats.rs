//! `PartitionConsumer` on a real nats-server: a stream of 60 partitions, a producer
//! publishing 20,000 messages with a per-partition sequence number, and a fleet whose workers
//! are killed, stopped and started — the leader killed too — while it consumes. The ledger
//! checks every handling as it happens.

use std::time::Duration;

use tests::consumer::{
    Ledger, create_stream, kill, produce, start_worker, wait_all_acked, wait_until,
};
use tests::nats_server::NatsServer;
use tokio::time::{Instant, sleep};

const PARTITIONS: u64 = 60;
const MESSAGES: u64 = 20_000;
/// Every 25th message of a partition takes longer than a handoff.
const SLOW_EVERY: u64 = 25;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_follow_ownership_through_kills_stops_and_joins() {
    let server = NatsServer::start();
    let url = server.url();
    let stream = create_stream(&url).await;
    let ledger = Ledger::default();
    let mut workers = Vec::new();
    let mut started = 0;
    // Five at first: the fleet runs with 3 to 6 workers throughout.
    for _ in 0..5 {
        started += 1;
        workers
            .push(start_worker(&url, format!("w{started}"), &ledger, PARTITIONS, SLOW_EVERY).await);
    }
    let producer = tokio::spawn(produce(
        url.clone(),
        PARTITIONS,
        MESSAGES,
        Duration::from_secs(12),
    ));
    let begun = Instant::now();
    let (mut kills, mut stops) = (0, 0);
    let at = |secs: u64| sleep_until_after(begun, secs);
    // The schedule: a join, a crash, a graceful stop, the leader killed, two joins, a crash.
    at(2).await;
    started += 1;
    workers.push(start_worker(&url, format!("w{started}"), &ledger, PARTITIONS, SLOW_EVERY).await);
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
        workers
            .push(start_worker(&url, format!("w{started}"), &ledger, PARTITIONS, SLOW_EVERY).await);
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
    wait_all_acked(&stream, Duration::from_secs(20)).await;

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

/// A handler that fails or panics (in its future, or in the call itself) gets the message
/// again (after a backoff) and the worker goes on; a stream that does not exist yet is waited
/// for; successes stay in order; the consumer's metrics count it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_and_panicking_handlers_are_retried_and_a_missing_stream_is_waited_for() {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use parti::nats::{ConsumerConfig, PartitionConsumer};
    use parti::strategy::Sticky;
    use parti::{Config, Manager, ManagerState, NatsStore, StaticSource};

    // The process's recorder: the other test of this binary may record into it too, but
    // only this one has handlers that fail or panic.
    let metrics = parti::metrics::install_prometheus().unwrap();
    let server = NatsServer::start();
    let url = server.url();
    /// Successes per partition, in the order they happened: sequence and deliveries taken.
    type Successes = BTreeMap<String, Vec<(u64, u64)>>;
    let successes: Arc<Mutex<Successes>> = Arc::default();
    let seen = successes.clone();
    let store = NatsStore::connect(&url).await.unwrap();
    let config = ConsumerConfig::new("LATER", "later")
        .with_nak_backoff(Duration::from_millis(50), Duration::from_millis(200));
    let consumer = PartitionConsumer::new(&store, config, move |message, ctx| {
        let seen = seen.clone();
        let seq: u64 = std::str::from_utf8(&message.payload)
            .unwrap()
            .parse()
            .unwrap();
        if seq % 7 == 0 && ctx.delivered == 1 {
            panic!("the handler panics before it returns its future, on #{seq}");
        }
        async move {
            if seq % 15 == 0 && ctx.delivered == 1 {
                panic!("the handler panics on #{seq}");
            }
            if seq % 10 == 0 && ctx.delivered < 3 {
                return Err(format!("#{seq} fails on delivery {}", ctx.delivered));
            }
            seen.lock()
                .unwrap()
                .entry(ctx.partition.to_string())
                .or_default()
                .push((seq, ctx.delivered));
            Ok(())
        }
    })
    .unwrap();
    let manager = Manager::builder(
        store,
        StaticSource::numbered("p", 4).unwrap(),
        Sticky::default(),
    )
    // Leases that ride a loaded machine: a worker that fences gives its messages back (as it
    // must), and they come again with a higher delivery count than this test expects.
    .config(
        Config::short_timings()
            .with_heartbeat_ttl(Duration::from_secs(5))
            .with_election_ttl(Duration::from_secs(6))
            .with_id_ttl(Duration::from_secs(15)),
    )
    .hooks(consumer.hooks())
    .start()
    .await
    .unwrap();
    manager
        .wait_state(ManagerState::Stable, Duration::from_secs(30))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while consumer.partitions().len() < 4 {
        assert!(
            Instant::now() < deadline,
            "consuming 4 partitions, waiting for the stream"
        );
        sleep(Duration::from_millis(20)).await;
    }
    // The stream comes later.
    sleep(Duration::from_millis(1500)).await;
    let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "LATER".into(),
        subjects: vec!["later.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    for seq in 1..=50u64 {
        for p in 0..4 {
            js.publish(format!("later.p.{p}"), seq.to_string().into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done: usize = successes.lock().unwrap().values().map(Vec::len).sum();
        if done == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "{done} of 200 handled");
        sleep(Duration::from_millis(50)).await;
    }
    let successes = successes.lock().unwrap().clone();
    for (partition, handled) in &successes {
        let seqs: Vec<u64> = handled.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(
            seqs,
            (1..=50).collect::<Vec<_>>(),
            "{partition}: in order, each once"
        );
        for (seq, delivered) in handled {
            let expected = if seq % 10 == 0 {
                3
            } else if seq % 15 == 0 || seq % 7 == 0 {
                2
            } else {
                1
            };
            assert_eq!(*delivered, expected, "{partition} #{seq}");
        }
    }
    // Per partition, first deliveries that panic: the multiples of 7 (in the call) and 15,
    // 45 and 30 (in the future); failures: deliveries 1 and 2 of 10, 20, 40, 50 and
    // delivery 2 of 30; deliveries again: 2 of each multiple of 10, 1 of each other above.
    let text = metrics.render();
    let total = |series: &str| -> f64 {
        text.lines()
            .filter(|line| line.starts_with(series))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let naks = |reason: &str| {
        text.lines()
            .filter(|l| l.starts_with("parti_consumer_naks_total{"))
            .filter(|l| l.contains(&format!("reason=\"{reason}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    assert_eq!(naks("panic"), 4.0 * 10.0, "{text}");
    assert_eq!(naks("error"), 4.0 * 9.0, "{text}");
    assert!(
        total("parti_consumer_redeliveries_total") >= 4.0 * 19.0,
        "{text}"
    );
    assert!(
        total("parti_consumer_messages_total{") >= 200.0 + 4.0 * 19.0,
        "each handling counted, by result: {text}"
    );
    assert!(
        text.contains("parti_consumer_handler_duration_seconds_bucket{worker=")
            && text.contains("le=\"0.001\""),
        "a histogram with parti's buckets: {text}"
    );
    manager.stop().await.unwrap();
    assert!(consumer.partitions().is_empty());
}

/// A worker whose link black-holes in the middle of its handlers (nothing arrives, nothing
/// closes): its lease lapses, it fences and cancels its handlers at that instant, before
/// the leader gives its partitions to the other worker — which handles what was in flight
/// again (after `ack_wait`), never while the cut-off worker's handler still runs. When the
/// link comes back, nothing of the old handlings resumes; nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_worker_cancels_its_handlers_before_its_partitions_move() {
    use tests::consumer::start_timed_worker;
    use tests::proxy::Proxy;

    const PARTITIONS: u64 = 4;
    const PER_PARTITION: u64 = 2;
    // Longer than the lease (1 s) plus ack_wait (2 s): a handler the fence did not cancel
    // would still run when the next owner gets the message again.
    let work = |_seq: u64| Duration::from_secs(4);
    let server = NatsServer::start();
    let url = server.url();
    let stream = create_stream(&url).await;
    let ledger = Ledger::default();
    let steady = start_timed_worker(&url, "steady".into(), &ledger, PARTITIONS, work).await;
    steady
        .manager
        .wait_state(parti::ManagerState::Stable, Duration::from_secs(30))
        .await
        .unwrap();
    let proxy = Proxy::start(url.trim_start_matches("nats://")).await;
    let cut = start_timed_worker(&proxy.url(), "cut".into(), &ledger, PARTITIONS, work).await;
    let half = (PARTITIONS / 2) as usize;
    let split = || {
        let (a, b) = (
            cut.consumer.partitions().len(),
            steady.consumer.partitions().len(),
        );
        ((a, b) == (half, half))
            .then_some(())
            .ok_or(format!("the partitions split between both: {a} and {b}"))
    };
    wait_until(Duration::from_secs(30), split).await;
    let published = produce(
        url.clone(),
        PARTITIONS,
        PARTITIONS * PER_PARTITION,
        Duration::ZERO,
    )
    .await;
    // Every partition is in its first handler.
    wait_until(Duration::from_secs(10), || {
        let running = ledger.active();
        (running >= PARTITIONS as usize)
            .then_some(())
            .ok_or(format!("{running} handlers running"))
    })
    .await;
    proxy.black_hole();
    wait_until(Duration::from_secs(30), || {
        (steady.manager.assignment().len() == PARTITIONS as usize)
            .then_some(())
            .ok_or("the steady worker takes everything".to_owned())
    })
    .await;
    wait_until(Duration::from_secs(60), || {
        let handled = ledger.handled();
        (handled >= PARTITIONS * PER_PARTITION)
            .then_some(())
            .ok_or(format!(
                "{handled} of {} handled",
                PARTITIONS * PER_PARTITION
            ))
    })
    .await;
    proxy.restore();
    // Back on the link, the cut-off worker rejoins; nothing of before is handed out again
    // while the partitions are someone else's.
    wait_until(Duration::from_secs(30), || {
        (cut.consumer.partitions().len() == half)
            .then_some(())
            .ok_or("the cut-off worker rejoins".to_owned())
    })
    .await;
    let report = ledger.report(&published);
    println!(
        "black hole: {} messages, {} handled again, overlaps {}",
        report.published,
        report.duplicates,
        report.overlaps.len()
    );
    assert!(report.overlaps.is_empty(), "{:?}", report.overlaps);
    assert_eq!(report.lost, 0);
    assert!(report.out_of_order.is_empty(), "{:?}", report.out_of_order);
    // The cut-off worker's handlings were cancelled, never completed, and a handler slower
    // than ack_wait keeps its message (in-progress notices): each message handled once.
    assert_eq!(report.duplicates, 0, "{report:?}");
    wait_all_acked(&stream, Duration::from_secs(30)).await;
    for worker in [steady, cut] {
        worker.manager.stop().await.unwrap();
    }
}
