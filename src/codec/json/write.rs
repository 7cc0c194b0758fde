//! Output records as JSON (SPEC §7; replay's JSON Lines), written by hand: the bytes
//! serde_json writes for the same record, without its serializer's generic machinery.
//!
//! Why: replay's writer thread shares a core with the reader, and serializing through serde
//! was most of its time. The layout is serde's for `Output` (the `"record"` tag first, then
//! the fields in declaration order, `null` for `None`); strings are escaped as serde_json
//! escapes them (`\"`, `\\`, `\b \f \n \r \t`, other control characters as `\u00xx`,
//! everything else as is); numbers through `itoa` and `zmij`, the crates serde_json prints
//! them with (a float that is not finite as `null`). `tests::the_writer_is_serde_json`
//! compares the bytes with serde_json's on generated records.

use super::scan::special_bytes;
use crate::model::records::{Output, SlaRecord, Transition};

/// Appends `rec` as one JSON object (no newline) to `out`.
pub(super) fn record(out: &mut Vec<u8>, rec: &Output) {
    match rec {
        Output::Transition(t) => transition(out, t),
        Output::Sla(s) => sla(out, s),
    }
}

fn transition(out: &mut Vec<u8>, t: &Transition) {
    out.extend_from_slice(br#"{"record":"transition","transition_id":"#);
    string(out, &t.transition_id);
    key(out, "lead_key");
    string(out, &t.lead_key);
    key(out, "from_stage");
    string(out, t.from_stage.as_str());
    key(out, "to_stage");
    string(out, t.to_stage.as_str());
    key(out, "reason");
    string(out, &t.reason);
    key(out, "occurred_at");
    int(out, t.occurred_at);
    key(out, "trigger_event_id");
    string(out, &t.trigger_event_id);
    key(out, "engagement");
    float(out, t.engagement);
    key(out, "fit");
    float(out, t.fit);
    key(out, "grade");
    string(out, &t.grade);
    key(out, "owner_id");
    option(out, t.owner_id.as_deref(), string);
    out.push(b'}');
}

fn sla(out: &mut Vec<u8>, s: &SlaRecord) {
    out.extend_from_slice(br#"{"record":"sla","sla_event_id":"#);
    string(out, &s.sla_event_id);
    key(out, "lead_key");
    string(out, &s.lead_key);
    key(out, "policy");
    string(out, &s.policy);
    key(out, "kind");
    string(out, s.kind.as_str());
    key(out, "stage");
    string(out, s.stage.as_str());
    key(out, "started_at");
    int(out, s.started_at);
    key(out, "deadline");
    int(out, s.deadline);
    key(out, "at");
    int(out, s.at);
    key(out, "response_ms");
    option(out, s.response_ms, int);
    key(out, "response_business_ms");
    option(out, s.response_business_ms, int);
    key(out, "on_time");
    option(out, s.on_time, |out, b| {
        out.extend_from_slice(if b { b"true" } else { b"false" })
    });
    key(out, "owner_id");
    option(out, s.owner_id.as_deref(), string);
    out.push(b'}');
}

/// `,"name":` (names here are plain ASCII: no escapes).
fn key(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

fn option<T>(out: &mut Vec<u8>, v: Option<T>, write: impl FnOnce(&mut Vec<u8>, T)) {
    match v {
        Some(v) => write(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

fn int(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

fn float(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        out.extend_from_slice(zmij::Buffer::new().format_finite(v).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

/// A JSON string: runs of plain bytes copied whole, the others escaped. The runs are found
/// eight bytes at a time (`special_bytes`: a quote, a backslash or a control character); its
/// lowest mark is exact, so that byte is escaped and the steps go on after it. The last
/// bytes, fewer than eight, go one at a time.
fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    loop {
        while let Some(word) = bytes
            .get(i..i + 8)
            .and_then(|c| <[u8; 8]>::try_from(c).ok())
        {
            let special = special_bytes(u64::from_le_bytes(word));
            if special != 0 {
                // The lowest mark is exact: the byte there needs escaping.
                i += (special.trailing_zeros() / 8) as usize;
                break;
            }
            i += 8;
        }
        let Some(&b) = bytes.get(i) else {
            break;
        };
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 0xf)],
                ]);
                i += 1;
                start = i;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::funnel::Stage;
    use crate::model::records::SlaKind;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9@./_-]{0,30}",
            // Escapes, every control character, DEL, multi-byte characters.
            "[\"\\\\\u{0}-\u{1f}\u{7f} aé€😀/]{0,20}",
            // Plain runs longer than the writer's eight-byte steps around one byte to escape.
            "[a-zé€😀]{0,20}[\"\\\\\u{0}-\u{1f}]?[a-z€]{0,20}",
        ]
    }

    fn number() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>(),
            (-1_000_000i64..1_000_000).prop_map(|n| n as f64 / 10_000.0),
            Just(0.0),
            Just(-0.0),
            Just(1e21),
            Just(f64::NAN),
            Just(f64::INFINITY),
        ]
    }

    fn stage() -> impl Strategy<Value = Stage> {
        prop::sample::select(Stage::ALL.to_vec())
    }

    prop_compose! {
        fn a_transition()(
            ids in (text(), text(), text(), text(), text()),
            from in stage(), to in stage(),
            occurred_at in any::<i64>(),
            engagement in number(), fit in number(),
            owner in prop::option::of(text()),
        ) -> Output {
            Output::Transition(Transition {
                transition_id: ids.0.into(),
                lead_key: ids.1.into(),
                from_stage: from,
                to_stage: to,
                reason: ids.2.into(),
                occurred_at,
                trigger_event_id: ids.3.into(),
                engagement,
                fit,
                grade: ids.4.into(),
                owner_id: owner.map(Into::into),
            })
        }
    }

    prop_compose! {
        fn an_sla()(
            ids in (text(), text(), text()),
            kind in prop::sample::select(vec![SlaKind::Warning, SlaKind::Breach, SlaKind::Met]),
            stage in stage(),
            times in (any::<i64>(), any::<i64>(), any::<i64>()),
            response in (prop::option::of(any::<i64>()), prop::option::of(any::<i64>())),
            on_time in prop::option::of(any::<bool>()),
            owner in prop::option::of(text()),
        ) -> Output {
            Output::Sla(SlaRecord {
                sla_event_id: ids.0.into(),
                lead_key: ids.1.into(),
                policy: ids.2.into(),
                kind,
                stage,
                started_at: times.0,
                deadline: times.1,
                at: times.2,
                response_ms: response.0,
                response_business_ms: response.1,
                on_time,
                owner_id: owner.map(Into::into),
            })
        }
    }

    /// Ours and serde_json's bytes equal, both shown when they are not.
    fn same_bytes(ours: &[u8], serde: &[u8]) -> Result<(), TestCaseError> {
        prop_assert!(
            ours == serde,
            "ours:  {}\nserde: {}",
            String::from_utf8_lossy(ours),
            String::from_utf8_lossy(serde)
        );
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn a_string_is_escaped_as_serde_json_escapes_it(
            s in prop_oneof![
                text(),
                // Any characters, control characters included (`any::<String>()` has none).
                prop::collection::vec(any::<char>(), 0..40)
                    .prop_map(|cs| cs.into_iter().collect::<String>()),
                "[a-z]{7,17}[\u{0}-\u{1f}\"\\\\]{1,3}",
                // Two bytes to escape more than eight apart, multi-byte characters between.
                "[a-z]{0,17}[\u{0}-\u{1f}\"\\\\]{1,3}[a-zé€]{0,17}[\u{0}-\u{1f}\"\\\\]?[a-z]{0,9}",
            ]
        ) {
            let mut ours = Vec::new();
            string(&mut ours, &s);
            same_bytes(&ours, &serde_json::to_vec(&s).expect("serde_json"))?;
        }

        #[test]
        fn the_writer_is_serde_json(rec in prop_oneof![a_transition(), an_sla()]) {
            let mut ours = Vec::new();
            record(&mut ours, &rec);
            same_bytes(&ours, &serde_json::to_vec(&rec).expect("serde_json"))?;
        }
    }
}
