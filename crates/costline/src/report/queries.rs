//! Analyst questions answered as aligned tables, each shown with the SQL it ran so it can be
//! copied into any ClickHouse client.

use anyhow::Context;
use clickhouse::Client;

use super::format::Answer;

/// A titled query. User-given values are bound to its `?` placeholders, never spliced into
/// the text (so that a tag holding `?` or a quote is only ever a value).
#[derive(Debug)]
pub struct Report {
    pub title: &'static str,
    pub sql: String,
    pub params: Vec<String>,
}

impl Report {
    /// The SQL with each parameter filled in as a ClickHouse string literal, to show and to copy.
    pub fn filled_sql(&self) -> String {
        let mut parts = self.sql.split('?');
        let mut out = parts.next().unwrap_or_default().to_string();
        let mut params = self.params.iter();
        for part in parts {
            match params.next() {
                Some(value) => out.push_str(&quote(value)),
                None => out.push('?'),
            }
            out.push_str(part);
        }
        out
    }
}

/// A ClickHouse string literal (for display: queries bind their values).
pub fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The reports the demo prints.
pub fn demo_reports() -> Vec<Report> {
    vec![
        Report {
            title: "Top endpoints by cost (real, prod)",
            sql: "SELECT endpoint_tag, sum(requests) AS total_requests, sum(attempts) AS total_attempts, \
                  round(sum(retries) / sum(requests), 3) AS retry_ratio, toDecimal64(sum(cost_usd), 4) AS total_cost_usd, \
                  toDecimal64(sum(cost_usd) / sum(requests), 6) AS cost_per_request \
                  FROM usage_hour WHERE data_mode = 'real' AND environment = 'prod' \
                  GROUP BY endpoint_tag ORDER BY sum(cost_usd) DESC LIMIT 10"
                .into(),
            params: Vec::new(),
        },
        Report {
            title: "Prompt versions: cost per request and retry ratio",
            sql: "SELECT endpoint_tag, if(prompt_version = '', '(untagged)', prompt_version) AS prompt_version, \
                  sum(requests) AS total_requests, round(sum(retries) / sum(requests), 3) AS retry_ratio, \
                  toDecimal64(sum(cost_usd) / sum(requests), 6) AS cost_per_request, \
                  round(sum(latency_ms_sum) / sum(latency_samples)) AS avg_latency_ms \
                  FROM usage_hour WHERE data_mode = 'real' AND environment = 'prod' \
                  GROUP BY endpoint_tag, prompt_version ORDER BY endpoint_tag, prompt_version"
                .into(),
            params: Vec::new(),
        },
        Report {
            title: "Model mix and unpriced attempts",
            sql: "SELECT provider, model, sum(attempts) AS total_attempts, sum(unpriced_attempts) AS unpriced, \
                  toDecimal64(sum(cost_usd), 4) AS total_cost_usd FROM usage_day WHERE data_mode = 'real' \
                  GROUP BY provider, model ORDER BY sum(cost_usd) DESC"
                .into(),
            params: Vec::new(),
        },
        Report {
            title: "Rejected records by reason",
            sql: "SELECT reason_code, field, count() AS records, any(reason) AS example FROM rejected_events \
                  GROUP BY reason_code, field ORDER BY records DESC"
                .into(),
            params: Vec::new(),
        },
    ]
}

/// Runs a report's query.
pub async fn fetch(client: &Client, report: &Report) -> anyhow::Result<Answer> {
    let query = report.params.iter().fold(client.query(&report.sql), |query, value| query.bind(value.as_str()));
    let mut cursor = query.fetch_bytes("TSVWithNamesAndTypes").context("starting the query")?;
    let bytes = cursor.collect().await.with_context(|| format!("running: {}", report.filled_sql()))?;
    let text = std::str::from_utf8(&bytes).context("the answer is not UTF-8")?;
    Answer::from_tsv(text).with_context(|| format!("reading the answer of: {}", report.filled_sql()))
}

/// Runs a query and renders it as an aligned text table, followed by its SQL.
pub async fn render(client: &Client, report: &Report) -> anyhow::Result<String> {
    Ok(table(report, &fetch(client, report).await?))
}

/// The title, the answer as an aligned table, and the SQL.
pub fn table(report: &Report, answer: &Answer) -> String {
    format!("\n== {} ==\n{}-- SQL: {}\n", report.title, align(&answer.lines()), report.filled_sql())
}

/// Left-aligns text columns and right-aligns numeric ones.
pub fn align(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let width = |c: usize| rows.iter().map(|r| r.get(c).map_or(0, |v| v.chars().count())).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns).map(width).collect();
    let numeric: Vec<bool> =
        (0..columns).map(|c| rows.iter().skip(1).all(|r| r.get(c).is_some_and(|v| v.parse::<f64>().is_ok()))).collect();
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, v)| {
                let pad = widths[c].saturating_sub(v.chars().count());
                if numeric[c] && i > 0 {
                    format!("{}{v}", " ".repeat(pad))
                } else {
                    format!("{v}{}", " ".repeat(pad))
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
        if i == 0 {
            out.push_str(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  "));
            out.push('\n');
        }
    }
    if rows.len() <= 1 {
        out.push_str("(no rows)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn aligns_numbers_right() {
        let rows = vec![
            vec!["endpoint".to_string(), "cost".to_string()],
            vec!["a.b".to_string(), "1.5".to_string()],
            vec!["long.endpoint".to_string(), "12.25".to_string()],
        ];
        assert_eq!(
            super::align(&rows),
            "endpoint       cost\n-------------  -----\na.b              1.5\nlong.endpoint  12.25\n"
        );
    }
}
