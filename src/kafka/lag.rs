//! Consumer group lag as the brokers see it: for each stage's group, the log end of every
//! partition of its topics minus the group's committed offset (minus the log start where the
//! group has committed nothing). Unlike librdkafka's statistics, which only cover the
//! partitions this instance owns, it stays true while this instance owns none: during a stuck
//! rebalance, a livelock, or when another member holds the partitions and does not consume.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Service;
use crate::metrics::Metrics;

/// How often the lag is read.
pub const INTERVAL: Duration = Duration::from_secs(5);
const TIMEOUT: Duration = Duration::from_secs(5);

/// One stage's group and the topics it consumes.
struct Group {
    stage: &'static str,
    consumer: BaseConsumer<Quiet>,
    topics: Vec<String>,
}

/// The lag reader's client errors are not news: the stages report the brokers' state, and a
/// failed read only marks the lag unknown. Logged at debug.
struct Quiet;

impl rdkafka::ClientContext for Quiet {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        tracing::debug!(?level, fac, log_message, "librdkafka (lag reader)");
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::debug!(%error, reason, "kafka client error (lag reader)");
    }
}

impl rdkafka::consumer::ConsumerContext for Quiet {}

/// Reads both groups' lag every [`INTERVAL`] until `stop`, on its own thread. A failed read
/// marks the stage's lag unknown (`leadflow_consumer_group_lag_known` 0) and keeps the last
/// value.
pub fn spawn(
    svc: &Service,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let t = &svc.topics;
    let group = |stage: &'static str, id: &str, topics: Vec<String>| -> anyhow::Result<Group> {
        // A client with the group's id that never subscribes: it only asks for the group's
        // committed offsets (OffsetFetch), it does not join.
        let consumer: BaseConsumer<Quiet> = super::client_config(svc)
            .set("group.id", id)
            .set("enable.auto.commit", "false")
            .create_with_context(Quiet)
            .context("creating the lag reader")?;
        Ok(Group {
            stage,
            consumer,
            topics,
        })
    };
    let groups = vec![
        group(
            "ingest",
            &svc.ingest_group,
            vec![t.web.clone(), t.email.clone(), t.crm.clone()],
        )?,
        group("state", &svc.state_group, vec![t.internal.clone()])?,
    ];
    std::thread::Builder::new()
        .name("lag".into())
        .spawn(move || {
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if Instant::now() >= next {
                    next = Instant::now() + INTERVAL;
                    for g in &groups {
                        let known = match group_lag(g) {
                            Ok(lag) => {
                                metrics.group_lag.with_label_values(&[g.stage]).set(lag);
                                1
                            }
                            Err(e) => {
                                tracing::debug!(stage = g.stage, error = %format!("{e:#}"), "reading the group's lag failed");
                                0
                            }
                        };
                        metrics
                            .group_lag_known
                            .with_label_values(&[g.stage])
                            .set(known);
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
        .context("starting the lag thread")
}

/// Log end minus committed offset, summed over every partition of the group's topics.
fn group_lag(g: &Group) -> anyhow::Result<i64> {
    let mut tpl = TopicPartitionList::new();
    for topic in &g.topics {
        let md = g
            .consumer
            .fetch_metadata(Some(topic), TIMEOUT)
            .with_context(|| format!("metadata of {topic}"))?;
        for t in md.topics() {
            for p in t.partitions() {
                tpl.add_partition(topic, p.id());
            }
        }
    }
    let committed = g
        .consumer
        .committed_offsets(tpl, TIMEOUT)
        .context("the group's committed offsets")?;
    let mut lag = 0;
    for e in committed.elements() {
        let (low, high) = g
            .consumer
            .fetch_watermarks(e.topic(), e.partition(), TIMEOUT)
            .with_context(|| format!("watermarks of {}/{}", e.topic(), e.partition()))?;
        let from = match e.offset() {
            Offset::Offset(o) => o.max(low),
            _ => low,
        };
        lag += (high - from).max(0);
    }
    Ok(lag)
}
