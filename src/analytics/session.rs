//! The one place that registers every lake table on a DataFusion session.
//!
//! | table | folder | partitions | filled by |
//! |---|---|---|---|
//! | `evaluations` | `evaluations/` | `dt`, `city` | ingest |
//! | `exclusions` | `tables/exclusions/` | — | the closed-loop review (复核); [`super::exclusions`] |
//! | `rankings` | `tables/rankings/` | `period_type`, `period` | [`super::rankings`] |
//! | `warnings` | `tables/warnings/` | — | [`super::rankings`] |
//! | `hotspots` | `tables/hotspots/` | — | [`super::hotspots`] |
//! | `fraud_signals` | `tables/fraud_signals/` | `period` | [`super::fraud`] |
//! | `regions` | (shipped division table) | — | reference: `level`, `code`, `name` |
//! | `tag_meanings` | (shipped tag table) | — | reference: `tag`, `level`, `meaning` |
//!
//! and the view `effective_evaluations` (`queries/effective_evaluations.sql`). Every table has a
//! fixed schema, so a lake without a table's folder yet answers with an empty table instead of an
//! error; partition columns are Utf8 and a filter on them prunes the listing.

use std::sync::{Arc, OnceLock};

use arrow::array::{Int8Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::TableProvider;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::region::{RegionLevel, RegionTable};
use crate::sink::parquet::{evaluations_schema, EVALUATIONS_TABLE};
use crate::stream::cases::{cases_schema, CASES_TABLE};
use crate::stream::workflow::{workflow_schema, WORKFLOW_TABLE};

use super::sql;
use crate::lake::LakeRoot;

/// Where derived tables live under the lake root.
pub const TABLES_FOLDER: &str = "tables";

/// A derived table's folder, relative to the lake root.
pub fn table_dir(table: &str) -> String {
    format!("{TABLES_FOLDER}/{table}")
}

/// The lake tables `haochaping query` can read, in the order `--help` lists them.
pub const LAKE_TABLES: [&str; 10] = [
    EVALUATIONS_TABLE,
    CASES_TABLE,
    WORKFLOW_TABLE,
    "bad_reviews",
    "default_evaluations",
    "exclusions",
    "rankings",
    "warnings",
    "hotspots",
    "fraud_signals",
];

fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn list_of(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", item, true)))
}

/// `default_evaluations` files (without the `month` partition column): the evaluation a finished
/// case nobody evaluated gets once its region's period has passed (see [`super::defaults`]).
pub fn default_evaluations_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
            Arc::new(Schema::new(vec![
                text("project_no", false),
                Field::new("satisfaction", DataType::Int8, false),
                text("level_name", false),
                // Always `system_default`.
                text("channel", false),
                Field::new("is_default", DataType::Boolean, false),
                text("task_code", false),
                text("task_name", false),
                text("dept_code", false),
                text("dept_name", true),
                text("area_code", false),
                text("province_code", false),
                text("city_code", true),
                text("county_code", true),
                // The applicant's keyed hash, as the evaluations' evaluator_key.
                text("evaluator_key", true),
                // service_finished | case_generated: what the period counted from.
                text("period_from", false),
                // The policy's period, e.g. "7 natural days".
                text("period", false),
                // The policy file that decided the level and the period.
                text("policy", false),
                Field::new("period_started_at", utc_micros(), false),
                // When the default was given: the end of the period (24:00 CST of its last day).
                Field::new("assessed_at", utc_micros(), false),
            ]))
        })
        .clone()
}

