//! The engine against SPEC v1, rule by rule (§2 duplicates, §3 profile, §4 scoring, §5 funnel,
//! §6 SLA clocks, §7 records and their order).

use crate::common;

use common::{ev, run, slas, state, transitions, DAY, H};
use leadflow::model::funnel::Stage;
use leadflow::model::records::{Output, SlaKind};

const T0: i64 = 1_800_000_000_000;

fn base(extra: &str) -> String {
    format!(
        r#"
[scoring]
grades = [ {{ grade = "A", min = 60 }}, {{ grade = "B", min = 40 }}, {{ grade = "C", min = 20 }} ]

[[scoring.engagement]]
name = "view"
source = "web"
type = "page_view"
points = 10

[[scoring.engagement]]
name = "click"
source = "email"
type = "click"
points = 5
cooldown = "1h"

[[scoring.fit]]
name = "senior"
attribute = "title"
match = "regex:(?i)\\bvp\\b"
points = 30

[[scoring.fit]]
name = "big"
attribute = "employees"
gte = 100
points = 30

[funnel]
mql_threshold = 50
fast_track = [ {{ source = "web", type = "demo_request" }} ]
{extra}
"#
    )
}

/// A compact trace: `T:from>to` or `S:policy:kind`, in output order.
fn trace(out: &[Output]) -> Vec<String> {
    out.iter()
        .map(|o| match o {
            Output::Transition(t) => format!("T:{}:{}>{}", t.lead_key, t.from_stage, t.to_stage),
            Output::Sla(s) => format!("S:{}:{}:{}", s.lead_key, s.policy, s.kind.as_str()),
        })
        .collect()
}

fn engagement(st: &leadflow::engine::PartitionState, key: &str) -> f64 {
    st.lead(key).expect("lead exists").engagement.value
}

// ---- §2 duplicates ----

#[test]
fn duplicate_ids_within_the_last_eight_are_ignored() {
    let mut st = state(&base(""));
    let views: Vec<_> = (1..=8)
        .map(|i| ev(&format!("e{i}"), "a", T0 + i, "web", "page_view", &[]))
        .collect();
    run(&mut st, &views);
    assert_eq!(engagement(&st, "a"), 80.0);
    run(&mut st, &[ev("e1", "a", T0 + 20, "web", "page_view", &[])]);
    assert_eq!(st.stats().duplicates, 1);
    assert_eq!(engagement(&st, "a"), 80.0, "a duplicate touches no state");
    // e9 pushes e1 out of the window of 8: e1 again is a new event.
    run(&mut st, &[ev("e9", "a", T0 + 21, "web", "page_view", &[])]);
    run(&mut st, &[ev("e1", "a", T0 + 22, "web", "page_view", &[])]);
    assert_eq!(st.stats().duplicates, 1);
    assert_eq!(engagement(&st, "a"), 100.0);
}

#[test]
fn duplicate_ids_are_per_lead() {
    let mut st = state(&base(""));
    run(
        &mut st,
        &[
            ev("same", "a", T0, "web", "page_view", &[]),
            ev("same", "b", T0, "web", "page_view", &[]),
        ],
    );
    assert_eq!(st.stats().duplicates, 0);
    assert_eq!(engagement(&st, "b"), 10.0);
}

// ---- §3 profile, §4 fit and grades ----

