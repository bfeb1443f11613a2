//! Exclusive handoff: the leader's planner of safe record writes, [`Handoff`].

use std::collections::{BTreeMap, BTreeSet};

use parti_strategy::{Assignment, PartitionId, WorkerId};

/// What one worker's record should become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordChange {
    /// Write the record granting exactly these partitions.
    Write(BTreeSet<PartitionId>),
    /// Delete the record: the worker left and is confirmed to hold nothing.
    Delete,
}

/// The record writes of one step, by worker.
pub type Step = BTreeMap<WorkerId, RecordChange>;

/// A point in the sequence of committed writes. A heartbeat listing taken at a ticket
/// proves absence only for records written before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ListingTicket(u64);

/// What a worker may hold, as far as the leader knows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MayHold {
    Known(BTreeSet<PartitionId>),
    /// Anything: the leader has not seen this worker's history.
    Unknown,
}

/// What confirms that a worker holds no more than its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Awaiting {
    /// A heartbeat reporting at least this applied version.
    version: u64,
    /// Or a listing without the worker taken at a ticket at least this one.
    after: ListingTicket,
}

#[derive(Debug, Clone)]
struct Holder {
    /// The partitions its record grants (`None`: no record).
    record: Option<BTreeSet<PartitionId>>,
    may_hold: MayHold,
    /// `None`: it is confirmed to hold at most its record.
    awaiting: Option<Awaiting>,
    /// Write the record at the next step even if unchanged.
    rewrite: bool,
    /// The record a step asked to write and whose write has not been reported yet: the
    /// worker may hold it as soon as it lands, so a confirmation meanwhile (of what the
    /// worker applied before) does not drop it from what it may hold.
    writing: Option<BTreeSet<PartitionId>>,
}

impl Holder {
    fn empty() -> Self {
        Self {
            record: None,
            may_hold: MayHold::Known(BTreeSet::new()),
            awaiting: None,
            rewrite: false,
            writing: None,
        }
    }

    /// Confirmed to hold at most its record — and whatever a write under way may grant.
    fn confirm(&mut self) {
        let mut may_hold = self.record.clone().unwrap_or_default();
        may_hold.extend(self.writing.iter().flatten().cloned());
        self.may_hold = MayHold::Known(may_hold);
        self.awaiting = None;
    }
}

/// The leader's handoff planner: which assignment records it may write next so that no
/// partition is ever granted while another worker may still hold it.
///
/// The leader aims at a *target* assignment but writes it in safe steps. A partition moving
/// from A to B is first removed from A's record; it is added to B's record only once A is
/// *confirmed* to have let go:
///
/// - A's heartbeat reports an applied version ≥ the version of A's latest record (A applied
///   it, so A holds at most what that record grants), or
/// - a heartbeat listing that *started after* that record was written finds no heartbeat of
///   A: A's lease has lapsed, so A has fenced itself, and when it comes back it re-reads its
///   record, which no longer grants the partition.
///
/// For every worker the leader keeps what it *may hold*: its record plus everything revoked
/// from it and not yet confirmed released — or "unknown" (anything) for a worker whose
/// history the leader did not see, as after a leader change. A partition is granted only
/// when no other worker may hold it. Partitions that stay where they are are never touched.
///
/// Nothing here does I/O or reads a clock: the shell writes the records [`Handoff::step`]
/// asks for, reports each outcome, and feeds heartbeat observations in.
///
/// ```
/// use std::collections::{BTreeMap, BTreeSet};
/// use parti_core::decide::{Handoff, RecordChange};
/// use parti_strategy::{Assignment, PartitionId, WorkerId};
///
/// let (a, b) = (WorkerId::new("worker-0"), WorkerId::new("worker-1"));
/// let p = PartitionId::new("p").unwrap();
/// let mut handoff = Handoff::new();
///
/// // Cold start: p is free, so it is granted to A at once.
/// let mut target = Assignment::new();
/// target.assign(p.clone(), a.clone());
/// handoff.plan([a.clone()].into(), &target);
/// let step = handoff.step();
/// assert_eq!(step[&a], RecordChange::Write([p.clone()].into()));
/// handoff.committed(&a, &step[&a], 1);
///
/// // B joins and p should move: first A's record drops it, B gets nothing yet.
/// target.assign(p.clone(), b.clone());
/// handoff.plan([a.clone(), b.clone()].into(), &target);
/// let step = handoff.step();
/// assert_eq!(step[&a], RecordChange::Write(BTreeSet::new()));
/// assert_eq!(step[&b], RecordChange::Write(BTreeSet::new()));
/// for (worker, change) in &step {
///     handoff.committed(worker, change, 2);
/// }
/// assert!(handoff.step().is_empty()); // waiting for A
///
/// // A reports version 2 applied: now p goes to B.
/// assert!(handoff.applied(&a, 2));
/// let step = handoff.step();
/// assert_eq!(step[&b], RecordChange::Write([p.clone()].into()));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Handoff {
    holders: BTreeMap<WorkerId, Holder>,
    members: BTreeSet<WorkerId>,
    target: BTreeMap<WorkerId, BTreeSet<PartitionId>>,
    /// Committed writes so far.
    writes: u64,
}

