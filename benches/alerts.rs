//! Alert latency through a real broker: from producing a bad review to reading its alert off the
//! `alerts` topic, while the engine ingests a background load of generated evaluations (10 000/s by
//! default, `HAOCHAPING_BENCH_LOAD`), all on this machine.
//!
//! `cargo bench --bench alerts` starts Tansu (`HAOCHAPING_TANSU_BIN` or the `.ci/run` cache) and the
//! engine in-process with its defaults (alerts on, 30 s flush). Each measured iteration produces one
//! bad review with a fresh case number and waits for its `bad_review` alert; criterion reports the
//! mean, and the bench prints p50/p99 over every iteration it ran.

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use haochaping::config::IngestConfig;
use haochaping::engine::{self, RunOptions};
use haochaping::generate;
use haochaping::telemetry::Stats;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// A bad review from the alert fixture; its case number and time are replaced per iteration.
const TEMPLATE: &str = include_str!("../tests/it/fixtures/alerts.ndjson");

fn bad_review(case: &str) -> Vec<u8> {
    let line = TEMPLATE
        .lines()
        .find(|l| l.contains("\"LN-B1\""))
        .expect("fixture line");
    let mut event: serde_json::Value = serde_json::from_str(line).expect("fixture json");
    let now = chrono::Utc::now().with_timezone(&haochaping::policy::span::cst());
    event["projectNo"] = case.into();
    // A department of its own, so the rate limit on the background load's departments never
    // holds the measured alert back.
    let first17 = "11410328MB9999999";
    let check = haochaping::transform::validate::credit_code_check_char(first17).expect("check");
    event["deptCode"] = format!("{first17}{check}").into();
    event["assessTime"] = now.format("%Y-%m-%d %H:%M:%S").to_string().into();
    serde_json::to_vec(&event).expect("json")
}

/// How long an iteration waits for its alert before it counts it as missed.
const MISSED: Duration = Duration::from_secs(20);

const UNDER_LOAD: &str = "produce_to_alert_under_load";

fn alerts(c: &mut Criterion) {
    // `--list` (how cargo nextest finds benchmarks) names them without starting a broker.
    if std::env::args().any(|a| a == "--list") {
        c.benchmark_group("alerts")
            .bench_function(UNDER_LOAD, |b| b.iter(|| ()));
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let tansu = support::Tansu::start();
    let brokers = tansu.brokers.clone();
    let load: u32 = std::env::var("HAOCHAPING_BENCH_LOAD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    runtime
        .block_on(generate::ensure_topics(
            &haochaping::config::KafkaConfig::with_brokers(&brokers),
            &[("evaluations", 4), ("evaluations.dlq", 1), ("alerts", 1)],
        ))
        .expect("topics");

    // The engine, as `ingest` runs it.
    let lake = tempfile::tempdir().expect("lake");
    let mut config = IngestConfig::default();
    config.kafka.brokers.clone_from(&brokers);
    config.kafka.group = "bench-alerts".into();
    config.lake.path = lake.path().into();
    config.identity.secret = Some(support::SECRET.into());
    // Every measured review is of one department: the per-department limit (60 a minute) would
    // hold the measured alerts back into a summary (the first run here lost one alert of 83 to
    // it). This bench measures latency, not the limit (`tests/it/alerts.rs` tests that).
    config.alerts.max_per_minute = 1_000_000;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let ingest = runtime.spawn(engine::run(
        config,
        RunOptions::default(),
        Arc::new(Stats::default()),
        async {
            let _ = stop_rx.await;
        },
    ));

    // The background load, until the bench ends.
    let stop_load = Arc::new(AtomicBool::new(false));
    let load_task = {
        let (brokers, stop) = (brokers.clone(), stop_load.clone());
        runtime.spawn(async move {
            let producer =
                generate::producer(&haochaping::config::KafkaConfig::with_brokers(&brokers))
                    .expect("producer");
            let mut generator = support::generator(3, 0.0, 0.0);
            while !stop.load(Ordering::Relaxed) {
                generate::produce(
                    &producer,
                    "evaluations",
                    &mut generator,
                    1_000,
                    Some(load),
                    |_| {},
                )
                .await
                .expect("background load");
            }
        })
    };

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "bench-alert-reader")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    list.add_partition_offset("alerts", 0, Offset::End)
        .expect("partition");
    consumer.assign(&list).expect("assign");

    let samples = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let mut case = 0u64;
    let once = |case: String| -> Duration {
        let payload = bad_review(&case);
        let started = Instant::now();
        runtime
            .block_on(producer.send(
                FutureRecord::to("evaluations").key(&case).payload(&payload),
                Duration::from_secs(10),
            ))
            .expect("produce");
        let deadline = started + MISSED;
        loop {
            if Instant::now() >= deadline {
                // Counted and reported, not fatal: the exactly-once test of alerts is
                // `tests/it/alerts.rs`; a bench that stops here would measure nothing at all.
                eprintln!("no alert seen for {case} within {MISSED:?}");
                return MISSED;
            }
            let Some(Ok(message)) = consumer.poll(Duration::from_millis(5)) else {
                continue;
            };
            let alert: serde_json::Value =
                serde_json::from_slice(message.payload().unwrap_or_default()).expect("alert json");
            if alert["project_no"] == case.as_str() && alert["rule"] == "bad_review" {
                return started.elapsed();
            }
        }
    };
    // The first alert also waits for the group join and the rules' start: not a latency.
    once("BENCH-WARMUP".into());

    let mut group = c.benchmark_group("alerts");
    group.sample_size(20);
    group.throughput(Throughput::Elements(1));
    group.bench_function(UNDER_LOAD, |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                case += 1;
                let latency = once(format!("BENCH-{case}"));
                samples.lock().expect("samples").push(latency);
                total += latency;
            }
            total
        })
    });
    group.finish();

    let mut samples = samples.lock().expect("samples").clone();
    samples.sort();
    if !samples.is_empty() {
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        let missed = samples.iter().filter(|s| **s >= MISSED).count();
        eprintln!(
            "alert latency under {load} events/s: p50 {:?}, p99 {:?}, max {:?} over {} alerts ({missed} not seen within {MISSED:?})",
            at(0.5),
            at(0.99),
            at(1.0),
            samples.len()
        );
    }
    stop_load.store(true, Ordering::Relaxed);
    let _ = runtime.block_on(load_task);
    let _ = stop_tx.send(());
    runtime
        .block_on(ingest)
        .expect("ingest task")
        .expect("ingest");
}

criterion_group!(benches, alerts);
criterion_main!(benches);
