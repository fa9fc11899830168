//! Property tests of the input boundary, run in CI with a bounded number of cases.
//!
//! Arbitrary bytes, JSON objects with the interface's field names and random values, and mutations
//! of a valid evaluation (including GB18030 encodings) go through the engine's own chain,
//! [`haochaping::transform::process_one`] (decode → validate → identity → dedup → rows), and, when rejected, through
//! the dead-letter redaction. Whatever comes in:
//! - nothing panics;
//! - the outcome is an accepted row or a rejection with a reason code and a message;
//! - no rejection message holds a clear-text identity value of the input (`userName`, `userCert`,
//!   `userPhone`), wherever the producer put it;
//! - an accepted row carries no clear identity: its evaluator key is one of the engine's
//!   ([`is_evaluator_key`]), and no cell holds an identity value;
//! - a redacted dead letter has no identity field and no foreign `evaluatorKey`.
//!
//! `HAOCHAPING_FUZZ_CASES` raises the number of cases per property for a longer local run.

use arrow::array::{Array, StringArray};
use arrow::datatypes::DataType;
use haochaping::decode::{Reason, FIELD_NAMES};
use haochaping::transform::dedup::DedupState;
use haochaping::transform::identity::{is_evaluator_key, EvaluatorKeyer, REDACTED_FIELDS};
use haochaping::transform::validate::ValidationRules;
use haochaping::transform::{process_one, Message, Outcome, Processor};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{Map, Value};

/// 2026-11-22 12:00:00 CST, shortly after the base evaluation.
const NOW_US: i64 = 1_795_320_000_000_000;

fn config() -> ProptestConfig {
    let cases = std::env::var("HAOCHAPING_FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(2000);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// A valid evaluation; its identity fields are replaced by each case.
fn base() -> Map<String, Value> {
    let value = serde_json::json!({
        "projectNo": "410328-2026-000001",
        "taskCode": "11410328MB1234567X4000117004000",
        "taskName": "城乡居民基本养老保险参保登记",
        "deptCode": "11410328MB00000015",
        "deptName": "洛宁县人力资源和社会保障局",
        "areaCode": "410328100201",
        "pf": "4",
        "satisfaction": "5",
        "evalDetail": "510,511",
        "writingEvaluation": "窗口人员服务热情",
        "assessTime": "2026-11-22 10:15:00",
        "assessNumber": 1,
        "userProp": "1",
        "anonymityFlag": "2",
        "staffId": "LN0012",
        "staffName": "李四"
    });
    match value {
        Value::Object(map) => map,
        _ => unreachable!("a JSON object literal"),
    }
}

const IDENTITY: [&str; 3] = ["userName", "userCert", "userPhone"];

// Name characters that occur nowhere else in the fixtures or in rejection messages, so that finding
// one of these names in an output can only mean that the identity leaked.
const SURNAMES: &[char] = &[
    '赵', '钱', '孙', '周', '吴', '郑', '王', '冯', '陈', '褚', '卫', '蒋', '沈', '韩', '杨',
];
const GIVEN: &[char] = &[
    '伟', '芳', '娜', '秀', '英', '敏', '静', '丽', '强', '磊', '军', '洋', '勇', '艳', '杰', '涛',
];

fn person_name() -> impl Strategy<Value = String> {
    (
        prop::sample::select(SURNAMES),
        prop::collection::vec(prop::sample::select(GIVEN), 1..3),
    )
        .prop_map(|(surname, given)| std::iter::once(surname).chain(given).collect::<String>())
}

/// A clear identity value for one identity field, as text or, for the numeric ones, as a number.
fn identity_value(field: &'static str) -> BoxedStrategy<Value> {
    match field {
        "userName" => person_name().prop_map(Value::from).boxed(),
        "userCert" => prop_oneof![
            "[1-6][0-9]{16}[0-9X]".prop_map(Value::from),
            (100_000_000_000_000_000_i64..700_000_000_000_000_000).prop_map(Value::from),
        ]
        .boxed(),
        _ => prop_oneof![
            "1[3-9][0-9]{9}".prop_map(Value::from),
            (13_000_000_000_i64..20_000_000_000).prop_map(Value::from),
        ]
        .boxed(),
    }
}

/// Characters that must never pass in an identifier, and some that pass in text.
const AWKWARD: &[char] = &[
    '\u{202E}', '\u{202A}', '\u{202D}', '\u{2066}', '\u{2069}', '\u{200E}', '\u{200F}', '\u{061C}',
    '\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}', '\u{FEFF}', '\u{00AD}', '\u{0}', '\u{1B}',
    '\u{7F}', '\u{85}', '\u{2028}', ' ', '\t', '\n', '\r', '\u{3000}', '"', '\\', ',', '好',
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,16}",
        "[0-9]{1,20}",
        "[一-龥]{1,8}",
        prop::collection::vec(any::<char>(), 0..12).prop_map(|c| c.into_iter().collect::<String>()),
        prop::collection::vec(prop::sample::select(AWKWARD), 0..6)
            .prop_map(|c| c.into_iter().collect::<String>()),
    ]
}

