//! The scenario suite on a real `nats-server` (one per test), with short timings on the real
//! clock.

use std::time::Duration;

use parti_core::config::Config;
use tests::fleet::Fleet;
use tests::nats::NatsFixture;

/// Short timings; TTLs stay at a second or more because the server's expiry markers are
/// kept at least one second.
fn config() -> Config {
    let ms = Duration::from_millis;
    let mut config = Config::default();
    config.heartbeat_interval = ms(250);
    config.heartbeat_ttl = ms(1000);
    config.emergency_grace = ms(250);
    config.election_ttl = ms(2000);
    config.id_ttl = ms(5000);
    config.cold_start_window = ms(1500);
    config.planned_scale_window = ms(1000);
    config.cooldown = ms(1000);
    config.validate().expect("valid test timings");
    config
}

async fn fleet() -> Fleet<NatsFixture> {
    let nats = NatsFixture::single().await;
    Fleet::new(move || nats.clone(), config(), 30)
}

tests::scenario_tests! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    fleet = fleet().await;
}
