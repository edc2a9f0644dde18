//! End to end on real services: generated traffic (duplicates, retries, late and invalid
//! events, an unpriced model, costUsd overrides, unicode tags) published to Tansu, one
//! worker, and ClickHouse's rollups (and the counted attempts, summed) compared with an
//! independent computation, exactly.

mod common;

use std::time::Duration;

use common::expected::Expected;
use common::{assert_totals_exact, wait_until, Setup};

const RECORDS: u64 = 120_000;
/// Fixed virtual start so the traffic is the same on every run.
const START_MS: i64 = 1_790_000_000_000;

#[test]
fn rollups_match_an_independent_computation_exactly() {
    let setup = Setup::new("pipeline");
    let record_file = setup.scratch_file(".jsonl");
    setup.produce(RECORDS, 42, START_MS, &record_file);
    let expected = Expected::from_record_file(&record_file);
    assert_eq!(expected.records, RECORDS);

    let worker = setup.spawn_worker("single");
    setup.wait_accounted(RECORDS, Duration::from_secs(240));
    let (status, body) = worker.http_get("/readyz");
    assert_eq!(status, 200, "readyz: {body}");
    let (_, metrics) = worker.http_get("/metrics");
    let consumed = format!("costline_records_consumed_total {RECORDS}");
    assert!(metrics.contains(&consumed), "{metrics}");
    for name in [
        "costline_insert_duration_seconds_count",
        "costline_flush_duration_seconds_count",
        "costline_window_keys",
        "costline_dedup_memory_bytes",
        "costline_events_rejected_total{reason=\"malformed_json\"}",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics:\n{metrics}");
    }
    // Group state comes from librdkafka's statistics, every 5 s: a lone member is steady.
    wait_until(
        Duration::from_secs(20),
        || worker.metric("costline_consumer_group_rebalances").is_some_and(|n| n >= 1.0).then_some(()),
        || format!("no consumer group statistics in /metrics:\n{metrics}"),
    );
    assert_eq!(worker.metric("costline_consumer_group_unsettled_seconds"), Some(0.0));
    assert_eq!(worker.stop(), 0, "worker did not exit cleanly");

    let expected = assert_totals_exact(&setup, &record_file);
    let total = expected.totals();
    assert!(
        total.duplicates > 1000
            && total.retries > 1000
            && total.unpriced_attempts > 1000
            && total.cache_write_tokens > 0
            && total.cache_write_1h_tokens > 0,
        "traffic mix: {total:?}"
    );
}
