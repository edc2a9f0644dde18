//! Budget status API for app-side guardrails: `GET /v1/budgets` and `GET /v1/budgets/{id}`
//! read ClickHouse; `GET /v1/budgets/check?tenant=…&endpoint_tag=…` answers from the statuses
//! the worker keeps in memory (see `costline_alerts::guardrail`), cheap enough to ask before
//! every LLM call.
//!
//! Money is given as decimal strings (exact to 10⁻¹² USD); `ratio` is a float for
//! convenience. `as_of` is the event time up to which the spend is complete. With a token set,
//! requests need `Authorization: Bearer <token>` (checked in `http.rs`).

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use costline_alerts::guardrail;
use costline_alerts::status::{BudgetStatus, BudgetStatuses};
use costline_core::budget::Call;
use costline_core::DataMode;
use serde::Deserialize;
use serde_json::{json, Value};

pub fn router(statuses: Arc<BudgetStatuses>) -> Router {
    Router::new()
        .route("/v1/budgets", get(list))
        .route("/v1/budgets/check", get(check))
        .route("/v1/budgets/{id}", get(one))
        .with_state(statuses)
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
        "on_exceeded": b.on_exceeded.as_str(),
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

/// The call asked about: its dimensions as its usage event would carry them. Omitted ones take
/// the event's defaults (`""`, `environment` prod, `data_mode` real), so they match only the
/// budgets that an event without them would count toward.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallQuery {
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    endpoint_tag: String,
    #[serde(default)]
    prompt_version: String,
    #[serde(default)]
    provider: String,
    #[serde(default)]
    model: String,
    environment: Option<String>,
    data_mode: Option<String>,
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": message}))).into_response()
}

async fn check(
    State(statuses): State<Arc<BudgetStatuses>>,
    query: Result<Query<CallQuery>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(query) => query,
        Err(e) => {
            return bad_request(format!(
                "{}; the parameters are tenant, endpoint_tag, prompt_version, provider, model, environment, data_mode",
                e.body_text()
            ))
        }
    };
    let data_mode = match query.data_mode.as_deref() {
        None => DataMode::Real,
        Some(text) => match DataMode::parse(text) {
            Some(mode) => mode,
            None => return bad_request(format!("data_mode must be real, test or demo, not {text:?}")),
        },
    };
    let call = Call {
        tenant: query.tenant,
        endpoint_tag: query.endpoint_tag,
        prompt_version: query.prompt_version,
        provider: query.provider.to_lowercase(),
        model: query.model,
        environment: query.environment.unwrap_or_else(|| "prod".into()),
        data_mode,
    };
    let Some(snapshot) = statuses.latest() else {
        let body = Json(json!({"error": "budget statuses have not been read yet; retry shortly"}));
        return (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "1")], body).into_response();
    };
    let verdict = guardrail::check(&snapshot, &call, Utc::now());
    Json(json!({
        "allow": verdict.allow,
        "resets_at": verdict.resets_at.map(|t| t.to_rfc3339()),
        "read_at": snapshot.read_at.to_rfc3339(),
        "budgets": verdict.covering.into_iter().map(render).collect::<Vec<_>>(),
    }))
    .into_response()
}
