//! The report as text tables for a terminal.

use std::fmt::Write;

use super::measures::{Conversion, DefinitionReport, Percentiles, Report, Row, Spread};

/// A rate as a percentage with one decimal, `-` when undefined.
pub fn pct(r: Option<f64>) -> String {
    r.map_or("-".to_string(), |r| format!("{:.1}%", r * 100.0))
}

/// A duration in the largest fitting unit: `45s`, `12m`, `3.5h`, `2.1d`; `-` when undefined.
pub fn dur(ms: Option<i64>) -> String {
    let Some(ms) = ms else { return "-".to_string() };
    let s = ms as f64 / 1000.0;
    if s < 60.0 {
        format!("{s:.0}s")
    } else if s < 3600.0 {
        format!("{:.0}m", s / 60.0)
    } else if s < 86_400.0 && ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else if s < 86_400.0 {
        format!("{:.1}h", s / 3600.0)
    } else if ms % 86_400_000 == 0 {
        format!("{}d", ms / 86_400_000)
    } else {
        format!("{:.1}d", s / 86_400.0)
    }
}

/// An amount with thousands separators and 2 decimals.
pub fn money(x: f64) -> String {
    let cents = (x * 100.0).round() as i128;
    let (whole, frac) = (cents.abs() / 100, cents.abs() % 100);
    let digits = whole.to_string();
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{}{grouped}.{frac:02}", if cents < 0 { "-" } else { "" })
}

/// A table with a header row; the first column left-aligned, the others right-aligned.
pub fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let cols = header.len();
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(cols) {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |out: &mut String, cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = width[i].saturating_sub(c.chars().count());
            if i == 0 {
                s.push_str(c);
                s.push_str(&" ".repeat(pad));
            } else {
                s.push_str("  ");
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            }
        }
        let _ = writeln!(out, "  {}", s.trim_end());
    };
    line(
        out,
        &header.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
    );
    for r in rows {
        line(out, r);
    }
}

fn conv_cells(c: &Conversion) -> Vec<String> {
    vec![pct(c.mql_to_sal), pct(c.mql_to_sql), pct(c.mql_to_won)]
}

fn breakdown(out: &mut String, title: &str, rows: &[Row]) {
    let _ = writeln!(out, "\nMQL conversion by {title}");
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut v = vec![r.key.clone(), r.mqls.to_string()];
            v.extend(conv_cells(&r.conversion));
            v
        })
        .collect();
    table(out, &[title, "MQLs", "→SAL", "→SQL", "→won"], &body);
}

fn spread_row(name: &str, s: &Spread) -> Vec<String> {
    vec![
        name.to_string(),
        s.count.to_string(),
        dur(s.median_ms),
        dur(s.p90_ms),
    ]
}

fn pcts(p: &Percentiles) -> [String; 2] {
    [dur(p.p50), dur(p.p95)]
}

/// Column heads of the SLA tables (an `owner` column first on owner rows).
pub const SLA_HEAD: [&str; 9] = [
    "policy",
    "started",
    "on time",
    "breaches",
    "on-time rate",
    "p50",
    "p95",
    "p50 business",
    "p95 business",
];

/// The cells of SLA rows (text and HTML share them); owner rows start with the owner.
pub fn sla_cells(rows: &[super::measures::SlaRow]) -> Vec<Vec<String>> {
    rows.iter()
        .map(|r| {
            let mut v: Vec<String> = r.owner.iter().cloned().collect();
            v.extend([
                r.policy.clone(),
                r.started.to_string(),
                r.met_on_time.to_string(),
                r.breaches.to_string(),
                pct(r.on_time_rate),
            ]);
            v.extend(pcts(&r.response_ms));
            v.extend(pcts(&r.response_business_ms));
            v
        })
        .collect()
}

/// Column heads of the comparison table.
pub const COMPARISON_HEAD: [&str; 10] = [
    "definition",
    "hash",
    "MQLs",
    "precision",
    "recall",
    "F1",
    "MQL→SQL median",
    "rejected",
    "SLA clocks",
    "breaches",
];

/// One row per definition; `mark` labels the best one.
pub fn comparison_cells(report: &Report, mark: impl Fn(&str, bool) -> String) -> Vec<Vec<String>> {
    let best = report.comparison.as_ref().and_then(|c| c.best);
    report
        .definitions
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let q = &d.quality;
            vec![
                mark(&d.label, best == Some(i)),
                d.definition.clone(),
                q.mqls.to_string(),
                pct(q.precision),
                pct(q.recall),
                q.f1.map_or("-".to_string(), |f| format!("{f:.3}")),
                dur(q.median_mql_to_sql_ms),
                pct(q.rejected_share),
                q.sla_clocks_started.to_string(),
                q.sla_breaches.to_string(),
            ]
        })
        .collect()
}

