//! The offline path (`ingest --from-file`): same stages and commit protocol as Kafka, so running the
//! same file twice writes nothing twice.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use crate::support::*;
use haochaping::config::IngestConfig;
use haochaping::telemetry::Stats;

/// The one rejected-lines file of the input named `stem`.
fn rejected_file(lake: &std::path::Path, stem: &str) -> std::path::PathBuf {
    let found: Vec<_> = std::fs::read_dir(lake.join("_haochaping/rejected"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{stem}.")) && n.ends_with(".ndjson"))
        })
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found.into_iter().next().unwrap()
}

/// Writes `count` generated events (none redelivered or bad) as NDJSON.
fn write_events(path: &std::path::Path, seed: u64, count: usize, produced: &mut Produced) {
    write_ndjson(path, &mut generator(seed, 0.0, 0.0), count, produced);
}

fn lake_dir(config: &IngestConfig) -> &std::path::Path {
    config.lake.path.local_path().unwrap()
}

fn offline_config(lake: std::path::PathBuf) -> IngestConfig {
    let mut config = IngestConfig::default();
    config.lake.path = lake.into();
    config.lake.flush_rows = 700;
    // Every batch a commit, so that a small file still makes several.
    config.lake.offline_commit_bytes = 0;
    config.identity.secret = Some(SECRET.into());
    config
}

/// A file is known by its content, not its name: a second `export.ndjson` with other events is
/// ingested whole (it lost its first N lines when files were known by name).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_file_under_an_old_name_is_ingested_whole() {
    let dir = tempfile::tempdir().unwrap();
    let config = offline_config(dir.path().join("lake"));
    let input = dir.path().join("export.ndjson");
    let mut produced = Produced::new();
    write_events(&input, 1, 2_000, &mut produced);
    haochaping::offline::ingest_file(config.clone(), &input, Arc::new(Stats::default()))
        .await
        .unwrap();
    write_events(&input, 2, 3_000, &mut produced);
    let second =
        haochaping::offline::ingest_file(config.clone(), &input, Arc::new(Stats::default()))
            .await
            .unwrap();
    assert_eq!((second.received, second.already_in_lake), (3_000, 0));
    assert_exactly_once(lake_dir(&config), &produced.slots);
}

/// Batches are bounded by bytes as well as rows (Arrow's string columns overflow at 2 GiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_bounded_by_bytes_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = offline_config(dir.path().join("lake"));
    config.lake.flush_rows = 1_000_000;
    config.lake.flush_bytes = 256 << 10;
    let input = dir.path().join("day.ndjson");
    let mut produced = Produced::new();
    write_events(&input, 5, 4_000, &mut produced);
    let size = std::fs::metadata(&input).unwrap().len();
    let stats =
        haochaping::offline::ingest_file(config.clone(), &input, Arc::new(Stats::default()))
            .await
            .unwrap();
    // Cut between chunks of lines, so each batch is at most a chunk over the bound.
    assert!(
        stats.batches_committed >= size / (256 << 10) / 2,
        "{} bytes in {} batches",
        size,
        stats.batches_committed
    );
    assert_exactly_once(lake_dir(&config), &produced.slots);
}

