//! A Kafka-protocol broker for tests: librdkafka's mock cluster in process by default, or the
//! external cluster named by LEADFLOW_TEST_BROKERS. Each test gets its own topic names and
//! consumer groups, so tests never see each other's data.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use leadflow::config::Topics;
use leadflow::kafka::dev::DevBroker;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

pub struct TestBroker {
    /// Keeps the in-process mock alive for the test's lifetime.
    _mock: Option<DevBroker>,
    pub bootstrap: String,
    pub topics: Topics,
    pub prefix: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique_prefix(name: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("t{}-{n}-{nanos}-{name}", std::process::id())
}

fn topics_for(prefix: &str) -> Topics {
    Topics {
        web: format!("{prefix}.web"),
        email: format!("{prefix}.email"),
        crm: format!("{prefix}.crm"),
        internal: format!("{prefix}.events"),
        transitions: format!("{prefix}.transitions"),
        sla: format!("{prefix}.sla"),
        dlq: format!("{prefix}.dlq"),
    }
}

impl TestBroker {
    /// Every topic with `partitions` partitions.
    pub fn start(name: &str, partitions: i32) -> TestBroker {
        let prefix = unique_prefix(name);
        let topics = topics_for(&prefix);
        match std::env::var("LEADFLOW_TEST_BROKERS") {
            Ok(brokers) if !brokers.trim().is_empty() => {
                TestBroker::external(&brokers, prefix, topics, partitions)
            }
            _ => {
                let mock = DevBroker::start(&topics, partitions, None).expect("mock cluster");
                TestBroker {
                    bootstrap: mock.bootstrap().to_string(),
                    _mock: Some(mock),
                    topics,
                    prefix,
                }
            }
        }
    }

    /// Every topic with `partitions` partitions, on the cluster at `brokers`.
    pub fn on(brokers: &str, name: &str, partitions: i32) -> TestBroker {
        let prefix = unique_prefix(name);
        let topics = topics_for(&prefix);
        TestBroker::external(brokers, prefix, topics, partitions)
    }

    fn external(brokers: &str, prefix: String, topics: Topics, partitions: i32) -> TestBroker {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()
            .expect("admin client");
        // The internal topic as docs/operations.md creates it: broker timestamps, so the
        // state stage measures the clock skew (the probe tick path runs in every test).
        let new: Vec<NewTopic> = topics
            .all()
            .iter()
            .map(|t| {
                let topic = NewTopic::new(t, partitions, TopicReplication::Fixed(1));
                if *t == topics.internal {
                    topic.set("message.timestamp.type", "LogAppendTime")
                } else {
                    topic
                }
            })
            .collect();
        let results = futures_executor::block_on(admin.create_topics(&new, &AdminOptions::new()))
            .expect("create topics on the external broker");
        for r in results {
            r.expect("topic created");
        }
        for t in topics.all() {
            wait_for_leaders(brokers, t, partitions);
        }
        TestBroker {
            _mock: None,
            bootstrap: brokers.to_string(),
            topics,
            prefix,
        }
    }

    /// The in-process mock, when the tests are not running against an external broker.
    pub fn mock(&self) -> Option<&DevBroker> {
        self._mock.as_ref()
    }

    fn admin(&self) -> AdminClient<DefaultClientContext> {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .expect("admin client")
    }

    /// Deletes every topic of this test and creates them again, empty (external brokers).
    pub fn recreate_topics(&self, partitions: i32) {
        let admin = self.admin();
        let names = self.topics.all();
        for r in futures_executor::block_on(admin.delete_topics(&names, &AdminOptions::new()))
            .expect("delete topics")
        {
            r.expect("topic deleted");
        }
        // Deletion completes in the background: retry the creation until it is done.
        let new: Vec<NewTopic> = names
            .iter()
            .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
            .collect();
        wait_until(Duration::from_secs(60), "topics created again", || {
            futures_executor::block_on(admin.create_topics(&new, &AdminOptions::new()))
                .is_ok_and(|rs| rs.iter().all(|r| r.is_ok()))
        });
        for t in &names {
            wait_for_leaders(&self.bootstrap, t, partitions);
        }
    }

    /// Deletes the records of `topic`/`partition` before `offset` (DeleteRecords).
    pub fn delete_records(&self, topic: &str, partition: i32, offset: i64) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
            .expect("tpl");
        let done =
            futures_executor::block_on(self.admin().delete_records(&tpl, &AdminOptions::new()))
                .expect("delete records");
        for e in done.elements() {
            assert!(e.error().is_ok(), "delete records: {:?}", e.error());
        }
    }

