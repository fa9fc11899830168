//! The dead-letter topic: every rejected message, never lost, never with an identity in clear.
//!
//! A record keeps the original key and a payload that is safe to show (see [`protect`]: redacted
//! JSON, the bytes as received when they name nobody, or else encrypted or withheld), with headers
//! saying why:
//!
//! | header | value |
//! |---|---|
//! | `haochaping.reason` | reason code (`not_json`, `invalid_area_code`, `case_already_evaluated`, …) |
//! | `haochaping.message` | a human explanation naming the field (quoted input scrubbed when the payload is hidden) |
//! | `haochaping.source.topic` / `.partition` / `.offset` | where the message was read |
//! | `haochaping.payload` | `as_received`, `redacted`, `encrypted` or `withheld` |
//! | `haochaping.encryption` | `aes-256-gcm:<key id>` on an encrypted payload |
//! | `haochaping.truncated` | `true` when only a head of the record fit |
//! | `haochaping.original.size` / `.sha256` | of the record before it was truncated or withheld |
//!
//! Records are produced as the messages are read; the batch that covers their offsets is committed
//! only after every one of them has been acknowledged, so a crash replays (and re-parks) them rather
//! than losing them. A replay can park the same record twice; the source coordinates identify it.
//!
//! One record never stops a partition: a record larger than the producer or the topic accepts is
//! parked again as a smaller head (down to an empty payload with its headers), and transient errors
//! (broker down, timeouts, a full queue) are retried with capped exponential backoff while the
//! partition waits. Only a topic that refuses every record (an ACL, a topic that never appears)
//! stops the run, with one line naming the topic.

pub mod protect;
pub mod replay;

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use crate::config::{ConfigError, IngestConfig};
use crate::decode::Rejection;
use crate::transform::identity::EvaluatorKeyer;
use protect::{
    scrub_message, Content, HEADER_ENCRYPTION, HEADER_ORIGINAL_SHA256, HEADER_ORIGINAL_SIZE,
    HEADER_PAYLOAD, HEADER_TRUNCATED,
};
pub use protect::{DlqKey, Form, Parked, Protector};

pub const HEADER_REASON: &str = "haochaping.reason";
pub const HEADER_MESSAGE: &str = "haochaping.message";
pub const HEADER_SOURCE_TOPIC: &str = "haochaping.source.topic";
pub const HEADER_SOURCE_PARTITION: &str = "haochaping.source.partition";
pub const HEADER_SOURCE_OFFSET: &str = "haochaping.source.offset";

/// How long a full producer queue is waited on before trying again. Waiting is the back-pressure:
/// the queue is bounded, so an outage holds memory constant while the partition pauses.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(10);
/// A topic the cluster does not know may be being created; after this many attempts it is an error.
const UNKNOWN_TOPIC_ATTEMPTS: u32 = 6;

/// Errors of the dead-letter topic; each is one line naming the topic.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("the dead-letter topic {topic} refuses records: {source}{hint}")]
    Refused {
        topic: String,
        source: KafkaError,
        hint: &'static str,
    },
    #[error("the dead-letter topic {topic} does not exist (still unknown after {attempts} attempts): create it or set kafka.dlq_topic")]
    UnknownTopic { topic: String, attempts: u32 },
    #[error("the dead-letter producer was dropped before acknowledging a record")]
    Canceled,
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Where a rejected message came from.
#[derive(Debug, Clone, Copy)]
pub struct SourcePosition<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

pub use crate::retry::Backoff;

/// What to do about a failed produce or delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The producer's queue is full: wait for it to drain (not an error at all).
    QueueFull,
    /// The cluster may get better: retry with backoff, indefinitely.
    Transient,
    /// The topic is unknown: retry a few times (it may be being created), then give up.
    UnknownTopic,
    /// The record is larger than the producer or the topic takes: park a smaller form.
    TooLarge,
    /// Retrying cannot help (authorization, invalid topic, a fatal producer error).
    Refused,
}

