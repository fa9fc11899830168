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

    /// The processor an ingest configuration describes.
    pub fn from_config(config: &crate::config::IngestConfig) -> Self {
        let secret = config.identity.secret.as_deref().unwrap_or_default();
        Self::new(
            config.validation.clone(),
            EvaluatorKeyer::new(secret.as_bytes()),
        )
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
        let candidate = self.candidate(&evaluation);
        match dedup.check(candidate.key, candidate.fingerprint, candidate.day) {
            DedupOutcome::New => {
                rows.push(
                    &evaluation,
                    candidate.evaluator_key.as_deref(),
                    candidate.fingerprint,
                    partition,
                    offset,
                );
                Outcome::Accepted
            }
            DedupOutcome::Duplicate => Outcome::Duplicate,
            DedupOutcome::Conflict => {
                Outcome::Rejected(conflict(&evaluation.project_no, evaluation.assess_number))
            }
        }
    }

    /// The first, parallel half of [`Self::process`]: decodes, validates and appends the row before
    /// dedup, returning what [`DedupState::check`] needs. The caller runs dedup in offset order and
    /// keeps only the rows it accepts (see [`EvaluationRows::finish_keeping`]).
    pub fn prepare(
        &self,
        payload: &[u8],
        partition: i32,
        offset: i64,
        now_us: i64,
        rows: &mut EvaluationRows,
    ) -> Result<Candidate, Rejection> {
        let evaluation = decode(payload, self.rules.max_message_bytes)
            .and_then(|w| validate(w, &self.rules, now_us))?;
        let candidate = self.candidate(&evaluation);
        rows.push(
            &evaluation,
            candidate.evaluator_key.as_deref(),
            candidate.fingerprint,
            partition,
            offset,
        );
        Ok(candidate)
    }

    fn candidate(&self, evaluation: &validate::Evaluation<'_>) -> Candidate {
        let evaluator_key = self.keyer.key(&evaluation.identity);
        Candidate {
            key: dedup_key(&evaluation.project_no, evaluation.assess_number),
            fingerprint: fingerprint(evaluation, evaluator_key.as_deref()),
            day: u16::try_from(cst_day(evaluation.assessed_at_us)).unwrap_or(0),
            assess_number: evaluation.assess_number,
            evaluator_key,
        }
    }
}

/// A valid evaluation waiting for its dedup decision.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub key: u64,
    pub fingerprint: u64,
    pub day: u16,
    pub assess_number: AssessNumber,
    evaluator_key: Option<String>,
}

/// The rejection of an evaluation whose slot is taken by a different one.
pub fn conflict(project_no: &str, assess_number: AssessNumber) -> Rejection {
    match assess_number {
        AssessNumber::First => Rejection::new(
            Reason::CaseAlreadyEvaluated,
            format!("case {project_no} already has a different first evaluation (assessNumber 1)"),
        ),
        AssessNumber::Supplementary => Rejection::new(
            Reason::CaseAlreadySupplemented,
            format!("case {project_no} already has a different supplementary evaluation (assessNumber 2)"),
        ),
    }
}
