//! What the fold of an event can work out before it touches any lead: the lead key's hash in
//! the partition's index, the event id's hash for the duplicate window (SPEC §2), which of
//! the ruleset's candidate lists holds the event's engagement rules, and which of those rules'
//! conditions hold (SPEC §4: both read only the event).
//!
//! Why: replay's fold has a core to itself, while the reader shares the other with the
//! writer. These read no lead (the key's hash depends on the event and the state's hash
//! seed, the rest on the event and the config), so the reader computes them beside the decode
//! ([`Preparer::prepare`]) and the fold only reads them ([`PartitionState::apply_prepared`]);
//! the hints for the events ahead reuse the key's hash instead of hashing the key three more
//! times. That pays when the reader has room (docs/performance.md measures both cases).
//! [`PartitionState::apply`] prepares on the spot, so both paths run the same code.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use hashbrown::DefaultHashBuilder;

use super::lead::event_id_hash;
use super::PartitionState;
use crate::model::event::Event;
use crate::model::rules::Ruleset;

/// An event's preparation: computed by [`Preparer::prepare`] (or by
/// [`PartitionState::prepare`]) for the partition state that will apply it.
///
/// Equality leaves out `lead_at`, a memo the hints write: two preparations of one event are
/// equal whatever the hints found.
#[derive(Debug)]
pub struct Prepared {
    /// The lead key's hash under the state's index hasher.
    pub(super) key_hash: u64,
    /// [`event_id_hash`] of the event id.
    pub(super) id_hash: u64,
    /// The id of the event's candidate rules' list (`Ruleset::candidate_list_id`).
    pub(super) candidates: u32,
    /// Where [`PartitionState::prefetch_lead`] found a lead under the key's hash: a position
    /// in the state's lead vector, [`NOT_FOUND`] when it found none, or [`NO_LEAD`] before
    /// it ran. The nearer hints and the apply use it instead of walking the index again;
    /// it is only a guess (another key's lead on the same tag, or a lead moved since), so
    /// the apply takes it only when that lead's key is the event's. Written through `&self`
    /// because the hints read the events ahead while the fold holds the batch; atomic
    /// (relaxed: a plain load and store on x86-64) so that `Parsed` stays `Sync` for
    /// `leadflow report`, which shares each batch between its definitions' threads (it
    /// prepares nothing). 40 bytes with it as without (a `u32` where there was padding).
    pub(super) lead_at: AtomicU32,
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
    /// The event's [`Prepared`]. Pure: the same event gives the same result from the same
    /// preparer (another state has another hash seed).
    pub fn prepare(&self, ev: &Event) -> Prepared {
        prepare(&self.rules, &self.hasher, ev)
    }
}

pub(super) fn prepare(rules: &Ruleset, hasher: &DefaultHashBuilder, ev: &Event) -> Prepared {
    let list = rules.candidate_list_id(ev.source, &ev.event_type);
    let found = rules.candidate_list(list);
    debug_assert!(
        found.is_some(),
        "an id from this ruleset is one of its lists"
    );
    let candidates = found.unwrap_or_default();
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
        candidates: list,
        lead_at: AtomicU32::new(NO_LEAD),
        conditions,
    }
}

/// [`Prepared::lead_at`] before [`PartitionState::prefetch_lead`] has run.
pub(super) const NO_LEAD: u32 = u32::MAX;
/// [`Prepared::lead_at`] when [`PartitionState::prefetch_lead`] found no lead (a new key):
/// the nearer hints skip the walk.
pub(super) const NOT_FOUND: u32 = u32::MAX - 1;

// The memo took padding: a `Prepared` is as large as before it (replay keeps a batch of them).
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Prepared>() == 40);

impl Prepared {
    /// [`Prepared::lead_at`]'s value.
    #[inline]
    pub(super) fn lead_at(&self) -> u32 {
        self.lead_at.load(Ordering::Relaxed)
    }

    /// Sets [`Prepared::lead_at`].
    #[inline]
    pub(super) fn set_lead_at(&self, at: u32) {
        self.lead_at.store(at, Ordering::Relaxed);
    }
}

