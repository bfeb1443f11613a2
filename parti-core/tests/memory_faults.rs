//! Fault injection on `MemoryStore` connections, on tokio's paused clock.

use std::time::Duration;

use parti_core::store::{
    Bucket, BucketSpec, DeleteReason, Fault, MemoryBucket, MemoryStore, Store, StoreError,
    WatchEvent, WatchFrom,
};
use tokio::time::Instant;

async fn bucket(store: &MemoryStore, ttl: Option<Duration>) -> MemoryBucket {
    let spec = BucketSpec::new("faults").unwrap();
    let spec = match ttl {
        Some(ttl) => spec.with_ttl(ttl),
        None => spec,
    };
    store.bucket(&spec).await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_disconnected_connection_fails_and_others_do_not() {
    let store = MemoryStore::new();
    let worker = store.connect();
    let mine = bucket(&worker, None).await;
    let theirs = bucket(&store, None).await;

    worker.disconnect();
    assert!(!worker.is_connected());
    let err = mine.put("k", "v".into()).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Unavailable { .. }),
        "expected Unavailable, got {err:?}"
    );
    assert!(err.is_transient());
    assert!(mine.get("k").await.unwrap_err().is_transient());
    assert!(
        worker
            .bucket(&BucketSpec::new("other").unwrap())
            .await
            .is_err()
    );

    theirs.put("k", "theirs".into()).await.unwrap();
    worker.reconnect();
    assert_eq!(&mine.get("k").await.unwrap().unwrap().value[..], b"theirs");
}

#[tokio::test(start_paused = true)]
async fn a_watch_pauses_while_disconnected_and_resumes_losing_nothing() {
    let store = MemoryStore::new();
    let worker = store.connect();
    let mut watch = bucket(&worker, None)
        .await
        .watch("", WatchFrom::Now)
        .await
        .unwrap();
    let writer = bucket(&store, None).await;

    worker.disconnect();
    let mut written = Vec::new();
    for n in 0..3 {
        written.push(writer.put(&format!("k{n}"), "v".into()).await.unwrap());
    }
    writer.delete("k0", None).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(60), watch.next())
            .await
            .is_err(),
        "a disconnected watch must deliver nothing"
    );

    worker.reconnect();
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(watch.next().await.unwrap().unwrap());
    }
    let revisions: Vec<_> = seen.iter().map(WatchEvent::revision).collect();
    assert_eq!(&revisions[..3], &written[..]);
    assert!(revisions[3] > revisions[2]);
    assert!(matches!(
        &seen[3],
        WatchEvent::Delete { key, reason: DeleteReason::Deleted, .. } if key == "k0"
    ));
}

#[tokio::test(start_paused = true)]
async fn fail_next_fails_exactly_that_many_operations() {
    let store = MemoryStore::new();
    let b = bucket(&store, None).await;
    store.fail_next(2, Fault::Unavailable);
    assert!(b.put("k", "1".into()).await.unwrap_err().is_transient());
    assert!(b.get("k").await.unwrap_err().is_transient());
    b.put("k", "2".into()).await.unwrap();
    assert_eq!(&b.get("k").await.unwrap().unwrap().value[..], b"2");
}

#[tokio::test(start_paused = true)]
async fn an_applied_timeout_reports_outcome_unknown_but_writes() {
    let store = MemoryStore::new();
    let b = bucket(&store, None).await;
    let r1 = b.create("k", "1".into()).await.unwrap();
    store.fail_next(1, Fault::Timeout { applied: true });
    let err = b.update("k", "2".into(), r1).await.unwrap_err();
    assert!(err.is_outcome_unknown(), "{err:?}");
    let entry = b.get("k").await.unwrap().unwrap();
    assert_eq!(&entry.value[..], b"2", "the write was applied");
    assert!(entry.revision > r1);
}

#[tokio::test(start_paused = true)]
async fn an_unapplied_timeout_reports_outcome_unknown_and_writes_nothing() {
    let store = MemoryStore::new();
    let b = bucket(&store, None).await;
    store.fail_next(1, Fault::Timeout { applied: false });
    let err = b.create("k", "1".into()).await.unwrap_err();
    assert!(err.is_outcome_unknown(), "{err:?}");
    assert_eq!(b.get("k").await.unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_read_is_unavailable() {
    let store = MemoryStore::new();
    let b = bucket(&store, None).await;
    store.fail_next(1, Fault::Timeout { applied: true });
    let err = b.get("k").await.unwrap_err();
    assert!(
        matches!(err, StoreError::Unavailable { .. }),
        "a read has no outcome to be unsure of: {err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn latency_delays_each_operation() {
    let store = MemoryStore::new();
    let b = bucket(&store, None).await;
    store.set_latency(Duration::from_millis(250));
    let start = Instant::now();
    b.put("k", "v".into()).await.unwrap();
    b.get("k").await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(500));
    store.set_latency(Duration::ZERO);
    let start = Instant::now();
    b.get("k").await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn clear_faults_reconnects_and_forgets_pending_failures() {
    let store = MemoryStore::new();
    let b = bucket(&store, None).await;
    store.disconnect();
    store.fail_next(5, Fault::Unavailable);
    store.set_latency(Duration::from_secs(1));
    store.clear_faults();
    let start = Instant::now();
    b.put("k", "v".into()).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_cut_off_workers_lease_expires_for_everyone_else() {
    let ttl = Duration::from_secs(3);
    let store = MemoryStore::new();
    let worker = store.connect();
    let lease = bucket(&worker, Some(ttl)).await;
    let observer = bucket(&store, Some(ttl)).await;
    let mut watch = observer.watch("", WatchFrom::Now).await.unwrap();

    let written = lease.put("worker-0", "beat".into()).await.unwrap();
    let acked = Instant::now();
    worker.disconnect();
    assert!(lease.put("worker-0", "beat".into()).await.is_err());

    assert!(matches!(watch.next().await, Some(Ok(WatchEvent::Put(_)))));
    match watch.next().await {
        Some(Ok(WatchEvent::Delete {
            key,
            revision,
            reason: DeleteReason::Expired,
        })) => {
            assert_eq!(key, "worker-0");
            assert!(revision > written);
            assert_eq!(
                acked.elapsed(),
                ttl,
                "expired exactly one TTL after the last write"
            );
        }
        other => panic!("expected the lease to expire, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn handles_of_one_connection_share_its_faults() {
    let store = MemoryStore::new();
    let clone = store.clone();
    let b = bucket(&clone, None).await;
    store.disconnect();
    assert!(!clone.is_connected());
    assert!(b.get("k").await.is_err());
}
