//! The cases stream (办件): a case's lifecycle as the service systems report it, one record per
//! status (1 pending acceptance 待受理, 2 accepted 已受理, 3 finished 已办结), in the `cases` table.
//!
//! Cases are what evaluations are measured against: a finished case with no evaluation gets its
//! region's default evaluation once the policy's period has passed, and the effective evaluation
//! rate is evaluated finished cases over finished cases ([`crate::analytics`]). The wire format is
//! the national interface's (DOMAIN.md §6, `schemas/case.schema.json`); the applicant's identity is
//! replaced by the same keyed hash as an evaluator's, so a case and its evaluation join on it.
//!
//! Dedup keeps one record per (case, status): a redelivery is dropped, a different record of a
//! status already taken is a `case_status_conflict` for the dead-letter topic.

use std::borrow::Cow;

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Int64Type, Int8Type, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::transform::dedup::hash_fields;

use super::{primitive_column, text_column, DedupRule, Stream};
use crate::decode::{json_object, message_text, Reason, Rejection, WireValue};
use crate::region::RegionCode;
use crate::sink::parquet::{cst_day, serialize_rows, PartitionKey, TableError, TableRows};
use crate::transform::identity::EvaluatorKeyer;
use crate::transform::validate::{
    check_credit_code, clean, identifier_flaw, optional_text, parse_cst_time, required_code,
    required_text, text_flaw, EvaluatorKind, Identity, ValidationRules,
};
use crate::transform::{Candidate, Message};

/// The lake table's name and folder under the lake root.
pub const CASES_TABLE: &str = "cases";

/// Where a case stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CaseStatus {
    /// 待受理: generated (办件生成), not yet accepted.
    Pending,
    /// 已受理
    Accepted,
    /// 已办结: the service is finished; the case can be evaluated.
    Finished,
}

impl CaseStatus {
    pub fn from_code(code: i64) -> Option<Self> {
        match code {
            1 => Some(Self::Pending),
            2 => Some(Self::Accepted),
            3 => Some(Self::Finished),
            _ => None,
        }
    }

    pub fn code(self) -> u8 {
        match self {
            Self::Pending => 1,
            Self::Accepted => 2,
            Self::Finished => 3,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Accepted => "accepted",
            Self::Finished => "finished",
        }
    }
}

/// One case record as the interface sends it; every field optional so the validator names what is
/// missing.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireCase<'a> {
    #[serde(borrow)]
    project_no: Option<WireValue<'a>>,
    #[serde(borrow)]
    task_code: Option<WireValue<'a>>,
    #[serde(borrow)]
    task_name: Option<WireValue<'a>>,
    #[serde(borrow)]
    dept_code: Option<WireValue<'a>>,
    #[serde(borrow)]
    dept_name: Option<WireValue<'a>>,
    #[serde(borrow)]
    area_code: Option<WireValue<'a>>,
    #[serde(borrow)]
    pro_status: Option<WireValue<'a>>,
    #[serde(borrow)]
    apply_date: Option<WireValue<'a>>,
    #[serde(borrow)]
    accept_date: Option<WireValue<'a>>,
    #[serde(borrow)]
    result_date: Option<WireValue<'a>>,
    #[serde(borrow)]
    project_type: Option<WireValue<'a>>,
    #[serde(borrow)]
    user_prop: Option<WireValue<'a>>,
    #[serde(borrow)]
    user_name: Option<WireValue<'a>>,
    #[serde(borrow)]
    user_cert: Option<WireValue<'a>>,
    #[serde(borrow)]
    user_phone: Option<WireValue<'a>>,
    #[serde(borrow)]
    cert_key: Option<WireValue<'a>>,
    #[serde(borrow)]
    evaluator_key: Option<WireValue<'a>>,
}

/// A valid case record.
#[derive(Debug, Clone, PartialEq)]
pub struct Case<'a> {
    pub project_no: Cow<'a, str>,
    pub status: CaseStatus,
    pub task_code: Cow<'a, str>,
    pub task_name: Cow<'a, str>,
    pub dept_code: Cow<'a, str>,
    pub dept_name: Option<Cow<'a, str>>,
    pub area: RegionCode,
    /// When the case was generated (办件生成); UTC microseconds.
    pub applied_at_us: Option<i64>,
    pub accepted_at_us: Option<i64>,
    pub finished_at_us: Option<i64>,
    /// `on_the_spot` (即办, 1) or `promised` (承诺, 2).
    pub project_type: Option<&'static str>,
    pub applicant_kind: Option<EvaluatorKind>,
    pub identity: Identity<'a>,
}

