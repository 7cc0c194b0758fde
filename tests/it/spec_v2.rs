//! SPEC v2 (§9), rule by rule, with hand-computed records: clocks on stage `new`, late events
//! across a reset and before the current stage, per-value cooldowns, business-time response,
//! allowed lateness, the duplicate window, lead key normalization, the future-time guard;
//! the Avro schema evolution and snapshots written by the v1 build.

use crate::common;

use std::sync::Arc;

use common::{ev, run, slas, state, transitions, DAY, H};
use leadflow::config::Settings;
use leadflow::engine::PartitionState;
use leadflow::model::event::{EventFields, Invalid, LeadKeyMode};
use leadflow::model::records::{Output, SlaKind, SlaRecord};

/// 2026-12-01 10:00 UTC.
const T10: i64 = 1_796_119_200_000;
const MIN: i64 = 60_000;

fn config(extra: &str) -> String {
    format!(
        r#"
[[scoring.engagement]]
name = "webinar"
source = "web"
type = "webinar_attended"
points = 30

[[scoring.engagement]]
name = "whitepaper"
source = "web"
type = "content_download"
points = 20
cooldown = "30d"
cooldown_key = "asset"

[funnel]
mql_threshold = 100
fast_track = [ {{ source = "web", type = "demo_request" }} ]
{extra}
"#
    )
}

fn trace(out: &[Output]) -> Vec<String> {
    out.iter()
        .map(|o| match o {
            Output::Transition(t) => format!(
                "T:{}:{}>{}@{}:{}",
                t.lead_key,
                t.from_stage,
                t.to_stage,
                (t.occurred_at - T10) / MIN,
                t.reason
            ),
            Output::Sla(s) => format!(
                "S:{}:{}:{}@{}",
                s.lead_key,
                s.policy,
                s.kind.as_str(),
                (s.at - T10) / MIN
            ),
        })
        .collect()
}

/// Issue 13, item 1: "touch every new lead within 1 business hour" starts at creation.
#[test]
fn speed_to_lead_clocks_start_when_a_lead_is_created() {
    let mut st = state(&config(
        r#"
[[sla]]
name = "new_lead_touch"
stage = "new"
within = "1h"
warn_before = "30m"
until = [ { source = "crm", type = "sales_activity" } ]
"#,
    ));
    let out = run(
        &mut st,
        &[
            ev("a1", "a@x.io", T10, "web", "form_submit", &[]),
            ev("b1", "b@x.io", T10, "web", "form_submit", &[]),
            // Created by the touch itself: its own clock is met at once.
            ev("d1", "d@x.io", T10 + 5 * MIN, "crm", "sales_activity", &[]),
            ev("a2", "a@x.io", T10 + 20 * MIN, "crm", "sales_activity", &[]),
            // Moves the stream clock past b's warning (10:30) and breach (11:00).
            ev("c1", "c@x.io", T10 + 61 * MIN, "web", "page_view", &[]),
        ],
    );
    assert_eq!(
        trace(&out),
        [
            "S:d@x.io:new_lead_touch:met@5",
            "S:a@x.io:new_lead_touch:met@20",
            "S:b@x.io:new_lead_touch:warning@30",
            "S:b@x.io:new_lead_touch:breach@60",
        ]
    );
    let s = slas(&out);
    let a = s[1];
    assert_eq!(a.sla_event_id, "a@x.io/s/new_lead_touch/1/met");
    assert_eq!(a.stage.as_str(), "new");
    assert_eq!((a.started_at, a.deadline), (T10, T10 + H));
    assert_eq!(a.response_ms, Some(1_200_000));
    assert_eq!(a.response_business_ms, Some(1_200_000), "no calendar");
    assert_eq!(a.on_time, Some(true));
    assert_eq!(s[0].response_ms, Some(0));
    assert_eq!(s[2].response_ms, None);
    assert_eq!(s[3].deadline, T10 + H);
    // b's clock runs on after its breach (it may still be met); c's started at 11:01.
    assert_eq!(st.open_clocks(), 2);
}

