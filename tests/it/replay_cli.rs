//! `leadflow replay` and `leadflow check-config` as a user runs them: the real binary on the
//! conformance example.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn leadflow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_leadflow"))
        .args(args)
        .output()
        .expect("the leadflow binary runs")
}

/// `leadflow replay` of the example input under the example config, with `extra` arguments.
fn replay(extra: &[&str]) -> Output {
    replay_file(&common::examples_dir().join("input.jsonl"), extra)
}

/// `leadflow replay` of `input` under the example config, with `extra` arguments.
fn replay_file(input: &Path, extra: &[&str]) -> Output {
    let cfg = common::examples_dir().join("config.toml");
    let mut args = vec![
        "replay",
        "--config",
        cfg.to_str().expect("utf-8 path"),
        input.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(extra);
    leadflow(&args)
}

fn records(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("each output line is JSON"))
        .collect()
}

/// JSON equality with numbers compared after rounding to 4 decimals.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            ((x * 1e4).round() - (y * 1e4).round()).abs() < 0.5
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same(v, w))
        }
        _ => a == b,
    }
}

#[test]
fn conformance_example_matches_expected_record_by_record() {
    let out = replay(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected_text = std::fs::read_to_string(common::examples_dir().join("expected.jsonl"))
        .expect("expected.jsonl");
    let expected = records(&expected_text);
    let actual = records(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(actual.len(), expected.len(), "record count");
    for (i, (e, a)) in expected.iter().zip(&actual).enumerate() {
        assert!(
            same(e, a),
            "record {}:\n  expected {e}\n  actual   {a}",
            i + 1
        );
    }
}

#[test]
fn invalid_lines_are_reported_with_line_numbers_and_summarized() {
    let out = replay(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The example's README: the six invalid lines are 44 to 49.
    for (line, reason) in [
        (44, "missing required field `lead_key`"),
        (45, "unknown source \"fax\""),
        (46, "unknown crm type \"teleport\""),
        (47, "occurred_at must be >= 0"),
        (48, "invalid JSON"),
        (49, "`attributes.employees` must be a string"),
    ] {
        let wanted = format!("line {line}: ");
        let hit = stderr
            .lines()
            .find(|l| l.contains(&wanted))
            .unwrap_or_else(|| panic!("no report for line {line} in:\n{stderr}"));
        assert!(hit.contains(reason), "line {line}: {hit}");
    }
    // Line 19 is the one duplicate (the README); line 43 is not one (14 events later).
    assert!(
        stderr.contains("49 lines, 43 events (1 duplicates)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("6 invalid, 5 leads, 23 records"),
        "{stderr}"
    );
    assert!(
        stderr.contains("mql=5 sal=2 sql=1 won=1 recycled=1 (rejected: 1)"),
        "{stderr}"
    );
    assert!(stderr.contains("warning=5 breach=4 met=4"), "{stderr}");
}

#[test]
fn replay_is_byte_identical_across_runs_and_output_file_matches_stdout() {
    let a = replay(&[]);
    let b = replay(&[]);
    assert_eq!(a.stdout, b.stdout);
    // Huge pages are the allocator's business: on or off (the default), the same records,
    // and turning them off worked (no warning).
    let huge = replay(&["--huge-pages"]);
    assert!(huge.status.success());
    assert_eq!(huge.stdout, a.stdout);
    let stderr = String::from_utf8_lossy(&a.stderr);
    assert!(!stderr.contains("huge pages"), "{stderr}");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("out.jsonl");
    let c = replay(&["--output", path.to_str().expect("utf-8")]);
    assert!(c.status.success());
    assert!(c.stdout.is_empty());
    assert_eq!(std::fs::read(&path).expect("output written"), a.stdout);
}

/// Replay, report and the service turn huge pages off in their own process unless
/// `--huge-pages` asks for them: the kernel's `THP_enabled` of the running command, read once
/// it has started a second thread (after the choice is made): replay and report wait on
/// standard input, the service on a broker that is not there (it is killed after).
#[cfg(target_os = "linux")]
#[test]
fn replay_report_and_run_go_without_huge_pages_unless_asked() {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let field = |status: &str, name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    let own = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let Some(inherited) = field(&own, "THP_enabled:") else {
        eprintln!("this kernel does not report THP_enabled (before 5.0): not checked");
        return;
    };
    let cfg = common::examples_dir().join("config.toml");
    let cfg = cfg.to_str().expect("utf-8 path");
    for (command, huge, want) in [
        ("replay", false, "0"),
        ("replay", true, inherited.as_str()),
        ("report", false, "0"),
        ("report", true, inherited.as_str()),
        ("run", false, "0"),
        ("run", true, inherited.as_str()),
    ] {
        let mut args = vec![command, "--config", cfg];
        if command != "run" {
            args.push("-");
        }
        if huge {
            args.push("--huge-pages");
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_leadflow"))
            .args(&args)
            // No broker listens on port 1: the service waits for one.
            .env("LEADFLOW__KAFKA__BROKERS", "127.0.0.1:1")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the leadflow binary runs");
        let path = format!("/proc/{}/status", child.id());
        let deadline = Instant::now() + Duration::from_secs(30);
        let seen = loop {
            let status = std::fs::read_to_string(&path).unwrap_or_default();
            let threads: usize = field(&status, "Threads:").map_or(0, |n| n.parse().unwrap_or(0));
            if threads >= 2 || Instant::now() > deadline {
                break (threads, field(&status, "THP_enabled:"));
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        drop(child.stdin.take()); // end of input: replay and report finish
        if command == "run" {
            let _ = child.kill();
        }
        let _ = child.wait();
        assert!(seen.0 >= 2, "{args:?}: no second thread within 30 s");
        assert_eq!(seen.1.as_deref(), Some(want), "{args:?}");
    }
}

#[test]
fn until_fires_the_timers_due_before_it() {
    // di@deltafreight.com re-enters mql at 1801065600000 (Wed 2027-01-27 11:00 EST): its
    // follow-up warning (14:00 EST) and breach (15:00 EST) are pending at the end of input.
    let out = replay(&["--until", "1802000000000"]);
    let all = records(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(all.len(), 25);
    let ids: Vec<&str> = all[23..]
        .iter()
        .map(|r| r["sla_event_id"].as_str().expect("sla record"))
        .collect();
    assert_eq!(
        ids,
        [
            "di@deltafreight.com/s/mql_follow_up/2/warning",
            "di@deltafreight.com/s/mql_follow_up/2/breach"
        ]
    );
    // Before the warning is due, nothing more fires.
    let out = replay(&["--until", "1801065600001"]);
    assert_eq!(records(&String::from_utf8_lossy(&out.stdout)).len(), 23);
}

#[test]
fn check_config_summarizes_or_names_the_bad_key() {
    let cfg = common::examples_dir().join("config.toml");
    let out = leadflow(&["check-config", cfg.to_str().expect("utf-8")]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("8 engagement rules, 4 fit rules"),
        "{stdout}"
    );
    assert!(stdout.contains("mql_follow_up: stage mql"), "{stdout}");

    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(
        &bad,
        text.replace("within = \"4h\"", "within = \"4 fortnights\""),
    )
    .expect("write");
    let out = leadflow(&["check-config", bad.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("sla[0].within") && stderr.contains("4 fortnights"),
        "{stderr}"
    );
}

#[test]
fn missing_input_file_is_a_clear_error() {
    let out = replay_file(Path::new("/nonexistent/x.jsonl"), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("opening /nonexistent/x.jsonl"));
}

/// The output is written on a thread of its own: a write that fails mid-stream (here a full
/// device, `/dev/full`) must stop the replay with the cause, not hang it or lose the error.
#[test]
fn a_failing_output_stops_the_replay_with_the_cause() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("in.jsonl");
    let gen = leadflow(&[
        "gen",
        "--leads",
        "2000",
        "--events",
        "40000",
        "-o",
        input.to_str().expect("utf-8"),
    ]);
    assert!(
        gen.status.success(),
        "{}",
        String::from_utf8_lossy(&gen.stderr)
    );
    if !Path::new("/dev/full").exists() {
        eprintln!("skipped: no /dev/full here");
        return;
    }
    let out = replay_file(&input, &["--until", "1796083200000", "-o", "/dev/full"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("writing the output") && err.contains("No space left on device"),
        "{err}"
    );
}

/// `-o` naming the input (here through a second path to the same file) used to create the
/// output first, emptying the input before it was read: now refused, the input kept.
#[test]
fn an_output_that_is_the_input_is_refused_and_the_input_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("in.jsonl");
    let example = common::examples_dir().join("input.jsonl");
    std::fs::copy(&example, &input).expect("copy the example");
    let before = std::fs::read(&input).expect("read");
    let other_spelling = dir.path().join(".").join("in.jsonl");
    let out = replay_file(&input, &["-o", other_spelling.to_str().expect("utf-8")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is the input file"), "{err}");
    assert_eq!(
        std::fs::read(&input).expect("read"),
        before,
        "the input is intact"
    );
}

/// A file saved with a UTF-8 byte order mark (some Windows tools write one) replays as
/// without it; a mark anywhere but the file's start stays invalid JSON.
#[test]
fn a_byte_order_mark_at_the_start_is_not_part_of_the_first_event() {
    let dir = tempfile::tempdir().expect("temp dir");
    let example = std::fs::read(common::examples_dir().join("input.jsonl")).expect("read");
    let with_bom = dir.path().join("bom.jsonl");
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend_from_slice(&example);
    std::fs::write(&with_bom, &bytes).expect("write");
    let plain = replay(&[]);
    let out = leadflow(&[
        "replay",
        "--config",
        common::examples_dir()
            .join("config.toml")
            .to_str()
            .expect("utf-8"),
        with_bom.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), plain.status.code());
    assert_eq!(out.stdout, plain.stdout, "the same records");
    let second = dir.path().join("bom2.jsonl");
    let mut bytes = b"\n\xEF\xBB\xBF".to_vec();
    bytes.extend_from_slice(&example);
    std::fs::write(&second, &bytes).expect("write");
    let out = leadflow(&[
        "replay",
        "--config",
        common::examples_dir()
            .join("config.toml")
            .to_str()
            .expect("utf-8"),
        second.to_str().expect("utf-8"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2: undecodable input"), "{err}");
}

#[test]
fn repo_examples_are_the_shared_ones() {
    // The README's demo uses the repo copy; it must not drift from the contract.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = root.join("../shared/examples-v2");
    if !shared.exists() {
        return; // a clone without ../shared has only the repo copy
    }
    for f in ["config.toml", "input.jsonl", "expected.jsonl", "README.md"] {
        let a = std::fs::read(root.join("examples").join(f)).expect("repo copy");
        let b = std::fs::read(shared.join(f)).expect("shared copy");
        assert!(
            a == b,
            "examples/{f} differs from ../shared/examples-v2/{f}: copy it again"
        );
    }
}

/// SPEC v1's example under v2: the same records, each SLA record with `response_business_ms`
/// added (SPEC §9). Its values are checked by rule rather than copied: null but for `met`;
/// for `sal_first_touch` (no calendar) equal to `response_ms`; for the business-hours
/// `mql_follow_up` at most `response_ms`.
#[test]
fn the_v1_example_gives_its_records_plus_response_business_ms() {
    let Some(dir) = common::v1_examples_dir() else {
        return; // a clone without ../shared
    };
    let arg = |f: &str| dir.join(f).to_str().expect("utf-8").to_string();
    let out = leadflow(&[
        "replay",
        "--config",
        &arg("config.toml"),
        &arg("input.jsonl"),
    ]);
    assert!(out.status.success());
    let expected = records(&std::fs::read_to_string(dir.join("expected.jsonl")).expect("v1"));
    let mut actual = records(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(actual.len(), expected.len());
    for (i, (e, a)) in expected.iter().zip(actual.iter_mut()).enumerate() {
        if a["record"] == "sla" {
            let obj = a.as_object_mut().expect("object");
            let business = obj
                .remove("response_business_ms")
                .unwrap_or_else(|| panic!("record {}: no response_business_ms", i + 1));
            match (obj["kind"].as_str(), obj["policy"].as_str()) {
                (Some("met"), Some("sal_first_touch")) => {
                    assert_eq!(business, obj["response_ms"], "record {}", i + 1)
                }
                (Some("met"), _) => assert!(
                    business.as_i64().expect("a number")
                        <= obj["response_ms"].as_i64().expect("a number"),
                    "record {}",
                    i + 1
                ),
                _ => assert!(business.is_null(), "record {}", i + 1),
            }
        }
        assert!(
            same(e, a),
            "record {}:\n  expected {e}\n  actual   {a}",
            i + 1
        );
    }
}
