//! The consumer side.
//!
//! Offsets are never committed automatically: the worker commits a partition's offset only
//! after ClickHouse holds everything below it, and on assignment it starts each partition at
//! the offset ClickHouse says was last written, not at Kafka's committed offset (which may lag).
//! The rebalance protocol is cooperative-sticky, so only partitions that move are revoked.

use std::sync::Arc;
use std::time::Duration;

use costline_core::RecordMeta;

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Message, Timestamp};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientContext;
use tracing::{info, warn};

/// Decisions the worker makes when partitions move.
pub trait PartitionLifecycle: Send + Sync + 'static {
    /// A partition was assigned. Prepare its state and return the offset to start at (`None`:
    /// Kafka's committed offset, else the earliest). Runs inside the rebalance, before any of
    /// its records is fetched.
    fn assigned(&self, topic: &str, partition: i32) -> Option<i64>;
    /// A partition is about to be taken away. Runs before it is unassigned.
    fn revoked(&self, topic: &str, partition: i32);
    /// Consumer lag of an owned partition (records behind the high-water mark of the last
    /// fetch), reported every few seconds from librdkafka's statistics.
    fn lag(&self, _partition: i32, _records: i64) {}
    /// Whether this member's group is steady (not in a rebalance) and how many rebalances it
    /// has been through, reported every few seconds from librdkafka's statistics.
    fn group(&self, _steady: bool, _rebalances: i64) {}
}

/// Consumer settings, already validated by the caller.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    pub brokers: String,
    pub topic: String,
    pub group_id: String,
    pub session_timeout_ms: u32,
    pub max_poll_interval_ms: u32,
    /// Extra librdkafka properties, applied last.
    pub extra: Vec<(String, String)>,
}

pub struct SourceContext<L> {
    lifecycle: Arc<L>,
}

impl<L: PartitionLifecycle> ClientContext for SourceContext<L> {
    fn stats(&self, statistics: rdkafka::Statistics) {
        if let Some(group) = &statistics.cgrp {
            self.lifecycle.group(group.join_state == "steady", group.rebalance_cnt);
        }
        for topic in statistics.topics.values() {
            for (&partition, stats) in &topic.partitions {
                // librdkafka reports -1 for partitions this member does not consume.
                if partition >= 0 && stats.consumer_lag >= 0 {
                    self.lifecycle.lag(partition, stats.consumer_lag);
                }
            }
        }
    }
}

impl<L: PartitionLifecycle> ConsumerContext for SourceContext<L> {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let assigned: Vec<(String, i32)> =
                    tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
                for (topic, partition) in assigned {
                    let start = self.lifecycle.assigned(&topic, partition);
                    info!(topic, partition, start_offset = ?start, "partition assigned");
                    if let Some(offset) = start {
                        if let Err(e) = tpl.set_partition_offset(&topic, partition, Offset::Offset(offset)) {
                            warn!(topic, partition, error = %e, "could not set the start offset");
                        }
                    }
                }
                if let Err(e) = consumer.incremental_assign(tpl) {
                    warn!(error = %e, "incremental assign failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                for elem in tpl.elements() {
                    info!(topic = elem.topic(), partition = elem.partition(), "partition revoked");
                    self.lifecycle.revoked(elem.topic(), elem.partition());
                }
                if let Err(e) = consumer.incremental_unassign(tpl) {
                    warn!(error = %e, "incremental unassign failed");
                }
            }
            other => {
                warn!(error = ?other, "rebalance error");
                let _ = consumer.unassign();
            }
        }
    }
}

/// A record as the worker counts it, borrowed from the consumer.
pub struct SourceRecord<'a> {
    message: BorrowedMessage<'a>,
}

impl SourceRecord<'_> {
    pub fn partition(&self) -> i32 {
        self.message.partition()
    }

    /// Offset and record time (0 when the broker gave none).
    pub fn meta(&self) -> RecordMeta {
        let timestamp_ms = match self.message.timestamp() {
            Timestamp::CreateTime(ms) | Timestamp::LogAppendTime(ms) => ms,
            Timestamp::NotAvailable => 0,
        };
        RecordMeta { offset: self.message.offset().max(0) as u64, timestamp_ms }
    }

    pub fn key(&self) -> Option<&[u8]> {
        self.message.key()
    }

    /// The payload; empty for a record without one.
    pub fn payload(&self) -> &[u8] {
        self.message.payload().unwrap_or_default()
    }
}

