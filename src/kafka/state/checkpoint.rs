//! Commits and snapshots of the state stage.
//!
//! Without transactions, a commit waits until every output is acknowledged. With
//! transactions (zombie fencing), it ends the open transaction, which carries the outputs, the
//! ticks and the consumed positions through the consumer group (as Kafka Streams'
//! exactly_once_v2 does): the group coordinator refuses the positions of an instance whose
//! group generation is stale, so an instance that lost its partitions cannot commit outputs for
//! them. The commit of `run.commit_interval` is handed to the committer thread (txn.rs); a
//! snapshot at position S is started only after a commit on this thread that covers S.
//!
//! Snapshots stay off the fold's critical path: one starts as a copy-on-write view of the
//! state (`engine/checkpoint.rs`), is encoded in slices of about a millisecond between
//! records, and is written by the store's I/O runtime while the fold goes on: each full chunk
//! is streamed to the store as the encoder fills it, so a checkpoint never holds the whole
//! snapshot. Partitions
//! are staggered across the interval.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::txn::{Commit, InFlight, Positions};
use super::{lock, Part, Shared, StateContext};
use crate::snapshot::SnapshotStream;

/// The first retry after a failed snapshot; it doubles up to `snapshots.interval`.
const SNAPSHOT_FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// Leads encoded between two looks at the time budget (about 0.1 ms at 1M leads).
const STEP_LEADS: usize = 256;

/// Snapshots are failing: the current backoff, how many attempts failed, when that was last
/// logged.
pub(super) struct SnapshotRetry {
    backoff: Duration,
    failures: u64,
    logged: Instant,
}

/// A background snapshot write and how it ended.
pub(super) type WriteOutcome = (WriteTag, anyhow::Result<Written>);

/// What a background snapshot write reports back with its outcome.
pub(super) struct WriteTag {
    partition: i32,
    position: i64,
    started: Instant,
    /// Wall time (ms) of the state the snapshot holds, for `leadflow_snapshot_age_seconds`.
    started_ms: i64,
    leads: usize,
}
use crate::snapshot::Written;

impl StateContext {
    /// Opens a transaction before the first record of one is produced (transactions only).
    pub(super) fn begin(&self) -> anyhow::Result<()> {
        self.out.begin()
    }

    /// Makes everything produced so far durable, on this thread: acknowledged (idempotent)
    /// or committed with the consumed positions (transactions), after the commit in flight
    /// on the committer thread, if any, has ended.
    ///
    /// Errors: a delivery failure, or a fatal transaction error (this producer was fenced,
    /// e.g. the broker aborted a transaction that outlived `kafka.transaction_timeout`).
    pub(super) fn commit(
        &self,
        shared: &Shared,
        consumer: &BaseConsumer<Self>,
    ) -> anyhow::Result<Commit> {
        if !self.txn {
            self.out.flush()?;
            return Ok(Commit::Done);
        }
        let started = Instant::now();
        let waited = self.out.wait_in_flight();
        let waited_any = waited.is_some();
        if let Some(ended) = waited {
            if self.after_commit(ended)? == Commit::Aborted {
                return Ok(Commit::Aborted);
            }
        }
        if !self.out.open() && !waited_any {
            return Ok(Commit::Done);
        }
        let outcome = match self.out.open() {
            false => Commit::Done,
            true => self.out.commit_here(&self.positions(shared, consumer)?)?,
        };
        self.metrics
            .transaction_commit_wait_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(outcome)
    }

    /// What follows a commit that ended on the committer thread: if it aborted or failed,
    /// what is open follows from state the log does not have, so it is aborted too (an abort
    /// the committer already counted); a failure is returned as the error.
    fn after_commit(&self, ended: anyhow::Result<Commit>) -> anyhow::Result<Commit> {
        match ended {
            Ok(Commit::Done) => Ok(Commit::Done),
            Ok(Commit::Aborted) => {
                self.out.abort(false)?;
                Ok(Commit::Aborted)
            }
            Err(e) => {
                self.failed.store(true, Ordering::SeqCst);
                if let Err(abort) = self.out.abort(true) {
                    tracing::warn!(error = %format!("{abort:#}"), "aborting after a failed commit");
                }
                Err(e)
            }
        }
    }

