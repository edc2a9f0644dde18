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

/// Why a request failed: the status and message of its answer, which each endpoint writes in
/// its own format.
pub(crate) type Failure = (StatusCode, String);

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

/// The `Content-Type`'s media type, without parameters (`; charset=utf-8`).
pub(crate) fn media_type(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).and_then(|v| v.split(';').next()).map(str::trim)
}

fn is_json(headers: &HeaderMap) -> bool {
    media_type(headers).is_some_and(|media_type| media_type.eq_ignore_ascii_case("application/json"))
}

async fn require_json(request: Request, next: Next) -> Response {
    if !is_json(request.headers()) {
        return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json".into());
    }
    next.run(request).await
}

/// The body, or why it could not be read (too large, too slow, or cut off) as the status and
/// message of the answer; `/v1/traces` renders the same failures in its own format.
pub(crate) fn readable(body: Result<Bytes, BytesRejection>) -> Result<Bytes, Failure> {
    let rejection = match body {
        Ok(body) => return Ok(body),
        Err(rejection) => rejection,
    };
    let mut source = rejection.source();
    while let Some(e) = source {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return Err((StatusCode::REQUEST_TIMEOUT, "the body did not arrive in time (http.body_timeout_ms)".into()));
        }
        source = e.source();
    }
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return Err((StatusCode::PAYLOAD_TOO_LARGE, "the body is over http.max_body_bytes".into()));
    }
    Err((rejection.status(), rejection.body_text()))
}

/// 413 when a request carries more than `http.max_batch_events` events (or spans).
pub(crate) fn within_batch_limit(count: usize, max_batch_events: usize, what: &str) -> Result<(), Failure> {
    if count <= max_batch_events {
        return Ok(());
    }
    Err((
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("{count} {what} in one request; at most {max_batch_events} (http.max_batch_events)"),
    ))
}

/// Publishes `(key, payload)` records to `topic` and waits until the broker has confirmed every
/// one: the number confirmed, or 503 and why. Some records may be published when it fails;
/// re-sending them is safe (the copies are duplicates).
pub(crate) async fn publish_confirmed<K: AsRef<[u8]>, P: AsRef<[u8]>>(
    producer: &RecordProducer,
    topic: &str,
    records: impl IntoIterator<Item = (K, P)>,
) -> Result<usize, Failure> {
    let mut deliveries = Vec::new();
    for (key, payload) in records {
        match producer.enqueue(topic, Some(key.as_ref()), payload.as_ref(), None, &[]).await {
            Ok(delivery) => deliveries.push(delivery),
            Err(e) => return Err((StatusCode::SERVICE_UNAVAILABLE, format!("cannot publish: {e}"))),
        }
    }
    let mut confirmed = 0usize;
    for delivery in deliveries {
        match delivery.await {
            Ok(Ok(_)) => confirmed += 1,
            Ok(Err((e, _))) => {
                return Err((
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the broker refused a record after {confirmed} were accepted: {e}"),
                ))
            }
            Err(_) => return Err((StatusCode::SERVICE_UNAVAILABLE, "the producer closed".into())),
        }
    }
    Ok(confirmed)
}

async fn ingest(State(state): State<Ingest>, body: Result<Bytes, BytesRejection>) -> Response {
    match accept(&state, body).await {
        Ok(answer) => answer,
        Err((status, message)) => error(status, message),
    }
}

async fn accept(state: &Ingest, body: Result<Bytes, BytesRejection>) -> Result<Response, Failure> {
    let body = readable(body)?;
    let text = std::str::from_utf8(&body).map_err(|_| (StatusCode::BAD_REQUEST, "body is not UTF-8".to_string()))?;
    let items: Vec<&RawValue> = if text.trim_start().starts_with('[') {
        serde_json::from_str(text)
            .map_err(|e| (StatusCode::BAD_REQUEST, format!("body is not a JSON array of events: {e}")))?
    } else {
        vec![serde_json::from_str(text).map_err(|e| (StatusCode::BAD_REQUEST, format!("body is not JSON: {e}")))?]
    };
    within_batch_limit(items.len(), state.max_batch_events, "events")?;
    let mut rejected: Vec<Value> = Vec::new();
    let mut valid = Vec::new();
    for (index, item) in items.iter().enumerate() {
        match decode_event(item.get().as_bytes()) {
            Ok(event) => valid.push((event.external_request_id.as_bytes().to_vec(), item.get().as_bytes())),
            Err(reason) => rejected.push(json!({
                "index": index, "code": reason.code(), "field": reason.field(), "reason": reason.to_string(),
            })),
        }
    }
    let accepted = publish_confirmed(&state.producer, &state.topic, valid).await?;
    Ok(Json(json!({"accepted": accepted, "rejected": rejected})).into_response())
}
