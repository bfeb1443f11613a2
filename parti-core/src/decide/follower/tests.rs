//! Tests of the follower machine: one test per rule, and a property test that drives it with
//! random events (late, lost and hanging completions, lease lapses, stops) and checks that
//! nothing is held or granted outside the lease.

use std::time::{Duration, Instant};

use parti_strategy::PartitionId;
use proptest::prelude::*;

use super::{FollowerAction, FollowerEvent, FollowerMachine, FollowerTimings, LeaseRenewal, OpId};
use crate::decide::Machine;
use crate::wire::{AssignmentRecord, FencingToken, Grant, Lifecycle};

const POLL: Duration = Duration::from_secs(30);
const READ_TIMEOUT: Duration = Duration::from_millis(1000);
const DRAIN: Duration = Duration::from_millis(5000);
const SLACK: Duration = Duration::from_millis(150);

fn timings() -> FollowerTimings {
    FollowerTimings {
        poll_interval: POLL,
        read_timeout: READ_TIMEOUT,
        drain_timeout: DRAIN,
        release_slack: SLACK,
    }
}

fn p(n: usize) -> PartitionId {
    PartitionId::new(format!("p{n}")).unwrap()
}

/// This worker's heartbeat session.
const ME: u64 = 1;

fn record(version: u64, term: u64, partitions: &[usize]) -> AssignmentRecord {
    AssignmentRecord {
        version,
        term,
        holder: ME,
        lifecycle: Lifecycle::Stable,
        partitions: partitions
            .iter()
            .map(|&n| Grant {
                partition: p(n),
                token: FencingToken { term, version },
            })
            .collect(),
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A machine with a test clock.
struct Harness {
    machine: FollowerMachine,
    start: Instant,
    now: Instant,
}

impl Harness {
    fn new() -> Self {
        let start = Instant::now();
        Self {
            machine: FollowerMachine::new(timings()),
            start,
            now: start,
        }
    }

    fn at(&mut self, offset: Duration) -> &mut Self {
        self.now = self.start + offset;
        self
    }

    fn feed(&mut self, event: FollowerEvent) -> Vec<FollowerAction> {
        self.machine.handle(event, self.now)
    }

    fn lease_until(&mut self, offset: Duration) -> Vec<FollowerAction> {
        let end = self.start + offset;
        let now = self.now;
        self.feed(FollowerEvent::Lease(Some(LeaseRenewal {
            until: end,
            acknowledged: now,
            session: ME,
        })))
    }

    fn held(&self) -> Vec<PartitionId> {
        self.machine.held().partitions().cloned().collect()
    }
}

/// The first action `pick` recognises; panics naming `what` when there is none.
fn find<T>(
    actions: &[FollowerAction],
    what: &str,
    pick: impl Fn(&FollowerAction) -> Option<T>,
) -> T {
    actions
        .iter()
        .find_map(pick)
        .unwrap_or_else(|| panic!("no {what} in {actions:?}"))
}

fn read_op(actions: &[FollowerAction]) -> OpId {
    find(actions, "read", |a| match a {
        FollowerAction::ReadRecord(id) => Some(*id),
        _ => None,
    })
}

fn term_op(actions: &[FollowerAction]) -> OpId {
    find(actions, "term read", |a| match a {
        FollowerAction::ReadTerm(id) => Some(*id),
        _ => None,
    })
}

fn grant_op(actions: &[FollowerAction]) -> OpId {
    find(actions, "grant hook", |a| match a {
        FollowerAction::Grant(id, _) => Some(*id),
        _ => None,
    })
}

fn revoke_op(actions: &[FollowerAction]) -> (OpId, Vec<PartitionId>) {
    find(actions, "revoke hook", |a| match a {
        FollowerAction::Revoke(id, partitions) => Some((*id, partitions.clone())),
        _ => None,
    })
}

/// A follower whose grant hook for `partitions` of record v1 (term 1) has just started, at
/// 0 ms with a lease until `lease` ms; returns it and the hook's operation.
fn granting(partitions: &[usize], lease: u64) -> (Harness, OpId) {
    let mut h = Harness::new();
    let read = read_op(&h.lease_until(ms(lease)));
    let term = term_op(&h.feed(FollowerEvent::RecordRead {
        op: read,
        outcome: Ok(Some(record(1, 1, partitions))),
    }));
    let grant = grant_op(&h.feed(FollowerEvent::TermRead {
        op: term,
        outcome: Ok(Some(1)),
    }));
    (h, grant)
}

/// A follower that holds `partitions` of record v1 (term 1), its grant hook done, at 0 ms with
/// a lease until `lease` ms.
fn holding(partitions: &[usize], lease: u64) -> Harness {
    let (mut h, grant) = granting(partitions, lease);
    h.feed(FollowerEvent::HookDone {
        op: grant,
        panicked: false,
    });
    assert_eq!(
        h.held(),
        partitions.iter().map(|&n| p(n)).collect::<Vec<_>>()
    );
    h
}

#[test]
fn holds_nothing_before_a_fresh_read_under_a_lease() {
    let mut h = Harness::new();
    // No lease: a delivered record is ignored, nothing is read.
    assert!(
        h.feed(FollowerEvent::Delivered(Some(record(1, 1, &[0]))))
            .is_empty()
    );
    assert_eq!(h.machine.next_deadline(), None);
    // The lease starts: a fresh read, not the delivered record.
    let actions = h.lease_until(ms(2000));
    assert!(
        matches!(actions[..], [FollowerAction::ReadRecord(_)]),
        "{actions:?}"
    );
}

#[test]
fn a_grant_needs_the_current_term() {
    let mut h = Harness::new();
    let read = read_op(&h.lease_until(ms(2000)));
    let term = term_op(&h.feed(FollowerEvent::RecordRead {
        op: read,
        outcome: Ok(Some(record(1, 1, &[0]))),
    }));
    // Another leader is current: nothing applied.
    let actions = h.feed(FollowerEvent::TermRead {
        op: term,
        outcome: Ok(Some(2)),
    });
    assert!(actions.is_empty(), "{actions:?}");
    assert!(h.held().is_empty());
}

#[test]
fn a_record_written_for_another_process_grants_nothing() {
    let mut h = Harness::new();
    let read = read_op(&h.lease_until(ms(2000)));
    let mut theirs = record(1, 1, &[0, 1]);
    theirs.holder = ME - 1;
    // Not even a term check: the record is not this process's.
    let actions = h.feed(FollowerEvent::RecordRead {
        op: read,
        outcome: Ok(Some(theirs.clone())),
    });
    assert!(actions.is_empty(), "{actions:?}");
    assert!(h.held().is_empty());

    // Holding partitions of its own record, a record for another process revokes them.
    let mut h = holding(&[0, 1], 2000);
    theirs.version = 2;
    let actions = h.at(ms(10)).feed(FollowerEvent::Delivered(Some(theirs)));
    let (_, revoked) = revoke_op(&actions);
    assert_eq!(revoked, [p(0), p(1)]);
    assert!(h.held().is_empty());
}

#[test]
fn a_grant_hook_is_not_cancelled_while_the_lease_holds() {
    let (mut h, grant) = granting(&[0, 1], 2000);
    // The hook takes longer than the backstop interval; the lease is renewed all along.
    let hook_time = POLL.as_millis() as u64 + 1000;
    for t in (500..hook_time).step_by(500) {
        let mut actions = h.at(ms(t)).lease_until(ms(t + 2000));
        actions.extend(h.feed(FollowerEvent::Tick));
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, FollowerAction::Cancel(id) if *id == grant)),
            "cancelled at {t} ms: {actions:?}"
        );
        assert_eq!(h.held(), [p(0), p(1)]);
    }
    let actions = h.feed(FollowerEvent::HookDone {
        op: grant,
        panicked: false,
    });
    // The poll that fell due meanwhile runs now.
    read_op(&actions);
}

