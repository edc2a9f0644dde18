//! The malformed-input corpus end to end: every file of `tests/corpus/` is published among
//! normal generated traffic. Each bad record lands in `rejected_events` with its reason, each
//! `valid--` record is counted with its strings stored verbatim (SQL-looking tags included),
//! and the normal traffic around them is counted exactly as if they were not there.

mod common;

use std::io::Write;

use common::{assert_totals_exact, Setup};

#[test]
fn corpus_records_are_rejected_with_reasons_and_nothing_else_is_affected() {
    let setup = Setup::new("corpus");
    let record_file = setup.scratch_file(".jsonl");
    setup.produce(20_000, 3, 1_790_000_000_000, &record_file);

    let mut record_log = std::fs::OpenOptions::new().append(true).open(&record_file).unwrap();
    let ts = 1_790_000_500_000i64;
    let mut records = Vec::new();
    let mut expectations = Vec::new();
    for entry in std::fs::read_dir(common::repo_root().join("tests/corpus")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some((expected, _)) = name.split_once("--") else { continue };
        let payload = std::fs::read(&path).unwrap();
        let kind = if expected == "valid" { "valid" } else { "invalid" };
        // The independent computation reads only known fields; a 2000-deep unknown field would
        // exceed its JSON reader's nesting limit, so the record log keeps the event without it.
        let logged = String::from_utf8(payload.clone()).ok().map(|text| match text.find(", \"extra\": [") {
            Some(i) => format!("{}}}", &text[..i]),
            None => text,
        });
        writeln!(record_log, "{}", serde_json::json!({"key": name, "ts": ts, "kind": kind, "payload": logged}))
            .unwrap();
        expectations.push((name.clone(), expected.to_string()));
        records.push((name, payload, ts));
    }
    drop(record_log);
    let positions = common::publish(&setup, &records);
    let expected_reasons: Vec<_> = expectations
        .into_iter()
        .zip(positions)
        .filter(|((_, code), _)| code != "valid")
        .map(|((name, code), (partition, offset))| (name, code, partition, offset))
        .collect();

    let worker = setup.spawn_worker("corpus");
    assert_totals_exact(&setup, &record_file);
    assert!(expected_reasons.len() >= 30);
    for (name, code, partition, offset) in &expected_reasons {
        let got = setup.query(&format!(
            "SELECT reason_code FROM rejected_events WHERE kafka_partition = {partition} AND kafka_offset = {offset}"
        ));
        assert_eq!(got.trim(), code, "{name}");
    }
    let stored = setup.query("SELECT endpoint_tag, prompt_version, tenant FROM usage_events WHERE external_request_id = 'corpus-sql-1' FORMAT JSONEachRow");
    let stored: serde_json::Value = serde_json::from_str(stored.trim()).unwrap();
    assert_eq!(stored["endpoint_tag"], "x'); DROP TABLE usage_events; --");
    assert_eq!(stored["prompt_version"], "' OR 1=1 --");
    assert_eq!(stored["tenant"], "\"; SELECT * FROM system.users");
    assert_eq!(worker.stop(), 0);
}
