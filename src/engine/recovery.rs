//! Recovery of one partition: the lake's log decides where to resume (see [`crate::lake`]), and
//! the dedup state is rebuilt from the rows the lake holds, so the two always agree.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Int64Type, Int8Type};
use futures::{StreamExt, TryStreamExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use super::EngineError;
use crate::lake::{DataFile, Lake, LakeError, Recovery};
use crate::transform::dedup::{dedup_key, DedupState};
use crate::transform::validate::AssessNumber;

/// Recovers one partition from the lake (see [`crate::lake`]): rolls back a batch that never
/// committed, finds where to resume, and rebuilds the dedup state from the rows of the last
/// `window_days` days. Kafka partitions and the offline path's file both start here.
pub async fn recover_partition(
    lake: &Lake,
    topic: &str,
    partition: i32,
    window_days: u16,
    dedup_scope: DedupScope,
) -> Result<(Recovery, DedupState), EngineError> {
    let recovery = lake.recover(topic, partition).await?;
    let since = super::today() - i32::from(window_days);
    let files = match dedup_scope {
        DedupScope::Partition => lake.partition_files(topic, partition, since).await?,
        DedupScope::TopicsStartingWith(prefix) => {
            lake.files_where(since, |name| name.topic.starts_with(prefix))
                .await?
        }
    };
    let dedup = load_dedup_state(lake, files).await?;
    Ok((recovery, dedup))
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
    files: Vec<DataFile>,
) -> Result<DedupState, EngineError> {
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
                Ok::<_, EngineError>(keys)
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