/// `bad_reviews`: one row per bad review with its policy, every deadline, when each step happened,
/// on time or late, and its state (see [`super::closed_loop`]).
pub fn bad_reviews_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
            let time = |name: &str| Field::new(name, utc_micros(), true);
            let flag = |name: &str| Field::new(name, DataType::Boolean, true);
            Arc::new(Schema::new(vec![
                text("project_no", false),
                Field::new("assess_number", DataType::Int8, false),
                Field::new("satisfaction", DataType::Int8, false),
                // The month (CST) the review was given: yyyy-mm.
                text("month", false),
                text("area_code", false),
                text("province_code", false),
                text("city_code", true),
                text("county_code", true),
                text("dept_code", false),
                text("dept_name", true),
                text("task_code", false),
                text("task_name", false),
                text("staff_id", true),
                text("channel", false),
                Field::new("given_at", utc_micros(), false),
                Field::new("real_name", DataType::Boolean, false),
                Field::new("complex", DataType::Boolean, false),
                // The policy file whose deadlines apply.
                text("policy", false),
                // open | rectified | revisited | excluded
                text("state", false),
                time("forward_by"),
                time("forwarded_at"),
                flag("forwarded_on_time"),
                time("first_contact_by"),
                time("contacted_at"),
                flag("contacted_on_time"),
                time("reply_by"),
                time("replied_at"),
                flag("replied_on_time"),
                time("rectify_by"),
                time("rectified_at"),
                flag("rectified_on_time"),
                time("report_back_by"),
                time("reported_back_at"),
                flag("reported_back_on_time"),
                time("escalate_deputy_at"),
                time("escalate_main_at"),
                time("revisit_due_at"),
                time("revisited_at"),
                Field::new("revisit_satisfaction", DataType::Int8, true),
                time("appealed_at"),
                text("appeal_decision", true),
                time("review_decided_at"),
                text("review_decision", true),
                Field::new("excluded", DataType::Boolean, false),
            ]))
        })
        .clone()
}

/// `exclusions`: reviews that drop out of every rate (a review found mistaken or malicious).
pub fn exclusions_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("project_no", DataType::Utf8, false),
                Field::new("assess_number", DataType::Int8, false),
                // mistaken (误评) | malicious (恶意差评) | other
                Field::new("reason", DataType::Utf8, false),
                Field::new("decided_at", utc_micros(), false),
            ]))
        })
        .clone()
}

/// `rankings` files (without the `period_type` and `period` partition columns).
pub fn rankings_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let int = |n: &str, nullable| Field::new(n, DataType::Int64, nullable);
            let float = |n: &str, nullable| Field::new(n, DataType::Float64, nullable);
            let text = |n: &str, nullable| Field::new(n, DataType::Utf8, nullable);
            Arc::new(Schema::new(vec![
                text("period_start", false),
                text("period_end", false),
                int("period_seq", false),
                text("entity_type", false),
                text("entity_id", false),
                text("entity_name", true),
                int("evaluations", false),
                int("good", false),
                int("bad", false),
                float("good_rate", false),
                float("bad_rate", false),
                int("good_rate_rank", true),
                int("bad_rate_rank", true),
                int("ranked_entities", false),
                int("previous_evaluations", false),
                float("previous_good_rate", true),
                float("previous_bad_rate", true),
                float("good_rate_change", true),
                float("bad_rate_change", true),
                int("previous_good_rate_rank", true),
                int("previous_bad_rate_rank", true),
            ]))
        })
        .clone()
}

/// `warnings`: one row per run of bottom ranks.
pub fn warnings_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let text = |n: &str, nullable| Field::new(n, DataType::Utf8, nullable);
            Arc::new(Schema::new(vec![
                text("warning_id", false),
                text("period_type", false),
                text("entity_type", false),
                text("entity_id", false),
                text("entity_name", true),
                text("first_period", false),
                text("last_period", false),
                Field::new("periods_in_row", DataType::Int64, false),
                Field::new("bottom_n", DataType::Int64, false),
                Field::new("bad_rate_ranks", list_of(DataType::Int64), true),
                Field::new("ranked_entities", list_of(DataType::Int64), true),
                Field::new("good_rates", list_of(DataType::Float64), true),
            ]))
        })
        .clone()
}

/// `hotspots`: the current bad-review concentrations (replaced whole at every refresh).
pub fn hotspots_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let text = |n: &str, nullable| Field::new(n, DataType::Utf8, nullable);
            let int = |n: &str| Field::new(n, DataType::Int64, false);
            Arc::new(Schema::new(vec![
                text("hotspot_id", false),
                text("rule", false),
                text("entity_type", false),
                text("entity_id", false),
                text("entity_name", true),
                text("window", false),
                Field::new("window_start", utc_micros(), false),
                Field::new("window_end", utc_micros(), false),
                int("evaluations"),
                int("bad_reviews"),
                Field::new("bad_rate", DataType::Float64, false),
                // own_28d, peers_28d or peers_window: what the window is compared with
                text("baseline", false),
                int("baseline_evaluations"),
                int("baseline_bad_reviews"),
                Field::new("baseline_bad_rate", DataType::Float64, false),
                Field::new("lift", DataType::Float64, true),
                // "207 无理由超过法定办理时间 ×3", most frequent first
                Field::new("top_tags", list_of(DataType::Utf8), false),
                // "推诿 ×3", most frequent first (jieba segmentation, stop words removed)
                Field::new("top_terms", list_of(DataType::Utf8), false),
                Field::new("refreshed_at", utc_micros(), false),
            ]))
        })
        .clone()
}

