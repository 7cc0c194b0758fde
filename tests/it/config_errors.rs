//! Every invalid setting fails at load with the key path, the value and what is allowed.

use std::collections::HashMap;

use leadflow::config::Settings;

fn example() -> String {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/config.toml");
    std::fs::read_to_string(dir).expect("examples/config.toml")
}

/// Loads `toml` and returns the error text, failing the test if it loads.
fn error_of(toml: &str) -> String {
    match Settings::from_toml(toml) {
        Ok(_) => panic!("config should be rejected:\n{toml}"),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "error {msg:?} should mention {p:?}");
    }
}

#[test]
fn the_example_config_loads() {
    let s = Settings::from_toml(&example()).expect("example loads");
    assert_eq!(s.rules.engagement.len(), 8);
    assert_eq!(s.rules.fit.len(), 4);
    assert_eq!(s.rules.sla.len(), 2);
    assert_eq!(s.clock_grace_ms, 30_000);
}

#[test]
fn bad_duration() {
    let msg = error_of(&example().replace("cooldown = \"6h\"", "cooldown = \"6 parsecs\""));
    assert_mentions(
        &msg,
        &[
            "scoring.engagement[4].cooldown",
            "6 parsecs",
            "duration such as",
        ],
    );
    let msg = error_of(&example().replace("half_life = \"14d\"", "half_life = \"0s\""));
    assert_mentions(&msg, &["scoring.half_life", "greater than 0"]);
}

#[test]
fn bad_regex_and_glob() {
    let msg = error_of(&example().replace("regex:@(rivalco|othervendor)", "regex:@(rivalco"));
    assert_mentions(
        &msg,
        &[
            "scoring.engagement[7].where.email",
            "invalid regular expression",
        ],
    );
    let msg = error_of(&example().replace("glob:U?", "glob:U[SK]"));
    assert_mentions(&msg, &["scoring.fit[3].match", "U[SK]", "only * and ?"]);
}

#[test]
fn unknown_calendar_stage_and_timezone() {
    let msg = error_of(&example().replace("calendar = \"us_east\"", "calendar = \"us_west\""));
    assert_mentions(
        &msg,
        &["sla[0].calendar", "us_west", "defined calendars: us_east"],
    );
    let msg = error_of(&example().replace("stage = \"sal\"", "stage = \"salsa\""));
    assert_mentions(&msg, &["sla[1].stage", "salsa", "new, mql, sal"]);
    let msg = error_of(&example().replace("America/New_York", "America/Gotham"));
    assert_mentions(
        &msg,
        &["calendars.us_east.timezone", "America/Gotham", "IANA"],
    );
}

#[test]
fn warn_before_must_be_shorter_than_within() {
    let msg = error_of(&example().replace("warn_before = \"1h\"", "warn_before = \"4h\""));
    assert_mentions(&msg, &["sla[0].warn_before", "4h", "shorter than within"]);
}

#[test]
fn malformed_business_hours() {
    let msg = error_of(&example().replace("mon = \"09:00-17:00\"", "mon = \"9 to 5\""));
    assert_mentions(
        &msg,
        &["calendars.us_east.hours.mon", "9 to 5", "HH:MM-HH:MM"],
    );
    let msg = error_of(&example().replace("mon = \"09:00-17:00\"", "monday = \"09:00-17:00\""));
    assert_mentions(&msg, &["calendars.us_east.hours", "monday", "mon, tue"]);
    let msg = error_of(&example().replace("\"2026-11-26\"", "\"26/11/2026\""));
    assert_mentions(
        &msg,
        &["calendars.us_east.holidays[0]", "26/11/2026", "YYYY-MM-DD"],
    );
}

#[test]
fn duplicate_names() {
    let msg = error_of(&example().replace("name = \"any_page\"", "name = \"pricing_page\""));
    assert_mentions(
        &msg,
        &["scoring.engagement[1].name", "pricing_page", "unique"],
    );
    let msg =
        error_of(&example().replace("name = \"sal_first_touch\"", "name = \"mql_follow_up\""));
    assert_mentions(&msg, &["sla[1].name", "mql_follow_up", "unique"]);
}

