use super::*;
use crate::sink::parquet::finish_parts;
use crate::telemetry::Stats;
use crate::transform::dedup::DedupState;
use crate::transform::{process_one, process_run, Outcome};
use arrow::array::AsArray;

/// 2026-11-25 12:00 CST.
const NOW: i64 = 1_795_579_200_000_000;

fn stream() -> Cases {
    Cases::new(
        ValidationRules::default(),
        EvaluatorKeyer::new(b"case-secret"),
    )
}

/// A finished case of Luoning's human-resources bureau, with its applicant in clear.
fn finished() -> serde_json::Value {
    serde_json::json!({
        "projectNo": "410328-2026-000123",
        "taskCode": "T001",
        "taskName": "城乡居民基本养老保险参保登记",
        "deptCode": "11410328MB00000015",
        "deptName": "洛宁县人力资源和社会保障局",
        "areaCode": "410328100201",
        "proStatus": 3,
        "applyDate": "2026-11-20 09:00:00",
        "acceptDate": "2026-11-20 09:30:00",
        "resultDate": "2026-11-21 16:00:00",
        "projectType": 2,
        "userProp": 1,
        "userName": "张三",
        "userCert": "410328199001011234",
        "userPhone": "13800000000"
    })
}

fn with(mut value: serde_json::Value, key: &str, new: serde_json::Value) -> String {
    if new.is_null() {
        value.as_object_mut().unwrap().remove(key);
    } else {
        value[key] = new;
    }
    value.to_string()
}

#[test]
fn a_valid_case_is_accepted_and_each_bad_one_names_its_reason() {
    use serde_json::json;
    let cases: Vec<(String, Option<Reason>)> = vec![
        (finished().to_string(), None),
        // A pending case needs only when it was generated.
        (
            json!({"projectNo": "P1", "taskCode": "T", "taskName": "事项", "deptCode": "11410328MB00000015",
                   "areaCode": "410328000000", "proStatus": "1", "applyDate": "2026-11-20 09:00:00"})
            .to_string(),
            None,
        ),
        (with(finished(), "projectNo", json!(null)), Some(Reason::MissingField)),
        (with(finished(), "proStatus", json!(4)), Some(Reason::InvalidCode)),
        (with(finished(), "proStatus", json!(null)), Some(Reason::MissingField)),
        (with(finished(), "areaCode", json!("4103281002")), Some(Reason::InvalidAreaCode)),
        (with(finished(), "deptCode", json!("11410328MB00000016")), Some(Reason::InvalidDeptCode)),
        (with(finished(), "resultDate", json!("2026/11/21")), Some(Reason::InvalidTime)),
        (with(finished(), "resultDate", json!("2027-01-01 00:00:00")), Some(Reason::FutureTime)),
        // Finished without its date; accepted without its date.
        (with(finished(), "resultDate", json!(null)), Some(Reason::MissingField)),
        (with(finished(), "acceptDate", json!(null)), Some(Reason::MissingField)),
        // Finished before it was accepted.
        (with(finished(), "resultDate", json!("2026-11-20 09:00:00")), Some(Reason::InconsistentCase)),
        // A result date on a case that is only accepted.
        (with(finished(), "proStatus", json!(2)), Some(Reason::InconsistentCase)),
        (with(finished(), "projectType", json!(9)), Some(Reason::InvalidCode)),
        (with(finished(), "projectNo", json!("P\u{202e}1")), Some(Reason::InvalidField)),
        ("[1, 2, 3]".to_owned(), Some(Reason::NotJson)),
        ("{\"projectNo\": ".to_owned(), Some(Reason::NotJson)),
    ];
    let stream = stream();
    for (text, expected) in cases {
        let mut rows = stream.rows(1);
        let message = Message {
            offset: 0,
            key: None,
            payload: text.as_bytes(),
        };
        let result = stream
            .check(&message, 0, NOW)
            .map(|(_, valid)| stream.push(valid, &mut rows));
        match (expected, result) {
            (None, Ok(_)) => assert_eq!(rows.len(), 1),
            (Some(reason), Err(rejection)) => {
                assert_eq!(rejection.reason, reason, "{text}: {}", rejection.message);
                assert!(!rejection.message.contains("张三"), "{}", rejection.message);
                assert!(!rejection.message.contains("410328199001011234"));
            }
            (expected, result) => panic!("{text}: expected {expected:?}, got {result:?}"),
        }
    }
}

