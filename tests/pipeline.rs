//! End to end on real services: generated traffic (duplicates, retries, late and invalid
//! events, an unpriced model, costUsd overrides, unicode tags) published to Tansu, one
//! worker, and ClickHouse's rollups (and the counted attempts, summed) compared with an
//! independent computation, exactly.

mod common;

use std::time::Duration;

use common::expected::{parse_rollup_rows, Expected, ROLLUP_COLUMNS};
use common::Setup;

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
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !worker.metric("costline_consumer_group_rebalances").is_some_and(|n| n >= 1.0) {
        assert!(std::time::Instant::now() < deadline, "no consumer group statistics in /metrics:\n{metrics}");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(worker.metric("costline_consumer_group_unsettled_seconds"), Some(0.0));
    let log = worker.log();
    assert_eq!(worker.stop(), 0, "worker did not exit cleanly:\n{log}");

    let minutes = parse_rollup_rows(&setup.query(&format!("SELECT {ROLLUP_COLUMNS} FROM usage_minute FORMAT TSV")));
    assert_eq!(minutes.len(), expected.minutes.len(), "number of (minute, dimension set) rows");
    for (dims, want) in &expected.minutes {
        assert_eq!(minutes.get(dims), Some(want), "rollup of {dims:?}");
    }

    let total = expected.totals();
    assert!(
        total.duplicates > 1000
            && total.retries > 1000
            && total.unpriced_attempts > 1000
            && total.cache_write_tokens > 0
            && total.cache_write_1h_tokens > 0,
        "traffic mix: {total:?}"
    );
    for rollup in ["usage_hour", "usage_day"] {
        let sql = format!(
            "SELECT sum(requests), sum(attempts), sum(retries), sum(duplicates), sum(cache_write_1h_tokens), sum(output_tokens), toString(sum(cost_usd)), sum(unpriced_attempts) FROM {rollup} FORMAT TSV"
        );
        let got = setup.query(&sql);
        let want = format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            total.requests,
            total.attempts,
            total.retries,
            total.duplicates,
            total.cache_write_1h_tokens,
            total.output_tokens,
            format_pico(total.cost_pico),
            total.unpriced_attempts
        );
        assert_eq!(got, want, "{rollup} totals");
    }

    let rejected: u64 = setup.query("SELECT count() FROM rejected_events").trim().parse().unwrap();
    assert_eq!(rejected, expected.rejected);
    let counted: u64 = setup.query("SELECT count() FROM usage_events").trim().parse().unwrap();
    assert_eq!(counted, total.attempts);
    let distinct_positions: u64 =
        setup.query("SELECT uniqExact(kafka_partition, kafka_offset) FROM usage_events").trim().parse().unwrap();
    assert_eq!(distinct_positions, counted, "an offset was written twice");
    common::assert_events_sum_to_minutes(&setup, &expected);
}

fn format_pico(pico: i128) -> String {
    format!("{}.{:012}", pico / 1_000_000_000_000, pico % 1_000_000_000_000)
}
