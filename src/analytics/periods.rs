//! Reporting periods of the ranking tables (DOMAIN.md §4): calendar months, half-years and years in
//! China Standard Time, and rolling 30-day windows named after their last day.
//!
//! Days are numbered like the lake's `dt` partitions ([`crate::sink::parquet::parse_day`]: days since
//! 1970-01-01 of the CST date). A period covers the days `[start, end)`.

use chrono::{Datelike, NaiveDate};

use crate::sink::parquet::{format_day, parse_day};

/// Length of the rolling window.
pub const ROLLING_DAYS: i32 = 30;

/// One reporting period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Period {
    /// `2026-10`
    Month { year: i32, month: u32 },
    /// `2026-H2` (H1 = January–June)
    HalfYear { year: i32, half: u32 },
    /// `2026`
    Year { year: i32 },
    /// `2026-10-31`: the 30 days ending on (and including) that day.
    Rolling30 { last_day: i32 },
}

/// The kinds of period, as written in `period_type=` folders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeriodType {
    Month,
    HalfYear,
    Year,
    Rolling30,
}

impl PeriodType {
    pub const ALL: [PeriodType; 4] = [
        PeriodType::Month,
        PeriodType::HalfYear,
        PeriodType::Year,
        PeriodType::Rolling30,
    ];

    /// The `period_type=` value.
    pub fn name(self) -> &'static str {
        match self {
            PeriodType::Month => "month",
            PeriodType::HalfYear => "half_year",
            PeriodType::Year => "year",
            PeriodType::Rolling30 => "rolling_30d",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }
}

fn date(day: i32) -> Option<NaiveDate> {
    NaiveDate::default().checked_add_signed(chrono::Duration::days(i64::from(day)))
}

fn day_of(date: NaiveDate) -> i32 {
    i32::try_from(date.signed_duration_since(NaiveDate::default()).num_days()).unwrap_or(i32::MAX)
}

fn first_of(year: i32, month: u32) -> Option<i32> {
    NaiveDate::from_ymd_opt(year, month, 1).map(day_of)
}

impl Period {
    pub fn period_type(self) -> PeriodType {
        match self {
            Period::Month { .. } => PeriodType::Month,
            Period::HalfYear { .. } => PeriodType::HalfYear,
            Period::Year { .. } => PeriodType::Year,
            Period::Rolling30 { .. } => PeriodType::Rolling30,
        }
    }

    /// The period of a type that contains a day (for rolling windows: the one ending that day).
    pub fn containing(period_type: PeriodType, day: i32) -> Option<Self> {
        let d = date(day)?;
        Some(match period_type {
            PeriodType::Month => Period::Month {
                year: d.year(),
                month: d.month(),
            },
            PeriodType::HalfYear => Period::HalfYear {
                year: d.year(),
                half: if d.month() <= 6 { 1 } else { 2 },
            },
            PeriodType::Year => Period::Year { year: d.year() },
            PeriodType::Rolling30 => Period::Rolling30 { last_day: day },
        })
    }

    /// Parses the `period=` value of a period type (`2026-10`, `2026-H2`, `2026`, `2026-10-31`).
    pub fn parse(period_type: PeriodType, text: &str) -> Option<Self> {
        let year = |t: &str| {
            (t.len() == 4 && t.bytes().all(|b| b.is_ascii_digit()))
                .then(|| t.parse::<i32>().ok())
                .flatten()
        };
        match period_type {
            PeriodType::Month => {
                let (y, m) = text.split_once('-')?;
                let month: u32 = (m.len() == 2).then(|| m.parse().ok()).flatten()?;
                (1..=12).contains(&month).then_some(Period::Month {
                    year: year(y)?,
                    month,
                })
            }
            PeriodType::HalfYear => {
                let (y, h) = text.split_once('-')?;
                let half = match h {
                    "H1" => 1,
                    "H2" => 2,
                    _ => return None,
                };
                Some(Period::HalfYear {
                    year: year(y)?,
                    half,
                })
            }
            PeriodType::Year => Some(Period::Year { year: year(text)? }),
            PeriodType::Rolling30 => {
                let day = parse_day(text)?;
                // parse_day accepts `2026-1-5`; only the canonical spelling names a folder.
                (format_day(day) == text).then_some(Period::Rolling30 { last_day: day })
            }
        }
    }

