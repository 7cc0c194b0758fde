//! `PartitionState`: the deterministic fold of one partition's events into lead state and
//! output records (SPEC §3–§7). No I/O, no wall clock: time comes only from events and from
//! `advance`.

mod checkpoint;
mod evict;
mod explain;
mod fit;
mod footprint;
mod index;
mod lead;
mod lists;
mod prepare;
mod snapshot;
mod timer;

pub use checkpoint::{CHUNK as SNAPSHOT_CHUNK, CHUNK_SLACK as SNAPSHOT_CHUNK_SLACK};
pub use evict::{EvictReason, EvictedFilter};
pub use explain::Explanation;
use fit::FitMemo;
pub use footprint::{malloc_chunk, Footprint};
pub use lead::{
    event_id_hash, id_hash, static_reason, Clock, Cooldown, Extra, Ident, Lead, Lists, MqlMark,
    Profile, Rare, RecentIds, RecentTransition, SlaCount, RECENT_IDS, RECENT_TRANSITIONS,
};
pub use prepare::{Prepared, Preparer};
pub use snapshot::SnapshotError;
use timer::{fire_order, Timer, TimerKind};

use std::collections::{BTreeMap, BTreeSet};
use std::hash::BuildHasher;
use std::sync::Arc;

use compact_str::CompactString;
use hashbrown::DefaultHashBuilder;
use index::LeadIndex;

use crate::model::event::{CrmType, Event};
use crate::model::funnel::{crm_move, crm_outcome, CrmOutcome, Stage};
use crate::model::records::{Output, SlaKind, SlaRecord, Transition};
use crate::model::rules::{Ruleset, Until, MAX_COOLDOWN_KEYS};
use crate::model::score::{round4, Engagement};

/// Counters kept by the engine (the replay summary and, later, metrics read them).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    /// Valid events seen, duplicates included.
    pub events: u64,
    pub duplicates: u64,
    pub invalid: u64,
    pub invalid_by_reason: BTreeMap<&'static str, u64>,
    pub rejected_transitions: u64,
    /// Transitions by target stage (index = `Stage::index`).
    pub transitions_to: [u64; 8],
    /// SLA records by kind: warning, breach, met.
    pub sla: [u64; 3],
    /// Leads evicted, by `EvictReason`.
    pub evicted: [u64; 3],
    /// Evicted leads that still had a running SLA clock: breached ones (age rules) or, under
    /// `max_leads`, any.
    pub evicted_with_clocks: u64,
    /// SLA clocks not started because `limits.max_pending_timers` was reached.
    pub refused_clocks: u64,
}

/// Whether an event changed state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    Applied,
    Duplicate,
}

/// How many events ahead [`PartitionState::prefetch_index`], [`PartitionState::prefetch_lead`],
/// [`PartitionState::prefetch_state`] and [`PartitionState::prefetch_lists`] run
/// ([`PartitionState::hint_ahead`] uses them): far enough for a load from memory (about
/// 100 ns) to finish under the events in between, near enough to stay in cache. Measured at
/// 1M leads: 8/4/2 beat 6/3 and 12/6 (docs/performance.md); the index's 16 was not tuned,
/// only put one step before the lead's. Each hint reads what the one before it loaded.
pub const PREFETCH_INDEX: usize = 16;
pub const PREFETCH_FAR: usize = 8;
pub const PREFETCH_NEAR: usize = 4;
pub const PREFETCH_LISTS: usize = 2;

pub struct PartitionState {
    rules: Arc<Ruleset>,
    /// Leads in a dense vector, found through `index` (positions, hashed by lead key): a
    /// table of 4-byte slots wastes far less than a map holding whole leads at its load
    /// factor.
    leads: Vec<Lead>,
    index: LeadIndex,
    hasher: DefaultHashBuilder,
    timers: BTreeSet<Timer>,
    /// The timers due at one time, being fired (its allocation kept when small).
    firing: Vec<Timer>,
    clock: Option<i64>,
    stats: Stats,
    /// Leads per stage (index = `Stage::index`) and running SLA clocks, kept incrementally.
    stage_counts: [u64; 8],
    open_clocks: u64,
    /// Keys of evicted leads (created on the first eviction).
    evicted: Option<EvictedFilter>,
    /// The last eviction sweep's grid point.
    last_sweep: Option<i64>,
    /// A snapshot in progress (copy-on-write, `checkpoint.rs`).
    pending: Option<Box<checkpoint::Pending>>,
    /// The costly fit rules' answers for values seen lately (`fit.rs`).
    fit_memo: FitMemo,
}

impl PartitionState {
    pub fn new(rules: Arc<Ruleset>) -> PartitionState {
        PartitionState {
            fit_memo: FitMemo::new(&rules),
            rules,
            leads: Vec::new(),
            index: LeadIndex::default(),
            hasher: DefaultHashBuilder::default(),
            timers: BTreeSet::new(),
            firing: Vec::new(),
            clock: None,
            stats: Stats::default(),
            stage_counts: [0; 8],
            open_clocks: 0,
            evicted: None,
            last_sweep: None,
            pending: None,
        }
    }

    /// Encodes the whole state (format: `snapshot.rs`); `position` is the caller's log position
    /// the state covers (the next internal offset to read). The same bytes as a
    /// [`PartitionState::begin_snapshot`] at this point, stepped to the end however the state
    /// changes meanwhile.
    pub fn encode_snapshot(&self, position: i64) -> Vec<u8> {
        let mut pending = checkpoint::Pending::start(self, position);
        pending.step(&self.rules, &self.leads, usize::MAX);
        pending.finish().concat()
    }

    /// Starts a snapshot of the state as it is now, at log `position` (the next offset to
    /// fold), replacing any in progress. The state goes on folding; [`Self::snapshot_step`]
    /// encodes it a slice at a time, and the result is what [`Self::encode_snapshot`] returns
    /// now. Costs the head and the timers now (small), and one bit per lead until it ends.
    pub fn begin_snapshot(&mut self, position: i64) {
        self.pending = Some(Box::new(checkpoint::Pending::start(self, position)));
    }

