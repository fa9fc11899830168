//! The Kafka source: a consumer-group member whose rebalances are reported to the pipeline.
//!
//! Offsets are never auto-committed or auto-stored: the pipeline commits a partition's offset only
//! after the lake holds the batch (see [`crate::lake`]). Rebalance callbacks run inside
//! `recv()`, on the pipeline's own task; they only record what moved, and the pipeline acts on it
//! before the next message. A batch still committing when its partition moves finishes in its own
//! task, and the lake's log fences it if the next owner has claimed the partition first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::config::KafkaConfig;

/// A partition moving to or from this instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionEvent {
    Assigned(String, i32),
    Revoked(String, i32),
}

/// Consumer context that queues rebalance events for the pipeline.
#[derive(Clone, Default)]
pub struct IngestContext {
    events: Arc<Mutex<Vec<PartitionEvent>>>,
    /// Whether the group has given this member its (possibly empty) share at least once.
    joined: Arc<std::sync::atomic::AtomicBool>,
}

impl IngestContext {
    /// Whether this member has joined its group (been assigned its share, even none).
    pub fn joined(&self) -> bool {
        self.joined.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Takes the events recorded since the last call.
    pub fn take_events(&self) -> Vec<PartitionEvent> {
        self.events
            .lock()
            .map(|mut e| std::mem::take(&mut *e))
            .unwrap_or_default()
    }

    fn record(&self, list: &TopicPartitionList, event: fn(String, i32) -> PartitionEvent) {
        if let Ok(mut events) = self.events.lock() {
            for element in list.elements() {
                events.push(event(element.topic().to_owned(), element.partition()));
            }
        }
    }
}

impl ClientContext for IngestContext {
    /// librdkafka's statistics (every `statistics.interval.ms`): how far each assigned partition's
    /// reading is behind the broker's last stable offset, as a gauge. (librdkafka's own
    /// `consumer_lag` counts from the committed offset, which it does not track for offsets
    /// committed by hand as the engine does.)
    fn stats(&self, statistics: rdkafka::statistics::Statistics) {
        for (name, topic) in &statistics.topics {
            for (partition, stats) in &topic.partitions {
                // Partition -1 is librdkafka's internal one; negative offsets are not known yet.
                if *partition >= 0 && stats.ls_offset >= 0 && stats.app_offset >= 0 {
                    let lag = (stats.ls_offset - stats.app_offset).max(0);
                    crate::telemetry::consumer_lag(name, *partition, lag);
                }
            }
        }
    }
}

impl ConsumerContext for IngestContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            tracing::info!(partitions = list.count(), "partitions revoked");
            self.record(list, PartitionEvent::Revoked);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                tracing::info!(partitions = list.count(), "partitions assigned");
                self.joined
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                self.record(list, PartitionEvent::Assigned);
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// The settings every client shares: the brokers, then the operator's `kafka.properties`.
pub fn client_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &kafka.brokers);
    for (key, value) in &kafka.properties {
        config.set(key, value);
    }
    config
}

/// The group consumer of the evaluations topic.
pub fn consumer(
    kafka: &KafkaConfig,
    context: IngestContext,
) -> KafkaResult<StreamConsumer<IngestContext>> {
    let mut config = client_config(kafka);
    config
        .set("group.id", &kafka.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // Large fetches, and no waiting on a broker that holds fetches (see `fetch_max_wait`).
        .set("fetch.max.bytes", "104857600")
        .set("max.partition.fetch.bytes", "16777216")
        .set(
            "fetch.wait.max.ms",
            kafka
                .fetch_max_wait
                .as_millis()
                .clamp(0, 300_000)
                .to_string(),
        )
        // The prefetch queue: 64 MiB is a few hundred milliseconds of work, and bounds memory
        // however long the run. When it is full, fetching pauses for `fetch.queue.backoff.ms`;
        // librdkafka's 1 s default starves a pipeline that drains 64 MiB in a fraction of that.
        .set("queued.max.messages.kbytes", "65536")
        .set("fetch.queue.backoff.ms", "10")
        // A flush may take a while on a slow lake; the group must not evict us meanwhile.
        .set("max.poll.interval.ms", "600000")
        // The consumer lag gauge comes from these statistics.
        .set("statistics.interval.ms", "5000");
    for (key, value) in &kafka.properties {
        config.set(key, value);
    }
    config.create_with_context(context)
}

/// The producer of the dead-letter topic: idempotent, so retries never duplicate a record.
pub fn producer(kafka: &KafkaConfig) -> KafkaResult<FutureProducer> {
    producer_with(kafka, &[])
}

/// [`producer`] with some settings changed for one use (e.g. a shorter linger for alerts); the
/// operator's `kafka.properties` still come last.
pub fn producer_with(kafka: &KafkaConfig, changes: &[(&str, &str)]) -> KafkaResult<FutureProducer> {
    let mut config = client_config(kafka);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "20")
        .set("compression.type", "lz4")
        // A bounded queue (librdkafka's default is 1 GiB): during a DLQ outage the pipeline waits on
        // it instead of piling records up in memory.
        .set("queue.buffering.max.kbytes", "65536")
        // Keep retrying through a broker outage rather than failing the batch.
        .set("message.timeout.ms", "600000");
    for (key, value) in changes {
        config.set(*key, *value);
    }
    for (key, value) in &kafka.properties {
        config.set(key, value);
    }
    config.create()
}

