use super::*;
use crate::policy::span::format_cst;

fn at(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap()
        .timestamp_micros()
}

fn show(us: Option<i64>) -> Option<String> {
    us.map(format_cst)
}

/// A bad review in Xishuangbanna (004) given on Friday 13 February 2026, the last working day
/// before the Spring Festival (15–23 February off; Saturdays 14 and 28 February worked).
fn review() -> Review {
    Review {
        project_no: "BN-1".into(),
        assess_number: 1,
        satisfaction: 1,
        area_code: "532801000000".into(),
        province_code: "530000".into(),
        dept_code: "D".into(),
        task_code: "T".into(),
        task_name: "事项".into(),
        channel: "hall_window".into(),
        given_at: at("2026-02-13T16:00:00+08:00"),
        real_name: true,
        ..Review::default()
    }
}

fn policy() -> crate::policy::Policy {
    let policies = Policies::shipped().unwrap();
    policies
        .for_region(&RegionCode::parse("532801000000").unwrap())
        .policy
        .clone()
}

fn due(review: &Review) -> Due {
    let policy = policy();
    assess(
        review,
        &policy.deadlines,
        &policy.revisit,
        Calendar::official(),
    )
}

#[test]
fn deadlines_cross_the_spring_festival_on_the_official_calendar() {
    let mut review = review();
    review.forwarded_at = Some(at("2026-02-14T10:00:00+08:00"));
    let due = due(&review);
    let cases = [
        // 004 一(二)1: 2 working days from the review: Sat 14 (worked), Tue 24.
        ("forward_by", due.forward_by, "2026-02-25T00:00:00+08:00"),
        // 004 一(二)2, clear-cut: 2 working days from the forwarding on Sat 14: Tue 24, Wed 25.
        ("rectify_by", due.rectify_by, "2026-02-26T00:00:00+08:00"),
        // Inherited 001 §19: 10 working days from the review: 14, 24–28 (Sat 28 worked), 2–5 March.
        ("reply_by", due.reply_by, "2026-03-06T00:00:00+08:00"),
        // Inherited 000 三(二): 1 working day from the forwarding (Sat 14): Tue 24.
        (
            "first_contact_by",
            due.first_contact_by,
            "2026-02-25T00:00:00+08:00",
        ),
        // Inherited 000 三(一): 10 and 15 natural days from the review, holidays or not.
        (
            "escalate_deputy_at",
            due.escalate_deputy_at,
            "2026-02-24T00:00:00+08:00",
        ),
        (
            "escalate_main_at",
            due.escalate_main_at,
            "2026-03-01T00:00:00+08:00",
        ),
        // 004 二(二)1: review applied for within 5 working days of being told: 24–28 February.
        (
            "review_apply_by",
            due.review_apply_by,
            "2026-03-01T00:00:00+08:00",
        ),
    ];
    for (name, got, expected) in cases {
        assert_eq!(show(got).as_deref(), Some(expected), "{name}");
    }
    assert_eq!(due.report_back_by, None, "not rectified yet");
    assert_eq!(due.undecidable, None);

    // A complex case: 15 working days from Sat 14 → Fri 13 March; extended by 2 → Tue 17 March.
    review.complex = Some(true);
    assert_eq!(
        show(self::due(&review).rectify_by).as_deref(),
        Some("2026-03-14T00:00:00+08:00")
    );
    review.extended_at = Some(at("2026-03-10T09:00:00+08:00"));
    assert_eq!(
        show(self::due(&review).rectify_by).as_deref(),
        Some("2026-03-18T00:00:00+08:00")
    );
    // Rectified on Mon 16 March: reported back within 2 working days (17, 18).
    review.rectified_at = Some(at("2026-03-16T11:00:00+08:00"));
    let due = self::due(&review);
    assert_eq!(
        show(due.report_back_by).as_deref(),
        Some("2026-03-19T00:00:00+08:00")
    );
    // Revisit if no re-evaluation within 5 natural days (000 三(三)).
    assert_eq!(
        show(due.revisit_due_at).as_deref(),
        Some("2026-03-22T00:00:00+08:00")
    );
}

