//! `leadflow report` on a hand-built history (tests/fixtures/report): twelve leads, two sources
//! (the `lead_source` attribute for some, the first web event's `utm_source` for others),
//! three grades, a rejection and a `recycled` event, a sales-sourced win, an amount that does
//! not parse, an MQL whose acceptance comes after the 30-day horizon. Every figure below was
//! worked out by hand from the fixture and docs/analytics.md, lead by lead (the comments say
//! how), before the report was run.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

const H: i64 = 3_600_000;
const D: i64 = 24 * H;
const M: i64 = 60_000;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/report")
        .join(name)
}

fn report(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_leadflow"))
        .arg("report")
        .arg("--config")
        .arg(fixture("config.toml"))
        .arg(fixture("history.jsonl"))
        .args(["--format", "json"])
        .args(args)
        .output()
        .expect("running leadflow report");
    assert!(
        out.status.success(),
        "leadflow report failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the report is JSON")
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn close(v: &Value, want: f64) {
    assert!((f(v) - want).abs() < 1e-9, "{v} != {want}");
}

fn row<'a>(rows: &'a Value, key: &str) -> &'a Value {
    rows.as_array()
        .expect("rows")
        .iter()
        .find(|r| r["key"] == key)
        .unwrap_or_else(|| panic!("no row {key} in {rows}"))
}

/// `(MQLs, reached sal, reached sql, reached won)` of a breakdown row.
fn counts(r: &Value) -> (u64, u64, u64, u64) {
    let n = |v: &Value| v.as_u64().expect("count");
    (
        n(&r["mqls"]),
        n(&r["reached"]["sal"]),
        n(&r["reached"]["sql"]),
        n(&r["reached"]["won"]),
    )
}

