//! The command line contract: subcommands, validate's error format,
//! describe's golden output, schema.

use std::process::Command;

/// Run weir as a user would, whatever the caller's NO_COLOR and
/// WEIR_STATE_MEMORY (`WEIR_BIN`: another build, see tests/common).
fn weir(args: &[&str]) -> std::process::Output {
    Command::new(std::env::var_os("WEIR_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_weir").into()))
        .env_remove("WEIR_STATE_MEMORY")
        .args(args)
        .env_remove("NO_COLOR")
        .output()
        .expect("run weir")
}

const PARKING: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/topology/parking.yaml");

/// The parking topology with `from` replaced by `to`, written to `dir/name`.
fn parking_with(dir: &tempfile::TempDir, name: &str, from: &str, to: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(PARKING).unwrap();
    assert!(text.contains(from), "{from} not in parking.yaml");
    let path = dir.path().join(name);
    std::fs::write(&path, text.replace(from, to)).unwrap();
    path
}

#[test]
fn help_lists_every_subcommand() {
    let out = String::from_utf8(weir(&["--help"]).stdout).unwrap();
    for cmd in [
        "validate", "describe", "run", "reset", "sink", "simulate", "ingest", "test", "schema", "query",
    ] {
        assert!(
            out.lines().any(|l| l.trim_start().starts_with(cmd)),
            "{cmd} missing from:\n{out}"
        );
    }
    let run = String::from_utf8(weir(&["run", "--help"]).stdout).unwrap();
    for opt in [
        "--bootstrap",
        "--metrics-addr",
        "--state-dir",
        "--state-memory",
        "--query-addr",
        "--query-advertised-addr",
    ] {
        assert!(run.contains(opt), "{opt} missing from run --help");
    }
    let reset = String::from_utf8(weir(&["reset", "--help"]).stdout).unwrap();
    for opt in [
        "--bootstrap",
        "--state-dir",
        "--dry-run",
        "--to-earliest",
        "--to-latest",
        "--to-datetime",
    ] {
        assert!(reset.contains(opt), "{opt} missing from reset --help");
    }
}