#[test]
fn an_alert_fires_once_its_deadline_passes_without_the_step() {
    let mut review = review();
    // (as_of, forwarded at, rectified at, alerts due)
    let before_forward_deadline = at("2026-02-24T23:59:59+08:00");
    let after_forward_deadline = at("2026-02-25T00:00:00+08:00");
    assert_eq!(
        due_alerts(&review, &due(&review), before_forward_deadline)
            .iter()
            .map(|(r, _)| *r)
            .collect::<Vec<_>>(),
        // The deputy leader's 10 natural days passed at the end of 23 February.
        [LoopRule::EscalateDeputyLeader]
    );
    let rules = |review: &Review, as_of| -> Vec<LoopRule> {
        due_alerts(review, &due(review), as_of)
            .into_iter()
            .map(|(r, _)| r)
            .collect()
    };
    // Never forwarded, the rectification counts from the review itself, and its 2 working days
    // (14 and 24 February) end together with the forwarding's.
    assert_eq!(
        rules(&review, after_forward_deadline),
        [
            LoopRule::OverdueForward,
            LoopRule::OverdueRectification,
            LoopRule::EscalateDeputyLeader
        ]
    );
    // Forwarded in time and rectified before the escalation: nothing is due.
    review.forwarded_at = Some(at("2026-02-14T10:00:00+08:00"));
    review.rectified_at = Some(at("2026-02-23T10:00:00+08:00"));
    review.replied_at = Some(at("2026-02-24T10:00:00+08:00"));
    assert_eq!(rules(&review, after_forward_deadline), []);
    // Five days after the rectification without a re-evaluation, a revisit is due, until one
    // happens.
    let later = at("2026-03-10T00:00:00+08:00");
    assert_eq!(rules(&review, later), [LoopRule::RevisitDue]);
    review.revisited_at = Some(at("2026-02-27T10:00:00+08:00"));
    assert_eq!(rules(&review, later), []);
    // A step done late still was overdue: the alert stands (the same id whenever it is computed).
    review.forwarded_at = Some(at("2026-02-26T10:00:00+08:00"));
    assert_eq!(rules(&review, later), [LoopRule::OverdueForward]);
    // An excluded review raises nothing.
    review.review_decision = Some("mistaken".into());
    assert_eq!(rules(&review, later), []);
    assert_eq!(state(&review), "excluded");
}

#[test]
fn on_time_is_decided_only_when_it_can_be() {
    let by = Some(100);
    let cases = [
        (Some(90), by, 50, Some(true)),
        (Some(100), by, 50, Some(true)),
        (Some(101), by, 500, Some(false)),
        (None, by, 99, None),
        (None, by, 100, Some(false)),
        (None, None, 1_000, None),
    ];
    for (done, by, as_of, expected) in cases {
        assert_eq!(
            on_time(done, by, as_of),
            expected,
            "{done:?} {by:?} {as_of}"
        );
    }
}

#[test]
fn a_new_bad_review_after_the_rectification_calls_for_a_revisit_at_once() {
    let mut review = review();
    review.forwarded_at = Some(at("2026-02-14T10:00:00+08:00"));
    review.rectified_at = Some(at("2026-02-24T10:00:00+08:00"));
    review.re_evaluated_at = Some(at("2026-02-25T09:00:00+08:00"));
    review.re_satisfaction = Some(2);
    assert_eq!(due(&review).revisit_due_at, review.re_evaluated_at);
    review.re_satisfaction = Some(4);
    // Anonymous and outside the random sample: a good re-evaluation closes the loop.
    review.real_name = false;
    review.project_no = (0..)
        .map(|i| format!("BN-{i}"))
        .find(|p| revisit_draw(p, 1) >= 0.2)
        .unwrap();
    assert_eq!(
        due(&review).revisit_due_at,
        None,
        "a good re-evaluation closes the loop"
    );
}

#[test]
fn the_revisit_sample_is_drawn_from_the_case_number() {
    let policy = policy(); // Xishuangbanna: 20 % at random; real-name share inherited (100 %).
    assert_eq!(policy.revisit.random_share.0, 0.2);
    assert_eq!(policy.revisit.real_name_share.0, 1.0);
    let mut review = review();
    review.forwarded_at = Some(at("2026-02-14T10:00:00+08:00"));
    review.rectified_at = Some(at("2026-02-24T10:00:00+08:00"));
    // A good re-evaluation after the rectification.
    review.re_evaluated_at = Some(at("2026-02-25T09:00:00+08:00"));
    review.re_satisfaction = Some(4);
    // Real-name: all of them are revisited, 5 natural days after the rectification.
    review.real_name = true;
    assert_eq!(
        show(due(&review).revisit_due_at).as_deref(),
        Some("2026-03-02T00:00:00+08:00")
    );
    // Anonymous: about a fifth, the same ones every time.
    review.real_name = false;
    let calendar = Calendar::official();
    let mut sampled = 0;
    for i in 0..10_000 {
        review.project_no = format!("BN-{i}");
        let drawn = revisit_draw(&review.project_no, 1) < 0.2;
        let due = assess(&review, &policy.deadlines, &policy.revisit, calendar);
        assert_eq!(due.revisit_due_at.is_some(), drawn, "{i}");
        assert_eq!(
            revisit_draw(&review.project_no, 1),
            revisit_draw(&format!("BN-{i}"), 1)
        );
        sampled += usize::from(drawn);
    }
    assert!((1_800..2_200).contains(&sampled), "{sampled} of 10 000");
}
