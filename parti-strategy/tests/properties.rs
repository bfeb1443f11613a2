//! Property tests of every strategy's guarantees (see each strategy's docs).

use std::collections::{BTreeMap, BTreeSet};

use parti_strategy::{
    Assignment, ConsistentHash, Partition, RoundRobin, Sticky, Strategy as AssignmentStrategy,
    StrategyError, StrategyInput, Worker, WorkerId,
};
use proptest::prelude::*;
use proptest::sample::subsequence;

const CASES: u32 = 1_000;

fn worker(n: usize) -> Worker {
    Worker::new(format!("worker-{n}"))
}

fn partition(n: usize, weight: u32) -> Partition {
    Partition::new(format!("p-{n}"))
        .unwrap()
        .with_weight(weight)
}

fn workers(max: usize) -> impl Strategy<Value = Vec<Worker>> {
    subsequence((0..40).collect::<Vec<_>>(), 1..=max)
        .prop_map(|ns| ns.into_iter().map(worker).collect())
}

fn weighted_workers(max: usize) -> impl Strategy<Value = Vec<Worker>> {
    workers(max).prop_flat_map(|ws| {
        let n = ws.len();
        (Just(ws), proptest::collection::vec(1u32..=4, n)).prop_map(|(ws, caps)| {
            ws.into_iter()
                .zip(caps)
                .map(|(w, c)| w.with_capacity(c))
                .collect()
        })
    })
}

fn unit_partitions(max: usize) -> impl Strategy<Value = Vec<Partition>> {
    subsequence((0..600).collect::<Vec<_>>(), 0..=max)
        .prop_map(|ns| ns.into_iter().map(|n| partition(n, 1)).collect())
}

fn weighted_partitions(max: usize) -> impl Strategy<Value = Vec<Partition>> {
    unit_partitions(max).prop_flat_map(|ps| {
        let n = ps.len();
        (Just(ps), proptest::collection::vec(1u32..=10, n)).prop_map(|(ps, ws)| {
            ps.into_iter()
                .zip(ws)
                .map(|(p, w)| p.with_weight(w))
                .collect()
        })
    })
}

/// A previous assignment over some of `partitions` (plus some that no longer exist) and
/// workers that may be gone.
fn previous_for(partitions: &[Partition]) -> impl Strategy<Value = Assignment> + use<> {
    let mut ids: Vec<String> = partitions.iter().map(|p| p.id().to_string()).collect();
    ids.extend((600..620).map(|n| format!("p-{n}")));
    let n = ids.len();
    (
        Just(ids),
        proptest::collection::vec(proptest::option::of(0usize..45), n),
    )
        .prop_map(|(ids, owners)| {
            ids.into_iter()
                .zip(owners)
                .filter_map(|(id, owner)| {
                    owner.map(|o| (id.parse().unwrap(), WorkerId::new(format!("worker-{o}"))))
                })
                .collect()
        })
}

fn all_strategies() -> Vec<Box<dyn AssignmentStrategy>> {
    vec![
        Box::new(Sticky::new()),
        Box::new(ConsistentHash::new()),
        Box::new(ConsistentHash::bounded()),
        Box::new(RoundRobin::new()),
    ]
}

fn run(
    s: &dyn AssignmentStrategy,
    w: &[Worker],
    p: &[Partition],
    prev: Option<&Assignment>,
) -> Assignment {
    let input = StrategyInput::new(w, p);
    let input = match prev {
        Some(prev) => input.with_previous(prev),
        None => input,
    };
    s.assign(&input)
        .unwrap_or_else(|e| panic!("{}: {e}", s.name()))
}

fn assert_covers(a: &Assignment, w: &[Worker], p: &[Partition]) -> Result<(), TestCaseError> {
    let listed: BTreeSet<&WorkerId> = w.iter().map(Worker::id).collect();
    prop_assert_eq!(a.len(), p.len());
    for partition in p {
        let owner = a.owner(partition.id());
        prop_assert!(
            owner.is_some_and(|o| listed.contains(o)),
            "{} -> {:?}",
            partition.id(),
            owner
        );
    }
    Ok(())
}

/// Partition counts per listed worker (0 for workers owning nothing).
fn counts(a: &Assignment, w: &[Worker]) -> BTreeMap<WorkerId, u64> {
    let owned = a.counts();
    w.iter()
        .map(|w| {
            (
                w.id().clone(),
                owned.get(w.id()).copied().unwrap_or(0) as u64,
            )
        })
        .collect()
}

