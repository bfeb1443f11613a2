//! The calculator's rules, one test each, and a property test: whatever the answers and
//! their timing, it never has two calls in flight, every call has a deadline, and it never
//! writes between a failed write and the read-back.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use parti_strategy::{Assignment, Partition, PartitionId, WorkerId};
use proptest::prelude::*;

use super::*;

const S: Duration = Duration::from_secs(1);

fn timings() -> CalculatorTimings {
    CalculatorTimings {
        poll_interval: S / 2,
        backstop_interval: 30 * S,
        two_heartbeats: false,
        call_timeout: 3 * S,
        heartbeat_ttl: 3 * S,
        retry: S / 2,
        emergency_grace: S,
        restart_ratio: 0.5,
        restart_grace: 4 * S,
        claim_ttl: 10 * S,
        windows: WindowPolicy {
            cold_start_window: 5 * S,
            planned_scale_window: 2 * S,
            cooldown: 2 * S,
        },
    }
}

fn w(n: u32) -> WorkerId {
    WorkerId::new(format!("worker-{n}"))
}

fn partitions(n: usize) -> Vec<Partition> {
    (0..n)
        .map(|i| Partition::from_keys(["p", i.to_string().as_str()]).unwrap())
        .collect()
}

/// Worker `n`'s heartbeat session.
fn session(n: u32) -> u64 {
    u64::from(n) + 1
}

/// A heartbeat of worker `n`'s session reporting `applied`.
fn beat(n: u32, applied: u64) -> Beat {
    Beat {
        holder: session(n),
        revision: 0,
        applied,
        term_seen: 0,
        confirms_session: true,
    }
}

/// A listing with `workers` present, each reporting `applied`.
fn reporting(workers: &[u32], applied: u64) -> BTreeMap<WorkerId, Beat> {
    workers.iter().map(|&n| (w(n), beat(n, applied))).collect()
}

fn present(workers: &[u32]) -> BTreeMap<WorkerId, Beat> {
    reporting(workers, 0)
}

/// The number in a worker id.
fn number(worker: &WorkerId) -> u32 {
    crate::wire::worker_number(worker.as_str()).unwrap()
}

/// A record read from the store, written for worker `n`'s process.
fn stored(n: u32, version: u64, partitions: BTreeSet<PartitionId>) -> StoredRecord {
    StoredRecord {
        worker: w(n),
        version,
        holder: Some(session(n)),
        partitions,
    }
}

/// Round-robin: enough of a strategy to plan with.
fn assign(workers: &[WorkerId], partitions: &[Partition]) -> Assignment {
    partitions
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id().clone(), workers[i % workers.len()].clone()))
        .collect()
}

fn find<T>(actions: &[CalculatorAction], f: impl Fn(&CalculatorAction) -> Option<T>) -> Option<T> {
    actions.iter().find_map(f)
}

fn load_op(a: &[CalculatorAction]) -> Option<OpId> {
    find(a, |a| match a {
        CalculatorAction::Load(op) => Some(*op),
        _ => None,
    })
}

fn list_op(a: &[CalculatorAction]) -> Option<OpId> {
    find(a, |a| match a {
        CalculatorAction::List(op) => Some(*op),
        _ => None,
    })
}

fn write_op(a: &[CalculatorAction]) -> Option<(OpId, Step)> {
    find(a, |a| match a {
        CalculatorAction::Write { op, step, .. } => Some((*op, step.clone())),
        _ => None,
    })
}

fn compute_op(a: &[CalculatorAction]) -> Option<(OpId, RebalanceReason, Vec<WorkerId>, bool)> {
    find(a, |a| match a {
        CalculatorAction::Compute {
            op,
            reason,
            workers,
            source,
            ..
        } => Some((*op, *reason, workers.clone(), *source)),
        _ => None,
    })
}

/// Worker `n`'s heartbeat (reporting nothing applied) is seen by watch.
fn heartbeat_seen(m: &mut CalculatorMachine, n: u32, now: Instant) -> Vec<CalculatorAction> {
    heartbeat_seen_via(m, n, Slot::First, now)
}

/// Worker `n`'s heartbeat (reporting nothing applied) is seen by the watch of `via`'s
/// bucket.
fn heartbeat_seen_via(
    m: &mut CalculatorMachine,
    n: u32,
    via: Slot,
    now: Instant,
) -> Vec<CalculatorAction> {
    let (worker, beat) = (w(n), Some(beat(n, 0)));
    m.handle(CalculatorEvent::Heartbeat { worker, beat, via }, now)
}

/// The claims of `workers` are seen.
fn claim(m: &mut CalculatorMachine, workers: &[u32], now: Instant) {
    for &n in workers {
        let (worker, parked) = (w(n), false);
        m.handle(CalculatorEvent::Claimed { worker, parked }, now);
    }
}

/// A calculator of a fresh fleet: loaded (no records), listed with `workers` present.
fn started(t0: Instant, workers: &[u32]) -> (CalculatorMachine, Vec<CalculatorAction>) {
    let mut m = CalculatorMachine::new(1, timings(), Backoff::new(S / 2, 3 * S, 0), t0);
    let load = load_op(&m.handle(CalculatorEvent::Tick, t0)).expect("loads first");
    claim(&mut m, workers, t0);
    let list = list_op(&m.handle(
        CalculatorEvent::Loaded {
            op: load,
            outcome: Ok(RecordsRead::default()),
        },
        t0,
    ))
    .expect("then lists");
    let actions = m.handle(
        CalculatorEvent::Listed {
            op: list,
            outcome: Ok(present(workers)),
            unreadable: BTreeSet::new(),
            bucket_lost: false,
        },
        t0,
    );
    (m, actions)
}

