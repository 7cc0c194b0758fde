//! Snapshot encoding of a `PartitionState`: versioned, checksummed, and independent of rule
//! order (rules and policies are stored by name, so reordering the config keeps snapshots
//! valid; state of a removed rule or policy is dropped on restore).
//!
//! Layout (little endian): magic `LFSN`, version u16, body, CRC-32 of everything before it.
//! Pure bytes in and out; the store that writes files lives at the edge.

use std::fmt;
use std::sync::Arc;

use super::{
    static_reason, timer_slots, Clock, Cooldown, EvictedFilter, Extra, Lead, Lists, MqlMark,
    PartitionState, Rare, RecentTransition, SlaCount, Stats, Timer, TimerKind, RECENT_IDS,
    RECENT_TRANSITIONS,
};
use crate::model::funnel::Stage;
use crate::model::rules::Ruleset;
use crate::model::score::Engagement;

pub const MAGIC: &[u8; 4] = b"LFSN";
/// 2: per-rule contributions and recent transitions per lead.
/// 3: eviction state: per lead the last event time and the returning mark; eviction counters,
/// the last sweep, and the evicted-key filter.
/// 4 (SPEC v2): the duplicate window as a list of any length (`dedupe.recent_ids`); per lead
/// the creation time, the last engagement reset, and the per-value cooldowns (`cooldown_key`).
/// 5: each lead's latest MQL (time and grade name).
/// 6: the duplicate window's hashes are 48 bits (the low bits of v5's 64-bit hashes, which a
/// restore cuts to them). A build before refuses v6 rather than compare its 64-bit hashes
/// with these and miss every duplicate.
/// Versions 2 and 3 are still read (docs/snapshots.md says how their leads are completed).
pub const VERSION: u16 = 6;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotError {
    BadMagic,
    UnsupportedVersion(u16),
    Checksum { stored: u32, computed: u32 },
    Truncated(&'static str),
    Corrupt(String),
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::BadMagic => write!(
                f,
                "not a leadflow snapshot (it does not start with \"LFSN\"; too short or \
                 another kind of file)"
            ),
            SnapshotError::UnsupportedVersion(v) if *v > VERSION => write!(
                f,
                "snapshot format version {v} is newer than this build reads (2 to {VERSION}): \
                 written by a newer leadflow"
            ),
            SnapshotError::UnsupportedVersion(v) => write!(
                f,
                "snapshot format version {v} is no longer read (this build reads 2 to {VERSION})"
            ),
            SnapshotError::Checksum { stored, computed } => write!(
                f,
                "snapshot checksum mismatch (stored {stored:08x}, computed {computed:08x})"
            ),
            SnapshotError::Truncated(what) => write!(f, "snapshot truncated while reading {what}"),
            SnapshotError::Corrupt(why) => write!(f, "corrupt snapshot: {why}"),
        }
    }
}

impl std::error::Error for SnapshotError {}

impl SnapshotError {
    /// A bounded label for metrics: `not_a_snapshot`, `unsupported_version` or `corrupt`.
    pub fn code(&self) -> &'static str {
        match self {
            SnapshotError::BadMagic => "not_a_snapshot",
            SnapshotError::UnsupportedVersion(_) => "unsupported_version",
            SnapshotError::Checksum { .. }
            | SnapshotError::Truncated(_)
            | SnapshotError::Corrupt(_) => "corrupt",
        }
    }
}

pub(super) struct W(pub(super) Vec<u8>);

impl W {
    pub(super) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(super) fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(super) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(super) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(super) fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(super) fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_bits().to_le_bytes());
    }
    pub(super) fn opt_i64(&mut self, v: Option<i64>) {
        match v {
            Some(x) => {
                self.u8(1);
                self.i64(x);
            }
            None => self.u8(0),
        }
    }
    pub(super) fn str(&mut self, s: &str) {
        self.bytes_as_str(s.as_bytes());
    }
    /// UTF-8 bytes kept as bytes (a keyed cooldown's value), written as `str` writes.
    pub(super) fn bytes_as_str(&mut self, s: &[u8]) {
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s);
    }
    pub(super) fn len(&mut self, n: usize) {
        self.u32(n as u32);
    }
}

struct R<'a> {
    buf: &'a [u8],
}

