//! The [`Manager`]: what a worker process creates to take part in the fleet.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use parti_strategy::{PartitionId, Strategy, WorkerId};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::context::{Buckets, OwnedTask, Shared, within};
use super::instrumented::Instrumented;
use super::reopen::{Losses, Reopening};
use super::session;
use super::status::{LeaderInfo, Status, Transition, WorkerAssignment};
use super::{Freezer, Hooks, IdClaimer, InstanceId, PartitionSource};
use crate::config::Config;
use crate::decide::ManagerState;
use crate::store::{Bucket, Operation, Store, StoreError};
use crate::wire::{FencingToken, REFRESH_KEY};
use crate::{Error, Result};

/// Configures and starts a [`Manager`].
#[must_use = "a builder does nothing until `start` is awaited"]
pub struct ManagerBuilder<S, P> {
    store: S,
    source: P,
    strategy: Arc<dyn Strategy>,
    config: Config,
    hooks: Hooks,
    freezer: Option<Freezer>,
    identity: Option<String>,
}

impl<S: Store, P: PartitionSource> ManagerBuilder<S, P> {
    /// The protocol configuration (default: [`Config::default`]).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// A static identity for this worker (Kafka's `group.instance.id`): a name that stays
    /// the same across restarts of the process, such as a Kubernetes pod name. Default:
    /// none.
    ///
    /// A worker with an identity gets its own worker id back at once after a crash or a
    /// restart (the claim carrying its identity is taken over by the newest process with
    /// it), and after a graceful [`Manager::stop`] its partitions wait for it for
    /// [`Config::restart_grace`] instead of moving to other workers: a rolling update that
    /// replaces each worker within that time moves no partition. Its revoke hooks still run
    /// on stop, and its successor's grants carry new fencing tokens. Give each process of a
    /// fleet its own identity: if two run with one, the one started last keeps it and the
    /// other stops with [`Error::IdentityInUse`] once it notices.
    ///
    /// ```
    /// use parti_core::runtime::{Manager, StaticSource};
    /// use parti_core::store::MemoryStore;
    /// use parti_strategy::Sticky;
    ///
    /// let source = StaticSource::numbered("p", 4).expect("valid ids");
    /// let builder = Manager::builder(MemoryStore::new(), source, Sticky::default())
    ///     .identity("orders-worker-0");
    /// # drop(builder);
    /// ```
    pub fn identity(mut self, identity: impl Into<String>) -> Self {
        self.identity = Some(identity.into());
        self
    }

    /// The callbacks (default: none).
    pub fn hooks(mut self, hooks: Hooks) -> Self {
        self.hooks = hooks;
        self
    }

    /// Pauses and resumes every task of the manager with `freezer`, as `SIGSTOP` and
    /// `SIGCONT` would the process (feature `testing`: the simulation's frozen-worker fault).
    #[cfg(feature = "testing")]
    pub fn freezer(mut self, freezer: crate::testing::Freezer) -> Self {
        self.freezer = Some(freezer);
        self
    }

