//! The service against a Kafka-protocol broker over TCP (librdkafka's mock cluster, or the
//! cluster in LEADFLOW_TEST_BROKERS).

use crate::common;

use std::time::Duration;

use common::http::{get, series};
use common::kafka::{assert_same, send, total, wait_until, Running, TestBroker};
use leadflow::codec::avro;
use leadflow::config::Settings;
use leadflow::gen::{self, GenSpec};
use leadflow::model::records::Output;
use serde_json::Value;

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
    // The example's history runs into 2027, ahead of this clock: no future-time guard.
    let config = broker.config(
        snaps.path(),
        "[formats]\nweb = \"json\"\nemail = \"json\"\ncrm = \"json\"\n[run]\ntick_interval = \"0s\"\n\
         [limits]\nmax_future = \"0s\"\n",
    );
    // kafka.transactions = "auto": on for a real broker, off for librdkafka's mock.
    let settings = Settings::from_toml(&config).expect("config");
    assert_eq!(
        leadflow::kafka::admin::transactions(&settings.service).expect("resolved"),
        broker.mock().is_none(),
        "auto resolves by the broker"
    );
    if broker.mock().is_some() {
        let on = Settings::from_toml(&config.replace(
            "[kafka.properties]",
            "transactions = \"on\"\n[kafka.properties]",
        ))
        .expect("config");
        let err = leadflow::kafka::admin::transactions(&on.service).expect_err("refused");
        assert!(err.to_string().contains("mock cluster"), "{err}");
    }
    let running = Running::start(&config);
    let http = leadflow::http::serve(
        "127.0.0.1:0".parse().expect("addr"),
        running.stats.clone(),
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    )
    .expect("http");
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
        broker.records(&broker.topics.transitions) == want_t.len()
            && broker.records(&broker.topics.sla) == want_s.len()
    });
    check_http(&http.to_string(), broker.mock().is_none());
    let ingest = &running.stats.ingest;
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(
        (
            ingest.consumed.load(Relaxed),
            ingest.forwarded.load(Relaxed),
            ingest.invalid.load(Relaxed)
        ),
        (49, 43, 6)
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
    for (r, line) in dlq.iter().zip(&lines[43..]) {
        assert_eq!(r.value, line.as_bytes(), "the original bytes are kept");
        assert!(!r.headers["lf-error"].is_empty());
        assert!(r.headers["lf-source-topic"].starts_with(&broker.prefix));
        assert_eq!(r.headers["lf-source-partition"], "0");
        assert!(r.headers["lf-source-offset"].parse::<i64>().is_ok());
    }
}

fn generated(events: u64, leads: u64) -> Vec<leadflow::model::event::Event> {
    // Aug 2026: in the past, so ticks fire every pending timer once and then stop.
    gen::generate(&GenSpec {
        seed: 3,
        leads,
        events,
        start_ms: 1_785_542_400_000,
        span_ms: 20 * 86_400_000,
    })
}

#[test]
fn two_instances_split_partitions_and_together_give_the_replay_of_the_log() {
    let broker = TestBroker::start("two", 4);
    let snaps = tempfile::tempdir().expect("tempdir");
    // Both instances share the snapshot directory, as a shared volume would in production.
    let config = broker.config(snaps.path(), "[run]\ntick_interval = \"200ms\"\n");
    let settings = Settings::from_toml(&config).expect("config");
    let events = generated(20_000, 3_000);
    let a = Running::start(&config);
    let b = Running::start(&config);
    // The group splits the partitions once both have joined; produce only then, or the first
    // to join may fold everything before the other arrives.
    wait_until(
        Duration::from_secs(90),
        "both instances assigned partitions",
        || {
            a.stats
                .metrics
                .assigned_partitions
                .with_label_values(&["state"])
                .get()
                > 0
                && b.stats
                    .metrics
                    .assigned_partitions
                    .with_label_values(&["state"])
                    .get()
                    > 0
        },
    );
    leadflow::kafka::produce_events(&settings.service, &events).expect("produce");
    let (expected, actual) = broker.converge(&settings, events.len(), Duration::from_secs(180));
    use std::sync::atomic::Ordering::Relaxed;
    let (ra, rb) = (
        a.stats.state.records_in.load(Relaxed),
        b.stats.state.records_in.load(Relaxed),
    );
    // The events are in the past: once caught up, wall-clock ticks fire the pending timers.
    let ticks =
        a.stats.state.ticks_appended.load(Relaxed) + b.stats.state.ticks_appended.load(Relaxed);
    assert!(ticks > 0, "caught-up partitions got ticks");
    a.stop().expect("a stops cleanly");
    b.stop().expect("b stops cleanly");
    assert!(
        ra > 0 && rb > 0,
        "both instances folded partitions ({ra} and {rb} records)"
    );
    assert!(total(&expected) > 1_000);
    assert_same(&expected, &actual);
}

