use std::collections::{BTreeMap, BTreeSet};

use parti_strategy::{Assignment, PartitionId, WorkerId};
use proptest::prelude::*;

use super::{Beat, Handoff, ListingTicket, RecordChange, StoredRecord};

fn w(n: usize) -> WorkerId {
    WorkerId::new(format!("worker-{n}"))
}

fn p(n: usize) -> PartitionId {
    PartitionId::new(format!("p{n}")).unwrap()
}

fn set(ns: &[usize]) -> BTreeSet<PartitionId> {
    ns.iter().map(|&n| p(n)).collect()
}

/// Worker `n`'s heartbeat session.
fn session(n: usize) -> u64 {
    n as u64 + 1
}

/// A planner that has seen a heartbeat (reporting nothing applied) of workers 0 to 7, as a
/// leader has before it plans.
fn fleet() -> Handoff {
    let mut handoff = Handoff::new();
    for n in 0..8 {
        handoff.heartbeat(&w(n), &beat_of(n, 0));
    }
    handoff
}

/// A record read from the store, written for worker `n`'s session.
fn rec(worker: usize, version: u64, partitions: BTreeSet<PartitionId>) -> StoredRecord {
    StoredRecord {
        worker: w(worker),
        version,
        holder: Some(session(worker)),
        partitions,
    }
}

/// A heartbeat of worker `n`'s session, reporting `applied`.
fn beat_of(n: usize, applied: u64) -> Beat {
    Beat {
        holder: session(n),
        revision: 0,
        applied,
        term_seen: 0,
        confirms_session: true,
    }
}

/// The leader sees worker `n`'s heartbeat reporting `applied`.
fn beat(handoff: &mut Handoff, n: usize, applied: u64) -> bool {
    handoff.heartbeat(&w(n), &beat_of(n, applied))
}

/// A listing's heartbeats: each worker and the version it reports.
fn beats(reports: &[(usize, u64)]) -> BTreeMap<WorkerId, Beat> {
    reports
        .iter()
        .map(|&(n, applied)| (w(n), beat_of(n, applied)))
        .collect()
}

fn target(pairs: &[(usize, usize)]) -> Assignment {
    let mut assignment = Assignment::new();
    for &(partition, worker) in pairs {
        assignment.assign(p(partition), w(worker));
    }
    assignment
}

fn commit_all(handoff: &mut Handoff, step: &super::Step, version: u64) {
    for (worker, change) in step {
        handoff.committed(worker, change, version);
    }
}

#[test]
fn cold_start_grants_everything_at_once() {
    let mut handoff = fleet();
    handoff.plan([w(0), w(1)].into(), &target(&[(0, 0), (1, 1), (2, 0)]));
    let step = handoff.step();
    assert_eq!(step[&w(0)], RecordChange::Write(set(&[0, 2])));
    assert_eq!(step[&w(1)], RecordChange::Write(set(&[1])));
    commit_all(&mut handoff, &step, 1);
    assert!(handoff.is_settled());
    assert!(handoff.step().is_empty());
}

#[test]
fn unmoved_partitions_are_never_revoked() {
    let mut handoff = fleet();
    handoff.plan([w(0)].into(), &target(&[(0, 0), (1, 0)]));
    let step = handoff.step();
    commit_all(&mut handoff, &step, 1);
    // p1 moves to the new worker, p0 stays.
    handoff.plan([w(0), w(1)].into(), &target(&[(0, 0), (1, 1)]));
    let step = handoff.step();
    assert_eq!(step[&w(0)], RecordChange::Write(set(&[0])));
    assert_eq!(step[&w(1)], RecordChange::Write(set(&[])));
    commit_all(&mut handoff, &step, 2);
    assert_eq!(handoff.waiting_for().collect::<Vec<_>>(), [&w(0)]);
    assert!(handoff.step().is_empty());
    // A stale report (version 1) confirms nothing.
    assert!(!beat(&mut handoff, 0, 1));
    assert!(beat(&mut handoff, 0, 2));
    let step = handoff.step();
    assert_eq!(step.len(), 1);
    assert_eq!(step[&w(1)], RecordChange::Write(set(&[1])));
    commit_all(&mut handoff, &step, 3);
    assert!(handoff.is_settled());
}

