//! Golden tests: every `queries/*.sql` runs against a fixture lake built from a fixed generated day,
//! and its output must match `tests/it/golden/<name>.txt` (set `HAOCHAPING_BLESS=1` to rewrite them after
//! a deliberate change, and review the diff).

use std::path::Path;

use crate::support;

#[tokio::test]
async fn every_query_matches_its_golden_output() {
    let dir = tempfile::tempdir().unwrap();
    let accepted = support::fixture_lake(dir.path()).await;
    let bless = std::env::var_os("HAOCHAPING_BLESS").is_some();
    let mut queries: Vec<_> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/queries"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    queries.sort();
    assert!(queries.len() >= 3);
    let mut failures = Vec::new();
    for query in &queries {
        let sql = std::fs::read_to_string(query).unwrap();
        let batches = haochaping::analytics::query_lake(dir.path(), &sql)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", query.display()));
        let output = arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string()
            + "\n";
        let name = query.file_stem().unwrap().to_str().unwrap();
        let golden = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/it/golden")
            .join(format!("{name}.txt"));
        if bless {
            std::fs::write(&golden, &output).unwrap();
        } else {
            let expected = std::fs::read_to_string(&golden).unwrap_or_else(|_| {
                panic!(
                    "{} is missing: run with HAOCHAPING_BLESS=1",
                    golden.display()
                )
            });
            if expected != output {
                failures.push(format!(
                    "{name}:\n--- expected\n{expected}\n--- got\n{output}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Independently of the goldens: the per-city query counts every accepted evaluation once.
    let sql = std::fs::read_to_string(
        queries
            .iter()
            .find(|p| p.ends_with("satisfaction_by_city.sql"))
            .unwrap(),
    )
    .unwrap();
    let total = format!(
        "SELECT sum(evaluations) AS n FROM ({})",
        sql.trim().trim_end_matches(';')
    );
    let batches = haochaping::analytics::query_lake(dir.path(), &total)
        .await
        .unwrap();
    let n = batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap()
        .value(0);
    assert_eq!(n as u64, accepted);
}

#[tokio::test]
async fn the_lake_is_readable_with_hive_partition_columns() {
    let dir = tempfile::tempdir().unwrap();
    support::fixture_lake(dir.path()).await;
    let batches = haochaping::analytics::query_lake(
        dir.path(),
        "SELECT count(DISTINCT dt) AS days, sum(CASE WHEN substr(area_code, 1, 4) || '00' <> city AND city_code IS NOT NULL THEN 1 ELSE 0 END) AS misplaced FROM evaluations",
    )
    .await
    .unwrap();
    let column = |i: usize| {
        batches[0]
            .column(i)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap()
            .value(0)
    };
    assert_eq!(column(0), 1, "one generated day");
    assert_eq!(column(1), 0, "every row sits in its city's partition");
}
