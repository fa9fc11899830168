//! Compaction: the many small files of a quiet `dt=…/city=…` folder rewritten into one (or a few of
//! at most [`MAX_FILE_BYTES`]) per Kafka partition, crash-safe, fenced, beside a running ingest.
//!
//! The unit of work is one folder's committed files of one partition (see the protocol in
//! [`crate::lake`]): the merged file keeps the partition in its name, so everything that finds a
//! partition's files by name (recovery, the dedup rebuild, the sweep of a torn intent) still does,
//! and the rows keep their `kafka_partition` and `kafka_offset`.
//!
//! 1. **Plan.** Read the partition's log, list the folder, keep the files the log says are
//!    committed ([`LogState::file_is_committed`]) and no pending compaction touches, group them in
//!    offset order up to [`MAX_FILE_BYTES`] ([`plan_groups`]).
//! 2. **Stage.** Read each group's files and write its merged file: on a local lake into a staging
//!    folder outside the table (fsynced), elsewhere in memory.
//! 3. **Record.** Put a `compact` record at the log's next number with put-if-absent. This is the
//!    commit point. A number already taken (by a writer, a rival compactor) ends this compaction:
//!    nothing was exposed, the staging folder is removed, the next run plans again.
//! 4. **Expose** (the roll-forward, which any compactor can run again after a crash, see
//!    `Compactor::finish`). Local lake: take the folder's exclusive lock, list the folder, check
//!    that every replaced file is still there, hard-link every other file into the staging folder,
//!    fsync it, swap it with the live folder in one `renameat2(RENAME_EXCHANGE)`, release the lock,
//!    remove the old copy. Object store: put the merged files, then delete the replaced ones.
//! 5. **Remove the record** once it lies below the partition's newest commit (so its number is
//!    never taken again) and above no intent still in the log (see
//!    [`super::log::LogState::removable_compactions`]); until then it stays, and later runs find its
//!    compaction finished.
//!
//! What a reader of `read_parquet('<lake>/evaluations/**/*.parquet')` can observe:
//! - **local lake**: each folder is swapped whole, so a listing sees either every old file or the
//!   merged copy, never both, never neither. A query that listed the old files and opens one after
//!   the swap finds it gone and fails with a file-not-found error; it never returns a row twice or
//!   misses one.
//! - **object store**: there is no rename. Between the put of a merged file and the deletion of the
//!   last file it replaces, a listing can see both, so a reader can count those rows twice; it never
//!   misses a row. Readers that must be exact there read through a table format or keep the
//!   compactor to hours when no one queries.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;

use super::log::{CompactionGroup, CompactionRecord, LogRecord, LogState, RecordKind};
use super::{now_us, DataFileName, Lake, LakeError};
use crate::sink::parquet::writer_properties;

/// The largest file a compaction writes (by the size of the files it merges).
pub const MAX_FILE_BYTES: u64 = 256 << 20;
/// Where a local lake's compactions stage their folders, beside the tables.
pub const STAGING_FOLDER: &str = "_haochaping/compact";
/// A staging folder this old belongs to a compactor that died (a run takes seconds to minutes):
/// whatever it holds is either not yet recorded, rebuilt by the roll-forward, or an old copy.
const STALE_STAGING: Duration = Duration::from_secs(6 * 3600);

/// The steps of one compaction, for the hook that tests use to stop it as a crash would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Planned; nothing written.
    Planned,
    /// Merged files staged (local lake) or built in memory; no record yet.
    Staged,
    /// The `compact` record is in the log: the compaction is committed.
    Recorded,
    /// Local lake: holding the folder's lock, the staging copy complete, before the swap. Object
    /// store: the merged files put, the replaced ones not yet deleted.
    Swapping,
    /// Local lake: swapped, the lock released, the old copy not yet removed. Object store: the
    /// replaced files deleted.
    Swapped,
    /// Done, the record not yet removed.
    Finished,
}

