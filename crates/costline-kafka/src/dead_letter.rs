//! Rejected records on their way to the dead-letter topic: the payload cut to a bound (a
//! record too large for the producer would otherwise fail forever and hold every flush behind
//! it), and headers that say where the record came from and why it was rejected.

use rdkafka::error::KafkaError;
use rdkafka::producer::DeliveryFuture;

use crate::producer::RecordProducer;

/// A rejected record, as published to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub partition: i32,
    pub offset: u64,
    payload: Vec<u8>,
    /// The record's full size.
    pub payload_bytes: usize,
    pub reason_code: &'static str,
    pub reason: String,
}

impl DeadLetter {
    /// Keeps at most `max_payload_bytes` of `payload`.
    pub fn new(
        partition: i32,
        offset: u64,
        payload: &[u8],
        max_payload_bytes: usize,
        reason_code: &'static str,
        reason: String,
    ) -> DeadLetter {
        let kept = &payload[..payload.len().min(max_payload_bytes)];
        DeadLetter { partition, offset, payload: kept.to_vec(), payload_bytes: payload.len(), reason_code, reason }
    }

    /// Whether the payload was cut.
    pub fn truncated(&self) -> bool {
        self.payload.len() < self.payload_bytes
    }

    /// The headers: reason, source topic, partition and offset, full size, and whether cut.
    fn headers(&self, source_topic: &str) -> Vec<(&'static str, Vec<u8>)> {
        let mut headers = vec![
            ("costline-reason-code", self.reason_code.as_bytes().to_vec()),
            ("costline-reason", self.reason.as_bytes().to_vec()),
            ("costline-source-topic", source_topic.as_bytes().to_vec()),
            ("costline-source-partition", self.partition.to_string().into_bytes()),
            ("costline-source-offset", self.offset.to_string().into_bytes()),
            ("costline-payload-bytes", self.payload_bytes.to_string().into_bytes()),
        ];
        if self.truncated() {
            headers.push(("costline-payload-truncated", b"true".to_vec()));
        }
        headers
    }
}

impl RecordProducer {
    /// Enqueues `letter` (read from `source_topic`) on `topic`; the returned future resolves
    /// when the broker has it.
    pub async fn publish_dead_letter(
        &self,
        topic: &str,
        source_topic: &str,
        letter: &DeadLetter,
    ) -> Result<DeliveryFuture, KafkaError> {
        let headers = letter.headers(source_topic);
        let headers: Vec<(&str, &[u8])> = headers.iter().map(|(name, value)| (*name, value.as_slice())).collect();
        self.enqueue(topic, None, &letter.payload, None, &headers).await
    }
}

#[cfg(test)]
mod tests {
    use super::DeadLetter;

    #[test]
    fn a_cut_letter_says_so_and_keeps_its_full_size() {
        let letter = DeadLetter::new(3, 41, b"0123456789", 4, "malformed_json", "not JSON".into());
        assert!(letter.truncated());
        let headers = letter.headers("usage");
        let text: Vec<(&str, String)> =
            headers.iter().map(|(name, value)| (*name, String::from_utf8_lossy(value).into_owned())).collect();
        assert_eq!(
            text,
            [
                ("costline-reason-code", "malformed_json".to_string()),
                ("costline-reason", "not JSON".into()),
                ("costline-source-topic", "usage".into()),
                ("costline-source-partition", "3".into()),
                ("costline-source-offset", "41".into()),
                ("costline-payload-bytes", "10".into()),
                ("costline-payload-truncated", "true".into()),
            ]
        );
        assert_eq!(letter.payload, b"0123");
        assert!(!DeadLetter::new(0, 0, b"ab", 2, "x", String::new()).truncated());
    }
}
