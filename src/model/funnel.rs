//! Funnel stages and the CRM transition table (SPEC §5).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::event::CrmType;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    New,
    Mql,
    Sal,
    Sql,
    Won,
    Lost,
    Recycled,
    Disqualified,
}

impl Stage {
    pub const ALL: [Stage; 8] = [
        Stage::New,
        Stage::Mql,
        Stage::Sal,
        Stage::Sql,
        Stage::Won,
        Stage::Lost,
        Stage::Recycled,
        Stage::Disqualified,
    ];

    pub fn parse(s: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::New => "new",
            Stage::Mql => "mql",
            Stage::Sal => "sal",
            Stage::Sql => "sql",
            Stage::Won => "won",
            Stage::Lost => "lost",
            Stage::Recycled => "recycled",
            Stage::Disqualified => "disqualified",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// Stages from which engagement or a fast track can make a lead an MQL.
    pub fn can_become_mql(self) -> bool {
        matches!(self, Stage::New | Stage::Recycled)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The seven CRM stage events: target stage and the stages it is allowed from.
pub fn crm_move(crm: CrmType) -> Option<(Stage, &'static [Stage])> {
    use Stage::*;
    match crm {
        CrmType::SalesAccepted => Some((Sal, &[New, Recycled, Mql])),
        CrmType::SalesRejected => Some((Recycled, &[Mql])),
        CrmType::Recycled => Some((Recycled, &[Mql, Sal, Lost, Disqualified])),
        CrmType::OpportunityCreated => Some((Sql, &[New, Recycled, Mql, Sal])),
        CrmType::OpportunityWon => Some((Won, &[Sql])),
        CrmType::OpportunityLost => Some((Lost, &[Sql])),
        CrmType::Disqualified => Some((Disqualified, &[New, Recycled, Mql, Sal, Sql, Lost])),
        CrmType::LeadUpsert | CrmType::OwnerAssigned | CrmType::SalesActivity => None,
    }
}

/// What a CRM stage event does to a lead in `from`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrmOutcome {
    Move(Stage),
    /// Already in the target stage: a silent no-op.
    AlreadyThere,
    /// Not allowed from this stage: a no-op counted as a rejected transition.
    Rejected,
}

pub fn crm_outcome(from: Stage, target: Stage, allowed: &[Stage]) -> CrmOutcome {
    if from == target {
        CrmOutcome::AlreadyThere
    } else if allowed.contains(&from) {
        CrmOutcome::Move(target)
    } else {
        CrmOutcome::Rejected
    }
}
