//! Counting every outcome: in-process counters that `run` returns and the demo shows live, mirrored
//! to the `metrics` facade under Vector-style names (`haochaping_<what>_<unit>_total`), which
//! `ingest --metrics-addr` serves to Prometheus.

pub mod http;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::Serialize;

use crate::decode::Reason;

/// Live counters of one ingest run; cheap to share (`Arc<Stats>`) and to read while it runs.
#[derive(Debug, Default)]
pub struct Stats {
    pub received: AtomicU64,
    pub accepted: AtomicU64,
    pub duplicates: AtomicU64,
    pub dead_lettered: AtomicU64,
    by_reason: [AtomicU64; Reason::ALL.len()],
    /// Messages skipped because the lake already holds them (a replay after a crash).
    pub already_in_lake: AtomicU64,
    pub received_bytes: AtomicU64,
    pub batches_committed: AtomicU64,
    pub files_written: AtomicU64,
    pub bytes_written: AtomicU64,
    pub rows_written: AtomicU64,
    pub rolled_back_files: AtomicU64,
    pub partitions_recovered: AtomicU64,
    pub dedup_keys_loaded: AtomicU64,
    pub partitions_fenced: AtomicU64,
    pub alerts_sent: AtomicU64,
    pub alerts_rate_limited: AtomicU64,
    /// Offsets the broker skipped between two messages of a partition (retention deleted them
    /// before they were read, compaction, transaction markers).
    pub offsets_skipped: AtomicU64,
    /// What `/ready` answers from; the run loop keeps it current.
    pub health: Health,
}

/// The run's state as `/ready` reports it.
#[derive(Debug, Default)]
pub struct Health {
    /// The member has joined its group (been given its share of partitions, even none).
    pub joined: AtomicBool,
    /// Partitions this instance owns and has recovered from the lake.
    pub partitions: AtomicU64,
    /// Partitions whose fetching is held because their previous batch cannot commit (the lake or
    /// the dead-letter topic refuses it).
    pub held: AtomicU64,
}

impl Health {
    /// `Ok` when the instance does its work; otherwise one line saying why not.
    pub fn ready(&self) -> Result<String, String> {
        let (partitions, held) = (
            self.partitions.load(Ordering::Relaxed),
            self.held.load(Ordering::Relaxed),
        );
        if !self.joined.load(Ordering::Relaxed) {
            return Err("not yet a member of the consumer group".into());
        }
        if held > 0 {
            return Err(format!(
                "{held} of {partitions} partitions wait for a commit the lake or the dead-letter topic refuses"
            ));
        }
        Ok(format!("ready: {partitions} partitions"))
    }
}

/// Where counted events came from: the labels `stream` (its table: evaluations, cases, workflow)
/// and `partition` (the Kafka partition; an offline file's is 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    pub table: &'static str,
    pub partition: i32,
}

impl Source {
    fn labels(self) -> [(&'static str, String); 2] {
        [
            ("stream", self.table.to_owned()),
            ("partition", self.partition.to_string()),
        ]
    }
}

impl Stats {
    /// Counts processed messages of one partition; called once per run of a chunk, not per
    /// message (the counters are shared between threads, and the `metrics` recorder is not free).
    pub fn processed(
        &self,
        source: Source,
        received: u64,
        bytes: u64,
        accepted: u64,
        duplicates: u64,
    ) {
        self.received.fetch_add(received, Ordering::Relaxed);
        self.received_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.accepted.fetch_add(accepted, Ordering::Relaxed);
        self.duplicates.fetch_add(duplicates, Ordering::Relaxed);
        let labels = source.labels();
        metrics::counter!("haochaping_events_received_total", &labels).increment(received);
        metrics::counter!("haochaping_events_received_bytes_total", &labels).increment(bytes);
        metrics::counter!("haochaping_events_accepted_total", &labels).increment(accepted);
        metrics::counter!("haochaping_events_duplicate_total", &labels).increment(duplicates);
    }

