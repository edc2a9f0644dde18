//! Bytes → [`UsageEvent`], or a [`RejectReason`] that names the field and the rule.
//!
//! The JSON object is walked once (by [`flat`]'s one-pass scanner when the object is flat and
//! plain, by serde_json otherwise): each known key keeps its raw JSON text
//! (borrowed, no copy), unknown keys are skipped, and a repeated key is an error. Each field is
//! then read from its raw text by its own rule, so a wrong type, a negative count and a too-long
//! tag each get their own precise reason. Numbers are read from their text, never through a
//! float. Text fields stay borrowed from the message unless they had escapes. (sonic-rs was
//! tried as the walker and was slower on these small objects: BENCHMARKS.md.)

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::event::{DataMode, DecodedEvent};
use crate::money::{AmountError, PicoUsd};
use crate::reject::RejectReason;

/// Messages larger than this are rejected unread (SPEC §2).
pub const MAX_EVENT_BYTES: usize = 1 << 20;
/// Upper bound for any token count: a hundred times the largest context window of any model,
/// low enough that a rollup row's `UInt64` sums (ClickHouse sums `UInt64` into `UInt64`)
/// hold 1.8 × 10¹⁰ events at this maximum: a day's row of one dimension set cannot wrap below
/// ~213,000 such events per second for the whole day.
pub const MAX_TOKENS: u64 = 1_000_000_000;
/// A call that took longer than a day is a broken clock, not a slow model.
pub const MAX_LATENCY_MS: u64 = 86_400_000;
pub const MAX_ATTEMPT: u64 = 10_000;
/// One call billed at more than a million dollars is a unit error on the producer's side.
pub const MAX_COST_PICO: i128 = 1_000_000 * crate::money::PICO_PER_USD;
/// Event times must fit ClickHouse's `DateTime` (seconds since 1970 in a `UInt32`).
pub const MAX_TIMESTAMP_MS: i64 = u32::MAX as i64 * 1000;

macro_rules! fields {
    ($($variant:ident => $name:literal),* $(,)?) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum Field { $($variant,)* Unknown }
        const FIELD_COUNT: usize = [$($name),*].len();
        impl Field {
            fn from_key(key: &str) -> Field {
                match key { $($name => Field::$variant,)* _ => Field::Unknown }
            }
            fn name(self) -> &'static str {
                match self { $(Field::$variant => $name,)* Field::Unknown => "" }
            }
            /// The key as it is written before its value in compact JSON: `"name":`.
            #[inline(always)]
            fn key_token(self) -> &'static [u8] {
                const KEY_TOKENS: [&[u8]; FIELD_COUNT + 1] = [$(concat!("\"", $name, "\":").as_bytes(),)* b""];
                KEY_TOKENS[self as usize]
            }
        }
    };
}

fields! {
    ExternalRequestId => "externalRequestId",
    Provider => "provider",
    Model => "model",
    EndpointTag => "endpointTag",
    PromptVersion => "promptVersion",
    UserId => "userId",
    InputTokens => "inputTokens",
    OutputTokens => "outputTokens",
    CachedInputTokens => "cachedInputTokens",
    CacheWriteTokens => "cacheWriteTokens",
    CacheWrite1hTokens => "cacheWrite1hTokens",
    LatencyMs => "latencyMs",
    Status => "status",
    DataMode => "dataMode",
    Environment => "environment",
    Attempt => "attempt",
    Timestamp => "timestamp",
    CostUsd => "costUsd",
    ErrorCode => "errorCode",
}

/// A known field's value as a walk found it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum FieldValue<'a> {
    /// The JSON text as written (a string with its quotes).
    Json(&'a str),
    /// A JSON integer the fast path read on its way: digits only, at most 19.
    Count(u64),
}

/// The value of each known field, in `Field` order.
struct RawFields<'a> {
    values: [Option<FieldValue<'a>>; FIELD_COUNT],
    /// No string of the message has an escape or a control character (the fast path's pass
    /// found no backslash, C0 control, DEL or C1 control in the whole message).
    clean_text: bool,
}

impl<'a> RawFields<'a> {
    fn new() -> RawFields<'a> {
        RawFields { values: [None; FIELD_COUNT], clean_text: false }
    }

    /// A present, non-null value. `null` counts as absent.
    #[inline(always)]
    fn get(&self, field: Field) -> Option<FieldValue<'a>> {
        self.values[field as usize].filter(|raw| !matches!(raw, FieldValue::Json("null")))
    }
}

