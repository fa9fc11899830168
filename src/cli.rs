//! Command line: `ingest`, `compact`, `generate`, `demo`, `dlq replay`, `query`, `analyze`, `report`,
//! `policy`, `calendar`. Every flag has a `HAOCHAPING_*` environment variable;
//! for `ingest`, flags and variables override the config file, which overrides the defaults.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::config::{ConfigError, IngestConfig, Secret};
use crate::decode::Reason;

#[derive(Debug, Parser)]
#[command(
    name = "haochaping",
    version,
    about = "政务服务好差评 evaluations: Kafka → validated, deduplicated, Hive-partitioned Parquet, exactly once"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// How log lines are written to stderr (filtered by HAOCHAPING_LOG, e.g. `info`).
    #[arg(
        long,
        global = true,
        env = "HAOCHAPING_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    pub log_format: crate::telemetry::LogFormat,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume the evaluations topic into the lake until stopped (SIGTERM/Ctrl-C flush and commit).
    Ingest(IngestArgs),
    /// Rewrite the small files of quiet `dt=`/`city=` folders into few large ones, and refresh the
    /// dedup snapshots (safe while ingest runs; ingest also does it every `lake.compact_every`).
    Compact(CompactArgs),
    /// Produce a realistic province's evaluations to a topic.
    Generate(GenerateArgs),
    /// Run everything in-process on an embedded Kafka: generate a province's day, ingest it, report.
    Demo(DemoArgs),
    /// Work with the dead-letter topic.
    Dlq(DlqArgs),
    /// Run SQL over every lake table (evaluations, cases, workflow, bad_reviews, default_evaluations,
    /// exclusions, rankings, warnings, hotspots, fraud_signals; the views effective_evaluations and
    /// evaluation_rates; reference tables regions, tag_meanings).
    Query(QueryArgs),
    /// Refresh every derived table (rankings, warnings, hotspots, fraud_signals, default_evaluations)
    /// of the lake.
    Analyze(AnalyzeArgs),
    /// Rebuild one period's rankings and print its public notice (通报) per department.
    Report(ReportArgs),
    /// Show a region's effective policy (default level, every closed-loop deadline, revisit rules).
    Policy(PolicyArgs),
    /// Working-day arithmetic on the official calendar (weekends, holidays, make-up working days).
    Calendar(CalendarArgs),
    /// Check a config file, or show the effective configuration (file < env < flags), secrets
    /// masked.
    Config(ConfigArgs),
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a TOML config file: unknown keys, bad values and inconsistent settings are one line
    /// naming the key; exit status 2 on any.
    Check {
        /// The file.
        file: PathBuf,
    },
    /// Print the configuration `ingest` would run with these flags and this environment (TOML,
    /// every secret shown as <secret>).
    // The doc comment is `--help` text, where `<secret>` is what is printed, not an HTML tag.
    #[allow(rustdoc::invalid_html_tags)]
    Show(Box<IngestArgs>),
}

