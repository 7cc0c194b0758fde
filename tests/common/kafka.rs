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

impl TestBroker {
    /// Every topic with `partitions` partitions.
    pub fn start(name: &str, partitions: i32) -> TestBroker {
        let prefix = unique_prefix(name);
        let topics = Topics {
            web: format!("{prefix}.web"),
            email: format!("{prefix}.email"),
            crm: format!("{prefix}.crm"),
            internal: format!("{prefix}.events"),
            transitions: format!("{prefix}.transitions"),
            sla: format!("{prefix}.sla"),
            dlq: format!("{prefix}.dlq"),
        };
        match std::env::var("LEADFLOW_TEST_BROKERS") {
            Ok(brokers) if !brokers.trim().is_empty() => {
                let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
                    .set("bootstrap.servers", &brokers)
                    .create()
                    .expect("admin client");
                let new: Vec<NewTopic> = topics
                    .all()
                    .iter()
                    .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
                    .collect();
                let results =
                    futures_executor::block_on(admin.create_topics(&new, &AdminOptions::new()))
                        .expect("create topics on the external broker");
                for r in results {
                    r.expect("topic created");
                }
                TestBroker {
                    _mock: None,
                    bootstrap: brokers,
                    topics,
                    prefix,
                }
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

    /// Reads every record of every partition of `topic`, up to the high watermark at call time.
    pub fn read_all(&self, topic: &str) -> Vec<Record> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", format!("{}-reader", self.prefix))
            .set("enable.auto.commit", "false")
            .create()
            .expect("reader");
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        let partitions = md.topics()[0].partitions().len() as i32;
        let mut out = Vec::new();
        for p in 0..partitions {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks");
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
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                    let headers = m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|x| {
                                    (
                                        x.key.to_string(),
                                        String::from_utf8_lossy(x.value.unwrap_or(&[]))
                                            .into_owned(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    out.push(Record {
                        partition: p,
                        offset: m.offset(),
                        key: m.key().map(|k| k.to_vec()),
                        value: m.payload().unwrap_or(&[]).to_vec(),
                        headers,
                    });
                    next = m.offset() + 1;
                }
            }
        }
        out
    }

    /// Records in `topic` right now (sum of high - low watermarks).
    pub fn count(&self, topic: &str) -> i64 {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .expect("counter");
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        (0..md.topics()[0].partitions().len() as i32)
            .map(|p| {
                let (l, h) = consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(10))
                    .expect("watermarks");
                h - l
            })
            .sum()
    }
}

#[derive(Clone, Debug)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: BTreeMap<String, String>,
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
