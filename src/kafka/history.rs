//! Reading the whole internal log for `leadflow report --kafka-config`: every partition from
//! its earliest offset to its end when the read starts, committed records only.

use anyhow::Context;

use crate::analytics::LogBatch;
use crate::config::Settings;

/// Reads every partition of the internal topic from its earliest offset up to its end as of
/// now, in batches of (partition, record).
pub fn read_internal_log(
    settings: &Settings,
    sink: &mut dyn FnMut(LogBatch),
) -> anyhow::Result<()> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Message, Offset, TopicPartitionList};
    use std::time::{Duration, Instant};

    let svc = &settings.service;
    let topic = &svc.topics.internal;
    let consumer: BaseConsumer = super::consumer_config(svc)
        .set("group.id", "leadflow-report")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false")
        .create()
        .context("creating the Kafka consumer for the report")?;
    let timeout = Duration::from_secs(30);
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| format!("reading the metadata of {topic} from {}", svc.brokers))?;
    let parts: Vec<i32> = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    anyhow::ensure!(
        !parts.is_empty(),
        "topic {topic} has no partitions on {} (is it the internal topic of this config?)",
        svc.brokers
    );
    let mut tpl = TopicPartitionList::new();
    let mut ends = std::collections::HashMap::new();
    for &p in &parts {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .with_context(|| format!("reading the offsets of {topic}/{p}"))?;
        if low > 0 {
            tracing::warn!(
                partition = p,
                log_start = low,
                "the internal log no longer starts at 0: the report covers only what is left"
            );
        }
        if high > low {
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .context("assigning a partition")?;
        }
    }
    consumer
        .assign(&tpl)
        .context("assigning the internal topic")?;
    let mut batch = Vec::with_capacity(2048);
    let mut last_progress = Instant::now();
    while !ends.is_empty() {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                last_progress = Instant::now();
                let p = m.partition();
                let rec = crate::codec::avro::decode_internal(m.payload().unwrap_or(&[])).ok();
                batch.push((p as u32, rec));
                if ends.get(&p).is_some_and(|end| m.offset() + 1 >= *end) {
                    ends.remove(&p);
                }
                if batch.len() >= 2048 {
                    sink(std::mem::replace(&mut batch, Vec::with_capacity(2048)));
                }
            }
            Some(Err(e)) => return Err(e).context("reading the internal topic"),
            None => {
                // Transaction markers and aborted records take offsets but never arrive: a
                // partition whose position passed its end is done.
                let pos = consumer.position().context("reading positions")?;
                for el in pos.elements_for_topic(topic) {
                    if let (Offset::Offset(o), Some(end)) = (el.offset(), ends.get(&el.partition()))
                    {
                        if o >= *end {
                            ends.remove(&el.partition());
                        }
                    }
                }
                anyhow::ensure!(
                    last_progress.elapsed() < Duration::from_secs(60),
                    "no records from {topic} for 60 s while partitions {:?} are not read to their end",
                    ends.keys().collect::<Vec<_>>()
                );
            }
        }
    }
    if !batch.is_empty() {
        sink(batch);
    }
    Ok(())
}
