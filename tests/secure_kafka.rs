//! weir against the secured listeners of `./dev up`'s broker: SASL_SSL
//! with SCRAM-SHA-512, and SSL requiring a client certificate (mutual
//! TLS), with certificates from the throwaway CA `./dev up` made.
//!
//! The parking pipeline runs end to end over each (`weir simulate` →
//! `weir run` under exactly_once → `weir sink` into Postgres), every
//! client of every command on the secured listener, and its results equal
//! the expectation computed here from the input read back (over the
//! plaintext listener), as for the plaintext tests. The settings come from
//! each source weir reads: the topology's and the sink file's `kafka:`
//! maps, a `.properties` file, `WEIR_KAFKA_CONFIG_*` variables, flags, and
//! secrets through `${env:}` and `${file:}` (never on a command line). A
//! wrong password, an untrusted broker certificate and a refused client
//! certificate end weir at start-up with a message naming the problem.

mod common;
mod engine_common;
mod sink_common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use engine_common::*;
use sink_common::{engine_rows, hourly_table_yaml, wait_rows, write_config, Pg};

/// `./dev up`'s secured listeners, as `./dev env` exports them (derived
/// like `./dev` does when a variable is missing).
struct Secured {
    sasl_ssl: String,
    mtls: String,
    tls: PathBuf,
    user: String,
    password: String,
}

fn secured() -> Secured {
    let plain = bootstrap();
    let port: u16 = plain.rsplit(':').next().unwrap().parse().unwrap();
    let var = |name: &str, default: String| std::env::var(name).unwrap_or(default);
    let s = Secured {
        sasl_ssl: var("WEIR_BOOTSTRAP_SASL_SSL", format!("127.0.0.1:{}", port + 20)),
        mtls: var("WEIR_BOOTSTRAP_MTLS", format!("127.0.0.1:{}", port + 30)),
        tls: var(
            "WEIR_TLS_DIR",
            checkout().join(".cache/kafka/tls").display().to_string(),
        )
        .into(),
        user: var("WEIR_KAFKA_SCRAM_USER", "weir".into()),
        password: var("WEIR_KAFKA_SCRAM_PASSWORD", "weir-scram-secret".into()),
    };
    require_service("Kafka's SASL_SSL listener", &s.sasl_ssl);
    require_service("Kafka's mTLS listener", &s.mtls);
    assert!(
        s.tls.join("ca.pem").exists(),
        "no test CA in {} (`./dev up` makes it)",
        s.tls.display()
    );
    s
}

