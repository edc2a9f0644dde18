//! OpenTelemetry GenAI spans in, through `POST /v1/traces`: a Python program with the real
//! OpenTelemetry SDK and OTLP/HTTP exporter (`tests/fixtures/otlp_llm_spans.py`) traces simulated
//! LLM calls (retries, cache reads and writes, errors, spans that are no LLM calls, spans the
//! contract rejects) and exports one batch twice, as an exporter retrying does; an OTLP/JSON
//! request adds a valid and an invalid span. ClickHouse's totals equal the computation from the
//! spans the program and this test write down (`tests/common/expected.rs`), cost included;
//! spans without usage are ignored and counted; rejected spans are in `rejected_events` with
//! their reasons, and the answer reports them as the OTLP partial success.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{
    append_to_record_file, assert_totals_exact, example_tools, now_ms, output_within, repo_root, Setup, Worker,
};

const TOKEN: &str = "otlp-token";

fn post(worker: &Worker, content_type: &str, body: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let mut request =
        ureq::post(&format!("http://127.0.0.1:{}/v1/traces", worker.port)).header("content-type", content_type);
    if let Some(token) = token {
        request = request.header("authorization", &format!("Bearer {token}"));
    }
    let mut response = request.config().http_status_as_error(false).build().send(body).expect("posting to /v1/traces");
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
}

/// An OTLP/JSON span of an LLM call ending at `end_ms`, with or without an endpoint tag.
fn json_span(span_id: &str, end_ms: i64, endpoint_tag: Option<&str>) -> String {
    let tag = endpoint_tag.map_or(String::new(), |tag| {
        format!(r#",{{"key":"costline.endpoint_tag","value":{{"stringValue":"{tag}"}}}}"#)
    });
    format!(
        r#"{{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"{span_id}","name":"chat gpt-4o","kind":3,
            "startTimeUnixNano":"{}","endTimeUnixNano":"{}","attributes":[
            {{"key":"gen_ai.provider.name","value":{{"stringValue":"openai"}}}},
            {{"key":"gen_ai.response.model","value":{{"stringValue":"gpt-4o"}}}},
            {{"key":"gen_ai.usage.input_tokens","value":{{"intValue":"700"}}}},
            {{"key":"gen_ai.usage.output_tokens","value":{{"intValue":70}}}}{tag}]}}"#,
        (end_ms - 2_000) * 1_000_000,
        end_ms * 1_000_000
    )
}

/// Sends a valid and an invalid span as OTLP/JSON and writes down what they must count as.
fn export_json(worker: &Worker, record_file: &Path) {
    let end_ms = now_ms() - 60_000;
    let body = format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"deployment.environment.name","value":{{"stringValue":"dev"}}}}]}},
            "scopeSpans":[{{"scope":{{"name":"json"}},"spans":[{},{}]}}]}}]}}"#,
        json_span("eee19b7ec3c1b174", end_ms, Some("json.test")),
        json_span("eee19b7ec3c1b175", end_ms, None)
    );
    assert_eq!(post(worker, "application/json", &body, None).0, 401, "the token is required");
    assert_eq!(post(worker, "text/plain", &body, Some(TOKEN)).0, 415);
    assert_eq!(post(worker, "application/json", "{broken", Some(TOKEN)).0, 400);
    let (status, answer) = post(worker, "application/json", &body, Some(TOKEN));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["partialSuccess"]["rejectedSpans"], 1, "{answer}");
    let message = answer["partialSuccess"]["errorMessage"].as_str().unwrap_or_default();
    assert!(message.contains("eee19b7ec3c1b175") && message.contains("endpointTag"), "{message}");
    let id = "5b8efff798038103d269b633813fc60c-eee19b7ec3c1b174";
    let valid = serde_json::json!({
        "externalRequestId": id, "provider": "openai", "model": "gpt-4o", "endpointTag": "json.test",
        "environment": "dev", "inputTokens": 700, "outputTokens": 70, "status": "success", "timestamp": end_ms,
    });
    let records = [
        (id.to_string(), valid.to_string().into_bytes(), end_ms),
        ("5b8efff798038103d269b633813fc60c-eee19b7ec3c1b175".to_string(), b"{}".to_vec(), end_ms),
    ];
    append_to_record_file(record_file, &records, &["valid", "invalid"]);
}

#[test]
fn genai_spans_from_the_opentelemetry_sdk_are_counted_exactly() {
    let tools = example_tools("python");
    let mut setup = Setup::new("otlp");
    setup.env.push(("COSTLINE_HTTP_TOKEN".into(), TOKEN.into()));
    assert!(setup.command(&["produce", "--count", "0"]).status().unwrap().success(), "creating the topic");
    let worker = setup.spawn_worker("otlp");
    worker.wait_http_up();

    let record_file = setup.scratch_file("-otlp-records.jsonl");
    let endpoint = format!("http://127.0.0.1:{}/v1/traces", worker.port);
    let mut program = Command::new("python3");
    program
        .arg(repo_root().join("tests/fixtures/otlp_llm_spans.py"))
        .args([endpoint.as_str(), TOKEN, record_file.to_str().unwrap()])
        .env("PYTHONPATH", &tools);
    let output = output_within(&mut program, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the OpenTelemetry program failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).expect("the program's summary");
    export_json(&worker, &record_file);

    let expected = assert_totals_exact(&setup, &record_file);
    assert_eq!(expected.totals().retries, 1, "the rate-limited call's retry");
    assert_eq!(expected.totals().duplicates, 6, "the exported-again batch's LLM spans are duplicates");
    let reasons = setup.query(
        "SELECT field, reason_code, count() FROM rejected_events GROUP BY field, reason_code ORDER BY field FORMAT TSV",
    );
    assert_eq!(
        reasons,
        "cachedInputTokens\tinconsistent_tokens\t2\nendpointTag\tmissing_field\t3\noutputTokens\tout_of_range\t2\n",
        "each rejected span (the batch's ones twice) with its reason"
    );
    let ignored = worker.metric("costline_otlp_spans_total{outcome=\"ignored\"}");
    assert_eq!(ignored, summary["ignored"].as_f64(), "spans without GenAI usage are ignored and counted");
    assert_eq!(worker.stop(), 0);
}
