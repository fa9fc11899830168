//! The derived tables over the checked-in fixture `tests/it/fixtures/analytics.ndjson` (written by
//! `make_fixture.py`, whose docstring lists what it contains and the answers relied on here) and
//! `exclusions.csv`. Each expectation below is either stated by hand from the fixture's plan or
//! computed independently in plain Rust from the NDJSON, never read back from the SQL under test.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type};
use haochaping::analytics::exclusions::{Exclusion, ExclusionReason};
use haochaping::analytics::AnalyticsConfig;
use haochaping::config::IngestConfig;
use haochaping::telemetry::Stats;

use crate::support::{root, SECRET};

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/fixtures")
        .join(name)
}

/// 2026-10-20 10:00 CST, just after the fixture's hotspot.
pub const AS_OF_US: i64 = 1_792_461_600_000_000;

/// The thresholds the fixture was planned for: bottom 1, three months in a row.
pub fn fixture_config() -> AnalyticsConfig {
    AnalyticsConfig {
        bottom_n: 1,
        periods_in_row: 3,
        ..AnalyticsConfig::default()
    }
}

/// The fixture's exclusions, read from the CSV by hand.
pub fn fixture_exclusions() -> Vec<Exclusion> {
    let text = std::fs::read_to_string(fixture("exclusions.csv")).unwrap();
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            Exclusion {
                project_no: f[0].to_owned(),
                assess_number: f[1].parse().unwrap(),
                reason: ExclusionReason::from_code(f[2]).unwrap(),
                decided_at_us: chrono::DateTime::parse_from_rfc3339(f[3])
                    .unwrap()
                    .timestamp_micros(),
            }
        })
        .collect()
}

/// Ingests the fixture into a lake (offline path) and adds its exclusions; returns the lake root.
pub async fn fixture_lake(dir: &Path) -> PathBuf {
    let lake = dir.join("lake");
    let mut config = IngestConfig::default();
    config.lake.path = lake.clone().into();
    config.identity.secret = Some(SECRET.into());
    let summary = haochaping::offline::ingest_file(
        config,
        &fixture("analytics.ndjson"),
        Arc::new(Stats::default()),
    )
    .await
    .unwrap();
    assert_eq!(
        (summary.accepted, summary.dead_lettered),
        (fixture_rows().len() as u64, 0),
        "every fixture line is a valid evaluation"
    );
    haochaping::analytics::exclusions::append(&root(&lake), &fixture_exclusions())
        .await
        .unwrap();
    lake
}

/// One fixture evaluation as the independent computation sees it.
#[derive(Debug, Clone)]
pub struct Row {
    pub project: String,
    pub assess: i64,
    pub level: i64,
    pub dept: String,
    pub area: String,
    pub pf: i64,
    pub staff: Option<String>,
    pub task: String,
    /// yyyy-mm-dd (CST)
    pub day: String,
}

pub fn fixture_rows() -> Vec<Row> {
    let text = std::fs::read_to_string(fixture("analytics.ndjson")).unwrap();
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let s = |k: &str| v[k].as_str().unwrap().to_owned();
            let n = |k: &str| match &v[k] {
                serde_json::Value::String(s) => s.parse::<i64>().unwrap(),
                other => other.as_i64().unwrap(),
            };
            Row {
                project: s("projectNo"),
                assess: n("assessNumber"),
                level: n("satisfaction"),
                dept: s("deptCode"),
                area: s("areaCode"),
                pf: n("pf"),
                staff: v["staffId"].as_str().map(str::to_owned),
                task: s("taskCode"),
                day: s("assessTime")[..10].to_owned(),
            }
        })
        .collect()
}

/// The rows that count, by the rules written in the README: exclusions first, then a case's
/// supplementary evaluation replaces its first.
pub fn effective(rows: &[Row], excluded: &HashSet<(String, i64)>) -> Vec<Row> {
    let kept: Vec<&Row> = rows
        .iter()
        .filter(|r| !excluded.contains(&(r.project.clone(), r.assess)))
        .collect();
    let supplemented: HashSet<&str> = kept
        .iter()
        .filter(|r| r.assess == 2)
        .map(|r| r.project.as_str())
        .collect();
    kept.into_iter()
        .filter(|r| r.assess == 2 || !supplemented.contains(r.project.as_str()))
        .cloned()
        .collect()
}

