//! `recent_bad_reviews`: the bad reviews the rules look back on, a few columns each, held as Arrow
//! batches (what DataFusion scans) with each evaluation once.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::compute::{concat_batches, filter_record_batch};
use arrow::datatypes::{Int8Type, Schema, SchemaRef, TimestampMicrosecondType};
use datafusion::error::DataFusionError;

use crate::sink::parquet::evaluations_schema;
use crate::transform::dedup::dedup_key;
use crate::transform::validate::AssessNumber;

/// The columns of `recent_bad_reviews`, as named in `evaluations`.
pub const COLUMNS: [&str; 6] = [
    "project_no",
    "assess_number",
    "staff_id",
    "dept_code",
    "evaluator_key",
    "assessed_at",
];

/// More batches than this are merged into one, so a long run does not scan thousands of tiny ones.
const MERGE_ABOVE: usize = 64;

/// The schema of `recent_bad_reviews`: [`COLUMNS`] of the `evaluations` schema.
pub fn schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let full = evaluations_schema();
            let fields: Vec<_> = COLUMNS
                .iter()
                .filter_map(|name| full.field_with_name(name).ok().cloned())
                .collect();
            Arc::new(Schema::new(fields))
        })
        .clone()
}

/// A span of history: its rows and the range of their `assessed_at`.
struct Span {
    batch: RecordBatch,
    oldest_us: i64,
}

#[derive(Default)]
pub struct History {
    spans: Vec<Span>,
    /// Dedup keys of the rows held: the lake's history and a replayed micro-batch may overlap.
    keys: HashSet<u64>,
}

fn error(e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Execution(format!("recent_bad_reviews: {e}"))
}

impl History {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// What the `recent_bad_reviews` table holds now.
    pub fn batches(&mut self) -> Vec<RecordBatch> {
        if self.spans.len() > MERGE_ABOVE {
            let batches: Vec<&RecordBatch> = self.spans.iter().map(|s| &s.batch).collect();
            if let Ok(merged) = concat_batches(&schema(), batches) {
                let oldest_us = self.spans.iter().map(|s| s.oldest_us).min().unwrap_or(0);
                self.spans = vec![Span {
                    batch: merged,
                    oldest_us,
                }];
            }
        }
        self.spans.iter().map(|s| s.batch.clone()).collect()
    }

    /// Adds the bad reviews of `batch` (an `evaluations` batch, or one of [`schema`] that holds only
    /// bad reviews) that it does not hold yet.
    pub fn append(&mut self, batch: &RecordBatch) -> Result<(), DataFusionError> {
        let columns = COLUMNS
            .iter()
            .map(|name| {
                batch
                    .column_by_name(name)
                    .cloned()
                    .ok_or_else(|| error(format!("no {name} column")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let projected = RecordBatch::try_new(schema(), columns).map_err(error)?;
        let bad = batch
            .column_by_name("bad_review")
            .and_then(|c| c.as_boolean_opt().cloned());
        let (projects, numbers, times) = (
            projected.column(0).as_string::<i32>(),
            projected.column(1).as_primitive::<Int8Type>(),
            projected
                .column(5)
                .as_primitive::<TimestampMicrosecondType>(),
        );
        let mut oldest_us = i64::MAX;
        let keep: BooleanArray = (0..projected.num_rows())
            .map(|row| {
                let is_bad = bad.as_ref().is_none_or(|b| b.is_valid(row) && b.value(row));
                let Some(number) = AssessNumber::from_code(i64::from(numbers.value(row))) else {
                    return Some(false);
                };
                let fresh = is_bad
                    && !projects.is_null(row)
                    && self.keys.insert(dedup_key(projects.value(row), number));
                if fresh {
                    oldest_us = oldest_us.min(times.value(row));
                }
                Some(fresh)
            })
            .collect();
        if keep.true_count() == 0 {
            return Ok(());
        }
        let kept = filter_record_batch(&projected, &keep).map_err(error)?;
        self.spans.push(Span {
            batch: kept,
            oldest_us,
        });
        Ok(())
    }

    /// Drops the rows given before `cutoff_us`.
    pub fn evict_before(&mut self, cutoff_us: i64) {
        if self.spans.iter().all(|s| s.oldest_us >= cutoff_us) {
            return;
        }
        let spans = std::mem::take(&mut self.spans);
        for span in spans {
            if span.oldest_us >= cutoff_us {
                self.spans.push(span);
                continue;
            }
            let batch = &span.batch;
            let (projects, numbers, times) = (
                batch.column(0).as_string::<i32>(),
                batch.column(1).as_primitive::<Int8Type>(),
                batch.column(5).as_primitive::<TimestampMicrosecondType>(),
            );
            let mut oldest_us = i64::MAX;
            let keep: BooleanArray = (0..batch.num_rows())
                .map(|row| {
                    let kept = times.value(row) >= cutoff_us;
                    if kept {
                        oldest_us = oldest_us.min(times.value(row));
                    } else if let Some(number) =
                        AssessNumber::from_code(i64::from(numbers.value(row)))
                    {
                        self.keys.remove(&dedup_key(projects.value(row), number));
                    }
                    Some(kept)
                })
                .collect();
            if let Ok(kept) = filter_record_batch(batch, &keep) {
                if kept.num_rows() > 0 {
                    self.spans.push(Span {
                        batch: kept,
                        oldest_us,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int8Array, StringArray, TimestampMicrosecondArray};

    fn rows(entries: &[(&str, i8, i64)]) -> RecordBatch {
        let text = |v: Vec<Option<&str>>| Arc::new(StringArray::from(v)) as _;
        RecordBatch::try_new(
            schema(),
            vec![
                text(entries.iter().map(|e| Some(e.0)).collect()),
                Arc::new(Int8Array::from(
                    entries.iter().map(|e| e.1).collect::<Vec<_>>(),
                )),
                text(entries.iter().map(|_| Some("S1")).collect()),
                text(entries.iter().map(|_| Some("D1")).collect()),
                text(entries.iter().map(|_| None).collect()),
                Arc::new(
                    TimestampMicrosecondArray::from(
                        entries.iter().map(|e| e.2).collect::<Vec<_>>(),
                    )
                    .with_timezone("UTC"),
                ),
            ],
        )
        .unwrap()
    }

    #[test]
    fn each_evaluation_is_held_once_and_old_ones_leave() {
        let mut history = History::default();
        history
            .append(&rows(&[("P1", 1, 10), ("P2", 1, 20)]))
            .unwrap();
        // A replay of P2 and a new supplementary evaluation of P1.
        history
            .append(&rows(&[("P2", 1, 20), ("P1", 2, 30)]))
            .unwrap();
        assert_eq!(history.len(), 3);
        let total: usize = history.batches().iter().map(|b| b.num_rows()).sum();
        assert_eq!(total, 3);

        history.evict_before(20);
        assert_eq!(history.len(), 2);
        let total: usize = history.batches().iter().map(|b| b.num_rows()).sum();
        assert_eq!(total, 2);
        // Evicted, it may come back (a late arrival is history again).
        history.append(&rows(&[("P1", 1, 25)])).unwrap();
        assert_eq!(history.len(), 3);
        history.evict_before(i64::MAX);
        assert_eq!(history.len(), 0);
        assert!(history.batches().is_empty());
    }

    #[test]
    fn many_small_batches_are_merged() {
        let mut history = History::default();
        for i in 0..(MERGE_ABOVE as i64 + 10) {
            history.append(&rows(&[(&format!("P{i}"), 1, i)])).unwrap();
        }
        let batches = history.batches();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].num_rows(), MERGE_ABOVE + 10);
    }
}
