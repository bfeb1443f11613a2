//! The task that consumes one partition while this worker owns it.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::{self, Batch};
use async_nats::jetstream::consumer::{AckPolicy, Consumer, DeliverPolicy};
use async_nats::jetstream::{self, AckKind};
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use metrics::{counter, histogram};
use parti_core::decide::ManagerState;
use parti_core::runtime::{HookContext, Verdict};
use parti_core::telemetry::{
    CONSUMER_HANDLER_DURATION, CONSUMER_MESSAGES, CONSUMER_NAKS, CONSUMER_REDELIVERIES,
};
use parti_core::wire::FencingToken;
use parti_strategy::PartitionId;
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until, timeout};

use super::{ConsumerConfig, Inner, MessageContext, names};

/// How long a request to the server (create a consumer, start a fetch, ack) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The wait before trying again after a failure (a missing stream, a failed fetch).
const RETRY: Duration = Duration::from_secs(1);

/// What became of one handled message.
enum Outcome {
    Done,
    Failed,
    Panicked,
}

/// Consumes `partition` under `token` until told to stop (`stop` carries the drain
/// deadline) or until the worker no longer owns it.
pub(super) async fn run(
    inner: Arc<Inner>,
    partition: PartitionId,
    token: FencingToken,
    ctx: HookContext,
    stop: watch::Receiver<Option<Instant>>,
) {
    let mut run = Run {
        inner,
        partition,
        token,
        ctx,
        stop,
        stop_open: true,
    };
    let Some(consumer) = run.bind().await else {
        return;
    };
    run.consume(consumer).await;
}

struct Run {
    inner: Arc<Inner>,
    partition: PartitionId,
    token: FencingToken,
    ctx: HookContext,
    stop: watch::Receiver<Option<Instant>>,
    /// Whether `stop`'s sender is still there (it goes with the revoke that set the
    /// deadline).
    stop_open: bool,
}

impl Run {
    fn worker(&self) -> String {
        self.ctx.worker_id().to_string()
    }

    /// Whether the partition is still this worker's to consume: no revoke began, and the
    /// manager shows it owned under this token.
    fn keeps(&self) -> bool {
        self.stop.borrow().is_none() && self.ctx.owns(&self.partition, self.token)
    }

    /// Reports a failure: the first of a kind at once, then once per quiet period with a
    /// count.
    fn report(&self, kind: &str, message: impl std::fmt::Display) {
        if let Verdict::Report { suppressed } = self.inner.repeats.verdict(kind) {
            tracing::warn!(
                worker = %self.ctx.worker_id(),
                partition = %self.partition,
                suppressed,
                "{message}"
            );
        }
    }

    /// Waits `delay`, or less if told to stop. `false`: stop.
    async fn pause(&mut self, delay: Duration) -> bool {
        tokio::select! {
            () = sleep(delay) => {}
            _ = self.stop.changed(), if self.stop_open => {}
        }
        self.keeps()
    }

    /// Binds the partition's durable consumer, creating it if needed, at a paced slot;
    /// waits for a missing stream. `None`: told to stop first.
    async fn bind(&mut self) -> Option<Consumer<pull::Config>> {
        let inner = self.inner.clone();
        let config = &inner.config;
        let durable = names::durable_name(&config.durable_prefix, &self.partition);
        let spread = {
            use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
            BuildHasherDefault::<DefaultHasher>::default()
                .hash_one((self.ctx.worker_id().as_str(), self.partition.as_str()))
        };
        let slot = self.inner.pace.slot(spread);
        tokio::select! {
            () = sleep_until(slot) => {}
            _ = self.stop.changed(), if self.stop_open => {}
        }
        let wanted = pull::Config {
            durable_name: Some(durable.clone()),
            filter_subject: self.partition.subject(&config.subject_prefix),
            ack_policy: AckPolicy::Explicit,
            deliver_policy: DeliverPolicy::All,
            ack_wait: config.ack_wait,
            max_ack_pending: i64::try_from(config.concurrency).unwrap_or(i64::MAX),
            inactive_threshold: config.inactive_threshold,
            ..Default::default()
        };
        loop {
            if !self.keeps() {
                return None;
            }
            let created = async {
                let stream =
                    inner
                        .jetstream
                        .get_stream(&config.stream)
                        .await
                        .map_err(|e| match e.kind() {
                            jetstream::context::GetStreamErrorKind::JetStream(js)
                                if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                            {
                                format!(
                                    "stream `{}` does not exist: partition {} is consumed once it \
                                 does",
                                    config.stream, self.partition
                                )
                            }
                            _ => format!("looking up stream `{}` failed: {e}", config.stream),
                        })?;
                stream
                    .create_consumer(wanted.clone())
                    .await
                    .map_err(|e| format!("creating durable consumer `{durable}` failed: {e}"))
            };
            match timeout(REQUEST_TIMEOUT, created).await {
                Ok(Ok(consumer)) => return Some(consumer),
                Ok(Err(message)) => self.report("binding a partition's consumer failed", message),
                Err(_) => self.report(
                    "binding a partition's consumer failed",
                    format!("no answer within {REQUEST_TIMEOUT:?} creating `{durable}`"),
                ),
            }
            if !self.pause(RETRY).await {
                return None;
            }
        }
    }

