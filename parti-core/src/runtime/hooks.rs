//! Callbacks the manager runs when something happens to this worker.

use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use parti_strategy::{PartitionId, WorkerId};
use tokio::sync::watch;

use super::status::{Status, WorkerAssignment};
use crate::Error;
use crate::decide::ManagerState;
use crate::wire::{FencingToken, Grant};

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
type AsyncHook<T> = Arc<dyn Fn(T, HookContext) -> BoxFuture + Send + Sync>;

/// What a hook (or anything it starts) knows of its manager: which worker it is, what it
/// owns now, and how long a revocation may drain. Cheap to clone and to keep: a task started
/// in [`Hooks::on_assigned`] keeps it to check [`owns`](Self::owns) before each piece of
/// work, so no hook needs a handle on the [`Manager`](super::Manager) (which does not exist
/// yet when the hooks are built).
#[derive(Clone)]
pub struct HookContext {
    worker_id: WorkerId,
    status: Arc<Status>,
    drain_timeout: Duration,
}

impl HookContext {
    pub(crate) fn new(worker_id: WorkerId, status: Arc<Status>, drain_timeout: Duration) -> Self {
        Self {
            worker_id,
            status,
            drain_timeout,
        }
    }

    /// The worker id this manager holds.
    pub fn worker_id(&self) -> &WorkerId {
        &self.worker_id
    }

    /// Whether this worker owns `partition` under `token` now: as
    /// [`Manager::owns`](super::Manager::owns).
    pub fn owns(&self, partition: &PartitionId, token: FencingToken) -> bool {
        self.status.owns(partition, token)
    }

    /// What this worker holds now (as [`Manager::assignment`](super::Manager::assignment)).
    pub fn assignment(&self) -> Arc<WorkerAssignment> {
        self.status.assignment()
    }

    /// A receiver of what this worker holds (as
    /// [`Manager::watch_assignment`](super::Manager::watch_assignment)): a revoked
    /// partition leaves it before `on_revoked` is called, and the whole assignment empties
    /// at once when the worker fences itself.
    pub fn watch_assignment(&self) -> watch::Receiver<Arc<WorkerAssignment>> {
        self.status.watch_assignment()
    }

    /// The manager's state now.
    pub fn state(&self) -> ManagerState {
        self.status.state()
    }

    /// How long `on_revoked` may drain (`Config::drain_timeout`); a worker whose lease
    /// lapsed gets less — it must stop at once ([`state`](Self::state) is `Degraded`).
    pub fn drain_timeout(&self) -> Duration {
        self.drain_timeout
    }
}

impl fmt::Debug for HookContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookContext")
            .field("worker_id", &self.worker_id)
            .field("drain_timeout", &self.drain_timeout)
            .finish()
    }
}
type SyncHook<T> = Arc<dyn Fn(T) + Send + Sync>;
type StateHook = Arc<dyn Fn(ManagerState, ManagerState) + Send + Sync>;
type ErrorHook = Arc<dyn Fn(&Error) + Send + Sync>;

/// A change of leadership seen by this worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeadershipChange {
    /// Whether this worker is now the leader.
    pub is_leader: bool,
    /// The term this worker won, or the term it held when it stepped down.
    pub term: u64,
}

/// The callbacks of one manager. All are optional.
///
/// - [`on_revoked`](Hooks::on_revoked) and [`on_assigned`](Hooks::on_assigned) are async and
///   run one at a time, on the manager's follower task. When a record moves partitions,
///   the revoked ones leave [`Manager::watch_assignment`](super::Manager::watch_assignment)
///   first, then
///   `on_revoked` runs (stop work on them: it gets `drain_timeout`, and never past the
///   heartbeat lease), then the new version is reported to the leader, `on_assigned` is
///   called with the grants and their fencing tokens, and the new assignment is published
///   (`watch_assignment`, [`Manager::owns`](super::Manager::owns)) before the future it
///   returned first runs: nothing shows a partition as owned before the application has
///   been told of it. `on_assigned` is
///   never cut short while the lease holds; if the lease lapses while it runs, the worker
///   fences at once and `on_revoked` follows for everything. A hook that panics is reported
///   through `on_error` ([`Error::HookPanicked`]) and counts as finished.
/// - [`on_state_changed`](Hooks::on_state_changed), [`on_leadership_changed`](Hooks::on_leadership_changed)
///   and [`on_error`](Hooks::on_error) are notifications, called synchronously from the
///   manager's tasks, in order, and never while the manager holds a lock: they may call any
///   [`Manager`](super::Manager) method. Keep them short and never block in them. A panic
///   in one is caught and reported through `on_error`.
///
/// ```
/// use parti_core::runtime::Hooks;
///
/// let hooks = Hooks::new()
///     .on_assigned(|grants, ctx| async move {
///         println!("{} was granted {} partitions", ctx.worker_id(), grants.len());
///         for grant in grants {
///             println!("start {} with token {:?}", grant.partition, grant.token);
///         }
///     })
///     .on_revoked(|partitions, _ctx| async move { println!("stop {partitions:?}") })
///     .on_state_changed(|from, to| println!("{from} → {to}"))
///     .on_error(|error| eprintln!("parti: {error}"));
/// # drop(hooks);
/// ```
#[derive(Clone, Default)]
pub struct Hooks {
    assigned: Option<AsyncHook<Vec<Grant>>>,
    revoked: Option<AsyncHook<Vec<PartitionId>>>,
    state_changed: Option<StateHook>,
    leadership_changed: Option<SyncHook<LeadershipChange>>,
    error: Option<ErrorHook>,
}

