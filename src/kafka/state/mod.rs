//! State stage: folds each assigned partition of the internal log with the engine and writes
//! its records to the same partition of the output topics. Exactly-once output on any broker
//! with the idempotent producer (DESIGN.md):
//! - a snapshot of partition q at position S is written only after every output caused by
//!   records before S is acknowledged;
//! - every output carries `lf-src-offset` (its cause) and `lf-src-index` (its index among that
//!   cause's outputs in that topic);
//! - on assignment, q restarts from its newest valid snapshot and re-folds silently up to the
//!   last output already in each output topic, then emits normally (recovery.rs);
//! - with transactions, outputs, ticks and positions are committed together and an instance
//!   whose group generation is stale cannot commit: zombie fencing (checkpoint.rs).

mod checkpoint;
mod recovery;

use checkpoint::Commit;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::BaseRecord;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::producer::{self, Deliveries, LfProducer};
use super::{H_SRC_INDEX, H_SRC_OFFSET};
use crate::codec::avro::{self, InternalRecord};
use crate::config::{OutputFormat, Settings};
use crate::engine::{Applied, EvictReason, Explanation, PartitionState, Stats};

/// The engine counters behind the limit metrics: evictions by reason, refused clocks.
fn limit_counts(s: &Stats) -> ([u64; 3], u64) {
    (s.evicted, s.refused_clocks)
}
use crate::metrics::Metrics;
use crate::model::funnel::Stage;
use crate::model::records::Output;
use crate::model::rules::Ruleset;
use crate::snapshot::SnapshotStore;

/// Counters of the state stage (read by metrics).
#[derive(Default, Debug)]
pub struct StateStats {
    pub records_in: AtomicU64,
    pub outputs: AtomicU64,
    pub suppressed: AtomicU64,
    pub ticks_appended: AtomicU64,
    pub snapshots: AtomicU64,
    pub undecodable: AtomicU64,
    /// Transactions aborted (e.g. after this instance lost its partitions while stalled).
    pub aborted: AtomicU64,
}

/// One assigned partition.
struct Part {
    state: PartitionState,
    /// Next internal offset to process; `None` until the first record after a fresh start.
    next_offset: Option<i64>,
    /// Last output already in each output topic (transitions, sla): `(src offset, index)`.
    suppress: [Option<(i64, i64)>; 2],
    caught_up: bool,
    /// Re-folded past everything already emitted (or reached the end once): its state is
    /// current and its outputs are live.
    recovered: bool,
    tick_in_flight: bool,
    last_tick: Instant,
    /// Host wall time (ms) when the tick in flight was sent: with the broker's timestamp of
    /// that tick it measures the clock skew.
    tick_sent_ms: i64,
    /// Records folded since the last snapshot was started.
    dirty: bool,
    /// When the next snapshot is due (staggered across partitions).
    snapshot_due: Instant,
    /// When the snapshot being encoded was started (monotonic, and wall ms).
    snapshot_started: Option<(Instant, i64)>,
    /// The position of this partition's snapshot being written in the background.
    writing: Option<i64>,
    /// Why this partition is stopped (paused, never folded): its stored position disagrees
    /// with the log, and folding on would skip records or fold an incomplete history.
    stopped: Option<Stop>,
}

/// A partition stopped because its history is not what its position says (recovery.rs).
#[derive(Clone, Debug)]
pub(crate) struct Stop {
    /// Bounded, for the metric label: `log_recreated`, `history_deleted`, `offset_reset`.
    pub reason: &'static str,
    /// What happened, with the topic, partition, positions and the remedy.
    pub message: String,
}

impl Part {
    fn new(state: PartitionState, start: Option<i64>, suppress: [Option<(i64, i64)>; 2]) -> Part {
        Part {
            state,
            next_offset: start,
            suppress,
            caught_up: false,
            recovered: suppress == [None, None],
            tick_in_flight: false,
            last_tick: Instant::now(),
            tick_sent_ms: 0,
            dirty: false,
            snapshot_due: Instant::now(),
            snapshot_started: None,
            writing: None,
            stopped: None,
        }
    }

    fn update_recovered(&mut self) {
        if !self.recovered && (self.caught_up || self.suppress == [None, None]) {
            self.recovered = true;
        }
    }
}

