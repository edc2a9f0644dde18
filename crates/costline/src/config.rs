//! Configuration: one TOML file, every key overridable by an environment variable
//! `COSTLINE_<SECTION>__<KEY>` (double underscore between section and key, e.g.
//! `COSTLINE_KAFKA__BROKERS`). Secrets come only from the environment or a file and print as
//! `***`. Every section rejects unknown keys, and every problem names the key it is about.
//!
//! The `///` line of each field is the configuration reference (README §Configuration).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use costline_core::Secret;

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "COSTLINE_";

#[derive(Debug, Clone, Deserialize, Serialize, Default, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub clickhouse: ClickHouseConfig,
    pub pipeline: PipelineConfig,
    pub pricing: PricingConfig,
    pub http: HttpConfig,
    pub otlp: OtlpConfig,
    pub log: LogConfig,
    pub alerts: AlertsConfig,
    /// Budgets (`[[budgets]]` tables).
    pub budgets: Vec<BudgetConfig>,
    /// Webhooks that alerts are delivered to (`[[webhooks]]` tables).
    pub webhooks: Vec<WebhookConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// How often budgets and rules are evaluated (by the worker that owns partition 0).
    pub evaluate_interval_ms: u64,
    /// Time zone of budget periods (IANA name), unless a budget sets its own.
    pub time_zone: String,
    /// A rule that fired for a scope stays quiet this long while its condition holds.
    pub cooldown_secs: u32,
    /// Webhooks that rule alerts go to.
    pub webhooks: Vec<String>,
    /// First backoff of a failed webhook delivery; it doubles (with ±25 % jitter) per attempt.
    pub retry_initial_ms: u64,
    /// Longest backoff between two attempts of a webhook delivery.
    pub retry_max_ms: u64,
    /// Give up on a delivery after this many attempts (it stays in `alerts` as `failed`).
    pub max_attempts: u32,
    /// Due deliveries one webhook's delivery loop takes from the outbox at a time (each webhook
    /// has its own loop).
    pub delivery_batch: usize,
    /// Attempts one webhook's delivery loop has in flight at once (a slow receiver holds up
    /// only itself).
    pub delivery_concurrency: usize,
    /// At most this many scopes of one rule (models, endpoints, drift combinations: values the
    /// senders choose) get an alert of their own per `cooldown_secs`; the rest are counted in one
    /// alert of that rule with scope `others`.
    pub max_alerts_per_rule: usize,
    pub retry_storm: RetryStormConfig,
    pub cost_spike: CostSpikeConfig,
    pub config_drift: ConfigDriftConfig,
    pub unpriced_model: UnpricedModelConfig,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            evaluate_interval_ms: 5_000,
            time_zone: "UTC".into(),
            cooldown_secs: 3_600,
            webhooks: Vec::new(),
            retry_initial_ms: 500,
            retry_max_ms: 60_000,
            max_attempts: 50,
            delivery_batch: 100,
            delivery_concurrency: 4,
            max_alerts_per_rule: 20,
            retry_storm: RetryStormConfig::default(),
            cost_spike: CostSpikeConfig::default(),
            config_drift: ConfigDriftConfig::default(),
            unpriced_model: UnpricedModelConfig::default(),
        }
    }
}

