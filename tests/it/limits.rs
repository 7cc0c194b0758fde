//! The state bounds of `[limits]` in the pure engine: eviction of inactive and terminal leads,
//! the cap on leads per partition, the cap on pending timers, returning leads' ids, snapshots
//! of all of it, and determinism with and without ticks.

use crate::common;

use std::sync::Arc;

use common::{ev, examples_dir, DAY, H};
use leadflow::config::Settings;
use leadflow::engine::{EvictReason, PartitionState};
use leadflow::model::event::Event;
use leadflow::model::records::Output;

/// Monday 2026-11-16 10:00 New York (business hours of the example calendar).
const T0: i64 = 1_763_305_200_000 + 365 * DAY;

fn settings(limits: &str) -> Settings {
    let example = std::fs::read_to_string(examples_dir().join("config.toml")).expect("example");
    Settings::from_toml(&format!("{example}\n[limits]\n{limits}\n"))
        .unwrap_or_else(|e| panic!("config: {e}"))
}

fn state(limits: &str) -> PartitionState {
    PartitionState::new(Arc::clone(&settings(limits).rules))
}

fn apply_all(st: &mut PartitionState, events: &[Event]) -> Vec<Output> {
    let mut out = Vec::new();
    for e in events {
        st.apply(e, &mut out);
    }
    out
}

/// A lead that becomes an MQL at once: senior title, US, mid-market, then a demo request.
fn mql(lead: &str, t: i64) -> Vec<Event> {
    vec![
        ev(
            &format!("{lead}-u{t}"),
            lead,
            t,
            "crm",
            "lead_upsert",
            &[
                ("title", "VP Sales"),
                ("country", "US"),
                ("employees", "500"),
            ],
        ),
        ev(
            &format!("{lead}-d{t}"),
            lead,
            t + 1,
            "web",
            "demo_request",
            &[],
        ),
    ]
}

fn transition_ids(out: &[Output]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            Output::Transition(t) => Some(t.transition_id.to_string()),
            Output::Sla(_) => None,
        })
        .collect()
}

/// An inactive lead whose breach is past due but not yet fired (`clock.allowed_lateness` delays
/// it) is not evicted: its warning and breach still fire, and it goes at a later sweep.
#[test]
fn a_breach_held_by_allowed_lateness_keeps_its_lead_from_eviction() {
    let example = std::fs::read_to_string(examples_dir().join("config.toml")).expect("example");
    let late = example.replace(
        "grace = \"30s\"",
        "grace = \"30s\"\nallowed_lateness = \"5d\"",
    );
    assert_ne!(late, example, "the example config has its [clock] grace");
    let rules = Settings::from_toml(&format!(
        "{late}\n[limits]\nevict_inactive_after = \"2d\"\n"
    ))
    .expect("config")
    .rules;
    let mut st = PartitionState::new(Arc::clone(&rules));
    apply_all(&mut st, &mql("ana", T0));
    // Four days later: ana has been idle for more than 2 days and her MQL clock's deadline
    // (4 business hours) has passed, but it fires only 5 days after it.
    let out = apply_all(
        &mut st,
        &[ev("b1", "bo", T0 + 4 * DAY, "web", "page_view", &[])],
    );
    assert!(out.is_empty(), "{out:?}");
    assert!(st.lead("ana").is_some(), "ana waits for her breach");
    assert_eq!(st.stats().evicted[EvictReason::Inactive as usize], 0);
    // Ten days after: her warning and breach fire, then the sweep evicts her.
    let out = apply_all(
        &mut st,
        &[ev("b2", "bo", T0 + 10 * DAY, "web", "page_view", &[])],
    );
    let kinds: Vec<(String, String)> = out
        .iter()
        .filter_map(|o| match o {
            Output::Sla(s) => Some((s.lead_key.to_string(), s.kind.as_str().to_string())),
            Output::Transition(_) => None,
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("ana".to_string(), "warning".to_string()),
            ("ana".to_string(), "breach".to_string())
        ]
    );
    assert!(st.lead("ana").is_none(), "evicted once nothing is pending");
    assert_eq!(
        st.stats().evicted[EvictReason::Inactive as usize],
        2,
        "ana, and bo (idle since day 4) before his event brings him back"
    );
}