/// A hook called at every [`Step`]; an error stops the compaction right there, as a crash would.
pub type Hook = Arc<dyn Fn(Step) -> Result<(), LakeError> + Send + Sync>;

/// What to compact, and how.
#[derive(Clone)]
pub struct CompactOptions {
    /// Only folders that have received no new file for this long.
    pub quiet_for: Duration,
    pub max_file_bytes: u64,
    pub zstd_level: i32,
    pub hook: Option<Hook>,
}

impl Default for CompactOptions {
    fn default() -> Self {
        Self {
            quiet_for: Duration::from_secs(3600),
            max_file_bytes: MAX_FILE_BYTES,
            zstd_level: 3,
            hook: None,
        }
    }
}

impl std::fmt::Debug for CompactOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompactOptions")
            .field("quiet_for", &self.quiet_for)
            .field("max_file_bytes", &self.max_file_bytes)
            .field("zstd_level", &self.zstd_level)
            .field("hook", &self.hook.is_some())
            .finish()
    }
}

/// What a compaction run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CompactReport {
    /// (folder, partition) units compacted by this run.
    pub compactions: u64,
    /// Compactions left unfinished by an earlier run and finished by this one.
    pub rolled_forward: u64,
    /// Compactions abandoned because their number was taken or their files changed meanwhile.
    pub abandoned: u64,
    pub files_replaced: u64,
    pub files_written: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub rows: u64,
    /// Data files of the table before and after the run.
    pub files_before: u64,
    pub files_after: u64,
    pub elapsed_ms: u64,
}

/// Groups files (sorted by first offset, given by size) into runs of consecutive files whose sizes
/// add up to at most `max_bytes`; only runs of two files or more are worth rewriting. Pure.
pub fn plan_groups(sizes: &[u64], max_bytes: u64) -> Vec<std::ops::Range<usize>> {
    let mut groups = Vec::new();
    let mut start = 0;
    let mut total = 0u64;
    for (i, size) in sizes.iter().enumerate() {
        if i > start && total.saturating_add(*size) > max_bytes {
            if i - start >= 2 {
                groups.push(start..i);
            }
            start = i;
            total = 0;
        }
        total = total.saturating_add(*size);
    }
    if sizes.len() - start >= 2 && total <= max_bytes {
        groups.push(start..sizes.len());
    }
    groups
}

/// One file of a folder, as listed.
#[derive(Debug, Clone)]
struct Listed {
    path: Path,
    size: u64,
}

/// How a compaction's roll-forward ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Exposed now (or found exposed): the merged files are live, the replaced ones gone.
    Done,
    /// Some replaced file is gone and its merged file is not there: the plan no longer matches the
    /// lake (a rival compactor replaced the files first). Nothing is touched.
    Void,
    /// Another compactor is rolling it forward right now; left to it.
    Busy,
}

