//! A fleet of managers on one store, with the checks every scenario runs after each step:
//! every partition owned exactly once by a live worker, versions that only grow, and an
//! ownership [`Ledger`] without overlaps or shrinking tokens.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use parti_core::config::Config;
use parti_core::decide::ManagerState;
use parti_core::runtime::{Hooks, Manager, Transition};
use parti_core::store::Store;
use parti_core::testing::Freezer;
use parti_strategy::{Assignment, PartitionId, Sticky, WorkerId};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep};

use crate::ledger::{HookBehaviour, Ledger, Owner};
use crate::source::TestSource;

/// How often bounded waits look at the fleet's state.
const LOOK_EVERY: Duration = Duration::from_millis(10);

/// Every transition of one manager, recorded by its state hook from the very first.
pub type TransitionLog = Arc<Mutex<Vec<Transition>>>;

/// One running worker.
pub struct Member<S: Store> {
    /// Its manager.
    pub manager: Manager<S>,
    /// Its transitions, from `Init` on.
    pub log: TransitionLog,
    /// Its label in the fleet's ledger.
    pub owner: Owner,
    /// Its connection to the store (to inject faults into).
    pub store: S,
    /// Pauses all its tasks, as `SIGSTOP` pauses a process.
    pub freezer: Freezer,
}

/// How soon after a lost bucket (or a store that answers again) every partition must be
/// owned again: two heartbeat TTLs — one for the leases of before the loss to end, one for
/// the new sessions to be granted — and the interval of the write that finds the loss.
pub fn reown_bound(config: &Config) -> Duration {
    2 * config.heartbeat_ttl + config.heartbeat_interval
}

/// Managers on one store, all sharing one partition source.
pub struct Fleet<S: Store> {
    connect: Arc<dyn Fn() -> S + Send + Sync>,
    /// The configuration every manager gets.
    pub config: Config,
    /// The partition source every manager shares.
    pub source: TestSource,
    members: BTreeMap<WorkerId, Member<S>>,
    /// The highest (term, version) of an assignment seen per manager instance: it only
    /// grows (a version may be lower under a newer term, after the records were lost).
    versions: BTreeMap<String, (u64, u64)>,
    /// Every ownership interval of every manager the fleet started.
    pub ledger: Ledger,
    /// How the managers' hooks behave (drain time, slow or panicking grants).
    pub hooks: HookBehaviour,
    started: Owner,
}

impl<S: Store> Fleet<S> {
    /// A fleet whose managers connect with `connect`, assigning `partitions` partitions.
    pub fn new(
        connect: impl Fn() -> S + Send + Sync + 'static,
        config: Config,
        partitions: usize,
    ) -> Self {
        crate::log::init();
        Self {
            connect: Arc::new(connect),
            config,
            source: TestSource::numbered("p", partitions).expect("valid keys"),
            members: BTreeMap::new(),
            versions: BTreeMap::new(),
            ledger: Ledger::default(),
            hooks: HookBehaviour::default(),
            started: 0,
        }
    }

    /// Starts `n` managers at once; returns their ids.
    pub async fn start(&mut self, n: usize) -> Vec<WorkerId> {
        self.start_with(vec![None; n]).await
    }

    /// Starts a manager with the static `identity`; returns its id.
    pub async fn start_as(&mut self, identity: &str) -> WorkerId {
        let ids = self.start_with(vec![Some(identity.to_owned())]).await;
        ids.into_iter().next().expect("one started")
    }

