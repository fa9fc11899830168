//! Mainland China's official working-day calendar: weekends, statutory holidays and the make-up
//! working days (调休) that turn a Saturday or Sunday into a working day.
//!
//! The calendar is data, one file per year in `deploy/calendar/` transcribed from the State
//! Council's notice, compiled into the binary. A year without a file is a [`CalendarError::NoData`]
//! naming the year: a deadline computed on a guessed calendar would be silently wrong for a week
//! around every Spring Festival.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use chrono::{Datelike, Days, NaiveDate, Weekday};
use serde::Deserialize;

/// The shipped years, oldest first.
const SHIPPED: &[(&str, &str)] = &[
    (
        "deploy/calendar/cn-2024.toml",
        include_str!("../../deploy/calendar/cn-2024.toml"),
    ),
    (
        "deploy/calendar/cn-2025.toml",
        include_str!("../../deploy/calendar/cn-2025.toml"),
    ),
    (
        "deploy/calendar/cn-2026.toml",
        include_str!("../../deploy/calendar/cn-2026.toml"),
    ),
];

/// Why a calendar question has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    #[error(
        "no official working-day calendar for {year}: add deploy/calendar/cn-{year}.toml from the \
         State Council's notice on {year}'s holidays"
    )]
    NoData { year: i32 },
    #[error("date out of range")]
    OutOfRange,
    #[error("{file}: {message}")]
    BadFile { file: String, message: String },
}

/// One year's notice as written in its file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct YearFile {
    year: i32,
    holiday: Vec<HolidayFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HolidayFile {
    name: String,
    /// First and last day off.
    off: [Day; 2],
    /// Weekend days worked instead.
    worked: Vec<Day>,
}

/// A `YYYY-MM-DD` date in a year file.
#[derive(Debug, Clone, Copy)]
struct Day(NaiveDate);

impl<'de> Deserialize<'de> for Day {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        NaiveDate::parse_from_str(&text, "%Y-%m-%d")
            .map(Day)
            .map_err(|e| {
                serde::de::Error::custom(format!("{text:?} is not a YYYY-MM-DD date: {e}"))
            })
    }
}

/// The days of one year that differ from the Monday-to-Friday rule.
#[derive(Debug, Default)]
struct Year {
    /// Weekdays (and weekend days) that are statutory holidays.
    off: BTreeSet<NaiveDate>,
    /// Saturdays and Sundays that are make-up working days.
    worked: BTreeSet<NaiveDate>,
}

/// The working-day calendar over the years it has data for.
#[derive(Debug, Default)]
pub struct Calendar {
    years: BTreeMap<i32, Year>,
}

