//! The outbox's state machine against an in-memory store and a scripted sender: no services.

use std::collections::VecDeque;
use std::sync::Mutex;

use prometheus::Opts;

use super::*;

/// Every version ever recorded, as ClickHouse keeps them; reads see the highest version of
/// each (alert, webhook), as `FINAL` does.
#[derive(Default)]
struct MemoryStore {
    versions: Mutex<Vec<AlertRow>>,
}

impl MemoryStore {
    fn latest(&self) -> Vec<AlertRow> {
        let versions = self.versions.lock().expect("store lock");
        let mut latest: BTreeMap<(String, String), AlertRow> = BTreeMap::new();
        for row in versions.iter() {
            let key = (row.alert_id.clone(), row.webhook.clone());
            if latest.get(&key).is_none_or(|kept| kept.version < row.version) {
                latest.insert(key, row.clone());
            }
        }
        latest.into_values().collect()
    }

    fn state(&self, webhook: &str) -> Vec<(DeliveryState, u32)> {
        self.latest().into_iter().filter(|r| r.webhook == webhook).map(|r| (r.delivery_state, r.attempts)).collect()
    }

    /// Makes every pending delivery due now (as if its backoff had passed).
    fn make_due(&self) {
        let mut rows = self.latest();
        for row in &mut rows {
            row.next_attempt_at = 0;
            row.version += 1;
        }
        self.versions.lock().expect("store lock").extend(rows);
    }
}

impl OutboxStore for Arc<MemoryStore> {
    async fn fired(&self, alert_ids: &[String]) -> anyhow::Result<BTreeSet<String>> {
        let known: BTreeSet<String> = self.latest().into_iter().map(|r| r.alert_id).collect();
        Ok(alert_ids.iter().filter(|id| known.contains(*id)).cloned().collect())
    }

    async fn record(&self, rows: &[AlertRow]) -> anyhow::Result<()> {
        self.versions.lock().expect("store lock").extend_from_slice(rows);
        Ok(())
    }

    async fn due(&self, webhook: &str, now_secs: u32, limit: usize) -> anyhow::Result<Vec<AlertRow>> {
        let mut due: Vec<AlertRow> = self
            .latest()
            .into_iter()
            .filter(|r| r.delivery_state == DeliveryState::Pending && r.webhook == webhook)
            .filter(|r| r.next_attempt_at <= now_secs)
            .collect();
        due.sort_by_key(|r| (r.next_attempt_at, r.fired_at));
        due.truncate(limit);
        Ok(due)
    }

    async fn unresolved(&self, webhooks: &[String], limit: usize) -> anyhow::Result<Vec<AlertRow>> {
        let latest = self.latest();
        let resolved: BTreeSet<&String> = latest.iter().filter(|r| r.kind == "resolve").map(|r| &r.source).collect();
        let mut open: Vec<AlertRow> = latest
            .iter()
            .filter(|r| r.kind == "budget" && webhooks.contains(&r.webhook) && !resolved.contains(&r.alert_id))
            .cloned()
            .collect();
        open.sort_by_key(|r| r.period_start);
        open.truncate(limit);
        Ok(open)
    }

    async fn orphaned(&self, configured: &[String], limit: usize) -> anyhow::Result<Vec<AlertRow>> {
        let mut orphans: Vec<AlertRow> = self
            .latest()
            .into_iter()
            .filter(|r| r.delivery_state == DeliveryState::Pending && !configured.contains(&r.webhook))
            .collect();
        orphans.truncate(limit);
        Ok(orphans)
    }
}

/// Answers each attempt with the next scripted outcome (delivered once the script runs out)
/// and remembers which alert ids it was sent.
#[derive(Default)]
struct ScriptedReceiver {
    answers: Mutex<VecDeque<Attempt>>,
    sent: Mutex<Vec<String>>,
}

impl ScriptedReceiver {
    fn answering(answers: impl IntoIterator<Item = Attempt>) -> ScriptedReceiver {
        ScriptedReceiver { answers: Mutex::new(answers.into_iter().collect()), sent: Mutex::default() }
    }

    fn sent(&self) -> Vec<String> {
        self.sent.lock().expect("receiver lock").clone()
    }
}

impl AlertSender for Arc<ScriptedReceiver> {
    fn origin(&self) -> &str {
        "http://receiver.test:80/"
    }

    fn takes_resolves(&self) -> bool {
        true
    }

