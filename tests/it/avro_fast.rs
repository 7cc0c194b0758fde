//! The hand-written Avro reader (`codec::fast`) against apache-avro's generic path: the same
//! event for every valid datum, and the same verdict (decoded or undecodable) for corrupted
//! ones, including truncations, flipped bytes and hostile lengths. The hand-written writer of
//! output records against apache-avro's: the same bytes.

use leadflow::codec::avro::{self, Framing, InternalRecord};
use leadflow::model::event::{Event, EventFields, Source};
use leadflow::model::funnel::Stage;
use leadflow::model::records::{Output, SlaKind, SlaRecord, Transition};
use proptest::prelude::*;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_]{0,12}",
        "\\PC{0,8}",
        Just(String::new()),
        Just("owner_id".to_string()),
        Just("url".to_string()),
        Just("employees".to_string()),
        Just("250".to_string()),
    ]
}

fn event() -> impl Strategy<Value = EventFields> {
    (
        "[a-z0-9]{1,10}",
        "[a-z@.]{1,20}",
        prop_oneof![0..2_000_000_000_000i64, any::<i64>()],
        prop::sample::select(vec![
            ("web", "page_view"),
            ("web", "custom"),
            ("email", "click"),
            ("crm", "lead_upsert"),
            ("crm", "owner_assigned"),
        ]),
        prop::collection::vec((text(), text()), 0..8),
    )
        .prop_map(|(id, key, t, (source, ty), attrs)| EventFields {
            event_id: Some(id.into()),
            lead_key: Some(key),
            occurred_at: Some(t),
            source: Some(source.into()),
            event_type: Some(ty.into()),
            attributes: attrs,
        })
}

/// A corruption of a datum: truncate, flip a byte, insert a byte, or overwrite with a large
/// varint (a hostile length or count).
fn corrupt(bytes: &[u8], kind: u8, at: usize, byte: u8) -> Vec<u8> {
    let mut b = bytes.to_vec();
    if b.is_empty() {
        return vec![byte];
    }
    let at = at % b.len();
    match kind % 4 {
        0 => b.truncate(at),
        1 => b[at] ^= byte | 1,
        2 => b.insert(at, byte),
        _ => {
            b.splice(at..at, [0xfe, 0xff, 0xff, 0xff, 0x0f]);
        }
    }
    b
}

fn same_verdict(
    fast: Result<Event, leadflow::model::event::Invalid>,
    generic: Result<Event, leadflow::model::event::Invalid>,
) -> Result<(), TestCaseError> {
    match (fast, generic) {
        (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
        (Err(a), Err(b)) => prop_assert_eq!(a.code(), b.code()),
        (a, b) => prop_assert!(false, "fast {a:?} but generic {b:?}"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn input_datums_decode_the_same(fields in event(), framing in prop::bool::ANY) {
        let Ok(ev) = fields.validate() else { return Ok(()) };
        let framing = if framing { Framing::Confluent } else { Framing::Plain };
        let bytes = avro::encode_input(&ev, framing, 3).expect("encodes");
        let fast = avro::decode_input(ev.source, &bytes, framing);
        same_verdict(fast.clone(), avro::decode_input_generic(ev.source, &bytes, framing))?;
        // Encoding drops nothing: the decoded event has every attribute (typed or not).
        let decoded = fast.expect("valid datum decodes");
        let mut want = ev.attributes.clone();
        want.sort();
        prop_assert_eq!(decoded.attributes, want);
    }

    #[test]
    fn corrupted_input_datums_get_the_same_verdict(
        fields in event(), kind in any::<u8>(), at in any::<usize>(), byte in any::<u8>(),
    ) {
        let Ok(ev) = fields.validate() else { return Ok(()) };
        let bytes = avro::encode_input(&ev, Framing::Plain, 0).expect("encodes");
        let bad = corrupt(&bytes, kind, at, byte);
        for source in Source::ALL {
            same_verdict(
                avro::decode_input(source, &bad, Framing::Plain),
                avro::decode_input_generic(source, &bad, Framing::Plain),
            )?;
        }
    }

    #[test]
    fn internal_records_agree_both_ways(
        fields in event(), kind in any::<u8>(), at in any::<usize>(), byte in any::<u8>(),
        tick in any::<i64>(),
    ) {
        let Ok(mut ev) = fields.validate() else { return Ok(()) };
        // Maps have no order: decoding sorts attributes by key.
        ev.attributes.sort();
        for rec in [InternalRecord::Event(ev), InternalRecord::Tick(tick)] {
            let fast = avro::encode_internal(&rec).expect("encodes");
            let generic = avro::encode_internal_generic(&rec).expect("encodes");
            for bytes in [&fast, &generic] {
                prop_assert_eq!(&avro::decode_internal(bytes).expect("decodes"), &rec);
                prop_assert_eq!(&avro::decode_internal_generic(bytes).expect("decodes"), &rec);
            }
            let bad = corrupt(&fast, kind, at, byte);
            match (avro::decode_internal(&bad), avro::decode_internal_generic(&bad)) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(a), Err(b)) => prop_assert_eq!(a.code(), b.code()),
                (a, b) => prop_assert!(false, "fast {a:?} but generic {b:?}"),
            }
        }
    }
}

fn stage() -> impl Strategy<Value = Stage> {
    prop::sample::select(Stage::ALL.to_vec())
}

/// Any double, the special ones (NaN, infinities, -0) often.
fn double() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        prop::sample::select(vec![
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -0.0,
            104.4621
        ]),
    ]
}

