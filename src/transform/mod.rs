//! Transforms between decoding and the sinks: validation, identity protection, deduplication, and
//! [`Processor`], which chains them for one message.

pub mod dedup;
pub mod identity;
pub mod validate;

use crate::decode::{decode, Reason, Rejection};
use crate::parallel::in_parallel;
use crate::sink::parquet::{cst_day, EvaluationRows, TableRows};
use crate::stream::{AnyStream, BuildRows, Prepared};
use crate::telemetry::Stats;
use dedup::{dedup_key, fingerprint, DedupOutcome, DedupState};
use identity::{EvaluatorKey, EvaluatorKeyer};
use validate::{validate, AssessNumber, Evaluation, ValidationRules};

/// The evaluations stream's stages: decode → validate → identity ([`Processor::check`], before
/// dedup), then the row of what dedup keeps ([`ValidEvaluation::push_to`]). The same code serves the
/// Kafka pipeline, the offline path and the benchmarks.
#[derive(Debug, Clone)]
pub struct Processor {
    rules: ValidationRules,
    keyer: EvaluatorKeyer,
    /// When the workflow stream runs: where every valid bad review is registered, so that its
    /// workflow events can be checked against it.
    reviews: Option<std::sync::Arc<crate::stream::workflow::BadReviews>>,
}

impl Processor {
    pub fn new(rules: ValidationRules, keyer: EvaluatorKeyer) -> Self {
        Self {
            rules,
            keyer,
            reviews: None,
        }
    }

    /// The same processor, registering every valid bad review it prepares in `reviews`.
    pub fn registering(
        mut self,
        reviews: std::sync::Arc<crate::stream::workflow::BadReviews>,
    ) -> Self {
        self.reviews = Some(reviews);
        self
    }

    /// The processor an ingest configuration describes.
    pub fn from_config(config: &crate::config::IngestConfig) -> Self {
        let secret = config
            .identity
            .secret
            .as_ref()
            .map_or("", crate::config::Secret::expose);
        Self::new(
            config.validation.clone(),
            EvaluatorKeyer::new(secret.as_bytes()),
        )
    }

    pub fn keyer(&self) -> &EvaluatorKeyer {
        &self.keyer
    }

    /// Decodes, validates and keys one evaluation (before dedup, on any thread): what
    /// [`DedupState::check`] needs, and what its row needs if dedup keeps it.
    pub fn check<'a>(
        &self,
        payload: &'a [u8],
        partition: i32,
        offset: i64,
        now_us: i64,
    ) -> Result<(Candidate, ValidEvaluation<'a>), Rejection> {
        let evaluation = decode(payload, self.rules.max_message_bytes)
            .and_then(|w| validate(w, &self.rules, now_us))?;
        let evaluator_key = self.keyer.key(&evaluation.identity);
        let fingerprint = fingerprint(&evaluation, evaluator_key.as_deref());
        if let Some(reviews) = self
            .reviews
            .as_ref()
            .filter(|_| evaluation.satisfaction.is_bad_review())
        {
            reviews.register(
                &evaluation.project_no,
                evaluation.assess_number.code() as i8,
                evaluation.assessed_at_us,
                evaluation.area.city_partition_digits().bytes(),
            );
        }
        let candidate = Candidate {
            key: dedup_key(&evaluation.project_no, evaluation.assess_number),
            fingerprint,
            day: u16::try_from(cst_day(evaluation.assessed_at_us)).unwrap_or(0),
            conflict: match evaluation.assess_number {
                AssessNumber::First => conflict_first,
                AssessNumber::Supplementary => conflict_supplementary,
            },
            bad_review: evaluation.satisfaction.is_bad_review(),
        };
        Ok((
            candidate,
            ValidEvaluation {
                evaluation,
                evaluator_key,
                fingerprint,
                partition,
                offset,
            },
        ))
    }
}

impl Processor {
    /// [`Processor::check`] and the row, without dedup: for messages dedup has already accepted
    /// (the alert rules' micro-batch) and for tests that write rows directly.
    pub fn append_row(
        &self,
        payload: &[u8],
        partition: i32,
        offset: i64,
        now_us: i64,
        rows: &mut EvaluationRows,
    ) -> Result<(), Rejection> {
        let (_, valid) = self.check(payload, partition, offset, now_us)?;
        valid.push_to(rows);
        Ok(())
    }
}