    async fn send(&self, alert_id: &str, _body: &str, _now_secs: i64) -> Attempt {
        self.sent.lock().expect("receiver lock").push(alert_id.to_string());
        self.answers.lock().expect("receiver lock").pop_front().unwrap_or(Attempt::Delivered)
    }
}

fn settings(max_attempts: u32) -> OutboxSettings {
    OutboxSettings {
        retry_initial: Duration::from_secs(4),
        retry_max: Duration::from_secs(60),
        max_attempts,
        batch: 10,
        concurrency: 2,
        poll_interval: Duration::from_millis(100),
    }
}

fn metrics() -> AlertMetrics {
    let counter = |name: &str, label: &str| IntCounterVec::new(Opts::new(name, "test"), &[label]).expect("a counter");
    AlertMetrics {
        fired: counter("fired", "kind"),
        deliveries: counter("deliveries", "result"),
        evaluations: counter("evaluations", "result"),
    }
}

fn outbox(store: &Arc<MemoryStore>, receivers: &[(&str, &Arc<ScriptedReceiver>)], max_attempts: u32) -> TestOutbox {
    let webhooks = receivers.iter().map(|(id, r)| (id.to_string(), Arc::clone(r))).collect();
    Outbox::new(store.clone(), webhooks, settings(max_attempts), &metrics())
}

fn alert(name: &str, webhooks: &[&str]) -> FiredAlert {
    FiredAlert {
        id: AlertId(format!("al_{name}")),
        kind: AlertKind::Rule,
        source: "retry_storm".into(),
        scope: format!("endpoint={name}"),
        period_start: 1_700_000_000,
        threshold_percent: 0,
        spend: PicoUsd::ZERO,
        limit: PicoUsd::ZERO,
        value: 0.9,
        summary: format!("storm on {name}"),
        body: serde_json::json!({"alert_id": format!("al_{name}")}),
        webhooks: webhooks.iter().map(|w| w.to_string()).collect(),
    }
}

fn row(attempts: u32) -> AlertRow {
    let mut row = alert("a", &["hook"]).rows(1_000).remove(0);
    row.attempts = attempts;
    row
}

type TestOutbox = Outbox<Arc<MemoryStore>, Arc<ScriptedReceiver>>;

/// Alert `a` recorded for webhook `hook`, a receiver answering `answers` (then 2xx).
async fn alert_a_recorded(answers: Vec<Attempt>) -> (Arc<MemoryStore>, Arc<ScriptedReceiver>, TestOutbox) {
    let store = Arc::new(MemoryStore::default());
    let receiver = Arc::new(ScriptedReceiver::answering(answers));
    let outbox = outbox(&store, &[("hook", &receiver)], 5);
    outbox.record_fired(vec![alert("a", &["hook"])]).await.expect("recorded");
    (store, receiver, outbox)
}

/// [`alert_a_recorded`], then one delivery pass.
async fn after_one_pass(answers: Vec<Attempt>) -> (Arc<MemoryStore>, Arc<ScriptedReceiver>, TestOutbox) {
    let (store, receiver, outbox) = alert_a_recorded(answers).await;
    assert_eq!(outbox.deliver_due("hook").await.expect("a pass"), 1);
    (store, receiver, outbox)
}

#[tokio::test]
async fn a_pending_delivery_is_delivered_once_and_recorded_once() {
    let (store, receiver, outbox) = alert_a_recorded(vec![]).await;
    assert_eq!(store.state("hook"), [(DeliveryState::Pending, 0)]);
    // Fired again by a later evaluation: the id is known, nothing new is recorded.
    outbox.record_fired(vec![alert("a", &["hook"])]).await.expect("recorded");
    assert_eq!(store.versions.lock().expect("store lock").len(), 1);

    assert_eq!(outbox.deliver_due("hook").await.expect("a pass"), 1);
    assert_eq!(store.state("hook"), [(DeliveryState::Delivered, 1)]);
    assert_eq!(outbox.deliver_due("hook").await.expect("a pass"), 0, "nothing is due any more");
    assert_eq!(receiver.sent(), ["al_a"]);
}

#[tokio::test]
async fn an_alert_without_webhooks_is_recorded_as_no_webhook() {
    let store = Arc::new(MemoryStore::default());
    let outbox = outbox(&store, &[], 5);
    outbox.record_fired(vec![alert("a", &[])]).await.expect("recorded");
    assert_eq!(store.state(""), [(DeliveryState::NoWebhook, 0)]);
}

