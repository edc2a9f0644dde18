//! costline's pure core: everything that decides what an LLM call costs and how it is counted,
//! with no Kafka, ClickHouse, HTTP or async runtime in sight.
//!
//! Data flows one way through it:
//!
//! ```text
//! bytes ──decode──▶ UsageEvent ──DedupIndex──▶ counted attempt ──PriceTable──▶ priced attempt
//!                      │                          │ (duplicate)                      │
//!                      ▼                          ▼                                  ▼
//!                 Rejection              MinuteRollup.duplicates     MinuteRollup + CountedAttempts
//! ```
//!
//! [`PartitionBatch`] strings these steps together for one Kafka partition between two flushes;
//! adapters only move its contents in and out. Positions are opaque `u64` offsets here: the core
//! never learns what a partition or a broker is.

pub mod backoff;
pub mod batch;
pub mod budget;
pub mod dedup;
pub mod event;
pub mod latency;
pub mod money;
pub mod price;
pub mod reject;
pub mod reprice;
pub mod rollup;
pub mod rules;
pub mod secret;
pub mod symbols;

mod decode;

pub use batch::{CountedAttempts, Outcome, PartitionBatch, PartitionCounter, RecordMeta, RejectedRecord, TextColumn};
pub use decode::{decode_event, EventDecoder, MAX_EVENT_BYTES};
pub use dedup::{DedupIndex, DedupVerdict, Identity, RequestHash};
pub use event::{DataMode, DecodedEvent, UsageEvent};
pub use latency::LatencyHistogram;
pub use money::PicoUsd;
pub use price::{Price, PriceCache, PriceTable, PriceTableError, Pricing};
pub use reject::RejectReason;
pub use rollup::{Dimension, MinuteRollup, RollupKey, RollupMeasures};
pub use secret::Secret;
pub use symbols::Symbols;