    pub fn dead_lettered(&self, source: Source, reason: Reason) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
        if let Some(i) = Reason::ALL.iter().position(|r| *r == reason) {
            self.by_reason[i].fetch_add(1, Ordering::Relaxed);
        }
        let [stream, partition] = source.labels();
        metrics::counter!(
            "haochaping_events_dead_lettered_total",
            "reason" => reason.code(),
            stream.0 => stream.1,
            partition.0 => partition.1
        )
        .increment(1);
    }

    pub fn already_in_lake(&self) {
        self.already_in_lake.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("haochaping_events_already_in_lake_total").increment(1);
    }

    pub fn batch_committed(&self, files: usize, bytes: u64, rows: u64) {
        self.batches_committed.fetch_add(1, Ordering::Relaxed);
        self.files_written
            .fetch_add(files as u64, Ordering::Relaxed);
        self.bytes_written.fetch_add(bytes, Ordering::Relaxed);
        self.rows_written.fetch_add(rows, Ordering::Relaxed);
        metrics::counter!("haochaping_lake_batches_committed_total").increment(1);
        metrics::counter!("haochaping_lake_files_written_total").increment(files as u64);
        metrics::counter!("haochaping_lake_written_bytes_total").increment(bytes);
        metrics::counter!("haochaping_lake_rows_written_total").increment(rows);
    }

    pub fn partition_recovered(&self, rolled_back_files: usize, dedup_keys: usize) {
        self.partitions_recovered.fetch_add(1, Ordering::Relaxed);
        self.rolled_back_files
            .fetch_add(rolled_back_files as u64, Ordering::Relaxed);
        self.dedup_keys_loaded
            .fetch_add(dedup_keys as u64, Ordering::Relaxed);
        metrics::counter!("haochaping_partitions_recovered_total").increment(1);
        metrics::counter!("haochaping_lake_files_rolled_back_total")
            .increment(rolled_back_files as u64);
    }

    /// Another writer took a partition this instance was writing (see [`crate::lake`]).
    pub fn partition_fenced(&self) {
        self.partitions_fenced.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("haochaping_lake_partitions_fenced_total").increment(1);
    }

    /// The broker skipped `skipped` offsets between two messages of a partition.
    pub fn offset_gap(&self, skipped: u64) {
        self.offsets_skipped.fetch_add(skipped, Ordering::Relaxed);
        metrics::counter!("haochaping_offset_gaps_total").increment(1);
        metrics::counter!("haochaping_offsets_skipped_total").increment(skipped);
    }

    /// An alert was produced (its delivery is confirmed before its batch commits).
    pub fn alert_sent(&self, rule: &str) {
        self.alerts_sent.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("haochaping_alerts_sent_total", "rule" => rule.to_owned()).increment(1);
    }

    /// An alert was held back by the rate limit; it is counted in the next `rate_limited` alert.
    pub fn alert_rate_limited(&self, rule: &str) {
        self.alerts_rate_limited.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("haochaping_alerts_rate_limited_total", "rule" => rule.to_owned())
            .increment(1);
    }

    /// A consistent-enough copy for printing and assertions.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            received: get(&self.received),
            received_bytes: get(&self.received_bytes),
            accepted: get(&self.accepted),
            duplicates: get(&self.duplicates),
            dead_lettered: get(&self.dead_lettered),
            dead_lettered_by_reason: Reason::ALL
                .iter()
                .zip(&self.by_reason)
                .filter(|(_, c)| get(c) > 0)
                .map(|(r, c)| (r.code().to_owned(), get(c)))
                .collect(),
            already_in_lake: get(&self.already_in_lake),
            batches_committed: get(&self.batches_committed),
            files_written: get(&self.files_written),
            bytes_written: get(&self.bytes_written),
            rows_written: get(&self.rows_written),
            rolled_back_files: get(&self.rolled_back_files),
            partitions_recovered: get(&self.partitions_recovered),
            dedup_keys_loaded: get(&self.dedup_keys_loaded),
            partitions_fenced: get(&self.partitions_fenced),
            alerts_sent: get(&self.alerts_sent),
            alerts_rate_limited: get(&self.alerts_rate_limited),
            offsets_skipped: get(&self.offsets_skipped),
        }
    }
}

