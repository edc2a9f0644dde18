//! `costline report …`: the analyst shortcuts. Each answers one question of SPEC §3 as an
//! aligned table and prints the SQL it ran (with the literals filled in) so it can be pasted
//! into `clickhouse-client`; `--format csv|json` prints the rows alone for other tools (the
//! SQL then goes to stderr). Real, prod traffic unless `--all-traffic`.

use anyhow::{bail, Context};
use chrono::{Datelike, NaiveDate, Utc};
use clap::{Args, Subcommand};

use crate::config::Config;
mod format;
mod monthly;
mod queries;

pub use format::OutputFormat;
use queries::Report;
pub use queries::{align, demo_reports, render};

#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    #[command(subcommand)]
    command: ReportCommand,
    /// How to print the rows: an aligned table with its SQL, CSV (RFC 4180) or a JSON array of
    /// objects (decimals as strings); CSV and JSON print the SQL on stderr.
    #[arg(long, value_enum, default_value_t, global = true)]
    format: OutputFormat,
}

#[derive(Subcommand, Debug, Clone)]
pub enum ReportCommand {
    /// Top endpoints by cost for a period.
    TopEndpoints {
        #[command(flatten)]
        period: PeriodArgs,
        /// Rows to show.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Prompt versions of one endpoint: cost per request and retry ratio, before and after a date.
    PromptVersions {
        /// The endpoint tag.
        #[arg(long)]
        endpoint: String,
        /// The date that splits before from after (YYYY-MM-DD, UTC).
        #[arg(long)]
        split: String,
        #[command(flatten)]
        period: PeriodArgs,
    },
    /// Spend per tenant this month, against the tenant budgets of the configuration.
    Tenants,
    /// Model mix per endpoint and prompt version, per day.
    ModelMix {
        #[command(flatten)]
        period: PeriodArgs,
        /// Only this endpoint.
        #[arg(long)]
        endpoint: Option<String>,
    },
    /// Spend per tenant, endpoint tag and model for one calendar month, and its total.
    Monthly {
        /// The month (YYYY-MM).
        #[arg(long)]
        month: String,
        /// The time zone whose calendar bounds the month (IANA name).
        #[arg(long, default_value = "UTC")]
        time_zone: String,
        /// Include test, demo and non-prod traffic.
        #[arg(long)]
        all_traffic: bool,
    },
}

#[derive(Args, Debug, Clone)]
pub struct PeriodArgs {
    /// First day (YYYY-MM-DD, UTC); default: 30 days ago.
    #[arg(long)]
    from: Option<String>,
    /// Day after the last (YYYY-MM-DD, UTC); default: tomorrow.
    #[arg(long)]
    to: Option<String>,
    /// Include test, demo and non-prod traffic.
    #[arg(long)]
    all_traffic: bool,
}

fn date(value: &str, name: &str) -> anyhow::Result<NaiveDate> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d").with_context(|| format!("--{name} must be a date like 2026-11-01"))
}

impl PeriodArgs {
    /// `window_start >= … AND window_start < …` plus the traffic filter.
    fn filter(&self) -> anyhow::Result<String> {
        let today = Utc::now().date_naive();
        let from = match &self.from {
            Some(v) => date(v, "from")?,
            None => today - chrono::Duration::days(30),
        };
        let to = match &self.to {
            Some(v) => date(v, "to")?,
            None => today + chrono::Duration::days(1),
        };
        if from >= to {
            bail!("--from must be before --to");
        }
        Ok(format!(
            "window_start >= toDateTime('{from} 00:00:00', 'UTC') AND window_start < toDateTime('{to} 00:00:00', 'UTC'){}",
            traffic(self.all_traffic)
        ))
    }
}

/// The filter that keeps real, prod traffic unless `all` is set.
fn traffic(all: bool) -> &'static str {
    if all {
        ""
    } else {
        " AND data_mode = 'real' AND environment = 'prod'"
    }
}

