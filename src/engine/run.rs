//! The run loop: receive chunks of messages, admit them by position, hand them to the stages, flush
//! batches, and act on partition moves and fencing.
//!
//! Where the time goes, and how it overlaps: large chunks of messages are decoded, validated and
//! keyed on every core; dedup runs in offset order on the pipeline's task; a closed batch is encoded
//! to Parquet in the background while the next one fills; the lake writes themselves (small, then
//! fsync) run on the pipeline's task, so none is in flight when partitions move.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::{Offset, TopicPartitionList};

use super::alerting::Alerting;
use super::commit::{commit_batch, commit_offsets};
use super::partition::{
    admit, check_resume, retake_delay, Admission, Batch, Cursor, Encoding, Parked, PartitionState,
    ResumeCheck, SeekTo,
};
use super::recovery::{recover_partition, DedupScope};
use super::{today, EngineError};
use crate::config::IngestConfig;
use crate::lake::{BatchRange, Lake};
use crate::sink::dlq::{DeadLetters, SourcePosition};
use crate::sink::parquet::{finish_parts, TableError, EVALUATIONS_TABLE};
use crate::source::kafka::{self, IngestContext, PartitionEvent};
use crate::telemetry::{Stats, StatsSnapshot};
use crate::transform::{decide, Message, Notice, Processor};

/// How long `recv` waits before the loop looks at timers (flush deadlines, idleness).
const TICK: Duration = Duration::from_millis(100);
/// How often an idle run checks whether the group has committed the whole topic.
const IDLE_CHECK_EVERY: Duration = Duration::from_secs(1);
/// Most messages taken from the consumer at once (only those already fetched: never waits for more).
const CHUNK: usize = 8192;
/// Chunks smaller than this are processed on the pipeline's task; larger ones on every core.
const PARALLEL_FROM: usize = 1024;

/// Options of one run that are not configuration of the engine.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// End the run once no message arrived for this long and everything is committed.
    pub exit_when_idle: Option<Duration>,
}

/// Runs the ingest job until `shutdown` resolves (or the topic idles, see [`RunOptions`]), then
/// commits what it holds and returns what it did.
pub async fn run(
    config: IngestConfig,
    options: RunOptions,
    stats: Arc<Stats>,
    shutdown: impl Future<Output = ()>,
) -> Result<StatsSnapshot, EngineError> {
    config.check()?;
    let lake = Lake::open_local(&config.lake.path, EVALUATIONS_TABLE)?;
    let context = IngestContext::default();
    let consumer = Arc::new(kafka::consumer(&config.kafka, context.clone())?);
    let dead_letters = DeadLetters::from_config(&config)?;
    consumer.subscribe(&[&config.kafka.topic])?;
    tracing::info!(topic = %config.kafka.topic, group = %config.kafka.group, lake = %config.lake.path.display(), "ingest started");

    let processor = Processor::from_config(&config);
    let alerting = Alerting::from_config(&config).await?;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let compaction = background_compaction(&config, &lake);
    let analytics = super::analyze::background_analytics(&config, stats.clone());
    let mut ingest = Ingest {
        workers,
        config,
        consumer: consumer.clone(),
        context,
        dead_letters,
        lake,
        processor,
        alerting,
        stats: stats.clone(),
        partitions: HashMap::new(),
        parked: HashMap::new(),
        fence_streaks: HashMap::new(),
        last_eviction: Instant::now(),
    };

    tokio::pin!(shutdown);
    // Every message librdkafka has already fetched, up to CHUNK, in one go.
    let mut messages = consumer.stream().ready_chunks(CHUNK);
    let mut last_activity = Instant::now();
    let mut last_idle_check = Instant::now();
    loop {
        let received = tokio::select! {
            biased;
            () = &mut shutdown => {
                tracing::info!("shutdown requested");
                break;
            }
            received = tokio::time::timeout(TICK, messages.next()) => received,
        };
        // Partition moves first: a message of a partition revoked while the chunk was gathered is
        // dropped below, because its next owner reads it again.
        if ingest.apply_rebalance().await? {
            last_activity = Instant::now();
        }
        match received {
            Ok(Some(chunk)) => {
                last_activity = Instant::now();
                let messages = chunk.len();
                ingest.handle(chunk).await?;
                tracing::trace!(
                    messages,
                    elapsed_us = last_activity.elapsed().as_micros() as u64,
                    "chunk handled"
                );
            }
            Ok(None) => break,
            Err(_elapsed) => {
                let idle = options
                    .exit_when_idle
                    .is_some_and(|idle| last_activity.elapsed() >= idle);
                if idle
                    && last_idle_check.elapsed() >= IDLE_CHECK_EVERY
                    && ingest.caught_up().await?
                {
                    last_idle_check = Instant::now();
                    // Idle here is not enough: partitions may still sit with a member that crashed
                    // and has not yet been replaced. Finish only when the group has committed the
                    // whole topic.
                    ingest.flush_all().await?;
                    ingest.commit_offsets(CommitMode::Sync);
                    if kafka::topic_fully_committed(
                        consumer.clone(),
                        ingest.config.kafka.topic.clone(),
                    )
                    .await?
                    {
                        tracing::info!("topic idle and fully committed, finishing");
                        break;
                    }
                }
            }
        }
        ingest.commit_finished().await?;
        ingest.flush_due().await?;
        ingest.retake_due().await?;
    }
    ingest.flush_all().await?;
    ingest.commit_offsets(CommitMode::Sync);
    consumer.unsubscribe();
    if let Some(compaction) = compaction {
        // Stopping it anywhere is a crash of the compactor, which the next run rolls forward.
        compaction.abort();
    }
    if let Some(analytics) = analytics {
        // Likewise: a refresh saves its state last, and an undelivered outbox is sent next time.
        analytics.abort();
    }
    Ok(stats.snapshot())
}