    /// Validates the configuration, opens the protocol's buckets, claims a worker id and
    /// starts the manager's tasks (heartbeat, election, follower; the calculator while this
    /// worker leads). Returns once the id is claimed: the manager is then in
    /// [`ManagerState::Election`] or later.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid configuration, [`Error::InvalidIdentity`] for an
    /// unusable identity; store errors when the store is unreachable or a bucket cannot be
    /// opened; [`Error::NoFreeWorkerId`] when every id of the range is taken.
    pub async fn start(self) -> Result<Manager<S>> {
        self.config.validate()?;
        if let Some(identity) = &self.identity {
            let reason = if identity.is_empty() {
                Some("it is empty")
            } else if identity.len() > 256 {
                Some("it is longer than 256 bytes")
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(Error::InvalidIdentity {
                    identity: identity.clone(),
                    reason,
                });
            }
        }
        let config = self.config;
        let status = Arc::new(Status::new(self.hooks));
        let open = |spec, losses| {
            let store = self.store.clone();
            let label = status.worker_label();
            async move {
                Ok::<_, Error>(Instrumented(
                    Reopening::open(store, spec, losses).await?,
                    label,
                ))
            }
        };
        let heartbeat_losses = Arc::new(Losses::default());
        let buckets = Buckets {
            ids: open(config.ids_bucket()?, Arc::default()).await?,
            election: open(config.election_bucket()?, Arc::default()).await?,
            heartbeat: open(config.heartbeat_bucket()?, heartbeat_losses.clone()).await?,
            second_heartbeat: match config.writes_two_heartbeats() {
                true => {
                    let spec = config.second_heartbeat_bucket()?;
                    Some(open(spec, heartbeat_losses.clone()).await?)
                }
                false => None,
            },
            assignment: open(config.assignment_bucket()?, Arc::default()).await?,
        };
        let instance = InstanceId::generate();
        status.set_stage(ManagerState::ClaimingId);
        let claimer = IdClaimer::new(
            buckets.ids.clone(),
            &config,
            instance.clone(),
            self.identity.clone(),
        );
        let claimed = match claimer.claim().await {
            Ok(claimed) => claimed,
            Err(e) => {
                status.set_stage(ManagerState::Shutdown);
                return Err(e);
            }
        };
        status.set_worker_id(claimed.worker_id().clone());
        status.set_stage(ManagerState::Election);
        let election = buckets.election.clone();
        let request_timeout = config.heartbeat_ttl;
        let shared = Arc::new(Shared {
            config,
            instance: instance.clone(),
            identity: self.identity.clone(),
            buckets,
            source: self.source,
            strategy: self.strategy,
            status: status.clone(),
            freezer: self.freezer,
            repeats: Default::default(),
            highest_term: Default::default(),
            heartbeat_losses,
            heartbeat_doubts: Losses::began_now(),
        });
        let (stop, stop_rx) = watch::channel(false);
        let span = tracing::info_span!("parti", instance = %instance);
        let task = shared.spawn(session::drive(shared.clone(), claimed, stop_rx).instrument(span));
        Ok(Manager {
            status,
            election,
            instance,
            identity: self.identity,
            request_timeout,
            stop,
            task: Mutex::new(Some(task)),
        })
    }
}

/// A worker's membership in the fleet: its stable id, its part in leader election, and the
/// partitions it owns.
///
/// Create one per process with [`Manager::builder`]. The manager runs on tokio tasks and
/// tells the application what it owns through [`watch_assignment`](Manager::watch_assignment)
/// and the [`Hooks`]. Call [`stop`](Manager::stop) before exiting: it releases leadership,
/// partitions and the id at once so that the fleet does not wait for TTLs. Dropping a
/// manager without `stop` starts the same cleanup in the background.
///
/// ```
/// use std::time::Duration;
/// use parti_core::config::Config;
/// use parti_core::decide::ManagerState;
/// use parti_core::runtime::{Manager, StaticSource};
/// use parti_core::store::MemoryStore;
/// use parti_strategy::Sticky;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> parti_core::Result<()> {
/// // Paused time in this example: the 30 s cold-start window passes at once.
/// let config = Config::default();
/// let source = StaticSource::numbered("orders", 8).expect("valid keys");
/// let manager = Manager::builder(MemoryStore::new(), source, Sticky::default())
///     .config(config)
///     .start()
///     .await?;
/// manager.wait_state(ManagerState::Stable, Duration::from_secs(60)).await?;
/// assert!(manager.is_leader());
/// assert_eq!(manager.assignment().len(), 8); // the only worker owns everything
/// manager.stop().await?;
/// # Ok(())
/// # }
/// ```
pub struct Manager<S: Store> {
    status: Arc<Status>,
    election: Instrumented<Reopening<S>>,
    instance: InstanceId,
    identity: Option<String>,
    /// How long a request through the store (`refresh_partitions`) may take.
    request_timeout: Duration,
    stop: watch::Sender<bool>,
    task: Mutex<Option<OwnedTask<Result<()>>>>,
}

