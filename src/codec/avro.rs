//! Avro codecs for the schemas in `schemas/` (embedded at build time): the three typed input
//! schemas, the internal log record, and the two output records. Datums are plain Avro binary
//! or Confluent-framed (magic byte 0, 4-byte big-endian schema id, datum).

use std::collections::HashMap;
use std::sync::LazyLock;

use apache_avro::types::Value;
use apache_avro::Schema;

pub use super::InternalRecord;
use crate::model::event::{Event, EventFields, Invalid, Source};
use crate::model::funnel::Stage;
use crate::model::records::{Output, SlaKind, SlaRecord, Transition};

pub const WEB_SCHEMA: &str = include_str!("../../schemas/web_event.avsc");
pub const EMAIL_SCHEMA: &str = include_str!("../../schemas/email_event.avsc");
pub const CRM_SCHEMA: &str = include_str!("../../schemas/crm_event.avsc");
pub const INTERNAL_SCHEMA: &str = include_str!("../../schemas/internal_record.avsc");
pub const TRANSITION_SCHEMA: &str = include_str!("../../schemas/transition.avsc");
pub const SLA_SCHEMA: &str = include_str!("../../schemas/sla_record.avsc");

struct Schemas {
    web: Schema,
    email: Schema,
    crm: Schema,
    internal: Schema,
    transition: Schema,
    sla: Schema,
}

static SCHEMAS: LazyLock<Schemas> = LazyLock::new(|| {
    // The schemas are constants of this crate; a unit test parses each one.
    let p = |s: &str| Schema::parse_str(s).expect("embedded Avro schema parses");
    Schemas {
        web: p(WEB_SCHEMA),
        email: p(EMAIL_SCHEMA),
        crm: p(CRM_SCHEMA),
        internal: p(INTERNAL_SCHEMA),
        transition: p(TRANSITION_SCHEMA),
        sla: p(SLA_SCHEMA),
    }
});

/// How a datum is framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Plain,
    /// Confluent wire format. Without a schema registry the writer must use leadflow's schema;
    /// with one (`decode_input_with_writer`) the writer's schema is resolved by id.
    Confluent,
}

pub const CONFLUENT_MAGIC: u8 = 0;

/// Splits a Confluent-framed message into schema id and datum.
pub fn unframe(bytes: &[u8]) -> Result<(u32, &[u8]), Invalid> {
    match bytes {
        [] => Err(Invalid::Undecodable("empty message".into())),
        [m, ..] if *m != CONFLUENT_MAGIC => Err(Invalid::Undecodable(format!(
            "wrong magic byte 0x{m:02x} (Confluent framing starts with 0x00)"
        ))),
        [_, a, b, c, d, rest @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), rest)),
        _ => Err(Invalid::Undecodable(format!(
            "message of {} bytes is shorter than the 5-byte Confluent header",
            bytes.len()
        ))),
    }
}

pub fn frame(schema_id: u32, datum: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + datum.len());
    out.push(CONFLUENT_MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(datum);
    out
}

/// Typed (nullable string) fields of each input schema, besides the common ones.
fn typed_fields(source: Source) -> &'static [&'static str] {
    match source {
        Source::Web => &[
            "url",
            "referrer",
            "utm_source",
            "utm_medium",
            "utm_campaign",
            "session_id",
        ],
        Source::Email => &["campaign", "message_id", "link"],
        Source::Crm => &[
            "owner_id",
            "email",
            "first_name",
            "last_name",
            "title",
            "company",
            "employees",
            "country",
            "industry",
        ],
    }
}

pub fn input_schema(source: Source) -> &'static Schema {
    match source {
        Source::Web => &SCHEMAS.web,
        Source::Email => &SCHEMAS.email,
        Source::Crm => &SCHEMAS.crm,
    }
}