#[test]
fn upserts_merge_profile_and_recompute_fit_and_grade() {
    let mut st = state(&base(""));
    run(
        &mut st,
        &[ev(
            "u1",
            "a",
            T0,
            "crm",
            "lead_upsert",
            &[("title", "VP Sales"), ("employees", "1e3")],
        )],
    );
    let lead = st.lead("a").expect("lead");
    assert_eq!(lead.fit, 60.0);
    assert_eq!(st.rules().grade_name(lead.grade), "A");
    run(
        &mut st,
        &[ev(
            "u2",
            "a",
            T0 + 1,
            "crm",
            "lead_upsert",
            &[("employees", "")],
        )],
    );
    let lead = st.lead("a").expect("lead");
    assert_eq!(
        lead.attribute("employees"),
        None,
        "an empty value removes the attribute"
    );
    assert_eq!(
        lead.attribute("title"),
        Some("VP Sales"),
        "other attributes stay"
    );
    assert_eq!(lead.fit, 30.0);
    assert_eq!(st.rules().grade_name(lead.grade), "C");
    run(
        &mut st,
        &[ev(
            "u3",
            "a",
            T0 + 2,
            "crm",
            "lead_upsert",
            &[("title", "Student")],
        )],
    );
    let lead = st.lead("a").expect("lead");
    assert_eq!((lead.fit, st.rules().grade_name(lead.grade)), (0.0, "D"));
    // Attributes of non-upsert events never touch the profile.
    run(
        &mut st,
        &[ev("w", "a", T0 + 3, "web", "page_view", &[("title", "VP")])],
    );
    assert_eq!(st.lead("a").expect("lead").fit, 0.0);
}

/// Any profile change sets the grade from the fit, also one no fit rule reads: with a grade at
/// `min = 0`, a lead whose first change is a phone number or an owner is graded, not D. (A
/// change to skip the recompute for such attributes broke this; a fresh review caught it.)
#[test]
fn a_profile_change_no_fit_rule_reads_still_grades_the_lead() {
    let config = base("").replace("{ grade = \"C\", min = 20 }", "{ grade = \"C\", min = 0 }");
    let mut st = state(&config);
    run(
        &mut st,
        &[
            ev("u1", "a", T0, "crm", "lead_upsert", &[("phone", "123")]),
            ev(
                "o1",
                "b",
                T0,
                "crm",
                "owner_assigned",
                &[("owner_id", "rep-1")],
            ),
            ev("w1", "c", T0, "web", "page_view", &[]),
        ],
    );
    for (key, grade) in [("a", "C"), ("b", "C"), ("c", "D")] {
        let lead = st.lead(key).expect("lead");
        assert_eq!(lead.fit, 0.0);
        assert_eq!(st.rules().grade_name(lead.grade), grade, "lead {key}");
    }
}

#[test]
fn owner_assigned_sets_owner_and_it_appears_on_records() {
    let mut st = state(&base(""));
    let out = run(
        &mut st,
        &[
            ev(
                "o",
                "a",
                T0,
                "crm",
                "owner_assigned",
                &[("owner_id", "rep-1")],
            ),
            ev("d", "a", T0 + 1, "web", "demo_request", &[]),
        ],
    );
    assert_eq!(transitions(&out)[0].owner_id.as_deref(), Some("rep-1"));
}

// ---- §4 engagement, cooldown, decay, clamp ----

#[test]
fn cooldown_edges() {
    let mut st = state(&base(""));
    let click = |id: &str, t: i64| ev(id, "a", t, "email", "click", &[]);
    run(&mut st, &[click("c1", T0)]);
    assert_eq!(engagement(&st, "a"), 5.0);
    run(&mut st, &[click("c2", T0 + H - 1)]);
    assert_eq!(engagement(&st, "a"), 5.0, "inside the cooldown");
    run(&mut st, &[click("c3", T0 + H)]);
    assert_eq!(
        engagement(&st, "a"),
        10.0,
        "exactly one cooldown later scores"
    );
    // t_last is now T0+H. A late click within the cooldown before it does not score...
    run(&mut st, &[click("c4", T0 + 1)]);
    assert_eq!(engagement(&st, "a"), 10.0);
    // ...one a full cooldown before it does, and t_last stays at the max.
    run(&mut st, &[click("c5", T0)]);
    assert_eq!(engagement(&st, "a"), 15.0);
    run(&mut st, &[click("c6", T0 + 2 * H - 1)]);
    assert_eq!(engagement(&st, "a"), 15.0, "t_last stayed at T0+H");
}

