//! The operator's `deploy/` folder. No container engine runs here, so nothing in it is started;
//! instead every manifest is parsed and checked against the engine itself: the commands, flags and
//! `HAOCHAPING_*` variables exist (the binary's own `--help`), the configs pass `config check` and
//! resolve with `config show`, the dashboard queries only metrics the source emits, Prometheus
//! scrapes the port the engine serves, and the pieces name each other consistently (topics,
//! secrets, mounts, ports, labels).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;

use yaml_rust2::{Yaml, YamlLoader};

const CONFIG_IN_IMAGE: &str = "/etc/haochaping/haochaping.toml";
/// A valid identity secret and dead-letter key, written where the manifests mount theirs.
const IDENTITY_SECRET: &str = "a-test-identity-secret-0123456789";
const DLQ_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(deploy_dir().join(relative))
        .unwrap_or_else(|e| panic!("deploy/{relative}: {e}"))
}

fn yaml_docs(relative: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(relative)).unwrap_or_else(|e| panic!("deploy/{relative}: {e}"))
}

fn yaml(relative: &str) -> Yaml {
    let mut docs = yaml_docs(relative);
    assert_eq!(docs.len(), 1, "deploy/{relative}: one document expected");
    docs.remove(0)
}

/// The Kubernetes object of this kind in a file of several documents.
fn k8s(relative: &str, kind: &str) -> Yaml {
    yaml_docs(relative)
        .into_iter()
        .find(|doc| doc["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("deploy/{relative}: no {kind}"))
}

/// A scalar as text (YAML gives numbers and booleans their own types).
fn text(value: &Yaml) -> String {
    match value {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        other => panic!("a scalar expected, got {other:?}"),
    }
}

fn texts(value: &Yaml) -> Vec<String> {
    value
        .as_vec()
        .unwrap_or_else(|| panic!("a list expected, got {value:?}"))
        .iter()
        .map(text)
        .collect()
}

fn entries(value: &Yaml) -> Vec<(String, &Yaml)> {
    value
        .as_hash()
        .unwrap_or_else(|| panic!("a mapping expected, got {value:?}"))
        .iter()
        .map(|(k, v)| (text(k), v))
        .collect()
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Whether `word` occurs in `text` with no word character (letter, digit, `_`, `-`) glued to
/// either side: `--topic` is not found in `--alerts-topic`, nor `HAOCHAPING_LOG` in
/// `HAOCHAPING_LOG_FORMAT`.
fn has_word(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

/// Every token starting with `prefix` (not inside a longer word), extended while `continues`.
fn tokens(text: &str, prefix: &str, continues: fn(char) -> bool) -> BTreeSet<String> {
    text.match_indices(prefix)
        .filter(|(at, _)| !text[..*at].chars().next_back().is_some_and(is_word))
        .map(|(at, _)| {
            let rest = &text[at..];
            let end = rest
                .char_indices()
                .skip(prefix.len())
                .find(|(_, c)| !continues(*c))
                .map_or(rest.len(), |(i, _)| i);
            rest[..end].to_owned()
        })
        .filter(|token| token.len() > prefix.len())
        .collect()
}

fn env_vars(text: &str) -> BTreeSet<String> {
    tokens(text, "HAOCHAPING_", |c| {
        c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'
    })
}

/// The engine with none of this process's `HAOCHAPING_*` variables, and `env` on top.
fn haochaping(args: &[String], env: &[(String, String)]) -> Output {
    let mut command = crate::support::haochaping();
    // The deployed files say where metrics go: not the tests' `off`.
    command.env_remove("HAOCHAPING_METRICS_ADDR");
    for (name, _) in std::env::vars() {
        if name.starts_with("HAOCHAPING_") {
            command.env_remove(name);
        }
    }
    command
        .args(args)
        .envs(env.iter().cloned())
        .output()
        .unwrap()
}

fn help(subcommand: &str) -> String {
    let output = haochaping(&[subcommand.to_owned(), "--help".to_owned()], &[]);
    assert!(
        output.status.success(),
        "`haochaping {subcommand} --help`: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The services of compose.yaml that run the engine's image (built from deploy/Dockerfile).
fn engine_services(compose: &Yaml) -> Vec<(String, Yaml)> {
    let services: Vec<(String, Yaml)> = entries(&compose["services"])
        .into_iter()
        .filter(|(_, service)| service["build"]["dockerfile"].as_str() == Some("deploy/Dockerfile"))
        .map(|(name, service)| (name, service.clone()))
        .collect();
    assert!(
        services.iter().any(|(name, _)| name == "ingest"),
        "compose.yaml: the ingest service builds deploy/Dockerfile"
    );
    services
}

/// The `ingest` container of deployment.yaml.
fn ingest_container() -> Yaml {
    let deployment = k8s("k8s/deployment.yaml", "Deployment");
    deployment["spec"]["template"]["spec"]["containers"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str() == Some("ingest"))
        .expect("deployment.yaml: a container named ingest")
        .clone()
}

/// The Dockerfile's exec-form instruction (`CMD [...]`) as its list.
fn dockerfile_list(dockerfile: &str, instruction: &str) -> Vec<String> {
    let line = dockerfile
        .lines()
        .rfind(|l| l.starts_with(&format!("{instruction} ")))
        .unwrap_or_else(|| panic!("Dockerfile: no {instruction}"));
    serde_json::from_str(&line[instruction.len()..])
        .unwrap_or_else(|e| panic!("Dockerfile: {instruction} is not in exec form: {e}"))
}

/// The value after `flag` in a command line.
fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// The port of a `host:port` address.
fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// The TOML the ConfigMap carries.
fn configmap_toml() -> String {
    let configmap = k8s("k8s/configmap.yaml", "ConfigMap");
    configmap["data"]["haochaping.toml"]
        .as_str()
        .expect("configmap.yaml: data.haochaping.toml")
        .to_owned()
}

fn toml_value(text: &str) -> toml::Table {
    text.parse().unwrap()
}

/// Every YAML file under deploy/ parses, and the ones operators are told about are there.
#[test]
fn every_yaml_file_parses() {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(&deploy_dir(), &mut found);
    let found: BTreeSet<String> = found
        .iter()
        .map(|p| {
            p.strip_prefix(deploy_dir())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    for expected in [
        "compose.yaml",
        "prometheus/prometheus.yml",
        "grafana/provisioning/datasources/prometheus.yaml",
        "grafana/provisioning/dashboards/haochaping.yaml",
        "k8s/configmap.yaml",
        "k8s/secret.yaml",
        "k8s/deployment.yaml",
        "k8s/service.yaml",
    ] {
        assert!(found.contains(expected), "deploy/{expected} is missing");
    }
    for file in &found {
        let docs = yaml_docs(file);
        assert!(!docs.is_empty(), "deploy/{file}: empty");
        for doc in &docs {
            assert!(doc.is_hash(), "deploy/{file}: every document is a mapping");
            if file.starts_with("k8s/") {
                for key in ["apiVersion", "kind"] {
                    assert!(doc[key].as_str().is_some(), "deploy/{file}: no {key}");
                }
                assert!(
                    doc["metadata"]["name"].as_str().is_some(),
                    "deploy/{file}: no metadata.name"
                );
            }
        }
    }
}

/// The image builds the locked release and runs it as told, as a user other than root, with what
/// the build reads left in its context.
#[test]
fn the_dockerfile_builds_and_runs_as_told() {
    let dockerfile = read("Dockerfile");
    let from: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .collect();
    assert_eq!(from.len(), 2, "a builder and a runtime stage: {from:?}");
    assert!(from[0].starts_with("rust:1-bookworm"), "{from:?}");
    assert!(from[1].starts_with("debian:bookworm-slim"), "{from:?}");
    assert!(dockerfile.contains("cargo build --release --locked"));
    assert!(dockerfile.contains("ca-certificates"));
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("Dockerfile: a USER");
    assert!(
        !["root", "0", "0:0"].contains(&user.trim()),
        "runs as root: {user}"
    );
    assert!(dockerfile.lines().any(|l| l == "EXPOSE 9464"));
    assert_eq!(dockerfile_list(&dockerfile, "ENTRYPOINT"), ["haochaping"]);
    let cmd = dockerfile_list(&dockerfile, "CMD");
    assert_eq!(cmd, ["ingest", "--config", CONFIG_IN_IMAGE]);
    assert!(
        dockerfile.contains(&format!("COPY deploy/haochaping.toml {CONFIG_IN_IMAGE}")),
        "the image's default config is where CMD reads it"
    );

    // The context is the repository root; the build reads the sources, the lock file, the benches
    // (declared in Cargo.toml) and the data the source embeds.
    let ignored: Vec<String> = read("Dockerfile.dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_end_matches('/').to_owned())
        .collect();
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "src",
        "benches",
        "queries",
        "schemas",
        "deploy/policies",
        "deploy/calendar",
        "deploy/haochaping.toml",
    ] {
        assert!(
            !ignored
                .iter()
                .any(|i| needed == i || needed.starts_with(&format!("{i}/")) || i == "*"),
            "Dockerfile.dockerignore leaves out {needed}"
        );
    }
    assert!(ignored.iter().any(|i| i == "target"), "{ignored:?}");
}

/// Every command, flag and `HAOCHAPING_*` variable the manifests use exists: the engine's own
/// `--help` lists it.
#[test]
fn commands_flags_and_variables_exist() {
    let dockerfile = read("Dockerfile");
    let compose = yaml("compose.yaml");
    let mut invocations: Vec<(String, Vec<String>)> =
        vec![("Dockerfile CMD".into(), dockerfile_list(&dockerfile, "CMD"))];
    for (name, service) in engine_services(&compose) {
        if !service["command"].is_badvalue() {
            invocations.push((format!("compose.yaml {name}"), texts(&service["command"])));
        }
    }
    invocations.push(("deployment.yaml".into(), texts(&ingest_container()["args"])));
    assert!(invocations.len() >= 4, "{invocations:?}");

    let mut helps = BTreeMap::new();
    for (place, args) in &invocations {
        let subcommand = args.first().unwrap_or_else(|| panic!("{place}: empty"));
        assert!(!subcommand.starts_with('-'), "{place}: {args:?}");
        let help = helps
            .entry(subcommand.clone())
            .or_insert_with(|| help(subcommand));
        for arg in args.iter().filter(|a| a.starts_with("--")) {
            let flag = arg.split('=').next().unwrap();
            assert!(
                has_word(help, flag),
                "{place}: `haochaping {subcommand}` has no {flag}"
            );
        }
    }

    let ingest_help = help("ingest");
    let mut named = BTreeSet::new();
    for file in [
        "Dockerfile",
        "compose.yaml",
        "haochaping.toml",
        "k8s/configmap.yaml",
        "k8s/secret.yaml",
        "k8s/deployment.yaml",
        "k8s/service.yaml",
    ] {
        for var in env_vars(&read(file)) {
            assert!(
                has_word(&ingest_help, &var),
                "deploy/{file} names {var}, which `haochaping ingest --help` does not"
            );
            named.insert(var);
        }
    }
    for var in [
        "HAOCHAPING_IDENTITY_SECRET_FILE",
        "HAOCHAPING_DLQ_KEY_FILE",
        "HAOCHAPING_BROKERS",
    ] {
        assert!(named.contains(var), "{var} is used somewhere: {named:?}");
    }
    // The variables are clap's, bar the log filter the logger reads itself.
    for var in &named {
        assert!(
            (ingest_help.contains(&format!("[env: {var}="))
                || ingest_help.contains(&format!("[env: {var}]")))
                || std::fs::read_to_string(
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/telemetry/mod.rs")
                )
                .unwrap()
                .contains(&format!("std::env::var(\"{var}\")")),
            "{var} is neither a flag's variable nor read by the logger"
        );
    }
}

/// The ConfigMap's TOML passes `config check`, and the compose service and the Deployment resolve
/// to a working configuration (`config show`: the same arguments and environment, with the
/// mounted config and secret files laid out here).
#[test]
fn deployed_configs_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let toml_file = dir.path().join("configmap.toml");
    std::fs::write(&toml_file, configmap_toml()).unwrap();
    let output = haochaping(
        &[
            "config".into(),
            "check".into(),
            toml_file.display().to_string(),
        ],
        &[],
    );
    assert!(
        output.status.success(),
        "config check of the ConfigMap: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // `config show` takes `ingest`'s arguments: run each deployment's with its environment.
    let show = |place: &str, args: &[String], env: Vec<(String, String)>, config: &Path| {
        assert_eq!(args[0], "ingest", "{place}");
        let mut shown = vec!["config".to_owned(), "show".to_owned()];
        for (i, arg) in args[1..].iter().enumerate() {
            shown.push(if i > 0 && args[i] == "--config" {
                assert_eq!(arg, CONFIG_IN_IMAGE, "{place}");
                config.display().to_string()
            } else {
                arg.clone()
            });
        }
        let output = haochaping(&shown, &env);
        assert!(
            output.status.success(),
            "{place}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let shown = toml_value(&String::from_utf8(output.stdout).unwrap());
        assert_eq!(shown["identity"]["secret"].as_str(), Some("<secret>"));
        shown
    };
    // Secret files as mounted: each variable's file is written here under the same name.
    let secret_file = |name: &str, value: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{value}\n")).unwrap();
        path.display().to_string()
    };
    let remap = |name: &str, value: &str| -> (String, String) {
        match name {
            "HAOCHAPING_IDENTITY_SECRET_FILE" => {
                let file = Path::new(value).file_name().unwrap().to_str().unwrap();
                (name.into(), secret_file(file, IDENTITY_SECRET))
            }
            "HAOCHAPING_DLQ_KEY_FILE" => {
                let file = Path::new(value).file_name().unwrap().to_str().unwrap();
                (name.into(), secret_file(file, DLQ_KEY))
            }
            _ => (name.into(), value.into()),
        }
    };

    let compose = yaml("compose.yaml");
    let service = &compose["services"]["ingest"];
    let env: Vec<(String, String)> = entries(&service["environment"])
        .into_iter()
        .map(|(name, value)| remap(&name, &text(value)))
        .collect();
    let example = deploy_dir().join("haochaping.toml");
    let shown = show("compose.yaml", &texts(&service["command"]), env, &example);
    assert_eq!(shown["kafka"]["brokers"].as_str(), Some("kafka:9092"));
    assert_eq!(shown["metrics"]["addr"].as_str(), Some("0.0.0.0:9464"));

    let container = ingest_container();
    let env: Vec<(String, String)> = container["env"]
        .as_vec()
        .unwrap()
        .iter()
        .filter(|e| e["value"].as_str().is_some())
        .map(|e| remap(&text(&e["name"]), &text(&e["value"])))
        .collect();
    let shown = show(
        "deployment.yaml",
        &texts(&container["args"]),
        env,
        &toml_file,
    );
    assert_eq!(shown["metrics"]["addr"].as_str(), Some("0.0.0.0:9464"));
    assert_eq!(shown["dlq"]["encryption_key"].as_str(), Some("<secret>"));
}

/// The compose stack: every topic the config names is created (evaluations with 4 partitions),
/// the config and the secret are mounted where the command and variables say, the healthcheck asks
/// /ready on the served port, and Grafana is given the dashboard where its provider looks.
#[test]
fn the_compose_stack_fits_together() {
    let compose = yaml("compose.yaml");
    let services = &compose["services"];
    assert_eq!(
        services["kafka"]["image"]
            .as_str()
            .map(|i| i.starts_with("apache/kafka:")),
        Some(true)
    );
    assert_eq!(
        text(&services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]),
        "broker,controller",
        "KRaft"
    );

    // Topics: `topic NAME PARTITIONS` lines of the one-shot service.
    let script = texts(&services["topics"]["command"]).join("\n");
    let created: BTreeMap<&str, u32> = script
        .lines()
        .filter_map(|l| l.trim().strip_prefix("topic "))
        .map(|l| {
            let (name, partitions) = l.split_once(' ').unwrap();
            (name, partitions.trim().parse().unwrap())
        })
        .collect();
    let config =
        haochaping::config::IngestConfig::from_file(&deploy_dir().join("haochaping.toml")).unwrap();
    let mut needed = vec![
        config.kafka.topic.clone(),
        config.kafka.dlq_topic(),
        config.alerts.topic.clone(),
    ];
    for topic in [&config.streams.cases_topic, &config.streams.workflow_topic]
        .into_iter()
        .flatten()
    {
        needed.push(topic.clone());
        needed.push(format!("{topic}.dlq"));
    }
    for topic in &needed {
        assert!(
            created.contains_key(topic.as_str()),
            "{topic} not created: {created:?}"
        );
    }
    assert_eq!(created.get("evaluations"), Some(&4));

    // Compose interpolates `$NAME`: a shell's own `$` is written `$$`.
    let raw = read("compose.yaml");
    let mut rest = raw.as_str();
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            rest = after;
        } else {
            assert!(
                rest.starts_with('{'),
                "a lone $ in compose.yaml: ${}",
                &rest[..rest.len().min(20)]
            );
        }
    }

    let ingest = &services["ingest"];
    assert_eq!(ingest["build"]["context"].as_str(), Some(".."));
    let command = texts(&ingest["command"]);
    let metrics_addr = flag_value(&command, "--metrics-addr").expect("--metrics-addr");
    assert!(metrics_addr.starts_with("0.0.0.0:"), "{metrics_addr}");
    let port = port_of(metrics_addr);
    let volumes = texts(&ingest["volumes"]);
    assert!(
        volumes.contains(&format!(
            "./haochaping.toml:{}:ro",
            flag_value(&command, "--config").unwrap()
        )),
        "{volumes:?}"
    );
    assert!(
        volumes
            .iter()
            .any(|v| v.ends_with(&format!(":{}", config.lake.path))),
        "the lake ({}) is a volume: {volumes:?}",
        config.lake.path
    );
    let secrets = texts(&ingest["secrets"]);
    let secret_path = text(&ingest["environment"]["HAOCHAPING_IDENTITY_SECRET_FILE"]);
    let secret = secret_path
        .strip_prefix("/run/secrets/")
        .expect("a compose secret is mounted in /run/secrets");
    assert!(secrets.iter().any(|s| s == secret), "{secrets:?}");
    assert!(
        compose["secrets"][secret]["file"].as_str().is_some(),
        "the secret comes from a file"
    );
    let probe = texts(&ingest["healthcheck"]["test"]).join(" ");
    assert!(
        probe.contains(&format!("/dev/tcp/127.0.0.1/{port}")) && probe.contains("GET /ready "),
        "{probe}"
    );
    let grace = text(&ingest["stop_grace_period"]);
    let grace = humantime::parse_duration(&grace).unwrap();
    assert!(
        grace > config.lake.flush_interval,
        "stop_grace_period {grace:?} leaves time for a flush"
    );

    // Prometheus and Grafana get their files.
    assert!(texts(&services["prometheus"]["volumes"])
        .contains(&"./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro".to_owned()));
    let grafana = texts(&services["grafana"]["volumes"]);
    assert!(grafana.contains(&"./grafana/provisioning:/etc/grafana/provisioning:ro".to_owned()));
    let dashboards = yaml("grafana/provisioning/dashboards/haochaping.yaml");
    let folder = text(&dashboards["providers"][0]["options"]["path"]);
    assert!(
        grafana.contains(&format!(
            "./grafana/haochaping.json:{folder}/haochaping.json:ro"
        )),
        "the dashboard is mounted where its provider looks ({folder}): {grafana:?}"
    );
    let datasources = yaml("grafana/provisioning/datasources/prometheus.yaml");
    let datasource = &datasources["datasources"][0];
    assert_eq!(datasource["type"].as_str(), Some("prometheus"));
    assert_eq!(datasource["url"].as_str(), Some("http://prometheus:9090"));
}

/// Prometheus scrapes the engine's service on the port `--metrics-addr` serves.
#[test]
fn prometheus_scrapes_the_engine_port() {
    let compose = yaml("compose.yaml");
    let command = texts(&compose["services"]["ingest"]["command"]);
    let port = port_of(flag_value(&command, "--metrics-addr").unwrap());
    assert_eq!(port, 9464);
    let prometheus = yaml("prometheus/prometheus.yml");
    let jobs = prometheus["scrape_configs"].as_vec().unwrap();
    let job = jobs
        .iter()
        .find(|j| j["job_name"].as_str() == Some("haochaping"))
        .expect("a haochaping job");
    assert!(matches!(
        job["metrics_path"].as_str(),
        None | Some("/metrics")
    ));
    let mut targets = Vec::new();
    for sd in job["dns_sd_configs"].as_vec().into_iter().flatten() {
        for name in texts(&sd["names"]) {
            targets.push(format!("{name}:{}", text(&sd["port"])));
        }
    }
    for sc in job["static_configs"].as_vec().into_iter().flatten() {
        targets.extend(texts(&sc["targets"]));
    }
    assert!(
        targets.contains(&format!("ingest:{port}")),
        "the job scrapes ingest:{port}: {targets:?}"
    );
}

/// The metric names the source emits, with their kind (`counter`, `gauge`, `histogram`): the
/// string literal (or the `const` naming one) in each `metrics::<kind>!(…)`.
fn emitted_metrics() -> BTreeMap<String, &'static str> {
    fn walk(dir: &Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut sources = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut sources,
    );
    let literal = |rest: &str| -> Option<String> {
        let rest = rest.trim_start().strip_prefix('"')?;
        Some(rest[..rest.find('"')?].to_owned())
    };
    let mut consts = BTreeMap::new();
    for source in &sources {
        for line in source.lines() {
            if let Some((_, rest)) = line.split_once("const ") {
                if let Some((name, value)) = rest.split_once(": &str =") {
                    if let Some(value) = literal(value) {
                        consts.insert(name.trim().to_owned(), value);
                    }
                }
            }
        }
    }
    let mut metrics = BTreeMap::new();
    for source in &sources {
        for kind in ["counter", "gauge", "histogram"] {
            for (at, _) in source.match_indices(&format!("{kind}!(")) {
                let rest = &source[at + kind.len() + 2..];
                let name = literal(rest).or_else(|| {
                    let ident: String = rest
                        .trim_start()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                        .collect();
                    consts.get(ident.rsplit("::").next().unwrap()).cloned()
                });
                if let Some(name) = name {
                    metrics.insert(name, kind);
                }
            }
        }
    }
    metrics
}

/// Every `expr` string anywhere in the dashboard (panels, rows, targets).
fn exprs(value: &serde_json::Value, found: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => found.push(s.clone()),
                    _ => exprs(v, found),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| exprs(v, found)),
        _ => {}
    }
}

/// Every data source the dashboard names (panels and targets).
fn datasources(value: &serde_json::Value, found: &mut Vec<serde_json::Value>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                if key == "datasource" {
                    found.push(v.clone());
                } else {
                    datasources(v, found);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| datasources(v, found)),
        _ => {}
    }
}

/// The dashboard parses, queries only metrics the source emits (a summary's `_sum`/`_count` and
/// `quantile` only on histograms), covers what operators watch, and names its data source the
/// same way everywhere.
#[test]
fn the_dashboard_queries_emitted_metrics() {
    let emitted = emitted_metrics();
    assert!(
        emitted.get("haochaping_lake_commit_duration_seconds") == Some(&"histogram")
            && emitted.get("haochaping_events_received_total") == Some(&"counter")
            && emitted.len() > 30,
        "the scan of src/ finds the metrics: {emitted:?}"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("grafana/haochaping.json")).unwrap();
    let mut found = Vec::new();
    exprs(&dashboard["panels"], &mut found);
    assert!(found.len() >= 20, "{found:?}");

    let mut used = BTreeSet::new();
    for expr in &found {
        let names = tokens(expr, "haochaping_", |c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'
        });
        assert!(!names.is_empty(), "a query of no haochaping metric: {expr}");
        for name in names {
            let base = match emitted.get(&name) {
                Some(_) => name.clone(),
                None => ["_sum", "_count", "_bucket"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .filter(|base| emitted.get(*base) == Some(&"histogram"))
                    .unwrap_or_else(|| panic!("{name} is not emitted by src/: {expr}"))
                    .to_owned(),
            };
            // A selector with a quantile is a histogram's summary.
            for (at, _) in expr.match_indices(&format!("{name}{{")) {
                let selector = &expr[at..at + expr[at..].find('}').unwrap()];
                if selector.contains("quantile") {
                    assert_eq!(emitted[&name], "histogram", "{expr}");
                }
            }
            used.insert(base);
        }
    }
    for watched in [
        "haochaping_events_received_total",
        "haochaping_events_accepted_total",
        "haochaping_events_duplicate_total",
        "haochaping_consumer_lag_messages",
        "haochaping_events_dead_lettered_total",
        "haochaping_alerts_sent_total",
        "haochaping_alerts_rate_limited_total",
        "haochaping_lake_commit_duration_seconds",
        "haochaping_batch_age_seconds",
        "haochaping_alert_barrier_wait_seconds",
        "haochaping_recovery_duration_seconds",
        "haochaping_lake_commit_retries_total",
        "haochaping_partitions_backpressured",
        "haochaping_dedup_keys",
        "haochaping_lake_compaction_runs_total",
    ] {
        assert!(used.contains(watched), "the dashboard shows no {watched}");
    }
    assert!(found
        .iter()
        .any(|e| e.contains("by (reason)") && e.contains("haochaping_events_dead_lettered_total")));
    assert!(found
        .iter()
        .any(|e| e.contains("by (rule)") && e.contains("haochaping_alerts_sent_total")));
    assert!(found
        .iter()
        .any(|e| e.contains("partition") && e.contains("haochaping_consumer_lag_messages")));

    // One data source, chosen by the DS_PROMETHEUS variable (the provisioned one by default).
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(variables.iter().any(|v| v["name"] == "DS_PROMETHEUS"
        && v["type"] == "datasource"
        && v["query"] == "prometheus"));
    let mut named = Vec::new();
    datasources(&dashboard, &mut named);
    assert!(named.len() >= found.len());
    for datasource in named {
        assert_eq!(
            datasource,
            serde_json::json!({"type": "prometheus", "uid": "${DS_PROMETHEUS}"})
        );
    }
    let ids: Vec<&serde_json::Value> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["id"])
        .collect();
    let unique: BTreeSet<String> = ids.iter().map(|id| id.to_string()).collect();
    assert_eq!(unique.len(), ids.len(), "panel ids are unique");
}

