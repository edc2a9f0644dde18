//! The worker's HTTP edge: `/metrics`, `/healthz` (the process runs), `/readyz` (it can do its
//! job: ClickHouse took the last flush and the schema is in place), and the routes other modules
//! hand in: open ones (the dashboard page) and token-protected ones (budget API, ingest,
//! dashboard data).
//!
//! Everything an untrusted client could use to hold the worker's resources is bounded here, in
//! one place, so that no handler has to think about it:
//! - the bearer token is checked by one middleware before any handler runs, so before a body is
//!   read: a client without the token cannot make the worker buffer a body;
//! - a client that is slow to send its headers (or idles on a kept-alive connection) is cut at
//!   `http.header_timeout_ms`, a body that pauses at `http.body_timeout_ms`, and a whole
//!   request at `http.request_timeout_ms`;
//! - at most `http.max_concurrent_requests` protected requests run at once; more are answered
//!   503 at once instead of queueing;
//! - after the shutdown signal requests under way get `http.shutdown_grace_ms`, then the server
//!   stops, so a stuck client cannot hold up a worker's exit.
//!
//! hyper's HTTP/1 connection builder is used directly (not `axum::serve`) because the header
//! timeout needs its timer and the bounded shutdown needs the connections in hand.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::{BoxError, ServiceBuilder};
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};
use tracing::{debug, warn};

use crate::config::{HttpConfig, Secret};
use crate::metrics::Metrics;

/// A worker's metrics and readiness: written by the worker's parts, read by `/metrics` and
/// `/readyz`.
pub struct Telemetry {
    pub metrics: Arc<Metrics>,
    pub ready: AtomicBool,
}

/// The routes the server carries besides its own health endpoints.
pub struct Routes {
    /// Served to anyone (the dashboard page: it holds no data).
    pub open: Router,
    /// Served only with `Authorization: Bearer <token>` when a token is set.
    pub protected: Router,
}

