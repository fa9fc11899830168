//! The `evaluations` lake table: its Arrow schema, a row buffer that accepts validated evaluations
//! one at a time, the split of a buffer into Hive partitions (`dt=…/city=…`), and Parquet encoding.
//!
//! Partition columns (`dt`, `city`) are not stored in the files; readers take them from the path
//! (`hive_partitioning=true` in DuckDB, partition columns in DataFusion and Spark).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use arrow::array::{
    ArrayRef, BooleanBuilder, Int32Builder, Int64Builder, Int8Builder, ListBuilder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::transform::validate::{Evaluation, CST_OFFSET_SECONDS};

/// The lake table's name and folder under the lake root.
pub const EVALUATIONS_TABLE: &str = "evaluations";

/// Errors of building or encoding a batch.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("building an Arrow batch: {0}")]
    Arrow(#[from] ArrowError),
    #[error("encoding Parquet: {0}")]
    Parquet(#[from] ParquetError),
}

/// The Arrow schema of `evaluations` files.
pub fn evaluations_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
            Arc::new(Schema::new(vec![
                text("project_no", false),
                Field::new("assess_number", DataType::Int8, false),
                Field::new("satisfaction", DataType::Int8, false),
                Field::new("bad_review", DataType::Boolean, false),
                text("channel", false),
                Field::new("channel_code", DataType::Int8, false),
                text("area_code", false),
                text("province_code", false),
                text("city_code", true),
                text("county_code", true),
                text("township_code", true),
                text("dept_code", false),
                text("dept_name", true),
                text("task_code", false),
                text("task_name", false),
                text("staff_id", true),
                text("staff_name", true),
                Field::new(
                    "tags",
                    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                    false,
                ),
                text("text", true),
                Field::new(
                    "assessed_at",
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                    false,
                ),
                text("evaluator_kind", false),
                text("evaluator_key", true),
                Field::new("anonymous", DataType::Boolean, false),
                Field::new("event_fingerprint", DataType::Int64, false),
                Field::new("kafka_partition", DataType::Int32, false),
                Field::new("kafka_offset", DataType::Int64, false),
            ]))
        })
        .clone()
}

/// Where a row goes: its evaluation date (CST) and city.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionKey {
    /// Days since 1970-01-01 of the evaluation's date in China Standard Time.
    pub day: i32,
    /// The 6-digit `city=` value.
    pub city: [u8; 6],
}

impl PartitionKey {
    pub fn new(assessed_at_us: i64, city: &str) -> Self {
        let mut digits = [b'0'; 6];
        let len = city.len().min(6);
        digits[..len].copy_from_slice(&city.as_bytes()[..len]);
        Self {
            day: cst_day(assessed_at_us),
            city: digits,
        }
    }

    pub fn from_digits(assessed_at_us: i64, city: [u8; 6]) -> Self {
        Self {
            day: cst_day(assessed_at_us),
            city,
        }
    }

    /// `dt=2026-11-22/city=410300`
    pub fn path(&self) -> String {
        format!(
            "dt={}/city={}",
            format_day(self.day),
            std::str::from_utf8(&self.city).unwrap_or("000000")
        )
    }
}

/// Days since 1970-01-01 of the CST date of a UTC instant.
pub fn cst_day(utc_us: i64) -> i32 {
    let seconds = utc_us.div_euclid(1_000_000) + CST_OFFSET_SECONDS;
    i32::try_from(seconds.div_euclid(86_400)).unwrap_or(i32::MAX)
}

/// `yyyy-mm-dd` of a day number.
pub fn format_day(day: i32) -> String {
    chrono::DateTime::from_timestamp(i64::from(day) * 86_400, 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "1970-01-01".into())
}

/// Parses `yyyy-mm-dd` into a day number.
pub fn parse_day(text: &str) -> Option<i32> {
    let date = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    i32::try_from(
        date.signed_duration_since(chrono::NaiveDate::default())
            .num_days(),
    )
    .ok()
}