    /// Starts a manager per entry at once, each with that identity (if any); returns their
    /// ids, sorted.
    pub async fn start_with(&mut self, identities: Vec<Option<String>>) -> Vec<WorkerId> {
        self.rekey();
        let mut starting = JoinSet::new();
        for identity in identities {
            let store = (self.connect)();
            let source = self.source.clone();
            let config = self.config.clone();
            self.started += 1;
            let owner = self.started;
            let hooks = self.ledger.hooks(Hooks::new(), owner, &self.hooks);
            let connection = store.clone();
            let freezer = Freezer::default();
            starting.spawn(async move {
                let log = TransitionLog::default();
                let hooks = hooks.on_state_changed({
                    let log = log.clone();
                    move |from, to| log.lock().unwrap().push(Transition { from, to })
                });
                // A replicated store under load may time the opening of a bucket out: like
                // any caller, the harness retries what is transient (for a minute).
                let deadline = Instant::now() + Duration::from_secs(60);
                let manager = loop {
                    let mut builder =
                        Manager::builder(store.clone(), source.clone(), Sticky::default())
                            .config(config.clone())
                            .hooks(hooks.clone())
                            .freezer(freezer.clone());
                    if let Some(identity) = &identity {
                        builder = builder.identity(identity.clone());
                    }
                    match builder.start().await {
                        Ok(manager) => break manager,
                        Err(e) if e.is_transient() && Instant::now() < deadline => {
                            sleep(Duration::from_millis(200)).await;
                        }
                        Err(e) => panic!("manager starts: {e:?}"),
                    }
                };
                Member {
                    manager,
                    log,
                    owner,
                    store: connection,
                    freezer,
                }
            });
        }
        let mut ids = Vec::new();
        while let Some(member) = starting.join_next().await {
            let member = member.expect("start task");
            let id = member.manager.worker_id();
            self.ledger.started(member.owner, id.clone());
            ids.push(id.clone());
            // A member filed under this id while it claims a new one (it lost the id), or
            // whose claim was lost with the ids bucket (its next renewal finds the id taken
            // and gives it up; until then only one of the two can heartbeat under it, and
            // the ledger checks what they own), is filed apart.
            if let Some(existing) = self.members.remove(&id) {
                let apart = WorkerId::new(format!("reclaiming-{}", existing.owner));
                self.members.insert(apart, existing);
            }
            self.members.insert(id.clone(), member);
        }
        ids.sort();
        ids
    }

    /// The running members.
    pub fn members(&self) -> &BTreeMap<WorkerId, Member<S>> {
        &self.members
    }

    /// One member.
    pub fn member(&self, id: &WorkerId) -> &Member<S> {
        &self.members[id]
    }

    /// The ids of the running members.
    pub fn ids(&self) -> BTreeSet<WorkerId> {
        self.members.keys().cloned().collect()
    }

    /// Files members under the ids they hold now: a worker that lost its id (cut off from
    /// the store for longer than `id_ttl`) claims another. One still claiming a new id,
    /// whose old id is taken already, is filed under `reclaiming-<label>` meanwhile; a second
    /// that believes it holds an id (its claim lost with the ids bucket, until its renewal
    /// finds the id taken) under `duplicate-<label>`.
    pub fn rekey(&mut self) {
        if self
            .members
            .iter()
            .all(|(id, member)| member.manager.worker_id() == *id)
        {
            return;
        }
        let (reclaiming, claimed): (Vec<_>, Vec<_>) = std::mem::take(&mut self.members)
            .into_values()
            .partition(|m| m.manager.state() == ManagerState::ClaimingId);
        for member in claimed {
            let id = member.manager.worker_id();
            self.ledger.started(member.owner, id.clone());
            // Two that believe they hold one id (the ids bucket was lost under one of them):
            // the second is filed apart until its renewal finds the id taken.
            let id = if self.members.contains_key(&id) {
                WorkerId::new(format!("duplicate-{}", member.owner))
            } else {
                id
            };
            self.members.insert(id, member);
        }
        for member in reclaiming {
            let mut id = member.manager.worker_id();
            if self.members.contains_key(&id) {
                id = WorkerId::new(format!("reclaiming-{}", member.owner));
            }
            self.members.insert(id, member);
        }
    }

    /// Takes a member out of the fleet without stopping it (to stop it from another task).
    pub fn take(&mut self, id: &WorkerId) -> Member<S> {
        self.members.remove(id).expect("a running member")
    }

    /// Stops a member gracefully.
    pub async fn stop(&mut self, id: &WorkerId) -> Member<S> {
        let member = self.members.remove(id).expect("a running member");
        member.manager.stop().await.expect("clean stop");
        member
    }