/// A valid evaluation waiting for dedup's decision: what its row needs.
pub struct ValidEvaluation<'a> {
    pub evaluation: Evaluation<'a>,
    pub evaluator_key: Option<EvaluatorKey>,
    pub fingerprint: u64,
    pub partition: i32,
    pub offset: i64,
}

impl ValidEvaluation<'_> {
    /// Appends the evaluation's row.
    pub fn push_to(&self, rows: &mut EvaluationRows) {
        rows.push(
            &self.evaluation,
            self.evaluator_key.as_deref(),
            self.fingerprint,
            self.partition,
            self.offset,
        );
    }
}

pub use crate::telemetry::Source;

/// One message of a partition, as the stages see it.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
}

impl<'a> Message<'a> {
    /// Keyless messages at consecutive offsets from `first_offset`: a file's lines (offset = line
    /// number), or the payloads of a test or a bench.
    pub fn numbered(
        first_offset: i64,
        payloads: impl IntoIterator<Item = &'a [u8]>,
    ) -> Vec<Message<'a>> {
        payloads
            .into_iter()
            .zip(first_offset..)
            .map(|(payload, offset)| Message {
                offset,
                key: None,
                payload,
            })
            .collect()
    }
}

/// A contiguous run of one partition's messages after [`prepare_parallel`]: per message, its
/// candidate or rejection, and the valid ones waiting for dedup.
pub struct PreparedPart<'m> {
    /// The stream's table (the `stream` label of the event counters).
    pub table: &'static str,
    pub partition: i32,
    pub messages: &'m [Message<'m>],
    pub results: Vec<Result<Candidate, Rejection>>,
    valid: Box<dyn BuildRows + 'm>,
}

impl<'m> PreparedPart<'m> {
    /// Runs dedup over the part (see [`decide`]); the rows of what it keeps are built by
    /// [`DecidedPart::build`] or [`build_parallel`].
    pub fn decide(
        self,
        dedup: &mut DedupState,
        stats: &Stats,
        notice: impl FnMut(&Message<'m>, Notice),
    ) -> DecidedPart<'m> {
        let mut keep = Vec::with_capacity(self.results.len());
        let source = Source {
            table: self.table,
            partition: self.partition,
        };
        let kept = decide(
            source,
            self.messages,
            self.results,
            dedup,
            stats,
            &mut keep,
            notice,
        );
        DecidedPart {
            partition: self.partition,
            messages: self.messages,
            kept,
            keep,
            valid: self.valid,
        }
    }
}

/// A part after dedup: which of its valid messages it keeps.
pub struct DecidedPart<'m> {
    pub partition: i32,
    pub messages: &'m [Message<'m>],
    /// How many rows [`DecidedPart::build`] returns.
    pub kept: usize,
    keep: Vec<bool>,
    valid: Box<dyn BuildRows + 'm>,
}

impl DecidedPart<'_> {
    /// The rows of the kept messages, grouped by Hive partition.
    pub fn build(self) -> Box<dyn TableRows> {
        self.valid.build(&self.keep)
    }
}

/// Builds the rows of decided parts on up to `workers` threads, in input order.
pub fn build_parallel(parts: Vec<DecidedPart<'_>>, workers: usize) -> Vec<Box<dyn TableRows>> {
    let total: usize = parts.iter().map(|p| p.kept).sum();
    let workers = if total < PARALLEL_FROM { 1 } else { workers };
    in_parallel(parts, workers, DecidedPart::build)
}

