//! The command line as an operator meets it: bad arguments and bad config give one line naming the
//! field, and exit 2.

fn haochaping(args: &[&str]) -> (i32, String) {
    let output = crate::support::haochaping()
        .args(args)
        .env_remove("HAOCHAPING_IDENTITY_SECRET")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn bad_input_gives_one_line_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "[lake]\nflush_intervall = \"5s\"\n").unwrap();
    let bad_value = dir.path().join("bad.toml");
    std::fs::write(
        &bad_value,
        "[identity]\nsecret = \"0123456789abcdef\"\n[lake]\nflush_rows = 0\n",
    )
    .unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["ingest", "--flush-interval", "soon"],
            "--flush-interval",
        ),
        (vec!["ingest", "--flush-rows", "many"], "--flush-rows"),
        (vec!["generate", "--bad-rate", "1.5"], "--bad-rate"),
        (
            vec!["ingest", "--metrics-addr", "nowhere"],
            "--metrics-addr",
        ),
        (vec!["ingest", "--no-such-flag"], "--no-such-flag"),
        (
            vec!["ingest", "--config", typo.to_str().unwrap()],
            "flush_intervall",
        ),
        (
            vec!["ingest", "--config", bad_value.to_str().unwrap()],
            "lake.flush_rows",
        ),
        (
            vec!["ingest", "--config", "/nonexistent/haochaping.toml"],
            "/nonexistent/haochaping.toml",
        ),
        (vec!["ingest", "--lake", "/tmp/x"], "identity.secret"),
        (
            vec!["ingest", "--identity-secret", "short"],
            "identity.secret",
        ),
    ];
    for (args, field) in cases {
        let (code, stderr) = haochaping(&args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains(field),
            "{args:?} should name {field}: {stderr}"
        );
    }
}

/// `generate` builds its clients from the same `kafka.properties` as `ingest` (TLS, SASL …): a
/// setting librdkafka does not know reaches librdkafka, which names it.
#[test]
fn generate_passes_kafka_properties_to_its_clients() {
    let output = crate::support::haochaping()
        .args([
            "generate",
            "--brokers",
            "127.0.0.1:1",
            "--events",
            "1",
            "--kafka-property",
            "no.such.setting=1",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("no.such.setting"), "{stderr}");
}

#[test]
fn help_lists_every_flag_with_its_environment_variable() {
    let output = crate::support::haochaping()
        .args(["ingest", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--brokers",
        "--lake",
        "--group",
        "--topic",
        "--config",
        "--exit-when-idle",
        "--flush-interval",
    ] {
        assert!(help.contains(flag), "{flag} missing from help");
    }
    assert!(help.matches("HAOCHAPING_").count() >= 12, "{help}");
}

/// The shipped example configuration loads, passes the checks, and says what it shows.
#[test]
fn the_example_config_loads() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/haochaping.toml");
    let mut config = haochaping::config::IngestConfig::from_file(&path).unwrap();
    config.identity.secret = Some("an-example-secret-0123".into());
    config.check().unwrap();
    assert_eq!(config.streams.cases_topic.as_deref(), Some("cases"));
    assert_eq!(config.streams.workflow_topic.as_deref(), Some("workflow"));
    assert_eq!(
        config.metrics.addr.0,
        Some("127.0.0.1:9464".parse().unwrap())
    );
    assert!(config.policy.load().is_ok());
}

/// `config check` reads a file as `ingest` would and answers in one line; `config show` prints the
/// effective configuration (file < environment < flags) with every secret masked, including one
/// read from a file and a SASL password among the librdkafka properties.
#[test]
fn config_check_and_show() {
    let dir = tempfile::tempdir().unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/haochaping.toml");
    let (code, stderr) = haochaping(&["config", "check", example]);
    assert_eq!(code, 0, "{stderr}");

    let protected = dir.path().join("protected.toml");
    std::fs::write(
        &protected,
        "[identity]\nsecret = \"0123456789abcdef\"\n[kafka.properties]\n\"enable.auto.commit\" = \"true\"\n",
    )
    .unwrap();
    let (code, stderr) = haochaping(&["config", "check", protected.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("kafka.properties.enable.auto.commit"),
        "{stderr}"
    );

    let secret = "s3cret-identity-0123456789";
    let secret_file = dir.path().join("identity");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    let file = dir.path().join("haochaping.toml");
    std::fs::write(
        &file,
        format!(
            "[identity]\nsecret_file = \"{}\"\n[lake]\nflush_rows = 5000\nflush_interval = \"10s\"\n[kafka.properties]\n\"sasl.password\" = \"hunter2-sasl\"\n",
            secret_file.display()
        ),
    )
    .unwrap();
    let output = crate::support::haochaping()
        .args([
            "config",
            "show",
            "--config",
            file.to_str().unwrap(),
            "--flush-rows",
            "7000",
        ])
        .env("HAOCHAPING_FLUSH_INTERVAL", "20s")
        .env_remove("HAOCHAPING_IDENTITY_SECRET")
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let value: toml::Value = toml::from_str(&shown).unwrap();
    assert_eq!(
        value["lake"]["flush_rows"].as_integer(),
        Some(7000),
        "the flag wins"
    );
    assert_eq!(
        value["lake"]["flush_interval"].as_str(),
        Some("20s"),
        "the environment wins over the file"
    );
    assert_eq!(value["identity"]["secret"].as_str(), Some("<secret>"));
    assert!(
        !shown.contains(secret) && !shown.contains("hunter2"),
        "{shown}"
    );
}
