//! `costline prices coverage`: which models the counted attempts of the last days used, and
//! what prices them now (after any `costline reprice`): a price-table row (its version), the
//! producer's `costUsd`, or nothing.
//! A cost figure is only as good as its coverage, so the command exits with
//! [`UNPRICED_EXIT_CODE`] when any attempt in the period is unpriced: a cron job or a CI step
//! can fail on it.

use anyhow::Context;
use clap::Args;
use clickhouse::Row;
use serde::Deserialize;

use costline_clickhouse::correction_store::IN_FORCE;

use crate::config::Config;
use crate::report::align;

/// Exit status when unpriced attempts exist in the period.
pub const UNPRICED_EXIT_CODE: u8 = 3;

#[derive(Args, Debug, Clone)]
pub struct CoverageArgs {
    /// Days back from now (event time) to look at.
    #[arg(long, default_value_t = 30)]
    pub days: u32,
}

/// One (provider, model, price version) of the period, from `usage_events`.
#[derive(Debug, Clone, Row, Deserialize)]
struct Pricing {
    provider: String,
    model: String,
    price_version: String,
    attempts: u64,
    cost_usd: String,
}

/// How one row was priced, in words.
fn priced_by(version: &str) -> &str {
    match version {
        "" => "UNPRICED",
        "reported" => "costUsd (reported)",
        version => version,
    }
}

/// The report and whether unpriced attempts exist.
fn render(rows: &[Pricing], days: u32) -> (String, bool) {
    let mut table = vec![["provider", "model", "priced by", "attempts", "cost_usd"].map(String::from).to_vec()];
    for row in rows {
        table.push(vec![
            row.provider.clone(),
            row.model.clone(),
            priced_by(&row.price_version).to_string(),
            row.attempts.to_string(),
            row.cost_usd.clone(),
        ]);
    }
    let mut out = format!("== Price coverage of the last {days} days (usage_events, by event time) ==\n");
    out.push_str(&align(&table));
    let mut models: Vec<(&str, &str)> = rows.iter().map(|r| (r.provider.as_str(), r.model.as_str())).collect();
    models.dedup();
    let only = |version: &str| -> Vec<String> {
        models
            .iter()
            .filter(|&&(provider, model)| {
                rows.iter().filter(|r| r.provider == provider && r.model == model).all(|r| r.price_version == version)
            })
            .map(|(provider, model)| format!("{provider}/{model}"))
            .collect()
    };
    let unpriced: u64 = rows.iter().filter(|r| r.price_version.is_empty()).map(|r| r.attempts).sum();
    let partly: Vec<String> = models
        .iter()
        .filter(|&&(provider, model)| {
            let versions = rows.iter().filter(|r| r.provider == provider && r.model == model);
            versions.clone().any(|r| r.price_version.is_empty())
                && !versions.clone().all(|r| r.price_version.is_empty())
        })
        .map(|(provider, model)| format!("{provider}/{model}"))
        .collect();
    let list = |names: &[String]| if names.is_empty() { "none".to_string() } else { names.join(", ") };
    out.push_str(&format!("\nunpriced models: {}\n", list(&only(""))));
    out.push_str(&format!("models priced only by costUsd: {}\n", list(&only("reported"))));
    if !partly.is_empty() {
        out.push_str(&format!("models unpriced for part of the period: {}\n", list(&partly)));
    }
    out.push_str(&format!("unpriced attempts: {unpriced}\n"));
    (out, unpriced > 0)
}

/// Prints the coverage report; `Ok(true)` when unpriced attempts exist.
pub async fn run(config: &Config, args: &CoverageArgs) -> anyhow::Result<bool> {
    let client = crate::worker::clickhouse_target(config).client();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (from, to) = (now.saturating_sub(u64::from(args.days) * 86_400), u64::from(u32::MAX));
    let sql = format!(
        "SELECT provider, model, version_in_force AS price_version, count() AS attempts, \
         toString(sum(cost_in_force)) AS cost_usd FROM {IN_FORCE} \
         GROUP BY provider, model, price_version ORDER BY provider, model, price_version"
    );
    let query = client.query(&sql).bind(from).bind(to).bind(from).bind(to);
    let rows = tokio::time::timeout(std::time::Duration::from_secs(60), query.fetch_all::<Pricing>())
        .await
        .context("ClickHouse did not answer within 60 s")?
        .context("reading usage_events")?;
    let (report, unpriced) = render(&rows, args.days);
    print!("{report}");
    Ok(unpriced)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(provider: &str, model: &str, version: &str, attempts: u64) -> Pricing {
        Pricing {
            provider: provider.into(),
            model: model.into(),
            price_version: version.into(),
            attempts,
            cost_usd: "1.5".into(),
        }
    }

    #[test]
    fn names_unpriced_and_reported_only_models_and_flags_unpriced_attempts() {
        let rows = [
            row("acme", "acme-llm-2", "", 7),
            row("openai", "gpt-4o", "reported", 2),
            row("openai", "gpt-4o", "2026-12-07:openai/gpt-4o@2024-10-01", 40),
            row("openai", "gpt-9", "", 1),
            row("openai", "gpt-9", "mine:openai/gpt-9@2026-12-01", 3),
            row("zeta", "z-1", "reported", 5),
        ];
        let (report, unpriced) = render(&rows, 30);
        assert!(unpriced);
        assert!(report.contains("unpriced models: acme/acme-llm-2\n"), "{report}");
        assert!(report.contains("models priced only by costUsd: zeta/z-1\n"), "{report}");
        assert!(report.contains("models unpriced for part of the period: openai/gpt-9\n"), "{report}");
        assert!(report.contains("unpriced attempts: 8\n"), "{report}");
        assert!(report.contains("2026-12-07:openai/gpt-4o@2024-10-01"), "{report}");
        let (report, unpriced) = render(&rows[1..3], 7);
        assert!(!unpriced);
        assert!(report.contains("unpriced models: none\n") && report.contains("last 7 days"), "{report}");
    }
}