#[derive(Debug, Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    pub command: PolicyCommand,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Print the effective policy of a region after inheritance (default → province → city →
    /// county), each value with the file it came from.
    Show {
        /// A 6-digit (province, city, county) or 12-digit division code, e.g. 410328.
        region: String,
        /// A folder of policy files (with a default.toml) instead of the shipped presets.
        #[arg(long, env = "HAOCHAPING_POLICIES")]
        policies: Option<PathBuf>,
    },
    /// List the regions that have a policy file of their own.
    List {
        /// A folder of policy files (with a default.toml) instead of the shipped presets.
        #[arg(long, env = "HAOCHAPING_POLICIES")]
        policies: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct CalendarArgs {
    #[command(subcommand)]
    pub command: CalendarCommand,
}

#[derive(Debug, Subcommand)]
pub enum CalendarCommand {
    /// The date N working days after DATE (e.g. 2026-02-13 3 → 2026-02-25).
    AddWorkingDays { date: chrono::NaiveDate, days: u32 },
    /// The date N natural days after DATE.
    AddNaturalDays { date: chrono::NaiveDate, days: u32 },
    /// Whether DATE is a working day (prints `working` or `off`).
    IsWorkingDay { date: chrono::NaiveDate },
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Lake root: a folder or an object store URL (s3://bucket/prefix, gs://…, az://…).
    #[arg(long, env = "HAOCHAPING_LAKE", default_value = "lake")]
    pub lake: crate::lake::LakeLocation,
    /// Output format.
    #[arg(long, env = "HAOCHAPING_FORMAT", value_enum, default_value = "table")]
    pub format: crate::analytics::output::Format,
    /// Write the result to this file instead of standard output.
    #[arg(long, env = "HAOCHAPING_OUTPUT")]
    pub output: Option<PathBuf>,
    /// One SQL statement (SELECT …; read-only).
    pub sql: String,
}

/// Thresholds of the derived tables (changing one rebuilds every table at the next refresh).
#[derive(Debug, Clone, Args)]
pub struct ThresholdArgs {
    /// Evaluations an entity needs in a period to be ranked.
    #[arg(long, env = "HAOCHAPING_MIN_EVALUATIONS", default_value_t = 10)]
    pub min_evaluations: u32,
    /// Warnings: entities with a bad-rate rank up to N (the bottom N)…
    #[arg(long, env = "HAOCHAPING_BOTTOM_N", default_value_t = 3)]
    pub bottom_n: u32,
    /// …in this many periods in a row.
    #[arg(long, env = "HAOCHAPING_PERIODS_IN_ROW", default_value_t = 3)]
    pub periods_in_row: u32,
    /// Bad reviews a window needs to be a hotspot (at least 2).
    #[arg(long, env = "HAOCHAPING_HOTSPOT_MIN_BAD", default_value_t = 3)]
    pub hotspot_min_bad: u32,
    /// A hotspot's bad rate is at least this many times its trailing 28-day rate.
    #[arg(long, env = "HAOCHAPING_HOTSPOT_MIN_LIFT", default_value_t = 2.0)]
    pub hotspot_min_lift: f64,
    /// Fraud: length of a burst slot in minutes.
    #[arg(long, env = "HAOCHAPING_BURST_MINUTES", default_value_t = 10)]
    pub burst_minutes: u32,
    /// Fraud: top-level reviews in one slot that make a burst.
    #[arg(long, env = "HAOCHAPING_BURST_MIN_REVIEWS", default_value_t = 10)]
    pub burst_min_reviews: u32,
    /// Fraud: at most this many evaluator keys behind a "few keys" burst.
    #[arg(long, env = "HAOCHAPING_BURST_MAX_KEYS", default_value_t = 3)]
    pub burst_max_keys: u32,
    /// Fraud: bad reviews of one evaluator in a month…
    #[arg(long, env = "HAOCHAPING_BAD_MIN_REVIEWS", default_value_t = 3)]
    pub bad_min_reviews: u32,
    /// …across at least this many departments.
    #[arg(long, env = "HAOCHAPING_BAD_MIN_DEPARTMENTS", default_value_t = 2)]
    pub bad_min_departments: u32,
}

impl ThresholdArgs {
    pub fn config(&self) -> crate::analytics::AnalyticsConfig {
        crate::analytics::AnalyticsConfig {
            min_evaluations: self.min_evaluations,
            bottom_n: self.bottom_n,
            periods_in_row: self.periods_in_row,
            hotspot_min_bad_reviews: self.hotspot_min_bad,
            hotspot_min_lift: self.hotspot_min_lift,
            burst_minutes: self.burst_minutes,
            burst_min_reviews: self.burst_min_reviews,
            burst_max_keys: self.burst_max_keys,
            bad_min_reviews: self.bad_min_reviews,
            bad_min_departments: self.bad_min_departments,
        }
    }
}

#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// Lake root: a folder or an object store URL (s3://bucket/prefix, gs://…, az://…).
    #[arg(long, env = "HAOCHAPING_LAKE", default_value = "lake")]
    pub lake: crate::lake::LakeLocation,
    /// End of the hotspot windows, RFC 3339 (e.g. 2026-10-20T10:00:00+08:00) [default: now].
    #[arg(long, env = "HAOCHAPING_AS_OF", value_parser = parse_instant)]
    pub as_of: Option<chrono::DateTime<chrono::Utc>>,
    /// A folder of region policy files (with a default.toml) instead of the shipped presets (for
    /// the default evaluations).
    #[arg(long, env = "HAOCHAPING_POLICIES")]
    pub policies: Option<PathBuf>,
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Lake root: a folder or an object store URL (s3://bucket/prefix, gs://…, az://…).
    #[arg(long, env = "HAOCHAPING_LAKE", default_value = "lake")]
    pub lake: crate::lake::LakeLocation,
    /// The period: a month (2026-10), half-year (2026-H2), year (2026) or the last day of a rolling
    /// 30 days (2026-10-31).
    #[arg(long, env = "HAOCHAPING_PERIOD")]
    pub period: String,
    /// Output format of the notice.
    #[arg(long, env = "HAOCHAPING_FORMAT", value_enum, default_value = "table")]
    pub format: crate::analytics::output::Format,
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
}

fn parse_instant(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("expected an RFC 3339 time such as 2026-10-20T10:00:00+08:00: {e}"))
}

/// Kafka connection flags shared by the commands that talk to a broker (`[kafka]` for `ingest`).
#[derive(Debug, Clone, Args, Serialize)]
pub struct KafkaArgs {
    /// Bootstrap servers, host:port[,host:port…].
    #[arg(long, env = "HAOCHAPING_BROKERS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brokers: Option<String>,
    /// The evaluations topic.
    #[arg(long, env = "HAOCHAPING_TOPIC")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Extra librdkafka setting, key=value (repeatable; TLS, SASL …).
    #[arg(long = "kafka-property", env = "HAOCHAPING_KAFKA_PROPERTIES", value_delimiter = ';', value_parser = parse_key_value)]
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "as_map")]
    pub properties: Vec<(String, String)>,
}

