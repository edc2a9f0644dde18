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
