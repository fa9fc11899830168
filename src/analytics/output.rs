//! Query results as a table, CSV, NDJSON or Parquet (arrow's own writers).

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::sink::parquet::{encode_parquet, TableError};

/// An output format of `haochaping query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A text table.
    Table,
    /// CSV with a header line (lists and structs as text).
    Csv,
    /// One JSON object a line.
    Json,
    /// A zstd Parquet file.
    Parquet,
}

/// Renders batches in a format.
pub fn render(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    format: Format,
) -> Result<Vec<u8>, TableError> {
    match format {
        Format::Table => {
            let text = if batches.iter().all(|b| b.num_rows() == 0) {
                // pretty_format_batches prints nothing for no rows; show the header.
                let empty = RecordBatch::new_empty(schema.clone());
                arrow::util::pretty::pretty_format_batches(&[empty])?.to_string()
            } else {
                arrow::util::pretty::pretty_format_batches(batches)?.to_string()
            };
            Ok((text + "\n").into_bytes())
        }
        Format::Csv => {
            let mut out = Vec::new();
            {
                let mut writer = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut out);
                let flat_schema = flat_schema(schema);
                if batches.is_empty() {
                    writer.write(&RecordBatch::new_empty(flat_schema.clone()))?;
                }
                for batch in batches {
                    writer.write(&flatten(batch, &flat_schema)?)?;
                }
            }
            Ok(out)
        }
        Format::Json => {
            let mut out = Vec::new();
            {
                let mut writer = arrow::json::LineDelimitedWriter::new(&mut out);
                for batch in batches {
                    writer.write(batch)?;
                }
                writer.finish()?;
            }
            Ok(out)
        }
        Format::Parquet => {
            let batch = arrow::compute::concat_batches(schema, batches)?;
            Ok(encode_parquet(&batch, 3)?.to_vec())
        }
    }
}

fn nested(data_type: &DataType) -> bool {
    data_type.is_nested()
}

/// The schema with nested columns (lists, structs, maps) as text, for CSV.
fn flat_schema(schema: &SchemaRef) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| {
                if nested(f.data_type()) {
                    Field::new(f.name(), DataType::Utf8, true)
                } else {
                    f.as_ref().clone()
                }
            })
            .collect::<Vec<_>>(),
    ))
}

fn flatten(batch: &RecordBatch, flat_schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    let options = FormatOptions::default();
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .map(|column| -> Result<ArrayRef, ArrowError> {
            if !nested(column.data_type()) {
                return Ok(column.clone());
            }
            let formatter = ArrayFormatter::try_new(column.as_ref(), &options)?;
            let mut text = StringBuilder::new();
            for row in 0..column.len() {
                if column.is_null(row) {
                    text.append_null();
                } else {
                    text.append_value(formatter.value(row).to_string());
                }
            }
            Ok(Arc::new(text.finish()))
        })
        .collect::<Result<_, _>>()?;
    RecordBatch::try_new(flat_schema.clone(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, ListBuilder, StringArray};

    fn batch() -> RecordBatch {
        let mut tags = ListBuilder::new(StringBuilder::new());
        tags.values().append_value("207");
        tags.values().append_value("110");
        tags.append(true);
        tags.append(false);
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
            Field::new(
                "tags",
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                true,
            ),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![Some("洛宁县, \"民政局\""), None])),
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(tags.finish()),
            ],
        )
        .unwrap()
    }

    #[test]
    fn every_format_renders() {
        let b = batch();
        let schema = b.schema();
        let csv =
            String::from_utf8(render(&schema, std::slice::from_ref(&b), Format::Csv).unwrap())
                .unwrap();
        assert_eq!(
            csv,
            "name,n,tags\n\"洛宁县, \"\"民政局\"\"\",1,\"[207, 110]\"\n,2,\n"
        );
        let json =
            String::from_utf8(render(&schema, std::slice::from_ref(&b), Format::Json).unwrap())
                .unwrap();
        let lines: Vec<serde_json::Value> = json
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["tags"], serde_json::json!(["207", "110"]));
        let table =
            String::from_utf8(render(&schema, std::slice::from_ref(&b), Format::Table).unwrap())
                .unwrap();
        assert!(table.contains("| 洛宁县, \"民政局\" |"), "{table}");
        let parquet = render(&schema, &[b], Format::Parquet).unwrap();
        assert_eq!(&parquet[..4], b"PAR1");
        let empty = String::from_utf8(render(&schema, &[], Format::Table).unwrap()).unwrap();
        assert!(empty.contains("| name | n | tags |"), "{empty}");
        let empty_csv = String::from_utf8(render(&schema, &[], Format::Csv).unwrap()).unwrap();
        assert_eq!(empty_csv, "name,n,tags\n");
    }
}
