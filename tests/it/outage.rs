//! Outages of what the engine writes to. The lake refusing every write (a full disk, a lost mount,
//! a read-only remount) is waited out: the partitions stop fetching once their next batch is full,
//! the commits are retried, and nothing is lost or doubled when the lake comes back. A kill while
//! the lake refuses loses no rejected line of the offline path.
//!
//! The tests run as root, whom permissions do not stop, so "refusing" is the immutable attribute
//! (`chattr +i`): no file can be created, renamed or deleted below the folder.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;

/// A folder tree the lake cannot write to until this is dropped.
struct Frozen(PathBuf);

impl Frozen {
    fn new(path: &Path) -> Self {
        chattr(path, "+i");
        Self(path.to_owned())
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        chattr(&self.0, "-i");
    }
}

fn chattr(path: &Path, flag: &str) {
    let status = Command::new("chattr")
        .args(["-R", flag])
        .arg(path)
        .status()
        .expect("chattr (e2fsprogs)");
    assert!(status.success(), "chattr -R {flag} {}", path.display());
}

/// A child's stderr, collected as it comes (so the child never blocks on a full pipe).
fn collect(stderr: std::process::ChildStderr) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let into = text.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let mut text = into.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    });
    text
}

/// Waits until `done` holds, checking every 200 ms, for at most `within`.
async fn wait_until(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn scrape(addr: &str) -> String {
    let addr = addr.to_owned();
    tokio::task::spawn_blocking(move || http_get(&addr, "/metrics"))
        .await
        .unwrap()
        .unwrap_or_default()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The lake refuses writes for 20 s in the middle of a run: the run waits it out instead of
/// ending (it gave up after ≈ 6 s before), each partition stops fetching once the open batches
/// reach the flush bound (the received count stands still and memory with it), and once the lake is back every
/// evaluation lands exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lake_refusing_writes_for_20_s_is_waited_out_with_fetching_held() {
    let broker = Tansu::with_topics(2).await;
    let lake = tempfile::tempdir().unwrap();
    let mut produced = Produced::new();
    let mut generator = generator(31, 0.02, 0.02);
    produce(
        &broker.brokers,
        "evaluations",
        &mut generator,
        1_000,
        &mut produced,
    )
    .await;

    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = ingest_command(
        &broker.brokers,
        lake.path(),
        "outage",
        &[
            "--flush-rows",
            "100",
            "--flush-interval",
            "200ms",
            "--compact-every",
            "0s",
            "--exit-when-idle",
            "5s",
            "--metrics-addr",
            &addr,
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let log = collect(child.stderr.take().unwrap());
    let first_wave = produced.report.produced;
    let started = Instant::now();
    loop {
        let s = scrape(&addr).await;
        if metric_value(&s, "haochaping_events_received_total") == Some(first_wave)
            && metric_value(&s, "haochaping_lake_batches_committed_total").unwrap_or(0) > 0
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "first wave never landed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let frozen = Frozen::new(&lake.path().join("evaluations"));
    let outage = Instant::now();
    produce(
        &broker.brokers,
        "evaluations",
        &mut generator,
        5_000,
        &mut produced,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(8).saturating_sub(outage.elapsed())).await;
    let early = scrape(&addr).await;
    let early_rss = rss_kib(child.id());
    tokio::time::sleep(Duration::from_secs(18).saturating_sub(outage.elapsed())).await;
    let late = scrape(&addr).await;
    let late_rss = rss_kib(child.id());
    let ready = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || http_get(&addr, "/ready")
    })
    .await
    .unwrap()
    .unwrap_or_default();
    assert!(
        ready.contains("2 of 2 partitions wait for a commit"),
        "/ready during the outage: {ready}"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended during the outage:\n{}",
        log.lock().unwrap()
    );

    let received = |s: &str| metric_value(s, "haochaping_events_received_total").unwrap_or(0);
    assert_eq!(
        received(&early),
        received(&late),
        "fetching went on while the lake refused"
    );
    assert!(
        received(&late) < produced.report.produced,
        "everything was read into memory"
    );
    assert_eq!(
        metric_value(&late, "haochaping_partitions_backpressured"),
        Some(2),
        "{late}"
    );
    assert!(
        late.lines()
            .any(|l| l.starts_with("haochaping_lake_commit_retries_total")),
        "{late}"
    );
    assert!(
        late_rss < early_rss + 64 * 1024,
        "memory grew during the outage: {early_rss} KiB → {late_rss} KiB"
    );
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(outage.elapsed())).await;
    drop(frozen);

    let waited = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::task::spawn_blocking(move || child.wait()),
    )
    .await
    .expect("the run did not finish after the lake came back")
    .unwrap()
    .unwrap();
    let log = log.lock().unwrap().clone();
    assert!(waited.success(), "{log}");
    assert!(log.contains("the lake refused the batch"), "{log}");
    assert!(log.contains("the lake took the batch again"), "{log}");
    assert!(!log.contains("offset gap"), "{log}");
    assert_exactly_once(lake.path(), &produced.slots);
}

