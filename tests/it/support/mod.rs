//! Shared test support: a real Tansu broker on a free port, producing generated events, reading the
//! dead-letter topic and the lake back.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow::datatypes::Int8Type;
use haochaping::generate::{self, Generator, GeneratorConfig, ProduceReport};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::TopicPartitionList;

pub const SECRET: &str = "test-secret-0123456789";

/// Where `.ci/run` installs Tansu; `HAOCHAPING_TANSU_BIN` overrides.
pub fn tansu_binary() -> PathBuf {
    if let Ok(path) = std::env::var("HAOCHAPING_TANSU_BIN") {
        return PathBuf::from(path);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let cached = PathBuf::from(home).join(".cache/haochaping/tansu/bin/tansu");
    assert!(
        cached.exists(),
        "Tansu broker not found at {}: run `bash .ci/run` once (it installs Tansu 0.6.0), or set HAOCHAPING_TANSU_BIN",
        cached.display()
    );
    cached
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A Tansu broker process with in-memory storage, killed on drop.
pub struct Tansu {
    child: Child,
    pub brokers: String,
}

impl Tansu {
    pub fn start() -> Self {
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu_binary())
            .args([
                "broker",
                "--storage-engine",
                "memory://tansu/",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tansu");
        let tansu = Self {
            child,
            brokers: format!("127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not start listening");
            std::thread::sleep(Duration::from_millis(100));
        }
        tansu
    }

    pub async fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()
            .expect("admin client");
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let results = admin
            .create_topics([&topic], &AdminOptions::new())
            .await
            .expect("create topics");
        for result in results {
            result.expect("topic created");
        }
    }
}

impl Tansu {
    /// A broker with the topics an ingest uses: `evaluations` with `partitions` partitions, and
    /// `evaluations.dlq` and `alerts` with one each.
    pub async fn with_topics(partitions: i32) -> Self {
        let broker = Self::start();
        broker.create_topic("evaluations", partitions).await;
        broker.create_topic("evaluations.dlq", 1).await;
        broker.create_topic("alerts", 1).await;
        broker
    }

    /// Deletes a topic (its records and offsets go with it).
    pub async fn delete_topic(&self, name: &str) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()
            .expect("admin client");
        for result in admin
            .delete_topics(&[name], &AdminOptions::new())
            .await
            .expect("delete topics")
        {
            result.expect("topic deleted");
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A generator for yesterday (CST), so no event lies in the future.
pub fn generator(seed: u64, dup_rate: f64, bad_rate: f64) -> Generator {
    let mut config = GeneratorConfig::new("41", haochaping::commands::yesterday_cst());
    config.seed = seed;
    config.dup_rate = dup_rate;
    config.bad_rate = bad_rate;
    Generator::new(config).expect("generator")
}

/// What a test produced: the report, the exact slots that must land, and the identity values sent.
pub struct Produced {
    pub report: ProduceReport,
    pub slots: HashSet<(String, i8)>,
    pub identities: HashSet<String>,
}

impl Produced {
    pub fn new() -> Self {
        Self {
            report: ProduceReport::default(),
            slots: HashSet::new(),
            identities: HashSet::new(),
        }
    }

    pub fn record_event(&mut self, event: &generate::GeneratedEvent) {
        self.report.record(event);
        if let Some((project, number)) = &event.slot {
            self.slots.insert((project.clone(), *number as i8));
        }
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&event.payload) {
            for field in ["userCert", "userPhone"] {
                if let Some(v) = value.get(field).and_then(|v| v.as_str()) {
                    self.identities.insert(v.to_owned());
                }
            }
        }
    }
}

/// Produces `events` generated events to `topic`.
pub async fn produce(
    brokers: &str,
    topic: &str,
    generator: &mut Generator,
    events: u64,
    into: &mut Produced,
) {
    // One record per batch: Tansu 0.6.0 answers a fetch from an offset inside a record batch with
    // the *next* batch (probed: offset 990 of a batch 0–994 came back as 995), so a restart at a
    // commit point inside a batch would skip records. Real Kafka returns the containing batch.
    let producer: rdkafka::producer::FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("batch.num.messages", "1")
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    let mut seen = Vec::new();
    generate::produce(&producer, topic, generator, events, None, |e| {
        seen.push(e.clone())
    })
    .await
    .expect("produce");
    for event in &seen {
        into.record_event(event);
    }
}

/// Produces `(key, payload)` records to `topic`, one record per batch (see [`produce`]).
pub async fn produce_records(brokers: &str, topic: &str, records: &[(String, Vec<u8>)]) {
    let producer: rdkafka::producer::FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("batch.num.messages", "1")
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    generate::produce_records(&producer, topic, records)
        .await
        .expect("produce");
}

/// Every (`project_no`, `assess_number`) row of the lake, with its count.
pub fn lake_slots(lake: &Path) -> HashMap<(String, i8), usize> {
    let mut counts = HashMap::new();
    for file in parquet_files(&lake.join("evaluations")) {
        for batch in read_file(&file) {
            count_slots(&batch, &mut counts);
        }
    }
    counts
}

/// Every string cell of the lake.
pub fn lake_strings(lake: &Path) -> Vec<String> {
    let mut cells = Vec::new();
    for file in parquet_files(&lake.join("evaluations")) {
        for batch in read_file(&file) {
            for column in batch.columns() {
                if let Some(strings) = column.as_string_opt::<i32>() {
                    cells.extend(strings.iter().flatten().map(str::to_owned));
                } else if let Some(list) = column.as_list_opt::<i32>() {
                    if let Some(strings) = list.values().as_string_opt::<i32>() {
                        cells.extend(strings.iter().flatten().map(str::to_owned));
                    }
                }
            }
        }
    }
    cells
}

/// Every Parquet file below `dir`, in path order.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    walk_files(dir)
        .into_iter()
        .filter(|path| path.extension().is_some_and(|e| e == "parquet"))
        .collect()
}

/// Writes `count` events of `generator` to `path` as NDJSON, and records them in `produced`.
pub fn write_ndjson(path: &Path, generator: &mut Generator, count: usize, produced: &mut Produced) {
    let mut lines = Vec::new();
    for _ in 0..count {
        let event = generator.next_event();
        lines.extend_from_slice(&event.payload);
        lines.push(b'\n');
        produced.record_event(&event);
    }
    std::fs::write(path, lines).unwrap();
}

/// `haochaping ingest --from-file <input> --lake <lake>` with the tests' identity secret, its
/// summary on stdout and its log on stderr, both piped.
pub fn ingest_file_command(input: &Path, lake: &Path) -> Command {
    let mut command = haochaping();
    command
        .args(["ingest", "--from-file"])
        .arg(input)
        .arg("--lake")
        .arg(lake)
        .env("HAOCHAPING_IDENTITY_SECRET", SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Every batch of one Parquet file.
pub fn read_parquet(path: &Path) -> Vec<arrow::array::RecordBatch> {
    read_file(path)
}

fn read_file(path: &Path) -> Vec<arrow::array::RecordBatch> {
    let file = std::fs::File::open(path).unwrap();
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

/// Asserts the lake holds exactly the expected slots, each once.
pub fn assert_exactly_once(lake: &Path, expected: &HashSet<(String, i8)>) {
    let counts = lake_slots(lake);
    let doubled: HashSet<&(String, i8)> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(slot, _)| slot)
        .take(3)
        .collect();
    if !doubled.is_empty() {
        // Which files hold them, and the lake's logs: what a failure needs to be understood.
        let mut holders = Vec::new();
        for file in parquet_files(&lake.join("evaluations")) {
            let mut here = HashMap::new();
            for batch in read_file(&file) {
                count_slots(&batch, &mut here);
            }
            for slot in here.keys().filter(|s| doubled.contains(s)) {
                holders.push(format!("{slot:?} in {}", file.display()));
            }
        }
        let mut logs = Vec::new();
        for record in walk_files(&lake.join("_haochaping/log")) {
            logs.push(format!(
                "{}: {}",
                record.display(),
                std::fs::read_to_string(&record).unwrap_or_default()
            ));
        }
        panic!(
            "duplicated rows in the lake:\n{}\nlogs:\n{}",
            holders.join("\n"),
            logs.join("\n")
        );
    }
    assert_slots_once(&counts, expected);
}

/// Every file below `dir`, at any depth, in path order (staged and stray files included).
pub fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk_files(&path));
        } else {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// Counts each (`project_no`, `assess_number`) of some evaluation rows into `counts`.
pub fn count_slots(batch: &arrow::array::RecordBatch, counts: &mut HashMap<(String, i8), usize>) {
    let project = batch
        .column_by_name("project_no")
        .unwrap()
        .as_string::<i32>();
    let number = batch
        .column_by_name("assess_number")
        .unwrap()
        .as_primitive::<Int8Type>();
    for row in 0..batch.num_rows() {
        *counts
            .entry((project.value(row).to_owned(), number.value(row)))
            .or_insert(0) += 1;
    }
}

/// Asserts slot counts hold exactly the expected slots, each once.
pub fn assert_slots_once(counts: &HashMap<(String, i8), usize>, expected: &HashSet<(String, i8)>) {
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(
        duplicated.is_empty(),
        "duplicated rows in the lake: {duplicated:?}"
    );
    let missing: Vec<_> = expected
        .iter()
        .filter(|s| !counts.contains_key(*s))
        .take(5)
        .collect();
    let missing_count = expected.iter().filter(|s| !counts.contains_key(*s)).count();
    assert!(
        missing.is_empty(),
        "missing from the lake ({missing_count} of {}): {missing:?}",
        expected.len()
    );
    let unexpected: Vec<_> = counts
        .keys()
        .filter(|s| !expected.contains(*s))
        .take(5)
        .collect();
    assert!(
        unexpected.is_empty(),
        "unexpected rows in the lake: {unexpected:?}"
    );
    assert_eq!(counts.len(), expected.len());
}

/// One dead-letter record as read back.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub payload: Vec<u8>,
    pub headers: BTreeMap<String, String>,
}

/// Reads the whole dead-letter topic (until it has been quiet for two seconds).
pub fn read_topic(brokers: &str, topic: &str, partitions: i32) -> Vec<DeadLetter> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{}", free_port()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&list).unwrap();
    let mut records = Vec::new();
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(3) {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                quiet_since = Instant::now();
                let mut headers = BTreeMap::new();
                if let Some(h) = message.headers() {
                    for header in h.iter() {
                        headers.insert(
                            header.key.to_owned(),
                            String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned(),
                        );
                    }
                }
                records.push(DeadLetter {
                    payload: message.payload().unwrap_or_default().to_vec(),
                    headers,
                });
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    records
}

/// Dead letters counted by reason, once per source position (a crash may park a record twice).
pub fn count_by_reason(records: &[DeadLetter]) -> BTreeMap<String, u64> {
    let mut seen = HashSet::new();
    let mut counts = BTreeMap::new();
    for record in records {
        let position = (
            record.headers.get("haochaping.source.partition").cloned(),
            record.headers.get("haochaping.source.offset").cloned(),
        );
        if seen.insert(position) {
            *counts
                .entry(
                    record
                        .headers
                        .get("haochaping.reason")
                        .cloned()
                        .unwrap_or_default(),
                )
                .or_insert(0) += 1;
        }
    }
    counts
}

pub fn expected_by_reason(report: &ProduceReport) -> BTreeMap<String, u64> {
    report
        .dead_letters
        .iter()
        .map(|(r, n)| (r.code().to_owned(), *n))
        .collect()
}

/// The `haochaping` binary with `ingest` arguments for a broker and lake.
/// The binary, with its metrics exporter off unless a test asks for one: tests run side by side,
/// and each would otherwise listen on the default port.
pub fn haochaping() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_haochaping"));
    command.env("HAOCHAPING_METRICS_ADDR", "off");
    command
}

pub fn ingest_command(brokers: &str, lake: &Path, group: &str, extra: &[&str]) -> Command {
    ingest_command_at(brokers, lake.to_str().unwrap(), group, extra)
}

/// [`ingest_command`] for a lake given as the operator writes it (a folder or an `s3://` URL).
pub fn ingest_command_at(brokers: &str, lake: &str, group: &str, extra: &[&str]) -> Command {
    let mut command = haochaping();
    command
        .args([
            "ingest",
            "--brokers",
            brokers,
            "--lake",
            lake,
            "--group",
            group,
        ])
        .args(extra)
        .env("HAOCHAPING_IDENTITY_SECRET", SECRET)
        .env("HAOCHAPING_LOG", "info");
    command
}

/// A fixed day, two batches of one partition, through the same processor as the pipeline.
pub async fn fixture_lake(root: &Path) -> u64 {
    let mut config = haochaping::generate::GeneratorConfig::new(
        "35",
        chrono::NaiveDate::from_ymd_opt(2026, 11, 2).unwrap(),
    );
    config.seed = 42;
    config.dup_rate = 0.01;
    config.bad_rate = 0.01;
    let mut generator = haochaping::generate::Generator::new(config).unwrap();
    let processor = haochaping::transform::Processor::new(
        Default::default(),
        haochaping::transform::identity::EvaluatorKeyer::new(b"golden-secret-0123"),
    );
    let lake =
        haochaping::lake::Lake::open_local(root, haochaping::sink::parquet::EVALUATIONS_TABLE)
            .unwrap();
    let mut lease = lake.recover("evaluations", 0).await.unwrap().lease;
    let mut dedup = haochaping::transform::dedup::DedupState::default();
    let mut accepted = 0;
    let now = chrono::Utc::now().timestamp_micros();
    let stats = haochaping::telemetry::Stats::default();
    for (first, last) in [(0, 9_999), (10_000, 19_999)] {
        // The engine's own stages: prepare, dedup in offset order, keep what dedup accepts.
        let events: Vec<_> = (first..=last).map(|_| generator.next_event()).collect();
        let messages = haochaping::transform::Message::numbered(
            first,
            events.iter().map(|event| event.payload.as_slice()),
        );
        let (parts, kept) = haochaping::transform::process_run(
            &processor,
            0,
            &messages,
            now,
            2,
            &mut dedup,
            &stats,
            |_, _| {},
        );
        accepted += kept as u64;
        let range = haochaping::lake::BatchRange {
            topic: "evaluations".into(),
            partition: 0,
            first_offset: first,
            last_offset: last,
        };
        let files = haochaping::lake::Lake::encode_parts(parts, 3).unwrap();
        lake.commit_batch(&mut lease, range, files, 0)
            .await
            .unwrap();
    }
    accepted
}

/// Spawns `command` (an ingest), waits until it owns a partition, lets it work for `run_for`, then
/// SIGKILLs it: the crash tests' round.
pub async fn spawn_then_sigkill(command: &mut Command, run_for: std::time::Duration) {
    let mut child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let assigned = wait_for_line(
        child.stderr.take().unwrap(),
        "partition recovered from the lake",
    );
    tokio::task::spawn_blocking(move || assigned.recv_timeout(std::time::Duration::from_secs(90)))
        .await
        .unwrap()
        .expect("the instance was never assigned a partition");
    tokio::time::sleep(run_for).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

/// Reads a child's stderr to its end (so the child never blocks on a full pipe) and signals the
/// first line containing `needle`.
pub fn wait_for_line(
    stderr: std::process::ChildStderr,
    needle: &'static str,
) -> std::sync::mpsc::Receiver<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut sent = false;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if !sent && line.contains(needle) {
                let _ = tx.send(());
                sent = true;
            }
        }
    });
    rx
}

/// One plain HTTP GET (the exporter speaks HTTP/1.1); the body, or `None` while nothing listens.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    std::io::Write::write_fmt(
        &mut stream,
        format_args!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .ok()?;
    let mut response = String::new();
    std::io::Read::read_to_string(&mut stream, &mut response).ok()?;
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
}

/// A metric's value in a scrape, summed over its series: `name` takes `name value` and every
/// `name{…} value`; a name with labels (`name{a="b"}`) takes that series only. `None` if absent.
pub fn metric_value(scrape: &str, name: &str) -> Option<u64> {
    let values: Vec<f64> = scrape
        .lines()
        .filter(|l| {
            l.strip_prefix(name).is_some_and(|rest| {
                rest.starts_with(' ') || (!name.contains('{') && rest.starts_with('{'))
            })
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() as u64)
}

/// A local lake folder opened as the engine opens its lake.
pub fn root(lake: &Path) -> haochaping::lake::LakeRoot {
    haochaping::lake::LakeRoot::local(lake).unwrap()
}
