//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use leadflow::config::Settings;
use leadflow::engine::PartitionState;
use leadflow::model::event::{Event, EventFields};
use leadflow::model::records::{Output, SlaRecord, Transition};

pub const H: i64 = 3_600_000;
pub const DAY: i64 = 24 * H;

/// A validated event; panics on invalid input (tests build valid events on purpose).
pub fn ev(id: &str, lead: &str, t: i64, source: &str, ty: &str, attrs: &[(&str, &str)]) -> Event {
    EventFields::from_parts(id, lead, t, source, ty, attrs)
        .validate()
        .expect("test event is valid")
}

pub fn state(toml: &str) -> PartitionState {
    let s = Settings::from_toml(toml).unwrap_or_else(|e| panic!("test config: {e}"));
    PartitionState::new(Arc::clone(&s.rules))
}

/// Applies events in order, returning all records.
pub fn run(state: &mut PartitionState, events: &[Event]) -> Vec<Output> {
    let mut out = Vec::new();
    for e in events {
        state.apply(e, &mut out);
    }
    out
}

/// The transitions among `out`, in order.
pub fn transitions(out: &[Output]) -> Vec<&Transition> {
    out.iter()
        .filter_map(|o| match o {
            Output::Transition(t) => Some(t),
            _ => None,
        })
        .collect()
}

/// The SLA records among `out`, in order.
pub fn slas(out: &[Output]) -> Vec<&SlaRecord> {
    out.iter()
        .filter_map(|o| match o {
            Output::Sla(s) => Some(s),
            _ => None,
        })
        .collect()
}

/// `../shared/examples-v2` (SPEC v2's example) when present (the authoritative copy), else
/// the repo's `examples/`.
pub fn examples_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shared = root.join("../shared/examples-v2");
    if shared.join("expected.jsonl").exists() {
        shared
    } else {
        root.join("examples")
    }
}
/// `../shared/examples` (SPEC v1's example), when present.
pub fn v1_examples_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/examples");
    dir.join("expected.jsonl").exists().then_some(dir)
}

pub mod child;
pub mod http;
pub mod kafka;
pub mod kafka_local;
pub mod receiver;
pub mod s3;
