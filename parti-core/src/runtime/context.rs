//! What the tasks of one manager share, and small helpers they all use.

use std::future::{Future, pending};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use parti_strategy::{Strategy, WorkerId};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::InstanceId;
use super::freeze::Freezer;
use super::hooks::HookContext;
use super::reopen::Losses;
use super::repeats::{Repeats, Verdict};
use super::status::Status;
use crate::config::Config;
use crate::store::{Operation, StoreError};
use crate::{Error, Result};

/// The protocol's buckets.
#[derive(Debug, Clone)]
pub(crate) struct Buckets<B> {
    pub(crate) ids: B,
    pub(crate) election: B,
    pub(crate) heartbeat: B,
    /// The second heartbeat bucket, when [`Config::writes_two_heartbeats`].
    pub(crate) second_heartbeat: Option<B>,
    pub(crate) assignment: B,
}

impl<B> Buckets<B> {
    /// The heartbeat buckets: the first, and the second if heartbeats go to two.
    pub(crate) fn heartbeats(&self) -> impl Iterator<Item = &B> {
        std::iter::once(&self.heartbeat).chain(self.second_heartbeat.as_ref())
    }
}

/// Everything a manager's tasks share for its whole life.
pub(crate) struct Shared<B, P> {
    pub(crate) config: Config,
    pub(crate) instance: InstanceId,
    /// The worker's static identity, if it has one.
    pub(crate) identity: Option<String>,
    pub(crate) buckets: Buckets<B>,
    pub(crate) source: P,
    pub(crate) strategy: Arc<dyn Strategy>,
    pub(crate) status: Arc<Status>,
    /// Pauses this manager's tasks (the simulation's frozen-process fault).
    pub(crate) freezer: Option<Freezer>,
    /// Counts repeated reports, so an outage does not flood logs and `on_error`.
    pub(crate) repeats: Repeats,
    /// The highest leader term this manager has seen (in the election entry, records or
    /// heartbeats): its campaigns take a term above it.
    pub(crate) highest_term: AtomicU64,
    /// How many times any task of this manager found the heartbeat bucket gone (and
    /// created it again): the calculator must then not trust absence for a while.
    pub(crate) heartbeat_losses: Arc<Losses>,
    /// When a heartbeat last vanished before its TTL with no loss of the bucket seen
    /// (this process's own), or this manager began: a loss of the heartbeat bucket just
    /// before may have gone unseen, so for a TTL after it the calculator does not trust
    /// absence (`CalculatorEvent::AbsenceUnproven`).
    pub(crate) heartbeat_doubts: Losses,
}

impl<B, P> Shared<B, P> {
    /// Spawns one of this manager's tasks (every one goes through here, so a freezer pauses
    /// them all), inside the caller's tracing span (the manager's, its session's, its
    /// term's): a task's log lines carry the worker id and term they belong to.
    pub(crate) fn spawn<T: Send + 'static>(
        &self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> OwnedTask<T> {
        let future = future.in_current_span();
        match &self.freezer {
            Some(freezer) => OwnedTask::spawn(freezer.gate(future)),
            None => OwnedTask::spawn(future),
        }
    }

    /// Reports an error the tasks handle by themselves: a log line and the error hook.
    pub(crate) fn report(&self, context: &str, error: impl Into<Error>) {
        self.report_ref(context, &error.into());
    }

    /// [`report`](Self::report) for an error the caller keeps. Repeats of one context are
    /// rate-limited (see [`Repeats`]): the first at once, then one with a count every
    /// [`QUIET`](super::repeats::QUIET).
    pub(crate) fn report_ref(&self, context: &str, error: &Error) {
        match self.repeats.verdict(context) {
            Verdict::Count => return,
            Verdict::Report { suppressed: 0 } => {
                tracing::warn!(worker = %self.status.worker_id(), "{context}: {error}");
            }
            Verdict::Report { suppressed } => tracing::warn!(
                worker = %self.status.worker_id(),
                "{context}: {error} (and {suppressed} more like it in the last {:?})",
                super::repeats::QUIET
            ),
        }
        self.status.hooks().error(error);
    }
}

