//! `PartitionState`: the deterministic fold of one partition's events into lead state and
//! output records (SPEC §3–§7). No I/O, no wall clock: time comes only from events and from
//! `advance`.

mod explain;
mod snapshot;

pub use explain::Explanation;
pub use snapshot::SnapshotError;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use hashbrown::HashMap;

use crate::model::event::{CrmType, Event};
use crate::model::funnel::{crm_move, crm_outcome, CrmOutcome, Stage};
use crate::model::records::{Output, SlaKind, SlaRecord, Transition};
use crate::model::rules::{Ruleset, Until};
use crate::model::score::{round4, Engagement};

/// How many recent event ids per lead are remembered for duplicate detection (SPEC §2).
pub const RECENT_IDS: usize = 8;

/// Hashes of the last `RECENT_IDS` event ids applied to a lead. A 64-bit hash keeps the lead
/// small; a false duplicate needs a collision among 8 ids (~4e-19).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecentIds {
    ids: [u64; RECENT_IDS],
    len: u8,
    next: u8,
}

impl RecentIds {
    pub fn contains(&self, h: u64) -> bool {
        self.ids[..self.len as usize].contains(&h)
    }

    pub fn push(&mut self, h: u64) {
        self.ids[self.next as usize] = h;
        self.next = ((self.next as usize + 1) % RECENT_IDS) as u8;
        self.len = (self.len + 1).min(RECENT_IDS as u8);
    }
}

/// FNV-1a, 64 bit: stable across builds and platforms, so snapshots stay valid.
pub fn id_hash(id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A running SLA clock.
#[derive(Clone, Debug, PartialEq)]
pub struct Clock {
    pub policy: u16,
    pub k: u32,
    pub start: i64,
    pub deadline: i64,
    pub warn_at: Option<i64>,
}

#[derive(Clone, Debug)]
pub struct Lead {
    pub key: Arc<str>,
    pub stage: Stage,
    pub engagement: Engagement,
    pub fit: f64,
    pub grade: Option<u8>,
    /// Sorted by attribute name.
    pub profile: Vec<(String, String)>,
    /// `(rule index, t_last)` for rules with a cooldown that have scored this lead.
    pub cooldowns: Vec<(u16, i64)>,
    pub recent: RecentIds,
    pub transitions: u32,
    pub clocks: Vec<Clock>,
    /// `(policy index, clocks started)`.
    pub sla_started: Vec<(u16, u32)>,
    /// Per engagement rule that scored: its own decayed sum (no clamp), for explanations.
    pub contributions: Vec<(u16, Engagement)>,
    /// The last `RECENT_TRANSITIONS` stage changes, oldest first.
    pub recent_transitions: Vec<RecentTransition>,
}

/// How many stage changes a lead remembers for explanations.
pub const RECENT_TRANSITIONS: usize = 5;

#[derive(Clone, Debug, PartialEq)]
pub struct RecentTransition {
    pub from: Stage,
    pub to: Stage,
    pub reason: &'static str,
    pub at: i64,
}

/// Transition reasons are `score`, `fast_track` or a CRM type: all static strings.
pub fn static_reason(reason: &str) -> Option<&'static str> {
    match reason {
        "score" => Some("score"),
        "fast_track" => Some("fast_track"),
        other => CrmType::parse(other).map(CrmType::as_str),
    }
}

impl Lead {
    fn new(key: Arc<str>, t: i64) -> Lead {
        Lead {
            key,
            stage: Stage::New,
            engagement: Engagement::zero(t),
            fit: 0.0,
            grade: None,
            profile: Vec::new(),
            cooldowns: Vec::new(),
            recent: RecentIds::default(),
            transitions: 0,
            clocks: Vec::new(),
            sla_started: Vec::new(),
            contributions: Vec::new(),
            recent_transitions: Vec::new(),
        }
    }

    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.profile
            .binary_search_by(|(k, _)| k.as_str().cmp(name))
            .ok()
            .map(|i| self.profile[i].1.as_str())
    }

    pub fn owner_id(&self) -> Option<&str> {
        self.attribute("owner_id")
    }

    /// Sets (or, for an empty value, removes) a profile attribute; true when it changed.
    fn set_attribute(&mut self, name: &str, value: &str) -> bool {
        match self.profile.binary_search_by(|(k, _)| k.as_str().cmp(name)) {
            Ok(i) if value.is_empty() => {
                self.profile.remove(i);
                true
            }
            Ok(i) if self.profile[i].1 == value => false,
            Ok(i) => {
                self.profile[i].1 = value.to_string();
                true
            }
            Err(_) if value.is_empty() => false,
            Err(i) => {
                self.profile
                    .insert(i, (name.to_string(), value.to_string()));
                true
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    Warning,
    Breach,
}

/// A pending warning or breach. Field order is the firing order of SPEC §6: time, lead key,
/// policy name (rank), warning before breach.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Timer {
    due: i64,
    lead: Arc<str>,
    rank: u16,
    kind: TimerKind,
    policy: u16,
}

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
}

