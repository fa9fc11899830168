//! The run loop: receive chunks of messages, admit them by position, hand them to the stages, flush
//! batches, and act on partition moves and fencing.
//!
//! Where the time goes, and how it overlaps: large chunks of messages are decoded, validated and
//! keyed on every core; dedup runs in offset order on the pipeline's task; a closed batch is encoded
//! to Parquet and committed (dead letters and alerts confirmed, files into the lake, retried while
//! the lake refuses them) by a task of its own while the next batch fills. A partition whose
//! commit waits holds up only itself: once its next batch is full it stops fetching
//! ([`Step::Hold`]) until the commit ends, and the other partitions go on.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::{Offset, TopicPartitionList};

use super::alerting::{AlertStage, Review};
use super::commit::{commit_batch, commit_offsets, Committed};
use super::partition::{
    admit, check_resume, full_batches, next_step, retake_delay, Admission, Batch, Committing,
    Cursor, Encoding, Parked, PartitionState, ResumeCheck, SeekTo, Step, Tp,
};
use super::recovery::{recover_partition, DedupScope};
use super::{today, EngineError};
use crate::config::IngestConfig;
use crate::lake::{BatchRange, Lake, LakeRoot};
use crate::sink::dlq::{DeadLetters, SourcePosition};
use crate::sink::parquet::TableError;
use crate::source::kafka::{self, IngestContext, PartitionEvent};
use crate::stream::AnyStream;
use crate::telemetry::{Stats, StatsSnapshot};
use crate::transform::{build_parallel, prepare_parallel, Message, Notice};

/// How long `recv` waits before the loop looks at timers (flush deadlines, idleness).
const TICK: Duration = Duration::from_millis(100);
/// How often an idle run checks whether the group has committed the whole topic.
const IDLE_CHECK_EVERY: Duration = Duration::from_secs(1);
/// Most messages taken from the consumer at once (only those already fetched: never waits for more).
const CHUNK: usize = 8192;

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
    let root = LakeRoot::open(&config.lake.path, &config.lake.storage)?;
    let reviews = match &config.streams.workflow_topic {
        Some(_) => {
            let reviews = crate::stream::workflow::load_registry(
                &root,
                config.dedup.window_days,
                super::now_us(),
            )
            .await?;
            tracing::info!(
                bad_reviews = reviews.len(),
                "workflow registry loaded from the lake"
            );
            Some(reviews)
        }
        None => None,
    };
    let sources = Source::all(&config, &root, reviews.clone())?;
    let context = IngestContext::default();
    let consumer = Arc::new(kafka::consumer(&config.kafka, context.clone())?);
    let topics: Vec<&str> = sources.iter().map(|s| s.topic.as_str()).collect();
    consumer.subscribe(&topics)?;
    tracing::info!(topics = ?topics, group = %config.kafka.group, lake = %root, "ingest started");

    let alerting = AlertStage::start(&config, &root, stats.clone()).await?;
    let workers = crate::parallel::workers();
    let ingest_throttle = config
        .lake
        .max_events_per_second
        .map(super::throttle::Throttle::new);
    let compaction = background_compaction(&config, &sources);
    let analytics = super::analyze::background_analytics(&config, &root, stats.clone());
    let mut ingest = Ingest {
        workers,
        config,
        consumer: consumer.clone(),
        context,
        sources,
        alerting,
        stats: stats.clone(),
        partitions: HashMap::new(),
        parked: HashMap::new(),
        fence_streaks: HashMap::new(),
        last_eviction: Instant::now(),
        reviews,
        throttle: ingest_throttle,
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
                    if ingest.fully_committed().await? {
                        tracing::info!("topic idle and fully committed, finishing");
                        break;
                    }
                }
            }
        }
        ingest.commit_finished().await?;
        ingest.advance().await?;
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

/// One stream as this run consumes it: its topic, its stages, its table and its dead letters.
struct Source {
    topic: String,
    stream: Arc<dyn AnyStream>,
    lake: Lake,
    dead_letters: DeadLetters,
}

impl Source {
    /// The streams the configuration runs, each with its lake table and dead-letter topic.
    fn all(
        config: &IngestConfig,
        root: &LakeRoot,
        reviews: Option<Arc<crate::stream::workflow::BadReviews>>,
    ) -> Result<Vec<Source>, EngineError> {
        crate::stream::configured(config, root, reviews)
            .into_iter()
            .map(|c| {
                Ok(Source {
                    lake: Lake::open(root, c.stream.table()),
                    dead_letters: DeadLetters::for_topic(config, c.dlq_topic)?,
                    topic: c.topic,
                    stream: c.stream,
                })
            })
            .collect()
    }
}

