//! Kafka adapters: the ingest stage, the state stage, startup checks, and the development
//! broker. Everything here is I/O around the pure engine.

pub mod admin;
pub mod dev;
pub mod ingest;
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

/// The value of header `key` of a message, if present.
pub fn header<'a, M: Message>(msg: &'a M, key: &str) -> Option<&'a [u8]> {
    let headers = msg.headers()?;
    headers.iter().find(|h| h.key == key).and_then(|h| h.value)
}

/// A decimal header value.
pub fn header_i64<M: Message>(msg: &M, key: &str) -> Option<i64> {
    std::str::from_utf8(header(msg, key)?).ok()?.parse().ok()
}
