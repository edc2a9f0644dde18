//! Alert rules other than budgets, as pure functions from aggregates (read from ClickHouse by
//! the adapter) to findings. Thresholds are configuration; the defaults do not fire on normal
//! traffic (the load generator's retry ratio is about 5 %, its hourly cost steady).

use std::collections::{BTreeMap, BTreeSet};

/// Something a rule found; the evaluator turns it into an alert unless the rule is cooling
/// down for this scope.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub rule: &'static str,
    /// What the finding is about, e.g. `endpoint=checkout.ai_summary`.
    pub scope: String,
    /// The measured value and the limit it broke (same unit).
    pub value: f64,
    pub limit: f64,
    pub summary: String,
}

/// Retry storm: an endpoint's retry ratio over a sliding window above `max_ratio`, with at
/// least `min_requests` requests in the window.
#[derive(Debug, Clone, Copy)]
pub struct RetryStorm {
    pub max_ratio: f64,
    pub min_requests: u64,
}

impl RetryStorm {
    /// `window`: endpoint → (requests, retries) over the sliding window.
    pub fn evaluate(&self, window: &BTreeMap<String, (u64, u64)>, window_secs: u64) -> Vec<Finding> {
        window
            .iter()
            .filter(|(_, &(requests, _))| requests >= self.min_requests && requests > 0)
            .filter_map(|(endpoint, &(requests, retries))| {
                let ratio = retries as f64 / requests as f64;
                (ratio > self.max_ratio).then(|| Finding {
                    rule: "retry_storm",
                    scope: format!("endpoint={endpoint}"),
                    value: ratio,
                    limit: self.max_ratio,
                    summary: format!(
                        "Retry storm on {endpoint}: {retries} retries for {requests} requests ({:.0}% > {:.0}%) in the last {} min",
                        ratio * 100.0,
                        self.max_ratio * 100.0,
                        window_secs / 60
                    ),
                })
            })
            .collect()
    }
}

/// An endpoint's cost in the last complete hour and in the trailing hours before it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HourlyCost {
    /// USD spent in the last complete hour.
    pub last: f64,
    /// Average USD per hour over the trailing hours that had traffic.
    pub trailing_average: f64,
    /// How many of the trailing hours had traffic.
    pub trailing_hours: u32,
}

/// Cost spike: an endpoint's cost in the last complete hour above `factor` × its average over
/// the trailing hours, and at least `min_cost_usd`. An endpoint is judged only once
/// `min_history_hours` of its trailing hours had traffic: the first hours of a history (a new
/// endpoint, a fresh deployment, the end of a gap in the data) are partial and would make a
/// low average, so every endpoint would look like a spike an hour later.
#[derive(Debug, Clone, Copy)]
pub struct CostSpike {
    pub factor: f64,
    pub min_cost_usd: f64,
    pub min_history_hours: u32,
}

impl CostSpike {
    pub fn evaluate(&self, hours: &BTreeMap<String, HourlyCost>) -> Vec<Finding> {
        hours
            .iter()
            .filter(|(_, h)| {
                h.trailing_hours >= self.min_history_hours
                    && h.trailing_average > 0.0
                    && h.last >= self.min_cost_usd
                    && h.last > self.factor * h.trailing_average
            })
            .map(|(endpoint, h)| Finding {
                rule: "cost_spike",
                scope: format!("endpoint={endpoint}"),
                value: h.last,
                limit: self.factor * h.trailing_average,
                summary: format!(
                    "Cost spike on {endpoint}: ${:.2} in the last hour, {:.1}× the trailing average of ${:.2} ({} hours)",
                    h.last,
                    h.last / h.trailing_average,
                    h.trailing_average,
                    h.trailing_hours
                ),
            })
            .collect()
    }
}

/// A (endpoint, prompt version, provider, model) combination.
pub type ModelUse = (String, String, String, String);

/// Config drift: a provider/model appears under an endpoint + prompt version that was already
/// served by other models. An endpoint + prompt version is judged only once it had traffic in
/// `min_history_hours` hours of the lookback: with a shorter history (a new prompt version, a
/// fresh deployment) a model it uses now and then, such as a fallback, may simply not have
/// shown up yet.
#[derive(Debug, Clone, Copy)]
pub struct ConfigDrift {
    pub min_history_hours: u32,
}

