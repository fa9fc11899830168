//! Against a real broker (Tansu): produce evaluations with redeliveries and malformed records, run the
//! `haochaping ingest` binary until idle, and read everything back.

use std::process::Stdio;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_lands_every_valid_evaluation_once_and_parks_the_rest() {
    let broker = Tansu::with_topics(4).await;
    let mut produced = Produced::new();
    let mut generator = generator(7, 0.05, 0.05);
    produce(
        &broker.brokers,
        "evaluations",
        &mut generator,
        6_000,
        &mut produced,
    )
    .await;
    assert!(produced.report.duplicates > 100 && produced.report.dead_lettered() > 100);

    let lake = tempfile::tempdir().unwrap();
    let output = ingest_command(
        &broker.brokers,
        lake.path(),
        "broker-test",
        &["--exit-when-idle", "4s", "--flush-rows", "1000"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "ingest failed: {stderr}");

    // The lake: exactly the valid slots, once each.
    assert_exactly_once(lake.path(), &produced.slots);

    // The summary on stdout accounts for every message.
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["received"], produced.report.produced);
    assert_eq!(summary["accepted"], produced.report.accepted);
    assert_eq!(summary["duplicates"], produced.report.duplicates);
    assert_eq!(summary["dead_lettered"], produced.report.dead_lettered());

    // The dead-letter topic: one record per rejected message, by reason, with its source position.
    let dead = read_topic(&broker.brokers, "evaluations.dlq", 1);
    assert_eq!(dead.len() as u64, produced.report.dead_lettered());
    assert_eq!(count_by_reason(&dead), expected_by_reason(&produced.report));
    for record in &dead {
        assert_eq!(
            record
                .headers
                .get("haochaping.source.topic")
                .map(String::as_str),
            Some("evaluations")
        );
        assert!(record
            .headers
            .get("haochaping.source.offset")
            .is_some_and(|o| o.parse::<i64>().is_ok()));
        assert!(record
            .headers
            .get("haochaping.message")
            .is_some_and(|m| !m.is_empty()));
    }

    // No clear-text identity anywhere: lake cells, dead letters, logs.
    assert!(produced.identities.len() > 1000);
    let cells = lake_strings(lake.path());
    let leaked: Vec<_> = cells
        .iter()
        .filter(|c| produced.identities.contains(*c))
        .take(3)
        .collect();
    assert!(leaked.is_empty(), "identity in the lake: {leaked:?}");
    for record in &dead {
        let text = String::from_utf8_lossy(&record.payload);
        if serde_json::from_slice::<serde_json::Value>(&record.payload).is_ok() {
            assert!(
                !text.contains("userCert")
                    && !text.contains("userPhone")
                    && !text.contains("userName"),
                "{text}"
            );
        }
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    for identity in produced.identities.iter().take(2000) {
        assert!(
            !stderr.contains(identity.as_str()) && !stdout.contains(identity.as_str()),
            "identity in the logs"
        );
    }
}

/// A topic deleted and recreated under the same name starts again at offset 0, below where the lake
/// ends: the run stops with one line naming the topic, the partition and both positions, instead of
/// dropping the new records as "already in the lake"; `--accept-offset-reset` adopts the new topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_topic_stops_the_run_until_it_is_adopted() {
    let broker = Tansu::with_topics(1).await;
    let lake = tempfile::tempdir().unwrap();
    let mut produced = Produced::new();
    let mut generator = generator(41, 0.0, 0.0);
    produce(
        &broker.brokers,
        "evaluations",
        &mut generator,
        2_000,
        &mut produced,
    )
    .await;
    let run = |group: &str, extra: &[&str]| {
        let mut args = vec!["--exit-when-idle", "3s"];
        args.extend_from_slice(extra);
        ingest_command(&broker.brokers, lake.path(), group, &args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap()
    };
    let first = run("recreate-1", &[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_exactly_once(lake.path(), &produced.slots);

    broker.delete_topic("evaluations").await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    broker.create_topic("evaluations", 1).await;
    produce(
        &broker.brokers,
        "evaluations",
        &mut generator,
        500,
        &mut produced,
    )
    .await;

    let stopped = run("recreate-2", &[]);
    let stderr = String::from_utf8_lossy(&stopped.stderr);
    assert!(!stopped.status.success(), "{stderr}");
    let error: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error.len(), 1, "{stderr}");
    assert!(
        error[0].contains("evaluations/0")
            && error[0].contains("offset 2000")
            && error[0].contains("--accept-offset-reset"),
        "{}",
        error[0]
    );

    let adopted = run("recreate-3", &["--accept-offset-reset"]);
    assert!(
        adopted.status.success(),
        "{}",
        String::from_utf8_lossy(&adopted.stderr)
    );
    assert_exactly_once(lake.path(), &produced.slots);
}

/// Ingest compacts the lake in the background while it writes (fenced like any writer, locking each
/// folder while it swaps it): killed in the middle of that, then run again, every evaluation lands
/// once and the small files are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_compaction_beside_ingest_survives_a_kill() {
    let broker = Tansu::with_topics(2).await;
    let mut produced = Produced::new();
    let mut generator = generator(41, 0.03, 0.02);
    produce(
        &broker.brokers,
        "evaluations",
        &mut generator,
        4_000,
        &mut produced,
    )
    .await;
    let lake = tempfile::tempdir().unwrap();
    let args = [
        "--flush-rows",
        "60",
        "--flush-interval",
        "100ms",
        "--compact-every",
        "1s",
        "--compact-quiet-for",
        "0s",
    ];
    spawn_then_sigkill(
        &mut ingest_command(&broker.brokers, lake.path(), "compacting", &args),
        std::time::Duration::from_secs(6),
    )
    .await;
    produce(
        &broker.brokers,
        "evaluations",
        &mut generator,
        2_000,
        &mut produced,
    )
    .await;

    // A fresh group: the lake says where to resume, and Tansu 0.6.0 can keep the killed member
    // in the old group for minutes, during which a new member of it is assigned nothing.
    let output = ingest_command(
        &broker.brokers,
        lake.path(),
        "compacting-again",
        &[args.as_slice(), &["--exit-when-idle", "4s"]].concat(),
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .output()
    .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    let compacted: u64 = log
        .lines()
        .filter(|l| l.contains("background compaction"))
        .filter_map(|l| {
            l.split("files_replaced=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert!(
        compacted > 0,
        "no background compaction replaced a file:\n{log}"
    );
    let merged = parquet_files(&lake.path().join("evaluations"))
        .iter()
        .filter(|p| p.to_string_lossy().ends_with("c.parquet"))
        .count();
    assert!(merged > 0, "no compacted file in the lake");
    assert_exactly_once(lake.path(), &produced.slots);
}