    /// Fetches and hands out messages until the partition is let go, then drains.
    async fn consume(&mut self, mut consumer: Consumer<pull::Config>) {
        let concurrency = self.inner.config.concurrency;
        let mut owned = self.ctx.watch_assignment();
        let mut owned_open = true;
        let mut buffer: VecDeque<jetstream::Message> = VecDeque::new();
        let mut batch: Option<Batch> = None;
        // Messages being handled, by a local number; the futures yield that number.
        let mut in_flight: HashMap<u64, jetstream::Message> = HashMap::new();
        let mut handling = FuturesUnordered::new();
        let mut next_number = 0u64;
        let mut deadline: Option<Instant> = None;
        loop {
            let keeps = self.keeps();
            if let Some(at) = *self.stop.borrow() {
                deadline = Some(deadline.map_or(at, |d| d.min(at)));
            }
            if !keeps && matches!(self.ctx.state(), ManagerState::Degraded { .. }) {
                // Fenced: another worker may own it soon. Cancel what runs, now.
                deadline = Some(Instant::now());
            }
            if keeps {
                while handling.len() < concurrency {
                    let Some(message) = buffer.pop_front() else {
                        break;
                    };
                    next_number += 1;
                    handling.push(self.hand_out(next_number, &message));
                    in_flight.insert(next_number, message);
                }
            } else {
                for message in buffer.drain(..) {
                    self.nak(&message, None, "unhanded").await;
                }
            }
            if deadline.is_some_and(|at| Instant::now() >= at) && !in_flight.is_empty() {
                // Cancelled: their handlers are dropped here, the messages redelivered at
                // once to the next owner.
                handling = FuturesUnordered::new();
                for (_, message) in in_flight.drain() {
                    counter!(CONSUMER_MESSAGES, "worker" => self.worker(), "result" => "cancelled")
                        .increment(1);
                    self.nak(&message, None, "cancelled").await;
                }
            }
            if !keeps && batch.is_none() && in_flight.is_empty() {
                return;
            }
            if keeps && batch.is_none() && buffer.is_empty() && handling.len() < concurrency {
                match self.fetch(&consumer).await {
                    Ok(fetched) => batch = Some(fetched),
                    Err(message) => {
                        self.report("fetching a partition's messages failed", message);
                        if !self.pause(RETRY).await {
                            continue;
                        }
                        // The consumer may be gone (deleted by hand, or the server lost it).
                        match self.bind().await {
                            Some(bound) => consumer = bound,
                            None => continue,
                        }
                        continue;
                    }
                }
            }
            tokio::select! {
                biased;
                _ = self.stop.changed(), if self.stop_open => {
                    if self.stop.has_changed().is_err() {
                        self.stop_open = false;
                    }
                }
                changed = owned.changed(), if owned_open => owned_open = changed.is_ok(),
                Some((number, outcome, took)) = handling.next(), if !handling.is_empty() => {
                    if let Some(message) = in_flight.remove(&number) {
                        self.finish(&message, outcome, took).await;
                    }
                }
                next = next_message(&mut batch), if batch.is_some() => match next {
                    Some(Ok(message)) => buffer.push_back(message),
                    Some(Err(e)) => {
                        self.report("reading fetched messages failed", e);
                        batch = None;
                    }
                    None => batch = None,
                },
                () = sleep_until(deadline.unwrap_or_else(Instant::now)),
                    if deadline.is_some() && !in_flight.is_empty() => {}
            }
        }
    }

    /// Starts one pull request.
    async fn fetch(&self, consumer: &Consumer<pull::Config>) -> Result<Batch, String> {
        let request = consumer
            .fetch()
            .max_messages(self.inner.config.concurrency)
            .expires(self.inner.config.fetch_expiry)
            .messages();
        match timeout(REQUEST_TIMEOUT, request).await {
            Ok(Ok(batch)) => Ok(batch),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {REQUEST_TIMEOUT:?}")),
        }
    }