/// Rows of `evaluations` being accumulated for one flush.
pub struct EvaluationRows {
    project_no: StringBuilder,
    assess_number: Int8Builder,
    satisfaction: Int8Builder,
    bad_review: BooleanBuilder,
    channel: StringBuilder,
    channel_code: Int8Builder,
    area_code: StringBuilder,
    province_code: StringBuilder,
    city_code: StringBuilder,
    county_code: StringBuilder,
    township_code: StringBuilder,
    dept_code: StringBuilder,
    dept_name: StringBuilder,
    task_code: StringBuilder,
    task_name: StringBuilder,
    staff_id: StringBuilder,
    staff_name: StringBuilder,
    tags: ListBuilder<StringBuilder>,
    text: StringBuilder,
    assessed_at: TimestampMicrosecondBuilder,
    evaluator_kind: StringBuilder,
    evaluator_key: StringBuilder,
    anonymous: BooleanBuilder,
    event_fingerprint: Int64Builder,
    kafka_partition: Int32Builder,
    kafka_offset: Int64Builder,
    partitions: Vec<PartitionKey>,
}

impl Default for EvaluationRows {
    fn default() -> Self {
        Self::new()
    }
}

impl EvaluationRows {
    pub fn new() -> Self {
        Self::with_capacity(1024)
    }

    /// Rows for about `rows` evaluations (bytes estimated per column), so that a batch of that size
    /// does not keep reallocating its buffers.
    pub fn with_capacity(rows: usize) -> Self {
        let text = |bytes_per_row: usize| StringBuilder::with_capacity(rows, rows * bytes_per_row);
        Self {
            project_no: text(24),
            assess_number: Int8Builder::with_capacity(rows),
            satisfaction: Int8Builder::with_capacity(rows),
            bad_review: BooleanBuilder::with_capacity(rows),
            channel: text(10),
            channel_code: Int8Builder::with_capacity(rows),
            area_code: text(12),
            province_code: text(6),
            city_code: text(6),
            county_code: text(6),
            township_code: text(9),
            dept_code: text(18),
            dept_name: text(30),
            task_code: text(32),
            task_name: text(30),
            staff_id: text(8),
            staff_name: text(9),
            tags: ListBuilder::with_capacity(StringBuilder::with_capacity(rows, rows * 4), rows),
            text: text(40),
            assessed_at: TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            evaluator_kind: text(14),
            evaluator_key: text(64),
            anonymous: BooleanBuilder::with_capacity(rows),
            event_fingerprint: Int64Builder::with_capacity(rows),
            kafka_partition: Int32Builder::with_capacity(rows),
            kafka_offset: Int64Builder::with_capacity(rows),
            partitions: Vec::with_capacity(rows),
        }
    }

    pub fn len(&self) -> usize {
        self.partitions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }

    /// Appends one accepted evaluation.
    pub fn push(
        &mut self,
        e: &Evaluation<'_>,
        evaluator_key: Option<&str>,
        fingerprint: u64,
        kafka_partition: i32,
        kafka_offset: i64,
    ) {
        let city = e.area.city_digits();
        self.partitions.push(PartitionKey::from_digits(
            e.assessed_at_us,
            e.area.city_partition_digits().bytes(),
        ));
        self.project_no.append_value(&e.project_no);
        self.assess_number
            .append_value(e.assess_number.code() as i8);
        self.satisfaction.append_value(e.satisfaction.level() as i8);
        self.bad_review.append_value(e.satisfaction.is_bad_review());
        self.channel.append_value(e.channel.name());
        self.channel_code.append_value(e.channel.code() as i8);
        self.area_code.append_value(e.area.as_str());
        self.province_code
            .append_value(e.area.province_digits().as_str());
        self.city_code
            .append_option(city.as_ref().map(|c| c.as_str()));
        self.county_code.append_option(e.area.county_str());
        self.township_code.append_option(e.area.township_str());
        self.dept_code.append_value(&e.dept_code);
        self.dept_name.append_option(e.dept_name.as_deref());
        self.task_code.append_value(&e.task_code);
        self.task_name.append_value(&e.task_name);
        self.staff_id.append_option(e.staff_id.as_deref());
        self.staff_name.append_option(e.staff_name.as_deref());
        let mut digits = itoa::Buffer::new();
        for tag in &e.tags {
            self.tags.values().append_value(digits.format(*tag));
        }
        self.tags.append(true);
        self.text.append_option(e.text.as_deref());
        self.assessed_at.append_value(e.assessed_at_us);
        self.evaluator_kind.append_value(e.evaluator_kind.name());
        self.evaluator_key.append_option(evaluator_key);
        self.anonymous.append_value(e.anonymous);
        // Stored as the same 64 bits, signed, because Spark and Trino have no unsigned 64-bit type.
        self.event_fingerprint.append_value(fingerprint as i64);
        self.kafka_partition.append_value(kafka_partition);
        self.kafka_offset.append_value(kafka_offset);
    }

