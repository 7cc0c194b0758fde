//! Clients that are not leadflow's read what it writes and write what it reads: Apache
//! Kafka's Java client and Apache Avro's Java library (tests/interop/Interop.java, run from
//! Maven Central jars) produce plain and Confluent-framed Avro inputs, and read the Avro
//! outputs back (read_committed) against `schemas/`.
//!
//! Needs an external broker (LEADFLOW_TEST_BROKERS), Java 17+ and Maven; without them it says
//! so and returns, except in CI, where they are required.

use crate::common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::kafka::{assert_same, total, Running, TestBroker};
use leadflow::codec::avro;
use leadflow::config::{InputFormat, Settings};
use leadflow::gen::{self, GenSpec};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The classpath of tests/interop/pom.xml (offline first, then from Maven Central).
fn classpath() -> Option<String> {
    let out = std::env::temp_dir().join(format!("leadflow-interop-cp-{}", std::process::id()));
    let pom = root().join("tests/interop/pom.xml");
    for offline in [true, false] {
        let mut cmd = Command::new("mvn");
        cmd.args(["-B", "-q"]);
        if offline {
            cmd.arg("-o");
        }
        let status = cmd
            .arg("-f")
            .arg(&pom)
            .arg("dependency:build-classpath")
            .arg(format!("-Dmdep.outputFile={}", out.display()))
            .arg("-Dmdep.includeScope=runtime")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if status.is_ok_and(|s| s.success()) {
            let cp = std::fs::read_to_string(&out).ok()?;
            let _ = std::fs::remove_file(&out);
            return Some(cp.trim().to_string());
        }
    }
    None
}

fn java(cp: &str, args: &[&str], stdin: Option<&[u8]>) -> String {
    let source = root().join("tests/interop/Interop.java");
    let mut child = Command::new("java")
        .arg("-cp")
        .arg(cp)
        .arg(&source)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("java runs");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or_default())
        .expect("feed java");
    drop(input);
    let out = child.wait_with_output().expect("java finishes");
    assert!(
        out.status.success(),
        "Interop.java {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn java_clients_produce_inputs_and_read_outputs_with_apache_avro() {
    let broker = TestBroker::start("interop", 3);
    if broker.mock().is_some() {
        eprintln!("skipped: the Java clients need an external broker (LEADFLOW_TEST_BROKERS)");
        return;
    }
    let Some(cp) = classpath() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "Java and Maven (tests/interop/pom.xml) are required in CI"
        );
        eprintln!("skipped: Maven could not resolve tests/interop/pom.xml");
        return;
    };
    let snaps = tempfile::tempdir().expect("tempdir");
    // Plain Avro on web and crm, Confluent-framed on email; Avro outputs.
    let config = broker.config(
        snaps.path(),
        "[formats]\nweb = \"avro\"\nemail = \"avro-confluent\"\ncrm = \"avro\"\n\
         [run]\ntick_interval = \"200ms\"\n",
    );
    let settings = Settings::from_toml(&config).expect("config");
    let events = gen::generate(&GenSpec {
        seed: 5,
        leads: 500,
        events: 4_000,
        start_ms: 1_785_542_400_000,
        span_ms: 10 * 86_400_000,
    });
    let mut lines = Vec::new();
    for ev in &events {
        let source = ev.source;
        let format = match settings.service.input_formats[source.index()] {
            InputFormat::AvroConfluent => "avro-confluent",
            _ => "avro",
        };
        let line = serde_json::json!({
            "topic": settings.service.topics.input(source),
            "format": format,
            "schema": format!("{}_event.avsc", source.as_str()),
            "event": gen::to_json(ev),
        });
        lines.extend_from_slice(line.to_string().as_bytes());
        lines.push(b'\n');
    }
    let running = Running::start(&config);
    let schemas = root().join("schemas");
    java(
        &cp,
        &["produce", &broker.bootstrap, path(&schemas)],
        Some(&lines),
    );
    let (expected, actual) = broker.converge(&settings, events.len(), Duration::from_secs(180));
    running.stop().expect("clean stop");
    assert_eq!(
        broker.records(&broker.topics.dlq),
        0,
        "every Java-produced input was decoded"
    );
    assert!(total(&expected) > 300);
    assert_same(&expected, &actual);

    // The outputs, read by the Java client and decoded by Apache Avro, equal leadflow's own
    // decoding of the same records.
    for (topic, is_transition, schema) in [
        (&broker.topics.transitions, true, "transition.avsc"),
        (&broker.topics.sla, false, "sla_record.avsc"),
    ] {
        let ours = broker.read_all(topic);
        let theirs: Vec<Value> = java(
            &cp,
            &[
                "consume",
                &broker.bootstrap,
                topic,
                path(&schemas.join(schema)),
            ],
            None,
        )
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
        assert_eq!(
            theirs.len(),
            ours.len(),
            "{topic}: records read by the Java client"
        );
        let mut theirs = theirs;
        theirs.sort_by_key(|v| (v["partition"].as_i64(), v["offset"].as_i64()));
        for (mine, java) in ours.iter().zip(&theirs) {
            assert_eq!(
                (i64::from(mine.partition), mine.offset),
                (
                    java["partition"].as_i64().expect("partition"),
                    java["offset"].as_i64().expect("offset")
                )
            );
            assert_eq!(mine.key.as_deref(), java["key"].as_str().map(str::as_bytes));
            let decoded = avro::decode_output(is_transition, &mine.value).expect("our decoding");
            let want = serde_json::to_value(&decoded).expect("as JSON");
            let got = java["value"].as_object().expect("a record");
            for (field, value) in got {
                same_value(&want[field.as_str()], value, field);
            }
        }
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Strings, integers and nulls equal; doubles within the 4 decimals leadflow's JSON keeps.
fn same_value(ours: &Value, java: &Value, field: &str) {
    match (ours, java) {
        (Value::Number(a), Value::Number(b)) if a.is_f64() || b.is_f64() => {
            let (a, b) = (
                a.as_f64().unwrap_or(f64::NAN),
                b.as_f64().unwrap_or(f64::NAN),
            );
            assert!((a - b).abs() < 1e-4, "{field}: {a} vs {b}");
        }
        (Value::Null, Value::Null) => {}
        _ => assert_eq!(ours, java, "{field}"),
    }
}
