//! The dead-letter topic under hostile input and a hostile cluster, against rdkafka's mock cluster:
//! no identity in clear (encrypted or withheld, also in the offline rejected file), oversize
//! records parked as a bounded head, an outage retried, a refusal named, and `dlq replay` back to
//! the source topic byte for byte.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{free_port, SECRET};
use base64::Engine as _;
use haochaping::config::{IngestConfig, Secret};
use haochaping::decode::{Reason, Rejection};
use haochaping::engine::{self, RunOptions};
use haochaping::sink::dlq::replay::{replay, ReplayOptions};
use haochaping::sink::dlq::{DeadLetters, DlqError, DlqKey, SourcePosition};
use haochaping::telemetry::Stats;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, TopicPartitionList};

const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const IDENTITY: [&str; 3] = ["张三", "410328199001011234", "13800000000"];
const FULL: &str = r#"{"projectNo":"P-1","taskCode":"T1","areaCode":"410300100201","userName":"张三","userCert":"410328199001011234","userPhone":"13800000000"}"#;

/// One record read back, with its key.
#[derive(Debug, Clone)]
struct Record {
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    headers: BTreeMap<String, String>,
}

fn read(brokers: &str, topic: &str) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{}", free_port()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&list).unwrap();
    let mut records = Vec::new();
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(2) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                quiet_since = Instant::now();
                let headers = message
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                records.push(Record {
                    key: message.key().map(<[u8]>::to_vec),
                    payload: message.payload().unwrap_or_default().to_vec(),
                    headers,
                });
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    records
}

fn leak(bytes: &[u8]) -> Option<&'static str> {
    let text = String::from_utf8_lossy(bytes);
    IDENTITY.into_iter().find(|s| text.contains(s))
}

fn assert_no_clear_identity(record: &Record) {
    assert_eq!(
        leak(&record.payload),
        None,
        "payload of {:?}",
        record.headers
    );
    for (name, value) in &record.headers {
        assert_eq!(leak(value.as_bytes()), None, "header {name} = {value}");
    }
}

/// Rejected payloads that cannot be parsed and redacted, each carrying an identity.
fn unredactable() -> Vec<(&'static str, Vec<u8>)> {
    let mut gbk = b"{\"userName\":\"".to_vec();
    gbk.extend_from_slice(&[0xd5, 0xc5, 0xc8, 0xfd]);
    gbk.extend_from_slice(b"\",\"userCert\":\"410328199001011234\",\"userPhone\":\"13800000000\"}");
    vec![
        ("truncated", FULL.as_bytes()[..FULL.len() - 3].to_vec()),
        ("two objects", format!("{FULL}\n{FULL}").into_bytes()),
        (
            "bare string",
            "\"张三 410328199001011234 13800000000\""
                .as_bytes()
                .to_vec(),
        ),
        ("not utf-8", gbk),
    ]
}

