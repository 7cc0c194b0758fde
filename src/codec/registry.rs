//! A Confluent-compatible schema registry client: writer schemas by id
//! (`GET {url}/schemas/ids/{id}`), cached for the life of the process (ids are immutable).
//! Failures are cached briefly, so a burst of messages with an unknown id, or a registry that
//! is down, costs one request rather than one per message.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apache_avro::Schema;

use super::avro::{decode_input_with_writer, unframe};
use crate::model::event::{Event, Invalid, Source};

/// The registry could not be asked: a transient condition, not bad input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "schema registry unavailable: {}", self.0)
    }
}

impl std::error::Error for Unavailable {}

/// How long an unknown (404) or unusable schema id is remembered: an id registered a moment
/// later is found after this.
pub const MISS_TTL: Duration = Duration::from_secs(30);
/// How long an unavailable registry is not asked again.
pub const DOWN_TTL: Duration = Duration::from_secs(1);

#[derive(Clone)]
enum Lookup {
    Found(Arc<Schema>),
    /// Unknown id, or a schema that is not Avro we can parse: the input is invalid.
    Invalid(Invalid),
}

pub struct SchemaRegistry {
    base: String,
    agent: ureq::Agent,
    cache: Mutex<HashMap<u32, Arc<Schema>>>,
    /// Ids that were unknown or unusable, and when they were asked.
    misses: Mutex<HashMap<u32, (Instant, Invalid)>>,
    /// The last time the registry could not be asked, and why.
    down: Mutex<Option<(Instant, Unavailable)>>,
    /// HTTP requests made (tests check the cache with it).
    pub requests: AtomicU64,
}

impl SchemaRegistry {
    pub fn new(url: &str, timeout: Duration) -> SchemaRegistry {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .new_agent();
        SchemaRegistry {
            base: url.trim_end_matches('/').to_string(),
            agent,
            cache: Mutex::new(HashMap::new()),
            misses: Mutex::new(HashMap::new()),
            down: Mutex::new(None),
            requests: AtomicU64::new(0),
        }
    }

    fn lookup(&self, id: u32) -> Result<Lookup, Unavailable> {
        if let Some(s) = self.cache.lock().ok().and_then(|c| c.get(&id).cloned()) {
            return Ok(Lookup::Found(s));
        }
        if let Some(why) = self.misses.lock().ok().and_then(|m| {
            m.get(&id)
                .filter(|(at, _)| at.elapsed() < MISS_TTL)
                .map(|(_, why)| why.clone())
        }) {
            return Ok(Lookup::Invalid(why));
        }
        if let Some(e) = self.down.lock().ok().and_then(|d| {
            d.as_ref()
                .filter(|(at, _)| at.elapsed() < DOWN_TTL)
                .map(|(_, e)| e.clone())
        }) {
            return Err(e);
        }
        let found = self.ask(id);
        match &found {
            Err(e) => {
                if let Ok(mut d) = self.down.lock() {
                    *d = Some((Instant::now(), e.clone()));
                }
            }
            Ok(Lookup::Invalid(why)) => {
                if let Ok(mut m) = self.misses.lock() {
                    // Bounded: expired entries go first; a flood of distinct ids stays small.
                    if m.len() >= 10_000 {
                        m.retain(|_, (at, _)| at.elapsed() < MISS_TTL);
                    }
                    if m.len() < 10_000 {
                        m.insert(id, (Instant::now(), why.clone()));
                    }
                }
            }
            Ok(Lookup::Found(_)) => {}
        }
        found
    }

    /// One request for schema `id`.
    fn ask(&self, id: u32) -> Result<Lookup, Unavailable> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let url = format!("{}/schemas/ids/{id}", self.base);
        let mut resp = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| Unavailable(format!("GET {url}: {e}")))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| Unavailable(format!("reading {url}: {e}")))?;
        match status {
            200 => {}
            404 => return Ok(Lookup::Invalid(Invalid::UnknownSchema(id))),
            other => return Err(Unavailable(format!("GET {url}: HTTP {other}: {body}"))),
        }
        let reply: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| Unavailable(format!("GET {url}: not JSON: {e}")))?;
        if reply
            .get("schemaType")
            .and_then(|t| t.as_str())
            .is_some_and(|t| t != "AVRO")
        {
            return Ok(Lookup::Invalid(Invalid::Undecodable(format!(
                "schema id {id} is not an Avro schema"
            ))));
        }
        let Some(text) = reply.get("schema").and_then(|s| s.as_str()) else {
            return Err(Unavailable(format!(
                "GET {url}: no \"schema\" in the reply"
            )));
        };
        match Schema::parse_str(text) {
            Ok(schema) => {
                let schema = Arc::new(schema);
                if let Ok(mut c) = self.cache.lock() {
                    c.insert(id, Arc::clone(&schema));
                }
                Ok(Lookup::Found(schema))
            }
            Err(e) => Ok(Lookup::Invalid(Invalid::Undecodable(format!(
                "schema id {id} does not parse as Avro: {e}"
            )))),
        }
    }

    /// Decodes a Confluent-framed message with its writer schema. `Err` only when the
    /// registry cannot be asked (retry later); bad input is `Ok(Err(..))`.
    pub fn decode(
        &self,
        source: Source,
        bytes: &[u8],
    ) -> Result<Result<Event, Invalid>, Unavailable> {
        let (id, datum) = match unframe(bytes) {
            Ok(x) => x,
            Err(e) => return Ok(Err(e)),
        };
        Ok(match self.lookup(id)? {
            Lookup::Found(writer) => decode_input_with_writer(source, &writer, datum),
            Lookup::Invalid(why) => Err(why),
        })
    }
}
