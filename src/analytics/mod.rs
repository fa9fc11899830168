//! Analytics over the lake with DataFusion: one function registers the lake's tables with their Hive
//! partitioning, so every query in `queries/` sees `dt` and `city` as columns.

pub mod alerts;

use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;

use crate::sink::parquet::{evaluations_schema, EVALUATIONS_TABLE};

/// Registers `evaluations` (partitioned by `dt`, `city`) from a local lake root.
pub async fn register_lake(ctx: &SessionContext, lake_root: &Path) -> Result<(), DataFusionError> {
    let root = lake_root
        .canonicalize()
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    let url = ListingTableUrl::parse(format!("{}/{EVALUATIONS_TABLE}/", root.display()))?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(vec![
            ("dt".into(), DataType::Utf8),
            ("city".into(), DataType::Utf8),
        ]);
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(evaluations_schema());
    ctx.register_table(EVALUATIONS_TABLE, Arc::new(ListingTable::try_new(config)?))?;
    Ok(())
}

/// Runs one SQL text (the last statement's rows are returned) against a lake.
pub async fn query_lake(
    lake_root: &Path,
    sql: &str,
) -> Result<Vec<arrow::array::RecordBatch>, DataFusionError> {
    let ctx = SessionContext::new();
    register_lake(&ctx, lake_root).await?;
    ctx.sql(sql).await?.collect().await
}
