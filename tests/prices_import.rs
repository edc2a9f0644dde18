//! `costline prices import` on real catalog data: LiteLLM's price file from a pinned `litellm`
//! wheel downloaded from PyPI (cached under `.state/`, so a re-run is offline), and Langfuse's
//! format on the fixture `tests/fixtures/langfuse/default-model-prices.json`. Needs no
//! services; the LiteLLM test needs PyPI once and fails, saying so, when it cannot reach it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use costline_core::{PicoUsd, PriceTable};

/// The `litellm` release whose price file the known prices below come from.
const LITELLM_PIN: &str = "1.110.2";
const LITELLM_JSON: &str = "litellm/model_prices_and_context_window_backup.json";
const EFFECTIVE_FROM: &str = "2026-12-07";
/// 2026-12-07T00:00:00Z.
const AT_MS: i64 = 1_797_206_400_000;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

fn scratch(name: &str) -> PathBuf {
    let dir = repo_root().join(".state/prices-import-test");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// The price file of the pinned `litellm` wheel, downloaded once with pip and extracted with
/// Python's zipfile.
fn litellm_price_file() -> PathBuf {
    let dir = repo_root().join(format!(".state/litellm-{LITELLM_PIN}"));
    let json = dir.join("model_prices_and_context_window_backup.json");
    if json.exists() {
        return json;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let download = Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--only-binary=:all:"])
        .arg(format!("litellm=={LITELLM_PIN}"))
        .arg("-d")
        .arg(&dir)
        .output()
        .expect("running python3 -m pip (python3 with pip is needed to fetch the litellm wheel)");
    assert!(
        download.status.success(),
        "cannot download litellm=={LITELLM_PIN} from PyPI with pip; this test needs PyPI once (the wheel is \
         then cached in {}):\n{}",
        dir.display(),
        String::from_utf8_lossy(&download.stderr)
    );
    let wheel = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .unwrap_or_else(|| panic!("pip downloaded no wheel into {}", dir.display()));
    let partial = dir.join("price-file.partial");
    let extract = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile; open(sys.argv[3], 'wb').write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))",
        ])
        .arg(&wheel)
        .arg(LITELLM_JSON)
        .arg(&partial)
        .output()
        .unwrap();
    assert!(extract.status.success(), "extracting {LITELLM_JSON}: {}", String::from_utf8_lossy(&extract.stderr));
    std::fs::rename(&partial, &json).unwrap();
    json
}

/// Runs `costline prices import`; returns (price file, summary).
fn import(args: &[&str], output: &Path) -> (String, String) {
    let run = Command::new(env!("CARGO_BIN_EXE_costline"))
        .args(["prices", "import"])
        .args(args)
        .args(["--effective-from", EFFECTIVE_FROM, "--output"])
        .arg(output)
        .env_remove("COSTLINE_CONFIG")
        .output()
        .unwrap();
    let summary = String::from_utf8(run.stderr).unwrap();
    assert!(run.status.success(), "costline prices import {args:?} failed:\n{summary}");
    (std::fs::read_to_string(output).unwrap(), summary)
}

/// The counts line: (entries or rows, [added, changed, unchanged, conflicts, skipped]).
fn counts(summary: &str, catalog: &str) -> (usize, [usize; 5]) {
    let line = summary.lines().next().unwrap();
    let rest = line.strip_prefix(&format!("{catalog} catalog: ")).unwrap_or_else(|| panic!("{line}"));
    let (total, outcomes) = rest.split_once(": ").unwrap();
    let total = total.split(' ').filter_map(|w| w.parse().ok()).next_back().unwrap();
    let numbers: Vec<usize> =
        outcomes.split(", ").map(|part| part.split(' ').next().unwrap().parse().unwrap()).collect();
    assert_eq!(summary.trim_end().lines().last(), Some(line), "the counts close the summary too");
    (total, [numbers[0], numbers[1], numbers[2], numbers[3], numbers[4]])
}

