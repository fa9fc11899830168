//! Real-time alerts: the rules of `queries/alerts/` on a checked-in fixture whose answers were
//! worked out by hand, the published schema, and exactly one alert per bad review through a real
//! broker, across SIGKILL.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::process::Stdio;
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::Int8Type;
use haochaping::analytics::alerts::alert::alert_id;
use haochaping::analytics::alerts::{Alert, AlertRules, RULES};
use haochaping::telemetry::Stats;
use haochaping::transform::dedup::DedupState;
use haochaping::transform::identity::EvaluatorKeyer;
use haochaping::transform::{process_one, Message, Outcome, Processor};

use crate::support::*;

const FIXTURE: &str = include_str!("fixtures/alerts.ndjson");

fn schema() -> jsonschema::Validator {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../schemas/alert.schema.json")).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

fn at(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap()
        .timestamp_micros()
}

/// The fixture one line per micro-batch (as small chunks reach the engine), through the engine's
/// processor and the shipped rules. Returns every alert, in order.
async fn fixture_alerts() -> Vec<Alert> {
    let processor = Processor::new(
        Default::default(),
        EvaluatorKeyer::new(b"alerts-fixture-secret"),
    );
    let mut rules = AlertRules::new(
        RULES,
        Vec::new(),
        std::sync::Arc::new(haochaping::policy::Policies::shipped().unwrap()),
    )
    .await
    .unwrap();
    let mut dedup = DedupState::default();
    let stats = Stats::default();
    let now = at("2026-11-25T09:00:00+08:00");
    let mut alerts = Vec::new();
    for (offset, line) in FIXTURE.lines().enumerate() {
        let message = Message {
            offset: offset as i64,
            key: None,
            payload: line.as_bytes(),
        };
        let (outcome, rows) = process_one(&processor, message, 0, now, &mut dedup, &stats);
        if outcome != Outcome::Accepted {
            assert!(rows.is_none());
            continue;
        }
        let (batch, _) = rows.unwrap().finish_batch().unwrap();
        alerts.extend(rules.evaluate(&batch, now).await.unwrap());
    }
    alerts
}

/// Another instance of the group commits a bad review of staff S1 to the lake. Once this
/// instance's look-back is read again from the lake (what `alerts.history_refresh` does in the
/// background), S1's next bad review here is S1's second within 24 h; before, it was not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_look_back_takes_in_what_other_instances_committed() {
    let template: serde_json::Value =
        serde_json::from_str(FIXTURE.lines().nth(1).unwrap()).unwrap();
    let review = |case: &str, time: &str| {
        let mut event = template.clone();
        event["projectNo"] = case.into();
        event["assessTime"] = time.into();
        serde_json::to_vec(&event).unwrap()
    };
    let now = at("2026-11-25T09:00:00+08:00");
    // The other instance: its review of S1 at 08:00, committed to the shared lake.
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let elsewhere = dir.path().join("elsewhere.ndjson");
    std::fs::write(
        &elsewhere,
        [review("OTHER-1", "2026-11-25 08:00:00"), b"\n".to_vec()].concat(),
    )
    .unwrap();
    let mut config = haochaping::config::IngestConfig::default();
    config.lake.path = lake.clone().into();
    config.identity.secret = Some(SECRET.into());
    haochaping::offline::ingest_file(config, &elsewhere, std::sync::Arc::new(Stats::default()))
        .await
        .unwrap();

    // This instance: S1's review at 08:30.
    let processor = Processor::new(Default::default(), EvaluatorKeyer::new(SECRET.as_bytes()));
    let here = review("HERE-1", "2026-11-25 08:30:00");
    let rules_after = |refresh: bool| {
        let (processor, here, lake) = (&processor, &here, &lake);
        async move {
            let mut rules = AlertRules::new(
                RULES,
                Vec::new(),
                std::sync::Arc::new(haochaping::policy::Policies::shipped().unwrap()),
            )
            .await
            .unwrap();
            if refresh {
                let history = haochaping::analytics::alerts::load_history(&root(lake), now)
                    .await
                    .unwrap();
                assert_eq!(rules.absorb(&history, now).unwrap(), 1);
                assert_eq!(rules.absorb(&history, now).unwrap(), 0, "held once");
            }
            let message = Message {
                offset: 0,
                key: None,
                payload: here,
            };
            let (outcome, rows) = process_one(
                processor,
                message,
                0,
                now,
                &mut DedupState::default(),
                &Stats::default(),
            );
            assert_eq!(outcome, Outcome::Accepted);
            let (batch, _) = rows.unwrap().finish_batch().unwrap();
            let alerts = rules.evaluate(&batch, now).await.unwrap();
            alerts
                .iter()
                .map(|a| a.rule.to_string())
                .collect::<BTreeSet<_>>()
        }
    };
    assert_eq!(
        rules_after(false).await,
        BTreeSet::from(["bad_review".to_owned()])
    );
    assert_eq!(
        rules_after(true).await,
        BTreeSet::from(["bad_review".to_owned(), "staff_repeat".to_owned()])
    );
}