/// Issue 13, item 2, both cases.
#[test]
fn late_events_neither_score_across_a_reset_nor_qualify_before_the_stage_began() {
    let sla = r#"
[[sla]]
name = "follow_up"
stage = "mql"
within = "4h"
until = "stage_exit"
"#;
    let mut st = state(&config(sla));
    let out = run(
        &mut st,
        &[
            ev("l1", "l@x.io", T10 - 60 * MIN, "web", "demo_request", &[]),
            ev("l2", "l@x.io", T10 + 60 * MIN, "crm", "sales_rejected", &[]),
            // Arrives after the 11:00 rejection (recycle with reset), happened at 10:30.
            ev(
                "l3",
                "l@x.io",
                T10 + 30 * MIN,
                "web",
                "webinar_attended",
                &[],
            ),
            ev(
                "l4",
                "l@x.io",
                T10 + 120 * MIN,
                "web",
                "webinar_attended",
                &[],
            ),
            ev(
                "l5",
                "l@x.io",
                T10 + 121 * MIN,
                "web",
                "webinar_attended",
                &[],
            ),
            ev(
                "l6",
                "l@x.io",
                T10 + 122 * MIN,
                "web",
                "webinar_attended",
                &[],
            ),
            ev("l7", "l@x.io", T10 + 180 * MIN, "web", "demo_request", &[]),
        ],
    );
    // v1 gave 120 at 12:02 and a re-qualification by score then.
    assert_eq!(
        trace(&out)
            .into_iter()
            .filter(|t| t.starts_with("T:"))
            .collect::<Vec<_>>(),
        [
            "T:l@x.io:new>mql@-60:fast_track",
            "T:l@x.io:mql>recycled@60:sales_rejected",
            "T:l@x.io:recycled>mql@180:fast_track",
        ]
    );
    assert_eq!(transitions(&out)[2].engagement, 90.0);

    // A demo request made at 10:30, while already an MQL, that arrives after the rejection.
    let mut st = state(&config(sla));
    let out = run(
        &mut st,
        &[
            ev("m1", "m@x.io", T10 - 60 * MIN, "web", "demo_request", &[]),
            ev("m2", "m@x.io", T10 + 60 * MIN, "crm", "sales_rejected", &[]),
            ev("m3", "m@x.io", T10 + 30 * MIN, "web", "demo_request", &[]),
            // Much later: nothing else is due (v1 started a clock at 10:30 that breached).
            ev("z1", "z@x.io", T10 + 2 * DAY, "web", "page_view", &[]),
        ],
    );
    assert_eq!(
        trace(&out),
        [
            "T:m@x.io:new>mql@-60:fast_track",
            "T:m@x.io:mql>recycled@60:sales_rejected",
            "S:m@x.io:follow_up:met@60",
        ]
    );

    // A late download before the reset touches no cooldown either.
    let mut st = state(&config(""));
    run(
        &mut st,
        &[
            ev("n1", "n@x.io", T10 - 60 * MIN, "web", "demo_request", &[]),
            ev("n2", "n@x.io", T10 + 60 * MIN, "crm", "sales_rejected", &[]),
            ev(
                "n3",
                "n@x.io",
                T10 + 30 * MIN,
                "web",
                "content_download",
                &[("asset", "x")],
            ),
            ev(
                "n4",
                "n@x.io",
                T10 + 120 * MIN,
                "web",
                "content_download",
                &[("asset", "x")],
            ),
        ],
    );
    assert_eq!(st.lead("n@x.io").expect("lead").engagement.value, 20.0);
}

