//! The ingest engine: Kafka → decode → validate → identity → dedup → lake, with the dead-letter
//! topic beside it, for every configured stream ([`crate::stream`]: evaluations, cases, workflow).
//! [`run()`] is the whole job; the CLI, the demo and the tests drive it directly.
//!
//! Data flows one way. Each assigned partition of each stream's topic has its own state
//! ([`partition`], keyed by [`partition::Tp`]): where its
//! reading stands against the lake, its lease on the lake's log, the dedup table, and an open batch of
//! rows. A batch is committed ([`commit`], and [`crate::lake`] for the protocol) when it reaches
//! `flush_rows` or `flush_bytes`, when its oldest event has waited `flush_interval`, and at shutdown;
//! only then is the partition's offset committed to Kafka. Every assignment starts with
//! [`recovery`]: the lake, not the group, says where to resume.
//!
//! | module | job |
//! |---|---|
//! | [`run`](mod@run) | the loop: receive, admit, hand chunks to the stages, flush, act on moves and fencing |
//! | [`partition`] | per-partition state and the admission rules (pure) |
//! | [`alerting`] | each chunk's accepted bad reviews through the alert rules, to the alerts topic |
//! | [`analyze`] | in the background: refreshes the derived tables and announces hotspots that open or close |
//! | [`commit`] | a closed batch into the lake (its dead letters and alerts confirmed first), then its offset into the group |
//! | [`recovery`] | roll back, resume position, dedup state rebuilt from the lake |
//! | [`throttle`] | the configured ceiling on messages per second (`governor`) |

pub mod alerting;
pub mod analyze;
pub mod commit;
pub mod partition;
pub mod recovery;
pub mod run;
pub mod throttle;

pub use recovery::{load_dedup_state, recover_partition, refresh_snapshots, DedupScope, Recovered};
pub use run::{run, RunOptions};

use crate::lake::LakeError;
use crate::sink::dlq::DlqError;
use crate::sink::parquet::{cst_day, TableError};

/// Errors that stop the engine. Bad input never does: it goes to the dead-letter topic.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    DeadLetter(#[from] DlqError),
    #[error(transparent)]
    Table(#[from] TableError),
    #[error(transparent)]
    Alerts(#[from] crate::analytics::alerts::AlertError),
    #[error(transparent)]
    AlertSink(#[from] crate::sink::alerts::AlertSinkError),
    #[error(transparent)]
    Analytics(#[from] crate::analytics::AnalyticsError),
    #[error("policy: {0}")]
    Policy(#[from] crate::policy::PolicyError),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("a worker task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("the alert stage stopped")]
    AlertStageStopped,
    #[error("{topic}/{partition}: the broker no longer holds offset {lake_position}, where the lake ends (it answered with offset {broker_offset}): the topic was recreated or the cluster moved. Check, then run with --accept-offset-reset to adopt the broker's offsets")]
    OffsetReset {
        topic: String,
        partition: i32,
        lake_position: i64,
        broker_offset: i64,
    },
    #[error("{topic}/{partition}: the broker's end of the partition is offset {broker_end}, before offset {lake_position} where the lake ends: the topic was recreated or the cluster moved. Check, then run with --accept-offset-reset to adopt the broker's offsets")]
    TopicBehindLake {
        topic: String,
        partition: i32,
        lake_position: i64,
        broker_end: i64,
    },
}

/// What `haochaping compact` (and ingest's background step) did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CompactSummary {
    #[serde(flatten)]
    pub compaction: crate::lake::compact::CompactReport,
    pub snapshots_written: usize,
}

/// Compacts the lake's quiet folders, then brings every partition's dedup snapshot up to date.
pub async fn compact_lake(
    lake: &crate::lake::Lake,
    rule: crate::stream::DedupRule,
    options: &crate::lake::compact::CompactOptions,
    window_days: u16,
) -> Result<CompactSummary, EngineError> {
    let compaction = crate::lake::compact::compact(lake, options).await?;
    let snapshots_written = refresh_snapshots(lake, rule, window_days).await?;
    Ok(CompactSummary {
        compaction,
        snapshots_written,
    })
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Today's date in China Standard Time, as days since 1970-01-01.
pub(crate) fn today() -> i32 {
    cst_day(now_us())
}