/// `key=value` pairs as the table `kafka.properties` is.
fn as_map<S: serde::Serializer>(
    pairs: &[(String, String)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(pairs.iter().map(|(k, v)| (k, v)))
}

/// `ingest`'s flags. Each group below is a section of [`IngestConfig`] whose fields carry the
/// section's key names: the set ones are layered over the file by figment (file < environment <
/// flags; clap puts a flag over its variable), so a new key needs its field here and nothing else.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// TOML config file (flags and HAOCHAPING_* variables override it).
    #[arg(long, env = "HAOCHAPING_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub consumer: ConsumerFlags,
    #[command(flatten)]
    pub lake: LakeFlags,
    #[command(flatten)]
    pub validation: ValidationFlags,
    #[command(flatten)]
    pub dedup: DedupFlags,
    #[command(flatten)]
    pub secrets: SecretFlags,
    #[command(flatten)]
    pub dlq: DlqFlags,
    #[command(flatten)]
    pub alerts: AlertsFlags,
    #[command(flatten)]
    pub policy: PolicyFlags,
    #[command(flatten)]
    pub metrics: MetricsFlags,
    #[command(flatten)]
    pub streams: StreamsFlags,
    /// Stop once the topic has been idle this long and everything is committed (backfills, tests).
    #[arg(long, env = "HAOCHAPING_EXIT_WHEN_IDLE", value_parser = humantime::parse_duration)]
    pub exit_when_idle: Option<Duration>,
    /// Ingest a newline-delimited JSON file instead of Kafka (same stages, same commit protocol).
    #[arg(long, env = "HAOCHAPING_FROM_FILE")]
    pub from_file: Option<PathBuf>,
}

/// `[kafka]`: the consumer's group and the engine's topics.
#[derive(Debug, Args, Serialize)]
pub struct ConsumerFlags {
    /// Consumer group; every instance writing the same lake uses the same group.
    #[arg(long = "group", id = "group", env = "HAOCHAPING_GROUP")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Dead-letter topic [default: <topic>.dlq].
    // `--help` text, where `<topic>` is a placeholder, not an HTML tag.
    #[allow(rustdoc::invalid_html_tags)]
    #[arg(long = "dlq-topic", id = "dlq_topic", env = "HAOCHAPING_DLQ_TOPIC")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dlq_topic: Option<String>,
    /// Longest time the broker may hold an empty fetch [default: 10ms].
    #[arg(long = "fetch-max-wait", id = "fetch_max_wait", env = "HAOCHAPING_FETCH_MAX_WAIT", value_parser = humantime::parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub fetch_max_wait: Option<Duration>,
    /// Continue when the broker no longer holds offsets up to the lake's position (a recreated
    /// topic, a moved cluster): adopt the broker's offsets; dedup still drops what the lake holds.
    #[arg(
        long = "accept-offset-reset",
        id = "accept_offset_reset",
        env = "HAOCHAPING_ACCEPT_OFFSET_RESET"
    )]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub accept_offset_reset: bool,
}

