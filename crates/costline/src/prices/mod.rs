//! `costline prices import`: reads a community catalog file, compares it with the built-in
//! price table, writes a price file (standard output or `--output`) and prints the summary on
//! standard error. The conversion is in [`import`], which does no I/O; this is the
//! I/O around it: the files, the clock (default effective date) and, for `--only-seen`,
//! ClickHouse.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context};
use chrono::{NaiveDate, Utc};
use clap::{Args, Subcommand, ValueEnum};
use costline_core::PriceTable;
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::worker;
use import::{langfuse, litellm, Selection};

pub mod coverage;
mod import;
pub mod reprice;
pub mod table;

#[derive(Subcommand, Debug, Clone)]
pub enum PricesCommand {
    /// Convert a community price catalog into a price file in costline's format (usable as
    /// `pricing.override_file`) holding the rows that add to or change the built-in table; the
    /// summary (added, changed, unchanged, conflicts, skipped, not imported) goes to stderr.
    Import(ImportArgs),
    /// Models seen in ClickHouse and what priced them; exits 3 when unpriced attempts exist.
    Coverage(coverage::CoverageArgs),
}

/// The catalog formats `prices import` reads.
#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum CatalogFormat {
    /// LiteLLM's model_prices_and_context_window.json.
    Litellm,
    /// Langfuse's default-model-prices.json.
    Langfuse,
}

#[derive(Args, Debug, Clone)]
pub struct ImportArgs {
    /// The catalog's format.
    #[arg(long = "from", value_enum)]
    from: CatalogFormat,
    /// The catalog file.
    file: PathBuf,
    /// UTC date (YYYY-MM-DD) from which the imported rows apply; default: today.
    #[arg(long)]
    effective_from: Option<String>,
    /// Only rows of this costline provider (`openai`, `anthropic`, `google`, `bedrock`,
    /// `azure_openai`…); repeat for several.
    #[arg(long = "provider", value_name = "PROVIDER")]
    providers: Vec<String>,
    /// Only models seen in ClickHouse's `usage_events` (a dated id counts for its undated row).
    #[arg(long)]
    only_seen: bool,
    /// Write every row read from the catalog, also those equal to or in conflict with the
    /// built-in table (a full snapshot of the catalog in costline's format).
    #[arg(long)]
    all: bool,
    /// Write the price file here instead of to standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

/// Longest wait for the `--only-seen` query.
const SEEN_QUERY_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn run(config: &Config, command: &PricesCommand) -> anyhow::Result<std::process::ExitCode> {
    match command {
        PricesCommand::Import(args) => import(config, args).await.map(|()| std::process::ExitCode::SUCCESS),
        PricesCommand::Coverage(args) => Ok(if coverage::run(config, args).await? {
            std::process::ExitCode::from(coverage::UNPRICED_EXIT_CODE)
        } else {
            std::process::ExitCode::SUCCESS
        }),
    }
}

async fn import(config: &Config, args: &ImportArgs) -> anyhow::Result<()> {
    let effective_from = match &args.effective_from {
        Some(text) => NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .with_context(|| format!("--effective-from must be a date like 2026-12-01, not `{text}`"))?,
        None => Utc::now().date_naive(),
    };
    let at_ms = effective_from
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp_millis())
        .context("--effective-from is out of range")?;
    let bytes = std::fs::read(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    let text = std::str::from_utf8(&bytes).with_context(|| format!("{} is not UTF-8 text", args.file.display()))?;
    let parsed = match args.from {
        CatalogFormat::Litellm => litellm::parse(text).with_context(|| {
            format!("{} is not LiteLLM's price file (a JSON object of models)", args.file.display())
        })?,
        CatalogFormat::Langfuse => langfuse::parse(text).with_context(|| {
            format!("{} is not Langfuse's model prices (a JSON array of models)", args.file.display())
        })?,
    };
    let seen = if args.only_seen { Some(seen_models(config).await?) } else { None };
    let builtin = table::builtin()?;
    let selection = Selection { providers: args.providers.clone(), seen };
    let plan = import::plan(parsed, &builtin, at_ms, &selection);

    let digest = hex::encode(Sha256::digest(&bytes));
    let version = format!("{}-{effective_from}-{}", plan.catalog, &digest[..8]);
    let file_name =
        args.file.file_name().map_or_else(|| args.file.display().to_string(), |n| n.to_string_lossy().into_owned());
    let origin = format!("{file_name} (sha256 {digest})");
    let price_file = import::render_toml(&plan, &version, &effective_from.to_string(), &origin, args.all);
    // What is written must load as `pricing.override_file` does.
    PriceTable::from_toml(&price_file, "the imported price file")
        .context("the importer wrote an invalid price file")?;
    match &args.output {
        Some(path) => std::fs::write(path, &price_file).with_context(|| format!("cannot write {}", path.display()))?,
        None => {
            std::io::stdout().lock().write_all(price_file.as_bytes()).context("writing the price file to stdout")?
        }
    }
    eprint!("{}", import::render_summary(&plan));
    Ok(())
}

#[derive(clickhouse::Row, serde::Deserialize)]
struct SeenModel {
    provider: String,
    model: String,
}

/// `(provider, model)` of every attempt in `usage_events`.
async fn seen_models(config: &Config) -> anyhow::Result<HashSet<(String, String)>> {
    let client = worker::clickhouse_target(config).client();
    let query = client.query("SELECT DISTINCT provider, model FROM usage_events").fetch_all::<SeenModel>();
    let rows = tokio::time::timeout(SEEN_QUERY_TIMEOUT, query)
        .await
        .map_err(|_| anyhow!("ClickHouse did not answer within {SEEN_QUERY_TIMEOUT:?} (--only-seen)"))?
        .context("reading the models seen in usage_events (--only-seen)")?;
    Ok(rows.into_iter().map(|row| (row.provider, row.model)).collect())
}
