//! `haochaping demo`: the embedded default. Starts rdkafka's mock cluster in-process, generates a
//! province's day into it while the ingest job consumes it into a local lake, and reports what
//! happened: alerts as they fire, outcomes, dead-letter reasons, throughput, and how to query the
//! result.

use std::path::{Path, PathBuf};

use crate::lake::LakeRoot;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;

use crate::cli::DemoArgs;
use crate::config::IngestConfig;
use crate::engine::{self, RunOptions};
use crate::generate::{self, Generator, GeneratorConfig, ProduceReport};
use crate::telemetry::{Stats, StatsSnapshot};

/// Marks a lake the demo created, so that a later demo may replace it.
const DEMO_MARKER: &str = "_haochaping/DEMO";

/// What the demo did.
#[derive(Debug)]
pub struct DemoReport {
    pub produced: ProduceReport,
    pub ingested: StatsSnapshot,
    pub elapsed: Duration,
    pub lake: PathBuf,
    /// Alerts read back from the alerts topic, by rule.
    pub alerts: std::collections::BTreeMap<String, u64>,
}

/// Alerts printed one per line before the demo only counts them.
const ALERTS_SHOWN: u64 = 12;

/// Reads the alerts topic while the demo runs and prints the first alerts as they fire, above the
/// progress bars; returns how many of each rule it read once `stop` fires.
fn watch_alerts(
    brokers: &str,
    bars: MultiProgress,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> anyhow::Result<tokio::task::JoinHandle<std::collections::BTreeMap<String, u64>>> {
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "haochaping-demo-alerts")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&["alerts"])?;
    Ok(tokio::spawn(async move {
        let mut counts = std::collections::BTreeMap::new();
        let mut shown = 0;
        let mut stream = consumer.stream();
        tokio::pin!(stop);
        loop {
            let message = tokio::select! {
                _ = &mut stop => break,
                message = stream.next() => message,
            };
            let Some(Ok(message)) = message else { continue };
            let Ok(alert) =
                serde_json::from_slice::<serde_json::Value>(message.payload().unwrap_or_default())
            else {
                continue;
            };
            let rule = alert["rule"].as_str().unwrap_or("?").to_owned();
            *counts.entry(rule.clone()).or_insert(0) += 1;
            shown += 1;
            if shown <= ALERTS_SHOWN {
                let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_owned();
                let tags: Vec<String> = alert["tags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t["meaning"].as_str().map(str::to_owned))
                    .collect();
                let line = format!(
                    "ALERT {:<24} {:<6} {} {} · {} · {} · forward by {}",
                    rule,
                    text(&alert["severity"]),
                    text(&alert["level_name"]),
                    text(&alert["department"]["name"]),
                    text(&alert["item"]["name"]),
                    if tags.is_empty() {
                        text(&alert["text"])
                    } else {
                        tags.join("、")
                    },
                    text(&alert["forward_by"]),
                );
                print_above(&bars, &line);
            } else if shown == ALERTS_SHOWN + 1 {
                print_above(&bars, "… more alerts are counted below");
            }
        }
        counts
    }))
}