/// Whether an event changed state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    Applied,
    Duplicate,
}

pub struct PartitionState {
    rules: Arc<Ruleset>,
    leads: HashMap<Arc<str>, Lead>,
    timers: BTreeSet<Timer>,
    clock: Option<i64>,
    stats: Stats,
    /// Leads per stage (index = `Stage::index`) and running SLA clocks, kept incrementally.
    stage_counts: [u64; 8],
    open_clocks: u64,
}

impl PartitionState {
    pub fn new(rules: Arc<Ruleset>) -> PartitionState {
        PartitionState {
            rules,
            leads: HashMap::new(),
            timers: BTreeSet::new(),
            clock: None,
            stats: Stats::default(),
            stage_counts: [0; 8],
            open_clocks: 0,
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
        for lead in self.leads.values() {
            self.stage_counts[lead.stage.index()] += 1;
            self.open_clocks += lead.clocks.len() as u64;
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn lead(&self, key: &str) -> Option<&Lead> {
        self.leads.get(key)
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

    /// When the earliest pending warning or breach is due.
    pub fn next_due(&self) -> Option<i64> {
        self.timers.first().map(|t| t.due)
    }

    pub fn rules(&self) -> &Ruleset {
        &self.rules
    }

    /// Counts an input that failed validation (it never touches state).
    pub fn note_invalid(&mut self, code: &'static str) {
        self.stats.invalid += 1;
        *self.stats.invalid_by_reason.entry(code).or_insert(0) += 1;
    }

    /// Moves the stream clock to `time` (if later) and fires every warning and breach due
    /// strictly before it. Used for ticks and for replay's `--until`.
    pub fn advance(&mut self, time: i64, out: &mut Vec<Output>) {
        let clock = self.clock.map_or(time, |c| c.max(time));
        self.clock = Some(clock);
        while self.timers.first().is_some_and(|t| t.due < clock) {
            let Some(timer) = self.timers.pop_first() else {
                break;
            };
            self.fire(&timer, out);
        }
    }

    fn fire(&mut self, timer: &Timer, out: &mut Vec<Output>) {
        let rules = &*self.rules;
        let Some(lead) = self.leads.get(&*timer.lead) else {
            return;
        };
        let Some(clock) = lead.clocks.iter().find(|c| c.policy == timer.policy) else {
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
        self.stats.events += 1;
        let t = ev.occurred_at;
        self.advance(t, out);

        let PartitionState {
            rules,
            leads,
            timers,
            stats,
            stage_counts,
            open_clocks,
            ..
        } = self;
        let rules: &Ruleset = rules;
        let lead = leads.entry_ref(ev.lead_key.as_str()).or_insert_with(|| {
            stage_counts[Stage::New.index()] += 1;
            Lead::new(Arc::from(ev.lead_key.as_str()), t)
        });

        let h = id_hash(&ev.event_id);
        if lead.recent.contains(h) {
            stats.duplicates += 1;
            return Applied::Duplicate;
        }
        lead.recent.push(h);

        update_profile(rules, lead, ev);
        score_engagement(rules, lead, ev);

        // The event's own SLA `met` records (until-lists), before its transition.
        let mut i = 0;
        while i < lead.clocks.len() {
            let clock = &lead.clocks[i];
            let policy = &rules.sla[clock.policy as usize];
            let met = match &policy.until {
                Until::Events(patterns) => {
                    t >= clock.start && patterns.iter().any(|p| p.matches(ev))
                }
                Until::StageExit => false,
            };
            if met {
                let clock = lead.clocks.remove(i);
                *open_clocks -= 1;
                out.push(met_record(rules, lead, &clock, t, stats));
                remove_timers(timers, rules, &lead.key, &clock);
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
            let before = lead.clocks.len() as u64;
            stage_counts[lead.stage.index()] -= 1;
            stage_counts[to.index()] += 1;
            transition(rules, lead, timers, stats, ev, to, reason, out);
            *open_clocks = *open_clocks - before + lead.clocks.len() as u64;
        }
        Applied::Applied
    }
}

fn update_profile(rules: &Ruleset, lead: &mut Lead, ev: &Event) {
    let changed = match ev.crm {
        Some(CrmType::LeadUpsert) => {
            let mut changed = false;
            for (k, v) in &ev.attributes {
                changed |= lead.set_attribute(k, v);
            }
            changed
        }
        // A missing `owner_id` attribute leaves the owner as it is; an empty one clears it.
        Some(CrmType::OwnerAssigned) => match ev.attribute("owner_id") {
            Some(owner) => lead.set_attribute("owner_id", owner),
            None => false,
        },
        _ => false,
    };
    if changed {
        lead.fit = rules
            .fit
            .iter()
            .filter(|r| r.matches(lead.attribute(&r.attribute)))
            .map(|r| r.points)
            .sum();
        lead.grade = rules.grade_for(lead.fit);
    }
}

fn score_engagement(rules: &Ruleset, lead: &mut Lead, ev: &Event) {
    let t = ev.occurred_at;
    for &ri in rules.candidate_rules(ev.source, &ev.event_type) {
        let rule = &rules.engagement[ri as usize];
        if !rule.conditions_hold(ev) {
            continue;
        }
        if let Some(cooldown) = rule.cooldown_ms {
            match lead.cooldowns.iter_mut().find(|(r, _)| *r == ri) {
                Some((_, last)) => {
                    if t.abs_diff(*last) < cooldown.unsigned_abs() {
                        continue;
                    }
                    *last = (*last).max(t);
                }
                None => lead.cooldowns.push((ri, t)),
            }
        }
        lead.engagement.add(rule.points, t, &rules.decay);
        let unclamped = crate::model::score::Decay {
            min: None,
            max: None,
            ..rules.decay
        };
        match lead.contributions.iter_mut().find(|(r, _)| *r == ri) {
            Some((_, c)) => c.add(rule.points, t, &unclamped),
            None => {
                let mut c = Engagement::zero(t);
                c.add(rule.points, t, &unclamped);
                lead.contributions.push((ri, c));
            }
        }
    }
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
        lead.contributions.clear();
    }
    if lead.recent_transitions.len() == RECENT_TRANSITIONS {
        lead.recent_transitions.remove(0);
    }
    lead.recent_transitions.push(RecentTransition {
        from,
        to,
        reason,
        at: t,
    });
    lead.transitions += 1;
    stats.transitions_to[to.index()] += 1;
    let now = eval_time(lead, t);
    out.push(Output::Transition(Transition {
        transition_id: format!("{}/t/{}", lead.key, lead.transitions),
        lead_key: lead.key.to_string(),
        from_stage: from,
        to_stage: to,
        reason: reason.to_string(),
        occurred_at: t,
        trigger_event_id: ev.event_id.clone(),
        engagement: round4(lead.engagement.at_time(now, &rules.decay)),
        fit: round4(lead.fit),
        grade: rules.grade_name(lead.grade).to_string(),
        owner_id: lead.owner_id().map(str::to_string),
    }));

    // Leaving `from`: every running clock belongs to it. stage_exit clocks are met; the
    // others are cancelled silently.
    let clocks = std::mem::take(&mut lead.clocks);
    for clock in &clocks {
        if matches!(rules.sla[clock.policy as usize].until, Until::StageExit) {
            out.push(met_record(rules, lead, clock, t, stats));
        }
        remove_timers(timers, rules, &lead.key, clock);
    }

    for &pi in rules.policies_for(to) {
        let policy = &rules.sla[pi as usize];
        let k = match lead.sla_started.iter_mut().find(|(p, _)| *p == pi) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                lead.sla_started.push((pi, 1));
                1
            }
        };
        let deadline = policy.offset(t, policy.within_ms);
        let warn_at = policy
            .warn_before_ms
            .map(|wb| policy.offset(t, policy.within_ms - wb));
        let clock = Clock {
            policy: pi,
            k,
            start: t,
            deadline,
            warn_at,
        };
        for (due, kind) in timer_slots(&clock) {
            timers.insert(Timer {
                due,
                lead: lead.key.clone(),
                rank: rules.sla_rank[pi as usize],
                kind,
                policy: pi,
            });
        }
        lead.clocks.push(clock);
    }
}

fn timer_slots(clock: &Clock) -> impl Iterator<Item = (i64, TimerKind)> {
    clock
        .warn_at
        .map(|w| (w, TimerKind::Warning))
        .into_iter()
        .chain(std::iter::once((clock.deadline, TimerKind::Breach)))
}

fn remove_timers(timers: &mut BTreeSet<Timer>, rules: &Ruleset, key: &Arc<str>, clock: &Clock) {
    for (due, kind) in timer_slots(clock) {
        timers.remove(&Timer {
            due,
            lead: key.clone(),
            rank: rules.sla_rank[clock.policy as usize],
            kind,
            policy: clock.policy,
        });
    }
}

fn met_record(rules: &Ruleset, lead: &Lead, clock: &Clock, t: i64, stats: &mut Stats) -> Output {
    let mut rec = sla_record(rules, lead, clock, SlaKind::Met, t, stats);
    if let Output::Sla(r) = &mut rec {
        r.response_ms = Some(t.saturating_sub(clock.start).max(0));
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
    Output::Sla(SlaRecord {
        sla_event_id: format!(
            "{}/s/{}/{}/{}",
            lead.key,
            policy.name,
            clock.k,
            kind.as_str()
        ),
        lead_key: lead.key.to_string(),
        policy: policy.name.clone(),
        kind,
        stage: policy.stage,
        started_at: clock.start,
        deadline: clock.deadline,
        at,
        response_ms: None,
        on_time: None,
        owner_id: lead.owner_id().map(str::to_string),
    })
}
