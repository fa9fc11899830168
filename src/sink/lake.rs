//! The lake: Hive-partitioned Parquet behind `object_store`, written exactly once per Kafka offset.
//!
//! # The commit protocol
//!
//! The unit of work is a *batch*: the messages of one Kafka partition from `first` to `last` offset.
//! Its rows fan out over many Hive folders (`dt` × `city`), so a batch is several files, and a crash can
//! leave some of them. Every step relies only on what an object store promises (a put is atomic; there
//! is no rename), so a local folder and `s3://` behave alike:
//!
//! 1. **Intent.** Put `_haochaping/log/<table>/<topic>/<partition>/<first>-<last>.pending.json`,
//!    listing every data file the batch will write.
//! 2. **Data.** Put each file at its final place,
//!    `<table>/dt=…/city=…/<topic>-<partition>-<first>-<last>.parquet`. The name is derived from the
//!    offset range, and a put is atomic, so a reader sees a whole file or none.
//! 3. **Durability.** On a local lake, fsync the files and their folders (an object store's put is
//!    durable when it returns).
//! 4. **Commit.** Put `…/<last>.commit.json`. This put is the commit point of the batch.
//! 5. **Tidy.** Delete the intent and older commit records; then, and only then, commit `last + 1` to
//!    the Kafka consumer group (kept for lag monitoring; the lake is the source of truth).
//!
//! **Recovery** runs whenever a partition is assigned (start, restart, rebalance), before any of its
//! messages is processed: an intent at or below the newest commit was committed (tidy it); an intent
//! above it belongs to a batch that never committed, so its files are deleted (with any staging
//! leftovers a crashed local put left beside them). Consumption resumes at the newest commit's
//! `last + 1`, whatever the group's committed offset says. The rows left in the lake for the partition
//! are then exactly the committed ones, and the dedup state is rebuilt from them.
//!
//! Between a crash and the next recovery, readers can see the files of the unfinished batch; once the
//! engine runs again they are gone before anything else happens. Staging files and commit records live
//! outside `<table>/`, because DuckDB reads every `*.parquet` below the table folder, hidden or not.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};
use serde::{Deserialize, Serialize};

use arrow::array::RecordBatch;

use crate::sink::parquet::{encode_parquet, parse_day, PartitionKey, TableError};

/// The folder of commit records, beside the tables.
pub const LOG_FOLDER: &str = "_haochaping/log";

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
    #[error("commit record {path}: {source}")]
    Record {
        path: String,
        source: serde_json::Error,
    },
    #[error("reading {path}: {source}")]
    Parquet {
        path: String,
        source: parquet::errors::ParquetError,
    },
}

/// A batch's identity: one Kafka partition's offset range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRange {
    pub topic: String,
    pub partition: i32,
    pub first_offset: i64,
    pub last_offset: i64,
}

/// What the log records of a batch: its range and the files it wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRecord {
    #[serde(flatten)]
    pub range: BatchRange,
    pub files: Vec<String>,
    pub rows: u64,
}

/// The result of recovering one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// First offset not yet in the lake; `None` when the lake has nothing of this partition.
    pub next_offset: Option<i64>,
    /// Data files of uncommitted batches that were deleted.
    pub rolled_back_files: Vec<String>,
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
}