    /// Parses `2026-10`, `2026-H2`, `2026` or `2026-10-31` without a type (a CLI `--period`).
    pub fn parse_any(text: &str) -> Option<Self> {
        PeriodType::ALL
            .into_iter()
            .find_map(|t| Self::parse(t, text))
    }

    /// The `period=` value.
    pub fn name(self) -> String {
        match self {
            Period::Month { year, month } => format!("{year:04}-{month:02}"),
            Period::HalfYear { year, half } => format!("{year:04}-H{half}"),
            Period::Year { year } => format!("{year:04}"),
            Period::Rolling30 { last_day } => format_day(last_day),
        }
    }

    /// First day and the day after the last: `[start, end)`.
    pub fn days(self) -> Option<(i32, i32)> {
        match self {
            Period::Month { year, month } => {
                let (ny, nm) = if month == 12 {
                    (year + 1, 1)
                } else {
                    (year, month + 1)
                };
                Some((first_of(year, month)?, first_of(ny, nm)?))
            }
            Period::HalfYear { year, half } => {
                let start = first_of(year, if half == 1 { 1 } else { 7 })?;
                let end = if half == 1 {
                    first_of(year, 7)?
                } else {
                    first_of(year + 1, 1)?
                };
                Some((start, end))
            }
            Period::Year { year } => Some((first_of(year, 1)?, first_of(year + 1, 1)?)),
            Period::Rolling30 { last_day } => Some((last_day - ROLLING_DAYS + 1, last_day + 1)),
        }
    }

    /// The period before (for "change since the previous period").
    pub fn previous(self) -> Self {
        match self {
            Period::Month { year, month: 1 } => Period::Month {
                year: year - 1,
                month: 12,
            },
            Period::Month { year, month } => Period::Month {
                year,
                month: month - 1,
            },
            Period::HalfYear { year, half: 1 } => Period::HalfYear {
                year: year - 1,
                half: 2,
            },
            Period::HalfYear { year, .. } => Period::HalfYear { year, half: 1 },
            Period::Year { year } => Period::Year { year: year - 1 },
            Period::Rolling30 { last_day } => Period::Rolling30 {
                last_day: last_day - ROLLING_DAYS,
            },
        }
    }

    /// The period after (whose "change since the previous period" depends on this one).
    pub fn next(self) -> Self {
        match self {
            Period::Month { year, month: 12 } => Period::Month {
                year: year + 1,
                month: 1,
            },
            Period::Month { year, month } => Period::Month {
                year,
                month: month + 1,
            },
            Period::HalfYear { year, half: 1 } => Period::HalfYear { year, half: 2 },
            Period::HalfYear { year, .. } => Period::HalfYear {
                year: year + 1,
                half: 1,
            },
            Period::Year { year } => Period::Year { year: year + 1 },
            Period::Rolling30 { last_day } => Period::Rolling30 {
                last_day: last_day + ROLLING_DAYS,
            },
        }
    }

