//! Health and metrics while Kafka is unreachable: no HTTP endpoint waits on broker I/O or on
//! the fold loop, so a liveness probe never restarts a healthy instance during an outage.
//! Two outages: the mock cluster's broker taken down (connections refused), and, with
//! LEADFLOW_TEST_BROKERS set (the real-broker tier), a private Apache Kafka broker frozen with
//! SIGSTOP (requests hang until their timeouts: the harder case).

use crate::common;

use std::time::{Duration, Instant};

use common::http::get_within;
use common::kafka::{wait_until, Running, TestBroker};
use leadflow::config::Settings;
use leadflow::gen::{self, GenSpec};

/// A Kubernetes probe's default `timeoutSeconds`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

#[test]
fn health_and_metrics_answer_while_the_broker_is_down() {
    let broker = TestBroker::start("outage", 2);
    let Some(mock) = broker.mock() else {
        eprintln!("skipped: taking the broker down needs the in-process mock cluster");
        return;
    };
    probe_through_outage(
        &broker,
        || mock.cluster().broker_down(1).expect("broker down"),
        || mock.cluster().broker_up(1).expect("broker up"),
    );
}

#[test]
fn health_and_metrics_answer_while_the_broker_hangs() {
    if std::env::var_os("LEADFLOW_TEST_BROKERS").is_none() {
        eprintln!("skipped: needs Java and Maven for a private Kafka (the real-broker tier)");
        return;
    }
    let Some(kafka) = common::kafka_local::LocalKafka::start() else {
        eprintln!("skipped: deploy/kafka-local could not start (Java, Maven)");
        return;
    };
    let broker = TestBroker::on(&kafka.bootstrap, "hang", 2);
    probe_through_outage(&broker, || kafka.signal("STOP"), || kafka.signal("CONT"));
}

/// Runs the service on `broker`, then probes the endpoints for 20 s after `down()`.
fn probe_through_outage(broker: &TestBroker, down: impl Fn(), up: impl Fn()) {
    let snaps = tempfile::tempdir().expect("tempdir");
    // A long drain timeout: the state stage keeps waiting for acks through the outage.
    let config = broker
        .config(
            snaps.path(),
            "[run]\ntick_interval = \"200ms\"\ndrain_timeout = \"60s\"\n",
        )
        .replace("interval = \"500ms\"", "interval = \"2s\"");
    let settings = Settings::from_toml(&config).expect("config");
    let events = gen::generate(&GenSpec {
        seed: 8,
        leads: 2_000,
        events: 40_000,
        start_ms: 1_785_542_400_000,
        span_ms: 10 * 86_400_000,
    });
    let (first, second) = events.split_at(20_000);
    leadflow::kafka::produce_events(&settings.service, first).expect("produce");
    let running = Running::start(&config);
    let addr = leadflow::http::serve(
        "127.0.0.1:0".parse().expect("addr"),
        running.stats.clone(),
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    )
    .expect("http")
    .to_string();
    wait_until(Duration::from_secs(60), "ready", || {
        get_within(&addr, "/health/ready", PROBE_TIMEOUT).is_ok_and(|(c, _)| c == 200)
    });

    // Take the broker away right after the state stage folded new records, so its next
    // checkpoint (within 2 s) has positions to commit while the broker does not answer.
    use std::sync::atomic::Ordering::Relaxed;
    let before = running.stats.state.records_in.load(Relaxed);
    leadflow::kafka::produce_events(&settings.service, second).expect("produce more");
    wait_until(Duration::from_secs(30), "new records folded", || {
        running.stats.state.records_in.load(Relaxed) > before + 1_000
    });
    down();
    let outage = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut probes = 0;
    while outage.elapsed() < Duration::from_secs(20) {
        for path in ["/health/live", "/health/ready", "/metrics"] {
            let asked = Instant::now();
            let answer = get_within(&addr, path, PROBE_TIMEOUT);
            let took = asked.elapsed();
            assert!(
                answer.is_ok(),
                "{path} after {:?} of outage: {answer:?}",
                outage.elapsed()
            );
            if path == "/health/live" {
                assert_eq!(answer.map(|a| a.0), Ok(200), "alive during the outage");
            }
            slowest = slowest.max(took);
            probes += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    up();
    eprintln!("{probes} probes during a 20 s outage, slowest answer {slowest:?}");
    running.stop().ok();
}
