//! Wire boundary: bytes of one Kafka message → the national interface's evaluation fields.
//!
//! This is the only place where the official field names (`projectNo`, `satisfaction`, `areaCode`…)
//! appear. Decoding is lenient about representation (the provincial platforms send codes both as JSON
//! strings and as numbers) and strict about shape: every failure names a [`Reason`] for the
//! dead-letter topic. Strings are borrowed from the message where JSON allows it, so a well-formed
//! event is decoded without copying its text.
//!
//! Many provincial systems still send GB18030 (a superset of GBK). A message that is not UTF-8 but
//! is well-formed GB18030 is transcoded and decoded like any other (it is the only case that copies
//! its text); only bytes that are neither are rejected as `not_utf8`.
//!
//! A rejection message names the field and the problem, never the value: it travels in a DLQ header
//! that is not redacted, and a value may be an ID number sent in the wrong field.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// Why a message was rejected; the code is published in the DLQ header `haochaping.reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    Oversize,
    NotUtf8,
    NotJson,
    MissingField,
    InvalidField,
    InvalidCode,
    InvalidAreaCode,
    InvalidDeptCode,
    InvalidAssessTime,
    FutureAssessTime,
    InvalidTag,
    TagLevelMismatch,
    TextTooLong,
    BadReviewWithoutReason,
    CaseAlreadyEvaluated,
    CaseAlreadySupplemented,
    /// A time field of a case or workflow event that is not `yyyy-MM-dd HH:mm:ss`.
    InvalidTime,
    /// A time field of a case or workflow event further in the future than the allowed skew.
    FutureTime,
    /// A case whose status and dates contradict each other.
    InconsistentCase,
    /// A different record of a case status already taken.
    CaseStatusConflict,
    /// A workflow event for a bad review this engine does not know.
    UnknownBadReview,
    /// A workflow event before the step it follows, or before the review itself.
    OutOfOrder,
    /// A different event for a workflow step of a bad review already taken.
    WorkflowStepConflict,
    /// An event dated before the days deduplication remembers, whose slot it cannot check.
    OutsideDedupWindow,
}

impl Reason {
    pub const ALL: [Reason; 24] = [
        Reason::Oversize,
        Reason::NotUtf8,
        Reason::NotJson,
        Reason::MissingField,
        Reason::InvalidField,
        Reason::InvalidCode,
        Reason::InvalidAreaCode,
        Reason::InvalidDeptCode,
        Reason::InvalidAssessTime,
        Reason::FutureAssessTime,
        Reason::InvalidTag,
        Reason::TagLevelMismatch,
        Reason::TextTooLong,
        Reason::BadReviewWithoutReason,
        Reason::CaseAlreadyEvaluated,
        Reason::CaseAlreadySupplemented,
        Reason::InvalidTime,
        Reason::FutureTime,
        Reason::InconsistentCase,
        Reason::CaseStatusConflict,
        Reason::UnknownBadReview,
        Reason::OutOfOrder,
        Reason::WorkflowStepConflict,
        Reason::OutsideDedupWindow,
    ];

    /// The stable code published in DLQ headers and metrics labels.
    pub fn code(self) -> &'static str {
        match self {
            Reason::Oversize => "oversize",
            Reason::NotUtf8 => "not_utf8",
            Reason::NotJson => "not_json",
            Reason::MissingField => "missing_field",
            Reason::InvalidField => "invalid_field",
            Reason::InvalidCode => "invalid_code",
            Reason::InvalidAreaCode => "invalid_area_code",
            Reason::InvalidDeptCode => "invalid_dept_code",
            Reason::InvalidAssessTime => "invalid_assess_time",
            Reason::FutureAssessTime => "future_assess_time",
            Reason::InvalidTag => "invalid_tag",
            Reason::TagLevelMismatch => "tag_level_mismatch",
            Reason::TextTooLong => "text_too_long",
            Reason::BadReviewWithoutReason => "bad_review_without_reason",
            Reason::CaseAlreadyEvaluated => "case_already_evaluated",
            Reason::CaseAlreadySupplemented => "case_already_supplemented",
            Reason::InvalidTime => "invalid_time",
            Reason::FutureTime => "future_time",
            Reason::InconsistentCase => "inconsistent_case",
            Reason::CaseStatusConflict => "case_status_conflict",
            Reason::UnknownBadReview => "unknown_bad_review",
            Reason::OutOfOrder => "out_of_order",
            Reason::WorkflowStepConflict => "workflow_step_conflict",
            Reason::OutsideDedupWindow => "outside_dedup_window",
        }
    }

    pub fn from_code(code: &str) -> Option<Reason> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A rejected message: the reason code and a message for the human who fixes the producer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub message: String,
}