impl ConfigDrift {
    /// `recent`: the model uses of the current hours; `known`: those of the lookback, each with
    /// the hours (any identifier, e.g. their starts) it was seen in.
    pub fn evaluate<'a>(
        &self,
        recent: impl IntoIterator<Item = &'a ModelUse>,
        known: &BTreeMap<ModelUse, Vec<u32>>,
    ) -> Vec<Finding> {
        let mut version_hours: BTreeMap<(&str, &str), BTreeSet<u32>> = BTreeMap::new();
        for ((endpoint, version, _, _), hours) in known {
            version_hours.entry((endpoint, version)).or_default().extend(hours);
        }
        let judged = |endpoint: &str, version: &str| {
            version_hours.get(&(endpoint, version)).is_some_and(|hours| hours.len() >= self.min_history_hours as usize)
        };
        recent
            .into_iter()
            .filter(|usage| !known.contains_key(*usage) && judged(&usage.0, &usage.1))
            .map(|(endpoint, version, provider, model)| Finding {
                rule: "config_drift",
                scope: format!("endpoint={endpoint},prompt_version={version},model={provider}/{model}"),
                value: 1.0,
                limit: 0.0,
                summary: format!(
                    "Config drift: {provider}/{model} now serves {endpoint} prompt version {:?}, which other models served before",
                    version
                ),
            })
            .collect()
    }
}

/// Unpriced model seen: attempts counted with no price (cost 0), per provider/model.
pub fn unpriced_models(unpriced: &BTreeMap<(String, String), u64>) -> Vec<Finding> {
    unpriced
        .iter()
        .filter(|(_, &attempts)| attempts > 0)
        .map(|((provider, model), &attempts)| Finding {
            rule: "unpriced_model",
            scope: format!("model={provider}/{model}"),
            value: attempts as f64,
            limit: 0.0,
            summary: format!(
                "Unpriced model {provider}/{model}: {attempts} attempts counted at $0; add it to the price table"
            ),
        })
        .collect()
}

/// Scope of the alert that stands for the findings of a rule beyond its cap. Every other scope
/// is `key=value`, so it cannot collide with one.
pub const OTHERS_SCOPE: &str = "others";

/// How many of the capped scopes an aggregate alert names as examples, and how many characters
/// of each: the scopes are values senders choose, and the alert must stay small.
const OTHERS_EXAMPLES: usize = 5;
const EXAMPLE_CHARS: usize = 120;

