//! A policy's periods ("2 working days", "7 natural days", "6 months") and the instant a period
//! ends.
//!
//! A period counts whole days in China Standard Time from the day its anchor falls on, and ends at
//! 24:00 CST of its last day: a bad review given on Friday 13 February 2026 at 18:00 with "2
//! working days" to be forwarded must be forwarded by the end of Tuesday 24 February.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Days, FixedOffset, Months, NaiveDate, Offset, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::calendar::{add_natural_days, Calendar, CalendarError};

/// How a period's days are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Only working days of the official calendar (工作日).
    WorkingDays,
    /// Every calendar day (自然日).
    NaturalDays,
    /// Calendar months (a complex case's ledger: "≤ 6 months").
    Months,
}

/// A period of a policy: a count and a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub count: u32,
    pub unit: Unit,
}

/// The text of a period that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "expected a period like \"2 working days\", \"7 natural days\" or \"6 months\" (a count of 0 \
     or more), got {0:?}"
)]
pub struct SpanError(String);

impl FromStr for Span {
    type Err = SpanError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || SpanError(text.to_owned());
        let mut words = text.split_whitespace();
        let count: u32 = words.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
        let unit = match (words.next(), words.next(), words.next()) {
            (Some("working"), Some("day" | "days"), None) => Unit::WorkingDays,
            (Some("natural"), Some("day" | "days"), None) => Unit::NaturalDays,
            (Some("month" | "months"), None, None) => Unit::Months,
            _ => return Err(bad()),
        };
        Ok(Span { count, unit })
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = if self.count == 1 { "" } else { "s" };
        match self.unit {
            Unit::WorkingDays => write!(f, "{} working day{plural}", self.count),
            Unit::NaturalDays => write!(f, "{} natural day{plural}", self.count),
            Unit::Months => write!(f, "{} month{plural}", self.count),
        }
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl Span {
    /// The last day of the period that starts on `day`.
    pub fn last_day(
        &self,
        calendar: &Calendar,
        day: NaiveDate,
    ) -> Result<NaiveDate, CalendarError> {
        match self.unit {
            Unit::WorkingDays => calendar.add_working_days(day, self.count),
            Unit::NaturalDays => add_natural_days(day, self.count),
            Unit::Months => day
                .checked_add_months(Months::new(self.count))
                .ok_or(CalendarError::OutOfRange),
        }
    }

    /// The instant (UTC microseconds) the period ends when its anchor is `from_us`: 24:00 CST of
    /// its last day.
    pub fn ends(&self, calendar: &Calendar, from_us: i64) -> Result<i64, CalendarError> {
        let day = DateTime::from_timestamp_micros(from_us)
            .ok_or(CalendarError::OutOfRange)?
            .with_timezone(&cst())
            .date_naive();
        let last = self.last_day(calendar, day)?;
        end_of_day(last)
    }
}

/// China Standard Time, in which the days of every period begin and end.
pub fn cst() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).unwrap_or_else(|| Utc.fix())
}

/// 24:00 CST of `day` (UTC microseconds).
pub fn end_of_day(day: NaiveDate) -> Result<i64, CalendarError> {
    day.checked_add_days(Days::new(1))
        .and_then(|next| next.and_hms_opt(0, 0, 0))
        .and_then(|midnight| cst().from_local_datetime(&midnight).single())
        .map(|end| end.timestamp_micros())
        .ok_or(CalendarError::OutOfRange)
}

/// `YYYY-MM` of an instant (UTC microseconds) in China Standard Time: the month a lake row counts in.
pub fn cst_month(us: i64) -> String {
    DateTime::from_timestamp_micros(us)
        .unwrap_or_default()
        .with_timezone(&cst())
        .format("%Y-%m")
        .to_string()
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

    #[test]
    fn periods_parse_and_print_back() {
        let cases = [
            (
                "2 working days",
                Some((2, Unit::WorkingDays)),
                "2 working days",
            ),
            (
                "1 working day",
                Some((1, Unit::WorkingDays)),
                "1 working day",
            ),
            (
                "7 natural days",
                Some((7, Unit::NaturalDays)),
                "7 natural days",
            ),
            (
                "  7   natural  days ",
                Some((7, Unit::NaturalDays)),
                "7 natural days",
            ),
            ("6 months", Some((6, Unit::Months)), "6 months"),
            (
                "0 working days",
                Some((0, Unit::WorkingDays)),
                "0 working days",
            ),
            ("-2 working days", None, ""),
            ("2 days", None, ""),
            ("2 working", None, ""),
            ("two working days", None, ""),
            ("2 working days later", None, ""),
            ("", None, ""),
            ("99999999999 natural days", None, ""),
        ];
        for (text, expected, printed) in cases {
            let parsed = text.parse::<Span>();
            match expected {
                Some((count, unit)) => {
                    let span = parsed.unwrap();
                    assert_eq!((span.count, span.unit), (count, unit), "{text:?}");
                    assert_eq!(span.to_string(), printed);
                }
                None => assert!(parsed
                    .unwrap_err()
                    .to_string()
                    .contains("expected a period")),
            }
        }
    }

    #[test]
    fn a_period_ends_at_midnight_china_time_of_its_last_day() {
        let calendar = Calendar::official();
        let at = |text: &str| {
            DateTime::parse_from_rfc3339(text)
                .unwrap()
                .timestamp_micros()
        };
        let span = |text: &str| text.parse::<Span>().unwrap();
        // (anchor, period, end)
        let cases = [
            // Friday before the Spring Festival 2026: Saturday 14 is worked, then 15–23 off.
            (
                "2026-02-13T18:00:00+08:00",
                "2 working days",
                "2026-02-25T00:00:00+08:00",
            ),
            (
                "2026-02-13T18:00:00+08:00",
                "7 natural days",
                "2026-02-21T00:00:00+08:00",
            ),
            // Late Tuesday UTC is already Wednesday in China.
            (
                "2026-11-24T17:30:00+00:00",
                "2 working days",
                "2026-11-28T00:00:00+08:00",
            ),
            (
                "2026-01-31T10:00:00+08:00",
                "1 month",
                "2026-03-01T00:00:00+08:00",
            ),
        ];
        for (anchor, period, end) in cases {
            assert_eq!(
                format_cst(span(period).ends(calendar, at(anchor)).unwrap()),
                end,
                "{anchor} + {period}"
            );
        }
        assert_eq!(
            span("3 working days").ends(calendar, at("2026-12-30T10:00:00+08:00")),
            Err(CalendarError::NoData { year: 2027 })
        );
    }
}