#[test]
fn absence_counts_only_in_a_listing_started_after_the_revoke() {
    let mut handoff = fleet();
    handoff.plan([w(0)].into(), &target(&[(0, 0)]));
    let step = handoff.step();
    commit_all(&mut handoff, &step, 1);
    let early = handoff.listing_ticket();
    handoff.plan([w(1)].into(), &target(&[(0, 1)]));
    let step = handoff.step();
    assert_eq!(step[&w(0)], RecordChange::Write(set(&[])));
    commit_all(&mut handoff, &step, 2);
    let present = beats(&[(1, 2)]);
    assert!(
        !handoff.listed(early, &present, &BTreeSet::new()),
        "listing began before the revoke"
    );
    assert!(handoff.step().is_empty());
    let late = handoff.listing_ticket();
    assert!(handoff.listed(late, &present, &BTreeSet::new()));
    let step = handoff.step();
    assert_eq!(step[&w(1)], RecordChange::Write(set(&[0])));
    // The departed worker's emptied, confirmed record is deleted in the same step.
    assert_eq!(step[&w(0)], RecordChange::Delete);
    commit_all(&mut handoff, &step, 3);
    assert!(handoff.is_settled());
}

#[test]
fn a_new_leader_grants_nothing_until_every_holder_is_confirmed() {
    // w0's record was emptied by the previous leader; w0 may not have applied it yet.
    let mut handoff = Handoff::resume([rec(0, 5, set(&[])), rec(1, 4, set(&[1]))]);
    handoff.plan([w(0), w(1)].into(), &target(&[(0, 1), (1, 1)]));
    assert!(handoff.step().is_empty());
    // w1 confirmed; w0 still unknown: p0 must wait.
    assert!(beat(&mut handoff, 1, 4));
    assert!(handoff.step().is_empty());
    assert!(beat(&mut handoff, 0, 5));
    let step = handoff.step();
    assert_eq!(step[&w(1)], RecordChange::Write(set(&[0, 1])));
}

#[test]
fn rewrite_all_writes_unchanged_records_once() {
    let mut handoff = Handoff::resume([rec(0, 3, set(&[0]))]);
    handoff.listed(
        handoff.listing_ticket(),
        &beats(&[(0, 3)]),
        &BTreeSet::new(),
    );
    handoff.plan([w(0)].into(), &target(&[(0, 0)]));
    handoff.rewrite_all();
    let step = handoff.step();
    assert_eq!(step[&w(0)], RecordChange::Write(set(&[0])));
    commit_all(&mut handoff, &step, 4);
    assert!(handoff.step().is_empty());
    assert!(handoff.is_settled());
}

#[test]
fn a_failed_write_keeps_the_grant_counted_as_held() {
    let mut handoff = fleet();
    handoff.plan([w(0)].into(), &target(&[(0, 0)]));
    let step = handoff.step();
    assert_eq!(step[&w(0)], RecordChange::Write(set(&[0])));
    // The write timed out; it may have landed. The store shows it did.
    handoff.reconcile([rec(0, 1, set(&[0]))]);
    // Now p0 should move to w1: it may only once w0 let go.
    handoff.plan([w(1)].into(), &target(&[(0, 1)]));
    let step = handoff.step();
    assert_eq!(step[&w(0)], RecordChange::Write(set(&[])));
    assert_eq!(step[&w(1)], RecordChange::Write(set(&[])));
}