/// Answers every listing in `actions` with the plan's members present (reporting
/// `version` applied) until the machine asks for something else; returns its actions.
fn lists_answered(
    m: &mut CalculatorMachine,
    now: Instant,
    actions: Vec<CalculatorAction>,
    version: u64,
) -> Vec<CalculatorAction> {
    lists_answered_without(m, now, actions, version, &[])
}

/// [`lists_answered`], with the workers `absent` missing from every listing.
fn lists_answered_without(
    m: &mut CalculatorMachine,
    now: Instant,
    mut actions: Vec<CalculatorAction>,
    version: u64,
    absent: &[WorkerId],
) -> Vec<CalculatorAction> {
    while let Some(op) = list_op(&actions) {
        let live: BTreeMap<WorkerId, Beat> = m
            .members()
            .iter()
            .filter(|w| !absent.contains(w))
            .map(|w| (w.clone(), beat(number(w), version)))
            .collect();
        let mut next = m.handle(
            CalculatorEvent::Listed {
                op,
                outcome: Ok(live),
                unreadable: BTreeSet::new(),
                bucket_lost: false,
            },
            now,
        );
        actions.retain(|a| !matches!(a, CalculatorAction::List(_)));
        actions.append(&mut next);
    }
    actions
}

/// Runs the machine's ticks until `until` or until it asks for a computation or a write
/// (listings are answered with nothing new); returns every action.
fn run_until(
    m: &mut CalculatorMachine,
    now: &mut Instant,
    until: Instant,
) -> Vec<CalculatorAction> {
    run_until_without(m, now, until, &[])
}

/// [`run_until`], with the workers `absent` missing from every listing.
fn run_until_without(
    m: &mut CalculatorMachine,
    now: &mut Instant,
    until: Instant,
    absent: &[WorkerId],
) -> Vec<CalculatorAction> {
    let mut all = Vec::new();
    while let Some(at) = m.next_deadline().filter(|at| *at <= until) {
        *now = at.max(*now);
        let actions = m.handle(CalculatorEvent::Tick, *now);
        all.extend(lists_answered_without(m, *now, actions, 1, absent));
        if all.iter().any(|a| {
            matches!(
                a,
                CalculatorAction::Compute { .. } | CalculatorAction::Write { .. }
            )
        }) {
            break;
        }
    }
    all
}

#[test]
fn a_cold_start_waits_its_window_then_computes() {
    let t0 = Instant::now();
    let (mut m, actions) = started(t0, &[0, 1, 2]);
    assert!(compute_op(&actions).is_none());
    assert_eq!(m.phase(), Lifecycle::Scaling);
    let mut now = t0;
    let actions = run_until(&mut m, &mut now, t0 + 10 * S);
    let (_, reason, workers, source) = compute_op(&actions).expect("a rebalance");
    assert_eq!(reason, RebalanceReason::ColdStart);
    assert_eq!(workers, vec![w(0), w(1), w(2)]);
    assert!(source, "a cold start asks the source");
    assert_eq!(now, t0 + timings().windows.cold_start_window);
}

/// Computes at once from `actions`, answers it with a round-robin plan and writes every
/// step; returns the machine settled.
fn planned(m: &mut CalculatorMachine, now: Instant, actions: Vec<CalculatorAction>, n: usize) {
    let (op, _, workers, _) = compute_op(&actions).expect("a rebalance");
    let actions = computed(m, now, op, &workers, n);
    let mut actions = lists_answered(m, now, actions, 1);
    while let Some((op, step)) = write_op(&actions) {
        let committed = step.into_iter().map(|(w, c)| (w, c, 1)).collect();
        let next = m.handle(
            CalculatorEvent::Written {
                op,
                committed,
                failed: false,
            },
            now,
        );
        actions = lists_answered(m, now, next, 1);
    }
}

/// Answers computation `op` with a round-robin plan of `n` partitions over `workers`.
fn computed(
    m: &mut CalculatorMachine,
    now: Instant,
    op: OpId,
    workers: &[WorkerId],
    n: usize,
) -> Vec<CalculatorAction> {
    let ps = partitions(n);
    m.handle(
        CalculatorEvent::Computed {
            op,
            outcome: Ok(Computed {
                assignment: assign(workers, &ps),
                partitions: ps,
                source_failed: false,
            }),
        },
        now,
    )
}

fn settled_fleet(t0: Instant) -> (CalculatorMachine, Instant) {
    let (mut m, _) = started(t0, &[0, 1, 2]);
    let mut now = t0;
    let actions = run_until(&mut m, &mut now, t0 + 10 * S);
    planned(&mut m, now, actions, 6);
    assert!(m.handoff().is_settled());
    (m, now)
}

