//! Ranking tables (`queries/rankings.sql`), one Parquet file per period at
//! `tables/rankings/period_type=<type>/period=<period>/data.parquet`, and the `warnings` table
//! (`queries/warnings.sql`) derived from them.

use crate::lake::LakeRoot;
use std::collections::BTreeSet;

use arrow::array::{AsArray, RecordBatch};
use datafusion::prelude::SessionContext;

use super::periods::{Period, PeriodType};
use super::session::{rankings_schema, table_dir, warnings_schema};
use super::sql::{literal, render, RANKINGS, WARNINGS};
use super::{collect, put_file, AnalyticsConfig, AnalyticsError};
use crate::sink::parquet::{format_day, parse_day};

/// The file of one period, relative to the lake root.
pub fn period_file(period: Period) -> String {
    format!(
        "tables/rankings/period_type={}/period={}/data.parquet",
        period.period_type().name(),
        period.name()
    )
}

/// The rankings SQL of one period, parameters filled.
pub fn period_sql(period: Period, config: &AnalyticsConfig) -> Result<String, AnalyticsError> {
    let (start, end) = period.days().ok_or_else(|| {
        AnalyticsError::Invalid(format!("period {} is out of range", period.name()))
    })?;
    let (previous_start, _) = period.previous().days().ok_or_else(|| {
        AnalyticsError::Invalid(format!("period before {} is out of range", period.name()))
    })?;
    Ok(render(
        RANKINGS,
        &[
            ("period_start", format_day(start)),
            ("period_end", format_day(end)),
            ("previous_start", format_day(previous_start)),
            ("period_first_day", format_day(start)),
            ("period_last_day", format_day(end - 1)),
            ("period_seq", period.seq().to_string()),
            ("min_evaluations", config.min_evaluations.to_string()),
        ],
    )?)
}

/// One period's ranking rows.
pub async fn compute(
    ctx: &SessionContext,
    period: Period,
    config: &AnalyticsConfig,
) -> Result<Vec<RecordBatch>, AnalyticsError> {
    let (_, batches) = collect(ctx, &period_sql(period, config)?).await?;
    batches
        .iter()
        .map(|b| conform(b, &rankings_schema()))
        .collect()
}

/// A query's batch with the columns of a table schema, in its order and types (nullability and
/// numeric widths differ between what SQL infers and what the table declares).
pub fn conform(
    batch: &RecordBatch,
    schema: &arrow::datatypes::SchemaRef,
) -> Result<RecordBatch, AnalyticsError> {
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            let column = batch.column_by_name(field.name()).ok_or_else(|| {
                AnalyticsError::Invalid(format!("query result has no column {}", field.name()))
            })?;
            Ok(arrow::compute::cast(column, field.data_type())?)
        })
        .collect::<Result<Vec<_>, AnalyticsError>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// Recomputes one period and replaces its file (removes it when the period has no rows).
pub async fn rebuild(
    ctx: &SessionContext,
    lake_root: &LakeRoot,
    period: Period,
    config: &AnalyticsConfig,
) -> Result<usize, AnalyticsError> {
    let batches = compute(ctx, period, config).await?;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let file = period_file(period);
    if rows == 0 {
        lake_root.delete(&file).await?;
    } else {
        put_file(lake_root, &file, &rankings_schema(), &batches).await?;
    }
    Ok(rows)
}

/// Last days of the rolling windows already written.
pub async fn existing_rolling(lake_root: &LakeRoot) -> Result<BTreeSet<i32>, AnalyticsError> {
    let folder = format!(
        "{}/period_type={}",
        table_dir("rankings"),
        PeriodType::Rolling30.name()
    );
    Ok(lake_root
        .child_folders(&folder)
        .await?
        .iter()
        .filter_map(|name| name.strip_prefix("period=").and_then(parse_day))
        .collect())
}

/// The periods to rebuild when the given days changed.
///
/// * Month, half-year, year: each period containing a touched day, and the period after it if the
///   lake has data from then on (its "change since the previous period" depends on this one).
/// * Rolling 30 days: the window ending on the lake's last day, and every window already written
///   whose 30 days or previous 30 days cover a touched day.
pub fn touched_periods(
    touched: &BTreeSet<i32>,
    all_days: &BTreeSet<i32>,
    existing_rolling: &BTreeSet<i32>,
) -> BTreeSet<Period> {
    let mut periods = BTreeSet::new();
    let Some(&last_day) = all_days.last() else {
        // No data at all: only windows already written can be touched (their data is gone).
        for &end in existing_rolling {
            if touched.iter().any(|d| (end - 59..=end).contains(d)) {
                periods.insert(Period::Rolling30 { last_day: end });
            }
        }
        return periods;
    };
    for &day in touched {
        for period_type in [PeriodType::Month, PeriodType::HalfYear, PeriodType::Year] {
            if let Some(period) = Period::containing(period_type, day) {
                periods.insert(period);
                let next = period.next();
                if next.days().is_some_and(|(start, _)| start <= last_day) {
                    periods.insert(next);
                }
            }
        }
    }
    if !touched.is_empty() {
        periods.insert(Period::Rolling30 { last_day });
    }
    for &end in existing_rolling {
        if touched
            .iter()
            .any(|d| (end - 2 * super::periods::ROLLING_DAYS + 1..=end).contains(d))
        {
            periods.insert(Period::Rolling30 { last_day: end });
        }
    }
    periods
}

