//! `consumer-demo`: a consuming fleet on a pinned nats-server it starts itself — a stream of
//! 60 partitions, a producer, 3 workers; one worker is killed and one added while messages
//! flow — and what each partition saw at the end: messages handled, duplicates, gaps (never
//! handled) and the longest wait. Run it through `cargo xtask consumer-demo`, which installs
//! the server and builds this in release mode.

use std::time::Duration;

use tests::consumer::{Ledger, create_stream, kill, outstanding, produce, start_worker};
use tests::nats_server::NatsServer;
use tokio::time::{Instant, sleep};

const PARTITIONS: u64 = 60;
const MESSAGES: u64 = 12_000;

#[tokio::main]
async fn main() {
    let server = NatsServer::start();
    let url = server.url();
    println!("nats-server at {url}; stream EVENTS, subjects events.p.0 … events.p.59");
    let stream = create_stream(&url).await;
    let ledger = Ledger::default();
    let mut workers = Vec::new();
    for n in 1..=3 {
        workers.push(start_worker(&url, format!("w{n}"), &ledger, PARTITIONS, 25).await);
        println!("+ w{n} started");
    }
    let begun = Instant::now();
    let producer = tokio::spawn(produce(
        url.clone(),
        PARTITIONS,
        MESSAGES,
        Duration::from_secs(8),
    ));
    println!("producing {MESSAGES} messages over about 8 s");
    tokio::time::sleep_until(begun + Duration::from_secs(3)).await;
    let victim = workers
        .iter()
        .position(|w| !w.manager.is_leader())
        .expect("a follower");
    let victim = workers.remove(victim);
    println!(
        "x {} killed at {:.1} s (its in-flight messages come back after ack_wait, 2 s)",
        victim.label,
        begun.elapsed().as_secs_f64()
    );
    kill(victim).await;
    tokio::time::sleep_until(begun + Duration::from_secs(5)).await;
    workers.push(start_worker(&url, "w4".into(), &ledger, PARTITIONS, 25).await);
    println!("+ w4 started at {:.1} s", begun.elapsed().as_secs_f64());
    let published = producer.await.expect("producer");
    let deadline = Instant::now() + Duration::from_secs(60);
    while ledger.handled() < MESSAGES && Instant::now() < deadline {
        sleep(Duration::from_millis(100)).await;
    }
    while outstanding(&stream).await != (0, 0) && Instant::now() < deadline {
        sleep(Duration::from_millis(100)).await;
    }
    let report = ledger.report(&published);
    println!("\npartition  published  handled  duplicates  gaps  longest wait");
    for (partition, p) in &report.per_partition {
        println!(
            "{partition:<10} {:>9}  {:>7}  {:>10}  {:>4}  {:>9.2} s",
            p.published,
            p.handled,
            p.duplicates,
            p.missing,
            p.longest_gap.as_secs_f64()
        );
    }
    let (pending, unacked) = outstanding(&stream).await;
    println!(
        "\ntotal: {} published, {} handled, {} lost, {} duplicates ({} messages), \
         {} overlaps, {} out of order, longest wait {:.2} s; {pending} pending and {unacked} \
         unacknowledged at the end",
        report.published,
        report.published - report.lost,
        report.lost,
        report.duplicates,
        report.duplicated_messages,
        report.overlaps.len(),
        report.out_of_order.len(),
        report.longest_gap.as_secs_f64()
    );
    for worker in workers {
        worker.manager.stop().await.expect("stops");
    }
    if report.lost > 0 || !report.overlaps.is_empty() || !report.out_of_order.is_empty() {
        std::process::exit(1);
    }
}
