//! Webhook delivery: retries with backoff on 5xx and timeouts until the receiver accepts,
//! with the same idempotency key every time; a receiver that is down across a worker restart
//! gets the alert once it is back (the outbox is in ClickHouse); a redirect is never followed;
//! a receiver that hangs holds up neither the evaluations nor the other webhooks; and a
//! delivery error never shows the secret parts of the URL.

mod common;

use std::time::{Duration, Instant};

use common::receiver::{signature_is_valid, Receiver, Reply};
use common::{free_port, publish, wait_for_alerts, wait_until, Setup};

const SECRET: &str = "test-secret-webhooks";

/// A setup whose only budget is crossed by the first flush (limit of one micro-dollar).
fn setup_with_tiny_budget(name: &str, webhook_url: &str) -> Setup {
    // The events and the alert's daily period must be the same day.
    common::clear_of_midnight(Duration::from_secs(180));
    let mut setup = Setup::new(name);
    setup.flush_interval_ms = 300;
    let config = format!(
        r#"
[alerts]
evaluate_interval_ms = 300
retry_initial_ms = 200
retry_max_ms = 1000

[[webhooks]]
id = "hook"
url = "{webhook_url}"
secret_env = "COSTLINE_TEST_WEBHOOK_SECRET"
timeout_ms = 1000

[[budgets]]
id = "tiny"
period = "day"
limit_usd = "0.000001"
thresholds = [100]
webhooks = ["hook"]
"#
    );
    setup.use_config(&config);
    setup.env.push(("COSTLINE_TEST_WEBHOOK_SECRET".into(), SECRET.into()));
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    setup.produce(2_000, 5, now_ms - 10_000, &setup.scratch_file(".jsonl"));
    setup
}

#[test]
fn retries_5xx_and_timeouts_with_the_same_idempotency_key() {
    let script = vec![Reply::Status(500), Reply::Status(500), Reply::Status(500), Reply::Hang(Duration::from_secs(3))];
    let receiver = Receiver::start(script);
    let setup = setup_with_tiny_budget("webhook_retries", &receiver.url());
    let worker = setup.spawn_worker("retries");
    wait_for_alerts(
        &setup,
        "SELECT delivery_state, attempts FROM alerts FINAL WHERE source = 'tiny' FORMAT TSV",
        "delivered\t5",
        Duration::from_secs(90),
    );
    let requests = receiver.requests();
    assert_eq!(requests.len(), 5, "500, 500, 500, timeout, 200");
    let key = requests[0].header("idempotency-key").unwrap().to_string();
    assert!(key.starts_with("al_"));
    assert!(
        requests.iter().all(|r| r.header("idempotency-key") == Some(key.as_str())),
        "the key changed between attempts"
    );
    assert!(requests.iter().all(|r| signature_is_valid(r, SECRET)));
    assert!(requests.iter().all(|r| r.body == requests[0].body), "the body changed between attempts");
    let (_, metrics) = worker.http_get("/metrics");
    assert!(metrics.contains("costline_alert_deliveries_total{result=\"retry\"} 4"), "{metrics}");
    assert!(metrics.contains("costline_alert_deliveries_total{result=\"delivered\"} 1"), "{metrics}");
    assert!(metrics.contains("costline_alerts_fired_total{kind=\"budget\"} 1"), "{metrics}");
    assert_eq!(worker.stop(), 0);
}

