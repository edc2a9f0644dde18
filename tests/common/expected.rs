//! The independent computation the end-to-end tests compare ClickHouse against.
//!
//! It reads the records exactly as `costline produce --record` published them and recomputes
//! every minute rollup with its own code: its own JSON reading, its own identity set, its own
//! price lookup in `schemas/prices.toml` with integer arithmetic. It shares nothing with the
//! worker but the contract (SPEC §1–§3).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use serde_json::Value;

/// The dimensions of a `usage_minute` row.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dims {
    pub window_start: u32,
    pub tenant: String,
    pub endpoint_tag: String,
    pub prompt_version: String,
    pub provider: String,
    pub model: String,
    pub environment: String,
    pub data_mode: String,
}

/// The measures compared exactly. Cost in pico-USD.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Measures {
    pub requests: u64,
    pub attempts: u64,
    pub retries: u64,
    pub duplicates: u64,
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_tokens: u64,
    pub cache_write_1h_tokens: u64,
    pub output_tokens: u64,
    pub cost_pico: i128,
    pub unpriced_attempts: u64,
}

#[derive(Debug, Default)]
pub struct Expected {
    pub minutes: BTreeMap<Dims, Measures>,
    pub rejected: u64,
    pub records: u64,
}

struct PriceRow {
    from_ms: i64,
    per_token_pico: [i128; 5], // input, cached, cache write, 1-hour cache write, output
    /// `(above_input_tokens, per_token_pico)`: a prompt longer than the threshold is priced
    /// whole at the highest such tier.
    tiers: Vec<(u64, [i128; 5])>,
}

/// A `[[price]]` row's or tier's five prices (a missing cache price is the input price, a
/// missing 1-hour price the cache-write price).
fn rates(row: &toml::Value) -> [i128; 5] {
    let get = |k: &str| row.get(k).and_then(|v| v.as_str()).map(micro_usd);
    let input = get("input").unwrap();
    let write = get("cache_write").unwrap_or(input);
    [input, get("cached_input").unwrap_or(input), write, get("cache_write_1h").unwrap_or(write), get("output").unwrap()]
}

/// The rows of `schemas/prices.toml`, then of each file of `extra`: a row replaces the one of
/// the same provider, model and date (as `pricing.override_file` does).
fn prices(extra: &[&Path]) -> HashMap<(String, String), Vec<PriceRow>> {
    let mut out: HashMap<(String, String), Vec<PriceRow>> = HashMap::new();
    let builtin = super::repo_root().join("schemas/prices.toml");
    for path in std::iter::once(builtin.as_path()).chain(extra.iter().copied()) {
        let text = std::fs::read_to_string(path).unwrap();
        let table: toml::Table = toml::from_str(&text).unwrap();
        for row in table["price"].as_array().unwrap() {
            let date = row["effective_from"].as_str().unwrap();
            let from_ms = days_from_civil(date) * 86_400_000;
            let rows = out
                .entry((row["provider"].as_str().unwrap().to_lowercase(), row["model"].as_str().unwrap().to_string()))
                .or_default();
            rows.retain(|r| r.from_ms != from_ms);
            rows.push(PriceRow {
                from_ms,
                per_token_pico: rates(row),
                tiers: row.get("tier").and_then(|t| t.as_array()).map_or(Vec::new(), |tiers| {
                    tiers.iter().map(|t| (t["above_input_tokens"].as_integer().unwrap() as u64, rates(t))).collect()
                }),
            });
        }
    }
    out
}

/// "2.50" USD per million tokens → 2_500_000 pico-USD per token.
fn micro_usd(text: &str) -> i128 {
    decimal_scaled(text, 6)
}

/// Decimal text, possibly with an exponent (`3e-8`, as JSON writers print small numbers) →
/// integer × 10^scale; panics on more precision than `scale`.
fn decimal_scaled(text: &str, scale: usize) -> i128 {
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i64>().unwrap()),
        None => (text, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: i128 = format!("{int}{frac}").parse().unwrap();
    let shift = scale as i64 + exponent - frac.len() as i64;
    if shift >= 0 {
        digits * 10i128.pow(shift as u32)
    } else {
        let divisor = 10i128.pow((-shift) as u32);
        assert_eq!(digits % divisor, 0, "{text} has more than {scale} decimals");
        digits / divisor
    }
}