/// Issue 13, item 3 and SPEC §4: "each whitepaper scores once a month".
#[test]
fn cooldowns_are_kept_per_attribute_value() {
    let mut st = state(&config(""));
    run(
        &mut st,
        &[
            ev(
                "1",
                "a@x.io",
                T10,
                "web",
                "content_download",
                &[("asset", "roi")],
            ),
            ev(
                "2",
                "a@x.io",
                T10 + 3 * DAY,
                "web",
                "content_download",
                &[("asset", "roi")],
            ),
            ev(
                "3",
                "a@x.io",
                T10 + 3 * DAY + 5 * MIN,
                "web",
                "content_download",
                &[("asset", "case")],
            ),
            // Without the attribute: the empty value, scored once.
            ev("4", "a@x.io", T10 + 4 * DAY, "web", "content_download", &[]),
            ev("5", "a@x.io", T10 + 5 * DAY, "web", "content_download", &[]),
            // 30 days after the first roi download (not within it): scores again.
            ev(
                "6",
                "a@x.io",
                T10 + 30 * DAY,
                "web",
                "content_download",
                &[("asset", "roi")],
            ),
        ],
    );
    // roi, case, empty, roi again: 4 x 20 (no decay configured).
    assert_eq!(st.lead("a@x.io").expect("lead").engagement.value, 80.0);

    // At most 64 values per rule and lead: the 65th forgets the one that scored longest ago.
    let mut st = state(&config(""));
    let mut events: Vec<_> = (0..65)
        .map(|i| {
            ev(
                &format!("e{i}"),
                "b@x.io",
                T10 + i * MIN,
                "web",
                "content_download",
                &[("asset", &format!("a{i}"))],
            )
        })
        .collect();
    // a0 was forgotten by a64: it scores again within its month; a1 was not: it does not.
    events.push(ev(
        "again0",
        "b@x.io",
        T10 + 100 * MIN,
        "web",
        "content_download",
        &[("asset", "a0")],
    ));
    events.push(ev(
        "again2",
        "b@x.io",
        T10 + 101 * MIN,
        "web",
        "content_download",
        &[("asset", "a2")],
    ));
    run(&mut st, &events);
    assert_eq!(
        st.lead("b@x.io").expect("lead").engagement.value,
        66.0 * 20.0
    );
}

/// Issue 13, item 4: a lead that qualifies Friday 16:55 and is accepted Monday 09:05 (New
/// York) was answered in 10 business minutes of a 64 h 10 min wait.
#[test]
fn met_records_carry_the_business_time_of_the_response() {
    let mut st = state(&config(
        r#"
[[sla]]
name = "follow_up"
stage = "mql"
within = "4h"
until = "stage_exit"
calendar = "ny"

[calendars.ny]
timezone = "America/New_York"
hours = { mon = "09:00-17:00", tue = "09:00-17:00", wed = "09:00-17:00", thu = "09:00-17:00", fri = "09:00-17:00" }
"#,
    ));
    let friday = 1_795_211_700_000; // 2026-11-20 16:55 EST
    let monday = 1_795_442_700_000; // 2026-11-23 09:05 EST
    let out = run(
        &mut st,
        &[
            ev("1", "a@x.io", friday, "web", "demo_request", &[]),
            ev("2", "a@x.io", monday, "crm", "sales_accepted", &[]),
        ],
    );
    let met = slas(&out)[0];
    assert_eq!(met.kind, SlaKind::Met);
    assert_eq!(met.response_ms, Some(64 * H + 10 * MIN));
    assert_eq!(met.response_business_ms, Some(10 * MIN));
    // 5 business minutes on Friday, 3 h 55 on Monday: due 12:55 EST.
    assert_eq!(met.deadline, 1_795_456_500_000);
    assert_eq!(met.on_time, Some(true));
}

/// Issue 13, item 5: a call at 10:40 that arrives after 11:05 meets the clock before its 11:00
/// breach is announced, when 30 minutes of lateness are allowed.
#[test]
fn allowed_lateness_lets_a_late_event_meet_the_clock_first() {
    let sla = r#"
[[sla]]
name = "call"
stage = "mql"
within = "1h"
until = [ { source = "crm", type = "sales_activity" } ]
"#;
    let events = |st: &mut PartitionState| {
        run(
            st,
            &[
                ev("a1", "a@x.io", T10, "web", "demo_request", &[]),
                ev("b1", "b@x.io", T10, "web", "demo_request", &[]),
                ev("z1", "z@x.io", T10 + 65 * MIN, "web", "page_view", &[]),
                ev("a2", "a@x.io", T10 + 40 * MIN, "crm", "sales_activity", &[]),
                ev("z2", "z@x.io", T10 + 91 * MIN, "web", "page_view", &[]),
            ],
        )
    };
    let mut st = state(&config(&format!(
        "{sla}\n[clock]\nallowed_lateness = \"30m\"\n"
    )));
    let out = events(&mut st);
    assert_eq!(
        trace(&out)
            .into_iter()
            .filter(|t| t.starts_with("S:"))
            .collect::<Vec<_>>(),
        // b's breach, due 11:00, fires once the clock passes 11:30, with `at` 11:00.
        ["S:a@x.io:call:met@40", "S:b@x.io:call:breach@60"]
    );
    // Without lateness both breach at 11:05, before a's call arrives.
    let mut st = state(&config(sla));
    let out = events(&mut st);
    assert_eq!(
        trace(&out)
            .into_iter()
            .filter(|t| t.starts_with("S:"))
            .collect::<Vec<_>>(),
        [
            "S:a@x.io:call:breach@60",
            "S:b@x.io:call:breach@60",
            "S:a@x.io:call:met@40"
        ]
    );
}

