//! Langfuse's default model prices (`default-model-prices.json`): an array of models, each with
//! a `modelName`, a `matchPattern` (a regex over the model names Langfuse sees) and
//! `pricingTiers` (one default tier, others with `conditions` on usage keys), whose `prices` are
//! USD per unit of each usage key. Each model id the pattern spells out is one candidate row.
//!
//! Model ids: the pattern's finite set of literal ids, each of which the pattern matches. Literal
//! text, alternations (`a|b`) and optional parts (`(-20250929)?`) are expanded (at most 64 ids);
//! an unescaped `.` is read as the dot the id contains (`gpt-4.1`); an optional part that is
//! not literal (`(@[a-zA-Z0-9]+)?`) is left out, and the summary says so; a required part that
//! is not literal (`[a-z]+`, `\d{4}`, `.*`) skips the model with the reason. `(?i)` is ignored:
//! the ids are kept as written. Which provider an id belongs to: see the mapping table in
//! [`super`].
//!
//! Prices: Langfuse keeps one price per usage key, and several keys name the same tokens
//! (`input`, `input_tokens`, `prompt_token_count`…): they are aliases, never summed, and must
//! agree. `input*`/`prompt*` aliases → `input`, `input_cache_read` and its aliases →
//! `cached_input`, `input_cache_creation` (5-minute) and its aliases → `cache_write`, `output`
//! and its aliases → `output`, `input_cache_creation_1h` → `cache_write_1h`. Not imported,
//! listed in the summary:
//! reasoning prices that differ from the output price, and any other key (audio, image…).
//!
//! Tiers: a conditional tier becomes a `[[price.tier]]` when it has one condition, `gt` (above
//! N) or `gte` (above N−1), on a `usageDetailPattern` that selects input-side keys (it matches
//! `input` and not `output`), and when Langfuse's rule (the first tier by priority whose
//! conditions hold) and costline's (the highest threshold passed) agree, i.e. thresholds fall
//! as priorities rise. Anything else (other operators, several conditions, conditions on output
//! tokens, a tier without a cache price that the default tier has, a model priced only by
//! `total`) cannot be expressed: the model is skipped with the reason.

use std::collections::BTreeMap;

