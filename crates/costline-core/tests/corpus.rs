//! The malformed-input corpus (`tests/corpus/` at the repository root): every file is decoded
//! and must be rejected with the reason code its name gives, or accepted when named `valid--`.
//! Also: a message over 1 MiB, built here rather than stored.

use costline_core::{decode_event, EventDecoder, MAX_EVENT_BYTES};

#[test]
fn every_corpus_file_gets_the_reason_its_name_gives() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/corpus");
    let mut checked = 0;
    // Also read as one stream by one decoder, which guesses each key from the messages before.
    let mut stream = EventDecoder::default();
    for entry in std::fs::read_dir(&dir).expect("tests/corpus") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some((expected, _)) = name.split_once("--") else {
            continue;
        };
        let payload = std::fs::read(&path).unwrap();
        let decoded = decode_event(&payload);
        assert_eq!(stream.decode(&payload), decoded, "{name} read in a stream");
        match (expected, decoded) {
            ("valid", Ok(_)) => {}
            ("valid", Err(reason)) => panic!("{name} was rejected: {reason}"),
            (code, Ok(event)) => panic!("{name} was accepted ({event:?}), expected {code}"),
            (code, Err(reason)) => {
                assert_eq!(reason.code(), code, "{name}: {reason}");
                assert!(!reason.to_string().is_empty());
            }
        }
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} corpus files");
}

#[test]
fn a_one_mebibyte_string_is_too_large() {
    let payload = format!(r#"{{"externalRequestId":"x","endpointTag":"{}"}}"#, "a".repeat(MAX_EVENT_BYTES));
    assert_eq!(decode_event(payload.as_bytes()).unwrap_err().code(), "too_large");
}