/// USD per million tokens as exact decimal text, computed here from the float the catalog
/// holds (Rust's shortest round-trip form of it, then decimal digit shifts); `None` when it
/// has more than 6 decimals.
fn per_million(usd_per_token: f64) -> Option<String> {
    let text = format!("{usd_per_token:e}");
    let (mantissa, exponent) = text.split_once('e').unwrap();
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{whole}{fraction}");
    let shift = exponent.parse::<i64>().unwrap() + 6 - fraction.len() as i64;
    let decimal = if shift >= 0 {
        format!("{digits}{}", "0".repeat(shift as usize))
    } else {
        let point = shift.unsigned_abs() as usize;
        let padded = format!("{}{digits}", "0".repeat((point + 1).saturating_sub(digits.len())));
        let (int, frac) = padded.split_at(padded.len() - point);
        if frac.trim_end_matches('0').len() > 6 {
            return None;
        }
        format!("{int}.{frac}")
    };
    let decimal = if decimal.contains('.') { decimal.trim_end_matches('0').trim_end_matches('.') } else { &decimal };
    Some(decimal.trim_start_matches('0').to_string()).map(|d| {
        if d.is_empty() || d.starts_with('.') {
            format!("0{d}")
        } else {
            d
        }
    })
}

/// The written rows, by the catalog key each comes from (`# litellm: KEY` above it).
fn rows_by_source(price_file: &str, catalog: &str) -> BTreeMap<String, toml::Table> {
    let marker = format!("\n# {catalog}: ");
    price_file
        .split(&marker)
        .skip(1)
        .map(|section| {
            let (key, table) = section.split_once('\n').unwrap();
            let parsed: toml::Table = toml::from_str(table).unwrap();
            let row = parsed["price"].as_array().unwrap()[0].as_table().unwrap().clone();
            (key.to_string(), row)
        })
        .collect()
}

fn usd(text: &str) -> i128 {
    PicoUsd::parse_scaled(text, 6, false).unwrap()
}

