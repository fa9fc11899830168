//! The dead-letter topic: every rejected message, never lost.
//!
//! A record keeps the original bytes (identity fields replaced by `evaluatorKey` where the payload is
//! a JSON object, see [`crate::transform::identity`]) and the original key, with headers saying why:
//!
//! | header | value |
//! |---|---|
//! | `haochaping.reason` | reason code (`not_json`, `invalid_area_code`, `case_already_evaluated`, …) |
//! | `haochaping.message` | a human explanation naming the field |
//! | `haochaping.source.topic` / `.partition` / `.offset` | where the message was read |
//!
//! Records are produced as the messages are read; the batch that covers their offsets is committed
//! only after every one of them has been acknowledged, so a crash replays (and re-parks) them rather
//! than losing them. A replay can park the same record twice; the source coordinates identify it.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use crate::decode::Rejection;

pub const HEADER_REASON: &str = "haochaping.reason";
pub const HEADER_MESSAGE: &str = "haochaping.message";
pub const HEADER_SOURCE_TOPIC: &str = "haochaping.source.topic";
pub const HEADER_SOURCE_PARTITION: &str = "haochaping.source.partition";
pub const HEADER_SOURCE_OFFSET: &str = "haochaping.source.offset";

/// Errors of the dead-letter topic.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("producing to the dead-letter topic {topic}: {source}")]
    Produce {
        topic: String,
        source: rdkafka::error::KafkaError,
    },
    #[error("the dead-letter producer was dropped before acknowledging a record")]
    Canceled,
}

/// Where a rejected message came from.
#[derive(Debug, Clone, Copy)]
pub struct SourcePosition<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

/// Produces dead-letter records.
#[derive(Clone)]
pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
}

impl DeadLetters {
    pub fn new(producer: FutureProducer, topic: String) -> Self {
        Self { producer, topic }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Queues one record, waiting while the producer's queue is full; the returned future resolves
    /// when the broker has it.
    pub async fn send(
        &self,
        key: Option<&[u8]>,
        payload: &[u8],
        rejection: &Rejection,
        source: SourcePosition<'_>,
    ) -> Result<DeliveryFuture, DlqError> {
        let partition = source.partition.to_string();
        let offset = source.offset.to_string();
        loop {
            let headers = OwnedHeaders::new_with_capacity(5)
                .insert(Header {
                    key: HEADER_REASON,
                    value: Some(rejection.reason.code()),
                })
                .insert(Header {
                    key: HEADER_MESSAGE,
                    value: Some(&rejection.message),
                })
                .insert(Header {
                    key: HEADER_SOURCE_TOPIC,
                    value: Some(source.topic),
                })
                .insert(Header {
                    key: HEADER_SOURCE_PARTITION,
                    value: Some(&partition),
                })
                .insert(Header {
                    key: HEADER_SOURCE_OFFSET,
                    value: Some(&offset),
                });
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic)
                .payload(payload)
                .headers(headers);
            if let Some(key) = key {
                record = record.key(key);
            }
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                Err((source, _)) => {
                    return Err(DlqError::Produce {
                        topic: self.topic.clone(),
                        source,
                    })
                }
            }
        }
    }

    /// Waits for queued records to be acknowledged.
    pub async fn confirm(&self, deliveries: Vec<DeliveryFuture>) -> Result<(), DlqError> {
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((source, _))) => {
                    return Err(DlqError::Produce {
                        topic: self.topic.clone(),
                        source,
                    })
                }
                Err(_) => return Err(DlqError::Canceled),
            }
        }
        Ok(())
    }
}
