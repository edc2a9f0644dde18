//! Alerts where on-call lives: a Slack webhook and a PagerDuty webhook, served by local
//! receivers that check every payload against the service's documented schema
//! (`tests/fixtures/alert_formats/`). A PagerDuty trigger's `dedup_key` is the alert id and
//! stays the same when a delivery interrupted by a worker restart is sent again, so the
//! re-sent trigger joins its incident; a budget alert whose period ended is resolved with the
//! same key, once, across a restart; the routing key never reaches ClickHouse or the log.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::receiver::{Received, Receiver, Reply};
use common::{wait_for_alerts, wait_until, Setup, Worker};
use serde_json::Value;

const ROUTING_KEY: &str = "R0UTINGKEY0123456789abcdefABCDEF";

/// The documented schema `name` of `tests/fixtures/alert_formats/`, as a validator.
fn validator(name: &str) -> jsonschema::Validator {
    let path = common::repo_root().join("tests/fixtures/alert_formats").join(name);
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    jsonschema::options().should_validate_formats(true).build(&schema).unwrap()
}

/// Each request's body, checked against `validator`.
fn valid_bodies(requests: &[Received], validator: &jsonschema::Validator) -> Vec<Value> {
    requests
        .iter()
        .map(|request| {
            assert_eq!(request.header("content-type"), Some("application/json"));
            assert!(request.header("x-costline-signature").is_none(), "only the costline format is signed");
            let body: Value = serde_json::from_str(&request.body).unwrap();
            let errors: Vec<String> =
                validator.iter_errors(&body).map(|e| format!("{e} at {}", e.instance_path())).collect();
            assert!(errors.is_empty(), "{errors:?} in {body:#}");
            body
        })
        .collect()
}

/// A PagerDuty service as far as incidents go: a trigger opens an incident for its
/// `dedup_key` unless one is open, a resolve closes it. Returns how many incidents were
/// opened and which are still open.
fn incidents(events: &[Value]) -> (usize, BTreeSet<String>) {
    let (mut opened, mut open) = (0, BTreeSet::new());
    for event in events {
        let key = event["dedup_key"].as_str().unwrap().to_string();
        match event["event_action"].as_str().unwrap() {
            "trigger" => opened += usize::from(open.insert(key)),
            "resolve" => {
                open.remove(&key);
            }
            other => panic!("unexpected event action {other}"),
        }
    }
    (opened, open)
}

/// A setup with a `slack` and a `pagerduty` webhook (routing key [`ROUTING_KEY`]) and `budgets`.
fn setup_with_on_call(name: &str, slack: &Receiver, pagerduty: &Receiver, budgets: &str) -> Setup {
    let mut setup = Setup::new(name);
    setup.flush_interval_ms = 300;
    setup.use_config(&format!(
        r#"
[alerts]
evaluate_interval_ms = 300
retry_initial_ms = 200
retry_max_ms = 1000

[[webhooks]]
id = "slack"
url = "{}"
format = "slack"

[[webhooks]]
id = "pagerduty"
url = "{}"
format = "pagerduty"
routing_key_env = "COSTLINE_TEST_PAGERDUTY_KEY"
timeout_ms = 30000
{budgets}"#,
        slack.url(),
        pagerduty.url()
    ));
    setup.env.push(("COSTLINE_TEST_PAGERDUTY_KEY".into(), ROUTING_KEY.into()));
    setup
}

/// Stops `worker` and checks that its log never showed the routing key.
fn stop_without_leaking(worker: Worker) {
    let log = worker.log();
    assert_eq!(worker.stop(), 0);
    assert!(!log.contains(ROUTING_KEY), "the log shows the routing key");
}

