//! Exclusive handoff: the leader's planner of safe record writes, [`Handoff`].

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

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

/// A heartbeat as the leader saw it (by watch or in a listing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Beat {
    /// The heartbeat session that wrote it (the revision of the session's first write,
    /// [`wire::Heartbeat::session`](crate::wire::Heartbeat::session)). Sessions of one
    /// worker id follow each other, each beginning only once the previous one's heartbeat
    /// is gone, mostly in increasing order — not always after the heartbeat bucket was
    /// lost (a session raised to its record's session is followed by one numbered by the
    /// new bucket's lower revisions when that record was deleted meanwhile), which is why
    /// the leader also orders heartbeats by `revision`.
    pub holder: u64,
    /// The revision of the heartbeat entry (0: unknown). Within one life of the bucket,
    /// revisions order every write: of two heartbeats of one key, the higher revision is
    /// the later.
    pub revision: u64,
    /// The assignment version it reports applied.
    pub applied: u64,
    /// The highest leader term its worker has seen.
    pub term_seen: u64,
    /// Whether it may show that an earlier session of its worker ended: always with one
    /// heartbeat bucket; with two, only when both hold this session (see
    /// [`HeartbeatView`](super::HeartbeatView)). A beat that may not is taken only for its
    /// own session's reports.
    pub confirms_session: bool,
}

/// A worker's newest heartbeat session, as the leader saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    session: u64,
    /// The revision of the entry it was seen in (0: unknown).
    revision: u64,
}

/// How many ended sessions of one worker id the planner remembers (a record read back,
/// or a write under way, names one of the last few at most).
const ENDED_KEPT: usize = 8;

/// `session` of `worker` as a record's session: 0 (of before) once it is seen ended.
fn unless_ended(ended: &BTreeMap<WorkerId, VecDeque<u64>>, worker: &WorkerId, session: u64) -> u64 {
    if ended
        .get(worker)
        .is_some_and(|ended| ended.contains(&session))
    {
        0
    } else {
        session
    }
}

/// An assignment record as read from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Whose record.
    pub worker: WorkerId,
    /// Its version (`u64::MAX` if unreadable: no heartbeat confirms it).
    pub version: u64,
    /// The heartbeat session it was written for (`None` if unreadable).
    pub holder: Option<u64>,
    /// The partitions it grants (none if unreadable).
    pub partitions: BTreeSet<PartitionId>,
}

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
    /// The heartbeat session the record was written for (`None`: unreadable).
    record_for: Option<u64>,
    /// Listings at this ticket or later were taken after the record was written for
    /// `record_for`: a heartbeat of another session in one shows that session ended.
    record_ticket: ListingTicket,
    /// The session the write under way is for.
    writing_for: u64,
}

impl Holder {
    fn empty() -> Self {
        Self {
            record: None,
            may_hold: MayHold::Known(BTreeSet::new()),
            awaiting: None,
            rewrite: false,
            writing: None,
            record_for: None,
            record_ticket: ListingTicket(0),
            writing_for: 0,
        }
    }

    /// A holder of a record read from the store, whose worker may hold anything until a
    /// heartbeat or a listing after `after` confirms it.
    fn unconfirmed(record: StoredRecord, after: ListingTicket) -> Self {
        Self {
            record: Some(record.partitions),
            may_hold: MayHold::Unknown,
            awaiting: Some(Awaiting {
                version: record.version,
                after,
            }),
            rewrite: false,
            writing: None,
            record_for: record.holder,
            record_ticket: after,
            writing_for: 0,
        }
    }