enum WalkError {
    Duplicate(&'static str),
    NotAnObject,
}

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalkError::Duplicate(name) => write!(f, "duplicate {name}"),
            WalkError::NotAnObject => f.write_str("not an object"),
        }
    }
}

struct FieldKey(Field);

impl<'de> de::Deserialize<'de> for FieldKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = FieldKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<FieldKey, E> {
                Ok(FieldKey(Field::from_key(key)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Walks any JSON value into `fields` (filled in place: no copies of the field table); a value
/// that is not an object ends up here too, so it is reported as "not an object", not as a
/// syntax error.
struct Walk<'f, 'de> {
    fields: &'f mut RawFields<'de>,
}

impl<'de> de::DeserializeSeed<'de> for Walk<'_, 'de> {
    type Value = Result<(), WalkError>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

macro_rules! not_object {
    ($($method:ident: $ty:ty),*) => {
        $(fn $method<E: de::Error>(self, _: $ty) -> Result<Self::Value, E> {
            Ok(Err(WalkError::NotAnObject))
        })*
    };
}

impl<'de> Visitor<'de> for Walk<'_, 'de> {
    type Value = Result<(), WalkError>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    not_object!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Err(WalkError::NotAnObject))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Err(WalkError::NotAnObject))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut duplicate = None;
        while let Some(FieldKey(field)) = map.next_key()? {
            match field {
                Field::Unknown => {
                    map.next_value::<IgnoredAny>()?;
                }
                known => match &mut self.fields.values[known as usize] {
                    slot @ None => *slot = Some(FieldValue::Json(map.next_value::<&'de RawValue>()?.get())),
                    // Read on to the end, so that a syntax error later still wins over the duplicate.
                    Some(_) => {
                        duplicate.get_or_insert(known.name());
                        map.next_value::<IgnoredAny>()?;
                    }
                },
            }
        }
        Ok(duplicate.map_or(Ok(()), |name| Err(WalkError::Duplicate(name))))
    }
}

/// Decodes and validates one message value, with nothing learnt from earlier messages
/// ([`EventDecoder`] learns their key order).
pub fn decode_event(payload: &[u8]) -> Result<DecodedEvent<'_>, RejectReason> {
    EventDecoder::default().decode(payload)
}

/// Decodes a stream of messages, such as one partition's, learning which key follows which: a
/// producer writes its keys in one order, so each key of a message is first compared with the
/// one or two keys that followed the key before it in earlier messages, and is searched for and
/// looked up only when it is neither (the outcome is the same either way; only the time
/// differs).
#[derive(Debug, Clone, Default)]
pub struct EventDecoder {
    order: flat::KeyOrder,
}

impl EventDecoder {
    /// Decodes and validates one message value.
    pub fn decode<'a>(&mut self, payload: &'a [u8]) -> Result<DecodedEvent<'a>, RejectReason> {
        if payload.len() > MAX_EVENT_BYTES {
            return Err(RejectReason::TooLarge { bytes: payload.len(), limit: MAX_EVENT_BYTES });
        }
        let mut raw = RawFields::new();
        if flat::scan(payload, &mut raw, &mut self.order).is_some() {
            return build_event(&raw);
        }
        walk_slowly(payload)
    }
}

/// The path for what the fast one gave up on: invalid UTF-8, escapes, nesting, syntax errors.
fn walk_slowly(payload: &[u8]) -> Result<DecodedEvent<'_>, RejectReason> {
    // The fast check says only yes or no; the slow one says where, for the reason.
    let text = match simdutf8::basic::from_utf8(payload) {
        Ok(text) => text,
        Err(_) => {
            let valid_up_to = std::str::from_utf8(payload).err().map_or(payload.len(), |e| e.valid_up_to());
            return Err(RejectReason::InvalidUtf8 { valid_up_to });
        }
    };
    let mut raw = RawFields::new();
    walk(text, &mut raw)?;
    build_event(&raw)
}

/// The whole JSON document walked by serde_json: any shape, precise syntax errors.
fn walk<'a>(text: &'a str, raw: &mut RawFields<'a>) -> Result<(), RejectReason> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let walked = de::DeserializeSeed::deserialize(Walk { fields: raw }, &mut deserializer)
        .and_then(|walked| deserializer.end().map(|()| walked))
        .map_err(|e| RejectReason::MalformedJson { detail: e.to_string() })?;
    walked.map_err(|e| match e {
        WalkError::Duplicate(field) => RejectReason::DuplicateField { field: field.to_string() },
        WalkError::NotAnObject => RejectReason::NotAnObject,
    })
}

