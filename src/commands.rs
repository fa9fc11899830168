//! What each subcommand does, between the parsed command line and the library.

use std::sync::Arc;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::{
    AnalyzeArgs, CalendarCommand, Command, CompactArgs, ConfigCommand, DlqArgs, DlqCommand,
    GenerateArgs, IngestArgs, PolicyCommand, QueryArgs, ReportArgs,
};
use crate::config::IngestConfig;
use crate::engine::{self, RunOptions};
use crate::generate::{self, Generator, GeneratorConfig};
use crate::lake::{LakeLocation, LakeRoot};
use crate::telemetry::Stats;

/// An error and its causes on one line, for the operator: each cause after a colon, unless the
/// link before it already ends with it. Most of our errors name their cause in their own message
/// (`{path}: {source}`, which logs show) and expose it as the source too, so printing the whole
/// chain would repeat it (`… No space left on device (os error 28): No space left on device (os
/// error 28)`).
pub fn error_report(error: &anyhow::Error) -> String {
    let mut report = String::new();
    let mut previous = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if report.is_empty() {
            report.clone_from(&text);
        } else if !previous.ends_with(&text) {
            report.push_str(": ");
            report.push_str(&text);
        }
        previous = text;
    }
    report
}

pub async fn execute(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Ingest(args) => ingest(args).await,
        Command::Compact(args) => compact(args).await,
        Command::Generate(args) => generate(args).await,
        Command::Demo(args) => crate::demo::run(args).await.map(|_| ()),
        Command::Dlq(DlqArgs {
            command: DlqCommand::Replay(args),
        }) => {
            let options = args.resolve()?;
            let report = crate::sink::dlq::replay::replay(options, shutdown_signal()).await?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Query(args) => query(args).await,
        Command::Analyze(args) => analyze(args).await,
        Command::Report(args) => report(args).await,
        Command::Policy(args) => policy(args.command),
        Command::Config(args) => config(args.command),
        Command::Calendar(args) => calendar(args.command),
    }
}

fn policies(dir: Option<std::path::PathBuf>) -> anyhow::Result<crate::policy::Policies> {
    Ok(crate::config::PolicyConfig { dir }.load()?)
}

fn policy(command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Show {
            region,
            policies: dir,
        } => {
            let code = crate::region::RegionCode::parse(&format!("{region:0<12}"))
                .ok()
                .filter(|_| {
                    matches!(region.len(), 6 | 9 | 12) && region.bytes().all(|b| b.is_ascii_digit())
                })
                .with_context(|| {
                    format!("{region:?} is not a division code (6, 9 or 12 digits)")
                })?;
            let resolved = policies(dir)?.for_region(&code).clone();
            println!(
                "# effective policy of {region}: {}",
                resolved.files.join(" → ")
            );
            print!("{}", resolved.explain());
            Ok(())
        }
        PolicyCommand::List { policies: dir } => {
            for (code, name, document) in policies(dir)?.regions() {
                println!("{code}\t{name}\t{document}");
            }
            Ok(())
        }
    }
}

fn calendar(command: CalendarCommand) -> anyhow::Result<()> {
    let calendar = crate::policy::Calendar::official();
    match command {
        CalendarCommand::AddWorkingDays { date, days } => {
            println!("{}", calendar.add_working_days(date, days)?);
        }
        CalendarCommand::AddNaturalDays { date, days } => {
            println!("{}", crate::policy::calendar::add_natural_days(date, days)?);
        }
        CalendarCommand::IsWorkingDay { date } => {
            let working = calendar.is_working_day(date)?;
            println!("{}", if working { "working" } else { "off" });
        }
    }
    Ok(())
}

/// Writes bytes to a file or standard output.
fn emit(bytes: &[u8], output: Option<&std::path::Path>) -> anyhow::Result<()> {
    match output {
        Some(path) => {
            std::fs::write(path, bytes).with_context(|| format!("--output {}", path.display()))
        }
        None => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            out.write_all(bytes)?;
            out.flush()?;
            Ok(())
        }
    }
}

/// An existing lake: a local folder that is not there is an error (a typo must not read as an empty
/// lake); an object store takes its options from its provider's environment variables.
fn existing_lake(location: &LakeLocation) -> anyhow::Result<LakeRoot> {
    if let Some(path) = location.local_path() {
        if !path.is_dir() {
            anyhow::bail!("--lake {}: no such folder", path.display());
        }
    }
    LakeRoot::open(location, &Default::default()).with_context(|| format!("--lake {location}"))
}