fn channel(pf: i64) -> &'static str {
    match pf {
        1 => "pc_web",
        2 => "mobile",
        3 => "qr_code",
        4 => "hall_window",
        5 => "hall_other",
        6 => "hotline_12345",
        _ => "sms",
    }
}

/// The entities a row belongs to, by the domain's code rules (a parent's code is the child's
/// prefix padded with zeros).
fn entities(r: &Row) -> Vec<(&'static str, String)> {
    let mut out = vec![
        ("department", r.dept.clone()),
        ("province", format!("{}0000", &r.area[..2])),
        ("city", format!("{}00", &r.area[..4])),
        ("county", r.area[..6].to_owned()),
        ("township", r.area[..9].to_owned()),
        ("item", r.task.clone()),
        ("channel", channel(r.pf).to_owned()),
    ];
    if let Some(staff) = &r.staff {
        out.push(("staff", format!("{}/{staff}", r.dept)));
    }
    out
}

/// Counts per (entity type, entity id): (evaluations, good, bad).
type Counts = BTreeMap<(String, String), (i64, i64, i64)>;

fn counts(rows: &[Row], month: &str) -> Counts {
    let mut out = Counts::new();
    for r in rows.iter().filter(|r| r.day.starts_with(month)) {
        for (t, id) in entities(r) {
            let c = out.entry((t.to_owned(), id)).or_default();
            c.0 += 1;
            if r.level >= 3 {
                c.1 += 1;
            } else {
                c.2 += 1;
            }
        }
    }
    out
}

/// RANK() by a rate, compared exactly as fractions: 1 + the number of ranked entities of the same
/// type with a strictly higher rate. `pick` chooses good or bad.
fn rank(
    counts: &Counts,
    key: &(String, String),
    min: i64,
    pick: fn(&(i64, i64, i64)) -> i64,
) -> Option<i64> {
    let own = counts.get(key)?;
    if own.0 < min {
        return None;
    }
    let higher = counts
        .iter()
        .filter(|((t, _), c)| *t == key.0 && c.0 >= min)
        .filter(|(_, c)| pick(c) * own.0 > pick(own) * c.0)
        .count();
    Some(1 + higher as i64)
}

/// What the independent computation expects of one ranking row.
#[derive(Debug, PartialEq)]
struct Expected {
    evaluations: i64,
    good: i64,
    bad: i64,
    good_rank: Option<i64>,
    bad_rank: Option<i64>,
    previous_evaluations: i64,
    previous_good_rank: Option<i64>,
    previous_bad_rank: Option<i64>,
}

fn expected_month(month: &str, previous: &str, min: i64) -> BTreeMap<(String, String), Expected> {
    let excluded: HashSet<(String, i64)> = fixture_exclusions()
        .into_iter()
        .map(|e| (e.project_no, i64::from(e.assess_number)))
        .collect();
    let rows = effective(&fixture_rows(), &excluded);
    let now = counts(&rows, month);
    let before = counts(&rows, previous);
    now.iter()
        .map(|(key, c)| {
            let (pe, _, _) = before.get(key).copied().unwrap_or_default();
            (
                key.clone(),
                Expected {
                    evaluations: c.0,
                    good: c.1,
                    bad: c.2,
                    good_rank: rank(&now, key, min, |c| c.1),
                    bad_rank: rank(&now, key, min, |c| c.2),
                    previous_evaluations: pe,
                    previous_good_rank: rank(&before, key, min, |c| c.1),
                    previous_bad_rank: rank(&before, key, min, |c| c.2),
                },
            )
        })
        .collect()
}

pub async fn sql(lake: &Path, query: &str) -> Vec<RecordBatch> {
    haochaping::analytics::query_lake(&root(lake), query)
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"))
}

fn strings(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let column = arrow::compute::cast(
        batch.column_by_name(name).unwrap(),
        &arrow::datatypes::DataType::Utf8,
    )
    .unwrap();
    column
        .as_string::<i32>()
        .iter()
        .map(|v| v.map(str::to_owned))
        .collect()
}

