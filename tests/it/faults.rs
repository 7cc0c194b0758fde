//! Pipeline faults from public failure reports (issue 12), each through Kafka: the mock by
//! default, Apache Kafka with LEADFLOW_TEST_BROKERS (the clock-skew case needs it).
//! - a null value is a dead letter `null_value` that keeps the null;
//! - a key that disagrees with the payload's `lead_key` is counted, or dead-lettered;
//! - a slow schema registry neither livelocks ingest nor repeats a dead letter;
//! - lag stays visible while another member holds every partition;
//! - a full snapshot disk is logged, makes the instance not ready, is retried, and shutdown
//!   does not hang;
//! - a host clock ahead of the broker's does not fire SLA timers early.

use crate::common;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::child::{self, http_address, spawn_under};
use common::http::{get, series};
use common::kafka::{send, send_null, wait_until, Running, TestBroker};
use leadflow::codec::avro::{decode_output, encode_input, Framing, WEB_SCHEMA};
use leadflow::config::Settings;
use leadflow::model::records::Output;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

const JSON_WEB: &str = "[formats]\nweb = \"json\"\n[run]\ntick_interval = \"0s\"\n";

fn valid(id: &str, lead: &str) -> String {
    format!(
        r#"{{"event_id":"{id}","lead_key":"{lead}","occurred_at":1785542400000,"source":"web","type":"page_view"}}"#
    )
}

#[test]
fn a_null_value_is_dead_lettered_as_null_value_and_stays_null() {
    let broker = TestBroker::start("null-value", 1);
    let snaps = tempfile::tempdir().expect("tempdir");
    let running = Running::start(&broker.config(snaps.path(), JSON_WEB));
    let producer = broker.producer();
    send_null(&producer, &broker.topics.web, b"ana@acme.io");
    send(
        &producer,
        &broker.topics.web,
        Some(b"ana@acme.io"),
        valid("e1", "ana@acme.io").as_bytes(),
    );
    wait_until(Duration::from_secs(60), "the event behind it", || {
        broker.records(&broker.topics.internal) == 1
    });
    let dlq = broker.read_all(&broker.topics.dlq);
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].headers["lf-error-code"], "null_value");
    assert!(dlq[0].value_null, "the dead letter keeps the null value");
    assert_eq!(dlq[0].key.as_deref(), Some(b"ana@acme.io".as_slice()));
    let invalid = &running.stats.metrics.invalid;
    assert_eq!(invalid.with_label_values(&["null_value"]).get(), 1);
    running.stop().expect("clean stop");
}

#[test]
fn a_key_that_disagrees_with_the_lead_key_is_counted_or_dead_lettered() {
    for (mode, dead_letter) in [("count", false), ("dead_letter", true)] {
        let broker = TestBroker::start("key-mismatch", 1);
        let snaps = tempfile::tempdir().expect("tempdir");
        let config = broker.config(
            snaps.path(),
            &format!("{JSON_WEB}[ingest]\nkey_mismatch = \"{mode}\"\n"),
        );
        let running = Running::start(&config);
        let producer = broker.producer();
        send(
            &producer,
            &broker.topics.web,
            Some(b"someone-else@acme.io"),
            valid("e1", "ana@acme.io").as_bytes(),
        );
        // No key at all is not a disagreement.
        send(
            &producer,
            &broker.topics.web,
            None,
            valid("e2", "bo@beta.io").as_bytes(),
        );
        send(
            &producer,
            &broker.topics.web,
            Some(b"cy@gamma.io"),
            valid("e3", "cy@gamma.io").as_bytes(),
        );
        let forwarded = if dead_letter { 2 } else { 3 };
        wait_until(Duration::from_secs(60), "the events forwarded", || {
            broker.records(&broker.topics.internal) == forwarded
                && broker.records(&broker.topics.dlq) == usize::from(dead_letter)
        });
        assert_eq!(running.stats.metrics.key_mismatch.get(), 1, "{mode}");
        if dead_letter {
            let dlq = broker.read_all(&broker.topics.dlq);
            assert_eq!(dlq[0].headers["lf-error-code"], "key_mismatch");
            assert!(
                dlq[0].headers["lf-error"].contains("someone-else@acme.io"),
                "{:?}",
                dlq[0].headers
            );
        } else {
            // Partitioned by the payload's lead key, whatever the message key says.
            let internal = broker.read_all(&broker.topics.internal);
            assert_eq!(internal[0].key.as_deref(), Some(b"ana@acme.io".as_slice()));
        }
        running.stop().expect("clean stop");
    }
}