#[test]
fn unknown_keys_and_wrong_types() {
    let msg = error_of(&example().replace("points = 25", "points = 25\npointz = 3"));
    assert_mentions(&msg, &["scoring.engagement[2]", "unknown field `pointz`"]);
    let msg = error_of(&example().replace("points = 25", "points = \"lots\""));
    assert_mentions(&msg, &["scoring.engagement[2].points", "lots"]);
    let msg = error_of(&example().replace("[clock]", "[clocks]"));
    assert_mentions(&msg, &["unknown field `clocks`"]);
}

#[test]
fn crm_types_sources_and_until_are_checked() {
    let msg = error_of(&example().replace(
        "{ source = \"crm\", type = \"sales_activity\" }",
        "{ source = \"crm\", type = \"phone_call\" }",
    ));
    assert_mentions(
        &msg,
        &["sla[1].until[0].type", "phone_call", "sales_activity"],
    );
    let msg = error_of(&example().replace(
        "source = \"web\", type = \"demo_request\"",
        "source = \"fax\", type = \"demo_request\"",
    ));
    assert_mentions(
        &msg,
        &["funnel.fast_track[0].source", "fax", "web, email, crm"],
    );
    let msg = error_of(&example().replace("until = \"stage_exit\"", "until = \"forever\""));
    assert_mentions(&msg, &["sla[0].until", "forever", "stage_exit"]);
}

#[test]
fn grades_must_descend_and_fit_rules_need_one_test() {
    let msg =
        error_of(&example().replace("{ grade = \"B\", min = 40 }", "{ grade = \"B\", min = 70 }"));
    assert_mentions(&msg, &["scoring.grades[1].min", "70", "highest first"]);
    let msg = error_of(&example().replace("gte = 2000", "match = \"x\"\ngte = 2000"));
    assert_mentions(&msg, &["scoring.fit[2].match", "not both"]);
    // A lead keeps its grade in a byte: 256 grades are refused, 255 load.
    let grades = |n: usize| {
        let list: Vec<String> = (0..n)
            .map(|i| format!("{{ grade = \"G{i}\", min = {} }}", 1000 - i as i64))
            .collect();
        let text = example();
        let start = text.find("grades = [").expect("the example lists grades");
        let end = start + text[start..].find(']').expect("the list ends");
        format!(
            "{}grades = [{}]{}",
            &text[..start],
            list.join(", "),
            &text[end + 1..]
        )
    };
    let msg = error_of(&grades(256));
    assert_mentions(&msg, &["scoring.grades", "256", "at most 255"]);
    let s = Settings::from_toml(&grades(255)).expect("255 grades load");
    assert_eq!(
        s.rules.grade_name(Some(254)),
        "G254",
        "the last grade is kept"
    );
}

#[test]
fn environment_overrides_file_values_and_are_validated() {
    let env = |k: &str, v: &str| Some(HashMap::from([(k.to_string(), v.to_string())]));
    let s = Settings::from_sources(&example(), env("LEADFLOW__FUNNEL__MQL_THRESHOLD", "80"))
        .expect("override loads");
    assert_eq!(s.rules.funnel.mql_threshold, 80.0);
    let s =
        Settings::from_sources(&example(), env("LEADFLOW__CLOCK__GRACE", "45s")).expect("loads");
    assert_eq!(s.clock_grace_ms, 45_000);
    let err = Settings::from_sources(&example(), env("LEADFLOW__CLOCK__GRACE", "soon"))
        .expect_err("bad env value")
        .to_string();
    assert_mentions(&err, &["clock.grace", "soon"]);
    let err = Settings::from_sources(&example(), env("LEADFLOW__FUNNEL__MQL_TRESHOLD", "1"))
        .expect_err("typo in env key")
        .to_string();
    assert_mentions(&err, &["unknown field `mql_treshold`"]);
}