fn ints(batch: &RecordBatch, name: &str) -> Vec<Option<i64>> {
    let column = batch.column_by_name(name).unwrap();
    let column = column.as_primitive::<Int64Type>();
    (0..column.len())
        .map(|i| column.is_valid(i).then(|| column.value(i)))
        .collect()
}

fn floats(batch: &RecordBatch, name: &str) -> Vec<Option<f64>> {
    let column = batch.column_by_name(name).unwrap();
    let column = column.as_primitive::<Float64Type>();
    (0..column.len())
        .map(|i| column.is_valid(i).then(|| column.value(i)))
        .collect()
}

async fn refreshed_fixture(dir: &Path) -> PathBuf {
    let lake = fixture_lake(dir).await;
    haochaping::analytics::refresh_with(&root(&lake), AS_OF_US, &fixture_config())
        .await
        .unwrap();
    lake
}

/// The ranking of each fixture month, every entity type, equals the plain-Rust computation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixture_month_rankings_equal_an_independent_computation() {
    let dir = tempfile::tempdir().unwrap();
    let lake = refreshed_fixture(dir.path()).await;
    let min = i64::from(fixture_config().min_evaluations);
    for (month, previous) in [
        ("2026-10", "2026-09"),
        ("2026-09", "2026-08"),
        ("2026-08", "2026-07"),
    ] {
        let expected = expected_month(month, previous, min);
        let batches = sql(
            &lake,
            &format!("SELECT * FROM rankings WHERE period_type = 'month' AND period = '{month}'"),
        )
        .await;
        let mut got = BTreeMap::new();
        for b in &batches {
            let (t, id) = (strings(b, "entity_type"), strings(b, "entity_id"));
            let (n, g, bad) = (ints(b, "evaluations"), ints(b, "good"), ints(b, "bad"));
            let (gr, br) = (ints(b, "good_rate_rank"), ints(b, "bad_rate_rank"));
            let pe = ints(b, "previous_evaluations");
            let (pgr, pbr) = (
                ints(b, "previous_good_rate_rank"),
                ints(b, "previous_bad_rate_rank"),
            );
            let (rate, bad_rate) = (floats(b, "good_rate"), floats(b, "bad_rate"));
            for i in 0..b.num_rows() {
                let n_i = n[i].unwrap();
                assert_eq!(rate[i].unwrap(), g[i].unwrap() as f64 / n_i as f64);
                assert_eq!(bad_rate[i].unwrap(), bad[i].unwrap() as f64 / n_i as f64);
                got.insert(
                    (t[i].clone().unwrap(), id[i].clone().unwrap()),
                    Expected {
                        evaluations: n_i,
                        good: g[i].unwrap(),
                        bad: bad[i].unwrap(),
                        good_rank: gr[i],
                        bad_rank: br[i],
                        previous_evaluations: pe[i].unwrap(),
                        previous_good_rank: pgr[i],
                        previous_bad_rank: pbr[i],
                    },
                );
            }
        }
        assert_eq!(got.len(), expected.len(), "{month}: entity count");
        for (key, e) in &expected {
            assert_eq!(got.get(key), Some(e), "{month} {key:?}");
        }
    }
}