#[test]
fn every_figure_of_the_hand_built_history() {
    let r = report(&[]);
    assert_eq!(r["schema"], "leadflow.report/1");
    assert_eq!(r["history"]["events"], 70);
    assert_eq!(r["history"]["invalid"], 0);
    // The last event: l12's acceptance, 2026-12-28T09:03Z.
    assert_eq!(r["history"]["end_at"], 1_798_448_580_000i64);
    let d = &r["definitions"][0];

    // Funnel. 12 leads; MQL: l01 l02 l03 l04 l05 l06 l10 l11 l12; SAL: l01 l02 l03 l05 l07
    // l10 l12; SQL: l01 l02 l03 l07 l10 l11; won: l01 l03 l07 l10; lost: l02; recycled: l03
    // (rejected) l04 (recycled event); disqualified: l05.
    let lr = &d["funnel"]["leads_reached"];
    for (stage, n) in [
        ("new", 12),
        ("mql", 9),
        ("sal", 7),
        ("sql", 6),
        ("won", 4),
        ("lost", 1),
        ("recycled", 2),
        ("disqualified", 1),
    ] {
        assert_eq!(lr[stage], n, "leads that reached {stage}");
    }
    // Ten MQLs (l03 twice). Where each journey ended within 30 days: won l01 l03b l10; lost
    // l02; sql l11 (opportunity straight from mql); rejected l03a; disqualified l05; recycled
    // l04; open l06 and l12 (accepted 41 days later, past the horizon).
    let fu = &d["funnel"];
    assert_eq!(fu["mqls"], 10);
    let o = &fu["outcomes"];
    for (k, n) in [
        ("won", 3),
        ("lost", 1),
        ("sql", 1),
        ("accepted", 0),
        ("rejected", 1),
        ("disqualified", 1),
        ("recycled", 1),
        ("open", 2),
    ] {
        assert_eq!(o[k], n, "outcome {k}");
    }
    // Reached within the horizon: sal l01 l02 l03b l05 l10; sql l01 l02 l03b l10 l11;
    // sal then sql: all but l11; won l01 l03b l10.
    assert_eq!(fu["reached"]["sal"], 5);
    assert_eq!(fu["reached"]["sql"], 5);
    assert_eq!(fu["reached"]["sal_then_sql"], 4);
    assert_eq!(fu["reached"]["won"], 3);
    let c = &fu["conversion"];
    close(&c["mql_to_sal"], 0.5);
    close(&c["mql_to_sql"], 0.5);
    close(&c["mql_to_won"], 0.3);
    close(&c["sal_to_sql"], 0.8);
    close(&c["sql_to_won"], 0.6);
    // MQLs later than 2026-11-28T09:03Z (the end less 30 days): l03b, l06, l10.
    assert_eq!(fu["younger_than_horizon"], 3);

    // Cohorts: November l01 l02 l03a l04 l05 l11 l12; December l03b l06 l10.
    let cohorts = d["cohorts"].as_array().expect("cohorts");
    assert_eq!(cohorts.len(), 2);
    assert_eq!(cohorts[0]["month"], "2026-11");
    assert_eq!(cohorts[0]["mqls"], 7);
    assert_eq!(cohorts[0]["reached"]["sal"], 3);
    assert_eq!(cohorts[0]["reached"]["sql"], 3);
    assert_eq!(cohorts[0]["reached"]["won"], 1);
    close(&cohorts[0]["conversion"]["mql_to_won"], 1.0 / 7.0);
    assert_eq!(cohorts[0]["younger_than_horizon"], 0);
    assert_eq!(cohorts[1]["month"], "2026-12");
    assert_eq!(cohorts[1]["mqls"], 3);
    assert_eq!(cohorts[1]["reached"]["won"], 2);
    assert_eq!(cohorts[1]["younger_than_horizon"], 3);

    // Velocity (nearest rank). MQL→SAL: 30m (l10), 1h (l01 l03b l05), 22h (l02).
    let v = &d["velocity"];
    assert_eq!(v["mql_to_sal"]["count"], 5);
    assert_eq!(v["mql_to_sal"]["median_ms"], H);
    assert_eq!(v["mql_to_sal"]["p90_ms"], 22 * H);
    // SAL→SQL: 24h (l10), 48h (l01 l02 l03b).
    assert_eq!(v["sal_to_sql"]["count"], 4);
    assert_eq!(v["sal_to_sql"]["median_ms"], 48 * H);
    assert_eq!(v["sal_to_sql"]["p90_ms"], 48 * H);
    // SQL→won: 3d (l10), 4d (l03b), 5d (l01).
    assert_eq!(v["sql_to_won"]["count"], 3);
    assert_eq!(v["sql_to_won"]["median_ms"], 4 * D);
    assert_eq!(v["sql_to_won"]["p90_ms"], 5 * D);

    // Breakdowns.
    let b = &d["breakdowns"];
    assert_eq!(counts(row(&b["grade"], "A")), (5, 4, 3, 2)); // l01 l02 l05 l10 l12
    assert_eq!(counts(row(&b["grade"], "B")), (3, 1, 1, 1)); // l03a l03b l06
    assert_eq!(counts(row(&b["grade"], "C")), (2, 0, 1, 0)); // l04 l11
    assert_eq!(counts(row(&b["reason"], "score")), (7, 4, 3, 3));
    assert_eq!(counts(row(&b["reason"], "fast_track")), (3, 1, 2, 0)); // l02 l06 l11
    assert_eq!(counts(row(&b["engagement_band"], "0-100")), (3, 1, 2, 0)); // 0, 30, 0
    assert_eq!(counts(row(&b["engagement_band"], "100-150")), (6, 3, 3, 3)); // 120 each
    assert_eq!(counts(row(&b["engagement_band"], "150+")), (1, 1, 0, 0)); // l05 at 150
                                                                          // Sources: webinar from the profile (l01 l02 l05 l10 l11), google from the first page
                                                                          // view (l03 twice, l04, l06, l12). Equal MQLs: by name.
    assert_eq!(counts(row(&b["source"], "webinar")), (5, 4, 4, 2));
    assert_eq!(counts(row(&b["source"], "google")), (5, 1, 1, 1));
    assert_eq!(b["source"][0]["key"], "google");
    // Owners: rep-a l01 l03a l03b l11; rep-b l02 l05 l10; unassigned l04 l06 l12.
    assert_eq!(counts(row(&b["owner"], "rep-a")), (4, 2, 3, 2));
    assert_eq!(counts(row(&b["owner"], "rep-b")), (3, 3, 2, 1));
    assert_eq!(counts(row(&b["owner"], "unassigned")), (3, 0, 0, 0));

    // SLA. mql_follow_up (4 business hours, Mon-Fri 09-17 UTC): 10 clocks; met: all but l06;
    // on time: l01 l03a l03b l05 l10 l11; breached: l02 l04 l06 l12.
    let pol = &d["sla"]["policies"];
    let mql = &pol[0];
    assert_eq!(mql["policy"], "mql_follow_up");
    assert_eq!(mql["started"], 10);
    assert_eq!(mql["met"], 9);
    assert_eq!(mql["met_on_time"], 6);
    assert_eq!(mql["breaches"], 4);
    close(&mql["on_time_rate"], 0.6);
    // Clock time: 30m, 1h x5, 22h, 19d less 3m (l04), 41d (l12).
    assert_eq!(mql["response_ms"]["p50"], H);
    assert_eq!(mql["response_ms"]["p95"], 41 * D);
    // Business time: l02 Mon 12:05-17:00 and Tue 09:00-10:05 = 6h; l04 7h57m + 2 x 8h + 10 x
    // 8h = 103h57m; l12 7h57m + 3 x 8h + 25 x 8h + 3m = 232h.
    assert_eq!(mql["response_business_ms"]["p50"], H);
    assert_eq!(mql["response_business_ms"]["p95"], 232 * H);
    let dist: Vec<u64> = mql["distribution"]
        .as_array()
        .expect("buckets")
        .iter()
        .map(|b| b["count"].as_u64().expect("count"))
        .collect();
    // <=1m 0, <=5m 0, <=15m 0, <=1h 6 (30m, 1h x5), <=4h 0, <=1d 1 (22h), <=3d 0, <=7d 0, >7d 2.
    assert_eq!(dist, vec![0, 0, 0, 6, 0, 1, 0, 0, 2]);
    // sal_touch (1 day, clock time): l01 l02 l03b l05 l07 l10 l12; met all but l12 (still
    // running at the end); l03b met after 26h, breached.
    let sal = &pol[1];
    assert_eq!(sal["started"], 7);
    assert_eq!(sal["met"], 6);
    assert_eq!(sal["met_on_time"], 5);
    assert_eq!(sal["breaches"], 1);
    assert_eq!(sal["response_ms"]["p50"], H); // 1h 1h 1h 2h 2h 26h
    assert_eq!(sal["response_ms"]["p95"], 26 * H);
    assert_eq!(sal["response_business_ms"]["p95"], 26 * H);
    let owner_row = |owner: &str, policy: &str| {
        d["sla"]["owners"]
            .as_array()
            .expect("owner rows")
            .iter()
            .find(|r| r["owner"] == owner && r["policy"] == policy)
            .unwrap_or_else(|| panic!("no row {owner} {policy}"))
            .clone()
    };
    let rb = owner_row("rep-b", "mql_follow_up"); // l02 l05 l10: 22h, 1h, 30m
    assert_eq!(
        (
            rb["started"].as_u64(),
            rb["met_on_time"].as_u64(),
            rb["breaches"].as_u64()
        ),
        (Some(3), Some(2), Some(1))
    );
    assert_eq!(rb["response_ms"]["p50"], H);
    assert_eq!(rb["response_ms"]["p95"], 22 * H);
    assert_eq!(rb["response_business_ms"]["p95"], 6 * H);
    let un = owner_row("unassigned", "mql_follow_up"); // l04 l06 l12
    assert_eq!(
        (
            un["started"].as_u64(),
            un["met"].as_u64(),
            un["breaches"].as_u64()
        ),
        (Some(3), Some(2), Some(3))
    );
    assert_eq!(un["response_ms"]["p50"], 19 * D - 3 * M);
    let ra = owner_row("rep-a", "sal_touch"); // l01 l03b l07
    assert_eq!(
        (
            ra["started"].as_u64(),
            ra["met_on_time"].as_u64(),
            ra["breaches"].as_u64()
        ),
        (Some(3), Some(2), Some(1))
    );
    let us = owner_row("unassigned", "sal_touch"); // l12
    assert_eq!(
        (us["started"].as_u64(), us["met"].as_u64()),
        (Some(1), Some(0))
    );

    // Revenue: l01 10000 and l10 2500.25 through MQLs (grade A, webinar); l03 "abc" counted
    // as a deal, not summed (grade B, google); l07 5000.50 sales-sourced (source unknown).
    let rev = &d["revenue"];
    close(&rev["total"], 17_500.75);
    assert_eq!(rev["deals"], 4);
    assert_eq!(rev["invalid_amount"], 1);
    assert_eq!(rev["missing_amount"], 0);
    assert_eq!(rev["invalid_examples"][0][0], "l03@example.com");
    assert_eq!(rev["invalid_examples"][0][1], "abc");
    close(
        &row(&rev["by_path"], "marketing_qualified")["amount"],
        12_500.25,
    );
    assert_eq!(row(&rev["by_path"], "marketing_qualified")["deals"], 3);
    close(&row(&rev["by_path"], "sales_sourced")["amount"], 5_000.50);
    close(&row(&rev["by_grade"], "A")["amount"], 12_500.25);
    close(&row(&rev["by_grade"], "B")["amount"], 0.0);
    close(&row(&rev["by_grade"], "no MQL")["amount"], 5_000.50);
    close(&row(&rev["by_source"], "webinar")["amount"], 12_500.25);
    close(&row(&rev["by_source"], "unknown")["amount"], 5_000.50);
    close(&row(&rev["by_source"], "google")["amount"], 0.0);

    // The four measures.
    let hl = &d["headline"];
    close(&hl["lead_qualification_rate"], 9.0 / 12.0);
    close(&hl["lead_to_sales_rate"], 4.0 / 12.0);
    assert_eq!(hl["response_policy"], "mql_follow_up");
    assert_eq!(hl["lead_response_ms"], H);
    close(&hl["revenue_marketing_share"], 12_500.25 / 17_500.75);

    // Quality. MQL'd leads 9, of which l01 l02 l03 l10 l11 reached sql: 5/9. SQL leads 6
    // (l07 sales-sourced): recall 5/6; F1 = 2/3. Lead times: 1h (l11), 24h30m (l10), 49h
    // (l01; l03 from its second MQL), 70h (l02).
    let q = &d["quality"];
    close(&q["precision"], 5.0 / 9.0);
    close(&q["recall"], 5.0 / 6.0);
    close(&q["f1"], 2.0 / 3.0);
    assert_eq!(q["median_mql_to_sql_ms"], 49 * H);
    close(&q["rejected_share"], 0.1);
    assert_eq!(q["sla_clocks_started"], 17);
    assert_eq!(q["sla_breaches"], 5);
    assert!(r["comparison"].is_null());
}

