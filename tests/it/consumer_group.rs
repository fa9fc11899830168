//! Scale-out: two instances in one consumer group on a 4-partition topic share it and one lake with
//! no other coordination; the union of their output is exactly once.

use std::process::Stdio;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_in_one_group_write_each_event_once() {
    let broker = Tansu::with_topics(4).await;
    let lake = tempfile::tempdir().unwrap();
    let mut produced = Produced::new();
    let mut generator = generator(21, 0.03, 0.02);
    produce(
        &broker.brokers,
        "evaluations",
        &mut generator,
        3_000,
        &mut produced,
    )
    .await;

    let args = [
        "--exit-when-idle",
        "8s",
        "--flush-rows",
        "500",
        "--flush-interval",
        "1s",
    ];
    let first = ingest_command(&broker.brokers, lake.path(), "group-test", &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let second = ingest_command(&broker.brokers, lake.path(), "group-test", &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // More events once both have joined, so the split shows in both instances' counts.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    produce(
        &broker.brokers,
        "evaluations",
        &mut generator,
        3_000,
        &mut produced,
    )
    .await;
    let first = first.wait_with_output().unwrap();
    let second = second.wait_with_output().unwrap();
    assert!(first.status.success() && second.status.success());

    assert_exactly_once(lake.path(), &produced.slots);
    let accepted = |out: &std::process::Output| {
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["accepted"]
            .as_u64()
            .unwrap()
    };
    let (a, b) = (accepted(&first), accepted(&second));
    assert!(a > 0 && b > 0, "both instances took part: {a} + {b}");
    // Partitions that moved are replayed by their new owner, so each count may include rows that a
    // revoked batch dropped; what landed is exactly once either way (asserted above).
    assert!(a + b >= produced.report.accepted);
}