#[test]
fn service_settings_are_checked() {
    let msg = error_of(&format!("{}\n[log]\nformat = \"xml\"\n", example()));
    assert_mentions(&msg, &["log.format", "xml", "pretty, json"]);
    let msg = error_of(&format!("{}\n[http]\nlisten = \"port 80\"\n", example()));
    assert_mentions(&msg, &["http.listen", "port 80", "127.0.0.1:9464"]);
    let msg = error_of(&format!("{}\n[formats]\nweb = \"protobuf\"\n", example()));
    assert_mentions(
        &msg,
        &["formats.web", "protobuf", "avro, avro-confluent, json"],
    );
    let msg = error_of(&format!("{}\n[topics]\ndlq = \"leads.web\"\n", example()));
    assert_mentions(&msg, &["topics", "leads.web", "distinct"]);
    let msg = error_of(&format!(
        "{}\n[schema_registry]\nurl = \"registry:8081\"\n",
        example()
    ));
    assert_mentions(&msg, &["schema_registry.url", "registry:8081", "http://"]);
    let msg = error_of(&format!("{}\n[snapshots]\nretain = 0\n", example()));
    assert_mentions(&msg, &["snapshots.retain", "at least 1"]);
}

#[test]
fn transaction_settings_are_checked() {
    use leadflow::config::Transactions;
    let s = Settings::from_toml(&example()).expect("loads");
    assert_eq!(s.service.transactions, Transactions::Auto, "the default");
    assert_eq!(
        (
            s.service.transaction_timeout_ms,
            s.service.commit_interval_ms
        ),
        (60_000, 100)
    );
    let msg = error_of(&format!("{}\n[kafka]\ntransactions = \"yes\"\n", example()));
    assert_mentions(&msg, &["kafka.transactions", "yes", "auto, on, off"]);
    let msg = error_of(&format!(
        "{}\n[kafka]\ntransaction_timeout = \"1h\"\n",
        example()
    ));
    assert_mentions(&msg, &["kafka.transaction_timeout", "1h", "15m"]);
    let msg = error_of(&format!(
        "{}\n[kafka]\ntransaction_timeout = \"2s\"\n[run]\ncommit_interval = \"1500ms\"\n",
        example()
    ));
    assert_mentions(
        &msg,
        &[
            "run.commit_interval",
            "1500ms",
            "half of kafka.transaction_timeout",
        ],
    );
    // A StatefulSet passes the pod name through the environment.
    let env = Some(HashMap::from([(
        "LEADFLOW__KAFKA__TRANSACTIONAL_ID".to_string(),
        "leadflow-2".to_string(),
    )]));
    let s = Settings::from_sources(&example(), env).expect("override loads");
    assert_eq!(s.service.transactional_id.as_deref(), Some("leadflow-2"));
}

/// Settings each valid alone but unworkable together are refused at load, naming both keys
/// (issue 12: a 1 MiB input limit above the producer's 1,000,000-byte `message.max.bytes`
/// made every restart die on the same message; a registry timeout above the poll interval
/// made ingest leave its group on every message).
#[test]
fn settings_that_cannot_work_together_are_refused() {
    let s = Settings::from_toml(&example()).expect("loads");
    assert_eq!(
        s.rules.limits.max_message_bytes, 1_000_000,
        "the default input limit is what the producer can send by default"
    );
    let msg = error_of(&format!(
        "{}\n[limits]\nmax_message_bytes = 1048576\n",
        example()
    ));
    assert_mentions(
        &msg,
        &[
            "limits.max_message_bytes",
            "1048576",
            "kafka.properties.\"message.max.bytes\" (1000000, librdkafka's default)",
        ],
    );
    // Raising the producer's limit with it is fine.
    Settings::from_toml(&format!(
        "{}\n[limits]\nmax_message_bytes = 1048576\n[kafka.properties]\n\"message.max.bytes\" = \"2000000\"\n",
        example()
    ))
    .expect("a producer limit above the input limit loads");
    let msg = error_of(&format!(
        "{}\n[limits]\nmax_message_bytes = 4096\n[kafka.properties]\n\"message.max.bytes\" = \"8000\"\n",
        example()
    ));
    assert_mentions(&msg, &["message.max.bytes", "8000", "at least 16384"]);
    let msg = error_of(&format!(
        "{}\n[kafka.properties]\n\"message.max.bytes\" = \"lots\"\n",
        example()
    ));
    assert_mentions(&msg, &["message.max.bytes", "lots", "whole number"]);

    // The issue's example: a 20 s registry timeout with a 6 s poll interval.
    let registry = "[formats]\nweb = \"avro-confluent\"\n[schema_registry]\nurl = \"http://registry:8081\"\ntimeout = \"20s\"\n";
    let msg = error_of(&format!(
        "{}\n{registry}[kafka.properties]\n\"max.poll.interval.ms\" = \"6000\"\n",
        example()
    ));
    assert_mentions(
        &msg,
        &[
            "schema_registry.timeout",
            "20000 ms",
            "run.drain_timeout",
            "max.poll.interval.ms\" (6000 ms)",
            "livelock",
        ],
    );
    // Without a registry in use, the flush alone must fit.
    let msg = error_of(&format!(
        "{}\n[kafka.properties]\n\"max.poll.interval.ms\" = \"6000\"\n",
        example()
    ));
    assert_mentions(&msg, &["run.drain_timeout", "15000 ms", "6000 ms"]);
    Settings::from_toml(&format!(
        "{}\n{registry}[run]\ndrain_timeout = \"5s\"\n[kafka.properties]\n\"max.poll.interval.ms\" = \"30000\"\n",
        example()
    ))
    .expect("20 s + 5 s fits in 30 s");
}

