//! The report as one self-contained HTML page: inline CSS and inline SVG charts drawn with
//! `plotters`, no scripts, fonts or images from anywhere. Every chart is a
//! `<figure class="chart" id="chart-…">`, which the browser test looks for.

use std::fmt::Write;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::measures::{DefinitionReport, Report};
use super::text::{comparison_cells, dur, iso, money, pct, sla_cells, COMPARISON_HEAD, SLA_HEAD};

const BLUE: RGBColor = RGBColor(0x2f, 0x6f, 0xb3);
const GREEN: RGBColor = RGBColor(0x2e, 0x8b, 0x57);
const ORANGE: RGBColor = RGBColor(0xe0, 0x7b, 0x20);
const GREY: RGBColor = RGBColor(0x88, 0x88, 0x88);
const FONT: &str = "sans-serif";

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// Draws into an SVG string of `w`×`h`; a drawing error becomes a visible note instead.
fn svg(w: u32, h: u32, draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> DrawResult) -> String {
    let mut s = String::new();
    let result = {
        let root = SVGBackend::with_string(&mut s, (w, h)).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error>)
            .and_then(|_| draw(&root))
            .and_then(|_| root.present().map_err(|e| Box::new(e) as _))
    };
    match result {
        Ok(()) => s,
        Err(e) => format!(
            "<p class=\"note\">chart not drawn: {}</p>",
            esc(&e.to_string())
        ),
    }
}

/// Horizontal bars, first item on top: `(label, value, text at the bar's end)`.
fn hbars(title: &str, items: &[(String, f64, String)], color: RGBColor) -> String {
    let n = items.len().max(1) as i32;
    let h = 70 + 32 * n as u32;
    svg(720, h, |root| {
        // Room on the right for the longest label at the end of a bar.
        let max = items.iter().map(|i| i.1).fold(0.0, f64::max).max(1e-9) * 1.6;
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 18))
            .margin(10)
            .x_label_area_size(24)
            .y_label_area_size(170)
            .build_cartesian_2d(0.0..max, (0..n).into_segmented())?;
        let label = |v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(i) => items
                .get((n - 1 - *i) as usize)
                .map_or(String::new(), |it| it.0.clone()),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(n as usize)
            .y_label_formatter(&label)
            .x_labels(5)
            .x_label_formatter(&|v| money(*v).trim_end_matches(".00").to_string())
            .label_style((FONT, 13))
            .draw()?;
        chart.draw_series(items.iter().enumerate().map(|(i, it)| {
            let y = n - 1 - i as i32;
            let mut r = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(y)),
                    (it.1, SegmentValue::Exact(y + 1)),
                ],
                color.filled(),
            );
            r.set_margin(4, 4, 0, 0);
            r
        }))?;
        chart.draw_series(items.iter().enumerate().map(|(i, it)| {
            let y = n - 1 - i as i32;
            Text::new(
                format!(" {}", it.2),
                (it.1, SegmentValue::CenterOf(y)),
                (FONT, 13).into_font().color(&BLACK),
            )
        }))?;
        Ok(())
    })
}

/// What a chart with nothing to draw shows instead.
fn no_data(what: &str) -> String {
    format!("<p class=\"note\">No data: {}.</p>", esc(what))
}

fn funnel_chart(d: &DefinitionReport) -> String {
    let created = d.funnel.leads_reached.get("new");
    if created == 0 {
        return no_data("the history created no leads");
    }
    let items: Vec<(String, f64, String)> = ["new", "mql", "sal", "sql", "won"]
        .iter()
        .map(|s| {
            let n = d.funnel.leads_reached.get(s);
            let share = super::measures::rate(n, created);
            (s.to_uppercase(), n as f64, format!("{n} ({})", pct(share)))
        })
        .collect();
    hbars("Leads that reached each stage", &items, BLUE)
}

