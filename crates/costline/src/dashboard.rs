//! The built-in dashboard: `GET /dashboard` is one self-contained page (no external scripts:
//! it must work on closed networks) that draws `GET /v1/dashboard`: cost per hour over the
//! last two days, top endpoints of the last week with their retry ratio, the prompt versions
//! of one endpoint, and the budgets with their state. The page holds no data and is served to
//! anyone; with a token set the data needs it (checked in `http.rs`), and the page takes it
//! from its URL fragment (`/dashboard#token=…`), which browsers never send to the server.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use costline_alerts::status::BudgetStatuses;
use costline_clickhouse::dashboard_store::DashboardStore;
use serde::Deserialize;
use serde_json::json;

const PAGE: &str = include_str!("dashboard.html");

#[derive(Clone)]
struct Dashboard {
    store: DashboardStore,
    budgets: Arc<BudgetStatuses>,
}

#[derive(Deserialize)]
struct Params {
    endpoint: Option<String>,
}

/// The page, open to anyone.
pub fn page() -> Router {
    Router::new().route("/dashboard", get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE) }))
}

/// The data the page draws (`GET /v1/dashboard`), to be served behind the token.
pub fn router(store: DashboardStore, budgets: Arc<BudgetStatuses>) -> Router {
    Router::new().route("/v1/dashboard", get(data)).with_state(Dashboard { store, budgets })
}

async fn data(State(d): State<Dashboard>, Query(params): Query<Params>) -> Response {
    let now = chrono::Utc::now().timestamp();
    let result = async {
        let hours = d.store.cost_per_hour(now / 3600 * 3600 - 47 * 3600).await?;
        let endpoints = d.store.top_endpoints(now - 7 * 86_400, 10).await?;
        let endpoint = params.endpoint.or_else(|| endpoints.first().map(|e| e.endpoint_tag.clone())).unwrap_or_default();
        let versions = d.store.prompt_versions(&endpoint, now - 7 * 86_400).await?;
        let budgets: Vec<_> = d
            .budgets
            .all()
            .await?
            .iter()
            .map(|s| json!({"id": s.budget.id, "spend_usd": s.spend.to_usd_string(), "limit_usd": s.budget.limit.to_usd_string(),
                            "ratio": s.budget.ratio(s.spend), "state": s.state.as_str()}))
            .collect();
        anyhow::Ok(json!({"cost_per_hour": hours, "top_endpoints": endpoints, "endpoint": endpoint,
                          "prompt_versions": versions, "budgets": budgets}))
    }
    .await;
    match result {
        Ok(body) => Json(body).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": format!("{e:#}")}))).into_response(),
    }
}
