//! `costline reprice`: after a price is fixed, recomputes the cost of counted attempts in a
//! period with the current table and writes the differences as corrections that the rollups,
//! reports and budget spend include. `usage_events` keeps each attempt's original cost and
//! price version; `repricings` records who changed what.
//!
//! A reprice corrects each attempt towards the table's cost ([`costline_core::reprice`]), so
//! running it twice, or again after it was killed, changes totals once. It writes chunks of at
//! most `--chunk-attempts` corrections, each one `INSERT` that lands whole; before planning it
//! completes any chunk an earlier run left applied half-way by the server.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use chrono::{DateTime, Datelike, NaiveDate};
use clap::Args;
use costline_clickhouse::correction_store::{RepriceRow, RepriceStore, RepricingRecord, REPRICE_TARGETS};
use costline_clickhouse::Targets;
use costline_core::backoff::Backoff;
use costline_core::budget::{Scope, TagMatch};
use costline_core::reprice::{changes_by_model, chunks, correct, table_versions, Chunk, Correction};
use costline_core::{DataMode, PicoUsd};

use super::table;
use crate::config::Config;
use crate::report::align;
use crate::worker;

#[derive(Args, Debug, Clone)]
pub struct RepriceArgs {
    /// First day (UTC, YYYY-MM-DD) of the event times to reprice.
    #[arg(long)]
    from: NaiveDate,
    /// Last day (UTC, YYYY-MM-DD, included).
    #[arg(long)]
    to: NaiveDate,
    /// Only attempts with KEY=VALUE; KEY is tenant, endpoint_tag (`checkout.*` for a prefix),
    /// prompt_version, provider, model, environment or data_mode. Repeat to narrow.
    #[arg(long = "scope", value_name = "KEY=VALUE")]
    scope: Vec<String>,
    /// A price file (format of `schemas/prices.toml`) applied over the configured table for
    /// this reprice.
    #[arg(long)]
    prices: Option<PathBuf>,
    /// Print what would change per model and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Change costs in months listed in `pricing.closed_months`.
    #[arg(long)]
    force: bool,
    /// Who runs the reprice, for the audit record (default: $USER).
    #[arg(long)]
    by: Option<String>,
    /// Most attempts corrected by one insert.
    #[arg(long, default_value_t = 50_000)]
    chunk_attempts: usize,
    /// Pause between inserts, to spread a large reprice's load on ClickHouse.
    #[arg(long, default_value_t = 0)]
    pause_ms: u64,
}

/// Longest wait for one ClickHouse call of a reprice.
const CALL_TIMEOUT: Duration = Duration::from_secs(300);
/// Writes of one chunk before giving up.
const WRITE_ATTEMPTS: u32 = 5;

