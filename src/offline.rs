//! The offline path: a newline-delimited JSON file through the same stages and the same commit
//! protocol as Kafka (`haochaping ingest --from-file`). Each line is one message; its line number is its
//! offset in partition 0 of a pseudo-topic named after the file's *content*
//! (`file+<xxh3-128 of the bytes>`; `+` cannot occur in a Kafka topic name, so it never shares a log
//! with a real topic). Running the same file again, under any name, resumes where the lake ends; a
//! different file with the same name is a different source. A file that grew since is a new source
//! too: its lines are read again, and dedup drops the evaluations the lake already holds. It knows
//! the rows of every offline file of the dedup window's days from recovery, and those of any older
//! day from the first chunk that reaches it (a backfill, or a second export of one).
//!
//! Rejected lines go to `<lake>/_haochaping/rejected/<name>.<hash>.ndjson` with their reason
//! (redacted, encrypted or withheld by the same rule as the dead-letter topic), and are fsynced before the batch that covers them commits: a crash may
//! write a rejected line twice (its offset identifies it), never lose it.
//!
//! Reading, decoding and validating run on one thread while the previous batch is encoded and
//! written on another, so both cores are busy.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::Arc;

use crate::config::IngestConfig;
use crate::decode::Rejection;
use crate::engine::{recover_partition, DedupScope, EngineError};
use crate::lake::{BatchRange, Lake};
use crate::sink::dlq::protect::{rejected_line, Protector};
use crate::sink::parquet::{TableError, TableRows, EVALUATIONS_TABLE};
use crate::telemetry::{Stats, StatsSnapshot};
use crate::transform::dedup::DedupState;
use crate::transform::{process_run_with, Message, Notice, PreparedPart, Processor};

/// Offline sources are named `file+<content hash>`; `+` never occurs in a Kafka topic name.
pub const OFFLINE_SOURCE_PREFIX: &str = "file+";

/// Lines read and processed together; big enough to amortise the worker hand-off.
const CHUNK_LINES: usize = 16_384;

/// The rows dedup kept from one prepared part.
type Part = Box<dyn TableRows>;

/// Appends the next line of `reader`, its `\n` included, to `line`; returns how many bytes it
/// read, 0 at the end. `BufRead::read_until` with the memchr crate's SIMD search: std's byte search
/// was 1.5 % of an offline run's instructions (callgrind, 100 000 events).
fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut read = 0;
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let (used, done) = match memchr::memchr(b'\n', available) {
            Some(end) => (end + 1, true),
            None => (available.len(), available.is_empty()),
        };
        line.extend_from_slice(&available[..used]);
        reader.consume(used);
        read += used;
        if done {
            return Ok(read);
        }
    }
}

fn trim_line(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Appends a rejected line, with its reason, to the rejected file: redacted, encrypted or withheld
/// by the same rule as the dead-letter topic (see [`crate::sink::dlq::protect`]).
fn park(
    out: &mut impl Write,
    protector: &Protector,
    offset: i64,
    line: &[u8],
    rejection: &Rejection,
) -> std::io::Result<()> {
    let parked = protector.protect(line, usize::MAX);
    let record = rejected_line(&parked, rejection.reason.code(), &rejection.message, offset);
    serde_json::to_writer(&mut *out, &record)?;
    out.write_all(b"\n")
}

/// Opens the rejected-lines file for appending. A run killed while writing can leave a torn last
/// line; it is cut off (its batch never committed, so its lines are parked again), or the next
/// line would be glued to it.
fn open_rejected(path: &Path) -> std::io::Result<std::fs::File> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(file);
    }
    // Look back in blocks for the last newline.
    let mut end = len;
    let mut block = vec![0u8; 64 << 10];
    let whole_lines = loop {
        let start = end.saturating_sub(block.len() as u64);
        let chunk = &mut block[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            break start + i as u64 + 1;
        }
        if start == 0 {
            break 0;
        }
        end = start;
    };
    if whole_lines < len {
        tracing::warn!(file = %path.display(), torn_bytes = len - whole_lines, "cutting off a torn rejected line left by a killed run");
        file.set_len(whole_lines)?;
        file.sync_all()?;
    }
    Ok(file)
}