/// Issue 13, item 6: a backfill re-sends ids from further back than 8 events.
#[test]
fn the_duplicate_window_is_configurable() {
    let events: Vec<_> = (0..12)
        .map(|i| {
            ev(
                &format!("e{i}"),
                "a@x.io",
                T10 + i * MIN,
                "web",
                "page_view",
                &[],
            )
        })
        .chain([ev("e0", "a@x.io", T10, "web", "page_view", &[])])
        .collect();
    for (window, duplicates) in [(8, 0), (20, 1), (1, 0)] {
        let mut st = state(&config(&format!("[dedupe]\nrecent_ids = {window}\n")));
        run(&mut st, &events);
        assert_eq!(st.stats().duplicates, duplicates, "window {window}");
    }
    let mut st = state(&config("[dedupe]\nrecent_ids = 1\n"));
    run(
        &mut st,
        &[
            ev("x", "b@x.io", T10, "web", "page_view", &[]),
            ev("x", "b@x.io", T10, "web", "page_view", &[]),
        ],
    );
    assert_eq!(st.stats().duplicates, 1, "the last id is always remembered");
}

/// Issue 13, item 7: `Lead1@Example.com` and `lead1@example.com` are one person.
#[test]
fn lead_keys_can_be_normalized() {
    let settings =
        Settings::from_toml(&config("[input]\nlead_key = \"lowercase\"\n")).expect("config");
    let limits = &settings.rules.limits;
    assert_eq!(limits.lead_key, LeadKeyMode::Lowercase);
    let admit = |key: &str| {
        EventFields::from_parts("e", key, T10, "web", "page_view", &[])
            .validate()
            .and_then(|e| e.admit(limits, None))
    };
    let a = admit(" Lead1@Example.com ").expect("valid");
    assert_eq!(a.lead_key, "lead1@example.com");
    assert_eq!(
        admit("ÅSA@Example.se").expect("valid").lead_key,
        "åsa@example.se"
    );
    assert_eq!(
        admit("   ").map(|_| ()),
        Err(Invalid::EmptyField("lead_key"))
    );
    // The limit applies to the key as normalized: padding, and characters whose lowercase
    // is shorter (U+212A KELVIN SIGN, 3 bytes, lowercases to "k").
    let padded = format!("{}{}", "a".repeat(250), " ".repeat(30));
    assert_eq!(admit(&padded).expect("valid").lead_key.len(), 250);
    let kelvin = "\u{212A}".repeat(86);
    assert_eq!(kelvin.len(), 258);
    assert_eq!(admit(&kelvin).expect("valid").lead_key, "k".repeat(86));
    // And the other way: 128 x U+0130 is 256 bytes, 384 once lowercased.
    let dotted = "\u{130}".repeat(128);
    assert_eq!(
        admit(&dotted).map(|_| ()),
        Err(Invalid::LeadKeyTooLong(384))
    );
    let exact = Settings::from_toml(&config("")).expect("config");
    let too_long = EventFields::from_parts("e", &padded, T10, "web", "page_view", &[])
        .validate()
        .and_then(|e| e.admit(&exact.rules.limits, None));
    assert_eq!(too_long.map(|_| ()), Err(Invalid::LeadKeyTooLong(280)));

    let mut st = PartitionState::new(Arc::clone(&settings.rules));
    let mut out = Vec::new();
    for (id, key) in [("1", "Lead1@Example.com"), ("2", "lead1@example.com")] {
        let e = EventFields::from_parts(id, key, T10, "web", "webinar_attended", &[])
            .validate()
            .and_then(|e| e.admit(limits, None))
            .expect("valid");
        st.apply(&e, &mut out);
    }
    assert_eq!(st.lead_count(), 1);
    assert_eq!(
        st.lead("lead1@example.com")
            .expect("one lead")
            .engagement
            .value,
        60.0
    );
}

