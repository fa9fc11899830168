//! A stream is a value the engine runs: a topic's messages, how each one is decoded, validated and
//! keyed for dedup, and the lake table its rows go to.
//!
//! The engine ([`crate::engine`]) knows nothing of evaluations, cases or workflow events: it admits
//! messages by position, hands runs of them to [`AnyStream::prepare_part`], decides dedup in offset
//! order with the [`Candidate`]s it gets back, has the rows of what dedup kept built
//! ([`BuildRows`]), and commits them through the lake's protocol.
//! Recovery rebuilds a partition's dedup state with the stream's [`DedupRule`]. A new stream is a
//! new module implementing [`Stream`], listed in [`configured`].
//!
//! | stream | module | table |
//! |---|---|---|
//! | evaluations | [`evaluations`] ([`crate::transform::Processor`]) | `evaluations` |
//! | cases | [`cases`] | `cases` |
//! | workflow | [`workflow`] | `workflow` |

pub mod cases;
pub mod evaluations;
pub mod workflow;

use std::sync::Arc;

use arrow::array::RecordBatch;

use crate::config::IngestConfig;
use crate::decode::Rejection;
use crate::sink::parquet::{PartitionKey, TableRows};
use crate::transform::{Candidate, Message, Processor};

/// A stream a run consumes: its topic, its dead-letter topic and its stages.
pub struct Configured {
    pub topic: String,
    pub dlq_topic: String,
    pub stream: Arc<dyn AnyStream>,
}

/// The streams an ingest configuration runs, evaluations first. `reviews` is the workflow stream's
/// registry of bad reviews (loaded from the lake), when the workflow is read.
pub fn configured(
    config: &IngestConfig,
    root: &crate::lake::LakeRoot,
    reviews: Option<Arc<workflow::BadReviews>>,
) -> Vec<Configured> {
    let mut processor = Processor::from_config(config);
    if let Some(reviews) = &reviews {
        processor = processor.registering(reviews.clone());
    }
    let mut streams = vec![Configured {
        topic: config.kafka.topic.clone(),
        dlq_topic: config.kafka.dlq_topic(),
        stream: Arc::new(processor),
    }];
    if let Some(topic) = &config.streams.cases_topic {
        streams.push(Configured {
            topic: topic.clone(),
            dlq_topic: format!("{topic}.dlq"),
            stream: Arc::new(cases::Cases::from_config(config)),
        });
    }
    if let (Some(topic), Some(reviews)) = (&config.streams.workflow_topic, reviews) {
        streams.push(Configured {
            topic: topic.clone(),
            dlq_topic: format!("{topic}.dlq"),
            stream: Arc::new(
                workflow::Workflow::new(config.validation.clone(), reviews).reloading(Arc::new(
                    workflow::Reload::new(
                        root.clone(),
                        config.dedup.window_days,
                        // Another instance's reviews are in the lake after its next flush.
                        config
                            .lake
                            .flush_interval
                            .max(std::time::Duration::from_secs(30)),
                    ),
                )),
            ),
        });
    }
    streams
}

/// One kind of input: its rows, its validation and its dedup rule. Implemented per stream; the
/// engine sees it as [`AnyStream`].
///
/// A message goes through it in two steps, so that a row is built only for a message dedup keeps:
/// [`Stream::check`] (on any thread, before dedup) and [`Stream::push`] (after dedup, for the kept
/// ones, grouped by Hive partition).
pub trait Stream: Send + Sync + 'static {
    /// The rows of a batch, built from the kept messages.
    type Rows: TableRows;

    /// A message that passed validation: what its row needs, held until dedup has decided.
    type Valid<'a>: Send;

    /// The lake table (and the stream's name in logs and metrics).
    fn table(&self) -> &'static str;

    /// How recovery reads the dedup state back from the table.
    fn dedup(&self) -> DedupRule;

    /// Empty rows for about `capacity` messages.
    fn rows(&self, capacity: usize) -> Self::Rows;

    /// Whether runs may be prepared on several threads at once. A stream whose validation depends
    /// on the messages before it (the workflow's order of steps) says no: its runs are prepared in
    /// offset order.
    fn parallel(&self) -> bool {
        true
    }

    /// Decodes, validates and keys one message, or says why it is rejected.
    fn check<'a>(
        &self,
        message: &Message<'a>,
        partition: i32,
        now_us: i64,
    ) -> Result<(Candidate, Self::Valid<'a>), Rejection>;

    /// The Hive partition of a valid message's row.
    fn partition_of(&self, valid: &Self::Valid<'_>) -> PartitionKey;

    /// Appends the row of a message dedup kept.
    fn push(&self, valid: Self::Valid<'_>, rows: &mut Self::Rows);
}

/// A dedup entry: key, fingerprint, day.
pub type DedupEntry = (u64, u64, u16);

/// How a table's rows give back their dedup entries `(key, fingerprint, day)` at recovery: the
/// columns to decode, and the function that reads them.
#[derive(Debug, Clone, Copy)]
pub struct DedupRule {
    pub columns: &'static [&'static str],
    /// Appends the entries of `batch` (projected to `columns`) whose files are of `day`, or names
    /// what is missing.
    pub entries: fn(&RecordBatch, u16, &mut Vec<DedupEntry>) -> Result<(), String>,
}

/// A text column of a batch a [`DedupRule`] reads, or the one line saying which is missing.
pub fn text_column<'a>(
    batch: &'a RecordBatch,
    name: &str,
) -> Result<&'a arrow::array::StringArray, String> {
    use arrow::array::AsArray;
    batch
        .column_by_name(name)
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(|| format!("missing dedup column {name} (text)"))
}

