//! Properties of the engine over generated event sequences.

use crate::common;

use std::collections::HashSet;

use common::{ev, state, DAY};
use leadflow::model::event::{CrmType, Event};
use leadflow::model::records::Output;
use proptest::prelude::*;

const T0: i64 = 1_790_000_000_000;

const NO_COOLDOWN_NO_CLAMP: &str = r#"
[scoring]
half_life = "7d"

[[scoring.engagement]]
name = "view"
source = "web"
type = "page_view"
points = 3

[[scoring.engagement]]
name = "download"
source = "web"
type = "content_download"
points = 20

[[scoring.engagement]]
name = "any_web"
source = "web"
type = "*"
points = 0.5

[[scoring.engagement]]
name = "click"
source = "email"
type = "click"
points = 7.25

[[scoring.engagement]]
name = "unsubscribe"
source = "email"
type = "unsubscribe"
points = -30

[funnel]
mql_threshold = 1000000
"#;

fn scoring_event() -> impl Strategy<Value = (&'static str, &'static str, i64)> {
    (
        prop::sample::select(vec![
            ("web", "page_view"),
            ("web", "content_download"),
            ("web", "chat_started"),
            ("email", "click"),
            ("email", "unsubscribe"),
            ("email", "open"),
        ]),
        0..60 * DAY,
    )
        .prop_map(|((s, t), dt)| (s, t, dt))
}

proptest! {
    /// SPEC §4: without cooldown or clamp, a late event decays as if it had come in order, so
    /// the engagement at the latest time does not depend on arrival order.
    #[test]
    fn engagement_is_independent_of_arrival_order(
        events in prop::collection::vec(scoring_event(), 1..40)
            .prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle()))
    ) {
        let (in_order, shuffled) = events;
        let build = |list: &[(&str, &str, i64)]| -> Vec<Event> {
            // ids follow the content, so both orders carry the same ids
            list.iter().map(|(s, t, dt)| ev(&format!("{s}/{t}/{dt}"), "lead", T0 + dt, s, t, &[])).collect()
        };
        let mut ids = HashSet::new();
        prop_assume!(in_order.iter().all(|(s, t, dt)| ids.insert(format!("{s}/{t}/{dt}"))));
        let latest = T0 + in_order.iter().map(|e| e.2).max().unwrap_or(0);
        let mut a = state(NO_COOLDOWN_NO_CLAMP);
        let mut b = state(NO_COOLDOWN_NO_CLAMP);
        common::run(&mut a, &build(&in_order));
        common::run(&mut b, &build(&shuffled));
        let decay = a.rules().decay;
        let ea = a.lead("lead").expect("lead").engagement.at_time(latest, &decay);
        let eb = b.lead("lead").expect("lead").engagement.at_time(latest, &decay);
        prop_assert!((ea - eb).abs() <= 1e-9 * ea.abs().max(1.0), "{ea} vs {eb}");
        // Without a clamp the per-rule breakdown adds up to the score.
        let x = a.explain("lead", Some(latest)).expect("explained");
        let sum: f64 = x.engagement_rules.iter().map(|r| r.points).sum();
        prop_assert!((sum - x.engagement).abs() <= 1e-3 * x.engagement_rules.len().max(1) as f64, "{sum} vs {}", x.engagement);
    }
}

#[derive(Debug, Clone)]
enum Op {
    Event(Event),
    Advance(i64),
}

fn any_time() -> impl Strategy<Value = i64> {
    prop_oneof![
        8 => (0..90 * DAY).prop_map(|d| T0 + d),
        1 => Just(0i64),
        1 => Just(i64::MAX),
        1 => (i64::MAX - 10 * DAY)..=i64::MAX,
        1 => 0..i64::MAX,
    ]
}

fn any_op() -> impl Strategy<Value = Op> {
    let mut types: Vec<(&str, &str)> = vec![
        ("web", "page_view"),
        ("web", "form_submit"),
        ("web", "content_download"),
        ("web", "webinar_attended"),
        ("web", "demo_request"),
        ("web", "odd_custom"),
        ("email", "click"),
        ("email", "open"),
        ("email", "unsubscribe"),
    ];
    types.extend(CrmType::ALL.iter().map(|c| ("crm", c.as_str())));
    let attrs = prop::collection::vec(
        prop::sample::select(vec![
            ("title", "VP Marketing"),
            ("title", "Student"),
            ("title", ""),
            ("employees", "250"),
            ("employees", "5000"),
            ("employees", "1e999"),
            ("country", "US"),
            ("owner_id", "rep-1"),
            ("owner_id", ""),
            ("url", "https://x/pricing"),
            ("email", "x@rivalco.com"),
        ]),
        0..4,
    );
    prop_oneof![
        9 => (
            prop::sample::select(vec!["a", "b", "c", "d"]),
            0..12u8,
            any_time(),
            prop::sample::select(types),
            attrs,
        )
            .prop_map(|(lead, id, t, (s, ty), attrs)| {
                Op::Event(ev(&format!("e{id}"), lead, t, s, ty, &attrs))
            }),
        1 => any_time().prop_map(Op::Advance),
    ]
}

