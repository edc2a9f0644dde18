//! Budgets: which spend a budget covers (its [`Scope`]), over which calendar period, and what
//! its thresholds say about that spend. Spend itself is read from ClickHouse by the adapter;
//! everything here is arithmetic on it, so it is tested without I/O.
//!
//! An alert for a budget is identified by `(budget, period start, threshold)`: whatever the
//! number of workers, restarts or replays, the same crossing yields the same [`AlertId`].

use std::fmt;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

use crate::event::DataMode;
use crate::money::PicoUsd;

/// An endpoint tag filter: exact, or a prefix written `checkout.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagMatch {
    Exact(String),
    Prefix(String),
}

impl TagMatch {
    pub fn parse(text: &str) -> TagMatch {
        match text.strip_suffix('*') {
            Some(prefix) => TagMatch::Prefix(prefix.to_string()),
            None => TagMatch::Exact(text.to_string()),
        }
    }

    pub fn matches(&self, tag: &str) -> bool {
        match self {
            TagMatch::Exact(exact) => tag == exact,
            TagMatch::Prefix(prefix) => tag.starts_with(prefix.as_str()),
        }
    }
}

/// As configured: the tag, or the prefix followed by `*`.
impl fmt::Display for TagMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TagMatch::Exact(tag) => f.write_str(tag),
            TagMatch::Prefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}

/// What spend a budget covers. `None` means any value. The default scope is real traffic in
/// `prod`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub tenant: Option<String>,
    pub endpoint_tag: Option<TagMatch>,
    pub prompt_version: Option<String>,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub environment: Option<String>,
    pub data_mode: Option<DataMode>,
}

/// `key=value` for every dimension the scope fixes, comma-separated, in a fixed order (tenant,
/// endpoint_tag, prompt_version, provider, model, environment, data_mode), as rule scopes are
/// written; `*` when it fixes none. What alerts store and send as the budget's scope.
impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pairs = [
            ("tenant", self.tenant.clone()),
            ("endpoint_tag", self.endpoint_tag.as_ref().map(TagMatch::to_string)),
            ("prompt_version", self.prompt_version.clone()),
            ("provider", self.provider.clone()),
            ("model", self.model.clone()),
            ("environment", self.environment.clone()),
            ("data_mode", self.data_mode.map(|m| m.as_str().to_string())),
        ];
        let fixed: Vec<String> =
            pairs.into_iter().filter_map(|(key, value)| value.map(|value| format!("{key}={value}"))).collect();
        if fixed.is_empty() {
            f.write_str("*")
        } else {
            f.write_str(&fixed.join(","))
        }
    }
}

impl Scope {
    /// The scope for people: each key it fixes in words (`tenant acme, endpoints checkout.*`),
    /// the environment and data mode only where they differ from real traffic in `prod`;
    /// `all real prod traffic` when it fixes nothing else.
    pub fn in_words(&self) -> String {
        let mut words = Vec::new();
        words.extend(self.tenant.as_ref().map(|tenant| format!("tenant {tenant}")));
        words.extend(self.endpoint_tag.as_ref().map(|tag| match tag {
            TagMatch::Exact(tag) => format!("endpoint {tag}"),
            TagMatch::Prefix(_) => format!("endpoints {tag}"),
        }));
        words.extend(self.prompt_version.as_ref().map(|version| match version.as_str() {
            "" => "untagged prompts".to_string(),
            version => format!("prompt version {version}"),
        }));
        words.extend(self.provider.as_ref().map(|provider| format!("provider {provider}")));
        words.extend(self.model.as_ref().map(|model| format!("model {model}")));
        match self.environment.as_deref() {
            Some("prod") => {}
            Some(environment) => words.push(format!("environment {environment}")),
            None => words.push("every environment".into()),
        }
        match self.data_mode {
            Some(DataMode::Real) => {}
            Some(mode) => words.push(format!("{} traffic", mode.as_str())),
            None => words.push("real, test and demo traffic".into()),
        }
        if words.is_empty() {
            "all real prod traffic".into()
        } else {
            words.join(", ")
        }
    }
}

impl Default for Scope {
    fn default() -> Self {
        Scope {
            tenant: None,
            endpoint_tag: None,
            prompt_version: None,
            provider: None,
            model: None,
            environment: Some("prod".into()),
            data_mode: Some(DataMode::Real),
        }
    }
}

