//! costline's Kafka adapter. It knows brokers, partitions and offsets; it knows nothing of
//! what an event means.
//!
//! - [`source`]: a consumer-group member with manual offsets. Where a newly assigned partition
//!   starts is asked of a [`PartitionLifecycle`] (the worker answers from ClickHouse, where the
//!   truth is), inside the rebalance, before the partition is fetched.
//! - [`producer`]: publishing records (the load generator, the dead-letter topic);
//!   [`dead_letter`]: a rejected record's cut payload and headers.
//! - [`group_watch`]: how long the consumer group has been rebalancing.
//! - [`scan`]: reading a whole topic once (the benchmark baselines).
//! - [`pacing`]: a steady rate and a bound on deliveries in flight for bulk publishing.

pub mod dead_letter;
pub mod group_watch;
pub mod pacing;
pub mod producer;
pub mod scan;
pub mod source;
pub mod topics;

pub use dead_letter::DeadLetter;
pub use group_watch::GroupWatch;
pub use pacing::{InFlight, Pace};
pub use producer::{delivered, is_permanent, RecordProducer};
pub use rdkafka::error::KafkaError;
pub use rdkafka::producer::DeliveryFuture;
pub use scan::{scan_topic, ScanSummary, ScannedRecord};
pub use source::{KafkaSource, PartitionLifecycle, SourceRecord, SourceSettings};
pub use topics::ensure_topic;
