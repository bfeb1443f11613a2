//! Slow faults on the real runtime, on `MemoryStore` with the default timings and tokio's
//! paused clock: a leader whose link black-holes without closing, a grant hook slower than
//! the lease, hooks that panic, hooks that call back into the manager, a partition source
//! that fails or hangs. (A worker whose link black-holes: `scenarios_memory.rs`.) Each asserts the rule
//! it names and that the ledger shows no two owners at once.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use parti_core::config::Config;
use parti_core::runtime::{Hooks, Manager, PartitionSource, StaticSource};
use parti_core::store::MemoryStore;
use parti_strategy::Sticky;
use tests::fleet::Fleet;
use tokio::time::Instant;

fn fleet() -> Fleet<MemoryStore> {
    let store = MemoryStore::new();
    Fleet::new(move || store.connect(), Config::default(), 30)
}

/// A grant hook that takes longer than the whole heartbeat lease (3 s against 2.7 s) is never
/// cut while the lease is renewed: every grant hook runs to its end, the partitions stay held
/// throughout, and the fleet settles.
#[tokio::test(start_paused = true)]
async fn a_grant_hook_longer_than_the_lease_is_not_cut() {
    let mut fleet = fleet();
    fleet.hooks.grant_delay = Duration::from_secs(3);
    fleet.start(3).await;
    fleet.settle(Duration::from_secs(120)).await;
    fleet.start(1).await;
    fleet.settle(Duration::from_secs(120)).await;
    // Let the last grant hooks end.
    tokio::time::sleep(fleet.hooks.grant_delay).await;
    let errors = fleet.hooks.errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "{errors:?}");
    let started = fleet.hooks.grants_started.load(Ordering::Relaxed);
    assert!(started >= 4, "every worker was granted partitions");
    assert_eq!(
        fleet.hooks.grants_finished.load(Ordering::Relaxed),
        started,
        "every grant hook ran to its end"
    );
    fleet.check_ledger();
    fleet.stop_all().await;
}

/// A grant hook that panics is reported as a typed error and never freezes the worker: it
/// keeps reporting what it applies, so partitions still move off it when a worker joins.
#[tokio::test(start_paused = true)]
async fn a_panicking_hook_is_reported_and_the_worker_goes_on() {
    let mut fleet = fleet();
    fleet.hooks.grant_panics.store(1, Ordering::Relaxed);
    fleet.start(3).await;
    fleet.settle(Duration::from_secs(120)).await;
    let errors = fleet.hooks.errors.lock().unwrap().clone();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("on_assigned hook panicked")),
        "{errors:?}"
    );
    assert_eq!(fleet.hooks.grant_panics.load(Ordering::Relaxed), 0);
    // Every worker (the one whose hook panicked included) gives partitions to a newcomer.
    let before: Vec<_> = fleet
        .members()
        .values()
        .map(|m| (m.owner, m.manager.assignment().len()))
        .collect();
    fleet.start(1).await;
    fleet.settle(Duration::from_secs(120)).await;
    for (owner, had) in before {
        let now = fleet
            .members()
            .values()
            .find(|m| m.owner == owner)
            .map(|m| m.manager.assignment().len())
            .unwrap();
        assert!(now < had, "worker {owner} kept {now} of {had}: frozen?");
    }
    fleet.check_ledger();
    fleet.stop_all().await;
}

/// Notification hooks are called with no lock held: a state or leadership hook may call any
/// `Manager` method (here `worker_id`, `state`, `assignment` and `Debug`) without deadlock.
#[tokio::test(start_paused = true)]
async fn hooks_may_call_back_into_the_manager() {
    let cell: Arc<OnceLock<Arc<Manager<MemoryStore>>>> = Arc::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let hooks = Hooks::new()
        .on_state_changed({
            let (cell, seen) = (cell.clone(), seen.clone());
            move |_, to| {
                if let Some(manager) = cell.get() {
                    let line = format!("{to} {} {manager:?}", manager.worker_id());
                    let _ = (manager.state(), manager.assignment());
                    seen.lock().unwrap().push(line);
                }
            }
        })
        .on_leadership_changed({
            let cell = cell.clone();
            move |_| {
                if let Some(manager) = cell.get() {
                    let _ = (manager.is_leader(), format!("{manager:?}"));
                }
            }
        });
    let source = StaticSource::numbered("p", 8).unwrap();
    let manager = Manager::builder(MemoryStore::new(), source, Sticky::default())
        .hooks(hooks)
        .start()
        .await
        .expect("starts");
    let manager = Arc::new(manager);
    cell.set(manager.clone()).ok().unwrap();
    owns_all(&manager, 8).await;
    assert!(!seen.lock().unwrap().is_empty());
    manager.stop().await.expect("stops");
}

