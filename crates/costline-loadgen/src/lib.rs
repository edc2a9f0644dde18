//! Realistic, deterministic usage traffic for `costline produce`, the demo, tests and
//! benchmarks.
//!
//! A seeded generator walks a virtual clock and emits what production traffic looks like:
//! many tenants (Zipf-like), product endpoints with prompt versions and a model mix (one
//! model has no price), provider errors followed by retries, re-sent copies (duplicates),
//! late events, `costUsd` overrides, test and demo traffic, unicode tags, and a share of
//! broken records of many kinds. The same seed and start time give the same records.

use std::borrow::Cow;
use std::collections::VecDeque;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// Knobs of the traffic mix.
#[derive(Debug, Clone)]
pub struct TrafficMix {
    pub seed: u64,
    /// Virtual time of the first record, epoch ms.
    pub start_ms: i64,
    /// Virtual time between two records.
    pub spacing_ms: f64,
    pub tenants: usize,
    pub duplicate_share: f64,
    pub invalid_share: f64,
    pub late_share: f64,
}

impl TrafficMix {
    pub fn new(seed: u64, start_ms: i64) -> TrafficMix {
        TrafficMix {
            seed,
            start_ms,
            spacing_ms: 10.0,
            tenants: 300,
            duplicate_share: 0.03,
            invalid_share: 0.01,
            late_share: 0.02,
        }
    }
}

/// What the generator meant a record to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    Valid,
    Duplicate,
    Invalid,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Valid => "valid",
            RecordKind::Duplicate => "duplicate",
            RecordKind::Invalid => "invalid",
        }
    }
}

/// One Kafka record to publish.
#[derive(Debug, Clone)]
pub struct GeneratedRecord {
    pub key: String,
    pub payload: Vec<u8>,
    /// Kafka record timestamp, epoch ms.
    pub timestamp_ms: i64,
    pub kind: RecordKind,
}

struct Endpoint {
    tag: &'static str,
    prompt_versions: &'static [&'static str],
    models: &'static [(&'static str, &'static str)],
    input_tokens: u64,
    output_tokens: u64,
}

const UNPRICED: (&str, &str) = ("acme", "acme-llm-2");

const ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        tag: "checkout.ai_summary",
        prompt_versions: &["summary_v3", "summary_v4"],
        models: &[("openai", "gpt-4o-mini"), ("openai", "gpt-4.1-mini")],
        input_tokens: 1800,
        output_tokens: 220,
    },
    Endpoint {
        tag: "support.reply_draft",
        prompt_versions: &["reply_v7", "reply_v8", ""],
        models: &[("anthropic", "claude-sonnet-4-5"), ("anthropic", "claude-haiku-4-5-20251001")],
        input_tokens: 5200,
        output_tokens: 600,
    },
    Endpoint {
        tag: "search.rerank",
        prompt_versions: &["rerank_v2"],
        models: &[("google", "gemini-2.5-flash"), ("mistral", "mistral-small-latest")],
        input_tokens: 3000,
        output_tokens: 60,
    },
    Endpoint {
        tag: "onboarding.welcome_email",
        prompt_versions: &["welcome_v1", ""],
        models: &[("openai", "gpt-4o")],
        input_tokens: 900,
        output_tokens: 450,
    },
    Endpoint {
        tag: "agents.code_review",
        prompt_versions: &["review_v12", "review_v13"],
        models: &[("anthropic", "claude-sonnet-4-5"), ("openai", "gpt-5-mini")],
        input_tokens: 14000,
        output_tokens: 1400,
    },
    Endpoint {
        tag: "recherche.résumé",
        prompt_versions: &["résumé_v2"],
        models: &[("mistral", "mistral-small-latest")],
        input_tokens: 2500,
        output_tokens: 300,
    },
    Endpoint {
        tag: "chat.assistant",
        prompt_versions: &["assist_v5", "assist_v6", "assist_v6_экспресс"],
        models: &[("openai", "gpt-4o"), ("google", "gemini-2.5-flash"), UNPRICED],
        input_tokens: 3500,
        output_tokens: 500,
    },
    Endpoint {
        tag: "internal.eval_harness",
        prompt_versions: &["eval_🧪_v1"],
        models: &[UNPRICED, ("openai", "gpt-4.1-mini")],
        input_tokens: 1200,
        output_tokens: 200,
    },
];