/// `[lake]`.
#[derive(Debug, Args, Serialize)]
pub struct LakeFlags {
    /// Lake root: a folder or an object store URL (s3://bucket/prefix, gs://…, az://…); an object
    /// store takes its credentials from its provider's variables (AWS_*, GOOGLE_*, AZURE_*) and
    /// options from `[lake.storage]` [default: lake].
    #[arg(long = "lake", id = "lake", env = "HAOCHAPING_LAKE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<crate::lake::LakeLocation>,
    /// Longest time an accepted event waits before its batch is committed [default: 30s].
    #[arg(long = "flush-interval", id = "flush_interval", env = "HAOCHAPING_FLUSH_INTERVAL", value_parser = humantime::parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub flush_interval: Option<Duration>,
    /// Rows the open batches of all partitions hold together; at this, the largest is committed
    /// [default: 200000].
    #[arg(long = "flush-rows", id = "flush_rows", env = "HAOCHAPING_FLUSH_ROWS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flush_rows: Option<usize>,
    /// …or bytes of their messages [default: 268435456, at most 1 GiB].
    #[arg(
        long = "flush-bytes",
        id = "flush_bytes",
        env = "HAOCHAPING_FLUSH_BYTES"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flush_bytes: Option<usize>,
    /// `ingest --from-file`: commit the open files once their row groups hold this many encoded
    /// bytes (fewer files, more memory); 0 commits every batch [default: 67108864].
    #[arg(
        long = "offline-commit-bytes",
        id = "offline_commit_bytes",
        env = "HAOCHAPING_OFFLINE_COMMIT_BYTES"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offline_commit_bytes: Option<usize>,
    /// Most messages a second this instance takes (a backfill that must spare the cluster)
    /// [default: no limit].
    #[arg(
        long = "max-events-per-second",
        id = "max_events_per_second",
        env = "HAOCHAPING_MAX_EVENTS_PER_SECOND"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_events_per_second: Option<std::num::NonZeroU32>,
    /// Compact the lake in the background this often; 0s turns it off [default: 1h].
    #[arg(long = "compact-every", id = "compact_every", env = "HAOCHAPING_COMPACT_EVERY", value_parser = humantime::parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub compact_every: Option<Duration>,
    /// Compact only folders that received no new file for this long [default: 1h].
    #[arg(long = "compact-quiet-for", id = "compact_quiet_for", env = "HAOCHAPING_COMPACT_QUIET_FOR", value_parser = humantime::parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub compact_quiet_for: Option<Duration>,
}

/// `[validation]`.
#[derive(Debug, Args, Serialize)]
pub struct ValidationFlags {
    /// How far in the future an assessTime may lie [default: 5m].
    #[arg(long = "max-clock-skew", id = "max_clock_skew", env = "HAOCHAPING_MAX_CLOCK_SKEW", value_parser = humantime::parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub max_clock_skew: Option<Duration>,
}

/// `[dedup]`.
#[derive(Debug, Args, Serialize)]
pub struct DedupFlags {
    /// Days back the one-evaluation-per-case rule is enforced [default: 120].
    #[arg(
        long = "dedup-window-days",
        id = "dedup_window_days",
        env = "HAOCHAPING_DEDUP_WINDOW_DAYS"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_days: Option<u16>,
}

/// The secrets, applied after the layers (not serialized: a [`Secret`] shows only `<secret>`): a
/// secret given here replaces the file's, whether the file gave the secret or a path to it.
#[derive(Debug, Args)]
pub struct SecretFlags {
    /// HMAC secret for evaluator identities (at least 16 bytes).
    #[arg(long, env = "HAOCHAPING_IDENTITY_SECRET", hide_env_values = true)]
    pub identity_secret: Option<Secret>,
    /// A file holding the identity secret (a mounted secret); a trailing newline is dropped.
    #[arg(long, env = "HAOCHAPING_IDENTITY_SECRET_FILE")]
    pub identity_secret_file: Option<PathBuf>,
    /// AES-256-GCM key (64 hex digits or base64 of 32 bytes) for rejected payloads that cannot be
    /// redacted; without it they are withheld (size and SHA-256 only).
    #[arg(long, env = "HAOCHAPING_DLQ_KEY", hide_env_values = true)]
    pub dlq_key: Option<Secret>,
    /// A file holding the dead-letter key.
    #[arg(long, env = "HAOCHAPING_DLQ_KEY_FILE")]
    pub dlq_key_file: Option<PathBuf>,
}

impl SecretFlags {
    fn apply(&self, config: &mut IngestConfig) {
        let identity = &mut config.identity;
        if self.identity_secret.is_some() {
            identity.secret.clone_from(&self.identity_secret);
            identity.secret_file = None;
        }
        if self.identity_secret_file.is_some() {
            identity.secret = None;
            identity.secret_file.clone_from(&self.identity_secret_file);
        }
        let dlq = &mut config.dlq;
        if self.dlq_key.is_some() {
            dlq.encryption_key.clone_from(&self.dlq_key);
            dlq.encryption_key_file = None;
        }
        if self.dlq_key_file.is_some() {
            dlq.encryption_key = None;
            dlq.encryption_key_file.clone_from(&self.dlq_key_file);
        }
    }
}

/// `[dlq]`.
#[derive(Debug, Args, Serialize)]
pub struct DlqFlags {
    /// Largest dead-letter payload; larger records are parked as a bounded head [default: 900000].
    #[arg(
        long = "dlq-max-record-bytes",
        id = "dlq_max_record_bytes",
        env = "HAOCHAPING_DLQ_MAX_RECORD_BYTES"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_record_bytes: Option<usize>,
}

