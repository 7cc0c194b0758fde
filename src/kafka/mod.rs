//! Kafka adapters: the ingest stage, the state stage, startup checks, and the development
//! broker. Everything here is I/O around the pure engine.

pub mod admin;
pub mod dev;
pub mod history;
pub mod ingest;
pub mod lag;
pub mod producer;
pub mod state;

use rdkafka::config::ClientConfig;
use rdkafka::message::{Headers, Message};

use crate::config::Service;

/// Output records: internal offset of the record that caused them.
pub const H_SRC_OFFSET: &str = "lf-src-offset";
/// Output records: index among the outputs of that cause in the same topic.
pub const H_SRC_INDEX: &str = "lf-src-index";
/// Dead-letter records: why the input was rejected, and where it came from.
pub const H_ERROR: &str = "lf-error";
pub const H_ERROR_CODE: &str = "lf-error-code";
pub const H_SOURCE_TOPIC: &str = "lf-source-topic";
pub const H_SOURCE_PARTITION: &str = "lf-source-partition";
pub const H_SOURCE_OFFSET: &str = "lf-source-offset";
/// Dead-letter records: the original message size (an oversized message's payload is cut to
/// its first 64 KiB).
pub const H_ORIGINAL_SIZE: &str = "lf-original-size";
/// Dead-letter records: `true` when the payload is only the start of the message (it did not
/// fit the dead-letter topic, or it was over `limits.max_message_bytes`).
pub const H_TRUNCATED: &str = "lf-truncated";

/// Base client settings: brokers, client id, then the user's extra properties.
pub fn client_config(svc: &Service) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &svc.brokers)
        .set("client.id", &svc.client_id);
    for (k, v) in &svc.properties {
        c.set(k, v);
    }
    c
}

/// Records not yet consumed over the partitions of `topics`, from librdkafka's statistics
/// (`statistics.interval.ms`); unknown lags (-1) are left out.
pub fn lag_from_stats(stats: &rdkafka::Statistics, topics: &[&str]) -> i64 {
    topics
        .iter()
        .filter_map(|t| stats.topics.get(*t))
        .flat_map(|t| t.partitions.iter())
        .filter(|(p, _)| **p >= 0)
        .map(|(_, part)| part.consumer_lag.max(0))
        .sum()
}

/// The value of header `key` of a message, if present.
pub fn header<'a, M: Message>(msg: &'a M, key: &str) -> Option<&'a [u8]> {
    let headers = msg.headers()?;
    headers.iter().find(|h| h.key == key).and_then(|h| h.value)
}

/// A decimal header value.
pub fn header_i64<M: Message>(msg: &M, key: &str) -> Option<i64> {
    std::str::from_utf8(header(msg, key)?).ok()?.parse().ok()
}

/// Encodes a logical event the way a producer of `format` writes it (the generator, the demo
/// and tests use this to feed source topics).
pub fn encode_source(
    ev: &crate::model::event::Event,
    format: crate::config::InputFormat,
) -> anyhow::Result<Vec<u8>> {
    use crate::codec::avro::{encode_input, Framing};
    use crate::config::InputFormat;
    match format {
        InputFormat::Avro => encode_input(ev, Framing::Plain, 0),
        InputFormat::AvroConfluent => encode_input(ev, Framing::Confluent, 1),
        InputFormat::Json => Ok(serde_json::to_vec(&crate::gen::to_json(ev))?),
    }
}

/// Produces events to their source topics in the configured formats, keyed by lead.
pub fn produce_events<'a>(
    svc: &Service,
    events: impl IntoIterator<Item = &'a crate::model::event::Event>,
) -> anyhow::Result<u64> {
    use anyhow::Context;
    let (producer, deliveries) = producer::idempotent(svc, 20, None)?;
    let mut n = 0;
    for ev in events {
        let value = encode_source(ev, svc.input_formats[ev.source.index()])?;
        producer::send(
            &producer,
            rdkafka::producer::BaseRecord::to(svc.topics.input(ev.source))
                .key(ev.lead_key.as_bytes())
                .payload(&value[..]),
        )
        .context("producing generated events")?;
        n += 1;
    }
    producer::flush(&producer, &deliveries, std::time::Duration::from_secs(60))?;
    Ok(n)
}
