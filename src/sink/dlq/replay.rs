//! `haochaping dlq replay`: dead letters back to their source topic once the cause is fixed.
//!
//! Each dead letter is re-produced with its original key to the topic named by its
//! `haochaping.source.topic` header (or `--to`): a redacted or identity-free payload as it is (a
//! redacted one carries `evaluatorKey`, which the engine accepts as the evaluator's key), an
//! encrypted one decrypted with the key it names. A record that cannot be replayed faithfully (a
//! withheld or truncated payload, a key that does not match, a damaged ciphertext) is logged in
//! one line, counted and skipped; it never stops the replay.
//!
//! The producer is idempotent and the consumer's offsets are committed only after every record
//! before them has been delivered, so a replay that is stopped resumes where its group left off
//! and never loses a record (it may produce one twice; the engine's dedup drops the copy).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureRecord};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::Serialize;

use super::protect::{
    DlqKey, Form, OpenError, HEADER_ENCRYPTION, HEADER_PAYLOAD, HEADER_TRUNCATED,
};
use super::{HEADER_REASON, HEADER_SOURCE_TOPIC};
use crate::config::KafkaConfig;
use crate::decode::Reason;

/// Header on a replayed record: `<dlq topic>/<partition>/<offset>` of the dead letter.
pub const HEADER_REPLAY_OF: &str = "haochaping.replay.of";

/// Records produced before their deliveries are awaited and the offsets committed.
const COMMIT_EVERY: usize = 1000;
/// How long `recv` waits before the loop looks at idleness and pending deliveries.
const TICK: Duration = Duration::from_millis(200);

/// What a replay is asked to do.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Brokers and extra librdkafka properties (`topic` is not used).
    pub kafka: KafkaConfig,
    /// The dead-letter topic to read.
    pub dlq_topic: String,
    /// Target topic for every record, instead of each record's `haochaping.source.topic`.
    pub to: Option<String>,
    /// Key that opens encrypted payloads.
    pub key: Option<DlqKey>,
    /// Only records with these reasons (all when empty).
    pub reasons: Vec<Reason>,
    /// Consumer group whose offsets remember what was replayed.
    pub group: String,
    /// Stop once nothing has arrived for this long since the group gave this member its
    /// assignment (or since the last record) and everything is committed. A member assigned
    /// nothing (more members than partitions) stops after this long too; a topic that does not
    /// exist is an error.
    pub exit_when_idle: Option<Duration>,
}

/// The replay's consumer context: notes when the group has given this member its assignment, even
/// an empty one (more members than partitions), which is where idleness starts to count.
#[derive(Default)]
struct ReplayContext {
    joined: std::sync::atomic::AtomicBool,
}

impl ClientContext for ReplayContext {}

impl ConsumerContext for ReplayContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            tracing::info!(partitions = list.count(), "dlq replay: partitions assigned");
            self.joined
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

type ReplayConsumer = StreamConsumer<ReplayContext>;

/// Why a dead letter was not replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Its reason is not among `--reason`.
    Filtered,
    /// Only a placeholder was kept (no encryption key at the time).
    Withheld,
    /// Only a head of the record was kept (it was too large).
    Truncated,
    /// Encrypted, and no `--decrypt-key` given.
    NoKey,
    /// Encrypted under another key, or damaged.
    CannotOpen(OpenError),
    /// No source-topic header and no `--to`.
    NoTarget,
    /// The target is the dead-letter topic itself.
    Loop,
}

impl Skip {
    pub fn code(&self) -> &'static str {
        match self {
            Skip::Filtered => "filtered",
            Skip::Withheld => "withheld",
            Skip::Truncated => "truncated",
            Skip::NoKey => "no_key",
            Skip::CannotOpen(OpenError::WrongKey { .. }) => "wrong_key",
            Skip::CannotOpen(_) => "damaged",
            Skip::NoTarget => "no_target",
            Skip::Loop => "loop",
        }
    }
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::Filtered => f.write_str("its reason is not selected"),
            Skip::Withheld => f.write_str("its payload was withheld (no encryption key when it was parked); only its size and SHA-256 are known"),
            Skip::Truncated => f.write_str("only a head of it was kept (it was too large for the topic)"),
            Skip::NoKey => f.write_str("it is encrypted: pass --decrypt-key (or HAOCHAPING_DLQ_KEY)"),
            Skip::CannotOpen(e) => write!(f, "{e}"),
            Skip::NoTarget => f.write_str("it has no haochaping.source.topic header: pass --to"),
            Skip::Loop => f.write_str("its target is the dead-letter topic itself"),
        }
    }
}

