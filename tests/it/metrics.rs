//! The counters reach an exporter: `ingest --metrics-addr` serves them in the Prometheus format while
//! it runs, and they agree with the run's own summary.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_serves_its_counters_to_prometheus() {
    let broker = Tansu::with_topics(2).await;
    let mut produced = Produced::new();
    let mut generator = generator(17, 0.02, 0.02);
    produce(
        &broker.brokers,
        "evaluations",
        &mut generator,
        2_000,
        &mut produced,
    )
    .await;
    let lake = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let child = ingest_command(
        &broker.brokers,
        lake.path(),
        "metrics-test",
        &[
            "--exit-when-idle",
            "15s",
            "--flush-interval",
            "1s",
            "--metrics-addr",
            &addr,
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // Scrape until everything produced was read (the run then idles for 15 s before it exits).
    let started = Instant::now();
    let scrape = loop {
        let scrape = tokio::task::spawn_blocking({
            let addr = addr.clone();
            move || http_get(&addr, "/metrics")
        })
        .await
        .unwrap();
        if let Some(scrape) = scrape.filter(|s| {
            metric_value(s, "haochaping_events_received_total") == Some(produced.report.produced)
        }) {
            break scrape;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "no complete scrape"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // The gauges and histograms of the run: the lag of both partitions (from librdkafka's
    // statistics, every 5 s) reaches 0 once everything is read; commits, batches and recoveries
    // were timed; dedup keys are held.
    let started = Instant::now();
    let gauges = loop {
        let s = tokio::task::spawn_blocking({
            let addr = addr.clone();
            move || http_get(&addr, "/metrics")
        })
        .await
        .unwrap()
        .unwrap_or_default();
        let lags: Vec<&str> = s
            .lines()
            .filter(|l| l.starts_with("haochaping_consumer_lag_messages{"))
            .collect();
        if lags.len() == 2 && lags.iter().all(|l| l.ends_with(" 0")) {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no lag of 0 for both partitions: {lags:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    for name in [
        "haochaping_lake_commit_duration_seconds_count{table=\"evaluations\"}",
        "haochaping_batch_age_seconds_count",
        "haochaping_alert_barrier_wait_seconds_count",
        "haochaping_recovery_duration_seconds_count",
        "haochaping_dedup_keys",
    ] {
        assert!(
            metric_value(&gauges, name).unwrap_or(0) > 0,
            "{name}:\n{gauges}"
        );
    }
    // The probes beside the metrics: alive, and ready once the group gave this member its share.
    let probe = |path: &'static str| {
        let addr = addr.clone();
        move || http_get(&addr, path)
    };
    assert_eq!(
        tokio::task::spawn_blocking(probe("/health"))
            .await
            .unwrap()
            .as_deref(),
        Some("ok")
    );
    let ready = tokio::task::spawn_blocking(probe("/ready"))
        .await
        .unwrap()
        .unwrap();
    assert!(ready.starts_with("ready: 2 partitions"), "{ready}");
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        metric_value(&scrape, "haochaping_events_accepted_total"),
        summary["accepted"].as_u64()
    );
    assert_eq!(
        metric_value(&scrape, "haochaping_events_duplicate_total"),
        summary["duplicates"].as_u64()
    );
    // Dead letters by reason, labelled.
    let dead: u64 = scrape
        .lines()
        .filter(|l| l.starts_with("haochaping_events_dead_lettered_total{reason="))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum();
    assert_eq!(dead, produced.report.dead_lettered());
    // Events by stream and partition: one series for each of the two partitions, adding up.
    for partition in 0..2 {
        let series = format!(
            "haochaping_events_received_total{{stream=\"evaluations\",partition=\"{partition}\"}}"
        );
        assert!(
            metric_value(&scrape, &series).unwrap_or(0) > 0,
            "{series}:\n{scrape}"
        );
    }
    assert!(scrape.contains("# TYPE haochaping_events_received_total counter"));
}

#[test]
fn a_taken_metrics_address_is_one_line_naming_the_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let lake = tempfile::tempdir().unwrap();
    let output = ingest_command("127.0.0.1:1", lake.path(), "g", &["--metrics-addr", &addr])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--metrics-addr"), "{stderr}");
}