#[test]
fn every_matching_rule_applies_in_config_order_with_where_and_wildcards() {
    let extra = r#"
[[scoring.engagement]]
name = "pricing"
source = "web"
type = "page_view"
where = { url = "glob:*/pricing*" }
points = 15

[[scoring.engagement]]
name = "any_web"
source = "web"
type = "*"
points = 1
"#;
    // Rules must come before [funnel] in TOML; append them to [scoring] via a fresh document.
    let cfg = base("").replace("[funnel]", &format!("{extra}\n[funnel]"));
    let mut st = state(&cfg);
    run(
        &mut st,
        &[ev(
            "1",
            "a",
            T0,
            "web",
            "page_view",
            &[("url", "https://x/pricing")],
        )],
    );
    assert_eq!(engagement(&st, "a"), 26.0, "view + pricing + any_web");
    run(&mut st, &[ev("2", "a", T0, "web", "page_view", &[])]);
    assert_eq!(
        engagement(&st, "a"),
        37.0,
        "a missing attribute does not match"
    );
    run(&mut st, &[ev("3", "a", T0, "web", "chat_started", &[])]);
    assert_eq!(engagement(&st, "a"), 38.0, "`*` matches any type");
    run(&mut st, &[ev("4", "a", T0, "email", "open", &[])]);
    assert_eq!(engagement(&st, "a"), 38.0, "`*` is per source");
}

#[test]
fn clamp_bounds_engagement() {
    let cfg = base("").replace("[scoring]", "[scoring]\nmin = -20.0\nmax = 25.0");
    let mut st = state(&cfg);
    let views: Vec<_> = (0..5)
        .map(|i| ev(&format!("v{i}"), "a", T0 + i, "web", "page_view", &[]))
        .collect();
    run(&mut st, &views);
    assert_eq!(engagement(&st, "a"), 25.0);
}

#[test]
fn late_event_counts_decayed_and_mql_is_evaluated_at_max_time() {
    let cfg = base("").replace("[scoring]", "[scoring]\nhalf_life = \"10d\"");
    let mut st = state(&cfg);
    // Created before the late events happened (SPEC v2 §5: an event older than the lead's
    // entry into `new` never qualifies it; see below).
    let mut events = vec![ev("c", "a", T0 - 1, "web", "chat_started", &[])];
    events.extend((0..4).map(|i| {
        ev(
            &format!("v{i}"),
            "a",
            T0 + 10 * DAY,
            "web",
            "page_view",
            &[],
        )
    }));
    events.push(ev("late", "a", T0, "web", "page_view", &[]));
    events.push(ev("late2", "a", T0, "web", "page_view", &[]));
    let out = run(&mut st, &events);
    // 40 at T0+10d, then two late 10s from 10 days (one half-life) earlier: 40 + 5 + 5.
    let t = transitions(&out);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].trigger_event_id, "late2");
    assert_eq!(
        t[0].occurred_at, T0,
        "a transition carries its event's time"
    );
    assert_eq!(t[0].engagement, 50.0, "engagement at max(t, tE)");
    assert_eq!(st.lead("a").expect("lead").engagement.at, T0 + 10 * DAY);

    // The same late events for a lead created after they happened: they score (decayed), but
    // they happened before the lead entered `new`, so they do not qualify it (v1 did).
    let mut st = state(&cfg);
    let b: Vec<_> = events[1..]
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e.lead_key = "b".into();
            e
        })
        .collect();
    let out = run(&mut st, &b);
    assert!(transitions(&out).is_empty(), "{out:?}");
    assert_eq!(engagement(&st, "b"), 50.0);
}

#[test]
fn decay_alone_never_moves_a_stage() {
    let cfg = base("").replace("[scoring]", "[scoring]\nhalf_life = \"10d\"");
    let mut st = state(&cfg);
    let mut out = Vec::new();
    for i in 0..4 {
        st.apply(
            &ev(&format!("v{i}"), "a", T0, "web", "page_view", &[]),
            &mut out,
        );
    }
    st.advance(T0 + 1000 * DAY, &mut out);
    assert!(out.is_empty());
    // 40 decays to 20 after 10 days; +10 = 30 < 50.
    run(
        &mut st,
        &[ev("v9", "a", T0 + 10 * DAY, "web", "page_view", &[])],
    );
    assert_eq!(st.lead("a").expect("lead").stage, Stage::New);
    assert!((engagement(&st, "a") - 30.0).abs() < 1e-9);
}