/// Compacts every quiet folder of the lake's table (see the module doc).
pub async fn compact(lake: &Lake, options: &CompactOptions) -> Result<CompactReport, LakeError> {
    let started = Instant::now();
    let compactor = Compactor { lake, options };
    let mut report = CompactReport::default();
    if let Some(root) = lake.local_root() {
        remove_stale_staging(&root.join(STAGING_FOLDER))?;
    }
    // First, compactions that an earlier run committed and did not finish.
    for (topic, partition) in lake.logged_partitions().await? {
        let state = compactor.state(&topic, partition).await?;
        for (seq, record) in &state.compactions {
            if compactor.finish(*seq, record, None).await? == Outcome::Done {
                report.rolled_forward += 1;
            }
        }
        compactor.remove_finished(&topic, partition).await?;
    }
    let folders = compactor.folders().await?;
    report.files_before = folders.values().map(|f| f.files.len() as u64).sum();
    let quiet_since = chrono::Duration::from_std(options.quiet_for)
        .ok()
        .and_then(|quiet| chrono::Utc::now().checked_sub_signed(quiet))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    let mut states: HashMap<(String, i32), LogState> = HashMap::new();
    for (folder, contents) in &folders {
        if contents.newest > quiet_since {
            continue;
        }
        let mut by_partition: BTreeMap<(String, i32), Vec<&Listed>> = BTreeMap::new();
        for file in &contents.files {
            if let Some(name) = DataFileName::parse(&file.path) {
                by_partition
                    .entry((name.topic.to_owned(), name.partition))
                    .or_default()
                    .push(file);
            }
        }
        for ((topic, partition), files) in by_partition {
            if files.len() < 2 {
                continue;
            }
            let key = (topic.clone(), partition);
            let state = match states.get(&key) {
                Some(state) => state.clone(),
                None => {
                    let state = compactor.state(&topic, partition).await?;
                    states.insert(key.clone(), state.clone());
                    state
                }
            };
            match compactor
                .compact_one(folder, &topic, partition, &files, &state, &mut report)
                .await?
            {
                Some(Outcome::Done) => {
                    report.compactions += 1;
                    // The log moved on (our record): read it again for this partition's next folder.
                    states.remove(&key);
                }
                Some(_) => report.abandoned += 1,
                None => {}
            }
        }
    }
    for (topic, partition) in states.into_keys() {
        compactor.remove_finished(&topic, partition).await?;
    }
    report.files_after = compactor
        .folders()
        .await?
        .values()
        .map(|f| f.files.len() as u64)
        .sum();
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    crate::telemetry::compacted(
        report.files_replaced,
        report.files_written,
        report.bytes_read,
        report.bytes_written,
        started.elapsed(),
    );
    Ok(report)
}

struct FolderContents {
    files: Vec<Listed>,
    /// When its newest file appeared.
    newest: chrono::DateTime<chrono::Utc>,
}

struct Compactor<'a> {
    lake: &'a Lake,
    options: &'a CompactOptions,
}

