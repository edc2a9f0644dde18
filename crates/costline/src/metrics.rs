//! Prometheus metrics of a worker. Names follow `costline_<noun>_<unit>_total`; labels are
//! bounded (partition, reason code), never a tenant or a request id.

use prometheus::{
    register_histogram_with_registry, register_int_counter_vec_with_registry, register_int_counter_with_registry,
    register_int_gauge_vec_with_registry, register_int_gauge_with_registry, Histogram, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Registry,
};

pub struct Metrics {
    pub registry: Registry,
    pub records_consumed: IntCounter,
    pub events_counted: IntCounter,
    pub events_duplicate: IntCounter,
    pub events_rejected: IntCounterVec,
    pub flushes: IntCounter,
    pub flush_seconds: Histogram,
    pub sink_errors: IntCounter,
    pub fenced_flushes: IntCounter,
    pub partial_flushes: IntCounter,
    pub unfinished_flushes: IntCounter,
    pub dead_letters: IntCounter,
    pub dead_letters_truncated: IntCounter,
    pub dead_letters_undeliverable: IntCounter,
    pub dead_letter_retries: IntCounter,
    pub consume_errors: IntCounter,
    pub pending_records: IntGauge,
    pub dedup_memory_bytes: IntGauge,
    pub dedup_entries: IntGauge,
    pub assigned_partitions: IntGauge,
    pub partition_next_offset: IntGaugeVec,
    pub consumer_lag: IntGaugeVec,
    pub group_unsettled_seconds: IntGauge,
    pub group_rebalances: IntGauge,
    pub insert_seconds: Histogram,
    pub window_keys: IntGauge,
    pub alert_deliveries: IntCounterVec,
    pub alerts_fired: IntCounterVec,
    pub alert_evaluations: IntCounterVec,
    pub otlp_spans: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new_custom(Some("costline".into()), None)?;
        let r = &registry;
        Ok(Metrics {
            records_consumed: register_int_counter_with_registry!("records_consumed_total", "Kafka records read", r)?,
            events_counted: register_int_counter_with_registry!("events_counted_total", "Attempts counted", r)?,
            events_duplicate: register_int_counter_with_registry!(
                "events_duplicate_total",
                "Copies counted as duplicates",
                r
            )?,
            events_rejected: register_int_counter_vec_with_registry!(
                "events_rejected_total",
                "Records rejected, by reason code",
                &["reason"],
                r
            )?,
            flushes: register_int_counter_with_registry!(
                "flushes_total",
                "Flush jobs written to ClickHouse (one per writer lane a flush had rows for)",
                r
            )?,
            flush_seconds: register_histogram_with_registry!(
                "flush_duration_seconds",
                "Time to write one flush, retries included",
                vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
                r
            )?,
            sink_errors: register_int_counter_with_registry!(
                "sink_errors_total",
                "Failed ClickHouse inserts (each retried)",
                r
            )?,
            partial_flushes: register_int_counter_with_registry!(
                "partial_flushes_total",
                "Failed inserts ClickHouse had applied to some tables; their retry wrote only the others",
                r
            )?,
            unfinished_flushes: register_int_counter_with_registry!(
                "unfinished_flushes_total",
                "Flushes a previous owner left half-applied, completed by this worker's replay",
                r
            )?,
            fenced_flushes: register_int_counter_with_registry!(
                "fenced_flushes_total",
                "Flushes dropped unwritten because their partition moved to another worker first",
                r
            )?,
            dead_letters: register_int_counter_with_registry!(
                "dead_letters_total",
                "Records published to the dead-letter topic",
                r
            )?,
            dead_letters_truncated: register_int_counter_with_registry!(
                "dead_letters_truncated_total",
                "Dead letters published with their payload cut to kafka.dead_letter_max_payload_bytes",
                r
            )?,
            dead_letters_undeliverable: register_int_counter_with_registry!(
                "dead_letters_undeliverable_total",
                "Rejected records the dead-letter topic refused for good (kept in rejected_events only)",
                r
            )?,
            dead_letter_retries: register_int_counter_with_registry!(
                "dead_letter_retries_total",
                "Dead-letter deliveries that failed and were retried",
                r
            )?,
            consume_errors: register_int_counter_with_registry!(
                "consume_errors_total",
                "Errors returned by the Kafka consumer",
                r
            )?,
            pending_records: register_int_gauge_with_registry!(
                "pending_records",
                "Records counted but not yet flushed",
                r
            )?,
            dedup_memory_bytes: register_int_gauge_with_registry!(
                "dedup_memory_bytes",
                "Heap held by the dedup indexes",
                r
            )?,
            dedup_entries: register_int_gauge_with_registry!(
                "dedup_entries",
                "Requests remembered by the dedup indexes",
                r
            )?,
            assigned_partitions: register_int_gauge_with_registry!(
                "assigned_partitions",
                "Partitions this worker owns",
                r
            )?,
            partition_next_offset: register_int_gauge_vec_with_registry!(
                "partition_flushed_offset",
                "Next offset of each owned partition that ClickHouse holds everything below",
                &["partition"],
                r
            )?,
            consumer_lag: register_int_gauge_vec_with_registry!(
                "consumer_lag_records",
                "Records behind the partition's high-water mark (librdkafka statistics)",
                &["partition"],
                r
            )?,
            group_unsettled_seconds: register_int_gauge_with_registry!(
                "consumer_group_unsettled_seconds",
                "How long this member's consumer group has been rebalancing (0 when steady; librdkafka statistics)",
                r
            )?,
            group_rebalances: register_int_gauge_with_registry!(
                "consumer_group_rebalances",
                "Rebalances (assign or revoke) this member has been through (librdkafka statistics)",
                r
            )?,
            insert_seconds: register_histogram_with_registry!(
                "insert_duration_seconds",
                "Time of one ClickHouse ledger INSERT attempt",
                vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
                r
            )?,
            window_keys: register_int_gauge_with_registry!(
                "window_keys",
                "Rollup keys (minute × dimensions) not yet flushed",
                r
            )?,
            alert_deliveries: register_int_counter_vec_with_registry!(
                "alert_deliveries_total",
                "Webhook delivery attempts, by result (delivered, retry, refused, gave_up)",
                &["result"],
                r
            )?,
            alerts_fired: register_int_counter_vec_with_registry!(
                "alerts_fired_total",
                "Alerts fired, by kind",
                &["kind"],
                r
            )?,
            alert_evaluations: register_int_counter_vec_with_registry!(
                "alert_evaluations_total",
                "Evaluation passes of budgets and rules, by result (ok, failed)",
                &["result"],
                r
            )?,
            otlp_spans: register_int_counter_vec_with_registry!(
                "otlp_spans_total",
                "Spans received on POST /v1/traces, by outcome (accepted, rejected, ignored: no GenAI usage)",
                &["outcome"],
                r
            )?,
            registry,
        })
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = encoder.encode_utf8(&self.registry.gather(), &mut out) {
            out = format!("# metrics encoding failed: {e}\n");
        }
        out
    }
}