    /// The position of the snapshot in progress, if any.
    pub fn snapshot_in_progress(&self) -> Option<i64> {
        self.pending.as_ref().map(|p| p.position())
    }

    /// Drops the snapshot in progress (e.g. when the state is being replaced).
    pub fn cancel_snapshot(&mut self) {
        self.pending = None;
    }

    /// Encodes up to `max_leads` more leads of the snapshot in progress; once all are, returns
    /// its position and its bytes not yet taken by [`Self::take_snapshot_chunks`], as chunks
    /// of about 1 MiB to be written in order, and ends it. `None` while it goes on, or when
    /// none is in progress.
    pub fn snapshot_step(&mut self, max_leads: usize) -> Option<(i64, Vec<Vec<u8>>)> {
        let pending = self.pending.as_deref_mut()?;
        if !pending.step(&self.rules, &self.leads, max_leads) {
            return None;
        }
        let pending = self.pending.take()?;
        let position = pending.position();
        Some((position, pending.finish()))
    }

    /// The chunks of the snapshot in progress completed since the last call (about 1 MiB
    /// each, in order), to be written while the rest is encoded. What [`Self::snapshot_step`]
    /// returns at the end follows them. Empty when none is in progress.
    pub fn take_snapshot_chunks(&mut self) -> Vec<Vec<u8>> {
        self.pending
            .as_deref_mut()
            .map(checkpoint::Pending::take_chunks)
            .unwrap_or_default()
    }

    /// Before the lead at `i` changes, moves or goes: a snapshot in progress keeps it as it was.
    #[inline]
    fn touch(&mut self, i: usize) {
        if let Some(p) = self.pending.as_deref_mut() {
            p.touch(&self.rules, &self.leads, i);
        }
    }

    /// Leads per stage, indexed by `Stage::index`.
    pub fn stage_counts(&self) -> [u64; 8] {
        self.stage_counts
    }

    /// SLA clocks currently running.
    pub fn open_clocks(&self) -> u64 {
        self.open_clocks
    }