/// Offline, the rejected lines of a batch are durable before the batch is committed: killed while
/// the lake refuses that batch, a rerun writes every rejected line (some twice, by offset, never
/// none) and every evaluation once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_rejected_lines_survive_a_kill_before_their_batch_commits() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let input = dir.path().join("day.ndjson");
    let mut produced = Produced::new();
    write_ndjson(&input, &mut generator(33, 0.0, 0.05), 3_000, &mut produced);
    let run = || {
        let mut command = ingest_file_command(&input, &lake);
        command
            .args(["--flush-rows", "500"])
            .env("HAOCHAPING_LOG", "info")
            .stdout(Stdio::null());
        command
    };

    // The table's folder exists and refuses files; the log (outside it) takes the claim and the
    // intent, the data files are refused.
    std::fs::create_dir_all(lake.join("evaluations")).unwrap();
    let frozen = Frozen::new(&lake.join("evaluations"));
    let mut child = run().spawn().unwrap();
    let log = collect(child.stderr.take().unwrap());
    wait_until(Duration::from_secs(60), "a refused commit", || {
        log.lock().unwrap().contains("the lake refused the batch")
    })
    .await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    drop(frozen);
    let rejected_dir = lake.join("_haochaping/rejected");
    let offsets_in = |dir: &Path| -> Vec<i64> {
        std::fs::read_dir(dir)
            .unwrap()
            .flat_map(|e| {
                // Whole lines only: a killed run can leave a torn last line, which the next
                // run cuts off.
                let bytes = std::fs::read(e.unwrap().path()).unwrap();
                let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                String::from_utf8(bytes[..whole].to_vec())
                    .unwrap()
                    .lines()
                    .map(|l| {
                        serde_json::from_str::<serde_json::Value>(l).unwrap()["offset"]
                            .as_i64()
                            .unwrap()
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    assert!(
        !offsets_in(&rejected_dir).is_empty(),
        "the killed run had made no rejected line durable"
    );

    let output = run().output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let offsets = offsets_in(&rejected_dir);
    let distinct: std::collections::BTreeSet<i64> = offsets.iter().copied().collect();
    assert_eq!(
        distinct.len() as u64,
        produced.report.dead_lettered(),
        "every rejected line, by offset"
    );
    assert!(
        offsets.len() > distinct.len(),
        "the batch refused before the kill was parked again"
    );
    assert_exactly_once(&lake, &produced.slots);
}

/// A tmpfs of a given size mounted on a folder of its own: a disk that fills up, and whose owner
/// then frees space, without filling the machine's. Unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(path: &Path, size: &str) -> Self {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("mount");
        assert!(status.success(), "mount -t tmpfs {}", path.display());
        Self(path.to_owned())
    }

    fn grow(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .expect("mount");
        assert!(status.success(), "remount {}", self.0.display());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A child process killed when dropped: a failed assertion must not leave a run waiting for
/// ever on a disk that is never freed.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An offline run on a disk that fills up, in the two places it writes: the lake (its batches'
/// files) and the rejected-lines file. Either way the run waits (it ended with an error when the
/// rejected lines found the disk full), counts its attempts on `/metrics`, and finishes once space
/// is freed: every evaluation once, every rejected line parked, no partial file left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_a_full_disk_is_waited_out_wherever_it_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("export.ndjson");
    let mut produced = Produced::new();
    write_ndjson(
        &input,
        &mut generator(43, 0.05, 0.03),
        24_000,
        &mut produced,
    );
    let config = dir.path().join("haochaping.toml");
    std::fs::write(&config, "[lake]\nretry_backoff_max = \"1s\"\n").unwrap();

    // (the small disk's folder in the lake, its size, what the run says while it waits there, the
    // metric it counts in, a roomy disk inside the small one). A lake on a full disk gets its
    // rejected lines a roomy disk of their own, so that the lake's commits meet the full disk
    // first.
    let cases = [
        (
            "",
            "1m",
            "the lake refused the batch",
            "haochaping_lake_commit_retries_total",
            Some("_haochaping/rejected"),
        ),
        (
            "_haochaping/rejected",
            "16k",
            "the disk refused rejected lines",
            "haochaping_rejected_lines_write_retries_total",
            None,
        ),
    ];
    for (full, size, waiting, metric, roomy) in cases {
        let lake = dir.path().join(format!("lake-{size}"));
        let disk = SmallDisk::mount(&lake.join(full), size);
        let _roomy = roomy.map(|folder| SmallDisk::mount(&lake.join(folder), "64m"));
        let addr = format!("127.0.0.1:{}", free_port());
        let mut child = Killed(
            ingest_file_command(&input, &lake)
                .arg("--config")
                .arg(&config)
                .args(["--flush-rows", "400", "--offline-commit-bytes", "150000"])
                .args(["--metrics-addr", &addr])
                .env("HAOCHAPING_LOG", "info")
                .spawn()
                .unwrap(),
        );
        let log = collect(child.0.stderr.take().unwrap());
        wait_until(Duration::from_secs(60), waiting, || {
            log.lock().unwrap().contains(waiting)
        })
        .await;
        wait_until(Duration::from_secs(30), metric, || {
            // A blocking request from the test's runtime: nothing else runs on it meanwhile.
            let scraped = http_get(&addr, "/metrics").unwrap_or_default();
            metric_value(&scraped, metric).unwrap_or(0) > 0
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "{metric}: the run ended on a full disk:\n{}",
            log.lock().unwrap()
        );

        disk.grow("256m");
        let mut status = None;
        wait_until(
            Duration::from_secs(120),
            "the run's end once space was freed",
            || {
                status = child.0.try_wait().unwrap();
                status.is_some()
            },
        )
        .await;
        assert!(
            status.unwrap().success(),
            "{metric}:\n{}",
            log.lock().unwrap()
        );
        // The summary is one short line: the pipe held it while the run went.
        let mut summary = String::new();
        std::io::Read::read_to_string(&mut child.0.stdout.take().unwrap(), &mut summary).unwrap();
        let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
        assert_eq!(
            summary["rows_written"], produced.report.accepted,
            "{summary}"
        );
        assert_exactly_once(&lake, &produced.slots);

        let rejected_dir = lake.join("_haochaping/rejected");
        let mut offsets = Vec::new();
        for file in std::fs::read_dir(&rejected_dir).unwrap() {
            let bytes = std::fs::read(file.unwrap().path()).unwrap();
            for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let record: serde_json::Value = serde_json::from_slice(line).unwrap();
                offsets.push(record["offset"].as_i64().unwrap());
            }
        }
        let distinct: std::collections::BTreeSet<i64> = offsets.iter().copied().collect();
        assert_eq!(
            offsets.len(),
            distinct.len(),
            "{metric}: a line parked twice in one run"
        );
        assert_eq!(
            distinct.len() as u64,
            produced.report.dead_lettered(),
            "{metric}"
        );
        let partial: Vec<_> = walk_files(&lake)
            .into_iter()
            .filter(|f| f.to_string_lossy().contains('#'))
            .collect();
        assert!(partial.is_empty(), "{metric}: {partial:?}");
        // Dropped in reverse: the run (ended), the roomy disk, then the small one.
    }
}
