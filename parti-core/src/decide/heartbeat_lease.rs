//! The worker's heartbeat lease when it writes its heartbeat to two buckets: which
//! acknowledged writes extend the lease, and when an entry created in the middle of a
//! session starts to count.
//!
//! With one bucket every acknowledged write extends the lease to its send time + the lease
//! duration: a renewal is a compare-and-set of the live entry, so once the leader saw the
//! entry absent, no later write of the session can land (ARCHITECTURE.md, "Why ownership
//! is exclusive"). With two buckets — the second on another node, so that a stream failing
//! over on one does not stop the other — the leader takes a session for gone only when two
//! listings, one of each bucket, taken within less than a TTL of each other, both lack it.
//! An entry that expired while its bucket was unreachable is created again, and a create
//! that lands after the leader's listing would revive a session the leader has given up.
//! So an entry created after the session's first write is *unconfirmed*: its writes count
//! only once a renewal of the other entry — which must be a confirmed one, sent while the
//! lease still held and after the create was acknowledged — is acknowledged too. That
//! renewal proves the other entry was live after the create landed; had the leader seen
//! both absent, one of them could not have been (the argument is in ARCHITECTURE.md).
//!
//! Pure: times are arguments, results are return values.

use std::time::{Duration, Instant};

/// One of the two heartbeat entries of a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    /// The entry in the heartbeat bucket: the session's first write goes here.
    First,
    /// The entry in the second heartbeat bucket.
    Second,
}

impl Slot {
    /// Its position in a pair (`First` 0, `Second` 1).
    pub(crate) fn index(self) -> usize {
        match self {
            Self::First => 0,
            Self::Second => 1,
        }
    }

    /// The other slot.
    pub fn other(self) -> Self {
        match self {
            Self::First => Self::Second,
            Self::Second => Self::First,
        }
    }
}

/// What a write that was acknowledged did to its entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Wrote {
    /// Created the entry (it was absent).
    Create,
    /// Updated the live entry at the revision last written (compare-and-set).
    Update,
}

#[derive(Debug, Clone, Copy, Default)]
struct SlotState {
    /// Its writes extend the lease.
    confirmed: bool,
    /// When the create of the current (unconfirmed) entry was acknowledged.
    created_at: Option<Instant>,
    /// The latest send time of an acknowledged write of the current entry: what it credits
    /// once confirmed.
    latest_sent: Option<Instant>,
}

/// The lease of one heartbeat session over one or two entries.
///
/// ```
/// use std::time::{Duration, Instant};
/// use parti_core::decide::{HeartbeatLease, Slot, Wrote};
///
/// let lease = Duration::from_millis(2_700);
/// let mut book = HeartbeatLease::new(lease);
/// let t0 = Instant::now();
/// // The session's first write: counts at once.
/// assert_eq!(book.acknowledged(Slot::First, Wrote::Create, t0, t0), Some(t0 + lease));
/// // The second entry, created after it: counts once a renewal of the first confirms it.
/// let t1 = t0 + Duration::from_millis(10);
/// assert_eq!(book.acknowledged(Slot::Second, Wrote::Create, t1, t1), None);
/// let t2 = t0 + Duration::from_secs(1);
/// assert_eq!(book.acknowledged(Slot::First, Wrote::Update, t2, t2), Some(t2 + lease));
/// assert!(book.is_confirmed(Slot::Second));
/// ```
#[derive(Debug, Clone)]
pub struct HeartbeatLease {
    duration: Duration,
    slots: [SlotState; 2],
    /// Until when the lease holds (`None`: nothing acknowledged yet).
    until: Option<Instant>,
}

impl HeartbeatLease {
    /// A session with nothing written yet, whose writes extend the lease by `duration` (the
    /// heartbeat TTL minus its safety margin) from their send time.
    pub fn new(duration: Duration) -> Self {
        Self {
            duration,
            slots: [SlotState::default(); 2],
            until: None,
        }
    }

    /// Until when the lease holds, if anything was acknowledged.
    pub fn until(&self) -> Option<Instant> {
        self.until
    }

    /// Whether `slot`'s writes extend the lease.
    pub fn is_confirmed(&self, slot: Slot) -> bool {
        self.slots[slot.index()].confirmed
    }

    /// Whether `slot` has an entry this session counts (confirmed, or created and waiting
    /// for confirmation): a write of it that landed without an acknowledgement is counted
    /// as a create when not.
    pub fn has_entry(&self, slot: Slot) -> bool {
        let state = &self.slots[slot.index()];
        state.confirmed || state.created_at.is_some()
    }

    /// Whether either entry's writes extend the lease: if neither does, the session can
    /// never be extended again and is over.
    pub fn is_alive(&self) -> bool {
        self.slots.iter().any(|slot| slot.confirmed)
    }

