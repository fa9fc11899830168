//! Against rdkafka's in-process mock cluster: dead-letter contents and headers, and a broker outage
//! in the middle of a run.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use haochaping::config::IngestConfig;
use haochaping::engine::{self, RunOptions};
use haochaping::telemetry::Stats;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

fn config(brokers: &str, lake: &std::path::Path) -> IngestConfig {
    let mut config = IngestConfig::default();
    config.kafka.brokers = brokers.to_owned();
    config.kafka.group = "mock-test".into();
    config.lake.path = lake.into();
    config.lake.flush_interval = Duration::from_millis(500);
    config.identity.secret = Some(SECRET.into());
    // The records below are dated 2026-01-05: a window reaching them, so that they are not
    // dead-lettered as outside it.
    config.dedup.window_days = 3650;
    config
}

fn valid(project: &str) -> serde_json::Value {
    serde_json::json!({
        "projectNo": project, "taskCode": "T1", "taskName": "企业设立登记", "deptCode": "11410328MB00000015",
        "areaCode": "410328100201", "pf": "4", "satisfaction": "5", "evalDetail": "510",
        "assessTime": "2026-01-05 10:00:00", "assessNumber": "1", "userProp": "1",
        "userName": "张三", "userCert": "410328199001011234", "userPhone": "13800000000"
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_messages_reach_the_dead_letter_topic_with_reason_and_source() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("evaluations", 1, 1).unwrap();
    cluster.create_topic("evaluations.dlq", 1, 1).unwrap();
    cluster.create_topic("alerts", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();

    let mut bad_area = valid("P-2");
    bad_area["areaCode"] = "410300100201".into();
    let mut conflict = valid("P-1");
    conflict["satisfaction"] = "4".into();
    conflict["evalDetail"] = "406".into();
    let mut ancient = valid("P-3");
    ancient["assessTime"] = "2000-01-05 10:00:00".into();
    let oversize = format!(
        "{{\"projectNo\":\"P-9\",\"writingEvaluation\":\"{}\"}}",
        "长".repeat(30_000)
    );
    let messages: Vec<(Option<&str>, Vec<u8>, Option<&str>)> = vec![
        (
            Some("P-1"),
            serde_json::to_vec(&valid("P-1")).unwrap(),
            None,
        ),
        (Some("P-0"), b"{not json".to_vec(), Some("not_json")),
        (Some("P-0"), vec![b'{', 0xff, b'}'], Some("not_utf8")),
        (None, oversize.into_bytes(), Some("oversize")),
        (
            Some("P-2"),
            serde_json::to_vec(&bad_area).unwrap(),
            Some("invalid_area_code"),
        ),
        (
            Some("P-1"),
            serde_json::to_vec(&valid("P-1")).unwrap(),
            None,
        ), // identical redelivery
        (
            Some("P-1"),
            serde_json::to_vec(&conflict).unwrap(),
            Some("case_already_evaluated"),
        ),
        // Dated before the dedup window: whether its slot was taken is forgotten, so neither it
        // nor its redelivery is accepted.
        (
            Some("P-3"),
            serde_json::to_vec(&ancient).unwrap(),
            Some("outside_dedup_window"),
        ),
        (
            Some("P-3"),
            serde_json::to_vec(&ancient).unwrap(),
            Some("outside_dedup_window"),
        ),
    ];
    for (key, payload, _) in &messages {
        let mut record = FutureRecord::to("evaluations").payload(payload);
        if let Some(key) = key {
            record = record.key(*key);
        }
        producer.send(record, Duration::from_secs(5)).await.unwrap();
    }

    let lake = tempfile::tempdir().unwrap();
    let mut config = config(&brokers, lake.path());
    config.validation.max_message_bytes = 64 * 1024;
    let stats = Arc::new(Stats::default());
    let options = RunOptions {
        exit_when_idle: Some(Duration::from_secs(2)),
    };
    let summary = engine::run(config, options, stats, std::future::pending())
        .await
        .unwrap();
    assert_eq!(
        (
            summary.received,
            summary.accepted,
            summary.duplicates,
            summary.dead_lettered
        ),
        (9, 1, 1, 7)
    );

    let dead = read_topic(&brokers, "evaluations.dlq", 1);
    let expected: Vec<(i64, &str)> = messages
        .iter()
        .enumerate()
        .filter_map(|(offset, (_, _, reason))| reason.map(|r| (offset as i64, r)))
        .collect();
    let got: Vec<(i64, &str)> = dead
        .iter()
        .map(|d| {
            (
                d.headers["haochaping.source.offset"].parse().unwrap(),
                d.headers["haochaping.reason"].as_str(),
            )
        })
        .collect();
    assert_eq!(got, expected);
    for record in &dead {
        assert_eq!(record.headers["haochaping.source.topic"], "evaluations");
        assert_eq!(record.headers["haochaping.source.partition"], "0");
        assert!(!record.headers["haochaping.message"].is_empty());
        let offset: usize = record.headers["haochaping.source.offset"].parse().unwrap();
        let original = &messages[offset].1;
        match serde_json::from_slice::<serde_json::Value>(original) {
            // JSON records are parked with identity replaced by the evaluator key.
            Ok(value) if value.get("userCert").is_some() => {
                let parked: serde_json::Value = serde_json::from_slice(&record.payload).unwrap();
                assert!(
                    parked.get("userCert").is_none()
                        && parked.get("userName").is_none()
                        && parked.get("userPhone").is_none()
                );
                assert_eq!(parked["evaluatorKey"].as_str().map(str::len), Some(64));
                assert_eq!(parked["projectNo"], value["projectNo"]);
            }
            // Other JSON objects name nobody and are parked byte for byte.
            Ok(value) if value.is_object() => assert_eq!(&record.payload, original),
            // Anything else might carry an identity in clear: without a dlq.encryption_key only
            // its size and digest are kept.
            _ => {
                assert_eq!(record.headers["haochaping.payload"], "withheld");
                assert_eq!(
                    record.headers["haochaping.original.size"],
                    original.len().to_string()
                );
                assert_ne!(&record.payload, original);
            }
        }
    }
    // The area-code message names the rule it broke.
    let area = dead
        .iter()
        .find(|d| d.headers["haochaping.reason"] == "invalid_area_code")
        .unwrap();
    assert!(area.headers["haochaping.message"].contains("areaCode"));
    let outside = dead
        .iter()
        .find(|d| d.headers["haochaping.reason"] == "outside_dedup_window")
        .unwrap();
    assert!(outside.headers["haochaping.message"].contains("dedup.window_days"));

    // The parked conflict, replayed after a fix, keeps the evaluator key of the original.
    let lake_keys: Vec<String> = lake_strings(lake.path())
        .into_iter()
        .filter(|c| c.len() == 64)
        .collect();
    let conflict_record = dead
        .iter()
        .find(|d| d.headers["haochaping.reason"] == "case_already_evaluated")
        .unwrap();
    let parked: serde_json::Value = serde_json::from_slice(&conflict_record.payload).unwrap();
    assert!(lake_keys.contains(&parked["evaluatorKey"].as_str().unwrap().to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_mid_run_loses_nothing() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("evaluations", 3, 1).unwrap();
    cluster.create_topic("evaluations.dlq", 1, 1).unwrap();
    cluster.create_topic("alerts", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let lake = tempfile::tempdir().unwrap();
    let mut produced = Produced::new();
    let mut generator = generator(31, 0.02, 0.02);
    produce(
        &brokers,
        "evaluations",
        &mut generator,
        3_000,
        &mut produced,
    )
    .await;

    let stats = Arc::new(Stats::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let job = tokio::spawn(engine::run(
        config(&brokers, lake.path()),
        RunOptions::default(),
        stats.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    wait_until(|| stats.snapshot().received >= 1_000).await;
    cluster.broker_down(1).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.broker_up(1).unwrap();
    produce(
        &brokers,
        "evaluations",
        &mut generator,
        3_000,
        &mut produced,
    )
    .await;
    wait_until(|| stats.snapshot().received >= produced.report.produced).await;
    stop.send(()).unwrap();
    let summary = job.await.unwrap().unwrap();

    assert_eq!(summary.accepted, produced.report.accepted);
    assert_exactly_once(lake.path(), &produced.slots);
    let dead = read_topic(&brokers, "evaluations.dlq", 1);
    assert_eq!(count_by_reason(&dead), expected_by_reason(&produced.report));
}

async fn wait_until(mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The dead-letter topic's broker goes away: only the partition with rejections waits (its batches
/// commit after their dead letters), while a partition without any goes on landing in the lake;
/// when the broker returns, everything lands once and every dead letter is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_outage_holds_only_the_partition_that_needs_it() {
    use rdkafka::mocking::MockCoordinator;
    let cluster = MockCluster::new(2).unwrap();
    cluster.create_topic("evaluations", 2, 1).unwrap();
    cluster.create_topic("evaluations.dlq", 1, 1).unwrap();
    cluster.create_topic("alerts", 1, 1).unwrap();
    for partition in 0..2 {
        cluster
            .partition_leader("evaluations", partition, Some(1))
            .unwrap();
    }
    cluster.partition_leader("alerts", 0, Some(1)).unwrap();
    cluster
        .partition_leader("evaluations.dlq", 0, Some(2))
        .unwrap();
    cluster
        .coordinator(MockCoordinator::Group("split-test".into()), 1)
        .unwrap();
    let brokers = cluster.bootstrap_servers();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    // Partition 0: valid evaluations only. Partition 1: the same with a truncated record in ten.
    let send = |range: std::ops::Range<u32>| {
        let producer = producer.clone();
        async move {
            for n in range {
                for (partition, prefix) in [(0, "A"), (1, "B")] {
                    let payload = serde_json::to_vec(&valid(&format!("{prefix}-{n}"))).unwrap();
                    let record = FutureRecord::<(), _>::to("evaluations")
                        .partition(partition)
                        .payload(&payload);
                    producer.send(record, Duration::from_secs(5)).await.unwrap();
                    if partition == 1 && n % 10 == 0 {
                        let record = FutureRecord::<(), _>::to("evaluations")
                            .partition(1)
                            .payload(&b"{\"projectNo\":\"B-"[..]);
                        producer.send(record, Duration::from_secs(5)).await.unwrap();
                    }
                }
            }
        }
    };
    let landed = |lake: &std::path::Path, prefix: &str| {
        lake_slots(lake)
            .into_iter()
            .filter(|((project, _), _)| project.starts_with(prefix))
            .map(|(_, n)| n)
            .sum::<usize>()
    };
    send(0..100).await;

    let lake = tempfile::tempdir().unwrap();
    let mut config = config(&brokers, lake.path());
    config.kafka.group = "split-test".into();
    config.lake.flush_rows = 20;
    config.lake.flush_interval = Duration::from_millis(200);
    config.dlq.retry_backoff_max = Duration::from_millis(500);
    config
        .kafka
        .properties
        .insert("message.timeout.ms".into(), "1500".into());
    let stats = Arc::new(Stats::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let job = tokio::spawn(engine::run(
        config,
        RunOptions::default(),
        stats.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    wait_until(|| landed(lake.path(), "A") == 100 && landed(lake.path(), "B") == 100).await;

    cluster.broker_down(2).unwrap();
    send(100..400).await;
    wait_until(|| landed(lake.path(), "A") == 400).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        landed(lake.path(), "B") < 400,
        "partition 1 committed batches whose dead letters were never delivered"
    );
    assert!(!job.is_finished(), "the run ended during the outage");

    cluster.broker_up(2).unwrap();
    wait_until(|| landed(lake.path(), "B") == 400).await;
    stop.send(()).unwrap();
    job.await.unwrap().unwrap();
    let slots = lake_slots(lake.path());
    assert_eq!(slots.len(), 800);
    assert!(slots.values().all(|&n| n == 1), "a row landed twice");
    let dead: HashSet<i64> = read_topic(&brokers, "evaluations.dlq", 1)
        .iter()
        .map(|d| d.headers["haochaping.source.offset"].parse().unwrap())
        .collect();
    assert_eq!(dead.len(), 40, "every truncated record, at least once");
}
