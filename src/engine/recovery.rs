//! Recovery of one partition: the lake's log decides where to resume (see [`crate::lake`]), and
//! the dedup state is rebuilt from the rows the lake holds, so the two always agree.
//!
//! A Kafka partition's rebuild starts from its dedup snapshot when there is one: the snapshot holds
//! the rows of every file numbered below its `upto`, so only the files numbered from there on are
//! read, however old the lake. Recovery writes a new snapshot when it had to read many files, and
//! the compactor refreshes them ([`refresh_snapshots`]). A snapshot that is missing, damaged or of
//! another format is ignored and rebuilt from the Parquet files.

use futures::{StreamExt, TryStreamExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use super::EngineError;
use crate::lake::{DataFile, DataFileName, Lake, LakeError, Recovery};
use crate::stream::DedupRule;
use crate::transform::dedup::DedupState;

/// A recovery that read at least this many files writes a new snapshot, so the next one does not.
pub const SNAPSHOT_AFTER_FILES: usize = 16;

/// A recovered partition: where it resumes, its dedup state, and what the rebuild read.
#[derive(Debug)]
pub struct Recovered {
    pub recovery: Recovery,
    pub dedup: DedupState,
    /// Data files read to rebuild the dedup state.
    pub files_read: usize,
    /// The `upto` of the snapshot the rebuild started from, if one was usable.
    pub snapshot: Option<u64>,
}

/// Recovers one partition from the lake (see [`crate::lake`]): rolls back a batch that never
/// committed, finds where to resume, and rebuilds the dedup state from the rows of the last
/// `window_days` days. Kafka partitions and the offline path's file both start here.
pub async fn recover_partition(
    lake: &Lake,
    rule: DedupRule,
    topic: &str,
    partition: i32,
    window_days: u16,
    dedup_scope: DedupScope,
) -> Result<Recovered, EngineError> {
    let recovery = lake.recover(topic, partition).await?;
    let since = super::today() - i32::from(window_days);
    match dedup_scope {
        DedupScope::Partition => {
            let files: Vec<DataFile> = lake
                .partition_files(topic, partition, since)
                .await?
                .into_iter()
                .filter(|f| DataFileName::parse(&f.path).is_some_and(|n| recovery.counts(&n)))
                .collect();
            let upto = recovery.claimed;
            let (dedup, files_read, snapshot) =
                rebuild_from_snapshot(lake, rule, topic, partition, since, files, upto, |read| {
                    read >= SNAPSHOT_AFTER_FILES
                })
                .await?;
            Ok(Recovered {
                recovery,
                dedup,
                files_read,
                snapshot,
            })
        }
        DedupScope::TopicsStartingWith(prefix) => {
            // Every offline source's rows, so one snapshot per source would not do: read them all.
            // This source's own files only where the claim says they count: a rival run's files
            // of an intent the claim fenced are deleted by that run, and their keys must not
            // make this run drop the lines as duplicates.
            let files = lake
                .files_where(
                    |day| day >= since,
                    |name| name.topic.starts_with(prefix) && recovery.owns_or_counts(name),
                )
                .await?;
            let files_read = files.len();
            let dedup = load_dedup_state(lake, rule, files).await?;
            Ok(Recovered {
                recovery,
                dedup,
                files_read,
                snapshot: None,
            })
        }
    }
}

/// The snapshot's table (evicted to the window) plus the rows of `files` it does not cover. Files
/// numbered below `upto` are settled: when reading them is worth it (`write_when(count)`), the
/// table they make is stored as the new snapshot before the files at or above `upto` are added.
#[allow(clippy::too_many_arguments)]
async fn rebuild_from_snapshot(
    lake: &Lake,
    rule: DedupRule,
    topic: &str,
    partition: i32,
    since_day: i32,
    files: Vec<DataFile>,
    upto: u64,
    write_when: impl Fn(usize) -> bool,
) -> Result<(DedupState, usize, Option<u64>), EngineError> {
    let (mut dedup, base) = match lake.latest_snapshot(topic, partition).await? {
        None => (DedupState::default(), None),
        Some((_, bytes)) => match DedupState::from_snapshot(&bytes) {
            Ok((upto, state)) => (state, Some(upto)),
            Err(error) => {
                tracing::warn!(topic, partition, %error, "dedup snapshot unusable; rebuilding it from the lake");
                crate::telemetry::dedup_snapshot("rejected");
                (DedupState::default(), None)
            }
        },
    };
    dedup.evict_before(u16::try_from(since_day).unwrap_or(0));
    let seq_of = |f: &DataFile| DataFileName::parse(&f.path).map_or(u64::MAX, |n| n.seq);
    let from = base.unwrap_or(0);
    let (settled, recent): (Vec<DataFile>, Vec<DataFile>) = files
        .into_iter()
        .filter(|f| seq_of(f) >= from)
        .partition(|f| seq_of(f) < upto);
    let files_read = settled.len() + recent.len();
    let settled_count = settled.len();
    dedup.absorb(load_dedup_state(lake, rule, settled).await?);
    // No snapshot yet (or a damaged one): write one whatever the count, so it is rebuilt once.
    if upto > from && (write_when(settled_count) || base.is_none()) {
        lake.put_snapshot(topic, partition, upto, dedup.to_snapshot(upto))
            .await?;
        crate::telemetry::dedup_snapshot("written");
    }
    dedup.absorb(load_dedup_state(lake, rule, recent).await?);
    Ok((dedup, files_read, base))
}

/// Brings the dedup snapshot of every Kafka partition of the lake up to date (the compactor runs
/// it): the old snapshot plus the committed files numbered from its `upto` to where the log is
/// settled. Returns how many snapshots were written.
pub async fn refresh_snapshots(
    lake: &Lake,
    rule: DedupRule,
    window_days: u16,
) -> Result<usize, EngineError> {
    let since = super::today() - i32::from(window_days);
    let mut written = 0;
    for (topic, partition) in lake.logged_partitions().await? {
        if topic.starts_with(crate::offline::OFFLINE_SOURCE_PREFIX) {
            continue;
        }
        let state = lake.log_state(&topic, partition).await?;
        let upto = state.settled_below();
        let current = lake.latest_snapshot(&topic, partition).await?;
        let current_upto = current
            .as_ref()
            .and_then(|(_, b)| DedupState::from_snapshot(b).ok())
            .map(|(u, _)| u);
        if current_upto.is_some_and(|u| u >= upto) {
            continue;
        }
        let files: Vec<DataFile> = lake
            .partition_files(&topic, partition, since)
            .await?
            .into_iter()
            .filter(|f| {
                DataFileName::parse(&f.path)
                    .is_some_and(|n| n.seq < upto && state.file_is_committed(n.seq, n.compacted))
            })
            .collect();
        rebuild_from_snapshot(lake, rule, &topic, partition, since, files, upto, |_| true).await?;
        written += 1;
    }
    Ok(written)
}

/// Whose rows a partition's dedup state must know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DedupScope {
    /// The partition's own: producers key by case, so a case never moves between partitions.
    Partition,
    /// Every source whose name starts so: offline files, of which any two may hold the same case.
    TopicsStartingWith(&'static str),
}

/// Rebuilds a partition's dedup state from its files in the lake, decoding files in parallel.
pub async fn load_dedup_state(
    lake: &Lake,
    rule: DedupRule,
    files: Vec<DataFile>,
) -> Result<DedupState, EngineError> {
    let parallelism = crate::parallel::workers();
    let loaded: Vec<Vec<(u64, u64, u16)>> = futures::stream::iter(files)
        .map(|file| {
            let lake = lake.clone();
            async move {
                let bytes = lake.read(&file.path).await?;
                let path = file.path.to_string();
                let keys = tokio::task::spawn_blocking(move || {
                    read_dedup_keys(rule, bytes, file.day, &path)
                })
                .await??;
                Ok::<_, EngineError>(keys)
            }
        })
        .buffer_unordered(parallelism)
        .try_collect()
        .await?;
    Ok(DedupState::from_rows(loaded.into_iter().flatten()))
}

/// The dedup entries of one data file: only the rule's columns are decoded.
fn read_dedup_keys(
    rule: DedupRule,
    bytes: bytes::Bytes,
    day: i32,
    path: &str,
) -> Result<Vec<(u64, u64, u16)>, LakeError> {
    let fail = |source| LakeError::Parquet {
        path: path.to_owned(),
        source,
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(fail)?;
    let mask = ProjectionMask::columns(builder.parquet_schema(), rule.columns.iter().copied());
    let reader = builder
        .with_projection(mask)
        .with_batch_size(65_536)
        .build()
        .map_err(fail)?;
    let day = u16::try_from(day).unwrap_or(0);
    let mut keys = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| fail(e.into()))?;
        (rule.entries)(&batch, day, &mut keys)
            .map_err(|what| fail(parquet::errors::ParquetError::General(what)))?;
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use crate::stream::evaluations::DEDUP;
    use std::sync::Arc;

    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, PutPayload};

    use super::*;
    use crate::generate::{Generator, GeneratorConfig};
    use crate::lake::{BatchRange, Lease};
    use crate::sink::parquet::EvaluationRows;
    use crate::transform::identity::EvaluatorKeyer;
    use crate::transform::Processor;

    const WINDOW: u16 = 120;

    async fn commit(lake: &Lake, lease: &mut Lease, generator: &mut Generator, first: i64) {
        let processor =
            Processor::new(Default::default(), EvaluatorKeyer::new(b"0123456789abcdef"));
        let now = chrono::Utc::now().timestamp_micros();
        let mut rows = EvaluationRows::new();
        for offset in first..first + 50 {
            let event = generator.next_event();
            // The generated cases are distinct: every valid one is a row.
            let _ = processor.append_row(&event.payload, 0, offset, now, &mut rows);
        }
        let count = rows.len() as u64;
        let files = Lake::encode_parts(vec![Box::new(rows)], 1).unwrap();
        let range = BatchRange {
            topic: "evaluations".into(),
            partition: 0,
            first_offset: first,
            last_offset: first + 49,
        };
        lake.commit_batch(lease, range, files, count).await.unwrap();
    }

    async fn recover(lake: &Lake) -> Recovered {
        recover_partition(lake, DEDUP, "evaluations", 0, WINDOW, DedupScope::Partition)
            .await
            .unwrap()
    }

    /// The state a rebuild from every file of the window makes.
    async fn full_rebuild(lake: &Lake) -> (Vec<(u64, u64)>, usize) {
        let since = crate::engine::today() - i32::from(WINDOW);
        let files = lake.partition_files("evaluations", 0, since).await.unwrap();
        let count = files.len();
        let state = load_dedup_state(lake, DEDUP, files).await.unwrap();
        (state.sorted_entries(), count)
    }

    /// Recovery reads the snapshot and only the files numbered after it, and ends with the same
    /// state as a rebuild from every file; a damaged snapshot is ignored and rebuilt.
    #[tokio::test]
    async fn recovery_reads_only_the_files_after_the_snapshot() {
        let lake = Lake::with_store(Arc::new(InMemory::new()), "evaluations");
        let day = crate::commands::yesterday_cst();
        let mut generator = Generator::new(GeneratorConfig::new("41", day)).unwrap();

        let first = recover(&lake).await;
        assert_eq!((first.files_read, first.snapshot), (0, None));
        let mut horizons = vec![i32::from(first.dedup.horizon())];
        let mut lease = first.recovery.lease;
        for b in 0..5 {
            commit(&lake, &mut lease, &mut generator, b * 50).await;
        }
        let (_, all_files) = full_rebuild(&lake).await;
        assert!(all_files >= SNAPSHOT_AFTER_FILES, "{all_files} files");
        // The empty snapshot of the first recovery covers nothing committed since: all are read,
        // and, being many, they make a new snapshot.
        let second = recover(&lake).await;
        assert_eq!(second.files_read, all_files);
        horizons.push(i32::from(second.dedup.horizon()));
        let mut lease = second.recovery.lease;
        let (_, before) = full_rebuild(&lake).await;
        for b in 5..7 {
            commit(&lake, &mut lease, &mut generator, b * 50).await;
        }
        let (expected, now_files) = full_rebuild(&lake).await;
        let third = recover(&lake).await;
        assert_eq!(third.snapshot, Some(second.recovery.claimed));
        assert_eq!(
            third.files_read,
            now_files - before,
            "only the files after the snapshot"
        );
        assert_eq!(third.dedup.sorted_entries(), expected);
        // Every recovered state answers from the window's first day on, as its files go: an
        // evaluation dated before it is outside the window, not new.
        let since = crate::engine::today() - i32::from(WINDOW);
        assert_eq!(horizons, [since; 2]);
        assert_eq!(i32::from(third.dedup.horizon()), since);

        // Damaged (a flipped byte): ignored, everything read, the same state, a good snapshot again.
        let (upto, bytes) = lake
            .latest_snapshot("evaluations", 0)
            .await
            .unwrap()
            .unwrap();
        let mut damaged = bytes.to_vec();
        damaged[40] ^= 0x10;
        let path = object_store::path::Path::from(format!(
            "{}/evaluations/evaluations/0/{upto:020}.dedup",
            crate::lake::SNAPSHOT_FOLDER
        ));
        lake.store()
            .put(&path, PutPayload::from(damaged))
            .await
            .unwrap();
        let fourth = recover(&lake).await;
        assert_eq!((fourth.snapshot, fourth.files_read), (None, now_files));
        assert_eq!(fourth.dedup.sorted_entries(), expected);
        let (_, rebuilt) = lake
            .latest_snapshot("evaluations", 0)
            .await
            .unwrap()
            .unwrap();
        assert!(DedupState::from_snapshot(&rebuilt).is_ok());

        // Missing: the same.
        lake.store().delete(&path).await.ok();
        let mut snapshots = lake.latest_snapshot("evaluations", 0).await.unwrap();
        while let Some((upto, _)) = snapshots {
            let path = object_store::path::Path::from(format!(
                "{}/evaluations/evaluations/0/{upto:020}.dedup",
                crate::lake::SNAPSHOT_FOLDER
            ));
            lake.store().delete(&path).await.unwrap();
            snapshots = lake.latest_snapshot("evaluations", 0).await.unwrap();
        }
        let fifth = recover(&lake).await;
        assert_eq!((fifth.snapshot, fifth.files_read), (None, now_files));
        assert_eq!(fifth.dedup.sorted_entries(), expected);

        // Compaction, then the compactor's refresh: a recovery reads nothing but the snapshot.
        let options = crate::lake::compact::CompactOptions {
            quiet_for: std::time::Duration::ZERO,
            ..Default::default()
        };
        crate::lake::compact::compact(&lake.another_writer(), &options)
            .await
            .unwrap();
        let (compacted, files_after) = full_rebuild(&lake).await;
        assert!(files_after < now_files);
        assert_eq!(compacted, expected, "compaction keeps every key");
        assert_eq!(refresh_snapshots(&lake, DEDUP, WINDOW).await.unwrap(), 1);
        let sixth = recover(&lake).await;
        assert_eq!(sixth.files_read, 0);
        assert_eq!(sixth.dedup.sorted_entries(), expected);
    }
}
