//! The cases stream beside evaluations: one `ingest` run, one group, two topics, two lake tables;
//! each case status once, bad records to `cases.dlq` by reason, the applicant never in clear.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Stdio;

use arrow::array::AsArray;
use arrow::datatypes::Int8Type;
use haochaping::generate::{case_lifecycle, GeneratedEvent};

use crate::support::*;

/// Every (`project_no`, `status`) row of the `cases` table, with its count.
fn case_slots(lake: &std::path::Path) -> HashMap<(String, i8), usize> {
    let mut counts = HashMap::new();
    for file in parquet_files(&lake.join("cases")) {
        for batch in read_parquet(&file) {
            let project = batch
                .column_by_name("project_no")
                .unwrap()
                .as_string::<i32>();
            let status = batch
                .column_by_name("status")
                .unwrap()
                .as_primitive::<Int8Type>();
            for row in 0..batch.num_rows() {
                *counts
                    .entry((project.value(row).to_owned(), status.value(row)))
                    .or_insert(0) += 1;
            }
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cases_and_evaluations_run_through_one_engine_each_record_once() {
    let broker = Tansu::with_topics(2).await;
    broker.create_topic("cases", 2).await;
    broker.create_topic("cases.dlq", 1).await;

    let mut generator = generator(11, 0.02, 0.02);
    let events: Vec<GeneratedEvent> = (0..1_500).map(|_| generator.next_event()).collect();
    let mut produced = Produced::new();
    for event in &events {
        produced.record_event(event);
    }
    let evaluations: Vec<(String, Vec<u8>)> = events
        .iter()
        .map(|e| (e.key.clone(), e.payload.clone()))
        .collect();

    // The cases of the evaluations, cases nobody evaluated, and what a hostile source adds.
    let mut cases: Vec<(String, Vec<u8>)> = events.iter().flat_map(case_lifecycle).collect();
    for _ in 0..50 {
        cases.extend(generator.next_unevaluated_case());
    }
    let expected: HashSet<(String, i8)> = cases
        .iter()
        .map(|(_, payload)| {
            let value: serde_json::Value = serde_json::from_slice(payload).unwrap();
            let status = value["proStatus"].as_i64().unwrap() as i8;
            (value["projectNo"].as_str().unwrap().to_owned(), status)
        })
        .collect();
    assert_eq!(expected.len(), cases.len(), "one record per case status");
    let finished: Vec<(String, Vec<u8>)> = cases
        .iter()
        .filter(|(_, p)| p.windows(13).any(|w| w == b"\"proStatus\":3"))
        .take(40)
        .cloned()
        .collect();
    let mut hostile = Vec::new();
    for (i, (key, payload)) in finished.iter().enumerate() {
        let mut value: serde_json::Value = serde_json::from_slice(payload).unwrap();
        match i % 4 {
            // A redelivery, byte for byte.
            0 => hostile.push((key.clone(), payload.clone())),
            // Finished again at another time: a conflict.
            1 => {
                value["resultDate"] = "2020-01-01 00:00:00".into();
                value["applyDate"] = serde_json::Value::Null;
                value["acceptDate"] = "2019-12-31 00:00:00".into();
                hostile.push((key.clone(), serde_json::to_vec(&value).unwrap()));
            }
            // Finished without its date.
            2 => {
                value.as_object_mut().unwrap().remove("resultDate");
                hostile.push((key.clone(), serde_json::to_vec(&value).unwrap()));
            }
            // Not JSON at all, with the applicant in it.
            _ => {
                let cert = value["userCert"].as_str().unwrap_or("410328199001011234");
                hostile.push((
                    key.clone(),
                    format!("{{\"userCert\": \"{cert}\",").into_bytes(),
                ));
            }
        }
    }
    cases.extend(hostile);
    let identities: HashSet<String> = cases
        .iter()
        .filter_map(|(_, p)| serde_json::from_slice::<serde_json::Value>(p).ok())
        .filter_map(|v| v["userCert"].as_str().map(str::to_owned))
        .collect();
    assert!(identities.len() > 500);

    produce_records(&broker.brokers, "evaluations", &evaluations).await;
    produce_records(&broker.brokers, "cases", &cases).await;

    let lake = tempfile::tempdir().unwrap();
    let run = |group: &str| {
        ingest_command(
            &broker.brokers,
            lake.path(),
            group,
            &[
                "--exit-when-idle",
                "4s",
                "--flush-rows",
                "500",
                "--cases-topic",
                "cases",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap()
    };
    let output = run("cases-test");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "ingest failed: {stderr}");

    // Both tables: each record once.
    assert_exactly_once(lake.path(), &produced.slots);
    let slots = case_slots(lake.path());
    let doubled: Vec<_> = slots.iter().filter(|(_, n)| **n > 1).take(3).collect();
    assert!(doubled.is_empty(), "case records twice: {doubled:?}");
    let landed: HashSet<(String, i8)> = slots.into_keys().collect();
    assert_eq!(landed.len(), expected.len());
    assert!(
        landed == expected,
        "the cases table differs from the records sent"
    );

    // The rejected case records, on the cases' own dead-letter topic, by reason.
    let dead = read_topic(&broker.brokers, "cases.dlq", 1);
    let expected_reasons = BTreeMap::from([
        ("case_status_conflict".to_owned(), 10),
        ("missing_field".to_owned(), 10),
        ("not_json".to_owned(), 10),
    ]);
    assert_eq!(count_by_reason(&dead), expected_reasons);
    assert!(dead
        .iter()
        .all(|r| r.headers.get("haochaping.source.topic").map(String::as_str) == Some("cases")));

    // The applicant never in clear: the cases table, its dead letters, the logs.
    let mut cells = Vec::new();
    for file in parquet_files(&lake.path().join("cases")) {
        for batch in read_parquet(&file) {
            for column in batch.columns() {
                if let Some(strings) = column.as_string_opt::<i32>() {
                    cells.extend(strings.iter().flatten().map(str::to_owned));
                }
            }
        }
    }
    assert!(
        cells.iter().all(|c| !identities.contains(c)),
        "identity in the cases table"
    );
    for record in &dead {
        let text = String::from_utf8_lossy(&record.payload);
        assert!(
            identities.iter().all(|i| !text.contains(i.as_str())),
            "identity in a dead letter"
        );
    }
    assert!(identities.iter().all(|i| !stderr.contains(i.as_str())));

    // A second run (another group, so the group's offsets do not help) adds nothing: the lake says
    // where each stream's partitions stand.
    let again = run("cases-test-2");
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_exactly_once(lake.path(), &produced.slots);
    assert!(case_slots(lake.path()).values().all(|n| *n == 1));
    assert_eq!(
        read_topic(&broker.brokers, "cases.dlq", 1).len(),
        dead.len()
    );
}
