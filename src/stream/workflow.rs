//! The workflow stream: what happens to a bad review after it is given (DOMAIN.md §3, the closed
//! loop 评价→反馈→整改→监督), one event per step, in the `workflow` table.
//!
//! A step belongs to one bad review (`projectNo` + `assessNumber`) and follows the step it needs
//! ([`Step::after`]): the department must have the review forwarded before it contacts, replies,
//! rectifies or appeals; a rectification comes before its report and its revisit; an audit after
//! its appeal; a review decision after its application. An event for a bad review the engine does
//! not know is `unknown_bad_review`, one before the step it follows (or before the review itself)
//! is `out_of_order`, a different event for a step already taken is `workflow_step_conflict`: each
//! to `<topic>.dlq` with its reason, never lost (a record parked because its review had not arrived
//! yet is replayed with `haochaping dlq replay`).
//!
//! The order check needs what came before, so the stream keeps a [`BadReviews`] registry: the bad
//! reviews of the dedup window and their steps, loaded from the lake at start, then fed by the
//! evaluations stream (every valid bad review it prepares) and by this stream (every step it
//! prepares). Runs of this stream are therefore prepared in offset order, on one thread. A review
//! another instance of the group accepted is in the lake once that instance committed it: an event
//! whose review is unknown makes the stream read the lake's bad reviews again ([`Reload`], at most
//! once per period, so a flood of unknown events costs one read per period) before parking it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Int64Type, Int8Type, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::{xxh3_64_with_seed, Xxh3};

use super::{primitive_column, text_column, DedupRule, Stream};
use crate::decode::{json_object, message_text, Reason, Rejection, WireValue};
use crate::sink::parquet::{cst_day, serialize_rows, PartitionKey, TableError, TableRows};
use crate::transform::validate::{
    clean, identifier_flaw, parse_cst_time, required_code, required_text, AssessNumber,
    ValidationRules,
};
use crate::transform::{Candidate, Message};

/// The lake table's name and folder under the lake root.
pub const WORKFLOW_TABLE: &str = "workflow";

/// One step of the closed loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    /// Forwarded to the evaluated department (004 一(二)1).
    Forwarded,
    /// First contact with the evaluator (000 三(二)).
    Contacted,
    /// Replied to the evaluator (001 §19).
    Replied,
    /// A complex case's one extension, approved (004 一(二)2).
    Extended,
    /// Rectified (001 §19, 002 §16, 003 制度 §10, 004 一(二)2).
    Rectified,
    /// The rectification reported back (004 一(二)3).
    ReportedBack,
    /// Revisited; carries the evaluator's new level (000 三(三), 001 §19, 004 一(二)4).
    Revisited,
    /// Appealed by the staff or department (002 §13).
    Appealed,
    /// The appeal audited; carries `upheld` or `rejected` (000 三(三)).
    AppealAudited,
    /// Review (复核) applied for (004 二(二)1).
    ReviewApplied,
    /// Review decided; carries `mistaken`, `malicious` or `upheld` (004 二(二)2–3).
    ReviewDecided,
}

impl Step {
    pub const ALL: [Step; 11] = [
        Step::Forwarded,
        Step::Contacted,
        Step::Replied,
        Step::Extended,
        Step::Rectified,
        Step::ReportedBack,
        Step::Revisited,
        Step::Appealed,
        Step::AppealAudited,
        Step::ReviewApplied,
        Step::ReviewDecided,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::Forwarded => "forwarded",
            Step::Contacted => "contacted",
            Step::Replied => "replied",
            Step::Extended => "extended",
            Step::Rectified => "rectified",
            Step::ReportedBack => "reported_back",
            Step::Revisited => "revisited",
            Step::Appealed => "appealed",
            Step::AppealAudited => "appeal_audited",
            Step::ReviewApplied => "review_applied",
            Step::ReviewDecided => "review_decided",
        }
    }

    pub fn from_name(name: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|s| s.name() == name)
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The step this one follows (the review itself for `forwarded`).
    pub fn after(self) -> Option<Step> {
        match self {
            Step::Forwarded => None,
            Step::Contacted
            | Step::Replied
            | Step::Extended
            | Step::Rectified
            | Step::Appealed
            | Step::ReviewApplied => Some(Step::Forwarded),
            Step::ReportedBack | Step::Revisited => Some(Step::Rectified),
            Step::AppealAudited => Some(Step::Appealed),
            Step::ReviewDecided => Some(Step::ReviewApplied),
        }
    }

    /// The decisions a step carries, if it carries one.
    fn decisions(self) -> &'static [&'static str] {
        match self {
            Step::AppealAudited => &["upheld", "rejected"],
            Step::ReviewDecided => &["mistaken", "malicious", "upheld"],
            _ => &[],
        }
    }
}

