//! The same request id lands in the same partition whoever publishes it: 2,000 requests, each
//! published once by a producer that partitions like the Java client (murmur2, computed here
//! from Kafka's own algorithm, not by librdkafka) and once through `POST /v1/events`, count
//! 2,000 attempts and 2,000 duplicates.

mod common;

use std::time::Duration;

use common::{Setup, TOPIC_PARTITIONS};
use rdkafka::producer::{FutureProducer, FutureRecord};

const REQUESTS: usize = 2_000;

/// Kafka's `Utils.murmur2` (the Java client's default partitioner), as Java computes it.
fn java_murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition the Java client's default partitioner picks for a keyed record.
fn java_partition(key: &[u8], partitions: i32) -> i32 {
    (java_murmur2(key) & 0x7fff_ffff) % partitions
}

#[test]
fn the_java_murmur2_port_matches_kafkas_test_vectors() {
    // From Kafka's UtilsTest.testMurmur2.
    assert_eq!(java_murmur2(b"21"), -973_932_308);
    assert_eq!(java_murmur2(b"foobar"), -790_332_482);
    assert_eq!(java_murmur2(b"a-little-bit-long-string"), -985_981_536);
    assert_eq!(java_murmur2(b"a-little-bit-longer-string"), -1_486_304_829);
    assert_eq!(java_murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"), -58_897_971);
    assert_eq!(java_murmur2(b"abc"), 479_470_107);
}

fn event(id: &str) -> String {
    format!(
        r#"{{"externalRequestId":"{id}","provider":"openai","model":"gpt-4o","endpointTag":"partitioner.test","inputTokens":100,"outputTokens":10,"status":"success"}}"#
    )
}

#[test]
fn a_request_published_by_a_java_client_and_through_http_ingest_counts_once() {
    let setup = Setup::new("partitioner");
    assert!(setup.command(&["produce", "--count", "0"]).status().unwrap().success(), "creating the topic");
    let ids: Vec<String> = (0..REQUESTS).map(|i| format!("partitioned-request-{i}")).collect();

    let producer: FutureProducer =
        rdkafka::config::ClientConfig::new().set("bootstrap.servers", &setup.brokers).create().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        for id in &ids {
            let payload = event(id);
            let partition = java_partition(id.as_bytes(), TOPIC_PARTITIONS as i32);
            let record = FutureRecord::to(&setup.topic).key(id).payload(&payload).partition(partition);
            producer.send(record, Duration::from_secs(10)).await.expect("publishing like a Java client");
        }
    });

    let worker = setup.spawn_worker("partitioner");
    worker.wait_http_up();
    for batch in ids.chunks(500) {
        let body = format!("[{}]", batch.iter().map(|id| event(id)).collect::<Vec<_>>().join(","));
        let mut response = ureq::post(&format!("http://127.0.0.1:{}/v1/events", worker.port))
            .header("content-type", "application/json")
            .send(&body)
            .expect("posting to /v1/events");
        let answer: serde_json::Value = serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
        assert_eq!(answer["accepted"], batch.len(), "{answer}");
    }

    setup.wait_accounted(2 * REQUESTS as u64, Duration::from_secs(120));
    let counted = setup.query("SELECT count(), uniqExact(external_request_id) FROM usage_events FORMAT TSV");
    assert_eq!(counted.trim(), format!("{REQUESTS}\t{REQUESTS}"), "each request counted once");
    let duplicates = setup.query("SELECT sum(duplicates) FROM usage_minute");
    assert_eq!(duplicates.trim(), REQUESTS.to_string(), "the second copy of each is a duplicate");
    assert_eq!(worker.stop(), 0);
}
