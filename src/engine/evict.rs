//! Bounded state (`[limits]`): eviction of inactive and terminal leads, a cap on leads per
//! partition, and the record of evicted keys that lets a returning lead start fresh without
//! reusing the ids of its earlier records.
//!
//! Everything here runs inside the fold, driven by event time only, so a replay of the same
//! log evicts the same leads at the same points as the live service. Sweeps run on a fixed
//! grid of event time (multiples of the sweep interval) with the cutoff taken from the grid
//! point, so whether a sweep is triggered by a tick or by the next event does not matter.

use std::hash::BuildHasher;

use super::{id_hash, remove_timers, Lead, PartitionState};
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

/// Whether a clock of `lead` still has a warning or breach to fire (they fire once the stream
/// clock passes them; the breach, at the deadline, is the last).
fn has_pending_timers(lead: &Lead, clock: i64) -> bool {
    lead.clocks().iter().any(|c| c.deadline >= clock)
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
        // Downwards, so `swap_remove` only moves leads already looked at.
        for i in (0..self.leads.len()).rev() {
            let lead = &self.leads[i];
            if has_pending_timers(lead, clock) {
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
        let now = self.clock.unwrap_or(i64::MIN);
        let mut order: Vec<(bool, i64, u32)> = self
            .leads
            .iter()
            .enumerate()
            .map(|(i, l)| (has_pending_timers(l, now), l.last_seen, i as u32))
            .collect();
        let leads = &self.leads;
        let cmp = |a: &(bool, i64, u32), b: &(bool, i64, u32)| {
            (a.0, a.1)
                .cmp(&(b.0, b.1))
                .then_with(|| leads[a.2 as usize].key().cmp(leads[b.2 as usize].key()))
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
        let lead = self.remove_at(i);
        if !lead.clocks().is_empty() {
            self.stats.evicted_with_clocks += 1;
            self.open_clocks -= lead.clocks().len() as u64;
            for clock in lead.clocks() {
                remove_timers(&mut self.timers, &self.rules, lead.key(), clock);
            }
        }
        self.stage_counts[lead.stage.index()] -= 1;
        self.stats.evicted[reason as usize] += 1;
        self.evicted
            .get_or_insert_with(EvictedFilter::new)
            .insert(lead.key());
    }

    /// Takes the lead at `i` out of the vector and the index (the last lead moves to `i`).
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
        self.leads.swap_remove(i)
    }
}
