//! Hostile input, each case with its stated outcome (docs/hardening.md has the table):
//! decoders reject what they cannot read with a reason and never panic or hang; bounds hold;
//! valid events around the garbage are not lost.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::producer::{BaseRecord, Producer};

use common::kafka::{send, wait_until, Running, TestBroker};
use common::{ev, examples_dir, DAY};
use leadflow::codec::avro::{self, Framing};
use leadflow::codec::json;
use leadflow::config::Settings;
use leadflow::engine::PartitionState;
use leadflow::model::event::{Event, EventFields, Source};
use leadflow::model::records::Output;
use leadflow::model::rules::Limits;

const T0: i64 = 1_795_000_000_000;

fn web(id: &str, key: &str, attrs: &[(&str, &str)]) -> Event {
    EventFields::from_parts(id, key, T0, "web", "page_view", attrs)
        .validate()
        .expect("valid")
}

fn code(r: Result<Event, leadflow::model::event::Invalid>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) => e.code(),
    }
}

#[test]
fn every_truncation_of_an_avro_message_is_undecodable() {
    let ev = web(
        "e1",
        "ana@x.io",
        &[("url", "https://x.io/pricing"), ("form", "demo")],
    );
    for framing in [Framing::Plain, Framing::Confluent] {
        let bytes = avro::encode_input(&ev, framing, 9).expect("encodes");
        for cut in 0..bytes.len() {
            assert_eq!(
                code(avro::decode_input(Source::Web, &bytes[..cut], framing)),
                "undecodable",
                "{framing:?} cut at {cut}"
            );
        }
        assert_eq!(code(avro::decode_input(Source::Web, &bytes, framing)), "ok");
    }
}

#[test]
fn a_wrong_magic_byte_is_undecodable_and_says_so() {
    let ev = web("e1", "ana@x.io", &[]);
    let mut bytes = avro::encode_input(&ev, Framing::Confluent, 9).expect("encodes");
    bytes[0] = 0x7b;
    let err = avro::decode_input(Source::Web, &bytes, Framing::Confluent).expect_err("bad");
    assert_eq!(err.code(), "undecodable");
    assert!(err.to_string().contains("magic byte 0x7b"), "{err}");
}

#[test]
fn deeply_nested_json_is_rejected_without_exhausting_the_stack() {
    for depth in [200, 100_000] {
        let mut line = String::from(
            r#"{"event_id":"e","lead_key":"k","occurred_at":1,"source":"web","type":"x","attributes":"#,
        );
        line.push_str(&"[".repeat(depth));
        line.push_str(&"]".repeat(depth));
        line.push('}');
        assert_eq!(
            code(json::decode_event(line.as_bytes())),
            "undecodable",
            "depth {depth}"
        );
    }
}

