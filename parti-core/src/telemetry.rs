//! The metrics parti records, through the [`metrics`] facade.
//!
//! Nothing is exported unless the application installs a recorder (for example
//! `parti_metrics::serve`). Names follow Prometheus conventions. Every series carries a
//! `worker` label with the recording worker's id (the leader's own, for what only the leader
//! records); nothing is recorded before a manager has claimed its first id. Durations are
//! histograms (the Prometheus exporter of `parti-metrics` gives each explicit buckets), so
//! they aggregate across workers.
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `parti_state` | gauge | `state` | 1 for the manager's current state, 0 for the others |
//! | `parti_state_transitions_total` | counter | `from`, `to` | state transitions |
//! | `parti_is_leader` | gauge | | 1 while the worker leads, else 0 |
//! | `parti_degraded` | gauge | | 1 while the heartbeat lease is lapsed (the worker owns nothing) |
//! | `parti_partitions_owned` | gauge | | partitions the worker owns |
//! | `parti_assignment_version` | gauge | | the assignment version the worker applied |
//! | `parti_heartbeat_age_seconds` | gauge | | time since the last acknowledged heartbeat was sent |
//! | `parti_store_operation_duration_seconds` | histogram | `operation` | store latency |
//! | `parti_store_errors_total` | counter | `operation`, `kind` | failed store operations |
//! | `parti_rebalances_total` | counter | `reason` | rebalances published (leader) |
//! | `parti_rebalance_duration_seconds` | histogram | `reason` | decision → assignment computed and planned (leader) |
//! | `parti_handoff_duration_seconds` | histogram | | decision → every moved partition at its new owner (leader) |
//! | `parti_partitions_moved_total` | counter | | partitions whose owner changed (leader) |
//! | `parti_workers` | gauge | | workers in the leader's plan (leader) |
//! | `parti_partitions` | gauge | | partitions in the leader's plan (leader) |
//! | `parti_consumer_messages_total` | counter | `result` | messages handled by `parti_nats::PartitionConsumer` |
//! | `parti_consumer_handler_duration_seconds` | histogram | | its handler's time per message |
//! | `parti_consumer_naks_total` | counter | `reason` | messages it naked |
//! | `parti_consumer_redeliveries_total` | counter | | messages it received again |
//!
//! Two alerts every fleet wants (PromQL):
//!
//! ```text
//! # No leader: no worker has led for a minute (assignments are frozen; failover is stuck).
//! max(parti_is_leader) < 1                                         for: 1m
//! # Partitions unowned: the workers own fewer partitions than the leader plans.
//! max(parti_partitions) - sum(parti_partitions_owned) > 0          for: 2m
//! ```

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use parti_strategy::WorkerId;

use crate::decide::{ManagerState, RebalanceReason};
use crate::store::{Operation, StoreError};

/// Gauge, labelled `state`: 1 for the manager's current state, 0 for the others.
pub const STATE: &str = "parti_state";
/// Counter of manager state transitions, labelled `from` and `to`.
pub const STATE_TRANSITIONS: &str = "parti_state_transitions_total";
/// Gauge: 1 while the worker is the leader, 0 while it is not.
pub const IS_LEADER: &str = "parti_is_leader";
/// Gauge: 1 while this worker is degraded (its heartbeat lease lapsed: it owns nothing).
pub const DEGRADED: &str = "parti_degraded";
/// Counter of rebalances published by the leader, labelled `reason`.
pub const REBALANCES: &str = "parti_rebalances_total";
/// Histogram of the time from a rebalance decision until its assignment is computed, labelled
/// `reason` (leader only).
pub const REBALANCE_DURATION: &str = "parti_rebalance_duration_seconds";
/// Counter of partitions whose owner changed in a published rebalance (leader only).
pub const PARTITIONS_MOVED: &str = "parti_partitions_moved_total";
/// Gauge of the workers in the leader's current plan (leader only).
pub const WORKERS: &str = "parti_workers";
/// Gauge of the partitions in the leader's current plan (leader only).
pub const PARTITIONS: &str = "parti_partitions";
/// Gauge of the partitions this worker owns.
pub const PARTITIONS_OWNED: &str = "parti_partitions_owned";
/// Gauge of the assignment version this worker applied.
pub const ASSIGNMENT_VERSION: &str = "parti_assignment_version";
/// Histogram of store operation latency, labelled `operation`.
pub const STORE_OPERATION_DURATION: &str = "parti_store_operation_duration_seconds";
/// Counter of failed store operations, labelled `operation` and `kind` (`conflict`,
/// `unavailable`, …).
pub const STORE_ERRORS: &str = "parti_store_errors_total";
/// Gauge of the seconds since this worker's last acknowledged heartbeat was sent, set at each
/// heartbeat attempt.
pub const HEARTBEAT_AGE: &str = "parti_heartbeat_age_seconds";
/// Histogram of the time from a rebalance decision until its handoff completed: every moved
/// partition released by its old owner and granted to its new one (leader only).
pub const HANDOFF_DURATION: &str = "parti_handoff_duration_seconds";

