//! Score explanations for the conformance example's leads, checked against expected.jsonl and
//! against SPEC §4's decay formula computed here independently.

use crate::common;

use std::io::BufRead;

use leadflow::codec::json;
use leadflow::engine::{Explanation, PartitionState};
use leadflow::model::funnel::Stage;

const H: f64 = 14.0 * 86_400_000.0; // the example's half-life

fn replayed() -> PartitionState {
    let dir = common::examples_dir();
    let text = std::fs::read_to_string(dir.join("config.toml")).expect("config");
    let mut st = common::state(&text);
    let input = std::fs::File::open(dir.join("input.jsonl")).expect("input");
    let mut out = Vec::new();
    for line in std::io::BufReader::new(input).lines() {
        if let Ok(ev) = json::decode_event(line.expect("line").as_bytes()) {
            st.apply(&ev, &mut out);
        }
    }
    st
}

fn decayed(points: f64, t: i64, as_of: i64) -> f64 {
    points * (-((as_of - t) as f64) / H).exp2()
}

fn rule(x: &Explanation, name: &str) -> f64 {
    x.engagement_rules
        .iter()
        .find(|r| r.rule == name)
        .unwrap_or_else(|| panic!("no rule {name} in {:?}", x.engagement_rules))
        .points
}

#[test]
fn di_requalified_after_recycling_breakdown() {
    let st = replayed();
    let at = 1_801_065_600_000; // di's second MQL (expected.jsonl: engagement 123.4488)
    let x = st
        .explain("di@deltafreight.com", Some(at))
        .expect("di explained");
    assert_eq!(x.stage, Stage::Mql);
    assert_eq!(x.engagement, 123.4488);
    // Only what came after the recycling reset counts.
    let webinar = decayed(30.0, 1_800_889_200_000, at) + 30.0;
    let whitepaper = decayed(25.0, 1_800_975_600_000, at)
        + decayed(25.0, 1_801_062_000_000, at)
        + decayed(25.0, 1_800_457_200_000, at);
    assert!((rule(&x, "webinar") - webinar).abs() < 1e-3);
    assert!((rule(&x, "whitepaper") - whitepaper).abs() < 1e-3);
    assert_eq!(x.engagement_rules.len(), 2, "{:?}", x.engagement_rules);
    assert!((webinar + whitepaper - x.engagement).abs() < 1e-3);
    let fit: Vec<(&str, f64)> = x
        .fit_rules
        .iter()
        .map(|f| (f.rule.as_str(), f.points))
        .collect();
    assert_eq!(
        fit,
        [
            ("senior_title", 30.0),
            ("mid_market", 20.0),
            ("enterprise", 15.0),
            ("target_country", 10.0)
        ]
    );
    assert_eq!((x.fit, x.grade.as_str()), (75.0, "A"));
    let moves: Vec<(Stage, Stage, &str)> = x
        .recent_transitions
        .iter()
        .map(|t| (t.from, t.to, t.reason))
        .collect();
    assert_eq!(
        moves,
        [
            (Stage::New, Stage::Mql, "score"),
            (Stage::Mql, Stage::Recycled, "sales_rejected"),
            (Stage::Recycled, Stage::Mql, "score")
        ]
    );
    assert_eq!(x.open_sla_clocks.len(), 1);
    let c = &x.open_sla_clocks[0];
    assert_eq!(
        (c.policy.as_str(), c.started_at, c.deadline),
        ("mql_follow_up", at, 1_801_080_000_000)
    );
    assert_eq!(c.warning_at, Some(1_801_076_400_000));
}

#[test]
fn ana_bo_and_ed() {
    let st = replayed();
    // Default time: the stream clock at the end of the input.
    let ana = st.explain("ana@acme.io", None).expect("ana");
    assert_eq!(ana.as_of, 1_801_065_600_000);
    assert_eq!(
        (ana.stage, ana.owner_id.as_deref()),
        (Stage::Won, Some("rep-7"))
    );
    assert_eq!(ana.recent_transitions.len(), 4);
    assert_eq!(ana.recent_transitions[0].at, 1_795_445_100_000);
    // Her MQL (the example's expected output: t/1, grade A), remembered after she was won.
    assert_eq!(ana.mql_at, Some(1_795_445_100_000));
    assert_eq!(ana.grade_at_mql.as_deref(), Some("A"));
    assert!(
        ana.open_sla_clocks.is_empty(),
        "both of ana's clocks were met"
    );
    let sum: f64 = ana.engagement_rules.iter().map(|r| r.points).sum();
    assert!(
        (sum - ana.engagement).abs() < 1e-3,
        "{sum} vs {}",
        ana.engagement
    );
    assert_eq!(
        ana.profile.get("title").map(String::as_str),
        Some("VP Marketing")
    );

    let bo = st.explain("bo@betaworks.com", None).expect("bo");
    assert_eq!(
        (bo.stage, bo.fit, bo.grade.as_str(), bo.engagement),
        (Stage::Sal, 40.0, "B", 0.0)
    );
    assert_eq!(
        (bo.mql_at, bo.grade_at_mql.as_deref()),
        (Some(1_795_210_200_000), Some("B"))
    );
    assert!(
        bo.engagement_rules.is_empty(),
        "a demo request scores no points here"
    );
    assert_eq!(
        bo.open_sla_clocks[0].policy, "sal_first_touch",
        "breached, never met: still open"
    );

    // At ed's last event: the score sits at the clamp, while the rules add up to about -140.
    let last = 1_795_453_500_000;
    let ed = st.explain("ed@rivalco.com", Some(last)).expect("ed");
    assert_eq!(ed.engagement, -100.0, "clamped at scoring.min");
    let competitor = decayed(-100.0, 1_795_453_200_000, last);
    assert!((rule(&ed, "competitor_form") - competitor).abs() < 1e-3);
    assert_eq!(rule(&ed, "unsubscribe"), -40.0);
    assert_eq!((ed.mql_at, ed.grade_at_mql), (None, None), "never an MQL");
    assert!(st.explain("nobody@nowhere", None).is_none());
}
