//! Typed configuration of `ingest`: a TOML file (unknown keys rejected), then `HAOCHAPING_*`
//! environment variables and flags on top, layered by figment: each flag group of [`crate::cli`]
//! is a section of this file, with its keys' names. Every value has a default except the identity
//! secret.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::transform::validate::ValidationRules;

/// A configuration error, always one line naming the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("kafka.properties.{key}: set by the engine and not to be overridden ({why})")]
    Protected { key: String, why: &'static str },
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

/// The largest `lake.flush_bytes`: half of what an Arrow string column can hold.
pub const MAX_FLUSH_BYTES: usize = 1 << 30;

/// Everything `ingest` needs.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    pub kafka: KafkaConfig,
    pub lake: LakeConfig,
    pub validation: ValidationRules,
    pub dedup: DedupConfig,
    pub identity: IdentityConfig,
    pub dlq: DlqConfig,
    pub alerts: AlertsConfig,
    pub policy: PolicyConfig,
    pub streams: StreamsConfig,
    pub metrics: MetricsConfig,
}

/// Metrics (`[metrics]`): where the Prometheus exporter serves every `haochaping_*` counter.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `host:port` of the exporter (`http://host:port/metrics`, `/health`, `/ready`), or `off`.
    pub addr: MetricsAddr,
}

/// Where the exporter listens: an address, or `off` (the counters are then only summed up in the
/// run's summary). Defaults to 127.0.0.1:9464, local only: exposing it is the operator's choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct MetricsAddr(pub Option<std::net::SocketAddr>);

impl Default for MetricsAddr {
    fn default() -> Self {
        Self(Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9464))))
    }
}

impl std::str::FromStr for MetricsAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "off" => Ok(Self(None)),
            addr => addr.parse().map(|addr| Self(Some(addr))).map_err(|_| {
                format!("expected host:port (e.g. 127.0.0.1:9464) or off, got {text:?}")
            }),
        }
    }
}

impl TryFrom<String> for MetricsAddr {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<MetricsAddr> for String {
    fn from(addr: MetricsAddr) -> Self {
        match addr.0 {
            Some(addr) => addr.to_string(),
            None => "off".into(),
        }
    }
}

/// The streams beside evaluations (`[streams]`), each read from its topic into its own lake table
/// by the same engine, group and process; unset, the stream is not read.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamsConfig {
    /// The case lifecycle topic (办件), into the `cases` table; dead letters on `<topic>.dlq`.
    pub cases_topic: Option<String>,
    /// The bad-review workflow topic (forwarded, replied, rectified …), into the `workflow` table;
    /// dead letters on `<topic>.dlq`.
    pub workflow_topic: Option<String>,
}

/// Region policies (`[policy]`): the closed loop's deadlines and default evaluations per region.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// A folder of policy files with a `default.toml`; unset, the presets shipped in
    /// `deploy/policies` (compiled in).
    pub dir: Option<PathBuf>,
}

impl PolicyConfig {
    /// The policies this configuration names, checked.
    pub fn load(&self) -> Result<crate::policy::Policies, crate::policy::PolicyError> {
        match &self.dir {
            Some(dir) => crate::policy::Policies::load_dir(dir),
            None => crate::policy::Policies::shipped(),
        }
    }
}

/// Real-time alerts (`[alerts]`): the rules of `queries/alerts/` over every micro-batch, produced to
/// a topic before the batch's offsets are committed.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Whether alerts are produced at all.
    pub enabled: bool,
    /// The topic alerts go to, keyed by department code.
    pub topic: String,
    /// Most alerts of one rule for one department per minute; the excess is counted and summarised
    /// in one `rate_limited` alert before the batch commits, never dropped silently.
    pub max_per_minute: u32,
    /// How often `ingest` refreshes the derived tables (rankings, warnings, hotspots, fraud
    /// signals) and announces hotspots that opened or closed; `0s` turns it off.
    #[serde(with = "humantime_serde")]
    pub hotspots_every: Duration,
    /// How often the rules' look-back (`recent_bad_reviews`) is read again from the lake, in the
    /// background, to take in the bad reviews other instances of the group committed; `0s` reads it
    /// only at start. A rule sees another instance's review once it is committed there (one flush
    /// interval) and read here (up to this long).
    #[serde(with = "humantime_serde")]
    pub history_refresh: Duration,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            topic: "alerts".into(),
            max_per_minute: 60,
            hotspots_every: Duration::from_secs(300),
            history_refresh: Duration::from_secs(60),
        }
    }
}

