//! The scenario suite on a real `nats-server` (one per test), with short timings on the real
//! clock.

use parti_core::config::Config;
use tests::fleet::Fleet;
use tests::nats::NatsFixture;

async fn fleet() -> Fleet<NatsFixture> {
    let nats = NatsFixture::single().await;
    Fleet::new(move || nats.clone(), Config::short_timings(), 30)
}

tests::scenario_tests! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    fleet = fleet().await;
}