/// `[alerts]`.
#[derive(Debug, Args, Serialize)]
pub struct AlertsFlags {
    /// Produce real-time alerts (queries/alerts/*.sql) [default: true].
    #[arg(
        long = "alerts-enabled",
        id = "alerts_enabled",
        env = "HAOCHAPING_ALERTS_ENABLED"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The alerts topic [default: alerts].
    #[arg(
        long = "alerts-topic",
        id = "alerts_topic",
        env = "HAOCHAPING_ALERTS_TOPIC"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Most alerts of one rule for one department per minute; the excess is summarised [default: 60].
    #[arg(
        long = "alerts-max-per-minute",
        id = "alerts_max_per_minute",
        env = "HAOCHAPING_ALERTS_MAX_PER_MINUTE"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_per_minute: Option<u32>,
    /// How often to refresh the derived tables and announce hotspots that opened or closed; 0s
    /// turns it off [default: 5m].
    #[arg(long = "alerts-hotspots-every", id = "alerts_hotspots_every", env = "HAOCHAPING_ALERTS_HOTSPOTS_EVERY", value_parser = humantime::parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub hotspots_every: Option<Duration>,
}

/// `[policy]`.
#[derive(Debug, Args, Serialize)]
pub struct PolicyFlags {
    /// A folder of region policy files (with a default.toml) instead of the shipped presets.
    #[arg(long = "policies", id = "policies", env = "HAOCHAPING_POLICIES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
}

/// `[metrics]`.
#[derive(Debug, Args, Serialize)]
pub struct MetricsFlags {
    /// Serve /metrics (Prometheus), /health and /ready on this address, or `off`
    /// [default: 127.0.0.1:9464].
    #[arg(
        long = "metrics-addr",
        id = "metrics_addr",
        env = "HAOCHAPING_METRICS_ADDR"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<crate::config::MetricsAddr>,
}

/// `[streams]`.
#[derive(Debug, Args, Serialize)]
pub struct StreamsFlags {
    /// Also read the case lifecycle (办件) from this topic, into the `cases` table [default: not read].
    #[arg(
        long = "cases-topic",
        id = "cases_topic",
        env = "HAOCHAPING_CASES_TOPIC"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cases_topic: Option<String>,
    /// Also read the bad-review workflow from this topic, into the `workflow` table [default: not
    /// read].
    #[arg(
        long = "workflow-topic",
        id = "workflow_topic",
        env = "HAOCHAPING_WORKFLOW_TOPIC"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow_topic: Option<String>,
}

#[derive(Debug, Args)]
pub struct CompactArgs {
    /// Lake root: a folder or an object store URL (s3://bucket/prefix, gs://…, az://…).
    #[arg(long, env = "HAOCHAPING_LAKE")]
    pub lake: crate::lake::LakeLocation,
    /// Compact only folders that received no new file for this long; 0s compacts everything
    /// committed.
    #[arg(long, env = "HAOCHAPING_COMPACT_QUIET_FOR", default_value = "1h", value_parser = humantime::parse_duration)]
    pub quiet_for: Duration,
    /// Days of dedup keys the refreshed snapshots hold (the ingest's dedup.window_days).
    #[arg(long, env = "HAOCHAPING_DEDUP_WINDOW_DAYS", default_value_t = 120)]
    pub dedup_window_days: u16,
}

