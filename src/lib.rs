//! # haochaping
//!
//! Streaming ingestion of China's government-service 好差评 evaluations: Kafka in, validated,
//! deduplicated, identity-protected, Hive-partitioned Parquet out, exactly once.
//!
//! # Layout
//!
//! Data flows one way, and each stage is one module:
//!
//! | stage | module | what it does |
//! |---|---|---|
//! | source | [`source::kafka`] | consumer-group member; rebalances are queued for the pipeline |
//! | decode | [`decode`] | bytes → the national interface's fields (the only place official names live); [`decode::Reason`] codes |
//! | validate | [`transform::validate`] | fields → a typed [`transform::validate::Evaluation`], rule by rule |
//! | identity | [`transform::identity`] | clear-text evaluator identity → keyed `evaluator_key` |
//! | dedup | [`transform::dedup`] | one first and one supplementary evaluation per case (each stream its own rule) |
//! | streams | [`stream`] | a stream is a value: topic, decoder and validator, dedup rule, table — [`stream::evaluations`], [`stream::cases`], [`stream::workflow`] |
//! | lake | [`sink::parquet`], [`lake`] | rows → Hive-partitioned Parquet (zstd; Snappy for small ingest files) on a folder or an object store ([`lake::root`]); the exactly-once, fenced commit protocol |
//! | dead letters | [`sink::dlq`] | every rejection, with its reason, on `<topic>.dlq` |
//! | alerts | [`analytics::alerts`], [`sink::alerts`] | each micro-batch's accepted bad reviews through `queries/alerts/*.sql`, to the `alerts` topic before the batch commits |
//! | engine | [`engine`] | [`engine::run()`] — the whole job over every configured stream (run loop, state per (stream, partition), commit, recovery), driven by the CLI, the demo and the tests |
//! | offline | [`offline`] | the same stages and protocol over an NDJSON file (`ingest --from-file`) |
//! | analytics | [`analytics`] | DataFusion over the lake (`queries/*.sql`): rankings, hotspots, fraud, default evaluations, the closed loop of bad reviews |
//! | policy | [`policy`] | region policies (deadlines, default evaluations, revisits) and the official working-day calendar, as data |
//!
//! Around them: [`cli`] and [`commands`] (the command line), [`config`] (typed TOML config),
//! [`telemetry`] (counters and logging), [`parallel`] (bursts of work over every core), [`region`] (division codes, versioned data), [`tags`]
//! (evaluation tag codes and meanings),
//! [`generate`] (a realistic province for tests and benchmarks), [`demo`] (the embedded default).

pub mod analytics;
pub mod cli;
pub mod commands;
pub mod config;
pub mod decode;
pub mod demo;
pub mod engine;
pub mod generate;
pub mod lake;
pub mod offline;
pub mod parallel;
pub mod policy;
pub mod region;
pub mod retry;
pub mod sink;
pub mod source;
pub mod stream;
pub mod tags;
pub mod telemetry;
pub mod transform;
