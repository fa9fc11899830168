//! The alert stage: the accepted bad reviews through the alert rules, straight to the alerts topic,
//! without waiting for the Parquet flush.
//!
//! Only bad reviews reach the rules (a few in a hundred evaluations, often far fewer), so the stage
//! keeps just those messages and re-runs the one [`Processor`] over them to build their
//! micro-batch instead of slicing it out of the batch's builders, which keep filling until the
//! flush. Each alert's delivery joins its partition's batch and is confirmed before the batch
//! commits (see [`super::commit`]); a replay after a crash sends it again with the same id.
//!
//! Running the rules costs about the same for one review as for a thousand (each rule makes its
//! physical plan and joins with the look-back), so while the engine is behind (its last chunk was
//! full) the reviews of several chunks are held and run together, for at most [`MAX_HOLD`] or
//! [`MAX_HELD`] reviews ([`Alerting::due`]). Once the engine has caught up they run with the chunk
//! that brought them, and before any commit always. The rules judge a review by the reviews given
//! before it, wherever they are (micro-batch or look-back), so holding changes when an alert is
//! sent, not which.

use arrow::array::RecordBatch;
use rdkafka::producer::DeliveryFuture;

use std::time::{Duration, Instant};

use super::EngineError;
use crate::analytics::alerts::{load_history, AlertError, AlertRules, RULES};
use crate::config::IngestConfig;
use crate::sink::alerts::AlertSink;
use crate::sink::parquet::EvaluationRows;
use crate::telemetry::Stats;
use crate::transform::{Message, Processor};

/// The longest a bad review waits for the rules while the engine is behind.
pub const MAX_HOLD: Duration = Duration::from_millis(200);

/// The most bad reviews held for the rules at once.
pub const MAX_HELD: usize = 4096;

/// An accepted bad review waiting for the rules: its message, owned (the chunk that brought it is
/// gone by then), and the time it was validated at.
struct Held {
    stream: usize,
    partition: i32,
    offset: i64,
    payload: Vec<u8>,
    now_us: i64,
}

/// The alert rules and where their alerts go.
pub struct Alerting {
    /// Rebuilds the rows of the bad reviews for the rules (the same stages as the stream's).
    processor: Processor,
    rules: AlertRules,
    sink: AlertSink,
    /// The lake the rules' look-back is read from again every `history_refresh`.
    lake: crate::lake::LakeRoot,
    history_refresh: std::time::Duration,
    last_refresh: std::time::Instant,
    /// A read of the lake's bad reviews in flight (in the background: never on the chunk's path).
    refreshing: Option<tokio::task::JoinHandle<Result<Vec<RecordBatch>, AlertError>>>,
    /// Bad reviews whose rules have not run yet, in the order dedup accepted them.
    held: Vec<Held>,
    /// When the oldest of them was held.
    held_since: Option<Instant>,
}

impl Alerting {
    /// The alert stage of an ingest configuration, if alerts are enabled: the rules planned once,
    /// their history loaded from the lake.
    pub async fn from_config(
        config: &IngestConfig,
        lake: &crate::lake::LakeRoot,
    ) -> Result<Option<Self>, EngineError> {
        if !config.alerts.enabled {
            return Ok(None);
        }
        let policies = std::sync::Arc::new(config.policy.load()?);
        let history = load_history(lake, super::now_us()).await?;
        let rules = AlertRules::new(RULES, history, policies).await?;
        tracing::info!(
            topic = %config.alerts.topic,
            rules = RULES.len(),
            history = rules.history_len(),
            "alert rules ready"
        );
        let sink = AlertSink::from_config(&config.kafka, &config.alerts)?;
        Ok(Some(Self {
            processor: Processor::from_config(config),
            rules,
            sink,
            lake: lake.clone(),
            history_refresh: config.alerts.history_refresh,
            last_refresh: std::time::Instant::now(),
            refreshing: None,
            held: Vec::new(),
            held_since: None,
        }))
    }

    /// Takes in a finished read of the lake's bad reviews, and starts the next one when due.
    /// A failed read is logged and tried again at the next period: the rules go on with what they
    /// hold.
    async fn refresh_history(&mut self, now_us: i64) {
        if self.refreshing.as_ref().is_some_and(|t| t.is_finished()) {
            if let Some(task) = self.refreshing.take() {
                let absorbed = match task.await {
                    Ok(Ok(history)) => self
                        .rules
                        .absorb(&history, now_us)
                        .map_err(|e| e.to_string()),
                    Ok(Err(error)) => Err(error.to_string()),
                    Err(error) => Err(error.to_string()),
                };
                match absorbed {
                    Ok(new) => tracing::debug!(
                        new,
                        held = self.rules.history_len(),
                        "alert look-back read again from the lake"
                    ),
                    Err(error) => tracing::warn!(%error, "alert look-back not refreshed"),
                }
            }
        }
        if self.refreshing.is_none()
            && !self.history_refresh.is_zero()
            && self.last_refresh.elapsed() >= self.history_refresh
        {
            self.last_refresh = std::time::Instant::now();
            let lake = self.lake.clone();
            self.refreshing = Some(tokio::spawn(async move {
                load_history(&lake, super::now_us()).await
            }));
        }
    }

