//! Transforms between decoding and the sinks: validation, identity protection, deduplication, and
//! [`Processor`], which chains them for one message.

pub mod dedup;
pub mod identity;
pub mod validate;

use crate::decode::{decode, Reason, Rejection};
use crate::sink::parquet::{cst_day, EvaluationRows};
use dedup::{dedup_key, fingerprint, DedupOutcome, DedupState};
use identity::EvaluatorKeyer;
use validate::{validate, AssessNumber, ValidationRules};

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Appended to the rows.
    Accepted,
    /// An identical redelivery, dropped.
    Duplicate,
    /// To the dead-letter topic.
    Rejected(Rejection),
}

/// decode → validate → identity → dedup → rows, for one message at a time. The same code serves the
/// Kafka pipeline, the offline path and the benchmarks.
#[derive(Debug, Clone)]
pub struct Processor {
    rules: ValidationRules,
    keyer: EvaluatorKeyer,
}

impl Processor {
    pub fn new(rules: ValidationRules, keyer: EvaluatorKeyer) -> Self {
        Self { rules, keyer }
    }

    pub fn keyer(&self) -> &EvaluatorKeyer {
        &self.keyer
    }

    /// Processes one message of a partition; `now_us` is the current time (UTC microseconds).
    pub fn process(
        &self,
        payload: &[u8],
        partition: i32,
        offset: i64,
        now_us: i64,
        dedup: &mut DedupState,
        rows: &mut EvaluationRows,
    ) -> Outcome {
        let evaluation = match decode(payload, self.rules.max_message_bytes)
            .and_then(|w| validate(w, &self.rules, now_us))
        {
            Ok(evaluation) => evaluation,
            Err(rejection) => return Outcome::Rejected(rejection),
        };
        let evaluator_key = self.keyer.key(&evaluation.identity);
        let fingerprint = fingerprint(&evaluation, evaluator_key.as_deref());
        let key = dedup_key(&evaluation.project_no, evaluation.assess_number);
        let day = u16::try_from(cst_day(evaluation.assessed_at_us)).unwrap_or(0);
        match dedup.check(key, fingerprint, day) {
            DedupOutcome::New => {
                rows.push(
                    &evaluation,
                    evaluator_key.as_deref(),
                    fingerprint,
                    partition,
                    offset,
                );
                Outcome::Accepted
            }
            DedupOutcome::Duplicate => Outcome::Duplicate,
            DedupOutcome::Conflict => Outcome::Rejected(match evaluation.assess_number {
                AssessNumber::First => Rejection::new(
                    Reason::CaseAlreadyEvaluated,
                    format!(
                        "case {} already has a different first evaluation (assessNumber 1)",
                        evaluation.project_no
                    ),
                ),
                AssessNumber::Supplementary => Rejection::new(
                    Reason::CaseAlreadySupplemented,
                    format!(
                        "case {} already has a different supplementary evaluation (assessNumber 2)",
                        evaluation.project_no
                    ),
                ),
            }),
        }
    }
}