#[test]
fn a_sweep_marks_the_best_balance() {
    // At 130, by score: l05 (150), and l03 on 2026-12-01 09:00 (its rejection was a no-op
    // from `new`, so nothing reset its 120, and the webinar makes 180). The fast tracks l02
    // l06 l11 stay. MQL'd leads 5, of which l02 l03 l11 reached sql: 3/5. SQL leads are still
    // 6 (the CRM events are facts): recall 3/6, F1 = 2 x 0.6 x 0.5 / 1.1 = 6/11. The base
    // (100) keeps 2/3 and is the best.
    let r = report(&["--sweep", "funnel.mql_threshold=100,130"]);
    let defs = r["definitions"].as_array().expect("definitions");
    assert_eq!(defs.len(), 3);
    assert_eq!(defs[1]["label"], "funnel.mql_threshold=100");
    // 100 written as an integer or set as a number is the same definition.
    assert_eq!(defs[0]["definition"], defs[1]["definition"]);
    assert_ne!(defs[0]["definition"], defs[2]["definition"]);
    assert_eq!(defs[2]["definition"].as_str().map(str::len), Some(10));
    let q = &defs[2]["quality"];
    assert_eq!(q["mql_leads"], 5);
    assert_eq!(q["mqls"], 5);
    close(&q["precision"], 0.6);
    assert_eq!(q["sql_leads"], 6);
    close(&q["recall"], 0.5);
    close(&q["f1"], 6.0 / 11.0);
    close(&defs[1]["quality"]["f1"], 2.0 / 3.0);
    assert_eq!(r["comparison"]["best"], 0);
    assert_eq!(r["comparison"]["best_by"], "f1");
}

