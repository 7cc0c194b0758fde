//! "Why is this lead an MQL?": a lead's score broken down by rule, its fit rules, recent stage
//! changes and running SLA clocks, at a given time. Pure: the caller chooses the time.

use std::collections::BTreeMap;

use serde::Serialize;

use super::PartitionState;
use crate::model::funnel::Stage;
use crate::model::score::round4;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    pub lead_key: String,
    pub stage: Stage,
    /// The time the scores are evaluated at (ms).
    pub as_of: i64,
    pub engagement: f64,
    pub fit: f64,
    pub grade: String,
    pub owner_id: Option<String>,
    /// When the lead last became an MQL (ms), and its grade then; `null` if it never was.
    pub mql_at: Option<i64>,
    pub grade_at_mql: Option<String>,
    /// Each engagement rule's points decayed to `as_of`, in config order. Their sum equals
    /// `engagement` unless the clamp (`scoring.min`/`max`) cut the score.
    pub engagement_rules: Vec<RuleContribution>,
    pub fit_rules: Vec<FitMatch>,
    pub profile: BTreeMap<String, String>,
    pub recent_transitions: Vec<TransitionView>,
    pub open_sla_clocks: Vec<ClockView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleContribution {
    pub rule: String,
    pub points: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FitMatch {
    pub rule: String,
    pub attribute: String,
    pub value: String,
    pub points: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransitionView {
    pub from: Stage,
    pub to: Stage,
    pub reason: &'static str,
    pub at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClockView {
    pub policy: String,
    pub stage: Stage,
    pub started_at: i64,
    pub warning_at: Option<i64>,
    pub deadline: i64,
}

impl PartitionState {
    /// Explains `key` at `as_of` (default: the later of the stream clock and the lead's last
    /// engagement time, so the numbers match the records the lead produced).
    pub fn explain(&self, key: &str, as_of: Option<i64>) -> Option<Explanation> {
        let lead = self.lead(key)?;
        let rules = &*self.rules;
        let as_of = as_of.unwrap_or_else(|| {
            self.clock
                .unwrap_or(lead.engagement.at)
                .max(lead.engagement.at)
        });
        let mut contributions: Vec<_> = lead.contributions().collect();
        contributions.sort_by_key(|(ri, _)| *ri);
        Some(Explanation {
            lead_key: lead.key().to_string(),
            stage: lead.stage,
            as_of,
            engagement: round4(lead.engagement.at_time(as_of, &rules.decay)),
            fit: round4(lead.fit),
            grade: rules.grade_name(lead.grade).to_string(),
            owner_id: lead.owner_id().map(str::to_string),
            mql_at: lead.mql().map(|m| m.at),
            grade_at_mql: lead
                .mql()
                .map(|m| self.rules.grade_name(m.grade).to_string()),
            engagement_rules: contributions
                .into_iter()
                .map(|(ri, c)| RuleContribution {
                    rule: rules.engagement[ri as usize].name.clone(),
                    points: round4(c.at_time(as_of, &rules.decay)),
                })
                .collect(),
            fit_rules: rules
                .fit
                .iter()
                .filter_map(|r| {
                    let value = lead.attribute(&r.attribute)?;
                    r.matches(Some(value)).then(|| FitMatch {
                        rule: r.name.clone(),
                        attribute: r.attribute.clone(),
                        value: value.to_string(),
                        points: r.points,
                    })
                })
                .collect(),
            profile: lead
                .profile()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            recent_transitions: lead
                .extra()
                .recent_transitions()
                .iter()
                .map(|t| TransitionView {
                    from: t.from(),
                    to: t.to(),
                    reason: t.reason(),
                    at: t.at(),
                })
                .collect(),
            open_sla_clocks: lead
                .clocks()
                .iter()
                .map(|c| {
                    let p = &rules.sla[c.policy as usize];
                    ClockView {
                        policy: p.name.clone(),
                        stage: p.stage,
                        started_at: c.start,
                        warning_at: c.warn_at(),
                        deadline: c.deadline,
                    }
                })
                .collect(),
        })
    }
}
