//! Bounded state (`[limits]`): eviction of inactive and terminal leads, a cap on leads per
//! partition, and the record of evicted keys that lets a returning lead start fresh without
//! reusing the ids of its earlier records.
//!
//! Everything here runs inside the fold, driven by event time only, so a replay of the same
//! log evicts the same leads at the same points as the live service. Sweeps run on a fixed
//! grid of event time (multiples of the sweep interval) with the cutoff taken from the grid
//! point, so whether a sweep is triggered by a tick or by the next event does not matter.

use std::hash::BuildHasher;

use super::{id_hash, move_timers, remove_timers, Lead, PartitionState};
use crate::model::funnel::Stage;
use crate::model::rules::Limits;

/// Bits in the evicted-key filter: 2^23 bits = 1 MiB per partition, about 2% false positives
/// after a million evictions. A false positive only gives a brand-new lead the "returning"
/// id prefix, which is still unique; it never loses or merges state.
pub const FILTER_WORDS: usize = 1 << 17;
const FILTER_HASHES: u64 = 4;

/// A Bloom filter of evicted lead keys (deterministic hashes: it is stored in snapshots).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvictedFilter {
    pub(super) words: Box<[u64]>,
}

impl EvictedFilter {
    pub fn new() -> EvictedFilter {
        EvictedFilter {
            words: vec![0u64; FILTER_WORDS].into_boxed_slice(),
        }
    }

    fn slots(key: &str) -> impl Iterator<Item = usize> {
        let h1 = id_hash(key);
        // A second, independent-enough hash: SplitMix64's finalizer of the first.
        let mut z = h1.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        let h2 = (z ^ (z >> 31)) | 1;
        let bits = (FILTER_WORDS * 64) as u64;
        (0..FILTER_HASHES).map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) % bits) as usize)
    }

    pub fn insert(&mut self, key: &str) {
        for b in Self::slots(key) {
            self.words[b / 64] |= 1 << (b % 64);
        }
    }

    pub fn may_contain(&self, key: &str) -> bool {
        Self::slots(key).all(|b| self.words[b / 64] & (1 << (b % 64)) != 0)
    }
}

impl Default for EvictedFilter {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a lead was evicted (index into `Stats::evicted`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvictReason {
    Inactive = 0,
    Terminal = 1,
    MaxLeads = 2,
}

impl EvictReason {
    pub const ALL: [EvictReason; 3] = [
        EvictReason::Inactive,
        EvictReason::Terminal,
        EvictReason::MaxLeads,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EvictReason::Inactive => "inactive",
            EvictReason::Terminal => "terminal",
            EvictReason::MaxLeads => "max_leads",
        }
    }
}

/// Whether a clock of `lead` still has a warning or breach to fire: they fire once they are due
/// before `fire_before`, the stream clock less `clock.allowed_lateness` (SPEC §6); the breach,
/// at the deadline, is the last.
fn has_pending_timers(lead: &Lead, fire_before: i64) -> bool {
    lead.clocks().iter().any(|c| c.deadline >= fire_before)
}

fn terminal(stage: Stage) -> bool {
    matches!(stage, Stage::Won | Stage::Lost | Stage::Disqualified)
}

/// The sweep grid: a sixteenth of the shortest eviction age, between 1 minute and 1 day.
fn sweep_interval(limits: &Limits) -> Option<i64> {
    let shortest = [
        limits.evict_inactive_after_ms,
        limits.evict_terminal_after_ms,
    ]
    .into_iter()
    .flatten()
    .min()?;
    Some((shortest / 16).clamp(60_000, 86_400_000))
}

impl PartitionState {
    /// Runs the age-based sweep when the clock has crossed a grid point since the last one.
    pub(super) fn maybe_sweep(&mut self, clock: i64) {
        let Some(interval) = sweep_interval(&self.rules.limits) else {
            return;
        };
        let grid = clock.div_euclid(interval).saturating_mul(interval);
        if self.last_sweep.is_some_and(|g| g >= grid) {
            return;
        }
        self.last_sweep = Some(grid);
        let limits = self.rules.limits.clone();
        let fire_before = self.fire_before(clock);
        // Downwards, so `swap_remove` only moves leads already looked at.
        for i in (0..self.leads.len()).rev() {
            let lead = &self.leads[i];
            if has_pending_timers(lead, fire_before) {
                continue; // a warning or breach is still to come
            }
            let idle_before =
                |age: Option<i64>| age.is_some_and(|a| lead.last_seen < grid.saturating_sub(a));
            let reason = if terminal(lead.stage) && idle_before(limits.evict_terminal_after_ms) {
                Some(EvictReason::Terminal)
            } else if idle_before(limits.evict_inactive_after_ms) {
                Some(EvictReason::Inactive)
            } else {
                None
            };
            if let Some(reason) = reason {
                self.evict(i, reason);
            }
        }
    }

