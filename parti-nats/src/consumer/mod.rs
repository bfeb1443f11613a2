//! Consuming a JetStream stream with Kafka-group semantics: each partition this worker owns
//! is read through its own durable pull consumer, handed message by message to the
//! application's handler, and let go cleanly when the partition moves.
//!
//! [`PartitionConsumer`] follows a [`Manager`](parti_core::runtime::Manager)'s grants
//! through its [`hooks`](PartitionConsumer::hooks):
//!
//! - **on a grant** it binds (creating if needed) the partition's durable consumer —
//!   filtered on [`PartitionId::subject`] under the configured prefix, explicit acks, at most
//!   `concurrency` messages unacknowledged — and hands each message to the handler with a
//!   [`MessageContext`] (partition, fencing token, worker). `Ok` acks it; `Err` naks it with
//!   a backoff that grows with its deliveries; a panic is caught, reported and naked. With
//!   the default concurrency of 1, messages of a partition are handled one at a time, in
//!   order. A handler slower than `ack_wait` keeps its message: while it runs, the server
//!   is told three times per `ack_wait` that the message is in progress.
//! - **on a revoke** it stops fetching at once, naks what it fetched but did not hand out
//!   (the next owner gets those at once, not after `ack_wait`), waits for the handlers
//!   running — and their acks — until the drain deadline, then cancels any still running
//!   and lets go. The ack state lives in JetStream, so the next owner continues exactly
//!   where this one stopped.
//! - **never** is a message handed out after its partition's revoke began, or while the
//!   worker does not own the partition under that token ([`HookContext::owns`]): a worker
//!   that fences itself (its lease lapsed) stops handing out at that instant and cancels its
//!   handlers.
//!
//! Durable names are derived from the partition ids (valid characters, bounded length, a
//! hash so that no two partitions share one); creations are paced (`create_rate` per second
//! per worker, with jitter) so a fleet starting at once does not stampede the server; a
//! durable unused for `inactive_threshold` (its partition left the source, or nobody owned
//! it for that long) is removed by the server. A missing stream is reported (once per 5 s,
//! with a count) and waited for.
//!
//! A crash (a process killed) leaves the messages it was handling unacknowledged: they are
//! redelivered to the next owner after `ack_wait`, so a handler sees a message at least once
//! — duplicates are bounded by what was in flight at the crash.
//!
//! Per-partition durables fit fleets of up to some thousands of partitions; for many tiny
//! partitions (tens of thousands per worker) one consumer per worker filtered on all its
//! subjects costs the server less, at the price of a consumer re-creation at every
//! rebalance. Only the per-partition mode is built.

mod names;
mod pace;
mod partition;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream;
use parti_core::decide::ManagerState;
use parti_core::runtime::{HookContext, Hooks};
use parti_core::store::BoxError;
use parti_core::wire::{FencingToken, Grant};
use parti_strategy::PartitionId;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use self::pace::Pace;
use crate::NatsStore;

/// A message handed to the handler, and what it may need to know.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MessageContext {
    /// The partition the message belongs to.
    pub partition: PartitionId,
    /// The fencing token under which this worker owns it: pass it along with writes to
    /// systems that reject stale owners.
    pub token: FencingToken,
    /// How many times JetStream has delivered this message (1: the first time).
    pub delivered: u64,
    /// The manager: worker id, [`HookContext::owns`].
    pub hook: HookContext,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Handler = Arc<
    dyn Fn(async_nats::Message, MessageContext) -> BoxFuture<Result<(), BoxError>> + Send + Sync,
>;

