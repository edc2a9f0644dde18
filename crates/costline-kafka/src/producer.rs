//! Publishing records: events from the load generator and the demo, rejected payloads to the
//! dead-letter topic. Idempotent producer, `acks=all`, so a record confirmed is a record kept.

use std::time::Duration;

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::future_producer::Delivery;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

/// A producer for one broker address. `extra` properties (the config's `kafka.librdkafka`) are
/// set last, so they override these defaults.
#[derive(Clone)]
pub struct RecordProducer {
    producer: FutureProducer,
}

impl RecordProducer {
    /// A producer that sends a record within 5 ms (librdkafka's default linger): for records
    /// someone waits for (dead letters before a flush, ingested events).
    pub fn connect(brokers: &str, extra: &[(String, String)]) -> Result<RecordProducer, KafkaError> {
        Self::with_linger(brokers, 5, extra)
    }

    /// A producer for bulk traffic (`produce`, `replay`): waits up to 50 ms to fill larger
    /// batches. At 60,000 records/s against Tansu this took the producer from ~0.8 to ~0.3 of a
    /// core and the broker from ~0.3 to ~0.08 (librdkafka's broker thread polled in a tight loop
    /// with 5 ms), CPU that the worker and ClickHouse share on one machine.
    pub fn connect_bulk(brokers: &str, extra: &[(String, String)]) -> Result<RecordProducer, KafkaError> {
        Self::with_linger(brokers, 50, extra)
    }

    fn with_linger(brokers: &str, linger_ms: u32, extra: &[(String, String)]) -> Result<RecordProducer, KafkaError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", linger_ms.to_string())
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
        let owned = (!headers.is_empty()).then(|| {
            headers.iter().fold(OwnedHeaders::new_with_capacity(headers.len()), |owned, &(name, value)| {
                owned.insert(Header { key: name, value: Some(value) })
            })
        });
        loop {
            let mut record = FutureRecord::<[u8], [u8]>::to(topic).payload(payload);
            if let Some(owned) = &owned {
                record = record.headers(owned.clone());
            }
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

/// Whether publishing a record failed for a reason that retrying the same record cannot
/// change: the record itself (too large, malformed), the topic's name, or missing rights.
/// Connection losses, timeouts and leader moves are not permanent.
pub fn is_permanent(error: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    let code = match error {
        KafkaError::MessageProduction(code) => *code,
        _ => return false,
    };
    matches!(
        code,
        Code::InvalidMessage
            | Code::InvalidMessageSize
            | Code::MessageSizeTooLarge
            | Code::MessageBatchTooLarge
            | Code::InvalidTopic
            | Code::InvalidRecord
            | Code::InvalidRequiredAcks
            | Code::TopicAuthorizationFailed
            | Code::ClusterAuthorizationFailed
            | Code::BadMessage
            | Code::InvalidArgument
    )
}

/// Waits until the broker has a record handed to [`RecordProducer::enqueue`]: where it landed,
/// or why not.
pub async fn delivered(delivery: DeliveryFuture) -> Result<Delivery, KafkaError> {
    match delivery.await {
        Ok(Ok(delivered)) => Ok(delivered),
        Ok(Err((e, _))) => Err(e),
        Err(_) => Err(KafkaError::Canceled),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::types::RDKafkaErrorCode as Code;

    #[test]
    fn a_record_the_broker_can_never_take_is_permanent_an_outage_is_not() {
        for code in [Code::MessageSizeTooLarge, Code::InvalidRecord, Code::TopicAuthorizationFailed] {
            assert!(is_permanent(&KafkaError::MessageProduction(code)), "{code:?}");
        }
        for code in [Code::MessageTimedOut, Code::AllBrokersDown, Code::NotLeaderForPartition, Code::QueueFull] {
            assert!(!is_permanent(&KafkaError::MessageProduction(code)), "{code:?}");
        }
        assert!(!is_permanent(&KafkaError::Canceled));
    }
}