fn build_event<'a>(raw: &RawFields<'a>) -> Result<DecodedEvent<'a>, RejectReason> {
    let text = |field, value, min, max| text(field, value, min, max, raw.clean_text);
    // Fields are read in the order of SPEC §1, so the first problem reported is the first there.
    let external_request_id = required(raw, Field::ExternalRequestId, |f, r| text(f, r, 1, 128))?;
    let provider = lower_case(required(raw, Field::Provider, |f, r| text(f, r, 1, 64))?);
    let model = required(raw, Field::Model, |f, r| text(f, r, 1, 128))?;
    let endpoint_tag = required(raw, Field::EndpointTag, |f, r| text(f, r, 1, 128))?;
    let prompt_version = optional_text(raw, Field::PromptVersion, 128)?;
    let user_id = optional_text(raw, Field::UserId, 128)?;
    let input_tokens = required(raw, Field::InputTokens, |f, r| integer(f, r, 0, MAX_TOKENS))?;
    let output_tokens = required(raw, Field::OutputTokens, |f, r| integer(f, r, 0, MAX_TOKENS))?;
    let cached_input_tokens =
        optional(raw, Field::CachedInputTokens, |f, r| integer(f, r, 0, MAX_TOKENS))?.unwrap_or(0);
    let cache_write_tokens = optional(raw, Field::CacheWriteTokens, |f, r| integer(f, r, 0, MAX_TOKENS))?.unwrap_or(0);
    let cache_write_1h_tokens =
        optional(raw, Field::CacheWrite1hTokens, |f, r| integer(f, r, 0, MAX_TOKENS))?.unwrap_or(0);
    if cached_input_tokens > input_tokens {
        return Err(RejectReason::InconsistentTokens { rule: "cachedInputTokens must be <= inputTokens" });
    }
    if cache_write_tokens > input_tokens - cached_input_tokens {
        return Err(RejectReason::InconsistentTokens {
            rule: "cacheWriteTokens must be <= inputTokens - cachedInputTokens",
        });
    }
    if cache_write_1h_tokens > input_tokens - cached_input_tokens - cache_write_tokens {
        return Err(RejectReason::InconsistentTokens {
            rule: "cacheWrite1hTokens must be <= inputTokens - cachedInputTokens - cacheWriteTokens",
        });
    }
    let latency_ms = optional(raw, Field::LatencyMs, |f, r| integer(f, r, 0, MAX_LATENCY_MS))?.map(|v| v as u32);
    let status = required(raw, Field::Status, |f, r| text(f, r, 1, 32))?;
    let data_mode = match optional(raw, Field::DataMode, |f, r| text(f, r, 1, 16))? {
        None => DataMode::Real,
        Some(mode) => DataMode::parse(&mode).ok_or_else(|| RejectReason::OutOfRange {
            field: "dataMode",
            rule: format!("must be one of real, test, demo (got {mode:?})"),
        })?,
    };
    let environment = optional(raw, Field::Environment, |f, r| text(f, r, 1, 32))?.unwrap_or(Cow::Borrowed("prod"));
    Ok(DecodedEvent {
        external_request_id,
        provider,
        model,
        endpoint_tag,
        prompt_version,
        user_id,
        input_tokens,
        output_tokens,
        cached_input_tokens,
        cache_write_tokens,
        cache_write_1h_tokens,
        latency_ms,
        status,
        data_mode,
        environment,
        attempt: optional(raw, Field::Attempt, |f, r| integer(f, r, 1, MAX_ATTEMPT))?.map_or(1, |a| a as u32),
        timestamp_ms: optional(raw, Field::Timestamp, |f, r| timestamp(f, r, raw.clean_text))?,
        cost_usd: optional(raw, Field::CostUsd, cost)?,
        error_code: optional_text(raw, Field::ErrorCode, 64)?,
    })
}

#[inline(always)]
fn required<'a, T>(
    raw: &RawFields<'a>,
    field: Field,
    read: impl FnOnce(&'static str, FieldValue<'a>) -> Result<T, RejectReason>,
) -> Result<T, RejectReason> {
    match raw.get(field) {
        Some(value) => read(field.name(), value),
        None => Err(RejectReason::MissingField { field: field.name() }),
    }
}