#[test]
fn a_record_written_by_someone_else_makes_its_worker_unknown() {
    let mut handoff = fleet();
    handoff.plan([w(0)].into(), &target(&[(0, 0)]));
    let step = handoff.step();
    commit_all(&mut handoff, &step, 1);
    handoff.reconcile([rec(0, 1, set(&[0])), rec(7, 9, set(&[3]))]);
    handoff.plan([w(0)].into(), &target(&[(0, 0), (4, 0)]));
    // w7 may hold anything: p4 waits.
    assert!(!handoff.step().contains_key(&w(0)));
    assert!(handoff.listed(
        handoff.listing_ticket(),
        &beats(&[(0, 1)]),
        &BTreeSet::new()
    ));
    let step = handoff.step();
    assert_eq!(step[&w(0)], RecordChange::Write(set(&[0, 4])));
    assert_eq!(step[&w(7)], RecordChange::Write(set(&[])));
}

#[test]
fn listing_tickets_order_with_writes() {
    let mut handoff = fleet();
    let before = handoff.listing_ticket();
    handoff.plan([w(0)].into(), &target(&[(0, 0)]));
    let step = handoff.step();
    commit_all(&mut handoff, &step, 1);
    assert!(handoff.listing_ticket() > before);
    assert_eq!(before, ListingTicket(0));
}

// ---- model-based property: a world of workers that apply records late, die, come back ----

const WORKERS: usize = 4;
const PARTITIONS: usize = 6;

#[derive(Debug, Clone)]
enum Action {
    /// The leader plans: members by bit mask, owner of each partition (index into members).
    Plan(u8, Vec<usize>),
    /// The leader takes a step; writes after `fail_at` fail (`applied`: the failing one
    /// landed anyway). The writes land before the leader hears of them: `meanwhile`, these
    /// workers apply their latest record (if `true`) and the leader sees their heartbeats
    /// (the calculator goes on observing while its write is in flight).
    Step {
        fail_at: Option<usize>,
        applied: bool,
        meanwhile: Vec<(usize, bool)>,
    },
    /// Worker applies its latest record (or the oldest unapplied one if `lag`).
    Apply(usize, bool),
    /// The leader sees worker's heartbeat.
    Beat(usize),
    /// A listing starts (snapshot now) ...
    BeginListing,
    /// ... and its result reaches the leader.
    EndListing,
    /// Worker's lease lapses: it fences (holds nothing) and its heartbeat vanishes.
    Fence(usize),
    /// Worker comes back.
    Revive(usize),
    /// Worker's process is replaced by a new one on the same id (its lease lapsed and its
    /// heartbeat expired first: it holds nothing; the new process must not apply records
    /// written for the old one). Its session is numbered by the bucket's revision, raised
    /// above the session its record was written for; if `raised`, far above (a record
    /// of before a loss of the heartbeat bucket): a later process whose record was deleted
    /// meanwhile then gets a lower-numbered session.
    Replace(usize, bool),
    /// The leader changes.
    NewLeader,
    /// The records' bucket is lost: every record vanishes (a worker reading its record
    /// finds none). The leader reads the records back, or (`true`) a new leader starts
    /// from the empty bucket.
    LoseRecords(bool),
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        2 => (1u8..16, prop::collection::vec(0usize..WORKERS, PARTITIONS))
            .prop_map(|(mask, owners)| Action::Plan(mask, owners)),
        4 => (
            prop::option::of(0usize..3),
            any::<bool>(),
            prop::collection::vec((0..WORKERS, any::<bool>()), 0..3),
        )
            .prop_map(|(fail_at, applied, meanwhile)| Action::Step {
                fail_at,
                applied,
                meanwhile,
            }),
        5 => (0..WORKERS, any::<bool>()).prop_map(|(w, lag)| Action::Apply(w, lag)),
        4 => (0..WORKERS).prop_map(Action::Beat),
        1 => Just(Action::BeginListing),
        2 => Just(Action::EndListing),
        1 => (0..WORKERS).prop_map(Action::Fence),
        1 => (0..WORKERS).prop_map(Action::Revive),
        1 => (0..WORKERS, prop::bool::weighted(0.3)).prop_map(|(w, raised)| Action::Replace(w, raised)),
        1 => Just(Action::NewLeader),
        1 => any::<bool>().prop_map(Action::LoseRecords),
    ]
}