    /// Stops every member at once.
    pub async fn stop_all(&mut self) {
        let mut stopping = JoinSet::new();
        for (_, member) in std::mem::take(&mut self.members) {
            stopping.spawn(async move { member.manager.stop().await.expect("clean stop") });
        }
        while let Some(done) = stopping.join_next().await {
            done.expect("stop task");
        }
    }

    /// Crashes a member: its tasks end with no cleanup.
    pub async fn crash(&mut self, id: &WorkerId) {
        let member = self.members.remove(id).expect("a running member");
        member.manager.abort().await;
        self.ledger.crashed(member.owner);
    }

    /// The live members that believe they lead.
    pub fn leaders(&self) -> Vec<WorkerId> {
        self.members
            .iter()
            .filter(|(_, m)| m.manager.is_leader())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The one leader (panics unless there is exactly one).
    pub fn leader(&self) -> WorkerId {
        let leaders = self.leaders();
        assert_eq!(leaders.len(), 1, "leaders: {leaders:?}");
        leaders[0].clone()
    }

    /// A member that is not the leader (panics unless there is exactly one leader and
    /// another member).
    pub fn follower(&self) -> WorkerId {
        let leader = self.leader();
        self.members
            .keys()
            .find(|id| **id != leader)
            .expect("a member besides the leader")
            .clone()
    }

    /// Who owns each partition, by the live members' applied assignments; `Err` names a
    /// partition owned twice.
    pub fn ownership(&self) -> Result<BTreeMap<PartitionId, WorkerId>, String> {
        let mut owners = BTreeMap::new();
        for (id, member) in &self.members {
            for partition in member.manager.assignment().partitions() {
                if let Some(other) = owners.insert(partition.clone(), id.clone()) {
                    return Err(format!("{partition} owned by {other} and {id}"));
                }
            }
        }
        Ok(owners)
    }

    /// [`Fleet::ownership`] as an [`Assignment`], to measure movement with
    /// [`Assignment::moved_from`].
    pub fn assignment(&self) -> Result<Assignment, String> {
        Ok(self.ownership()?.into_iter().collect())
    }

    /// The highest applied version among live members.
    pub fn max_version(&self) -> u64 {
        self.members
            .values()
            .map(|m| m.manager.assignment().version())
            .max()
            .unwrap_or(0)
    }

    /// Looks at every member's `owns()`: no partition may be owned by two members at once,
    /// and the ownership of a frozen member ends (for the ledger) when its `owns()` turns
    /// false — a paused process does nothing, and after the pause it must not act on a
    /// partition it was fenced from.
    pub fn look_at_owns(&self) {
        let mut owning: BTreeMap<PartitionId, Vec<Owner>> = BTreeMap::new();
        for member in self.members.values() {
            let assignment = member.manager.assignment();
            let frozen = member.freezer.is_frozen();
            if frozen {
                let assigned: Vec<PartitionId> = assignment.partitions().cloned().collect();
                self.ledger.frozen_without(member.owner, &assigned);
            }
            for (partition, token) in assignment.grants() {
                let since = self.ledger.now();
                let owns = member.manager.owns(partition, token);
                if owns {
                    owning
                        .entry(partition.clone())
                        .or_default()
                        .push(member.owner);
                }
                self.ledger
                    .owns_seen(member.owner, partition, owns, frozen, since);
            }
        }
        for (partition, owners) in owning {
            if owners.len() > 1 {
                self.ledger
                    .violation(format!("{partition}: owns() true for owners {owners:?}"));
            }
        }
    }

    /// Panics if the ledger shows two owners of a partition at once, a token going down, or
    /// one token held by two processes.
    pub fn check_ledger(&self) {
        let overlaps = self.ledger.overlaps();
        assert!(overlaps.is_empty(), "overlapping ownership: {overlaps:#?}");
        let tokens = self.ledger.token_violations();
        assert!(
            tokens.is_empty(),
            "fencing tokens out of order: {tokens:#?}"
        );
        let shared = self.ledger.shared_tokens();
        assert!(
            shared.is_empty(),
            "one token held by two processes: {shared:#?}"
        );
    }

    /// Records versions and panics if one went down; checks the ledger.
    fn check_versions(&mut self) {
        self.check_ledger();
        for (id, member) in &self.members {
            let assignment = member.manager.assignment();
            let version = (assignment.term(), assignment.version());
            let instance = member.manager.instance_id().to_string();
            let seen = self.versions.entry(instance).or_default();
            assert!(
                version >= *seen,
                "{id}'s assignment (term, version) went from {seen:?} down to {version:?}"
            );
            *seen = version;
        }
    }

    /// Whether every partition of the source is owned exactly once by a live member and
    /// every member is `Stable` and follows the same leader.
    pub fn settled(&self) -> Result<(), String> {
        let owners = self.ownership()?;
        let expected: BTreeSet<PartitionId> =
            self.source.get().iter().map(|p| p.id().clone()).collect();
        let owned: BTreeSet<PartitionId> = owners.keys().cloned().collect();
        if owned != expected {
            return Err(format!(
                "{} of {} partitions owned, {} unknown",
                owned.intersection(&expected).count(),
                expected.len(),
                owned.difference(&expected).count()
            ));
        }
        let leaders = self.leaders();
        if leaders.len() != 1 {
            return Err(format!("leaders: {leaders:?}"));
        }
        for (id, member) in &self.members {
            let state = member.manager.state();
            if state != ManagerState::Stable {
                return Err(format!("{id} is {state}"));
            }
            match member.manager.leader() {
                Some(leader) if leader.worker_id == leaders[0] => {}
                other => return Err(format!("{id} follows {other:?}")),
            }
        }
        Ok(())
    }

    /// One line per member: its state, the leader it follows and what it holds (for a
    /// failure message).
    pub fn describe(&self) -> String {
        self.members
            .iter()
            .map(|(id, member)| {
                let manager = &member.manager;
                let assignment = manager.assignment();
                format!(
                    "  {id} ({}): {}, leader {:?}, {} partitions at version {}",
                    member.owner,
                    manager.state(),
                    manager.leader().map(|l| (l.worker_id, l.term)),
                    assignment.partitions().len(),
                    assignment.version(),
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Watches the fleet until `until` — every member's `owns()`, the versions and the
    /// ledger, as [`wait_for`](Self::wait_for) does — and returns the longest time no
    /// member was leader.
    pub async fn watch_until(&mut self, until: Instant) -> Duration {
        let leaderless_since = Cell::new(None::<Instant>);
        let longest = Cell::new(Duration::ZERO);
        let length = until.saturating_duration_since(Instant::now());
        self.wait_for("the time to pass", 2 * length + LOOK_EVERY, |fleet| {
            let now = Instant::now();
            if fleet.leaders().is_empty() {
                let since = leaderless_since.get().unwrap_or(now);
                leaderless_since.set(Some(since));
                longest.set(longest.get().max(now - since));
            } else {
                leaderless_since.set(None);
            }
            if now >= until {
                Ok(())
            } else {
                Err("watching".into())
            }
        })
        .await;
        longest.get()
    }

    /// How long after `since` the last partition was taken by the member that owns it now
    /// (zero if none changed hands since).
    pub fn reowned_since(&self, since: Instant) -> Duration {
        self.ledger
            .intervals()
            .iter()
            .filter(|interval| interval.to.is_none())
            .map(|interval| interval.from.0.saturating_duration_since(since))
            .max()
            .unwrap_or_default()
    }

    /// Waits (at most `timeout`) until the fleet has settled; returns when it did. Checks
    /// versions all along.
    pub async fn settle(&mut self, timeout: Duration) -> Instant {
        self.wait_for("the fleet to settle", timeout, Self::settled)
            .await
    }

    /// Waits (at most `timeout`) until `done` holds; returns when it did. Checks versions
    /// all along.
    pub async fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Self) -> Result<(), String>,
    ) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            self.rekey();
            self.look_at_owns();
            self.check_versions();
            match done(self) {
                Ok(()) => return Instant::now(),
                Err(why) if Instant::now() >= deadline => {
                    panic!(
                        "timed out after {timeout:?} waiting for {what}: {why}\n{}",
                        self.describe()
                    )
                }
                Err(_) => sleep(LOOK_EVERY).await,
            }
        }
    }
}
