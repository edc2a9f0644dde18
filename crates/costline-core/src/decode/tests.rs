use proptest::prelude::*;

use super::*;

const GOOD: &str = r#"{"externalRequestId":"req-1","provider":"OpenAI","model":"gpt-4o","endpointTag":"checkout.ai_summary","inputTokens":1200,"outputTokens":300,"status":"success"}"#;

fn with(extra: &str) -> String {
    format!("{}{extra}}}", &GOOD[..GOOD.len() - 1])
}

fn reason(payload: &str) -> String {
    decode_event(payload.as_bytes()).expect_err("must be rejected").to_string()
}

#[test]
fn minimal_event_gets_defaults() {
    let event = decode_event(GOOD.as_bytes()).unwrap();
    assert_eq!(event.provider, "openai");
    assert_eq!((&*event.prompt_version, &*event.user_id), ("", ""));
    assert_eq!((&*event.environment, event.data_mode, event.attempt), ("prod", DataMode::Real, 1));
    assert_eq!((event.timestamp_ms, event.cost_usd, event.latency_ms), (None, None, None));
}

#[test]
fn full_event_and_unknown_fields() {
    let payload = with(
        r#","promptVersion":"summary_v3","userId":"t-9","cachedInputTokens":200,"cacheWriteTokens":100,"cacheWrite1hTokens":50,"latencyMs":812,"dataMode":"test","environment":"staging","attempt":2,"timestamp":"2025-05-01T10:00:00.250+02:00","costUsd":0.0123,"errorCode":"","extra":{"deep":[1,2,{"x":null}]}"#,
    );
    let event = decode_event(payload.as_bytes()).unwrap();
    assert_eq!(event.timestamp_ms, Some(1_746_086_400_250));
    assert_eq!(event.cost_usd, Some(PicoUsd(12_300_000_000)));
    assert_eq!((event.cached_input_tokens, event.cache_write_tokens, event.cache_write_1h_tokens), (200, 100, 50));
    assert_eq!(event.latency_ms, Some(812));
    assert_eq!((event.data_mode, event.attempt, &*event.environment), (DataMode::Test, 2, "staging"));
}