async fn query(args: QueryArgs) -> anyhow::Result<()> {
    let lake = existing_lake(&args.lake)?;
    let (schema, batches) = crate::analytics::query_read_only(&lake, &args.sql)
        .await
        .context("query")?;
    let bytes = crate::analytics::output::render(&schema, &batches, args.format)?;
    emit(&bytes, args.output.as_deref())
}

async fn analyze(args: AnalyzeArgs) -> anyhow::Result<()> {
    let now = args
        .as_of
        .unwrap_or_else(chrono::Utc::now)
        .timestamp_micros();
    let policies = policies(args.policies)?;
    let lake = existing_lake(&args.lake)?;
    let done =
        crate::analytics::refresh_all(&lake, now, &args.thresholds.config(), &policies).await?;
    let mut report = serde_json::to_value(&done.tables)?;
    report["default_evaluations"] = serde_json::to_value(&done.defaults)?;
    report["bad_reviews"] = serde_json::to_value(&done.closed_loop)?;
    // Alerts go out from ingest's rounds (they need the broker); here only how many are due.
    report["bad_reviews"]["alerts_due"] = done.closed_loop.alerts.len().into();
    println!("{report}");
    Ok(())
}

async fn report(args: ReportArgs) -> anyhow::Result<()> {
    let period = crate::analytics::report::parse_period(&args.period)?;
    let lake = existing_lake(&args.lake)?;
    let notice = crate::analytics::report::report(&lake, period, &args.thresholds.config()).await?;
    if args.format == crate::analytics::output::Format::Table {
        println!("{}", notice.title);
    }
    let bytes = crate::analytics::output::render(&notice.schema, &notice.rows, args.format)?;
    emit(&bytes, None)
}

async fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    let config = args.resolve()?;
    let stats = Arc::new(Stats::default());
    if let Some(addr) = config.metrics.addr.0 {
        // One recorder per process: installed here, by the command, not by the engine that tests
        // and the demo run many times in one process.
        crate::telemetry::http::serve(addr, stats.clone()).await?;
    }
    let summary = match &args.from_file {
        Some(path) => crate::offline::ingest_file(config, path, stats).await?,
        None => {
            let options = RunOptions {
                exit_when_idle: args.exit_when_idle,
            };
            engine::run(config, options, stats, shutdown_signal()).await?
        }
    };
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

fn config(command: ConfigCommand) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Check { file } => {
            let mut config = IngestConfig::from_file(&file)?;
            config.read_secret_files()?;
            // A file without the identity secret is right when the secret comes from the
            // environment or a mounted file at run time: check everything else.
            let secret_elsewhere = config.identity.secret.is_none();
            config.check_settings()?;
            let note = if secret_elsewhere {
                " (identity.secret must come from HAOCHAPING_IDENTITY_SECRET, …_FILE or a flag)"
            } else {
                ""
            };
            println!("{}: ok{note}", file.display());
        }
        ConfigCommand::Show(args) => print!("{}", args.resolve()?.show()),
    }
    Ok(())
}