/// The fewest moves any assignment with counts ⌊P·cᵢ/C⌋ or +1 could make from `previous`:
/// partitions of departed workers must move; a live worker above its target must shed the
/// excess; the spare units best go to workers above their floor.
fn minimal_moves(w: &[Worker], p: &[Partition], previous: &Assignment) -> usize {
    let live: BTreeMap<&WorkerId, u64> = w
        .iter()
        .map(|w| (w.id(), u64::from(w.capacity())))
        .collect();
    let total_capacity: u64 = live.values().sum();
    let mut kept: BTreeMap<&WorkerId, u64> = BTreeMap::new();
    let mut departed = 0;
    for partition in p {
        match previous.owner(partition.id()) {
            Some(owner) if live.contains_key(owner) => *kept.entry(owner).or_default() += 1,
            Some(_) => departed += 1,
            None => {}
        }
    }
    let total = p.len() as u64;
    let floors: BTreeMap<&WorkerId, u64> = live
        .iter()
        .map(|(id, c)| (*id, total * c / total_capacity))
        .collect();
    let spare = (total - floors.values().sum::<u64>()) as usize;
    let above: Vec<u64> = floors
        .iter()
        .map(|(id, f)| kept.get(id).copied().unwrap_or(0).saturating_sub(*f))
        .collect();
    let excess: u64 = above.iter().sum();
    let relieved = above.iter().filter(|&&a| a > 0).count().min(spare) as u64;
    departed + (excess - relieved) as usize
}

/// A fleet under random changes: starts with 4 workers and 100 unit partitions.
struct Churn {
    w: Vec<Worker>,
    p: Vec<Partition>,
    next_worker: usize,
    next_partition: usize,
}

impl Churn {
    fn new() -> Self {
        Self {
            w: (0..4).map(worker).collect(),
            p: (0..100).map(|n| partition(n, 1)).collect(),
            next_worker: 4,
            next_partition: 100,
        }
    }

    /// Op 0: a worker of `capacity` joins; 1: the worker at `amount` (mod the fleet)
    /// leaves, unless it is the last; 2: `amount` partitions are added; 3: removed.
    fn apply(&mut self, op: u8, amount: usize, capacity: u32) {
        match op {
            0 => {
                self.w
                    .push(worker(self.next_worker).with_capacity(capacity));
                self.next_worker += 1;
            }
            1 if self.w.len() > 1 => {
                self.w.remove(amount % self.w.len());
            }
            2 => {
                let new = self.next_partition..self.next_partition + amount;
                self.p.extend(new.map(|n| partition(n, 1)));
                self.next_partition += amount;
            }
            _ => {
                let keep = self.p.len().saturating_sub(amount);
                self.p.truncate(keep);
            }
        }
    }
}

/// Every partition of `p` whose owner changed from `before` to `after` went to `joiner`.
fn assert_moved_only_onto(
    before: &Assignment,
    after: &Assignment,
    p: &[Partition],
    joiner: &Worker,
) -> Result<(), TestCaseError> {
    for partition in p {
        if before.owner(partition.id()) != after.owner(partition.id()) {
            prop_assert_eq!(after.owner(partition.id()), Some(joiner.id()));
        }
    }
    Ok(())
}

/// `s` from its own assignment over `w`, after the worker at `leaving` leaves, moves exactly
/// that worker's partitions.
fn assert_leave_moves_only_the_leavers(
    s: &dyn AssignmentStrategy,
    w: &[Worker],
    p: &[Partition],
    leaving: usize,
) -> Result<(), TestCaseError> {
    let before = run(s, w, p, None);
    let mut fewer = w.to_vec();
    let gone = fewer.remove(leaving);
    let after = run(s, &fewer, p, Some(&before));
    prop_assert_eq!(
        after.moved_from(&before),
        before.partitions_of(gone.id()).len()
    );
    Ok(())
}

/// `s` from its own assignment, given `extra` more partitions, moves none of the others.
fn assert_new_partitions_move_nothing_else(
    s: &dyn AssignmentStrategy,
    w: &[Worker],
    p: &[Partition],
    extra: usize,
) -> Result<(), TestCaseError> {
    let before = run(s, w, p, None);
    let mut more = p.to_vec();
    more.extend((1000..1000 + extra).map(|n| partition(n, 1)));
    let after = run(s, w, &more, Some(&before));
    prop_assert_eq!(after.moved_from(&before), 0);
    Ok(())
}

