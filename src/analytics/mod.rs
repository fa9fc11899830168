//! Analytics over the lake with DataFusion: the derived tables (rankings, warnings, hotspots,
//! fraud signals), the `exclusions` table they honour, and the session that reads them all.
//!
//! | module | what |
//! |---|---|
//! | [`session`] | registers every lake table (Hive partitions, fixed schemas, empty when absent) |
//! | [`sql`] | the SQL of `queries/`, compiled in, with `{{parameter}}` templates |
//! | [`periods`] | months, half-years, years and rolling 30 days |
//! | [`rankings`] | ranking tables per period, and `warnings` (连续排名靠后) |
//! | [`hotspots`] | bad-review concentrations per window, with their tags and complaint terms |
//! | [`terms`] | jieba segmentation and tag meanings for the "why" of a hotspot |
//! | [`fraud`] | 刷好评 bursts and 恶意差评 reviewers |
//! | [`closed_loop`] | each bad review's deadlines, steps, state, exclusions and overdue/escalation alerts |
//! | [`defaults`] | default evaluations of finished cases nobody evaluated, by region policy |
//! | [`exclusions`] | the `exclusions` table's writer |
//! | [`refresh`](refresh()) | brings every derived table up to date, touching only what new data changed |
//! | [`report`] | the monthly public notice (通报) |
//! | [`output`] | table / CSV / JSON / Parquet rendering |
//!
//! Derived tables live under `<lake>/tables/<name>/`; each file is written with one `put` (atomic
//! on a local folder and on object stores), so a reader sees the old file or the new one.

pub mod closed_loop;
pub mod defaults;
pub mod exclusions;
pub mod fraud;
pub mod hotspots;
pub mod output;
pub mod periods;
pub mod rankings;
pub mod report;
pub mod session;
pub mod sql;
pub mod state;
pub mod terms;

pub mod alerts;

use crate::lake::LakeRoot;

use crate::telemetry::analytics_step as step;

use arrow::array::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};

use crate::sink::parquet::{encode_parquet, TableError};

pub use session::{open, register_lake};

