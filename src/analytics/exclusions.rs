//! The `exclusions` table: reviews that the review procedure (复核) found mistaken (误评) or
//! malicious (恶意差评), which drop out of every rate and ranking, retroactively (DOMAIN.md §3).
//! Empty until the closed-loop workflow fills it; each call of [`append`] adds one file
//! (`tables/exclusions/<content hash>.parquet`), so the table only grows and a repeated call is a
//! no-op. The next refresh sees the changed listing and rebuilds every period.

use crate::lake::LakeRoot;
use std::sync::Arc;

use arrow::array::{Int8Array, RecordBatch, StringArray, TimestampMicrosecondArray};

use super::session::exclusions_schema;
use super::AnalyticsError;
use crate::sink::parquet::encode_parquet;

/// Why a review is excluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExclusionReason {
    /// 误评
    Mistaken,
    /// 恶意差评
    Malicious,
    Other,
}

impl ExclusionReason {
    pub fn code(self) -> &'static str {
        match self {
            ExclusionReason::Mistaken => "mistaken",
            ExclusionReason::Malicious => "malicious",
            ExclusionReason::Other => "other",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        [Self::Mistaken, Self::Malicious, Self::Other]
            .into_iter()
            .find(|r| r.code() == code)
    }
}

/// One excluded review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exclusion {
    pub project_no: String,
    /// 1 first, 2 supplementary.
    pub assess_number: i8,
    pub reason: ExclusionReason,
    /// When the review decided it, UTC microseconds.
    pub decided_at_us: i64,
}

/// The rows as a batch of the table's schema.
pub fn to_batch(rows: &[Exclusion]) -> Result<RecordBatch, AnalyticsError> {
    Ok(RecordBatch::try_new(
        exclusions_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.project_no.as_str()),
            )),
            Arc::new(Int8Array::from_iter_values(
                rows.iter().map(|r| r.assess_number),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.reason.code()),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.decided_at_us))
                    .with_timezone("UTC"),
            ),
        ],
    )?)
}

/// Adds exclusions to the lake as one new file named by its content.
pub async fn append(lake_root: &LakeRoot, rows: &[Exclusion]) -> Result<(), AnalyticsError> {
    if rows.is_empty() {
        return Ok(());
    }
    if let Some(bad) = rows.iter().find(|r| !(1..=2).contains(&r.assess_number)) {
        return Err(AnalyticsError::Invalid(format!(
            "exclusion of {}: assess_number must be 1 or 2",
            bad.project_no
        )));
    }
    let bytes = encode_parquet(&to_batch(rows)?, 3)?;
    let name = format!(
        "tables/exclusions/{:032x}.parquet",
        xxhash_rust::xxh3::xxh3_128(&bytes)
    );
    Ok(lake_root.put(&name, bytes).await?)
}