#[derive(Default)]
struct Shared {
    parts: BTreeMap<i32, Part>,
    /// The group has assigned this instance (possibly no partitions) at least once.
    assigned_once: bool,
    internal_partitions: i32,
    /// How `/leads/{key}` reads the key it is given (`input.lead_key`).
    lead_key: crate::model::event::LeadKeyMode,
}

/// A read-only window on the state stage for the HTTP endpoints. Readiness and the gauges are
/// published by the state thread, so `/health/*` and `/metrics` never wait on the fold loop
/// or on Kafka I/O; only `/leads/{key}` reads the live state, and gives up after a bound.
#[derive(Clone)]
pub struct StateView {
    shared: Arc<Mutex<Shared>>,
    /// Process readiness: the state thread publishes whether its partitions are recovered.
    pub health: crate::health::Health,
    /// Why partitions are stopped, for `/health/ready` (published by the state thread).
    stopped: Arc<Mutex<Vec<String>>>,
}

/// A lead that is not on this instance.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NotHere {
    pub error: &'static str,
    pub lead_key: String,
    /// The internal partition that owns the lead.
    pub partition: i32,
    pub assigned_partitions: Vec<i32>,
}

/// Why `/leads/{key}` has no answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum NoExplanation {
    /// The lead lives on another instance's partition.
    NotHere(NotHere),
    /// The state stage held the state longer than the wait (e.g. a recovery or a snapshot).
    Busy { error: &'static str },
}

/// How often the fold gives a slice of its time to the snapshots in progress, and about how
/// long a slice is: at most a third of the state thread while a snapshot is encoded.
const STEP_EVERY: Duration = Duration::from_millis(4);
const STEP_BUDGET: Duration = Duration::from_millis(2);

/// How long a clock skew measurement is trusted; older, the next tick measures again first.
const SKEW_FRESH: Duration = Duration::from_secs(60);

/// How long `/leads/{key}` waits for the state stage before answering 503.
const EXPLAIN_WAIT: Duration = Duration::from_millis(500);

impl StateView {
    pub fn new(health: crate::health::Health) -> StateView {
        StateView {
            shared: Arc::default(),
            health,
            stopped: Arc::default(),
        }
    }

    /// Ready once the group has assigned partitions, each has recovered (as last published by
    /// the state thread; never waits), and no problem is open ([`crate::health::Health`]).
    pub fn ready(&self) -> bool {
        self.health.ready()
    }

    /// Why partitions are stopped (empty when none is).
    pub fn stopped(&self) -> Vec<String> {
        lock(&self.stopped).clone()
    }

    /// Publishes readiness and the gauges read from the live state (state thread only).
    fn publish(&self, shared: &Shared, m: &Metrics) {
        let mut stages = [0u64; 8];
        let (mut leads, mut clocks) = (0u64, 0u64);
        for part in shared.parts.values() {
            for (i, n) in part.state.stage_counts().iter().enumerate() {
                stages[i] += n;
            }
            leads += part.state.lead_count() as u64;
            clocks += part.state.open_clocks();
        }
        for stage in Stage::ALL {
            m.leads
                .with_label_values(&[stage.as_str()])
                .set(stages[stage.index()] as i64);
        }
        m.leads_in_memory.set(leads as i64);
        m.open_sla_clocks.set(clocks as i64);
        m.assigned_partitions
            .with_label_values(&["state"])
            .set(shared.parts.len() as i64);
        let stopped: Vec<String> = shared
            .parts
            .values()
            .filter_map(|p| p.stopped.as_ref().map(|s| s.message.clone()))
            .collect();
        m.partitions_stopped.set(stopped.len() as i64);
        let ready = shared.assigned_once
            && stopped.is_empty()
            && shared.parts.values().all(|p| p.recovered);
        *lock(&self.stopped) = stopped;
        self.health.set_partitions_ready(ready);
    }

    /// The explanation of `key`, or where it lives when not here, or busy when the state
    /// stage holds the state for longer than [`EXPLAIN_WAIT`].
    pub fn explain(&self, key: &str, as_of: Option<i64>) -> Result<Explanation, NoExplanation> {
        let deadline = Instant::now() + EXPLAIN_WAIT;
        let shared = loop {
            match self.shared.try_lock() {
                Ok(guard) => break guard,
                Err(std::sync::TryLockError::Poisoned(p)) => break p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(std::sync::TryLockError::WouldBlock) => {
                    return Err(NoExplanation::Busy {
                        error: "the state stage is busy (recovering or snapshotting); retry",
                    })
                }
            }
        };
        let key = &*crate::model::event::normalize_lead_key(shared.lead_key, key);
        for part in shared.parts.values() {
            if let Some(x) = part.state.explain(key, as_of) {
                return Ok(x);
            }
        }
        let n = shared.internal_partitions.max(1) as u32;
        Err(NoExplanation::NotHere(NotHere {
            error: "lead not found on this instance",
            lead_key: key.to_string(),
            partition: crate::partition::partition_for(key.as_bytes(), n) as i32,
            assigned_partitions: shared.parts.keys().copied().collect(),
        }))
    }
}

