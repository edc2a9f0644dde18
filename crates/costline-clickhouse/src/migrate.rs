//! Schema migrations: numbered steps, a record of what ran, each step safe to re-run.
//!
//! Each file `schemas/clickhouse/NNN_name.sql` is one step (embedded at build time, so that
//! analysts and the chDB check read exactly what the program applies). A released step is never
//! edited: a schema change is a new step. `{database}.schema_migrations` records each step once
//! all its statements succeeded (version, name, a checksum of its text, when, which costline and
//! host), so `apply` runs only the steps not recorded yet, and when none is pending it runs no
//! DDL at all, not even the chain probe: restarting workers changes nothing in the analysts'
//! database. A database without the record (made before steps were numbered) has steps 1–3's
//! objects; those steps only create what is missing, so they run again harmlessly and are
//! recorded.
//!
//! A crash can stop a step half-way, and the step then runs again from its first statement, so
//! every statement must be re-runnable: `CREATE … IF NOT EXISTS`, `DROP … IF EXISTS`, and
//! `ALTER TABLE t ADD COLUMN IF NOT EXISTS c …`, which ClickHouse 18.16 does not parse: it runs
//! here without `IF NOT EXISTS`, and only when `system.columns` lacks `c`. Several workers may
//! start on a database at once; a column that another one added meanwhile counts as added.
//!
//! A statement that mentions `{rollup}` is applied once per rollup granularity, with `{bucket}`
//! set to the ClickHouse function that truncates a time to it. `{fanout:X}` becomes `X` or `X_mv`
//! depending on how the server chains materialized views ([`ChainStyle`], probed before applying).

use std::fmt;

use anyhow::{bail, Context};
use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ledger::Targets;
use crate::sink::{ClickHouseTarget, Cluster};

/// One migration step: `schemas/clickhouse/{file}`, whose name starts with its version.
#[derive(Debug)]
pub struct Step {
    pub version: u32,
    pub file: &'static str,
    text: &'static str,
}

macro_rules! step {
    ($version:literal, $file:literal) => {
        Step { version: $version, file: $file, text: include_str!(concat!("../../../schemas/clickhouse/", $file)) }
    };
}

/// Every step, in order. A new step is one more line here (and its file).
pub const STEPS: &[Step] = &[
    step!(1, "001_ledger.sql"),
    step!(2, "002_rollup.sql"),
    step!(3, "003_alerts.sql"),
    step!(4, "004_cache_write_1h.sql"),
    step!(5, "005_reprice.sql"),
];

impl Step {
    /// The file name without its number and extension: `ledger` for `001_ledger.sql`.
    pub fn name(&self) -> &'static str {
        let name = self.file.strip_suffix(".sql").unwrap_or(self.file);
        name.split_once('_').map_or(name, |(_, name)| name)
    }

    /// SHA-256 of the file's text, in hex: tells whether a step changed since it ran.
    pub fn checksum(&self) -> String {
        hex::encode(Sha256::digest(self.text.as_bytes()))
    }

    /// This step's statements for `database`, in order.
    pub fn statements(&self, database: &str, chain: ChainStyle) -> Vec<Statement> {
        let file = self.file;
        let text = expand_fanout(&self.text.replace("{database}", database), chain);
        let mut out = Vec::new();
        for sql in split(&text) {
            if !sql.contains("{rollup}") {
                out.push(Statement { file, sql });
                continue;
            }
            for &(rollup, bucket, bit) in ROLLUPS {
                let sql = sql
                    .replace("{rollup}", rollup)
                    .replace("{bucket}", bucket)
                    .replace("{target_bit}", &bit.bits().to_string());
                out.push(Statement { file, sql });
            }
        }
        out
    }
}

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

