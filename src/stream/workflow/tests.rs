use super::*;
use crate::telemetry::Stats;
use crate::transform::dedup::DedupState;
use crate::transform::{process_one, Outcome};

/// 2026-11-25 12:00 CST.
const NOW: i64 = 1_795_579_200_000_000;

fn at(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap()
        .timestamp_micros()
}

fn event(step: &str, time: &str, extra: serde_json::Value) -> String {
    let mut value = serde_json::json!({
        "projectNo": "P1", "assessNumber": 1, "eventType": step, "eventTime": time,
    });
    for (k, v) in extra.as_object().unwrap() {
        value[k] = v.clone();
    }
    value.to_string()
}

fn stream() -> Workflow {
    let reviews = BadReviews::new();
    reviews.register("P1", 1, at("2026-11-10T09:00:00+08:00"), *b"410300");
    Workflow::new(ValidationRules::default(), reviews)
}

fn run(stream: &Workflow, dedup: &mut DedupState, text: &str) -> Outcome {
    let message = Message {
        offset: 0,
        key: None,
        payload: text.as_bytes(),
    };
    process_one(stream, message, 0, NOW, dedup, &Stats::default()).0
}

fn reason(outcome: Outcome) -> Option<Reason> {
    match outcome {
        Outcome::Rejected(r) => Some(r.reason),
        _ => None,
    }
}

#[test]
fn fields_are_checked_each_with_its_reason() {
    use serde_json::json;
    let none = json!({});
    let cases = [
        (
            event("forwarded", "2026-11-10 10:00:00", none.clone()),
            None,
        ),
        (
            event("forwarded", "2026-11-10 10:00:00", json!({"complex": true})),
            None,
        ),
        (
            event("forwardd", "2026-11-10 10:00:00", none.clone()),
            Some(Reason::InvalidCode),
        ),
        (
            event("forwarded", "2026/11/10", none.clone()),
            Some(Reason::InvalidTime),
        ),
        (
            event("forwarded", "2027-01-01 00:00:00", none.clone()),
            Some(Reason::FutureTime),
        ),
        (
            event(
                "forwarded",
                "2026-11-10 10:00:00",
                json!({"assessNumber": 3}),
            ),
            Some(Reason::InvalidCode),
        ),
        (
            event(
                "forwarded",
                "2026-11-10 10:00:00",
                json!({"projectNo": null}),
            ),
            Some(Reason::MissingField),
        ),
        (
            event("forwarded", "2026-11-10 10:00:00", json!({"eventType": 4})),
            Some(Reason::InvalidField),
        ),
        (
            event(
                "forwarded",
                "2026-11-10 10:00:00",
                json!({"complex": "yes"}),
            ),
            Some(Reason::InvalidField),
        ),
        (
            event(
                "forwarded",
                "2026-11-10 10:00:00",
                json!({"decision": "upheld"}),
            ),
            Some(Reason::InvalidField),
        ),
        (
            event("replied", "2026-11-10 10:00:00", json!({"complex": true})),
            Some(Reason::InvalidField),
        ),
        (
            event("revisited", "2026-11-10 10:00:00", none.clone()),
            Some(Reason::MissingField),
        ),
        (
            event(
                "revisited",
                "2026-11-10 10:00:00",
                json!({"newSatisfaction": 6}),
            ),
            Some(Reason::InvalidCode),
        ),
        (
            event("review_decided", "2026-11-10 10:00:00", none.clone()),
            Some(Reason::MissingField),
        ),
        (
            event(
                "review_decided",
                "2026-11-10 10:00:00",
                json!({"decision": "maybe"}),
            ),
            Some(Reason::InvalidCode),
        ),
        ("[]".to_owned(), Some(Reason::NotJson)),
    ];
    for (text, expected) in cases {
        let result = validate_event(&text, &ValidationRules::default(), NOW);
        assert_eq!(
            result.as_ref().err().map(|r| r.reason),
            expected,
            "{text}: {result:?}"
        );
    }
}

