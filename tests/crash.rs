//! Crash consistency: a worker killed with SIGKILL at random moments (before, during and after
//! inserts and commits) while traffic is being published; after the last restart the totals in
//! ClickHouse equal the independent computation exactly: nothing counted twice, nothing lost.

mod common;

use std::time::Duration;

use common::{assert_totals_exact, wait_producer, wait_until, Schedule, Setup};

#[test]
fn ten_sigkills_during_ingestion_lose_and_double_nothing() {
    let mut schedule = Schedule::new();
    let mut setup = Setup::new("crash");
    setup.flush_interval_ms = 300;
    // Two writer lanes (the default is one): a partition's flushes must stay in order across kills.
    setup.env.push(("COSTLINE_CLICKHOUSE__INSERT_STREAMS".into(), "2".into()));
    let record_file = setup.scratch_file(".jsonl");
    // A round takes ~12 s (the kill, the session timeout, the rejoin): the producer runs ~140 s,
    // so that every kill hits a worker with records still to count.
    let producer = setup.spawn_producer(200_000, 1_400, 7, 1_790_000_000_000, &record_file);
    let mut accounted = 0;
    for round in 0..10 {
        let worker = setup.spawn_worker(&format!("round{round}"));
        // The group hands the partitions over a few seconds after a kill; kill only once this
        // worker is writing, at a random moment of its flush cycle.
        wait_until(
            Duration::from_secs(30),
            || (setup.records_accounted() > accounted).then_some(()),
            || format!("round {round}: the worker never wrote:\n{}", worker.log()),
        );
        std::thread::sleep(schedule.millis(0, 1_500));
        accounted = setup.records_accounted();
        eprintln!("round {round}: killing the worker with {accounted} records accounted for");
        worker.kill9();
    }
    wait_producer(producer, Duration::from_secs(120));
    let worker = setup.spawn_worker("final");
    assert_totals_exact(&setup, &record_file);
    assert_eq!(worker.stop(), 0);
}
