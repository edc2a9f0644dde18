//! Schema migrations. The SQL lives in `schemas/clickhouse/` (embedded at build time) so that
//! analysts and the chDB check read exactly what the program applies. Every statement is
//! idempotent (`IF NOT EXISTS`), so applying them again, or from several workers at once, is
//! harmless; and when every object they create exists already, nothing runs at all, so
//! restarting workers issues no DDL against the analysts' database.
//!
//! A file that mentions `{rollup}` is applied once per rollup granularity, with `{bucket}` set
//! to the ClickHouse function that truncates a time to it. `{fanout:X}` becomes `X` or `X_mv`
//! depending on how the server chains materialized views ([`ChainStyle`], probed before applying).

use anyhow::{bail, Context};
use clickhouse::Client;

use crate::ledger::Targets;
use crate::sink::ClickHouseTarget;

const FILES: &[(&str, &str)] = &[
    ("001_ledger.sql", include_str!("../../../schemas/clickhouse/001_ledger.sql")),
    ("002_rollup.sql", include_str!("../../../schemas/clickhouse/002_rollup.sql")),
    ("003_alerts.sql", include_str!("../../../schemas/clickhouse/003_alerts.sql")),
    ("005_reprice.sql", include_str!("../../../schemas/clickhouse/005_reprice.sql")),
    ("006_reprice_rollups.sql", include_str!("../../../schemas/clickhouse/006_reprice_rollups.sql")),
];

/// The rollup granularities, the function that truncates a time to each, and the table's bit
/// in `flush_ledger.targets`.
pub const ROLLUPS: &[(&str, &str, Targets)] = &[
    ("minute", "toStartOfMinute", Targets::MINUTE),
    ("hour", "toStartOfHour", Targets::HOUR),
    ("day", "toStartOfDay", Targets::DAY),
];

/// Which name a view must read from to receive what another view writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainStyle {
    /// Current ClickHouse: views on the first view's target table fire.
    TargetTable,
    /// ClickHouse 18.16: views defined on the first view itself fire.
    ViewName,
}

/// One statement to run, with the file it came from.
#[derive(Debug, Clone)]
pub struct Statement {
    pub file: &'static str,
    pub sql: String,
}

/// Every statement, in order, for `database`.
pub fn statements(database: &str, chain: ChainStyle) -> Vec<Statement> {
    let mut out = Vec::new();
    for &(file, text) in FILES {
        let text = expand_fanout(&text.replace("{database}", database), chain);
        if text.contains("{rollup}") {
            for &(rollup, bucket, bit) in ROLLUPS {
                let expanded = text
                    .replace("{rollup}", rollup)
                    .replace("{bucket}", bucket)
                    .replace("{target_bit}", &bit.bits().to_string());
                out.extend(split(&expanded).map(|sql| Statement { file, sql }));
            }
        } else {
            out.extend(split(&text).map(|sql| Statement { file, sql }));
        }
    }
    out
}

fn expand_fanout(text: &str, chain: ChainStyle) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{fanout:") {
        out.push_str(&rest[..start]);
        let after = &rest[start + "{fanout:".len()..];
        let Some(end) = after.find('}') else { break };
        out.push_str(&after[..end]);
        if chain == ChainStyle::ViewName {
            out.push_str("_mv");
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
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

/// Finds out how the server chains views, with throw-away tables in `database`.
/// On 18.16 a `system.tables` query listing `database` while they are dropped can fail (code
/// 60, a server race); queries on the real tables are not affected.
pub async fn probe_chain_style(client: &Client, database: &str) -> anyhow::Result<ChainStyle> {
    let p = format!("{database}._chain_probe_{:016x}", rand::random::<u64>());
    let setup = [
        format!("CREATE DATABASE IF NOT EXISTS {database}"),
        format!("CREATE TABLE {p}_src (a Array(UInt8)) ENGINE = Null"),
        format!("CREATE TABLE {p}_mid (a Array(UInt8)) ENGINE = Null"),
        format!("CREATE MATERIALIZED VIEW {p}_mid_mv TO {p}_mid AS SELECT a FROM {p}_src"),
        format!("CREATE TABLE {p}_out (x UInt8, via String) ENGINE = Memory"),
        format!("CREATE MATERIALIZED VIEW {p}_by_target TO {p}_out AS SELECT x, 'target' AS via FROM {p}_mid ARRAY JOIN a AS x"),
        format!("CREATE MATERIALIZED VIEW {p}_by_view TO {p}_out AS SELECT x, 'view' AS via FROM {p}_mid_mv ARRAY JOIN a AS x"),
        format!("INSERT INTO {p}_src VALUES ([1])"),
    ];
    let mut result = Ok(());
    for sql in &setup {
        result = client.query(sql).execute().await.with_context(|| format!("probing view chaining: {sql}"));
        if result.is_err() {
            break;
        }
    }
    let via = match result {
        Ok(()) => client
            .query(&format!("SELECT via FROM {p}_out"))
            .fetch_all::<String>()
            .await
            .context("probing view chaining"),
        Err(e) => Err(e),
    };
    for suffix in ["by_view", "by_target", "out", "mid_mv", "mid", "src"] {
        let _ = client.query(&format!("DROP TABLE IF EXISTS {p}_{suffix}")).execute().await;
    }
    let via = via?;
    if via.iter().any(|v| v == "target") {
        Ok(ChainStyle::TargetTable)
    } else if via.iter().any(|v| v == "view") {
        Ok(ChainStyle::ViewName)
    } else {
        bail!(
            "this ClickHouse passes nothing on to chained materialized views; costline needs one of the two behaviours"
        )
    }
}

/// The object a statement creates in `database` (`CREATE … IF NOT EXISTS database.name`);
/// `None` for the statement that creates the database itself.
fn created_object<'a>(sql: &'a str, database: &str) -> Option<&'a str> {
    let (_, after) = sql.split_once("IF NOT EXISTS ")?;
    let name = after.split_whitespace().next()?;
    name.strip_prefix(database)?.strip_prefix('.')
}