impl Case<'_> {
    /// The time of the record's status: when the case was generated, accepted or finished.
    pub fn event_at_us(&self) -> i64 {
        match self.status {
            CaseStatus::Pending => self.applied_at_us,
            CaseStatus::Accepted => self.accepted_at_us,
            CaseStatus::Finished => self.finished_at_us,
        }
        .unwrap_or_default()
    }
}

/// Validates one case record; `now_us` is the current time (UTC microseconds).
pub fn validate_case<'a>(
    text: &'a str,
    rules: &ValidationRules,
    now_us: i64,
) -> Result<Case<'a>, Rejection> {
    let wire: WireCase<'a> = json_object(text)?;
    let limit = rules.max_field_chars;
    let identifier = |field: &str, value| {
        required_text(field, value, limit).and_then(|t| clean(field, t, identifier_flaw))
    };
    let project_no = identifier("projectNo", wire.project_no)?;
    let status = required_code("proStatus", wire.pro_status, CaseStatus::from_code)?;
    let task_code = identifier("taskCode", wire.task_code)?;
    let task_name = required_text("taskName", wire.task_name, limit)
        .and_then(|t| clean("taskName", t, |t| text_flaw(t, false)))?;
    let dept_code = identifier("deptCode", wire.dept_code)?;
    check_credit_code(&dept_code)?;
    let dept_name = optional_text("deptName", wire.dept_name, limit)?
        .map(|t| clean("deptName", t, |t| text_flaw(t, false)))
        .transpose()?;
    let area_text = identifier("areaCode", wire.area_code)?;
    let area = RegionCode::parse(&area_text)
        .map_err(|e| Rejection::new(Reason::InvalidAreaCode, format!("field areaCode {e}")))?;
    let time = |field: &str, value| -> Result<Option<i64>, Rejection> {
        optional_text(field, value, limit)?
            .map(|t| {
                parse_cst_time(
                    field,
                    &t,
                    now_us,
                    rules.max_clock_skew,
                    (Reason::InvalidTime, Reason::FutureTime),
                )
            })
            .transpose()
    };
    let applied_at_us = time("applyDate", wire.apply_date)?;
    let accepted_at_us = time("acceptDate", wire.accept_date)?;
    let finished_at_us = time("resultDate", wire.result_date)?;
    let project_type = match wire.project_type {
        None | Some(WireValue::Null) => None,
        value => Some(required_code("projectType", value, |c| match c {
            1 => Some("on_the_spot"),
            2 => Some("promised"),
            _ => None,
        })?),
    };
    let applicant_kind = match wire.user_prop {
        None | Some(WireValue::Null) => None,
        value => Some(required_code("userProp", value, EvaluatorKind::from_code)?),
    };
    let identity = Identity {
        name: optional_text("userName", wire.user_name, limit)?,
        cert: optional_text("userCert", wire.user_cert, limit)?,
        phone: optional_text("userPhone", wire.user_phone, limit)?,
        cert_key: optional_text("certKey", wire.cert_key, limit)?,
        evaluator_key: optional_text("evaluatorKey", wire.evaluator_key, limit)?,
    };
    crate::transform::validate::check_evaluator_key(&identity)?;
    let case = Case {
        project_no,
        status,
        task_code,
        task_name,
        dept_code,
        dept_name,
        area,
        applied_at_us,
        accepted_at_us,
        finished_at_us,
        project_type,
        applicant_kind,
        identity,
    };
    check_lifecycle(&case)?;
    Ok(case)
}

