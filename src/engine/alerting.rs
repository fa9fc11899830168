//! The alert stage: each chunk's accepted bad reviews through the alert rules, straight to the
//! alerts topic, without waiting for the Parquet flush.
//!
//! The stage is a task of its own ([`AlertStage`]), beside the chunk path: the run loop hands it a
//! chunk's bad reviews and goes on with the next chunk, so the rules run on the part of a core the
//! chunk path leaves idle (dedup and the sends are sequential) instead of adding to each chunk's
//! time (RESULTS.md §17). A bounded queue holds the chunk path back when the stage falls behind.
//!
//! **Why no alert is lost.** Before any batch closes, the run loop passes a *barrier*
//! ([`AlertStage::barrier`]): the stage answers only once it has run every chunk handed to it
//! before, sent the summaries of what the rate limit held back and had them confirmed, and it
//! answers with every alert delivery since the previous barrier. Each delivery then joins the open
//! batch of its evaluation's partition: the batches are taken only after the barrier, so an
//! evaluation's batch is still open when its alert's delivery arrives. A batch commits only once
//! its deliveries are confirmed (see [`super::commit`]), so a crash before the commit replays the
//! evaluation and sends its alert again with the same id, and a crash after it finds the alert on
//! the topic.
//!
//! Only bad reviews reach the rules (a few in a hundred evaluations, often far fewer), so the stage
//! re-runs the one [`Processor`] over just those messages (copied out of the consumer's buffers)
//! to build their micro-batch instead of slicing it out of the batch's builders, which keep filling
//! until the flush.

use arrow::array::RecordBatch;
use rdkafka::producer::DeliveryFuture;
use tokio::sync::{mpsc, oneshot};

use super::partition::Tp;
use super::EngineError;
use crate::analytics::alerts::{load_history, AlertError, AlertRules, RULES};
use crate::config::IngestConfig;
use crate::sink::alerts::AlertSink;
use crate::sink::parquet::EvaluationRows;
use crate::telemetry::Stats;
use crate::transform::Processor;

/// Chunks the stage may be behind the chunk path by before handing it one more waits.
const QUEUE_CHUNKS: usize = 4;

/// An accepted bad review on its way to the rules.
#[derive(Debug, Clone)]
pub struct Review {
    pub partition: i32,
    pub offset: i64,
    pub payload: Vec<u8>,
}

/// An alert's delivery, with the partition whose batch must wait for it.
pub type Delivery = (Tp, DeliveryFuture);

enum Job {
    /// One chunk's accepted bad reviews of one stream, in the order dedup accepted them.
    Chunk {
        stream: usize,
        reviews: Vec<Review>,
        now_us: i64,
    },
    /// Every chunk before this one run and their alerts sent; the summaries of what the rate limit
    /// held back confirmed; the deliveries since the last barrier back through `reply`.
    Barrier {
        now_us: i64,
        reply: oneshot::Sender<Vec<Delivery>>,
    },
}

/// The run loop's handle on the alert task.
pub struct AlertStage {
    jobs: mpsc::Sender<Job>,
    /// The task, until its outcome has been taken (it ends at its first error).
    task: Option<tokio::task::JoinHandle<Result<(), EngineError>>>,
    topic: String,
}

impl AlertStage {
    /// Starts the alert task of an ingest configuration, if alerts are enabled: the rules planned
    /// once, their history loaded from the lake.
    pub async fn start(
        config: &IngestConfig,
        lake: &crate::lake::LakeRoot,
        stats: std::sync::Arc<Stats>,
    ) -> Result<Option<Self>, EngineError> {
        let Some(alerting) = Alerting::from_config(config, lake).await? else {
            return Ok(None);
        };
        let topic = alerting.sink.topic().to_owned();
        let (jobs, queue) = mpsc::channel(QUEUE_CHUNKS);
        let task = tokio::spawn(serve(alerting, queue, stats));
        Ok(Some(Self {
            jobs,
            task: Some(task),
            topic,
        }))
    }

    /// Hands a chunk's accepted bad reviews of one stream to the rules. Waits only while the stage
    /// is `QUEUE_CHUNKS` (4) chunks behind; fails with the stage's error if it stopped.
    pub async fn evaluate(
        &mut self,
        stream: usize,
        reviews: Vec<Review>,
        now_us: i64,
    ) -> Result<(), EngineError> {
        if reviews.is_empty() {
            return Ok(());
        }
        let job = Job::Chunk {
            stream,
            reviews,
            now_us,
        };
        if self.jobs.send(job).await.is_err() {
            return Err(self.failure().await);
        }
        Ok(())
    }

    /// Waits until every chunk handed over so far has been run and its alerts sent, and the
    /// summaries of the rate limit's held alerts are confirmed; returns the alert deliveries since
    /// the last barrier. Called before any batch closes (see the module's documentation).
    pub async fn barrier(&mut self, now_us: i64) -> Result<Vec<Delivery>, EngineError> {
        let started = std::time::Instant::now();
        let (reply, answer) = oneshot::channel();
        if self
            .jobs
            .send(Job::Barrier { now_us, reply })
            .await
            .is_err()
        {
            return Err(self.failure().await);
        }
        match answer.await {
            Ok(deliveries) => {
                crate::telemetry::alert_barrier_waited(started.elapsed());
                Ok(deliveries)
            }
            Err(_) => Err(self.failure().await),
        }
    }

