//! Notifications against a real HTTP receiver on loopback (`tests/it/common/receiver.rs`): output
//! records are produced to the output topics of a broker (the mock, or Apache Kafka with
//! LEADFLOW_TEST_BROKERS), and the notify stage delivers them.

use crate::common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::kafka::{wait_until, TestBroker};
use common::receiver::{Answer, Receiver};
use leadflow::config::Settings;
use leadflow::model::funnel::Stage;
use leadflow::model::records::{Output, SlaKind, SlaRecord, Transition};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::ClientConfig;

const T0: i64 = 1_796_151_600_000; // 2026-12-01T19:00:00Z, 14:00 in New York

fn transition(n: u32, lead: &str, from: Stage, to: Stage, owner: Option<&str>) -> Output {
    Output::Transition(Transition {
        transition_id: format!("{lead}/t/{n}").into(),
        lead_key: lead.into(),
        from_stage: from,
        to_stage: to,
        reason: if to == Stage::Mql {
            "score".into()
        } else {
            "crm".into()
        },
        occurred_at: T0 - 3_600_000,
        trigger_event_id: format!("e-{lead}-{n}").into(),
        engagement: 112.5,
        fit: 40.0,
        grade: "A".into(),
        owner_id: owner.map(Into::into),
    })
}

fn sla(lead: &str, policy: &str, kind: SlaKind, owner: Option<&str>) -> Output {
    Output::Sla(SlaRecord {
        sla_event_id: format!("{lead}/s/{policy}/1/{}", kind.as_str()).into(),
        lead_key: lead.into(),
        policy: policy.into(),
        kind,
        stage: Stage::Sal,
        started_at: T0 - 86_400_000,
        deadline: T0,
        at: T0,
        response_ms: (kind == SlaKind::Met).then_some(3_600_000),
        response_business_ms: (kind == SlaKind::Met).then_some(3_600_000),
        on_time: (kind == SlaKind::Met).then_some(true),
        owner_id: owner.map(Into::into),
    })
}

/// Writes `records` to the output topics as the state stage would (Avro, keyed by lead, the
/// lead's partition).
fn produce(broker: &TestBroker, partitions: i32, records: &[Output]) {
    let producer = broker.producer();
    for rec in records {
        let (topic, key) = match rec {
            Output::Transition(t) => (&broker.topics.transitions, &t.lead_key),
            Output::Sla(s) => (&broker.topics.sla, &s.lead_key),
        };
        let value = leadflow::codec::avro::encode_output(rec);
        let p = leadflow::partition::partition_for(key.as_bytes(), partitions as u32) as i32;
        producer
            .send(
                BaseRecord::<[u8], [u8]>::to(topic)
                    .partition(p)
                    .key(key.as_bytes())
                    .payload(&value),
            )
            .map_err(|(e, _)| e)
            .expect("queued");
    }
    producer.flush(Duration::from_secs(10)).expect("acked");
}

/// The test config: the broker, `[notify]` starting at the earliest records, a target per
/// `(name, kind, url)` with its URL in a file, and `extra` (routes and more).
fn config(
    broker: &TestBroker,
    dir: &Path,
    targets: &[(&str, &str, String)],
    extra: &str,
) -> String {
    let mut notify = format!(
        "[notify]\nstart = \"earliest\"\ngroup = \"{}-notify\"\ndlq = \"{}.notify.dlq\"\n\
         lead_link = \"https://crm.example.com/leads/{{lead_key}}\"\n",
        broker.prefix, broker.prefix
    );
    for (name, kind, url) in targets {
        let file = dir.join(format!("{name}.url"));
        std::fs::write(&file, url).expect("url file");
        notify.push_str(&format!(
            "[notify.targets.{name}]\nkind = \"{kind}\"\nurl_file = \"{}\"\nrate = 200\n",
            file.display()
        ));
    }
    // The dead-letter topic must exist (the stage checks it at startup).
    broker.create_topic(&format!("{}.notify.dlq", broker.prefix), 1);
    broker.config(&dir.join("snapshots"), &format!("{notify}{extra}"))
}