/// A secret string: deserialised and parsed like a string, never shown by `Debug`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

/// Shown as `<secret>` wherever a configuration is written out (`config show`): a secret never
/// leaves the process through serialisation.
impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<secret>")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// The dead-letter topic (`[dlq]`): how a rejected record that cannot be redacted is kept, and how
/// large a dead letter may be.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DlqConfig {
    /// AES-256-GCM key (32 bytes: 64 hex digits or base64) that encrypts rejected payloads that
    /// cannot be redacted. Without it such a payload is withheld: only its size and SHA-256 are kept.
    pub encryption_key: Option<Secret>,
    /// A file holding the key instead; a trailing newline is dropped.
    pub encryption_key_file: Option<PathBuf>,
    /// Largest dead-letter payload; a larger record is parked as a bounded head. Keep it below the
    /// topic's `max.message.bytes` minus room for the headers.
    pub max_record_bytes: usize,
    /// Longest wait between two attempts at a dead letter while the topic is unreachable.
    #[serde(with = "humantime_serde")]
    pub retry_backoff_max: Duration,
}

impl Default for DlqConfig {
    fn default() -> Self {
        Self {
            encryption_key: None,
            encryption_key_file: None,
            max_record_bytes: 900_000,
            retry_backoff_max: Duration::from_secs(30),
        }
    }
}

