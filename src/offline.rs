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
//! (redacted, encrypted or withheld by the same rule as the dead-letter topic), and are fsynced
//! before the batch that covers them commits: a crash may write a rejected line twice (its offset
//! identifies it), never lose it, and a full disk is waited out (`offline/rejected.rs`). A line
//! over `validation.max_message_bytes` is read no further than that bound: the rest is hashed as
//! it is skipped, and the rejected record holds the head with the whole line's size and SHA-256
//! (the line itself stays in the source file), so no line of a hostile file costs more memory
//! than the bound.
//!
//! Reading, decoding and validating run on one thread while the previous batch is encoded on
//! another, so both cores are busy. Each batch of lines is one more row group of the run's open
//! files (one per `dt × city` folder), and the files are committed with the lines they cover once
//! they hold `lake.offline_commit_bytes` (64 MiB): a commit spans many batches without holding
//! their rows, so a file spread over many days writes few files per folder (each costs the
//! filesystem ≈ 1 ms) for the memory of their encoded bytes. After each batch the allocator is
//! asked to return the pages the batch freed ([`crate::parallel::return_freed_memory`]).

mod rejected;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::Arc;

use crate::config::IngestConfig;
use crate::decode::{Reason, Rejection};
use crate::engine::{recover_partition, DedupScope, EngineError};
use crate::lake::{BatchRange, Lake};
use crate::sink::parquet::{OpenFiles, TableRows, EVALUATIONS_TABLE};
use crate::telemetry::{Source, Stats, StatsSnapshot};
use crate::transform::dedup::DedupState;
use crate::transform::{process_run_with, Message, Notice, PreparedPart, Processor};
use rejected::RejectedLines;

/// Offline sources are named `file+<content hash>`; `+` never occurs in a Kafka topic name.
pub const OFFLINE_SOURCE_PREFIX: &str = "file+";

/// Lines read and processed together; big enough to amortise the worker hand-off.
const CHUNK_LINES: usize = 16_384;

/// The rows dedup kept from one prepared part.
type Part = Box<dyn TableRows>;

/// What [`read_line`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LineRead {
    /// The end of the input.
    End,
    /// A whole line, its `\n` included when it had one.
    Whole,
    /// A line longer than the bound: only its head was kept.
    Cut(CutLine),
}

/// A line [`read_line`] kept only the head of: the size and SHA-256 of the whole line as
/// [`trim_line`] gives it, hashed while the rest was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CutLine {
    size: usize,
    sha256: String,
}

/// Hashes the skipped rest of a cut line. A `\r` is held back until a byte follows it: the line's
/// last `\r` is not part of the message ([`trim_line`]).
struct Skipped {
    hasher: sha2::Sha256,
    size: usize,
    held_cr: bool,
}

