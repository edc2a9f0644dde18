//! The built-in dashboard page, opened in headless Chromium (Debian's `chromium`) with a
//! period, filters, an endpoint and a split: the page's script fetches the worker's data and
//! renders it; the test reads the numbers the page shows (hourly costs, endpoints, the prompt
//! versions before and after the split, unpriced models, rejected records by reason, budget
//! progress) from the rendered DOM and compares each with ClickHouse, queried directly (the
//! prompt versions and unpriced models from `usage_events`, one row per counted attempt, not
//! from the rollups the dashboard reads). A screenshot is kept in
//! `<target dir>/test-artifacts/dashboard.png`.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::Setup;
use scraper::{ElementRef, Html, Selector};

const TOKEN: &str = "dashboard-test-token";
const ENDPOINT: &str = "checkout.ai_summary";
const TOP: usize = 4;

fn chromium(args: &[&str], url: &str) -> std::process::Output {
    let profile = tempdir("chromium-profile");
    let mut command = Command::new("chromium");
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=15000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url);
    let output = common::output_within(&mut command, Duration::from_secs(120));
    let _ = std::fs::remove_dir_all(&profile);
    output
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(common::unique_name(name));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The page's DOM once its script has finished.
fn rendered(url: &str) -> Html {
    let output = chromium(&["--dump-dom"], url);
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(
        dom.contains("data-loaded=\"true\""),
        "the page's script did not finish: {}\n{dom}\n{}",
        error_text(&Html::parse_document(&dom)),
        String::from_utf8_lossy(&output.stderr)
    );
    Html::parse_document(&dom)
}

fn select<'a>(html: &'a Html, css: &str) -> Vec<ElementRef<'a>> {
    html.select(&Selector::parse(css).unwrap()).collect()
}

fn error_text(html: &Html) -> String {
    select(html, "#error").iter().map(|e| e.text().collect::<String>()).collect()
}

/// A number the page shows: its text and the exact value the API gave.
#[derive(Debug)]
struct Shown {
    text: String,
    value: String,
}

/// The `[data-field]` elements inside `row`, by field.
fn fields(row: &ElementRef) -> BTreeMap<String, Shown> {
    let mut out = BTreeMap::new();
    for cell in row.select(&Selector::parse("[data-field]").unwrap()) {
        let (field, value) = (cell.attr("data-field").unwrap(), cell.attr("data-value").unwrap_or_default());
        out.insert(field.to_string(), Shown { text: cell.text().collect(), value: value.to_string() });
    }
    out
}

