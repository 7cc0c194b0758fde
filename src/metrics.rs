//! Prometheus metrics. Base units (seconds, bytes), `_total` counters, bounded labels (never a
//! lead key: event types outside SPEC's known lists are `other`, policies come from config).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::model::event::{CrmType, Source, KNOWN_EMAIL_TYPES, KNOWN_WEB_TYPES};

/// Response-time buckets: resolve 1, 5, 15 minutes, 1 hour, 4 hours, 1 day (and around).
pub const RESPONSE_BUCKETS: [f64; 11] = [
    60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0, 172800.0, 604800.0,
];
const LAG_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 3600.0, 86400.0, 604800.0,
];
/// Delivery latency of notifications: a second is the promise, minutes are retries.
const NOTIFY_BUCKETS: [f64; 11] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0, 120.0, 600.0,
];
/// Slices of the state thread's time: a checkpoint should cost it about a millisecond at once.
const PAUSE_BUCKETS: [f64; 10] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0];
const DURATION_BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0];

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The `type` label: the type itself when SPEC knows it for the source, else `other`.
pub fn type_label(source: Source, event_type: &str) -> &str {
    let known = match source {
        Source::Web => KNOWN_WEB_TYPES.contains(&event_type),
        Source::Email => KNOWN_EMAIL_TYPES.contains(&event_type),
        Source::Crm => CrmType::parse(event_type).is_some(),
    };
    if known {
        event_type
    } else {
        "other"
    }
}

pub struct Metrics {
    pub registry: Registry,
    pub events: IntCounterVec,
    pub invalid: IntCounterVec,
    pub duplicates: IntCounter,
    pub transitions: IntCounterVec,
    /// Leads reaching sal, sql, won or lost, by path: `mql` (an MQL before) or `direct`.
    pub funnel_reached: IntCounterVec,
    /// The `amount` of `opportunity_won` events that moved a lead to won, by path.
    pub won_amount: prometheus::CounterVec,
    /// Wins whose `amount` was missing or did not parse (not summed), by reason.
    pub won_amount_unsummed: IntCounterVec,
    pub sla_records: IntCounterVec,
    pub response_seconds: HistogramVec,
    pub response_business_seconds: HistogramVec,
    pub event_time_lag_seconds: Histogram,
    pub leads: IntGaugeVec,
    pub leads_in_memory: IntGauge,
    pub open_sla_clocks: IntGauge,
    pub evicted_leads: IntCounterVec,
    pub sla_clocks_refused: IntCounter,
    pub consumer_lag: IntGaugeVec,
    pub snapshot_duration_seconds: Histogram,
    pub checkpoint_pause_seconds: Histogram,
    pub snapshot_bytes: IntGauge,
    pub snapshot_age_seconds: IntGauge,
    pub recovery_duration_seconds: Histogram,
    pub producer_errors: IntCounter,
    pub notify_delivered: IntCounterVec,
    pub notify_retries: IntCounterVec,
    pub notify_failed: IntCounterVec,
    pub notify_latency_seconds: HistogramVec,
    pub notify_queue_depth: IntGaugeVec,
    pub output_transactions: IntGauge,
    pub transaction_commit_seconds: Histogram,
    pub transaction_commit_wait_seconds: Histogram,
    pub transaction_handover_seconds: Histogram,
    pub transactions_aborted: IntCounter,
    pub assigned_partitions: IntGaugeVec,
    pub partitions_stopped: IntGauge,
    pub partition_stops: IntCounterVec,
    pub ready: IntGauge,
    pub key_mismatch: IntCounter,
    pub schema_registry_failures: IntCounter,
    pub ingest_paused_partitions: IntGauge,
    pub snapshot_failures: IntCounter,
    pub state_records: IntCounter,
    pub snapshots_skipped: IntCounterVec,
    pub group_lag: IntGaugeVec,
    pub group_lag_known: IntGaugeVec,
    /// No labels; created at the first measurement, so absent until then.
    pub clock_skew_seconds: prometheus::GaugeVec,
    pub ticks_clamped: IntCounter,
    /// Wall time of the last snapshot (or of the start), for `snapshot_age_seconds`.
    pub last_snapshot_ms: AtomicI64,
}

macro_rules! reg {
    ($registry:expr, $metric:expr) => {{
        let m = $metric.context("defining a metric")?;
        $registry
            .register(Box::new(m.clone()))
            .context("registering a metric")?;
        m
    }};
}