    /// Finishes the buffer into one batch per Hive partition, in partition order.
    pub fn finish(self) -> Result<Vec<(PartitionKey, RecordBatch)>, TableError> {
        finish_parts(vec![Box::new(self)])
    }

    /// The rows as one batch, whatever their Hive partitions (the alert rules' micro-batch).
    pub fn into_batch(self) -> Result<RecordBatch, TableError> {
        self.finish_rows().map(|(batch, _)| batch)
    }

    /// The rows as one batch (no copy: the builders' buffers move into it), with each row's Hive
    /// partition.
    fn finish_rows(mut self) -> Result<(RecordBatch, Vec<PartitionKey>), TableError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.project_no.finish()),
            Arc::new(self.assess_number.finish()),
            Arc::new(self.satisfaction.finish()),
            Arc::new(self.bad_review.finish()),
            Arc::new(self.channel.finish()),
            Arc::new(self.channel_code.finish()),
            Arc::new(self.area_code.finish()),
            Arc::new(self.province_code.finish()),
            Arc::new(self.city_code.finish()),
            Arc::new(self.county_code.finish()),
            Arc::new(self.township_code.finish()),
            Arc::new(self.dept_code.finish()),
            Arc::new(self.dept_name.finish()),
            Arc::new(self.task_code.finish()),
            Arc::new(self.task_name.finish()),
            Arc::new(self.staff_id.finish()),
            Arc::new(self.staff_name.finish()),
            Arc::new(self.tags.finish()),
            Arc::new(self.text.finish()),
            Arc::new(self.assessed_at.finish()),
            Arc::new(self.evaluator_kind.finish()),
            Arc::new(self.evaluator_key.finish()),
            Arc::new(self.anonymous.finish()),
            Arc::new(self.event_fingerprint.finish()),
            Arc::new(self.kafka_partition.finish()),
            Arc::new(self.kafka_offset.finish()),
        ];
        let batch = RecordBatch::try_new(evaluations_schema(), columns)?;
        Ok((batch, self.partitions))
    }
}

/// Rows of serde values as one batch of `schema`, by field name (arrow-json's serde decoder): for
/// the tables whose rows are few enough that a struct per row is the clearest way to build them
/// (cases, workflow, the derived tables of the closed loop).
pub fn serialize_rows<S: serde::Serialize>(
    schema: &SchemaRef,
    rows: &[S],
) -> Result<RecordBatch, ArrowError> {
    let mut decoder = arrow::json::ReaderBuilder::new(schema.clone())
        .with_batch_size(rows.len().max(1))
        .build_decoder()?;
    decoder.serialize(rows)?;
    Ok(decoder
        .flush()?
        .unwrap_or_else(|| RecordBatch::new_empty(schema.clone())))
}

/// The rows of one table as a stream builds them: each row with the Hive partition it belongs to.
pub trait TableRows: Send + Sync + 'static {
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows as one batch, with each row's Hive partition.
    fn finish_batch(self: Box<Self>) -> Result<(RecordBatch, Vec<PartitionKey>), TableError>;
}

impl TableRows for EvaluationRows {
    fn len(&self) -> usize {
        EvaluationRows::len(self)
    }

    fn finish_batch(self: Box<Self>) -> Result<(RecordBatch, Vec<PartitionKey>), TableError> {
        self.finish_rows()
    }
}

/// Finishes several buffers into one batch per Hive partition, in partition order: the files of
/// one commit, whatever number of threads built the rows ([`group_parts`], then each partition's
/// slices concatenated).
pub fn finish_parts(
    parts: Vec<Box<dyn TableRows>>,
) -> Result<Vec<(PartitionKey, RecordBatch)>, TableError> {
    group_parts(parts)?
        .into_iter()
        .map(|(key, slices)| Ok((key, concat_slices(slices)?)))
        .collect()
}