/// Every statement of every step, in order, for `database`.
pub fn statements(database: &str, chain: ChainStyle) -> Vec<Statement> {
    STEPS.iter().flat_map(|step| step.statements(database, chain)).collect()
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

/// The record of applied steps. Several migrators may record one step; readers take the first.
/// On a cluster every server holds the whole record (one replica set across all shards).
fn record_table_sql(database: &str, cluster: Option<&Cluster>) -> String {
    let (on_cluster, engine) = match cluster {
        None => (String::new(), "MergeTree".to_string()),
        Some(c) => (
            format!(" ON CLUSTER {}", c.name),
            format!(
                "ReplicatedMergeTree('/clickhouse/tables/all/{database}/schema_migrations', '{{shard}}-{{replica}}')"
            ),
        ),
    };
    format!(
        "CREATE TABLE IF NOT EXISTS {database}.schema_migrations{on_cluster} (version UInt32, name String, \
         checksum String, applied_at DateTime('UTC'), costline_version String, host String) ENGINE = {engine} \
         ORDER BY version"
    )
}

/// A step recorded in `schema_migrations`.
#[derive(Debug, Clone, Row, Deserialize, Serialize)]
pub struct AppliedStep {
    pub version: u32,
    pub name: String,
    pub checksum: String,
    /// `YYYY-MM-DD hh:mm:ss`, UTC.
    pub applied_at: String,
    pub costline_version: String,
    pub host: String,
}

/// What a database holds compared with the steps this binary knows.
#[derive(Debug)]
pub struct MigrationStatus {
    pub database: String,
    /// Whether `schema_migrations` exists (a database made before steps were numbered has none).
    pub recorded: bool,
    pub applied: Vec<AppliedStep>,
}

impl MigrationStatus {
    /// Known steps not recorded yet, in order.
    pub fn pending(&self) -> Vec<&'static Step> {
        STEPS.iter().filter(|step| !self.applied.iter().any(|a| a.version == step.version)).collect()
    }

    /// Recorded steps this binary does not know: a newer release applied them.
    pub fn unknown(&self) -> Vec<&AppliedStep> {
        self.applied.iter().filter(|a| !STEPS.iter().any(|step| step.version == a.version)).collect()
    }

    /// Recorded steps whose file changed since they ran.
    pub fn changed(&self) -> Vec<&AppliedStep> {
        self.applied
            .iter()
            .filter(|a| STEPS.iter().any(|step| step.version == a.version && step.checksum() != a.checksum))
            .collect()
    }

    /// Fails when a newer release has upgraded the database: this binary would write rows that
    /// schema does not expect, or miss columns it needs.
    pub fn refuse_newer(&self) -> anyhow::Result<()> {
        let unknown = self.unknown();
        let Some(newest) = unknown.last() else { return Ok(()) };
        bail!(
            "database `{}` has migration step {:03} ({}) applied, by costline {} on {}, which this costline {} does \
             not know: a newer release upgraded the schema; run that release or a newer one",
            self.database,
            newest.version,
            newest.name,
            newest.costline_version,
            newest.host,
            env!("CARGO_PKG_VERSION")
        )
    }
}

impl fmt::Display for MigrationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "database `{}`:", self.database)?;
        if !self.recorded {
            writeln!(f, "  no schema_migrations table: nothing recorded yet (a new database, or one made before steps were numbered)")?;
        }
        let changed = self.changed();
        for applied in &self.applied {
            let state = if !STEPS.iter().any(|step| step.version == applied.version) {
                "UNKNOWN (applied by a newer release)"
            } else if changed.iter().any(|c| c.version == applied.version) {
                "CHANGED (the file differs from the text that ran)"
            } else {
                "applied"
            };
            writeln!(
                f,
                "  {:03} {:<16} {state} at {} UTC by costline {} on {}",
                applied.version, applied.name, applied.applied_at, applied.costline_version, applied.host
            )?;
        }
        let pending = self.pending();
        for step in &pending {
            writeln!(f, "  {:03} {:<16} pending", step.version, step.name())?;
        }
        if pending.is_empty() {
            writeln!(f, "nothing pending")?;
        } else {
            writeln!(f, "{} pending: `costline migrate` applies them", pending.len())?;
        }
        Ok(())
    }
}