/// Flushes the rejected lines written so far and makes them durable.
fn make_durable(out: &mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()> {
    out.flush()?;
    out.get_ref().sync_data()
}

/// Bytes the content hash reads at a time.
const HASH_READ_BYTES: usize = 1 << 20;

/// The alignment of a buffer the kernel copies a file into. The copy from the page cache is what
/// hashing a file costs (perf: 141 of its 154 samples in `_copy_to_iter`), and on the project's
/// machine it runs 3.3× slower into a buffer that is 8 or 16 bytes past a 32-byte boundary, which
/// is where a large `Vec` from malloc starts (RESULTS §19).
const READ_ALIGN: usize = 64;

/// `len` bytes of `storage` (`len + READ_ALIGN` long) starting at a `READ_ALIGN` boundary.
fn aligned(storage: &mut [u8], len: usize) -> &mut [u8] {
    // `align_offset` may say it cannot (usize::MAX); the buffer is then merely slower.
    let start = storage.as_ptr().align_offset(READ_ALIGN).min(READ_ALIGN);
    &mut storage[start..start + len]
}

/// The file's identity: xxh3-128 of its bytes, in hex (fast enough to cost less than parsing the
/// file; not a defence against someone crafting collisions, which the lake's dedup would still
/// catch within its window).
async fn content_hash(path: &Path) -> Result<String, EngineError> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path).map_err(io_error(&path))?;
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        let mut storage = vec![0; HASH_READ_BYTES + READ_ALIGN];
        let buffer = aligned(&mut storage, HASH_READ_BYTES);
        loop {
            let read = std::io::Read::read(&mut file, buffer).map_err(io_error(&path))?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
        }
        Ok(format!("{:032x}", hasher.digest128()))
    })
    .await?
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> EngineError + '_ {
    move |source| EngineError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The days before the dedup window whose keys the offline run has loaded from the lake.
struct OlderDays {
    lake: Lake,
    runtime: tokio::runtime::Handle,
    /// The first day recovery loaded; the days before it are loaded here, on demand.
    window_start: i32,
    loaded: std::collections::BTreeSet<i32>,
}