/// Splits several buffers' rows by Hive partition, in partition order, without copying a value:
/// each partition's rows as slices of the buffers' batches, in buffer order. Each buffer's rows of
/// one partition are expected to be contiguous (see [`crate::stream::BuildRows`]).
pub fn group_parts(
    parts: Vec<Box<dyn TableRows>>,
) -> Result<Vec<(PartitionKey, Vec<RecordBatch>)>, TableError> {
    let mut groups: BTreeMap<PartitionKey, Vec<RecordBatch>> = BTreeMap::new();
    for rows in parts {
        if rows.is_empty() {
            continue;
        }
        let (batch, keys) = rows.finish_batch()?;
        let mut start = 0;
        for run in keys.chunk_by(|a, b| a == b) {
            groups
                .entry(run[0])
                .or_default()
                .push(batch.slice(start, run.len()));
            start += run.len();
        }
    }
    Ok(groups.into_iter().collect())
}

/// One partition's slices (from [`group_parts`], never empty) as one batch: a bulk copy per
/// column, or none for a single slice.
pub fn concat_slices(slices: Vec<RecordBatch>) -> Result<RecordBatch, TableError> {
    match slices.as_slice() {
        [] => Err(ArrowError::InvalidArgumentError("a partition without rows".into()).into()),
        [one] => Ok(one.clone()),
        [first, ..] => Ok(arrow::compute::concat_batches(&first.schema(), &slices)?),
    }
}

/// The files of one commit, one per Hive partition, open while rows come in: each
/// [`append`](OpenFiles::append) encodes every partition's rows as one more row group of its file
/// (on every core), so a commit that covers many flushes of rows holds their encoded bytes, not
/// the rows; [`finish`](OpenFiles::finish) writes the footers. A file's codec is chosen by its first
/// row group ([`ingest_compression`]: zstd's cost is per page, and a row group's pages are as small
/// as its rows are few). A flush of the Kafka path is one append; an offline run appends every
/// batch of lines until its files are large enough to commit.
pub struct OpenFiles {
    zstd_level: i32,
    files: BTreeMap<PartitionKey, ArrowWriter<Vec<u8>>>,
    rows: u64,
}

impl OpenFiles {
    pub fn new(zstd_level: i32) -> Self {
        Self {
            zstd_level,
            files: BTreeMap::new(),
            rows: 0,
        }
    }

    /// Rows appended so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Bytes of the row groups encoded so far (the footers come with [`finish`](Self::finish)).
    pub fn encoded_bytes(&self) -> usize {
        self.files.values().map(ArrowWriter::bytes_written).sum()
    }

    /// Encodes the parts' rows as one more row group of each of their partitions' files. Taken
    /// and given back by value: after an error the files are incomplete, and gone.
    pub fn append(mut self, parts: Vec<Box<dyn TableRows>>) -> Result<Self, TableError> {
        let level = self.zstd_level;
        let jobs: Vec<_> = group_parts(parts)?
            .into_iter()
            .map(|(key, slices)| {
                let open = self.files.remove(&key);
                (key, slices, open)
            })
            .collect();
        let appended = crate::parallel::in_parallel(
            jobs,
            crate::parallel::workers(),
            |(key, slices, open)| -> Result<_, TableError> {
                let batch = concat_slices(slices)?;
                let mut writer = match open {
                    Some(writer) => writer,
                    None => ArrowWriter::try_new(
                        Vec::with_capacity(batch.get_array_memory_size() / 4),
                        batch.schema(),
                        Some(properties(ingest_compression(batch.num_rows(), level)?)),
                    )?,
                };
                writer.write(&batch)?;
                writer.flush()?;
                Ok((key, writer, batch.num_rows() as u64))
            },
        );
        for result in appended {
            let (key, writer, rows) = result?;
            self.rows += rows;
            self.files.insert(key, writer);
        }
        Ok(self)
    }

    /// The finished files, in partition order.
    pub fn finish(self) -> Result<Vec<(PartitionKey, Bytes)>, TableError> {
        self.files
            .into_iter()
            .map(|(key, writer)| Ok((key, Bytes::from(writer.into_inner()?))))
            .collect()
    }
}

