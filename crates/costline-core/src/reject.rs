//! Why an event was refused. A rejection is data: it has a stable `code` for metrics and
//! queries, the field it concerns, and a sentence a producer can act on.

use std::fmt;

/// The reason an event was rejected. `Display` gives the human sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectReason {
    /// The message is larger than the limit.
    TooLarge {
        bytes: usize,
        limit: usize,
    },
    /// The payload is not UTF-8.
    InvalidUtf8 {
        valid_up_to: usize,
    },
    /// The payload is not a single JSON value (syntax error, trailing data, nesting too deep).
    MalformedJson {
        detail: String,
    },
    /// Valid JSON but not an object.
    NotAnObject,
    /// The same key appears twice in the object.
    DuplicateField {
        field: String,
    },
    MissingField {
        field: &'static str,
    },
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    /// The value has the right type but breaks a rule (`rule` says which).
    OutOfRange {
        field: &'static str,
        rule: String,
    },
    /// Token counts that contradict each other.
    InconsistentTokens {
        rule: &'static str,
    },
}

impl RejectReason {
    /// A short, stable identifier: a bounded set usable as a metrics label.
    pub fn code(&self) -> &'static str {
        match self {
            RejectReason::TooLarge { .. } => "too_large",
            RejectReason::InvalidUtf8 { .. } => "invalid_utf8",
            RejectReason::MalformedJson { .. } => "malformed_json",
            RejectReason::NotAnObject => "not_an_object",
            RejectReason::DuplicateField { .. } => "duplicate_field",
            RejectReason::MissingField { .. } => "missing_field",
            RejectReason::WrongType { .. } => "wrong_type",
            RejectReason::OutOfRange { .. } => "out_of_range",
            RejectReason::InconsistentTokens { .. } => "inconsistent_tokens",
        }
    }

    /// The event field the reason concerns, if any.
    pub fn field(&self) -> &str {
        match self {
            RejectReason::MissingField { field }
            | RejectReason::WrongType { field, .. }
            | RejectReason::OutOfRange { field, .. } => field,
            RejectReason::DuplicateField { field } => field,
            RejectReason::InconsistentTokens { .. } => "cachedInputTokens",
            _ => "",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::TooLarge { bytes, limit } => {
                write!(f, "message is {bytes} bytes, over the limit of {limit} bytes")
            }
            RejectReason::InvalidUtf8 { valid_up_to } => {
                write!(f, "payload is not valid UTF-8 (valid up to byte {valid_up_to})")
            }
            RejectReason::MalformedJson { detail } => {
                write!(f, "payload is not valid JSON: {detail}")
            }
            RejectReason::NotAnObject => write!(f, "payload is JSON but not an object"),
            RejectReason::DuplicateField { field } => {
                write!(f, "field `{field}` appears more than once")
            }
            RejectReason::MissingField { field } => {
                write!(f, "required field `{field}` is missing")
            }
            RejectReason::WrongType { field, expected } => {
                write!(f, "field `{field}` must be {expected}")
            }
            RejectReason::OutOfRange { field, rule } => write!(f, "field `{field}` {rule}"),
            RejectReason::InconsistentTokens { rule } => {
                write!(f, "token counts are inconsistent: {rule}")
            }
        }
    }
}
