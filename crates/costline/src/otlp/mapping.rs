//! One OpenTelemetry span → one usage event (the JSON of docs/contract.md §1), or nothing when
//! the span carries no GenAI usage. The event is built as JSON and then goes through the same
//! decoder as every Kafka record, so a span is held to exactly the rules of `/v1/events`: this
//! module only moves values, it never judges them (a token count sent as a string stays a
//! string and is rejected as a wrong type, as it would be in JSON).
//!
//! The GenAI attribute names are the OpenTelemetry semantic conventions' (newest first, then
//! the older names instrumentations still emit); the costline-specific ones are configurable
//! ([`OtlpConfig`]). The table in docs/contract.md §6 lists every field and its source.

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{status::StatusCode, Span};
use serde_json::{Map, Number, Value};

use crate::config::OtlpConfig;

const PROVIDER: &[&str] = &["gen_ai.provider.name", "gen_ai.system"];
const MODEL: &[&str] = &["gen_ai.response.model", "gen_ai.request.model"];
const INPUT_TOKENS: &[&str] = &["gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"];
const OUTPUT_TOKENS: &[&str] = &["gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"];
const CACHE_READ_TOKENS: &[&str] = &["gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens"];
const CACHE_WRITE_TOKENS: &[&str] =
    &["gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_creation_input_tokens"];
const ERROR_TYPE: &[&str] = &["error.type"];
/// `error.type` values that are statuses of the contract; any other error is `error`.
const ERROR_STATUSES: &[&str] = &["timeout", "rate_limited", "cancelled"];

/// A span's attributes, then its resource's: where every field is looked up.
pub struct Attributes<'a> {
    pub span: &'a [KeyValue],
    pub resource: &'a [KeyValue],
}

impl Attributes<'_> {
    /// The value of the first of `names` present on the span, else on the resource.
    fn first<S: AsRef<str>>(&self, names: &[S]) -> Option<&AnyValue> {
        [self.span, self.resource].into_iter().find_map(|attributes| {
            names
                .iter()
                .find_map(|name| attributes.iter().find(|kv| kv.key == name.as_ref()).and_then(|kv| kv.value.as_ref()))
        })
    }

    fn text<S: AsRef<str>>(&self, names: &[S]) -> Option<&str> {
        match self.first(names)?.value.as_ref()? {
            any_value::Value::StringValue(text) => Some(text.as_str()),
            _ => None,
        }
    }
}

/// `<trace id>-<span id>` in lower-case hex: the span's identity, stable across an exporter's
/// retries.
pub fn span_key(span: &Span) -> String {
    format!("{}-{}", hex::encode(&span.trace_id), hex::encode(&span.span_id))
}

/// Whether the span reports token usage: only such spans are LLM calls to count.
pub fn has_usage(span: &Span) -> bool {
    let span_only = Attributes { span: &span.attributes, resource: &[] };
    span_only.first(INPUT_TOKENS).is_some() || span_only.first(OUTPUT_TOKENS).is_some()
}

