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

fn key(city: &[u8; 6]) -> PartitionKey {
    PartitionKey {
        day: 20_000,
        city: *city,
    }
}

fn one_file(content: &'static [u8]) -> Vec<(PartitionKey, Bytes)> {
    vec![(key(b"410300"), Bytes::from_static(content))]
}

fn memory_lake() -> Lake {
    Lake::with_store(Arc::new(InMemory::new()), "evaluations")
}

/// Every data file of the partition, by name.
async fn files(lake: &Lake) -> Vec<String> {
    lake.partition_files("evaluations", 3, i32::MIN)
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.path.to_string())
        .collect()
}

/// The offset ranges the partition's files cover, sorted: exactly once means no two overlap.
/// A commit that must end fenced: its error.
async fn a_fenced_commit(
    lake: &Lake,
    lease: &mut Lease,
    range: BatchRange,
    files: Vec<(PartitionKey, Bytes)>,
    rows: u64,
) -> LakeError {
    let error = lake
        .commit_batch(lease, range, files, rows)
        .await
        .expect_err("the commit was fenced");
    assert!(error.is_fenced(), "{error}");
    error
}

async fn covered(lake: &Lake) -> Vec<(i64, i64)> {
    let mut ranges: Vec<(i64, i64)> = files(lake)
        .await
        .iter()
        .map(|f| {
            let path = Path::from(f.as_str());
            let name = DataFileName::parse(&path).unwrap();
            (name.first_offset, name.last_offset)
        })
        .collect();
    ranges.sort();
    ranges
}

#[test]
fn file_names_carry_topic_partition_range_and_sequence() {
    let lake = memory_lake();
    let path = lake.data_path(
        &key(b"410300"),
        &BatchRange {
            topic: "eval-uations".into(),
            ..range(5, 9)
        },
        12,
    );
    assert_eq!(
        path.as_ref(),
        "evaluations/dt=2024-10-04/city=410300/eval-uations-3-00000000000000000005-00000000000000000009-12.parquet"
    );
    assert_eq!(
        DataFileName::parse(&path),
        Some(DataFileName {
            topic: "eval-uations",
            partition: 3,
            first_offset: 5,
            last_offset: 9,
            seq: 12,
            compacted: false,
        })
    );
}

#[tokio::test]
async fn committed_batches_set_the_resume_point() {
    let lake = memory_lake();
    let mut lease = lake.recover("evaluations", 3).await.unwrap().lease;
    assert_eq!(lease.next_seq(), 1, "the claim took 0");
    for (first, last) in [(0, 9), (10, 19)] {
        lake.commit_batch(&mut lease, range(first, last), one_file(b"x"), 1)
            .await
            .unwrap();
    }
    let recovery = lake.recover("evaluations", 3).await.unwrap();
    assert_eq!(recovery.next_offset, Some(20));
    assert!(recovery.rolled_back_files.is_empty());
    assert_eq!(files(&lake).await.len(), 2);
    assert!(lake
        .partition_files("evaluations", 4, 0)
        .await
        .unwrap()
        .is_empty());
    assert!(lake
        .partition_files("evaluations", 3, 20_001)
        .await
        .unwrap()
        .is_empty());
    // The log keeps the newest commit and the claim after it, nothing older.
    let log = lake.read_log("evaluations", 3).await.unwrap();
    let kinds: Vec<RecordKind> = log.iter().map(|(_, r)| r.as_ref().unwrap().kind).collect();
    assert_eq!(kinds, vec![RecordKind::Commit, RecordKind::Claim]);
}