impl AlertsConfig {
    /// What the alerts component runs with.
    pub fn settings(&self) -> costline_alerts::AlertSettings {
        use costline_core::rules::{ConfigDrift, CostSpike, RetryStorm};
        let (storm, spike, drift) = (&self.retry_storm, &self.cost_spike, &self.config_drift);
        let rules = costline_alerts::rule_alerts::RuleSettings {
            retry_storm: storm.enabled.then_some((
                RetryStorm { max_ratio: storm.max_retry_ratio, min_requests: storm.min_requests },
                storm.window_secs,
            )),
            cost_spike: spike.enabled.then_some((
                CostSpike {
                    factor: spike.factor,
                    min_cost_usd: spike.min_cost_usd,
                    min_history_hours: spike.min_history_hours,
                },
                spike.trailing_hours,
            )),
            config_drift: drift
                .enabled
                .then_some((ConfigDrift { min_history_hours: drift.min_history_hours }, drift.lookback_hours)),
            unpriced_model_window_secs: self.unpriced_model.enabled.then_some(self.unpriced_model.window_secs),
            cooldown_secs: self.cooldown_secs,
            max_alerts_per_rule: self.max_alerts_per_rule,
            webhooks: self.webhooks.clone(),
        };
        let interval = Duration::from_millis(self.evaluate_interval_ms);
        let outbox = costline_alerts::outbox::OutboxSettings {
            retry_initial: Duration::from_millis(self.retry_initial_ms),
            retry_max: Duration::from_millis(self.retry_max_ms),
            max_attempts: self.max_attempts,
            batch: self.delivery_batch,
            concurrency: self.delivery_concurrency,
            poll_interval: interval,
        };
        costline_alerts::AlertSettings { evaluate_interval: interval, rules, outbox }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RetryStormConfig {
    /// Whether the retry-storm rule runs (retry ratio of an endpoint over a limit).
    pub enabled: bool,
    /// Sliding window of the rule (event time).
    pub window_secs: u32,
    /// The rule fires above this retries/requests ratio of an endpoint in the window.
    pub max_retry_ratio: f64,
    /// The rule judges an endpoint only with at least this many requests in the window.
    pub min_requests: u64,
}

impl Default for RetryStormConfig {
    fn default() -> Self {
        RetryStormConfig { enabled: true, window_secs: 300, max_retry_ratio: 0.5, min_requests: 100 }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CostSpikeConfig {
    /// Whether the cost-spike rule runs (an endpoint's last complete hour against its average).
    pub enabled: bool,
    /// The rule fires when the last complete hour costs more than this × the trailing hourly
    /// average (above 1).
    pub factor: f64,
    /// Hours the trailing average covers (hours without traffic are not averaged in).
    pub trailing_hours: u32,
    /// The rule fires only for an hour that cost at least this much (USD).
    pub min_cost_usd: f64,
    /// The rule judges an endpoint once at least this many of the trailing hours had traffic
    /// (the first, partial hours of a new endpoint would make a low average).
    pub min_history_hours: u32,
}

impl Default for CostSpikeConfig {
    fn default() -> Self {
        CostSpikeConfig { enabled: true, factor: 3.0, trailing_hours: 24, min_cost_usd: 10.0, min_history_hours: 6 }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigDriftConfig {
    /// Whether the config-drift rule runs (a new provider/model under an endpoint + prompt
    /// version).
    pub enabled: bool,
    /// Combinations seen in this many hours before the current one are "known".
    pub lookback_hours: u32,
    /// An endpoint + prompt version is judged once it had traffic in this many of the lookback
    /// hours (with less history, an occasional model such as a fallback may not have shown up).
    pub min_history_hours: u32,
}

impl Default for ConfigDriftConfig {
    fn default() -> Self {
        ConfigDriftConfig { enabled: true, lookback_hours: 168, min_history_hours: 6 }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct UnpricedModelConfig {
    /// Whether the unpriced-model rule runs (attempts of a model without a price row).
    pub enabled: bool,
    /// Looks back this far for unpriced attempts.
    pub window_secs: u32,
}

impl Default for UnpricedModelConfig {
    fn default() -> Self {
        UnpricedModelConfig { enabled: true, window_secs: 300 }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// Unique id, used in alert ids and the budget API (`/v1/budgets/{id}`).
    pub id: String,
    /// Calendar periods in the budget's time zone (weeks start on Monday).
    pub period: BudgetPeriod,
    /// The limit in USD, a decimal string (`"500.00"`).
    pub limit_usd: String,
    /// Percent of the limit that fire an alert once per period.
    #[serde(default = "default_thresholds")]
    pub thresholds: Vec<u32>,
    /// Webhook ids to notify.
    #[serde(default)]
    pub webhooks: Vec<String>,
    /// IANA time zone of the periods; default `alerts.time_zone`.
    pub time_zone: Option<String>,
    #[serde(default)]
    pub scope: ScopeConfig,
    /// What the guardrail check (`/v1/budgets/check`) answers for calls this budget covers
    /// once it is exceeded: `warn` still allows them, `block` refuses them until the period
    /// resets. Alerts fire either way.
    #[serde(default)]
    pub on_exceeded: OnExceededConfig,
}

/// See `budgets[].on_exceeded`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnExceededConfig {
    #[default]
    Warn,
    Block,
}

/// A budget's calendar period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BudgetPeriod {
    Day,
    /// Monday to Sunday.
    Week,
    Month,
}

/// The form of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable, for terminals.
    Text,
    /// One JSON object per line, for log collectors (also `--log-json`).
    Json,
}

fn default_thresholds() -> Vec<u32> {
    vec![50, 80, 100]
}

/// What a budget covers. Unset keys match anything; `environment` defaults to `prod` and
/// `data_mode` to `real` (`"*"` matches any). `endpoint_tag` may end in `*` (prefix).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopeConfig {
    /// The tenant (`userId`) covered; unset or `"*"`: any.
    pub tenant: Option<String>,
    /// The endpoint tag covered, exact or a prefix ending in `*` (`checkout.*`); unset: any.
    pub endpoint_tag: Option<String>,
    /// The prompt version covered (`""` is untagged traffic); unset: any.
    pub prompt_version: Option<String>,
    /// The provider covered (compared lower-case); unset or `"*"`: any.
    pub provider: Option<String>,
    /// The model covered; unset or `"*"`: any.
    pub model: Option<String>,
    /// The environment covered; unset: `prod`, `"*"`: any.
    pub environment: Option<String>,
    /// The data mode covered (`real`, `test`, `demo`); unset: `real`, `"*"`: any.
    pub data_mode: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Id that budgets and `alerts.webhooks` refer to.
    pub id: String,
    /// Where alerts are POSTed. Its user info, path and query may hold a token (Slack's do):
    /// `config check` prints only `scheme://host:port/…`.
    #[serde(serialize_with = "serialize_url_origin")]
    pub url: String,
    /// What is sent: `costline` (the signed JSON body of the contract), `slack` (an incoming
    /// webhook message) or `pagerduty` (an Events API v2 event: a trigger per alert, a resolve
    /// when a budget's period ends).
    #[serde(default)]
    pub format: WebhookFormat,
    /// Name of the environment variable holding the HMAC secret: required (not empty) with
    /// the `costline` format, refused with the others (they are not signed).
    pub secret_env: Option<String>,
    /// Name of the environment variable holding the PagerDuty integration's routing key:
    /// required (not empty) with the `pagerduty` format, refused with the others.
    pub routing_key_env: Option<String>,
    /// Per-attempt timeout.
    #[serde(default = "default_webhook_timeout_ms")]
    pub timeout_ms: u64,
    /// The HMAC secret or the routing key, read from its variable when the configuration is
    /// loaded.
    #[serde(skip)]
    pub secret: Option<Secret>,
}

/// What a webhook is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// The contract's JSON body, signed with HMAC-SHA256.
    #[default]
    Costline,
    /// A Slack incoming-webhook message (`text` and `blocks`).
    Slack,
    /// A PagerDuty Events API v2 event.
    PagerDuty,
}

impl WebhookFormat {
    fn name(self) -> &'static str {
        match self {
            WebhookFormat::Costline => "costline",
            WebhookFormat::Slack => "slack",
            WebhookFormat::PagerDuty => "pagerduty",
        }
    }

    /// The key naming the variable this format's secret comes from, if it needs one.
    fn secret_key(self) -> Option<&'static str> {
        match self {
            WebhookFormat::Costline => Some("secret_env"),
            WebhookFormat::Slack => None,
            WebhookFormat::PagerDuty => Some("routing_key_env"),
        }
    }
}

impl WebhookConfig {
    /// The sender for this webhook, with its secret loaded.
    pub fn sender(&self) -> anyhow::Result<costline_alerts::webhook::Webhook> {
        use costline_alerts::webhook::Payload;
        let secret = || {
            self.secret
                .clone()
                .with_context(|| format!("webhook {}: its secret or routing key was not loaded", self.id))
        };
        let payload = match self.format {
            WebhookFormat::Costline => Payload::Costline { secret: secret()? },
            WebhookFormat::Slack => Payload::Slack,
            WebhookFormat::PagerDuty => Payload::PagerDuty { routing_key: secret()? },
        };
        costline_alerts::webhook::Webhook::new(&self.url, payload, Duration::from_millis(self.timeout_ms))
            .with_context(|| format!("webhook {}", self.id))
    }
}

fn default_webhook_timeout_ms() -> u64 {
    5_000
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap brokers, comma-separated `host:port`.
    pub brokers: String,
    /// Topic the usage events are published to.
    pub topic: String,
    /// Consumer group of the workers; run more processes with the same group to scale out.
    pub group_id: String,
    /// Topic that receives every rejected record (payload unchanged up to
    /// `dead_letter_max_payload_bytes`, reason in headers).
    pub dead_letter_topic: String,
    /// Longest payload a dead letter carries. A longer rejected record is cut to this many
    /// bytes and its dead letter says so (`costline-payload-truncated`, `costline-payload-bytes`);
    /// `rejected_events` keeps its full size and reason. Must leave room for the headers under
    /// librdkafka's `message.max.bytes` (1,000,000 unless set in `kafka.librdkafka`).
    pub dead_letter_max_payload_bytes: usize,
    /// How costline's producers (HTTP ingest, `replay`, `produce`) choose a key's partition:
    /// `murmur2_random` (the Java client's partitioner, the default) so that a request id
    /// published by any client lands in one partition; see README, "Publishing events".
    pub partitioner: Partitioner,
    /// Consumer session timeout. A worker that dies is replaced after this long.
    pub session_timeout_ms: u32,
    /// Longest pause between two polls before the group gives the worker's partitions away.
    pub max_poll_interval_ms: u32,
    /// Extra librdkafka properties for consumer and producers (e.g. `security.protocol`).
    /// Secret ones (a name with `password` or `secret` in it, `ssl.key.pem`,
    /// `sasl.oauthbearer.config`) print as `***`; better give them through
    /// `librdkafka_secret_env` or `librdkafka_secret_files`.
    #[serde(serialize_with = "serialize_redacted")]
    pub librdkafka: BTreeMap<String, String>,
    /// librdkafka properties read from environment variables: property name → variable name
    /// (e.g. `"sasl.password" = "KAFKA_SASL_PASSWORD"`).
    pub librdkafka_secret_env: BTreeMap<String, String>,
    /// librdkafka properties read from files (their first line): property name → path.
    pub librdkafka_secret_files: BTreeMap<String, PathBuf>,
    /// The values of `librdkafka_secret_env` and `librdkafka_secret_files`, loaded at start.
    #[serde(skip)]
    pub librdkafka_secrets: BTreeMap<String, Secret>,
}

fn serialize_url_origin<S: serde::Serializer>(url: &str, serializer: S) -> Result<S::Ok, S::Error> {
    match reqwest::Url::parse(url) {
        Ok(parsed) => serializer.serialize_str(&format!("{}…", costline_alerts::webhook::origin(&parsed))),
        Err(_) => serializer.serialize_str("(not a valid URL)"),
    }
}

/// Whether a librdkafka property holds a secret.
fn is_secret_property(name: &str) -> bool {
    name.contains("password") || name.contains("secret") || matches!(name, "ssl.key.pem" | "sasl.oauthbearer.config")
}

fn serialize_redacted<S: serde::Serializer>(
    properties: &BTreeMap<String, String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(
        properties.iter().map(|(name, value)| (name, if is_secret_property(name) { "***" } else { value.as_str() })),
    )
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:19092".into(),
            topic: "costline.usage.v1".into(),
            group_id: "costline".into(),
            dead_letter_topic: "costline.usage.dead-letter".into(),
            dead_letter_max_payload_bytes: 256 << 10,
            partitioner: Partitioner::Murmur2Random,
            librdkafka_secret_env: Default::default(),
            librdkafka_secret_files: Default::default(),
            librdkafka_secrets: Default::default(),
            session_timeout_ms: 10_000,
            max_poll_interval_ms: 300_000,
            librdkafka: Default::default(),
        }
    }
}