#[test]
fn a_4xx_answer_is_final() {
    let receiver = Receiver::start(vec![Reply::Status(400)]);
    let setup = setup_with_tiny_budget("webhook_refused", &receiver.url());
    let worker = setup.spawn_worker("refused");
    wait_for_alerts(
        &setup,
        "SELECT delivery_state, attempts FROM alerts FINAL WHERE source = 'tiny' FORMAT TSV",
        "failed\t1",
        Duration::from_secs(60),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(receiver.requests().len(), 1, "a refused alert is not retried");
    assert_eq!(worker.stop(), 0);
}

#[test]
fn a_receiver_down_across_a_worker_restart_gets_the_alert_after() {
    let port = free_port();
    let setup = setup_with_tiny_budget("webhook_down", &format!("http://127.0.0.1:{port}/hook"));
    let first = setup.spawn_worker("before");
    let sql = "SELECT delivery_state, attempts > 0 FROM alerts FINAL WHERE source = 'tiny' FORMAT TSV";
    wait_for_alerts(&setup, sql, "pending\t1", Duration::from_secs(60));
    assert_eq!(first.stop(), 0);

    let receiver = Receiver::start_on(port, vec![]);
    let second = setup.spawn_worker("after");
    wait_for_alerts(
        &setup,
        "SELECT delivery_state FROM alerts FINAL WHERE source = 'tiny'",
        "delivered",
        Duration::from_secs(60),
    );
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    assert!(signature_is_valid(&requests[0], SECRET));
    assert_eq!(second.stop(), 0);
}

#[test]
fn a_redirect_is_a_failed_attempt_and_never_followed() {
    let target = Receiver::start(vec![]);
    let redirecting = Receiver::start(vec![Reply::Redirect(target.url())]);
    let setup = setup_with_tiny_budget("webhook_redirect", &redirecting.url());
    let worker = setup.spawn_worker("redirect");
    wait_for_alerts(
        &setup,
        "SELECT delivery_state, attempts FROM alerts FINAL WHERE source = 'tiny' FORMAT TSV",
        "failed\t1",
        Duration::from_secs(60),
    );
    let error = setup.query("SELECT last_error FROM alerts FINAL WHERE source = 'tiny'");
    assert!(error.contains("302") && error.contains("redirects are not followed"), "{error}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(redirecting.requests().len(), 1, "a redirect is final, not retried");
    assert_eq!(target.requests().len(), 0, "the redirect was followed");
    let (_, metrics) = worker.http_get("/metrics");
    assert!(metrics.contains("costline_alert_deliveries_total{result=\"refused\"} 1"), "{metrics}");
    assert!(!metrics.contains("result=\"delivered\""), "{metrics}");
    assert_eq!(worker.stop(), 0);
}

#[test]
fn a_hanging_receiver_delays_neither_evaluations_nor_other_webhooks() {
    common::clear_of_midnight(Duration::from_secs(180));
    // The slow receiver answers after 60 s, its webhook gives up after 30 s.
    let slow = Receiver::start(vec![Reply::Hang(Duration::from_secs(60)); 3]);
    let fast = Receiver::start(vec![]);
    let mut setup = Setup::new("webhook_hang");
    setup.flush_interval_ms = 300;
    setup.use_config(&format!(
        r#"
[alerts]
evaluate_interval_ms = 300

[[webhooks]]
id = "slow"
url = "{}"
secret_env = "COSTLINE_TEST_WEBHOOK_SECRET"
timeout_ms = 30000

[[webhooks]]
id = "fast"
url = "{}"
secret_env = "COSTLINE_TEST_WEBHOOK_SECRET"

[[budgets]]
id = "tiny"
period = "day"
limit_usd = "0.000001"
thresholds = [100]
webhooks = ["slow"]

[[budgets]]
id = "late"
period = "day"
limit_usd = "0.5"
thresholds = [100]
webhooks = ["fast"]
[budgets.scope]
endpoint_tag = "late.endpoint"
"#,
        slow.url(),
        fast.url()
    ));
    setup.env.push(("COSTLINE_TEST_WEBHOOK_SECRET".into(), SECRET.into()));
    let now_ms = common::now_ms();
    setup.produce(2_000, 5, now_ms - 10_000, &setup.scratch_file(".jsonl"));
    let worker = setup.spawn_worker("hang");

    // The tiny budget's alert is in flight to the slow receiver, which holds it.
    wait_until(
        Duration::from_secs(60),
        || (!slow.requests().is_empty()).then_some(()),
        || format!("the slow receiver never got its alert:\n{}", worker.log()),
    );
    let hang_started = Instant::now();
    let evaluations = || worker.metric("costline_alert_evaluations_total{result=\"ok\"}").unwrap_or(0.0);

    // Now the late budget crosses 100 %: its alert goes to the fast receiver while the slow one
    // still hangs.
    let event = serde_json::json!({
        "externalRequestId": "late-1", "attempt": 1, "provider": "openai", "model": "gpt-4o",
        "endpointTag": "late.endpoint", "promptVersion": "v1", "userId": "t1", "inputTokens": 100,
        "outputTokens": 20, "status": "success", "timestamp": common::now_ms(), "costUsd": 1.0,
    });
    publish(&setup, &[("late-1".into(), event.to_string().into_bytes(), common::now_ms())]);
    let published = Instant::now();
    while fast.requests().is_empty() {
        assert!(
            published.elapsed() < Duration::from_secs(10),
            "the late budget's alert did not reach the fast receiver within 10 s of its traffic; alerts:\n{}",
            setup.query("SELECT * FROM alerts FINAL FORMAT TSV")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("fast receiver got its alert {:?} after the traffic", published.elapsed());
    assert!(fast.requests()[0].body.contains("\"budget\":\"late\""), "{}", fast.requests()[0].body);
    assert!(signature_is_valid(&fast.requests()[0], SECRET));

    // Evaluations keep their 300 ms pace while the slow delivery still hangs.
    let before = evaluations();
    std::thread::sleep(Duration::from_secs(6));
    let during = evaluations() - before;
    assert!(hang_started.elapsed() < Duration::from_secs(29), "the window must lie within the hang");
    assert!(during >= 10.0, "only {during} evaluations in 6 s while a delivery hung (every 300 ms expected)");
    assert_eq!(slow.requests().len(), 1, "the slow delivery is still the first attempt");

    // Shutdown does not wait for the hanging delivery; it stays pending in the outbox.
    let stopping = Instant::now();
    assert_eq!(worker.stop(), 0);
    assert!(stopping.elapsed() < Duration::from_secs(15), "stopping took {:?}", stopping.elapsed());
    assert_eq!(
        setup.query("SELECT delivery_state, attempts FROM alerts FINAL WHERE source = 'tiny' FORMAT TSV").trim(),
        "pending\t0"
    );
}

#[test]
fn delivery_errors_never_show_the_url_secrets() {
    let port = free_port();
    let url = format!("http://hookuser:pa55word@127.0.0.1:{port}/services/s3cret-path?token=t0ken-value");
    let setup = setup_with_tiny_budget("webhook_secret_url", &url);
    let worker = setup.spawn_worker("secret_url");
    let sql =
        "SELECT delivery_state, attempts > 0, last_error != '' FROM alerts FINAL WHERE source = 'tiny' FORMAT TSV";
    wait_for_alerts(&setup, sql, "pending\t1\t1", Duration::from_secs(60));
    let error = setup.query("SELECT last_error FROM alerts FINAL WHERE source = 'tiny'");
    let log_path = worker.log_path.clone();
    assert_eq!(worker.stop(), 0);
    let log = std::fs::read_to_string(log_path).unwrap();
    for secret in ["hookuser", "pa55word", "s3cret-path", "t0ken-value"] {
        assert!(!error.contains(secret), "the stored error shows {secret}: {error}");
        assert!(!log.contains(secret), "the log shows {secret}:\n{log}");
    }
    assert!(error.contains("error sending request"), "{error}");
    assert!(log.contains(&format!("http://127.0.0.1:{port}/ ")), "the log names the origin:\n{log}");
}