fn cluster() -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    String,
) {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("evaluations", 1, 1).unwrap();
    cluster.create_topic("evaluations.dlq", 1, 1).unwrap();
    cluster.create_topic("alerts", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    (cluster, brokers)
}

fn config(brokers: &str, lake: &std::path::Path, key: Option<&str>) -> IngestConfig {
    let mut config = IngestConfig::default();
    config.kafka.brokers = brokers.to_owned();
    config.kafka.group = "dlq-test".into();
    config.lake.path = lake.into();
    config.lake.flush_interval = Duration::from_millis(300);
    config.identity.secret = Some(SECRET.into());
    config.dlq.encryption_key = key.map(Secret::new);
    config.dlq.retry_backoff_max = Duration::from_millis(500);
    config
}

async fn produce(brokers: &str, topic: &str, records: &[(Option<&str>, Vec<u8>)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for (key, payload) in records {
        let mut record = FutureRecord::to(topic).payload(payload);
        if let Some(key) = key {
            record = record.key(*key);
        }
        producer.send(record, Duration::from_secs(5)).await.unwrap();
    }
}

async fn run_pipeline(config: IngestConfig) {
    engine::run(
        config,
        RunOptions {
            exit_when_idle: Some(Duration::from_secs(2)),
        },
        Arc::new(Stats::default()),
        std::future::pending(),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unredactable_dead_letters_are_encrypted_never_clear() {
    let (_cluster, brokers) = cluster();
    let mut messages: Vec<(Option<&str>, Vec<u8>)> = unredactable()
        .into_iter()
        .map(|(_, p)| (Some("k"), p))
        .collect();
    messages.push((Some("P-1"), FULL.as_bytes().to_vec())); // redactable: invalid area code
    produce(&brokers, "evaluations", &messages).await;
    let lake = tempfile::tempdir().unwrap();
    run_pipeline(config(&brokers, lake.path(), Some(KEY))).await;

    let key = DlqKey::parse(KEY).unwrap();
    let dead = read(&brokers, "evaluations.dlq");
    assert_eq!(dead.len(), messages.len());
    for record in &dead {
        assert_no_clear_identity(record);
        let offset: usize = record.headers["haochaping.source.offset"].parse().unwrap();
        let original = &messages[offset].1;
        if offset < unredactable().len() {
            assert_eq!(record.headers["haochaping.payload"], "encrypted");
            let header = &record.headers["haochaping.encryption"];
            assert_eq!(header, &format!("aes-256-gcm:{}", key.id()));
            assert_eq!(&key.open(header, &record.payload).unwrap(), original);
        } else {
            assert_eq!(record.headers["haochaping.payload"], "redacted");
            let parked: serde_json::Value = serde_json::from_slice(&record.payload).unwrap();
            assert_eq!(parked["evaluatorKey"].as_str().map(str::len), Some(64));
        }
        assert_eq!(record.key.as_deref(), messages[offset].0.map(str::as_bytes));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_unredactable_dead_letters_are_withheld_with_size_and_digest() {
    let (_cluster, brokers) = cluster();
    let messages: Vec<(Option<&str>, Vec<u8>)> =
        unredactable().into_iter().map(|(_, p)| (None, p)).collect();
    produce(&brokers, "evaluations", &messages).await;
    let lake = tempfile::tempdir().unwrap();
    run_pipeline(config(&brokers, lake.path(), None)).await;

    let dead = read(&brokers, "evaluations.dlq");
    assert_eq!(
        dead.len(),
        messages.len(),
        "every record's existence is kept"
    );
    for record in &dead {
        assert_no_clear_identity(record);
        let offset: usize = record.headers["haochaping.source.offset"].parse().unwrap();
        let original = &messages[offset].1;
        assert_eq!(record.headers["haochaping.payload"], "withheld");
        assert_eq!(
            record.headers["haochaping.original.size"],
            original.len().to_string()
        );
        let digest = haochaping::sink::dlq::protect::sha256_hex(original);
        assert_eq!(record.headers["haochaping.original.sha256"], digest);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_rejected_lines_never_hold_clear_identity() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("mutated.ndjson");
    let mut file = std::fs::File::create(&input).unwrap();
    let lines: Vec<Vec<u8>> = unredactable()
        .into_iter()
        .filter(|(what, _)| *what != "two objects") // two lines in a file: they are separate records
        .map(|(_, p)| p)
        .chain([FULL.as_bytes().to_vec()])
        .collect();
    for line in &lines {
        file.write_all(line).unwrap();
        file.write_all(b"\n").unwrap();
    }
    drop(file);
    for key in [Some(KEY), None] {
        let lake = dir.path().join(format!("lake-{}", key.is_some()));
        let config = config("unused:9092", &lake, key);
        haochaping::offline::ingest_file(config, &input, Arc::new(Stats::default()))
            .await
            .unwrap();
        let rejected_dir = lake.join("_haochaping/rejected");
        let rejected_file = std::fs::read_dir(&rejected_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with("mutated.")
            })
            .expect("a rejected-lines file for mutated.ndjson");
        let rejected = std::fs::read_to_string(rejected_file).unwrap();
        assert_eq!(rejected.lines().count(), lines.len());
        for (offset, line) in rejected.lines().enumerate() {
            assert_eq!(leak(line.as_bytes()), None, "{line}");
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            let form = record["payload_form"].as_str().unwrap();
            match (offset + 1 == lines.len(), key) {
                (true, _) => assert_eq!(form, "redacted"),
                (false, Some(key)) => {
                    assert_eq!(form, "encrypted");
                    let sealed = base64::engine::general_purpose::STANDARD
                        .decode(record["payload_base64"].as_str().unwrap())
                        .unwrap();
                    let key = DlqKey::parse(key).unwrap();
                    let header = record["encryption"].as_str().unwrap();
                    assert_eq!(key.open(header, &sealed).unwrap(), lines[offset]);
                }
                (false, None) => {
                    assert_eq!(form, "withheld");
                    assert_eq!(record["original_size"], lines[offset].len());
                }
            }
        }
    }
}

fn dead_letters(
    brokers: &str,
    key: Option<&str>,
    tune: impl FnOnce(&mut IngestConfig),
) -> DeadLetters {
    let lake = std::env::temp_dir();
    let mut config = config(brokers, &lake, key);
    tune(&mut config);
    DeadLetters::from_config(&config).unwrap()
}

fn position(offset: i64) -> SourcePosition<'static> {
    SourcePosition {
        topic: "evaluations",
        partition: 0,
        offset,
    }
}

fn not_json() -> Rejection {
    Rejection::new(
        Reason::NotJson,
        r#"message is not a JSON object of evaluation fields: invalid type: string "张三 410328199001011234 13800000000""#,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_dead_letters_are_parked_as_a_bounded_head() {
    let (cluster, brokers) = cluster();
    let text = "长".repeat(5_000);
    let big_json = format!(
        r#"{{"projectNo":"P-1","userCert":"410328199001011234","writingEvaluation":"{text}"}}"#
    );
    let big_broken = big_json.as_bytes()[..big_json.len() - 2].to_vec();
    // The producer refuses records over 4000 bytes (librdkafka's local MessageSizeTooLarge).
    let small_producer = dead_letters(&brokers, Some(KEY), |c| {
        c.kafka
            .properties
            .insert("message.max.bytes".into(), "4000".into());
    });
    let mut deliveries = Vec::new();
    for (offset, payload) in [big_json.as_bytes(), big_broken.as_slice()]
        .into_iter()
        .enumerate()
    {
        deliveries.push(
            small_producer
                .send(Some(b"k"), payload, &not_json(), position(offset as i64))
                .await
                .unwrap(),
        );
    }
    small_producer.confirm(deliveries).await.unwrap();
    // Bounded before trying: dlq.max_record_bytes.
    let bounded = dead_letters(&brokers, Some(KEY), |c| c.dlq.max_record_bytes = 2048);
    let delivery = bounded
        .send(None, &big_broken, &not_json(), position(2))
        .await
        .unwrap();
    bounded.confirm(vec![delivery]).await.unwrap();
    // The broker refuses the record (RecordListTooLarge / MessageSizeTooLarge on delivery).
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
    );
    let plain = dead_letters(&brokers, Some(KEY), |_| {});
    let delivery = plain
        .send(None, &big_broken, &not_json(), position(3))
        .await
        .unwrap();
    plain.confirm(vec![delivery]).await.unwrap();

    let key = DlqKey::parse(KEY).unwrap();
    let dead = read(&brokers, "evaluations.dlq");
    let offsets: Vec<&str> = dead
        .iter()
        .map(|d| d.headers["haochaping.source.offset"].as_str())
        .collect();
    assert_eq!(offsets, ["0", "1", "2", "3"]);
    let limits = [4000, 4000, 2048, big_broken.len()];
    for (record, limit) in dead.iter().zip(limits) {
        assert_no_clear_identity(record);
        assert_eq!(record.headers["haochaping.truncated"], "true");
        assert!(
            record.payload.len() <= limit,
            "{} > {limit}",
            record.payload.len()
        );
        assert!(!record.payload.is_empty());
        let size: usize = record.headers["haochaping.original.size"].parse().unwrap();
        assert!(size > record.payload.len());
        assert!(!record.headers["haochaping.message"].contains("410328"));
    }
    // The redacted record keeps a readable clear head of its redacted form.
    assert_eq!(dead[0].headers["haochaping.payload"], "redacted");
    assert!(String::from_utf8(dead[0].payload.clone())
        .unwrap()
        .contains(r#""projectNo":"P-1""#));
    // The unparseable ones: an encrypted head of the original, digest of the whole original.
    for record in &dead[1..] {
        assert_eq!(record.headers["haochaping.payload"], "encrypted");
        let head = key
            .open(&record.headers["haochaping.encryption"], &record.payload)
            .unwrap();
        assert!(big_broken.starts_with(&head) && !head.is_empty());
        assert_eq!(
            record.headers["haochaping.original.sha256"],
            haochaping::sink::dlq::protect::sha256_hex(&big_broken)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_outage_is_retried_and_loses_nothing() {
    let (cluster, brokers) = cluster();
    // Deliveries time out quickly, so the outage reaches the retry in `confirm`.
    let dead_letters = dead_letters(&brokers, Some(KEY), |c| {
        c.kafka
            .properties
            .insert("message.timeout.ms".into(), "1500".into());
    });
    // Warm up: metadata known, producer id assigned.
    let first = dead_letters
        .send(None, b"{", &not_json(), position(0))
        .await
        .unwrap();
    dead_letters.confirm(vec![first]).await.unwrap();

    cluster.broker_down(1).unwrap();
    let mut deliveries = Vec::new();
    for offset in 1..=50 {
        deliveries.push(
            dead_letters
                .send(Some(b"k"), b"{\"userCert\":", &not_json(), position(offset))
                .await
                .unwrap(),
        );
    }
    let confirming = tokio::spawn({
        let dead_letters = dead_letters.clone();
        async move { dead_letters.confirm(deliveries).await }
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!confirming.is_finished(), "confirm waits out the outage");
    cluster.broker_up(1).unwrap();
    tokio::time::timeout(Duration::from_secs(60), confirming)
        .await
        .expect("confirm finishes once the broker is back")
        .unwrap()
        .unwrap();

    // Transient produce errors injected on the wire are retried too.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        ],
    );
    let delivery = dead_letters
        .send(None, b"{", &not_json(), position(51))
        .await
        .unwrap();
    dead_letters.confirm(vec![delivery]).await.unwrap();

    let dead = read(&brokers, "evaluations.dlq");
    let offsets: HashSet<i64> = dead
        .iter()
        .map(|d| d.headers["haochaping.source.offset"].parse().unwrap())
        .collect();
    assert_eq!(offsets, (0..=51).collect(), "every record at least once");
    for record in &dead {
        assert_no_clear_identity(record);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_dead_letter_topic_is_one_line_naming_it() {
    let (cluster, brokers) = cluster();
    let dead_letters = dead_letters(&brokers, Some(KEY), |_| {});
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 20],
    );
    let delivery = dead_letters
        .send(None, b"{", &not_json(), position(0))
        .await
        .unwrap();
    let error = tokio::time::timeout(
        Duration::from_secs(60),
        dead_letters.confirm(vec![delivery]),
    )
    .await
    .expect("a refusal is not retried forever")
    .unwrap_err();
    assert!(matches!(error, DlqError::Refused { .. }), "{error:?}");
    let text = error.to_string();
    assert!(
        text.contains("evaluations.dlq") && !text.contains('\n'),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_returns_dead_letters_to_the_source_topic() {
    let (_cluster, brokers) = cluster();
    let dead_letters = dead_letters(&brokers, Some(KEY), |_| {});
    let other_key = "ab".repeat(32);
    let foreign = dead_letters_with_key(&brokers, &other_key);
    let truncated = FULL.as_bytes()[..FULL.len() - 3].to_vec();
    let invalid_area = Rejection::new(
        Reason::InvalidAreaCode,
        "areaCode \"410300100201\": unknown",
    );
    let parked = [
        (
            &dead_letters,
            Some(&b"P-1"[..]),
            FULL.as_bytes().to_vec(),
            &invalid_area,
        ),
        (
            &dead_letters,
            Some(&b"P-2"[..]),
            truncated.clone(),
            &not_json(),
        ),
        (&foreign, Some(&b"P-3"[..]), truncated.clone(), &not_json()),
    ];
    // One at a time, so the dead-letter offsets follow the source offsets.
    for (offset, (dlq, key, payload, rejection)) in parked.iter().enumerate() {
        let delivery = dlq
            .send(*key, payload, rejection, position(offset as i64))
            .await
            .unwrap();
        dlq.confirm(vec![delivery]).await.unwrap();
    }
    let dead = read(&brokers, "evaluations.dlq");
    assert_eq!(dead.len(), 3);

    // The second replay below joins the same group, and the mock cluster assigns it the
    // partition only once the first member's session has expired.
    let options = replay_options(&brokers, "replay-test");
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        replay(options.clone(), std::future::pending()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!((report.read, report.replayed), (3, 2), "{report:?}");
    assert_eq!(report.skipped.get("wrong_key"), Some(&1));

    let replayed = read(&brokers, "evaluations");
    assert_eq!(replayed.len(), 2);
    // The redacted record as parked (identity replaced by evaluatorKey), its key kept.
    assert_eq!(replayed[0].key.as_deref(), Some(&b"P-1"[..]));
    assert_eq!(replayed[0].payload, dead[0].payload);
    assert!(String::from_utf8_lossy(&replayed[0].payload).contains("evaluatorKey"));
    assert_no_clear_identity(&replayed[0]);
    // The encrypted one decrypted to the original bytes.
    assert_eq!(replayed[1].key.as_deref(), Some(&b"P-2"[..]));
    assert_eq!(replayed[1].payload, truncated);
    assert_eq!(
        replayed[1].headers["haochaping.replay.of"],
        "evaluations.dlq/0/1"
    );

    // The group's offsets were committed after delivery: a second replay reads only the dead
    // letter parked since (and had it ended before its first fetch, it would have read none).
    let delivery = dead_letters
        .send(
            Some(&b"P-4"[..]),
            FULL.as_bytes(),
            &invalid_area,
            position(3),
        )
        .await
        .unwrap();
    dead_letters.confirm(vec![delivery]).await.unwrap();
    let again = tokio::time::timeout(
        Duration::from_secs(60),
        replay(options, std::future::pending()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!((again.read, again.replayed), (1, 1), "{again:?}");
    let replayed = read(&brokers, "evaluations");
    assert_eq!(replayed.len(), 3);
    assert_eq!(replayed[2].key.as_deref(), Some(&b"P-4"[..]));
}

/// A replay of `evaluations.dlq` in `group` with the test key, ending after 2 s idle. The mock
/// cluster ends a rebalance only when the members' sessions expire, so sessions are short.
fn replay_options(brokers: &str, group: &str) -> ReplayOptions {
    ReplayOptions {
        kafka: haochaping::config::KafkaConfig {
            brokers: brokers.to_owned(),
            properties: [("session.timeout.ms".to_owned(), "6000".to_owned())].into(),
            ..Default::default()
        },
        dlq_topic: "evaluations.dlq".into(),
        to: None,
        key: Some(DlqKey::parse(KEY).unwrap()),
        reasons: Vec::new(),
        group: group.to_owned(),
        exit_when_idle: Some(Duration::from_secs(2)),
    }
}

fn dead_letters_with_key(brokers: &str, key: &str) -> DeadLetters {
    dead_letters(brokers, Some(key), |_| {})
}

/// A replay of a dead-letter topic that does not exist (a typo in `--dlq-topic`) ends with an
/// error naming it, instead of waiting for ever for partitions that no one will assign.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_of_a_missing_topic_says_so() {
    let (_cluster, brokers) = cluster();
    let options = ReplayOptions {
        dlq_topic: "evaluatoins.dlq".into(),
        ..replay_options(&brokers, "replay-missing")
    };
    let error = tokio::time::timeout(
        Duration::from_secs(60),
        replay(options, std::future::pending()),
    )
    .await
    .expect("the replay waited for ever")
    .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("evaluatoins.dlq") && text.contains("does not exist"),
        "{text}"
    );
}

/// A replay that joins a group whose one partition another member holds (a second replay, or a
/// replay job with two replicas) is assigned nothing; it still ends once idle. The holder here is
/// a plain consumer that never commits, so a replay that was given the partition reads all three
/// dead letters and one given nothing reads none: the case is retried in a fresh group until the
/// group gave the replay nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_assigned_nothing_still_ends_when_idle() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (_cluster, brokers) = cluster();
    let dead_letters = dead_letters(&brokers, Some(KEY), |_| {});
    let invalid_area = Rejection::new(Reason::InvalidAreaCode, "areaCode: unknown");
    for offset in 0..3 {
        let key = format!("P-{offset}");
        let delivery = dead_letters
            .send(
                Some(key.as_bytes()),
                FULL.as_bytes(),
                &invalid_area,
                position(offset),
            )
            .await
            .unwrap();
        dead_letters.confirm(vec![delivery]).await.unwrap();
    }
    for attempt in 0..10 {
        let group = format!("replay-pair-{attempt}");
        let stop = Arc::new(AtomicBool::new(false));
        let (holding, held) = std::sync::mpsc::channel();
        let holder = {
            let (brokers, group, stop) = (brokers.clone(), group.clone(), stop.clone());
            std::thread::spawn(move || {
                let consumer: BaseConsumer = ClientConfig::new()
                    .set("bootstrap.servers", &brokers)
                    .set("group.id", &group)
                    .set("session.timeout.ms", "6000")
                    .set("enable.auto.commit", "false")
                    .set("auto.offset.reset", "earliest")
                    .create()
                    .unwrap();
                consumer.subscribe(&["evaluations.dlq"]).unwrap();
                let mut told = false;
                while !stop.load(Ordering::Relaxed) {
                    consumer.poll(Duration::from_millis(100));
                    if !told && consumer.assignment().is_ok_and(|a| a.count() == 1) {
                        told = holding.send(()).is_ok();
                    }
                }
            })
        };
        held.recv_timeout(Duration::from_secs(60))
            .expect("the holder was never assigned the partition");
        let options = replay_options(&brokers, &group);
        let report = tokio::time::timeout(
            Duration::from_secs(60),
            replay(options, std::future::pending()),
        )
        .await
        .expect("a replay assigned nothing never ended")
        .unwrap();
        stop.store(true, Ordering::Relaxed);
        holder.join().unwrap();
        eprintln!("attempt {attempt}: the replay read {}", report.read);
        if report.read == 0 {
            return;
        }
        assert_eq!(report.read, 3, "{report:?}");
    }
    panic!("the group gave the replay the partition in every attempt: the case was never tested");
}