/// Where the broker's log of a partition ends (its high watermark).
pub async fn partition_end(
    consumer: Arc<StreamConsumer<IngestContext>>,
    topic: String,
    partition: i32,
) -> Result<i64, KafkaError> {
    tokio::task::spawn_blocking(move || {
        consumer
            .fetch_watermarks(&topic, partition, Duration::from_secs(10))
            .map(|(_, high)| high)
    })
    .await
    .map_err(|_| KafkaError::Canceled)?
}

/// Whether every given partition has been read to its high watermark (a pause in the stream is not
/// the end of it: the broker may just be slower than the pipeline).
pub async fn caught_up(
    consumer: Arc<StreamConsumer<IngestContext>>,
    topic: String,
    positions: Vec<(i32, Option<i64>)>,
) -> Result<bool, KafkaError> {
    tokio::task::spawn_blocking(move || {
        for (partition, position) in positions {
            let (low, high) =
                consumer.fetch_watermarks(&topic, partition, Duration::from_secs(10))?;
            if position.unwrap_or(low) < high {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await
    .map_err(|_| KafkaError::Canceled)?
}

/// Whether the group's committed offset of every partition of the topic is at its end.
pub async fn topic_fully_committed(
    consumer: Arc<StreamConsumer<IngestContext>>,
    topic: String,
) -> Result<bool, KafkaError> {
    tokio::task::spawn_blocking(move || {
        let timeout = Duration::from_secs(10);
        let metadata = consumer.fetch_metadata(Some(&topic), timeout)?;
        let mut list = TopicPartitionList::new();
        let mut ends = HashMap::new();
        for partition in metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic)
            .flat_map(|t| t.partitions())
        {
            let (low, high) = consumer.fetch_watermarks(&topic, partition.id(), timeout)?;
            if high > low {
                ends.insert(partition.id(), high);
                list.add_partition(&topic, partition.id());
            }
        }
        if ends.is_empty() {
            return Ok(true);
        }
        let committed = consumer.committed_offsets(list, timeout)?;
        Ok(committed.elements().iter().all(|e| match e.offset() {
            Offset::Offset(offset) => ends.get(&e.partition()).is_none_or(|end| offset >= *end),
            _ => false,
        }))
    })
    .await
    .map_err(|_| KafkaError::Canceled)?
}

#[cfg(test)]
mod tests {
    /// SASL/SCRAM over TLS is configuration only: librdkafka is built with OpenSSL, so the clients
    /// accept it (without it, creating them fails with "No provider for SASL mechanism").
    #[tokio::test]
    async fn scram_over_tls_is_configuration_only() {
        let mut kafka = crate::config::KafkaConfig::default();
        for (key, value) in [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "haochaping"),
            ("sasl.password", "not-a-real-password"),
        ] {
            kafka.properties.insert(key.into(), value.into());
        }
        let consumer = super::consumer(&kafka, super::IngestContext::default());
        assert!(consumer.is_ok(), "consumer: {:?}", consumer.err());
        let producer = super::producer(&kafka);
        assert!(producer.is_ok(), "producer: {:?}", producer.err());
    }
}