/// One partition's run through every stage, as the offline path, the benches and tests run it:
/// prepared on up to `workers` threads, dedup in offset order, the kept rows built on the same
/// threads. Returns the rows and how many there are.
#[allow(clippy::too_many_arguments)]
pub fn process_run<'m>(
    stream: &'m dyn AnyStream,
    partition: i32,
    messages: &'m [Message<'m>],
    now_us: i64,
    workers: usize,
    dedup: &mut DedupState,
    stats: &Stats,
    notice: impl FnMut(&Message<'m>, Notice),
) -> (Vec<Box<dyn TableRows>>, usize) {
    let ready = |_: &[PreparedPart<'m>], _: &mut DedupState| Ok::<(), std::convert::Infallible>(());
    match process_run_with(
        stream, partition, messages, now_us, workers, dedup, stats, ready, notice,
    ) {
        Ok(done) => done,
        Err(never) => match never {},
    }
}

/// [`process_run`], with `ready` given the prepared parts and the dedup state before dedup
/// decides (the offline path loads the lake's keys of the days the parts fall on there); its
/// error ends the run before anything is decided.
#[allow(clippy::too_many_arguments)]
pub fn process_run_with<'m, E>(
    stream: &'m dyn AnyStream,
    partition: i32,
    messages: &'m [Message<'m>],
    now_us: i64,
    workers: usize,
    dedup: &mut DedupState,
    stats: &Stats,
    mut ready: impl FnMut(&[PreparedPart<'m>], &mut DedupState) -> Result<(), E>,
    mut notice: impl FnMut(&Message<'m>, Notice),
) -> Result<(Vec<Box<dyn TableRows>>, usize), E> {
    let prepared = prepare_parallel(stream, &[(partition, messages)], now_us, workers);
    ready(&prepared, dedup)?;
    let decided: Vec<DecidedPart<'m>> = prepared
        .into_iter()
        .map(|part| part.decide(dedup, stats, &mut notice))
        .collect();
    let kept = decided.iter().map(|p| p.kept).sum();
    Ok((build_parallel(decided, workers), kept))
}

/// Runs shorter than this are not split across threads: a thread costs more than it saves.
const MIN_PART: usize = 512;

/// Prepares runs of a stream's messages (`(partition, messages)`, each in offset order) on up to
/// `workers` threads: long runs are split into contiguous parts, the parts are shared out
/// round-robin, and they come back in input order, ready for [`PreparedPart::decide`] in that
/// order. A single short run is prepared on the calling thread.
pub fn prepare_parallel<'m>(
    stream: &'m dyn AnyStream,
    runs: &[(i32, &'m [Message<'m>])],
    now_us: i64,
    workers: usize,
) -> Vec<PreparedPart<'m>> {
    let workers = if stream.parallel() { workers.max(1) } else { 1 };
    let total: usize = runs.iter().map(|(_, m)| m.len()).sum();
    let part_len = total.div_ceil(workers).max(MIN_PART);
    let parts: Vec<(i32, &'m [Message<'m>])> = runs
        .iter()
        .flat_map(|(partition, messages)| messages.chunks(part_len).map(|c| (*partition, c)))
        .collect();
    let workers = if total < PARALLEL_FROM { 1 } else { workers };
    in_parallel(parts, workers, |(partition, messages)| {
        let Prepared { results, valid } = stream.prepare_part(partition, messages, now_us);
        PreparedPart {
            table: stream.table(),
            partition,
            messages,
            results,
            valid,
        }
    })
}

/// Chunks with fewer messages (or kept rows) than this are prepared (or built) on the calling
/// thread: threads cost more than they save.
pub const PARALLEL_FROM: usize = 1024;

/// What became of one message (see [`process_one`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Kept: its row is in the rows returned.
    Accepted,
    /// An identical redelivery, dropped.
    Duplicate,
    /// For the dead-letter topic.
    Rejected(Rejection),
}

/// One message through a stream's stages and dedup, exactly as the engine runs a run of them: its
/// outcome and the rows holding it when it was kept (for tests and tools that go message by
/// message).
pub fn process_one(
    stream: &dyn AnyStream,
    message: Message<'_>,
    partition: i32,
    now_us: i64,
    dedup: &mut DedupState,
    stats: &Stats,
) -> (Outcome, Option<Box<dyn TableRows>>) {
    let messages = [message];
    let part = prepare_parallel(stream, &[(partition, &messages)], now_us, 1)
        .into_iter()
        .next();
    let Some(part) = part else {
        return (Outcome::Duplicate, None);
    };
    let mut rejection = None;
    let decided = part.decide(dedup, stats, |_, notice| {
        if let Notice::Rejected(r) = notice {
            rejection = Some(r);
        }
    });
    match rejection {
        Some(rejection) => (Outcome::Rejected(rejection), None),
        None if decided.kept == 1 => (Outcome::Accepted, Some(decided.build())),
        None => (Outcome::Duplicate, None),
    }
}

