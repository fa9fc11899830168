//! The lake on an object store: a real S3-compatible server (moto, installed by `.ci/run`) behind
//! `--lake s3://bucket/prefix`. The same protocol as on a folder: ingest killed and restarted lands
//! every event once, a second writer is fenced by a conditional put (`If-None-Match: *`), compaction,
//! the analytics and `query` run on the bucket, and pyarrow reads it as a Hive dataset.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use haochaping::lake::{BatchRange, Lake, LakeRoot};
use object_store::ObjectStore;

use crate::support::*;

const BUCKET: &str = "lake";
const ACCESS_KEY: &str = "testing-key";
const SECRET_KEY: &str = "testing-secret";
const REGION: &str = "us-east-1";

/// A moto S3 server on a free port, killed on drop.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start() -> Self {
        let port = free_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 with moto[server] (installed by .ci/run)");
        let moto = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto did not start listening: is moto[server] installed (`bash .ci/run` installs it)?"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket (moto takes unsigned requests; object_store has no bucket API).
    fn create_bucket(&self, name: &str) {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            stream,
            "PUT /{name} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }

    /// The provider's variables the engine's object store reads, as an operator would set them.
    fn env(&self, command: &mut Command) {
        command
            .env("AWS_ENDPOINT", self.endpoint())
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_REGION", REGION);
    }

    /// The same settings as `lake.storage` options, for the test's own reads.
    fn options(&self) -> BTreeMap<String, String> {
        [
            ("aws_endpoint", self.endpoint()),
            ("aws_allow_http", "true".into()),
            ("aws_access_key_id", ACCESS_KEY.into()),
            ("aws_secret_access_key", SECRET_KEY.into()),
            ("aws_region", REGION.into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every `.parquet` object below a folder of the lake, by path.
async fn parquet_objects(root: &LakeRoot, folder: &str) -> Vec<String> {
    let mut paths: Vec<String> = root
        .list(folder)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.location.to_string())
        .filter(|p| p.ends_with(".parquet"))
        .collect();
    paths.sort();
    paths
}

/// Every (`project_no`, `assess_number`) of the bucket's `evaluations`, with its count.
async fn bucket_slots(root: &LakeRoot) -> HashMap<(String, i8), usize> {
    let mut counts = HashMap::new();
    for path in parquet_objects(root, "evaluations").await {
        let bytes = root.get(&path).await.unwrap().unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            count_slots(&batch.unwrap(), &mut counts);
        }
    }
    counts
}

/// Runs a command to its end; its stdout and stderr. It must succeed without printing the
/// storage secret.
fn run(mut command: Command) -> (String, String) {
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    assert!(
        !stderr.contains(SECRET_KEY),
        "the storage secret reached the log"
    );
    (String::from_utf8_lossy(&output.stdout).into_owned(), stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_lake_is_exactly_once_across_kills_fenced_compacted_and_readable() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let url = format!("s3://{BUCKET}/province");
    let root = LakeRoot::open(&url.parse().unwrap(), &moto.options()).unwrap();

    // Ingest, killed three times while events keep arriving, then once more to the end.
    let broker = Tansu::with_topics(2).await;
    let mut produced = Produced::new();
    let mut generator = generator(23, 0.05, 0.03);
    let args = ["--flush-rows", "300", "--flush-interval", "200ms"];
    for (round, run_for) in [4_000, 2_500, 200].into_iter().enumerate() {
        produce(
            &broker.brokers,
            "evaluations",
            &mut generator,
            2_000,
            &mut produced,
        )
        .await;
        let mut command = ingest_command_at(&broker.brokers, &url, &format!("s3-{round}"), &args);
        moto.env(&mut command);
        spawn_then_sigkill(&mut command, Duration::from_millis(run_for)).await;
    }
    // The killed runs committed batches before they died (the last one had little time).
    let before_final = bucket_slots(&root).await.len();
    assert!(before_final > 0, "nothing committed before the last run");
    eprintln!(
        "{before_final} of {} evaluations committed before the last run",
        produced.slots.len()
    );
    let mut command = ingest_command_at(
        &broker.brokers,
        &url,
        "s3-final",
        &["--exit-when-idle", "4s"],
    );
    moto.env(&mut command);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let stderr = run(command).1;
    assert!(!stderr.contains("offset gap"), "{stderr}");
    assert_slots_once(&bucket_slots(&root).await, &produced.slots);

    // More events, and a run that takes its endpoint from the config file's `[lake.storage]`
    // instead, only the credentials from the environment.
    produce(
        &broker.brokers,
        "evaluations",
        &mut generator,
        1_000,
        &mut produced,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("haochaping.toml");
    std::fs::write(
        &config,
        format!(
            "[lake]\npath = \"{url}\"\n[lake.storage]\naws_endpoint = \"{}\"\naws_allow_http = \"true\"\n",
            moto.endpoint()
        ),
    )
    .unwrap();
    let mut last = haochaping();
    last.args(["ingest", "--config", config.to_str().unwrap()])
        .args(["--brokers", &broker.brokers, "--group", "s3-config"])
        .args(["--exit-when-idle", "4s"])
        .env("HAOCHAPING_IDENTITY_SECRET", SECRET)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", REGION)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let summary = run(last).0;
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(summary["received"], 1_000, "resumed where the lake ends");
    assert_slots_once(&bucket_slots(&root).await, &produced.slots);
    let accepted = produced.slots.len();

    // A second writer on the same partition takes the next record with a conditional put: the
    // first one's next put finds its number taken and it is fenced, its batch never committed.
    let lake = Lake::open(&root, "fencing");
    let mut first = lake.recover("t", 0).await.unwrap().lease;
    let second = lake.another_writer();
    let mut taken = second.recover("t", 0).await.unwrap().lease;
    let range = |at: i64| BatchRange {
        topic: "t".into(),
        partition: 0,
        first_offset: at,
        last_offset: at,
    };
    let fenced = lake
        .commit_batch(&mut first, range(0), Vec::new(), 0)
        .await
        .unwrap_err();
    assert!(fenced.is_fenced(), "{fenced}");
    second
        .commit_batch(&mut taken, range(0), Vec::new(), 0)
        .await
        .unwrap();
    assert_eq!(
        lake.recover("t", 0).await.unwrap().next_offset,
        Some(1),
        "the second writer's batch is the one committed"
    );

    // Compaction on the bucket (no folder swap there: put the merged file, then delete the old).
    let before = parquet_objects(&root, "evaluations").await.len();
    let mut compact = haochaping();
    compact.args(["compact", "--lake", &url, "--quiet-for", "0s"]);
    moto.env(&mut compact);
    let (summary, _) = run(compact);
    let after = parquet_objects(&root, "evaluations").await.len();
    assert!(
        after < before,
        "compaction merged files: {before} -> {after}: {summary}"
    );
    assert_slots_once(&bucket_slots(&root).await, &produced.slots);

    // The analytics write their tables and state into the bucket; `query` reads it.
    let mut analyze = haochaping();
    analyze.args(["analyze", "--lake", &url]);
    moto.env(&mut analyze);
    let (report, _) = run(analyze);
    assert!(report.contains("\"full\":true"), "{report}");
    assert!(root
        .get("_haochaping/analytics/state.json")
        .await
        .unwrap()
        .is_some());
    assert!(!parquet_objects(&root, "tables/rankings").await.is_empty());
    let mut query = haochaping();
    query.args([
        "query",
        "--lake",
        &url,
        "--format",
        "csv",
        "SELECT count(*) AS n, count(DISTINCT project_no || '/' || assess_number) AS slots FROM evaluations",
    ]);
    moto.env(&mut query);
    let (csv, _) = run(query);
    assert_eq!(csv.trim(), format!("n,slots\n{accepted},{accepted}"));

    // pyarrow reads the bucket as a Hive dataset, with the rows the engine wrote.
    let script = r#"
import sys, pyarrow.dataset as ds, pyarrow.fs as fs
endpoint, key, secret, region, path = sys.argv[1:]
s3 = fs.S3FileSystem(access_key=key, secret_key=secret, region=region,
                     endpoint_override=endpoint, scheme="http")
table = ds.dataset(path, filesystem=s3, format="parquet", partitioning="hive").to_table()
print(table.num_rows, len(set(table.column("city").to_pylist())))
"#;
    let output = Command::new("python3")
        .args([
            "-c",
            script,
            &format!("127.0.0.1:{}", moto.port),
            ACCESS_KEY,
            SECRET_KEY,
            REGION,
            &format!("{BUCKET}/province/evaluations"),
        ])
        .output()
        .expect("python3 with pyarrow (installed by .ci/run)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Vec<usize> = String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(seen[0], accepted, "pyarrow sees every accepted row once");
    assert!(seen[1] > 1, "partitioned by city");

    // Nothing outside the lake's prefix was written.
    let everything: Vec<_> = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(BUCKET)
        .with_endpoint(moto.endpoint())
        .with_allow_http(true)
        .with_access_key_id(ACCESS_KEY)
        .with_secret_access_key(SECRET_KEY)
        .with_region(REGION)
        .build()
        .unwrap()
        .list(None)
        .try_collect()
        .await
        .unwrap();
    assert!(everything
        .iter()
        .all(|m| m.location.as_ref().starts_with("province/")));
}

#[test]
fn a_bad_lake_location_or_storage_option_is_one_line_naming_it() {
    for (lake, needle) in [("ftp://host/lake", "s3://"), ("", "empty")] {
        let output = ingest_command_at("127.0.0.1:1", lake, "g", &[])
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(needle), "{lake}: {stderr}");
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "[lake]\npath = \"s3://bucket/p\"\n[lake.storage]\naws_endpont = \"http://x\"\n",
    )
    .unwrap();
    let output = haochaping()
        .args(["ingest", "--config", config.to_str().unwrap()])
        .env("HAOCHAPING_IDENTITY_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("lake.storage.aws_endpont"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    // The offline path writes to a local folder; an object store is refused with a reason.
    let input = dir.path().join("in.ndjson");
    std::fs::write(&input, b"").unwrap();
    let output = haochaping()
        .args(["ingest", "--lake", "s3://bucket/p", "--from-file"])
        .arg(&input)
        .env("HAOCHAPING_IDENTITY_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("local lake folder"), "{stderr}");
}