#[derive(Debug, Default, Clone)]
struct ModelWorker {
    alive: bool,
    /// Its heartbeat session (a replacement begins a new one).
    session: u64,
    /// The revision of its latest heartbeat write.
    revision: u64,
    /// Must re-read the latest record before holding anything (after fencing).
    resync: bool,
    applied: u64,
    held: BTreeSet<PartitionId>,
}

/// One version of a record: its holder and grants; `None` content is a deletion.
type RecordVersion = (u64, Option<(Option<u64>, BTreeSet<PartitionId>)>);

struct World {
    handoff: Handoff,
    /// Every version of every record: `None` content is a deletion.
    history: BTreeMap<WorkerId, Vec<RecordVersion>>,
    workers: Vec<ModelWorker>,
    version: u64,
    /// Records up to this version were written under an earlier leader's term: a worker
    /// applies one only if it grants nothing new (a grant needs the current term).
    earlier_terms: u64,
    /// The heartbeat bucket's revision: a new session is named by it.
    revision: u64,
    listing: Option<(ListingTicket, BTreeMap<WorkerId, Beat>)>,
}

impl World {
    fn new() -> Self {
        Self {
            handoff: fleet(),
            history: BTreeMap::new(),
            earlier_terms: 0,
            workers: (0..WORKERS)
                .map(|i| ModelWorker {
                    alive: true,
                    session: session(i),
                    revision: session(i),
                    ..ModelWorker::default()
                })
                .collect(),
            version: 0,
            revision: WORKERS as u64,
            listing: None,
        }
    }

    /// Worker `i`'s heartbeat.
    fn heartbeat(&self, i: usize) -> Beat {
        Beat {
            holder: self.workers[i].session,
            revision: self.workers[i].revision,
            applied: self.workers[i].applied,
            term_seen: 0,
            confirms_session: true,
        }
    }

    fn records(&self) -> Vec<StoredRecord> {
        self.history
            .iter()
            .filter_map(|(worker, versions)| {
                let (version, content) = versions.last()?;
                let (holder, partitions) = content.clone()?;
                Some(StoredRecord {
                    worker: worker.clone(),
                    version: *version,
                    holder,
                    partitions,
                })
            })
            .collect()
    }

    fn present(&self) -> BTreeMap<WorkerId, Beat> {
        (0..WORKERS)
            .filter(|&i| self.workers[i].alive)
            .map(|i| (w(i), self.heartbeat(i)))
            .collect()
    }

    fn write(&mut self, worker: &WorkerId, change: &RecordChange, version: u64, holder: u64) {
        let content = match change {
            RecordChange::Write(set) => Some((Some(holder), set.clone())),
            RecordChange::Delete => None,
        };
        self.history
            .entry(worker.clone())
            .or_default()
            .push((version, content));
    }

