//! Publishing records: events from the load generator and the demo, rejected payloads to the
//! dead-letter topic. Idempotent producer, `acks=all`, so a record confirmed is a record kept.

use std::time::Duration;

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

/// A producer for one broker address.
#[derive(Clone)]
pub struct RecordProducer {
    producer: FutureProducer,
}

impl RecordProducer {
    pub fn connect(brokers: &str, extra: &[(String, String)]) -> Result<RecordProducer, KafkaError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .set("queue.buffering.max.messages", "1000000")
            .set_log_level(RDKafkaLogLevel::Warning);
        for (key, value) in extra {
            config.set(key, value);
        }
        Ok(RecordProducer { producer: config.create()? })
    }

    /// Enqueues one record; the returned future resolves when the broker has it. Waits for
    /// room when the local queue is full.
    pub async fn enqueue(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        timestamp_ms: Option<i64>,
        headers: &[(&str, &[u8])],
    ) -> Result<DeliveryFuture, KafkaError> {
        let mut owned = OwnedHeaders::new_with_capacity(headers.len());
        for &(name, value) in headers {
            owned = owned.insert(Header { key: name, value: Some(value) });
        }
        loop {
            let mut record = FutureRecord::<[u8], [u8]>::to(topic).payload(payload).headers(owned.clone());
            if let Some(key) = key {
                record = record.key(key);
            }
            if let Some(ts) = timestamp_ms {
                record = record.timestamp(ts);
            }
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Waits until every enqueued record is delivered or `timeout` passes.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(Timeout::After(timeout))
    }
}