/// A file named like the Kafka topic does not share partition 0's log with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_named_like_the_topic_does_not_collide_with_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let from_kafka = fixture_lake(&lake).await;
    assert!(from_kafka > 0);
    let config = offline_config(lake.clone());
    let input = dir.path().join("evaluations.ndjson");
    let mut produced = Produced::new();
    write_events(&input, 99, 1_000, &mut produced);
    let stats = haochaping::offline::ingest_file(config, &input, Arc::new(Stats::default()))
        .await
        .unwrap();
    assert_eq!((stats.received, stats.already_in_lake), (1_000, 0));
    assert_eq!(stats.accepted, produced.report.accepted);
    assert_eq!(
        lake_slots(&lake).len() as u64,
        from_kafka + produced.report.accepted
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_lands_once_even_when_ingested_twice() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("province-day.ndjson");
    let mut produced = Produced::new();
    let mut file = std::fs::File::create(&input).unwrap();
    let mut generator = generator(77, 0.03, 0.03);
    let mut events = Vec::new();
    for _ in 0..5_000 {
        let event = generator.next_event();
        file.write_all(&event.payload).unwrap();
        file.write_all(b"\n").unwrap();
        events.push(event);
    }
    drop(file);
    for event in &events {
        produced.record_event(event);
    }

    let config = offline_config(dir.path().join("lake"));
    let first =
        haochaping::offline::ingest_file(config.clone(), &input, Arc::new(Stats::default()))
            .await
            .unwrap();
    assert_eq!(first.accepted, produced.report.accepted);
    assert_eq!(first.duplicates, produced.report.duplicates);
    // Batches are cut between chunks of at most flush_rows lines: several batches, none oversized.
    assert!(first.batches_committed >= 3, "{first:?}");
    assert_exactly_once(lake_dir(&config), &produced.slots);

    let rejected =
        std::fs::read_to_string(rejected_file(lake_dir(&config), "province_day")).unwrap();
    let mut by_reason = BTreeMap::new();
    for line in rejected.lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        *by_reason
            .entry(record["reason"].as_str().unwrap().to_owned())
            .or_insert(0u64) += 1;
        // Records that parse as JSON are parked with identity replaced; others exactly as received.
        if !matches!(record["reason"].as_str(), Some("not_utf8" | "not_json")) {
            assert!(!line.contains("userCert"), "identity redacted: {line}");
        }
    }
    assert_eq!(by_reason, expected_by_reason(&produced.report));

    let again =
        haochaping::offline::ingest_file(config.clone(), &input, Arc::new(Stats::default()))
            .await
            .unwrap();
    assert_eq!(
        (again.received, again.accepted, again.already_in_lake),
        (0, 0, 5_000)
    );
    assert_exactly_once(lake_dir(&config), &produced.slots);
}

/// `haochaping compact` on a lake of many small files: every row stays exactly once, the files
/// are few, a rerun of the same input still finds everything in the lake, and a new file's
/// evaluations are deduplicated against the compacted rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compact_leaves_every_row_once_in_few_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = offline_config(dir.path().join("lake"));
    config.lake.flush_rows = 200;
    let input = dir.path().join("day.ndjson");
    let mut produced = Produced::new();
    write_events(&input, 21, 3_000, &mut produced);
    haochaping::offline::ingest_file(config.clone(), &input, Arc::new(Stats::default()))
        .await
        .unwrap();
    let before = parquet_files(&lake_dir(&config).join("evaluations")).len();
    let output = crate::support::haochaping()
        .args(["compact", "--quiet-for", "0s", "--lake"])
        .arg(lake_dir(&config))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let after = parquet_files(&lake_dir(&config).join("evaluations")).len();
    assert_eq!(report["files_before"], before as u64, "{report}");
    assert_eq!(report["files_after"], after as u64, "{report}");
    assert!(after * 5 < before, "{before} files became {after}");
    assert_exactly_once(lake_dir(&config), &produced.slots);

    let again =
        haochaping::offline::ingest_file(config.clone(), &input, Arc::new(Stats::default()))
            .await
            .unwrap();
    assert_eq!((again.received, again.already_in_lake), (0, 3_000));
    // The same evaluations in another file: dedup knows the compacted rows.
    let copy = dir.path().join("copy.ndjson");
    let mut text = std::fs::read(&input).unwrap();
    text.extend_from_slice(b"\n");
    std::fs::write(&copy, text).unwrap();
    let copied =
        haochaping::offline::ingest_file(config.clone(), &copy, Arc::new(Stats::default()))
            .await
            .unwrap();
    assert_eq!(copied.accepted, 0, "{copied:?}");
    assert_exactly_once(lake_dir(&config), &produced.slots);
}

/// `--log-format json`: every log line is one JSON object with its level and message, and none
/// carries an identity sent in clear.
#[test]
fn json_logs_are_one_object_a_line_without_identity() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("day.ndjson");
    let mut produced = Produced::new();
    write_events(&input, 9, 500, &mut produced);
    let output = crate::support::haochaping()
        .args(["--log-format", "json", "ingest", "--from-file"])
        .arg(&input)
        .arg("--lake")
        .arg(dir.path().join("lake"))
        .env("HAOCHAPING_IDENTITY_SECRET", SECRET)
        .env("HAOCHAPING_LOG", "debug")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "recovered from the lake"),
        "{stderr}"
    );
    assert!(lines.iter().all(|l| l["level"].is_string()));
    for identity in &produced.identities {
        assert!(!stderr.contains(identity.as_str()));
    }
}