    /// The alerts topic, for confirming deliveries with [`crate::sink::alerts::confirm`].
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Why the task stopped.
    async fn failure(&mut self) -> EngineError {
        match self.task.take() {
            Some(task) => match task.await {
                Ok(Err(error)) => error,
                Ok(Ok(())) => EngineError::AlertStageStopped,
                Err(join) => EngineError::Task(join),
            },
            None => EngineError::AlertStageStopped,
        }
    }
}

/// The alert task: runs the jobs in order until the run loop drops its handle, or the first error.
async fn serve(
    mut alerting: Alerting,
    mut queue: mpsc::Receiver<Job>,
    stats: std::sync::Arc<Stats>,
) -> Result<(), EngineError> {
    let mut deliveries = Vec::new();
    while let Some(job) = queue.recv().await {
        match job {
            Job::Chunk {
                stream,
                reviews,
                now_us,
            } => {
                alerting
                    .on_chunk(stream, &reviews, now_us, &stats, &mut deliveries)
                    .await?;
            }
            Job::Barrier { now_us, reply } => {
                // Chunks without bad reviews never reach the task, but every flush passes here:
                // the look-back is read again on time even while no bad review arrives.
                alerting.refresh_history(now_us).await;
                alerting.before_commit(now_us, &stats).await?;
                // A run loop that stopped waiting (shutting down) no longer needs them.
                let _ = reply.send(std::mem::take(&mut deliveries));
            }
        }
    }
    Ok(())
}

