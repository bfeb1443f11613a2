//! The ownership ledger: every interval during which a manager owned a partition, built from
//! its hooks — from the call of the assign hook to the end of the revoke hook (its return,
//! or the moment the runtime dropped it after the drain bound) — and closed by hand when a
//! test crashes a manager (a dead process owns nothing).
//!
//! Events are ordered by a sequence number taken under one lock, so two intervals overlap
//! exactly when one began before the other ended, also when they share an instant of the
//! paused clock.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use parti_core::runtime::Hooks;
use parti_core::wire::FencingToken;
use parti_strategy::{PartitionId, WorkerId};
use tokio::time::Instant;

/// Which manager owned: the fleet's label for it (one per start) and, once known, its id.
pub type Owner = usize;

/// One ownership interval.
#[derive(Debug, Clone)]
pub struct Interval {
    /// The partition.
    pub partition: PartitionId,
    /// The manager that owned it.
    pub owner: Owner,
    /// The token it was granted with.
    pub token: FencingToken,
    /// When it began (time and sequence).
    pub from: (Instant, u64),
    /// When it ended (`None`: still owned).
    pub to: Option<(Instant, u64)>,
    /// When its owner, frozen, was first seen not to own it any more (`owns()` false): a
    /// paused process does nothing, so its hold ends there even though its revoke hook
    /// runs only after the thaw.
    pub fenced: Option<(Instant, u64)>,
    /// When its owner was thawed after `fenced`.
    pub thawed: Option<Instant>,
}