/// `--max-events-per-second` holds a backfill to its rate: 1 500 lines at 500 a second take at least
/// the two seconds after the first second's burst, and every evaluation lands once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_keeps_to_its_rate_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = offline_config(dir.path().join("lake"));
    config.lake.max_events_per_second = std::num::NonZeroU32::new(500);
    let input = dir.path().join("day.ndjson");
    let mut produced = Produced::new();
    write_events(&input, 12, 1_500, &mut produced);
    let started = std::time::Instant::now();
    haochaping::offline::ingest_file(config.clone(), &input, Arc::new(Stats::default()))
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= std::time::Duration::from_millis(1_900),
        "{elapsed:?}"
    );
    assert_exactly_once(lake_dir(&config), &produced.slots);
}

/// Two exports of the same evaluations from before the dedup window, in different files (so
/// different sources): the second lands none of them again. Recovery loads only the window's days;
/// an older day's keys are loaded when a chunk first holds that day. The second file also holds
/// evaluations of the next day, which land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_export_ingested_again_from_another_file_lands_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = offline_config(dir.path().join("lake"));
    let old_day = haochaping::commands::yesterday_cst() - chrono::Duration::days(400);
    let lines = |day: chrono::NaiveDate, count: usize, produced: &mut Produced| -> Vec<Vec<u8>> {
        let mut config = haochaping::generate::GeneratorConfig::new("41", day);
        config.seed = 11;
        config.dup_rate = 0.0;
        config.bad_rate = 0.0;
        let mut generator = haochaping::generate::Generator::new(config).unwrap();
        (0..count)
            .map(|_| {
                let event = generator.next_event();
                produced.record_event(&event);
                event.payload
            })
            .collect()
    };
    let write = |path: &std::path::Path, lines: &[Vec<u8>]| {
        let mut file = std::fs::File::create(path).unwrap();
        for line in lines {
            file.write_all(line).unwrap();
            file.write_all(b"\n").unwrap();
        }
    };
    let ingest = |path: std::path::PathBuf| {
        let config = config.clone();
        async move {
            haochaping::offline::ingest_file(config, &path, Arc::new(Stats::default()))
                .await
                .unwrap()
        }
    };

    let mut exported = Produced::new();
    let old = lines(old_day, 1_500, &mut exported);
    write(&dir.path().join("march.ndjson"), &old);
    let first = ingest(dir.path().join("march.ndjson")).await;
    assert_eq!(first.accepted, exported.report.accepted);
    assert!(first.accepted > 1_000, "{first:?}");

    // The same evaluations in another order (another file), then the next day's.
    let mut next = Produced::new();
    let mut again: Vec<Vec<u8>> = old.into_iter().rev().collect();
    again.extend(lines(old_day + chrono::Duration::days(1), 1_500, &mut next));
    write(&dir.path().join("march-again.ndjson"), &again);
    let second = ingest(dir.path().join("march-again.ndjson")).await;
    assert_eq!(second.accepted, next.report.accepted, "{second:?}");
    assert_eq!(second.duplicates, exported.report.accepted);
    let slots = exported.slots.union(&next.slots).cloned().collect();
    assert_exactly_once(lake_dir(&config), &slots);
}