#[test]
fn one_record_per_status_a_redelivery_is_dropped_a_different_one_is_a_conflict() {
    let stream = stream();
    let stats = Stats::default();
    let mut dedup = DedupState::default();
    let run = |payload: &str, dedup: &mut DedupState| {
        let message = Message {
            offset: 0,
            key: None,
            payload: payload.as_bytes(),
        };
        process_one(&stream, message, 0, NOW, dedup, &stats).0
    };
    let accepted = with(finished(), "proStatus", serde_json::json!(2));
    let accepted = with(
        serde_json::from_str(&accepted).unwrap(),
        "resultDate",
        serde_json::Value::Null,
    );
    assert_eq!(run(&accepted, &mut dedup), Outcome::Accepted);
    assert_eq!(run(&finished().to_string(), &mut dedup), Outcome::Accepted);
    // The same record again, its fields in another order: a redelivery.
    let mut reordered: Vec<(String, serde_json::Value)> = finished()
        .as_object()
        .unwrap()
        .clone()
        .into_iter()
        .collect();
    reordered.reverse();
    let reordered = serde_json::Value::Object(reordered.into_iter().collect()).to_string();
    assert_eq!(run(&reordered, &mut dedup), Outcome::Duplicate);
    // Finished again at another time: a conflict.
    let other = with(
        finished(),
        "resultDate",
        serde_json::json!("2026-11-22 10:00:00"),
    );
    match run(&other, &mut dedup) {
        Outcome::Rejected(r) => assert_eq!(r.reason, Reason::CaseStatusConflict),
        outcome => panic!("{outcome:?}"),
    }
}

#[test]
fn rows_carry_the_applicant_only_as_its_key_and_read_back_into_the_same_dedup_state() {
    let stream = stream();
    let stats = Stats::default();
    let texts = [
        finished().to_string(),
        with(
            finished(),
            "projectNo",
            serde_json::json!("410328-2026-000124"),
        ),
    ];
    let messages = Message::numbered(0, texts.iter().map(|t| t.as_bytes()));
    let mut dedup = DedupState::default();
    let (parts, _) = process_run(&stream, 3, &messages, NOW, 1, &mut dedup, &stats, |_, _| {});
    let files = finish_parts(parts).unwrap();
    assert_eq!(files.len(), 1);
    let (key, batch) = &files[0];
    assert_eq!(key.path(), "dt=2026-11-21/city=410300");
    assert_eq!(batch.schema(), cases_schema());
    assert_eq!(batch.num_rows(), 2);
    let text = arrow::util::pretty::pretty_format_batches(std::slice::from_ref(batch))
        .unwrap()
        .to_string();
    for clear in ["张三", "410328199001011234", "13800000000"] {
        assert!(!text.contains(clear), "{clear} in the rows");
    }
    let keys = batch
        .column_by_name("applicant_key")
        .unwrap()
        .as_string::<i32>();
    assert_eq!(keys.value(0).len(), 64);
    let expected = stream
        .keyer
        .key(&Identity {
            name: Some("张三".into()),
            cert: Some("410328199001011234".into()),
            phone: Some("13800000000".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        keys.value(0),
        expected.as_str(),
        "the evaluators' key, so cases join evaluations"
    );
    // Recovery's reading of the rows gives back exactly the state dedup built.
    let mut entries = Vec::new();
    (DEDUP.entries)(batch, 20_778, &mut entries).unwrap();
    let mut rebuilt = DedupState::default();
    for (k, fp, day) in entries {
        rebuilt.insert(k, fp, day);
    }
    assert_eq!(rebuilt.sorted_entries(), dedup.sorted_entries());
}