#[tokio::test]
async fn a_batch_that_never_committed_is_rolled_back() {
    let lake = memory_lake();
    let mut lease = lake.recover("evaluations", 3).await.unwrap().lease;
    lake.commit_batch(&mut lease, range(0, 9), one_file(b"x"), 1)
        .await
        .unwrap();
    // A crash after the intent and one of its two files: put them by hand.
    let crashed = range(10, 19);
    let seq = lease.next_seq();
    let written = lake.data_path(&key(b"410300"), &crashed, seq);
    let missing = lake.data_path(&key(b"410100"), &crashed, seq);
    let intent = LogRecord {
        kind: RecordKind::Intent,
        writer: lake.writer.clone(),
        written_at_us: now_us(),
        batch: Some(BatchRecord {
            range: crashed,
            files: vec![written.to_string(), missing.to_string()],
            rows: 2,
        }),
        compaction: None,
    };
    lake.put_record("evaluations", 3, seq, |_| intent.clone())
        .await
        .unwrap();
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
    assert_eq!(covered(&lake).await, vec![(0, 9)]);
}

/// Two writers on one partition, step by step: every interleaving of a stale writer's steps with a
/// new owner's recovery ends with each offset in the lake once.
async fn two_writers_interleaved(lake_a: Lake) {
    let lake_b = lake_a.another_writer();
    let mut a = lake_a.recover("evaluations", 3).await.unwrap().lease;
    lake_a
        .commit_batch(&mut a, range(0, 9), one_file(b"a0"), 1)
        .await
        .unwrap();

    // A stalls; B recovers (another group, or A's eviction) and claims the partition.
    let b_recovery = lake_b.recover("evaluations", 3).await.unwrap();
    assert_eq!(b_recovery.next_offset, Some(10));
    let mut b = b_recovery.lease;

    // A wakes up and tries to commit its next batch: fenced before it writes anything.
    let fenced = lake_a
        .commit_batch(&mut a, range(10, 19), one_file(b"a1"), 1)
        .await
        .unwrap_err();
    assert!(fenced.is_fenced(), "{fenced}");
    assert_eq!(covered(&lake_a).await, vec![(0, 9)]);

    // B commits the same offsets with another batch size.
    lake_b
        .commit_batch(&mut b, range(10, 14), one_file(b"b1"), 1)
        .await
        .unwrap();
    lake_b
        .commit_batch(&mut b, range(15, 24), one_file(b"b2"), 1)
        .await
        .unwrap();
    assert_eq!(covered(&lake_a).await, vec![(0, 9), (10, 14), (15, 24)]);

    // A recovers (its group hands the partition back) and now B is the stale one.
    let mut a = {
        let recovery = lake_a.recover("evaluations", 3).await.unwrap();
        assert_eq!(recovery.next_offset, Some(25));
        recovery.lease
    };
    assert!(lake_b
        .commit_batch(&mut b, range(25, 30), one_file(b"b3"), 1)
        .await
        .unwrap_err()
        .is_fenced());
    lake_a
        .commit_batch(&mut a, range(25, 29), one_file(b"a2"), 1)
        .await
        .unwrap();
    assert_eq!(
        covered(&lake_a).await,
        vec![(0, 9), (10, 14), (15, 24), (25, 29)]
    );
}

#[tokio::test]
async fn two_writers_interleaved_in_memory() {
    two_writers_interleaved(memory_lake()).await;
}

#[tokio::test]
async fn two_writers_interleaved_on_a_local_lake() {
    let dir = tempfile::tempdir().unwrap();
    two_writers_interleaved(Lake::open_local(dir.path(), "evaluations").unwrap()).await;
}

