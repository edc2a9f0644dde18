//! Producers without a Kafka client: `POST /v1/events` (one event or a batch) validates,
//! publishes the valid events keyed by `externalRequestId` and answers what was accepted or
//! rejected and why; the body size, batch size and bearer token are enforced. `costline
//! replay` backfills a JSON-lines file with a validation summary. Everything accepted is
//! counted once.

mod common;

use std::time::Duration;

use common::Setup;

fn event(id: &str, input_tokens: i64) -> String {
    format!(
        r#"{{"externalRequestId":"{id}","provider":"openai","model":"gpt-4o","endpointTag":"ingest.test","inputTokens":{input_tokens},"outputTokens":5,"status":"success"}}"#
    )
}

fn post(port: u16, body: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let mut request =
        ureq::post(&format!("http://127.0.0.1:{port}/v1/events")).header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", &format!("Bearer {token}"));
    }
    let config = request.config().http_status_as_error(false).build();
    let mut response = config.send(body).expect("posting to /v1/events");
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
}

#[test]
fn http_ingest_and_replay_publish_valid_events_and_explain_the_rest() {
    let mut setup = Setup::new("ingest");
    setup.env.push(("COSTLINE_HTTP_TOKEN".into(), "ingest-token".into()));
    setup.env.push(("COSTLINE_HTTP__MAX_BODY_BYTES".into(), "4096".into()));
    setup.env.push(("COSTLINE_HTTP__MAX_BATCH_EVENTS".into(), "5".into()));
    // The topic must exist before a worker subscribes.
    assert!(setup.command(&["produce", "--count", "0"]).status().unwrap().success());
    let worker = setup.spawn_worker("ingest");
    worker.wait_http_up();
    let token = Some("ingest-token");

    assert_eq!(post(worker.port, &event("one", 10), None).0, 401);
    let (status, body) = post(worker.port, &event("one", 10), token);
    assert_eq!((status, body["accepted"].as_u64()), (200, Some(1)), "{body}");

    let batch = format!("[{},{},{}]", event("two", 10), event("bad", -3), event("three", 10));
    let (status, body) = post(worker.port, &batch, token);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 2);
    assert_eq!(body["rejected"][0]["index"], 1);
    assert_eq!(body["rejected"][0]["code"], "out_of_range");
    assert_eq!(body["rejected"][0]["field"], "inputTokens");

    assert_eq!(post(worker.port, "not json", token).0, 400);
    let too_many = format!("[{}]", (0..6).map(|i| event(&format!("many-{i}"), 1)).collect::<Vec<_>>().join(","));
    assert_eq!(post(worker.port, &too_many, token).0, 413);
    let oversized = event(&"x".repeat(120), 1).repeat(40);
    assert_eq!(post(worker.port, &oversized, token).0, 413);

    let lines: Vec<String> =
        (0..100).map(|i| event(&format!("replayed-{i}"), 7)).chain(["{broken".into(), event("neg", -1)]).collect();
    let file = setup.scratch_file("-replay.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let output = setup.command(&["replay", "--file", file.to_str().unwrap(), "--rate", "500"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.starts_with("102 lines: 100 valid, 2 invalid; 100 published"), "{stdout}");
    assert!(
        stdout.contains("malformed_json: 1 (lines 101)") && stdout.contains("out_of_range: 1 (lines 102)"),
        "{stdout}"
    );

    setup.wait_accounted(103, Duration::from_secs(60));
    let counted = setup.query("SELECT count(), uniqExact(external_request_id) FROM usage_events FORMAT TSV");
    assert_eq!(counted.trim(), "103\t103");
    assert_eq!(worker.stop(), 0);
}