impl Scope {
    /// Whether a call with these dimensions counts toward this scope: every dimension the
    /// scope fixes equals the call's (the endpoint tag may match a prefix).
    pub fn covers(&self, call: &Call) -> bool {
        fn fixed_equal(fixed: Option<&str>, value: &str) -> bool {
            fixed.is_none_or(|fixed| fixed == value)
        }
        fixed_equal(self.tenant.as_deref(), &call.tenant)
            && self.endpoint_tag.as_ref().is_none_or(|tag| tag.matches(&call.endpoint_tag))
            && fixed_equal(self.prompt_version.as_deref(), &call.prompt_version)
            && fixed_equal(self.provider.as_deref(), &call.provider)
            && fixed_equal(self.model.as_deref(), &call.model)
            && fixed_equal(self.environment.as_deref(), &call.environment)
            && self.data_mode.is_none_or(|mode| mode == call.data_mode)
    }
}

/// The dimensions of one LLM call, as its usage event would carry them: what an app asks the
/// guardrail check about before making the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub tenant: String,
    pub endpoint_tag: String,
    pub prompt_version: String,
    /// Lower-case, as counted.
    pub provider: String,
    pub model: String,
    pub environment: String,
    pub data_mode: DataMode,
}

/// What an exceeded budget means for the calls it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnExceeded {
    /// Alerts only: the guardrail check still allows calls.
    #[default]
    Warn,
    /// The guardrail check answers `allow: false` until the period resets.
    Block,
}

impl OnExceeded {
    pub fn as_str(self) -> &'static str {
        match self {
            OnExceeded::Warn => "warn",
            OnExceeded::Block => "block",
        }
    }
}

/// A calendar period in the budget's time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day,
    Week,
    Month,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
        }
    }

    /// The current period in words: `today`, `this week`, `this month`.
    pub fn current_in_words(self) -> &'static str {
        match self {
            Period::Day => "today",
            Period::Week => "this week",
            Period::Month => "this month",
        }
    }

    /// `[start, end)` of the period holding `at`, in UTC instants. Weeks start on Monday.
    pub fn bounds(self, at: DateTime<Utc>, zone: Tz) -> (DateTime<Utc>, DateTime<Utc>) {
        let local = at.with_timezone(&zone).date_naive();
        let (start, end) = match self {
            Period::Day => (local, local + Duration::days(1)),
            Period::Week => {
                let monday = local - Duration::days(i64::from(local.weekday().num_days_from_monday()));
                (monday, monday + Duration::days(7))
            }
            Period::Month => {
                let first = local.with_day(1).unwrap_or(local);
                let next = if first.month() == 12 {
                    NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)
                } else {
                    NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)
                };
                (first, next.unwrap_or(first + Duration::days(31)))
            }
        };
        (midnight(start, zone), midnight(end, zone))
    }
}

/// The first instant of `day` in `zone` (a day whose midnight is skipped by a DST change
/// starts at the earliest instant that exists).
fn midnight(day: NaiveDate, zone: Tz) -> DateTime<Utc> {
    let naive = day.and_hms_opt(0, 0, 0).unwrap_or_default();
    match zone.from_local_datetime(&naive) {
        chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => t.with_timezone(&Utc),
        chrono::LocalResult::None => (1..=180)
            .find_map(|m| zone.from_local_datetime(&(naive + Duration::minutes(m))).earliest())
            .map_or_else(|| Utc.from_utc_datetime(&naive), |t| t.with_timezone(&Utc)),
    }
}

/// How a budget stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetState {
    Ok,
    /// At or over the highest threshold below 100 %.
    Warning,
    /// At or over the limit.
    Exceeded,
}

impl BudgetState {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetState::Ok => "ok",
            BudgetState::Warning => "warning",
            BudgetState::Exceeded => "exceeded",
        }
    }
}

/// One budget, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    pub id: String,
    pub scope: Scope,
    pub period: Period,
    pub zone: Tz,
    pub limit: PicoUsd,
    /// Percent of the limit, ascending (default 50, 80, 100).
    pub thresholds: Vec<u32>,
    pub webhooks: Vec<String>,
    pub on_exceeded: OnExceeded,
}

impl Budget {
    /// Spend over limit (0 when the limit is 0).
    pub fn ratio(&self, spend: PicoUsd) -> f64 {
        if self.limit.0 <= 0 {
            return 0.0;
        }
        spend.0 as f64 / self.limit.0 as f64
    }