fn cohort_chart(d: &DefinitionReport) -> String {
    if d.cohorts.is_empty() {
        return no_data("no MQLs in the history");
    }
    let rows = d.cohorts.len().max(1) as i32;
    let cols = ["MQL→SAL", "MQL→SQL", "MQL→won"];
    svg(720, 80 + 34 * rows as u32, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("Cohort conversion by month of MQL", (FONT, 18))
            .margin(10)
            .x_label_area_size(28)
            .y_label_area_size(170)
            .build_cartesian_2d((0..3).into_segmented(), (0..rows).into_segmented())?;
        let month = |v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(i) => d
                .cohorts
                .get((rows - 1 - *i) as usize)
                .map_or(String::new(), |c| format!("{} ({} MQLs)", c.month, c.mqls)),
            _ => String::new(),
        };
        let col = |v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(i) => cols.get(*i as usize).map_or("", |c| c).to_string(),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(3)
            .y_labels(rows as usize)
            .x_label_formatter(&col)
            .y_label_formatter(&month)
            .label_style((FONT, 13))
            .draw()?;
        for (r, c) in d.cohorts.iter().enumerate() {
            let y = rows - 1 - r as i32;
            let v = &c.conversion;
            for (x, rate) in [v.mql_to_sal, v.mql_to_sql, v.mql_to_won]
                .into_iter()
                .enumerate()
            {
                let x = x as i32;
                let shade = rate.unwrap_or(0.0).clamp(0.0, 1.0);
                // White to the green of a full conversion.
                let mix =
                    |a: u8, b: u8| (f64::from(a) + (f64::from(b) - f64::from(a)) * shade) as u8;
                let fill = RGBColor(mix(255, GREEN.0), mix(255, GREEN.1), mix(255, GREEN.2));
                let mut cell = Rectangle::new(
                    [
                        (SegmentValue::Exact(x), SegmentValue::Exact(y)),
                        (SegmentValue::Exact(x + 1), SegmentValue::Exact(y + 1)),
                    ],
                    fill.filled(),
                );
                cell.set_margin(2, 2, 2, 2);
                chart.draw_series(std::iter::once(cell))?;
                let ink = if shade > 0.55 { WHITE } else { BLACK };
                chart.draw_series(std::iter::once(Text::new(
                    pct(rate),
                    (SegmentValue::CenterOf(x), SegmentValue::CenterOf(y)),
                    (FONT, 14)
                        .into_font()
                        .color(&ink)
                        .pos(plotters::style::text_anchor::Pos::new(
                            plotters::style::text_anchor::HPos::Center,
                            plotters::style::text_anchor::VPos::Center,
                        )),
                )))?;
            }
        }
        Ok(())
    })
}

fn response_chart(d: &DefinitionReport) -> String {
    let mut out = String::new();
    for p in &d.sla.policies {
        if p.met == 0 {
            out.push_str(&no_data(&format!("{}: no clock was met", p.policy)));
            continue;
        }
        let labels = [
            "≤1m", "≤5m", "≤15m", "≤1h", "≤4h", "≤1d", "≤3d", "≤7d", ">7d",
        ];
        let n = p.distribution.len() as i32;
        let max = p
            .distribution
            .iter()
            .map(|b| b.count)
            .max()
            .unwrap_or(0)
            .max(1) as f64
            * 1.2;
        let title = format!(
            "{}: response times of {} met clocks (p50 {}, p95 {})",
            p.policy,
            p.met,
            dur(p.response_ms.p50),
            dur(p.response_ms.p95)
        );
        out.push_str(&svg(720, 260, |root| {
            let mut chart = ChartBuilder::on(root)
                .caption(&title, (FONT, 16))
                .margin(10)
                .x_label_area_size(28)
                .y_label_area_size(50)
                .build_cartesian_2d((0..n).into_segmented(), 0.0..max)?;
            let lab = |v: &SegmentValue<i32>| match v {
                SegmentValue::CenterOf(i) => labels.get(*i as usize).map_or("", |l| l).to_string(),
                _ => String::new(),
            };
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(n as usize)
                .x_label_formatter(&lab)
                .y_labels(4)
                .y_label_formatter(&|v| format!("{v:.0}"))
                .label_style((FONT, 12))
                .draw()?;
            chart.draw_series(p.distribution.iter().enumerate().map(|(i, b)| {
                let mut r = Rectangle::new(
                    [
                        (SegmentValue::Exact(i as i32), 0.0),
                        (SegmentValue::Exact(i as i32 + 1), b.count as f64),
                    ],
                    ORANGE.filled(),
                );
                r.set_margin(0, 0, 3, 3);
                r
            }))?;
            Ok(())
        }));
    }
    if out.is_empty() {
        out.push_str("<p class=\"note\">No SLA policies in this definition.</p>");
    }
    out
}

