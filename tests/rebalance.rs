//! Group changes during ingestion: two workers, then a third joins, then two leave (one with
//! SIGTERM, one with SIGKILL), and the last one finishes. Partitions move several times;
//! the totals in ClickHouse equal the independent computation exactly.

mod common;

use std::time::Duration;

use common::{assert_totals_exact, wait_producer, Setup};

#[test]
fn workers_joining_and_leaving_lose_and_double_nothing() {
    let mut setup = Setup::new("rebalance");
    setup.flush_interval_ms = 500;
    let record_file = setup.scratch_file(".jsonl");
    let producer = setup.spawn_producer(200_000, 5_000, 11, 1_790_000_000_000, &record_file);
    let first = setup.spawn_worker("w1");
    let second = setup.spawn_worker("w2");
    std::thread::sleep(Duration::from_secs(12));
    let third = setup.spawn_worker("w3");
    std::thread::sleep(Duration::from_secs(12));
    eprintln!("3 workers; {} records accounted for", setup.records_accounted());
    assert_eq!(first.stop(), 0, "a leaving worker exits cleanly");
    std::thread::sleep(Duration::from_secs(8));
    second.kill9();
    eprintln!("1 worker left; {} records accounted for", setup.records_accounted());
    wait_producer(producer, Duration::from_secs(120));
    assert_totals_exact(&setup, &record_file);
    let workers: u64 = setup.query("SELECT uniqExact(worker) FROM flushes").trim().parse().unwrap();
    assert!(workers >= 3, "partitions should have been written by all three workers, got {workers}");
    assert_eq!(third.stop(), 0);
}
