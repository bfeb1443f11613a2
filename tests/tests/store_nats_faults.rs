//! `NatsStore` under faults, on real servers: a server restart under an open watch, an
//! outage, a killed node of a 3-node cluster, a bucket deleted and created again, a bucket
//! whose files the server lost, and the errors of a malformed URL, of nobody listening and
//! of a server without JetStream.

use std::future::Future;
use std::time::{Duration, Instant};

use async_nats::connection::State;
use futures_util::StreamExt;
use parti_core::runtime::{Manager, StaticSource};
use parti_core::store::{
    Bucket, BucketSpec, DeleteReason, Revision, Store, StoreError, WatchEvent, WatchFrom,
    WatchStream,
};
use parti_nats::NatsStore;
use parti_strategy::Sticky;
use tests::nats::{NatsFixture, Servers, stream_leader};
use tests::nats_server::{NatsServer, http_get, number_after};

/// How long an outage's aftermath may take to clear (reconnect, stream recovery, leader
/// election).
const RECOVERY: Duration = Duration::from_secs(30);

/// Waits, polling, until `done` holds; panics with `what` after [`RECOVERY`].
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + RECOVERY;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {RECOVERY:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Retries `op` while it fails with a transient error; any other error, or no success
/// within [`RECOVERY`], fails the test. Returns the result and how many transient errors
/// were seen.
async fn retry_transient<T, F, Fut>(what: &str, mut op: F) -> (T, usize)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let deadline = Instant::now() + RECOVERY;
    let mut transient = 0;
    loop {
        match op().await {
            Ok(value) => return (value, transient),
            Err(e) if e.is_transient() && Instant::now() < deadline => {
                transient += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

async fn next_event(watch: &mut WatchStream) -> WatchEvent {
    match tokio::time::timeout(RECOVERY, watch.next()).await {
        Ok(Some(Ok(event))) => event,
        other => panic!("expected a watch event, got {other:?}"),
    }
}

fn spec(name: &str) -> BucketSpec {
    BucketSpec::new(name).expect("valid name")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_after_a_server_restart_losing_and_repeating_nothing() {
    let fixture = NatsFixture::single().await;
    let bucket = fixture.bucket(&spec("restart")).await.unwrap();
    let mut watch = bucket.watch("", WatchFrom::Now).await.unwrap();
    let before = bucket.put("a", "1".into()).await.unwrap();
    assert_eq!(next_event(&mut watch).await.revision(), before);

    fixture.with_servers(|servers| match servers {
        Servers::Single(server) => server.restart(),
        Servers::Cluster(_) => unreachable!("single-node fixture"),
    });

    let (b, _) = retry_transient("put b after restart", || bucket.put("b", "1".into())).await;
    let (c, _) = retry_transient("put c", || bucket.put("c", "1".into())).await;
    retry_transient("delete a", || bucket.delete("a", None)).await;

    let seen = [
        next_event(&mut watch).await,
        next_event(&mut watch).await,
        next_event(&mut watch).await,
    ];
    assert!(
        matches!(&seen[0], WatchEvent::Put(e) if e.key == "b" && e.revision == b),
        "{seen:?}"
    );
    assert!(
        matches!(&seen[1], WatchEvent::Put(e) if e.key == "c" && e.revision == c),
        "{seen:?}"
    );
    assert!(
        matches!(&seen[2], WatchEvent::Delete { key, reason: DeleteReason::Deleted, .. } if key == "a"),
        "{seen:?}"
    );
    assert!(before < b && b < c && c < seen[2].revision());
    // Nothing more: no event was repeated.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), watch.next())
            .await
            .is_err(),
        "an event was delivered twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_during_an_outage_fail_transiently_and_succeed_after() {
    let fixture = NatsFixture::single().await;
    let bucket = fixture.bucket(&spec("outage")).await.unwrap();
    let created = bucket.create("k", "before".into()).await.unwrap();

    fixture.with_servers(|servers| match servers {
        Servers::Single(server) => server.kill(),
        Servers::Cluster(_) => unreachable!("single-node fixture"),
    });
    let client = fixture.store().client().clone();
    wait_until("the client notices the outage", || {
        client.connection_state() != State::Connected
    })
    .await;

    let errors = [
        bucket.get("k").await.unwrap_err(),
        bucket.put("k", "during".into()).await.unwrap_err(),
        bucket
            .update("k", "during".into(), created)
            .await
            .unwrap_err(),
        bucket.create("other", "during".into()).await.unwrap_err(),
        bucket.delete("k", Some(created)).await.unwrap_err(),
        bucket.keys("").await.unwrap_err(),
    ];
    for error in &errors {
        assert!(error.is_transient(), "not transient: {error:?}");
    }

    fixture.with_servers(|servers| match servers {
        Servers::Single(server) => server.resume(),
        Servers::Cluster(_) => unreachable!("single-node fixture"),
    });
    let (entry, _) = retry_transient("get after the outage", || bucket.get("k")).await;
    let entry = entry.expect("the value written before the outage survives it");
    assert_eq!(
        (&entry.value[..], entry.revision),
        (&b"before"[..], created)
    );
    let (updated, _) = retry_transient("update after the outage", || {
        bucket.update("k", "after".into(), created)
    })
    .await;
    assert!(updated > created);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_keeps_working_when_one_node_is_killed() {
    let fixture = NatsFixture::cluster().await;
    let bucket = fixture.bucket(&spec("killed-node")).await.unwrap();
    let mut watch = bucket.watch("", WatchFrom::Now).await.unwrap();
    let first = bucket.create("k", "1".into()).await.unwrap();
    assert_eq!(next_event(&mut watch).await.revision(), first);

    // Kill the node the client is connected to: the worst case, since the client must also
    // move to another node.
    let connected_port = fixture.store().client().server_info().port;
    fixture.with_servers(|servers| match servers {
        Servers::Cluster(cluster) => {
            let node = cluster
                .nodes()
                .iter_mut()
                .find(|node| node.url().ends_with(&format!(":{connected_port}")))
                .expect("the client is connected to one of the nodes");
            node.kill();
        }
        Servers::Single(_) => unreachable!("cluster fixture"),
    });

    let (entry, _) = retry_transient("get with a node down", || bucket.get("k")).await;
    assert_eq!(entry.map(|e| e.revision), Some(first));
    let (second, _) = retry_transient("update with a node down", || {
        bucket.update("k", "2".into(), first)
    })
    .await;
    let (third, _) =
        retry_transient("create with a node down", || bucket.create("j", "1".into())).await;
    assert!(first < second && second < third);
    let seen: Vec<Revision> = vec![
        next_event(&mut watch).await.revision(),
        next_event(&mut watch).await.revision(),
    ];
    assert_eq!(
        seen,
        [second, third],
        "the watch carries on across the failover"
    );
}

/// A URL that is no NATS URL is a permanent error that says so, not a transient one to
/// retry forever.
#[tokio::test]
async fn a_malformed_url_is_a_permanent_error_that_says_so() {
    let err = NatsStore::connect("nats://127.0.0.1:4222:4223")
        .await
        .expect_err("not a URL");
    assert!(!err.is_transient(), "{err:?}");
    assert!(
        err.to_string().contains("not a valid NATS server URL"),
        "{err}"
    );
}

/// Nobody listening at the URL is transient (a server may be starting there), and says
/// where it tried.
#[tokio::test]
async fn nobody_listening_is_transient_and_says_where() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let err = NatsStore::connect(&url).await.expect_err("nothing there");
    assert!(err.is_transient(), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&url) && text.contains("no server answers"),
        "{text}"
    );
}

/// A server without JetStream is a permanent error that names the fix, from opening a
/// bucket and from starting a manager.
#[tokio::test]
async fn a_server_without_jetstream_is_a_permanent_error_that_says_so() {
    let server = NatsServer::start_without_jetstream();
    let store = NatsStore::connect(&server.url()).await.expect("connects");
    let spec = BucketSpec::new("parti-heartbeat").unwrap();
    let err = store.bucket(&spec).await.expect_err("no JetStream");
    assert!(!err.is_transient(), "{err:?}");
    assert!(err.to_string().contains("JetStream disabled"), "{err}");
    let source = StaticSource::numbered("p", 4).unwrap();
    let err = Manager::builder(store, source, Sticky::default())
        .start()
        .await
        .expect_err("the manager does not start");
    assert!(!err.is_transient(), "{err:?}");
    assert!(err.to_string().contains("-js"), "{err}");
}

/// A handle to a bucket that was deleted and created again (by another process, say)
/// finds its listing refused as `NotFound` — the bucket it opened is gone — rather than
/// listing the new, empty bucket as if every key had gone away by itself. Opening the
/// bucket again gives a handle that lists it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_through_a_handle_of_a_recreated_bucket_is_not_found() {
    let fixture = NatsFixture::single().await;
    let old = fixture.bucket(&spec("recreated")).await.unwrap();
    old.put("worker-1", "beat".into()).await.unwrap();
    assert_eq!(old.entries("worker-").await.unwrap().len(), 1);
    fixture.delete_bucket("recreated").await.unwrap();
    // Someone else creates it again (a second later: stream creation times have a
    // resolution the test must step over).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let new = fixture.bucket(&spec("recreated")).await.unwrap();
    let err = old.entries("worker-").await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    assert!(new.entries("worker-").await.unwrap().is_empty());
}

/// A server restarted without its data, the bucket created again by another handle: the
/// open watch of the old bucket ends as `NotFound` (the new bucket's revisions start over,
/// below what the watch delivered, so resuming it would deliver nothing for a long time),
/// and its caller watches and reads the new bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_ends_as_not_found_when_the_server_restarts_without_its_data() {
    let fixture = NatsFixture::single().await;
    let old = fixture.bucket(&spec("emptied")).await.unwrap();
    let mut watch = old.watch_key("worker-1", WatchFrom::Now).await.unwrap();
    for value in ["1", "2", "3"] {
        old.put("worker-1", value.into()).await.unwrap();
        assert!(matches!(next_event(&mut watch).await, WatchEvent::Put(_)));
    }
    fixture.with_servers(|servers| match servers {
        Servers::Single(server) => server.restart_empty(),
        Servers::Cluster(_) => unreachable!("single-node fixture"),
    });
    // Created again by someone else (stream creation times have a resolution of about a
    // second: step over it), and written to.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let spec = spec("emptied");
    let (new, _) = retry_transient("create the bucket again", || fixture.bucket(&spec)).await;
    retry_transient("put to the new bucket", || new.put("worker-1", "4".into())).await;
    match tokio::time::timeout(RECOVERY, watch.next()).await {
        Ok(Some(Err(StoreError::NotFound { .. }))) => {}
        other => panic!("expected the watch to end as NotFound, got {other:?}"),
    }
}

/// A listing of a bucket on one server sends a handful of requests, not one per key; and
/// while every key is written again and again (heartbeats), it still ends and shows each
/// live key exactly once. (The ordered consumer that delivers each key's last record lost
/// about one key in 200 under these writes — with history 1 a key's last record is removed
/// when it is written again, under the consumer's feet — so the keys it did not deliver are
/// read one by one; without those reads this test fails.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_under_continuous_writes_shows_every_key_once() {
    const KEYS: usize = 200;
    let server = NatsServer::start_monitored();
    let monitor = server.monitor_url().expect("monitored");
    tests::nats::wait_for_jetstream(&server.url(), 1).await;
    let store = NatsStore::connect(&server.url()).await.unwrap();
    let bucket = store.bucket(&spec("listed")).await.unwrap();
    for i in 0..KEYS {
        bucket
            .put(&format!("worker-{i}"), "0".into())
            .await
            .unwrap();
    }
    bucket.put("other", "x".into()).await.unwrap();
    // Quiet, one listing is a handful of requests, not one per key.
    let messages_in = || async {
        number_after(&http_get(&monitor, "/varz").await, "\"in_msgs\"").expect("in_msgs")
    };
    let before = messages_in().await;
    assert_eq!(bucket.entries("worker-").await.unwrap().len(), KEYS);
    let sent = messages_in().await - before;
    assert!(
        sent <= 10,
        "one listing of {KEYS} keys sent {sent} messages"
    );

    // Writes all along: every listing still ends and shows each key once.
    let writer = {
        let bucket = bucket.clone();
        tokio::spawn(async move {
            for round in 1.. {
                for i in 0..KEYS {
                    let value = round.to_string().into();
                    if bucket.put(&format!("worker-{i}"), value).await.is_err() {
                        return;
                    }
                }
            }
        })
    };
    for _ in 0..20 {
        let listed = tokio::time::timeout(RECOVERY, bucket.entries("worker-"))
            .await
            .expect("a listing ends")
            .unwrap();
        let keys: std::collections::BTreeSet<&str> =
            listed.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys.len(), KEYS, "each key once");
        assert_eq!(listed.len(), KEYS, "each key once");
        assert!(
            listed.windows(2).all(|w| w[0].key < w[1].key),
            "sorted by key"
        );
    }
    writer.abort();
}

