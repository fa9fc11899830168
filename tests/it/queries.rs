//! Golden tests: every `queries/*.sql` runs against the lake built from the checked-in fixture
//! (`tests/it/fixtures/analytics.ndjson` + `exclusions.csv`, see `make_fixture.py`), templates filled
//! for October 2026, and its output must match `tests/it/golden/<name>.txt` (set
//! `HAOCHAPING_BLESS=1` to rewrite them after a deliberate change, and review the diff). The goldens
//! alone would only say "unchanged"; each query's output is also checked here against a plain-Rust
//! computation over the NDJSON (and the rankings in `analytics.rs`).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use haochaping::analytics::periods::Period;

use crate::analytics::{
    effective, fixture_config, fixture_exclusions, fixture_lake, fixture_rows, AS_OF_US,
};
use crate::support::{self, root};

/// The SQL of a query file, its template parameters filled for the fixture.
fn fill(name: &str, text: &str) -> String {
    let october = Period::Month {
        year: 2026,
        month: 10,
    };
    let config = fixture_config();
    let sql = match name {
        "rankings" => haochaping::analytics::rankings::period_sql(october, &config),
        "warnings" => haochaping::analytics::rankings::warnings_sql(&config),
        "hotspots" => haochaping::analytics::hotspots::window_sql("24h", 86_400, AS_OF_US, &config),
        "fraud_signals" => haochaping::analytics::fraud::period_sql(october, &config),
        "notice" => haochaping::analytics::report::notice_sql(october),
        _ => Ok(text.to_owned()),
    }
    .unwrap();
    assert!(!sql.contains("{{"), "{name}: unfilled parameter");
    if name == "effective_evaluations" {
        // The view's rows, narrowed to what identifies them (the rest is the lake's own columns).
        return format!(
            "SELECT project_no, assess_number, satisfaction, dt FROM ({}) ORDER BY project_no, assess_number",
            sql.trim().trim_end_matches(';')
        );
    }
    sql
}

fn int_column(batches: &[RecordBatch], name: &str) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            let c = arrow::compute::cast(
                b.column_by_name(name).unwrap(),
                &arrow::datatypes::DataType::Int64,
            )
            .unwrap();
            c.as_primitive::<Int64Type>().values().to_vec()
        })
        .collect()
}