/// What [`decide`] tells its caller about a message, beyond the keep flags.
#[derive(Debug)]
pub enum Notice {
    /// Invalid, or a conflicting evaluation of a taken slot: for the dead-letter topic.
    Rejected(Rejection),
    /// Accepted, and a bad review: for the alert rules.
    AcceptedBadReview,
}

/// Dedup in offset order over prepared messages: appends one keep flag per valid message to `keep`,
/// counts every outcome in `stats`, and tells `notice` of each rejection (invalid, a conflicting
/// evaluation of a taken slot, or one dated before the dedup window) and each accepted bad review. Returns how many rows it kept.
pub fn decide<'m>(
    source: Source,
    messages: &[Message<'m>],
    results: Vec<Result<Candidate, Rejection>>,
    dedup: &mut DedupState,
    stats: &Stats,
    keep: &mut Vec<bool>,
    mut notice: impl FnMut(&Message<'m>, Notice),
) -> usize {
    let (mut kept, mut duplicates, mut bytes) = (0, 0, 0);
    for (message, result) in messages.iter().zip(results) {
        bytes += message.payload.len();
        let rejection = match result {
            Err(rejection) => rejection,
            Ok(candidate) => match dedup.check(candidate.key, candidate.fingerprint, candidate.day)
            {
                DedupOutcome::New => {
                    keep.push(true);
                    kept += 1;
                    if candidate.bad_review {
                        notice(message, Notice::AcceptedBadReview);
                    }
                    continue;
                }
                DedupOutcome::Duplicate => {
                    keep.push(false);
                    duplicates += 1;
                    continue;
                }
                DedupOutcome::Conflict => {
                    keep.push(false);
                    (candidate.conflict)()
                }
                DedupOutcome::OutsideWindow => {
                    keep.push(false);
                    outside_window(dedup.horizon())
                }
            },
        };
        stats.dead_lettered(source, rejection.reason);
        notice(message, Notice::Rejected(rejection));
    }
    stats.processed(
        source,
        messages.len() as u64,
        bytes as u64,
        kept as u64,
        duplicates,
    );
    kept
}

/// A valid message waiting for its dedup decision.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    pub key: u64,
    pub fingerprint: u64,
    pub day: u16,
    /// The rejection when the key is taken by a different message (a static message per case, so
    /// nothing is allocated unless it happens).
    pub conflict: fn() -> Rejection,
    /// An evaluation with satisfaction 1 or 2: the alert rules look at it.
    pub bad_review: bool,
}

/// The rejection of an event dated before the dedup state's horizon whose slot it does not hold
/// (see [`dedup::DedupOutcome::OutsideWindow`]). The date it names is the engine's, not the input's.
pub fn outside_window(horizon: u16) -> Rejection {
    Rejection::new(
        Reason::OutsideDedupWindow,
        format!(
            "dated before {}, the oldest day deduplication remembers (dedup.window_days before \
             today): whether its slot was already taken cannot be checked; replay it under a \
             window that reaches its day",
            crate::sink::parquet::format_day(i32::from(horizon))
        ),
    )
}

/// The rejection of an evaluation whose first-evaluation slot is taken by a different one. Like
/// every rejection message it carries no input value; the case is the dead letter's key and in its
/// payload.
pub fn conflict_first() -> Rejection {
    Rejection::new(
        Reason::CaseAlreadyEvaluated,
        "the case already has a different first evaluation (assessNumber 1)",
    )
}

/// The same for the supplementary-evaluation slot.
pub fn conflict_supplementary() -> Rejection {
    Rejection::new(
        Reason::CaseAlreadySupplemented,
        "the case already has a different supplementary evaluation (assessNumber 2)",
    )
}