#[test]
fn slack_and_pagerduty_get_their_documented_payloads_and_a_restart_keeps_the_dedup_key() {
    // The events and the alerts' daily period must be the same day.
    common::clear_of_midnight(Duration::from_secs(180));
    let slack = Receiver::start(vec![]);
    // The first trigger hangs until the worker is stopped: it is sent again after the restart.
    let pagerduty = Receiver::start(vec![Reply::Hang(Duration::from_secs(60))]);
    let budgets = r#"
[[budgets]]
id = "tiny <!channel>"
period = "day"
limit_usd = "0.000001"
thresholds = [50, 100]
webhooks = ["slack", "pagerduty"]
"#;
    let setup = setup_with_on_call("alert_formats", &slack, &pagerduty, budgets);
    setup.produce(2_000, 5, common::now_ms() - 10_000, &setup.scratch_file(".jsonl"));

    let first = setup.spawn_worker("first");
    let states = "SELECT webhook, delivery_state, count() FROM alerts FINAL WHERE kind = 'budget' GROUP BY webhook, delivery_state \
                  ORDER BY webhook, delivery_state FORMAT TSV";
    wait_for_alerts(
        &setup,
        states,
        "pagerduty\tdelivered\t1\npagerduty\tpending\t1\nslack\tdelivered\t2",
        Duration::from_secs(60),
    );
    assert_eq!(pagerduty.requests().len(), 2, "one trigger delivered, one in flight");
    stop_without_leaking(first);

    let second = setup.spawn_worker("second");
    wait_for_alerts(&setup, states, "pagerduty\tdelivered\t2\nslack\tdelivered\t2", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2)); // a few more evaluations: nothing new is sent
    stop_without_leaking(second);

    let alerts = setup.query(
        "SELECT alert_id, summary FROM alerts FINAL WHERE webhook = 'slack' ORDER BY threshold_percent FORMAT TSVRaw",
    );
    let alerts: BTreeMap<String, String> =
        alerts.lines().map(|l| l.split_once('\t').map(|(id, s)| (id.to_string(), s.to_string())).unwrap()).collect();
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    for summary in alerts.values() {
        assert!(
            summary.starts_with("Budget 'tiny <!channel>' for all real prod traffic: $")
                && summary.contains(" of $0.00 ("),
            "{summary}"
        );
        assert!(summary.contains(" %) today; threshold "), "{summary}");
    }

    // PagerDuty: three triggers (one sent twice), each keyed by its alert id, two incidents.
    let events = valid_bodies(&pagerduty.requests(), &validator("pagerduty-events-v2.schema.json"));
    assert_eq!(events.len(), 3);
    let keys: BTreeSet<String> = events.iter().map(|e| e["dedup_key"].as_str().unwrap().to_string()).collect();
    assert_eq!(keys, alerts.keys().cloned().collect(), "dedup keys are the alert ids");
    assert_eq!(events[2], events[0], "the trigger sent again after the restart is the same event");
    assert_eq!(incidents(&events), (2, keys));
    for event in &events {
        assert_eq!(
            (event["event_action"].as_str(), event["routing_key"].as_str()),
            (Some("trigger"), Some(ROUTING_KEY))
        );
        let id = event["dedup_key"].as_str().unwrap();
        assert_eq!(event["payload"]["summary"].as_str(), Some(alerts[id].as_str()));
        let details = &event["payload"]["custom_details"];
        assert_eq!(details["alert_id"], id);
        assert!(details["spend_usd"].as_str().unwrap().ends_with(|c: char| c.is_ascii_digit()), "{details}");
        assert_eq!(details["limit_usd"], "0.000001000000", "exact decimals stay in the fields");
        let percent = details["threshold_percent"].as_u64().unwrap();
        assert_eq!(event["payload"]["severity"], if percent >= 100 { "critical" } else { "warning" });
    }

    // Slack: one message per alert, the summary escaped, the exact values in the fields.
    let messages = valid_bodies(&slack.requests(), &validator("slack-incoming-webhook.schema.json"));
    assert_eq!(messages.len(), 2);
    for message in &messages {
        let text = message["text"].as_str().unwrap();
        assert!(text.starts_with("Budget 'tiny &lt;!channel&gt;' for all real prod traffic: $"), "{text}");
        assert!(!message.to_string().contains("<!channel>"), "{message}");
        let fields = message["blocks"][1]["fields"].to_string();
        assert!(fields.contains("*Limit (USD)*\\n0.000001000000"), "{fields}");
        assert!(alerts.keys().any(|id| fields.contains(id.as_str())), "{fields}");
    }

    let leaked = setup.query(&format!("SELECT count() FROM alerts WHERE position(body, '{ROUTING_KEY}') > 0"));
    assert_eq!(leaked.trim(), "0", "the routing key is stored");
}

