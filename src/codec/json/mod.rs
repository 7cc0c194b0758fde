//! JSON event decoding (SPEC §2: one object per line; unknown fields ignored) and JSON Lines
//! output of records.

use compact_str::CompactString;

use crate::model::event::{Event, EventFields, Invalid, Source};
use crate::model::records::Output;

mod scan;
mod write;

/// Decodes one JSON object into a validated event.
pub fn decode_event(bytes: &[u8]) -> Result<Event, Invalid> {
    decode(bytes, None)
}

/// Decodes a JSON message from a source's topic: a missing `source` is the topic's; another
/// source is invalid.
pub fn decode_event_from(topic_source: Source, bytes: &[u8]) -> Result<Event, Invalid> {
    let ev = decode(bytes, Some(topic_source))?;
    if ev.source != topic_source {
        return Err(Invalid::SourceMismatch {
            found: ev.source,
            topic: topic_source,
        });
    }
    Ok(ev)
}

/// One pass over the bytes with serde_json's parser, straight into the event's fields: no
/// `serde_json::Value` tree, no map of the fields (the tree took about half of replay's
/// decoding time). The result is the tree's to the byte, error text included, and
/// `tests::the_streaming_decoder_is_the_value_decoder` checks it against that decoder:
/// - a syntax error anywhere (trailing characters, nesting deeper than 128, a lone surrogate)
///   wins over every field check, because type errors are noted, not raised, while parsing;
/// - a field given twice counts with its last value, as in a JSON object read into a map;
/// - field checks run in the order `event_id`, `lead_key`, `source`, `type`, `occurred_at`,
///   `attributes`, and attributes are kept in key order (the order of that map).
///
/// Most lines never reach serde_json: the scanner of `scan` reads the plain ones (no escapes,
/// no floats, no arrays, no objects but `attributes` with scalar values) into the same
/// fields, and leaves every other line, and so every error, to serde_json.
fn decode(bytes: &[u8], default_source: Option<Source>) -> Result<Event, Invalid> {
    let top = match scan::top(bytes) {
        Some(top) => top,
        None => serde_top(bytes)
            .map_err(Invalid::Undecodable)?
            .ok_or_else(|| Invalid::Undecodable("expected a JSON object".into()))?,
    };
    let mut fields = EventFields {
        event_id: top.event_id.into_field("event_id")?,
        lead_key: top.lead_key.into_field("lead_key")?,
        occurred_at: None,
        source: top.source.into_field("source")?,
        event_type: top.event_type.into_field("type")?,
        attributes: Vec::new(),
    };
    if fields.source.is_none() {
        fields.source = default_source.map(|s| s.as_str().into());
    }
    fields.occurred_at = match top.occurred_at {
        Time::Absent => None,
        Time::Ms(t) => Some(t),
        Time::NotI64 => {
            return Err(Invalid::WrongType {
                field: "occurred_at".into(),
                expected: "an integer count of milliseconds (a JSON integer within i64)",
            })
        }
        Time::NotNumber => {
            return Err(Invalid::WrongType {
                field: "occurred_at".into(),
                expected: "an integer count of milliseconds (a JSON integer)",
            })
        }
    };
    match top.attributes {
        Attributes::Absent => {}
        Attributes::NotObject => {
            return Err(Invalid::WrongType {
                field: "attributes".into(),
                expected: "an object of string values",
            })
        }
        Attributes::Object(mut attrs) => {
            // Key order, the last of repeated keys: a stable sort keeps repeats in input
            // order, and the reversed dedup keeps the last of each run.
            attrs.sort_by(|a, b| a.0.cmp(&b.0));
            attrs.reverse();
            attrs.dedup_by(|later, kept| later.0 == kept.0);
            attrs.reverse();
            // `(String, Option<String>)` and `(String, String)` have one layout, so std
            // currently collects this in place: the list keeps its allocation.
            fields.attributes = attrs
                .into_iter()
                .map(|(k, v)| match v {
                    Some(v) => Ok((k, v)),
                    None => Err(Invalid::WrongType {
                        field: format!("attributes.{k}"),
                        expected: "a string",
                    }),
                })
                .collect::<Result<_, _>>()?;
        }
    }
    fields.validate()
}

