//! In-process throughput of each stage and of the whole path, on a generated province:
//! decode → validate → identity → dedup → Arrow rows → Hive split → Parquet, each stage the
//! engine's own function (the files with `Lake::encode_parts`, on every core, as a flush does).
//!
//! `cargo bench --bench pipeline` (set `HAOCHAPING_BENCH_EVENTS`, default 100 000). Under
//! `cargo nextest`/`cargo test` each benchmark runs once on a small input as a smoke test.
//! The dedup lookups run in a state of `HAOCHAPING_BENCH_DEDUP_KEYS` keys (default 20 M, or 100 000
//! when only `HAOCHAPING_BENCH_EVENTS` is set, as the smoke tests set it).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use haochaping::config::LakeConfig;
use haochaping::decode::{decode, WireValue, FIELD_NAMES};
use haochaping::generate::{Generator, GeneratorConfig};
use haochaping::lake::Lake;
use haochaping::sink::parquet::{EvaluationRows, TableRows};
use haochaping::telemetry::Stats;
use haochaping::transform::dedup::{dedup_key, DedupState};
use haochaping::transform::identity::EvaluatorKeyer;
use haochaping::transform::validate::{validate, AssessNumber, ValidationRules};
use haochaping::transform::{process_run, Message, Processor};

fn events() -> Vec<Vec<u8>> {
    let count = std::env::var("HAOCHAPING_BENCH_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let mut config = GeneratorConfig::new(
        "41",
        chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap_or_default(),
    );
    config.dup_rate = 0.01;
    config.bad_rate = 0.005;
    let generator = Generator::new(config).expect("generator");
    generator.take(count).map(|e| e.payload).collect()
}

fn processor() -> Processor {
    Processor::new(
        ValidationRules::default(),
        EvaluatorKeyer::new(b"bench-secret-0123456789"),
    )
}

type Parts = Vec<Box<dyn TableRows>>;

/// The engine's path on one thread: prepare (decode, validate, identity), dedup in offset order,
/// the rows of what it keeps; ready for [`Lake::encode_parts`].
fn process_all(processor: &Processor, events: &[Vec<u8>], now: i64) -> Parts {
    let mut dedup = DedupState::default();
    let stats = Stats::default();
    let messages = Message::numbered(0, events.iter().map(Vec::as_slice));
    let (parts, kept) = process_run(
        processor,
        0,
        &messages,
        now,
        1,
        &mut dedup,
        &stats,
        |_, _| {},
    );
    black_box(kept);
    parts
}

fn stages(c: &mut Criterion) {
    let events = events();
    let bytes: usize = events.iter().map(Vec::len).sum();
    let now = chrono::Utc::now().timestamp_micros();
    let rules = ValidationRules::default();
    let processor = processor();

    let mut group = c.benchmark_group("stages");
    group.sample_size(10);
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("decode", |b| {
        b.iter(|| events.iter().filter(|p| decode(p, 1 << 16).is_ok()).count())
    });
    group.bench_function("decode_validate", |b| {
        b.iter(|| {
            events
                .iter()
                .filter(|p| {
                    decode(p, 1 << 16)
                        .and_then(|w| validate(w, &rules, now))
                        .is_ok()
                })
                .count()
        })
    });
    group.bench_function("process_to_rows", |b| {
        b.iter(|| process_all(&processor, &events, now).len())
    });
    group.bench_function("rows_to_parquet", |b| {
        b.iter_batched(
            || process_all(&processor, &events, now),
            files_bytes,
            BatchSize::PerIteration,
        )
    });
    group.finish();

    let mut group = c.benchmark_group("end_to_end");
    group.sample_size(10);
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("events", |b| {
        b.iter(|| end_to_end(&processor, &events, now))
    });
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("json_bytes", |b| {
        b.iter(|| end_to_end(&processor, &events, now))
    });
    group.finish();
}