    /// Recomputes the incremental gauges from the leads (after a restore).
    fn recount(&mut self) {
        self.stage_counts = [0; 8];
        self.open_clocks = 0;
        for lead in &self.leads {
            self.stage_counts[lead.stage.index()] += 1;
            self.open_clocks += lead.clocks().len() as u64;
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// All four hints for a stream of events, before applying the current one: `ahead(d)` is
    /// the preparation of the event `d` places ahead, `None` past the end or for a line that
    /// is not an event or an event not prepared. Changes no state or output.
    #[inline]
    pub fn hint_ahead<'a>(&self, ahead: impl Fn(usize) -> Option<&'a Prepared>) {
        if let Some(p) = ahead(PREFETCH_INDEX) {
            self.prefetch_index(p);
        }
        if let Some(p) = ahead(PREFETCH_FAR) {
            self.prefetch_lead(p);
        }
        if let Some(p) = ahead(PREFETCH_NEAR) {
            self.prefetch_state(p);
        }
        if let Some(p) = ahead(PREFETCH_LISTS) {
            self.prefetch_lists(p);
        }
    }

    /// Hint: the event prepared as `p` is about [`PREFETCH_INDEX`] events ahead. Starts loading
    /// the index bucket where its key's lookup begins, which needs only the key's hash, so
    /// that [`Self::prefetch_lead`] later reads it from cache. Changes no state or output.
    #[inline]
    pub fn prefetch_index(&self, p: &Prepared) {
        self.index.prefetch(p.key_hash);
    }

    /// Hint: the event prepared as `p` is about [`PREFETCH_FAR`] events ahead. Starts loading
    /// the lead the index points to (its cache lines) without waiting for it, and notes it
    /// in `p` (`Prepared::lead_at`) for the nearer hints and the apply, which take it as a
    /// guess. Changes no state or output; a key not present, or a lead moved meanwhile, only
    /// wastes the hint.
    ///
    /// Why: at 1M leads an event's time is mostly waiting on cold memory (index slot, lead,
    /// key allocation, out-of-line state; docs/performance.md); issued early, those loads
    /// overlap the events in between. Pair with [`Self::prefetch_state`] nearer.
    #[inline]
    pub fn prefetch_lead(&self, p: &Prepared) {
        let mut first = prepare::NOT_FOUND;
        self.walk_candidates(p.key_hash, |i| {
            if let Some(lead) = self.leads.get(i) {
                if first == prepare::NOT_FOUND {
                    first = i as u32;
                }
                lead::prefetch_bytes((lead as *const Lead).cast(), std::mem::size_of::<Lead>());
            }
        });
        // The nearer hints and the apply start from here rather than walk the index again.
        p.set_lead_at(first);
    }

    /// Hint: the event prepared as `p` is about [`PREFETCH_NEAR`] events ahead. Starts
    /// loading the lead's key allocation and out-of-line state; reads the lead's own fields
    /// (loaded by [`Self::prefetch_lead`] by now). Changes no state or output.
    #[inline]
    pub fn prefetch_state(&self, p: &Prepared) {
        self.each_candidate(p, Lead::prefetch_parts);
    }

    /// Hint: the event prepared as `p` is about [`PREFETCH_LISTS`] events ahead. Starts
    /// loading the out-of-line lists every event reads (cooldowns, SLA clocks); reads the
    /// out-of-line box (loaded by [`Self::prefetch_state`] by now). Changes no state or
    /// output.
    #[inline]
    pub fn prefetch_lists(&self, p: &Prepared) {
        self.each_candidate(p, Lead::prefetch_lists);
    }

    /// Calls `f` with the lead [`Self::prefetch_lead`] found for `p` (`Prepared::lead_at`),
    /// if it still exists; with none if that hint found none (a new key); else (no hint
    /// ran) with every lead `walk_candidates` finds under `p`'s key hash that does.
    #[inline]
    fn each_candidate(&self, p: &Prepared, f: impl Fn(&Lead)) {
        let at = p.lead_at();
        if let Some(lead) = self.leads.get(at as usize) {
            return f(lead);
        }
        if at == prepare::NOT_FOUND {
            return; // a new key 8 events ahead: nothing to load (or a lead made since)
        }
        self.walk_candidates(p.key_hash, |i| {
            if let Some(lead) = self.leads.get(i) {
                f(lead);
            }
        });
    }

    /// Calls `f` with the position of every lead the index holds under the key hash `h`'s tag
    /// (usually one), without comparing keys: the comparison would wait on the memory a
    /// prefetch is meant to load.
    #[inline]
    fn walk_candidates(&self, h: u64, mut f: impl FnMut(usize)) {
        self.index.candidates(h, |i| f(i as usize));
    }

    pub fn lead(&self, key: &str) -> Option<&Lead> {
        self.find(key).map(|i| &self.leads[i])
    }

    fn find(&self, key: &str) -> Option<usize> {
        self.find_hashed(key, self.hasher.hash_one(key))
    }

    /// [`Self::find`] with the key's hash `h` already computed.
    fn find_hashed(&self, key: &str, h: u64) -> Option<usize> {
        self.index
            .find(h, |i| self.leads[i as usize].has_key(key))
            .map(|i| i as usize)
    }

    /// The position of `key`'s lead, created (as of `t`) when it is new. A new lead may first
    /// make room under `limits.max_leads`; one whose key was evicted before is marked as
    /// returning (its record ids get a prefix, so they never repeat its earlier ones).
    /// `h` is the key's hash; `guess` a position to try first (`Prepared::lead_at`; any
    /// value will do: it is taken only when the lead there has `key`, which is then the one
    /// the index would find, keys being unique).
    fn find_or_insert(&mut self, key: &str, h: u64, guess: u32, t: i64) -> (usize, bool) {
        let guess = guess as usize;
        if self.leads.get(guess).is_some_and(|l| l.has_key(key)) {
            return (guess, false);
        }
        if let Some(i) = self.find_hashed(key, h) {
            return (i, false);
        }
        self.make_room();
        let mut lead = Lead::new(key, t);
        if self.evicted.as_ref().is_some_and(|f| f.may_contain(key)) {
            lead.extra_mut().rare_mut().reborn = Some(t);
        }
        let i = self.leads.len();
        let PartitionState {
            leads,
            index,
            hasher,
            ..
        } = self;
        index.insert_unique(h, i as u32, KeyHashes { leads, hasher });
        leads.push(lead);
        self.stage_counts[Stage::New.index()] += 1;
        (i, true)
    }

    /// Adds a restored lead; false when its key is already present.
    fn insert_restored(&mut self, lead: Lead) -> bool {
        let h = self.hasher.hash_one(lead.key());
        let PartitionState {
            leads,
            index,
            hasher,
            ..
        } = self;
        if index
            .find(h, |i| leads[i as usize].key() == lead.key())
            .is_some()
        {
            return false;
        }
        index.insert_unique(h, leads.len() as u32, KeyHashes { leads, hasher });
        leads.push(lead);
        true
    }

    pub fn lead_count(&self) -> usize {
        self.leads.len()
    }

    /// The stream clock: the largest event or tick time seen.
    pub fn clock(&self) -> Option<i64> {
        self.clock
    }

    pub fn pending_timers(&self) -> usize {
        self.timers.len()
    }

    /// The stream clock past which the earliest pending warning or breach fires: its due
    /// time plus `clock.allowed_lateness` (SPEC §6).
    pub fn next_due(&self) -> Option<i64> {
        self.timers
            .first()
            .map(|t| t.due.saturating_add(self.rules.allowed_lateness_ms))
    }

    pub fn rules(&self) -> &Ruleset {
        &self.rules
    }

    /// Counts an input that failed validation (it never touches state).
    pub fn note_invalid(&mut self, code: &'static str) {
        self.stats.invalid += 1;
        *self.stats.invalid_by_reason.entry(code).or_insert(0) += 1;
    }

    /// At stream clock `clock`, the warnings and breaches due strictly before the returned
    /// time have fired: the clock less `clock.allowed_lateness` (SPEC §6). [`Self::advance`]
    /// fires by it, and eviction keeps a lead whose timers it has not reached.
    pub(super) fn fire_before(&self, clock: i64) -> i64 {
        clock.saturating_sub(self.rules.allowed_lateness_ms)
    }

    /// Moves the stream clock to `time` (if later) and fires every warning and breach due
    /// strictly before it less `clock.allowed_lateness` (SPEC §6). Used for ticks and for
    /// replay's `--until`.
    pub fn advance(&mut self, time: i64, out: &mut Vec<Output>) {
        let clock = self.clock.map_or(time, |c| c.max(time));
        self.clock = Some(clock);
        let fire_before = self.fire_before(clock);
        while let Some(due) = self
            .timers
            .first()
            .map(|t| t.due)
            .filter(|&d| d < fire_before)
        {
            // Every timer due at `due`, in SPEC §6's tie order (the set holds lead positions,
            // not keys). Firing one adds or removes none.
            let mut group = std::mem::take(&mut self.firing);
            while let Some(t) = self.timers.first().copied().filter(|t| t.due == due) {
                self.timers.pop_first();
                group.push(t);
            }
            if group.len() > 1 {
                let (leads, rules) = (&self.leads, &*self.rules);
                group.sort_unstable_by(|a, b| fire_order(leads, rules, a, b));
            }
            for timer in &group {
                self.fire(timer, out);
            }
            group.clear();
            // A large group's allocation is not kept (a whole opening hour's breaches).
            if group.capacity() <= 1024 {
                self.firing = group;
            }
        }
        if self.rules.limits.evicts() {
            self.maybe_sweep(clock);
        }
    }

    fn fire(&mut self, timer: &Timer, out: &mut Vec<Output>) {
        let rules = &*self.rules;
        let Some(lead) = self.leads.get(timer.slot as usize) else {
            return;
        };
        let Some(clock) = lead.clocks().iter().find(|c| c.policy == timer.policy) else {
            return;
        };
        let kind = match timer.kind {
            TimerKind::Warning => SlaKind::Warning,
            TimerKind::Breach => SlaKind::Breach,
        };
        out.push(sla_record(
            rules,
            lead,
            clock,
            kind,
            timer.due,
            &mut self.stats,
        ));
    }

    /// Applies one validated event: fires what the clock makes due, then updates the lead and
    /// emits its records in SPEC §7 order.
    pub fn apply(&mut self, ev: &Event, out: &mut Vec<Output>) -> Applied {
        let p = self.prepare(ev);
        self.apply_prepared(ev, &p, out)
    }

    /// [`Self::apply`] with the event's preparation `p`, made for this state (by
    /// [`Self::prepare`] or by its [`Self::preparer`]) from this very event: the output is
    /// `apply`'s. A preparation of another event, or for another state, is wrong silently in
    /// release builds (debug builds check it): a wrong key hash misses the lead and makes a
    /// second one with the same key, a wrong id hash breaks the duplicate window, a wrong
    /// candidate list or wrong condition bits score the wrong rules.
    pub fn apply_prepared(&mut self, ev: &Event, p: &Prepared, out: &mut Vec<Output>) -> Applied {
        debug_assert_eq!(*p, self.prepare(ev), "prepared for another event or state");
        self.stats.events += 1;
        let t = ev.occurred_at;
        self.advance(t, out);
        let (li, created) = self.find_or_insert(&ev.lead_key, p.key_hash, p.lead_at(), t);
        self.touch(li);

        let PartitionState {
            rules,
            leads,
            timers,
            stats,
            stage_counts,
            open_clocks,
            fit_memo,
            ..
        } = self;
        let rules: &Ruleset = rules;
        let lead = &mut leads[li];

        // The lead enters `new` now: its clocks start before anything else of the event, so
        // the event itself may meet them (SPEC §3, v2).
        if created && !rules.policies_for(Stage::New).is_empty() {
            start_clocks(rules, lead, li as u32, timers, stats, Stage::New, t);
            *open_clocks += lead.clocks().len() as u64;
        }

        let h = p.id_hash;
        if lead.seen_id(h, rules.dedupe_ids) {
            stats.duplicates += 1;
            return Applied::Duplicate;
        }
        lead.push_id(h, rules.dedupe_ids);
        lead.last_seen = lead.last_seen.max(t);

        update_profile(rules, fit_memo, lead, ev);
        score_engagement(rules, lead, ev, p);

        // The event's own SLA `met` records (until-lists), before its transition.
        let mut i = 0;
        while i < lead.clocks().len() {
            let clock = &lead.clocks()[i];
            let policy = &rules.sla[clock.policy as usize];
            let met = match &policy.until {
                Until::Events(patterns) => {
                    t >= clock.start && patterns.iter().any(|p| p.matches(ev))
                }
                Until::StageExit => false,
            };
            if met {
                let clock: Clock = lead.extra_mut().lists_mut().remove(i);
                *open_clocks -= 1;
                out.push(met_record(rules, lead, &clock, t, stats));
                remove_timers(timers, li as u32, &clock);
            } else {
                i += 1;
            }
        }

        let target = match ev.crm.and_then(crm_move) {
            Some((to, allowed)) => match crm_outcome(lead.stage, to, allowed) {
                CrmOutcome::Move(to) => Some((to, ev.crm.map_or("crm", CrmType::as_str))),
                CrmOutcome::AlreadyThere => None,
                CrmOutcome::Rejected => {
                    stats.rejected_transitions += 1;
                    None
                }
            },
            None => mql_reason(rules, lead, ev).map(|reason| (Stage::Mql, reason)),
        };
        if let Some((to, reason)) = target {
            let before = lead.clocks().len() as u64;
            stage_counts[lead.stage.index()] -= 1;
            stage_counts[to.index()] += 1;
            transition(rules, lead, li as u32, timers, stats, ev, to, reason, out);
            *open_clocks = *open_clocks - before + lead.clocks().len() as u64;
        }
        Applied::Applied
    }
}

fn update_profile(rules: &Ruleset, fit_memo: &mut FitMemo, lead: &mut Lead, ev: &Event) {
    // Any change recomputes the fit and the grade, also one to an attribute no fit rule reads:
    // a new lead's grade is set by its first profile change (with a grade at `min <= 0` that
    // is a grade, not D), and a restored fit catches up with changed fit rules there.
    let changed = match ev.crm {
        Some(CrmType::LeadUpsert) => lead.set_attributes(&ev.attributes),
        // A missing `owner_id` attribute leaves the owner as it is; an empty one clears it.
        Some(CrmType::OwnerAssigned) => match ev.attribute("owner_id") {
            Some(owner) => lead.set_attribute("owner_id", owner),
            None => false,
        },
        _ => false,
    };
    if changed {
        lead.fit = fit_memo.score(rules, lead.profile());
        lead.grade = rules.grade_for(lead.fit);
    }
}

fn score_engagement(rules: &Ruleset, lead: &mut Lead, ev: &Event, p: &Prepared) {
    let t = ev.occurred_at;
    // Older than the last reset: had it come in order, the reset would have erased it
    // (SPEC §4, v2). No points, no cooldown.
    if lead.extra().rare().reset_at.is_some_and(|r| t < r) {
        return;
    }
    for (j, &ri) in p.candidate_rules(rules, ev).iter().enumerate() {
        let rule = &rules.engagement[ri as usize];
        if !p.conditions_hold(rules, j, ri, ev) {
            continue;
        }
        if let Some(cooldown) = rule.cooldown_ms {
            let window = cooldown.unsigned_abs();
            match &rule.cooldown_key {
                None => {
                    let lists = lead.extra_mut().lists_mut();
                    match lists
                        .get_mut::<Cooldown>()
                        .iter_mut()
                        .find(|c| c.rule() == ri)
                    {
                        Some(c) => {
                            if t.abs_diff(c.t_last()) < window {
                                continue;
                            }
                            c.set_t_last(c.t_last().max(t));
                        }
                        None => lists.push(Cooldown::new(ri, t)),
                    }
                }
                Some(attr) => {
                    let value = ev.attribute(attr).unwrap_or("");
                    if !keyed_cooldown_allows(lead.extra_mut(), ri, value, t, window) {
                        continue;
                    }
                }
            }
        }
        lead.engagement.add(rule.points, t, &rules.decay);
        let unclamped = crate::model::score::Decay {
            min: None,
            max: None,
            ..rules.decay
        };
        lead.add_contribution(ri, rule.points, t, &unclamped);
    }
}

/// The cooldown of rule `ri` for attribute value `value` (SPEC §4, `cooldown_key`): whether it
/// scores at `t`, remembering `t` when it does. At most `MAX_COOLDOWN_KEYS` values per rule:
/// remembering another forgets the one with the smallest `t_last` (ties: the one remembered
/// first, which is the earlier in the list).
fn keyed_cooldown_allows(extra: &mut Extra, ri: u16, value: &str, t: i64, window: u64) -> bool {
    let mut same_rule = 0;
    // The entry with the smallest `t_last` (ties: the first), should one have to go.
    let mut oldest: Option<(i64, usize)> = None;
    let mut found = None;
    for k in extra.keyed_cooldowns().filter(|k| k.rule == ri) {
        if k.value == value.as_bytes() {
            found = Some((k.at, k.t_last));
            break;
        }
        same_rule += 1;
        if oldest.is_none_or(|(last, _)| k.t_last < last) {
            oldest = Some((k.t_last, k.at));
        }
    }
    if let Some((at, last)) = found {
        if t.abs_diff(last) < window {
            return false;
        }
        extra.keyed_set_time(at, last.max(t));
        return true;
    }
    if same_rule >= MAX_COOLDOWN_KEYS {
        if let Some((_, at)) = oldest {
            extra.keyed_remove(at);
        }
    }
    extra.keyed_push([(ri, value.as_bytes(), t)]);
    true
}

/// Evaluation time of SPEC §5: `max(t, tE)`.
fn eval_time(lead: &Lead, t: i64) -> i64 {
    t.max(lead.engagement.at)
}

fn mql_reason(rules: &Ruleset, lead: &Lead, ev: &Event) -> Option<&'static str> {
    let funnel = &rules.funnel;
    if !lead.stage.can_become_mql() || lead.fit < funnel.mql_min_fit {
        return None;
    }
    // It happened before the current stage began (SPEC §5, v2).
    if ev.occurred_at < lead.stage_entered() {
        return None;
    }
    let now = eval_time(lead, ev.occurred_at);
    if lead.engagement.at_time(now, &rules.decay) >= funnel.mql_threshold {
        Some("score")
    } else if funnel.fast_track.iter().any(|p| p.matches(ev)) {
        Some("fast_track")
    } else {
        None
    }
}

