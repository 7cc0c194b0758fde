//! Settings of the Kafka service (`leadflow run`, `demo`, `dev-broker`): brokers, topics,
//! formats, snapshots and timings. Every key has a default, so a scoring-only config (as used
//! by `replay`) is also a valid service config for a local broker.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::error::{invalid, parse_duration, positive_duration, ConfigError};
use crate::model::event::Source;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKafka {
    brokers: Option<String>,
    client_id: Option<String>,
    ingest_group: Option<String>,
    state_group: Option<String>,
    connect_timeout: Option<String>,
    transactions: Option<String>,
    transaction_timeout: Option<String>,
    transactional_id: Option<String>,
    #[serde(default)]
    properties: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTopics {
    web: Option<String>,
    email: Option<String>,
    crm: Option<String>,
    internal: Option<String>,
    transitions: Option<String>,
    sla: Option<String>,
    dlq: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFormats {
    web: Option<String>,
    email: Option<String>,
    crm: Option<String>,
    output: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSnapshots {
    url: Option<String>,
    endpoint: Option<String>,
    dir: Option<String>,
    interval: Option<String>,
    retain: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRegistry {
    url: Option<String>,
    timeout: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIngest {
    key_mismatch: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    format: Option<String>,
    level: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    listen: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRun {
    drain_timeout: Option<String>,
    tick_interval: Option<String>,
    batch_size: Option<u32>,
    commit_interval: Option<String>,
}

/// How the messages of an input topic are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputFormat {
    Avro,
    AvroConfluent,
    Json,
}

/// What ingest does with a message whose key is not its payload's `lead_key`
/// (`ingest.key_mismatch`). Either way it is counted (`leadflow_key_mismatch_total`); the
/// internal topic is always partitioned by the payload's `lead_key`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyMismatch {
    Count,
    DeadLetter,
}

/// How output records are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Avro,
    Json,
}

/// How the state stage writes its outputs (`kafka.transactions`; docs/kafka.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transactions {
    /// Transactions on a broker that implements them; idempotent writes on librdkafka's mock
    /// cluster, which accepts transactional requests without implementing them.
    Auto,
    /// Transactional outputs: a stalled instance that lost its partitions cannot write.
    On,
    /// Idempotent outputs with position-based recovery only: no zombie fencing.
    Off,
}

#[derive(Clone, Debug)]
pub struct Topics {
    pub web: String,
    pub email: String,
    pub crm: String,
    pub internal: String,
    pub transitions: String,
    pub sla: String,
    pub dlq: String,
}

impl Topics {
    pub fn input(&self, source: Source) -> &str {
        match source {
            Source::Web => &self.web,
            Source::Email => &self.email,
            Source::Crm => &self.crm,
        }
    }

    /// Every topic the service reads or writes.
    pub fn all(&self) -> [&str; 7] {
        [
            &self.web,
            &self.email,
            &self.crm,
            &self.internal,
            &self.transitions,
            &self.sla,
            &self.dlq,
        ]
    }
}

#[derive(Clone, Debug)]
pub struct Service {
    pub brokers: String,
    pub client_id: String,
    pub ingest_group: String,
    pub state_group: String,
    pub connect_timeout_ms: i64,
    /// Transactional outputs (zombie fencing); see [`Transactions`].
    pub transactions: Transactions,
    /// `transaction.timeout.ms` of the state stage's producers: how long a stalled instance's
    /// open transaction can hold back readers before the broker aborts it.
    pub transaction_timeout_ms: i64,
    /// The state producers' `transactional.id` (the second one's has `-b` appended); `None`:
    /// the state group, the host name, the process id, a counter and the time (unique per
    /// process).
    pub transactional_id: Option<String>,
    /// How often the state stage commits its transaction (outputs become visible to
    /// `read_committed` consumers then).
    pub commit_interval_ms: i64,
    /// Extra librdkafka properties for every client (security, tuning).
    pub properties: BTreeMap<String, String>,
    pub topics: Topics,
    /// Input formats, indexed by `Source::index`.
    pub input_formats: [InputFormat; 3],
    pub output_format: OutputFormat,
    /// Where snapshots go (`snapshots.url`, or `snapshots.dir` as a file URL), and how many
    /// are kept per partition.
    pub snapshot_store: crate::snapshot::StoreConfig,
    pub snapshot_interval_ms: i64,
    pub snapshot_retain: u32,
    pub drain_timeout_ms: i64,
    /// 0 disables ticks.
    pub tick_interval_ms: i64,
    pub batch_size: u32,
    /// Address of the metrics and health endpoints; `None` disables them.
    pub http_listen: Option<std::net::SocketAddr>,
    pub log_json: bool,
    /// Confluent-compatible schema registry for `avro-confluent` inputs (writer schemas by id).
    pub schema_registry_url: Option<String>,
    pub schema_registry_timeout_ms: i64,
    /// What ingest does with a message whose key is not its payload's `lead_key`.
    pub key_mismatch: KeyMismatch,
    /// A `tracing` filter; LEADFLOW_LOG overrides it.
    pub log_level: String,
}

fn input_format(key: &str, v: Option<&str>) -> Result<InputFormat, ConfigError> {
    match v.unwrap_or("avro") {
        "avro" => Ok(InputFormat::Avro),
        "avro-confluent" => Ok(InputFormat::AvroConfluent),
        "json" => Ok(InputFormat::Json),
        other => Err(invalid(key, other, "allowed: avro, avro-confluent, json")),
    }
}

fn topic(key: &str, v: Option<String>, default: &str) -> Result<String, ConfigError> {
    let name = v.unwrap_or_else(|| default.to_string());
    let legal = !name.is_empty()
        && name.len() <= 249
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !legal {
        return Err(invalid(
            key,
            &name,
            "a Kafka topic name: 1 to 249 of [a-zA-Z0-9._-]",
        ));
    }
    Ok(name)
}

fn non_empty(key: &str, v: Option<String>, default: &str) -> Result<String, ConfigError> {
    let s = v.unwrap_or_else(|| default.to_string());
    if s.trim().is_empty() {
        return Err(invalid(key, &s, "must not be empty"));
    }
    Ok(s)
}

/// The raw service sections of a config file.
pub(super) struct RawSections {
    pub kafka: RawKafka,
    pub topics: RawTopics,
    pub formats: RawFormats,
    pub snapshots: RawSnapshots,
    pub run: RawRun,
    pub http: RawHttp,
    pub log: RawLog,
    pub registry: RawRegistry,
    pub ingest: RawIngest,
}

/// `snapshots.url`, or `snapshots.dir` (default `leadflow-snapshots`, relative to the working
/// directory) as a file URL; checked here so a bad store fails at startup, not at the first
/// checkpoint.
fn snapshot_url(url: Option<&str>, dir: Option<&str>) -> Result<String, ConfigError> {
    let url = match (url, dir) {
        (Some(_), Some(d)) => {
            return Err(invalid(
                "snapshots.dir",
                d,
                "set either snapshots.url or snapshots.dir (a local folder), not both",
            ))
        }
        (Some(u), None) => u.to_string(),
        (None, dir) => {
            let dir = PathBuf::from(dir.unwrap_or("leadflow-snapshots"));
            let abs = std::path::absolute(&dir)
                .map_err(|e| invalid("snapshots.dir", dir.display().to_string(), e.to_string()))?;
            url::Url::from_directory_path(&abs)
                .map_err(|()| {
                    invalid(
                        "snapshots.dir",
                        dir.display().to_string(),
                        "a local folder path",
                    )
                })?
                .to_string()
        }
    };
    crate::snapshot::check_url(&url, None).map_err(|e| invalid("snapshots.url", &url, e))?;
    Ok(url)
}

pub(super) fn validate(raw: RawSections) -> Result<Service, ConfigError> {
    let RawSections {
        kafka,
        topics,
        formats,
        snapshots,
        run,
        http,
        log,
        registry,
        ingest,
    } = raw;
    let key_mismatch = match ingest.key_mismatch.as_deref().unwrap_or("count") {
        "count" => KeyMismatch::Count,
        "dead_letter" => KeyMismatch::DeadLetter,
        other => {
            return Err(invalid(
                "ingest.key_mismatch",
                other,
                "allowed: count, dead_letter",
            ))
        }
    };
    let schema_registry_url = match registry.url.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(u) if u.starts_with("http://") || u.starts_with("https://") => Some(u.to_string()),
        Some(u) => {
            return Err(invalid(
                "schema_registry.url",
                u,
                "an http:// or https:// URL such as http://schema-registry:8081",
            ))
        }
    };
    let schema_registry_timeout_ms = positive_duration(
        "schema_registry.timeout",
        registry.timeout.as_deref().unwrap_or("5s"),
    )?;
    let log_json = match log.format.as_deref().unwrap_or("pretty") {
        "pretty" => false,
        "json" => true,
        other => return Err(invalid("log.format", other, "allowed: pretty, json")),
    };
    let log_level = log.level.unwrap_or_else(|| "info".into());
    if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
        return Err(invalid(
            "log.level",
            &log_level,
            "a level (error, warn, info, debug, trace) or a tracing filter such as info,leadflow=debug",
        ));
    }
    let http_listen = match http.listen.as_deref().unwrap_or("127.0.0.1:9464") {
        "" => None,
        addr => Some(addr.parse().map_err(|_| {
            invalid(
                "http.listen",
                addr,
                "an IP address and port such as 127.0.0.1:9464 or 0.0.0.0:9464, or \"\" to disable",
            )
        })?),
    };
    let topics = Topics {
        web: topic("topics.web", topics.web, "leads.web")?,
        email: topic("topics.email", topics.email, "leads.email")?,
        crm: topic("topics.crm", topics.crm, "leads.crm")?,
        internal: topic("topics.internal", topics.internal, "leadflow.events")?,
        transitions: topic(
            "topics.transitions",
            topics.transitions,
            "leads.transitions",
        )?,
        sla: topic("topics.sla", topics.sla, "leads.sla")?,
        dlq: topic("topics.dlq", topics.dlq, "leads.dlq")?,
    };
    let names = topics.all();
    for (i, a) in names.iter().enumerate() {
        if names[..i].contains(a) {
            return Err(invalid(
                "topics",
                a,
                "each topic must be distinct (a topic cannot serve two roles)",
            ));
        }
    }
    let output_format = match formats.output.as_deref().unwrap_or("avro") {
        "avro" => OutputFormat::Avro,
        "json" => OutputFormat::Json,
        other => return Err(invalid("formats.output", other, "allowed: avro, json")),
    };
    let retain = snapshots.retain.unwrap_or(3);
    if retain == 0 {
        return Err(invalid(
            "snapshots.retain",
            retain,
            "keep at least 1 snapshot",
        ));
    }
    if let (Some(ep), Some(url)) = (&snapshots.endpoint, &snapshots.url) {
        crate::snapshot::check_url(url, Some(ep))
            .map_err(|e| invalid("snapshots.endpoint", ep, e))?;
        if !(ep.starts_with("http://") || ep.starts_with("https://")) {
            return Err(invalid(
                "snapshots.endpoint",
                ep,
                "an http:// or https:// URL of an S3-compatible server",
            ));
        }
    } else if let Some(ep) = &snapshots.endpoint {
        return Err(invalid(
            "snapshots.endpoint",
            ep,
            "needs snapshots.url = \"s3://BUCKET/PREFIX\"",
        ));
    }
    let transactions = match kafka.transactions.as_deref().unwrap_or("auto") {
        "auto" => Transactions::Auto,
        "on" => Transactions::On,
        "off" => Transactions::Off,
        other => {
            return Err(invalid(
                "kafka.transactions",
                other,
                "allowed: auto, on, off",
            ))
        }
    };
    let transaction_timeout_ms = positive_duration(
        "kafka.transaction_timeout",
        kafka.transaction_timeout.as_deref().unwrap_or("60s"),
    )?;
    // The broker's transaction.max.timeout.ms defaults to 15 minutes; librdkafka wants >= 1 s.
    if !(1_000..=900_000).contains(&transaction_timeout_ms) {
        return Err(invalid(
            "kafka.transaction_timeout",
            kafka.transaction_timeout.as_deref().unwrap_or_default(),
            "from 1s to 15m (the broker's default transaction.max.timeout.ms)",
        ));
    }
    let commit_interval_ms = positive_duration(
        "run.commit_interval",
        run.commit_interval.as_deref().unwrap_or("100ms"),
    )?;
    if commit_interval_ms * 2 > transaction_timeout_ms {
        return Err(invalid(
            "run.commit_interval",
            run.commit_interval.as_deref().unwrap_or_default(),
            format!(
                "at most half of kafka.transaction_timeout ({transaction_timeout_ms} ms), or \
                 the broker aborts transactions that are still in use"
            ),
        ));
    }
    let transactional_id = match kafka.transactional_id.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(id) => Some(id.to_string()),
    };
    let batch_size = run.batch_size.unwrap_or(2000);
    if batch_size == 0 {
        return Err(invalid("run.batch_size", batch_size, "at least 1"));
    }
    Ok(Service {
        brokers: non_empty("kafka.brokers", kafka.brokers, "localhost:9092")?,
        client_id: non_empty("kafka.client_id", kafka.client_id, "leadflow")?,
        ingest_group: non_empty("kafka.ingest_group", kafka.ingest_group, "leadflow-ingest")?,
        state_group: non_empty("kafka.state_group", kafka.state_group, "leadflow-state")?,
        connect_timeout_ms: positive_duration(
            "kafka.connect_timeout",
            kafka.connect_timeout.as_deref().unwrap_or("30s"),
        )?,
        transactions,
        transaction_timeout_ms,
        transactional_id,
        commit_interval_ms,
        properties: kafka.properties,
        topics,
        input_formats: [
            input_format("formats.web", formats.web.as_deref())?,
            input_format("formats.email", formats.email.as_deref())?,
            input_format("formats.crm", formats.crm.as_deref())?,
        ],
        output_format,
        snapshot_store: crate::snapshot::StoreConfig {
            url: snapshot_url(snapshots.url.as_deref(), snapshots.dir.as_deref())?,
            endpoint: snapshots.endpoint.clone(),
            retain,
        },
        snapshot_interval_ms: positive_duration(
            "snapshots.interval",
            snapshots.interval.as_deref().unwrap_or("10s"),
        )?,
        snapshot_retain: retain,
        drain_timeout_ms: positive_duration(
            "run.drain_timeout",
            run.drain_timeout.as_deref().unwrap_or("15s"),
        )?,
        tick_interval_ms: parse_duration(
            "run.tick_interval",
            run.tick_interval.as_deref().unwrap_or("1s"),
        )?,
        batch_size,
        http_listen,
        log_json,
        log_level,
        schema_registry_url,
        schema_registry_timeout_ms,
        key_mismatch,
    })
}