/// The usage event of a span that [`has_usage`], as a JSON object.
pub fn usage_event(config: &OtlpConfig, attributes: &Attributes<'_>, span: &Span) -> Map<String, Value> {
    let mut event = Map::new();
    let mut put = |field: &str, value: Option<Value>| {
        if let Some(value) = value {
            event.insert(field.to_string(), value);
        }
    };
    let value = |names: &[&str]| attributes.first(names).map(json);
    let configured = |names: &[String]| attributes.first(names).map(json);
    let request_id = configured(&config.request_id_attributes).unwrap_or_else(|| Value::String(span_key(span)));
    put("externalRequestId", Some(request_id));
    put("attempt", configured(&config.attempt_attributes));
    put("provider", value(PROVIDER));
    put("model", value(MODEL));
    put("endpointTag", configured(&config.endpoint_tag_attributes));
    put("promptVersion", configured(&config.prompt_version_attributes));
    put("userId", configured(&config.tenant_attributes));
    put("environment", configured(&config.environment_attributes));
    put("dataMode", configured(&config.data_mode_attributes));
    put("inputTokens", value(INPUT_TOKENS));
    put("outputTokens", value(OUTPUT_TOKENS));
    put("cachedInputTokens", value(CACHE_READ_TOKENS));
    put("cacheWriteTokens", value(CACHE_WRITE_TOKENS));
    let error_type = attributes.text(ERROR_TYPE);
    let failed = error_type.is_some() || span.status.as_ref().is_some_and(|s| s.code == StatusCode::Error as i32);
    let status = match error_type.map(str::to_ascii_lowercase) {
        Some(kind) if ERROR_STATUSES.contains(&kind.as_str()) => kind,
        _ if failed => "error".to_string(),
        _ => "success".to_string(),
    };
    put("status", Some(Value::String(status)));
    put("errorCode", value(ERROR_TYPE));
    if span.start_time_unix_nano > 0 && span.end_time_unix_nano >= span.start_time_unix_nano {
        let latency_ms = (span.end_time_unix_nano - span.start_time_unix_nano) / 1_000_000;
        put("latencyMs", Some(Value::from(latency_ms)));
    }
    if span.end_time_unix_nano > 0 {
        put("timestamp", Some(Value::from(span.end_time_unix_nano / 1_000_000)));
    }
    event
}