/// Any long, the edges (where a varint takes its most bytes) often.
fn long() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        prop::sample::select(vec![i64::MIN, i64::MAX, -1, 0, 63, -64])
    ]
}

fn output() -> impl Strategy<Value = Output> {
    let transition = (
        (text(), text(), stage(), stage(), text(), long()),
        (text(), double(), double(), text(), prop::option::of(text())),
    )
        .prop_map(
            |((id, key, from, to, reason, at), (trigger, e, fit, grade, owner))| {
                Output::Transition(Transition {
                    transition_id: id.into(),
                    lead_key: key.into(),
                    from_stage: from,
                    to_stage: to,
                    reason: reason.into(),
                    occurred_at: at,
                    trigger_event_id: trigger.into(),
                    engagement: e,
                    fit,
                    grade: grade.into(),
                    owner_id: owner.map(Into::into),
                })
            },
        );
    let kind = prop::sample::select(vec![SlaKind::Warning, SlaKind::Breach, SlaKind::Met]);
    let sla = (
        (
            text(),
            text(),
            text(),
            kind,
            stage(),
            long(),
            long(),
            long(),
        ),
        (
            prop::option::of(long()),
            prop::option::of(any::<bool>()),
            prop::option::of(text()),
            prop::option::of(long()),
        ),
    )
        .prop_map(
            |((id, key, policy, kind, stage, started, deadline, at), (r, on, owner, rb))| {
                Output::Sla(SlaRecord {
                    sla_event_id: id.into(),
                    lead_key: key.into(),
                    policy: policy.into(),
                    kind,
                    stage,
                    started_at: started,
                    deadline,
                    at,
                    response_ms: r,
                    response_business_ms: rb,
                    on_time: on,
                    owner_id: owner.map(Into::into),
                })
            },
        );
    prop_oneof![transition, sla]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]

    /// The hand-written writer gives apache-avro's bytes, and they read back.
    #[test]
    fn output_records_encode_as_apache_avro_does(rec in output()) {
        let fast = avro::encode_output(&rec);
        let generic = avro::encode_output_generic(&rec).expect("encodes");
        prop_assert_eq!(&fast, &generic);
        let back = avro::decode_output(matches!(rec, Output::Transition(_)), &fast)
            .expect("decodes");
        // NaN is not equal to itself: compare the records' bytes instead.
        prop_assert_eq!(avro::encode_output(&back), fast);
    }
}

#[test]
fn a_hostile_map_count_is_rejected_without_allocating() {
    // A web datum whose properties map claims 2^40 entries in a 30-byte message.
    let mut b = Vec::new();
    for s in ["e1", "k@x", ""] {
        if s.is_empty() {
            b.push(0x02); // occurred_at = 1
        } else {
            b.push((s.len() * 2) as u8);
            b.extend_from_slice(s.as_bytes());
        }
    }
    b.extend_from_slice(&[0x12]);
    b.extend_from_slice(b"page_view");
    b.extend_from_slice(&[0; 6]); // six null typed fields
    b.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02]); // count 2^40
    let err = avro::decode_input(Source::Web, &b, Framing::Plain).expect_err("rejected");
    assert_eq!(err.code(), "undecodable", "{err}");
}