/// Errors of the analytics.
#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    /// Not a `source`: its text is already the one line worth printing.
    #[error("{}", one_line(.0))]
    Sql(DataFusionError),
    #[error(transparent)]
    Template(#[from] sql::TemplateError),
    #[error("writing a table: {0}")]
    Table(#[from] TableError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("lake store: {0}")]
    Store(#[from] object_store::Error),
    #[error(transparent)]
    Lake(#[from] crate::lake::LakeError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("refresh state {path}: {source}")]
    State {
        path: String,
        source: serde_json::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl From<DataFusionError> for AnalyticsError {
    fn from(error: DataFusionError) -> Self {
        AnalyticsError::Sql(error)
    }
}

/// A DataFusion error on one line: the innermost error (DataFusion wraps and repeats it), without
/// its category prefix, lines joined.
pub fn one_line(error: &DataFusionError) -> String {
    let text = match error.find_root() {
        // Its Display is the parser error's Debug form; the parser error's own Display reads well.
        DataFusionError::SQL(parser, _) => parser.to_string(),
        root => root.to_string(),
    };
    let mut text = text.as_str();
    for prefix in [
        "Error during planning: ",
        "Execution error: ",
        "SQL error: ",
    ] {
        text = text.strip_prefix(prefix).unwrap_or(text);
    }
    let line = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if line.is_empty() {
        "query failed".to_owned()
    } else {
        line
    }
}

/// The thresholds of the derived tables. Part of the refresh state: changing one rebuilds every
/// table on the next refresh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalyticsConfig {
    /// Evaluations an entity needs in a period to be ranked.
    pub min_evaluations: u32,
    /// "Bottom N" of the warnings.
    pub bottom_n: u32,
    /// Periods in a row at the bottom that make a warning.
    pub periods_in_row: u32,
    /// Bad reviews a window needs to be a hotspot (at least 2: one review is never a hotspot).
    pub hotspot_min_bad_reviews: u32,
    /// How many times the baseline bad rate a window's bad rate must reach.
    pub hotspot_min_lift: f64,
    /// Length of a burst slot, minutes.
    pub burst_minutes: u32,
    /// Top-level reviews in one slot that make a burst.
    pub burst_min_reviews: u32,
    /// At most this many evaluator keys behind a "few keys" burst.
    pub burst_max_keys: u32,
    /// Bad reviews of one evaluator in a month that make a signal…
    pub bad_min_reviews: u32,
    /// …across at least this many departments.
    pub bad_min_departments: u32,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            min_evaluations: 10,
            bottom_n: 3,
            periods_in_row: 3,
            hotspot_min_bad_reviews: 3,
            hotspot_min_lift: 2.0,
            burst_minutes: 10,
            burst_min_reviews: 10,
            burst_max_keys: 3,
            bad_min_reviews: 3,
            bad_min_departments: 2,
        }
    }
}

impl AnalyticsConfig {
    /// Checks the values that would make a table meaningless.
    pub fn check(&self) -> Result<(), AnalyticsError> {
        let fail = |m: &str| Err(AnalyticsError::Invalid(m.to_owned()));
        if self.min_evaluations == 0 {
            return fail("min_evaluations must be at least 1");
        }
        if self.bottom_n == 0 || self.periods_in_row == 0 {
            return fail("bottom_n and periods_in_row must be at least 1");
        }
        if self.hotspot_min_bad_reviews < 2 {
            return fail(
                "hotspot_min_bad_reviews must be at least 2 (one review is never a hotspot)",
            );
        }
        if !self.hotspot_min_lift.is_finite() || self.hotspot_min_lift < 1.0 {
            return fail("hotspot_min_lift must be a number of at least 1");
        }
        if self.burst_minutes == 0 || self.burst_minutes > 1440 {
            return fail("burst_minutes must be between 1 and 1440");
        }
        if self.burst_min_reviews < 2 || self.burst_max_keys == 0 {
            return fail("burst_min_reviews must be at least 2 and burst_max_keys at least 1");
        }
        if self.bad_min_reviews < 2 || self.bad_min_departments == 0 {
            return fail("bad_min_reviews must be at least 2 and bad_min_departments at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_checked() {
        let ok = AnalyticsConfig::default();
        assert!(ok.check().is_ok());
        let cases: Vec<(AnalyticsConfig, &str)> = vec![
            (
                AnalyticsConfig {
                    min_evaluations: 0,
                    ..ok.clone()
                },
                "min_evaluations",
            ),
            (
                AnalyticsConfig {
                    bottom_n: 0,
                    ..ok.clone()
                },
                "bottom_n",
            ),
            (
                AnalyticsConfig {
                    hotspot_min_bad_reviews: 1,
                    ..ok.clone()
                },
                "one review",
            ),
            (
                AnalyticsConfig {
                    hotspot_min_lift: f64::NAN,
                    ..ok.clone()
                },
                "hotspot_min_lift",
            ),
            (
                AnalyticsConfig {
                    hotspot_min_lift: 0.5,
                    ..ok.clone()
                },
                "hotspot_min_lift",
            ),
            (
                AnalyticsConfig {
                    burst_minutes: 0,
                    ..ok.clone()
                },
                "burst_minutes",
            ),
            (
                AnalyticsConfig {
                    burst_max_keys: 0,
                    ..ok.clone()
                },
                "burst_max_keys",
            ),
            (
                AnalyticsConfig {
                    bad_min_departments: 0,
                    ..ok.clone()
                },
                "bad_min_departments",
            ),
        ];
        for (config, needle) in cases {
            let error = config.check().unwrap_err().to_string();
            assert!(error.contains(needle), "{error}");
        }
    }

    #[test]
    fn datafusion_errors_become_one_line() {
        let cases = [
            (
                DataFusionError::Plan("table 'x' not found".into()),
                "table 'x' not found",
            ),
            (
                DataFusionError::Context(
                    "outer".into(),
                    Box::new(DataFusionError::Execution("a\nb".into())),
                ),
                "a b",
            ),
            (DataFusionError::Plan(String::new()), "query failed"),
        ];
        for (error, expected) in cases {
            assert_eq!(one_line(&error), expected);
        }
    }
}

/// Rows of a query as values of `T`, by column name: timestamps as UTC microseconds, nulls as
/// `None`. For the few rows the derived tables read into Rust (bad reviews, unevaluated cases).
pub fn deserialize_rows<T: serde::de::DeserializeOwned>(
    batches: &[RecordBatch],
) -> Result<Vec<T>, AnalyticsError> {
    let mut rows = Vec::new();
    for batch in batches {
        let columns = batch
            .columns()
            .iter()
            .map(|column| match column.data_type() {
                arrow::datatypes::DataType::Timestamp(..) => {
                    arrow::compute::cast(column, &arrow::datatypes::DataType::Int64)
                }
                _ => Ok(column.clone()),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let fields: Vec<arrow::datatypes::Field> = batch
            .schema()
            .fields()
            .iter()
            .zip(&columns)
            .map(|(f, c)| arrow::datatypes::Field::new(f.name(), c.data_type().clone(), true))
            .collect();
        let batch = RecordBatch::try_new(
            std::sync::Arc::new(arrow::datatypes::Schema::new(fields)),
            columns,
        )?;
        let mut writer = arrow::json::LineDelimitedWriter::new(Vec::new());
        writer.write(&batch)?;
        writer.finish()?;
        for line in writer.into_inner().split(|b| *b == b'\n') {
            if line.is_empty() {
                continue;
            }
            rows.push(serde_json::from_slice(line).map_err(|e| {
                AnalyticsError::Invalid(format!(
                    "a row does not read as {}: {e}",
                    std::any::type_name::<T>()
                ))
            })?);
        }
    }
    Ok(rows)
}

/// Runs one SQL text against a session and collects its rows.
pub async fn collect(
    ctx: &SessionContext,
    sql: &str,
) -> Result<(arrow::datatypes::SchemaRef, Vec<RecordBatch>), AnalyticsError> {
    let frame = ctx.sql(sql).await?;
    let schema = frame.schema().inner().clone();
    let batches = frame.collect().await?;
    Ok((schema, batches))
}

/// Runs one SQL text (the last statement's rows are returned) against a lake, with every table
/// registered.
pub async fn query_lake(
    lake_root: &LakeRoot,
    sql: &str,
) -> Result<Vec<RecordBatch>, DataFusionError> {
    let ctx = open(lake_root).await?;
    ctx.sql(sql).await?.collect().await
}

/// Runs a user's read-only SQL (no DDL, no DML, one statement).
pub async fn query_read_only(
    lake_root: &LakeRoot,
    sql: &str,
) -> Result<(arrow::datatypes::SchemaRef, Vec<RecordBatch>), AnalyticsError> {
    let ctx = open(lake_root).await?;
    let options = datafusion::execution::context::SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let frame = ctx.sql_with_options(sql, options).await?;
    let schema = frame.schema().inner().clone();
    Ok((schema, frame.collect().await?))
}

/// Puts one file of a derived table (a single put: readers see the old file or the new one).
pub async fn put_file(
    lake_root: &LakeRoot,
    relative: &str,
    schema: &arrow::datatypes::SchemaRef,
    batches: &[RecordBatch],
) -> Result<(), AnalyticsError> {
    let batch = arrow::compute::concat_batches(schema, batches)?;
    let bytes = encode_parquet(&batch, 3)?;
    Ok(lake_root.put(relative, bytes).await?)
}

/// What a refresh did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RefreshReport {
    /// Whether every period was rebuilt (first run, changed SQL or thresholds, changed exclusions).
    pub full: bool,
    /// Evaluation days (`dt`) whose files changed since the last refresh.
    pub touched_days: usize,
    /// Ranking periods rebuilt, as `period_type/period`.
    pub rankings_rebuilt: Vec<String>,
    /// Months whose fraud signals were rebuilt.
    pub fraud_months_rebuilt: Vec<String>,
    pub warnings: usize,
    pub hotspots: usize,
    /// Hotspot ids present now and not at the previous refresh (for `hotspot_opened` alerts).
    pub hotspots_opened: Vec<String>,
    /// Hotspot ids present at the previous refresh and not now (for `hotspot_closed` alerts).
    pub hotspots_closed: Vec<String>,
}

/// What [`refresh_all`] did: the derived tables, the default evaluations and the closed loop.
#[derive(Debug)]
pub struct FullRefresh {
    pub tables: RefreshReport,
    pub defaults: defaults::DefaultsReport,
    pub closed_loop: closed_loop::LoopReport,
}

/// Every derived table, then the default evaluations by region policy, then the closed loop of every
/// bad review; when the closed loop adds exclusions, the tables again (the exclusions change past
/// periods). What `ingest`'s rounds and `haochaping analyze` both run.
pub async fn refresh_all(
    lake_root: &LakeRoot,
    now_us: i64,
    config: &AnalyticsConfig,
    policies: &crate::policy::Policies,
) -> Result<FullRefresh, AnalyticsError> {
    let mut tables = refresh_with(lake_root, now_us, config).await?;
    let defaults = step("defaults", defaults::rebuild(lake_root, now_us, policies)).await?;
    let closed_loop = step(
        "closed_loop",
        closed_loop::rebuild(lake_root, now_us, policies),
    )
    .await?;
    if closed_loop.exclusions_added > 0 {
        tables = refresh_with(lake_root, now_us, config).await?;
        tables.full = true;
    }
    Ok(FullRefresh {
        tables,
        defaults,
        closed_loop,
    })
}

/// Brings every derived table of a local lake up to date with the default thresholds; `now_us`
/// (UTC microseconds) is the end of the hotspot windows. Meant to be called by `ingest` on a
/// schedule and by `haochaping analyze`.
pub async fn refresh(lake_root: &LakeRoot, now_us: i64) -> Result<RefreshReport, AnalyticsError> {
    refresh_with(lake_root, now_us, &AnalyticsConfig::default()).await
}

/// [`refresh`] with given thresholds.
///
/// 1. List the `evaluations` files (and `exclusions`) and compare them with the state of the last
///    refresh (`_haochaping/analytics/state.json`): the days (`dt`) of new, changed or removed files
///    are touched. No state, other SQL, other thresholds or other exclusions → everything is.
/// 2. Days of first evaluations whose supplementary arrived on a touched day are touched too (the
///    supplementary moved the case out of the first's period).
/// 3. Rebuild each ranking period containing a touched day and the period after it (its "change
///    since the previous period" moved), the rolling 30 days ending on the lake's last day, and the
///    rolling windows already written that cover a touched day; then the warnings, the touched months'
///    fraud signals and the hotspots.
/// 4. Save the state last: a crash before it repeats the work, never skips it.
pub async fn refresh_with(
    lake_root: &LakeRoot,
    now_us: i64,
    config: &AnalyticsConfig,
) -> Result<RefreshReport, AnalyticsError> {
    config.check()?;
    let ctx = open(lake_root).await?;
    let previous = state::RefreshState::load(lake_root).await?;
    let current = state::RefreshState::scan(lake_root, config).await?;
    let mut report = RefreshReport::default();
    let all_days = current.days();
    let mut touched = match &previous {
        Some(previous) if !current.needs_full_rebuild(previous) => current.touched_days(previous),
        _ => {
            report.full = true;
            all_days.clone()
        }
    };
    if !report.full && !touched.is_empty() {
        touched.extend(rankings::days_of_replaced_firsts(&ctx, &touched).await?);
    }
    report.touched_days = touched.len();
    let existing_rolling = rankings::existing_rolling(lake_root).await?;
    let periods = rankings::touched_periods(&touched, &all_days, &existing_rolling);
    step("rankings", async {
        for period in &periods {
            rankings::rebuild(&ctx, lake_root, *period, config).await?;
            report.rankings_rebuilt.push(format!(
                "{}/{}",
                period.period_type().name(),
                period.name()
            ));
        }
        Ok::<_, AnalyticsError>(())
    })
    .await?;
    // Warnings read the rankings just written: a new session lists them.
    let ctx = open(lake_root).await?;
    report.warnings = step(
        "warnings",
        rankings::rebuild_warnings(&ctx, lake_root, config),
    )
    .await?;
    step("fraud", async {
        for month in periods
            .iter()
            .filter(|p| p.period_type() == periods::PeriodType::Month)
        {
            fraud::rebuild(&ctx, lake_root, *month, config).await?;
            report.fraud_months_rebuilt.push(month.name());
        }
        Ok::<_, AnalyticsError>(())
    })
    .await?;
    let diff = step(
        "hotspots",
        hotspots::rebuild(&ctx, lake_root, now_us, config),
    )
    .await?;
    report.hotspots = diff.current;
    report.hotspots_opened = diff.opened;
    report.hotspots_closed = diff.closed;
    current.save(lake_root).await?;
    Ok(report)
}