impl Rejection {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }

    /// A message of `size` bytes over the bound of `max_bytes`.
    pub fn oversize(size: usize, max_bytes: usize) -> Self {
        Self::new(
            Reason::Oversize,
            format!("message is {size} bytes, the limit is {max_bytes}"),
        )
    }
}

/// A JSON value as the wire sends it, borrowed where possible. Objects are not kept: no field of the
/// interface is an object, so one is only ever reported as the wrong type.
#[derive(Debug, Clone, PartialEq)]
pub enum WireValue<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Cow<'a, str>),
    List(Vec<WireValue<'a>>),
    Object,
}

impl WireValue<'_> {
    /// The same value owning its text (for a message that had to be transcoded).
    pub fn into_owned(self) -> WireValue<'static> {
        match self {
            WireValue::Null => WireValue::Null,
            WireValue::Bool(b) => WireValue::Bool(b),
            WireValue::Int(i) => WireValue::Int(i),
            WireValue::Float(f) => WireValue::Float(f),
            WireValue::Str(s) => WireValue::Str(Cow::Owned(s.into_owned())),
            WireValue::List(items) => {
                WireValue::List(items.into_iter().map(WireValue::into_owned).collect())
            }
            WireValue::Object => WireValue::Object,
        }
    }

    /// A short name of the JSON type, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            WireValue::Null => "null",
            WireValue::Bool(_) => "a boolean",
            WireValue::Int(_) | WireValue::Float(_) => "a number",
            WireValue::Str(_) => "a string",
            WireValue::List(_) => "an array",
            WireValue::Object => "an object",
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for WireValue<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ValueVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for ValueVisitor<'a> {
            type Value = WireValue<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(WireValue::Null)
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(WireValue::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
                Ok(WireValue::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(WireValue::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(i64::try_from(v).map_or(WireValue::Float(v as f64), WireValue::Int))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(WireValue::Float(v))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(WireValue::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(WireValue::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(WireValue::Str(Cow::Owned(v)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(WireValue::List(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(WireValue::Object)
            }
        }
        deserializer.deserialize_any(ValueVisitor(std::marker::PhantomData))
    }
}

/// One evaluation as the national interface sends it (DOMAIN.md §6). Every field is optional here;
/// the validator decides what is required, so that a missing field is reported by its name.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireEvaluation<'a> {
    #[serde(borrow)]
    pub project_no: Option<WireValue<'a>>,
    #[serde(borrow)]
    pub task_code: Option<WireValue<'a>>,
    #[serde(borrow)]
    pub task_name: Option<WireValue<'a>>,
    #[serde(borrow)]
    pub dept_code: Option<WireValue<'a>>,
    #[serde(borrow)]
    pub dept_name: Option<WireValue<'a>>,
    #[serde(borrow)]
    pub area_code: Option<WireValue<'a>>,
    #[serde(borrow)]
    pub pf: Option<WireValue<'a>>,
    #[serde(borrow)]
    pub satisfaction: Option<WireValue<'a>>,
    #[serde(borrow)]
    pub eval_detail: Option<WireValue<'a>>,
    #[serde(borrow)]
    pub writing_evaluation: Option<WireValue<'a>>,
    #[serde(borrow)]
    pub assess_time: Option<WireValue<'a>>,
    #[serde(borrow)]
    pub assess_number: Option<WireValue<'a>>,
    #[serde(borrow)]
    pub user_prop: Option<WireValue<'a>>,
    #[serde(borrow)]
    pub user_name: Option<WireValue<'a>>,
    #[serde(borrow)]
    pub user_cert: Option<WireValue<'a>>,
    #[serde(borrow)]
    pub user_phone: Option<WireValue<'a>>,
    /// A platform-side hash of the evaluator (`certKey` = hash of ID number + name).
    #[serde(borrow)]
    pub cert_key: Option<WireValue<'a>>,
    /// This engine's own key, present in DLQ records whose identity was replaced before parking.
    #[serde(borrow)]
    pub evaluator_key: Option<WireValue<'a>>,
    #[serde(borrow)]
    pub anonymity_flag: Option<WireValue<'a>>,
    #[serde(borrow)]
    pub staff_id: Option<WireValue<'a>>,
    #[serde(borrow)]
    pub staff_name: Option<WireValue<'a>>,
}

impl WireEvaluation<'_> {
    /// The same evaluation owning its text (for a message that had to be transcoded).
    pub fn into_owned(self) -> WireEvaluation<'static> {
        WireEvaluation {
            project_no: self.project_no.map(WireValue::into_owned),
            task_code: self.task_code.map(WireValue::into_owned),
            task_name: self.task_name.map(WireValue::into_owned),
            dept_code: self.dept_code.map(WireValue::into_owned),
            dept_name: self.dept_name.map(WireValue::into_owned),
            area_code: self.area_code.map(WireValue::into_owned),
            pf: self.pf.map(WireValue::into_owned),
            satisfaction: self.satisfaction.map(WireValue::into_owned),
            eval_detail: self.eval_detail.map(WireValue::into_owned),
            writing_evaluation: self.writing_evaluation.map(WireValue::into_owned),
            assess_time: self.assess_time.map(WireValue::into_owned),
            assess_number: self.assess_number.map(WireValue::into_owned),
            user_prop: self.user_prop.map(WireValue::into_owned),
            user_name: self.user_name.map(WireValue::into_owned),
            user_cert: self.user_cert.map(WireValue::into_owned),
            user_phone: self.user_phone.map(WireValue::into_owned),
            cert_key: self.cert_key.map(WireValue::into_owned),
            evaluator_key: self.evaluator_key.map(WireValue::into_owned),
            anonymity_flag: self.anonymity_flag.map(WireValue::into_owned),
            staff_id: self.staff_id.map(WireValue::into_owned),
            staff_name: self.staff_name.map(WireValue::into_owned),
        }
    }
}

/// Every field name of [`WireEvaluation`], as the wire spells it. Error messages may quote these
/// (they are ours, not input).
pub const FIELD_NAMES: [&str; 21] = [
    "projectNo",
    "taskCode",
    "taskName",
    "deptCode",
    "deptName",
    "areaCode",
    "pf",
    "satisfaction",
    "evalDetail",
    "writingEvaluation",
    "assessTime",
    "assessNumber",
    "userProp",
    "userName",
    "userCert",
    "userPhone",
    "certKey",
    "evaluatorKey",
    "anonymityFlag",
    "staffId",
    "staffName",
];

/// Identity fields of the wire format: replaced by the evaluator key before anything is stored.
pub const IDENTITY_FIELDS: [&str; 3] = ["userName", "userCert", "userPhone"];

/// Decodes one message. Checks size and encoding first so that each gets its own reason.
pub fn decode(payload: &[u8], max_bytes: usize) -> Result<WireEvaluation<'_>, Rejection> {
    if payload.len() > max_bytes {
        return Err(Rejection::oversize(payload.len(), max_bytes));
    }
    // Only a failed parse needs the full UTF-8 check, to tell a GB18030 or non-text message from
    // malformed JSON.
    match parse(payload) {
        Ok(wire) => object_only(payload.trim_ascii_start(), wire),
        Err(rejection) => {
            let utf8 = match std::str::from_utf8(payload) {
                Ok(_) => return Err(rejection),
                Err(utf8) => utf8,
            };
            let text = gb18030_text(payload).ok_or_else(|| {
                Rejection::new(
                    Reason::NotUtf8,
                    format!("message is neither UTF-8 nor GB18030: {utf8}"),
                )
            })?;
            crate::telemetry::gb18030_decoded();
            let wire: WireEvaluation<'_> =
                serde_json::from_str(&text).map_err(|e| json_rejection(&e))?;
            object_only(text.as_bytes().trim_ascii_start(), wire.into_owned())
        }
    }
}

/// Messages with more brackets than this (`[` or `{`, counted anywhere, strings included) are parsed
/// by serde_json. sonic-rs skips the value of an unknown field by recursion without a depth limit,
/// so a hostile message nested deep enough would overflow the stack; with this few brackets no
/// nesting can be deep. An evaluation has two (the object and its `evalDetail` list).
const SIMD_MAX_BRACKETS: usize = 32;

/// The wire fields of a UTF-8 message: SIMD-parsed by sonic-rs (UTF-8 checked and strings borrowed
/// in one pass) when it is safe, else by serde_json, whose depth limit answers a deep nesting.
fn parse(payload: &[u8]) -> Result<WireEvaluation<'_>, Rejection> {
    // memchr's SIMD search, stopping at the limit; a plain byte filter cost 2.5 % of all
    // instructions (callgrind).
    let brackets = memchr::memchr2_iter(b'[', b'{', payload)
        .take(SIMD_MAX_BRACKETS + 1)
        .count();
    if brackets <= SIMD_MAX_BRACKETS {
        sonic_rs::from_slice(payload).map_err(|e| simd_json_rejection(&e))
    } else {
        serde_json::from_slice(payload).map_err(|e| json_rejection(&e))
    }
}

