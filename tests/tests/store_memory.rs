//! The Store conformance suite against the embedded `MemoryStore`, on tokio's paused clock:
//! TTL expiry must be exact.

mod conformance {
    use std::time::Duration;

    use parti_core::store::MemoryStore;
    use parti_core::testing::TtlTiming;

    parti_core::store_conformance_tests! {
        #[tokio::test(start_paused = true)]
        store = MemoryStore::new();
        timing = TtlTiming::exact(Duration::from_secs(1));
    }
}
