//! A flush that ClickHouse applies half-way. A fault view is attached to the ledger for a few
//! seconds; ClickHouse 18.16 runs a ledger's views in name order, so every insert then writes
//! `usage_events` and `rejected_events` and fails before the rollups and `flushes`. The worker
//! finds, table by table, what each failed insert wrote and completes only the rest: every
//! table ends exact, none doubled.

mod common;

use std::time::Duration;

use common::{assert_totals_exact, wait_until, Setup};

#[test]
fn a_half_applied_flush_is_completed_not_doubled() {
    let mut setup = Setup::new("partial");
    setup.flush_interval_ms = 300;
    let record_file = setup.scratch_file(".jsonl");
    let producer = setup.spawn_producer(60_000, 4_000, 31, 1_790_000_000_000, &record_file);
    let worker = setup.spawn_worker("partial");
    setup.wait_started(5_000, &worker);
    // Named to run after ledger_events_mv and ledger_rejects_mv, before ledger_rollups_mv.
    setup.query("CREATE TABLE fault_sink (x UInt8) ENGINE = Null");
    setup.query("CREATE MATERIALIZED VIEW ledger_rf_fault TO fault_sink AS SELECT throwIf(next_offset > 0) AS x FROM flush_ledger");
    std::thread::sleep(Duration::from_secs(4));
    setup.query("DROP TABLE ledger_rf_fault");
    common::wait_producer(producer, Duration::from_secs(60));
    assert_totals_exact(&setup, &record_file);

    let hour_total = setup.query("SELECT sum(attempts), toString(sum(cost_usd)) FROM usage_hour FORMAT TSV");
    let minute_total = setup.query("SELECT sum(attempts), toString(sum(cost_usd)) FROM usage_minute FORMAT TSV");
    assert_eq!(hour_total, minute_total, "usage_hour must match usage_minute");
    let partial = worker.metric("costline_partial_flushes_total").unwrap_or(0.0);
    assert!(partial > 0.0, "no half-applied flush was seen:\n{}", worker.log());
    assert_eq!(worker.stop(), 0);
}

/// The same half-applied flush, but the worker that saw it fail is killed before it can
/// complete it: the partition's next owner finds, table by table, what that flush wrote,
/// replays exactly its records and completes only the missing tables.
#[test]
fn a_half_applied_flush_left_by_a_dead_worker_is_completed_by_the_next() {
    let mut setup = Setup::new("partial_dead");
    setup.flush_interval_ms = 300;
    let record_file = setup.scratch_file(".jsonl");
    let producer = setup.spawn_producer(40_000, 4_000, 37, 1_790_000_000_000, &record_file);
    let first = setup.spawn_worker("first");
    setup.wait_started(5_000, &first);
    setup.query("CREATE TABLE fault_sink (x UInt8) ENGINE = Null");
    setup.query("CREATE MATERIALIZED VIEW ledger_rf_fault TO fault_sink AS SELECT throwIf(next_offset > 0) AS x FROM flush_ledger");
    // Wait until the worker has seen a failed flush that wrote some tables, not just a failed
    // one: an insert can also fail before writing anything (one that meets the view half-made).
    wait_until(
        Duration::from_secs(30),
        || first.metric("costline_partial_flushes_total").is_some_and(|n| n > 0.0).then_some(()),
        || format!("no flush was left half-applied under the fault view:\n{}", first.log()),
    );
    let query_ids = first.query_id_prefix();
    let named = format!("SELECT count() FROM flushes WHERE worker = '{}' FORMAT TSV", query_ids.trim_end_matches('-'));
    assert_ne!(setup.query(&named).trim(), "0", "{query_ids} does not name the worker that wrote `flushes`");
    first.kill9();
    // The dead worker's last insert may still be in ClickHouse's hands. It must fail on the
    // fault view: were the view dropped first, that insert would complete the flush itself.
    std::thread::sleep(Duration::from_secs(1));
    let running = format!("SELECT count() FROM system.processes WHERE startsWith(query_id, '{query_ids}') FORMAT TSV");
    wait_until(
        Duration::from_secs(30),
        || (setup.query(&running).trim() == "0").then_some(()),
        || "the killed worker's queries still run in ClickHouse".to_string(),
    );
    assert!(half_applied_events(&setup) > 0, "the half-applied flush was completed before the next owner came");
    setup.query("DROP TABLE ledger_rf_fault");

    let second = setup.spawn_worker("second");
    common::wait_producer(producer, Duration::from_secs(60));
    assert_totals_exact(&setup, &record_file);
    let completed = second.metric("costline_unfinished_flushes_total").unwrap_or(0.0);
    assert!(completed > 0.0, "the next owner completed no half-applied flush:\n{}", second.log());
    assert_eq!(second.stop(), 0);
}

/// Counted attempts in `usage_events` from flushes that `flushes` does not record.
fn half_applied_events(setup: &Setup) -> u64 {
    let sql = "SELECT count() FROM usage_events ANY LEFT JOIN \
               (SELECT kafka_partition, max(next_offset) AS recorded FROM flushes GROUP BY kafka_partition) \
               USING kafka_partition WHERE flush_next_offset > recorded FORMAT TSV";
    let count = setup.query(sql);
    count.trim().parse().unwrap_or_else(|_| panic!("not a count: {count:?}"))
}