impl Hooks {
    /// No hooks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Called with the partitions granted to this worker (with their fencing tokens) and
    /// the [`HookContext`].
    pub fn on_assigned<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Vec<Grant>, HookContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.assigned = Some(Arc::new(move |grants, ctx| Box::pin(hook(grants, ctx))));
        self
    }

    /// Called with the partitions taken from this worker and the [`HookContext`]. The
    /// closure itself is called at once when the revocation begins; the future it returns
    /// is the drain, cut at `drain_timeout`.
    pub fn on_revoked<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Vec<PartitionId>, HookContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.revoked = Some(Arc::new(move |partitions, ctx| {
            Box::pin(hook(partitions, ctx))
        }));
        self
    }

    /// Called on every state transition, in order, with the old and the new state.
    pub fn on_state_changed(
        mut self,
        hook: impl Fn(ManagerState, ManagerState) + Send + Sync + 'static,
    ) -> Self {
        self.state_changed = Some(Arc::new(hook));
        self
    }

    /// Called when this worker becomes the leader or stops being it.
    pub fn on_leadership_changed(
        mut self,
        hook: impl Fn(LeadershipChange) + Send + Sync + 'static,
    ) -> Self {
        self.leadership_changed = Some(Arc::new(hook));
        self
    }

    /// Called with every error the manager's tasks handle by themselves (retried store
    /// operations, corrupt records skipped, a failed partition source).
    pub fn on_error(mut self, hook: impl Fn(&Error) + Send + Sync + 'static) -> Self {
        self.error = Some(Arc::new(hook));
        self
    }

    /// Calls the assign hook now and returns its future (`Err`: the call itself panicked).
    /// Calling eagerly means the hook has been told even if its future is then dropped at
    /// once (a deadline that has passed already).
    pub(crate) fn assigned(
        &self,
        grants: Vec<Grant>,
        ctx: HookContext,
    ) -> std::thread::Result<BoxFuture> {
        match &self.assigned {
            Some(hook) if !grants.is_empty() => {
                catch_unwind(AssertUnwindSafe(|| hook(grants, ctx)))
            }
            _ => Ok(Box::pin(async {})),
        }
    }

    /// Calls the revoke hook now and returns its future (`Err`: the call itself panicked);
    /// see [`assigned`](Self::assigned).
    pub(crate) fn revoked(
        &self,
        partitions: Vec<PartitionId>,
        ctx: HookContext,
    ) -> std::thread::Result<BoxFuture> {
        match &self.revoked {
            Some(hook) if !partitions.is_empty() => {
                catch_unwind(AssertUnwindSafe(|| hook(partitions, ctx)))
            }
            _ => Ok(Box::pin(async {})),
        }
    }

    pub(crate) fn state_changed(&self, from: ManagerState, to: ManagerState) {
        if let Some(hook) = &self.state_changed {
            self.guarded("on_state_changed", || hook(from, to));
        }
    }

    pub(crate) fn leadership_changed(&self, change: LeadershipChange) {
        if let Some(hook) = &self.leadership_changed {
            self.guarded("on_leadership_changed", || hook(change));
        }
    }

    pub(crate) fn error(&self, error: &Error) {
        if let Some(hook) = &self.error {
            if catch_unwind(AssertUnwindSafe(|| hook(error))).is_err() {
                tracing::error!("the on_error hook panicked");
            }
        }
    }

    /// Calls a notification hook; a panic is caught and reported (the manager's task that
    /// called it goes on).
    fn guarded(&self, name: &'static str, call: impl FnOnce()) {
        if catch_unwind(AssertUnwindSafe(call)).is_err() {
            let error = Error::HookPanicked { hook: name };
            tracing::error!("{error}");
            self.error(&error);
        }
    }
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("on_assigned", &self.assigned.is_some())
            .field("on_revoked", &self.revoked.is_some())
            .field("on_state_changed", &self.state_changed.is_some())
            .field("on_leadership_changed", &self.leadership_changed.is_some())
            .field("on_error", &self.error.is_some())
            .finish()
    }
}
