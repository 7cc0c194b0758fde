//! Every record leadflow produces fits what the producer and the topic accept. Before, an
//! invalid 1,020,000-byte message (under `limits.max_message_bytes` = 1 MiB, over librdkafka's
//! `message.max.bytes` = 1,000,000) made ingest exit with "cannot produce to leads.dlq:
//! MessageSizeTooLarge" on every restart, and the valid event behind it never flowed.

mod common;

use std::time::Duration;

use common::kafka::{send, wait_until, Running, TestBroker};
use rdkafka::config::ClientConfig;
use rdkafka::producer::BaseProducer;

const VALID: &str = r#"{"event_id":"e1","lead_key":"ana@acme.io","occurred_at":1785542400000,"source":"web","type":"page_view"}"#;

/// A producer that may send messages up to 2 MB (the test's own, not leadflow's).
fn big_producer(broker: &TestBroker) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("message.max.bytes", "2000000")
        .create()
        .expect("producer")
}

#[test]
fn an_invalid_message_too_large_for_the_dead_letter_topic_is_cut_not_fatal() {
    let broker = TestBroker::start("sizes", 1);
    let snaps = tempfile::tempdir().expect("tempdir");
    let config = broker.config(
        snaps.path(),
        "[formats]\nweb = \"json\"\n[run]\ntick_interval = \"0s\"\n",
    );
    let running = Running::start(&config);
    let mut huge = b"{\"broken\": \"".to_vec();
    huge.resize(1_020_000, b'x');
    let producer = big_producer(&broker);
    send(&producer, &broker.topics.web, Some(b"ana@acme.io"), &huge);
    send(
        &producer,
        &broker.topics.web,
        Some(b"ana@acme.io"),
        VALID.as_bytes(),
    );
    wait_until(
        Duration::from_secs(60),
        "the valid event behind it forwarded",
        || broker.records(&broker.topics.internal) == 1,
    );
    assert!(!running.finished(), "ingest is still running");
    let dlq = broker.read_all(&broker.topics.dlq);
    assert_eq!(dlq.len(), 1, "dead-lettered once");
    let h = &dlq[0].headers;
    assert_eq!(h["lf-error-code"], "undecodable");
    assert_eq!(h["lf-original-size"], "1020000");
    assert_eq!(h["lf-truncated"], "true");
    assert!(
        dlq[0].value.len() < 1_000_000,
        "{} bytes",
        dlq[0].value.len()
    );
    assert!(dlq[0].value.len() > 900_000, "as much as fits is kept");
    assert!(
        huge.starts_with(&dlq[0].value),
        "the start of the original bytes"
    );
    running.stop().expect("clean stop");
}

#[test]
fn a_valid_event_too_large_for_the_internal_topic_is_dead_lettered() {
    let broker = TestBroker::start("sizes-internal", 1);
    let snaps = tempfile::tempdir().expect("tempdir");
    // A producer limit of 20,000 bytes; the input's attributes are within [limits].
    let config = broker
        .config(
            snaps.path(),
            "[formats]\nweb = \"json\"\n[run]\ntick_interval = \"0s\"\n",
        )
        .replace(
            "[kafka.properties]",
            "[kafka.properties]\n\"message.max.bytes\" = \"20000\"",
        );
    let running = Running::start(&config);
    let attrs: Vec<String> = (0..10)
        .map(|i| format!("\"a{i}\":\"{}\"", "v".repeat(3_000)))
        .collect();
    let big = format!(
        r#"{{"event_id":"e0","lead_key":"bo@beta.io","occurred_at":1785542400000,"source":"web","type":"page_view","attributes":{{{}}}}}"#,
        attrs.join(",")
    );
    let producer = big_producer(&broker);
    send(
        &producer,
        &broker.topics.web,
        Some(b"bo@beta.io"),
        big.as_bytes(),
    );
    send(
        &producer,
        &broker.topics.web,
        Some(b"ana@acme.io"),
        VALID.as_bytes(),
    );
    wait_until(Duration::from_secs(60), "the valid event forwarded", || {
        broker.records(&broker.topics.internal) == 1
    });
    let dlq = broker.read_all(&broker.topics.dlq);
    assert_eq!(dlq.len(), 1);
    let h = &dlq[0].headers;
    assert_eq!(h["lf-error-code"], "too_large");
    assert!(h["lf-error"].contains("encodes to"), "{h:?}");
    assert_eq!(
        h["lf-truncated"], "true",
        "the 30 KB input is cut to fit too"
    );
    assert!(dlq[0].value.len() < 20_000);
    assert_eq!(
        running
            .stats
            .metrics
            .invalid
            .with_label_values(&["too_large"])
            .get(),
        1
    );
    running.stop().expect("clean stop");
}