/// The checks every stream's message passes before its fields are read: its size, and its text
/// (UTF-8, or GB18030 transcoded). For the streams other than evaluations, whose volume does not
/// need [`decode`]'s single pass.
pub fn message_text(payload: &[u8], max_bytes: usize) -> Result<Cow<'_, str>, Rejection> {
    if payload.len() > max_bytes {
        return Err(Rejection::oversize(payload.len(), max_bytes));
    }
    match std::str::from_utf8(payload) {
        Ok(text) => Ok(Cow::Borrowed(text)),
        Err(utf8) => {
            let text = gb18030_text(payload).ok_or_else(|| {
                Rejection::new(
                    Reason::NotUtf8,
                    format!("message is neither UTF-8 nor GB18030: {utf8}"),
                )
            })?;
            crate::telemetry::gb18030_decoded();
            Ok(Cow::Owned(text))
        }
    }
}

/// A message's text as a JSON object of a stream's wire fields (`W`, every field optional so the
/// validator names what is missing).
pub fn json_object<'a, W: Deserialize<'a>>(text: &'a str) -> Result<W, Rejection> {
    if text.trim_start().as_bytes().first() != Some(&b'{') {
        return Err(Rejection::new(
            Reason::NotJson,
            "message is not a JSON object of the interface's fields",
        ));
    }
    serde_json::from_str(text).map_err(|e| json_rejection(&e))
}

