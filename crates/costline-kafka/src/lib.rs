//! costline's Kafka adapter. It knows brokers, partitions and offsets; it knows nothing of
//! what an event means.
//!
//! - [`source`]: a consumer-group member with manual offsets. Where a newly assigned partition
//!   starts is asked of a [`PartitionLifecycle`] (the worker answers from ClickHouse, where the
//!   truth is), inside the rebalance, before the partition is fetched.
//! - [`producer`]: publishing records (the load generator, the dead-letter topic).
//! - [`scan`]: reading a whole topic once (the benchmark baselines).
//! - [`pacing`]: a steady rate and a bound on deliveries in flight for bulk publishing.

pub mod pacing;
pub mod producer;
pub mod scan;
pub mod source;
pub mod topics;

pub use pacing::{InFlight, Pace};
pub use producer::{delivered, is_permanent, RecordProducer};
pub use rdkafka::error::KafkaError;
pub use rdkafka::producer::DeliveryFuture;
pub use scan::{scan_topic, ScanSummary, ScannedRecord};
pub use source::{KafkaSource, PartitionLifecycle, SourceSettings};
pub use topics::ensure_topic;
