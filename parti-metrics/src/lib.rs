//! Metrics for parti: the Prometheus exporter and its HTTP endpoint.
//!
//! parti records its metrics through the [`metrics`](https://docs.rs/metrics) facade; the
//! names, labels and meaning of each, with alert examples, are in
//! [`parti_core::telemetry`] (re-exported here as [`names`]). Nothing is recorded until the
//! application installs a recorder. [`serve`] installs the Prometheus one and answers
//! `GET /metrics` on the address given — all most applications need:
//!
//! ```no_run
//! # #[tokio::main]
//! # async fn main() -> Result<(), parti_metrics::ServeError> {
//! let endpoint = parti_metrics::serve("0.0.0.0:9090").await?;
//! println!("metrics at http://{}/metrics", endpoint.local_addr());
//! // … start managers; the endpoint serves until it is dropped.
//! # Ok(())
//! # }
//! ```
//!
//! An application that already has an HTTP server calls [`install_prometheus`] and serves
//! [`PrometheusHandle::render`] from its own `/metrics` route.
//!
//! Durations are histograms with the buckets [`STORE_BUCKETS`] (store operations) and
//! [`REBALANCE_BUCKETS`] (rebalances and handoffs), so they aggregate across workers
//! (`histogram_quantile(0.99, sum by (le) (rate(parti_store_operation_duration_seconds_bucket[5m])))`).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

pub use metrics_exporter_prometheus::{BuildError, PrometheusHandle};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
pub use parti_core::telemetry as names;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::task::{JoinHandle, JoinSet};

/// Histogram buckets of store operation latency, in seconds: 0.5 ms to 5 s.
pub const STORE_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Histogram buckets of rebalance and handoff durations, in seconds: 10 ms to 2 min.
pub const REBALANCE_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Histogram buckets of message handler durations, in seconds: 1 ms to 1 min.
pub const HANDLER_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

/// How often the recorder's upkeep runs (it drains the histograms' samples into their
/// buckets, so memory stays bounded between scrapes).
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// How long a connection to the endpoint may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest request head the endpoint reads.
const MAX_REQUEST: usize = 8 * 1024;

/// Installs the Prometheus recorder as the process's global `metrics` recorder, with
/// explicit histogram buckets for parti's durations, describes every parti metric and
/// starts the recorder's upkeep (a background thread, every [`UPKEEP_INTERVAL`]).
///
/// # Errors
/// When a global recorder is already installed.
pub fn install_prometheus() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(names::STORE_OPERATION_DURATION.to_owned()),
            STORE_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(names::REBALANCE_DURATION.to_owned()),
            REBALANCE_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(names::HANDOFF_DURATION.to_owned()),
            REBALANCE_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(names::CONSUMER_HANDLER_DURATION.to_owned()),
            HANDLER_BUCKETS,
        )?
        .install_recorder()?;
    names::describe();
    let upkeep = handle.clone();
    // The recorder is global and lives as long as the process: so does its upkeep.
    let started = std::thread::Builder::new()
        .name("parti-metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                upkeep.run_upkeep();
            }
        });
    if let Err(e) = started {
        // The exporter works without it; histograms then hold their samples until a scrape.
        tracing::warn!(error = %e, "could not start the metrics recorder's upkeep thread");
    }
    Ok(handle)
}

/// Why [`serve`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// Another global `metrics` recorder is installed.
    #[error("installing the Prometheus recorder failed: {0}")]
    Install(#[from] BuildError),
    /// The address could not be bound.
    #[error("binding the metrics endpoint failed: {0}")]
    Bind(#[source] io::Error),
}

/// Installs the Prometheus recorder ([`install_prometheus`]) and serves it over HTTP on
/// `addr`: `GET /metrics` (or `/`) answers the text exposition format. Needs a tokio
/// runtime with I/O enabled; serves until the returned endpoint is dropped.
///
/// # Errors
/// [`ServeError::Install`] when another recorder is installed, [`ServeError::Bind`] when
/// the address cannot be bound.
pub async fn serve(addr: impl ToSocketAddrs) -> Result<MetricsEndpoint, ServeError> {
    let listener = TcpListener::bind(addr).await.map_err(ServeError::Bind)?;
    let handle = install_prometheus()?;
    serve_handle(handle, listener).map_err(ServeError::Bind)
}

/// Serves an installed recorder's `handle` on `listener` (see [`serve`]).
///
/// # Errors
/// When the listener's address cannot be read.
pub fn serve_handle(
    handle: PrometheusHandle,
    listener: TcpListener,
) -> io::Result<MetricsEndpoint> {
    let local_addr = listener.local_addr()?;
    let accepting = handle.clone();
    let task = tokio::spawn(async move {
        // Connections live in this set: dropping it (the endpoint stopped) ends them too.
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        connections.spawn(answer(stream, accepting.clone()));
                    }
                    // Out of file descriptors, say: wait a little rather than spin.
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    });
    Ok(MetricsEndpoint {
        local_addr,
        handle,
        task,
    })
}

/// A running metrics endpoint. Dropping it stops it (and ends its open connections).
#[derive(Debug)]
pub struct MetricsEndpoint {
    local_addr: SocketAddr,
    handle: PrometheusHandle,
    task: JoinHandle<()>,
}

impl MetricsEndpoint {
    /// The address it listens on (with the port chosen, when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The recorder's handle: [`PrometheusHandle::render`] gives what a scrape would.
    pub fn handle(&self) -> &PrometheusHandle {
        &self.handle
    }
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answers one HTTP/1.x request and closes the connection.
async fn answer(mut stream: TcpStream, handle: PrometheusHandle) {
    let Ok(Some(head)) = tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await else {
        return;
    };
    let mut words = head.split(' ');
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics" | "/") => ("200 OK", handle.render()),
        ("GET" | "HEAD", _) => ("404 Not Found", "not found: try /metrics\n".to_owned()),
        _ => ("405 Method Not Allowed", "only GET\n".to_owned()),
    };
    let header = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let write = async {
        stream.write_all(header.as_bytes()).await?;
        if method != "HEAD" {
            stream.write_all(body.as_bytes()).await?;
        }
        stream.shutdown().await
    };
    // A client that does not read its answer is dropped at the deadline.
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, write).await;
}

/// Reads up to the end of the request head; its first line, or `None` for a request too
/// long or cut short.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
        if buffer.windows(4).any(|w| w == b"\r\n\r\n") || buffer.windows(2).any(|w| w == b"\n\n") {
            let text = String::from_utf8_lossy(&buffer);
            return text.lines().next().map(str::to_owned);
        }
        if buffer.len() > MAX_REQUEST {
            return None;
        }
    }
}
