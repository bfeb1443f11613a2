//! Where a replicated bucket's stream leader sits: parti's two heartbeat buckets must not
//! share one, or losing that node stops both (and every worker's lease).

use async_nats::jetstream::kv;
use async_nats::jetstream::response::Response;
use parti_core::store::{Operation, StoreResult};

use crate::errors::Target;
use crate::store::{NatsStore, stream_name};

/// If `this` bucket's stream leader is `other`'s, asks it to step down in favour of one of
/// its current replicas. Returns whether it asked. A bucket on one server has no leader to
/// move; a stream without a leader (failing over) is left for the next call.
pub(crate) async fn keep_apart(
    store: &NatsStore,
    this: &kv::Store,
    other: &kv::Store,
) -> StoreResult<bool> {
    let target = Target {
        operation: Operation::OpenBucket,
        bucket: &this.name,
        key: "",
    };
    let info = |kv: &kv::Store| {
        let stream = kv.stream.clone();
        async move { stream.get_info().await }
    };
    let (mine, theirs) = futures_util::future::join(info(this), info(other)).await;
    let mine = mine.map_err(|e| target.unavailable(e.to_string(), Some(Box::new(e) as _)))?;
    let theirs = theirs.map_err(|e| target.unavailable(e.to_string(), Some(Box::new(e) as _)))?;
    let (Some(mine), Some(theirs)) = (mine.cluster, theirs.cluster) else {
        return Ok(false);
    };
    let (Some(leader), Some(their_leader)) = (mine.leader, theirs.leader) else {
        return Ok(false);
    };
    if leader != their_leader {
        return Ok(false);
    }
    let Some(preferred) = mine
        .replicas
        .iter()
        .find(|peer| peer.current && !peer.offline && peer.name != leader)
    else {
        return Ok(false);
    };
    let subject = format!("STREAM.LEADER.STEPDOWN.{}", stream_name(&this.name));
    let body = serde_json::json!({ "placement": { "preferred": preferred.name } });
    let response: Response<serde_json::Value> = store
        .jetstream()
        .request(subject, &body)
        .await
        .map_err(|e| target.unavailable(e.to_string(), Some(Box::new(e) as _)))?;
    match response {
        Response::Ok(_) => {
            tracing::info!(
                bucket = %this.name,
                from = %leader,
                to = %preferred.name,
                apart_from = %other.name,
                "moved the bucket's stream leader off the node that leads the other"
            );
            Ok(true)
        }
        Response::Err { error } => {
            Err(target.unavailable(format!("stepping the stream leader down: {error}"), None))
        }
    }
}