/// The rule: which error is which [`Failure`].
pub fn classify_failure(error: &KafkaError) -> Failure {
    use RDKafkaErrorCode as C;
    let Some(code) = error.rdkafka_error_code() else {
        return Failure::Refused;
    };
    match code {
        C::QueueFull => Failure::QueueFull,
        C::MessageSizeTooLarge | C::MessageBatchTooLarge | C::InvalidMessageSize => {
            Failure::TooLarge
        }
        C::UnknownTopicOrPartition | C::UnknownTopic | C::UnknownPartition => Failure::UnknownTopic,
        C::MessageTimedOut
        | C::OperationTimedOut
        | C::RequestTimedOut
        | C::TimedOutQueue
        | C::BrokerTransportFailure
        | C::AllBrokersDown
        | C::Resolve
        | C::NetworkException
        | C::BrokerNotAvailable
        | C::LeaderNotAvailable
        | C::NotLeaderForPartition
        | C::FencedLeaderEpoch
        | C::UnknownLeaderEpoch
        | C::ReplicaNotAvailable
        | C::NotEnoughReplicas
        | C::NotEnoughReplicasAfterAppend
        | C::KafkaStorageError
        | C::ThrottlingQuotaExceeded
        | C::Retry
        | C::PurgeQueue
        | C::PurgeInflight
        | C::OutOfOrderSequenceNumber
        | C::UnknownProducerId
        | C::InvalidProducerEpoch => Failure::Transient,
        _ => Failure::Refused,
    }
}

fn refusal_hint(error: &KafkaError) -> &'static str {
    match error.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::TransactionalIdAuthorizationFailed,
        ) => " (grant this client WRITE on the topic and IDEMPOTENT_WRITE on the cluster)",
        Some(RDKafkaErrorCode::Fatal) => " (the producer failed fatally; restarting recreates it)",
        _ => "",
    }
}

/// One dead letter on its way: what is needed to park it again, smaller, if it is refused.
struct Outgoing {
    key: Option<Vec<u8>>,
    /// Reason, message and source headers (everything but the payload's description).
    base: Vec<(String, Vec<u8>)>,
    /// The content before bounding; `None` when only the parked form is known (a withheld record).
    content: Option<Content<'static>>,
    /// The untruncated record's size and digest, when `content` is already a head.
    original: Option<(usize, String)>,
    parked: Parked,
}

/// Produces dead-letter records.
#[derive(Clone)]
pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
    protector: Protector,
    max_record_bytes: usize,
    backoff: Backoff,
}

impl DeadLetters {
    pub fn new(
        producer: FutureProducer,
        topic: String,
        protector: Protector,
        max_record_bytes: usize,
        backoff: Backoff,
    ) -> Self {
        Self {
            producer,
            topic,
            protector,
            max_record_bytes,
            backoff,
        }
    }

    /// The dead letters an ingest configuration describes (its producer, topic, key and bounds).
    pub fn from_config(config: &IngestConfig) -> Result<Self, DlqError> {
        Self::for_topic(config, config.kafka.dlq_topic())
    }