/// Compacts the lake and refreshes the dedup snapshots every `lake.compact_every`, as another
/// writer beside this run (see [`crate::lake::compact`]); a failed round is logged and retried at
/// the next one, never fatal to ingest.
fn background_compaction(
    config: &IngestConfig,
    lake: &Lake,
) -> Option<tokio::task::JoinHandle<()>> {
    let every = config.lake.compact_every;
    if every.is_zero() {
        return None;
    }
    let lake = lake.another_writer();
    let options = crate::lake::compact::CompactOptions {
        quiet_for: config.lake.compact_quiet_for,
        zstd_level: config.lake.zstd_level,
        ..Default::default()
    };
    let window_days = config.dedup.window_days;
    Some(tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await; // the first tick is immediate: the first round waits one period
        loop {
            ticker.tick().await;
            match super::compact_lake(&lake, &options, window_days).await {
                Ok(summary) => tracing::info!(
                    compactions = summary.compaction.compactions,
                    files_replaced = summary.compaction.files_replaced,
                    files_after = summary.compaction.files_after,
                    snapshots = summary.snapshots_written,
                    elapsed_ms = summary.compaction.elapsed_ms,
                    "background compaction"
                ),
                Err(error) => {
                    tracing::warn!(%error, "background compaction failed; retried next round")
                }
            }
        }
    }))
}

struct Ingest {
    workers: usize,
    config: IngestConfig,
    consumer: Arc<StreamConsumer<IngestContext>>,
    context: IngestContext,
    dead_letters: DeadLetters,
    lake: Lake,
    processor: Processor,
    /// The alert stage, unless alerts are disabled.
    alerting: Option<Alerting>,
    stats: Arc<Stats>,
    partitions: HashMap<i32, PartitionState>,
    /// Assigned partitions left to another writer for a while (see [`Parked`]).
    parked: HashMap<i32, Parked>,
    /// Fences in a row per partition, reset by a commit of ours (what [`retake_delay`] grows with).
    fence_streaks: HashMap<i32, u32>,
    last_eviction: Instant,
}

impl Ingest {
    /// Applies partition moves; returns whether anything moved.
    async fn apply_rebalance(&mut self) -> Result<bool, EngineError> {
        let events = self.context.take_events();
        let moved = !events.is_empty();
        for event in events {
            match event {
                PartitionEvent::Revoked(topic, partition) if topic == self.config.kafka.topic => {
                    // Dropping the open batch, and the one still encoding, is safe: neither is in
                    // the lake nor in the group's offsets, and the partition's next owner replays
                    // them. The encoding task finishes on its own and its files are discarded.
                    self.parked.remove(&partition);
                    self.fence_streaks.remove(&partition);
                    let dropped_batch = self.partitions.remove(&partition).and_then(|s| s.batch);
                    if let Some(batch) = dropped_batch {
                        tracing::info!(
                            partition,
                            first_offset = batch.first_offset,
                            "revoked with an open batch; the next owner replays it"
                        );
                    }
                }
                PartitionEvent::Assigned(topic, partition) if topic == self.config.kafka.topic => {
                    if self.parked.remove(&partition).is_some() {
                        self.pause(partition, false)?;
                    }
                    self.recover(partition).await?;
                }
                _ => {}
            }
        }
        Ok(moved)
    }

