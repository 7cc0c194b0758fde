//! A hand-written Avro reader and writer for leadflow's own schemas (the three input schemas
//! and the internal record): the hot path of ingest and of the state stage.
//!
//! apache-avro's generic path builds a `Value` tree (a `String` per field name, a `HashMap` per
//! map) and then converts it; reading the bytes straight into an `Event` is several times
//! faster. The generic path stays for datums written with another schema (registry
//! resolution) and for the output records; `tests/it/avro_fast.rs` checks that both paths agree
//! on valid and on corrupted datums. The byte rules follow the Avro 1.11 specification:
//! zig-zag varints of at most 10 bytes, length-prefixed UTF-8 strings, unions as a branch
//! index, maps as blocks (a negative count is followed by the block's byte size).

use crate::model::event::{Event, EventFields, Invalid, Source};
use crate::model::records::{Output, SlaRecord, Transition};

use super::InternalRecord;

fn bad(why: impl Into<String>) -> Invalid {
    Invalid::Undecodable(why.into())
}

/// A cursor over one datum. Every read is bounds-checked; lengths are never trusted for
/// allocation beyond the bytes actually present.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    fn long(&mut self) -> Result<i64, Invalid> {
        let mut n: u64 = 0;
        for j in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(bad("not a valid Avro datum: truncated integer"));
            };
            self.pos += 1;
            n |= u64::from(b & 0x7f).wrapping_shl(7 * j);
            if b & 0x80 == 0 {
                return Ok(((n >> 1) as i64) ^ -((n & 1) as i64));
            }
        }
        Err(bad("not a valid Avro datum: integer longer than 10 bytes"))
    }

    fn str(&mut self, field: &str) -> Result<&'a str, Invalid> {
        let len = self.long()?;
        let rest = self.buf.len() - self.pos;
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= rest)
            .ok_or_else(|| {
                bad(format!(
                    "not a valid Avro datum: string `{field}` of length {len} with {rest} bytes left"
                ))
            })?;
        let bytes = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        std::str::from_utf8(bytes)
            .map_err(|_| bad(format!("not a valid Avro datum: `{field}` is not UTF-8")))
    }

    fn union_branch(&mut self, field: &str, branches: i64) -> Result<i64, Invalid> {
        let i = self.long()?;
        if (0..branches).contains(&i) {
            Ok(i)
        } else {
            Err(bad(format!(
                "not a valid Avro datum: union branch {i} of `{field}`"
            )))
        }
    }

    /// `["null", "string"]`
    fn opt_str(&mut self, field: &str) -> Result<Option<&'a str>, Invalid> {
        match self.union_branch(field, 2)? {
            0 => Ok(None),
            _ => self.str(field).map(Some),
        }
    }

    /// `["null", "long"]`
    fn opt_long(&mut self, field: &str) -> Result<Option<i64>, Invalid> {
        match self.union_branch(field, 2)? {
            0 => Ok(None),
            _ => self.long().map(Some),
        }
    }

    /// A `map<string>`, entries in wire order (duplicates kept; the caller keeps the last).
    fn string_map(&mut self, field: &str, out: &mut Vec<(String, String)>) -> Result<(), Invalid> {
        loop {
            let count = self.long()?;
            if count == 0 {
                return Ok(());
            }
            if count < 0 {
                // A negative count is followed by the block's size in bytes (for skipping).
                self.long()?;
            }
            // No reserve from the count: it is not trusted (hostile counts must not allocate).
            for _ in 0..count.unsigned_abs() {
                let k = self.str(field)?;
                let v = self.str(field)?;
                out.push((k.to_string(), v.to_string()));
            }
        }
    }

    fn finish(&self) -> Result<(), Invalid> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            n => Err(bad(format!("{n} trailing bytes after the Avro datum"))),
        }
    }
}

