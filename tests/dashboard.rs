//! The built-in dashboard page, opened in headless Chromium (Debian's `chromium`): the page's
//! script fetches the worker's data and renders it; the test reads the rendered DOM (cost bars,
//! endpoints, prompt versions, a budget with its state) and takes a screenshot.

mod common;

use std::process::Command;
use std::time::Duration;

use common::Setup;

fn chromium(args: &[&str], url: &str) -> std::process::Output {
    let profile = tempdir("chromium-profile");
    let output = Command::new("chromium")
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
        .arg(url)
        .output();
    match output {
        Ok(output) => output,
        Err(e) => panic!("cannot run chromium ({e}); scripts/test.sh installs Debian's chromium package"),
    }
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(common::unique_name(name));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn dashboard_renders_costs_endpoints_and_budgets_in_chromium() {
    let mut setup = Setup::new("dashboard");
    let config = "[[budgets]]\nid = \"monthly-all\"\nperiod = \"month\"\nlimit_usd = \"100000\"\n";
    setup.use_config(config);
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let record_file = setup.scratch_file(".jsonl");
    // Six hours of traffic ending now, so the chart has several bars.
    let output = setup
        .produce_command(6_000, 0, 8, now_ms - 6 * 3_600_000, &record_file)
        .args(["--spacing-ms", "3600"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let worker = setup.spawn_worker("dashboard");
    setup.wait_accounted(6_000, Duration::from_secs(60));

    let url = format!("http://127.0.0.1:{}/dashboard", worker.port);
    let dom = chromium(&["--dump-dom"], &url);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("data-loaded=\"true\""), "the page's script did not finish:\n{dom}");
    let bars = dom.matches("<rect").count();
    assert!(bars >= 5, "{bars} bars in the cost chart:\n{dom}");
    assert!(dom.contains("checkout.ai_summary"), "no endpoint in the table:\n{dom}");
    assert!(dom.contains("monthly-all") && dom.contains("class=\"ok\""), "no budget with its state:\n{dom}");
    assert!(dom.matches("<tr>").count() >= 8, "tables are nearly empty:\n{dom}");

    let screenshot = tempdir("dashboard-shot").join("dashboard.png");
    let shot = chromium(&[&format!("--screenshot={}", screenshot.display()), "--window-size=1280,900"], &url);
    let bytes = std::fs::read(&screenshot)
        .unwrap_or_else(|e| panic!("no screenshot ({e}): {}", String::from_utf8_lossy(&shot.stderr)));
    assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000, "screenshot is {} bytes", bytes.len());
    eprintln!("dashboard screenshot: {}", screenshot.display());
    assert_eq!(worker.stop(), 0);
}
