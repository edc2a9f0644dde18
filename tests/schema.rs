//! The ClickHouse schema and the analyst queries of `schemas/queries/` work on both servers
//! costline meets: on current ClickHouse (chDB in-process) the migrations apply, one
//! `flush_ledger` row fans out to every table and rollup view analysts query, and every
//! query runs; on the local ClickHouse 18.16 `costline migrate` applies every step, runs no DDL
//! once they are recorded, and every query runs. (Upgrading an older database:
//! tests/migrations.rs.)

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::{ensure_services, repo_root, unique_name, CLICKHOUSE};

fn query_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join("schemas/queries"))
        .expect("schemas/queries")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "sql"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no schemas/queries/*.sql");
    files
}

fn costline(args: &[&str], database: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_costline"))
        .args(args)
        .env("COSTLINE_CLICKHOUSE__URL", CLICKHOUSE)
        .env("COSTLINE_CLICKHOUSE__DATABASE", database)
        .output()
        .expect("running costline")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[test]
fn schema_and_analyst_queries_run_on_current_clickhouse() {
    let install = Command::new("bash")
        .arg(repo_root().join("scripts/services.sh"))
        .arg("chdb")
        .output()
        .expect("running scripts/services.sh chdb");
    assert!(install.status.success(), "chDB install failed:\n{}", text(&install));

    let sql = costline(&["migrate", "--print-sql"], "costline");
    assert!(sql.status.success(), "migrate --print-sql:\n{}", text(&sql));
    let sql_file = std::env::temp_dir().join(format!("{}.sql", unique_name("costline_schema")));
    std::fs::write(&sql_file, &sql.stdout).unwrap();

    let check = Command::new("python3")
        .current_dir(repo_root())
        .arg("scripts/chdb_check.py")
        .arg("--migrations-sql")
        .arg(&sql_file)
        .args(["schemas/queries", "--smoke"])
        .output()
        .expect("running scripts/chdb_check.py");
    let report = text(&check);
    assert!(check.status.success(), "chdb_check failed:\n{report}");
    let passed: usize = report
        .lines()
        .find_map(|line| line.strip_prefix("chdb: ")?.strip_suffix(" passed, 0 failed"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `chdb: N passed, 0 failed` line:\n{report}"));
    // Migrations, smoke, and one per query file.
    assert!(passed >= query_files().len() + 2, "too few checks:\n{report}");
    let _ = std::fs::remove_file(sql_file);
}

#[test]
fn analyst_queries_run_on_clickhouse_18() {
    ensure_services();
    let database = unique_name("test_schema");
    let migrate = |run: &str, expect: &str| {
        let migrate = costline(&["migrate"], &database);
        assert!(migrate.status.success(), "{run} migrate:\n{}", text(&migrate));
        assert!(text(&migrate).contains(expect), "{run} migrate should say {expect:?}:\n{}", text(&migrate));
    };
    let tables = |name: &str| {
        let sql = format!("SELECT count() FROM system.tables WHERE database = '{database}' AND name LIKE '{name}'");
        common::clickhouse_query("default", &sql).trim().to_string()
    };
    migrate("first", "applied migration step 005_reprice.sql");
    // (`_` matches any character in LIKE: this only counts more names.)
    assert_eq!(tables("_chain_probe%"), "0", "the chain probe left tables behind");
    // With every step recorded, a start changes nothing (no statement, no probe).
    migrate("second", "nothing applied");

    let url = format!("{CLICKHOUSE}/?database={database}");
    for file in query_files() {
        let sql = std::fs::read_to_string(&file).unwrap();
        let mut response = ureq::post(&url)
            .config()
            .http_status_as_error(false)
            .build()
            .send(&sql)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let body = response.body_mut().read_to_string().unwrap_or_default();
        assert_eq!(response.status(), 200, "{}:\n{body}", file.display());
    }
    common::clickhouse_query("default", &format!("DROP DATABASE {database}"));
}