/// A writer stalled between its intent and its data: the new owner rolls its intent back, then the
/// stale writer's files appear, and its commit is refused. Its files go (it removes them itself),
/// and if it died before that, the owner's next commit removes them.
async fn stalled_between_intent_and_data(lake_a: Lake, stale_writer_dies: bool) {
    let lake_b = lake_a.another_writer();
    let mut a = lake_a.recover("evaluations", 3).await.unwrap().lease;
    let seq = a.next_seq();
    // A's intent lands, then A stalls.
    let stale_file = lake_a.data_path(&key(b"410300"), &range(0, 9), seq);
    let intent = LogRecord {
        kind: RecordKind::Intent,
        writer: lake_a.writer.clone(),
        written_at_us: now_us(),
        batch: Some(BatchRecord {
            range: range(0, 9),
            files: vec![stale_file.to_string()],
            rows: 1,
        }),
        compaction: None,
    };
    lake_a
        .put_record("evaluations", 3, seq, |_| intent.clone())
        .await
        .unwrap();

    let mut b = lake_b.recover("evaluations", 3).await.unwrap().lease;
    if stale_writer_dies {
        // A writes its data after the rollback, and dies before trying to commit.
        lake_a
            .store
            .put(&stale_file, Bytes::from_static(b"a").into())
            .await
            .unwrap();
    } else {
        // A resumes the whole batch: its commit fails and it removes its own file.
        let err = lake_a
            .commit_batch(&mut a, range(0, 9), one_file(b"a"), 1)
            .await
            .unwrap_err();
        assert!(err.is_fenced(), "{err}");
        assert!(
            !files(&lake_a).await.contains(&stale_file.to_string()),
            "the fenced writer removes its files"
        );
    }
    lake_b
        .commit_batch(&mut b, range(0, 4), one_file(b"b"), 1)
        .await
        .unwrap();
    assert_eq!(covered(&lake_a).await, vec![(0, 4)]);
}

#[tokio::test]
async fn a_stalled_writer_s_late_files_never_stay() {
    for dies in [false, true] {
        stalled_between_intent_and_data(memory_lake(), dies).await;
        let dir = tempfile::tempdir().unwrap();
        stalled_between_intent_and_data(Lake::open_local(dir.path(), "evaluations").unwrap(), dies)
            .await;
    }
}

#[tokio::test]
async fn a_stale_writer_cannot_fill_a_hole_that_tidying_left() {
    let lake_a = memory_lake();
    let lake_b = lake_a.another_writer();
    let mut a = lake_a.recover("evaluations", 3).await.unwrap().lease;
    let mut b = lake_b.recover("evaluations", 3).await.unwrap().lease;
    lake_b
        .commit_batch(&mut b, range(0, 9), one_file(b"b"), 1)
        .await
        .unwrap();
    // B's tidying freed A's next number (B's claim sat there).
    assert!(lake_a
        .store
        .head(&lake_a.record_path("evaluations", 3, a.next_seq()))
        .await
        .is_err());
    let err = lake_a
        .commit_batch(&mut a, range(0, 9), one_file(b"a"), 1)
        .await
        .unwrap_err();
    assert!(err.is_fenced(), "{err}");
    assert_eq!(covered(&lake_a).await, vec![(0, 9)]);
    assert_eq!(
        lake_a.recover("evaluations", 3).await.unwrap().next_offset,
        Some(10)
    );
}

#[tokio::test]
async fn a_retried_commit_after_a_lost_answer_is_not_fenced() {
    let lake = memory_lake();
    let mut lease = lake.recover("evaluations", 3).await.unwrap().lease;
    let mut retry = lease.clone();
    lake.commit_batch(&mut lease, range(0, 9), one_file(b"x"), 1)
        .await
        .unwrap();
    // The same batch again from the same lease (the first call's answer was lost).
    lake.commit_batch(&mut retry, range(0, 9), one_file(b"x"), 1)
        .await
        .unwrap();
    assert_eq!(covered(&lake).await, vec![(0, 9)]);
    // Another writer's identical-looking batch on the same number is fenced, not merged.
    let mut other = lease.clone();
    other.next_seq -= 2;
    assert!(lake
        .another_writer()
        .commit_batch(&mut other, range(0, 9), one_file(b"x"), 1)
        .await
        .unwrap_err()
        .is_fenced());
}