#[test]
fn a_lapse_and_its_end_are_reported_once_each_and_the_first_lease_is_no_recovery() {
    let mut h = Harness::new();
    let actions = h.lease_until(ms(1000));
    assert!(
        !actions.contains(&FollowerAction::LeaseRestored),
        "{actions:?}"
    );
    let lapsed = h.at(ms(1000)).feed(FollowerEvent::Tick);
    assert_eq!(
        lapsed
            .iter()
            .filter(|a| **a == FollowerAction::LeaseLapsed)
            .count(),
        1,
        "{lapsed:?}"
    );
    assert!(
        !h.at(ms(1500))
            .feed(FollowerEvent::Tick)
            .contains(&FollowerAction::LeaseLapsed)
    );
    let restored = h.at(ms(2000)).lease_until(ms(3000));
    assert!(
        restored.contains(&FollowerAction::LeaseRestored),
        "{restored:?}"
    );
}

#[test]
fn a_lease_that_ends_during_a_grant_hook_fences_at_the_lease_end() {
    let (mut h, grant) = granting(&[0], 700);
    assert_eq!(h.machine.next_deadline(), Some(h.start + ms(700)));
    let actions = h.at(ms(700)).feed(FollowerEvent::Tick);
    assert_eq!(actions[0], FollowerAction::LeaseLapsed, "{actions:?}");
    assert_eq!(actions[1], FollowerAction::Cancel(grant), "{actions:?}");
    assert!(actions.contains(&FollowerAction::Fenced { partitions: 1 }));
    assert!(h.held().is_empty());
    let (revoke, partitions) = revoke_op(&actions);
    assert_eq!(partitions, [p(0)]);
    // The revoke hook gets until half the margin after the lease end, not the drain timeout.
    assert_eq!(h.machine.next_deadline(), Some(h.start + ms(700) + SLACK));
    let actions = h.at(ms(700) + SLACK).feed(FollowerEvent::Tick);
    assert!(
        actions.contains(&FollowerAction::Cancel(revoke)),
        "{actions:?}"
    );
    assert!(actions.contains(&FollowerAction::DrainCutShort {
        partitions: 1,
        waited: SLACK
    }));
    // The grant hook's late completion is ignored.
    assert!(
        h.feed(FollowerEvent::HookDone {
            op: grant,
            panicked: false
        })
        .is_empty()
    );
}