use regex_syntax::ast::{self, Ast};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{
    costline_provider, per_million_text, usd_per_token, Candidate, CatalogRates, CatalogRow, Field, NotImported,
    ParsedCatalog,
};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Model {
    model_name: String,
    match_pattern: String,
    #[serde(default)]
    pricing_tiers: Vec<Tier>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Tier {
    #[serde(default)]
    name: String,
    #[serde(default)]
    is_default: bool,
    #[serde(default)]
    priority: i64,
    #[serde(default)]
    conditions: Vec<Condition>,
    #[serde(default)]
    prices: BTreeMap<String, Box<RawValue>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Condition {
    usage_detail_pattern: String,
    operator: String,
    value: Box<RawValue>,
    #[serde(default)]
    case_sensitive: bool,
}

/// Reads the whole file; a model that is not usable becomes a skipped candidate, only a file
/// that is not a JSON array is an error.
pub fn parse(text: &str) -> Result<ParsedCatalog, serde_json::Error> {
    let entries: Vec<Box<RawValue>> = serde_json::from_str(text)?;
    let mut candidates = Vec::with_capacity(entries.len());
    for (index, raw) in entries.iter().enumerate() {
        match serde_json::from_str::<Model>(raw.get()) {
            Ok(model) => candidates.extend(model_candidates(&model)),
            Err(e) => candidates.push(Candidate {
                source: format!("entry {index}"),
                rank: 0,
                row: Err(format!("not a Langfuse model: {e}")),
            }),
        }
    }
    Ok(ParsedCatalog { catalog: "langfuse", entries: entries.len(), candidates })
}

fn model_candidates(model: &Model) -> Vec<Candidate> {
    let candidate = |row| Candidate { source: model.model_name.clone(), rank: 0, row };
    let prices = read_tiers(&model.pricing_tiers);
    let ids =
        model_ids(&model.match_pattern).map_err(|reason| format!("matchPattern `{}`: {reason}", model.match_pattern));
    let ((rates, tiers, mut not_imported), (ids, partial)) = match (prices, ids) {
        (Ok(prices), Ok(ids)) => (prices, ids),
        (Err(reason), _) | (_, Err(reason)) => return vec![candidate(Err(reason))],
    };
    if partial {
        not_imported.push(NotImported { what: "matchPattern variants that are not literal ids (not derived)".into() });
    }
    ids.into_iter()
        .map(|id| {
            candidate(id.map(|(provider, model)| CatalogRow {
                provider,
                model,
                rates,
                tiers: tiers.clone(),
                not_imported: not_imported.clone(),
            }))
        })
        .collect()
}

/// The most model ids derived from one pattern.
const MAX_IDS: usize = 64;

/// A model id as `(provider, model)`, or the reason it has no provider.
type ModelId = Result<(String, String), String>;

/// The ids `pattern` spells out; `true` when optional non-literal parts were left out.
fn model_ids(pattern: &str) -> Result<(Vec<ModelId>, bool), String> {
    let ast = ast::parse::Parser::new().parse(pattern).map_err(|e| format!("not a regex ({})", e.kind()))?;
    let Expansion { ids, partial } = expand(&ast)?;
    let split = |id: &str| match id.split_once('/') {
        Some((prefix, model)) => (Some(costline_provider(prefix).0), model.to_string()),
        None => (None, id.to_string()),
    };
    let mut prefixes: Vec<String> = ids.iter().filter_map(|id| split(id).0).collect();
    prefixes.sort();
    prefixes.dedup();
    let mut pairs = Vec::new();
    for id in ids.iter().filter(|id| !id.is_empty()) {
        let (prefix, model) = split(id);
        let provider = if is_bedrock_id(&model) {
            Some("bedrock".to_string())
        } else if model.contains('@') {
            Some("vertex_ai".to_string())
        } else {
            prefix.or_else(|| match prefixes.as_slice() {
                [only] => Some(only.clone()),
                _ => None,
            })
        };
        let pair = provider.map(|p| (p, model)).ok_or_else(|| format!("the matchPattern names no provider for `{id}`"));
        if !pairs.contains(&pair) {
            pairs.push(pair);
        }
    }
    if pairs.is_empty() {
        return Err("matches no literal model id".into());
    }
    Ok((pairs, partial))
}

/// A Bedrock model id: `[geo.]vendor.model-…` (`anthropic.claude-…`, `us.anthropic.claude-…`).
fn is_bedrock_id(model: &str) -> bool {
    let head = model.split('-').next().unwrap_or_default();
    let parts: Vec<&str> = head.split('.').collect();
    let alphabetic = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphabetic());
    matches!(parts.len(), 2 | 3)
        && parts[..parts.len() - 1].iter().all(|p| alphabetic(p))
        && parts[parts.len() - 1].starts_with(|c: char| c.is_ascii_alphabetic())
}

/// The literal strings a regex matches.
struct Expansion {
    ids: Vec<String>,
    /// Optional non-literal parts were left out.
    partial: bool,
}

impl Expansion {
    fn one(text: &str) -> Expansion {
        Expansion { ids: vec![text.to_string()], partial: false }
    }
}

fn expand(ast: &Ast) -> Result<Expansion, String> {
    match ast {
        Ast::Empty(_) => Ok(Expansion::one("")),
        Ast::Flags(set) => flags_allowed(&set.flags).map(|()| Expansion::one("")),
        Ast::Literal(literal) => Ok(Expansion::one(&literal.c.to_string())),
        Ast::Dot(_) => Ok(Expansion::one(".")),
        Ast::Assertion(assertion) => match assertion.kind {
            ast::AssertionKind::StartLine
            | ast::AssertionKind::StartText
            | ast::AssertionKind::EndLine
            | ast::AssertionKind::EndText => Ok(Expansion::one("")),
            _ => Err("a word-boundary assertion".into()),
        },
        Ast::ClassUnicode(_) | Ast::ClassPerl(_) | Ast::ClassBracketed(_) => Err("a character class".into()),
        Ast::Repetition(repetition) => match repetition.op.kind {
            ast::RepetitionKind::ZeroOrOne => Ok(match expand(&repetition.ast) {
                Ok(mut inner) => {
                    inner.ids.insert(0, String::new());
                    inner
                }
                Err(_) => Expansion { ids: vec![String::new()], partial: true },
            }),
            _ => Err("a repetition".into()),
        },
        Ast::Group(group) => {
            if let ast::GroupKind::NonCapturing(flags) = &group.kind {
                flags_allowed(flags)?;
            }
            expand(&group.ast)
        }
        Ast::Alternation(alternation) => {
            let mut all = Expansion { ids: Vec::new(), partial: false };
            let mut failure = None;
            for branch in &alternation.asts {
                match expand(branch) {
                    Ok(Expansion { ids, partial }) => {
                        all.ids.extend(ids);
                        all.partial |= partial;
                    }
                    Err(reason) => {
                        all.partial = true;
                        failure = Some(reason);
                    }
                }
            }
            if all.ids.is_empty() {
                return Err(failure.unwrap_or_else(|| "an empty alternation".into()));
            }
            within_limit(all)
        }
        Ast::Concat(concat) => {
            let mut all = Expansion::one("");
            for part in &concat.asts {
                let next = expand(part)?;
                let mut ids = Vec::with_capacity(all.ids.len() * next.ids.len());
                for head in &all.ids {
                    for tail in &next.ids {
                        ids.push(format!("{head}{tail}"));
                    }
                }
                all = within_limit(Expansion { ids, partial: all.partial || next.partial })?;
            }
            Ok(all)
        }
    }
}

fn within_limit(expansion: Expansion) -> Result<Expansion, String> {
    if expansion.ids.len() > MAX_IDS {
        return Err(format!("spells out more than {MAX_IDS} ids"));
    }
    Ok(expansion)
}

/// Only `(?i)` changes nothing about the ids as written.
fn flags_allowed(flags: &ast::Flags) -> Result<(), String> {
    let case_insensitive =
        |item: &ast::FlagsItem| matches!(item.kind, ast::FlagsItemKind::Flag(ast::Flag::CaseInsensitive));
    if flags.items.iter().all(case_insensitive) {
        Ok(())
    } else {
        Err("regex flags other than (?i)".into())
    }
}

/// Usage keys that name the same tokens.
const ALIASES: [(Field, &[&str]); 5] = [
    (
        Field::Input,
        &[
            "input",
            "input_tokens",
            "prompt_tokens",
            "prompt_token_count",
            "promptTokenCount",
            "input_text",
            "input_modality_1",
        ],
    ),
    (
        Field::CacheRead,
        &[
            "input_cache_read",
            "input_cached_tokens",
            "input_cached_text_tokens",
            "cache_read_input_tokens",
            "cached_content_token_count",
            "cachedContentTokenCount",
        ],
    ),
    (Field::CacheWrite, &["input_cache_creation", "input_cache_creation_5m", "cache_creation_input_tokens"]),
    (Field::CacheWrite1h, &["input_cache_creation_1h"]),
    (
        Field::Output,
        &[
            "output",
            "output_tokens",
            "completion_tokens",
            "candidates_token_count",
            "candidatesTokenCount",
            "output_text",
            "output_modality_1",
        ],
    ),
];

const REASONING: [&str; 4] =
    ["output_reasoning", "output_reasoning_tokens", "thoughts_token_count", "thoughtsTokenCount"];

type Prices = (CatalogRates, Vec<(u64, CatalogRates)>, Vec<NotImported>);

/// One tier's prices: the five costline fields in [`ALIASES`]' order (`None`: not priced) and
/// what is not imported.
fn read_level(tier: &Tier, not_imported: &mut Vec<NotImported>) -> Result<[Option<i128>; 5], String> {
    let prices: Vec<(&str, &str)> =
        tier.prices.iter().filter(|(_, raw)| raw.get() != "null").map(|(k, raw)| (k.as_str(), raw.get())).collect();
    let mut fields = [None; 5];
    for (slot, (field, aliases)) in ALIASES.iter().enumerate() {
        let mut found: Option<(&str, i128)> = None;
        for (key, text) in prices.iter().filter(|(key, _)| aliases.contains(key)) {
            let price = usd_per_token(key, text)?;
            match found {
                Some((first, agreed)) if agreed != price => {
                    return Err(format!(
                        "alias keys disagree in tier `{}`: `{first}` {} and `{key}` {} ({field:?})",
                        tier.name,
                        per_million_text(agreed),
                        per_million_text(price)
                    ))
                }
                Some(_) => {}
                None => found = Some((key, price)),
            }
        }
        fields[slot] = found.map(|(_, price)| price);
    }
    if fields[0].is_none() && fields[4].is_none() && prices.iter().any(|(key, _)| *key == "total") {
        return Err("priced by `total` tokens only: costline prices input and output tokens".into());
    }
    for (key, text) in &prices {
        if ALIASES.iter().any(|(_, aliases)| aliases.contains(key)) {
            continue;
        }
        if REASONING.contains(key) {
            if usd_per_token(key, text).ok() != fields[4] {
                not_imported.push(NotImported {
                    what: "reasoning-token prices other than the output price (costline bills reasoning as output)"
                        .into(),
                });
            }
        } else {
            not_imported.push(NotImported { what: format!("`{key}` prices") });
        }
    }
    Ok(fields)
}

fn complete(
    tier: &Tier,
    [input, cached_input, cache_write, cache_write_1h, output]: [Option<i128>; 5],
) -> Result<CatalogRates, String> {
    let missing = |what: &str| format!("tier `{}` has no {what} price", tier.name);
    Ok(CatalogRates {
        input: input.ok_or_else(|| missing("input"))?,
        cached_input,
        cache_write,
        cache_write_1h,
        output: output.ok_or_else(|| missing("output"))?,
    })
}

fn read_tiers(tiers: &[Tier]) -> Result<Prices, String> {
    let defaults: Vec<&Tier> = tiers.iter().filter(|t| t.is_default).collect();
    let [default] = defaults.as_slice() else {
        return Err(format!("{} default pricing tiers, one expected", defaults.len()));
    };
    if !default.conditions.is_empty() {
        return Err("the default pricing tier has conditions".into());
    }
    let mut not_imported = Vec::new();
    let rates = complete(default, read_level(default, &mut not_imported)?)?;
    let mut conditional: Vec<&Tier> = tiers.iter().filter(|t| !t.is_default).collect();
    conditional.sort_by_key(|t| t.priority);
    let mut levels = Vec::with_capacity(conditional.len());
    for tier in conditional {
        let above = threshold(tier)?;
        let level = complete(tier, read_level(tier, &mut not_imported)?)?;
        for (name, base, here) in [
            ("cache-read", rates.cached_input, level.cached_input),
            ("cache-write", rates.cache_write, level.cache_write),
            ("1-hour cache-write", rates.cache_write_1h, level.cache_write_1h),
        ] {
            if base.is_some() && here.is_none() {
                return Err(format!("tier `{}` has no {name} price while the default tier has one", tier.name));
            }
        }
        levels.push((above, level));
    }
    if !levels.windows(2).all(|pair| pair[0].0 > pair[1].0) {
        return Err("a tier of higher priority has a lower threshold: Langfuse would never reach a tier that \
                    costline (the highest threshold passed) uses"
            .into());
    }
    levels.reverse();
    not_imported.sort();
    not_imported.dedup();
    Ok((rates, levels, not_imported))
}

/// A conditional tier's prompt-length threshold (`above_input_tokens`).
fn threshold(tier: &Tier) -> Result<u64, String> {
    let name = &tier.name;
    let [condition] = tier.conditions.as_slice() else {
        return Err(format!(
            "tier `{name}` has {} conditions; a costline tier has one, on input tokens",
            tier.conditions.len()
        ));
    };
    let pattern = regex::RegexBuilder::new(&condition.usage_detail_pattern)
        .case_insensitive(!condition.case_sensitive)
        .build()
        .map_err(|_| {
            format!("tier `{name}`: usageDetailPattern `{}` is not a regex", condition.usage_detail_pattern)
        })?;
    if !pattern.is_match("input") || pattern.is_match("output") {
        return Err(format!("tier `{name}` conditions on `{}`, not on input tokens", condition.usage_detail_pattern));
    }
    let value = costline_core::PicoUsd::parse_scaled(condition.value.get(), 0, false)
        .ok()
        .and_then(|v| u64::try_from(v).ok())
        .ok_or_else(|| format!("tier `{name}`: condition value {} is not a token count", condition.value.get()))?;
    match condition.operator.as_str() {
        "gt" => Ok(value),
        "gte" => value.checked_sub(1).ok_or_else(|| format!("tier `{name}` applies from 0 tokens")),
        other => Err(format!("tier `{name}` operator `{other}`: a costline tier is `more than N input tokens`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../../../../../tests/fixtures/langfuse/default-model-prices.json");

    fn rates(input: i128, cached: Option<i128>, write: Option<i128>, output: i128) -> CatalogRates {
        CatalogRates { input, cached_input: cached, cache_write: write, cache_write_1h: None, output }
    }

    fn ids(pattern: &str) -> (Vec<String>, bool) {
        let (pairs, partial) = model_ids(pattern).unwrap();
        (pairs.into_iter().map(|pair| pair.map_or_else(|e| e, |(p, m)| format!("{p}/{m}"))).collect(), partial)
    }

    #[test]
    fn model_ids_from_match_patterns() {
        assert_eq!(ids(r"(?i)^(openai\/)?(gpt-4o)$"), (vec!["openai/gpt-4o".to_string()], false));
        assert_eq!(
            ids(r"(?i)^(openai\/)?(gpt-)(35|3.5)(-turbo-1106)$").0,
            vec!["openai/gpt-35-turbo-1106", "openai/gpt-3.5-turbo-1106"]
        );
        assert_eq!(
            ids(r"(?i)^(google(ai)?\/)?(gemini-2.5-pro)(@[a-zA-Z0-9]+)?$"),
            (vec!["google/gemini-2.5-pro".to_string()], true)
        );
        assert_eq!(
            ids(r"(?i)^(anthropic\/)?(claude-opus-4(-20250514)?|(us\.)?anthropic\.claude-opus-4-v1(:0)?|claude-opus-4(@20250514)?)$").0,
            vec![
                "anthropic/claude-opus-4",
                "anthropic/claude-opus-4-20250514",
                "bedrock/anthropic.claude-opus-4-v1",
                "bedrock/anthropic.claude-opus-4-v1:0",
                "bedrock/us.anthropic.claude-opus-4-v1",
                "bedrock/us.anthropic.claude-opus-4-v1:0",
                "vertex_ai/claude-opus-4@20250514",
            ]
        );
        assert_eq!(ids(r"^(text-davinci-003)$").0, vec!["the matchPattern names no provider for `text-davinci-003`"]);
        for (pattern, reason) in [
            (r"(?i)^(mistral\/)?(mistral-[a-z]+-latest)$", "a repetition"),
            (r"(?i)^(openai\/)?(gpt-[45]o)$", "a character class"),
            (r"(?i)^(openai\/)?(ft:gpt-4o:.*)$", "a repetition"),
            (r"(?i)^(openai\/)?(gpt-4(-\d{4})-preview)$", "a repetition"),
            (r"(?s)^(openai\/)?gpt-4$", "regex flags other than (?i)"),
            (r"(?i)^(openai\/)?(o(1|3|4)-(mini|pro)-(a|b|c|d)-(e|f|g|h)-(i|j|k|l))$", "spells out more than 64 ids"),
            (r"(?i)^(gpt-4o", "not a regex (unclosed group)"),
        ] {
            assert_eq!(model_ids(pattern).map(|_| ()).unwrap_err(), reason, "{pattern}");
        }
    }

    #[test]
    fn bedrock_ids() {
        for id in
            ["anthropic.claude-3-haiku-20240307-v1:0", "us.anthropic.claude-opus-4-v1", "meta.llama3-70b-instruct-v1:0"]
        {
            assert!(is_bedrock_id(id), "{id}");
        }
        for id in ["gpt-4.1", "claude-3.5-sonnet", "qwen2.5-72b", "o3", "gemini-2.5-pro"] {
            assert!(!is_bedrock_id(id), "{id}");
        }
    }

    fn fixture_rows() -> BTreeMap<String, Result<CatalogRow, String>> {
        let parsed = parse(FIXTURE).unwrap();
        assert_eq!(parsed.entries, 12);
        let mut rows = BTreeMap::new();
        for candidate in parsed.candidates {
            let key = match &candidate.row {
                Ok(row) => format!("{}/{}", row.provider, row.model),
                Err(_) => candidate.source.clone(),
            };
            assert!(rows.insert(key.clone(), candidate.row).is_none(), "{key} twice");
        }
        rows
    }

    #[test]
    fn fixture_aliases_and_tiers() {
        let rows = fixture_rows();
        let row = |key: &str| rows.get(key).cloned().unwrap_or_else(|| panic!("{key} in {:?}", rows.keys())).unwrap();
        let gpt = row("openai/gpt-4o");
        assert_eq!(gpt.rates, rates(2_500_000, Some(1_250_000), None, 10_000_000));
        assert!(gpt.tiers.is_empty());
        let sonnet = row("anthropic/claude-sonnet-4-5");
        let with_1h = |rates: CatalogRates, price| CatalogRates { cache_write_1h: Some(price), ..rates };
        let base = rates(3_000_000, Some(300_000), Some(3_750_000), 15_000_000);
        assert_eq!(sonnet.rates, with_1h(base, 6_000_000), "aliases not summed");
        let tier = rates(6_000_000, Some(600_000), Some(7_500_000), 22_500_000);
        assert_eq!(sonnet.tiers, vec![(200_000, with_1h(tier, 12_000_000))]);
        assert_eq!(sonnet.not_imported, vec![]);
        for id in [
            "anthropic/claude-sonnet-4-5-20250929",
            "bedrock/anthropic.claude-sonnet-4-5-20250929-v1:0",
            "bedrock/eu.anthropic.claude-sonnet-4-5-20250929-v1:0",
            "vertex_ai/claude-sonnet-4-5@20250929",
        ] {
            assert_eq!(row(id).tiers, sonnet.tiers, "{id}");
        }
        // Thresholds from tiers in priority order (1M first), `gte` one below.
        let gemini = row("google/gemini-2.5-pro");
        assert_eq!(gemini.rates, rates(1_250_000, Some(125_000), None, 10_000_000));
        assert_eq!(
            gemini.tiers,
            vec![
                (199_999, rates(2_500_000, Some(250_000), None, 15_000_000)),
                (1_000_000, rates(5_000_000, Some(500_000), None, 20_000_000)),
            ]
        );
        assert_eq!(
            gemini.not_imported,
            vec![
                NotImported { what: "`input_audio_tokens` prices".into() },
                NotImported { what: "matchPattern variants that are not literal ids (not derived)".into() },
            ]
        );
        assert!(rows.contains_key("openai/gpt-4-vision-preview"));
    }

    #[test]
    fn fixture_skips_what_costline_cannot_express() {
        let rows = fixture_rows();
        let reason = |source: &str| rows.get(source).cloned().unwrap_or_else(|| panic!("{source}")).unwrap_err();
        assert_eq!(reason("mistral-latest"), "matchPattern `(?i)^(mistral\\/)?(mistral-[a-z]+-latest)$`: a repetition");
        assert_eq!(
            reason("disagreeing-aliases"),
            "alias keys disagree in tier `Standard`: `input` 1 and `input_tokens` 2 (Input)"
        );
        assert_eq!(
            reason("short-context-discount"),
            "tier `Short` operator `lt`: a costline tier is `more than N input tokens`"
        );
        assert_eq!(reason("output-tier"), "tier `Long output` conditions on `output`, not on input tokens");
        assert_eq!(
            reason("text-davinci-003"),
            "priced by `total` tokens only: costline prices input and output tokens"
        );
        assert_eq!(
            reason("float-artefact"),
            "`input` = 9.499999999999999e-7 USD per token has no exact price in USD per million tokens with 6 decimals"
        );
        assert_eq!(reason("o9"), "the matchPattern names no provider for `o9`");
        assert!(reason("tier-order").starts_with("a tier of higher priority has a lower threshold"));
    }
}