    /// Sets topic configs (IncrementalAlterConfigs is not in rust-rdkafka; AlterConfigs with
    /// the given entries). `Err` on librdkafka's mock, which does not implement it.
    pub fn set_topic_config(&self, topic: &str, entries: &[(&str, &str)]) -> Result<(), String> {
        use rdkafka::admin::{AlterConfig, ResourceSpecifier};
        let mut change = AlterConfig::new(ResourceSpecifier::Topic(topic));
        for (k, v) in entries {
            change = change.set(k, v);
        }
        let results = futures_executor::block_on(self.admin().alter_configs(
            &[change],
            &AdminOptions::new().request_timeout(Some(Duration::from_secs(10))),
        ))
        .map_err(|e| e.to_string())?;
        for r in results {
            r.map_err(|(_, e)| e.to_string())?;
        }
        Ok(())
    }

    /// Creates one more topic on this broker.
    pub fn create_topic(&self, name: &str, partitions: i32) {
        match &self._mock {
            Some(mock) => mock.create_topic(name, partitions).expect("create topic"),
            None => {
                let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
                    .set("bootstrap.servers", &self.bootstrap)
                    .create()
                    .expect("admin client");
                let new = [NewTopic::new(name, partitions, TopicReplication::Fixed(1))];
                for r in futures_executor::block_on(admin.create_topics(&new, &AdminOptions::new()))
                    .expect("create topic")
                {
                    r.expect("topic created");
                }
                wait_for_leaders(&self.bootstrap, name, partitions);
            }
        }
    }

    /// A service config: the example scoring plus this broker, topics, groups and `extra`.
    pub fn config(&self, snapshot_dir: &Path, extra: &str) -> String {
        let example = std::fs::read_to_string(super::examples_dir().join("config.toml"))
            .expect("example config");
        let t = &self.topics;
        format!(
            r#"{example}
[kafka]
brokers = "{b}"
ingest_group = "{p}-ingest"
state_group = "{p}-state"
connect_timeout = "20s"

[kafka.properties]
# A killed member leaves the group after 6 s instead of 45 s.
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"

[topics]
web = "{web}"
email = "{email}"
crm = "{crm}"
internal = "{internal}"
transitions = "{transitions}"
sla = "{sla}"
dlq = "{dlq}"

[snapshots]
dir = "{dir}"
interval = "500ms"
{extra}
"#,
            b = self.bootstrap,
            p = self.prefix,
            web = t.web,
            email = t.email,
            crm = t.crm,
            internal = t.internal,
            transitions = t.transitions,
            sla = t.sla,
            dlq = t.dlq,
            dir = snapshot_dir.display(),
        )
    }

    pub fn producer(&self) -> BaseProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()
            .expect("test producer")
    }

    /// Reads every committed record of every partition of `topic` (read_committed: aborted
    /// transactions and transaction markers are skipped), up to the last stable offset at call
    /// time.
    pub fn read_all(&self, topic: &str) -> Vec<Record> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", format!("{}-reader", self.prefix))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed")
            .create()
            .expect("reader");
        let partitions = partition_count(&consumer, topic);
        let mut out = Vec::new();
        for p in 0..partitions {
            // For a read_committed client the high watermark is the last stable offset.
            let (low, high) = retry("watermarks", || {
                consumer.fetch_watermarks(topic, p, Duration::from_secs(10))
            });
            if high <= low {
                continue;
            }
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, p, Offset::Offset(low))
                .expect("tpl");
            consumer.assign(&tpl).expect("assign");
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut next = low;
            while next < high {
                assert!(
                    Instant::now() < deadline,
                    "reading {topic}/{p} timed out at {next}/{high}"
                );
                match consumer.poll(Duration::from_millis(200)) {
                    Some(Ok(m)) if m.offset() < high => {
                        out.push(Record::from_message(p, &m));
                        next = m.offset() + 1;
                    }
                    Some(Ok(_)) => break,
                    // The rest up to `high` are markers or aborted records.
                    Some(Err(rdkafka::error::KafkaError::PartitionEOF(q))) if q == p => break,
                    _ => {}
                }
            }
        }
        out
    }

    /// Whether a transaction is open on some partition of `topic`: its last stable offset
    /// (the high watermark a read_committed client sees) is below its high watermark.
    pub fn open_transaction(&self, topic: &str) -> bool {
        let client = |isolation: &str| -> BaseConsumer {
            ClientConfig::new()
                .set("bootstrap.servers", &self.bootstrap)
                .set("isolation.level", isolation)
                .create()
                .expect("watermark client")
        };
        let (committed, uncommitted) = (client("read_committed"), client("read_uncommitted"));
        (0..partition_count(&committed, topic)).any(|p| {
            let high = |c: &BaseConsumer| {
                retry("watermarks", || {
                    c.fetch_watermarks(topic, p, Duration::from_secs(10))
                })
                .1
            };
            high(&committed) < high(&uncommitted)
        })
    }

    /// Committed records in `topic` (see [`TestBroker::read_all`]).
    pub fn records(&self, topic: &str) -> usize {
        self.read_all(topic).len()
    }

    /// Offsets in use in `topic` right now (sum of high - low watermarks): records, and with
    /// transactions also their markers and aborted records. For progress, not for counting.
    pub fn count(&self, topic: &str) -> i64 {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .expect("counter");
        (0..partition_count(&consumer, topic))
            .map(|p| {
                let (l, h) = retry("watermarks", || {
                    consumer.fetch_watermarks(topic, p, Duration::from_secs(10))
                });
                h - l
            })
            .sum()
    }
}

