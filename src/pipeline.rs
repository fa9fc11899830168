//! The ingest pipeline: Kafka → decode → validate → identity → dedup → lake, with the dead-letter
//! topic beside it. [`run`] is the whole job; the CLI, the demo and the tests drive it directly.
//!
//! Data flows one way. Each assigned Kafka partition has its own state: the offset the lake has
//! reached, the dedup table, and an open batch of rows. A batch is committed (see
//! [`crate::sink::lake`] for the protocol) when it reaches `flush_rows`, when its oldest event has
//! waited `flush_interval`, and at shutdown; only then is the partition's offset committed to Kafka.
//!
//! Where the time goes, and how it overlaps: large chunks of messages are decoded, validated and
//! keyed on every core; dedup runs in offset order on the pipeline's task; a closed batch is encoded
//! to Parquet in the background while the next one fills; the lake writes themselves (small, then
//! fsync) run on the pipeline's task, so none is in flight when partitions move.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, BooleanArray, BooleanBuilder};
use arrow::datatypes::{Int64Type, Int8Type};
use futures::{StreamExt, TryStreamExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::producer::DeliveryFuture;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::IngestConfig;
use crate::sink::dlq::{DeadLetters, DlqError, SourcePosition};
use crate::sink::lake::{BatchRange, DataFile, Lake, LakeError, Recovery};
use crate::sink::parquet::{cst_day, finish_parts, EvaluationRows, TableError, EVALUATIONS_TABLE};
use crate::source::kafka::{self, IngestContext, PartitionEvent};
use crate::telemetry::{Stats, StatsSnapshot};
use crate::transform::dedup::{dedup_key, DedupState};
use crate::transform::validate::AssessNumber;
use crate::transform::{decide, Message, Processor};

/// How long `recv` waits before the loop looks at timers (flush deadlines, idleness).
const TICK: Duration = Duration::from_millis(100);
/// How often an idle run checks whether the group has committed the whole topic.
const IDLE_CHECK_EVERY: Duration = Duration::from_secs(1);
/// Attempts at committing one batch to the lake before the run fails.
const LAKE_ATTEMPTS: u32 = 5;
/// Most messages taken from the consumer at once (only those already fetched: never waits for more).
const CHUNK: usize = 8192;
/// Chunks smaller than this are processed on the pipeline's task; larger ones on every core.
const PARALLEL_FROM: usize = 1024;

/// Errors that stop the pipeline. Bad input never does: it goes to the dead-letter topic.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    DeadLetter(#[from] DlqError),
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("a worker task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

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
) -> Result<StatsSnapshot, PipelineError> {
    config.check()?;
    let lake = Lake::open_local(&config.lake.path, EVALUATIONS_TABLE)?;
    let context = IngestContext::default();
    let consumer = Arc::new(kafka::consumer(&config.kafka, context.clone())?);
    let dead_letters = DeadLetters::new(kafka::producer(&config.kafka)?, config.kafka.dlq_topic());
    consumer.subscribe(&[&config.kafka.topic])?;
    tracing::info!(topic = %config.kafka.topic, group = %config.kafka.group, lake = %config.lake.path.display(), "ingest started");

    let processor = Processor::from_config(&config);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut ingest = Ingest {
        workers,
        config,
        consumer: consumer.clone(),
        context,
        dead_letters,
        lake,
        processor,
        stats: stats.clone(),
        partitions: HashMap::new(),
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
                    if topic_fully_committed(consumer.clone(), ingest.config.kafka.topic.clone())
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
    }
    ingest.flush_all().await?;
    ingest.commit_offsets(CommitMode::Sync);
    consumer.unsubscribe();
    Ok(stats.snapshot())
}

/// One Kafka partition's state on this instance.
struct PartitionState {
    /// Next offset expected; messages below it are already in the lake (or in the open batch).
    position: Option<i64>,
    /// The offset the lake has committed up to (exclusive), for the Kafka commit.
    committed: Option<i64>,
    /// Whether the first message after recovery has been checked against `position`.
    checked: bool,
    dedup: DedupState,
    batch: Option<Batch>,
    /// The previous batch, encoding in the background; not in the lake yet.
    encoding: Option<Encoding>,
}

/// A closed batch whose Parquet files are being encoded.
struct Encoding {
    range: BatchRange,
    rows: u64,
    dead_letters: Vec<DeliveryFuture>,
    files:
        tokio::task::JoinHandle<Result<Vec<(object_store::path::Path, bytes::Bytes)>, TableError>>,
}

/// The open batch of one partition: rows built on the pipeline's task from small chunks, and parts
/// built on every core from large ones, each with the keep mask dedup decided.
struct Batch {
    rows: EvaluationRows,
    keep: BooleanBuilder,
    parts: Vec<(EvaluationRows, BooleanArray)>,
    /// Rows dedup kept, across `rows` and `parts`.
    kept: usize,
    first_offset: i64,
    last_offset: i64,
    opened: Instant,
    dead_letters: Vec<DeliveryFuture>,
}

impl Batch {
    fn new(first_offset: i64) -> Self {
        Self {
            rows: EvaluationRows::new(),
            keep: BooleanBuilder::new(),
            parts: Vec::new(),
            kept: 0,
            first_offset,
            last_offset: first_offset,
            opened: Instant::now(),
            dead_letters: Vec::new(),
        }
    }

    /// Every part of the batch, for [`finish_parts`].
    fn into_parts(mut self) -> Vec<(EvaluationRows, Option<BooleanArray>)> {
        let mut parts: Vec<_> = self.parts.into_iter().map(|(r, k)| (r, Some(k))).collect();
        parts.push((self.rows, Some(self.keep.finish())));
        parts
    }
}

/// What to do with a message, given its partition's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    Process,
    /// Below the lake's position: a replay of what the lake holds.
    AlreadyInLake,
    /// The group's offset was ahead of the lake: read again from the lake's position.
    SeekBack(i64),
}