/// librdkafka's partitioners (`partitioner`). The `_random` forms send keyless records to a
/// random partition; keyed records go where the named hash puts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Partitioner {
    /// Java's `murmur2` (Kafka's default in the Java, Go (sarama's compatible mode) and most
    /// other clients).
    Murmur2Random,
    Murmur2,
    /// librdkafka's own default, CRC32: the same id lands elsewhere than from a Java producer.
    ConsistentRandom,
    Consistent,
    Fnv1aRandom,
    Fnv1a,
}

impl Partitioner {
    /// The value of librdkafka's `partitioner` property.
    pub fn librdkafka_name(self) -> &'static str {
        match self {
            Partitioner::Murmur2Random => "murmur2_random",
            Partitioner::Murmur2 => "murmur2",
            Partitioner::ConsistentRandom => "consistent_random",
            Partitioner::Consistent => "consistent",
            Partitioner::Fnv1aRandom => "fnv1a_random",
            Partitioner::Fnv1a => "fnv1a",
        }
    }
}

/// librdkafka's default `message.max.bytes`.
const LIBRDKAFKA_MESSAGE_MAX_BYTES: usize = 1_000_000;
/// Room left under `message.max.bytes` for a dead letter's headers and record overhead.
const DEAD_LETTER_HEADER_ROOM: usize = 64 << 10;

impl KafkaConfig {
    /// librdkafka properties of every client: `kafka.librdkafka`, then the secret ones.
    pub fn client_properties(&self) -> Vec<(String, String)> {
        let secrets = self.librdkafka_secrets.iter().map(|(name, value)| (name.clone(), value.expose().to_string()));
        self.librdkafka.clone().into_iter().chain(secrets).collect()
    }

    /// librdkafka properties of costline's producers: the partitioner, then `kafka.librdkafka`.
    pub fn producer_properties(&self) -> Vec<(String, String)> {
        let mut properties = vec![("partitioner".to_string(), self.partitioner.librdkafka_name().to_string())];
        properties.extend(self.client_properties());
        properties
    }

