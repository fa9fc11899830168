//! End to end through a real Kafka-compatible broker: the bare consume rate of a topic (librdkafka,
//! no processing: the limit) and the engine's rate on the same topic, both from a fresh consumer
//! group, so both pay the same group join. Before criterion's runs, one run of the bare consumer
//! and one of the engine (alerts off) print the process's CPU per message: on two cores shared
//! with the broker, CPU is what bounds the engine's rate.
//!
//! `cargo bench --bench broker` starts Tansu (`HAOCHAPING_TANSU_BIN` or the `.ci/run` cache) and
//! produces `HAOCHAPING_BENCH_EVENTS` events (default 100 000) into a fresh topic. To measure an
//! existing topic instead (what `benches/compare_broker.py` does, so that the Python consumer reads
//! the very same records), set `HAOCHAPING_BENCH_BROKERS`, `HAOCHAPING_BENCH_TOPIC` and
//! `HAOCHAPING_BENCH_MESSAGES` (the topic's message count: Tansu 0.6.0 reports high watermarks
//! below the real end, so they cannot tell).

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use haochaping::config::IngestConfig;
use haochaping::engine::{self, RunOptions};
use haochaping::generate;
use haochaping::telemetry::Stats;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;

static GROUP: AtomicU64 = AtomicU64::new(0);

/// A consumer group nobody used before, so every iteration reads the topic from the start.
fn fresh_group(kind: &str) -> String {
    format!(
        "bench-{kind}-{}-{}",
        std::process::id(),
        GROUP.fetch_add(1, Ordering::Relaxed)
    )
}

/// The broker and topic to measure, with its message count; keeps a spawned Tansu alive.
struct Topic {
    _tansu: Option<support::Tansu>,
    brokers: String,
    name: String,
    messages: u64,
}

fn topic(runtime: &tokio::runtime::Runtime) -> Topic {
    let count = |name: &str| std::env::var(name).ok().and_then(|n| n.parse::<u64>().ok());
    let (tansu, brokers, name, messages) = match std::env::var("HAOCHAPING_BENCH_BROKERS") {
        Ok(brokers) => {
            let name =
                std::env::var("HAOCHAPING_BENCH_TOPIC").unwrap_or_else(|_| "evaluations".into());
            let messages = count("HAOCHAPING_BENCH_MESSAGES")
                .expect("HAOCHAPING_BENCH_MESSAGES: the number of messages in the topic");
            (None, brokers, name, messages)
        }
        Err(_) => {
            let tansu = support::Tansu::start();
            let brokers = tansu.brokers.clone();
            let events = count("HAOCHAPING_BENCH_EVENTS").unwrap_or(100_000);
            runtime.block_on(async {
                generate::ensure_topics(
                    &haochaping::config::KafkaConfig::with_brokers(&brokers),
                    &[("evaluations", 4), ("evaluations.dlq", 1), ("alerts", 1)],
                )
                .await
                .expect("topics");
                let producer =
                    generate::producer(&haochaping::config::KafkaConfig::with_brokers(&brokers))
                        .expect("producer");
                let mut generator = support::generator(7, 0.01, 0.005);
                generate::produce(
                    &producer,
                    "evaluations",
                    &mut generator,
                    events,
                    None,
                    |_| {},
                )
                .await
                .expect("produce");
            });
            (Some(tansu), brokers, "evaluations".to_owned(), events)
        }
    };
    eprintln!("broker bench: {messages} messages in {name} on {brokers}");
    Topic {
        _tansu: tansu,
        brokers,
        name,
        messages,
    }
}