struct Ingest {
    workers: usize,
    config: IngestConfig,
    consumer: Arc<StreamConsumer<IngestContext>>,
    context: IngestContext,
    dead_letters: DeadLetters,
    lake: Lake,
    processor: Processor,
    stats: Arc<Stats>,
    partitions: HashMap<i32, PartitionState>,
    last_eviction: Instant,
}

impl Ingest {
    /// Applies partition moves; returns whether anything moved.
    async fn apply_rebalance(&mut self) -> Result<bool, PipelineError> {
        let events = self.context.take_events();
        let moved = !events.is_empty();
        for event in events {
            match event {
                PartitionEvent::Revoked(topic, partition) if topic == self.config.kafka.topic => {
                    // Dropping the open batch, and the one still encoding, is safe: neither is in
                    // the lake nor in the group's offsets, and the partition's next owner replays
                    // them. The encoding task finishes on its own and its files are discarded.
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
                    self.recover(partition).await?;
                }
                _ => {}
            }
        }
        Ok(moved)
    }

    /// Recovers a partition from the lake: rolls back a crashed batch, finds the resume offset, and
    /// rebuilds the dedup state from the rows the lake holds.
    async fn recover(&mut self, partition: i32) -> Result<(), PipelineError> {
        let topic = self.config.kafka.topic.clone();
        let started = Instant::now();
        let (recovery, dedup) =
            recover_partition(&self.lake, &topic, partition, self.config.dedup.window_days).await?;
        tracing::info!(
            partition,
            resume_at = ?recovery.next_offset,
            rolled_back_files = recovery.rolled_back_files.len(),
            dedup_keys = dedup.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "partition recovered from the lake"
        );
        self.stats
            .partition_recovered(recovery.rolled_back_files.len(), dedup.len());
        self.partitions.insert(
            partition,
            PartitionState {
                position: recovery.next_offset,
                committed: recovery.next_offset,
                checked: false,
                dedup,
                batch: None,
                encoding: None,
            },
        );
        Ok(())
    }