/// The rule: where a dead letter goes and with which payload, or why it is skipped.
pub fn plan(
    headers: &HashMap<String, Vec<u8>>,
    payload: &[u8],
    dlq_topic: &str,
    to: Option<&str>,
    key: Option<&DlqKey>,
    reasons: &[Reason],
) -> Result<(String, Vec<u8>), Skip> {
    let text = |name: &str| headers.get(name).map(|v| String::from_utf8_lossy(v));
    if !reasons.is_empty() {
        let reason = text(HEADER_REASON).and_then(|r| Reason::from_code(&r));
        if !reason.is_some_and(|r| reasons.contains(&r)) {
            return Err(Skip::Filtered);
        }
    }
    let target = match to {
        Some(to) => to.to_owned(),
        None => text(HEADER_SOURCE_TOPIC)
            .filter(|t| !t.is_empty())
            .ok_or(Skip::NoTarget)?
            .into_owned(),
    };
    if target == dlq_topic {
        return Err(Skip::Loop);
    }
    if text(HEADER_TRUNCATED).is_some_and(|t| t == "true") {
        return Err(Skip::Truncated);
    }
    // Records parked before payload forms existed carry no header: they are as received.
    let form = text(HEADER_PAYLOAD)
        .map(|f| Form::from_code(&f).unwrap_or(Form::Withheld))
        .unwrap_or(Form::AsReceived);
    let payload = match form {
        Form::AsReceived | Form::Redacted => payload.to_vec(),
        Form::Withheld => return Err(Skip::Withheld),
        Form::Encrypted => {
            let key = key.ok_or(Skip::NoKey)?;
            let header = text(HEADER_ENCRYPTION).unwrap_or_default();
            key.open(&header, payload).map_err(Skip::CannotOpen)?
        }
    };
    Ok((target, payload))
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    pub read: u64,
    pub replayed: u64,
    /// Skipped records by why (`filtered`, `withheld`, `truncated`, `no_key`, `wrong_key`, …).
    pub skipped: BTreeMap<String, u64>,
}

/// Errors that stop a replay (a record that cannot be replayed never does).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("reading the dead-letter topic {topic}: {source}")]
    Consume { topic: String, source: KafkaError },
    #[error("replaying into {topic}: {source}")]
    Produce { topic: String, source: KafkaError },
    #[error("the replay producer was dropped before acknowledging a record")]
    Canceled,
    #[error("the dead-letter topic {topic} does not exist (check `dlq replay --topic`)")]
    MissingTopic { topic: String },
}

