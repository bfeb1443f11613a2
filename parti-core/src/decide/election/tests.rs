//! The election's rules, one test each, and a property test over random event sequences.

use std::time::{Duration, Instant};

use parti_strategy::WorkerId;
use proptest::prelude::*;

use super::*;

const HOLD: Duration = Duration::from_millis(4_500);
const RENEW: Duration = Duration::from_millis(1_500);
const RETRY: Duration = Duration::from_millis(250);
const SILENCE: Duration = Duration::from_millis(6_000);

fn timings() -> ElectionTimings {
    ElectionTimings {
        hold: HOLD,
        renew_interval: RENEW,
        read_after_silence: SILENCE,
        retry: RETRY,
    }
}

fn me() -> Candidate {
    Candidate {
        worker_id: WorkerId::new("worker-0"),
        instance_id: "me".into(),
    }
}

fn entry(revision: u64, instance: &str, term: u64) -> LeaderEntry {
    LeaderEntry {
        revision,
        record: LeaderRecord {
            worker_id: WorkerId::new(if instance == "me" {
                "worker-0"
            } else {
                "worker-1"
            }),
            instance_id: instance.into(),
            term,
            floor: 0,
            phase: Lifecycle::Stable,
        },
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn read_op(actions: &[ElectionAction]) -> Option<OpId> {
    actions.iter().find_map(|a| match a {
        ElectionAction::Read(op) => Some(*op),
        _ => None,
    })
}

fn create_op(actions: &[ElectionAction]) -> Option<OpId> {
    actions.iter().find_map(|a| match a {
        ElectionAction::Create(op, _) => Some(*op),
        _ => None,
    })
}

fn renew_op(actions: &[ElectionAction]) -> Option<(OpId, LeaderRecord)> {
    actions.iter().find_map(|a| match a {
        ElectionAction::Renew { op, record, .. } => Some((*op, record.clone())),
        _ => None,
    })
}

fn deposed(actions: &[ElectionAction]) -> Option<Deposed> {
    actions.iter().find_map(|a| match a {
        ElectionAction::Deposed { reason, .. } => Some(*reason),
        _ => None,
    })
}

/// A machine that won term 10 at `t0` (create sent at `t0`); returns it and the actions of
/// the win.
fn elected(t0: Instant) -> (ElectionMachine, Vec<ElectionAction>) {
    elected_at(t0, 10, 10)
}

/// A machine whose create, sent at `t0`, landed at `revision` and won `term`.
fn elected_at(t0: Instant, revision: u64, term: u64) -> (ElectionMachine, Vec<ElectionAction>) {
    let mut m = ElectionMachine::new(me(), timings(), t0);
    let read = read_op(&m.handle(ElectionEvent::Tick, t0)).expect("reads first");
    let actions = m.handle(
        ElectionEvent::Read {
            op: read,
            outcome: Ok(None),
        },
        t0,
    );
    let create = create_op(&actions).expect("campaigns when nobody leads");
    let won = m.handle(
        ElectionEvent::Created {
            op: create,
            outcome: CreateOutcome::Won { revision, term },
        },
        t0 + ms(10),
    );
    (m, won)
}

/// Answers the renewal that the win at `t0` asked for with `outcome`, at `at`.
fn first_renewal(
    m: &mut ElectionMachine,
    won: &[ElectionAction],
    outcome: RenewOutcome,
    at: Instant,
) -> Vec<ElectionAction> {
    let (op, _) = renew_op(won).expect("renews at once");
    m.handle(ElectionEvent::Renewed { op, outcome }, at)
}

#[test]
fn a_follower_campaigns_only_when_the_entry_is_absent() {
    let t0 = Instant::now();
    let mut m = ElectionMachine::new(me(), timings(), t0);
    let read = read_op(&m.handle(ElectionEvent::Tick, t0)).unwrap();
    let actions = m.handle(
        ElectionEvent::Read {
            op: read,
            outcome: Ok(Some(entry(5, "other", 5))),
        },
        t0,
    );
    assert_eq!(create_op(&actions), None);
    assert!(actions.contains(&ElectionAction::ShowLeader(Some(entry(5, "other", 5)))));
    // The backstop read comes after a silence; a deletion starts a campaign now.
    assert_eq!(m.next_deadline(), Some(t0 + SILENCE));
    let actions = m.handle(ElectionEvent::Delivered(None), t0 + ms(100));
    assert!(read_op(&actions).is_some(), "{actions:?}");
}

#[test]
fn a_follower_reads_the_entry_when_its_watch_is_set_up_again() {
    let t0 = Instant::now();
    let mut m = ElectionMachine::new(me(), timings(), t0);
    let read = read_op(&m.handle(ElectionEvent::Tick, t0)).unwrap();
    let outcome = Ok(Some(entry(5, "other", 5)));
    m.handle(ElectionEvent::Read { op: read, outcome }, t0);
    // An expiry while the watch was down is found by a read now.
    let actions = m.handle(ElectionEvent::WatchStarted, t0 + ms(300));
    assert!(read_op(&actions).is_some(), "{actions:?}");
}

#[test]
fn an_idle_follower_reads_the_entry_only_when_its_watch_goes_silent() {
    let t0 = Instant::now();
    let mut m = ElectionMachine::new(me(), timings(), t0);
    let read = read_op(&m.handle(ElectionEvent::Tick, t0)).unwrap();
    let leader = |revision| Some(entry(revision, "other", 5));
    m.handle(
        ElectionEvent::Read {
            op: read,
            outcome: Ok(leader(5)),
        },
        t0,
    );
    // The leader's renewals, delivered by the watch, keep the read away.
    let mut at = t0;
    for revision in 6..30 {
        at += RENEW;
        let actions = m.handle(ElectionEvent::Delivered(leader(revision)), at);
        assert_eq!(read_op(&actions), None, "read at {:?}", at - t0);
        assert_eq!(m.next_deadline(), Some(at + SILENCE));
    }
    // Silence for `read_after_silence`: read.
    assert_eq!(
        read_op(&m.handle(ElectionEvent::Tick, at + SILENCE - ms(1))),
        None
    );
    assert!(read_op(&m.handle(ElectionEvent::Tick, at + SILENCE)).is_some());
}

#[test]
fn the_lease_runs_from_the_send_time_of_the_create() {
    let t0 = Instant::now();
    let (m, won) = elected(t0);
    assert!(won.contains(&ElectionAction::Elected {
        term: 10,
        lease_end: t0 + HOLD
    }));
    assert_eq!(m.leading(t0 + HOLD - ms(1)), Some(10));
    assert_eq!(m.leading(t0 + HOLD), None);
    // The first renewal writes the term into the record at once.
    let (_, record) = renew_op(&won).expect("renews at once");
    assert_eq!(record.term, 10);
}

#[test]
fn a_win_acknowledged_after_its_lease_would_end_does_not_lead() {
    let t0 = Instant::now();
    let mut m = ElectionMachine::new(me(), timings(), t0);
    let read = read_op(&m.handle(ElectionEvent::Tick, t0)).unwrap();
    let create = create_op(&m.handle(
        ElectionEvent::Read {
            op: read,
            outcome: Ok(None),
        },
        t0,
    ));
    // (The create's own deadline is shorter; a late answer of a create still in flight.)
    let mut m2 = m.clone();
    let late = m2.handle(
        ElectionEvent::Created {
            op: create.unwrap(),
            outcome: CreateOutcome::Won {
                revision: 3,
                term: 3,
            },
        },
        t0 + HOLD,
    );
    assert!(
        !late
            .iter()
            .any(|a| matches!(a, ElectionAction::Elected { .. }))
    );
    assert!(!m2.is_leader(t0 + HOLD));
}

#[test]
fn a_renewal_extends_the_lease_from_its_send_time() {
    let t0 = Instant::now();
    let (mut m, won) = elected(t0);
    let (op, _) = renew_op(&won).unwrap();
    // Sent at t0 + 10 ms, acknowledged 2 s later: the lease runs from the send.
    let actions = m.handle(
        ElectionEvent::Renewed {
            op,
            outcome: RenewOutcome::Renewed(11),
        },
        t0 + ms(2_010),
    );
    assert!(actions.contains(&ElectionAction::LeaseExtended {
        lease_end: t0 + ms(10) + HOLD
    }));
    assert!(m.is_leader(t0 + ms(10) + HOLD - ms(1)));
    assert!(!m.is_leader(t0 + ms(10) + HOLD));
}

#[test]
fn the_leader_is_deposed_at_the_lease_end_whatever_is_in_flight() {
    let t0 = Instant::now();
    let (mut m, won) = elected(t0);
    let (op, _) = renew_op(&won).unwrap();
    // The renewal hangs: the deadline is the lease end.
    assert_eq!(m.next_deadline(), Some(t0 + HOLD));
    let actions = m.handle(ElectionEvent::Tick, t0 + HOLD);
    assert_eq!(deposed(&actions), Some(Deposed::LeaseEnded));
    assert!(actions.contains(&ElectionAction::Cancel(op)));
    // Its answer, arriving later, counts for nothing.
    let late = m.handle(
        ElectionEvent::Renewed {
            op,
            outcome: RenewOutcome::Renewed(11),
        },
        t0 + HOLD + ms(1),
    );
    assert!(
        !late
            .iter()
            .any(|a| matches!(a, ElectionAction::LeaseExtended { .. }))
    );
    assert!(!m.is_leader(t0 + HOLD + ms(1)));
}

#[test]
fn an_answer_after_the_lease_end_deposes_before_it_counts() {
    let t0 = Instant::now();
    let (mut m, won) = elected(t0);
    let (op, _) = renew_op(&won).unwrap();
    // No tick at the lease end (a starved executor): the answer comes first.
    let actions = m.handle(
        ElectionEvent::Renewed {
            op,
            outcome: RenewOutcome::Renewed(11),
        },
        t0 + HOLD + ms(500),
    );
    assert_eq!(deposed(&actions), Some(Deposed::LeaseEnded));
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, ElectionAction::LeaseExtended { .. }))
    );
}

