//! What a webhook is sent, by its `format`. The outbox keeps one body per alert, costline's own
//! (the contract's fields, exact decimals as strings); a Slack or PagerDuty webhook gets it
//! rewritten into that service's documented payload at each attempt, from the same stored
//! bytes, so every attempt of a delivery sends the same payload.
//!
//! - Slack incoming webhooks: `{"text", "blocks"}`, the summary as the notification text, a
//!   section block with the summary and a section of fields holding the exact values. Text is
//!   mrkdwn, so `&`, `<` and `>` of sender-chosen values (tags, tenants, models) are escaped:
//!   a tenant named `<!channel>` must not ping a channel. Lengths are cut to Slack's limits
//!   (3,000 characters per section text, 10 fields of 2,000).
//! - PagerDuty Events API v2: a `trigger` whose `dedup_key` is the alert id, so a re-sent
//!   alert (a retry, a restart) joins the open incident instead of opening another; a
//!   `resolve` with the same key once the budget's period ended ([`crate::resolves`]). The
//!   summary is cut to PagerDuty's 1,024 characters; `custom_details` holds the whole body.

use serde_json::{json, Value};

/// Longest text of a Slack section block, and of one of its fields; most fields in one block.
const SLACK_SECTION_CHARS: usize = 3_000;
const SLACK_FIELD_CHARS: usize = 2_000;
const SLACK_FIELDS: usize = 10;
/// Longest `payload.summary` PagerDuty accepts.
const PAGERDUTY_SUMMARY_CHARS: usize = 1_024;

/// The body's fields a Slack message shows, with their labels, in this order.
const SLACK_FIELDS_SHOWN: [(&str, &str); 10] = [
    ("Budget", "budget"),
    ("Rule", "rule"),
    ("Scope", "scope"),
    ("Spend (USD)", "spend_usd"),
    ("Limit (USD)", "limit_usd"),
    ("Threshold (%)", "threshold_percent"),
    ("Threshold", "threshold"),
    ("Value", "value"),
    ("State", "state"),
    ("Alert", "alert_id"),
];

fn text<'a>(body: &'a Value, key: &str) -> &'a str {
    body.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// `text` cut to `max` characters, the last of them `…` when it was cut.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Escapes the three characters Slack's mrkdwn reads as control sequences.