fn read_datum(schema: &Schema, datum: &[u8]) -> Result<Value, Invalid> {
    let mut reader = datum;
    let value = apache_avro::from_avro_datum(schema, &mut reader, None)
        .map_err(|e| Invalid::Undecodable(format!("not a valid Avro datum: {e}")))?;
    if !reader.is_empty() {
        return Err(Invalid::Undecodable(format!(
            "{} trailing bytes after the Avro datum",
            reader.len()
        )));
    }
    Ok(value)
}

/// Moves a field common to the input and internal schemas into `ev`; `map_field` names the
/// string map that holds the attributes. Returns any other field's value.
fn take_common(ev: &mut EventFields, name: &str, map_field: &str, value: Value) -> Option<Value> {
    match (name, value) {
        ("event_id", Value::String(s)) => ev.event_id = Some(s.into()),
        ("lead_key", Value::String(s)) => ev.lead_key = Some(s),
        ("type", Value::String(s)) => ev.event_type = Some(s.into()),
        ("occurred_at", Value::Long(t) | Value::TimestampMillis(t)) => ev.occurred_at = Some(t),
        (n, Value::Map(m)) if n == map_field => {
            for (k, v) in m {
                if let Value::String(s) = v {
                    ev.attributes.push((k, s));
                }
            }
        }
        (_, other) => return Some(other),
    }
    None
}

/// Decodes an input message of `source`'s schema into a validated event. Typed fields become
/// attributes of the same name and override `properties` entries with that name.
pub fn decode_input(source: Source, bytes: &[u8], framing: Framing) -> Result<Event, Invalid> {
    super::fast::decode_input(source, datum_of(bytes, framing)?)
}

/// The same as `decode_input` through apache-avro's generic `Value` path (kept to check the
/// fast reader against, and for the benchmarks' comparison).
pub fn decode_input_generic(
    source: Source,
    bytes: &[u8],
    framing: Framing,
) -> Result<Event, Invalid> {
    event_from_value(
        source,
        read_datum(input_schema(source), datum_of(bytes, framing)?)?,
    )
}

fn datum_of(bytes: &[u8], framing: Framing) -> Result<&[u8], Invalid> {
    match framing {
        Framing::Plain => Ok(bytes),
        Framing::Confluent => Ok(unframe(bytes)?.1),
    }
}

/// Caps what apache-avro's generic reader may allocate from a count or length in a datum. It
/// reserves room for a map's or array's entries as the datum announces them, so without a cap
/// a 60-byte hostile datum claiming 500 million entries makes it request tens of GB and abort
/// the process (found by fuzzing the registry path). Process-wide; the first call wins, so the
/// service calls it at startup with `limits.max_message_bytes`. Returns the cap in force.
pub fn bound_generic_allocations(max_bytes: usize) -> usize {
    apache_avro::util::max_allocation_bytes(max_bytes)
}

/// Decodes a datum written with `writer` (e.g. a producer's evolved schema from the registry),
/// resolved into leadflow's schema for `source`: fields the reader lacks are dropped, fields
/// the writer lacks take their defaults; incompatible schemas are undecodable input.
pub fn decode_input_with_writer(
    source: Source,
    writer: &Schema,
    datum: &[u8],
) -> Result<Event, Invalid> {
    let mut reader = datum;
    let value = apache_avro::from_avro_datum(writer, &mut reader, Some(input_schema(source)))
        .map_err(|e| Invalid::Undecodable(format!("not readable with the writer schema: {e}")))?;
    if !reader.is_empty() {
        return Err(Invalid::Undecodable(format!(
            "{} trailing bytes after the Avro datum",
            reader.len()
        )));
    }
    event_from_value(source, value)
}