impl<'a> R<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], SnapshotError> {
        if self.buf.len() < n {
            return Err(SnapshotError::Truncated(what));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn arr<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], SnapshotError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, SnapshotError> {
        Ok(self.take(1, what)?[0])
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, SnapshotError> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }
    fn i64(&mut self, what: &'static str) -> Result<i64, SnapshotError> {
        Ok(i64::from_le_bytes(self.arr(what)?))
    }
    fn f64(&mut self, what: &'static str) -> Result<f64, SnapshotError> {
        Ok(f64::from_bits(self.u64(what)?))
    }
    fn opt_i64(&mut self, what: &'static str) -> Result<Option<i64>, SnapshotError> {
        match self.u8(what)? {
            0 => Ok(None),
            1 => Ok(Some(self.i64(what)?)),
            t => Err(SnapshotError::Corrupt(format!(
                "bad option tag {t} in {what}"
            ))),
        }
    }
    fn str(&mut self, what: &'static str) -> Result<&'a str, SnapshotError> {
        let n = self.u32(what)? as usize;
        std::str::from_utf8(self.take(n, what)?)
            .map_err(|_| SnapshotError::Corrupt(format!("invalid UTF-8 in {what}")))
    }
    /// A count of items each at least `min_item` bytes; refuses counts the remaining bytes
    /// cannot hold, so corrupt input never drives a huge allocation.
    fn count(&mut self, min_item: usize, what: &'static str) -> Result<usize, SnapshotError> {
        let n = self.u32(what)? as usize;
        if n.saturating_mul(min_item) > self.buf.len() {
            return Err(SnapshotError::Truncated(what));
        }
        Ok(n)
    }
}

fn stage_from(code: u8) -> Result<Stage, SnapshotError> {
    Stage::ALL
        .get(code as usize)
        .copied()
        .ok_or_else(|| SnapshotError::Corrupt(format!("unknown stage code {code}")))
}

impl PartitionState {
    /// Header and everything but the leads and the timers: magic, version, position, clock,
    /// counters, the evicted-key filter, and the lead count (`leads` in the order they follow).
    pub(super) fn encode_head(&self, w: &mut W, position: i64) {
        w.0.extend_from_slice(MAGIC);
        w.u16(VERSION);
        w.i64(position);
        w.opt_i64(self.clock);

        let s = &self.stats;
        for v in [s.events, s.duplicates, s.invalid, s.rejected_transitions] {
            w.u64(v);
        }
        for v in s.transitions_to.iter().chain(s.sla.iter()) {
            w.u64(*v);
        }
        for v in s
            .evicted
            .iter()
            .chain([&s.evicted_with_clocks, &s.refused_clocks])
        {
            w.u64(*v);
        }
        w.opt_i64(self.last_sweep);
        match &self.evicted {
            None => w.u8(0),
            Some(f) => {
                w.u8(1);
                w.len(f.words.len());
                for word in f.words.iter() {
                    w.u64(*word);
                }
            }
        }
        w.len(s.invalid_by_reason.len());
        for (k, v) in &s.invalid_by_reason {
            w.str(k);
            w.u64(*v);
        }
        w.len(self.leads.len());
    }

    /// The pending warnings and breaches, which follow the leads.
    pub(super) fn encode_timers(&self, w: &mut W) {
        let rules = &*self.rules;
        w.len(self.timers.len());
        // In the set's order (due time, then lead position), which restores to the same
        // positions: a restored state encodes to the same bytes.
        for t in &self.timers {
            w.str(self.leads[t.slot as usize].key());
            w.str(&rules.sla[t.policy as usize].name);
            w.u8(t.kind as u8);
            w.i64(t.due);
        }
    }
}