/// librdkafka's default `message.max.bytes` (the producer's largest record).
pub const PRODUCER_DEFAULT_MAX_BYTES: usize = 1_000_000;
/// librdkafka's default `max.poll.interval.ms`.
const DEFAULT_MAX_POLL_INTERVAL_MS: i64 = 300_000;
/// The smallest producer `message.max.bytes` leadflow accepts: a dead letter's headers (the
/// reason, up to 4 KiB, and its origin), the record's framing and some of the payload.
pub const MIN_PRODUCER_MAX_BYTES: usize = 16_384;

/// A whole-number librdkafka property from `kafka.properties`, or its default.
fn property<T: std::str::FromStr>(
    svc: &Service,
    name: &str,
    default: T,
    allowed: &str,
) -> Result<T, ConfigError> {
    match svc.properties.get(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| invalid(format!("kafka.properties.\"{name}\""), v, allowed)),
    }
}

/// The producer's `message.max.bytes` (`kafka.properties`, else librdkafka's default).
pub fn producer_max_bytes(svc: &Service) -> Result<usize, ConfigError> {
    property(
        svc,
        "message.max.bytes",
        PRODUCER_DEFAULT_MAX_BYTES,
        "a whole number of bytes",
    )
}

/// Settings that are each valid but cannot work together (docs/hardening.md):
/// - the producer must be able to send what ingest accepts: `limits.max_message_bytes` at
///   most `message.max.bytes`, and `message.max.bytes` at least [`MIN_PRODUCER_MAX_BYTES`];
/// - no work between two polls of a consumer may outlast `max.poll.interval.ms`, or the
///   consumer leaves its group, re-reads and repeats (a livelock): a schema registry lookup
///   plus a flush (`schema_registry.timeout` + `run.drain_timeout`) must fit in it.
///
/// Errors name both keys, the values and what is allowed.
pub(super) fn check_together(
    svc: &Service,
    limits: &crate::model::rules::Limits,
) -> Result<(), ConfigError> {
    let producer_max = producer_max_bytes(svc)?;
    if producer_max < MIN_PRODUCER_MAX_BYTES {
        return Err(invalid(
            "kafka.properties.\"message.max.bytes\"",
            producer_max,
            format!(
                "at least {MIN_PRODUCER_MAX_BYTES} (a dead letter's headers alone take up to 5 KB)"
            ),
        ));
    }
    if limits.max_message_bytes > producer_max {
        return Err(invalid(
            "limits.max_message_bytes",
            limits.max_message_bytes,
            format!(
                "at most the producer's kafka.properties.\"message.max.bytes\" ({producer_max}{}): \
                 leadflow could not write a message it accepts; lower limits.max_message_bytes or \
                 raise message.max.bytes (and the topics' max.message.bytes)",
                if svc.properties.contains_key("message.max.bytes") {
                    ""
                } else {
                    ", librdkafka's default"
                }
            ),
        ));
    }
    let poll_ms = property(
        svc,
        "max.poll.interval.ms",
        DEFAULT_MAX_POLL_INTERVAL_MS,
        "a whole number of milliseconds",
    )?;
    let registry_ms = if svc.schema_registry_url.is_some()
        && svc.input_formats.contains(&InputFormat::AvroConfluent)
    {
        svc.schema_registry_timeout_ms
    } else {
        0
    };
    if registry_ms + svc.drain_timeout_ms >= poll_ms {
        let (key, value) = if registry_ms > 0 {
            (
                "schema_registry.timeout",
                format!(
                    "{registry_ms} ms, plus run.drain_timeout {} ms",
                    svc.drain_timeout_ms
                ),
            )
        } else {
            ("run.drain_timeout", format!("{} ms", svc.drain_timeout_ms))
        };
        let between = if registry_ms > 0 {
            "a registry lookup and a producer flush may happen between two polls"
        } else {
            "a producer flush may take that long between two polls"
        };
        return Err(invalid(
            key,
            value,
            format!(
                "must total below kafka.properties.\"max.poll.interval.ms\" ({poll_ms} ms): \
                 {between}, and a consumer that outlasts the poll interval leaves its group and \
                 re-reads (a livelock); raise max.poll.interval.ms or lower the timeouts"
            ),
        ));
    }
    Ok(())
}