    /// The largest dead letter the producer accepts leaves room for the headers.
    fn dead_letter_limit(&self) -> anyhow::Result<usize> {
        match self.librdkafka.get("message.max.bytes") {
            None => Ok(LIBRDKAFKA_MESSAGE_MAX_BYTES),
            Some(value) => value.trim().parse().map_err(|_| {
                anyhow::anyhow!("config key `kafka.librdkafka.\"message.max.bytes\"` must be a number of bytes")
            }),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    /// HTTP endpoint of ClickHouse.
    pub url: String,
    /// Database holding costline's tables (created by migrations).
    pub database: String,
    /// ClickHouse user.
    pub user: String,
    /// File holding the password (first line). Alternatively set `COSTLINE_CLICKHOUSE_PASSWORD`.
    pub password_file: Option<PathBuf>,
    /// Longest wait for one flush insert before it is cancelled and retried.
    pub insert_timeout_secs: u64,
    /// Writer lanes: each partition held is written by one lane, its flushes in order; lanes
    /// insert concurrently. One lane sends ClickHouse fewer, larger inserts, which keeps the
    /// latency down while ClickHouse is busy; more lanes catch a backlog up faster where
    /// ClickHouse has idle cores (BENCHMARKS.md, "What sets the pace").
    pub insert_streams: usize,
    /// Days of `usage_events` and `rejected_events` kept (whole UTC days / months are dropped);
    /// 0 keeps everything. Must cover `pipeline.dedup_horizon_secs` + `dedup_grace_secs`:
    /// restarts rebuild the dedup memory from `usage_events`.
    pub retention_days: u32,
    /// The name of a ClickHouse cluster (in the servers' `<remote_servers>`) to run on, with
    /// Replicated tables on every server and `Distributed` tables for analysts in
    /// `clickhouse.database`; unset: one server. Needs `clickhouse.shards`; `clickhouse.url`
    /// is then one of the cluster's servers (analysts' reads, alerts and migrations go there).
    pub cluster: Option<String>,
    /// With `clickhouse.cluster`: the HTTP endpoints of each shard's replicas, shard by shard,
    /// in the order the servers' `<remote_servers>` lists them, e.g.
    /// `[["http://ch1a:8123", "http://ch1b:8123"], ["http://ch2a:8123", "http://ch2b:8123"]]`.
    /// Kafka partition p is written to shard p mod the number of shards.
    pub shards: Vec<Vec<String>>,
    #[serde(skip)]
    pub password: Option<Secret>,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        ClickHouseConfig {
            url: "http://127.0.0.1:18123".into(),
            database: "costline".into(),
            user: "default".into(),
            password_file: None,
            insert_timeout_secs: 30,
            insert_streams: 1,
            retention_days: 0,
            cluster: None,
            shards: Vec::new(),
            password: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// How often pending rollups and events are written to ClickHouse.
    pub flush_interval_ms: u64,
    /// Flush early once this many records are pending (bounds memory).
    pub max_pending_records: u64,
    /// Copies of an attempt whose Kafka record times are this close are always duplicates.
    pub dedup_horizon_secs: u32,
    /// How far record times may go backwards within a partition and still see every identity.
    pub dedup_grace_secs: u32,
    /// How far ahead of this worker's wall clock a Kafka record time is believed. A later
    /// record time (a producer's wrong clock, or a hostile one) is counted as now + this skew,
    /// so that it cannot age the dedup memory ahead of real time. At most `dedup_grace_secs`.
    pub max_clock_skew_secs: u32,
    /// Let the kernel back the worker's memory with transparent huge pages. Off by default:
    /// every flush allocates the next batch fresh, and clearing 2 MiB pages for it took a third
    /// of the worker's CPU for no gain in throughput (BENCHMARKS.md). Linux only.
    pub transparent_huge_pages: bool,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            flush_interval_ms: 1_000,
            max_pending_records: 200_000,
            dedup_horizon_secs: 3_600,
            dedup_grace_secs: costline_core::dedup::DEFAULT_GRACE_SECS,
            max_clock_skew_secs: 300,
            transparent_huge_pages: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, Default, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PricingConfig {
    /// Your own price file (same format as `schemas/prices.toml`): its rows replace built-in
    /// rows with the same provider, model and effective date, and add the others.
    pub override_file: Option<PathBuf>,
    /// Months whose invoices are closed (`"2026-10"`): `costline reprice` changes no cost in
    /// them without `--force`.
    pub closed_months: Vec<String>,
}

impl PricingConfig {
    /// The closed months as `(year, month)`.
    pub fn closed_months(&self) -> anyhow::Result<Vec<(i32, u32)>> {
        self.closed_months
            .iter()
            .map(|text| {
                chrono::NaiveDate::parse_from_str(&format!("{text}-01"), "%Y-%m-%d")
                    .ok()
                    .filter(|_| text.len() == 7)
                    .map(|date| (chrono::Datelike::year(&date), chrono::Datelike::month(&date)))
                    .ok_or_else(|| {
                        anyhow::anyhow!("config key `pricing.closed_months`: `{text}` is not a month (YYYY-MM)")
                    })
            })
            .collect()
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of `/metrics`, `/healthz`, `/readyz`, the budget API and HTTP ingest (events and
    /// OTLP traces).
    /// Loopback by default; any other address needs a token (or `allow_unauthenticated`).
    pub listen: String,
    /// Largest request body `POST /v1/events` and `POST /v1/traces` accept (a gzip body also
    /// unpacked).
    pub max_body_bytes: usize,
    /// Most events in one `POST /v1/events` batch, and spans in one `POST /v1/traces` request.
    pub max_batch_events: usize,
    /// File holding the bearer token of the API, ingest and dashboard data (first line).
    /// Alternatively set `COSTLINE_HTTP_TOKEN`.
    pub token_file: Option<PathBuf>,
    /// Serve without a token on an address other than loopback (127.0.0.0/8, ::1).
    pub allow_unauthenticated: bool,
    /// Longest wait for a request's headers, and for the next request on an idle connection;
    /// the connection is then closed.
    pub header_timeout_ms: u64,
    /// Longest pause while a request body arrives; the request is then answered 408.
    pub body_timeout_ms: u64,
    /// Longest time from a request's headers to its answer, body included; then 408.
    pub request_timeout_ms: u64,
    /// Most requests to the token-protected endpoints handled at once; more are answered 503
    /// at once. `/metrics`, `/healthz`, `/readyz` and the dashboard page are not counted.
    pub max_concurrent_requests: usize,
    /// After SIGTERM, how long requests under way may still finish before the server stops.
    pub shutdown_grace_ms: u64,
    #[serde(skip)]
    pub token: Option<Secret>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:9464".into(),
            max_body_bytes: 10 << 20,
            max_batch_events: 10_000,
            token_file: None,
            allow_unauthenticated: false,
            header_timeout_ms: 5_000,
            body_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            max_concurrent_requests: 256,
            shutdown_grace_ms: 5_000,
            token: None,
        }
    }
}

/// How `POST /v1/traces` turns an OpenTelemetry span into a usage event (docs/contract.md §6).
/// Each key lists attribute names tried in order, on the span and then on its resource; the
/// first one present gives the field.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// Attributes holding `externalRequestId`; a span with none of them gets its trace id and
    /// span id in hex (`<trace>-<span>`), so that an exporter's retry of the same span is a
    /// duplicate. Setting one on every attempt of a request makes retries (`attempt` > 1) count
    /// as one request.
    pub request_id_attributes: Vec<String>,
    /// Attributes holding `attempt` (an integer, 1 for the first call); none present: 1.
    pub attempt_attributes: Vec<String>,
    /// Attributes holding `endpointTag` (required: a span without one is rejected).
    pub endpoint_tag_attributes: Vec<String>,
    /// Attributes holding `promptVersion`.
    pub prompt_version_attributes: Vec<String>,
    /// Attributes holding `userId` (the tenant).
    pub tenant_attributes: Vec<String>,
    /// Attributes holding `environment`.
    pub environment_attributes: Vec<String>,
    /// Attributes holding `dataMode` (`real`, `test` or `demo`).
    pub data_mode_attributes: Vec<String>,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        let names = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
        OtlpConfig {
            request_id_attributes: names(&["costline.request_id"]),
            attempt_attributes: names(&["costline.attempt"]),
            endpoint_tag_attributes: names(&["costline.endpoint_tag"]),
            prompt_version_attributes: names(&["costline.prompt_version"]),
            tenant_attributes: names(&["enduser.id"]),
            environment_attributes: names(&["deployment.environment.name", "deployment.environment"]),
            data_mode_attributes: names(&["costline.data_mode"]),
        }
    }
}

impl OtlpConfig {
    /// Every key with its attribute names, for validation.
    fn keys(&self) -> [(&'static str, &[String]); 7] {
        [
            ("otlp.request_id_attributes", &self.request_id_attributes),
            ("otlp.attempt_attributes", &self.attempt_attributes),
            ("otlp.endpoint_tag_attributes", &self.endpoint_tag_attributes),
            ("otlp.prompt_version_attributes", &self.prompt_version_attributes),
            ("otlp.tenant_attributes", &self.tenant_attributes),
            ("otlp.environment_attributes", &self.environment_attributes),
            ("otlp.data_mode_attributes", &self.data_mode_attributes),
        ]
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// How log lines are written.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `costline=debug,rdkafka=warn`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Text, level: "info".into() }
    }
}

impl Config {
    /// Reads `path` (if given), applies environment overrides, loads secrets and validates.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let (text, source) = match path {
            Some(path) => (
                std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?,
                path.display().to_string(),
            ),
            None => (String::new(), "(defaults)".to_string()),
        };
        let env: Vec<(String, String)> = std::env::vars().collect();
        Config::from_parts(&text, &source, &env)
    }

    fn from_parts(text: &str, source: &str, env: &[(String, String)]) -> anyhow::Result<Config> {
        // The file alone first: its errors then carry the line and column.
        toml::from_str::<Config>(text).map_err(|e| anyhow::anyhow!("{source}: {}", e.to_string().trim()))?;
        let mut table: toml::Table = toml::from_str(text).map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
        for (name, value) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let Some((section, key)) = rest.split_once("__") else {
                continue;
            };
            let (section, key) = (section.to_lowercase(), key.to_lowercase());
            let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(value.clone()));
            let section_table = table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .with_context(|| format!("environment variable {name}: `{section}` is not a section"))?;
            section_table.insert(key, parsed);
        }
        let mut config: Config = Config::deserialize(toml::Value::Table(table))
            .map_err(|e| anyhow::anyhow!("{source} (with COSTLINE_* overrides): {}", e.to_string().trim()))?;
        config.clickhouse.password = load_password(&config.clickhouse, env)?;
        config.kafka.librdkafka_secrets = load_librdkafka_secrets(&config.kafka, env)?;
        load_webhook_secrets(&mut config.webhooks, env)?;
        config.http.token = load_http_token(&config.http, env)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        fn require(ok: bool, key: &str, rule: &str) -> anyhow::Result<()> {
            if ok {
                Ok(())
            } else {
                bail!("config key `{key}` {rule}")
            }
        }
        require(!self.kafka.brokers.trim().is_empty(), "kafka.brokers", "must not be empty")?;
        self.pricing.closed_months()?;
        require(!self.kafka.topic.is_empty(), "kafka.topic", "must not be empty")?;
        require(!self.kafka.group_id.is_empty(), "kafka.group_id", "must not be empty")?;
        require(
            self.kafka.dead_letter_topic != self.kafka.topic,
            "kafka.dead_letter_topic",
            "must differ from kafka.topic",
        )?;
        require(
            !self.kafka.librdkafka.contains_key("partitioner"),
            "kafka.librdkafka.partitioner",
            "is set by `kafka.partitioner`; set that key instead",
        )?;
        let message_max_bytes = self.kafka.dead_letter_limit()?;
        require(
            (1024..=message_max_bytes.saturating_sub(DEAD_LETTER_HEADER_ROOM))
                .contains(&self.kafka.dead_letter_max_payload_bytes),
            "kafka.dead_letter_max_payload_bytes",
            &format!(
                "must be between 1024 and {} (librdkafka's message.max.bytes {message_max_bytes} less {DEAD_LETTER_HEADER_ROOM} \
                 for headers)",
                message_max_bytes.saturating_sub(DEAD_LETTER_HEADER_ROOM)
            ),
        )?;
        require(
            (1_000..=3_600_000).contains(&self.kafka.session_timeout_ms),
            "kafka.session_timeout_ms",
            "must be between 1000 and 3600000",
        )?;
        require(
            self.kafka.max_poll_interval_ms >= self.kafka.session_timeout_ms,
            "kafka.max_poll_interval_ms",
            "must be at least kafka.session_timeout_ms",
        )?;
        require(
            self.clickhouse.url.starts_with("http://") || self.clickhouse.url.starts_with("https://"),
            "clickhouse.url",
            "must start with http:// or https://",
        )?;
        require(
            !self.clickhouse.database.is_empty()
                && self.clickhouse.database.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "clickhouse.database",
            "must be a plain identifier (letters, digits, _)",
        )?;
        require(self.clickhouse.insert_timeout_secs >= 1, "clickhouse.insert_timeout_secs", "must be at least 1")?;
        match &self.clickhouse.cluster {
            Some(name) => {
                require(
                    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "clickhouse.cluster",
                    "must be a plain identifier (letters, digits, _)",
                )?;
                require(
                    !self.clickhouse.shards.is_empty()
                        && self.clickhouse.shards.iter().all(|replicas| {
                            !replicas.is_empty()
                                && replicas.iter().all(|url| url.starts_with("http://") || url.starts_with("https://"))
                        }),
                    "clickhouse.shards",
                    "must list each shard's replicas as http(s) URLs, at least one shard of at least one replica",
                )?;
            }
            None => require(self.clickhouse.shards.is_empty(), "clickhouse.shards", "needs clickhouse.cluster")?,
        }
        require(
            (1..=64).contains(&self.clickhouse.insert_streams),
            "clickhouse.insert_streams",
            "must be between 1 and 64",
        )?;
        require(self.pipeline.flush_interval_ms >= 100, "pipeline.flush_interval_ms", "must be at least 100")?;
        require(self.pipeline.max_pending_records >= 1, "pipeline.max_pending_records", "must be at least 1")?;
        require(self.pipeline.dedup_horizon_secs >= 1, "pipeline.dedup_horizon_secs", "must be at least 1")?;
        // A restart rebuilds the dedup memory from `usage_events` as far back as an entry is kept.
        let kept_secs = u64::from(self.pipeline.dedup_horizon_secs) + u64::from(self.pipeline.dedup_grace_secs);
        require(
            self.clickhouse.retention_days == 0 || u64::from(self.clickhouse.retention_days) * 86_400 > kept_secs,
            "clickhouse.retention_days",
            "must be 0 (keep everything) or cover pipeline.dedup_horizon_secs + pipeline.dedup_grace_secs",
        )?;
        // A record time bounded at now + skew is followed by true ones up to the skew earlier:
        // the grace must cover that much running backwards.
        require(
            self.pipeline.max_clock_skew_secs <= self.pipeline.dedup_grace_secs,
            "pipeline.max_clock_skew_secs",
            "must be at most pipeline.dedup_grace_secs",
        )?;
        require(
            self.http.listen.parse::<SocketAddr>().is_ok(),
            "http.listen",
            "must be an address like 127.0.0.1:9464",
        )?;
        let http = &self.http;
        for (key, value) in [
            ("http.header_timeout_ms", http.header_timeout_ms),
            ("http.body_timeout_ms", http.body_timeout_ms),
            ("http.request_timeout_ms", http.request_timeout_ms),
        ] {
            require((100..=3_600_000).contains(&value), key, "must be between 100 and 3600000")?;
        }
        require(http.shutdown_grace_ms <= 600_000, "http.shutdown_grace_ms", "must be at most 600000")?;
        require(
            (1..=65_536).contains(&http.max_concurrent_requests),
            "http.max_concurrent_requests",
            "must be between 1 and 65536",
        )?;
        require(http.max_body_bytes >= 1, "http.max_body_bytes", "must be at least 1")?;
        for (key, names) in self.otlp.keys() {
            require(names.iter().all(|name| !name.trim().is_empty()), key, "must not list an empty attribute name")?;
        }
        self.validate_governance()?;
        if let Some(path) = &self.pricing.override_file {
            require(
                path.is_file(),
                "pricing.override_file",
                &format!("names a file that does not exist: {}", path.display()),
            )?;
        }
        Ok(())
    }
}