/// One lead's record (rules and policies by name).
pub(super) fn encode_lead(w: &mut W, rules: &Ruleset, lead: &Lead) {
    let extra = lead.extra();
    w.str(lead.key());
    w.u8(lead.stage.index() as u8);
    w.f64(lead.engagement.value);
    w.i64(lead.engagement.at);
    w.f64(lead.fit);
    w.i64(lead.last_seen);
    let profile = lead.profile();
    w.len(profile.len());
    for (k, v) in profile.iter() {
        w.str(k);
        w.str(v);
    }
    w.len(extra.cooldowns().len());
    for c in extra.cooldowns() {
        w.str(&rules.engagement[c.rule() as usize].name);
        w.i64(c.t_last());
    }
    let ids = lead.recent_id_iter(rules.dedupe_ids);
    w.len(ids.len());
    for h in ids {
        w.u64(h);
    }
    w.u32(lead.transitions);
    w.len(extra.clocks().len());
    for c in extra.clocks() {
        w.str(&rules.sla[c.policy as usize].name);
        w.u32(c.k);
        w.i64(c.start);
        w.i64(c.deadline);
        w.opt_i64(c.warn_at());
    }
    w.len(extra.sla_started().len());
    for c in extra.sla_started() {
        w.str(&rules.sla[c.policy as usize].name);
        w.u32(c.started);
    }
    w.len(lead.contributions().len());
    for (ri, c) in lead.contributions() {
        w.str(&rules.engagement[ri as usize].name);
        w.f64(c.value);
        w.i64(c.at);
    }
    w.len(extra.recent_transitions().len());
    for t in extra.recent_transitions() {
        w.u8(t.from().index() as u8);
        w.u8(t.to().index() as u8);
        w.str(t.reason());
        w.i64(t.at());
    }
    let rare = extra.rare();
    w.opt_i64(rare.reborn);
    w.i64(lead.created());
    w.opt_i64(rare.reset_at);
    w.len(extra.keyed_cooldowns().count());
    for k in extra.keyed_cooldowns() {
        w.str(&rules.engagement[k.rule as usize].name);
        w.bytes_as_str(k.value);
        w.i64(k.t_last);
    }
    // v5: the latest MQL (time, grade name; an empty name when there was none).
    match lead.mql() {
        Some(m) => {
            w.u8(1);
            w.i64(m.at);
            w.str(rules.grade_name(m.grade));
        }
        None => w.u8(0),
    }
}