#[allow(clippy::too_many_arguments)]
fn transition(
    rules: &Ruleset,
    lead: &mut Lead,
    slot: u32,
    timers: &mut BTreeSet<Timer>,
    stats: &mut Stats,
    ev: &Event,
    to: Stage,
    reason: &'static str,
    out: &mut Vec<Output>,
) {
    let t = ev.occurred_at;
    let from = lead.stage;
    lead.stage = to;
    if to == Stage::Recycled && rules.funnel.recycle_reset {
        lead.engagement = Engagement::zero(t);
        lead.set_contributions(&[]);
        let rare = lead.extra_mut().rare_mut();
        rare.reset_at = Some(rare.reset_at.map_or(t, |r| r.max(t)));
    }
    let lists = lead.extra_mut().lists_mut();
    let change = RecentTransition::new(from, to, reason, t);
    let recent = lists.get_mut::<RecentTransition>();
    if recent.len() == RECENT_TRANSITIONS {
        // Full: the oldest goes, in place (no new allocation on this path).
        recent.rotate_left(1);
        recent[RECENT_TRANSITIONS - 1] = change;
    } else {
        lists.push(change);
    }
    if to == Stage::Mql {
        lead.set_mql(Some(MqlMark {
            at: t,
            grade: lead.grade,
        }));
    }
    lead.transitions += 1;
    stats.transitions_to[to.index()] += 1;
    let now = eval_time(lead, t);
    let key = lead.key();
    out.push(Output::Transition(Transition {
        transition_id: record_id(
            lead,
            key,
            &["t", itoa::Buffer::new().format(lead.transitions)],
        ),
        lead_key: CompactString::new(key),
        from_stage: from,
        to_stage: to,
        reason: CompactString::new(reason),
        occurred_at: t,
        trigger_event_id: ev.event_id.clone(),
        engagement: round4(lead.engagement.at_time(now, &rules.decay)),
        fit: round4(lead.fit),
        grade: CompactString::new(rules.grade_name(lead.grade)),
        owner_id: lead.owner_id().map(CompactString::new),
    }));

    // Leaving `from`: every running clock belongs to it. stage_exit clocks are met; the
    // others are cancelled silently.
    let clocks: Vec<Clock> = lead.extra_mut().lists_mut().take();
    for clock in &clocks {
        if matches!(rules.sla[clock.policy as usize].until, Until::StageExit) {
            out.push(met_record(rules, lead, clock, t, stats));
        }
        remove_timers(timers, slot, clock);
    }

    start_clocks(rules, lead, slot, timers, stats, to, t);
}

