//! What becomes of each candidate row: the filters (`--provider`, `--only-seen`), duplicates
//! (several entries pricing one provider and model) and the comparison with the built-in table
//! in force at the effective date.

use std::collections::{BTreeMap, HashSet};

use costline_core::price::strip_date_suffix;
use costline_core::{Price, PriceTable};

use super::{per_million_text, Candidate, CatalogRates, CatalogRow, ParsedCatalog};

/// Which rows the user asked for.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// costline providers to keep; empty: all.
    pub providers: Vec<String>,
    /// `(provider, model)` pairs seen in `usage_events`; `None`: no such filter.
    pub seen: Option<HashSet<(String, String)>>,
}

impl Selection {
    fn reject(&self, row: &CatalogRow) -> Option<String> {
        if !self.providers.is_empty() && !self.providers.iter().any(|p| p.eq_ignore_ascii_case(&row.provider)) {
            return Some(format!("provider `{}` not selected by --provider", row.provider));
        }
        let seen = self.seen.as_ref()?;
        let provider = row.provider.clone();
        let seen_as = |model: &str| seen.contains(&(provider.clone(), model.to_string()));
        // An event's dated id is priced by the row of its undated id: that row is in use too.
        let in_use = seen_as(&row.model)
            || seen.iter().any(|(p, m)| *p == row.provider && strip_date_suffix(m) == Some(row.model.as_str()));
        (!in_use).then(|| "not seen in usage_events (--only-seen)".to_string())
    }
}

/// The fate of one candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No built-in row prices this model at the effective date: written.
    Added,
    /// The built-in row differs: written. One line per difference (`input 3 -> 2.5`).
    Changed(Vec<String>),
    /// The built-in row has the same prices: not written.
    Unchanged,
    /// Writing it would take something from the built-in table: not written, the reason says what.
    Conflict(String),
    /// Not a usable row: the reason.
    Skipped(String),
}

/// One candidate and its outcome.
#[derive(Debug, Clone)]
pub struct Decision {
    pub source: String,
    pub row: Option<CatalogRow>,
    pub outcome: Outcome,
}

/// Every candidate's outcome.
#[derive(Debug, Clone)]
pub struct ImportPlan {
    pub catalog: &'static str,
    pub entries: usize,
    /// Sorted by provider and model, the skipped ones (no row) last by source.
    pub decisions: Vec<Decision>,
}

impl ImportPlan {
    /// The rows to write: added and changed ones, or with `every_row` all that were read
    /// (unchanged and conflicting ones too).
    pub fn written(&self, every_row: bool) -> impl Iterator<Item = &CatalogRow> {
        self.decisions
            .iter()
            .filter(move |d| every_row || matches!(d.outcome, Outcome::Added | Outcome::Changed(_)))
            .filter_map(|d| d.row.as_ref())
    }
}

/// A candidate row with its rank and source.
type Ranked = (usize, String, CatalogRow);

/// Decides every candidate's outcome against `builtin` at `at_ms` (the effective date).
pub fn plan(parsed: ParsedCatalog, builtin: &PriceTable, at_ms: i64, selection: &Selection) -> ImportPlan {
    let mut decisions = Vec::with_capacity(parsed.candidates.len());
    // (provider, model) → its candidates as (rank, source, row).
    let mut by_model: BTreeMap<(String, String), Vec<Ranked>> = BTreeMap::new();
    for Candidate { source, rank, row } in parsed.candidates {
        match row {
            Err(reason) => decisions.push(Decision { source, row: None, outcome: Outcome::Skipped(reason) }),
            Ok(row) => match selection.reject(&row) {
                Some(reason) => decisions.push(Decision { source, row: None, outcome: Outcome::Skipped(reason) }),
                None => {
                    by_model.entry((row.provider.clone(), row.model.clone())).or_default().push((rank, source, row))
                }
            },
        }
    }
    for ((provider, model), mut rows) in by_model {
        rows.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let (winner_rank, winner_source, winner) = &rows[0];
        let tied: Vec<&str> = rows
            .iter()
            .filter(|(rank, _, row)| rank == winner_rank && !row.same_prices(winner))
            .map(|(_, source, _)| source.as_str())
            .collect();
        if !tied.is_empty() {
            let names: Vec<String> =
                std::iter::once(winner_source.as_str()).chain(tied).map(|s| format!("`{s}`")).collect();
            let reason = format!(
                "ambiguous: {} price {provider}/{model} differently and none takes precedence",
                names.join(", ")
            );
            for (_, source, _) in rows {
                decisions.push(Decision { source, row: None, outcome: Outcome::Skipped(reason.clone()) });
            }
            continue;
        }
        let mut rows = rows.into_iter();
        let Some((_, winner_source, winner)) = rows.next() else { continue };
        for (_, source, row) in rows {
            let reason = if row.same_prices(&winner) {
                format!("duplicate of `{winner_source}` ({provider}/{model}, same prices)")
            } else {
                format!("`{winner_source}` prices {provider}/{model} differently and takes precedence")
            };
            decisions.push(Decision { source, row: None, outcome: Outcome::Skipped(reason) });
        }
        let outcome = compare(&winner, builtin, at_ms);
        decisions.push(Decision { source: winner_source, row: Some(winner), outcome });
    }
    decisions.sort_by(|a, b| {
        let key = |d: &Decision| {
            (d.row.is_none(), d.row.as_ref().map(|r| (r.provider.clone(), r.model.clone())), d.source.clone())
        };
        key(a).cmp(&key(b))
    });
    ImportPlan { catalog: parsed.catalog, entries: parsed.entries, decisions }
}

