//! Startup checks: the brokers answer, every topic exists, and the output topics have the
//! internal topic's partition count.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::config::{Service, Transactions};

#[derive(Clone, Debug)]
pub struct Layout {
    pub internal_partitions: i32,
    /// The state stage writes its outputs in transactions (`kafka.transactions`, resolved).
    pub transactions: bool,
    /// The largest records the topics ingest writes accept.
    pub record_limits: RecordLimits,
    /// The internal topic stamps records with the broker's clock (`message.timestamp.type =
    /// LogAppendTime`): the state stage measures this host's clock skew from its ticks and
    /// keeps ticks from running ahead of the broker (docs/kafka.md).
    pub log_append_time: bool,
}

/// The largest record (key, value and headers, in bytes) a topic leadflow writes accepts: the
/// smaller of the producer's `message.max.bytes` and the topic's `max.message.bytes`, less
/// [`FRAMING_BYTES`] for the record's framing in its batch.
#[derive(Clone, Copy, Debug)]
pub struct RecordLimits {
    pub internal: usize,
    pub dlq: usize,
}

/// Room left for a record's framing (batch header, varints, attributes).
pub const FRAMING_BYTES: usize = 1024;

/// Reads the topics' `max.message.bytes` and the internal topic's `message.timestamp.type`
/// (one DescribeConfigs); a broker that does not answer it (librdkafka's mock) leaves the
/// producer's limit and no timestamp type.
///
/// Errors: `limits.max_message_bytes` above the internal topic's `max.message.bytes` (a
/// valid message could not be forwarded).
pub fn describe_topics(
    svc: &Service,
    max_message_bytes: usize,
) -> anyhow::Result<(RecordLimits, Option<String>)> {
    let producer_max = crate::config::producer_max_bytes(svc)?;
    let admin: AdminClient<DefaultClientContext> = super::client_config(svc)
        .create()
        .context("creating the admin client")?;
    let topics = [svc.topics.internal.as_str(), svc.topics.dlq.as_str()];
    let specs: Vec<ResourceSpecifier> =
        topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let described = futures_executor::block_on(admin.describe_configs(&specs, &options));
    let topic_max = |i: usize| -> Option<usize> {
        let results = described.as_ref().ok()?;
        let resource = results.get(i)?.as_ref().ok()?;
        resource
            .get("max.message.bytes")?
            .value
            .as_ref()?
            .parse()
            .ok()
    };
    if described.is_err() {
        tracing::warn!(
            "the brokers did not describe the topics' max.message.bytes; using the producer's \
             message.max.bytes ({producer_max}) alone"
        );
    }
    if let Some(topic) = topic_max(0).filter(|t| *t < max_message_bytes) {
        anyhow::bail!(
            "limits.max_message_bytes = {max_message_bytes} is above max.message.bytes = {topic} \
             of the internal topic {}: leadflow could not forward a message it accepts; lower \
             limits.max_message_bytes or raise the topic's max.message.bytes",
            svc.topics.internal
        );
    }
    let limit = |i: usize| {
        topic_max(i)
            .map_or(producer_max, |t| t.min(producer_max))
            .saturating_sub(FRAMING_BYTES)
    };
    let timestamp_type = (|| {
        let resource = described.as_ref().ok()?.first()?.as_ref().ok()?;
        resource.get("message.timestamp.type")?.value.clone()
    })();
    Ok((
        RecordLimits {
            internal: limit(0),
            dlq: limit(1),
        },
        timestamp_type,
    ))
}

/// Topic name -> partition count, retrying until the brokers answer or the timeout passes.
pub fn topic_partitions(svc: &Service) -> anyhow::Result<BTreeMap<String, i32>> {
    let consumer: BaseConsumer = super::client_config(svc)
        .create()
        .context("creating the metadata client")?;
    let deadline = Instant::now() + Duration::from_millis(svc.connect_timeout_ms as u64);
    loop {
        match consumer.fetch_metadata(None, Duration::from_secs(5)) {
            Ok(md) => {
                return Ok(md
                    .topics()
                    .iter()
                    .filter(|t| t.error().is_none())
                    .map(|t| (t.name().to_string(), t.partitions().len() as i32))
                    .collect())
            }
            Err(e) if Instant::now() >= deadline => anyhow::bail!(
                "cannot reach the Kafka brokers at {} within {}s: {e}",
                svc.brokers,
                svc.connect_timeout_ms / 1000
            ),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// Checks the topic layout and returns the internal partition count.
pub fn check(svc: &Service, limits: &crate::model::rules::Limits) -> anyhow::Result<Layout> {
    let found = topic_partitions(svc)?;
    let t = &svc.topics;
    let missing: Vec<&str> = t
        .all()
        .into_iter()
        .filter(|name| !found.contains_key(*name))
        .collect();
    if !missing.is_empty() {
        anyhow::bail!(
            "missing Kafka topics: {} (create them first; leadflow does not create topics. \
             {} and {} need as many partitions as {})",
            missing.join(", "),
            t.transitions,
            t.sla,
            t.internal
        );
    }
    let internal = found[&t.internal];
    for out in [&t.transitions, &t.sla] {
        if found[out] != internal {
            anyhow::bail!(
                "topic {out} has {} partitions but the internal topic {} has {internal}: \
                 output topics need the internal topic's partition count",
                found[out],
                t.internal
            );
        }
    }
    let (record_limits, timestamp_type) = describe_topics(svc, limits.max_message_bytes)?;
    Ok(Layout {
        internal_partitions: internal,
        transactions: transactions(svc)?,
        record_limits,
        log_append_time: timestamp_type.as_deref() == Some("LogAppendTime"),
    })
}

/// Resolves `kafka.transactions`: `auto` means on, except on librdkafka's mock cluster
/// (recognised by its cluster id), which accepts transactional requests but neither aborts
/// records nor hides them from `read_committed` readers.
///
/// Errors: `on` with the mock cluster (it would only pretend to fence).
pub fn transactions(svc: &Service) -> anyhow::Result<bool> {
    if svc.transactions == Transactions::Off {
        return Ok(false);
    }
    let client: BaseConsumer = super::client_config(svc)
        .create()
        .context("creating the metadata client")?;
    let mock = client
        .client()
        .fetch_cluster_id(Duration::from_secs(10))
        .is_some_and(|id| id.starts_with(MOCK_CLUSTER_ID_PREFIX));
    match (svc.transactions, mock) {
        (Transactions::On, true) => anyhow::bail!(
            "kafka.transactions = \"on\", but the brokers at {} are librdkafka's mock cluster, \
             which does not implement transactions: use \"auto\" or \"off\"",
            svc.brokers
        ),
        (_, mock) => Ok(!mock),
    }
}

/// The cluster id librdkafka's mock cluster reports (`mockCluster` and a number).
pub const MOCK_CLUSTER_ID_PREFIX: &str = "mockCluster";