impl<S: Store> Manager<S> {
    /// A builder for a manager coordinating through `store`, assigning the partitions of
    /// `source` with `strategy` (when it leads).
    pub fn builder<P: PartitionSource>(
        store: S,
        source: P,
        strategy: impl Strategy + 'static,
    ) -> ManagerBuilder<S, P> {
        ManagerBuilder {
            store,
            source,
            strategy: Arc::new(strategy),
            config: Config::default(),
            hooks: Hooks::default(),
            freezer: None,
            identity: None,
        }
    }

    /// This worker's id (the last one claimed, while it claims a new one).
    pub fn worker_id(&self) -> WorkerId {
        self.status.worker_id()
    }

    /// This process's instance id (random per start).
    pub fn instance_id(&self) -> &InstanceId {
        &self.instance
    }

    /// This worker's static identity, if it has one ([`ManagerBuilder::identity`]).
    pub fn identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }

    /// Whether this worker is the leader.
    pub fn is_leader(&self) -> bool {
        self.status.is_leader()
    }

    /// The leader, as this worker last saw it.
    pub fn leader(&self) -> Option<LeaderInfo> {
        self.status.leader()
    }

    /// The current state.
    pub fn state(&self) -> ManagerState {
        self.status.state()
    }

    /// The partitions this worker owns now.
    pub fn assignment(&self) -> Arc<WorkerAssignment> {
        self.status.assignment()
    }

    /// Whether this worker owns `partition` under `token` right now: the partition is in
    /// its applied assignment with that token, and its heartbeat lease has not run out. A
    /// lock and a clock read: cheap enough to call before every side effect.
    ///
    /// Checking is not enough on its own — a process can pause between the check and the
    /// write. Pass the token to the downstream system too, and have it reject tokens lower
    /// than the highest it has seen for the partition: tokens of one partition only grow,
    /// so a stale owner's writes are refused.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use parti_core::wire::FencingToken;
    /// use parti_strategy::PartitionId;
    ///
    /// /// A downstream store that fences writers by token.
    /// #[derive(Default)]
    /// struct Ledger {
    ///     highest: HashMap<PartitionId, FencingToken>,
    ///     rows: Vec<(PartitionId, String)>,
    /// }
    ///
    /// impl Ledger {
    ///     fn write(&mut self, partition: &PartitionId, token: FencingToken, row: &str) -> Result<(), String> {
    ///         let highest = self.highest.entry(partition.clone()).or_default();
    ///         if token < *highest {
    ///             return Err(format!("stale owner of {partition}: {token:?} < {highest:?}"));
    ///         }
    ///         *highest = token;
    ///         self.rows.push((partition.clone(), row.to_owned()));
    ///         Ok(())
    ///     }
    /// }
    ///
    /// # async fn work<S: parti_core::store::Store>(manager: &parti_core::runtime::Manager<S>, ledger: &mut Ledger) {
    /// let assignment = manager.assignment();
    /// for (partition, token) in assignment.grants() {
    ///     if manager.owns(partition, token) {
    ///         // ... do the work, then write with the token:
    ///         let _ = ledger.write(partition, token, "result");
    ///     }
    /// }
    /// # }
    /// let p = PartitionId::new("orders-7").unwrap();
    /// let mut ledger = Ledger::default();
    /// let old = FencingToken { term: 3, version: 10 };
    /// let new = FencingToken { term: 3, version: 14 };
    /// ledger.write(&p, new, "from the new owner").unwrap();
    /// assert!(ledger.write(&p, old, "from the old owner").is_err());
    /// ```
    pub fn owns(&self, partition: &PartitionId, token: FencingToken) -> bool {
        self.status.owns(partition, token)
    }

    /// A receiver of the assignment: it always reaches the latest value.
    pub fn watch_assignment(&self) -> watch::Receiver<Arc<WorkerAssignment>> {
        self.status.watch_assignment()
    }

    /// A receiver of the state: it always reaches the latest value (use
    /// [`subscribe_transitions`](Self::subscribe_transitions) to see every step).
    pub fn watch_state(&self) -> watch::Receiver<ManagerState> {
        self.status.watch_state()
    }

    /// Every state transition from now on, in order, none dropped (the channel is unbounded:
    /// read it, or drop it).
    pub fn subscribe_transitions(&self) -> mpsc::UnboundedReceiver<Transition> {
        self.status.subscribe_transitions()
    }

    /// Waits until the manager is in `state`.
    ///
    /// # Errors
    /// [`Error::WaitTimeout`] after `timeout`; [`Error::Stopped`] when the manager shuts
    /// down first (unless `state` is [`ManagerState::Shutdown`]).
    pub async fn wait_state(&self, state: ManagerState, timeout: Duration) -> Result<()> {
        let mut states = self.status.watch_state();
        let reached =
            states.wait_for(|current| *current == state || *current == ManagerState::Shutdown);
        match tokio::time::timeout(timeout, reached).await {
            Ok(Ok(current)) if *current == state => Ok(()),
            Ok(_) => Err(Error::Stopped),
            Err(_) => Err(Error::WaitTimeout {
                wanted: state,
                current: self.state(),
                waited: timeout,
            }),
        }
    }

    /// Asks the leader to re-read the partition source and rebalance at once. Works from
    /// any worker: the request goes through the store. Returns once the request is stored,
    /// or fails after `heartbeat_ttl` without an answer from the store.
    ///
    /// # Errors
    /// [`Error::Stopped`] after `stop`; store errors (an unanswered request is
    /// [`StoreError::OutcomeUnknown`](crate::store::StoreError::OutcomeUnknown): ask again).
    pub async fn refresh_partitions(&self) -> Result<()> {
        if self.state() == ManagerState::Shutdown {
            return Err(Error::Stopped);
        }
        let bucket = self.election.name();
        let request = || {
            let put = self
                .election
                .put(REFRESH_KEY, Bytes::from(self.instance.to_string()));
            within(
                self.request_timeout,
                Operation::Put,
                bucket,
                REFRESH_KEY,
                put,
            )
        };
        match request().await {
            // The bucket was lost, and is created again by now: once more.
            Err(Error::Store(StoreError::NotFound { .. })) => request().await.map(drop),
            done => done.map(drop),
        }
    }

    /// Leaves the fleet gracefully: steps down (releasing the lease at its revision so a
    /// new leader is elected at once), runs the revoked hook for every owned partition,
    /// deletes the heartbeat (the leader re-owns the partitions without waiting for a TTL)
    /// and releases the id. Every task the manager started has ended when this returns.
    /// Calling it again does nothing.
    ///
    /// # Errors
    /// The first cleanup step that failed (the fleet then recovers by TTL).
    pub async fn stop(&self) -> Result<()> {
        let _ = self.stop.send(true);
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        match task {
            Some(task) => task
                .join()
                .await
                .unwrap_or(Err(Error::TaskEnded { task: "manager" })),
            None => Ok(()),
        }
    }

    /// Ends every task at once with no cleanup, as if the process had crashed: the fleet
    /// notices by the heartbeat's and the lease's TTLs. Meant for tests and for a process
    /// that must exit immediately.
    pub async fn abort(&self) {
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            task.abort().await;
        }
    }
}

impl<S: Store> Drop for Manager<S> {
    fn drop(&mut self) {
        let task = self
            .task
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = task {
            // Graceful cleanup in the background; the task is detached from this handle.
            let _ = self.stop.send(true);
            task.detach();
        }
    }
}

impl<S: Store> std::fmt::Debug for Manager<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("worker_id", &self.worker_id())
            .field("instance", &self.instance)
            .field("state", &self.state())
            .field("is_leader", &self.is_leader())
            .finish()
    }
}
