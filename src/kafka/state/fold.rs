//! The fold loop of the state stage: poll the internal log, fold each record with the engine,
//! produce its outputs with their cause headers, append ticks, and give the snapshots in
//! progress their slices; then drain. Recovery is in `recovery.rs`, commits and snapshots in
//! `checkpoint.rs`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::BaseRecord;

use super::txn::Commit;
use super::{lock, recovery, txn, Shared, StateContext, StateStats, StateView};
use crate::analytics::live::{self, WonAmount};
use crate::codec::avro::{self, InternalRecord};
use crate::config::{OutputFormat, Settings};
use crate::engine::{
    Applied, EvictReason, PartitionState, Prepared, Stats, PREFETCH_FAR, PREFETCH_INDEX,
    PREFETCH_LISTS, PREFETCH_NEAR,
};
use crate::kafka::producer;
use crate::kafka::{H_SRC_INDEX, H_SRC_OFFSET};
use crate::metrics::Metrics;
use crate::model::event::{CrmType, Event};
use crate::model::records::{Output, Transition};
use crate::snapshot::SnapshotStore;

/// The engine counters behind the limit metrics: evictions by reason, refused clocks.
fn limit_counts(s: &Stats) -> ([u64; 3], u64) {
    (s.evicted, s.refused_clocks)
}

/// How often the fold gives a slice of its time to the snapshots in progress, and about how
/// long a slice is: at most a third of the state thread while a snapshot is encoded.
const STEP_EVERY: Duration = Duration::from_millis(4);
const STEP_BUDGET: Duration = Duration::from_millis(2);

/// How long a clock skew measurement is trusted; older, the next tick measures again first.
const SKEW_FRESH: Duration = Duration::from_secs(60);

/// Records the fold takes at once, at most: enough lookahead for the engine's cache hints
/// (`engine::PREFETCH_INDEX` records ahead), few enough that the maintenance between batches
/// (ticks, commits, snapshot slices) stays on time.
const FOLD_BATCH: usize = 64;

/// Polls up to `max` records into `batch`: the first poll waits up to `wait`, the next ones
/// take only what is already fetched. Stops at anything that is not a record (an end of
/// partition, an error) and returns it, to be handled after the batch is folded, in order.
///
/// A rebalance runs inside a poll (the consumer's callbacks): when `epoch()` changed during
/// one, the records polled before it are dropped. Their partitions were revoked, or
/// assigned again and recovered to a snapshot's position, so folding them would fold records
/// twice or out of order; the consumer (or the partition's new owner) delivers them again
/// from the recovered position. (rdkafka's poll returns no record from the poll that ran
/// the callback; a record after it would be of the new assignment, and is kept.)
fn poll_batch<M, E>(
    mut poll: impl FnMut(Duration) -> Option<Result<M, E>>,
    epoch: impl Fn() -> u64,
    wait: Duration,
    max: usize,
    batch: &mut Vec<M>,
) -> Option<E> {
    let mut seen = epoch();
    let mut wait = wait;
    while batch.len() < max {
        let polled = poll(wait);
        wait = Duration::ZERO;
        let now = epoch();
        if now != seen {
            seen = now;
            batch.clear();
        }
        match polled? {
            Ok(m) => batch.push(m),
            Err(e) => return Some(e),
        }
    }
    None
}

/// One of the engine's cache hints for a record ahead.
type Hint = fn(&PartitionState, &Prepared);

/// A polled record decoded, and its event's preparation for its partition's state (`None`
/// for a tick, an undecodable record, or a partition not folded).
type Decoded = (
    Result<InternalRecord, crate::model::event::Invalid>,
    Option<Prepared>,
);

