//! A [`Store`] fixture on real NATS: it owns the server (or cluster) it talks to, so the
//! processes live exactly as long as the test's store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parti_core::store::{BucketSpec, Store, StoreResult};
use parti_nats::{NatsBucket, NatsStore};

use crate::nats_server::{NatsCluster, NatsServer};

/// How long a fresh server or cluster may take before JetStream serves requests.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What a fixture keeps alive.
#[derive(Debug)]
pub enum Servers {
    /// One node.
    Single(NatsServer),
    /// Three clustered nodes.
    Cluster(NatsCluster),
}

/// A [`NatsStore`] on servers this fixture started, opening every bucket with `replicas`.
#[derive(Debug, Clone)]
pub struct NatsFixture {
    servers: Arc<std::sync::Mutex<Servers>>,
    store: NatsStore,
    replicas: usize,
}

impl NatsFixture {
    /// A single fresh server.
    pub async fn single() -> Self {
        let server = NatsServer::start();
        let url = server.url();
        Self::connect(Servers::Single(server), &url, 1).await
    }

    /// A fresh 3-node cluster; every bucket gets 3 replicas.
    pub async fn cluster() -> Self {
        let cluster = NatsCluster::start();
        let url = cluster.url();
        Self::connect(Servers::Cluster(cluster), &url, 3).await
    }

    async fn connect(servers: Servers, url: &str, replicas: usize) -> Self {
        wait_for_jetstream(url, replicas).await;
        let store = NatsStore::connect(url)
            .await
            .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
        Self {
            servers: Arc::new(std::sync::Mutex::new(servers)),
            store,
            replicas,
        }
    }

    /// A fixture on the same servers whose client talks to cluster node `node` only (it
    /// ignores the other nodes the server tells it about), to test what a client of one
    /// node sees of writes made through another.
    ///
    /// # Panics
    /// When the fixture is not a cluster, or the node does not answer.
    pub async fn pinned(&self, node: usize) -> Self {
        let url = self.with_servers(|servers| match servers {
            Servers::Cluster(cluster) => cluster.node_urls()[node].clone(),
            Servers::Single(_) => panic!("pinning a client needs a cluster fixture"),
        });
        let client = async_nats::ConnectOptions::new()
            .name(format!("parti-test-node-{node}"))
            .ignore_discovered_servers()
            .connect(url.as_str())
            .await
            .unwrap_or_else(|e| panic!("connecting to node {node} at {url}: {e}"));
        Self {
            servers: Arc::clone(&self.servers),
            store: NatsStore::new(client),
            replicas: self.replicas,
        }
    }

    /// A fixture on the same servers with a client of its own, connected the ordinary way
    /// (to the servers' URLs; it moves to another node when its own goes away), as each
    /// process of a fleet has. Blocks the thread while it connects (a multi-thread runtime
    /// only), so that a fleet's `connect` closure can call it.
    ///
    /// # Panics
    /// When no server answers.
    pub fn own_connection(&self) -> Self {
        let url = self.url();
        let store = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(NatsStore::connect(&url))
        })
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
        Self {
            servers: Arc::clone(&self.servers),
            store,
            replicas: self.replicas,
        }
    }

    /// The URL a client connects to the ordinary way: the server's, or every node's of a
    /// cluster.
    pub fn url(&self) -> String {
        self.with_servers(|servers| match servers {
            Servers::Cluster(cluster) => cluster.url(),
            Servers::Single(server) => server.url(),
        })
    }

    /// The store.
    pub fn store(&self) -> &NatsStore {
        &self.store
    }

    /// Runs `f` on the servers (to stop, kill or restart them).
    pub fn with_servers<T>(&self, f: impl FnOnce(&mut Servers) -> T) -> T {
        let mut servers = self
            .servers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut servers)
    }
}

impl Store for NatsFixture {
    type Bucket = NatsBucket;

    async fn bucket(&self, spec: &BucketSpec) -> StoreResult<NatsBucket> {
        spec.validate()?;
        self.store
            .bucket(&spec.clone().with_replicas(self.replicas))
            .await
    }

    async fn delete_bucket(&self, name: &str) -> StoreResult<()> {
        self.store.delete_bucket(name).await
    }
}

/// Waits until JetStream at `url` can create a bucket with `replicas` (a cluster first
/// elects a meta leader), polling; panics after 30 seconds.
pub async fn wait_for_jetstream(url: &str, replicas: usize) {
    let deadline = Instant::now() + READY_TIMEOUT;
    let probe = BucketSpec::new("parti-ready-probe")
        .expect("valid name")
        .with_replicas(replicas);
    let mut last_error = String::new();
    while Instant::now() < deadline {
        match NatsStore::connect(url).await {
            Ok(store) => match store.bucket(&probe).await {
                Ok(_) => {
                    let _ = store.delete_bucket(probe.name()).await;
                    return;
                }
                Err(e) => last_error = e.to_string(),
            },
            Err(e) => last_error = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("JetStream at {url} not ready within {READY_TIMEOUT:?}: {last_error}");
}

/// The server name of the stream leader of bucket `bucket`, asked of the cluster through
/// `client` (`None`: no leader now, or no answer).
pub async fn stream_leader(client: &async_nats::Client, bucket: &str) -> Option<String> {
    let jetstream = async_nats::jetstream::new(client.clone());
    let stream = jetstream.get_stream(format!("KV_{bucket}")).await.ok()?;
    let info = stream.get_info().await.ok()?;
    info.cluster?.leader
}