fn text_column(batches: &[RecordBatch], name: &str) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let c = arrow::compute::cast(
                b.column_by_name(name).unwrap(),
                &arrow::datatypes::DataType::Utf8,
            )
            .unwrap();
            c.as_string::<i32>()
                .iter()
                .map(|v| v.unwrap_or("").to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_matches_its_golden_output() {
    let dir = tempfile::tempdir().unwrap();
    let lake = fixture_lake(dir.path()).await;
    haochaping::analytics::refresh_with(&root(&lake), AS_OF_US, &fixture_config())
        .await
        .unwrap();
    // The closed loop of the fixture's bad reviews (it has no workflow and no cases: every step is
    // missing, and the case queries are empty here; tests/it/closed_loop.rs checks them on fixtures
    // of their own against hand-computed values).
    let policies = haochaping::policy::Policies::shipped().unwrap();
    haochaping::analytics::closed_loop::rebuild(&root(&lake), AS_OF_US, &policies)
        .await
        .unwrap();
    haochaping::analytics::defaults::rebuild(&root(&lake), AS_OF_US, &policies)
        .await
        .unwrap();
    let bless = std::env::var_os("HAOCHAPING_BLESS").is_some();
    let mut queries: Vec<_> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/queries"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    queries.sort();
    assert!(queries.len() >= 9, "{queries:?}");
    let mut failures = Vec::new();
    let mut outputs = BTreeMap::new();
    for query in &queries {
        let name = query.file_stem().unwrap().to_str().unwrap().to_owned();
        let sql = fill(&name, &std::fs::read_to_string(query).unwrap());
        let batches = haochaping::analytics::query_lake(&root(&lake), &sql)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", query.display()));
        let output = arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string()
            + "\n";
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
        outputs.insert(name, batches);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Independently of the goldens, from the NDJSON:
    let rows = fixture_rows();
    let excluded: HashSet<(String, i64)> = fixture_exclusions()
        .into_iter()
        .map(|e| (e.project_no, i64::from(e.assess_number)))
        .collect();
    // effective_evaluations holds exactly the rows the rule keeps.
    let expected: BTreeSet<(String, i64)> = effective(&rows, &excluded)
        .into_iter()
        .map(|r| (r.project, r.assess))
        .collect();
    let got: BTreeSet<(String, i64)> = text_column(&outputs["effective_evaluations"], "project_no")
        .into_iter()
        .zip(int_column(
            &outputs["effective_evaluations"],
            "assess_number",
        ))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(
        got.len(),
        rows.len() - 3,
        "two replaced firsts and one exclusion"
    );
    // satisfaction_by_city counts every evaluation in the lake once.
    let total: i64 = int_column(&outputs["satisfaction_by_city"], "evaluations")
        .iter()
        .sum();
    assert_eq!(total as usize, rows.len());
    // bad_review_steps: one row per bad review of the lake; kpis: each counted once, as a bad
    // review or as excluded (the fixture's one exclusion), and without any workflow none was replied.
    let bad = rows.iter().filter(|r| r.level <= 2).count() as i64;
    assert_eq!(
        text_column(&outputs["bad_review_steps"], "project_no").len() as i64,
        bad
    );
    let counted: i64 = int_column(&outputs["kpis"], "bad_reviews").iter().sum();
    let excluded_bad = rows
        .iter()
        .filter(|r| r.level <= 2 && excluded.contains(&(r.project.clone(), r.assess)))
        .count() as i64;
    assert_eq!(
        int_column(&outputs["kpis"], "excluded").iter().sum::<i64>(),
        excluded_bad
    );
    assert_eq!(counted + excluded_bad, bad);
    assert!(excluded_bad >= 1);
    // bad_review_hotspots: items with at least two bad reviews (raw evaluations), and how many.
    let mut bad_per_item: BTreeMap<String, i64> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.level <= 2) {
        *bad_per_item.entry(r.task.clone()).or_default() += 1;
    }
    bad_per_item.retain(|_, n| *n >= 2);
    let mut expected_counts: Vec<i64> = bad_per_item.values().copied().collect();
    expected_counts.sort_unstable_by(|a, b| b.cmp(a));
    expected_counts.truncate(20);
    assert_eq!(
        int_column(&outputs["bad_review_hotspots"], "bad_reviews"),
        expected_counts
    );
    // department_ranking: bad reviews per department over all raw evaluations.
    let mut per_dept: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for r in &rows {
        let e = per_dept.entry(r.dept.clone()).or_default();
        e.0 += 1;
        e.1 += i64::from(r.level <= 2);
    }
    let got: BTreeMap<String, (i64, i64)> =
        text_column(&outputs["department_ranking"], "dept_code")
            .into_iter()
            .zip(
                int_column(&outputs["department_ranking"], "evaluations")
                    .into_iter()
                    .zip(int_column(&outputs["department_ranking"], "bad_reviews")),
            )
            .collect();
    assert_eq!(got, per_dept);
    // rankings.sql run directly equals what the refresh wrote for October.
    let written = haochaping::analytics::query_lake(
        &root(&lake),
        "SELECT count(*) AS n FROM rankings WHERE period_type = 'month' AND period = '2026-10'",
    )
    .await
    .unwrap();
    let rows_rankings: usize = outputs["rankings"].iter().map(RecordBatch::num_rows).sum();
    assert_eq!(int_column(&written, "n"), vec![rows_rankings as i64]);
    // notice: the five departments, ranks ascending.
    assert_eq!(int_column(&outputs["notice"], "排名"), vec![1, 2, 2, 4, 5]);
    // warnings (bottom 1, three months): the one department planned for it.
    let departments: Vec<String> = text_column(&outputs["warnings"], "entity_type")
        .into_iter()
        .zip(text_column(&outputs["warnings"], "entity_name"))
        .filter(|(t, _)| t == "department")
        .map(|(_, n)| n)
        .collect();
    assert_eq!(departments, vec!["新安县税务局"]);
}

#[tokio::test]
async fn the_lake_is_readable_with_hive_partition_columns() {
    let dir = tempfile::tempdir().unwrap();
    support::fixture_lake(dir.path()).await;
    let batches = haochaping::analytics::query_lake(
        &root(dir.path()),
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