/// Caps one rule's findings. Scopes are often values the senders choose (a model name, an
/// endpoint tag), so a burst of new ones must neither page once per value nor make the
/// evaluation's queries grow with their number.
///
/// `cooling`: the scopes of this rule that fired within the cooldown (possibly
/// [`OTHERS_SCOPE`]); they stay quiet, and each one but `others` uses up one of the `max`
/// alerts of its own the rule may have per cooldown. The remaining room goes to the findings
/// with the highest values (then by scope, so that the choice is stable); the findings beyond
/// it are counted in one finding with scope [`OTHERS_SCOPE`] (value: how many), unless that
/// one is cooling down too.
pub fn cap(findings: Vec<Finding>, cooling: &BTreeSet<String>, max: usize) -> Vec<Finding> {
    let Some(rule) = findings.first().map(|f| f.rule) else { return findings };
    let used = cooling.iter().filter(|scope| *scope != OTHERS_SCOPE).count();
    let mut fresh: Vec<Finding> = findings.into_iter().filter(|f| !cooling.contains(&f.scope)).collect();
    fresh.sort_by(|a, b| b.value.total_cmp(&a.value).then_with(|| a.scope.cmp(&b.scope)));
    let rest = fresh.split_off(max.saturating_sub(used).min(fresh.len()));
    if rest.is_empty() || cooling.contains(OTHERS_SCOPE) {
        return fresh;
    }
    let examples: Vec<String> = rest
        .iter()
        .take(OTHERS_EXAMPLES)
        .map(|f| {
            let mut scope: String = f.scope.chars().take(EXAMPLE_CHARS).collect();
            if scope.len() < f.scope.len() {
                scope.push('…');
            }
            scope
        })
        .collect();
    fresh.push(Finding {
        rule,
        scope: OTHERS_SCOPE.to_string(),
        value: rest.len() as f64,
        limit: max as f64,
        summary: format!(
            "{rule}: {} more scopes beyond the {max} alerted on their own per cooldown, e.g. {}",
            rest.len(),
            examples.join(", ")
        ),
    });
    fresh
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_storm_needs_ratio_and_volume() {
        let rule = RetryStorm { max_ratio: 0.5, min_requests: 100 };
        let window: BTreeMap<String, (u64, u64)> =
            [("a".into(), (200, 150)), ("b".into(), (50, 50)), ("c".into(), (1000, 60))].into();
        let findings = rule.evaluate(&window, 300);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].scope, "endpoint=a");
        assert!(findings[0].summary.contains("150 retries for 200 requests"));
    }

    #[test]
    fn cost_spike_against_trailing_average() {
        let rule = CostSpike { factor: 3.0, min_cost_usd: 1.0, min_history_hours: 6 };
        let h = |last, trailing_average, trailing_hours| HourlyCost { last, trailing_average, trailing_hours };
        let hours: BTreeMap<String, HourlyCost> = [
            ("a".into(), h(40.0, 10.0, 6)),
            ("b".into(), h(25.0, 10.0, 24)),
            ("c".into(), h(0.5, 0.1, 24)),
            ("d".into(), h(9.0, 0.0, 0)),
            ("e".into(), h(30.1, 10.0, 24)),
            // A history that starts inside its first hour: too short to judge.
            ("f".into(), h(60.0, 5.0, 5)),
        ]
        .into();
        let findings = rule.evaluate(&hours);
        let scopes: Vec<_> = findings.iter().map(|f| f.scope.as_str()).collect();
        assert_eq!(scopes, vec!["endpoint=a", "endpoint=e"]);
        assert_eq!((findings[0].value, findings[0].limit), (40.0, 30.0));
        assert!(
            findings[0].summary.contains("4.0× the trailing average of $10.00 (6 hours)"),
            "{}",
            findings[0].summary
        );
    }

    #[test]
    fn drift_only_under_known_prompt_versions() {
        let u = |e: &str, v: &str, p: &str, m: &str| (e.to_string(), v.to_string(), p.to_string(), m.to_string());
        // Six hours of history for e/v1 (over two models), five for young/v1.
        let known: BTreeMap<_, Vec<u32>> = [
            (u("e", "v1", "openai", "gpt-4o"), vec![1, 2, 3, 4]),
            (u("e", "v1", "openai", "gpt-4o-mini"), vec![3, 4, 5, 6]),
            (u("young", "v1", "openai", "gpt-4o"), vec![1, 2, 3, 4, 5]),
        ]
        .into();
        let recent: BTreeSet<_> = [
            u("e", "v1", "openai", "gpt-4o"),
            u("e", "v1", "anthropic", "claude"),
            u("e", "v2", "google", "g"),
            u("young", "v1", "anthropic", "claude"),
        ]
        .into();
        let findings = ConfigDrift { min_history_hours: 6 }.evaluate(&recent, &known);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].scope, "endpoint=e,prompt_version=v1,model=anthropic/claude");
    }

    #[test]
    fn findings_beyond_the_cap_are_counted_in_one() {
        let seen: BTreeMap<(String, String), u64> =
            (0..5_000u64).map(|i| (("acme".to_string(), format!("m{i:04}")), 1 + i % 7)).collect();
        let findings = cap(unpriced_models(&seen), &BTreeSet::new(), 3);
        let scopes: Vec<_> = findings.iter().map(|f| f.scope.as_str()).collect();
        // The highest counts first (7 is the most, for m0006, m0013, …), then the aggregate.
        assert_eq!(scopes, ["model=acme/m0006", "model=acme/m0013", "model=acme/m0020", "others"]);
        let others = &findings[3];
        assert_eq!((others.rule, others.value, others.limit), ("unpriced_model", 4_997.0, 3.0));
        assert!(others.summary.starts_with("unpriced_model: 4997 more scopes beyond the 3"), "{}", others.summary);
        assert_eq!(others.summary.matches("model=acme/").count(), 5, "{}", others.summary);

        // Two scopes alerted within the cooldown leave room for one more; `others` cooling down
        // stays quiet.
        let cooling: BTreeSet<String> = ["model=acme/m0006".into(), "model=acme/m0013".into()].into();
        let scopes: Vec<_> = cap(unpriced_models(&seen), &cooling, 3).into_iter().map(|f| f.scope).collect();
        assert_eq!(scopes, ["model=acme/m0020", "others"]);
        let cooling: BTreeSet<String> = cooling.into_iter().chain(["model=x".into(), OTHERS_SCOPE.into()]).collect();
        assert!(cap(unpriced_models(&seen), &cooling, 3).is_empty());

        // Under the cap nothing is aggregated; long scopes are cut in the examples.
        let long: BTreeMap<(String, String), u64> = [(("p".into(), "x".repeat(10_000)), 1)].into();
        assert_eq!(cap(unpriced_models(&long), &BTreeSet::new(), 1).len(), 1);
        let two: BTreeMap<(String, String), u64> =
            [(("p".into(), "a".into()), 2), (("p".into(), "é".repeat(10_000)), 1)].into();
        let capped = cap(unpriced_models(&two), &BTreeSet::new(), 1);
        assert_eq!(capped[1].scope, OTHERS_SCOPE);
        assert!(capped[1].summary.len() < 600, "{}", capped[1].summary.len());
    }

    #[test]
    fn unpriced_models_are_named() {
        let seen: BTreeMap<(String, String), u64> =
            [(("acme".into(), "x".into()), 3), (("a".into(), "y".into()), 0)].into();
        let findings = unpriced_models(&seen);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].scope, "model=acme/x");
    }
}
