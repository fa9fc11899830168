//! The offline path (`ingest --from-file`): same stages and commit protocol as Kafka, so running the
//! same file twice writes nothing twice.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use haochaping::config::IngestConfig;
use haochaping::telemetry::Stats;
use support::*;

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

    let mut config = IngestConfig::default();
    config.lake.path = dir.path().join("lake");
    config.lake.flush_rows = 700;
    config.identity.secret = Some(SECRET.into());
    let first =
        haochaping::offline::ingest_file(config.clone(), &input, Arc::new(Stats::default()))
            .await
            .unwrap();
    assert_eq!(first.accepted, produced.report.accepted);
    assert_eq!(first.duplicates, produced.report.duplicates);
    // Batches are cut between chunks of at most flush_rows lines: several batches, none oversized.
    assert!(first.batches_committed >= 3, "{first:?}");
    assert_exactly_once(&config.lake.path, &produced.slots);

    let rejected = std::fs::read_to_string(
        config
            .lake
            .path
            .join("_haochaping/rejected/province_day.ndjson"),
    )
    .unwrap();
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
    assert_exactly_once(&config.lake.path, &produced.slots);
}
