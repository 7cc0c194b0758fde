//! Pure: which targets a record goes to (routes, owner routing) and the message each gets.
//! No I/O; `deliver.rs` sends what this decides.

use chrono::{TimeZone, Utc};
use chrono_tz::Tz;

use crate::config::notify::{NotifyConfig, RecordKind, RouteTo, TargetKind};
use crate::model::records::{Output, SlaKind};

/// The record's id: its transition or SLA event id (the idempotency key).
pub fn record_id(rec: &Output) -> &str {
    match rec {
        Output::Transition(t) => &t.transition_id,
        Output::Sla(s) => &s.sla_event_id,
    }
}

fn owner(rec: &Output) -> Option<&str> {
    match rec {
        Output::Transition(t) => t.owner_id.as_deref(),
        Output::Sla(s) => s.owner_id.as_deref(),
    }
    .filter(|o| !o.is_empty())
}

/// The targets `rec` goes to, each once, in the order of the first route naming it.
pub fn targets_for(cfg: &NotifyConfig, rec: &Output) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::new();
    for route in &cfg.routes {
        let matches = match (route.record, rec) {
            (RecordKind::Transition, Output::Transition(t)) => route
                .to_stage
                .as_ref()
                .is_none_or(|s| s.contains(&t.to_stage)),
            (RecordKind::Sla, Output::Sla(s)) => {
                route.sla_kind.as_ref().is_none_or(|k| k.contains(&s.kind))
                    && route
                        .policy
                        .as_ref()
                        .is_none_or(|p| p.iter().any(|name| *name == s.policy))
            }
            _ => false,
        };
        if !matches {
            continue;
        }
        let target = match &route.to {
            RouteTo::Target(i) => Some(*i),
            RouteTo::Owner { fallback } => owner(rec)
                .and_then(|o| cfg.owners.get(o).copied())
                .or(*fallback),
        };
        if let Some(t) = target {
            if !out.contains(&t) {
                out.push(t);
            }
        }
    }
    out
}

/// The HTTP body for target `t`: a Slack message, or the record as JSON.
pub fn body(cfg: &NotifyConfig, t: usize, rec: &Output) -> Vec<u8> {
    match cfg.targets[t].kind {
        TargetKind::Slack => serde_json::json!({ "text": slack_text(cfg, rec) })
            .to_string()
            .into_bytes(),
        // Output serializes infallibly (strings, numbers, enums as strings).
        TargetKind::Webhook => serde_json::to_vec(rec).unwrap_or_default(),
    }
}

fn local_time(cfg: &NotifyConfig, owner: Option<&str>, ms: i64) -> String {
    let tz: Tz = owner
        .and_then(|o| cfg.owner_timezones.get(o).copied())
        .unwrap_or(cfg.timezone);
    match Utc.timestamp_millis_opt(ms).single() {
        Some(t) => t
            .with_timezone(&tz)
            .format("%a %-d %b %H:%M %Z")
            .to_string(),
        None => format!("{ms} ms"),
    }
}

fn link(cfg: &NotifyConfig, lead: &str) -> String {
    match &cfg.lead_link {
        Some(tpl) => {
            let url = tpl.replace("{lead_key}", &encode(lead));
            format!(" · <{url}|Open in CRM>")
        }
        None => String::new(),
    }
}

/// Percent-encodes what is not unreserved in a URL path segment (RFC 3986).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Slack mrkdwn escapes: `&`, `<`, `>`.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn fmt_duration(ms: i64) -> String {
    let mins = ms.max(0) / 60_000;
    match (mins / 60, mins % 60) {
        (0, m) => format!("{m} min"),
        (h, 0) => format!("{h} h"),
        (h, m) => format!("{h} h {m} min"),
    }
}

/// A message a person reads: who, what, why, the deadline in the owner's local time, a link.
pub fn slack_text(cfg: &NotifyConfig, rec: &Output) -> String {
    let owner_id = owner(rec);
    let owner_line = owner_id.map_or(String::from("Owner: none"), |o| {
        format!("Owner: {}", esc(o))
    });
    match rec {
        Output::Transition(t) => {
            let lead = esc(&t.lead_key);
            let headline = match t.to_stage.as_str() {
                "mql" => format!(":dart: *New MQL*: {lead}"),
                "sal" => format!(":handshake: *Accepted by sales (SAL)*: {lead}"),
                "sql" => format!(":moneybag: *Sales qualified (SQL)*: {lead}"),
                "won" => format!(":trophy: *Won*: {lead}"),
                other => format!("*{} → {other}*: {lead}", t.from_stage.as_str()),
            };
            format!(
                "{headline}\nGrade {}, engagement {:.1}, fit {:.1} · why: {}\n{owner_line}{}",
                esc(&t.grade),
                t.engagement,
                t.fit,
                esc(&t.reason),
                link(cfg, &t.lead_key)
            )
        }
        Output::Sla(s) => {
            let lead = esc(&s.lead_key);
            let policy = esc(&s.policy);
            let deadline = local_time(cfg, owner_id, s.deadline);
            let headline = match s.kind {
                SlaKind::Warning => format!(
                    ":hourglass_flowing_sand: *SLA warning* ({policy}): {lead} is waiting: respond by {deadline}"
                ),
                SlaKind::Breach => format!(
                    ":rotating_light: *SLA breached* ({policy}): {lead} was due by {deadline}"
                ),
                SlaKind::Met => format!(
                    ":white_check_mark: *SLA met* ({policy}): {lead}, responded in {}{}",
                    fmt_duration(s.response_ms.unwrap_or(0)),
                    if s.on_time == Some(false) { " (late)" } else { "" }
                ),
            };
            format!(
                "{headline}\nStage {} since {}\n{owner_line}{}",
                s.stage.as_str(),
                local_time(cfg, owner_id, s.started_at),
                link(cfg, &s.lead_key)
            )
        }
    }
}