impl Handoff {
    /// A planner for a fleet without records (nobody holds anything).
    pub fn new() -> Self {
        Self::default()
    }

    /// A planner for a leader that found these records `(worker, version, partitions)`: it
    /// does not know what each worker applied, so every worker may hold anything until a
    /// heartbeat or a listing confirms it.
    pub fn resume(
        records: impl IntoIterator<Item = (WorkerId, u64, BTreeSet<PartitionId>)>,
    ) -> Self {
        let mut handoff = Self::new();
        for (worker, version, partitions) in records {
            handoff.holders.insert(
                worker,
                Holder {
                    record: Some(partitions),
                    may_hold: MayHold::Unknown,
                    awaiting: Some(Awaiting {
                        version,
                        after: ListingTicket(0),
                    }),
                    rewrite: false,
                    writing: None,
                },
            );
        }
        handoff
    }

    /// Sets what to aim at: `members` are the workers counted in, `target` who should own
    /// what (partitions of workers outside `members` are ignored). Records of workers outside
    /// `members` are emptied, then deleted.
    pub fn plan(&mut self, members: BTreeSet<WorkerId>, target: &Assignment) {
        self.target = members
            .iter()
            .map(|worker| (worker.clone(), BTreeSet::new()))
            .collect();
        for (partition, worker) in target.iter() {
            if let Some(partitions) = self.target.get_mut(worker) {
                partitions.insert(partition.clone());
            }
        }
        self.members = members;
    }

    /// Asks the next [`step`](Self::step) to write every existing record again, unchanged
    /// (a new leader stamps the records with its term this way).
    pub fn rewrite_all(&mut self) {
        for holder in self.holders.values_mut() {
            holder.rewrite = holder.record.is_some();
        }
    }

    /// The writes that are safe now: revocations at once, grants of partitions no other
    /// worker may hold, deletions of emptied and confirmed records of departed workers.
    /// Grants count as possibly held from here on, whether or not their write succeeds.
    pub fn step(&mut self) -> Step {
        let members = &self.members;
        self.holders.retain(|worker, holder| {
            members.contains(worker) || holder.record.is_some() || holder.awaiting.is_some()
        });
        let mut blocked: BTreeMap<&PartitionId, BTreeSet<&WorkerId>> = BTreeMap::new();
        let mut unknown: BTreeSet<&WorkerId> = BTreeSet::new();
        for (worker, holder) in &self.holders {
            match &holder.may_hold {
                MayHold::Known(set) => {
                    for partition in set {
                        blocked.entry(partition).or_default().insert(worker);
                    }
                }
                MayHold::Unknown => {
                    unknown.insert(worker);
                }
            }
        }
        let held_by_others = |partition: &PartitionId, worker: &WorkerId| {
            unknown.iter().any(|w| *w != worker)
                || blocked
                    .get(partition)
                    .is_some_and(|holders| holders.iter().any(|w| *w != worker))
        };
        let empty = BTreeSet::new();
        let mut step = Step::new();
        let workers: BTreeSet<&WorkerId> = self.members.iter().chain(self.holders.keys()).collect();
        for worker in workers {
            let member = self.members.contains(worker);
            let wanted = self.target.get(worker).unwrap_or(&empty);
            let holder = self.holders.get(worker);
            let record = holder.and_then(|h| h.record.as_ref());
            let current = record.unwrap_or(&empty);
            let next: BTreeSet<PartitionId> = current
                .intersection(wanted)
                .chain(
                    wanted
                        .difference(current)
                        .filter(|p| !held_by_others(p, worker)),
                )
                .cloned()
                .collect();
            let rewrite = holder.is_some_and(|h| h.rewrite);
            let change = if !member
                && next.is_empty()
                && current.is_empty()
                && holder.is_some_and(|h| h.awaiting.is_none())
            {
                record.map(|_| RecordChange::Delete)
            } else if record != Some(&next) && (member || record.is_some()) || rewrite {
                Some(RecordChange::Write(next))
            } else {
                None
            };
            if let Some(change) = change {
                step.insert(worker.clone(), change);
            }
        }
        for (worker, change) in &step {
            if let RecordChange::Write(partitions) = change {
                let holder = self
                    .holders
                    .entry(worker.clone())
                    .or_insert_with(Holder::empty);
                if let MayHold::Known(set) = &mut holder.may_hold {
                    set.extend(partitions.iter().cloned());
                }
                holder.writing = Some(partitions.clone());
            }
        }
        step
    }