impl Config {
    /// A worker serves the API and ingest on `http.listen`: on an address other than loopback
    /// (127.0.0.0/8, ::1) it needs a token, unless `http.allow_unauthenticated` says so.
    /// Checked by `run` and `config check`, not at every load: one-shot commands (`migrate`,
    /// `produce`) serve nothing, and the container image listens on all interfaces.
    pub fn validate_http_exposure(&self) -> anyhow::Result<()> {
        let listen: SocketAddr =
            self.http.listen.parse().with_context(|| format!("config key `http.listen`: {:?}", self.http.listen))?;
        if listen.ip().is_loopback() || self.http.token.is_some() || self.http.allow_unauthenticated {
            return Ok(());
        }
        bail!(
            "config key `http.listen` is {listen}, not a loopback address, and no token is set: set \
             COSTLINE_HTTP_TOKEN or `http.token_file`, or `http.allow_unauthenticated = true` to serve the API and \
             ingest to anyone who can reach it"
        )
    }

    fn validate_governance(&self) -> anyhow::Result<()> {
        self.alerts.time_zone.parse::<chrono_tz::Tz>().map_err(|_| {
            anyhow::anyhow!("config key `alerts.time_zone` must be an IANA time zone (got {:?})", self.alerts.time_zone)
        })?;
        if self.alerts.evaluate_interval_ms < 100 {
            bail!("config key `alerts.evaluate_interval_ms` must be at least 100");
        }
        let (spike, drift) = (&self.alerts.cost_spike, &self.alerts.config_drift);
        if spike.factor.is_nan() || spike.factor <= 1.0 {
            bail!("config key `alerts.cost_spike.factor` must be above 1 (a spike is above the average)");
        }
        if !(1..=spike.trailing_hours).contains(&spike.min_history_hours) {
            bail!("config key `alerts.cost_spike.min_history_hours` must be between 1 and `alerts.cost_spike.trailing_hours`");
        }
        if !(1..=drift.lookback_hours).contains(&drift.min_history_hours) {
            bail!("config key `alerts.config_drift.min_history_hours` must be between 1 and `alerts.config_drift.lookback_hours`");
        }
        let mut webhook_ids = std::collections::BTreeSet::new();
        for (i, hook) in self.webhooks.iter().enumerate() {
            if !webhook_ids.insert(hook.id.as_str()) {
                bail!("config key `webhooks[{i}].id`: {:?} is used twice", hook.id);
            }
            if !(hook.url.starts_with("http://") || hook.url.starts_with("https://")) {
                bail!("config key `webhooks[{i}].url` must start with http:// or https://");
            }
            // The parser's message never quotes the URL, which may hold a token.
            if let Err(e) = reqwest::Url::parse(&hook.url) {
                bail!("config key `webhooks[{i}].url` is not a valid URL: {e}");
            }
            if hook.timeout_ms == 0 {
                bail!("config key `webhooks[{i}].timeout_ms` must be at least 1");
            }
        }
        if self.alerts.delivery_batch == 0 {
            bail!("config key `alerts.delivery_batch` must be at least 1");
        }
        if !(1..=64).contains(&self.alerts.delivery_concurrency) {
            bail!("config key `alerts.delivery_concurrency` must be between 1 and 64");
        }
        // Bounded so that one evaluation's alert ids stay far below ClickHouse's query size.
        if !(1..=1_000).contains(&self.alerts.max_alerts_per_rule) {
            bail!("config key `alerts.max_alerts_per_rule` must be between 1 and 1000");
        }
        let check_hooks = |key: String, hooks: &[String]| -> anyhow::Result<()> {
            match hooks.iter().find(|h| !webhook_ids.contains(h.as_str())) {
                Some(missing) => bail!("config key `{key}` names webhook {missing:?}, which is not configured"),
                None => Ok(()),
            }
        };
        check_hooks("alerts.webhooks".into(), &self.alerts.webhooks)?;
        let mut budget_ids = std::collections::BTreeSet::new();
        for (i, budget) in self.budgets.iter().enumerate() {
            if budget.id.is_empty() || !budget_ids.insert(budget.id.as_str()) {
                bail!("config key `budgets[{i}].id` must be unique and not empty");
            }
            check_hooks(format!("budgets[{i}].webhooks"), &budget.webhooks)?;
            self.budget(i)?;
        }
        Ok(())
    }