#[test]
fn a_read_that_hangs_past_the_lease_fences() {
    let mut h = holding(&[0, 1], 2000);
    // The lease is renewed until 2.5 s past the backstop read, which hangs.
    let poll_ms = POLL.as_millis() as u64;
    for t in (500..poll_ms).step_by(500) {
        assert!(h.at(ms(t)).lease_until(ms(t + 2000)).is_empty());
    }
    h.at(POLL - ms(500)).lease_until(POLL + ms(2500));
    let read = read_op(&h.at(POLL).feed(FollowerEvent::Tick));
    assert_eq!(h.machine.next_deadline(), Some(h.start + POLL + ms(1000)));
    // The read is given up after the read timeout, still under the lease.
    let actions = h.at(POLL + ms(1000)).feed(FollowerEvent::Tick);
    assert!(
        actions.contains(&FollowerAction::Cancel(read)),
        "{actions:?}"
    );
    assert!(actions.contains(&FollowerAction::ReadTimedOut));
    assert_eq!(h.held(), [p(0), p(1)]);
    // It is tried again a read timeout later and hangs too; the lease ends at 2.5 s:
    // fenced then.
    let read = read_op(&h.at(POLL + ms(2000)).feed(FollowerEvent::Tick));
    assert_eq!(h.machine.next_deadline(), Some(h.start + POLL + ms(2500)));
    let actions = h.at(POLL + ms(2500)).feed(FollowerEvent::Tick);
    assert!(actions.contains(&FollowerAction::Cancel(read)));
    assert!(actions.contains(&FollowerAction::Fenced { partitions: 2 }));
    assert!(h.held().is_empty());
    // Its late answer counts for nothing.
    let late = h.feed(FollowerEvent::RecordRead {
        op: read,
        outcome: Ok(Some(record(1, 1, &[0, 1]))),
    });
    assert!(!late.iter().any(|a| matches!(a, FollowerAction::Publish(_))));
}

#[test]
fn a_term_check_that_hangs_past_the_lease_grants_nothing() {
    let mut h = Harness::new();
    let read = read_op(&h.lease_until(ms(700)));
    let term = term_op(&h.feed(FollowerEvent::RecordRead {
        op: read,
        outcome: Ok(Some(record(1, 1, &[0]))),
    }));
    let actions = h.at(ms(700)).feed(FollowerEvent::Tick);
    assert!(actions.contains(&FollowerAction::Cancel(term)));
    let late = h.feed(FollowerEvent::TermRead {
        op: term,
        outcome: Ok(Some(1)),
    });
    assert!(late.is_empty(), "{late:?}");
    assert!(h.held().is_empty());
}