/// Compacts every stream's table and refreshes its dedup snapshots every `lake.compact_every`, as
/// another writer beside this run (see [`crate::lake::compact`]); a failed round is logged and
/// retried at the next one, never fatal to ingest.
fn background_compaction(
    config: &IngestConfig,
    sources: &[Source],
) -> Option<tokio::task::JoinHandle<()>> {
    let every = config.lake.compact_every;
    if every.is_zero() {
        return None;
    }
    let tables: Vec<(Lake, crate::stream::DedupRule)> = sources
        .iter()
        .map(|s| (s.lake.another_writer(), s.stream.dedup()))
        .collect();
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
            for (lake, rule) in &tables {
                match super::compact_lake(lake, *rule, &options, window_days).await {
                    Ok(summary) => tracing::info!(
                        table = lake.table(),
                        compactions = summary.compaction.compactions,
                        files_replaced = summary.compaction.files_replaced,
                        files_after = summary.compaction.files_after,
                        snapshots = summary.snapshots_written,
                        elapsed_ms = summary.compaction.elapsed_ms,
                        "background compaction"
                    ),
                    Err(error) => tracing::warn!(
                        table = lake.table(),
                        %error,
                        "background compaction failed; retried next round"
                    ),
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
    /// The streams of this run; a [`Tp`]'s `stream` indexes it.
    sources: Vec<Source>,
    /// The alert stage's task, unless alerts are disabled.
    alerting: Option<AlertStage>,
    stats: Arc<Stats>,
    partitions: HashMap<Tp, PartitionState>,
    /// Assigned partitions left to another writer for a while (see [`Parked`]).
    parked: HashMap<Tp, Parked>,
    /// Fences in a row per partition, reset by a commit of ours (what [`retake_delay`] grows with).
    fence_streaks: HashMap<Tp, u32>,
    last_eviction: Instant,
    /// The workflow's registry of bad reviews, evicted with the dedup window like the dedup state.
    reviews: Option<Arc<crate::stream::workflow::BadReviews>>,
    /// `lake.max_events_per_second`, if set.
    throttle: Option<super::throttle::Throttle>,
}

impl Ingest {
    /// The stream a topic belongs to.
    fn stream_of(&self, topic: &str) -> Option<usize> {
        self.sources.iter().position(|s| s.topic == topic)
    }

    /// Applies partition moves; returns whether anything moved.
    async fn apply_rebalance(&mut self) -> Result<bool, EngineError> {
        let events = self.context.take_events();
        let moved = !events.is_empty();
        for event in events {
            match event {
                PartitionEvent::Revoked(topic, partition) => {
                    let Some(stream) = self.stream_of(&topic) else {
                        continue;
                    };
                    let tp = Tp { stream, partition };
                    // Dropping the open batch is safe: it is neither in the lake nor in the
                    // group's offsets, and the partition's next owner replays it. A batch still
                    // committing goes on in its task; the lake's log makes it land before the next
                    // owner's claim or fences it (see below).
                    self.parked.remove(&tp);
                    self.fence_streaks.remove(&tp);
                    let Some(state) = self.partitions.remove(&tp) else {
                        continue;
                    };
                    if let Some(batch) = state.batch {
                        tracing::info!(
                            topic,
                            partition,
                            first_offset = batch.first_offset,
                            "revoked with an open batch; the next owner replays it"
                        );
                    }
                    if let Some(committing) = state.committing {
                        // Left to finish on its own, as a stalled writer would: it lands before
                        // the next owner's claim (which then resumes after it) or is fenced by it.
                        tracing::info!(
                            topic,
                            partition,
                            first_offset = committing.range.first_offset,
                            last_offset = committing.range.last_offset,
                            "revoked while a batch commits; the lake's log decides whether it lands"
                        );
                    }
                }
                PartitionEvent::Assigned(topic, partition) => {
                    let Some(stream) = self.stream_of(&topic) else {
                        continue;
                    };
                    let tp = Tp { stream, partition };
                    if self.parked.remove(&tp).is_some() {
                        self.pause(tp, false)?;
                    }
                    self.recover(tp).await?;
                }
            }
        }
        Ok(moved)
    }

    /// Recovers a partition from the lake and claims it: rolls back a crashed batch, finds the
    /// resume offset, and rebuilds the dedup state from the rows the lake holds.
    async fn recover(&mut self, tp: Tp) -> Result<(), EngineError> {
        let source = &self.sources[tp.stream];
        let started = Instant::now();
        let recovered = recover_partition(
            &source.lake,
            source.stream.dedup(),
            &source.topic,
            tp.partition,
            self.config.dedup.window_days,
            DedupScope::Partition,
        )
        .await?;
        let (recovery, dedup) = (recovered.recovery, recovered.dedup);
        tracing::info!(
            topic = %source.topic,
            partition = tp.partition,
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
        crate::telemetry::recovery_took(started.elapsed());
        let cursor = self
            .check_broker_end(tp, Cursor::recovered(recovery.next_offset))
            .await?;
        self.partitions.insert(
            tp,
            PartitionState {
                cursor,
                committed: recovery.next_offset,
                lease: recovery.lease,
                dedup,
                batch: None,
                committing: None,
                held: false,
            },
        );
        Ok(())
    }

    /// Stops the run when the broker's log of a partition ends before the lake's position (see
    /// [`check_resume`]), or reads it from its beginning when the operator accepts that.
    async fn check_broker_end(&self, tp: Tp, cursor: Cursor) -> Result<Cursor, EngineError> {
        let topic = &self.sources[tp.stream].topic;
        let partition = tp.partition;
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
                    topic,
                    partition,
                    lake_position,
                    broker_end = end,
                    "the broker's log ends before the lake's position; reading it from its beginning (accept_offset_reset)"
                );
                Ok(Cursor::recovered(None))
            }
        }
    }

    /// Processes a chunk of messages: admission by position, then each stream's runs decoded,
    /// validated and keyed (on every core when the chunk is large), dedup in offset order, dead
    /// letters, alerts, and the flush of batches that are full.
    async fn handle(
        &mut self,
        chunk: Vec<KafkaResult<BorrowedMessage<'_>>>,
    ) -> Result<(), EngineError> {
        if let Some(throttle) = &self.throttle {
            throttle.admit(chunk.len()).await;
        }
        let mut runs: Vec<(Tp, Vec<Message<'_>>)> = Vec::new();
        let mut sought: Vec<Tp> = Vec::new();
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
            let Some(stream) = self.stream_of(message.topic()) else {
                continue;
            };
            let tp = Tp { stream, partition };
            if sought.contains(&tp) {
                continue;
            }
            let Some(state) = self.partitions.get_mut(&tp) else {
                tracing::debug!(
                    topic = message.topic(),
                    partition,
                    offset,
                    "message of a partition no longer assigned"
                );
                continue;
            };
            let accept_reset = self.config.kafka.accept_offset_reset;
            match admit(&mut state.cursor, offset, accept_reset) {
                Admission::Seek(to) => {
                    tracing::info!(topic = message.topic(), partition, offset, to = ?to, "moving the consumer to where the lake ends");
                    sought.push(tp);
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
                        topic: message.topic().to_owned(),
                        partition,
                        lake_position,
                        broker_offset: offset,
                    });
                }
                Admission::AdoptedReset { lake_position } => {
                    tracing::warn!(
                        topic = message.topic(),
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
                        topic = message.topic(),
                        partition,
                        expected,
                        received = offset,
                        "offset gap: records between were not delivered"
                    );
                    self.stats
                        .offset_gap(u64::try_from(offset - expected).unwrap_or(0));
                }
                Admission::Process => {}
            }
            let message = Message {
                offset,
                key: message.key(),
                payload: message.payload().unwrap_or_default(),
            };
            match runs.iter_mut().find(|(t, _)| *t == tp) {
                Some((_, run)) => run.push(message),
                None => runs.push((tp, vec![message])),
            }
        }
        // A run may have lost its partition to a seek after its first messages were admitted.
        runs.retain(|(tp, run)| !run.is_empty() && !sought.contains(tp));
        if runs.is_empty() {
            return Ok(());
        }

        let now = super::now_us();
        let mut rejections = Vec::new();
        let mut bad_reviews: Vec<(Tp, Message<'_>)> = Vec::new();
        for (index, source) in self.sources.iter().enumerate() {
            let slices: Vec<(i32, &[Message<'_>])> = runs
                .iter()
                .filter(|(tp, _)| tp.stream == index)
                .map(|(tp, run)| (tp.partition, run.as_slice()))
                .collect();
            if slices.is_empty() {
                continue;
            }
            let (stream, workers) = (source.stream.as_ref(), self.workers);
            let prepared = run_blocking(|| prepare_parallel(stream, &slices, now, workers));
            let mut decided = Vec::with_capacity(prepared.len());
            for part in prepared {
                let tp = Tp {
                    stream: index,
                    partition: part.partition,
                };
                let (Some(state), Some(first), Some(last)) = (
                    self.partitions.get_mut(&tp),
                    part.messages.first(),
                    part.messages.last(),
                ) else {
                    continue;
                };
                let batch = state.batch.get_or_insert_with(|| Batch::new(first.offset));
                batch.last_offset = last.offset;
                batch.bytes += part.messages.iter().map(|m| m.payload.len()).sum::<usize>();
                let part = part.decide(&mut state.dedup, &self.stats, |m, notice| match notice {
                    Notice::Rejected(r) => rejections.push((tp, *m, r)),
                    Notice::AcceptedBadReview => bad_reviews.push((tp, *m)),
                });
                batch.kept += part.kept;
                decided.push((tp, part));
            }
            // The rows of what dedup kept, built on every core.
            let tps: Vec<Tp> = decided.iter().map(|(tp, _)| *tp).collect();
            let parts = decided.into_iter().map(|(_, part)| part).collect();
            let built = run_blocking(|| build_parallel(parts, workers));
            for (tp, rows) in tps.into_iter().zip(built) {
                if let Some(batch) = self.partitions.get_mut(&tp).and_then(|s| s.batch.as_mut()) {
                    batch.parts.push(rows);
                }
            }
        }

        // Alerts first: they are what someone is waiting for. The rules run beside the chunk
        // path; their deliveries join the batches at the next flush's barrier. Only evaluations
        // are bad reviews.
        if let Some(alerting) = self.alerting.as_mut() {
            for index in 0..self.sources.len() {
                let reviews: Vec<Review> = bad_reviews
                    .iter()
                    .filter(|(tp, _)| tp.stream == index)
                    .map(|(tp, m)| Review {
                        partition: tp.partition,
                        offset: m.offset,
                        payload: m.payload.to_vec(),
                    })
                    .collect();
                alerting.evaluate(index, reviews, now).await?;
            }
        }

        for (tp, message, rejection) in rejections {
            let source = &self.sources[tp.stream];
            let position = SourcePosition {
                topic: &source.topic,
                partition: tp.partition,
                offset: message.offset,
            };
            let delivery = source
                .dead_letters
                // Redacted, encrypted or withheld there: never parked in clear.
                .send(message.key, message.payload, &rejection, position)
                .await?;
            if let Some(batch) = self.partitions.get_mut(&tp).and_then(|s| s.batch.as_mut()) {
                batch.dead_letters.push(delivery);
            }
        }

        // Full batches are flushed (or their partitions held) by `advance`, next in the loop.
        Ok(())
    }

    /// The assigned partitions whose state matches.
    fn partitions_where(&self, matches: impl Fn(&PartitionState) -> bool) -> Vec<Tp> {
        self.partitions
            .iter()
            .filter(|(_, s)| matches(s))
            .map(|(tp, _)| *tp)
            .collect()
    }

    /// Moves every partition's open batch on by [`next_step`]: flushes the full ones (once all open
    /// batches together reach the flush bounds: [`full_batches`]) and the due ones,
    /// holds (pauses) a partition whose full batch waits for its previous commit and resumes it
    /// once that ended. Hourly, also forgets dedup keys and reviews older than the window.
    async fn advance(&mut self) -> Result<(), EngineError> {
        let (interval, rows, bytes) = (
            self.config.lake.flush_interval,
            self.config.lake.flush_rows,
            self.config.lake.flush_bytes,
        );
        let full = full_batches(
            self.partitions.iter().filter_map(|(tp, s)| {
                let b = s.batch.as_ref()?;
                Some((*tp, b.kept, b.bytes, s.committing.is_some()))
            }),
            rows,
            bytes,
        );
        let mut flush = Vec::new();
        let mut hold = Vec::new();
        let mut release = Vec::new();
        for (tp, state) in &self.partitions {
            let batch = state
                .batch
                .as_ref()
                .map(|b| (full.contains(tp), b.opened.elapsed() >= interval));
            let step = next_step(batch, state.committing.is_some());
            if step == Step::Flush {
                flush.push(*tp);
            }
            match (step == Step::Hold, state.held) {
                (true, false) => hold.push(*tp),
                (false, true) => release.push(*tp),
                _ => {}
            }
        }
        for (tps, held) in [(hold, true), (release, false)] {
            for tp in tps {
                self.pause(tp, held)?;
                if let Some(state) = self.partitions.get_mut(&tp) {
                    state.held = held;
                }
                tracing::debug!(topic = %self.sources[tp.stream].topic, partition = tp.partition, held, "fetching held while the previous batch commits");
            }
        }
        self.report_health();
        if !flush.is_empty() {
            self.flush(flush).await?;
        }
        if self.last_eviction.elapsed() >= Duration::from_secs(3600) {
            let oldest =
                u16::try_from(today() - i32::from(self.config.dedup.window_days)).unwrap_or(0);
            for state in self.partitions.values_mut() {
                state.dedup.evict_before(oldest);
            }
            if let Some(reviews) = &self.reviews {
                let window_us = i64::from(self.config.dedup.window_days) * 86_400_000_000;
                reviews.evict_given_before(super::now_us() - window_us);
            }
            self.last_eviction = Instant::now();
        }
        Ok(())
    }

    /// Brings what `/ready` and the gauges show up to date with the partitions' state.
    fn report_health(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let held = self.partitions.values().filter(|s| s.held).count();
        crate::telemetry::partitions_backpressured(held);
        crate::telemetry::dedup_keys(self.partitions.values().map(|s| s.dedup.len()).sum());
        let health = &self.stats.health;
        health.joined.store(self.context.joined(), Relaxed);
        health
            .partitions
            .store(self.partitions.len() as u64, Relaxed);
        health.held.store(held as u64, Relaxed);
    }

    /// Commits every open batch and waits until all of them are in the lake (or fenced).
    async fn flush_all(&mut self) -> Result<(), EngineError> {
        loop {
            let committing = self.partitions_where(|s| s.committing.is_some());
            let open = self.partitions_where(|s| s.batch.is_some() && s.committing.is_none());
            if committing.is_empty() && open.is_empty() {
                return Ok(());
            }
            if !open.is_empty() {
                self.flush(open).await?;
            }
            self.settle(self.partitions_where(|s| s.committing.is_some()))
                .await?;
        }
    }

    /// Closes the open batches of the given partitions (whose previous batch has committed) and
    /// starts a task per batch that encodes and commits it, so that processing goes on meanwhile.
    async fn flush(&mut self, tps: Vec<Tp>) -> Result<(), EngineError> {
        // Every alert of the open batches' evaluations is sent, and joins its batch, before any
        // batch closes; what the rate limit held back is summarised and confirmed, so a crash
        // after a commit never loses the count of alerts that batch held back.
        let alerts_topic = match self.alerting.as_mut() {
            Some(alerting) => {
                for (tp, delivery) in alerting.barrier(super::now_us()).await? {
                    // None: the partition was revoked, and its next owner replays the evaluation.
                    if let Some(batch) = self.partitions.get_mut(&tp).and_then(|s| s.batch.as_mut())
                    {
                        batch.alerts.push(delivery);
                    }
                }
                alerting.topic().to_owned()
            }
            None => String::new(),
        };
        let zstd_level = self.config.lake.zstd_level;
        let persistence = self.config.lake.persistence();
        for tp in tps {
            let Some(state) = self.partitions.get_mut(&tp) else {
                continue;
            };
            if state.committing.is_some() {
                continue; // batches of a partition commit in offset order
            }
            let Some(mut batch) = state.batch.take() else {
                continue;
            };
            crate::telemetry::batch_flushed(batch.opened.elapsed());
            let source = &self.sources[tp.stream];
            let range = BatchRange {
                topic: source.topic.clone(),
                partition: tp.partition,
                first_offset: batch.first_offset,
                last_offset: batch.last_offset,
            };
            let dead_letters = std::mem::take(&mut batch.dead_letters);
            let alerts = std::mem::take(&mut batch.alerts);
            let rows = batch.kept as u64;
            let files = tokio::task::spawn_blocking(move || -> Result<_, TableError> {
                Lake::encode_parts(batch.parts, zstd_level)
            });
            let encoding = Encoding {
                range: range.clone(),
                rows,
                dead_letters,
                alerts,
                files,
            };
            let task = tokio::spawn(commit_batch(
                source.lake.clone(),
                source.dead_letters.clone(),
                alerts_topic.clone(),
                state.lease.clone(),
                encoding,
                persistence,
            ));
            state.committing = Some(Committing { range, task });
        }
        Ok(())
    }

    /// Settles the batches whose commit has ended, without waiting for the others.
    async fn commit_finished(&mut self) -> Result<(), EngineError> {
        let finished =
            self.partitions_where(|s| s.committing.as_ref().is_some_and(|c| c.task.is_finished()));
        if finished.is_empty() {
            return Ok(());
        }
        self.settle(finished).await
    }

    /// Waits for the commits of the given partitions and acts on each outcome: the lake's new
    /// position (then offered to the group), or a partition another writer took, left to it for a
    /// while and then recovered again: the lake says where it stands now.
    async fn settle(&mut self, tps: Vec<Tp>) -> Result<(), EngineError> {
        let mut tasks = Vec::new();
        let mut settling = Vec::new();
        for tp in tps {
            if let Some(committing) = self
                .partitions
                .get_mut(&tp)
                .and_then(|s| s.committing.take())
            {
                settling.push(tp);
                tasks.push(committing.task);
            }
        }
        let results = futures::future::join_all(tasks).await;
        let mut fenced = Vec::new();
        for (tp, result) in settling.into_iter().zip(results) {
            match result? {
                Ok(Committed {
                    range,
                    files,
                    bytes,
                    rows,
                    lease,
                }) => {
                    self.stats.batch_committed(files, bytes, rows);
                    self.fence_streaks.remove(&tp);
                    if let Some(state) = self.partitions.get_mut(&tp) {
                        state.committed = Some(range.last_offset + 1);
                        state.lease = lease;
                    }
                }
                Err(EngineError::Lake(e)) if e.is_fenced() => {
                    tracing::warn!(error = %e, "this writer may no longer commit to the partition (another writer took it, or the batch grew too old to commit); the batch is dropped and the partition left for a while");
                    self.stats.partition_fenced();
                    fenced.push(tp);
                }
                Err(e) => return Err(e),
            }
        }
        for tp in fenced {
            // Still assigned to this instance (another group, or the group has not noticed the
            // stall yet). The open batch goes with the old state; the consumer stops fetching the
            // partition until it is retaken from where the lake then ends.
            self.partitions.remove(&tp);
            let streak = self.fence_streaks.entry(tp).or_insert(0);
            *streak = streak.saturating_add(1);
            let streak = *streak;
            let delay = retake_delay(
                self.config.lake.flush_interval,
                streak,
                rand::random::<f64>(),
            );
            tracing::info!(
                topic = %self.sources[tp.stream].topic,
                partition = tp.partition,
                streak,
                retake_in_ms = delay.as_millis() as u64,
                "partition parked"
            );
            self.pause(tp, true)?;
            self.parked.insert(
                tp,
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
        let due: Vec<Tp> = self
            .parked
            .iter()
            .filter(|(_, p)| p.retake_at <= now)
            .map(|(tp, _)| *tp)
            .collect();
        for tp in due {
            self.parked.remove(&tp);
            self.recover(tp).await?;
            self.pause(tp, false)?;
        }
        Ok(())
    }

    /// Stops or restarts fetching one partition. No seek is needed on resume: librdkafka drops what
    /// it had fetched but not delivered, and takes the position after the last message delivered to
    /// this process as the next fetch position (`rd_kafka_toppar_op_pause_resume`).
    fn pause(&self, tp: Tp, pause: bool) -> Result<(), EngineError> {
        let mut list = TopicPartitionList::new();
        list.add_partition(&self.sources[tp.stream].topic, tp.partition);
        if pause {
            self.consumer.pause(&list)?;
        } else {
            self.consumer.resume(&list)?;
        }
        Ok(())
    }

    /// Whether this instance has read every message its partitions hold.
    async fn caught_up(&self) -> Result<bool, EngineError> {
        for (index, source) in self.sources.iter().enumerate() {
            let positions = self
                .partitions
                .iter()
                .filter(|(tp, _)| tp.stream == index)
                .map(|(tp, s)| (tp.partition, s.cursor.position))
                .collect();
            if !kafka::caught_up(self.consumer.clone(), source.topic.clone(), positions).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether the group has committed every stream's whole topic.
    async fn fully_committed(&self) -> Result<bool, EngineError> {
        for source in &self.sources {
            if !kafka::topic_fully_committed(self.consumer.clone(), source.topic.clone()).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Commits the lake's positions to the consumer group.
    fn commit_offsets(&self, mode: CommitMode) {
        commit_offsets(
            self.consumer.as_ref(),
            self.partitions.iter().filter_map(|(tp, s)| {
                s.committed
                    .map(|c| (self.sources[tp.stream].topic.as_str(), tp.partition, c))
            }),
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