    /// The handler's future for `message`: yields its number, what became of it and how
    /// long it took. A panic is caught.
    fn hand_out(
        &self,
        number: u64,
        message: &jetstream::Message,
    ) -> impl Future<Output = (u64, Outcome, Duration)> + Send + 'static {
        let delivered = message
            .info()
            .map_or(1, |info| u64::try_from(info.delivered).unwrap_or(1));
        if delivered > 1 {
            counter!(CONSUMER_REDELIVERIES, "worker" => self.worker()).increment(1);
        }
        let ctx = MessageContext {
            partition: self.partition.clone(),
            token: self.token,
            delivered,
            hook: self.ctx.clone(),
        };
        // A handler may panic in the call itself, before it returns its future: caught too.
        let handler = &self.inner.handler;
        let handled =
            std::panic::catch_unwind(AssertUnwindSafe(|| handler(message.message.clone(), ctx)));
        let (message, progress_every) = (message.clone(), progress_interval(&self.inner.config));
        async move {
            let started = Instant::now();
            let outcome = match handled {
                Ok(handled) => {
                    let handled = AssertUnwindSafe(handled).catch_unwind();
                    match in_progress(handled, &message, progress_every).await {
                        Ok(Ok(())) => Outcome::Done,
                        Ok(Err(_)) => Outcome::Failed,
                        Err(_) => Outcome::Panicked,
                    }
                }
                Err(_) => Outcome::Panicked,
            };
            (number, outcome, started.elapsed())
        }
    }

    /// Acks a handled message, or naks it with a backoff.
    async fn finish(&self, message: &jetstream::Message, outcome: Outcome, took: Duration) {
        let worker = self.worker();
        histogram!(CONSUMER_HANDLER_DURATION, "worker" => worker.clone())
            .record(took.as_secs_f64());
        let result = match outcome {
            Outcome::Done => "ok",
            Outcome::Failed => "error",
            Outcome::Panicked => "panic",
        };
        counter!(CONSUMER_MESSAGES, "worker" => worker, "result" => result).increment(1);
        match outcome {
            Outcome::Done => match timeout(REQUEST_TIMEOUT, message.ack()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => self.report("acking a message failed", e),
                Err(_) => self.report("acking a message failed", "no answer"),
            },
            Outcome::Failed | Outcome::Panicked => {
                if matches!(outcome, Outcome::Panicked) {
                    self.report(
                        "a message handler panicked",
                        format!("the handler panicked on a message of {}", self.partition),
                    );
                }
                let delivered = message
                    .info()
                    .map_or(1, |info| u32::try_from(info.delivered).unwrap_or(u32::MAX));
                let config = &self.inner.config;
                let delay = config
                    .nak_backoff
                    .saturating_mul(2u32.saturating_pow(delivered.saturating_sub(1).min(20)))
                    .min(config.nak_backoff_max);
                self.nak(message, Some(delay), result).await;
            }
        }
    }

    /// Naks a message: redelivered after `delay`, or at once.
    async fn nak(
        &self,
        message: &jetstream::Message,
        delay: Option<Duration>,
        reason: &'static str,
    ) {
        counter!(CONSUMER_NAKS, "worker" => self.worker(), "reason" => reason).increment(1);
        match timeout(REQUEST_TIMEOUT, message.ack_with(AckKind::Nak(delay))).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.report("naking a message failed", e),
            Err(_) => self.report("naking a message failed", "no answer"),
        }
    }
}

/// How often a handler still running tells the server its message is in progress: three
/// times per `ack_wait`, so that one lost notice does not let the message be redelivered.
fn progress_interval(config: &ConsumerConfig) -> Duration {
    (config.ack_wait / 3).max(Duration::from_millis(10))
}

/// Runs `handled` to its end, telling the server every `every` that `message` is still
/// in progress (`+WPI`, which restarts its `ack_wait`): a handler slower than `ack_wait`
/// keeps its message instead of getting it again behind itself. A notice is sent alongside
/// the handler, never pausing it. The notices stop with the handler — when it is cancelled
/// (a revoke's deadline, a fence) the message is redelivered after at most `ack_wait`.
async fn in_progress<F: Future>(
    handled: F,
    message: &jetstream::Message,
    every: Duration,
) -> F::Output {
    let mut handled = std::pin::pin!(handled);
    let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The notice on its way, if any; bounded by the next one's time.
    let mut notice = std::pin::pin!(futures_util::future::OptionFuture::from(None));
    loop {
        tokio::select! {
            output = &mut handled => return output,
            _ = ticks.tick() => {
                notice.set(Some(timeout(every, message.ack_with(AckKind::Progress))).into());
            }
            Some(sent) = &mut notice => {
                // Best effort: a notice that does not arrive costs a redelivery at most.
                if let Ok(Err(e)) = sent {
                    tracing::debug!(error = %e, "telling the server a message is in progress failed");
                }
                notice.set(None.into());
            }
        }
    }
}

/// The next message of the running pull request (`None`: it ended).
async fn next_message(
    batch: &mut Option<Batch>,
) -> Option<Result<jetstream::Message, async_nats::Error>> {
    match batch {
        Some(batch) => batch.next().await,
        None => std::future::pending().await,
    }
}