/// Reads what `target`'s database has recorded (on a cluster: its local database).
pub async fn status(target: &ClickHouseTarget) -> anyhow::Result<MigrationStatus> {
    let client = target.server_client();
    let database = &target.local_database();
    let recorded = client
        .query(&format!("EXISTS TABLE {database}.schema_migrations"))
        .fetch_one::<u8>()
        .await
        .with_context(|| format!("checking for {database}.schema_migrations"))?
        == 1;
    let applied = if recorded { applied_steps(&client, database).await? } else { Vec::new() };
    Ok(MigrationStatus { database: database.clone(), recorded, applied })
}

async fn applied_steps(client: &Client, database: &str) -> anyhow::Result<Vec<AppliedStep>> {
    let sql = format!(
        "SELECT version, argMin(name, applied_at), argMin(checksum, applied_at), toString(min(applied_at)), \
         argMin(costline_version, applied_at), argMin(host, applied_at) \
         FROM {database}.schema_migrations GROUP BY version ORDER BY version"
    );
    client.query(&sql).fetch_all::<AppliedStep>().await.with_context(|| format!("reading {database}.schema_migrations"))
}

/// Applies the steps not recorded yet, and returns them; none when the database is up to date
/// (then no DDL runs). Fails, changing nothing, on a database a newer release upgraded.
pub async fn apply(target: &ClickHouseTarget) -> anyhow::Result<Vec<&'static Step>> {
    let status = status(target).await?;
    status.refuse_newer()?;
    for changed in status.changed() {
        tracing::warn!(step = changed.version, name = %changed.name, "a migration step's file changed after it ran");
    }
    let mut pending = status.pending();
    if target.cluster.is_some() && status.recorded && a_server_lacks_tables(target).await? {
        // A server added to the cluster: every step again, ON CLUSTER (each statement only
        // creates what is missing), and the analysts' tables anew.
        pending = STEPS.iter().collect();
    }
    if pending.is_empty() {
        if let Some(cluster) = &target.cluster {
            // A migration stopped after its last step, before the analysts' tables.
            let sql = format!("EXISTS TABLE {}.flushes", target.database);
            if target.server_client().query(&sql).fetch_one::<u8>().await.context("checking the analysts' tables")? == 0
            {
                let chain = probe_chain_style(&target.server_client(), &target.local_database()).await?;
                build_analyst_tables(target, cluster, chain)
                    .await
                    .context("creating the analysts' Distributed tables")?;
            }
        }
        return Ok(pending);
    }
    let client = target.server_client();
    let database = &target.local_database();
    let chain = probe_chain_style(&client, database).await?;
    if let Some(cluster) = &target.cluster {
        let sql = format!("CREATE DATABASE IF NOT EXISTS {database} ON CLUSTER {}", cluster.name);
        client.query(&sql).execute().await.context("creating the local database on every server")?;
    }
    let record_sql = record_table_sql(database, target.cluster.as_ref());
    client.query(&record_sql).execute().await.context("creating schema_migrations")?;
    let host = crate::host_name().unwrap_or_default();
    let mut applied = Vec::new();
    for step in pending {
        // A worker started at the same time may have applied it meanwhile.
        let recorded = applied_steps(&client, database).await?.iter().any(|a| a.version == step.version);
        if recorded && status.pending().iter().any(|p| p.version == step.version) {
            continue;
        }
        for statement in step.statements(database, chain) {
            let run = match &target.cluster {
                None => execute(&client, database, &statement.sql).await,
                Some(cluster) => execute_on_cluster(target, cluster, database, &statement.sql).await,
            };
            run.with_context(|| format!("migration step {} failed on statement:\n{}", step.file, statement.sql))?;
        }
        if recorded {
            applied.push(step);
            continue;
        }
        client
            .query(&format!(
                "INSERT INTO {database}.schema_migrations (version, name, checksum, applied_at, costline_version, host) \
                 VALUES (?, ?, ?, now(), ?, ?)"
            ))
            .bind(step.version)
            .bind(step.name())
            .bind(step.checksum())
            .bind(env!("CARGO_PKG_VERSION"))
            .bind(host.as_str())
            .execute()
            .await
            .with_context(|| format!("recording migration step {}", step.file))?;
        applied.push(step);
    }
    if let Some(cluster) = &target.cluster {
        build_analyst_tables(target, cluster, chain).await.context("creating the analysts' Distributed tables")?;
    }
    Ok(applied)
}

