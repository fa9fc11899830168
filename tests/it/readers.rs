//! The lake is readable as-is by the engines data teams use: DuckDB with `hive_partitioning=true` and
//! pyarrow's Hive dataset (both installed by `.ci/run`), with the same rows DataFusion sees.

use crate::support;

use std::process::Command;

const SCRIPT: &str = r#"
import sys, duckdb, pyarrow.dataset as ds
lake = sys.argv[1]
rows, slots, days, cities = duckdb.sql(
    f"SELECT count(*), count(DISTINCT project_no || '/' || assess_number), count(DISTINCT dt), count(DISTINCT city) "
    f"FROM read_parquet('{lake}/evaluations/**/*.parquet', hive_partitioning = true)").fetchall()[0]
table = ds.dataset(f"{lake}/evaluations", format="parquet", partitioning="hive").to_table()
assert str(table.schema.field("assessed_at").type) == "timestamp[us, tz=UTC]", table.schema
print(rows, slots, days, cities, table.num_rows)
"#;

#[tokio::test]
async fn duckdb_and_pyarrow_read_the_lake() {
    let dir = tempfile::tempdir().unwrap();
    let accepted = support::fixture_lake(dir.path()).await;
    let output = Command::new("python3")
        .args(["-c", SCRIPT, dir.path().to_str().unwrap()])
        .output()
        .expect("python3 (installed with duckdb and pyarrow by .ci/run)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let numbers: Vec<u64> = String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    let (rows, slots, days, cities, arrow_rows) =
        (numbers[0], numbers[1], numbers[2], numbers[3], numbers[4]);
    assert_eq!(rows, accepted, "DuckDB sees every accepted row");
    assert_eq!(slots, accepted, "each (project_no, assess_number) once");
    assert_eq!(days, 1);
    assert_eq!(cities, 9, "Fujian's nine cities");
    assert_eq!(arrow_rows, accepted, "pyarrow sees the same rows");
}