impl Secured {
    fn file(&self, name: &str) -> String {
        self.tls.join(name).display().to_string()
    }
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// Run `weir <args>` to its end (at most `limit`), returning its output.
fn weir_within(args: &[OsString], env: &[(&str, &str)], log: &Path, limit: Duration) -> (bool, String) {
    let proc = WeirProc::spawn_env(args, log, env);
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = proc.exited() {
            proc.unwatch();
            return (status.success(), proc.log_text());
        }
        assert!(
            Instant::now() < deadline,
            "weir {args:?} still running after {limit:?}:\n{}",
            proc.tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The pipeline over one secured listener. `run_kafka` is added to the
/// topology file, `sink_kafka` to the sink file; `args`/`env` go to every
/// command (simulate, run, sink).
fn pipeline(
    id: &str,
    bootstrap: &str,
    run_kafka: &str,
    sink_kafka: &str,
    args: &[OsString],
    env: &[(&str, &str)],
    secret: &str,
) {
    let dir = test_dir();
    let (topo, [status, _dlq, hourly, _lots]) = topology_eos(dir.path(), id);
    let mut text = std::fs::read_to_string(&topo).unwrap();
    text.push_str(run_kafka);
    std::fs::write(&topo, text).unwrap();
    let validated = run_weir(&["validate", topo.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&validated.stdout).contains(": ok"));

    // The input, produced over the secured listener.
    let count = 2000;
    let mut sim = os(&[
        "simulate",
        "--count",
        &count.to_string(),
        "--seed",
        "2207",
        "--start",
        &data_start(),
        "--partitions",
        "3",
        "--bad-ratio",
        "0.02",
        "--topic",
        &status,
        "--bootstrap",
        bootstrap,
    ]);
    sim.extend(args.iter().cloned());
    let (ok, out) = weir_within(&sim, env, &dir.path().join("simulate.log"), Duration::from_secs(60));
    assert!(ok, "simulate over {bootstrap} failed:\n{out}");

    let state = dir.path().join("state");
    let mut run_args = os(&[
        "run",
        topo.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--bootstrap",
        bootstrap,
    ]);
    run_args.extend(args.iter().cloned());
    let run = WeirProc::spawn_env(&run_args, &dir.path().join("run.log"), env);

    let schema = sink_common::unique_ident("secure");
    let sink_name = schema.clone();
    let sink_cfg = write_config(
        dir.path(),
        &sink_name,
        &format!("{id}-sink-dlq"),
        sink_kafka,
        &[hourly_table_yaml(&hourly, &schema, "")],
    );
    let mut sink_args = os(&["sink", sink_cfg.to_str().unwrap(), "--bootstrap", bootstrap]);
    sink_args.extend(args.iter().cloned());
    let mut sink_env = env.to_vec();
    let pg_url = sink_common::pg_url();
    sink_env.push(("WEIR_PG_URL", &pg_url));
    let sink = WeirProc::spawn_env(&sink_args, &dir.path().join("sink.log"), &sink_env);

    // The expectation, from the input as the broker holds it.
    let inputs = read_inputs(&status, count);
    let want = expected(&inputs);
    assert!(want.len() > 10, "{} windows", want.len());
    let results = close_windows_and_collect(id, &status, &hourly, &inputs, want.len());
    check_results(&results, &want);
    let mut pg = Pg::connect();
    wait_rows(&mut pg, &schema, &engine_rows(&want), Duration::from_secs(90));

    run.assert_running();
    sink.assert_running();
    for (name, log) in [("run", run.log_text()), ("sink", sink.log_text())] {
        assert!(
            log.contains("Kafka client settings"),
            "weir {name} logged no settings:\n{log}"
        );
        assert!(!log.contains(secret), "weir {name} logged the secret:\n{log}");
    }
    run.terminate();
    sink.terminate();
}

#[test]
fn the_pipeline_runs_over_sasl_ssl_with_scram() {
    let s = secured();
    let id = unique("sec-sasl");
    // The topology carries the connection, the password comes from the
    // environment by reference; the sink file names a file holding it.
    let dir = test_dir();
    let password_file = dir.path().join("kafka-password");
    std::fs::write(&password_file, format!("{}\n", s.password)).unwrap();
    let run_kafka = format!(
        "kafka:\n  security.protocol: SASL_SSL\n  sasl.mechanism: SCRAM-SHA-512\n  sasl.username: {}\n  \
         sasl.password: ${{env:TEST_KAFKA_PASSWORD}}\n  ssl.ca.location: {}\n",
        s.user,
        s.file("ca.pem")
    );
    let sink_kafka = format!(
        "kafka:\n  security.protocol: SASL_SSL\n  sasl.mechanism: SCRAM-SHA-512\n  sasl.username: {}\n  \
         sasl.password: ${{file:{}}}\n  ssl.ca.location: {}\n",
        s.user,
        password_file.display(),
        s.file("ca.pem")
    );
    // `weir simulate` has no file: the environment's settings, then a flag.
    let env = [
        ("TEST_KAFKA_PASSWORD", s.password.as_str()),
        ("WEIR_KAFKA_CONFIG_SECURITY_PROTOCOL", "SASL_SSL"),
        ("WEIR_KAFKA_CONFIG_SASL_MECHANISM", "SCRAM-SHA-512"),
        ("WEIR_KAFKA_CONFIG_SASL_USERNAME", s.user.as_str()),
        ("WEIR_KAFKA_CONFIG_SASL_PASSWORD", "${env:TEST_KAFKA_PASSWORD}"),
    ];
    let args = os(&["--kafka-config", &format!("ssl.ca.location={}", s.file("ca.pem"))]);
    pipeline(&id, &s.sasl_ssl, &run_kafka, &sink_kafka, &args, &env, &s.password);
}

#[test]
fn the_pipeline_runs_over_mutual_tls() {
    let s = secured();
    let id = unique("sec-mtls");
    // A client.properties as Kafka users have one, for every command.
    let dir = test_dir();
    let props = dir.path().join("client.properties");
    std::fs::write(
        &props,
        format!(
            "# mutual TLS\nsecurity.protocol=SSL\nssl.ca.location={}\nssl.certificate.location={}\nssl.key.location={}\n",
            s.file("ca.pem"),
            s.file("client.pem"),
            s.file("client.key")
        ),
    )
    .unwrap();
    let args = os(&["--kafka-config-file", props.to_str().unwrap()]);
    // The key's path is shown as [redacted] like any value of a `*key*`.
    pipeline(&id, &s.mtls, "", "", &args, &[], &s.file("client.key"));
}

/// `weir <command>` with `settings` against `bootstrap` must fail within
/// 30 s (librdkafka alone would retry forever) naming what went wrong.
fn fails_fast(command: &[&str], bootstrap: &str, settings: &[String], want: &[&str]) {
    let dir = test_dir();
    let mut args = os(command);
    args.extend(os(&["--bootstrap", bootstrap]));
    for s in settings {
        args.extend(os(&["--kafka-config", s]));
    }
    let started = Instant::now();
    let (ok, log) = weir_within(&args, &[], &dir.path().join("weir.log"), Duration::from_secs(30));
    assert!(!ok, "weir {command:?} succeeded:\n{log}");
    let last = log.lines().rev().find(|l| l.starts_with("error:")).unwrap_or_default();
    for w in want {
        assert!(last.contains(w), "weir {command:?}: {w:?} not in the error:\n{log}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}:\n{log}",
        started.elapsed()
    );
}

#[test]
fn a_wrong_password_or_an_untrusted_certificate_fails_fast_naming_the_problem() {
    let s = secured();
    let dir = test_dir();
    let (topo, _) = topology_eos(dir.path(), &unique("sec-fail"));
    let state = dir.path().join("state");
    let run = ["run", topo.to_str().unwrap(), "--state-dir", state.to_str().unwrap()];
    let sink_cfg = write_config(
        dir.path(),
        &sink_common::unique_ident("secfail"),
        "sec-fail-dlq",
        "",
        &[hourly_table_yaml("sec-fail-hourly", "secfail", "")],
    );
    let sink = ["sink", sink_cfg.to_str().unwrap()];
    let sasl = |password: &str, ca: &str| {
        vec![
            "security.protocol=SASL_SSL".to_string(),
            "sasl.mechanism=SCRAM-SHA-512".to_string(),
            format!("sasl.username={}", s.user),
            format!("sasl.password={password}"),
            format!("ssl.ca.location={}", s.file(ca)),
        ]
    };
    let mtls = |ca: &str, client: Option<&str>| {
        let mut v = vec![
            "security.protocol=SSL".to_string(),
            format!("ssl.ca.location={}", s.file(ca)),
        ];
        if let Some(c) = client {
            v.push(format!("ssl.certificate.location={}", s.file(&format!("{c}.pem"))));
            v.push(format!("ssl.key.location={}", s.file(&format!("{c}.key"))));
        }
        v
    };

    let bad_password = ["authentication failed", "invalid credentials", "SCRAM-SHA-512"];
    fails_fast(&run, &s.sasl_ssl, &sasl("not-the-password", "ca.pem"), &bad_password);
    fails_fast(&sink, &s.sasl_ssl, &sasl("not-the-password", "ca.pem"), &bad_password);
    let simulate = ["simulate", "--count", "1", "--topic", "sec-fail-status"];
    fails_fast(
        &simulate,
        &s.sasl_ssl,
        &sasl("not-the-password", "ca.pem"),
        &bad_password,
    );

    // The broker's certificate is not signed by the CA the client trusts.
    let untrusted = ["TLS handshake failed", "certificate verify failed"];
    fails_fast(&run, &s.sasl_ssl, &sasl(&s.password, "other-ca.pem"), &untrusted);
    fails_fast(&sink, &s.mtls, &mtls("other-ca.pem", Some("client")), &untrusted);

    // The broker refuses the client: a certificate from another CA, or none.
    let refused = ["the broker refused the TLS session", "alert"];
    fails_fast(&run, &s.mtls, &mtls("ca.pem", Some("other-client")), &refused);
    fails_fast(&sink, &s.mtls, &mtls("ca.pem", None), &refused);
}