impl PartitionState {
    /// Restores a state encoded by `encode_snapshot`, returning it and its log position.
    pub fn decode_snapshot(
        rules: Arc<Ruleset>,
        bytes: &[u8],
    ) -> Result<(PartitionState, i64), SnapshotError> {
        if bytes.len() < MAGIC.len() + 2 + 4 || &bytes[..4] != MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        // The checksum before the version: a damaged file is reported as damaged, not as a
        // snapshot of some unknown version.
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        let computed = crc32fast::hash(body);
        if stored != computed {
            return Err(SnapshotError::Checksum { stored, computed });
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if !(2..=VERSION).contains(&version) {
            return Err(SnapshotError::UnsupportedVersion(version));
        }
        let v3 = version >= 3;
        let v4 = version >= 4;
        let v5 = version >= 5;
        let mut r = R { buf: &body[6..] };
        let position = r.i64("position")?;
        let clock = r.opt_i64("clock")?;

        let mut stats = Stats {
            events: r.u64("stats")?,
            duplicates: r.u64("stats")?,
            invalid: r.u64("stats")?,
            rejected_transitions: r.u64("stats")?,
            ..Stats::default()
        };
        for v in stats.transitions_to.iter_mut().chain(stats.sla.iter_mut()) {
            *v = r.u64("stats")?;
        }
        let mut last_sweep = None;
        let mut evicted = None;
        if v3 {
            for v in stats.evicted.iter_mut() {
                *v = r.u64("stats")?;
            }
            stats.evicted_with_clocks = r.u64("stats")?;
            stats.refused_clocks = r.u64("stats")?;
            last_sweep = r.opt_i64("last sweep")?;
            match r.u8("evicted filter")? {
                0 => {}
                1 => {
                    let n = r.count(8, "evicted filter")?;
                    if n != super::evict::FILTER_WORDS {
                        return Err(SnapshotError::Corrupt(format!(
                            "evicted filter of {n} words (expected {})",
                            super::evict::FILTER_WORDS
                        )));
                    }
                    let mut f = EvictedFilter::new();
                    for word in f.words.iter_mut() {
                        *word = r.u64("evicted filter")?;
                    }
                    evicted = Some(f);
                }
                t => {
                    return Err(SnapshotError::Corrupt(format!(
                        "bad evicted filter tag {t}"
                    )))
                }
            }
        }
        for _ in 0..r.count(12, "invalid reasons")? {
            let reason = r.str("invalid reason")?;
            let n = r.u64("invalid count")?;
            // Reason codes are a closed set of static strings; unknown ones (a newer build's)
            // are folded into one bucket rather than leaked.
            let code = crate::model::event::Invalid::code_from_str(reason).unwrap_or("other");
            *stats.invalid_by_reason.entry(code).or_insert(0) += n;
        }

        let rule_index = |name: &str| rules.engagement.iter().position(|r| r.name == name);
        let policy_index = |name: &str| rules.sla.iter().position(|p| p.name == name);

        let n_leads = r.count(40, "leads")?;
        let mut state = PartitionState::new(Arc::clone(&rules));
        state.leads.reserve_exact(n_leads);
        state.index.reserve(n_leads, |_| 0); // empty: nothing to rehash
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        for _ in 0..n_leads {
            let key = r.str("lead key")?;
            let stage = stage_from(r.u8("stage")?)?;
            let engagement = Engagement {
                value: r.f64("engagement")?,
                at: r.i64("engagement time")?,
            };
            let fit = r.f64("fit")?;
            let last_seen = if v3 {
                r.i64("last seen")?
            } else {
                engagement.at
            };
            pairs.clear();
            for _ in 0..r.count(8, "profile")? {
                pairs.push((r.str("attribute")?, r.str("value")?));
            }
            if !pairs.windows(2).all(|w| w[0].0 < w[1].0) {
                return Err(SnapshotError::Corrupt(format!(
                    "profile of {key} is not sorted"
                )));
            }
            let n = r.count(12, "cooldowns")?;
            let mut cooldowns = Vec::with_capacity(n);
            for _ in 0..n {
                let name = r.str("rule name")?;
                let t = r.i64("cooldown time")?;
                if let Some(i) = rule_index(name) {
                    cooldowns.push(Cooldown::new(i as u16, t));
                }
            }
            // Oldest first.
            let recent: Vec<u64> = if v4 {
                let n = r.count(8, "recent ids")?;
                let mut ids = Vec::with_capacity(n);
                for _ in 0..n {
                    ids.push(r.u64("recent ids")?);
                }
                ids
            } else {
                let mut ring = [0u64; RECENT_IDS];
                for h in ring.iter_mut() {
                    *h = r.u64("recent ids")?;
                }
                let len = r.u8("recent ids")? as usize;
                let next = r.u8("recent ids")? as usize;
                if len > RECENT_IDS || next >= RECENT_IDS {
                    return Err(SnapshotError::Corrupt("recent id ring out of range".into()));
                }
                if len < RECENT_IDS {
                    ring[..len].to_vec()
                } else {
                    ring[next..].iter().chain(&ring[..next]).copied().collect()
                }
            };
            let transitions = r.u32("transitions")?;
            let n = r.count(25, "clocks")?;
            let mut clocks = Vec::with_capacity(n);
            for _ in 0..n {
                let name = r.str("policy name")?;
                let k = r.u32("clock k")?;
                let start = r.i64("clock start")?;
                let deadline = r.i64("clock deadline")?;
                let warn_at = r.opt_i64("clock warning")?;
                if let Some(i) = policy_index(name) {
                    clocks.push(Clock::new(i as u16, k, start, deadline, warn_at));
                }
            }
            let n = r.count(8, "clock counters")?;
            let mut sla_started = Vec::with_capacity(n);
            for _ in 0..n {
                let name = r.str("policy name")?;
                let n = r.u32("clock counter")?;
                if let Some(i) = policy_index(name) {
                    sla_started.push(SlaCount::new(i as u16, n));
                }
            }
            let n = r.count(20, "contributions")?;
            let mut contributions = Vec::with_capacity(n);
            for _ in 0..n {
                let name = r.str("rule name")?;
                let c = Engagement {
                    value: r.f64("contribution")?,
                    at: r.i64("contribution time")?,
                };
                if let Some(i) = rule_index(name) {
                    contributions.push((i as u16, c));
                }
            }
            let n = r.count(14, "recent transitions")?;
            let mut recent_transitions = Vec::with_capacity(n);
            if n > RECENT_TRANSITIONS {
                return Err(SnapshotError::Corrupt("too many recent transitions".into()));
            }
            for _ in 0..n {
                let from = stage_from(r.u8("transition from")?)?;
                let to = stage_from(r.u8("transition to")?)?;
                let reason = r.str("transition reason")?;
                let at = r.i64("transition time")?;
                let reason = static_reason(reason)
                    .ok_or_else(|| SnapshotError::Corrupt(format!("unknown reason {reason}")))?;
                recent_transitions.push(RecentTransition::new(from, to, reason, at));
            }
            let reborn = if v3 {
                r.opt_i64("returning mark")?
            } else {
                None
            };
            // Before v4 neither the creation time nor the last reset was kept: creation 0
            // (no event is older, as in v1), the reset from the recent transitions.
            let (created, reset_at, keyed_cooldowns) = if v4 {
                let created = r.i64("creation time")?;
                let reset_at = r.opt_i64("last reset")?;
                let n = r.count(20, "keyed cooldowns")?;
                let mut keyed = Vec::with_capacity(n);
                for _ in 0..n {
                    let name = r.str("rule name")?;
                    let value = r.str("cooldown value")?;
                    let t = r.i64("cooldown time")?;
                    if let Some(i) =
                        rule_index(name).filter(|&i| rules.engagement[i].cooldown_key.is_some())
                    {
                        keyed.push((i as u16, value, t));
                    }
                }
                (created, reset_at, keyed)
            } else {
                let reset_at = recent_transitions
                    .iter()
                    .rev()
                    .find(|t| t.to() == Stage::Recycled)
                    .filter(|_| rules.funnel.recycle_reset)
                    .map(|t| t.at());
                (0, reset_at, Vec::new())
            };
            // v5 keeps the latest MQL. Before, the recent transitions tell when (if it is
            // among them), and the grade is the lead's grade now: the best left to know.
            let mql = if v5 {
                match r.u8("mql mark")? {
                    0 => None,
                    1 => {
                        let at = r.i64("mql time")?;
                        let grade = r.str("mql grade")?;
                        Some(MqlMark {
                            at,
                            grade: rules
                                .grades
                                .iter()
                                .position(|g| g.grade == grade)
                                .map(|i| i as u8),
                        })
                    }
                    other => {
                        return Err(SnapshotError::Corrupt(format!("mql mark {other}")));
                    }
                }
            } else {
                recent_transitions
                    .iter()
                    .rev()
                    .find(|t| t.to() == Stage::Mql)
                    .map(|t| MqlMark {
                        at: t.at(),
                        grade: rules.grade_for(fit),
                    })
            };
            let mut lead = Lead::new(key, engagement.at);
            lead.set_created(created);
            lead.last_seen = last_seen;
            lead.stage = stage;
            lead.engagement = engagement;
            lead.fit = fit;
            lead.grade = rules.grade_for(fit);
            lead.set_profile_sorted(pairs.iter().copied());
            lead.transitions = transitions;
            lead.set_contributions(&contributions);
            // A lead has at most one cooldown per rule and one clock and count per policy
            // (65535 at most: config): more can only be a damaged file, and `Lists` counts
            // in 16 bits.
            let longest = [
                cooldowns.len(),
                clocks.len(),
                sla_started.len(),
                recent_transitions.len(),
            ];
            if longest.iter().any(|&n| n > usize::from(u16::MAX)) {
                return Err(SnapshotError::Corrupt(format!(
                    "lead {key} has more list items than rules or policies"
                )));
            }
            let mut extra = Extra::default();
            extra.set_rare(Rare {
                reborn,
                reset_at,
                ..Rare::default()
            });
            extra.set_lists(Lists::from_parts(
                &cooldowns,
                &clocks,
                &sla_started,
                &recent_transitions,
            ));
            extra.keyed_push(
                keyed_cooldowns
                    .iter()
                    .map(|&(ri, value, t)| (ri, value.as_bytes(), t)),
            );
            lead.set_extra(extra);
            lead.set_mql(mql);
            // After the extra state: a wide window lives there.
            lead.set_recent_ids(&recent, rules.dedupe_ids);
            if !state.insert_restored(lead) {
                return Err(SnapshotError::Corrupt("a lead appears twice".into()));
            }
        }

        for _ in 0..r.count(17, "timers")? {
            let lead = r.str("timer lead")?;
            let policy = r.str("timer policy")?;
            let kind = match r.u8("timer kind")? {
                0 => TimerKind::Warning,
                1 => TimerKind::Breach,
                k => return Err(SnapshotError::Corrupt(format!("unknown timer kind {k}"))),
            };
            let due = r.i64("timer due")?;
            let (Some(li), Some(pi)) = (state.find(lead), policy_index(policy)) else {
                continue; // its lead or policy is gone: nothing can fire for it
            };
            // Only a timer of one of its lead's clocks: any other could fire nothing, and
            // would outlive its lead (an eviction removes the timers of the lead's clocks) to
            // name whichever lead takes the position next.
            let of_a_clock = state.leads[li]
                .clocks()
                .iter()
                .any(|c| c.policy as usize == pi && timer_slots(c).any(|slot| slot == (due, kind)));
            if !of_a_clock {
                continue;
            }
            state.timers.insert(Timer {
                due,
                slot: li as u32,
                policy: pi as u16,
                kind,
            });
        }
        if !r.buf.is_empty() {
            return Err(SnapshotError::Corrupt(format!(
                "{} unexpected bytes after the timers",
                r.buf.len()
            )));
        }
        state.clock = clock;
        state.stats = stats;
        state.last_sweep = last_sweep;
        state.evicted = evicted;
        state.recount();
        Ok((state, position))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::model::event::EventFields;

    const CONFIG: &str = include_str!("../../examples/config.toml");

    fn sample() -> (Arc<Ruleset>, PartitionState) {
        let rules = Settings::from_toml(CONFIG).expect("example config").rules;
        let mut st = PartitionState::new(Arc::clone(&rules));
        let mut out = Vec::new();
        let t0 = 1_795_210_200_000;
        let events = [
            (
                "1",
                "bo",
                t0,
                "crm",
                "lead_upsert",
                &[("title", "Head of Ops"), ("country", "UK")][..],
            ),
            ("2", "bo", t0 + 1, "web", "demo_request", &[]),
            ("3", "ana", t0 + 2, "email", "click", &[]),
            ("4", "ana", t0 + 3, "crm", "sales_accepted", &[]),
        ];
        for (id, lead, t, s, ty, attrs) in events {
            let ev = EventFields::from_parts(id, lead, t, s, ty, attrs)
                .validate()
                .expect("valid");
            st.apply(&ev, &mut out);
        }
        st.note_invalid("unknown_source");
        assert!(st.pending_timers() > 0, "the sample has running clocks");
        (rules, st)
    }

    #[test]
    fn round_trip_keeps_state_and_position() {
        let (rules, st) = sample();
        let bytes = st.encode_snapshot(1234);
        let (back, pos) = PartitionState::decode_snapshot(rules, &bytes).expect("decodes");
        assert_eq!(pos, 1234);
        assert_eq!(back.stats(), st.stats());
        assert_eq!(back.clock(), st.clock());
        assert_eq!(back.pending_timers(), st.pending_timers());
        assert_eq!(back.lead_count(), st.lead_count());
        assert_eq!(
            (back.stage_counts(), back.open_clocks()),
            (st.stage_counts(), st.open_clocks())
        );
        for key in ["bo", "ana"] {
            let (a, b) = (st.lead(key).expect("lead"), back.lead(key).expect("lead"));
            assert_eq!(
                (
                    a.stage,
                    a.engagement,
                    a.fit,
                    a.grade,
                    a.profile(),
                    a.extra().cooldowns()
                ),
                (
                    b.stage,
                    b.engagement,
                    b.fit,
                    b.grade,
                    b.profile(),
                    b.extra().cooldowns()
                )
            );
            assert_eq!(
                (
                    a.recent_ids(8),
                    a.created(),
                    a.transitions,
                    a.clocks(),
                    a.extra().sla_started()
                ),
                (
                    b.recent_ids(8),
                    b.created(),
                    b.transitions,
                    b.clocks(),
                    b.extra().sla_started()
                )
            );
        }
    }

    #[test]
    fn every_single_byte_corruption_and_truncation_is_detected() {
        let (rules, st) = sample();
        let bytes = st.encode_snapshot(7);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x5a;
            assert!(
                PartitionState::decode_snapshot(Arc::clone(&rules), &bad).is_err(),
                "byte {i}"
            );
        }
        for cut in 0..bytes.len() {
            assert!(
                PartitionState::decode_snapshot(Arc::clone(&rules), &bytes[..cut]).is_err(),
                "cut {cut}"
            );
        }
    }

    /// Keyed cooldowns with short and long values (`KEYED_INLINE_MAX`: the long one is kept
    /// out of line) come back from a snapshot as they were, in their order.
    #[test]
    fn keyed_cooldowns_short_and_long_round_trip() {
        let rules = Settings::from_toml(CONFIG).expect("example config").rules;
        let mut st = PartitionState::new(Arc::clone(&rules));
        let mut out = Vec::new();
        let long = "ü".repeat(100);
        for (i, asset) in ["", "guide", long.as_str(), "eight-b!"]
            .into_iter()
            .enumerate()
        {
            let ev = EventFields::from_parts(
                &format!("e{i}"),
                "ana",
                1_795_210_200_000 + i as i64,
                "web",
                "content_download",
                &[("asset", asset)],
            )
            .validate()
            .expect("valid");
            st.apply(&ev, &mut out);
        }
        let keyed = |st: &PartitionState| -> Vec<(u16, Vec<u8>, i64)> {
            let lead = st.lead("ana").expect("ana");
            lead.extra()
                .keyed_cooldowns()
                .map(|k| (k.rule, k.value.to_vec(), k.t_last))
                .collect()
        };
        let before = keyed(&st);
        assert_eq!(before.len(), 4);
        assert_eq!(before[2].1, long.as_bytes());
        let bytes = st.encode_snapshot(3);
        let back = PartitionState::decode_snapshot(rules, &bytes)
            .expect("decodes")
            .0;
        assert_eq!(keyed(&back), before);
        let ana = back.lead("ana").expect("ana");
        assert_eq!(
            ana.extra().rare().long_values.len(),
            1,
            "the long value out of line"
        );
        assert_eq!(back.encode_snapshot(3), bytes);
    }

    /// A lead has at most one cooldown per rule (65535 rules at most), so a list longer than
    /// that is a damaged file: an error, not a panic.
    #[test]
    fn a_list_longer_than_any_config_allows_is_corrupt() {
        let rules = Settings::from_toml(CONFIG).expect("example config").rules;
        let mut st = PartitionState::new(Arc::clone(&rules));
        let ev = EventFields::from_parts(
            "p",
            "bo",
            1_795_210_200_000,
            "web",
            "page_view",
            &[("url", "https://x.io/pricing")],
        )
        .validate()
        .expect("valid");
        st.apply(&ev, &mut Vec::new());
        assert_eq!(
            st.lead("bo").expect("bo").extra().cooldowns().len(),
            1,
            "the sample"
        );
        let bytes = st.encode_snapshot(3);
        // The cooldown list as written: count 1, the rule's name, its time.
        let name = b"pricing_page";
        let mut entry = (name.len() as u32).to_le_bytes().to_vec();
        entry.extend_from_slice(name);
        entry.extend_from_slice(&1_795_210_200_000i64.to_le_bytes());
        let mut list = 1u32.to_le_bytes().to_vec();
        list.extend_from_slice(&entry);
        let at = bytes
            .windows(list.len())
            .position(|w| w == list)
            .expect("the cooldown list");
        let n = usize::from(u16::MAX) + 1;
        let mut damaged = bytes[..at].to_vec();
        damaged.extend_from_slice(&(n as u32).to_le_bytes());
        for _ in 0..n {
            damaged.extend_from_slice(&entry);
        }
        damaged.extend_from_slice(&bytes[at + list.len()..bytes.len() - 4]);
        let crc = crc32fast::hash(&damaged).to_le_bytes();
        damaged.extend_from_slice(&crc);
        let err = PartitionState::decode_snapshot(rules, &damaged)
            .map(|_| ())
            .expect_err("too many cooldowns");
        assert!(matches!(err, SnapshotError::Corrupt(_)), "{err}");
        assert!(
            err.to_string()
                .contains("more list items than rules or policies"),
            "{err}"
        );
    }

    #[test]
    fn a_version_5_file_is_still_read() {
        // v6 changed what the duplicate window's hashes mean, not the layout: a v5 file reads
        // as before. (Its 64-bit hashes are cut to 48 bits by `Lead::set_recent_ids`, which
        // `the_duplicate_window_keeps_48_bits_and_takes_older_snapshots_64_bit_hashes` tests.)
        let (rules, st) = sample();
        let mut bytes = st.encode_snapshot(7);
        assert_eq!(u16::from_le_bytes([bytes[4], bytes[5]]), VERSION);
        bytes[4] = 5;
        bytes[5] = 0;
        let n = bytes.len() - 4;
        let crc = crc32fast::hash(&bytes[..n]).to_le_bytes();
        bytes[n..].copy_from_slice(&crc);
        let back = PartitionState::decode_snapshot(rules, &bytes).expect("a v5 file reads");
        assert_eq!(back.0.lead_count(), st.lead_count());
        assert_eq!(back.0.encode_snapshot(7), st.encode_snapshot(7));
    }

    #[test]
    fn other_versions_are_refused_by_name() {
        let (rules, st) = sample();
        let mut bytes = st.encode_snapshot(7);
        bytes[4] = 9;
        bytes[5] = 0;
        // A whole file of another version: its checksum is right.
        let n = bytes.len() - 4;
        let crc = crc32fast::hash(&bytes[..n]).to_le_bytes();
        bytes[n..].copy_from_slice(&crc);
        let err = PartitionState::decode_snapshot(Arc::clone(&rules), &bytes)
            .map(|_| ())
            .expect_err("version");
        assert_eq!(err, SnapshotError::UnsupportedVersion(9));
        assert!(err.to_string().contains("version 9 is newer"), "{err}");
        assert_eq!(err.code(), "unsupported_version");
        // A damaged version field is a damaged file, not a snapshot of version 2390.
        bytes[4] = 0x56;
        bytes[5] = 0x09;
        let err = PartitionState::decode_snapshot(rules, &bytes)
            .map(|_| ())
            .expect_err("damaged");
        assert_eq!(err.code(), "corrupt", "{err}");
    }

    #[test]
    fn a_removed_policy_drops_its_clocks_and_timers() {
        let (_, st) = sample();
        let bytes = st.encode_snapshot(7);
        let start = CONFIG.find("[[sla]]").expect("sla section");
        let end = CONFIG
            .find("[[sla]]\nname = \"sal_first_touch\"")
            .expect("second policy");
        let fewer = format!("{}{}", &CONFIG[..start], &CONFIG[end..]);
        let rules = Settings::from_toml(&fewer)
            .expect("config without mql_follow_up")
            .rules;
        let (back, _) = PartitionState::decode_snapshot(rules, &bytes).expect("decodes");
        assert!(
            back.lead("bo").expect("bo").clocks().is_empty(),
            "mql_follow_up is gone"
        );
        assert_eq!(
            back.lead("ana").expect("ana").clocks().len(),
            1,
            "sal_first_touch stays"
        );
        assert_eq!(back.pending_timers(), 2);
    }

    /// A timer that belongs to none of its lead's clocks (a damaged or hand-made file) is
    /// dropped on restore: it could fire nothing, and kept by position it would outlive its
    /// lead's eviction and name the lead moved into its place.
    #[test]
    fn a_timer_of_no_clock_is_dropped_on_restore() {
        let (rules, mut st) = sample();
        let pending = st.pending_timers();
        let i = st.find("bo").expect("bo");
        let clocks: Vec<Clock> = st.leads[i].extra_mut().lists_mut().take();
        assert_eq!(clocks.len(), 1, "bo's MQL clock");
        let bytes = st.encode_snapshot(7);
        let (back, _) =
            PartitionState::decode_snapshot(Arc::clone(&rules), &bytes).expect("decodes");
        assert_eq!(
            back.pending_timers(),
            pending - 2,
            "bo's warning and breach are gone"
        );
        // With bo's clock back, the same timers restore.
        st.leads[i].extra_mut().lists_mut().push(clocks[0]);
        let (back, _) =
            PartitionState::decode_snapshot(rules, &st.encode_snapshot(7)).expect("decodes");
        assert_eq!(back.pending_timers(), pending);
    }
}