impl StateContext {
    /// Folds a batch of polled records in order. They are all decoded and prepared first,
    /// so that before each record the engine can be told the leads of the records ahead (the
    /// cache hints `leadflow replay` uses: at a million leads an event mostly waits on cold
    /// memory, docs/performance.md). The hints change no state or output.
    fn fold_batch(
        &self,
        shared: &mut Shared,
        batch: &[BorrowedMessage<'_>],
        out: &mut Vec<Output>,
    ) -> anyhow::Result<()> {
        let mut decoded: Vec<Option<Decoded>> = batch
            .iter()
            .map(|m| {
                let record = avro::decode_internal(m.payload().unwrap_or(&[]));
                let prepared = match (&record, shared.parts.get(&m.partition())) {
                    (Ok(InternalRecord::Event(ev)), Some(part)) => Some(part.state.prepare(ev)),
                    _ => None,
                };
                Some((record, prepared))
            })
            .collect();
        let hints: [(usize, Hint); 4] = [
            (PREFETCH_INDEX, PartitionState::prefetch_index),
            (PREFETCH_FAR, PartitionState::prefetch_lead),
            (PREFETCH_NEAR, PartitionState::prefetch_state),
            (PREFETCH_LISTS, PartitionState::prefetch_lists),
        ];
        for (i, m) in batch.iter().enumerate() {
            for (d, hint) in hints {
                if let (Some(Some((_, Some(p)))), Some(ahead)) =
                    (decoded.get(i + d), batch.get(i + d))
                {
                    if let Some(part) = shared.parts.get(&ahead.partition()) {
                        hint(&part.state, p);
                    }
                }
            }
            if let Some(this) = decoded[i].take() {
                self.process(shared, m, this, out)?;
            }
        }
        Ok(())
    }

    fn process(
        &self,
        shared: &mut Shared,
        m: &BorrowedMessage<'_>,
        (record, prepared): Decoded,
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
        // A win's event, kept for its amount (the revenue counter).
        let mut won: Option<Event> = None;
        match record {
            Ok(InternalRecord::Event(ev)) => {
                let lag_ms = (crate::metrics::now_ms() - ev.occurred_at).max(0);
                self.metrics
                    .event_time_lag_seconds
                    .observe(lag_ms as f64 / 1000.0);
                let applied = match &prepared {
                    Some(prepared) => part.state.apply_prepared(&ev, prepared, out),
                    None => part.state.apply(&ev, out),
                };
                if applied == Applied::Duplicate {
                    self.metrics.duplicates.inc();
                }
                if ev.crm == Some(CrmType::OpportunityWon) {
                    won = Some(ev);
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
            if let Output::Transition(t) = &rec {
                self.count_funnel(&part.state, won.as_ref(), t);
            }
            self.begin()?;
            let value = match svc.output_format {
                OutputFormat::Avro => avro::encode_output(&rec),
                OutputFormat::Json => crate::codec::json::encode_record(&rec),
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
                self.out.producer(),
                BaseRecord::to(topic)
                    .partition(p)
                    .key(rec.lead_key().as_bytes())
                    .payload(&value[..])
                    .headers(headers),
            )?;
            self.stats.outputs.fetch_add(1, Ordering::Relaxed);
            if self.out.committing() {
                self.stats
                    .outputs_during_commit
                    .fetch_add(1, Ordering::Relaxed);
            }
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

    /// The live conversion metrics: arrivals by path, and a win's amount.
    fn count_funnel(&self, state: &PartitionState, won: Option<&Event>, t: &Transition) {
        if !live::counted(t.to_stage) {
            return;
        }
        let m = &self.metrics;
        let path = live::path(state, &t.lead_key);
        m.funnel_reached
            .with_label_values(&[t.to_stage.as_str(), path])
            .inc();
        match won.and_then(|ev| live::won_amount(ev, t)) {
            Some(WonAmount::Amount(x)) => m.won_amount.with_label_values(&[path]).inc_by(x),
            Some(WonAmount::Missing) => m.won_amount_unsummed.with_label_values(&["missing"]).inc(),
            Some(WonAmount::Invalid) => m.won_amount_unsummed.with_label_values(&["invalid"]).inc(),
            None => {}
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
                self.out.producer(),
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
}

/// Runs the state stage until `stop`, then drains: final snapshot, commit, leave the group.
pub fn run(
    settings: &Settings,
    layout: &crate::kafka::admin::Layout,
    stop: &AtomicBool,
    stats: Arc<StateStats>,
    metrics: Arc<Metrics>,
    view: &StateView,
) -> anyhow::Result<()> {
    let svc = &settings.service;
    let txn = layout.transactions;
    let id = txn.then(|| transactional_id(svc));
    match &id {
        Some(id) => tracing::info!(
            transactional_id = %id,
            second = %txn::second_id(id),
            "outputs are transactional (zombie fencing on)"
        ),
        None => tracing::info!("outputs are idempotent, without transactions (no zombie fencing)"),
    }
    let out = txn::Outputs::new(svc, id.as_deref(), Arc::clone(&metrics), Arc::clone(&stats))?;
    metrics.output_transactions.set(i64::from(txn));
    for reason in ["log_recreated", "history_deleted", "offset_reset"] {
        metrics.partition_stops.with_label_values(&[reason]);
    }
    for reason in crate::snapshot::SKIP_CODES {
        metrics.snapshots_skipped.with_label_values(&[reason]);
    }
    {
        let mut shared = lock(&view.shared);
        shared.internal_partitions = layout.internal_partitions;
        shared.lead_key = settings.rules.limits.lead_key;
    }
    // Every reader of the logs leadflow writes skips aborted transactions, also without
    // transactions now: a log may hold aborted records from an earlier run with them.
    let tail: BaseConsumer<recovery::TailContext> = crate::kafka::client_config(svc)
        .set("group.id", format!("{}-tail", svc.state_group))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        // It reads a few records at the end of a partition: the broker should answer as soon
        // as there is nothing more, not hold the fetch (500 ms by default) at every tail read.
        .set("fetch.wait.max.ms", "10")
        .create_with_context(recovery::TailContext)
        .context("creating the output tail reader")?;
    let hw: BaseConsumer<recovery::TailContext> = crate::kafka::client_config(svc)
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
        out,
        txn,
        skew_guard: layout.log_append_time,
        skew: Mutex::new(None),
        tail,
        hw,
        shared: Arc::clone(&view.shared),
        view: view.clone(),
        metrics,
        fatal: Mutex::new(None),
        snapshot_retry: Mutex::new(None),
        written_tx,
        written_rx: Mutex::new(written_rx),
        writes_in_flight: std::sync::atomic::AtomicUsize::new(0),
        warned_above: Mutex::default(),
        failed: AtomicBool::new(false),
        epoch: AtomicU64::new(0),
        stats,
    };
    let consumer: BaseConsumer<StateContext> = crate::kafka::consumer_config(svc)
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
    let mut batch = Vec::with_capacity(FOLD_BATCH);
    let ctx = consumer.context();
    let result = (|| -> anyhow::Result<()> {
        while !stop.load(Ordering::Relaxed) {
            if let Some(e) = ctx.take_fatal() {
                return Err(e.context("state stage failed"));
            }
            // While a snapshot is encoded, an idle moment goes to it rather than to waiting.
            let wait = Duration::from_millis(if encoding { 1 } else { 20 });
            let ended = poll_batch(
                |wait| consumer.poll(wait),
                || ctx.epoch.load(Ordering::SeqCst),
                wait,
                FOLD_BATCH,
                &mut batch,
            );
            let idle = batch.is_empty() && ended.is_none();
            if !batch.is_empty() {
                ctx.fold_batch(&mut lock(&ctx.shared), &batch, &mut out)?;
                batch.clear();
            }
            match ended {
                Some(KafkaError::PartitionEOF(p)) => {
                    if let Some(part) = lock(&ctx.shared).parts.get_mut(&p) {
                        part.caught_up = true;
                        part.update_recovered();
                    }
                }
                Some(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset)) => {
                    // A position fell outside the log (retention, DeleteRecords, a recreated
                    // topic): find which partitions, and stop them.
                    ctx.stop_out_of_range(&mut lock(&ctx.shared), &consumer)?;
                }
                Some(e) => tracing::warn!(error = %e, "state consumer error"),
                None => {}
            }
            if encoding && (idle || last_step.elapsed() >= STEP_EVERY) {
                // A slice of the snapshots in progress, between records.
                last_step = Instant::now();
                encoding = ctx.snapshot_steps(&mut lock(&ctx.shared), STEP_BUDGET);
            }
            if last_maintenance.elapsed() >= Duration::from_millis(20) {
                last_maintenance = Instant::now();
                ctx.out.producer().poll(Duration::ZERO);
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
                    // Handed to the committer thread; `None` while the previous commit runs.
                    let handed = ctx.commit_in_background(&shared, &consumer)?;
                    if handed.is_some() {
                        last_commit = Instant::now();
                    }
                    handed
                } else {
                    Some(ctx.commit_ended()?)
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
    // The aborts of abandoned uploads get what is left of the drain (service.rs counts it
    // from the stop).
    let aborts_deadline =
        Instant::now() + Duration::from_millis(settings.service.drain_timeout_ms as u64);
    if let Err(e) = result {
        // No snapshot after a failure (also not in the revoke that closing the consumer runs):
        // the outputs it would cover may be incomplete.
        ctx.failed.store(true, Ordering::SeqCst);
        tracing::error!(error = %format!("{e:#}"), "state stage failed; draining");
        let _ = ctx.abort();
        ctx.abandon_snapshots(&mut lock(&ctx.shared), aborts_deadline);
        return Err(e);
    }
    let last = ctx.final_checkpoint(&mut lock(&ctx.shared), &consumer);
    let last = last.inspect_err(|_| {
        // Nothing open may be committed after this (closing the consumer runs the revoke).
        ctx.failed.store(true, Ordering::SeqCst);
        let _ = ctx.abort();
        ctx.abandon_snapshots(&mut lock(&ctx.shared), aborts_deadline);
    })?;
    ctx.wait_for_aborts(aborts_deadline);
    if last == Commit::Aborted {
        tracing::warn!("the last transaction was aborted at shutdown; the next owner re-folds it");
        ctx.failed.store(true, Ordering::SeqCst);
    }
    consumer.unsubscribe();
    tracing::info!("state stage stopped");
    Ok(())
}

/// `kafka.transactional_id`, or the state group, the host name, the process id, a counter
/// and the time: unique per process, so that two instances never fence each other.
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

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::collections::VecDeque;
    use std::time::Duration;

    use super::poll_batch;

    /// What a scripted poll does: return a record, an event, nothing, or run a rebalance
    /// (as the consumer's callback does inside a poll) before returning a record or nothing.
    enum Step {
        Record(u32),
        Rebalance(u32),
        RebalanceOnly,
        Eof,
        Nothing,
    }

    /// Runs `poll_batch` over `script`; returns the batch, what ended it, and the waits the
    /// polls were given.
    fn run(script: Vec<Step>, max: usize) -> (Vec<u32>, Option<&'static str>, Vec<u64>) {
        let epoch = Cell::new(0u64);
        let waits = std::cell::RefCell::new(Vec::new());
        let mut script: VecDeque<Step> = script.into();
        let mut batch = Vec::new();
        let ended = poll_batch(
            |wait| {
                waits.borrow_mut().push(wait.as_millis() as u64);
                match script.pop_front()? {
                    Step::Record(r) => Some(Ok(r)),
                    Step::Rebalance(r) => {
                        epoch.set(epoch.get() + 1);
                        Some(Ok(r))
                    }
                    Step::RebalanceOnly => {
                        epoch.set(epoch.get() + 1);
                        None
                    }
                    Step::Eof => Some(Err("eof")),
                    Step::Nothing => None,
                }
            },
            || epoch.get(),
            Duration::from_millis(20),
            max,
            &mut batch,
        );
        (batch, ended, waits.into_inner())
    }

    #[test]
    fn a_batch_waits_once_then_takes_what_is_fetched() {
        use Step::*;
        let (batch, ended, waits) = run(vec![Record(1), Record(2), Nothing, Record(3)], 64);
        assert_eq!(batch, vec![1, 2]);
        assert_eq!(ended, None);
        assert_eq!(waits, vec![20, 0, 0], "only the first poll waits");
        let (batch, ended, _) = run(vec![Record(1), Record(2), Record(3)], 2);
        assert_eq!((batch, ended), (vec![1, 2], None), "at most `max`");
    }

    #[test]
    fn an_event_ends_the_batch_after_the_records_before_it() {
        use Step::*;
        let (batch, ended, _) = run(vec![Record(1), Record(2), Eof, Record(3)], 64);
        assert_eq!((batch, ended), (vec![1, 2], Some("eof")));
    }

    /// Records polled before a rebalance are not folded: their partition may have been
    /// recovered to an earlier position, and the consumer delivers it again from there.
    #[test]
    fn a_rebalance_inside_a_poll_drops_the_records_polled_before_it() {
        use Step::*;
        let script = vec![Record(1), Record(2), Rebalance(10), Record(11), Nothing];
        let (batch, ended, _) = run(script, 64);
        assert_eq!((batch, ended), (vec![10, 11], None));
        let script = vec![Record(1), Rebalance(10), Rebalance(20), Eof];
        let (batch, ended, _) = run(script, 64);
        assert_eq!((batch, ended), (vec![20], Some("eof")));
        let (batch, ended, _) = run(vec![Record(1), RebalanceOnly, Record(2)], 64);
        assert_eq!(
            (batch, ended),
            (vec![], None),
            "nothing after it in this batch"
        );
    }
}
