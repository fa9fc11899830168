//! Compaction against the commit protocol: crashes at every step, a writer beside it, a rival
//! compactor, a batch that never committed. Rows are identified by their offset.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{AsArray, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use object_store::memory::InMemory;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::compact::{compact, CompactOptions, Hook, Step};
use super::*;

const TOPIC: &str = "evaluations";

fn key(city: &[u8; 6]) -> PartitionKey {
    PartitionKey {
        day: 20_000,
        city: *city,
    }
}

fn parquet_of(offsets: &[i64]) -> Bytes {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "kafka_offset",
        DataType::Int64,
        false,
    )]));
    let batch =
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(offsets.to_vec()))]).unwrap();
    crate::sink::parquet::encode_ingest_file(&batch, 1).unwrap()
}

/// A batch of offsets `first..=last`: even offsets in one city, odd in another.
fn batch_files(first: i64, last: i64) -> Vec<(PartitionKey, Bytes)> {
    let even: Vec<i64> = (first..=last).filter(|o| o % 2 == 0).collect();
    let odd: Vec<i64> = (first..=last).filter(|o| o % 2 != 0).collect();
    vec![
        (key(b"410100"), parquet_of(&even)),
        (key(b"410300"), parquet_of(&odd)),
    ]
}

fn range(first: i64, last: i64) -> BatchRange {
    BatchRange {
        topic: TOPIC.into(),
        partition: 0,
        first_offset: first,
        last_offset: last,
    }
}

/// Commits batches of ten offsets from `first`; returns the writer's lease.
async fn commit_batches(lake: &Lake, lease: &mut Lease, first: i64, batches: i64) {
    for b in 0..batches {
        let (f, l) = (first + b * 10, first + b * 10 + 9);
        lake.commit_batch(lease, range(f, l), batch_files(f, l), 10)
            .await
            .unwrap();
    }
}

/// Every data file of the table (no staging leftovers), as a reader's glob finds them.
async fn table_files(lake: &Lake) -> Vec<Path> {
    let mut files: Vec<Path> = lake
        .store
        .list(Some(&Path::from("evaluations")))
        .try_filter_map(|m| async move {
            Ok(m.location
                .as_ref()
                .ends_with(".parquet")
                .then_some(m.location))
        })
        .try_collect()
        .await
        .unwrap();
    files.sort();
    files
}

/// The offsets a reader of the whole table sees, sorted (with any repetition).
async fn visible(lake: &Lake) -> Vec<i64> {
    let mut offsets = Vec::new();
    for file in table_files(lake).await {
        let bytes = lake.read(&file).await.unwrap();
        for batch in ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap()
        {
            let batch = batch.unwrap();
            let column = batch.column_by_name("kafka_offset").unwrap();
            offsets.extend(column.as_primitive::<Int64Type>().values().iter().copied());
        }
    }
    offsets.sort_unstable();
    offsets
}

/// The same as [`visible`], from a blocking context (a hook runs inside the compactor).
fn visible_now(lake: &Lake) -> Vec<i64> {
    let lake = lake.clone();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(visible(&lake))
    })
    .join()
    .unwrap()
}

fn all(upto: i64) -> Vec<i64> {
    (0..=upto).collect()
}

fn now() -> CompactOptions {
    CompactOptions {
        quiet_for: Duration::ZERO,
        zstd_level: 1,
        ..Default::default()
    }
}

fn with_hook(
    hook: impl Fn(Step) -> Result<(), LakeError> + Send + Sync + 'static,
) -> CompactOptions {
    CompactOptions {
        hook: Some(Arc::new(hook) as Hook),
        ..now()
    }
}

fn local_lake() -> (tempfile::TempDir, Lake) {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open_local(dir.path(), "evaluations").unwrap();
    (dir, lake)
}