#[test]
fn a_renewal_acknowledged_in_time_but_heard_late_does_not_fence() {
    let mut h = holding(&[0], 1000);
    // Renewed at 900 ms (before the lease end), heard at 1100 ms: no lapse.
    h.at(ms(1100));
    let actions = h.feed(FollowerEvent::Lease(Some(LeaseRenewal {
        until: h.start + ms(3000),
        acknowledged: h.start + ms(900),
        session: ME,
    })));
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, FollowerAction::Fenced { .. })),
        "{actions:?}"
    );
    assert_eq!(h.held(), [p(0)]);
}

#[test]
fn a_renewal_acknowledged_after_the_lease_end_comes_after_a_lapse() {
    let mut h = holding(&[0], 1000);
    h.at(ms(1100));
    let actions = h.feed(FollowerEvent::Lease(Some(LeaseRenewal {
        until: h.start + ms(3000),
        acknowledged: h.start + ms(1050),
        session: ME,
    })));
    assert!(
        actions.contains(&FollowerAction::Fenced { partitions: 1 }),
        "{actions:?}"
    );
    assert!(h.held().is_empty());
}

#[test]
fn a_record_delivered_while_no_fresh_read_found_one_is_read_afresh_at_once() {
    let mut h = Harness::new();
    let read = read_op(&h.lease_until(ms(2000)));
    // The fresh read finds no record for this process yet.
    let actions = h.feed(FollowerEvent::RecordRead {
        op: read,
        outcome: Ok(None),
    });
    assert!(actions.is_empty(), "{actions:?}");
    // The leader writes one: the delivered record is not trusted, but read afresh at once
    // (not at the next backstop read), and applied from that read.
    let actions = h
        .at(ms(10))
        .feed(FollowerEvent::Delivered(Some(record(1, 1, &[0]))));
    let read = read_op(&actions);
    let term = term_op(&h.feed(FollowerEvent::RecordRead {
        op: read,
        outcome: Ok(Some(record(1, 1, &[0]))),
    }));
    let grant = grant_op(&h.feed(FollowerEvent::TermRead {
        op: term,
        outcome: Ok(Some(1)),
    }));
    h.feed(FollowerEvent::HookDone {
        op: grant,
        panicked: false,
    });
    assert_eq!(h.held(), [p(0)]);
}

#[test]
fn a_failed_read_or_a_stale_term_is_looked_at_again_soon_not_at_the_backstop_read() {
    let mut h = Harness::new();
    let read = read_op(&h.lease_until(ms(60_000)));
    h.feed(FollowerEvent::RecordRead {
        op: read,
        outcome: Err(()),
    });
    assert_eq!(h.machine.next_deadline(), Some(h.now + READ_TIMEOUT));
    let read = read_op(&h.at(READ_TIMEOUT).feed(FollowerEvent::Tick));
    // The record names a term the election entry does not show (yet).
    let term = term_op(&h.feed(FollowerEvent::RecordRead {
        op: read,
        outcome: Ok(Some(record(1, 2, &[0]))),
    }));
    h.feed(FollowerEvent::TermRead {
        op: term,
        outcome: Ok(Some(1)),
    });
    assert!(h.held().is_empty());
    assert_eq!(h.machine.next_deadline(), Some(h.now + READ_TIMEOUT));
    // A read that hangs is abandoned at its deadline and tried again a timeout later.
    let read = read_op(&h.at(2 * READ_TIMEOUT).feed(FollowerEvent::Tick));
    let actions = h.at(3 * READ_TIMEOUT).feed(FollowerEvent::Tick);
    assert!(
        actions.contains(&FollowerAction::Cancel(read)),
        "{actions:?}"
    );
    assert_eq!(h.machine.next_deadline(), Some(h.now + READ_TIMEOUT));
    // Once applied, the record is read again only at the backstop interval.
    let read = read_op(&h.at(4 * READ_TIMEOUT).feed(FollowerEvent::Tick));
    let term = term_op(&h.feed(FollowerEvent::RecordRead {
        op: read,
        outcome: Ok(Some(record(1, 2, &[0]))),
    }));
    let grant = grant_op(&h.feed(FollowerEvent::TermRead {
        op: term,
        outcome: Ok(Some(2)),
    }));
    h.feed(FollowerEvent::HookDone {
        op: grant,
        panicked: false,
    });
    assert_eq!(h.held(), [p(0)]);
    assert_eq!(h.machine.next_deadline(), Some(h.now + POLL));
}