/// The instants at which the machine lists heartbeats from `from` to `until`, answering
/// each listing with the plan's members; `beats` says whether worker 0's heartbeat is
/// delivered by the watch at each heartbeat interval (`S / 2` here).
fn listings(
    m: &mut CalculatorMachine,
    from: Instant,
    until: Instant,
    beats: impl Fn(Instant) -> bool,
) -> Vec<Instant> {
    listings_via(m, from, until, beats, &[Slot::First])
}

/// [`listings`] with the heartbeat delivered by the watches of `via`'s buckets.
fn listings_via(
    m: &mut CalculatorMachine,
    from: Instant,
    until: Instant,
    beats: impl Fn(Instant) -> bool,
    via: &[Slot],
) -> Vec<Instant> {
    let (mut now, mut listed) = (from, Vec::new());
    let mut next_beat = from;
    while now < until {
        let wake = m.next_deadline().unwrap_or(until).min(next_beat);
        now = wake.max(now);
        let actions = if now >= next_beat && beats(now) {
            next_beat = now + S / 2;
            via.iter()
                .flat_map(|&slot| heartbeat_seen_via(m, 0, slot, now))
                .collect()
        } else {
            next_beat = next_beat
                .max(now + S / 2)
                .min(if beats(now) { now } else { until });
            m.handle(CalculatorEvent::Tick, now)
        };
        if list_op(&actions).is_some() {
            listed.push(now);
        }
        lists_answered(m, now, actions, 1);
    }
    listed
}

#[test]
fn heartbeats_are_listed_rarely_while_the_watch_delivers_and_often_when_it_goes_silent() {
    let t0 = Instant::now();
    let (mut m, now) = settled_fleet(t0);
    let t = timings();
    // The watch delivers a heartbeat every interval: one backstop listing per backstop
    // interval.
    let healthy_until = now + 2 * t.backstop_interval + S;
    let listed = listings(&mut m, now, healthy_until, |_| true);
    assert!(
        (2..=3).contains(&listed.len()),
        "listed {} times in {:?}",
        listed.len(),
        healthy_until - now
    );
    // The watch goes silent: listings every poll interval, from a TTL after its last
    // delivery on.
    let silent_until = healthy_until + 10 * S;
    let listed = listings(&mut m, healthy_until, silent_until, |_| false);
    assert_listed_often(&listed, healthy_until, silent_until, &t);
}

/// `listed` (the listings from `silent_from`, when a watch went silent, to `until`) began a
/// TTL after `silent_from` at the latest and came every poll interval from then on.
fn assert_listed_often(
    listed: &[Instant],
    silent_from: Instant,
    until: Instant,
    t: &CalculatorTimings,
) {
    let first = *listed.first().expect("listed while a watch is silent");
    assert!(
        first <= silent_from + t.heartbeat_ttl,
        "first listing {:?} after the silence began",
        first - silent_from
    );
    let expected = ((until - first).as_millis() / t.poll_interval.as_millis()) as usize;
    assert!(listed.len() >= expected, "{} < {expected}", listed.len());
}

/// With two heartbeat buckets, one watch that stops delivering while the other goes on
/// makes the listings frequent all the same: the working one cannot tell that a worker's
/// heartbeat is gone from the other bucket. (With one `last_delivery` for both, a leader
/// whose second watch could not be re-created on a cluster with a node down saw a crash
/// only at the backstop listing, 11 s after it.)
#[test]
fn with_two_heartbeats_one_silent_watch_makes_the_listings_frequent() {
    let t0 = Instant::now();
    let (mut m, now) = settled_fleet(t0);
    m.timings.two_heartbeats = true;
    let t = m.timings;
    let both = [Slot::First, Slot::Second];
    let healthy_until = now + 2 * t.backstop_interval + S;
    let listed = listings_via(&mut m, now, healthy_until, |_| true, &both);
    // (The first look may list: the second watch had not delivered before.)
    assert!(
        (2..=4).contains(&listed.len()),
        "listed {} times in {:?} with both watches delivering",
        listed.len(),
        healthy_until - now
    );
    let until = healthy_until + 10 * S;
    let listed = listings_via(&mut m, healthy_until, until, |_| true, &[Slot::First]);
    assert_listed_often(&listed, healthy_until, until, &t);
}

#[test]
fn a_worker_the_handoff_waits_for_seen_gone_is_listed_at_once() {
    let t0 = Instant::now();
    let (mut m, now) = settled_fleet(t0);
    heartbeat_seen(&mut m, 0, now);
    // p.0 moves from worker-0 to worker-1: worker-0's record is written without it first.
    let actions = m.handle(CalculatorEvent::Refresh, now);
    let (op, _, workers, _) = compute_op(&actions).unwrap();
    let mut moved = assign(&workers, &partitions(6));
    moved.assign(partitions(6)[0].id().clone(), w(1));
    let outcome = Ok(Computed {
        assignment: moved,
        partitions: partitions(6),
        source_failed: false,
    });
    let actions = m.handle(CalculatorEvent::Computed { op, outcome }, now);
    let actions = lists_answered(&mut m, now, actions, 1);
    let (op, step) = write_op(&actions).expect("the revoke");
    let committed = step.into_iter().map(|(w, c)| (w, c, 5)).collect();
    let failed = false;
    let actions = m.handle(
        CalculatorEvent::Written {
            op,
            committed,
            failed,
        },
        now,
    );
    // The listing after the write finds worker-0 still holding the old version.
    lists_answered(&mut m, now, actions, 1);
    assert!(m.handoff().waiting_for().any(|worker| *worker == w(0)));
    // Its heartbeat is seen gone by the watch: a listing at once confirms the release.
    let later = now + S / 10;
    assert!(m.next_deadline().is_none_or(|at| at > later));
    let actions = m.handle(CalculatorEvent::HeartbeatGone(w(0), Slot::First), later);
    assert!(list_op(&actions).is_some(), "{actions:?}");
}