#[tokio::test]
async fn a_passing_failure_is_retried_after_a_backoff_then_delivered() {
    let (store, receiver, outbox) = after_one_pass(vec![Attempt::Retry("HTTP 503".into())]).await;
    let retried = store.latest().remove(0);
    assert_eq!(
        (retried.delivery_state, retried.attempts, retried.last_error.as_str()),
        (DeliveryState::Pending, 1, "HTTP 503")
    );
    // 4 s ± 25 %, whole seconds.
    let delay = retried.next_attempt_at - retried.updated_at;
    assert!((3..=5).contains(&delay), "{delay}");
    assert_eq!(outbox.deliver_due("hook").await.expect("a pass"), 0, "not due before its backoff");

    store.make_due();
    outbox.deliver_due("hook").await.expect("a pass");
    assert_eq!(store.state("hook"), [(DeliveryState::Delivered, 2)]);
    assert_eq!(receiver.sent(), ["al_a", "al_a"], "the same idempotency key each time");
}

#[test]
fn retry_delays_double_up_to_the_cap_with_jitter() {
    let s = settings(50);
    let delay = |attempts: u32, random: f64| {
        let next = after_attempt(row(attempts), Attempt::Retry("timeout".into()), 1_000, &s, random);
        next.next_attempt_at - 1_000
    };
    // Attempt n waits 4 s × 2^(n-1), capped at 60 s; the jitter spans ±25 %.
    let middle: Vec<u32> = (0..6).map(|before| delay(before, 0.5)).collect();
    assert_eq!(middle, [4, 8, 16, 32, 60, 60]);
    assert_eq!((delay(0, 0.0), delay(0, 0.999)), (3, 5));
    let tiny = OutboxSettings { retry_initial: Duration::from_millis(10), ..settings(50) };
    let next = after_attempt(row(0), Attempt::Retry("timeout".into()), 1_000, &tiny, 0.0);
    assert_eq!(next.next_attempt_at, 1_001, "at least a second");
}

#[test]
fn a_refusal_is_final_and_the_last_retry_gives_up() {
    let refused = after_attempt(row(0), Attempt::Refused("HTTP 404".into()), 1_000, &settings(5), 0.5);
    assert_eq!((refused.delivery_state, refused.last_error.as_str()), (DeliveryState::Failed, "HTTP 404"));
    assert_eq!((refused.version, refused.updated_at), (2, 1_000));

    let gave_up = after_attempt(row(4), Attempt::Retry("HTTP 500".into()), 1_000, &settings(5), 0.5);
    assert_eq!(gave_up.delivery_state, DeliveryState::Failed);
    assert_eq!(gave_up.last_error, "gave up after 5 attempts: HTTP 500");

    let delivered = after_attempt(row(4), Attempt::Delivered, 1_000, &settings(5), 0.5);
    assert_eq!((delivered.delivery_state, delivered.last_error.as_str()), (DeliveryState::Delivered, ""));
}

#[tokio::test]
async fn a_4xx_fails_the_delivery_and_it_is_not_attempted_again() {
    let (store, receiver, outbox) = after_one_pass(vec![Attempt::Refused("HTTP 400".into())]).await;
    store.make_due();
    outbox.deliver_due("hook").await.expect("a pass");
    assert_eq!(store.state("hook"), [(DeliveryState::Failed, 1)]);
    assert_eq!(receiver.sent().len(), 1);
}