/// A schema registry on loopback: serves leadflow's web schema as id 1 and 404 for any other
/// id; the first `slow` requests for id 1 answer only after 3 s. Counts requests by id.
struct Registry {
    url: String,
    requests: Arc<Mutex<HashMap<String, usize>>>,
}

fn registry(slow: usize) -> Registry {
    let server = tiny_http::Server::http("127.0.0.1:0").expect("registry listens");
    let addr = server.server_addr().to_ip().expect("ip");
    let requests: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let slow_left = Arc::new(AtomicUsize::new(slow));
    let counts = Arc::clone(&requests);
    std::thread::spawn(move || {
        for req in server.incoming_requests() {
            let id = req
                .url()
                .strip_prefix("/schemas/ids/")
                .unwrap_or("")
                .to_string();
            *counts
                .lock()
                .expect("counts")
                .entry(id.clone())
                .or_default() += 1;
            let slow_left = Arc::clone(&slow_left);
            // One thread per request: a slow answer must not queue the next request.
            std::thread::spawn(move || {
                if id == "1" {
                    let slow = slow_left
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    if slow {
                        std::thread::sleep(Duration::from_secs(3));
                    }
                    let body = serde_json::json!({ "schema": WEB_SCHEMA }).to_string();
                    let _ = req.respond(tiny_http::Response::from_string(body));
                } else {
                    let _ = req.respond(
                        tiny_http::Response::from_string(
                            r#"{"error_code":40403,"message":"Schema not found"}"#,
                        )
                        .with_status_code(404),
                    );
                }
            });
        }
    });
    Registry {
        url: format!("http://{addr}"),
        requests,
    }
}

fn confluent(id: &str, lead: &str, schema_id: u32) -> Vec<u8> {
    let ev = common::ev(id, lead, 1_785_542_400_000, "web", "page_view", &[]);
    encode_input(&ev, Framing::Confluent, schema_id).expect("encode")
}

/// Before: a registry slower than `max.poll.interval.ms` made ingest leave the group on every
/// message, re-read, dead-letter the same message four times and forward one five times; an
/// unreachable registry failed the stage. Now the settings are checked together at startup
/// (tests/it/config_errors.rs), and a lookup that times out pauses its partition (still polling,
/// still in the group) and retries with backoff.
#[test]
fn a_slow_schema_registry_neither_livelocks_ingest_nor_repeats_a_dead_letter() {
    let broker = TestBroker::start("slow-registry", 1);
    let snaps = tempfile::tempdir().expect("tempdir");
    let reg = registry(2);
    let config = broker
        .config(
            snaps.path(),
            &format!(
                "[formats]\nweb = \"avro-confluent\"\n[schema_registry]\nurl = \"{}\"\ntimeout = \"1s\"\n\
                 [run]\ntick_interval = \"0s\"\ndrain_timeout = \"4s\"\n",
                reg.url
            ),
        )
        .replace(
            "[kafka.properties]",
            "[kafka.properties]\n\"max.poll.interval.ms\" = \"6000\"",
        );
    let running = Running::start(&config);
    let producer = broker.producer();
    for i in 0..3 {
        let lead = format!("lead{i}@acme.io");
        let value = confluent(&format!("e{i}"), &lead, 1);
        send(&producer, &broker.topics.web, Some(lead.as_bytes()), &value);
    }
    // Twenty messages with an id the registry does not know: one request, twenty dead letters.
    for i in 0..20 {
        let lead = format!("unknown{i}@acme.io");
        let value = confluent(&format!("u{i}"), &lead, 99);
        send(&producer, &broker.topics.web, Some(lead.as_bytes()), &value);
    }
    let value = confluent("e-last", "last@acme.io", 1);
    send(&producer, &broker.topics.web, Some(b"last@acme.io"), &value);

    let mut saw_held = false;
    wait_until(
        Duration::from_secs(90),
        "everything forwarded or dead-lettered",
        || {
            let health = &running.stats.view.health;
            if health.has("schema_registry") {
                saw_held = true;
                assert!(!running.stats.view.ready(), "not ready while ingest waits");
            }
            broker.records(&broker.topics.internal) >= 4 && broker.records(&broker.topics.dlq) >= 20
        },
    );
    // Settled: the group's committed offsets reach the log end, so nothing will be re-read.
    let m = &running.stats.metrics;
    wait_until(
        Duration::from_secs(60),
        "ingest lag 0 from the group",
        || {
            m.group_lag_known.with_label_values(&["ingest"]).get() == 1
                && m.group_lag.with_label_values(&["ingest"]).get() == 0
        },
    );
    assert!(!running.finished(), "ingest did not fail");
    assert!(
        saw_held,
        "the instance reported the registry while it waited"
    );
    assert!(
        m.schema_registry_failures.get() >= 1,
        "{}",
        m.schema_registry_failures.get()
    );
    assert_eq!(
        broker.records(&broker.topics.internal),
        4,
        "each event forwarded once"
    );
    let dlq = broker.read_all(&broker.topics.dlq);
    let offsets: BTreeSet<&str> = dlq
        .iter()
        .map(|r| r.headers["lf-source-offset"].as_str())
        .collect();
    assert_eq!(
        (dlq.len(), offsets.len()),
        (20, 20),
        "one dead letter per source offset"
    );
    assert!(dlq
        .iter()
        .all(|r| r.headers["lf-error-code"] == "unknown_schema"));
    let requests = reg.requests.lock().expect("counts").clone();
    assert_eq!(
        requests.get("99"),
        Some(&1),
        "the unknown id is asked once and remembered: {requests:?}"
    );
    assert!(
        running.stats.view.health.problems().is_empty(),
        "{:?}",
        running.stats.view.health.problems()
    );
    running.stop().expect("clean stop");
}

