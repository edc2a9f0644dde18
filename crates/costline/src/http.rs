//! The worker's HTTP endpoints: `/metrics`, `/healthz` (the process runs), `/readyz` (it can
//! do its job: ClickHouse took the last flush and the schema is in place).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// What the endpoints report.
pub struct Health {
    pub metrics: Arc<Metrics>,
    pub ready: AtomicBool,
}

/// Serves the health endpoints plus `extra` (the budget API) until `shutdown`.
pub async fn serve(
    listen: SocketAddr,
    health: Arc<Health>,
    extra: Router,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/metrics", get(|State(h): State<Arc<Health>>| async move { h.metrics.render() }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|State(h): State<Arc<Health>>| async move {
                if h.ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ready\n")
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not ready: a flush is stuck (ClickHouse or the dead-letter topic refuses it; see the log)\n",
                    )
                }
            }),
        )
        .with_state(health)
        .merge(extra);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (http.listen)"))?;
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await.context("HTTP server failed")
}