/// The hand-planned facts of the fixture (see make_fixture.py): the October department ranking
/// with its tie, the supplementary rules and the exclusion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn october_departments_rank_as_planned() {
    let dir = tempfile::tempdir().unwrap();
    let lake = refreshed_fixture(dir.path()).await;
    let batches = sql(
        &lake,
        "SELECT entity_name, evaluations, good, good_rate_rank, bad_rate_rank FROM rankings \
         WHERE period_type = 'month' AND period = '2026-10' AND entity_type = 'department' \
         ORDER BY good_rate_rank, entity_name",
    )
    .await;
    let b = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let rows: Vec<(String, i64, i64, i64, i64)> = (0..b.num_rows())
        .map(|i| {
            (
                strings(&b, "entity_name")[i].clone().unwrap(),
                ints(&b, "evaluations")[i].unwrap(),
                ints(&b, "good")[i].unwrap(),
                ints(&b, "good_rate_rank")[i].unwrap(),
                ints(&b, "bad_rate_rank")[i].unwrap(),
            )
        })
        .collect();
    let expected = [
        // D5 11/12; D2 and D3 10/12 each (tied: both 2nd, then 4th); D1 23/29 (burst and
        // hotspot); D4 5/12, the bottom.
        ("新安县住房和城乡建设局", 12, 11, 1, 5),
        ("洛宁县市场监督管理局", 12, 10, 2, 3),
        ("洛宁县民政局", 12, 10, 2, 3),
        ("洛宁县人力资源和社会保障局", 29, 23, 4, 2),
        ("新安县税务局", 12, 5, 5, 1),
    ];
    let expected: Vec<(String, i64, i64, i64, i64)> = expected
        .iter()
        .map(|(n, a, b, c, d)| ((*n).to_owned(), *a, *b, *c, *d))
        .collect();
    assert_eq!(rows, expected);
    // September: D3 has 12 base reviews and the malicious reviewer's, but not F-S2's first
    // (its supplementary moved the case to October).
    let sep = sql(
        &lake,
        "SELECT evaluations FROM rankings WHERE period_type = 'month' AND period = '2026-09' \
         AND entity_name = '洛宁县民政局'",
    )
    .await;
    assert_eq!(ints(&sep[0], "evaluations"), vec![Some(13)]);
}

/// Bottom 1 three months in a row: D4 only (D5 was at the bottom in September alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warnings_name_the_department_three_months_at_the_bottom() {
    let dir = tempfile::tempdir().unwrap();
    let lake = refreshed_fixture(dir.path()).await;
    let batches = sql(
        &lake,
        "SELECT * FROM warnings WHERE entity_type = 'department'",
    )
    .await;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(
        rows,
        1,
        "{}",
        arrow::util::pretty::pretty_format_batches(&batches).unwrap()
    );
    let b = &batches.iter().find(|b| b.num_rows() > 0).unwrap();
    assert_eq!(
        strings(b, "entity_name")[0].as_deref(),
        Some("新安县税务局")
    );
    assert_eq!(strings(b, "period_type")[0].as_deref(), Some("month"));
    assert_eq!(strings(b, "first_period")[0].as_deref(), Some("2026-08"));
    assert_eq!(strings(b, "last_period")[0].as_deref(), Some("2026-10"));
    assert_eq!(ints(b, "periods_in_row")[0], Some(3));
    // With K = 4 nobody has been at the bottom long enough.
    let lake2 = fixture_lake(&dir.path().join("k4")).await;
    let config = AnalyticsConfig {
        periods_in_row: 4,
        ..fixture_config()
    };
    let report = haochaping::analytics::refresh_with(&root(&lake2), AS_OF_US, &config)
        .await
        .unwrap();
    assert_eq!(report.warnings, 0);
}

