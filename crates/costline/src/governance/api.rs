//! Budget status API for app-side guardrails: `GET /v1/budgets` and `GET /v1/budgets/{id}`.
//!
//! Money is given as decimal strings (exact to 10⁻¹² USD); `ratio` is a float for
//! convenience. `as_of` is the event time up to which the spend is complete. With a token set,
//! requests need `Authorization: Bearer <token>` (checked in `http.rs`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{TimeZone, Utc};
use serde_json::{json, Value};

use super::{by_id, BudgetStatus, Governance};

#[derive(Clone)]
struct Api {
    governance: Arc<Governance>,
}

pub fn router(governance: Arc<Governance>) -> Router {
    Router::new().route("/v1/budgets", get(list)).route("/v1/budgets/{id}", get(one)).with_state(Api { governance })
}

fn render(status: &BudgetStatus) -> Value {
    let b = &status.budget;
    json!({
        "id": b.id,
        "period": format!("{:?}", b.period).to_lowercase(),
        "period_start": status.period_start.to_rfc3339(),
        "period_end": status.period_end.to_rfc3339(),
        "spend_usd": status.spend.to_usd_string(),
        "limit_usd": b.limit.to_usd_string(),
        "ratio": b.ratio(status.spend),
        "state": status.state.as_str(),
        "thresholds": b.thresholds,
        "as_of": Utc.timestamp_opt(i64::from(status.as_of), 0).single().map(|t| t.to_rfc3339()),
    })
}

fn unavailable(e: anyhow::Error) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": format!("cannot read spend from ClickHouse: {e:#}")})))
        .into_response()
}

async fn list(State(api): State<Api>) -> Response {
    match api.governance.statuses().await {
        Ok(statuses) => Json(json!({"budgets": statuses.iter().map(render).collect::<Vec<_>>()})).into_response(),
        Err(e) => unavailable(e),
    }
}

async fn one(State(api): State<Api>, Path(id): Path<String>) -> Response {
    match api.governance.statuses().await {
        Ok(statuses) => match by_id(statuses).get(&id) {
            Some(status) => Json(render(status)).into_response(),
            None => (StatusCode::NOT_FOUND, Json(json!({"error": format!("no budget {id:?}")}))).into_response(),
        },
        Err(e) => unavailable(e),
    }
}
