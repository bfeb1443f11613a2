//! A running fleet's metrics, scraped over HTTP from the endpoint (the only test in this
//! binary, since it installs the process-wide recorder).

use std::time::Duration;

use parti_core::config::Config;
use parti_core::decide::ManagerState;
use parti_core::runtime::{Manager, StaticSource};
use parti_core::store::MemoryStore;
use parti_metrics::{REBALANCE_BUCKETS, STORE_BUCKETS, names};
use parti_strategy::Sticky;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One `GET` over a fresh connection: the status line and the body.
async fn get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).await.expect("endpoint reachable");
    let request = format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a whole response");
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// The value of the series `name{labels}` (labels in the exporter's order), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_fleet_is_scraped_with_histograms_one_label_set_and_a_state_gauge() {
    let endpoint = parti_metrics::serve("127.0.0.1:0").await.expect("serves");
    let store = MemoryStore::new();
    let source = StaticSource::numbered("p", 6).unwrap();
    let mut managers = Vec::new();
    for _ in 0..2 {
        let manager = Manager::builder(store.connect(), source.clone(), Sticky::default())
            .config(Config::short_timings())
            .start()
            .await
            .unwrap();
        managers.push(manager);
    }
    for manager in &managers {
        manager
            .wait_state(ManagerState::Stable, Duration::from_secs(30))
            .await
            .unwrap();
    }
    let follower = managers
        .iter()
        .find(|m| !m.is_leader())
        .expect("one of two follows")
        .worker_id();
    let leader = managers
        .iter()
        .find(|m| m.is_leader())
        .expect("one of two leads")
        .worker_id();

    let (status, text) = get(endpoint.local_addr(), "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK");

    // Histograms with the explicit buckets, labelled by worker.
    let store_bucket = format!(
        r#"{}_bucket{{worker="{follower}",operation="update",le="{}"}}"#,
        names::STORE_OPERATION_DURATION,
        STORE_BUCKETS[3]
    );
    assert!(
        value(&text, &store_bucket).is_some(),
        "{store_bucket} missing:\n{text}"
    );
    let rebalance_bucket = format!(
        r#"{}_bucket{{worker="{leader}",reason="cold_start",le="{}"}}"#,
        names::REBALANCE_DURATION,
        REBALANCE_BUCKETS[5]
    );
    assert!(
        value(&text, &rebalance_bucket).is_some(),
        "{rebalance_bucket} missing:\n{text}"
    );
    assert!(
        !text.contains("quantile="),
        "durations are histograms, not summaries"
    );

    // One label set: every parti series names its worker, and only claimed ids.
    for line in text.lines().filter(|l| l.starts_with("parti_")) {
        assert!(
            line.contains("worker=\"worker-"),
            "series without a worker: {line}"
        );
    }
    assert!(!text.contains("unclaimed"), "{text}");

    // The state gauge and is_leader 0 on the follower.
    let state = |worker: &str, state: &str| {
        value(
            &text,
            &format!(r#"parti_state{{worker="{worker}",state="{state}"}}"#),
        )
    };
    assert_eq!(state(follower.as_str(), "stable"), Some(1.0), "{text}");
    assert_eq!(state(follower.as_str(), "claiming_id"), Some(0.0), "{text}");
    assert_eq!(state(leader.as_str(), "stable"), Some(1.0), "{text}");
    let is_leader =
        |worker: &str| value(&text, &format!(r#"parti_is_leader{{worker="{worker}"}}"#));
    assert_eq!(is_leader(follower.as_str()), Some(0.0), "{text}");
    assert_eq!(is_leader(leader.as_str()), Some(1.0), "{text}");
    let owned: f64 = managers
        .iter()
        .map(|m| {
            value(
                &text,
                &format!(r#"parti_partitions_owned{{worker="{}"}}"#, m.worker_id()),
            )
            .unwrap()
        })
        .sum();
    assert_eq!(owned, 6.0);
    assert_eq!(
        value(&text, &format!(r#"parti_partitions{{worker="{leader}"}}"#)),
        Some(6.0),
        "the 'partitions unowned' alert's left side"
    );

    // Other paths and methods get clear answers.
    assert_eq!(
        get(endpoint.local_addr(), "/nope").await.0,
        "HTTP/1.1 404 Not Found"
    );

    for manager in managers {
        manager.stop().await.unwrap();
    }
    let (_, text) = get(endpoint.local_addr(), "/metrics").await;
    assert_eq!(
        value(
            &text,
            &format!(r#"parti_state{{worker="{follower}",state="shutdown"}}"#)
        ),
        Some(1.0)
    );
}