/// A hostile line (8 MiB of one record, with identity in it; or a file's last line, without its
/// newline) is rejected as oversize with its true size and SHA-256, parked as a bounded head that
/// shows no identity, and the lines around it land as if it were not there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_line_is_parked_as_a_bounded_head_with_its_digest() {
    use base64::Engine as _;
    use sha2::Digest;
    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    let dir = tempfile::tempdir().unwrap();
    let huge = format!(
        "{{\"userCert\":\"410328199001011234\",\"padding\":\"{}\"}}",
        "x".repeat(8 << 20)
    );
    // Without a dead-letter key the head is withheld; with one, encrypted.
    for (seed, stem, newline, key) in [(11, "inside", true, None), (13, "last", false, Some(KEY))] {
        let mut config = offline_config(dir.path().join(format!("lake-{stem}")));
        config.dlq.encryption_key = key.map(haochaping::config::Secret::new);
        let max = config.validation.max_message_bytes;
        let input = dir.path().join(format!("{stem}.ndjson"));
        let mut produced = Produced::new();
        write_events(&input, seed, 300, &mut produced);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&input)
            .unwrap();
        file.write_all(huge.as_bytes()).unwrap();
        if newline {
            file.write_all(b"\r\n").unwrap();
            let mut generator = generator(seed + 1, 0.0, 0.0);
            for _ in 0..300 {
                let event = generator.next_event();
                file.write_all(&event.payload).unwrap();
                file.write_all(b"\n").unwrap();
                produced.record_event(&event);
            }
        }
        drop(file);
        let stats =
            haochaping::offline::ingest_file(config.clone(), &input, Arc::new(Stats::default()))
                .await
                .unwrap();
        assert_eq!(stats.accepted, produced.report.accepted, "{stem}");
        assert_eq!(stats.dead_lettered, 1, "{stem}");
        let size = std::fs::metadata(&input).unwrap().len();
        let newlines = 300 * (1 + usize::from(newline)) as u64 + u64::from(newline);
        let carriage_return = u64::from(newline);
        assert_eq!(
            stats.received_bytes,
            size - newlines - carriage_return,
            "{stem}"
        );
        assert_exactly_once(lake_dir(&config), &produced.slots);

        let rejected = std::fs::read_to_string(rejected_file(lake_dir(&config), stem)).unwrap();
        assert_eq!(rejected.lines().count(), 1, "{stem}");
        // A head of the bound, encrypted or withheld (it cannot be parsed to be redacted).
        assert!(
            rejected.len() < 2 * max + 1024,
            "{stem}: {} bytes",
            rejected.len()
        );
        assert!(
            !rejected.contains("410328199001011234"),
            "{stem}: {rejected}"
        );
        let record: serde_json::Value = serde_json::from_str(rejected.trim_end()).unwrap();
        assert_eq!(record["reason"], "oversize", "{stem}");
        assert_eq!(record["offset"], 300, "{stem}");
        match key {
            None => assert_eq!(record["payload_form"], "withheld", "{stem}"),
            Some(key) => {
                assert_eq!(record["payload_form"], "encrypted", "{stem}");
                assert_eq!(record["truncated"], true, "{stem}");
                let sealed = base64::engine::general_purpose::STANDARD
                    .decode(record["payload_base64"].as_str().unwrap())
                    .unwrap();
                let head = haochaping::sink::dlq::DlqKey::parse(key)
                    .unwrap()
                    .open(record["encryption"].as_str().unwrap(), &sealed)
                    .unwrap();
                assert_eq!(head, huge.as_bytes()[..max + 2], "{stem}");
            }
        }
        assert_eq!(record["original_size"], huge.len(), "{stem}");
        assert_eq!(
            record["original_sha256"],
            hex::encode(sha2::Sha256::digest(huge.as_bytes())),
            "{stem}"
        );
        assert_eq!(
            record["message"],
            format!("message is {} bytes, the limit is {max}", huge.len()),
            "{stem}"
        );
    }
}

/// An offline run's batches become row groups of open files, committed once those hold
/// `offline_commit_bytes`: with a bound larger than the file, one commit of one file per folder,
/// each file a row group per batch; with a smaller bound, several commits. Either way every row lands
/// once, and a rerun finds every line in the lake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_row_groups_of_few_commits() {
    use parquet::file::reader::FileReader;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("day.ndjson");
    let mut produced = Produced::new();
    write_events(&input, 31, 5_000, &mut produced);
    let batches = 5_000u64.div_ceil(700);
    for (commit_bytes, stem) in [(1 << 30, "one"), (512 << 10, "some")] {
        let mut config = offline_config(dir.path().join(format!("lake-{stem}")));
        config.lake.offline_commit_bytes = commit_bytes;
        let stats =
            haochaping::offline::ingest_file(config.clone(), &input, Arc::new(Stats::default()))
                .await
                .unwrap();
        assert_exactly_once(lake_dir(&config), &produced.slots);
        let files = parquet_files(&lake_dir(&config).join("evaluations"));
        let folders: std::collections::BTreeSet<_> = files
            .iter()
            .map(|f| f.parent().unwrap().to_owned())
            .collect();
        let row_groups: usize = files
            .iter()
            .map(|f| {
                let reader = parquet::file::reader::SerializedFileReader::new(
                    std::fs::File::open(f).unwrap(),
                )
                .unwrap();
                reader.metadata().num_row_groups()
            })
            .sum();
        if stem == "one" {
            assert_eq!(stats.batches_committed, 1, "{stats:?}");
            assert_eq!(files.len(), folders.len(), "one file a folder");
        } else {
            assert!((2..batches).contains(&stats.batches_committed), "{stats:?}");
        }
        // A row group for each batch that reached the folder: more than one per file.
        assert!(
            row_groups > files.len(),
            "{row_groups} row groups in {} files",
            files.len()
        );
        assert_eq!(stats.rows_written, produced.report.accepted, "{stats:?}");
        let again =
            haochaping::offline::ingest_file(config.clone(), &input, Arc::new(Stats::default()))
                .await
                .unwrap();
        assert_eq!((again.received, again.already_in_lake), (0, 5_000));
    }
}

