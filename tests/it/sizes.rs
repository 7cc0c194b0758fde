//! Every record leadflow produces fits what the producer and the topic accept. Before, an
//! invalid 1,020,000-byte message (under `limits.max_message_bytes` = 1 MiB, over librdkafka's
//! `message.max.bytes` = 1,000,000) made ingest exit with "cannot produce to leads.dlq:
//! MessageSizeTooLarge" on every restart, and the valid event behind it never flowed. Now that
//! pair of settings is refused at startup (tests/it/config_errors.rs), the default input limit is
//! the producer's, and a dead letter that would not fit is cut.

use crate::common;

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
    let producer = big_producer(&broker);
    // The issue's message: over the (default) input limit now, so a 64 KiB sample.
    let mut over = b"{\"broken\": \"".to_vec();
    over.resize(1_020_000, b'x');
    send(&producer, &broker.topics.web, Some(b"ana@acme.io"), &over);
    // Under the input limit, but with its headers and key over what the topic accepts.
    let mut huge = b"{\"broken\": \"".to_vec();
    huge.resize(999_900, b'x');
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
    assert_eq!(dlq.len(), 2, "each dead-lettered once");
    let h = &dlq[0].headers;
    assert_eq!(h["lf-error-code"], "too_large");
    assert_eq!(h["lf-original-size"], "1020000");
    assert_eq!(h["lf-truncated"], "true");
    assert_eq!(dlq[0].value.len(), 64 * 1024, "the first 64 KiB");
    let h = &dlq[1].headers;
    assert_eq!(h["lf-error-code"], "undecodable");
    assert_eq!(h["lf-original-size"], "999900");
    assert_eq!(h["lf-truncated"], "true");
    assert!(
        dlq[1].value.len() < 999_900 - 1024 + 1,
        "{} bytes: less framing room than the producer's 1,000,000",
        dlq[1].value.len()
    );
    assert!(dlq[1].value.len() > 900_000, "as much as fits is kept");
    assert!(
        huge.starts_with(&dlq[1].value),
        "the start of the original bytes"
    );
    running.stop().expect("clean stop");
}

#[test]
fn a_valid_event_too_large_for_the_internal_topic_is_dead_lettered() {
    let broker = TestBroker::start("sizes-internal", 1);
    let snaps = tempfile::tempdir().expect("tempdir");
    // A producer limit of 20,000 bytes and the input limit with it; the input is within
    // [limits], and its normalized form does not fit with the record's framing.
    let config = broker
        .config(
            snaps.path(),
            "[formats]\nweb = \"json\"\n[run]\ntick_interval = \"0s\"\n[limits]\nmax_message_bytes = 20000\n",
        )
        .replace(
            "[kafka.properties]",
            "[kafka.properties]\n\"message.max.bytes\" = \"20000\"",
        );
    let running = Running::start(&config);
    let attrs: Vec<String> = (0..6)
        .map(|i| format!("\"a{i}\":\"{}\"", "v".repeat(3_290)))
        .collect();
    let big = format!(
        r#"{{"event_id":"e0","lead_key":"bo@beta.io","occurred_at":1785542400000,"source":"web","type":"page_view","attributes":{{{}}}}}"#,
        attrs.join(",")
    );
    assert!(big.len() <= 20_000, "within the input limit: {}", big.len());
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
        h["lf-original-size"],
        big.len().to_string(),
        "the input, whole"
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

/// `limits.max_message_bytes` above the internal topic's `max.message.bytes` is refused at
/// startup, naming both (a valid message could not be forwarded). Needs a broker that
/// describes and alters topic configs (Apache Kafka; the mock does neither).
#[test]
fn an_input_limit_above_what_the_internal_topic_accepts_is_refused_at_startup() {
    let broker = TestBroker::start("sizes-topic", 1);
    let t = &broker.topics;
    if let Err(e) = broker.set_topic_config(&t.internal, &[("max.message.bytes", "500000")]) {
        assert!(broker.mock().is_some(), "altering a topic config: {e}");
        eprintln!("skipped on the mock (no topic configs): {e}");
        return;
    }
    let snaps = tempfile::tempdir().expect("tempdir");
    let settings =
        leadflow::config::Settings::from_toml(&broker.config(snaps.path(), "")).expect("config");
    let mut err = String::new();
    wait_until(Duration::from_secs(30), "the startup check refuses", || {
        match leadflow::kafka::admin::check(&settings.service, &settings.rules.limits) {
            Ok(_) => false, // the new config may take a moment to be described
            Err(e) => {
                err = format!("{e:#}");
                true
            }
        }
    });
    assert!(
        err.contains(&format!(
            "limits.max_message_bytes = 1000000 is above max.message.bytes = 500000 of the \
             internal topic {}",
            t.internal
        )),
        "{err}"
    );
}