/// The top-level object's fields through serde_json's parser: `Ok(None)` for valid JSON that
/// is not an object; `Err` the reason (`invalid JSON: ...`) for a syntax error.
fn serde_top(bytes: &[u8]) -> Result<Option<Top>, String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde::Deserializer::deserialize_any(&mut de, TopVisitor)
        .and_then(|top| de.end().map(|()| top))
        .map_err(|e| format!("invalid JSON: {e}"))
}

/// A string field as last given: absent or null, a string, or another type. The string is a
/// `CompactString` for the fields that are short (ids, source, type: no allocation up to 24
/// bytes), a `String` for the lead key.
#[derive(Debug, Default, PartialEq)]
enum Text<S = CompactString> {
    #[default]
    Absent,
    Value(S),
    WrongType,
}

impl<S> Text<S> {
    fn into_field(self, name: &'static str) -> Result<Option<S>, Invalid> {
        match self {
            Text::Absent => Ok(None),
            Text::Value(s) => Ok(Some(s)),
            Text::WrongType => Err(Invalid::WrongType {
                field: name.into(),
                expected: "a string",
            }),
        }
    }
}

#[derive(Debug, Default, PartialEq)]
enum Time {
    #[default]
    Absent,
    Ms(i64),
    /// A float, or an integer outside i64.
    NotI64,
    NotNumber,
}

#[derive(Debug, Default, PartialEq)]
enum Attributes {
    #[default]
    Absent,
    /// `(name, Some(value))`, or `None` for a value that is not a string; unsorted, repeats kept.
    Object(Vec<(String, Option<String>)>),
    NotObject,
}

/// The fields of the top-level object; `None` from the visitor: valid JSON, not an object.
#[derive(Debug, Default, PartialEq)]
struct Top {
    event_id: Text,
    lead_key: Text<String>,
    source: Text,
    event_type: Text,
    occurred_at: Time,
    attributes: Attributes,
}

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Passes over any value through `deserialize_any`, as the tree decoder would read it: the
/// same syntax checks, string checks and nesting limit (serde's `IgnoredAny` skips strings
/// and nesting more leniently in serde_json).
struct Skip;

impl<'de> de::Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Skip, D::Error> {
        d.deserialize_any(Kind).map(|_| Skip)
    }
}

/// What a value was, having read it whole.
#[derive(Clone, Copy, PartialEq)]
enum ValueKind {
    Null,
    Str,
    I64,
    OtherNumber,
    Other,
}

/// A value's kind, with the string kept (`Text`) or dropped (`Kind`).
struct Kind;