#[inline(always)]
fn optional<'a, T>(
    raw: &RawFields<'a>,
    field: Field,
    read: impl FnOnce(&'static str, FieldValue<'a>) -> Result<T, RejectReason>,
) -> Result<Option<T>, RejectReason> {
    raw.get(field).map(|value| read(field.name(), value)).transpose()
}

#[inline(always)]
fn optional_text<'a>(raw: &RawFields<'a>, field: Field, max_chars: usize) -> Result<Cow<'a, str>, RejectReason> {
    let read = |f, r| text(f, r, 0, max_chars, raw.clean_text);
    Ok(optional(raw, field, read)?.unwrap_or(Cow::Borrowed("")))
}

/// Lower-cases without copying text that is lower-case already.
fn lower_case(text: Cow<'_, str>) -> Cow<'_, str> {
    match text.bytes().any(|b| b.is_ascii_uppercase() || !b.is_ascii()) {
        true => Cow::Owned(text.to_lowercase()),
        false => text,
    }
}

/// A JSON string of `min..=max` characters without control characters; borrowed from the
/// message unless it had escapes. `clean`: the caller knows it has neither escapes nor control
/// characters.
#[inline(always)]
fn text<'a>(
    field: &'static str,
    raw: FieldValue<'a>,
    min: usize,
    max: usize,
    clean: bool,
) -> Result<Cow<'a, str>, RejectReason> {
    let raw = match raw {
        FieldValue::Json(raw) if raw.starts_with('"') => raw,
        _ => return Err(RejectReason::WrongType { field, expected: "a string" }),
    };
    let inner = &raw[1..raw.len() - 1];
    let length_error = |chars: usize| RejectReason::OutOfRange {
        field,
        rule: format!("must be {min} to {max} characters long (got {chars})"),
    };
    // The common case: no escapes and no control characters, known for the whole message or
    // checked here in one pass for printable ASCII (a fold without early exit runs over whole
    // vectors). Then only the length is left, in characters, which are counted only when the
    // bytes do not decide: there are never more characters than bytes, and at least one.
    if clean || !inner.bytes().fold(false, |unusual, b| unusual | !(0x20..0x7f).contains(&b) | (b == b'\\')) {
        let fits = match inner.len() {
            bytes if bytes <= max && min <= 1 => bytes >= min,
            _ => (min..=max).contains(&inner.chars().count()),
        };
        return match fits {
            true => Ok(Cow::Borrowed(inner)),
            false => Err(length_error(inner.chars().count())),
        };
    }
    let value: Cow<'a, str> = match inner.contains('\\') {
        false => Cow::Borrowed(inner),
        true => Cow::Owned(
            serde_json::from_str::<String>(raw)
                .map_err(|e| RejectReason::OutOfRange { field, rule: format!("is not a valid string: {e}") })?,
        ),
    };
    let chars = if value.is_ascii() { value.len() } else { value.chars().count() };
    if chars < min || chars > max {
        return Err(length_error(chars));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(RejectReason::OutOfRange {
            field,
            rule: format!("must not contain control characters (found U+{:04X})", c as u32),
        });
    }
    Ok(value)
}

/// A JSON integer (no fraction, no exponent) in `min..=max`.
#[inline(always)]
fn integer(field: &'static str, raw: FieldValue<'_>, min: u64, max: u64) -> Result<u64, RejectReason> {
    let out_of_range = || RejectReason::OutOfRange { field, rule: format!("must be between {min} and {max}") };
    let raw = match raw {
        FieldValue::Count(count) if (min..=max).contains(&count) => return Ok(count),
        FieldValue::Count(_) => return Err(out_of_range()),
        FieldValue::Json(raw) => raw,
    };
    let digits = raw.strip_prefix('-');
    let body = digits.unwrap_or(raw);
    if body.is_empty() {
        return Err(RejectReason::WrongType { field, expected: "an integer" });
    }
    // One pass: every byte a digit (else a wrong type, whatever the length), the value
    // saturating far above any `max`; 19 digits cannot overflow, so they need no saturation.
    let value = match body.len() {
        ..=19 => fold_digits(body, |value, digit| value * 10 + digit),
        _ => fold_digits(body, |value, digit| value.saturating_mul(10).saturating_add(digit)),
    }
    .ok_or(RejectReason::WrongType { field, expected: "an integer" })?;
    if digits.is_some() {
        return if value == 0 && min == 0 { Ok(0) } else { Err(out_of_range()) };
    }
    if value < min || value > max {
        return Err(out_of_range());
    }
    Ok(value)
}