/// The fixture's five bad reviews of 失业保险金申领 within an hour are a hotspot of the item, its
/// department, staff member and regions, explained by their tags and terms; nothing with fewer
/// than the minimum count is one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hotspots_find_the_item_and_explain_it() {
    let dir = tempfile::tempdir().unwrap();
    let lake = refreshed_fixture(dir.path()).await;
    let batches = sql(
        &lake,
        "SELECT hotspot_id, entity_type, entity_name, \"window\", bad_reviews, evaluations, baseline_bad_reviews, \
         baseline_evaluations, baseline, top_tags, top_terms FROM hotspots ORDER BY hotspot_id",
    )
    .await;
    let b = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let ids = strings(&b, "hotspot_id");
    let item = "item:11410328MB00000116T1B";
    for window in ["1h", "24h", "7d"] {
        let id = format!("{item}:{window}:bad_review_concentration");
        let i = ids
            .iter()
            .position(|x| x.as_deref() == Some(&id))
            .unwrap_or_else(|| panic!("{id} missing: {ids:?}"));
        assert_eq!(ints(&b, "bad_reviews")[i], Some(5), "{window}");
        assert_eq!(ints(&b, "baseline_bad_reviews")[i], Some(0), "{window}");
        assert_eq!(
            strings(&b, "entity_name")[i].as_deref(),
            Some("失业保险金申领")
        );
        let tags = b
            .column_by_name("top_tags")
            .unwrap()
            .as_list::<i32>()
            .value(i);
        let tags: Vec<&str> = tags.as_string::<i32>().iter().flatten().collect();
        assert_eq!(tags[0], "110 无理由超过法定办理时间 ×2", "{tags:?}");
        let terms = b
            .column_by_name("top_terms")
            .unwrap()
            .as_list::<i32>()
            .value(i);
        let terms: Vec<&str> = terms.as_string::<i32>().iter().flatten().collect();
        assert!(terms.contains(&"材料 ×5"), "{terms:?}");
        assert!(terms.contains(&"推诿 ×3"), "{terms:?}");
    }
    for expected in [
        "department:11410328MB00000116:1h:bad_review_concentration",
        "staff:11410328MB00000116/W102:1h:bad_review_concentration",
        "county:410328:1h:bad_review_concentration",
        // Tag 110 is on two of the hour's reviews and on base bad reviews of the day before.
        "tag:110:24h:bad_review_concentration",
    ] {
        assert!(
            ids.iter().any(|x| x.as_deref() == Some(expected)),
            "{expected}: {ids:?}"
        );
    }
    // W102 had no evaluation in the 28 days before: compared with every staff member's.
    let baselines = strings(&b, "baseline");
    let w102 = ids
        .iter()
        .position(|x| {
            x.as_deref() == Some("staff:11410328MB00000116/W102:24h:bad_review_concentration")
        })
        .unwrap();
    // Worked out from the NDJSON by hand: 32 evaluations with a staff member in the 28 days before
    // 2026-10-19 10:00 CST, 4 of them bad; F-S1 and F-S2 were replaced by good supplementary
    // evaluations (two firsts fewer) and F-X1 is excluded: 29 evaluations, 1 bad (F-0163).
    assert_eq!(baselines[w102].as_deref(), Some("peers_28d"));
    assert_eq!(ints(&b, "baseline_evaluations")[w102], Some(29));
    assert_eq!(ints(&b, "baseline_bad_reviews")[w102], Some(1));
    let item = ids
        .iter()
        .position(|x| x.as_deref() == Some(&format!("{item}:24h:bad_review_concentration")))
        .unwrap();
    assert_eq!(baselines[item].as_deref(), Some("own_28d"));
    // Tag 110 is on two reviews of the hour, tag 207 on one: below the minimum of 3, no hotspot.
    for below in ["tag:110:1h:", "tag:207:1h:", "tag:207:24h:"] {
        assert!(
            !ids.iter().flatten().any(|x| x.starts_with(below)),
            "{below}: {ids:?}"
        );
    }
    assert!(ints(&b, "bad_reviews").iter().all(|n| n.unwrap() >= 3));
}

/// A lake's first day has no history: each entity is compared with its peers in the window itself
/// (`peers_window`), so a province's first day still shows where bad reviews gather, and an entity
/// that is all its peers (the province) is never a hotspot of itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_lake_s_first_day_hotspots_compare_each_entity_with_its_peers() {
    let dir = tempfile::tempdir().unwrap();
    crate::support::fixture_lake(dir.path()).await; // 2026-11-02 only
    let end_of_day = chrono::DateTime::parse_from_rfc3339("2026-11-03T00:00:00+08:00")
        .unwrap()
        .timestamp_micros();
    haochaping::analytics::refresh_with(&root(dir.path()), end_of_day, &AnalyticsConfig::default())
        .await
        .unwrap();
    let day = sql(
        dir.path(),
        "SELECT count(*) AS n FROM effective_evaluations",
    )
    .await;
    let day_total = day[0]
        .column(0)
        .as_primitive::<arrow::datatypes::Int64Type>()
        .value(0);
    let batches = sql(
        dir.path(),
        "SELECT entity_type, baseline, evaluations, bad_reviews, baseline_evaluations, \
         bad_rate, baseline_bad_rate FROM hotspots WHERE \"window\" = '24h'",
    )
    .await;
    let b = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    assert!(b.num_rows() > 0, "no hotspot on the first day");
    let types = strings(&b, "entity_type");
    let (bad_rate, reference) = (floats(&b, "bad_rate"), floats(&b, "baseline_bad_rate"));
    for i in 0..b.num_rows() {
        assert_eq!(strings(&b, "baseline")[i].as_deref(), Some("peers_window"));
        assert!(bad_rate[i].unwrap() >= 2.0 * reference[i].unwrap());
        assert_ne!(types[i].as_deref(), Some("province"));
        if types[i].as_deref() == Some("city") {
            // Every evaluation has a city: the peers of a city are the whole day.
            assert_eq!(ints(&b, "baseline_evaluations")[i], Some(day_total));
        }
    }
}