#[tokio::test]
async fn the_rules_fire_on_the_fixture_as_worked_out_by_hand() {
    let alerts = as_json(&fixture_alerts().await);
    let fired: Vec<(String, String, i64, String, i64)> = alerts
        .iter()
        .map(|a| {
            (
                a["rule"].as_str().unwrap().to_owned(),
                a["project_no"].as_str().unwrap().to_owned(),
                a["assess_number"].as_i64().unwrap(),
                a["severity"].as_str().unwrap().to_owned(),
                a["related_reviews"].as_i64().unwrap(),
            )
        })
        .collect();
    let expected = [
        // LN-G1 (good) fires nothing.
        ("bad_review", "LN-B1", 1, "medium", 1),
        ("bad_review", "LN-B2", 1, "high", 1),
        // Staff S1's second bad review, 3 h after LN-B1.
        ("staff_repeat", "LN-B2", 1, "high", 2),
        // 30 h after LN-B2: outside the 24 h window.
        ("bad_review", "LN-B3", 1, "high", 1),
        // Evaluator E1's second bad review (D1, then D2): not yet a pattern.
        ("bad_review", "LN-B4", 1, "medium", 1),
        // E1's third in 30 days, over three departments.
        ("bad_review", "LN-B5", 1, "medium", 1),
        ("malicious_reviewer", "LN-B5", 1, "medium", 3),
        // The supplementary evaluation of LN-G1 is a bad review.
        ("bad_review", "LN-G1", 2, "high", 1),
        ("supplementary_bad_review", "LN-G1", 2, "high", 1),
        // The redelivered LN-B2 and the invalid LN-X1 fire nothing. LN-B6 arrives last but was
        // given 2 h after LN-B3 by staff S1: a repeat. For E1 it is only the second bad review
        // up to its time (LN-B4 and LN-B5 came later), so no malicious_reviewer.
        ("bad_review", "LN-B6", 1, "medium", 1),
        ("staff_repeat", "LN-B6", 1, "high", 2),
    ];
    let expected: Vec<(String, String, i64, String, i64)> = expected
        .iter()
        .map(|(r, p, n, s, c)| (r.to_string(), p.to_string(), *n, s.to_string(), *c))
        .collect();
    assert_eq!(fired, expected);

    // The body of one alert, field by field.
    let b1 = &alerts[0];
    assert_eq!(b1["level"], 2);
    assert_eq!(b1["level_name"], "不满意");
    assert_eq!(b1["department"]["code"], "11410328MB00000015");
    assert_eq!(b1["department"]["name"], "洛宁县人力资源和社会保障局");
    assert_eq!(b1["item"]["name"], "城乡居民基本养老保险参保登记");
    assert_eq!(b1["region"]["province"]["name"], "河南省");
    assert_eq!(b1["region"]["city"]["name"], "洛阳市");
    assert_eq!(b1["region"]["county"]["code"], "410328");
    assert_eq!(b1["region"]["county"]["name"], "洛宁县");
    assert_eq!(b1["staff"]["code"], "S1");
    assert_eq!(b1["tags"][0]["code"], "210");
    assert_eq!(b1["tags"][0]["meaning"], "要求重复提交材料");
    assert_eq!(b1["given_at"], "2026-11-10T09:00:00+08:00");
    // Tuesday 10 November: forwarded by the end of Thursday 12 November (Luoning's policy inherits
    // the default's 2 working days).
    assert_eq!(b1["forward_by"], "2026-11-13T00:00:00+08:00");
    assert_eq!(b1["forward_within"], "2 working days");
    assert_eq!(b1["detected_at"], "2026-11-25T09:00:00+08:00");
    assert_eq!(b1["channel"]["name"], "hall_window");
    // Identity only as the keyed hash.
    let key = b1["evaluator_key"].as_str().unwrap();
    assert_eq!(key.len(), 64);
    let text = serde_json::to_string(&alerts).unwrap();
    for clear in [
        "张三",
        "410328199001011234",
        "13800000000",
        "李五",
        "410328198505052222",
    ] {
        assert!(!text.contains(clear), "{clear} in an alert");
    }
    // Ids: one per rule and evaluation, the same on every run.
    let ids: HashSet<&str> = alerts.iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), alerts.len());
    let again = as_json(&fixture_alerts().await);
    let ids_again: HashSet<&str> = again.iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ids_again);
}