pub struct StateContext {
    settings: Settings,
    rules: Arc<Ruleset>,
    store: SnapshotStore,
    producer: LfProducer,
    deliveries: Arc<Deliveries>,
    /// Outputs, ticks and positions go in transactions (zombie fencing).
    txn: bool,
    /// The internal topic has broker timestamps (LogAppendTime): ticks measure the clock skew
    /// and are kept from running ahead of the broker's clock.
    skew_guard: bool,
    /// This host's clock minus the broker's (ms), and when it was measured.
    skew: Mutex<Option<(i64, Instant)>>,
    /// A transaction is open (transactions only).
    txn_open: AtomicBool,
    /// Reads the last committed output of a partition (read_committed).
    tail: BaseConsumer<recovery::TailContext>,
    /// Reads watermarks as they are (read_uncommitted): the log's start and end, and with
    /// transactions whether one is open.
    hw: BaseConsumer<recovery::TailContext>,
    shared: Arc<Mutex<Shared>>,
    view: StateView,
    metrics: Arc<Metrics>,
    /// An error raised inside a rebalance callback, reported by the main loop.
    fatal: Mutex<Option<String>>,
    /// Set while snapshots fail: the backoff (`None`: they do not fail).
    snapshot_retry: Mutex<Option<checkpoint::SnapshotRetry>>,
    /// Outcomes of the background snapshot writes, and how many are in flight.
    written_tx: std::sync::mpsc::Sender<checkpoint::WriteOutcome>,
    written_rx: Mutex<std::sync::mpsc::Receiver<checkpoint::WriteOutcome>>,
    writes_in_flight: std::sync::atomic::AtomicUsize,
    /// Set on any error: from then on no snapshot may be written, because the state may hold
    /// effects whose outputs were not all produced.
    failed: AtomicBool,
    pub stats: Arc<StateStats>,
}

impl ClientContext for StateContext {
    fn stats(&self, stats: rdkafka::Statistics) {
        let topic = self.settings.service.topics.internal.as_str();
        self.metrics
            .consumer_lag
            .with_label_values(&["state"])
            .set(super::lag_from_stats(&stats, &[topic]));
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // End of partition is how "caught up" is learned (poll delivers it too): not an error.
        if matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        ) {
            return;
        }
        tracing::warn!(%error, reason, "kafka client error");
    }
}