/// The burst at D1's window (twelve top-level reviews in eight minutes from two identities) and the
/// evaluator who gave bad reviews to three departments; evidence carries hashed keys only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fraud_signals_find_the_burst_and_the_reviewer() {
    let dir = tempfile::tempdir().unwrap();
    let lake = refreshed_fixture(dir.path()).await;
    let batches = sql(
        &lake,
        "SELECT period, signal, entity_id, reviews, distinct_evaluator_keys, departments, \
         span_seconds, evaluator_keys FROM fraud_signals ORDER BY period, signal",
    )
    .await;
    let b = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let rows: Vec<(String, String, i64, i64, i64, i64)> = (0..b.num_rows())
        .map(|i| {
            (
                strings(&b, "period")[i].clone().unwrap(),
                strings(&b, "signal")[i].clone().unwrap(),
                ints(&b, "reviews")[i].unwrap(),
                ints(&b, "distinct_evaluator_keys")[i].unwrap(),
                ints(&b, "departments")[i].unwrap(),
                ints(&b, "span_seconds")[i].unwrap(),
            )
        })
        .collect();
    let expected = vec![
        // 09-10 16:00 → 09-20 16:00 CST
        (
            "2026-09",
            "bad_reviews_across_departments",
            3,
            1,
            3,
            10 * 86_400,
        ),
        // 10:00:00 → 10:07:20
        ("2026-10", "good_burst_few_keys", 12, 2, 1, 440),
        ("2026-10", "good_burst_one_window", 12, 2, 1, 440),
    ];
    let expected: Vec<(String, String, i64, i64, i64, i64)> = expected
        .into_iter()
        .map(|(p, s, a, b, c, d)| (p.to_owned(), s.to_owned(), a, b, c, d))
        .collect();
    assert_eq!(rows, expected);
    assert_eq!(
        strings(&b, "entity_id")[2].as_deref(),
        Some("11410328MB00000116/W101")
    );
    let keys = b.column_by_name("evaluator_keys").unwrap().as_list::<i32>();
    for i in 0..keys.len() {
        for key in keys.value(i).as_string::<i32>().iter().flatten() {
            assert!(
                key.len() == 64 && key.bytes().all(|c| c.is_ascii_hexdigit()),
                "{key}"
            );
        }
    }
}

/// No clear-text identity reaches a derived table: no cell of any of them holds an identity the
/// fixture sent, nor a staff name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derived_tables_hold_no_clear_text_identity() {
    let dir = tempfile::tempdir().unwrap();
    let lake = refreshed_fixture(dir.path()).await;
    let text = std::fs::read_to_string(fixture("analytics.ndjson")).unwrap();
    let mut secrets: BTreeSet<String> = BTreeSet::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for field in ["userCert", "staffName"] {
            if let Some(s) = v[field].as_str() {
                secrets.insert(s.to_owned());
            }
        }
    }
    for table in ["rankings", "warnings", "hotspots", "fraud_signals"] {
        let batches = sql(&lake, &format!("SELECT * FROM {table}")).await;
        let rendered = arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        assert!(rendered.len() > 100, "{table} is not empty");
        for secret in &secrets {
            assert!(
                !rendered.contains(secret.as_str()),
                "{table} holds {secret}"
            );
        }
    }
}