/// One generated usage event. Fields are declared in the byte order of their JSON names, so
/// records keep the sorted key order they had when built as a `serde_json::Map` (same seed,
/// same bytes); missing optional fields are left out, as a producer would.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct GeneratedEvent {
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt: Option<u64>,
    #[serde(rename = "cacheWrite1hTokens", skip_serializing_if = "Option::is_none")]
    cache_write_1h_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_write_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cached_input_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cost_usd: Option<serde_json::Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_mode: Option<&'static str>,
    endpoint_tag: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    environment: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<&'static str>,
    external_request_id: String,
    input_tokens: u64,
    latency_ms: u64,
    model: &'static str,
    output_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_version: Option<&'static str>,
    provider: Cow<'static, str>,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<EventTimestamp>,
    user_id: String,
}

/// The event's own time, in either of the two forms the wire format accepts.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
enum EventTimestamp {
    Rfc3339(String),
    EpochMs(i64),
}

/// A provider call that will be retried.
struct PendingRetry {
    due: u64,
    event: GeneratedEvent,
}

/// An earlier record to send again.
struct PendingCopy {
    due: u64,
    key: String,
    payload: Vec<u8>,
}

pub struct TrafficGenerator {
    mix: TrafficMix,
    rng: ChaCha8Rng,
    index: u64,
    next_request: u64,
    tenants: Vec<String>,
    tenant_weights: Vec<f64>,
    retries: VecDeque<PendingRetry>,
    copies: VecDeque<PendingCopy>,
}

impl TrafficGenerator {
    pub fn new(mix: TrafficMix) -> TrafficGenerator {
        let mut rng = ChaCha8Rng::seed_from_u64(mix.seed);
        let tenants: Vec<String> = (0..mix.tenants).map(|_| format!("t_{:012x}", rng.random::<u64>() >> 16)).collect();
        let mut cumulative = 0.0;
        let tenant_weights = (0..mix.tenants)
            .map(|i| {
                cumulative += 1.0 / (i as f64 + 1.0);
                cumulative
            })
            .collect();
        TrafficGenerator {
            mix,
            rng,
            index: 0,
            next_request: 0,
            tenants,
            tenant_weights,
            retries: VecDeque::new(),
            copies: VecDeque::new(),
        }
    }

    fn clock_ms(&self) -> i64 {
        self.mix.start_ms + (self.index as f64 * self.mix.spacing_ms) as i64
    }

    fn tenant(&mut self) -> String {
        let total = self.tenant_weights.last().copied().unwrap_or(1.0);
        let pick = self.rng.random::<f64>() * total;
        let i = self.tenant_weights.partition_point(|&w| w < pick).min(self.tenants.len() - 1);
        self.tenants[i].clone()
    }

