//! What the fold of an event can work out before it touches any lead: the lead key's hash in
//! the partition's index, the event id's hash for the duplicate window (SPEC §2), and which
//! engagement rules' conditions hold (SPEC §4: conditions read only the event).
//!
//! Why: on two cores the fold is the longest of replay's threads. These three depend on the
//! event and the config alone, so replay's reader thread computes them beside the decode
//! ([`Preparer::prepare`]) and the fold only reads them ([`PartitionState::apply_prepared`]);
//! the hints for the events ahead reuse the key's hash instead of hashing the key three more
//! times. [`PartitionState::apply`] prepares on the spot, so both paths run the same code.

use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::DefaultHashBuilder;

use super::lead::event_id_hash;
use super::PartitionState;
use crate::model::event::Event;
use crate::model::rules::Ruleset;

/// An event's preparation: computed by [`Preparer::prepare`] (or by
/// [`PartitionState::prepare`]) for the partition state that will apply it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prepared {
    /// The lead key's hash under the state's index hasher.
    pub(super) key_hash: u64,
    /// [`event_id_hash`] of the event id.
    pub(super) id_hash: u64,
    /// Bit `j` set: the conditions of the `j`-th of the event's candidate rules
    /// (`Ruleset::candidate_rules`) hold. `None` when there are more than 64 candidates: the
    /// fold then checks them itself.
    pub(super) conditions: Option<u64>,
}

/// Prepares events for one [`PartitionState`], on any thread: it holds the state's rules and
/// a copy of its index hasher (the same seed, so the same hashes).
#[derive(Clone)]
pub struct Preparer {
    rules: Arc<Ruleset>,
    hasher: DefaultHashBuilder,
}

impl Preparer {
    /// The event's [`Prepared`]. Pure: the same event and config give the same result.
    pub fn prepare(&self, ev: &Event) -> Prepared {
        prepare(&self.rules, &self.hasher, ev)
    }
}

pub(super) fn prepare(rules: &Ruleset, hasher: &DefaultHashBuilder, ev: &Event) -> Prepared {
    let candidates = rules.candidate_rules(ev.source, &ev.event_type);
    let conditions = (candidates.len() <= 64).then(|| {
        candidates
            .iter()
            .enumerate()
            .filter(|&(_, &ri)| rules.engagement[ri as usize].conditions_hold(ev))
            .fold(0u64, |bits, (j, _)| bits | 1 << j)
    });
    Prepared {
        key_hash: hasher.hash_one(ev.lead_key.as_str()),
        id_hash: event_id_hash(&ev.event_id),
        conditions,
    }
}

impl Prepared {
    /// Whether the conditions of the `j`-th candidate rule hold: from the preparation, or,
    /// past 64 candidates, checked now.
    #[inline]
    pub(super) fn conditions_hold(&self, rules: &Ruleset, j: usize, ri: u16, ev: &Event) -> bool {
        match self.conditions {
            Some(bits) => bits >> j & 1 == 1,
            None => rules.engagement[ri as usize].conditions_hold(ev),
        }
    }
}

impl PartitionState {
    /// A [`Preparer`] for this state, to prepare events on another thread.
    pub fn preparer(&self) -> Preparer {
        Preparer {
            rules: Arc::clone(&self.rules),
            hasher: self.hasher,
        }
    }

    /// The event's [`Prepared`], here.
    pub fn prepare(&self, ev: &Event) -> Prepared {
        prepare(&self.rules, &self.hasher, ev)
    }
}