    /// Recovers a partition from the lake and claims it: rolls back a crashed batch, finds the
    /// resume offset, and rebuilds the dedup state from the rows the lake holds.
    async fn recover(&mut self, partition: i32) -> Result<(), EngineError> {
        let topic = self.config.kafka.topic.clone();
        let started = Instant::now();
        let recovered = recover_partition(
            &self.lake,
            &topic,
            partition,
            self.config.dedup.window_days,
            DedupScope::Partition,
        )
        .await?;
        let (recovery, dedup) = (recovered.recovery, recovered.dedup);
        tracing::info!(
            partition,
            resume_at = ?recovery.next_offset,
            rolled_back_files = recovery.rolled_back_files.len(),
            dedup_keys = dedup.len(),
            files_read = recovered.files_read,
            snapshot = ?recovered.snapshot,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "partition recovered from the lake"
        );
        self.stats
            .partition_recovered(recovery.rolled_back_files.len(), dedup.len());
        let cursor = self
            .check_broker_end(partition, Cursor::recovered(recovery.next_offset))
            .await?;
        self.partitions.insert(
            partition,
            PartitionState {
                cursor,
                committed: recovery.next_offset,
                lease: recovery.lease,
                dedup,
                batch: None,
                encoding: None,
            },
        );
        Ok(())
    }

    /// Stops the run when the broker's log of a partition ends before the lake's position (see
    /// [`check_resume`]), or reads it from its beginning when the operator accepts that.
    async fn check_broker_end(
        &self,
        partition: i32,
        cursor: Cursor,
    ) -> Result<Cursor, EngineError> {
        let topic = &self.config.kafka.topic;
        let accept = self.config.kafka.accept_offset_reset;
        let Some(lake_position) = cursor.position else {
            return Ok(cursor);
        };
        let end = kafka::partition_end(self.consumer.clone(), topic.clone(), partition).await?;
        match check_resume(Some(lake_position), end, accept) {
            ResumeCheck::Resume => Ok(cursor),
            ResumeCheck::BehindLake => Err(EngineError::TopicBehindLake {
                topic: topic.clone(),
                partition,
                lake_position,
                broker_end: end,
            }),
            ResumeCheck::Adopt => {
                tracing::warn!(
                    partition,
                    lake_position,
                    broker_end = end,
                    "the broker's log ends before the lake's position; reading it from its beginning (accept_offset_reset)"
                );
                Ok(Cursor::recovered(None))
            }
        }
    }

