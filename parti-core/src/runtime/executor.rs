//! The one executor: runs a sans-IO machine of [`decide`](crate::decide) against the store
//! and the hooks. It feeds the machine an event, carries out the actions it returns (an
//! operation — a store call, a hook — is started as a future that yields its completion
//! event), and then races, in this order, the inputs from outside (`stop`, the lease, a
//! watch), the machine's next deadline and the operation in flight. The winner is the next
//! event. Nothing else is awaited, so a call that hangs or a hook that never returns (but
//! yields, as async code does) cannot hold a machine past its deadline; and after a pause
//! (a frozen process, a starved runtime) the machine sees the time before an abandoned
//! operation is polled again.

use std::future::{Future, pending};
use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, sleep_until};

use crate::decide::{Machine, OpId};
use crate::store::{
    Bucket, DeleteReason, Entry, StoreError, StoreResult, WatchEvent, WatchFrom, WatchStream,
};

/// A boxed, sendable future.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What runs around one machine: it carries out actions and delivers outside events.
pub(crate) trait Shell<M: Machine>: Send
where
    M::Event: Send,
{
    /// Carries out one action at once; an operation is started with [`Operation::start`].
    fn carry_out(&mut self, action: M::Action, operation: &mut Operation<M::Event>);
    /// The next event from outside (`stop`, a lease, a watch). Cancel-safe: the executor
    /// drops it whenever the deadline or the operation wins the race.
    fn next_input(&mut self) -> impl Future<Output = M::Event> + Send;
}

/// The one operation in flight: its id and the future that yields its completion event.
/// Dropping the future abandons the operation.
pub(crate) struct Operation<E> {
    running: Option<(OpId, BoxFuture<E>)>,
}

impl<E> Default for Operation<E> {
    fn default() -> Self {
        Self { running: None }
    }
}

impl<E> Operation<E> {
    /// Starts `id`: `done` runs only while the executor polls it, and yields the event that
    /// reports its completion.
    pub(crate) fn start(&mut self, id: OpId, done: impl Future<Output = E> + Send + 'static) {
        self.running = Some((id, Box::pin(done)));
    }

    /// Abandons `id` (drops its future) if it is the one in flight.
    pub(crate) fn cancel(&mut self, id: OpId) {
        if self
            .running
            .as_ref()
            .is_some_and(|(running, _)| *running == id)
        {
            self.running = None;
        }
    }

    /// The completion of the operation in flight; pending forever when there is none.
    async fn completion(&mut self) -> E {
        match &mut self.running {
            Some((_, done)) => {
                let event = done.await;
                self.running = None;
                event
            }
            None => pending().await,
        }
    }
}

/// Runs `machine`, starting with `first`, until it has finished.
pub(crate) async fn run<M, S>(machine: &mut M, shell: &mut S, first: M::Event)
where
    M: Machine,
    M::Event: Send,
    S: Shell<M>,
{
    let mut operation = Operation::default();
    let mut event = first;
    loop {
        for action in machine.handle(event, Instant::now().into_std()) {
            shell.carry_out(action, &mut operation);
        }
        if machine.is_finished() {
            return;
        }
        let deadline = machine.next_deadline().map(Instant::from_std);
        event = tokio::select! {
            biased;
            // Outside events first: a lease renewed just before its end must not be taken
            // for a lapse. The machines check their deadlines on every event, so this order
            // cannot keep one past a deadline.
            input = shell.next_input() => input,
            // A passed deadline before the operation: an abandoned hook is not polled again.
            () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                M::tick()
            }
            done = operation.completion() => done,
        };
    }
}

/// What a [`KeyWatch`] delivers.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// The key was written.
    Put(Entry),
    /// The key was deleted, or expired.
    Deleted(String, DeleteReason),
    /// The watch failed; it is set up again after the retry delay.
    Failed(StoreError),
    /// The watch was set up (the first time, or again after a failure or an end): it
    /// delivers what changes from now on, so what changed before — while it was down —
    /// is for a read to find.
    Started,
}

/// A watch of one key, or of every key with a prefix, that sets itself up (again after a
/// failure or an end, after a delay), for a shell's [`next_input`](Shell::next_input).
pub(crate) struct KeyWatch<B> {
    bucket: B,
    key: String,
    /// Whether every key starting with `key` counts (else only `key` itself).
    prefix: bool,
    /// Where each (re)started watch begins.
    from: WatchFrom,
    stream: Option<WatchStream>,
    setup: Option<BoxFuture<StoreResult<WatchStream>>>,
    retry_at: Instant,
    retry: Duration,
}

impl<B: Bucket> KeyWatch<B> {
    /// A watch of `key` in `bucket` from now on, set up at the first call of
    /// [`next`](Self::next) and `retry` after each failure.
    pub(crate) fn new(bucket: B, key: impl Into<String>, retry: Duration) -> Self {
        Self {
            bucket,
            key: key.into(),
            prefix: false,
            from: WatchFrom::Now,
            stream: None,
            setup: None,
            retry_at: Instant::now(),
            retry,
        }
    }

    /// A watch of every key starting with `prefix`.
    pub(crate) fn prefix(bucket: B, prefix: impl Into<String>, retry: Duration) -> Self {
        Self {
            prefix: true,
            ..Self::new(bucket, prefix, retry)
        }
    }

    /// Delivers the current value of every matching key first, each time the watch is
    /// (re)started, then the changes.
    pub(crate) fn with_current(self) -> Self {
        Self {
            from: WatchFrom::Current,
            ..self
        }
    }

    fn matches(&self, key: &str) -> bool {
        if self.prefix {
            key.starts_with(&self.key)
        } else {
            key == self.key
        }
    }

    /// The next change of the key. Cancel-safe.
    pub(crate) async fn next(&mut self) -> Delivery {
        loop {
            if let Some(stream) = &mut self.stream {
                match stream.next().await {
                    Some(Ok(WatchEvent::Put(entry))) if self.matches(&entry.key) => {
                        return Delivery::Put(entry);
                    }
                    Some(Ok(WatchEvent::Delete { key, reason, .. })) if self.matches(&key) => {
                        return Delivery::Deleted(key, reason);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        self.stream = None;
                        self.retry_at = Instant::now() + self.retry;
                        return Delivery::Failed(e);
                    }
                    None => {
                        self.stream = None;
                        self.retry_at = Instant::now() + self.retry;
                    }
                }
            } else if let Some(setup) = &mut self.setup {
                let started = setup.await;
                self.setup = None;
                match started {
                    Ok(stream) => {
                        self.stream = Some(stream);
                        return Delivery::Started;
                    }
                    Err(e) => {
                        self.retry_at = Instant::now() + self.retry;
                        return Delivery::Failed(e);
                    }
                }
            } else {
                sleep_until(self.retry_at).await;
                let (bucket, key, from) = (self.bucket.clone(), self.key.clone(), self.from);
                self.setup = Some(if self.prefix {
                    Box::pin(async move { bucket.watch(&key, from).await })
                } else {
                    Box::pin(async move { bucket.watch_key(&key, from).await })
                });
            }
        }
    }
}