impl IngestArgs {
    /// The config file (if any) with flags and environment applied, checked.
    pub fn resolve(&self) -> Result<IngestConfig, ConfigError> {
        use figment::providers::{Format, Serialized, Toml};
        let mut layers = figment::Figment::new();
        if let Some(path) = &self.config {
            // Parsed alone first: its errors name the line; unknown keys are rejected there.
            IngestConfig::from_file(path)?;
            layers = layers.merge(Toml::file_exact(path));
        }
        layers = layers
            .merge(Serialized::default("kafka", &self.kafka))
            .merge(Serialized::default("kafka", &self.consumer))
            .merge(Serialized::default("lake", &self.lake))
            .merge(Serialized::default("validation", &self.validation))
            .merge(Serialized::default("dedup", &self.dedup))
            .merge(Serialized::default("dlq", &self.dlq))
            .merge(Serialized::default("alerts", &self.alerts))
            .merge(Serialized::default("policy", &self.policy))
            .merge(Serialized::default("metrics", &self.metrics))
            .merge(Serialized::default("streams", &self.streams));
        let mut config: IngestConfig = layers.extract().map_err(|e| ConfigError::Invalid {
            field: "flags",
            message: e.to_string().replace('\n', " "),
        })?;
        self.secrets.apply(&mut config);
        config.read_secret_files()?;
        config.check()?;
        Ok(config)
    }
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// How many events to produce.
    #[arg(long, env = "HAOCHAPING_EVENTS", default_value_t = 100_000)]
    pub events: u64,
    /// Events per second (0: as fast as the broker takes them).
    #[arg(long, env = "HAOCHAPING_RATE", default_value_t = 0)]
    pub rate: u32,
    /// Share of identical redeliveries, 0–1.
    #[arg(long, env = "HAOCHAPING_DUP_RATE", default_value_t = 0.0, value_parser = parse_share)]
    pub dup_rate: f64,
    /// Share of malformed or invalid events, 0–1.
    #[arg(long, env = "HAOCHAPING_BAD_RATE", default_value_t = 0.0, value_parser = parse_share)]
    pub bad_rate: f64,
    /// Two-digit province code of the shipped division-code table.
    #[arg(long, env = "HAOCHAPING_PROVINCE", default_value = "41")]
    pub province: String,
    /// Evaluation date, yyyy-mm-dd [default: yesterday, China Standard Time].
    #[arg(long, env = "HAOCHAPING_DAY")]
    pub day: Option<chrono::NaiveDate>,
    /// Random seed (the same seed gives the same events).
    #[arg(long, env = "HAOCHAPING_SEED", default_value_t = 2026)]
    pub seed: u64,
    /// Write newline-delimited JSON to this file instead of producing to Kafka.
    #[arg(long, env = "HAOCHAPING_TO_FILE")]
    pub to_file: Option<PathBuf>,
    /// Create the topic with this many partitions if it does not exist (and `<topic>.dlq` and
    /// `alerts`, one partition each).
    #[arg(long, env = "HAOCHAPING_PARTITIONS", default_value_t = 4)]
    pub partitions: i32,
    /// Also produce each evaluated case's lifecycle, and unevaluated cases (one for every 20
    /// evaluations), to this topic.
    #[arg(long, env = "HAOCHAPING_CASES_TOPIC")]
    pub cases_topic: Option<String>,
    /// Also produce the workflow of every bad review up to now (some late, some never rectified,
    /// some appealed and excluded) to this topic, after the evaluations.
    #[arg(long, env = "HAOCHAPING_WORKFLOW_TOPIC")]
    pub workflow_topic: Option<String>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Events to generate (a province's day is a few hundred thousand).
    #[arg(long, env = "HAOCHAPING_DEMO_EVENTS", default_value_t = 300_000)]
    pub events: u64,
    /// Lake folder (a previous demo's lake there is replaced).
    #[arg(long, env = "HAOCHAPING_LAKE", default_value = "lake")]
    pub lake: PathBuf,
    /// Partitions of the embedded topic.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Two-digit province code.
    #[arg(long, env = "HAOCHAPING_PROVINCE", default_value = "41")]
    pub province: String,
}

#[derive(Debug, Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub command: DlqCommand,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Re-produce dead letters to their source topic after a fix (encrypted ones decrypted).
    Replay(ReplayArgs),
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Bootstrap servers, host:port[,host:port…].
    #[arg(long, env = "HAOCHAPING_BROKERS", default_value = "localhost:9092")]
    pub brokers: String,
    /// The dead-letter topic to replay.
    #[arg(long, env = "HAOCHAPING_DLQ_TOPIC")]
    pub topic: String,
    /// Produce every record to this topic [default: each record's haochaping.source.topic].
    #[arg(long, env = "HAOCHAPING_REPLAY_TO")]
    pub to: Option<String>,
    /// Key that opens encrypted dead letters (the ingest's dlq.encryption_key).
    #[arg(long, env = "HAOCHAPING_DLQ_KEY", hide_env_values = true)]
    pub decrypt_key: Option<Secret>,
    /// Replay only records with this reason code (repeatable) [default: every reason].
    #[arg(long = "reason", env = "HAOCHAPING_REPLAY_REASONS", value_delimiter = ',', value_parser = parse_reason)]
    pub reasons: Vec<Reason>,
    /// Consumer group remembering what has been replayed.
    #[arg(
        long,
        env = "HAOCHAPING_REPLAY_GROUP",
        default_value = "haochaping-dlq-replay"
    )]
    pub group: String,
    /// Stop once nothing arrived for this long and everything is committed [default when given
    /// without a value: 5s].
    #[arg(long, env = "HAOCHAPING_EXIT_WHEN_IDLE", num_args = 0..=1, default_missing_value = "5s", value_parser = humantime::parse_duration)]
    pub exit_when_idle: Option<Duration>,
    /// Extra librdkafka setting, key=value (repeatable).
    #[arg(long = "kafka-property", env = "HAOCHAPING_KAFKA_PROPERTIES", value_delimiter = ';', value_parser = parse_key_value)]
    pub kafka_properties: Vec<(String, String)>,
}