/// Starts the clocks of every policy on `stage` at `t` (SPEC §6) for `lead`, at position
/// `slot`, within `limits.max_pending_timers`.
fn start_clocks(
    rules: &Ruleset,
    lead: &mut Lead,
    slot: u32,
    timers: &mut BTreeSet<Timer>,
    stats: &mut Stats,
    stage: Stage,
    t: i64,
) {
    for &pi in rules.policies_for(stage) {
        let policy = &rules.sla[pi as usize];
        if timers.len() as u64 + 2 > rules.limits.max_pending_timers {
            // The bound holds: no clock (and no records) for this entry; counted.
            stats.refused_clocks += 1;
            continue;
        }
        let lists = lead.extra_mut().lists_mut();
        let k = match lists
            .get_mut::<SlaCount>()
            .iter_mut()
            .find(|c| c.policy == pi)
        {
            Some(c) => {
                c.started += 1;
                c.started
            }
            None => {
                lists.push(SlaCount::new(pi, 1));
                1
            }
        };
        let deadline = policy.offset(t, policy.within_ms);
        let warn_at = policy
            .warn_before_ms
            .map(|wb| policy.offset(t, policy.within_ms - wb));
        let clock = Clock::new(pi, k, t, deadline, warn_at);
        for (due, kind) in timer_slots(&clock) {
            timers.insert(Timer {
                due,
                slot,
                policy: pi,
                kind,
            });
        }
        lead.extra_mut().lists_mut().push(clock);
    }
}