impl Calendar {
    /// The calendar shipped with this build (2024–2026).
    pub fn official() -> &'static Calendar {
        static OFFICIAL: OnceLock<Calendar> = OnceLock::new();
        OFFICIAL.get_or_init(|| {
            // The shipped files are checked by `tests::the_shipped_years_parse`; a broken one is a
            // build defect, not an input, so it is reported on first use rather than carried along.
            Calendar::parse(SHIPPED).unwrap_or_else(|error| panic!("shipped calendar: {error}"))
        })
    }

    /// Parses year files (`(name, text)`), checking each: the year matches its dates, days off are
    /// in order and do not overlap, a make-up working day is a Saturday or Sunday and not also off.
    pub fn parse(files: &[(&str, &str)]) -> Result<Calendar, CalendarError> {
        let mut calendar = Calendar::default();
        for (file, text) in files {
            let bad = |message: String| CalendarError::BadFile {
                file: (*file).to_owned(),
                message,
            };
            let parsed: YearFile = toml::from_str(text).map_err(|e| bad(e.message().to_owned()))?;
            let mut year = Year::default();
            for holiday in &parsed.holiday {
                let [Day(first), Day(last)] = holiday.off;
                if first > last {
                    return Err(bad(format!("{}: off ends before it starts", holiday.name)));
                }
                for day in first.iter_days().take_while(|day| *day <= last) {
                    if day.year() != parsed.year {
                        return Err(bad(format!(
                            "{}: {day} is not in {}",
                            holiday.name, parsed.year
                        )));
                    }
                    if !year.off.insert(day) {
                        return Err(bad(format!("{}: {day} is off twice", holiday.name)));
                    }
                }
                for Day(day) in &holiday.worked {
                    if !is_weekend(*day) {
                        return Err(bad(format!(
                            "{}: make-up working day {day} is not a Saturday or Sunday",
                            holiday.name
                        )));
                    }
                    if day.year() != parsed.year {
                        return Err(bad(format!(
                            "{}: {day} is not in {}",
                            holiday.name, parsed.year
                        )));
                    }
                    year.worked.insert(*day);
                }
            }
            if let Some(both) = year.off.intersection(&year.worked).next() {
                return Err(bad(format!("{both} is both off and worked")));
            }
            if calendar.years.insert(parsed.year, year).is_some() {
                return Err(bad(format!("{} is given twice", parsed.year)));
            }
        }
        Ok(calendar)
    }

    /// The years this calendar knows.
    pub fn years(&self) -> impl Iterator<Item = i32> + '_ {
        self.years.keys().copied()
    }

    /// Whether `date` is a working day.
    pub fn is_working_day(&self, date: NaiveDate) -> Result<bool, CalendarError> {
        let year = self
            .years
            .get(&date.year())
            .ok_or(CalendarError::NoData { year: date.year() })?;
        Ok(if year.worked.contains(&date) {
            true
        } else {
            !year.off.contains(&date) && !is_weekend(date)
        })
    }

    /// The `n`th working day after `date` (`n` = 0 is `date` itself, working day or not): a review
    /// given on Friday 13 February 2026 with 3 working days to answer is due on Wednesday 25
    /// February, because Saturday 14 was worked and 15–23 were the Spring Festival.
    pub fn add_working_days(&self, date: NaiveDate, n: u32) -> Result<NaiveDate, CalendarError> {
        let mut day = date;
        let mut left = n;
        while left > 0 {
            day = day.succ_opt().ok_or(CalendarError::OutOfRange)?;
            if self.is_working_day(day)? {
                left -= 1;
            }
        }
        Ok(day)
    }
}

/// `date` plus `n` calendar days.
pub fn add_natural_days(date: NaiveDate, n: u32) -> Result<NaiveDate, CalendarError> {
    date.checked_add_days(Days::new(u64::from(n)))
        .ok_or(CalendarError::OutOfRange)
}

