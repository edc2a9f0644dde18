//! Broker faults, injected with librdkafka's mock cluster (a Kafka-protocol broker in this test
//! process): the broker goes down and comes back, and fetch, commit and produce requests fail
//! for a while, while records are still being published and consumed (the test checks that
//! the worker had not finished when the broker went down). The worker waits and resumes;
//! ClickHouse (real) ends with exact totals.

mod common;

use std::time::Duration;

use common::{assert_totals_exact, wait_producer, Setup};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

#[test]
fn broker_down_and_request_errors_lose_and_double_nothing() {
    let cluster = MockCluster::new(1).expect("starting the mock cluster");
    let mut setup = Setup::new("broker_faults");
    setup.brokers = cluster.bootstrap_servers();
    cluster.create_topic(&setup.topic, 4, 1).expect("creating the topic on the mock cluster");
    let record_file = setup.scratch_file(".jsonl");
    // Published while the faults happen, so that they hit a worker in the middle of its work.
    // The mock keeps at most ~5 MiB per partition: stay well under it.
    let producer = setup.spawn_producer_to_made_topic(20_000, 1_500, 5, 1_790_000_000_000, &record_file);

    let worker = setup.spawn_worker("faults");
    setup.wait_started(1_000, &worker);
    let at_fault = setup.records_accounted();
    assert!(at_fault < 20_000, "everything was written before the broker went down: the fault would prove nothing");
    cluster.broker_down(1).unwrap();
    std::thread::sleep(Duration::from_secs(6));
    cluster.broker_up(1).unwrap();

    let errors = [RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION; 20];
    cluster.request_errors(RDKafkaApiKey::Fetch, &errors);
    cluster.request_errors(RDKafkaApiKey::OffsetCommit, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT; 10]);
    cluster.request_errors(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 5]);

    wait_producer(producer, Duration::from_secs(120));
    assert_totals_exact(&setup, &record_file);
    eprintln!("{at_fault} of 20,000 records were accounted for when the broker went down");
    let dead_letters = worker.http_get("/metrics").1;
    assert!(dead_letters.contains("costline_dead_letters_total"), "{dead_letters}");
    assert_eq!(worker.stop(), 0);
}