/// A status needs the date it happened on, and the dates of a case run forward. Pure.
pub fn check_lifecycle(case: &Case<'_>) -> Result<(), Rejection> {
    let missing = |field: &str| {
        Err(Rejection::new(
            Reason::MissingField,
            format!(
                "field {field} is required for proStatus {} ({})",
                case.status.code(),
                case.status.name()
            ),
        ))
    };
    match case.status {
        CaseStatus::Pending if case.applied_at_us.is_none() => return missing("applyDate"),
        CaseStatus::Accepted | CaseStatus::Finished if case.accepted_at_us.is_none() => {
            return missing("acceptDate")
        }
        CaseStatus::Finished if case.finished_at_us.is_none() => return missing("resultDate"),
        _ => {}
    }
    let order = [
        ("applyDate", case.applied_at_us),
        ("acceptDate", case.accepted_at_us),
        ("resultDate", case.finished_at_us),
    ];
    let present: Vec<(&str, i64)> = order
        .iter()
        .filter_map(|(field, at)| at.map(|at| (*field, at)))
        .collect();
    if let Some(pair) = present.windows(2).find(|w| w[1].1 < w[0].1) {
        return Err(Rejection::new(
            Reason::InconsistentCase,
            format!("field {} is before {}", pair[1].0, pair[0].0),
        ));
    }
    if case.status != CaseStatus::Finished && case.finished_at_us.is_some() {
        return Err(Rejection::new(
            Reason::InconsistentCase,
            format!(
                "field resultDate is set but proStatus is {} ({})",
                case.status.code(),
                case.status.name()
            ),
        ));
    }
    Ok(())
}

/// The dedup key of a case's record of one status.
pub fn case_key(project_no: &str, status: CaseStatus) -> u64 {
    // A seed of its own, apart from the evaluations' (1 and 2), though the tables are apart anyway.
    xxh3_64_with_seed(
        project_no.as_bytes(),
        0xca5e_0000 + u64::from(status.code()),
    )
}

fn case_fingerprint(case: &Case<'_>, applicant_key: Option<&str>) -> u64 {
    hash_fields(|f| {
        f.field(case.project_no.as_bytes());
        f.field(&[
            case.status.code(),
            case.applicant_kind.map_or(0, EvaluatorKind::code),
        ]);
        f.field(case.task_code.as_bytes());
        f.field(case.task_name.as_bytes());
        f.field(case.dept_code.as_bytes());
        f.field(case.dept_name.as_deref().unwrap_or("").as_bytes());
        f.field(case.area.as_str().as_bytes());
        for at in [case.applied_at_us, case.accepted_at_us, case.finished_at_us] {
            f.field(&at.unwrap_or(i64::MIN).to_le_bytes());
        }
        f.field(case.project_type.unwrap_or("").as_bytes());
        f.field(applicant_key.unwrap_or("").as_bytes());
    })
}

fn status_conflict() -> Rejection {
    Rejection::new(
        Reason::CaseStatusConflict,
        "the case already has a different record of this proStatus",
    )
}

/// The cases stream: validation rules and the keyer shared with evaluations.
#[derive(Debug, Clone)]
pub struct Cases {
    rules: ValidationRules,
    keyer: EvaluatorKeyer,
}

impl Cases {
    pub fn new(rules: ValidationRules, keyer: EvaluatorKeyer) -> Self {
        Self { rules, keyer }
    }

    /// The stream an ingest configuration describes (the evaluations' rules and identity secret).
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
}

impl Stream for Cases {
    type Rows = CaseRows;
    type Valid<'a> = (PartitionKey, CaseRow);

    fn table(&self) -> &'static str {
        CASES_TABLE
    }

    fn dedup(&self) -> DedupRule {
        DEDUP
    }

    fn rows(&self, capacity: usize) -> CaseRows {
        CaseRows {
            rows: Vec::with_capacity(capacity),
            keys: Vec::with_capacity(capacity),
        }
    }

    fn check<'a>(
        &self,
        message: &Message<'a>,
        partition: i32,
        now_us: i64,
    ) -> Result<(Candidate, (PartitionKey, CaseRow)), Rejection> {
        let text = message_text(message.payload, self.rules.max_message_bytes)?;
        let case = validate_case(&text, &self.rules, now_us)?;
        let applicant_key = self.keyer.key(&case.identity);
        let fingerprint = case_fingerprint(&case, applicant_key.as_deref());
        let event_at_us = case.event_at_us();
        let key = PartitionKey::from_digits(event_at_us, case.area.city_partition_digits().bytes());
        let row = CaseRow {
            project_no: case.project_no.clone().into_owned(),
            status: case.status.code() as i8,
            status_name: case.status.name(),
            task_code: case.task_code.into_owned(),
            task_name: case.task_name.into_owned(),
            dept_code: case.dept_code.into_owned(),
            dept_name: case.dept_name.map(Cow::into_owned),
            area_code: case.area.as_str().to_owned(),
            province_code: case.area.province(),
            city_code: case.area.city(),
            county_code: case.area.county(),
            applied_at: case.applied_at_us,
            accepted_at: case.accepted_at_us,
            finished_at: case.finished_at_us,
            event_at: event_at_us,
            project_type: case.project_type,
            applicant_kind: case.applicant_kind.map(EvaluatorKind::name),
            applicant_key: applicant_key.map(String::from),
            event_fingerprint: fingerprint as i64,
            kafka_partition: partition,
            kafka_offset: message.offset,
        };
        let candidate = Candidate {
            key: case_key(&case.project_no, case.status),
            fingerprint,
            day: u16::try_from(cst_day(event_at_us)).unwrap_or(0),
            conflict: status_conflict,
            bad_review: false,
        };
        Ok((candidate, (key, row)))
    }

    fn partition_of(&self, valid: &(PartitionKey, CaseRow)) -> PartitionKey {
        valid.0
    }

    fn push(&self, (key, row): (PartitionKey, CaseRow), rows: &mut CaseRows) {
        rows.keys.push(key);
        rows.rows.push(row);
    }
}

