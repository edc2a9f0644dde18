//! Upgrading a database made by the previous release, on the local ClickHouse 18.16: steps
//! 001–003 as that release applied them (no `schema_migrations`), flushes written with its
//! ledger columns, then `costline migrate`. Nothing counted changes, the new columns read 0 on
//! old rows, the record lists every step, a second run does nothing, and a 1-hour cache write
//! written afterwards reaches `usage_events` and every rollup view. Also: a step that stopped
//! half-way completes, and a binary refuses a database a newer release upgraded.

// `json!` of a whole ledger row nests deeper than the default limit.
#![recursion_limit = "256"]

mod common;

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::Setup;
use serde_json::{json, Value};

/// Steps of the previous release.
const RELEASED: [&str; 3] = ["001_ledger.sql", "002_rollup.sql", "003_alerts.sql"];

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn costline(setup: &Setup, args: &[&str]) -> Output {
    setup.command(args).output().expect("running costline")
}

/// `costline migrate --print-sql` for 18.16: `(file, statement)` in order.
fn statements(setup: &Setup) -> Vec<(String, String)> {
    let output = costline(setup, &["migrate", "--print-sql", "--legacy-chaining"]);
    assert!(output.status.success(), "{}", text(&output));
    let mut out: Vec<(String, String)> = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        match line.strip_prefix("-- ").filter(|file| file.ends_with(".sql")) {
            Some(file) => out.push((file.to_string(), String::new())),
            None => {
                let (_, sql) = out.last_mut().expect("a statement before its file");
                sql.push_str(line);
                sql.push('\n');
            }
        }
    }
    out.into_iter().map(|(file, sql)| (file, sql.trim().trim_end_matches(';').to_string())).collect()
}

/// Runs a statement as the migrator does on 18.16 (which has no `ADD COLUMN IF NOT EXISTS`).
fn run_statement(sql: &str) {
    common::clickhouse_query("default", &sql.replacen("ADD COLUMN IF NOT EXISTS", "ADD COLUMN", 1));
}

fn time(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0).expect("a time").format("%Y-%m-%d %H:%M:%S").to_string()
}

