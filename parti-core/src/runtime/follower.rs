//! The follower's executor: runs [`FollowerMachine`] (the rules live there) against the
//! store and the hooks. It races the one operation in flight — a read, or a hook — against
//! the machine's deadline, the assignment watch, lease renewals and `stop`, and feeds every
//! completion, delivery and passing deadline back as an event. Nothing here awaits outside
//! that race, so a read that hangs or a hook that never returns (but yields, as async code
//! does) cannot hold the worker past its lease.

use std::future::{Future, pending};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::FutureExt;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use super::PartitionSource;
use super::context::{Applied, Session, next_event, stopped};
use crate::decide::{
    FollowerAction, FollowerEvent, FollowerMachine, FollowerTimings, OpId, WorkerAssignment,
};
use crate::store::{Bucket, Entry, StoreResult, WatchEvent, WatchFrom, WatchStream};
use crate::wire::{AssignmentRecord, LEADER_KEY, LeaderRecord, WireRecord};
use crate::{Error, Result};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The operation in flight: its id and the future that yields its completion event (a read,
/// or a hook); dropping it abandons the operation.
struct InFlight {
    id: OpId,
    done: BoxFuture<FollowerEvent>,
}

/// Follows this worker's record until `stop`, then releases every partition.
pub(crate) async fn run<B: Bucket, P: PartitionSource>(
    session: Arc<Session<B, P>>,
    mut stop: watch::Receiver<bool>,
) {
    let config = &session.config;
    let mut machine = FollowerMachine::new(FollowerTimings {
        poll_interval: config.heartbeat_interval,
        drain_timeout: config.drain_timeout,
        release_slack: config.margin_for(config.heartbeat_ttl) / 2,
    });
    let mut lease = session.status.watch_lease();
    let mut watch: Option<WatchStream> = None;
    let mut watch_setup: Option<BoxFuture<StoreResult<WatchStream>>> = None;
    let mut watch_retry = Instant::now();
    let mut in_flight: Option<InFlight> = None;
    let mut stop_sent = false;
    let mut event = FollowerEvent::Lease(*lease.borrow_and_update());
    loop {
        let now = Instant::now();
        for action in machine.handle(event, now.into_std()) {
            carry_out(&session, action, &mut in_flight);
        }
        if machine.is_finished() {
            break;
        }
        if watch.is_none() && watch_setup.is_none() && Instant::now() >= watch_retry {
            let session = session.clone();
            watch_setup = Some(Box::pin(async move {
                let key = session.worker_id.as_str();
                session.buckets.assignment.watch(key, WatchFrom::Now).await
            }));
        }
        let deadline = machine.next_deadline().map(Instant::from_std);
        event = tokio::select! {
            biased;
            () = stopped(&mut stop), if !stop_sent => {
                stop_sent = true;
                FollowerEvent::Stop
            }
            Ok(()) = lease.changed() => FollowerEvent::Lease(*lease.borrow_and_update()),
            // A passed deadline goes before the operation in flight: after a pause (the
            // process stopped, the runtime starved) the machine sees the time first, and a
            // hook it abandons is not polled again.
            () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                FollowerEvent::Tick
            }
            done = completion(&mut in_flight) => {
                in_flight = None;
                done
            }
            delivered = next_event(&mut watch) => match delivered {
                Some(Ok(WatchEvent::Put(entry))) if entry.key == session.worker_id.as_str() => {
                    match decode_record(&session, &entry) {
                        Ok(record) => FollowerEvent::Delivered(Some(record)),
                        Err(()) => FollowerEvent::Tick,
                    }
                }
                Some(Ok(WatchEvent::Delete { key, .. })) if key == session.worker_id.as_str() => {
                    FollowerEvent::Delivered(None)
                }
                Some(Ok(_)) => FollowerEvent::Tick,
                Some(Err(e)) => {
                    session.report("assignment watch failed", e);
                    watch = None;
                    watch_retry = Instant::now() + session.config.heartbeat_interval;
                    FollowerEvent::Tick
                }
                None => {
                    watch = None;
                    FollowerEvent::Tick
                }
            },
            started = setup(&mut watch_setup) => {
                watch_setup = None;
                match started {
                    Ok(stream) => watch = Some(stream),
                    Err(e) => {
                        session.report("watching the assignment failed", e);
                        watch_retry = Instant::now() + session.config.heartbeat_interval;
                    }
                }
                FollowerEvent::Tick
            }
        };
    }
    session.status.set_assignment(None::<WorkerAssignment>);
}

/// The completion of the operation in flight; pending forever when there is none.
async fn completion(in_flight: &mut Option<InFlight>) -> FollowerEvent {
    match in_flight {
        Some(op) => (&mut op.done).await,
        None => pending().await,
    }
}

/// The watch being set up; pending forever when there is none.
async fn setup(
    watch_setup: &mut Option<BoxFuture<StoreResult<WatchStream>>>,
) -> StoreResult<WatchStream> {
    match watch_setup {
        Some(future) => future.await,
        None => pending().await,
    }
}

fn carry_out<B: Bucket, P: PartitionSource>(
    session: &Arc<Session<B, P>>,
    action: FollowerAction,
    in_flight: &mut Option<InFlight>,
) {
    match action {
        FollowerAction::ReadRecord(id) => {
            let session = session.clone();
            *in_flight = Some(InFlight {
                id,
                done: Box::pin(async move {
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
                }),
            });
        }
        FollowerAction::ReadTerm(id) => {
            let session = session.clone();
            *in_flight = Some(InFlight {
                id,
                done: Box::pin(async move {
                    let outcome = current_term(&session).await.map_err(|e| {
                        session.report("reading the leader before applying a grant failed", e);
                    });
                    FollowerEvent::TermRead { op: id, outcome }
                }),
            });
        }
        // The hook is called here, at once: even when the machine abandons it right after
        // (its deadline has passed), the application has been told.
        FollowerAction::Revoke(id, partitions) => {
            let hook = session.status.hooks().revoked(partitions);
            *in_flight = Some(hook_done(session, id, hook, "on_revoked"));
        }
        FollowerAction::Grant(id, grants) => {
            let hook = session.status.hooks().assigned(grants);
            *in_flight = Some(hook_done(session, id, hook, "on_assigned"));
        }
        FollowerAction::Cancel(id) => {
            if in_flight.as_ref().is_some_and(|op| op.id == id) {
                *in_flight = None;
            }
        }
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
            session.applied.send_replace(Applied { version, term_seen });
        }
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
) -> InFlight {
    let session = session.clone();
    InFlight {
        id,
        done: Box::pin(async move {
            let panicked = match hook {
                Ok(hook) => AssertUnwindSafe(hook).catch_unwind().await.is_err(),
                Err(_) => true,
            };
            if panicked {
                session.report("a hook failed", Error::HookPanicked { hook: name });
            }
            FollowerEvent::HookDone { op: id, panicked }
        }),
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

/// The term of the current leader, from the election entry.
async fn current_term<B: Bucket, P>(session: &Session<B, P>) -> Result<Option<u64>> {
    let Some(entry) = session.buckets.election.get(LEADER_KEY).await? else {
        return Ok(None);
    };
    let record = LeaderRecord::decode(&entry.value).map_err(|source| Error::Corrupt {
        bucket: session.buckets.election.name().to_owned(),
        key: entry.key.clone(),
        source,
    })?;
    Ok(Some(record.term_at(entry.revision.get())))
}