#[test]
fn invalid_utf8_in_keys_and_values_is_undecodable() {
    // JSON: a lead key and an attribute name with a lone 0xff byte.
    let mut line = br#"{"event_id":"e","lead_key":"k"#.to_vec();
    line.push(0xff);
    line.extend_from_slice(br#"","occurred_at":1,"source":"web","type":"x"}"#);
    assert_eq!(code(json::decode_event(&line)), "undecodable");
    // Avro: the same bytes inside a string of the datum.
    let ev = web("e1", "kk", &[("nameX", "v")]);
    let mut bytes = avro::encode_input(&ev, Framing::Plain, 0).expect("encodes");
    let at = bytes
        .windows(5)
        .position(|w| w == b"nameX")
        .expect("attribute name");
    bytes[at + 4] = 0xff;
    assert_eq!(
        code(avro::decode_input(Source::Web, &bytes, Framing::Plain)),
        "undecodable"
    );
}

#[test]
fn ten_megabyte_attributes_and_huge_attribute_counts_break_the_bounds() {
    let limits = Limits::default();
    let big = "v".repeat(10 << 20);
    let ev = web("e1", "ana", &[("notes", &big)]);
    // Whole message: larger than max_message_bytes (checked before decoding, in ingest and
    // replay); on its own, the attribute breaks max_attribute_bytes.
    let bytes = avro::encode_input(&ev, Framing::Plain, 0).expect("encodes");
    assert!(bytes.len() > limits.max_message_bytes);
    let err = ev.check_limits(&limits).expect_err("too long");
    assert_eq!(err.code(), "attribute_too_long");
    assert!(err.to_string().contains("notes"), "{err}");
    let many: Vec<(String, String)> = (0..1000).map(|i| (format!("a{i}"), "v".into())).collect();
    let refs: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let ev = web("e2", "ana", &refs);
    assert_eq!(
        ev.check_limits(&limits).expect_err("too many").code(),
        "too_many_attributes"
    );
}

#[test]
fn extreme_timestamps_neither_panic_nor_stall_the_engine() {
    let settings = Settings::load(&examples_dir().join("config.toml")).expect("config");
    let mut st = PartitionState::new(Arc::clone(&settings.rules));
    let mut out = Vec::new();
    // i64::MIN: rejected at validation (negative time).
    let neg = EventFields::from_parts("n", "ana", i64::MIN, "web", "page_view", &[]).validate();
    assert_eq!(neg.expect_err("negative").code(), "negative_time");
    // An MQL with a running clock, then an event at the end of time: every timer fires once,
    // deadlines saturate instead of overflowing, and later (earlier-dated) events still apply.
    st.apply(
        &ev(
            "u",
            "ana",
            T0,
            "crm",
            "lead_upsert",
            &[
                ("title", "VP Sales"),
                ("country", "US"),
                ("employees", "900"),
            ],
        ),
        &mut out,
    );
    st.apply(
        &ev("d", "ana", T0 + 1, "web", "demo_request", &[]),
        &mut out,
    );
    assert_eq!(st.open_clocks(), 1);
    st.apply(
        &ev("far", "bo", i64::MAX, "web", "page_view", &[]),
        &mut out,
    );
    let kinds: Vec<&str> = out
        .iter()
        .filter_map(|o| match o {
            Output::Sla(s) => Some(s.kind.as_str()),
            Output::Transition(_) => None,
        })
        .collect();
    assert_eq!(kinds, ["warning", "breach"]);
    assert_eq!(st.pending_timers(), 0);
    st.apply(
        &ev("late", "ana", T0 + DAY, "crm", "sales_accepted", &[]),
        &mut out,
    );
    assert_eq!(st.lead("ana").expect("ana").stage.as_str(), "sal");
}

#[test]
fn a_million_events_for_one_lead_keep_its_state_bounded() {
    let settings = Settings::load(&examples_dir().join("config.toml")).expect("config");
    let rules = Arc::clone(&settings.rules);
    let mut st = PartitionState::new(Arc::clone(&rules));
    let mut out = Vec::new();
    let kinds = [
        ("web", "page_view"),
        ("web", "content_download"),
        ("email", "click"),
        ("crm", "sales_accepted"),
        ("crm", "recycled"),
        ("web", "demo_request"),
    ];
    for i in 0..1_000_000i64 {
        let (s, t) = kinds[(i % kinds.len() as i64) as usize];
        let e = EventFields::from_parts(&format!("e{i}"), "one", T0 + i * 1000, s, t, &[])
            .validate()
            .expect("valid");
        st.apply(&e, &mut out);
        out.clear();
    }
    let lead = st.lead("one").expect("lead");
    let x = st.explain("one", None).expect("explained");
    assert_eq!(st.lead_count(), 1);
    assert!(x.recent_transitions.len() <= leadflow::engine::RECENT_TRANSITIONS);
    assert!(lead.contributions().len() <= rules.engagement.len());
    assert!(lead.clocks().len() <= rules.sla.len());
    assert!(st.pending_timers() <= 2 * rules.sla.len());
    assert!(lead.extra().cooldowns().len() <= rules.engagement.len());
    assert!(
        lead.transitions > 100_000,
        "the lead kept moving: {}",
        lead.transitions
    );
    // The snapshot of that lead is small: nothing grew with the event count.
    assert!(st.encode_snapshot(0).len() < 4096);
}

/// Through the broker: garbage of every kind between valid events. Every bad message lands in
/// the dead-letter topic with its reason; every valid event reaches the internal log; the
/// service keeps running and counts the reasons.
#[test]
fn hostile_messages_through_kafka_are_dead_lettered_with_their_reason() {
    let broker = TestBroker::start("hostile", 2);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = broker.config(
        dir.path(),
        "[limits]\nmax_message_bytes = 100000\nmax_leads_per_partition = 100\n\n[http]\nlisten = \"\"\n",
    );
    let running = Running::start(&config);
    let producer = broker.producer();
    let t = &broker.topics;
    let valid = |i: usize| {
        let e = web(&format!("ok{i}"), &format!("lead{i}@x.io"), &[]);
        avro::encode_input(&e, Framing::Plain, 0).expect("encodes")
    };
    let good = web("e1", "ana@x.io", &[("url", "https://x.io")]);
    let good_bytes = avro::encode_input(&good, Framing::Plain, 0).expect("encodes");
    let big = web("e2", "ana@x.io", &[("notes", &"n".repeat(150_000))]);
    let many: Vec<(String, String)> = (0..300).map(|i| (format!("a{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let long_attr = web("e4", "ana@x.io", &[("notes", &"n".repeat(70_000))]);
    let mut bad_utf8 = good_bytes.clone();
    let at = bad_utf8.windows(3).position(|w| w == b"ana").expect("key");
    bad_utf8[at] = 0xff;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated",
            good_bytes[..good_bytes.len() / 2].to_vec(),
            "undecodable",
        ),
        ("empty", Vec::new(), "undecodable"),
        (
            "garbage",
            b"\x00\x00\x00\x00\x07{not avro".to_vec(),
            "undecodable",
        ),
        ("invalid utf-8 key", bad_utf8, "undecodable"),
        (
            "oversized",
            avro::encode_input(&big, Framing::Plain, 0).expect("e"),
            "too_large",
        ),
        (
            "300 attributes",
            avro::encode_input(&web("e3", "ana@x.io", &many), Framing::Plain, 0).expect("e"),
            "too_many_attributes",
        ),
        (
            "70 KB attribute",
            avro::encode_input(&long_attr, Framing::Plain, 0).expect("e"),
            "attribute_too_long",
        ),
        (
            "far future",
            avro::encode_input(
                &EventFields::from_parts("e5", "zed@x.io", i64::MAX, "web", "page_view", &[])
                    .validate()
                    .expect("v"),
                Framing::Plain,
                0,
            )
            .expect("e"),
            // limits.max_future (default 1 day) against ingest's clock (SPEC v2 §2).
            "future_time",
        ),
    ];
    let mut n_valid = 0;
    for (i, (_, bytes, _)) in cases.iter().enumerate() {
        send(&producer, &t.web, Some(b"k"), &valid(i));
        n_valid += 1;
        send(&producer, &t.web, Some(b"k"), bytes);
    }
    // A flood of distinct leads: each of the 2 partitions passes its cap of 100 leads.
    let flood: Vec<Vec<u8>> = (0..300).map(|i| valid(1000 + i)).collect();
    for value in &flood {
        producer
            .send(
                BaseRecord::<[u8], [u8]>::to(&t.web)
                    .key(b"k")
                    .payload(value),
            )
            .expect("queued");
        n_valid += 1;
    }
    producer.flush(Duration::from_secs(30)).expect("flushed");
    let n_bad = cases.iter().filter(|c| c.2 != "ok").count() as i64;
    wait_until(
        Duration::from_secs(60),
        "all forwarded or dead-lettered",
        || broker.count(&t.dlq) >= n_bad && broker.count(&t.internal) >= n_valid,
    );
    assert!(!running.finished(), "the service is still running");
    let dlq = broker.read_all(&t.dlq);
    let got: Vec<&str> = dlq
        .iter()
        .map(|r| r.headers["lf-error-code"].as_str())
        .collect();
    let want: Vec<&str> = cases.iter().filter(|c| c.2 != "ok").map(|c| c.2).collect();
    assert_eq!(got, want);
    let oversized = dlq
        .iter()
        .find(|r| r.headers["lf-error-code"] == "too_large")
        .expect("too_large");
    assert_eq!(
        oversized.value.len(),
        leadflow::kafka::ingest::DLQ_SAMPLE_BYTES
    );
    assert!(
        oversized.headers["lf-original-size"]
            .parse::<usize>()
            .expect("size")
            > 150_000
    );
    assert_eq!(
        broker.records(&t.internal) as i64,
        n_valid,
        "no valid event lost, none invented"
    );
    let m = &running.stats.metrics;
    let deadline = Instant::now() + Duration::from_secs(10);
    while m.invalid.with_label_values(&["too_large"]).get() < 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(m.invalid.with_label_values(&["undecodable"]).get(), 4);
    assert_eq!(m.invalid.with_label_values(&["too_large"]).get(), 1);
    // The lead cap held, and its evictions were counted.
    let evicted = || m.evicted_leads.with_label_values(&["max_leads"]).get();
    wait_until(Duration::from_secs(30), "evictions counted", || {
        evicted() >= 100
    });
    // The state thread publishes the gauge from the live state.
    wait_until(Duration::from_secs(10), "the gauge published", || {
        m.leads_in_memory.get() > 0
    });
    assert!(
        m.leads_in_memory.get() <= 200,
        "{} leads",
        m.leads_in_memory.get()
    );
    running.stop().expect("clean stop");
}
