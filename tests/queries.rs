//! Golden tests: every `queries/*.sql` runs against a fixture lake built from a fixed generated day,
//! and its output must match `tests/golden/<name>.txt` (set `HAOCHAPING_BLESS=1` to rewrite them after
//! a deliberate change, and review the diff).

use std::path::Path;

use chrono::NaiveDate;
use haochaping::generate::{Generator, GeneratorConfig};
use haochaping::sink::lake::{BatchRange, Lake};
use haochaping::sink::parquet::{encode_parquet, EvaluationRows, EVALUATIONS_TABLE};
use haochaping::transform::dedup::DedupState;
use haochaping::transform::identity::EvaluatorKeyer;
use haochaping::transform::{Outcome, Processor};

/// A fixed day, two batches of one partition, through the same processor as the pipeline.
async fn fixture_lake(root: &Path) -> u64 {
    let mut config = GeneratorConfig::new("35", NaiveDate::from_ymd_opt(2026, 11, 2).unwrap());
    config.seed = 42;
    config.dup_rate = 0.01;
    config.bad_rate = 0.01;
    let mut generator = Generator::new(config).unwrap();
    let processor = Processor::new(
        Default::default(),
        EvaluatorKeyer::new(b"golden-secret-0123"),
    );
    let lake = Lake::open_local(root, EVALUATIONS_TABLE).unwrap();
    let mut dedup = DedupState::default();
    let mut accepted = 0;
    let now = chrono::Utc::now().timestamp_micros();
    for (first, last) in [(0, 9_999), (10_000, 19_999)] {
        let mut rows = EvaluationRows::new();
        for offset in first..=last {
            let event = generator.next_event();
            if processor.process(&event.payload, 0, offset, now, &mut dedup, &mut rows)
                == Outcome::Accepted
            {
                accepted += 1;
            }
        }
        let range = BatchRange {
            topic: "evaluations".into(),
            partition: 0,
            first_offset: first,
            last_offset: last,
        };
        let files = rows
            .finish()
            .unwrap()
            .into_iter()
            .map(|(key, batch)| {
                (
                    lake.data_path(&key, &range),
                    encode_parquet(&batch, 3).unwrap(),
                )
            })
            .collect();
        lake.commit_batch(range, files, 0).await.unwrap();
    }
    accepted
}

#[tokio::test]
async fn every_query_matches_its_golden_output() {
    let dir = tempfile::tempdir().unwrap();
    let accepted = fixture_lake(dir.path()).await;
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
            .join("tests/golden")
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
    fixture_lake(dir.path()).await;
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