impl OlderDays {
    /// Loads into `dedup` the keys every offline file in the lake holds for the days before the
    /// window that `parts`' valid evaluations fall on and that are not loaded yet. So an evaluation
    /// of any age that another export (or an earlier run of this one) put in the lake is a
    /// duplicate here too, as one inside the window is.
    fn load(
        &mut self,
        parts: &[PreparedPart<'_>],
        dedup: &mut DedupState,
    ) -> Result<(), EngineError> {
        let days: std::collections::BTreeSet<i32> = parts
            .iter()
            .flat_map(|part| part.results.iter().filter_map(|r| r.as_ref().ok()))
            .map(|candidate| i32::from(candidate.day))
            .filter(|day| *day < self.window_start && !self.loaded.contains(day))
            .collect();
        if days.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let (lake, rule) = (&self.lake, crate::stream::evaluations::DEDUP);
        let older = self.runtime.block_on(async {
            let files = lake
                .files_where(
                    |day| days.contains(&day),
                    |name| name.topic.starts_with(OFFLINE_SOURCE_PREFIX),
                )
                .await?;
            crate::engine::load_dedup_state(lake, rule, files).await
        })?;
        tracing::debug!(
            days = days.len(),
            keys = older.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded the lake's dedup keys of days before the window"
        );
        dedup.absorb(older);
        self.loaded.extend(days);
        Ok(())
    }
}

/// Ingests one NDJSON file into the lake.
pub async fn ingest_file(
    config: IngestConfig,
    path: &Path,
    stats: Arc<Stats>,
) -> Result<StatsSnapshot, EngineError> {
    config.check()?;
    // A file has no group to join: the run is ready as soon as it starts.
    stats
        .health
        .joined
        .store(true, std::sync::atomic::Ordering::Relaxed);
    stats
        .health
        .partitions
        .store(1, std::sync::atomic::Ordering::Relaxed);
    // The rejected lines are appended to a file beside the lake while the run goes, and cut back
    // to the committed position on recovery: that needs a local folder.
    let Some(lake_path) = config.lake.path.local_path() else {
        return Err(EngineError::Config(crate::config::ConfigError::Invalid {
            field: "lake.path",
            message: "ingest --from-file writes to a local lake folder; an object store lake is \
                      written by the Kafka path"
                .into(),
        }));
    };
    let lake = Lake::open_local(lake_path, EVALUATIONS_TABLE)?;
    let hash = content_hash(path).await?;
    let topic = format!("{OFFLINE_SOURCE_PREFIX}{hash}");
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .map(|s| s.replace(|c: char| !c.is_ascii_alphanumeric() && c != '_', "_"))
        .unwrap_or_else(|| "file".into());
    let started = std::time::Instant::now();
    let recovered = recover_partition(
        &lake,
        crate::stream::evaluations::DEDUP,
        &topic,
        0,
        config.dedup.window_days,
        // Two exports may hold the same case: each file's dedup knows every file's rows.
        DedupScope::TopicsStartingWith(OFFLINE_SOURCE_PREFIX),
    )
    .await?;
    let (recovery, mut dedup) = (recovered.recovery, recovered.dedup);
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
    let mut lease = recovery.lease;

    let rejected_dir = lake_path.join("_haochaping/rejected");
    std::fs::create_dir_all(&rejected_dir).map_err(io_error(&rejected_dir))?;
    let rejected_path = rejected_dir.join(format!("{stem}.{}.ndjson", &hash[..16]));
    let mut rejected =
        std::io::BufWriter::new(open_rejected(&rejected_path).map_err(io_error(&rejected_path))?);
    let file = std::fs::File::open(path).map_err(io_error(path))?;

    // The writer: encodes and commits batches in order while the reader goes on.
    let (batches, mut to_write) = tokio::sync::mpsc::channel::<(BatchRange, Vec<Part>)>(2);
    let writer_lake = lake.clone();
    let writer_stats = stats.clone();
    let zstd_level = config.lake.zstd_level;
    let persistence = config.lake.persistence();
    let writer = tokio::spawn(async move {
        while let Some((range, parts)) = to_write.recv().await {
            let (files, rows) = tokio::task::spawn_blocking(move || -> Result<_, TableError> {
                let count = parts.iter().map(|rows| rows.len() as u64).sum();
                Ok((Lake::encode_parts(parts, zstd_level)?, count))
            })
            .await??;
            let bytes = files.iter().map(|(_, b)| b.len() as u64).sum();
            let file_count = files.len();
            crate::engine::commit::commit_files(
                &writer_lake,
                &mut lease,
                &range,
                files,
                rows,
                persistence,
            )
            .await?;
            writer_stats.batch_committed(file_count, bytes, rows);
        }
        Ok::<(), EngineError>(())
    });

    let processor = Processor::from_config(&config);
    let protector = crate::sink::dlq::protector(&config)?;
    let (flush_rows, flush_bytes) = (config.lake.flush_rows, config.lake.flush_bytes);
    let reader_stats = stats.clone();
    let reader_topic = topic.clone();
    let input = path.to_owned();
    let throttle = config
        .lake
        .max_events_per_second
        .map(crate::engine::throttle::Throttle::new);
    let runtime = tokio::runtime::Handle::current();
    // Recovery loaded the keys of the window's days. A file may also hold older evaluations (a
    // backfill), and another export may have put the same ones in the lake: the keys of such a day
    // are loaded the first time a chunk holds it, before dedup decides the chunk.
    let window_start = crate::engine::today() - i32::from(config.dedup.window_days);
    let mut older_days = OlderDays {
        lake: lake.clone(),
        runtime: runtime.clone(),
        window_start,
        loaded: std::collections::BTreeSet::new(),
    };
    let read = tokio::task::spawn_blocking(move || -> Result<(), EngineError> {
        let workers = crate::parallel::workers();
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let now = chrono::Utc::now().timestamp_micros();
        let mut offset: i64 = 0;
        let mut first = start;
        let mut parts: Vec<Part> = Vec::new();
        let mut batch_rows = 0;
        let mut batch_bytes = 0;
        let mut buffer = Vec::with_capacity(CHUNK_LINES * 600);
        // Batches are cut between chunks, so a chunk is never larger than a batch.
        let chunk_lines = CHUNK_LINES.min(flush_rows).max(1);
        let mut ends = Vec::with_capacity(chunk_lines);
        loop {
            buffer.clear();
            ends.clear();
            while ends.len() < chunk_lines && buffer.len() < flush_bytes {
                if read_line(&mut reader, &mut buffer).map_err(io_error(&input))? == 0 {
                    break;
                }
                ends.push(buffer.len());
            }
            if ends.is_empty() {
                break;
            }
            let lines = Message::numbered(
                offset,
                ends.iter().scan(0, |begin, end| {
                    let line = trim_line(&buffer[*begin..*end]);
                    *begin = *end;
                    Some(line)
                }),
            );
            if let Some(throttle) = &throttle {
                runtime.block_on(throttle.admit(lines.len()));
            }
            offset += lines.len() as i64;
            batch_bytes += buffer.len();
            // Lines the lake already holds (a rerun of the same file) are skipped.
            let fresh = lines.partition_point(|m| m.offset < start);
            for _ in 0..fresh {
                reader_stats.already_in_lake();
            }
            // Decode, validate and build rows in parallel; dedup after, in offset order.
            let mut rejections = Vec::new();
            let (rows, kept) = process_run_with(
                &processor,
                0,
                &lines[fresh..],
                now,
                workers,
                &mut dedup,
                &reader_stats,
                |parts, dedup| older_days.load(parts, dedup),
                // Offline files are backfills: alerts are for what is happening now.
                |message, notice| {
                    if let Notice::Rejected(rejection) = notice {
                        rejections.push((message.offset, message.payload, rejection));
                    }
                },
            )?;
            batch_rows += kept;
            parts.extend(rows);
            for (offset, line, rejection) in rejections {
                park(&mut rejected, &protector, offset, line, &rejection)
                    .map_err(io_error(&rejected_path))?;
            }
            if batch_rows >= flush_rows || batch_bytes >= flush_bytes {
                make_durable(&mut rejected).map_err(io_error(&rejected_path))?;
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
                batch_bytes = 0;
            }
        }
        if offset > first {
            let range = BatchRange {
                topic: reader_topic,
                partition: 0,
                first_offset: first,
                last_offset: offset - 1,
            };
            make_durable(&mut rejected).map_err(io_error(&rejected_path))?;
            let _ = batches.blocking_send((range, parts));
        }
        make_durable(&mut rejected).map_err(io_error(&rejected_path))?;
        Ok(())
    });
    let read_result = read.await?;
    writer.await??;
    read_result?;
    Ok(stats.snapshot())
}

#[cfg(test)]
mod tests {
    /// The lines `read_line` gives are std's `read_until` lines, whatever the reader's buffer size
    /// (lines that span its refills) and however the input ends.
    #[test]
    fn lines_are_read_as_read_until_reads_them() {
        use std::io::{BufRead, BufReader};
        let inputs: [&[u8]; 6] = [
            b"",
            b"\n",
            b"a",
            b"{\"a\":1}\r\n\n{\"b\":2}\n",
            b"no newline at the end\nlast",
            b"\xe5\xa5\xbd\n\xff\xfe\n",
        ];
        let long = [b"x".repeat(100), b"\n".to_vec()].concat().repeat(7);
        for input in inputs.into_iter().chain([long.as_slice()]) {
            for capacity in [1, 2, 3, 7, 64, 1 << 20] {
                let mut expected = Vec::new();
                let mut reader = BufReader::with_capacity(capacity, input);
                loop {
                    let mut line = Vec::new();
                    let n = reader.read_until(b'\n', &mut line).unwrap();
                    expected.push((n, line));
                    if n == 0 {
                        break;
                    }
                }
                let mut got = Vec::new();
                let mut reader = BufReader::with_capacity(capacity, input);
                loop {
                    let mut line = Vec::new();
                    let n = super::read_line(&mut reader, &mut line).unwrap();
                    got.push((n, line));
                    if n == 0 {
                        break;
                    }
                }
                assert_eq!(got, expected, "{input:?} capacity {capacity}");
            }
        }
    }

