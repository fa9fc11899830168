//! Two writers on one lake against a real broker: the lake's log fences the one that no longer owns
//! a partition, so every accepted evaluation lands exactly once whatever the writers believe.

use std::process::{Child, Stdio};
use std::time::Duration;

use crate::support::*;

/// Waits for a child with a deadline; its stderr (piped) is returned for messages.
async fn finish(mut child: Child, what: &str) -> String {
    let stderr = child.stderr.take();
    let waited = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await
    .unwrap_or_else(|_| panic!("{what} did not finish"))
    .unwrap()
    .unwrap();
    let mut text = String::from_utf8_lossy(&waited.stderr).into_owned();
    if let Some(mut stderr) = stderr {
        std::io::Read::read_to_string(&mut stderr, &mut text).ok();
    }
    assert!(waited.status.success(), "{what} failed: {text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ingests_with_different_groups_on_one_lake_write_each_event_once() {
    let broker = Tansu::with_topics(2).await;
    let lake = tempfile::tempdir().unwrap();
    let mut produced = Produced::new();
    let mut generator = generator(21, 0.02, 0.0);
    produce(
        &broker.brokers,
        "evaluations",
        &mut generator,
        6_000,
        &mut produced,
    )
    .await;

    // Different groups and batch sizes: both believe they own both partitions, and their batches
    // cover different offset ranges (the old protocol doubled every row here).
    let spawn = |group: &str, rows: &str| {
        ingest_command(
            &broker.brokers,
            lake.path(),
            group,
            &[
                "--flush-rows",
                rows,
                "--flush-interval",
                "100ms",
                "--exit-when-idle",
                "3s",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
    };
    let a = spawn("writer-a", "200");
    let b = spawn("writer-b", "450");
    let (a, b) = tokio::join!(finish(a, "writer a"), finish(b, "writer b"));
    assert!(!a.contains("ERROR") && !b.contains("ERROR"), "{a}\n{b}");

    let last = ingest_command(
        &broker.brokers,
        lake.path(),
        "writer-last",
        &["--exit-when-idle", "3s"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    finish(last, "the last clean run").await;
    assert_exactly_once(lake.path(), &produced.slots);
}

/// A writer stopped with SIGSTOP in the middle of its work, while another instance takes over the
/// lake, then continued: its next commit is refused and nothing it had in hand lands twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_writer_that_wakes_up_is_fenced() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;

    let broker = Tansu::with_topics(2).await;
    let lake = tempfile::tempdir().unwrap();
    let mut produced = Produced::new();
    let mut generator = generator(23, 0.0, 0.0);
    produce(
        &broker.brokers,
        "evaluations",
        &mut generator,
        3_000,
        &mut produced,
    )
    .await;

    // A holds its batches in memory (a long interval, no row limit reached) and is stopped.
    let mut stalled = ingest_command(
        &broker.brokers,
        lake.path(),
        "stalled",
        &["--flush-interval", "5s", "--exit-when-idle", "2s"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let assigned = wait_for_line(
        stalled.stderr.take().unwrap(),
        "partition recovered from the lake",
    );
    tokio::task::spawn_blocking(move || assigned.recv_timeout(Duration::from_secs(90)))
        .await
        .unwrap()
        .expect("the stalled writer was never assigned a partition");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let pid = Pid::from_raw(stalled.id() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();

    // Another instance writes everything meanwhile.
    let other = ingest_command(
        &broker.brokers,
        lake.path(),
        "other",
        &["--exit-when-idle", "3s"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    finish(other, "the other writer").await;
    assert_exactly_once(lake.path(), &produced.slots);

    // A wakes up and flushes what it held: fenced, it recovers and finds nothing left to do.
    kill(pid, Signal::SIGCONT).unwrap();
    finish(stalled, "the stalled writer").await;
    assert_exactly_once(lake.path(), &produced.slots);
}