/// Exact decimal USD (as ClickHouse prints a `Decimal(38, 12)`) in pico-USD.
fn pico(text: &str) -> i128 {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    assert!(fraction.len() <= 12, "{text}");
    format!("{whole}{fraction:0<12}").parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn usd_string(pico: i128) -> String {
    format!("{}.{:012}", pico / 1_000_000_000_000, pico % 1_000_000_000_000)
}

/// `$1,234.57`: pico-USD rounded half up to `places` decimals, with thousands separators.
fn dollars(pico: i128, places: u32) -> String {
    let step = 10i128.pow(12 - places);
    let rounded = (pico + step / 2) / step;
    let scale = 10i128.pow(places);
    let whole = grouped(&(rounded / scale).to_string());
    if places == 0 {
        format!("${whole}")
    } else {
        format!("${whole}.{:0width$}", rounded % scale, width = places as usize)
    }
}

fn grouped(digits: &str) -> String {
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A money field: the exact value is `want` and the text is it rounded to cents.
fn assert_money(what: &str, shown: &Shown, want: i128) {
    assert_eq!(pico(&shown.value), want, "{what}: exact value");
    assert_eq!(shown.text, dollars(want, 2), "{what}: shown to the cent");
}

fn assert_count(what: &str, shown: &Shown, want: u64) {
    assert_eq!(shown.value, want.to_string(), "{what}: value");
    assert_eq!(shown.text, grouped(&want.to_string()), "{what}: shown");
}

/// A ratio field: the value is `retries / requests` and the text that in percent, one decimal.
fn assert_ratio(what: &str, shown: &Shown, retries: u64, requests: u64) {
    if requests == 0 {
        assert_eq!((shown.value.as_str(), shown.text.as_str()), ("", "–"), "{what}");
        return;
    }
    let want = retries as f64 / requests as f64;
    let value: f64 = shown.value.parse().unwrap();
    assert!((value - want).abs() < 1e-12, "{what}: ratio {value}, ClickHouse {want}");
    let percent: f64 = shown.text.trim_end_matches('%').parse().unwrap();
    assert!((percent - 100.0 * want).abs() <= 0.05 + 1e-9, "{what}: shown {}, ClickHouse {want}", shown.text);
}

/// Rows of a TSV answer.
fn tsv(text: &str) -> Vec<Vec<String>> {
    text.lines().filter(|l| !l.is_empty()).map(|l| l.split('\t').map(str::to_string).collect()).collect()
}

/// `2026-11-01 13:00:00` (ClickHouse) or epoch seconds as `2026-11-01T13:00:00Z` (the page).
fn iso(seconds: i64) -> String {
    chrono::DateTime::from_timestamp(seconds, 0).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The p95 of `latencies` as the rollups' histogram reads it (crates/costline-core/src/latency.rs):
/// 4 % log buckets, the first whose cumulative count reaches 95 %, at its geometric middle.
fn histogram_p95(latencies: &[u32]) -> f64 {
    let bucket = |ms: u32| if ms == 0 { 0 } else { (f64::from(ms).ln() / 1.04f64.ln()).floor() as i32 + 1 };
    let mut buckets: Vec<i32> = latencies.iter().map(|&ms| bucket(ms)).collect();
    buckets.sort_unstable();
    let n = buckets.len() as f64;
    // The bucket of the first latency at which the count reaches 95 % is the first bucket whose
    // cumulative count does.
    let (_, &b) = buckets.iter().enumerate().find(|(i, _)| (*i + 1) as f64 >= 0.95 * n).unwrap();
    if b == 0 {
        0.0
    } else {
        1.04f64.powf(f64::from(b) - 0.5)
    }
}

fn get_json(port: u16, path_and_query: &str) -> (u16, serde_json::Value) {
    let url = format!("http://127.0.0.1:{port}{path_and_query}");
    let mut response = ureq::get(&url)
        .header("authorization", &format!("Bearer {TOKEN}"))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url} answered {status} {body:?}: {e}")))
}

#[test]
fn dashboard_numbers_equal_clickhouse_in_chromium() {
    let mut setup = Setup::new("dashboard");
    setup.use_config(
        "[[budgets]]\nid = \"monthly-all\"\nperiod = \"month\"\nlimit_usd = \"100000\"\n\n\
         [[budgets]]\nid = \"daily-small\"\nperiod = \"day\"\nlimit_usd = \"0.50\"\n",
    );
    setup.env.push(("COSTLINE_HTTP_TOKEN".into(), TOKEN.into()));
    common::clear_of_midnight(Duration::from_secs(600));
    let now = common::now_ms() / 1000;
    let record_file = setup.scratch_file(".jsonl");
    // Six hours of traffic ending now (late events reach 90 minutes further back).
    let output = setup
        .produce_command(6_000, 0, 8, (now - 6 * 3600) * 1000, &record_file)
        .args(["--spacing-ms", "3600"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let worker = setup.spawn_worker("dashboard");
    setup.wait_accounted(6_000, Duration::from_secs(120));

    let hour = now / 3600 * 3600;
    let (from, to, split) = (hour - 8 * 3600, hour + 3600, hour - 3 * 3600);
    let query = format!(
        "from={}&to={}&environment=prod&data_mode=real&top={TOP}&endpoint={ENDPOINT}&split={}",
        iso(from),
        iso(to),
        iso(split)
    );
    let url = format!("http://127.0.0.1:{}/dashboard?{query}#token={TOKEN}", worker.port);
    let page = rendered(&url);
    let real_prod = format!(
        "environment = 'prod' AND data_mode = 'real' AND window_start >= toDateTime({from}) AND window_start < toDateTime({to})"
    );

    // Cost, requests and retry ratio per hour, and the period's total.
    let mut want_hours: BTreeMap<String, (i128, u64, u64)> =
        (from..to).step_by(3600).map(|h| (iso(h), (0, 0, 0))).collect();
    let sql = format!(
        "SELECT toUInt32(window_start), toString(sum(cost_usd)), sum(requests), sum(attempts) FROM usage_hour \
         WHERE {real_prod} GROUP BY window_start FORMAT TSV"
    );
    for row in tsv(&setup.query(&sql)) {
        want_hours
            .insert(iso(row[0].parse().unwrap()), (pico(&row[1]), row[2].parse().unwrap(), row[3].parse().unwrap()));
    }
    let rows = select(&page, "#hours tr[data-hour]");
    assert_eq!(rows.len(), want_hours.len(), "one row per hour of the period");
    let mut hours_with_cost = 0;
    for row in &rows {
        let start = row.attr("data-hour").unwrap();
        let (cost, requests, attempts) = want_hours[start];
        let shown = fields(row);
        assert_money(&format!("cost of {start}"), &shown["cost_usd"], cost);
        assert_count(&format!("requests of {start}"), &shown["requests"], requests);
        assert_count(&format!("attempts of {start}"), &shown["attempts"], attempts);
        assert_ratio(&format!("retry ratio of {start}"), &shown["retry_ratio"], attempts - requests, requests);
        hours_with_cost += usize::from(cost > 0);
    }
    assert!(hours_with_cost >= 6, "only {hours_with_cost} hours with cost");
    let total: i128 = want_hours.values().map(|(cost, _, _)| cost).sum();
    let shown_total = &select(&page, "#total-cost")[0];
    assert_money(
        "total",
        &Shown { text: shown_total.text().collect(), value: shown_total.attr("data-value").unwrap().into() },
        total,
    );
    let bars = select(&page, "#cost-chart rect[data-hour]").len();
    assert!(bars >= hours_with_cost * 2, "{bars} bars stacked in {hours_with_cost} hours");
    assert!(select(&page, "#cost-chart text").len() >= 8, "the chart's axes have labels");
    assert!(select(&page, "#retry-chart circle").len() >= 6, "retry ratio points");

    // Endpoints: the top ones by cost, then the others together.
    let sql = format!(
        "SELECT endpoint_tag, toString(sum(cost_usd)), sum(requests), sum(attempts) FROM usage_hour WHERE {real_prod} \
         GROUP BY endpoint_tag ORDER BY sum(cost_usd) DESC, endpoint_tag FORMAT TSV"
    );
    let endpoints = tsv(&setup.query(&sql));
    assert!(endpoints.len() > TOP, "{endpoints:?}");
    let rows = select(&page, "#endpoints tr[data-endpoint], #endpoints tr[data-other]");
    assert_eq!(rows.len(), TOP + 1, "top {TOP} and other");
    for (row, want) in rows.iter().zip(&endpoints) {
        if row.attr("data-other").is_some() {
            break;
        }
        assert_eq!(row.attr("data-endpoint"), Some(want[0].as_str()), "endpoints by cost");
        assert_money(&want[0], &fields(row)["cost_usd"], pico(&want[1]));
    }
    let others: i128 = endpoints[TOP..].iter().map(|e| pico(&e[1])).sum();
    assert_money("other endpoints", &fields(&rows[TOP])["cost_usd"], others);

    // Prompt versions of the endpoint before and after the split, from the counted attempts.
    let events = format!(
        "FROM usage_events WHERE endpoint_tag = '{ENDPOINT}' AND environment = 'prod' AND data_mode = 'real' \
         AND event_time >= toDateTime({from}) AND event_time < toDateTime({to})"
    );
    let sql = format!(
        "SELECT prompt_version, event_time < toDateTime({split}) AS before, sum(first_of_request), count(), \
         toString(sum(cost_usd)), groupArray(assumeNotNull(latency_ms)) {events} AND latency_ms IS NOT NULL \
         GROUP BY prompt_version, before FORMAT TSV"
    );
    let unreported: u64 =
        setup.query(&format!("SELECT count() {events} AND latency_ms IS NULL")).trim().parse().unwrap();
    assert_eq!(unreported, 0, "the generated traffic reports every latency");
    let want_versions = tsv(&setup.query(&sql));
    let rows = select(&page, "#prompt-versions tr[data-version]");
    assert_eq!(rows.len(), want_versions.len(), "a row per version and side");
    assert!(rows.len() >= 4, "two versions, each before and after: {}", rows.len());
    for want in &want_versions {
        let side = if want[1] == "1" { "before" } else { "after" };
        let what = format!("{} {side}", want[0]);
        let row = rows
            .iter()
            .find(|r| r.attr("data-version") == Some(want[0].as_str()) && r.attr("data-side") == Some(side))
            .unwrap_or_else(|| panic!("no row for {what}"));
        let shown = fields(row);
        let (requests, attempts, cost): (u64, u64, i128) =
            (want[2].parse().unwrap(), want[3].parse().unwrap(), pico(&want[4]));
        assert_count(&format!("{what} requests"), &shown["requests"], requests);
        assert_count(&format!("{what} attempts"), &shown["attempts"], attempts);
        assert_money(&format!("{what} cost"), &shown["cost_usd"], cost);
        let per_request = (cost + i128::from(requests) / 2) / i128::from(requests);
        assert_eq!(shown["cost_per_request_usd"].value, usd_string(per_request), "{what} cost per request");
        assert_eq!(shown["cost_per_request_usd"].text, dollars(per_request, 6), "{what} cost per request shown");
        assert_ratio(&format!("{what} retry ratio"), &shown["retry_ratio"], attempts - requests, requests);
        let latencies: Vec<u32> = want[5].trim_matches(['[', ']']).split(',').map(|v| v.parse().unwrap()).collect();
        let p95 = histogram_p95(&latencies);
        let value: f64 = shown["latency_ms_p95"].value.parse().unwrap();
        assert!((value - p95).abs() <= 0.05 + 1e-9, "{what} p95 {value}, from the attempts {p95}");
        assert_eq!(shown["latency_ms_p95"].text, format!("{} ms", grouped(&(value.round() as u64).to_string())));
    }

    // Unpriced models, from the counted attempts.
    let sql = format!(
        "SELECT provider, model, countIf(price_version = ''), count() FROM usage_events \
         WHERE environment = 'prod' AND data_mode = 'real' AND event_time >= toDateTime({from}) \
         AND event_time < toDateTime({to}) GROUP BY provider, model HAVING countIf(price_version = '') > 0 FORMAT TSV"
    );
    let unpriced = tsv(&setup.query(&sql));
    assert!(!unpriced.is_empty(), "the generated traffic has an unpriced model");
    let rows = select(&page, "#unpriced tr[data-model]");
    assert_eq!(rows.len(), unpriced.len(), "unpriced models");
    for want in &unpriced {
        let row = rows
            .iter()
            .find(|r| {
                r.attr("data-provider") == Some(want[0].as_str()) && r.attr("data-model") == Some(want[1].as_str())
            })
            .unwrap_or_else(|| panic!("no row for unpriced {want:?}"));
        assert_count("unpriced attempts", &fields(row)["unpriced_attempts"], want[2].parse().unwrap());
        assert_count("attempts", &fields(row)["attempts"], want[3].parse().unwrap());
    }

    // Rejected records by reason.
    let sql = format!(
        "SELECT reason_code, count() FROM rejected_events WHERE record_time >= toDateTime({from}) \
         AND record_time < toDateTime({to}) GROUP BY reason_code FORMAT TSV"
    );
    let rejected = tsv(&setup.query(&sql));
    assert!(rejected.len() >= 3, "{rejected:?}");
    let rows = select(&page, "#rejected tr[data-reason]");
    assert_eq!(rows.len(), rejected.len(), "reasons");
    for want in &rejected {
        let row = rows.iter().find(|r| r.attr("data-reason") == Some(want[0].as_str())).unwrap();
        assert_count(&want[0], &fields(row)["records"], want[1].parse().unwrap());
    }

    // Budgets: spend equals ClickHouse's for the period, with the progress and the state.
    let today = chrono::Utc::now().date_naive();
    let month =
        chrono::NaiveDate::from_ymd_opt(chrono::Datelike::year(&today), chrono::Datelike::month(&today), 1).unwrap();
    for (id, start, limit) in
        [("monthly-all", month, 100_000_000_000_000_000i128), ("daily-small", today, 500_000_000_000)]
    {
        let start = start.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp();
        let sql = format!(
            "SELECT toString(sum(cost_usd)) FROM usage_hour WHERE environment = 'prod' AND data_mode = 'real' \
             AND window_start >= toDateTime({start})"
        );
        let spend = pico(setup.query(&sql).trim());
        let budget = &select(&page, &format!("#budgets [data-budget=\"{id}\"]"))[0];
        let shown = fields(budget);
        assert_money(&format!("{id} spend"), &shown["spend_usd"], spend);
        assert_money(&format!("{id} limit"), &shown["limit_usd"], limit);
        let ratio = spend as f64 / limit as f64;
        let state = if ratio >= 1.0 {
            "exceeded"
        } else if ratio >= 0.8 {
            "warning"
        } else {
            "ok"
        };
        assert_eq!(budget.attr("data-state"), Some(state), "{id}");
        assert_eq!(shown["state"].text, state, "{id}");
        let style =
            select(&page, &format!("#budgets [data-budget=\"{id}\"] .fill"))[0].attr("style").unwrap().to_string();
        let width: f64 = style.trim_start_matches("width:").trim_end_matches('%').parse().unwrap();
        assert!((width - (100.0 * ratio).min(100.0)).abs() <= 0.05 + 1e-9, "{id} progress bar: {style}");
    }

    // The filters reach the data: staging traffic of every data mode, through the API.
    let (status, body) = get_json(
        worker.port,
        &format!("/v1/dashboard?from={}&to={}&environment=staging&data_mode=*", iso(from), iso(to)),
    );
    assert_eq!(status, 200, "{body}");
    let sql = format!(
        "SELECT toString(sum(cost_usd)) FROM usage_hour WHERE environment = 'staging' \
         AND window_start >= toDateTime({from}) AND window_start < toDateTime({to})"
    );
    assert_eq!(body["total"]["cost_usd"], setup.query(&sql).trim(), "staging, any data mode");
    assert_eq!(body["period"]["data_mode"], "*");
    // A bad parameter is a 400 that names it, and the page shows it.
    let (status, body) = get_json(worker.port, "/v1/dashboard/prompt-versions?endpoint=x&split=2020-01-01");
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("`split`"), "{body}");
    let output =
        chromium(&["--dump-dom"], &format!("http://127.0.0.1:{}/dashboard?data_mode=prod#token={TOKEN}", worker.port));
    let error = error_text(&Html::parse_document(&String::from_utf8_lossy(&output.stdout)));
    assert!(error.contains("400") && error.contains("`data_mode` must be one of"), "the page shows: {error:?}");

    let screenshot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../test-artifacts/dashboard.png");
    std::fs::create_dir_all(screenshot.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&screenshot);
    let shot = chromium(&[&format!("--screenshot={}", screenshot.display()), "--window-size=1280,2000"], &url);
    let bytes = std::fs::read(&screenshot)
        .unwrap_or_else(|e| panic!("no screenshot ({e}): {}", String::from_utf8_lossy(&shot.stderr)));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 20_000, "screenshot is {} bytes", bytes.len());
    eprintln!("dashboard screenshot: {}", screenshot.display());
    assert_eq!(worker.stop(), 0);
}