/// (low, high) watermarks of `topic`/`partition`.
pub fn watermarks(broker: &TestBroker, topic: &str, partition: i32) -> (i64, i64) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .create()
        .expect("client");
    retry("watermarks", || {
        c.fetch_watermarks(topic, partition, Duration::from_secs(10))
    })
}

#[derive(Clone, Debug)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    /// The record has no value at all (a tombstone), not an empty one.
    pub value_null: bool,
    pub headers: BTreeMap<String, String>,
}

impl Record {
    fn from_message<M: Message>(partition: i32, m: &M) -> Record {
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|x| {
                        (
                            x.key.to_string(),
                            String::from_utf8_lossy(x.value.unwrap_or(&[])).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Record {
            partition,
            offset: m.offset(),
            key: m.key().map(|k| k.to_vec()),
            value: m.payload().unwrap_or(&[]).to_vec(),
            value_null: m.payload().is_none(),
            headers,
        }
    }
}

/// Sends one record and waits for its acknowledgement.
pub fn send(producer: &BaseProducer, topic: &str, key: Option<&[u8]>, value: &[u8]) {
    let mut rec = BaseRecord::<[u8], [u8]>::to(topic).payload(value);
    if let Some(k) = key {
        rec = rec.key(k);
    }
    producer
        .send(rec)
        .map_err(|(e, _)| e)
        .expect("queue record");
    producer
        .flush(Duration::from_secs(10))
        .expect("record acked");
}

/// Sends one record without a value (a tombstone) and waits for its acknowledgement.
pub fn send_null(producer: &BaseProducer, topic: &str, key: &[u8]) {
    producer
        .send(BaseRecord::<[u8], [u8]>::to(topic).key(key))
        .map_err(|(e, _)| e)
        .expect("queue record");
    producer
        .flush(Duration::from_secs(10))
        .expect("record acked");
}

/// Retries a Kafka request until it succeeds (a broker that just started, a topic whose
/// metadata has not spread yet), failing the test after 30 s.
pub fn retry<T, E: std::fmt::Debug>(what: &str, mut f: impl FnMut() -> Result<T, E>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => panic!("{what}: {e:?}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// The partition count of `topic`, once its metadata is known.
fn partition_count<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
) -> i32 {
    retry("metadata", || {
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        match md.topics().first() {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                Ok(t.partitions().len() as i32)
            }
            other => Err(format!("{topic}: {:?}", other.map(|t| t.error()))),
        }
    })
}

/// Polls `cond` until it holds, failing the test with `what` after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---- running the service and checking its output against a replay of the log ----

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use leadflow::codec::avro::{self, InternalRecord};
use leadflow::config::Settings;
use leadflow::engine::PartitionState;
use leadflow::model::records::Output;
use leadflow::service::{self, ServiceStats};

/// The service running in a thread of the test process.
pub struct Running {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
    pub stats: ServiceStats,
}

impl Running {
    pub fn start(config: &str) -> Running {
        let settings = Settings::from_toml(config).unwrap_or_else(|e| panic!("config: {e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let stats = ServiceStats::new().expect("metrics");
        let (s2, st2) = (Arc::clone(&stop), stats.clone());
        let handle = std::thread::spawn(move || service::run(&settings, s2, st2));
        Running {
            stop,
            handle: Some(handle),
            stats,
        }
    }

    /// Whether the service ended on its own (a stage failed).
    pub fn finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Stops (drain: final snapshot, commit, leave the groups) and returns the outcome.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .map(|h| h.join().expect("service thread"))
            .unwrap_or(Ok(()))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Per partition: (transitions, sla) records.
pub type ByPartition = BTreeMap<i32, (Vec<Output>, Vec<Output>)>;

/// What `leadflow replay` of the internal log gives, partition by partition.
pub fn replay_log(settings: &Settings, log: &[Record]) -> ByPartition {
    let mut states: BTreeMap<i32, PartitionState> = BTreeMap::new();
    let mut out: ByPartition = BTreeMap::new();
    let mut buf = Vec::new();
    for r in log {
        let st = states
            .entry(r.partition)
            .or_insert_with(|| PartitionState::new(Arc::clone(&settings.rules)));
        match avro::decode_internal(&r.value).expect("internal record") {
            InternalRecord::Event(e) => {
                st.apply(&e, &mut buf);
            }
            InternalRecord::Tick(t) => st.advance(t, &mut buf),
        }
        let slot = out.entry(r.partition).or_default();
        for rec in buf.drain(..) {
            match rec {
                Output::Transition(_) => slot.0.push(rec),
                Output::Sla(_) => slot.1.push(rec),
            }
        }
    }
    out
}

impl TestBroker {
    /// The output topics, decoded, partition by partition.
    pub fn outputs(&self) -> ByPartition {
        let mut out: ByPartition = BTreeMap::new();
        for r in self.read_all(&self.topics.transitions) {
            out.entry(r.partition)
                .or_default()
                .0
                .push(avro::decode_output(true, &r.value).expect("transition"));
        }
        for r in self.read_all(&self.topics.sla) {
            out.entry(r.partition)
                .or_default()
                .1
                .push(avro::decode_output(false, &r.value).expect("sla"));
        }
        out
    }

    /// Event ids in the internal log.
    pub fn internal_event_ids(&self, log: &[Record]) -> std::collections::HashSet<String> {
        log.iter()
            .filter_map(|r| match avro::decode_internal(&r.value) {
                Ok(InternalRecord::Event(e)) => Some(e.event_id.into_string()),
                _ => None,
            })
            .collect()
    }

    /// Waits until all `events` ids are in the internal log and the outputs equal in size
    /// the replay of a log that did not change while it was compared (ticks may still be
    /// appended while timers are due); returns (replay, outputs) of the last comparison.
    pub fn converge(
        &self,
        settings: &Settings,
        events: usize,
        limit: Duration,
    ) -> (ByPartition, ByPartition) {
        let deadline = Instant::now() + limit;
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let before = self.count(&self.topics.internal);
            if before < events as i64 && Instant::now() < deadline {
                continue;
            }
            let internal = self.read_all(&self.topics.internal);
            let complete = self.internal_event_ids(&internal).len() >= events;
            let expected = replay_log(settings, &internal);
            let actual = self.outputs();
            // Nothing appended while the log was read and compared (count includes markers).
            let stable = self.count(&self.topics.internal) == before;
            if (complete && stable && total(&actual) == total(&expected))
                || Instant::now() >= deadline
            {
                assert!(
                    complete,
                    "not every event reached the internal log within {limit:?}"
                );
                return (expected, actual);
            }
        }
    }
}

pub fn total(b: &ByPartition) -> usize {
    b.values().map(|(t, s)| t.len() + s.len()).sum()
}

/// Asserts that the outputs equal the replay, partition by partition, in order.
pub fn assert_same(expected: &ByPartition, actual: &ByPartition) {
    assert_eq!(
        expected.keys().collect::<Vec<_>>(),
        actual.keys().collect::<Vec<_>>(),
        "partitions with output"
    );
    for (p, (want_t, want_s)) in expected {
        let (got_t, got_s) = actual.get(p).cloned().unwrap_or_default();
        assert_eq!(got_t.len(), want_t.len(), "partition {p}: transition count");
        assert_eq!(got_s.len(), want_s.len(), "partition {p}: SLA record count");
        assert!(
            got_t == *want_t,
            "partition {p}: transitions differ from the replay"
        );
        assert!(
            got_s == *want_s,
            "partition {p}: SLA records differ from the replay"
        );
    }
}

/// Waits until the metadata shows every partition of `topic` with a leader. Creation returns
/// before every broker knows a topic: a client started sooner may take it for missing (and
/// keep doing so until its next full metadata refresh, minutes later).
fn wait_for_leaders(brokers: &str, topic: &str, partitions: i32) {
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("metadata client");
    retry("topic metadata", || {
        let md = client
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        let led = md.topics().first().map_or(0, |tm| {
            tm.partitions().iter().filter(|p| p.leader() >= 0).count()
        });
        if led == partitions as usize {
            Ok(())
        } else {
            Err(format!("{topic}: {led} of {partitions} partitions led"))
        }
    });
}
