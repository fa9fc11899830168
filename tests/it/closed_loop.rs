//! Cases, default evaluations and the effective evaluation rate, through a real broker: a fixture
//! month of three regions whose documents disagree (Fujian 满意 after 7 natural days from the
//! service, Jilin 基本满意, Xuchang 基本满意 from the case's generation), checked against values
//! worked out by hand from `tests/it/fixtures/month_*.ndjson`.

use std::process::Stdio;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type, Int8Type, TimestampMicrosecondType};

use crate::support::*;

const CASES: &str = include_str!("fixtures/month_cases.ndjson");
const EVALUATIONS: &str = include_str!("fixtures/month_evaluations.ndjson");
const AS_OF: &str = "2026-10-20T00:00:00+08:00";

fn records(text: &str) -> Vec<(String, Vec<u8>)> {
    text.lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            (
                value["projectNo"].as_str().unwrap().to_owned(),
                line.as_bytes().to_vec(),
            )
        })
        .collect()
}

fn cst(us: i64) -> String {
    haochaping::policy::span::format_cst(us)
}

async fn query(lake: &std::path::Path, sql: &str) -> Vec<RecordBatch> {
    haochaping::analytics::query_lake(lake, sql).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_evaluations_follow_each_regions_policy_and_feed_the_evaluation_rate() {
    let broker = Tansu::with_topics(2).await;
    broker.create_topic("cases", 2).await;
    broker.create_topic("cases.dlq", 1).await;
    produce_records(&broker.brokers, "cases", &records(CASES)).await;
    produce_records(&broker.brokers, "evaluations", &records(EVALUATIONS)).await;

    let lake = tempfile::tempdir().unwrap();
    let output = ingest_command(
        &broker.brokers,
        lake.path(),
        "closed-loop",
        &["--exit-when-idle", "3s", "--cases-topic", "cases"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .output()
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        summary["accepted"],
        12 + 3,
        "every case record and evaluation"
    );
    assert_eq!(summary["dead_lettered"], 0);

    let analyze = std::process::Command::new(env!("CARGO_BIN_EXE_haochaping"))
        .args([
            "analyze",
            "--lake",
            lake.path().to_str().unwrap(),
            "--as-of",
            AS_OF,
        ])
        .output()
        .unwrap();
    assert!(
        analyze.status.success(),
        "{}",
        String::from_utf8_lossy(&analyze.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&analyze.stdout).unwrap();
    // FJ-2, FJ-3, FJ-5, JL-2, XC-1, XC-2 have no evaluation; FJ-5's period is still running.
    assert_eq!(report["default_evaluations"]["unevaluated"], 6);
    assert_eq!(report["default_evaluations"]["defaults"], 5);

    // The defaults, worked out by hand (end of the period's last day, China time).
    let batches = query(
        lake.path(),
        "SELECT project_no, satisfaction, level_name, channel, period_from, period, policy, \
         assessed_at, month FROM default_evaluations ORDER BY project_no",
    )
    .await;
    let mut rows = Vec::new();
    for batch in &batches {
        let text = |name: &str| {
            batch
                .column_by_name(name)
                .unwrap()
                .as_string::<i32>()
                .clone()
        };
        let (project, level, channel, from, policy, month) = (
            text("project_no"),
            text("level_name"),
            text("channel"),
            text("period_from"),
            text("policy"),
            text("month"),
        );
        let satisfaction = batch
            .column_by_name("satisfaction")
            .unwrap()
            .as_primitive::<Int8Type>()
            .clone();
        let at = batch
            .column_by_name("assessed_at")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>()
            .clone();
        for row in 0..batch.num_rows() {
            assert_eq!(channel.value(row), "system_default");
            rows.push((
                project.value(row).to_owned(),
                satisfaction.value(row),
                level.value(row).to_owned(),
                from.value(row).to_owned(),
                policy.value(row).rsplit('/').next().unwrap().to_owned(),
                cst(at.value(row)),
                month.value(row).to_owned(),
            ));
        }
    }
    let expected = [
        // Fujian 002 §5: 满意, 7 natural days after the service. Finished 3 Sep 09:00 → end of 10 Sep.
        (
            "FJ-2",
            4,
            "满意",
            "service_finished",
            "350000-fujian.toml",
            "2026-09-11T00:00:00+08:00",
            "2026-09",
        ),
        // Finished 30 Sep 15:00 → end of 7 Oct: the default falls in October.
        (
            "FJ-3",
            4,
            "满意",
            "service_finished",
            "350000-fujian.toml",
            "2026-10-08T00:00:00+08:00",
            "2026-10",
        ),
        // Jilin 001 §10: 基本满意. Finished 6 Sep 16:00 → end of 13 Sep.
        (
            "JL-2",
            3,
            "基本满意",
            "service_finished",
            "220200-jilin.toml",
            "2026-09-14T00:00:00+08:00",
            "2026-09",
        ),
        // Xuchang 003 制度 §9: from the case's generation (20 Sep, its pending record) → end of 27 Sep,
        // not from its end (26 Sep → 3 Oct).
        (
            "XC-1",
            3,
            "基本满意",
            "case_generated",
            "411000-xuchang.toml",
            "2026-09-28T00:00:00+08:00",
            "2026-09",
        ),
        // Generated 8 Oct → end of 15 Oct; counted from its end (14 Oct) it would still be running.
        (
            "XC-2",
            3,
            "基本满意",
            "case_generated",
            "411000-xuchang.toml",
            "2026-10-16T00:00:00+08:00",
            "2026-10",
        ),
    ];
    let expected: Vec<_> = expected
        .iter()
        .map(|(p, s, l, f, pol, at, m)| {
            (
                p.to_string(),
                *s as i8,
                l.to_string(),
                f.to_string(),
                pol.to_string(),
                at.to_string(),
                m.to_string(),
            )
        })
        .collect();
    assert_eq!(rows, expected);

    // The effective evaluation rate (queries/evaluation_rates.sql), by the month each case finished.
    let sql = include_str!("../../queries/evaluation_rates.sql");
    let batches = query(lake.path(), sql).await;
    let mut rates = Vec::new();
    for batch in &batches {
        let text = |name: &str| {
            batch
                .column_by_name(name)
                .unwrap()
                .as_string::<i32>()
                .clone()
        };
        let int = |name: &str| {
            batch
                .column_by_name(name)
                .unwrap()
                .as_primitive::<Int64Type>()
                .clone()
        };
        let float = |name: &str| {
            batch
                .column_by_name(name)
                .unwrap()
                .as_primitive::<Float64Type>()
                .clone()
        };
        let (month, county) = (text("month"), text("county_code"));
        let (finished, evaluated, defaulted, waiting) = (
            int("finished_cases"),
            int("evaluated"),
            int("defaulted"),
            int("not_yet_evaluated"),
        );
        let (active, with_defaults) = (float("active_rate"), float("rate_with_defaults"));
        for row in 0..batch.num_rows() {
            assert!(county.is_valid(row));
            rates.push((
                month.value(row).to_owned(),
                county.value(row).to_owned(),
                finished.value(row),
                evaluated.value(row),
                defaulted.value(row),
                waiting.value(row),
                active.value(row),
                with_defaults.value(row),
            ));
        }
    }
    let expected_rates = [
        // Jilin: JL-1 and JL-3 evaluated (JL-3 late, in October, which still counts), JL-2 defaulted.
        ("2026-09", "220204", 3, 2, 1, 0, 0.6667, 1.0),
        // Fujian: FJ-1 evaluated, FJ-2 and FJ-3 defaulted (FJ-3's default is given in October but
        // the case finished in September); FJ-4 is only accepted.
        ("2026-09", "350102", 3, 1, 2, 0, 0.3333, 1.0),
        ("2026-09", "411002", 1, 0, 1, 0, 0.0, 1.0),
        // FJ-5 finished on 18 Oct: its period runs until the end of 25 Oct.
        ("2026-10", "350102", 1, 0, 0, 1, 0.0, 0.0),
        ("2026-10", "411002", 1, 0, 1, 0, 0.0, 1.0),
    ];
    let expected_rates: Vec<_> = expected_rates
        .iter()
        .map(|(m, c, f, e, d, w, a, r)| (m.to_string(), c.to_string(), *f, *e, *d, *w, *a, *r))
        .collect();
    assert_eq!(rates, expected_rates);

    // A late evaluation replaces a default at the next rebuild; here FJ-2 is evaluated after all.
    let late = EVALUATIONS
        .lines()
        .next()
        .unwrap()
        .replace("FJ-1", "FJ-2")
        .replace("2026-09-02 10:05:00", "2026-10-19 09:00:00");
    produce_records(
        &broker.brokers,
        "evaluations",
        &[("FJ-2".into(), late.into_bytes())],
    )
    .await;
    let again = ingest_command(
        &broker.brokers,
        lake.path(),
        "closed-loop",
        &["--exit-when-idle", "3s", "--cases-topic", "cases"],
    )
    .output()
    .unwrap();
    assert!(again.status.success());
    let analyze = std::process::Command::new(env!("CARGO_BIN_EXE_haochaping"))
        .args([
            "analyze",
            "--lake",
            lake.path().to_str().unwrap(),
            "--as-of",
            AS_OF,
        ])
        .output()
        .unwrap();
    assert!(analyze.status.success());
    let batches = query(
        lake.path(),
        "SELECT project_no FROM default_evaluations ORDER BY project_no",
    )
    .await;
    let left: Vec<String> = batches
        .iter()
        .flat_map(|b| {
            let c = b.column(0).as_string::<i32>().clone();
            (0..b.num_rows())
                .map(move |i| c.value(i).to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(left, ["FJ-3", "JL-2", "XC-1", "XC-2"]);
}