fn timer_slots(clock: &Clock) -> impl Iterator<Item = (i64, TimerKind)> {
    clock
        .warn_at()
        .map(|w| (w, TimerKind::Warning))
        .into_iter()
        .chain(std::iter::once((clock.deadline, TimerKind::Breach)))
}

/// Removes the pending timers of `clock`, of the lead at position `slot` (those already fired
/// are gone).
fn remove_timers(timers: &mut BTreeSet<Timer>, slot: u32, clock: &Clock) {
    for (due, kind) in timer_slots(clock) {
        timers.remove(&Timer {
            due,
            slot,
            policy: clock.policy,
            kind,
        });
    }
}

/// Moves the pending timers of `lead`'s clocks from position `from` to `to` (the lead moved
/// in the vector).
fn move_timers(timers: &mut BTreeSet<Timer>, lead: &Lead, from: u32, to: u32) {
    for clock in lead.clocks() {
        for (due, kind) in timer_slots(clock) {
            let mut t = Timer {
                due,
                slot: from,
                policy: clock.policy,
                kind,
            };
            if timers.remove(&t) {
                t.slot = to;
                timers.insert(t);
            }
        }
    }
}

/// A record id of SPEC §7: the lead's key, `/r{time}` for a lead created again after an
/// eviction (SPEC's ids restart per lead; this keeps them unique), then `parts`, each after a
/// `/` (`key/t/3`, `key/s/first_touch/1/met`). `key` is `lead.key()`, read once by the
/// caller for the id and the record's `lead_key` (each read checks the key's UTF-8: 150
/// instructions for a 28-byte key). Built in one exact allocation: through `format!` the ids
/// took about 5% of the fold thread in a 3M-event replay.
fn record_id(lead: &Lead, key: &str, parts: &[&str]) -> CompactString {
    debug_assert_eq!(key, lead.key(), "record_id takes the lead's own key");
    let mut time = itoa::Buffer::new();
    let reborn: [&str; 2] = match lead.extra().rare().reborn {
        Some(t) => ["/r", time.format(t)],
        None => ["", ""],
    };
    let len = key.len()
        + reborn.iter().map(|p| p.len()).sum::<usize>()
        + parts.iter().map(|p| 1 + p.len()).sum::<usize>();
    // `key[/r…]/part/part…`, the same pieces whichever buffer takes them.
    let pieces = std::iter::once(key)
        .chain(reborn)
        .chain(parts.iter().flat_map(|&p| ["/", p]));
    if len <= INLINE_TEXT {
        // Inline: no allocation at all.
        let mut id = CompactString::with_capacity(len);
        id.extend(pieces);
        return id;
    }
    // Longer: built as a `String` and its buffer kept (`CompactString`'s own pushes into a
    // heap buffer measured slower: 56 M instructions against 24 M, docs/performance.md).
    let mut id = String::with_capacity(len);
    id.extend(pieces);
    CompactString::from_string_buffer(id)
}

/// The most bytes a `CompactString` holds without an allocation (64-bit: 24).
const INLINE_TEXT: usize = std::mem::size_of::<CompactString>();

fn met_record(rules: &Ruleset, lead: &Lead, clock: &Clock, t: i64, stats: &mut Stats) -> Output {
    let mut rec = sla_record(rules, lead, clock, SlaKind::Met, t, stats);
    if let Output::Sla(r) = &mut rec {
        let response = t.saturating_sub(clock.start).max(0);
        r.response_ms = Some(response);
        // The open hours inside [start, t] with a calendar (SPEC §6, v2), else clock time.
        r.response_business_ms = Some(match &rules.sla[clock.policy as usize].calendar {
            Some(cal) => cal.business_between(clock.start, t).unwrap_or(response),
            None => response,
        });
        r.on_time = Some(t <= clock.deadline);
    }
    rec
}

fn sla_record(
    rules: &Ruleset,
    lead: &Lead,
    clock: &Clock,
    kind: SlaKind,
    at: i64,
    stats: &mut Stats,
) -> Output {
    let policy = &rules.sla[clock.policy as usize];
    stats.sla[kind as usize] += 1;
    let key = lead.key();
    Output::Sla(SlaRecord {
        sla_event_id: record_id(
            lead,
            key,
            &[
                "s",
                &policy.name,
                itoa::Buffer::new().format(clock.k),
                kind.as_str(),
            ],
        ),
        lead_key: CompactString::new(key),
        policy: CompactString::new(&policy.name),
        kind,
        stage: policy.stage,
        started_at: clock.start,
        deadline: clock.deadline,
        at,
        response_ms: None,
        response_business_ms: None,
        on_time: None,
        owner_id: lead.owner_id().map(CompactString::new),
    })
}

/// What the lead index's rebuild reads: each stored position's key hash. Its hints load the
/// lead, then its key allocation, a few entries ahead, so a rebuild at 1M leads does not wait
/// on two cold loads per lead in turn.
struct KeyHashes<'a> {
    leads: &'a [Lead],
    hasher: &'a DefaultHashBuilder,
}

impl index::Rehash for KeyHashes<'_> {
    fn hash(&self, x: u32) -> u64 {
        self.hasher.hash_one(self.leads[x as usize].key())
    }

    fn prefetch_far(&self, x: u32) {
        if let Some(lead) = self.leads.get(x as usize) {
            lead.prefetch_ident_field();
        }
    }

    fn prefetch_near(&self, x: u32) {
        if let Some(lead) = self.leads.get(x as usize) {
            lead.prefetch_key();
        }
    }
}