    /// Makes room for one more lead under `max_leads`: evicts the least recently active
    /// hundredth (leads without running clocks first; ties by key), so the scan is amortized.
    pub(super) fn make_room(&mut self) {
        let Some(max) = self.rules.limits.max_leads else {
            return;
        };
        if (self.leads.len() as u64) < max {
            return;
        }
        let n = (max / 100).max(1) as usize;
        let fire_before = self.clock.map_or(i64::MIN, |c| self.fire_before(c));
        let mut order: Vec<(bool, i64, u32)> = self
            .leads
            .iter()
            .enumerate()
            .map(|(i, l)| (has_pending_timers(l, fire_before), l.last_seen, i as u32))
            .collect();
        let leads = &self.leads;
        let cmp = |a: &(bool, i64, u32), b: &(bool, i64, u32)| {
            (a.0, a.1)
                .cmp(&(b.0, b.1))
                .then_with(|| leads[a.2 as usize].cmp_key(&leads[b.2 as usize]))
        };
        let n = n.min(order.len());
        if n < order.len() {
            order.select_nth_unstable_by(n, cmp);
        }
        let mut victims: Vec<u32> = order[..n].iter().map(|v| v.2).collect();
        // Highest position first: `swap_remove` never moves a victim still to be removed.
        victims.sort_unstable_by(|a, b| b.cmp(a));
        for i in victims {
            self.evict(i as usize, EvictReason::MaxLeads);
        }
    }

    /// Removes the lead at `i`: its timers, its gauges, and its key into the filter.
    fn evict(&mut self, i: usize, reason: EvictReason) {
        // Its timers first, while they still name position `i`.
        for clock in self.leads[i].clocks() {
            remove_timers(&mut self.timers, i as u32, clock);
        }
        let lead = self.remove_at(i);
        if !lead.clocks().is_empty() {
            self.stats.evicted_with_clocks += 1;
            self.open_clocks -= lead.clocks().len() as u64;
        }
        self.stage_counts[lead.stage.index()] -= 1;
        self.stats.evicted[reason as usize] += 1;
        self.evicted
            .get_or_insert_with(EvictedFilter::new)
            .insert(lead.key());
    }