/// Before: lag came from librdkafka's statistics of the partitions this instance owns, so it
/// read 0 while another member held them all (a stuck rebalance, a livelock) and the lag alert
/// could not fire. Now it comes from the group's committed offsets and the log ends.
#[test]
fn lag_is_visible_while_another_member_holds_every_partition() {
    let broker = TestBroker::start("lag-owner", 1);
    let snaps = tempfile::tempdir().expect("tempdir");
    let config = broker.config(snaps.path(), JSON_WEB);
    let settings = Settings::from_toml(&config).expect("config");
    // A member that joins first and sorts first ("aaa" < "leadflow"): the range assignor gives
    // it the only partition of each source topic. It polls (stays in the group), never commits.
    let assignments = Arc::new(AtomicUsize::new(0));
    let owned = Arc::new(AtomicUsize::new(0));
    let squatter: BaseConsumer<CountAssignments> = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("group.id", &settings.service.ingest_group)
        .set("client.id", "aaa-squatter")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("partition.assignment.strategy", "range")
        .create_with_context(CountAssignments {
            assignments: Arc::clone(&assignments),
            owned: Arc::clone(&owned),
        })
        .expect("squatter");
    let t = &broker.topics;
    squatter
        .subscribe(&[&t.web, &t.email, &t.crm])
        .expect("subscribe");
    let stop = Arc::new(AtomicBool::new(false));
    let handle = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = squatter.poll(Duration::from_millis(100));
            }
            squatter.unsubscribe();
        })
    };
    wait_until(
        Duration::from_secs(60),
        "the squatter owns the sources",
        || owned.load(Ordering::SeqCst) == 3,
    );
    // leadflow's ingest consumer joins (the squatter is assigned again in the rebalance that
    // causes) and the squatter keeps all three partitions. On Apache Kafka member ids start
    // with the client id, so "aaa-squatter" sorts first and wins the range assignment; the
    // mock names members by address, so there either may win: start again until it is the
    // squatter (each try is a coin flip; 12 tries fail once in 4096 runs).
    let mut tries = 0;
    let running = loop {
        tries += 1;
        let first = assignments.load(Ordering::SeqCst);
        let running = Running::start(&config);
        wait_until(Duration::from_secs(60), "leadflow joined the group", || {
            running.stats.view.ready() && assignments.load(Ordering::SeqCst) > first
        });
        if owned.load(Ordering::SeqCst) == 3 {
            break running;
        }
        assert!(
            broker.mock().is_some(),
            "on Apache Kafka the squatter sorts first"
        );
        assert!(tries < 12, "leadflow won the assignment {tries} times");
        let before = assignments.load(Ordering::SeqCst);
        running.stop().expect("clean stop");
        wait_until(
            Duration::from_secs(60),
            "the squatter owns them again",
            || assignments.load(Ordering::SeqCst) > before && owned.load(Ordering::SeqCst) == 3,
        );
    };
    let m = &running.stats.metrics;
    let producer = broker.producer();
    for i in 0..5 {
        let lead = format!("lead{i}@acme.io");
        send(
            &producer,
            &t.web,
            Some(lead.as_bytes()),
            valid(&format!("e{i}"), &lead).as_bytes(),
        );
    }
    wait_until(Duration::from_secs(60), "the group's lag: 5", || {
        m.group_lag_known.with_label_values(&["ingest"]).get() == 1
            && m.group_lag.with_label_values(&["ingest"]).get() == 5
    });
    assert_eq!(
        owned.load(Ordering::SeqCst),
        3,
        "the squatter still owns them"
    );
    assert_eq!(
        m.assigned_partitions.with_label_values(&["ingest"]).get(),
        0,
        "this instance owns no source partition"
    );
    assert_eq!(
        m.consumer_lag.with_label_values(&["ingest"]).get(),
        0,
        "what the per-instance lag shows: nothing"
    );
    assert_eq!(broker.records(&t.internal), 0);
    // The squatter leaves: leadflow takes the partitions and the lag drains.
    stop.store(true, Ordering::Relaxed);
    handle.join().expect("squatter");
    wait_until(Duration::from_secs(90), "lag drained", || {
        broker.records(&t.internal) == 5 && m.group_lag.with_label_values(&["ingest"]).get() == 0
    });
    running.stop().expect("clean stop");
}

