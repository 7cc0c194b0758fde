//! An idempotent producer whose delivery failures are counted and surfaced, never dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

use crate::config::Service;

#[derive(Default, Debug)]
pub struct Deliveries {
    pub acked: AtomicU64,
    pub failed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

pub struct DeliveryContext(pub Arc<Deliveries>, pub Option<prometheus::IntCounter>);

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.0.acked.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.0.failed.fetch_add(1, Ordering::Relaxed);
                if let Some(c) = &self.1 {
                    c.inc();
                }
                let mut text = e.to_string();
                if matches!(
                    e,
                    KafkaError::MessageProduction(RDKafkaErrorCode::InvalidTimestamp)
                ) {
                    // Kafka 4 refuses CreateTime stamps over an hour ahead of its clock
                    // (message.timestamp.after.max.ms).
                    text.push_str(
                        " (the record's timestamp is this host's clock: it runs ahead of the \
                         broker's by more than the topic's message.timestamp.after.max.ms; check \
                         NTP)",
                    );
                }
                if let Ok(mut last) = self.0.last_error.lock() {
                    *last = Some(text);
                }
            }
        }
    }
}

pub type LfProducer = BaseProducer<DeliveryContext>;

fn idempotent_config(svc: &Service, linger_ms: u32) -> rdkafka::ClientConfig {
    let mut c = super::client_config(svc);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", linger_ms.to_string())
        .set("compression.type", "lz4");
    c
}

/// An idempotent producer (no duplicates or reordering from retries), acks from all replicas.
pub fn idempotent(
    svc: &Service,
    linger_ms: u32,
    errors: Option<prometheus::IntCounter>,
) -> anyhow::Result<(LfProducer, Arc<Deliveries>)> {
    let deliveries = Arc::new(Deliveries::default());
    let producer = idempotent_config(svc, linger_ms)
        .create_with_context(DeliveryContext(Arc::clone(&deliveries), errors))
        .context("creating the Kafka producer")?;
    Ok((producer, deliveries))
}

/// A transactional producer (`transactional.id` = `id`), its transactions initialized: any
/// earlier producer with the same id is fenced and its open transaction aborted.
///
/// Errors: the broker does not implement transactions, or `init_transactions` did not finish
/// within `transaction_timeout_ms` (e.g. the transaction coordinator is unavailable).
pub fn transactional(
    svc: &Service,
    id: &str,
    linger_ms: u32,
    errors: Option<prometheus::IntCounter>,
) -> anyhow::Result<(LfProducer, Arc<Deliveries>)> {
    let deliveries = Arc::new(Deliveries::default());
    let producer: LfProducer = idempotent_config(svc, linger_ms)
        .set("transactional.id", id)
        .set(
            "transaction.timeout.ms",
            svc.transaction_timeout_ms.to_string(),
        )
        .create_with_context(DeliveryContext(Arc::clone(&deliveries), errors))
        .context("creating the transactional Kafka producer")?;
    let wait = Duration::from_millis(svc.transaction_timeout_ms as u64 + 30_000);
    producer.init_transactions(wait).with_context(|| {
        format!(
            "initializing transactions for transactional.id {id} (a broker without transactions \
             needs kafka.transactions = \"off\")"
        )
    })?;
    Ok((producer, deliveries))
}

/// Queues a record, waiting for room when the local queue is full.
pub fn send(producer: &LfProducer, mut record: BaseRecord<'_, [u8], [u8]>) -> anyhow::Result<()> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                producer.poll(Duration::from_millis(5));
                record = back;
            }
            Err((e, back)) => {
                anyhow::bail!("cannot produce to {}: {e}", back.topic);
            }
        }
    }
}

/// Waits until every queued record is acknowledged; any failed delivery is an error.
///
/// Not rdkafka's `flush`: that polls in steps of up to 100 ms and so returned only about every
/// 100 ms however fast the acks came, which capped ingest at one batch per 100 ms (found by
/// benches/e2e). Polling in 1 ms steps returns as soon as the last ack is served.
pub fn flush(
    producer: &LfProducer,
    deliveries: &Deliveries,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        producer.poll(Duration::from_millis(1));
        if producer.in_flight_count() == 0 {
            break;
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "{} records not acknowledged within {timeout:?}",
                producer.in_flight_count()
            );
        }
    }
    let failed = deliveries.failed.load(Ordering::Relaxed);
    if failed > 0 {
        let last = deliveries
            .last_error
            .lock()
            .ok()
            .and_then(|l| l.clone())
            .unwrap_or_default();
        anyhow::bail!("{failed} records could not be delivered (last error: {last})");
    }
    Ok(())
}
