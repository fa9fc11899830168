//! The `alerts` topic: every alert the rules fire ([`crate::analytics::alerts`]), as JSON
//! (`schemas/alert.schema.json`) keyed by department code, from an idempotent producer. The engine
//! confirms an alert's delivery before it commits the batch holding its evaluation, so an alert is
//! never lost; a replay after a crash sends it again with the same id.
//!
//! A storm (one department's bad reviews by the hundred) is bounded per rule and department with a
//! `governor` rate limit. What it holds back is counted, and before any batch commits every count
//! so far goes out as one `rate_limited` alert per rule and department: nothing is dropped silently.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use serde::Serialize;

use crate::analytics::alerts::alert::{alert_id, Coded};
use crate::analytics::alerts::Alert;
use crate::config::{AlertsConfig, KafkaConfig};
use crate::policy::span::format_cst;
use crate::telemetry::Stats;

/// How long to wait when the producer's queue is full before offering the record again.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum AlertSinkError {
    #[error("alerts topic {topic}: {source}")]
    Kafka { topic: String, source: KafkaError },
    #[error("alerts topic {topic}: a delivery was canceled (the producer shut down)")]
    Canceled { topic: String },
    #[error("encoding an alert: {0}")]
    Json(#[from] serde_json::Error),
}

/// The summary of alerts held back by the rate limit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateLimited {
    pub id: String,
    /// Always `rate_limited`.
    pub rule: &'static str,
    pub severity: &'static str,
    /// The rule whose alerts were held back.
    pub limited_rule: String,
    pub department: Coded,
    /// How many alerts this summary stands for.
    pub suppressed: u64,
    pub first_id: String,
    pub last_id: String,
    pub first_given_at: String,
    pub last_given_at: String,
    pub detected_at: String,
}

#[derive(Debug, Clone)]
struct Held {
    department_name: Option<String>,
    count: u64,
    first_id: String,
    last_id: String,
    first_given_at: String,
    last_given_at: String,
}

/// Produces alerts, bounded per rule and department.
pub struct AlertSink {
    producer: FutureProducer,
    topic: String,
    limiter: DefaultKeyedRateLimiter<(String, String)>,
    held: BTreeMap<(String, String), Held>,
}

impl AlertSink {
    pub fn new(producer: FutureProducer, config: &AlertsConfig) -> Self {
        let per_minute = NonZeroU32::new(config.max_per_minute).unwrap_or(NonZeroU32::MIN);
        Self {
            producer,
            topic: config.topic.clone(),
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
            held: BTreeMap::new(),
        }
    }

    /// The sink an ingest configuration describes: an idempotent producer with a short linger, since
    /// an alert is wanted within the second.
    pub fn from_config(kafka: &KafkaConfig, alerts: &AlertsConfig) -> Result<Self, AlertSinkError> {
        let producer = crate::source::kafka::producer_with(kafka, &[("linger.ms", "5")]).map_err(
            |source| AlertSinkError::Kafka {
                topic: alerts.topic.clone(),
                source,
            },
        )?;
        Ok(Self::new(producer, alerts))
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Produces one alert, or holds it back when its rule and department are over the rate. The
    /// returned delivery must be confirmed ([`Self::confirm`]) before the batch commits.
    pub async fn send(
        &mut self,
        alert: &Alert,
        stats: &Stats,
    ) -> Result<Option<DeliveryFuture>, AlertSinkError> {
        let key = (alert.rule.clone(), alert.department.code.clone());
        if self.limiter.check_key(&key).is_err() {
            stats.alert_rate_limited(&alert.rule);
            let held = self.held.entry(key).or_insert_with(|| Held {
                department_name: alert.department.name.clone(),
                count: 0,
                first_id: alert.id.clone(),
                last_id: alert.id.clone(),
                first_given_at: alert.given_at.clone(),
                last_given_at: alert.given_at.clone(),
            });
            held.count += 1;
            held.last_id.clone_from(&alert.id);
            held.last_given_at.clone_from(&alert.given_at);
            return Ok(None);
        }
        let payload = serde_json::to_vec(alert)?;
        let delivery = self.produce(alert.key(), &payload).await?;
        stats.alert_sent(&alert.rule);
        Ok(Some(delivery))
    }

    /// Produces an alert that the rate limit does not apply to (few by nature: hotspot openings and
    /// closings).
    pub async fn send_unlimited(
        &self,
        key: &str,
        rule: &str,
        alert: &impl Serialize,
        stats: &Stats,
    ) -> Result<DeliveryFuture, AlertSinkError> {
        let payload = serde_json::to_vec(alert)?;
        let delivery = self.produce(key, &payload).await?;
        stats.alert_sent(rule);
        Ok(delivery)
    }

    /// Sends one `rate_limited` alert per rule and department for everything held back so far, and
    /// forgets the limiter's idle keys. Called before any batch commits.
    pub async fn send_held(
        &mut self,
        now_us: i64,
        stats: &Stats,
    ) -> Result<Vec<DeliveryFuture>, AlertSinkError> {
        let mut deliveries = Vec::new();
        for ((rule, department), held) in std::mem::take(&mut self.held) {
            let summary = summarise(&rule, department, held, now_us);
            let payload = serde_json::to_vec(&summary)?;
            deliveries.push(self.produce(&summary.department.code, &payload).await?);
            stats.alert_sent(summary.rule);
        }
        self.limiter.retain_recent();
        Ok(deliveries)
    }

    /// Waits until the broker has every given alert (see [`confirm`]).
    pub async fn confirm(&self, deliveries: Vec<DeliveryFuture>) -> Result<(), AlertSinkError> {
        confirm(&self.topic, deliveries).await
    }

    async fn produce(&self, key: &str, payload: &[u8]) -> Result<DeliveryFuture, AlertSinkError> {
        loop {
            let record: FutureRecord<'_, str, [u8]> =
                FutureRecord::to(&self.topic).key(key).payload(payload);
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(QUEUE_FULL_WAIT).await;
                }
                Err((source, _)) => {
                    return Err(AlertSinkError::Kafka {
                        topic: self.topic.clone(),
                        source,
                    })
                }
            }
        }
    }
}

/// Waits until the broker has every given alert of `topic`. librdkafka retries a failed send until
/// `message.timeout.ms` (10 minutes), so an error here means the topic stayed unreachable.
pub async fn confirm(topic: &str, deliveries: Vec<DeliveryFuture>) -> Result<(), AlertSinkError> {
    for delivery in deliveries {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((source, _))) => {
                return Err(AlertSinkError::Kafka {
                    topic: topic.to_owned(),
                    source,
                })
            }
            Err(_) => {
                return Err(AlertSinkError::Canceled {
                    topic: topic.to_owned(),
                })
            }
        }
    }
    Ok(())
}

/// The `rate_limited` alert for what one rule held back for one department. Its id depends only on
/// what it summarises.
fn summarise(rule: &str, department: String, held: Held, now_us: i64) -> RateLimited {
    let id = alert_id(
        "rate_limited",
        &format!("{rule}\0{department}\0{}\0{}", held.first_id, held.last_id),
        i8::try_from(held.count.min(127)).unwrap_or(i8::MAX),
    );
    RateLimited {
        id,
        rule: "rate_limited",
        severity: "high",
        limited_rule: rule.to_owned(),
        department: Coded {
            code: department,
            name: held.department_name,
        },
        suppressed: held.count,
        first_id: held.first_id,
        last_id: held.last_id,
        first_given_at: held.first_given_at,
        last_given_at: held.last_given_at,
        detected_at: format_cst(now_us),
    }
}
