//! `KvPartitionSource` on a real nats-server: partitions added and removed while a fleet
//! runs are owned exactly once after, the leader refreshes by itself (no
//! `refresh_partitions` call), the others do not move more than they must, and entries that
//! are not partitions are skipped and reported.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use parti::nats::KvPartitionSource;
use parti::strategy::{Partition, PartitionId, Sticky};
use parti::{Config, Manager, ManagerState, NatsStore};
use tests::nats_server::NatsServer;
use tokio::time::{Instant, sleep};

fn id(n: u32) -> PartitionId {
    PartitionId::from_keys(["t", &n.to_string()]).unwrap()
}

/// Who owns what, as the workers report it; panics if a partition has two owners.
fn owners(managers: &[Manager<NatsStore>]) -> BTreeMap<PartitionId, String> {
    let mut owners = BTreeMap::new();
    for manager in managers {
        for partition in manager.assignment().partitions() {
            let previous = owners.insert(partition.clone(), manager.worker_id().to_string());
            assert!(previous.is_none(), "{partition} owned twice");
        }
    }
    owners
}

/// Waits until the workers own exactly `wanted`, each once.
async fn owned_exactly(
    managers: &[Manager<NatsStore>],
    wanted: &BTreeSet<PartitionId>,
) -> BTreeMap<PartitionId, String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let owners = owners(managers);
        if owners.keys().cloned().collect::<BTreeSet<_>>() == *wanted {
            return owners;
        }
        assert!(
            Instant::now() < deadline,
            "never owned exactly {} partitions: {:?}",
            wanted.len(),
            owners.keys().collect::<Vec<_>>()
        );
        sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_added_and_removed_in_the_bucket_are_owned_exactly_once() {
    let server = NatsServer::start();
    let url = server.url();
    let admin = NatsStore::connect(&url).await.unwrap();
    let source = KvPartitionSource::open(&admin, "tenants").await.unwrap();
    for n in 0..30 {
        source.add(&Partition::from(id(n))).await.unwrap();
    }
    // Two adds of one partition: exactly one wins.
    assert!(source.add(&Partition::from(id(0))).await.is_err());

    let mut managers = Vec::new();
    for _ in 0..3 {
        let store = NatsStore::connect(&url).await.unwrap();
        let source = KvPartitionSource::open(&store, "tenants").await.unwrap();
        let manager = Manager::builder(store, source, Sticky::default())
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
    let mut wanted: BTreeSet<PartitionId> = (0..30).map(id).collect();
    let before = owned_exactly(&managers, &wanted).await;

    // Ten added, five removed, one weight changed, and two entries that are no partitions —
    // with no refresh asked for: the leader's watch of the bucket sees it all.
    for n in 30..40 {
        source.add(&Partition::from(id(n))).await.unwrap();
        wanted.insert(id(n));
    }
    for n in 0..5 {
        source.remove(&id(n)).await.unwrap();
        wanted.remove(&id(n));
    }
    let raw = admin
        .open_existing("tenants")
        .await
        .unwrap()
        .expect("the bucket exists");
    use parti::store::Bucket;
    raw.put("t.bad", "heavy".into()).await.unwrap();
    raw.put("t..x", "1".into()).await.unwrap_err(); // not even a valid key: refused by the store
    raw.put("t.zero", "0".into()).await.unwrap();
    let after = owned_exactly(&managers, &wanted).await;

    // The partitions that stayed did not move more than balance asks: with 3 workers going
    // from 10 each to 35 / 3, none of a worker's kept partitions had to leave it.
    let moved = before
        .iter()
        .filter(|(p, owner)| after.get(*p).is_some_and(|now| now != *owner))
        .count();
    assert!(moved <= 2, "{moved} partitions that stayed moved");

    let (listed, bad) = source.list().await.unwrap();
    assert_eq!(listed.len(), 35);
    let bad_keys: BTreeSet<&str> = bad.iter().map(|b| b.key.as_str()).collect();
    assert_eq!(bad_keys, BTreeSet::from(["t.bad", "t.zero"]), "{bad:?}");
    assert!(
        bad.iter().all(|b| b.reason.contains("not a weight")),
        "{bad:?}"
    );

    for manager in managers {
        manager.stop().await.unwrap();
    }
}