/// The alert rules and where their alerts go: the alert task's state.
struct Alerting {
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
    async fn from_config(
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

    /// Runs the rules over a chunk's accepted bad reviews of one stream and produces their alerts; adds each
    /// delivery, with its partition, to `deliveries`.
    async fn on_chunk(
        &mut self,
        stream: usize,
        reviews: &[Review],
        now_us: i64,
        stats: &Stats,
        deliveries: &mut Vec<Delivery>,
    ) -> Result<(), EngineError> {
        self.refresh_history(now_us).await;
        let started = std::time::Instant::now();
        let mut rows = EvaluationRows::with_capacity(reviews.len());
        for review in reviews {
            // Already validated once with the same `now_us`: it cannot fail now.
            let _ = self.processor.append_row(
                &review.payload,
                review.partition,
                review.offset,
                now_us,
                &mut rows,
            );
        }
        let batch = rows.into_batch()?;
        let built = started.elapsed();
        let alerts = self.rules.evaluate(&batch, now_us).await?;
        let evaluated = started.elapsed();
        for alert in &alerts {
            if let Some(delivery) = self.sink.send(alert, stats).await? {
                let tp = Tp {
                    stream,
                    partition: alert.source.partition,
                };
                deliveries.push((tp, delivery));
            }
        }
        // Where a chunk's alert time goes, for the next time it is too much (RESULTS.md §16).
        tracing::trace!(
            rows = reviews.len(),
            alerts = alerts.len(),
            build_us = built.as_micros() as u64,
            evaluate_us = (evaluated - built).as_micros() as u64,
            send_us = (started.elapsed() - evaluated).as_micros() as u64,
            "alert stage"
        );
        Ok(())
    }

    /// Before any batch commits: every alert the rate limit held back so far goes out in summaries,
    /// confirmed.
    async fn before_commit(&mut self, now_us: i64, stats: &Stats) -> Result<(), EngineError> {
        let held = self.sink.send_held(now_us, stats).await?;
        self.sink.confirm(held).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rdkafka::mocking::MockCluster;

    use super::*;
    use crate::transform::dedup::DedupState;
    use crate::transform::{process_one, Message, Outcome};

    const FIXTURE: &str = include_str!("../../tests/it/fixtures/alerts.ndjson");
    const SECRET: &str = "alerting-stage-test-secret";

    fn now_us() -> i64 {
        chrono::DateTime::parse_from_rfc3339("2026-11-25T09:00:00+08:00")
            .unwrap()
            .timestamp_micros()
    }

    /// The fixture's accepted lines, as the chunk path hands them over (deduplicated), each with a
    /// partition of its own so that deliveries must find their way back to the right batch.
    fn accepted(config: &IngestConfig) -> Vec<Review> {
        let processor = Processor::from_config(config);
        let mut dedup = DedupState::default();
        let stats = Stats::default();
        let mut reviews = Vec::new();
        for (offset, line) in FIXTURE.lines().enumerate() {
            let message = Message {
                offset: offset as i64,
                key: None,
                payload: line.as_bytes(),
            };
            let partition = (offset % 3) as i32;
            let (outcome, _) =
                process_one(&processor, message, partition, now_us(), &mut dedup, &stats);
            if outcome == Outcome::Accepted {
                reviews.push(Review {
                    partition,
                    offset: offset as i64,
                    payload: line.as_bytes().to_vec(),
                });
            }
        }
        reviews
    }

    /// The same reviews through the rules directly, a chunk each: how many alerts there must be.
    async fn expected_alerts(config: &IngestConfig, reviews: &[Review]) -> Vec<(Tp, String)> {
        let processor = Processor::from_config(config);
        let policies = Arc::new(config.policy.load().unwrap());
        let mut rules = AlertRules::new(RULES, Vec::new(), policies).await.unwrap();
        let mut alerts = Vec::new();
        for review in reviews {
            let mut rows = EvaluationRows::with_capacity(1);
            processor
                .append_row(
                    &review.payload,
                    review.partition,
                    review.offset,
                    now_us(),
                    &mut rows,
                )
                .unwrap();
            for alert in rules
                .evaluate(&rows.into_batch().unwrap(), now_us())
                .await
                .unwrap()
            {
                let tp = Tp {
                    stream: STREAM,
                    partition: review.partition,
                };
                alerts.push((tp, alert.id));
            }
        }
        alerts.sort();
        alerts
    }

    /// The stream index the test hands its chunks in as: not 0, so a lost index shows.
    const STREAM: usize = 2;

    /// An ingest configuration with alerts on, over `brokers` and a lake in `lake`.
    fn config(brokers: String, lake: &std::path::Path) -> IngestConfig {
        let mut config = IngestConfig::default();
        config.kafka.brokers = brokers;
        config.lake.path = crate::lake::LakeLocation::Local(lake.to_owned());
        config.identity.secret = Some(SECRET.into());
        config.alerts.enabled = true;
        // These tests are about the barrier, not about storms.
        config.alerts.max_per_minute = 100_000;
        config
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_barrier_answers_with_the_deliveries_of_every_chunk_handed_over_before_it() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("alerts", 1, 1).unwrap();
        let lake = tempfile::tempdir().unwrap();
        let config = config(cluster.bootstrap_servers(), lake.path());
        let root = crate::lake::LakeRoot::open(&config.lake.path, &config.lake.storage).unwrap();

        let reviews = accepted(&config);
        assert!(reviews.len() > 5, "the fixture should have bad reviews");
        let expected = expected_alerts(&config, &reviews).await;
        assert!(!expected.is_empty(), "the fixture should fire rules");

        let stats = Arc::new(Stats::default());
        let mut stage = AlertStage::start(&config, &root, stats.clone())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stage.topic(), "alerts");
        // One chunk a review, handed over without waiting for any of them to run.
        for review in &reviews {
            stage
                .evaluate(STREAM, vec![review.clone()], now_us())
                .await
                .unwrap();
        }
        let deliveries = stage.barrier(now_us()).await.unwrap();
        let mut delivered = Vec::new();
        for (tp, delivery) in deliveries {
            let delivered_to = delivery.await.unwrap().unwrap();
            assert_eq!(
                delivered_to.partition, 0,
                "the alerts topic has one partition"
            );
            delivered.push(tp);
        }
        delivered.sort();
        let mut want: Vec<Tp> = expected.iter().map(|(tp, _)| *tp).collect();
        want.sort();
        assert_eq!(
            delivered, want,
            "every alert, each with its evaluation's partition"
        );

        // Nothing handed over since: the next barrier has nothing to wait for.
        assert!(stage.barrier(now_us()).await.unwrap().is_empty());
        // An empty chunk is no job at all.
        stage.evaluate(STREAM, Vec::new(), now_us()).await.unwrap();
        assert!(stage.barrier(now_us()).await.unwrap().is_empty());
    }

    /// The stage fails on its own task (here: every alert is larger than the producer takes). The
    /// run loop learns of it at its next hand-over or barrier, with the stage's own error, instead
    /// of waiting for an answer that never comes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_stage_reports_its_error_and_never_leaves_the_run_loop_waiting() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("alerts", 1, 1).unwrap();
        let lake = tempfile::tempdir().unwrap();
        let mut config = config(cluster.bootstrap_servers(), lake.path());
        // librdkafka's smallest limit: no alert fits, and the producer refuses it at once.
        config
            .kafka
            .properties
            .insert("message.max.bytes".into(), "1000".into());
        let root = crate::lake::LakeRoot::open(&config.lake.path, &config.lake.storage).unwrap();
        let reviews = accepted(&config);
        let mut stage = AlertStage::start(&config, &root, Arc::new(Stats::default()))
            .await
            .unwrap()
            .unwrap();
        let outcome = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            for review in &reviews {
                stage
                    .evaluate(STREAM, vec![review.clone()], now_us())
                    .await?;
            }
            stage.barrier(now_us()).await.map(|_| ())
        })
        .await
        .expect("the run loop was left waiting");
        let error = outcome.expect_err("no alert can be produced");
        assert!(
            matches!(error, EngineError::AlertSink(_)),
            "the stage's own error: {error}"
        );
        // Later calls fail too, without waiting.
        assert!(stage.barrier(now_us()).await.is_err());
    }
}
