//! The forwarding deadline an alert carries: a bad review is forwarded to the evaluated department
//! within 2 working days (DOMAIN.md §3; 004 一(二)1).
//!
//! Until region policies and the official working-day calendar exist, a working day is Monday to
//! Friday: statutory holidays and make-up working days (调休) are not known here yet. The engine
//! takes the rule as a [`ForwardDeadline`] so a policy can replace it without touching the alerts.

use chrono::{DateTime, Datelike, Days, FixedOffset, NaiveDate, Offset, TimeZone, Utc, Weekday};

/// The deadline for forwarding a bad review given at an instant (UTC microseconds) → the instant
/// the deadline ends (UTC microseconds).
pub type ForwardDeadline = fn(i64) -> i64;

/// Working days allowed to forward a bad review by default.
pub const FORWARD_WORKING_DAYS: u32 = 2;

/// China Standard Time, in which days begin and end.
pub fn cst() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).unwrap_or_else(|| Utc.fix())
}

/// The default rule: the end (24:00 CST) of the [`FORWARD_WORKING_DAYS`]th working day after the
/// day the review was given.
pub fn default_forward_deadline(given_at_us: i64) -> i64 {
    let given = DateTime::from_timestamp_micros(given_at_us)
        .unwrap_or_default()
        .with_timezone(&cst());
    let last = add_weekdays(given.date_naive(), FORWARD_WORKING_DAYS);
    last.checked_add_days(Days::new(1))
        .and_then(|next| next.and_hms_opt(0, 0, 0))
        .and_then(|midnight| cst().from_local_datetime(&midnight).single())
        .map_or(given_at_us, |end| end.timestamp_micros())
}

/// The `n`th Monday-to-Friday day after `date` (`n` = 0 is `date` itself).
pub fn add_weekdays(date: NaiveDate, n: u32) -> NaiveDate {
    let mut day = date;
    let mut left = n;
    while left > 0 {
        day = day.succ_opt().unwrap_or(day);
        if !matches!(day.weekday(), Weekday::Sat | Weekday::Sun) {
            left -= 1;
        }
    }
    day
}

/// An instant (UTC microseconds) as RFC 3339 in China Standard Time (`2026-11-25T10:00:00+08:00`).
pub fn format_cst(us: i64) -> String {
    DateTime::from_timestamp_micros(us)
        .unwrap_or_default()
        .with_timezone(&cst())
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_micros()
    }

    #[test]
    fn two_working_days_end_at_midnight_china_time() {
        // (given, deadline) on real dates of November 2026 (Wed 25, Fri 27, Sat 28, Sun 29).
        let cases = [
            // Wednesday → end of Friday.
            ("2026-11-25T10:00:00+08:00", "2026-11-28T00:00:00+08:00"),
            // Thursday → end of Monday.
            ("2026-11-26T23:59:59+08:00", "2026-12-01T00:00:00+08:00"),
            // Friday → end of Tuesday.
            ("2026-11-27T09:00:00+08:00", "2026-12-02T00:00:00+08:00"),
            // Saturday and Sunday count from the weekend: end of Tuesday.
            ("2026-11-28T09:00:00+08:00", "2026-12-02T00:00:00+08:00"),
            ("2026-11-29T09:00:00+08:00", "2026-12-02T00:00:00+08:00"),
            // Given late on Tuesday UTC, already Wednesday in China: end of Friday.
            ("2026-11-24T17:30:00+00:00", "2026-11-28T00:00:00+08:00"),
        ];
        for (given, deadline) in cases {
            assert_eq!(
                format_cst(default_forward_deadline(at(given))),
                deadline,
                "given {given}"
            );
        }
    }

    #[test]
    fn weekdays_skip_weekends() {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert_eq!(add_weekdays(d("2026-11-27"), 0), d("2026-11-27"));
        assert_eq!(add_weekdays(d("2026-11-27"), 1), d("2026-11-30"));
        assert_eq!(add_weekdays(d("2026-11-27"), 5), d("2026-12-04"));
        assert_eq!(add_weekdays(d("2026-11-28"), 1), d("2026-11-30"));
    }
}
