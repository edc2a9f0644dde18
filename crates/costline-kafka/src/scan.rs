//! Reading a whole topic once, outside any consumer group's progress: the benchmark
//! baselines read the topic a worker reads, to compare with what the broker delivers and with
//! what ClickHouse takes.

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Message, Timestamp};

/// One record as read.
#[derive(Debug, Clone, Copy)]
pub struct ScannedRecord<'a> {
    pub partition: i32,
    pub offset: i64,
    /// The record's Kafka timestamp, epoch milliseconds.
    pub timestamp_ms: Option<i64>,
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
}

/// What a scan read, timed from its first record.
#[derive(Debug, Clone, Copy)]
pub struct ScanSummary {
    pub records: u64,
    pub payload_bytes: u64,
    pub seconds_from_first: f64,
}

/// Reads `count` records of `topic` from the beginning, in a fresh consumer group, handing
/// each to `each`. Fails once `timeout` has passed.
pub async fn scan_topic(
    brokers: &str,
    topic: &str,
    count: u64,
    timeout: Duration,
    mut each: impl FnMut(ScannedRecord<'_>),
) -> anyhow::Result<ScanSummary> {
    use anyhow::Context;
    let group = format!("costline-scan-{}-{}", std::process::id(), unique_suffix());
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .context("creating the consumer")?;
    consumer.subscribe(&[topic]).with_context(|| format!("subscribing to {topic}"))?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut first: Option<Instant> = None;
    let mut summary = ScanSummary { records: 0, payload_bytes: 0, seconds_from_first: 0.0 };
    while summary.records < count {
        let message = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .with_context(|| format!("read {} of {count} records of {topic} before the timeout", summary.records))?
            .context("consuming")?;
        first.get_or_insert_with(Instant::now);
        let payload = message.payload().unwrap_or_default();
        summary.payload_bytes += payload.len() as u64;
        summary.records += 1;
        each(ScannedRecord {
            partition: message.partition(),
            offset: message.offset(),
            timestamp_ms: match message.timestamp() {
                Timestamp::CreateTime(ms) | Timestamp::LogAppendTime(ms) => Some(ms),
                Timestamp::NotAvailable => None,
            },
            key: message.key(),
            payload,
        });
    }
    summary.seconds_from_first = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
    Ok(summary)
}

fn unique_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}
