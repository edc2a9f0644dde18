//! The dead-letter topic as the writer lanes see it: publishes a job's rejected records and
//! sorts failures into given up (no retry can deliver them) and to retry.

use std::sync::Arc;

use costline_kafka::{delivered, is_permanent, DeadLetter, KafkaError, RecordProducer};
use costline_progress::DeadLetters;
use tracing::{error, warn};

use crate::metrics::Metrics;

#[derive(Clone)]
pub struct KafkaDeadLetters {
    pub producer: RecordProducer,
    pub topic: String,
    pub source_topic: String,
    pub metrics: Arc<Metrics>,
}

impl DeadLetters for KafkaDeadLetters {
    type Letter = DeadLetter;

    fn partition(letter: &DeadLetter) -> i32 {
        letter.partition
    }

    /// A letter the broker can never take (see [`is_permanent`]) is given up, counted and
    /// logged: its record stays in `rejected_events` with the reason, and in the source topic.
    async fn publish(&self, letters: Vec<DeadLetter>) -> Vec<DeadLetter> {
        let mut retry = Vec::new();
        let mut deliveries = Vec::new();
        for letter in letters {
            match self.producer.publish_dead_letter(&self.topic, &self.source_topic, &letter).await {
                Ok(delivery) => deliveries.push((delivery, letter)),
                Err(e) => self.failed(letter, &e, &mut retry),
            }
        }
        for (delivery, letter) in deliveries {
            match delivered(delivery).await {
                Ok(_) => {
                    self.metrics.dead_letters.inc();
                    if letter.truncated() {
                        self.metrics.dead_letters_truncated.inc();
                    }
                }
                Err(e) => self.failed(letter, &e, &mut retry),
            }
        }
        retry
    }
}

impl KafkaDeadLetters {
    fn failed(&self, letter: DeadLetter, error: &KafkaError, retry: &mut Vec<DeadLetter>) {
        if is_permanent(error) {
            self.metrics.dead_letters_undeliverable.inc();
            error!(
                error = %error,
                partition = letter.partition,
                offset = letter.offset,
                payload_bytes = letter.payload_bytes,
                reason_code = letter.reason_code,
                "the dead-letter topic can never take this rejected record; it stays in rejected_events and the source topic"
            );
        } else {
            self.metrics.dead_letter_retries.inc();
            warn!(error = %error, partition = letter.partition, offset = letter.offset, "dead-letter delivery failed; will retry");
            retry.push(letter);
        }
    }
}