/// The value of a run of ASCII digits, `None` if any byte is not one.
fn fold_digits(digits: &str, step: impl Fn(u64, u64) -> u64) -> Option<u64> {
    digits.bytes().try_fold(0, |value, b| {
        let digit = b.wrapping_sub(b'0');
        (digit <= 9).then(|| step(value, u64::from(digit)))
    })
}

/// RFC 3339 text or epoch milliseconds.
fn timestamp(field: &'static str, raw: FieldValue<'_>, clean: bool) -> Result<i64, RejectReason> {
    let millis = if matches!(raw, FieldValue::Json(text) if text.starts_with('"')) {
        let value = text(field, raw, 1, 64, clean)?;
        match utc_millis(value.as_bytes()) {
            Some(millis) => millis,
            None => chrono::DateTime::parse_from_rfc3339(&value)
                .map_err(|e| RejectReason::OutOfRange { field, rule: format!("is not an RFC 3339 time ({e})") })?
                .timestamp_millis(),
        }
    } else {
        match integer(field, raw, 0, MAX_TIMESTAMP_MS as u64) {
            Ok(ms) => ms as i64,
            Err(RejectReason::WrongType { .. }) => {
                return Err(RejectReason::WrongType { field, expected: "an RFC 3339 string or epoch milliseconds" })
            }
            Err(e) => return Err(e),
        }
    };
    if !(0..MAX_TIMESTAMP_MS).contains(&millis) {
        return Err(RejectReason::OutOfRange { field, rule: "must be between 1970-01-01 and 2106-02-07".into() });
    }
    Ok(millis)
}

/// Epoch milliseconds of `YYYY-MM-DDTHH:MM:SS[.f…]Z`, the layout nearly every producer sends,
/// read without chrono's general parser (a visible share of the decoder's time); `None`
/// for any other text, which chrono then reads or rejects with its own words. Fractions are
/// cut to milliseconds, as chrono does.
fn utc_millis(text: &[u8]) -> Option<i64> {
    let (head, fraction) = text.split_first_chunk::<19>()?;
    let fraction = fraction.strip_suffix(b"Z")?;
    let number = |range: std::ops::Range<usize>| {
        head[range].iter().try_fold(0i64, |value, &b| b.is_ascii_digit().then(|| value * 10 + i64::from(b - b'0')))
    };
    let punctuation = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if punctuation.iter().any(|&(at, byte)| head[at] != byte) {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let days_in_month = *month_days.get(usize::try_from(month).ok()?.checked_sub(1)?)?;
    if !(1..=days_in_month).contains(&day) || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let millis = match fraction {
        [] => 0,
        [b'.', digits @ ..] if (1..=9).contains(&digits.len()) && digits.iter().all(u8::is_ascii_digit) => {
            digits.iter().chain(b"00").take(3).fold(0, |ms, &b| ms * 10 + i64::from(b - b'0'))
        }
        _ => return None,
    };
    // Days since 1970-01-01 of a proleptic Gregorian date (years counted from March).
    let (y, m) = if month <= 2 { (year - 1, month + 9) } else { (year, month - 3) };
    let (era, year_of_era) = (y.div_euclid(400), y.rem_euclid(400));
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + (153 * m + 2) / 5 + day - 1;
    let days = era * 146_097 + day_of_era - 719_468;
    Some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + millis)
}

/// A non-negative JSON number, rounded half-to-even to 12 decimals.
fn cost(field: &'static str, raw: FieldValue<'_>) -> Result<PicoUsd, RejectReason> {
    let raw = match raw {
        FieldValue::Count(dollars) => &dollars.to_string(),
        FieldValue::Json(raw) => raw,
    };
    if !raw.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        return Err(RejectReason::WrongType { field, expected: "a number" });
    }
    let pico = PicoUsd::parse_scaled(raw, 12, true).map_err(|e| match e {
        AmountError::NotDecimal => RejectReason::WrongType { field, expected: "a number" },
        AmountError::Negative => RejectReason::OutOfRange { field, rule: "must be >= 0".into() },
        AmountError::TooPrecise { .. } | AmountError::TooLarge => {
            RejectReason::OutOfRange { field, rule: "must be at most 1000000".into() }
        }
    })?;
    if pico > MAX_COST_PICO {
        return Err(RejectReason::OutOfRange { field, rule: "must be at most 1000000".into() });
    }
    Ok(PicoUsd(pico))
}

mod flat;
#[cfg(test)]
mod tests;
