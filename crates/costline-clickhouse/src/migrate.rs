//! Schema migrations. The SQL lives in `schemas/clickhouse/` (embedded at build time) so that
//! analysts and the chDB check read exactly what the program applies. Every statement is
//! idempotent (`IF NOT EXISTS`), so applying them again, or from several workers at once, is
//! harmless.
//!
//! A file that mentions `{rollup}` is applied once per rollup granularity, with `{bucket}` set
//! to the ClickHouse function that truncates a time to it.

use anyhow::Context;

use crate::sink::ClickHouseTarget;

const FILES: &[(&str, &str)] = &[
    ("001_ledger.sql", include_str!("../../../schemas/clickhouse/001_ledger.sql")),
    ("002_rollup.sql", include_str!("../../../schemas/clickhouse/002_rollup.sql")),
];

/// The rollup granularities and the function that truncates a time to each.
pub const ROLLUPS: &[(&str, &str)] =
    &[("minute", "toStartOfMinute"), ("hour", "toStartOfHour"), ("day", "toStartOfDay")];

/// One statement to run, with the file it came from.
#[derive(Debug, Clone)]
pub struct Statement {
    pub file: &'static str,
    pub sql: String,
}

/// Every statement, in order, for `database`.
pub fn statements(database: &str) -> Vec<Statement> {
    let mut out = Vec::new();
    for &(file, text) in FILES {
        let text = text.replace("{database}", database);
        if text.contains("{rollup}") {
            for &(rollup, bucket) in ROLLUPS {
                let expanded = text.replace("{rollup}", rollup).replace("{bucket}", bucket);
                out.extend(split(&expanded).map(|sql| Statement { file, sql }));
            }
        } else {
            out.extend(split(&text).map(|sql| Statement { file, sql }));
        }
    }
    out
}

/// Splits on `;` at the end of a line, dropping `--` comment lines.
fn split(text: &str) -> impl Iterator<Item = String> + '_ {
    let mut current = String::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("--") {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if line.trim_end().ends_with(';') {
            let sql = current.trim().trim_end_matches(';').trim().to_string();
            if !sql.is_empty() {
                out.push(sql);
            }
            current.clear();
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_string());
    }
    out.into_iter()
}

/// Applies every statement. Returns how many ran.
pub async fn apply(target: &ClickHouseTarget) -> anyhow::Result<usize> {
    let client = target.server_client();
    let statements = statements(&target.database);
    for statement in &statements {
        client.query(&statement.sql).execute().await.with_context(|| {
            format!("migration {} failed on statement:\n{}", statement.file, statement.sql)
        })?;
    }
    Ok(statements.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_rollups_and_database() {
        let all = statements("analytics");
        assert!(all.iter().all(|s| !s.sql.contains('{')), "unexpanded placeholder");
        for rollup in ["minute", "hour", "day"] {
            let view = format!("CREATE VIEW IF NOT EXISTS analytics.usage_{rollup} AS");
            assert_eq!(all.iter().filter(|s| s.sql.starts_with(&view)).count(), 1, "{view}");
        }
        assert!(all[0].sql.starts_with("CREATE DATABASE IF NOT EXISTS analytics"));
        assert!(all.iter().all(|s| !s.sql.ends_with(';') && !s.sql.starts_with("--")));
    }
}