async fn compacts_every_folder_to_one_file_per_partition(lake: Lake) {
    let mut lease = lake.recover(TOPIC, 0).await.unwrap().lease;
    commit_batches(&lake, &mut lease, 0, 6).await;
    assert_eq!(table_files(&lake).await.len(), 12);
    let report = compact(&lake.another_writer(), &now()).await.unwrap();
    assert_eq!(
        (report.files_before, report.files_after),
        (12, 2),
        "{report:?}"
    );
    assert_eq!(
        (report.files_replaced, report.files_written, report.rows),
        (12, 2, 60)
    );
    assert_eq!(visible(&lake).await, all(59));
    for file in table_files(&lake).await {
        let name = DataFileName::parse(&file).unwrap();
        assert!(name.compacted, "{file}");
        assert_eq!((name.first_offset, name.last_offset), (0, 59), "{file}");
    }
    // The writer goes on without noticing; the position is unchanged.
    commit_batches(&lake, &mut lease, 60, 2).await;
    assert_eq!(lake.recover(TOPIC, 0).await.unwrap().next_offset, Some(80));
    // A quiet-for longer than the folders' age leaves them alone.
    let waiting = CompactOptions {
        quiet_for: Duration::from_secs(3600),
        ..now()
    };
    assert_eq!(compact(&lake, &waiting).await.unwrap().compactions, 0);
    // The compacted file and the new ones are compacted again, and nothing is left behind.
    let report = compact(&lake, &now()).await.unwrap();
    assert_eq!(report.files_after, 2, "{report:?}");
    assert_eq!(visible(&lake).await, all(79));
    assert!(lake.log_state(TOPIC, 0).await.unwrap().compactions.len() <= 2);
}

#[tokio::test]
async fn compaction_keeps_every_row_once_in_memory() {
    compacts_every_folder_to_one_file_per_partition(Lake::with_store(
        Arc::new(InMemory::new()),
        "evaluations",
    ))
    .await;
}

#[tokio::test]
async fn compaction_keeps_every_row_once_on_a_local_lake() {
    let (_dir, lake) = local_lake();
    compacts_every_folder_to_one_file_per_partition(lake).await;
}

const STEPS: [Step; 6] = [
    Step::Planned,
    Step::Staged,
    Step::Recorded,
    Step::Swapping,
    Step::Swapped,
    Step::Finished,
];