/// What the registry knows of one bad review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewState {
    pub given_at_us: i64,
    /// The review's `city=` partition: its workflow rows go to the same folder.
    pub city: [u8; 6],
    /// When each step happened, by [`Step`] order.
    pub steps: [Option<i64>; 11],
}

/// The bad reviews the workflow's events may refer to, with the steps seen so far. Shared by the
/// evaluations stream (which registers bad reviews) and the workflow stream (which checks and
/// records steps). The first record of a review or a step wins: a redelivery changes nothing, and a
/// conflicting record is rejected by dedup after it.
#[derive(Debug, Default)]
pub struct BadReviews {
    reviews: RwLock<HashMap<(String, i8), ReviewState>>,
}

impl BadReviews {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Registers a bad review (first registration wins).
    pub fn register(&self, project_no: &str, assess_number: i8, given_at_us: i64, city: [u8; 6]) {
        let mut reviews = self.reviews.write().unwrap_or_else(|p| p.into_inner());
        reviews
            .entry((project_no.to_owned(), assess_number))
            .or_insert(ReviewState {
                given_at_us,
                city,
                steps: [None; 11],
            });
    }

    /// Records a step seen in the lake (at start), without checks.
    pub fn restore_step(&self, project_no: &str, assess_number: i8, step: Step, at_us: i64) {
        let mut reviews = self.reviews.write().unwrap_or_else(|p| p.into_inner());
        if let Some(state) = reviews.get_mut(&(project_no.to_owned(), assess_number)) {
            state.steps[step.index()].get_or_insert(at_us);
        }
    }

    pub fn len(&self) -> usize {
        self.reviews.read().map_or(0, |r| r.len())
    }

    /// Forgets the reviews given before `before_us` (older than the dedup window: their workflow
    /// events are then unknown, as after a restart). Returns how many were forgotten.
    pub fn evict_given_before(&self, before_us: i64) -> usize {
        let mut reviews = self.reviews.write().unwrap_or_else(|p| p.into_inner());
        let before = reviews.len();
        reviews.retain(|_, state| state.given_at_us >= before_us);
        before - reviews.len()
    }