    /// A number that grows by one from a period to the next of its type (months since year 0,
    /// half-years since year 0, the year, and for rolling windows the last day divided into 30-day
    /// steps), so that "K periods in a row" is a run of consecutive numbers.
    pub fn seq(self) -> i64 {
        match self {
            Period::Month { year, month } => i64::from(year) * 12 + i64::from(month) - 1,
            Period::HalfYear { year, half } => i64::from(year) * 2 + i64::from(half) - 1,
            Period::Year { year } => i64::from(year),
            Period::Rolling30 { last_day } => i64::from(last_day.div_euclid(ROLLING_DAYS)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> i32 {
        parse_day(text).unwrap()
    }

    #[test]
    fn periods_name_bound_and_step() {
        // (period, name, first day, day after the last, previous, next)
        let cases = [
            (
                Period::Month {
                    year: 2026,
                    month: 10,
                },
                "2026-10",
                "2026-10-01",
                "2026-11-01",
                "2026-09",
                "2026-11",
            ),
            (
                Period::Month {
                    year: 2026,
                    month: 1,
                },
                "2026-01",
                "2026-01-01",
                "2026-02-01",
                "2025-12",
                "2026-02",
            ),
            (
                Period::Month {
                    year: 2026,
                    month: 12,
                },
                "2026-12",
                "2026-12-01",
                "2027-01-01",
                "2026-11",
                "2027-01",
            ),
            (
                Period::HalfYear {
                    year: 2026,
                    half: 1,
                },
                "2026-H1",
                "2026-01-01",
                "2026-07-01",
                "2025-H2",
                "2026-H2",
            ),
            (
                Period::HalfYear {
                    year: 2026,
                    half: 2,
                },
                "2026-H2",
                "2026-07-01",
                "2027-01-01",
                "2026-H1",
                "2027-H1",
            ),
            (
                Period::Year { year: 2026 },
                "2026",
                "2026-01-01",
                "2027-01-01",
                "2025",
                "2027",
            ),
            (
                Period::Rolling30 {
                    last_day: day("2026-10-31"),
                },
                "2026-10-31",
                "2026-10-02",
                "2026-11-01",
                "2026-10-01",
                "2026-11-30",
            ),
        ];
        for (period, name, start, end, previous, next) in cases {
            assert_eq!(period.name(), name);
            assert_eq!(period.days(), Some((day(start), day(end))), "{name}");
            assert_eq!(period.previous().name(), previous, "{name}");
            assert_eq!(period.next().name(), next, "{name}");
            assert_eq!(period.next().seq(), period.seq() + 1, "{name}");
            assert_eq!(period.previous().seq(), period.seq() - 1, "{name}");
            assert_eq!(Period::parse(period.period_type(), name), Some(period));
            assert_eq!(Period::parse_any(name), Some(period));
        }
    }

    #[test]
    fn days_fall_in_their_periods() {
        for (text, month, half, year) in [
            ("2026-10-31", "2026-10", "2026-H2", "2026"),
            ("2026-07-01", "2026-07", "2026-H2", "2026"),
            ("2026-06-30", "2026-06", "2026-H1", "2026"),
            ("2024-02-29", "2024-02", "2024-H1", "2024"),
        ] {
            let d = day(text);
            for (t, expected) in [
                (PeriodType::Month, month),
                (PeriodType::HalfYear, half),
                (PeriodType::Year, year),
                (PeriodType::Rolling30, text),
            ] {
                let p = Period::containing(t, d).unwrap();
                assert_eq!(p.name(), expected);
                let (start, end) = p.days().unwrap();
                assert!(start <= d && d < end, "{text} in {expected}");
            }
        }
    }

    #[test]
    fn malformed_periods_are_refused() {
        for (t, text) in [
            (PeriodType::Month, "2026-13"),
            (PeriodType::Month, "2026-1"),
            (PeriodType::Month, "26-10"),
            (PeriodType::Month, "2026-10-01"),
            (PeriodType::HalfYear, "2026-H3"),
            (PeriodType::Year, "twenty"),
            (PeriodType::Year, "202"),
            (PeriodType::Rolling30, "2026-02-30"),
            (PeriodType::Rolling30, "2026-1-5"),
            (PeriodType::Month, ""),
        ] {
            assert_eq!(Period::parse(t, text), None, "{text}");
        }
        assert_eq!(Period::parse_any("2026-10; DROP"), None);
        assert_eq!(
            PeriodType::from_name("rolling_30d"),
            Some(PeriodType::Rolling30)
        );
        assert_eq!(PeriodType::from_name("week"), None);
    }
}
