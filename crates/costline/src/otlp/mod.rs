//! OTLP/HTTP traces ingest: `POST /v1/traces`, for applications that already trace their LLM
//! calls with OpenTelemetry's GenAI conventions. Each span with token usage becomes one usage
//! event ([`mapping`]) published to the usage topic like `POST /v1/events` publishes (same
//! validation, key, partitioner and broker confirmation, shared from `ingest.rs`); spans
//! without usage are ignored and counted (`costline_otlp_spans_total{outcome="ignored"}`).
//!
//! A GenAI span the contract rejects is published too, unlike an invalid `/v1/events` event:
//! an OTLP exporter gets only a count and one message back (`partial_success`, as the OTLP
//! specification prescribes) and usually just logs it, so the span itself would be lost. On
//! the topic the worker rejects it like any invalid record, into the dead-letter topic and
//! `rejected_events` with its reason, where whoever runs costline can see it (unless its
//! event is over the 1 MiB event limit: the broker might refuse it and fail the whole export).
//!
//! Both OTLP encodings (protobuf and JSON, chosen by `Content-Type` and answered in kind) and
//! gzip bodies are accepted; a gzip body is held to `http.max_body_bytes` unpacked as well.
//! Token, limits and timeouts are those of every protected route (`http.rs`), and the media
//! type and encoding are checked before the body is read.

mod mapping;

use std::io::Read;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use costline_core::{decode_event, MAX_EVENT_BYTES};
use costline_kafka::RecordProducer;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use serde::Serialize;

use crate::config::{HttpConfig, OtlpConfig};
use crate::ingest::{media_type, publish_confirmed, readable, within_batch_limit, Failure};
use crate::metrics::Metrics;

/// How many rejected spans the `partial_success` message names.
const REASONS_SHOWN: usize = 5;

#[derive(Clone)]
struct Otlp {
    producer: RecordProducer,
    topic: String,
    max_body_bytes: usize,
    max_batch_events: usize,
    config: Arc<OtlpConfig>,
    metrics: Arc<Metrics>,
}

pub fn router(
    producer: RecordProducer,
    topic: String,
    http: &HttpConfig,
    config: OtlpConfig,
    metrics: Arc<Metrics>,
) -> Router {
    let state = Otlp {
        producer,
        topic,
        max_body_bytes: http.max_body_bytes,
        max_batch_events: http.max_batch_events,
        config: Arc::new(config),
        metrics,
    };
    Router::new()
        .route("/v1/traces", post(export).layer(middleware::from_fn(require_format)))
        .layer(DefaultBodyLimit::max(http.max_body_bytes))
        .with_state(state)
}

/// The OTLP encoding of a request, and of its answer.
#[derive(Clone, Copy)]
enum Encoding {
    Protobuf,
    Json,
}

/// What the headers say the body is.
#[derive(Clone, Copy)]
struct Format {
    encoding: Encoding,
    gzip: bool,
}

/// `google.rpc.Status`, the body of an OTLP error answer (code and message; no details).
#[derive(Clone, PartialEq, Message, Serialize)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }

    fn decode(self, body: &[u8]) -> Result<ExportTraceServiceRequest, String> {
        match self {
            Encoding::Protobuf => {
                ExportTraceServiceRequest::decode(body).map_err(|e| format!("not OTLP protobuf: {e}"))
            }
            Encoding::Json => serde_json::from_slice(body).map_err(|e| format!("not OTLP JSON: {e}")),
        }
    }

    fn answer<M: Message + Serialize>(self, status: StatusCode, message: &M) -> Response {
        let body = match self {
            Encoding::Protobuf => message.encode_to_vec(),
            Encoding::Json => match serde_json::to_vec(message) {
                Ok(body) => body,
                Err(e) => {
                    return (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode the answer: {e}"))
                        .into_response()
                }
            },
        };
        (status, [(header::CONTENT_TYPE, HeaderValue::from_static(self.content_type()))], body).into_response()
    }

    fn failure(self, (status, message): Failure) -> Response {
        // gRPC codes, as the OTLP specification maps HTTP statuses to them.
        let code = match status {
            StatusCode::SERVICE_UNAVAILABLE => 14,
            StatusCode::REQUEST_TIMEOUT => 4,
            StatusCode::PAYLOAD_TOO_LARGE => 8,
            StatusCode::INTERNAL_SERVER_ERROR => 13,
            _ => 3,
        };
        self.answer(status, &RpcStatus { code, message })
    }
}

fn format_of(headers: &HeaderMap) -> Result<Format, String> {
    let encoding = match media_type(headers) {
        Some(t) if t.eq_ignore_ascii_case("application/x-protobuf") => Encoding::Protobuf,
        Some(t) if t.eq_ignore_ascii_case("application/json") => Encoding::Json,
        _ => return Err("Content-Type must be application/x-protobuf or application/json".into()),
    };
    let gzip = match headers.get(header::CONTENT_ENCODING).map(HeaderValue::to_str) {
        None => false,
        Some(Ok(value)) if value.trim().eq_ignore_ascii_case("identity") => false,
        Some(Ok(value)) if value.trim().eq_ignore_ascii_case("gzip") => true,
        Some(_) => return Err("Content-Encoding must be gzip or identity".into()),
    };
    Ok(Format { encoding, gzip })
}

async fn require_format(mut request: Request, next: Next) -> Response {
    match format_of(request.headers()) {
        Ok(format) => {
            request.extensions_mut().insert(format);
            next.run(request).await
        }
        Err(message) => Encoding::Json.failure((StatusCode::UNSUPPORTED_MEDIA_TYPE, message)),
    }
}

