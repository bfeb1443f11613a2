//! What a fleet of `PartitionConsumer`s did with a stream, checked as it happens: every
//! handling of every message, which worker ran it and when. Shared by the consumer test and
//! `cargo xtask consumer-demo`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// The record of every handling.
#[derive(Debug, Clone, Default)]
pub struct Ledger(Arc<Mutex<State>>);

#[derive(Debug, Default)]
struct State {
    /// The handler running per partition: worker and sequence number.
    active: HashMap<String, (String, u64)>,
    /// Two handlers of one partition ran at once in two workers.
    overlaps: Vec<String>,
    /// Completed handlings per (partition, sequence).
    handled: HashMap<(String, u64), u32>,
    /// The next sequence number whose first handling may start, per partition.
    next_first: HashMap<String, u64>,
    /// A first handling out of order.
    out_of_order: Vec<String>,
    /// When each partition last had a first handling, and its longest wait between two.
    last_first: HashMap<String, Instant>,
    longest_gap: HashMap<String, Duration>,
}

/// A handling under way; drop it (done or cancelled) when the handler ends.
#[derive(Debug)]
pub struct Handling {
    ledger: Ledger,
    partition: String,
    seq: u64,
    done: bool,
}

impl Handling {
    /// The handler finished with the message.
    pub fn done(mut self) {
        self.done = true;
    }
}

impl Drop for Handling {
    fn drop(&mut self) {
        let mut state = self.ledger.lock();
        state.active.remove(&self.partition);
        if self.done {
            *state
                .handled
                .entry((self.partition.clone(), self.seq))
                .or_default() += 1;
        }
    }
}

/// What the ledger shows against what was published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Messages published.
    pub published: u64,
    /// Published messages never handled to the end.
    pub lost: u64,
    /// Handlings beyond the first of a message.
    pub duplicates: u64,
    /// Messages handled more than once.
    pub duplicated_messages: u64,
    /// Moments two workers handled one partition at once.
    pub overlaps: Vec<String>,
    /// First handlings out of sequence order.
    pub out_of_order: Vec<String>,
    /// The longest wait between two first handlings of one partition.
    pub longest_gap: Duration,
    /// Handled messages per partition.
    pub per_partition: BTreeMap<String, u64>,
}

impl Ledger {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `worker` starts handling message `seq` (from 1) of `partition`.
    pub fn start(&self, partition: &str, worker: &str, seq: u64) -> Handling {
        let mut state = self.lock();
        let now = Instant::now();
        if let Some((other, other_seq)) = state.active.get(partition) {
            if other != worker {
                let overlap = format!(
                    "{partition}: {worker} started #{seq} while {other} handled #{other_seq}"
                );
                state.overlaps.push(overlap);
            }
        }
        state
            .active
            .insert(partition.to_owned(), (worker.to_owned(), seq));
        let next = state.next_first.entry(partition.to_owned()).or_insert(1);
        if seq == *next {
            *next += 1;
            if let Some(last) = state.last_first.insert(partition.to_owned(), now) {
                let gap = now - last;
                let longest = state.longest_gap.entry(partition.to_owned()).or_default();
                *longest = (*longest).max(gap);
            }
        } else if seq > *next {
            let expected = *next;
            state.out_of_order.push(format!(
                "{partition}: #{seq} first handled by {worker} before #{expected}"
            ));
        }
        drop(state);
        Handling {
            ledger: self.clone(),
            partition: partition.to_owned(),
            seq,
            done: false,
        }
    }

    /// Messages handled to the end so far.
    pub fn handled(&self) -> u64 {
        self.lock().handled.len() as u64
    }

    /// The report against `published` messages per partition (sequences 1..=n).
    pub fn report(&self, published: &BTreeMap<String, u64>) -> Report {
        let state = self.lock();
        let mut lost = 0;
        let mut per_partition = BTreeMap::new();
        for (partition, count) in published {
            for seq in 1..=*count {
                if !state.handled.contains_key(&(partition.clone(), seq)) {
                    lost += 1;
                }
            }
            let handled = state.handled.keys().filter(|(p, _)| p == partition).count() as u64;
            per_partition.insert(partition.clone(), handled);
        }
        let duplicates = state.handled.values().map(|n| u64::from(n - 1)).sum();
        let duplicated_messages = state.handled.values().filter(|n| **n > 1).count() as u64;
        Report {
            published: published.values().sum(),
            lost,
            duplicates,
            duplicated_messages,
            overlaps: state.overlaps.clone(),
            out_of_order: state.out_of_order.clone(),
            longest_gap: state
                .longest_gap
                .values()
                .max()
                .copied()
                .unwrap_or_default(),
            per_partition,
        }
    }
}