    /// The `i`-th budget, validated.
    pub fn budget(&self, i: usize) -> anyhow::Result<costline_core::budget::Budget> {
        use costline_core::budget::{Budget, Period, Scope, TagMatch};
        let b = &self.budgets[i];
        let period = match b.period {
            BudgetPeriod::Day => Period::Day,
            BudgetPeriod::Week => Period::Week,
            BudgetPeriod::Month => Period::Month,
        };
        let zone_name = b.time_zone.as_deref().unwrap_or(&self.alerts.time_zone);
        let zone = zone_name
            .parse::<chrono_tz::Tz>()
            .map_err(|_| anyhow::anyhow!("config key `budgets[{i}].time_zone` must be an IANA time zone"))?;
        let limit = costline_core::PicoUsd::parse_scaled(&b.limit_usd, 12, false)
            .map_err(|e| anyhow::anyhow!("config key `budgets[{i}].limit_usd` {e}"))?;
        if limit <= 0 {
            bail!("config key `budgets[{i}].limit_usd` must be more than 0");
        }
        let mut thresholds = b.thresholds.clone();
        thresholds.sort_unstable();
        thresholds.dedup();
        if thresholds.is_empty() || thresholds.iter().any(|&t| t == 0 || t > 1000) {
            bail!("config key `budgets[{i}].thresholds` must be percentages from 1 to 1000");
        }
        let any = |v: &Option<String>| v.as_deref().filter(|v| *v != "*").map(str::to_string);
        let data_mode = match b.scope.data_mode.as_deref() {
            None => Some(costline_core::DataMode::Real),
            Some("*") => None,
            Some(mode) => Some(costline_core::DataMode::parse(mode).ok_or_else(|| {
                anyhow::anyhow!("config key `budgets[{i}].scope.data_mode` must be real, test, demo or *")
            })?),
        };
        let scope = Scope {
            tenant: any(&b.scope.tenant),
            endpoint_tag: any(&b.scope.endpoint_tag).map(|t| TagMatch::parse(&t)),
            prompt_version: b.scope.prompt_version.clone(),
            provider: any(&b.scope.provider).map(|p| p.to_lowercase()),
            model: any(&b.scope.model),
            environment: match b.scope.environment.as_deref() {
                None => Some("prod".into()),
                Some("*") => None,
                Some(env) => Some(env.to_string()),
            },
            data_mode,
        };
        Ok(Budget {
            id: b.id.clone(),
            scope,
            period,
            zone,
            limit: costline_core::PicoUsd(limit),
            thresholds,
            webhooks: b.webhooks.clone(),
            on_exceeded: match b.on_exceeded {
                OnExceededConfig::Warn => costline_core::budget::OnExceeded::Warn,
                OnExceededConfig::Block => costline_core::budget::OnExceeded::Block,
            },
        })
    }
}

fn load_librdkafka_secrets(config: &KafkaConfig, env: &[(String, String)]) -> anyhow::Result<BTreeMap<String, Secret>> {
    let mut secrets = BTreeMap::new();
    for (property, variable) in &config.librdkafka_secret_env {
        let value = env.iter().find(|(name, _)| name == variable).map(|(_, v)| v.clone()).with_context(|| {
            format!(
                "config key `kafka.librdkafka_secret_env.\"{property}\"`: environment variable {variable} is not set"
            )
        })?;
        secrets.insert(property.clone(), Secret::new(value));
    }
    for (property, path) in &config.librdkafka_secret_files {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!("config key `kafka.librdkafka_secret_files.\"{property}\"`: cannot read {}", path.display())
        })?;
        secrets.insert(property.clone(), Secret::new(text.lines().next().unwrap_or_default().to_string()));
    }
    if let Some(property) = secrets.keys().find(|property| config.librdkafka.contains_key(*property)) {
        bail!("config key `kafka.librdkafka.\"{property}\"` is also given as a secret; give it once");
    }
    Ok(secrets)
}

/// Each webhook's secret from the environment variable its format's key names (`secret_env`:
/// the HMAC secret; `routing_key_env`: PagerDuty's routing key). A missing or empty one is
/// refused (an empty HMAC key lets anyone forge a valid signature), and so is a key the format
/// does not use (a Slack or PagerDuty webhook is not signed).
fn load_webhook_secrets(webhooks: &mut [WebhookConfig], env: &[(String, String)]) -> anyhow::Result<()> {
    for (i, hook) in webhooks.iter_mut().enumerate() {
        let needed = hook.format.secret_key();
        for (key, value) in [("secret_env", &hook.secret_env), ("routing_key_env", &hook.routing_key_env)] {
            if value.is_some() && needed != Some(key) {
                bail!("config key `webhooks[{i}].{key}` does not apply to the {} format", hook.format.name());
            }
        }
        let Some(key) = needed else { continue };
        let variable = if key == "secret_env" { &hook.secret_env } else { &hook.routing_key_env };
        let Some(variable) = variable else {
            bail!("config key `webhooks[{i}].{key}` is required by the {} format", hook.format.name());
        };
        let Some((_, value)) = env.iter().find(|(name, _)| name == variable) else {
            bail!("config key `webhooks[{i}].{key}`: environment variable {variable} is not set");
        };
        if value.is_empty() {
            let why = match hook.format {
                WebhookFormat::Costline => "an empty HMAC secret would let anyone sign alerts",
                _ => "PagerDuty refuses events without a routing key",
            };
            bail!("config key `webhooks[{i}].{key}`: environment variable {variable} is empty; {why}");
        }
        hook.secret = Some(Secret::new(value.clone()));
    }
    Ok(())
}

/// The bearer token from `http.token_file` (its first line) or `COSTLINE_HTTP_TOKEN`; an empty
/// one from the environment counts as unset, an empty file is an error.
fn load_http_token(config: &HttpConfig, env: &[(String, String)]) -> anyhow::Result<Option<Secret>> {
    if let Some(path) = &config.token_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("config key `http.token_file`: cannot read {}", path.display()))?;
        let token = text.lines().next().unwrap_or_default().trim();
        if token.is_empty() {
            bail!("config key `http.token_file`: the first line of {} is empty", path.display());
        }
        return Ok(Some(Secret::new(token.to_string())));
    }
    Ok(env.iter().find(|(name, v)| name == "COSTLINE_HTTP_TOKEN" && !v.is_empty()).map(|(_, v)| Secret::new(v.clone())))
}