/// Serves the health endpoints and `routes` on `config.listen` until `shutdown`, then lets
/// requests under way finish for at most `config.shutdown_grace_ms`.
pub async fn serve(
    config: &HttpConfig,
    telemetry: Arc<Telemetry>,
    routes: Routes,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listen: SocketAddr = config.listen.parse().context("config key `http.listen`")?;
    let app = ServiceBuilder::new()
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(config.request_timeout_ms),
        ))
        .layer(RequestBodyTimeoutLayer::new(Duration::from_millis(config.body_timeout_ms)))
        .service(router(config, telemetry, routes));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (http.listen)"))?;
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1.timer(TokioTimer::new()).header_read_timeout(Duration::from_millis(config.header_timeout_ms));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors, most likely: give connections time to close.
                        warn!(error = %e, "cannot accept an HTTP connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let connection = http1.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
                let connection = graceful.watch(connection);
                connections.spawn(async move {
                    if let Err(e) = connection.await {
                        debug!(%peer, error = %e, "HTTP connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    let grace = Duration::from_millis(config.shutdown_grace_ms);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        warn!(
            connections = connections.len(),
            "HTTP requests still under way after http.shutdown_grace_ms ({grace:?}): cut off"
        );
    }
    connections.shutdown().await;
    Ok(())
}

/// The routes with their guards: the token check around the protected routes, and inside it
/// the concurrency limit, so that requests without the token never take a slot.
fn router(config: &HttpConfig, telemetry: Arc<Telemetry>, routes: Routes) -> Router {
    let limit = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|e: BoxError| async move { overloaded(&e) }))
        .load_shed()
        .layer(GlobalConcurrencyLimitLayer::new(config.max_concurrent_requests));
    let protected = routes
        .protected
        .route_layer(limit)
        .route_layer(middleware::from_fn_with_state(Auth::new(config.token.as_ref()), require_token));
    Router::new()
        .route("/metrics", get(|State(h): State<Arc<Telemetry>>| async move { h.metrics.render() }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|State(h): State<Arc<Telemetry>>| async move {
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
        .with_state(telemetry)
        .merge(routes.open)
        .merge(protected)
}

fn overloaded(e: &BoxError) -> Response {
    let message = if e.is::<tower::load_shed::error::Overloaded>() {
        "too many requests under way (http.max_concurrent_requests); retry later".to_string()
    } else {
        format!("request failed: {e}")
    };
    (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": message}))).into_response()
}

/// The expected token, kept as its SHA-256 digest: comparing digests in constant time reveals
/// neither where a guess first differs nor the token's length.
#[derive(Clone)]
struct Auth {
    digest: Option<[u8; 32]>,
}

impl Auth {
    fn new(token: Option<&Secret>) -> Auth {
        Auth { digest: token.map(|t| Sha256::digest(t.expose().as_bytes()).into()) }
    }

    fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.digest else { return true };
        let Some(given) = headers.get(header::AUTHORIZATION).and_then(|v| bearer(v.as_bytes())) else {
            return false;
        };
        Sha256::digest(given).as_slice().ct_eq(expected).into()
    }
}

/// The credentials of an `Authorization: Bearer <token>` value; the scheme is case-insensitive
/// (RFC 9110 §11.1).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, token) = value.split_at(space);
    scheme.eq_ignore_ascii_case(b"bearer").then(|| token.trim_ascii()).filter(|t| !t.is_empty())
}

async fn require_token(State(auth): State<Auth>, request: Request, next: Next) -> Result<Response, Infallible> {
    if auth.allows(request.headers()) {
        return Ok(next.run(request).await);
    }
    let mut response =
        (StatusCode::UNAUTHORIZED, Json(json!({"error": "missing or wrong bearer token"}))).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    fn config(token: Option<&str>, max_concurrent_requests: usize) -> HttpConfig {
        HttpConfig {
            token: token.map(|t| Secret::new(t.to_string())),
            max_concurrent_requests,
            ..HttpConfig::default()
        }
    }

    fn test_app(config: &HttpConfig, protected: Router) -> Router {
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let telemetry = Arc::new(Telemetry { metrics, ready: AtomicBool::new(true) });
        router(config, telemetry, Routes { open: Router::new().route("/page", get(|| async { "page" })), protected })
    }

    async fn status(app: &Router, path: &str, authorization: Option<&str>) -> StatusCode {
        let mut request = Request::get(path);
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        app.clone().oneshot(request.body(Body::empty()).expect("request")).await.expect("infallible").status()
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_the_token_exact() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bEaReR   abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearer"), None);
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"Bearerabc"), None);
    }

    #[tokio::test]
    async fn protected_routes_need_the_token_and_open_ones_do_not() {
        let protected = Router::new().route("/data", get(|| async { "data" }));
        let app = test_app(&config(Some("s3cret"), 4), protected);
        assert_eq!(status(&app, "/data", None).await, StatusCode::UNAUTHORIZED);
        assert_eq!(status(&app, "/data", Some("Bearer s3cre")).await, StatusCode::UNAUTHORIZED);
        assert_eq!(status(&app, "/data", Some("Bearer s3cret2")).await, StatusCode::UNAUTHORIZED);
        assert_eq!(status(&app, "/data", Some("Basic s3cret")).await, StatusCode::UNAUTHORIZED);
        assert_eq!(status(&app, "/data", Some("bearer s3cret")).await, StatusCode::OK);
        for open in ["/page", "/healthz", "/readyz", "/metrics"] {
            assert_eq!(status(&app, open, None).await, StatusCode::OK, "{open}");
        }
        let without_token = test_app(&config(None, 4), Router::new().route("/data", get(|| async { "data" })));
        assert_eq!(status(&without_token, "/data", None).await, StatusCode::OK);
    }

    #[tokio::test]
    async fn requests_over_the_limit_are_shed_with_503() {
        let release = Arc::new(tokio::sync::Notify::new());
        let held = release.clone();
        let protected = Router::new()
            .route("/hold", get(move || async move { held.notified().await }))
            .route("/data", get(|| async { "data" }));
        let app = test_app(&config(None, 1), protected);
        let first = tokio::spawn(status_owned(app.clone(), "/hold"));
        // The first request holds the only slot once its handler runs.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while status(&app, "/data", None).await != StatusCode::SERVICE_UNAVAILABLE {
            assert!(tokio::time::Instant::now() < deadline, "the limit never filled");
            tokio::task::yield_now().await;
        }
        assert_eq!(status(&app, "/healthz", None).await, StatusCode::OK, "telemetry is not counted");
        release.notify_one();
        assert_eq!(first.await.expect("first request"), StatusCode::OK);
        assert_eq!(status(&app, "/data", None).await, StatusCode::OK, "the slot is free again");
    }

    async fn status_owned(app: Router, path: &'static str) -> StatusCode {
        status(&app, path, None).await
    }
}
