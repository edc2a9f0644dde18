//! `costline reprice` end to end on Tansu + ClickHouse 18.16. A worker counts a week of calls,
//! some to a model the price table does not know (counted unpriced, cost 0) and some to a
//! model whose price is then changed from a date inside that week. With a price file that
//! fixes both:
//! - `--dry-run` prints the per-model change and writes nothing;
//! - a reprice touching a closed month is refused without `--force`;
//! - a reprice killed with SIGKILL between two chunks leaves part of the change, and running
//!   it again completes it: `usage_minute` (every row), `usage_hour`, `usage_day` and the
//!   budget API equal an independent computation with the new prices, while `usage_events`
//!   keeps the original costs;
//! - a further reprice changes nothing.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::expected::{civil_from_days, month_start_secs, parse_rollup_rows, Expected, ROLLUP_COLUMNS};
use common::{append_to_record_file, assert_same_rows, now_ms, publish, wait_until, Setup};

const DAY_MS: i64 = 86_400_000;

fn date(ms: i64) -> String {
    let (y, m, d) = civil_from_days(ms.div_euclid(DAY_MS));
    format!("{y:04}-{m:02}-{d:02}")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn reprice(setup: &Setup, args: &[&str]) -> Command {
    let mut command = setup.command(&["reprice"]);
    command.args(args);
    command
}

/// Cost per (provider, model) in a rollup view, in pico-USD, and its unpriced attempts.
fn by_model(setup: &Setup, view: &str) -> Vec<(String, String, i128, u64)> {
    setup
        .query(&format!(
            "SELECT provider, model, toString(sum(cost_usd)), sum(unpriced_attempts) FROM {view} \
             GROUP BY provider, model ORDER BY provider, model FORMAT TSV"
        ))
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            (f[0].to_string(), f[1].to_string(), pico(f[2]), f[3].parse().unwrap())
        })
        .collect()
}

fn expected_by_model(expected: &Expected) -> Vec<(String, String, i128, u64)> {
    let mut out: std::collections::BTreeMap<(String, String), (i128, u64)> = Default::default();
    for (dims, m) in &expected.minutes {
        let entry = out.entry((dims.provider.clone(), dims.model.clone())).or_default();
        entry.0 += m.cost_pico;
        entry.1 += m.unpriced_attempts;
    }
    out.into_iter().map(|((p, m), (cost, unpriced))| (p, m, cost, unpriced)).collect()
}

/// "12.345000000000" → pico-USD.
fn pico(text: &str) -> i128 {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let negative = int.starts_with('-');
    let value = int.trim_start_matches('-').parse::<i128>().unwrap() * 1_000_000_000_000
        + format!("{frac:0<12}")[..12].parse::<i128>().unwrap();
    if negative {
        -value
    } else {
        value
    }
}

fn count(setup: &Setup, sql: &str) -> u64 {
    setup.query(sql).trim().parse().unwrap()
}

