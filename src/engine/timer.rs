//! A pending SLA warning or breach, and the order SPEC §6 fires them in.

use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum TimerKind {
    Warning,
    Breach,
}

/// A pending warning or breach. Field order is the firing order of SPEC §6: time, lead key,
/// policy name (rank), warning before breach.
///
/// (A copy of the key's first 16 bytes beside the due time, to settle ties without loading
/// the key, was tried on 2026-12-01: no measurable gain in the replay, and 16 bytes more per
/// pending timer, about 14 bytes per lead in the memory guard. Not kept.)
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Timer {
    pub due: i64,
    pub lead: Arc<str>,
    pub rank: u16,
    pub kind: TimerKind,
    pub policy: u16,
}
