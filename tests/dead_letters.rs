//! A rejected record too large for the producer (over librdkafka's `message.max.bytes`) among
//! normal traffic: its dead letter carries the payload's first bytes and says it was cut, the
//! full size and reason stay in `rejected_events`, and every other record is still counted
//! exactly once. (A dead letter that could never be published once held every flush behind it.)

mod common;

use std::time::{Duration, Instant};

use common::{append_to_record_file, assert_totals_exact, publish_with, Setup};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};

const OVERSIZED_BYTES: usize = 1_000_100;
const MAX_PAYLOAD_BYTES: usize = 65_536;

/// The dead letters of `topic` as (headers, payload length), read from the start.
fn dead_letters(setup: &Setup, topic: &str, want: usize) -> Vec<(Vec<(String, String)>, usize)> {
    let consumer: BaseConsumer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", &setup.brokers)
        .set("group.id", format!("{}-reader", setup.group))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("creating the dead-letter reader");
    consumer.subscribe(&[topic]).expect("subscribing to the dead-letter topic");
    let mut letters = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while letters.len() < want && Instant::now() < deadline {
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(500)) else { continue };
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|header| {
                        (header.key.to_string(), String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        letters.push((headers, message.payload().map_or(0, <[u8]>::len)));
    }
    letters
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
}

#[test]
fn an_oversized_rejected_record_is_cut_in_its_dead_letter_and_blocks_nothing() {
    let mut setup = Setup::new("dead_letters");
    setup.env.push(("COSTLINE_KAFKA__DEAD_LETTER_MAX_PAYLOAD_BYTES".into(), MAX_PAYLOAD_BYTES.to_string()));
    let record_file = setup.scratch_file(".jsonl");
    setup.produce(12_000, 61, 1_790_000_000_000, &record_file);
    let oversized = vec![(String::from("oversized"), vec![b'x'; OVERSIZED_BYTES], 1_790_000_100_000)];
    let positions = publish_with(&setup, &[("message.max.bytes", "2000000")], &oversized);
    append_to_record_file(&record_file, &oversized, &["invalid"]);
    setup.produce(12_000, 62, 1_790_000_200_000, &setup.scratch_file("-second.jsonl"));
    let second = std::fs::read_to_string(setup.scratch_file("-second.jsonl")).unwrap();
    std::fs::write(&record_file, std::fs::read_to_string(&record_file).unwrap() + &second).unwrap();

    let worker = setup.spawn_worker("dead_letters");
    assert_totals_exact(&setup, &record_file);
    assert_eq!(worker.http_get("/readyz").0, 200, "ready: no flush is stuck");
    assert_eq!(worker.metric("costline_dead_letters_truncated_total"), Some(1.0));
    assert_eq!(worker.metric("costline_dead_letters_undeliverable_total"), Some(0.0));

    let (partition, offset) = positions[0];
    let row = setup.query(&format!(
        "SELECT reason_code, payload_bytes, length(payload_head) FROM rejected_events \
         WHERE kafka_partition = {partition} AND kafka_offset = {offset} FORMAT TSV"
    ));
    assert_eq!(row.trim(), format!("malformed_json\t{OVERSIZED_BYTES}\t256"), "rejected_events keeps the full size");

    let rejected: usize = setup.query("SELECT count() FROM rejected_events").trim().parse().unwrap();
    let letters = dead_letters(&setup, &format!("{}.dead-letter", setup.topic), rejected);
    assert_eq!(letters.len(), rejected, "one dead letter per rejected record");
    let cut: Vec<_> =
        letters.iter().filter(|(headers, _)| header(headers, "costline-payload-truncated").is_some()).collect();
    assert_eq!(cut.len(), 1, "only the oversized record is cut");
    let (headers, payload_len) = cut[0];
    assert_eq!(*payload_len, MAX_PAYLOAD_BYTES);
    assert_eq!(header(headers, "costline-payload-bytes"), Some(OVERSIZED_BYTES.to_string().as_str()));
    assert_eq!(header(headers, "costline-source-offset"), Some(offset.to_string().as_str()));
    assert_eq!(header(headers, "costline-reason-code"), Some("malformed_json"));
    for (headers, payload_len) in &letters {
        if header(headers, "costline-payload-truncated").is_none() {
            assert_eq!(header(headers, "costline-payload-bytes"), Some(payload_len.to_string().as_str()));
        }
    }
    assert_eq!(worker.stop(), 0);
}
