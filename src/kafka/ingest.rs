//! Ingest stage: source topics -> validated, normalized events on the internal topic
//! (partition = murmur2(lead_key) mod N), invalid input -> the dead-letter topic. At least
//! once: source offsets are committed only after everything produced from them is acked.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::BaseRecord;
use rdkafka::ClientContext;
use rdkafka::{Offset, TopicPartitionList};

use super::admin::Layout;
use super::producer::{self, LfProducer};
use super::{
    H_ERROR, H_ERROR_CODE, H_ORIGINAL_SIZE, H_SOURCE_OFFSET, H_SOURCE_PARTITION, H_SOURCE_TOPIC,
    H_TRUNCATED,
};
use crate::codec::avro::{self, Framing};
use crate::codec::json;
use crate::codec::registry::SchemaRegistry;
use crate::config::{InputFormat, Service};
use crate::model::event::{Event, Invalid, Source};
use crate::model::rules::Limits;
use crate::partition::partition_for;

/// Counters of the ingest stage (read by metrics).
#[derive(Default, Debug)]
pub struct IngestStats {
    pub consumed: AtomicU64,
    pub forwarded: AtomicU64,
    pub invalid: AtomicU64,
}

/// Reports the ingest consumer's lag from librdkafka's statistics.
struct IngestContext {
    metrics: Arc<crate::metrics::Metrics>,
    topics: Vec<String>,
}

impl ClientContext for IngestContext {
    fn stats(&self, stats: rdkafka::Statistics) {
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        self.metrics
            .consumer_lag
            .with_label_values(&["ingest"])
            .set(super::lag_from_stats(&stats, &topics));
    }
}

impl ConsumerContext for IngestContext {}

/// Decodes one input message of `source` in `format`.
/// How much of an oversized message the dead-letter record keeps.
pub const DLQ_SAMPLE_BYTES: usize = 64 * 1024;

pub fn decode(source: Source, format: InputFormat, bytes: &[u8]) -> Result<Event, Invalid> {
    match format {
        InputFormat::Avro => avro::decode_input(source, bytes, Framing::Plain),
        InputFormat::AvroConfluent => avro::decode_input(source, bytes, Framing::Confluent),
        InputFormat::Json => json::decode_event_from(source, bytes),
    }
}

pub fn run(
    svc: &Service,
    layout: &Layout,
    limits: &Limits,
    stop: &AtomicBool,
    service_stats: &crate::service::ServiceStats,
) -> anyhow::Result<()> {
    avro::bound_generic_allocations(limits.max_message_bytes);
    let stats: &IngestStats = &service_stats.ingest;
    let metrics = &service_stats.metrics;
    let t = &svc.topics;
    let context = IngestContext {
        metrics: Arc::clone(metrics),
        topics: vec![t.web.clone(), t.email.clone(), t.crm.clone()],
    };
    let consumer: BaseConsumer<IngestContext> = super::client_config(svc)
        .set("group.id", &svc.ingest_group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("statistics.interval.ms", "1000")
        .create_with_context(context)
        .context("creating the ingest consumer")?;
    consumer
        .subscribe(&[&t.web, &t.email, &t.crm])
        .context("subscribing to the source topics")?;
    let (producer, deliveries) =
        producer::idempotent(svc, 5, Some(metrics.producer_errors.clone()))?;
    let sources: HashMap<&str, Source> = Source::ALL.iter().map(|s| (t.input(*s), *s)).collect();
    let registry = svc.schema_registry_url.as_deref().map(|url| {
        SchemaRegistry::new(
            url,
            Duration::from_millis(svc.schema_registry_timeout_ms as u64),
        )
    });
    let flush_timeout = Duration::from_millis(svc.drain_timeout_ms as u64);
    tracing::info!(topics = ?[&t.web, &t.email, &t.crm], group = %svc.ingest_group, "ingest started");

    while !stop.load(Ordering::Relaxed) {
        let mut next: HashMap<(String, i32), i64> = HashMap::new();
        let started = Instant::now();
        let mut n = 0;
        while n < svc.batch_size {
            let wait = Duration::from_millis(50).saturating_sub(started.elapsed());
            match consumer.poll(if n == 0 {
                Duration::from_millis(100)
            } else {
                wait
            }) {
                Some(Ok(m)) => {
                    let Some(&source) = sources.get(m.topic()) else {
                        continue;
                    };
                    forward(
                        svc,
                        layout,
                        limits,
                        &producer,
                        registry.as_ref(),
                        source,
                        &m,
                        stats,
                        metrics,
                    )?;
                    next.insert((m.topic().to_string(), m.partition()), m.offset() + 1);
                    n += 1;
                }
                Some(Err(e)) => tracing::warn!(error = %e, "ingest consumer error"),
                None => break,
            }
        }
        if next.is_empty() {
            continue;
        }
        producer::flush(&producer, &deliveries, flush_timeout)?;
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in &next {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))
                .context("building the commit list")?;
        }
        // A failed commit (e.g. during a rebalance) is not fatal: whoever owns the partition
        // next re-reads from the last commit, and the per-lead id check drops the repeats.
        if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
            tracing::warn!(error = %e, "committing source offsets failed; they will be re-read");
        }
    }
    tracing::info!("ingest stopped");
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn forward<M: Message>(
    svc: &Service,
    layout: &Layout,
    limits: &Limits,
    producer: &LfProducer,
    registry: Option<&SchemaRegistry>,
    source: Source,
    m: &M,
    stats: &IngestStats,
    metrics: &crate::metrics::Metrics,
) -> anyhow::Result<()> {
    stats.consumed.fetch_add(1, Ordering::Relaxed);
    let bytes = m.payload().unwrap_or(&[]);
    let format = svc.input_formats[source.index()];
    let decoded = match (format, registry) {
        // Checked before decoding: an oversized message is never parsed.
        _ if bytes.len() > limits.max_message_bytes => {
            Err(Invalid::TooLarge(bytes.len(), limits.max_message_bytes))
        }
        // An unreachable registry is not bad input: fail the stage (nothing is committed, the
        // restart re-reads) instead of dead-lettering everything.
        (InputFormat::AvroConfluent, Some(reg)) => reg
            .decode(source, bytes)
            .context("decoding with the schema registry")?,
        _ => decode(source, format, bytes),
    }
    .and_then(|ev| ev.check_limits(limits).map(|()| ev));
    let encoded = match decoded {
        Ok(ev) => {
            let value = avro::encode_internal_event(&ev)?;
            // Every record must fit what the producer and the topic accept, or the send fails
            // for good and the stage with it: such an event is a dead letter instead.
            let size = value.len() + ev.lead_key.len();
            if size > layout.record_limits.internal {
                Err(Invalid::EncodedTooLarge(
                    size,
                    layout.record_limits.internal,
                ))
            } else {
                Ok((ev, value))
            }
        }
        Err(why) => Err(why),
    };
    match encoded {
        Ok((ev, value)) => {
            metrics
                .events
                .with_label_values(&[
                    source.as_str(),
                    crate::metrics::type_label(source, &ev.event_type),
                ])
                .inc();
            let partition =
                partition_for(ev.lead_key.as_bytes(), layout.internal_partitions as u32) as i32;
            producer::send(
                producer,
                BaseRecord::to(&svc.topics.internal)
                    .partition(partition)
                    .key(ev.lead_key.as_bytes())
                    .payload(&value[..]),
            )?;
            stats.forwarded.fetch_add(1, Ordering::Relaxed);
        }
        Err(why) => dead_letter(svc, layout, producer, m, bytes, &why, stats, metrics)?,
    }
    Ok(())
}

