//! What a fleet of `PartitionConsumer`s did with a stream, checked as it happens: every
//! handling of every message, which worker ran it and when. Shared by the consumer test and
//! `cargo xtask consumer-demo`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt;
use parti::nats::{ConsumerConfig, PartitionConsumer};
use parti::store::BoxError;
use parti::strategy::{PartitionId, Sticky};
use parti::{Config, Manager, NatsStore, StaticSource};
use tokio::time::Instant;

/// The record of every handling.
#[derive(Debug, Clone, Default)]
pub struct Ledger(Arc<Mutex<State>>);

#[derive(Debug, Default)]
struct State {
    /// The handler running per partition: worker and sequence number.
    active: HashMap<String, (String, u64)>,
    /// Two handlers of one partition ran at once in two workers.
    overlaps: Vec<String>,
    /// Completed handlings per (partition, sequence).
    handled: HashMap<(String, u64), u32>,
    /// The next sequence number whose first handling may start, per partition.
    next_first: HashMap<String, u64>,
    /// A first handling out of order.
    out_of_order: Vec<String>,
    /// When each partition last had a first handling, and its longest wait between two.
    last_first: HashMap<String, Instant>,
    longest_gap: HashMap<String, Duration>,
}

/// A handling under way; drop it (done or cancelled) when the handler ends.
#[derive(Debug)]
pub struct Handling {
    ledger: Ledger,
    partition: String,
    seq: u64,
    done: bool,
}

impl Handling {
    /// The handler finished with the message.
    pub fn done(mut self) {
        self.done = true;
    }
}

impl Drop for Handling {
    fn drop(&mut self) {
        let mut state = self.ledger.lock();
        state.active.remove(&self.partition);
        if self.done {
            *state
                .handled
                .entry((self.partition.clone(), self.seq))
                .or_default() += 1;
        }
    }
}

/// What the ledger shows against what was published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Messages published.
    pub published: u64,
    /// Published messages never handled to the end.
    pub lost: u64,
    /// Handlings beyond the first of a message.
    pub duplicates: u64,
    /// Messages handled more than once.
    pub duplicated_messages: u64,
    /// Moments two workers handled one partition at once.
    pub overlaps: Vec<String>,
    /// First handlings out of sequence order.
    pub out_of_order: Vec<String>,
    /// The longest wait between two first handlings of one partition.
    pub longest_gap: Duration,
    /// Per partition.
    pub per_partition: BTreeMap<String, PartitionReport>,
}

/// What one partition saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionReport {
    /// Messages published to it.
    pub published: u64,
    /// Distinct messages handled to the end.
    pub handled: u64,
    /// Handlings beyond the first of a message.
    pub duplicates: u64,
    /// Sequence numbers published but never handled (gaps).
    pub missing: u64,
    /// The longest wait between two of its first handlings.
    pub longest_gap: Duration,
}

impl Ledger {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `worker` starts handling message `seq` (from 1) of `partition`.
    pub fn start(&self, partition: &str, worker: &str, seq: u64) -> Handling {
        let mut state = self.lock();
        let now = Instant::now();
        if let Some((other, other_seq)) = state.active.get(partition) {
            if other != worker {
                let overlap = format!(
                    "{partition}: {worker} started #{seq} while {other} handled #{other_seq}"
                );
                state.overlaps.push(overlap);
            }
        }
        state
            .active
            .insert(partition.to_owned(), (worker.to_owned(), seq));
        let next = state.next_first.entry(partition.to_owned()).or_insert(1);
        if seq == *next {
            *next += 1;
            if let Some(last) = state.last_first.insert(partition.to_owned(), now) {
                let gap = now - last;
                let longest = state.longest_gap.entry(partition.to_owned()).or_default();
                *longest = (*longest).max(gap);
            }
        } else if seq > *next {
            let expected = *next;
            state.out_of_order.push(format!(
                "{partition}: #{seq} first handled by {worker} before #{expected}"
            ));
        }
        drop(state);
        Handling {
            ledger: self.clone(),
            partition: partition.to_owned(),
            seq,
            done: false,
        }
    }

    /// Handlers running now.
    pub fn active(&self) -> usize {
        self.lock().active.len()
    }

    /// Messages handled to the end so far.
    pub fn handled(&self) -> u64 {
        self.lock().handled.len() as u64
    }

    /// The report against `published` messages per partition (sequences 1..=n).
    pub fn report(&self, published: &BTreeMap<String, u64>) -> Report {
        let state = self.lock();
        let mut lost = 0;
        let mut per_partition = BTreeMap::new();
        for (partition, count) in published {
            let mut report = PartitionReport {
                published: *count,
                longest_gap: state
                    .longest_gap
                    .get(partition)
                    .copied()
                    .unwrap_or_default(),
                ..PartitionReport::default()
            };
            for seq in 1..=*count {
                match state.handled.get(&(partition.clone(), seq)) {
                    Some(times) => {
                        report.handled += 1;
                        report.duplicates += u64::from(times - 1);
                    }
                    None => report.missing += 1,
                }
            }
            lost += report.missing;
            per_partition.insert(partition.clone(), report);
        }
        let duplicates = state.handled.values().map(|n| u64::from(n - 1)).sum();
        let duplicated_messages = state.handled.values().filter(|n| **n > 1).count() as u64;
        Report {
            published: published.values().sum(),
            lost,
            duplicates,
            duplicated_messages,
            overlaps: state.overlaps.clone(),
            out_of_order: state.out_of_order.clone(),
            longest_gap: state
                .longest_gap
                .values()
                .max()
                .copied()
                .unwrap_or_default(),
            per_partition,
        }
    }
}