fn example_config() -> String {
    std::fs::read_to_string(common::examples_dir().join("config.toml")).expect("example config")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    /// The engine never panics (extreme times included) and its records stay consistent.
    #[test]
    fn engine_never_panics_and_records_are_consistent(ops in prop::collection::vec(any_op(), 0..120)) {
        let mut st = state(&example_config());
        let mut out: Vec<Output> = Vec::new();
        let mut events = 0u64;
        for op in &ops {
            match op {
                Op::Event(e) => {
                    events += 1;
                    st.apply(e, &mut out);
                }
                Op::Advance(t) => st.advance(*t, &mut out),
            }
        }
        prop_assert_eq!(st.stats().events, events);
        let mut ids = HashSet::new();
        let mut per_lead_n = std::collections::HashMap::new();
        for r in &out {
            match r {
                Output::Transition(t) => {
                    prop_assert!(ids.insert(t.transition_id.clone()), "duplicate {}", t.transition_id);
                    prop_assert_ne!(t.from_stage, t.to_stage);
                    let n = per_lead_n.entry(t.lead_key.clone()).or_insert(0u32);
                    *n += 1;
                    prop_assert_eq!(&t.transition_id, &format!("{}/t/{}", t.lead_key, n));
                    prop_assert!((-100.0..=400.0).contains(&t.engagement));
                }
                Output::Sla(s) => {
                    prop_assert!(ids.insert(s.sla_event_id.clone()), "duplicate {}", s.sla_event_id);
                    prop_assert!(s.deadline >= s.started_at);
                }
            }
        }
        prop_assert_eq!(st.stage_counts().iter().sum::<u64>(), st.lead_count() as u64);
        let clocks: usize = ["a", "b", "c", "d"].iter().filter_map(|k| st.lead(k)).map(|l| l.clocks().len()).sum();
        prop_assert_eq!(st.open_clocks(), clocks as u64);
        for key in ["a", "b", "c", "d"] {
            if let Some(lead) = st.lead(key) {
                let stage_total = st.stage_counts()[lead.stage.index()];
                prop_assert!(stage_total >= 1);
                prop_assert!((-100.0..=400.0).contains(&lead.engagement.value));
                prop_assert!(lead.clocks().len() <= st.rules().sla.len());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    /// Snapshot at any point, restore into a fresh state, continue: the records and counters
    /// are exactly those of an uninterrupted run (what recovery relies on).
    #[test]
    fn snapshot_restore_anywhere_changes_nothing(
        ops in prop::collection::vec(any_op(), 0..100),
        split in any::<prop::sample::Index>(),
    ) {
        let config = example_config();
        let apply = |st: &mut leadflow::engine::PartitionState, ops: &[Op], out: &mut Vec<Output>| {
            for op in ops {
                match op {
                    Op::Event(e) => { st.apply(e, out); }
                    Op::Advance(t) => st.advance(*t, out),
                }
            }
        };
        let k = if ops.is_empty() { 0 } else { split.index(ops.len() + 1) };
        let mut whole = state(&config);
        let mut expected = Vec::new();
        apply(&mut whole, &ops, &mut expected);

        let mut first = state(&config);
        let mut actual = Vec::new();
        apply(&mut first, &ops[..k], &mut actual);
        let bytes = first.encode_snapshot(k as i64);
        let rules = std::sync::Arc::new(first.rules().clone());
        let (mut resumed, pos) = leadflow::engine::PartitionState::decode_snapshot(rules, &bytes)
            .expect("own snapshot decodes");
        prop_assert_eq!(pos, k as i64);
        apply(&mut resumed, &ops[k..], &mut actual);
        prop_assert_eq!(actual, expected);
        prop_assert_eq!(resumed.stats(), whole.stats());
        prop_assert_eq!(resumed.pending_timers(), whole.pending_timers());
    }

    /// A snapshot begun at any point and encoded in slices of any size while the rest of the
    /// stream is applied (evictions included) is byte for byte the state at its start: what
    /// lets checkpoints run beside the fold.
    #[test]
    fn a_snapshot_in_progress_is_the_state_at_its_start(
        ops in prop::collection::vec(any_op(), 0..100),
        split in any::<prop::sample::Index>(),
        step in 1usize..4,
    ) {
        let config = format!(
            "{}\n[limits]\nevict_inactive_after = \"2d\"\nevict_terminal_after = \"1d\"\n",
            example_config()
        );
        let k = if ops.is_empty() { 0 } else { split.index(ops.len() + 1) };
        let mut st = state(&config);
        let mut out = Vec::new();
        let apply = |st: &mut leadflow::engine::PartitionState, op: &Op, out: &mut Vec<Output>| {
            match op {
                Op::Event(e) => { st.apply(e, out); }
                Op::Advance(t) => st.advance(*t, out),
            }
        };
        for op in &ops[..k] {
            apply(&mut st, op, &mut out);
        }
        let expected = st.encode_snapshot(k as i64);
        st.begin_snapshot(k as i64);
        let mut done = None;
        for op in &ops[k..] {
            apply(&mut st, op, &mut out);
            if done.is_none() {
                done = st.snapshot_step(step);
            }
        }
        while done.is_none() {
            done = st.snapshot_step(step);
        }
        let (pos, chunks) = done.expect("complete");
        prop_assert_eq!(pos, k as i64);
        prop_assert!(chunks.concat() == expected, "differs from the state at its start");
    }

    /// Arbitrary bytes never panic the snapshot decoder.
    #[test]
    fn snapshot_decoder_survives_garbage(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let rules = std::sync::Arc::new(state(&example_config()).rules().clone());
        let mut framed = b"LFSN\x02\x00".to_vec();
        framed.extend_from_slice(&bytes);
        // With a valid checksum, so the parser itself is exercised.
        let crc = crc32fast::hash(&framed);
        framed.extend_from_slice(&crc.to_le_bytes());
        let _ = leadflow::engine::PartitionState::decode_snapshot(rules.clone(), &framed);
        let _ = leadflow::engine::PartitionState::decode_snapshot(rules, &bytes);
    }
}