#[test]
fn ingest_key_mismatch_setting() {
    use leadflow::config::KeyMismatch;
    let s = Settings::from_toml(&example()).expect("loads");
    assert_eq!(s.service.key_mismatch, KeyMismatch::Count, "the default");
    let s = Settings::from_toml(&format!(
        "{}\n[ingest]\nkey_mismatch = \"dead_letter\"\n",
        example()
    ))
    .expect("loads");
    assert_eq!(s.service.key_mismatch, KeyMismatch::DeadLetter);
    let msg = error_of(&format!(
        "{}\n[ingest]\nkey_mismatch = \"drop\"\n",
        example()
    ));
    assert_mentions(&msg, &["ingest.key_mismatch", "drop", "count, dead_letter"]);
}

#[test]
fn missing_required_settings() {
    let msg = error_of("[scoring]\nhalf_life = \"1d\"\n");
    assert_mentions(&msg, &["the top level", "missing", "funnel"]);
    let msg = error_of("[funnel]\nmql_min_fit = 3\n");
    assert_mentions(&msg, &["`funnel`", "missing", "mql_threshold"]);
    // A field missing in a list entry is named with its full dotted path.
    let msg = error_of(&example().replacen("within = \"4h\"\n", "", 1));
    assert_mentions(&msg, &["`sla[0]`", "missing", "\"sla[0].within\""]);
}

#[test]
fn the_documented_production_example_loads() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .expect("docs/configuration.md");
    let block = doc
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a toml example");
    let s =
        Settings::from_toml(&format!("{block}\n[funnel]\nmql_threshold = 50\n")).expect("loads");
    assert_eq!(
        s.service.schema_registry_url.as_deref(),
        Some("https://schema-registry:8081")
    );
    assert!(s.service.log_json);
    assert_eq!(s.service.properties["security.protocol"], "SASL_SSL");
}

#[test]
fn bad_snapshot_stores_fail_at_startup() {
    let with = |snapshots: &str| format!("{}\n[snapshots]\n{snapshots}\n", example());
    let msg = error_of(&with("url = \"ftp://files.example/leadflow\""));
    assert_mentions(
        &msg,
        &["snapshots.url", "ftp://files.example", "s3://", "file://"],
    );
    let msg = error_of(&with("url = \"s3:///prefix-only\""));
    assert_mentions(&msg, &["snapshots.url", "BUCKET"]);
    let msg = error_of(&with("url = \"s3://bkt/p\"\ndir = \"/var/lib/x\""));
    assert_mentions(&msg, &["snapshots.dir", "not both"]);
    let msg = error_of(&with("endpoint = \"http://minio:9000\""));
    assert_mentions(&msg, &["snapshots.endpoint", "s3://BUCKET"]);
    let msg = error_of(&with(
        "url = \"gs://b/p\"\nendpoint = \"http://minio:9000\"",
    ));
    assert_mentions(&msg, &["snapshots.endpoint", "S3-compatible", "gs://"]);
    let msg = error_of(&with("url = \"s3://bkt/p\"\nendpoint = \"minio:9000\""));
    assert_mentions(&msg, &["snapshots.endpoint", "http://"]);
    // What is allowed: a bucket with an endpoint, and a folder as a file URL.
    let s = Settings::from_toml(&with(
        "url = \"s3://acme/prod\"\nendpoint = \"http://127.0.0.1:9000\"",
    ))
    .expect("s3 with an endpoint");
    assert_eq!(s.service.snapshot_store.url, "s3://acme/prod");
    let s = Settings::from_toml(&with("dir = \"/var/lib/leadflow/snapshots\"")).expect("a folder");
    assert_eq!(
        s.service.snapshot_store.url,
        "file:///var/lib/leadflow/snapshots/"
    );
}