/// What the libraries alone cost per event, beside the stages above (issue 16's bound): the JSON
/// parse with nothing kept (sonic-rs's own DOM, its fastest full parse, and its serde path into the
/// engine's wire struct, which is `stages/decode`), simd-json's tape (alone, and walked into the
/// wire fields), the Arrow builders alone (rows of evaluations
/// already decoded, validated and keyed), and one pass from bytes to Arrow columns by arrow's own
/// JSON reader (every wire field as text, nothing checked). `stages/rows_to_parquet` is the
/// encoder's.
fn floor(c: &mut Criterion) {
    let events = events();
    let now = chrono::Utc::now().timestamp_micros();
    let processor = processor();
    let mut group = c.benchmark_group("floor");
    group.sample_size(10);
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("sonic_value_parse", |b| {
        b.iter(|| {
            events
                .iter()
                .filter(|p| sonic_rs::from_slice::<sonic_rs::Value>(p).is_ok())
                .count()
        })
    });
    group.bench_function("sonic_serde_skip", |b| {
        b.iter(|| {
            events
                .iter()
                .filter(|p| sonic_rs::from_slice::<serde::de::IgnoredAny>(p).is_ok())
                .count()
        })
    });
    // simd-json (simdjson's port) parses a writable copy of each message into a flat tape whose
    // strings borrow from that copy; `simd_json_tape_fields` also walks the tape into the engine's
    // wire values (the 21 fields by name, duplicates refused), what `stages/decode` gives.
    let mut copy = Vec::new();
    let mut buffers = simd_json::Buffers::default();
    // How many events `walk` takes something from, each parsed from a fresh copy.
    let mut on_tapes = |walk: &dyn Fn(&[simd_json::Node]) -> bool| {
        events
            .iter()
            .filter(|p| {
                copy.clear();
                copy.extend_from_slice(p);
                simd_json::to_tape_with_buffers(&mut copy, &mut buffers)
                    .is_ok_and(|tape| walk(&tape.0))
            })
            .count()
    };
    group.bench_function("simd_json_tape", |b| b.iter(|| on_tapes(&|_| true)));
    group.bench_function("simd_json_tape_fields", |b| {
        b.iter(|| on_tapes(&|nodes| black_box(tape_fields(nodes)).is_some()))
    });
    // The lines arrow's reader takes (a malformed line would fail its whole batch), as one buffer.
    let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(
        FIELD_NAMES
            .iter()
            .map(|name| arrow::datatypes::Field::new(*name, arrow::datatypes::DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let arrow_json = |ndjson: &[u8]| -> Result<usize, arrow::error::ArrowError> {
        let mut decoder = arrow::json::ReaderBuilder::new(schema.clone())
            .with_batch_size(16_384)
            .with_coerce_primitive(true)
            .build_decoder()?;
        let (mut rows, mut rest) = (0, ndjson);
        loop {
            let read = decoder.decode(rest)?;
            rest = &rest[read..];
            if let Some(batch) = decoder.flush()? {
                rows += batch.num_rows();
            }
            if rest.is_empty() {
                return Ok(rows);
            }
        }
    };
    let ndjson: Vec<u8> = events
        .iter()
        .map(|p| [p.as_slice(), b"\n"].concat())
        .filter(|line| matches!(arrow_json(line), Ok(1)))
        .flatten()
        .collect();
    group.bench_function("arrow_json_columns", |b| {
        b.iter(|| arrow_json(&ndjson).expect("decode"))
    });
    let valid: Vec<_> = events
        .iter()
        .enumerate()
        .filter_map(|(i, p)| processor.check(p, 0, i as i64, now).ok())
        .map(|(_, valid)| valid)
        .collect();
    group.bench_function("arrow_builders", |b| {
        b.iter(|| {
            let mut rows = EvaluationRows::with_capacity(valid.len());
            for v in &valid {
                v.push_to(&mut rows);
            }
            rows.len()
        })
    });
    group.finish();
}

/// The wire fields of a message's simd-json tape, by name (`None` for anything but an object of
/// distinct keys), as [`haochaping::decode::WireValue`]s borrowing the tape's strings.
fn tape_fields<'a>(nodes: &[simd_json::Node<'a>]) -> Option<Vec<Option<WireValue<'a>>>> {
    let mut fields: Vec<Option<WireValue<'a>>> = vec![None; FIELD_NAMES.len()];
    let Some(simd_json::Node::Object { len, .. }) = nodes.first() else {
        return None;
    };
    let mut at = 1;
    for _ in 0..*len {
        let Some(simd_json::Node::String(key)) = nodes.get(at) else {
            return None;
        };
        at += 1;
        let value = tape_value(nodes, &mut at)?;
        if let Some(slot) = FIELD_NAMES.iter().position(|name| name == key) {
            if fields[slot].replace(value).is_some() {
                return None;
            }
        }
    }
    Some(fields)
}