/// A consumer-group member reading one topic.
pub struct KafkaSource<L: PartitionLifecycle> {
    consumer: StreamConsumer<SourceContext<L>>,
    topic: String,
}

impl<L: PartitionLifecycle> KafkaSource<L> {
    pub fn connect(settings: &SourceSettings, lifecycle: Arc<L>) -> KafkaResult<KafkaSource<L>> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &settings.brokers)
            .set("group.id", &settings.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("session.timeout.ms", settings.session_timeout_ms.to_string())
            .set("max.poll.interval.ms", settings.max_poll_interval_ms.to_string())
            .set("enable.partition.eof", "false")
            .set("statistics.interval.ms", "5000")
            // A partition whose prefetch queue reached its bound is not fetched again for
            // `fetch.queue.backoff.ms`, 1 s by default: a worker that drains its queue sooner
            // then waits for records the broker has (one worker read in half-second bursts a
            // second apart, ~110,000 records/s: BENCHMARKS.md). 20 ms keeps the queue filled;
            // 20,000 records per partition bound it (~6 MB of 300-byte events).
            .set("fetch.queue.backoff.ms", "20")
            .set("queued.min.messages", "20000");
        // librdkafka's `debug` contexts (e.g. `cgrp`) log at debug level: let them through.
        let wants_debug = settings.extra.iter().any(|(key, _)| key == "debug");
        config.set_log_level(if wants_debug { RDKafkaLogLevel::Debug } else { RDKafkaLogLevel::Warning });
        for (key, value) in &settings.extra {
            config.set(key, value);
        }
        let consumer: StreamConsumer<SourceContext<L>> = config.create_with_context(SourceContext { lifecycle })?;
        consumer.subscribe(&[&settings.topic])?;
        Ok(KafkaSource { consumer, topic: settings.topic.clone() })
    }

    /// The next record. Rebalance callbacks run inside this call.
    pub async fn recv(&self) -> KafkaResult<SourceRecord<'_>> {
        self.consumer.recv().await.map(|message| SourceRecord { message })
    }

    /// Commits `next_offset` for each partition (the offset of the next record to read) in the
    /// background. Kafka's committed offsets are informational here (lag tools read them); the
    /// resume point is read from ClickHouse.
    pub fn commit(&self, offsets: &[(i32, u64)]) -> KafkaResult<()> {
        self.commit_in(offsets, CommitMode::Async)
    }

    /// [`KafkaSource::commit`], waiting for the broker's answer (before leaving the group).
    pub fn commit_and_wait(&self, offsets: &[(i32, u64)]) -> KafkaResult<()> {
        self.commit_in(offsets, CommitMode::Sync)
    }

    fn commit_in(&self, offsets: &[(i32, u64)], mode: CommitMode) -> KafkaResult<()> {
        let mut tpl = TopicPartitionList::new();
        for &(partition, next_offset) in offsets {
            tpl.add_partition_offset(&self.topic, partition, Offset::Offset(next_offset as i64))?;
        }
        self.consumer.commit(&tpl, mode)
    }

    /// Leaves the group cleanly (revoking every partition through the lifecycle).
    pub fn unsubscribe(&self) {
        self.consumer.unsubscribe();
    }

    /// Stops fetching `partitions` (their records already read stay delivered); polling goes
    /// on, so the member stays in its group while the worker cannot take more records.
    pub fn pause(&self, partitions: &[i32]) -> KafkaResult<()> {
        self.consumer.pause(&self.partition_list(partitions))
    }

    /// Fetches `partitions` again from where they were paused.
    pub fn resume(&self, partitions: &[i32]) -> KafkaResult<()> {
        self.consumer.resume(&self.partition_list(partitions))
    }

    fn partition_list(&self, partitions: &[i32]) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for &partition in partitions {
            tpl.add_partition(&self.topic, partition);
        }
        tpl
    }

    /// Whether the group took this member's assignment away (a missed session or poll
    /// interval) before the rebalance callback could tell the worker.
    pub fn assignment_lost(&self) -> bool {
        self.consumer.assignment_lost()
    }

    /// Partitions currently assigned to this member.
    pub fn assigned_partitions(&self) -> Vec<i32> {
        self.consumer.assignment().map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect()).unwrap_or_default()
    }

    /// High-water marks from the last fetch responses, for lag. (Tansu answers ListOffsets
    /// for "latest" wrongly, so queried watermarks are not used.)
    pub fn fetch_watermarks(&self, partition: i32, timeout: Duration) -> KafkaResult<(i64, i64)> {
        self.consumer.fetch_watermarks(&self.topic, partition, timeout)
    }
}
