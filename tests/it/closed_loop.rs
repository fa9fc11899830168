//! Cases, default evaluations and the effective evaluation rate, through a real broker: a fixture
//! month of three regions whose documents disagree (Fujian 满意 after 7 natural days from the
//! service, Jilin 基本满意, Xuchang 基本满意 from the case's generation), checked against values
//! worked out by hand from `tests/it/fixtures/month_*.ndjson`.

use std::process::Stdio;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type, Int8Type, TimestampMicrosecondType};

use crate::support::*;

const CASES: &str = include_str!("fixtures/month_cases.ndjson");
const EVALUATIONS: &str = include_str!("fixtures/month_evaluations.ndjson");
const AS_OF: &str = "2026-10-20T00:00:00+08:00";

fn records(text: &str) -> Vec<(String, Vec<u8>)> {
    text.lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            (
                value["projectNo"].as_str().unwrap().to_owned(),
                line.as_bytes().to_vec(),
            )
        })
        .collect()
}

fn cst(us: i64) -> String {
    haochaping::policy::span::format_cst(us)
}

async fn query(lake: &std::path::Path, sql: &str) -> Vec<RecordBatch> {
    haochaping::analytics::query_lake(&root(lake), sql)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{sql}"))
}

/// The ingest of the cases test: the fixture's month (September–October 2026) is to stay inside
/// the dedup window, or its records would be dead-lettered as outside it.
const CASES_INGEST: &[&str] = &[
    "--exit-when-idle",
    "3s",
    "--cases-topic",
    "cases",
    "--dedup-window-days",
    "3650",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_evaluations_follow_each_regions_policy_and_feed_the_evaluation_rate() {
    let broker = Tansu::with_topics(2).await;
    broker.create_topic("cases", 2).await;
    broker.create_topic("cases.dlq", 1).await;
    produce_records(&broker.brokers, "cases", &records(CASES)).await;
    produce_records(&broker.brokers, "evaluations", &records(EVALUATIONS)).await;

    let lake = tempfile::tempdir().unwrap();
    let output = ingest_command(&broker.brokers, lake.path(), "closed-loop", CASES_INGEST)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        summary["accepted"],
        12 + 3,
        "every case record and evaluation"
    );
    assert_eq!(summary["dead_lettered"], 0);

    let analyze = crate::support::haochaping()
        .args([
            "analyze",
            "--lake",
            lake.path().to_str().unwrap(),
            "--as-of",
            AS_OF,
        ])
        .output()
        .unwrap();
    assert!(
        analyze.status.success(),
        "{}",
        String::from_utf8_lossy(&analyze.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&analyze.stdout).unwrap();
    // FJ-2, FJ-3, FJ-5, JL-2, XC-1, XC-2 have no evaluation; FJ-5's period is still running.
    assert_eq!(report["default_evaluations"]["unevaluated"], 6);
    assert_eq!(report["default_evaluations"]["defaults"], 5);

    // The defaults, worked out by hand (end of the period's last day, China time).
    let batches = query(
        lake.path(),
        "SELECT project_no, satisfaction, level_name, channel, period_from, period, policy, \
         assessed_at, month FROM default_evaluations ORDER BY project_no",
    )
    .await;
    let mut rows = Vec::new();
    for batch in &batches {
        let text = |name: &str| {
            batch
                .column_by_name(name)
                .unwrap()
                .as_string::<i32>()
                .clone()
        };
        let (project, level, channel, from, policy, month) = (
            text("project_no"),
            text("level_name"),
            text("channel"),
            text("period_from"),
            text("policy"),
            text("month"),
        );
        let satisfaction = batch
            .column_by_name("satisfaction")
            .unwrap()
            .as_primitive::<Int8Type>()
            .clone();
        let at = batch
            .column_by_name("assessed_at")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>()
            .clone();
        for row in 0..batch.num_rows() {
            assert_eq!(channel.value(row), "system_default");
            rows.push((
                project.value(row).to_owned(),
                satisfaction.value(row),
                level.value(row).to_owned(),
                from.value(row).to_owned(),
                policy.value(row).rsplit('/').next().unwrap().to_owned(),
                cst(at.value(row)),
                month.value(row).to_owned(),
            ));
        }
    }
    let expected = [
        // Fujian 002 §5: 满意, 7 natural days after the service. Finished 3 Sep 09:00 → end of 10 Sep.
        (
            "FJ-2",
            4,
            "满意",
            "service_finished",
            "350000-fujian.toml",
            "2026-09-11T00:00:00+08:00",
            "2026-09",
        ),
        // Finished 30 Sep 15:00 → end of 7 Oct: the default falls in October.
        (
            "FJ-3",
            4,
            "满意",
            "service_finished",
            "350000-fujian.toml",
            "2026-10-08T00:00:00+08:00",
            "2026-10",
        ),
        // Jilin 001 §10: 基本满意. Finished 6 Sep 16:00 → end of 13 Sep.
        (
            "JL-2",
            3,
            "基本满意",
            "service_finished",
            "220200-jilin.toml",
            "2026-09-14T00:00:00+08:00",
            "2026-09",
        ),
        // Xuchang 003 制度 §9: from the case's generation (20 Sep, its pending record) → end of 27 Sep,
        // not from its end (26 Sep → 3 Oct).
        (
            "XC-1",
            3,
            "基本满意",
            "case_generated",
            "411000-xuchang.toml",
            "2026-09-28T00:00:00+08:00",
            "2026-09",
        ),
        // Generated 8 Oct → end of 15 Oct; counted from its end (14 Oct) it would still be running.
        (
            "XC-2",
            3,
            "基本满意",
            "case_generated",
            "411000-xuchang.toml",
            "2026-10-16T00:00:00+08:00",
            "2026-10",
        ),
    ];
    let expected: Vec<_> = expected
        .iter()
        .map(|(p, s, l, f, pol, at, m)| {
            (
                p.to_string(),
                *s as i8,
                l.to_string(),
                f.to_string(),
                pol.to_string(),
                at.to_string(),
                m.to_string(),
            )
        })
        .collect();
    assert_eq!(rows, expected);

    // The effective evaluation rate (queries/evaluation_rates.sql), by the month each case finished.
    let sql = include_str!("../../queries/evaluation_rates.sql");
    let batches = query(lake.path(), sql).await;
    let mut rates = Vec::new();
    for batch in &batches {
        let text = |name: &str| {
            batch
                .column_by_name(name)
                .unwrap()
                .as_string::<i32>()
                .clone()
        };
        let int = |name: &str| {
            batch
                .column_by_name(name)
                .unwrap()
                .as_primitive::<Int64Type>()
                .clone()
        };
        let float = |name: &str| {
            batch
                .column_by_name(name)
                .unwrap()
                .as_primitive::<Float64Type>()
                .clone()
        };
        let (month, county) = (text("month"), text("county_code"));
        let (finished, evaluated, defaulted, waiting) = (
            int("finished_cases"),
            int("evaluated"),
            int("defaulted"),
            int("not_yet_evaluated"),
        );
        let (active, with_defaults) = (float("active_rate"), float("rate_with_defaults"));
        for row in 0..batch.num_rows() {
            assert!(county.is_valid(row));
            rates.push((
                month.value(row).to_owned(),
                county.value(row).to_owned(),
                finished.value(row),
                evaluated.value(row),
                defaulted.value(row),
                waiting.value(row),
                active.value(row),
                with_defaults.value(row),
            ));
        }
    }
    let expected_rates = [
        // Jilin: JL-1 and JL-3 evaluated (JL-3 late, in October, which still counts), JL-2 defaulted.
        ("2026-09", "220204", 3, 2, 1, 0, 0.6667, 1.0),
        // Fujian: FJ-1 evaluated, FJ-2 and FJ-3 defaulted (FJ-3's default is given in October but
        // the case finished in September); FJ-4 is only accepted.
        ("2026-09", "350102", 3, 1, 2, 0, 0.3333, 1.0),
        ("2026-09", "411002", 1, 0, 1, 0, 0.0, 1.0),
        // FJ-5 finished on 18 Oct: its period runs until the end of 25 Oct.
        ("2026-10", "350102", 1, 0, 0, 1, 0.0, 0.0),
        ("2026-10", "411002", 1, 0, 1, 0, 0.0, 1.0),
    ];
    let expected_rates: Vec<_> = expected_rates
        .iter()
        .map(|(m, c, f, e, d, w, a, r)| (m.to_string(), c.to_string(), *f, *e, *d, *w, *a, *r))
        .collect();
    assert_eq!(rates, expected_rates);

    // A late evaluation replaces a default at the next rebuild; here FJ-2 is evaluated after all.
    let late = EVALUATIONS
        .lines()
        .next()
        .unwrap()
        .replace("FJ-1", "FJ-2")
        .replace("2026-09-02 10:05:00", "2026-10-19 09:00:00");
    produce_records(
        &broker.brokers,
        "evaluations",
        &[("FJ-2".into(), late.into_bytes())],
    )
    .await;
    let again = ingest_command(&broker.brokers, lake.path(), "closed-loop", CASES_INGEST)
        .output()
        .unwrap();
    assert!(again.status.success());
    let analyze = crate::support::haochaping()
        .args([
            "analyze",
            "--lake",
            lake.path().to_str().unwrap(),
            "--as-of",
            AS_OF,
        ])
        .output()
        .unwrap();
    assert!(analyze.status.success());
    let batches = query(
        lake.path(),
        "SELECT project_no FROM default_evaluations ORDER BY project_no",
    )
    .await;
    let left: Vec<String> = batches
        .iter()
        .flat_map(|b| {
            let c = b.column(0).as_string::<i32>().clone();
            (0..b.num_rows())
                .map(move |i| c.value(i).to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(left, ["FJ-3", "JL-2", "XC-1", "XC-2"]);
}

const LOOP_EVALUATIONS: &str = include_str!("fixtures/loop_evaluations.ndjson");
const LOOP_WORKFLOW: &str = include_str!("fixtures/loop_workflow.ndjson");

/// `(rule, project_no)` of alerts, sorted.
fn rules(alerts: &[serde_json::Value]) -> Vec<(String, String)> {
    let mut rules: Vec<(String, String)> = alerts
        .iter()
        .map(|a| {
            (
                a["rule"].as_str().unwrap().to_owned(),
                a["project_no"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    rules.sort();
    rules
}

/// One KPI row per department code: (bad reviews, excluded, reply rate, on-time rectification
/// rate, revisit rate).
async fn kpis(lake: &std::path::Path) -> Vec<(String, String, i64, i64, f64, f64, f64)> {
    let batches = query(lake, include_str!("../../queries/kpis.sql")).await;
    let mut rows = Vec::new();
    for batch in &batches {
        let text = |name: &str| {
            batch
                .column_by_name(name)
                .unwrap()
                .as_string::<i32>()
                .clone()
        };
        let int = |name: &str| {
            batch
                .column_by_name(name)
                .unwrap()
                .as_primitive::<Int64Type>()
                .clone()
        };
        let float = |name: &str| {
            batch
                .column_by_name(name)
                .unwrap()
                .as_primitive::<Float64Type>()
                .clone()
        };
        let (month, county) = (text("month"), text("county_code"));
        let (bad, excluded) = (int("bad_reviews"), int("excluded"));
        let (reply, on_time, revisit) = (
            float("reply_rate"),
            float("on_time_rectification_rate"),
            float("revisit_rate"),
        );
        for row in 0..batch.num_rows() {
            rows.push((
                month.value(row).to_owned(),
                county.value(row).to_owned(),
                bad.value(row),
                excluded.value(row),
                reply.value(row),
                on_time.value(row),
                revisit.value(row),
            ));
        }
    }
    rows
}

/// The closed loop of four bad reviews of February 2026 in Xishuangbanna (004: 2 working days to
/// forward and to rectify) and Luoning (000: escalation after 10 and 15 natural days), across the
/// Spring Festival (15–23 February off, Saturdays 14 and 28 worked): the workflow through a real
/// broker, hostile events parked by reason, every deadline and alert worked out by hand, each alert
/// sent once across a restart, and a review decided mistaken changing February's rates afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_closed_loop_of_a_month_across_the_spring_festival() {
    use haochaping::config::{AlertsConfig, KafkaConfig};
    use haochaping::engine::analyze::analyze_round;
    use haochaping::sink::alerts::AlertSink;
    use haochaping::telemetry::Stats;

    let broker = Tansu::with_topics(2).await;
    broker.create_topic("workflow", 2).await;
    broker.create_topic("workflow.dlq", 1).await;
    let lake = tempfile::tempdir().unwrap();
    let ingest = |group: &str| {
        let output = ingest_command(
            &broker.brokers,
            lake.path(),
            group,
            &[
                "--exit-when-idle",
                "3s",
                "--workflow-topic",
                "workflow",
                "--alerts-enabled",
                "false",
                // February is more than the default 120 days before today.
                "--dedup-window-days",
                "1000",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    };

    // The reviews first; their workflow days later, with what a careless platform adds.
    produce_records(&broker.brokers, "evaluations", &records(LOOP_EVALUATIONS)).await;
    assert_eq!(ingest("loop")["accepted"], 4);
    let mut workflow = records(LOOP_WORKFLOW);
    let hostile = [
        // A case nobody gave a bad review.
        r#"{"projectNo": "XX-9", "assessNumber": 1, "eventType": "forwarded", "eventTime": "2026-02-14 10:00:00"}"#,
        // Rectified without ever being forwarded.
        r#"{"projectNo": "BN-2", "assessNumber": 1, "eventType": "rectified", "eventTime": "2026-02-26 10:00:00"}"#,
        // Forwarded a second time, differently.
        r#"{"projectNo": "BN-1", "assessNumber": 1, "eventType": "forwarded", "eventTime": "2026-02-24 10:00:00"}"#,
        // Before the review was given.
        r#"{"projectNo": "LN-1", "assessNumber": 1, "eventType": "appealed", "eventTime": "2026-02-01 10:00:00"}"#,
    ];
    for text in hostile {
        let key = serde_json::from_str::<serde_json::Value>(text).unwrap()["projectNo"]
            .as_str()
            .unwrap()
            .to_owned();
        workflow.push((key, text.as_bytes().to_vec()));
    }
    // And one redelivery.
    workflow.push(workflow[0].clone());
    produce_records(&broker.brokers, "workflow", &workflow).await;
    let summary = ingest("loop");
    assert_eq!(summary["accepted"], 10);
    assert_eq!(summary["duplicates"], 1);
    let dead = read_topic(&broker.brokers, "workflow.dlq", 1);
    assert_eq!(
        count_by_reason(&dead),
        std::collections::BTreeMap::from([
            ("out_of_order".to_owned(), 2),
            ("unknown_bad_review".to_owned(), 1),
            ("workflow_step_conflict".to_owned(), 1),
        ])
    );

    // The rounds of ingest, driven here on a fixed clock (31 March 2026).
    let as_of = chrono::DateTime::parse_from_rfc3339("2026-03-31T00:00:00+08:00")
        .unwrap()
        .timestamp_micros();
    let policies = haochaping::policy::Policies::shipped().unwrap();
    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    cluster.create_topic("alerts", 1, 1).unwrap();
    let kafka = KafkaConfig {
        brokers: cluster.bootstrap_servers(),
        ..KafkaConfig::default()
    };
    let stats = Stats::default();
    let sink = AlertSink::from_config(&kafka, &AlertsConfig::default()).unwrap();
    let sent = analyze_round(&root(lake.path()), &sink, &stats, &policies, as_of)
        .await
        .unwrap();
    assert_eq!(sent, 13);
    assert_eq!(
        analyze_round(&root(lake.path()), &sink, &stats, &policies, as_of)
            .await
            .unwrap(),
        0
    );
    // A restart: a new producer, the same lake. Nothing is sent again.
    drop(sink);
    let sink = AlertSink::from_config(&kafka, &AlertsConfig::default()).unwrap();
    assert_eq!(
        analyze_round(&root(lake.path()), &sink, &stats, &policies, as_of)
            .await
            .unwrap(),
        0
    );

    let alerts: Vec<serde_json::Value> = read_topic(&cluster.bootstrap_servers(), "alerts", 1)
        .iter()
        .map(|r| serde_json::from_slice(&r.payload).unwrap())
        .collect();
    let expected: Vec<(String, String)> = [
        // BN-1: forwarded and rectified in time (2 working days each, Saturday 14 and the days after
        // the festival), but the inherited 10 natural days ran through the holiday: the deputy
        // leader hears of it at the end of 23 February; rectified on the 25th, before the 15th day.
        ("escalate_deputy_leader", "BN-1"),
        // BN-2 (9 February): never forwarded, replied or rectified.
        ("escalate_deputy_leader", "BN-2"),
        // LN-1 (2 February): rectified on 20 February, after 10 and 15 natural days.
        ("escalate_deputy_leader", "LN-1"),
        // LN-2 (3 February): forwarded, not replied or rectified (its review was applied for).
        ("escalate_deputy_leader", "LN-2"),
        ("escalate_main_leader", "BN-2"),
        ("escalate_main_leader", "LN-1"),
        ("escalate_main_leader", "LN-2"),
        ("overdue_forward", "BN-2"),
        ("overdue_rectification", "BN-2"),
        ("overdue_rectification", "LN-2"),
        ("overdue_reply", "BN-2"),
        ("overdue_reply", "LN-2"),
        // LN-1 was rectified on 20 February and its evaluator did not evaluate again within 5
        // natural days (000 三(三), Luoning's own rule): the centre must revisit from 26 February.
        ("revisit_due", "LN-1"),
    ]
    .iter()
    .map(|(r, p)| (r.to_string(), p.to_string()))
    .collect();
    assert_eq!(rules(&alerts), expected);
    let validator = jsonschema::validator_for(
        &serde_json::from_str(include_str!("../../schemas/alert.schema.json")).unwrap(),
    )
    .unwrap();
    for alert in &alerts {
        let errors: Vec<String> = validator
            .iter_errors(alert)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{alert}: {errors:?}");
    }
    let deadline_of = |rule: &str, project: &str| {
        alerts
            .iter()
            .find(|a| a["rule"] == rule && a["project_no"] == project)
            .map(|a| {
                (
                    a["deadline"].as_str().unwrap().to_owned(),
                    a["period"].as_str().unwrap().to_owned(),
                )
            })
            .unwrap()
    };
    // BN-2 given Monday 9 February: 2 working days are 10 and 11 February.
    assert_eq!(
        deadline_of("overdue_forward", "BN-2"),
        ("2026-02-12T00:00:00+08:00".into(), "2 working days".into())
    );
    // Its 10 working days of reply: 10–14 (Saturday 14 worked), 24–28 (Saturday 28 worked).
    assert_eq!(
        deadline_of("overdue_reply", "BN-2"),
        ("2026-03-01T00:00:00+08:00".into(), "10 working days".into())
    );
    // LN-2's 15 working days to rectify from its forwarding on 3 February: 4–6, 9–14, 24–28, 2 March.
    assert_eq!(
        deadline_of("overdue_rectification", "LN-2"),
        ("2026-03-03T00:00:00+08:00".into(), "15 working days".into())
    );
    assert_eq!(
        deadline_of("escalate_deputy_leader", "BN-1"),
        ("2026-02-24T00:00:00+08:00".into(), "10 natural days".into())
    );

    // The bad_reviews table: BN-1's deadlines across the festival, on time.
    let batches = query(
        lake.path(),
        "SELECT forward_by, rectify_by, forwarded_on_time, rectified_on_time, state, policy \
         FROM bad_reviews WHERE project_no = 'BN-1'",
    )
    .await;
    let batch = &batches[0];
    let time = |name: &str| {
        cst(batch
            .column_by_name(name)
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>()
            .value(0))
    };
    assert_eq!(time("forward_by"), "2026-02-25T00:00:00+08:00");
    assert_eq!(time("rectify_by"), "2026-02-26T00:00:00+08:00");
    let flag = |name: &str| batch.column_by_name(name).unwrap().as_boolean().value(0);
    assert!(flag("forwarded_on_time") && flag("rectified_on_time"));
    assert_eq!(
        batch
            .column_by_name("state")
            .unwrap()
            .as_string::<i32>()
            .value(0),
        "revisited"
    );

    // February's indicators, then a review decided mistaken in March changes them.
    let before = kpis(lake.path()).await;
    assert_eq!(
        before,
        [
            // Luoning: LN-1 replied and rectified in time (15 working days), not revisited; LN-2
            // neither.
            ("2026-02".into(), "410328".into(), 2, 0, 0.5, 0.5, 0.0),
            // Xishuangbanna: BN-1 replied, rectified in time, revisited; BN-2 nothing.
            ("2026-02".into(), "532801".into(), 2, 0, 0.5, 0.5, 1.0),
        ]
    );
    let decided = r#"{"projectNo": "LN-2", "assessNumber": 1, "eventType": "review_decided", "eventTime": "2026-03-02 10:00:00", "decision": "mistaken"}"#;
    produce_records(
        &broker.brokers,
        "workflow",
        &[("LN-2".into(), decided.as_bytes().to_vec())],
    )
    .await;
    assert_eq!(ingest("loop")["accepted"], 1);
    let later = as_of + 86_400_000_000;
    assert_eq!(
        analyze_round(&root(lake.path()), &sink, &stats, &policies, later)
            .await
            .unwrap(),
        0,
        "an excluded review raises nothing more"
    );
    let after = kpis(lake.path()).await;
    assert_eq!(
        after,
        [
            ("2026-02".into(), "410328".into(), 1, 1, 1.0, 1.0, 0.0),
            ("2026-02".into(), "532801".into(), 2, 0, 0.5, 0.5, 1.0),
        ]
    );
    // The exclusion reaches every rate: LN-2 is gone from the effective evaluations.
    let batches = query(
        lake.path(),
        "SELECT count(*) AS n FROM effective_evaluations WHERE project_no = 'LN-2'",
    )
    .await;
    assert_eq!(batches[0].column(0).as_primitive::<Int64Type>().value(0), 0);
}