/// Columns of the lake's tables whose values are (nearly) unique per row: a dictionary would only
/// grow until it gave up, costing time to intern every value and bytes for the indices. They are
/// written plain (zstd still compresses them).
const UNIQUE_COLUMNS: [&str; 6] = [
    "project_no",
    "text",
    "evaluator_key",
    "applicant_key",
    "event_fingerprint",
    "kafka_offset",
];

/// Free text: min/max statistics of it serve no query, and computing them compares every value.
const UNFILTERED_COLUMNS: [&str; 1] = ["text"];

/// Ingest files of fewer rows than this are Snappy-compressed, not zstd: a batch that fans out to
/// many `dt × city` folders (a backlog spread over days, a quiet hour) writes hundreds of files
/// of a few hundred rows, and zstd's fixed cost per page (a fresh context, entropy tables built for
/// every page) then dominates the whole run. Measured with callgrind on 100 000 events spread over
/// 20 days, 1 428 files: zstd-1 8.60 G instructions and 24.3 MB, Snappy 6.98 G (−19 %) and
/// 29.4 MB (+21 %); see benches/RESULTS.md §15. Compaction merges a folder's files into one zstd
/// file, so the extra bytes last only in a folder that received a single small file.
pub const SMALL_FILE_ROWS: usize = 4096;

/// The codec of an ingest file of `rows` rows (see [`SMALL_FILE_ROWS`]).
pub fn ingest_compression(rows: usize, zstd_level: i32) -> Result<Compression, TableError> {
    if rows < SMALL_FILE_ROWS {
        Ok(Compression::SNAPPY)
    } else {
        zstd(zstd_level)
    }
}

/// zstd at `level`, or the error of a level zstd does not have.
fn zstd(level: i32) -> Result<Compression, TableError> {
    Ok(Compression::ZSTD(ZstdLevel::try_new(level)?))
}

/// The properties of every zstd-compressed Parquet file of the lake (compaction and the derived
/// tables; ingest files choose their codec with [`ingest_compression`]).
pub fn writer_properties(zstd_level: i32) -> Result<WriterProperties, TableError> {
    Ok(properties(zstd(zstd_level)?))
}

/// Every file of every table alike, but for the codec (a column name a table does not have is
/// ignored).
fn properties(compression: Compression) -> WriterProperties {
    let mut builder = WriterProperties::builder()
        .set_compression(compression)
        .set_created_by(concat!("haochaping ", env!("CARGO_PKG_VERSION")).into());
    for column in UNIQUE_COLUMNS {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(column), false);
    }
    for column in UNFILTERED_COLUMNS {
        builder = builder
            .set_column_statistics_enabled(ColumnPath::from(column), EnabledStatistics::None);
    }
    builder.build()
}

/// Encodes one batch as a zstd-compressed Parquet file (a derived table's, or a test's).
pub fn encode_parquet(batch: &RecordBatch, zstd_level: i32) -> Result<Bytes, TableError> {
    encode_with(batch, writer_properties(zstd_level)?)
}

/// Encodes one ingest file: zstd, or Snappy when it is small ([`SMALL_FILE_ROWS`]).
pub fn encode_ingest_file(batch: &RecordBatch, zstd_level: i32) -> Result<Bytes, TableError> {
    let compression = ingest_compression(batch.num_rows(), zstd_level)?;
    encode_with(batch, properties(compression))
}