    /// Adds what `other` knows and this registry does not (reviews, and steps of known reviews).
    pub fn absorb(&self, other: &BadReviews) {
        let theirs = other.reviews.read().unwrap_or_else(|p| p.into_inner());
        let mut ours = self.reviews.write().unwrap_or_else(|p| p.into_inner());
        for (key, state) in theirs.iter() {
            let entry = ours.entry(key.clone()).or_insert_with(|| state.clone());
            for (mine, seen) in entry.steps.iter_mut().zip(state.steps) {
                if mine.is_none() {
                    *mine = seen;
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks that `step` at `at_us` may follow what the review has seen, and records it; returns the
    /// review's city.
    pub fn check_and_record(
        &self,
        project_no: &str,
        assess_number: i8,
        step: Step,
        at_us: i64,
    ) -> Result<[u8; 6], Rejection> {
        let mut reviews = self.reviews.write().unwrap_or_else(|p| p.into_inner());
        let Some(state) = reviews.get_mut(&(project_no.to_owned(), assess_number)) else {
            return Err(Rejection::new(
                Reason::UnknownBadReview,
                format!(
                    "no bad review (satisfaction 1 or 2) of this projectNo and assessNumber {assess_number} is known"
                ),
            ));
        };
        check_order(state, step, at_us)?;
        state.steps[step.index()].get_or_insert(at_us);
        Ok(state.city)
    }
}

/// Whether `step` at `at_us` may follow what `state` has seen. Pure.
pub fn check_order(state: &ReviewState, step: Step, at_us: i64) -> Result<(), Rejection> {
    if at_us < state.given_at_us {
        return Err(Rejection::new(
            Reason::OutOfOrder,
            format!(
                "field eventTime of {} is before the review was given",
                step.name()
            ),
        ));
    }
    if let Some(before) = step.after() {
        match state.steps[before.index()] {
            None => {
                return Err(Rejection::new(
                    Reason::OutOfOrder,
                    format!("{} before {}", step.name(), before.name()),
                ))
            }
            Some(then) if at_us < then => {
                return Err(Rejection::new(
                    Reason::OutOfOrder,
                    format!(
                        "field eventTime of {} is before its {}",
                        step.name(),
                        before.name()
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// One workflow event as the platform sends it; every field optional so the validator names what
/// is missing.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireEvent<'a> {
    #[serde(borrow)]
    project_no: Option<WireValue<'a>>,
    #[serde(borrow)]
    assess_number: Option<WireValue<'a>>,
    #[serde(borrow)]
    event_type: Option<WireValue<'a>>,
    #[serde(borrow)]
    event_time: Option<WireValue<'a>>,
    #[serde(borrow)]
    complex: Option<WireValue<'a>>,
    #[serde(borrow)]
    new_satisfaction: Option<WireValue<'a>>,
    #[serde(borrow)]
    decision: Option<WireValue<'a>>,
}

/// A valid workflow event (its order not yet checked).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub project_no: String,
    pub assess_number: AssessNumber,
    pub step: Step,
    pub at_us: i64,
    /// On `forwarded`: the department classed the case as complex (longer rectification).
    pub complex: Option<bool>,
    /// On `revisited`: the evaluator's level at the revisit.
    pub new_satisfaction: Option<i8>,
    /// On `appeal_audited` and `review_decided`.
    pub decision: Option<&'static str>,
}

/// Validates one workflow event's fields (not its order: see [`BadReviews::check_and_record`]).
pub fn validate_event(
    text: &str,
    rules: &ValidationRules,
    now_us: i64,
) -> Result<Event, Rejection> {
    let wire: WireEvent<'_> = json_object(text)?;
    let limit = rules.max_field_chars;
    let project_no = required_text("projectNo", wire.project_no, limit)
        .and_then(|t| clean("projectNo", t, identifier_flaw))?
        .into_owned();
    let assess_number = required_code("assessNumber", wire.assess_number, AssessNumber::from_code)?;
    let step = match wire.event_type {
        Some(WireValue::Str(name)) => Step::from_name(name.trim()).ok_or_else(|| {
            Rejection::new(
                Reason::InvalidCode,
                "field eventType is not in its code set",
            )
        })?,
        None | Some(WireValue::Null) => {
            return Err(Rejection::new(
                Reason::MissingField,
                "required field eventType is missing",
            ))
        }
        Some(other) => {
            return Err(Rejection::new(
                Reason::InvalidField,
                format!("field eventType must be a string, got {}", other.kind()),
            ))
        }
    };
    let time = required_text("eventTime", wire.event_time, limit)?;
    let at_us = parse_cst_time(
        "eventTime",
        &time,
        now_us,
        rules.max_clock_skew,
        (Reason::InvalidTime, Reason::FutureTime),
    )?;
    let only_on = |field: &str, on: Step| {
        Rejection::new(
            Reason::InvalidField,
            format!("field {field} belongs to eventType {} only", on.name()),
        )
    };
    let complex = match wire.complex {
        None | Some(WireValue::Null) => None,
        Some(_) if step != Step::Forwarded => return Err(only_on("complex", Step::Forwarded)),
        Some(WireValue::Bool(b)) => Some(b),
        Some(other) => {
            return Err(Rejection::new(
                Reason::InvalidField,
                format!("field complex must be a boolean, got {}", other.kind()),
            ))
        }
    };
    let new_satisfaction = match (step, wire.new_satisfaction) {
        (Step::Revisited, value) => Some(required_code("newSatisfaction", value, |c| {
            (1..=5).contains(&c).then_some(c as i8)
        })?),
        (_, None | Some(WireValue::Null)) => None,
        _ => return Err(only_on("newSatisfaction", Step::Revisited)),
    };
    let decision = match (step.decisions(), wire.decision) {
        ([], None | Some(WireValue::Null)) => None,
        ([], Some(_)) => {
            return Err(Rejection::new(
                Reason::InvalidField,
                "field decision belongs to eventType appeal_audited and review_decided only",
            ))
        }
        (choices, Some(WireValue::Str(text))) => Some(
            choices
                .iter()
                .find(|c| **c == text.trim())
                .copied()
                .ok_or_else(|| {
                    Rejection::new(
                        Reason::InvalidCode,
                        format!(
                            "field decision of {} must be one of {}",
                            step.name(),
                            choices.join(", ")
                        ),
                    )
                })?,
        ),
        (_, None | Some(WireValue::Null)) => {
            return Err(Rejection::new(
                Reason::MissingField,
                format!("field decision is required for eventType {}", step.name()),
            ))
        }
        (_, Some(other)) => {
            return Err(Rejection::new(
                Reason::InvalidField,
                format!("field decision must be a string, got {}", other.kind()),
            ))
        }
    };
    Ok(Event {
        project_no,
        assess_number,
        step,
        at_us,
        complex,
        new_satisfaction,
        decision,
    })
}

/// The dedup key of one step of one bad review.
pub fn step_key(project_no: &str, assess_number: i8, step: Step) -> u64 {
    xxh3_64_with_seed(
        project_no.as_bytes(),
        0x5707_0000 + (assess_number as u64) * 16 + step.index() as u64,
    )
}

fn fingerprint(event: &Event) -> u64 {
    let mut h = Xxh3::new();
    h.update(event.project_no.as_bytes());
    h.update(&[0x1f, event.assess_number.code(), event.step.index() as u8]);
    h.update(&event.at_us.to_le_bytes());
    h.update(&[
        event.complex.map_or(2, u8::from),
        event.new_satisfaction.map_or(0, |s| s as u8),
    ]);
    h.update(event.decision.unwrap_or("").as_bytes());
    h.digest()
}

fn step_conflict() -> Rejection {
    Rejection::new(
        Reason::WorkflowStepConflict,
        "the bad review already has a different event of this eventType",
    )
}

/// Reads the lake's bad reviews into the registry again when an event's review is unknown, at most
/// once per `every`.
#[derive(Debug)]
pub struct Reload {
    lake_root: crate::lake::LakeRoot,
    window_days: u16,
    every: std::time::Duration,
    last: std::sync::Mutex<Option<std::time::Instant>>,
    done: std::sync::atomic::AtomicU64,
}

impl Reload {
    pub fn new(
        lake_root: crate::lake::LakeRoot,
        window_days: u16,
        every: std::time::Duration,
    ) -> Self {
        Self {
            lake_root,
            window_days,
            every,
            last: std::sync::Mutex::new(None),
            done: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// How many reloads have run.
    pub fn count(&self) -> u64 {
        self.done.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reloads into `reviews` unless one ran less than `every` ago; returns whether it did.
    fn run(&self, reviews: &BadReviews, now_us: i64) -> bool {
        {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|at| at.elapsed() < self.every) {
                return false;
            }
            *last = Some(std::time::Instant::now());
        }
        // On a thread of its own with its own runtime: prepare runs inside the engine's runtime
        // (possibly on its only thread), where blocking on a future is not allowed.
        let (root, window) = (&self.lake_root, self.window_days);
        let fresh = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .ok()?;
                    runtime
                        .block_on(load_registry(root, window, now_us))
                        .map_err(|error| {
                            tracing::warn!(%error, "reloading the bad reviews from the lake failed")
                        })
                        .ok()
                })
                .join()
                .ok()
                .flatten()
        });
        let Some(fresh) = fresh else {
            return false;
        };
        reviews.absorb(&fresh);
        self.done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            bad_reviews = reviews.len(),
            "bad reviews reloaded from the lake for an unknown one"
        );
        true
    }
}

/// The workflow stream: validation limits and the registry of bad reviews.
#[derive(Debug, Clone)]
pub struct Workflow {
    rules: ValidationRules,
    reviews: Arc<BadReviews>,
    reload: Option<Arc<Reload>>,
}

impl Workflow {
    pub fn new(rules: ValidationRules, reviews: Arc<BadReviews>) -> Self {
        Self {
            rules,
            reviews,
            reload: None,
        }
    }

    /// The same stream, reading the lake again when an event's review is unknown.
    pub fn reloading(mut self, reload: Arc<Reload>) -> Self {
        self.reload = Some(reload);
        self
    }
}

impl Stream for Workflow {
    type Rows = WorkflowRows;
    type Valid<'a> = (PartitionKey, StepRow);

    fn table(&self) -> &'static str {
        WORKFLOW_TABLE
    }

    fn dedup(&self) -> DedupRule {
        DEDUP
    }

    fn parallel(&self) -> bool {
        false
    }

    fn rows(&self, capacity: usize) -> WorkflowRows {
        WorkflowRows {
            rows: Vec::with_capacity(capacity),
            keys: Vec::with_capacity(capacity),
        }
    }

    fn check<'a>(
        &self,
        message: &Message<'a>,
        partition: i32,
        now_us: i64,
    ) -> Result<(Candidate, (PartitionKey, StepRow)), Rejection> {
        let text = message_text(message.payload, self.rules.max_message_bytes)?;
        let event = validate_event(&text, &self.rules, now_us)?;
        let number = event.assess_number.code() as i8;
        let check = || {
            self.reviews
                .check_and_record(&event.project_no, number, event.step, event.at_us)
        };
        let city = match check() {
            Err(unknown)
                if unknown.reason == Reason::UnknownBadReview
                    && self
                        .reload
                        .as_ref()
                        .is_some_and(|reload| reload.run(&self.reviews, now_us)) =>
            {
                check()?
            }
            checked => checked?,
        };
        let fingerprint = fingerprint(&event);
        let key = step_key(&event.project_no, number, event.step);
        let partition_key = PartitionKey::from_digits(event.at_us, city);
        let row = StepRow {
            project_no: event.project_no,
            assess_number: number,
            step: event.step.name(),
            event_at: event.at_us,
            complex: event.complex,
            new_satisfaction: event.new_satisfaction,
            decision: event.decision,
            event_fingerprint: fingerprint as i64,
            kafka_partition: partition,
            kafka_offset: message.offset,
        };
        let candidate = Candidate {
            key,
            fingerprint,
            day: u16::try_from(cst_day(event.at_us)).unwrap_or(0),
            conflict: step_conflict,
            bad_review: false,
        };
        Ok((candidate, (partition_key, row)))
    }

    fn partition_of(&self, valid: &(PartitionKey, StepRow)) -> PartitionKey {
        valid.0
    }

    fn push(&self, (key, row): (PartitionKey, StepRow), rows: &mut WorkflowRows) {
        rows.keys.push(key);
        rows.rows.push(row);
    }
}

/// One row of the `workflow` table; its fields are the columns of [`workflow_schema`], by name.
#[derive(Debug, Serialize)]
pub struct StepRow {
    project_no: String,
    assess_number: i8,
    step: &'static str,
    event_at: i64,
    complex: Option<bool>,
    new_satisfaction: Option<i8>,
    decision: Option<&'static str>,
    event_fingerprint: i64,
    kafka_partition: i32,
    kafka_offset: i64,
}

/// The `workflow` table's columns.
pub fn workflow_schema() -> SchemaRef {
    static SCHEMA: std::sync::OnceLock<SchemaRef> = std::sync::OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("project_no", DataType::Utf8, false),
                Field::new("assess_number", DataType::Int8, false),
                Field::new("step", DataType::Utf8, false),
                Field::new(
                    "event_at",
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                    false,
                ),
                Field::new("complex", DataType::Boolean, true),
                Field::new("new_satisfaction", DataType::Int8, true),
                Field::new("decision", DataType::Utf8, true),
                Field::new("event_fingerprint", DataType::Int64, false),
                Field::new("kafka_partition", DataType::Int32, false),
                Field::new("kafka_offset", DataType::Int64, false),
            ]))
        })
        .clone()
}

