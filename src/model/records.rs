//! Output records (SPEC §7).
//!
//! Text fields are `CompactString`s (the `compact_str` crate): on 64-bit targets up to 24 bytes
//! live inside the 24-byte field, so a record's grade, reason, policy, and a short lead key,
//! trigger event id or owner cost no allocation; longer text is on the heap as in a `String`.
//! Record ids (`transition_id`, `sla_event_id`) over 24 bytes are built as a `String` and keep
//! its buffer (`engine::record_id`). The fold makes about one record per three events, each
//! with four to six such fields (docs/performance.md, "Records without an allocation per
//! field").

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use super::funnel::Stage;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub transition_id: CompactString,
    pub lead_key: CompactString,
    pub from_stage: Stage,
    pub to_stage: Stage,
    pub reason: CompactString,
    pub occurred_at: i64,
    pub trigger_event_id: CompactString,
    pub engagement: f64,
    pub fit: f64,
    pub grade: CompactString,
    pub owner_id: Option<CompactString>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlaKind {
    Warning,
    Breach,
    Met,
}

impl SlaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SlaKind::Warning => "warning",
            SlaKind::Breach => "breach",
            SlaKind::Met => "met",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlaRecord {
    pub sla_event_id: CompactString,
    pub lead_key: CompactString,
    pub policy: CompactString,
    pub kind: SlaKind,
    pub stage: Stage,
    pub started_at: i64,
    pub deadline: i64,
    pub at: i64,
    pub response_ms: Option<i64>,
    /// Met only: the business time between the clock's start and the met (SPEC §6, v2);
    /// equal to `response_ms` for a policy without a calendar.
    pub response_business_ms: Option<i64>,
    pub on_time: Option<bool>,
    pub owner_id: Option<CompactString>,
}

/// One output record; serialized with a `"record"` field naming its kind (replay's JSONL).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "lowercase")]
pub enum Output {
    Transition(Transition),
    Sla(SlaRecord),
}

impl Output {
    pub fn lead_key(&self) -> &str {
        match self {
            Output::Transition(t) => &t.lead_key,
            Output::Sla(s) => &s.lead_key,
        }
    }
}