impl<'de> Visitor<'de> for Kind {
    type Value = ValueKind;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<ValueKind, E> {
        Ok(ValueKind::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<ValueKind, E> {
        Ok(ValueKind::Null)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<ValueKind, E> {
        Ok(ValueKind::Other)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<ValueKind, E> {
        Ok(ValueKind::I64)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<ValueKind, E> {
        Ok(if i64::try_from(v).is_ok() {
            ValueKind::I64
        } else {
            ValueKind::OtherNumber
        })
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<ValueKind, E> {
        Ok(ValueKind::OtherNumber)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<ValueKind, E> {
        Ok(ValueKind::Str)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ValueKind, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(ValueKind::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ValueKind, A::Error> {
        while map.next_key::<Skip>()?.is_some() {
            map.next_value::<Skip>()?;
        }
        Ok(ValueKind::Other)
    }
}

/// A string value kept, or the kind of any other value (read whole).
enum StrOr {
    Str(String),
    Kind(ValueKind),
}

struct StrOrSeed;

impl<'de> DeserializeSeed<'de> for StrOrSeed {
    type Value = StrOr;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<StrOr, D::Error> {
        d.deserialize_any(StrOrVisitor)
    }
}

struct StrOrVisitor;

impl<'de> Visitor<'de> for StrOrVisitor {
    type Value = StrOr;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<StrOr, E> {
        Ok(StrOr::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<StrOr, E> {
        Ok(StrOr::Str(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<StrOr, E> {
        Ok(StrOr::Kind(ValueKind::Null))
    }
    fn visit_none<E: de::Error>(self) -> Result<StrOr, E> {
        Ok(StrOr::Kind(ValueKind::Null))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<StrOr, E> {
        Kind.visit_bool(v).map(StrOr::Kind)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<StrOr, E> {
        Kind.visit_i64(v).map(StrOr::Kind)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<StrOr, E> {
        Kind.visit_u64(v).map(StrOr::Kind)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<StrOr, E> {
        Kind.visit_f64(v).map(StrOr::Kind)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<StrOr, A::Error> {
        Kind.visit_seq(seq).map(StrOr::Kind)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<StrOr, A::Error> {
        Kind.visit_map(map).map(StrOr::Kind)
    }
}

impl StrOr {
    fn text<S: From<String>>(self) -> Text<S> {
        match self {
            StrOr::Str(s) => Text::Value(s.into()),
            StrOr::Kind(ValueKind::Null) => Text::Absent,
            StrOr::Kind(_) => Text::WrongType,
        }
    }
}

/// `occurred_at`: its number, read as the tree's `as_i64` reads it.
struct TimeVisitor;

impl<'de> Visitor<'de> for TimeVisitor {
    type Value = Time;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Time, E> {
        Ok(Time::Ms(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Time, E> {
        Ok(i64::try_from(v).map_or(Time::NotI64, Time::Ms))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Time, E> {
        Ok(Time::NotI64)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Time, E> {
        Ok(Time::Absent)
    }
    fn visit_none<E: de::Error>(self) -> Result<Time, E> {
        Ok(Time::Absent)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Time, E> {
        Ok(Time::NotNumber)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Time, E> {
        Ok(Time::NotNumber)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Time, A::Error> {
        Kind.visit_seq(seq).map(|_| Time::NotNumber)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Time, A::Error> {
        Kind.visit_map(map).map(|_| Time::NotNumber)
    }
}

struct TimeSeed;

impl<'de> DeserializeSeed<'de> for TimeSeed {
    type Value = Time;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Time, D::Error> {
        d.deserialize_any(TimeVisitor)
    }
}

/// `attributes`: an object's `(name, string value or None)` pairs as given.
struct AttributesVisitor;

impl<'de> Visitor<'de> for AttributesVisitor {
    type Value = Attributes;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Attributes, A::Error> {
        let mut attrs = Vec::with_capacity(map.size_hint().unwrap_or(4));
        while let Some(name) = map.next_key::<String>()? {
            let value = match map.next_value_seed(StrOrSeed)? {
                StrOr::Str(s) => Some(s),
                StrOr::Kind(_) => None,
            };
            attrs.push((name, value));
        }
        Ok(Attributes::Object(attrs))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Attributes, E> {
        Ok(Attributes::Absent)
    }
    fn visit_none<E: de::Error>(self) -> Result<Attributes, E> {
        Ok(Attributes::Absent)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Attributes, E> {
        Ok(Attributes::NotObject)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Attributes, E> {
        Ok(Attributes::NotObject)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Attributes, E> {
        Ok(Attributes::NotObject)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Attributes, E> {
        Ok(Attributes::NotObject)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Attributes, E> {
        Ok(Attributes::NotObject)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Attributes, A::Error> {
        Kind.visit_seq(seq).map(|_| Attributes::NotObject)
    }
}

struct AttributesSeed;

impl<'de> DeserializeSeed<'de> for AttributesSeed {
    type Value = Attributes;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Attributes, D::Error> {
        d.deserialize_any(AttributesVisitor)
    }
}

/// The top level: `Some(fields)` for an object, `None` for any other value (read whole).
struct TopVisitor;

impl<'de> Visitor<'de> for TopVisitor {
    type Value = Option<Top>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<Top>, A::Error> {
        let mut top = Top::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key.0.as_ref() {
                "event_id" => top.event_id = map.next_value_seed(StrOrSeed)?.text(),
                "lead_key" => top.lead_key = map.next_value_seed(StrOrSeed)?.text(),
                "source" => top.source = map.next_value_seed(StrOrSeed)?.text(),
                "type" => top.event_type = map.next_value_seed(StrOrSeed)?.text(),
                "occurred_at" => top.occurred_at = map.next_value_seed(TimeSeed)?,
                "attributes" => top.attributes = map.next_value_seed(AttributesSeed)?,
                _ => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(Some(top))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<Top>, E> {
        Ok(None)
    }
    fn visit_none<E: de::Error>(self) -> Result<Option<Top>, E> {
        Ok(None)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Option<Top>, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Option<Top>, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Option<Top>, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Option<Top>, E> {
        Ok(None)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Option<Top>, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Option<Top>, A::Error> {
        Kind.visit_seq(seq).map(|_| None)
    }
}

/// An object key, borrowed from the input unless it has escapes.
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key<'de>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Appends one record as a JSON line (with its `"record"` field) to `out`: serde_json's
/// bytes for the record, written by hand (`write`).
pub fn write_record(out: &mut Vec<u8>, rec: &Output) {
    write::record(out, rec);
    out.push(b'\n');
}

/// One record as a JSON object (a Kafka message's value with `output.format = "json"`):
/// serde_json's bytes for it, written by hand.
pub fn encode_record(rec: &Output) -> Vec<u8> {
    let mut out = Vec::with_capacity(320);
    write::record(&mut out, rec);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    /// The decoder before the streaming one, through a `serde_json::Value` tree: the model
    /// the streaming decoder must match, error text included.
    fn value_decoder(bytes: &[u8], default_source: Option<Source>) -> Result<Event, Invalid> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| Invalid::Undecodable(format!("invalid JSON: {e}")))?;
        let Value::Object(mut obj) = value else {
            return Err(Invalid::Undecodable("expected a JSON object".into()));
        };
        let mut string_field = |name: &'static str| match obj.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(Invalid::WrongType {
                field: name.into(),
                expected: "a string",
            }),
        };
        let mut fields = EventFields {
            event_id: string_field("event_id")?.map(Into::into),
            lead_key: string_field("lead_key")?,
            occurred_at: None,
            source: string_field("source")?.map(Into::into),
            event_type: string_field("type")?.map(Into::into),
            attributes: Vec::new(),
        };
        if fields.source.is_none() {
            fields.source = default_source.map(|s| s.as_str().into());
        }
        fields.occurred_at = match obj.remove("occurred_at") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match n.as_i64() {
                Some(t) => Some(t),
                None => {
                    return Err(Invalid::WrongType {
                        field: "occurred_at".into(),
                        expected: "an integer count of milliseconds (a JSON integer within i64)",
                    })
                }
            },
            Some(_) => {
                return Err(Invalid::WrongType {
                    field: "occurred_at".into(),
                    expected: "an integer count of milliseconds (a JSON integer)",
                })
            }
        };
        match obj.remove("attributes") {
            None | Some(Value::Null) => {}
            Some(Value::Object(attrs)) => {
                for (k, v) in attrs {
                    match v {
                        Value::String(s) => fields.attributes.push((k, s)),
                        _ => {
                            return Err(Invalid::WrongType {
                                field: format!("attributes.{k}"),
                                expected: "a string",
                            })
                        }
                    }
                }
            }
            Some(_) => {
                return Err(Invalid::WrongType {
                    field: "attributes".into(),
                    expected: "an object of string values",
                })
            }
        }
        fields.validate()
    }

    fn same_as_the_model(bytes: &[u8]) -> Result<(), TestCaseError> {
        for source in [None, Some(Source::Web)] {
            let fast = format!("{:?}", decode(bytes, source));
            let model = format!("{:?}", value_decoder(bytes, source));
            prop_assert_eq!(fast, model, "input {:?}", String::from_utf8_lossy(bytes));
        }
        Ok(())
    }

    /// JSON text of any value, nested up to `depth`, with the strings that matter here.
    pub(super) fn json_value(depth: u32) -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            Just("99999999999999999999".to_string()),
            Just("-1.5e3".to_string()),
            Just("1.0".to_string()),
            Just("-0".to_string()),
            prop::sample::select(vec![
                r#""web""#,
                r#""crm""#,
                r#""page_view""#,
                r#""lead_upsert""#,
                r#""""#,
                r#""a\u00e9\n""#,
                r#""\ud83d\ude00""#,
                r#""x""#,
                r#""k@b.c""#,
            ])
            .prop_map(str::to_string),
        ];
        leaf.prop_recursive(depth, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec((key(), inner), 0..4).prop_map(|kv| {
                    let body: Vec<String> =
                        kv.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
                    format!("{{{}}}", body.join(","))
                }),
            ]
        })
    }

    /// Keys: the event's fields (one spelled with an escape), names one byte off theirs,
    /// attribute names, unknown ones.
    pub(super) fn key() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            r#""event_id""#,
            r#""lead_key""#,
            r#""occurred_at""#,
            r#""source""#,
            r#""type""#,
            r#""attributes""#,
            r#""event\u005fid""#,
            // One byte more or less than a field's name: `scan`'s word compare must miss.
            r#""event_idx""#,
            r#""lead_ke""#,
            r#""occurred_a""#,
            r#""occurred_at_""#,
            r#""sources""#,
            r#""typ""#,
            r#""types""#,
            r#""attribute""#,
            r#""url""#,
            r#""b""#,
            r#""a""#,
            r#""extra""#,
            r#""""#,
        ])
        .prop_map(str::to_string)
    }

    /// An object of fields, each maybe repeated, with valid values mostly.
    /// `text` cut at `at` (`edit` 0), with `byte` inserted there (1), or with the byte there
    /// removed (2).
    pub(super) fn damaged(text: String, at: prop::sample::Index, edit: u8, byte: u8) -> Vec<u8> {
        let mut bytes = text.into_bytes();
        let i = at.index(bytes.len() + 1);
        match edit {
            0 => bytes.truncate(i),
            1 => bytes.insert(i, byte),
            _ => {
                if i < bytes.len() {
                    bytes.remove(i);
                }
            }
        }
        bytes
    }

    pub(super) fn event_like() -> impl Strategy<Value = String> {
        let field = prop_oneof![
            3 => Just(r#""event_id":"e1""#.to_string()),
            3 => Just(r#""lead_key":"a@b.c""#.to_string()),
            3 => Just(r#""occurred_at":1700000000000"#.to_string()),
            3 => Just(r#""source":"web""#.to_string()),
            3 => Just(r#""type":"page_view""#.to_string()),
            2 => prop::collection::vec(
                (prop::sample::select(vec![r#""url""#, r#""b""#, r#""a""#, r#""form""#]), json_value(1)),
                0..5,
            )
            .prop_map(|kv| {
                let body: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
                format!(r#""attributes":{{{}}}"#, body.join(","))
            }),
            1 => (key(), json_value(3)).prop_map(|(k, v)| format!("{k}:{v}")),
        ];
        prop::collection::vec(field, 0..9).prop_map(|f| format!("{{{}}}", f.join(",")))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn the_streaming_decoder_is_the_value_decoder(text in event_like()) {
            same_as_the_model(text.as_bytes())?;
        }

        /// The same lines cut, with a byte inserted or removed: syntax errors must win over
        /// field checks, and say the same.
        #[test]
        fn damaged_lines_get_the_same_reason(
            text in event_like(),
            at in any::<prop::sample::Index>(),
            edit in 0..3u8,
            byte in prop::sample::select(b"{}[]\":,\\ 0e-.nutf\xff".to_vec()),
        ) {
            same_as_the_model(&damaged(text, at, edit, byte))?;
        }

        #[test]
        fn any_json_value_gets_the_same_reason(text in json_value(4)) {
            same_as_the_model(text.as_bytes())?;
        }
    }

    #[test]
    fn nesting_past_the_parsers_limit_is_the_same_error() {
        for depth in [127, 128, 129, 200] {
            let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            for text in [
                format!(r#"{{"extra":{deep},"event_id":"e"}}"#),
                format!(r#"{{"attributes":{{"a":{deep}}}}}"#),
                format!(r#"{{"occurred_at":{deep}}}"#),
                deep.clone(),
            ] {
                same_as_the_model(text.as_bytes()).expect("same as the model");
            }
        }
    }

    #[test]
    fn topic_source_fills_in_and_must_agree() {
        let no_source = br#"{"event_id":"e","lead_key":"k","occurred_at":1,"type":"open"}"#;
        let e = decode_event_from(Source::Email, no_source).expect("valid");
        assert_eq!(e.source, Source::Email);
        let crm_on_web =
            br#"{"event_id":"e","lead_key":"k","occurred_at":1,"source":"crm","type":"recycled"}"#;
        let err = decode_event_from(Source::Web, crm_on_web).expect_err("mismatch");
        assert_eq!(err.code(), "source_mismatch");
        assert!(
            decode_event(no_source).is_err(),
            "replay lines need a source"
        );
    }

    #[test]
    fn decodes_a_full_event() {
        let e = decode_event(
            br#"{"event_id":"e1","lead_key":"a@b.c","occurred_at":12,"source":"web","type":"page_view","attributes":{"url":"u"},"extra":1}"#,
        )
        .expect("valid");
        assert_eq!(e.source, Source::Web);
        assert_eq!(e.occurred_at, 12);
        assert_eq!(e.attribute("url"), Some("u"));
    }

    #[test]
    fn attributes_are_optional() {
        let e = decode_event(
            br#"{"event_id":"e1","lead_key":"k","occurred_at":0,"source":"email","type":"open"}"#,
        )
        .expect("valid");
        assert!(e.attributes.is_empty());
    }

    #[test]
    fn rejects_with_reasons() {
        let cases: [(&[u8], &str); 8] = [
            (b"this is not json", "undecodable"),
            (b"[1,2]", "undecodable"),
            (br#"{"event_id":"x","occurred_at":1,"source":"web","type":"t"}"#, "missing_field"),
            (br#"{"event_id":"x","lead_key":"k","occurred_at":1.5,"source":"web","type":"t"}"#, "wrong_type"),
            (br#"{"event_id":"x","lead_key":"k","occurred_at":"1","source":"web","type":"t"}"#, "wrong_type"),
            (br#"{"event_id":"x","lead_key":"k","occurred_at":1,"source":"web","type":"t","attributes":{"n":5}}"#, "wrong_type"),
            (br#"{"event_id":7,"lead_key":"k","occurred_at":1,"source":"web","type":"t"}"#, "wrong_type"),
            (br#"{"event_id":"x","lead_key":"k","occurred_at":99999999999999999999,"source":"web","type":"t"}"#, "wrong_type"),
        ];
        for (input, code) in cases {
            let err = decode_event(input).expect_err("must be invalid");
            assert_eq!(
                err.code(),
                code,
                "{}: {err}",
                String::from_utf8_lossy(input)
            );
        }
    }
}