    /// The same, for the dead letters of one stream (`topic`).
    pub fn for_topic(config: &IngestConfig, topic: String) -> Result<Self, DlqError> {
        let producer =
            crate::source::kafka::producer(&config.kafka).map_err(|source| DlqError::Refused {
                topic: topic.clone(),
                source,
                hint: "",
            })?;
        Ok(Self::new(
            producer,
            topic,
            protector(config)?,
            config.dlq.max_record_bytes,
            Backoff {
                first: Duration::from_millis(100),
                max: config.dlq.retry_backoff_max,
            },
        ))
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Queues one record, waiting while the producer's queue is full or the cluster is away; the
    /// returned future resolves when the broker has it (see [`Self::confirm`]). `payload` may be
    /// the message as received: it is redacted, encrypted or withheld here.
    pub async fn send(
        &self,
        key: Option<&[u8]>,
        payload: &[u8],
        rejection: &Rejection,
        source: SourcePosition<'_>,
    ) -> Result<DeliveryFuture, DlqError> {
        let content = self.protector.classify(payload).into_owned();
        let parked = self.protector.seal(&content, self.max_record_bytes, None);
        // Decoding already keeps values out of its messages; scrubbing quoted spans here too means
        // no message built elsewhere can carry input onto the topic.
        let message = scrub_message(&rejection.message);
        let base = [
            (HEADER_REASON, rejection.reason.code().to_owned()),
            (HEADER_MESSAGE, message.into_owned()),
            (HEADER_SOURCE_TOPIC, source.topic.to_owned()),
            (HEADER_SOURCE_PARTITION, source.partition.to_string()),
            (HEADER_SOURCE_OFFSET, source.offset.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into_bytes()))
        .collect();
        let mut outgoing = Outgoing {
            key: key.map(<[u8]>::to_vec),
            base,
            content: Some(content),
            original: None,
            parked,
        };
        let delivery = self.produce(&mut outgoing).await?;
        crate::telemetry::dlq_parked(outgoing.parked.form.code(), outgoing.parked.truncated);
        Ok(delivery)
    }

    /// Waits for queued records to be acknowledged, producing again those that failed on the way:
    /// transient errors after a backoff, oversize records as a smaller head.
    pub async fn confirm(&self, deliveries: Vec<DeliveryFuture>) -> Result<(), DlqError> {
        for delivery in deliveries {
            self.settle(delivery).await?;
        }
        Ok(())
    }

    async fn settle(&self, mut delivery: DeliveryFuture) -> Result<(), DlqError> {
        let mut attempt = 0;
        loop {
            let (error, message) = match delivery.await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(failed)) => failed,
                Err(_) => return Err(DlqError::Canceled),
            };
            let mut outgoing = self.outgoing_from(&message);
            match classify_failure(&error) {
                Failure::TooLarge => self.shrink(&mut outgoing, &error)?,
                failure => {
                    self.wait_or_fail(failure, &error, attempt).await?;
                    attempt += 1;
                }
            }
            delivery = self.produce(&mut outgoing).await?;
        }
    }

    /// Enqueues a record: a full queue is waited on, an oversize record shrunk, a transient error
    /// retried after a backoff.
    async fn produce(&self, outgoing: &mut Outgoing) -> Result<DeliveryFuture, DlqError> {
        let mut attempt = 0;
        loop {
            let mut headers = OwnedHeaders::new_with_capacity(outgoing.base.len() + 5);
            for (key, value) in &outgoing.base {
                headers = headers.insert(Header {
                    key: key.as_str(),
                    value: Some(value.as_slice()),
                });
            }
            for (key, value) in outgoing.parked.headers() {
                headers = headers.insert(Header {
                    key,
                    value: Some(value.as_str()),
                });
            }
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic)
                .payload(outgoing.parked.payload.as_slice())
                .headers(headers);
            if let Some(key) = &outgoing.key {
                record = record.key(key.as_slice());
            }
            let error = match self.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((error, _)) => error,
            };
            match classify_failure(&error) {
                Failure::QueueFull => tokio::time::sleep(QUEUE_FULL_WAIT).await,
                Failure::TooLarge => self.shrink(outgoing, &error)?,
                failure => {
                    self.wait_or_fail(failure, &error, attempt).await?;
                    attempt += 1;
                }
            }
        }
    }

    /// Sleeps before retrying a transient failure, or returns the error that ends the run.
    async fn wait_or_fail(
        &self,
        failure: Failure,
        error: &KafkaError,
        attempt: u32,
    ) -> Result<(), DlqError> {
        match failure {
            Failure::QueueFull => {
                tokio::time::sleep(QUEUE_FULL_WAIT).await;
                return Ok(());
            }
            Failure::Transient => {}
            Failure::UnknownTopic if attempt + 1 < UNKNOWN_TOPIC_ATTEMPTS => {}
            Failure::UnknownTopic => {
                return Err(DlqError::UnknownTopic {
                    topic: self.topic.clone(),
                    attempts: attempt + 1,
                })
            }
            Failure::TooLarge | Failure::Refused => {
                return Err(DlqError::Refused {
                    topic: self.topic.clone(),
                    source: error.clone(),
                    hint: refusal_hint(error),
                })
            }
        }
        let delay = self.backoff.delay(attempt);
        tracing::warn!(topic = %self.topic, error = %error, attempt = attempt + 1, delay_ms = delay.as_millis() as u64, "dead-letter produce failed; retrying");
        crate::telemetry::dlq_retried(if failure == Failure::UnknownTopic {
            "unknown_topic"
        } else {
            "transient"
        });
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// Parks a record the producer or topic refused for its size as a head half as large (down to
    /// an empty payload: the headers still say that it existed, why, and what it was).
    fn shrink(&self, outgoing: &mut Outgoing, error: &KafkaError) -> Result<(), DlqError> {
        let size = outgoing.parked.payload.len();
        if size == 0 {
            return Err(DlqError::Refused {
                topic: self.topic.clone(),
                source: error.clone(),
                hint: " (even an empty record with its headers is too large)",
            });
        }
        let limit = size / 2;
        tracing::warn!(topic = %self.topic, bytes = size, limit, "dead letter too large for the topic; parking a smaller head");
        crate::telemetry::dlq_retried("too_large");
        outgoing.parked = match &outgoing.content {
            Some(content) => self
                .protector
                .seal(content, limit, outgoing.original.clone()),
            None => Parked {
                payload: Vec::new(),
                ..outgoing.parked.clone()
            },
        };
        Ok(())
    }

    /// Rebuilds what is needed to park a failed record again from what the producer handed back.
    fn outgoing_from(&self, message: &OwnedMessage) -> Outgoing {
        let mut base = Vec::new();
        let mut described: std::collections::HashMap<String, String> = Default::default();
        if let Some(headers) = message.headers() {
            for header in headers.iter() {
                let value = header.value.unwrap_or_default();
                match header.key {
                    HEADER_PAYLOAD
                    | HEADER_ENCRYPTION
                    | HEADER_TRUNCATED
                    | HEADER_ORIGINAL_SIZE
                    | HEADER_ORIGINAL_SHA256 => {
                        described.insert(
                            header.key.to_owned(),
                            String::from_utf8_lossy(value).into_owned(),
                        );
                    }
                    key => base.push((key.to_owned(), value.to_vec())),
                }
            }
        }
        let payload = message.payload().unwrap_or_default().to_vec();
        let form = described
            .get(HEADER_PAYLOAD)
            .and_then(|f| Form::from_code(f))
            .unwrap_or(Form::Withheld);
        let original: Option<(usize, String)> = described
            .get(HEADER_ORIGINAL_SIZE)
            .and_then(|s| s.parse().ok())
            .zip(described.get(HEADER_ORIGINAL_SHA256).cloned());
        let encryption = described.get(HEADER_ENCRYPTION).cloned();
        let content = match form {
            Form::AsReceived | Form::Redacted => Some(Content::Clear(form, payload.clone().into())),
            // Our own key sealed it; opening cannot fail unless memory is corrupt, and then the
            // record is kept as it is (and emptied if it must shrink).
            Form::Encrypted => self.protector.key().and_then(|key| {
                key.open(encryption.as_deref().unwrap_or_default(), &payload)
                    .ok()
                    .map(|plain| Content::Secret(plain.into()))
            }),
            Form::Withheld => None,
        };
        Outgoing {
            key: message.key().map(<[u8]>::to_vec),
            base,
            content,
            parked: Parked {
                payload,
                form,
                truncated: described.contains_key(HEADER_TRUNCATED),
                encryption,
                original: original.clone(),
            },
            original,
        }
    }
}

