//! State any instance can take over: snapshots in an S3-API bucket (moto here; MinIO or AWS
//! the same way), a bounded internal log, and a bucket that goes away for a while.
//!
//! Needs an S3-API server (`LEADFLOW_TEST_S3`, or `moto_server` on the PATH; `.ci/run` starts
//! one); without one the tests say so and return. Deleting the internal log's records needs a
//! real broker (DeleteRecords): on the mock the takeover runs without that step.

use crate::common;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::child::{http_address, spawn_under, tail, Guard};
use common::http::{get, series};
use common::kafka::{assert_same, replay_log, total, wait_until, Record, TestBroker};
use common::s3::{Proxy, AWS_ENV, S3};
use leadflow::config::Settings;
use leadflow::gen::{self, GenSpec};

/// The test config with snapshots in `s3://bucket/prefix` through `endpoint`.
fn config_in_bucket(broker: &TestBroker, bucket: &str, endpoint: &str, extra: &str) -> String {
    let base = broker.config(Path::new("/unused"), extra);
    base.replace(
        "dir = \"/unused\"",
        &format!("url = \"s3://{bucket}/leadflow\"\nendpoint = \"{endpoint}\""),
    )
}

fn start(dir: &Path, name: &str, config: &str) -> (Guard, std::path::PathBuf, String) {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(&cfg, config).expect("config");
    let log = dir.join(format!("{name}.log"));
    // Each instance runs in a folder of its own: nothing local is shared.
    let work = dir.join(name);
    std::fs::create_dir_all(&work).expect("work dir");
    let mut guard = spawn_under(
        &["env", "-C", work.to_str().expect("utf-8")],
        &AWS_ENV,
        &cfg,
        &log,
    );
    let mut addr = None;
    wait_until(Duration::from_secs(60), "the HTTP address", || {
        addr = http_address(&log);
        if let Ok(Some(status)) = guard.0.try_wait() {
            panic!("{name} exited ({status}):\n{}", tail(&log));
        }
        addr.is_some()
    });
    (guard, log, addr.unwrap_or_default())
}

fn metric(addr: &str, name: &str) -> f64 {
    series(&get(addr, "/metrics").1, name).unwrap_or(0.0)
}

/// Merges two reads of the internal log (one before records were deleted, one after) by
/// offset: the whole history, as a replay sees it.
fn merge(before: &[Record], after: &[Record]) -> Vec<Record> {
    let mut by: BTreeMap<(i32, i64), Record> = BTreeMap::new();
    for r in before.iter().chain(after) {
        by.entry((r.partition, r.offset))
            .or_insert_with(|| r.clone());
    }
    by.into_values().collect()
}

