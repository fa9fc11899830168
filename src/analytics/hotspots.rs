//! The `hotspots` table (`queries/hotspots.sql`): bad-review concentrations over the 1 h, 24 h and
//! 7 d windows ending at the refresh time, each with its top tags and complaint terms. The table is
//! the current set, replaced whole at every refresh (`tables/hotspots/data.parquet`); the ids are
//! stable (entity type, entity id, window, rule), so [`diff`] of two refreshes names the hotspots
//! that opened and closed.

use crate::lake::LakeRoot;
use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, ListBuilder, RecordBatch, StringBuilder, TimestampMicrosecondArray,
};
use datafusion::prelude::SessionContext;

use super::session::hotspots_schema;
use super::sql::{render, timestamp, HOTSPOTS};
use super::terms::{describe_tag, describe_term, top_tags, top_terms};
use super::{collect, put_file, AnalyticsConfig, AnalyticsError};
use crate::sink::parquet::{cst_day, format_day};

/// The file of the table, relative to the lake root.
pub const HOTSPOTS_FILE: &str = "tables/hotspots/data.parquet";

/// Windows, by name and length in seconds.
pub const WINDOWS: [(&str, i64); 3] = [("1h", 3_600), ("24h", 86_400), ("7d", 7 * 86_400)];

/// The trailing period a window is compared with, seconds.
pub const BASELINE_SECONDS: i64 = 28 * 86_400;

/// Tags and terms kept per hotspot.
const TOP: usize = 5;

/// The hotspot SQL of one window ending at `as_of_us`.
pub fn window_sql(
    window: &str,
    seconds: i64,
    as_of_us: i64,
    config: &AnalyticsConfig,
) -> Result<String, AnalyticsError> {
    let window_start = as_of_us - seconds * 1_000_000;
    let baseline_start = window_start - BASELINE_SECONDS * 1_000_000;
    Ok(render(
        HOTSPOTS,
        &[
            ("window", window.to_owned()),
            ("window_start", timestamp(window_start)),
            ("baseline_start", timestamp(baseline_start)),
            ("as_of", timestamp(as_of_us)),
            ("first_day", format_day(cst_day(baseline_start))),
            ("last_day", format_day(cst_day(as_of_us))),
            (
                "min_bad_reviews",
                config.hotspot_min_bad_reviews.to_string(),
            ),
            ("min_lift", format!("{:?}", config.hotspot_min_lift)),
        ],
    )?)
}

/// Hotspot ids that appeared and disappeared between two refreshes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HotspotDiff {
    pub current: usize,
    pub opened: Vec<String>,
    pub closed: Vec<String>,
}

/// Compares the ids of two refreshes.
pub fn diff(previous: &BTreeSet<String>, current: &BTreeSet<String>) -> HotspotDiff {
    HotspotDiff {
        current: current.len(),
        opened: current.difference(previous).cloned().collect(),
        closed: previous.difference(current).cloned().collect(),
    }
}

/// Computes the hotspots as of a time (UTC microseconds).
pub async fn compute(
    ctx: &SessionContext,
    as_of_us: i64,
    config: &AnalyticsConfig,
) -> Result<Vec<RecordBatch>, AnalyticsError> {
    let mut out = Vec::new();
    for (window, seconds) in WINDOWS {
        let (_, batches) = collect(ctx, &window_sql(window, seconds, as_of_us, config)?).await?;
        for batch in &batches {
            out.push(finish(batch, as_of_us)?);
        }
    }
    Ok(out)
}