/// Runs the demo and prints its report.
pub async fn run(args: DemoArgs) -> anyhow::Result<DemoReport> {
    prepare_lake(&args.lake)?;
    let cluster = MockCluster::new(1)?;
    let topic = "evaluations";
    cluster.create_topic(topic, args.partitions, 1)?;
    cluster.create_topic("evaluations.dlq", 1, 1)?;
    cluster.create_topic("alerts", 1, 1)?;
    for stream in ["cases", "workflow"] {
        cluster.create_topic(stream, args.partitions, 1)?;
        cluster.create_topic(&format!("{stream}.dlq"), 1, 1)?;
    }
    let (stop_alerts, alerts_stopped) = tokio::sync::oneshot::channel::<()>();
    let brokers = cluster.bootstrap_servers();

    let mut config = IngestConfig::default();
    config.kafka.brokers.clone_from(&brokers);
    config.kafka.topic = topic.into();
    config.kafka.group = "haochaping-demo".into();
    config.lake.path = crate::lake::LakeLocation::Local(args.lake.clone());
    config.lake.flush_interval = Duration::from_secs(5);
    config.identity.secret = Some("demo-secret-not-for-production".into());
    config.streams.cases_topic = Some("cases".into());
    config.streams.workflow_topic = Some("workflow".into());

    let day = chrono::Utc::now()
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap_or_else(|| unreachable!()))
        .date_naive()
        - chrono::Duration::days(1);
    let mut generator_config = GeneratorConfig::new(&args.province, day);
    generator_config.dup_rate = 0.01;
    generator_config.bad_rate = 0.005;
    let mut generator = Generator::new(generator_config)?;

    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template(
        "{prefix:>9} {bar:40.cyan/blue} {pos:>8}/{len:8} {per_sec:>12} {elapsed}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    let produced_bar = bars.add(
        ProgressBar::new(args.events)
            .with_style(style.clone())
            .with_prefix("produced"),
    );
    let ingested_bar = bars.add(
        ProgressBar::new(args.events)
            .with_style(style)
            .with_prefix("ingested"),
    );

    println!(
        "haochaping demo: embedded Kafka at {brokers}, province {}, {} evaluations dated {day}",
        args.province, args.events
    );
    let alerts = watch_alerts(&brokers, bars.clone(), alerts_stopped)?;
    let started = Instant::now();
    let stats = Arc::new(Stats::default());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let kafka = config.kafka.clone();
    let ingest = tokio::spawn(engine::run(
        config,
        RunOptions::default(),
        stats.clone(),
        async {
            let _ = stop_rx.await;
        },
    ));
    let producer = generate::producer(&kafka)?;
    let produce_bar = produced_bar.clone();
    // Each case's lifecycle and each bad review's workflow up to now, produced once the reviews
    // they belong to have been read (a workflow event before its review is parked as unknown).
    let horizon = (chrono::Utc::now() + chrono::Duration::hours(8)).naive_utc();
    let mut cases = Vec::new();
    let mut workflow = Vec::new();
    let paced = Paced {
        stats: &stats,
        bar: &ingested_bar,
        ingest: &ingest,
    };
    let mut produced = ProduceReport::default();
    while produced.produced < args.events {
        let slice = (args.events - produced.produced).min(Paced::SLICE);
        let report = generate::produce(&producer, topic, &mut generator, slice, None, |event| {
            produce_bar.inc(1);
            cases.extend(generate::case_lifecycle(event));
            workflow.extend(generate::workflow_of(event, horizon));
        })
        .await?;
        produced.absorb(report);
        paced
            .wait_until(produced.produced.saturating_sub(Paced::LEAD), args.events)
            .await?;
    }
    for _ in 0..args.events / 20 {
        cases.extend(generator.next_unevaluated_case());
    }
    produced_bar.finish();
    // Every review is read before its workflow is produced.
    paced.wait_until(produced.produced, args.events).await?;
    let total = produced.produced + (cases.len() + workflow.len()) as u64;
    let mut sent = produced.produced;
    for (stream, records) in [("cases", &cases), ("workflow", &workflow)] {
        for slice in records.chunks(Paced::SLICE as usize) {
            generate::produce_records(&producer, stream, slice).await?;
            sent += slice.len() as u64;
            paced
                .wait_until(sent.saturating_sub(Paced::LEAD), total)
                .await?;
        }
    }
    // Wait until every produced message has been read, then let the job flush and commit.
    paced.wait_until(total, total).await?;
    let _ = stop_tx.send(());
    let ingested = ingest.await??;
    ingested_bar.finish();
    let elapsed = started.elapsed();
    // The last alerts were confirmed before the last commit; give the reader a moment to see them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop_alerts.send(());
    let alerts = alerts.await.unwrap_or_default();
    drop(producer);
    drop(cluster);
    let report = DemoReport {
        produced,
        ingested,
        elapsed,
        lake: args.lake.canonicalize().unwrap_or(args.lake),
        alerts,
    };
    print_report(&report).await;
    Ok(report)
}

/// Keeps the demo's producer close behind the engine. The embedded broker (librdkafka's mock
/// cluster) keeps only about 5 MiB a partition and deletes the oldest records beyond that, read or
/// not: a producer far ahead of the engine would lose records before they are read, as a real
/// broker's retention would.
struct Paced<'a> {
    stats: &'a Stats,
    bar: &'a ProgressBar,
    ingest: &'a tokio::task::JoinHandle<Result<StatsSnapshot, engine::EngineError>>,
}

