//! The producer examples in `examples/` work and say what the schema says. Each one (Python
//! with confluent-kafka, Node with kafkajs, Rust with rdkafka) runs against Tansu: a retried
//! request, a cache read and a send repeated unchanged, counted exactly (the repeat once) from
//! the events it printed; the OpenTelemetry example's retried call, sent to a worker's
//! `POST /v1/traces`, counts exactly too. The event each builds and the OTLP mapping table in
//! docs/contract.md name exactly the fields of `schemas/usage-event.v1.schema.json`, the single
//! source of the field list.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{append_to_record_file, assert_totals_exact, example_tools, output_within, repo_root, Setup};

const PRODUCERS: [&str; 3] = ["examples/python/producer.py", "examples/node/producer.js", "examples/rust/producer.rs"];

fn schema() -> serde_json::Value {
    let text = std::fs::read_to_string(repo_root().join("schemas/usage-event.v1.schema.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn schema_fields(schema: &serde_json::Value) -> BTreeSet<String> {
    schema["properties"].as_object().expect("schema properties").keys().cloned().collect()
}

/// The quoted keys between an example's `costline:event-begin` and `costline:event-end` lines.
fn event_keys(example: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo_root().join(example)).unwrap();
    let block = text
        .split_once("costline:event-begin")
        .and_then(|(_, rest)| rest.split_once("costline:event-end"))
        .map(|(block, _)| block)
        .unwrap_or_else(|| panic!("{example} has no costline:event-begin … costline:event-end block"));
    let key = regex::Regex::new(r#""([A-Za-z0-9]+)"\s*:"#).unwrap();
    key.captures_iter(block).map(|c| c[1].to_string()).collect()
}

/// The OTLP section of the contract (§6) and the fields its mapping table lists.
fn otlp_mapping_table() -> (String, BTreeSet<String>) {
    let contract = std::fs::read_to_string(repo_root().join("docs/contract.md")).unwrap();
    let start = contract.find("\n## 6. ").expect("docs/contract.md has a §6");
    let section = &contract[start + 1..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let fields = section
        .lines()
        .filter_map(|line| line.strip_prefix("| `")?.split_once('`').map(|(field, _)| field.to_string()))
        .collect();
    (section.to_string(), fields)
}

#[test]
fn the_examples_and_the_otlp_mapping_table_name_the_schemas_fields() {
    let schema = schema();
    let fields = schema_fields(&schema);
    let required: BTreeSet<String> =
        schema["required"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_string()).collect();
    for example in PRODUCERS {
        let keys = event_keys(example);
        let unknown: Vec<_> = keys.difference(&fields).collect();
        assert!(unknown.is_empty(), "{example} sets fields the schema does not have: {unknown:?}");
        let missing: Vec<_> = required.difference(&keys).collect();
        assert!(missing.is_empty(), "{example} leaves out required fields: {missing:?}");
    }
    let (section, mapped) = otlp_mapping_table();
    assert!(section.contains("OpenTelemetry"), "§6 is the OTLP mapping: {section}");
    assert_eq!(mapped, fields, "the OTLP mapping table lists exactly the schema's fields");
    let otel_example = std::fs::read_to_string(repo_root().join("examples/opentelemetry/llm_calls.py")).unwrap();
    let attribute = regex::Regex::new(r#""((?:gen_ai|costline|enduser|deployment)\.[a-z_.]+)""#).unwrap();
    for name in attribute.captures_iter(&otel_example).map(|c| c[1].to_string()) {
        assert!(
            section.contains(&format!("`{name}`")),
            "the OpenTelemetry example sets `{name}`, which §6 does not name"
        );
    }
}

/// The Rust example's binary, built into this test's own target directory (`cargo test --tests`
/// builds no examples; after a change to the crate this build takes a minute).
fn rust_example() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let target_dir = profile_dir.parent().expect("target/<profile>");
    let mut build = Command::new(env!("CARGO"));
    build.args(["build", "--quiet", "-p", "costline", "--example", "producer"]).env("CARGO_TARGET_DIR", target_dir);
    if profile_dir.file_name().is_some_and(|name| name == "release") {
        build.arg("--release");
    }
    let status = build.current_dir(repo_root()).status().expect("running cargo build --example producer");
    assert!(status.success(), "cannot build the Rust example");
    profile_dir.join("examples/producer")
}

/// Runs a producer example against the test's topic and returns the events it says were delivered.
fn run_example(setup: &Setup, mut command: Command) -> Vec<(String, Vec<u8>, i64)> {
    command.env("KAFKA_BROKERS", &setup.brokers).env("COSTLINE_TOPIC", &setup.topic).current_dir(repo_root());
    let output = output_within(&mut command, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{command:?} failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    stdout
        .lines()
        .map(|line| {
            let event: serde_json::Value = serde_json::from_str(line).expect("an example prints one event a line");
            let key = event["externalRequestId"].as_str().expect("externalRequestId").to_string();
            (key, line.as_bytes().to_vec(), event["timestamp"].as_i64().expect("timestamp"))
        })
        .collect()
}

/// Runs the OpenTelemetry example against `worker` and returns the two calls it traces as the
/// events the contract's mapping table makes of them. The example picks its request id and its
/// spans' end times itself: those two are read back from `usage_events`, everything else is
/// what the example sets.
fn run_opentelemetry_example(setup: &Setup, worker: &common::Worker, python: &Path) -> Vec<(String, Vec<u8>, i64)> {
    let mut example = Command::new("python3");
    example
        .arg("examples/opentelemetry/llm_calls.py")
        .env("PYTHONPATH", python)
        .env("COSTLINE_OTLP_ENDPOINT", format!("http://127.0.0.1:{}/v1/traces", worker.port));
    run_example(setup, example);
    let sql = "SELECT external_request_id, attempt, toUnixTimestamp(event_time) FROM usage_events \
               WHERE external_request_id LIKE 'otel-%' ORDER BY attempt FORMAT TSV";
    let rows = common::wait_until(
        Duration::from_secs(60),
        || Some(setup.query(sql)).filter(|rows| rows.lines().count() == 2),
        || "the OpenTelemetry example's two calls never reached usage_events".into(),
    );
    rows.lines()
        .zip([(1800, 0, 0, "rate_limited"), (1800, 240, 1024, "success")])
        .map(|(row, (input, output, cached, status))| {
            let columns: Vec<&str> = row.split('\t').collect();
            let (id, attempt, seconds) = (columns[0], columns[1], columns[2].parse::<i64>().unwrap());
            let event = serde_json::json!({
                "externalRequestId": id, "attempt": attempt.parse::<u32>().unwrap(), "provider": "openai",
                "model": "gpt-4o-2024-08-06", "endpointTag": "checkout.ai_summary", "promptVersion": "summary_v3",
                "userId": "tenant-42", "environment": "prod", "inputTokens": input, "outputTokens": output,
                "cachedInputTokens": cached, "status": status, "timestamp": seconds * 1000,
            });
            (id.to_string(), event.to_string().into_bytes(), seconds * 1000)
        })
        .collect()
}

#[test]
fn each_producer_example_publishes_events_counted_exactly() {
    let python = example_tools("python");
    let node = example_tools("node");
    let rust = rust_example();
    let setup = Setup::new("examples");
    assert!(setup.command(&["produce", "--count", "0"]).status().unwrap().success(), "creating the topic");
    let worker = setup.spawn_worker("examples");
    let record_file = setup.scratch_file("-examples.jsonl");
    std::fs::write(&record_file, "").unwrap();

    let mut python_example = Command::new("python3");
    python_example.arg(PRODUCERS[0]).env("PYTHONPATH", &python);
    let mut node_example = Command::new("node");
    node_example.arg(PRODUCERS[1]).env("NODE_PATH", &node);
    for (name, command) in [("python", python_example), ("node", node_example), ("rust", Command::new(&rust))] {
        let records = run_example(&setup, command);
        assert_eq!(records.len(), 4, "{name}: three calls of two requests and one repeated send: {records:?}");
        append_to_record_file(&record_file, &records, &["valid"; 4]);
    }

    worker.wait_http_up();
    let records = run_opentelemetry_example(&setup, &worker, &python);
    append_to_record_file(&record_file, &records, &["valid"; 2]);

    let expected = assert_totals_exact(&setup, &record_file);
    let totals = expected.totals();
    assert_eq!((totals.requests, totals.attempts, totals.retries, totals.duplicates), (7, 11, 4, 3));
    assert_eq!(totals.unpriced_attempts, 0, "the examples' models are in the price table");
    let statuses = setup.query(
        "SELECT status, error_code FROM usage_events WHERE external_request_id LIKE 'otel-%' ORDER BY attempt FORMAT TSV",
    );
    assert_eq!(statuses, "rate_limited\trate_limited\nsuccess\t\n", "statuses from error.type and the span status");
    assert_eq!(worker.stop(), 0);
}
