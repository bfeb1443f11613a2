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
        timing = TtlTiming::with_slack(Duration::from_secs(3), Duration::from_millis(700));
    }
}

mod cluster {
    use std::time::Duration;

    use parti_core::testing::TtlTiming;
    use tests::nats::NatsFixture;

    parti_core::store_conformance_tests! {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        store = NatsFixture::cluster().await;
        timing = TtlTiming::with_slack(Duration::from_secs(3), Duration::from_millis(700));
    }
}