impl Compactor<'_> {
    fn hook(&self, step: Step) -> Result<(), LakeError> {
        match &self.options.hook {
            Some(hook) => hook(step),
            None => Ok(()),
        }
    }

    fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.lake.store
    }

    async fn state(&self, topic: &str, partition: i32) -> Result<LogState, LakeError> {
        let entries = self.lake.read_log(topic, partition).await?;
        Ok(super::log::read_log(&entries, now_us()))
    }

    /// Every `dt=…/city=…` folder of the table with its files.
    async fn folders(&self) -> Result<BTreeMap<String, FolderContents>, LakeError> {
        let table = Path::from(self.lake.table.as_str());
        let mut folders: BTreeMap<String, FolderContents> = BTreeMap::new();
        let mut listing = self.store().list(Some(&table));
        while let Some(meta) = listing.try_next().await? {
            let Some((folder, _)) = meta.location.as_ref().rsplit_once('/') else {
                continue;
            };
            let entry = folders
                .entry(folder.to_owned())
                .or_insert_with(|| FolderContents {
                    files: Vec::new(),
                    newest: chrono::DateTime::<chrono::Utc>::MIN_UTC,
                });
            // Every file counts for quietness (an in-flight put's too); only data files are listed.
            entry.newest = entry.newest.max(meta.last_modified);
            if DataFileName::parse(&meta.location).is_some() {
                entry.files.push(Listed {
                    path: meta.location,
                    size: meta.size,
                });
            }
        }
        Ok(folders)
    }

    /// Compacts one folder's committed files of one partition. `None` when there is nothing to do.
    async fn compact_one(
        &self,
        folder: &str,
        topic: &str,
        partition: i32,
        files: &[&Listed],
        state: &LogState,
        report: &mut CompactReport,
    ) -> Result<Option<Outcome>, LakeError> {
        let mut committed: Vec<(DataFileName<'_>, &Listed)> = files
            .iter()
            .filter_map(|f| DataFileName::parse(&f.path).map(|n| (n, *f)))
            .filter(|(name, file)| {
                state.file_is_committed(name.seq, name.compacted)
                    && !state.in_pending_compaction(file.path.as_ref())
            })
            .collect();
        committed.sort_by_key(|(name, _)| (name.first_offset, name.last_offset, name.seq));
        let sizes: Vec<u64> = committed.iter().map(|(_, f)| f.size).collect();
        let ranges = plan_groups(&sizes, self.options.max_file_bytes);
        if ranges.is_empty() {
            return Ok(None);
        }
        let seq = state.next_seq;
        let mut groups = Vec::with_capacity(ranges.len());
        for range in ranges {
            let members = &committed[range];
            let first = members.iter().map(|(n, _)| n.first_offset).min();
            let last = members.iter().map(|(n, _)| n.last_offset).max();
            let (Some(first), Some(last)) = (first, last) else {
                continue;
            };
            groups.push(CompactionGroup {
                merged: format!(
                    "{folder}/{topic}-{partition}-{first:020}-{last:020}-{seq}c.parquet"
                ),
                replaced: members.iter().map(|(_, f)| f.path.to_string()).collect(),
            });
        }
        self.hook(Step::Planned)?;
        let mut merged = Vec::with_capacity(groups.len());
        let mut rows = 0;
        for group in &groups {
            let Some((bytes, group_rows, read)) = self.merge(&group.replaced).await? else {
                return Ok(Some(Outcome::Void));
            };
            rows += group_rows;
            report.bytes_read += read;
            merged.push(bytes);
        }
        let staging = match self.lake.local_root() {
            Some(root) => Some(self.stage(root, seq, &groups, &merged)?),
            None => None,
        };
        self.hook(Step::Staged)?;
        let record = CompactionRecord {
            folder: folder.to_owned(),
            groups,
            rows,
        };
        let put = self
            .lake
            .put_record(topic, partition, seq, |_| LogRecord {
                kind: RecordKind::Compact,
                writer: self.lake.writer.clone(),
                written_at_us: now_us(),
                batch: None,
                compaction: Some(record.clone()),
            })
            .await;
        match put {
            Ok(_) => {}
            Err(LakeError::Fenced { .. }) => {
                // A writer or another compactor took the number: nothing was exposed.
                if let Some(staging) = &staging {
                    remove_dir(staging)?;
                }
                return Ok(Some(Outcome::Void));
            }
            Err(e) => return Err(e),
        }
        self.hook(Step::Recorded)?;
        let written: u64 = merged.iter().map(|b| b.len() as u64).sum();
        let prepared = Prepared { staging, merged };
        let outcome = self.finish(seq, &record, Some(prepared)).await?;
        if outcome == Outcome::Done {
            report.files_replaced += record
                .groups
                .iter()
                .map(|g| g.replaced.len() as u64)
                .sum::<u64>();
            report.files_written += record.groups.len() as u64;
            report.bytes_written += written;
            report.rows += rows;
        }
        Ok(Some(outcome))
    }

    /// Reads files of one partition and writes their rows, in order, as one Parquet file. `None`
    /// when one of them is gone (another compactor replaced it meanwhile).
    async fn merge(&self, files: &[String]) -> Result<Option<(Bytes, u64, u64)>, LakeError> {
        let mut contents = Vec::with_capacity(files.len());
        for file in files {
            match self.store().get(&Path::from(file.as_str())).await {
                Ok(got) => contents.push((file.clone(), got.bytes().await?)),
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
        let zstd_level = self.options.zstd_level;
        let merged = tokio::task::spawn_blocking(move || merge_parquet(contents, zstd_level))
            .await
            .map_err(|e| LakeError::Io {
                path: PathBuf::from(STAGING_FOLDER),
                source: std::io::Error::other(e),
            })??;
        Ok(Some(merged))
    }

    /// Writes a compaction's merged files into its own staging folder and makes them durable.
    fn stage(
        &self,
        root: &FsPath,
        seq: u64,
        groups: &[CompactionGroup],
        merged: &[Bytes],
    ) -> Result<PathBuf, LakeError> {
        let staging = root.join(STAGING_FOLDER).join(format!(
            "{}-{seq}-{:08x}",
            self.lake.writer,
            rand::random::<u32>()
        ));
        let io = |path: &FsPath| {
            let path = path.to_owned();
            move |source| LakeError::Io { path, source }
        };
        std::fs::create_dir_all(&staging).map_err(io(&staging))?;
        for (group, bytes) in groups.iter().zip(merged) {
            let Some(name) = group.merged.rsplit('/').next() else {
                continue;
            };
            let path = staging.join(name);
            std::fs::write(&path, bytes).map_err(io(&path))?;
            sync(&path)?;
        }
        sync(&staging)?;
        if let Some(parent) = staging.parent() {
            sync(parent)?;
        }
        Ok(staging)
    }

    /// Rolls a committed compaction forward: exposes its merged files and removes the replaced ones.
    /// Idempotent, and safe to run by several compactors at once.
    async fn finish(
        &self,
        seq: u64,
        record: &CompactionRecord,
        prepared: Option<Prepared>,
    ) -> Result<Outcome, LakeError> {
        match self.lake.local_root() {
            Some(root) => self.finish_local(root, seq, record, prepared).await,
            None => self.finish_store(record, prepared).await,
        }
    }

    async fn finish_local(
        &self,
        root: &FsPath,
        seq: u64,
        record: &CompactionRecord,
        prepared: Option<Prepared>,
    ) -> Result<Outcome, LakeError> {
        let live = root.join(&record.folder);
        let staged = prepared.and_then(|p| p.staging);
        let lock = self.lake.lock_folder(&record.folder, true).await?;
        let present = list_names(&live)?;
        let name = |path: &str| path.rsplit('/').next().unwrap_or(path).to_owned();
        let merged: Vec<String> = record.groups.iter().map(|g| name(&g.merged)).collect();
        let replaced: BTreeSet<String> = record
            .groups
            .iter()
            .flat_map(|g| g.replaced.iter().map(|r| name(r)))
            .collect();
        if merged.iter().all(|m| present.contains(m)) {
            drop(lock);
            if let Some(staged) = &staged {
                remove_dir(staged)?;
            }
            return Ok(Outcome::Done);
        }
        if !replaced.iter().all(|r| present.contains(r)) {
            drop(lock);
            if let Some(staged) = &staged {
                remove_dir(staged)?;
            }
            tracing::warn!(folder = %record.folder, seq, "compaction no longer matches its folder; abandoned");
            return Ok(Outcome::Void);
        }
        // Finishing another run's compaction: build its merged files again, under the lock (rare).
        let staging = match staged {
            Some(staged) => staged,
            None => {
                let mut merged = Vec::with_capacity(record.groups.len());
                for group in &record.groups {
                    match self.merge(&group.replaced).await? {
                        Some((bytes, _, _)) => merged.push(bytes),
                        None => return Ok(Outcome::Busy),
                    }
                }
                self.stage(root, seq, &record.groups, &merged)?
            }
        };
        for entry in &present {
            if replaced.contains(entry) || merged.contains(entry) {
                continue;
            }
            let (from, to) = (live.join(entry), staging.join(entry));
            let kind = std::fs::symlink_metadata(&from).map_err(|source| LakeError::Io {
                path: from.clone(),
                source,
            })?;
            if !kind.is_file() {
                return Err(LakeError::Io {
                    path: from,
                    source: std::io::Error::other("not a file: compaction leaves the folder alone"),
                });
            }
            std::fs::hard_link(&from, &to).map_err(|source| LakeError::Io { path: to, source })?;
        }
        sync(&staging)?;
        self.hook(Step::Swapping)?;
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            &staging,
            rustix::fs::CWD,
            &live,
            rustix::fs::RenameFlags::EXCHANGE,
        )
        .map_err(|e| LakeError::Io {
            path: live.clone(),
            source: e.into(),
        })?;
        if let Some(parent) = live.parent() {
            sync(parent)?;
        }
        if let Some(parent) = staging.parent() {
            sync(parent)?;
        }
        drop(lock);
        self.hook(Step::Swapped)?;
        // The staging path now holds the old copy of the folder.
        remove_dir(&staging)?;
        Ok(Outcome::Done)
    }

    async fn finish_store(
        &self,
        record: &CompactionRecord,
        prepared: Option<Prepared>,
    ) -> Result<Outcome, LakeError> {
        let folder = Path::from(record.folder.as_str());
        let present: BTreeSet<String> = self
            .store()
            .list(Some(&folder))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await?;
        let missing: Vec<usize> = (0..record.groups.len())
            .filter(|i| !present.contains(&record.groups[*i].merged))
            .collect();
        let cannot = missing.iter().any(|i| {
            !record.groups[*i]
                .replaced
                .iter()
                .all(|r| present.contains(r))
        });
        if cannot {
            tracing::warn!(folder = %record.folder, "compaction no longer matches its folder; abandoned");
            return Ok(Outcome::Void);
        }
        let mut built = prepared.map(|p| p.merged).unwrap_or_default();
        for i in missing {
            let group = &record.groups[i];
            let bytes = match built.get_mut(i) {
                Some(bytes) => std::mem::take(bytes),
                None => match self.merge(&group.replaced).await? {
                    Some((bytes, _, _)) => bytes,
                    None => return Ok(Outcome::Busy),
                },
            };
            self.store()
                .put(&Path::from(group.merged.as_str()), PutPayload::from(bytes))
                .await?;
        }
        self.hook(Step::Swapping)?;
        for group in &record.groups {
            for file in &group.replaced {
                self.lake.delete_quietly(&Path::from(file.as_str())).await?;
            }
        }
        self.hook(Step::Swapped)?;
        Ok(Outcome::Done)
    }

    /// Removes the `compact` records whose compaction is finished and whose number may go.
    async fn remove_finished(&self, topic: &str, partition: i32) -> Result<(), LakeError> {
        let state = self.state(topic, partition).await?;
        for (seq, record) in &state.compactions {
            if !state.removable_compactions.contains(seq) {
                continue;
            }
            let finished = self.is_finished(record).await?;
            if finished {
                self.hook(Step::Finished)?;
                self.lake
                    .delete_quietly(&self.lake.record_path(topic, partition, *seq))
                    .await?;
            }
        }
        Ok(())
    }

    /// Whether nothing is left to do for a compaction: its merged files are there and its replaced
    /// files gone, or (abandoned) its merged files will never appear.
    async fn is_finished(&self, record: &CompactionRecord) -> Result<bool, LakeError> {
        let folder = Path::from(record.folder.as_str());
        let present: BTreeSet<String> = self
            .store()
            .list(Some(&folder))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await?;
        let exposed = record.groups.iter().all(|g| present.contains(&g.merged));
        let replaced_left = record
            .groups
            .iter()
            .any(|g| g.replaced.iter().any(|r| present.contains(r)));
        let abandoned = !exposed
            && record
                .groups
                .iter()
                .any(|g| g.replaced.iter().any(|r| !present.contains(r)));
        Ok((exposed && !replaced_left) || abandoned)
    }
}

/// What a compaction prepared before its record: the staging folder (local) or the merged bytes.
struct Prepared {
    staging: Option<PathBuf>,
    merged: Vec<Bytes>,
}

/// Rows of several Parquet files, in the given order, as one Parquet file: (bytes, rows, bytes
/// read). Streams batch by batch, so memory holds one batch and the output.
fn merge_parquet(
    files: Vec<(String, Bytes)>,
    zstd_level: i32,
) -> Result<(Bytes, u64, u64), LakeError> {
    let read: u64 = files.iter().map(|(_, b)| b.len() as u64).sum();
    let mut writer: Option<ArrowWriter<Vec<u8>>> = None;
    let mut rows = 0u64;
    let properties = writer_properties(zstd_level).map_err(|e| LakeError::Io {
        path: PathBuf::from(STAGING_FOLDER),
        source: std::io::Error::other(e),
    })?;
    for (path, bytes) in files {
        let fail = |source| LakeError::Parquet {
            path: path.clone(),
            source,
        };
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .map_err(fail)?
            .with_batch_size(65_536)
            .build()
            .map_err(fail)?;
        for batch in reader {
            let batch = batch.map_err(|e| fail(e.into()))?;
            if writer.is_none() {
                writer = Some(
                    ArrowWriter::try_new(
                        Vec::with_capacity(read as usize + 4096),
                        batch.schema(),
                        Some(properties.clone()),
                    )
                    .map_err(fail)?,
                );
            }
            if let Some(writer) = writer.as_mut() {
                // A file of another schema cannot be merged: the error names it.
                writer.write(&batch).map_err(fail)?;
            }
            rows += batch.num_rows() as u64;
        }
    }
    let buffer = match writer {
        // Writes the footer and hands the bytes back.
        Some(writer) => writer.into_inner().map_err(|source| LakeError::Parquet {
            path: STAGING_FOLDER.into(),
            source,
        })?,
        None => Vec::new(),
    };
    Ok((Bytes::from(buffer), rows, read))
}

/// The names in a local folder; none when it does not exist.
fn list_names(dir: &FsPath) -> Result<BTreeSet<String>, LakeError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(source) => {
            return Err(LakeError::Io {
                path: dir.to_owned(),
                source,
            })
        }
    };
    let mut names = BTreeSet::new();
    for entry in entries {
        let entry = entry.map_err(|source| LakeError::Io {
            path: dir.to_owned(),
            source,
        })?;
        if let Some(name) = entry.file_name().to_str() {
            names.insert(name.to_owned());
        }
    }
    Ok(names)
}