/// `weir run --state-memory` (or WEIR_STATE_MEMORY) takes a size with a
/// unit, at least 16 MiB; a bad one stops weir before anything runs.
#[test]
fn state_memory_is_a_size_with_a_unit() {
    let missing = "/nonexistent/topology.yaml";
    let run = |mem: Option<&str>, env: Option<&str>| {
        let mut cmd = Command::new(std::env::var_os("WEIR_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_weir").into()));
        cmd.args(["run", missing]);
        if let Some(m) = mem {
            cmd.args(["--state-memory", m]);
        }
        match env {
            Some(e) => cmd.env("WEIR_STATE_MEMORY", e),
            None => cmd.env_remove("WEIR_STATE_MEMORY"),
        };
        let out = cmd.output().expect("run weir");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    // Accepted: weir goes on to read the topology file (and fails there).
    for (mem, env) in [
        (Some("256MiB"), None),
        (Some("1.5GiB"), None),
        (Some("64MB"), None),
        (None, Some("512MiB")),
        (None, None),
    ] {
        let (code, err) = run(mem, env);
        assert_eq!(code, Some(1), "{mem:?} {env:?}: {err}");
        assert!(
            !err.contains("state-memory") && err.contains("topology.yaml"),
            "{mem:?} {env:?}: {err}"
        );
    }
    for (mem, env, says) in [
        (Some("128"), None, r#""128" has no unit; write "128MiB""#),
        (Some("lots"), None, "is not a size"),
        (Some("12 parsecs"), None, "unknown unit"),
        (Some("1MiB"), None, "below the minimum, 16MiB"),
        (None, Some("64"), r#""64" has no unit"#),
    ] {
        let (code, err) = run(mem, env);
        assert_eq!(code, Some(2), "{mem:?} {env:?}: {err}");
        assert!(
            err.contains("--state-memory") && err.contains(says),
            "{mem:?} {env:?}: {err}"
        );
    }
}

#[test]
fn reset_positions_exclude_each_other_and_times_need_a_zone() {
    let out = weir(&["reset", PARKING, "--to-earliest", "--to-latest"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
    let out = weir(&["reset", PARKING, "--to-datetime", "2026-12-01 00:00"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("write e.g. 2026-12-01T00:00:00Z"), "{err}");
}

#[test]
fn validate_accepts_the_parking_topology() {
    let out = weir(&["validate", PARKING]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("parking.yaml: ok"));
}

#[test]
fn validate_reports_file_line_column_and_hint() {
    let dir = tempfile::tempdir().unwrap();
    let bad = parking_with(&dir, "bad.yaml", "tumbling: 1h", "tumbling: 1 fortnight");
    let out = weir(&["validate", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = std::fs::read_to_string(&bad)
        .unwrap()
        .lines()
        .position(|l| l.contains("fortnight"))
        .unwrap()
        + 1;
    assert!(err.contains(&format!("bad.yaml:{line}:")), "{err}");
    assert!(err.contains("bad duration") && err.contains("hint:"), "{err}");
}

/// The line of `bad` holding `needle`, as `file:line:`.
fn position(bad: &std::path::Path, needle: &str) -> String {
    let line = std::fs::read_to_string(bad)
        .unwrap()
        .lines()
        .position(|l| l.contains(needle))
        .unwrap()
        + 1;
    format!("{}:{line}:", bad.file_name().unwrap().to_str().unwrap())
}

#[test]
fn validate_rejects_a_window_with_too_many_windows_per_record() {
    let dir = tempfile::tempdir().unwrap();
    let bad = parking_with(&dir, "hop.yaml", "tumbling: 1h", "hopping: { size: 1d, advance: 1ms }");
    let out = weir(&["validate", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&position(&bad, "advance: 1ms")), "{err}");
    assert!(
        err.contains("puts every record in 86400000 windows; the limit is 10000") && err.contains("hint:"),
        "{err}"
    );
}

#[test]
fn validate_rejects_a_bad_max_future() {
    let dir = tempfile::tempdir().unwrap();
    let bad = parking_with(
        &dir,
        "future.yaml",
        "event_time: kafka",
        "event_time: { field: LAST_UPDATE, max_future: 1 fortnight }",
    );
    let out = weir(&["validate", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&position(&bad, "max_future")), "{err}");
    assert!(err.contains("bad duration \"1 fortnight\""), "{err}");
    let ok = parking_with(
        &dir,
        "future-ok.yaml",
        "event_time: kafka",
        "event_time: { field: LAST_UPDATE, max_future: 10m }",
    );
    let out = weir(&["validate", ok.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn describe_prints_the_golden_text() {
    let out = weir(&["describe", PARKING]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        include_str!("golden/parking.describe.txt")
    );
    let m = String::from_utf8(weir(&["describe", PARKING, "--format", "mermaid"]).stdout).unwrap();
    assert!(m.starts_with("flowchart LR") && m.contains("Sub-topology 1"), "{m}");
}

#[test]
fn schema_is_a_json_schema_of_the_format() {
    let out = weir(&["schema"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["$schema"].as_str().unwrap().contains("json-schema.org"));
    assert_eq!(v["title"], "TopologySpec");
    assert!(v["required"].as_array().unwrap().iter().any(|r| r == "application_id"));
}

#[test]
fn readme_shows_the_current_mermaid_graph() {
    let m = String::from_utf8(weir(&["describe", PARKING, "--format", "mermaid"]).stdout).unwrap();
    let readme = include_str!("../README.md");
    assert!(
        readme.contains(&format!("```mermaid\n{m}```")),
        "README's parking graph is out of date:\n{m}"
    );
}

/// One duration grammar everywhere: a bare number is not a duration, in the
/// topology file or on `weir simulate`'s command line, and the message
/// says which unit to add.
#[test]
fn a_bare_number_is_not_a_duration_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let bad = parking_with(&dir, "bare.yaml", "grace: 1m", "grace: 60");
    let out = weir(&["validate", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(r#""60" is not a duration; write "60s""#), "{err}");

    for opt in ["--duration", "--poll-interval"] {
        let out = weir(&["simulate", opt, "30", "--output", "-"]);
        assert_eq!(out.status.code(), Some(2), "{opt} 30");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(r#""30" is not a duration; write "30s""#), "{opt}: {err}");
    }
}

#[test]
fn logs_written_to_a_pipe_have_no_colour_codes() {
    let out = weir(&["simulate", "--count", "1", "--seed", "7", "--output", "-"]);
    assert!(out.status.success());
    let log = String::from_utf8(out.stderr).unwrap();
    assert!(log.contains("lots="), "no log line: {log}");
    assert!(!log.contains('\x1b'), "escape codes in a piped log: {log:?}");
}

/// The `kafka:` maps of topology and sink files are checked by `weir
/// validate` like the rest: a protected setting (with why), a property
/// librdkafka does not have, a bad value and a malformed secret reference,
/// each at its line; the secret's value is never repeated.
#[test]
fn validate_checks_the_kafka_settings_of_topology_and_sink_files() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = "kafka:\n  security.protocol: SASL_SSL\n  sasl.password: ${env:KAFKA_PASSWORD}\n  linger.ms: 20\n  \
                 enable.ssl.certificate.verification: true\n";
    let good = parking_with(&dir, "good.yaml", "application_id:", &format!("{kafka}application_id:"));
    let out = weir(&["validate", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let bad_map = "kafka:\n  isolation.level: read_uncommitted\n  no.such.property: 1\n  linger.ms: soon\n  \
                   sasl.password: ${vault:pw}\n";
    let bad = parking_with(
        &dir,
        "bad.yaml",
        "application_id:",
        &format!("{bad_map}application_id:"),
    );
    let out = weir(&["validate", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for (needle, what) in [
        (
            "isolation.level",
            "`isolation.level` is set by weir and cannot be changed: weir reads read_committed",
        ),
        (
            "no.such.property",
            "`no.such.property` librdkafka (the Kafka client weir uses) has no such property",
        ),
        ("linger.ms", "\"soon\""),
        ("sasl.password", "unknown reference `${vault:pw}`"),
    ] {
        assert!(err.contains(&position(&bad, needle)), "{needle}: {err}");
        assert!(err.contains(what), "{what}: {err}");
    }

    let sink = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/topology/parking-sink.yaml")).unwrap();
    let bad_sink = dir.path().join("sink.yaml");
    std::fs::write(
        &bad_sink,
        sink.replace(
            "tables:",
            "kafka:\n  enable.auto.commit: true\nconsumer:\n  group.id: other\ntables:",
        ),
    )
    .unwrap();
    let out = weir(&["validate", bad_sink.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&position(&bad_sink, "enable.auto.commit")), "{err}");
    assert!(err.contains("weir commits offsets itself"), "{err}");
    assert!(err.contains(&position(&bad_sink, "group.id")), "{err}");
}

/// Settings from the command line and the environment are checked before
/// anything connects, and a secret given inline is not echoed.
#[test]
fn kafka_settings_from_flags_and_environment_are_checked_at_start() {
    let out = Command::new(std::env::var_os("WEIR_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_weir").into()))
        .args(["simulate", "--count", "1", "--bootstrap", "127.0.0.1:9"])
        .args([
            "--kafka-config",
            "transactional.id=mine",
            "--kafka-config",
            "sasl.password=${env:NOT_SET_HERE}",
        ])
        .env("WEIR_KAFKA_CONFIG_ENABLE_IDEMPOTENCE", "false")
        .env_remove("NOT_SET_HERE")
        .output()
        .expect("run weir");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`transactional.id` (--kafka-config): is set by weir and cannot be changed"),
        "{err}"
    );
    assert!(
        err.contains("`enable.idempotence` (environment variable WEIR_KAFKA_CONFIG_ENABLE_IDEMPOTENCE)"),
        "{err}"
    );
    assert!(err.contains("refers to ${env:NOT_SET_HERE}, which is not set"), "{err}");
}

/// `--help` never prints a secret taken from the environment: the
/// Postgres URL's password, the city API key.
#[test]
fn help_shows_no_secret_from_the_environment() {
    let run = |args: &[&str]| {
        let out = Command::new(std::env::var_os("WEIR_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_weir").into()))
            .args(args)
            .env("WEIR_PG_URL", "postgres://u:secretpw@db.example:5432/app")
            .env("WEIR_CITYDATA_KEY", "secretkey123")
            .output()
            .expect("run weir");
        assert!(out.status.success(), "weir {args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let sink = run(&["sink", "--help"]);
    assert!(sink.contains("WEIR_PG_URL"), "{sink}");
    assert!(sink.contains("--log-row-values"), "{sink}");
    assert!(!sink.contains("secretpw"), "{sink}");
    let ingest = run(&["ingest", "citydata", "--help"]);
    assert!(!ingest.contains("secretkey123"), "{ingest}");
}

/// `--instance-id`: `auto` (default), `none`, or an id Kafka accepts.
#[test]
fn instance_id_is_auto_none_or_a_plain_id() {
    let run = String::from_utf8(weir(&["run", "--help"]).stdout).unwrap();
    assert!(
        run.contains("--instance-id") && run.contains("[default: auto]"),
        "{run}"
    );
    for bad in ["", "a b", "x/y"] {
        let out = weir(&["run", PARKING, "--instance-id", bad]);
        assert!(!out.status.success(), "{bad:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--instance-id"), "{bad:?}: {err}");
    }
}

/// `./dev demo` puts no password on a command line (visible in `ps`): the
/// sink reads WEIR_PG_URL from the environment, psql gets PGPASSWORD.
#[test]
fn dev_demo_passes_no_password_on_a_command_line() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let demo = std::fs::read_to_string(root.join("scripts/demo.sh")).unwrap();
    assert!(
        demo.contains("demo_start_sink"),
        "scripts/demo.sh no longer starts the sink: this test reads the wrong files"
    );
    let mut scripts = vec![root.join("dev")];
    for entry in std::fs::read_dir(root.join("scripts")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "sh") {
            scripts.push(path);
        }
    }
    for path in scripts {
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split('#').next().unwrap_or("");
            assert!(!code.contains("--postgres"), "{}:{}: {line}", path.display(), n + 1);
            assert!(
                !code.contains("psql \"$WEIR_PG_URL\""),
                "{}:{}: {line}",
                path.display(),
                n + 1
            );
        }
    }
}

#[test]
fn query_checks_the_store_and_says_when_no_instance_answers() {
    let out = weir(&["query", PARKING, "no-such-store", "k", "--wait", "0s"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no store `no-such-store`") && err.contains("latest-per-lot"),
        "{err}"
    );
    // A window store needs a group key.
    let out = weir(&["query", PARKING, "hourly-by-region", "--wait", "0s"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("window store"));
    // Nothing listens there: exit 2, after --wait.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let out = weir(&[
        "query",
        PARKING,
        "latest-per-lot",
        "1426397",
        "--addr",
        &addr,
        "--wait",
        "1s",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no answer from"));
}
