//! The `parti` command against a running fleet on a real nats-server: what `status`,
//! `describe`, `watch` and `--json` print, and that looking creates nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use parti::cli::{CliError, run};
use parti::strategy::Sticky;
use parti::{Config, Manager, ManagerState, NatsStore, StaticSource};
use tests::nats_server::{NatsServer, http_get, number_after};

/// Runs the command line and returns what it printed.
async fn parti(args: &[&str]) -> Result<String, CliError> {
    let mut out = Vec::new();
    run(
        std::iter::once("parti").chain(args.iter().copied()),
        &mut out,
    )
    .await?;
    Ok(String::from_utf8(out).expect("utf-8 output"))
}

async fn fleet(url: &str, n: usize, prefix: &str) -> Vec<Manager<NatsStore>> {
    let source = StaticSource::numbered("p", 20).unwrap();
    let config =
        Config::short_timings().with_buckets(parti::config::BucketNames::with_prefix(prefix));
    let mut managers = Vec::new();
    for _ in 0..n {
        let store = NatsStore::connect(url).await.unwrap();
        let manager = Manager::builder(store, source.clone(), Sticky::default())
            .config(config.clone())
            .identity(format!("pod-{}", managers.len()))
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
    managers
}

/// Every worker reports the published version applied: the fleet is settled, as `status`
/// will show it.
async fn settled(managers: &[Manager<NatsStore>]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let versions: Vec<u64> = managers.iter().map(|m| m.assignment().version()).collect();
        let owned: usize = managers.iter().map(|m| m.assignment().len()).sum();
        if owned == 20 && versions.iter().all(|v| *v == versions[0]) {
            // One heartbeat interval, so the heartbeats report it too.
            tokio::time::sleep(Config::short_timings().heartbeat_interval * 2).await;
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never settled: {versions:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_describe_and_json_show_a_running_fleet() {
    let server = NatsServer::start();
    let url = server.url();
    let managers = fleet(&url, 5, "shop").await;
    settled(&managers).await;
    let leader = managers.iter().find(|m| m.is_leader()).unwrap();
    let term = leader.leader().unwrap().term;

    let text = parti(&["status", "--nats", &url, "--prefix", "shop"])
        .await
        .unwrap();
    println!("{text}");
    assert!(
        text.contains(&format!("leader    {} (instance", leader.worker_id())),
        "{text}"
    );
    assert!(
        text.contains(&format!("term {term}, phase stable")),
        "{text}"
    );
    for manager in &managers {
        let row = text
            .lines()
            .find(|l| l.starts_with(&format!("{} ", manager.worker_id())))
            .unwrap_or_else(|| panic!("no row for {}: {text}", manager.worker_id()));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[1], "stable", "{row}");
        assert_eq!(cells[2], manager.assignment().len().to_string(), "{row}");
        assert_eq!(
            cells[3],
            manager.assignment().version().to_string(),
            "applied: {row}"
        );
        assert_eq!(cells[5], "0", "no lag: {row}");
        assert!(row.contains("s ago"), "heartbeat age: {row}");
        assert!(row.contains("pod-"), "identity: {row}");
    }

    // --json: the same, for scripts.
    let json = parti(&["status", "--nats", &url, "--prefix", "shop", "--json"])
        .await
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["leader"]["worker"], leader.worker_id().as_str());
    assert_eq!(doc["leader"]["term"], term);
    assert_eq!(doc["workers"].as_array().unwrap().len(), 5);
    assert_eq!(doc["partitions"].as_object().unwrap().len(), 20);
    assert!(doc["problems"].as_array().unwrap().is_empty(), "{json}");
    let by_id: BTreeMap<String, &serde_json::Value> = doc["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["id"].as_str().unwrap().to_owned(), w))
        .collect();
    for manager in &managers {
        let worker = by_id[manager.worker_id().as_str()];
        assert_eq!(worker["partitions"], manager.assignment().len());
        assert_eq!(worker["state"], "stable");
        assert!(worker["heartbeat_age_secs"].as_f64().unwrap() < 5.0);
    }

    // describe: the owner and the token each manager holds.
    for manager in &managers {
        for grant in manager.assignment().grants() {
            let (partition, token) = grant;
            let text = parti(&[
                "describe",
                partition.as_str(),
                "--nats",
                &url,
                "--prefix",
                "shop",
            ])
            .await
            .unwrap();
            assert!(
                text.contains(&format!("owner     {} (holds it)", manager.worker_id())),
                "{text}"
            );
            assert!(
                text.contains(&format!(
                    "token     term {}, version {}",
                    token.term, token.version
                )),
                "{text}"
            );
            let json = parti(&[
                "describe",
                partition.as_str(),
                "--nats",
                &url,
                "--prefix",
                "shop",
                "--json",
            ])
            .await
            .unwrap();
            let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(doc["owner"]["worker"], manager.worker_id().as_str());
            assert_eq!(doc["owner"]["term"], token.term);
            assert_eq!(doc["owner"]["version"], token.version);
        }
    }
    let unowned = parti(&["describe", "nope", "--nats", &url, "--prefix", "shop"]).await;
    assert!(matches!(unowned, Err(CliError::Unowned(_))), "{unowned:?}");

    // watch: a redraw per change, here bounded.
    let drawn = parti(&[
        "watch",
        "--max-updates",
        "2",
        "--json",
        "--nats",
        &url,
        "--prefix",
        "shop",
    ])
    .await
    .unwrap();
    assert_eq!(drawn.lines().count(), 2, "{drawn}");

    for manager in managers {
        manager.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_on_an_empty_server_says_so_and_creates_nothing() {
    let server = NatsServer::start_monitored();
    let url = server.url();
    let error = parti(&["status", "--nats", &url]).await.unwrap_err();
    let message = error.to_string();
    assert!(message.contains("no parti fleet here"), "{message}");
    assert!(message.contains("parti-ids"), "names the bucket: {message}");
    let error = parti(&["describe", "p-1", "--nats", &url])
        .await
        .unwrap_err();
    assert!(error.to_string().contains("no parti fleet here"), "{error}");
    let jsz = http_get(&server.monitor_url().unwrap(), "/jsz").await;
    assert_eq!(
        number_after(&jsz, "\"streams\""),
        Some(0),
        "nothing created: {jsz}"
    );
}

#[tokio::test]
async fn unreachable_nats_and_bad_arguments_are_clear_errors() {
    // A port nobody listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("nats://{}", listener.local_addr().unwrap());
    drop(listener);
    let error = parti(&["status", "--nats", &url]).await.unwrap_err();
    assert!(matches!(error, CliError::Connect { .. }), "{error:?}");
    assert!(error.to_string().contains("cannot reach NATS"), "{error}");
    let usage = parti(&["frobnicate"]).await.unwrap_err();
    assert!(matches!(usage, CliError::Usage(_)), "{usage:?}");
    let help = parti(&["--help"]).await.unwrap();
    for command in ["status", "describe", "watch"] {
        assert!(help.contains(command), "{help}");
    }
}
