//! The live conversion metrics' decisions (pure): which path a lead took, and what a win's
//! amount adds. The state stage counts them as its records go out (docs/analytics.md, "Live
//! metrics"); the report applies the same rules to a history.

use crate::engine::PartitionState;
use crate::model::event::{CrmType, Event};
use crate::model::funnel::Stage;
use crate::model::records::Transition;

/// `mql` when the lead has been an MQL (the engine remembers its latest MQL), else `direct`
/// (sales-sourced). Bounded: two values.
pub fn path(state: &PartitionState, lead_key: &str) -> &'static str {
    match state.lead(lead_key).and_then(|l| l.mql()) {
        Some(_) => "mql",
        None => "direct",
    }
}

/// The stages whose arrivals are counted by path.
pub fn counted(stage: Stage) -> bool {
    matches!(stage, Stage::Sal | Stage::Sql | Stage::Won | Stage::Lost)
}

/// What a win adds to the revenue counter.
#[derive(Debug, Clone, PartialEq)]
pub enum WonAmount {
    Amount(f64),
    Missing,
    Invalid,
}

/// The amount of the `opportunity_won` event `ev` when it triggered `t` (a transition to won);
/// `None` for any other transition. Amounts parse as in the report (digits, optionally a point
/// and up to 6 decimals).
pub fn won_amount(ev: &Event, t: &Transition) -> Option<WonAmount> {
    if t.to_stage != Stage::Won
        || ev.crm != Some(CrmType::OpportunityWon)
        || t.trigger_event_id != ev.event_id
    {
        return None;
    }
    Some(match ev.attribute("amount") {
        None => WonAmount::Missing,
        Some(text) => match super::collect::parse_amount(text) {
            Some(micros) => WonAmount::Amount(micros as f64 / 1e6),
            None => WonAmount::Invalid,
        },
    })
}