/// A conflicting renewal is read back at once: another's entry deposes; this leader's own
/// of its term — an earlier renewal that timed out and landed after the re-read meant to
/// find it — is adopted and renewed over. (Taken for another's, it deposed a leader when a
/// NATS node died under a renewal.)
#[test]
fn a_conflicting_renewal_is_read_back_and_deposes_only_for_another_entry() {
    for (found, deposes) in [
        (Some(entry(12, "other", 12)), true),
        (Some(entry(12, "me", 9)), true),
        (None, true),
        (Some(entry(12, "me", 10)), false),
    ] {
        let t0 = Instant::now();
        let (mut m, won) = elected(t0);
        let actions = first_renewal(&mut m, &won, RenewOutcome::Conflict, t0 + ms(20));
        assert_eq!(deposed(&actions), None, "not before the re-read");
        let reread = read_op(&actions).expect("reads back at once");
        let actions = m.handle(
            ElectionEvent::Read {
                op: reread,
                outcome: Ok(found.clone()),
            },
            t0 + ms(30),
        );
        if deposes {
            assert_eq!(deposed(&actions), Some(Deposed::Replaced), "{found:?}");
            assert!(!m.is_leader(t0 + ms(30)));
        } else {
            assert!(
                actions
                    .iter()
                    .any(|a| matches!(a, ElectionAction::Renew { revision: 12, .. })),
                "{actions:?}"
            );
            assert!(m.is_leader(t0 + ms(30)));
        }
    }
}