/// One row of the `cases` table; its fields are the columns of [`cases_schema`], by name.
#[derive(Debug, Serialize)]
pub struct CaseRow {
    project_no: String,
    status: i8,
    status_name: &'static str,
    task_code: String,
    task_name: String,
    dept_code: String,
    dept_name: Option<String>,
    area_code: String,
    province_code: String,
    city_code: Option<String>,
    county_code: Option<String>,
    applied_at: Option<i64>,
    accepted_at: Option<i64>,
    finished_at: Option<i64>,
    event_at: i64,
    project_type: Option<&'static str>,
    applicant_kind: Option<&'static str>,
    applicant_key: Option<String>,
    event_fingerprint: i64,
    kafka_partition: i32,
    kafka_offset: i64,
}

/// The `cases` table's columns.
pub fn cases_schema() -> SchemaRef {
    static SCHEMA: std::sync::OnceLock<SchemaRef> = std::sync::OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
            let time = |name: &str, nullable| {
                Field::new(
                    name,
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                    nullable,
                )
            };
            std::sync::Arc::new(Schema::new(vec![
                text("project_no", false),
                Field::new("status", DataType::Int8, false),
                text("status_name", false),
                text("task_code", false),
                text("task_name", false),
                text("dept_code", false),
                text("dept_name", true),
                text("area_code", false),
                text("province_code", false),
                text("city_code", true),
                text("county_code", true),
                time("applied_at", true),
                time("accepted_at", true),
                time("finished_at", true),
                time("event_at", false),
                text("project_type", true),
                text("applicant_kind", true),
                text("applicant_key", true),
                Field::new("event_fingerprint", DataType::Int64, false),
                Field::new("kafka_partition", DataType::Int32, false),
                Field::new("kafka_offset", DataType::Int64, false),
            ]))
        })
        .clone()
}

/// A batch's case rows (those dedup kept), with each row's Hive partition (the date and city of its
/// status).
pub struct CaseRows {
    rows: Vec<CaseRow>,
    keys: Vec<PartitionKey>,
}

impl TableRows for CaseRows {
    fn len(&self) -> usize {
        self.rows.len()
    }

    fn finish_batch(self: Box<Self>) -> Result<(RecordBatch, Vec<PartitionKey>), TableError> {
        Ok((serialize_rows(&cases_schema(), &self.rows)?, self.keys))
    }
}

/// One slot per (case, status); the fingerprint tells a redelivery from a conflicting record.
pub const DEDUP: DedupRule = DedupRule {
    columns: &["project_no", "status", "event_fingerprint"],
    entries: dedup_entries,
};

fn dedup_entries(
    batch: &RecordBatch,
    day: u16,
    out: &mut Vec<(u64, u64, u16)>,
) -> Result<(), String> {
    let project = text_column(batch, "project_no")?;
    let status = primitive_column::<Int8Type>(batch, "status")?;
    let fp = primitive_column::<Int64Type>(batch, "event_fingerprint")?;
    for row in 0..batch.num_rows() {
        if project.is_null(row) {
            continue;
        }
        let Some(status) = CaseStatus::from_code(i64::from(status.value(row))) else {
            continue;
        };
        out.push((
            case_key(project.value(row), status),
            fp.value(row) as u64,
            day,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
