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
use crate::codec::registry::{SchemaRegistry, Unavailable};
use crate::config::{InputFormat, KeyMismatch, Service};
use crate::health::Health;
use crate::metrics::Metrics;
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

/// What became of one source message.
enum Outcome {
    /// Forwarded or dead-lettered: its offset may be committed.
    Done,
    /// The schema registry could not be asked: the message waits (see [`Holds`]).
    Held(Unavailable),
}

/// Source partitions paused because the schema registry could not be asked: each is rewound
/// to the message that waits and resumed after a backoff. The consumer keeps polling
/// meanwhile, so it never outlasts `max.poll.interval.ms`, never leaves its group, and nothing
/// is read twice.
struct Holds {
    /// (topic, partition) -> (the offset that waits, when to try again).
    held: HashMap<(String, i32), (i64, Instant)>,
    backoff: Duration,
}

/// The first wait after the registry fails; it doubles up to [`MAX_BACKOFF`] while it fails.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Polls are at most this far apart, but for one message's work and a flush.
const BATCH_WINDOW: Duration = Duration::from_millis(50);

impl Holds {
    fn hold<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        topic: &str,
        partition: i32,
        offset: i64,
        why: &Unavailable,
        health: &crate::health::Health,
    ) -> anyhow::Result<()> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition);
        consumer
            .pause(&tpl)
            .context("pausing a partition that waits for the schema registry")?;
        consumer
            .seek(
                topic,
                partition,
                Offset::Offset(offset),
                Duration::from_secs(5),
            )
            .context("rewinding a partition that waits for the schema registry")?;
        let until = Instant::now() + self.backoff;
        tracing::warn!(
            topic,
            partition,
            offset,
            retry_in_ms = self.backoff.as_millis() as u64,
            error = %why,
            "schema registry unavailable; the partition waits (paused, still in the group)"
        );
        self.held
            .insert((topic.to_string(), partition), (offset, until));
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        health.set_problem(
            "schema_registry",
            format!(
                "{} source partition(s) wait for the schema registry: {why}",
                self.held.len()
            ),
        );
        Ok(())
    }

    fn is_held(&self, topic: &str, partition: i32) -> bool {
        !self.held.is_empty() && self.held.contains_key(&(topic.to_string(), partition))
    }

    /// Resumes the partitions whose wait is over, at the message that waits.
    fn resume_due<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        health: &crate::health::Health,
    ) {
        let now = Instant::now();
        let due: Vec<(String, i32)> = self
            .held
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            let Some((offset, _)) = self.held.remove(&key) else {
                continue;
            };
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&key.0, key.1);
            // Either may fail when a rebalance took the partition away: its next owner starts
            // from the committed offset, which is not past the waiting message.
            if let Err(e) = consumer.seek(
                &key.0,
                key.1,
                Offset::Offset(offset),
                Duration::from_secs(5),
            ) {
                tracing::debug!(error = %e, topic = %key.0, partition = key.1, "seek on resume");
            }
            if let Err(e) = consumer.resume(&tpl) {
                tracing::debug!(error = %e, topic = %key.0, partition = key.1, "resume");
            }
        }
        if self.held.is_empty() {
            health.clear_problem("schema_registry");
        }
    }

    fn registry_answered(&mut self) {
        self.backoff = FIRST_BACKOFF;
    }
}