pub async fn run(config: &Config, args: &RepriceArgs) -> anyhow::Result<()> {
    if args.to < args.from {
        bail!("--to {} is before --from {}", args.to, args.from);
    }
    let scope = parse_scope(&args.scope)?;
    let mut table = table::load(&config.pricing)?;
    if let Some(path) = &args.prices {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("--prices: cannot read {}", path.display()))?;
        table.merge_toml(&text, &path.display().to_string())?;
    }
    let closed = config.pricing.closed_months()?;
    let store = RepriceStore::new(&worker::clickhouse_target(config), CALL_TIMEOUT);
    let (from, to) = (day_start(args.from), day_start(args.to) + 86_400);

    if !args.dry_run {
        for (chunk, missing) in store.unfinished_chunks().await.context("looking for half-applied reprice chunks")? {
            eprintln!("completing reprice chunk {} left half-applied (tables {})", chunk.id, missing.bits());
            write_chunk(&store, "completion", &chunk, missing).await?;
        }
    }

    let attempts = store.attempts(from, to, &scope).await.context("reading the counted attempts")?;
    let corrections: Vec<Correction> = attempts.iter().filter_map(|attempt| correct(attempt, &table)).collect();
    println!(
        "== Reprice {} .. {} (event time, UTC){} ==",
        args.from,
        args.to,
        if args.scope.is_empty() { String::new() } else { format!(", scope {}", args.scope.join(" ")) }
    );
    println!("{} counted attempts read, {} change cost\n", attempts.len(), corrections.len());
    print!("{}", summary(&corrections));

    let touched = closed_months_touched(&corrections, &closed);
    if !touched.is_empty() {
        let months = touched.iter().map(|(y, m)| format!("{y}-{m:02}")).collect::<Vec<_>>().join(", ");
        if args.dry_run || args.force {
            println!("\nchanges costs in closed months (pricing.closed_months): {months}");
        } else {
            bail!(
                "this reprice changes costs in closed months ({months}, pricing.closed_months): pass --force to do so"
            );
        }
    }
    if args.dry_run {
        println!("\ndry run: nothing written");
        return Ok(());
    }

    let started_at = now_ms();
    let reprice_id = format!("{}-{:08x}", started_at, rand::random::<u32>());
    let mut record = RepricingRecord {
        reprice_id: reprice_id.clone(),
        status: "started".into(),
        requested_by: args.by.clone().or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "unknown".into()),
        host: costline_clickhouse::host_name().unwrap_or_else(|| "unknown".into()),
        started_at: (started_at / 1000) as u32,
        finished_at: 0,
        range_from: from,
        range_to: to,
        scope: args.scope.join(" "),
        prices_file: args.prices.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        forced: u8::from(args.force && !touched.is_empty()),
        versions_before: table_versions(corrections.iter().map(|c| c.attempt.price_version.as_str())),
        versions_after: table_versions(corrections.iter().map(|c| c.new_price_version.as_str())),
        cost_before_usd: corrections.iter().map(|c| c.attempt.cost.0).sum(),
        cost_after_usd: corrections.iter().map(|c| c.new_cost.0).sum(),
        attempts_changed: corrections.len() as u64,
        chunks: 0,
        updated_at_ms: started_at,
    };
    let chunks = chunks(corrections, args.chunk_attempts);
    record.chunks = chunks.len() as u32;
    store.record(&record).await.context("recording the reprice in `repricings`")?;
    for (index, chunk) in chunks.iter().enumerate() {
        write_chunk(&store, &reprice_id, chunk, REPRICE_TARGETS).await?;
        eprintln!("chunk {}/{} written ({} attempts)", index + 1, chunks.len(), chunk.corrections.len());
        if args.pause_ms > 0 && index + 1 < chunks.len() {
            tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
        }
    }
    record.status = "done".into();
    record.finished_at = (now_ms() / 1000) as u32;
    record.updated_at_ms = now_ms().max(record.updated_at_ms + 1);
    store.record(&record).await.context("recording the finished reprice in `repricings`")?;
    println!(
        "\nreprice {reprice_id}: {} attempts changed in {} chunks, cost {} → {} USD",
        record.attempts_changed,
        record.chunks,
        PicoUsd(record.cost_before_usd).to_usd_string(),
        PicoUsd(record.cost_after_usd).to_usd_string()
    );
    Ok(())
}

/// Writes `chunk` to `targets`. After a failed insert it stops the query on the server, asks
/// which tables hold the chunk and writes again to the others only.
async fn write_chunk(store: &RepriceStore, reprice_id: &str, chunk: &Chunk, targets: Targets) -> anyhow::Result<()> {
    let mut targets = targets;
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    for attempt in 1..=WRITE_ATTEMPTS {
        let query_id = format!("costline-reprice-{}-{attempt}", chunk.id);
        let row = RepriceRow::new(reprice_id, chunk, targets, now_ms());
        let Err(error) = store.write(&row, &query_id).await else {
            return Ok(());
        };
        eprintln!("writing reprice chunk {} failed ({error}); checking what landed", chunk.id);
        tokio::time::sleep(backoff.next_delay(rand::random())).await;
        let landed = async {
            store.cancel(&query_id).await?;
            store.landed(&chunk.id, chunk.first_minute_secs()).await
        };
        match landed.await {
            Ok(landed) => targets = targets.without(landed),
            Err(e) if attempt == WRITE_ATTEMPTS => {
                return Err(e).with_context(|| format!("reprice chunk {}: cannot tell what landed", chunk.id))
            }
            Err(_) => continue,
        }
        if targets == Targets::NONE {
            return Ok(());
        }
    }
    bail!(
        "reprice chunk {} could not be written after {WRITE_ATTEMPTS} attempts; run the same reprice again once \
         ClickHouse answers (nothing is counted twice)",
        chunk.id
    )
}