/// The bounded ring's cap for `worker` among `w` with `total` unit partitions:
/// max(⌈aᵢ⌉, ⌊(1+ε)·aᵢ⌋) of its fair share aᵢ.
fn bounded_cap(worker: &Worker, w: &[Worker], total: usize, epsilon: f64) -> u64 {
    let capacity: u64 = w.iter().map(|w| u64::from(w.capacity())).sum();
    let share = total as u64 * u64::from(worker.capacity());
    share
        .div_ceil(capacity)
        .max(((1.0 + epsilon) * share as f64 / capacity as f64).floor() as u64)
}

/// Checks that every move of the bounded ring from `previous` (its own result over
/// `before`) to `next` (over `after` and `p`, unit weights) has a reason: its worker is gone,
/// it went to a joiner (a worker that owned nothing before), or its worker's cap fell below
/// what it kept — and then no more left it than the excess.
fn assert_bounded_moves_explained(
    previous: &Assignment,
    next: &Assignment,
    after: &[Worker],
    p: &[Partition],
    epsilon: f64,
) -> Result<(), TestCaseError> {
    let owned_before = previous.counts();
    let mut kept_candidates: BTreeMap<&WorkerId, u64> = BTreeMap::new();
    let mut left_not_to_joiner: BTreeMap<&WorkerId, u64> = BTreeMap::new();
    for partition in p {
        let (Some(was), Some(now)) = (previous.owner(partition.id()), next.owner(partition.id()))
        else {
            continue;
        };
        *kept_candidates.entry(was).or_default() += 1;
        if was != now && owned_before.contains_key(now) {
            *left_not_to_joiner.entry(was).or_default() += 1;
        }
    }
    for worker in after {
        let left = left_not_to_joiner.get(worker.id()).copied().unwrap_or(0);
        let kept = kept_candidates.get(worker.id()).copied().unwrap_or(0);
        let excess = kept.saturating_sub(bounded_cap(worker, after, p.len(), epsilon));
        prop_assert!(
            left <= excess,
            "{} lost {} partitions to workers other than joiners, but was over its cap by {}",
            worker.id(),
            left,
            excess
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn every_partition_is_assigned_once_to_a_listed_worker(
        w in weighted_workers(12),
        p in weighted_partitions(200),
    ) {
        for s in all_strategies() {
            assert_covers(&run(s.as_ref(), &w, &p, None), &w, &p)?;
        }
    }

    #[test]
    fn results_do_not_depend_on_input_order(
        (w, shuffled_w) in workers(12).prop_flat_map(|w| (Just(w.clone()), Just(w).prop_shuffle())),
        (p, shuffled_p) in weighted_partitions(150).prop_flat_map(|p| (Just(p.clone()), Just(p).prop_shuffle())),
    ) {
        let previous = run(&Sticky::new(), &w[..w.len().div_ceil(2)], &p, None);
        for s in all_strategies() {
            let a = run(s.as_ref(), &w, &p, Some(&previous));
            let b = run(s.as_ref(), &shuffled_w, &shuffled_p, Some(&previous));
            prop_assert_eq!(&a, &b, "{} depends on input order", s.name());
            prop_assert_eq!(&a, &run(s.as_ref(), &w, &p, Some(&previous)), "{} is not deterministic", s.name());
        }
    }

    #[test]
    fn sticky_counts_differ_by_at_most_one(
        w in workers(16),
        p in unit_partitions(300),
        previous in unit_partitions(300).prop_flat_map(|p| previous_for(&p)),
    ) {
        let a = run(&Sticky::new(), &w, &p, Some(&previous));
        let c = counts(&a, &w);
        let (min, max) = (c.values().min().unwrap(), c.values().max().unwrap());
        prop_assert!(max - min <= 1, "counts {:?}", c);
    }

    #[test]
    fn sticky_shares_in_proportion_to_capacity(
        w in weighted_workers(12),
        p in unit_partitions(300),
    ) {
        let a = run(&Sticky::new(), &w, &p, None);
        let c = counts(&a, &w);
        let total_capacity: u64 = w.iter().map(|w| u64::from(w.capacity())).sum();
        for worker in &w {
            let floor = p.len() as u64 * u64::from(worker.capacity()) / total_capacity;
            let n = c[worker.id()];
            prop_assert!(n == floor || n == floor + 1, "{}: {} not in {{{}, {}}}", worker.id(), n, floor, floor + 1);
        }
    }

    #[test]
    fn sticky_weighted_loads_stay_within_share_plus_largest_weight(
        w in weighted_workers(12),
        p in weighted_partitions(200),
        previous in weighted_partitions(200).prop_flat_map(|p| previous_for(&p)),
    ) {
        let a = run(&Sticky::new(), &w, &p, Some(&previous));
        let total: u128 = p.iter().map(|p| u128::from(p.weight())).sum();
        let capacity: u128 = w.iter().map(|w| u128::from(w.capacity())).sum();
        let largest = p.iter().map(|p| u128::from(p.weight())).max().unwrap_or(0);
        let mut load: BTreeMap<&WorkerId, u128> = BTreeMap::new();
        for partition in &p {
            *load.entry(a.owner(partition.id()).unwrap()).or_default() += u128::from(partition.weight());
        }
        for worker in &w {
            let l = load.get(worker.id()).copied().unwrap_or(0);
            // load ≤ total·c/C + largest, in integers
            prop_assert!(l * capacity <= total * u128::from(worker.capacity()) + largest * capacity,
                "{} carries {} of {}", worker.id(), l, total);
        }
    }

    #[test]
    fn sticky_moves_exactly_the_minimum(
        w in weighted_workers(16),
        p in unit_partitions(300),
        previous in unit_partitions(300).prop_flat_map(|p| previous_for(&p)),
    ) {
        let a = run(&Sticky::new(), &w, &p, Some(&previous));
        prop_assert_eq!(a.moved_from(&previous), minimal_moves(&w, &p, &previous));
    }

    #[test]
    fn sticky_join_moves_floor_p_over_n_plus_one_onto_the_new_worker(
        w in workers(16),
        p in unit_partitions(300),
    ) {
        let before = run(&Sticky::new(), &w, &p, None);
        let mut more = w.clone();
        let joiner = worker(99);
        more.push(joiner.clone());
        let after = run(&Sticky::new(), &more, &p, Some(&before));
        prop_assert_eq!(after.moved_from(&before), p.len() / more.len());
        assert_moved_only_onto(&before, &after, &p, &joiner)?;
    }

    #[test]
    fn sticky_leave_moves_exactly_the_lost_workers_partitions(
        w in workers(16).prop_filter("two workers", |w| w.len() >= 2),
        p in unit_partitions(300),
        leaving in any::<prop::sample::Index>(),
    ) {
        assert_leave_moves_only_the_leavers(&Sticky::new(), &w, &p, leaving.index(w.len()))?;
    }

    #[test]
    fn sticky_new_partitions_move_nothing_else(
        w in workers(16),
        p in unit_partitions(300),
        extra in 1usize..50,
    ) {
        assert_new_partitions_move_nothing_else(&Sticky::new(), &w, &p, extra)?;
    }

    #[test]
    fn sticky_stays_balanced_and_minimal_across_changes(
        steps in proptest::collection::vec((0u8..4, 1usize..30), 1..12),
    ) {
        let mut fleet = Churn::new();
        let mut current = run(&Sticky::new(), &fleet.w, &fleet.p, None);
        for (op, amount) in steps {
            fleet.apply(op, amount, 1);
            let (w, p) = (&fleet.w, &fleet.p);
            let next = run(&Sticky::new(), w, p, Some(&current));
            assert_covers(&next, w, p)?;
            let c = counts(&next, w);
            prop_assert!(c.values().max().unwrap() - c.values().min().unwrap() <= 1);
            prop_assert_eq!(next.moved_from(&current), minimal_moves(w, p, &current));
            current = next;
        }
    }

    #[test]
    fn plain_consistent_hash_moves_partitions_only_to_a_joining_worker(
        w in workers(16),
        p in unit_partitions(300),
    ) {
        let ring = ConsistentHash::new();
        let before = run(&ring, &w, &p, None);
        let mut more = w.clone();
        let joiner = worker(99);
        more.push(joiner.clone());
        let after = run(&ring, &more, &p, None);
        assert_moved_only_onto(&before, &after, &p, &joiner)?;
    }

    #[test]
    fn bounded_consistent_hash_caps_every_load(
        w in weighted_workers(16),
        p in unit_partitions(300),
        previous in unit_partitions(300).prop_flat_map(|p| previous_for(&p)),
        epsilon in 0.05f64..1.0,
    ) {
        let ring = ConsistentHash::new().with_epsilon(epsilon).unwrap();
        for previous in [None, Some(&previous)] {
            let a = run(&ring, &w, &p, previous);
            let c = counts(&a, &w);
            for worker in &w {
                let cap = bounded_cap(worker, &w, p.len(), epsilon);
                prop_assert!(c[worker.id()] <= cap, "{} has {} > cap {}", worker.id(), c[worker.id()], cap);
            }
        }
    }

    #[test]
    fn bounded_consistent_hash_join_moves_first_choices_onto_the_joiner(
        w in weighted_workers(16),
        p in unit_partitions(300),
        joiner_capacity in 1u32..=4,
        epsilon in 0.05f64..1.0,
    ) {
        let ring = ConsistentHash::new().with_epsilon(epsilon).unwrap();
        let before = run(&ring, &w, &p, None);
        let joiner = worker(99).with_capacity(joiner_capacity);
        let mut more = w.clone();
        more.push(joiner.clone());
        let after = run(&ring, &more, &p, Some(&before));
        assert_bounded_moves_explained(&before, &after, &more, &p, epsilon)?;
        // The joiner takes the partitions whose first choice it now is, up to its cap.
        let first_choices = run(&ConsistentHash::new(), &more, &p, None);
        let claims = p.iter().filter(|x| first_choices.owner(x.id()) == Some(joiner.id()));
        let demand = claims.clone().count() as u64;
        let granted = claims.filter(|x| after.owner(x.id()) == Some(joiner.id())).count() as u64;
        prop_assert_eq!(granted, demand.min(bounded_cap(&joiner, &more, p.len(), epsilon)));
    }

    #[test]
    fn bounded_consistent_hash_leave_moves_only_the_lost_workers_partitions(
        w in weighted_workers(16).prop_filter("two workers", |w| w.len() >= 2),
        p in unit_partitions(300),
        leaving in any::<prop::sample::Index>(),
        epsilon in 0.05f64..1.0,
    ) {
        let ring = ConsistentHash::new().with_epsilon(epsilon).unwrap();
        assert_leave_moves_only_the_leavers(&ring, &w, &p, leaving.index(w.len()))?;
    }

    #[test]
    fn bounded_consistent_hash_new_partitions_move_nothing_else(
        w in weighted_workers(16),
        p in unit_partitions(300),
        extra in 1usize..50,
    ) {
        assert_new_partitions_move_nothing_else(&ConsistentHash::bounded(), &w, &p, extra)?;
    }

    #[test]
    fn bounded_consistent_hash_moves_only_for_a_reason_across_changes(
        steps in proptest::collection::vec((0u8..4, 1usize..30), 1..12),
        epsilon in 0.05f64..1.0,
    ) {
        let ring = ConsistentHash::new().with_epsilon(epsilon).unwrap();
        let mut fleet = Churn::new();
        let mut current = run(&ring, &fleet.w, &fleet.p, None);
        for (op, amount) in steps {
            fleet.apply(op, amount, 1 + (amount % 3) as u32);
            let (w, p) = (&fleet.w, &fleet.p);
            let next = run(&ring, w, p, Some(&current));
            assert_covers(&next, w, p)?;
            let c = counts(&next, w);
            for worker in w {
                prop_assert!(c[worker.id()] <= bounded_cap(worker, w, p.len(), epsilon));
            }
            assert_bounded_moves_explained(&current, &next, w, p, epsilon)?;
            current = next;
        }
    }

    #[test]
    fn round_robin_counts_differ_by_at_most_one(
        w in weighted_workers(16),
        p in weighted_partitions(300),
    ) {
        let a = run(&RoundRobin::new(), &w, &p, None);
        let c = counts(&a, &w);
        prop_assert!(c.values().max().unwrap() - c.values().min().unwrap() <= 1);
    }

    #[test]
    fn invalid_input_is_refused_with_a_typed_error(
        w in workers(8),
        p in unit_partitions(50).prop_filter("some", |p| !p.is_empty()),
        which in any::<prop::sample::Index>(),
    ) {
        for s in all_strategies() {
            let mut dup = p.clone();
            dup.push(p[which.index(p.len())].clone());
            let err = s.assign(&StrategyInput::new(&w, &dup)).unwrap_err();
            prop_assert!(matches!(err, StrategyError::DuplicatePartition(_)), "{}: {:?}", s.name(), err);

            let err = s.assign(&StrategyInput::new(&[], &p)).unwrap_err();
            prop_assert_eq!(err, StrategyError::NoWorkers { partitions: p.len() });

            let mut zero = p.clone();
            let i = which.index(p.len());
            zero[i] = zero[i].clone().with_weight(0);
            let err = s.assign(&StrategyInput::new(&w, &zero)).unwrap_err();
            let is_invalid_weight = matches!(err, StrategyError::InvalidWeight { weight: 0, .. });
            prop_assert!(is_invalid_weight);

            prop_assert!(s.assign(&StrategyInput::new(&w, &[])).unwrap().is_empty());
        }
    }
}
