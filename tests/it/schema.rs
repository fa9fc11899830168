//! The published schema and the validator agree: every field the schema requires is required by the
//! validator, and every code the schema lists is accepted while its neighbours are not.

use haochaping::decode::{decode, Reason};
use haochaping::transform::validate::{validate, ValidationRules};

fn schema() -> serde_json::Value {
    serde_json::from_str(include_str!("../../schemas/evaluation.schema.json")).unwrap()
}

fn valid() -> serde_json::Map<String, serde_json::Value> {
    serde_json::json!({
        "projectNo": "P1", "taskCode": "T1", "taskName": "企业设立登记", "deptCode": "91350100M000100Y43",
        "areaCode": "350100000000", "pf": "1", "satisfaction": "5", "assessTime": "2026-01-05 10:00:00",
        "assessNumber": "1", "userProp": "1"
    })
    .as_object()
    .unwrap()
    .clone()
}

fn check(record: &serde_json::Map<String, serde_json::Value>) -> Result<(), Reason> {
    let bytes = serde_json::to_vec(record).unwrap();
    let wire = decode(&bytes, 1 << 16).map_err(|r| r.reason)?;
    validate(wire, &ValidationRules::default(), i64::MAX / 2)
        .map(|_| ())
        .map_err(|r| r.reason)
}

#[test]
fn the_minimal_record_of_the_schema_is_valid() {
    let schema = schema();
    let required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let fixture = valid();
    let mut keys: Vec<&str> = fixture.keys().map(String::as_str).collect();
    keys.sort();
    let mut sorted = required.clone();
    sorted.sort();
    assert_eq!(
        keys, sorted,
        "the fixture holds exactly the required fields"
    );
    assert_eq!(check(&valid()), Ok(()));
}

#[test]
fn every_required_field_is_required() {
    for field in schema()["required"].as_array().unwrap() {
        let mut record = valid();
        record.remove(field.as_str().unwrap());
        assert_eq!(check(&record), Err(Reason::MissingField), "{field}");
    }
}

#[test]
fn every_listed_code_is_accepted_and_nothing_else() {
    let schema = schema();
    for (field, spec) in schema["properties"].as_object().unwrap() {
        let Some(codes) = spec.get("enum").and_then(|e| e.as_array()) else {
            continue;
        };
        let listed: Vec<i64> = codes.iter().filter_map(|c| c.as_i64()).collect();
        for code in -1..=10 {
            let mut record = valid();
            // A bad review must say why; give every record a reason so only the code decides.
            record.insert("writingEvaluation".into(), "排队时间太长".into());
            record.insert(field.clone(), code.into());
            let expected = if listed.contains(&code) {
                Ok(())
            } else {
                Err(Reason::InvalidCode)
            };
            assert_eq!(check(&record), expected, "{field} = {code}");
        }
    }
}
