//! The heartbeat: this worker's liveness and what it has applied, `put` every
//! `heartbeat_interval` (and at once when the applied assignment changes), deleted on stop.
//! Each acknowledged put extends the worker's lease on its partitions to the put's *send*
//! time + `heartbeat_ttl` − margin; the follower fences the worker when it runs out.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout};

use super::PartitionSource;
use super::context::{Session, stopped, within};
use crate::store::{Bucket, Operation, Revision};
use crate::telemetry;
use crate::wire::{Heartbeat, WireRecord};

/// Beats until `stop`, then deletes the heartbeat (at its last revision, so a heartbeat that
/// another process writes under the same id after this one lost it is left alone).
pub(crate) async fn run<B: Bucket, P: PartitionSource>(
    session: Arc<Session<B, P>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut applied = session.applied.subscribe();
    let bucket = &session.buckets.heartbeat;
    let key = session.worker_id.as_str();
    let interval = session.config.heartbeat_interval;
    let config = &session.config;
    let lease = config.heartbeat_ttl - config.margin_for(config.heartbeat_ttl);
    let mut last_revision: Option<Revision> = None;
    let mut last_ack = Instant::now();
    loop {
        let current = *applied.borrow_and_update();
        let beat = Heartbeat {
            instance_id: session.instance.to_string(),
            applied_version: current.version,
            term_seen: current.term_seen,
        };
        let sent = Instant::now();
        let written = match beat.encode() {
            // Bounded by the lease it would extend: an acknowledgement after that is worth
            // nothing, and a put stuck on a black-holed link must not keep the next one
            // (with a newer applied version) from being sent.
            Ok(value) => tokio::select! {
                biased;
                () = stopped(&mut stop) => break,
                written = within(lease, Operation::Put, bucket.name(), key, bucket.put(key, value)) => written,
            },
            Err(e) => Err(crate::Error::from(e)),
        };
        match written {
            Ok(revision) => {
                last_revision = Some(revision);
                last_ack = sent;
                // The store stamps the write after `sent`, so the entry outlives this
                // lease by at least the margin: the worker fences itself first.
                session.status.extend_lease(sent + lease);
            }
            Err(e) => session.report("heartbeat failed", e),
        }
        telemetry::heartbeat_age(&session.worker_id, Instant::now() - last_ack);
        tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            () = sleep_until(sent + interval) => {}
            Ok(()) = applied.changed() => {}
        }
    }
    if let Some(revision) = last_revision {
        // Bounded: a delete that cannot get through only means the entry expires by its TTL.
        match timeout(interval, bucket.delete(key, Some(revision))).await {
            Ok(Ok(())) | Ok(Err(crate::store::StoreError::Conflict { .. })) => {}
            Ok(Err(e)) => session.report("deleting the heartbeat failed", e),
            Err(_) => tracing::warn!(
                worker = %session.worker_id,
                "deleting the heartbeat timed out; it expires by its TTL"
            ),
        }
    }
}