/// The replay consumer's settings: the operator's properties (security, timeouts) as every client
/// takes them, then what the replay's at-least-once needs, after them so that no property turns it
/// off (offsets are committed only once a record's copy is acknowledged).
fn consumer_config(options: &ReplayOptions) -> rdkafka::ClientConfig {
    let mut config = crate::source::kafka::client_config(&options.kafka);
    config
        .set("group.id", &options.group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false");
    config
}

/// Replays the dead-letter topic until `shutdown` resolves (or it idles, see [`ReplayOptions`]).
pub async fn replay(
    options: ReplayOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<ReplayReport, ReplayError> {
    let consume_error = |source| ReplayError::Consume {
        topic: options.dlq_topic.clone(),
        source,
    };
    let consumer: Arc<ReplayConsumer> = Arc::new(
        consumer_config(&options)
            .create_with_context(ReplayContext::default())
            .map_err(consume_error)?,
    );
    // A subscription to a topic the cluster does not have is never assigned a partition: the
    // replay would wait for ever, however idle.
    if !topic_exists(consumer.clone(), options.dlq_topic.clone())
        .await
        .map_err(consume_error)?
    {
        return Err(ReplayError::MissingTopic {
            topic: options.dlq_topic.clone(),
        });
    }
    let producer =
        crate::source::kafka::producer(&options.kafka).map_err(|source| ReplayError::Produce {
            topic: options.to.clone().unwrap_or_default(),
            source,
        })?;
    consumer
        .subscribe(&[&options.dlq_topic])
        .map_err(consume_error)?;
    tracing::info!(topic = %options.dlq_topic, group = %options.group, "dlq replay started");

    let mut report = ReplayReport::default();
    let mut pending: Vec<(String, DeliveryFuture)> = Vec::new();
    // Next offset to commit per partition, once everything before it is delivered.
    let mut positions: HashMap<i32, i64> = HashMap::new();
    let mut last_activity = Instant::now();
    let mut assigned = false;
    tokio::pin!(shutdown);
    loop {
        let received = tokio::select! {
            biased;
            () = &mut shutdown => break,
            received = tokio::time::timeout(TICK, consumer.recv()) => received,
        };
        match received {
            Ok(Ok(message)) => {
                last_activity = Instant::now();
                report.read += 1;
                let headers: HashMap<String, Vec<u8>> = message
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default();
                let planned = plan(
                    &headers,
                    message.payload().unwrap_or_default(),
                    &options.dlq_topic,
                    options.to.as_deref(),
                    options.key.as_ref(),
                    &options.reasons,
                );
                let position = format!(
                    "{}/{}/{}",
                    message.topic(),
                    message.partition(),
                    message.offset()
                );
                match planned {
                    Ok((target, payload)) => {
                        let delivery =
                            produce(&producer, &target, message.key(), &payload, &position).await?;
                        pending.push((target, delivery));
                        report.replayed += 1;
                        crate::telemetry::dlq_replayed("replayed");
                    }
                    Err(skip) => {
                        if skip != Skip::Filtered {
                            tracing::warn!(record = %position, "dead letter not replayed: {skip}");
                        }
                        *report.skipped.entry(skip.code().to_owned()).or_insert(0) += 1;
                        crate::telemetry::dlq_replayed(skip.code());
                    }
                }
                positions.insert(message.partition(), message.offset() + 1);
                if pending.len() >= COMMIT_EVERY {
                    settle(&consumer, &options.dlq_topic, &mut pending, &mut positions).await?;
                }
            }
            Ok(Err(e)) => {
                // The consumer reconnects by itself; an error here is a report, not an end.
                tracing::warn!(topic = %options.dlq_topic, error = %e, "reading the dead-letter topic");
            }
            Err(_tick) => {
                settle(&consumer, &options.dlq_topic, &mut pending, &mut positions).await?;
                let joined = consumer
                    .context()
                    .joined
                    .load(std::sync::atomic::Ordering::Relaxed);
                if !assigned && joined {
                    // Idleness counts from the assignment: a group join slower than the idle
                    // time (a loaded machine) ended the replay before its first fetch. An empty
                    // assignment counts too, or a member with no partition would never end.
                    assigned = true;
                    last_activity = Instant::now();
                }
                if let Some(idle) = options.exit_when_idle {
                    if assigned && last_activity.elapsed() >= idle {
                        break;
                    }
                }
            }
        }
    }
    settle(&consumer, &options.dlq_topic, &mut pending, &mut positions).await?;
    tracing::info!(read = report.read, replayed = report.replayed, skipped = ?report.skipped, "dlq replay finished");
    Ok(report)
}

async fn produce(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    key: Option<&[u8]>,
    payload: &[u8],
    position: &str,
) -> Result<DeliveryFuture, ReplayError> {
    loop {
        let headers = OwnedHeaders::new().insert(Header {
            key: HEADER_REPLAY_OF,
            value: Some(position),
        });
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(topic).payload(payload).headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((
                KafkaError::MessageProduction(rdkafka::error::RDKafkaErrorCode::QueueFull),
                _,
            )) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err((source, _)) => {
                return Err(ReplayError::Produce {
                    topic: topic.to_owned(),
                    source,
                })
            }
        }
    }
}

/// Whether the cluster has `topic`: its metadata lists the topic without an error.
async fn topic_exists(consumer: Arc<ReplayConsumer>, topic: String) -> Result<bool, KafkaError> {
    tokio::task::spawn_blocking(move || {
        let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
        Ok(metadata
            .topics()
            .iter()
            .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty()))
    })
    .await
    .map_err(|_| KafkaError::Canceled)?
}

