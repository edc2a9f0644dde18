//! Budgets end to end: two workers (one restarted mid-way) count traffic whose spend crosses
//! 50, 80 and 100 % of a monthly budget. Each threshold fires exactly one alert id, delivered
//! to a real HTTP receiver with a valid signature; the budget API's spend equals the
//! ClickHouse total for the budget's scope.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::expected::{month_start_secs, Expected};
use common::receiver::{signature_is_valid, Receiver};
use common::{wait_producer, wait_settled, wait_until, Setup};

const SECRET: &str = "test-secret-budgets";

#[test]
fn each_threshold_fires_once_across_two_workers_and_a_restart() {
    // Events run to four minutes ahead of now, and the test takes a few: all in one month.
    common::clear_of_midnight(Duration::from_secs(600));
    let receiver = Receiver::start(vec![]);
    let mut setup = Setup::new("budgets");
    setup.flush_interval_ms = 300;
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let start_ms = now_ms - 60_000;

    // The same seed and start publish the same records: a first run to a scratch topic tells
    // the spend the real run will reach, and the limit is set 20 % below it.
    let scratch = Setup::new("budgets_scratch");
    let record_file = scratch.scratch_file(".jsonl");
    scratch.produce(30_000, 17, start_ms, &record_file);
    let expected = Expected::from_record_file(&record_file);
    let month_start = month_start_secs(now_ms / 1000);
    let spend = expected.prod_real_cost_since(month_start);
    let limit = spend * 100 / 120;
    let config = format!(
        r#"
[alerts]
evaluate_interval_ms = 300
retry_initial_ms = 200
retry_max_ms = 1000

[[webhooks]]
id = "oncall"
url = "{}"
secret_env = "COSTLINE_TEST_WEBHOOK_SECRET"

[[budgets]]
id = "all-real-prod"
period = "month"
limit_usd = "{}.{:012}"
webhooks = ["oncall"]
"#,
        receiver.url(),
        limit / 1_000_000_000_000,
        limit % 1_000_000_000_000
    );
    setup.use_config(&config);
    setup.env.push(("COSTLINE_TEST_WEBHOOK_SECRET".into(), SECRET.into()));
    setup.env.push(("COSTLINE_HTTP_TOKEN".into(), "api-token".into()));

    let producer = setup.spawn_producer(30_000, 1_500, 17, start_ms, &setup.scratch_file(".jsonl"));
    let first = setup.spawn_worker("w1");
    wait_settled(&[&first], "one worker");
    let second = setup.spawn_worker("w2");
    wait_settled(&[&first, &second], "two workers");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(second.stop(), 0);
    let second = setup.spawn_worker("w2-restarted");
    wait_producer(producer, Duration::from_secs(60));
    setup.wait_accounted(expected.records, Duration::from_secs(120));

    wait_until(
        Duration::from_secs(60),
        || {
            let delivered =
                setup.query("SELECT count() FROM alerts FINAL WHERE kind = 'budget' AND delivery_state = 'delivered'");
            (delivered.trim() == "3").then_some(())
        },
        || format!("three delivered budget alerts; alerts: {}", setup.query("SELECT * FROM alerts FINAL FORMAT TSV")),
    );
    std::thread::sleep(Duration::from_secs(2)); // a few more evaluations: nothing new may fire
    let rows = setup.query("SELECT alert_id, threshold_percent FROM alerts FINAL WHERE kind = 'budget' ORDER BY threshold_percent FORMAT TSV");
    let thresholds: Vec<&str> = rows.lines().map(|l| l.split('\t').nth(1).unwrap()).collect();
    assert_eq!(thresholds, vec!["50", "80", "100"], "one alert per threshold:\n{rows}");
    let ids: BTreeSet<String> = rows.lines().map(|l| l.split('\t').next().unwrap().to_string()).collect();
    assert_eq!(ids.len(), 3);

    let budget_requests: Vec<_> =
        receiver.requests().into_iter().filter(|r| r.body.contains("\"kind\":\"budget\"")).collect();
    let keys: BTreeSet<String> =
        budget_requests.iter().map(|r| r.header("idempotency-key").unwrap().to_string()).collect();
    assert_eq!(keys, ids, "the receiver got exactly the fired alert ids");
    assert!(budget_requests.iter().all(|r| signature_is_valid(r, SECRET)), "a signature did not verify");
    assert!(budget_requests.iter().all(|r| !signature_is_valid(r, "wrong-secret")));

    let (status, _) = first.http_get("/v1/budgets/all-real-prod");
    assert_eq!(status, 401, "the API needs the bearer token");
    let body = ureq::get(&format!("http://127.0.0.1:{}/v1/budgets/all-real-prod", first.port))
        .header("authorization", "Bearer api-token")
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let api: serde_json::Value = serde_json::from_str(&body).unwrap();
    let clickhouse_total = setup.query(&format!(
        "SELECT toString(sum(cost_usd)) FROM usage_minute WHERE data_mode = 'real' AND environment = 'prod' \
         AND window_start >= toDateTime({month_start})"
    ));
    assert_eq!(api["spend_usd"].as_str().unwrap(), clickhouse_total.trim(), "API spend vs ClickHouse: {api}");
    assert_eq!(api["state"], "exceeded");
    assert_eq!(first.stop(), 0);
    assert_eq!(second.stop(), 0);
}