impl ReplayArgs {
    /// The replay these arguments describe; a malformed key is an error naming the flag.
    pub fn resolve(&self) -> Result<crate::sink::dlq::replay::ReplayOptions, ConfigError> {
        let key = match &self.decrypt_key {
            Some(text) if !text.expose().is_empty() => {
                Some(crate::sink::dlq::DlqKey::parse(text.expose()).map_err(|e| {
                    ConfigError::Invalid {
                        field: "--decrypt-key",
                        message: e.to_string(),
                    }
                })?)
            }
            _ => None,
        };
        let kafka = crate::config::KafkaConfig {
            brokers: self.brokers.clone(),
            properties: self.kafka_properties.iter().cloned().collect(),
            ..Default::default()
        };
        // The replay produces with the engine's producer, whose acknowledgement and idempotence no
        // property may weaken, as ingest's configuration refuses them.
        kafka.check_properties()?;
        Ok(crate::sink::dlq::replay::ReplayOptions {
            kafka,
            dlq_topic: self.topic.clone(),
            to: self.to.clone(),
            key,
            reasons: self.reasons.clone(),
            group: self.group.clone(),
            exit_when_idle: self.exit_when_idle,
        })
    }
}

fn parse_reason(text: &str) -> Result<Reason, String> {
    Reason::from_code(text.trim()).ok_or_else(|| {
        let codes: Vec<&str> = Reason::ALL.iter().map(|r| r.code()).collect();
        format!("unknown reason {text:?}; one of {}", codes.join(", "))
    })
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected key=value, got {text:?}"))
}

