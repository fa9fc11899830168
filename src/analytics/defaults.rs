//! Default evaluations (默认评价): a finished case that nobody evaluated gets its region's default
//! level once the policy's period has passed (DOMAIN.md §2): Fujian 满意 7 natural days after the
//! service (002 §5), Jilin 基本满意 (001 §10), Xuchang 基本满意 7 natural days after the case was
//! generated (003 制度 §9).
//!
//! The table is derived: every rebuild reads the finished cases without an evaluation
//! (`queries/unevaluated_cases.sql`), applies each one's policy ([`crate::policy`]) and the
//! working-day calendar, and writes the defaults that are due at `now` into
//! `tables/default_evaluations/month=YYYY-MM/` (the month, CST, the default was given in). A default
//! is given at the end of its period (24:00 CST of the last day), so the same lake and the same
//! `now` always give the same rows, and a replay gives the same answers. A real evaluation that
//! arrives later replaces the default at the next rebuild: the case has an evaluation then.
//!
//! A case whose period runs into a year the calendar has no data for gets no default yet (counted
//! as `undecidable`, never a guessed date).

use crate::lake::LakeRoot;
use std::collections::BTreeMap;

use serde::Serialize;

use super::session::{default_evaluations_schema, table_dir};
use super::{collect, open, put_file, sql, AnalyticsError};
use crate::policy::span::cst_month;
use crate::policy::{Calendar, DefaultLevel, PeriodStart, Policies};
use crate::region::RegionCode;

/// The table's name (a derived table under `tables/`).
pub const TABLE: &str = "default_evaluations";

/// What a rebuild did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DefaultsReport {
    /// Finished cases without any evaluation.
    pub unevaluated: usize,
    /// Of those, the ones whose period has passed: their default evaluations.
    pub defaults: usize,
    /// Cases whose period needs a year the working-day calendar has no data for.
    pub undecidable: usize,
}

/// One default evaluation; its fields are the columns of [`default_evaluations_schema`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DefaultEvaluation {
    pub project_no: String,
    pub satisfaction: i8,
    pub level_name: &'static str,
    pub channel: &'static str,
    pub is_default: bool,
    pub task_code: String,
    pub task_name: String,
    pub dept_code: String,
    pub dept_name: Option<String>,
    pub area_code: String,
    pub province_code: String,
    pub city_code: Option<String>,
    pub county_code: Option<String>,
    pub evaluator_key: Option<String>,
    pub period_from: &'static str,
    pub period: String,
    pub policy: String,
    pub period_started_at: i64,
    pub assessed_at: i64,
}

/// A finished case without an evaluation, as the query returns it (times in UTC microseconds).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct Unevaluated {
    pub project_no: String,
    pub task_code: String,
    pub task_name: String,
    pub dept_code: String,
    pub dept_name: Option<String>,
    pub area_code: String,
    pub province_code: String,
    pub city_code: Option<String>,
    pub county_code: Option<String>,
    pub applicant_key: Option<String>,
    #[serde(rename = "applied_at")]
    pub applied_at_us: Option<i64>,
    #[serde(rename = "finished_at")]
    pub finished_at_us: i64,
}

/// Why a case has no default evaluation yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotYet {
    /// The period ends at this instant, after `now`.
    Running { ends_at_us: i64 },
    /// The period runs into a year without calendar data.
    Undecidable(String),
}

/// The default evaluation of one case at `now_us`, or why there is none yet. Pure: the policy, the
/// calendar and the case decide everything.
pub fn default_for(
    case: &Unevaluated,
    policies: &Policies,
    calendar: &Calendar,
    now_us: i64,
) -> Result<DefaultEvaluation, NotYet> {
    let resolved = RegionCode::parse(&case.area_code).map_or_else(
        |_| policies.default_policy(),
        |code| policies.for_region(&code),
    );
    let rule = &resolved.policy.default_evaluation;
    let (from, started) = match rule.from {
        PeriodStart::ServiceFinished => ("service_finished", case.finished_at_us),
        // A case whose generation was never reported counts from its end: later, never earlier.
        PeriodStart::CaseGenerated => (
            "case_generated",
            case.applied_at_us.unwrap_or(case.finished_at_us),
        ),
    };
    let ends_at_us = rule
        .after
        .ends(calendar, started)
        .map_err(|e| NotYet::Undecidable(e.to_string()))?;
    if ends_at_us > now_us {
        return Err(NotYet::Running { ends_at_us });
    }
    Ok(DefaultEvaluation {
        project_no: case.project_no.clone(),
        satisfaction: rule.level.satisfaction() as i8,
        level_name: level_name(rule.level),
        channel: "system_default",
        is_default: true,
        task_code: case.task_code.clone(),
        task_name: case.task_name.clone(),
        dept_code: case.dept_code.clone(),
        dept_name: case.dept_name.clone(),
        area_code: case.area_code.clone(),
        province_code: case.province_code.clone(),
        city_code: case.city_code.clone(),
        county_code: case.county_code.clone(),
        evaluator_key: case.applicant_key.clone(),
        period_from: from,
        period: rule.after.to_string(),
        policy: resolved.files.last().cloned().unwrap_or_default(),
        period_started_at: started,
        assessed_at: ends_at_us,
    })
}

fn level_name(level: DefaultLevel) -> &'static str {
    match level {
        DefaultLevel::VerySatisfied => "非常满意",
        DefaultLevel::Satisfied => "满意",
        DefaultLevel::BasicallySatisfied => "基本满意",
    }
}

