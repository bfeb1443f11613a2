//! Real `nats-server` processes for tests: one node or a 3-node JetStream cluster on
//! loopback, each with its own temporary storage directory, stopped (and the directory
//! removed) on drop.
//!
//! The binary comes from `NATS_SERVER_BIN` or `PATH`. When there is none, starting a server
//! panics with a message saying to run `cargo xtask test`, which installs a pinned one:
//! tests that need NATS fail loudly, they never skip.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Free ports are found by binding port 0 and letting go, so another test's server can take
/// one before ours binds it: start again with fresh ports, up to this many times.
const PORT_ATTEMPTS: u32 = 5;

/// The `nats-server` binary to run.
///
/// # Panics
/// When neither `NATS_SERVER_BIN` nor `PATH` has one.
pub fn server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "NATS_SERVER_BIN={} is not a file; run `cargo xtask test`, which installs nats-server",
            path.display()
        );
        return path;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("nats-server"))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "nats-server not found (NATS_SERVER_BIN is unset and PATH has none). The NATS \
                 tests need a real nats-server >= 2.11: run `cargo xtask test`, which installs \
                 a pinned one and sets NATS_SERVER_BIN"
            )
        })
}

/// A port nobody listens on now (the OS picks; released at once).
fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct free ports: every listener is held until all are bound, so the kernel cannot
/// hand out one port twice.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("binding a loopback port"))
        .collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().expect("a bound address").port())
        .collect()
}

fn temp_dir(tag: &str) -> PathBuf {
    static DIRS: AtomicU64 = AtomicU64::new(0);
    let n = DIRS.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("parti-nats-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating a temp dir");
    dir
}

/// One `nats-server` process with JetStream.
#[derive(Debug)]
pub struct NatsServer {
    name: String,
    port: u16,
    dir: PathBuf,
    /// Whether JetStream is on (it is, but for the test of a server without it).
    jetstream: bool,
    cluster: Option<ClusterArgs>,
    /// The HTTP monitoring port, if it serves one.
    monitor: Option<u16>,
    child: Option<Child>,
}

#[derive(Debug, Clone)]
struct ClusterArgs {
    port: u16,
    routes: String,
}

impl NatsServer {
    /// Starts a single server on a free loopback port, waiting until it accepts
    /// connections.
    pub fn start() -> Self {
        Self::start_single(true, false)
    }

    /// Starts a single server that also serves its HTTP monitoring endpoints
    /// ([`monitor_url`](Self::monitor_url)).
    pub fn start_monitored() -> Self {
        Self::start_single(true, true)
    }

    /// Starts a single server with JetStream off (what a user may point parti at by
    /// mistake).
    pub fn start_without_jetstream() -> Self {
        Self::start_single(false, false)
    }

    fn start_single(jetstream: bool, monitored: bool) -> Self {
        let mut attempt = 1;
        loop {
            let mut server = Self {
                name: "single".to_owned(),
                port: free_port(),
                dir: temp_dir("single"),
                jetstream,
                cluster: None,
                monitor: monitored.then(free_port),
                child: None,
            };
            match server.try_spawn() {
                Ok(()) => return server,
                Err(failure) if Self::lost_a_port_race(&failure) && attempt < PORT_ATTEMPTS => {
                    attempt += 1;
                }
                Err(failure) => panic!("{failure}"),
            }
        }
    }