impl DlqConfig {
    /// The parsed encryption key, if one is set.
    pub fn key(&self) -> Result<Option<crate::sink::dlq::DlqKey>, ConfigError> {
        match &self.encryption_key {
            None => Ok(None),
            Some(text) if text.expose().is_empty() => Ok(None),
            Some(text) => crate::sink::dlq::DlqKey::parse(text.expose())
                .map(Some)
                .map_err(|e| ConfigError::Invalid {
                    field: "dlq.encryption_key",
                    message: e.to_string(),
                }),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port…]`.
    pub brokers: String,
    /// Consumer group shared by every instance writing the same lake.
    pub group: String,
    /// The evaluations topic.
    pub topic: String,
    /// Dead-letter topic; `<topic>.dlq` when unset.
    pub dlq_topic: Option<String>,
    /// Longest time the broker may hold a fetch that has nothing to return. It only matters when
    /// the topic is idle on Apache Kafka, but some brokers (Tansu 0.6) hold every fetch this long,
    /// which caps throughput at one fetch per partition per wait: 500 ms (librdkafka's default)
    /// reads 8 times slower than 10 ms there.
    #[serde(with = "humantime_serde")]
    pub fetch_max_wait: Duration,
    /// Extra librdkafka settings for both consumer and producer (`security.protocol`, …).
    pub properties: BTreeMap<String, String>,
    /// Continue when the broker no longer holds a partition's offsets up to the lake's position
    /// (the topic was deleted and recreated, or the cluster moved). Off, such a partition stops the
    /// run with an error naming both positions; on, ingest adopts the broker's offsets, and dedup
    /// still drops every evaluation the lake already holds.
    pub accept_offset_reset: bool,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "localhost:9092".into(),
            group: "haochaping-ingest".into(),
            topic: "evaluations".into(),
            dlq_topic: None,
            fetch_max_wait: Duration::from_millis(10),
            properties: BTreeMap::new(),
            accept_offset_reset: false,
        }
    }
}

/// librdkafka settings the exactly-once protocol depends on, with why; `kafka.properties` cannot
/// override them (the engine stores offsets itself, after the lake's commit; reads only committed
/// records; produces dead letters and alerts idempotently, acknowledged by every replica).
pub const PROTECTED_KAFKA_PROPERTIES: [(&str, &str); 9] = [
    (
        "enable.auto.commit",
        "offsets are committed after the lake's commit",
    ),
    (
        "enable.auto.offset.store",
        "offsets are stored after the lake's commit",
    ),
    (
        "auto.commit.enable",
        "offsets are committed after the lake's commit",
    ),
    ("isolation.level", "only committed records are read"),
    ("group.id", "set kafka.group"),
    ("bootstrap.servers", "set kafka.brokers"),
    (
        "enable.idempotence",
        "dead letters and alerts are produced idempotently",
    ),
    (
        "acks",
        "dead letters and alerts are acknowledged by every in-sync replica",
    ),
    (
        "request.required.acks",
        "dead letters and alerts are acknowledged by every in-sync replica",
    ),
];

impl KafkaConfig {
    /// The defaults, with these bootstrap servers.
    pub fn with_brokers(brokers: &str) -> Self {
        Self {
            brokers: brokers.into(),
            ..Self::default()
        }
    }

    /// One line naming the first of `properties` the protocol does not let an operator change.
    pub fn check_properties(&self) -> Result<(), ConfigError> {
        for key in self.properties.keys() {
            if let Some((_, why)) = PROTECTED_KAFKA_PROPERTIES
                .iter()
                .find(|(protected, _)| protected == key)
            {
                return Err(ConfigError::Protected {
                    key: key.clone(),
                    why,
                });
            }
        }
        Ok(())
    }

    pub fn dlq_topic(&self) -> String {
        self.dlq_topic
            .clone()
            .unwrap_or_else(|| format!("{}.dlq", self.topic))
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LakeConfig {
    /// Lake root: a folder, or an object store URL (`s3://bucket/prefix`, `gs://…`, `az://…`).
    pub path: crate::lake::LakeLocation,
    /// Object store options (file-only), over the provider's environment variables: `aws_endpoint`,
    /// `aws_region`, `aws_allow_http`, … (the keys `object_store` knows for the URL's store).
    /// Credentials are better left to the environment; values whose key names a secret, key, token
    /// or password are masked by `config show`.
    pub storage: BTreeMap<String, String>,
    /// Longest time an accepted event waits in memory before its batch is committed.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// The open batches of every partition this instance holds together hold at most this many
    /// rows: once they reach it, the largest is committed. With one partition, a batch of this
    /// many rows; with more, smaller batches and the same memory however many partitions a
    /// rebalance assigns (see [`crate::engine::partition::full_batches`]).
    pub flush_rows: usize,
    /// …or this many bytes of messages. Arrow's string columns hold at most 2 GiB per batch, so
    /// this is capped at 1 GiB (a storm of long texts must not get there).
    pub flush_bytes: usize,
    /// `ingest --from-file` only: each batch of lines (closed by `flush_rows` or `flush_bytes`)
    /// becomes one more row group of the run's open files, and those are committed once their row
    /// groups hold this many encoded bytes (and at the end of the file); `0` commits every batch.
    /// Fewer commits make fewer files: a file spread over 20 days fans out to 360 folders, and on
    /// ext4 each file costs the filesystem ≈ 1 ms; the default (64 MiB) writes 720 files instead of
    /// 1 800 for 1 M such events, 0.85× the wall. The open files stay resident until committed:
    /// 10 M events peak at 457 MiB with the default, and 50 M at 1 000.5 MiB (benches/RESULTS.md
    /// §21).
    pub offline_commit_bytes: usize,
    /// zstd level of the Parquet files ingest writes (1–22); files of fewer than
    /// [`crate::sink::parquet::SMALL_FILE_ROWS`] rows are Snappy. Level 1 is the default: on the
    /// generated province it encodes ≈ 9 % faster than 3 and the files come out no larger
    /// (benches/RESULTS.md §12); compaction rewrites them at its own level.
    pub zstd_level: i32,
    /// How often ingest compacts the lake in the background (see [`crate::lake::compact`]) and
    /// refreshes the dedup snapshots; `0s` turns it off. On by default: at a province's rate the
    /// 30 s flush writes ≈ 170 000 small files a day, which no reader or recovery survives for long,
    /// and compaction is safe beside ingest (it is fenced, and locks each folder while swapping it).
    #[serde(with = "humantime_serde")]
    pub compact_every: Duration,
    /// Compaction leaves a `dt=…/city=…` folder alone until it has received no new file for this
    /// long, so that today's folders are rewritten once, not every round.
    #[serde(with = "humantime_serde")]
    pub compact_quiet_for: Duration,
    /// Longest wait between two attempts at committing a batch the lake refused (full disk, lost
    /// mount, permissions, an object store away). Meanwhile the partition stops fetching and its
    /// offsets stay uncommitted: memory stays bounded and nothing is lost.
    #[serde(with = "humantime_serde")]
    pub retry_backoff_max: Duration,
    /// Most messages a second this instance takes, over all its partitions (a backfill or replay
    /// that must spare the brokers and the readers); unset, as fast as it goes.
    pub max_events_per_second: Option<std::num::NonZeroU32>,
    /// Stop the run when a batch has been refused for this long; unset retries for ever (the
    /// default: an outage of the lake is waited out, visible on `/ready` and in the metrics).
    #[serde(with = "humantime_serde")]
    pub give_up_after: Option<Duration>,
}

impl LakeConfig {
    /// How a refused lake commit is retried.
    pub fn persistence(&self) -> crate::retry::Persistence {
        crate::retry::Persistence {
            backoff: crate::retry::Backoff {
                first: Duration::from_millis(200),
                max: self.retry_backoff_max,
            },
            give_up_after: self.give_up_after,
        }
    }
}

impl Default for LakeConfig {
    fn default() -> Self {
        Self {
            path: crate::lake::LakeLocation::default(),
            storage: BTreeMap::new(),
            flush_interval: Duration::from_secs(30),
            flush_rows: 200_000,
            flush_bytes: 256 << 20,
            offline_commit_bytes: 64 << 20,
            zstd_level: 1,
            compact_every: Duration::from_secs(3600),
            compact_quiet_for: Duration::from_secs(3600),
            retry_backoff_max: Duration::from_secs(30),
            max_events_per_second: None,
            give_up_after: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DedupConfig {
    /// How many days back the one-evaluation-per-case rule is enforced (and rebuilt from the lake).
    pub window_days: u16,
}

impl Default for DedupConfig {
    fn default() -> Self {
        Self { window_days: 120 }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// HMAC key for evaluator identities. Keep it secret and stable: changing it changes every key.
    pub secret: Option<Secret>,
    /// A file holding the secret instead (a mounted Kubernetes Secret, a Docker secret); a trailing
    /// newline is dropped.
    pub secret_file: Option<PathBuf>,
}

/// Reads a secret from the file that `field_file` names, into `secret`; setting both is an error.
fn read_secret_file(
    secret: &mut Option<Secret>,
    file: &Option<PathBuf>,
    field: &'static str,
) -> Result<(), ConfigError> {
    let Some(path) = file else {
        return Ok(());
    };
    if secret.is_some() {
        return Err(ConfigError::Invalid {
            field,
            message: format!("set either {field} or {field}_file, not both"),
        });
    }
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Invalid {
        field,
        message: format!("{field}_file {}: {e}", path.display()),
    })?;
    *secret = Some(Secret::new(text.trim_end_matches(['\n', '\r'])));
    Ok(())
}

impl IngestConfig {
    /// Reads the secrets given as files (`identity.secret_file`, `dlq.encryption_key_file`).
    pub fn read_secret_files(&mut self) -> Result<(), ConfigError> {
        read_secret_file(
            &mut self.identity.secret,
            &self.identity.secret_file,
            "identity.secret",
        )?;
        read_secret_file(
            &mut self.dlq.encryption_key,
            &self.dlq.encryption_key_file,
            "dlq.encryption_key",
        )
    }

    /// The effective configuration as TOML, every secret shown as `<secret>` (and so are the
    /// values of `kafka.properties` and `lake.storage` whose key names a password, secret, key or
    /// token).
    pub fn show(&self) -> String {
        let mut shown = self.clone();
        let sensitive = |key: &str| {
            ["password", "secret", "key", "token"]
                .iter()
                .any(|w| key.contains(w))
        };
        for (key, value) in shown
            .kafka
            .properties
            .iter_mut()
            .chain(shown.lake.storage.iter_mut())
        {
            if sensitive(key) {
                *value = "<secret>".into();
            }
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# not shown: {e}"))
    }

    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let fail = |message: String| ConfigError::File {
            path: path.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::File { message, .. } => fail(message),
            other => other,
        })
    }

    /// Parses TOML text; the error is one line with the offending key and its line number.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            let message = e.message().replace('\n', " ");
            ConfigError::File {
                path: PathBuf::new(),
                message: match line {
                    Some(line) => format!("line {line}: {message}"),
                    None => message,
                },
            }
        })
    }