/// The counter of messages that arrived as GB18030 and were transcoded before decoding.
pub const GB18030_DECODED: &str = "haochaping_gb18030_decoded_total";

/// Counts one GB18030 message (see [`crate::decode::decode`]). A metric only, not a [`Stats`] field:
/// decoding runs on worker threads that hold no `Stats`, and the outcome counters stay per outcome.
pub fn gb18030_decoded() {
    metrics::counter!(GB18030_DECODED).increment(1);
}

/// What a run did, by outcome. Every received message is exactly one of accepted, duplicate,
/// dead-lettered or already in the lake.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    pub received: u64,
    pub received_bytes: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub dead_lettered: u64,
    pub dead_lettered_by_reason: BTreeMap<String, u64>,
    pub already_in_lake: u64,
    pub batches_committed: u64,
    pub files_written: u64,
    pub bytes_written: u64,
    pub rows_written: u64,
    pub rolled_back_files: u64,
    pub partitions_recovered: u64,
    pub dedup_keys_loaded: u64,
    pub partitions_fenced: u64,
    pub alerts_sent: u64,
    pub alerts_rate_limited: u64,
    pub offsets_skipped: u64,
}

/// A compaction run rewrote `files_rewritten` files into `files_written` (see
/// [`crate::lake::compact`]).
pub fn compacted(
    files_rewritten: u64,
    files_written: u64,
    bytes_read: u64,
    bytes_written: u64,
    elapsed: std::time::Duration,
) {
    metrics::counter!("haochaping_lake_compaction_runs_total").increment(1);
    metrics::counter!("haochaping_lake_compaction_files_rewritten_total")
        .increment(files_rewritten);
    metrics::counter!("haochaping_lake_compaction_files_written_total").increment(files_written);
    metrics::counter!("haochaping_lake_compaction_read_bytes_total").increment(bytes_read);
    metrics::counter!("haochaping_lake_compaction_written_bytes_total").increment(bytes_written);
    metrics::counter!("haochaping_lake_compaction_duration_milliseconds_total")
        .increment(elapsed.as_millis() as u64);
}

/// A dedup snapshot was written, or one was found damaged and rebuilt from the Parquet files.
pub fn dedup_snapshot(outcome: &'static str) {
    metrics::counter!("haochaping_dedup_snapshots_total", "outcome" => outcome).increment(1);
}

/// A dead letter was parked, by the form of its payload (`redacted`, `encrypted`, `withheld`, …).
pub fn dlq_parked(form: &'static str, truncated: bool) {
    metrics::counter!("haochaping_dlq_records_total", "form" => form, "truncated" => if truncated { "true" } else { "false" })
        .increment(1);
}

/// A dead letter had to be produced again: `transient`, `unknown_topic` or `too_large`.
pub fn dlq_retried(why: &'static str) {
    metrics::counter!("haochaping_dlq_retries_total", "why" => why).increment(1);
}

/// The lake refused a batch's commit, which is retried while its partition waits.
pub fn lake_commit_retried(table: &str) {
    metrics::counter!("haochaping_lake_commit_retries_total", "table" => table.to_owned())
        .increment(1);
}

/// The disk refused a write to an offline run's rejected-lines file, which is retried while the run
/// waits.
pub fn rejected_lines_write_retried() {
    metrics::counter!("haochaping_rejected_lines_write_retries_total").increment(1);
}

/// How many partitions wait for their previous batch's commit with their next batch full (fetching
/// paused): a lake or dead-letter outage shows here first.
pub fn partitions_backpressured(count: usize) {
    metrics::gauge!("haochaping_partitions_backpressured").set(count as f64);
}

