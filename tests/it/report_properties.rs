//! Properties of `leadflow report` over generated histories: every MQL has exactly one
//! outcome, and every breakdown splits the MQLs without losing or adding one.

use std::io::Cursor;

use leadflow::analytics::{self, Definition, History, Options};
use leadflow::config::Settings;
use leadflow::gen::{self, GenSpec};
use proptest::prelude::*;

const CONFIG: &str = include_str!("../../examples/config.toml");

fn history(seed: u64, leads: u64, events: u64) -> String {
    let mut out = String::new();
    for ev in gen::generate(&GenSpec {
        seed,
        leads,
        events,
        start_ms: 1_793_491_200_000,
        span_ms: 60 * 86_400_000,
    }) {
        out.push_str(&gen::to_json(&ev).to_string());
        out.push('\n');
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn outcomes_and_breakdowns_add_up_to_the_mqls(
        seed in 0u64..10_000,
        leads in 5u64..300,
        threshold in 20u32..200,
        horizon_days in 1i64..120,
    ) {
        let lines = history(seed, leads, leads * 8);
        let base = Settings::from_toml(CONFIG).expect("config");
        let swept = Settings::with_overrides(
            CONFIG,
            Some(Default::default()),
            &[("funnel.mql_threshold".to_string(), f64::from(threshold))],
        )
        .expect("override");
        let mut settings = base.report.clone();
        settings.horizon_ms = horizon_days * 86_400_000;
        let report = analytics::run(
            vec![
                Definition { label: "base".into(), settings: base },
                Definition { label: "swept".into(), settings: swept },
            ],
            History::Lines(Cursor::new(lines)),
            &Options { settings, source: "generated".into() },
        )
        .expect("report");
        for d in &report.definitions {
            let f = &d.funnel;
            prop_assert_eq!(f.outcomes.total(), f.mqls);
            prop_assert!(f.reached.sal <= f.mqls && f.reached.sql <= f.mqls);
            prop_assert!(f.reached.won <= f.reached.sql && f.reached.sal_then_sql <= f.reached.sal);
            prop_assert_eq!(d.cohorts.iter().map(|c| c.mqls).sum::<u64>(), f.mqls);
            prop_assert!(f.younger_than_horizon <= f.mqls);
            let b = &d.breakdowns;
            for rows in [&b.grade, &b.reason, &b.engagement_band, &b.source, &b.owner] {
                prop_assert_eq!(rows.iter().map(|r| r.mqls).sum::<u64>(), f.mqls);
                prop_assert_eq!(rows.iter().map(|r| r.reached.won).sum::<u64>(), f.reached.won);
            }
            // Revenue paths split the deals; each policy's clocks split among the owners.
            prop_assert_eq!(d.revenue.by_path.iter().map(|m| m.deals).sum::<u64>(), d.revenue.deals);
            for p in &d.sla.policies {
                let owners: u64 = d.sla.owners.iter().filter(|o| o.policy == p.policy).map(|o| o.started).sum();
                prop_assert_eq!(owners, p.started);
                prop_assert!(p.met_on_time <= p.met && p.met <= p.started);
            }
            prop_assert!(d.quality.mql_leads <= f.leads_reached.get("mql"));
        }
    }
}