/// How a [`PartitionConsumer`] reads its stream. Build it with [`ConsumerConfig::new`] and
/// the `with_*` methods.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ConsumerConfig {
    /// The JetStream stream to read.
    pub stream: String,
    /// The subject prefix of the partitions: partition `p` is read from
    /// `p.subject(subject_prefix)` (`orders` and `eu.7` give `orders.eu.7`).
    pub subject_prefix: String,
    /// The start of every durable consumer's name (ASCII letters, digits, `-`, `_`; at most
    /// 32). Default `parti`.
    pub durable_prefix: String,
    /// Messages of one partition handled at once. Default 1: one at a time, in order.
    pub concurrency: usize,
    /// How long JetStream waits for an ack before redelivering (what a crash costs the next
    /// owner). A handler may run longer: while it runs, the consumer tells the server its
    /// message is in progress three times per `ack_wait`. Default 10 s.
    pub ack_wait: Duration,
    /// The longest a revoke waits for running handlers; it never waits past the manager's
    /// `drain_timeout`. Default 10 s.
    pub drain_timeout: Duration,
    /// How long one pull request waits for messages (also the longest a revoke waits for
    /// the answer to the last one). Default 500 ms.
    pub fetch_expiry: Duration,
    /// Durable consumers created per second per worker, at most. Default 50.
    pub create_rate: u32,
    /// A durable unused this long is deleted by the server. Default 24 h.
    pub inactive_threshold: Duration,
    /// The delay before a message whose handler failed is redelivered: this, doubled for
    /// every earlier delivery, up to `nak_backoff_max`. Default 100 ms.
    pub nak_backoff: Duration,
    /// The longest nak delay. Default 30 s.
    pub nak_backoff_max: Duration,
}

/// Why a [`ConsumerConfig`] is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid consumer config: {field} {reason}")]
pub struct ConsumerConfigError {
    /// The field.
    pub field: &'static str,
    /// What is wrong.
    pub reason: String,
}

impl ConsumerConfig {
    /// Reads `stream`, partition `p` from subject `p.subject(subject_prefix)`, with the
    /// defaults above.
    pub fn new(stream: impl Into<String>, subject_prefix: impl Into<String>) -> Self {
        Self {
            stream: stream.into(),
            subject_prefix: subject_prefix.into(),
            durable_prefix: "parti".into(),
            concurrency: 1,
            ack_wait: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            fetch_expiry: Duration::from_millis(500),
            create_rate: 50,
            inactive_threshold: Duration::from_secs(24 * 3600),
            nak_backoff: Duration::from_millis(100),
            nak_backoff_max: Duration::from_secs(30),
        }
    }