#[test]
fn the_horizon_decides_what_counts() {
    // With 60 days, l12's acceptance (41 days after its MQL) counts: accepted 1, open 1; and
    // no MQL is younger than 60 days before the end except those after 2026-10-29: all ten.
    let r = report(&["--horizon", "60d"]);
    let o = &r["definitions"][0]["funnel"]["outcomes"];
    assert_eq!(o["accepted"], 1);
    assert_eq!(o["open"], 1);
    assert_eq!(r["definitions"][0]["funnel"]["younger_than_horizon"], 10);
    assert_eq!(r["settings"]["horizon_ms"], 60 * D);
}

#[test]
fn bad_arguments_name_what_is_allowed() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_leadflow"))
            .arg("report")
            .arg("--config")
            .arg(fixture("config.toml"))
            .arg(fixture("history.jsonl"))
            .args(args)
            .output()
            .expect("running leadflow report");
        // 2: a config or argument error, as for every command.
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?} should fail as a usage error"
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(run(&["--format", "pdf"]).contains("allowed: text, json, html"));
    assert!(run(&["--sweep", "kafka.brokers=1"])
        .contains("only numeric keys of [scoring] and [funnel]"));
    assert!(run(&["--sweep", "funnel.mql_threshold=ten"])
        .contains("\"ten\": funnel.mql_threshold: each value must be a number"));
    // Only keys that hold a number in the base config: not a boolean, a name, a rule that is
    // not there, or a misspelled key.
    let holds = |sweep: &str, what: &str| {
        let e = run(&["--sweep", sweep]);
        assert!(e.contains(what), "{sweep}: {e}");
    };
    holds("funnel.recycle_reset=0,1", "holds nothing");
    holds("scoring.engagement[0].name=1", "holds the string \"page\"");
    holds("scoring.engagement[9].points=1", "holds nothing");
    holds("funnel.mql_treshold=80", "holds nothing");
    assert!(run(&["--horizon", "0s"]).contains("--horizon"));
}