async fn compact(args: CompactArgs) -> anyhow::Result<()> {
    if args.dedup_window_days == 0 {
        anyhow::bail!("--dedup-window-days must be at least 1");
    }
    let lake = crate::lake::Lake::open(
        &existing_lake(&args.lake)?,
        crate::sink::parquet::EVALUATIONS_TABLE,
    );
    let options = crate::lake::compact::CompactOptions {
        quiet_for: args.quiet_for,
        ..Default::default()
    };
    let summary = engine::compact_lake(
        &lake,
        crate::stream::evaluations::DEDUP,
        &options,
        args.dedup_window_days,
    )
    .await?;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

async fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    let kafka = crate::config::KafkaConfig {
        brokers: args
            .kafka
            .brokers
            .clone()
            .unwrap_or_else(|| "localhost:9092".into()),
        properties: args.kafka.properties.iter().cloned().collect(),
        ..Default::default()
    };
    let topic = args
        .kafka
        .topic
        .clone()
        .unwrap_or_else(|| "evaluations".into());
    let day = args.day.unwrap_or_else(yesterday_cst);
    let mut config = GeneratorConfig::new(&args.province, day);
    config.seed = args.seed;
    config.dup_rate = args.dup_rate;
    config.bad_rate = args.bad_rate;
    let mut generator = Generator::new(config).context("--province")?;
    if let Some(path) = &args.to_file {
        let file =
            std::fs::File::create(path).with_context(|| format!("--to-file {}", path.display()))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        let mut report = generate::ProduceReport::default();
        for event in generator
            .by_ref()
            .take(usize::try_from(args.events).unwrap_or(usize::MAX))
        {
            std::io::Write::write_all(&mut out, &event.payload)?;
            std::io::Write::write_all(&mut out, b"\n")?;
            report.record(&event);
        }
        std::io::Write::flush(&mut out)?;
        println!(
            "wrote {} events to {} ({} bytes)",
            report.produced,
            path.display(),
            report.bytes
        );
        return Ok(());
    }
    generate::ensure_topics(
        &kafka,
        &[
            (topic.as_str(), args.partitions),
            (&format!("{topic}.dlq"), 1),
            // Where `ingest` sends its alerts by default.
            (crate::config::AlertsConfig::default().topic.as_str(), 1),
        ],
    )
    .await?;
    for topic in [&args.cases_topic, &args.workflow_topic]
        .into_iter()
        .flatten()
    {
        generate::ensure_topics(
            &kafka,
            &[
                (topic.as_str(), args.partitions),
                (&format!("{topic}.dlq"), 1),
            ],
        )
        .await?;
    }
    let producer = generate::producer(&kafka)?;
    let bar = ProgressBar::new(args.events).with_style(
        ProgressStyle::with_template("{bar:40.cyan/blue} {pos:>9}/{len:9} {per_sec:>12} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let rate = (args.rate > 0).then_some(args.rate);
    let horizon = (chrono::Utc::now() + chrono::Duration::hours(8)).naive_utc();
    let (mut cases, mut workflow) = (Vec::new(), Vec::new());
    let report = generate::produce(
        &producer,
        &topic,
        &mut generator,
        args.events,
        rate,
        |event| {
            bar.inc(1);
            if args.cases_topic.is_some() {
                cases.extend(generate::case_lifecycle(event));
            }
            if args.workflow_topic.is_some() {
                workflow.extend(generate::workflow_of(event, horizon));
            }
        },
    )
    .await?;
    bar.finish();
    if let Some(cases_topic) = &args.cases_topic {
        for _ in 0..args.events / 20 {
            cases.extend(generator.next_unevaluated_case());
        }
        generate::produce_records(&producer, cases_topic, &cases).await?;
        println!("produced {} case records to {cases_topic}", cases.len());
    }
    if let Some(workflow_topic) = &args.workflow_topic {
        generate::produce_records(&producer, workflow_topic, &workflow).await?;
        println!(
            "produced {} workflow events to {workflow_topic}",
            workflow.len()
        );
    }
    println!(
        "produced {} events to {topic} ({} bytes): {} valid, {} redeliveries, {} malformed {:?}",
        report.produced,
        report.bytes,
        report.accepted,
        report.duplicates,
        report.dead_lettered(),
        report
            .dead_letters
            .iter()
            .map(|(r, n)| format!("{r}={n}"))
            .collect::<Vec<_>>()
    );
    Ok(())
}

/// Yesterday in China Standard Time: a whole day, none of it in the future.
pub fn yesterday_cst() -> chrono::NaiveDate {
    let today = crate::sink::parquet::cst_day(chrono::Utc::now().timestamp_micros());
    chrono::NaiveDate::default() + chrono::Duration::days(i64::from(today) - 1)
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod report_tests {
    use super::error_report;

    #[derive(Debug, thiserror::Error)]
    enum Inner {
        #[error("No space left on device (os error 28)")]
        Full,
    }

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("rejected.ndjson: {source}")]
        Says { source: Inner },
        #[error("writing the rejected lines")]
        Hides { source: Inner },
    }

    #[test]
    fn each_cause_is_said_once() {
        let cases: [(anyhow::Error, &str); 5] = [
            (
                Outer::Says {
                    source: Inner::Full,
                }
                .into(),
                "rejected.ndjson: No space left on device (os error 28)",
            ),
            (
                Outer::Hides {
                    source: Inner::Full,
                }
                .into(),
                "writing the rejected lines: No space left on device (os error 28)",
            ),
            (
                anyhow::Error::from(Outer::Says {
                    source: Inner::Full,
                })
                .context("ingest export.ndjson"),
                "ingest export.ndjson: rejected.ndjson: No space left on device (os error 28)",
            ),
            (Inner::Full.into(), "No space left on device (os error 28)"),
            // A cause whose words the context happens to use is still said.
            (
                anyhow::Error::from(Inner::Full)
                    .context("No space left on device (os error 28) on the last run"),
                "No space left on device (os error 28) on the last run: No space left on device \
                 (os error 28)",
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(error_report(&error), expected);
        }
    }
}