    /// Sets [`ConsumerConfig::durable_prefix`].
    #[must_use]
    pub fn with_durable_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.durable_prefix = prefix.into();
        self
    }

    /// Sets [`ConsumerConfig::concurrency`].
    #[must_use]
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Sets [`ConsumerConfig::ack_wait`].
    #[must_use]
    pub fn with_ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }

    /// Sets [`ConsumerConfig::drain_timeout`].
    #[must_use]
    pub fn with_drain_timeout(mut self, drain_timeout: Duration) -> Self {
        self.drain_timeout = drain_timeout;
        self
    }

    /// Sets [`ConsumerConfig::fetch_expiry`].
    #[must_use]
    pub fn with_fetch_expiry(mut self, fetch_expiry: Duration) -> Self {
        self.fetch_expiry = fetch_expiry;
        self
    }

    /// Sets [`ConsumerConfig::create_rate`].
    #[must_use]
    pub fn with_create_rate(mut self, per_second: u32) -> Self {
        self.create_rate = per_second;
        self
    }

    /// Sets [`ConsumerConfig::inactive_threshold`].
    #[must_use]
    pub fn with_inactive_threshold(mut self, threshold: Duration) -> Self {
        self.inactive_threshold = threshold;
        self
    }

    /// Sets [`ConsumerConfig::nak_backoff`] and [`ConsumerConfig::nak_backoff_max`].
    #[must_use]
    pub fn with_nak_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.nak_backoff = first;
        self.nak_backoff_max = max;
        self
    }

    /// Checks every field.
    ///
    /// # Errors
    /// The first field that is unusable, and why.
    pub fn validate(&self) -> Result<(), ConsumerConfigError> {
        let fail = |field, reason: &str| {
            Err(ConsumerConfigError {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.stream.is_empty() || self.stream.contains(['.', '*', '>', ' ']) {
            return fail(
                "stream",
                "must be a stream name (no '.', '*', '>' or spaces)",
            );
        }
        if self.subject_prefix.contains(['*', '>', ' ']) || self.subject_prefix.ends_with('.') {
            return fail("subject_prefix", "must be a subject without wildcards");
        }
        if let Err(reason) = names::check_prefix(&self.durable_prefix) {
            return fail("durable_prefix", &reason);
        }
        if self.concurrency == 0 {
            return fail("concurrency", "must be at least 1");
        }
        for (field, value) in [
            ("ack_wait", self.ack_wait),
            ("drain_timeout", self.drain_timeout),
            ("fetch_expiry", self.fetch_expiry),
            ("inactive_threshold", self.inactive_threshold),
        ] {
            if value.is_zero() {
                return fail(field, "must be more than zero");
            }
        }
        if self.fetch_expiry >= self.ack_wait {
            return fail("fetch_expiry", "must be less than ack_wait");
        }
        if self.create_rate == 0 {
            return fail("create_rate", "must be at least 1");
        }
        if self.nak_backoff > self.nak_backoff_max {
            return fail("nak_backoff", "must not exceed nak_backoff_max");
        }
        Ok(())
    }
}

/// Consumes the partitions a manager grants this worker (see the [module docs](self)).
/// Cheap to clone: clones share the running partitions.
///
/// ```no_run
/// use parti_core::runtime::{Manager, StaticSource};
/// use parti_nats::{ConsumerConfig, NatsStore, PartitionConsumer};
/// use parti_strategy::Sticky;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let store = NatsStore::connect("nats://127.0.0.1:4222").await?;
/// let config = ConsumerConfig::new("ORDERS", "orders");
/// let consumer = PartitionConsumer::new(&store, config, |message, ctx| async move {
///     println!("{} #{}: {} bytes", ctx.partition, ctx.delivered, message.payload.len());
///     Ok::<_, std::io::Error>(())
/// })?;
/// let manager = Manager::builder(store, StaticSource::numbered("orders", 60)?, Sticky::default())
///     .hooks(consumer.hooks())
///     .start()
///     .await?;
/// # manager.stop().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PartitionConsumer {
    inner: Arc<Inner>,
}

struct Inner {
    jetstream: jetstream::Context,
    client: async_nats::Client,
    config: ConsumerConfig,
    handler: Handler,
    pace: Pace,
    running: Mutex<HashMap<PartitionId, Running>>,
    repeats: parti_core::runtime::Repeats,
}

/// One partition being consumed.
struct Running {
    token: FencingToken,
    /// `Some(deadline)`: let go, handlers may finish until the deadline.
    stop: watch::Sender<Option<Instant>>,
    task: JoinHandle<()>,
}

impl PartitionConsumer {
    /// A consumer of `config.stream` that hands messages to `handler`.
    ///
    /// # Errors
    /// When the config is unusable ([`ConsumerConfig::validate`]).
    pub fn new<F, Fut, E>(
        store: &NatsStore,
        config: ConsumerConfig,
        handler: F,
    ) -> Result<Self, ConsumerConfigError>
    where
        F: Fn(async_nats::Message, MessageContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        config.validate()?;
        let handler: Handler = Arc::new(move |message, ctx| {
            let handled = handler(message, ctx);
            Box::pin(async move { handled.await.map_err(Into::into) })
        });
        Ok(Self {
            inner: Arc::new(Inner {
                jetstream: store.jetstream().clone(),
                client: store.client().clone(),
                pace: Pace::new(config.create_rate),
                config,
                handler,
                running: Mutex::new(HashMap::new()),
                repeats: parti_core::runtime::Repeats::default(),
            }),
        })
    }

    /// Hooks that drive this consumer: pass them to
    /// [`ManagerBuilder::hooks`](parti_core::runtime::ManagerBuilder::hooks). An
    /// application with hooks of its own calls [`assigned`](Self::assigned) and
    /// [`revoked`](Self::revoked) from them instead.
    pub fn hooks(&self) -> Hooks {
        let (on_grant, on_revoke) = (self.clone(), self.clone());
        Hooks::new()
            .on_assigned(move |grants, ctx| {
                let consumer = on_grant.clone();
                // In the future, not the call: the grants are published (`owns` is true)
                // by the time it runs, and each partition's task checks `owns` first.
                async move { consumer.assigned(grants, ctx) }
            })
            .on_revoked(move |partitions, ctx| on_revoke.revoked(partitions, &ctx))
    }

    /// Starts consuming `grants`: call it from the future `on_assigned` returns (by then the
    /// grants are published and owned; a task that finds its partition not owned ends at
    /// once). It returns at once.
    pub fn assigned(&self, grants: Vec<Grant>, ctx: HookContext) {
        let mut running = self.lock();
        for grant in grants {
            let (stop, stopped) = watch::channel(None);
            let task = tokio::spawn(partition::run(
                self.inner.clone(),
                grant.partition.clone(),
                grant.token,
                ctx.clone(),
                stopped,
            ));
            let previous = running.insert(
                grant.partition,
                Running {
                    token: grant.token,
                    stop,
                    task,
                },
            );
            // A grant with a new token without a revoke between (a new session of this
            // worker): the old run stops at once.
            if let Some(previous) = previous {
                previous.task.abort();
            }
        }
    }

    /// Lets go of `partitions` (call it from `on_revoked`): fetching stops at once, and the
    /// future ends when every handler has finished and acked, or at the drain deadline —
    /// the earlier of [`ConsumerConfig::drain_timeout`] and the manager's, less a margin,
    /// or at once for a worker whose lease lapsed.
    pub fn revoked(
        &self,
        partitions: Vec<PartitionId>,
        ctx: &HookContext,
    ) -> impl Future<Output = ()> + Send + 'static + use<> {
        let drain = self.inner.config.drain_timeout.min(ctx.drain_timeout());
        // Finish a little before the manager releases: no handler outlives the release.
        let margin = (drain / 10).max(Duration::from_millis(50)).min(drain / 2);
        // A worker whose lease lapsed may not be the owner any more: it stops at once.
        let deadline = if matches!(ctx.state(), ManagerState::Degraded { .. }) {
            Instant::now()
        } else {
            Instant::now() + drain - margin
        };
        let tasks: Vec<JoinHandle<()>> = {
            let mut running = self.lock();
            partitions
                .iter()
                .filter_map(|partition| running.remove(partition))
                .map(|run| {
                    run.stop.send_replace(Some(deadline));
                    run.task
                })
                .collect()
        };
        let client = self.inner.client.clone();
        async move {
            for task in tasks {
                let _ = task.await;
            }
            // The acks are on their way to the server before the partition is released.
            let _ = tokio::time::timeout(Duration::from_secs(1), client.flush()).await;
        }
    }

    /// The partitions being consumed now, with their tokens.
    pub fn partitions(&self) -> Vec<(PartitionId, FencingToken)> {
        let mut partitions: Vec<_> = self
            .lock()
            .iter()
            .map(|(partition, run)| (partition.clone(), run.token))
            .collect();
        partitions.sort();
        partitions
    }

    /// Stops everything at once, acking and naking nothing — as a crash would. For tests
    /// that kill a worker; a real worker lets [`revoked`](Self::revoked) end its partitions.
    pub fn abort(&self) {
        for (_, run) in self.lock().drain() {
            run.task.abort();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PartitionId, Running>> {
        self.inner
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for PartitionConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionConsumer")
            .field("config", &self.inner.config)
            .field("partitions", &self.lock().len())
            .finish()
    }
}
