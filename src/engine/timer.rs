//! A pending SLA warning or breach, and the order SPEC §6 fires them in.

use std::cmp::Ordering;

use super::Lead;
use crate::model::rules::Ruleset;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum TimerKind {
    Warning,
    Breach,
}

/// A pending warning or breach of the lead at position `slot` in the state's lead vector: 16
/// bytes, no key. The set orders timers by due time first, which is all the firing loop
/// needs of it; timers due at the same time fire in [`fire_order`], SPEC §6's tie order.
///
/// It held its own copy of the lead's key before (32 bytes and a shared `Arc<str>` per
/// clock, compared on every insert and removal, and allocated for every removal's lookup).
/// A lead that moves in the vector (an eviction's `swap_remove`) has its timers moved with
/// it (`PartitionState::remove_at`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Timer {
    pub due: i64,
    pub slot: u32,
    pub policy: u16,
    pub kind: TimerKind,
}

/// SPEC §6's order for timers due at the same time: lead key, policy name, warning before
/// breach (`rules.sla_rank` holds the policies' order by name).
pub(super) fn fire_order(leads: &[Lead], rules: &Ruleset, a: &Timer, b: &Timer) -> Ordering {
    a.due
        .cmp(&b.due)
        .then_with(|| {
            if a.slot == b.slot {
                Ordering::Equal
            } else {
                leads[a.slot as usize].cmp_key(&leads[b.slot as usize])
            }
        })
        .then_with(|| rules.sla_rank[a.policy as usize].cmp(&rules.sla_rank[b.policy as usize]))
        .then_with(|| a.kind.cmp(&b.kind))
}