fn event_from_value(source: Source, value: Value) -> Result<Event, Invalid> {
    let Value::Record(fields) = value else {
        return Err(Invalid::Undecodable("datum is not a record".into()));
    };
    let mut ev = EventFields {
        source: Some(source.as_str().into()),
        ..EventFields::default()
    };
    let mut typed = Vec::new();
    for (name, value) in fields {
        if let Some(Value::Union(_, inner)) = take_common(&mut ev, &name, "properties", value) {
            match *inner {
                Value::String(s) => typed.push((name, s)),
                Value::Long(n) => typed.push((name, n.to_string())),
                _ => {}
            }
        }
    }
    ev.attributes
        .retain(|(k, _)| !typed.iter().any(|(t, _)| t == k));
    ev.attributes.extend(typed);
    // Avro maps have no order; sorting keeps decoding deterministic.
    ev.attributes.sort();
    ev.validate()
}

fn opt_string(v: Option<&str>) -> Value {
    match v {
        Some(s) => Value::Union(1, Box::new(Value::String(s.to_string()))),
        None => Value::Union(0, Box::new(Value::Null)),
    }
}

/// Encodes a logical event with its source's input schema (for producers, the generator and
/// tests). Attributes named like a typed field fill it; the rest go to `properties`.
pub fn encode_input(ev: &Event, framing: Framing, schema_id: u32) -> anyhow::Result<Vec<u8>> {
    let typed = typed_fields(ev.source);
    let mut fields = vec![
        (
            "event_id".to_string(),
            Value::String(ev.event_id.to_string()),
        ),
        ("lead_key".to_string(), Value::String(ev.lead_key.clone())),
        (
            "occurred_at".to_string(),
            Value::TimestampMillis(ev.occurred_at),
        ),
        ("type".to_string(), Value::String(ev.event_type.to_string())),
    ];
    let mut properties = HashMap::new();
    let mut typed_values: Vec<Value> = typed.iter().map(|_| opt_string(None)).collect();
    for (k, v) in &ev.attributes {
        match typed.iter().position(|t| t == k) {
            // `employees` is a long: only a canonical integer fits; anything else keeps its text
            // in properties.
            Some(i) if *k == "employees" => match v.parse::<i64>() {
                Ok(n) if n.to_string() == *v => {
                    typed_values[i] = Value::Union(1, Box::new(Value::Long(n)));
                }
                _ => {
                    properties.insert(k.clone(), Value::String(v.clone()));
                }
            },
            Some(i) => typed_values[i] = opt_string(Some(v)),
            None => {
                properties.insert(k.clone(), Value::String(v.clone()));
            }
        }
    }
    for (name, value) in typed.iter().zip(typed_values) {
        fields.push((name.to_string(), value));
    }
    fields.push(("properties".to_string(), Value::Map(properties)));
    let datum = apache_avro::to_avro_datum(input_schema(ev.source), Value::Record(fields))?;
    Ok(match framing {
        Framing::Plain => datum,
        Framing::Confluent => frame(schema_id, &datum),
    })
}

pub fn encode_internal(rec: &InternalRecord) -> anyhow::Result<Vec<u8>> {
    match rec {
        InternalRecord::Event(ev) => Ok(super::fast::encode_internal_event(ev)),
        InternalRecord::Tick(t) => Ok(super::fast::encode_tick(*t)),
    }
}

/// `encode_internal` through apache-avro's generic path (for the cross-check and benches).
pub fn encode_internal_generic(rec: &InternalRecord) -> anyhow::Result<Vec<u8>> {
    match rec {
        InternalRecord::Event(ev) => encode_internal_event_generic(ev),
        InternalRecord::Tick(t) => internal_datum(Value::Union(
            1,
            Box::new(Value::Record(vec![(
                "time".into(),
                Value::TimestampMillis(*t),
            )])),
        )),
    }
}

/// An event as an internal record, from a borrowed event (ingest's hot path: no copy).
pub fn encode_internal_event(ev: &Event) -> anyhow::Result<Vec<u8>> {
    Ok(super::fast::encode_internal_event(ev))
}