/// Counter of messages handled by a `parti_nats::PartitionConsumer`, labelled `result`
/// (`ok`, `error`, `panic`, `cancelled`).
pub const CONSUMER_MESSAGES: &str = "parti_consumer_messages_total";
/// Histogram of the time a `PartitionConsumer`'s handler took per message.
pub const CONSUMER_HANDLER_DURATION: &str = "parti_consumer_handler_duration_seconds";
/// Counter of messages a `PartitionConsumer` naked, labelled `reason` (`error`, `panic`:
/// the handler failed, redelivered after a backoff; `unhanded`, `cancelled`: the partition
/// was let go, redelivered at once).
pub const CONSUMER_NAKS: &str = "parti_consumer_naks_total";
/// Counter of messages a `PartitionConsumer` received that had been delivered before.
pub const CONSUMER_REDELIVERIES: &str = "parti_consumer_redeliveries_total";

/// Registers the description and unit of every metric above with the installed recorder.
pub fn describe() {
    describe_gauge!(
        STATE,
        "1 for the manager's current state (label state), 0 for the others."
    );
    describe_counter!(STATE_TRANSITIONS, "Manager state transitions.");
    describe_gauge!(IS_LEADER, "1 while this worker is the leader, else 0.");
    describe_gauge!(
        DEGRADED,
        "1 while this worker is degraded: its heartbeat lease lapsed and it owns nothing."
    );
    describe_counter!(REBALANCES, "Rebalances published by the leader, by reason.");
    describe_histogram!(
        REBALANCE_DURATION,
        Unit::Seconds,
        "Time from a rebalance decision until its assignment is computed."
    );
    describe_counter!(
        PARTITIONS_MOVED,
        "Partitions whose owner changed in a rebalance."
    );
    describe_gauge!(WORKERS, "Workers in the leader's current plan.");
    describe_gauge!(PARTITIONS, "Partitions in the leader's current plan.");
    describe_gauge!(PARTITIONS_OWNED, "Partitions this worker owns.");
    describe_gauge!(
        ASSIGNMENT_VERSION,
        "Assignment version this worker applied."
    );
    describe_histogram!(
        STORE_OPERATION_DURATION,
        Unit::Seconds,
        "Latency of store operations."
    );
    describe_counter!(STORE_ERRORS, "Failed store operations.");
    describe_histogram!(
        HANDOFF_DURATION,
        Unit::Seconds,
        "Time from a rebalance decision until every moved partition reached its new owner."
    );
    describe_gauge!(
        HEARTBEAT_AGE,
        Unit::Seconds,
        "Seconds since this worker's last acknowledged heartbeat was sent."
    );
    describe_counter!(
        CONSUMER_MESSAGES,
        "Messages handled by the partition consumer, by result."
    );
    describe_histogram!(
        CONSUMER_HANDLER_DURATION,
        Unit::Seconds,
        "Time the partition consumer's handler took per message."
    );
    describe_counter!(
        CONSUMER_NAKS,
        "Messages the partition consumer naked, by reason."
    );
    describe_counter!(
        CONSUMER_REDELIVERIES,
        "Messages the partition consumer received again."
    );
}

/// The names of the states as the `state` label of [`STATE`] says them, each once (the
/// reasons of `Degraded` share one).
fn state_names() -> impl Iterator<Item = &'static str> {
    let mut names: Vec<&'static str> = ManagerState::ALL.iter().map(|s| s.as_str()).collect();
    names.dedup();
    names.into_iter()
}

/// The `worker` label of one manager's metrics: the id it holds. It is shared by the
/// manager's status and its store wrapper (the buckets are opened before an id is claimed);
/// nothing is recorded while it is unset.
#[derive(Debug, Clone, Default)]
pub(crate) struct WorkerLabel(Arc<RwLock<Option<String>>>);