/// `fraud_signals` files (without the `period` partition column).
pub fn fraud_signals_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let text = |n: &str, nullable| Field::new(n, DataType::Utf8, nullable);
            let int = |n: &str| Field::new(n, DataType::Int64, false);
            Arc::new(Schema::new(vec![
                text("signal_id", false),
                text("signal", false),
                text("entity_type", false),
                text("entity_id", false),
                text("entity_name", true),
                Field::new("first_at", utc_micros(), false),
                Field::new("last_at", utc_micros(), false),
                int("span_seconds"),
                int("reviews"),
                int("distinct_evaluator_keys"),
                int("departments"),
                Field::new("evaluator_keys", list_of(DataType::Utf8), true),
            ]))
        })
        .clone()
}

/// A table's schema and Hive partition columns.
struct TableSpec {
    name: &'static str,
    /// Relative to the lake root.
    folder: String,
    schema: SchemaRef,
    partitions: &'static [&'static str],
}

fn specs() -> Vec<TableSpec> {
    vec![
        TableSpec {
            name: EVALUATIONS_TABLE,
            folder: EVALUATIONS_TABLE.to_owned(),
            schema: evaluations_schema(),
            partitions: &["dt", "city"],
        },
        TableSpec {
            name: CASES_TABLE,
            folder: CASES_TABLE.to_owned(),
            schema: cases_schema(),
            partitions: &["dt", "city"],
        },
        TableSpec {
            name: WORKFLOW_TABLE,
            folder: WORKFLOW_TABLE.to_owned(),
            schema: workflow_schema(),
            partitions: &["dt", "city"],
        },
        TableSpec {
            name: "bad_reviews",
            folder: table_dir("bad_reviews"),
            schema: bad_reviews_schema(),
            partitions: &[],
        },
        TableSpec {
            name: "default_evaluations",
            folder: table_dir("default_evaluations"),
            schema: default_evaluations_schema(),
            partitions: &["month"],
        },
        TableSpec {
            name: "exclusions",
            folder: table_dir("exclusions"),
            schema: exclusions_schema(),
            partitions: &[],
        },
        TableSpec {
            name: "rankings",
            folder: table_dir("rankings"),
            schema: rankings_schema(),
            partitions: &["period_type", "period"],
        },
        TableSpec {
            name: "warnings",
            folder: table_dir("warnings"),
            schema: warnings_schema(),
            partitions: &[],
        },
        TableSpec {
            name: "hotspots",
            folder: table_dir("hotspots"),
            schema: hotspots_schema(),
            partitions: &[],
        },
        TableSpec {
            name: "fraud_signals",
            folder: table_dir("fraud_signals"),
            schema: fraud_signals_schema(),
            partitions: &["period"],
        },
    ]
}