#[test]
fn an_unknown_outcome_is_read_back_and_adopted_if_it_landed() {
    let t0 = Instant::now();
    let (mut m, won) = elected(t0);
    let actions = first_renewal(&mut m, &won, RenewOutcome::Failed, t0 + ms(20));
    assert!(renew_op(&actions).is_none(), "waits the retry delay");
    let actions = m.handle(ElectionEvent::Tick, t0 + ms(20) + RETRY);
    let reread = read_op(&actions).expect("reads before renewing again");
    // It landed (revision 12, our instance, term 10): adopted, and renewed over it.
    let actions = m.handle(
        ElectionEvent::Read {
            op: reread,
            outcome: Ok(Some(entry(12, "me", 10))),
        },
        t0 + ms(300),
    );
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, ElectionAction::Renew { revision: 12, .. })),
        "{actions:?}"
    );
    assert!(m.is_leader(t0 + ms(300)));
}

#[test]
fn an_unknown_outcome_read_back_as_another_leader_deposes() {
    for found in [None, Some(entry(12, "other", 12)), Some(entry(12, "me", 9))] {
        let t0 = Instant::now();
        let (mut m, won) = elected(t0);
        let (op, _) = renew_op(&won).unwrap();
        m.handle(
            ElectionEvent::Renewed {
                op,
                outcome: RenewOutcome::Failed,
            },
            t0 + ms(20),
        );
        let reread = read_op(&m.handle(ElectionEvent::Tick, t0 + ms(20) + RETRY)).unwrap();
        let actions = m.handle(
            ElectionEvent::Read {
                op: reread,
                outcome: Ok(found.clone()),
            },
            t0 + ms(300),
        );
        assert_eq!(deposed(&actions), Some(Deposed::Replaced), "{found:?}");
    }
}