/// Issue 13, item 8: one event stamped in microseconds fired a warning and a breach for a
/// lead that sales accepted 20 minutes after its MQL. `replay --now` refuses it as ingest does.
#[test]
fn an_event_far_in_the_future_is_invalid_with_now() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        config(
            r#"
[[sla]]
name = "follow_up"
stage = "mql"
within = "4h"
warn_before = "1h"
until = "stage_exit"
"#,
        ),
    )
    .expect("config");
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        format!(
            "{}\n{}\n{}\n",
            r#"{"event_id":"p1","lead_key":"p@x.io","occurred_at":1796119200000,"source":"web","type":"demo_request"}"#,
            r#"{"event_id":"q1","lead_key":"q@x.io","occurred_at":1796033000000000,"source":"web","type":"page_view"}"#,
            r#"{"event_id":"p2","lead_key":"p@x.io","occurred_at":1796120400000,"source":"crm","type":"sales_accepted"}"#,
        ),
    )
    .expect("input");
    let replay = |extra: &[&str]| {
        let mut args = vec![
            "replay",
            "--config",
            cfg.to_str().expect("utf-8"),
            input.to_str().expect("utf-8"),
        ];
        args.extend_from_slice(extra);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_leadflow"))
            .args(&args)
            .output()
            .expect("replay runs");
        assert!(out.status.success());
        let kinds: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json");
                format!(
                    "{}:{}",
                    v["record"].as_str().unwrap_or(""),
                    v["kind"].as_str().or(v["to_stage"].as_str()).unwrap_or("")
                )
            })
            .collect();
        (kinds, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    // Without --now (v1): the stray event moves the clock and everything fires.
    let (kinds, _) = replay(&[]);
    assert_eq!(
        kinds,
        [
            "transition:mql",
            "sla:warning",
            "sla:breach",
            "transition:sal",
            "sla:met"
        ]
    );
    // With --now an hour after the MQL: line 2 is invalid and the lead is accepted on time.
    let (kinds, stderr) = replay(&["--now", "1796122800000"]);
    assert_eq!(kinds, ["transition:mql", "transition:sal", "sla:met"]);
    assert!(
        stderr.contains("line 2: occurred_at 1796033000000000 is"),
        "{stderr}"
    );
    assert!(stderr.contains("limits.max_future"), "{stderr}");
}

#[test]
fn new_settings_are_validated() {
    let err = |extra: &str| {
        Settings::from_toml(&config(extra))
            .map(|_| ())
            .expect_err("refused")
            .to_string()
    };
    let msg = Settings::from_toml(&config("").replace("cooldown = \"30d\"\n", ""))
        .map(|_| ())
        .expect_err("a key without a cooldown")
        .to_string();
    assert!(
        msg.contains("scoring.engagement[1].cooldown_key")
            && msg.contains("\"whitepaper\"")
            && msg.contains("only with a cooldown"),
        "{msg}"
    );
    for (extra, key) in [
        ("[dedupe]\nrecent_ids = 0\n", "dedupe.recent_ids"),
        ("[dedupe]\nrecent_ids = 1025\n", "dedupe.recent_ids"),
        ("[input]\nlead_key = \"upper\"\n", "input.lead_key"),
        (
            "[clock]\nallowed_lateness = \"soon\"\n",
            "clock.allowed_lateness",
        ),
        ("[limits]\nmax_future = \"tomorrow\"\n", "limits.max_future"),
        // Whole numbers are not rounded or parsed from text.
        ("[dedupe]\nrecent_ids = 1.5\n", "dedupe.recent_ids"),
        ("[dedupe]\nrecent_ids = \"8\"\n", "dedupe.recent_ids"),
        ("[limits]\nmax_attributes = 10.5\n", "limits.max_attributes"),
    ] {
        let m = err(extra);
        assert!(m.contains(key), "{extra}: {m}");
        if extra.contains("1.5") || extra.contains("10.5") {
            assert!(m.contains(".5") && m.contains("whole number"), "{m}");
        }
    }
    let s = Settings::from_toml(&config("")).expect("defaults");
    assert_eq!(s.rules.dedupe_ids, 8);
    assert_eq!(s.rules.allowed_lateness_ms, 0);
    assert_eq!(s.rules.limits.max_future_ms, DAY);
    assert_eq!(s.rules.limits.lead_key, LeadKeyMode::Exact);
}