/// With transactions, each commit runs on the committer thread while the fold fills the next
/// transaction on a second producer. Commits every 10 ms make hundreds of those overlaps; every
/// output partition must still be the replay of the log, in order (two producers have no
/// order between them: the fold waits for a transaction's acks before the next one's first
/// record), outputs must have been produced while commits ran, and the state thread must
/// have waited for only a few of the commits.
#[test]
fn overlapping_commits_keep_every_output_in_order() {
    let broker = TestBroker::start("overlap", 4);
    if broker.mock().is_some() {
        eprintln!("skipped: overlapping commits need transactions (LEADFLOW_TEST_BROKERS)");
        return;
    }
    let snaps = tempfile::tempdir().expect("tempdir");
    let config = broker.config(
        snaps.path(),
        "[run]
tick_interval = \"200ms\"\ncommit_interval = \"10ms\"\n",
    );
    let settings = Settings::from_toml(&config).expect("config");
    let events = generated(40_000, 4_000);
    let a = Running::start(&config);
    // In slices, so the fold runs while commits are handed over.
    for chunk in events.chunks(2_000) {
        leadflow::kafka::produce_events(&settings.service, chunk).expect("produce");
    }
    let (expected, actual) = broker.converge(&settings, events.len(), Duration::from_secs(180));
    let m = &a.stats.metrics;
    let commits = m.transaction_commit_seconds.get_sample_count();
    let waited = m.transaction_commit_wait_seconds.get_sample_count();
    let handed_over = m.transaction_handover_seconds.get_sample_count();
    let overlapped = a
        .stats
        .state
        .outputs_during_commit
        .load(std::sync::atomic::Ordering::Relaxed);
    a.stop().expect("a stops cleanly");
    assert!(overlapped > 0, "no output was produced while a commit ran");
    assert!(
        handed_over > 0 && handed_over <= commits + 1,
        "{handed_over} hand-overs for {commits} commits"
    );
    assert!(total(&expected) > 5_000, "a meaningful amount of output");
    assert_same(&expected, &actual);
    assert!(
        commits >= 50,
        "{commits} commits: too few to overlap the fold"
    );
    assert!(
        waited * 2 < commits,
        "the state thread waited for {waited} of {commits} commits"
    );
}

#[test]
fn a_rebalance_mid_stream_loses_and_duplicates_nothing() {
    let broker = TestBroker::start("rebalance", 4);
    let snaps = tempfile::tempdir().expect("tempdir");
    let config = broker.config(snaps.path(), "[run]\ntick_interval = \"200ms\"\n");
    let settings = Settings::from_toml(&config).expect("config");
    let events = generated(40_000, 5_000);
    leadflow::kafka::produce_events(&settings.service, &events).expect("produce");
    let a = Running::start(&config);
    let outputs = || broker.count(&broker.topics.transitions) + broker.count(&broker.topics.sla);
    wait_until(Duration::from_secs(60), "first outputs", || outputs() > 500);
    // A second instance joins mid-stream (partitions move from a to b)...
    let b = Running::start(&config);
    let at_join = outputs();
    wait_until(Duration::from_secs(60), "progress after the join", || {
        outputs() > at_join + 500
    });
    // ...then the first leaves mid-stream (its partitions move to b).
    a.stop().expect("a leaves cleanly");
    let (expected, actual) = broker.converge(&settings, events.len(), Duration::from_secs(180));
    b.stop().expect("b stops cleanly");
    assert!(
        total(&expected) > at_join as usize,
        "output continued after the rebalances"
    );
    assert_same(&expected, &actual);
}