impl Skipped {
    fn new(head: &[u8]) -> Self {
        use sha2::Digest;
        Self {
            hasher: sha2::Sha256::new_with_prefix(head),
            size: head.len(),
            held_cr: false,
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        use sha2::Digest;
        let Some((&last, body)) = bytes.split_last() else {
            return;
        };
        if std::mem::take(&mut self.held_cr) {
            self.hasher.update(b"\r");
            self.size += 1;
        }
        let body = if last == b'\r' {
            self.held_cr = true;
            body
        } else {
            bytes
        };
        self.hasher.update(body);
        self.size += body.len();
    }

    fn finish(self) -> CutLine {
        use sha2::Digest;
        CutLine {
            size: self.size,
            sha256: hex::encode(self.hasher.finalize()),
        }
    }
}

/// Appends the next line of `reader` to `line`: all of it, its `\n` included, when it holds at
/// most `bound` bytes before the `\n`; otherwise only its first `bound` bytes, and the rest is
/// read, hashed and dropped, so a hostile file (a line of gigabytes, or no newline at all) costs
/// no more memory than a line of `bound` bytes.
///
/// The lines are those of `BufRead::read_until`, found with the memchr crate's SIMD search: std's
/// byte search was 1.5 % of an offline run's instructions (callgrind, 100 000 events).
fn read_line(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
    bound: usize,
) -> std::io::Result<LineRead> {
    let start = line.len();
    let mut read = 0;
    let mut skipped: Option<Skipped> = None;
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let (used, newline) = match memchr::memchr(b'\n', available) {
            Some(end) => (end + 1, true),
            None => (available.len(), false),
        };
        let content = &available[..used - usize::from(newline)];
        match &mut skipped {
            Some(skipped) => skipped.feed(content),
            None => {
                let room = bound - (line.len() - start);
                if content.len() <= room {
                    line.extend_from_slice(&available[..used]);
                } else {
                    line.extend_from_slice(&content[..room]);
                    let mut rest = Skipped::new(&line[start..]);
                    rest.feed(&content[room..]);
                    skipped = Some(rest);
                }
            }
        }
        let at_end = available.is_empty();
        reader.consume(used);
        read += used;
        if newline || at_end {
            return Ok(match (read, skipped) {
                (0, _) => LineRead::End,
                (_, None) => LineRead::Whole,
                (_, Some(skipped)) => LineRead::Cut(skipped.finish()),
            });
        }
    }
}

/// The bytes [`read_line`] keeps of a line. The head of a cut line, less a trailing `\r`
/// ([`trim_line`]), is still over the message bound, so it is rejected as oversize like the
/// whole line would be.
fn line_bound(max_message_bytes: usize) -> usize {
    max_message_bytes.saturating_add(2)
}

