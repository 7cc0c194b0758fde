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
    with_defaults(svc, &[])
}

/// Fetch-queue defaults of the consumers that read a backlog (ingest, state, notify, the
/// report's history). The user's `kafka.properties` still override them.
pub const CONSUMER_DEFAULTS: [(&str, &str); 2] = [
    // librdkafka (2.2 and later) postpones a partition's next fetch by this much once its
    // queue passes `queued.min.messages` or `queued.max.messages.kbytes`: 1 s by default,
    // while the fold drains such a queue in a fraction of that and then waits. The peer
    // bench's backlog went at 147 K events/s with the default, 530 K with 10 ms
    // (docs/performance.md, "The consumers' fetch queue").
    ("fetch.queue.backoff.ms", "10"),
    // Per partition (default 100,000): with the short backoff above a smaller queue keeps
    // the fold fed, and each queued message costs more than its bytes (an op each), so a
    // small instance's peak RSS drops by about 15 MiB.
    ("queued.min.messages", "10000"),
];

/// [`client_config`] for a consumer that reads a backlog: [`CONSUMER_DEFAULTS`] first, then
/// the user's extra properties.
pub fn consumer_config(svc: &Service) -> ClientConfig {
    with_defaults(svc, &CONSUMER_DEFAULTS)
}

fn with_defaults(svc: &Service, defaults: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &svc.brokers)
        .set("client.id", &svc.client_id);
    for (k, v) in defaults {
        c.set(*k, *v);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn service(properties: &[(&str, &str)]) -> Service {
        let mut settings =
            crate::config::Settings::from_toml(include_str!("../../examples/config.toml"))
                .expect("the example config loads");
        settings.service.properties = properties
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        settings.service
    }

    #[test]
    fn consumers_get_the_fetch_queue_defaults_and_producers_do_not() {
        let svc = service(&[("security.protocol", "plaintext")]);
        let c = consumer_config(&svc);
        assert_eq!(c.get("fetch.queue.backoff.ms"), Some("10"));
        assert_eq!(c.get("queued.min.messages"), Some("10000"));
        assert_eq!(c.get("security.protocol"), Some("plaintext"));
        // Consumer properties on a producer only earn a warning from librdkafka.
        let p = client_config(&svc);
        assert_eq!(p.get("fetch.queue.backoff.ms"), None);
        assert_eq!(p.get("queued.min.messages"), None);
    }

    #[test]
    fn the_users_properties_override_the_consumer_defaults() {
        let svc = service(&[
            ("fetch.queue.backoff.ms", "1000"),
            ("queued.min.messages", "5"),
        ]);
        let c = consumer_config(&svc);
        assert_eq!(c.get("fetch.queue.backoff.ms"), Some("1000"));
        assert_eq!(c.get("queued.min.messages"), Some("5"));
    }
}