/// A batch's workflow rows (those dedup kept), each with its Hive partition (the event's date, the
/// review's city).
pub struct WorkflowRows {
    rows: Vec<StepRow>,
    keys: Vec<PartitionKey>,
}

impl TableRows for WorkflowRows {
    fn len(&self) -> usize {
        self.rows.len()
    }

    fn finish_batch(self: Box<Self>) -> Result<(RecordBatch, Vec<PartitionKey>), TableError> {
        let schema = workflow_schema();
        Ok((serialize_rows(&schema, &self.rows)?, self.keys))
    }
}

/// One slot per (bad review, step); the fingerprint tells a redelivery from a conflicting event.
pub const DEDUP: DedupRule = DedupRule {
    columns: &["project_no", "assess_number", "step", "event_fingerprint"],
    entries: dedup_entries,
};

fn dedup_entries(
    batch: &RecordBatch,
    day: u16,
    out: &mut Vec<(u64, u64, u16)>,
) -> Result<(), String> {
    let project = text_column(batch, "project_no")?;
    let number = primitive_column::<Int8Type>(batch, "assess_number")?;
    let step = text_column(batch, "step")?;
    let fp = primitive_column::<Int64Type>(batch, "event_fingerprint")?;
    for row in 0..batch.num_rows() {
        if project.is_null(row) || step.is_null(row) {
            continue;
        }
        let Some(s) = Step::from_name(step.value(row)) else {
            continue;
        };
        out.push((
            step_key(project.value(row), number.value(row), s),
            fp.value(row) as u64,
            day,
        ));
    }
    Ok(())
}