/// The server loses a bucket's files — as nats-server does when a stream is created again
/// while the files of the one deleted before it are still being removed in the background
/// (seen under load: every write to the new stream then fails). Here the stream's block
/// directory is removed, and the write that needs a new block finds it gone: that write
/// deletes the stream and reports the bucket gone, and opening the bucket again creates one
/// that works. (Without the repair, that write and every one after fail as transient.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_whose_files_the_server_lost_is_deleted_to_be_created_again() {
    let fixture = NatsFixture::single().await;
    let broken = fixture.bucket(&spec("lost-files")).await.unwrap();
    let dir = fixture.with_servers(|servers| match servers {
        Servers::Single(server) => server.dir().to_owned(),
        Servers::Cluster(_) => unreachable!("a single server"),
    });
    let blocks = dir.join("jetstream/jetstream/$G/streams/KV_lost-files/msgs");
    std::fs::remove_dir_all(&blocks)
        .unwrap_or_else(|e| panic!("removing {}: {e}", blocks.display()));
    // Large values, so that the block fills and a new one is needed after a few writes.
    let large = bytes::Bytes::from(vec![7u8; 900 * 1024]);
    let mut written = 0;
    let err = loop {
        match broken
            .put(&format!("worker-{written}"), large.clone())
            .await
        {
            Ok(_) => written += 1,
            Err(e) => break e,
        }
        assert!(written < 40, "{written} writes without a new block");
    };
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    let lost_files = spec("lost-files");
    let (again, _) =
        retry_transient("opening the bucket again", || fixture.bucket(&lost_files)).await;
    again.put("worker-1", "beat".into()).await.unwrap();
    let stored = again
        .get("worker-1")
        .await
        .unwrap()
        .expect("the value just put");
    assert_eq!(&stored.value[..], b"beat");
}