impl Metrics {
    pub fn new() -> anyhow::Result<Metrics> {
        let r = Registry::new();
        let hist = |name: &str, help: &str, buckets: &[f64]| {
            HistogramOpts::new(name, help).buckets(buckets.to_vec())
        };
        let m = Metrics {
            events: reg!(r, IntCounterVec::new(
                Opts::new("leadflow_events_total", "Valid events consumed by ingest, by source and type (unknown web/email types are `other`)."),
                &["source", "type"]
            )),
            invalid: reg!(r, IntCounterVec::new(
                Opts::new("leadflow_invalid_events_total", "Invalid inputs sent to the dead-letter topic, by reason."),
                &["reason"]
            )),
            duplicates: reg!(r, IntCounter::new(
                "leadflow_duplicate_events_total",
                "Events ignored because their id was among the lead's last 8."
            )),
            transitions: reg!(r, IntCounterVec::new(
                Opts::new("leadflow_transitions_total", "Funnel stage transitions emitted, by from and to stage."),
                &["from", "to"]
            )),
            funnel_reached: reg!(r, IntCounterVec::new(
                Opts::new("leadflow_funnel_reached_total", "Leads that reached sal, sql, won or lost, by path: mql (the lead was an MQL before) or direct (sales-sourced)."),
                &["stage", "path"]
            )),
            won_amount: reg!(r, prometheus::CounterVec::new(
                Opts::new("leadflow_won_amount_total", "Sum of the amount attribute of opportunity_won events that moved a lead to won, by path (mql or direct)."),
                &["path"]
            )),
            won_amount_unsummed: reg!(r, IntCounterVec::new(
                Opts::new("leadflow_won_amount_unsummed_total", "Wins whose amount was not summed, by reason (missing, invalid)."),
                &["reason"]
            )),
            sla_records: reg!(r, IntCounterVec::new(
                Opts::new("leadflow_sla_records_total", "SLA records emitted, by policy and kind (warning, breach, met)."),
                &["policy", "kind"]
            )),
            response_seconds: reg!(r, HistogramVec::new(
                hist("leadflow_lead_response_seconds", "Lead response time: from the SLA clock's start to the event that met it (event time).", &RESPONSE_BUCKETS),
                &["policy"]
            )),
            response_business_seconds: reg!(r, HistogramVec::new(
                hist("leadflow_lead_response_business_seconds", "Lead response time in business time: the open hours of the policy's calendar between the SLA clock's start and the event that met it (clock time for a policy without a calendar).", &RESPONSE_BUCKETS),
                &["policy"]
            )),
            event_time_lag_seconds: reg!(r, Histogram::with_opts(hist(
                "leadflow_event_time_lag_seconds",
                "Wall time minus event time when the state stage applies an event.",
                &LAG_BUCKETS
            ))),
            leads: reg!(r, IntGaugeVec::new(
                Opts::new("leadflow_leads", "Leads in memory on this instance, by funnel stage."),
                &["stage"]
            )),
            leads_in_memory: reg!(r, IntGauge::new("leadflow_leads_in_memory", "Leads held in memory on this instance.")),
            open_sla_clocks: reg!(r, IntGauge::new("leadflow_open_sla_clocks", "SLA clocks running on this instance.")),
            evicted_leads: reg!(r, IntCounterVec::new(
                Opts::new("leadflow_evicted_leads_total", "Leads evicted under [limits], by reason (inactive, terminal, max_leads)."),
                &["reason"]
            )),
            sla_clocks_refused: reg!(r, IntCounter::new(
                "leadflow_sla_clocks_refused_total",
                "SLA clocks not started because limits.max_pending_timers_per_partition was reached."
            )),
            consumer_lag: reg!(r, IntGaugeVec::new(
                Opts::new("leadflow_consumer_lag_records", "Records not yet consumed on the partitions this instance owns (high watermark minus position), by stage; 0 when it owns none: see leadflow_consumer_group_lag_records."),
                &["stage"]
            )),
            snapshot_duration_seconds: reg!(r, Histogram::with_opts(hist(
                "leadflow_snapshot_duration_seconds",
                "Time from the start of one partition snapshot (its state) until it is durable in the store: encoded in slices beside the fold, then written in the background.",
                &DURATION_BUCKETS
            ))),
            checkpoint_pause_seconds: reg!(r, Histogram::with_opts(hist(
                "leadflow_checkpoint_pause_seconds",
                "Time the state thread spends on one slice of a checkpoint (the commit and start of snapshots, or one encoding step): what checkpoints add to the fold's latency.",
                &PAUSE_BUCKETS
            ))),
            snapshot_bytes: reg!(r, IntGauge::new("leadflow_snapshot_bytes", "Size of the last snapshot written.")),
            snapshot_age_seconds: reg!(r, IntGauge::new(
                "leadflow_snapshot_age_seconds",
                "Age of the state in the newest snapshot written (seconds since it was started), or seconds since the start before the first."
            )),
            recovery_duration_seconds: reg!(r, Histogram::with_opts(hist(
                "leadflow_recovery_duration_seconds",
                "Time to recover an assigned partition (snapshot load and output tails).",
                &DURATION_BUCKETS
            ))),
            notify_delivered: reg!(r, IntCounterVec::new(
                Opts::new("leadflow_notify_delivered_total", "Notifications delivered (a 2xx answer), by target."),
                &["target"]
            )),
            notify_retries: reg!(r, IntCounterVec::new(
                Opts::new("leadflow_notify_retries_total", "Notification attempts retried (timeouts, connection errors, 5xx, 429), by target."),
                &["target"]
            )),
            notify_failed: reg!(r, IntCounterVec::new(
                Opts::new("leadflow_notify_failed_total", "Notifications written to the notify dead-letter topic, by target and reason: rejected (a 4xx other than 429), gave_up (notify.give_up_after passed); undecodable output records under target \"-\"."),
                &["target", "reason"]
            )),
            notify_latency_seconds: reg!(r, HistogramVec::new(
                hist("leadflow_notify_delivery_latency_seconds", "From the output record's write (its Kafka timestamp) to its delivery, by target; retries and rate limits included.", &NOTIFY_BUCKETS),
                &["target"]
            )),
            notify_queue_depth: reg!(r, IntGaugeVec::new(
                Opts::new("leadflow_notify_queue_depth", "Notifications waiting for their target, by target."),
                &["target"]
            )),
            producer_errors: reg!(r, IntCounter::new(
                "leadflow_producer_errors_total",
                "Records the broker did not acknowledge (each stops the stage; nothing is dropped)."
            )),
            output_transactions: reg!(r, IntGauge::new(
                "leadflow_output_transactions",
                "1 when the state stage writes in transactions (zombie fencing on), else 0."
            )),
            transaction_commit_seconds: reg!(r, Histogram::with_opts(hist(
                "leadflow_transaction_commit_seconds",
                "Time to commit one state-stage transaction (positions, then end of transaction).",
                &DURATION_BUCKETS
            ))),
            transaction_commit_wait_seconds: reg!(r, Histogram::with_opts(hist(
                "leadflow_transaction_commit_wait_seconds",
                "Time the state thread waited for a commit: the commits before a snapshot, a revoke or the shutdown (the periodic ones run on a committer thread while the fold goes on).",
                &DURATION_BUCKETS
            ))),
            transaction_handover_seconds: reg!(r, Histogram::with_opts(hist(
                "leadflow_transaction_handover_seconds",
                "Time the state thread waits at each periodic commit for the acks of the transaction it hands to the committer thread (two producers have no order between them, so the next transaction's records wait for these acks).",
                &DURATION_BUCKETS
            ))),
            transactions_aborted: reg!(r, IntCounter::new(
                "leadflow_transactions_aborted_total",
                "State-stage transactions aborted: refused commits (a stale group generation) and lost partitions."
            )),
            assigned_partitions: reg!(r, IntGaugeVec::new(
                Opts::new(
                    "leadflow_assigned_partitions",
                    "Partitions this instance's consumer owns, by stage: source partitions (ingest), internal topic partitions (state)."
                ),
                &["stage"]
            )),
            partitions_stopped: reg!(r, IntGauge::new(
                "leadflow_partitions_stopped",
                "Assigned partitions stopped because their stored position disagrees with the log (not ready while any is)."
            )),
            partition_stops: reg!(r, IntCounterVec::new(
                Opts::new(
                    "leadflow_partition_stops_total",
                    "Partitions stopped, by reason: log_recreated, history_deleted, offset_reset."
                ),
                &["reason"]
            )),
            ready: reg!(r, IntGauge::new(
                "leadflow_ready",
                "1 when every assigned partition has recovered (what /health/ready reports)."
            )),
            key_mismatch: reg!(r, IntCounter::new(
                "leadflow_key_mismatch_total",
                "Source messages whose key is not the payload's lead_key (partitioned by the lead_key; dead-lettered with ingest.key_mismatch = dead_letter)."
            )),
            schema_registry_failures: reg!(r, IntCounter::new(
                "leadflow_schema_registry_failures_total",
                "Times the schema registry could not be asked (timeout, refused, 5xx); the message waits, its partition paused, and is retried with backoff."
            )),
            ingest_paused_partitions: reg!(r, IntGauge::new(
                "leadflow_ingest_paused_partitions",
                "Source partitions paused while their next message waits for the schema registry."
            )),
            snapshot_failures: reg!(r, IntCounter::new(
                "leadflow_snapshot_failures_total",
                "Snapshots that could not be written (a full disk, an unreachable bucket); retried with backoff, processing goes on, not ready until one succeeds."
            )),
            state_records: reg!(r, IntCounter::new(
                "leadflow_state_records_total",
                "Records of the internal log folded by the state stage (events and ticks), the re-fold after a recovery included: after a takeover it shows how much of the log was folded again."
            )),
            snapshots_skipped: reg!(r, IntCounterVec::new(
                Opts::new(
                    "leadflow_snapshots_skipped_total",
                    "Snapshot files passed over at recovery, by reason: not_a_snapshot, unsupported_version, corrupt, config_changed, unreadable."
                ),
                &["reason"]
            )),
            group_lag: reg!(r, IntGaugeVec::new(
                Opts::new(
                    "leadflow_consumer_group_lag_records",
                    "Records of the stage's topics not yet committed by its consumer group, whichever member owns them: log end minus committed offset (log end minus log start where nothing is committed)."
                ),
                &["stage"]
            )),
            group_lag_known: reg!(r, IntGaugeVec::new(
                Opts::new(
                    "leadflow_consumer_group_lag_known",
                    "1 when leadflow_consumer_group_lag_records is current (the last read of committed offsets and log ends succeeded), else 0."
                ),
                &["stage"]
            )),
            clock_skew_seconds: reg!(r, prometheus::GaugeVec::new(
                Opts::new(
                    "leadflow_clock_skew_seconds",
                    "This host's clock minus the broker's, from the broker (LogAppendTime) timestamps of the ticks the state stage appends; positive: the host runs ahead. Absent until measured."
                ),
                &[]
            )),
            ticks_clamped: reg!(r, IntCounter::new(
                "leadflow_ticks_clamped_total",
                "Ticks that carried the broker's time instead of the host's, because the host clock ran ahead of the broker's by more than clock.grace."
            )),
            last_snapshot_ms: AtomicI64::new(now_ms()),
            registry: r,
        };
        // Every series from the start, so rates and ratios exist before the first win.
        for stage in ["sal", "sql", "won", "lost"] {
            for path in ["mql", "direct"] {
                m.funnel_reached.with_label_values(&[stage, path]);
            }
        }
        for path in ["mql", "direct"] {
            m.won_amount.with_label_values(&[path]);
        }
        for reason in ["missing", "invalid"] {
            m.won_amount_unsummed.with_label_values(&[reason]);
        }
        Ok(m)
    }

    /// A snapshot is durable: `seconds` from its start, `bytes` long, holding the state as of
    /// wall time `taken_at_ms`.
    pub fn snapshot_written(&self, seconds: f64, bytes: u64, taken_at_ms: i64) {
        self.snapshot_duration_seconds.observe(seconds);
        self.snapshot_bytes.set(bytes as i64);
        self.last_snapshot_ms
            .fetch_max(taken_at_ms, Ordering::Relaxed);
    }

    /// The text exposition, after refreshing time-based gauges.
    pub fn render(&self) -> anyhow::Result<String> {
        let age = (now_ms() - self.last_snapshot_ms.load(Ordering::Relaxed)).max(0) / 1000;
        self.snapshot_age_seconds.set(age);
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .context("encoding metrics")?;
        String::from_utf8(buf).context("metrics are UTF-8")
    }
}