    /// Reports that `change` to `worker`'s record was written at `version`.
    pub fn committed(&mut self, worker: &WorkerId, change: &RecordChange, version: u64) {
        self.writes += 1;
        match change {
            RecordChange::Delete => {
                self.holders.remove(worker);
            }
            RecordChange::Write(partitions) => {
                let holder = self
                    .holders
                    .entry(worker.clone())
                    .or_insert_with(Holder::empty);
                holder.record = Some(partitions.clone());
                holder.rewrite = false;
                holder.writing = None;
                let beyond_record = match &holder.may_hold {
                    MayHold::Known(set) => !set.is_subset(partitions),
                    MayHold::Unknown => true,
                };
                holder.awaiting = beyond_record.then_some(Awaiting {
                    version,
                    after: ListingTicket(self.writes),
                });
            }
        }
    }

    /// Replaces the leader's copy of the records with what was read back from the store
    /// after a write failed or conflicted (`(worker, version, partitions)`). What each
    /// worker may hold only grows; a record that vanished or that somebody else wrote makes
    /// its worker unknown until confirmed.
    pub fn reconcile(
        &mut self,
        records: impl IntoIterator<Item = (WorkerId, u64, BTreeSet<PartitionId>)>,
    ) {
        // Any write may have landed: listings must start after now.
        self.writes += 1;
        let after = ListingTicket(self.writes);
        let mut found: BTreeMap<WorkerId, (u64, BTreeSet<PartitionId>)> = records
            .into_iter()
            .map(|(worker, version, partitions)| (worker, (version, partitions)))
            .collect();
        for (worker, holder) in &mut self.holders {
            // What a failed write would have granted is in what the worker may hold; the
            // records read back say what landed.
            holder.writing = None;
            match found.remove(worker) {
                Some((version, partitions)) => {
                    if let MayHold::Known(set) = &mut holder.may_hold {
                        set.extend(partitions.iter().cloned());
                    }
                    let beyond_record = match &holder.may_hold {
                        MayHold::Known(set) => !set.is_subset(&partitions),
                        MayHold::Unknown => true,
                    };
                    holder.awaiting = beyond_record.then_some(Awaiting { version, after });
                    holder.record = Some(partitions);
                }
                // Still no record: the create failed, and a record never written was
                // never read.
                None if holder.record.is_none() => holder.confirm(),
                None => {
                    holder.record = None;
                    if holder.may_hold != MayHold::Known(BTreeSet::new()) {
                        // Deleted by someone else, with no version to report against:
                        // only a listing can confirm it.
                        holder.awaiting = Some(Awaiting {
                            version: u64::MAX,
                            after,
                        });
                    }
                }
            }
        }
        for (worker, (version, partitions)) in found {
            self.holders.insert(
                worker,
                Holder {
                    record: Some(partitions),
                    may_hold: MayHold::Unknown,
                    awaiting: Some(Awaiting { version, after }),
                    rewrite: false,
                    writing: None,
                },
            );
        }
    }

    /// A ticket for a heartbeat listing about to start.
    pub fn listing_ticket(&self) -> ListingTicket {
        ListingTicket(self.writes)
    }

    /// A heartbeat of `worker` reported `version` applied. Returns whether that confirmed
    /// the worker.
    pub fn applied(&mut self, worker: &WorkerId, version: u64) -> bool {
        match self.holders.get_mut(worker) {
            Some(holder) if holder.awaiting.is_some_and(|a| version >= a.version) => {
                holder.confirm();
                true
            }
            _ => false,
        }
    }

    /// The result of a heartbeat listing taken at `ticket`: the workers with a heartbeat and
    /// the version each reported. Workers not in it are absent. Returns whether anything was
    /// confirmed.
    pub fn listed(&mut self, ticket: ListingTicket, present: &BTreeMap<WorkerId, u64>) -> bool {
        let mut confirmed = false;
        for (worker, holder) in &mut self.holders {
            let Some(awaiting) = holder.awaiting else {
                continue;
            };
            let done = match present.get(worker) {
                Some(version) => *version >= awaiting.version,
                None => ticket >= awaiting.after,
            };
            if done {
                holder.confirm();
                confirmed = true;
            }
        }
        confirmed
    }

    /// Workers whose release the handoff waits for.
    pub fn waiting_for(&self) -> impl Iterator<Item = &WorkerId> + '_ {
        self.holders
            .iter()
            .filter(|(_, holder)| holder.awaiting.is_some())
            .map(|(worker, _)| worker)
    }

    /// Whether the records are the target, every worker is confirmed and no departed
    /// worker has a record left.
    pub fn is_settled(&self) -> bool {
        self.holders.iter().all(|(worker, holder)| {
            holder.awaiting.is_none()
                && !holder.rewrite
                && match self.target.get(worker) {
                    Some(wanted) => holder.record.as_ref() == Some(wanted),
                    None => holder.record.is_none(),
                }
        }) && self
            .members
            .iter()
            .all(|worker| self.holders.contains_key(worker))
    }

    /// Who owns what according to the records written so far.
    pub fn records(&self) -> Assignment {
        let mut assignment = Assignment::new();
        for (worker, holder) in &self.holders {
            for partition in holder.record.iter().flatten() {
                assignment.assign(partition.clone(), worker.clone());
            }
        }
        assignment
    }
}

#[cfg(test)]
mod tests;