    /// The commit of `run.commit_interval` (transactions only): hands the open transaction to
    /// the committer thread, so the fold goes on into the next one on the other producer.
    /// `None` when the previous commit is still running (or the stage is failing): the caller
    /// tries again later and the open transaction keeps growing meanwhile.
    ///
    /// Errors: as [`StateContext::commit`], from the commit that ended on the committer.
    pub(super) fn commit_in_background(
        &self,
        shared: &Shared,
        consumer: &BaseConsumer<Self>,
    ) -> anyhow::Result<Option<Commit>> {
        if self.failed.load(Ordering::SeqCst) {
            return Ok(None);
        }
        match self.out.in_flight() {
            InFlight::Running => return Ok(None),
            InFlight::Ended(ended) => {
                if self.after_commit(ended)? == Commit::Aborted {
                    return Ok(Some(Commit::Aborted));
                }
            }
            InFlight::None => {}
        }
        if self.out.open() {
            let started = Instant::now();
            let positions = self.positions(shared, consumer)?;
            self.out.hand_over(positions)?;
            self.metrics
                .transaction_handover_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        Ok(Some(Commit::Done))
    }

    /// Whether a commit handed over earlier has aborted or failed (checked at each
    /// maintenance step, so a failure stops the fold then, not at the next commit).
    pub(super) fn commit_ended(&self) -> anyhow::Result<Commit> {
        match self.out.in_flight() {
            InFlight::Ended(ended) => self.after_commit(ended),
            InFlight::Running | InFlight::None => Ok(Commit::Done),
        }
    }

    /// Aborts what is open (transactions only), after the commit in flight, if any, ended;
    /// the aborted records stay invisible to `read_committed` readers.
    pub(super) fn abort(&self) -> anyhow::Result<()> {
        if !self.txn {
            return Ok(());
        }
        if let Some(Err(e)) = self.out.wait_in_flight() {
            tracing::warn!(error = %format!("{e:#}"), "the last commit handed over failed");
        }
        self.out.abort(true)
    }

    /// The next internal offset of every assigned partition that has a position.
    fn position_list(&self, shared: &Shared) -> anyhow::Result<TopicPartitionList> {
        let internal = &self.settings.service.topics.internal;
        let mut list = TopicPartitionList::new();
        for (p, part) in &shared.parts {
            if let Some(pos) = part.next_offset {
                list.add_partition_offset(internal, *p, Offset::Offset(pos))
                    .context("building the position list")?;
            }
        }
        Ok(list)
    }

    /// [`StateContext::position_list`] with the group's metadata when it has any position.
    fn positions(
        &self,
        shared: &Shared,
        consumer: &BaseConsumer<Self>,
    ) -> anyhow::Result<Positions> {
        let list = self.position_list(shared)?;
        let group = match list.count() {
            0 => None,
            _ => Some(
                consumer
                    .group_metadata()
                    .context("the state consumer has no group metadata")?,
            ),
        };
        Ok(Positions { list, group })
    }

    /// Starts the snapshots that are due: commits first (a snapshot at position S is taken
    /// only once every output caused before S is durable), then each due partition begins a
    /// copy-on-write snapshot at its position; [`StateContext::snapshot_steps`] encodes it in
    /// slices and the store writes it in the background. Without transactions it also commits
    /// the positions to the group (lag).
    pub(super) fn start_snapshots(
        &self,
        shared: &mut Shared,
        consumer: &BaseConsumer<Self>,
    ) -> anyhow::Result<Commit> {
        if self.failed.load(Ordering::SeqCst) {
            return Ok(Commit::Done);
        }
        let now = Instant::now();
        let due: Vec<i32> = shared
            .parts
            .iter()
            .filter(|(_, part)| {
                part.snapshot_due <= now
                    && part.dirty
                    && part.next_offset.is_some()
                    && part.stopped.is_none()
                    && part.writing.is_none()
                    && part.state.snapshot_in_progress().is_none()
            })
            .map(|(p, _)| *p)
            .collect();
        if due.is_empty() {
            return Ok(Commit::Done);
        }
        if self.commit(shared, consumer)? == Commit::Aborted {
            return Ok(Commit::Aborted);
        }
        // The pause counts what the snapshots add: with transactions the commit runs every
        // `run.commit_interval` anyway.
        let begun = Instant::now();
        let interval = self.snapshot_interval();
        let wall = crate::metrics::now_ms();
        for p in due {
            let Some(part) = shared.parts.get_mut(&p) else {
                continue;
            };
            let Some(pos) = part.next_offset else {
                continue;
            };
            part.state.begin_snapshot(pos);
            // Replaces (abandons) any stream left by a snapshot that did not finish.
            part.stream = Some(
                self.store
                    .stream(&self.settings.service.topics.internal, p, pos),
            );
            part.dirty = false;
            part.snapshot_started = Some((Instant::now(), wall));
            part.snapshot_due = now + interval;
        }
        self.metrics
            .checkpoint_pause_seconds
            .observe(begun.elapsed().as_secs_f64());
        if !self.txn {
            self.commit_positions(shared, consumer)?;
        }
        Ok(Commit::Done)
    }

    /// Encodes the snapshots in progress for at most about `budget`, then hands each complete
    /// one to the store's background writer. Returns whether any is still in progress.
    pub(super) fn snapshot_steps(&self, shared: &mut Shared, budget: Duration) -> bool {
        let started = Instant::now();
        let mut stepped = false;
        for (p, part) in shared.parts.iter_mut() {
            while part.state.snapshot_in_progress().is_some() {
                // The store does not keep up: encode more later, rather than hold it all.
                if part.stream.as_ref().is_some_and(SnapshotStream::backed_up) {
                    break;
                }
                stepped = true;
                if let Some((pos, chunks)) = part.state.snapshot_step(STEP_LEADS) {
                    self.hand_over(*p, part, pos, chunks);
                    break;
                }
                // Full chunks go to the store now, not at the end: a checkpoint then holds
                // about one upload part, not the whole snapshot.
                // (Only into this snapshot's stream: chunks taken elsewhere would be missing
                // from the one written.)
                let ours = part.state.snapshot_in_progress();
                if let Some(stream) = part.stream.as_ref().filter(|s| Some(s.position()) == ours) {
                    for chunk in part.state.take_snapshot_chunks() {
                        stream.send(chunk);
                    }
                }
                if started.elapsed() >= budget {
                    break;
                }
            }
            if started.elapsed() >= budget {
                break;
            }
        }
        if stepped {
            self.metrics
                .checkpoint_pause_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        shared
            .parts
            .values()
            .any(|part| part.state.snapshot_in_progress().is_some())
    }

    fn hand_over(&self, p: i32, part: &mut Part, pos: i64, chunks: Vec<Vec<u8>>) {
        let (started, started_ms) = part
            .snapshot_started
            .take()
            .unwrap_or_else(|| (Instant::now(), crate::metrics::now_ms()));
        part.writing = Some(pos);
        self.writes_in_flight.fetch_add(1, Ordering::SeqCst);
        let tag = WriteTag {
            partition: p,
            position: pos,
            started,
            started_ms,
            leads: part.state.lead_count(),
        };
        match part.stream.take() {
            Some(stream) if stream.position() == pos => {
                stream.finish(chunks, tag, self.written_tx.clone());
            }
            // No stream took chunks of this snapshot (a stale one is abandoned here):
            // these are all of it.
            _ => self.store.spawn_write(
                &self.settings.service.topics.internal,
                p,
                pos,
                chunks,
                tag,
                self.written_tx.clone(),
            ),
        }
    }

    /// Takes the outcomes of the background writes: metrics, readiness, and a retry with
    /// backoff for a partition whose snapshot failed.
    pub(super) fn collect_written(&self, shared: &mut Shared) {
        let rx = lock(&self.written_rx);
        while let Ok((tag, result)) = rx.try_recv() {
            self.writes_in_flight.fetch_sub(1, Ordering::SeqCst);
            self.written(shared, tag, result);
        }
    }

    fn written(&self, shared: &mut Shared, tag: WriteTag, result: anyhow::Result<Written>) {
        // The partition may have been revoked or recovered anew meanwhile: then only count.
        let part = shared
            .parts
            .get_mut(&tag.partition)
            .filter(|part| part.writing == Some(tag.position));
        match result {
            Ok(w) => {
                if let Some(part) = part {
                    part.writing = None;
                }
                self.snapshot_ok(&tag, &w);
            }
            Err(e) => {
                let backoff = self.snapshot_failed(format!("partition {}: {e:#}", tag.partition));
                if let Some(part) = part {
                    part.writing = None;
                    // Not fatal: the outputs are committed; only recovery would start from an
                    // older snapshot. The next attempt takes the state as it is then.
                    part.dirty = true;
                    part.snapshot_due = Instant::now() + backoff;
                }
            }
        }
    }

    fn snapshot_ok(&self, tag: &WriteTag, w: &Written) {
        if w.above > 0 && lock(&self.warned_above).insert(tag.partition) {
            tracing::warn!(
                partition = tag.partition,
                position = tag.position,
                objects = w.above,
                store = %self.store.url(),
                "objects named above this partition's position are in the snapshot store (left \
                 from a recreated topic, or put there by hand): they are kept out of retention \
                 and passed over at recovery if they do not decode; remove them"
            );
        }
        let seconds = tag.started.elapsed().as_secs_f64();
        self.metrics
            .snapshot_written(seconds, w.bytes, tag.started_ms);
        self.stats.snapshots.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            partition = tag.partition,
            position = tag.position,
            leads = tag.leads,
            bytes = w.bytes,
            ms = (seconds * 1000.0) as u64,
            path = %w.path,
            "snapshot written"
        );
        let mut retry = lock(&self.snapshot_retry);
        if let Some(r) = retry.take() {
            tracing::info!(failed_attempts = r.failures, "snapshots are written again");
            self.view.health.clear_problem("snapshots");
        }
    }

    /// Counts and reports a failed snapshot; returns how long to wait before the next try.
    fn snapshot_failed(&self, why: String) -> Duration {
        self.metrics.snapshot_failures.inc();
        let interval = self.snapshot_interval();
        let mut retry = lock(&self.snapshot_retry);
        match retry.as_mut() {
            None => {
                tracing::error!(error = %why, "snapshot failed; processing goes on, retrying with backoff");
                self.view.health.set_problem(
                    "snapshots",
                    format!("snapshots cannot be written ({}): {why}", self.store.url()),
                );
                *retry = Some(SnapshotRetry {
                    backoff: SNAPSHOT_FIRST_BACKOFF.min(interval),
                    failures: 1,
                    logged: Instant::now(),
                });
                SNAPSHOT_FIRST_BACKOFF.min(interval)
            }
            Some(r) => {
                r.failures += 1;
                r.backoff = (r.backoff * 2).min(interval);
                // One line a minute while it lasts, not one per attempt.
                if r.logged.elapsed() >= Duration::from_secs(60) {
                    r.logged = Instant::now();
                    tracing::error!(error = %why, attempts = r.failures, "snapshots still fail");
                }
                r.backoff
            }
        }
    }

    /// The snapshot before partitions are handed back or the process stops: commits, then
    /// snapshots every partition with state not yet in a snapshot, waiting for the writes
    /// (and for the background writes in flight, within `run.drain_timeout`). A failed write
    /// is reported as in [`StateContext::collect_written`]; only a failed commit is an error.
    pub(super) fn final_checkpoint(
        &self,
        shared: &mut Shared,
        consumer: &BaseConsumer<Self>,
    ) -> anyhow::Result<Commit> {
        if self.failed.load(Ordering::SeqCst) {
            anyhow::bail!("not snapshotting after a failure");
        }
        if self.commit(shared, consumer)? == Commit::Aborted {
            return Ok(Commit::Aborted);
        }
        let internal = self.settings.service.topics.internal.clone();
        let wall = crate::metrics::now_ms();
        for (p, part) in shared.parts.iter_mut() {
            let interrupted = part.state.snapshot_in_progress().is_some();
            part.state.cancel_snapshot();
            part.stream = None;
            part.snapshot_started = None;
            let Some(pos) = part.next_offset else {
                continue;
            };
            if !(part.dirty || interrupted) || part.stopped.is_some() {
                continue;
            }
            let started = Instant::now();
            let tag = WriteTag {
                partition: *p,
                position: pos,
                started,
                started_ms: wall,
                leads: part.state.lead_count(),
            };
            // Streamed as it is encoded, like a periodic checkpoint: the state is still
            // whole in memory here, and a second copy of it would double the peak.
            match self.store.write_state(&internal, *p, &mut part.state, pos) {
                Ok(w) => {
                    part.dirty = false;
                    self.snapshot_ok(&tag, &w);
                }
                Err(e) => {
                    self.snapshot_failed(format!("partition {p}: {e:#}"));
                }
            }
        }
        self.drain_writes(shared);
        if !self.txn {
            self.commit_positions(shared, consumer)?;
        }
        Ok(Commit::Done)
    }

    /// After a failure (no final snapshot): drops the snapshots in progress, then
    /// [`Self::wait_for_aborts`].
    pub(super) fn abandon_snapshots(&self, shared: &mut Shared, deadline: Instant) {
        for part in shared.parts.values_mut() {
            part.state.cancel_snapshot();
            part.stream = None;
        }
        self.wait_for_aborts(deadline);
    }

    /// Before the process exits: waits, until `deadline`, for the uploads that a revoke, the
    /// final checkpoint or a failure abandoned to be aborted. They abort in the background,
    /// and the exit would cut them short: their parts would wait for the bucket's lifecycle
    /// rule. Not at a revoke: the process goes on, and so do the aborts.
    pub(super) fn wait_for_aborts(&self, deadline: Instant) {
        let running = self.store.wait_for_uploads(deadline);
        if running > 0 {
            tracing::warn!(
                uploads = running,
                "snapshot uploads still running at the drain timeout; an unfinished multipart \
                 upload stays in the bucket until its lifecycle rule removes it"
            );
        }
    }

    /// Waits (within `run.drain_timeout`) for the background writes in flight.
    fn drain_writes(&self, shared: &mut Shared) {
        let deadline =
            Instant::now() + Duration::from_millis(self.settings.service.drain_timeout_ms as u64);
        let rx = lock(&self.written_rx);
        while self.writes_in_flight.load(Ordering::SeqCst) > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((tag, result)) => {
                    self.writes_in_flight.fetch_sub(1, Ordering::SeqCst);
                    self.written(shared, tag, result);
                }
                Err(_) => {
                    tracing::warn!(
                        in_flight = self.writes_in_flight.load(Ordering::SeqCst),
                        "snapshot writes still running at the drain timeout; the next owner \
                         starts from the previous snapshots"
                    );
                    break;
                }
            }
        }
    }

    /// Informational (lag): recovery positions come from snapshots.
    fn commit_positions(
        &self,
        shared: &Shared,
        consumer: &BaseConsumer<Self>,
    ) -> anyhow::Result<()> {
        let tpl = self.position_list(shared)?;
        if tpl.count() > 0 {
            if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
                tracing::warn!(error = %e, "committing state positions failed");
            }
        }
        Ok(())
    }

    fn snapshot_interval(&self) -> Duration {
        Duration::from_millis(self.settings.service.snapshot_interval_ms as u64)
    }

    /// When a newly assigned partition takes its first snapshot: one interval, plus a share
    /// of one by partition number, so partitions do not all checkpoint at once.
    pub(super) fn first_snapshot_due(&self, p: i32, partitions: i32) -> Instant {
        let interval = self.snapshot_interval();
        let n = partitions.max(1) as u32;
        let share = interval * (p.rem_euclid(partitions.max(1)) as u32) / n;
        Instant::now() + interval + share
    }
}