    fn run(&mut self, action: Action) {
        match action {
            Action::Plan(mask, owners) => {
                let members: Vec<WorkerId> = (0..WORKERS)
                    .filter(|i| mask & (1 << i) != 0)
                    .map(w)
                    .collect();
                let mut next = Assignment::new();
                for (partition, owner) in owners.iter().enumerate() {
                    next.assign(p(partition), members[owner % members.len()].clone());
                }
                self.handoff.plan(members.into_iter().collect(), &next);
            }
            Action::Step {
                fail_at,
                applied,
                meanwhile,
            } => {
                // Like the shell: the next version is above every record and every report.
                let reported = self.workers.iter().map(|w| w.applied).max().unwrap_or(0);
                self.version = self.version.max(reported) + 1;
                let version = self.version;
                let step = self.handoff.step();
                // Like the shell: each record is written for the process the planner names.
                let holders: Vec<u64> = step
                    .keys()
                    .map(|worker| self.handoff.holder(worker))
                    .collect();
                // The writes land in the store first ...
                let mut landed = 0;
                for (i, (worker, change)) in step.iter().enumerate() {
                    if fail_at == Some(i) {
                        if applied {
                            self.write(worker, change, version, holders[i]);
                        }
                        break;
                    }
                    self.write(worker, change, version, holders[i]);
                    landed += 1;
                }
                // ... workers may read them and heartbeats reach the leader ...
                for (i, apply) in meanwhile {
                    if apply {
                        self.run(Action::Apply(i, false));
                    }
                    self.run(Action::Beat(i));
                }
                // ... and then the leader hears how the writes went.
                for (worker, change) in step.iter().take(landed) {
                    self.handoff.committed(worker, change, version);
                }
                if fail_at.is_some_and(|at| at < step.len()) {
                    let records = self.records();
                    self.handoff.reconcile(records);
                }
            }
            Action::Apply(i, lag) => {
                let worker = &mut self.workers[i];
                let me = worker.session;
                if !worker.alive {
                    return;
                }
                let versions = self.history.get(&w(i)).cloned().unwrap_or_default();
                // A record of an earlier term that grants something new is not applied (a
                // grant needs the current term): the worker goes on to the next.
                let earlier_terms = self.earlier_terms;
                let newer: Vec<_> = versions
                    .iter()
                    .filter(|(version, _)| worker.resync || *version > worker.applied)
                    .filter(|(version, content)| {
                        *version > earlier_terms
                            || content
                                .as_ref()
                                .is_none_or(|(_, content)| content.is_subset(&worker.held))
                    })
                    .collect();
                let pick = if lag && !worker.resync {
                    newer.first()
                } else {
                    newer.last()
                };
                if let Some((version, content)) = pick {
                    worker.resync = false;
                    match content {
                        Some((holder, content)) if *holder == Some(me) => {
                            worker.held = content.clone();
                            worker.applied = *version;
                        }
                        // A deleted record, or one written for another process: nothing
                        // held, no version to report, and only fresh (latest) reads from
                        // now on.
                        _ => {
                            worker.held.clear();
                            worker.resync = true;
                        }
                    }
                }
            }
            Action::Beat(i) => {
                if self.workers[i].alive {
                    // A heartbeat write, seen at once.
                    self.revision += 1;
                    self.workers[i].revision = self.revision;
                    let beat = self.heartbeat(i);
                    self.handoff.heartbeat(&w(i), &beat);
                }
            }
            Action::BeginListing => {
                let ticket = self.handoff.listing_ticket();
                self.listing = Some((ticket, self.present()));
            }
            Action::EndListing => {
                if let Some((ticket, present)) = self.listing.take() {
                    self.handoff.listed(ticket, &present, &BTreeSet::new());
                }
            }
            Action::Fence(i) => {
                let worker = &mut self.workers[i];
                worker.alive = false;
                worker.held.clear();
            }
            Action::Revive(i) => {
                let worker = &mut self.workers[i];
                if !worker.alive {
                    worker.alive = true;
                    worker.resync = true;
                }
            }
            Action::Replace(i, raised) => {
                self.revision += 1;
                // Like the heartbeat task: above the session its record was written for.
                let recorded = self
                    .history
                    .get(&w(i))
                    .and_then(|versions| versions.last())
                    .and_then(|(_, content)| content.as_ref())
                    .and_then(|(holder, _)| *holder)
                    .unwrap_or(0);
                let floor = recorded + 1 + if raised { 1_000 } else { 0 };
                let worker = &mut self.workers[i];
                worker.session = self.revision.max(floor);
                worker.revision = self.revision;
                worker.alive = true;
                worker.resync = true;
                worker.applied = 0;
                worker.held.clear();
            }
            Action::NewLeader => self.new_leader(),
            Action::LoseRecords(new_leader) => {
                self.version += 1;
                for versions in self.history.values_mut() {
                    if new_leader {
                        // A record of an earlier term grants nothing (a worker checks the
                        // term before it applies a grant): a lagging watch cannot bring
                        // one back under the new leader.
                        versions.clear();
                    }
                    versions.push((self.version, None));
                }
                if new_leader {
                    self.new_leader();
                } else {
                    self.handoff.reconcile(self.records());
                }
            }
        }
    }

