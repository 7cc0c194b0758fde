//! The service against a Kafka-protocol broker over TCP (librdkafka's mock cluster, or the
//! cluster in LEADFLOW_TEST_BROKERS).

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::kafka::{send, wait_until, TestBroker};
use leadflow::codec::avro;
use leadflow::config::Settings;
use leadflow::model::records::Output;
use leadflow::service::{self, ServiceStats};
use serde_json::Value;

/// Runs the service in a thread until the returned guard is stopped.
struct Running {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<anyhow::Result<()>>>,
    stats: ServiceStats,
}

impl Running {
    fn start(config: &str) -> Running {
        let settings = Settings::from_toml(config).unwrap_or_else(|e| panic!("config: {e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let stats = ServiceStats::default();
        let (s2, st2) = (Arc::clone(&stop), stats.clone());
        let handle = thread::spawn(move || service::run(&settings, s2, st2));
        Running {
            stop,
            handle: Some(handle),
            stats,
        }
    }

    fn stop(mut self) -> anyhow::Result<()> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle
            .take()
            .map(|h| h.join().expect("service thread"))
            .unwrap_or(Ok(()))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn expected_by_kind() -> (Vec<Value>, Vec<Value>) {
    let text =
        std::fs::read_to_string(common::examples_dir().join("expected.jsonl")).expect("expected");
    let all: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let (t, s): (Vec<Value>, Vec<Value>) =
        all.into_iter().partition(|r| r["record"] == "transition");
    (t, s)
}

fn to_json(rec: &Output) -> Value {
    serde_json::to_value(rec).expect("record as json")
}

#[test]
fn conformance_example_through_kafka_and_every_invalid_class_in_the_dlq() {
    let broker = TestBroker::start("conformance", 1);
    let snaps = tempfile::tempdir().expect("tempdir");
    let config = broker.config(
        snaps.path(),
        "[formats]\nweb = \"json\"\nemail = \"json\"\ncrm = \"json\"\n[run]\ntick_interval = \"0s\"\n",
    );
    let running = Running::start(&config);
    let producer = broker.producer();
    let input = std::fs::read_to_string(common::examples_dir().join("input.jsonl")).expect("input");
    // One at a time, each forwarded before the next, so the internal log keeps input order.
    for (i, line) in input.lines().enumerate() {
        let parsed: Option<Value> = serde_json::from_str(line).ok();
        let topic = match parsed.as_ref().and_then(|v| v["source"].as_str()) {
            Some("email") => &broker.topics.email,
            Some("crm") => &broker.topics.crm,
            _ => &broker.topics.web,
        };
        let key = parsed
            .as_ref()
            .and_then(|v| v["lead_key"].as_str())
            .map(|k| k.as_bytes().to_vec());
        let before = broker.count(&broker.topics.internal) + broker.count(&broker.topics.dlq);
        send(&producer, topic, key.as_deref(), line.as_bytes());
        wait_until(
            Duration::from_secs(20),
            &format!("line {} forwarded", i + 1),
            || broker.count(&broker.topics.internal) + broker.count(&broker.topics.dlq) > before,
        );
    }
    let (want_t, want_s) = expected_by_kind();
    wait_until(Duration::from_secs(30), "all 23 output records", || {
        broker.count(&broker.topics.transitions) == want_t.len() as i64
            && broker.count(&broker.topics.sla) == want_s.len() as i64
    });
    let ingest = &running.stats.ingest;
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(
        (
            ingest.consumed.load(Relaxed),
            ingest.forwarded.load(Relaxed),
            ingest.invalid.load(Relaxed)
        ),
        (47, 41, 6)
    );
    assert_eq!(running.stats.state.outputs.load(Relaxed), 23);
    running.stop().expect("clean shutdown");

    let decode = |topic: &str, is_t: bool| -> Vec<Value> {
        broker
            .read_all(topic)
            .iter()
            .map(|r| to_json(&avro::decode_output(is_t, &r.value).expect("Avro output")))
            .collect()
    };
    assert_eq!(decode(&broker.topics.transitions, true), want_t);
    assert_eq!(decode(&broker.topics.sla, false), want_s);

    // Every output has its cause and index; keys are lead keys.
    for r in broker.read_all(&broker.topics.sla) {
        assert!(r.headers.contains_key("lf-src-offset") && r.headers.contains_key("lf-src-index"));
        let rec = avro::decode_output(false, &r.value).expect("sla");
        assert_eq!(r.key.as_deref(), Some(rec.lead_key().as_bytes()));
    }

    let dlq = broker.read_all(&broker.topics.dlq);
    let codes: Vec<&str> = dlq
        .iter()
        .map(|r| r.headers["lf-error-code"].as_str())
        .collect();
    assert_eq!(
        codes,
        [
            "missing_field",
            "unknown_source",
            "unknown_crm_type",
            "negative_time",
            "undecodable",
            "wrong_type"
        ]
    );
    let lines: Vec<&str> = input.lines().collect();
    for (r, line) in dlq.iter().zip(&lines[41..]) {
        assert_eq!(r.value, line.as_bytes(), "the original bytes are kept");
        assert!(!r.headers["lf-error"].is_empty());
        assert!(r.headers["lf-source-topic"].starts_with(&broker.prefix));
        assert_eq!(r.headers["lf-source-partition"], "0");
        assert!(r.headers["lf-source-offset"].parse::<i64>().is_ok());
    }
}