const FIELDS: [&str; 5] = ["input", "cached_input", "cache_write", "cache_write_1h", "output"];

/// A catalog row's prices as the core bills them (a missing cache price is the input price, a
/// missing 1-hour price the cache-write price).
fn billed(rates: &CatalogRates) -> [i128; 5] {
    let cache_write = rates.cache_write.unwrap_or(rates.input);
    [
        rates.input,
        rates.cached_input.unwrap_or(rates.input),
        cache_write,
        rates.cache_write_1h.unwrap_or(cache_write),
        rates.output,
    ]
}

fn builtin_billed(rates: &costline_core::price::Rates) -> [i128; 5] {
    [rates.input, rates.cached_input, rates.cache_write, rates.cache_write_1h, rates.output]
}

/// The built-in row in force compared with the catalog's.
fn compare(row: &CatalogRow, builtin: &PriceTable, at_ms: i64) -> Outcome {
    if let Some(latest) = builtin.price_at(&row.provider, &row.model, i64::MAX) {
        if latest.effective_from_ms > at_ms {
            let date = chrono::DateTime::from_timestamp_millis(latest.effective_from_ms)
                .map_or_else(|| latest.effective_from_ms.to_string(), |t| t.date_naive().to_string());
            return Outcome::Conflict(format!(
                "the built-in table has a row from {date}, after the effective date, that would take over again"
            ));
        }
    }
    let Some(current) = builtin.price_at(&row.provider, &row.model, at_ms) else { return Outcome::Added };
    if let Some(lost) = lost_prices(row, current) {
        return Outcome::Conflict(lost);
    }
    let mut changes = field_changes("", &builtin_billed(&current.base), &billed(&row.rates));
    for (above, rates) in &row.tiers {
        match current.tiers.iter().find(|(a, _)| a == above) {
            Some((_, old)) => {
                changes.extend(field_changes(&format!("above {above}: "), &builtin_billed(old), &billed(rates)))
            }
            None => changes.push(format!("tier above {above} input tokens added ({})", rates_text(rates))),
        }
    }
    if changes.is_empty() {
        Outcome::Unchanged
    } else {
        Outcome::Changed(changes)
    }
}

/// What writing `row` would take from the built-in row in force: a tier, or a cache price
/// (whose tokens would then be billed at the input price).
fn lost_prices(row: &CatalogRow, current: &Price) -> Option<String> {
    for (above, _) in &current.tiers {
        if !row.tiers.iter().any(|(a, _)| a == above) {
            return Some(format!("the built-in row has a tier above {above} input tokens that the catalog lacks"));
        }
    }
    let levels = std::iter::once((String::new(), &current.base, &row.rates)).chain(current.tiers.iter().filter_map(
        |(above, old)| {
            row.tiers.iter().find(|(a, _)| a == above).map(|(_, new)| (format!(" (tier above {above})"), old, new))
        },
    ));
    for (level, old, new) in levels {
        for (name, old_price, old_default, new_price) in [
            ("cache-read", old.cached_input, old.input, new.cached_input),
            ("cache-write", old.cache_write, old.input, new.cache_write),
            ("1-hour cache-write", old.cache_write_1h, old.cache_write, new.cache_write_1h),
        ] {
            if old_price != old_default && new_price.is_none() {
                return Some(format!(
                    "the built-in row has a {name} price{level} ({}) that the catalog lacks",
                    per_million_text(old_price)
                ));
            }
        }
    }
    None
}

