//! The lake: Hive-partitioned Parquet behind `object_store`, written exactly once per Kafka offset,
//! by one writer per partition at a time.
//!
//! # The commit protocol
//!
//! The unit of work is a *batch*: the messages of one Kafka partition from `first` to `last` offset.
//! Its rows fan out over many Hive folders (`dt` × `city`), so a batch is several files, and a crash can
//! leave some of them. Each partition has a log of sequence-numbered records
//! (`_haochaping/log/<table>/<topic>/<partition>/<seq>.json`, see [`log`]), every one put with
//! put-if-absent. Nothing else is conditional, and there is no rename, so a local folder and an object
//! store behave alike:
//!
//! 1. **Claim.** Recovery (on every assignment, before any message) reads the log, puts a `claim` at
//!    the next free number, and only then rolls back the batches that never committed: before the
//!    claim stands, their writer could still commit them. From then on the writer's *lease* is the
//!    number its next record must take.
//! 2. **Intent.** Put an `intent` at the lease's number, listing every data file the batch will write.
//! 3. **Data.** Put each file at its final place,
//!    `<table>/dt=…/city=…/<topic>-<partition>-<first>-<last>-<seq>.parquet`, `seq` being the intent's
//!    number: two writers never write the same file. A put is atomic, so a reader sees a whole file or none.
//! 4. **Durability.** On a local lake, fsync the files and every folder up to the root (an object
//!    store's put is durable when it returns).
//! 5. **Commit.** Put a `commit` at the number after the intent. This put is the commit point.
//! 6. **Tidy.** Delete the records below the commit (see [`log::read_log`]); a tidy that fails is
//!    left to the next commit's, since the batch is committed. Then the caller commits `last + 1`
//!    to the Kafka consumer group (kept for lag monitoring: the lake is the source of truth).
//!
//! **Fencing.** A second writer on the partition (a member evicted after a stall, another consumer
//! group on the same lake) takes the next number with its own claim. The first writer's next put
//! then finds its number taken and fails with [`LakeError::Fenced`]: before its data (nothing was
//! written) or at its commit. There the log decides ([`log::intent_fate`]): if the writer's commit
//! landed before the rival's record, the rival took the batch as committed and its files stay;
//! otherwise the writer deletes them (the next recovery deletes them again should it die first).
//! A retry of a batch after an error never puts its intent again: it reads what became of the
//! earlier attempt's intent the same way, and finishes it, finds it committed, or deletes its files
//! (the earlier attempt's puts may have landed after a rival rolled it back). Every put of an
//! attempt has ended (in this process) before the attempt returns. A writer never puts the commit
//! of an intent older than half the time the log keeps an aborted intent (12 h, by its clock): it
//! gives the batch up ([`LakeError::Expired`]), since a rival may since have tidied the intent and
//! the record that stopped it, and the commit would land in that hole. A fenced writer drops the
//! partition.
//!
//! A log is read by listing it and then reading each record; a record gone by then (tidied by the
//! writer that owns the partition) makes the log read again, so a committed batch's intent is never
//! read apart from its commit.
//!
//! Between a crash and the next recovery, readers can see the files of the unfinished batch; once a
//! writer recovers the partition they are gone before anything else happens. The log lives outside
//! `<table>/`, because DuckDB reads every `*.parquet` below the table folder, hidden or not.
//!
//! # Compaction
//!
//! A compactor ([`compact`]) rewrites one folder's committed files of one partition into one file
//! (or a few of at most 256 MiB) named `…-<first>-<last>-<seq>c.parquet`, `seq` being the number of
//! a `compact` record it puts in the partition's log (put-if-absent, like every record; its put is
//! the compaction's commit point, and any compactor rolls a recorded compaction forward after a
//! crash). The rules, pure and unit-tested in [`log`]:
//!
//! - **Which files.** Only files the log says are committed ([`log::LogState::file_is_committed`]):
//!   a writer's file below the newest commit whose intent neither aborted nor tore, or a
//!   compaction's file whose record is in the log or below the newest commit. A batch in flight, an
//!   aborted batch's late files and the files of an unfinished compaction are never rewritten.
//! - **Writers are not fenced by compactions.** A compaction does not own the partition or move
//!   its position. A writer that finds its next number taken by a `compact` puts its record at the
//!   number after ([`log::when_taken`]); a batch is committed when the first record after its
//!   intent that is not a `compact` is its commit. A rival's claim still fences as before.
//! - **Compactors are fenced.** A compactor only puts at the next free number it read; if it was
//!   taken (by a writer or another compactor) it gives up and plans again next run. Before
//!   exposing anything it checks, under the folder's lock on a local lake, that every file it
//!   replaces is still there, so a compactor that planned on a stale view (a rival compacted the
//!   same files first) changes nothing.
//! - **Records stay until finished.** Writers never tidy a `compact` record; the compactor removes
//!   it once its compaction is finished and it lies below the newest commit (so its number is never
//!   taken again), not between an aborted intent and the record that stops that intent's writer,
//!   and above no intent still in the log (removed first, it would leave a hole between an intent
//!   and its commit).
//!
//! **Readers.** On a local lake the folder is swapped whole with `renameat2(RENAME_EXCHANGE)`:
//! a listing sees every old file or the compacted copy, never both and never neither. Writers hold
//! a shared [`FolderLock`] while they add or remove a file in a folder, and the compactor holds it
//! exclusively from its last listing of the folder to the swap, so a late evaluation written into
//! a folder being compacted is linked into the new copy, never lost with the old one. On an object
//! store there is no rename: between the put of a merged file and the deletion of the files it
//! replaces, a listing can show both, so a reader can count those rows twice (never miss one).
//!
//! # Dedup snapshots
//!
//! Each Kafka partition's dedup keys are kept as a snapshot beside the log
//! (`_haochaping/snapshots/<table>/<topic>/<partition>/<upto>.dedup`, 16 bytes a key and a
//! checksum; see [`crate::transform::dedup`]). It holds the rows of every committed file numbered
//! below `upto`, where `upto` is a number below which the log is settled (a recovery's claim, or
//! [`log::LogState::settled_below`]). A compaction's file numbered at or above `upto` holds rows
//! the snapshot may already have; reading them again changes nothing. Recovery reads the newest
//! snapshot and only the files numbered from its `upto` on (see [`crate::engine::recovery`]).