// ---- §5 funnel ----

#[test]
fn mql_by_score_and_by_fast_track_with_rounding() {
    let cfg = base("").replace("points = 10", "points = 33.33333");
    let mut st = state(&cfg);
    let out = run(
        &mut st,
        &[
            ev("1", "a", T0, "web", "page_view", &[]),
            ev("2", "a", T0 + 1, "web", "page_view", &[]),
            ev("3", "b", T0, "web", "demo_request", &[]),
        ],
    );
    let t = transitions(&out);
    assert_eq!(t.len(), 2);
    assert_eq!((t[0].reason.as_str(), t[0].engagement), ("score", 66.6667));
    assert_eq!((t[1].reason.as_str(), t[1].engagement), ("fast_track", 0.0));
    assert_eq!(t[0].transition_id, "a/t/1");
    assert_eq!(t[0].grade, "D");
    assert_eq!(t[0].owner_id, None);
}

#[test]
fn mql_needs_min_fit_and_is_checked_on_profile_changes() {
    let cfg = base("").replace("mql_threshold = 50", "mql_threshold = 50\nmql_min_fit = 30");
    let mut st = state(&cfg);
    let views: Vec<_> = (0..6)
        .map(|i| ev(&format!("v{i}"), "a", T0 + i, "web", "page_view", &[]))
        .collect();
    let mut out = run(&mut st, &views);
    out.extend(run(
        &mut st,
        &[ev("d", "a", T0 + 10, "web", "demo_request", &[])],
    ));
    assert!(
        out.is_empty(),
        "fit 0 < 30 blocks both score and fast track"
    );
    let out = run(
        &mut st,
        &[ev(
            "u",
            "a",
            T0 + 11,
            "crm",
            "lead_upsert",
            &[("title", "VP")],
        )],
    );
    let t = transitions(&out);
    assert_eq!(
        (t.len(), t[0].reason.as_str(), t[0].fit),
        (1, "score", 30.0)
    );
}

/// Puts lead `a` into `stage` through real events; returns the next free time.
fn lead_in(stage: Stage) -> (leadflow::engine::PartitionState, i64) {
    let mut st = state(&base(""));
    let steps: &[(&str, &str)] = match stage {
        Stage::New => &[("crm", "lead_upsert")],
        Stage::Mql => &[("web", "demo_request")],
        Stage::Sal => &[("crm", "sales_accepted")],
        Stage::Sql => &[("crm", "opportunity_created")],
        Stage::Won => &[("crm", "opportunity_created"), ("crm", "opportunity_won")],
        Stage::Lost => &[("crm", "opportunity_created"), ("crm", "opportunity_lost")],
        Stage::Recycled => &[("web", "demo_request"), ("crm", "sales_rejected")],
        Stage::Disqualified => &[("crm", "disqualified")],
    };
    for (i, (src, ty)) in steps.iter().enumerate() {
        run(
            &mut st,
            &[ev(&format!("setup{i}"), "a", T0 + i as i64, src, ty, &[])],
        );
    }
    assert_eq!(
        st.lead("a").expect("lead").stage,
        stage,
        "setup reached {stage}"
    );
    (st, T0 + 100)
}