pub fn run(
    svc: &Service,
    layout: &Layout,
    limits: &Limits,
    stop: &AtomicBool,
    stats: &IngestStats,
    metrics: &Arc<Metrics>,
    health: &Health,
) -> anyhow::Result<()> {
    avro::bound_generic_allocations(limits.max_message_bytes);
    let t = &svc.topics;
    let context = IngestContext {
        metrics: Arc::clone(metrics),
        topics: vec![t.web.clone(), t.email.clone(), t.crm.clone()],
    };
    let consumer: BaseConsumer<IngestContext> = super::consumer_config(svc)
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
    let mut holds = Holds {
        held: HashMap::new(),
        backoff: FIRST_BACKOFF,
    };
    let forwarder = Forwarder {
        svc,
        layout,
        limits,
        producer: &producer,
        registry: registry.as_ref(),
        stats,
        metrics,
    };
    tracing::info!(topics = ?[&t.web, &t.email, &t.crm], group = %svc.ingest_group, "ingest started");

    let assigned = metrics.assigned_partitions.with_label_values(&["ingest"]);
    let mut last_gauges = Instant::now() - Duration::from_secs(1);
    while !stop.load(Ordering::Relaxed) {
        holds.resume_due(&consumer, health);
        if last_gauges.elapsed() >= Duration::from_secs(1) {
            last_gauges = Instant::now();
            metrics
                .ingest_paused_partitions
                .set(holds.held.len() as i64);
            if let Ok(a) = consumer.assignment() {
                assigned.set(a.count() as i64);
            }
        }
        let mut next: HashMap<(String, i32), i64> = HashMap::new();
        let started = Instant::now();
        let mut n = 0;
        while n < svc.batch_size {
            // Bounded in time, not only in count: a batch of slow registry lookups must not
            // keep the consumer from polling (config::service::check_together).
            if n > 0 && started.elapsed() >= BATCH_WINDOW {
                break;
            }
            let wait = BATCH_WINDOW.saturating_sub(started.elapsed());
            match consumer.poll(if n == 0 {
                Duration::from_millis(100)
            } else {
                wait
            }) {
                Some(Ok(m)) => {
                    let Some(&source) = sources.get(m.topic()) else {
                        continue;
                    };
                    if holds.is_held(m.topic(), m.partition()) {
                        continue; // fetched before the pause; read again on resume
                    }
                    match forwarder.forward(source, &m)? {
                        Outcome::Done => {
                            stats.consumed.fetch_add(1, Ordering::Relaxed);
                            next.insert((m.topic().to_string(), m.partition()), m.offset() + 1);
                            if registry.is_some() {
                                holds.registry_answered();
                            }
                        }
                        Outcome::Held(why) => {
                            metrics.schema_registry_failures.inc();
                            holds.hold(
                                &consumer,
                                m.topic(),
                                m.partition(),
                                m.offset(),
                                &why,
                                health,
                            )?;
                        }
                    }
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
    health.clear_problem("schema_registry");
    tracing::info!("ingest stopped");
    Ok(())
}

/// What forwarding a source message needs: the settings, the producer of the internal and
/// dead-letter topics, the schema registry, the stage's counters.
struct Forwarder<'a> {
    svc: &'a Service,
    layout: &'a Layout,
    limits: &'a Limits,
    producer: &'a LfProducer,
    registry: Option<&'a SchemaRegistry>,
    stats: &'a IngestStats,
    metrics: &'a Metrics,
}

impl Forwarder<'_> {
    /// Decodes, admits and forwards one message of `source` to the internal topic, or writes
    /// it to the dead-letter topic with its reason; `Held` when the registry did not answer.
    fn forward<M: Message>(&self, source: Source, m: &M) -> anyhow::Result<Outcome> {
        let Forwarder {
            svc,
            layout,
            limits,
            producer,
            registry,
            stats,
            metrics,
        } = *self;
        let Some(bytes) = m.payload() else {
            self.dead_letter(m, None, &Invalid::NullValue)?;
            return Ok(Outcome::Done);
        };
        let format = svc.input_formats[source.index()];
        let decoded = match (format, registry) {
            // Checked before decoding: an oversized message is never parsed.
            _ if bytes.len() > limits.max_message_bytes => {
                Err(Invalid::TooLarge(bytes.len(), limits.max_message_bytes))
            }
            // An unreachable registry is not bad input: the message waits, nothing is
            // dead-lettered.
            (InputFormat::AvroConfluent, Some(reg)) => match reg.decode(source, bytes) {
                Ok(r) => r,
                Err(why) => return Ok(Outcome::Held(why)),
            },
            _ => decode(source, format, bytes),
        }
        .and_then(|ev| ev.admit(limits, Some(crate::metrics::now_ms())))
        .and_then(|ev| match m.key() {
            Some(k) if key_disagrees(k, &ev.lead_key, limits.lead_key) => {
                metrics.key_mismatch.inc();
                match svc.key_mismatch {
                    KeyMismatch::Count => Ok(ev),
                    KeyMismatch::DeadLetter => {
                        let shown = String::from_utf8_lossy(&k[..k.len().min(64)]).into_owned();
                        Err(Invalid::KeyMismatch(shown, ev.lead_key.to_string()))
                    }
                }
            }
            _ => Ok(ev),
        });
        let encoded = match decoded {
            Ok(ev) => {
                let value = avro::encode_internal_event(&ev)?;
                // Every record must fit what the producer and the topic accept, or the send
                // fails for good and the stage with it: such an event is a dead letter instead.
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
            Err(why) => self.dead_letter(m, Some(bytes), &why)?,
        }
        Ok(Outcome::Done)
    }

    /// Writes `m` to the dead-letter topic with its reason and origin. The value is cut to what
    /// the topic accepts (and an oversized input to its first 64 KiB); `lf-original-size` keeps
    /// the full size and `lf-truncated` says that it was cut. A null value (`None`) stays null; a
    /// key too long for the topic is cut too.
    fn dead_letter<M: Message>(
        &self,
        m: &M,
        value: Option<&[u8]>,
        why: &Invalid,
    ) -> anyhow::Result<()> {
        let Forwarder {
            svc,
            layout,
            producer,
            stats,
            metrics,
            ..
        } = *self;
        let bytes = value.unwrap_or_default();
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
        let limit = layout.record_limits.dlq;
        // The headers come first, then the key, then as much of the value as fits.
        let key = &key[..key.len().min(limit.saturating_sub(header_bytes))];
        let room = limit.saturating_sub(key.len() + header_bytes);
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
        let key_cut = m.key().is_some_and(|k| k.len() > key.len());
        if keep < bytes.len() || key_cut {
            headers = headers.insert(Header {
                key: H_TRUNCATED,
                value: Some(b"true".as_slice()),
            });
        }
        let mut rec = BaseRecord::to(&svc.topics.dlq).headers(headers);
        if value.is_some() {
            rec = rec.payload(&bytes[..keep]);
        }
        if m.key().is_some() {
            rec = rec.key(key);
        }
        producer::send(producer, rec)?;
        tracing::debug!(
            topic = m.topic(),
            partition = m.partition(),
            offset = m.offset(),
            %reason,
            "dead-lettered"
        );
        Ok(())
    }
}

/// Whether a message key names another lead than the payload's `lead_key` (the key read
/// the way `input.lead_key` reads lead keys; a key that is not UTF-8 always disagrees).
fn key_disagrees(key: &[u8], lead_key: &str, mode: crate::model::event::LeadKeyMode) -> bool {
    match std::str::from_utf8(key) {
        Ok(k) => crate::model::event::normalize_lead_key(mode, k) != lead_key,
        Err(_) => true,
    }
}