#[test]
fn an_emergency_plans_with_the_last_good_list_without_asking_the_source() {
    let t0 = Instant::now();
    let (mut m, mut now) = settled_fleet(t0);
    m.handle(CalculatorEvent::HeartbeatGone(w(2), Slot::First), now);
    // Lost once the grace has passed.
    let until = now + 5 * S;
    let actions = run_until_without(&mut m, &mut now, until, &[w(2)]);
    let (_, reason, workers, source) = compute_op(&actions).expect("an emergency rebalance");
    assert_eq!(reason, RebalanceReason::Emergency);
    assert_eq!(workers, vec![w(0), w(1)]);
    assert!(!source, "an emergency does not wait on the source");
}

#[test]
fn a_graceful_leave_is_rebalanced_at_once_as_a_leave_not_an_emergency() {
    let t0 = Instant::now();
    let (mut m, now) = settled_fleet(t0);
    // worker-2 stopped: it deleted its heartbeat, then released its id. No grace to wait
    // out once both are seen.
    let actions = m.handle(CalculatorEvent::HeartbeatDeleted(w(2), Slot::First), now);
    assert!(
        compute_op(&actions).is_none(),
        "its claim may yet be parked: {actions:?}"
    );
    let actions = m.handle(CalculatorEvent::Unclaimed(w(2)), now);
    let kind = find(&actions, |a| match a {
        CalculatorAction::Note(CalculatorNote::TopologyChange { kind, .. }) => Some(*kind),
        _ => None,
    });
    assert_eq!(kind, Some(ChangeKind::Leave), "{actions:?}");
    let (_, reason, workers, _) = compute_op(&actions).expect("a rebalance at once");
    assert_eq!(reason, RebalanceReason::Leave);
    assert_eq!(workers, vec![w(0), w(1)]);
}

#[test]
fn a_claim_parked_after_the_heartbeat_was_deleted_still_keeps_the_partitions() {
    let t0 = Instant::now();
    let (mut m, mut now) = settled_fleet(t0);
    // The two notices come through two watches: the deletion may come first.
    m.handle(CalculatorEvent::HeartbeatDeleted(w(2), Slot::First), now);
    now += S / 10;
    let parked_at = now;
    m.handle(parked(2), now);
    let grace = timings().restart_grace;
    let actions = run_until_without(&mut m, &mut now, parked_at + grace - S / 10, &[w(2)]);
    assert!(compute_op(&actions).is_none(), "{actions:?}");
    assert!(m.members().contains(&w(2)), "still in the plan");
}

#[test]
fn a_parked_worker_keeps_its_partitions_for_the_restart_grace() {
    let t0 = Instant::now();
    let (mut m, mut now) = settled_fleet(t0);
    // worker-2 stopped gracefully with an identity: its claim is parked, then its
    // heartbeat goes.
    let parked_at = now;
    m.handle(parked(2), now);
    m.handle(CalculatorEvent::HeartbeatGone(w(2), Slot::First), now);
    let grace = timings().restart_grace;
    let actions = run_until_without(&mut m, &mut now, parked_at + grace - S / 10, &[w(2)]);
    assert!(compute_op(&actions).is_none(), "{actions:?}");
    assert!(m.members().contains(&w(2)), "still in the plan");
    // Nobody came back within the grace: its partitions go to the others at once.
    let actions = run_until_without(&mut m, &mut now, parked_at + grace + 2 * S, &[w(2)]);
    let (_, reason, workers, _) = compute_op(&actions).expect("a rebalance after the grace");
    assert_eq!(reason, RebalanceReason::Emergency);
    assert_eq!(workers, vec![w(0), w(1)]);
}

#[test]
fn an_unparked_worker_without_a_heartbeat_is_lost() {
    let t0 = Instant::now();
    let (mut m, mut now) = settled_fleet(t0);
    m.handle(parked(2), now);
    m.handle(CalculatorEvent::HeartbeatGone(w(2), Slot::First), now);
    // Its claim expired (or was released): no reason to wait any more.
    now += S;
    m.handle(CalculatorEvent::Unclaimed(w(2)), now);
    let actions = run_until_without(&mut m, &mut now, t0 + 10 * S + 3 * S, &[w(2)]);
    let (_, reason, workers, _) = compute_op(&actions).expect("an emergency");
    assert_eq!(reason, RebalanceReason::Emergency);
    assert_eq!(workers, vec![w(0), w(1)]);
}

