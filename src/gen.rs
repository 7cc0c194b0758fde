//! A deterministic generator of realistic lead traffic: personas with scripted journeys, sales
//! reacting (accepting, sometimes late; rejecting; calling; opportunities). The same spec
//! always gives the same events, in time order.

use crate::model::event::{Event, EventFields};

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenSpec {
    pub seed: u64,
    /// Distinct leads (journeys start spread over the span).
    pub leads: u64,
    /// Stop after this many events.
    pub events: u64,
    pub start_ms: i64,
    pub span_ms: i64,
}

/// SplitMix64: small, fast, and stable across versions (unlike an external RNG crate).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const TITLES_SENIOR: [&str; 5] = [
    "VP Marketing",
    "Director of IT",
    "Head of Growth",
    "CTO",
    "Chief Revenue Officer",
];
const TITLES_OTHER: [&str; 4] = ["Analyst", "Student", "Engineer", "Marketing Associate"];
const COUNTRIES: [&str; 6] = ["US", "UK", "DE", "FR", "UA", "BR"];
const PAGES: [&str; 5] = [
    "/pricing",
    "/blog/scoring",
    "/docs",
    "/pricing/enterprise",
    "/about",
];

/// One lead's journey: (offset from the journey start in ms, source, type, attributes).
type Step = (i64, &'static str, &'static str, Vec<(&'static str, String)>);

fn journey(rng: &mut Rng, span_ms: i64) -> Vec<Step> {
    // Journeys last up to a quarter of the span (at least a minute), so time stays realistic
    // both for a 10-minute demo and a 60-day backtest.
    let unit = (span_ms / 400).max(150);
    let mut t = 0i64;
    let mut steps: Vec<Step> = Vec::new();
    let mut at = |rng: &mut Rng, gap: i64| {
        t += 1 + rng.below(gap.max(1) as u64) as i64;
        t
    };
    let persona = rng.below(100);
    let upsert = |rng: &mut Rng, senior: bool| -> Vec<(&'static str, String)> {
        let title = if senior {
            *rng.pick(&TITLES_SENIOR)
        } else {
            *rng.pick(&TITLES_OTHER)
        };
        vec![
            ("title", title.to_string()),
            ("employees", (10 + rng.below(5000)).to_string()),
            ("country", rng.pick(&COUNTRIES).to_string()),
        ]
    };
    let page = |rng: &mut Rng| vec![("url", format!("https://example.com{}", rng.pick(&PAGES)))];
    match persona {
        // Hot: a senior buyer who reads a lot, then sales takes over.
        0..=29 => {
            let mut a = upsert(rng, true);
            a.push(("lead_source", "content".to_string()));
            steps.push((at(rng, unit), "crm", "lead_upsert", a));
            for _ in 0..(4 + rng.below(10)) {
                let kind = rng.below(10);
                let s = match kind {
                    0..=4 => (at(rng, unit * 2), "web", "page_view", page(rng)),
                    5..=6 => (at(rng, unit * 3), "web", "content_download", vec![]),
                    7 => (at(rng, unit * 4), "web", "webinar_attended", vec![]),
                    _ => (
                        at(rng, unit * 2),
                        "email",
                        "click",
                        vec![("campaign", "nurture".to_string())],
                    ),
                };
                steps.push(s);
            }
            sales(rng, &mut steps, &mut t, unit);
        }
        // Cold: opens a few emails, maybe unsubscribes.
        30..=59 => {
            for _ in 0..(1 + rng.below(4)) {
                steps.push((at(rng, unit * 5), "email", "open", vec![]));
            }
            if rng.chance(20) {
                steps.push((at(rng, unit * 5), "email", "unsubscribe", vec![]));
            }
        }
        // Hand-raiser: asks for a demo early.
        60..=79 => {
            let senior = rng.chance(60);
            let mut a = upsert(rng, senior);
            a.push(("lead_source", "paid_search".to_string()));
            steps.push((at(rng, unit), "crm", "lead_upsert", a));
            steps.push((at(rng, unit), "web", "page_view", page(rng)));
            steps.push((
                at(rng, unit),
                "web",
                "demo_request",
                vec![("form", "contact-sales".to_string())],
            ));
            sales(rng, &mut steps, &mut t, unit);
        }
        // Sales-sourced: created and worked by a rep directly.
        _ => {
            let mut a = upsert(rng, true);
            a.push(("lead_source", "outbound".to_string()));
            steps.push((at(rng, unit), "crm", "lead_upsert", a));
            let owner = format!("rep-{}", rng.below(20));
            steps.push((
                at(rng, unit),
                "crm",
                "owner_assigned",
                vec![("owner_id", owner)],
            ));
            steps.push((at(rng, unit), "crm", "sales_accepted", vec![]));
            steps.push((
                at(rng, unit * 3),
                "crm",
                "sales_activity",
                vec![("kind", "call".to_string())],
            ));
            if rng.chance(50) {
                opportunity(rng, &mut steps, &mut at, (unit * 5, unit * 10), 40);
            }
        }
    }
    steps
}

/// An opportunity is created after `gaps.0`, then won (`win_percent`) or lost after `gaps.1`.
fn opportunity(
    rng: &mut Rng,
    steps: &mut Vec<Step>,
    at: &mut impl FnMut(&mut Rng, i64) -> i64,
    gaps: (i64, i64),
    win_percent: u64,
) {
    steps.push((at(rng, gaps.0), "crm", "opportunity_created", vec![]));
    let won = rng.chance(win_percent);
    let t = at(rng, gaps.1);
    if won {
        // The deal size comes from the time, not the generator, so adding it left every
        // journey as it was.
        let amount = format!("{}.00", 2_000 + (t % 97) * 500);
        steps.push((t, "crm", "opportunity_won", vec![("amount", amount)]));
    } else {
        steps.push((t, "crm", "opportunity_lost", vec![]));
    }
}

/// Sales reacting to a qualified lead: accept (sometimes slowly), call, or reject.
fn sales(rng: &mut Rng, steps: &mut Vec<Step>, t: &mut i64, unit: i64) {
    let mut at = |rng: &mut Rng, gap: i64| {
        *t += 1 + rng.below(gap.max(1) as u64) as i64;
        *t
    };
    let owner = format!("rep-{}", rng.below(20));
    steps.push((
        at(rng, unit),
        "crm",
        "owner_assigned",
        vec![("owner_id", owner)],
    ));
    match rng.below(10) {
        0..=5 => {
            // Accepted: quickly, or late enough to breach.
            let gap = if rng.chance(30) { unit * 20 } else { unit * 2 };
            steps.push((at(rng, gap), "crm", "sales_accepted", vec![]));
            if rng.chance(75) {
                steps.push((
                    at(rng, unit * 6),
                    "crm",
                    "sales_activity",
                    vec![("kind", "call".to_string())],
                ));
            }
            if rng.chance(40) {
                opportunity(rng, steps, &mut at, (unit * 8, unit * 15), 50);
            }
        }
        6..=7 => steps.push((
            at(rng, unit * 3),
            "crm",
            "sales_rejected",
            vec![("reason", "no budget".to_string())],
        )),
        _ => {} // never followed up: the SLA breaches
    }
}

/// Generates `spec.events` events in time order (ties in generation order).
pub fn generate(spec: &GenSpec) -> Vec<Event> {
    let mut rng = Rng::new(spec.seed);
    let leads = spec.leads.max(1);
    let mut out: Vec<(i64, u64, Event)> = Vec::new();
    let mut seq = 0u64;
    let mut round = 0u64;
    // Journeys repeat per lead in rounds until enough events exist (a lead comes back).
    while (out.len() as u64) < spec.events {
        for i in 0..leads {
            let start = spec.start_ms + rng.below(spec.span_ms.max(1) as u64) as i64;
            let key = format!("lead{i}@company{}.example", i % 997);
            for (off, source, ty, attrs) in journey(&mut rng, spec.span_ms) {
                let t = start + off;
                let a: Vec<(&str, &str)> = attrs.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let id = format!("g{}-{round}-{seq}", spec.seed);
                seq += 1;
                if let Ok(ev) = EventFields::from_parts(&id, &key, t, source, ty, &a).validate() {
                    out.push((t, seq, ev));
                }
            }
            if out.len() as u64 >= spec.events.saturating_mul(2) {
                break;
            }
        }
        round += 1;
    }
    out.sort_by_key(|(t, s, _)| (*t, *s));
    out.truncate(spec.events as usize);
    out.into_iter().map(|(_, _, e)| e).collect()
}

/// The logical event as a JSON object (the replay line format and the `json` topic format).
pub fn to_json(ev: &Event) -> serde_json::Value {
    let attrs: serde_json::Map<String, serde_json::Value> = ev
        .attributes
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    serde_json::json!({
        "event_id": ev.event_id,
        "lead_key": ev.lead_key,
        "occurred_at": ev.occurred_at,
        "source": ev.source.as_str(),
        "type": ev.event_type,
        "attributes": attrs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(seed: u64) -> GenSpec {
        GenSpec {
            seed,
            leads: 300,
            events: 5_000,
            start_ms: 1_790_000_000_000,
            span_ms: 30 * 86_400_000,
        }
    }

    #[test]
    fn deterministic_sorted_and_sized() {
        let a = generate(&spec(7));
        assert_eq!(a.len(), 5_000);
        assert_eq!(a, generate(&spec(7)));
        assert_ne!(a, generate(&spec(8)));
        assert!(a.windows(2).all(|w| w[0].occurred_at <= w[1].occurred_at));
        let ids: std::collections::HashSet<&str> = a.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids.len(), a.len(), "event ids are unique");
    }

    #[test]
    fn the_mix_drives_the_funnel() {
        let rules = crate::config::Settings::from_toml(include_str!("../examples/config.toml"))
            .expect("example config")
            .rules;
        let mut st = crate::engine::PartitionState::new(rules);
        let mut out = Vec::new();
        for e in generate(&spec(1)) {
            st.apply(&e, &mut out);
        }
        let s = st.stats();
        use crate::model::funnel::Stage;
        for stage in [
            Stage::Mql,
            Stage::Sal,
            Stage::Sql,
            Stage::Won,
            Stage::Recycled,
        ] {
            assert!(
                s.transitions_to[stage.index()] > 0,
                "no transitions to {stage}"
            );
        }
        assert!(
            s.sla.iter().all(|n| *n > 0),
            "warnings, breaches and mets all occur: {:?}",
            s.sla
        );
    }
}