    /// Processes a chunk of messages: admission by position, then decode, validate and key (on
    /// every core when the chunk is large), dedup in offset order, dead letters, and the flush of
    /// batches that are full.
    async fn handle(
        &mut self,
        chunk: Vec<KafkaResult<BorrowedMessage<'_>>>,
    ) -> Result<(), PipelineError> {
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
            match admit(state, partition, offset) {
                Admission::AlreadyInLake => self.stats.already_in_lake(),
                Admission::SeekBack(position) => {
                    sought.push(partition);
                    self.consumer.seek(
                        message.topic(),
                        partition,
                        Offset::Offset(position),
                        Duration::from_secs(10),
                    )?;
                }
                Admission::Process => {
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
            }
        }
        // A run may have lost its partition to a seek after its first messages were admitted.
        runs.retain(|(partition, run)| !run.is_empty() && !sought.contains(partition));
        if runs.is_empty() {
            return Ok(());
        }

        let now = now_us();
        let mut rejections = Vec::new();
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
                let (rows, keep) = part.decide(&mut state.dedup, &self.stats, |m, r| {
                    rejections.push((partition, *m, r));
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
                let results = self
                    .processor
                    .prepare_all(*partition, run, now, &mut batch.rows);
                batch.kept += decide(
                    run,
                    results,
                    &mut state.dedup,
                    &self.stats,
                    &mut batch.keep,
                    |m, r| rejections.push((*partition, *m, r)),
                );
            }
        }

        for (partition, message, rejection) in rejections {
            let parked = self.processor.keyer().redact_json(message.payload);
            let source = SourcePosition {
                topic: &self.config.kafka.topic,
                partition,
                offset: message.offset,
            };
            let delivery = self
                .dead_letters
                .send(
                    message.key,
                    parked.as_deref().unwrap_or(message.payload),
                    &rejection,
                    source,
                )
                .await?;
            if let Some(batch) = self
                .partitions
                .get_mut(&partition)
                .and_then(|s| s.batch.as_mut())
            {
                batch.dead_letters.push(delivery);
            }
        }

        let flush_rows = self.config.lake.flush_rows;
        let full: Vec<i32> = runs
            .iter()
            .map(|(p, _)| *p)
            .filter(|p| {
                self.partitions
                    .get(p)
                    .and_then(|s| s.batch.as_ref())
                    .is_some_and(|b| b.kept >= flush_rows)
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
    async fn flush_due(&mut self) -> Result<(), PipelineError> {
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
    async fn flush_all(&mut self) -> Result<(), PipelineError> {
        self.flush(self.partitions_where(|s| s.batch.is_some()))
            .await?;
        self.commit_encoded(self.partitions_where(|s| s.encoding.is_some()))
            .await
    }

    /// Closes the open batches of the given partitions and starts encoding them in the background,
    /// so that processing goes on meanwhile. A partition's previous batch is committed first: one
    /// batch per partition is encoding at a time, and batches reach the lake in offset order.
    async fn flush(&mut self, partitions: Vec<i32>) -> Result<(), PipelineError> {
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
            let lake = self.lake.clone();
            let encode_range = range.clone();
            let dead_letters = std::mem::take(&mut batch.dead_letters);
            let rows = batch.kept as u64;
            let files = tokio::task::spawn_blocking(move || -> Result<_, TableError> {
                lake.encode_files(&encode_range, finish_parts(batch.into_parts())?, zstd_level)
            });
            state.encoding = Some(Encoding {
                range,
                rows,
                dead_letters,
                files,
            });
        }
        Ok(())
    }

    /// Commits the batches whose encoding has finished, without waiting for the others.
    async fn commit_finished(&mut self) -> Result<(), PipelineError> {
        let finished =
            self.partitions_where(|s| s.encoding.as_ref().is_some_and(|e| e.files.is_finished()));
        if finished.is_empty() {
            return Ok(());
        }
        self.commit_encoded(finished).await
    }

    /// Waits for the encoding batches of the given partitions and commits them to the lake (in
    /// parallel across partitions), then their offsets to the group. The lake is only ever written
    /// here, on the pipeline's task, so no lake write is in flight while partitions move.
    async fn commit_encoded(&mut self, partitions: Vec<i32>) -> Result<(), PipelineError> {
        let mut jobs = Vec::new();
        for partition in partitions {
            if let Some(encoding) = self
                .partitions
                .get_mut(&partition)
                .and_then(|s| s.encoding.take())
            {
                jobs.push(commit_batch(
                    self.lake.clone(),
                    self.dead_letters.clone(),
                    encoding,
                ));
            }
        }
        let committed = futures::future::try_join_all(jobs).await?;
        for (range, files, bytes, rows) in committed {
            self.stats.batch_committed(files, bytes, rows);
            if let Some(state) = self.partitions.get_mut(&range.partition) {
                state.committed = Some(range.last_offset + 1);
            }
        }
        self.commit_offsets(CommitMode::Async);
        Ok(())
    }

    /// Whether this instance has read every message its partitions hold (a pause in the stream is
    /// not the end of it: the broker may just be slower than the pipeline).
    async fn caught_up(&self) -> Result<bool, PipelineError> {
        let positions: Vec<(i32, Option<i64>)> = self
            .partitions
            .iter()
            .map(|(p, s)| (*p, s.position))
            .collect();
        let consumer = self.consumer.clone();
        let topic = self.config.kafka.topic.clone();
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
        .await?
    }

    /// Commits the lake's positions to the consumer group (for lag monitoring and a fast start).
    fn commit_offsets(&self, mode: CommitMode) {
        let mut list = TopicPartitionList::new();
        for (partition, state) in &self.partitions {
            if let Some(offset) = state.committed {
                if let Err(e) = list.add_partition_offset(
                    &self.config.kafka.topic,
                    *partition,
                    Offset::Offset(offset),
                ) {
                    tracing::warn!(error = %e, "offset list");
                }
            }
        }
        if list.count() > 0 {
            tracing::debug!(offsets = ?list.to_topic_map(), "committing offsets to the group");
            if let Err(e) = self.consumer.commit(&list, mode) {
                tracing::warn!(error = %e, "committing offsets to the group failed; the lake keeps the position");
            }
        }
    }
}

/// Waits for a batch's dead letters and its encoded files, then commits it to the lake (with
/// retries).
async fn commit_batch(
    lake: Lake,
    dead_letters: DeadLetters,
    encoding: Encoding,
) -> Result<(BatchRange, usize, u64, u64), PipelineError> {
    let Encoding {
        range,
        rows,
        dead_letters: deliveries,
        files,
    } = encoding;
    dead_letters.confirm(deliveries).await?;
    let files = files.await??;
    let bytes: u64 = files.iter().map(|(_, b)| b.len() as u64).sum();
    let count = files.len();
    let mut attempt = 1;
    loop {
        match lake.commit_batch(range.clone(), files.clone(), rows).await {
            Ok(_) => break,
            Err(e) if attempt < LAKE_ATTEMPTS => {
                tracing::warn!(error = %e, attempt, partition = range.partition, "lake commit failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                attempt += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
    tracing::debug!(
        partition = range.partition,
        first = range.first_offset,
        last = range.last_offset,
        rows,
        files = count,
        "batch committed"
    );
    Ok((range, count, bytes, rows))
}

/// Recovers one partition from the lake (see [`crate::sink::lake`]): rolls back a batch that never
/// committed, finds where to resume, and rebuilds the dedup state from the rows of the last
/// `window_days` days. Kafka partitions and the offline path's file both start here.
pub async fn recover_partition(
    lake: &Lake,
    topic: &str,
    partition: i32,
    window_days: u16,
) -> Result<(Recovery, DedupState), PipelineError> {
    let recovery = lake.recover(topic, partition).await?;
    let since = today() - i32::from(window_days);
    let dedup =
        load_dedup_state(lake, lake.partition_files(topic, partition, since).await?).await?;
    Ok((recovery, dedup))
}

/// Rebuilds a partition's dedup state from its files in the lake, decoding files in parallel.
pub async fn load_dedup_state(
    lake: &Lake,
    files: Vec<DataFile>,
) -> Result<DedupState, PipelineError> {
    let parallelism = std::thread::available_parallelism().map_or(2, |n| n.get());
    let loaded: Vec<Vec<(u64, u64, u16)>> = futures::stream::iter(files)
        .map(|file| {
            let lake = lake.clone();
            async move {
                let bytes = lake.read(&file.path).await?;
                let path = file.path.to_string();
                let keys =
                    tokio::task::spawn_blocking(move || read_dedup_keys(bytes, file.day, &path))
                        .await??;
                Ok::<_, PipelineError>(keys)
            }
        })
        .buffer_unordered(parallelism)
        .try_collect()
        .await?;
    let mut state = DedupState::with_capacity(loaded.iter().map(Vec::len).sum());
    for (key, fingerprint, day) in loaded.into_iter().flatten() {
        state.insert(key, fingerprint, day);
    }
    Ok(state)
}

/// The dedup entries of one data file: only three columns are decoded.
fn read_dedup_keys(
    bytes: bytes::Bytes,
    day: i32,
    path: &str,
) -> Result<Vec<(u64, u64, u16)>, LakeError> {
    let fail = |source| LakeError::Parquet {
        path: path.to_owned(),
        source,
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(fail)?;
    let mask = ProjectionMask::columns(
        builder.parquet_schema(),
        ["project_no", "assess_number", "event_fingerprint"],
    );
    let reader = builder
        .with_projection(mask)
        .with_batch_size(65_536)
        .build()
        .map_err(fail)?;
    let day = u16::try_from(day).unwrap_or(0);
    let mut keys = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| fail(e.into()))?;
        let (Some(project), Some(number), Some(fp)) = (
            batch
                .column_by_name("project_no")
                .and_then(|c| c.as_string_opt::<i32>()),
            batch
                .column_by_name("assess_number")
                .and_then(|c| c.as_primitive_opt::<Int8Type>()),
            batch
                .column_by_name("event_fingerprint")
                .and_then(|c| c.as_primitive_opt::<Int64Type>()),
        ) else {
            return Err(fail(parquet::errors::ParquetError::General(
                "missing dedup columns".into(),
            )));
        };
        keys.reserve(batch.num_rows());
        for row in 0..batch.num_rows() {
            if project.is_null(row) {
                continue;
            }
            let Some(assess_number) = AssessNumber::from_code(i64::from(number.value(row))) else {
                continue;
            };
            keys.push((
                dedup_key(project.value(row), assess_number),
                fp.value(row) as u64,
                day,
            ));
        }
    }
    Ok(keys)
}

/// Whether the group's committed offset of every partition of the topic is at its end.
async fn topic_fully_committed(
    consumer: Arc<StreamConsumer<IngestContext>>,
    topic: String,
) -> Result<bool, PipelineError> {
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
    .await?
}

/// Decides what to do with the message at `offset`, and moves the partition's position past it
/// when it is to be processed. A gap (a broker skipping records it holds) is logged and counted.
fn admit(state: &mut PartitionState, partition: i32, offset: i64) -> Admission {
    if let Some(position) = state.position {
        if offset < position {
            return Admission::AlreadyInLake;
        }
        if offset > position && !state.checked {
            // The group's committed offset is ahead of the lake (offsets reset by hand, or a lake
            // restored from a backup): go back to where the lake ends.
            tracing::warn!(
                partition,
                offset,
                position,
                "seeking back to the lake's position"
            );
            state.checked = true;
            return Admission::SeekBack(position);
        }
        if offset > position {
            // Offsets can be missing for good reasons (retention, compaction, transaction
            // markers), but a broker that skips records it still holds loses data: never silently.
            tracing::error!(
                partition,
                expected = position,
                received = offset,
                "offset gap: records between were not delivered"
            );
            metrics::counter!("haochaping_offset_gaps_total").increment(1);
        }
    }
    state.checked = true;
    state.position = Some(offset + 1);
    Admission::Process
}

/// Runs CPU-bound work from the pipeline's task without stalling the runtime's other tasks (on a
/// multi-threaded runtime; a current-thread runtime has nothing else to run meanwhile anyway).
fn run_blocking<R>(work: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Today's date in China Standard Time, as days since 1970-01-01.
fn today() -> i32 {
    cst_day(now_us())
}
