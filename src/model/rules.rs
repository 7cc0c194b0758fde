//! The compiled definition the engine runs: scoring, funnel and SLA policies. Built and
//! validated by `config`; pure data here.

// hashbrown's map for its faster default hasher (foldhash): the lookup runs once per event,
// on config-given type names, so SipHash's resistance to chosen keys buys nothing here.
use hashbrown::HashMap;
use std::sync::Arc;

use super::calendar::Calendar;
use super::event::{Event, Source};
use super::funnel::Stage;
pub use super::limits::Limits;
use super::matcher::Matcher;
use super::score::Decay;

#[derive(Clone, Debug)]
pub struct EngagementRule {
    pub name: String,
    pub source: Source,
    /// `None` is `*` (any type).
    pub event_type: Option<String>,
    pub conditions: Vec<(String, Matcher)>,
    pub points: f64,
    pub cooldown_ms: Option<i64>,
    /// With a cooldown: keep it per value of this event attribute (SPEC §4, v2).
    pub cooldown_key: Option<String>,
}

/// At most this many `cooldown_key` values are remembered per rule and lead (SPEC §4).
pub const MAX_COOLDOWN_KEYS: usize = 64;

impl EngagementRule {
    /// Whether the rule's `where` conditions hold for the event (source/type are pre-indexed).
    pub fn conditions_hold(&self, ev: &Event) -> bool {
        self.conditions
            .iter()
            .all(|(attr, m)| ev.attribute(attr).is_some_and(|v| m.is_match(v)))
    }
}

#[derive(Clone, Debug)]
pub enum FitTest {
    Match(Matcher),
    /// The attribute parsed as a finite decimal number must lie in `[gte, lt)`.
    Range {
        gte: Option<f64>,
        lt: Option<f64>,
    },
}

#[derive(Clone, Debug)]
pub struct FitRule {
    pub name: String,
    pub attribute: String,
    pub test: FitTest,
    pub points: f64,
}

impl FitRule {
    pub fn matches(&self, value: Option<&str>) -> bool {
        let Some(value) = value else { return false };
        match &self.test {
            FitTest::Match(m) => m.is_match(value),
            FitTest::Range { gte, lt } => match parse_decimal(value) {
                Some(x) => gte.is_none_or(|g| x >= g) && lt.is_none_or(|l| x < l),
                None => false,
            },
        }
    }
}

/// `250`, `-3.5`, `1e3`; not `inf`, `NaN` or hex. Surrounding spaces are tolerated.
pub fn parse_decimal(s: &str) -> Option<f64> {
    // Most values a range reads are head counts and revenue: plain digits. Up to 15 of them
    // are an integer below 2^53, which an f64 holds exactly, so `parse::<f64>`'s correctly
    // rounded answer is that integer; summed here at about a tenth of its cost (the fit
    // rules run on every profile change). `tests::plain_integers_parse_as_floats_do`.
    let b = s.as_bytes();
    if (1..=15).contains(&b.len()) && b.iter().all(u8::is_ascii_digit) {
        let n = b.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        return Some(n as f64);
    }
    parse_decimal_general(s)
}

/// `parse_decimal` for any text: the standard library's parser, after a plausibility check.
fn parse_decimal_general(s: &str) -> Option<f64> {
    let s = s.trim();
    let plausible = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    if !plausible {
        return None;
    }
    s.parse::<f64>().ok().filter(|x| x.is_finite())
}

#[derive(Clone, Debug)]
pub struct Grade {
    pub grade: String,
    pub min: f64,
}

/// `(source, type)` pair used by fast tracks and SLA `until` lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventPattern {
    pub source: Source,
    pub event_type: String,
}

impl EventPattern {
    pub fn matches(&self, ev: &Event) -> bool {
        self.source == ev.source && self.event_type == ev.event_type
    }
}

