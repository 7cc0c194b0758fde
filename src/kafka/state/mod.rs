//! State stage: folds each assigned partition of the internal log with the engine and writes
//! its records to the same partition of the output topics. Exactly-once output on any broker
//! with the idempotent producer (DESIGN.md):
//! - a snapshot of partition q at position S is started only after every output caused by
//!   records before S is acknowledged, and written in the background (checkpoint.rs);
//! - every output carries `lf-src-offset` (its cause) and `lf-src-index` (its index among that
//!   cause's outputs in that topic);
//! - on assignment, q restarts from its newest valid snapshot and re-folds silently up to the
//!   last output already in each output topic, then emits normally (recovery.rs);
//! - with transactions, outputs, ticks and positions are committed together and an instance
//!   whose group generation is stale cannot commit: zombie fencing (checkpoint.rs); each
//!   commit runs on a thread of its own while the fold fills the next transaction on a
//!   second producer (txn.rs).
//!
//! This file holds the stage's types, the HTTP window on it and the rebalance callbacks;
//! the fold loop is `fold.rs`.

mod checkpoint;
mod fold;
mod recovery;
mod txn;

pub use fold::run;

use txn::Commit;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::config::Settings;
use crate::engine::{Explanation, PartitionState};

use crate::metrics::Metrics;
use crate::model::funnel::Stage;
use crate::model::rules::Ruleset;
use crate::snapshot::{SnapshotStore, SnapshotStream};

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
    /// Outputs produced while the previous transaction was committing on the committer
    /// thread (the overlap that keeps commits off the fold's path).
    pub outputs_during_commit: AtomicU64,
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
    /// Where the snapshot being encoded goes, chunk by chunk as they fill. Dropped with the
    /// snapshot (a revoke, a final checkpoint), the upload is abandoned.
    stream: Option<SnapshotStream>,
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
            stream: None,
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
    /// The producers of outputs and ticks, and the commits of their transactions.
    out: txn::Outputs,
    /// Outputs, ticks and positions go in transactions (zombie fencing).
    txn: bool,
    /// The internal topic has broker timestamps (LogAppendTime): ticks measure the clock skew
    /// and are kept from running ahead of the broker's clock.
    skew_guard: bool,
    /// This host's clock minus the broker's (ms), and when it was measured.
    skew: Mutex<Option<(i64, Instant)>>,
    /// Reads the last committed output of a partition (read_committed).
    tail: BaseConsumer<recovery::TailContext>,
    /// Reads watermarks as they are (read_uncommitted): the log's start and end, and with
    /// transactions whether one is open.
    hw: BaseConsumer<recovery::TailContext>,
    shared: Arc<Mutex<Shared>>,
    view: StateView,
    metrics: Arc<Metrics>,
    /// An error raised inside a rebalance callback, reported by the main loop: the error
    /// itself, so its chain and source (e.g. a `KafkaError`) reach the caller intact.
    fatal: Mutex<Option<anyhow::Error>>,
    /// Set while snapshots fail: the backoff (`None`: they do not fail).
    snapshot_retry: Mutex<Option<checkpoint::SnapshotRetry>>,
    /// Outcomes of the background snapshot writes, and how many are in flight.
    written_tx: std::sync::mpsc::Sender<checkpoint::WriteOutcome>,
    written_rx: Mutex<std::sync::mpsc::Receiver<checkpoint::WriteOutcome>>,
    writes_in_flight: std::sync::atomic::AtomicUsize,
    /// Partitions whose store holds objects above their position (warned once each).
    warned_above: Mutex<std::collections::BTreeSet<i32>>,
    /// Set on any error: from then on no snapshot may be written, because the state may hold
    /// effects whose outputs were not all produced.
    failed: AtomicBool,
    /// Counts assignments, revokes and rewinds: records polled under an earlier count are not
    /// folded (fold.rs, `poll_batch`).
    epoch: AtomicU64,
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
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.on_assign(consumer, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.on_revoke(consumer),
            other => Err(anyhow::anyhow!("rebalance error: {other:?}")),
        };
        if let Err(e) = result {
            self.failed.store(true, Ordering::SeqCst);
            tracing::error!(error = %format!("{e:#}"), "rebalance failed");
            *lock(&self.fatal) = Some(e);
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
            if let Some(stop) = &part.stopped {
                tracing::warn!(
                    partition = p,
                    start = ?start,
                    reason = stop.reason,
                    "partition assigned and stopped (see the error above)"
                );
            } else {
                tracing::info!(
                    partition = p,
                    start = ?start,
                    leads = part.state.lead_count(),
                    suppress_transitions = ?part.suppress[0],
                    suppress_sla = ?part.suppress[1],
                    ms = started.elapsed().as_millis() as u64,
                    "partition assigned and recovered"
                );
            }
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

    fn take_fatal(&self) -> Option<anyhow::Error> {
        lock(&self.fatal).take()
    }
}