fn field_changes(prefix: &str, old: &[i128; 5], new: &[i128; 5]) -> Vec<String> {
    FIELDS
        .iter()
        .zip(old.iter().zip(new))
        .filter(|(_, (o, n))| o != n)
        .map(|(name, (o, n))| format!("{prefix}{name} {} -> {}", per_million_text(*o), per_million_text(*n)))
        .collect()
}

/// `input 3, cached_input 0.3, output 15` (the prices the row gives).
pub fn rates_text(rates: &CatalogRates) -> String {
    let mut parts = vec![format!("input {}", per_million_text(rates.input))];
    if let Some(cached) = rates.cached_input {
        parts.push(format!("cached_input {}", per_million_text(cached)));
    }
    if let Some(write) = rates.cache_write {
        parts.push(format!("cache_write {}", per_million_text(write)));
    }
    if let Some(write_1h) = rates.cache_write_1h {
        parts.push(format!("cache_write_1h {}", per_million_text(write_1h)));
    }
    parts.push(format!("output {}", per_million_text(rates.output)));
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUILTIN: &str = r#"
        version = "b1"
        [[price]]
        provider = "anthropic"
        model = "claude-sonnet-4-5"
        effective_from = "2025-09-29"
        input = "3"
        cached_input = "0.3"
        cache_write = "3.75"
        output = "15"
        [[price.tier]]
        above_input_tokens = 200000
        input = "6"
        cached_input = "0.6"
        cache_write = "7.5"
        output = "22.5"
        [[price]]
        provider = "openai"
        model = "gpt-4o"
        effective_from = "2024-10-02"
        input = "2.5"
        cached_input = "1.25"
        output = "10"
        [[price]]
        provider = "openai"
        model = "gpt-5"
        effective_from = "2030-01-01"
        input = "1"
        output = "2"
    "#;

    const AT: i64 = 1_796_000_000_000; // 2026-11

    fn rates(input: i128, cached: Option<i128>, write: Option<i128>, output: i128) -> CatalogRates {
        CatalogRates { input, cached_input: cached, cache_write: write, cache_write_1h: None, output }
    }

    fn row(provider: &str, model: &str, rates: CatalogRates, tiers: Vec<(u64, CatalogRates)>) -> CatalogRow {
        CatalogRow { provider: provider.into(), model: model.into(), rates, tiers, not_imported: Vec::new() }
    }

    fn candidate(source: &str, rank: usize, row: Result<CatalogRow, String>) -> Candidate {
        Candidate { source: source.into(), rank, row }
    }

    fn outcomes(candidates: Vec<Candidate>, selection: &Selection) -> Vec<(String, Outcome)> {
        let builtin = PriceTable::from_toml(BUILTIN, "builtin").unwrap();
        let entries = candidates.len();
        let plan = plan(ParsedCatalog { catalog: "test", entries, candidates }, &builtin, AT, selection);
        assert_eq!(plan.decisions.len(), entries, "every candidate has one outcome");
        plan.decisions.into_iter().map(|d| (d.source, d.outcome)).collect()
    }

    fn outcome_of(outcomes: &[(String, Outcome)], source: &str) -> Outcome {
        outcomes.iter().find(|(s, _)| s == source).map(|(_, o)| o.clone()).unwrap()
    }

    #[test]
    fn compares_with_the_builtin_row_in_force() {
        let sonnet_tier = (200_000, rates(6_000_000, Some(600_000), Some(7_500_000), 22_500_000));
        let sonnet = rates(3_000_000, Some(300_000), Some(3_750_000), 15_000_000);
        let got = outcomes(
            vec![
                candidate("same", 0, Ok(row("anthropic", "claude-sonnet-4-5", sonnet, vec![sonnet_tier]))),
                // A dated id without a built-in row of its own is compared with its undated row.
                candidate(
                    "dated",
                    0,
                    Ok(row(
                        "anthropic",
                        "claude-sonnet-4-5-20250929",
                        rates(3_000_000, Some(300_000), Some(3_750_000), 12_000_000),
                        vec![sonnet_tier, (1_000_000, sonnet)],
                    )),
                ),
                candidate("no-tier", 0, Ok(row("anthropic", "claude-sonnet-4-5-20990101", sonnet, vec![]))),
                candidate("new", 0, Ok(row("openai", "gpt-9", rates(1, None, None, 2), vec![]))),
                candidate("no-cache", 0, Ok(row("openai", "gpt-4o", rates(2_500_000, None, None, 10_000_000), vec![]))),
                candidate("later", 0, Ok(row("openai", "gpt-5", rates(1, None, None, 2), vec![]))),
                candidate("broken", 0, Err("`input_cost_per_token` is not a number: x".into())),
            ],
            &Selection::default(),
        );
        assert_eq!(outcome_of(&got, "same"), Outcome::Unchanged);
        assert_eq!(
            outcome_of(&got, "dated"),
            Outcome::Changed(vec![
                "output 15 -> 12".into(),
                "tier above 1000000 input tokens added (input 3, cached_input 0.3, cache_write 3.75, output 15)".into(),
            ])
        );
        assert_eq!(
            outcome_of(&got, "no-tier"),
            Outcome::Conflict("the built-in row has a tier above 200000 input tokens that the catalog lacks".into())
        );
        assert_eq!(outcome_of(&got, "new"), Outcome::Added);
        assert_eq!(
            outcome_of(&got, "no-cache"),
            Outcome::Conflict("the built-in row has a cache-read price (1.25) that the catalog lacks".into())
        );
        assert!(matches!(outcome_of(&got, "later"), Outcome::Conflict(r) if r.contains("row from 2030-01-01")));
        assert!(matches!(outcome_of(&got, "broken"), Outcome::Skipped(r) if r.contains("not a number")));
    }

    #[test]
    fn duplicates_are_settled_by_rank_or_skipped() {
        let a = rates(1_000_000, None, None, 2_000_000);
        let b = rates(1_500_000, None, None, 2_000_000);
        let got = outcomes(
            vec![
                candidate("gemini/m", 3, Ok(row("google", "m", a, vec![]))),
                candidate("m", 4, Ok(row("google", "m", b, vec![]))),
                candidate("vertex_ai/m", 4, Ok(row("google", "m", a, vec![]))),
                candidate("x/n", 9, Ok(row("x", "n", a, vec![]))),
                candidate("y/n", 9, Ok(row("x", "n", b, vec![]))),
            ],
            &Selection::default(),
        );
        assert_eq!(outcome_of(&got, "gemini/m"), Outcome::Added);
        assert_eq!(
            outcome_of(&got, "m"),
            Outcome::Skipped("`gemini/m` prices google/m differently and takes precedence".into())
        );
        assert_eq!(
            outcome_of(&got, "vertex_ai/m"),
            Outcome::Skipped("duplicate of `gemini/m` (google/m, same prices)".into())
        );
        let ambiguous = "ambiguous: `x/n`, `y/n` price x/n differently and none takes precedence";
        assert_eq!(outcome_of(&got, "x/n"), Outcome::Skipped(ambiguous.into()));
        assert_eq!(outcome_of(&got, "y/n"), Outcome::Skipped(ambiguous.into()));
    }

    #[test]
    fn filters_by_provider_and_by_models_seen() {
        let r = rates(1, None, None, 2);
        let candidates = || {
            vec![
                candidate("a", 0, Ok(row("openai", "gpt-9", r, vec![]))),
                candidate("b", 0, Ok(row("openai", "gpt-9-mini", r, vec![]))),
                candidate("c", 0, Ok(row("anthropic", "claude-9", r, vec![]))),
            ]
        };
        let got = outcomes(candidates(), &Selection { providers: vec!["OpenAI".into()], seen: None });
        assert_eq!(outcome_of(&got, "a"), Outcome::Added);
        assert_eq!(outcome_of(&got, "c"), Outcome::Skipped("provider `anthropic` not selected by --provider".into()));
        let seen = [("openai", "gpt-9-2031-01-01"), ("anthropic", "gpt-9-mini")]
            .iter()
            .map(|(p, m)| (p.to_string(), m.to_string()))
            .collect();
        let got = outcomes(candidates(), &Selection { providers: vec![], seen: Some(seen) });
        assert_eq!(outcome_of(&got, "a"), Outcome::Added, "seen as a dated id");
        assert_eq!(outcome_of(&got, "b"), Outcome::Skipped("not seen in usage_events (--only-seen)".into()));
        assert_eq!(outcome_of(&got, "c"), Outcome::Skipped("not seen in usage_events (--only-seen)".into()));
    }
}
