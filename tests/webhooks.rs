//! Webhook delivery: retries with backoff on 5xx and timeouts until the receiver accepts,
//! with the same idempotency key every time; and a receiver that is down across a worker
//! restart gets the alert once it is back (the outbox is in ClickHouse).

mod common;

use std::time::{Duration, Instant};

use common::receiver::{signature_is_valid, Receiver, Reply};
use common::{free_port, Setup};

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

fn wait_for(setup: &Setup, sql: &str, want: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if setup.try_query(sql).is_some_and(|got| got.trim() == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sql} never gave {want}; alerts:\n{}",
            setup.query("SELECT * FROM alerts FINAL FORMAT TSV")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn retries_5xx_and_timeouts_with_the_same_idempotency_key() {
    let script = vec![Reply::Status(500), Reply::Status(500), Reply::Status(500), Reply::Hang(Duration::from_secs(3))];
    let receiver = Receiver::start(script);
    let setup = setup_with_tiny_budget("webhook_retries", &receiver.url());
    let worker = setup.spawn_worker("retries");
    wait_for(
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
    wait_for(
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
    wait_for(&setup, sql, "pending\t1", Duration::from_secs(60));
    assert_eq!(first.stop(), 0);

    let receiver = Receiver::start_on(port, vec![]);
    let second = setup.spawn_worker("after");
    wait_for(
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
