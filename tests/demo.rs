//! `leadflow demo` as a newcomer runs it: an in-process broker, generated traffic, the
//! pipeline, and a readable feed of transitions and SLA alerts on stdout.

use std::process::Command;

#[test]
fn demo_prints_transitions_and_sla_alerts_and_exits_cleanly() {
    let out = Command::new(env!("CARGO_BIN_EXE_leadflow"))
        .args([
            "demo",
            "--duration",
            "20s",
            "--speed",
            "20000",
            "--leads",
            "200",
        ])
        .output()
        .expect("the demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stderr}");
    for needle in [
        " MQL ",
        " SAL ",
        "new -> mql",
        "SLA ",
        "BREACH",
        "met on time",
    ] {
        assert!(
            stdout.contains(needle),
            "no {needle:?} in the feed:\n{stdout}"
        );
    }
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("demo: "))
        .unwrap_or_else(|| panic!("no summary line:\n{stdout}"));
    assert!(summary.contains("events produced"), "{summary}");
    assert!(!stderr.contains("ERROR"), "errors logged:\n{stderr}");
}