/// A second refresh with nothing new rebuilds nothing; `report` rebuilds the same bytes; a new
/// October evaluation touches only the periods that contain it (and the ones after it); later
/// hotspot windows close the hotspots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_is_incremental_and_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let lake = fixture_lake(dir.path()).await;
    let config = fixture_config();
    let first = haochaping::analytics::refresh_with(&root(&lake), AS_OF_US, &config)
        .await
        .unwrap();
    assert!(first.full);
    assert!(first.rankings_rebuilt.contains(&"month/2026-08".to_owned()));
    assert!(!first.hotspots_opened.is_empty());
    assert!(first.hotspots_closed.is_empty());
    let october = lake.join("tables/rankings/period_type=month/period=2026-10/data.parquet");
    let bytes = std::fs::read(&october).unwrap();

    let second = haochaping::analytics::refresh_with(&root(&lake), AS_OF_US, &config)
        .await
        .unwrap();
    assert!(!second.full);
    assert_eq!(second.touched_days, 0);
    assert!(second.rankings_rebuilt.is_empty(), "{second:?}");
    assert!(second.hotspots_opened.is_empty() && second.hotspots_closed.is_empty());

    let period = haochaping::analytics::report::parse_period("2026-10").unwrap();
    let notice = haochaping::analytics::report::report(&root(&lake), period, &config)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(&october).unwrap(),
        bytes,
        "rebuilt byte for byte"
    );
    let rows: usize = notice.rows.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(rows, 5, "five departments");

    // One more October evaluation, from a second file.
    let extra = dir.path().join("late.ndjson");
    let line = std::fs::read_to_string(fixture("analytics.ndjson"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .replace("\"F-0001\"", "\"F-LATE\"")
        .replace("2026-08-01 09:10:00", "2026-10-30 09:10:00");
    std::fs::write(&extra, line + "\n").unwrap();
    let mut ingest = IngestConfig::default();
    ingest.lake.path = lake.clone().into();
    ingest.identity.secret = Some(SECRET.into());
    haochaping::offline::ingest_file(ingest, &extra, Arc::new(Stats::default()))
        .await
        .unwrap();
    let later = AS_OF_US + 3 * 86_400_000_000;
    let third = haochaping::analytics::refresh_with(&root(&lake), later, &config)
        .await
        .unwrap();
    assert_eq!(third.touched_days, 1);
    let mut rebuilt = third.rankings_rebuilt.clone();
    rebuilt.sort();
    assert_eq!(
        rebuilt,
        vec![
            "half_year/2026-H2",
            "month/2026-10",
            "rolling_30d/2026-10-30",
            "year/2026"
        ]
    );
    assert_eq!(third.fraud_months_rebuilt, vec!["2026-10"]);
    assert_ne!(std::fs::read(&october).unwrap(), bytes);
    // Three days later the 1 h and 24 h windows hold nothing: those hotspots closed.
    assert!(third
        .hotspots_closed
        .iter()
        .any(|id| id == "item:11410328MB00000116T1B:1h:bad_review_concentration"));
    // The 7-day window still holds the five bad reviews: that hotspot stays open.
    assert!(!third
        .hotspots_closed
        .iter()
        .any(|id| id == "item:11410328MB00000116T1B:7d:bad_review_concentration"));
    let rows = sql(&lake, "SELECT count(*) AS n FROM evaluations").await;
    assert_eq!(
        ints(&rows[0], "n"),
        vec![Some(fixture_rows().len() as i64 + 1)]
    );
}

/// A lake without derived tables answers with empty tables of the right columns.
#[tokio::test]
async fn an_empty_lake_has_empty_tables() {
    let dir = tempfile::tempdir().unwrap();
    for table in [
        "evaluations",
        "effective_evaluations",
        "exclusions",
        "rankings",
        "warnings",
        "hotspots",
        "fraud_signals",
    ] {
        let batches = sql(dir.path(), &format!("SELECT count(*) AS n FROM {table}")).await;
        assert_eq!(ints(&batches[0], "n"), vec![Some(0)], "{table}");
    }
    let batches = sql(
        dir.path(),
        "SELECT period_type, period, entity_id FROM rankings WHERE period = '2026-10'",
    )
    .await;
    assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 0);
    let report = haochaping::analytics::refresh(&root(dir.path()), AS_OF_US)
        .await
        .unwrap();
    assert_eq!((report.hotspots, report.warnings), (0, 0));
    // A lake folder that is not there is an error, not an empty lake (nor created by a query).
    let nope = dir.path().join("nope");
    let missing = haochaping(&["query", "--lake", nope.to_str().unwrap(), "SELECT 1"]);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("no such folder"), "{stderr}");
    assert!(!nope.exists());
}