#[test]
fn bad_notify_settings_fail_at_startup_without_showing_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url_file = dir.path().join("hook.url");
    std::fs::write(&url_file, "https://hooks.example/T0/B0/SECRETPART\n").expect("file");
    let target = format!(
        "[notify.targets.reps]\nkind = \"slack\"\nurl_file = \"{}\"\n",
        url_file.display()
    );
    let with = |notify: &str| format!("{}\n[notify]\n{notify}", example());
    let route = "[[notify.routes]]\nrecord = \"transition\"\ntarget = \"reps\"\n";
    // A plain URL in the file is refused, and not repeated in the error.
    let msg = error_of(&with(
        "[notify.targets.x]\nkind = \"slack\"\nurl = \"https://hooks.example/T0/B0/SECRETPART\"\n",
    ));
    assert_mentions(&msg, &["notify.targets.x.url", "url_env", "url_file"]);
    assert!(!msg.contains("SECRETPART"), "{msg}");
    // A variable that is not set.
    let msg = error_of(&with(
        "[notify.targets.x]\nkind = \"webhook\"\nurl_env = \"LEADFLOW_TEST_NO_SUCH_VARIABLE\"\n",
    ));
    assert_mentions(
        &msg,
        &[
            "notify.targets.x.url_env",
            "LEADFLOW_TEST_NO_SUCH_VARIABLE",
            "not set",
        ],
    );
    // A route to a target that does not exist, a policy that does not exist, to_stage on an
    // SLA route, an unknown timezone, a kind that does not exist.
    let msg = error_of(&with(&format!(
        "{target}[[notify.routes]]\nrecord = \"transition\"\ntarget = \"managers\"\n"
    )));
    assert_mentions(&msg, &["notify.routes[0].target", "managers", "reps"]);
    let msg = error_of(&with(&format!(
        "{target}[[notify.routes]]\nrecord = \"sla\"\npolicy = [\"no_such_policy\"]\ntarget = \"reps\"\n"
    )));
    assert_mentions(
        &msg,
        &["notify.routes[0].policy", "no_such_policy", "mql_follow_up"],
    );
    let msg = error_of(&with(&format!(
        "{target}[[notify.routes]]\nrecord = \"sla\"\nto_stage = [\"mql\"]\ntarget = \"reps\"\n"
    )));
    assert_mentions(
        &msg,
        &["notify.routes[0].to_stage", "set record = \"transition\""],
    );
    let msg = error_of(&with(&format!(
        "timezone = \"Mars/Olympus\"\n{target}{route}"
    )));
    assert_mentions(&msg, &["notify.timezone", "Mars/Olympus", "IANA"]);
    let msg = error_of(&with(
        "[notify.targets.x]\nkind = \"pager\"\nurl_env = \"HOME\"\n",
    ));
    assert_mentions(&msg, &["notify.targets.x.kind", "pager", "slack, webhook"]);
    let msg = error_of(&with(&format!("give_up_after = \"0s\"\n{target}{route}")));
    assert_mentions(&msg, &["notify.give_up_after", "greater than 0"]);
    assert!(!msg.contains("Some("), "{msg}");
    // And a good one: on in `run`, the target resolved from its file.
    let s = Settings::from_toml(&with(&format!("{target}{route}"))).expect("valid");
    assert!(s.notify.enabled);
    assert_eq!(
        s.notify.targets[0].url.expose(),
        "https://hooks.example/T0/B0/SECRETPART"
    );
    assert!(
        !format!("{:?}", s.notify).contains("SECRETPART"),
        "Debug redacts secrets"
    );
}