#[test]
fn inactive_leads_are_evicted_after_their_timers_and_return_with_fresh_ids() {
    let mut st = state(r#"evict_inactive_after = "2d""#);
    let first = apply_all(&mut st, &mql("ana", T0));
    assert_eq!(transition_ids(&first), vec!["ana/t/1"]);
    // Ten days later another lead's event moves the clock: ana's MQL clock has breached long
    // ago (no timer pending) and she has been idle for more than 2 days.
    apply_all(
        &mut st,
        &[ev("b1", "bo", T0 + 10 * DAY, "web", "page_view", &[])],
    );
    assert!(st.lead("ana").is_none(), "ana is evicted");
    assert_eq!(st.stats().evicted[EvictReason::Inactive as usize], 1);
    assert_eq!(
        st.stats().evicted_with_clocks,
        1,
        "her breached clock went with her"
    );
    assert_eq!(st.open_clocks(), 0);
    assert_eq!(st.lead_count(), 1);
    // She comes back: a fresh lead (stage new, engagement 0), whose record ids cannot repeat
    // her earlier ones.
    let t = T0 + 11 * DAY;
    let back = apply_all(&mut st, &mql("ana", t));
    let ids = transition_ids(&back);
    assert_eq!(ids, vec![format!("ana/r{t}/t/1")]);
    let sla_ids: Vec<&str> = back
        .iter()
        .filter_map(|o| match o {
            Output::Sla(s) => Some(s.sla_event_id.as_str()),
            Output::Transition(_) => None,
        })
        .collect();
    assert!(
        sla_ids
            .iter()
            .all(|id| id.starts_with(&format!("ana/r{t}/s/"))),
        "{sla_ids:?}"
    );
}

#[test]
fn a_lead_with_a_pending_timer_is_kept() {
    let mut st = state(r#"evict_inactive_after = "1h""#);
    apply_all(&mut st, &mql("ana", T0));
    // Two hours later (business hours): ana is idle for longer than 1 h, but her 4-hour MQL
    // clock has not breached yet.
    apply_all(
        &mut st,
        &[ev("b1", "bo", T0 + 2 * H, "web", "page_view", &[])],
    );
    assert!(st.lead("ana").is_some(), "kept while a breach is pending");
    assert_eq!(st.stats().evicted, [0, 0, 0]);
}

#[test]
fn terminal_leads_are_evicted_on_their_own_age() {
    let mut st = state(
        r#"evict_terminal_after = "1d"
evict_inactive_after = "30d""#,
    );
    let mut evs = mql("won", T0);
    evs.push(ev("w2", "won", T0 + 1000, "crm", "sales_accepted", &[]));
    evs.push(ev(
        "w3",
        "won",
        T0 + 2000,
        "crm",
        "opportunity_created",
        &[],
    ));
    evs.push(ev("w4", "won", T0 + 3000, "crm", "opportunity_won", &[]));
    evs.push(ev("o1", "open", T0, "web", "page_view", &[]));
    apply_all(&mut st, &evs);
    apply_all(
        &mut st,
        &[ev("x", "other", T0 + 3 * DAY, "web", "page_view", &[])],
    );
    assert!(st.lead("won").is_none(), "terminal for 3 days: evicted");
    assert!(
        st.lead("open").is_some(),
        "idle 3 days, below 30 days: kept"
    );
    assert_eq!(st.stats().evicted[EvictReason::Terminal as usize], 1);
}

#[test]
fn a_million_distinct_leads_in_a_minute_stay_under_max_leads() {
    let max = 10_000u64;
    let mut st = state(&format!("max_leads_per_partition = {max}"));
    let mut out = Vec::new();
    for i in 0..1_000_000i64 {
        let e = ev(
            &format!("e{i}"),
            &format!("lead{i}"),
            T0 + i * 60_000 / 1_000_000,
            "web",
            "page_view",
            &[],
        );
        st.apply(&e, &mut out);
        out.clear();
        assert!(st.lead_count() as u64 <= max, "bound broken at event {i}");
    }
    let evicted = st.stats().evicted[EvictReason::MaxLeads as usize];
    assert_eq!(evicted + st.lead_count() as u64, 1_000_000);
    assert_eq!(
        st.stage_counts().iter().sum::<u64>(),
        st.lead_count() as u64
    );
    // The most recent leads are the ones kept.
    assert!(st.lead("lead999999").is_some());
    assert!(st.lead("lead0").is_none());
}

#[test]
fn the_pending_timer_bound_refuses_new_clocks_and_counts_them() {
    // Each MQL clock has a warning and a breach: 2 timers. A bound of 6 holds 3 clocks.
    let mut st = state("max_pending_timers_per_partition = 6");
    let mut out = Vec::new();
    for i in 0..5 {
        for e in mql(&format!("l{i}"), T0 + i * 10) {
            st.apply(&e, &mut out);
        }
    }
    assert_eq!(st.pending_timers(), 6);
    assert_eq!(st.open_clocks(), 3);
    assert_eq!(st.stats().refused_clocks, 2);
    assert_eq!(
        transition_ids(&out).len(),
        5,
        "the transitions themselves are not refused"
    );
}

#[test]
fn eviction_state_survives_a_snapshot() {
    let limits = r#"evict_inactive_after = "2d""#;
    let mut st = state(limits);
    apply_all(&mut st, &mql("ana", T0));
    apply_all(
        &mut st,
        &[ev("b1", "bo", T0 + 10 * DAY, "web", "page_view", &[])],
    );
    let bytes = st.encode_snapshot(5);
    let rules = Arc::clone(&settings(limits).rules);
    let (mut back, _) = PartitionState::decode_snapshot(rules, &bytes).expect("decodes");
    assert_eq!(back.stats(), st.stats());
    let t = T0 + 11 * DAY;
    let (a, b) = (
        apply_all(&mut st, &mql("ana", t)),
        apply_all(&mut back, &mql("ana", t)),
    );
    assert_eq!(a, b, "the restored filter still knows ana was evicted");
    assert_eq!(transition_ids(&b), vec![format!("ana/r{t}/t/1")]);
}

#[test]
fn evictions_do_not_depend_on_ticks() {
    // The same events with and without ticks in between (as the Kafka mode appends them):
    // the same records and the same evictions.
    let limits = r#"evict_inactive_after = "2d"
evict_terminal_after = "1d""#;
    let mut events = Vec::new();
    for i in 0..40i64 {
        events.extend(mql(&format!("l{}", i % 7), T0 + i * 7 * H));
        events.push(ev(
            &format!("p{i}"),
            &format!("l{}", (i * 3) % 7),
            T0 + i * 7 * H + 5,
            "web",
            "page_view",
            &[],
        ));
    }
    let mut plain = state(limits);
    let a = apply_all(&mut plain, &events);
    let mut ticked = state(limits);
    let mut b = Vec::new();
    for e in &events {
        // A tick just before each event, at an odd offset from the sweep grid.
        ticked.advance(e.occurred_at - 17 * 60_000, &mut b);
        ticked.apply(e, &mut b);
    }
    assert_eq!(a, b);
    assert_eq!(plain.stats().evicted, ticked.stats().evicted);
    assert!(
        plain.stats().evicted.iter().sum::<u64>() > 0,
        "the scenario evicts"
    );
}

#[test]
fn bad_limits_fail_at_startup_naming_the_key() {
    let example = std::fs::read_to_string(examples_dir().join("config.toml")).expect("example");
    for (limits, key) in [
        (
            "max_leads_per_partition = 5",
            "limits.max_leads_per_partition",
        ),
        ("max_message_bytes = 10", "limits.max_message_bytes"),
        (
            r#"evict_inactive_after = "soon""#,
            "limits.evict_inactive_after",
        ),
        (
            "max_pending_timers_per_partition = 1",
            "limits.max_pending_timers_per_partition",
        ),
        ("max_leads = 5", "limits"),
    ] {
        let err = Settings::from_toml(&format!("{example}\n[limits]\n{limits}\n"))
            .expect_err(limits)
            .to_string();
        assert!(err.contains(key), "{limits}: {err}");
    }
}
