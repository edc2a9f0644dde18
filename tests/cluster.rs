//! costline on a ClickHouse cluster: ZooKeeper and 2 shards × 2 replicas of ClickHouse 18.16
//! on loopback (`scripts/services.sh up cluster`). The generated corpus (duplicates, retries,
//! late and invalid events) goes through two workers, and every total read through the
//! analysts' `Distributed` tables equals the independent computation, cost to the pico-dollar:
//! as it is, and after each fault (a replica down and back, ZooKeeper down for 20 s, a worker
//! killed with SIGKILL). Each test proves its fault hit live work: records were still being
//! counted when it struck, and more were counted after.

mod common;

use std::time::Duration;

use common::expected::month_start_secs;
use common::{assert_totals_exact, services, wait_producer, wait_settled, wait_until, Setup};

/// Workers and the test's queries go through the last server (shard 2, replica 2): the faults
/// below strike shard 1's first replica and ZooKeeper.
const ENTRY_SERVER: usize = 3;

fn cluster_setup(name: &str) -> Setup {
    let mut setup = Setup::on_cluster(name, ENTRY_SERVER);
    setup.flush_interval_ms = 300;
    setup
}

/// Rows of each shard's local `flushes`: both shards must get some.
fn flushes_per_shard(setup: &Setup) -> Vec<u64> {
    [0, 2]
        .iter()
        .map(|&server| {
            let sql = format!("SELECT count() FROM {}_local.flushes", setup.database);
            common::clickhouse_at(common::CLUSTER_SERVERS[server], None, &sql).unwrap().trim().parse().unwrap()
        })
        .collect()
}

#[test]
fn two_workers_count_exactly_through_the_distributed_tables() {
    // Events of the last minutes and the next few, all in this month: the budget covers them.
    // The corpus's record times span ~290 s: starting 150 s back keeps every one well within
    // `pipeline.max_clock_skew_secs` (300 s) of the worker's clock, beyond which a record time
    // is counted as now + 300 s and would leave the independent computation's minute.
    common::clear_of_midnight(Duration::from_secs(600));
    let mut setup = cluster_setup("cluster_totals");
    setup.use_config("[[budgets]]\nid = \"all\"\nperiod = \"month\"\nlimit_usd = \"1000000\"\n");
    let record_file = setup.scratch_file(".jsonl");
    let start_ms = common::now_ms() - 150_000;
    let producer = setup.spawn_producer(40_000, 8_000, 31, start_ms, &record_file);
    let first = setup.spawn_worker("w1");
    wait_settled(&[&first], "one worker");
    let second = setup.spawn_worker("w2");
    wait_settled(&[&first, &second], "two workers");
    wait_producer(producer, Duration::from_secs(120));
    let expected = assert_totals_exact(&setup, &record_file);
    let per_shard = flushes_per_shard(&setup);
    assert!(per_shard.iter().all(|&n| n > 0), "each shard holds its partitions' flushes: {per_shard:?}");

    // The budget reads spend on every shard, and its as_of covers every partition.
    let month_start = month_start_secs(start_ms / 1000);
    let spend = expected.prod_real_cost_since(month_start);
    let want = format!("{}.{:012}", spend / 1_000_000_000_000, spend % 1_000_000_000_000);
    let newest: Vec<String> = setup
        .query("SELECT toString(max(newest_record_time)) FROM flushes GROUP BY kafka_partition ORDER BY 1 FORMAT TSV")
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(newest.len(), 4, "every partition flushed");
    let want_as_of = newest[0].replace(' ', "T") + "+00:00";
    for worker in [&first, &second] {
        let budget = wait_until(
            Duration::from_secs(30),
            || {
                let (status, body) = worker.http_get("/v1/budgets/all");
                let budget: serde_json::Value = serde_json::from_str(&body).ok().filter(|_| status == 200)?;
                (budget["spend_usd"] == want.as_str()).then_some(budget)
            },
            || format!("the budget's spend never reached {want}: {}", worker.http_get("/v1/budgets/all").1),
        );
        assert_eq!(budget["as_of"], want_as_of.as_str(), "as_of: the oldest partition's newest record");
    }
    assert_eq!(first.stop(), 0);
    assert_eq!(second.stop(), 0);
}