/// A leader whose link black-holes stops being the leader by its lease end — `is_leader()`
/// turns false and the leadership hook fires while its renewal still hangs — and another
/// worker takes over. Un-stalled, the fleet settles with one leader.
#[tokio::test(start_paused = true)]
async fn a_stalled_leader_steps_down_by_its_lease_end() {
    let mut fleet = fleet();
    fleet.start(3).await;
    fleet.settle(Duration::from_secs(120)).await;
    let leader = fleet.leader();
    let config = fleet.config.clone();
    let stalled_at = Instant::now();
    fleet.member(&leader).store.stall();
    // The last renewal was sent at most one renewal interval before the stall, and the
    // lease ends `election_ttl - margin` after it was sent.
    let step_down_by = stalled_at + config.election_ttl - config.margin_for(config.election_ttl);
    fleet
        .wait_for(
            "the stalled leader to step down",
            Duration::from_secs(30),
            |f| match f.member(&leader).manager.is_leader() {
                false => Ok(()),
                true => Err("still the leader".into()),
            },
        )
        .await;
    assert!(
        Instant::now() <= step_down_by,
        "stepped down {:?} after the stall, lease ends {:?} after it at the latest",
        Instant::now() - stalled_at,
        step_down_by - stalled_at
    );
    fleet
        .wait_for("another leader", Duration::from_secs(30), |f| {
            let others: Vec<_> = f
                .members()
                .iter()
                .filter(|(id, m)| **id != leader && m.manager.is_leader())
                .collect();
            match others.len() {
                1 => Ok(()),
                n => Err(format!("{n} other leaders")),
            }
        })
        .await;
    fleet.member(&leader).store.unstall();
    fleet.settle(Duration::from_secs(120)).await;
    fleet.check_ledger();
    fleet.stop_all().await;
}