#[test]
fn a_watch_set_up_again_is_followed_by_a_fresh_read() {
    let mut h = holding(&[0], 60_000);
    // The watch failed and was set up again: a change while it was down (the record
    // deleted with its bucket, say) is found by a read now, not at the backstop read.
    let read = read_op(&h.at(ms(500)).feed(FollowerEvent::WatchStarted));
    let actions = h.feed(FollowerEvent::RecordRead {
        op: read,
        outcome: Ok(None),
    });
    let (_, revoked) = revoke_op(&actions);
    assert_eq!(revoked, [p(0)]);
}

#[test]
fn while_the_watch_fails_the_record_is_read_every_read_timeout() {
    let mut h = holding(&[0], 60_000);
    h.at(ms(500)).feed(FollowerEvent::WatchFailed);
    assert_eq!(h.machine.next_deadline(), Some(h.now + READ_TIMEOUT));
    // The read comes at that deadline, and finds the record revoked.
    let read = read_op(&h.at(ms(1500)).feed(FollowerEvent::Tick));
    let actions = h.feed(FollowerEvent::RecordRead {
        op: read,
        outcome: Ok(None),
    });
    let (_, revoked) = revoke_op(&actions);
    assert_eq!(revoked, [p(0)]);
}

#[test]
fn after_a_lapse_only_a_fresh_read_counts() {
    let mut h = holding(&[0], 1000);
    h.at(ms(1000)).feed(FollowerEvent::Tick);
    assert!(h.held().is_empty());
    // The lease is back: a record the watch delivers now may predate a revocation.
    let actions = h.at(ms(1200)).lease_until(ms(3000));
    let read = read_op(&actions);
    let delivered = h.feed(FollowerEvent::Delivered(Some(record(1, 1, &[0]))));
    assert!(
        !delivered
            .iter()
            .any(|a| matches!(a, FollowerAction::ReadTerm(_)))
    );
    // The fresh read shows the revocation: nothing is granted.
    let actions = h.feed(FollowerEvent::RecordRead {
        op: read,
        outcome: Ok(Some(record(2, 1, &[]))),
    });
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, FollowerAction::Grant(..)))
    );
    assert!(h.held().is_empty());
}

#[test]
fn revocations_drain_before_the_version_is_reported() {
    let mut h = holding(&[0, 1], 10_000);
    let actions = h
        .at(ms(100))
        .feed(FollowerEvent::Delivered(Some(record(2, 1, &[0]))));
    let (revoke, partitions) = revoke_op(&actions);
    assert_eq!(partitions, [p(1)]);
    assert_eq!(h.held(), [p(0)]);
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, FollowerAction::ReportApplied { .. }))
    );
    let actions = h.at(ms(300)).feed(FollowerEvent::HookDone {
        op: revoke,
        panicked: false,
    });
    assert!(actions.contains(&FollowerAction::ReportApplied {
        version: 2,
        term_seen: 1
    }));
}

#[test]
fn a_revoke_hook_is_cut_at_the_drain_timeout() {
    let mut h = holding(&[0, 1], 100_000);
    let (revoke, _) = revoke_op(&h.at(ms(100)).feed(FollowerEvent::Delivered(Some(record(
        2,
        1,
        &[0],
    )))));
    assert_eq!(h.machine.next_deadline(), Some(h.start + ms(100) + DRAIN));
    let actions = h.at(ms(100) + DRAIN).feed(FollowerEvent::Tick);
    assert!(actions.contains(&FollowerAction::Cancel(revoke)));
    assert!(actions.contains(&FollowerAction::ReportApplied {
        version: 2,
        term_seen: 1
    }));
}

#[test]
fn a_panicking_hook_counts_as_finished() {
    let mut h = holding(&[0, 1], 100_000);
    let (revoke, _) = revoke_op(&h.at(ms(100)).feed(FollowerEvent::Delivered(Some(record(
        2,
        1,
        &[0],
    )))));
    let actions = h.feed(FollowerEvent::HookDone {
        op: revoke,
        panicked: true,
    });
    assert!(actions.contains(&FollowerAction::ReportApplied {
        version: 2,
        term_seen: 1
    }));
}

