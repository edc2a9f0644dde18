//! HTTP ingest for producers without a Kafka client: `POST /v1/events` with one event (a JSON
//! object) or a batch (a JSON array). Every event is validated like the workers do; valid ones
//! are published to the topic keyed by `externalRequestId` and confirmed by the broker before
//! the answer, invalid ones are answered with their reasons and not published.
//!
//! Answers: 200 `{"accepted": n, "rejected": [{"index", "code", "field", "reason"}]}`; 400 when
//! the body is not JSON; 413 over `http.max_body_bytes` or `http.max_batch_events`; 415 unless
//! the `Content-Type` is `application/json` (a browser cannot send that cross-site without a
//! CORS preflight, which this server never grants); 408 when the body does not arrive in time;
//! 503 when the broker does not confirm. The bearer token is checked before all of this
//! (`http.rs`), and the content type before the body is read.

use std::error::Error as _;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
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
    max_batch_events: usize,
}

pub fn router(producer: RecordProducer, topic: String, max_body_bytes: usize, max_batch_events: usize) -> Router {
    Router::new()
        .route("/v1/events", post(ingest).layer(middleware::from_fn(require_json)))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(Ingest { producer, topic, max_batch_events })
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

/// `application/json`, with or without parameters (`; charset=utf-8`).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media_type| media_type.trim().eq_ignore_ascii_case("application/json"))
}

async fn require_json(request: Request, next: Next) -> Response {
    if !is_json(request.headers()) {
        return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json".into());
    }
    next.run(request).await
}

/// The answer when the body could not be read: too large, too slow, or cut off.
fn unreadable(rejection: &BytesRejection) -> Response {
    let mut source = rejection.source();
    while let Some(e) = source {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return error(StatusCode::REQUEST_TIMEOUT, "the body did not arrive in time (http.body_timeout_ms)".into());
        }
        source = e.source();
    }
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "the body is over http.max_body_bytes".into());
    }
    error(rejection.status(), rejection.body_text())
}

async fn ingest(State(state): State<Ingest>, body: Result<Bytes, BytesRejection>) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return unreadable(&rejection),
    };
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