    #[test]
    fn the_read_window_is_aligned_and_as_long_as_asked() {
        for len in [0, 1, 100, super::HASH_READ_BYTES] {
            // Every start a buffer could have, relative to the alignment.
            for shift in 0..super::READ_ALIGN {
                let mut storage = vec![0u8; shift + len + super::READ_ALIGN];
                let window = super::aligned(&mut storage[shift..], len);
                assert_eq!(window.len(), len);
                assert_eq!(
                    window.as_ptr() as usize % super::READ_ALIGN,
                    0,
                    "{len} {shift}"
                );
            }
        }
    }

    #[test]
    fn a_torn_rejected_line_is_cut_off_before_appending() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.ndjson");
        // (content left by a killed run, content after reopening)
        let cases: [(&[u8], &[u8]); 5] = [
            (b"", b""),
            (b"{\"a\":1}\n", b"{\"a\":1}\n"),
            (b"{\"a\":1}\n{\"b\":", b"{\"a\":1}\n"),
            (b"{\"b\":", b""),
            (b"{\"a\":1}\n{\"b\":2}\n", b"{\"a\":1}\n{\"b\":2}\n"),
        ];
        for (left, kept) in cases {
            std::fs::write(&path, left).unwrap();
            let mut file = super::open_rejected(&path).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), kept);
            file.write_all(b"{\"c\":3}\n").unwrap();
            assert_eq!(
                std::fs::read(&path).unwrap(),
                [kept, b"{\"c\":3}\n"].concat()
            );
        }
        // A torn line longer than one look-back block.
        let long = [b"{\"a\":1}\n".as_slice(), &vec![b'x'; 200 << 10]].concat();
        std::fs::write(&path, long).unwrap();
        super::open_rejected(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\":1}\n");
    }
}