/// Ingest waited for `lake.max_events_per_second`.
pub fn ingest_throttled() {
    metrics::counter!("haochaping_ingest_throttled_total").increment(1);
}

/// How far a partition's consumer is behind the broker's end (librdkafka's statistics, every 5 s).
pub fn consumer_lag(topic: &str, partition: i32, messages: i64) {
    metrics::gauge!("haochaping_consumer_lag_messages", "topic" => topic.to_owned(), "partition" => partition.to_string())
        .set(messages as f64);
}

/// How long a batch's lake commit took (intent, files, fsync, commit; retries included).
pub fn lake_commit_took(table: &str, elapsed: std::time::Duration) {
    metrics::histogram!("haochaping_lake_commit_duration_seconds", "table" => table.to_owned())
        .record(elapsed.as_secs_f64());
}

/// How long a batch was open (its first message's arrival to its flush).
pub fn batch_flushed(age: std::time::Duration) {
    metrics::histogram!("haochaping_batch_age_seconds").record(age.as_secs_f64());
}

/// How long a flush waited at the alert stage's barrier: for the rules to catch up with the chunks
/// handed to them and for the rate limit's summaries to be confirmed. Long waits mean the alert
/// rules, not the lake, hold ingestion back.
pub fn alert_barrier_waited(wait: std::time::Duration) {
    metrics::histogram!("haochaping_alert_barrier_wait_seconds").record(wait.as_secs_f64());
}

/// Runs one step of refreshing the derived tables (`rankings`, `warnings`, `fraud`, `hotspots`,
/// `defaults`, `closed_loop`) and records how long it took (logged at debug level too).
pub async fn analytics_step<T>(
    step: &'static str,
    work: impl std::future::Future<Output = T>,
) -> T {
    let started = std::time::Instant::now();
    let output = work.await;
    let elapsed = started.elapsed();
    tracing::debug!(
        step,
        elapsed_ms = elapsed.as_millis() as u64,
        "derived tables refreshed"
    );
    metrics::histogram!("haochaping_analytics_step_duration_seconds", "step" => step)
        .record(elapsed.as_secs_f64());
    output
}

/// How long a partition's recovery from the lake took.
pub fn recovery_took(elapsed: std::time::Duration) {
    metrics::histogram!("haochaping_recovery_duration_seconds").record(elapsed.as_secs_f64());
}

/// Dedup keys held over every partition this instance owns.
pub fn dedup_keys(keys: usize) {
    metrics::gauge!("haochaping_dedup_keys").set(keys as f64);
}

/// `dlq replay` handled a dead letter: `replayed`, or why it was skipped.
pub fn dlq_replayed(outcome: &'static str) {
    metrics::counter!("haochaping_dlq_replayed_total", "outcome" => outcome).increment(1);
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (for Loki, Elasticsearch, …).
    Json,
}

/// Logs to stderr, filtered by `HAOCHAPING_LOG` (or `RUST_LOG`), `default` otherwise. No log line
/// carries a payload or an identity: the engine logs positions, counts and reasons only.
pub fn init_logging(default: &str, format: LogFormat) {
    let filter = std::env::var("HAOCHAPING_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| default.to_owned());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

#[cfg(test)]
pub(crate) mod testing {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use metrics::{
        Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };

    /// A recorder that counts one counter and ignores everything else.
    struct OneCounter {
        name: &'static str,
        count: Arc<AtomicU64>,
    }

    impl Recorder for OneCounter {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            if key.name() == self.name {
                Counter::from_arc(self.count.clone())
            } else {
                Counter::noop()
            }
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    /// Runs `f` on this thread and returns what the counter `name` counted meanwhile.
    pub fn counted<T>(name: &'static str, f: impl FnOnce() -> T) -> (T, u64) {
        let recorder = OneCounter {
            name,
            count: Arc::default(),
        };
        let value = metrics::with_local_recorder(&recorder, f);
        (value, recorder.count.load(Ordering::Relaxed))
    }
}