#[test]
fn every_row_of_the_crm_transition_table() {
    // SPEC §5, written out independently of the implementation's table.
    let table: [(&str, &[&str], &str); 7] = [
        ("sales_accepted", &["new", "recycled", "mql"], "sal"),
        ("sales_rejected", &["mql"], "recycled"),
        (
            "recycled",
            &["mql", "sal", "lost", "disqualified"],
            "recycled",
        ),
        (
            "opportunity_created",
            &["new", "recycled", "mql", "sal"],
            "sql",
        ),
        ("opportunity_won", &["sql"], "won"),
        ("opportunity_lost", &["sql"], "lost"),
        (
            "disqualified",
            &["new", "recycled", "mql", "sal", "sql", "lost"],
            "disqualified",
        ),
    ];
    let mut checked = 0;
    for (event, allowed, to) in table {
        for from in Stage::ALL {
            let (mut st, t) = lead_in(from);
            let rejected_before = st.stats().rejected_transitions;
            let out = run(&mut st, &[ev("x", "a", t, "crm", event, &[])]);
            let lead = st.lead("a").expect("lead");
            let rejected = st.stats().rejected_transitions - rejected_before;
            let case = format!("{event} from {from}");
            if from.as_str() == to {
                assert!(out.is_empty(), "{case}: silent no-op");
                assert_eq!((lead.stage, rejected), (from, 0), "{case}");
            } else if allowed.contains(&from.as_str()) {
                let tr = transitions(&out);
                assert_eq!(tr.len(), 1, "{case}");
                assert_eq!(tr[0].from_stage, from, "{case}");
                assert_eq!(tr[0].to_stage.as_str(), to, "{case}");
                assert_eq!(tr[0].reason, event, "{case}");
                assert_eq!(tr[0].trigger_event_id, "x", "{case}");
                assert_eq!(rejected, 0, "{case}");
            } else {
                assert!(out.is_empty(), "{case}: rejected is a no-op");
                assert_eq!((lead.stage, rejected), (from, 1), "{case}: counted");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 56);
}

#[test]
fn entering_recycled_resets_engagement_unless_disabled() {
    for (reset, expected) in [(true, 0.0), (false, 60.0)] {
        let cfg = base("").replace(
            "mql_threshold = 50",
            &format!("mql_threshold = 50\nrecycle_reset = {reset}"),
        );
        let mut st = state(&cfg);
        let mut events: Vec<_> = (0..6)
            .map(|i| ev(&format!("v{i}"), "a", T0 + i, "web", "page_view", &[]))
            .collect();
        events.push(ev("r", "a", T0 + 10, "crm", "sales_rejected", &[]));
        let out = run(&mut st, &events);
        let t = transitions(&out);
        assert_eq!(t[1].to_stage, Stage::Recycled);
        assert_eq!(t[1].engagement, expected, "recycle_reset = {reset}");
        // Qualifying again from recycled.
        let more: Vec<_> = (0..5)
            .map(|i| ev(&format!("w{i}"), "a", T0 + 20 + i, "web", "page_view", &[]))
            .collect();
        let out = run(&mut st, &more);
        let t = transitions(&out);
        assert_eq!(t.len(), 1, "recycled -> mql again");
        assert_eq!(t[0].from_stage, Stage::Recycled);
        assert_eq!(t[0].transition_id, "a/t/3");
    }
}

// ---- §6 SLA clocks and §7 order ----

const SLA: &str = r#"
[[sla]]
name = "follow"
stage = "mql"
within = "4h"
warn_before = "1h"
until = "stage_exit"

[[sla]]
name = "touch"
stage = "sal"
within = "24h"
warn_before = "4h"
until = [ { source = "crm", type = "sales_activity" } ]
"#;

#[test]
fn warnings_and_breaches_fire_before_the_event_then_met_on_stage_exit() {
    let mut st = state(&base(SLA));
    let out = run(
        &mut st,
        &[
            ev("d", "a", T0, "web", "demo_request", &[]),
            ev("s", "a", T0 + 5 * H, "crm", "sales_accepted", &[]),
        ],
    );
    assert_eq!(
        trace(&out),
        [
            "T:a:new>mql",
            "S:a:follow:warning",
            "S:a:follow:breach",
            "T:a:mql>sal",
            "S:a:follow:met"
        ]
    );
    let s = slas(&out);
    assert_eq!(
        (s[0].at, s[0].deadline, s[0].started_at),
        (T0 + 3 * H, T0 + 4 * H, T0)
    );
    assert_eq!(s[1].at, T0 + 4 * H);
    assert_eq!(s[2].sla_event_id, "a/s/follow/1/met");
    assert_eq!((s[2].response_ms, s[2].on_time), (Some(5 * H), Some(false)));
    assert_eq!((s[0].response_ms, s[0].on_time), (None, None));
}

#[test]
fn timers_fire_strictly_before_the_clock_and_met_at_the_deadline_is_on_time() {
    let mut st = state(&base(SLA));
    let mut out = run(&mut st, &[ev("d", "a", T0, "web", "demo_request", &[])]);
    st.advance(T0 + 3 * H, &mut out);
    assert_eq!(
        out.len(),
        1,
        "warning due at T0+3h does not fire at clock T0+3h"
    );
    st.advance(T0 + 3 * H + 1, &mut out);
    assert_eq!(trace(&out)[1..], ["S:a:follow:warning"]);
    out.clear();
    run(
        &mut st,
        &[ev("s", "a", T0 + 4 * H, "crm", "sales_accepted", &[])],
    )
    .clone_into(&mut out);
    assert_eq!(trace(&out), ["T:a:mql>sal", "S:a:follow:met"]);
    assert_eq!(slas(&out)[0].on_time, Some(true));
}

#[test]
fn until_list_met_ignores_older_events_and_stage_exit_cancels_silently() {
    let mut st = state(&base(SLA));
    let start = T0 + 10 * H;
    let out = run(
        &mut st,
        &[
            ev("acc", "a", start, "crm", "sales_accepted", &[]),
            ev("old", "a", start - 1, "crm", "sales_activity", &[]),
        ],
    );
    assert_eq!(
        trace(&out),
        ["T:a:new>sal"],
        "an activity older than the start does not count"
    );
    let out = run(
        &mut st,
        &[ev("act", "a", start + H, "crm", "sales_activity", &[])],
    );
    assert_eq!(trace(&out), ["S:a:touch:met"]);
    assert_eq!(
        (slas(&out)[0].response_ms, slas(&out)[0].on_time),
        (Some(H), Some(true))
    );
    let out = run(
        &mut st,
        &[ev("act2", "a", start + 2 * H, "crm", "sales_activity", &[])],
    );
    assert!(out.is_empty(), "a met clock stops");

    // Lead b leaves sal before any activity: its clock is cancelled, nothing fires later.
    let out = run(
        &mut st,
        &[
            ev("acc", "b", start, "crm", "sales_accepted", &[]),
            ev("opp", "b", start + H, "crm", "opportunity_created", &[]),
        ],
    );
    assert_eq!(trace(&out), ["T:b:new>sal", "T:b:sal>sql"]);
    let mut later = Vec::new();
    st.advance(start + 100 * DAY, &mut later);
    assert!(later.is_empty(), "{:?}", trace(&later));
    assert_eq!(st.pending_timers(), 0);
}

#[test]
fn met_after_breach_is_late_and_the_clock_counter_grows_per_entry() {
    let mut st = state(&base(SLA));
    let out = run(
        &mut st,
        &[
            ev("acc", "a", T0, "crm", "sales_accepted", &[]),
            ev("act", "a", T0 + 2 * DAY, "crm", "sales_activity", &[]),
        ],
    );
    assert_eq!(
        trace(&out),
        [
            "T:a:new>sal",
            "S:a:touch:warning",
            "S:a:touch:breach",
            "S:a:touch:met"
        ]
    );
    assert_eq!(slas(&out)[2].on_time, Some(false));
    // sal -> recycled -> sal: the second clock is k = 2.
    let out = run(
        &mut st,
        &[
            ev("rec", "a", T0 + 3 * DAY, "crm", "recycled", &[]),
            ev("acc2", "a", T0 + 4 * DAY, "crm", "sales_accepted", &[]),
            ev("act2", "a", T0 + 4 * DAY + 1, "crm", "sales_activity", &[]),
        ],
    );
    assert_eq!(slas(&out)[0].sla_event_id, "a/s/touch/2/met");
}

#[test]
fn one_event_orders_due_timers_own_met_transition_then_exit_met() {
    let extra = r#"
[[sla]]
name = "a_exit"
stage = "sal"
within = "1h"
until = "stage_exit"

[[sla]]
name = "b_until"
stage = "sal"
within = "2h"
until = [ { source = "crm", type = "opportunity_created" } ]

[[sla]]
name = "c_sql"
stage = "sql"
within = "1h"
until = "stage_exit"
"#;
    let mut st = state(&base(extra));
    let out = run(
        &mut st,
        &[
            ev("acc", "a", T0, "crm", "sales_accepted", &[]),
            ev(
                "opp",
                "a",
                T0 + 90 * 60_000,
                "crm",
                "opportunity_created",
                &[],
            ),
        ],
    );
    assert_eq!(
        trace(&out),
        [
            "T:a:new>sal",
            "S:a:a_exit:breach",
            "S:a:b_until:met",
            "T:a:sal>sql",
            "S:a:a_exit:met"
        ]
    );
    let mut out = Vec::new();
    st.advance(T0 + 10 * H, &mut out);
    assert_eq!(
        trace(&out),
        ["S:a:c_sql:breach"],
        "the clock started by the transition runs"
    );
}

#[test]
fn timer_ties_order_by_lead_key_then_policy_name_then_warning_first() {
    let extra = r#"
[[sla]]
name = "zeta"
stage = "mql"
within = "2h"
warn_before = "0s"
until = "stage_exit"

[[sla]]
name = "alpha"
stage = "mql"
within = "2h"
warn_before = "1h"
until = "stage_exit"
"#;
    let mut st = state(&base(extra));
    let mut out = run(
        &mut st,
        &[
            ev("d", "b", T0, "web", "demo_request", &[]),
            ev("d", "a", T0, "web", "demo_request", &[]),
        ],
    );
    out.clear();
    st.advance(T0 + DAY, &mut out);
    assert_eq!(
        trace(&out),
        [
            "S:a:alpha:warning",
            "S:b:alpha:warning",
            "S:a:alpha:breach",
            "S:a:zeta:warning",
            "S:a:zeta:breach",
            "S:b:alpha:breach",
            "S:b:zeta:warning",
            "S:b:zeta:breach",
        ]
    );
    let kinds: Vec<SlaKind> = slas(&out).iter().map(|s| s.kind).collect();
    assert_eq!(kinds.len(), 8);
}

#[test]
fn duplicates_still_move_the_stream_clock() {
    let mut st = state(&base(SLA));
    let mut out = run(&mut st, &[ev("d", "a", T0, "web", "demo_request", &[])]);
    out.clear();
    st.apply(
        &ev("d", "a", T0 + DAY, "web", "demo_request", &[]),
        &mut out,
    );
    assert_eq!(st.stats().duplicates, 1);
    assert_eq!(trace(&out), ["S:a:follow:warning", "S:a:follow:breach"]);
    assert_eq!(st.clock(), Some(T0 + DAY));
}

#[test]
fn business_calendar_deadlines_in_the_engine() {
    let extra = r#"
[[sla]]
name = "follow"
stage = "mql"
within = "4h"
warn_before = "1h"
calendar = "ny"
until = "stage_exit"

[calendars.ny]
timezone = "America/New_York"
hours = { mon = "09:00-17:00", tue = "09:00-17:00", wed = "09:00-17:00", thu = "09:00-17:00", fri = "09:00-17:00" }
holidays = ["2026-11-26"]
"#;
    let mut st = state(&base(extra));
    // Wed 2026-11-25 15:00 EST; Thursday is a holiday: 2h Wed + 2h Fri -> Fri 11:00 EST.
    let wed_15 = 1_795_636_800_000;
    let out = run(&mut st, &[ev("d", "a", wed_15, "web", "demo_request", &[])]);
    assert_eq!(transitions(&out).len(), 1);
    let mut out = Vec::new();
    st.advance(wed_15 + 10 * DAY, &mut out);
    let s = slas(&out);
    let fri_11 = 1_795_795_200_000;
    assert_eq!(s[1].deadline, fri_11);
    assert_eq!(
        s[0].at,
        fri_11 - H,
        "warning after 3 business hours: Fri 10:00"
    );
}
