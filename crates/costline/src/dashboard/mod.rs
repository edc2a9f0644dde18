//! The built-in dashboard: `GET /dashboard` is one self-contained page (HTML, JavaScript and
//! SVG inline, no external script: it must work on closed networks) that draws the JSON of
//!
//! - `GET /v1/dashboard`: cost per hour stacked by endpoint (top N and the others), retry
//!   ratio per hour, endpoints, unpriced models and rejected records by reason, for a period
//!   and the environment and data mode filters;
//! - `GET /v1/dashboard/prompt-versions`: the prompt versions of one endpoint before and after
//!   a split (cost per request, retry ratio, p95 latency, attempts);
//! - `GET /v1/budgets` (the budget API): budgets with their progress and state.
//!
//! Layout: [`params`] checks the query parameters (a refusal is 400 with a sentence naming
//! the parameter), [`render`] makes the JSON from the store's rows.
//!
//! The page holds no data and is served to anyone; with a token set the data needs it (checked
//! in `http.rs`), and the page takes it from its URL fragment (`/dashboard#token=…`), which
//! browsers never send to the server.

mod params;
mod render;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use costline_clickhouse::dashboard_store::DashboardStore;
use costline_clickhouse::SinkError;
use serde_json::{json, Value};

use params::{OverviewParams, VersionsParams};

const PAGE: &str = include_str!("page.html");

/// The page, open to anyone.
pub fn page() -> Router {
    Router::new().route("/dashboard", get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE) }))
}

/// The data the page draws, to be served behind the token.
pub fn router(store: DashboardStore) -> Router {
    Router::new()
        .route("/v1/dashboard", get(overview))
        .route("/v1/dashboard/prompt-versions", get(versions))
        .with_state(store)
}

/// Why a request gets no data.
enum Refusal {
    /// A bad parameter: 400 with the sentence that names it.
    BadRequest(String),
    /// ClickHouse failed or did not answer in time: 503.
    Unavailable(SinkError),
}

impl From<SinkError> for Refusal {
    fn from(e: SinkError) -> Refusal {
        Refusal::Unavailable(e)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Refusal::BadRequest(message) => (StatusCode::BAD_REQUEST, message),
            Refusal::Unavailable(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("cannot read from ClickHouse: {e}")),
        };
        (status, Json(json!({"error": message}))).into_response()
    }
}

/// The request's parameters, checked.
fn checked<P, R>(
    params: Result<Query<P>, QueryRejection>,
    check: impl FnOnce(P) -> Result<R, String>,
) -> Result<R, Refusal> {
    params.map_err(|e| e.body_text()).and_then(|Query(p)| check(p)).map_err(Refusal::BadRequest)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

async fn overview(
    State(store): State<DashboardStore>,
    params: Result<Query<OverviewParams>, QueryRejection>,
) -> Result<Json<Value>, Refusal> {
    let request = checked(params, |p| p.check(now()))?;
    let filter = &request.filter;
    let (hourly, unpriced, rejected, kinds) = tokio::try_join!(
        store.hourly_by_endpoint(filter, request.top),
        store.unpriced_models(filter),
        store.rejected_by_reason(filter.from, filter.to),
        store.traffic_kinds(filter.from, filter.to),
    )?;
    Ok(Json(render::overview(filter, &hourly, &unpriced, &rejected, &kinds)))
}

async fn versions(
    State(store): State<DashboardStore>,
    params: Result<Query<VersionsParams>, QueryRejection>,
) -> Result<Json<Value>, Refusal> {
    let request = checked(params, |p| p.check(now()))?;
    let rows = store.versions_around(&request.filter, request.split).await?;
    Ok(Json(render::versions(&request.filter, &request.endpoint, request.split, &rows)))
}
