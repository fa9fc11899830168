//! The alert stage: each chunk's accepted bad reviews through the alert rules, straight to the
//! alerts topic, without waiting for the Parquet flush.
//!
//! Only bad reviews reach the rules (a few in a hundred evaluations, often far fewer), so the stage
//! re-runs the one [`Processor`] over just those messages to build their micro-batch instead of
//! slicing it out of the batch's builders, which keep filling until the flush. Each alert's
//! delivery joins its partition's batch and is confirmed before the batch commits (see
//! [`super::commit`]); a replay after a crash sends it again with the same id.

use arrow::array::RecordBatch;
use rdkafka::producer::DeliveryFuture;

use super::EngineError;
use crate::analytics::alerts::{load_history, AlertError, AlertRules, RULES};
use crate::config::IngestConfig;
use crate::sink::alerts::AlertSink;
use crate::sink::parquet::EvaluationRows;
use crate::telemetry::Stats;
use crate::transform::{Message, Processor};

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

    /// Runs the rules over a chunk's accepted bad reviews (`(partition, message)`, in the order
    /// dedup accepted them) and produces their alerts; returns each delivery with its partition.
    pub async fn on_chunk(
        &mut self,
        accepted: &[(i32, Message<'_>)],
        now_us: i64,
        stats: &Stats,
    ) -> Result<Vec<(i32, DeliveryFuture)>, EngineError> {
        self.refresh_history(now_us).await;
        if accepted.is_empty() {
            return Ok(Vec::new());
        }
        let started = std::time::Instant::now();
        let mut rows = EvaluationRows::with_capacity(accepted.len());
        for (partition, message) in accepted {
            // Already validated once with the same `now_us`: it cannot fail now.
            let _ = self.processor.append_row(
                message.payload,
                *partition,
                message.offset,
                now_us,
                &mut rows,
            );
        }
        let batch = rows.into_batch()?;
        let built = started.elapsed();
        let alerts = self.rules.evaluate(&batch, now_us).await?;
        let evaluated = started.elapsed();
        let mut deliveries = Vec::with_capacity(alerts.len());
        for alert in &alerts {
            if let Some(delivery) = self.sink.send(alert, stats).await? {
                deliveries.push((alert.source.partition, delivery));
            }
        }
        // Where a chunk's alert time goes, for the next time it is too much (RESULTS.md §16).
        tracing::trace!(
            rows = accepted.len(),
            alerts = alerts.len(),
            build_us = built.as_micros() as u64,
            evaluate_us = (evaluated - built).as_micros() as u64,
            send_us = (started.elapsed() - evaluated).as_micros() as u64,
            "alert stage"
        );
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