impl Paced<'_> {
    /// Records produced at once.
    const SLICE: u64 = 5_000;
    /// Records produced but not yet read, at most (across all partitions of a topic).
    const LEAD: u64 = 20_000;

    /// Waits until the engine has read `target` messages (showing progress against `total`); fails
    /// if the job ended or the broker deleted records before they were read.
    async fn wait_until(&self, target: u64, total: u64) -> anyhow::Result<()> {
        self.bar.set_length(total);
        loop {
            let seen = self.stats.snapshot();
            let read = seen.received + seen.already_in_lake;
            self.bar.set_position(read.min(total));
            if seen.offsets_skipped > 0 {
                anyhow::bail!(
                    "the embedded broker deleted {} records before the engine read them (its log keeps about 5 MiB a partition)",
                    seen.offsets_skipped
                );
            }
            if read >= target || self.ingest.is_finished() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Prints a line above the progress bars, or plainly when they are hidden (not a terminal).
fn print_above(bars: &MultiProgress, line: &str) {
    if bars.is_hidden() {
        println!("{line}");
    } else {
        let _ = bars.println(line);
    }
}

/// Refreshes the derived tables, then prints the month's public notice (the worst-ranked
/// departments first) and the strongest hotspots.
async fn print_notice_and_hotspots(lake: &LakeRoot) {
    use crate::analytics::periods::{Period, PeriodType};
    let now = chrono::Utc::now().timestamp_micros();
    if let Err(e) = crate::analytics::refresh(lake, now).await {
        println!("refreshing the derived tables failed: {e}");
        return;
    }
    match crate::policy::Policies::shipped() {
        Ok(policies) => {
            if let Err(e) = crate::analytics::defaults::rebuild(lake, now, &policies).await {
                println!("default evaluations failed: {e}");
            }
            print_closed_loop(lake, now, &policies).await;
        }
        Err(e) => println!("region policies: {e}"),
    }
    let yesterday = crate::sink::parquet::cst_day(now) - 1;
    let Some(month) = Period::containing(PeriodType::Month, yesterday) else {
        return;
    };
    let config = crate::analytics::AnalyticsConfig::default();
    match crate::analytics::report::report(lake, month, &config).await {
        Ok(notice) => {
            let rows: Vec<arrow::array::RecordBatch> = notice
                .rows
                .iter()
                .map(|b| b.slice(0, b.num_rows().min(10)))
                .take(1)
                .collect();
            if let Ok(table) = arrow::util::pretty::pretty_format_batches(&rows) {
                println!(
                    "{}
{table}
(first 10 rows; `haochaping report --period {}` prints all)",
                    notice.title,
                    month.name()
                );
            }
        }
        Err(e) => println!("the month's notice failed: {e}"),
    }
    match crate::analytics::query_lake(
        lake,
        "SELECT entity_type, coalesce(entity_name, entity_id) AS entity, \"window\", bad_reviews, evaluations, \
         round(bad_rate * 100, 1) AS bad_pct, round(lift, 1) AS lift, top_tags \
         FROM hotspots ORDER BY lift DESC NULLS LAST, bad_reviews DESC LIMIT 5",
    )
    .await
    {
        Ok(batches) => {
            if let Ok(table) = arrow::util::pretty::pretty_format_batches(&batches) {
                println!("top hotspots (tables/hotspots):\n{table}");
            }
        }
        Err(e) => println!("reading the hotspots failed: {e}"),
    }
}

/// The closed loop of the day's bad reviews: the alerts due now by rule (ingest sends them from its
/// rounds), and the indicators per department.
async fn print_closed_loop(lake: &LakeRoot, now: i64, policies: &crate::policy::Policies) {
    // The day's reviews are hours old: show what falls due within a week if nothing else happens,
    // then leave the table as of now.
    let week = now + 7 * 86_400_000_000;
    if let Ok(ahead) = crate::analytics::closed_loop::rebuild(lake, week, policies).await {
        let mut by_rule = std::collections::BTreeMap::new();
        for alert in &ahead.alerts {
            *by_rule.entry(alert.rule.as_str()).or_insert(0) += 1;
        }
        println!("closed-loop alerts due within a week if nothing else happens: {by_rule:?}");
        for alert in ahead.alerts.iter().take(5) {
            println!(
                "  {:<24} {} · {} · deadline {} ({}, {})",
                alert.rule,
                alert.project_no,
                alert
                    .department
                    .name
                    .as_deref()
                    .unwrap_or(&alert.department.code),
                alert.deadline,
                alert.period,
                alert.policy.rsplit('/').next().unwrap_or_default()
            );
        }
    }
    let report = match crate::analytics::closed_loop::rebuild(lake, now, policies).await {
        Ok(report) => report,
        Err(e) => {
            println!("the closed loop failed: {e}");
            return;
        }
    };
    let mut by_rule = std::collections::BTreeMap::new();
    for alert in &report.alerts {
        *by_rule.entry(alert.rule.as_str()).or_insert(0) += 1;
    }
    println!(
        "closed loop: {} bad reviews, {} open, {} excluded (found mistaken or malicious); alerts due now: {by_rule:?}",
        report.bad_reviews, report.open, report.excluded
    );
    if report.exclusions_added > 0 {
        // The exclusions change the rankings just built.
        let _ = crate::analytics::refresh(lake, now).await;
    }
    match crate::analytics::query_lake(
        lake,
        &format!(
            "SELECT dept_name, bad_reviews, excluded, reply_rate, on_time_rectification_rate, \
             revisit_rate, finished_cases, active_rate, rate_with_defaults FROM ({}) \
             ORDER BY bad_reviews DESC, finished_cases DESC LIMIT 8",
            crate::analytics::sql::KPIS.trim().trim_end_matches(';')
        ),
    )
    .await
    {
        Ok(batches) => {
            if let Ok(table) = arrow::util::pretty::pretty_format_batches(&batches) {
                println!("indicators (queries/kpis.sql):\n{table}");
            }
        }
        Err(e) => println!("the indicators failed: {e}"),
    }
}

/// Refuses to touch a folder that holds anything but a previous demo's lake.
fn prepare_lake(lake: &Path) -> anyhow::Result<()> {
    if lake.exists() && std::fs::read_dir(lake)?.next().is_some() {
        if !lake.join(DEMO_MARKER).exists() {
            anyhow::bail!(
                "--lake {}: folder exists and is not a demo lake; choose another folder",
                lake.display()
            );
        }
        std::fs::remove_dir_all(lake)?;
    }
    let marker = lake.join(DEMO_MARKER);
    if let Some(parent) = marker.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(
        marker,
        "created by `haochaping demo`; the next demo replaces this lake\n",
    )?;
    Ok(())
}

async fn print_report(report: &DemoReport) {
    let s = &report.ingested;
    let seconds = report.elapsed.as_secs_f64().max(1e-9);
    println!();
    println!("events read      {:>10}", s.received);
    println!(
        "  accepted       {:>10}  (rows written: {})",
        s.accepted, s.rows_written
    );
    println!(
        "  duplicates     {:>10}  (identical redeliveries, dropped)",
        s.duplicates
    );
    println!(
        "  dead-lettered  {:>10}  (topic evaluations.dlq)",
        s.dead_lettered
    );
    for (reason, count) in &s.dead_lettered_by_reason {
        println!("    {reason:<28}{count:>8}");
    }
    println!(
        "alerts           {:>10}  (topic alerts; {} held back by the rate limit and summarised)",
        report.alerts.values().sum::<u64>(),
        s.alerts_rate_limited
    );
    for (rule, count) in &report.alerts {
        println!("    {rule:<28}{count:>8}");
    }
    println!(
        "generator expected {} accepted, {} duplicates, {} dead-lettered",
        report.produced.accepted,
        report.produced.duplicates,
        report.produced.dead_lettered()
    );
    println!(
        "throughput       {:>10.0} events/s end to end ({:.1} s, {:.1} MB of JSON in, {:.1} MB of Parquet out, {} files, {} batches)",
        s.received as f64 / seconds,
        seconds,
        s.received_bytes as f64 / 1e6,
        s.bytes_written as f64 / 1e6,
        s.files_written,
        s.batches_committed
    );
    let lake = report.lake.display();
    println!("lake             {lake}/evaluations/dt=…/city=…/*.parquet");
    let root = match LakeRoot::local(&report.lake) {
        Ok(root) => root,
        Err(e) => {
            println!("the lake: {e}");
            return;
        }
    };
    match crate::analytics::query_lake(
        &root,
        "SELECT city, count(*) AS evaluations, round(avg(satisfaction), 2) AS avg_satisfaction, \
         sum(CASE WHEN bad_review THEN 1 ELSE 0 END) AS bad_reviews \
         FROM evaluations GROUP BY city ORDER BY evaluations DESC LIMIT 5",
    )
    .await
    {
        Ok(batches) => {
            if let Ok(table) = arrow::util::pretty::pretty_format_batches(&batches) {
                println!("top cities (DataFusion over the lake):\n{table}");
            }
        }
        Err(e) => println!("querying the lake failed: {e}"),
    }
    print_notice_and_hotspots(&root).await;
    println!("query it with DuckDB:");
    println!(
        "  duckdb -c \"SELECT dt, city, count(*), avg(satisfaction) FROM read_parquet('{lake}/evaluations/**/*.parquet', hive_partitioning=true) GROUP BY ALL ORDER BY 3 DESC LIMIT 10\""
    );
}