/// The message as text: borrowed when it is UTF-8, transcoded when it is GB18030, `None` when it is
/// neither. For code that needs the text of a message that [`decode`] has already judged (redaction).
pub fn payload_text(payload: &[u8]) -> Option<Cow<'_, str>> {
    match std::str::from_utf8(payload) {
        Ok(text) => Some(Cow::Borrowed(text)),
        Err(_) => gb18030_text(payload).map(Cow::Owned),
    }
}

/// GB18030 text, or `None` when the bytes hold a malformed sequence. No BOM handling: a message
/// starting with one is not JSON either way.
fn gb18030_text(payload: &[u8]) -> Option<String> {
    encoding_rs::GB18030
        .decode_without_bom_handling_and_without_replacement(payload)
        .map(Cow::into_owned)
}

/// serde derives struct deserialisation from JSON arrays too (fields by position), so a 21-element
/// array would pass as an evaluation: the interface sends objects only.
fn object_only<'a>(
    trimmed: &[u8],
    wire: WireEvaluation<'a>,
) -> Result<WireEvaluation<'a>, Rejection> {
    if trimmed.first() == Some(&b'{') {
        Ok(wire)
    } else {
        Err(Rejection::new(
            Reason::NotJson,
            "message is not a JSON object of evaluation fields",
        ))
    }
}

/// The rejection of a message serde_json could not read. serde's text quotes the offending input
/// (`invalid type: string "110101199003071234", expected …`); the message keeps what it says about
/// the problem and where, without the value.
fn json_rejection(e: &serde_json::Error) -> Rejection {
    let text = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    let what = match e.classify() {
        serde_json::error::Category::Data => "not a JSON object of evaluation fields",
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => "not valid JSON",
    };
    not_json(
        what,
        text.strip_suffix(&position).unwrap_or(&text),
        e.line(),
        e.column(),
    )
}

/// The same for sonic-rs, whose error text also ends with a fragment of the input after the
/// position: only the part before the position is used.
fn simd_json_rejection(e: &sonic_rs::Error) -> Rejection {
    let text = e.to_string();
    let what = match e.classify() {
        sonic_rs::error::Category::Syntax | sonic_rs::error::Category::Eof => "not valid JSON",
        sonic_rs::error::Category::Io => "unreadable",
        _ => "not a JSON object of evaluation fields",
    };
    let problem = text.split(" at line ").next().unwrap_or_default();
    not_json(what, problem, e.line(), e.column())
}