#[test]
fn startup_checks_name_the_problem() {
    let snaps = tempfile::tempdir().expect("tempdir");
    let example =
        std::fs::read_to_string(common::examples_dir().join("config.toml")).expect("config");

    // Nothing listens on port 1 of loopback.
    let cfg = format!("{example}\n[kafka]\nbrokers = \"127.0.0.1:1\"\nconnect_timeout = \"2s\"\n");
    let settings = Settings::from_toml(&cfg).expect("config");
    let err = leadflow::kafka::admin::check(&settings.service, &settings.rules.limits)
        .expect_err("unreachable");
    assert!(
        err.to_string()
            .contains("cannot reach the Kafka brokers at 127.0.0.1:1"),
        "{err}"
    );

    let broker = TestBroker::start("checks", 3);
    let missing = broker.config(snaps.path(), "").replace(
        &format!("dlq = \"{}\"", broker.topics.dlq),
        "dlq = \"no.such.topic\"",
    );
    let settings = Settings::from_toml(&missing).expect("config");
    let err = leadflow::kafka::admin::check(&settings.service, &settings.rules.limits)
        .expect_err("missing topic");
    assert!(
        err.to_string()
            .contains("missing Kafka topics: no.such.topic"),
        "{err}"
    );
    // The hint names the configured topics, not the defaults.
    let t = &broker.topics;
    assert!(
        err.to_string().contains(&format!(
            "{} and {} need as many partitions as {}",
            t.transitions, t.sla, t.internal
        )),
        "{err}"
    );

    let narrow = format!("{}.narrow", broker.prefix);
    create_topic(&broker, &narrow, 2);
    let mismatched = broker.config(snaps.path(), "").replace(
        &format!("sla = \"{}\"", broker.topics.sla),
        &format!("sla = \"{narrow}\""),
    );
    let settings = Settings::from_toml(&mismatched).expect("config");
    let err = leadflow::kafka::admin::check(&settings.service, &settings.rules.limits)
        .expect_err("partition mismatch");
    assert!(
        err.to_string()
            .contains("has 2 partitions but the internal topic"),
        "{err}"
    );
    let ok = Settings::from_toml(&broker.config(snaps.path(), "")).expect("config");
    let layout = leadflow::kafka::admin::check(&ok.service, &ok.rules.limits)
        .expect("a correct layout passes");
    assert_eq!(layout.internal_partitions, 3);
}

fn create_topic(broker: &TestBroker, name: &str, partitions: i32) {
    broker.create_topic(name, partitions);
}