/// The browser: `LEADFLOW_CHROMIUM`, else `chromium`, `chromium-browser` or `google-chrome` on
/// PATH. Without one the browser test says so and returns, unless `LEADFLOW_REQUIRE_CHROMIUM`
/// is set (`.ci/run` installs Debian's `chromium` and sets it).
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LEADFLOW_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join(name))
                    .find(|p| p.is_file())
            })
        });
    if found.is_none() {
        assert!(
            std::env::var_os("LEADFLOW_REQUIRE_CHROMIUM").is_none(),
            "LEADFLOW_REQUIRE_CHROMIUM is set but no chromium was found"
        );
        eprintln!("no chromium on PATH (Debian: apt-get install chromium): browser test skipped");
    }
    found
}

fn headless(browser: &std::path::Path) -> Command {
    let mut c = Command::new(browser);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--allow-file-access-from-files",
        "--virtual-time-budget=10000",
    ]);
    c
}

/// Loads the HTML report in headless Chromium and reads back what it rendered: the page's
/// visible text, and every chart figure with the size its SVGs were laid out at. The page
/// itself has no scripts; a harness page beside it loads it in a frame and measures it.
#[test]
fn the_html_report_renders_in_a_real_browser() {
    let Some(browser) = chromium() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let page = dir.path().join("report.html");
    let out = Command::new(env!("CARGO_BIN_EXE_leadflow"))
        .arg("report")
        .arg("--config")
        .arg(fixture("config.toml"))
        .arg(fixture("history.jsonl"))
        .args([
            "--format",
            "html",
            "--sweep",
            "funnel.mql_threshold=60,100,130",
            "-o",
        ])
        .arg(&page)
        .output()
        .expect("running leadflow report");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&page).expect("the page");
    // Self-contained: nothing fetched, nothing run.
    for banned in ["<script", "src=\"http", "href=\"http", "@import", "url("] {
        assert!(!html.contains(banned), "the page contains {banned}");
    }

    std::fs::write(
        dir.path().join("harness.html"),
        r#"<!DOCTYPE html><html><body>
<iframe id="r" src="report.html" style="width:1100px;height:4000px"></iframe><pre id="out"></pre>
<script>
window.addEventListener('load', () => {
  const d = document.getElementById('r').contentDocument;
  const figures = [...d.querySelectorAll('figure.chart')].map(f => ({
    id: f.id,
    svgs: [...f.querySelectorAll('svg')].map(s => {
      const b = s.getBoundingClientRect();
      return { w: b.width, h: b.height,
               shapes: s.querySelectorAll('rect,path,polyline,polygon,circle,line').length,
               text: [...s.querySelectorAll('text')].map(t => t.textContent.trim()).join('|') };
    })
  }));
  document.getElementById('out').textContent = JSON.stringify({ text: d.body.innerText, figures });
});
</script></body></html>"#,
    )
    .expect("writing the harness");
    let dom = headless(&browser)
        .arg("--dump-dom")
        .arg(format!(
            "file://{}",
            dir.path().join("harness.html").display()
        ))
        .output()
        .expect("running chromium");
    let dom = String::from_utf8_lossy(&dom.stdout);
    let start = dom.find("<pre id=\"out\">").expect("the harness ran") + "<pre id=\"out\">".len();
    let end = start + dom[start..].find("</pre>").expect("end of the result");
    let json = dom[start..end]
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    let seen: Value = serde_json::from_str(&json).expect("the harness's JSON");

    // The rendered text: the four measures (9 of 12 leads qualified, 4 of 12 won, a 1-hour
    // median response, 17,500.75 won), the sources and the comparison.
    let text = seen["text"].as_str().expect("text");
    for want in [
        "Lead funnel report",
        "75.0%",
        "33.3%",
        "1h",
        "17,500.75",
        "12,500.25",
        "google",
        "webinar",
        "funnel.mql_threshold=130",
        "Definitions compared",
        "★",
    ] {
        assert!(text.contains(want), "the rendered page lacks {want:?}");
    }
    // Every chart is there, laid out at a real size, with shapes and labels drawn.
    let figures = seen["figures"].as_array().expect("figures");
    let ids: Vec<&str> = figures.iter().filter_map(|f| f["id"].as_str()).collect();
    assert_eq!(
        ids,
        [
            "chart-funnel",
            "chart-cohorts",
            "chart-response",
            "chart-revenue",
            "chart-precision-recall"
        ]
    );
    for fig in figures {
        let svgs = fig["svgs"].as_array().expect("svgs");
        assert!(!svgs.is_empty(), "{} has no chart", fig["id"]);
        for s in svgs {
            assert!(
                f(&s["w"]) >= 600.0 && f(&s["h"]) >= 100.0,
                "{} laid out at {s}",
                fig["id"]
            );
            assert!(
                s["shapes"].as_u64() > Some(3),
                "{} draws nothing: {s}",
                fig["id"]
            );
        }
    }
    let chart_text = |id: &str| -> String {
        figures
            .iter()
            .find(|f| f["id"] == id)
            .map(|f| f["svgs"].to_string())
            .unwrap_or_default()
    };
    // Two policies, two distributions; the funnel's bars carry the counts of the hand-built
    // test (12 leads, 9 MQL, 4 won); the curve marks the best definition.
    assert_eq!(figures[2]["svgs"].as_array().map(Vec::len), Some(2));
    assert!(chart_text("chart-funnel").contains("9 (75.0%)"));
    assert!(chart_text("chart-funnel").contains("4 (33.3%)"));
    assert!(chart_text("chart-revenue").contains("12,500.25 (3 deals)"));
    assert!(chart_text("chart-precision-recall").contains("best F1"));

    // A screenshot as the test's artifact (target/test-artifacts/report.png).
    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifact dir");
    let png = artifacts.join("report.png");
    let _ = std::fs::remove_file(&png);
    let shot = headless(&browser)
        .arg("--window-size=1100,5200")
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("running chromium");
    assert!(
        shot.status.success(),
        "{}",
        String::from_utf8_lossy(&shot.stderr)
    );
    let bytes = std::fs::read(&png).expect("the screenshot");
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 50_000,
        "{} bytes",
        bytes.len()
    );
}

