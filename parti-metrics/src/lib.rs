//! Metrics for parti: the Prometheus exporter.
//!
//! parti records its metrics through the [`metrics`](https://docs.rs/metrics) facade; the
//! names and what they measure are in [`parti_core::telemetry`] (re-exported here as
//! [`names`]). Nothing is recorded until the application installs a recorder: this crate
//! installs the Prometheus one ([`metrics-exporter-prometheus`](https://docs.rs/metrics-exporter-prometheus))
//! and describes every parti metric, in one call. Serve [`PrometheusHandle::render`] from
//! the application's `/metrics` route.
//!
//! ```no_run
//! let handle = parti_metrics::install_prometheus().expect("no other recorder installed");
//! // … start managers; then, in the `/metrics` handler:
//! let body: String = handle.render();
//! # drop(body);
//! ```

pub use metrics_exporter_prometheus::{BuildError, PrometheusHandle};
pub use parti_core::telemetry as names;

/// Installs the Prometheus recorder as the process's global `metrics` recorder and
/// describes every parti metric.
///
/// # Errors
/// When a global recorder is already installed.
pub fn install_prometheus() -> Result<PrometheusHandle, BuildError> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    parti_core::telemetry::describe();
    Ok(handle)
}