#[test]
fn confluent_avro_inputs_and_json_outputs() {
    let broker = TestBroker::start("formats", 2);
    let snaps = tempfile::tempdir().expect("tempdir");
    let config = broker.config(
        snaps.path(),
        "[formats]\nweb = \"avro-confluent\"\nemail = \"avro-confluent\"\ncrm = \"avro-confluent\"\noutput = \"json\"\n[run]\ntick_interval = \"200ms\"\n",
    );
    let settings = Settings::from_toml(&config).expect("config");
    let events = generated(3_000, 400);
    let running = Running::start(&config);
    leadflow::kafka::produce_events(&settings.service, &events).expect("produce");
    // A plain (unframed) datum on a Confluent topic is refused by its magic byte.
    let plain = avro::encode_input(&events[0], avro::Framing::Plain, 0).expect("encode");
    send(&broker.producer(), &broker.topics.web, None, &plain);
    wait_until(
        Duration::from_secs(30),
        "the unframed datum in the DLQ",
        || broker.count(&broker.topics.dlq) == 1,
    );
    let internal_done = || broker.count(&broker.topics.internal) >= events.len() as i64;
    wait_until(
        Duration::from_secs(60),
        "all events forwarded",
        internal_done,
    );
    // Outputs are JSON here; compare them with the replay of the log, as JSON.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let before = broker.count(&broker.topics.internal);
        let internal = broker.read_all(&broker.topics.internal);
        let expected = common::kafka::replay_log(&settings, &internal);
        let mut want: Vec<(i32, String, Value)> = Vec::new();
        for (p, (t, s)) in &expected {
            want.extend(t.iter().map(|r| (*p, "t".to_string(), to_json(r))));
            want.extend(s.iter().map(|r| (*p, "s".to_string(), to_json(r))));
        }
        let mut got: Vec<(i32, String, Value)> = Vec::new();
        for (topic, tag) in [(&broker.topics.transitions, "t"), (&broker.topics.sla, "s")] {
            for r in broker.read_all(topic) {
                let v: Value = serde_json::from_slice(&r.value).expect("JSON output record");
                got.push((r.partition, tag.to_string(), v));
            }
        }
        want.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        got.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let stable = broker.count(&broker.topics.internal) == before;
        if stable && got.len() == want.len() {
            assert!(want.len() > 100);
            assert_eq!(
                got, want,
                "JSON outputs equal the replay, per partition and topic, in order"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no convergence: {} of {}",
            got.len(),
            want.len()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let dlq = broker.read_all(&broker.topics.dlq);
    assert_eq!(dlq[0].headers["lf-error-code"], "undecodable");
    assert!(
        dlq[0].headers["lf-error"].contains("magic byte"),
        "{:?}",
        dlq[0].headers
    );
    running.stop().expect("clean stop");
}

#[test]
fn producer_errors_are_retried_or_surfaced_never_dropped() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let broker = TestBroker::start("producer-errors", 2);
    let Some(mock) = broker.mock() else {
        eprintln!("skipped: injecting produce errors needs the mock cluster");
        return;
    };
    let snaps = tempfile::tempdir().expect("tempdir");
    let config = broker.config(
        snaps.path(),
        "[run]\ntick_interval = \"200ms\"\ndrain_timeout = \"5s\"\n",
    );
    let settings = Settings::from_toml(&config).expect("config");
    let events = generated(4_000, 500);
    leadflow::kafka::produce_events(&settings.service, &events).expect("produce");

    // Retriable errors: the idempotent producers retry; nothing is lost or repeated.
    mock.cluster().request_errors(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__TRANSPORT,
        ],
    );
    let running = Running::start(&config);
    let half = events.len() / 2;
    let (expected, actual) = broker.converge(&settings, events.len(), Duration::from_secs(120));
    running.stop().expect("clean stop after retried errors");
    assert!(total(&expected) > 100);
    assert_same(&expected, &actual);

    // A permanent error is surfaced: the service stops with an error instead of going on.
    let more = gen::generate(&GenSpec {
        seed: 99,
        leads: 300,
        events: half as u64,
        start_ms: 1_787_000_000_000,
        span_ms: 86_400_000,
    });
    leadflow::kafka::produce_events(&settings.service, &more).expect("produce more");
    mock.cluster().request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 64],
    );
    let failing = Running::start(&config);
    wait_until(
        Duration::from_secs(60),
        "the service to stop on its own",
        || failing.finished(),
    );
    let err = failing
        .stop()
        .expect_err("a permanent produce error fails the service");
    // Named whether it surfaces on send or on the acknowledgement wait.
    let text = format!("{err:#}");
    assert!(
        text.contains("TopicAuthorization") || text.contains("could not be delivered"),
        "{text}"
    );

    // Once the cause is gone, a restart delivers everything exactly once.
    mock.cluster().clear_request_errors(RDKafkaApiKey::Produce);
    let running = Running::start(&config);
    let (expected, actual) = broker.converge(
        &settings,
        events.len() + more.len(),
        Duration::from_secs(120),
    );
    running.stop().expect("clean stop");
    assert_same(&expected, &actual);
}