#[test]
fn a_budget_alert_is_resolved_once_its_period_ended_even_across_a_restart() {
    let slack = Receiver::start(vec![]);
    // The resolve's first attempt hangs until the worker is stopped.
    let pagerduty = Receiver::start(vec![Reply::Hang(Duration::from_secs(60))]);
    let budgets = r#"
[[budgets]]
id = "acme-monthly"
period = "month"
limit_usd = "500"
webhooks = ["pagerduty"]
[budgets.scope]
tenant = "acme"
"#;
    let setup = setup_with_on_call("alert_resolves", &slack, &pagerduty, budgets);
    // Some traffic, so that the topic exists and a worker leads; far below the budget.
    setup.produce(200, 7, common::now_ms() - 10_000, &setup.scratch_file(".jsonl"));
    let migrate = setup.command(&["migrate"]).output().unwrap();
    assert!(migrate.status.success(), "{}", String::from_utf8_lossy(&migrate.stderr));
    // October's 100 % alert, delivered to PagerDuty back then (the row the outbox wrote).
    let october = chrono::DateTime::parse_from_rfc3339("2026-10-01T00:00:00Z").unwrap().with_timezone(&chrono::Utc);
    let alert_id = costline_core::budget::AlertId::budget("acme-monthly", october, 100).0;
    let body = serde_json::json!({
        "alert_id": alert_id, "kind": "budget", "budget": "acme-monthly", "rule": null,
        "scope": "tenant=acme,environment=prod,data_mode=real",
        "period": {"start": "2026-10-01T00:00:00+00:00", "end": "2026-11-01T00:00:00+00:00"},
        "threshold_percent": 100, "spend_usd": "512.000000000000", "limit_usd": "500.000000000000",
        "ratio": 1.024, "state": "exceeded", "as_of": "2026-10-20T10:00:00+00:00",
        "fired_at": "2026-10-20T10:00:02+00:00", "summary": "Budget 'acme-monthly' for tenant acme: $512.00 of $500.00 (102 %) this month; threshold 100 %",
    });
    let quote = |text: &str| format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"));
    setup.query(&format!(
        "INSERT INTO alerts VALUES ('{alert_id}', 'pagerduty', 'budget', 'acme-monthly', \
         'tenant=acme,environment=prod,data_mode=real', toDateTime('2026-10-01 00:00:00', 'UTC'), 100, \
         512, 500, 1.024, toDateTime('2026-10-20 10:00:02', 'UTC'), {}, {}, 'delivered', 1, \
         toDateTime('2026-10-20 10:00:02', 'UTC'), '', toDateTime('2026-10-20 10:00:03', 'UTC'), 2)",
        quote(body["summary"].as_str().unwrap()),
        quote(&body.to_string())
    ));

    let first = setup.spawn_worker("first");
    let resolves = "SELECT source, webhook, delivery_state, count() FROM alerts FINAL WHERE kind = 'resolve' \
                    GROUP BY source, webhook, delivery_state FORMAT TSV";
    wait_for_alerts(&setup, resolves, &format!("{alert_id}\tpagerduty\tpending\t1"), Duration::from_secs(60));
    wait_until(
        Duration::from_secs(30),
        || (!pagerduty.requests().is_empty()).then_some(()),
        || "no resolve sent".into(),
    );
    stop_without_leaking(first);

    let second = setup.spawn_worker("second");
    wait_for_alerts(&setup, resolves, &format!("{alert_id}\tpagerduty\tdelivered\t1"), Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2)); // a few more evaluations: nothing new is recorded
    stop_without_leaking(second);
    assert_eq!(setup.query(resolves).trim(), format!("{alert_id}\tpagerduty\tdelivered\t1"));

    let events = valid_bodies(&pagerduty.requests(), &validator("pagerduty-events-v2.schema.json"));
    let expected = serde_json::json!({"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": alert_id});
    assert_eq!(events, [expected.clone(), expected], "the resolve, sent again after the restart");
    assert!(slack.requests().is_empty(), "Slack gets no resolves");
}