fn encode_with(batch: &RecordBatch, properties: WriterProperties) -> Result<Bytes, TableError> {
    let mut buffer = Vec::with_capacity(batch.get_array_memory_size() / 4);
    let mut writer = ArrowWriter::try_new(&mut buffer, batch.schema(), Some(properties))?;
    writer.write(batch)?;
    writer.close()?;
    Ok(Bytes::from(buffer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_path_uses_the_cst_date() {
        // 2026-11-21 16:30 UTC is 2026-11-22 00:30 CST.
        let us = 1_795_278_600_000_000;
        let key = PartitionKey::new(us, "410300");
        assert_eq!(key.path(), "dt=2026-11-22/city=410300");
        // 15:59:59 UTC is still the 21st... no: 23:59:59 CST of the 21st.
        let key = PartitionKey::new(us - 1_800_000_000 - 1_000_000, "350100");
        assert_eq!(key.path(), "dt=2026-11-21/city=350100");
        assert_eq!(parse_day("2026-11-22"), Some(key.day + 1));
        assert_eq!(format_day(0), "1970-01-01");
        assert_eq!(cst_day(-1), 0, "1970-01-01 07:59:59 CST");
    }

    /// A province's generated day of evaluations, a processor with the default rules, and now.
    fn a_province_day() -> (crate::generate::Generator, crate::transform::Processor, i64) {
        let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        let generator =
            crate::generate::Generator::new(crate::generate::GeneratorConfig::new("41", day))
                .unwrap();
        let processor = crate::transform::Processor::new(
            crate::transform::validate::ValidationRules::default(),
            crate::transform::identity::EvaluatorKeyer::new(b"0123456789abcdef"),
        );
        (generator, processor, chrono::Utc::now().timestamp_micros())
    }

    /// The rows `messages` give, built in parts on two threads as a flush takes them, and how many
    /// were kept.
    fn built_parts<'m>(
        processor: &'m crate::transform::Processor,
        messages: &'m [crate::transform::Message<'m>],
        now: i64,
        dedup: &mut crate::transform::dedup::DedupState,
    ) -> (Vec<Box<dyn TableRows>>, usize) {
        let stats = crate::telemetry::Stats::default();
        crate::transform::process_run(processor, 0, messages, now, 2, dedup, &stats, |_, _| {})
    }

    /// A Parquet file's rows as one batch of `like`'s schema.
    fn read_back(bytes: Bytes, like: &RecordBatch) -> RecordBatch {
        let read: Vec<RecordBatch> =
            parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(bytes, 8192)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
        arrow::compute::concat_batches(&like.schema(), &read).unwrap()
    }

    #[test]
    fn unique_columns_are_plain_and_free_text_has_no_statistics() {
        use parquet::basic::Encoding;
        use parquet::file::reader::{FileReader, SerializedFileReader};

        let (generator, processor, now) = a_province_day();
        let mut rows = EvaluationRows::with_capacity(2000);
        for (offset, event) in generator.take(2000).enumerate() {
            // The generator's few invalid events are rejected; the rest make the batch.
            let _ = processor.append_row(&event.payload, 0, offset as i64, now, &mut rows);
        }
        let (_, batch) = rows
            .finish()
            .unwrap()
            .into_iter()
            .max_by_key(|(_, batch)| batch.num_rows())
            .unwrap();
        assert!(batch.num_rows() > 50, "{} rows", batch.num_rows());
        let bytes = encode_parquet(&batch, 1).unwrap();

        let reader = SerializedFileReader::new(bytes.clone()).unwrap();
        let group = reader.metadata().row_group(0);
        let column = |name: &str| {
            (0..group.num_columns())
                .map(|i| group.column(i))
                .find(|c| c.column_path().string() == name)
                .unwrap_or_else(|| panic!("column {name}"))
        };
        let dictionary = |name: &str| {
            column(name)
                .encodings()
                .any(|e| matches!(e, Encoding::RLE_DICTIONARY | Encoding::PLAIN_DICTIONARY))
        };
        for unique in [
            "project_no",
            "text",
            "evaluator_key",
            "event_fingerprint",
            "kafka_offset",
        ] {
            assert!(!dictionary(unique), "{unique} is written plain");
        }
        for repeated in ["city_code", "dept_code", "channel", "task_code"] {
            assert!(dictionary(repeated), "{repeated} keeps its dictionary");
        }
        assert!(column("text").statistics().is_none());
        assert!(column("project_no").statistics().is_some());

        // And the file reads back as written.
        assert_eq!(read_back(bytes, &batch), batch);
    }

    #[test]
    fn small_ingest_files_are_snappy_and_the_rest_zstd() {
        let zstd = |level| zstd(level).unwrap();
        for (rows, level, expected) in [
            (0, 1, Compression::SNAPPY),
            (1, 1, Compression::SNAPPY),
            (SMALL_FILE_ROWS - 1, 3, Compression::SNAPPY),
            (SMALL_FILE_ROWS, 1, zstd(1)),
            (SMALL_FILE_ROWS, 3, zstd(3)),
            (1_000_000, 1, zstd(1)),
        ] {
            assert_eq!(
                ingest_compression(rows, level).unwrap(),
                expected,
                "{rows} rows"
            );
        }
        // A level zstd does not have is an error for a file zstd would write.
        assert!(ingest_compression(SMALL_FILE_ROWS, 99).is_err());
    }

    #[test]
    fn ingest_files_carry_their_codec_and_read_back_as_written() {
        use parquet::file::reader::{FileReader, SerializedFileReader};

        let (generator, processor, now) = a_province_day();
        let mut rows = EvaluationRows::with_capacity(6000);
        for (offset, event) in generator.take(6000).enumerate() {
            let _ = processor.append_row(&event.payload, 0, offset as i64, now, &mut rows);
        }
        // One day of one province: every row in one file once the city is ignored.
        let batches: Vec<RecordBatch> =
            rows.finish().unwrap().into_iter().map(|(_, b)| b).collect();
        let all = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
        assert!(all.num_rows() >= SMALL_FILE_ROWS, "{} rows", all.num_rows());
        let small = all.slice(0, 100);
        for (batch, expected) in [(&small, Compression::SNAPPY), (&all, zstd(1).unwrap())] {
            let bytes = encode_ingest_file(batch, 1).unwrap();
            let reader = SerializedFileReader::new(bytes.clone()).unwrap();
            let group = reader.metadata().row_group(0);
            for i in 0..group.num_columns() {
                assert_eq!(
                    group.column(i).compression(),
                    expected,
                    "{} rows",
                    batch.num_rows()
                );
            }
            assert_eq!(&read_back(bytes, batch), batch);
        }
    }

    #[test]
    fn kept_rows_land_once_in_their_partition_in_offset_order() {
        use arrow::array::AsArray;
        use arrow::datatypes::{Int64Type, TimestampMicrosecondType};

        let (generator, processor, now) = a_province_day();
        // 3 000 evaluations, then every third one again: redeliveries in later parts than their
        // originals, which dedup drops before any row is built.
        let events: Vec<_> = generator.take(3000).collect();
        let payloads: Vec<&[u8]> = events
            .iter()
            .map(|e| e.payload.as_slice())
            .chain(events.iter().step_by(3).map(|e| e.payload.as_slice()))
            .collect();
        let messages = crate::transform::Message::numbered(0, payloads);
        let mut dedup = crate::transform::dedup::DedupState::default();
        let stats = crate::telemetry::Stats::default();
        let mut expected = Vec::new();
        let mut decided = Vec::new();
        let prepared = crate::transform::prepare_parallel(&processor, &[(0, &messages)], now, 2);
        assert!(prepared.len() >= 2, "parts for two workers");
        for part in prepared {
            for (message, result) in part.messages.iter().zip(&part.results) {
                if result.is_ok() && message.offset < 3000 {
                    expected.push(message.offset);
                }
            }
            decided.push(part.decide(&mut dedup, &stats, |_, _| {}));
        }
        assert!(
            expected.len() > 2900,
            "{} valid evaluations",
            expected.len()
        );
        let parts = crate::transform::build_parallel(decided, 2);

        let batches = finish_parts(parts).unwrap();
        assert!(
            batches.len() > 10,
            "a province's day spreads over its cities"
        );
        assert!(
            batches.windows(2).all(|w| w[0].0 < w[1].0),
            "partition order"
        );
        let mut landed = Vec::new();
        for (key, batch) in &batches {
            let column = |name: &str| batch.column_by_name(name).unwrap().clone();
            let area = column("area_code");
            let at = column("assessed_at");
            let at = at.as_primitive::<TimestampMicrosecondType>();
            for (row, area) in area.as_string::<i32>().iter().enumerate() {
                assert_eq!(cst_day(at.value(row)), key.day);
                let area = area.unwrap();
                assert_eq!(
                    area.as_bytes()[..4],
                    key.city[..4],
                    "{area} in {}",
                    key.path()
                );
            }
            let offsets = column("kafka_offset");
            let offsets = offsets.as_primitive::<Int64Type>().values();
            assert!(offsets.windows(2).all(|w| w[0] < w[1]), "offset order kept");
            landed.extend(offsets.iter().copied());
        }
        landed.sort_unstable();
        assert_eq!(landed, expected);
    }

    /// A flush encodes each partition's slices where they are (`Lake::encode_parts`); the files
    /// must be the ones a whole concatenated batch gives, byte for byte, whatever the number of
    /// parts the rows were built in.
    #[test]
    fn encoding_the_parts_writes_the_files_of_the_concatenated_batches() {
        let (generator, processor, now) = a_province_day();
        let events: Vec<_> = generator.take(6000).collect();
        let messages =
            crate::transform::Message::numbered(0, events.iter().map(|e| e.payload.as_slice()));
        let parts = || {
            let mut dedup = crate::transform::dedup::DedupState::default();
            let (parts, kept) = built_parts(&processor, &messages, now, &mut dedup);
            assert!(
                parts.len() >= 2 && kept > 5800,
                "{} parts, {kept} rows",
                parts.len()
            );
            parts
        };
        let files = crate::lake::Lake::encode_parts(parts(), 1).unwrap();
        let expected: Vec<(PartitionKey, Bytes)> = finish_parts(parts())
            .unwrap()
            .into_iter()
            .map(|(key, batch)| (key, encode_ingest_file(&batch, 1).unwrap()))
            .collect();
        assert!(files.len() > 10, "a province's day spreads over its cities");
        assert_eq!(files.len(), expected.len());
        for ((key, file), (expected_key, expected_file)) in files.iter().zip(&expected) {
            assert_eq!(key, expected_key);
            assert!(file == expected_file, "{} differs", key.path());
        }
    }

    /// Rows appended to open files in several batches read back as the rows of the files one
    /// append of them all gives, in the same order; each file holds a row group per append that
    /// reached its partition, and its codec is the one its first row group chose.
    #[test]
    fn open_files_hold_a_row_group_per_append() {
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let (generator, processor, now) = a_province_day();
        let events: Vec<_> = generator.take(92_000).collect();
        let messages =
            crate::transform::Message::numbered(0, events.iter().map(|e| e.payload.as_slice()));
        // The same rows twice (a dedup state each): one copy to append, one to compare with.
        let mut dedup = [(); 2].map(|_| crate::transform::dedup::DedupState::default());
        let mut run =
            |copy: usize, messages| built_parts(&processor, messages, now, &mut dedup[copy]).0;
        // Three batches of lines: the first large enough for the largest cities' files to start
        // as zstd and the smaller ones' as Snappy, then a small one, which keeps each file's codec.
        let batches = [
            &messages[..90_000],
            &messages[90_000..90_600],
            &messages[90_600..],
        ];
        let mut open = OpenFiles::new(1);
        let mut all = Vec::new();
        let mut rows = 0;
        for messages in batches {
            let expected = finish_parts(run(1, messages)).unwrap();
            rows += expected
                .iter()
                .map(|(_, b)| b.num_rows() as u64)
                .sum::<u64>();
            all.extend(expected);
            open = open.append(run(0, messages)).unwrap();
        }
        assert!(rows > 90_000, "{rows} rows");
        assert_eq!(open.rows(), rows);
        let read = |bytes: &Bytes| {
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes.clone()).unwrap();
            let metadata = reader.metadata().clone();
            let batches: Vec<RecordBatch> = reader.build().unwrap().map(Result::unwrap).collect();
            (metadata, batches)
        };
        let files = open.finish().unwrap();
        assert!(files.len() > 10, "a province's day spreads over its cities");
        let mut codecs = BTreeMap::new();
        for (key, file) in &files {
            let appended: Vec<&RecordBatch> = all
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, b)| b)
                .collect();
            let (metadata, batches) = read(file);
            assert_eq!(metadata.num_row_groups(), appended.len(), "{}", key.path());
            let expected = ingest_compression(appended[0].num_rows(), 1).unwrap();
            for group in metadata.row_groups() {
                assert_eq!(group.column(0).compression(), expected, "{}", key.path());
            }
            *codecs.entry(format!("{expected:?}")).or_insert(0) += 1;
            let schema = appended[0].schema();
            let got = arrow::compute::concat_batches(&schema, &batches).unwrap();
            let want = arrow::compute::concat_batches(&schema, appended.iter().copied()).unwrap();
            assert_eq!(got, want, "{}", key.path());
        }
        assert_eq!(codecs.len(), 2, "both codecs chosen: {codecs:?}");
    }
}