/// `message is {what}: {problem} (line …, column …)`, with every value quoted in `problem` removed.
fn not_json(what: &str, problem: &str, line: usize, column: usize) -> Rejection {
    Rejection::new(
        Reason::NotJson,
        format!(
            "message is {what}: {} (line {line}, column {column})",
            without_values(problem)
        ),
    )
}

/// `text` with every quoted part (`"…"` with escapes, or `` `…` ``) replaced by `…`, unless it is one
/// of our field names. serde quotes exactly the values it reports, so this removes them whatever the
/// wording around them.
pub fn without_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.char_indices();
    while let Some((start, c)) = chars.next() {
        if c != '"' && c != '`' {
            out.push(c);
            continue;
        }
        let mut end = None;
        let mut escaped = false;
        for (i, d) in chars.by_ref() {
            if escaped {
                escaped = false;
            } else if c == '"' && d == '\\' {
                escaped = true;
            } else if d == c {
                end = Some(i);
                break;
            }
        }
        // An unterminated quote hides the rest of the text.
        let inner = end.map_or("", |end| &text[start + 1..end]);
        if FIELD_NAMES.contains(&inner) {
            out.push(c);
            out.push_str(inner);
            out.push(c);
        } else {
            out.push('…');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_strings_and_numbers_borrowed() {
        let raw = br#"{"projectNo":"P1","satisfaction":5,"pf":"4","evalDetail":["510",511],"extra":{"a":1}}"#;
        let wire = decode(raw, 1024).unwrap();
        assert!(matches!(
            wire.project_no,
            Some(WireValue::Str(Cow::Borrowed("P1")))
        ));
        assert_eq!(wire.satisfaction, Some(WireValue::Int(5)));
        assert_eq!(wire.pf, Some(WireValue::Str("4".into())));
        assert_eq!(
            wire.eval_detail,
            Some(WireValue::List(vec![
                WireValue::Str("510".into()),
                WireValue::Int(511)
            ]))
        );
    }

    #[test]
    fn rejects_by_reason() {
        let cases: &[(&[u8], usize, Reason)] = &[
            (b"{}", 1, Reason::Oversize),
            (b"{\"projectNo\":\"\xff\"}", 100, Reason::NotUtf8),
            // A GB18030 lead byte followed by a quote is a malformed sequence.
            (b"{\"projectNo\":\"\x81\"}", 100, Reason::NotUtf8),
            // A two-byte sequence cut short at the end.
            (b"{\"projectNo\":\"P\"}\xd5", 100, Reason::NotUtf8),
            (b"\xfe\xff", 100, Reason::NotUtf8),
            (b"not json", 100, Reason::NotJson),
            (b"[1,2]", 100, Reason::NotJson),
            (b"\"text\"", 100, Reason::NotJson),
            (
                b"{\"projectNo\":\"a\",\"projectNo\":\"b\"}",
                100,
                Reason::NotJson,
            ),
            (b"{\"projectNo\":", 100, Reason::NotJson),
            // Valid GB18030 text, but not JSON.
            (b"\xd5\xc5\xc8\xfd", 100, Reason::NotJson),
        ];
        for (raw, max, reason) in cases {
            let got = decode(raw, *max).map(|_| ()).unwrap_err();
            assert_eq!(got.reason, *reason, "{}", String::from_utf8_lossy(raw));
            assert!(!got.message.is_empty());
        }
    }

    #[test]
    fn an_array_of_values_is_not_an_evaluation() {
        // serde would read a struct from an array by position.
        let values = vec![serde_json::json!("1"); FIELD_NAMES.len()];
        let raw = serde_json::to_vec(&values).unwrap();
        let got = decode(&raw, 1 << 16).map(|_| ()).unwrap_err();
        assert_eq!(got.reason, Reason::NotJson);
        let array = format!(" [\"张\"{}]", ",1".repeat(20));
        let gb = encoding_rs::GB18030.encode(&array).0;
        assert_eq!(
            decode(&gb, 1 << 16).map(|_| ()).unwrap_err().reason,
            Reason::NotJson
        );
    }

    /// A full evaluation in Chinese, as a provincial system sends it in GB18030.
    fn chinese_evaluation() -> String {
        serde_json::json!({
            "projectNo": "410328-2026-000001",
            "taskCode": "11410328MB1234567X4000117004000",
            "taskName": "城乡居民基本养老保险参保登记",
            "deptCode": "11410328MB00000015",
            "deptName": "洛宁县人力资源和社会保障局",
            "areaCode": "410328100201",
            "pf": "4",
            "satisfaction": "2",
            "evalDetail": "210",
            "writingEvaluation": "排队两小时，窗口人员态度冷淡。\n希望增加窗口。",
            "assessTime": "2026-11-22 10:15:00",
            "assessNumber": 1,
            "userProp": "1",
            "userName": "张三",
            "userCert": "410328199001011234",
            "userPhone": "13800000000",
            "staffId": "LN0012",
            "staffName": "李四"
        })
        .to_string()
    }

    #[test]
    fn gb18030_payloads_decode_like_utf8_and_are_counted() {
        let text = chinese_evaluation();
        let (gb, _, unmappable) = encoding_rs::GB18030.encode(&text);
        assert!(!unmappable);
        assert!(
            std::str::from_utf8(&gb).is_err(),
            "the test needs non-UTF-8 bytes"
        );
        let (from_gb, counted) =
            crate::telemetry::testing::counted(crate::telemetry::GB18030_DECODED, || {
                decode(&gb, 1 << 16)
            });
        let from_gb = from_gb.unwrap();
        assert_eq!(counted, 1);
        let (from_utf8, counted) =
            crate::telemetry::testing::counted(crate::telemetry::GB18030_DECODED, || {
                decode(text.as_bytes(), 1 << 16)
            });
        let from_utf8 = from_utf8.unwrap();
        assert_eq!(counted, 0, "UTF-8 is not counted");
        assert_eq!(format!("{from_gb:?}"), format!("{from_utf8:?}"));
        assert_eq!(from_gb.user_name, Some(WireValue::Str("张三".into())));
        assert!(
            matches!(from_utf8.user_name, Some(WireValue::Str(Cow::Borrowed(_)))),
            "UTF-8 stays zero-copy"
        );
        assert_eq!(payload_text(&gb).as_deref(), Some(text.as_str()));
        // And it is processed normally: a valid evaluation.
        let evaluation = crate::transform::validate::validate(
            from_gb,
            &crate::transform::validate::ValidationRules::default(),
            i64::MAX / 2,
        )
        .unwrap();
        assert_eq!(evaluation.task_name, "城乡居民基本养老保险参保登记");
        assert_eq!(
            evaluation.text.as_deref(),
            Some("排队两小时，窗口人员态度冷淡。\n希望增加窗口。")
        );
        assert_eq!(evaluation.identity.name.as_deref(), Some("张三"));
        assert_eq!(payload_text(b"\xff"), None);
    }

    #[test]
    fn both_parsers_read_a_message_alike() {
        // The generator's evaluations (its invalid ones included), and one with brackets in its free
        // text (which sends it to serde_json): the SIMD path and serde_json agree on every field,
        // and on which messages are not JSON at all.
        let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        let generator =
            crate::generate::Generator::new(crate::generate::GeneratorConfig::new("41", day))
                .unwrap();
        let mut compared = 0;
        for event in generator.take(2000) {
            let serde: Result<WireEvaluation<'_>, _> = serde_json::from_slice(&event.payload);
            let simd: Result<WireEvaluation<'_>, _> = sonic_rs::from_slice(&event.payload);
            let (serde, simd) = match (serde, simd) {
                (Ok(serde), Ok(simd)) => (serde, simd),
                (Err(_), Err(_)) => continue,
                (serde, simd) => panic!(
                    "serde_json parsed: {}, sonic-rs parsed: {}",
                    serde.is_ok(),
                    simd.is_ok()
                ),
            };
            assert_eq!(format!("{serde:?}"), format!("{simd:?}"));
            let decoded = decode(&event.payload, 1 << 16).unwrap();
            assert_eq!(format!("{decoded:?}"), format!("{serde:?}"));
            compared += 1;
        }
        assert!(compared > 1900, "{compared}");
        let bracketed = format!(
            r#"{{"projectNo":"P1","writingEvaluation":"{}","evalDetail":["a"],"x":{{"y":[1]}}}}"#,
            "[{".repeat(40)
        );
        let simd: WireEvaluation<'_> = sonic_rs::from_slice(bracketed.as_bytes()).unwrap();
        let decoded = decode(bracketed.as_bytes(), 1 << 16).unwrap();
        assert_eq!(format!("{decoded:?}"), format!("{simd:?}"));
    }

    #[test]
    fn deep_nesting_is_rejected_not_a_stack_overflow() {
        // A value nested far deeper than any evaluation: the parser's depth limit answers, in every
        // field and at the top, within the size limit.
        for depth in [300, 100_000] {
            let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            for raw in [
                deep.clone(),
                format!("{{\"pf\":{deep}}}"),
                format!("{{\"evalDetail\":{deep},\"pf\":1}}"),
            ] {
                let got = decode(raw.as_bytes(), 1 << 20).map(|_| ()).unwrap_err();
                assert_eq!(got.reason, Reason::NotJson, "{depth}: {}", got.message);
            }
        }
        // A shallow list is still a list (the validator judges it).
        let wire = decode(br#"{"evalDetail":[["a"]]}"#, 100).unwrap();
        assert!(matches!(wire.eval_detail, Some(WireValue::List(_))));
    }

    #[test]
    fn rejection_messages_never_echo_the_value() {
        let id = "110101199003071234";
        let cases: Vec<Vec<u8>> = vec![
            format!("\"{id}\"").into_bytes(),
            id.as_bytes().to_vec(),
            format!("[\"{id}\"]").into_bytes(),
            format!("{{\"userCert\":\"{id}\",\"userCert\":\"{id}\"}}").into_bytes(),
            format!("{{\"userCert\":\"{id}").into_bytes(),
            format!("{{\"userCert\":\"{id}\" x}}").into_bytes(),
            format!("{{\"userCert\":{id}e999}}").into_bytes(),
            format!("{{\"userCert\":\"{id}\\q\"}}").into_bytes(),
            encoding_rs::GB18030
                .encode(&format!("\"张三{id}\""))
                .0
                .into_owned(),
            encoding_rs::GB18030
                .encode(&format!("{{\"userName\":\"张三\",\"userName\":\"{id}\"}}"))
                .0
                .into_owned(),
        ];
        for raw in &cases {
            let got = decode(raw, 1 << 16).map(|_| ()).unwrap_err();
            let shown = String::from_utf8_lossy(raw);
            // No six consecutive characters of the value, nor the name.
            for part in id.as_bytes().windows(6).chain(["张三".as_bytes()]) {
                let part = std::str::from_utf8(part).unwrap();
                assert!(
                    !got.message.contains(part),
                    "{shown}: {part} in {:?}",
                    got.message
                );
            }
        }
        let duplicate = decode(br#"{"userCert":"1","userCert":"2"}"#, 100).unwrap_err();
        assert!(
            duplicate.message.contains("`userCert`"),
            "the field is named: {}",
            duplicate.message
        );
    }

    #[test]
    fn without_values_keeps_field_names_only() {
        let cases = [
            (
                r#"invalid type: string "110101199003071234", expected struct WireEvaluation"#,
                "invalid type: string …, expected struct WireEvaluation",
            ),
            (
                "invalid type: integer `110101199003071234`, expected a string",
                "invalid type: integer …, expected a string",
            ),
            (r#"string "a\"b\\" end"#, "string … end"),
            ("duplicate field `projectNo`", "duplicate field `projectNo`"),
            ("unknown field `projectNumber`", "unknown field …"),
            (r#"cut "1101011990"#, "cut …"),
            ("expected value", "expected value"),
            ("", ""),
        ];
        for (text, expected) in cases {
            assert_eq!(without_values(text), expected, "{text}");
        }
    }

    #[test]
    fn field_names_are_the_wire_names() {
        let object: serde_json::Map<String, serde_json::Value> = FIELD_NAMES
            .iter()
            .map(|name| (name.to_string(), serde_json::json!(1)))
            .collect();
        let raw = serde_json::to_vec(&object).unwrap();
        let wire = decode(&raw, 1 << 16).unwrap();
        // Every field of the struct was filled, so every name is one of them.
        let filled = format!("{wire:?}").matches("Some(Int(1))").count();
        assert_eq!(filled, FIELD_NAMES.len());
    }

    #[test]
    fn reason_codes_round_trip() {
        for reason in Reason::ALL {
            assert_eq!(Reason::from_code(reason.code()), Some(reason));
        }
    }
}