/// Rebuilds the `default_evaluations` table of a local lake as of `now_us`.
pub async fn rebuild(
    lake_root: &LakeRoot,
    now_us: i64,
    policies: &Policies,
) -> Result<DefaultsReport, AnalyticsError> {
    let ctx = open(lake_root).await?;
    let (_, batches) = collect(&ctx, sql::UNEVALUATED_CASES).await?;
    let calendar = Calendar::official();
    let mut report = DefaultsReport::default();
    let mut by_month: BTreeMap<String, Vec<DefaultEvaluation>> = BTreeMap::new();
    for case in super::deserialize_rows::<Unevaluated>(&batches)? {
        report.unevaluated += 1;
        match default_for(&case, policies, calendar, now_us) {
            Ok(default) => {
                report.defaults += 1;
                by_month
                    .entry(cst_month(default.assessed_at))
                    .or_default()
                    .push(default);
            }
            Err(NotYet::Running { .. }) => {}
            Err(NotYet::Undecidable(why)) => {
                if report.undecidable == 0 {
                    tracing::warn!(project_no = %case.project_no, %why, "no default evaluation: the working-day calendar does not cover its period");
                }
                report.undecidable += 1;
            }
        }
    }
    // Months that had defaults and have none now (their cases were evaluated since) are removed.
    for name in lake_root.child_folders(&table_dir(TABLE)).await? {
        if let Some(month) = name.strip_prefix("month=") {
            if !by_month.contains_key(month) {
                lake_root.delete(&file_path(month)).await?;
            }
        }
    }
    let schema = default_evaluations_schema();
    for (month, rows) in &by_month {
        let batch = crate::sink::parquet::serialize_rows(&schema, rows)?;
        put_file(lake_root, &file_path(month), &schema, &[batch]).await?;
    }
    Ok(report)
}

fn file_path(month: &str) -> String {
    format!(
        "{}/{TABLE}/month={month}/defaults.parquet",
        super::session::TABLES_FOLDER
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_micros()
    }

    fn case(area: &str, applied: Option<&str>, finished: &str) -> Unevaluated {
        Unevaluated {
            project_no: "P1".into(),
            task_code: "T".into(),
            task_name: "事项".into(),
            dept_code: "D".into(),
            dept_name: None,
            area_code: area.into(),
            province_code: area[..2].to_owned() + "0000",
            city_code: None,
            county_code: None,
            applicant_key: None,
            applied_at_us: applied.map(at),
            finished_at_us: at(finished),
        }
    }

    #[test]
    fn each_region_gets_its_level_after_its_period() {
        let policies = Policies::shipped().unwrap();
        let calendar = Calendar::official();
        let now = at("2026-12-20T00:00:00+08:00");
        // (area, generated, finished, level, given at)
        let cases = [
            // Fujian: 满意, 7 natural days after the service: finished 1 Dec 10:00 → end of 8 Dec.
            (
                "350102001001",
                None,
                "2026-12-01T10:00:00+08:00",
                4,
                "2026-12-09T00:00:00+08:00",
            ),
            // Jilin city: 基本满意, the same period.
            (
                "220204000000",
                None,
                "2026-12-01T10:00:00+08:00",
                3,
                "2026-12-09T00:00:00+08:00",
            ),
            // Xuchang: 基本满意, 7 natural days after the case was generated (28 Nov) → end of 5 Dec.
            (
                "411002000000",
                Some("2026-11-28T09:00:00+08:00"),
                "2026-12-01T10:00:00+08:00",
                3,
                "2026-12-06T00:00:00+08:00",
            ),
            // Xuchang without a reported generation: counted from the service, never earlier.
            (
                "411002000000",
                None,
                "2026-12-01T10:00:00+08:00",
                3,
                "2026-12-09T00:00:00+08:00",
            ),
            // A region with no file of its own: the default policy (基本满意).
            (
                "110101000000",
                None,
                "2026-12-01T10:00:00+08:00",
                3,
                "2026-12-09T00:00:00+08:00",
            ),
        ];
        for (area, applied, finished, level, given) in cases {
            let default = default_for(&case(area, applied, finished), &policies, calendar, now)
                .unwrap_or_else(|e| panic!("{area}: {e:?}"));
            assert_eq!(default.satisfaction, level, "{area}");
            assert_eq!(
                crate::policy::span::format_cst(default.assessed_at),
                given,
                "{area}"
            );
            assert_eq!(default.channel, "system_default");
        }
        // Not yet: Fujian's period ends at the end of 8 December.
        let running = default_for(
            &case("350102001001", None, "2026-12-01T10:00:00+08:00"),
            &policies,
            calendar,
            at("2026-12-08T23:59:59+08:00"),
        );
        assert_eq!(
            running,
            Err(NotYet::Running {
                ends_at_us: at("2026-12-09T00:00:00+08:00")
            })
        );
        // A period that needs 2027, which has no calendar yet, when the policy counts working days.
        let dir = tempfile::tempdir().unwrap();
        let default_toml = include_str!("../../deploy/policies/default.toml")
            .replace("after = \"7 natural days\"", "after = \"7 working days\"");
        std::fs::write(dir.path().join("default.toml"), default_toml).unwrap();
        let working = Policies::load_dir(dir.path()).unwrap();
        let undecidable = default_for(
            &case("110101000000", None, "2026-12-28T10:00:00+08:00"),
            &working,
            calendar,
            at("2027-02-01T00:00:00+08:00"),
        );
        assert!(matches!(undecidable, Err(NotYet::Undecidable(why)) if why.contains("2027")));
    }
}