/// Counts the partition assignments a consumer receives (each rebalance ends with one) and
/// keeps how many partitions it owns, both set inside the rebalance callback.
struct CountAssignments {
    assignments: Arc<AtomicUsize>,
    owned: Arc<AtomicUsize>,
}

impl rdkafka::ClientContext for CountAssignments {}

impl rdkafka::consumer::ConsumerContext for CountAssignments {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &rdkafka::consumer::Rebalance<'_>) {
        match rebalance {
            rdkafka::consumer::Rebalance::Assign(tpl) => {
                self.owned.store(tpl.count(), Ordering::SeqCst);
                self.assignments.fetch_add(1, Ordering::SeqCst);
            }
            _ => self.owned.store(0, Ordering::SeqCst),
        }
    }
}

/// Whether this process may run `unshare -rm` (a private mount namespace with a tmpfs).
fn can_unshare() -> bool {
    Command::new("unshare")
        .args(["-rm", "true"])
        .status()
        .is_ok_and(|s| s.success())
}

fn wait_http(log: &Path, guard: &child::Guard) -> String {
    let mut addr = None;
    wait_until(
        Duration::from_secs(30),
        "the HTTP address in the log",
        || {
            addr = http_address(log);
            addr.is_some() || panic_if_exited(guard, log)
        },
    );
    addr.unwrap_or_default()
}

fn panic_if_exited(guard: &child::Guard, log: &Path) -> bool {
    let pid = guard.0.id();
    if !Path::new(&format!("/proc/{pid}")).exists() {
        panic!("leadflow exited:\n{}", child::tail(log));
    }
    false
}