/// A bucket this store opened and finds deleted is created again only after a pause: the
/// server may still be removing the deleted stream's files. (With no pause the test fails.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_bucket_is_created_again_only_after_a_pause() {
    let fixture = NatsFixture::single().await;
    let spec = spec("paused");
    fixture.bucket(&spec).await.unwrap();
    fixture.delete_bucket("paused").await.unwrap();
    let asked = Instant::now();
    let again = fixture.bucket(&spec).await.unwrap();
    let waited = asked.elapsed();
    assert!(
        waited >= Duration::from_millis(200),
        "created again after {waited:?}"
    );
    again.put("worker-1", "beat".into()).await.unwrap();
}

/// Two replicated buckets whose streams one node leads are moved apart by
/// `keep_leader_apart_from` (what the parti leader does for its two heartbeat buckets), and
/// once apart, it moves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_leader_apart_moves_one_of_two_leaders_off_a_shared_node() {
    let fixture = NatsFixture::cluster().await;
    let client = fixture.store().client().clone();
    let mut same_node = 0;
    // Leaders are placed at random: pairs of buckets until one pair shares a node.
    for pair in 0..12 {
        let first = fixture
            .bucket(&spec(&format!("apart-a-{pair}")))
            .await
            .unwrap();
        let second = fixture
            .bucket(&spec(&format!("apart-b-{pair}")))
            .await
            .unwrap();
        let (a, b) = (first.name().to_owned(), second.name().to_owned());
        let leaders = || async {
            (
                stream_leader(&client, &a).await,
                stream_leader(&client, &b).await,
            )
        };
        let (mut la, mut lb) = leaders().await;
        let deadline = Instant::now() + RECOVERY;
        while (la.is_none() || lb.is_none()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            (la, lb) = leaders().await;
        }
        let shared = la == lb;
        let (moved, _) =
            retry_transient("keep apart", || second.keep_leader_apart_from(&first)).await;
        assert_eq!(
            moved, shared,
            "moved a leader only if one node led both ({la:?}, {lb:?})"
        );
        if !shared {
            continue;
        }
        same_node += 1;
        let deadline = Instant::now() + RECOVERY;
        loop {
            let (la, lb) = leaders().await;
            if la.is_some() && lb.is_some() && la != lb {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "still on one node: {la:?} {lb:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (moved, _) =
            retry_transient("keep apart", || second.keep_leader_apart_from(&first)).await;
        assert!(!moved, "apart already: nothing to move");
        if same_node == 2 {
            return;
        }
    }
    assert!(
        same_node > 0,
        "no pair of 12 shared a leader's node (1 in 3 each)"
    );
}

/// A key watch on a replicated bucket keeps its consumer while other keys are written, and
/// still delivers its key. (Its idle check asked for the bucket's last revision, not the
/// key's: once any other key was written after the watched one, every key watch of a fleet
/// re-created its consumer each second — a JetStream API request per watch per second, and
/// with a node of three down, a third of those hang. With that check back, this fails at
/// the first look.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_watch_keeps_its_consumer_while_other_keys_change() {
    let fixture = NatsFixture::cluster().await;
    let bucket = fixture.bucket(&spec("busy")).await.unwrap();
    let first = bucket.create("a", "1".into()).await.unwrap();
    let mut watch = bucket.watch_key("a", WatchFrom::Now).await.unwrap();
    // The watch waits for its next event meanwhile (a watch looks only while polled).
    let delivered = tokio::spawn(async move { next_event(&mut watch).await.revision() });
    let stream = async_nats::jetstream::new(fixture.store().client().clone())
        .get_stream("KV_busy")
        .await
        .unwrap();
    let consumers = || async {
        let mut names: Vec<String> = stream
            .consumer_names()
            .filter_map(|name| async move { name.ok() })
            .collect()
            .await;
        names.sort();
        names
    };
    let watching = consumers().await;
    assert_eq!(watching.len(), 1, "the watch's consumer: {watching:?}");
    // Writes of another key through several of the watch's idle checks (one a second).
    let until = Instant::now() + Duration::from_millis(4_500);
    while Instant::now() < until {
        bucket.put("b", "x".into()).await.unwrap();
        assert_eq!(
            consumers().await,
            watching,
            "the key watch's consumer changed"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let second = bucket.update("a", "2".into(), first).await.unwrap();
    assert_eq!(delivered.await.unwrap(), second);
}
