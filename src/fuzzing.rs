//! Entry points for the fuzz targets in `fuzz/` and for their regression corpus, which
//! `tests/fuzz_regressions.rs` replays in CI. Each takes arbitrary bytes and must return
//! normally: a panic, an abort or a hang is a finding. Where a decode succeeds, a property
//! that could fail is checked too (round trips).

use std::sync::{Arc, LazyLock};

use crate::codec::avro::{self, Framing, InternalRecord};
use crate::codec::json;
use crate::config::Settings;
use crate::engine::{PartitionState, SnapshotError};
use crate::model::event::Source;
use crate::model::rules::{Limits, Ruleset};

static RULES: LazyLock<Arc<Ruleset>> = LazyLock::new(|| {
    let settings = Settings::from_toml(include_str!("../examples/config.toml"));
    // The example config is a constant of this crate; a test loads it.
    Arc::clone(&settings.expect("the example config is valid").rules)
});

/// The three input decoders and the internal-record decoder (hand-written reader); a decoded
/// event re-encodes and decodes to itself.
pub fn avro_input(data: &[u8]) {
    for source in Source::ALL {
        if let Ok(ev) = avro::decode_input(source, data, Framing::Plain) {
            let _ = ev.check_limits(&Limits::default());
            let again = avro::encode_input(&ev, Framing::Plain, 0)
                .and_then(|b| Ok(avro::decode_input(source, &b, Framing::Plain)?));
            assert_eq!(again.ok().as_ref(), Some(&ev), "input round trip");
        }
    }
    if let Ok(rec) = avro::decode_internal(data) {
        let again = avro::encode_internal(&rec).map(|b| avro::decode_internal(&b));
        assert!(
            matches!(again, Ok(Ok(ref r)) if *r == rec),
            "internal round trip"
        );
        if let InternalRecord::Event(ev) = rec {
            let _ = ev.check_limits(&Limits::default());
        }
    }
}

/// Confluent framing, then the datum read both without a registry (leadflow's schema) and
/// with leadflow's schema as the writer (the registry path, apache-avro's resolution).
pub fn confluent(data: &[u8]) {
    avro::bound_generic_allocations(Limits::default().max_message_bytes);
    let Ok((_, datum)) = avro::unframe(data) else {
        return;
    };
    for source in Source::ALL {
        let plain = avro::decode_input(source, data, Framing::Confluent);
        let resolved = avro::decode_input_with_writer(source, avro::input_schema(source), datum);
        // The same schema on both sides: both readers must agree on valid datums.
        if let (Ok(a), Ok(b)) = (&plain, &resolved) {
            assert_eq!(a, b, "fast and resolving readers differ");
        }
    }
}

/// A replay line (and a JSON topic message): a decoded event prints and re-parses to itself.
pub fn json_line(data: &[u8]) {
    if let Ok(ev) = json::decode_event(data) {
        let _ = ev.check_limits(&Limits::default());
        let text = crate::gen::to_json(&ev).to_string();
        let again = json::decode_event(text.as_bytes());
        assert_eq!(again.as_ref().ok(), Some(&ev), "JSON round trip");
    }
}

/// The snapshot decoder. Random bytes would stop at the checksum, so the input is taken as a
/// body and framed with the magic, the version and a correct CRC; a decoded state encodes to
/// bytes that decode to the same encoding.
pub fn snapshot(data: &[u8]) {
    let rules = Arc::clone(&RULES);
    let _ = PartitionState::decode_snapshot(Arc::clone(&rules), data);
    let mut framed = Vec::with_capacity(data.len() + 10);
    framed.extend_from_slice(b"LFSN");
    framed.extend_from_slice(&3u16.to_le_bytes());
    framed.extend_from_slice(data);
    let crc = crc32fast::hash(&framed);
    framed.extend_from_slice(&crc.to_le_bytes());
    match PartitionState::decode_snapshot(Arc::clone(&rules), &framed) {
        Ok((st, pos)) => {
            let bytes = st.encode_snapshot(pos);
            let (back, _) = PartitionState::decode_snapshot(rules, &bytes)
                .unwrap_or_else(|e| panic!("re-encoded snapshot does not decode: {e}"));
            assert_eq!(back.encode_snapshot(pos), bytes, "snapshot round trip");
        }
        Err(SnapshotError::Checksum { .. }) => panic!("a correct checksum was refused"),
        Err(_) => {}
    }
}

/// The config loader: any text gives settings or an error, never a panic.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Settings::from_toml(text);
    }
}

/// A fuzz target: arbitrary bytes in, returns normally or panics.
pub type Target = fn(&[u8]);

/// Every target by name (the regression test runs each corpus file through its target).
pub const TARGETS: [(&str, Target); 5] = [
    ("avro_input", avro_input),
    ("confluent", confluent),
    ("json_line", json_line),
    ("snapshot", snapshot),
    ("config", config),
];