/// Adds the "why" (top tags with meanings, top complaint terms) and the refresh time to the SQL's
/// rows, in the table's schema.
fn finish(batch: &RecordBatch, refreshed_at_us: i64) -> Result<RecordBatch, AnalyticsError> {
    let schema = hotspots_schema();
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| AnalyticsError::Invalid(format!("hotspots query has no column {name}")))
    };
    let tags = column("window_tags")?.as_list_opt::<i32>().cloned();
    let texts = column("window_texts")?.as_list_opt::<i32>().cloned();
    let mut top_tag_list = ListBuilder::new(StringBuilder::new());
    let mut top_term_list = ListBuilder::new(StringBuilder::new());
    for row in 0..batch.num_rows() {
        let mut row_tags: Vec<String> = Vec::new();
        if let Some(lists) = tags.as_ref().filter(|l| l.is_valid(row)) {
            let per_review = lists.value(row);
            if let Some(per_review) = per_review.as_list_opt::<i32>() {
                for review in per_review.iter().flatten() {
                    if let Some(strings) = review.as_string_opt::<i32>() {
                        row_tags.extend(strings.iter().flatten().map(str::to_owned));
                    }
                }
            }
        }
        for (tag, count) in top_tags(row_tags.iter().map(String::as_str), TOP) {
            top_tag_list
                .values()
                .append_value(describe_tag(&tag, count));
        }
        top_tag_list.append(true);
        let mut row_texts: Vec<String> = Vec::new();
        if let Some(lists) = texts.as_ref().filter(|l| l.is_valid(row)) {
            let values = lists.value(row);
            if let Some(strings) = values.as_string_opt::<i32>() {
                row_texts.extend(strings.iter().flatten().map(str::to_owned));
            }
        }
        for (term, count) in top_terms(row_texts.iter().map(String::as_str), TOP) {
            top_term_list
                .values()
                .append_value(describe_term(&term, count));
        }
        top_term_list.append(true);
    }
    let top_tags: ArrayRef = Arc::new(top_tag_list.finish());
    let top_terms: ArrayRef = Arc::new(top_term_list.finish());
    let refreshed: ArrayRef = Arc::new(
        TimestampMicrosecondArray::from(vec![refreshed_at_us; batch.num_rows()])
            .with_timezone("UTC"),
    );
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            let source = match field.name().as_str() {
                "top_tags" => top_tags.clone(),
                "top_terms" => top_terms.clone(),
                "refreshed_at" => refreshed.clone(),
                name => column(name)?.clone(),
            };
            // Lists built above carry a nullable item field like the schema's; cast aligns the rest.
            Ok(arrow::compute::cast(&source, field.data_type())?)
        })
        .collect::<Result<Vec<_>, AnalyticsError>>()?;
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// Hotspot ids in the table now.
pub async fn current_ids(ctx: &SessionContext) -> Result<BTreeSet<String>, AnalyticsError> {
    let (_, batches) = collect(ctx, "SELECT hotspot_id FROM hotspots").await?;
    let mut ids = BTreeSet::new();
    for batch in &batches {
        if let Some(strings) = batch.column(0).as_string_opt::<i32>() {
            ids.extend(strings.iter().flatten().map(str::to_owned));
        }
    }
    Ok(ids)
}

/// Recomputes the table as of a time and replaces it; returns which ids opened and closed.
pub async fn rebuild(
    ctx: &SessionContext,
    lake_root: &LakeRoot,
    as_of_us: i64,
    config: &AnalyticsConfig,
) -> Result<HotspotDiff, AnalyticsError> {
    let previous = current_ids(ctx).await?;
    let batches = compute(ctx, as_of_us, config).await?;
    let mut current = BTreeSet::new();
    for batch in &batches {
        if let Some(ids) = batch.column(0).as_string_opt::<i32>() {
            current.extend(ids.iter().flatten().map(str::to_owned));
        }
    }
    put_file(lake_root, HOTSPOTS_FILE, &hotspots_schema(), &batches).await?;
    Ok(diff(&previous, &current))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_names_opened_and_closed() {
        let set = |ids: &[&str]| ids.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
        // (before, after, opened, closed)
        type Case<'a> = (&'a [&'a str], &'a [&'a str], &'a [&'a str], &'a [&'a str]);
        let cases: &[Case] = &[
            (&[], &[], &[], &[]),
            (&[], &["a"], &["a"], &[]),
            (&["a"], &[], &[], &["a"]),
            (&["a", "b"], &["b", "c"], &["c"], &["a"]),
        ];
        for (before, after, opened, closed) in cases {
            let d = diff(&set(before), &set(after));
            assert_eq!(d.opened, set(opened).into_iter().collect::<Vec<_>>());
            assert_eq!(d.closed, set(closed).into_iter().collect::<Vec<_>>());
            assert_eq!(d.current, after.len());
        }
    }

    #[test]
    fn window_sql_bounds() {
        // 2026-10-20 10:00 CST = 02:00 UTC.
        let as_of = 1_792_461_600_000_000;
        let sql = window_sql("24h", 86_400, as_of, &AnalyticsConfig::default()).unwrap();
        assert!(sql.contains("'2026-10-19T02:00:00.000000Z'"), "{sql}");
        assert!(
            sql.contains("dt >= '2026-09-21' AND dt <= '2026-10-20'"),
            "{sql}"
        );
        assert!(sql.contains("bad_reviews >= 3"));
        assert!(sql.contains(":24h:bad_review_concentration"));
    }
}