    /// Processes a chunk of messages: admission by position, then decode, validate and key (on
    /// every core when the chunk is large), dedup in offset order, dead letters, and the flush of
    /// batches that are full.
    async fn handle(
        &mut self,
        chunk: Vec<KafkaResult<BorrowedMessage<'_>>>,
    ) -> Result<(), EngineError> {
        let mut runs: Vec<(i32, Vec<Message<'_>>)> = Vec::new();
        let mut sought: Vec<i32> = Vec::new();
        for received in &chunk {
            let message = match received {
                Ok(message) => message,
                Err(e) => {
                    tracing::warn!(error = %e, "kafka consumer error (retrying)");
                    continue;
                }
            };
            let partition = message.partition();
            let offset = message.offset();
            if message.topic() != self.config.kafka.topic || sought.contains(&partition) {
                continue;
            }
            let Some(state) = self.partitions.get_mut(&partition) else {
                tracing::debug!(
                    partition,
                    offset,
                    "message of a partition no longer assigned"
                );
                continue;
            };
            let accept_reset = self.config.kafka.accept_offset_reset;
            match admit(&mut state.cursor, offset, accept_reset) {
                Admission::Seek(to) => {
                    tracing::info!(partition, offset, to = ?to, "moving the consumer to where the lake ends");
                    sought.push(partition);
                    let to = match to {
                        SeekTo::Beginning => Offset::Beginning,
                        SeekTo::Offset(offset) => Offset::Offset(offset),
                    };
                    self.consumer
                        .seek(message.topic(), partition, to, Duration::from_secs(10))?;
                    continue;
                }
                Admission::Reset { lake_position } => {
                    return Err(EngineError::OffsetReset {
                        topic: self.config.kafka.topic.clone(),
                        partition,
                        lake_position,
                        broker_offset: offset,
                    });
                }
                Admission::AdoptedReset { lake_position } => {
                    tracing::warn!(
                        partition,
                        lake_position,
                        broker_offset = offset,
                        "the broker no longer holds the lake's position; adopting its offsets (accept_offset_reset)"
                    );
                }
                Admission::ProcessAfterGap { expected } => {
                    // Offsets can be missing for good reasons (retention, compaction, transaction
                    // markers), but a broker that skips records it still holds loses data.
                    tracing::error!(
                        partition,
                        expected,
                        received = offset,
                        "offset gap: records between were not delivered"
                    );
                    self.stats.offset_gap();
                }
                Admission::Process => {}
            }
            let message = Message {
                offset,
                key: message.key(),
                payload: message.payload().unwrap_or_default(),
            };
            match runs.iter_mut().find(|(p, _)| *p == partition) {
                Some((_, run)) => run.push(message),
                None => runs.push((partition, vec![message])),
            }
        }
        // A run may have lost its partition to a seek after its first messages were admitted.
        runs.retain(|(partition, run)| !run.is_empty() && !sought.contains(partition));
        if runs.is_empty() {
            return Ok(());
        }

        let now = super::now_us();
        let mut rejections = Vec::new();
        let mut bad_reviews: Vec<(i32, Message<'_>)> = Vec::new();
        let total: usize = runs.iter().map(|(_, run)| run.len()).sum();
        if total >= PARALLEL_FROM {
            let slices: Vec<(i32, &[Message<'_>])> =
                runs.iter().map(|(p, run)| (*p, run.as_slice())).collect();
            let (processor, workers) = (&self.processor, self.workers);
            let prepared = run_blocking(|| processor.prepare_parallel(&slices, now, workers));
            for part in prepared {
                let partition = part.partition;
                let (Some(state), Some(first), Some(last)) = (
                    self.partitions.get_mut(&partition),
                    part.messages.first(),
                    part.messages.last(),
                ) else {
                    continue;
                };
                let batch = state.batch.get_or_insert_with(|| Batch::new(first.offset));
                batch.last_offset = last.offset;
                batch.bytes += part.messages.iter().map(|m| m.payload.len()).sum::<usize>();
                let (rows, keep) =
                    part.decide(&mut state.dedup, &self.stats, |m, notice| match notice {
                        Notice::Rejected(r) => rejections.push((partition, *m, r)),
                        Notice::AcceptedBadReview => bad_reviews.push((partition, *m)),
                    });
                batch.kept += keep.true_count();
                batch.parts.push((rows, keep));
            }
        } else {
            for (partition, run) in &runs {
                let (Some(state), Some(first), Some(last)) =
                    (self.partitions.get_mut(partition), run.first(), run.last())
                else {
                    continue;
                };
                let batch = state.batch.get_or_insert_with(|| Batch::new(first.offset));
                batch.last_offset = last.offset;
                batch.bytes += run.iter().map(|m| m.payload.len()).sum::<usize>();
                let results = self
                    .processor
                    .prepare_all(*partition, run, now, &mut batch.rows);
                batch.kept += decide(
                    run,
                    results,
                    &mut state.dedup,
                    &self.stats,
                    &mut batch.keep,
                    |m, notice| match notice {
                        Notice::Rejected(r) => rejections.push((*partition, *m, r)),
                        Notice::AcceptedBadReview => bad_reviews.push((*partition, *m)),
                    },
                );
            }
        }

        // Alerts first: they are what someone is waiting for.
        if let Some(alerting) = self.alerting.as_mut() {
            let deliveries = alerting
                .on_chunk(&self.processor, &bad_reviews, now, &self.stats)
                .await?;
            for (partition, delivery) in deliveries {
                if let Some(batch) = self
                    .partitions
                    .get_mut(&partition)
                    .and_then(|s| s.batch.as_mut())
                {
                    batch.alerts.push(delivery);
                }
            }
        }

        for (partition, message, rejection) in rejections {
            let source = SourcePosition {
                topic: &self.config.kafka.topic,
                partition,
                offset: message.offset,
            };
            let delivery = self
                .dead_letters
                // Redacted, encrypted or withheld there: never parked in clear.
                .send(message.key, message.payload, &rejection, source)
                .await?;
            if let Some(batch) = self
                .partitions
                .get_mut(&partition)
                .and_then(|s| s.batch.as_mut())
            {
                batch.dead_letters.push(delivery);
            }
        }

        let (flush_rows, flush_bytes) = (self.config.lake.flush_rows, self.config.lake.flush_bytes);
        let full: Vec<i32> = runs
            .iter()
            .map(|(p, _)| *p)
            .filter(|p| {
                self.partitions
                    .get(p)
                    .and_then(|s| s.batch.as_ref())
                    .is_some_and(|b| b.is_full(flush_rows, flush_bytes))
            })
            .collect();
        if !full.is_empty() {
            self.flush(full).await?;
        }
        Ok(())
    }

    /// The assigned partitions whose state matches.
    fn partitions_where(&self, matches: impl Fn(&PartitionState) -> bool) -> Vec<i32> {
        self.partitions
            .iter()
            .filter(|(_, s)| matches(s))
            .map(|(p, _)| *p)
            .collect()
    }

    /// Closes every batch whose oldest event has waited `flush_interval`.
    async fn flush_due(&mut self) -> Result<(), EngineError> {
        let interval = self.config.lake.flush_interval;
        let due = self.partitions_where(|s| {
            s.batch
                .as_ref()
                .is_some_and(|b| b.opened.elapsed() >= interval)
        });
        if !due.is_empty() {
            self.flush(due).await?;
        }
        if self.last_eviction.elapsed() >= Duration::from_secs(3600) {
            let oldest =
                u16::try_from(today() - i32::from(self.config.dedup.window_days)).unwrap_or(0);
            for state in self.partitions.values_mut() {
                state.dedup.evict_before(oldest);
            }
            self.last_eviction = Instant::now();
        }
        Ok(())
    }

    /// Closes every open batch and waits until all of them are in the lake.
    async fn flush_all(&mut self) -> Result<(), EngineError> {
        self.flush(self.partitions_where(|s| s.batch.is_some()))
            .await?;
        self.commit_encoded(self.partitions_where(|s| s.encoding.is_some()))
            .await
    }

    /// Closes the open batches of the given partitions and starts encoding them in the background,
    /// so that processing goes on meanwhile. A partition's previous batch is committed first: one
    /// batch per partition is encoding at a time, and batches reach the lake in offset order.
    async fn flush(&mut self, partitions: Vec<i32>) -> Result<(), EngineError> {
        let busy: Vec<i32> = partitions
            .iter()
            .copied()
            .filter(|p| self.partitions.get(p).is_some_and(|s| s.encoding.is_some()))
            .collect();
        if !busy.is_empty() {
            self.commit_encoded(busy).await?;
        }
        let topic = &self.config.kafka.topic;
        let zstd_level = self.config.lake.zstd_level;
        for partition in partitions {
            let Some(state) = self.partitions.get_mut(&partition) else {
                continue;
            };
            let Some(mut batch) = state.batch.take() else {
                continue;
            };
            let range = BatchRange {
                topic: topic.clone(),
                partition,
                first_offset: batch.first_offset,
                last_offset: batch.last_offset,
            };
            let dead_letters = std::mem::take(&mut batch.dead_letters);
            let alerts = std::mem::take(&mut batch.alerts);
            let rows = batch.kept as u64;
            let files = tokio::task::spawn_blocking(move || -> Result<_, TableError> {
                Lake::encode_files(finish_parts(batch.into_parts())?, zstd_level)
            });
            state.encoding = Some(Encoding {
                range,
                rows,
                dead_letters,
                alerts,
                files,
            });
        }
        Ok(())
    }

    /// Commits the batches whose encoding has finished, without waiting for the others.
    async fn commit_finished(&mut self) -> Result<(), EngineError> {
        let finished =
            self.partitions_where(|s| s.encoding.as_ref().is_some_and(|e| e.files.is_finished()));
        if finished.is_empty() {
            return Ok(());
        }
        self.commit_encoded(finished).await
    }

    /// Waits for the encoding batches of the given partitions and commits them to the lake (in
    /// parallel across partitions), then their offsets to the group. The lake is only ever written
    /// here, on the pipeline's task, so no lake write is in flight while partitions move. A
    /// partition another writer took is recovered again: the lake says where it stands now.
    async fn commit_encoded(&mut self, partitions: Vec<i32>) -> Result<(), EngineError> {
        // What the rate limit held back is summarised and confirmed before any batch commits, so a
        // crash after a commit never loses the count of alerts that batch held back.
        let alerts_topic = match self.alerting.as_mut() {
            Some(alerting) => {
                alerting.before_commit(super::now_us(), &self.stats).await?;
                alerting.topic().to_owned()
            }
            None => String::new(),
        };
        let mut jobs = Vec::new();
        for partition in partitions {
            if let Some(state) = self.partitions.get_mut(&partition) {
                if let Some(encoding) = state.encoding.take() {
                    jobs.push(commit_batch(
                        self.lake.clone(),
                        self.dead_letters.clone(),
                        alerts_topic.clone(),
                        state.lease.clone(),
                        encoding,
                    ));
                }
            }
        }
        let mut fenced = Vec::new();
        for result in futures::future::join_all(jobs).await {
            match result {
                Ok(committed) => {
                    self.stats
                        .batch_committed(committed.files, committed.bytes, committed.rows);
                    self.fence_streaks.remove(&committed.range.partition);
                    if let Some(state) = self.partitions.get_mut(&committed.range.partition) {
                        state.committed = Some(committed.range.last_offset + 1);
                        state.lease = committed.lease;
                    }
                }
                Err(EngineError::Lake(e)) if e.is_fenced() => {
                    tracing::warn!(error = %e, "another writer took the partition; its batch is dropped and the partition left to it for a while");
                    self.stats.partition_fenced();
                    if let crate::lake::LakeError::Fenced { partition, .. } = e {
                        fenced.push(partition);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        for partition in fenced {
            // Still assigned to this instance (another group, or the group has not noticed the
            // stall yet). The open batch goes with the old state; the consumer stops fetching the
            // partition until it is retaken from where the lake then ends.
            self.partitions.remove(&partition);
            let streak = self.fence_streaks.entry(partition).or_insert(0);
            *streak = streak.saturating_add(1);
            let streak = *streak;
            let delay = retake_delay(
                self.config.lake.flush_interval,
                streak,
                rand::random::<f64>(),
            );
            tracing::info!(
                partition,
                streak,
                retake_in_ms = delay.as_millis() as u64,
                "partition parked"
            );
            self.pause(partition, true)?;
            self.parked.insert(
                partition,
                Parked {
                    retake_at: Instant::now() + delay,
                },
            );
        }
        self.commit_offsets(CommitMode::Async);
        Ok(())
    }

    /// Claims again the parked partitions whose time has come: the lake says where they stand now.
    async fn retake_due(&mut self) -> Result<(), EngineError> {
        let now = Instant::now();
        let due: Vec<i32> = self
            .parked
            .iter()
            .filter(|(_, p)| p.retake_at <= now)
            .map(|(partition, _)| *partition)
            .collect();
        for partition in due {
            self.parked.remove(&partition);
            self.recover(partition).await?;
            self.pause(partition, false)?;
        }
        Ok(())
    }

    /// Stops or restarts fetching one partition of the topic.
    fn pause(&self, partition: i32, pause: bool) -> Result<(), EngineError> {
        let mut list = TopicPartitionList::new();
        list.add_partition(&self.config.kafka.topic, partition);
        if pause {
            self.consumer.pause(&list)?;
        } else {
            self.consumer.resume(&list)?;
        }
        Ok(())
    }

    /// Whether this instance has read every message its partitions hold.
    async fn caught_up(&self) -> Result<bool, EngineError> {
        let positions = self
            .partitions
            .iter()
            .map(|(p, s)| (*p, s.cursor.position))
            .collect();
        Ok(kafka::caught_up(
            self.consumer.clone(),
            self.config.kafka.topic.clone(),
            positions,
        )
        .await?)
    }

    /// Commits the lake's positions to the consumer group.
    fn commit_offsets(&self, mode: CommitMode) {
        commit_offsets(
            self.consumer.as_ref(),
            &self.config.kafka.topic,
            self.partitions
                .iter()
                .filter_map(|(p, s)| s.committed.map(|c| (*p, c))),
            mode,
        );
    }
}

/// Runs CPU-bound work from the pipeline's task without stalling the runtime's other tasks (on a
/// multi-threaded runtime; a current-thread runtime has nothing else to run meanwhile anyway).
fn run_blocking<R>(work: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}