/// Typed fields of each input schema after the four common ones, in schema order; `true`
/// marks a `["null", "long"]` field (the rest are `["null", "string"]`).
fn typed_fields(source: Source) -> &'static [(&'static str, bool)] {
    match source {
        Source::Web => &[
            ("url", false),
            ("referrer", false),
            ("utm_source", false),
            ("utm_medium", false),
            ("utm_campaign", false),
            ("session_id", false),
        ],
        Source::Email => &[("campaign", false), ("message_id", false), ("link", false)],
        Source::Crm => &[
            ("owner_id", false),
            ("email", false),
            ("first_name", false),
            ("last_name", false),
            ("title", false),
            ("company", false),
            ("employees", true),
            ("country", false),
            ("industry", false),
        ],
    }
}

/// Map entries in wire order to attributes: the last value of a repeated key wins (as in an
/// Avro map read into a hash map), sorted by key (Avro maps have no order).
fn map_to_attributes(mut attrs: Vec<(String, String)>) -> Vec<(String, String)> {
    if attrs.len() > 1 {
        // Stable: equal keys keep wire order, so the last of each run is the winner.
        attrs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(String, String)> = Vec::with_capacity(attrs.len());
        for kv in attrs {
            match out.last_mut() {
                Some(last) if last.0 == kv.0 => *last = kv,
                _ => out.push(kv),
            }
        }
        attrs = out;
    }
    attrs
}