#[test]
fn the_leader_keeps_observing_while_a_computation_hangs() {
    let t0 = Instant::now();
    let (mut m, mut now) = settled_fleet(t0);
    // A refresh: the source is asked, and hangs.
    let actions = m.handle(CalculatorEvent::Refresh, now);
    let (hung, reason, _, _) = compute_op(&actions).expect("a refresh rebalance");
    assert_eq!(reason, RebalanceReason::Refresh);
    // Meanwhile a worker dies: its loss is seen while the call hangs.
    let gone_at = now;
    m.handle(CalculatorEvent::HeartbeatGone(w(1), Slot::First), gone_at);
    let deadline = m.next_deadline().unwrap();
    assert!(deadline <= gone_at + 2 * timings().call_timeout);
    // The hanging computation is abandoned at its deadline; the emergency follows at once,
    // with the last good list.
    let mut seen = Vec::new();
    while compute_op(&seen).is_none_or(|(op, ..)| op == hung) {
        now = m.next_deadline().unwrap();
        seen = m.handle(CalculatorEvent::Tick, now);
        if let Some(list) = list_op(&seen) {
            seen.extend(m.handle(
                CalculatorEvent::Listed {
                    op: list,
                    outcome: Ok(present(&[0, 2])),
                    unreadable: BTreeSet::new(),
                    bucket_lost: false,
                },
                now,
            ));
        }
    }
    assert!(seen.contains(&CalculatorAction::Cancel(hung)));
    let (_, reason, workers, source) = compute_op(&seen).unwrap();
    assert_eq!(reason, RebalanceReason::Emergency);
    assert_eq!(workers, vec![w(0), w(2)]);
    assert!(!source);
    assert!(now <= gone_at + 2 * timings().call_timeout);
}

#[test]
fn a_failed_rebalance_is_retried_as_a_refresh_with_backoff() {
    let t0 = Instant::now();
    let (mut m, mut now) = settled_fleet(t0);
    let actions = m.handle(CalculatorEvent::Refresh, now);
    let (op, ..) = compute_op(&actions).unwrap();
    let actions = m.handle(
        CalculatorEvent::Computed {
            op,
            outcome: Err(()),
        },
        now,
    );
    let Some(CalculatorNote::RebalanceFailed { retry_in }) = find(&actions, |a| match a {
        CalculatorAction::Note(note @ CalculatorNote::RebalanceFailed { .. }) => Some(note.clone()),
        _ => None,
    }) else {
        panic!("reported: {actions:?}")
    };
    let failed_at = now;
    let actions = run_until(&mut m, &mut now, failed_at + 10 * S);
    let (_, reason, ..) = compute_op(&actions).expect("retried");
    assert_eq!(reason, RebalanceReason::Refresh);
    assert_eq!(now, failed_at + retry_in);
}

#[test]
fn after_a_failed_write_the_records_are_read_back_before_anything_is_written() {
    let t0 = Instant::now();
    let (mut m, _) = started(t0, &[0, 1]);
    let mut now = t0;
    let actions = run_until(&mut m, &mut now, t0 + 10 * S);
    let (op, _, workers, _) = compute_op(&actions).unwrap();
    let actions = computed(&mut m, now, op, &workers, 4);
    let actions = lists_answered(&mut m, now, actions, 0);
    let (op, _) = write_op(&actions).expect("writes the plan");
    let actions = m.handle(
        CalculatorEvent::Written {
            op,
            committed: Vec::new(),
            failed: true,
        },
        now,
    );
    let load = load_op(&actions).expect("reads the records back");
    assert!(write_op(&actions).is_none());
    let actions = m.handle(
        CalculatorEvent::Loaded {
            op: load,
            outcome: Ok(RecordsRead::default()),
        },
        now,
    );
    assert!(write_op(&actions).is_none(), "waits the retry delay");
    let until = now + 5 * S;
    let actions = run_until(&mut m, &mut now, until);
    assert!(write_op(&actions).is_some());
}

#[test]
fn a_write_that_hangs_is_abandoned_at_its_deadline_and_read_back() {
    let t0 = Instant::now();
    let (mut m, _) = started(t0, &[0]);
    let mut now = t0;
    let actions = run_until(&mut m, &mut now, t0 + 10 * S);
    let (op, _, workers, _) = compute_op(&actions).unwrap();
    let actions = computed(&mut m, now, op, &workers, 2);
    let actions = lists_answered(&mut m, now, actions, 0);
    let (write, _) = write_op(&actions).unwrap();
    assert!(
        m.next_deadline()
            .is_some_and(|at| at <= now + timings().call_timeout)
    );
    let actions = m.handle(CalculatorEvent::Tick, now + timings().call_timeout);
    assert!(actions.contains(&CalculatorAction::Cancel(write)));
    assert!(load_op(&actions).is_some(), "{actions:?}");
}

/// The leader of term 9 of a fleet of two workers (one partition each, records of term 5),
/// its records read: the machine, the read's id and what it reads.
fn new_leader_of_two(t0: Instant) -> (CalculatorMachine, OpId, RecordsRead) {
    let mut m = CalculatorMachine::new(9, timings(), Backoff::new(S / 2, 3 * S, 0), t0);
    let load = load_op(&m.handle(CalculatorEvent::Tick, t0)).unwrap();
    let ps = partitions(2);
    let records = RecordsRead {
        contents: vec![
            stored(0, 5, [ps[0].id().clone()].into()),
            stored(1, 5, [ps[1].id().clone()].into()),
        ],
        assignment: [(ps[0].id().clone(), w(0)), (ps[1].id().clone(), w(1))]
            .into_iter()
            .collect(),
        highest_term: 5,
    };
    (m, load, records)
}