impl Clone for Prepared {
    fn clone(&self) -> Prepared {
        Prepared {
            lead_at: AtomicU32::new(self.lead_at()),
            ..*self
        }
    }
}

impl PartialEq for Prepared {
    fn eq(&self, other: &Prepared) -> bool {
        // Not `lead_at`: a hint's memo, not part of what the event is.
        (
            self.key_hash,
            self.id_hash,
            self.candidates,
            self.conditions,
        ) == (
            other.key_hash,
            other.id_hash,
            other.candidates,
            other.conditions,
        )
    }
}

impl Eq for Prepared {}

impl Prepared {
    /// The event's candidate rules (`Ruleset::candidate_rules`), by the list id worked out
    /// in preparation (in replay, on the reader's thread: the fold does not hash the type).
    /// `rules` must be the very ruleset it was prepared with, as for `conditions` (two
    /// rulesets built from one config number their lists differently); an id past its lists
    /// falls back to the lookup, an id within them is taken as it is.
    #[inline]
    pub(super) fn candidate_rules<'r>(&self, rules: &'r Ruleset, ev: &Event) -> &'r [u16] {
        match rules.candidate_list(self.candidates) {
            Some(list) => list,
            None => rules.candidate_rules(ev.source, &ev.event_type),
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::model::event::EventFields;
    use proptest::strategy::Strategy;

    /// `n` rules on web page views, each 1 point; the odd ones only for pricing pages.
    fn rules(n: usize) -> Arc<Ruleset> {
        let mut toml = String::from("[scoring]\nhalf_life = \"14d\"\n");
        for i in 0..n {
            toml.push_str(&format!(
                "[[scoring.engagement]]\nname = \"r{i}\"\nsource = \"web\"\ntype = \"page_view\"\npoints = 1\n"
            ));
            if i % 2 == 1 {
                toml.push_str("where = { url = \"glob:*/pricing*\" }\n");
            }
        }
        toml.push_str("[funnel]\nmql_threshold = 1000\n");
        Settings::from_toml(&toml).expect("config").rules
    }

    fn view(url: &str) -> Event {
        EventFields::from_parts("e1", "a@b.c", 1_000, "web", "page_view", &[("url", url)])
            .validate()
            .expect("valid")
    }

    /// The conditions come from the preparation up to 64 candidate rules and are checked
    /// in the fold past that; the scores are the same either way (counted by hand: every
    /// rule holds on a pricing page, the even half elsewhere).
    #[test]
    fn conditions_prepared_or_checked_in_the_fold_score_the_same() {
        for n in [3usize, 64, 65, 130] {
            let rules = rules(n);
            for (url, holding) in [
                ("https://x.io/pricing", n),
                ("https://x.io/docs", n.div_ceil(2)),
            ] {
                let ev = view(url);
                let mut st = PartitionState::new(Arc::clone(&rules));
                let p = st.preparer().prepare(&ev);
                assert_eq!(p.conditions.is_some(), n <= 64, "{n} rules");
                if let Some(bits) = p.conditions {
                    assert_eq!(bits.count_ones() as usize, holding, "{n} rules, {url}");
                }
                st.apply_prepared(&ev, &p, &mut Vec::new());
                let score = st
                    .lead("a@b.c")
                    .expect("lead")
                    .engagement
                    .at_time(1_000, &rules.decay);
                assert!(
                    (score - holding as f64).abs() < 1e-9,
                    "{n} rules, {url}: {score}"
                );
            }
        }
    }

    /// The prepared list is the event's candidate list; an id past the ruleset's lists (a
    /// preparation that went wrong) falls back to the lookup, not to another list or none.
    #[test]
    fn the_prepared_candidate_list_is_the_events() {
        let rules = rules(4);
        let st = PartitionState::new(Arc::clone(&rules));
        for (source, ty) in [
            ("web", "page_view"),
            ("web", "form_submit"),
            ("email", "open"),
        ] {
            let ev = EventFields::from_parts("e1", "a@b.c", 1_000, source, ty, &[])
                .validate()
                .expect("valid");
            let want = rules.candidate_rules(ev.source, &ev.event_type);
            let mut p = st.prepare(&ev);
            assert_eq!(p.candidate_rules(&rules, &ev), want, "{source}/{ty}");
            p.candidates = u32::MAX;
            assert_eq!(
                p.candidate_rules(&rules, &ev),
                want,
                "{source}/{ty}, fallback"
            );
        }
        assert_eq!(
            rules
                .candidate_rules(crate::model::event::Source::Web, "page_view")
                .len(),
            4
        );
    }

    /// What a hint's memo (`Prepared::lead_at`) may hold when the event is applied.
    #[derive(Clone, Copy, Debug)]
    enum Memo {
        /// No hint ran.
        None,
        /// What the hints left, as in replay.
        Hinted,
        /// The lead's own position.
        Right,
        /// Another lead's position (or what a moved lead left behind).
        Other(usize),
        /// A position past the leads.
        Past(u32),
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// The memo is a guess: right, wrong, stale or missing, the state and the records are
        /// those of `apply` (no memo at all). The hints run as in replay, 8 events ahead, and
        /// 150 keys meet a limit of 100 leads and a 2-hour inactivity eviction, so new leads
        /// and sweeps move leads between a hint and its event's apply.
        #[test]
        fn a_lead_memo_right_or_wrong_changes_nothing(
            events in proptest::collection::vec(
                (
                    0usize..150,
                    0u8..4,
                    proptest::prop_oneof![
                        3 => proptest::strategy::Just(Memo::Hinted),
                        1 => proptest::strategy::Just(Memo::None),
                        1 => proptest::strategy::Just(Memo::Right),
                        1 => (0usize..200).prop_map(Memo::Other),
                        1 => proptest::prelude::any::<u32>().prop_map(Memo::Past),
                    ],
                ),
                0..400,
            ),
        ) {
            let toml = format!(
                "{}\n[limits]\nmax_leads_per_partition = 100\nevict_inactive_after = \"2h\"\n",
                include_str!("../../examples/config.toml")
            );
            let rules = Settings::from_toml(&toml).expect("config").rules;
            let mut plain = PartitionState::new(Arc::clone(&rules));
            let mut memo = PartitionState::new(rules);
            let evs: Vec<Event> = events
                .iter()
                .enumerate()
                .map(|(n, &(k, kind, _))| {
                    let key = format!("lead{k}@x.io");
                    let t = 1_794_837_600_000 + n as i64 * 60_000;
                    let id = format!("e{n}");
                    let (source, ty, attrs): (&str, &str, &[(&str, &str)]) = match kind {
                        0 => ("crm", "lead_upsert", &[("title", "VP Sales")]),
                        1 => ("web", "page_view", &[("url", "https://x.io/pricing")]),
                        2 => ("web", "demo_request", &[]),
                        _ => ("email", "click", &[]),
                    };
                    EventFields::from_parts(&id, &key, t, source, ty, attrs)
                        .validate()
                        .expect("valid")
                })
                .collect();
            let prepared: Vec<Prepared> = evs.iter().map(|ev| memo.prepare(ev)).collect();
            let (mut want, mut got) = (Vec::new(), Vec::new());
            for (n, ev) in evs.iter().enumerate() {
                plain.apply(ev, &mut want);
                memo.hint_ahead(|d| prepared.get(n + d));
                let p = &prepared[n];
                match events[n].2 {
                    Memo::Hinted => {}
                    Memo::None => p.set_lead_at(NO_LEAD),
                    Memo::Right => {
                        let at = memo.find(&ev.lead_key).map_or(NOT_FOUND, |i| i as u32);
                        p.set_lead_at(at);
                    }
                    Memo::Other(i) => p.set_lead_at(i as u32),
                    Memo::Past(i) => p.set_lead_at(i.max(200)),
                }
                memo.apply_prepared(ev, p, &mut got);
                proptest::prop_assert_eq!(&got, &want, "after event {}", n);
                proptest::prop_assert_eq!(memo.lead_count(), plain.lead_count());
            }
            for k in 0..150 {
                let key = format!("lead{k}@x.io");
                proptest::prop_assert_eq!(memo.find(&key), plain.find(&key), "{}", key);
            }
        }
    }
}
