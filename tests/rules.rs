//! Alert rules on real services: a retry storm, a config drift and a cost spike crafted into the
//! topic fire (once each, whatever the number of evaluations), a drift and a spike with too short
//! a history do not, and normal generated traffic spread over eight hours fires none of them. A
//! burst of thousands of unknown model names is capped into a few alerts and stops no budget
//! alert.

mod common;

use std::time::Duration;

use common::receiver::{signature_is_valid, Receiver};
use common::{publish, wait_until, Setup};
use serde_json::json;

const SECRET: &str = "test-secret-rules";

fn setup_with_rules(name: &str, receiver: &Receiver) -> Setup {
    let mut setup = Setup::new(name);
    setup.flush_interval_ms = 300;
    let config = format!(
        r#"
[alerts]
evaluate_interval_ms = 300
webhooks = ["hook"]

[alerts.retry_storm]
window_secs = 900
max_retry_ratio = 0.5
min_requests = 50

[[webhooks]]
id = "hook"
url = "{}"
secret_env = "COSTLINE_TEST_WEBHOOK_SECRET"
"#,
        receiver.url()
    );
    setup.use_config(&config);
    setup.env.push(("COSTLINE_TEST_WEBHOOK_SECRET".into(), SECRET.into()));
    setup
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn event(
    request: &str,
    attempt: u32,
    endpoint: &str,
    provider: &str,
    model: &str,
    status: &str,
    at_ms: i64,
) -> (String, Vec<u8>, i64) {
    let payload = json!({
        "externalRequestId": request, "attempt": attempt, "provider": provider, "model": model,
        "endpointTag": endpoint, "promptVersion": "v1", "userId": "t1", "inputTokens": 100,
        "outputTokens": 20, "status": status, "timestamp": at_ms,
    });
    (request.to_string(), payload.to_string().into_bytes(), at_ms)
}

/// A call to `endpoint` that cost exactly `cost_usd` (the producer's own figure).
fn costed(request: &str, endpoint: &str, cost_usd: f64, at_ms: i64) -> (String, Vec<u8>, i64) {
    let (key, payload, at_ms) = event(request, 1, endpoint, "openai", "gpt-4o", "success", at_ms);
    let mut payload: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    payload["costUsd"] = json!(cost_usd);
    (key, payload.to_string().into_bytes(), at_ms)
}

/// Six hours at $5, then $50 in the last complete hour and in the current one (the spike is
/// still there if the clock passes an hour boundary during the test); the young endpoint has
/// the same spike after two hours of history only, too few to judge.
fn spike_records(now: i64) -> Vec<(String, Vec<u8>, i64)> {
    const HOUR: i64 = 3_600_000;
    let current_hour = now / HOUR * HOUR;
    let mut records = Vec::new();
    for (endpoint, history_hours) in [("spike.endpoint", 6), ("young.endpoint", 2)] {
        for h in 2..2 + history_hours {
            for i in 0..5 {
                let at = current_hour - h * HOUR + 600_000 + i * 1000;
                records.push(costed(&format!("{endpoint}-h{h}-{i}"), endpoint, 1.0, at));
            }
        }
        for i in 0..50 {
            records.push(costed(&format!("{endpoint}-last-{i}"), endpoint, 1.0, current_hour - HOUR + 600_000 + i));
            records.push(costed(&format!("{endpoint}-now-{i}"), endpoint, 1.0, now - 1000 - i));
        }
    }
    records
}

#[test]
fn rules_fire_once_on_crafted_traffic() {
    let receiver = Receiver::start(vec![]);
    let setup = setup_with_rules("rules_crafted", &receiver);
    let now = now_ms();
    let mut records = Vec::new();
    for i in 0..100 {
        let request = format!("storm-{i}");
        records.push(event(&request, 1, "storm.endpoint", "openai", "gpt-4o-mini", "rate_limited", now - 60_000));
        records.push(event(&request, 2, "storm.endpoint", "openai", "gpt-4o-mini", "rate_limited", now - 50_000));
        records.push(event(&request, 3, "storm.endpoint", "openai", "gpt-4o-mini", "success", now - 40_000));
    }
    // For six hours, up to two hours ago, each endpoint + prompt version was served by gpt-4o;
    // now by Claude. The young endpoint has the same change after two hours of history only,
    // too few to judge.
    for (endpoint, history_hours) in [("drift.endpoint", 6), ("young.drift", 2)] {
        for i in 0..24 {
            let before = (2 + i % history_hours) * 3_600_000;
            let request = format!("{endpoint}-old-{i}");
            records.push(event(&request, 1, endpoint, "openai", "gpt-4o", "success", now - before));
            let request = format!("{endpoint}-new-{i}");
            records.push(event(&request, 1, endpoint, "anthropic", "claude-sonnet-4-5", "success", now - 30_000));
        }
    }
    records.extend(spike_records(now));
    publish(&setup, &records);
    let worker = setup.spawn_worker("crafted");
    setup.wait_accounted(records.len() as u64, Duration::from_secs(60));

    let fired = |rule: &str| {
        setup
            .try_query(&format!(
                "SELECT scope FROM alerts FINAL WHERE source = '{rule}' AND delivery_state = 'delivered'"
            ))
            .unwrap_or_default()
    };
    wait_until(
        Duration::from_secs(60),
        || ["retry_storm", "config_drift", "cost_spike"].iter().all(|rule| !fired(rule).is_empty()).then_some(()),
        || {
            format!(
                "rules did not fire:\n{}",
                setup.try_query("SELECT * FROM alerts FINAL FORMAT TSV").unwrap_or_default()
            )
        },
    );
    std::thread::sleep(Duration::from_secs(3)); // ten more evaluations while the conditions hold
    assert_eq!(fired("retry_storm").trim(), "endpoint=storm.endpoint", "one storm alert, then cooldown");
    assert_eq!(
        fired("config_drift").trim(),
        "endpoint=drift.endpoint,prompt_version=v1,model=anthropic/claude-sonnet-4-5",
        "one drift alert; the young endpoint is not judged"
    );
    assert_eq!(
        fired("cost_spike").trim(),
        "endpoint=spike.endpoint",
        "one spike alert; the young endpoint is not judged"
    );
    let requests = receiver.requests();
    assert!(requests.iter().all(|r| signature_is_valid(r, SECRET)));
    assert!(requests.iter().any(|r| r.body.contains("Retry storm on storm.endpoint")), "no readable summary");
    assert_eq!(worker.stop(), 0);
}

#[test]
fn rules_stay_silent_on_normal_generated_traffic() {
    let receiver = Receiver::start(vec![]);
    let setup = setup_with_rules("rules_normal", &receiver);
    let records = 30_000u64;
    let span_ms = 8 * 3_600_000;
    let record_file = setup.scratch_file(".jsonl");
    let produce = setup
        .produce_command(records, 0, 9, now_ms() - span_ms, &record_file)
        .args(["--spacing-ms", &(span_ms as f64 / records as f64).to_string()])
        .output()
        .unwrap();
    assert!(produce.status.success(), "{}", String::from_utf8_lossy(&produce.stderr));
    let worker = setup.spawn_worker("normal");
    setup.wait_accounted(records, Duration::from_secs(120));
    // Ten evaluations.
    std::thread::sleep(Duration::from_secs(3));
    // The busiest endpoint costs more than the rule's $10 an hour, with hours of history: the
    // cost spike rule judged it.
    let judged = setup.query(
        "SELECT count() FROM (SELECT endpoint_tag, sum(cost_usd) AS cost FROM usage_hour \
         WHERE window_start = toStartOfHour(now()) - 3600 AND environment = 'prod' AND data_mode = 'real' \
         GROUP BY endpoint_tag HAVING cost >= 10)",
    );
    assert_ne!(judged.trim(), "0", "no endpoint was costly enough for the cost spike rule to judge");
    let noisy = setup.query("SELECT source, scope FROM alerts FINAL WHERE source IN ('retry_storm', 'config_drift', 'cost_spike') FORMAT TSV");
    assert_eq!(noisy, "", "rules fired on normal traffic");
    let unpriced = setup.query("SELECT scope FROM alerts FINAL WHERE source = 'unpriced_model'");
    assert_eq!(unpriced.trim(), "model=acme/acme-llm-2", "the generator's unpriced model is reported");
    assert_eq!(worker.stop(), 0);
}

#[test]
fn a_burst_of_unknown_models_is_capped_and_budget_alerts_still_fire() {
    common::clear_of_midnight(Duration::from_secs(300));
    let receiver = Receiver::start(vec![]);
    let mut setup = setup_with_rules("rules_unknown_models", &receiver);
    // The rules' webhook, plus a budget crossed by the first priced call. The default cap
    // (`alerts.max_alerts_per_rule`, 20) applies.
    let mut config = std::fs::read_to_string(setup.config_file.as_ref().unwrap()).unwrap();
    config.push_str(
        r#"
[[budgets]]
id = "tiny"
period = "day"
limit_usd = "0.000001"
thresholds = [100]
webhooks = ["hook"]
"#,
    );
    setup.use_config(&config);
    // 8,000 distinct unknown models: their alert ids alone (38 bytes each) would make a query
    // larger than ClickHouse's max_query_size of 256 KiB.
    const MODELS: usize = 8_000;
    let now = now_ms();
    let mut lines = String::new();
    for i in 0..MODELS {
        let (_, payload, _) = event(
            &format!("ghost-{i}"),
            1,
            "ghost.endpoint",
            "openai",
            &format!("ghost-model-{i:05}"),
            "success",
            now - 30_000,
        );
        lines.push_str(std::str::from_utf8(&payload).unwrap());
        lines.push('\n');
    }
    for i in 0..20 {
        let (_, payload, _) = costed(&format!("priced-{i}"), "priced.endpoint", 0.01, now - 20_000);
        lines.push_str(std::str::from_utf8(&payload).unwrap());
        lines.push('\n');
    }
    let file = setup.scratch_file("-ghosts.jsonl");
    std::fs::write(&file, lines).unwrap();
    let replay = setup.command(&["replay", "--file", file.to_str().unwrap()]).output().unwrap();
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    let worker = setup.spawn_worker("unknown_models");
    setup.wait_accounted(MODELS as u64 + 20, Duration::from_secs(120));

    let delivered = |source: &str| {
        setup
            .try_query(&format!(
                "SELECT count() FROM alerts FINAL WHERE source = '{source}' AND delivery_state = 'delivered'"
            ))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    wait_until(
        Duration::from_secs(60),
        || (delivered("tiny") > 0 && delivered("unpriced_model") >= 21).then_some(()),
        || {
            format!(
                "the budget alert or the capped unpriced-model alerts were not delivered; alerts by source:\n{}\nlog:\n{}",
                setup.try_query("SELECT source, delivery_state, count() FROM alerts FINAL GROUP BY source, delivery_state FORMAT TSV").unwrap_or_default(),
                worker.log().lines().filter(|l| l.contains("WARN")).take(5).collect::<Vec<_>>().join("\n")
            )
        },
    );
    std::thread::sleep(Duration::from_secs(3)); // ten more evaluations while all models are still unpriced
    let scopes = setup.query("SELECT scope FROM alerts FINAL WHERE source = 'unpriced_model' ORDER BY scope");
    let scopes: Vec<&str> = scopes.lines().collect();
    assert_eq!(scopes.len(), 21, "20 models alerted on their own and one alert for the rest: {scopes:?}");
    assert!(
        scopes.iter().filter(|s| **s != "others").all(|s| s.starts_with("model=openai/ghost-model-")),
        "{scopes:?}"
    );
    let others = setup.query(
        "SELECT value, summary FROM alerts FINAL WHERE source = 'unpriced_model' AND scope = 'others' FORMAT TSV",
    );
    let (value, summary) = others.trim().split_once('\t').unwrap();
    let more: f64 = value.parse().unwrap();
    assert!((1.0..=(MODELS - 20) as f64).contains(&more), "{others}");
    assert!(summary.contains(&format!("{more} more scopes beyond the 20")), "{summary}");
    let (_, metrics) = worker.http_get("/metrics");
    assert!(!metrics.contains("costline_alert_evaluations_total{result=\"failed\"}"), "{metrics}");
    assert_eq!(worker.stop(), 0);
}
