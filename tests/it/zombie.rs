//! Zombie fencing on a broker with transactions: an instance stalled (SIGSTOP) in the middle of
//! a transaction, past its session timeout, loses its partitions to a second instance; when it
//! resumes (SIGCONT) it must not add a single output for them. Afterwards every output
//! partition equals the replay of the internal log: nothing lost, nothing repeated.
//!
//! Two cases, by how the stalled instance's transaction ends:
//! - it wakes before its transaction times out: its commit carries a stale group generation,
//!   which the group coordinator refuses, so the transaction is aborted; it goes on as a
//!   member of the group;
//! - it wakes after the broker aborted the transaction on timeout: its producer is fenced,
//!   and the instance stops with an error (a supervisor restarts it).
//!
//! Needs a broker with transactions: run with LEADFLOW_TEST_BROKERS (see README); on the
//! in-process mock the test says so and returns.

use crate::common;

use std::time::{Duration, Instant};

use common::child::{spawn, tail, Guard};
use common::kafka::{assert_same, total, wait_until, TestBroker};
use leadflow::config::Settings;
use leadflow::gen::{self, GenSpec};

struct Case {
    name: &'static str,
    transaction_timeout: &'static str,
    /// Resume the stalled instance only after the broker aborted its transaction.
    wake_after_timeout: bool,
}

#[test]
fn a_stalled_instance_resumes_without_writing_for_partitions_it_lost() {
    run_case(&Case {
        name: "zombie-abort",
        transaction_timeout: "60s",
        wake_after_timeout: false,
    });
}

#[test]
fn a_stalled_instance_whose_transaction_timed_out_is_fenced() {
    run_case(&Case {
        name: "zombie-fenced",
        transaction_timeout: "4s",
        wake_after_timeout: true,
    });
}

fn run_case(case: &Case) {
    let broker = TestBroker::start(case.name, 4);
    if broker.mock().is_some() {
        eprintln!(
            "skipped: zombie fencing needs a broker with transactions (LEADFLOW_TEST_BROKERS)"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config_text = broker
        .config(
            &dir.path().join("snapshots"),
            // Two instances on one host: each serves HTTP on a port of its own.
            "[run]\ntick_interval = \"200ms\"\ncommit_interval = \"100ms\"\n\
             [http]\nlisten = \"127.0.0.1:0\"\n",
        )
        .replace(
            "[kafka.properties]",
            &format!(
                "transactions = \"on\"\ntransaction_timeout = \"{}\"\n[kafka.properties]",
                case.transaction_timeout
            ),
        );
    let config = dir.path().join("leadflow.toml");
    std::fs::write(&config, &config_text).expect("write config");
    let settings = Settings::from_toml(&config_text).expect("config");
    assert!(
        leadflow::kafka::admin::transactions(&settings.service).expect("resolve"),
        "transactions are on"
    );
    // In the past (Aug-Sep 2026), so caught-up partitions also get ticks.
    let events = gen::generate(&GenSpec {
        seed: 11,
        leads: 8_000,
        events: 120_000,
        start_ms: 1_785_542_400_000,
        span_ms: 40 * 86_400_000,
    });
    let (first, rest) = events.split_at(20_000);
    leadflow::kafka::produce_events(&settings.service, first).expect("produce");

    let (log_a, log_b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let a = spawn(&config, &log_a);
    let t = &broker.topics;
    let offsets = || broker.count(&t.transitions) + broker.count(&t.sla);
    wait_until(Duration::from_secs(90), "first outputs of a", || {
        broker.records(&t.transitions) > 100
    });

    // Keep a busy, then stop it while it has a transaction open with outputs in it: the
    // output topics then hold more offsets than committed records and markers account for.
    let producer = std::thread::spawn({
        let svc = settings.service.clone();
        let rest = rest.to_vec();
        move || {
            for chunk in rest.chunks(5_000) {
                leadflow::kafka::produce_events(&svc, chunk).expect("produce the rest");
            }
        }
    });
    let stalled_at = stop_in_open_transaction(&a, &broker, &log_a);
    eprintln!("{}: a stopped with a transaction open", case.name);

    let b = spawn(&config, &log_b);
    if case.wake_after_timeout {
        // b takes over once a's session and transaction have timed out, and emits.
        wait_until(
            Duration::from_secs(120),
            "b to emit after the takeover",
            || offsets() > stalled_at + 50,
        );
    } else {
        // b is assigned a's partitions, and waits for a's open transaction to end.
        wait_until(
            Duration::from_secs(60),
            "b waiting on a's transaction",
            || {
                std::fs::read_to_string(&log_b)
                    .is_ok_and(|l| l.contains("waiting for an open transaction"))
            },
        );
    }
    a.signal("CONT");
    eprintln!("{}: a resumed", case.name);
    producer.join().expect("producer thread");

    let (expected, actual) = broker.converge(&settings, events.len(), Duration::from_secs(300));
    let a_log = std::fs::read_to_string(&log_a).unwrap_or_default();
    if case.wake_after_timeout {
        // Fenced: the broker aborted a's transaction and bumped its producer's epoch.
        let mut a = a;
        let exited = wait_exit(&mut a, Duration::from_secs(30));
        assert!(
            exited.is_some_and(|s| !s.success()),
            "a stops with an error once fenced\n{}",
            tail(&log_a)
        );
        let a_log = std::fs::read_to_string(&log_a).unwrap_or_default();
        assert!(
            a_log.to_lowercase().contains("fenced"),
            "a says it was fenced\n{}",
            tail(&log_a)
        );
    } else {
        assert!(
            a_log.contains("transaction aborted") || a_log.contains("partitions lost"),
            "a's commit with a stale generation was refused and aborted\n{}",
            tail(&log_a)
        );
        drop(a);
    }
    drop(b);
    assert!(total(&expected) > 5_000, "a meaningful amount of output");
    assert_same(&expected, &actual);
}

/// SIGSTOPs `a` at a moment when its transaction holds outputs (an output partition's last
/// stable offset is below its high watermark); returns the output offsets at that moment.
fn stop_in_open_transaction(a: &Guard, broker: &TestBroker, log: &std::path::Path) -> i64 {
    let t = &broker.topics;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        assert!(
            Instant::now() < deadline,
            "never caught a with an open transaction\n{}",
            tail(log)
        );
        a.signal("STOP");
        // Requests a sent before the stop may still land: let them.
        std::thread::sleep(Duration::from_millis(300));
        if broker.open_transaction(&t.transitions) || broker.open_transaction(&t.sla) {
            return broker.count(&t.transitions) + broker.count(&t.sla);
        }
        a.signal("CONT");
        std::thread::sleep(Duration::from_millis(150));
    }
}

fn wait_exit(child: &mut Guard, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.0.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}