    /// Checks values that types alone cannot, all but whether the identity secret is set (a file
    /// may leave it to the environment, a mounted file or a flag: see `config check`).
    pub fn check_settings(&self) -> Result<(), ConfigError> {
        let invalid = |field, message: &str| {
            Err(ConfigError::Invalid {
                field,
                message: message.into(),
            })
        };
        if self.kafka.brokers.trim().is_empty() {
            return invalid("kafka.brokers", "must name at least one broker (host:port)");
        }
        if self.kafka.topic.trim().is_empty() {
            return invalid("kafka.topic", "must not be empty");
        }
        if self.kafka.group.trim().is_empty() {
            return invalid("kafka.group", "must not be empty");
        }
        self.kafka.check_properties()?;
        if let crate::lake::LakeLocation::Remote(_) = &self.lake.path {
            // Builds the store's client (nothing is contacted): a bad option or URL shows here.
            if let Err(e) = crate::lake::LakeRoot::open(&self.lake.path, &self.lake.storage) {
                return invalid("lake", &e.to_string());
            }
        } else if let Some(key) = self.lake.storage.keys().next() {
            return invalid(
                "lake.storage",
                &format!("{key}: storage options are for an object store lake"),
            );
        }
        if self.kafka.dlq_topic() == self.kafka.topic {
            return invalid("kafka.dlq_topic", "must differ from kafka.topic");
        }
        let mut taken = vec![self.kafka.topic.clone(), self.kafka.dlq_topic()];
        for (field, topic) in [
            ("streams.cases_topic", &self.streams.cases_topic),
            ("streams.workflow_topic", &self.streams.workflow_topic),
        ] {
            let Some(topic) = topic else {
                continue;
            };
            if topic.trim().is_empty() {
                return invalid(
                    field,
                    "must not be empty (leave it unset to not read the stream)",
                );
            }
            if taken.contains(topic) || taken.contains(&format!("{topic}.dlq")) {
                return invalid(
                    field,
                    "must differ from every other topic of the run and its dead letters",
                );
            }
            taken.push(topic.clone());
            taken.push(format!("{topic}.dlq"));
        }
        if self.lake.flush_rows == 0 {
            return invalid("lake.flush_rows", "must be at least 1");
        }
        if !(1..=MAX_FLUSH_BYTES).contains(&self.lake.flush_bytes) {
            return invalid(
                "lake.flush_bytes",
                "must be between 1 and 1073741824 (1 GiB)",
            );
        }
        if self.lake.flush_interval.is_zero() {
            return invalid("lake.flush_interval", "must be longer than 0s");
        }
        if !(1..=22).contains(&self.lake.zstd_level) {
            return invalid("lake.zstd_level", "must be between 1 and 22");
        }
        if self.dedup.window_days == 0 {
            return invalid("dedup.window_days", "must be at least 1");
        }
        if self.validation.max_message_bytes == 0 {
            return invalid("validation.max_message_bytes", "must be at least 1");
        }
        if self.dlq.max_record_bytes < 1024 {
            return invalid("dlq.max_record_bytes", "must be at least 1024");
        }
        if self.lake.retry_backoff_max < Duration::from_millis(200) {
            return invalid("lake.retry_backoff_max", "must be at least 200ms");
        }
        if self.dlq.retry_backoff_max < Duration::from_millis(100) {
            return invalid("dlq.retry_backoff_max", "must be at least 100ms");
        }
        self.dlq.key()?;
        if self.alerts.enabled {
            if self.alerts.topic.trim().is_empty() {
                return invalid("alerts.topic", "must not be empty while alerts are enabled");
            }
            if self.alerts.topic == self.kafka.topic || self.alerts.topic == self.kafka.dlq_topic()
            {
                return invalid(
                    "alerts.topic",
                    "must differ from kafka.topic and kafka.dlq_topic",
                );
            }
            if self.alerts.max_per_minute == 0 {
                return invalid("alerts.max_per_minute", "must be at least 1");
            }
        }
        match self.identity.secret.as_ref().map(Secret::expose) {
            Some(s) if !s.is_empty() && s.len() < 16 => {
                invalid("identity.secret", "must be at least 16 bytes")
            }
            _ => Ok(()),
        }
    }

