//! The follower's shell: [`FollowerMachine`] (the rules live there) run by the
//! [executor](super::executor) against the store and the hooks. Its inputs are `stop`, the
//! heartbeat lease and the watch of this worker's record; its operations are the reads of
//! the record and of the election entry, and the hooks. Nothing here awaits outside the
//! executor's race, so a read that hangs or a hook that never returns (but yields, as async
//! code does) cannot hold the worker past its lease.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::FutureExt;
use tokio::sync::watch;

use super::PartitionSource;
use super::context::{Applied, Session, stopped};
use super::election::read_leader;
use super::executor::{self, BoxFuture, Delivery, KeyWatch, Operation, Shell};
use crate::Error;
use crate::decide::{
    DegradedReason, FollowerAction, FollowerEvent, FollowerMachine, FollowerTimings, OpId,
    WorkerAssignment,
};
use crate::store::{Bucket, Entry};
use crate::wire::{AssignmentRecord, WireRecord};

/// Follows this worker's record until `stop`, then releases every partition.
pub(crate) async fn run<B: Bucket, P: PartitionSource>(
    session: Arc<Session<B, P>>,
    stop: watch::Receiver<bool>,
) {
    let config = &session.config;
    let mut machine = FollowerMachine::new(FollowerTimings {
        poll_interval: config.backstop_interval(),
        read_timeout: config.heartbeat_interval,
        drain_timeout: config.drain_timeout,
        release_slack: config.margin_for(config.heartbeat_ttl) / 2,
    });
    let mut lease = session.status.watch_lease();
    let first = FollowerEvent::Lease(*lease.borrow_and_update());
    let watch = KeyWatch::new(
        session.buckets.assignment.clone(),
        session.worker_id.as_str(),
        config.heartbeat_interval,
    );
    let mut shell = FollowerShell {
        session: session.clone(),
        lease,
        stop,
        stop_sent: false,
        watch,
    };
    executor::run(&mut machine, &mut shell, first).await;
    session.status.set_assignment(None::<WorkerAssignment>);
}

/// The follower's inputs and outputs: the lease, `stop`, the watch of its record, the
/// store and the hooks.
struct FollowerShell<B, P> {
    session: Arc<Session<B, P>>,
    lease: watch::Receiver<Option<crate::decide::LeaseRenewal>>,
    stop: watch::Receiver<bool>,
    stop_sent: bool,
    watch: KeyWatch<B>,
}

impl<B: Bucket, P: PartitionSource> Shell<FollowerMachine> for FollowerShell<B, P> {
    fn carry_out(&mut self, action: FollowerAction, operation: &mut Operation<FollowerEvent>) {
        carry_out(&self.session, action, operation);
    }

    async fn next_input(&mut self) -> FollowerEvent {
        tokio::select! {
            biased;
            () = stopped(&mut self.stop), if !self.stop_sent => {
                self.stop_sent = true;
                FollowerEvent::Stop
            }
            Ok(()) = self.lease.changed() => FollowerEvent::Lease(*self.lease.borrow_and_update()),
            delivered = self.watch.next() => match delivered {
                Delivery::Put(entry) => match decode_record(&self.session, &entry) {
                    Ok(record) => FollowerEvent::Delivered(Some(record)),
                    Err(()) => FollowerEvent::Tick,
                },
                Delivery::Deleted(..) => FollowerEvent::Delivered(None),
                Delivery::Started => FollowerEvent::WatchStarted,
                Delivery::Failed(e) => {
                    self.session.report("watching the assignment failed", e);
                    FollowerEvent::WatchFailed
                }
            },
        }
    }
}

