//! The metrics parti records, through the [`metrics`] facade.
//!
//! Nothing is exported unless the application installs a recorder (for example
//! `parti_metrics::install_prometheus`). Names follow Prometheus conventions; every metric
//! carries a `worker` label with the recording worker's id, except the ones only the leader
//! records, which say so.

use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use parti_strategy::WorkerId;

use crate::decide::{ManagerState, RebalanceReason};
use crate::store::{Operation, StoreError};

/// Counter of manager state transitions, labelled `from` and `to`.
pub const STATE_TRANSITIONS: &str = "parti_state_transitions_total";
/// Gauge, 1 while the worker is the leader.
pub const IS_LEADER: &str = "parti_is_leader";
/// Gauge: 1 while this worker is degraded (its heartbeat lease lapsed: it owns nothing).
pub const DEGRADED: &str = "parti_degraded";
/// Counter of rebalances published by the leader, labelled `reason`.
pub const REBALANCES: &str = "parti_rebalances_total";
/// Histogram of the time from a rebalance decision to its last write, labelled `reason`.
pub const REBALANCE_DURATION: &str = "parti_rebalance_duration_seconds";
/// Counter of partitions whose owner changed in a published rebalance (leader only).
pub const PARTITIONS_MOVED: &str = "parti_partitions_moved_total";
/// Gauge of the workers in the leader's current plan (leader only).
pub const WORKERS: &str = "parti_workers";
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

/// Registers the description and unit of every metric above with the installed recorder.
pub fn describe() {
    describe_counter!(STATE_TRANSITIONS, "Manager state transitions.");
    describe_gauge!(IS_LEADER, "1 while this worker is the leader.");
    describe_gauge!(
        DEGRADED,
        "1 while this worker is degraded: its heartbeat lease lapsed and it owns nothing."
    );
    describe_counter!(REBALANCES, "Rebalances published by the leader, by reason.");
    describe_histogram!(
        REBALANCE_DURATION,
        Unit::Seconds,
        "Time from a rebalance decision to its last write."
    );
    describe_counter!(
        PARTITIONS_MOVED,
        "Partitions whose owner changed in a rebalance."
    );
    describe_gauge!(WORKERS, "Workers in the leader's current plan.");
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
}

pub(crate) fn handoff(leader: &WorkerId, took: Duration) {
    histogram!(HANDOFF_DURATION, "worker" => leader.to_string()).record(took.as_secs_f64());
}

pub(crate) fn state_transition(worker: &WorkerId, from: ManagerState, to: ManagerState) {
    counter!(STATE_TRANSITIONS, "worker" => worker.to_string(), "from" => from.as_str(), "to" => to.as_str())
        .increment(1);
}

pub(crate) fn degraded(worker: &WorkerId, degraded: bool) {
    gauge!(DEGRADED, "worker" => worker.to_string()).set(if degraded { 1.0 } else { 0.0 });
}

pub(crate) fn leadership(worker: &WorkerId, is_leader: bool) {
    gauge!(IS_LEADER, "worker" => worker.to_string()).set(f64::from(u8::from(is_leader)));
}

pub(crate) fn rebalance(
    worker: &WorkerId,
    reason: RebalanceReason,
    took: Duration,
    moved: usize,
    workers: usize,
) {
    let worker = worker.to_string();
    counter!(REBALANCES, "worker" => worker.clone(), "reason" => reason.as_str()).increment(1);
    histogram!(REBALANCE_DURATION, "worker" => worker.clone(), "reason" => reason.as_str())
        .record(took.as_secs_f64());
    counter!(PARTITIONS_MOVED, "worker" => worker.clone()).increment(moved as u64);
    gauge!(WORKERS, "worker" => worker).set(workers as f64);
}

pub(crate) fn applied(worker: &WorkerId, version: u64, owned: usize) {
    gauge!(ASSIGNMENT_VERSION, "worker" => worker.to_string()).set(version as f64);
    gauge!(PARTITIONS_OWNED, "worker" => worker.to_string()).set(owned as f64);
}

pub(crate) fn store_operation(operation: Operation, took: Duration, error: Option<&StoreError>) {
    histogram!(STORE_OPERATION_DURATION, "operation" => operation.as_str())
        .record(took.as_secs_f64());
    if let Some(error) = error {
        counter!(STORE_ERRORS, "operation" => operation.as_str(), "kind" => error.kind_str())
            .increment(1);
    }
}

pub(crate) fn heartbeat_age(worker: &WorkerId, age: Duration) {
    gauge!(HEARTBEAT_AGE, "worker" => worker.to_string()).set(age.as_secs_f64());
}