#[tokio::test]
async fn every_alert_matches_the_published_schema() {
    let validator = schema();
    let alerts = as_json(&fixture_alerts().await);
    assert!(!alerts.is_empty());
    for alert in &alerts {
        let errors: Vec<String> = validator
            .iter_errors(alert)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{alert}: {errors:?}");
    }
    // And the schema is not a rubber stamp.
    let mut broken = alerts[0].clone();
    broken["level"] = serde_json::json!(4);
    assert!(!validator.is_valid(&broken));
    let mut broken = alerts[0].clone();
    broken["user_cert"] = serde_json::json!("x");
    assert!(!validator.is_valid(&broken));
}

/// Every bad review in the lake, by case slot.
fn lake_bad_reviews(lake: &std::path::Path) -> HashSet<(String, i8)> {
    let mut bad = HashSet::new();
    for file in parquet_files(&lake.join("evaluations")) {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&file).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let project = batch
                .column_by_name("project_no")
                .unwrap()
                .as_string::<i32>();
            let number = batch
                .column_by_name("assess_number")
                .unwrap()
                .as_primitive::<Int8Type>();
            let flag = batch.column_by_name("bad_review").unwrap().as_boolean();
            for row in 0..batch.num_rows() {
                if flag.value(row) {
                    bad.insert((project.value(row).to_owned(), number.value(row)));
                }
            }
        }
    }
    bad
}