    /// Takes the lead at `i` out of the vector and the index (the last lead moves to `i`,
    /// its timers with it). The timers of the lead at `i` must be gone already.
    fn remove_at(&mut self, i: usize) -> Lead {
        let last = self.leads.len() - 1;
        self.touch(i);
        self.touch(last);
        let h = self.hasher.hash_one(self.leads[i].key());
        self.index.remove(h, |x| x as usize == i);
        if i != last {
            let hl = self.hasher.hash_one(self.leads[last].key());
            self.index.replace(hl, |x| x as usize == last, i as u32);
        }
        let lead = self.leads.swap_remove(i);
        if i != last {
            move_timers(&mut self.timers, &self.leads[i], last as u32, i as u32);
        }
        lead
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::super::test_support::example_rules;
    use super::super::timer::Timer;
    use super::super::timer_slots;
    use super::*;
    use crate::model::event::{Event, EventFields};

    /// Monday 2026-11-16 10:00 New York.
    const T0: i64 = 1_763_305_200_000;
    const MINUTE: i64 = 60_000;

    impl PartitionState {
        /// Every pending timer names the lead at its position and a clock of that lead, and
        /// every timer of every clock not yet fired (due at or after the stream clock less
        /// `clock.allowed_lateness`) is pending.
        fn check_timers(&self) -> Result<(), String> {
            let fire_before = self.clock.map_or(i64::MIN, |c| self.fire_before(c));
            for t in &self.timers {
                let lead = self
                    .leads
                    .get(t.slot as usize)
                    .ok_or_else(|| format!("{t:?}: no lead at its position"))?;
                let ours = lead.clocks().iter().any(|c| {
                    c.policy == t.policy
                        && timer_slots(c).any(|(due, kind)| (due, kind) == (t.due, t.kind))
                });
                if !ours {
                    return Err(format!("{t:?}: lead {} has no such clock", lead.key()));
                }
            }
            for (i, lead) in self.leads.iter().enumerate() {
                for c in lead.clocks() {
                    for (due, kind) in timer_slots(c).filter(|&(due, _)| due >= fire_before) {
                        let t = Timer {
                            due,
                            slot: i as u32,
                            policy: c.policy,
                            kind,
                        };
                        if !self.timers.contains(&t) {
                            return Err(format!("{}: {t:?} is not pending", lead.key()));
                        }
                    }
                }
            }
            Ok(())
        }
    }

    fn event(n: usize, lead: u8, what: u8, t: i64) -> Event {
        let key = format!("lead-{lead:02}");
        let (source, kind, attrs): (&str, &str, &[(&str, &str)]) = match what {
            0 => (
                "crm",
                "lead_upsert",
                &[
                    ("title", "VP Sales"),
                    ("country", "US"),
                    ("employees", "500"),
                ],
            ),
            1 => ("web", "demo_request", &[]),
            2 => ("crm", "sales_accepted", &[]),
            3 => ("crm", "sales_activity", &[]),
            4 => ("crm", "recycled", &[]),
            _ => ("web", "page_view", &[]),
        };
        EventFields::from_parts(&format!("e{n}"), &key, t, source, kind, attrs)
            .validate()
            .expect("valid")
    }

    /// The lead evicted and the lead moved into its place have timers alike but for the
    /// position (the same due times, policy and kind): the evicted one's go, the moved one's
    /// stay. Fails when `evict` removes the timers after the move (tried).
    #[test]
    fn an_eviction_keeps_the_moved_leads_identical_timers() {
        let mut rules = (*example_rules()).clone();
        rules.limits.max_leads = Some(8);
        let mut st = PartitionState::new(Arc::new(rules));
        let mut out = Vec::new();
        for lead in 0..8 {
            st.apply(&event(2 * lead as usize, lead, 0, T0), &mut out);
            st.apply(&event(2 * lead as usize + 1, lead, 1, T0), &mut out);
        }
        assert_eq!(
            st.pending_timers(),
            16,
            "eight MQL clocks, a warning and a breach each"
        );
        // A ninth lead: the first (all have clocks, ties by key) goes, the last moves.
        st.apply(&event(16, 8, 5, T0 + MINUTE), &mut out);
        assert_eq!(st.stats().evicted_with_clocks, 1);
        assert_eq!(st.pending_timers(), 14);
        st.check_timers().expect("timers");
        out.clear();
        st.advance(T0 + 30 * 24 * 60 * MINUTE, &mut out);
        assert_eq!(out.len(), 14, "the seven leads left warn and breach");
    }

    proptest! {
        /// Timers follow their leads when evictions (`max_leads`, inactivity) move leads in
        /// the vector, and leave with evicted ones: after every event, the set holds exactly
        /// the pending timers of the leads' clocks, each at its lead's position. Fails when
        /// `remove_at` does not move the last lead's timers (tried).
        #[test]
        fn timers_follow_their_leads_through_evictions(
            steps in proptest::collection::vec((0u8..24, 0u8..7, prop_oneof![0i64..90, Just(0), 600i64..1200]), 1..300),
            inactive in proptest::bool::ANY,
        ) {
            let mut rules = (*example_rules()).clone();
            rules.limits.max_leads = Some(8);
            if inactive {
                rules.limits.evict_inactive_after_ms = Some(6 * 60 * MINUTE);
            }
            let mut st = PartitionState::new(Arc::new(rules));
            let mut out = Vec::new();
            let mut t = T0;
            for (n, (lead, what, dt)) in steps.into_iter().enumerate() {
                t += dt * MINUTE;
                st.apply(&event(n, lead, what, t), &mut out);
                if let Err(e) = st.check_timers() {
                    return Err(TestCaseError::fail(format!("after event {n}: {e}")));
                }
                prop_assert!(st.lead_count() <= 8);
            }
            // A month later every pending timer fires, each once.
            let pending = st.pending_timers();
            out.clear();
            st.advance(t + 30 * 24 * 60 * MINUTE, &mut out);
            prop_assert_eq!(out.len(), pending);
            prop_assert!(st.timers.is_empty());
        }
    }
}