fn escape_mrkdwn(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A field's value as shown: strings as they are, numbers and the rest as JSON.
fn shown(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The headline above the summary.
fn title(body: &Value) -> String {
    match text(body, "kind") {
        "budget" => format!("costline budget alert: {}", text(body, "state")),
        "rule" => format!("costline rule alert: {}", text(body, "rule")),
        "resolve" => "costline: a budget period ended".to_string(),
        other => format!("costline alert: {other}"),
    }
}

/// The Slack incoming-webhook message for a costline body.
pub fn slack(body: &Value) -> Value {
    let summary = escape_mrkdwn(text(body, "summary"));
    let fields: Vec<Value> = SLACK_FIELDS_SHOWN
        .iter()
        .filter_map(|(label, key)| body.get(*key).filter(|v| !v.is_null()).map(|v| (label, v)))
        .take(SLACK_FIELDS)
        .map(|(label, value)| {
            let text = format!("*{label}*\n{}", escape_mrkdwn(&shown(value)));
            json!({"type": "mrkdwn", "text": cut(&text, SLACK_FIELD_CHARS)})
        })
        .collect();
    let headline = format!("*{}*\n{summary}", escape_mrkdwn(&title(body)));
    let mut blocks =
        vec![json!({"type": "section", "text": {"type": "mrkdwn", "text": cut(&headline, SLACK_SECTION_CHARS)}})];
    if !fields.is_empty() {
        blocks.push(json!({"type": "section", "fields": fields}));
    }
    json!({"text": cut(&summary, SLACK_SECTION_CHARS), "blocks": blocks})
}

/// PagerDuty's severity: a budget at or past its limit is `critical`, a lower threshold and a
/// rule alert are `warning`.
fn severity(body: &Value) -> &'static str {
    let at_limit = body.get("threshold_percent").and_then(Value::as_u64).is_some_and(|percent| percent >= 100);
    if text(body, "kind") == "budget" && at_limit {
        "critical"
    } else {
        "warning"
    }
}

/// The PagerDuty Events API v2 event for a costline body: a `resolve` of the alert a resolve
/// body names, else a `trigger` keyed by the alert id.
pub fn pagerduty(body: &Value, routing_key: &str) -> Value {
    if text(body, "kind") == "resolve" {
        return json!({"routing_key": routing_key, "event_action": "resolve", "dedup_key": text(body, "resolves")});
    }
    let component = [text(body, "budget"), text(body, "rule")].into_iter().find(|name| !name.is_empty());
    json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": text(body, "alert_id"),
        "payload": {
            "summary": cut(text(body, "summary"), PAGERDUTY_SUMMARY_CHARS),
            "source": text(body, "scope"),
            "severity": severity(body),
            "timestamp": text(body, "fired_at"),
            "component": component.unwrap_or("costline"),
            "group": "costline",
            "class": text(body, "kind"),
            "custom_details": body,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget_body(summary: &str, threshold: u32) -> Value {
        json!({
            "alert_id": "al_0123456789abcdef0123456789abcdef", "kind": "budget", "budget": "checkout monthly",
            "rule": null, "scope": "tenant=acme,endpoint_tag=checkout.ai_summary,environment=prod,data_mode=real",
            "period": {"start": "2026-11-01T00:00:00+00:00", "end": "2026-12-01T00:00:00+00:00"},
            "threshold_percent": threshold, "spend_usd": "5.010000000000", "limit_usd": "5.000000000000",
            "ratio": 1.002, "state": "exceeded", "as_of": "2026-11-20T10:00:00+00:00",
            "fired_at": "2026-11-20T10:00:02.5+00:00", "summary": summary,
        })
    }

    #[test]
    fn slack_shows_the_summary_and_the_exact_fields() {
        let message =
            slack(&budget_body("Budget 'checkout monthly' for tenant acme: $5.01 of $5.00 (100 %) this month", 100));
        assert_eq!(message["text"], "Budget 'checkout monthly' for tenant acme: $5.01 of $5.00 (100 %) this month");
        let blocks = message["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["text"]["type"], "mrkdwn");
        assert!(blocks[0]["text"]["text"].as_str().unwrap().starts_with("*costline budget alert: exceeded*\nBudget"));
        let fields: Vec<&str> =
            blocks[1]["fields"].as_array().unwrap().iter().map(|f| f["text"].as_str().unwrap()).collect();
        assert!(fields.contains(&"*Spend (USD)*\n5.010000000000"), "{fields:?}");
        assert!(fields.contains(&"*Threshold (%)*\n100"), "{fields:?}");
        assert!(!fields.iter().any(|f| f.starts_with("*Rule*")), "null fields are left out: {fields:?}");
    }

    #[test]
    fn slack_escapes_control_sequences_and_keeps_to_the_limits() {
        let long = format!("<!channel> & {}", "x".repeat(5_000));
        let mut body = budget_body(&long, 80);
        body["scope"] = Value::String(format!("tenant=<@U123>{}", "y".repeat(3_000)));
        let message = slack(&body);
        let all = message.to_string();
        assert!(!all.contains("<!channel>") && !all.contains("<@U123>"), "unescaped: {}", &all[..200]);
        assert!(message["text"].as_str().unwrap().starts_with("&lt;!channel&gt; &amp; xx"));
        assert_eq!(message["text"].as_str().unwrap().chars().count(), SLACK_SECTION_CHARS);
        for block in message["blocks"].as_array().unwrap() {
            if let Some(text) = block["text"]["text"].as_str() {
                assert!(text.chars().count() <= SLACK_SECTION_CHARS);
            }
            for field in block["fields"].as_array().into_iter().flatten() {
                assert!(field["text"].as_str().unwrap().chars().count() <= SLACK_FIELD_CHARS);
            }
        }
    }

    #[test]
    fn pagerduty_triggers_with_the_alert_id_and_resolves_it() {
        let body = budget_body(&"s".repeat(2_000), 100);
        let event = pagerduty(&body, "R0UTINGKEY");
        assert_eq!(event["event_action"], "trigger");
        assert_eq!(event["dedup_key"], "al_0123456789abcdef0123456789abcdef");
        assert_eq!(event["routing_key"], "R0UTINGKEY");
        assert_eq!(event["payload"]["severity"], "critical");
        assert_eq!(event["payload"]["summary"].as_str().unwrap().chars().count(), PAGERDUTY_SUMMARY_CHARS);
        assert_eq!(event["payload"]["component"], "checkout monthly");
        assert_eq!(event["payload"]["custom_details"]["spend_usd"], "5.010000000000");
        assert_eq!(pagerduty(&budget_body("s", 80), "k")["payload"]["severity"], "warning");

        let resolve =
            json!({"kind": "resolve", "alert_id": "al_ffff", "resolves": "al_0123456789abcdef0123456789abcdef"});
        assert_eq!(
            pagerduty(&resolve, "R0UTINGKEY"),
            json!({"routing_key": "R0UTINGKEY", "event_action": "resolve", "dedup_key": "al_0123456789abcdef0123456789abcdef"})
        );
    }
}