fn carry_out<B: Bucket, P: PartitionSource>(
    session: &Arc<Session<B, P>>,
    action: FollowerAction,
    operation: &mut Operation<FollowerEvent>,
) {
    match action {
        FollowerAction::ReadRecord(id) => {
            let session = session.clone();
            operation.start(id, async move {
                let key = session.worker_id.as_str();
                let outcome = match session.buckets.assignment.get(key).await {
                    Ok(Some(entry)) => decode_record(&session, &entry).map(Some),
                    Ok(None) => Ok(None),
                    Err(e) => {
                        session.report("reading the assignment failed", e);
                        Err(())
                    }
                };
                FollowerEvent::RecordRead { op: id, outcome }
            });
        }
        FollowerAction::ReadTerm(id) => {
            let session = session.clone();
            operation.start(id, async move {
                let context = "reading the leader before applying a grant failed";
                let outcome = read_leader(&session, context)
                    .await
                    .map(|entry| entry.map(|entry| entry.term()));
                FollowerEvent::TermRead { op: id, outcome }
            });
        }
        // The hook is called here, at once: even when the machine abandons it right after
        // (its deadline has passed), the application has been told.
        FollowerAction::Revoke(id, partitions) => {
            let hook = session
                .status
                .hooks()
                .revoked(partitions, session.hook_context());
            operation.start(id, hook_done(session, id, hook, "on_revoked"));
        }
        FollowerAction::Grant(id, grants) => {
            let hook = session
                .status
                .hooks()
                .assigned(grants, session.hook_context());
            operation.start(id, hook_done(session, id, hook, "on_assigned"));
        }
        FollowerAction::Cancel(id) => operation.cancel(id),
        FollowerAction::Publish(assignment) => {
            tracing::debug!(
                worker = %session.worker_id,
                version = assignment.version(),
                partitions = assignment.len(),
                "holding"
            );
            session.status.set_assignment(Some(assignment));
        }
        FollowerAction::ReportApplied { version, term_seen } => {
            let highest = session.highest_term.fetch_max(term_seen, Ordering::SeqCst);
            session.applied.send_replace(Applied {
                version,
                term_seen: highest.max(term_seen),
            });
        }
        FollowerAction::LeaseLapsed => {
            let reason = if session.status.heartbeat_unanswered() {
                DegradedReason::StoreUnreachable
            } else {
                DegradedReason::LeaseLapsed
            };
            session.status.set_degraded(Some(reason));
        }
        FollowerAction::LeaseRestored => session.status.set_degraded(None),
        FollowerAction::Fenced { partitions } => {
            tracing::warn!(
                worker = %session.worker_id,
                partitions,
                "heartbeat lease lapsed: releasing every partition"
            );
        }
        FollowerAction::DrainCutShort { partitions, waited } => {
            session.report(
                "draining revoked partitions",
                Error::DrainCutShort { partitions, waited },
            );
        }
        FollowerAction::ReadTimedOut => {
            tracing::debug!(worker = %session.worker_id, "a read ran into its deadline");
        }
        FollowerAction::Finished => {}
    }
}

/// The completion of a hook: a panic is caught, reported and counts as done. The hook runs
/// inside the executor's own task, so abandoning it (dropping the future) ends it at once:
/// nothing of it runs after the machine has moved on.
fn hook_done<B: Bucket, P: PartitionSource>(
    session: &Arc<Session<B, P>>,
    id: OpId,
    hook: std::thread::Result<BoxFuture<()>>,
    name: &'static str,
) -> impl Future<Output = FollowerEvent> + Send + 'static {
    let session = session.clone();
    async move {
        let panicked = match hook {
            Ok(hook) => AssertUnwindSafe(hook).catch_unwind().await.is_err(),
            Err(_) => true,
        };
        if panicked {
            session.report("a hook failed", Error::HookPanicked { hook: name });
        }
        FollowerEvent::HookDone { op: id, panicked }
    }
}

/// Decodes a record; an unreadable one is reported and skipped.
fn decode_record<B: Bucket, P>(
    session: &Session<B, P>,
    entry: &Entry,
) -> std::result::Result<AssignmentRecord, ()> {
    AssignmentRecord::decode(&entry.value).map_err(|source| {
        let error = Error::Corrupt {
            bucket: session.buckets.assignment.name().to_owned(),
            key: entry.key.clone(),
            source,
        };
        session.report("ignoring an unreadable assignment", error);
    })
}