/// Kills the compactor at each step in turn (the hook fails there, and nothing after it runs).
/// On a local lake a reader sees every row exactly once at every step; on an object store it may
/// see rows twice between the put of a merged file and the deletion of its inputs, never miss one.
/// After the next run, every row is there once, in fewer files, and ingest goes on.
async fn crash_at(step: Step, lake: Lake, local: bool) {
    let mut lease = lake.recover(TOPIC, 0).await.unwrap().lease;
    commit_batches(&lake, &mut lease, 0, 4).await;
    let observer = lake.clone();
    let crashed = Arc::new(Mutex::new(false));
    let seen = crashed.clone();
    let options = with_hook(move |at| {
        let rows = visible_now(&observer);
        if local {
            assert_eq!(
                rows,
                all(39),
                "a reader at {at:?} (crash planned at {step:?})"
            );
        } else {
            let mut distinct = rows.clone();
            distinct.dedup();
            assert_eq!(distinct, all(39), "a reader at {at:?} misses rows");
        }
        if at == step {
            *seen.lock().unwrap() = true;
            return Err(LakeError::Location(
                "test".into(),
                format!("crash at {at:?}"),
            ));
        }
        Ok(())
    });
    let compactor = lake.another_writer();
    let result = compact(&compactor, &options).await;
    if *crashed.lock().unwrap() {
        assert!(result.is_err(), "{step:?}");
    } else {
        // Finished is only reached where the record may go (below a newer commit).
        assert_eq!(step, Step::Finished);
    }
    // A batch arrives before the next run; then the compactor runs again, as another process.
    commit_batches(&lake, &mut lease, 40, 1).await;
    compact(&lake.another_writer(), &now()).await.unwrap();
    assert_eq!(visible(&lake).await, all(49), "after a crash at {step:?}");
    assert_eq!(
        table_files(&lake).await.len(),
        2,
        "after a crash at {step:?}"
    );
    // Ingest goes on, and the compaction records do not pile up.
    commit_batches(&lake, &mut lease, 50, 1).await;
    compact(&lake, &now()).await.unwrap();
    assert_eq!(visible(&lake).await, all(59));
    assert!(lake.log_state(TOPIC, 0).await.unwrap().compactions.len() <= 2);
    if let Some(root) = lake.local_root() {
        let staging = root.join(compact::STAGING_FOLDER);
        let left: Vec<_> = std::fs::read_dir(&staging)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        // A crash after the swap leaves the old copy outside the table until it is stale.
        assert!(left.len() <= 1, "{step:?}: {left:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_step_of_a_compaction_loses_and_doubles_nothing() {
    for step in STEPS {
        let (_dir, lake) = local_lake();
        crash_at(step, lake, true).await;
        crash_at(
            step,
            Lake::with_store(Arc::new(InMemory::new()), "evaluations"),
            false,
        )
        .await;
    }
}

/// A writer that recovered before the compaction finds its next number taken by the `compact`
/// record: it moves on, it is not fenced, and its batch (with a late file for the folder being
/// compacted, written between the record and the swap) is neither lost nor doubled.
async fn a_writer_beside_a_compaction(lake: Lake) {
    let mut lease = lake.recover(TOPIC, 0).await.unwrap().lease;
    commit_batches(&lake, &mut lease, 0, 3).await;
    let writer = lake.clone();
    let writer_lease = Arc::new(Mutex::new(lease.clone()));
    let shared = writer_lease.clone();
    let once = std::sync::Once::new();
    let options = with_hook(move |at| {
        if at != Step::Recorded {
            return Ok(());
        }
        // Two folders are compacted: the batch arrives during the first one.
        once.call_once(|| {
            let writer = writer.clone();
            let mut lease = shared.lock().unwrap().clone();
            let lease = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(async {
                        commit_batches(&writer, &mut lease, 30, 1).await;
                        lease
                    })
            })
            .join()
            .unwrap();
            *shared.lock().unwrap() = lease;
        });
        Ok(())
    });
    compact(&lake.another_writer(), &options).await.unwrap();
    let mut lease = writer_lease.lock().unwrap().clone();
    assert_eq!(visible(&lake).await, all(39));
    commit_batches(&lake, &mut lease, 40, 1).await;
    assert_eq!(visible(&lake).await, all(49));
    assert_eq!(lake.recover(TOPIC, 0).await.unwrap().next_offset, Some(50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_is_not_fenced_by_a_compaction_and_its_late_file_stays() {
    let (_dir, lake) = local_lake();
    a_writer_beside_a_compaction(lake).await;
    a_writer_beside_a_compaction(Lake::with_store(Arc::new(InMemory::new()), "evaluations")).await;
}

/// A writer adding a file to a folder while the compactor holds its lock (between its last
/// listing and the swap) waits, and its file lands in the new copy of the folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_file_for_a_folder_being_swapped_waits_for_the_swap() {
    let (_dir, lake) = local_lake();
    let mut lease = lake.recover(TOPIC, 0).await.unwrap().lease;
    commit_batches(&lake, &mut lease, 0, 3).await;
    let writer = lake.clone();
    let pending: Arc<Mutex<Option<std::thread::JoinHandle<Lease>>>> = Arc::default();
    let handle = pending.clone();
    let lease_for_hook = Arc::new(Mutex::new(lease));
    let moved = lease_for_hook.clone();
    let options = with_hook(move |at| {
        // Two folders are swapped; the writer starts at the first one.
        if at == Step::Swapping && handle.lock().unwrap().is_none() {
            let writer = writer.clone();
            let mut lease = moved.lock().unwrap().clone();
            let (started, finished) = (std::time::Instant::now(), Arc::new(Mutex::new(false)));
            let done = finished.clone();
            *handle.lock().unwrap() = Some(std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(commit_batches(&writer, &mut lease, 30, 1));
                *done.lock().unwrap() = true;
                lease
            }));
            std::thread::sleep(Duration::from_millis(400));
            assert!(
                !*finished.lock().unwrap(),
                "the writer did not wait for the folder's lock ({:?})",
                started.elapsed()
            );
        }
        Ok(())
    });
    compact(&lake.another_writer(), &options).await.unwrap();
    let thread = pending.lock().unwrap().take().expect("the hook ran");
    let mut lease = thread.join().unwrap();
    assert_eq!(visible(&lake).await, all(39));
    commit_batches(&lake, &mut lease, 40, 1).await;
    compact(&lake, &now()).await.unwrap();
    assert_eq!(visible(&lake).await, all(49));
    assert_eq!(table_files(&lake).await.len(), 2);
}