/// Waits (paused clock) until `manager` owns `count` partitions.
async fn owns_all(manager: &Manager<MemoryStore>, count: usize) {
    tokio::time::timeout(Duration::from_secs(120), async {
        while manager.assignment().len() < count {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the worker gets every partition");
}

/// A notification hook that panics is caught and reported; the worker goes on.
#[tokio::test(start_paused = true)]
async fn a_panicking_state_hook_is_reported() {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let hooks = Hooks::new()
        .on_state_changed(|_, to| {
            assert_ne!(
                to,
                parti_core::decide::ManagerState::Stable,
                "injected panic"
            );
        })
        .on_error({
            let errors = errors.clone();
            move |e| errors.lock().unwrap().push(e.to_string())
        });
    let source = StaticSource::numbered("p", 8).unwrap();
    let manager = Manager::builder(MemoryStore::new(), source, Sticky::default())
        .hooks(hooks)
        .start()
        .await
        .expect("starts");
    owns_all(&manager, 8).await;
    let errors = errors.lock().unwrap().clone();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("on_state_changed hook panicked")),
        "{errors:?}"
    );
    manager.stop().await.expect("stops");
}

/// A partition source that can be made to fail or to hang.
#[derive(Clone)]
struct FlakySource {
    inner: StaticSource,
    /// 0: answers, 1: fails, 2: never answers.
    mode: Arc<std::sync::atomic::AtomicU8>,
}

impl PartitionSource for FlakySource {
    async fn partitions(
        &self,
    ) -> Result<Vec<parti_strategy::Partition>, parti_core::store::BoxError> {
        match self.mode.load(Ordering::Relaxed) {
            0 => self.inner.partitions().await,
            1 => Err("the partition database is down (injected)".into()),
            _ => std::future::pending().await,
        }
    }
}

/// While the partition source fails or hangs, the leader goes on: a crashed worker's
/// partitions are re-owned within T5 with the last good partition list.
async fn failover_while_the_source(mode: u8) {
    let store = MemoryStore::new();
    let config = Config::default();
    let source = FlakySource {
        inner: StaticSource::numbered("p", 30).unwrap(),
        mode: Arc::default(),
    };
    let mut managers = Vec::new();
    for _ in 0..3 {
        let manager = Manager::builder(store.connect(), source.clone(), Sticky::default())
            .config(config.clone())
            .start()
            .await
            .expect("starts");
        managers.push(manager);
    }
    let owned = |managers: &[Manager<MemoryStore>]| -> usize {
        managers.iter().map(|m| m.assignment().len()).sum()
    };
    tokio::time::timeout(Duration::from_secs(120), async {
        while owned(&managers) < 30 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("every partition owned");
    source.mode.store(mode, Ordering::Relaxed);
    let victim = managers
        .iter()
        .position(|m| !m.is_leader())
        .expect("a follower");
    let crashed = managers.remove(victim);
    let crashed_at = Instant::now();
    crashed.abort().await;
    let t5 = config.heartbeat_ttl + config.emergency_grace + Duration::from_millis(500);
    tokio::time::timeout(t5, async {
        while owned(&managers) < 30 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "{} of 30 partitions owned {t5:?} after the crash",
            owned(&managers)
        )
    });
    assert!(Instant::now() - crashed_at <= t5);
    source.mode.store(0, Ordering::Relaxed);
    for manager in managers {
        manager.stop().await.expect("stops");
    }
}

#[tokio::test(start_paused = true)]
async fn failover_goes_on_while_the_source_fails() {
    failover_while_the_source(1).await;
}

#[tokio::test(start_paused = true)]
async fn failover_goes_on_while_the_source_hangs() {
    failover_while_the_source(2).await;
}

/// A strategy that panics on its first call.
struct PanicsOnce {
    inner: Sticky,
    panics: std::sync::atomic::AtomicBool,
}

impl parti_strategy::Strategy for PanicsOnce {
    fn name(&self) -> &str {
        "panics-once"
    }

    fn assign(
        &self,
        input: &parti_strategy::StrategyInput<'_>,
    ) -> Result<parti_strategy::Assignment, parti_strategy::StrategyError> {
        assert!(
            !self.panics.swap(false, Ordering::Relaxed),
            "an injected panic in the strategy"
        );
        self.inner.assign(input)
    }
}

/// A strategy that panics is a failure to retry: the leader reports it, keeps leading and
/// assigns every partition on the next attempt.
#[tokio::test(start_paused = true)]
async fn a_panicking_strategy_is_retried() {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let hooks = Hooks::new().on_error({
        let errors = errors.clone();
        move |e| errors.lock().unwrap().push(e.to_string())
    });
    let strategy = PanicsOnce {
        inner: Sticky::default(),
        panics: true.into(),
    };
    let source = StaticSource::numbered("p", 8).unwrap();
    let manager = Manager::builder(MemoryStore::new(), source, strategy)
        .hooks(hooks)
        .start()
        .await
        .expect("starts");
    owns_all(&manager, 8).await;
    assert!(manager.is_leader(), "still the leader");
    let errors = errors.lock().unwrap().clone();
    assert!(
        errors.iter().any(|e| e.contains("strategy panicked")),
        "{errors:?}"
    );
    manager.stop().await.expect("stops");
}

/// An outage is reported, not flooded: a worker cut off from the store for 20 s reports the
/// first failure of each kind at once and then a count every few seconds — not the 7–9
/// errors per second its tasks run into — and recovers by itself when the store is back.
#[tokio::test(start_paused = true)]
async fn an_outage_is_reported_not_flooded() {
    let mut fleet = fleet();
    fleet.start(3).await;
    fleet.settle(Duration::from_secs(120)).await;
    let cut = fleet.follower();
    fleet.hooks.errors.lock().unwrap().clear();
    fleet.member(&cut).store.disconnect();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let reported = fleet.hooks.errors.lock().unwrap().clone();
    assert!(!reported.is_empty(), "the outage was reported");
    // Each context — the heartbeat, the id renewal, the record read — reports at most the
    // first failure, then one every 5 s (4 more in 20 s): 15 at most, where it was 106.
    let contexts = 3;
    assert!(
        reported.len() <= contexts * 5,
        "{} reports in 20 s: {reported:#?}",
        reported.len(),
    );
    fleet.member(&cut).store.reconnect();
    fleet.settle(Duration::from_secs(120)).await;
    fleet.check_ledger();
    fleet.stop_all().await;
}

/// Hooks know their manager through the context: the grants of `on_assigned` are owned by
/// the time its future runs (worker id and `owns` from the context, no handle on the
/// manager needed), and what `on_revoked` gets is no longer owned.
#[tokio::test(start_paused = true)]
async fn hooks_know_their_manager_through_the_context() {
    use parti_core::runtime::HookContext;

    #[derive(Default)]
    struct Seen {
        granted_owned: Vec<bool>,
        revoked_owned: Vec<bool>,
        workers: Vec<String>,
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let store = MemoryStore::new();
    let source = StaticSource::numbered("p", 8).unwrap();
    let hooks = |seen: Arc<Mutex<Seen>>| {
        let on_revoke = seen.clone();
        Hooks::new()
            .on_assigned(move |grants, ctx: HookContext| {
                let seen = seen.clone();
                async move {
                    let mut seen = seen.lock().unwrap();
                    seen.workers.push(ctx.worker_id().to_string());
                    for grant in grants {
                        seen.granted_owned
                            .push(ctx.owns(&grant.partition, grant.token));
                    }
                }
            })
            .on_revoked(move |partitions, ctx: HookContext| {
                let owned = ctx.assignment();
                let mut seen = on_revoke.lock().unwrap();
                seen.revoked_owned
                    .extend(partitions.iter().map(|p| owned.contains(p)));
                async {}
            })
    };
    let first = Manager::builder(store.connect(), source.clone(), Sticky::default())
        .hooks(hooks(seen.clone()))
        .start()
        .await
        .unwrap();
    first
        .wait_state(
            parti_core::decide::ManagerState::Stable,
            Duration::from_secs(120),
        )
        .await
        .unwrap();
    let second = Manager::builder(store.connect(), source, Sticky::default())
        .hooks(hooks(seen.clone()))
        .start()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while second.assignment().len() != 4 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert_eq!(
        seen.granted_owned.len(),
        8 + 4,
        "8 to the first, then 4 to the second"
    );
    assert!(
        seen.granted_owned.iter().all(|owned| *owned),
        "grants owned when the hook runs"
    );
    assert_eq!(
        seen.revoked_owned,
        vec![false; 4],
        "revoked ones no longer shown as owned"
    );
    assert_eq!(
        seen.workers,
        vec![
            first.worker_id().to_string(),
            second.worker_id().to_string()
        ]
    );
    first.stop().await.unwrap();
    second.stop().await.unwrap();
}
