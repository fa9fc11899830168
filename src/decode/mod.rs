//! Wire boundary: bytes of one Kafka message → the national interface's evaluation fields.
//!
//! This is the only place where the official field names (`projectNo`, `satisfaction`, `areaCode`…)
//! appear. Decoding is lenient about representation (the provincial platforms send codes both as JSON
//! strings and as numbers) and strict about shape: every failure names a [`Reason`] for the
//! dead-letter topic. Strings are borrowed from the message where JSON allows it, so a well-formed
//! event is decoded without copying its text.

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
}

impl Reason {
    pub const ALL: [Reason; 16] = [
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

/// Identity fields of the wire format: replaced by the evaluator key before anything is stored.
pub const IDENTITY_FIELDS: [&str; 3] = ["userName", "userCert", "userPhone"];

/// Decodes one message. Checks size and UTF-8 first so that each gets its own reason.
pub fn decode(payload: &[u8], max_bytes: usize) -> Result<WireEvaluation<'_>, Rejection> {
    if payload.len() > max_bytes {
        return Err(Rejection::new(
            Reason::Oversize,
            format!(
                "message is {} bytes, the limit is {max_bytes}",
                payload.len()
            ),
        ));
    }
    // serde_json checks UTF-8 inside strings as it parses; only a failed parse needs the full check,
    // to tell a non-UTF-8 message from malformed JSON.
    serde_json::from_slice(payload).map_err(|e| {
        if let Err(utf8) = std::str::from_utf8(payload) {
            return Rejection::new(Reason::NotUtf8, format!("message is not UTF-8: {utf8}"));
        }
        let message = if e.classify() == serde_json::error::Category::Data {
            format!("message is not a JSON object of evaluation fields: {e}")
        } else {
            format!("message is not valid JSON: {e}")
        };
        Rejection::new(Reason::NotJson, message)
    })
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
            (b"not json", 100, Reason::NotJson),
            (b"[1,2]", 100, Reason::NotJson),
            (b"\"text\"", 100, Reason::NotJson),
            (
                b"{\"projectNo\":\"a\",\"projectNo\":\"b\"}",
                100,
                Reason::NotJson,
            ),
            (b"{\"projectNo\":", 100, Reason::NotJson),
        ];
        for (raw, max, reason) in cases {
            let got = decode(raw, *max).map(|_| ()).unwrap_err();
            assert_eq!(got.reason, *reason, "{}", String::from_utf8_lossy(raw));
            assert!(!got.message.is_empty());
        }
    }

    #[test]
    fn reason_codes_round_trip() {
        for reason in Reason::ALL {
            assert_eq!(Reason::from_code(reason.code()), Some(reason));
        }
    }
}