/// The Kubernetes objects name each other: two replicas, probes and the Service on the served
/// port, the ConfigMap and the Secret's keys where the variables point, the lake on its claim, and a
/// grace period longer than a flush.
#[test]
fn the_kubernetes_objects_fit_together() {
    let deployment = k8s("k8s/deployment.yaml", "Deployment");
    let pod = &deployment["spec"]["template"];
    let container = ingest_container();
    assert_eq!(deployment["spec"]["replicas"].as_i64(), Some(2));
    let config = haochaping::config::IngestConfig::from_toml(&configmap_toml()).unwrap();
    let port = config.metrics.addr.0.expect("[metrics] addr").port();
    let ports = container["ports"].as_vec().unwrap();
    assert!(ports.iter().any(|p| p["name"].as_str() == Some("metrics")
        && p["containerPort"].as_i64() == Some(i64::from(port))));
    for (probe, path) in [("livenessProbe", "/health"), ("readinessProbe", "/ready")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        assert_eq!(text(&get["port"]), "metrics", "{probe}");
    }
    assert!(!container["resources"]["requests"]["memory"].is_badvalue());
    assert!(!container["resources"]["limits"]["memory"].is_badvalue());
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_i64()
        .unwrap();
    assert!(
        grace as u64 > 2 * config.lake.flush_interval.as_secs(),
        "terminationGracePeriodSeconds {grace} leaves time for a flush"
    );

    // Labels: the selector picks the pods, the Service picks the same.
    let labels = entries(&pod["metadata"]["labels"]);
    let matches = |selector: &Yaml| {
        entries(selector)
            .iter()
            .all(|(k, v)| labels.iter().any(|(l, w)| l == k && text(w) == text(v)))
    };
    assert!(matches(&deployment["spec"]["selector"]["matchLabels"]));
    let service = k8s("k8s/service.yaml", "Service");
    assert!(matches(&service["spec"]["selector"]));
    let service_port = &service["spec"]["ports"][0];
    assert_eq!(text(&service_port["targetPort"]), "metrics");
    assert_eq!(service_port["port"].as_i64(), Some(i64::from(port)));

    // Mounts and the volumes behind them.
    let volumes: BTreeMap<String, Yaml> = pod["spec"]["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|v| (text(&v["name"]), v.clone()))
        .collect();
    let mount = |volume: &str| -> String {
        let mounts = container["volumeMounts"].as_vec().unwrap();
        let m = mounts
            .iter()
            .find(|m| m["name"].as_str() == Some(volume))
            .unwrap_or_else(|| panic!("no mount of {volume}"));
        text(&m["mountPath"])
    };
    for m in container["volumeMounts"].as_vec().unwrap() {
        assert!(volumes.contains_key(&text(&m["name"])), "{m:?}");
    }
    let configmap = k8s("k8s/configmap.yaml", "ConfigMap");
    assert_eq!(
        volumes["config"]["configMap"]["name"].as_str(),
        configmap["metadata"]["name"].as_str()
    );
    let args = texts(&container["args"]);
    assert_eq!(
        flag_value(&args, "--config"),
        Some(format!("{}/haochaping.toml", mount("config")).as_str())
    );
    assert_eq!(
        Some(Path::new(&mount("lake"))),
        config.lake.path.local_path(),
        "the lake path is the claim's mount"
    );
    let claim = k8s("k8s/deployment.yaml", "PersistentVolumeClaim");
    assert_eq!(
        volumes["lake"]["persistentVolumeClaim"]["claimName"].as_str(),
        claim["metadata"]["name"].as_str()
    );

    let secret = k8s("k8s/secret.yaml", "Secret");
    assert_eq!(
        volumes["secrets"]["secret"]["secretName"].as_str(),
        secret["metadata"]["name"].as_str()
    );
    let keys: BTreeSet<String> = entries(&secret["stringData"])
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let env: BTreeMap<String, String> = container["env"]
        .as_vec()
        .unwrap()
        .iter()
        .filter(|e| e["value"].as_str().is_some())
        .map(|e| (text(&e["name"]), text(&e["value"])))
        .collect();
    for var in ["HAOCHAPING_IDENTITY_SECRET_FILE", "HAOCHAPING_DLQ_KEY_FILE"] {
        let path = Path::new(
            env.get(var)
                .unwrap_or_else(|| panic!("deployment.yaml sets no {var}")),
        );
        assert_eq!(path.parent(), Some(Path::new(&mount("secrets"))), "{var}");
        let key = path.file_name().unwrap().to_str().unwrap();
        assert!(keys.contains(key), "{var} reads {key}, not in the Secret");
    }
    assert!(
        read("k8s/secret.yaml").contains("REPLACE"),
        "the placeholders say so"
    );
}