/// An export in a fresh folder: `lines` lines, 5 % redelivered and 3 % bad. The folder, the lake's
/// path in it, the export's path, and what was written.
fn export(
    seed: u64,
    lines: usize,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    std::path::PathBuf,
    Produced,
) {
    let dir = tempfile::tempdir().unwrap();
    let (lake, input) = (dir.path().join("lake"), dir.path().join("export.ndjson"));
    let mut produced = Produced::new();
    write_ndjson(
        &input,
        &mut generator(seed, 0.05, 0.03),
        lines,
        &mut produced,
    );
    (dir, lake, input, produced)
}

/// An offline run of `input` whose commits span a few small batches; with `limited`, kept to
/// 4 000 lines/s, so that a test can act while it is in the middle of its work.
fn small_commits_run(
    input: &std::path::Path,
    lake: &std::path::Path,
    limited: bool,
) -> std::process::Command {
    let mut command = ingest_file_command(input, lake);
    command
        .args(["--flush-rows", "400", "--offline-commit-bytes", "150000"])
        .stdout(std::process::Stdio::null());
    if limited {
        command.args(["--max-events-per-second", "4000"]);
    }
    command
}

/// SIGKILL at any point of an offline run, several times: the row groups its open files held are
/// lost with the process, and each rerun resumes where the lake's last commit ended. Commits span
/// a few batches (`--offline-commit-bytes`), the rate limit stretches a run over seconds so the
/// kills land inside it, at random moments: between appends, inside a commit or between commits,
/// wherever they fall. After a final run every evaluation is in the lake once, every rejected line
/// is parked (some twice, never none), and no staged file is left where readers would see it.
/// SIGKILL keeps the page cache, so this checks the order of the protocol's steps, not its fsyncs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_any_point_of_an_offline_run_leaves_every_line_once() {
    use rand::{Rng, SeedableRng};
    let (_dir, lake, input, produced) = export(41, 24_000);
    let run = |limited| small_commits_run(&input, &lake, limited);

    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut committed_before_the_last_run = 0;
    for round in 0..6 {
        let mut child = run(true).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let drained = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap());
        let run_for = std::time::Duration::from_millis(rng.random_range(300..2_500));
        tokio::time::sleep(run_for).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let log = drained.join().unwrap();
        assert!(!log.contains("panicked"), "round {round}: {log}");
        committed_before_the_last_run = parquet_files(&lake.join("evaluations")).len();
        eprintln!("round {round}: killed after {run_for:?}, {committed_before_the_last_run} files");
    }
    assert!(
        committed_before_the_last_run > 0,
        "no killed run committed anything: the kills tested nothing past the start"
    );

    let output = run(false).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Every rejected line is parked, as whole records: a rerun cuts off the one a kill tore.
    assert_every_line_once(&lake, &produced);

    // Open files span batches: some file holds more than one batch's row group.
    let files = parquet_files(&lake.join("evaluations"));
    let row_groups: usize = files
        .iter()
        .map(|f| {
            use parquet::file::reader::FileReader;
            parquet::file::reader::SerializedFileReader::new(std::fs::File::open(f).unwrap())
                .unwrap()
                .metadata()
                .num_row_groups()
        })
        .sum();
    assert!(
        row_groups > files.len(),
        "{row_groups} row groups in {} files",
        files.len()
    );
    let staged: Vec<_> = walk_files(&lake.join("evaluations"))
        .into_iter()
        .filter(|f| f.to_string_lossy().contains('#'))
        .collect();
    assert!(staged.is_empty(), "{staged:?}");
}

