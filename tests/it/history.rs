//! A stored position that disagrees with the internal log never leads to a silent skip or to
//! a silent fold of an incomplete history: the partition stops, readiness turns false, the
//! reason is counted, and `/health/ready` names the topic, partition, positions and remedy.
//! Needs the Admin API's DeleteTopics and DeleteRecords: real broker only (LEADFLOW_TEST_BROKERS);
//! on the mock the tests say so and return.

use crate::common;

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use common::kafka::{wait_until, Running, TestBroker};
use leadflow::codec::avro::{self, InternalRecord};
use leadflow::config::Settings;
use leadflow::gen::{self, GenSpec};
use rdkafka::producer::{BaseRecord, Producer};

fn events(seed: u64, n: u64) -> Vec<leadflow::model::event::Event> {
    gen::generate(&GenSpec {
        seed,
        leads: 300,
        events: n,
        start_ms: 1_785_542_400_000,
        span_ms: 5 * 86_400_000,
    })
}

/// Runs the service over `n` events until all are folded, then stops it (final snapshots).
fn fold_and_stop(broker: &TestBroker, config: &str, n: u64) {
    let settings = Settings::from_toml(config).expect("config");
    let running = Running::start(config);
    leadflow::kafka::produce_events(&settings.service, &events(1, n)).expect("produce");
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while running.stats.state.records_in.load(Relaxed) < n {
        assert!(
            std::time::Instant::now() < deadline,
            "not every event folded: ingest consumed {} forwarded {}, internal log {}, state \
             folded {}, ready {}",
            running.stats.ingest.consumed.load(Relaxed),
            running.stats.ingest.forwarded.load(Relaxed),
            broker.records(&broker.topics.internal),
            running.stats.state.records_in.load(Relaxed),
            running.stats.view.ready()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    running.stop().expect("clean stop with final snapshots");
    assert!(broker.records(&broker.topics.transitions) > 0);
}

fn ready_body(running: &Running) -> (u16, String) {
    let (code, body, _) = leadflow::http::respond(&running.stats, "/health/ready");
    (code, body)
}

#[test]
fn recreated_topics_stop_the_partitions_instead_of_skipping() {
    let broker = TestBroker::start("recreated", 2);
    if broker.mock().is_some() {
        eprintln!("skipped: deleting and recreating topics needs a real broker");
        return;
    }
    let snaps = tempfile::tempdir().expect("tempdir");
    let config = broker.config(snaps.path(), "[run]\ntick_interval = \"0s\"\n");
    let settings = Settings::from_toml(&config).expect("config");
    fold_and_stop(&broker, &config, 2_000);

    broker.recreate_topics(2);
    let running = Running::start(&config);
    let new = events(2, 40);
    leadflow::kafka::produce_events(&settings.service, &new).expect("produce after");
    let m = &running.stats.metrics;
    wait_until(Duration::from_secs(60), "both partitions stopped", || {
        m.partitions_stopped.get() == 2
    });
    wait_until(Duration::from_secs(60), "the new events forwarded", || {
        broker.records(&broker.topics.internal) == new.len()
    });
    assert_eq!(
        running.stats.state.records_in.load(Relaxed),
        0,
        "nothing of the new log was folded from the old positions"
    );
    assert_eq!(broker.records(&broker.topics.transitions), 0, "no output");
    assert!(!running.stats.view.ready());
    let (code, body) = ready_body(&running);
    assert_eq!(code, 503);
    assert!(
        body.contains(&format!("{}/0", broker.topics.internal))
            && body.contains("beyond the end of the log")
            && body.contains("Remedies"),
        "{body}"
    );
    assert_eq!(
        m.partition_stops
            .with_label_values(&["log_recreated"])
            .get(),
        2
    );
    running.stop().expect("stops cleanly");
}

#[test]
fn deleted_history_stops_the_partition_instead_of_folding_what_is_left() {
    let broker = TestBroker::start("deleted", 2);
    if broker.mock().is_some() {
        eprintln!("skipped: DeleteRecords needs a real broker");
        return;
    }
    let snaps = tempfile::tempdir().expect("tempdir");
    let config = broker.config(snaps.path(), "[run]\ntick_interval = \"0s\"\n");
    fold_and_stop(&broker, &config, 2_000);

    // Records arrive after the last snapshot of partition 0, then retention takes them and
    // more: the snapshot's position is now below the log start.
    // (Written straight to the internal log, as ingest would, while no instance runs.)
    let producer = broker.producer();
    for ev in events(3, 100) {
        let value = avro::encode_internal(&InternalRecord::Event(ev)).expect("encode");
        producer
            .send(
                BaseRecord::<[u8], [u8]>::to(&broker.topics.internal)
                    .partition(0)
                    .payload(&value),
            )
            .map_err(|(e, _)| e)
            .expect("queued");
    }
    producer.flush(Duration::from_secs(10)).expect("acked");
    let (_, end) = common::kafka::watermarks(&broker, &broker.topics.internal, 0);
    broker.delete_records(&broker.topics.internal, 0, end);

    let running = Running::start(&config);
    let m = &running.stats.metrics;
    wait_until(Duration::from_secs(60), "partition 0 stopped", || {
        m.partitions_stopped.get() == 1
    });
    let (code, body) = ready_body(&running);
    assert_eq!(code, 503);
    assert!(
        body.contains(&format!("{}/0", broker.topics.internal))
            && body.contains("below the start of the log")
            && body.contains(&format!("({end})"))
            && body.contains("cannot bring them back")
            && body.contains("\"A stopped partition\""),
        "{body}"
    );
    assert_eq!(
        m.partition_stops
            .with_label_values(&["history_deleted"])
            .get(),
        1
    );
    running.stop().expect("stops cleanly");
}