/// Renders one definition's sections.
fn definition(out: &mut String, d: &DefinitionReport, horizon: &str) {
    let f = &d.funnel;
    let _ = writeln!(out, "\nFunnel: leads that reached each stage");
    let order = [
        "new",
        "mql",
        "sal",
        "sql",
        "won",
        "lost",
        "recycled",
        "disqualified",
    ];
    table(
        out,
        &["stage", "leads"],
        &order
            .iter()
            .map(|s| vec![s.to_string(), f.leads_reached.get(s).to_string()])
            .collect::<Vec<_>>(),
    );
    let o = &f.outcomes;
    let _ = writeln!(
        out,
        "\nMQL outcomes within {horizon} ({} MQLs; {} younger than the horizon)",
        f.mqls, f.younger_than_horizon
    );
    table(
        out,
        &["outcome", "MQLs", "share"],
        &[
            ("won", o.won),
            ("lost", o.lost),
            ("sql (open opportunity)", o.sql),
            ("accepted (sal)", o.accepted),
            ("rejected by sales", o.rejected),
            ("disqualified", o.disqualified),
            ("recycled", o.recycled),
            ("still open", o.open),
        ]
        .iter()
        .map(|(k, n)| {
            vec![
                k.to_string(),
                n.to_string(),
                pct(super::measures::rate(*n, f.mqls)),
            ]
        })
        .collect::<Vec<_>>(),
    );
    let c = &f.conversion;
    let _ = writeln!(
        out,
        "\nConversion: MQL→SAL {}  MQL→SQL {}  MQL→won {}  SAL→SQL {}  SQL→won {}",
        pct(c.mql_to_sal),
        pct(c.mql_to_sql),
        pct(c.mql_to_won),
        pct(c.sal_to_sql),
        pct(c.sql_to_won)
    );
    let _ = writeln!(out, "\nCohorts by month of MQL");
    table(
        out,
        &["month", "MQLs", "→SAL", "→SQL", "→won", "young"],
        &d.cohorts
            .iter()
            .map(|k| {
                let mut v = vec![k.month.clone(), k.mqls.to_string()];
                v.extend(conv_cells(&k.conversion));
                v.push(k.younger_than_horizon.to_string());
                v
            })
            .collect::<Vec<_>>(),
    );
    let _ = writeln!(out, "\nVelocity");
    table(
        out,
        &["step", "count", "median", "p90"],
        &[
            spread_row("MQL→SAL", &d.velocity.mql_to_sal),
            spread_row("SAL→SQL", &d.velocity.sal_to_sql),
            spread_row("SQL→won", &d.velocity.sql_to_won),
        ],
    );
    let b = &d.breakdowns;
    breakdown(out, "grade at MQL", &b.grade);
    breakdown(out, "MQL reason", &b.reason);
    breakdown(out, "engagement at MQL", &b.engagement_band);
    breakdown(out, "source", &b.source);
    breakdown(out, "owner", &b.owner);

    let _ = writeln!(
        out,
        "\nSLA compliance by policy (response: clock time, then business time)"
    );
    table(out, &SLA_HEAD, &sla_cells(&d.sla.policies));
    let _ = writeln!(out, "\nSLA compliance by owner");
    let mut owner_head = vec!["owner"];
    owner_head.extend(SLA_HEAD);
    table(out, &owner_head, &sla_cells(&d.sla.owners));

    let r = &d.revenue;
    let _ = writeln!(
        out,
        "\nRevenue: {} from {} won deals ({} without amount, {} with an amount that does not parse)",
        money(r.total),
        r.deals,
        r.missing_amount,
        r.invalid_amount
    );
    for (title, rows) in [
        ("path", &r.by_path),
        ("grade at MQL", &r.by_grade),
        ("source", &r.by_source),
    ] {
        let _ = writeln!(out, "\nRevenue by {title}");
        table(
            out,
            &[title, "deals", "amount"],
            &rows
                .iter()
                .map(|m| {
                    // Paths read as words (marketing-qualified); sources and grades stay
                    // as they are in the data.
                    let key = if title == "path" {
                        m.key.replace('_', "-")
                    } else {
                        m.key.clone()
                    };
                    vec![key, m.deals.to_string(), money(m.amount)]
                })
                .collect::<Vec<_>>(),
        );
    }
    for (lead, text) in &r.invalid_examples {
        let _ = writeln!(out, "  amount not summed: lead {lead}: {text:?}");
    }
}

/// The whole report as text.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let h = &report.history;
    let horizon = dur(Some(report.settings.horizon_ms));
    let _ = writeln!(
        out,
        "leadflow report: {} ({} events, {} invalid; ends {}), horizon {horizon}, cohorts in {}",
        h.source,
        h.events,
        h.invalid,
        h.end_at.map_or("-".to_string(), iso),
        report.settings.timezone
    );
    let base = &report.definitions[0];
    let _ = writeln!(out, "definition {} ({})", base.definition, base.label);
    definition(&mut out, base, &horizon);
    if report.definitions.len() > 1 {
        let _ = writeln!(
            out,
            "\nDefinitions compared on the same history (precision: MQL'd leads that reached SQL \
             within {horizon}; recall: SQL leads with an MQL before it)"
        );
        let best = report.comparison.as_ref().and_then(|c| c.best);
        let rows = comparison_cells(report, |label, best| {
            format!("{}{label}", if best { "* " } else { "  " })
        });
        table(&mut out, &COMPARISON_HEAD, &rows);
        if let Some(i) = best {
            let _ = writeln!(
                out,
                "  * best balance of precision and recall (highest F1): {}",
                report.definitions[i].label
            );
        }
    }
    out
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a time in ms.
pub fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}
