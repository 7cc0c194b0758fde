//! The crash test: `leadflow run` as a child process on 200k generated events, killed with
//! SIGKILL at random moments five times and restarted each time. The input arrives in five
//! parts, one before each round, so every round has work in flight when it is killed (the
//! pipeline is fast enough to finish a whole backlog within a round). Afterwards every output
//! partition must hold exactly the records a replay of the internal log gives: nothing lost,
//! nothing duplicated, same order.

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::child::{spawn, tail};
use common::kafka::{assert_same, total, TestBroker};
use leadflow::config::Settings;
use leadflow::gen::{self, GenSpec, Rng};

const EVENTS: u64 = 200_000;

#[test]
fn kill_nine_five_times_loses_and_duplicates_nothing() {
    let broker = TestBroker::start("crash", 3);
    let dir = tempfile::tempdir().expect("tempdir");
    // A stable transactional id, as a StatefulSet pod has: each restart fences the killed
    // process's producer and aborts its open transaction at once (with transactions).
    let config_text = broker
        .config(
            &dir.path().join("snapshots"),
            "[run]\ntick_interval = \"200ms\"\ndrain_timeout = \"30s\"\n",
        )
        .replace(
            "[kafka.properties]",
            &format!(
                "transactional_id = \"{}-state-0\"\n[kafka.properties]",
                broker.prefix
            ),
        );
    let config = dir.path().join("leadflow.toml");
    std::fs::write(&config, &config_text).expect("write config");
    let settings = Settings::from_toml(&config_text).expect("config");

    // All in the past (Aug-Sep 2026), so ticks at now - grace fire every pending timer once.
    let events = gen::generate(&GenSpec {
        seed: 42,
        leads: 20_000,
        events: EVENTS,
        start_ms: 1_785_542_400_000,
        span_ms: 60 * 86_400_000,
    });
    assert_eq!(events.len() as u64, EVENTS);
    let mut parts = events.chunks(events.len().div_ceil(5));

    let log = dir.path().join("leadflow.log");
    let mut rng = Rng::new(7);
    // Output records: moving only once the state stage has its partitions and is folding.
    let progress = || broker.count(&broker.topics.transitions) + broker.count(&broker.topics.sla);
    for round in 1..=5 {
        if let Some(part) = parts.next() {
            leadflow::kafka::produce_events(&settings.service, part).expect("produce the input");
        }
        let before = progress();
        let mut child = spawn(&config, &log);
        // Kill a working process: after it has moved the logs on, at a random moment.
        let started = Instant::now();
        while progress() == before {
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "round {round}: no progress after a restart\n{}",
                tail(&log)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let alive = Duration::from_millis(100 + rng.below(1500));
        std::thread::sleep(alive);
        child.0.kill().expect("SIGKILL");
        let status = child.0.wait().expect("reaped");
        assert!(
            !status.success(),
            "round {round}: the child was killed, not finished"
        );
        eprintln!(
            "round {round}: killed {alive:?} after progress; internal log {}, outputs {}",
            broker.count(&broker.topics.internal),
            broker.count(&broker.topics.transitions) + broker.count(&broker.topics.sla)
        );
    }

    // The last run goes to the end: every source event is in the internal log, and the
    // outputs equal the replay of that log.
    let mut child = spawn(&config, &log);
    let (expected, actual) = broker.converge(&settings, EVENTS as usize, Duration::from_secs(400));
    // A clean stop drains: final snapshot, commit, leave the group.
    let pid = child.0.id().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("send SIGTERM");
    let status = child.0.wait().expect("reaped");
    assert!(status.success(), "SIGTERM drains and exits 0");

    assert!(total(&expected) > 10_000, "a meaningful amount of output");
    // Periodic snapshots larger than one encoder chunk: the service streamed their first
    // chunks to the store while it encoded the rest, and the restarts above recovered from
    // such snapshots. (The newest of each partition is the SIGTERM's final snapshot, written
    // whole; the older ones kept are periodic.)
    let periodic = periodic_sizes(&dir.path().join("snapshots"));
    let one_chunk =
        (leadflow::engine::SNAPSHOT_CHUNK + leadflow::engine::SNAPSHOT_CHUNK_SLACK) as u64;
    eprintln!("periodic snapshots kept, bytes: {periodic:?}");
    assert!(
        periodic.iter().any(|&n| n > one_chunk),
        "a periodic snapshot spans more than one chunk of {one_chunk} bytes: {periodic:?}"
    );
    assert_same(&expected, &actual);
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        logs.contains("partition assigned and recovered") && logs.contains("start=Some("),
        "restarts recovered from snapshots\n{}",
        tail(&log)
    );
}

/// The sizes of the snapshots under `dir` (one folder per partition) but the newest of each.
fn periodic_sizes(dir: &std::path::Path) -> Vec<u64> {
    let mut sizes = Vec::new();
    for folder in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let mut files: Vec<(String, u64)> = std::fs::read_dir(folder.path())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let len = e.metadata().ok()?.len();
                name.ends_with(".lfsn").then_some((name, len))
            })
            .collect();
        files.sort();
        files.pop();
        sizes.extend(files.into_iter().map(|(_, len)| len));
    }
    sizes
}