/// One flush of `events` attempts of `partition` from offset `first`, as a worker of the previous
/// release wrote it (its columns only), with one minute rollup row per attempt, one duplicate
/// and one reject. Attempts are 25 minutes apart from `start_secs`: several minutes, hours and
/// (across partitions) days.
fn old_flush(partition: u32, first: u64, events: u64, start_secs: i64) -> serde_json::Map<String, Value> {
    let offsets: Vec<u64> = (first..first + events).collect();
    let times: Vec<String> = (0..events as i64).map(|i| time(start_secs + i * 1500)).collect();
    let minutes: Vec<String> = (0..events as i64).map(|i| time((start_secs + i * 1500) / 60 * 60)).collect();
    let each = |f: &dyn Fn(u64) -> Value| Value::Array((0..events).map(f).collect());
    let row = json!({
        "kafka_topic": "upgrade.usage", "kafka_partition": partition, "first_offset": first,
        "next_offset": first + events + 2, "newest_record_time": times.last(), "duplicate_count": 1,
        "worker": "previous-release", "flushed_at": times.last(), "targets": 63,
        "ev_offset": offsets, "ev_record_time": times, "ev_event_time": times,
        "ev_external_request_id": each(&|i| json!(format!("p{partition}-{first}-{}", i / 2))),
        "ev_attempt": each(&|i| json!(i % 2 + 1)),
        "ev_first_of_request": each(&|i| json!(u8::from(i % 2 == 0))),
        "ev_tenant": each(&|i| json!(format!("t{}", i % 3))),
        "ev_endpoint_tag": each(&|i| json!(format!("checkout.e{}", i % 2))),
        "ev_prompt_version": each(&|_| json!("v1")),
        "ev_provider": each(&|_| json!("anthropic")),
        "ev_model": each(&|_| json!("claude-sonnet-4-5")),
        "ev_environment": each(&|_| json!("prod")),
        "ev_data_mode": each(&|_| json!("real")),
        "ev_status": each(&|i| json!(if i % 4 == 3 { "error" } else { "success" })),
        "ev_error_code": each(&|i| json!(if i % 4 == 3 { "500" } else { "" })),
        "ev_input_tokens": each(&|i| json!(1000 + i)),
        "ev_cached_input_tokens": each(&|i| json!(100 + i)),
        "ev_cache_write_tokens": each(&|_| json!(50)),
        "ev_output_tokens": each(&|i| json!(10 + i)),
        "ev_latency_ms": each(&|i| if i % 5 == 4 { Value::Null } else { json!(100 + 7 * i) }),
        "ev_cost_usd": each(&|i| json!((125 + 10 * i) as f64 / 10_000.0)),
        "ev_price_version": each(&|_| json!("2026-12-07:anthropic/claude-sonnet-4-5@2025-09-29")),
        "ru_window_start": minutes,
        "ru_tenant": each(&|i| json!(format!("t{}", i % 3))),
        "ru_endpoint_tag": each(&|i| json!(format!("checkout.e{}", i % 2))),
        "ru_prompt_version": each(&|_| json!("v1")),
        "ru_provider": each(&|_| json!("anthropic")),
        "ru_model": each(&|_| json!("claude-sonnet-4-5")),
        "ru_environment": each(&|_| json!("prod")),
        "ru_data_mode": each(&|_| json!("real")),
        "ru_requests": each(&|i| json!(u8::from(i % 2 == 0))),
        "ru_attempts": each(&|_| json!(1)),
        "ru_duplicates": each(&|i| json!(u8::from(i == 0))),
        "ru_successes": each(&|i| json!(u8::from(i % 4 != 3))),
        "ru_errors": each(&|i| json!(u8::from(i % 4 == 3))),
        "ru_input_tokens": each(&|i| json!(1000 + i)),
        "ru_cached_input_tokens": each(&|i| json!(100 + i)),
        "ru_cache_write_tokens": each(&|_| json!(50)),
        "ru_output_tokens": each(&|i| json!(10 + i)),
        "ru_cost_usd": each(&|i| json!((125 + 10 * i) as f64 / 10_000.0)),
        "ru_unpriced_attempts": each(&|_| json!(0)),
        "ru_latency_ms_sum": each(&|i| json!(if i % 5 == 4 { 0 } else { 100 + 7 * i })),
        "ru_latency_ms_max": each(&|i| json!(if i % 5 == 4 { 0 } else { 100 + 7 * i })),
        "ru_latency_buckets": each(&|i| if i % 5 == 4 { json!([]) } else { json!([118 + i % 3]) }),
        "ru_latency_counts": each(&|i| if i % 5 == 4 { json!([]) } else { json!([1]) }),
        "ru_flush_offset": each(&|_| json!(0)),
        "rj_offset": [first + events + 1], "rj_record_time": [times.last()], "rj_reason_code": ["invalid_json"],
        "rj_field": [""], "rj_reason": ["expected value at line 1 column 1"], "rj_payload_head": ["{oops"],
        "rj_payload_bytes": [5],
    });
    match row {
        Value::Object(map) => map,
        _ => unreachable!("json! of an object"),
    }
}

/// Inserts each row naming its columns, as workers do: a column a row leaves out takes its
/// `DEFAULT` expression (18.16 fills a key missing from a JSON row with the type's default).
fn insert_flushes(setup: &Setup, rows: &[serde_json::Map<String, Value>]) {
    let url = format!("{}/?database={}", common::CLICKHOUSE, setup.database);
    for row in rows {
        let columns: Vec<&str> = row.keys().map(String::as_str).collect();
        let sql = format!(
            "INSERT INTO flush_ledger ({}) FORMAT JSONEachRow\n{}",
            columns.join(", "),
            Value::Object(row.clone())
        );
        let mut response =
            ureq::post(&url).config().http_status_as_error(false).build().send(sql).expect("ClickHouse reachable");
        let answer = response.body_mut().read_to_string().unwrap_or_default();
        assert_eq!(response.status(), 200, "inserting a flush: {answer}");
    }
}

/// A database as the previous release left it: its steps, and flushes of 4 partitions over
/// several days written with its columns.
fn previous_release_database(setup: &Setup) {
    for (file, sql) in statements(setup) {
        if RELEASED.contains(&file.as_str()) {
            run_statement(&sql);
        }
    }
    let start = 1_790_000_000;
    let rows: Vec<_> = (0..4)
        .flat_map(|p| [old_flush(p, 0, 8, start + i64::from(p) * 86_400), old_flush(p, 10, 6, start + 200_000)])
        .collect();
    insert_flushes(setup, &rows);
}