fn encode_internal_event_generic(ev: &Event) -> anyhow::Result<Vec<u8>> {
    internal_datum(Value::Union(
        0,
        Box::new(Value::Record(vec![
            ("event_id".into(), Value::String(ev.event_id.to_string())),
            ("lead_key".into(), Value::String(ev.lead_key.clone())),
            ("occurred_at".into(), Value::TimestampMillis(ev.occurred_at)),
            (
                "source".into(),
                Value::Enum(ev.source.index() as u32, ev.source.as_str().into()),
            ),
            ("type".into(), Value::String(ev.event_type.to_string())),
            (
                "attributes".into(),
                Value::Map(
                    ev.attributes
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                        .collect(),
                ),
            ),
        ])),
    ))
}

fn internal_datum(body: Value) -> anyhow::Result<Vec<u8>> {
    Ok(apache_avro::to_avro_datum(
        &SCHEMAS.internal,
        Value::Record(vec![("body".into(), body)]),
    )?)
}

/// Decodes an internal record; events are validated again (the log may be written by an
/// older or foreign producer).
pub fn decode_internal(bytes: &[u8]) -> Result<InternalRecord, Invalid> {
    super::fast::decode_internal(bytes)
}

/// `decode_internal` through apache-avro's generic path.
pub fn decode_internal_generic(bytes: &[u8]) -> Result<InternalRecord, Invalid> {
    let Value::Record(mut fields) = read_datum(&SCHEMAS.internal, bytes)? else {
        return Err(Invalid::Undecodable("datum is not a record".into()));
    };
    let Some((_, Value::Union(branch, body))) = fields.pop() else {
        return Err(Invalid::Undecodable("internal record without body".into()));
    };
    let Value::Record(fields) = *body else {
        return Err(Invalid::Undecodable("internal body is not a record".into()));
    };
    if branch == 1 {
        return match fields.into_iter().next() {
            Some((_, Value::Long(t) | Value::TimestampMillis(t))) => Ok(InternalRecord::Tick(t)),
            _ => Err(Invalid::Undecodable("tick without time".into())),
        };
    }
    let mut ev = EventFields::default();
    for (name, value) in fields {
        if let Some(Value::Enum(_, s)) = take_common(&mut ev, &name, "attributes", value) {
            ev.source = Some(s.into());
        }
    }
    ev.attributes.sort();
    Ok(InternalRecord::Event(ev.validate()?))
}

fn stage_value(s: Stage) -> Value {
    Value::Enum(s.index() as u32, s.as_str().into())
}

fn opt_long(v: Option<i64>) -> Value {
    match v {
        Some(n) => Value::Union(1, Box::new(Value::Long(n))),
        None => Value::Union(0, Box::new(Value::Null)),
    }
}

fn opt_bool(v: Option<bool>) -> Value {
    match v {
        Some(b) => Value::Union(1, Box::new(Value::Boolean(b))),
        None => Value::Union(0, Box::new(Value::Null)),
    }
}

/// Encodes an output record with its topic's schema (transition.avsc or sla_record.avsc),
/// with the hand-written writer (`codec::fast`); [`encode_output_generic`] is apache-avro's,
/// which it is tested against.
pub fn encode_output(rec: &Output) -> Vec<u8> {
    super::fast::encode_output(rec)
}