fn trim_line(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
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
    /// This run's recovery: which of the source's own files count (see
    /// [`crate::lake::Recovery::owns_or_counts`]).
    own: crate::lake::Recovery,
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
                    |name| {
                        name.topic.starts_with(OFFLINE_SOURCE_PREFIX)
                            && self.own.owns_or_counts(name)
                    },
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

/// Finishes the open files and commits them with the lines they cover.
async fn commit_open_files(
    lake: &Lake,
    lease: &mut crate::lake::Lease,
    range: BatchRange,
    files: OpenFiles,
    persistence: crate::retry::Persistence,
    stats: &Stats,
) -> Result<(), EngineError> {
    let rows = files.rows();
    let files = tokio::task::spawn_blocking(move || files.finish()).await??;
    let bytes = files.iter().map(|(_, b)| b.len() as u64).sum();
    let file_count = files.len();
    crate::engine::commit::commit_files(lake, lease, &range, files, rows, persistence).await?;
    stats.batch_committed(file_count, bytes, rows);
    Ok(())
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
    // The rejected lines are appended to a file beside the lake while the run goes, and a torn
    // last line is cut off when a rerun opens it: that needs a local folder.
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
    // Which of this source's own files count, for the older days' keys loaded later.
    let own = recovery.clone();
    let mut lease = recovery.lease;

    let rejected_dir = lake_path.join("_haochaping/rejected");
    std::fs::create_dir_all(&rejected_dir).map_err(io_error(&rejected_dir))?;
    let rejected_path = rejected_dir.join(format!("{stem}.{}.ndjson", &hash[..16]));
    let mut rejected = RejectedLines::open(rejected_path, config.lake.persistence())?;
    let file = std::fs::File::open(path).map_err(io_error(path))?;

    // The writer: appends each batch's rows to the open files while the reader goes on, and
    // commits them, with the lines they cover, once they are large enough (and at the end).
    let (batches, mut to_write) = tokio::sync::mpsc::channel::<(BatchRange, Vec<Part>)>(2);
    let writer_lake = lake.clone();
    let writer_stats = stats.clone();
    let zstd_level = config.lake.zstd_level;
    let commit_bytes = config.lake.offline_commit_bytes;
    let persistence = config.lake.persistence();
    let writer = tokio::spawn(async move {
        let mut open: Option<(BatchRange, OpenFiles)> = None;
        loop {
            let next = to_write.recv().await;
            let done = next.is_none();
            if let Some((range, parts)) = next {
                let (covered, files) = match open.take() {
                    None => (range, OpenFiles::new(zstd_level)),
                    Some((covered, files)) => (covered.through(range.last_offset), files),
                };
                let files = tokio::task::spawn_blocking(move || {
                    let appended = files.append(parts);
                    // The batch's rows are freed, the open files stay: give the pages back.
                    crate::parallel::return_freed_memory();
                    appended
                })
                .await??;
                open = Some((covered, files));
            }
            let due = |(_, files): &mut (BatchRange, OpenFiles)| {
                done || files.encoded_bytes() >= commit_bytes
            };
            if let Some((covered, files)) = open.take_if(due) {
                let (lake, stats) = (&writer_lake, &writer_stats);
                commit_open_files(lake, &mut lease, covered, files, persistence, stats).await?;
            }
            if done {
                return Ok::<(), EngineError>(());
            }
        }
    });

    let processor = Processor::from_config(&config);
    let protector = crate::sink::dlq::protector(&config)?;
    let (flush_rows, flush_bytes) = (config.lake.flush_rows, config.lake.flush_bytes);
    let max_message_bytes = config.validation.max_message_bytes;
    let bound = line_bound(max_message_bytes);
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
        own,
    };
    let read = tokio::task::spawn_blocking(move || -> Result<(), EngineError> {
        let workers = crate::parallel::workers();
        // The writer stops taking batches only when it failed: a full disk is then no longer
        // worth waiting out, and its error is the one reported.
        let writer_failed = || batches.is_closed();
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
        // The chunk's lines that were cut at `bound`, by offset.
        let mut cuts: Vec<(i64, CutLine)> = Vec::new();
        loop {
            buffer.clear();
            ends.clear();
            cuts.clear();
            while ends.len() < chunk_lines && buffer.len() < flush_bytes {
                match read_line(&mut reader, &mut buffer, bound).map_err(io_error(&input))? {
                    LineRead::End => break,
                    LineRead::Whole => {}
                    LineRead::Cut(cut) => cuts.push((offset + ends.len() as i64, cut)),
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
            for (offset, line, mut rejection) in rejections {
                let cut = cuts
                    .iter()
                    .find(|(at, _)| *at == offset)
                    .map(|(_, cut)| cut);
                if let Some(cut) = cut {
                    if rejection.reason == Reason::Oversize {
                        // The message named the head's size; the line's is the one to report.
                        rejection = Rejection::oversize(cut.size, max_message_bytes);
                    }
                    // The received bytes count the whole line, the skipped rest too.
                    let source = Source {
                        table: EVALUATIONS_TABLE,
                        partition: 0,
                    };
                    let skipped = cut.size.saturating_sub(line.len());
                    reader_stats.processed(source, 0, skipped as u64, 0, 0);
                }
                rejected.park(&protector, offset, line, &rejection, cut, &writer_failed)?;
            }
            if batch_rows >= flush_rows || batch_bytes >= flush_bytes {
                rejected.make_durable(&writer_failed)?;
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
            rejected.make_durable(&writer_failed)?;
            let _ = batches.blocking_send((range, parts));
        }
        rejected.make_durable(&writer_failed)?;
        Ok(())
    });
    let read_result = read.await?;
    writer.await??;
    read_result?;
    Ok(stats.snapshot())
}

#[cfg(test)]
mod tests {
    /// What `read_line` should give, from std's `read_until`: the whole line when at most `bound`
    /// bytes precede its `\n`, else its first `bound` bytes with the size and SHA-256 of the line
    /// as `trim_line` gives it.
    fn expected_lines(
        input: &[u8],
        capacity: usize,
        bound: usize,
    ) -> Vec<(super::LineRead, Vec<u8>)> {
        use std::io::{BufRead, BufReader};
        let mut lines = Vec::new();
        let mut reader = BufReader::with_capacity(capacity, input);
        loop {
            let mut line = Vec::new();
            if reader.read_until(b'\n', &mut line).unwrap() == 0 {
                lines.push((super::LineRead::End, line));
                return lines;
            }
            let content = line.strip_suffix(b"\n").unwrap_or(&line);
            if content.len() <= bound {
                lines.push((super::LineRead::Whole, line));
            } else {
                let message = super::trim_line(&line);
                let cut = super::CutLine {
                    size: message.len(),
                    sha256: crate::sink::dlq::protect::sha256_hex(message),
                };
                lines.push((super::LineRead::Cut(cut), content[..bound].to_vec()));
            }
        }
    }

    /// The lines `read_line` gives are std's `read_until` lines, whatever the reader's buffer size
    /// (lines that span its refills), however the input ends, and wherever the bound cuts them (in
    /// a character, before or after a `\r`).
    #[test]
    fn lines_are_read_as_read_until_reads_them() {
        use std::io::BufReader;
        let inputs: [&[u8]; 11] = [
            b"",
            b"\n",
            b"a",
            b"{\"a\":1}\r\n\n{\"b\":2}\n",
            b"no newline at the end\nlast",
            b"\xe5\xa5\xbd\n\xff\xfe\n",
            b"ab\r\r\n",
            b"abc\r",
            b"abcd\r\r",
            b"\r\n\r\r\n\r",
            b"a\rb\r\rc\r\n",
        ];
        let long = [b"x".repeat(100), b"\n".to_vec()].concat().repeat(7);
        for input in inputs.into_iter().chain([long.as_slice()]) {
            for capacity in [1, 2, 3, 7, 64, 1 << 20] {
                for bound in [0, 1, 2, 3, 4, 5, 99, 100, 101, usize::MAX] {
                    let mut got = Vec::new();
                    let mut reader = BufReader::with_capacity(capacity, input);
                    loop {
                        let mut line = Vec::new();
                        let read = super::read_line(&mut reader, &mut line, bound).unwrap();
                        let end = read == super::LineRead::End;
                        got.push((read, line));
                        if end {
                            break;
                        }
                    }
                    assert_eq!(
                        got,
                        expected_lines(input, capacity, bound),
                        "{input:?} capacity {capacity} bound {bound}"
                    );
                }
            }
        }
    }

    /// A line of 64 MiB, and a file with no newline at all, cost the bound in memory, not their
    /// size: the head is kept, the rest hashed as it streams past.
    #[test]
    fn a_huge_line_keeps_only_its_head() {
        use std::io::{BufReader, Read};
        let size = 64usize << 20;
        let mut whole = sha2::Sha256::default();
        sha2::Digest::update(&mut whole, vec![b'x'; size]);
        let sha256 = hex::encode(sha2::Digest::finalize(whole));
        for tail in [&b"\n{}\n"[..], b""] {
            let input = std::io::repeat(b'x').take(size as u64).chain(tail);
            let mut reader = BufReader::with_capacity(1 << 16, input);
            let mut line = Vec::new();
            let read = super::read_line(&mut reader, &mut line, 1000).unwrap();
            assert_eq!(line, vec![b'x'; 1000]);
            assert!(line.capacity() < 1 << 16, "{}", line.capacity());
            let cut = super::CutLine {
                size,
                sha256: sha256.clone(),
            };
            assert_eq!(read, super::LineRead::Cut(cut));
            // The next line is read as it is.
            line.clear();
            let next = super::read_line(&mut reader, &mut line, 1000).unwrap();
            if tail.is_empty() {
                assert_eq!(next, super::LineRead::End);
            } else {
                assert_eq!(
                    (next, line.as_slice()),
                    (super::LineRead::Whole, &b"{}\n"[..])
                );
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
}