/// Removes the staging folders left by compactors that died long ago.
fn remove_stale_staging(dir: &FsPath) -> Result<(), LakeError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_STAGING);
        if stale {
            remove_dir(&entry.path())?;
        }
    }
    Ok(())
}

fn sync(path: &FsPath) -> Result<(), LakeError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|source| LakeError::Io {
            path: path.to_owned(),
            source,
        })
}

fn remove_dir(path: &FsPath) -> Result<(), LakeError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(LakeError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::plan_groups;

    #[test]
    fn groups_are_consecutive_bounded_and_worth_rewriting() {
        // (sizes, max, expected groups as (start, end))
        type Case = (&'static [u64], u64, &'static [(usize, usize)]);
        let cases: &[Case] = &[
            (&[], 10, &[]),
            (&[1], 10, &[]),
            (&[1, 1], 10, &[(0, 2)]),
            (&[3, 3, 3, 3], 10, &[(0, 3)]),
            (&[3, 3, 3, 3, 3, 3], 10, &[(0, 3), (3, 6)]),
            (&[20, 1, 1], 10, &[(1, 3)]),
            (&[1, 20, 1], 10, &[]),
            (&[5, 5, 5], 10, &[(0, 2)]),
            (&[10, 10], 10, &[]),
            (&[u64::MAX, u64::MAX], u64::MAX - 1, &[]),
        ];
        for (sizes, max, expected) in cases {
            let groups: Vec<(usize, usize)> = plan_groups(sizes, *max)
                .into_iter()
                .map(|r| (r.start, r.end))
                .collect();
            assert_eq!(&groups, expected, "{sizes:?} max {max}");
        }
    }
}