pub mod compact;
pub mod log;
pub mod root;

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::sink::parquet::{parse_day, OpenFiles, PartitionKey, TableError, TableRows};
pub use log::{BatchRange, BatchRecord};
use log::{LogRecord, RecordKind};
pub use root::{LakeLocation, LakeRoot};

/// The folder of the partitions' logs, beside the tables.
pub const LOG_FOLDER: &str = "_haochaping/log";
/// The folder of the partitions' dedup snapshots, beside the tables (derived data).
pub const SNAPSHOT_FOLDER: &str = "_haochaping/snapshots";
/// The folder of the local lake's per-folder lock files, beside the tables (see [`FolderLock`]).
pub const LOCK_FOLDER: &str = "_haochaping/locks";

/// How many fsyncs of a local lake's files and folders run at once (see `Lake::make_durable`).
const SYNC_PARALLELISM: usize = 16;

/// An advisory `flock` on one `dt=…/city=…` folder of a local lake, released when dropped (or when
/// the process dies). Writers take it shared while they add or remove a file in the folder; a
/// compactor takes it exclusive from its last listing of the folder until it has swapped the folder
/// for its compacted copy, so no file can be added to (or removed from) the old copy in between and
/// be lost with it. The lock file lives outside the table, so the swap does not move it.
#[derive(Debug)]
pub struct FolderLock {
    _file: std::fs::File,
}

impl FolderLock {
    fn acquire(path: PathBuf, exclusive: bool) -> Result<Self, LakeError> {
        let io = |source| LakeError::Io {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        let operation = if exclusive {
            rustix::fs::FlockOperation::LockExclusive
        } else {
            rustix::fs::FlockOperation::LockShared
        };
        rustix::fs::flock(&file, operation).map_err(|e| io(e.into()))?;
        Ok(Self { _file: file })
    }
}

/// Errors of the lake.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("lake location {0:?}: {1}")]
    Location(String, String),
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("local file system at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("log record {path}: {source}")]
    Record {
        path: String,
        source: serde_json::Error,
    },
    #[error("state file {path}: {source}")]
    State {
        path: String,
        source: serde_json::Error,
    },
    #[error("reading {path}: {source}")]
    Parquet {
        path: String,
        source: parquet::errors::ParquetError,
    },
    #[error("fenced: another writer took record {seq} of {topic}/{partition}; this one no longer owns the partition")]
    Fenced {
        topic: String,
        partition: i32,
        seq: u64,
    },
    #[error("gave up the batch whose intent is record {seq} of {topic}/{partition}: too old to commit (over 12 h since it was put); the partition's next owner writes it again")]
    Expired {
        topic: String,
        partition: i32,
        seq: u64,
    },
    #[error("{topic}/{partition}: other writers kept changing the partition's log; gave up after {attempts} attempts")]
    Contended {
        topic: String,
        partition: i32,
        attempts: u32,
    },
}

impl LakeError {
    /// Whether this writer lost the partition to another, or gave up a batch too old to commit
    /// (not a failure of the lake: the writer must drop the partition, not retry).
    pub fn is_fenced(&self) -> bool {
        matches!(self, LakeError::Fenced { .. } | LakeError::Expired { .. })
    }
}

/// A writer's hold on one partition: the sequence number its next record must take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub topic: String,
    pub partition: i32,
    next_seq: u64,
    /// The intent of a batch whose commit has not returned yet: a retry of that batch settles it
    /// there instead of putting the intent again.
    in_flight: Option<InFlight>,
}

impl Lease {
    /// The number the next batch's intent (and its files' names) will take.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    fn in_flight(&self, range: &BatchRange) -> Option<&InFlight> {
        self.in_flight.as_ref().filter(|f| f.range == *range)
    }
}

/// Where a batch's intent stands, and since when (this writer's clock).
#[derive(Debug, Clone, PartialEq, Eq)]
struct InFlight {
    seq: u64,
    range: BatchRange,
    since_us: i64,
}