/// The notify stage in this process, stopped (and drained) on drop.
struct Notifier {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
    metrics: Arc<leadflow::metrics::Metrics>,
}

impl Notifier {
    fn start(config: &str) -> Notifier {
        let settings = Settings::from_toml(config).unwrap_or_else(|e| panic!("config: {e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let metrics = Arc::new(leadflow::metrics::Metrics::new().expect("metrics"));
        let (s, m) = (Arc::clone(&stop), Arc::clone(&metrics));
        let handle = std::thread::spawn(move || leadflow::notify::run(&settings, &s, m, None));
        Notifier {
            stop,
            handle: Some(handle),
            metrics,
        }
    }

    fn stop(mut self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .map_or(Ok(()), |h| h.join().expect("join"))
    }

    fn count(&self, metric: &str, labels: &[&str]) -> u64 {
        let m = &self.metrics;
        match metric {
            "delivered" => m.notify_delivered.with_label_values(labels).get(),
            "retries" => m.notify_retries.with_label_values(labels).get(),
            "failed" => m.notify_failed.with_label_values(labels).get(),
            _ => panic!("unknown metric {metric}"),
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The routes of docs/notifications.md's example: handoffs and warnings to the owner (the
/// managers when the owner has no channel), breaches to the managers (the alert ladder), and
/// every transition to the CRM's webhook, signed.
const ROUTES: &str = r#"
[notify.owners]
"rep-1" = "rep1"
[notify.owner_timezones]
"rep-1" = "America/New_York"

[[notify.routes]]
name = "handoffs to the owner"
record = "transition"
to_stage = ["mql", "sal"]
target = "owner"
fallback = "managers"

[[notify.routes]]
name = "warnings to the owner"
record = "sla"
sla_kind = ["warning"]
target = "owner"
fallback = "managers"

[[notify.routes]]
name = "breaches to the managers"
record = "sla"
sla_kind = ["breach"]
target = "managers"

[[notify.routes]]
name = "every transition to the CRM"
record = "transition"
target = "crm"
"#;

#[test]
fn each_route_gets_its_message_owners_are_routed_and_webhooks_are_signed() {
    let broker = TestBroker::start("notify-routes", 2);
    let dir = tempfile::tempdir().expect("tempdir");
    let rx = Receiver::start(|_, _| Answer::ok());
    let key_file = dir.path().join("crm.key");
    std::fs::write(&key_file, "s3cr3t-hmac-key\n").expect("key");
    let cfg = config(
        &broker,
        dir.path(),
        &[
            ("rep1", "slack", rx.url("/rep1")),
            ("managers", "slack", rx.url("/managers")),
            ("crm", "webhook", rx.url("/crm")),
        ],
        ROUTES,
    )
    .replace(
        &format!(
            "url_file = \"{}\"\nrate = 200\n",
            dir.path().join("crm.url").display()
        ),
        &format!(
            "url_file = \"{}\"\nrate = 200\nsecret_file = \"{}\"\n",
            dir.path().join("crm.url").display(),
            key_file.display()
        ),
    );
    let records = [
        transition(1, "ann@acme.io", Stage::New, Stage::Mql, Some("rep-1")),
        transition(2, "ann@acme.io", Stage::Mql, Stage::Sal, Some("rep-1")),
        transition(1, "bob@beta.io", Stage::New, Stage::Mql, Some("rep-9")),
        sla(
            "ann@acme.io",
            "sal_first_touch",
            SlaKind::Warning,
            Some("rep-1"),
        ),
        sla(
            "ann@acme.io",
            "sal_first_touch",
            SlaKind::Breach,
            Some("rep-1"),
        ),
        sla(
            "ann@acme.io",
            "sal_first_touch",
            SlaKind::Met,
            Some("rep-1"),
        ),
        transition(1, "cy@gamma.io", Stage::New, Stage::Lost, None),
    ];
    produce(&broker, 2, &records);
    let n = Notifier::start(&cfg);
    wait_until(Duration::from_secs(60), "every message delivered", || {
        rx.requests().len() == 3 + 2 + 4
    });

    // The owner's channel: the MQL and the acceptance in order (one output topic), and the
    // warning (the other topic: its place among them is not ordered), readable, with the
    // deadline in the owner's local time (14:00 in New York) and the CRM link.
    let rep1 = rx.to("/rep1");
    let texts: Vec<String> = rep1
        .iter()
        .map(|r| r.json()["text"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(texts.len(), 3, "{texts:#?}");
    let (handoffs, warnings): (Vec<&String>, Vec<&String>) =
        texts.iter().partition(|t| !t.contains("*SLA warning*"));
    assert!(
        handoffs[0].starts_with(":dart: *New MQL*: ann@acme.io"),
        "{}",
        handoffs[0]
    );
    assert!(
        handoffs[0].contains("Grade A, engagement 112.5") && handoffs[0].contains("why: score")
    );
    assert!(
        handoffs[0].contains("<https://crm.example.com/leads/ann%40acme.io|Open in CRM>"),
        "{}",
        handoffs[0]
    );
    assert!(
        handoffs[1].contains("*Accepted by sales (SAL)*: ann@acme.io"),
        "{}",
        handoffs[1]
    );
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].contains("*SLA warning* (sal_first_touch): ann@acme.io")
            && warnings[0].contains("respond by Tue 1 Dec 14:00 EST"),
        "{}",
        warnings[0]
    );
    // The managers: the MQL of a lead whose owner has no channel (fallback), and the breach.
    let mut managers: Vec<String> = rx
        .to("/managers")
        .iter()
        .map(|r| r.json()["text"].as_str().unwrap_or("").to_string())
        .collect();
    managers.sort();
    assert_eq!(managers.len(), 2, "{managers:#?}");
    assert!(
        managers[0].starts_with(":dart: *New MQL*: bob@beta.io"),
        "{}",
        managers[0]
    );
    assert!(
        managers[1].contains(
            "*SLA breached* (sal_first_touch): ann@acme.io was due by Tue 1 Dec 14:00 EST"
        ),
        "the deadline in the owner's local time, whoever reads it: {}",
        managers[1]
    );
    // The CRM: every transition as JSON, keyed by its id, signed with the shared key.
    let crm = rx.to("/crm");
    assert_eq!(crm.len(), 4);
    for r in &crm {
        let json = r.json();
        let id = json["transition_id"].as_str().expect("a transition");
        assert_eq!(r.header("idempotency-key"), Some(id));
        let sig = r.header("x-leadflow-signature").expect("signed");
        let t: i64 = sig
            .split(',')
            .find_map(|p| p.strip_prefix("t="))
            .and_then(|t| t.parse().ok())
            .expect("t=");
        // Checked as a receiver would, with the HMAC library directly.
        use hmac::{Hmac, KeyInit, Mac};
        let mut mac =
            <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(b"s3cr3t-hmac-key").expect("key");
        mac.update(format!("{t}.").as_bytes());
        mac.update(r.body.as_bytes());
        let want = format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(sig, want, "the signature of {id}");
    }
    let ann: Vec<&str> = crm
        .iter()
        .filter_map(|r| r.header("idempotency-key"))
        .filter(|id| id.starts_with("ann@"))
        .collect();
    assert_eq!(
        ann,
        vec!["ann@acme.io/t/1", "ann@acme.io/t/2"],
        "in order per lead"
    );
    assert_eq!(n.count("delivered", &["rep1"]), 3);
    assert_eq!(n.count("delivered", &["managers"]), 2);
    assert_eq!(n.count("delivered", &["crm"]), 4);

    // Every record's offset is committed once its messages are out.
    let settings = Settings::from_toml(&cfg).expect("config");
    wait_until(
        Duration::from_secs(30),
        "offsets committed to the end",
        || committed_to_end(&broker, &settings),
    );
    n.stop().expect("stops cleanly");
}

/// Whether the notify group's committed offsets equal each output partition's end.
fn committed_to_end(broker: &TestBroker, settings: &Settings) -> bool {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("group.id", &settings.notify.group)
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for t in [&broker.topics.transitions, &broker.topics.sla] {
        for p in 0..2 {
            tpl.add_partition(t, p);
        }
    }
    let Ok(committed) = c.committed_offsets(tpl, Duration::from_secs(10)) else {
        return false;
    };
    committed.elements().iter().all(|e| {
        let (_, high) = common::kafka::watermarks(broker, e.topic(), e.partition());
        match e.offset() {
            rdkafka::Offset::Offset(o) => o == high,
            _ => high == 0,
        }
    })
}

#[test]
fn retries_honour_retry_after_and_a_rejection_goes_to_the_dead_letter_topic() {
    let broker = TestBroker::start("notify-retries", 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let dlq = format!("{}.notify.dlq", broker.prefix);
    // 500 three times then 200; 429 (wait 2 s) then 200; 400 always.
    let rx = Receiver::start(|path, n| match (path, n) {
        ("/flaky", 0..=2) => Answer::status(500),
        ("/limited", 0) => Answer {
            status: 429,
            headers: vec![("Retry-After", "2".into())],
            delay: Duration::ZERO,
        },
        ("/bad", _) => Answer::status(400),
        _ => Answer::ok(),
    });
    let routes = r#"
[[notify.routes]]
record = "transition"
to_stage = ["mql", "won"]
target = "flaky"
[[notify.routes]]
record = "transition"
to_stage = ["sal"]
target = "limited"
[[notify.routes]]
record = "transition"
to_stage = ["sql"]
target = "bad"
"#;
    let cfg = config(
        &broker,
        dir.path(),
        &[
            ("flaky", "webhook", rx.url("/flaky")),
            ("limited", "webhook", rx.url("/limited")),
            ("bad", "webhook", rx.url("/bad")),
        ],
        routes,
    );
    produce(
        &broker,
        1,
        &[
            transition(1, "f@x.io", Stage::New, Stage::Mql, None),
            transition(1, "l@x.io", Stage::Mql, Stage::Sal, None),
            transition(1, "s@x.io", Stage::Sal, Stage::Sql, None),
            transition(2, "f@x.io", Stage::Sql, Stage::Won, None),
        ],
    );
    let n = Notifier::start(&cfg);
    wait_until(
        Duration::from_secs(60),
        "both flaky records delivered",
        || n.count("delivered", &["flaky"]) == 2,
    );
    wait_until(
        Duration::from_secs(60),
        "the limited record delivered",
        || n.count("delivered", &["limited"]) == 1,
    );
    wait_until(
        Duration::from_secs(60),
        "the rejection dead-lettered",
        || broker.records(&dlq) == 1,
    );
    // One delivery after three 5xx answers, retried, counted.
    let flaky = rx.to("/flaky");
    assert_eq!(flaky.len(), 5, "4 attempts for the MQL, 1 for the win");
    assert_eq!(n.count("retries", &["flaky"]), 3);
    assert_eq!(flaky[3].header("idempotency-key"), Some("f@x.io/t/1"));
    assert_eq!(
        flaky[4].header("idempotency-key"),
        Some("f@x.io/t/2"),
        "then the next, in order"
    );
    // Retry-After: 2 is honoured.
    let limited = rx.to("/limited");
    assert_eq!(limited.len(), 2);
    let gap = limited[1].at - limited[0].at;
    assert!(
        gap >= Duration::from_millis(1_950),
        "waited {gap:?}, not the 2 s asked"
    );
    // A 400 is permanent: one attempt, then the dead-letter topic with reason and target.
    assert_eq!(rx.to("/bad").len(), 1);
    assert_eq!(n.count("failed", &["bad", "rejected"]), 1);
    let dead = broker.read_all(&dlq);
    let h = &dead[0].headers;
    assert_eq!(h.get("lf-target").map(String::as_str), Some("bad"));
    assert_eq!(h.get("lf-error-code").map(String::as_str), Some("rejected"));
    assert!(
        h.get("lf-error").is_some_and(|e| e.contains("HTTP 400")),
        "{h:?}"
    );
    assert_eq!(h.get("lf-source-topic"), Some(&broker.topics.transitions));
    let rec = leadflow::codec::avro::decode_output(true, &dead[0].value).expect("the record");
    assert_eq!(leadflow::notify::route::record_id(&rec), "s@x.io/t/1");
    n.stop().expect("stops cleanly");
}

#[test]
fn a_slow_target_does_not_hold_the_others() {
    let broker = TestBroker::start("notify-slow", 1);
    let dir = tempfile::tempdir().expect("tempdir");
    // The slow receiver answers after 2 s; the fast one at once.
    let rx = Receiver::start(|path, _| Answer {
        status: 200,
        headers: Vec::new(),
        delay: if path == "/slow" {
            Duration::from_secs(2)
        } else {
            Duration::ZERO
        },
    });
    let routes = r#"
[[notify.routes]]
record = "transition"
target = "slow"
[[notify.routes]]
record = "transition"
target = "fast"
"#;
    let cfg = config(
        &broker,
        dir.path(),
        &[
            ("slow", "webhook", rx.url("/slow")),
            ("fast", "webhook", rx.url("/fast")),
        ],
        routes,
    );
    let records: Vec<Output> = (0..200)
        .map(|i| transition(1, &format!("lead{i}@x.io"), Stage::New, Stage::Mql, None))
        .collect();
    produce(&broker, 1, &records);
    let n = Notifier::start(&cfg);
    wait_until(
        Duration::from_secs(30),
        "the fast target has all 200",
        || rx.to("/fast").len() == 200,
    );
    let slow = rx.to("/slow").len();
    assert!(slow < 20, "the slow target got {slow} meanwhile");
    drop(n);
}

/// Transitions of `leads` leads, `per_lead` each (ids `lead/t/1..`), interleaved by lead.
fn journeys(leads: u32, per_lead: u32) -> Vec<Output> {
    let stages = [
        Stage::New,
        Stage::Mql,
        Stage::Sal,
        Stage::Sql,
        Stage::Won,
        Stage::Lost,
    ];
    let mut out = Vec::new();
    for n in 1..=per_lead {
        for l in 0..leads {
            let from = stages[((n - 1) as usize) % 5];
            let to = stages[(n as usize) % 6];
            out.push(transition(n, &format!("lead{l}@x.io"), from, to, None));
        }
    }
    out
}

/// For each lead, the `n` of its ids in order of first arrival must increase.
fn assert_in_order_per_lead(keys: &[String]) {
    let mut last: std::collections::HashMap<&str, u32> = std::collections::HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for k in keys {
        if !seen.insert(k.as_str()) {
            continue; // a redelivery
        }
        let (lead, n) = k.rsplit_once("/t/").expect("a transition id");
        let n: u32 = n.parse().expect("n");
        if let Some(prev) = last.insert(lead, n) {
            assert!(n > prev, "{lead}: {n} arrived after {prev}");
        }
    }
}

#[test]
fn a_killed_notifier_redelivers_and_the_idempotency_key_makes_it_exactly_once() {
    let broker = TestBroker::start("notify-kill", 2);
    let dir = tempfile::tempdir().expect("tempdir");
    let rx = Receiver::start(|_, _| Answer::ok());
    let cfg = config(
        &broker,
        dir.path(),
        &[("hook", "webhook", rx.url("/hook"))],
        "[[notify.routes]]\nrecord = \"transition\"\ntarget = \"hook\"\n",
    )
    // Slow enough that the kill lands mid-stream: 300 messages a second.
    .replace("rate = 200", "rate = 300");
    let path = dir.path().join("notify.toml");
    std::fs::write(&path, &cfg).expect("config");
    let log = dir.path().join("notify.log");
    let records = journeys(400, 5);
    produce(&broker, 2, &records);
    let mut child = common::child::spawn_notify(&path, &log);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while rx.requests().len() < records.len() / 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} delivered before the kill:\n{}",
            rx.requests().len(),
            common::child::tail(&log)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.0.kill().expect("SIGKILL");
    let _ = child.0.wait();
    let at_kill = rx.requests().len();
    let child = common::child::spawn_notify(&path, &log);
    let keys = || -> Vec<String> {
        rx.requests()
            .iter()
            .filter_map(|r| r.header("idempotency-key").map(str::to_string))
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let distinct = keys()
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len();
        if distinct == records.len() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{distinct} of {} records delivered after the restart:\n{}",
            records.len(),
            common::child::tail(&log)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let all = keys();
    let distinct: std::collections::HashSet<&String> = all.iter().collect();
    assert_eq!(distinct.len(), records.len(), "every record at least once");
    eprintln!(
        "killed after {at_kill} deliveries; {} requests for {} records ({} redelivered, the same \
         idempotency key)",
        all.len(),
        records.len(),
        all.len() - records.len()
    );
    assert_in_order_per_lead(&all);
    child.signal("TERM");
    let mut child = child;
    assert!(
        child.0.wait().expect("reaped").success(),
        "{}",
        common::child::tail(&log)
    );
}

#[test]
fn a_receiver_down_for_a_minute_gets_the_backlog_after_in_order() {
    let broker = TestBroker::start("notify-down", 2);
    let dir = tempfile::tempdir().expect("tempdir");
    // A port where nothing listens yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let cfg = config(
        &broker,
        dir.path(),
        &[("hook", "webhook", url)],
        "[[notify.routes]]\nrecord = \"transition\"\ntarget = \"hook\"\n",
    );
    let records = journeys(20, 5);
    produce(&broker, 2, &records);
    let down_since = std::time::Instant::now();
    let n = Notifier::start(&cfg);
    wait_until(
        Duration::from_secs(30),
        "deliveries fail and are retried",
        || n.count("retries", &["hook"]) > 0,
    );
    // The scenario: the receiver stays down for a minute.
    std::thread::sleep(Duration::from_secs(60).saturating_sub(down_since.elapsed()));
    let rx = Receiver::start_on(&format!("127.0.0.1:{port}"), |_, _| Answer::ok());
    wait_until(Duration::from_secs(120), "the backlog delivered", || {
        n.count("delivered", &["hook"]) == records.len() as u64
    });
    let keys: Vec<String> = rx
        .requests()
        .iter()
        .filter_map(|r| r.header("idempotency-key").map(str::to_string))
        .collect();
    assert_eq!(keys.len(), records.len(), "each once: nothing restarted");
    assert_in_order_per_lead(&keys);
    assert_eq!(n.count("failed", &["hook", "gave_up"]), 0);
    n.stop().expect("stops cleanly");
}

#[test]
fn a_missing_dead_letter_topic_stops_the_start_naming_it() {
    let broker = TestBroker::start("notify-nodlq", 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let rx = Receiver::start(|_, _| Answer::ok());
    let cfg = config(
        &broker,
        dir.path(),
        &[("hook", "webhook", rx.url("/hook"))],
        "[[notify.routes]]\nrecord = \"transition\"\ntarget = \"hook\"\n",
    )
    .replace(
        &format!("dlq = \"{}.notify.dlq\"", broker.prefix),
        "dlq = \"no.such.notify.dlq\"",
    );
    let err = Notifier::start(&cfg).stop().expect_err("refused");
    let text = format!("{err:#}");
    assert!(
        text.contains("no.such.notify.dlq") && text.contains("does not exist"),
        "{text}"
    );
}
