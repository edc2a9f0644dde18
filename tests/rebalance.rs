//! Group changes during ingestion: one worker, a second and a third join, one leaves by
//! SIGKILL and one by SIGTERM, and the last one finishes. Partitions move several times; the
//! totals in ClickHouse equal the independent computation exactly.
//!
//! Each change waits until the group has settled, and the crash hits a worker that is not the
//! group leader (the first member, `w1`, which leaves last, cleanly): both for Tansu's
//! coordinator, see `common::wait_settled`.

mod common;

use std::time::Duration;

use common::{assert_totals_exact, wait_producer, wait_settled, Setup};

#[test]
fn workers_joining_and_leaving_lose_and_double_nothing() {
    let mut setup = Setup::new("rebalance");
    setup.flush_interval_ms = 500;
    // Two writer lanes (the default is one): partitions change lanes as they change hands.
    setup.env.push(("COSTLINE_CLICKHOUSE__INSERT_STREAMS".into(), "2".into()));
    let record_file = setup.scratch_file(".jsonl");
    let producer = setup.spawn_producer(200_000, 3_000, 11, 1_790_000_000_000, &record_file);
    let first = setup.spawn_worker("w1");
    wait_settled(&[&first], "one worker");
    let second = setup.spawn_worker("w2");
    wait_settled(&[&first, &second], "two workers");
    std::thread::sleep(Duration::from_secs(4));
    let third = setup.spawn_worker("w3");
    wait_settled(&[&first, &second, &third], "three workers");
    std::thread::sleep(Duration::from_secs(4));
    eprintln!("3 workers; {} records accounted for", setup.records_accounted());
    second.kill9();
    wait_settled(&[&first, &third], "after the SIGKILL");
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(first.stop(), 0, "a leaving worker exits cleanly");
    wait_settled(&[&third], "after the SIGTERM");
    eprintln!("1 worker left; {} records accounted for", setup.records_accounted());
    wait_producer(producer, Duration::from_secs(120));
    assert_totals_exact(&setup, &record_file);
    let workers: u64 = setup.query("SELECT uniqExact(worker) FROM flushes").trim().parse().unwrap();
    assert!(workers >= 3, "partitions should have been written by all three workers, got {workers}");
    assert_eq!(third.stop(), 0);
}