impl WorkerLabel {
    fn get(&self) -> Option<String> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The manager holds `worker` now, in `state`. The series of an id it held before are
    /// left saying it neither leads nor is in any state; the new id's gauges start at
    /// their current values (`is_leader` 0, not absent).
    pub(crate) fn claimed(&self, worker: &WorkerId, state: ManagerState) {
        let worker = worker.to_string();
        let previous = self
            .0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(worker.clone());
        if let Some(previous) = previous.filter(|p| *p != worker) {
            gauge!(IS_LEADER, "worker" => previous.clone()).set(0.0);
            for name in state_names() {
                gauge!(STATE, "worker" => previous.clone(), "state" => name).set(0.0);
            }
        }
        gauge!(IS_LEADER, "worker" => worker.clone()).set(0.0);
        gauge!(DEGRADED, "worker" => worker.clone()).set(0.0);
        for name in state_names() {
            let value = f64::from(u8::from(name == state.as_str()));
            gauge!(STATE, "worker" => worker.clone(), "state" => name).set(value);
        }
    }
}

pub(crate) fn handoff(leader: &WorkerId, took: Duration) {
    histogram!(HANDOFF_DURATION, "worker" => leader.to_string()).record(took.as_secs_f64());
}

pub(crate) fn state_transition(label: &WorkerLabel, from: ManagerState, to: ManagerState) {
    let Some(worker) = label.get() else { return };
    counter!(STATE_TRANSITIONS, "worker" => worker.clone(), "from" => from.as_str(), "to" => to.as_str())
        .increment(1);
    if from.as_str() != to.as_str() {
        gauge!(STATE, "worker" => worker.clone(), "state" => from.as_str()).set(0.0);
        gauge!(STATE, "worker" => worker, "state" => to.as_str()).set(1.0);
    }
}

pub(crate) fn degraded(label: &WorkerLabel, degraded: bool) {
    let Some(worker) = label.get() else { return };
    gauge!(DEGRADED, "worker" => worker).set(if degraded { 1.0 } else { 0.0 });
}

pub(crate) fn leadership(label: &WorkerLabel, is_leader: bool) {
    let Some(worker) = label.get() else { return };
    gauge!(IS_LEADER, "worker" => worker).set(f64::from(u8::from(is_leader)));
}

/// A rebalance the leader `worker` computed.
pub(crate) struct Rebalance {
    pub(crate) reason: RebalanceReason,
    pub(crate) took: Duration,
    pub(crate) moved: usize,
    pub(crate) workers: usize,
    pub(crate) partitions: usize,
}

pub(crate) fn rebalance(worker: &WorkerId, rebalance: Rebalance) {
    let worker = worker.to_string();
    let reason = rebalance.reason.as_str();
    counter!(REBALANCES, "worker" => worker.clone(), "reason" => reason).increment(1);
    histogram!(REBALANCE_DURATION, "worker" => worker.clone(), "reason" => reason)
        .record(rebalance.took.as_secs_f64());
    counter!(PARTITIONS_MOVED, "worker" => worker.clone()).increment(rebalance.moved as u64);
    gauge!(WORKERS, "worker" => worker.clone()).set(rebalance.workers as f64);
    gauge!(PARTITIONS, "worker" => worker).set(rebalance.partitions as f64);
}

pub(crate) fn applied(label: &WorkerLabel, version: u64, owned: usize) {
    let Some(worker) = label.get() else { return };
    gauge!(ASSIGNMENT_VERSION, "worker" => worker.clone()).set(version as f64);
    gauge!(PARTITIONS_OWNED, "worker" => worker).set(owned as f64);
}

pub(crate) fn store_operation(
    label: &WorkerLabel,
    operation: Operation,
    took: Duration,
    error: Option<&StoreError>,
) {
    let Some(worker) = label.get() else { return };
    histogram!(STORE_OPERATION_DURATION, "worker" => worker.clone(), "operation" => operation.as_str())
        .record(took.as_secs_f64());
    if let Some(error) = error {
        counter!(STORE_ERRORS, "worker" => worker, "operation" => operation.as_str(), "kind" => error.kind_str())
            .increment(1);
    }
}

pub(crate) fn heartbeat_age(worker: &WorkerId, age: Duration) {
    gauge!(HEARTBEAT_AGE, "worker" => worker.to_string()).set(age.as_secs_f64());
}
