//! `haochaping report --period 2026-10`: rebuilds that period's ranking rows from the lake (the same
//! rows for the same data, whenever it runs) and returns the public notice (通报): per department,
//! evaluations, good and bad rate and rank (`queries/notice.sql`).

use crate::lake::LakeRoot;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use super::periods::Period;
use super::sql::{literal, render, NOTICE};
use super::{collect, open, rankings, AnalyticsConfig, AnalyticsError};

/// A period's notice.
pub struct Notice {
    pub title: String,
    pub schema: SchemaRef,
    pub rows: Vec<RecordBatch>,
}

/// Parses a `--period` value: `2026-10`, `2026-H2`, `2026` or `2026-10-31` (rolling 30 days).
pub fn parse_period(text: &str) -> Result<Period, AnalyticsError> {
    Period::parse_any(text.trim()).ok_or_else(|| {
        AnalyticsError::Invalid(format!(
            "--period {text:?}: expected a month (2026-10), a half-year (2026-H2), a year (2026) \
             or the last day of a rolling 30 days (2026-10-31)"
        ))
    })
}

/// The notice SQL of a period.
pub fn notice_sql(period: Period) -> Result<String, AnalyticsError> {
    let quoted = |text: &str| {
        let l = literal(text);
        l[1..l.len() - 1].to_owned()
    };
    Ok(render(
        NOTICE,
        &[
            ("period_type", quoted(period.period_type().name())),
            ("period", quoted(&period.name())),
        ],
    )?)
}

/// Rebuilds the period's rankings and reads its notice back from the table.
pub async fn report(
    lake_root: &LakeRoot,
    period: Period,
    config: &AnalyticsConfig,
) -> Result<Notice, AnalyticsError> {
    config.check()?;
    let ctx = open(lake_root).await?;
    rankings::rebuild(&ctx, lake_root, period, config).await?;
    let ctx = open(lake_root).await?;
    let (schema, rows) = collect(&ctx, &notice_sql(period)?).await?;
    let (start, end) = period.days().unwrap_or_default();
    let title = format!(
        "政务服务好差评通报 {} ({} – {})：各部门好评率、差评率及排名。每件办件计一次（追加评价替代首次评价），经复核排除的评价不计；评价数不足 {} 的部门不排名。",
        period.name(),
        crate::sink::parquet::format_day(start),
        crate::sink::parquet::format_day(end - 1),
        config.min_evaluations
    );
    Ok(Notice {
        title,
        schema,
        rows,
    })
}