fn load_password(config: &ClickHouseConfig, env: &[(String, String)]) -> anyhow::Result<Option<Secret>> {
    if let Some(path) = &config.password_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("config key `clickhouse.password_file`: cannot read {}", path.display()))?;
        return Ok(Some(Secret::new(text.lines().next().unwrap_or_default().to_string())));
    }
    Ok(env.iter().find(|(name, _)| name == "COSTLINE_CLICKHOUSE_PASSWORD").map(|(_, v)| Secret::new(v.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_file_and_env_layer() {
        let config = Config::from_parts(
            "[kafka]\ntopic = \"t\"\n[pipeline]\nflush_interval_ms = 500\n",
            "c.toml",
            &env(&[
                ("COSTLINE_KAFKA__BROKERS", "127.0.0.1:1"),
                ("COSTLINE_PIPELINE__DEDUP_HORIZON_SECS", "60"),
                ("COSTLINE_STATE_DIR", "/x"),
            ]),
        )
        .unwrap();
        assert_eq!(config.kafka.topic, "t");
        assert_eq!(config.kafka.brokers, "127.0.0.1:1");
        assert_eq!(config.pipeline.flush_interval_ms, 500);
        assert_eq!(config.pipeline.dedup_horizon_secs, 60);
        assert_eq!(config.clickhouse.database, "costline");
        assert!(!config.pipeline.transparent_huge_pages);
        let on = env(&[("COSTLINE_PIPELINE__TRANSPARENT_HUGE_PAGES", "true")]);
        assert!(Config::from_parts("", "c.toml", &on).unwrap().pipeline.transparent_huge_pages);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_parts("[kafka]\nbrokerz = \"x\"\n", "c.toml", &[]).unwrap_err().to_string();
        assert!(err.contains("unknown field `brokerz`"), "{err}");
        let err = Config::from_parts("", "c.toml", &env(&[("COSTLINE_PIPELINE__FLUSH_INTERVAL_MS", "abc")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid type"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = Config::from_parts("[pipeline]\nflush_interval_ms = 5\n", "c.toml", &[]).unwrap_err().to_string();
        assert_eq!(err, "config key `pipeline.flush_interval_ms` must be at least 100");
        let err = Config::from_parts("[http]\nlisten = \"nowhere\"\n", "c.toml", &[]).unwrap_err().to_string();
        assert_eq!(err, "config key `http.listen` must be an address like 127.0.0.1:9464");
        let alerts = |toml: &str| Config::from_parts(toml, "c.toml", &[]).map_err(|e| e.to_string());
        assert_eq!(
            alerts("[alerts.cost_spike]\nmin_history_hours = 25\n").unwrap_err(),
            "config key `alerts.cost_spike.min_history_hours` must be between 1 and `alerts.cost_spike.trailing_hours`"
        );
        assert_eq!(
            alerts("[alerts.cost_spike]\nfactor = 1.0\n").unwrap_err(),
            "config key `alerts.cost_spike.factor` must be above 1 (a spike is above the average)"
        );
        assert!(alerts("[alerts.cost_spike]\nmin_history_hours = 24\nfactor = 1.5\n").is_ok());
        assert_eq!(
            alerts("[alerts.config_drift]\nmin_history_hours = 0\n").unwrap_err(),
            "config key `alerts.config_drift.min_history_hours` must be between 1 and `alerts.config_drift.lookback_hours`"
        );
    }

    #[test]
    fn closed_sets_are_enums_whose_errors_name_the_key() {
        let text = "[[budgets]]\nid = \"b\"\nperiod = \"yearly\"\nlimit_usd = \"5\"\n";
        let err = Config::from_parts(text, "c.toml", &[]).unwrap_err().to_string();
        assert!(
            err.contains("line 3") && err.contains("unknown variant `yearly`, expected one of `day`, `week`, `month`"),
            "{err}"
        );
        let err = Config::from_parts("[log]\nformat = \"xml\"\n", "c.toml", &[]).unwrap_err().to_string();
        assert!(err.contains("unknown variant `xml`, expected `text` or `json`"), "{err}");
        let json = Config::from_parts("", "c.toml", &env(&[("COSTLINE_LOG__FORMAT", "json")])).unwrap();
        assert_eq!(json.log.format, LogFormat::Json);
    }

    #[test]
    fn errors_name_the_key_and_the_line() {
        let err = Config::from_parts("[kafka]\ntopic = \"t\"\nsession_timeout_ms = \"soon\"\n", "costline.toml", &[])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("costline.toml"), "{err}");
        assert!(err.contains("line 3, column 22"), "{err}");
        assert!(err.contains("invalid type: string \"soon\", expected u32"), "{err}");
    }

    #[test]
    fn a_missing_webhook_secret_is_named() {
        let text = "[[webhooks]]\nid = \"oncall\"\nurl = \"http://127.0.0.1:9/x\"\nsecret_env = \"COSTLINE_TEST_NO_SUCH_SECRET\"\n";
        let err = Config::from_parts(text, "c.toml", &[]).unwrap_err().to_string();
        assert_eq!(
            err,
            "config key `webhooks[0].secret_env`: environment variable COSTLINE_TEST_NO_SUCH_SECRET is not set"
        );
    }

    #[test]
    fn librdkafka_secrets_come_from_the_environment_or_a_file_and_never_print() {
        let file = std::env::temp_dir().join(format!("costline-config-test-{}", std::process::id()));
        std::fs::write(&file, "from-file\nignored\n").unwrap();
        let text = format!(
            "[kafka.librdkafka]\n\"security.protocol\" = \"SASL_SSL\"\n\"ssl.key.password\" = \"inline-secret\"\n\
             [kafka.librdkafka_secret_env]\n\"sasl.password\" = \"KAFKA_PW\"\n\
             [kafka.librdkafka_secret_files]\n\"sasl.oauthbearer.client.secret\" = {:?}\n",
            file.display().to_string()
        );
        let config = Config::from_parts(&text, "c.toml", &env(&[("KAFKA_PW", "from-env")])).unwrap();
        let properties = config.kafka.client_properties();
        for (name, value) in [
            ("security.protocol", "SASL_SSL"),
            ("sasl.password", "from-env"),
            ("sasl.oauthbearer.client.secret", "from-file"),
        ] {
            assert!(properties.contains(&(name.to_string(), value.to_string())), "{name} in {properties:?}");
        }
        let printed = toml::to_string_pretty(&config).unwrap();
        for secret in ["inline-secret", "from-env", "from-file"] {
            assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
        }
        assert!(printed.contains("\"ssl.key.password\" = \"***\""), "{printed}");
        assert!(printed.contains("SASL_SSL"), "{printed}");
        let hook = "[[webhooks]]\nid = \"slack\"\nurl = \"https://hooks.example.com/services/T0/B0/s3cr3t?token=x\"\nsecret_env = \"H\"\n";
        let config = Config::from_parts(hook, "c.toml", &env(&[("H", "k")])).unwrap();
        let printed = toml::to_string_pretty(&config).unwrap();
        assert!(
            printed.contains("url = \"https://hooks.example.com:443/…\"") && !printed.contains("s3cr3t"),
            "{printed}"
        );
        let err = Config::from_parts(&text, "c.toml", &[]).unwrap_err().to_string();
        assert_eq!(
            err,
            "config key `kafka.librdkafka_secret_env.\"sasl.password\"`: environment variable KAFKA_PW is not set"
        );
        std::fs::remove_file(&file).unwrap();
    }

    #[test]
    fn an_empty_webhook_secret_is_refused() {
        let text = "[[webhooks]]\nid = \"oncall\"\nurl = \"http://127.0.0.1:9/x\"\nsecret_env = \"HOOK_SECRET\"\n";
        let err = Config::from_parts(text, "c.toml", &env(&[("HOOK_SECRET", "")])).unwrap_err().to_string();
        assert_eq!(
            err,
            "config key `webhooks[0].secret_env`: environment variable HOOK_SECRET is empty; an empty HMAC secret \
             would let anyone sign alerts"
        );
        let config = Config::from_parts(text, "c.toml", &env(&[("HOOK_SECRET", "s3cret")])).unwrap();
        assert_eq!(config.webhooks[0].secret.as_ref().map(Secret::expose), Some("s3cret"));
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn each_webhook_format_takes_only_the_secret_it_uses() {
        let hook = |extra: &str| format!("[[webhooks]]\nid = \"h\"\nurl = \"http://127.0.0.1:9/x\"\n{extra}");
        let vars = env(&[("HOOK_SECRET", "s3cret"), ("PD_KEY", "R0UTING")]);
        let err = |extra: &str| Config::from_parts(&hook(extra), "c.toml", &vars).unwrap_err().to_string();
        assert_eq!(err(""), "config key `webhooks[0].secret_env` is required by the costline format");
        assert_eq!(
            err("format = \"slack\"\nsecret_env = \"HOOK_SECRET\"\n"),
            "config key `webhooks[0].secret_env` does not apply to the slack format"
        );
        assert_eq!(
            err("format = \"pagerduty\"\nsecret_env = \"HOOK_SECRET\"\n"),
            "config key `webhooks[0].secret_env` does not apply to the pagerduty format"
        );
        assert_eq!(
            err("format = \"pagerduty\"\n"),
            "config key `webhooks[0].routing_key_env` is required by the pagerduty format"
        );
        let empty = Config::from_parts(
            &hook("format = \"pagerduty\"\nrouting_key_env = \"EMPTY\"\n"),
            "c.toml",
            &env(&[("EMPTY", "")]),
        );
        assert!(empty.unwrap_err().to_string().ends_with("is empty; PagerDuty refuses events without a routing key"));

        let slack = Config::from_parts(&hook("format = \"slack\"\n"), "c.toml", &vars).unwrap();
        assert!(slack.webhooks[0].secret.is_none() && slack.webhooks[0].sender().is_ok());
        let pagerduty =
            Config::from_parts(&hook("format = \"pagerduty\"\nrouting_key_env = \"PD_KEY\"\n"), "c.toml", &vars)
                .unwrap();
        assert_eq!(pagerduty.webhooks[0].secret.as_ref().map(Secret::expose), Some("R0UTING"));
        let printed = toml::to_string_pretty(&pagerduty).unwrap();
        assert!(printed.contains("format = \"pagerduty\"") && !printed.contains("R0UTING"), "{printed}");
    }

    #[test]
    fn a_bad_webhook_url_is_named_without_its_text() {
        let text = "[[webhooks]]\nid = \"oncall\"\nurl = \"http://user:tok3n@[::1/x\"\nsecret_env = \"HOOK_SECRET\"\n";
        let err = Config::from_parts(text, "c.toml", &env(&[("HOOK_SECRET", "s")])).unwrap_err().to_string();
        assert!(err.starts_with("config key `webhooks[0].url` is not a valid URL"), "{err}");
        assert!(!err.contains("tok3n"), "{err}");
    }

    #[test]
    fn http_limits_name_the_key() {
        let err = |toml: &str| Config::from_parts(toml, "c.toml", &[]).unwrap_err().to_string();
        assert_eq!(
            err("[http]\nrequest_timeout_ms = 0\n"),
            "config key `http.request_timeout_ms` must be between 100 and 3600000"
        );
        assert_eq!(
            err("[http]\nheader_timeout_ms = 50\n"),
            "config key `http.header_timeout_ms` must be between 100 and 3600000"
        );
        assert_eq!(
            err("[http]\nbody_timeout_ms = 0\n"),
            "config key `http.body_timeout_ms` must be between 100 and 3600000"
        );
        assert_eq!(
            err("[http]\nmax_concurrent_requests = 0\n"),
            "config key `http.max_concurrent_requests` must be between 1 and 65536"
        );
        assert_eq!(
            err("[http]\nshutdown_grace_ms = 900000\n"),
            "config key `http.shutdown_grace_ms` must be at most 600000"
        );
        let defaults = Config::from_parts("", "c.toml", &[]).unwrap().http;
        assert_eq!(
            (defaults.header_timeout_ms, defaults.request_timeout_ms, defaults.max_concurrent_requests),
            (5_000, 30_000, 256)
        );
    }

    #[test]
    fn otlp_attribute_lists_come_from_the_file_or_the_environment_and_name_their_key() {
        let err = |toml: &str| Config::from_parts(toml, "c.toml", &[]).unwrap_err().to_string();
        assert_eq!(
            err("[otlp]\ntenant_attributes = [\"app.tenant\", \" \"]\n"),
            "config key `otlp.tenant_attributes` must not list an empty attribute name"
        );
        let pairs = [("COSTLINE_OTLP__ENDPOINT_TAG_ATTRIBUTES", r#"["app.feature", "costline.endpoint_tag"]"#)];
        let config = Config::from_parts("", "c.toml", &env(&pairs)).unwrap().otlp;
        assert_eq!(config.endpoint_tag_attributes, ["app.feature", "costline.endpoint_tag"]);
        assert_eq!(config.request_id_attributes, ["costline.request_id"]);
    }

    #[test]
    fn a_reachable_listen_address_needs_a_token() {
        let load = |toml: &str, pairs: &[(&str, &str)]| Config::from_parts(toml, "c.toml", &env(pairs)).unwrap();
        for loopback in ["127.0.0.1:9464", "127.1.2.3:9464", "[::1]:9464"] {
            let config = load(&format!("[http]\nlisten = \"{loopback}\"\n"), &[]);
            assert!(config.validate_http_exposure().is_ok(), "{loopback}");
        }
        for exposed in ["0.0.0.0:9464", "10.0.0.7:9464", "[::]:9464", "[::ffff:127.0.0.1]:9464"] {
            let config = load("", &[("COSTLINE_HTTP__LISTEN", exposed)]);
            let err = config.validate_http_exposure().unwrap_err().to_string();
            assert!(err.starts_with("config key `http.listen` is "), "{err}");
            assert!(err.contains("http.allow_unauthenticated"), "{err}");
            let empty_token = load("", &[("COSTLINE_HTTP__LISTEN", exposed), ("COSTLINE_HTTP_TOKEN", "")]);
            assert!(empty_token.validate_http_exposure().is_err(), "{exposed}: an empty token is no token");
            let with_token = load("", &[("COSTLINE_HTTP__LISTEN", exposed), ("COSTLINE_HTTP_TOKEN", "t0k3n")]);
            assert!(with_token.validate_http_exposure().is_ok(), "{exposed}");
            let allowed = load("[http]\nallow_unauthenticated = true\n", &[("COSTLINE_HTTP__LISTEN", exposed)]);
            assert!(allowed.validate_http_exposure().is_ok(), "{exposed}");
        }
    }

    #[test]
    fn the_http_token_comes_from_a_file_or_the_environment_and_never_prints() {
        let path = std::env::temp_dir().join(format!("costline-config-test-token-{}", std::process::id()));
        std::fs::write(&path, "from-file\nignored\n").unwrap();
        let toml = format!("[http]\nlisten = \"0.0.0.0:1\"\ntoken_file = {:?}\n", path.display().to_string());
        let config = Config::from_parts(&toml, "c.toml", &env(&[("COSTLINE_HTTP_TOKEN", "from-env")])).unwrap();
        assert_eq!(config.http.token.as_ref().map(Secret::expose), Some("from-file"));
        assert!(config.validate_http_exposure().is_ok());
        assert!(!format!("{config:?}").contains("from-file"));
        assert!(!toml::to_string(&config).unwrap().contains("from-file"));
        std::fs::write(&path, "\n").unwrap();
        let err = Config::from_parts(&toml, "c.toml", &[]).unwrap_err().to_string();
        assert!(err.starts_with("config key `http.token_file`: the first line of"), "{err}");
        std::fs::remove_file(&path).unwrap();
        let err = Config::from_parts(&toml, "c.toml", &[]).unwrap_err().to_string();
        assert!(err.starts_with("config key `http.token_file`: cannot read"), "{err}");
        let config = Config::from_parts("", "c.toml", &env(&[("COSTLINE_HTTP_TOKEN", "from-env")])).unwrap();
        assert_eq!(config.http.token.as_ref().map(Secret::expose), Some("from-env"));
        assert!(!format!("{config:?}").contains("from-env"));
    }

    #[test]
    fn secrets_never_print() {
        let config = Config::from_parts("", "c.toml", &env(&[("COSTLINE_CLICKHOUSE_PASSWORD", "hunter2")])).unwrap();
        assert_eq!(config.clickhouse.password.as_ref().map(Secret::expose), Some("hunter2"));
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