/// Waits for every pending delivery, then commits the positions reached: an offset is committed
/// only once every record before it is in its target topic.
async fn settle(
    consumer: &ReplayConsumer,
    dlq_topic: &str,
    pending: &mut Vec<(String, DeliveryFuture)>,
    positions: &mut HashMap<i32, i64>,
) -> Result<(), ReplayError> {
    for (topic, delivery) in pending.drain(..) {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((source, _))) => return Err(ReplayError::Produce { topic, source }),
            Err(_) => return Err(ReplayError::Canceled),
        }
    }
    if positions.is_empty() {
        return Ok(());
    }
    let mut list = TopicPartitionList::new();
    for (partition, offset) in positions.drain() {
        list.add_partition_offset(dlq_topic, partition, Offset::Offset(offset))
            .map_err(|source| ReplayError::Consume {
                topic: dlq_topic.to_owned(),
                source,
            })?;
    }
    consumer
        .commit(&list, CommitMode::Sync)
        .map_err(|source| ReplayError::Consume {
            topic: dlq_topic.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::dlq::protect::Protector;
    use crate::transform::identity::EvaluatorKeyer;

    #[test]
    fn no_operator_property_turns_off_what_the_replay_needs() {
        let kafka = KafkaConfig {
            properties: [
                ("security.protocol", "SASL_SSL"),
                ("enable.auto.commit", "true"),
                ("group.id", "someone-elses"),
                ("auto.offset.reset", "latest"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            ..KafkaConfig::default()
        };
        let options = ReplayOptions {
            kafka,
            dlq_topic: "evaluations.dlq".into(),
            to: None,
            key: None,
            reasons: Vec::new(),
            group: "haochaping-dlq-replay".into(),
            exit_when_idle: None,
        };
        let config = consumer_config(&options);
        assert_eq!(config.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(config.get("enable.auto.commit"), Some("false"));
        assert_eq!(config.get("group.id"), Some("haochaping-dlq-replay"));
        assert_eq!(config.get("auto.offset.reset"), Some("earliest"));
    }

    fn key(byte: u8) -> DlqKey {
        DlqKey::parse(&hex::encode([byte; 32])).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HashMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

    fn check(
        case: usize,
        pairs: &[(&str, &str)],
        payload: &[u8],
        to: Option<&str>,
        key: Option<&DlqKey>,
        reasons: &[Reason],
        expected: Result<(&str, &[u8]), &str>,
    ) {
        let got = plan(
            &headers(pairs),
            payload,
            "evaluations.dlq",
            to,
            key,
            reasons,
        );
        match (got, expected) {
            (Ok((topic, bytes)), Ok((want_topic, want_bytes))) => {
                assert_eq!(
                    (topic.as_str(), bytes.as_slice()),
                    (want_topic, want_bytes),
                    "case {case}"
                );
            }
            (Err(skip), Err(code)) => assert_eq!(skip.code(), code, "case {case}: {skip}"),
            (got, expected) => panic!("case {case}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn plans_by_headers() {
        let protector = Protector::new(EvaluatorKeyer::new(b"s"), Some(key(1)));
        let sealed = protector.protect(b"{\"userCert\":", 1 << 20);
        let encryption = sealed.encryption.clone().unwrap();
        let sealed = sealed.payload.as_slice();
        let source = ("haochaping.source.topic", "evaluations");
        let reason = ("haochaping.reason", "not_json");
        let redacted = ("haochaping.payload", "redacted");
        let encrypted = ("haochaping.payload", "encrypted");
        let cipher = ("haochaping.encryption", encryption.as_str());
        let (one, two) = (key(1), key(2));
        let ok = |topic, bytes: &'static [u8]| Ok((topic, bytes));
        check(
            0,
            &[source, redacted],
            b"{}",
            None,
            None,
            &[],
            ok("evaluations", b"{}"),
        );
        check(
            1,
            &[source],
            b"{}",
            None,
            None,
            &[],
            ok("evaluations", b"{}"),
        );
        check(
            2,
            &[source],
            b"{}",
            Some("fixed"),
            None,
            &[],
            ok("fixed", b"{}"),
        );
        check(3, &[], b"{}", None, None, &[], Err("no_target"));
        check(
            4,
            &[source],
            b"{}",
            Some("evaluations.dlq"),
            None,
            &[],
            Err("loop"),
        );
        check(
            5,
            &[source, reason],
            b"{}",
            None,
            None,
            &[Reason::InvalidField],
            Err("filtered"),
        );
        check(
            6,
            &[source, reason],
            b"{}",
            None,
            None,
            &[Reason::NotJson],
            ok("evaluations", b"{}"),
        );
        check(
            7,
            &[source, ("haochaping.payload", "withheld")],
            b"{}",
            None,
            None,
            &[],
            Err("withheld"),
        );
        check(
            8,
            &[source, redacted, ("haochaping.truncated", "true")],
            b"{",
            None,
            None,
            &[],
            Err("truncated"),
        );
        check(
            9,
            &[source, encrypted, cipher],
            sealed,
            None,
            None,
            &[],
            Err("no_key"),
        );
        check(
            10,
            &[source, encrypted, cipher],
            sealed,
            None,
            Some(&two),
            &[],
            Err("wrong_key"),
        );
        check(
            11,
            &[source, encrypted, cipher],
            b"garbage-garbage-garbage-garbage",
            None,
            Some(&one),
            &[],
            Err("damaged"),
        );
        check(
            12,
            &[source, encrypted, cipher],
            sealed,
            None,
            Some(&one),
            &[],
            ok("evaluations", b"{\"userCert\":"),
        );
    }
}