/// A primitive column of a batch a [`DedupRule`] reads, or the one line saying which is missing.
pub fn primitive_column<'a, T: arrow::datatypes::ArrowPrimitiveType>(
    batch: &'a RecordBatch,
    name: &str,
) -> Result<&'a arrow::array::PrimitiveArray<T>, String> {
    use arrow::array::AsArray;
    batch
        .column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<T>())
        .ok_or_else(|| format!("missing dedup column {name} ({})", T::DATA_TYPE))
}

/// What [`AnyStream::prepare_part`] made of a run of one partition's messages: per message, its
/// candidate or rejection, and the valid ones waiting for dedup's decision.
pub struct Prepared<'a> {
    pub results: Vec<Result<Candidate, Rejection>>,
    pub valid: Box<dyn BuildRows + 'a>,
}

/// The valid messages of a prepared run, whatever their stream.
pub trait BuildRows: Send {
    /// The rows of the messages `keep` keeps (one flag per valid message, in offset order), grouped
    /// by Hive partition in partition order, and in offset order within each partition.
    fn build(self: Box<Self>, keep: &[bool]) -> Box<dyn TableRows>;
}

/// A [`Stream`] as the engine holds it, whatever its rows.
pub trait AnyStream: Send + Sync + 'static {
    fn table(&self) -> &'static str;
    fn dedup(&self) -> DedupRule;
    fn parallel(&self) -> bool;
    /// [`Stream::check`] for each message of a run.
    fn prepare_part<'a>(
        &'a self,
        partition: i32,
        messages: &[Message<'a>],
        now_us: i64,
    ) -> Prepared<'a>;
}

impl<S: Stream> AnyStream for S {
    fn table(&self) -> &'static str {
        Stream::table(self)
    }

    fn dedup(&self) -> DedupRule {
        Stream::dedup(self)
    }

    fn parallel(&self) -> bool {
        Stream::parallel(self)
    }

    fn prepare_part<'a>(
        &'a self,
        partition: i32,
        messages: &[Message<'a>],
        now_us: i64,
    ) -> Prepared<'a> {
        let mut valid = Vec::with_capacity(messages.len());
        let results = messages
            .iter()
            .map(|message| {
                let (candidate, checked) = self.check(message, partition, now_us)?;
                valid.push(Some(checked));
                Ok(candidate)
            })
            .collect();
        Prepared {
            results,
            valid: Box::new(Pending {
                stream: self,
                valid,
            }),
        }
    }
}

/// The valid messages of one run of a stream (each taken out as its row is built).
struct Pending<'a, S: Stream> {
    stream: &'a S,
    valid: Vec<Option<S::Valid<'a>>>,
}

impl<S: Stream> BuildRows for Pending<'_, S> {
    fn build(self: Box<Self>, keep: &[bool]) -> Box<dyn TableRows> {
        let Pending { stream, mut valid } = *self;
        // Sorting (partition, position) pairs keeps offset order within each partition, so that
        // each partition's rows end up contiguous and the batch is split by slicing, not copying.
        let mut order: Vec<(PartitionKey, u32)> = valid
            .iter()
            .zip(keep)
            .enumerate()
            .filter_map(|(i, (v, keep))| {
                v.as_ref()
                    .filter(|_| *keep)
                    .map(|v| (stream.partition_of(v), i as u32))
            })
            .collect();
        order.sort_unstable();
        let mut rows = stream.rows(order.len());
        for (_, i) in order {
            if let Some(v) = valid[i as usize].take() {
                stream.push(v, &mut rows);
            }
        }
        Box::new(rows)
    }
}
