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

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            tests::scenarios::$name(fleet().await).await;
        }
    )*};
}

scenarios!(
    cold_start,
    planned_scale,
    crash_one_of_three,
    graceful_stop,
    leader_stop,
    fleet_restart,
    leader_crash,
    five_leader_crashes,
    refresh,
    cooldown,
    joins_in_one_window,
    ten_at_once_one_leader,
    transitions_in_order,
);
