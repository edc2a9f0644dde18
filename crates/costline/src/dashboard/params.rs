//! The dashboard's query parameters, checked before anything is read: a period of whole UTC
//! hours, the traffic filters, and for the prompt versions an endpoint and a split inside the
//! period. Every refusal is one sentence that names the parameter; the handlers answer it 400.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use costline_clickhouse::dashboard_store::DashboardFilter;
use costline_core::budget::{Scope, TagMatch};
use costline_core::event::DataMode;
use serde::Deserialize;

/// Length of the default period, ending with the current hour.
const DEFAULT_HOURS: i64 = 48;
/// Longest period: the hourly chart stays at most 744 bars.
const MAX_DAYS: i64 = 31;
const DEFAULT_TOP: u32 = 8;
const MAX_TOP: u32 = 20;
/// The value of a filter that lets every value through.
pub const ANY: &str = "*";

/// `GET /v1/dashboard`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverviewParams {
    from: Option<String>,
    to: Option<String>,
    environment: Option<String>,
    data_mode: Option<String>,
    top: Option<u32>,
}

/// `GET /v1/dashboard/prompt-versions`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionsParams {
    from: Option<String>,
    to: Option<String>,
    environment: Option<String>,
    data_mode: Option<String>,
    endpoint: Option<String>,
    split: Option<String>,
}

/// A checked overview request.
#[derive(Debug)]
pub struct Overview {
    pub filter: DashboardFilter,
    /// Endpoints shown apart in the stacked chart; the others are summed as one.
    pub top: u32,
}

/// A checked prompt-versions request: the filter's scope names the endpoint.
#[derive(Debug)]
pub struct Versions {
    pub filter: DashboardFilter,
    pub endpoint: String,
    /// Epoch seconds, a whole hour inside the period.
    pub split: i64,
}

impl OverviewParams {
    pub fn check(self, now: i64) -> Result<Overview, String> {
        let filter = filter(self.from, self.to, self.environment, self.data_mode, now)?;
        let top = self.top.unwrap_or(DEFAULT_TOP);
        if !(1..=MAX_TOP).contains(&top) {
            return Err(format!("`top` must be between 1 and {MAX_TOP}, not {top}"));
        }
        Ok(Overview { filter, top })
    }
}

impl VersionsParams {
    pub fn check(self, now: i64) -> Result<Versions, String> {
        let mut filter = filter(self.from, self.to, self.environment, self.data_mode, now)?;
        let endpoint =
            self.endpoint.ok_or("`endpoint` is required: the endpoint tag whose prompt versions to compare")?;
        if !(1..=128).contains(&endpoint.chars().count()) {
            return Err("`endpoint` must be 1 to 128 characters".into());
        }
        let split = instant(
            "split",
            &self.split.ok_or("`split` is required: the date or hour that splits before from after")?,
        )?;
        if split <= filter.from || split >= filter.to {
            return Err(format!(
                "`split` ({}) must fall inside the period, after `from` ({}) and before `to` ({})",
                rfc3339(split),
                rfc3339(filter.from),
                rfc3339(filter.to)
            ));
        }
        filter.scope.endpoint_tag = Some(TagMatch::Exact(endpoint.clone()));
        Ok(Versions { filter, endpoint, split })
    }
}

fn filter(
    from: Option<String>,
    to: Option<String>,
    environment: Option<String>,
    data_mode: Option<String>,
    now: i64,
) -> Result<DashboardFilter, String> {
    let to = match to {
        Some(to) => instant("to", &to)?,
        None => now.div_euclid(3600) * 3600 + 3600,
    };
    let from = match from {
        Some(from) => instant("from", &from)?,
        None => to - DEFAULT_HOURS * 3600,
    };
    if from >= to {
        return Err(format!("`from` ({}) must be before `to` ({})", rfc3339(from), rfc3339(to)));
    }
    if to - from > MAX_DAYS * 86_400 {
        return Err(format!("the period from `from` to `to` must be at most {MAX_DAYS} days"));
    }
    let environment = match environment.as_deref() {
        None => Some("prod".to_string()),
        Some(ANY) => None,
        Some(e) if (1..=32).contains(&e.chars().count()) => Some(e.to_string()),
        Some(_) => return Err(format!("`environment` must be `{ANY}` (any) or 1 to 32 characters")),
    };
    let data_mode = match data_mode.as_deref() {
        None => Some(DataMode::Real),
        Some(ANY) => None,
        Some(m) => Some(
            DataMode::parse(m)
                .ok_or_else(|| format!("`data_mode` must be one of real, test, demo or `{ANY}` (any), not {m:?}"))?,
        ),
    };
    let scope = Scope { environment, data_mode, ..Scope::default() };
    Ok(DashboardFilter { from, to, scope })
}