fn revenue_chart(d: &DefinitionReport) -> String {
    let items: Vec<(String, f64, String)> = d
        .revenue
        .by_path
        .iter()
        .map(|m| {
            (
                m.key.replace('_', " "),
                m.amount,
                format!("{} ({} deals)", money(m.amount), m.deals),
            )
        })
        .collect();
    if items.is_empty() {
        return hbars(
            "Revenue by path (no won deals)",
            &[("none".into(), 0.0, "0".into())],
            GREEN,
        );
    }
    hbars("Revenue by path", &items, GREEN)
}

fn pr_chart(report: &Report) -> String {
    let best = report.comparison.as_ref().and_then(|c| c.best);
    let pts: Vec<(usize, f64, f64, &str)> = report
        .definitions
        .iter()
        .enumerate()
        .filter_map(|(i, d)| {
            // A sweep point is labelled by its value alone: the caption names the key.
            let short = d
                .label
                .rsplit_once('=')
                .map_or(d.label.as_str(), |(_, v)| v);
            Some((i, d.quality.recall?, d.quality.precision?, short))
        })
        .collect();
    // Zoomed to the points (with a margin), so close definitions stay apart.
    let span = |vals: Vec<f64>| {
        let lo = vals.iter().copied().fold(1.0, f64::min);
        let hi = vals.iter().copied().fold(0.0, f64::max);
        let pad = ((hi - lo) * 0.25).max(0.05);
        ((lo - pad).max(0.0), (hi + pad).min(1.05))
    };
    if pts.is_empty() {
        return no_data("no definition had both MQLs and SQL leads");
    }
    let (x0, x1) = span(pts.iter().map(|p| p.1).collect());
    let (y0, y1) = span(pts.iter().map(|p| p.2).collect());
    svg(720, 420, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("Precision and recall of each definition", (FONT, 18))
            .margin(14)
            .x_label_area_size(36)
            .y_label_area_size(50)
            .build_cartesian_2d(x0..x1.max(x0 + 0.01), y0..y1.max(y0 + 0.01))?;
        chart
            .configure_mesh()
            .x_desc("recall (SQL leads found by an earlier MQL)")
            .y_desc("precision (MQL'd leads that reached SQL)")
            .x_label_formatter(&|v| format!("{:.0}%", v * 100.0))
            .y_label_formatter(&|v| format!("{:.0}%", v * 100.0))
            .label_style((FONT, 12))
            .draw()?;
        // The curve through the sweep points, in recall order.
        let mut line: Vec<(f64, f64)> = pts.iter().map(|p| (p.1, p.2)).collect();
        line.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart.draw_series(LineSeries::new(line, GREY.stroke_width(2)))?;
        // Definitions that land on the same point share one marker and one label.
        let mut points: Vec<(f64, f64, bool, Vec<&str>)> = Vec::new();
        for (i, r, p, label) in &pts {
            let is_best = Some(*i) == best;
            match points
                .iter_mut()
                .find(|q| (q.0 - r).abs() < 1e-9 && (q.1 - p).abs() < 1e-9)
            {
                Some(q) => {
                    q.2 |= is_best;
                    q.3.push(label);
                }
                None => points.push((*r, *p, is_best, vec![label])),
            }
        }
        for (k, (r, p, is_best, labels)) in points.iter().enumerate() {
            let color = if *is_best { ORANGE } else { BLUE };
            chart.draw_series(std::iter::once(Circle::new((*r, *p), 6, color.filled())))?;
            let mark = if *is_best { " ★ best F1" } else { "" };
            // Alternate labels above and below the curve, so neighbours do not overlap.
            let dy = if k % 2 == 0 { -14 } else { 6 };
            chart.draw_series(std::iter::once(
                EmptyElement::at((*r, *p))
                    + Text::new(
                        format!("{}{mark}", labels.join(", ")),
                        (8, dy),
                        (FONT, 12).into_font().color(&BLACK),
                    ),
            ))?;
        }
        Ok(())
    })
}