/// The endpoints of the service that just processed the conformance example.
fn check_http(addr: &str, transactional: bool) {
    wait_until(Duration::from_secs(20), "ready", || {
        get(addr, "/health/ready").0 == 200
    });
    assert_eq!(get(addr, "/health/live").0, 200);

    // Why is di an MQL again? As of the re-qualifying event, the numbers of expected.jsonl.
    let (code, body) = get(addr, "/leads/di%40deltafreight.com?as_of=1801065600000");
    assert_eq!(code, 200, "{body}");
    let x: Value = serde_json::from_str(&body).expect("JSON explanation");
    assert_eq!(x["stage"], "mql");
    assert_eq!(x["engagement"], 123.4488);
    assert_eq!(x["fit"], 75.0);
    let rules: Vec<&str> = x["engagement_rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| r["rule"].as_str().expect("name"))
        .collect();
    assert_eq!(rules, ["whitepaper", "webinar"]);
    assert_eq!(x["open_sla_clocks"][0]["deadline"], 1_801_080_000_000_i64);
    assert_eq!(x["recent_transitions"].as_array().map(Vec::len), Some(3));
    let (code, body) = get(addr, "/leads/nobody@nowhere.example");
    assert_eq!(code, 404);
    let miss: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(miss["partition"], 0);
    assert_eq!(miss["assigned_partitions"], serde_json::json!([0]));

    let (code, text) = get(addr, "/metrics");
    assert_eq!(code, 200);
    let value = |name: &str| -> f64 {
        series(&text, name).unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    // From the example's 43 valid events, 6 invalid lines and 23 records (counted in
    // ../shared/examples-v2: input.jsonl and expected.jsonl).
    let expected: [(&str, f64); 17] = [
        (
            r#"leadflow_events_total{source="crm",type="lead_upsert"}"#,
            5.0,
        ),
        (
            r#"leadflow_events_total{source="web",type="webinar_attended"}"#,
            9.0,
        ),
        (
            r#"leadflow_invalid_events_total{reason="unknown_crm_type"}"#,
            1.0,
        ),
        (r#"leadflow_transitions_total{from="new",to="mql"}"#, 4.0),
        (
            r#"leadflow_transitions_total{from="recycled",to="mql"}"#,
            1.0,
        ),
        (
            r#"leadflow_sla_records_total{kind="breach",policy="mql_follow_up"}"#,
            3.0,
        ),
        (
            r#"leadflow_lead_response_seconds_count{policy="mql_follow_up"}"#,
            3.0,
        ),
        (
            r#"leadflow_lead_response_seconds_bucket{policy="mql_follow_up",le="14400"}"#,
            1.0,
        ),
        // Business time: ana 1 h 15, bo 5 h 30, di 4 h 20 of open hours (clock time: 1 h 15,
        // 69 h 30, 20 h 20), so all three are within 8 business hours.
        (
            r#"leadflow_lead_response_business_seconds_count{policy="mql_follow_up"}"#,
            3.0,
        ),
        (
            r#"leadflow_lead_response_business_seconds_bucket{policy="mql_follow_up",le="28800"}"#,
            3.0,
        ),
        (
            r#"leadflow_lead_response_seconds_bucket{policy="mql_follow_up",le="28800"}"#,
            1.0,
        ),
        (r#"leadflow_leads{stage="won"}"#, 1.0),
        (r#"leadflow_leads{stage="mql"}"#, 2.0),
        ("leadflow_leads_in_memory", 5.0),
        ("leadflow_open_sla_clocks", 3.0),
        ("leadflow_ready", 1.0),
        ("leadflow_producer_errors_total", 0.0),
    ];
    for (name, want) in expected {
        assert_eq!(value(name), want, "{name}");
    }
    assert!(value("leadflow_event_time_lag_seconds_count") >= 41.0);
    // Outputs are transactional on a real broker: every output was committed in one.
    assert_eq!(
        value("leadflow_output_transactions"),
        f64::from(u8::from(transactional))
    );
    assert_eq!(value("leadflow_transactions_aborted_total"), 0.0);
    if transactional {
        assert!(value("leadflow_transaction_commit_seconds_count") >= 1.0);
        // Exposed; the overlap itself: overlapping_commits_keep_every_output_in_order.
        series(&text, "leadflow_transaction_commit_wait_seconds_count")
            .expect("the commit wait histogram");
    }
    assert!(!text.contains("@"), "no lead key in any label");
    promtool_check_metrics(&text);
}

/// `promtool check metrics` (Debian package `prometheus`); required in CI.
fn promtool_check_metrics(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("promtool not run ({e}): install the Debian package `prometheus`");
            return;
        }
        Err(e) => panic!("promtool is required in CI: {e}"),
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