/// Days since 1970-01-01 of a YYYY-MM-DD date (Howard Hinnant's algorithm).
fn days_from_civil(date: &str) -> i64 {
    let mut parts = date.split('-').map(|p| p.parse::<i64>().unwrap());
    let (y, m, d) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day) of days since 1970-01-01 (Howard Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Epoch seconds of the first midnight (UTC) of the month holding `secs`.
pub fn month_start_secs(secs: i64) -> i64 {
    let day = secs.div_euclid(86_400);
    let (_, _, day_of_month) = civil_from_days(day);
    (day - (day_of_month - 1)) * 86_400
}

/// "2025-05-01T10:00:00.250Z" (the generator writes UTC with milliseconds) → epoch ms.
fn rfc3339_utc_ms(text: &str) -> i64 {
    let (date, time) = text.trim_end_matches('Z').split_once('T').unwrap();
    let (hms, millis) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>().unwrap());
    let (h, mi, s) = (t.next().unwrap(), t.next().unwrap(), t.next().unwrap());
    days_from_civil(date) * 86_400_000
        + ((h * 60 + mi) * 60 + s) * 1000
        + format!("{millis:0<3}")[..3].parse::<i64>().unwrap()
}

impl Expected {
    /// Recomputes the totals from a `--record` file. `--record` lines are in publish order, which
    /// is each partition's order (all copies of a request share its key, hence its partition).
    pub fn from_record_file(path: &Path) -> Expected {
        Expected::from_record_file_priced(path, &[])
    }

    /// [`Expected::from_record_file`] with the rows of `extra` price files over the built-in ones.
    pub fn from_record_file_priced(path: &Path, extra: &[&Path]) -> Expected {
        let prices = prices(extra);
        let mut expected = Expected::default();
        let mut identities: HashSet<(String, u64)> = HashSet::new();
        let mut requests: HashSet<String> = HashSet::new();
        for line in std::fs::read_to_string(path).unwrap().lines() {
            let record: Value = serde_json::from_str(line).unwrap();
            expected.records += 1;
            if record["kind"] == "invalid" {
                expected.rejected += 1;
                continue;
            }
            let event: Value = serde_json::from_str(record["payload"].as_str().unwrap()).unwrap();
            let text = |k: &str, default: &str| event.get(k).and_then(Value::as_str).unwrap_or(default).to_string();
            let int = |k: &str| event.get(k).and_then(Value::as_u64).unwrap_or(0);
            let event_ms = match event.get("timestamp") {
                Some(Value::String(s)) => rfc3339_utc_ms(s),
                Some(Value::Number(n)) => n.as_i64().unwrap(),
                _ => record["ts"].as_i64().unwrap(),
            };
            let dims = Dims {
                window_start: (event_ms / 60_000 * 60) as u32,
                tenant: text("userId", ""),
                endpoint_tag: text("endpointTag", ""),
                prompt_version: text("promptVersion", ""),
                provider: text("provider", "").to_lowercase(),
                model: text("model", ""),
                environment: text("environment", "prod"),
                data_mode: text("dataMode", "real"),
            };
            let request_id = text("externalRequestId", "");
            let attempt = event.get("attempt").and_then(Value::as_u64).unwrap_or(1);
            let m = expected.minutes.entry(dims.clone()).or_default();
            if !identities.insert((request_id.clone(), attempt)) {
                m.duplicates += 1;
                continue;
            }
            let first_of_request = requests.insert(request_id);
            m.requests += u64::from(first_of_request);
            m.attempts += 1;
            m.retries += u64::from(!first_of_request);
            let (input, cached, write, write_1h, output) = (
                int("inputTokens"),
                int("cachedInputTokens"),
                int("cacheWriteTokens"),
                int("cacheWrite1hTokens"),
                int("outputTokens"),
            );
            m.input_tokens += input;
            m.cached_input_tokens += cached;
            m.cache_write_tokens += write;
            m.cache_write_1h_tokens += write_1h;
            m.output_tokens += output;
            if let Some(cost) = event.get("costUsd").filter(|v| !v.is_null()) {
                m.cost_pico += decimal_scaled(&cost.to_string(), 12);
            } else {
                let row = prices
                    .get(&(dims.provider.clone(), dims.model.clone()))
                    .and_then(|rows| rows.iter().filter(|r| r.from_ms <= event_ms).max_by_key(|r| r.from_ms));
                match row {
                    Some(row) => {
                        let tier = row.tiers.iter().rev().find(|(above, _)| input > *above);
                        let [p_in, p_cached, p_write, p_write_1h, p_out] =
                            tier.map_or(row.per_token_pico, |(_, rates)| *rates);
                        m.cost_pico += i128::from(input - cached - write - write_1h) * p_in
                            + i128::from(cached) * p_cached
                            + i128::from(write) * p_write
                            + i128::from(write_1h) * p_write_1h
                            + i128::from(output) * p_out;
                    }
                    None => m.unpriced_attempts += 1,
                }
            }
        }
        expected
    }