const ROLLUP_ORDER: &str =
    "window_start, tenant, endpoint_tag, prompt_version, provider, model, environment, data_mode";

/// Everything analysts read, with the previous release's columns, in a fixed order.
fn snapshot(setup: &Setup) -> Vec<(String, String)> {
    let mut queries = vec![
        (
            "usage_events".to_string(),
            "SELECT event_time, record_time, external_request_id, attempt, first_of_request, tenant, endpoint_tag, \
             prompt_version, provider, model, environment, data_mode, status, error_code, input_tokens, \
             cached_input_tokens, cache_write_tokens, output_tokens, latency_ms, cost_usd, price_version, kafka_topic, \
             kafka_partition, kafka_offset, flush_next_offset FROM usage_events \
             ORDER BY kafka_topic, kafka_partition, kafka_offset"
                .to_string(),
        ),
        ("flushes".into(), "SELECT * FROM flushes ORDER BY kafka_partition, next_offset".into()),
        ("rejected_events".into(), "SELECT * FROM rejected_events ORDER BY kafka_partition, kafka_offset".into()),
    ];
    for rollup in ["minute", "hour", "day"] {
        queries.push((
            format!("usage_{rollup}"),
            format!(
                "SELECT {ROLLUP_ORDER}, requests, attempts, retries, duplicates, successes, errors, input_tokens, \
                 cached_input_tokens, cache_write_tokens, output_tokens, cost_usd, unpriced_attempts, latency_ms_sum, \
                 latency_ms_max, latency_samples, latency_ms_p50, latency_ms_p95, latency_ms_p99 \
                 FROM usage_{rollup} ORDER BY {ROLLUP_ORDER}"
            ),
        ));
    }
    queries.into_iter().map(|(table, sql)| (table, setup.query(&format!("{sql} FORMAT TSV")))).collect()
}

fn assert_substantial(before: &[(String, String)]) {
    for (table, rows) in before {
        assert!(rows.lines().count() >= 4, "{table} holds too little to compare:\n{rows}");
    }
    let days = before.iter().find(|(table, _)| table == "usage_day").map_or(0, |(_, rows)| rows.lines().count());
    assert!(days >= 4, "the data spans too few days");
}

/// Per table: `sum(cache_write_1h_tokens)`.
fn one_hour_writes(setup: &Setup) -> Vec<String> {
    ["usage_events", "usage_minute", "usage_hour", "usage_day"]
        .iter()
        .map(|table| setup.query(&format!("SELECT sum(cache_write_1h_tokens) FROM {table}")).trim().to_string())
        .collect()
}

fn recorded_versions(setup: &Setup) -> String {
    setup.query("SELECT groupArray(version) FROM (SELECT DISTINCT version FROM schema_migrations ORDER BY version)")
}

/// After the upgrade: a flush with 1-hour writes reaches every table, and a flush written
/// without the new arrays (a worker of the previous release) still fans out, with 0.
fn new_flushes_arrive(setup: &Setup) {
    let events_before: u64 = setup.query("SELECT count() FROM usage_events").trim().parse().unwrap();
    let mut new = old_flush(7, 0, 4, 1_790_500_000);
    new.insert("ev_cache_write_1h_tokens".into(), json!([300, 0, 400, 0]));
    new.insert("ru_cache_write_1h_tokens".into(), json!([300, 0, 400, 0]));
    insert_flushes(setup, &[new, old_flush(8, 0, 4, 1_790_500_000)]);
    assert_eq!(one_hour_writes(setup), ["700"; 4]);
    let events_after: u64 = setup.query("SELECT count() FROM usage_events").trim().parse().unwrap();
    assert_eq!(events_after, events_before + 8);
    assert_eq!(setup.query("SELECT count() FROM usage_events WHERE kafka_partition = 8").trim(), "4");
}