/// How old an intent may be when its commit is put: half the time the log keeps an aborted
/// intent, so that a rival cannot have tidied it (and the record that stopped it) away before the
/// commit lands, which would let the commit into the hole and the files count as committed.
const INTENT_MAX_AGE_US: i64 = log::ABORTED_INTENT_RETENTION_US / 2;

fn too_old(since_us: i64) -> bool {
    now_us().saturating_sub(since_us) > INTENT_MAX_AGE_US
}

/// A log record as read back (see `Lake::read_record`).
#[derive(Debug)]
enum Stored {
    Record(LogRecord),
    /// Empty or unreadable: a power loss before the store made it durable.
    Torn,
    /// Listed, then deleted before the read.
    Gone,
}

impl Stored {
    fn into_record(self) -> Option<LogRecord> {
        match self {
            Stored::Record(record) => Some(record),
            Stored::Torn | Stored::Gone => None,
        }
    }
}

/// The result of recovering one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// First offset not yet in the lake; `None` when the lake has nothing of this partition.
    pub next_offset: Option<i64>,
    /// Data files of uncommitted batches that were deleted.
    pub rolled_back_files: Vec<String>,
    /// This writer's hold on the partition.
    pub lease: Lease,
    /// The number of this writer's claim: every file numbered below it is settled, committed or
    /// rolled back (see [`Recovery::counts`]).
    pub claimed: u64,
    /// The log as read before the claim.
    pub log: log::LogState,
}

impl Recovery {
    /// Whether the rows of a data file of the partition count: below the claim, only committed
    /// writers' files (a fenced writer's file written after its rollback does not); at or above
    /// it, files a writer put since, as before. A compaction's file counts whenever it is visible:
    /// it appears only after its `compact` record, which may have landed after this recovery read
    /// the log (the claim then moved past it).
    pub fn counts(&self, name: &DataFileName<'_>) -> bool {
        name.compacted
            || name.seq >= self.claimed
            || self.log.file_is_committed(name.seq, name.compacted)
    }

    /// For a listing over many sources: a file of another (topic, partition) is taken as it is
    /// (its own log is not read), a file of the recovered one only where it [`counts`](Self::counts).
    pub fn owns_or_counts(&self, name: &DataFileName<'_>) -> bool {
        name.topic != self.lease.topic
            || name.partition != self.lease.partition
            || self.counts(name)
    }
}

/// The parts of a data file's name, `<topic>-<partition>-<first>-<last>-<seq>.parquet`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataFileName<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub seq: u64,
    /// Written by a compaction (`…-<seq>c.parquet`): `seq` is its `compact` record's number.
    pub compacted: bool,
}

impl<'a> DataFileName<'a> {
    pub fn parse(path: &'a Path) -> Option<Self> {
        let name = path.filename()?.strip_suffix(".parquet")?;
        let mut parts = name.rsplitn(5, '-');
        let seq = parts.next()?;
        let (seq, compacted) = match seq.strip_suffix('c') {
            Some(seq) => (seq, true),
            None => (seq, false),
        };
        if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let seq = seq.parse().ok()?;
        let last_offset = parts.next()?.parse().ok()?;
        let first_offset = parts.next()?.parse().ok()?;
        let partition = parts.next()?.parse().ok()?;
        Some(Self {
            topic: parts.next()?,
            partition,
            first_offset,
            last_offset,
            seq,
            compacted,
        })
    }
}

/// One data file found in the lake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    pub path: Path,
    pub day: i32,
}

/// A lake rooted at a local folder or an object store URL.
#[derive(Debug, Clone)]
pub struct Lake {
    store: Arc<dyn ObjectStore>,
    /// Set for a local lake: files are fsynced there and crashed puts' staging files removed.
    local_root: Option<PathBuf>,
    table: String,
    /// This writer instance, in the records it puts.
    writer: String,
}

