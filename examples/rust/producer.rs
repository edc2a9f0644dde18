//! Publishes costline usage events from Rust with rdkafka (librdkafka).
//!
//! One event per LLM provider call, keyed by its request id and partitioned with murmur2; a
//! retry is the same request id with the next `attempt`; a send whose outcome is unknown is
//! sent again unchanged, and costline counts the copy as a duplicate. Each delivered event is
//! printed as one JSON line; the exit status is 1 when a delivery failed.
//!
//! ```sh
//! KAFKA_BROKERS=127.0.0.1:9092 COSTLINE_TOPIC=costline.usage.v1 cargo run -p costline --example producer
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

/// A simulated provider call: what its response (or error) reported.
struct Call {
    model: &'static str,
    input_tokens: u64,
    cached_tokens: u64,
    output_tokens: u64,
    status: &'static str,
    error_code: &'static str,
}

const fn call(model: &'static str, input_tokens: u64, output_tokens: u64) -> Call {
    Call { model, input_tokens, cached_tokens: 0, output_tokens, status: "success", error_code: "" }
}

fn usage_event(request_id: &str, attempt: u32, call: &Call) -> String {
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    // costline:event-begin (tests/examples.rs checks these keys against the JSON Schema)
    let event = json!({
        "externalRequestId": request_id,
        "attempt": attempt,
        "provider": "openai",
        "model": call.model,
        "endpointTag": "agents.code_review",
        "promptVersion": "review_v12",
        "userId": "tenant-3",
        "environment": "prod",
        "inputTokens": call.input_tokens,
        "cachedInputTokens": call.cached_tokens,
        "outputTokens": call.output_tokens,
        "latencyMs": 4200,
        "status": call.status,
        "errorCode": call.error_code,
        "timestamp": now_ms,
    });
    // costline:event-end
    event.to_string()
}

/// Sends one event and waits for the broker's acknowledgement (librdkafka retries on its own
/// within `message.timeout.ms`; what still fails is returned).
async fn publish(producer: &FutureProducer, topic: &str, request_id: &str, payload: &str) -> Result<(), String> {
    let record = FutureRecord::to(topic).key(request_id).payload(payload);
    match producer.send(record, Duration::from_secs(30)).await {
        Ok(_) => {
            println!("{payload}");
            Ok(())
        }
        Err((error, _)) => Err(format!("request {request_id} not delivered: {error}")),
    }
}

async fn run() -> Result<(), String> {
    let topic = std::env::var("COSTLINE_TOPIC").unwrap_or_else(|_| "costline.usage.v1".into());
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into()))
        // The Java client's partitioner: librdkafka's default (CRC32) would put a request id in
        // another partition than other producers do, and costline would count it twice.
        .set("partitioner", "murmur2_random")
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        .create()
        .map_err(|e| format!("cannot create the producer: {e}"))?;
    let run = format!(
        "{:x}-{}",
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()),
        std::process::id()
    );
    let requests = [
        (format!("rs-{run}-review"), vec![call("gpt-4.1", 8000, 900)]),
        // Failed once with a server error, then answered partly from the prompt cache.
        (
            format!("rs-{run}-retried"),
            vec![
                Call { status: "error", error_code: "500", ..call("gpt-4.1-mini", 2500, 0) },
                Call { cached_tokens: 1024, ..call("gpt-4.1-mini", 2500, 300) },
            ],
        ),
    ];
    let mut last = None;
    for (request_id, attempts) in &requests {
        for (attempt, result) in (1..).zip(attempts) {
            let payload = usage_event(request_id, attempt, result);
            publish(&producer, &topic, request_id, &payload).await?;
            last = Some((request_id, payload));
        }
    }
    // A send whose acknowledgement never came (a timeout, a crash) is sent again as it was.
    if let Some((request_id, payload)) = last {
        publish(&producer, &topic, request_id, &payload).await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}