    /// [`Self::check_settings`], and the identity secret is set: what `ingest` runs with.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.check_settings()?;
        if self
            .identity
            .secret
            .as_ref()
            .is_none_or(|s| s.expose().is_empty())
        {
            return Err(ConfigError::Invalid {
                field: "identity.secret",
                message: "is not set: pass --identity-secret, set HAOCHAPING_IDENTITY_SECRET, or [identity] secret in the config file".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metrics_address_is_local_by_default_and_can_be_turned_off() {
        let local = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9464)));
        assert_eq!(IngestConfig::default().metrics.addr.0, local);
        for (text, expected) in [
            ("off", Ok(None)),
            (" off ", Ok(None)),
            ("0.0.0.0:9464", Ok(Some("0.0.0.0:9464".parse().unwrap()))),
            ("[::1]:9000", Ok(Some("[::1]:9000".parse().unwrap()))),
            ("9464", Err(())),
            ("localhost:9464", Err(())),
            ("", Err(())),
        ] {
            let parsed = text.parse::<MetricsAddr>().map(|a| a.0).map_err(|_| ());
            assert_eq!(parsed, expected, "{text:?}");
        }
        let off = IngestConfig::from_toml("[metrics]\naddr = \"off\"\n").unwrap();
        assert_eq!(off.metrics.addr.0, None);
        let error = IngestConfig::from_toml("[metrics]\naddr = \"nowhere\"\n").unwrap_err();
        assert!(error.to_string().contains("host:port"), "{error}");
        // `config show` writes what it read.
        assert_eq!(String::from(MetricsAddr(None)), "off");
    }