/// SPEC §9: `response_business_ms` is a nullable long with default null, so readers of the
/// earlier schema and of the new one both decode records written either way.
#[test]
fn the_sla_schema_evolves_compatibly() {
    use apache_avro::{from_avro_datum, to_avro_datum, types::Value, Schema};
    let new_text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/sla_record.avsc"),
    )
    .expect("schema");
    let new = Schema::parse_str(&new_text).expect("new schema");
    let mut old_json: serde_json::Value = serde_json::from_str(&new_text).expect("json");
    old_json["fields"]
        .as_array_mut()
        .expect("fields")
        .retain(|f| f["name"] != "response_business_ms");
    let old = Schema::parse_str(&old_json.to_string()).expect("old schema");
    let rec = Output::Sla(SlaRecord {
        sla_event_id: "a/s/p/1/met".into(),
        lead_key: "a".into(),
        policy: "p".into(),
        kind: SlaKind::Met,
        stage: leadflow::model::funnel::Stage::Mql,
        started_at: 1,
        deadline: 2,
        at: 3,
        response_ms: Some(2),
        response_business_ms: Some(1),
        on_time: Some(false),
        owner_id: None,
    });
    let bytes = leadflow::codec::avro::encode_output(&rec);
    // A consumer still on the earlier schema.
    let read = from_avro_datum(&new, &mut &bytes[..], Some(&old)).expect("old reader");
    let Value::Record(fields) = read else {
        panic!("a record")
    };
    assert!(fields.iter().all(|(n, _)| n != "response_business_ms"));
    assert!(fields
        .iter()
        .any(|(n, v)| n == "response_ms" && *v == Value::Union(1, Box::new(Value::Long(2)))));
    // A record written by a v1 build, read with the new schema: the field is null.
    let Value::Record(mut v1) = from_avro_datum(&new, &mut &bytes[..], Some(&old)).expect("decode")
    else {
        panic!("a record")
    };
    v1.retain(|(n, _)| n != "response_business_ms");
    let written_by_v1 = to_avro_datum(&old, Value::Record(v1)).expect("v1 bytes");
    let back = from_avro_datum(&old, &mut &written_by_v1[..], Some(&new)).expect("new reader");
    let Value::Record(fields) = back else {
        panic!("a record")
    };
    assert!(fields
        .iter()
        .any(|(n, v)| n == "response_business_ms" && *v == Value::Union(0, Box::new(Value::Null))));
}

/// A snapshot written by the v1 build (format 3, `leadflow demo` on examples/config.toml)
/// restores: its leads get creation time 0 (no event is older: v1's rule), their last reset
/// from their transitions, the 8-id window; and it re-encodes as the current format
/// losslessly.
#[test]
fn a_snapshot_from_the_v1_build_restores() {
    let bytes = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/snapshot-v3-demo-p0.lfsn"),
    )
    .expect("fixture");
    assert_eq!(&bytes[4..6], &[3, 0], "written as format 3");
    let rules = Settings::from_toml(include_str!("../../examples/config.toml"))
        .expect("config")
        .rules;
    let (st, position) =
        PartitionState::decode_snapshot(Arc::clone(&rules), &bytes).expect("restores");
    assert_eq!(position, 270, "the file's name says so");
    assert!(st.lead_count() > 5, "{}", st.lead_count());
    let now = st.encode_snapshot(position);
    assert_eq!(&now[4..6], &[6, 0], "written as today's format");
    let (again, _) = PartitionState::decode_snapshot(Arc::clone(&rules), &now).expect("v6");
    assert_eq!(again.encode_snapshot(position), now, "lossless");
    assert_eq!(again.lead_count(), st.lead_count());
    assert_eq!(again.pending_timers(), st.pending_timers());
}