pub fn report(command: &ReportCommand, config: &Config) -> anyhow::Result<Report> {
    Ok(match command {
        ReportCommand::TopEndpoints { period, limit } => Report {
            title: "Top endpoints by cost",
            sql: format!(
                "SELECT endpoint_tag, sum(requests) AS total_requests, toDecimal64(sum(cost_usd), 4) AS total_cost_usd, \
                 toDecimal64(sum(cost_usd) / greatest(sum(requests), 1), 6) AS cost_per_request, \
                 round(sum(retries) / greatest(sum(requests), 1), 3) AS retry_ratio \
                 FROM usage_day WHERE {} GROUP BY endpoint_tag ORDER BY sum(cost_usd) DESC LIMIT {limit}",
                period.filter()?
            ),
            params: Vec::new(),
        },
        ReportCommand::PromptVersions { endpoint, split, period } => {
            let split = date(split, "split")?;
            Report {
                title: "Prompt versions before and after the split date",
                sql: format!(
                    "SELECT if(window_start < toDateTime('{split} 00:00:00', 'UTC'), 'before', 'after') AS side, \
                     if(prompt_version = '', '(untagged)', prompt_version) AS version, sum(requests) AS total_requests, \
                     toDecimal64(sum(cost_usd) / greatest(sum(requests), 1), 6) AS cost_per_request, \
                     round(sum(retries) / greatest(sum(requests), 1), 3) AS retry_ratio \
                     FROM usage_day WHERE endpoint_tag = ? AND {} GROUP BY side, version ORDER BY side DESC, version",
                    period.filter()?
                ),
                params: vec![endpoint.clone()],
            }
        }
        ReportCommand::Tenants => {
            let month = Utc::now().date_naive().with_day(1).unwrap_or_default();
            let budgets: Vec<(String, String)> = config
                .budgets
                .iter()
                .filter_map(|b| {
                    let scope = &b.scope;
                    let tenant_only = scope.endpoint_tag.is_none()
                        && scope.prompt_version.is_none()
                        && scope.provider.is_none()
                        && scope.model.is_none();
                    let tenant = scope.tenant.clone().filter(|_| b.period == crate::config::BudgetPeriod::Month && tenant_only)?;
                    Some((tenant, b.limit_usd.clone()))
                })
                .collect();
            let placeholders = vec!["?"; budgets.len()].join(", ");
            // Limits go through strings: ClickHouse 18.16's `transform` takes no Decimal arrays.
            let budget = if budgets.is_empty() {
                "toDecimal64(0, 6)".to_string()
            } else {
                format!("toDecimal64(transform(tenant, [{placeholders}], [{placeholders}], '0'), 6)")
            };
            // `{budget}` appears three times, each with its tenants, then their limits.
            let (tenants, limits): (Vec<String>, Vec<String>) = budgets.into_iter().unzip();
            let budget_params = [tenants, limits].concat();
            Report {
                title: "Spend per tenant this month against monthly tenant budgets (0 = no budget)",
                sql: format!(
                    "SELECT if(tenant = '', '(none)', tenant) AS tenant_id, toDecimal64(sum(cost_usd), 4) AS spend_usd, \
                     any({budget}) AS budget_usd, \
                     if(any({budget}) = 0, 0, round(toFloat64(sum(cost_usd)) / toFloat64(any({budget})) * 100, 1)) AS used_percent \
                     FROM usage_day WHERE window_start >= toDateTime('{month} 00:00:00', 'UTC') \
                     AND data_mode = 'real' AND environment = 'prod' GROUP BY tenant ORDER BY sum(cost_usd) DESC LIMIT 50"
                ),
                params: [&budget_params[..], &budget_params, &budget_params].concat(),
            }
        }
        ReportCommand::ModelMix { period, endpoint } => {
            let only = if endpoint.is_some() { " AND endpoint_tag = ?" } else { "" };
            Report {
                title: "Model mix per day, endpoint and prompt version",
                sql: format!(
                    "SELECT toDate(window_start) AS day, endpoint_tag, if(prompt_version = '', '(untagged)', prompt_version) AS version, \
                     provider, model, sum(attempts) AS total_attempts, toDecimal64(sum(cost_usd), 4) AS total_cost_usd \
                     FROM usage_day WHERE {}{only} GROUP BY day, endpoint_tag, version, provider, model \
                     ORDER BY day, endpoint_tag, version, total_attempts DESC",
                    period.filter()?
                ),
                params: endpoint.iter().cloned().collect(),
            }
        }
        ReportCommand::Monthly { month, time_zone, all_traffic } => {
            let zone = time_zone
                .parse::<chrono_tz::Tz>()
                .map_err(|_| anyhow::anyhow!("--time-zone must be an IANA time zone like Europe/Berlin, not {time_zone:?}"))?;
            monthly::report(month, zone, traffic(*all_traffic))?
        }
    })
}

pub async fn run(config: &Config, args: &ReportArgs) -> anyhow::Result<()> {
    let client = crate::worker::clickhouse_target(config).client();
    let report = report(&args.command, config)?;
    let answer = queries::fetch(&client, &report).await?;
    let rows = match args.format {
        OutputFormat::Table => None,
        OutputFormat::Csv => Some(answer.to_csv()?),
        OutputFormat::Json => Some(answer.to_json()?),
    };
    match rows {
        None => print!("{}", queries::table(&report, &answer)),
        Some(rows) => {
            eprintln!("-- {}\n-- SQL: {}", report.title, report.filled_sql());
            print!("{rows}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_bound_and_shown_escaped() {
        assert_eq!(queries::quote("a'b\\c"), "'a\\'b\\\\c'");
        let command = ReportCommand::PromptVersions {
            endpoint: "x?'); DROP TABLE t; --".into(),
            split: "2026-11-01".into(),
            period: PeriodArgs { from: Some("2026-10-01".into()), to: Some("2026-12-01".into()), all_traffic: false },
        };
        let report = &report(&command, &Config::default()).unwrap();
        assert!(report.sql.contains("endpoint_tag = ? AND") && !report.sql.contains("DROP"), "{}", report.sql);
        assert_eq!(report.params, ["x?'); DROP TABLE t; --"]);
        let shown = report.filled_sql();
        assert!(shown.contains("endpoint_tag = 'x?\\'); DROP TABLE t; --' AND"), "{shown}");
    }

    #[test]
    fn bad_dates_are_refused() {
        let period = PeriodArgs { from: Some("yesterday".into()), to: None, all_traffic: false };
        let err = report(&ReportCommand::TopEndpoints { period, limit: 5 }, &Config::default()).unwrap_err();
        assert_eq!(err.to_string(), "--from must be a date like 2026-11-01");
    }

    #[test]
    fn the_monthly_report_needs_a_known_time_zone() {
        let monthly =
            |zone: &str| ReportCommand::Monthly { month: "2026-09".into(), time_zone: zone.into(), all_traffic: false };
        let err = report(&monthly("Mars/Olympus"), &Config::default()).unwrap_err();
        assert_eq!(err.to_string(), "--time-zone must be an IANA time zone like Europe/Berlin, not \"Mars/Olympus\"");
        let berlin = report(&monthly("Europe/Berlin"), &Config::default()).unwrap();
        assert!(berlin
            .filled_sql()
            .contains("FROM usage_hour WHERE window_start >= toDateTime('2026-08-31 22:00:00', 'UTC')"));
    }
}