    #[test]
    fn full_file_parses_with_defaults_for_the_rest() {
        let config = IngestConfig::from_toml(
            r#"
            [kafka]
            brokers = "k1:9092,k2:9092"
            [kafka.properties]
            "fetch.max.bytes" = "104857600"
            [lake]
            path = "/data/lake"
            flush_interval = "10s"
            [validation]
            max_clock_skew = "2m"
            [identity]
            secret = "0123456789abcdef"
            "#,
        )
        .unwrap();
        assert_eq!(config.kafka.brokers, "k1:9092,k2:9092");
        assert_eq!(config.kafka.dlq_topic(), "evaluations.dlq");
        assert_eq!(config.lake.flush_interval, Duration::from_secs(10));
        assert_eq!(config.lake.flush_rows, 200_000);
        assert_eq!(config.lake.compact_every, Duration::from_secs(3600));
        let off =
            IngestConfig::from_toml("[lake]\ncompact_every = \"0s\"\ncompact_quiet_for = \"10m\"")
                .unwrap();
        assert!(off.lake.compact_every.is_zero());
        assert_eq!(off.lake.compact_quiet_for, Duration::from_secs(600));
        assert_eq!(config.validation.max_clock_skew, Duration::from_secs(120));
        assert_eq!(config.dedup.window_days, 120);
        assert_eq!(config.dlq.max_record_bytes, 900_000);
        assert!(config.dlq.key().unwrap().is_none());
        config.check().unwrap();
        // SASL and TLS pass through untouched.
        let sasl = IngestConfig::from_toml(
            "[identity]\nsecret = \"0123456789abcdef\"\n[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"SCRAM-SHA-512\"",
        )
        .unwrap();
        sasl.check().unwrap();
        let retry =
            IngestConfig::from_toml("[lake]\nretry_backoff_max = \"5s\"\ngive_up_after = \"10m\"")
                .unwrap()
                .lake;
        assert_eq!(retry.persistence().backoff.max, Duration::from_secs(5));
        assert_eq!(
            retry.persistence().give_up_after,
            Some(Duration::from_secs(600))
        );
        assert_eq!(
            config.lake.give_up_after, None,
            "retried for ever by default"
        );
    }

