//! Committing a closed batch: its dead letters and alerts confirmed, its files in the lake (with
//! retries), then its offset in the consumer group.

use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::partition::Encoding;
use super::EngineError;
use crate::lake::{BatchRange, Lake, Lease};
use crate::sink::dlq::DeadLetters;

/// Attempts at committing one batch to the lake before the run fails.
const LAKE_ATTEMPTS: u32 = 5;

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
/// commits it to the lake. A failed attempt is retried (the lake's commit goes on where it stopped);
/// a fenced writer is not.
pub async fn commit_batch(
    lake: Lake,
    dead_letters: DeadLetters,
    alerts_topic: String,
    mut lease: Lease,
    encoding: Encoding,
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
    let mut attempt = 1;
    loop {
        match lake
            .commit_batch(&mut lease, range.clone(), files.clone(), rows)
            .await
        {
            Ok(_) => break,
            Err(e) if e.is_fenced() => return Err(e.into()),
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
    Ok(Committed {
        range,
        files: count,
        bytes,
        rows,
        lease,
    })
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