fn external(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

async fn table(
    lake_root: &LakeRoot,
    spec: &TableSpec,
) -> Result<Arc<dyn TableProvider>, DataFusionError> {
    if !lake_root
        .has_objects(&spec.folder)
        .await
        .map_err(external)?
    {
        // No folder yet: an empty table with the same columns, partition columns included.
        let mut fields: Vec<Field> = spec
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.extend(
            spec.partitions
                .iter()
                .map(|p| Field::new(*p, DataType::Utf8, false)),
        );
        let schema = Arc::new(Schema::new(fields));
        return Ok(Arc::new(MemTable::try_new(schema, vec![vec![]])?));
    }
    let url = ListingTableUrl::parse(
        lake_root
            .folder_url(&spec.folder)
            .map_err(external)?
            .as_str(),
    )?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(
            spec.partitions
                .iter()
                .map(|p| ((*p).to_owned(), DataType::Utf8))
                .collect(),
        );
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(spec.schema.clone());
    Ok(Arc::new(ListingTable::try_new(config)?))
}

/// The `regions` reference table: `level` (province, city, county, township), `code` as the lake
/// spells it at that level (6 digits, 9 for townships) and `name`.
fn regions_table() -> Result<MemTable, DataFusionError> {
    static BATCH: OnceLock<Result<RecordBatch, String>> = OnceLock::new();
    let batch = BATCH
        .get_or_init(|| {
            let table = RegionTable::shipped().map_err(|e| e.to_string())?;
            let mut levels = Vec::new();
            let mut codes = Vec::new();
            let mut names = Vec::new();
            for region in table.in_province("") {
                let code = region.code.as_str();
                let (level, digits) = match region.level {
                    RegionLevel::Province => ("province", 6),
                    RegionLevel::City => ("city", 6),
                    RegionLevel::County => ("county", 6),
                    RegionLevel::Township => ("township", 9),
                    RegionLevel::Village => continue,
                };
                levels.push(level);
                codes.push(code.get(..digits).unwrap_or(code).to_owned());
                names.push(region.name.clone());
            }
            RecordBatch::try_new(
                regions_schema(),
                vec![
                    Arc::new(StringArray::from(levels)),
                    Arc::new(StringArray::from(codes)),
                    Arc::new(StringArray::from(names)),
                ],
            )
            .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(DataFusionError::Execution)?;
    MemTable::try_new(batch.schema(), vec![vec![batch]])
}

fn regions_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("level", DataType::Utf8, false),
        Field::new("code", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
    ]))
}

/// The `tag_meanings` reference table: `tag` (code as stored in `evaluations.tags`), `level`,
/// `meaning`.
fn tag_meanings_table() -> Result<MemTable, DataFusionError> {
    let tags = crate::tags::TAGS;
    let schema = Arc::new(Schema::new(vec![
        Field::new("tag", DataType::Utf8, false),
        Field::new("level", DataType::Int8, false),
        Field::new("meaning", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(
                tags.iter().map(|(code, _)| code.to_string()),
            )),
            Arc::new(Int8Array::from_iter_values(
                tags.iter().map(|(code, _)| (code / 100) as i8),
            )),
            Arc::new(StringArray::from_iter_values(
                tags.iter().map(|(_, meaning)| *meaning),
            )),
        ],
    )?;
    MemTable::try_new(schema, vec![vec![batch]])
}

/// Registers only `evaluations` (partitioned by `dt`, `city`) of a lake on a session (for callers
/// with a session of their own, such as the alert rules).
pub async fn register_lake(
    ctx: &SessionContext,
    lake_root: &LakeRoot,
) -> Result<(), DataFusionError> {
    let spec = specs()
        .into_iter()
        .find(|s| s.name == EVALUATIONS_TABLE)
        .ok_or_else(|| DataFusionError::Internal("no evaluations table spec".into()))?;
    lake_root.register(ctx);
    ctx.register_table(spec.name, table(lake_root, &spec).await?)?;
    Ok(())
}

/// A session over a lake with every table, the reference tables and the `effective_evaluations`
/// view registered.
pub async fn open(lake_root: &LakeRoot) -> Result<SessionContext, DataFusionError> {
    let config = SessionConfig::new().with_information_schema(true);
    let ctx = SessionContext::new_with_config(config);
    lake_root.register(&ctx);
    for spec in specs() {
        ctx.register_table(spec.name, table(lake_root, &spec).await?)?;
    }
    ctx.register_table("regions", Arc::new(regions_table()?))?;
    ctx.register_table("tag_meanings", Arc::new(tag_meanings_table()?))?;
    let view = format!(
        "CREATE VIEW effective_evaluations AS {}",
        sql::EFFECTIVE_EVALUATIONS.trim().trim_end_matches(';')
    );
    ctx.sql(&view).await?.collect().await?;
    let view = format!(
        "CREATE VIEW evaluation_rates AS {}",
        sql::EVALUATION_RATES.trim().trim_end_matches(';')
    );
    ctx.sql(&view).await?.collect().await?;
    Ok(ctx)
}
