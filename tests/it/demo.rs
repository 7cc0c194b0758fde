//! `leadflow demo` as a newcomer runs it: an in-process broker, generated traffic, the
//! pipeline, a readable feed of transitions and SLA alerts on stdout, and /metrics served.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common;

fn get(addr: &str, path: &str) -> String {
    common::http::get(addr, path).1
}

/// A series' value; a labelled series does not exist before its first sample: 0.
fn metric(text: &str, name: &str) -> u64 {
    common::http::series(text, name).map_or(0, |v| v as u64)
}

#[test]
fn demo_prints_alerts_serves_metrics_and_exits_cleanly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_leadflow"))
        .args([
            "demo",
            "--duration",
            "25s",
            "--speed",
            "20000",
            "--leads",
            "200",
        ])
        .args(["--http", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the demo starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        assert!(
            Instant::now() < deadline,
            "no metrics address printed: {lines:?}"
        );
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            let found = l
                .strip_prefix("metrics: http://")
                .and_then(|rest| rest.strip_suffix("/metrics"))
                .map(str::to_string);
            lines.push(l);
            if let Some(a) = found {
                break a;
            }
        }
    };
    assert!(get(&addr, "/health/live").contains("ok"));
    // Counters move while traffic flows.
    let wait_for = |name: &str, above: u64| {
        let deadline = Instant::now() + Duration::from_secs(18);
        loop {
            let text = get(&addr, "/metrics");
            let v = metric(&text, name);
            if v > above {
                return v;
            }
            assert!(Instant::now() < deadline, "{name} stayed at {v}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let first = wait_for(
        "leadflow_events_total{source=\"web\",type=\"page_view\"}",
        0,
    );
    wait_for(
        "leadflow_events_total{source=\"web\",type=\"page_view\"}",
        first,
    );
    // Every metric of the service moves while the demo runs (producer errors stay 0).
    for series in [
        "leadflow_events_total{source=\"crm\",type=\"lead_upsert\"}",
        "leadflow_transitions_total{from=\"new\",to=\"mql\"}",
        "leadflow_sla_records_total{kind=\"met\",policy=\"mql_follow_up\"}",
        "leadflow_sla_records_total{kind=\"breach\",policy=\"mql_follow_up\"}",
        "leadflow_lead_response_seconds_count{policy=\"mql_follow_up\"}",
        "leadflow_lead_response_business_seconds_count{policy=\"mql_follow_up\"}",
        "leadflow_leads{stage=\"mql\"}",
        "leadflow_leads_in_memory",
        "leadflow_open_sla_clocks",
        "leadflow_event_time_lag_seconds_count",
        "leadflow_recovery_duration_seconds_count",
        "leadflow_snapshot_duration_seconds_count",
        "leadflow_snapshot_bytes",
        "leadflow_assigned_partitions{stage=\"state\"}",
        "leadflow_assigned_partitions{stage=\"ingest\"}",
        "leadflow_consumer_group_lag_known{stage=\"ingest\"}",
        "leadflow_consumer_group_lag_known{stage=\"state\"}",
        "leadflow_ready",
        "leadflow_notify_delivered_total{target=\"sales\"}",
        "leadflow_notify_delivery_latency_seconds_count{target=\"sales\"}",
    ] {
        wait_for(series, 0);
    }
    let text = get(&addr, "/metrics");
    for present in [
        "leadflow_consumer_lag_records{stage=\"ingest\"}",
        "leadflow_consumer_lag_records{stage=\"state\"}",
        "leadflow_consumer_group_lag_records{stage=\"ingest\"}",
        "leadflow_consumer_group_lag_records{stage=\"state\"}",
        "leadflow_snapshot_failures_total 0",
        "leadflow_schema_registry_failures_total 0",
        "leadflow_key_mismatch_total 0",
        "leadflow_ingest_paused_partitions 0",
        "leadflow_snapshot_age_seconds",
        "leadflow_producer_errors_total 0",
        "leadflow_duplicate_events_total",
        // The demo's broker is librdkafka's mock: no transactions (kafka.transactions = auto).
        "leadflow_output_transactions 0",
        "leadflow_transactions_aborted_total 0",
    ] {
        assert!(text.contains(present), "no {present} in:\n{text}");
    }

    let status = child.wait().expect("demo exits");
    let _ = reader.join();
    lines.extend(rx.try_iter());
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    assert!(status.success(), "demo failed:\n{stderr}");
    let feed = lines.join("\n");
    for needle in [
        " MQL ",
        " SAL ",
        "new -> mql",
        "SLA ",
        "BREACH",
        "met on time",
        // What the notify stage delivered to the demo's local receiver.
        "notify -> #sales (Slack webhook, local receiver): :dart: *New MQL*: ",
        "notify -> #sales (Slack webhook, local receiver): :rotating_light: *SLA breached* (mql_follow_up): ",
    ] {
        assert!(feed.contains(needle), "no {needle:?} in the feed:\n{feed}");
    }
    assert!(
        feed.lines()
            .any(|l| l.starts_with("demo: ") && l.contains("events produced")),
        "{feed}"
    );
    assert!(!stderr.contains("ERROR"), "errors logged:\n{stderr}");
}

#[test]
fn dev_broker_serves_leadflow_topics_on_the_printed_address() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let mut child = Command::new(env!("CARGO_BIN_EXE_leadflow"))
        .args(["dev-broker", "--port", "0", "--partitions", "4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("dev-broker starts");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("the bootstrap address is printed");
    let bootstrap = first.trim().to_string();
    assert!(bootstrap.starts_with("127.0.0.1:"), "{bootstrap}");
    let client: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("client");
    let md = client
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata through the printed address");
    for topic in [
        "leads.web",
        "leads.email",
        "leads.crm",
        "leadflow.events",
        "leads.transitions",
        "leads.sla",
        "leads.dlq",
    ] {
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .unwrap_or_else(|| panic!("{topic} missing"));
        assert_eq!(t.partitions().len(), 4, "{topic}");
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("SIGTERM");
    assert!(child.wait().expect("exits").success());
}

#[test]
fn run_logs_json_lines_and_names_an_unreachable_broker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[funnel]\nmql_threshold = 1\n[kafka]\nbrokers = \"127.0.0.1:1\"\nconnect_timeout = \"1s\"\n\
         [http]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n",
    )
    .expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_leadflow"))
        .args(["run", "--config", cfg.to_str().expect("utf-8")])
        .env_remove("LEADFLOW_LOG")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let json_lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        json_lines
            .iter()
            .any(|v| v["level"] == "INFO" && v["fields"]["message"].is_string()),
        "{stderr}"
    );
    assert!(
        stderr.contains("cannot reach the Kafka brokers at 127.0.0.1:1"),
        "{stderr}"
    );
}