fn new_writer_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl Lake {
    /// Opens a lake at a local folder (created if missing).
    pub fn open_local(root: impl Into<PathBuf>, table: &str) -> Result<Self, LakeError> {
        Ok(Self::open(&LakeRoot::local(root)?, table))
    }

    /// Opens one table of a lake, local or on an object store.
    pub fn open(root: &LakeRoot, table: &str) -> Self {
        Self {
            store: root.store().clone(),
            local_root: root.local_path().map(ToOwned::to_owned),
            table: table.to_owned(),
            writer: new_writer_id(),
        }
    }

    /// Opens a lake on any object store (in-memory in tests, S3 in production).
    pub fn with_store(store: Arc<dyn ObjectStore>, table: &str) -> Self {
        Self {
            store,
            local_root: None,
            table: table.to_owned(),
            writer: new_writer_id(),
        }
    }

    /// The same lake seen by another writer instance (tests of fencing; a second process).
    pub fn another_writer(&self) -> Self {
        Self {
            writer: new_writer_id(),
            ..self.clone()
        }
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub fn local_root(&self) -> Option<&std::path::Path> {
        self.local_root.as_deref()
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// `<table>/dt=…/city=…/<topic>-<partition>-<first>-<last>-<seq>.parquet`
    pub fn data_path(&self, key: &PartitionKey, range: &BatchRange, seq: u64) -> Path {
        Path::from(format!(
            "{}/{}/{}-{}-{:020}-{:020}-{seq}.parquet",
            self.table,
            key.path(),
            range.topic,
            range.partition,
            range.first_offset,
            range.last_offset
        ))
    }

    fn log_dir(&self, topic: &str, partition: i32) -> Path {
        Path::from(format!("{LOG_FOLDER}/{}/{topic}/{partition}", self.table))
    }

    fn record_path(&self, topic: &str, partition: i32, seq: u64) -> Path {
        self.log_dir(topic, partition).join(log::record_name(seq))
    }

    /// Encodes the rows of a batch's buffers as one Parquet file per Hive partition, the files on
    /// every core. Each partition's slices are concatenated by the thread that encodes them and
    /// dropped once encoded, so a batch's rows are held once plus a file's worth per core, not
    /// twice (as when every partition is concatenated first, [`crate::sink::parquet::finish_parts`]).
    pub fn encode_parts(
        parts: Vec<Box<dyn TableRows>>,
        zstd_level: i32,
    ) -> Result<Vec<(PartitionKey, Bytes)>, TableError> {
        OpenFiles::new(zstd_level).append(parts)?.finish()
    }

    /// Puts the record `make(seq)` at `seq` if the number is free, and returns the number it took,
    /// once this writer is known to be in sequence there (see [`Lake::check_in_sequence`]).
    async fn put_record(
        &self,
        topic: &str,
        partition: i32,
        seq: u64,
        make: impl Fn(u64) -> LogRecord,
    ) -> Result<u64, LakeError> {
        let compact = make(seq).kind == RecordKind::Compact;
        let seq = self.take_number(topic, partition, seq, make).await?;
        if !compact {
            // A compactor owns nothing: it checks its plan against the lake before exposing it.
            self.check_in_sequence(topic, partition, seq).await?;
        }
        Ok(seq)
    }

    /// Puts the record `make(seq)` at `seq` if the number is free, and returns where this
    /// writer's record now stands. A number taken by this writer's own earlier attempt at the same
    /// record (a retry after a lost answer or a failed step) counts as done; taken by a compaction,
    /// a writer moves on to the next number (see [`log::when_taken`]); taken by anything else (or
    /// by a record torn or gone by the time it is read), the writer is fenced.
    async fn take_number(
        &self,
        topic: &str,
        partition: i32,
        mut seq: u64,
        make: impl Fn(u64) -> LogRecord,
    ) -> Result<u64, LakeError> {
        let create = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        loop {
            let record = make(seq);
            let path = self.record_path(topic, partition, seq);
            let bytes = serde_json::to_vec_pretty(&record).map_err(|source| LakeError::Record {
                path: path.to_string(),
                source,
            })?;
            match self
                .store
                .put_opts(&path, bytes.into(), create.clone())
                .await
            {
                Ok(_) => {
                    self.make_durable(&[path.to_string()]).await?;
                    return Ok(seq);
                }
                Err(object_store::Error::AlreadyExists { .. }) => {
                    let existing = self.read_record(&path).await?.into_record();
                    match log::when_taken(&record, existing.as_ref()) {
                        log::Taken::Done => return Ok(seq),
                        log::Taken::MoveOn => seq += 1,
                        log::Taken::Fenced => return Err(self.fenced(topic, partition, seq)),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Whether this writer, whose record stands at `seq`, still owns the partition. The number was
    /// free, but it may have been freed by tidying after another writer moved on: then that
    /// writer's newest commit stands above it, and this writer is stale.
    async fn check_in_sequence(
        &self,
        topic: &str,
        partition: i32,
        seq: u64,
    ) -> Result<(), LakeError> {
        let path = self.record_path(topic, partition, seq);
        let mut above = self
            .store
            .list_with_offset(Some(&self.log_dir(topic, partition)), &path);
        while let Some(meta) = above.try_next().await? {
            let newer = meta
                .location
                .filename()
                .and_then(log::parse_record_name)
                .is_some_and(|s| s > seq);
            if !newer {
                continue;
            }
            // This writer's own later record is a retry's, not a rival's; a compaction fences no
            // one. A record torn, or gone since the listing, counts as a rival's: a record above
            // this writer's is tidied only below a newer commit, which this listing may not show.
            let rival = match self.read_record(&meta.location).await? {
                Stored::Record(r) => r.writer != self.writer && r.kind != RecordKind::Compact,
                Stored::Torn | Stored::Gone => true,
            };
            if rival {
                return Err(self.fenced(topic, partition, seq));
            }
        }
        Ok(())
    }

    fn fenced(&self, topic: &str, partition: i32, seq: u64) -> LakeError {
        LakeError::Fenced {
            topic: topic.to_owned(),
            partition,
            seq,
        }
    }

    /// A record as read back: whole, torn (empty or not a record: a power loss before it was
    /// durable), or gone (listed, then tidied away by another writer before this read).
    async fn read_record(&self, path: &Path) -> Result<Stored, LakeError> {
        let bytes = match self.store.get(path).await {
            Ok(got) => got.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => return Ok(Stored::Gone),
            Err(e) => return Err(e.into()),
        };
        match serde_json::from_slice(&bytes) {
            Ok(record) => Ok(Stored::Record(record)),
            Err(error) => {
                tracing::warn!(record = %path, %error, "torn log record; treated as absent");
                Ok(Stored::Torn)
            }
        }
    }

    /// The partition's log, sorted by sequence number. A record listed but gone when read (tidied
    /// by another writer meanwhile) makes the whole log read again: read as a hole, it would have
    /// cut an intent from its commit, and the batch, committed, would have been rolled back.
    async fn read_log(&self, topic: &str, partition: i32) -> Result<log::Entries, LakeError> {
        const ATTEMPTS: u32 = 20;
        let dir = self.log_dir(topic, partition);
        'listing: for _ in 0..ATTEMPTS {
            let mut seqs: Vec<(u64, Path)> = self
                .store
                .list(Some(&dir))
                .try_filter_map(|meta| async move {
                    Ok(meta
                        .location
                        .filename()
                        .and_then(log::parse_record_name)
                        .map(|seq| (seq, meta.location.clone())))
                })
                .try_collect()
                .await?;
            seqs.sort_unstable_by_key(|(seq, _)| *seq);
            let mut entries = Vec::with_capacity(seqs.len());
            for (seq, path) in seqs {
                match self.read_record(&path).await? {
                    Stored::Record(record) => entries.push((seq, Some(record))),
                    Stored::Torn => entries.push((seq, None)),
                    Stored::Gone => continue 'listing,
                }
            }
            return Ok(entries);
        }
        Err(LakeError::Contended {
            topic: topic.to_owned(),
            partition,
            attempts: ATTEMPTS,
        })
    }

    /// Writes a batch's files and commits it (steps 2–6 of the protocol), and returns what it
    /// committed. Idempotent for this writer: after an error other than [`LakeError::Fenced`],
    /// calling it again with the same batch and lease first reads what became of the earlier
    /// attempt's intent ([`log::intent_fate`]) and goes on from there; it never puts that intent
    /// again, which could fill a hole the log has left since.
    pub async fn commit_batch(
        &self,
        lease: &mut Lease,
        range: BatchRange,
        files: Vec<(PartitionKey, Bytes)>,
        rows: u64,
    ) -> Result<BatchRecord, LakeError> {
        let (topic, partition) = (range.topic.clone(), range.partition);
        // The files' names carry the intent's number, which a compaction may push further.
        let batch_at = |seq: u64| BatchRecord {
            range: range.clone(),
            files: files
                .iter()
                .map(|(key, _)| self.data_path(key, &range, seq).to_string())
                .collect(),
            rows,
        };
        let (seq, since_us) = match lease.in_flight(&range) {
            Some(&InFlight { seq, since_us, .. }) => {
                let batch = batch_at(seq);
                match self
                    .settle_earlier_attempt(&topic, partition, seq, &batch)
                    .await?
                {
                    Some(commit_seq) => return Ok(self.finish(lease, commit_seq, batch).await),
                    // Checked before any file is put again: a put landing after a rival's
                    // tidy of the aged intent would stay, counted as committed.
                    None if too_old(since_us) => {
                        return Err(self.give_up(lease, &batch, seq).await?);
                    }
                    None => (seq, since_us),
                }
            }
            None => {
                // Taken before the put, so the intent is never younger than this says.
                let since_us = now_us();
                // Fenced here, no record of this writer's stands at the number: files named
                // after it are not known to be its own, so none is touched.
                let seq = self
                    .take_number(&topic, partition, lease.next_seq, |seq| {
                        self.record(RecordKind::Intent, Some(batch_at(seq)))
                    })
                    .await?;
                lease.in_flight = Some(InFlight {
                    seq,
                    range: range.clone(),
                    since_us,
                });
                // Fenced here, this writer has put no file of the batch yet.
                self.check_in_sequence(&topic, partition, seq).await?;
                (seq, since_us)
            }
        };
        let batch = batch_at(seq);
        let puts: Vec<(Path, Bytes)> = files
            .into_iter()
            .zip(batch.files.iter())
            .map(|((_, bytes), path)| (Path::from(path.as_str()), bytes))
            .collect();
        // Every put ends before an error is returned: a put still running after it could land its
        // file after a retry (or the rival that fenced this writer) had swept the batch's files.
        let landed: Vec<Result<_, LakeError>> = futures::stream::iter(puts)
            .map(|(path, bytes)| async move {
                let _lock = self.lock_folder_of(path.as_ref(), false).await?;
                self.store
                    .put(&path, PutPayload::from(bytes))
                    .await
                    .map_err(LakeError::from)
            })
            .buffer_unordered(8)
            .collect()
            .await;
        landed.into_iter().collect::<Result<Vec<_>, _>>()?;
        self.make_durable(&batch.files).await?;
        if too_old(since_us) {
            return Err(self.give_up(lease, &batch, seq).await?);
        }
        let commit = self
            .put_record(&topic, partition, seq + 1, |_| {
                self.record(RecordKind::Commit, Some(batch.clone()))
            })
            .await;
        match commit {
            Ok(commit_seq) => Ok(self.finish(lease, commit_seq, batch).await),
            Err(fenced @ LakeError::Fenced { .. }) => {
                // A rival's record stands at or above the commit's number. Whether the batch
                // counts is the log's to say: a rival that claimed after this commit landed
                // took the batch as committed, and its files must stay.
                match self
                    .settle_earlier_attempt(&topic, partition, seq, &batch)
                    .await
                {
                    Ok(Some(commit_seq)) => Ok(self.finish(lease, commit_seq, batch).await),
                    Ok(None) => Err(fenced),
                    Err(error) => {
                        // The intent stays in the log: if it aborted, the next recovery or tidy sweeps its files.
                        tracing::warn!(%topic, partition, %error, "reading the log after a fence failed; the batch's files are left to the partition's owner");
                        Err(fenced)
                    }
                }
            }
            Err(e) => Err(e),
        }
    }

    /// A record of this writer's, written now.
    fn record(&self, kind: RecordKind, batch: Option<BatchRecord>) -> LogRecord {
        LogRecord {
            kind,
            writer: self.writer.clone(),
            written_at_us: now_us(),
            batch,
            compaction: None,
        }
    }

    /// Gives up a batch whose intent is too old to commit (a stall, or half a day of retries):
    /// its files go, and the partition's next owner writes it again. Returns the error to return.
    async fn give_up(
        &self,
        lease: &mut Lease,
        batch: &BatchRecord,
        seq: u64,
    ) -> Result<LakeError, LakeError> {
        self.delete_files(&batch.files).await?;
        lease.in_flight = None;
        Ok(LakeError::Expired {
            topic: batch.range.topic.clone(),
            partition: batch.range.partition,
            seq,
        })
    }

    /// Reads what became of this writer's intent for `batch` at `seq` (an earlier attempt's, or
    /// this one's after a fence) and acts on it: `Some(commit)` when the batch is committed;
    /// `None` when it is still this writer's to finish; fenced otherwise, after deleting the
    /// intent's files if it aborted (puts of an earlier attempt may have landed after the rival's
    /// rollback).
    async fn settle_earlier_attempt(
        &self,
        topic: &str,
        partition: i32,
        seq: u64,
        batch: &BatchRecord,
    ) -> Result<Option<u64>, LakeError> {
        let entries = self.read_log(topic, partition).await?;
        let intent = self.record(RecordKind::Intent, Some(batch.clone()));
        match log::intent_fate(&entries, seq, &intent) {
            log::IntentFate::Committed(commit_seq) => Ok(Some(commit_seq)),
            log::IntentFate::Open => Ok(None),
            log::IntentFate::Aborted => {
                self.delete_files(&batch.files).await?;
                Err(self.fenced(topic, partition, seq))
            }
            // Committed, and another writer has moved on since: the files stay.
            log::IntentFate::Tidied => Err(self.fenced(topic, partition, seq)),
        }
    }

    /// After the batch's commit at `commit_seq`: the lease moves past it, and the log is tidied.
    async fn finish(&self, lease: &mut Lease, commit_seq: u64, batch: BatchRecord) -> BatchRecord {
        lease.next_seq = commit_seq + 1;
        lease.in_flight = None;
        // The batch is committed: a failed tidy must not make the caller retry it. The next
        // commit's tidy (or the next recovery) does this one's.
        let (topic, partition) = (&batch.range.topic, batch.range.partition);
        if let Err(error) = self.tidy(topic, partition, commit_seq).await {
            tracing::warn!(%topic, partition, %error, "tidying the log after a commit failed; the next commit tidies again");
        }
        batch
    }

    /// Deletes what the log no longer needs below `upto`, and sweeps the files of aborted intents
    /// once more (a fenced writer that wrote them after its intent was rolled back).
    async fn tidy(&self, topic: &str, partition: i32, upto: u64) -> Result<(), LakeError> {
        let entries = self.read_log(topic, partition).await?;
        let below: Vec<_> = entries.into_iter().filter(|(s, _)| *s <= upto).collect();
        let state = log::read_log(&below, now_us());
        for (_, aborted) in &state.uncommitted {
            self.delete_files(&aborted.files).await?;
        }
        for seq in state.deletable {
            if seq < upto {
                self.delete_quietly(&self.record_path(topic, partition, seq))
                    .await?;
            }
        }
        Ok(())
    }

    async fn delete_quietly(&self, path: &Path) -> Result<(), LakeError> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete_files(&self, files: &[String]) -> Result<(), LakeError> {
        for file in files {
            let _lock = self.lock_folder_of(file, false).await?;
            self.delete_quietly(&Path::from(file.as_str())).await?;
            self.remove_staging_leftovers(file)?;
        }
        Ok(())
    }

    /// On a local lake, an advisory lock on the folder of `file` (see [`FolderLock`]): shared for
    /// a writer adding or removing one file, exclusive for a compactor swapping the folder.
    /// `None` elsewhere: an object store has no folders to swap.
    async fn lock_folder_of(
        &self,
        file: &str,
        exclusive: bool,
    ) -> Result<Option<FolderLock>, LakeError> {
        match file.rsplit_once('/') {
            Some((folder, _)) => self.lock_folder(folder, exclusive).await,
            None => Ok(None),
        }
    }

    async fn lock_folder(
        &self,
        folder: &str,
        exclusive: bool,
    ) -> Result<Option<FolderLock>, LakeError> {
        let Some(root) = &self.local_root else {
            return Ok(None);
        };
        let path = root.join(LOCK_FOLDER).join(format!("{folder}.lock"));
        tokio::task::spawn_blocking(move || FolderLock::acquire(path, exclusive))
            .await
            .map_err(|e| LakeError::Io {
                path: PathBuf::from(LOCK_FOLDER),
                source: std::io::Error::other(e),
            })?
            .map(Some)
    }

    /// Recovers one partition and claims it for this writer: rolls back the batches that never
    /// committed and returns where to resume.
    pub async fn recover(&self, topic: &str, partition: i32) -> Result<Recovery, LakeError> {
        const ATTEMPTS: u32 = 20;
        for _ in 0..ATTEMPTS {
            let entries = self.read_log(topic, partition).await?;
            let state = log::read_log(&entries, now_us());
            // Claim first, then roll back. Until the claim stands, the writer of an uncommitted
            // batch may still commit it (it was only slow), and its files must then stay; once the
            // claim stands at the log's next number, that writer's commit finds the number taken
            // and is fenced, so its files can go. Rolling back first lost a batch whose commit
            // landed between the rollback and the claim (the claim then failed, and the log read
            // again said the batch was committed, its files already deleted).
            let claim = |_| self.record(RecordKind::Claim, None);
            let claimed = match self
                .put_record(topic, partition, state.next_seq, claim)
                .await
            {
                Ok(claimed) => claimed,
                // Another writer claimed or wrote meanwhile: read the log again.
                Err(LakeError::Fenced { .. }) => continue,
                Err(e) => return Err(e),
            };
            let mut rolled_back_files = Vec::new();
            for (_, batch) in &state.uncommitted {
                self.delete_files(&batch.files).await?;
                rolled_back_files.extend(batch.files.iter().cloned());
            }
            if !state.torn.is_empty() {
                // A torn record may have been an intent whose file list is lost: its files carry
                // its number. Rare (a power loss), so a listing of the partition's data is fine.
                for file in self.partition_files(topic, partition, i32::MIN).await? {
                    let torn = DataFileName::parse(&file.path)
                        .is_some_and(|name| state.torn.contains(&name.seq));
                    if torn {
                        self.delete_files(&[file.path.to_string()]).await?;
                        rolled_back_files.push(file.path.to_string());
                    }
                }
            }
            for &seq in &state.deletable {
                self.delete_quietly(&self.record_path(topic, partition, seq))
                    .await?;
            }
            return Ok(Recovery {
                next_offset: state.next_offset(),
                rolled_back_files,
                lease: Lease {
                    topic: topic.to_owned(),
                    partition,
                    next_seq: claimed + 1,
                    in_flight: None,
                },
                claimed,
                log: state,
            });
        }
        Err(LakeError::Contended {
            topic: topic.to_owned(),
            partition,
            attempts: ATTEMPTS,
        })
    }

    /// What the partition's log says now (for compaction and dedup snapshots).
    pub async fn log_state(&self, topic: &str, partition: i32) -> Result<log::LogState, LakeError> {
        let entries = self.read_log(topic, partition).await?;
        Ok(log::read_log(&entries, now_us()))
    }

    /// Every (topic, partition) that has a log in this table.
    pub async fn logged_partitions(
        &self,
    ) -> Result<std::collections::BTreeSet<(String, i32)>, LakeError> {
        let dir = Path::from(format!("{LOG_FOLDER}/{}", self.table));
        let prefix = dir.parts().count();
        let mut found = std::collections::BTreeSet::new();
        let mut listing = self.store.list(Some(&dir));
        while let Some(meta) = listing.try_next().await? {
            let parts: Vec<_> = meta.location.parts().skip(prefix).collect();
            if let [topic, partition, _record] = parts.as_slice() {
                if let Ok(partition) = partition.as_ref().parse() {
                    found.insert((topic.as_ref().to_owned(), partition));
                }
            }
        }
        Ok(found)
    }

    fn snapshot_dir(&self, topic: &str, partition: i32) -> Path {
        Path::from(format!(
            "{SNAPSHOT_FOLDER}/{}/{topic}/{partition}",
            self.table
        ))
    }

    /// Stores a partition's dedup snapshot covering the files numbered below `upto`, then removes
    /// the older ones. A plain put: a snapshot is derived data, and a put is atomic.
    pub async fn put_snapshot(
        &self,
        topic: &str,
        partition: i32,
        upto: u64,
        bytes: Vec<u8>,
    ) -> Result<(), LakeError> {
        let dir = self.snapshot_dir(topic, partition);
        let path = dir.clone().join(format!("{upto:020}.dedup"));
        self.store.put(&path, PutPayload::from(bytes)).await?;
        self.make_durable(&[path.to_string()]).await?;
        let older: Vec<Path> = self
            .store
            .list(Some(&dir))
            .try_filter_map(|meta| {
                let path = path.clone();
                async move { Ok((meta.location < path).then_some(meta.location)) }
            })
            .try_collect()
            .await?;
        for old in older {
            self.delete_quietly(&old).await?;
        }
        Ok(())
    }

    /// The partition's newest dedup snapshot: its `upto` (from its name) and its bytes.
    pub async fn latest_snapshot(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Option<(u64, Bytes)>, LakeError> {
        let dir = self.snapshot_dir(topic, partition);
        let newest = self
            .store
            .list(Some(&dir))
            .try_filter_map(|meta| async move {
                let upto = meta
                    .location
                    .filename()
                    .and_then(|n| n.strip_suffix(".dedup"))
                    .and_then(|n| n.parse::<u64>().ok());
                Ok(upto.map(|u| (u, meta.location)))
            })
            .try_fold(None, |best: Option<(u64, Path)>, found| async move {
                Ok(match best {
                    Some(best) if best.0 >= found.0 => Some(best),
                    _ => Some(found),
                })
            })
            .await?;
        let Some((upto, path)) = newest else {
            return Ok(None);
        };
        match self.store.get(&path).await {
            Ok(got) => Ok(Some((upto, got.bytes().await?))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The data files of one Kafka partition dated on or after `since_day`.
    pub async fn partition_files(
        &self,
        topic: &str,
        partition: i32,
        since_day: i32,
    ) -> Result<Vec<DataFile>, LakeError> {
        self.files_where(
            |day| day >= since_day,
            |name| name.topic == topic && name.partition == partition,
        )
        .await
    }

    /// The data files of the days `days` takes (days since 1970-01-01) whose name matches; only
    /// those days' folders are listed.
    pub async fn files_where(
        &self,
        days: impl Fn(i32) -> bool,
        matches: impl Fn(&DataFileName<'_>) -> bool,
    ) -> Result<Vec<DataFile>, LakeError> {
        let table = Path::from(self.table.as_str());
        let listing = self.store.list_with_delimiter(Some(&table)).await?;
        let mut files = Vec::new();
        for day_dir in listing.common_prefixes {
            let Some(day) = day_dir
                .filename()
                .and_then(|d| d.strip_prefix("dt="))
                .and_then(parse_day)
            else {
                continue;
            };
            if !days(day) {
                continue;
            }
            // On a local lake each `city=` folder is listed under its shared lock: a compactor swaps
            // a folder and then deletes the old copy, and a walk that opened the old copy before the
            // swap and read it after the deletion began would miss live files (and a recovery would
            // rebuild its dedup state without their rows). On an object store there is no swap.
            let folders = if self.local_root.is_some() {
                self.store
                    .list_with_delimiter(Some(&day_dir))
                    .await?
                    .common_prefixes
            } else {
                vec![day_dir]
            };
            for folder in folders {
                let _lock = self.lock_folder(folder.as_ref(), false).await?;
                let mut objects = self.store.list(Some(&folder));
                while let Some(meta) = objects.try_next().await? {
                    if DataFileName::parse(&meta.location).is_some_and(|n| matches(&n)) {
                        files.push(DataFile {
                            path: meta.location,
                            day,
                        });
                    }
                }
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    /// Reads a data file whole.
    pub async fn read(&self, path: &Path) -> Result<Bytes, LakeError> {
        Ok(self.store.get(path).await?.bytes().await?)
    }

    /// On a local lake, fsyncs the files and every folder from theirs up to the root: a new
    /// `dt=`/`city=` folder is only durable once its parent is synced too. The fsyncs run
    /// [`SYNC_PARALLELISM`] at a time: each waits on the disk, not the CPU, and concurrent ones
    /// share the filesystem's journal commits (a batch fanned out to 360 folders: 2 181 fsyncs in
    /// 0.56 s one after another, 0.37 s sixteen at a time, on the project's ext4; RESULTS §21).
    /// They have no order among themselves: all of them precede the log record that names the
    /// files.
    async fn make_durable(&self, files: &[String]) -> Result<(), LakeError> {
        let Some(root) = &self.local_root else {
            return Ok(());
        };
        let mut dirs = std::collections::BTreeSet::new();
        let mut paths = Vec::with_capacity(files.len() * 2);
        for file in files {
            let path = root.join(file);
            let mut dir = path.parent();
            while let Some(d) = dir.filter(|d| d.starts_with(root)) {
                if !dirs.insert(d.to_path_buf()) {
                    break;
                }
                dir = d.parent();
            }
            paths.push(path);
        }
        paths.extend(dirs);
        futures::stream::iter(paths)
            .map(|path| async move {
                let synced = tokio::task::spawn_blocking({
                    let path = path.clone();
                    move || std::fs::File::open(&path).and_then(|f| f.sync_all())
                })
                .await
                .unwrap_or_else(|joined| Err(std::io::Error::other(joined)));
                synced.map_err(|source| LakeError::Io { path, source })
            })
            .buffer_unordered(SYNC_PARALLELISM)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// A local put that was killed midway leaves `<file>#<digits>` beside its target.
    fn remove_staging_leftovers(&self, file: &str) -> Result<(), LakeError> {
        let Some(root) = &self.local_root else {
            return Ok(());
        };
        let target = root.join(file);
        let (Some(dir), Some(name)) =
            (target.parent(), target.file_name().and_then(|n| n.to_str()))
        else {
            return Ok(());
        };
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(LakeError::Io {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        };
        let prefix = format!("{name}#");
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&prefix))
            {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(|source| LakeError::Io { path, source })?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod compact_tests;