#[derive(Clone, Debug)]
pub struct Funnel {
    pub mql_threshold: f64,
    pub mql_min_fit: f64,
    pub recycle_reset: bool,
    pub fast_track: Vec<EventPattern>,
}

#[derive(Clone, Debug)]
pub enum Until {
    StageExit,
    Events(Vec<EventPattern>),
}

#[derive(Clone, Debug)]
pub struct SlaPolicy {
    pub name: String,
    pub stage: Stage,
    pub within_ms: i64,
    pub warn_before_ms: Option<i64>,
    pub calendar: Option<Arc<Calendar>>,
    pub until: Until,
}

impl SlaPolicy {
    /// Adds `ms` of (business, where a calendar is set) time to `start`.
    pub fn offset(&self, start: i64, ms: i64) -> i64 {
        match &self.calendar {
            Some(cal) => cal
                .add_business(start, ms)
                // Only reachable with times outside chrono's range; plain time keeps it total.
                .unwrap_or_else(|| start.saturating_add(ms)),
            None => start.saturating_add(ms),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Ruleset {
    pub engagement: Vec<EngagementRule>,
    pub decay: Decay,
    pub fit: Vec<FitRule>,
    /// Indices into `fit` sorted by attribute name (as bytes; config order among rules on one
    /// attribute): a lead's profile is sorted by name too, so one walk of it finds every
    /// value the fit rules read (`engine::fit`).
    fit_by_attribute: Vec<usize>,
    /// Highest minimum first.
    pub grades: Vec<Grade>,
    pub funnel: Funnel,
    pub sla: Vec<SlaPolicy>,
    /// `sla_rank[i]`: position of policy i when policies are sorted by name (timer tie order).
    pub sla_rank: Vec<u16>,
    /// Policies by the stage they start on.
    sla_by_stage: [Vec<u16>; 8],
    /// Per source: type -> its list in `candidates` (rule indices ascending, wildcards merged
    /// in).
    by_type: [HashMap<String, u32>; 3],
    /// The candidate lists: first, per source, the rules with type `*` (for types no rule
    /// names), then one list per (source, type) some rule names. An event's list id
    /// ([`Ruleset::candidate_list_id`]) is worked out with the rest of its preparation, so the
    /// fold reads the list without hashing the type again.
    candidates: Vec<Vec<u16>>,
    pub limits: Limits,
    /// `dedupe.recent_ids`: how many of a lead's last event ids count as duplicates (SPEC §2).
    pub dedupe_ids: usize,
    /// `clock.allowed_lateness` (ms): warnings and breaches fire only once the stream clock
    /// is this far past them (SPEC §6).
    pub allowed_lateness_ms: i64,
}

/// The default of `dedupe.recent_ids` (SPEC §2; v1's fixed window).
pub const DEFAULT_DEDUPE_IDS: usize = 8;
/// The largest `dedupe.recent_ids` (SPEC §2).
pub const MAX_DEDUPE_IDS: usize = 1024;

/// The most grades a config may list: a lead keeps a grade as one byte (its index, and
/// `index + 1` for the grade at its latest MQL, up to 255).
pub const MAX_GRADES: usize = 255;

/// Fallback grade when no configured grade's minimum is reached.
pub const DEFAULT_GRADE: &str = "D";

impl Ruleset {
    /// Builds the lookup indexes. Callers (config) have validated names and sizes.
    pub fn new(
        engagement: Vec<EngagementRule>,
        decay: Decay,
        fit: Vec<FitRule>,
        grades: Vec<Grade>,
        funnel: Funnel,
        sla: Vec<SlaPolicy>,
    ) -> Ruleset {
        let mut by_type: [HashMap<String, Vec<u16>>; 3] = Default::default();
        let mut wildcard: [Vec<u16>; 3] = Default::default();
        for (i, r) in engagement.iter().enumerate() {
            if r.event_type.is_none() {
                wildcard[r.source.index()].push(i as u16);
            }
        }
        for (i, r) in engagement.iter().enumerate() {
            if let Some(t) = &r.event_type {
                let src = r.source.index();
                by_type[src]
                    .entry(t.clone())
                    .or_insert_with(|| wildcard[src].clone())
                    .push(i as u16);
            }
        }
        for list in by_type.iter_mut().flat_map(|m| m.values_mut()) {
            list.sort_unstable();
            list.dedup();
        }
        let mut candidates: Vec<Vec<u16>> = wildcard.into_iter().collect();
        let by_type = by_type.map(|lists| {
            lists
                .into_iter()
                .map(|(event_type, list)| {
                    candidates.push(list);
                    (event_type, (candidates.len() - 1) as u32)
                })
                .collect::<HashMap<String, u32>>()
        });
        let mut order: Vec<usize> = (0..sla.len()).collect();
        order.sort_by(|&a, &b| sla[a].name.cmp(&sla[b].name));
        let mut sla_rank = vec![0u16; sla.len()];
        for (rank, &i) in order.iter().enumerate() {
            sla_rank[i] = rank as u16;
        }
        let mut sla_by_stage: [Vec<u16>; 8] = Default::default();
        for (i, p) in sla.iter().enumerate() {
            sla_by_stage[p.stage.index()].push(i as u16);
        }
        let mut fit_by_attribute: Vec<usize> = (0..fit.len()).collect();
        fit_by_attribute.sort_by(|&a, &b| fit[a].attribute.cmp(&fit[b].attribute));
        Ruleset {
            engagement,
            decay,
            fit,
            fit_by_attribute,
            grades,
            funnel,
            sla,
            sla_rank,
            sla_by_stage,
            by_type,
            candidates,
            limits: Limits::default(),
            dedupe_ids: DEFAULT_DEDUPE_IDS,
            allowed_lateness_ms: 0,
        }
    }

    /// Indices of the engagement rules whose source and type fit, in config order.
    pub fn candidate_rules(&self, source: Source, event_type: &str) -> &[u16] {
        &self.candidates[self.candidate_list_id(source, event_type) as usize]
    }

    /// The id of the list [`Ruleset::candidate_rules`] gives for `source` and `event_type`,
    /// for [`Ruleset::candidate_list`].
    pub fn candidate_list_id(&self, source: Source, event_type: &str) -> u32 {
        let src = source.index();
        match self.by_type[src].get(event_type) {
            Some(&id) => id,
            None => src as u32,
        }
    }

    /// The candidate list with id `id` (from this ruleset's [`Ruleset::candidate_list_id`]);
    /// `None` for an id past its lists.
    pub fn candidate_list(&self, id: u32) -> Option<&[u16]> {
        self.candidates.get(id as usize).map(Vec::as_slice)
    }

    /// Indices into `fit`, sorted by the attribute each rule reads (byte order; stable).
    pub fn fit_by_attribute(&self) -> &[usize] {
        &self.fit_by_attribute
    }

    pub fn policies_for(&self, stage: Stage) -> &[u16] {
        &self.sla_by_stage[stage.index()]
    }

    /// Index into `grades`, or `None` for the default grade.
    pub fn grade_for(&self, fit: f64) -> Option<u8> {
        self.grades
            .iter()
            .position(|g| fit >= g.min)
            .map(|i| i as u8)
    }

    pub fn grade_name(&self, grade: Option<u8>) -> &str {
        grade
            .and_then(|i| self.grades.get(i as usize))
            .map_or(DEFAULT_GRADE, |g| g.grade.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The candidate rules of a (source, type) are the engagement rules of that source
        /// whose type is that one or `*`, in config order, each once; the list found by id
        /// (what a prepared event carries) is the same list; an id never given finds none.
        #[test]
        fn candidate_rules_are_the_matching_rules_in_config_order(
            rules in prop::collection::vec((0..3usize, prop::option::of(0..4usize)), 0..24),
        ) {
            const TYPES: [&str; 5] = ["page_view", "open", "form_submit", "x", "other"];
            let engagement: Vec<EngagementRule> = rules
                .iter()
                .enumerate()
                .map(|(i, &(src, ty))| EngagementRule {
                    name: format!("r{i}"),
                    source: Source::ALL[src],
                    event_type: ty.map(|t| TYPES[t].to_string()),
                    conditions: Vec::new(),
                    points: 1.0,
                    cooldown_ms: None,
                    cooldown_key: None,
                })
                .collect();
            let decay = Decay { half_life_ms: None, min: None, max: None };
            let funnel = Funnel {
                mql_threshold: 1.0,
                mql_min_fit: 0.0,
                recycle_reset: false,
                fast_track: Vec::new(),
            };
            let set = Ruleset::new(engagement, decay, Vec::new(), Vec::new(), funnel, Vec::new());
            for source in Source::ALL {
                // "other" is named by no rule: the wildcards' list.
                for ty in TYPES {
                    let want: Vec<u16> = rules
                        .iter()
                        .enumerate()
                        .filter(|&(_, &(src, t))| {
                            Source::ALL[src] == source && t.is_none_or(|t| TYPES[t] == ty)
                        })
                        .map(|(i, _)| i as u16)
                        .collect();
                    prop_assert_eq!(set.candidate_rules(source, ty), want.as_slice());
                    let id = set.candidate_list_id(source, ty);
                    prop_assert_eq!(set.candidate_list(id), Some(want.as_slice()));
                }
            }
            // Ids are 0..lists: the three sources' wildcard lists, then one per named type.
            let named: std::collections::BTreeSet<(usize, usize)> =
                rules.iter().filter_map(|&(src, t)| Some((src, t?))).collect();
            let lists = (3 + named.len()) as u32;
            prop_assert!(set.candidate_list(lists - 1).is_some());
            prop_assert_eq!(set.candidate_list(lists), None);
            prop_assert_eq!(set.candidate_list(u32::MAX), None);
        }
    }

    proptest! {
        /// The digits-only path gives what the general parser gives, to the bit, for every
        /// length up to its limit and past it (those take the general path).
        #[test]
        fn plain_integers_parse_as_floats_do(digits in "[0-9]{1,18}") {
            let want = parse_decimal_general(&digits);
            prop_assert_eq!(parse_decimal(&digits).map(f64::to_bits), want.map(f64::to_bits));
        }
    }

    #[test]
    fn decimals_parse_strictly() {
        // Past the digits-only path: padded, longer, other scripts' digits.
        assert_eq!(parse_decimal(" 250"), Some(250.0));
        assert_eq!(
            parse_decimal("12345678901234567890"),
            Some(1.2345678901234567e19)
        );
        assert_eq!(parse_decimal("٣"), None);
        assert_eq!(parse_decimal("３"), None);
        assert_eq!(
            parse_decimal("999999999999999"),
            Some(999_999_999_999_999.0)
        );
        assert_eq!(parse_decimal("000"), Some(0.0));
        assert_eq!(parse_decimal("250"), Some(250.0));
        assert_eq!(parse_decimal("1e3"), Some(1000.0));
        assert_eq!(parse_decimal("-3.5"), Some(-3.5));
        assert_eq!(parse_decimal(" 42 "), Some(42.0));
        for bad in ["", "inf", "NaN", "infinity", "0x10", "12 people", "1e999"] {
            assert_eq!(parse_decimal(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn range_bounds_are_half_open() {
        let r = FitRule {
            name: "mid".into(),
            attribute: "employees".into(),
            test: FitTest::Range {
                gte: Some(200.0),
                lt: Some(2000.0),
            },
            points: 1.0,
        };
        assert!(!r.matches(Some("199")));
        assert!(r.matches(Some("200")));
        assert!(r.matches(Some("1999.5")));
        assert!(!r.matches(Some("2000")));
        assert!(!r.matches(Some("lots")));
        assert!(!r.matches(None));
    }
}