#[test]
fn a_phase_change_is_written_at_once() {
    let t0 = Instant::now();
    let (mut m, won) = elected(t0);
    first_renewal(&mut m, &won, RenewOutcome::Renewed(11), t0 + ms(20));
    let actions = m.handle(ElectionEvent::Phase(Lifecycle::Scaling), t0 + ms(30));
    let (_, record) = renew_op(&actions).expect("renews at once");
    assert_eq!(record.phase, Lifecycle::Scaling);
}

#[test]
fn stopping_a_leader_deposes_it_first_then_releases_within_a_bound() {
    let t0 = Instant::now();
    let (mut m, won) = elected(t0);
    first_renewal(&mut m, &won, RenewOutcome::Renewed(11), t0 + ms(20));
    let actions = m.handle(ElectionEvent::Stop, t0 + ms(30));
    let deposed_at = actions
        .iter()
        .position(|a| {
            matches!(
                a,
                ElectionAction::Deposed {
                    reason: Deposed::Stopping,
                    ..
                }
            )
        })
        .expect("deposed");
    let release = actions
        .iter()
        .position(|a| matches!(a, ElectionAction::Release { revision: 11, .. }))
        .expect("released at our revision");
    assert!(deposed_at < release);
    assert!(!m.is_finished());
    // The release hangs: given up after one renew interval.
    let actions = m.handle(ElectionEvent::Tick, t0 + ms(30) + RENEW);
    assert!(actions.contains(&ElectionAction::TimedOut(ElectionCall::Release)));
    assert!(m.is_finished());
    assert_eq!(m.next_deadline(), None);
}

#[test]
fn stopping_a_follower_abandons_its_call_and_finishes() {
    let t0 = Instant::now();
    let mut m = ElectionMachine::new(me(), timings(), t0);
    let read = read_op(&m.handle(ElectionEvent::Tick, t0)).unwrap();
    let actions = m.handle(ElectionEvent::Stop, t0 + ms(5));
    assert_eq!(
        actions,
        vec![ElectionAction::Cancel(read), ElectionAction::Finished]
    );
}

