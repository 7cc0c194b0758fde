//! The live conversion metrics and `leadflow report --kafka-config`, on a broker (the mock
//! under `cargo test`, Apache Kafka in the real-broker tier): the hand-built history of
//! tests/it/report.rs goes through `leadflow run` (one partition, no ticks, the events in the
//! file's order, so the log folds as the replay does), `/metrics` counts what was worked out by hand there, `/leads/{key}` shows
//! the MQL, and the report read from the internal topic equals the report of the file.

use crate::common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::child::{http_address, spawn, tail};
use common::http::{get, series};
use common::kafka::{wait_until, TestBroker};
use leadflow::config::Settings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/report")
        .join(name)
}

fn report(args: &[&std::ffi::OsStr]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_leadflow"))
        .arg("report")
        .args(args)
        .args(["--format", "json"])
        .output()
        .expect("running leadflow report");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[test]
fn live_conversion_metrics_and_the_report_from_the_internal_topic() {
    let broker = TestBroker::start("report-live", 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let example =
        std::fs::read_to_string(common::examples_dir().join("config.toml")).expect("example");
    let own = std::fs::read_to_string(fixture("config.toml")).expect("fixture config");
    // The history runs into December 2026; the future-time guard is off so ingest takes it
    // whatever today is.
    let config = broker
        .config(
            &dir.path().join("snaps"),
            "[http]\nlisten = \"127.0.0.1:0\"\n[run]\ntick_interval = \"0s\"\n[limits]\nmax_future = \"0s\"\n",
        )
        .replacen(&example, &own, 1);
    let cfg = dir.path().join("live.toml");
    std::fs::write(&cfg, &config).expect("config");
    let settings = Settings::load(&cfg).expect("valid config");

    let log = dir.path().join("live.log");
    let mut child = spawn(&cfg, &log);
    let mut addr = None;
    wait_until(Duration::from_secs(60), "the HTTP address", || {
        addr = http_address(&log);
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("leadflow run exited ({status}):\n{}", tail(&log));
        }
        addr.is_some()
    });
    let addr = addr.unwrap_or_default();

    let text = std::fs::read_to_string(fixture("history.jsonl")).expect("history");
    let events: Vec<_> = text
        .lines()
        .map(|l| leadflow::codec::json::decode_event(l.as_bytes()).expect("event"))
        .collect();
    // Each source has its own topic, and ingest interleaves topics as they come: one event
    // at a time, each in the internal log before the next, keeps the file's order.
    // Runs of one source go together; a reader of the internal log says when each arrived.
    let internal = &settings.service.topics.internal;
    let reader: BaseConsumer = leadflow::kafka::client_config(&settings.service)
        .set("group.id", "report-live-reader")
        .set("isolation.level", "read_committed")
        .create()
        .expect("reader");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(internal, 0, Offset::Beginning)
        .expect("partition");
    reader.assign(&tpl).expect("assign");
    let mut seen = 0usize;
    let mut sent = 0usize;
    for run in events.chunk_by(|a, b| a.source == b.source) {
        leadflow::kafka::produce_events(&settings.service, run).expect("produced");
        sent += run.len();
        wait_until(
            Duration::from_secs(30),
            "the run in the internal log",
            || {
                while let Some(m) = reader.poll(Duration::from_millis(50)) {
                    m.expect("reading the internal log");
                    seen += 1;
                }
                seen >= sent
            },
        );
    }

    // By hand (tests/it/report.rs): wins through an MQL l01 l03 l10, sales-sourced l07.
    let won =
        |path: &str| format!("leadflow_funnel_reached_total{{path=\"{path}\",stage=\"won\"}}");
    let mut metrics = String::new();
    // l12's acceptance is the last event.
    let sal = "leadflow_funnel_reached_total{path=\"mql\",stage=\"sal\"}";
    wait_until(Duration::from_secs(60), "every event folded", || {
        metrics = get(&addr, "/metrics").1;
        series(&metrics, sal) == Some(6.0)
    });
    assert_eq!(series(&metrics, &won("mql")), Some(3.0));
    assert_eq!(series(&metrics, &won("direct")), Some(1.0));
    let reached = |stage: &str, path: &str| {
        series(
            &metrics,
            &format!("leadflow_funnel_reached_total{{path=\"{path}\",stage=\"{stage}\"}}"),
        )
    };
    // sal: l01 l02 l03 l05 l10 l12 after an MQL, l07 direct; sql: l01 l02 l03 l10 l11 and
    // l07; lost: l02.
    assert_eq!(reached("sal", "mql"), Some(6.0));
    assert_eq!(reached("sal", "direct"), Some(1.0));
    assert_eq!(reached("sql", "mql"), Some(5.0));
    assert_eq!(reached("sql", "direct"), Some(1.0));
    assert_eq!(reached("lost", "mql"), Some(1.0));
    assert_eq!(reached("lost", "direct"), Some(0.0));
    // 10000 + 2500.25 through MQLs (l03's "abc" is not summed), 5000.50 direct.
    let amount = |path: &str| {
        series(
            &metrics,
            &format!("leadflow_won_amount_total{{path=\"{path}\"}}"),
        )
    };
    assert_eq!(amount("mql"), Some(12_500.25));
    assert_eq!(amount("direct"), Some(5_000.5));
    assert_eq!(
        series(
            &metrics,
            "leadflow_won_amount_unsummed_total{reason=\"invalid\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        series(
            &metrics,
            "leadflow_won_amount_unsummed_total{reason=\"missing\"}"
        ),
        Some(0.0)
    );

    // The explanation shows the latest MQL: l03's second, 2026-12-01T10:00Z at grade B.
    let (status, body) = get(&addr, "/leads/l03@example.com");
    assert_eq!(status, 200, "{body}");
    let lead: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(lead["mql_at"], 1_796_119_200_000i64);
    assert_eq!(lead["grade_at_mql"], "B");
    let (_, body) = get(&addr, "/leads/l07@example.com");
    let l07: Value = serde_json::from_str(&body).expect("JSON");
    assert!(l07["mql_at"].is_null(), "{body}");

    // The report from the internal topic (the whole log, read committed) measures what the
    // report of the file measures.
    let from_kafka = report(&[
        "--config".as_ref(),
        fixture("config.toml").as_os_str(),
        "--kafka-config".as_ref(),
        cfg.as_os_str(),
    ]);
    let from_file = report(&[
        "--config".as_ref(),
        fixture("config.toml").as_os_str(),
        fixture("history.jsonl").as_os_str(),
    ]);
    assert_eq!(from_kafka["history"]["events"], 70);
    assert_eq!(
        from_kafka["history"]["source"],
        format!("kafka:{}", settings.service.topics.internal)
    );
    assert_eq!(from_kafka["definitions"], from_file["definitions"]);
    child.signal("TERM");
    let status = child.0.wait().expect("exit status");
    assert!(status.success(), "{status}:\n{}", tail(&log));
}