/// Produced events with bad reviews among them, an ingest killed at random points and restarted:
/// every accepted bad review has exactly one `bad_review` alert id, and no other evaluation has any.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_review_alerts_once_across_sigkill() {
    use rand::{Rng, SeedableRng};
    let broker = Tansu::start();
    broker.create_topic("evaluations", 2).await;
    broker.create_topic("evaluations.dlq", 1).await;
    broker.create_topic("alerts", 2).await;
    let lake = tempfile::tempdir().unwrap();
    let mut produced = Produced::new();
    let mut generator = generator(31, 0.05, 0.02);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    // A high limit: this test is about exactly one alert each, not about storms.
    let args = [
        "--flush-rows",
        "300",
        "--flush-interval",
        "200ms",
        "--alerts-max-per-minute",
        "100000",
    ];
    for round in 0..3 {
        produce(
            &broker.brokers,
            "evaluations",
            &mut generator,
            3_000,
            &mut produced,
        )
        .await;
        spawn_then_sigkill(
            &mut ingest_command(
                &broker.brokers,
                lake.path(),
                &format!("alerts-{round}"),
                &args,
            ),
            Duration::from_millis(rng.random_range(200..1_500)),
        )
        .await;
    }
    let mut last: Vec<&str> = args.to_vec();
    last.extend(["--exit-when-idle", "3s"]);
    let output = ingest_command(&broker.brokers, lake.path(), "alerts-final", &last)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_exactly_once(lake.path(), &produced.slots);

    let bad = lake_bad_reviews(lake.path());
    assert!(
        bad.len() > 50,
        "the generator should give bad reviews: {}",
        bad.len()
    );
    let validator = schema();
    let mut by_id: HashMap<String, (String, String, i8)> = HashMap::new();
    for record in read_topic(&broker.brokers, "alerts", 2) {
        let alert: serde_json::Value = serde_json::from_slice(&record.payload).unwrap();
        assert!(validator.is_valid(&alert), "{alert}");
        let rule = alert["rule"].as_str().unwrap().to_owned();
        assert_ne!(rule, "rate_limited", "{alert}");
        let slot = (
            alert["project_no"].as_str().unwrap().to_owned(),
            alert["assess_number"].as_i64().unwrap() as i8,
        );
        assert!(
            bad.contains(&slot),
            "an alert for what is not a bad review in the lake: {alert}"
        );
        let id = alert["id"].as_str().unwrap().to_owned();
        // A repeat (a replay after a kill) is the same alert, byte for byte in what matters.
        if let Some(seen) = by_id.insert(id, (rule.clone(), slot.0.clone(), slot.1)) {
            assert_eq!(seen, (rule, slot.0, slot.1));
        }
    }
    let alerted: BTreeSet<(String, i8)> = by_id
        .values()
        .filter(|(rule, _, _)| rule == "bad_review")
        .map(|(_, p, n)| (p.clone(), *n))
        .collect();
    let expected: BTreeSet<(String, i8)> = bad.into_iter().collect();
    assert_eq!(alerted.len(), expected.len());
    assert_eq!(alerted, expected);
}

/// A storm from one department: the limit lets `max_per_minute` alerts through, and everything it
/// held back goes out as one `rate_limited` alert with the count, before the batch would commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_is_rate_limited_and_the_excess_summarised() {
    use haochaping::config::{AlertsConfig, KafkaConfig};
    use haochaping::sink::alerts::AlertSink;

    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    cluster.create_topic("alerts", 1, 1).unwrap();
    let kafka = KafkaConfig {
        brokers: cluster.bootstrap_servers(),
        ..KafkaConfig::default()
    };
    let config = AlertsConfig {
        max_per_minute: 5,
        ..AlertsConfig::default()
    };
    let mut sink = AlertSink::from_config(&kafka, &config).unwrap();
    let stats = Stats::default();
    // 40 bad reviews of one department, and one of another department in the middle of them.
    let alerts = storm(&fixture_alerts().await[0], 40);
    let mut deliveries = Vec::new();
    for alert in &alerts {
        if let Some(delivery) = sink.send(alert, &stats).await.unwrap() {
            deliveries.push(delivery);
        }
    }
    assert_eq!(
        deliveries.len(),
        6,
        "5 of the storm, 1 of the other department"
    );
    sink.confirm(deliveries).await.unwrap();
    let held = sink
        .send_held(at("2026-11-25T09:00:00+08:00"), &stats)
        .await
        .unwrap();
    assert_eq!(held.len(), 1);
    sink.confirm(held).await.unwrap();
    // Nothing held any more: a second call sends nothing.
    assert!(sink.send_held(0, &stats).await.unwrap().is_empty());

    let records = read_topic(&cluster.bootstrap_servers(), "alerts", 1);
    assert_eq!(records.len(), 7);
    let summary: serde_json::Value = records
        .iter()
        .map(|r| serde_json::from_slice::<serde_json::Value>(&r.payload).unwrap())
        .find(|a| a["rule"] == "rate_limited")
        .unwrap();
    assert!(schema().is_valid(&summary), "{summary}");
    assert_eq!(summary["limited_rule"], "bad_review");
    assert_eq!(summary["suppressed"], 35);
    assert_eq!(summary["department"]["code"], "11410328MB00000015");
    assert_eq!(summary["first_id"], alerts[5].id.as_str());
    assert_eq!(summary["last_id"], alerts[40].id.as_str());
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.alerts_rate_limited, 35);
    assert_eq!(snapshot.alerts_sent, 7);
}