/// Two compactors: the second runs while the first is between its record and its swap. It rolls
/// the first one's compaction forward; the first then finds it done. Neither doubles a row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_compactors_at_once_agree() {
    for local in [true, false] {
        let (_dir, local_lake) = local_lake();
        let lake = if local {
            local_lake
        } else {
            Lake::with_store(Arc::new(InMemory::new()), "evaluations")
        };
        let mut lease = lake.recover(TOPIC, 0).await.unwrap().lease;
        commit_batches(&lake, &mut lease, 0, 4).await;
        let rival = lake.another_writer();
        let options = with_hook(move |at| {
            if at == Step::Recorded {
                let rival = rival.clone();
                let report = std::thread::spawn(move || {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap()
                        .block_on(compact(&rival, &now()))
                })
                .join()
                .unwrap()
                .unwrap();
                assert!(report.rolled_forward >= 1, "{report:?}");
            }
            Ok(())
        });
        compact(&lake.another_writer(), &options).await.unwrap();
        assert_eq!(visible(&lake).await, all(39), "local {local}");
        assert_eq!(table_files(&lake).await.len(), 2, "local {local}");
        commit_batches(&lake, &mut lease, 40, 1).await;
        assert_eq!(visible(&lake).await, all(49));
    }
}

/// A batch whose writer crashed after its intent and files is not compacted: the next recovery
/// rolls it back as if no compaction had run, and its offsets are written once by the new owner.
#[tokio::test]
async fn an_uncommitted_batch_is_never_compacted() {
    let (_dir, lake) = local_lake();
    let mut lease = lake.recover(TOPIC, 0).await.unwrap().lease;
    commit_batches(&lake, &mut lease, 0, 3).await;
    // The crash: an intent and its files, no commit.
    let seq = lease.next_seq();
    let files = batch_files(30, 39);
    let paths: Vec<String> = files
        .iter()
        .map(|(k, _)| lake.data_path(k, &range(30, 39), seq).to_string())
        .collect();
    let intent = LogRecord {
        kind: RecordKind::Intent,
        writer: lake.writer.clone(),
        written_at_us: now_us(),
        batch: Some(BatchRecord {
            range: range(30, 39),
            files: paths.clone(),
            rows: 10,
        }),
        compaction: None,
    };
    lake.put_record(TOPIC, 0, seq, |_| intent.clone())
        .await
        .unwrap();
    for ((_, bytes), path) in files.into_iter().zip(&paths) {
        lake.store
            .put(&Path::from(path.as_str()), bytes.into())
            .await
            .unwrap();
    }
    compact(&lake.another_writer(), &now()).await.unwrap();
    for path in &paths {
        assert!(
            table_files(&lake).await.iter().any(|f| f.as_ref() == path),
            "{path} was rewritten"
        );
    }
    let recovery = lake.recover(TOPIC, 0).await.unwrap();
    assert_eq!(recovery.next_offset, Some(30));
    assert_eq!(recovery.rolled_back_files, paths);
    assert_eq!(visible(&lake).await, all(29));
    let mut lease = recovery.lease;
    commit_batches(&lake, &mut lease, 30, 1).await;
    compact(&lake, &now()).await.unwrap();
    assert_eq!(visible(&lake).await, all(39));
}

#[test]
fn compacted_file_names_are_told_apart_from_writers() {
    for (name, parsed) in [
        ("evaluations/dt=2024-10-04/city=410300/t-0-00000000000000000000-00000000000000000059-7c.parquet", Some((7, true))),
        ("evaluations/dt=2024-10-04/city=410300/t-0-00000000000000000000-00000000000000000059-7.parquet", Some((7, false))),
        ("evaluations/dt=2024-10-04/city=410300/t-0-00000000000000000000-00000000000000000059-c.parquet", None),
        ("evaluations/dt=2024-10-04/city=410300/t-0-00000000000000000000-00000000000000000059-7cc.parquet", None),
        ("evaluations/dt=2024-10-04/city=410300/t-0-00000000000000000000-00000000000000000059-+7.parquet", None),
    ] {
        let path = Path::from(name);
        assert_eq!(
            DataFileName::parse(&path).map(|n| (n.seq, n.compacted)),
            parsed,
            "{name}"
        );
    }
}