/// What the follower has applied, for the heartbeat to report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Applied {
    pub(crate) version: u64,
    pub(crate) term_seen: u64,
}

/// One claimed id's worth of shared context.
pub(crate) struct Session<B, P> {
    pub(crate) shared: Arc<Shared<B, P>>,
    pub(crate) worker_id: WorkerId,
    pub(crate) applied: watch::Sender<Applied>,
}

impl<B, P> Session<B, P> {
    /// What this session's hooks are told of their manager.
    pub(crate) fn hook_context(&self) -> HookContext {
        HookContext::new(
            self.worker_id.clone(),
            self.status.clone(),
            self.config.drain_timeout,
        )
    }
}

impl<B, P> std::ops::Deref for Session<B, P> {
    type Target = Shared<B, P>;

    fn deref(&self) -> &Self::Target {
        &self.shared
    }
}

/// Awaits a store call for at most `limit`. No answer in time is reported as the store
/// reports its own timeouts: [`StoreError::OutcomeUnknown`] for a write (it may have been
/// applied), [`StoreError::Unavailable`] for a read.
pub(crate) async fn within<T, E: Into<Error>>(
    limit: Duration,
    operation: Operation,
    bucket: &str,
    key: &str,
    call: impl Future<Output = std::result::Result<T, E>>,
) -> Result<T> {
    match tokio::time::timeout(limit, call).await {
        Ok(answered) => answered.map_err(Into::into),
        Err(_) => {
            let message = format!("no answer within {limit:?}");
            Err(Error::Store(if operation.is_write() {
                StoreError::OutcomeUnknown {
                    operation,
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                    message,
                    source: None,
                }
            } else {
                StoreError::unavailable(operation, message)
            }))
        }
    }
}

/// Resolves once `stop` says so (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means the sender is gone: nobody can stop us any more, so stop now.
    let _ = stop.wait_for(|stop| *stop).await;
}

/// A task that is aborted when its handle is dropped, so a manager's tasks end with it.
#[derive(Debug)]
pub(crate) struct OwnedTask<T>(Option<JoinHandle<T>>);

impl<T> OwnedTask<T> {
    pub(crate) fn spawn(future: impl Future<Output = T> + Send + 'static) -> Self
    where
        T: Send + 'static,
    {
        Self(Some(tokio::spawn(future)))
    }

    /// Waits for the task to end by itself; `None` if it panicked or was aborted.
    pub(crate) async fn join(mut self) -> Option<T> {
        self.0.take()?.await.ok()
    }

    /// Aborts the task and waits until it has ended.
    pub(crate) async fn abort(mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
            let _ = handle.await;
        }
    }

    /// Resolves when the task ends by itself (returned, panicked or was aborted), and forgets
    /// it; pending forever when it is not running. Cancel-safe, for a `select!` that watches
    /// over the task.
    pub(crate) async fn ended(&mut self) {
        match &mut self.0 {
            Some(handle) => {
                let _ = handle.await;
                self.0 = None;
            }
            None => pending().await,
        }
    }

    /// Lets the task run on without this handle.
    pub(crate) fn detach(mut self) {
        self.0.take();
    }
}

impl<T> Drop for OwnedTask<T> {
    fn drop(&mut self) {
        if let Some(handle) = &self.0 {
            handle.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::OwnedTask;

    /// What session supervision relies on: `ended` resolves when a task panics or returns by
    /// itself, and stays pending while it runs.
    #[tokio::test(start_paused = true)]
    async fn ended_resolves_when_a_task_ends_by_itself() {
        let mut panics = OwnedTask::spawn(async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            panic!("an injected panic in a session task");
        });
        let mut runs = OwnedTask::spawn(std::future::pending::<()>());
        tokio::select! {
            biased;
            () = runs.ended() => panic!("a running task counted as ended"),
            () = panics.ended() => {}
        }
        assert!(panics.join().await.is_none(), "ended and forgotten");
        let outcome = tokio::time::timeout(Duration::from_secs(60), runs.ended()).await;
        assert!(outcome.is_err(), "a running task counted as ended");
    }
}