    #[test]
    fn dlq_key_parses_and_never_shows() {
        let key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
        let config = IngestConfig::from_toml(&format!(
            "[identity]\nsecret = \"0123456789abcdef\"\n[dlq]\nencryption_key = \"{key}\"\nmax_record_bytes = 4096\nretry_backoff_max = \"2s\""
        ))
        .unwrap();
        config.check().unwrap();
        assert_eq!(config.dlq.max_record_bytes, 4096);
        assert_eq!(config.dlq.key().unwrap().unwrap().id().len(), 8);
        let shown = format!("{config:?}");
        assert!(
            !shown.contains(key) && !shown.contains("0001020304"),
            "{shown}"
        );
    }

    #[test]
    fn errors_are_one_line_and_name_the_field() {
        let cases: &[(&str, &str)] = &[
            ("[kafka]\nbrokrs = \"x\"", "brokrs"),
            ("[lake]\nflush_interval = \"soon\"", "line 2"),
            ("[lake]\nflush_rows = -1", "line 2"),
            ("[nonsense]", "nonsense"),
        ];
        for (text, needle) in cases {
            let message = IngestConfig::from_toml(text).unwrap_err().to_string();
            assert!(message.contains(needle), "{message:?} should name {needle}");
            assert!(!message.contains('\n'), "{message:?}");
        }
        let checks: &[(&str, &str)] = &[
            (
                "[identity]\nsecret = \"0123456789abcdef\"\n[lake]\nflush_rows = 0",
                "lake.flush_rows",
            ),
            (
                "[identity]\nsecret = \"0123456789abcdef\"\n[lake]\nzstd_level = 30",
                "lake.zstd_level",
            ),
            (
                "[identity]\nsecret = \"0123456789abcdef\"\n[kafka]\ndlq_topic = \"evaluations\"",
                "kafka.dlq_topic",
            ),
            ("", "identity.secret"),
            (
                "[identity]\nsecret = \"0123456789abcdef\"\n[dlq]\nencryption_key = \"short\"",
                "dlq.encryption_key",
            ),
            (
                "[identity]\nsecret = \"0123456789abcdef\"\n[dlq]\nmax_record_bytes = 10",
                "dlq.max_record_bytes",
            ),
            ("[identity]\nsecret = \"short\"", "identity.secret"),
            (
                "[identity]\nsecret = \"0123456789abcdef\"\n[lake]\nretry_backoff_max = \"10ms\"",
                "lake.retry_backoff_max",
            ),
            // The keys the exactly-once protocol depends on cannot be overridden.
            (
                "[identity]\nsecret = \"0123456789abcdef\"\n[kafka.properties]\n\"enable.auto.commit\" = \"true\"",
                "kafka.properties.enable.auto.commit",
            ),
            (
                "[identity]\nsecret = \"0123456789abcdef\"\n[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\nacks = \"1\"",
                "kafka.properties.acks",
            ),
            (
                "[identity]\nsecret = \"0123456789abcdef\"\n[kafka.properties]\n\"isolation.level\" = \"read_uncommitted\"",
                "kafka.properties.isolation.level",
            ),
        ];
        for (text, field) in checks {
            let message = IngestConfig::from_toml(text)
                .unwrap()
                .check()
                .unwrap_err()
                .to_string();
            assert!(
                message.starts_with(field),
                "{message:?} should start with {field}"
            );
        }
    }
}