#[test]
fn records_delivered_during_a_grant_hook_wait_for_it() {
    let (mut h, grant) = granting(&[0, 1], 100_000);
    assert!(
        h.feed(FollowerEvent::Delivered(Some(record(2, 1, &[0]))))
            .is_empty()
    );
    let actions = h.feed(FollowerEvent::HookDone {
        op: grant,
        panicked: false,
    });
    let (_, partitions) = revoke_op(&actions);
    assert_eq!(partitions, [p(1)]);
}

#[test]
fn stop_releases_everything_then_finishes() {
    let mut h = holding(&[0, 1], 100_000);
    let actions = h.feed(FollowerEvent::Stop);
    let (revoke, partitions) = revoke_op(&actions);
    assert_eq!(partitions, [p(0), p(1)]);
    assert!(h.held().is_empty());
    let actions = h.feed(FollowerEvent::HookDone {
        op: revoke,
        panicked: false,
    });
    assert_eq!(actions, [FollowerAction::Finished]);
    assert!(h.machine.is_finished());
}

#[test]
fn stop_waits_for_a_grant_hook_at_most_the_drain_timeout() {
    let (mut h, grant) = granting(&[0], 100_000);
    h.at(ms(10)).feed(FollowerEvent::Stop);
    assert_eq!(h.machine.next_deadline(), Some(h.start + ms(10) + DRAIN));
    let actions = h.at(ms(10) + DRAIN).feed(FollowerEvent::Tick);
    assert_eq!(actions[0], FollowerAction::Cancel(grant));
    let (_, partitions) = revoke_op(&actions);
    assert_eq!(partitions, [p(0)]);
}

#[test]
fn a_lapse_during_a_revocation_applies_nothing_after_it() {
    let mut h = holding(&[0, 1], 1000);
    // v2 revokes p1 and grants p2 (term checked first); the lease ends while p1 drains.
    let term = term_op(
        &h.at(ms(100))
            .feed(FollowerEvent::Delivered(Some(record(2, 1, &[0, 2])))),
    );
    let (revoke, _) = revoke_op(&h.feed(FollowerEvent::TermRead {
        op: term,
        outcome: Ok(Some(1)),
    }));
    let actions = h.at(ms(1000)).feed(FollowerEvent::Tick);
    assert!(actions.contains(&FollowerAction::Fenced { partitions: 1 }));
    assert!(h.held().is_empty());
    // p1's hook ends: p0 is released next, and p2 is never granted.
    let actions = h.at(ms(1050)).feed(FollowerEvent::HookDone {
        op: revoke,
        panicked: false,
    });
    let (_, partitions) = revoke_op(&actions);
    assert_eq!(partitions, [p(0)]);
    assert!(!actions.iter().any(|a| matches!(
        a,
        FollowerAction::Grant(..) | FollowerAction::ReportApplied { .. }
    )));
}

/// An event of the random schedule: the operation completions name the one in flight (or
/// a stale one).
#[derive(Debug, Clone)]
enum Step {
    Advance(u64),
    Renew(u64),
    Deliver(u64, Vec<usize>),
    ReadDone(Option<(u64, u64, Vec<usize>)>),
    ReadFailed,
    TermDone(u64),
    HookDone(bool),
    Stale,
    Stop,
}

fn step() -> impl Strategy<Value = Step> {
    let parts = proptest::collection::vec(0usize..4, 0..4);
    prop_oneof![
        (1u64..1500).prop_map(Step::Advance),
        (0u64..2500).prop_map(Step::Renew),
        (1u64..6, parts.clone()).prop_map(|(v, ps)| Step::Deliver(v, ps)),
        proptest::option::of((1u64..6, 1u64..3, parts)).prop_map(Step::ReadDone),
        Just(Step::ReadFailed),
        (1u64..3).prop_map(Step::TermDone),
        any::<bool>().prop_map(Step::HookDone),
        Just(Step::Stale),
        Just(Step::Stop),
    ]
}

/// The invariants checked after every step of the property test.
struct Checker {
    lease_end: Option<Instant>,
    grant: Option<OpId>,
    stopping: bool,
}

