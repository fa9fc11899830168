//! The ingest pipeline: Kafka → decode → validate → identity → dedup → lake, with the dead-letter
//! topic beside it. [`run`] is the whole job; the CLI, the demo and the tests drive it directly.
//!
//! Data flows one way. Each assigned Kafka partition has its own state: the offset the lake has
//! reached, the dedup table, and an open batch of rows. A batch is committed (see
//! [`crate::sink::lake`] for the protocol) when it reaches `flush_rows`, when its oldest event has
//! waited `flush_interval`, and at shutdown; only then is the partition's offset committed to Kafka.
//! Encoding and writing of the due batches run in parallel across partitions.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Int64Type, Int8Type};
use futures::{StreamExt, TryStreamExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::DeliveryFuture;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::IngestConfig;
use crate::sink::dlq::{DeadLetters, DlqError, SourcePosition};
use crate::sink::lake::{BatchRange, DataFile, Lake, LakeError, Recovery};
use crate::sink::parquet::{cst_day, EvaluationRows, TableError, EVALUATIONS_TABLE};
use crate::source::kafka::{self, IngestContext, PartitionEvent};
use crate::telemetry::{Stats, StatsSnapshot};
use crate::transform::dedup::{dedup_key, DedupState};
use crate::transform::validate::AssessNumber;
use crate::transform::{Outcome, Processor};

/// How long `recv` waits before the loop looks at timers (flush deadlines, idleness).
const TICK: Duration = Duration::from_millis(100);
/// How often an idle run checks whether the group has committed the whole topic.
const IDLE_CHECK_EVERY: Duration = Duration::from_secs(1);
/// Attempts at committing one batch to the lake before the run fails.
const LAKE_ATTEMPTS: u32 = 5;

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
    let mut ingest = Ingest {
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
    let mut last_activity = Instant::now();
    let mut last_idle_check = Instant::now();
    loop {
        let received = tokio::select! {
            biased;
            () = &mut shutdown => {
                tracing::info!("shutdown requested");
                break;
            }
            received = tokio::time::timeout(TICK, consumer.recv()) => received,
        };
        if ingest.apply_rebalance().await? {
            last_activity = Instant::now();
        }
        match received {
            Ok(Ok(message)) => {
                last_activity = Instant::now();
                ingest.handle(&message).await?;
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "kafka consumer error (retrying)"),
            Err(_elapsed) => {
                let idle = options
                    .exit_when_idle
                    .is_some_and(|idle| last_activity.elapsed() >= idle);
                if idle && last_idle_check.elapsed() >= IDLE_CHECK_EVERY {
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
}

/// The open batch of one partition.
struct Batch {
    rows: EvaluationRows,
    first_offset: i64,
    last_offset: i64,
    opened: Instant,
    dead_letters: Vec<DeliveryFuture>,
}

struct Ingest {
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
                    // Dropping the open batch is safe: its offsets are not committed, and whoever
                    // owns the partition next recovers it from the lake.
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
            },
        );
        Ok(())
    }

    async fn handle(&mut self, message: &BorrowedMessage<'_>) -> Result<(), PipelineError> {
        let partition = message.partition();
        let offset = message.offset();
        if message.topic() != self.config.kafka.topic {
            return Ok(());
        }
        if !self.partitions.contains_key(&partition) {
            self.recover(partition).await?;
        }
        let Some(state) = self.partitions.get_mut(&partition) else {
            return Ok(());
        };
        if let Some(position) = state.position {
            if offset < position {
                self.stats.already_in_lake();
                return Ok(());
            }
            if offset > position && !state.checked {
                // The group's committed offset is ahead of the lake (offsets reset by hand, or a
                // lake restored from a backup): go back to where the lake ends.
                tracing::warn!(
                    partition,
                    offset,
                    position,
                    "seeking back to the lake's position"
                );
                state.checked = true;
                self.consumer.seek(
                    message.topic(),
                    partition,
                    Offset::Offset(position),
                    Duration::from_secs(10),
                )?;
                return Ok(());
            }
        }
        if let Some(position) = state.position.filter(|p| offset > *p) {
            // Offsets can be missing for good reasons (retention, compaction, transaction markers),
            // but a broker that skips records it still holds loses data: never silently.
            tracing::error!(
                partition,
                expected = position,
                received = offset,
                "offset gap: records between were not delivered"
            );
            metrics::counter!("haochaping_offset_gaps_total").increment(1);
        }
        state.checked = true;
        state.position = Some(offset + 1);
        let payload = message.payload().unwrap_or_default();
        self.stats.received(payload.len());

        let flush_rows = self.config.lake.flush_rows;
        let batch = state.batch.get_or_insert_with(|| Batch {
            rows: EvaluationRows::with_capacity(flush_rows.min(1 << 16)),
            first_offset: offset,
            last_offset: offset,
            opened: Instant::now(),
            dead_letters: Vec::new(),
        });
        batch.last_offset = offset;

        let rejection = match self.processor.process(
            payload,
            partition,
            offset,
            now_us(),
            &mut state.dedup,
            &mut batch.rows,
        ) {
            Outcome::Accepted => {
                self.stats.accepted();
                None
            }
            Outcome::Duplicate => {
                self.stats.duplicate();
                None
            }
            Outcome::Rejected(rejection) => Some(rejection),
        };
        if let Some(rejection) = rejection {
            let parked = self.processor.keyer().redact_json(payload);
            let source = SourcePosition {
                topic: message.topic(),
                partition,
                offset,
            };
            let delivery = self
                .dead_letters
                .send(
                    message.key(),
                    parked.as_deref().unwrap_or(payload),
                    &rejection,
                    source,
                )
                .await?;
            batch.dead_letters.push(delivery);
            self.stats.dead_lettered(rejection.reason);
        }
        if batch.rows.len() >= self.config.lake.flush_rows {
            self.flush(vec![partition]).await?;
        }
        Ok(())
    }

    /// Commits every batch whose oldest event has waited `flush_interval`.
    async fn flush_due(&mut self) -> Result<(), PipelineError> {
        let interval = self.config.lake.flush_interval;
        let due: Vec<i32> = self
            .partitions
            .iter()
            .filter(|(_, s)| {
                s.batch
                    .as_ref()
                    .is_some_and(|b| b.opened.elapsed() >= interval)
            })
            .map(|(p, _)| *p)
            .collect();
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

    async fn flush_all(&mut self) -> Result<(), PipelineError> {
        let open: Vec<i32> = self
            .partitions
            .iter()
            .filter(|(_, s)| s.batch.is_some())
            .map(|(p, _)| *p)
            .collect();
        self.flush(open).await
    }

    /// Commits the open batches of the given partitions, in parallel, then their Kafka offsets.
    async fn flush(&mut self, partitions: Vec<i32>) -> Result<(), PipelineError> {
        let topic = self.config.kafka.topic.clone();
        let zstd_level = self.config.lake.zstd_level;
        let mut jobs = Vec::new();
        for partition in partitions {
            if let Some(batch) = self
                .partitions
                .get_mut(&partition)
                .and_then(|s| s.batch.take())
            {
                let range = BatchRange {
                    topic: topic.clone(),
                    partition,
                    first_offset: batch.first_offset,
                    last_offset: batch.last_offset,
                };
                jobs.push(commit_batch(
                    self.lake.clone(),
                    self.dead_letters.clone(),
                    range,
                    batch,
                    zstd_level,
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

/// Confirms a batch's dead letters, encodes its files and commits it to the lake (with retries).
async fn commit_batch(
    lake: Lake,
    dead_letters: DeadLetters,
    range: BatchRange,
    batch: Batch,
    zstd_level: i32,
) -> Result<(BatchRange, usize, u64, u64), PipelineError> {
    dead_letters.confirm(batch.dead_letters).await?;
    let rows = batch.rows.len() as u64;
    let encode_lake = lake.clone();
    let encode_range = range.clone();
    let files = tokio::task::spawn_blocking(move || -> Result<_, TableError> {
        encode_lake.encode_files(&encode_range, batch.rows.finish()?, zstd_level)
    })
    .await??;
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

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Today's date in China Standard Time, as days since 1970-01-01.
fn today() -> i32 {
    cst_day(now_us())
}
