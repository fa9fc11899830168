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

mod cases {
    //! The same agreement for `schemas/case.schema.json` and the cases stream's validator.

    use haochaping::decode::Reason;
    use haochaping::stream::cases::validate_case;
    use haochaping::transform::validate::ValidationRules;

    fn schema() -> serde_json::Value {
        serde_json::from_str(include_str!("../../schemas/case.schema.json")).unwrap()
    }

    /// The required fields, plus the date a pending case needs.
    fn minimal() -> serde_json::Map<String, serde_json::Value> {
        serde_json::json!({
            "projectNo": "P1", "taskCode": "T1", "taskName": "企业设立登记",
            "deptCode": "91350100M000100Y43", "areaCode": "350100000000", "proStatus": "1",
            "applyDate": "2026-01-05 10:00:00"
        })
        .as_object()
        .unwrap()
        .clone()
    }

    fn check(record: &serde_json::Map<String, serde_json::Value>) -> Result<(), Reason> {
        let text = serde_json::to_string(record).unwrap();
        validate_case(&text, &ValidationRules::default(), i64::MAX / 2)
            .map(|_| ())
            .map_err(|r| r.reason)
    }

    #[test]
    fn the_minimal_record_is_valid_and_every_required_field_is_required() {
        let schema = schema();
        let required: Vec<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let fixture = minimal();
        let mut keys: Vec<&str> = fixture.keys().map(String::as_str).collect();
        keys.retain(|k| *k != "applyDate");
        keys.sort();
        let mut sorted = required.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(check(&minimal()), Ok(()));
        for field in required.iter().chain(["applyDate"].iter()) {
            let mut record = minimal();
            record.remove(*field);
            assert_eq!(check(&record), Err(Reason::MissingField), "{field}");
        }
    }

    #[test]
    fn every_listed_code_is_accepted_and_its_neighbours_are_not() {
        let schema = schema();
        for field in ["proStatus", "projectType", "userProp"] {
            let codes: Vec<i64> = schema["properties"][field]["enum"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|v| v.as_i64())
                .collect();
            for code in 0..=10 {
                let mut record = minimal();
                record.insert(field.into(), code.into());
                // Statuses 2 and 3 need their dates.
                record.insert("acceptDate".into(), "2026-01-05 11:00:00".into());
                if code == 3 || field != "proStatus" {
                    record.insert(
                        "proStatus".into(),
                        if field == "proStatus" { code } else { 3 }.into(),
                    );
                    record.insert("resultDate".into(), "2026-01-05 12:00:00".into());
                }
                let result = check(&record);
                if codes.contains(&code) {
                    assert_eq!(result, Ok(()), "{field} {code}");
                } else {
                    assert_eq!(result, Err(Reason::InvalidCode), "{field} {code}");
                }
            }
        }
    }

    #[test]
    fn every_reason_the_schema_names_exists() {
        let text = include_str!("../../schemas/case.schema.json");
        let schema = schema();
        for property in schema["properties"].as_object().unwrap().values() {
            if let Some(reasons) = property["x-reason"].as_str() {
                for code in reasons.split(" / ") {
                    assert!(Reason::from_code(code).is_some(), "{code} in {text:.0}");
                }
            }
        }
    }
}

mod workflow {
    //! `schemas/workflow.schema.json` and the workflow stream's validator agree on the fields, the
    //! codes and the reasons.

    use haochaping::decode::Reason;
    use haochaping::stream::workflow::{validate_event, Step};
    use haochaping::transform::validate::ValidationRules;

    fn schema() -> serde_json::Value {
        serde_json::from_str(include_str!("../../schemas/workflow.schema.json")).unwrap()
    }

    fn check(record: &serde_json::Value) -> Result<(), Reason> {
        validate_event(
            &record.to_string(),
            &ValidationRules::default(),
            i64::MAX / 2,
        )
        .map(|_| ())
        .map_err(|r| r.reason)
    }

    #[test]
    fn every_event_type_is_a_step_and_every_required_field_is_required() {
        let schema = schema();
        let types: Vec<&str> = schema["properties"]["eventType"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(types, Step::ALL.map(Step::name));
        let minimal = serde_json::json!({
            "projectNo": "P1", "assessNumber": 1, "eventType": "forwarded",
            "eventTime": "2026-01-05 10:00:00"
        });
        assert_eq!(check(&minimal), Ok(()));
        for field in schema["required"].as_array().unwrap() {
            let mut record = minimal.clone();
            record
                .as_object_mut()
                .unwrap()
                .remove(field.as_str().unwrap());
            assert_eq!(check(&record), Err(Reason::MissingField), "{field}");
        }
        // The fields a step requires.
        for (step, field) in [
            ("revisited", "newSatisfaction"),
            ("review_decided", "decision"),
            ("appeal_audited", "decision"),
        ] {
            let mut record = minimal.clone();
            record["eventType"] = step.into();
            assert_eq!(
                check(&record),
                Err(Reason::MissingField),
                "{step} without {field}"
            );
        }
    }

    #[test]
    fn every_reason_the_schema_names_exists() {
        let schema = schema();
        for property in schema["properties"].as_object().unwrap().values() {
            if let Some(reasons) = property["x-reason"].as_str() {
                for code in reasons.split(" / ") {
                    assert!(Reason::from_code(code).is_some(), "{code}");
                }
            }
        }
    }
}
