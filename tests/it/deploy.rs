//! The Grafana dashboard and the Prometheus alert rules use only metrics and labels that
//! leadflow really exports (promtool checks their syntax in CI).

use std::collections::{BTreeMap, BTreeSet};

use leadflow::metrics::Metrics;
use regex::Regex;

/// Series name -> label names, from the real registry with one sample in every vector.
fn exported() -> BTreeMap<String, BTreeSet<String>> {
    let m = Metrics::new().expect("metrics");
    m.events.with_label_values(&["web", "page_view"]).inc();
    m.invalid.with_label_values(&["undecodable"]).inc();
    m.transitions.with_label_values(&["new", "mql"]).inc();
    m.won_amount.with_label_values(&["mql"]).inc_by(1.0);
    m.sla_records.with_label_values(&["p", "met"]).inc();
    m.response_seconds.with_label_values(&["p"]).observe(1.0);
    m.response_business_seconds
        .with_label_values(&["p"])
        .observe(1.0);
    m.leads.with_label_values(&["new"]).set(1);
    m.consumer_lag.with_label_values(&["state"]).set(1);
    m.group_lag.with_label_values(&["state"]).set(1);
    m.group_lag_known.with_label_values(&["state"]).set(1);
    m.assigned_partitions.with_label_values(&["state"]).set(1);
    m.snapshots_skipped.with_label_values(&["corrupt"]).inc();
    m.clock_skew_seconds.with_label_values::<&str>(&[]).set(0.1);
    m.notify_failed
        .with_label_values(&["crm", "rejected"])
        .inc();
    m.notify_queue_depth.with_label_values(&["crm"]).set(1);
    let mut out = BTreeMap::new();
    for family in m.registry.gather() {
        let labels: BTreeSet<String> = family
            .get_metric()
            .iter()
            .flat_map(|x| x.get_label().iter().map(|l| l.name().to_string()))
            .collect();
        let name = family.name().to_string();
        if family.get_field_type() == prometheus::proto::MetricType::HISTOGRAM {
            let mut with_le = labels.clone();
            with_le.insert("le".into());
            out.insert(format!("{name}_bucket"), with_le);
            out.insert(format!("{name}_sum"), labels.clone());
            out.insert(format!("{name}_count"), labels.clone());
        }
        out.insert(name, labels);
    }
    out
}

fn check_expr(expr: &str, known: &BTreeMap<String, BTreeSet<String>>, origin: &str) {
    let names = Regex::new(r"leadflow_[a-z_]+").expect("regex");
    let by = Regex::new(r"by \(([^)]*)\)").expect("regex");
    let used: Vec<&str> = names.find_iter(expr).map(|m| m.as_str()).collect();
    assert!(
        !used.is_empty() || expr.contains("hour()"),
        "{origin}: no leadflow metric in {expr}"
    );
    let mut labels: BTreeSet<String> = ["le", "instance", "job"].map(String::from).into();
    for name in &used {
        let l = known
            .get(*name)
            .unwrap_or_else(|| panic!("{origin}: {name} is not exported (in {expr})"));
        labels.extend(l.iter().cloned());
    }
    for group in by.captures_iter(expr) {
        for label in group[1].split(',').map(str::trim).filter(|l| !l.is_empty()) {
            assert!(
                labels.contains(label),
                "{origin}: label {label} does not exist in {expr}"
            );
        }
    }
}

#[test]
fn dashboard_queries_use_exported_metrics_and_labels() {
    let known = exported();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana/leadflow.json"
    ))
    .expect("dashboard");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    let mut titles = Vec::new();
    for p in panels {
        let title = p["title"].as_str().expect("title");
        titles.push(title.to_string());
        for t in p["targets"].as_array().expect("targets") {
            check_expr(t["expr"].as_str().expect("expr"), &known, title);
        }
    }
    for wanted in [
        "Funnel flow",
        "MQL rate",
        "response time P50 / P95",
        "breaches",
        "lag",
        "Snapshot age",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(wanted)),
            "no panel about {wanted}: {titles:?}"
        );
    }
}

#[test]
fn alert_rules_use_exported_metrics_and_labels() {
    let known = exported();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/prometheus/alerts.yml"
    ))
    .expect("alerts");
    // Each rule's `expr:` block: the line itself, or the indented lines after `expr: |`.
    let lines: Vec<&str> = text.lines().collect();
    let mut exprs = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if let Some(rest) = line.trim_start().strip_prefix("expr:") {
            let mut e = rest.trim().trim_start_matches('|').to_string();
            let indent = line.len() - line.trim_start().len();
            for next in &lines[i + 1..] {
                if next.trim().is_empty() || next.len() - next.trim_start().len() <= indent {
                    break;
                }
                e.push(' ');
                e.push_str(next.trim());
            }
            exprs.push(e);
        }
    }
    assert_eq!(exprs.len(), 18);
    for e in &exprs {
        check_expr(e, &known, "alerts.yml");
    }
    for alert in [
        "SlaBreachRate",
        "NoMqlsDuringBusinessHours",
        "ConsumerLag",
        "SnapshotTooOld",
        "NotReady",
        "TransactionsAborted",
        "CommitsSlow",
        "PartitionStopped",
        "LagWithoutOwner",
        "SnapshotsFailing",
        "SnapshotSkipped",
        "SchemaRegistryUnavailable",
        "ClockAhead",
        "KeyMismatch",
        "NotificationsFailing",
        "NotificationsBehind",
    ] {
        assert!(
            text.contains(&format!("alert: Leadflow{alert}")),
            "missing {alert}"
        );
    }
}