impl Checker {
    fn check(&mut self, h: &Harness, actions: &[FollowerAction]) -> Result<(), TestCaseError> {
        let now = h.now;
        let valid = self.lease_end.is_some_and(|end| now < end);
        for action in actions {
            match action {
                FollowerAction::Grant(id, _) => {
                    prop_assert!(valid, "a grant hook started outside the lease");
                    self.grant = Some(*id);
                }
                FollowerAction::Cancel(id) if Some(*id) == self.grant => {
                    prop_assert!(
                        !valid || self.stopping,
                        "a grant hook cancelled while the lease holds"
                    );
                }
                _ => {}
            }
        }
        if !valid {
            prop_assert!(
                h.machine.held().is_empty(),
                "held {:?} outside the lease at {:?}",
                h.machine.held(),
                now - h.start
            );
        }
        if let Some(deadline) = h.machine.next_deadline() {
            prop_assert!(
                deadline > now,
                "asked to wake at {:?}, now {:?}",
                deadline - h.start,
                now - h.start
            );
        }
        Ok(())
    }
}

proptest! {
    /// Whatever happens, in whatever order: nothing is held and no grant hook starts while
    /// the lease is not valid, a grant hook is cancelled only after the lease ended (or on
    /// stop), the machine never asks to be woken in the past, and a stopped machine
    /// finishes holding nothing.
    #[test]
    fn nothing_is_held_outside_the_lease(steps in proptest::collection::vec(step(), 1..80)) {
        let mut h = Harness::new();
        let mut checker = Checker { lease_end: None, grant: None, stopping: false };
        for step in steps {
            let event = match step {
                Step::Advance(n) => {
                    let target = h.now + ms(n);
                    // Wake at every deadline on the way, as the executor does.
                    while let Some(at) = h.machine.next_deadline().filter(|at| *at <= target) {
                        h.now = at;
                        let actions = h.machine.handle(FollowerEvent::Tick, at);
                        checker.check(&h, &actions)?;
                    }
                    h.now = target;
                    FollowerEvent::Tick
                }
                Step::Renew(n) => {
                    let end = h.now + ms(n);
                    checker.lease_end = Some(end);
                    FollowerEvent::Lease(Some(LeaseRenewal { until: end, acknowledged: h.now, session: ME }))
                }
                Step::Deliver(v, ps) => FollowerEvent::Delivered(Some(record(v, 1, &ps))),
                Step::ReadDone(found) => match h.machine.in_flight() {
                    Some(op) => FollowerEvent::RecordRead {
                        op,
                        outcome: Ok(found.map(|(v, t, ps)| record(v, t, &ps))),
                    },
                    None => FollowerEvent::Tick,
                },
                Step::ReadFailed => match h.machine.in_flight() {
                    Some(op) => FollowerEvent::RecordRead { op, outcome: Err(()) },
                    None => FollowerEvent::Tick,
                },
                Step::TermDone(term) => match h.machine.in_flight() {
                    Some(op) => FollowerEvent::TermRead { op, outcome: Ok(Some(term)) },
                    None => FollowerEvent::Tick,
                },
                Step::HookDone(panicked) => match h.machine.in_flight() {
                    Some(op) => FollowerEvent::HookDone { op, panicked },
                    None => FollowerEvent::Tick,
                },
                Step::Stale => FollowerEvent::HookDone { op: OpId(u64::MAX), panicked: false },
                Step::Stop => {
                    checker.stopping = true;
                    FollowerEvent::Stop
                }
            };
            let now = h.now;
            let actions = h.machine.handle(event, now);
            checker.check(&h, &actions)?;
        }
        if checker.stopping {
            // Let whatever runs finish (reads fail, hooks return), passing deadlines.
            for _ in 0..20 {
                if h.machine.is_finished() {
                    break;
                }
                let now = h.now;
                if let Some(op) = h.machine.in_flight() {
                    for event in [
                        FollowerEvent::HookDone { op, panicked: false },
                        FollowerEvent::RecordRead { op, outcome: Err(()) },
                        FollowerEvent::TermRead { op, outcome: Err(()) },
                    ] {
                        let actions = h.machine.handle(event, now);
                        checker.check(&h, &actions)?;
                    }
                } else {
                    let actions = h.machine.handle(FollowerEvent::Tick, now);
                    checker.check(&h, &actions)?;
                }
                h.now += ms(100);
            }
            prop_assert!(h.machine.is_finished(), "a stopped machine did not finish");
            prop_assert!(h.machine.held().is_empty());
        }
    }
}