#[test]
fn a_sweep_point_equal_to_the_base_measures_the_same_on_the_shared_example() {
    // The shared example (SPEC examples-v2): its config sets mql_threshold = 100. A sweep
    // through 100 must give the base's figures exactly, under the same hash; the others must
    // differ in hash, and each definition's outcomes still add up to its MQLs.
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/examples-v2");
    if !shared.join("config.toml").is_file() {
        eprintln!("../shared/examples-v2 not found: skipped");
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_leadflow"))
        .arg("report")
        .arg("--config")
        .arg(shared.join("config.toml"))
        .arg(shared.join("input.jsonl"))
        .args([
            "--format",
            "json",
            "--sweep",
            "funnel.mql_threshold=60,100,140",
        ])
        .output()
        .expect("running leadflow report");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let defs = r["definitions"].as_array().expect("definitions");
    assert_eq!(defs.len(), 4);
    let strip = |d: &Value| {
        let mut d = d.clone();
        d["label"] = Value::Null;
        d
    };
    assert_eq!(
        strip(&defs[0]),
        strip(&defs[2]),
        "the sweep at 100 differs from the base"
    );
    assert_ne!(defs[1]["definition"], defs[0]["definition"]);
    assert_ne!(defs[3]["definition"], defs[0]["definition"]);
    for d in defs {
        let o = &d["funnel"]["outcomes"];
        let sum: u64 = [
            "won",
            "lost",
            "sql",
            "accepted",
            "rejected",
            "disqualified",
            "recycled",
            "open",
        ]
        .iter()
        .map(|k| o[k].as_u64().expect("count"))
        .sum();
        assert_eq!(Some(sum), d["funnel"]["mqls"].as_u64());
    }
    // Its README: six invalid lines at the end, reported and skipped.
    assert_eq!(r["history"]["invalid"], 6);
    // The shared example's 5 leads are created under every definition.
    assert!(defs
        .iter()
        .all(|d| d["funnel"]["leads_reached"]["new"] == 5));
    assert!(r["comparison"]["best"].is_u64());
}

#[test]
fn rule_points_can_be_swept_and_invalid_lines_are_named() {
    // webinar (engagement[1]) at 60 is the base definition itself: the same hash.
    let r = report(&["--sweep", "scoring.engagement[1].points=60,70"]);
    let defs = r["definitions"].as_array().expect("definitions");
    assert_eq!(defs[1]["definition"], defs[0]["definition"]);
    assert_ne!(defs[2]["definition"], defs[0]["definition"]);

    // Two bad lines after the 70 good ones: named on stderr with their line numbers (as
    // replay does), counted by reason, and skipped.
    let dir = tempfile::tempdir().expect("temp dir");
    let history = dir.path().join("history.jsonl");
    let mut text = std::fs::read_to_string(fixture("history.jsonl")).expect("history");
    text.push_str("not json\n");
    text.push_str(r#"{"event_id":"x","lead_key":"l01@example.com","occurred_at":-5,"source":"web","type":"page_view"}"#);
    text.push('\n');
    std::fs::write(&history, text).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_leadflow"))
        .arg("report")
        .arg("--config")
        .arg(fixture("config.toml"))
        .arg(&history)
        .args(["--format", "json"])
        .output()
        .expect("running leadflow report");
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 71: "), "{err}");
    assert!(err.contains("line 72: "), "{err}");
    assert!(err.contains("2 invalid lines skipped"), "{err}");
    let r: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(r["history"]["invalid"], 2);
    assert_eq!(r["history"]["events"], 70);
    assert_eq!(r["history"]["invalid_lines"][0][0], 71);
    let by: u64 = r["history"]["invalid_by_reason"]
        .as_object()
        .expect("reasons")
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(by, 2);
    // Nothing else moved: the funnel is the hand-built one.
    assert_eq!(r["definitions"][0]["funnel"]["mqls"], 10);
}
