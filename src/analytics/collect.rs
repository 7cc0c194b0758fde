//! What one definition's run leaves behind for the report: per lead, its stage changes and
//! SLA clocks, taken from the engine's output records as they come (pure; no I/O).

use hashbrown::HashMap;

use crate::model::event::{CrmType, Event, Source};
use crate::model::funnel::Stage;
use crate::model::records::{Output, SlaKind};
use crate::model::rules::Ruleset;

/// A stage change of one lead, as its transition record says.
#[derive(Clone, Debug)]
pub(crate) struct Change {
    pub to: Stage,
    pub at: i64,
    /// `reason == "sales_rejected"`.
    pub rejected: bool,
    /// MQL only: `reason == "fast_track"`.
    pub fast_track: bool,
    /// Interned grade (`Collector::grades`).
    pub grade: u16,
    pub engagement: f64,
    /// Interned owner (`Collector::owners`), if the record had one.
    pub owner: Option<u32>,
    /// Won only: the amount of the triggering `opportunity_won` event.
    pub amount: Option<Amount>,
}

/// The `amount` attribute of an `opportunity_won` event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Amount {
    /// In millionths of the currency unit (exact sums).
    Micros(i128),
    Missing,
    /// The text that did not parse.
    Invalid(Box<str>),
}

/// One SLA clock of one lead.
#[derive(Clone, Debug)]
pub(crate) struct ClockTrack {
    pub policy: u16,
    pub started_at: i64,
    pub owner: Option<u32>,
    /// `(response_ms, response_business_ms, on_time)`.
    pub met: Option<(i64, i64, bool)>,
    pub breached: bool,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct LeadTrack {
    pub changes: Vec<Change>,
    pub clocks: Vec<ClockTrack>,
}

/// Per-definition collection.
pub(crate) struct Collector {
    pub leads: HashMap<Box<str>, LeadTrack>,
    pub grades: Vec<String>,
    pub owners: Vec<String>,
    owner_ids: HashMap<String, u32>,
    /// Policy name -> index; policies by stage.
    policy_ids: HashMap<String, u16>,
    policies_by_stage: [Vec<u16>; 8],
    /// Won transitions whose trigger was not the event at hand (should not happen).
    pub unmatched_wins: u64,
}

impl Collector {
    pub fn new(rules: &Ruleset) -> Collector {
        let mut policies_by_stage: [Vec<u16>; 8] = Default::default();
        let mut policy_ids = HashMap::new();
        for (i, p) in rules.sla.iter().enumerate() {
            policies_by_stage[p.stage.index()].push(i as u16);
            policy_ids.insert(p.name.clone(), i as u16);
        }
        Collector {
            leads: HashMap::new(),
            grades: Vec::new(),
            owners: Vec::new(),
            owner_ids: HashMap::new(),
            policy_ids,
            policies_by_stage,
            unmatched_wins: 0,
        }
    }

    fn owner(&mut self, owner: Option<&str>) -> Option<u32> {
        let o = owner?;
        if let Some(&i) = self.owner_ids.get(o) {
            return Some(i);
        }
        let i = self.owners.len() as u32;
        self.owners.push(o.to_string());
        self.owner_ids.insert(o.to_string(), i);
        Some(i)
    }

    fn grade(&mut self, grade: &str) -> u16 {
        match self.grades.iter().position(|g| g == grade) {
            Some(i) => i as u16,
            None => {
                self.grades.push(grade.to_string());
                (self.grades.len() - 1) as u16
            }
        }
    }

    /// Takes the records the engine emitted while applying `ev` (or, with `ev = None`,
    /// advancing its clock). Records are in the engine's order, so each lead's changes are in
    /// the order they happened.
    pub fn observe(&mut self, ev: Option<&Event>, records: &[Output]) {
        for r in records {
            match r {
                Output::Transition(t) => {
                    let owner = self.owner(t.owner_id.as_deref());
                    let grade = self.grade(&t.grade);
                    let amount = (t.to_stage == Stage::Won).then(|| match ev {
                        Some(ev) if ev.event_id == t.trigger_event_id => {
                            match ev.attribute("amount") {
                                None => Amount::Missing,
                                Some(text) => parse_amount(text)
                                    .map_or_else(|| Amount::Invalid(text.into()), Amount::Micros),
                            }
                        }
                        _ => {
                            self.unmatched_wins += 1;
                            Amount::Missing
                        }
                    });
                    // Disjoint fields: the policies are read while the lead is written.
                    let started = &self.policies_by_stage[t.to_stage.index()];
                    let lead = self.leads.entry_ref(t.lead_key.as_str()).or_default();
                    lead.changes.push(Change {
                        to: t.to_stage,
                        at: t.occurred_at,
                        rejected: t.reason == "sales_rejected",
                        fast_track: t.reason == "fast_track",
                        grade,
                        engagement: t.engagement,
                        owner,
                        amount,
                    });
                    // Entering a stage starts its policies' clocks (SPEC §6).
                    for &policy in started {
                        lead.clocks.push(ClockTrack {
                            policy,
                            started_at: t.occurred_at,
                            owner,
                            met: None,
                            breached: false,
                        });
                    }
                }
                Output::Sla(s) => {
                    let Some(&policy) = self.policy_ids.get(s.policy.as_str()) else {
                        continue;
                    };
                    let owner = self.owner(s.owner_id.as_deref());
                    let lead = self.lead(&s.lead_key);
                    // The newest clock of this policy that started then (clocks on `new`
                    // start without a transition: the first record creates them).
                    let clock = match lead
                        .clocks
                        .iter()
                        .rposition(|c| c.policy == policy && c.started_at == s.started_at)
                    {
                        Some(i) => &mut lead.clocks[i],
                        None => {
                            lead.clocks.push(ClockTrack {
                                policy,
                                started_at: s.started_at,
                                owner: None,
                                met: None,
                                breached: false,
                            });
                            let last = lead.clocks.len() - 1;
                            &mut lead.clocks[last]
                        }
                    };
                    if owner.is_some() {
                        clock.owner = owner;
                    }
                    match s.kind {
                        SlaKind::Warning => {}
                        SlaKind::Breach => clock.breached = true,
                        SlaKind::Met => {
                            let resp = s.response_ms.unwrap_or(0);
                            clock.met = Some((
                                resp,
                                s.response_business_ms.unwrap_or(resp),
                                s.on_time.unwrap_or(false),
                            ));
                        }
                    }
                }
            }
        }
    }

