//! The evaluations stream (评价): the national interface's evaluation records, one row per accepted
//! evaluation in the `evaluations` table. Its stages are [`Processor`] (decode, validate, keyed
//! identity) and [`EvaluationRows`]; dedup allows one first and one supplementary evaluation per
//! case.

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::{Int64Type, Int8Type};

use super::{primitive_column, text_column, DedupRule, Stream};
use crate::decode::Rejection;
use crate::sink::parquet::{EvaluationRows, PartitionKey, EVALUATIONS_TABLE};
use crate::transform::dedup::dedup_key;
use crate::transform::validate::AssessNumber;
use crate::transform::{Candidate, Message, Processor, ValidEvaluation};

impl Stream for Processor {
    type Rows = EvaluationRows;
    type Valid<'a> = ValidEvaluation<'a>;

    fn table(&self) -> &'static str {
        EVALUATIONS_TABLE
    }

    fn dedup(&self) -> DedupRule {
        DEDUP
    }

    fn rows(&self, capacity: usize) -> EvaluationRows {
        EvaluationRows::with_capacity(capacity)
    }

    fn check<'a>(
        &self,
        message: &Message<'a>,
        partition: i32,
        now_us: i64,
    ) -> Result<(Candidate, ValidEvaluation<'a>), Rejection> {
        Processor::check(self, message.payload, partition, message.offset, now_us)
    }

    fn partition_of(&self, valid: &ValidEvaluation<'_>) -> PartitionKey {
        PartitionKey::from_digits(
            valid.evaluation.assessed_at_us,
            valid.evaluation.area.city_partition_digits().bytes(),
        )
    }

    fn push(&self, valid: ValidEvaluation<'_>, rows: &mut EvaluationRows) {
        valid.push_to(rows);
    }
}

/// One slot per (case, assessNumber); the fingerprint tells a redelivery from a conflicting one.
pub const DEDUP: DedupRule = DedupRule {
    columns: &["project_no", "assess_number", "event_fingerprint"],
    entries: dedup_entries,
};

fn dedup_entries(
    batch: &RecordBatch,
    day: u16,
    out: &mut Vec<(u64, u64, u16)>,
) -> Result<(), String> {
    let project = text_column(batch, "project_no")?;
    let number = primitive_column::<Int8Type>(batch, "assess_number")?;
    let fp = primitive_column::<Int64Type>(batch, "event_fingerprint")?;
    out.reserve(batch.num_rows());
    for row in 0..batch.num_rows() {
        if project.is_null(row) {
            continue;
        }
        let Some(assess_number) = AssessNumber::from_code(i64::from(number.value(row))) else {
            continue;
        };
        out.push((
            dedup_key(project.value(row), assess_number),
            fp.value(row) as u64,
            day,
        ));
    }
    Ok(())
}