/// An attribute value as the JSON value it stands for.
fn json(value: &AnyValue) -> Value {
    match &value.value {
        // A string by reference into a profile's dictionary: traces have none.
        None | Some(any_value::Value::StringValueStrindex(_)) => Value::Null,
        Some(any_value::Value::StringValue(text)) => Value::String(text.clone()),
        Some(any_value::Value::BoolValue(flag)) => Value::Bool(*flag),
        Some(any_value::Value::IntValue(number)) => Value::from(*number),
        Some(any_value::Value::DoubleValue(number)) => Number::from_f64(*number).map_or(Value::Null, Value::Number),
        Some(any_value::Value::BytesValue(bytes)) => Value::String(hex::encode(bytes)),
        Some(any_value::Value::ArrayValue(array)) => Value::Array(array.values.iter().map(json).collect()),
        Some(any_value::Value::KvlistValue(list)) => Value::Object(
            list.values.iter().map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Value::Null, json))).collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::Status;

    fn attribute(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..KeyValue::default() }
    }

    fn text(key: &str, value: &str) -> KeyValue {
        attribute(key, any_value::Value::StringValue(value.into()))
    }

    fn int(key: &str, value: i64) -> KeyValue {
        attribute(key, any_value::Value::IntValue(value))
    }

    fn llm_span(attributes: Vec<KeyValue>) -> Span {
        Span {
            trace_id: vec![0xab; 16],
            span_id: vec![0x01; 8],
            start_time_unix_nano: 1_765_000_000_000_000_000,
            end_time_unix_nano: 1_765_000_001_234_567_890,
            attributes,
            ..Span::default()
        }
    }

    #[test]
    fn a_full_genai_span_maps_every_field_and_is_a_valid_event() {
        let span = llm_span(vec![
            text("gen_ai.provider.name", "anthropic"),
            text("gen_ai.system", "ignored-older-name"),
            text("gen_ai.request.model", "claude"),
            text("gen_ai.response.model", "claude-sonnet-4-5-20250929"),
            int("gen_ai.usage.input_tokens", 1200),
            int("gen_ai.usage.output_tokens", 80),
            int("gen_ai.usage.cache_read.input_tokens", 1000),
            int("gen_ai.usage.cache_creation.input_tokens", 100),
            text("costline.endpoint_tag", "support.reply_draft"),
            int("costline.attempt", 2),
        ]);
        let resource = [
            text("deployment.environment.name", "staging"),
            text("enduser.id", "tenant-7"),
            text("costline.endpoint_tag", "x"),
        ];
        let event =
            usage_event(&OtlpConfig::default(), &Attributes { span: &span.attributes, resource: &resource }, &span);
        let expected = serde_json::json!({
            "externalRequestId": format!("{}-{}", "ab".repeat(16), "01".repeat(8)),
            "attempt": 2, "provider": "anthropic", "model": "claude-sonnet-4-5-20250929",
            "endpointTag": "support.reply_draft", "userId": "tenant-7", "environment": "staging",
            "inputTokens": 1200, "outputTokens": 80, "cachedInputTokens": 1000, "cacheWriteTokens": 100,
            "status": "success", "latencyMs": 1234, "timestamp": 1_765_000_001_234_u64,
        });
        assert_eq!(Value::Object(event.clone()), expected);
        let bytes = serde_json::to_vec(&event).expect("serializable");
        assert!(costline_core::decode_event(&bytes).is_ok());
    }

    #[test]
    fn every_field_it_writes_is_in_the_json_schema() {
        let schema: Value = serde_json::from_str(include_str!("../../../../schemas/usage-event.v1.schema.json"))
            .expect("the schema is JSON");
        let config = OtlpConfig::default();
        let names = [
            "costline.request_id",
            "costline.attempt",
            "costline.endpoint_tag",
            "costline.prompt_version",
            "enduser.id",
            "deployment.environment.name",
            "costline.data_mode",
            "gen_ai.provider.name",
            "gen_ai.response.model",
            "gen_ai.usage.input_tokens",
            "gen_ai.usage.output_tokens",
            "gen_ai.usage.cache_read.input_tokens",
            "gen_ai.usage.cache_creation.input_tokens",
            "error.type",
        ];
        let span = llm_span(names.iter().map(|name| text(name, "v")).collect());
        let event = usage_event(&config, &Attributes { span: &span.attributes, resource: &[] }, &span);
        assert_eq!(event.len(), names.len() + 3, "a field per attribute, status, latencyMs, timestamp: {event:?}");
        for field in event.keys() {
            assert!(schema["properties"].get(field).is_some(), "{field} is not in the schema");
        }
    }

    #[test]
    fn the_status_comes_from_the_span_status_and_error_type() {
        let status_of = |attributes: Vec<KeyValue>, code: StatusCode| {
            let span =
                Span { status: Some(Status { code: code as i32, message: String::new() }), ..llm_span(attributes) };
            let event =
                usage_event(&OtlpConfig::default(), &Attributes { span: &span.attributes, resource: &[] }, &span);
            (event["status"].clone(), event.get("errorCode").cloned())
        };
        assert_eq!(status_of(vec![], StatusCode::Unset), (Value::from("success"), None));
        assert_eq!(status_of(vec![], StatusCode::Error), (Value::from("error"), None));
        assert_eq!(
            status_of(vec![text("error.type", "Timeout")], StatusCode::Error),
            (Value::from("timeout"), Some(Value::from("Timeout")))
        );
        assert_eq!(
            status_of(vec![text("error.type", "500")], StatusCode::Unset),
            (Value::from("error"), Some(Value::from("500")))
        );
    }

    #[test]
    fn only_spans_with_token_usage_are_llm_calls() {
        assert!(!has_usage(&llm_span(vec![text("gen_ai.provider.name", "openai"), text("http.route", "/x")])));
        assert!(has_usage(&llm_span(vec![int("gen_ai.usage.output_tokens", 0)])));
        assert!(has_usage(&llm_span(vec![int("gen_ai.usage.prompt_tokens", 3)])));
    }

    #[test]
    fn the_request_id_attribute_wins_over_the_span_identity() {
        let with_id = llm_span(vec![int("gen_ai.usage.input_tokens", 1), text("costline.request_id", "r-1")]);
        let event =
            usage_event(&OtlpConfig::default(), &Attributes { span: &with_id.attributes, resource: &[] }, &with_id);
        assert_eq!(event["externalRequestId"], "r-1");
    }
}