/// Loads the registry from the lake: the bad reviews of the last `window_days` days and every step
/// the `workflow` table holds for them.
pub async fn load_registry(
    lake_root: &crate::lake::LakeRoot,
    window_days: u16,
    now_us: i64,
) -> Result<Arc<BadReviews>, crate::analytics::AnalyticsError> {
    use crate::analytics::{collect, deserialize_rows};

    #[derive(Deserialize)]
    struct Given {
        project_no: String,
        assess_number: i8,
        assessed_at: i64,
        city: String,
    }
    #[derive(Deserialize)]
    struct Taken {
        project_no: String,
        assess_number: i8,
        step: String,
        event_at: i64,
    }
    let registry = BadReviews::new();
    let since = crate::sink::parquet::format_day(cst_day(now_us) - i32::from(window_days));
    let ctx = crate::analytics::open(lake_root).await?;
    let sql = format!(
        "SELECT project_no, assess_number, assessed_at, city FROM evaluations \
         WHERE bad_review AND dt >= {}",
        crate::analytics::sql::literal(&since)
    );
    let (_, batches) = collect(&ctx, &sql).await?;
    for review in deserialize_rows::<Given>(&batches)? {
        let city = PartitionKey::new(review.assessed_at, &review.city).city;
        registry.register(
            &review.project_no,
            review.assess_number,
            review.assessed_at,
            city,
        );
    }
    let (_, batches) = collect(
        &ctx,
        "SELECT project_no, assess_number, step, event_at FROM workflow",
    )
    .await?;
    for taken in deserialize_rows::<Taken>(&batches)? {
        if let Some(step) = Step::from_name(&taken.step) {
            registry.restore_step(&taken.project_no, taken.assess_number, step, taken.event_at);
        }
    }
    Ok(registry)
}

#[cfg(test)]
mod tests;