    /// A write of `slot`, sent at `sent`, was acknowledged at `acked`. Returns the lease's
    /// new end when it grew.
    pub fn acknowledged(
        &mut self,
        slot: Slot,
        wrote: Wrote,
        sent: Instant,
        acked: Instant,
    ) -> Option<Instant> {
        let before = self.until;
        let first_write = before.is_none() && !self.is_alive();
        let state = &mut self.slots[slot.index()];
        match wrote {
            Wrote::Create if first_write && slot == Slot::First => {
                *state = SlotState {
                    confirmed: true,
                    created_at: None,
                    latest_sent: Some(sent),
                };
                self.credit(sent);
            }
            Wrote::Create => {
                *state = SlotState {
                    confirmed: false,
                    created_at: Some(acked),
                    latest_sent: Some(sent),
                };
            }
            Wrote::Update => {
                state.latest_sent = Some(state.latest_sent.map_or(sent, |l| l.max(sent)));
                if state.confirmed {
                    self.credit(sent);
                    self.confirm(slot.other(), sent, before);
                }
            }
        }
        self.until.filter(|until| before.is_none_or(|b| *until > b))
    }

    /// A write of `slot` that created its entry landed without an acknowledgement (a read,
    /// at `seen`, found it): the entry counts as created — confirmed if it began the
    /// session — but credits nothing, since which write landed, and when it was sent, is
    /// not known; the next acknowledged renewal does.
    pub fn create_landed(&mut self, slot: Slot, seen: Instant) {
        let first_write = slot == Slot::First && self.until.is_none() && !self.is_alive();
        self.slots[slot.index()] = SlotState {
            confirmed: first_write,
            created_at: (!first_write).then_some(seen),
            latest_sent: None,
        };
    }

    /// `slot`'s entry is gone (expired, deleted, or its bucket lost): its next write creates
    /// it, unconfirmed.
    pub fn lost(&mut self, slot: Slot) {
        self.slots[slot.index()] = SlotState::default();
    }

    /// A confirmed renewal sent at `sent`, when the lease held until `held` (as it stood
    /// before the renewal's acknowledgement), confirms `slot`'s entry if that was created
    /// and acknowledged before `sent`, and `sent` was within the lease.
    fn confirm(&mut self, slot: Slot, sent: Instant, held: Option<Instant>) {
        let state = &mut self.slots[slot.index()];
        let confirms = !state.confirmed
            && state.created_at.is_some_and(|created| created < sent)
            && held.is_some_and(|held| sent < held);
        if confirms {
            state.confirmed = true;
            state.created_at = None;
            if let Some(latest) = state.latest_sent {
                self.credit(latest);
            }
        }
    }

