//! Committing a closed batch: its dead letters and alerts confirmed, its files in the lake (retried
//! while the lake refuses them), then its offset in the consumer group.
//!
//! A batch's commit runs as a task of its own ([`commit_batch`]), so a partition whose dead letters
//! or lake writes wait (an outage) holds up only itself: the run loop pauses that partition once
//! its next batch is full ([`super::partition::next_step`]) and goes on with the others.

use std::time::Instant;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::partition::Encoding;
use super::EngineError;
use crate::lake::{BatchRange, Lake, LakeError, Lease};
use crate::retry::Persistence;
use crate::sink::dlq::DeadLetters;
use crate::sink::parquet::PartitionKey;

/// A batch in the lake.
#[derive(Debug)]
pub struct Committed {
    pub range: BatchRange,
    pub files: usize,
    pub bytes: u64,
    pub rows: u64,
    /// The writer's lease after the commit.
    pub lease: Lease,
}

/// Waits for a batch's dead letters, its alerts (on `alerts_topic`) and its encoded files, then
/// commits it to the lake. A refused attempt is retried as `persistence` says (the lake's commit
/// goes on where it stopped); a fenced writer is not.
pub async fn commit_batch(
    lake: Lake,
    dead_letters: DeadLetters,
    alerts_topic: String,
    mut lease: Lease,
    encoding: Encoding,
    persistence: Persistence,
) -> Result<Committed, EngineError> {
    let Encoding {
        range,
        rows,
        dead_letters: deliveries,
        alerts,
        files,
    } = encoding;
    dead_letters.confirm(deliveries).await?;
    crate::sink::alerts::confirm(&alerts_topic, alerts).await?;
    let files = files.await??;
    let bytes: u64 = files.iter().map(|(_, b)| b.len() as u64).sum();
    let count = files.len();
    let started = Instant::now();
    commit_files(&lake, &mut lease, &range, files, rows, persistence).await?;
    crate::telemetry::lake_commit_took(lake.table(), started.elapsed());
    tracing::debug!(
        partition = range.partition,
        first = range.first_offset,
        last = range.last_offset,
        rows,
        files = count,
        "batch committed"
    );
    Ok(Committed {
        range,
        files: count,
        bytes,
        rows,
        lease,
    })
}

/// Commits a batch's encoded files to the lake, retrying while the lake refuses them: each
/// attempt goes on where the last one stopped, so a retry never doubles a file. A fenced writer is
/// not retried, and neither is anything once `persistence` gives up.
pub async fn commit_files(
    lake: &Lake,
    lease: &mut Lease,
    range: &BatchRange,
    files: Vec<(PartitionKey, bytes::Bytes)>,
    rows: u64,
    persistence: Persistence,
) -> Result<(), LakeError> {
    let mut attempt = 0;
    let mut failing_since = None;
    loop {
        let error = match lake
            .commit_batch(lease, range.clone(), files.clone(), rows)
            .await
        {
            Ok(_) => {
                if failing_since.is_some() {
                    tracing::info!(table = lake.table(), topic = %range.topic, partition = range.partition, attempts = attempt + 1, "the lake took the batch again");
                }
                return Ok(());
            }
            Err(e) if e.is_fenced() => return Err(e),
            Err(e) => e,
        };
        let since = *failing_since.get_or_insert_with(Instant::now);
        let Some(delay) = persistence.next_delay(attempt, since) else {
            return Err(error);
        };
        tracing::warn!(table = lake.table(), topic = %range.topic, partition = range.partition, error = %error, attempt = attempt + 1, retry_in_ms = delay.as_millis() as u64, "the lake refused the batch; the partition waits and retries");
        crate::telemetry::lake_commit_retried(lake.table());
        tokio::time::sleep(delay).await;
        attempt = attempt.saturating_add(1);
    }
}

/// Commits the lake's positions to the consumer group (for lag monitoring and a fast start). A
/// failure is logged, not fatal: the lake keeps the position.
pub fn commit_offsets<'t, C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
    consumer: &C,
    positions: impl IntoIterator<Item = (&'t str, i32, i64)>,
    mode: CommitMode,
) {
    let mut list = TopicPartitionList::new();
    for (topic, partition, offset) in positions {
        if let Err(e) = list.add_partition_offset(topic, partition, Offset::Offset(offset)) {
            tracing::warn!(error = %e, "offset list");
        }
    }
    if list.count() > 0 {
        tracing::debug!(offsets = ?list.to_topic_map(), "committing offsets to the group");
        if let Err(e) = consumer.commit(&list, mode) {
            tracing::warn!(error = %e, "committing offsets to the group failed; the lake keeps the position");
        }
    }
}