fn is_weekend(date: NaiveDate) -> bool {
    matches!(date.weekday(), Weekday::Sat | Weekday::Sun)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn the_shipped_years_parse() {
        let calendar = Calendar::parse(SHIPPED).unwrap();
        assert_eq!(calendar.years().collect::<Vec<_>>(), [2024, 2025, 2026]);
    }

    #[test]
    fn working_days_on_real_dates() {
        let calendar = Calendar::official();
        // (from, n, expected): each row is read off the State Council's notices.
        let cases = [
            // Spring Festival 2026: 15–23 February off, Saturdays 14 and 28 February worked.
            ("2026-02-13", 3, "2026-02-25"),
            ("2026-02-13", 1, "2026-02-14"),
            ("2026-02-14", 1, "2026-02-24"),
            ("2026-02-23", 1, "2026-02-24"),
            ("2026-02-27", 1, "2026-02-28"),
            ("2026-02-27", 2, "2026-03-02"),
            // 0 days is the day itself, even on a holiday.
            ("2026-02-16", 0, "2026-02-16"),
            // New Year 2026: 1–3 January off, Sunday 4 January worked.
            ("2025-12-31", 1, "2026-01-04"),
            ("2025-12-31", 2, "2026-01-05"),
            // National Day 2026: 1–7 October off, Sunday 20 September and Saturday 10 October worked.
            ("2026-09-18", 1, "2026-09-20"),
            ("2026-09-30", 1, "2026-10-08"),
            ("2026-10-09", 1, "2026-10-10"),
            ("2026-10-09", 2, "2026-10-12"),
            // National Day and Mid-Autumn 2025: 1–8 October off, 28 September and 11 October worked.
            ("2025-09-26", 1, "2025-09-28"),
            ("2025-09-30", 1, "2025-10-09"),
            // An ordinary week: Friday + 1 is Monday.
            ("2026-11-27", 1, "2026-11-30"),
            ("2026-11-27", 5, "2026-12-04"),
            // Spring Festival 2024: 10–17 February off, Sundays 4 and 18 February worked.
            ("2024-02-09", 1, "2024-02-18"),
        ];
        for (from, n, expected) in cases {
            assert_eq!(
                calendar.add_working_days(d(from), n),
                Ok(d(expected)),
                "{from} + {n} working days"
            );
        }
    }

    /// Every day of every shipped year against an independent transcription of the same notices,
    /// up to the last day that crate knows (2026-12-25; it panics past it).
    #[test]
    fn agrees_with_the_chinese_holiday_crate() {
        let calendar = Calendar::official();
        let last = d("2026-12-25");
        let mut checked = 0;
        for year in calendar.years() {
            let first = NaiveDate::from_ymd_opt(year, 1, 1).unwrap();
            for day in first
                .iter_days()
                .take_while(|day| day.year() == year && *day <= last)
            {
                let theirs = chinese_holiday::chinese_holiday(chinese_holiday::Ymd::new(
                    day.year() as u16,
                    day.month() as u8,
                    day.day() as u8,
                ));
                assert_eq!(
                    calendar.is_working_day(day),
                    Ok(theirs.is_workday()),
                    "{day}: chinese_holiday says {theirs:?}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 366 + 365 + 359);
    }

    #[test]
    fn natural_days_ignore_the_calendar() {
        assert_eq!(add_natural_days(d("2026-02-13"), 7), Ok(d("2026-02-20")));
        assert_eq!(add_natural_days(d("2026-12-30"), 7), Ok(d("2027-01-06")));
        assert_eq!(
            add_natural_days(NaiveDate::MAX, 1),
            Err(CalendarError::OutOfRange)
        );
    }

    #[test]
    fn a_year_without_data_is_an_error_naming_it() {
        let calendar = Calendar::official();
        // The last working days of 2026 run into 2027, which has no notice yet.
        assert_eq!(
            calendar.add_working_days(d("2026-12-30"), 3),
            Err(CalendarError::NoData { year: 2027 })
        );
        assert_eq!(
            calendar.is_working_day(d("2023-06-01")),
            Err(CalendarError::NoData { year: 2023 })
        );
        let message = CalendarError::NoData { year: 2027 }.to_string();
        assert!(
            message.contains("2027") && message.contains("cn-2027.toml"),
            "{message}"
        );
    }

    #[test]
    fn a_malformed_year_file_is_refused_with_its_name() {
        let cases = [
            ("year = 2026\nholiday = []\nextra = 1", "unknown field"),
            (
                "year = 2026\n[[holiday]]\nname = \"x\"\noff = [\"2026-01-03\", \"2026-01-01\"]\nworked = []",
                "ends before it starts",
            ),
            (
                "year = 2026\n[[holiday]]\nname = \"x\"\noff = [\"2025-12-31\", \"2026-01-01\"]\nworked = []",
                "is not in 2026",
            ),
            (
                // 2026-01-05 is a Monday.
                "year = 2026\n[[holiday]]\nname = \"x\"\noff = [\"2026-01-01\", \"2026-01-01\"]\nworked = [\"2026-01-05\"]",
                "not a Saturday or Sunday",
            ),
            (
                "year = 2026\n[[holiday]]\nname = \"x\"\noff = [\"2026-01-01\", \"2026-01-02\"]\nworked = []\n\
                 [[holiday]]\nname = \"y\"\noff = [\"2026-01-02\", \"2026-01-02\"]\nworked = []",
                "off twice",
            ),
            (
                "year = 2026\n[[holiday]]\nname = \"x\"\noff = [\"2026-13-01\", \"2026-01-02\"]\nworked = []",
                "",
            ),
        ];
        for (text, expected) in cases {
            let error = Calendar::parse(&[("cn-test.toml", text)])
                .unwrap_err()
                .to_string();
            assert!(
                error.starts_with("cn-test.toml: ") && error.contains(expected),
                "{text:?} → {error}"
            );
        }
    }
}
