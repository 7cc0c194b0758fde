//! JSON event decoding (SPEC §2: one object per line; unknown fields ignored) and JSON Lines
//! output of records.

use serde_json::Value;

use crate::model::event::{Event, EventFields, Invalid, Source};
use crate::model::records::Output;

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

fn decode(bytes: &[u8], default_source: Option<Source>) -> Result<Event, Invalid> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| Invalid::Undecodable(format!("invalid JSON: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(Invalid::Undecodable("expected a JSON object".into()));
    };
    let mut fields = EventFields {
        event_id: string_field(&mut obj, "event_id")?,
        lead_key: string_field(&mut obj, "lead_key")?,
        occurred_at: None,
        source: string_field(&mut obj, "source")?,
        event_type: string_field(&mut obj, "type")?,
        attributes: Vec::new(),
    };
    if fields.source.is_none() {
        fields.source = default_source.map(|s| s.as_str().to_string());
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
            fields.attributes.reserve(attrs.len());
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

fn string_field(
    obj: &mut serde_json::Map<String, Value>,
    name: &'static str,
) -> Result<Option<String>, Invalid> {
    match obj.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Invalid::WrongType {
            field: name.into(),
            expected: "a string",
        }),
    }
}

/// Appends one record as a JSON line (with its `"record"` field) to `out`.
pub fn write_record(out: &mut Vec<u8>, rec: &Output) {
    // Serializing our own plain structs into a Vec cannot fail.
    if serde_json::to_writer(&mut *out, rec).is_ok() {
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
