//! HTTP ingest for producers without a Kafka client: `POST /v1/events` with one event (a JSON
//! object) or a batch (a JSON array). Every event is validated like the workers do; valid ones
//! are published to the topic keyed by `externalRequestId` and confirmed by the broker before
//! the answer, invalid ones are answered with their reasons and not published.
//!
//! Answers: 200 `{"accepted": n, "rejected": [{"index", "code", "field", "reason"}]}`; 400 when
//! the body is not JSON; 413 over `http.max_body_bytes` or `http.max_batch_events`; 401 without
//! the bearer token when `COSTLINE_HTTP_TOKEN` is set; 503 when the broker does not confirm.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use costline_core::decode_event;
use costline_kafka::RecordProducer;
use serde_json::value::RawValue;
use serde_json::{json, Value};

#[derive(Clone)]
struct Ingest {
    producer: RecordProducer,
    topic: String,
    token: Option<String>,
    max_batch_events: usize,
}

pub fn router(
    producer: RecordProducer,
    topic: String,
    token: Option<String>,
    max_body_bytes: usize,
    max_batch_events: usize,
) -> Router {
    Router::new().route("/v1/events", post(ingest)).layer(DefaultBodyLimit::max(max_body_bytes)).with_state(Ingest {
        producer,
        topic,
        token,
        max_batch_events,
    })
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

async fn ingest(State(state): State<Ingest>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(token) = &state.token {
        let given = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(token.as_str()) {
            return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token".into());
        }
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, "body is not UTF-8".into());
    };
    let items: Vec<&RawValue> = if text.trim_start().starts_with('[') {
        match serde_json::from_str(text) {
            Ok(items) => items,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("body is not a JSON array of events: {e}")),
        }
    } else {
        match serde_json::from_str(text) {
            Ok(item) => vec![item],
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("body is not JSON: {e}")),
        }
    };
    if items.len() > state.max_batch_events {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} events in one request; at most {} (http.max_batch_events)",
                items.len(),
                state.max_batch_events
            ),
        );
    }
    let mut rejected: Vec<Value> = Vec::new();
    let mut deliveries = Vec::new();
    for (index, item) in items.iter().enumerate() {
        match decode_event(item.get().as_bytes()) {
            Ok(event) => {
                let key = event.external_request_id.as_bytes();
                match state.producer.enqueue(&state.topic, Some(key), item.get().as_bytes(), None, &[]).await {
                    Ok(delivery) => deliveries.push(delivery),
                    Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, format!("cannot publish: {e}")),
                }
            }
            Err(reason) => rejected.push(json!({
                "index": index, "code": reason.code(), "field": reason.field(), "reason": reason.to_string(),
            })),
        }
    }
    let mut accepted = 0usize;
    for delivery in deliveries {
        match delivery.await {
            Ok(Ok(_)) => accepted += 1,
            Ok(Err((e, _))) => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the broker refused an event after {accepted} were accepted: {e}"),
                )
            }
            Err(_) => return error(StatusCode::SERVICE_UNAVAILABLE, "the producer closed".into()),
        }
    }
    Json(json!({"accepted": accepted, "rejected": rejected})).into_response()
}