#[tokio::test]
async fn torn_records_after_a_power_loss_do_not_block_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open_local(dir.path(), "evaluations").unwrap();
    let mut lease = lake.recover("evaluations", 3).await.unwrap().lease;
    lake.commit_batch(&mut lease, range(0, 9), one_file(b"x"), 1)
        .await
        .unwrap();
    // Next batch: its file is written, its intent record is empty (torn), nothing else.
    let seq = lease.next_seq();
    let file = lake.data_path(&key(b"410300"), &range(10, 19), seq);
    lake.store
        .put(&file, Bytes::from_static(b"y").into())
        .await
        .unwrap();
    let intent = dir
        .path()
        .join(lake.record_path("evaluations", 3, seq).as_ref());
    std::fs::write(&intent, b"").unwrap();

    let recovery = lake.recover("evaluations", 3).await.unwrap();
    assert_eq!(recovery.next_offset, Some(10));
    assert_eq!(recovery.rolled_back_files, vec![file.to_string()]);
    assert_eq!(covered(&lake).await, vec![(0, 9)]);
    assert!(!intent.exists(), "the torn record is tidied once swept");

    // A torn commit (garbage: the power went before it was durable, so nothing after it ran and its
    // intent is still there) is absent: its batch rolls back.
    let lease = recovery.lease;
    let seq = lease.next_seq();
    let file = lake.data_path(&key(b"410300"), &range(10, 19), seq);
    let intent = LogRecord {
        kind: RecordKind::Intent,
        writer: lake.writer.clone(),
        written_at_us: now_us(),
        batch: Some(BatchRecord {
            range: range(10, 19),
            files: vec![file.to_string()],
            rows: 1,
        }),
        compaction: None,
    };
    lake.put_record("evaluations", 3, seq, |_| intent.clone())
        .await
        .unwrap();
    lake.store
        .put(&file, Bytes::from_static(b"y").into())
        .await
        .unwrap();
    let commit = dir
        .path()
        .join(lake.record_path("evaluations", 3, seq + 1).as_ref());
    std::fs::write(&commit, b"{\"kind\":\"comm").unwrap();
    let recovery = lake.recover("evaluations", 3).await.unwrap();
    assert_eq!(recovery.next_offset, Some(10));
    assert_eq!(recovery.rolled_back_files, vec![file.to_string()]);
    assert_eq!(covered(&lake).await, vec![(0, 9)]);
}

#[tokio::test]
async fn local_lake_removes_staging_leftovers_of_a_killed_put() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open_local(dir.path(), "evaluations").unwrap();
    let lease = lake.recover("evaluations", 3).await.unwrap().lease;
    let crashed = range(0, 9);
    let file = lake.data_path(&key(b"410300"), &crashed, lease.next_seq());
    let intent = LogRecord {
        kind: RecordKind::Intent,
        writer: lake.writer.clone(),
        written_at_us: now_us(),
        batch: Some(BatchRecord {
            range: crashed,
            files: vec![file.to_string()],
            rows: 1,
        }),
        compaction: None,
    };
    lake.put_record("evaluations", 3, lease.next_seq(), |_| intent.clone())
        .await
        .unwrap();
    let staging = dir.path().join(format!("{file}#1"));
    std::fs::create_dir_all(staging.parent().unwrap()).unwrap();
    std::fs::write(&staging, b"half").unwrap();
    lake.recover("evaluations", 3).await.unwrap();
    assert!(!staging.exists());
}

/// Actions keyed by the path whose read sets them off, each taken once.
type Hooks<T> = std::sync::Mutex<Vec<(Path, T)>>;

/// An in-memory store that puts a rival's step or a fault exactly between two of a writer's.
#[derive(Debug, Default)]
struct Hooked {
    inner: InMemory,
    /// Before a read of the key, these are deleted (a rival tidying between a listing and a read).
    delete_before_get: Hooks<Vec<Path>>,
    /// Before a read of the key, these are put (a rival's put landing between a listing and a read).
    put_before_get: Hooks<Vec<(Path, Bytes)>>,
    /// After a put of the key lands, these are put (a rival's put landing right after a writer's).
    put_after_put: Hooks<Vec<(Path, Bytes)>>,
    /// The next put of each of these fails.
    fail_put: std::sync::Mutex<Vec<Path>>,
    /// The next put of each of these lands, but its answer is an error (a lost answer).
    fail_after_put: std::sync::Mutex<Vec<Path>>,
    /// The next read of each of these fails.
    fail_get: std::sync::Mutex<Vec<Path>>,
    /// Puts of these wait first, so that they end after a failed one.
    slow_put: std::sync::Mutex<Vec<Path>>,
}