/// A date (`2026-11-01`, its midnight UTC) or an RFC 3339 time on a whole hour, as epoch
/// seconds.
fn instant(name: &str, text: &str) -> Result<i64, String> {
    let seconds = match NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        Ok(day) => day.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp()),
        Err(_) => DateTime::parse_from_rfc3339(text).ok().map(|t| t.timestamp()),
    };
    let seconds = seconds.ok_or_else(|| {
        format!("`{name}` must be a date (2026-11-01) or an RFC 3339 time (2026-11-01T13:00:00Z), not {text:?}")
    })?;
    if seconds % 3600 != 0 {
        return Err(format!("`{name}` must be a whole hour (the dashboard reads hourly rollups), not {text:?}"));
    }
    Ok(seconds)
}

/// Epoch seconds as `2026-11-01T13:00:00Z`.
pub fn rfc3339(seconds: i64) -> String {
    DateTime::<Utc>::from_timestamp(seconds, 0)
        .map_or_else(String::new, |t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_793_534_400 + 1800; // 2026-11-01T12:30:00Z

    /// Parses `query` as the handlers' extractor does.
    fn parse<T: serde::de::DeserializeOwned>(query: &str) -> Result<T, String> {
        let uri: axum::http::Uri = format!("/?{query}").parse().map_err(|e| format!("{e}"))?;
        axum::extract::Query::try_from_uri(&uri).map(|q| q.0).map_err(|e| e.body_text())
    }

    fn overview(query: &str) -> Result<Overview, String> {
        parse::<OverviewParams>(query)?.check(NOW)
    }

    fn versions(query: &str) -> Result<Versions, String> {
        parse::<VersionsParams>(query)?.check(NOW)
    }

    #[test]
    fn defaults_are_the_last_48_hours_of_real_prod_traffic() {
        let o = overview("").unwrap();
        assert_eq!(
            (rfc3339(o.filter.from), rfc3339(o.filter.to)),
            ("2026-10-30T13:00:00Z".into(), "2026-11-01T13:00:00Z".into())
        );
        assert_eq!(o.filter.scope, Scope::default());
        assert_eq!(o.top, DEFAULT_TOP);
    }

    #[test]
    fn filters_take_any_value_with_a_star() {
        let o = overview("environment=*&data_mode=*&from=2026-10-01&to=2026-10-02T05:00:00%2B02:00&top=3").unwrap();
        assert_eq!((o.filter.scope.environment, o.filter.scope.data_mode, o.top), (None, None, 3));
        assert_eq!(
            (rfc3339(o.filter.from), rfc3339(o.filter.to)),
            ("2026-10-01T00:00:00Z".into(), "2026-10-02T03:00:00Z".into())
        );
        let o = overview("environment=staging&data_mode=test").unwrap();
        assert_eq!(
            (o.filter.scope.environment.as_deref(), o.filter.scope.data_mode),
            (Some("staging"), Some(DataMode::Test))
        );
    }

    #[test]
    fn bad_parameters_are_refused_with_their_name() {
        for (query, words) in [
            ("from=yesterday", "`from` must be a date"),
            ("to=2026-11-01T12:30:00Z", "`to` must be a whole hour"),
            ("from=2026-11-01&to=2026-11-01", "must be before `to`"),
            ("from=2026-09-01&to=2026-11-01", "at most 31 days"),
            ("data_mode=prod", "`data_mode` must be one of real, test, demo"),
            ("environment=", "`environment` must be"),
            ("top=0", "`top` must be between 1 and 20"),
            ("top=many", "top"),
            ("colour=red", "unknown field `colour`"),
        ] {
            let err = overview(query).unwrap_err();
            assert!(err.contains(words), "{query}: {err}");
        }
        for (query, words) in [
            ("split=2026-11-01T06:00:00Z", "`endpoint` is required"),
            ("endpoint=a", "`split` is required"),
            ("endpoint=a&split=2026-10-01", "must fall inside the period"),
            ("endpoint=a&split=2026-10-30T13:00:00Z", "must fall inside the period"),
            ("endpoint=&split=2026-11-01", "`endpoint` must be 1 to 128"),
        ] {
            let err = versions(query).unwrap_err();
            assert!(err.contains(words), "{query}: {err}");
        }
    }

    #[test]
    fn the_endpoint_is_a_bound_exact_value() {
        let v = versions("endpoint=x%3F%27%29%3B+DROP+TABLE+t&split=2026-11-01&data_mode=*").unwrap();
        assert_eq!(v.endpoint, "x?'); DROP TABLE t");
        assert_eq!(v.filter.scope.endpoint_tag, Some(TagMatch::Exact("x?'); DROP TABLE t".into())));
        assert_eq!(rfc3339(v.split), "2026-11-01T00:00:00Z");
    }
}