/// The protector an ingest configuration describes: its identity keyer and dead-letter key.
pub fn protector(config: &IngestConfig) -> Result<Protector, ConfigError> {
    let secret = config
        .identity
        .secret
        .as_ref()
        .map_or("", crate::config::Secret::expose);
    Ok(Protector::new(
        EvaluatorKeyer::new(secret.as_bytes()),
        config.dlq.key()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::error::KafkaError;

    #[test]
    fn failures_by_error_code() {
        use RDKafkaErrorCode as C;
        let cases = [
            (C::QueueFull, Failure::QueueFull),
            (C::MessageSizeTooLarge, Failure::TooLarge),
            (C::MessageBatchTooLarge, Failure::TooLarge),
            (C::MessageTimedOut, Failure::Transient),
            (C::AllBrokersDown, Failure::Transient),
            (C::BrokerTransportFailure, Failure::Transient),
            (C::NotLeaderForPartition, Failure::Transient),
            (C::LeaderNotAvailable, Failure::Transient),
            (C::RequestTimedOut, Failure::Transient),
            (C::NotEnoughReplicas, Failure::Transient),
            (C::UnknownTopicOrPartition, Failure::UnknownTopic),
            (C::UnknownTopic, Failure::UnknownTopic),
            (C::TopicAuthorizationFailed, Failure::Refused),
            (C::ClusterAuthorizationFailed, Failure::Refused),
            (C::InvalidTopic, Failure::Refused),
            (C::Fatal, Failure::Refused),
        ];
        for (code, failure) in cases {
            assert_eq!(
                classify_failure(&KafkaError::MessageProduction(code)),
                failure,
                "{code:?}"
            );
        }
        assert_eq!(classify_failure(&KafkaError::Canceled), Failure::Refused);
    }

    #[test]
    fn refusals_are_one_line_and_name_the_topic() {
        let error = DlqError::Refused {
            topic: "evaluations.dlq".into(),
            source: KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed),
            hint: refusal_hint(&KafkaError::MessageProduction(
                RDKafkaErrorCode::TopicAuthorizationFailed,
            )),
        };
        let text = error.to_string();
        assert!(
            text.contains("evaluations.dlq") && text.contains("WRITE"),
            "{text}"
        );
        assert!(!text.contains('\n'));
        let text = DlqError::UnknownTopic {
            topic: "x.dlq".into(),
            attempts: 6,
        }
        .to_string();
        assert!(text.contains("x.dlq") && !text.contains('\n'));
    }
}