fn figure(out: &mut String, id: &str, caption: &str, body: &str) {
    let _ = writeln!(
        out,
        "<figure class=\"chart\" id=\"chart-{id}\">{body}<figcaption>{}</figcaption></figure>",
        esc(caption)
    );
}

fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    out.push_str("<table><thead><tr>");
    for h in header {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for r in rows {
        out.push_str("<tr>");
        for c in r {
            let _ = write!(out, "<td>{}</td>", esc(c));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>\n");
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222;padding:0 1em}\
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}\
.cards{display:flex;gap:1em;flex-wrap:wrap}.card{flex:1;min-width:180px;border:1px solid #ddd;border-radius:8px;padding:.8em 1em}\
.card b{display:block;font-size:1.7em;margin-top:.2em}.card span{color:#666;font-size:.85em}\
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}th,td{border-bottom:1px solid #eee;padding:.25em .7em;text-align:right}\
th:first-child,td:first-child{text-align:left}figure{margin:1em 0}figcaption{color:#666;font-size:.85em}\
.note{color:#666}.best{font-weight:bold}code{background:#f4f4f4;padding:0 .3em}";

/// The whole report as one HTML page.
pub fn render(report: &Report) -> String {
    let d = &report.definitions[0];
    let h = &report.history;
    let horizon = dur(Some(report.settings.horizon_ms));
    let mut o = String::new();
    let _ = writeln!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>leadflow report: {}</title><style>{STYLE}</style></head><body>",
        esc(&d.label)
    );
    let _ = writeln!(
        o,
        "<h1>Lead funnel report</h1><p>History <code>{}</code>: {} events ({} invalid), up to {}. \
         Definition <code>{}</code> ({}). Outcomes count within {} of each MQL; cohorts by month in {}.</p>",
        esc(&h.source),
        h.events,
        h.invalid,
        h.end_at.map_or("-".to_string(), iso),
        esc(&d.definition),
        esc(&d.label),
        esc(&horizon),
        esc(&report.settings.timezone),
    );
    let hl = &d.headline;
    let _ = writeln!(
        o,
        "<div class=\"cards\">\
         <div class=\"card\" id=\"m-qualification\">Lead qualification rate<b>{}</b><span>leads that became MQLs</span></div>\
         <div class=\"card\" id=\"m-conversion\">Lead-to-sales conversion rate<b>{}</b><span>leads that reached won</span></div>\
         <div class=\"card\" id=\"m-response\">Lead response time<b>{}</b><span>median, policy {}</span></div>\
         <div class=\"card\" id=\"m-revenue\">Lead-to-sales revenue<b>{}</b><span>{} through MQLs</span></div></div>",
        pct(hl.lead_qualification_rate),
        pct(hl.lead_to_sales_rate),
        dur(hl.lead_response_ms),
        esc(hl.response_policy.as_deref().unwrap_or("-")),
        money(hl.revenue),
        pct(hl.revenue_marketing_share),
    );

    o.push_str("<h2>Funnel</h2>\n");
    figure(
        &mut o,
        "funnel",
        "Distinct leads that reached each stage; share of leads created.",
        &funnel_chart(d),
    );
    let f = &d.funnel;
    let c = &f.conversion;
    table(
        &mut o,
        &["MQL→SAL", "MQL→SQL", "MQL→won", "SAL→SQL", "SQL→won"],
        &[vec![
            pct(c.mql_to_sal),
            pct(c.mql_to_sql),
            pct(c.mql_to_won),
            pct(c.sal_to_sql),
            pct(c.sql_to_won),
        ]],
    );
    let oc = &f.outcomes;
    let _ = writeln!(
        o,
        "<p>{} MQLs; their outcomes within {} ({} are younger than the horizon):</p>",
        f.mqls,
        esc(&horizon),
        f.younger_than_horizon
    );
    table(
        &mut o,
        &["outcome", "MQLs"],
        &[
            ("won", oc.won),
            ("lost", oc.lost),
            ("sql (open opportunity)", oc.sql),
            ("accepted (sal)", oc.accepted),
            ("rejected by sales", oc.rejected),
            ("disqualified", oc.disqualified),
            ("recycled", oc.recycled),
            ("still open", oc.open),
        ]
        .iter()
        .map(|(k, n)| vec![k.to_string(), n.to_string()])
        .collect::<Vec<_>>(),
    );

    o.push_str("<h2>Cohorts</h2>\n");
    figure(
        &mut o,
        "cohorts",
        "Share of each month's MQLs that reached SAL, SQL and won within the horizon.",
        &cohort_chart(d),
    );

    o.push_str("<h2>Velocity</h2>\n");
    let v = &d.velocity;
    table(
        &mut o,
        &["step", "count", "median", "p90"],
        &[
            ("MQL→SAL", &v.mql_to_sal),
            ("SAL→SQL", &v.sal_to_sql),
            ("SQL→won", &v.sql_to_won),
        ]
        .iter()
        .map(|(k, s)| {
            vec![
                k.to_string(),
                s.count.to_string(),
                dur(s.median_ms),
                dur(s.p90_ms),
            ]
        })
        .collect::<Vec<_>>(),
    );

    o.push_str("<h2>What converts</h2>\n");
    let b = &d.breakdowns;
    for (title, rows) in [
        ("grade at MQL", &b.grade),
        ("MQL reason", &b.reason),
        ("engagement at MQL", &b.engagement_band),
        ("source", &b.source),
        ("owner", &b.owner),
    ] {
        let _ = write!(o, "<h3>By {}</h3>", esc(title));
        table(
            &mut o,
            &[title, "MQLs", "→SAL", "→SQL", "→won"],
            &rows
                .iter()
                .map(|r| {
                    vec![
                        r.key.clone(),
                        r.mqls.to_string(),
                        pct(r.conversion.mql_to_sal),
                        pct(r.conversion.mql_to_sql),
                        pct(r.conversion.mql_to_won),
                    ]
                })
                .collect::<Vec<_>>(),
        );
    }

    o.push_str("<h2>SLA compliance</h2>\n");
    figure(
        &mut o,
        "response",
        "Response time of met clocks, per policy (clock time).",
        &response_chart(d),
    );
    table(&mut o, &SLA_HEAD, &sla_cells(&d.sla.policies));
    o.push_str("<h3>By owner</h3>");
    let mut owner_head = vec!["owner"];
    owner_head.extend(SLA_HEAD);
    table(&mut o, &owner_head, &sla_cells(&d.sla.owners));

    o.push_str("<h2>Revenue</h2>\n");
    figure(
        &mut o,
        "revenue",
        "Won amounts by path: marketing-qualified (an MQL before SQL) or sales-sourced.",
        &revenue_chart(d),
    );
    let r = &d.revenue;
    let _ = writeln!(
        o,
        "<p>{} from {} won deals; {} without an amount, {} with an amount that does not parse (not summed).</p>",
        money(r.total),
        r.deals,
        r.missing_amount,
        r.invalid_amount
    );
    for (title, rows) in [("grade at MQL", &r.by_grade), ("source", &r.by_source)] {
        let _ = write!(o, "<h3>By {}</h3>", esc(title));
        table(
            &mut o,
            &[title, "deals", "amount"],
            &rows
                .iter()
                .map(|m| vec![m.key.clone(), m.deals.to_string(), money(m.amount)])
                .collect::<Vec<_>>(),
        );
    }

    if report.definitions.len() > 1 {
        o.push_str("<h2>Definitions compared</h2>\n");
        figure(
            &mut o,
            "precision-recall",
            "Each definition on the same history (sweep points by their value); the best balance (highest F1) is marked.",
            &pr_chart(report),
        );
        let rows = comparison_cells(report, |label, best| {
            format!("{label}{}", if best { " ★" } else { "" })
        });
        table(&mut o, &COMPARISON_HEAD, &rows);
    }
    let _ = writeln!(
        o,
        "<p class=\"note\">{} · schema {}</p></body></html>",
        esc(&report.generated_by),
        report.schema
    );
    o
}
