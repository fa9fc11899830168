//! The operator's endpoints, on `metrics.addr`: `/metrics` (every `haochaping_*` metric in the
//! Prometheus format), `/health` (the process is alive: a liveness probe) and `/ready` (it does its
//! work: a member of its group, no partition held by a refused commit; 503 with the reason
//! otherwise, for a readiness probe and an alert).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::Stats;

/// Why the endpoints could not start; one line naming the flag.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("--metrics-addr {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the metrics recorder: {0}")]
    Recorder(#[from] metrics_exporter_prometheus::BuildError),
}

#[derive(Clone)]
struct Served {
    metrics: PrometheusHandle,
    stats: Arc<Stats>,
}

/// Installs the process's metrics recorder and serves the endpoints on `addr` until the process
/// ends. Binds before returning, so a taken address is an error here, not a log line later.
pub async fn serve(addr: SocketAddr, stats: Arc<Stats>) -> Result<(), ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let metrics = PrometheusBuilder::new().install_recorder()?;
    // Histograms and summaries are drained on a schedule when the exporter does not serve itself.
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(s): State<Served>| async move { s.metrics.render() }),
        )
        .route("/health", get(|| async { "ok" }))
        .route(
            "/ready",
            get(|State(s): State<Served>| async move {
                match s.stats.health.ready() {
                    Ok(line) => (StatusCode::OK, line),
                    Err(line) => (StatusCode::SERVICE_UNAVAILABLE, line),
                }
            }),
        )
        .with_state(Served { metrics, stats });
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the metrics endpoint stopped");
        }
    });
    tracing::info!(%addr, "metrics at http://{addr}/metrics, probes at /health and /ready");
    Ok(())
}