    /// The client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The HTTP monitoring base URL (`/varz`, `/jsz`), if it serves one.
    pub fn monitor_url(&self) -> Option<String> {
        self.monitor.map(|port| format!("http://127.0.0.1:{port}"))
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn spawn(&mut self) {
        if let Err(failure) = self.try_spawn() {
            panic!("{failure}");
        }
    }

    /// Starts the process and waits until it accepts connections; `Err` with the log when
    /// it exits first (a port taken meanwhile by another test's server, say).
    fn try_spawn(&mut self) -> Result<(), String> {
        // Lame-duck mode (SIGUSR2, `nats-server --signal ldm`) shortened for tests: clients
        // are let go over 30 s (the server's minimum) after a 1 s grace period (the defaults: 2 min
        // after 10 s).
        let config = self.dir.join("server.conf");
        std::fs::write(
            &config,
            "lame_duck_duration: \"30s\"\nlame_duck_grace_period: \"1s\"\n",
        )
        .expect("writing the server's config");
        let mut command = Command::new(server_binary());
        command
            .arg("-c")
            .arg(&config)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-n", &self.name]);
        if let Some(port) = self.monitor {
            command.args(["-m", &port.to_string()]);
        }
        if self.jetstream {
            command
                .arg("-js")
                .arg("-sd")
                .arg(self.dir.join("jetstream"));
        }
        command.stdout(Stdio::null()).stderr(Stdio::from(
            std::fs::File::create(self.dir.join("server.log")).expect("creating the log"),
        ));
        if let Some(cluster) = &self.cluster {
            command
                .args(["--cluster_name", "parti-test", "--cluster"])
                .arg(format!("nats://127.0.0.1:{}", cluster.port))
                .args(["--routes", &cluster.routes]);
        }
        let child = command.spawn().unwrap_or_else(|e| {
            panic!("starting {}: {e}", server_binary().display());
        });
        self.child = Some(child);
        self.wait_accepting()
    }

    fn wait_accepting(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!(
                        "nats-server {} exited with {status}; log:\n{}",
                        self.name,
                        self.log()
                    ));
                }
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "nats-server {} did not accept connections within {START_TIMEOUT:?}; log:\n{}",
                    self.name,
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Whether a failed start was a port taken by someone else (worth another try).
    fn lost_a_port_race(failure: &str) -> bool {
        failure.contains("address already in use")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Stops the server gracefully (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) {
        self.signal_and_wait("-TERM");
    }

    /// Sends the process `signal` (as `kill` spells it) and waits for it to exit.
    fn signal_and_wait(&mut self, signal: &str) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Kills the server (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts the server the way an operator does for an upgrade: lame-duck mode first
    /// (SIGUSR2: it hands its JetStream leaderships to other nodes, stops taking
    /// connections and lets its clients go, within `lame_duck_duration`: 30 s here, a few
    /// seconds with a handful of clients), then, once it has exited, starts again with the
    /// same data. Returns when it accepts connections again.
    pub fn lame_duck_restart(&mut self) {
        self.signal_and_wait("-USR2");
        self.spawn();
    }

    /// The server's name (`-n`), as JetStream names stream and meta leaders.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Starts the server again on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Stops the server, throws its data away and starts it again on the same port: every
    /// bucket is gone (a server restarted without its storage).
    pub fn restart_empty(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(self.dir.join("jetstream"));
        self.spawn();
    }

    /// Starts a stopped or killed server again, same port and data.
    pub fn resume(&mut self) {
        if self.child.is_none() {
            self.spawn();
        }
    }

    /// The storage directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A 3-node JetStream cluster on loopback.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts three clustered servers and waits until each accepts connections. JetStream
    /// may still be electing its meta leader: [`crate::nats::wait_for_jetstream`] waits for
    /// that.
    pub fn start() -> Self {
        let mut attempt = 1;
        loop {
            match Self::try_start() {
                Ok(cluster) => return cluster,
                Err(failure)
                    if NatsServer::lost_a_port_race(&failure) && attempt < PORT_ATTEMPTS =>
                {
                    attempt += 1;
                }
                Err(failure) => panic!("{failure}"),
            }
        }
    }

    fn try_start() -> Result<Self, String> {
        let ports = free_ports(6);
        let (client_ports, cluster_ports) = ports.split_at(3);
        let routes = cluster_ports
            .iter()
            .map(|port| format!("nats://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes: Vec<NatsServer> = cluster_ports
            .iter()
            .enumerate()
            .map(|(i, &port)| NatsServer {
                name: format!("node-{i}"),
                port: client_ports[i],
                dir: temp_dir(&format!("node{i}")),
                jetstream: true,
                monitor: None,
                cluster: Some(ClusterArgs {
                    port,
                    routes: routes.clone(),
                }),
                child: None,
            })
            .collect();
        for node in &mut nodes {
            // On failure the nodes already started are killed when `nodes` drops.
            node.try_spawn()?;
        }
        Ok(Self { nodes })
    }

    /// A client URL listing every node.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Each node's own client URL, in node order.
    pub fn node_urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    /// The nodes.
    pub fn nodes(&mut self) -> &mut [NatsServer] {
        &mut self.nodes
    }
}

/// The number following `key` in `json` (a flat look-up, enough for the server's
/// monitoring documents).
pub fn number_after(json: &str, key: &str) -> Option<u64> {
    let at = json.find(key)? + key.len();
    let digits: String = json[at..]
        .trim_start_matches([':', ' '])
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// A plain HTTP/1.0 GET of `path` on the monitoring endpoint; the body.
pub async fn http_get(base: &str, path: &str) -> String {
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("the monitoring endpoint answers");
    let request = format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("sending the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("reading the response");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}