/// Before: with the snapshot folder on a full disk, the state stage stopped folding, ENOSPC
/// was never logged (only "not snapshotting after a failure"), `/health/ready` stayed 200, and
/// shutdown waited for the drain timeout. Now a failed snapshot is logged with its cause,
/// counted, makes the instance not ready and is retried with backoff while processing goes on;
/// no temporary file is left; shutdown is prompt.
#[test]
fn a_full_snapshot_disk_is_reported_retried_and_does_not_stop_processing() {
    if !can_unshare() {
        eprintln!("skipped: `unshare -rm` is not allowed here (needs user namespaces)");
        return;
    }
    let broker = TestBroker::start("enospc", 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let snaps = dir.path().join("snapshots");
    std::fs::create_dir(&snaps).expect("snapshot dir");
    // Every demo request qualifies (fast track, no fit floor).
    let config = broker.config(
        &snaps,
        "[http]\nlisten = \"127.0.0.1:0\"\n[formats]\nweb = \"json\"\n[run]\ntick_interval = \"0s\"\ndrain_timeout = \"10s\"\n",
    ).replace("mql_min_fit = 20", "mql_min_fit = 0");
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, &config).expect("config");
    let log = dir.path().join("leadflow.log");
    // A 64 KB tmpfs over the snapshot folder, in a mount namespace of leadflow's own.
    let mount = format!(
        "mount -t tmpfs -o size=64k tmpfs {} && exec \"$0\" \"$@\"",
        snaps.display()
    );
    let guard = spawn_under(&["unshare", "-rm", "sh", "-c", &mount], &[], &cfg, &log);
    let pid = guard.0.id();
    let addr = wait_http(&log, &guard);

    // 3,000 leads that reach MQL (demo requests): a snapshot far over 64 KB.
    let settings = Settings::from_toml(&config).expect("config");
    let now = leadflow::metrics::now_ms();
    let lead = |i: usize| format!("lead{i}@acme.io");
    let events: Vec<_> = (0..3000)
        .map(|i| {
            common::ev(
                &format!("e{i}"),
                &lead(i),
                now,
                "web",
                "demo_request",
                &[("title", "VP Sales")],
            )
        })
        .collect();
    leadflow::kafka::produce_events(&settings.service, &events).expect("produce");
    let metrics = |addr: &str| get(addr, "/metrics").1;
    wait_until(Duration::from_secs(90), "a failed snapshot, logged", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("No space left on device")
            && series(&metrics(&addr), "leadflow_snapshot_failures_total").unwrap_or(0.0) >= 1.0
    });
    let (code, body) = get(&addr, "/health/ready");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("snapshots:"), "{body}");
    assert!(body.contains("No space left on device"), "{body}");

    // Processing goes on: one more lead reaches MQL and its transition is written.
    let more = [common::ev(
        "e-more",
        "more@acme.io",
        now,
        "web",
        "demo_request",
        &[("title", "Director")],
    )];
    leadflow::kafka::produce_events(&settings.service, &more).expect("produce");
    wait_until(Duration::from_secs(60), "the next transition", || {
        broker.records(&broker.topics.transitions) == 3001
    });

    // No half-written file is left where the snapshots go (seen through leadflow's mounts).
    // A retry stages its file for the moment of its write and removes it when the write fails,
    // so one look can catch a file in flight: wait until none is there. A file left behind
    // stays, and every retry leaving its own keeps the folder from ever being clean.
    let inside = format!(
        "/proc/{pid}/root{}/{}-0",
        snaps.display(),
        broker.topics.internal
    );
    let leftovers = |dir: &str| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    // Staged writes are `NAME#N` until renamed into place.
                    .filter(|n| n.contains('#') || n.ends_with(".tmp"))
                    .collect()
            })
            .unwrap_or_default()
    };
    wait_until(
        Duration::from_secs(30),
        "no staged snapshot file left",
        || leftovers(&inside).is_empty(),
    );

    // Space again: the retry succeeds, the instance is ready again.
    let remount = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-U", "-m", "--preserve-credentials"])
        .args(["mount", "-o", "remount,size=64m"])
        .arg(&snaps)
        .status()
        .expect("nsenter");
    assert!(remount.success(), "remount the tmpfs larger");
    wait_until(Duration::from_secs(60), "a snapshot written again", || {
        get(&addr, "/health/ready").0 == 200
            && std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("snapshots are written again")
    });
    assert!(
        std::fs::read_dir(&inside)
            .map(|rd| rd
                .filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().ends_with(".lfsn")))
            .unwrap_or(false),
        "a snapshot in {inside}"
    );

    // A prompt, clean shutdown.
    guard.signal("TERM");
    let started = Instant::now();
    let mut guard = guard;
    let status = loop {
        if let Some(s) = guard.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "shutdown hangs:\n{}",
            child::tail(&log)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}\n{}", child::tail(&log));
}

/// Builds tests/faults/clock_ahead.c: an LD_PRELOAD library that sets the wall clock Rust
/// reads ahead (libfaketime shifts librdkafka's condition-variable deadlines too, and hangs).
fn clock_ahead_shim(dir: &Path) -> std::path::PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/faults/clock_ahead.c");
    let out = dir.join("libclockahead.so");
    let ok = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .arg("-ldl")
        .status()
        .expect("run cc (a C compiler; .ci/run installs gcc)")
        .success();
    assert!(ok, "building {}", src.display());
    out
}