    fn new_call(&mut self) -> GeneratedEvent {
        let endpoint = &ENDPOINTS[self.rng.random_range(0..ENDPOINTS.len())];
        let (provider, model) = endpoint.models[self.rng.random_range(0..endpoint.models.len())];
        let prompt_version = endpoint.prompt_versions[self.rng.random_range(0..endpoint.prompt_versions.len())];
        self.next_request += 1;
        let external_request_id = format!("req-{:x}-{:08}", self.mix.seed, self.next_request);
        let input = (endpoint.input_tokens as f64 * self.rng.random_range(0.3..2.5)) as u64;
        let output = (endpoint.output_tokens as f64 * self.rng.random_range(0.2..2.0)) as u64;
        let provider_text =
            if self.rng.random_bool(0.05) { Cow::Owned(provider.to_uppercase()) } else { Cow::Borrowed(provider) };
        let user_id = self.tenant();
        let (mut cached_input_tokens, mut cache_write_tokens, mut cache_write_1h_tokens) = (None, None, None);
        if provider != "mistral" && self.rng.random_bool(0.4) {
            let cached = (input as f64 * self.rng.random_range(0.2..0.9)) as u64;
            cached_input_tokens = Some(cached);
            if provider == "anthropic" && self.rng.random_bool(0.25) {
                let share = self.rng.random_range(0.0..0.5);
                let written = Some(((input - cached) as f64 * share) as u64);
                // The smaller 40 % of writes go to the 1-hour cache: no extra draw, so a seed's
                // other records keep their bytes.
                if share < 0.2 {
                    cache_write_1h_tokens = written;
                } else {
                    cache_write_tokens = written;
                }
            }
        }
        let latency_ms = 150 + output * self.rng.random_range(4..25);
        let roll: f64 = self.rng.random();
        let status = match roll {
            r if r < 0.93 => "success",
            r if r < 0.96 => "rate_limited",
            r if r < 0.98 => "error",
            r if r < 0.99 => "timeout",
            _ => "cancelled",
        };
        let error_code = match status {
            "success" => None,
            "rate_limited" => Some("429"),
            "timeout" => Some("deadline_exceeded"),
            _ => Some("server_error"),
        };
        let mode_roll: f64 = self.rng.random();
        let data_mode = match mode_roll {
            r if r < 0.04 => Some("test"),
            r if r < 0.06 => Some("demo"),
            _ => None,
        };
        let env_roll: f64 = self.rng.random();
        let environment = match env_roll {
            r if r < 0.08 => Some("staging"),
            r if r < 0.10 => Some("dev"),
            r if r < 0.5 => Some("prod"),
            _ => None,
        };
        let cost_usd = self.rng.random_bool(0.02).then(|| {
            let cost = self.rng.random_range(1..5_000_000u64);
            format!("0.{cost:08}").parse().unwrap_or_else(|_| serde_json::Number::from(0))
        });
        GeneratedEvent {
            attempt: None,
            cache_write_1h_tokens,
            cache_write_tokens,
            cached_input_tokens,
            cost_usd,
            data_mode,
            endpoint_tag: endpoint.tag,
            environment,
            error_code,
            external_request_id,
            input_tokens: input,
            latency_ms,
            model,
            output_tokens: output,
            prompt_version: (!prompt_version.is_empty()).then_some(prompt_version),
            provider: provider_text,
            status,
            timestamp: None,
            user_id,
        }
    }

    fn stamp(&mut self, event: &mut GeneratedEvent, now_ms: i64) {
        let mut at = now_ms - i64::from(self.rng.random_range(0..2000u32));
        if self.rng.random_bool(self.mix.late_share) {
            at -= self.rng.random_range(5 * 60_000..90 * 60_000);
        }
        let roll: f64 = self.rng.random();
        if roll < 0.5 {
            let time = chrono::DateTime::from_timestamp_millis(at).unwrap_or_default();
            event.timestamp = Some(EventTimestamp::Rfc3339(time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()));
        } else if roll < 0.9 {
            event.timestamp = Some(EventTimestamp::EpochMs(at));
        }
    }