async fn export(
    State(state): State<Otlp>,
    Extension(format): Extension<Format>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match accept(&state, format, body).await {
        Ok(answer) => format.encoding.answer(StatusCode::OK, &answer),
        Err(failure) => format.encoding.failure(failure),
    }
}

/// The body unpacked, held to `limit` bytes unpacked.
fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, Failure> {
    let mut unpacked = Vec::new();
    let mut reader = flate2::read::GzDecoder::new(body).take(limit as u64 + 1);
    reader
        .read_to_end(&mut unpacked)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("the gzip body is broken: {e}")))?;
    if unpacked.len() > limit {
        return Err((StatusCode::PAYLOAD_TOO_LARGE, "the body unpacked is over http.max_body_bytes".into()));
    }
    Ok(unpacked)
}

async fn accept(
    state: &Otlp,
    format: Format,
    body: Result<Bytes, BytesRejection>,
) -> Result<ExportTraceServiceResponse, Failure> {
    let body = readable(body)?;
    let unpacked;
    let body: &[u8] = if format.gzip {
        unpacked = gunzip(&body, state.max_body_bytes)?;
        &unpacked
    } else {
        &body
    };
    let request = format.encoding.decode(body).map_err(|e| (StatusCode::BAD_REQUEST, e))?;
    let spans = request.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
    within_batch_limit(spans, state.max_batch_events, "spans")?;

    let mut records: Vec<(String, Vec<u8>)> = Vec::new();
    let (mut accepted, mut rejected, mut ignored) = (0u64, 0u64, 0u64);
    let mut reasons = Vec::new();
    for resource_spans in &request.resource_spans {
        let resource = resource_spans.resource.as_ref().map_or(&[][..], |r| r.attributes.as_slice());
        for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
            if !mapping::has_usage(span) {
                ignored += 1;
                continue;
            }
            let attributes = mapping::Attributes { span: &span.attributes, resource };
            let event = mapping::usage_event(&state.config, &attributes, span);
            let payload = serde_json::to_vec(&event)
                .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot write a span's event: {e}")))?;
            match decode_event(&payload) {
                Ok(event) => {
                    accepted += 1;
                    records.push((event.external_request_id.to_string(), payload));
                }
                Err(reason) => {
                    rejected += 1;
                    if reasons.len() < REASONS_SHOWN {
                        reasons.push(format!("span {}: {reason}", mapping::span_key(span)));
                    }
                    // One over the event size limit could be over the broker's too, and fail
                    // the whole request: it is only reported.
                    if payload.len() <= MAX_EVENT_BYTES {
                        records.push((mapping::span_key(span), payload));
                    }
                }
            }
        }
    }
    publish_confirmed(&state.producer, &state.topic, records).await?;
    let outcomes = [("accepted", accepted), ("rejected", rejected), ("ignored", ignored)];
    for (outcome, count) in outcomes {
        state.metrics.otlp_spans.with_label_values(&[outcome]).inc_by(count);
    }
    let partial_success = (rejected > 0).then(|| ExportTracePartialSuccess {
        rejected_spans: rejected as i64,
        error_message: format!(
            "{rejected} GenAI span(s) break the usage event contract and are not counted (they are in \
             costline's rejected_events with their reasons); first: {}",
            reasons.join("; ")
        ),
    });
    Ok(ExportTraceServiceResponse { partial_success })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn headers(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(name, value)| (name.clone(), HeaderValue::from_static(value))).collect()
    }

    #[test]
    fn both_otlp_encodings_and_gzip_are_told_from_the_headers() {
        let format = |pairs: &[(header::HeaderName, &'static str)]| format_of(&headers(pairs));
        let protobuf = format(&[(header::CONTENT_TYPE, "application/x-protobuf"), (header::CONTENT_ENCODING, "gzip")]);
        assert!(matches!(protobuf, Ok(Format { encoding: Encoding::Protobuf, gzip: true })));
        let json = format(&[(header::CONTENT_TYPE, "application/json; charset=utf-8")]);
        assert!(matches!(json, Ok(Format { encoding: Encoding::Json, gzip: false })));
        assert!(format(&[(header::CONTENT_TYPE, "text/plain")]).is_err());
        assert!(format(&[]).is_err());
        assert!(format(&[(header::CONTENT_TYPE, "application/json"), (header::CONTENT_ENCODING, "br")]).is_err());
    }

    #[test]
    fn a_gzip_body_is_held_to_the_limit_unpacked() {
        let mut packer = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        packer.write_all(&vec![b'x'; 100_000]).expect("packing");
        let packed = packer.finish().expect("packing");
        assert!(packed.len() < 1_000);
        assert_eq!(gunzip(&packed, 100_000).map(|body| body.len()), Ok(100_000));
        assert_eq!(gunzip(&packed, 99_999).map_err(|(status, _)| status), Err(StatusCode::PAYLOAD_TOO_LARGE));
        assert_eq!(gunzip(b"not gzip", 1_000).map_err(|(status, _)| status), Err(StatusCode::BAD_REQUEST));
    }

    #[test]
    fn answers_come_in_the_requests_encoding() {
        let response = ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess { rejected_spans: 2, error_message: "why".into() }),
        };
        let json = Encoding::Json.answer(StatusCode::OK, &response);
        assert_eq!(json.headers()[header::CONTENT_TYPE], "application/json");
        let protobuf = Encoding::Protobuf.failure((StatusCode::SERVICE_UNAVAILABLE, "broker down".into()));
        assert_eq!(protobuf.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(protobuf.headers()[header::CONTENT_TYPE], "application/x-protobuf");
    }
}