    pub fn state(&self, spend: PicoUsd) -> BudgetState {
        if self.limit.0 > 0 && spend.0 >= self.limit.0 {
            return BudgetState::Exceeded;
        }
        let warn_at = self.thresholds.iter().copied().filter(|&t| t < 100).max();
        match warn_at {
            Some(percent) if self.reached(spend, percent) => BudgetState::Warning,
            _ => BudgetState::Ok,
        }
    }

    /// Thresholds (percent) that `spend` has reached, exactly (integer arithmetic).
    pub fn crossed(&self, spend: PicoUsd) -> Vec<u32> {
        self.thresholds.iter().copied().filter(|&t| self.reached(spend, t)).collect()
    }

    fn reached(&self, spend: PicoUsd, percent: u32) -> bool {
        self.limit.0 > 0 && spend.0 * 100 >= self.limit.0 * i128::from(percent)
    }
}

/// The stable identity of an alert: also the webhook idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AlertId(pub String);

impl AlertId {
    /// `(budget, period start, threshold)`.
    pub fn budget(budget_id: &str, period_start: DateTime<Utc>, threshold: u32) -> AlertId {
        AlertId::from_parts(&["budget", budget_id, &period_start.timestamp().to_string(), &threshold.to_string()])
    }

    /// `(rule, scope, window)`: `window` is the cooldown slot the condition was seen in.
    pub fn rule(rule: &str, scope: &str, window_start_secs: i64) -> AlertId {
        AlertId::from_parts(&["rule", rule, scope, &window_start_secs.to_string()])
    }

    /// The resolve of alert `alert_id`, sent once a budget's period ended.
    pub fn resolve(alert_id: &str) -> AlertId {
        AlertId::from_parts(&["resolve", alert_id])
    }

