//! The import's two outputs: the price file (costline's TOML format, only added and changed
//! rows) and the summary (every entry's outcome, the counts first and last).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::plan::rates_text;
use super::{per_million_text, CatalogRates, ImportPlan, Outcome};

/// The price file: `version`, then one `[[price]]` per added or changed row (`every_row`: per
/// row read), sorted by provider and model, each dated `effective_from` (YYYY-MM-DD). `origin`
/// says in the header where it came from.
pub fn render_toml(plan: &ImportPlan, version: &str, effective_from: &str, origin: &str, every_row: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Prices imported from the {} catalog: {origin}", plan.catalog);
    let _ = writeln!(out, "# Written by `costline prices import`. USD per 1,000,000 tokens, format as in");
    if every_row {
        let _ = writeln!(out, "# schemas/prices.toml. Every row read from the catalog is here (--all), also those");
        let _ = writeln!(out, "# equal to or in conflict with the built-in table at {effective_from}.");
    } else {
        let _ = writeln!(out, "# schemas/prices.toml. Only rows that add to or change the built-in table at");
        let _ = writeln!(out, "# {effective_from} are here; the import's summary says what became of every entry.");
    }
    let _ = writeln!(out, "version = {}", quoted(version));
    let sources: BTreeMap<(&str, &str), &str> = plan
        .decisions
        .iter()
        .filter_map(|d| d.row.as_ref().map(|r| ((r.provider.as_str(), r.model.as_str()), d.source.as_str())))
        .collect();
    for row in plan.written(every_row) {
        let _ = writeln!(out);
        if let Some(source) = sources.get(&(row.provider.as_str(), row.model.as_str())) {
            let _ = writeln!(out, "# {}: {}", plan.catalog, source.replace('\n', " "));
        }
        let _ = writeln!(out, "[[price]]");
        let _ = writeln!(out, "provider = {}", quoted(&row.provider));
        let _ = writeln!(out, "model = {}", quoted(&row.model));
        let _ = writeln!(out, "effective_from = {}", quoted(effective_from));
        write_rates(&mut out, &row.rates);
        for (above, rates) in &row.tiers {
            let _ = writeln!(out, "[[price.tier]]");
            let _ = writeln!(out, "above_input_tokens = {above}");
            write_rates(&mut out, rates);
        }
    }
    out
}

fn write_rates(out: &mut String, rates: &CatalogRates) {
    let _ = writeln!(out, "input = {}", quoted(&per_million_text(rates.input)));
    if let Some(cached) = rates.cached_input {
        let _ = writeln!(out, "cached_input = {}", quoted(&per_million_text(cached)));
    }
    if let Some(write) = rates.cache_write {
        let _ = writeln!(out, "cache_write = {}", quoted(&per_million_text(write)));
    }
    if let Some(write_1h) = rates.cache_write_1h {
        let _ = writeln!(out, "cache_write_1h = {}", quoted(&per_million_text(write_1h)));
    }
    let _ = writeln!(out, "output = {}", quoted(&per_million_text(rates.output)));
}

/// A TOML basic string.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// The counts line: they add up to the number of candidates.
fn counts(plan: &ImportPlan) -> String {
    let mut count = [0usize; 5];
    for decision in &plan.decisions {
        let slot = match decision.outcome {
            Outcome::Added => 0,
            Outcome::Changed(_) => 1,
            Outcome::Unchanged => 2,
            Outcome::Conflict(_) => 3,
            Outcome::Skipped(_) => 4,
        };
        count[slot] += 1;
    }
    let [added, changed, unchanged, conflicts, skipped] = count;
    let rows = if plan.decisions.len() == plan.entries {
        format!("{} entries", plan.entries)
    } else {
        format!("{} entries giving {} model ids", plan.entries, plan.decisions.len())
    };
    format!(
        "{rows}: {added} added, {changed} changed, {unchanged} unchanged, {conflicts} conflicts, {skipped} skipped \
         ({} rows written)",
        added + changed
    )
}