    /// A new leader reads the records and, like the calculator, lists the heartbeats
    /// before it writes anything, then stamps every record with its term.
    fn new_leader(&mut self) {
        self.handoff = Handoff::resume(self.records());
        self.earlier_terms = self.version;
        self.listing = None;
        self.run(Action::BeginListing);
        self.run(Action::EndListing);
        self.handoff.rewrite_all();
    }

    fn assert_exclusive(&self) -> Result<(), TestCaseError> {
        let mut owner: BTreeMap<&PartitionId, usize> = BTreeMap::new();
        for (i, worker) in self.workers.iter().enumerate() {
            for partition in &worker.held {
                if let Some(other) = owner.insert(partition, i) {
                    return Err(TestCaseError::fail(format!(
                        "{partition} held by worker-{other} and worker-{i}"
                    )));
                }
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the order of writes, applies, reports, listings, fences and leader changes,
    /// no partition is ever held by two workers — and once everyone is back and the messages
    /// flow, the records reach the target and every worker holds its part of it.
    #[test]
    fn no_partition_is_ever_held_twice_and_the_target_is_reached(
        actions in prop::collection::vec(action(), 1..120),
        last_plan in (1u8..16, prop::collection::vec(0usize..WORKERS, PARTITIONS)),
    ) {
        let mut world = World::new();
        world.run(Action::Plan(0b1111, vec![0; PARTITIONS]));
        for action in actions {
            world.run(action);
            world.assert_exclusive()?;
        }
        for i in 0..WORKERS {
            world.run(Action::Revive(i));
        }
        world.run(Action::Plan(last_plan.0, last_plan.1));
        for _ in 0..6 {
            world.run(Action::Step {
                fail_at: None,
                applied: false,
                meanwhile: Vec::new(),
            });
            for i in 0..WORKERS {
                world.run(Action::Apply(i, false));
                world.assert_exclusive()?;
                world.run(Action::Beat(i));
            }
            world.run(Action::BeginListing);
            world.run(Action::EndListing);
        }
        prop_assert!(world.handoff.is_settled(), "not settled: {:?}", world.handoff);
        let records = world.handoff.records();
        for (i, worker) in world.workers.iter().enumerate() {
            let expected: BTreeSet<PartitionId> =
                records.partitions_of(&w(i)).into_iter().collect();
            prop_assert_eq!(&worker.held, &expected, "worker-{}", i);
        }
        let held: usize = world.workers.iter().map(|w| w.held.len()).sum();
        prop_assert_eq!(held, PARTITIONS);
    }
}

/// After a loss of the heartbeat bucket a later session can carry a lower number: the
/// sessions remembered as ended are the most recent ones, not the highest, so a record read
/// back for a recently ended session still counts as of before.
#[test]
fn the_most_recently_ended_sessions_are_remembered_whatever_their_numbers() {
    let mut handoff = Handoff::new();
    let worker = w(0);
    let mut revision = 0;
    let mut seen = |handoff: &mut Handoff, session: u64| {
        revision += 1;
        let beat = Beat {
            holder: session,
            revision,
            applied: 0,
            term_seen: 0,
            confirms_session: true,
        };
        handoff.heartbeat(&worker, &beat);
    };
    // Eight sessions end one after the other, then 900 (numbered above the current one) ends.
    for session in 1000..1008 {
        seen(&mut handoff, session);
    }
    seen(&mut handoff, 900);
    seen(&mut handoff, 50);
    // A record for 900 read back: of before, so the next record is for the current session.
    handoff.reconcile([StoredRecord {
        worker: w(0),
        version: 3,
        holder: Some(900),
        partitions: BTreeSet::new(),
    }]);
    assert_eq!(handoff.holder(&w(0)), 50);
}

/// The heartbeat bucket's loss found late (through a handle of the lost bucket, say, long
/// after every worker moved to the new one): workers still on the sessions their records
/// were written for keep their partitions — nothing is revoked, even while absence proves
/// nothing.
#[test]
fn workers_on_their_records_sessions_keep_their_partitions_after_a_heartbeat_loss() {
    let mut handoff = Handoff::resume([rec(0, 3, set(&[0])), rec(1, 3, set(&[1]))]);
    handoff.heartbeats_lost();
    handoff.listed(
        handoff.listing_ticket(),
        &beats(&[(0, 3), (1, 3)]),
        &BTreeSet::new(),
    );
    handoff.plan([w(0), w(1)].into(), &target(&[(0, 0), (1, 1)]));
    handoff.rewrite_all();
    assert_eq!(handoff.holder(&w(0)), session(0));
    let step = handoff.step();
    assert_eq!(step[&w(0)], RecordChange::Write(set(&[0])));
    assert_eq!(step[&w(1)], RecordChange::Write(set(&[1])));
    commit_all(&mut handoff, &step, 4);
    assert!(handoff.step().is_empty());
    // Before any listing, too: the record's session is whom a record is written for.
    let mut unlisted = Handoff::resume([rec(0, 3, set(&[0]))]);
    unlisted.heartbeats_lost();
    unlisted.plan([w(0)].into(), &target(&[(0, 0)]));
    unlisted.rewrite_all();
    assert_eq!(unlisted.holder(&w(0)), session(0));
    assert_eq!(unlisted.step()[&w(0)], RecordChange::Write(set(&[0])));
}

/// After the heartbeat bucket's loss a worker on a new session (numbered above its record's)
/// gets an emptied record while absence proves nothing — its old session may still hold —
/// and its partitions back once every lease of before has ended.
/// With two heartbeat buckets, a later session seen in one bucket only (the earlier one
/// may live on in the other) shows nothing about the earlier one — neither by watch nor by
/// listing — until both buckets hold it.
#[test]
fn a_beat_that_confirms_no_session_ends_none() {
    let mut handoff = Handoff::resume([rec(0, 3, set(&[0]))]);
    let later = Beat {
        holder: session(0) + 1,
        confirms_session: false,
        ..beat_of(0, 0)
    };
    assert!(!handoff.heartbeat(&w(0), &later));
    assert_eq!(handoff.holder(&w(0)), session(0));
    let listing: BTreeMap<WorkerId, Beat> = [(w(0), later)].into();
    handoff.listed(handoff.listing_ticket(), &listing, &BTreeSet::new());
    assert_eq!(
        handoff.holder(&w(0)),
        session(0),
        "the record's session goes on"
    );
    let confirmed = Beat {
        confirms_session: true,
        ..later
    };
    handoff.heartbeat(&w(0), &confirmed);
    assert_eq!(handoff.holder(&w(0)), session(0) + 1);
}

#[test]
fn a_new_session_after_a_heartbeat_loss_gets_nothing_until_it_is_seen_again() {
    let mut handoff = Handoff::resume([rec(0, 3, set(&[0]))]);
    handoff.heartbeats_lost();
    let new_session = Beat {
        holder: session(0) + 1,
        ..beat_of(0, 3)
    };
    let listing: BTreeMap<WorkerId, Beat> = [(w(0), new_session)].into();
    handoff.listed(handoff.listing_ticket(), &listing, &BTreeSet::new());
    handoff.plan([w(0)].into(), &target(&[(0, 0)]));
    let step = handoff.step();
    assert_eq!(step[&w(0)], RecordChange::Write(set(&[])));
    assert_eq!(handoff.holder(&w(0)), session(0) + 1);
    commit_all(&mut handoff, &step, 4);
    handoff.see_again();
    let applied = Beat {
        applied: 4,
        ..new_session
    };
    handoff.listed(
        handoff.listing_ticket(),
        &[(w(0), applied)].into(),
        &BTreeSet::new(),
    );
    assert_eq!(handoff.step()[&w(0)], RecordChange::Write(set(&[0])));
}