/// One value of the tape, containers walked by recursion: enough for the generated events this
/// bench reads (the engine's decoder bounds nesting before it parses, see `decode::parse`).
fn tape_value<'a>(nodes: &[simd_json::Node<'a>], at: &mut usize) -> Option<WireValue<'a>> {
    use simd_json::{Node, StaticNode};
    let node = *nodes.get(*at)?;
    *at += 1;
    Some(match node {
        Node::String(s) => WireValue::Str(std::borrow::Cow::Borrowed(s)),
        Node::Static(StaticNode::Null) => WireValue::Null,
        Node::Static(StaticNode::Bool(b)) => WireValue::Bool(b),
        Node::Static(StaticNode::I64(v)) => WireValue::Int(v),
        Node::Static(StaticNode::U64(v)) => {
            i64::try_from(v).map_or(WireValue::Float(v as f64), WireValue::Int)
        }
        Node::Static(StaticNode::F64(v)) => WireValue::Float(v),
        Node::Array { len, .. } => {
            let mut items = Vec::with_capacity(len);
            for _ in 0..len {
                items.push(tape_value(nodes, at)?);
            }
            WireValue::List(items)
        }
        Node::Object { count, .. } => {
            *at += count;
            WireValue::Object
        }
    })
}

fn end_to_end(processor: &Processor, events: &[Vec<u8>], now: i64) -> usize {
    files_bytes(process_all(processor, events, now))
}

/// The bytes of the Parquet files a flush of `parts` writes, at the lake's default zstd level.
fn files_bytes(parts: Parts) -> usize {
    Lake::encode_parts(parts, LakeConfig::default().zstd_level)
        .expect("encode")
        .iter()
        .map(|(_, file)| file.len())
        .sum()
}

fn dedup(c: &mut Criterion) {
    let keys: Vec<u64> = (0..1_000_000u64)
        .map(|i| dedup_key(&format!("41032820261101{i:09}"), AssessNumber::First))
        .collect();
    let mut state = DedupState::default();
    for key in &keys {
        state.check(*key, key.rotate_left(7), 20_000);
    }
    eprintln!(
        "dedup state: {} keys, {} heap bytes, {:.1} bytes/key",
        state.len(),
        state.heap_bytes(),
        state.heap_bytes() as f64 / state.len() as f64
    );
    let mut group = c.benchmark_group("dedup");
    group.sample_size(10);
    group.throughput(Throughput::Elements(keys.len() as u64));
    group.bench_function("check_1m_new_keys", |b| {
        b.iter(|| {
            let mut state = DedupState::default();
            keys.iter()
                .filter(|k| {
                    state.check(**k, k.rotate_left(7), 20_000)
                        == haochaping::transform::dedup::DedupOutcome::New
                })
                .count()
        })
    });
    group.finish();

    // A replay's later hours: every lookup in a state of tens of millions of keys (a redelivery
    // changes nothing, so one state serves every iteration). Built on first use: a smoke run of
    // another bench does not pay for it.
    let large: u64 = std::env::var("HAOCHAPING_BENCH_DEDUP_KEYS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(if std::env::var_os("HAOCHAPING_BENCH_EVENTS").is_some() {
            100_000
        } else {
            20_000_000
        });
    let key = |i: u64| dedup_key(&format!("41032820261101{i:09}"), AssessNumber::First);
    let again: Vec<u64> = (0..1_000_000u64)
        .map(|i| key(i.wrapping_mul(0x9e37_79b9) % large))
        .collect();
    let mut state: Option<DedupState> = None;
    let mut group = c.benchmark_group("dedup");
    group.sample_size(10);
    group.throughput(Throughput::Elements(again.len() as u64));
    group.bench_function(format!("check_1m_redeliveries_in_{large}_keys"), |b| {
        let state = state.get_or_insert_with(|| {
            let mut state = DedupState::default();
            for i in 0..large {
                let k = key(i);
                state.check(k, k.rotate_left(7), 20_000);
            }
            state
        });
        b.iter(|| {
            again
                .iter()
                .filter(|k| {
                    state.check(**k, k.rotate_left(7), 20_000)
                        == haochaping::transform::dedup::DedupOutcome::Duplicate
                })
                .count()
        })
    });
    group.finish();
}