/// Days of first evaluations whose supplementary evaluation lies on one of the given days (their
/// case moved to the supplementary's period, so the first's period changed too).
pub async fn days_of_replaced_firsts(
    ctx: &SessionContext,
    days: &BTreeSet<i32>,
) -> Result<BTreeSet<i32>, AnalyticsError> {
    if days.is_empty() {
        return Ok(BTreeSet::new());
    }
    let list = days
        .iter()
        .map(|d| literal(&format_day(*d)))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT DISTINCT f.dt FROM evaluations f \
         JOIN (SELECT project_no FROM evaluations WHERE assess_number = 2 AND dt IN ({list})) s \
         ON s.project_no = f.project_no WHERE f.assess_number = 1"
    );
    let (_, batches) = collect(ctx, &sql).await?;
    let mut found = BTreeSet::new();
    for batch in &batches {
        let column = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8)?;
        for value in column.as_string::<i32>().iter().flatten() {
            if let Some(day) = parse_day(value) {
                found.insert(day);
            }
        }
    }
    Ok(found)
}

/// The warnings SQL with its parameters.
pub fn warnings_sql(config: &AnalyticsConfig) -> Result<String, AnalyticsError> {
    Ok(render(
        WARNINGS,
        &[
            ("bottom_n", config.bottom_n.to_string()),
            ("periods_in_row", config.periods_in_row.to_string()),
        ],
    )?)
}

/// Recomputes the whole `warnings` table from `rankings` (`tables/warnings/data.parquet`).
pub async fn rebuild_warnings(
    ctx: &SessionContext,
    lake_root: &LakeRoot,
    config: &AnalyticsConfig,
) -> Result<usize, AnalyticsError> {
    let (_, batches) = collect(ctx, &warnings_sql(config)?).await?;
    let schema = warnings_schema();
    let batches = batches
        .iter()
        .map(|b| conform(b, &schema))
        .collect::<Result<Vec<_>, _>>()?;
    put_file(lake_root, "tables/warnings/data.parquet", &schema, &batches).await?;
    Ok(batches.iter().map(RecordBatch::num_rows).sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(t: &str) -> i32 {
        parse_day(t).unwrap()
    }

    fn names(periods: &BTreeSet<Period>) -> Vec<String> {
        periods
            .iter()
            .map(|p| format!("{}/{}", p.period_type().name(), p.name()))
            .collect()
    }

    #[test]
    fn touched_days_rebuild_their_periods_and_the_next() {
        let all: BTreeSet<i32> = ["2026-08-03", "2026-09-10", "2026-10-20"]
            .into_iter()
            .map(day)
            .collect();
        // (touched days, rolling windows already written, expected periods)
        let cases: &[(&[&str], &[&str], &[&str])] = &[
            (&[], &[], &[]),
            (
                &["2026-10-20"],
                &[],
                &[
                    "month/2026-10",
                    "half_year/2026-H2",
                    "year/2026",
                    "rolling_30d/2026-10-20",
                ],
            ),
            (
                // September's change moves October's "change since the previous period".
                &["2026-09-10"],
                &["2026-09-15", "2026-06-30"],
                &[
                    "month/2026-09",
                    "month/2026-10",
                    "half_year/2026-H2",
                    "year/2026",
                    "rolling_30d/2026-09-15",
                    "rolling_30d/2026-10-20",
                ],
            ),
            (
                // June: H1 changes, so does H2 (its previous half-year); July is rebuilt too
                // (the lake has later data), and comes out empty.
                &["2026-06-30"],
                &[],
                &[
                    "month/2026-06",
                    "month/2026-07",
                    "half_year/2026-H1",
                    "half_year/2026-H2",
                    "year/2026",
                    "rolling_30d/2026-10-20",
                ],
            ),
        ];
        for (touched, rolling, expected) in cases {
            let touched: BTreeSet<i32> = touched.iter().map(|t| day(t)).collect();
            let rolling: BTreeSet<i32> = rolling.iter().map(|t| day(t)).collect();
            let mut got = names(&touched_periods(&touched, &all, &rolling));
            got.sort();
            let mut expected: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
            expected.sort();
            assert_eq!(got, expected, "{touched:?}");
        }
    }

    #[test]
    fn sql_has_every_parameter() {
        let period = Period::Month {
            year: 2026,
            month: 10,
        };
        let sql = period_sql(period, &AnalyticsConfig::default()).unwrap();
        assert!(
            sql.contains("dt >= '2026-09-01' AND dt < '2026-11-01'"),
            "{sql}"
        );
        assert!(sql.contains("'2026-10-31'"));
        assert!(!sql.contains("{{"));
        assert!(warnings_sql(&AnalyticsConfig::default()).is_ok());
        assert_eq!(
            period_file(period),
            "tables/rankings/period_type=month/period=2026-10/data.parquet"
        );
    }
}