/// `encode_output` through apache-avro's generic path (a value tree, checked against the
/// schema).
///
/// Errors: the value does not fit the schema (never for a record leadflow builds).
pub fn encode_output_generic(rec: &Output) -> anyhow::Result<Vec<u8>> {
    Ok(match rec {
        Output::Transition(t) => apache_avro::to_avro_datum(
            &SCHEMAS.transition,
            Value::Record(vec![
                (
                    "transition_id".into(),
                    Value::String(t.transition_id.as_str().to_owned()),
                ),
                (
                    "lead_key".into(),
                    Value::String(t.lead_key.as_str().to_owned()),
                ),
                ("from_stage".into(), stage_value(t.from_stage)),
                ("to_stage".into(), stage_value(t.to_stage)),
                ("reason".into(), Value::String(t.reason.as_str().to_owned())),
                ("occurred_at".into(), Value::TimestampMillis(t.occurred_at)),
                (
                    "trigger_event_id".into(),
                    Value::String(t.trigger_event_id.as_str().to_owned()),
                ),
                ("engagement".into(), Value::Double(t.engagement)),
                ("fit".into(), Value::Double(t.fit)),
                ("grade".into(), Value::String(t.grade.as_str().to_owned())),
                ("owner_id".into(), opt_string(t.owner_id.as_deref())),
            ]),
        )?,
        Output::Sla(s) => apache_avro::to_avro_datum(
            &SCHEMAS.sla,
            Value::Record(vec![
                (
                    "sla_event_id".into(),
                    Value::String(s.sla_event_id.as_str().to_owned()),
                ),
                (
                    "lead_key".into(),
                    Value::String(s.lead_key.as_str().to_owned()),
                ),
                ("policy".into(), Value::String(s.policy.as_str().to_owned())),
                (
                    "kind".into(),
                    Value::Enum(s.kind as u32, s.kind.as_str().into()),
                ),
                ("stage".into(), stage_value(s.stage)),
                ("started_at".into(), Value::TimestampMillis(s.started_at)),
                ("deadline".into(), Value::TimestampMillis(s.deadline)),
                ("at".into(), Value::TimestampMillis(s.at)),
                ("response_ms".into(), opt_long(s.response_ms)),
                ("on_time".into(), opt_bool(s.on_time)),
                ("owner_id".into(), opt_string(s.owner_id.as_deref())),
                (
                    "response_business_ms".into(),
                    opt_long(s.response_business_ms),
                ),
            ]),
        )?,
    })
}

/// Field accessors over a decoded output record.
struct Fields(Vec<(String, Value)>);

impl Fields {
    fn take(&mut self, name: &str) -> anyhow::Result<Value> {
        let i = self
            .0
            .iter()
            .position(|(n, _)| n == name)
            .ok_or_else(|| anyhow::anyhow!("field {name} missing"))?;
        Ok(self.0.swap_remove(i).1)
    }
    fn string(&mut self, name: &str) -> anyhow::Result<String> {
        match self.take(name)? {
            Value::String(s) => Ok(s),
            v => anyhow::bail!("field {name}: expected string, got {v:?}"),
        }
    }
    fn long(&mut self, name: &str) -> anyhow::Result<i64> {
        match self.take(name)? {
            Value::Long(n) | Value::TimestampMillis(n) => Ok(n),
            v => anyhow::bail!("field {name}: expected long, got {v:?}"),
        }
    }
    fn double(&mut self, name: &str) -> anyhow::Result<f64> {
        match self.take(name)? {
            Value::Double(x) => Ok(x),
            v => anyhow::bail!("field {name}: expected double, got {v:?}"),
        }
    }
    fn symbol(&mut self, name: &str) -> anyhow::Result<String> {
        match self.take(name)? {
            Value::Enum(_, s) => Ok(s),
            v => anyhow::bail!("field {name}: expected enum, got {v:?}"),
        }
    }
    fn stage(&mut self, name: &str) -> anyhow::Result<Stage> {
        let s = self.symbol(name)?;
        Stage::parse(&s).ok_or_else(|| anyhow::anyhow!("field {name}: unknown stage {s}"))
    }
    fn optional(&mut self, name: &str) -> anyhow::Result<Option<Value>> {
        match self.take(name)? {
            Value::Union(_, inner) => Ok(match *inner {
                Value::Null => None,
                v => Some(v),
            }),
            v => anyhow::bail!("field {name}: expected union, got {v:?}"),
        }
    }
}

