//! The usage event (wire format v1, SPEC §1) after validation: every field present, defaults
//! applied, provider lower-cased. Anything of this type is known to be countable.
//!
//! The text fields are generic: the decoder hands out events that borrow from the message
//! ([`DecodedEvent`], no copy unless a string had escapes), and a batch keeps what it needs of
//! them in columns with interned strings (see [`crate::batch`]), so the hot path allocates
//! nothing per event.

use std::borrow::Cow;

use crate::money::PicoUsd;

/// Whether an event is real traffic. Test and demo traffic is stored but never pollutes real
/// reporting or budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DataMode {
    Real,
    Test,
    Demo,
}

impl DataMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DataMode::Real => "real",
            DataMode::Test => "test",
            DataMode::Demo => "demo",
        }
    }

    pub fn parse(text: &str) -> Option<DataMode> {
        match text {
            "real" => Some(DataMode::Real),
            "test" => Some(DataMode::Test),
            "demo" => Some(DataMode::Demo),
            _ => None,
        }
    }
}

/// The status that counts as a success; every other status is an error.
pub const STATUS_SUCCESS: &str = "success";

/// One validated provider call; `S` is the type of its text fields.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageEvent<S> {
    pub external_request_id: S,
    /// Lower-cased.
    pub provider: S,
    pub model: S,
    pub endpoint_tag: S,
    /// `""` when the producer sent none (untagged).
    pub prompt_version: S,
    /// The tenant or user, hashed by the producer; `""` when absent.
    pub user_id: S,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_tokens: u64,
    /// Prompt tokens billed at the 1-hour cache-write price.
    pub cache_write_1h_tokens: u64,
    pub latency_ms: Option<u32>,
    pub status: S,
    pub data_mode: DataMode,
    pub environment: S,
    pub attempt: u32,
    /// When the call finished, epoch milliseconds; `None` means "use the Kafka record time".
    pub timestamp_ms: Option<i64>,
    /// Cost reported by the producer, which wins over the price table.
    pub cost_usd: Option<PicoUsd>,
    pub error_code: S,
}

/// An event as the decoder returns it: text borrowed from the message where possible.
pub type DecodedEvent<'a> = UsageEvent<Cow<'a, str>>;

impl<S: AsRef<str>> UsageEvent<S> {
    pub fn is_success(&self) -> bool {
        self.status.as_ref() == STATUS_SUCCESS
    }

    /// Event time in epoch milliseconds: the event's own timestamp, else the record's.
    pub fn event_time_ms(&self, record_time_ms: i64) -> i64 {
        self.timestamp_ms.unwrap_or(record_time_ms)
    }
}
