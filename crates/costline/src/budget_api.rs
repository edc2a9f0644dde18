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
use costline_alerts::status::{BudgetStatus, BudgetStatuses};
use serde_json::{json, Value};

pub fn router(statuses: Arc<BudgetStatuses>) -> Router {
    Router::new().route("/v1/budgets", get(list)).route("/v1/budgets/{id}", get(one)).with_state(statuses)
}

fn render(status: &BudgetStatus) -> Value {
    let b = &status.budget;
    json!({
        "id": b.id,
        "period": b.period.as_str(),
        "period_start": status.period_start.to_rfc3339(),
        "period_end": status.period_end.to_rfc3339(),
        "spend_usd": status.spend.to_usd_string(),
        "limit_usd": b.limit.to_usd_string(),
        "ratio": b.ratio(status.spend),
        "state": status.state.as_str(),
        "thresholds": b.thresholds,
        "as_of": status.as_of_rfc3339(),
    })
}

fn unavailable(e: anyhow::Error) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": format!("cannot read spend from ClickHouse: {e:#}")})))
        .into_response()
}

async fn list(State(statuses): State<Arc<BudgetStatuses>>) -> Response {
    match statuses.all().await {
        Ok(statuses) => Json(json!({"budgets": statuses.iter().map(render).collect::<Vec<_>>()})).into_response(),
        Err(e) => unavailable(e),
    }
}

async fn one(State(statuses): State<Arc<BudgetStatuses>>, Path(id): Path<String>) -> Response {
    match statuses.one(&id).await {
        Ok(status) => match status {
            Some(status) => Json(render(&status)).into_response(),
            None => (StatusCode::NOT_FOUND, Json(json!({"error": format!("no budget {id:?}")}))).into_response(),
        },
        Err(e) => unavailable(e),
    }
}
