//! A manager's metrics reach the Prometheus exporter (the only test in this binary, since it
//! installs the process-wide recorder).

use std::time::Duration;

use parti_core::decide::ManagerState;
use parti_core::runtime::{Manager, StaticSource};
use parti_core::store::MemoryStore;
use parti_metrics::names;
use parti_strategy::Sticky;

#[tokio::test(start_paused = true)]
async fn a_running_manager_is_visible_in_the_prometheus_output() {
    let handle = parti_metrics::install_prometheus().expect("first recorder");
    let source = StaticSource::numbered("p", 5).unwrap();
    let manager = Manager::builder(MemoryStore::new(), source, Sticky::default())
        .start()
        .await
        .unwrap();
    manager
        .wait_state(ManagerState::Stable, Duration::from_secs(60))
        .await
        .unwrap();
    let text = handle.render();
    for name in [
        names::STATE_TRANSITIONS,
        names::IS_LEADER,
        names::REBALANCES,
        names::PARTITIONS_OWNED,
        names::STORE_OPERATION_DURATION,
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    assert!(
        text.contains(r#"parti_partitions_owned{worker="worker-0"} 5"#),
        "{text}"
    );
    assert!(text.contains(r#"reason="cold_start""#), "{text}");
    manager.stop().await.unwrap();
}
