//! The Store conformance suite against real `nats-server` processes: a single node, and a
//! 3-node JetStream cluster with every bucket replicated 3 times. Each test starts its own
//! servers on free loopback ports with temporary storage, and stops them.

mod single_node {
    use std::time::Duration;

    use parti_core::testing::TtlTiming;
    use tests::nats::NatsFixture;

    parti_core::store_conformance_tests! {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        store = NatsFixture::single().await;
        timing = TtlTiming::real(Duration::from_secs(3), Duration::from_millis(700));
    }
}

mod cluster {
    use std::time::Duration;

    use parti_core::testing::{self, TtlTiming};
    use tests::nats::NatsFixture;

    parti_core::store_conformance_tests! {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        store = NatsFixture::cluster().await;
        timing = TtlTiming::real(Duration::from_secs(3), Duration::from_millis(700));
    }

    /// Reads through nodes 1 and 2 of writes acknowledged through node 0, with background
    /// writes: 10,000 rounds, 20,000 gets and 1,000 listings, none may be stale. (With the
    /// direct gets async-nats turns on by default, about 1 % of such gets were.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_on_other_nodes_see_acknowledged_writes() {
        let fixture = NatsFixture::cluster().await;
        let writer = fixture.pinned(0).await;
        let readers = [fixture.pinned(1).await, fixture.pinned(2).await];
        let report = testing::reads_see_acknowledged_writes(&writer, &readers, 10_000).await;
        println!("{report:?}");
        assert!(report.reads >= 20_000);
    }
}

/// Buckets are read through the stream leader: created with direct gets off, and an existing
/// bucket with them on (what async-nats, the `nats` CLI and older parti versions create) is
/// switched over when opened, with its entries kept.
mod direct_gets {
    use async_nats::jetstream::{self, kv};
    use parti_core::store::{Bucket, BucketSpec, Store};
    use tests::nats::NatsFixture;

    async fn allow_direct(fixture: &NatsFixture, bucket: &str) -> bool {
        jetstream::new(fixture.store().client().clone())
            .get_stream(format!("KV_{bucket}"))
            .await
            .expect("the bucket's stream")
            .cached_info()
            .config
            .allow_direct
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn new_buckets_have_direct_gets_off() {
        let fixture = NatsFixture::single().await;
        let spec = BucketSpec::new("fresh").expect("valid");
        fixture.store().bucket(&spec).await.expect("opened");
        assert!(!allow_direct(&fixture, "fresh").await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn existing_bucket_with_direct_gets_is_switched_over() {
        let fixture = NatsFixture::single().await;
        let js = jetstream::new(fixture.store().client().clone());
        let foreign = js
            .create_key_value(kv::Config {
                bucket: "foreign".to_owned(),
                history: 1,
                ..Default::default()
            })
            .await
            .expect("created by plain async-nats");
        foreign.put("k", "v".into()).await.expect("put");
        assert!(
            allow_direct(&fixture, "foreign").await,
            "async-nats's default"
        );

        let bucket = fixture
            .store()
            .bucket(&BucketSpec::new("foreign").expect("valid"))
            .await
            .expect("opened");
        assert!(!allow_direct(&fixture, "foreign").await, "switched over");
        let entry = bucket.get("k").await.expect("get").expect("kept");
        assert_eq!(&entry.value[..], b"v");
        assert_eq!(bucket.keys("").await.expect("keys"), ["k"]);
    }
}