    fn lead(&mut self, key: &str) -> &mut LeadTrack {
        self.leads.entry_ref(key).or_default()
    }
}

/// Definition-independent facts from the events themselves: each lead's source
/// (docs/analytics.md, "Source").
pub(crate) struct Facts {
    attribute: String,
    /// The latest non-empty value of the source attribute from `lead_upsert` events.
    profile: HashMap<Box<str>, Box<str>>,
    /// The `utm_source` of the lead's first web event (`None`: that event had none).
    first_web: HashMap<Box<str>, Option<Box<str>>>,
    /// The largest event time seen (the end of the history).
    pub end: Option<i64>,
    pub events: u64,
}

impl Facts {
    pub fn new(source_attribute: &str) -> Facts {
        Facts {
            attribute: source_attribute.to_string(),
            profile: HashMap::new(),
            first_web: HashMap::new(),
            end: None,
            events: 0,
        }
    }

    pub fn observe(&mut self, ev: &Event) {
        self.events += 1;
        self.end = Some(self.end.map_or(ev.occurred_at, |e| e.max(ev.occurred_at)));
        match ev.source {
            Source::Web => {
                self.first_web
                    .entry_ref(ev.lead_key.as_str())
                    .or_insert_with(|| {
                        ev.attribute("utm_source")
                            .filter(|v| !v.is_empty())
                            .map(Into::into)
                    });
            }
            Source::Crm if ev.crm == Some(CrmType::LeadUpsert) => {
                if let Some(v) = ev.attribute(&self.attribute) {
                    if v.is_empty() {
                        self.profile.remove(ev.lead_key.as_str());
                    } else {
                        self.profile.insert(ev.lead_key.as_str().into(), v.into());
                    }
                }
            }
            _ => {}
        }
    }

    /// The lead's source: its profile attribute at the end of the history, else the
    /// `utm_source` of its first web event, else `unknown`.
    pub fn source(&self, lead: &str) -> &str {
        if let Some(v) = self.profile.get(lead) {
            return v;
        }
        match self.first_web.get(lead) {
            Some(Some(utm)) => utm,
            _ => "unknown",
        }
    }
}

/// Parses a decimal amount: digits, optionally a point and 1 to 6 more digits (`12000`,
/// `12000.50`). Signs, exponents, separators and more than 6 decimals are refused, so a
/// malformed amount is reported rather than misread. Returns millionths.
pub(crate) fn parse_amount(text: &str) -> Option<i128> {
    let t = text.trim();
    let (int, frac) = match t.split_once('.') {
        Some((i, f)) => (i, f),
        None => (t, ""),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || int.len() > 24 {
        return None;
    }
    if t.contains('.') && (!digits(frac) || frac.len() > 6) {
        return None;
    }
    let whole: i128 = int.parse().ok()?;
    let mut micros: i128 = 0;
    for (i, b) in frac.bytes().enumerate() {
        micros += i128::from(b - b'0') * 10i128.pow(5 - i as u32);
    }
    whole.checked_mul(1_000_000)?.checked_add(micros)
}

#[cfg(test)]
mod tests {
    use super::parse_amount;

    #[test]
    fn amounts_parse_exactly_or_not_at_all() {
        assert_eq!(parse_amount("12000"), Some(12_000_000_000));
        assert_eq!(parse_amount("12000.5"), Some(12_000_500_000));
        assert_eq!(parse_amount(" 0.000001 "), Some(1));
        for bad in [
            "",
            "abc",
            "-5",
            "+5",
            "1e3",
            "1,000",
            "1.",
            ".5",
            "1.2345678",
            "12 000",
        ] {
            assert_eq!(parse_amount(bad), None, "{bad:?}");
        }
    }
}