/// Whether a server of the cluster lacks costline's tables in its local database (a server
/// added to the cluster).
async fn a_server_lacks_tables(target: &ClickHouseTarget) -> anyhow::Result<bool> {
    let sql = format!("EXISTS TABLE {}.flushes", target.local_database());
    for url in target.cluster.iter().flat_map(Cluster::servers) {
        let query = target.client_for(url).query(&sql);
        if query.fetch_one::<u8>().await.with_context(|| format!("checking the tables on {url}"))? == 0 {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Runs one statement of a step on every server of `cluster`: DDL `ON CLUSTER` with
/// MergeTree-family engines made Replicated ([`on_cluster`]); an added column server by server
/// (18.16 refuses `ALTER … ON CLUSTER` on the Null tables of a replicated cluster), once per
/// shard for a Replicated table (its replicas follow through ZooKeeper).
async fn execute_on_cluster(
    target: &ClickHouseTarget,
    cluster: &Cluster,
    database: &str,
    sql: &str,
) -> anyhow::Result<()> {
    let Some((table, _)) = added_column(sql, database) else {
        return Ok(target.server_client().query(&on_cluster(sql, &cluster.name, database)).execute().await?);
    };
    let engine: String = target
        .server_client()
        .query("SELECT engine FROM system.tables WHERE database = ? AND name = ?")
        .bind(database)
        .bind(table)
        .fetch_one()
        .await
        .with_context(|| format!("reading the engine of {database}.{table}"))?;
    let servers: Vec<&str> = if engine.starts_with("Replicated") {
        cluster.shards.iter().filter_map(|replicas| replicas.first().map(String::as_str)).collect()
    } else {
        cluster.servers().collect()
    };
    for url in servers {
        execute(&target.client_for(url), database, sql).await.with_context(|| format!("on {url}"))?;
    }
    Ok(())
}

/// The analysts' database on a cluster: a `Distributed` table over every Replicated table of
/// the local database, with the same name and columns, and the views of the steps over those
/// (so a rollup view merges its states across shards: one row per key, exact percentiles).
/// Made anew after each migration: they hold no data, and so they follow every new column.
async fn build_analyst_tables(target: &ClickHouseTarget, cluster: &Cluster, chain: ChainStyle) -> anyhow::Result<()> {
    let client = target.server_client();
    let (public, local, name) = (&target.database, target.local_database(), &cluster.name);
    client.query(&format!("CREATE DATABASE IF NOT EXISTS {public} ON CLUSTER {name}")).execute().await?;
    let tables: Vec<String> = client
        .query(
            "SELECT name FROM system.tables WHERE database = ? AND engine LIKE 'Replicated%' \
             AND name != 'schema_migrations' ORDER BY name",
        )
        .bind(&local)
        .fetch_all()
        .await
        .context("listing the local tables")?;
    for table in &tables {
        // Rows written through the Distributed table (alerts, repricings) keep every version
        // of one id on one shard, where ReplacingMergeTree can fold them.
        let key = match table.as_str() {
            "alerts" => "cityHash64(alert_id)",
            "repricings" => "cityHash64(reprice_id)",
            _ => "rand()",
        };
        // Remade only when a step changed the local table's columns: a migrator started at the
        // same time then finds it in place rather than gone.
        if columns(&client, public, table).await? == columns(&client, &local, table).await? {
            continue;
        }
        for sql in [
            format!("DROP TABLE IF EXISTS {public}.{table} ON CLUSTER {name}"),
            format!(
                "CREATE TABLE IF NOT EXISTS {public}.{table} ON CLUSTER {name} AS {local}.{table} \
                 ENGINE = Distributed({name}, {local}, {table}, {key})"
            ),
        ] {
            client.query(&sql).execute().await.with_context(|| sql.clone())?;
        }
    }
    let mut views: Vec<Statement> = Vec::new();
    for statement in statements(public, chain) {
        if statement.sql.starts_with("CREATE VIEW IF NOT EXISTS ") {
            views.retain(|v| view_name(&v.sql) != view_name(&statement.sql));
            views.push(statement);
        }
    }
    for view in views {
        let drop = format!("DROP TABLE IF EXISTS {} ON CLUSTER {name}", view_name(&view.sql));
        // Views hold nothing; one made anew by another migrator meanwhile is the same view.
        client.query(&drop).execute().await.with_context(|| drop.clone())?;
        let create = on_cluster(&view.sql, name, public);
        client.query(&create).execute().await.with_context(|| create.clone())?;
    }
    Ok(())
}

/// `name type` of each column of `database.table`, by name (none if it does not exist).
async fn columns(client: &Client, database: &str, table: &str) -> anyhow::Result<Vec<(String, String)>> {
    client
        .query("SELECT name, type FROM system.columns WHERE database = ? AND table = ? ORDER BY name")
        .bind(database)
        .bind(table)
        .fetch_all()
        .await
        .with_context(|| format!("reading the columns of {database}.{table}"))
}

/// `database.view` of a `CREATE VIEW IF NOT EXISTS database.view AS …` statement.
fn view_name(sql: &str) -> &str {
    sql.split_whitespace().nth(5).unwrap_or_default()
}

/// A step's statement made to run on every server of `cluster`: `ON CLUSTER` after the object
/// it creates or drops, and a MergeTree-family engine replaced by its Replicated form, keyed in
/// ZooKeeper by shard, database and table.
fn on_cluster(sql: &str, cluster: &str, database: &str) -> String {
    let words: Vec<&str> = sql.split_whitespace().take(6).collect();
    let name_at = match words.as_slice() {
        ["CREATE", "DATABASE", "IF", "NOT", "EXISTS", ..]
        | ["CREATE", "TABLE", "IF", "NOT", "EXISTS", ..]
        | ["CREATE", "VIEW", "IF", "NOT", "EXISTS", ..] => 5,
        ["CREATE", "MATERIALIZED", "VIEW", "IF", "NOT", "EXISTS"] => 6,
        ["DROP", "TABLE", "IF", "EXISTS", ..] => 4,
        _ => return sql.to_string(),
    };
    let Some(name) = sql.split_whitespace().nth(name_at) else { return sql.to_string() };
    let Some(name_start) = sql.find(name) else { return sql.to_string() };
    let name_end = name_start + name.len();
    let mut out = format!("{} ON CLUSTER {cluster}{}", &sql[..name_end], &sql[name_end..]);
    if let Some(engine_at) = out.find("ENGINE = ") {
        let after = engine_at + "ENGINE = ".len();
        let engine_len = out[after..].find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(out.len() - after);
        let engine = out[after..after + engine_len].to_string();
        if engine.ends_with("MergeTree") {
            let table = name.rsplit('.').next().unwrap_or(name);
            let path = format!("'/clickhouse/tables/{{shard}}/{database}/{table}', '{{replica}}'");
            let rest = &out[after + engine_len..];
            let replaced = match rest.strip_prefix('(') {
                Some(args) if !args.starts_with(')') => format!("Replicated{engine}({path}, {args}"),
                Some(args) => format!("Replicated{engine}({path}{args}"),
                None => format!("Replicated{engine}({path}){rest}"),
            };
            out = format!("{}{replaced}", &out[..after]);
        }
    }
    out
}

/// Runs one statement; `ADD COLUMN IF NOT EXISTS` as described in the module doc.
async fn execute(client: &Client, database: &str, sql: &str) -> anyhow::Result<()> {
    let Some((table, column)) = added_column(sql, database) else {
        return Ok(client.query(sql).execute().await?);
    };
    if column_exists(client, database, table, column).await? {
        return Ok(());
    }
    match client.query(&sql.replacen(" IF NOT EXISTS", "", 1)).execute().await {
        Ok(()) => Ok(()),
        Err(_) if column_exists(client, database, table, column).await? => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn column_exists(client: &Client, database: &str, table: &str, column: &str) -> anyhow::Result<bool> {
    let count = client
        .query("SELECT count() FROM system.columns WHERE database = ? AND table = ? AND name = ?")
        .bind(database)
        .bind(table)
        .bind(column)
        .fetch_one::<u64>()
        .await
        .context("reading system.columns")?;
    Ok(count > 0)
}

/// The table and column of `ALTER TABLE database.table ADD COLUMN IF NOT EXISTS column …`.
fn added_column<'a>(sql: &'a str, database: &str) -> Option<(&'a str, &'a str)> {
    let mut words = sql.split_whitespace();
    if [words.next()?, words.next()?] != ["ALTER", "TABLE"] {
        return None;
    }
    let table = words.next()?.strip_prefix(database)?.strip_prefix('.')?;
    for expected in ["ADD", "COLUMN", "IF", "NOT", "EXISTS"] {
        if words.next()? != expected {
            return None;
        }
    }
    Some((table, words.next()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_numbered_in_order_from_their_file_names() {
        for (i, step) in STEPS.iter().enumerate() {
            assert_eq!(step.version as usize, i + 1, "{}", step.file);
            assert_eq!(step.file, format!("{:03}_{}.sql", step.version, step.name()));
        }
        assert_eq!(STEPS[0].name(), "ledger");
        assert_eq!(STEPS[0].checksum().len(), 64);
    }

    #[test]
    fn expands_rollups_and_database() {
        let all = statements("analytics", ChainStyle::ViewName);
        assert!(all.iter().any(|s| s.sql.contains("FROM analytics.ledger_rollups_mv\n")));
        let current = statements("analytics", ChainStyle::TargetTable);
        assert!(current.iter().any(|s| s.sql.contains("FROM analytics.ledger_rollups\n")));
        assert!(all.iter().all(|s| !s.sql.contains('{')), "unexpanded placeholder");
        for rollup in ["minute", "hour", "day"] {
            let view = format!("CREATE VIEW IF NOT EXISTS analytics.usage_{rollup} AS");
            assert!(all.iter().any(|s| s.sql.starts_with(&view)), "{view}");
        }
        assert!(all[0].sql.starts_with("CREATE DATABASE IF NOT EXISTS analytics"));
        assert!(all.iter().all(|s| !s.sql.ends_with(';') && !s.sql.starts_with("--")));
    }

    /// A step that stopped half-way runs again from its start: each statement must be a no-op
    /// or a repeatable change the second time.
    #[test]
    fn every_statement_can_run_again() {
        for statement in statements("analytics", ChainStyle::ViewName) {
            let sql = &statement.sql;
            let rerunnable = sql.starts_with("CREATE DATABASE IF NOT EXISTS ")
                || sql.starts_with("CREATE TABLE IF NOT EXISTS ")
                || sql.starts_with("CREATE MATERIALIZED VIEW IF NOT EXISTS ")
                || sql.starts_with("CREATE VIEW IF NOT EXISTS ")
                || sql.starts_with("DROP TABLE IF EXISTS ")
                || added_column(sql, "analytics").is_some_and(|_| sql.matches("ADD COLUMN").count() == 1);
            assert!(rerunnable, "{}: cannot run twice:\n{sql}", statement.file);
        }
    }

    #[test]
    fn cluster_statements_run_on_every_server_with_replicated_engines() {
        let on = |sql: &str| on_cluster(sql, "c1", "db_local");
        assert_eq!(
            on("CREATE DATABASE IF NOT EXISTS db_local"),
            "CREATE DATABASE IF NOT EXISTS db_local ON CLUSTER c1"
        );
        assert_eq!(
            on("CREATE TABLE IF NOT EXISTS db_local.flushes\n(\n    a UInt8\n)\nENGINE = MergeTree\nORDER BY a"),
            "CREATE TABLE IF NOT EXISTS db_local.flushes ON CLUSTER c1\n(\n    a UInt8\n)\nENGINE = \
             ReplicatedMergeTree('/clickhouse/tables/{shard}/db_local/flushes', '{replica}')\nORDER BY a"
        );
        assert_eq!(
            on("CREATE TABLE IF NOT EXISTS db_local.alerts (v UInt64) ENGINE = ReplacingMergeTree(v) ORDER BY v"),
            "CREATE TABLE IF NOT EXISTS db_local.alerts ON CLUSTER c1 (v UInt64) ENGINE = \
             ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db_local/alerts', '{replica}', v) ORDER BY v"
        );
        assert_eq!(
            on("CREATE TABLE IF NOT EXISTS db_local.flush_ledger (a UInt8) ENGINE = Null"),
            "CREATE TABLE IF NOT EXISTS db_local.flush_ledger ON CLUSTER c1 (a UInt8) ENGINE = Null"
        );
        assert_eq!(
            on("CREATE MATERIALIZED VIEW IF NOT EXISTS db_local.x_mv TO db_local.x AS SELECT 1"),
            "CREATE MATERIALIZED VIEW IF NOT EXISTS db_local.x_mv ON CLUSTER c1 TO db_local.x AS SELECT 1"
        );
        assert_eq!(on("DROP TABLE IF EXISTS db_local.x_mv"), "DROP TABLE IF EXISTS db_local.x_mv ON CLUSTER c1");
        // Every statement of every step is one the cluster form covers, or an added column.
        for statement in statements("db_local", ChainStyle::ViewName) {
            let sql = &statement.sql;
            assert!(on(sql) != *sql || added_column(sql, "db_local").is_some(), "not made to run on a cluster:\n{sql}");
            assert!(!on(sql).contains("ENGINE = MergeTree") && !on(sql).contains("ENGINE = AggregatingMergeTree"));
        }
    }

    #[test]
    fn reads_added_columns() {
        let sql = "ALTER TABLE analytics.usage_events ADD COLUMN IF NOT EXISTS n UInt64 DEFAULT 0 AFTER m";
        assert_eq!(added_column(sql, "analytics"), Some(("usage_events", "n")));
        assert_eq!(added_column("ALTER TABLE analytics.t ADD COLUMN n UInt64", "analytics"), None);
        assert_eq!(added_column("ALTER TABLE other.t ADD COLUMN IF NOT EXISTS n UInt64", "analytics"), None);
    }

    #[test]
    fn a_newer_step_is_refused_and_a_changed_one_flagged() {
        let record = |version: u32, checksum: String| AppliedStep {
            version,
            name: "x".into(),
            checksum,
            applied_at: "2026-12-07 10:00:00".into(),
            costline_version: "9.9.9".into(),
            host: "h".into(),
        };
        let mut status = MigrationStatus {
            database: "analytics".into(),
            recorded: true,
            applied: STEPS.iter().map(|s| record(s.version, s.checksum())).collect(),
        };
        assert!(status.pending().is_empty() && status.changed().is_empty());
        assert!(status.refuse_newer().is_ok());
        assert!(status.to_string().ends_with("nothing pending\n"), "{status}");
        status.applied[0].checksum = "0".repeat(64);
        assert_eq!(status.changed().len(), 1);
        status.applied.push(record(STEPS.len() as u32 + 1, String::new()));
        let refusal = format!("{:#}", status.refuse_newer().unwrap_err());
        assert!(refusal.contains("a newer release upgraded the schema") && refusal.contains("9.9.9"), "{refusal}");
        assert!(status.to_string().contains("UNKNOWN"), "{status}");
    }
}
