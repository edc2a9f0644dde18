//! `costline report monthly`: spend per tenant × endpoint × provider/model for one calendar
//! month in a time zone, and its total, for finance.
//!
//! The month's bounds are instants: its first midnight in the zone and the next month's. The
//! report reads the coarsest rollup whose windows tile exactly that range, so the total is a
//! sum of whole windows and equals the same sum on any finer rollup:
//! `usage_day` when both bounds are UTC midnights (UTC, or a zone at UTC+0 then),
//! `usage_hour` when both are whole UTC hours (most zones, e.g. Europe/Berlin), `usage_minute`
//! otherwise (zones with a half- or quarter-hour offset, e.g. Asia/Kolkata). Costs are the
//! exact `Decimal(38, 12)` sums, so the line items add up to the total to the last digit.

use anyhow::Context;
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use costline_core::budget::Period;

use super::queries::Report;

/// The month `YYYY-MM` in `zone`, as `[start, end)` in UTC.
pub fn bounds(month: &str, zone: Tz) -> anyhow::Result<(DateTime<Utc>, DateTime<Utc>)> {
    let first = NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d")
        .ok()
        .filter(|_| month.len() == 7)
        .with_context(|| format!("--month must be a month like 2026-11, not {month:?}"))?;
    // Noon UTC on the 15th lies in that month in every zone (offsets stay within ±14 h).
    let mid_month =
        Utc.from_utc_datetime(&(first + chrono::Duration::days(14)).and_hms_opt(12, 0, 0).unwrap_or_default());
    Ok(Period::Month.bounds(mid_month, zone))
}

/// The rollup whose windows tile `[start, end)` with the fewest rows.
pub fn rollup_for(start: DateTime<Utc>, end: DateTime<Utc>) -> &'static str {
    let aligned = |secs: i64| start.timestamp() % secs == 0 && end.timestamp() % secs == 0;
    if aligned(86_400) {
        "usage_day"
    } else if aligned(3_600) {
        "usage_hour"
    } else {
        "usage_minute"
    }
}

/// The report: one `line_item` row per tenant, endpoint tag, provider and model with spend,
/// then one `total` row (its dimension columns empty).
pub fn report(month: &str, zone: Tz, traffic: &str) -> anyhow::Result<Report> {
    let (start, end) = bounds(month, zone)?;
    let table = rollup_for(start, end);
    let instant = |t: DateTime<Utc>| format!("toDateTime('{}', 'UTC')", t.format("%Y-%m-%d %H:%M:%S"));
    let filter = format!("window_start >= {} AND window_start < {}{traffic}", instant(start), instant(end));
    let measures = "sum(requests) AS requests, sum(attempts) AS attempts, sum(cost_usd) AS cost_usd";
    Ok(Report {
        title: "Spend per tenant, endpoint and model for a calendar month, and its total",
        sql: format!(
            "SELECT record_type, ? AS month, tenant, endpoint_tag, provider, model, requests, attempts, cost_usd FROM (\
             SELECT 'line_item' AS record_type, tenant, endpoint_tag, provider, model, {measures} \
             FROM {table} WHERE {filter} GROUP BY tenant, endpoint_tag, provider, model \
             UNION ALL SELECT 'total' AS record_type, '' AS tenant, '' AS endpoint_tag, '' AS provider, '' AS model, {measures} \
             FROM {table} WHERE {filter}) \
             ORDER BY record_type = 'total', cost_usd DESC, tenant, endpoint_tag, provider, model"
        ),
        params: vec![month.to_string()],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_month_is_bounded_by_its_midnights_in_the_zone() {
        assert_eq!(
            bounds("2026-12", chrono_tz::UTC).unwrap(),
            (utc("2026-12-01T00:00:00Z"), utc("2027-01-01T00:00:00Z"))
        );
        // Berlin: summer time until the last Sunday of October.
        let berlin = bounds("2026-10", chrono_tz::Europe::Berlin).unwrap();
        assert_eq!(berlin, (utc("2026-09-30T22:00:00Z"), utc("2026-10-31T23:00:00Z")));
        let kolkata = bounds("2026-02", chrono_tz::Asia::Kolkata).unwrap();
        assert_eq!(kolkata, (utc("2026-01-31T18:30:00Z"), utc("2026-02-28T18:30:00Z")));
        // Kiritimati (UTC+14) and Pago Pago (UTC-11): the 15th at noon UTC is still the month.
        let kiritimati = bounds("2026-03", chrono_tz::Pacific::Kiritimati).unwrap();
        assert_eq!(kiritimati.0, utc("2026-02-28T10:00:00Z"));
        let pago_pago = bounds("2026-03", chrono_tz::Pacific::Pago_Pago).unwrap();
        assert_eq!(pago_pago.0, utc("2026-03-01T11:00:00Z"));
    }

    #[test]
    fn the_coarsest_rollup_that_tiles_the_month_is_read() {
        let rollup = |month, zone| {
            let (start, end) = bounds(month, zone).unwrap();
            rollup_for(start, end)
        };
        assert_eq!(rollup("2026-09", chrono_tz::UTC), "usage_day");
        // London is at UTC+0 in January and February, at UTC+1 from the end of March.
        assert_eq!(rollup("2026-01", chrono_tz::Europe::London), "usage_day");
        assert_eq!(rollup("2026-03", chrono_tz::Europe::London), "usage_hour");
        assert_eq!(rollup("2026-09", chrono_tz::Europe::Berlin), "usage_hour");
        assert_eq!(rollup("2026-09", chrono_tz::Asia::Kolkata), "usage_minute");
        assert_eq!(rollup("2026-09", chrono_tz::Asia::Kathmandu), "usage_minute");
    }

    #[test]
    fn a_bad_month_is_refused() {
        for month in ["2026-13", "2026-1", "2026-09-01", "September"] {
            let err = bounds(month, chrono_tz::UTC).unwrap_err();
            assert!(err.to_string().starts_with("--month must be a month like 2026-11"), "{month}: {err}");
        }
    }
}