/// The parked offsets of a rejected-lines file; every line must be a whole JSON record.
fn parked_offsets(path: &std::path::Path) -> std::collections::BTreeSet<i64> {
    let bytes = std::fs::read(path).unwrap();
    bytes
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| {
            let record: serde_json::Value = serde_json::from_slice(line).unwrap_or_else(|e| {
                panic!("a torn record ({e}): {}", String::from_utf8_lossy(line))
            });
            record["offset"].as_i64().unwrap()
        })
        .collect()
}

/// Every evaluation of `produced` is in the lake once, and every rejected line of the export is
/// parked as a whole record (some perhaps twice, none missing).
fn assert_every_line_once(lake: &std::path::Path, produced: &Produced) {
    assert_exactly_once(lake, &produced.slots);
    let parked = parked_offsets(&rejected_file(lake, "export"));
    assert_eq!(parked.len() as u64, produced.report.dead_lettered());
}

/// Waits for a child and returns whether it succeeded, with its stderr. A run that failed must
/// have failed for the reason a second writer gives it, said in its error, and none may panic.
fn outcome(child: std::process::Child, what: &str) -> (bool, String) {
    let output = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!log.contains("panicked"), "{what}: {log}");
    if !output.status.success() {
        assert!(
            log.contains("error: fenced"),
            "{what} failed otherwise: {log}"
        );
    }
    (output.status.success(), log)
}

/// Two runs of one file at the same time on one lake (an operator's retry while the first still
/// runs, or two schedulers): they claim the same pseudo-partition, the later claim fences the
/// earlier run at its next commit, and the earlier one stops with that error. Whatever each got
/// to commit, a final run leaves every evaluation in the lake once and every rejected line
/// parked as whole records: the second run's open of the rejected-lines file may meet the first
/// one's appends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_of_one_file_at_once_land_each_line_once() {
    let (_dir, lake, input, produced) = export(43, 12_000);
    let run = || small_commits_run(&input, &lake, true).spawn().unwrap();

    let first = run();
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let second = run();
    let (first, second) = tokio::task::spawn_blocking(move || {
        (
            outcome(first, "the first run"),
            outcome(second, "the second run"),
        )
    })
    .await
    .unwrap();
    // The second claim came while the first run was still reading: the first one is fenced.
    assert!(!first.0, "the first run was not fenced: {}", first.1);
    assert!(second.0, "{}", second.1);
    assert_exactly_once(&lake, &produced.slots);

    let last = ingest_file_command(&input, &lake).output().unwrap();
    assert!(
        last.status.success(),
        "{}",
        String::from_utf8_lossy(&last.stderr)
    );
    assert_every_line_once(&lake, &produced);
}

/// A run stopped (SIGSTOP) in the middle of its work while another run of the same file does it
/// all, then continued: it is fenced at its next commit, so nothing it held in hand lands twice,
/// and what it appends to the rejected-lines file meanwhile is whole records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_offline_run_that_wakes_up_is_fenced() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let (_dir, lake, input, produced) = export(47, 12_000);
    let stalled = small_commits_run(&input, &lake, true).spawn().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    let pid = Pid::from_raw(stalled.id() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    let committed_by_the_stalled_run = parquet_files(&lake.join("evaluations")).len();

    let other = ingest_file_command(&input, &lake).output().unwrap();
    assert!(
        other.status.success(),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    assert_exactly_once(&lake, &produced.slots);

    kill(pid, Signal::SIGCONT).unwrap();
    let (succeeded, log) = tokio::task::spawn_blocking(move || outcome(stalled, "the stalled run"))
        .await
        .unwrap();
    assert!(!succeeded, "the stalled run was not fenced: {log}");
    assert_every_line_once(&lake, &produced);
    assert!(
        committed_by_the_stalled_run > 0,
        "the stalled run had committed nothing: the stop tested nothing past the start"
    );
}
