//! The input and state bounds (`[limits]`, `input.lead_key`): plain settings that events,
//! rules and the engine read. A leaf of `model`, so that `event` (which checks them) and
//! `rules` (which holds them in a ruleset) need not import each other.

/// How lead keys are read (`input.lead_key`, SPEC §2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LeadKeyMode {
    /// As sent (v1).
    #[default]
    Exact,
    /// Surrounding whitespace trimmed, then lowercased (Unicode default case mapping).
    Lowercase,
}

/// Resource bounds (the `[limits]` config section). The input bounds make oversized events
/// invalid; the state bounds evict leads or refuse new SLA clocks, deterministically in event
/// time, so replay and Kafka mode still agree.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Largest accepted input message (ingest; a replay line), in bytes.
    pub max_message_bytes: usize,
    /// Most attributes per event.
    pub max_attributes: usize,
    /// Longest attribute name or value, in bytes.
    pub max_attribute_bytes: usize,
    /// Most leads held per partition; beyond it the least recently active are evicted.
    pub max_leads: Option<u64>,
    /// Leads with no event for this long (event time) and no running SLA clock are evicted.
    pub evict_inactive_after_ms: Option<i64>,
    /// Leads in a terminal stage (won, lost, disqualified) with no event for this long are
    /// evicted.
    pub evict_terminal_after_ms: Option<i64>,
    /// Most pending SLA timers (warnings and breaches) per partition; beyond it no new clock
    /// starts.
    pub max_pending_timers: u64,
    /// `limits.max_future` (ms; 0: off): events further ahead of ingest's clock are invalid
    /// (SPEC §2, v2).
    pub max_future_ms: i64,
    /// `input.lead_key` (SPEC §2, v2).
    pub lead_key: LeadKeyMode,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            // librdkafka's default message.max.bytes: what the producer can write back out.
            max_message_bytes: 1_000_000,
            max_attributes: 256,
            max_attribute_bytes: 64 * 1024,
            max_leads: None,
            evict_inactive_after_ms: None,
            evict_terminal_after_ms: None,
            max_pending_timers: 10_000_000,
            max_future_ms: 86_400_000,
            lead_key: LeadKeyMode::Exact,
        }
    }
}

impl Limits {
    /// Whether any eviction rule is on.
    pub fn evicts(&self) -> bool {
        self.max_leads.is_some()
            || self.evict_inactive_after_ms.is_some()
            || self.evict_terminal_after_ms.is_some()
    }
}