#[test]
fn a_new_leader_rewrites_every_record_and_checks_coverage() {
    let t0 = Instant::now();
    let (mut m, load, records) = new_leader_of_two(t0);
    let list = list_op(&m.handle(
        CalculatorEvent::Loaded {
            op: load,
            outcome: Ok(records),
        },
        t0,
    ))
    .unwrap();
    let actions = m.handle(
        CalculatorEvent::Listed {
            op: list,
            outcome: Ok(reporting(&[0, 1], 5)),
            unreadable: BTreeSet::new(),
            bucket_lost: false,
        },
        t0,
    );
    let (op, step) = write_op(&actions).expect("stamps the records with its term");
    assert_eq!(step.len(), 2);
    let committed = step.into_iter().map(|(w, c)| (w, c, 6)).collect();
    let mut actions = m.handle(
        CalculatorEvent::Written {
            op,
            committed,
            failed: false,
        },
        t0,
    );
    if let Some(list) = list_op(&actions) {
        actions = m.handle(
            CalculatorEvent::Listed {
                op: list,
                outcome: Ok(reporting(&[0, 1], 6)),
                unreadable: BTreeSet::new(),
                bucket_lost: false,
            },
            t0,
        );
    }
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, CalculatorAction::CheckCoverage(_))),
        "{actions:?}"
    );
    assert!(
        compute_op(&actions).is_none(),
        "no cold start for a resumed fleet"
    );
}

/// A new leader whose first listings fail (its heartbeat streams failing over) has seen no
/// worker's absence: however long that lasts, and whatever the watch shows meanwhile, it
/// finds nobody lost and writes nothing until a listing is answered. (A failed first
/// listing taken for one made a new leader find all six workers of a fleet lost, on a
/// cluster with a node down, and revoke all 60 partitions before granting them back.)
#[test]
fn a_new_leader_sees_no_absence_before_its_first_answered_listing() {
    let t0 = Instant::now();
    let (mut m, load, records) = new_leader_of_two(t0);
    let loaded = CalculatorEvent::Loaded {
        op: load,
        outcome: Ok(records),
    };
    let mut actions = m.handle(loaded, t0);
    claim(&mut m, &[0, 1], t0);
    let mut now = t0;
    // Listings fail for ten emergency graces; worker 0's heartbeat shows by watch.
    while now < t0 + 10 * timings().emergency_grace {
        if let Some(list) = list_op(&actions) {
            let failed = CalculatorEvent::Listed {
                op: list,
                outcome: Err(()),
                unreadable: BTreeSet::new(),
                bucket_lost: false,
            };
            actions = m.handle(failed, now);
        } else {
            actions = heartbeat_seen(&mut m, 0, now);
        }
        assert!(
            !actions.iter().any(|action| matches!(
                action,
                CalculatorAction::Write { .. }
                    | CalculatorAction::Compute { .. }
                    | CalculatorAction::Note(CalculatorNote::TopologyChange { .. })
            )),
            "before any listing was answered: {actions:?}"
        );
        now = m.next_deadline().unwrap_or(now + S / 4).max(now + S / 4);
        actions.extend(m.handle(CalculatorEvent::Tick, now));
    }
    // The first answered listing finds both: the records are stamped, nobody is lost.
    assert!(list_op(&actions).is_some(), "still listing");
    let actions = lists_answered(&mut m, now, actions, 5);
    let (_, step) = write_op(&actions).expect("stamps the records with its term");
    assert_eq!(step.len(), 2);
    assert!(
        !actions.iter().any(|action| matches!(
            action,
            CalculatorAction::Note(CalculatorNote::TopologyChange { .. })
        )),
        "{actions:?}"
    );
}

#[test]
fn a_leader_below_a_term_it_finds_steps_down_without_writing() {
    // Records written under term 12, but this leader's term is 9: the election bucket was
    // lost and its revisions started again.
    let t0 = Instant::now();
    let mut m = CalculatorMachine::new(9, timings(), Backoff::new(S / 2, 3 * S, 0), t0);
    let load = load_op(&m.handle(CalculatorEvent::Tick, t0)).unwrap();
    let actions = m.handle(
        CalculatorEvent::Loaded {
            op: load,
            outcome: Ok(RecordsRead {
                highest_term: 12,
                ..RecordsRead::default()
            }),
        },
        t0,
    );
    assert_eq!(actions, vec![CalculatorAction::Resign { above: 12 }]);
    assert!(m.is_finished());
    assert_eq!(m.next_deadline(), None);
    assert!(m.handle(CalculatorEvent::Tick, t0 + S).is_empty());

    // A worker's heartbeat saying it saw a higher term does the same.
    let (mut m, now) = settled_fleet(t0);
    let mut seen = beat(1, 6);
    seen.term_seen = 2;
    let actions = m.handle(
        CalculatorEvent::Heartbeat {
            worker: w(1),
            beat: Some(seen),
            via: Slot::First,
        },
        now,
    );
    assert_eq!(actions, vec![CalculatorAction::Resign { above: 2 }]);
}