/// `KEY=VALUE` filters → a scope (nothing fixed by default: every environment and data mode).
fn parse_scope(items: &[String]) -> anyhow::Result<Scope> {
    let mut scope = Scope { environment: None, data_mode: None, ..Scope::default() };
    for item in items {
        let Some((key, value)) = item.split_once('=') else {
            bail!("--scope `{item}`: expected KEY=VALUE");
        };
        let value = value.to_string();
        match key {
            "tenant" => scope.tenant = Some(value),
            "endpoint_tag" => scope.endpoint_tag = Some(TagMatch::parse(&value)),
            "prompt_version" => scope.prompt_version = Some(value),
            "provider" => scope.provider = Some(value.to_lowercase()),
            "model" => scope.model = Some(value),
            "environment" => scope.environment = Some(value),
            "data_mode" => {
                scope.data_mode = Some(
                    DataMode::parse(&value).with_context(|| format!("--scope data_mode=`{value}`: real, test or demo"))?,
                )
            }
            other => bail!(
                "--scope `{other}`: not one of tenant, endpoint_tag, prompt_version, provider, model, environment, data_mode"
            ),
        }
    }
    Ok(scope)
}

/// Per provider and model: attempts changed, cost before and after, the difference.
fn summary(corrections: &[Correction]) -> String {
    let mut rows = vec![[
        "provider",
        "model",
        "attempts",
        "priced before",
        "priced after",
        "cost before",
        "cost after",
        "difference",
    ]
    .map(String::from)
    .to_vec()];
    let (mut before, mut after) = (PicoUsd(0), PicoUsd(0));
    for ((provider, model), change) in changes_by_model(corrections) {
        before += change.cost_before;
        after += change.cost_after;
        rows.push(vec![
            provider,
            model,
            change.attempts.to_string(),
            change.priced_before.to_string(),
            change.priced_after.to_string(),
            change.cost_before.to_usd_string(),
            change.cost_after.to_usd_string(),
            PicoUsd(change.cost_after.0 - change.cost_before.0).to_usd_string(),
        ]);
    }
    let total = PicoUsd(after.0 - before.0);
    let mut out = align(&rows);
    out.push_str(&format!("total difference: {} USD\n", total.to_usd_string()));
    out
}

/// The closed months in which some correction falls.
fn closed_months_touched(corrections: &[Correction], closed: &[(i32, u32)]) -> BTreeSet<(i32, u32)> {
    corrections
        .iter()
        .filter_map(|c| DateTime::from_timestamp(i64::from(c.attempt.event_time_secs), 0))
        .map(|time| (time.year(), time.month()))
        .filter(|month| closed.contains(month))
        .collect()
}

fn day_start(day: NaiveDate) -> u32 {
    day.and_hms_opt(0, 0, 0).map_or(0, |t| t.and_utc().timestamp().clamp(0, i64::from(u32::MAX)) as u32)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_keys_parse_and_unknown_ones_are_refused() {
        let scope =
            parse_scope(&["provider=Acme".into(), "endpoint_tag=checkout.*".into(), "data_mode=test".into()]).unwrap();
        assert_eq!(scope.provider.as_deref(), Some("acme"));
        assert_eq!(scope.endpoint_tag, Some(TagMatch::Prefix("checkout.".into())));
        assert_eq!(scope.data_mode, Some(DataMode::Test));
        assert_eq!(scope.environment, None, "no default environment");
        assert!(parse_scope(&["colour=red".into()]).unwrap_err().to_string().contains("colour"));
        assert!(parse_scope(&["model".into()]).is_err());
        assert!(parse_scope(&["data_mode=fake".into()]).is_err());
    }

    #[test]
    fn day_bounds_are_utc_midnights() {
        assert_eq!(day_start(NaiveDate::from_ymd_opt(2026, 1, 1).unwrap()), 1_767_225_600);
    }
}