    fn broken(&mut self, request_id: &str) -> Vec<u8> {
        let good = format!(
            r#"{{"externalRequestId":"{request_id}","provider":"openai","model":"gpt-4o","endpointTag":"checkout.ai_summary","inputTokens":100,"outputTokens":10,"status":"success"}}"#
        );
        match self.rng.random_range(0..10) {
            0 => good.as_bytes()[..good.len() / 2].to_vec(),
            1 => good.replace(r#""model":"gpt-4o","#, "").into_bytes(),
            2 => good.replace(r#""inputTokens":100"#, r#""inputTokens":-100"#).into_bytes(),
            3 => good.replace(r#""outputTokens":10"#, r#""outputTokens":"ten""#).into_bytes(),
            4 => good.replace(r#""status":"success""#, r#""status":"success","dataMode":"staging""#).into_bytes(),
            5 => {
                let mut bytes = good.into_bytes();
                bytes.splice(20..20, [0xff, 0xfe]);
                bytes
            }
            6 => good.replace("checkout.ai_summary", &"x".repeat(200)).into_bytes(),
            7 => good.replace(r#""status":"success""#, r#""status":"success","cachedInputTokens":500"#).into_bytes(),
            8 => good.replace("checkout.ai_summary", "checkout\\u0007bell").into_bytes(),
            _ => b"'; DROP TABLE usage_events; --".to_vec(),
        }
    }
}

impl Iterator for TrafficGenerator {
    type Item = GeneratedRecord;

    fn next(&mut self) -> Option<GeneratedRecord> {
        let now_ms = self.clock_ms();
        let index = self.index;
        self.index += 1;
        if self.copies.front().is_some_and(|c| c.due <= index) {
            let copy = self.copies.pop_front()?;
            return Some(GeneratedRecord {
                key: copy.key,
                payload: copy.payload,
                timestamp_ms: now_ms,
                kind: RecordKind::Duplicate,
            });
        }
        if self.rng.random_bool(self.mix.invalid_share) {
            self.next_request += 1;
            let key = format!("bad-{:x}-{}", self.mix.seed, self.next_request);
            let payload = self.broken(&key);
            return Some(GeneratedRecord { key, payload, timestamp_ms: now_ms, kind: RecordKind::Invalid });
        }
        let mut event = match self.retries.front() {
            Some(r) if r.due <= index => self.retries.pop_front()?.event,
            _ => self.new_call(),
        };
        self.stamp(&mut event, now_ms);
        if event.status != "success" && event.status != "cancelled" && self.rng.random_bool(0.8) {
            let mut retry = event.clone();
            retry.attempt = Some(event.attempt.unwrap_or(1) + 1);
            retry.status = if self.rng.random_bool(0.85) { "success" } else { "rate_limited" };
            if retry.status == "success" {
                retry.error_code = None;
            }
            let due = index + self.rng.random_range(1..40);
            self.retries.push_back(PendingRetry { due, event: retry });
            self.retries.make_contiguous().sort_by_key(|r| r.due);
        }
        // Cannot fail: text, integers and JSON numbers only.
        let payload = serde_json::to_vec(&event).unwrap_or_default();
        let key = event.external_request_id;
        if self.rng.random_bool(self.mix.duplicate_share) {
            let due = index + self.rng.random_range(1..500);
            self.copies.push_back(PendingCopy { due, key: key.clone(), payload: payload.clone() });
            self.copies.make_contiguous().sort_by_key(|c| c.due);
        }
        Some(GeneratedRecord { key, payload, timestamp_ms: now_ms, kind: RecordKind::Valid })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_traffic() {
        let a: Vec<_> =
            TrafficGenerator::new(TrafficMix::new(7, 1_700_000_000_000)).take(2000).map(|r| r.payload).collect();
        let b: Vec<_> =
            TrafficGenerator::new(TrafficMix::new(7, 1_700_000_000_000)).take(2000).map(|r| r.payload).collect();
        assert_eq!(a, b);
    }

    /// Benchmarks compare runs across versions of the generator: the bytes of a seed stay put
    /// (sorted keys, optional fields left out).
    #[test]
    fn records_keep_their_bytes() {
        let record = TrafficGenerator::new(TrafficMix::new(1, 1_790_000_000_000)).next();
        let payload = record.map(|r| String::from_utf8_lossy(&r.payload).into_owned()).unwrap_or_default();
        assert_eq!(
            payload,
            r#"{"cachedInputTokens":3391,"endpointTag":"agents.code_review","externalRequestId":"req-1-00000001","inputTokens":6961,"latencyMs":23140,"model":"claude-sonnet-4-5","outputTokens":1045,"promptVersion":"review_v13","provider":"anthropic","status":"success","timestamp":"2026-09-21T14:13:18.921Z","userId":"t_16a276763845"}"#
        );
    }
}