/// Stops `service` while the workers are counting, starts it again after `down`, and checks the
/// totals: the fault must strike while records are still being counted.
fn fault_during_ingestion(name: &str, service: &str, down: Duration) {
    let setup = cluster_setup(name);
    let record_file = setup.scratch_file(".jsonl");
    let producer = setup.spawn_producer(60_000, 2_000, 37, 1_790_000_000_000, &record_file);
    let first = setup.spawn_worker("w1");
    wait_settled(&[&first], "one worker");
    let second = setup.spawn_worker("w2");
    wait_settled(&[&first, &second], "two workers");
    setup.wait_started(10_000, &first);
    let before = setup.records_accounted();
    services(&["stop", service]).unwrap();
    eprintln!("{service} stopped with {before} of 60,000 records accounted for");
    std::thread::sleep(down);
    services(&["start", service]).unwrap();
    let restarted_at = setup.records_accounted();
    assert!(restarted_at < 60_000, "the fault struck after everything was counted");
    wait_until(
        Duration::from_secs(120),
        || (setup.records_accounted() > restarted_at).then_some(()),
        || format!("nothing counted after {service} came back:\n{}", first.log()),
    );
    wait_producer(producer, Duration::from_secs(120));
    assert_totals_exact(&setup, &record_file);
    assert_eq!(first.stop(), 0);
    assert_eq!(second.stop(), 0);
}

#[test]
fn a_replica_down_during_ingestion_and_back_loses_and_doubles_nothing() {
    fault_during_ingestion("cluster_replica", "ch-s1r1", Duration::from_secs(15));
}

#[test]
fn zookeeper_down_for_20_seconds_loses_and_doubles_nothing() {
    fault_during_ingestion("cluster_zookeeper", "zookeeper", Duration::from_secs(20));
}

#[test]
fn a_worker_killed_while_writing_to_the_cluster_loses_and_doubles_nothing() {
    const RECORDS: u64 = 120_000;
    let setup = cluster_setup("cluster_sigkill");
    let record_file = setup.scratch_file(".jsonl");
    // ~80 s of traffic: every round (a rebalance to join, one to leave) finds records to count.
    let producer = setup.spawn_producer(RECORDS, 1_500, 41, 1_790_000_000_000, &record_file);
    let first = setup.spawn_worker("w1");
    wait_settled(&[&first], "one worker");
    let second = setup.spawn_worker("w2");
    wait_settled(&[&first, &second], "two workers");
    setup.wait_started(10_000, &first);
    let mut accounted = setup.records_accounted();
    for round in 0..3 {
        let victim = setup.spawn_worker(&format!("victim{round}"));
        wait_settled(&[&first, &second, &victim], "three workers");
        wait_until(
            Duration::from_secs(60),
            || (setup.records_accounted() > accounted).then_some(()),
            || format!("round {round}: nothing counted:\n{}", victim.log()),
        );
        std::thread::sleep(Duration::from_millis(700 + 300 * round));
        accounted = setup.records_accounted();
        assert!(accounted < RECORDS, "round {round}: the kill struck after everything was counted");
        assert!(victim.assigned_partitions() > Some(0), "round {round}: the victim owned no partition");
        eprintln!("round {round}: SIGKILL with {accounted} records accounted for");
        victim.kill9();
    }
    wait_producer(producer, Duration::from_secs(120));
    assert_totals_exact(&setup, &record_file);
    assert_eq!(first.stop(), 0);
    assert_eq!(second.stop(), 0);
}

/// Kafka side: librdkafka's mock cluster of three brokers, whose partition leaders move from
/// broker to broker while two workers count into the ClickHouse cluster.
#[test]
fn partition_leaders_moving_between_three_brokers_lose_and_double_nothing() {
    let brokers = rdkafka::mocking::MockCluster::new(3).expect("starting the mock cluster");
    let mut setup = cluster_setup("cluster_leaders");
    setup.brokers = brokers.bootstrap_servers();
    brokers.create_topic(&setup.topic, 4, 3).expect("creating the topic on the mock cluster");
    let record_file = setup.scratch_file(".jsonl");
    // The mock keeps at most ~5 MiB per partition: stay well under it, and publish for ~33 s
    // so that every move of the leaders happens while records are still being counted.
    let producer = setup.spawn_producer_to_made_topic(20_000, 600, 43, 1_790_000_000_000, &record_file);
    let first = setup.spawn_worker("w1");
    setup.wait_started(1_000, &first);
    let second = setup.spawn_worker("w2");
    let mut moves = 0;
    for round in 0..8 {
        let accounted = setup.records_accounted();
        if accounted >= 20_000 {
            break;
        }
        for partition in 0..4 {
            let leader = 1 + (partition + round) % 3;
            brokers.partition_leader(&setup.topic, partition, Some(leader)).expect("moving a partition leader");
            moves += 1;
        }
        eprintln!("round {round}: leaders moved with {accounted} records accounted for");
        std::thread::sleep(Duration::from_millis(1_500));
    }
    assert!(moves >= 8, "the leaders moved only {moves} times before everything was counted");
    wait_producer(producer, Duration::from_secs(120));
    assert_totals_exact(&setup, &record_file);
    assert_eq!(first.stop(), 0);
    assert_eq!(second.stop(), 0);
}