#[test]
fn litellm_wheel_prices_import_exactly() {
    let file = litellm_price_file();
    let file_arg = file.to_str().unwrap();
    let catalog: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();

    // Every row read, whatever the built-in table says.
    let (all_rows, summary) = import(&["--from", "litellm", file_arg, "--all"], &scratch("litellm-all.toml"));
    let (entries, outcomes) = counts(&summary, "litellm");
    assert_eq!(entries, catalog.len(), "one outcome per entry of the file");
    assert_eq!(outcomes.iter().sum::<usize>(), catalog.len(), "{summary}");
    let table = PriceTable::from_toml(&all_rows, "imported").unwrap();
    assert_eq!(table.model_count(), outcomes[..4].iter().sum::<usize>(), "a row per entry not skipped");

    // Known prices, USD per million: (provider, model, [input, cached, write, 1-hour write, output], tiers).
    type Known = (&'static str, &'static str, [&'static str; 5], &'static [(u64, [&'static str; 5])]);
    let known: [Known; 5] = [
        ("anthropic", "claude-sonnet-4-5", ["3", "0.3", "3.75", "6", "15"], &[]),
        ("openai", "gpt-4o", ["2.5", "1.25", "2.5", "2.5", "10"], &[]),
        // `*_above_200k_tokens`; `gemini/…` wins over Vertex's `gemini-2.5-pro`.
        (
            "google",
            "gemini-2.5-pro",
            ["1.25", "0.125", "1.25", "1.25", "10"],
            &[(200_000, ["2.5", "0.25", "2.5", "2.5", "15"])],
        ),
        ("openai", "gpt-5.4", ["2.5", "0.25", "2.5", "2.5", "15"], &[(272_000, ["5", "0.5", "5", "5", "22.5"])]),
        // `tiered_pricing` ranges [0, 256000], [256000, 1000000].
        (
            "dashscope",
            "qwen-flash",
            ["0.05", "0.05", "0.05", "0.05", "0.4"],
            &[(256_000, ["0.25", "0.25", "0.25", "0.25", "2"])],
        ),
    ];
    for (provider, model, base, tiers) in known {
        let price = table.price_at(provider, model, AT_MS).unwrap_or_else(|| panic!("{provider}/{model} imported"));
        let rates =
            |r: &costline_core::price::Rates| [r.input, r.cached_input, r.cache_write, r.cache_write_1h, r.output];
        assert_eq!(rates(&price.base), base.map(usd), "{provider}/{model}");
        let got: Vec<(u64, [i128; 5])> = price.tiers.iter().map(|(above, r)| (*above, rates(r))).collect();
        let want: Vec<(u64, [i128; 5])> = tiers.iter().map(|(above, r)| (*above, r.map(usd))).collect();
        assert_eq!(got, want, "{provider}/{model} tiers");
    }
    assert!(summary.contains("batch prices (`*_batches`), not pay-as-you-go: on "), "{summary}");
    for skipped in [
        "  sample_spec: LiteLLM's description of the format, not a model\n",
        "  text-embedding-3-small: mode `embedding` is not chat, completion or responses\n",
        "  gemini-2.5-pro: `gemini/gemini-2.5-pro` prices google/gemini-2.5-pro differently and takes precedence\n",
        "  novita/moonshotai/kimi-k2.7-code: `input_cost_per_token` = 9.499999999999999e-07 USD per token has no exact price",
        "  azure/eu/gpt-4o-2024-08-06: region- or commitment-specific price",
    ] {
        assert!(summary.contains(skipped), "{skipped} in:\n{summary}");
    }

    // Every written row against an independent computation from the catalog's floats.
    let rows = rows_by_source(&all_rows, "litellm");
    assert_eq!(rows.len(), table.model_count());
    for (key, row) in &rows {
        let entry = catalog[key].as_object().unwrap();
        if entry.contains_key("tiered_pricing") {
            continue;
        }
        let price = |name: &str| entry.get(name).and_then(|v| v.as_f64()).map(|v| per_million(v).unwrap());
        let written = |name: &str| row.get(name).map(|v| v.as_str().unwrap().to_string());
        assert_eq!(written("input"), price("input_cost_per_token"), "{key}");
        assert_eq!(written("output"), price("output_cost_per_token"), "{key}");
        assert_eq!(written("cached_input"), price("cache_read_input_token_cost"), "{key}");
        assert_eq!(written("cache_write"), price("cache_creation_input_token_cost"), "{key}");
        assert_eq!(written("cache_write_1h"), price("cache_creation_input_token_cost_above_1hr"), "{key}");
        let prefixes = [
            "input_cost_per_token",
            "output_cost_per_token",
            "cache_read_input_token_cost",
            "cache_creation_input_token_cost",
        ];
        let thresholds: std::collections::BTreeSet<&str> = entry
            .keys()
            .filter_map(|k| {
                prefixes.iter().find_map(|p| k.strip_prefix(p)?.strip_prefix("_above_")?.strip_suffix("_tokens"))
            })
            .filter(|n| !n.is_empty() && n.trim_end_matches('k').bytes().all(|b| b.is_ascii_digit()))
            .collect();
        assert_eq!(row.get("tier").map_or(0, |t| t.as_array().unwrap().len()), thresholds.len(), "{key}");
    }
    assert!(rows.len() > 1000, "{} rows", rows.len());

    // Without --all: only what adds to or changes the built-in table; a model whose built-in row
    // has a long-context tier that this release of the catalog lacks is a conflict, not written.
    let (changes, summary) = import(&["--from", "litellm", file_arg], &scratch("litellm.toml"));
    let (_, outcomes) = counts(&summary, "litellm");
    assert_eq!(outcomes.iter().sum::<usize>(), catalog.len());
    let [added, changed, unchanged, conflicts, _] = outcomes;
    assert!(added > 0 && unchanged > 0 && conflicts > 0, "{outcomes:?}");
    assert_eq!(PriceTable::from_toml(&changes, "imported").unwrap().model_count(), added + changed);
    assert!(summary.contains(
        "\n  anthropic/claude-sonnet-4-5: the built-in row has a tier above 200000 input tokens that the catalog lacks\n"
    ));
    assert!(summary.contains("\nunchanged (not written): ") && summary.contains("\n  openai/gpt-4o\n"), "{summary}");

    // --provider keeps one provider's rows; the counts still add up to the file's entries.
    let (anthropic, summary) = import(
        &["--from", "litellm", file_arg, "--all", "--provider", "anthropic"],
        &scratch("litellm-anthropic.toml"),
    );
    let (_, outcomes) = counts(&summary, "litellm");
    assert_eq!(outcomes.iter().sum::<usize>(), catalog.len());
    let providers: Vec<&str> = anthropic.lines().filter_map(|l| l.strip_prefix("provider = ")).collect();
    assert!(!providers.is_empty() && providers.iter().all(|p| *p == "\"anthropic\""), "{providers:?}");
    assert!(summary.contains("  gpt-4o: provider `openai` not selected by --provider\n"));
}

#[test]
fn langfuse_fixture_imports_tiers_and_alias_keys() {
    let fixture = repo_root().join("tests/fixtures/langfuse/default-model-prices.json");
    let (all_rows, summary) =
        import(&["--from", "langfuse", fixture.to_str().unwrap(), "--all"], &scratch("langfuse-all.toml"));
    let (rows, outcomes) = counts(&summary, "langfuse");
    assert!(summary.starts_with("langfuse catalog: 12 entries giving "), "{summary}");
    assert_eq!(outcomes.iter().sum::<usize>(), rows, "{summary}");
    let table = PriceTable::from_toml(&all_rows, "imported").unwrap();
    let sonnet = table.price_at("anthropic", "claude-sonnet-4-5", AT_MS).unwrap();
    assert_eq!(
        [
            sonnet.base.input,
            sonnet.base.cached_input,
            sonnet.base.cache_write,
            sonnet.base.cache_write_1h,
            sonnet.base.output
        ],
        ["3", "0.3", "3.75", "6", "15"].map(usd)
    );
    assert_eq!(sonnet.tiers.len(), 1);
    assert_eq!(
        (sonnet.tiers[0].0, sonnet.tiers[0].1.input, sonnet.tiers[0].1.cache_write_1h, sonnet.tiers[0].1.output),
        (200_000, usd("6"), usd("12"), usd("22.5"))
    );
    let bedrock = table.price_at("bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0", AT_MS).unwrap();
    assert_eq!(bedrock.base.input, usd("3"));
    let gemini = table.price_at("google", "gemini-2.5-pro", AT_MS).unwrap();
    let thresholds: Vec<u64> = gemini.tiers.iter().map(|(above, _)| *above).collect();
    assert_eq!(thresholds, [199_999, 1_000_000]);
    for line in [
        "\n  disagreeing-aliases: alias keys disagree in tier `Standard`: `input` 1 and `input_tokens` 2 (Input)\n",
        "\n  short-context-discount: tier `Short` operator `lt`: a costline tier is `more than N input tokens`\n",
    ] {
        assert!(summary.contains(line), "{line} in:\n{summary}");
    }

    // --provider bedrock writes the Bedrock ids only.
    let (bedrock_only, summary) = import(
        &["--from", "langfuse", fixture.to_str().unwrap(), "--provider", "bedrock"],
        &scratch("langfuse-bedrock.toml"),
    );
    let (rows, outcomes) = counts(&summary, "langfuse");
    assert_eq!(outcomes.iter().sum::<usize>(), rows);
    let providers: Vec<&str> = bedrock_only.lines().filter_map(|l| l.strip_prefix("provider = ")).collect();
    assert_eq!(providers.len(), 12, "{bedrock_only}");
    assert!(providers.iter().all(|p| *p == "\"bedrock\""));
}