/// The summary: the counts, every outcome with its reason or differences, and the prices not
/// imported (counted per kind), the counts again at the end.
pub fn render_summary(plan: &ImportPlan) -> String {
    let mut out = String::new();
    let counts = counts(plan);
    let _ = writeln!(out, "{} catalog: {counts}", plan.catalog);
    let name = |source: &str, model: Option<(&str, &str)>| match model {
        Some((provider, model)) if source == model => format!("{provider}/{model}"),
        Some((provider, model)) => format!("{provider}/{model} [{source}]"),
        None => source.to_string(),
    };
    let mut sections: [(&str, Vec<String>); 5] = [
        ("added (written)", Vec::new()),
        ("changed (written; built-in -> catalog)", Vec::new()),
        ("unchanged (not written)", Vec::new()),
        ("conflicts with the built-in table (not written; the built-in row stays in force)", Vec::new()),
        ("skipped", Vec::new()),
    ];
    let mut counted: BTreeMap<&str, usize> = BTreeMap::new();
    for decision in &plan.decisions {
        let row = decision.row.as_ref();
        let label = name(&decision.source, row.map(|r| (r.provider.as_str(), r.model.as_str())));
        let (section, line) = match &decision.outcome {
            Outcome::Added => {
                let mut line = format!("{label}: {}", row.map(|r| rates_text(&r.rates)).unwrap_or_default());
                for (above, rates) in row.map(|r| r.tiers.as_slice()).unwrap_or_default() {
                    let _ = write!(line, "; above {above}: {}", rates_text(rates));
                }
                (0, line)
            }
            Outcome::Changed(changes) => (1, format!("{label}: {}", changes.join("; "))),
            Outcome::Unchanged => (2, label.clone()),
            Outcome::Conflict(reason) => (3, format!("{label}: {reason}")),
            Outcome::Skipped(reason) => (4, format!("{label}: {reason}")),
        };
        sections[section].1.push(line);
        for missing in row.map(|r| r.not_imported.as_slice()).unwrap_or_default() {
            *counted.entry(missing.what.as_str()).or_default() += 1;
        }
    }
    for (title, lines) in &sections {
        if lines.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{title}: {}", lines.len());
        for line in lines {
            let _ = writeln!(out, "  {line}");
        }
    }
    if !counted.is_empty() {
        let _ = writeln!(
            out,
            "\nnot imported (costline's price format has no place for them; the rest of each row is imported):"
        );
        for (what, rows) in &counted {
            let _ = writeln!(out, "  {what}: on {rows} row{}", if *rows == 1 { "" } else { "s" });
        }
    }
    let _ = writeln!(out, "\n{} catalog: {counts}", plan.catalog);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prices::import::{plan, Candidate, CatalogRow, NotImported, ParsedCatalog, Selection};
    use costline_core::PriceTable;

    fn sample_plan() -> ImportPlan {
        let rates = CatalogRates {
            input: 3_000_000,
            cached_input: Some(300_000),
            cache_write: None,
            cache_write_1h: None,
            output: 15_000_000,
        };
        let tier = CatalogRates {
            input: 6_000_000,
            cached_input: None,
            cache_write: Some(7_500_000),
            cache_write_1h: Some(12_000_000),
            output: 22_500_000,
        };
        let row = |provider: &str, model: &str, tiers| CatalogRow {
            provider: provider.into(),
            model: model.into(),
            rates,
            tiers,
            not_imported: vec![NotImported { what: "batch prices (`*_batches`)".into() }],
        };
        let candidates = vec![
            Candidate { source: "m\"odel".into(), rank: 0, row: Ok(row("x", "m\"odel", vec![(200_000, tier)])) },
            Candidate { source: "y-1".into(), rank: 0, row: Ok(row("y", "y-1", vec![])) },
            Candidate { source: "embedding".into(), rank: 0, row: Err("mode `embedding`".into()) },
        ];
        let parsed = ParsedCatalog { catalog: "litellm", entries: 3, candidates };
        plan(parsed, &PriceTable::default(), 0, &Selection::default())
    }

    #[test]
    fn the_price_file_is_valid_input_for_the_price_table() {
        let text = render_toml(&sample_plan(), "litellm-2026-12-07", "2026-12-07", "test.json", false);
        let table = PriceTable::from_toml(&text, "imported").unwrap();
        assert_eq!(table.model_count(), 2);
        let price = table.price_at("x", "m\"odel", 1_797_206_400_000).unwrap();
        assert_eq!(
            (price.base.input, price.base.cached_input, price.base.cache_write),
            (3_000_000, 300_000, 3_000_000)
        );
        let (above, tier) = &price.tiers[0];
        assert_eq!(
            (*above, tier.input, tier.cached_input, tier.cache_write, tier.output),
            (200_000, 6_000_000, 6_000_000, 7_500_000, 22_500_000)
        );
        assert_eq!(&*tier.version, "litellm-2026-12-07:x/m\"odel@2026-12-07>200000");
        assert!(text.contains("cached_input = \"0.3\"\n"), "{text}");
    }

    #[test]
    fn the_summary_accounts_for_every_entry() {
        let summary = render_summary(&sample_plan());
        let counts =
            "litellm catalog: 3 entries: 2 added, 0 changed, 0 unchanged, 0 conflicts, 1 skipped (2 rows written)";
        assert!(summary.starts_with(counts), "{summary}");
        assert!(summary.trim_end().ends_with(counts), "{summary}");
        assert!(summary.contains("  x/m\"odel: input 3, cached_input 0.3, output 15; above 200000: input 6, cache_write 7.5, cache_write_1h 12, output 22.5\n"), "{summary}");
        assert!(summary.contains("  embedding: mode `embedding`\n"), "{summary}");
        assert!(summary.contains("  batch prices (`*_batches`): on 2 rows\n"), "{summary}");
    }
}