impl ConsumerContext for StateContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.on_assign(consumer, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.on_revoke(consumer),
            other => Err(anyhow::anyhow!("rebalance error: {other:?}")),
        };
        if let Err(e) = result {
            self.failed.store(true, Ordering::SeqCst);
            tracing::error!(error = %format!("{e:#}"), "rebalance failed");
            if let Ok(mut f) = self.fatal.lock() {
                *f = Some(format!("{e:#}"));
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a panic elsewhere already failed the stage; keep going to shut down.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl StateContext {
    fn on_assign(
        &self,
        consumer: &BaseConsumer<Self>,
        tpl: &mut TopicPartitionList,
    ) -> anyhow::Result<()> {
        let internal = self.settings.service.topics.internal.clone();
        let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        self.view.health.set_partitions_ready(false);
        // Recovery can wait for a previous owner's transaction: not under the shared lock,
        // which the HTTP endpoints take.
        let mut recovered = Vec::with_capacity(partitions.len());
        let total = lock(&self.shared).internal_partitions;
        for p in partitions {
            let started = Instant::now();
            let (mut part, start) = self.recover(p)?;
            part.snapshot_due = self.first_snapshot_due(p, total);
            self.metrics
                .recovery_duration_seconds
                .observe(started.elapsed().as_secs_f64());
            let offset = start.map_or(Offset::Beginning, Offset::Offset);
            tpl.set_partition_offset(&internal, p, offset)
                .context("setting the start offset")?;
            tracing::info!(
                partition = p,
                start = ?start,
                leads = part.state.lead_count(),
                suppress_transitions = ?part.suppress[0],
                suppress_sla = ?part.suppress[1],
                ms = started.elapsed().as_millis() as u64,
                "partition assigned and recovered"
            );
            recovered.push((p, part));
        }
        let mut shared = lock(&self.shared);
        shared.assigned_once = true;
        let mut stopped = TopicPartitionList::new();
        for (p, part) in &recovered {
            if part.stopped.is_some() {
                stopped.add_partition(&internal, *p);
            }
        }
        shared.parts.extend(recovered);
        self.view.publish(&shared, &self.metrics);
        consumer.assign(tpl).context("assigning partitions")?;
        if stopped.count() > 0 {
            consumer
                .pause(&stopped)
                .context("pausing the stopped partitions")?;
        }
        Ok(())
    }

    fn on_revoke(&self, consumer: &BaseConsumer<Self>) -> anyhow::Result<()> {
        let mut shared = lock(&self.shared);
        let revoked: Vec<i32> = shared.parts.keys().copied().collect();
        let outcome = if self.failed.load(Ordering::SeqCst) {
            // The stage is failing: no snapshot, but still hand the partitions back, or
            // closing the consumer waits for the revoke forever.
            let _ = self.abort();
            Ok(())
        } else if self.txn && consumer.assignment_lost() {
            // The group moved these partitions on without us (a stall past the session
            // timeout): what is open must not be committed.
            tracing::warn!(partitions = ?revoked, "partitions lost; aborting the open transaction");
            self.abort()
        } else {
            match self.final_checkpoint(&mut shared, consumer) {
                Ok(Commit::Done) => {
                    tracing::info!(partitions = ?revoked, "partitions revoked after a final snapshot");
                    Ok(())
                }
                Ok(Commit::Aborted) => {
                    tracing::warn!(partitions = ?revoked, "partitions revoked after an aborted transaction");
                    Ok(())
                }
                Err(e) => Err(e),
            }
        };
        shared.parts.clear();
        self.view.publish(&shared, &self.metrics);
        let unassigned = consumer.unassign().context("unassigning");
        outcome.and(unassigned)
    }

    fn process(
        &self,
        shared: &mut Shared,
        m: &BorrowedMessage<'_>,
        out: &mut Vec<Output>,
    ) -> anyhow::Result<()> {
        let (p, off) = (m.partition(), m.offset());
        let Some(part) = shared.parts.get_mut(&p) else {
            return Ok(()); // fetched before a revoke: not ours any more
        };
        if part.stopped.is_some() {
            return Ok(()); // fetched before the pause
        }
        if part.next_offset.is_some_and(|n| off < n) {
            return Ok(());
        }
        self.stats.records_in.fetch_add(1, Ordering::Relaxed);
        self.metrics.state_records.inc();
        part.caught_up = false;
        let before = limit_counts(part.state.stats());
        match avro::decode_internal(m.payload().unwrap_or(&[])) {
            Ok(InternalRecord::Event(ev)) => {
                let lag_ms = (crate::metrics::now_ms() - ev.occurred_at).max(0);
                self.metrics
                    .event_time_lag_seconds
                    .observe(lag_ms as f64 / 1000.0);
                if part.state.apply(&ev, out) == Applied::Duplicate {
                    self.metrics.duplicates.inc();
                }
            }
            Ok(InternalRecord::Tick(t)) => {
                part.state.advance(t, out);
                if part.tick_in_flight {
                    part.tick_in_flight = false;
                    if let rdkafka::Timestamp::LogAppendTime(broker_ms) = m.timestamp() {
                        self.measured_skew(part.tick_sent_ms - broker_ms);
                    }
                }
            }
            Err(e) => {
                // Not written by leadflow's ingest; the fold stays a function of the log.
                self.stats.undecodable.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(partition = p, offset = off, error = %e, "undecodable internal record skipped");
            }
        }
        self.count_limits(before, limit_counts(part.state.stats()));
        let svc = &self.settings.service;
        let mut index = [0i64; 2];
        for rec in out.drain(..) {
            let (slot, topic) = match rec {
                Output::Transition(_) => (0, &svc.topics.transitions),
                Output::Sla(_) => (1, &svc.topics.sla),
            };
            let i = index[slot];
            index[slot] += 1;
            if let Some(last) = part.suppress[slot] {
                if (off, i) <= last {
                    self.stats.suppressed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                part.suppress[slot] = None;
            }
            self.count_output(&rec);
            self.begin()?;
            let value = match svc.output_format {
                OutputFormat::Avro => avro::encode_output(&rec)?,
                OutputFormat::Json => {
                    serde_json::to_vec(&rec).context("encoding a record as JSON")?
                }
            };
            let (off_s, i_s) = (off.to_string(), i.to_string());
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: H_SRC_OFFSET,
                    value: Some(off_s.as_bytes()),
                })
                .insert(Header {
                    key: H_SRC_INDEX,
                    value: Some(i_s.as_bytes()),
                });
            producer::send(
                &self.producer,
                BaseRecord::to(topic)
                    .partition(p)
                    .key(rec.lead_key().as_bytes())
                    .payload(&value[..])
                    .headers(headers),
            )?;
            self.stats.outputs.fetch_add(1, Ordering::Relaxed);
        }
        part.next_offset = Some(off + 1);
        part.dirty = true;
        part.update_recovered();
        Ok(())
    }

    /// Counts what the engine's bounds did during one record (evictions, refused clocks).
    fn count_limits(&self, before: ([u64; 3], u64), after: ([u64; 3], u64)) {
        for reason in EvictReason::ALL {
            let i = reason as usize;
            let n = after.0[i].saturating_sub(before.0[i]);
            if n > 0 {
                self.metrics
                    .evicted_leads
                    .with_label_values(&[reason.as_str()])
                    .inc_by(n);
            }
        }
        let refused = after.1.saturating_sub(before.1);
        if refused > 0 {
            self.metrics.sla_clocks_refused.inc_by(refused);
        }
    }

    fn count_output(&self, rec: &Output) {
        let m = &self.metrics;
        match rec {
            Output::Transition(t) => m
                .transitions
                .with_label_values(&[t.from_stage.as_str(), t.to_stage.as_str()])
                .inc(),
            Output::Sla(s) => {
                m.sla_records
                    .with_label_values(&[s.policy.as_str(), s.kind.as_str()])
                    .inc();
                if let Some(ms) = s.response_ms {
                    m.response_seconds
                        .with_label_values(&[s.policy.as_str()])
                        .observe(ms as f64 / 1000.0);
                }
                if let Some(ms) = s.response_business_ms {
                    m.response_business_seconds
                        .with_label_values(&[s.policy.as_str()])
                        .observe(ms as f64 / 1000.0);
                }
            }
        }
    }

    /// Appends a tick to each caught-up partition with a timer due before `now - grace`.
    ///
    /// With broker timestamps on the internal topic (LogAppendTime), a tick's time never runs
    /// ahead of the broker's clock by more than `clock.grace`: a host clock 14 h fast would
    /// otherwise fire 14 h of warnings and breaches early. Before the first measurement (or
    /// after a minute without one) a no-op tick at the partition's own clock measures first.
    fn ticks(&self, shared: &mut Shared) -> anyhow::Result<()> {
        let svc = &self.settings.service;
        if svc.tick_interval_ms <= 0 {
            return Ok(());
        }
        let interval = Duration::from_millis(svc.tick_interval_ms as u64);
        let grace = self.settings.clock_grace_ms;
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let skew = *lock(&self.skew);
        for (p, part) in shared.parts.iter_mut() {
            let mut t = now_ms.saturating_sub(grace);
            let due = part.state.next_due().is_some_and(|d| d < t);
            if !part.caught_up || part.tick_in_flight || part.last_tick.elapsed() < interval || !due
            {
                continue;
            }
            if self.skew_guard {
                match skew {
                    Some((ms, at)) if at.elapsed() < SKEW_FRESH => {
                        if ms > grace {
                            t = now_ms.saturating_sub(ms).saturating_sub(grace);
                            if part.state.next_due().is_none_or(|d| d >= t) {
                                continue; // nothing due by the broker's clock
                            }
                            self.metrics.ticks_clamped.inc();
                        }
                    }
                    // Measure first, with a tick that changes nothing (its own clock).
                    _ => match part.state.clock() {
                        Some(c) => t = c,
                        None => continue,
                    },
                }
            }
            let value = avro::encode_internal(&InternalRecord::Tick(t))?;
            self.begin()?;
            producer::send(
                &self.producer,
                BaseRecord::to(&svc.topics.internal)
                    .partition(*p)
                    .payload(&value[..]),
            )?;
            part.tick_in_flight = true;
            part.tick_sent_ms = now_ms;
            part.last_tick = Instant::now();
            self.stats.ticks_appended.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Records a clock skew measurement (host minus broker, ms); warns when it crosses
    /// `clock.grace` either way.
    fn measured_skew(&self, ms: i64) {
        let grace = self.settings.clock_grace_ms;
        let before = lock(&self.skew).replace((ms, Instant::now()));
        self.metrics
            .clock_skew_seconds
            .with_label_values::<&str>(&[])
            .set(ms as f64 / 1000.0);
        let was_ahead = before.is_some_and(|(b, _)| b > grace);
        if ms > grace && !was_ahead {
            tracing::warn!(
                skew_ms = ms,
                grace_ms = grace,
                "this host's clock runs ahead of the broker's by more than clock.grace: ticks \
                 carry the broker's time until it is fixed (check NTP)"
            );
        } else if ms <= grace && was_ahead {
            tracing::info!(
                skew_ms = ms,
                "the host clock is back within clock.grace of the broker's"
            );
        }
    }

    fn take_fatal(&self) -> Option<String> {
        lock(&self.fatal).take()
    }
}

/// Runs the state stage until `stop`, then drains: final snapshot, commit, leave the group.
pub fn run(
    settings: &Settings,
    layout: &super::admin::Layout,
    stop: &AtomicBool,
    service_stats: &crate::service::ServiceStats,
) -> anyhow::Result<()> {
    let svc = &settings.service;
    let metrics = Arc::clone(&service_stats.metrics);
    let stats = Arc::clone(&service_stats.state);
    let txn = layout.transactions;
    let errors = Some(metrics.producer_errors.clone());
    let (producer, deliveries) = if txn {
        let id = transactional_id(svc);
        tracing::info!(transactional_id = %id, "outputs are transactional (zombie fencing on)");
        producer::transactional(svc, &id, 5, errors)?
    } else {
        tracing::info!("outputs are idempotent, without transactions (no zombie fencing)");
        producer::idempotent(svc, 5, errors)?
    };
    metrics.output_transactions.set(i64::from(txn));
    for reason in ["log_recreated", "history_deleted", "offset_reset"] {
        metrics.partition_stops.with_label_values(&[reason]);
    }
    for reason in crate::snapshot::SKIP_CODES {
        metrics.snapshots_skipped.with_label_values(&[reason]);
    }
    {
        let mut shared = lock(&service_stats.view.shared);
        shared.internal_partitions = layout.internal_partitions;
        shared.lead_key = settings.rules.limits.lead_key;
    }
    // Every reader of the logs leadflow writes skips aborted transactions, also without
    // transactions now: a log may hold aborted records from an earlier run with them.
    let tail: BaseConsumer<recovery::TailContext> = super::client_config(svc)
        .set("group.id", format!("{}-tail", svc.state_group))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create_with_context(recovery::TailContext)
        .context("creating the output tail reader")?;
    let hw: BaseConsumer<recovery::TailContext> = super::client_config(svc)
        .set("isolation.level", "read_uncommitted")
        .create_with_context(recovery::TailContext)
        .context("creating the watermark reader")?;
    let store = SnapshotStore::open(&svc.snapshot_store)
        .with_context(|| format!("opening the snapshot store {}", svc.snapshot_store.url))?;
    tracing::info!(url = %store.url(), "snapshot store");
    let (written_tx, written_rx) = std::sync::mpsc::channel();
    let ctx = StateContext {
        settings: settings.clone(),
        rules: Arc::clone(&settings.rules),
        store,
        producer,
        deliveries,
        txn,
        skew_guard: layout.log_append_time,
        skew: Mutex::new(None),
        txn_open: AtomicBool::new(false),
        tail,
        hw,
        shared: Arc::clone(&service_stats.view.shared),
        view: service_stats.view.clone(),
        metrics,
        fatal: Mutex::new(None),
        snapshot_retry: Mutex::new(None),
        written_tx,
        written_rx: Mutex::new(written_rx),
        writes_in_flight: std::sync::atomic::AtomicUsize::new(0),
        failed: AtomicBool::new(false),
        stats,
    };
    let consumer: BaseConsumer<StateContext> = super::client_config(svc)
        .set("group.id", &svc.state_group)
        .set("enable.auto.commit", "false")
        // Start positions are always explicit (a snapshot's, or the beginning): a position
        // that falls outside the log is an error to report, never a silent jump.
        .set("auto.offset.reset", "error")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .set("statistics.interval.ms", "1000")
        .create_with_context(ctx)
        .context("creating the state consumer")?;
    consumer
        .subscribe(&[&svc.topics.internal])
        .context("subscribing to the internal topic")?;
    tracing::info!(topic = %svc.topics.internal, group = %svc.state_group, "state stage started");

    let commit_every = Duration::from_millis(svc.commit_interval_ms as u64);
    let mut last_commit = Instant::now();
    let mut last_maintenance = Instant::now();
    let mut last_step = Instant::now();
    let mut encoding = false;
    let mut out = Vec::new();
    let ctx = consumer.context();
    let result = (|| -> anyhow::Result<()> {
        while !stop.load(Ordering::Relaxed) {
            if let Some(e) = ctx.take_fatal() {
                anyhow::bail!("state stage failed: {e}");
            }
            // While a snapshot is encoded, an idle moment goes to it rather than to waiting.
            let wait = if encoding { 1 } else { 20 };
            let mut idle = false;
            match consumer.poll(Duration::from_millis(wait)) {
                Some(Ok(m)) => ctx.process(&mut lock(&ctx.shared), &m, &mut out)?,
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    if let Some(part) = lock(&ctx.shared).parts.get_mut(&p) {
                        part.caught_up = true;
                        part.update_recovered();
                    }
                }
                Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset))) => {
                    // A position fell outside the log (retention, DeleteRecords, a recreated
                    // topic): find which partitions, and stop them.
                    ctx.stop_out_of_range(&mut lock(&ctx.shared), &consumer)?;
                }
                Some(Err(e)) => tracing::warn!(error = %e, "state consumer error"),
                None => idle = true,
            }
            if encoding && (idle || last_step.elapsed() >= STEP_EVERY) {
                // A slice of the snapshots in progress, between records.
                last_step = Instant::now();
                encoding = ctx.snapshot_steps(&mut lock(&ctx.shared), STEP_BUDGET);
            }
            if last_maintenance.elapsed() >= Duration::from_millis(20) {
                last_maintenance = Instant::now();
                ctx.producer.poll(Duration::ZERO);
                let mut shared = lock(&ctx.shared);
                ctx.collect_written(&mut shared);
                ctx.ticks(&mut shared)?;
                ctx.view.publish(&shared, &ctx.metrics);
                let started = ctx.start_snapshots(&mut shared, &consumer)?;
                encoding = shared
                    .parts
                    .values()
                    .any(|p| p.state.snapshot_in_progress().is_some());
                let outcome = if started == Commit::Aborted {
                    Some(started)
                } else if txn && last_commit.elapsed() >= commit_every {
                    last_commit = Instant::now();
                    Some(ctx.commit(&shared, &consumer)?)
                } else {
                    None
                };
                if outcome == Some(Commit::Aborted) {
                    // Start over from what is committed; if the partitions were lost, the
                    // group's revoke follows on the next poll.
                    ctx.recover_assigned(&mut shared, &consumer)?;
                }
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        // No snapshot after a failure (also not in the revoke that closing the consumer runs):
        // the outputs it would cover may be incomplete.
        ctx.failed.store(true, Ordering::SeqCst);
        tracing::error!(error = %format!("{e:#}"), "state stage failed; draining");
        let _ = ctx.abort();
        return Err(e);
    }
    if ctx.final_checkpoint(&mut lock(&ctx.shared), &consumer)? == Commit::Aborted {
        tracing::warn!("the last transaction was aborted at shutdown; the next owner re-folds it");
        ctx.failed.store(true, Ordering::SeqCst);
    }
    consumer.unsubscribe();
    tracing::info!("state stage stopped");
    Ok(())
}

/// `kafka.transactional_id`, or the state group, the host name and a random suffix: unique
/// per process, so that two instances never fence each other.
fn transactional_id(svc: &crate::config::Service) -> String {
    if let Some(id) = &svc.transactional_id {
        return id.clone();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    // Time, process id and a counter: distinct for every stage started on this host.
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!(
        "{}-{host}-{}-{seq}-{:x}",
        svc.state_group,
        std::process::id(),
        nanos & 0xffff_ffff
    )
}