#[test]
fn steps_follow_their_order_and_each_is_taken_once() {
    use serde_json::json;
    let stream = stream();
    let mut dedup = DedupState::default();
    let none = json!({});
    // (event, expected rejection)
    let script = [
        // Nothing before forwarding; nothing before the review itself.
        (
            event("replied", "2026-11-11 09:00:00", none.clone()),
            Some(Reason::OutOfOrder),
        ),
        (
            event("forwarded", "2026-11-10 08:00:00", none.clone()),
            Some(Reason::OutOfOrder),
        ),
        (
            event("forwarded", "2026-11-10 10:00:00", none.clone()),
            None,
        ),
        // A redelivery is dropped; another forwarding is a conflict.
        (
            event("forwarded", "2026-11-10 10:00:00", none.clone()),
            None,
        ),
        (
            event("forwarded", "2026-11-10 11:00:00", none.clone()),
            Some(Reason::WorkflowStepConflict),
        ),
        // Replied before it was forwarded (by time): out of order.
        (
            event("replied", "2026-11-10 09:30:00", none.clone()),
            Some(Reason::OutOfOrder),
        ),
        (event("replied", "2026-11-12 09:00:00", none.clone()), None),
        // A revisit needs a rectification.
        (
            event(
                "revisited",
                "2026-11-13 09:00:00",
                json!({"newSatisfaction": 4}),
            ),
            Some(Reason::OutOfOrder),
        ),
        (
            event("rectified", "2026-11-13 09:00:00", none.clone()),
            None,
        ),
        (
            event(
                "revisited",
                "2026-11-14 09:00:00",
                json!({"newSatisfaction": 4}),
            ),
            None,
        ),
        (
            event(
                "review_decided",
                "2026-11-15 09:00:00",
                json!({"decision": "mistaken"}),
            ),
            Some(Reason::OutOfOrder),
        ),
        (
            event("review_applied", "2026-11-15 09:00:00", none.clone()),
            None,
        ),
        (
            event(
                "review_decided",
                "2026-11-16 09:00:00",
                json!({"decision": "mistaken"}),
            ),
            None,
        ),
        // Another review of a case nobody gave a bad review.
        (
            event(
                "forwarded",
                "2026-11-10 10:00:00",
                json!({"projectNo": "P2"}),
            ),
            Some(Reason::UnknownBadReview),
        ),
        (
            event(
                "forwarded",
                "2026-11-10 10:00:00",
                json!({"assessNumber": 2}),
            ),
            Some(Reason::UnknownBadReview),
        ),
    ];
    let mut accepted = 0;
    for (text, expected) in script {
        let outcome = run(&stream, &mut dedup, &text);
        assert_eq!(reason(outcome.clone()), expected, "{text}");
        if outcome == Outcome::Accepted {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 6);
}

#[test]
fn the_order_rule_is_a_table() {
    let given = at("2026-11-10T09:00:00+08:00");
    let mut state = ReviewState {
        given_at_us: given,
        city: *b"410300",
        steps: [None; 11],
    };
    // Before forwarding, only forwarding.
    for step in Step::ALL {
        let allowed = step == Step::Forwarded;
        assert_eq!(
            check_order(&state, step, given + 1).is_ok(),
            allowed,
            "{step:?}"
        );
    }
    state.steps[Step::Forwarded.index()] = Some(given + 10);
    let after_forwarding = [
        Step::Forwarded,
        Step::Contacted,
        Step::Replied,
        Step::Extended,
        Step::Rectified,
        Step::Appealed,
        Step::ReviewApplied,
    ];
    for step in Step::ALL {
        assert_eq!(
            check_order(&state, step, given + 20).is_ok(),
            after_forwarding.contains(&step),
            "{step:?}"
        );
    }
    // Not before the step it follows.
    assert!(check_order(&state, Step::Replied, given + 5).is_err());
}

/// A review another instance accepted is only in the lake: an event for it makes the stream read the
/// lake again (once per period) instead of parking it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_review_is_looked_up_in_the_lake_once_per_period() {
    use crate::lake::{BatchRange, Lake};
    use crate::sink::parquet::EVALUATIONS_TABLE;

    // A lake holding one bad review, written by "another instance".
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open_local(dir.path(), EVALUATIONS_TABLE).unwrap();
    let mut lease = lake.recover("evaluations", 0).await.unwrap().lease;
    let processor = crate::transform::Processor::new(
        ValidationRules::default(),
        crate::transform::identity::EvaluatorKeyer::new(b"reload-test-secret"),
    );
    let review = serde_json::json!({
        "projectNo": "OTHER-1", "taskCode": "T", "taskName": "事项", "deptCode": "11410328MB00000015",
        "areaCode": "410328000000", "pf": "4", "satisfaction": "1", "evalDetail": "115",
        "assessTime": "2026-11-10 09:00:00", "assessNumber": 1, "userProp": "1"
    })
    .to_string();
    let mut rows = crate::sink::parquet::EvaluationRows::new();
    processor
        .append_row(review.as_bytes(), 0, 0, NOW, &mut rows)
        .unwrap();
    let files = Lake::encode_parts(vec![Box::new(rows)], 1).unwrap();
    let range = BatchRange {
        topic: "evaluations".into(),
        partition: 0,
        first_offset: 0,
        last_offset: 0,
    };
    lake.commit_batch(&mut lease, range, files, 1)
        .await
        .unwrap();

    let reviews = BadReviews::new();
    let reload = Arc::new(Reload::new(
        crate::lake::LakeRoot::local(dir.path()).unwrap(),
        1_000,
        std::time::Duration::from_secs(3600),
    ));
    let stream =
        Workflow::new(ValidationRules::default(), reviews.clone()).reloading(reload.clone());
    let mut dedup = DedupState::default();
    let forwarded = |project: &str| {
        serde_json::json!({"projectNo": project, "assessNumber": 1, "eventType": "forwarded",
                           "eventTime": "2026-11-10 10:00:00"})
        .to_string()
    };
    // The prepare runs inside the runtime, as in the engine.
    let outcome = tokio::task::block_in_place(|| run(&stream, &mut dedup, &forwarded("OTHER-1")));
    assert_eq!(outcome, Outcome::Accepted);
    assert_eq!((reload.count(), reviews.len()), (1, 1));
    // Truly unknown: parked, and within the period no second read of the lake.
    let outcome = tokio::task::block_in_place(|| run(&stream, &mut dedup, &forwarded("NOBODY")));
    assert_eq!(reason(outcome), Some(Reason::UnknownBadReview));
    assert_eq!(reload.count(), 1);
}

#[test]
fn the_registry_forgets_reviews_older_than_the_window() {
    let reviews = BadReviews::new();
    reviews.register("OLD", 1, at("2026-01-01T09:00:00+08:00"), *b"410300");
    reviews.register("NEW", 1, at("2026-11-01T09:00:00+08:00"), *b"410300");
    assert_eq!(
        reviews.evict_given_before(at("2026-08-01T00:00:00+08:00")),
        1
    );
    assert_eq!(reviews.len(), 1);
    let unknown =
        reviews.check_and_record("OLD", 1, Step::Forwarded, at("2026-11-02T09:00:00+08:00"));
    assert_eq!(unknown.unwrap_err().reason, Reason::UnknownBadReview);
    assert!(reviews
        .check_and_record("NEW", 1, Step::Forwarded, at("2026-11-02T09:00:00+08:00"))
        .is_ok());
}