/// Decodes a plain datum of `source`'s input schema into a validated event (same result as
/// the generic path: typed fields become attributes and override `properties` entries).
pub fn decode_input(source: Source, datum: &[u8]) -> Result<Event, Invalid> {
    let mut r = Reader::new(datum);
    let event_id = r.str("event_id")?;
    let lead_key = r.str("lead_key")?;
    let occurred_at = r.long()?;
    let event_type = r.str("type")?;
    let mut typed: Vec<(&'static str, String)> = Vec::new();
    for &(name, is_long) in typed_fields(source) {
        let value = if is_long {
            r.opt_long(name)?.map(|n| n.to_string())
        } else {
            r.opt_str(name)?.map(str::to_string)
        };
        if let Some(v) = value {
            typed.push((name, v));
        }
    }
    let mut props = Vec::new();
    r.string_map("properties", &mut props)?;
    r.finish()?;
    let mut attributes = map_to_attributes(props);
    if !typed.is_empty() {
        attributes.retain(|(k, _)| !typed.iter().any(|(t, _)| t == k));
        attributes.extend(typed.into_iter().map(|(k, v)| (k.to_string(), v)));
        attributes.sort_by(|a, b| a.0.cmp(&b.0));
    }
    validated(
        event_id,
        lead_key,
        occurred_at,
        source,
        event_type,
        attributes,
    )
}

/// The decoded parts as an event, through the same validation as every other decoder.
fn validated(
    event_id: &str,
    lead_key: &str,
    occurred_at: i64,
    source: Source,
    event_type: &str,
    attributes: Vec<(String, String)>,
) -> Result<Event, Invalid> {
    EventFields {
        event_id: Some(event_id.into()),
        lead_key: Some(lead_key.to_string()),
        occurred_at: Some(occurred_at),
        source: Some(source.as_str().into()),
        event_type: Some(event_type.into()),
        attributes,
    }
    .validate()
}

/// Decodes a record of the internal log; events are validated again.
pub fn decode_internal(bytes: &[u8]) -> Result<InternalRecord, Invalid> {
    let mut r = Reader::new(bytes);
    if r.union_branch("body", 2)? == 1 {
        let t = r.long()?;
        r.finish()?;
        return Ok(InternalRecord::Tick(t));
    }
    let event_id = r.str("event_id")?;
    let lead_key = r.str("lead_key")?;
    let occurred_at = r.long()?;
    let source = match r.long()? {
        0 => Source::Web,
        1 => Source::Email,
        2 => Source::Crm,
        i => return Err(bad(format!("not a valid Avro datum: source symbol {i}"))),
    };
    let event_type = r.str("type")?;
    let mut attrs = Vec::new();
    r.string_map("attributes", &mut attrs)?;
    r.finish()?;
    let attributes = map_to_attributes(attrs);
    Ok(InternalRecord::Event(validated(
        event_id,
        lead_key,
        occurred_at,
        source,
        event_type,
        attributes,
    )?))
}

fn put_long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_long(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

/// Encodes an event as an internal record (attributes in their order, one map block).
pub fn encode_internal_event(ev: &Event) -> Vec<u8> {
    let attrs_len: usize = ev
        .attributes
        .iter()
        .map(|(k, v)| k.len() + v.len() + 4)
        .sum();
    let mut out = Vec::with_capacity(
        32 + ev.event_id.len() + ev.lead_key.len() + ev.event_type.len() + attrs_len,
    );
    put_long(&mut out, 0);
    put_str(&mut out, &ev.event_id);
    put_str(&mut out, &ev.lead_key);
    put_long(&mut out, ev.occurred_at);
    put_long(&mut out, ev.source.index() as i64);
    put_str(&mut out, &ev.event_type);
    if !ev.attributes.is_empty() {
        put_long(&mut out, ev.attributes.len() as i64);
        for (k, v) in &ev.attributes {
            put_str(&mut out, k);
            put_str(&mut out, v);
        }
    }
    put_long(&mut out, 0);
    out
}

/// Encodes a tick as an internal record.
pub fn encode_tick(t: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(11);
    put_long(&mut out, 1);
    put_long(&mut out, t);
    out
}

/// Avro's `["null", T]` union: branch 0 for `None`, else branch 1 and the value.
fn put_opt<T>(out: &mut Vec<u8>, v: Option<T>, put: impl FnOnce(&mut Vec<u8>, T)) {
    match v {
        None => out.push(0),
        Some(v) => {
            out.push(2); // zigzag(1)
            put(out, v);
        }
    }
}

/// Encodes an output record with its topic's schema (`schemas/transition.avsc`,
/// `schemas/sla_record.avsc`): the bytes apache-avro writes for it (tests/it/avro_fast.rs
/// checks that on generated records), without building its generic value and resolving the
/// schema for every record, which took a fifth of the state thread (docs/performance.md).
pub fn encode_output(rec: &Output) -> Vec<u8> {
    match rec {
        Output::Transition(t) => encode_transition(t),
        Output::Sla(s) => encode_sla(s),
    }
}

fn encode_transition(t: &Transition) -> Vec<u8> {
    let owner = t.owner_id.as_deref();
    let strings = t.transition_id.len()
        + t.lead_key.len()
        + t.reason.len()
        + t.trigger_event_id.len()
        + t.grade.len()
        + owner.map_or(0, str::len);
    // Six string lengths, two enums, a long, a union: at most 10 bytes each; two doubles.
    let mut out = Vec::with_capacity(strings + 16 + 10 * 10);
    put_str(&mut out, &t.transition_id);
    put_str(&mut out, &t.lead_key);
    put_long(&mut out, t.from_stage.index() as i64);
    put_long(&mut out, t.to_stage.index() as i64);
    put_str(&mut out, &t.reason);
    put_long(&mut out, t.occurred_at);
    put_str(&mut out, &t.trigger_event_id);
    out.extend_from_slice(&t.engagement.to_le_bytes());
    out.extend_from_slice(&t.fit.to_le_bytes());
    put_str(&mut out, &t.grade);
    put_opt(&mut out, owner, put_str);
    out
}

fn encode_sla(s: &SlaRecord) -> Vec<u8> {
    let owner = s.owner_id.as_deref();
    let strings =
        s.sla_event_id.len() + s.lead_key.len() + s.policy.len() + owner.map_or(0, str::len);
    // Four string lengths, two enums, five longs, four unions and a boolean: at most 10
    // bytes each.
    let mut out = Vec::with_capacity(strings + 16 * 10);
    put_str(&mut out, &s.sla_event_id);
    put_str(&mut out, &s.lead_key);
    put_str(&mut out, &s.policy);
    put_long(&mut out, s.kind as i64);
    put_long(&mut out, s.stage.index() as i64);
    put_long(&mut out, s.started_at);
    put_long(&mut out, s.deadline);
    put_long(&mut out, s.at);
    put_opt(&mut out, s.response_ms, put_long);
    put_opt(&mut out, s.on_time, |out, b| out.push(u8::from(b)));
    put_opt(&mut out, owner, put_str);
    put_opt(&mut out, s.response_business_ms, put_long);
    out
}