/// A format-4 snapshot (written before leads remembered their MQL, by the build before it,
/// over the report test's history) restores: a lead whose MQL is among its recent transitions
/// gets that time and its grade now; a sales-sourced lead has none. Folding the same history
/// from scratch gives the same marks (here the grades did not change after the MQLs).
#[test]
fn a_format_4_snapshot_restores_mql_marks_from_its_transitions() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let bytes = std::fs::read(dir.join("snapshot-v4-report-p0.lfsn")).expect("fixture");
    assert_eq!(&bytes[4..6], &[4, 0], "written as format 4");
    let rules = Settings::from_toml(
        &std::fs::read_to_string(dir.join("report/config.toml")).expect("config"),
    )
    .expect("config")
    .rules;
    let (old, position) =
        PartitionState::decode_snapshot(Arc::clone(&rules), &bytes).expect("restores");
    assert_eq!(position, 70);
    let mut fresh = PartitionState::new(Arc::clone(&rules));
    let mut out = Vec::new();
    let history = std::fs::read_to_string(dir.join("report/history.jsonl")).expect("history");
    for line in history.lines() {
        fresh.apply(
            &leadflow::codec::json::decode_event(line.as_bytes()).expect("event"),
            &mut out,
        );
    }
    // l03: MQL on 2026-11-03, rejected, MQL again on 2026-12-01 10:00Z at grade B.
    let l03 = old
        .lead("l03@example.com")
        .expect("l03")
        .mql()
        .expect("an MQL");
    assert_eq!(l03.at, 1_796_119_200_000);
    assert_eq!(rules.grade_name(l03.grade), "B");
    assert!(old.lead("l07@example.com").expect("l07").mql().is_none());
    for key in [
        "l01", "l02", "l03", "l04", "l05", "l06", "l07", "l10", "l11", "l12",
    ] {
        let key = format!("{key}@example.com");
        assert_eq!(
            old.lead(&key).and_then(|l| l.mql()),
            fresh.lead(&key).and_then(|l| l.mql()),
            "{key}"
        );
    }
}

/// Through Kafka: ingest applies the future-time guard against its clock and normalizes lead
/// keys (the payload's and, for `ingest.key_mismatch`, the message key's); `/leads/{key}`
/// finds the lead under any spelling.
#[test]
fn ingest_guards_future_times_and_normalizes_keys() {
    use common::kafka::{send, wait_until, Running, TestBroker};
    use std::time::Duration;
    let broker = TestBroker::start("v2-ingest", 1);
    let snaps = tempfile::tempdir().expect("tempdir");
    let config = broker.config(
        snaps.path(),
        "[formats]\nweb = \"json\"\n[run]\ntick_interval = \"0s\"\n[input]\nlead_key = \"lowercase\"\n\
         [ingest]\nkey_mismatch = \"dead_letter\"\n",
    );
    let running = Running::start(&config);
    let now = leadflow::metrics::now_ms();
    let line = |id: &str, key: &str, t: i64| {
        format!(
            r#"{{"event_id":"{id}","lead_key":"{key}","occurred_at":{t},"source":"web","type":"webinar_attended"}}"#
        )
    };
    let producer = broker.producer();
    let web = &broker.topics.web;
    // Two days ahead of ingest's clock (default limits.max_future: 1 day).
    send(
        &producer,
        web,
        Some(b"ana@acme.io"),
        line("f1", "ana@acme.io", now + 2 * DAY).as_bytes(),
    );
    // The same lead in other spellings: one lead; the key matches once normalized.
    send(
        &producer,
        web,
        Some(b"Ana@Acme.IO"),
        line("a1", " Ana@Acme.IO", now - H).as_bytes(),
    );
    send(
        &producer,
        web,
        Some(b"ana@acme.io"),
        line("a2", "ANA@ACME.IO", now - H + 1).as_bytes(),
    );
    // A key that is another lead even once normalized.
    send(
        &producer,
        web,
        Some(b"bo@beta.io"),
        line("b1", "ana@acme.io", now - H + 2).as_bytes(),
    );
    wait_until(
        Duration::from_secs(60),
        "2 forwarded, 2 dead letters",
        || broker.records(&broker.topics.internal) == 2 && broker.records(&broker.topics.dlq) == 2,
    );
    let dlq = broker.read_all(&broker.topics.dlq);
    let codes: Vec<&str> = dlq
        .iter()
        .map(|r| r.headers["lf-error-code"].as_str())
        .collect();
    assert_eq!(codes, ["future_time", "key_mismatch"]);
    assert!(dlq[0].headers["lf-error"].contains("limits.max_future"));
    let internal = broker.read_all(&broker.topics.internal);
    assert!(internal
        .iter()
        .all(|r| r.key.as_deref() == Some(b"ana@acme.io".as_slice())));
    wait_until(Duration::from_secs(60), "one lead with 60 points", || {
        running
            .stats
            .view
            .explain("ANA@acme.io", None)
            .is_ok_and(|x| x.lead_key == "ana@acme.io" && (x.engagement - 60.0).abs() < 1e-6)
    });
    assert_eq!(running.stats.metrics.key_mismatch.get(), 1);
    running.stop().expect("clean stop");
}