/// What the engine's unit tests share: the example config's rules, a CRM upsert.
#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::Arc;

    use crate::config::Settings;
    use crate::model::event::{Event, EventFields};
    use crate::model::rules::Ruleset;

    pub fn example_rules() -> Arc<Ruleset> {
        Settings::from_toml(include_str!("../../examples/config.toml"))
            .expect("example config")
            .rules
    }

    /// The example config's decay and funnel with `fit` as the only rules.
    pub fn fit_only_rules(fit: Vec<crate::model::rules::FitRule>) -> Ruleset {
        let base = example_rules();
        Ruleset::new(
            Vec::new(),
            base.decay,
            fit,
            Vec::new(),
            base.funnel.clone(),
            Vec::new(),
        )
    }

    /// A valid `lead_upsert` for `key` at `t` setting `country` to US.
    pub fn upsert(event_id: &str, key: &str, t: i64) -> Event {
        EventFields::from_parts(event_id, key, t, "crm", "lead_upsert", &[("country", "US")])
            .validate()
            .expect("valid")
    }
}

#[cfg(test)]
mod tests {
    use super::fit::fit_score;
    use super::lists::KEYED_INLINE_MAX;
    use super::test_support::{example_rules, upsert};
    use super::*;
    use crate::model::matcher::Matcher;
    use crate::model::rules::{FitRule, FitTest};

    /// The keyed cooldowns before they moved into `Lists`: a list of `(rule, value, t_last)`
    /// (the model for the test below).
    fn keyed_model(
        list: &mut Vec<(u16, String, i64)>,
        ri: u16,
        value: &str,
        t: i64,
        window: u64,
    ) -> bool {
        if let Some((_, _, last)) = list.iter_mut().find(|(r, v, _)| *r == ri && v == value) {
            if t.abs_diff(*last) < window {
                return false;
            }
            *last = (*last).max(t);
            return true;
        }
        if list.iter().filter(|(r, _, _)| *r == ri).count() >= MAX_COOLDOWN_KEYS {
            let oldest = list
                .iter()
                .enumerate()
                .filter(|(_, (r, _, _))| *r == ri)
                .min_by_key(|(i, (_, _, last))| (*last, *i))
                .map(|(i, _)| i);
            if let Some(i) = oldest {
                list.remove(i);
            }
        }
        list.push((ri, value.to_string(), t));
        true
    }

    proptest::proptest! {
        /// Per-value cooldowns (SPEC §4) in `Lists` decide and remember as the plain list did:
        /// the same answers, the same entries in the same order, through evictions past
        /// `MAX_COOLDOWN_KEYS` values per rule, values of every length around a word, and
        /// the other lists changing around them.
        #[test]
        fn keyed_cooldowns_in_lists_match_the_plain_list(
            steps in proptest::collection::vec(
                (0u16..3, 0usize..90, 0i64..50, 1u64..20, proptest::bool::ANY),
                0..400,
            )
        ) {
            let mut extra = Extra::default();
            let mut model = Vec::new();
            let mut recent = 0;
            for (ri, v, t, window, other) in steps {
                // Values from "" to 17 bytes, so some end on a word boundary and some do not,
                // and every fifth one past `KEYED_INLINE_MAX` (kept out of line).
                let mut value = "v".repeat(v % 18) + &v.to_string()[..usize::from(v >= 18)];
                if v % 5 == 4 {
                    value += &"é".repeat(KEYED_INLINE_MAX / 2);
                }
                let got = keyed_cooldown_allows(&mut extra, ri, &value, t, window);
                let want = keyed_model(&mut model, ri, &value, t, window);
                proptest::prop_assert_eq!(got, want);
                if other {
                    // A list before the keyed cooldowns changes size.
                    let lists = extra.lists_mut();
                    if recent < RECENT_TRANSITIONS {
                        lists.push(RecentTransition::new(Stage::New, Stage::Mql, "score", t));
                        recent += 1;
                    } else {
                        lists.remove::<RecentTransition>(0);
                        recent -= 1;
                    }
                }
                let kept: Vec<(u16, String, i64)> = extra
                    .keyed_cooldowns()
                    .map(|k| (k.rule, String::from_utf8_lossy(k.value).into_owned(), k.t_last))
                    .collect();
                proptest::prop_assert_eq!(&kept, &model);
                proptest::prop_assert_eq!(extra.recent_transitions().len(), recent);
                // Long values: exactly those the model holds, out of line, each once.
                let long: usize = model.iter().filter(|(_, v, _)| v.len() > KEYED_INLINE_MAX).count();
                proptest::prop_assert_eq!(extra.rare().long_values.len(), long);
                let words: usize = recent
                    + model
                        .iter()
                        .map(|(_, v, _)| {
                            2 + if v.len() > KEYED_INLINE_MAX { 0 } else { v.len().div_ceil(8) }
                        })
                        .sum::<usize>();
                let exact = if words == 0 { 0 } else { 1 + words };
                proptest::prop_assert_eq!(extra.lists().words().len(), exact, "one exact allocation");
            }
        }
    }