fn parse_share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("expected a share between 0 and 1, got {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `haochaping dlq replay <flags>`: its arguments, and the whole parsed command line as `Debug`
    /// prints it.
    fn replay_args(flags: &[&str]) -> (ReplayArgs, String) {
        let line = ["haochaping", "dlq", "replay"].iter().chain(flags);
        let cli = Cli::try_parse_from(line).unwrap();
        let printed = format!("{cli:?}");
        let Command::Dlq(DlqArgs {
            command: DlqCommand::Replay(args),
        }) = cli.command
        else {
            panic!("not a replay: {printed}");
        };
        (args, printed)
    }

    #[test]
    fn dlq_replay_refuses_a_property_that_weakens_its_producer() {
        let replay = |property: &str| {
            let flags = ["--topic", "evaluations.dlq", "--kafka-property", property];
            replay_args(&flags).0.resolve()
        };
        for property in [
            "acks=1",
            "enable.idempotence=false",
            "enable.auto.commit=true",
        ] {
            let error = replay(property).unwrap_err().to_string();
            let key = property.split('=').next().unwrap();
            assert!(error.contains(key), "{property}: {error}");
        }
        assert!(replay("security.protocol=SASL_SSL").is_ok());
    }

    /// Every layer, key by key: a flag beats the file, the file beats the default, a table
    /// (`kafka.properties`) is merged key by key, and a flag's secret replaces the file's path to one.
    #[test]
    fn each_flag_lands_on_its_key_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "[kafka]\ngroup = \"g\"\ndlq_topic = \"file.dlq\"\n[kafka.properties]\n\"client.id\" = \"file\"\n\"socket.timeout.ms\" = \"9000\"\n\
             [lake]\nflush_rows = 100\nzstd_level = 5\n[alerts]\ntopic = \"file-alerts\"\nmax_per_minute = 7\n\
             [identity]\nsecret_file = \"/nonexistent/secret\"\n[metrics]\naddr = \"off\"\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "haochaping",
            "ingest",
            "--config",
            file.to_str().unwrap(),
            "--flush-rows",
            "300",
            "--alerts-topic",
            "flag-alerts",
            "--kafka-property",
            "client.id=flag",
            "--max-clock-skew",
            "90s",
            "--dedup-window-days",
            "30",
            "--accept-offset-reset",
            "--metrics-addr",
            "127.0.0.1:9999",
            "--policies",
            "/p",
            "--cases-topic",
            "cases",
            "--alerts-hotspots-every",
            "0s",
            "--identity-secret",
            "0123456789abcdef",
            "--max-events-per-second",
            "50",
            "--dlq-max-record-bytes",
            "2000",
        ])
        .unwrap();
        let Command::Ingest(args) = cli.command else {
            panic!()
        };
        let c = args.resolve().unwrap();
        assert_eq!(
            (c.kafka.group.as_str(), c.kafka.dlq_topic.as_deref()),
            ("g", Some("file.dlq"))
        );
        let properties: Vec<(&str, &str)> = c
            .kafka
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            properties,
            [("client.id", "flag"), ("socket.timeout.ms", "9000")]
        );
        assert_eq!((c.lake.flush_rows, c.lake.zstd_level), (300, 5));
        assert_eq!(
            (c.alerts.topic.as_str(), c.alerts.max_per_minute),
            ("flag-alerts", 7)
        );
        assert!(c.alerts.hotspots_every.is_zero());
        assert_eq!(c.validation.max_clock_skew, Duration::from_secs(90));
        assert_eq!(c.dedup.window_days, 30);
        assert!(c.kafka.accept_offset_reset);
        assert_eq!(c.metrics.addr.0, Some("127.0.0.1:9999".parse().unwrap()));
        assert_eq!(c.policy.dir, Some(PathBuf::from("/p")));
        assert_eq!(c.streams.cases_topic.as_deref(), Some("cases"));
        assert_eq!(c.lake.max_events_per_second.map(|n| n.get()), Some(50));
        assert_eq!(c.dlq.max_record_bytes, 2000);
        assert_eq!(c.identity.secret_file, None);
        assert_eq!(
            c.identity.secret.as_ref().map(|s| s.expose()),
            Some("0123456789abcdef")
        );
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[kafka]\nbrokers = \"file:1\"\ngroup = \"g\"\n[identity]\nsecret = \"0123456789abcdef\"\n").unwrap();
        let cli = Cli::try_parse_from([
            "haochaping",
            "ingest",
            "--config",
            file.to_str().unwrap(),
            "--brokers",
            "flag:2",
            "--flush-interval",
            "5s",
            "--kafka-property",
            "client.id=x",
            "--compact-every",
            "0s",
        ])
        .unwrap();
        let Command::Ingest(args) = cli.command else {
            panic!()
        };
        let config = args.resolve().unwrap();
        assert_eq!(config.kafka.brokers, "flag:2");
        assert_eq!(config.kafka.group, "g");
        assert_eq!(config.lake.flush_interval, Duration::from_secs(5));
        assert!(config.lake.compact_every.is_zero());
        assert_eq!(
            config.kafka.properties.get("client.id").map(String::as_str),
            Some("x")
        );
    }

    #[test]
    fn bad_arguments_name_the_flag() {
        for (args, flag) in [
            (
                vec!["haochaping", "ingest", "--flush-interval", "soon"],
                "--flush-interval",
            ),
            (
                vec!["haochaping", "ingest", "--flush-rows", "many"],
                "--flush-rows",
            ),
            (
                vec!["haochaping", "generate", "--dup-rate", "2"],
                "--dup-rate",
            ),
            (
                vec![
                    "haochaping",
                    "compact",
                    "--lake",
                    "l",
                    "--quiet-for",
                    "later",
                ],
                "--quiet-for",
            ),
            (
                vec!["haochaping", "ingest", "--kafka-property", "novalue"],
                "--kafka-property",
            ),
            (
                vec![
                    "haochaping",
                    "dlq",
                    "replay",
                    "--topic",
                    "t.dlq",
                    "--reason",
                    "bogus",
                ],
                "--reason",
            ),
        ] {
            let error = Cli::try_parse_from(&args).unwrap_err().to_string();
            assert!(error.lines().next().unwrap().contains(flag), "{error}");
        }
    }

    #[test]
    fn dlq_keys_never_show() {
        let key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
        let (args, printed) = replay_args(&[
            "--topic",
            "evaluations.dlq",
            "--decrypt-key",
            key,
            "--reason",
            "not_json,not_utf8",
            "--exit-when-idle",
        ]);
        assert!(!printed.contains(key));
        let options = args.resolve().unwrap();
        assert!(options.key.is_some());
        assert_eq!(options.reasons, vec![Reason::NotJson, Reason::NotUtf8]);
        assert_eq!(options.exit_when_idle, Some(Duration::from_secs(5)));
        assert!(!format!("{options:?}").contains(key));
        let cli = Cli::try_parse_from([
            "haochaping",
            "ingest",
            "--dlq-key",
            key,
            "--identity-secret",
            "0123456789abcdef0",
        ])
        .unwrap();
        assert!(!format!("{cli:?}").contains(key));
        let Command::Ingest(args) = cli.command else {
            panic!()
        };
        assert!(args.resolve().unwrap().dlq.key().unwrap().is_some());
        let (args, _) = replay_args(&["--topic", "t", "--decrypt-key", "short"]);
        assert!(args
            .resolve()
            .unwrap_err()
            .to_string()
            .starts_with("--decrypt-key"));
    }
}