/// Whether every object the statements create is already in `database`. Any doubt (the
/// database missing, the query failing) reads as "no", and the migrations run.
async fn schema_in_place(client: &Client, database: &str) -> bool {
    let Ok(existing) =
        client.query("SELECT name FROM system.tables WHERE database = ?").bind(database).fetch_all::<String>().await
    else {
        return false;
    };
    let existing: std::collections::HashSet<String> = existing.into_iter().collect();
    statements(database, ChainStyle::TargetTable)
        .iter()
        .filter_map(|statement| created_object(&statement.sql, database))
        .all(|name| existing.contains(name))
}

/// Applies every statement, unless every object they create exists already (a restart, a
/// second worker): then nothing runs, not even the chain probe, so starting a worker against
/// an installed schema changes nothing in the analysts' database. Returns how many statements
/// ran (0 when the schema was in place).
pub async fn apply(target: &ClickHouseTarget) -> anyhow::Result<usize> {
    let client = target.server_client();
    if schema_in_place(&client, &target.database).await {
        return Ok(0);
    }
    let chain = probe_chain_style(&client, &target.database).await?;
    let statements = statements(&target.database, chain);
    for statement in &statements {
        client.query(&statement.sql).execute().await.with_context(|| {
            format!(
                "migration {} failed on statement:\n{}\n(migrations create missing objects but do not alter \
                     existing ones: a database created by an older costline build must be dropped, or another \
                     `clickhouse.database` chosen)",
                statement.file, statement.sql
            )
        })?;
    }
    Ok(statements.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_rollups_and_database() {
        let all = statements("analytics", ChainStyle::ViewName);
        assert!(all.iter().any(|s| s.sql.contains("FROM analytics.ledger_rollups_mv\n")));
        let current = statements("analytics", ChainStyle::TargetTable);
        assert!(current.iter().any(|s| s.sql.contains("FROM analytics.ledger_rollups\n")));
        assert!(all.iter().all(|s| !s.sql.contains('{')), "unexpanded placeholder");
        for rollup in ["minute", "hour", "day"] {
            let view = format!("CREATE VIEW IF NOT EXISTS analytics.usage_{rollup} AS");
            assert_eq!(all.iter().filter(|s| s.sql.starts_with(&view)).count(), 1, "{view}");
        }
        assert!(all[0].sql.starts_with("CREATE DATABASE IF NOT EXISTS analytics"));
        assert!(all.iter().all(|s| !s.sql.ends_with(';') && !s.sql.starts_with("--")));
    }

    #[test]
    fn every_statement_but_the_first_names_the_object_it_creates() {
        let mut by_style = Vec::new();
        for chain in [ChainStyle::ViewName, ChainStyle::TargetTable] {
            let all = statements("analytics", chain);
            assert_eq!(created_object(&all[0].sql, "analytics"), None, "{}", all[0].sql);
            let names: Vec<&str> = all[1..]
                .iter()
                .map(|s| created_object(&s.sql, "analytics").unwrap_or_else(|| panic!("no object in:\n{}", s.sql)))
                .collect();
            let unique: std::collections::HashSet<&str> = names.iter().copied().collect();
            assert_eq!(unique.len(), names.len(), "an object created twice: {names:?}");
            for name in ["usage_events", "flushes", "usage_minute", "usage_day_mv", "alerts"] {
                assert!(unique.contains(name), "{name} missing from {names:?}");
            }
            by_style.push(names.iter().map(|name| name.to_string()).collect::<Vec<_>>());
        }
        // `schema_in_place` checks the names of one style for both.
        assert_eq!(by_style[0], by_style[1]);
        assert_eq!(created_object("CREATE TABLE IF NOT EXISTS other.t (a UInt8)", "analytics"), None);
        assert_eq!(created_object("CREATE TABLE IF NOT EXISTS analytics_old.t (a UInt8)", "analytics"), None);
    }
}