    proptest::proptest! {
        /// The fit score from one walk of the profile is the score of one lookup per rule,
        /// summed in config order, to the bit (SPEC §4): rules on names before, between and
        /// after the profile's, several rules on one name, names the packing codes in one
        /// byte and others, numbers and matchers; more than 64 rules take the lookup path.
        #[test]
        fn fit_score_is_the_sum_over_rules_in_config_order(
            profile in proptest::collection::btree_map(
                proptest::sample::select(FIT_NAMES.to_vec()),
                proptest::sample::select(FIT_VALUES.to_vec()),
                0..8,
            ),
            fit in proptest::collection::vec(
                (
                    proptest::sample::select(FIT_NAMES.to_vec()),
                    0..FIT_TESTS.len(),
                    -40i32..40,
                ),
                0..70,
            ),
        ) {
            let tests: Vec<FitTest> = FIT_TESTS
                .iter()
                .map(|t| match t.strip_prefix(">=") {
                    Some(n) => FitTest::Range { gte: n.parse().ok(), lt: None },
                    None => FitTest::Match(Matcher::parse(t).expect("a matcher")),
                })
                .collect();
            let fit: Vec<FitRule> = fit
                .into_iter()
                .enumerate()
                .map(|(i, (attribute, test, points))| FitRule {
                    name: format!("r{i}"),
                    attribute: attribute.to_string(),
                    test: tests[test].clone(),
                    // Thirds, so the order of the float sum shows in its last bits.
                    points: f64::from(points) / 3.0,
                })
                .collect();
            let rules = super::test_support::fit_only_rules(fit);
            let mut lead = Lead::new("lead@x.io", 0);
            let attrs: Vec<(&str, &str)> = profile.iter().map(|(k, v)| (*k, *v)).collect();
            lead.set_attributes(&attrs);
            let want: f64 = rules
                .fit
                .iter()
                .filter(|r| r.matches(profile.get(r.attribute.as_str()).copied()))
                .map(|r| r.points)
                .sum();
            let got = fit_score(&rules, lead.profile());
            proptest::prop_assert_eq!(got.to_bits(), want.to_bits(), "{} vs {}", got, want);
            // Through a memo too (over 64 rules as well), the second time from what it kept.
            let mut memo = super::fit::FitMemo::with_slots(&rules, 2);
            for _ in 0..2 {
                let got = memo.score(&rules, lead.profile());
                proptest::prop_assert_eq!(got.to_bits(), want.to_bits(), "memo: {}", got);
            }
        }
    }

    /// Attribute names for `fit_score`'s test: packed as common names (`country`, `title`,
    /// `employees`) and spelled out, sorting before, between and after them, and names that
    /// extend one (`countryx`, `title2`).
    const FIT_NAMES: [&str; 10] = [
        "a",
        "country",
        "countryx",
        "custom",
        "employees",
        "f",
        "title",
        "title2",
        "zz",
        "é",
    ];
    const FIT_VALUES: [&str; 8] = [
        "US",
        "UK",
        "200",
        "1999.5",
        "Director of IT",
        "cto",
        "x",
        "é",
    ];
    const FIT_TESTS: [&str; 7] = [
        "US",
        "glob:U?",
        "regex:(?i)\\bcto\\b",
        "regex:.",
        ">=200",
        ">=2000",
        "é",
    ];

    /// The recent stage changes keep the newest `RECENT_TRANSITIONS`, oldest first, once the
    /// ring is full and wraps (in place).
    #[test]
    fn recent_transitions_keep_the_newest_in_order() {
        use crate::model::event::EventFields;
        let mut st = PartitionState::new(example_rules());
        let mut out = Vec::new();
        let t0 = 1_795_210_200_000;
        st.apply(&upsert("u", "ana", t0), &mut out);
        let n = RECENT_TRANSITIONS + 3;
        for i in 0..n {
            let ty = if i % 2 == 0 {
                "sales_accepted"
            } else {
                "recycled"
            };
            let ev =
                EventFields::from_parts(&format!("c{i}"), "ana", t0 + 1 + i as i64, "crm", ty, &[])
                    .validate()
                    .expect("valid");
            st.apply(&ev, &mut out);
        }
        let lead = st.lead("ana").expect("ana");
        assert_eq!(lead.transitions as usize, n);
        let kept: Vec<(i64, Stage)> = lead
            .extra()
            .recent_transitions()
            .iter()
            .map(|r| (r.at(), r.to()))
            .collect();
        let want: Vec<(i64, Stage)> = (n - RECENT_TRANSITIONS..n)
            .map(|i| {
                (
                    t0 + 1 + i as i64,
                    if i % 2 == 0 {
                        Stage::Sal
                    } else {
                        Stage::Recycled
                    },
                )
            })
            .collect();
        assert_eq!(kept, want);
        assert_eq!(lead.stage_entered(), t0 + n as i64);
    }

    /// The prefetch hints must reach the lead a key's event will update: the walk hashes as
    /// the index does and visits the lead's position (a hint to the wrong place is lost time).
    #[test]
    fn the_prefetch_walk_visits_the_position_of_the_keys_lead() {
        let mut st = PartitionState::new(example_rules());
        let mut out = Vec::new();
        let n = 5_000;
        for i in 0..n {
            let ev = upsert(
                &format!("e{i}"),
                &format!("lead{i}@x.io"),
                1_794_837_600_000 + i,
            );
            st.apply(&ev, &mut out);
        }
        // Prepared as replay's reader thread prepares: through a `Preparer`, on another
        // thread (the hasher's copy must hash as the index does).
        let preparer = st.preparer();
        let prepared: Vec<Prepared> = std::thread::scope(|s| {
            s.spawn(|| {
                (0..n)
                    .map(|i| preparer.prepare(&upsert("x", &format!("lead{i}@x.io"), 0)))
                    .collect()
            })
            .join()
            .expect("preparing thread")
        });
        let candidates = |p: &Prepared| {
            let mut v = Vec::new();
            st.walk_candidates(p.key_hash, |i| v.push(i));
            v
        };
        let mut extra = 0;
        for i in 0..n {
            let key = format!("lead{i}@x.io");
            let pos = st.find(&key).expect("applied lead");
            let c = candidates(&prepared[i as usize]);
            assert!(c.contains(&pos), "{key}: {c:?} lacks {pos}");
            extra += c.len() - 1;
        }
        // Other candidates share the 8-bit tag on the probe up to the first empty bucket:
        // about 1 in 254 per full bucket passed, a few in 100 keys at this table's load
        // (5,000 in 8,192 buckets).
        assert!(
            extra < n as usize / 5,
            "{extra} extra candidates for {n} keys"
        );
        let absent: usize = (0..n)
            .map(|i| candidates(&st.prepare(&upsert("x", &format!("other{i}"), 0))).len())
            .sum();
        assert!(
            absent < n as usize / 5,
            "{absent} candidates for {n} absent keys"
        );
    }
}