    fn from_parts(parts: &[&str]) -> AlertId {
        let joined = parts.join("\u{1f}");
        let hash = xxhash_rust::xxh3::xxh3_128(joined.as_bytes());
        AlertId(format!("al_{hash:032x}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(limit_usd: i128, thresholds: &[u32]) -> Budget {
        Budget {
            id: "b".into(),
            scope: Scope::default(),
            period: Period::Month,
            zone: chrono_tz::UTC,
            limit: PicoUsd(limit_usd * crate::money::PICO_PER_USD),
            thresholds: thresholds.to_vec(),
            webhooks: vec![],
            on_exceeded: OnExceeded::Warn,
        }
    }

    #[test]
    fn scopes_in_words_name_what_they_fix() {
        assert_eq!(Scope::default().in_words(), "all real prod traffic");
        let scope = Scope {
            tenant: Some("acme".into()),
            endpoint_tag: Some(TagMatch::parse("checkout.ai_summary")),
            ..Scope::default()
        };
        assert_eq!(scope.in_words(), "tenant acme, endpoint checkout.ai_summary");
        let scope = Scope {
            endpoint_tag: Some(TagMatch::parse("checkout.*")),
            prompt_version: Some(String::new()),
            provider: Some("openai".into()),
            model: Some("gpt-4o".into()),
            environment: None,
            data_mode: Some(DataMode::Test),
            ..Scope::default()
        };
        assert_eq!(
            scope.in_words(),
            "endpoints checkout.*, untagged prompts, provider openai, model gpt-4o, every environment, test traffic"
        );
    }

    #[test]
    fn thresholds_are_exact_at_the_boundary() {
        let b = budget(100, &[50, 80, 100]);
        let usd = |cents: i128| PicoUsd(cents * crate::money::PICO_PER_USD / 100);
        assert_eq!(b.crossed(usd(4999)), Vec::<u32>::new());
        assert_eq!(b.crossed(usd(5000)), vec![50]);
        assert_eq!(b.crossed(usd(8000)), vec![50, 80]);
        assert_eq!(b.crossed(PicoUsd(usd(10000).0 - 1)), vec![50, 80]);
        assert_eq!(b.crossed(usd(10000)), vec![50, 80, 100]);
        assert_eq!(b.state(usd(7999)), BudgetState::Ok);
        assert_eq!(b.state(usd(8000)), BudgetState::Warning);
        assert_eq!(b.state(usd(10000)), BudgetState::Exceeded);
        assert!((b.ratio(usd(2500)) - 0.25).abs() < 1e-12);
    }

    #[test]
    fn calendar_periods_in_a_time_zone() {
        let at = Utc.with_ymd_and_hms(2026, 3, 1, 2, 0, 0).unwrap(); // 2026-02-28 21:00 in New York
        let ny: Tz = "America/New_York".parse().unwrap();
        let (start, end) = Period::Month.bounds(at, ny);
        assert_eq!(start, Utc.with_ymd_and_hms(2026, 2, 1, 5, 0, 0).unwrap());
        assert_eq!(end, Utc.with_ymd_and_hms(2026, 3, 1, 5, 0, 0).unwrap());
        let (start, end) = Period::Week.bounds(Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap(), chrono_tz::UTC);
        assert_eq!((start.weekday(), end - start), (chrono::Weekday::Mon, Duration::days(7)));
        let (start, end) = Period::Day.bounds(Utc.with_ymd_and_hms(2026, 12, 31, 23, 0, 0).unwrap(), chrono_tz::UTC);
        assert_eq!(end - start, Duration::days(1));
        let (_, end) = Period::Month.bounds(Utc.with_ymd_and_hms(2026, 12, 15, 0, 0, 0).unwrap(), chrono_tz::UTC);
        assert_eq!(end, Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap());
    }

    #[test]
    fn alert_ids_are_stable_and_distinct() {
        let start = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
        assert_eq!(AlertId::budget("b", start, 80), AlertId::budget("b", start, 80));
        assert_ne!(AlertId::budget("b", start, 80), AlertId::budget("b", start, 100));
        assert_ne!(AlertId::budget("b", start, 80), AlertId::rule("b", "80", start.timestamp()));
        assert!(AlertId::budget("b", start, 80).0.starts_with("al_"));
    }

    #[test]
    fn a_scope_is_written_as_key_value_pairs() {
        assert_eq!(Scope::default().to_string(), "environment=prod,data_mode=real");
        let scope = Scope {
            tenant: Some("acme".into()),
            endpoint_tag: Some(TagMatch::parse("checkout.*")),
            prompt_version: Some(String::new()),
            environment: None,
            data_mode: None,
            ..Scope::default()
        };
        assert_eq!(scope.to_string(), "tenant=acme,endpoint_tag=checkout.*,prompt_version=");
        let any = Scope { environment: None, data_mode: None, ..Scope::default() };
        assert_eq!(any.to_string(), "*");
    }

    #[test]
    fn a_scope_covers_calls_on_every_dimension_it_fixes() {
        let call = Call {
            tenant: "acme".into(),
            endpoint_tag: "checkout.summary".into(),
            prompt_version: "v3".into(),
            provider: "openai".into(),
            model: "gpt-4o".into(),
            environment: "prod".into(),
            data_mode: DataMode::Real,
        };
        assert!(Scope::default().covers(&call));
        let acme_checkout = Scope {
            tenant: Some("acme".into()),
            endpoint_tag: Some(TagMatch::parse("checkout.*")),
            ..Scope::default()
        };
        assert!(acme_checkout.covers(&call));
        assert!(!acme_checkout.covers(&Call { tenant: "globex".into(), ..call.clone() }));
        assert!(!acme_checkout.covers(&Call { endpoint_tag: "search.rerank".into(), ..call.clone() }));
        assert!(!acme_checkout.covers(&Call { environment: "staging".into(), ..call.clone() }));
        assert!(!acme_checkout.covers(&Call { data_mode: DataMode::Test, ..call.clone() }));
        let untagged = Scope { prompt_version: Some(String::new()), ..Scope::default() };
        assert!(!untagged.covers(&call));
        assert!(untagged.covers(&Call { prompt_version: String::new(), ..call.clone() }));
        let any = Scope { environment: None, data_mode: None, ..Scope::default() };
        assert!(any.covers(&Call { environment: "dev".into(), data_mode: DataMode::Demo, ..call.clone() }));
        let model = Scope { provider: Some("openai".into()), model: Some("gpt-4o".into()), ..Scope::default() };
        assert!(model.covers(&call));
        assert!(!model.covers(&Call { model: "gpt-4o-mini".into(), ..call }));
    }

    #[test]
    fn tag_prefixes() {
        assert!(TagMatch::parse("checkout.*").matches("checkout.summary"));
        assert!(!TagMatch::parse("checkout.*").matches("search.rerank"));
        assert!(TagMatch::parse("checkout.summary").matches("checkout.summary"));
        assert!(!TagMatch::parse("checkout.summary").matches("checkout.summary2"));
    }
}