    /// A holder with no record whose worker may hold anything (it reported applying a
    /// record the leader does not know) until a heartbeat reports a record written for it
    /// applied, or a listing after `after` finds it absent.
    fn unknown(after: ListingTicket) -> Self {
        Self {
            may_hold: MayHold::Unknown,
            awaiting: Some(Awaiting {
                version: u64::MAX,
                after,
            }),
            ..Self::empty()
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
/// use parti_core::decide::{Beat, Handoff, RecordChange};
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
/// let beat = Beat { holder: 0, revision: 0, applied: 2, term_seen: 1, confirms_session: true };
/// assert!(handoff.heartbeat(&a, &beat));
/// let step = handoff.step();
/// assert_eq!(step[&b], RecordChange::Write([p.clone()].into()));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Handoff {
    holders: BTreeMap<WorkerId, Holder>,
    /// The newest heartbeat session seen of each worker id, and the revision it was seen
    /// at.
    sessions: BTreeMap<WorkerId, Seen>,
    /// Sessions seen to have ended: a later entry of the key held another session. A
    /// record written for one of them counts as written for a session of before.
    ended: BTreeMap<WorkerId, VecDeque<u64>>,
    /// The heartbeat bucket was lost: heartbeats written before may have vanished without
    /// expiring, so neither absence nor a later session proves a release until every lease
    /// of before the loss has ended (the calculator lifts it after `heartbeat_ttl`).
    blind: bool,
    members: BTreeSet<WorkerId>,
    target: BTreeMap<WorkerId, BTreeSet<PartitionId>>,
    /// Committed writes so far.
    writes: u64,
    /// Workers whose record this planner deleted (or never wrote) once they were
    /// confirmed to hold nothing, and who are not in the plan: a heartbeat of theirs that
    /// reports a version applied before says nothing new.
    released: BTreeSet<WorkerId>,
}

impl Handoff {
    /// A planner for a fleet without records (nobody holds anything).
    pub fn new() -> Self {
        Self::default()
    }

    /// A planner for a leader that found these records: it does not know what each worker
    /// applied, so every worker may hold anything until a heartbeat or a listing confirms
    /// it.
    pub fn resume(records: impl IntoIterator<Item = StoredRecord>) -> Self {
        let mut handoff = Self::new();
        for record in records {
            handoff.holders.insert(
                record.worker.clone(),
                Holder::unconfirmed(record, ListingTicket(0)),
            );
        }
        handoff
    }

    /// The heartbeat session a record for `worker` is written for: the newest seen, else
    /// the one its record was written for, else 0 (no session: nobody applies it).
    pub fn holder(&self, worker: &WorkerId) -> u64 {
        let recorded = self.holders.get(worker).and_then(|h| h.record_for);
        self.sessions
            .get(worker)
            .map(|seen| seen.session)
            .max(recorded)
            .unwrap_or(0)
    }

    /// A later entry of `worker`'s key holds another session than `session`: that one
    /// ended (its heartbeat was deleted or expired), and a record written for it counts as
    /// written for a session of before.
    fn session_ended(&mut self, worker: &WorkerId, session: u64) {
        let ended = self.ended.entry(worker.clone()).or_default();
        if !ended.contains(&session) {
            ended.push_back(session);
        }
        // Only recent ones can still come back in a record read or a write under way. The
        // oldest go first — not the lowest: after a loss of the bucket a later session can
        // have a lower number.
        if ended.len() > ENDED_KEPT {
            ended.pop_front();
        }
        if let Some(holder) = self.holders.get_mut(worker) {
            if holder.record_for == Some(session) {
                holder.record_for = Some(0);
            }
            if holder.writing_for == session {
                holder.writing_for = 0;
            }
        }
    }

    /// The heartbeat bucket was lost (deleted, or the server restarted without it): until
    /// [`see_again`](Self::see_again), no release is confirmed by absence or by a later
    /// session and no partition of a worker on a new session is granted again. The sessions
    /// seen are forgotten (the new bucket's revisions start again, so they no longer order
    /// heartbeats). What each record was written for is kept: a session begun after the
    /// loss numbers itself above its record's
    /// ([`Heartbeat::floor`](crate::wire::Heartbeat::floor)), so a heartbeat of the
    /// record's own session shows that session went on — which it does when the loss was
    /// found late, through a handle of the bucket's predecessor, long after the workers
    /// moved to the new bucket: its workers keep what they hold.
    pub fn heartbeats_lost(&mut self) {
        self.distrust_absence();
        self.sessions.clear();
        self.ended.clear();
    }

    /// A heartbeat may have vanished before its TTL without the bucket's loss being seen
    /// (this process's own heartbeat did, or the process is too young to have seen a loss
    /// before it began): until [`see_again`](Self::see_again), absence and a later session
    /// prove no release, and no partition of a worker on a new session is granted again.
    /// Unlike [`heartbeats_lost`](Self::heartbeats_lost) the sessions seen are kept: a
    /// session begun after a loss numbers itself above its record's
    /// ([`Heartbeat::floor`](crate::wire::Heartbeat::floor)), so they stay comparable.
    pub fn distrust_absence(&mut self) {
        self.blind = true;
    }

    /// Every lease of before the heartbeat bucket's loss has ended: releases are confirmed
    /// again as usual.
    pub fn see_again(&mut self) {
        self.blind = false;
    }

    /// Whether `worker` follows its record: a heartbeat of the session the record was
    /// written for has been seen (it has not restarted since).
    pub fn follows_its_record(&self, worker: &WorkerId) -> bool {
        let recorded = self.holders.get(worker).and_then(|h| h.record_for);
        recorded.is_some() && recorded == self.sessions.get(worker).map(|seen| seen.session)
    }

    /// Whether `worker`'s record was written for an earlier session than the newest seen
    /// (which applies none of it until it is written again).
    fn written_for_another(&self, worker: &WorkerId, holder: &Holder) -> bool {
        let (Some(_), Some(written_for)) = (&holder.record, holder.record_for) else {
            return false;
        };
        self.sessions
            .get(worker)
            .is_some_and(|newest| written_for < newest.session)
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
        let (members, released) = (&self.members, &mut self.released);
        self.holders.retain(|worker, holder| {
            let kept =
                members.contains(worker) || holder.record.is_some() || holder.awaiting.is_some();
            if !kept {
                released.insert(worker.clone());
            }
            kept
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
            // A record written for an earlier session grants the newest one nothing: every
            // partition it would keep is a new grant, subject to the same check.
            let stale = holder.is_some_and(|h| self.written_for_another(worker, h));
            let current = if stale {
                &empty
            } else {
                record.unwrap_or(&empty)
            };
            // A new session gets nothing while blind: its own old session may still hold.
            let grants = !(stale && self.blind);
            let next: BTreeSet<PartitionId> = current
                .intersection(wanted)
                .chain(
                    wanted
                        .difference(current)
                        .filter(|p| grants && !held_by_others(p, worker)),
                )
                .cloned()
                .collect();
            // A worker with no record that may hold more than nothing gets one (empty, if it
            // is not in the plan): applying it is how it confirms, absence aside.
            let unaccounted = record.is_none()
                && holder.is_some_and(|h| h.awaiting.is_some() && h.writing.is_none());
            let rewrite = stale || unaccounted || holder.is_some_and(|h| h.rewrite);
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
                let writing_for = self.holder(worker);
                let holder = self
                    .holders
                    .entry(worker.clone())
                    .or_insert_with(Holder::empty);
                if let MayHold::Known(set) = &mut holder.may_hold {
                    set.extend(partitions.iter().cloned());
                }
                holder.writing = Some(partitions.clone());
                holder.writing_for = writing_for;
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
                self.released.insert(worker.clone());
            }
            RecordChange::Write(partitions) => {
                let holder = self
                    .holders
                    .entry(worker.clone())
                    .or_insert_with(Holder::empty);
                holder.record = Some(partitions.clone());
                holder.record_for = Some(unless_ended(&self.ended, worker, holder.writing_for));
                holder.record_ticket = ListingTicket(self.writes);
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
    /// after a write failed or conflicted. What each worker may hold only grows; a record
    /// that vanished or that somebody else wrote makes its worker unknown until confirmed.
    pub fn reconcile(&mut self, records: impl IntoIterator<Item = StoredRecord>) {
        // Any write may have landed: listings must start after now.
        self.writes += 1;
        let after = ListingTicket(self.writes);
        let mut found: BTreeMap<WorkerId, StoredRecord> = records
            .into_iter()
            .map(|record| (record.worker.clone(), record))
            .collect();
        let ended = &self.ended;
        for (worker, holder) in &mut self.holders {
            // What a failed write would have granted is in what the worker may hold; the
            // records read back say what landed.
            holder.writing = None;
            match found.remove(worker) {
                Some(record) => {
                    if let MayHold::Known(set) = &mut holder.may_hold {
                        set.extend(record.partitions.iter().cloned());
                    }
                    let beyond_record = match &holder.may_hold {
                        MayHold::Known(set) => !set.is_subset(&record.partitions),
                        MayHold::Unknown => true,
                    };
                    holder.awaiting = beyond_record.then_some(Awaiting {
                        version: record.version,
                        after,
                    });
                    holder.record = Some(record.partitions);
                    holder.record_for = record
                        .holder
                        .map(|session| unless_ended(ended, worker, session));
                    holder.record_ticket = after;
                }
                // Still no record: the create failed, and a record never written was
                // never read.
                None if holder.record.is_none() && holder.awaiting.is_none() => holder.confirm(),
                // Still no record, and what it held before its record vanished is not
                // confirmed released yet.
                None if holder.record.is_none() => {}
                None => {
                    // The session it was written for is kept: a later session's heartbeat
                    // still proves that one holds nothing.
                    holder.record = None;
                    if holder.may_hold != MayHold::Known(BTreeSet::new()) {
                        // Deleted by someone else, with no version to report against:
                        // only a listing (or a later session) can confirm it.
                        holder.awaiting = Some(Awaiting {
                            version: u64::MAX,
                            after,
                        });
                    }
                }
            }
        }
        for (worker, mut record) in found {
            record.holder = record
                .holder
                .map(|session| unless_ended(&self.ended, &worker, session));
            self.holders
                .insert(worker, Holder::unconfirmed(record, after));
        }
    }

    /// A ticket for a heartbeat listing about to start.
    pub fn listing_ticket(&self) -> ListingTicket {
        ListingTicket(self.writes)
    }

    /// A heartbeat of `worker` was seen. Returns whether it confirmed a release.
    ///
    /// A heartbeat of the session the record was written for confirms the worker once it
    /// reports the awaited version. A heartbeat of a *later* session confirms that the
    /// record's session holds nothing: heartbeats are written by compare-and-set and a
    /// session begins only where no heartbeat exists, so the later session's heartbeat
    /// proves that the earlier one's expired or was deleted — and by then its process had
    /// fenced itself or released everything. The later session holds only what a record
    /// written for it grants, and records are written for the newest session seen, so
    /// there is none yet.
    ///
    /// Heartbeats older than one already seen for the key (a listing or a watch running
    /// behind) are ignored: older by revision, or of a lower session. A heartbeat at a
    /// later revision of another session — even a lower-numbered one — shows that the
    /// session seen before ended.
    pub fn heartbeat(&mut self, worker: &WorkerId, beat: &Beat) -> bool {
        if !beat.confirms_session {
            // Of its own session only: it shows no other session's end.
            let current = self.sessions.get(worker).map(|seen| seen.session);
            let recorded = self.holders.get(worker).and_then(|h| h.record_for);
            if current.or(recorded) != Some(beat.holder) {
                return false;
            }
        }
        if let Some(seen) = self.sessions.get(worker).copied() {
            // By revision when both are known (the order of writes), else by session.
            let order = if beat.revision != 0 && seen.revision != 0 {
                beat.revision.cmp(&seen.revision)
            } else {
                beat.holder.cmp(&seen.session)
            };
            match order {
                Ordering::Less => return false,
                Ordering::Equal if beat.holder != seen.session => return false,
                Ordering::Equal => {}
                Ordering::Greater if beat.holder != seen.session => {
                    self.session_ended(worker, seen.session);
                }
                Ordering::Greater => {}
            }
        }
        self.sessions.insert(
            worker.clone(),
            Seen {
                session: beat.holder,
                revision: beat.revision,
            },
        );
        // A number can come back after a loss of the bucket (sessions raised to the same
        // record's session): the later session is a new one, current now.
        if let Some(ended) = self.ended.get_mut(worker) {
            ended.retain(|session| *session != beat.holder);
        }
        if beat.applied > 0 && !self.holders.contains_key(worker) && !self.released.contains(worker)
        {
            // It applied a record this leader has no copy of (the records were lost, or
            // deleted by a leader before this one): it may hold anything until it reports
            // applying a record written now, or is found absent.
            self.holders
                .insert(worker.clone(), Holder::unknown(ListingTicket(self.writes)));
            return false;
        }
        let Some(holder) = self.holders.get_mut(worker) else {
            return false;
        };
        match holder.record_for {
            Some(written_for) if written_for > beat.holder => false,
            Some(written_for) if written_for < beat.holder && self.blind => false,
            Some(written_for) if written_for < beat.holder => {
                let writing = holder
                    .writing
                    .clone()
                    .filter(|_| holder.writing_for == beat.holder)
                    .unwrap_or_default();
                let known = MayHold::Known(writing);
                let confirmed = holder.awaiting.is_some() || holder.may_hold != known;
                holder.may_hold = known;
                holder.awaiting = None;
                confirmed
            }
            _ if holder.awaiting.is_some_and(|a| beat.applied >= a.version) => {
                holder.confirm();
                true
            }
            _ => false,
        }
    }

    /// The result of a heartbeat listing taken at `ticket`: the readable heartbeats, and
    /// the keys that hold something else (present, so they confirm no release). Workers in
    /// neither are absent. Returns whether anything was confirmed.
    pub fn listed(
        &mut self,
        ticket: ListingTicket,
        beats: &BTreeMap<WorkerId, Beat>,
        unreadable: &BTreeSet<WorkerId>,
    ) -> bool {
        let mut confirmed = false;
        for (worker, beat) in beats {
            // Taken after the record was written: the key holding another session shows
            // that the record's session ended (only one exists at a time, and it never
            // comes back).
            let record_ended = self.holders.get(worker).and_then(|holder| {
                holder
                    .record_for
                    .filter(|s| *s != 0 && *s != beat.holder && ticket >= holder.record_ticket)
                    .filter(|_| beat.confirms_session)
            });
            if let Some(session) = record_ended {
                self.session_ended(worker, session);
            }
            confirmed |= self.heartbeat(worker, beat);
        }
        for (worker, holder) in &mut self.holders {
            let Some(awaiting) = holder.awaiting else {
                continue;
            };
            if !self.blind
                && !beats.contains_key(worker)
                && !unreadable.contains(worker)
                && ticket >= awaiting.after
            {
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
                && !self.written_for_another(worker, holder)
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
