//! The manager's main task: claim an id, run a session on it (heartbeat, election, follower,
//! id renewal) until `stop` or until the id is lost, then clean up in the order that keeps
//! ownership exclusive and failover fast.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until};
use tracing::Instrument;

use super::context::{Applied, Session, Shared, stopped, within};
use super::status::WorkerAssignment;
use super::{ClaimedId, IdClaimer, PartitionSource, election, follower, heartbeat};
use crate::decide::ManagerState;
use crate::store::{Bucket, Operation};
use crate::{Error, Result};

/// How a session ended.
enum End {
    Stopped,
    IdLost,
    /// One of its tasks ended by itself (an error or a panic): the session starts again.
    TaskEnded(&'static str),
}

/// Runs sessions until `stop`; returns the first error of the final cleanup, if any.
pub(crate) async fn drive<B: Bucket, P: PartitionSource>(
    shared: Arc<Shared<B, P>>,
    mut claimed: ClaimedId,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let claimer = IdClaimer::new(
        shared.buckets.ids.clone(),
        &shared.config,
        shared.instance.clone(),
        shared.identity.clone(),
    );
    loop {
        let span = tracing::info_span!("session", worker = %claimed.worker_id());
        let (end, cleanup) = run_session(&shared, &claimer, claimed, &mut stop)
            .instrument(span)
            .await;
        match end {
            End::Stopped => return cleanup,
            End::IdLost | End::TaskEnded(_) => {
                let retry = shared.config.heartbeat_interval;
                let previous = shared.status.worker_id();
                claimed = loop {
                    tokio::select! {
                        biased;
                        () = stopped(&mut stop) => {
                            shared.status.set_stage(ManagerState::Shutdown);
                            return Ok(());
                        }
                        result = claimer.reclaim(&previous) => match result {
                            Ok(claimed) => break claimed,
                            Err(e @ Error::IdentityInUse { .. }) => {
                                // Another process runs with this identity and replaced this
                                // one: it must not take the identity back.
                                shared.report("this worker's identity is in use; stopping", e);
                                shared.status.set_stage(ManagerState::Shutdown);
                                return Ok(());
                            }
                            Err(e) => shared.report("claiming a worker id failed", e),
                        },
                    }
                    tokio::select! {
                        biased;
                        () = stopped(&mut stop) => {
                            shared.status.set_stage(ManagerState::Shutdown);
                            return Ok(());
                        }
                        () = sleep(retry) => {}
                    }
                };
            }
        }
    }
}

async fn run_session<B: Bucket, P: PartitionSource>(
    shared: &Arc<Shared<B, P>>,
    claimer: &IdClaimer<B>,
    mut claimed: ClaimedId,
    stop: &mut watch::Receiver<bool>,
) -> (End, Result<()>) {
    let worker_id = claimed.worker_id().clone();
    tracing::info!(worker = %worker_id, instance = %shared.instance, "claimed worker id");
    shared.status.set_worker_id(worker_id.clone());
    shared.status.set_stage(ManagerState::Election);
    let session = Arc::new(Session {
        shared: shared.clone(),
        worker_id,
        // The heartbeat carries the highest term this process has seen, from its first
        // write on: a leader below it (its election bucket lost) learns so and steps down.
        applied: watch::Sender::new(Applied {
            version: 0,
            term_seen: shared.highest_term.load(Ordering::SeqCst),
        }),
    });
    shared.status.reset_lease();
    let (stop_tasks, task_stop) = watch::channel(false);
    // The heartbeat stops last: while it lives the leader grants none of our partitions.
    let (stop_beats, beats_stop) = watch::channel(false);
    let mut beats = session.spawn(heartbeat::run(session.clone(), beats_stop));
    let mut following = session.spawn(follower::run(session.clone(), task_stop.clone()));
    let mut leading = session.spawn(election::run(session.clone(), task_stop.clone()));

    let config = &shared.config;
    let hold = config.id_ttl - config.margin_for(config.id_ttl);
    let mut valid_until = Instant::now() + hold;
    let mut next_renewal = Instant::now() + config.id_renew_interval();
    let retry =
        (config.id_renew_interval() / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let end = loop {
        tokio::select! {
            biased;
            () = stopped(stop) => break End::Stopped,
            () = sleep_until(valid_until) => break End::IdLost,
            // Supervision: the tasks run until the session ends them; one that ends by
            // itself (a panic, say) ends the session, which then starts again.
            () = beats.ended() => break End::TaskEnded("heartbeat"),
            () = following.ended() => break End::TaskEnded("follower"),
            () = leading.ended() => break End::TaskEnded("election"),
            () = sleep_until(next_renewal) => {}
        }
        let sent = Instant::now();
        // The renewal races the claim's end: a renewal that hangs (a black-holed link) must
        // not keep this worker on an id that another may claim once it expires.
        let renewed = tokio::select! {
            biased;
            () = stopped(stop) => break End::Stopped,
            () = sleep_until(valid_until) => break End::IdLost,
            renewed = claimer.renew(&mut claimed) => renewed,
        };
        match renewed {
            Ok(()) => {
                valid_until = sent + hold;
                next_renewal = sent + config.id_renew_interval();
            }
            Err(e @ Error::IdLost { .. }) => {
                shared.report("worker id lost", e);
                break End::IdLost;
            }
            Err(e) => {
                shared.report("renewing the worker id failed", e);
                next_renewal = Instant::now() + retry;
            }
        }
    };

    if let End::TaskEnded(task) = end {
        shared.report(
            "the session ends and starts again",
            Error::TaskEnded { task },
        );
    }
    shared.status.set_stage(match end {
        End::Stopped => ManagerState::Shutdown,
        End::IdLost | End::TaskEnded(_) => ManagerState::ClaimingId,
    });
    // Leadership first (the calculator stops, the lease is released so another worker
    // takes over at once), then the follower, which releases every partition (drained
    // within the drain timeout), then the heartbeat (once it is gone the leader re-grants
    // our partitions), then the id.
    let _ = stop_tasks.send(true);
    let mut cleanup = Ok(());
    for (task, name) in [(leading, "election"), (following, "follower")] {
        if task.join().await.is_none() && matches!(end, End::Stopped) {
            cleanup = Err(Error::TaskEnded { task: name });
        }
    }
    let owned = shared.status.assignment();
    if !owned.is_empty() {
        // The follower ended abnormally, holding partitions: release them here, within the
        // drain timeout (the heartbeat still runs, so the lease holds meanwhile).
        let partitions = owned.partitions().cloned().collect();
        let release = async {
            if let Ok(hook) = shared
                .status
                .hooks()
                .revoked(partitions, session.hook_context())
            {
                let _ = AssertUnwindSafe(hook).catch_unwind().await;
            }
        };
        if tokio::time::timeout(config.drain_timeout, release)
            .await
            .is_err()
        {
            shared.report(
                "releasing the partitions of an ended follower",
                Error::DrainCutShort {
                    partitions: owned.len(),
                    waited: config.drain_timeout,
                },
            );
        }
    }
    shared.status.set_assignment(None::<WorkerAssignment>);
    let park = matches!(end, End::Stopped) && shared.identity.is_some();
    if park {
        // Expected back: the claim, marked parked, tells the leader to keep this worker's
        // partitions for it (`restart_grace`) — before the heartbeat goes, so that the
        // leader never counts the worker as lost meanwhile. Bounded: if it cannot get
        // through, the partitions move as after any stop.
        let parked = within(
            config.id_renew_interval(),
            Operation::Update,
            shared.buckets.ids.name(),
            claimed.worker_id().as_str(),
            claimer.park(&claimed),
        )
        .await;
        if let Err(e) = parked {
            shared.report_ref("parking the worker id failed", &e);
        }
    }
    let _ = stop_beats.send(true);
    if beats.join().await.is_none() && cleanup.is_ok() && matches!(end, End::Stopped) {
        cleanup = Err(Error::TaskEnded { task: "heartbeat" });
    }
    if matches!(end, End::Stopped | End::TaskEnded(_)) && !park {
        // Everything is released and the heartbeat is gone: free the id at once (after a
        // task ended, the next session usually claims it back). Bounded: a release that
        // cannot get through only means the claim expires by its TTL.
        let released = within(
            config.id_renew_interval(),
            Operation::Delete,
            shared.buckets.ids.name(),
            claimed.worker_id().as_str(),
            claimer.release(&claimed),
        )
        .await;
        if let Err(e) = released {
            shared.report_ref("releasing the worker id failed", &e);
            if cleanup.is_ok() {
                cleanup = Err(e);
            }
        }
    }
    (end, cleanup)
}
