//! The analyst shortcuts on real data: each `costline report …` prints an aligned table with
//! rows and the SQL it ran, `costline prices coverage` names the unpriced models and fails
//! while they exist, and `costline config check` prints the effective configuration.

mod common;

use std::time::Duration;

use common::Setup;

#[test]
fn analyst_shortcuts_print_tables_and_their_sql() {
    let mut setup = Setup::new("reports");
    let record_file = setup.scratch_file(".jsonl");
    // 2026-09-21: inside the period the reports are asked about.
    setup.produce(5_000, 4, 1_790_000_000_000, &record_file);
    // And traffic of this month, for the tenants report.
    common::clear_of_midnight(Duration::from_secs(300));
    setup.produce(2_000, 9, common::now_ms() - 120_000, &setup.scratch_file("-now.jsonl"));
    let worker = setup.spawn_worker("reports");
    setup.wait_accounted(7_000, Duration::from_secs(60));
    assert_eq!(worker.stop(), 0);
    // 18.16 compares a Date with a DateTime as plain numbers: make the month start a DateTime.
    let this_month = "FROM usage_day WHERE window_start >= toDateTime(toStartOfMonth(now())) \
                      AND data_mode = 'real' AND environment = 'prod'";
    let top_tenant = setup.query(&format!(
        "SELECT tenant {this_month} AND tenant != '' GROUP BY tenant ORDER BY sum(cost_usd) DESC LIMIT 1"
    ));
    let top_tenant = top_tenant.trim();
    setup.use_config(&format!(
        "[[budgets]]\nid = \"tenant\"\nperiod = \"month\"\nlimit_usd = \"2.5\"\n[budgets.scope]\ntenant = \"{top_tenant}\"\n"
    ));

    let period = ["--from", "2026-09-01", "--to", "2026-10-01"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        ([&["report", "top-endpoints"][..], &period].concat(), "checkout.ai_summary"),
        (
            [&["report", "prompt-versions", "--endpoint", "checkout.ai_summary", "--split", "2026-09-21"][..], &period]
                .concat(),
            "summary_v3",
        ),
        ([&["report", "model-mix"][..], &period].concat(), "gpt-4o-mini"),
        // A `?` or a quote in a value is bound as a value, not read as SQL or a placeholder.
        ([&["report", "model-mix", "--endpoint", "what?'s this"][..], &period].concat(), "total_attempts"),
    ];
    for (args, expected) in cases {
        let output = setup.command(&args).output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        assert!(stdout.contains(expected), "{args:?} printed:\n{stdout}");
        assert!(stdout.contains("-- SQL: SELECT"), "{args:?} does not show its SQL:\n{stdout}");
        assert!(stdout.lines().any(|l| l.starts_with("---")), "{args:?} has no table rule:\n{stdout}");
    }

    // The tenants report: the spend this month of each of the top tenants (it prints 50; the
    // first 40 are compared, clear of ties at its cut), and the monthly budget of one.
    let output = setup.command(&["report", "tenants"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let spends = setup.query(&format!(
        "SELECT if(tenant = '', '(none)', tenant), toString(toDecimal64(sum(cost_usd), 4)) {this_month} \
         GROUP BY tenant ORDER BY sum(cost_usd) DESC LIMIT 40 FORMAT TSV"
    ));
    assert!(spends.lines().count() >= 2, "this month's traffic has tenants: {spends}");
    for line in spends.lines() {
        let (tenant, spend) = line.split_once('\t').unwrap();
        let printed = stdout.lines().find(|l| l.split_whitespace().next() == Some(tenant));
        let fields: Vec<&str> =
            printed.unwrap_or_else(|| panic!("{tenant} missing:\n{stdout}")).split_whitespace().collect();
        assert_eq!(fields[1], spend, "spend of {tenant}");
        if tenant == top_tenant {
            let percent: f64 = fields[3].parse().unwrap();
            let expected = (spend.parse::<f64>().unwrap() / 2.5 * 1000.0).round() / 10.0;
            assert_eq!((fields[2], percent), ("2.500000", expected), "budget of {tenant}");
        } else {
            assert_eq!(fields[2], "0.000000", "{tenant} has no budget");
        }
    }

    // The generated traffic has an unpriced model and costUsd-priced attempts.
    let output = setup.command(&["prices", "coverage", "--days", "36500"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(3),
        "unpriced attempts exist:\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let unpriced: u64 =
        setup.query("SELECT count() FROM usage_events WHERE price_version = ''").trim().parse().unwrap();
    assert!(unpriced > 0 && stdout.contains(&format!("unpriced attempts: {unpriced}\n")), "{stdout}");
    let models = setup
        .query("SELECT DISTINCT concat(provider, '/', model) FROM usage_events WHERE price_version = '' FORMAT TSV");
    for model in models.lines() {
        assert!(stdout.contains(model), "{model} missing from:\n{stdout}");
    }
    assert!(stdout.contains("costUsd (reported)"), "{stdout}");

    let output = setup.command(&["config", "check"]).env("COSTLINE_CLICKHOUSE_PASSWORD", "hunter2").output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    assert!(stdout.contains(&format!("database = \"{}\"", setup.database)), "{stdout}");
    assert!(stdout.contains("set (***)") && !stdout.contains("hunter2"), "{stdout}");
}

/// A decimal as ClickHouse prints `Decimal(38, 12)`, in pico-dollars: sums stay exact.
fn pico(decimal: &str) -> i128 {
    let (whole, fraction) = decimal.split_once('.').unwrap_or((decimal, ""));
    assert!(fraction.len() <= 12, "{decimal} has more than 12 decimals");
    let sign = if whole.starts_with('-') { -1 } else { 1 };
    let whole: i128 = whole.parse().unwrap_or_else(|e| panic!("{decimal}: {e}"));
    let fraction: i128 = format!("{fraction:0<12}").parse().unwrap_or_else(|e| panic!("{decimal}: {e}"));
    whole * 1_000_000_000_000 + sign * fraction
}

/// One row of `report monthly`: its dimensions, requests and cost in pico-dollars.
type MonthlyRow = (String, String, String, String, String, String, u64, i128);

/// Runs `report monthly` for September 2026 in `zone` with `--format format`, checks that
/// stdout holds only the rows (the SQL is on stderr) and returns the rows.
fn monthly(setup: &Setup, zone: &str, format: &str) -> Vec<MonthlyRow> {
    let output = setup
        .command(&["report", "monthly", "--month", "2026-09", "--time-zone", zone, "--format", format])
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8(output.stdout).unwrap(), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("-- SQL: SELECT record_type, '2026-09' AS month"), "{stderr}");
    let header =
        ["record_type", "month", "tenant", "endpoint_tag", "provider", "model", "requests", "attempts", "cost_usd"];
    let rows: Vec<MonthlyRow> = match format {
        "csv" => {
            assert!(stdout.ends_with("\r\n"), "RFC 4180 lines end with CRLF: {stdout:?}");
            let mut reader = csv::Reader::from_reader(stdout.as_bytes());
            assert_eq!(reader.headers().unwrap(), header.as_slice());
            reader
                .records()
                .map(|record| {
                    let r = record.unwrap();
                    let text = |i: usize| r[i].to_string();
                    (text(0), text(1), text(2), text(3), text(4), text(5), r[6].parse().unwrap(), pico(&r[8]))
                })
                .collect()
        }
        _ => {
            let rows: Vec<serde_json::Map<String, serde_json::Value>> = serde_json::from_str(&stdout).unwrap();
            rows.iter()
                .map(|r| {
                    assert_eq!(r.keys().collect::<Vec<_>>().len(), header.len(), "{r:?}");
                    let text =
                        |key: &str| r[key].as_str().unwrap_or_else(|| panic!("{key} is a string: {r:?}")).to_string();
                    // Money is an exact decimal string, counts are numbers.
                    let requests = r["requests"].as_u64().unwrap_or_else(|| panic!("requests is a number: {r:?}"));
                    assert!(r["attempts"].as_u64().is_some(), "{r:?}");
                    let cost = pico(&text("cost_usd"));
                    (
                        text("record_type"),
                        text("month"),
                        text("tenant"),
                        text("endpoint_tag"),
                        text("provider"),
                        text("model"),
                        requests,
                        cost,
                    )
                })
                .collect()
        }
    };
    let (total, items) = rows.split_last().unwrap_or_else(|| panic!("no rows:\n{stdout}"));
    assert_eq!(total.0, "total", "{stdout}");
    assert!(items.iter().all(|r| r.0 == "line_item" && r.1 == "2026-09"), "{stdout}");
    assert_eq!(items.iter().map(|r| r.7).sum::<i128>(), total.7, "the line items add up to the total");
    assert_eq!(items.iter().map(|r| r.6).sum::<u64>(), total.6);
    rows
}

/// `sum(cost_usd)` of real, prod traffic of `table` over `[from, to)` (UTC), in pico-dollars.
fn spend(setup: &Setup, table: &str, time: &str, from: &str, to: &str) -> i128 {
    pico(
        setup
            .query(&format!(
                "SELECT toString(sum(cost_usd)) FROM {table} WHERE {time} >= toDateTime('{from}', 'UTC') \
                 AND {time} < toDateTime('{to}', 'UTC') AND data_mode = 'real' AND environment = 'prod'"
            ))
            .trim(),
    )
}

#[test]
fn exports_parse_back_and_the_monthly_total_equals_the_rollups() {
    let setup = Setup::new("exports");
    // 2,000 records 10 ms apart from 10 s before each bound: across Kolkata's September start
    // (18:30 UTC), Berlin's start and end (22:00 UTC), UTC's end, and one batch mid-month.
    let starts = [
        "2026-08-31T18:29:50Z",
        "2026-08-31T21:59:50Z",
        "2026-09-15T12:00:00Z",
        "2026-09-30T21:59:50Z",
        "2026-09-30T23:59:50Z",
    ];
    for (seed, start) in starts.iter().enumerate() {
        let start_ms = chrono::DateTime::parse_from_rfc3339(start).unwrap().timestamp_millis();
        setup.produce(2_000, 20 + seed as u64, start_ms, &setup.scratch_file(&format!("-{seed}.jsonl")));
    }
    let worker = setup.spawn_worker("exports");
    setup.wait_accounted(10_000, Duration::from_secs(90));
    assert_eq!(worker.stop(), 0);

    // UTC: the total is `usage_day`'s for the month, each line item its group's.
    let utc = monthly(&setup, "UTC", "csv");
    assert_eq!(monthly(&setup, "UTC", "json"), utc, "CSV and JSON hold the same rows");
    let total = utc.last().unwrap().7;
    assert_eq!(total, spend(&setup, "usage_day", "window_start", "2026-09-01 00:00:00", "2026-10-01 00:00:00"));
    let groups = setup.query(
        "SELECT tenant, endpoint_tag, provider, model, sum(requests), toString(sum(cost_usd)) FROM usage_day \
         WHERE toYYYYMM(window_start) = 202609 AND data_mode = 'real' AND environment = 'prod' \
         GROUP BY tenant, endpoint_tag, provider, model FORMAT TSV",
    );
    let mut expected: Vec<(String, String, String, String, u64, i128)> = groups
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            (f[0].into(), f[1].into(), f[2].into(), f[3].into(), f[4].parse().unwrap(), pico(f[5]))
        })
        .collect();
    let mut printed: Vec<_> =
        utc[..utc.len() - 1].iter().map(|r| (r.2.clone(), r.3.clone(), r.4.clone(), r.5.clone(), r.6, r.7)).collect();
    expected.sort();
    printed.sort();
    assert!(printed.len() > 20, "{printed:?}");
    assert_eq!(printed, expected);

    // Berlin's September (22:00 UTC to 22:00 UTC, summer time): the same instants in
    // `usage_hour`, `usage_minute` and the counted attempts; not UTC's month.
    let berlin = monthly(&setup, "Europe/Berlin", "json").last().unwrap().7;
    let (from, to) = ("2026-08-31 22:00:00", "2026-09-30 22:00:00");
    assert_eq!(berlin, spend(&setup, "usage_hour", "window_start", from, to));
    assert_eq!(berlin, spend(&setup, "usage_minute", "window_start", from, to));
    assert_eq!(berlin, spend(&setup, "usage_events", "event_time", from, to));
    assert_ne!(berlin, total, "the batches across the bounds make the months differ");
    // Kolkata (UTC+5:30): bounds at half past the hour, read from `usage_minute`.
    let kolkata = monthly(&setup, "Asia/Kolkata", "csv").last().unwrap().7;
    assert_eq!(kolkata, spend(&setup, "usage_events", "event_time", "2026-08-31 18:30:00", "2026-09-30 18:30:00"));
    assert_ne!(kolkata, berlin);

    // The table prints the total last, then its SQL.
    let output = setup.command(&["report", "monthly", "--month", "2026-09"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let total_line = stdout.lines().find(|l| l.starts_with("total")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(total_line.ends_with(&setup.query("SELECT toString(sum(cost_usd)) FROM usage_day WHERE toYYYYMM(window_start) = 202609 AND data_mode = 'real' AND environment = 'prod'").trim().to_string()), "{stdout}");
    assert!(stdout.contains("-- SQL: SELECT record_type"), "{stdout}");

    // Every report takes --format: the CSV and JSON of one answer hold the same rows.
    let period = ["--from", "2026-09-01", "--to", "2026-10-01"];
    let prompt_versions = ["report", "prompt-versions", "--endpoint", "checkout.ai_summary", "--split", "2026-09-15"];
    for args in
        [&["report", "top-endpoints"][..], &prompt_versions, &["report", "model-mix", "--endpoint", "what?'s this"]]
    {
        let run = |format: &str| {
            let args = [args, &period, &["--format", format]].concat();
            let output = setup.command(&args).output().unwrap();
            assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
            String::from_utf8(output.stdout).unwrap()
        };
        let csv_text = run("csv");
        let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
        let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
        let from_csv: Vec<Vec<String>> =
            reader.records().map(|r| r.unwrap().iter().map(String::from).collect()).collect();
        let json: Vec<serde_json::Map<String, serde_json::Value>> = serde_json::from_str(&run("json")).unwrap();
        let from_json: Vec<Vec<String>> = json
            .iter()
            .map(|row| {
                assert_eq!(row.len(), header.len(), "{args:?}: {row:?}");
                header.iter().map(|key| row[key].as_str().map_or_else(|| row[key].to_string(), String::from)).collect()
            })
            .collect();
        assert_eq!(from_json, from_csv, "{args:?}");
        assert_eq!(from_csv.is_empty(), args.contains(&"what?'s this"), "{args:?}: {csv_text}");
    }
}