/// Decodes an output record (consumers of the output topics; tests).
pub fn decode_output(is_transition: bool, bytes: &[u8]) -> anyhow::Result<Output> {
    let schema = if is_transition {
        &SCHEMAS.transition
    } else {
        &SCHEMAS.sla
    };
    let Value::Record(fields) = read_datum(schema, bytes)? else {
        anyhow::bail!("output datum is not a record");
    };
    let mut f = Fields(fields);
    let owner_id = match f.optional("owner_id")? {
        Some(Value::String(s)) => Some(s.into()),
        _ => None,
    };
    if is_transition {
        return Ok(Output::Transition(Transition {
            transition_id: f.string("transition_id")?.into(),
            lead_key: f.string("lead_key")?.into(),
            from_stage: f.stage("from_stage")?,
            to_stage: f.stage("to_stage")?,
            reason: f.string("reason")?.into(),
            occurred_at: f.long("occurred_at")?,
            trigger_event_id: f.string("trigger_event_id")?.into(),
            engagement: f.double("engagement")?,
            fit: f.double("fit")?,
            grade: f.string("grade")?.into(),
            owner_id,
        }));
    }
    let kind = match f.symbol("kind")?.as_str() {
        "warning" => SlaKind::Warning,
        "breach" => SlaKind::Breach,
        "met" => SlaKind::Met,
        other => anyhow::bail!("unknown SLA kind {other}"),
    };
    Ok(Output::Sla(SlaRecord {
        sla_event_id: f.string("sla_event_id")?.into(),
        lead_key: f.string("lead_key")?.into(),
        policy: f.string("policy")?.into(),
        kind,
        stage: f.stage("stage")?,
        started_at: f.long("started_at")?,
        deadline: f.long("deadline")?,
        at: f.long("at")?,
        response_ms: match f.optional("response_ms")? {
            Some(Value::Long(n)) => Some(n),
            _ => None,
        },
        on_time: match f.optional("on_time")? {
            Some(Value::Boolean(b)) => Some(b),
            _ => None,
        },
        owner_id,
        response_business_ms: match f.optional("response_business_ms")? {
            Some(Value::Long(n)) => Some(n),
            _ => None,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(source: Source, t: &str, attrs: &[(&str, &str)]) -> Event {
        let mut attributes: Vec<(String, String)> = attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        attributes.sort();
        EventFields {
            event_id: Some("e-1".into()),
            lead_key: Some("ana@acme.io".into()),
            occurred_at: Some(1_794_837_600_000),
            source: Some(source.as_str().into()),
            event_type: Some(t.into()),
            attributes,
        }
        .validate()
        .expect("valid test event")
    }

    #[test]
    fn every_embedded_schema_parses() {
        let _ = &SCHEMAS.web;
        for s in [
            WEB_SCHEMA,
            EMAIL_SCHEMA,
            CRM_SCHEMA,
            INTERNAL_SCHEMA,
            TRANSITION_SCHEMA,
            SLA_SCHEMA,
        ] {
            Schema::parse_str(s).expect("schema parses");
        }
    }

    #[test]
    fn input_events_round_trip_plain_and_confluent() {
        let cases = [
            event(
                Source::Web,
                "page_view",
                &[
                    ("url", "https://x.io/pricing"),
                    ("utm_source", "g"),
                    ("custom", "1"),
                ],
            ),
            event(
                Source::Email,
                "click",
                &[("campaign", "nov"), ("link", "https://l")],
            ),
            event(
                Source::Crm,
                "lead_upsert",
                &[
                    ("title", "VP"),
                    ("employees", "850"),
                    ("country", "US"),
                    ("plan", "pro"),
                ],
            ),
            // A non-canonical number cannot be a long: it survives as a property.
            event(Source::Crm, "lead_upsert", &[("employees", "0850")]),
            event(Source::Web, "custom_type", &[]),
        ];
        for ev in cases {
            for framing in [Framing::Plain, Framing::Confluent] {
                let bytes = encode_input(&ev, framing, 42).expect("encodes");
                let back = decode_input(ev.source, &bytes, framing).expect("decodes");
                assert_eq!(back, ev, "{framing:?}");
            }
        }
    }

    #[test]
    fn confluent_header_is_checked() {
        let ev = event(Source::Web, "page_view", &[]);
        let bytes = encode_input(&ev, Framing::Confluent, 7).expect("encodes");
        assert_eq!(bytes[0], 0);
        assert_eq!(unframe(&bytes).expect("framed").0, 7);
        let mut wrong = bytes.clone();
        wrong[0] = 1;
        let err = decode_input(Source::Web, &wrong, Framing::Confluent).expect_err("bad magic");
        assert!(err.to_string().contains("magic byte"), "{err}");
        let err = decode_input(Source::Web, &bytes[..3], Framing::Confluent).expect_err("short");
        assert!(err.to_string().contains("5-byte"), "{err}");
    }

    #[test]
    fn truncated_and_trailing_bytes_are_undecodable() {
        let ev = event(Source::Email, "open", &[]);
        let bytes = encode_input(&ev, Framing::Plain, 0).expect("encodes");
        for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
            let err =
                decode_input(Source::Email, &bytes[..cut], Framing::Plain).expect_err("truncated");
            assert_eq!(err.code(), "undecodable");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        let err = decode_input(Source::Email, &longer, Framing::Plain).expect_err("trailing");
        assert!(err.to_string().contains("trailing"), "{err}");
    }

    #[test]
    fn decoded_input_is_validated() {
        let mut ev = event(Source::Crm, "lead_upsert", &[]);
        ev.event_type = "teleport".into();
        let bytes = encode_input(&ev, Framing::Plain, 0).expect("encodes");
        let err = decode_input(Source::Crm, &bytes, Framing::Plain).expect_err("invalid type");
        assert_eq!(err.code(), "unknown_crm_type");
        let mut ev = event(Source::Web, "page_view", &[]);
        ev.lead_key = String::new();
        let bytes = encode_input(&ev, Framing::Plain, 0).expect("encodes");
        assert_eq!(
            decode_input(Source::Web, &bytes, Framing::Plain).map_err(|e| e.code()),
            Err("empty_field")
        );
    }

    #[test]
    fn internal_records_round_trip() {
        let ev = event(Source::Crm, "owner_assigned", &[("owner_id", "rep-7")]);
        for rec in [
            InternalRecord::Event(ev),
            InternalRecord::Tick(1_795_000_000_000),
        ] {
            let bytes = encode_internal(&rec).expect("encodes");
            assert_eq!(decode_internal(&bytes).expect("decodes"), rec);
        }
    }

    #[test]
    fn output_records_round_trip() {
        let t = Output::Transition(Transition {
            transition_id: "a/t/1".into(),
            lead_key: "a".into(),
            from_stage: Stage::New,
            to_stage: Stage::Mql,
            reason: "score".into(),
            occurred_at: 5,
            trigger_event_id: "e".into(),
            engagement: 104.4621,
            fit: 60.0,
            grade: "A".into(),
            owner_id: None,
        });
        let s = Output::Sla(SlaRecord {
            sla_event_id: "a/s/p/1/met".into(),
            lead_key: "a".into(),
            policy: "p".into(),
            kind: SlaKind::Met,
            stage: Stage::Sal,
            started_at: 1,
            deadline: 2,
            at: 3,
            response_ms: Some(2),
            response_business_ms: Some(1),
            on_time: Some(false),
            owner_id: Some("rep-7".into()),
        });
        for rec in [t, s] {
            let bytes = encode_output(&rec);
            assert_eq!(bytes, encode_output_generic(&rec).expect("encodes"));
            let back =
                decode_output(matches!(rec, Output::Transition(_)), &bytes).expect("decodes");
            assert_eq!(back, rec);
        }
    }
}