#[test]
fn reprice_corrects_history_once_even_when_killed() {
    common::clear_of_midnight(Duration::from_secs(1200));
    let now = now_ms();
    let (year, month, _) = civil_from_days(now.div_euclid(DAY_MS));
    let month_start = month_start_secs(now / 1000) * 1000;
    // Calls spread over the last six days of this month (or since it began), up to 10 minutes ago.
    let first = (now - 6 * DAY_MS).max(month_start);
    let last = now - 600_000;
    let mut setup = Setup::new("reprice");
    setup.use_config(&format!(
        "[pricing]\nclosed_months = [\"{year:04}-{month:02}\"]\n\n[[budgets]]\nid = \"all\"\nperiod = \"month\"\nlimit_usd = \"1000\"\n"
    ));

    let events = 600;
    let mut records = Vec::new();
    for i in 0..events {
        let at = first + (last - first) * i / events;
        let (provider, model) = match i % 3 {
            0 => ("acme", "mystery-1"),
            _ => ("openai", "gpt-4o-mini"),
        };
        let mut event = serde_json::json!({
            "externalRequestId": format!("req-{i}"),
            "provider": provider,
            "model": model,
            "endpointTag": if i % 2 == 0 { "search.rank" } else { "checkout.summary" },
            "promptVersion": "v1",
            "userId": format!("tenant-{}", i % 4),
            "inputTokens": 1000 + i * 7,
            "cachedInputTokens": i % 5 * 100,
            "outputTokens": 200 + i * 3,
            "status": "success",
            "timestamp": at,
        });
        if i % 3 == 0 {
            event["cacheWrite1hTokens"] = serde_json::json!(50 + i % 7);
        }
        if i % 10 == 9 {
            event["costUsd"] = serde_json::json!(0.5); // billed by the provider: never repriced
        }
        if i % 12 == 5 {
            event["dataMode"] = serde_json::json!("test");
        }
        records.push((format!("req-{i}"), serde_json::to_vec(&event).unwrap(), now));
    }
    let record_file = setup.scratch_file(".jsonl");
    std::fs::write(&record_file, "").unwrap();
    append_to_record_file(&record_file, &records, &vec!["valid"; records.len()]);

    let worker = setup.spawn_worker("worker");
    publish(&setup, &records);
    setup.wait_accounted(events as u64, Duration::from_secs(120));

    let before = Expected::from_record_file(&record_file);
    let unpriced_before: u64 = count(&setup, "SELECT sum(unpriced_attempts) FROM usage_day");
    assert!(unpriced_before > 0, "the unknown model is counted as unpriced");
    assert_eq!(by_model(&setup, "usage_day"), expected_by_model(&before), "before the reprice");
    let events_cost = setup.query("SELECT toString(sum(cost_usd)) FROM usage_events");
    let coverage = setup.command(&["prices", "coverage", "--days", "8"]).output().unwrap();
    assert_eq!(coverage.status.code(), Some(3), "unpriced attempts exist:\n{}", text(&coverage));

    // The fix: the unknown model gets a price from long ago, gpt-4o-mini a new one from the
    // middle of the period on.
    let change_day = date(first + (last - first) / 2 + DAY_MS);
    let prices = setup.scratch_file("-prices.toml");
    std::fs::write(
        &prices,
        format!(
            "version = \"fix-1\"\n\n[[price]]\nprovider = \"acme\"\nmodel = \"mystery-1\"\neffective_from = \"2020-01-01\"\n\
             input = \"1.5\"\ncached_input = \"0.15\"\ncache_write_1h = \"3\"\noutput = \"7\"\n\n[[price]]\nprovider = \"openai\"\n\
             model = \"gpt-4o-mini\"\neffective_from = \"{change_day}\"\ninput = \"0.2\"\ncached_input = \"0.1\"\noutput = \"0.8\"\n"
        ),
    )
    .unwrap();
    let after = Expected::from_record_file_priced(&record_file, &[&prices]);
    assert_ne!(after.totals().cost_pico, before.totals().cost_pico);
    let (from, to) = (date(first), date(now));
    let prices_arg = prices.to_str().unwrap();
    let range = ["--from", from.as_str(), "--to", to.as_str(), "--prices", prices_arg];

    // Dry run: the change per model, nothing written.
    let dry = reprice(&setup, &range).arg("--dry-run").output().unwrap();
    assert!(dry.status.success(), "{}", text(&dry));
    let report = text(&dry);
    assert!(
        report.contains("mystery-1") && report.contains("gpt-4o-mini") && report.contains("dry run: nothing written"),
        "{report}"
    );
    let want_difference = after.totals().cost_pico - before.totals().cost_pico;
    let shown = report.lines().find_map(|l| l.strip_prefix("total difference: ")?.strip_suffix(" USD")).unwrap();
    assert_eq!(pico(shown), want_difference, "{report}");
    assert_eq!(count(&setup, "SELECT count() FROM cost_corrections"), 0);

    // The month is closed: refused without --force.
    let refused = reprice(&setup, &range).output().unwrap();
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(text(&refused).contains(&format!("{year:04}-{month:02}")), "{}", text(&refused));
    assert_eq!(count(&setup, "SELECT count() FROM cost_corrections"), 0);

    // Killed between chunks.
    let planned: u64 = report
        .lines()
        .find_map(|l| l.split(" counted attempts read, ").nth(1)?.strip_suffix(" change cost")?.parse().ok())
        .unwrap();
    let mut killed = reprice(&setup, &range)
        .args(["--force", "--chunk-attempts", "40", "--pause-ms", "500"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut progress = BufReader::new(killed.stderr.take().unwrap()).lines();
    let mut written = 0;
    while written < 3 {
        // Bounded: the reprice ends by itself, closing its stderr.
        let line = progress.next().expect("reprice ended before writing three chunks").unwrap();
        written += usize::from(line.starts_with("chunk "));
    }
    killed.kill().unwrap(); // SIGKILL
    killed.wait().unwrap();
    let corrected = count(&setup, "SELECT count() FROM cost_corrections");
    assert!(corrected >= 120 && corrected < planned, "the kill hit live work: {corrected} of {planned} corrected");
    let started = setup.query("SELECT status FROM repricings FINAL");
    assert_eq!(started.trim(), "started", "the killed reprice is on record as started");

    // Run again: the rest is corrected, nothing twice.
    let rerun = reprice(&setup, &range).args(["--force", "--by", "finance-team"]).output().unwrap();
    assert!(rerun.status.success(), "{}", text(&rerun));
    assert_eq!(count(&setup, "SELECT count() FROM cost_corrections"), planned, "each attempt corrected once");
    assert_eq!(
        count(&setup, "SELECT uniqExact(kafka_topic, kafka_partition, kafka_offset) FROM cost_corrections"),
        planned
    );
    let minutes = parse_rollup_rows(&setup.query(&format!("SELECT {ROLLUP_COLUMNS} FROM usage_minute FORMAT TSV")));
    assert_same_rows("usage_minute after the reprice", after.minutes.iter().map(|(d, m)| (d, m.clone())), &minutes);
    for view in ["usage_minute", "usage_hour", "usage_day"] {
        assert_eq!(by_model(&setup, view), expected_by_model(&after), "{view} after the reprice");
    }
    assert_eq!(
        setup.query("SELECT toString(sum(cost_usd)) FROM usage_events"),
        events_cost,
        "usage_events keep their cost"
    );

    let coverage = setup.command(&["prices", "coverage", "--days", "8"]).output().unwrap();
    assert!(coverage.status.success(), "every attempt is priced now:\n{}", text(&coverage));
    assert!(text(&coverage).contains("fix-1:acme/mystery-1@2020-01-01"), "{}", text(&coverage));

    // The budget API (real prod spend of the month) includes the corrections.
    let want_spend: i128 = after
        .minutes
        .iter()
        .filter(|(d, _)| d.data_mode == "real" && d.environment == "prod")
        .map(|(_, m)| m.cost_pico)
        .sum();
    wait_until(
        Duration::from_secs(60),
        || {
            let (status, body) = worker.http_get("/v1/budgets/all");
            let spend = serde_json::from_str::<serde_json::Value>(&body).ok()?["spend_usd"].as_str().map(pico);
            (status == 200 && spend == Some(want_spend)).then_some(())
        },
        || format!("budget API: {:?}, want spend {want_spend} pico-USD", worker.http_get("/v1/budgets/all")),
    );

    // The audit: the killed run stays 'started', the second is done and names who ran it.
    let audit = setup.query(
        "SELECT status, requested_by, attempts_changed FROM repricings FINAL ORDER BY started_at, status FORMAT TSV",
    );
    assert!(audit.contains("done\tfinance-team\t"), "{audit}");
    assert_eq!(audit.lines().count(), 2, "{audit}");

    // Again: nothing left to change.
    let again = reprice(&setup, &range).arg("--force").output().unwrap();
    assert!(again.status.success(), "{}", text(&again));
    assert!(text(&again).contains(" counted attempts read, 0 change cost"), "{}", text(&again));
    assert_eq!(count(&setup, "SELECT count() FROM cost_corrections"), planned);
    assert_eq!(by_model(&setup, "usage_day"), expected_by_model(&after), "after a second reprice");

    // A chunk the server applied to `cost_corrections` only (a failure half-way through its
    // fan-out): +1 USD on one attempt that the rollups lack. The next reprice completes the
    // chunk in the rollups, then corrects the attempt back: totals are right again.
    setup.query(
        "INSERT INTO reprice_ledger (reprice_id, chunk, targets, repriced_at_ms, cc_kafka_topic, cc_kafka_partition, \
         cc_kafka_offset, cc_event_time, cc_tenant, cc_endpoint_tag, cc_prompt_version, cc_provider, cc_model, \
         cc_environment, cc_data_mode, cc_cost_delta, cc_unpriced_delta, cc_price_version) \
         SELECT 'half-applied', 'half-applied-chunk', 64, toUInt64(now()) * 1000, [kafka_topic], [kafka_partition], \
         [kafka_offset], [event_time], [tenant], [endpoint_tag], [prompt_version], [provider], [model], [environment], \
         [data_mode], [toDecimal128(1, 12)], [toInt8(0)], ['fix-1:half-applied'] \
         FROM usage_events WHERE provider = 'acme' AND data_mode = 'real' LIMIT 1",
    );
    assert_eq!(count(&setup, "SELECT count() FROM cost_corrections"), planned + 1);
    let repair = reprice(&setup, &range).arg("--force").output().unwrap();
    assert!(repair.status.success(), "{}", text(&repair));
    assert!(text(&repair).contains("completing reprice chunk half-applied-chunk"), "{}", text(&repair));
    assert!(text(&repair).contains(" counted attempts read, 1 change cost"), "{}", text(&repair));
    let minutes = parse_rollup_rows(&setup.query(&format!("SELECT {ROLLUP_COLUMNS} FROM usage_minute FORMAT TSV")));
    assert_same_rows("usage_minute after a repair", after.minutes.iter().map(|(d, m)| (d, m.clone())), &minutes);
    for view in ["usage_hour", "usage_day"] {
        assert_eq!(by_model(&setup, view), expected_by_model(&after), "{view} after a repair");
    }
    worker.stop();
}