impl Interval {
    /// Where its hold ended, for the overlap check (`None`: still held). A frozen owner's
    /// hold ends where it was fenced only if nothing of it ran on after the thaw: the
    /// interval closed at the thaw's instant (the paused clock does not move while the
    /// runtime reacts), or the owner is still frozen.
    fn end(&self) -> Option<(Instant, u64)> {
        let Some(fenced) = self.fenced else {
            return self.to;
        };
        match (self.to, self.thawed) {
            (_, None) => Some(fenced),
            (Some(to), Some(thawed)) if to.0 <= thawed => Some(fenced),
            // Thawed this very instant: the owner has not run yet.
            (None, Some(thawed)) if Instant::now() <= thawed => Some(fenced),
            (to, Some(_)) => to,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    seq: u64,
    intervals: Vec<Interval>,
    /// Open intervals by (partition, owner).
    open: BTreeMap<(PartitionId, Owner), usize>,
    /// The worker ids each owner held (more than one if it lost its id and claimed another).
    ids: BTreeMap<Owner, Vec<WorkerId>>,
    /// Broken rules seen through `owns()`.
    violations: Vec<String>,
}

impl Inner {
    fn tick(&mut self) -> (Instant, u64) {
        self.seq += 1;
        (Instant::now(), self.seq)
    }

    fn close(&mut self, partition: &PartitionId, owner: Owner) {
        if let Some(index) = self.open.remove(&(partition.clone(), owner)) {
            let at = self.tick();
            self.intervals[index].to = Some(at);
        }
    }
}

/// A partition changing owner.
#[derive(Debug, Clone)]
pub struct Handoff {
    /// The partition.
    pub partition: PartitionId,
    /// The owner that released it.
    pub from: Owner,
    /// The owner that got it next.
    pub to: Owner,
    /// When the old owner's interval ended.
    pub released: Instant,
    /// How long nobody owned it.
    pub gap: Duration,
}

/// How the hooks of a fleet's managers behave: how long they take, and whether they panic.
#[derive(Debug, Clone, Default)]
pub struct HookBehaviour {
    /// How long each revoke hook drains.
    pub drain: Duration,
    /// How long each grant hook takes (after the grant is recorded: the partitions are held
    /// from its start).
    pub grant_delay: Duration,
    /// Only this manager's grant hooks take `grant_delay` (`None`: every manager's).
    pub slow_grants_of: Option<Owner>,
    /// How many of the next grant hooks (of any manager sharing this) panic.
    pub grant_panics: Arc<AtomicUsize>,
    /// How many grant hooks started.
    pub grants_started: Arc<AtomicUsize>,
    /// How many grant hooks ran to their end.
    pub grants_finished: Arc<AtomicUsize>,
    /// Every error the managers reported through `on_error`.
    pub errors: Arc<Mutex<Vec<String>>>,
}

/// A shared ledger; clones record into the same one.
#[derive(Debug, Clone, Default)]
pub struct Ledger(Arc<Mutex<Inner>>);

/// Closes its partitions' intervals when dropped: at the end of the revoke hook, whether it
/// returned or was dropped by the runtime.
struct Release {
    ledger: Ledger,
    owner: Owner,
    partitions: Vec<PartitionId>,
}

impl Drop for Release {
    fn drop(&mut self) {
        let mut inner = self.ledger.lock();
        for partition in &self.partitions {
            inner.close(partition, self.owner);
        }
    }
}

impl Ledger {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds hooks recording `owner`'s ownership to `hooks`; the revoke hook takes `drain`
    /// (it may be cut short by the runtime).
    pub fn hooks(&self, hooks: Hooks, owner: Owner, behaviour: &HookBehaviour) -> Hooks {
        let assigned = self.clone();
        let revoked = self.clone();
        let drain = behaviour.drain;
        let grant_delay = match behaviour.slow_grants_of {
            Some(slow) if slow != owner => Duration::ZERO,
            _ => behaviour.grant_delay,
        };
        let grant_panics = behaviour.grant_panics.clone();
        let grants_started = behaviour.grants_started.clone();
        let grants_finished = behaviour.grants_finished.clone();
        let errors = behaviour.errors.clone();
        hooks
            .on_error(move |error| {
                errors
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(error.to_string());
            })
            .on_assigned(move |grants, _ctx| {
                let mut inner = assigned.lock();
                for grant in grants {
                    let from = inner.tick();
                    let index = inner.intervals.len();
                    inner.intervals.push(Interval {
                        partition: grant.partition.clone(),
                        owner,
                        token: grant.token,
                        from,
                        to: None,
                        fenced: None,
                        thawed: None,
                    });
                    if let Some(previous) = inner.open.insert((grant.partition, owner), index) {
                        // Assigned twice without a revoke in between: keep both visible.
                        inner.intervals[previous].to = Some(from);
                    }
                }
                drop(inner);
                grants_started.fetch_add(1, Ordering::Relaxed);
                let panics = grant_panics
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok();
                let grants_finished = grants_finished.clone();
                async move {
                    if !grant_delay.is_zero() {
                        tokio::time::sleep(grant_delay).await;
                    }
                    assert!(!panics, "an injected panic in a grant hook");
                    grants_finished.fetch_add(1, Ordering::Relaxed);
                }
            })
            .on_revoked(move |partitions, _ctx| {
                let release = Release {
                    ledger: revoked.clone(),
                    owner,
                    partitions,
                };
                async move {
                    let _release = release;
                    if !drain.is_zero() {
                        tokio::time::sleep(drain).await;
                    }
                }
            })
    }

    /// Records the worker id `owner` got.
    pub fn started(&self, owner: Owner, id: WorkerId) {
        let mut inner = self.lock();
        let ids = inner.ids.entry(owner).or_default();
        if !ids.contains(&id) {
            ids.push(id);
        }
    }

    /// Ends every open interval of `owner` now (it crashed).
    pub fn crashed(&self, owner: Owner) {
        let mut inner = self.lock();
        let open: Vec<PartitionId> = inner
            .open
            .keys()
            .filter(|(_, o)| *o == owner)
            .map(|(p, _)| p.clone())
            .collect();
        for partition in open {
            inner.close(&partition, owner);
        }
    }

    /// What `owns()` of `owner` said of `partition` just now, `frozen` telling whether its
    /// tasks are paused. A frozen owner's hold of its open interval ends when `owns()` turns
    /// false (see [`Interval`]'s `fenced`); once it has, `owns()` true again for that
    /// interval (no new grant in between) is a violation.
    ///
    /// `since` is [`Ledger::now`] taken before `owns()` was called: an interval that closed
    /// after it was still open when `owns()` looked (on a multi-threaded runtime the revoke
    /// hook can start and end between the call and this record).
    pub fn owns_seen(
        &self,
        owner: Owner,
        partition: &PartitionId,
        owns: bool,
        frozen: bool,
        since: u64,
    ) {
        let mut inner = self.lock();
        let Some(&index) = inner.open.get(&(partition.clone(), owner)) else {
            let closed_since = inner.intervals.iter().any(|i| {
                i.owner == owner && i.partition == *partition && i.to.is_some_and(|to| to.1 > since)
            });
            if owns && !closed_since {
                inner.violations.push(format!(
                    "{partition}: owns() true for owner {owner} outside its grant and revoke hooks"
                ));
            }
            return;
        };
        match (owns, inner.intervals[index].fenced) {
            (false, None) if frozen => {
                let at = inner.tick();
                inner.intervals[index].fenced = Some(at);
            }
            (true, Some(fenced)) => {
                let violation = format!(
                    "{partition}: owns() true again for owner {owner} after it was fenced at #{}",
                    fenced.1
                );
                inner.violations.push(violation);
            }
            _ => {}
        }
    }

    /// The ledger's sequence now (to pass to [`Ledger::owns_seen`]).
    pub fn now(&self) -> u64 {
        self.lock().seq
    }

    /// A frozen owner looked at through `owns()`: every open interval of it that is not in
    /// its assignment any more (a revoke hook under way) is fenced too — `owns()` is false
    /// for it already.
    pub fn frozen_without(&self, owner: Owner, assigned: &[PartitionId]) {
        let mut inner = self.lock();
        let open: Vec<usize> = inner
            .open
            .iter()
            .filter(|((partition, o), _)| *o == owner && !assigned.contains(partition))
            .map(|(_, index)| *index)
            .collect();
        for index in open {
            if inner.intervals[index].fenced.is_none() {
                let at = inner.tick();
                inner.intervals[index].fenced = Some(at);
            }
        }
    }

    /// `owner` is frozen now. Thawed at this same instant, it has not run in between: its
    /// fenced intervals still open stay fenced.
    pub fn frozen(&self, owner: Owner) {
        let mut inner = self.lock();
        let now = Instant::now();
        let open: Vec<usize> = inner
            .open
            .iter()
            .filter(|((_, o), _)| *o == owner)
            .map(|(_, index)| *index)
            .collect();
        for index in open {
            let interval = &mut inner.intervals[index];
            if interval.thawed == Some(now) {
                interval.thawed = None;
            }
        }
    }

    /// `owner` was thawed now: its fenced intervals must close at this instant.
    pub fn thawed(&self, owner: Owner) {
        let mut inner = self.lock();
        let now = Instant::now();
        for interval in &mut inner.intervals {
            if interval.owner == owner && interval.fenced.is_some() && interval.thawed.is_none() {
                interval.thawed = Some(now);
            }
        }
    }

    /// Records a broken rule seen from outside the hooks.
    pub fn violation(&self, violation: String) {
        self.lock().violations.push(violation);
    }

    /// Every interval so far.
    pub fn intervals(&self) -> Vec<Interval> {
        self.lock().intervals.clone()
    }

    /// The owners of each partition now (open intervals).
    pub fn owners_now(&self) -> BTreeMap<PartitionId, Vec<Owner>> {
        let inner = self.lock();
        let mut owners: BTreeMap<PartitionId, Vec<Owner>> = BTreeMap::new();
        for (partition, owner) in inner.open.keys() {
            owners.entry(partition.clone()).or_default().push(*owner);
        }
        owners
    }

    /// The overlapping intervals of one partition and the rules broken through `owns()`
    /// (should be none), described.
    pub fn overlaps(&self) -> Vec<String> {
        let inner = self.lock();
        let mut found = inner.violations.clone();
        for (partition, intervals) in by_partition(&inner.intervals) {
            for (i, a) in intervals.iter().enumerate() {
                for b in &intervals[i + 1..] {
                    let a_end = a.end().map_or(u64::MAX, |t| t.1);
                    let b_end = b.end().map_or(u64::MAX, |t| t.1);
                    if a.from.1 < b_end && b.from.1 < a_end {
                        found.push(format!(
                            "{partition}: owner {} ({:?}) from #{} to {:?} overlaps owner {} ({:?}) from #{} to {:?}",
                            a.owner,
                            inner.ids.get(&a.owner),
                            a.from.1,
                            a.end().map(|t| t.1),
                            b.owner,
                            inner.ids.get(&b.owner),
                            b.from.1,
                            b.end().map(|t| t.1),
                        ));
                    }
                }
            }
        }
        found
    }

    /// Token order violations (should be none): along each partition's intervals tokens
    /// never go down, and go strictly up when the owner changes — no two processes ever
    /// hold a grant of one partition with the same token (the same process taking a
    /// partition back after fencing itself within one heartbeat session keeps its grant).
    pub fn token_violations(&self) -> Vec<String> {
        let inner = self.lock();
        let mut found = Vec::new();
        for (partition, intervals) in by_partition(&inner.intervals) {
            for pair in intervals.windows(2) {
                let (a, b) = (&pair[0], &pair[1]);
                if b.token < a.token || (a.owner != b.owner && b.token == a.token) {
                    found.push(format!(
                        "{partition}: token {:?} of owner {} then {:?} of owner {}",
                        a.token, a.owner, b.token, b.owner
                    ));
                }
            }
        }
        found
    }

    /// Grants held by two processes with the same token (should be none): each as
    /// `partition: token, owners`.
    pub fn shared_tokens(&self) -> Vec<String> {
        let inner = self.lock();
        let mut holders: BTreeMap<(&PartitionId, FencingToken), BTreeSet<Owner>> = BTreeMap::new();
        for interval in &inner.intervals {
            holders
                .entry((&interval.partition, interval.token))
                .or_default()
                .insert(interval.owner);
        }
        holders
            .into_iter()
            .filter(|(_, owners)| owners.len() > 1)
            .map(|((partition, token), owners)| format!("{partition}: {token:?}, {owners:?}"))
            .collect()
    }

    /// Every change of owner of a partition: the old owner's interval end, the new owner's
    /// start, and the time between, when nobody owned it.
    pub fn handoffs(&self) -> Vec<Handoff> {
        let inner = self.lock();
        let mut handoffs = Vec::new();
        for (partition, intervals) in by_partition(&inner.intervals) {
            for pair in intervals.windows(2) {
                let (old, new) = (pair[0], pair[1]);
                if let (Some(released), true) = (old.to, old.owner != new.owner) {
                    handoffs.push(Handoff {
                        partition: partition.clone(),
                        from: old.owner,
                        to: new.owner,
                        released: released.0,
                        gap: new.from.0.saturating_duration_since(released.0),
                    });
                }
            }
        }
        handoffs
    }
}

/// Intervals grouped by partition, each group ordered by start.
fn by_partition(intervals: &[Interval]) -> BTreeMap<&PartitionId, Vec<&Interval>> {
    let mut groups: BTreeMap<&PartitionId, Vec<&Interval>> = BTreeMap::new();
    for interval in intervals {
        groups
            .entry(&interval.partition)
            .or_default()
            .push(interval);
    }
    for group in groups.values_mut() {
        group.sort_by_key(|i| i.from.1);
    }
    groups
}