#[test]
fn a_calculator_that_ends_by_itself_ends_the_leadership() {
    let t0 = Instant::now();
    let (mut m, _) = elected(t0);
    let actions = m.handle(ElectionEvent::CalculatorEnded, t0 + ms(50));
    assert_eq!(deposed(&actions), Some(Deposed::CalculatorEnded));
    assert!(!m.is_leader(t0 + ms(50)));
}

#[test]
fn every_follower_call_has_a_deadline() {
    let t0 = Instant::now();
    let mut m = ElectionMachine::new(me(), timings(), t0);
    let read = read_op(&m.handle(ElectionEvent::Tick, t0)).unwrap();
    assert_eq!(m.next_deadline(), Some(t0 + RENEW));
    let actions = m.handle(ElectionEvent::Tick, t0 + RENEW);
    assert!(actions.contains(&ElectionAction::Cancel(read)));
    assert!(actions.contains(&ElectionAction::TimedOut(ElectionCall::Read)));
    // A create that hangs is abandoned too, and the entry read before campaigning again.
    let read = read_op(&m.handle(ElectionEvent::Tick, t0 + RENEW + RETRY)).unwrap();
    let t1 = t0 + RENEW + RETRY;
    let create = create_op(&m.handle(
        ElectionEvent::Read {
            op: read,
            outcome: Ok(None),
        },
        t1,
    ));
    let actions = m.handle(ElectionEvent::Tick, t1 + RENEW);
    assert!(actions.contains(&ElectionAction::Cancel(create.unwrap())));
    assert!(read_op(&actions).is_some(), "{actions:?}");
}

/// Random answers at random times: the machine leads only within a lease measured from the
/// send time of an acknowledged create or renewal, `Elected` and `Deposed` alternate, every
/// state but the end has a deadline, and every call it asks for is answered or cancelled.
#[derive(Debug, Clone)]
enum Step {
    Wait(u64),
    Answer(u8),
    Deliver(bool),
    Phase,
    CalculatorEnded,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (1..3_000u64).prop_map(Step::Wait),
        6 => any::<u8>().prop_map(Step::Answer),
        1 => any::<bool>().prop_map(Step::Deliver),
        1 => Just(Step::Phase),
        1 => Just(Step::CalculatorEnded),
    ]
}

