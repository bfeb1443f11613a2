//! Callbacks the manager runs when something happens to this worker.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;

use crate::Error;
use crate::decide::ManagerState;
use crate::wire::Grant;
use parti_strategy::PartitionId;

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
type AsyncHook<T> = Arc<dyn Fn(T) -> BoxFuture + Send + Sync>;
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
///     .on_assigned(|grants| async move {
///         for grant in grants {
///             println!("start {} with token {:?}", grant.partition, grant.token);
///         }
///     })
///     .on_revoked(|partitions| async move { println!("stop {partitions:?}") })
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

    /// Called with the partitions granted to this worker (with their fencing tokens).
    pub fn on_assigned<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Vec<Grant>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.assigned = Some(Arc::new(move |grants| Box::pin(hook(grants))));
        self
    }

    /// Called with the partitions taken from this worker.
    pub fn on_revoked<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Vec<PartitionId>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.revoked = Some(Arc::new(move |partitions| Box::pin(hook(partitions))));
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
    pub(crate) fn assigned(&self, grants: Vec<Grant>) -> std::thread::Result<BoxFuture> {
        match &self.assigned {
            Some(hook) if !grants.is_empty() => catch_unwind(AssertUnwindSafe(|| hook(grants))),
            _ => Ok(Box::pin(async {})),
        }
    }

    /// Calls the revoke hook now and returns its future (`Err`: the call itself panicked);
    /// see [`assigned`](Self::assigned).
    pub(crate) fn revoked(&self, partitions: Vec<PartitionId>) -> std::thread::Result<BoxFuture> {
        match &self.revoked {
            Some(hook) if !partitions.is_empty() => {
                catch_unwind(AssertUnwindSafe(|| hook(partitions)))
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