/// Any JSON value, biased towards the shapes the interface uses (codes, digit strings, text).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-2_i64..12).prop_map(Value::from),
        (-2_i64..12).prop_map(|i| Value::from(i.to_string())),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z]{1,8}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// What a JSON-ish object does with one field.
#[derive(Debug, Clone)]
enum Field {
    /// The base evaluation's value (absent if it has none).
    Keep,
    Absent,
    Random(Value),
}

fn field_choice() -> impl Strategy<Value = Field> {
    prop_oneof![
        3 => Just(Field::Keep),
        1 => Just(Field::Absent),
        2 => json_value().prop_map(Field::Random),
    ]
}

/// A clear identity: the values of the identity fields, `None` where the field is absent.
fn identity() -> impl Strategy<Value = Vec<(&'static str, Option<Value>)>> {
    IDENTITY
        .into_iter()
        .map(|field| {
            prop::option::weighted(0.8, identity_value(field)).prop_map(move |v| (field, v))
        })
        .collect::<Vec<_>>()
}

/// The clear-text identity values of a record, as they would appear in any output.
fn identity_texts(identity: &[(&'static str, Option<Value>)]) -> Vec<String> {
    identity
        .iter()
        .filter_map(|(_, v)| match v {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        })
        .collect()
}

fn with_identity(
    mut record: Map<String, Value>,
    identity: &[(&'static str, Option<Value>)],
) -> Map<String, Value> {
    for (field, value) in identity {
        match value {
            Some(value) => record.insert((*field).to_owned(), value.clone()),
            None => record.remove(*field),
        };
    }
    record
}

/// The payload as a provincial system might send it: UTF-8 or GB18030.
fn encode(record: &Map<String, Value>, gb18030: bool) -> Vec<u8> {
    let text = serde_json::to_string(record).expect("a JSON map serialises");
    if gb18030 {
        encoding_rs::GB18030.encode(&text).0.into_owned()
    } else {
        text.into_bytes()
    }
}

/// One targeted change to a valid evaluation.
#[derive(Debug, Clone)]
enum Mutation {
    Set(&'static str, Value),
    Remove(&'static str),
    /// The value of an identity field copied into another field (a producer's mapping error).
    Misplace {
        from: usize,
        to: &'static str,
    },
    /// A character inserted into a text field, at a fraction of its length.
    Insert(&'static str, f64, char),
    EvaluatorKey(Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let field = || prop::sample::select(FIELD_NAMES.to_vec());
    prop_oneof![
        (field(), json_value()).prop_map(|(f, v)| Mutation::Set(f, v)),
        field().prop_map(Mutation::Remove),
        (0..IDENTITY.len(), field()).prop_map(|(from, to)| Mutation::Misplace { from, to }),
        (field(), 0.0..=1.0, prop::sample::select(AWKWARD))
            .prop_map(|(f, at, c)| Mutation::Insert(f, at, c)),
        prop_oneof![
            Just(Value::from("0123456789abcdef".repeat(4))),
            Just(Value::from("0123456789ABCDEF".repeat(4))),
            "[0-9a-f]{63,65}".prop_map(Value::from),
            "[1-6][0-9]{16}[0-9X]".prop_map(Value::from),
            json_value(),
        ]
        .prop_map(Mutation::EvaluatorKey),
    ]
}

/// Applies the mutations; returns whether identity values may now sit in other fields.
fn mutate(
    record: &mut Map<String, Value>,
    identity: &[(&'static str, Option<Value>)],
    mutations: &[Mutation],
) -> bool {
    let mut misplaced = false;
    for mutation in mutations {
        match mutation {
            Mutation::Set(field, value) => {
                record.insert((*field).to_owned(), value.clone());
            }
            Mutation::Remove(field) => {
                record.remove(*field);
            }
            Mutation::Misplace { from, to } => {
                if let Some((_, Some(value))) = identity.get(*from) {
                    record.insert((*to).to_owned(), value.clone());
                    misplaced = true;
                }
            }
            Mutation::Insert(field, at, c) => {
                if let Some(Value::String(s)) = record.get_mut(*field) {
                    let chars: Vec<char> = s.chars().collect();
                    let at = ((chars.len() as f64) * at) as usize;
                    *s = chars[..at]
                        .iter()
                        .chain(std::iter::once(c))
                        .chain(&chars[at..])
                        .collect();
                }
            }
            Mutation::EvaluatorKey(value) => {
                record.insert("evaluatorKey".into(), value.clone());
            }
        }
    }
    misplaced
}

/// A change to the bytes after encoding.
#[derive(Debug, Clone)]
enum ByteEdit {
    Truncate(f64),
    Xor(f64, u8),
    Insert(f64, Vec<u8>),
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    prop_oneof![
        (0.0..1.0).prop_map(ByteEdit::Truncate),
        (0.0..1.0, 1..=u8::MAX).prop_map(|(at, x)| ByteEdit::Xor(at, x)),
        (0.0..=1.0, prop::collection::vec(any::<u8>(), 1..4))
            .prop_map(|(at, b)| ByteEdit::Insert(at, b)),
    ]
}

fn edit_bytes(payload: &mut Vec<u8>, edits: &[ByteEdit]) {
    for edit in edits {
        let at = |f: f64, len: usize| ((len as f64) * f) as usize;
        match edit {
            ByteEdit::Truncate(f) => payload.truncate(at(*f, payload.len())),
            ByteEdit::Xor(f, x) => {
                let i = at(*f, payload.len());
                if let Some(b) = payload.get_mut(i) {
                    *b ^= x;
                }
            }
            ByteEdit::Insert(f, bytes) => {
                let i = at(*f, payload.len()).min(payload.len());
                payload.splice(i..i, bytes.iter().copied());
            }
        }
    }
}

/// Runs one payload through the engine and checks every property. `identities` are the clear-text
/// identity values of the input; `only_in_identity_fields` says that they appear nowhere else in it
/// (then no output may hold them at all).
fn check(
    payload: &[u8],
    identities: &[String],
    only_in_identity_fields: bool,
) -> Result<Outcome, TestCaseError> {
    let keyer = EvaluatorKeyer::new(b"fuzz-secret");
    let processor = Processor::new(ValidationRules::default(), keyer.clone());
    let mut dedup = DedupState::default();
    let message = Message {
        offset: 0,
        key: None,
        payload,
    };
    let stats = haochaping::telemetry::Stats::default();
    let (outcome, rows) = process_one(&processor, message, 0, NOW_US, &mut dedup, &stats);
    match &outcome {
        Outcome::Rejected(rejection) => {
            prop_assert_eq!(
                Reason::from_code(rejection.reason.code()),
                Some(rejection.reason)
            );
            prop_assert!(!rejection.message.is_empty());
            for identity in identities {
                prop_assert!(
                    !rejection.message.contains(identity.as_str()),
                    "identity {:?} in the {} message {:?}",
                    identity,
                    rejection.reason,
                    rejection.message
                );
            }
            if let Some(parked) = keyer.redact_json(payload) {
                let parked: Value = serde_json::from_slice(&parked).map_err(|e| {
                    TestCaseError::fail(format!("redacted record is not JSON: {e}"))
                })?;
                let object = parked
                    .as_object()
                    .ok_or_else(|| TestCaseError::fail("a redacted record is an object"))?;
                for field in REDACTED_FIELDS {
                    prop_assert!(!object.contains_key(field), "{} kept", field);
                }
                if let Some(key) = object.get("evaluatorKey") {
                    prop_assert!(key.as_str().is_some_and(is_evaluator_key), "{}", key);
                }
                if only_in_identity_fields {
                    let text = parked.to_string();
                    for identity in identities {
                        prop_assert!(!text.contains(identity.as_str()), "{} parked", identity);
                    }
                }
            }
        }
        Outcome::Accepted => {
            let rows = rows.ok_or_else(|| TestCaseError::fail("accepted without rows"))?;
            let batches = haochaping::sink::parquet::finish_parts(vec![rows])
                .map_err(|e| TestCaseError::fail(format!("rows: {e}")))?;
            prop_assert_eq!(batches.iter().map(|(_, b)| b.num_rows()).sum::<usize>(), 1);
            for (_, batch) in &batches {
                let schema = batch.schema();
                for (column, field) in batch.columns().iter().zip(schema.fields()) {
                    if field.data_type() != &DataType::Utf8 {
                        continue;
                    }
                    let Some(strings) = column.as_any().downcast_ref::<StringArray>() else {
                        continue;
                    };
                    for cell in strings.iter().flatten() {
                        if field.name() == "evaluator_key" {
                            prop_assert!(is_evaluator_key(cell), "evaluator_key {:?}", cell);
                        }
                        if only_in_identity_fields {
                            for identity in identities {
                                prop_assert!(
                                    !cell.contains(identity.as_str()),
                                    "identity {:?} in column {}",
                                    identity,
                                    field.name()
                                );
                            }
                        }
                    }
                }
            }
        }
        Outcome::Duplicate => prop_assert!(false, "a fresh dedup state has no duplicate"),
    }
    Ok(outcome)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        check(&bytes, &[], false)?;
    }

    #[test]
    fn bytes_around_a_valid_evaluation(
        identity in identity(),
        gb18030 in any::<bool>(),
        edits in prop::collection::vec(byte_edit(), 1..4),
    ) {
        let mut payload = encode(&with_identity(base(), &identity), gb18030);
        edit_bytes(&mut payload, &edits);
        // An edit may rename an identity field (`userCert` → `userCerv`): an unknown field that
        // nothing can know to redact, so only the messages and the key are checked here.
        check(&payload, &identity_texts(&identity), false)?;
    }

    #[test]
    fn objects_of_the_interface_fields(
        fields in prop::collection::vec(field_choice(), FIELD_NAMES.len()),
        identity in identity(),
        gb18030 in any::<bool>(),
    ) {
        let base = base();
        let mut record = Map::new();
        for (name, choice) in FIELD_NAMES.iter().zip(fields) {
            let value = match choice {
                Field::Keep => base.get(*name).cloned(),
                Field::Absent => None,
                Field::Random(value) => Some(value),
            };
            if let Some(value) = value {
                record.insert((*name).to_owned(), value);
            }
        }
        // Identity fields carry tracked clear values unless the random draw replaced them.
        let identity: Vec<_> = identity
            .into_iter()
            .filter(|(field, _)| !matches!(record.get(*field), Some(v) if !v.is_null()))
            .collect();
        let record = with_identity(record, &identity);
        check(&encode(&record, gb18030), &identity_texts(&identity), true)?;
    }

    #[test]
    fn mutations_of_a_valid_evaluation(
        identity in identity(),
        mutations in prop::collection::vec(mutation(), 0..4),
        gb18030 in any::<bool>(),
    ) {
        let mut record = with_identity(base(), &identity);
        let misplaced = mutate(&mut record, &identity, &mutations);
        let texts = identity_texts(&identity);
        let outcome = check(&encode(&record, gb18030), &texts, !misplaced)?;
        // Rejections of misplaced values must not echo them either (checked in `check`); an
        // evaluation without mutations is accepted, in either encoding.
        if mutations.is_empty() {
            prop_assert_eq!(outcome, Outcome::Accepted);
        }
    }
}

/// The harness accepts what it should: without this, every property would hold vacuously.
#[test]
fn the_base_evaluation_is_accepted_in_both_encodings() {
    let record = with_identity(
        base(),
        &[
            ("userName", Some("赵伟".into())),
            ("userCert", Some("410328199001011234".into())),
            ("userPhone", Some("13800000000".into())),
        ],
    );
    for gb18030 in [false, true] {
        let outcome = check(&encode(&record, gb18030), &[], true).unwrap();
        assert_eq!(outcome, Outcome::Accepted, "gb18030: {gb18030}");
    }
}