/// Runs leadflow with its clock 30 minutes ahead on a broker whose internal topic
/// uses `timestamp_type`, with an SLA of 20 minutes (warning 10 minutes before). Lead `old`
/// qualified 25 minutes ago (breach due 5 minutes ago by any clock), lead `new` 6 minutes ago
/// (warning due in 4 minutes by the broker's clock, due now by a clock 30 minutes fast).
/// Returns the SLA records (lead, kind) once `old`'s breach is out, and the metrics.
fn sla_with_a_fast_clock(
    brokers: &str,
    timestamp_type: &str,
) -> (BTreeSet<(String, String)>, String) {
    let broker = TestBroker::on(brokers, "skew", 1);
    broker
        .set_topic_config(
            &broker.topics.internal,
            &[("message.timestamp.type", timestamp_type)],
        )
        .expect("topic config");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = broker.config(
        &dir.path().join("snapshots"),
        "[http]\nlisten = \"127.0.0.1:0\"\n[formats]\nweb = \"json\"\n\n\
         [[sla]]\nname = \"speed\"\nstage = \"mql\"\nwithin = \"20m\"\nwarn_before = \"10m\"\nuntil = \"stage_exit\"\n",
    ).replace("mql_min_fit = 20", "mql_min_fit = 0");
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, &config).expect("config");
    let log = dir.path().join("leadflow.log");
    let shim = clock_ahead_shim(dir.path());
    let guard = spawn_under(
        &[],
        &[
            ("LD_PRELOAD", shim.to_str().expect("utf-8")),
            ("LEADFLOW_TEST_CLOCK_AHEAD_SECONDS", "1800"),
        ],
        &cfg,
        &log,
    );
    let addr = wait_http(&log, &guard);
    let settings = Settings::from_toml(&config).expect("config");
    let now = leadflow::metrics::now_ms();
    let min = 60_000;
    let events = [
        common::ev(
            "e-old",
            "old@acme.io",
            now - 25 * min,
            "web",
            "demo_request",
            &[("title", "VP Sales")],
        ),
        common::ev(
            "e-new",
            "new@acme.io",
            now - 6 * min,
            "web",
            "demo_request",
            &[("title", "VP Sales")],
        ),
    ];
    leadflow::kafka::produce_events(&settings.service, &events).expect("produce");
    let sla = || -> BTreeSet<(String, String)> {
        broker
            .read_all(&broker.topics.sla)
            .iter()
            .filter_map(
                |r| match decode_output(false, &r.value).expect("sla record") {
                    Output::Sla(s) => Some((
                        s.lead_key.to_string(),
                        format!("{}:{}", s.policy, s.kind.as_str()),
                    )),
                    Output::Transition(_) => None,
                },
            )
            .filter(|(_, k)| k.starts_with("speed:"))
            .collect()
    };
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen.contains(&("old@acme.io".to_string(), "speed:breach".to_string())) {
        panic_if_exited(&guard, &log);
        assert!(
            Instant::now() < deadline,
            "no breach for old@acme.io within 60 s: {seen:?}\n{}\n{}",
            get(&addr, "/metrics")
                .1
                .lines()
                .filter(|l| l.contains("tick")
                    || l.contains("skew")
                    || l.contains("transitions_total"))
                .collect::<Vec<_>>()
                .join("\n"),
            child::tail(&log)
        );
        std::thread::sleep(Duration::from_millis(100));
        seen = sla();
    }
    let text = get(&addr, "/metrics").1;
    drop(guard);
    (seen, text)
}

/// Before: ticks carried the host's time, so a host clock 30 minutes fast fired 30 minutes of
/// warnings and breaches early. With broker timestamps on the internal topic (LogAppendTime)
/// leadflow measures the skew from its own ticks and keeps ticks at the broker's time.
#[test]
fn a_host_clock_ahead_of_the_broker_does_not_fire_sla_timers_early() {
    let Some(brokers) = std::env::var("LEADFLOW_TEST_BROKERS")
        .ok()
        .filter(|b| !b.trim().is_empty())
    else {
        eprintln!(
            "skipped: needs Apache Kafka (LEADFLOW_TEST_BROKERS): the mock has no LogAppendTime"
        );
        return;
    };
    let (seen, metrics) = sla_with_a_fast_clock(&brokers, "LogAppendTime");
    assert!(
        !seen.iter().any(|(lead, _)| lead == "new@acme.io"),
        "nothing is due for new@acme.io by the broker's clock: {seen:?}"
    );
    assert!(seen.contains(&("old@acme.io".into(), "speed:breach".into())));
    let skew = series(&metrics, "leadflow_clock_skew_seconds").expect("skew measured");
    assert!(
        (1790.0..1810.0).contains(&skew),
        "30 minutes ahead, measured {skew}"
    );
    assert!(series(&metrics, "leadflow_ticks_clamped_total").unwrap_or(0.0) >= 1.0);

    // The same with host timestamps (CreateTime): no measurement, and the fast clock fires
    // new@acme.io's warning early. This is what the guard prevents.
    let (seen, metrics) = sla_with_a_fast_clock(&brokers, "CreateTime");
    assert!(
        seen.contains(&("new@acme.io".into(), "speed:warning".into())),
        "{seen:?}"
    );
    assert_eq!(series(&metrics, "leadflow_clock_skew_seconds"), None);
}