impl std::fmt::Display for Hooked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hooked({})", self.inner)
    }
}

/// Whether `path` was in a list of one-shot faults (and takes it out).
fn once(faults: &std::sync::Mutex<Vec<Path>>, path: &Path) -> bool {
    let mut faults = faults.lock().unwrap();
    let at = faults.iter().position(|p| p == path);
    at.map(|at| faults.swap_remove(at)).is_some()
}

fn injected(what: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "hooked",
        source: format!("injected {what} failure").into(),
    }
}

/// Takes `path`'s entry from a hook list.
fn take<T>(hooks: &Hooks<T>, path: &Path) -> Option<T> {
    let mut hooks = hooks.lock().unwrap();
    let at = hooks.iter().position(|(p, _)| p == path)?;
    Some(hooks.swap_remove(at).1)
}

#[async_trait::async_trait]
impl ObjectStore for Hooked {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        if once(&self.fail_put, location) {
            return Err(injected("put"));
        }
        if self.slow_put.lock().unwrap().contains(location) {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let put = self.inner.put_opts(location, payload, opts).await?;
        if let Some(landing) = take(&self.put_after_put, location) {
            for (path, bytes) in landing {
                self.inner.put(&path, bytes.into()).await?;
            }
        }
        if once(&self.fail_after_put, location) {
            return Err(injected("answer to a put"));
        }
        Ok(put)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        if once(&self.fail_get, location) {
            return Err(injected("get"));
        }
        if let Some(landing) = take(&self.put_before_get, location) {
            for (path, bytes) in landing {
                self.inner.put(&path, bytes.into()).await?;
            }
        }
        if let Some(doomed) = take(&self.delete_before_get, location) {
            for path in doomed {
                self.inner.delete(&path).await?;
            }
        }
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<'static, object_store::Result<Path>>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// A batch of one file by `lake`'s writer, its intent put at `seq` and its file written, as a
/// writer does before its commit; returns the batch's records (intent or commit).
async fn intent_and_file(
    lake: &Lake,
    range: BatchRange,
    seq: u64,
) -> impl Fn(RecordKind) -> LogRecord + '_ {
    let file = lake.data_path(&key(b"410300"), &range, seq);
    let batch = BatchRecord {
        range,
        files: vec![file.to_string()],
        rows: 1,
    };
    let record = move |kind| LogRecord {
        kind,
        writer: lake.writer.clone(),
        written_at_us: now_us(),
        batch: Some(batch.clone()),
        compaction: None,
    };
    lake.put_record("evaluations", 3, seq, |_| record(RecordKind::Intent))
        .await
        .unwrap();
    lake.store
        .put(&file, Bytes::from_static(b"x").into())
        .await
        .unwrap();
    record
}

fn hooked_lake() -> (Lake, Arc<Hooked>) {
    let store = Arc::new(Hooked::default());
    (Lake::with_store(store.clone(), "evaluations"), store)
}

#[tokio::test]
async fn a_record_tidied_between_the_listing_and_its_read_is_not_taken_for_torn() {
    let (lake, store) = hooked_lake();
    let mut lease = lake.recover("evaluations", 3).await.unwrap().lease;
    lake.commit_batch(&mut lease, range(0, 9), one_file(b"x"), 1)
        .await
        .unwrap();
    // The next batch, committed but not yet tidied: the log is commit 2, intent 3, commit 4.
    let seq = lease.next_seq();
    let record = intent_and_file(&lake, range(10, 19), seq).await;
    lake.put_record("evaluations", 3, seq + 1, |_| record(RecordKind::Commit))
        .await
        .unwrap();
    // Another writer's recovery lists all three; the owner's tidy removes the two below its commit
    // just before the intent is read.
    let path = |seq| lake.record_path("evaluations", 3, seq);
    store
        .delete_before_get
        .lock()
        .unwrap()
        .push((path(seq), vec![path(seq - 1), path(seq)]));
    another_writer_recovers_losing_nothing(&lake, &[(0, 9), (10, 19)]).await;
    assert!(
        store.delete_before_get.lock().unwrap().is_empty(),
        "the tidy happened during the recovery's read"
    );
}

/// Another writer recovers the partition: it resumes after the last of `committed` (the offset
/// ranges in the lake, sorted), rolls nothing back, and every one of them is still there.
async fn another_writer_recovers_losing_nothing(lake: &Lake, committed: &[(i64, i64)]) {
    let recovery = lake
        .another_writer()
        .recover("evaluations", 3)
        .await
        .unwrap();
    assert_eq!(
        recovery.next_offset,
        committed.last().map(|(_, last)| last + 1)
    );
    assert!(recovery.rolled_back_files.is_empty(), "{recovery:?}");
    assert_eq!(covered(lake).await, committed);
}

#[tokio::test]
async fn a_fenced_writer_that_retries_takes_away_the_files_its_failed_attempt_left() {
    let (lake, store) = hooked_lake();
    let mut lease = lake.recover("evaluations", 3).await.unwrap().lease;
    let two_files = || {
        vec![
            (key(b"410300"), Bytes::from_static(b"a")),
            (key(b"410100"), Bytes::from_static(b"b")),
        ]
    };
    let landed = lake.data_path(&key(b"410300"), &range(0, 9), lease.next_seq());
    let failed = lake.data_path(&key(b"410100"), &range(0, 9), lease.next_seq());
    store.fail_put.lock().unwrap().push(failed.clone());
    store.slow_put.lock().unwrap().push(landed.clone());
    let error = lake
        .commit_batch(&mut lease, range(0, 9), two_files(), 2)
        .await
        .unwrap_err();
    assert!(!error.is_fenced(), "{error}");
    assert!(
        store.inner.head(&landed).await.is_ok(),
        "the attempt returned while one of its puts was still running"
    );
    // Meanwhile another writer took the partition and rolled the batch back; then a put of the
    // first writer that had stalled landed after that rollback.
    let rival = lake.another_writer();
    let recovery = rival.recover("evaluations", 3).await.unwrap();
    assert_eq!(recovery.rolled_back_files.len(), 2);
    lake.store
        .put(&landed, Bytes::from_static(b"a").into())
        .await
        .unwrap();
    // The first writer retries (as `commit_files` does), finds itself fenced, and cleans up.
    a_fenced_commit(&lake, &mut lease, range(0, 9), two_files(), 2).await;
    assert_eq!(files(&lake).await, Vec::<String>::new());
    let mut rival_lease = recovery.lease;
    rival
        .commit_batch(&mut rival_lease, range(0, 9), two_files(), 2)
        .await
        .unwrap();
    assert_eq!(
        covered(&lake).await,
        vec![(0, 9), (0, 9)],
        "two folders, once each"
    );
}

/// A writer whose first batch (offsets 0–9, one file) committed, but the answer to its commit put
/// was lost: the attempt failed with an error other than a fence, to be retried.
async fn a_lost_commit_answer() -> (Lake, Arc<Hooked>, Lease) {
    let (lake, store) = hooked_lake();
    let mut lease = lake.recover("evaluations", 3).await.unwrap().lease;
    let commit = lake.record_path("evaluations", 3, lease.next_seq() + 1);
    store.fail_after_put.lock().unwrap().push(commit);
    let error = lake
        .commit_batch(&mut lease, range(0, 9), one_file(b"x"), 1)
        .await
        .unwrap_err();
    assert!(!error.is_fenced(), "{error}");
    assert!(
        store.fail_after_put.lock().unwrap().is_empty(),
        "the commit was put"
    );
    (lake, store, lease)
}

#[tokio::test]
async fn a_retry_after_a_lost_commit_answer_keeps_the_committed_files() {
    let (lake, _store, mut lease) = a_lost_commit_answer().await;
    // The commit landed: another writer taking the partition now resumes after the batch.
    let recovery = lake
        .another_writer()
        .recover("evaluations", 3)
        .await
        .unwrap();
    assert_eq!(recovery.next_offset, Some(10));
    // The first writer retries, is fenced, and must not take the committed files with it.
    a_fenced_commit(&lake, &mut lease, range(0, 9), one_file(b"x"), 1).await;
    assert_eq!(covered(&lake).await, vec![(0, 9)]);
}

#[tokio::test]
async fn a_failed_tidy_after_the_commit_does_not_fail_the_batch() {
    let (lake, store) = hooked_lake();
    let mut lease = lake.recover("evaluations", 3).await.unwrap().lease;
    // Only the tidy reads the commit record back.
    let commit = lake.record_path("evaluations", 3, lease.next_seq() + 1);
    store.fail_get.lock().unwrap().push(commit);
    lake.commit_batch(&mut lease, range(0, 9), one_file(b"x"), 1)
        .await
        .expect("committed, so not to be retried (a retry writes the batch again)");
    assert!(store.fail_get.lock().unwrap().is_empty(), "the tidy ran");
    lake.commit_batch(&mut lease, range(10, 19), one_file(b"y"), 1)
        .await
        .unwrap();
    assert_eq!(covered(&lake).await, vec![(0, 9), (10, 19)]);
    let log = lake.read_log("evaluations", 3).await.unwrap();
    assert_eq!(
        log.len(),
        1,
        "the next commit tidied what the failed tidy left: {log:?}"
    );
}

#[tokio::test]
async fn a_commit_that_lands_while_another_writer_recovers_keeps_its_files() {
    let (lake, store) = hooked_lake();
    let lease = lake.recover("evaluations", 3).await.unwrap().lease;
    // A slow writer: its intent and file are in, its commit is on the way.
    let seq = lease.next_seq();
    let record = intent_and_file(&lake, range(0, 9), seq).await;
    // Another writer's recovery lists the log without the commit, which lands as it reads on.
    let commit = serde_json::to_vec(&record(RecordKind::Commit)).unwrap();
    store.put_before_get.lock().unwrap().push((
        lake.record_path("evaluations", 3, seq),
        vec![(lake.record_path("evaluations", 3, seq + 1), commit.into())],
    ));
    // Its claim found the number taken by the commit, so it read the log again: the batch stays.
    another_writer_recovers_losing_nothing(&lake, &[(0, 9)]).await;
    assert!(
        store.put_before_get.lock().unwrap().is_empty(),
        "the commit landed during the read"
    );
}

/// A rival's claim record at `seq`, as its recovery puts it.
fn rival_claim(lake: &Lake, seq: u64) -> (Path, Bytes) {
    let claim = LogRecord {
        kind: RecordKind::Claim,
        writer: "rival".into(),
        written_at_us: now_us(),
        batch: None,
        compaction: None,
    };
    (
        lake.record_path("evaluations", 3, seq),
        serde_json::to_vec(&claim).unwrap().into(),
    )
}

#[tokio::test]
async fn a_rival_claiming_right_after_the_commit_leaves_the_batch_committed() {
    let (lake, store) = hooked_lake();
    let mut lease = lake.recover("evaluations", 3).await.unwrap().lease;
    let commit = lake.record_path("evaluations", 3, lease.next_seq() + 1);
    // The rival read the log with the commit in it, so it claims the number after.
    let claim = rival_claim(&lake, lease.next_seq() + 2);
    store
        .put_after_put
        .lock()
        .unwrap()
        .push((commit, vec![claim]));
    lake.commit_batch(&mut lease, range(0, 9), one_file(b"x"), 1)
        .await
        .expect("the commit landed before the claim: the batch is in the lake");
    assert_eq!(covered(&lake).await, vec![(0, 9)]);
    a_fenced_commit(&lake, &mut lease, range(10, 19), one_file(b"y"), 1).await;
    assert_eq!(covered(&lake).await, vec![(0, 9)]);
}

#[tokio::test]
async fn a_retry_after_a_lost_commit_answer_finds_the_batch_committed() {
    let (lake, store, mut lease) = a_lost_commit_answer().await;
    // The lease has not moved: its next number is still the intent's.
    let file = lake.data_path(&key(b"410300"), &range(0, 9), lease.next_seq());
    // The retry writes nothing again: a file put again could bring back rows a compaction had
    // merged meanwhile.
    store.fail_put.lock().unwrap().push(file);
    lake.commit_batch(&mut lease, range(0, 9), one_file(b"x"), 1)
        .await
        .unwrap();
    assert_eq!(
        store.fail_put.lock().unwrap().len(),
        1,
        "the file was put again"
    );
    lake.commit_batch(&mut lease, range(10, 19), one_file(b"y"), 1)
        .await
        .unwrap();
    assert_eq!(covered(&lake).await, vec![(0, 9), (10, 19)]);
}

#[tokio::test]
async fn a_late_retry_after_a_lost_commit_answer_puts_nothing_into_the_tidied_log() {
    let (lake, _store, mut lease) = a_lost_commit_answer().await;
    // Before the retry, another writer takes over, commits the next batch and tidies the log
    // down to its commit: the first writer's intent's number is free again.
    let rival = lake.another_writer();
    let recovery = rival.recover("evaluations", 3).await.unwrap();
    assert_eq!(recovery.next_offset, Some(10));
    let mut rival_lease = recovery.lease;
    rival
        .commit_batch(&mut rival_lease, range(10, 19), one_file(b"y"), 1)
        .await
        .unwrap();
    a_fenced_commit(&lake, &mut lease, range(0, 9), one_file(b"x"), 1).await;
    // Nothing of the retry stands in the log: an intent put into the hole would read as aborted
    // and make the next recovery sweep the committed batch's files.
    another_writer_recovers_losing_nothing(&lake, &[(0, 9), (10, 19)]).await;
}

#[tokio::test]
async fn a_batch_too_old_to_commit_is_given_up_and_its_files_deleted() {
    let (lake, store) = hooked_lake();
    let mut lease = lake.recover("evaluations", 3).await.unwrap().lease;
    let file = lake.data_path(&key(b"410300"), &range(0, 9), lease.next_seq());
    store.fail_put.lock().unwrap().push(file.clone());
    assert!(lake
        .commit_batch(&mut lease, range(0, 9), one_file(b"x"), 1)
        .await
        .is_err());
    // The retries went on for longer than an intent may wait for its commit.
    let in_flight = lease.in_flight.as_mut().unwrap();
    in_flight.since_us -= INTENT_MAX_AGE_US + 1;
    // Gives up before putting any file again (one landing after a rival's tidy would stay).
    store.fail_put.lock().unwrap().push(file);
    let error = a_fenced_commit(&lake, &mut lease, range(0, 9), one_file(b"x"), 1).await;
    assert!(matches!(error, LakeError::Expired { .. }), "{error}");
    assert_eq!(
        store.fail_put.lock().unwrap().len(),
        1,
        "a file was put again"
    );
    assert_eq!(files(&lake).await, Vec::<String>::new());
    let recovery = lake
        .another_writer()
        .recover("evaluations", 3)
        .await
        .unwrap();
    assert_eq!(recovery.next_offset, None, "nothing was committed");
}