#[test]
fn upgrade_from_the_previous_release_keeps_every_total() {
    let setup = Setup::new("migrations");
    previous_release_database(&setup);
    assert_eq!(setup.query("EXISTS TABLE schema_migrations").trim(), "0");
    let before = snapshot(&setup);
    assert_substantial(&before);

    let status = costline(&setup, &["migrate", "--status"]);
    assert!(status.status.success(), "{}", text(&status));
    assert!(text(&status).contains("004 cache_write_1h   pending"), "{}", text(&status));
    assert!(text(&status).contains("005 reprice          pending"), "{}", text(&status));

    let migrate = costline(&setup, &["migrate"]);
    assert!(migrate.status.success(), "{}", text(&migrate));
    for file in ["001_ledger.sql", "002_rollup.sql", "003_alerts.sql", "004_cache_write_1h.sql", "005_reprice.sql"] {
        assert!(text(&migrate).contains(&format!("applied migration step {file}")), "{}", text(&migrate));
    }
    assert_eq!(snapshot(&setup), before, "the upgrade changed what analysts read");
    assert_eq!(one_hour_writes(&setup), ["0"; 4], "old rows read 0 one-hour writes");
    assert_eq!(recorded_versions(&setup).trim(), "[1,2,3,4,5]");

    // Nothing pending: no DDL (no table's metadata changes; the modification times have a
    // one-second resolution, hence the wait).
    let tables = "SELECT name, metadata_modification_time FROM system.tables WHERE database = currentDatabase() \
                  ORDER BY name FORMAT TSV";
    let metadata = setup.query(tables);
    std::thread::sleep(Duration::from_millis(1100));
    let again = costline(&setup, &["migrate"]);
    assert!(again.status.success() && text(&again).contains("is up to date: nothing applied"), "{}", text(&again));
    assert_eq!(setup.query(tables), metadata, "a migrate with nothing pending changed the schema");
    let status = costline(&setup, &["migrate", "--status"]);
    assert!(status.status.success(), "{}", text(&status));
    assert!(text(&status).ends_with("nothing pending\n"), "{}", text(&status));
    assert!(text(&status).contains("004 cache_write_1h   applied at "), "{}", text(&status));

    new_flushes_arrive(&setup);
}

#[test]
fn a_step_stopped_half_way_completes_on_the_next_migrate() {
    let setup = Setup::new("migrations_crash");
    previous_release_database(&setup);
    let before = snapshot(&setup);
    // Step 004 up to the middle of its view drops: columns added, some views gone.
    let step: Vec<String> = statements(&setup)
        .into_iter()
        .filter(|(file, _)| file == "004_cache_write_1h.sql")
        .map(|(_, sql)| sql)
        .collect();
    let stop =
        step.iter().position(|sql| sql.contains("DROP TABLE IF EXISTS") && sql.contains("usage_hour_mv")).unwrap();
    for sql in &step[..stop] {
        run_statement(sql);
    }
    assert_eq!(setup.query("EXISTS TABLE usage_events_mv").trim(), "0");

    let migrate = costline(&setup, &["migrate"]);
    assert!(migrate.status.success(), "{}", text(&migrate));
    assert_eq!(snapshot(&setup), before, "completing the step changed what analysts read");
    assert_eq!(one_hour_writes(&setup), ["0"; 4]);
    assert_eq!(recorded_versions(&setup).trim(), "[1,2,3,4,5]");
    new_flushes_arrive(&setup);
}

#[test]
fn a_database_upgraded_by_a_newer_release_is_refused() {
    let setup = Setup::new("migrations_newer");
    let migrate = costline(&setup, &["migrate"]);
    assert!(migrate.status.success(), "{}", text(&migrate));
    setup.query(
        "INSERT INTO schema_migrations (version, name, checksum, applied_at, costline_version, host) \
         VALUES (99, 'from_the_future', '', now(), '9.0.0', 'elsewhere')",
    );

    let refused = costline(&setup, &["migrate"]);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(text(&refused).contains("step 099 (from_the_future) applied, by costline 9.0.0"), "{}", text(&refused));
    let status = costline(&setup, &["migrate", "--status"]);
    assert!(status.status.success() && text(&status).contains("UNKNOWN"), "{}", text(&status));

    // A worker stops at start with the same reason, before it consumes anything.
    let mut worker = setup.command(&["run"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let code = loop {
        if let Some(code) = worker.try_wait().unwrap() {
            break code;
        }
        if Instant::now() > deadline {
            let _ = worker.kill();
            panic!("the worker started on a database a newer release upgraded");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = worker.wait_with_output().unwrap();
    assert!(!code.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("a newer release upgraded the schema"),
        "{}",
        text(&output)
    );
}