proptest! {
    #[test]
    fn leads_only_within_an_acknowledged_lease(steps in prop::collection::vec(step(), 1..120)) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut m = ElectionMachine::new(me(), timings(), t0);
        // The call in flight as the executor sees it: (op, kind, sent).
        let mut in_flight: Option<(OpId, ElectionAction, Instant)> = None;
        let mut leading: Option<u64> = None;
        // The latest lease end the machine may claim: an acknowledged send + HOLD.
        let mut acknowledged_end: Option<Instant> = None;
        let mut actions = m.handle(ElectionEvent::Tick, now);
        for step in steps.into_iter().chain([Step::Wait(0)]) {
            for action in &actions {
                match action {
                    ElectionAction::Read(op) | ElectionAction::Create(op, _)
                    | ElectionAction::Renew { op, .. } | ElectionAction::Release { op, .. } => {
                        prop_assert!(in_flight.is_none(), "two calls at once: {actions:?}");
                        in_flight = Some((*op, action.clone(), now));
                    }
                    ElectionAction::Cancel(op) => {
                        prop_assert_eq!(in_flight.as_ref().map(|f| f.0), Some(*op));
                        in_flight = None;
                    }
                    ElectionAction::Elected { term, lease_end } => {
                        prop_assert!(leading.is_none());
                        leading = Some(*term);
                        prop_assert!(Some(*lease_end) <= acknowledged_end);
                    }
                    ElectionAction::LeaseExtended { lease_end } => {
                        prop_assert!(Some(*lease_end) <= acknowledged_end);
                    }
                    ElectionAction::Deposed { .. } => {
                        prop_assert!(leading.take().is_some());
                    }
                    _ => {}
                }
            }
            if let Some(term) = m.leading(now) {
                prop_assert_eq!(Some(term), leading);
                prop_assert!(acknowledged_end.is_some_and(|end| now < end));
            }
            prop_assert!(m.is_finished() || m.next_deadline().is_some());
            let event = match step {
                Step::Wait(n) => {
                    let wake = m.next_deadline().unwrap_or(now).max(now);
                    now = (now + ms(n)).min(wake);
                    ElectionEvent::Tick
                }
                Step::Answer(pick) => match in_flight.take() {
                    Some((op, ElectionAction::Read(_), _)) => ElectionEvent::Read {
                        op,
                        outcome: match pick % 4 {
                            0 => Ok(None),
                            1 => Ok(Some(entry(20, "other", 20))),
                            2 => Ok(Some(entry(21, "me", leading.unwrap_or(1)))),
                            _ => Err(()),
                        },
                    },
                    Some((op, ElectionAction::Create(..), sent)) => ElectionEvent::Created {
                        op,
                        outcome: match pick % 3 {
                            0 => {
                                acknowledged_end = acknowledged_end.max(Some(sent + HOLD));
                                CreateOutcome::Won {
                                    revision: u64::from(pick) + 1,
                                    term: u64::from(pick) + 1,
                                }
                            }
                            1 => CreateOutcome::Taken,
                            _ => CreateOutcome::Failed,
                        },
                    },
                    Some((op, ElectionAction::Renew { .. }, sent)) => ElectionEvent::Renewed {
                        op,
                        outcome: match pick % 3 {
                            0 => {
                                acknowledged_end = acknowledged_end.max(Some(sent + HOLD));
                                RenewOutcome::Renewed(u64::from(pick) + 100)
                            }
                            1 => RenewOutcome::Conflict,
                            _ => RenewOutcome::Failed,
                        },
                    },
                    Some((op, _, _)) => ElectionEvent::Released { op },
                    None => ElectionEvent::Tick,
                },
                Step::Deliver(present) => {
                    ElectionEvent::Delivered(present.then(|| entry(30, "other", 30)))
                }
                Step::Phase => ElectionEvent::Phase(Lifecycle::Rebalancing),
                Step::CalculatorEnded => ElectionEvent::CalculatorEnded,
            };
            actions = m.handle(event, now);
        }
    }
}

#[test]
fn a_new_term_starts_with_the_stable_phase() {
    let t0 = Instant::now();
    let (mut m, won) = elected(t0);
    first_renewal(&mut m, &won, RenewOutcome::Renewed(11), t0 + ms(20));
    m.handle(ElectionEvent::Phase(Lifecycle::Emergency), t0 + ms(30));
    // The lease (from the renewal sent at 10 ms) runs out; this worker wins again.
    let t1 = t0 + ms(10) + HOLD;
    let read = read_op(&m.handle(ElectionEvent::Tick, t1)).expect("follows, and reads at once");
    let create = create_op(&m.handle(
        ElectionEvent::Read {
            op: read,
            outcome: Ok(None),
        },
        t1,
    ));
    let won = m.handle(
        ElectionEvent::Created {
            op: create.unwrap(),
            outcome: CreateOutcome::Won {
                revision: 20,
                term: 20,
            },
        },
        t1,
    );
    let (_, record) = renew_op(&won).unwrap();
    assert_eq!(record.phase, Lifecycle::Stable);
}

#[test]
fn a_term_raised_above_its_revision_renews_at_the_revision() {
    // The create's floor (terms seen before, the clock) raised the term above the revision
    // the entry was written at: renewals compare-and-set at the revision, and write the term.
    let t0 = Instant::now();
    let term = 1_764_000_000_000;
    let (_, won) = elected_at(t0, 2, term);
    assert!(won.contains(&ElectionAction::Elected {
        term,
        lease_end: t0 + timings().hold,
    }));
    let renewal = won.iter().find_map(|a| match a {
        ElectionAction::Renew {
            revision, record, ..
        } => Some((*revision, record.term)),
        _ => None,
    });
    assert_eq!(renewal, Some((2, term)));
}
