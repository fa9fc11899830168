//! The offline path: a newline-delimited JSON file through the same stages and the same commit
//! protocol as Kafka (`haochaping ingest --from-file`). Each line is one message; its line number is its
//! offset in partition 0 of a pseudo-topic named after the file, so running the same file again resumes
//! where the lake ends instead of writing anything twice. Rejected lines go to
//! `<lake>/_haochaping/rejected/<name>.ndjson` with their reason (identity redacted).
//!
//! Reading, decoding and validating run on one thread while the previous batch is encoded and
//! written on another, so both cores are busy.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::Arc;

use crate::config::IngestConfig;
use crate::pipeline::{load_dedup_state, PipelineError};
use crate::sink::lake::{BatchRange, Lake};
use crate::sink::parquet::{
    cst_day, encode_parquet, EvaluationRows, TableError, EVALUATIONS_TABLE,
};
use crate::telemetry::{Stats, StatsSnapshot};
use crate::transform::identity::EvaluatorKeyer;
use crate::transform::{Outcome, Processor};

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> PipelineError + '_ {
    move |source| PipelineError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Ingests one NDJSON file into the lake.
pub async fn ingest_file(
    config: IngestConfig,
    path: &Path,
    stats: Arc<Stats>,
) -> Result<StatsSnapshot, PipelineError> {
    config.check()?;
    let lake = Lake::open_local(&config.lake.path, EVALUATIONS_TABLE)?;
    let topic = path
        .file_stem()
        .and_then(|s| s.to_str())
        .map(|s| s.replace(|c: char| !c.is_ascii_alphanumeric() && c != '_', "_"))
        .unwrap_or_else(|| "file".into());
    let recovery = lake.recover(&topic, 0).await?;
    let since =
        cst_day(chrono::Utc::now().timestamp_micros()) - i32::from(config.dedup.window_days);
    let mut dedup = load_dedup_state(&lake, lake.partition_files(&topic, 0, since).await?).await?;
    stats.partition_recovered(recovery.rolled_back_files.len(), dedup.len());
    let start = recovery.next_offset.unwrap_or(0);

    let rejected_dir = config.lake.path.join("_haochaping/rejected");
    std::fs::create_dir_all(&rejected_dir).map_err(io_error(&rejected_dir))?;
    let rejected_path = rejected_dir.join(format!("{topic}.ndjson"));
    let mut rejected = std::io::BufWriter::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&rejected_path)
            .map_err(io_error(&rejected_path))?,
    );
    let file = std::fs::File::open(path).map_err(io_error(path))?;

    // The writer: encodes and commits batches in order while the reader goes on.
    let (batches, mut to_write) = tokio::sync::mpsc::channel::<(BatchRange, EvaluationRows)>(2);
    let writer_lake = lake.clone();
    let writer_stats = stats.clone();
    let zstd_level = config.lake.zstd_level;
    let writer = tokio::spawn(async move {
        while let Some((range, rows)) = to_write.recv().await {
            let count = rows.len() as u64;
            let encode_lake = writer_lake.clone();
            let encode_range = range.clone();
            let files = tokio::task::spawn_blocking(move || -> Result<_, TableError> {
                rows.finish()?
                    .into_iter()
                    .map(|(key, part)| {
                        Ok((
                            encode_lake.data_path(&key, &encode_range),
                            encode_parquet(&part, zstd_level)?,
                        ))
                    })
                    .collect::<Result<Vec<_>, TableError>>()
            })
            .await??;
            let bytes = files.iter().map(|(_, b)| b.len() as u64).sum();
            let file_count = files.len();
            writer_lake.commit_batch(range, files, count).await?;
            writer_stats.batch_committed(file_count, bytes, count);
        }
        Ok::<(), PipelineError>(())
    });

    let processor = Processor::new(
        config.validation.clone(),
        EvaluatorKeyer::new(
            config
                .identity
                .secret
                .as_deref()
                .unwrap_or_default()
                .as_bytes(),
        ),
    );
    let flush_rows = config.lake.flush_rows;
    let reader_stats = stats.clone();
    let reader_topic = topic.clone();
    let input = path.to_owned();
    let read = tokio::task::spawn_blocking(move || -> Result<(), PipelineError> {
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut line = Vec::with_capacity(4096);
        let mut rows = EvaluationRows::new();
        let mut first = start;
        let mut offset: i64 = 0;
        let now = chrono::Utc::now().timestamp_micros();
        loop {
            line.clear();
            let read = reader
                .read_until(b'\n', &mut line)
                .map_err(io_error(&input))?;
            if read == 0 {
                break;
            }
            let this = offset;
            offset += 1;
            if this < start {
                reader_stats.already_in_lake();
                continue;
            }
            let payload = line.strip_suffix(b"\n").unwrap_or(&line);
            let payload = payload.strip_suffix(b"\r").unwrap_or(payload);
            reader_stats.received(payload.len());
            match processor.process(payload, 0, this, now, &mut dedup, &mut rows) {
                Outcome::Accepted => reader_stats.accepted(),
                Outcome::Duplicate => reader_stats.duplicate(),
                Outcome::Rejected(rejection) => {
                    reader_stats.dead_lettered(rejection.reason);
                    let parked = processor
                        .keyer()
                        .redact_json(payload)
                        .unwrap_or_else(|| payload.to_vec());
                    let record = serde_json::json!({
                        "reason": rejection.reason.code(),
                        "message": rejection.message,
                        "offset": this,
                        "payload": String::from_utf8_lossy(&parked),
                    });
                    serde_json::to_writer(&mut rejected, &record)
                        .map_err(std::io::Error::from)
                        .and_then(|()| rejected.write_all(b"\n"))
                        .map_err(io_error(&rejected_path))?;
                }
            }
            if rows.len() >= flush_rows {
                let range = BatchRange {
                    topic: reader_topic.clone(),
                    partition: 0,
                    first_offset: first,
                    last_offset: this,
                };
                if batches
                    .blocking_send((range, std::mem::take(&mut rows)))
                    .is_err()
                {
                    return Ok(()); // the writer failed; its error is reported below
                }
                first = this + 1;
            }
        }
        if offset > first {
            let range = BatchRange {
                topic: reader_topic,
                partition: 0,
                first_offset: first,
                last_offset: offset - 1,
            };
            let _ = batches.blocking_send((range, rows));
        }
        rejected.flush().map_err(io_error(&rejected_path))?;
        Ok(())
    });
    let read_result = read.await?;
    writer.await??;
    read_result?;
    Ok(stats.snapshot())
}