/// A worker of a consuming fleet: its manager and its consumer.
pub struct ConsumerWorker {
    /// A name unique in the run (worker ids are reused across processes).
    pub label: String,
    /// The manager.
    pub manager: Manager<NatsStore>,
    /// The consumer its hooks drive.
    pub consumer: PartitionConsumer,
}

/// The stream the consuming fleets read: subjects `events.<partition>`.
pub const STREAM: &str = "EVENTS";

/// Creates [`STREAM`] on the server at `url`.
pub async fn create_stream(url: &str) -> jetstream::stream::Stream {
    let js = jetstream::new(async_nats::connect(url).await.expect("server reachable"));
    js.create_stream(jetstream::stream::Config {
        name: STREAM.into(),
        subjects: vec!["events.>".into()],
        ..Default::default()
    })
    .await
    .expect("stream created")
}

/// `p.0` … `p.<n - 1>`.
pub fn partition(n: u64) -> PartitionId {
    PartitionId::from_keys(["p", &n.to_string()]).expect("valid id")
}

/// Starts a worker consuming [`STREAM`] over `partitions` partitions, with short timings and
/// a 2 s `ack_wait`; its handler records every handling in `ledger` under `label`. Every
/// `slow_every`-th message of a partition takes 300 ms (longer than a handoff), the others
/// 1 ms.
pub async fn start_worker(
    url: &str,
    label: String,
    ledger: &Ledger,
    partitions: u64,
    slow_every: u64,
) -> ConsumerWorker {
    let work = move |seq: u64| {
        let millis = if seq % slow_every == 0 { 300 } else { 1 };
        Duration::from_millis(millis)
    };
    start_timed_worker(url, label, ledger, partitions, work).await
}

/// [`start_worker`] with a handler that takes `work(seq)` for message `seq`.
pub async fn start_timed_worker(
    url: &str,
    label: String,
    ledger: &Ledger,
    partitions: u64,
    work: impl Fn(u64) -> Duration + Send + Sync + 'static,
) -> ConsumerWorker {
    let work = Arc::new(work);
    let store = NatsStore::connect(url).await.expect("server reachable");
    let (ledger, handler_label) = (ledger.clone(), label.clone());
    let config = ConsumerConfig::new(STREAM, "events")
        .with_ack_wait(Duration::from_secs(2))
        .with_fetch_expiry(Duration::from_millis(300));
    let consumer = PartitionConsumer::new(&store, config, move |message, ctx| {
        let (ledger, label, work) = (ledger.clone(), handler_label.clone(), work.clone());
        async move {
            let seq: u64 = std::str::from_utf8(&message.payload)?.parse()?;
            let handling = ledger.start(ctx.partition.as_str(), &label, seq);
            tokio::time::sleep(work(seq)).await;
            handling.done();
            Ok::<_, BoxError>(())
        }
    })
    .expect("valid consumer config");
    let source = StaticSource::numbered("p", partitions as usize).expect("valid ids");
    let manager = Manager::builder(store, source, Sticky::default())
        .config(Config::short_timings())
        .hooks(consumer.hooks())
        .start()
        .await
        .expect("manager starts");
    ConsumerWorker {
        label,
        manager,
        consumer,
    }
}

/// A crash: nothing acked, naked or released; the connection goes with the process.
pub async fn kill(worker: ConsumerWorker) {
    worker.consumer.abort();
    worker.manager.abort().await;
}

/// Publishes `messages` round-robin over `partitions` partitions — message `i` of a
/// partition carrying sequence number `i` (from 1) — in batches of 200 spread over about
/// `over`. Returns how many each partition got.
pub async fn produce(
    url: String,
    partitions: u64,
    messages: u64,
    over: Duration,
) -> BTreeMap<String, u64> {
    let js = jetstream::new(async_nats::connect(&url).await.expect("server reachable"));
    let mut published = BTreeMap::new();
    let mut acks = Vec::new();
    let batches = u32::try_from(messages.div_ceil(200))
        .unwrap_or(u32::MAX)
        .max(1);
    let pause = over / batches;
    for i in 0..messages {
        let partition = partition(i % partitions);
        let seq = i / partitions + 1;
        published.insert(partition.to_string(), seq);
        let ack = js
            .publish(partition.subject("events"), seq.to_string().into())
            .await
            .expect("published");
        acks.push(ack);
        if acks.len() == 200 {
            for ack in acks.drain(..) {
                ack.await.expect("stored");
            }
            tokio::time::sleep(pause).await;
        }
    }
    for ack in acks {
        ack.await.expect("stored");
    }
    published
}

/// Waits until `done` holds, looking every 20 ms; panics with what it last said after
/// `within`.
pub async fn wait_until(within: Duration, mut done: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + within;
    loop {
        match done() {
            Ok(()) => return,
            Err(why) => assert!(Instant::now() < deadline, "not within {within:?}: {why}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until no durable of `stream` has a message pending or unacknowledged; panics with
/// the counts after `within`.
pub async fn wait_all_acked(stream: &jetstream::stream::Stream, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (pending, unacked) = outstanding(stream).await;
        if pending == 0 && unacked == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{pending} pending, {unacked} unacknowledged"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Messages not yet delivered, and delivered but not acknowledged, over every durable of
/// `stream`.
pub async fn outstanding(stream: &jetstream::stream::Stream) -> (u64, u64) {
    let mut consumers = stream.consumers();
    let (mut pending, mut unacked) = (0, 0);
    while let Some(info) = consumers.next().await {
        let info = info.expect("consumer info");
        pending += info.num_pending;
        unacked += info.num_ack_pending as u64;
    }
    (pending, unacked)
}