/// `count` alerts of one department (distinct cases) and, at index 20, one of another.
fn storm(template: &Alert, count: usize) -> Vec<Alert> {
    (0..=count)
        .map(|i| {
            let mut alert = template.clone();
            alert.project_no = format!("STORM-{i}");
            alert.id = alert_id("bad_review", &alert.project_no, 1);
            if i == 20 {
                alert.department.code = "11410328MB00000028".into();
            }
            alert
        })
        .collect()
}

fn as_json(alerts: &[Alert]) -> Vec<serde_json::Value> {
    alerts
        .iter()
        .map(|a| serde_json::to_value(a).unwrap())
        .collect()
}

/// The analytics fixture's hotspots: announced as opened at the first refresh, nothing at a second
/// one, and closed when their windows have moved past the bad reviews.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hotspots_that_open_and_close_are_announced_once() {
    use haochaping::config::{AlertsConfig, KafkaConfig};
    use haochaping::engine::analyze::analyze_round;
    let policies = haochaping::policy::Policies::shipped().unwrap();
    use haochaping::sink::alerts::AlertSink;
    use haochaping::telemetry::Stats;

    let dir = tempfile::tempdir().unwrap();
    let lake = crate::analytics::fixture_lake(dir.path()).await;
    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    cluster.create_topic("alerts", 1, 1).unwrap();
    let kafka = KafkaConfig {
        brokers: cluster.bootstrap_servers(),
        ..KafkaConfig::default()
    };
    let sink = AlertSink::from_config(&kafka, &AlertsConfig::default()).unwrap();
    let stats = Stats::default();
    let as_of = crate::analytics::AS_OF_US;

    let opened = analyze_round(&root(&lake), &sink, &stats, &policies, as_of)
        .await
        .unwrap();
    assert!(opened > 0);
    assert_eq!(
        analyze_round(&root(&lake), &sink, &stats, &policies, as_of)
            .await
            .unwrap(),
        0
    );
    let later = analyze_round(
        &root(&lake),
        &sink,
        &stats,
        &policies,
        as_of + 3 * 86_400_000_000,
    )
    .await
    .unwrap();
    assert!(later > 0);

    let validator = schema();
    let alerts: Vec<serde_json::Value> = read_topic(&cluster.bootstrap_servers(), "alerts", 1)
        .iter()
        .map(|r| serde_json::from_slice(&r.payload).unwrap())
        .collect();
    assert_eq!(alerts.len(), opened + later);
    for alert in &alerts {
        let errors: Vec<String> = validator
            .iter_errors(alert)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{alert}: {errors:?}");
    }
    let ids: HashSet<&str> = alerts.iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), alerts.len());
    let hour = "item:11410328MB00000116T1B:1h:bad_review_concentration";
    let of = |rule: &str| -> Vec<&str> {
        alerts
            .iter()
            .filter(|a| a["rule"] == rule)
            .map(|a| a["hotspot_id"].as_str().unwrap())
            .collect()
    };
    assert!(of("hotspot_opened").contains(&hour));
    assert!(of("hotspot_closed").contains(&hour));
    // The first round only opened (the topic has one partition: it keeps the order); the later
    // round closed some and, its windows having moved, may open others.
    // The same rounds also send the closed loop's alerts of the fixture's bad reviews (none has a
    // workflow): those are not hotspots.
    let hotspot = |a: &&serde_json::Value| a["rule"].as_str().unwrap().starts_with("hotspot_");
    assert!(alerts[..opened]
        .iter()
        .filter(hotspot)
        .all(|a| a["rule"] == "hotspot_opened"));
    assert!(alerts[opened..]
        .iter()
        .filter(hotspot)
        .any(|a| a["rule"] == "hotspot_closed"));
    assert!(alerts.iter().any(|a| a["rule"] == "overdue_forward"));
}