    /// The cost (pico-USD) of real prod traffic from `since_secs` on: what a budget of the
    /// default scope covers.
    pub fn prod_real_cost_since(&self, since_secs: i64) -> i128 {
        self.minutes
            .iter()
            .filter(|(d, _)| {
                d.data_mode == "real" && d.environment == "prod" && i64::from(d.window_start) >= since_secs
            })
            .map(|(_, m)| m.cost_pico)
            .sum()
    }

    /// Sums over every window and key.
    pub fn totals(&self) -> Measures {
        let mut total = Measures::default();
        for m in self.minutes.values() {
            add(&mut total, m);
        }
        total
    }
}

pub fn add(total: &mut Measures, m: &Measures) {
    total.requests += m.requests;
    total.attempts += m.attempts;
    total.retries += m.retries;
    total.duplicates += m.duplicates;
    total.input_tokens += m.input_tokens;
    total.cached_input_tokens += m.cached_input_tokens;
    total.cache_write_tokens += m.cache_write_tokens;
    total.cache_write_1h_tokens += m.cache_write_1h_tokens;
    total.output_tokens += m.output_tokens;
    total.cost_pico += m.cost_pico;
    total.unpriced_attempts += m.unpriced_attempts;
}

/// The measured columns, in the order [`parse_rollup_rows`] reads them.
pub const ROLLUP_COLUMNS: &str = "toUInt32(window_start), tenant, endpoint_tag, prompt_version, provider, model, \
    environment, data_mode, requests, attempts, retries, duplicates, input_tokens, cached_input_tokens, \
    cache_write_tokens, cache_write_1h_tokens, output_tokens, toString(cost_usd), unpriced_attempts";

/// `ROLLUP_COLUMNS` computed from the counted attempts in `usage_events` (which hold no
/// duplicates: that column is 0), grouped by minute and dimensions.
pub const EVENT_ROLLUP_QUERY: &str = "SELECT toUInt32(toStartOfMinute(event_time)), tenant, endpoint_tag, \
    prompt_version, provider, model, environment, data_mode, sum(first_of_request) AS requests, \
    count() AS attempts, attempts - requests, 0, sum(input_tokens), sum(cached_input_tokens), \
    sum(cache_write_tokens), sum(cache_write_1h_tokens), sum(output_tokens), toString(sum(cost_usd)), \
    countIf(price_version = '') \
    FROM usage_events GROUP BY toStartOfMinute(event_time), tenant, endpoint_tag, prompt_version, \
    provider, model, environment, data_mode FORMAT TSV";

/// Parses `SELECT {ROLLUP_COLUMNS} FROM usage_… FORMAT TSV`.
pub fn parse_rollup_rows(tsv: &str) -> BTreeMap<Dims, Measures> {
    let mut out = BTreeMap::new();
    for line in tsv.lines() {
        let f: Vec<String> = line.split('\t').map(|s| s.replace("\\\\", "\\").replace("\\'", "'")).collect();
        let n = |i: usize| f[i].parse::<u64>().unwrap();
        let dims = Dims {
            window_start: n(0) as u32,
            tenant: f[1].clone(),
            endpoint_tag: f[2].clone(),
            prompt_version: f[3].clone(),
            provider: f[4].clone(),
            model: f[5].clone(),
            environment: f[6].clone(),
            data_mode: f[7].clone(),
        };
        let measures = Measures {
            requests: n(8),
            attempts: n(9),
            retries: n(10),
            duplicates: n(11),
            input_tokens: n(12),
            cached_input_tokens: n(13),
            cache_write_tokens: n(14),
            cache_write_1h_tokens: n(15),
            output_tokens: n(16),
            cost_pico: decimal_scaled(&f[17], 12),
            unpriced_attempts: n(18),
        };
        assert!(out.insert(dims, measures).is_none(), "duplicate rollup row: {line}");
    }
    out
}
