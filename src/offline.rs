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

use arrow::array::BooleanArray;

use crate::config::IngestConfig;
use crate::decode::Rejection;
use crate::pipeline::{recover_partition, PipelineError};
use crate::sink::lake::{BatchRange, Lake};
use crate::sink::parquet::{finish_parts, EvaluationRows, TableError, EVALUATIONS_TABLE};
use crate::telemetry::{Stats, StatsSnapshot};
use crate::transform::{Message, Processor};

/// Lines read and processed together; big enough to amortise the worker hand-off.
const CHUNK_LINES: usize = 16_384;

/// Rows of one prepared part and which of them dedup kept.
type Part = (EvaluationRows, Option<BooleanArray>);

fn trim_line(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Appends a rejected line, with its reason and identity redacted, to the rejected file.
fn park(
    out: &mut impl Write,
    processor: &Processor,
    offset: i64,
    line: &[u8],
    rejection: &Rejection,
) -> std::io::Result<()> {
    let parked = processor
        .keyer()
        .redact_json(line)
        .unwrap_or_else(|| line.to_vec());
    let record = serde_json::json!({
        "reason": rejection.reason.code(),
        "message": rejection.message,
        "offset": offset,
        "payload": String::from_utf8_lossy(&parked),
    });
    serde_json::to_writer(&mut *out, &record)?;
    out.write_all(b"\n")
}

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
    let started = std::time::Instant::now();
    let (recovery, mut dedup) =
        recover_partition(&lake, &topic, 0, config.dedup.window_days).await?;
    tracing::info!(
        file = %path.display(),
        resume_at = ?recovery.next_offset,
        rolled_back_files = recovery.rolled_back_files.len(),
        dedup_keys = dedup.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "recovered from the lake"
    );
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
    let (batches, mut to_write) = tokio::sync::mpsc::channel::<(BatchRange, Vec<Part>)>(2);
    let writer_lake = lake.clone();
    let writer_stats = stats.clone();
    let zstd_level = config.lake.zstd_level;
    let writer = tokio::spawn(async move {
        while let Some((range, parts)) = to_write.recv().await {
            let encode_lake = writer_lake.clone();
            let encode_range = range.clone();
            let (files, rows) = tokio::task::spawn_blocking(move || -> Result<_, TableError> {
                let merged = finish_parts(parts)?;
                let count = merged
                    .iter()
                    .map(|(_, batch)| batch.num_rows() as u64)
                    .sum();
                Ok((
                    encode_lake.encode_files(&encode_range, merged, zstd_level)?,
                    count,
                ))
            })
            .await??;
            let bytes = files.iter().map(|(_, b)| b.len() as u64).sum();
            let file_count = files.len();
            writer_lake.commit_batch(range, files, rows).await?;
            writer_stats.batch_committed(file_count, bytes, rows);
        }
        Ok::<(), PipelineError>(())
    });

    let processor = Processor::from_config(&config);
    let flush_rows = config.lake.flush_rows;
    let reader_stats = stats.clone();
    let reader_topic = topic.clone();
    let input = path.to_owned();
    let read = tokio::task::spawn_blocking(move || -> Result<(), PipelineError> {
        let workers = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .max(1);
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let now = chrono::Utc::now().timestamp_micros();
        let mut offset: i64 = 0;
        let mut first = start;
        let mut parts: Vec<Part> = Vec::new();
        let mut batch_rows = 0;
        let mut buffer = Vec::with_capacity(CHUNK_LINES * 600);
        // Batches are cut between chunks, so a chunk is never larger than a batch.
        let chunk_lines = CHUNK_LINES.min(flush_rows).max(1);
        let mut ends = Vec::with_capacity(chunk_lines);
        loop {
            buffer.clear();
            ends.clear();
            while ends.len() < chunk_lines {
                if reader
                    .read_until(b'\n', &mut buffer)
                    .map_err(io_error(&input))?
                    == 0
                {
                    break;
                }
                ends.push(buffer.len());
            }
            if ends.is_empty() {
                break;
            }
            let lines: Vec<Message<'_>> = ends
                .iter()
                .scan(0, |begin, end| {
                    let line = trim_line(&buffer[*begin..*end]);
                    *begin = *end;
                    Some(line)
                })
                .enumerate()
                .map(|(i, payload)| Message {
                    offset: offset + i as i64,
                    key: None,
                    payload,
                })
                .collect();
            offset += lines.len() as i64;
            // Lines the lake already holds (a rerun of the same file) are skipped.
            let fresh = lines.partition_point(|m| m.offset < start);
            for _ in 0..fresh {
                reader_stats.already_in_lake();
            }
            // Decode, validate and build rows in parallel; dedup after, in offset order.
            let mut rejections = Vec::new();
            for part in processor.prepare_parallel(&[(0, &lines[fresh..])], now, workers) {
                let (rows, keep) = part.decide(&mut dedup, &reader_stats, |message, rejection| {
                    rejections.push((message.offset, message.payload, rejection));
                });
                batch_rows += keep.true_count();
                parts.push((rows, Some(keep)));
            }
            for (offset, line, rejection) in rejections {
                park(&mut rejected, &processor, offset, line, &rejection)
                    .map_err(io_error(&rejected_path))?;
            }
            if batch_rows >= flush_rows {
                let range = BatchRange {
                    topic: reader_topic.clone(),
                    partition: 0,
                    first_offset: first,
                    last_offset: offset - 1,
                };
                if batches
                    .blocking_send((range, std::mem::take(&mut parts)))
                    .is_err()
                {
                    return Ok(()); // the writer failed; its error is reported below
                }
                first = offset;
                batch_rows = 0;
            }
        }
        if offset > first {
            let range = BatchRange {
                topic: reader_topic,
                partition: 0,
                first_offset: first,
                last_offset: offset - 1,
            };
            let _ = batches.blocking_send((range, parts));
        }
        rejected.flush().map_err(io_error(&rejected_path))?;
        Ok(())
    });
    let read_result = read.await?;
    writer.await??;
    read_result?;
    Ok(stats.snapshot())
}