/// Reads the whole topic through a group subscription and touches every payload; returns the bytes.
fn bare_consume(topic: &Topic) -> u64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &topic.brokers)
        .set("group.id", fresh_group("bare"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        // The engine's fetch settings, so the difference is the processing alone.
        .set("fetch.max.bytes", "104857600")
        .set("max.partition.fetch.bytes", "16777216")
        .set("fetch.wait.max.ms", "10")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&topic.name]).expect("subscribe");
    let (mut count, mut bytes) = (0, 0);
    while count < topic.messages {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                count += 1;
                bytes += message.payload().map_or(0, |p| p.len() as u64);
            }
            Some(Err(e)) => eprintln!("consume error: {e}"),
            None => {}
        }
    }
    bytes
}

/// The whole ingest job on the topic into an empty lake, until the group has committed all of it;
/// with or without the alert stage (to measure what it costs).
fn engine(runtime: &tokio::runtime::Runtime, topic: &Topic, alerts: bool) -> u64 {
    let lake = tempfile::tempdir().expect("lake dir");
    let mut config = IngestConfig::default();
    config.kafka.brokers = topic.brokers.clone();
    config.kafka.topic = topic.name.clone();
    config.kafka.group = fresh_group("engine");
    config.lake.path = lake.path().into();
    config.identity.secret = Some(support::SECRET.into());
    config.alerts.enabled = alerts;
    let options = RunOptions {
        exit_when_idle: Some(Duration::from_millis(100)),
    };
    let summary = runtime
        .block_on(engine::run(
            config,
            options,
            Arc::new(Stats::default()),
            std::future::pending(),
        ))
        .expect("ingest");
    assert_eq!(
        summary.received, topic.messages,
        "engine read the whole topic"
    );
    summary.rows_written
}

/// This process's CPU time so far (user + system, all threads), from `/proc/self/stat`; `None`
/// where there is no such file.
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    // utime and stime, fields 14 and 15 of proc(5), in clock ticks of 1/100 s on Linux.
    let total = ticks(11)? + ticks(12)?;
    Some(Duration::from_millis(total * 10))
}

/// Runs `work` once and prints its wall time and the CPU it took per message of the topic.
fn cpu_per_message<R>(topic: &Topic, name: &str, work: impl FnOnce() -> R) {
    let (cpu, wall) = (process_cpu(), std::time::Instant::now());
    std::hint::black_box(work());
    let wall = wall.elapsed();
    match (cpu, process_cpu()) {
        (Some(before), Some(after)) => {
            let cpu = after.saturating_sub(before);
            println!(
                "broker/{name} once: {:.2} s wall, {:.2} s CPU, {:.2} µs of CPU a message",
                wall.as_secs_f64(),
                cpu.as_secs_f64(),
                cpu.as_secs_f64() * 1e6 / topic.messages as f64
            );
        }
        _ => println!("broker/{name} once: {:.2} s wall", wall.as_secs_f64()),
    }
}

fn broker(c: &mut Criterion) {
    // `--list` (how cargo nextest finds benchmarks) names them without starting a broker.
    if std::env::args().any(|a| a == "--list") {
        let mut group = c.benchmark_group("broker");
        for name in ["bare_consume", "engine", "engine_alerts_off"] {
            group.bench_function(name, |b| b.iter(|| ()));
        }
        group.finish();
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let topic = topic(&runtime);
    // Criterion measures wall time; what bounds the engine on two cores is CPU, so one run of
    // each also reports the process's CPU per message (librdkafka's threads included).
    cpu_per_message(&topic, "bare_consume", || bare_consume(&topic));
    cpu_per_message(&topic, "engine_alerts_off", || {
        engine(&runtime, &topic, false)
    });
    let mut group = c.benchmark_group("broker");
    group.sample_size(10);
    group.throughput(Throughput::Elements(topic.messages));
    group.bench_function("bare_consume", |b| b.iter(|| bare_consume(&topic)));
    group.bench_function("engine", |b| b.iter(|| engine(&runtime, &topic, true)));
    group.bench_function("engine_alerts_off", |b| {
        b.iter(|| engine(&runtime, &topic, false))
    });
    group.finish();
}

criterion_group!(benches, broker);
criterion_main!(benches);