    fn credit(&mut self, sent: Instant) {
        let until = sent + self.duration;
        if self.until.is_none_or(|current| until > current) {
            self.until = Some(until);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LEASE: Duration = Duration::from_millis(2_700);

    fn at(ms: u64) -> Instant {
        // One base for every test: `Instant` has no constructor from a number.
        static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *BASE.get_or_init(Instant::now) + Duration::from_millis(ms)
    }

    fn started() -> HeartbeatLease {
        let mut book = HeartbeatLease::new(LEASE);
        assert_eq!(
            book.acknowledged(Slot::First, Wrote::Create, at(0), at(5)),
            Some(at(0) + LEASE)
        );
        book
    }

    #[test]
    fn the_first_write_of_a_session_counts_at_once() {
        let book = started();
        assert!(book.is_confirmed(Slot::First));
        assert!(!book.is_confirmed(Slot::Second));
        assert!(book.is_alive());
    }

    #[test]
    fn a_session_cannot_begin_in_the_second_bucket() {
        let mut book = HeartbeatLease::new(LEASE);
        assert_eq!(
            book.acknowledged(Slot::Second, Wrote::Create, at(0), at(5)),
            None
        );
        assert!(!book.is_alive());
    }

    #[test]
    fn a_later_create_counts_only_after_a_renewal_of_the_other_entry_sent_after_its_ack() {
        let mut book = started();
        // Second created at 10, acknowledged at 20; renewed at 500: nothing yet.
        assert_eq!(
            book.acknowledged(Slot::Second, Wrote::Create, at(10), at(20)),
            None
        );
        assert_eq!(
            book.acknowledged(Slot::Second, Wrote::Update, at(500), at(510)),
            None
        );
        // A renewal of First sent before the create's acknowledgement does not confirm it.
        assert_eq!(
            book.acknowledged(Slot::First, Wrote::Update, at(15), at(600)),
            Some(at(15) + LEASE)
        );
        assert!(!book.is_confirmed(Slot::Second));
        // One sent after it does, and the Second's latest write counts from then on.
        assert_eq!(
            book.acknowledged(Slot::First, Wrote::Update, at(100), at(700)),
            Some(at(500) + LEASE)
        );
        assert!(book.is_confirmed(Slot::Second));
        assert_eq!(
            book.acknowledged(Slot::Second, Wrote::Update, at(1_000), at(1_010)),
            Some(at(1_000) + LEASE)
        );
    }

    #[test]
    fn a_create_found_landed_counts_but_credits_nothing() {
        let mut book = HeartbeatLease::new(LEASE);
        book.create_landed(Slot::First, at(50));
        assert!(book.is_alive() && book.until().is_none());
        assert_eq!(
            book.acknowledged(Slot::First, Wrote::Update, at(1_000), at(1_010)),
            Some(at(1_000) + LEASE)
        );
        book.create_landed(Slot::Second, at(1_100));
        assert!(book.has_entry(Slot::Second) && !book.is_confirmed(Slot::Second));
        // Confirmed by a renewal sent after it was found; its own writes count from then.
        book.acknowledged(Slot::First, Wrote::Update, at(1_200), at(1_210));
        assert!(book.is_confirmed(Slot::Second));
        assert_eq!(
            book.until(),
            Some(at(1_200) + LEASE),
            "nothing credited for it"
        );
    }

    #[test]
    fn a_renewal_sent_after_the_lease_ended_confirms_nothing() {
        let mut book = started();
        book.acknowledged(Slot::Second, Wrote::Create, at(10), at(20));
        let late = at(0) + LEASE + Duration::from_millis(1);
        // The First entry survived (a slow write landing within its TTL), but the lease had
        // ended when this renewal was sent.
        book.acknowledged(Slot::First, Wrote::Update, late, late);
        assert!(!book.is_confirmed(Slot::Second));
    }

    #[test]
    fn an_unconfirmed_entry_confirms_nothing() {
        let mut book = started();
        book.lost(Slot::First);
        book.acknowledged(Slot::Second, Wrote::Create, at(10), at(20));
        book.acknowledged(Slot::First, Wrote::Create, at(30), at(40));
        book.acknowledged(Slot::Second, Wrote::Update, at(50), at(60));
        book.acknowledged(Slot::First, Wrote::Update, at(70), at(80));
        assert!(!book.is_alive(), "neither entry is confirmed");
        assert_eq!(book.until(), Some(at(0) + LEASE), "nothing extended it");
    }

    #[test]
    fn an_entry_lost_and_created_again_rides_on_the_other() {
        let mut book = started();
        book.acknowledged(Slot::Second, Wrote::Create, at(10), at(20));
        book.acknowledged(Slot::First, Wrote::Update, at(1_000), at(1_010));
        assert!(book.is_confirmed(Slot::Second));
        // The first bucket's stream fails over: its entry expires; the second carries on.
        book.lost(Slot::First);
        for t in [2_000, 3_000, 4_000, 5_000] {
            assert_eq!(
                book.acknowledged(Slot::Second, Wrote::Update, at(t), at(t + 10)),
                Some(at(t) + LEASE)
            );
        }
        book.acknowledged(Slot::First, Wrote::Create, at(5_500), at(5_600));
        assert!(!book.is_confirmed(Slot::First));
        book.acknowledged(Slot::Second, Wrote::Update, at(6_000), at(6_010));
        assert!(book.is_confirmed(Slot::First));
    }

    proptest! {
        /// Whatever the order of acknowledgements, the lease never ends later than the
        /// latest send of a write that counted + the lease, never shrinks, and is extended
        /// only by writes of a confirmed entry.
        #[test]
        fn the_lease_only_grows_and_only_from_counted_writes(
            writes in proptest::collection::vec((any::<bool>(), any::<bool>(), 0u64..10_000, 0u64..200, any::<bool>()), 1..40)
        ) {
            let mut book = HeartbeatLease::new(LEASE);
            let mut latest_sent = None::<Instant>;
            let mut previous = None;
            for (second, create, sent, delay, lose) in writes {
                let slot = if second { Slot::Second } else { Slot::First };
                if lose {
                    book.lost(slot);
                    continue;
                }
                let wrote = if create { Wrote::Create } else { Wrote::Update };
                let grew = book.acknowledged(slot, wrote, at(sent), at(sent + delay));
                latest_sent = Some(latest_sent.map_or(at(sent), |l: Instant| l.max(at(sent))));
                if let Some(until) = grew {
                    prop_assert!(previous.is_none_or(|p| until > p));
                    prop_assert!(until <= latest_sent.unwrap() + LEASE);
                    prop_assert!(book.is_alive());
                }
                prop_assert!(book.until() >= previous);
                previous = book.until();
            }
        }
    }
}