fn haochaping(args: &[&str]) -> std::process::Output {
    crate::support::haochaping()
        .args(args)
        .env("HAOCHAPING_IDENTITY_SECRET", SECRET)
        .env("HAOCHAPING_LOG", "warn")
        .output()
        .unwrap()
}

/// `ingest --from-file`, `analyze`, `report` and `query` from the command line: the notice, every
/// format, one-line errors for bad SQL and DDL, empty tables for an empty lake.
#[test]
fn the_commands_analyze_report_and_query() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let lake = lake.to_str().unwrap();
    let fixture = fixture("analytics.ndjson");
    let out = haochaping(&[
        "ingest",
        "--from-file",
        fixture.to_str().unwrap(),
        "--lake",
        lake,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = haochaping(&[
        "analyze",
        "--lake",
        lake,
        "--as-of",
        "2026-10-20T10:00:00+08:00",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["full"], true);
    assert!(summary["hotspots"].as_u64().unwrap() > 0);

    // No exclusions in this lake: D3 keeps its excluded bad review, so there is no tie.
    let out = haochaping(&["report", "--lake", lake, "--period", "2026-10"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("政务服务好差评通报 2026-10 (2026-10-01 – 2026-10-31)"),
        "{text}"
    );
    let bottom = text.lines().find(|l| l.contains("新安县税务局")).unwrap();
    assert!(bottom.starts_with("| 5 "), "{bottom}");
    assert!(bottom.contains("| 41.67 "), "{bottom}");
    let out = haochaping(&[
        "report", "--lake", lake, "--period", "2026-10", "--format", "csv",
    ]);
    let csv = String::from_utf8(out.stdout).unwrap();
    assert_eq!(csv.lines().count(), 6, "{csv}");
    let out = haochaping(&["report", "--lake", lake, "--period", "October"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: --period \"October\""));

    let sql = "SELECT entity_id, good, bad FROM rankings WHERE period_type = 'month' \
               AND period = '2026-08' AND entity_type = 'department' ORDER BY entity_id";
    let out = haochaping(&["query", "--lake", lake, "--format", "csv", sql]);
    let csv = String::from_utf8(out.stdout).unwrap();
    // August, from the fixture's plan: D1 11, D2 10, D3 9, D4 6, D5 8 good of 12.
    assert_eq!(
        csv,
        "entity_id,good,bad\n\
         11410323MB0000044A,6,6\n\
         11410323MB0000055E,8,4\n\
         11410328MB00000116,11,1\n\
         11410328MB0000022A,10,2\n\
         11410328MB0000033E,9,3\n"
    );
    let out = haochaping(&["query", "--lake", lake, "--format", "json", sql]);
    let lines = String::from_utf8(out.stdout).unwrap();
    let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!(first["good"], 6);
    let parquet = dir.path().join("out.parquet");
    let out = haochaping(&[
        "query",
        "--lake",
        lake,
        "--format",
        "parquet",
        "--output",
        parquet.to_str().unwrap(),
        sql,
    ]);
    assert!(out.status.success());
    assert_eq!(&std::fs::read(&parquet).unwrap()[..4], b"PAR1");

    for (bad, expected) in [
        (
            "SELEC 1",
            "error: query: sql parser error: Expected: an SQL statement, found: SELEC",
        ),
        (
            "SELECT * FROM nope",
            "error: query: table 'datafusion.public.nope' not found",
        ),
        ("DROP TABLE evaluations", "error: query: DDL not supported"),
    ] {
        let out = haochaping(&["query", "--lake", lake, bad]);
        assert_eq!(out.status.code(), Some(1), "{bad}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with(expected), "{stderr}");
    }

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = haochaping(&[
        "query",
        "--lake",
        empty.to_str().unwrap(),
        "--format",
        "csv",
        "SELECT period, entity_id FROM rankings",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "period,entity_id\n");
}