    /// Holds a chunk's accepted bad reviews of stream `stream` (`(partition, message)`, in the
    /// order dedup accepted them, validated at `now_us`) for the rules.
    pub async fn on_chunk(&mut self, stream: usize, accepted: &[(i32, Message<'_>)], now_us: i64) {
        self.refresh_history(now_us).await;
        if accepted.is_empty() {
            return;
        }
        self.held_since.get_or_insert_with(Instant::now);
        self.held
            .extend(accepted.iter().map(|(partition, message)| Held {
                stream,
                partition: *partition,
                offset: message.offset,
                payload: message.payload.to_vec(),
                now_us,
            }));
    }

    /// Whether the held reviews should go through the rules now: at once unless the engine is
    /// `behind`, and even then once they are [`MAX_HELD`] or the oldest has waited [`MAX_HOLD`].
    pub fn due(&self, behind: bool) -> bool {
        due(
            self.held.len(),
            self.held_since.map(|t| t.elapsed()),
            behind,
        )
    }

    /// Forgets the held reviews of a partition whose open batch is dropped (revoked, or taken by
    /// another writer): whoever reads the partition next reads them again and alerts.
    pub fn forget(&mut self, stream: usize, partition: i32) {
        self.held
            .retain(|h| (h.stream, h.partition) != (stream, partition));
        if self.held.is_empty() {
            self.held_since = None;
        }
    }

    /// Runs the rules over every held review and produces their alerts; returns each delivery
    /// with its stream and partition.
    pub async fn run_held(
        &mut self,
        now_us: i64,
        stats: &Stats,
    ) -> Result<Vec<(usize, i32, DeliveryFuture)>, EngineError> {
        let held = std::mem::take(&mut self.held);
        self.held_since = None;
        let mut streams: Vec<usize> = held.iter().map(|h| h.stream).collect();
        streams.sort_unstable();
        streams.dedup();
        let mut deliveries = Vec::new();
        for stream in streams {
            let mut rows = EvaluationRows::with_capacity(held.len());
            for h in held.iter().filter(|h| h.stream == stream) {
                // Already validated once with the same `now_us`: it cannot fail now.
                let _ = self.processor.append_row(
                    &h.payload,
                    h.partition,
                    h.offset,
                    h.now_us,
                    &mut rows,
                );
            }
            let batch = rows.into_batch()?;
            let alerts = self.rules.evaluate(&batch, now_us).await?;
            for alert in &alerts {
                if let Some(delivery) = self.sink.send(alert, stats).await? {
                    deliveries.push((stream, alert.source.partition, delivery));
                }
            }
        }
        Ok(deliveries)
    }

    /// Before any batch commits: every alert the rate limit held back so far goes out in summaries,
    /// confirmed.
    pub async fn before_commit(&mut self, now_us: i64, stats: &Stats) -> Result<(), EngineError> {
        let held = self.sink.send_held(now_us, stats).await?;
        self.sink.confirm(held).await?;
        Ok(())
    }

    /// The topic, for confirming deliveries with [`crate::sink::alerts::confirm`].
    pub fn topic(&self) -> &str {
        self.sink.topic()
    }
}

/// Whether `held` reviews, the oldest held for `waited`, go through the rules now (see
/// [`Alerting::due`]).
fn due(held: usize, waited: Option<Duration>, behind: bool) -> bool {
    held > 0 && (!behind || held >= MAX_HELD || waited.is_some_and(|w| w >= MAX_HOLD))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_reviews_wait_only_while_the_engine_is_behind_and_not_for_long() {
        let ms = |n| Some(Duration::from_millis(n));
        let table: &[(usize, Option<Duration>, bool, bool)] = &[
            // (held, oldest waited, behind, due)
            (0, None, false, false),
            (0, None, true, false),
            (1, ms(0), false, true),
            (1, ms(0), true, false),
            (MAX_HELD - 1, ms(199), true, false),
            (MAX_HELD, ms(0), true, true),
            (1, Some(MAX_HOLD), true, true),
            (1, None, true, false),
        ];
        for &(held, waited, behind, expected) in table {
            assert_eq!(
                due(held, waited, behind),
                expected,
                "held {held}, waited {waited:?}, behind {behind}"
            );
        }
    }
}
