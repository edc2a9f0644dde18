//! ClickHouse outage: ClickHouse is stopped for 25 s while traffic flows. The worker stops
//! consuming (back-pressure), reports not-ready, keeps its memory bounded, retries with
//! backoff, and once ClickHouse is back every record is accounted for exactly once.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{assert_totals_exact, repo_root, wait_producer, Setup};

fn services(action: &str) {
    let status = Command::new("bash")
        .arg(repo_root().join("scripts/services.sh"))
        .args([action, "clickhouse"])
        .status()
        .unwrap();
    assert!(status.success(), "services.sh {action} clickhouse failed");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn clickhouse_down_for_25_seconds_loses_and_doubles_nothing() {
    let mut setup = Setup::new("outage");
    setup.flush_interval_ms = 500;
    let record_file = setup.scratch_file(".jsonl");
    let producer = setup.spawn_producer(200_000, 5_000, 23, 1_790_000_000_000, &record_file);
    let worker = setup.spawn_worker("outage");
    setup.wait_started(20_000, &worker);

    let consumed_at_outage = worker.metric("costline_records_consumed_total").unwrap_or(0.0);
    assert!(consumed_at_outage < 200_000.0, "the outage must hit a worker with records still to count");
    services("stop");
    let outage = Instant::now();
    let mut saw_not_ready = false;
    let mut peak_rss_kib = 0;
    while outage.elapsed() < Duration::from_secs(25) {
        saw_not_ready |= worker.http_get("/readyz").0 == 503;
        peak_rss_kib = peak_rss_kib.max(rss_kib(worker.pid()));
        std::thread::sleep(Duration::from_millis(500));
    }
    services("start");

    assert!(saw_not_ready, "/readyz never reported the outage");
    assert!(peak_rss_kib < 512 * 1024, "worker RSS grew to {peak_rss_kib} KiB during the outage");
    wait_producer(producer, Duration::from_secs(120));
    assert_totals_exact(&setup, &record_file);
    assert_eq!(worker.http_get("/readyz").0, 200, "ready again after the outage");
    let failed_inserts = worker.metric("costline_sink_errors_total").unwrap_or(0.0);
    assert!(failed_inserts > 0.0, "no insert failed during the outage:\n{}", worker.log());
    assert_eq!(worker.stop(), 0);
}