/// The closed loop's pure rules per bad review (deadlines on the working-day calendar under the
/// region's policy, then the alerts due), and the default evaluation of an unevaluated case: what
/// `analyze` and ingest's rounds do per row after the SQL.
fn closed_loop(c: &mut Criterion) {
    use haochaping::analytics::closed_loop::{assess, due_alerts, Review};
    use haochaping::analytics::defaults::{default_for, Unevaluated};
    use haochaping::policy::{Calendar, Policies};
    use haochaping::region::RegionCode;

    let count: usize = std::env::var("HAOCHAPING_BENCH_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let policies = Policies::shipped().expect("policies");
    let calendar = Calendar::official();
    // Reviews over 2025, in the five presets' regions and one without a file of its own.
    let areas = [
        "410328000000",
        "220204000000",
        "350102000000",
        "411002000000",
        "532801000000",
        "110101000000",
    ];
    let start = 1_735_660_800_000_000i64; // 2025-01-01 00:00 CST
    let reviews: Vec<Review> = (0..count)
        .map(|i| {
            let given = start + (i as i64 % 330) * 86_400_000_000 + (i as i64 % 86_400) * 1_000_000;
            Review {
                project_no: format!("P{i}"),
                assess_number: 1,
                satisfaction: 1,
                area_code: areas[i % areas.len()].to_owned(),
                given_at: given,
                forwarded_at: (i % 3 != 0).then_some(given + 3_600_000_000),
                rectified_at: (i % 4 == 0).then_some(given + 5 * 86_400_000_000),
                ..Review::default()
            }
        })
        .collect();
    let as_of = start + 365 * 86_400_000_000;
    let mut group = c.benchmark_group("closed_loop");
    group.sample_size(10);
    group.throughput(Throughput::Elements(reviews.len() as u64));
    group.bench_function("assess_and_due_alerts", |b| {
        b.iter(|| {
            let mut alerts = 0;
            for review in &reviews {
                let code = RegionCode::parse(&review.area_code).expect("area");
                let policy = &policies.for_region(&code).policy;
                let due = assess(review, &policy.deadlines, &policy.revisit, calendar);
                alerts += due_alerts(review, &due, as_of).len();
            }
            black_box(alerts)
        })
    });
    let cases: Vec<Unevaluated> = reviews
        .iter()
        .map(|r| Unevaluated {
            project_no: r.project_no.clone(),
            task_code: "T".into(),
            task_name: "事项".into(),
            dept_code: "D".into(),
            dept_name: None,
            area_code: r.area_code.clone(),
            province_code: r.area_code[..2].to_owned() + "0000",
            city_code: None,
            county_code: None,
            applicant_key: None,
            applied_at_us: Some(r.given_at - 86_400_000_000),
            finished_at_us: r.given_at,
        })
        .collect();
    group.bench_function("default_evaluations", |b| {
        b.iter(|| {
            cases
                .iter()
                .filter(|c| default_for(c, &policies, calendar, as_of).is_ok())
                .count()
        })
    });
    group.finish();
}

criterion_group!(benches, stages, floor, dedup, closed_loop);
criterion_main!(benches);