#[test]
fn a_revoking_step_is_followed_by_a_listing() {
    let t0 = Instant::now();
    let (mut m, mut now) = settled_fleet(t0);
    // A join: after its window, partitions move to it — revoked first.
    claim(&mut m, &[3], now);
    heartbeat_seen(&mut m, 3, now);
    let until = now + 10 * S;
    let actions = run_until(&mut m, &mut now, until);
    let (op, _, workers, _) = compute_op(&actions).unwrap();
    let actions = computed(&mut m, now, op, &workers, 6);
    let actions = lists_answered(&mut m, now, actions, 0);
    let (op, step) = write_op(&actions).unwrap();
    let committed = step.into_iter().map(|(w, c)| (w, c, 2)).collect();
    let actions = m.handle(
        CalculatorEvent::Written {
            op,
            committed,
            failed: false,
        },
        now,
    );
    assert!(m.handoff().waiting_for().next().is_some());
    assert!(list_op(&actions).is_some(), "{actions:?}");
}

#[derive(Debug, Clone)]
enum Event {
    Wait(u64),
    Answer(u8),
    Heartbeat(u8, bool),
    Parked(u8, bool),
    Refresh,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        3 => (1..4_000u64).prop_map(Event::Wait),
        6 => any::<u8>().prop_map(Event::Answer),
        3 => (0..5u8, any::<bool>()).prop_map(|(n, up)| Event::Heartbeat(n, up)),
        1 => (0..5u8, any::<bool>()).prop_map(|(n, parked)| Event::Parked(n, parked)),
        1 => Just(Event::Refresh),
    ]
}

proptest! {
    #[test]
    fn one_call_at_a_time_each_with_a_deadline_and_no_write_before_a_read_back(
        events in prop::collection::vec(event(), 1..150)
    ) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut m = CalculatorMachine::new(1, timings(), Backoff::new(S / 2, 3 * S, 0), t0);
        let mut in_flight: Option<CalculatorAction> = None;
        let mut must_read_back = false;
        let mut actions = m.handle(CalculatorEvent::Tick, now);
        for event in events {
            for action in &actions {
                match action {
                    CalculatorAction::Load(_) | CalculatorAction::List(_)
                    | CalculatorAction::Write { .. } | CalculatorAction::Compute { .. }
                    | CalculatorAction::CheckCoverage(_) => {
                        prop_assert!(in_flight.is_none(), "two calls: {actions:?}");
                        if matches!(action, CalculatorAction::Write { .. }) {
                            prop_assert!(!must_read_back, "wrote before reading back");
                        }
                        if matches!(action, CalculatorAction::Load(_)) {
                            must_read_back = false;
                        }
                        in_flight = Some(action.clone());
                    }
                    CalculatorAction::Cancel(_) => {
                        if matches!(in_flight, Some(CalculatorAction::Write { .. })) {
                            must_read_back = true;
                        }
                        in_flight = None;
                    }
                    _ => {}
                }
            }
            // Handled at `now`, nothing is due at `now` any more: the executor never spins.
            prop_assert!(m.next_deadline().is_none_or(|at| at > now), "due again at once");
            if in_flight.is_some() {
                prop_assert!(m.next_deadline().is_some_and(|d| d <= now + 2 * timings().call_timeout));
            }
            let next = match event {
                Event::Wait(ms) => {
                    let wake = m.next_deadline().unwrap_or(now).max(now);
                    now = (now + Duration::from_millis(ms)).min(wake);
                    CalculatorEvent::Tick
                }
                Event::Answer(pick) => match in_flight.take() {
                    Some(CalculatorAction::Load(op)) => CalculatorEvent::Loaded {
                        op,
                        outcome: if pick % 4 == 0 { Err(()) } else { Ok(RecordsRead::default()) },
                    },
                    Some(CalculatorAction::List(op)) => CalculatorEvent::Listed {
                        op,
                        outcome: Ok((0..u32::from(pick % 5)).map(|n| (w(n), beat(n, 1))).collect()), unreadable: BTreeSet::new(), bucket_lost: false,
                    },
                    Some(CalculatorAction::Write { op, step, .. }) => {
                        let failed = pick % 3 == 0;
                        if failed {
                            must_read_back = true;
                        }
                        CalculatorEvent::Written {
                            op,
                            committed: step.into_iter().map(|(w, c)| (w, c, 1)).collect(),
                            failed,
                        }
                    }
                    Some(CalculatorAction::Compute { op, workers, .. }) => CalculatorEvent::Computed {
                        op,
                        outcome: if pick % 3 == 0 {
                            Err(())
                        } else {
                            let ps = partitions(5);
                            Ok(Computed {
                                assignment: assign(&workers, &ps),
                                partitions: ps,
                                source_failed: pick % 3 == 1,
                            })
                        },
                    },
                    Some(CalculatorAction::CheckCoverage(op)) => CalculatorEvent::Covered {
                        op,
                        outcome: Ok((pick % 2 == 0, partitions(5))),
                    },
                    _ => CalculatorEvent::Tick,
                },
                Event::Heartbeat(n, true) => CalculatorEvent::Heartbeat { worker: w(n.into()), beat: Some(beat(n.into(), 1)), via: Slot::First },
                Event::Heartbeat(n, false) => CalculatorEvent::HeartbeatGone(w(n.into()), Slot::First),
                Event::Parked(n, parked) => CalculatorEvent::Claimed {
                    worker: w(n.into()),
                    parked,
                },
                Event::Refresh => CalculatorEvent::Refresh,
            };
            actions = m.handle(next, now);
        }
    }
}