/// Instance A folds a stream and checkpoints to the bucket; it is killed. The internal log's
/// records before each partition's newest snapshot are deleted (real broker), a corrupt
/// object is put above the newest snapshot of partition 0, and more events arrive. Instance
/// B, in an empty folder, takes every partition from the bucket: it passes over the corrupt
/// object (counted), re-folds only what follows the snapshots, and the outputs equal the
/// replay of the whole history record for record.
#[test]
fn another_instance_takes_over_from_the_bucket() {
    let Some(s3) = S3::start() else {
        eprintln!("{}", S3::SKIP);
        return;
    };
    let broker = TestBroker::start("takeover", 2);
    let bucket = s3.bucket(&broker.prefix);
    let client = s3.client(&bucket);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_in_bucket(
        &broker,
        &bucket,
        &s3.endpoint,
        "[http]\nlisten = \"127.0.0.1:0\"\n[run]\ntick_interval = \"200ms\"\n",
    );
    let settings = Settings::from_toml(&config).expect("config");
    let events = gen::generate(&GenSpec {
        seed: 11,
        leads: 3_000,
        events: 30_000,
        start_ms: 1_785_542_400_000,
        span_ms: 20 * 86_400_000,
    });
    let (first, second) = events.split_at(20_000);
    let internal = broker.topics.internal.clone();
    let prefix = |p: i32| format!("leadflow/{internal}-{p}/");

    let (mut a, a_log, a_addr) = start(dir.path(), "a", &config);
    leadflow::kafka::produce_events(&settings.service, first).expect("produce");
    // A has folded the first part and snapshotted near the end of each partition.
    wait_until(
        Duration::from_secs(120),
        "A's snapshots near the end",
        || {
            let forwarded = broker.count(&internal) >= first.len() as i64;
            forwarded
                && (0..2).all(|p| {
                    let (_, high) = common::kafka::watermarks(&broker, &internal, p);
                    let newest = client.positions(&prefix(p)).first().copied().unwrap_or(0);
                    newest * 10 >= high * 9 && newest > 0
                })
        },
    );
    assert!(metric(&a_addr, "leadflow_snapshot_bytes") > 0.0);
    a.0.kill().expect("SIGKILL A");
    let _ = a.0.wait();
    let a_text = std::fs::read_to_string(&a_log).unwrap_or_default();
    assert!(
        a_text.contains("snapshot written") && a_text.contains(&format!("s3://{bucket}/")),
        "A wrote to the bucket:\n{}",
        tail(&a_log)
    );

    // The whole history so far, before any of it is deleted.
    let before = broker.read_all(&internal);
    let mut newest = BTreeMap::new();
    for p in 0..2 {
        newest.insert(p, client.positions(&prefix(p))[0]);
    }
    let deleted = broker.mock().is_none();
    if deleted {
        for (p, s) in &newest {
            broker.delete_records(&internal, *p, *s);
            let (low, _) = common::kafka::watermarks(&broker, &internal, *p);
            assert_eq!(low, *s, "partition {p}: the log starts at the snapshot");
        }
    } else {
        eprintln!("note: the mock has no DeleteRecords; the takeover keeps the whole log");
    }
    // Damaged in the bucket: the newest object of partition 0 (a position above A's newest).
    let corrupt = format!("{}snapshot-{:020}.lfsn", prefix(0), newest[&0] + 1);
    client.put(&corrupt, b"LFSN\x04\x00 torn in transit".to_vec());

    leadflow::kafka::produce_events(&settings.service, second).expect("produce more");
    let (mut b, b_log, b_addr) = start(dir.path(), "b", &config);

    // B converges on the replay of the whole history (what was deleted included).
    let ids: HashSet<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    let deadline = Instant::now() + Duration::from_secs(240);
    let (expected, actual, history) = loop {
        std::thread::sleep(Duration::from_secs(1));
        let count = broker.count(&internal);
        let history = merge(&before, &broker.read_all(&internal));
        let seen = broker.internal_event_ids(&history);
        let complete = ids.iter().all(|id| seen.contains(*id));
        let expected = replay_log(&settings, &history);
        let actual = broker.outputs();
        let stable = broker.count(&internal) == count;
        if (complete && stable && total(&actual) == total(&expected)) || Instant::now() > deadline {
            assert!(complete, "every event reached the internal log");
            break (expected, actual, history);
        }
    };
    assert!(total(&expected) > 1_000, "a meaningful amount of output");
    assert_same(&expected, &actual);

    let b_text = std::fs::read_to_string(&b_log).unwrap_or_default();
    for (p, s) in &newest {
        assert!(
            b_text.contains(&format!("partition={p} start=Some({s})")),
            "B recovered partition {p} from A's snapshot at {s}:\n{}",
            tail(&b_log)
        );
    }
    let skipped = metric(
        &b_addr,
        "leadflow_snapshots_skipped_total{reason=\"corrupt\"}",
    );
    assert_eq!(
        skipped, 1.0,
        "the corrupt object was passed over and counted"
    );
    assert!(
        b_text.contains(&corrupt),
        "the log names the object:\n{}",
        tail(&b_log)
    );
    let refolded = metric(&b_addr, "leadflow_state_records_total") as usize;
    let after_snapshots = history
        .iter()
        .filter(|r| r.offset >= newest[&r.partition])
        .count();
    assert!(
        refolded < history.len() && refolded <= after_snapshots + 50,
        "B folded {refolded} records; the log holds {}, {after_snapshots} after the snapshots",
        history.len()
    );
    eprintln!(
        "takeover: log {} records, {after_snapshots} after A's snapshots; B folded {refolded}; \
         deleted before the snapshots: {deleted}",
        history.len()
    );
    b.signal("TERM");
    let status = b.0.wait().expect("reaped");
    assert!(status.success(), "B drains and exits 0:\n{}", tail(&b_log));
}