#[tokio::test]
async fn deliveries_to_a_removed_webhook_fail_and_others_go_on() {
    let store = Arc::new(MemoryStore::default());
    let (kept, removed) = (Arc::new(ScriptedReceiver::default()), Arc::new(ScriptedReceiver::default()));
    let before = outbox(&store, &[("kept", &kept), ("removed", &removed)], 5);
    before.record_fired(vec![alert("a", &["kept", "removed"])]).await.expect("recorded");

    let after = outbox(&store, &[("kept", &kept)], 5);
    after.fail_orphans().await.expect("orphans failed");
    let orphan = store.latest().into_iter().find(|r| r.webhook == "removed").expect("its row");
    assert_eq!(orphan.delivery_state, DeliveryState::Failed);
    assert_eq!(orphan.last_error, r#"webhook "removed" is no longer configured"#);
    after.deliver_due("kept").await.expect("a pass");
    assert_eq!(store.state("kept"), [(DeliveryState::Delivered, 1)]);
    assert!(removed.sent().is_empty());
}

/// A delivery loop for webhook `hook` of `outbox`, and the token that stops it.
fn deliveries(
    outbox: TestOutbox,
    leadership: watch::Receiver<bool>,
) -> (tokio::task::JoinHandle<()>, CancellationToken) {
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(Arc::new(outbox).run_deliveries("hook".into(), leadership, shutdown.clone()));
    (task, shutdown)
}

/// Waits up to 10 s for `done`.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_new_outbox_resumes_what_an_earlier_one_left_pending() {
    let store = Arc::new(MemoryStore::default());
    let receiver = Arc::new(ScriptedReceiver::default());
    // The first worker records two alerts and stops before delivering them.
    outbox(&store, &[("hook", &receiver)], 5)
        .record_fired(vec![alert("a", &["hook"]), alert("b", &["hook"])])
        .await
        .expect("recorded");
    // The next leader, over the same table.
    let (_leads, leadership) = watch::channel(true);
    let (task, shutdown) = deliveries(outbox(&store, &[("hook", &receiver)], 5), leadership);
    let delivered = [(DeliveryState::Delivered, 1), (DeliveryState::Delivered, 1)];
    eventually("the pending deliveries were not resumed", || store.state("hook") == delivered).await;
    let mut sent = receiver.sent();
    sent.sort();
    assert_eq!(sent, ["al_a", "al_b"]);
    shutdown.cancel();
    task.await.expect("the loop stops at shutdown");
}

#[tokio::test]
async fn a_follower_delivers_nothing_until_it_leads() {
    let (_, receiver, follower) = alert_a_recorded(vec![]).await;
    let (leads, leadership) = watch::channel(false);
    let (task, shutdown) = deliveries(follower, leadership);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.sent().is_empty(), "a follower sent {:?}", receiver.sent());
    leads.send_replace(true);
    eventually("the new leader did not deliver", || !receiver.sent().is_empty()).await;
    shutdown.cancel();
    task.await.expect("the loop stops at shutdown");
}

/// A budget alert of November 2026 for webhook `hook`.
fn november_budget_alert() -> FiredAlert {
    FiredAlert {
        kind: AlertKind::Budget,
        source: "acme".into(),
        threshold_percent: 100,
        body: serde_json::json!({
            "alert_id": "al_budget", "kind": "budget",
            "period": {"start": "2026-11-01T00:00:00+00:00", "end": "2026-12-01T00:00:00+00:00"},
        }),
        ..alert("budget", &["hook"])
    }
}

#[tokio::test]
async fn a_budget_alert_is_resolved_once_after_its_period_and_its_delivery() {
    let at = |text: &str| chrono::DateTime::parse_from_rfc3339(text).expect("a time").with_timezone(&chrono::Utc);
    let store = Arc::new(MemoryStore::default());
    let receiver = Arc::new(ScriptedReceiver::answering([Attempt::Retry("HTTP 503".into())]));
    let first = outbox(&store, &[("hook", &receiver)], 5);
    first.record_fired(vec![november_budget_alert()]).await.expect("recorded");
    first.deliver_due("hook").await.expect("a pass");
    // The period ended, but the trigger is still being retried: no resolve may overtake it.
    first.record_resolves(at("2026-12-01T00:00:05Z")).await.expect("resolves");
    assert_eq!(store.latest().len(), 1);

    store.make_due();
    first.deliver_due("hook").await.expect("a pass");
    first.record_resolves(at("2026-11-30T23:59:59Z")).await.expect("resolves");
    assert_eq!(store.latest().len(), 1, "the period has not ended");
    first.record_resolves(at("2026-12-01T00:00:05Z")).await.expect("resolves");
    // A restarted worker's outbox finds the resolve recorded already.
    let second = outbox(&store, &[("hook", &receiver)], 5);
    second.record_resolves(at("2026-12-01T00:00:10Z")).await.expect("resolves");
    let resolves: Vec<AlertRow> = store.latest().into_iter().filter(|r| r.kind == "resolve").collect();
    assert_eq!(resolves.len(), 1, "{resolves:?}");
    assert_eq!((resolves[0].source.as_str(), resolves[0].webhook.as_str()), ("al_budget", "hook"));
    second.deliver_due("hook").await.expect("a pass");
    assert_eq!(receiver.sent(), ["al_budget", "al_budget", resolves[0].alert_id.as_str()]);
}