#[test]
fn garbage_under_a_heartbeat_key_is_no_worker_and_confirms_no_release() {
    let t0 = Instant::now();
    let (mut m, mut now) = settled_fleet(t0);
    // A value that is not a heartbeat appears under `worker-7`: nobody joins.
    m.handle(
        CalculatorEvent::Heartbeat {
            worker: w(7),
            beat: None,
            via: Slot::First,
        },
        now,
    );
    let until = now + 10 * S;
    let actions = run_until(&mut m, &mut now, until);
    assert!(compute_op(&actions).is_none(), "{actions:?}");
    assert!(!m.members().contains(&w(7)));
    // A worker whose key holds garbage is not absent: it is not confirmed by a listing.
    let actions = m.handle(CalculatorEvent::Refresh, now);
    let (op, _, workers, _) = compute_op(&actions).unwrap();
    // p.0 moves from worker-0 to worker-1: worker-0's record is written without it first.
    let mut moved = assign(&workers, &partitions(6));
    moved.assign(partitions(6)[0].id().clone(), w(1));
    let actions = m.handle(
        CalculatorEvent::Computed {
            op,
            outcome: Ok(Computed {
                assignment: moved,
                partitions: partitions(6),
                source_failed: false,
            }),
        },
        now,
    );
    let actions = lists_answered(&mut m, now, actions, 1);
    let (op, step) = write_op(&actions).expect("the revoke");
    let committed = step.into_iter().map(|(w, c)| (w, c, 5)).collect();
    let actions = m.handle(
        CalculatorEvent::Written {
            op,
            committed,
            failed: false,
        },
        now,
    );
    let list = list_op(&actions).expect("a listing after the revoke");
    let readable = reporting(&[1, 2], 5);
    let actions = m.handle(
        CalculatorEvent::Listed {
            op: list,
            outcome: Ok(readable),
            unreadable: [w(0)].into(),
            bucket_lost: false,
        },
        now,
    );
    assert!(m.handoff().waiting_for().any(|worker| *worker == w(0)));
    assert!(
        write_op(&actions).is_none_or(|(_, step)| !step.contains_key(&w(1))),
        "granted while worker-0's key holds garbage: {actions:?}"
    );
}

#[test]
fn while_absence_is_unproven_a_missing_worker_stays_in_the_plan() {
    let t0 = Instant::now();
    let (mut m, mut now) = settled_fleet(t0);
    // This process's own heartbeat vanished before its TTL: a loss of the bucket may have
    // gone unseen, so worker-2's absence proves nothing until `until`.
    let until = now + timings().heartbeat_ttl;
    m.handle(CalculatorEvent::AbsenceUnproven { until }, now);
    m.handle(CalculatorEvent::HeartbeatGone(w(2), Slot::First), now);
    let actions = run_until_without(&mut m, &mut now, until - S / 10, &[w(2)]);
    assert!(compute_op(&actions).is_none(), "{actions:?}");
    assert!(m.members().contains(&w(2)), "still in the plan");
    // Then its absence counts: lost after the grace, like any departure.
    let actions = run_until_without(&mut m, &mut now, until + 5 * S, &[w(2)]);
    let (_, reason, workers, _) = compute_op(&actions).expect("an emergency after the doubt");
    assert_eq!(reason, RebalanceReason::Emergency);
    assert_eq!(workers, vec![w(0), w(1)]);
}

/// The claim of worker `n`, parked.
fn parked(n: u32) -> CalculatorEvent {
    CalculatorEvent::Claimed {
        worker: w(n),
        parked: true,
    }
}

#[test]
fn a_heartbeat_under_an_unclaimed_id_is_no_worker() {
    let t0 = Instant::now();
    let (mut m, mut now) = settled_fleet(t0);
    // A decodable heartbeat under worker-7, which nobody claimed: noted once, no join, no
    // window.
    let actions = heartbeat_seen(&mut m, 7, now);
    assert!(actions.contains(&CalculatorAction::Note(CalculatorNote::Unclaimed(w(7)))));
    let actions = heartbeat_seen(&mut m, 7, now);
    assert!(!actions.contains(&CalculatorAction::Note(CalculatorNote::Unclaimed(w(7)))));
    let until = now + 10 * S;
    let actions = run_until(&mut m, &mut now, until);
    assert!(compute_op(&actions).is_none(), "{actions:?}");
    assert!(!m.members().contains(&w(7)));
    // Once claimed, its heartbeat makes it join.
    claim(&mut m, &[7], now);
    heartbeat_seen(&mut m, 7, now);
    assert!(m.members().contains(&w(7)));
}

#[test]
fn while_the_claims_cannot_be_watched_a_heartbeat_needs_no_claim() {
    let t0 = Instant::now();
    let (mut m, now) = settled_fleet(t0);
    m.handle(CalculatorEvent::ClaimsUnknown, now);
    heartbeat_seen(&mut m, 7, now);
    assert!(m.members().contains(&w(7)), "a join without a claim");
}