impl Lake {
    /// Opens a lake at a local folder (created if missing).
    pub fn open_local(root: impl Into<PathBuf>, table: &str) -> Result<Self, LakeError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|source| LakeError::Io {
            path: root.clone(),
            source,
        })?;
        let root = root.canonicalize().map_err(|source| LakeError::Io {
            path: root.clone(),
            source,
        })?;
        let store = LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| LakeError::Location(root.display().to_string(), e.to_string()))?;
        Ok(Self {
            store: Arc::new(store),
            local_root: Some(root),
            table: table.to_owned(),
        })
    }

    /// Opens a lake on any object store (in-memory in tests, S3 in production).
    pub fn with_store(store: Arc<dyn ObjectStore>, table: &str) -> Self {
        Self {
            store,
            local_root: None,
            table: table.to_owned(),
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

    /// `<table>/dt=…/city=…/<topic>-<partition>-<first>-<last>.parquet`
    pub fn data_path(&self, key: &PartitionKey, range: &BatchRange) -> Path {
        Path::from(format!(
            "{}/{}/{}-{}-{:020}-{:020}.parquet",
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

    fn pending_path(&self, range: &BatchRange) -> Path {
        self.log_dir(&range.topic, range.partition).child(format!(
            "{:020}-{:020}.pending.json",
            range.first_offset, range.last_offset
        ))
    }

    fn commit_path(&self, range: &BatchRange) -> Path {
        self.log_dir(&range.topic, range.partition)
            .child(format!("{:020}.commit.json", range.last_offset))
    }

    /// Encodes a batch's Hive partitions as Parquet, each at the path derived from the batch's range.
    pub fn encode_files(
        &self,
        range: &BatchRange,
        partitions: impl IntoIterator<Item = (PartitionKey, RecordBatch)>,
        zstd_level: i32,
    ) -> Result<Vec<(Path, Bytes)>, TableError> {
        partitions
            .into_iter()
            .map(|(key, batch)| {
                Ok((
                    self.data_path(&key, range),
                    encode_parquet(&batch, zstd_level)?,
                ))
            })
            .collect()
    }

    /// Writes a batch's files and commits it (steps 1–5 of the protocol, Kafka excluded).
    pub async fn commit_batch(
        &self,
        range: BatchRange,
        files: Vec<(Path, Bytes)>,
        rows: u64,
    ) -> Result<BatchRecord, LakeError> {
        let record = BatchRecord {
            range,
            files: files.iter().map(|(p, _)| p.to_string()).collect(),
            rows,
        };
        let record_bytes =
            serde_json::to_vec_pretty(&record).map_err(|source| LakeError::Record {
                path: self.pending_path(&record.range).to_string(),
                source,
            })?;
        let pending = self.pending_path(&record.range);
        self.store
            .put(&pending, PutPayload::from(record_bytes.clone()))
            .await?;
        futures::stream::iter(files)
            .map(|(path, bytes)| async move {
                self.store
                    .put(&path, PutPayload::from(bytes))
                    .await
                    .map(|_| path)
            })
            .buffer_unordered(8)
            .try_collect::<Vec<_>>()
            .await?;
        self.make_durable(&record.files)?;
        self.store
            .put(
                &self.commit_path(&record.range),
                PutPayload::from(record_bytes),
            )
            .await?;
        self.make_durable(&[self.commit_path(&record.range).to_string()])?;
        self.store.delete(&pending).await?;
        for older in self
            .list_log(&record.range.topic, record.range.partition)
            .await?
        {
            if older.as_ref().ends_with(".commit.json") && older != self.commit_path(&record.range)
            {
                self.store.delete(&older).await?;
            }
        }
        Ok(record)
    }

    async fn list_log(&self, topic: &str, partition: i32) -> Result<Vec<Path>, LakeError> {
        let dir = self.log_dir(topic, partition);
        let mut paths: Vec<Path> = self
            .store
            .list(Some(&dir))
            .map_ok(|m| m.location)
            .try_collect()
            .await?;
        paths.sort();
        Ok(paths)
    }

    async fn read_record(&self, path: &Path) -> Result<BatchRecord, LakeError> {
        let bytes = self.store.get(path).await?.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|source| LakeError::Record {
            path: path.to_string(),
            source,
        })
    }

    /// Recovers one partition: rolls back uncommitted batches and returns where to resume.
    pub async fn recover(&self, topic: &str, partition: i32) -> Result<Recovery, LakeError> {
        let log = self.list_log(topic, partition).await?;
        let mut newest: Option<BatchRecord> = None;
        for path in log.iter().filter(|p| p.as_ref().ends_with(".commit.json")) {
            let record = self.read_record(path).await?;
            if newest
                .as_ref()
                .is_none_or(|n| n.range.last_offset < record.range.last_offset)
            {
                newest = Some(record);
            }
        }
        let committed_last = newest.as_ref().map(|r| r.range.last_offset);
        let mut recovery = Recovery {
            next_offset: committed_last.map(|l| l + 1),
            ..Default::default()
        };
        for path in log.iter().filter(|p| p.as_ref().ends_with(".pending.json")) {
            let record = self.read_record(path).await?;
            if committed_last.is_none_or(|last| record.range.last_offset > last) {
                for file in &record.files {
                    match self.store.delete(&Path::from(file.as_str())).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                    self.remove_staging_leftovers(file)?;
                    recovery.rolled_back_files.push(file.clone());
                }
            }
            self.store.delete(path).await?;
        }
        Ok(recovery)
    }

    /// The committed data files of one Kafka partition dated on or after `since_day`.
    pub async fn partition_files(
        &self,
        topic: &str,
        partition: i32,
        since_day: i32,
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
            if day < since_day {
                continue;
            }
            let mut objects = self.store.list(Some(&day_dir));
            while let Some(meta) = objects.try_next().await? {
                if data_file_partition(&meta.location)
                    .is_some_and(|(t, p)| t == topic && p == partition)
                {
                    files.push(DataFile {
                        path: meta.location,
                        day,
                    });
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

    fn make_durable(&self, files: &[String]) -> Result<(), LakeError> {
        let Some(root) = &self.local_root else {
            return Ok(());
        };
        let mut dirs = std::collections::BTreeSet::new();
        for file in files {
            let path = root.join(file);
            let io = |source| LakeError::Io {
                path: path.clone(),
                source,
            };
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io)?;
            if let Some(parent) = path.parent() {
                dirs.insert(parent.to_path_buf());
            }
        }
        for dir in dirs {
            std::fs::File::open(&dir)
                .and_then(|f| f.sync_all())
                .map_err(|source| LakeError::Io {
                    path: dir.clone(),
                    source,
                })?;
        }
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

/// `(topic, partition)` of a data file named `<topic>-<partition>-<first>-<last>.parquet`.
pub fn data_file_partition(path: &Path) -> Option<(&str, i32)> {
    let name = path.filename()?.strip_suffix(".parquet")?;
    let mut parts = name.rsplitn(4, '-');
    let _last = parts.next()?;
    let _first = parts.next()?;
    let partition = parts.next()?.parse().ok()?;
    Some((parts.next()?, partition))
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    fn range(first: i64, last: i64) -> BatchRange {
        BatchRange {
            topic: "evaluations".into(),
            partition: 3,
            first_offset: first,
            last_offset: last,
        }
    }

    /// Writes a batch's intent record by hand, as a crash right after step 1 would leave it.
    async fn put_intent(lake: &Lake, record: &BatchRecord) {
        let path = lake.pending_path(&record.range);
        lake.store
            .put(&path, serde_json::to_vec(record).unwrap().into())
            .await
            .unwrap();
    }

    fn key(city: &[u8; 6]) -> PartitionKey {
        PartitionKey {
            day: 20_000,
            city: *city,
        }
    }

    #[test]
    fn file_names_carry_topic_partition_and_range() {
        let lake = Lake::with_store(Arc::new(InMemory::new()), "evaluations");
        let path = lake.data_path(
            &key(b"410300"),
            &BatchRange {
                topic: "eval-uations".into(),
                ..range(5, 9)
            },
        );
        assert_eq!(
            path.as_ref(),
            "evaluations/dt=2024-10-04/city=410300/eval-uations-3-00000000000000000005-00000000000000000009.parquet"
        );
        assert_eq!(data_file_partition(&path), Some(("eval-uations", 3)));
    }

    #[tokio::test]
    async fn committed_batches_set_the_resume_point() {
        let lake = Lake::with_store(Arc::new(InMemory::new()), "evaluations");
        assert_eq!(
            lake.recover("evaluations", 3).await.unwrap(),
            Recovery::default()
        );
        for (first, last) in [(0, 9), (10, 19)] {
            let file = lake.data_path(&key(b"410300"), &range(first, last));
            lake.commit_batch(
                range(first, last),
                vec![(file, Bytes::from_static(b"x"))],
                1,
            )
            .await
            .unwrap();
        }
        let recovery = lake.recover("evaluations", 3).await.unwrap();
        assert_eq!(recovery.next_offset, Some(20));
        assert!(recovery.rolled_back_files.is_empty());
        assert_eq!(
            lake.partition_files("evaluations", 3, 0)
                .await
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            lake.partition_files("evaluations", 4, 0)
                .await
                .unwrap()
                .len(),
            0
        );
        assert_eq!(
            lake.partition_files("evaluations", 3, 20_001)
                .await
                .unwrap()
                .len(),
            0
        );
        // Only the newest commit record is kept.
        assert_eq!(lake.list_log("evaluations", 3).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_batch_that_never_committed_is_rolled_back() {
        let lake = Lake::with_store(Arc::new(InMemory::new()), "evaluations");
        let a = lake.data_path(&key(b"410300"), &range(0, 9));
        lake.commit_batch(range(0, 9), vec![(a, Bytes::from_static(b"x"))], 1)
            .await
            .unwrap();
        // A crash after the intent and one of two files.
        let crashed = range(10, 19);
        let written = lake.data_path(&key(b"410300"), &crashed);
        let missing = lake.data_path(&key(b"410100"), &crashed);
        let record = BatchRecord {
            range: crashed.clone(),
            files: vec![written.to_string(), missing.to_string()],
            rows: 2,
        };
        put_intent(&lake, &record).await;
        lake.store
            .put(&written, Bytes::from_static(b"y").into())
            .await
            .unwrap();

        let recovery = lake.recover("evaluations", 3).await.unwrap();
        assert_eq!(recovery.next_offset, Some(10));
        assert_eq!(
            recovery.rolled_back_files,
            vec![written.to_string(), missing.to_string()]
        );
        let files = lake.partition_files("evaluations", 3, 0).await.unwrap();
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(lake
            .list_log("evaluations", 3)
            .await
            .unwrap()
            .iter()
            .all(|p| p.as_ref().ends_with(".commit.json")));
    }

    #[tokio::test]
    async fn an_intent_whose_commit_landed_is_only_tidied() {
        let lake = Lake::with_store(Arc::new(InMemory::new()), "evaluations");
        let file = lake.data_path(&key(b"410300"), &range(0, 9));
        let record = lake
            .commit_batch(
                range(0, 9),
                vec![(file.clone(), Bytes::from_static(b"x"))],
                1,
            )
            .await
            .unwrap();
        // A crash between the commit put and the intent's deletion.
        put_intent(&lake, &record).await;
        let recovery = lake.recover("evaluations", 3).await.unwrap();
        assert_eq!(recovery.next_offset, Some(10));
        assert!(recovery.rolled_back_files.is_empty());
        assert!(lake.store.head(&file).await.is_ok());
    }

    #[tokio::test]
    async fn local_lake_removes_staging_leftovers_of_a_killed_put() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open_local(dir.path(), "evaluations").unwrap();
        let crashed = range(0, 9);
        let file = lake.data_path(&key(b"410300"), &crashed);
        let record = BatchRecord {
            range: crashed.clone(),
            files: vec![file.to_string()],
            rows: 1,
        };
        put_intent(&lake, &record).await;
        let staging = dir.path().join(format!("{file}#1"));
        std::fs::create_dir_all(staging.parent().unwrap()).unwrap();
        std::fs::write(&staging, b"half").unwrap();
        lake.recover("evaluations", 3).await.unwrap();
        assert!(!staging.exists());
    }
}
