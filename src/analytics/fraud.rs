//! The `fraud_signals` table (`queries/fraud_signals.sql`): suspected fake good reviews (刷好评)
//! and malicious bad reviewers (恶意差评), one file per month at
//! `tables/fraud_signals/period=<yyyy-mm>/data.parquet`, rebuilt when the month's data changes.

use crate::lake::LakeRoot;

use arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;

use super::periods::Period;
use super::rankings::conform;
use super::session::fraud_signals_schema;
use super::sql::{render, FRAUD_SIGNALS};
use super::{collect, put_file, AnalyticsConfig, AnalyticsError};
use crate::sink::parquet::format_day;

/// The file of one month, relative to the lake root.
pub fn month_file(month: Period) -> String {
    format!("tables/fraud_signals/period={}/data.parquet", month.name())
}

/// The fraud SQL of one period.
pub fn period_sql(period: Period, config: &AnalyticsConfig) -> Result<String, AnalyticsError> {
    let (start, end) = period.days().ok_or_else(|| {
        AnalyticsError::Invalid(format!("period {} is out of range", period.name()))
    })?;
    Ok(render(
        FRAUD_SIGNALS,
        &[
            ("period_start", format_day(start)),
            ("period_end", format_day(end)),
            ("burst_minutes", config.burst_minutes.to_string()),
            ("burst_min_reviews", config.burst_min_reviews.to_string()),
            ("burst_max_keys", config.burst_max_keys.to_string()),
            ("bad_min_reviews", config.bad_min_reviews.to_string()),
            (
                "bad_min_departments",
                config.bad_min_departments.to_string(),
            ),
        ],
    )?)
}

/// One period's signals, in the table's schema.
pub async fn compute(
    ctx: &SessionContext,
    period: Period,
    config: &AnalyticsConfig,
) -> Result<Vec<RecordBatch>, AnalyticsError> {
    let (_, batches) = collect(ctx, &period_sql(period, config)?).await?;
    batches
        .iter()
        .map(|b| conform(b, &fraud_signals_schema()))
        .collect()
}

/// Recomputes one month and replaces its file (removes it when the month has no signal).
pub async fn rebuild(
    ctx: &SessionContext,
    lake_root: &LakeRoot,
    month: Period,
    config: &AnalyticsConfig,
) -> Result<usize, AnalyticsError> {
    let batches = compute(ctx, month, config).await?;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let file = month_file(month);
    if rows == 0 {
        lake_root.delete(&file).await?;
    } else {
        put_file(lake_root, &file, &fraud_signals_schema(), &batches).await?;
    }
    Ok(rows)
}