/// The bucket becomes unreachable: processing goes on, snapshots fail and are counted, their
/// age grows, the instance says why it is not ready, Prometheus fires the alert with the
/// shipped rules; once the bucket is back the next snapshot succeeds.
#[test]
fn an_unreachable_bucket_is_reported_and_the_next_upload_succeeds() {
    let Some(s3) = S3::start() else {
        eprintln!("{}", S3::SKIP);
        return;
    };
    let broker = TestBroker::start("bucketdown", 1);
    let bucket = s3.bucket(&broker.prefix);
    let proxy = Proxy::start(&s3.endpoint);
    let dir = tempfile::tempdir().expect("tempdir");
    // Every demo request qualifies (fast track, no fit floor): one event, one transition.
    let config = config_in_bucket(
        &broker,
        &bucket,
        &proxy.endpoint(),
        "[http]\nlisten = \"127.0.0.1:0\"\n[formats]\nweb = \"json\"\n[run]\ntick_interval = \"0s\"\n",
    )
    .replace("mql_min_fit = 20", "mql_min_fit = 0");
    let settings = Settings::from_toml(&config).expect("config");
    let (guard, log, addr) = start(dir.path(), "solo", &config);
    let now = leadflow::metrics::now_ms();
    let demo = |i: usize| {
        common::ev(
            &format!("e-{i}"),
            &format!("lead{i}@acme.io"),
            now,
            "web",
            "demo_request",
            &[("title", "Director")],
        )
    };
    let send = |from: usize, to: usize| {
        let evs: Vec<_> = (from..to).map(demo).collect();
        leadflow::kafka::produce_events(&settings.service, &evs).expect("produce");
    };
    send(0, 50);
    wait_until(Duration::from_secs(60), "a snapshot in the bucket", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("snapshot written")
            && get(&addr, "/health/ready").0 == 200
    });
    let prom = Prometheus::start(dir.path(), &addr);

    proxy.cut();
    send(50, 100);
    wait_until(Duration::from_secs(60), "outputs go on", || {
        broker.records(&broker.topics.transitions) == 100
    });
    wait_until(
        Duration::from_secs(120),
        "snapshots fail and are counted",
        || metric(&addr, "leadflow_snapshot_failures_total") >= 2.0,
    );
    let (code, body) = get(&addr, "/health/ready");
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("snapshots") && body.contains(&format!("s3://{bucket}")),
        "{body}"
    );
    let age = metric(&addr, "leadflow_snapshot_age_seconds");
    wait_until(Duration::from_secs(30), "the snapshot age grows", || {
        metric(&addr, "leadflow_snapshot_age_seconds") >= age + 2.0
    });
    if let Some(prom) = &prom {
        wait_until(
            Duration::from_secs(90),
            "LeadflowSnapshotsFailing fires",
            || prom.firing("LeadflowSnapshotsFailing"),
        );
    } else {
        eprintln!("note: no prometheus binary; the alert rule is checked by promtool in deploy/validate.sh");
    }

    proxy.restore();
    send(100, 110);
    wait_until(Duration::from_secs(120), "snapshots written again", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("snapshots are written again")
            && get(&addr, "/health/ready").0 == 200
    });
    assert!(metric(&addr, "leadflow_snapshot_age_seconds") < age + 30.0);
    guard.signal("TERM");
    let mut guard = guard;
    let status = guard.0.wait().expect("reaped");
    assert!(status.success(), "drains and exits 0:\n{}", tail(&log));
}

/// A real Prometheus (Debian's package, as promtool) scraping leadflow every second with the
/// shipped alert rules; `None` when the binary is missing.
struct Prometheus {
    child: std::process::Child,
    addr: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(dir: &Path, target: &str) -> Option<Prometheus> {
        let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/alerts.yml");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .ok()?
            .port();
        let cfg = dir.join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: leadflow\n    static_configs:\n      - targets: ['{target}']\n",
                rules.display()
            ),
        )
        .ok()?;
        let child = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let p = Prometheus {
            child,
            addr: format!("127.0.0.1:{port}"),
        };
        wait_until(Duration::from_secs(30), "Prometheus ready", || {
            std::net::TcpStream::connect(&p.addr).is_ok() && get(&p.addr, "/-/ready").0 == 200
        });
        Some(p)
    }

    fn firing(&self, alert: &str) -> bool {
        let (code, body) = get(&self.addr, "/api/v1/alerts");
        code == 200
            && serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["data"]["alerts"].as_array().cloned())
                .unwrap_or_default()
                .iter()
                .any(|a| a["labels"]["alertname"] == alert && a["state"] == "firing")
    }
}