#[test]
fn epoch_millis_and_null_optionals() {
    let payload = with(r#","timestamp":1746086400250,"promptVersion":null,"costUsd":2"#);
    let event = decode_event(payload.as_bytes()).unwrap();
    assert_eq!(event.timestamp_ms, Some(1_746_086_400_250));
    assert_eq!(event.cost_usd, Some(PicoUsd(2 * crate::money::PICO_PER_USD)));
    assert_eq!(event.prompt_version, "");
}

#[test]
fn unicode_and_escapes_count_characters() {
    let tag = "é".repeat(128);
    let payload = with(&format!(r#","promptVersion":"{tag}","userId":"a\"b\u00e9""#));
    let event = decode_event(payload.as_bytes()).unwrap();
    assert_eq!(event.prompt_version, tag);
    assert_eq!(event.user_id, "a\"bé");
    assert_eq!(
        reason(&with(&format!(r#","promptVersion":"{}""#, "é".repeat(129)))),
        "field `promptVersion` must be 0 to 128 characters long (got 129)"
    );
}

#[test]
fn precise_reasons() {
    let cases: &[(&str, &str)] = &[
        (r#"{"provider":"openai"}"#, "required field `externalRequestId` is missing"),
        (&GOOD.replace("1200", "-5"), "field `inputTokens` must be between 0 and 1000000000"),
        (&GOOD.replace("1200", "1000000001"), "field `inputTokens` must be between 0 and 1000000000"),
        (&GOOD.replace("1200", "12.5"), "field `inputTokens` must be an integer"),
        (&GOOD.replace("1200", "\"1200\""), "field `inputTokens` must be an integer"),
        (&GOOD.replace("1200", "99999999999999999999999"), "field `inputTokens` must be between 0 and 1000000000"),
        (&GOOD.replace("1200", "9999999999999999999"), "field `inputTokens` must be between 0 and 1000000000"),
        (&GOOD.replace("1200", "18446744073709551616"), "field `inputTokens` must be between 0 and 1000000000"),
        (&GOOD.replace("\"req-1\"", "\"\""), "field `externalRequestId` must be 1 to 128 characters long (got 0)"),
        (&GOOD.replace("\"req-1\"", "7"), "field `externalRequestId` must be a string"),
        (
            &with(r#","cachedInputTokens":1201"#),
            "token counts are inconsistent: cachedInputTokens must be <= inputTokens",
        ),
        (
            &with(r#","cachedInputTokens":1000,"cacheWriteTokens":201"#),
            "token counts are inconsistent: cacheWriteTokens must be <= inputTokens - cachedInputTokens",
        ),
        (
            &with(r#","cachedInputTokens":1000,"cacheWriteTokens":100,"cacheWrite1hTokens":101"#),
            "token counts are inconsistent: cacheWrite1hTokens must be <= inputTokens - cachedInputTokens - cacheWriteTokens",
        ),
        (&with(r#","cacheWrite1hTokens":-1"#), "field `cacheWrite1hTokens` must be between 0 and 1000000000"),
        (&with(r#","dataMode":"prod""#), "field `dataMode` must be one of real, test, demo (got \"prod\")"),
        (&with(r#","attempt":0"#), "field `attempt` must be between 1 and 10000"),
        (&with(r#","costUsd":-1"#), "field `costUsd` must be >= 0"),
        (&with(r#","costUsd":"1.0""#), "field `costUsd` must be a number"),
        (&with(r#","costUsd":1000001"#), "field `costUsd` must be at most 1000000"),
        (&with(r#","timestamp":4294967296000"#), "field `timestamp` must be between 0 and 4294967295000"),
        (&with(r#","latencyMs":86400001"#), "field `latencyMs` must be between 0 and 86400000"),
        (&with(r#","timestamp":"yesterday""#), "field `timestamp` is not an RFC 3339 time (premature end of input)"),
        (&with(r#","timestamp":true"#), "field `timestamp` must be an RFC 3339 string or epoch milliseconds"),
        (&with(r#","endpointTag":"x""#), "field `endpointTag` appears more than once"),
        (
            &GOOD.replace("req-1", "req\\u0000"),
            "field `externalRequestId` must not contain control characters (found U+0000)",
        ),
        ("[1,2]", "payload is JSON but not an object"),
        ("42", "payload is JSON but not an object"),
        ("", "payload is not valid JSON: EOF while parsing a value at line 1 column 0"),
        (&GOOD[..40], "payload is not valid JSON: EOF while parsing a value at line 1 column 40"),
        (&format!("{GOOD} {{}}"), "payload is not valid JSON: trailing characters at line 1 column 161"),
        (&with(r#","x":NaN"#), "payload is not valid JSON: expected value at line 1 column 164"),
    ];
    for (payload, expected) in cases {
        assert_eq!(&reason(payload), expected, "payload: {payload}");
    }
}

#[test]
fn codes_and_fields_are_stable() {
    let err = decode_event(GOOD.replace("1200", "-5").as_bytes()).unwrap_err();
    assert_eq!((err.code(), err.field()), ("out_of_range", "inputTokens"));
    let err = decode_event(&[0xff, 0xfe]).unwrap_err();
    assert_eq!(err.code(), "invalid_utf8");
    assert_eq!(err.to_string(), "payload is not valid UTF-8 (valid up to byte 0)");
}

#[test]
fn a_plain_event_with_bytes_that_are_not_utf8_is_rejected_where_they_start() {
    // The fast path skips the UTF-8 check only for all-ASCII messages: a byte above 0x7F sends
    // the message through the full check, here inside a string that is otherwise plain.
    let at = GOOD.find("checkout").expect("a tag") + 3;
    for bad in [&[0xff][..], &[0xc3], &[0xe2, 0x82], &[0xed, 0xa0, 0x80]] {
        let mut payload = GOOD.as_bytes().to_vec();
        payload.splice(at..at, bad.iter().copied());
        let err = decode_event(&payload).unwrap_err();
        assert_eq!(
            (err.code(), err.to_string()),
            ("invalid_utf8", format!("payload is not valid UTF-8 (valid up to byte {at})"))
        );
    }
}

#[test]
fn oversized_and_deeply_nested_payloads() {
    let big = with(&format!(r#","pad":"{}""#, "x".repeat(MAX_EVENT_BYTES)));
    assert_eq!(decode_event(big.as_bytes()).unwrap_err().code(), "too_large");
    // Unknown fields are skipped without recursion, however deep; a known field must have its type.
    let deep = with(&format!(r#","deep":{}{}"#, "[".repeat(100_000), "]".repeat(100_000)));
    assert!(decode_event(deep.as_bytes()).is_ok());
    let deep = GOOD.replace("\"gpt-4o\"", &format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)));
    assert_eq!(reason(&deep), "field `model` must be a string");
}

#[test]
fn text_that_is_not_printable_ascii_is_checked_on_the_fast_path_too() {
    // No escapes: these take the fast path, which skips the per-field check only for messages
    // without DEL and without the lead byte of C1 controls.
    let tag = |text: &str| GOOD.replace("checkout.ai_summary", text);
    assert_eq!(&*decode_event(tag(&"é".repeat(128)).as_bytes()).unwrap().endpoint_tag, "é".repeat(128));
    assert_eq!(reason(&tag(&"é".repeat(129))), "field `endpointTag` must be 1 to 128 characters long (got 129)");
    assert_eq!(reason(&tag("a\u{7f}b")), "field `endpointTag` must not contain control characters (found U+007F)");
    assert_eq!(reason(&tag("a\u{85}b")), "field `endpointTag` must not contain control characters (found U+0085)");
    assert_eq!(reason(&tag(&"x".repeat(129))), "field `endpointTag` must be 1 to 128 characters long (got 129)");
    assert_eq!(reason(&tag(&"🧪".repeat(129))), "field `endpointTag` must be 1 to 128 characters long (got 129)");
    assert_eq!(&*decode_event(tag(&"🧪".repeat(128)).as_bytes()).unwrap().endpoint_tag, "🧪".repeat(128));
    let clean = |text: &str| {
        let mut raw = RawFields::new();
        flat::scan(text.as_bytes(), &mut raw, &mut flat::KeyOrder::default()).map(|()| raw.clean_text)
    };
    assert_eq!([clean(GOOD), clean(&tag("ü")), clean(&tag("🧪"))], [Some(true); 3]);
    // U+00A9 (C2 A9) is no control character, but shares the C1 controls' lead byte.
    assert_eq!([clean(&tag("a\u{7f}b")), clean(&tag("a\u{85}b")), clean(&tag("©"))], [Some(false); 3]);
    assert_eq!(&*decode_event(tag("©").as_bytes()).unwrap().endpoint_tag, "©");
}

#[test]
fn sql_looking_tags_are_plain_data() {
    let payload = GOOD.replace("checkout.ai_summary", "x'); DROP TABLE usage_events; --");
    let event = decode_event(payload.as_bytes()).unwrap();
    assert_eq!(event.endpoint_tag, "x'); DROP TABLE usage_events; --");
}

/// Raw field texts, in `Field` order (counts the fast path read written as JSON again).
type RawTexts = Vec<Option<String>>;

fn texts(fields: &RawFields<'_>) -> RawTexts {
    let text = |value: &FieldValue<'_>| match value {
        FieldValue::Json(text) => text.to_string(),
        FieldValue::Count(count) => count.to_string(),
    };
    fields.values.iter().map(|value| value.as_ref().map(text)).collect()
}

/// What the fast path and serde_json make of one text: `None` when the fast path gives up.
fn both_walks(text: &str) -> Option<(RawTexts, Result<RawTexts, String>)> {
    both_walks_after(text, text)
}

/// [`both_walks`], the fast path having read `before` first, so that it expects `before`'s
/// keys in `before`'s order. It must read `text` as it does knowing no order.
fn both_walks_after(before: &str, text: &str) -> Option<(RawTexts, Result<RawTexts, String>)> {
    let mut unprepared = RawFields::new();
    let unprepared_read = flat::scan(text.as_bytes(), &mut unprepared, &mut flat::KeyOrder::default());
    let mut order = flat::KeyOrder::default();
    let _ = flat::scan(before.as_bytes(), &mut RawFields::new(), &mut order);
    let mut fast = RawFields::new();
    let fast_read = flat::scan(text.as_bytes(), &mut fast, &mut order);
    assert_eq!(
        fast_read.map(|()| texts(&fast)),
        unprepared_read.map(|()| texts(&unprepared)),
        "{text} read after {before}"
    );
    fast_read?;
    let mut slow = RawFields::new();
    let slow_result = walk(text, &mut slow).map(|()| texts(&slow)).map_err(|e| e.to_string());
    Some((texts(&fast), slow_result))
}

#[test]
fn fast_path_reads_counts_and_leaves_other_numbers_as_text() {
    let cases = [
        ("1200", FieldValue::Count(1200)),
        ("0", FieldValue::Count(0)),
        ("9999999999999999999", FieldValue::Count(9_999_999_999_999_999_999)),
        ("18446744073709551616", FieldValue::Json("18446744073709551616")),
        ("-0", FieldValue::Json("-0")),
        ("-5", FieldValue::Json("-5")),
        ("12.5", FieldValue::Json("12.5")),
        ("1e3", FieldValue::Json("1e3")),
        ("\"12\"", FieldValue::Json("\"12\"")),
    ];
    for (written, read) in cases {
        let text = GOOD.replace("1200", written);
        let mut fast = RawFields::new();
        flat::scan(text.as_bytes(), &mut fast, &mut flat::KeyOrder::default())
            .expect("a plain event takes the fast path");
        assert_eq!(fast.values[Field::InputTokens as usize], Some(read), "{written}");
    }
}

#[test]
fn fast_path_takes_plain_events_and_leaves_the_rest() {
    let plain = with(r#", "costUsd": 1.5e-3 ,"latencyMs":0,"dataMode":null,"x":true,"y":false,"z":-0.25E+2"#);
    let (fast, slow) = both_walks(&plain).expect("a flat, plain object takes the fast path");
    assert_eq!(Ok(fast), slow);
    for other in [
        with(r#","extra":{"nested":1}"#),
        with(r#","extra":[1]"#),
        with(r#","userId":"a\"b""#),
        with(r#","model":"again""#),
        with(r#","x":01"#),
        with(r#","x":1."#),
        with(r#","x":tru"#),
        format!("{GOOD} x"),
        "[1]".to_string(),
    ] {
        assert!(both_walks(&other).is_none(), "fast path took {other}");
    }
}

#[test]
fn fast_path_takes_spaces_around_every_token() {
    let inner = &GOOD[1..GOOD.len() - 1];
    let spaced = format!("  {{  {}  }}  ", inner.replace(':', " : ").replace(',', "  , "));
    let (fast, slow) = both_walks(&spaced).expect("spaces between tokens stay on the fast path");
    assert_eq!(Ok(fast), slow);
    assert_eq!(decode_event(spaced.as_bytes()).unwrap(), decode_event(GOOD.as_bytes()).unwrap());
    for empty in ["{}", " { } "] {
        let (fast, slow) = both_walks(empty).expect("an empty object takes the fast path");
        assert_eq!(Ok(fast), slow);
    }
    // Tabs and line breaks are control characters: serde_json reads those messages, the same.
    let broken = format!("\t{{\n{}\r\n}}\n", inner.replace(',', ",\n\t"));
    assert!(both_walks(&broken).is_none());
    assert_eq!(decode_event(broken.as_bytes()).unwrap(), decode_event(GOOD.as_bytes()).unwrap());
}

#[test]
fn fast_path_finds_quotes_across_lanes_and_words() {
    // Every alignment of the strings after the pad against the pass's 16-byte lanes and 64-bit
    // words, up to the last byte the quote bits cover.
    let limit = 64 * flat::QUOTE_WORDS;
    let text_of = |pad| format!(r#"{{"pad":"{}","#, "x".repeat(pad)) + &GOOD[1..];
    let longest = limit - text_of(0).len();
    for pad in (0..200).chain([1_000, 1_009, longest - 1, longest]) {
        let text = text_of(pad);
        let (fast, slow) = both_walks(&text).unwrap_or_else(|| panic!("fast path gave up with a pad of {pad}"));
        assert_eq!(Ok(fast), slow, "pad of {pad}");
    }
    // Longer messages are serde_json's, and decode the same.
    for pad in [longest + 1, 5_000] {
        let text = text_of(pad);
        assert!(both_walks(&text).is_none(), "fast path took {} bytes", text.len());
        assert_eq!(decode_event(text.as_bytes()).unwrap(), decode_event(GOOD.as_bytes()).unwrap());
    }
}

#[test]
fn utc_timestamps_are_read_like_chrono_reads_them() {
    let chrono_ms = |text: &str| chrono::DateTime::parse_from_rfc3339(text).ok().map(|t| t.timestamp_millis());
    for text in [
        "2026-09-21T14:13:18.076Z",
        "1970-01-01T00:00:00Z",
        "2024-02-29T23:59:59.9Z",
        "2000-02-29T12:00:00.123456789Z",
        "2106-02-07T06:28:15.999Z",
    ] {
        assert_eq!(utc_millis(text.as_bytes()), chrono_ms(text), "{text}");
        assert!(utc_millis(text.as_bytes()).is_some(), "{text} takes the fast path");
    }
    // Left to chrono: other layouts and offsets, and what is no date at all.
    for text in [
        "2023-02-29T00:00:00Z",
        "1900-02-29T00:00:00Z",
        "2026-04-31T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-00-10T00:00:00Z",
        "2026-01-00T00:00:00Z",
        "2026-01-01T24:00:00Z",
        "2026-01-01T23:60:00Z",
        "2026-01-01T23:59:60Z",
        "2026-01-01t10:00:00Z",
        "2026-01-01T10:00:00z",
        "2026-01-01 10:00:00Z",
        "2026-01-01T10:00:00+02:00",
        "2026-01-01T10:00:00.Z",
        "2026-01-01T10:00:00.1234567890Z",
        "2026-01-01T10:00:00",
        "+2026-01-01T10:00:00Z",
        "2026-1-01T10:00:00Z",
    ] {
        assert_eq!(utc_millis(text.as_bytes()), None, "{text}");
    }
    let payload = with(r#","timestamp":"2024-02-29T23:59:59.9Z""#);
    let event = decode_event(payload.as_bytes()).unwrap();
    assert_eq!(event.timestamp_ms, chrono_ms("2024-02-29T23:59:59.9Z"));
}

#[test]
fn text_around_non_ascii_characters_is_cut_at_boundaries() {
    // A multi-byte character at every position of events with every kind of value: the fast
    // path cuts keys and values without index checks (`flat::token`), which is sound only if
    // every cut is a character boundary (its debug assertion checks each one), and where it
    // reads the text it must read what serde_json reads.
    let bases = [
        GOOD.to_string(),
        with(
            r#","costUsd":0.0123,"latencyMs":812,"timestamp":1746086400250,"promptVersion":null,"flag":true,"x":false,"n":-1.5e+10"#,
        ),
    ];
    let mut taken = 0;
    for base in &bases {
        for at in (0..=base.len()).filter(|&at| base.is_char_boundary(at)) {
            for wide in ["é", "🧪", "\u{85}", "©"] {
                let text = format!("{}{wide}{}", &base[..at], &base[at..]);
                if let Some((fast, slow)) = both_walks(&text) {
                    assert_eq!(Ok(fast), slow, "{text}");
                    taken += 1;
                }
            }
        }
    }
    // Inside the strings the fast path still reads them: most insertions are there.
    assert!(taken > 300, "the fast path took only {taken} texts");
}

proptest! {
    /// Every time the fast path reads, chrono reads as the same instant; every valid UTC time
    /// in this layout takes the fast path.
    #[test]
    fn utc_millis_agrees_with_chrono(
        year in 0i64..=9999, month in 0u32..=13, day in 0u32..=32,
        hour in 0u32..=24, minute in 0u32..=60, second in 0u32..=60,
        fraction in proptest::option::of("[0-9]{1,9}"),
    ) {
        let fraction = fraction.map(|digits| format!(".{digits}")).unwrap_or_default();
        let text = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{fraction}Z");
        let chrono_ms = chrono::DateTime::parse_from_rfc3339(&text).ok().map(|t| t.timestamp_millis());
        let fast = utc_millis(text.as_bytes());
        if second < 60 {
            prop_assert_eq!(fast, chrono_ms, "{}", text);
        } else {
            prop_assert_eq!(fast, None, "{}", text);
        }
    }

    /// Wherever the fast path accepts a text, serde_json accepts it too and reads the same raw
    /// values: mutated events (bytes inserted, removed, replaced by JSON's own characters).
    #[test]
    fn fast_path_agrees_with_serde_json(
        base in 0usize..3,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..3, prop::sample::select(
            &[b'"', b'\\', b',', b':', b'{', b'}', b'[', b']', b' ', b'\n', b'0', b'1', b'-', b'+', b'.', b'e', b'E',
              b'a', b't', b'n', b'u', b'l', b'f', 0x01, 0x7f][..])), 0..4),
    ) {
        let bases = [
            GOOD.to_string(),
            with(r#","costUsd":0.0123,"latencyMs":812,"timestamp":1746086400250,"promptVersion":null,"flag":true"#),
            with(r#" , "userId" : "t-9" , "errorCode" : "" , "attempt" : 2 , "n" : -1.5e+10 "#),
        ];
        let mut bytes = bases[base].clone().into_bytes();
        for (at, kind, byte) in edits {
            let i = at.index(bytes.len() + 1);
            match kind {
                0 => bytes.insert(i, byte),
                1 if i < bytes.len() => { bytes.remove(i); }
                _ if i < bytes.len() => bytes[i] = byte,
                _ => {}
            }
        }
        if let Ok(text) = std::str::from_utf8(&bytes) {
            // Read alone, and after the unedited message (whose key order it mostly repeats).
            for before in [text, &bases[base]] {
                if let Some((fast, slow)) = both_walks_after(before, text) {
                    prop_assert_eq!(Ok(fast), slow, "{} after {}", text, before);
                }
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_event(&bytes);
    }

    #[test]
    fn arbitrary_json_values_never_panic(text in "\\{(\"[a-zA-Z]{1,18}\":(-?[0-9]{1,25}(\\.[0-9]{1,5})?|\"[^\"\\\\]{0,20}\"|null|true|\\[\\]),){0,20}\"z\":0\\}") {
        let _ = decode_event(text.as_bytes());
    }

    #[test]
    fn valid_token_counts_round_trip(input in 0u64..=MAX_TOKENS, output in 0u64..=MAX_TOKENS, split in 0u64..=100) {
        let cached = input / 100 * split;
        let payload = GOOD
            .replace("1200", "INPUT")
            .replace("300", &output.to_string())
            .replace("INPUT", &input.to_string());
        let payload = format!("{}{}}}", &payload[..payload.len() - 1], format_args!(",\"cachedInputTokens\":{cached}"));
        let event = decode_event(payload.as_bytes()).unwrap();
        prop_assert_eq!((event.input_tokens, event.output_tokens, event.cached_input_tokens), (input, output, cached));
    }
}

#[test]
fn duplicate_key_in_the_middle() {
    let err = decode_event(br#"{"model":"a","model":"b","x":1}"#).unwrap_err();
    assert_eq!(err.code(), "duplicate_field", "{err}");
    // `null` counts as absent, but a key given twice is an error whatever its values.
    for twice in [r#""model":null,"model":"b""#, r#""model":"a","model":null"#, r#""model":null , "model":null"#] {
        let err = decode_event(with(&format!(",{twice}")).as_bytes()).unwrap_err();
        assert_eq!(err.code(), "duplicate_field", "{twice}: {err}");
        let escaped = with(&format!(r#","userId":"a\"b",{twice}"#));
        assert_eq!(decode_event(escaped.as_bytes()).unwrap_err().code(), "duplicate_field", "{escaped}");
    }
}

#[test]
fn a_decoder_reads_each_message_as_if_it_were_the_first() {
    let inner = &GOOD[1..GOOD.len() - 1];
    let reversed = format!("{{{}}}", inner.split(',').rev().collect::<Vec<_>>().join(","));
    let stream = [
        GOOD.to_string(),
        GOOD.to_string(),
        reversed,
        with(r#","costUsd":0.5"#),
        GOOD.replacen(r#""model":"gpt-4o","#, r#""unknown":1,"model":"gpt-4o","#, 1),
        GOOD.replacen(r#""model":"#, r#""model" :"#, 1),
        GOOD.replacen(r#""status":"success""#, r#""status":"error","status":"success""#, 1),
        GOOD.replacen(r#""model":"#, r#""mod\u0065l":"#, 1),
        r#"{"externalRequestId":"req-2"}"#.to_string(),
        "{}".to_string(),
        GOOD.replacen("gpt-4o", "o3", 1),
        GOOD.replacen(r#""provider":"OpenAI","#, "", 1),
        GOOD.to_string(),
    ];
    let mut decoder = EventDecoder::default();
    for message in &stream {
        let first = decode_event(message.as_bytes()).map_err(|e| e.to_string());
        assert_eq!(decoder.decode(message.as_bytes()).map_err(|e| e.to_string()), first, "{message}");
    }
    // After a message, each of its keys is the first guess after the one before it.
    let mut order = flat::KeyOrder::default();
    flat::scan(GOOD.as_bytes(), &mut RawFields::new(), &mut order).unwrap();
    let fields: Vec<Field> = inner.split(',').map(|pair| Field::from_key(pair.split('"').nth(1).unwrap())).collect();
    assert_eq!(order.guesses_after(None), [Field::ExternalRequestId, Field::Unknown]);
    for pair in fields.windows(2) {
        assert_eq!(order.guesses_after(Some(pair[0])), [pair[1], Field::Unknown]);
    }
    // Another key after `model`: it becomes the first guess, and the old one the second.
    flat::scan(br#"{"externalRequestId":"r","model":"x","userId":"u"}"#, &mut RawFields::new(), &mut order).unwrap();
    assert_eq!(order.guesses_after(Some(Field::Model)), [Field::UserId, Field::EndpointTag]);
    // Met again, the second guess moves to the front.
    flat::scan(GOOD.as_bytes(), &mut RawFields::new(), &mut order).unwrap();
    assert_eq!(order.guesses_after(Some(Field::Model)), [Field::EndpointTag, Field::UserId]);
}