/// Writes `m` to the dead-letter topic with its reason and origin. The value is cut to what
/// the topic accepts (and an oversized input to its first 64 KiB); `lf-original-size` keeps
/// the full size and `lf-truncated` says that it was cut.
#[allow(clippy::too_many_arguments)]
fn dead_letter<M: Message>(
    svc: &Service,
    layout: &Layout,
    producer: &LfProducer,
    m: &M,
    bytes: &[u8],
    why: &Invalid,
    stats: &IngestStats,
    metrics: &crate::metrics::Metrics,
) -> anyhow::Result<()> {
    stats.invalid.fetch_add(1, Ordering::Relaxed);
    metrics.invalid.with_label_values(&[why.code()]).inc();
    let mut reason = why.to_string();
    let partition = m.partition().to_string();
    let offset = m.offset().to_string();
    let size = bytes.len().to_string();
    let key = m.key().unwrap_or_default();
    // The headers are bounded but for the reason and the source topic name: keep them short.
    if reason.len() > 4096 {
        let mut cut = 4096;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
    }
    let fixed: [(&str, &[u8]); 6] = [
        (H_ERROR, reason.as_bytes()),
        (H_ERROR_CODE, why.code().as_bytes()),
        (H_SOURCE_TOPIC, m.topic().as_bytes()),
        (H_SOURCE_PARTITION, partition.as_bytes()),
        (H_SOURCE_OFFSET, offset.as_bytes()),
        (H_ORIGINAL_SIZE, size.as_bytes()),
    ];
    let header_bytes: usize =
        fixed.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() + H_TRUNCATED.len() + 4;
    let room = layout
        .record_limits
        .dlq
        .saturating_sub(key.len() + header_bytes);
    let keep = match why {
        Invalid::TooLarge(..) => bytes.len().min(DLQ_SAMPLE_BYTES),
        _ => bytes.len(),
    }
    .min(room);
    let mut headers = OwnedHeaders::new();
    for (k, v) in fixed {
        headers = headers.insert(Header {
            key: k,
            value: Some(v),
        });
    }
    if keep < bytes.len() {
        headers = headers.insert(Header {
            key: H_TRUNCATED,
            value: Some(b"true".as_slice()),
        });
    }
    let mut rec = BaseRecord::to(&svc.topics.dlq)
        .payload(&bytes[..keep])
        .headers(headers);
    if let Some(k) = m.key() {
        rec = rec.key(k);
    }
    producer::send(producer, rec)?;
    tracing::debug!(topic = m.topic(), partition = m.partition(), offset = m.offset(), %reason, "dead-lettered");
    Ok(())
}
