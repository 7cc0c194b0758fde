//! Commits and snapshots of the state stage.
//!
//! Without transactions, a commit waits until every output is acknowledged. With
//! transactions (zombie fencing), it ends the open transaction, which carries the outputs, the
//! ticks and the consumed positions through the consumer group (as Kafka Streams'
//! exactly_once_v2 does): the group coordinator refuses the positions of an instance whose
//! group generation is stale, so an instance that lost its partitions cannot commit outputs for
//! them. A snapshot at position S is written only after the commit that covers S.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};

use super::{lock, Shared, StateContext};

/// The first retry after a failed snapshot; it doubles up to `snapshots.interval`.
const SNAPSHOT_FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// Snapshots are failing: when to retry, how many attempts failed, when that was last logged.
pub(super) struct SnapshotRetry {
    backoff: Duration,
    failures: u64,
    logged: Instant,
}
use crate::kafka::producer;

/// How a commit ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Commit {
    /// Every output before the committed positions is durable and visible.
    Done,
    /// The transaction was aborted (e.g. this instance's group generation is stale): nothing
    /// since the previous commit happened, and the in-memory state is ahead of the log.
    Aborted,
}

impl StateContext {
    /// Opens a transaction before the first record of one is produced (transactions only).
    pub(super) fn begin(&self) -> anyhow::Result<()> {
        if self.txn && !self.txn_open.load(Ordering::Relaxed) {
            self.producer
                .begin_transaction()
                .context("beginning a transaction")?;
            self.txn_open.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Makes everything produced so far durable: acknowledged (idempotent) or committed with
    /// the consumed positions (transactions).
    ///
    /// Errors: a delivery failure, or a fatal transaction error (this producer was fenced,
    /// e.g. the broker aborted a transaction that outlived `kafka.transaction_timeout`).
    pub(super) fn commit(
        &self,
        shared: &Shared,
        consumer: &BaseConsumer<Self>,
    ) -> anyhow::Result<Commit> {
        let svc = &self.settings.service;
        let timeout = Duration::from_millis(svc.drain_timeout_ms as u64);
        if !self.txn {
            producer::flush(&self.producer, &self.deliveries, timeout)?;
            return Ok(Commit::Done);
        }
        if !self.txn_open.load(Ordering::Relaxed) {
            return Ok(Commit::Done);
        }
        let started = Instant::now();
        // Wait for the acks here, in 1 ms steps: commit_transaction's own flush polls in
        // 100 ms steps, which held every commit (and the fold) for 100 ms.
        producer::flush(&self.producer, &self.deliveries, timeout)?;
        let positions = self.positions(shared)?;
        let group = match positions.count() {
            0 => None,
            _ => Some(
                consumer
                    .group_metadata()
                    .context("the state consumer has no group metadata")?,
            ),
        };
        // Positions first: the group coordinator checks this instance's generation there.
        // A retriable error (a timeout) may be retried with the same call.
        let deadline = Instant::now() + timeout;
        let mut offsets_sent = group.is_none();
        let result = loop {
            let step = match (&group, offsets_sent) {
                (Some(g), false) => self
                    .producer
                    .send_offsets_to_transaction(&positions, g, timeout)
                    .map(|()| offsets_sent = true),
                _ => Ok(()),
            };
            let r = step.and_then(|()| self.producer.commit_transaction(timeout));
            match &r {
                Err(KafkaError::Transaction(e))
                    if e.is_retriable() && Instant::now() < deadline => {}
                _ => break r,
            }
        };
        match result {
            Ok(()) => {
                self.txn_open.store(false, Ordering::Relaxed);
                self.metrics
                    .transaction_commit_seconds
                    .observe(started.elapsed().as_secs_f64());
                Ok(Commit::Done)
            }
            Err(KafkaError::Transaction(e)) if e.txn_requires_abort() => {
                tracing::warn!(error = %e, "transaction aborted: its outputs will not be seen");
                self.abort()?;
                Ok(Commit::Aborted)
            }
            Err(e) => Err(anyhow::Error::new(e).context(
                "committing the state stage's transaction (if fenced: another instance took \
                 over this instance's partitions or its transactional.id; a restart rejoins)",
            )),
        }
    }

    /// Aborts the open transaction (transactions only); its records stay invisible to
    /// `read_committed` readers.
    pub(super) fn abort(&self) -> anyhow::Result<()> {
        if !self.txn || !self.txn_open.load(Ordering::Relaxed) {
            return Ok(());
        }
        let timeout = Duration::from_millis(self.settings.service.drain_timeout_ms as u64);
        self.producer
            .abort_transaction(timeout)
            .context("aborting the state stage's transaction")?;
        self.txn_open.store(false, Ordering::Relaxed);
        self.stats.aborted.fetch_add(1, Ordering::Relaxed);
        self.metrics.transactions_aborted.inc();
        // What the aborted transaction carried is void, failed deliveries included.
        self.deliveries.failed.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// The next internal offset of every assigned partition that has a position.
    fn positions(&self, shared: &Shared) -> anyhow::Result<TopicPartitionList> {
        let internal = &self.settings.service.topics.internal;
        let mut tpl = TopicPartitionList::new();
        for (p, part) in &shared.parts {
            if let Some(pos) = part.next_offset {
                tpl.add_partition_offset(internal, *p, Offset::Offset(pos))
                    .context("building the position list")?;
            }
        }
        Ok(tpl)
    }

    /// Commits, then snapshots every dirty partition at its committed position. Without
    /// transactions it also commits the positions to the group (lag). A snapshot that cannot
    /// be written is logged with its cause, counted, and makes the instance not ready until
    /// one is written again; processing goes on, and [`StateContext::next_snapshot_in`] says
    /// when to retry.
    pub(super) fn checkpoint(
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
        let svc = &self.settings.service;
        let mut failure: Option<String> = None;
        for (p, part) in shared.parts.iter_mut() {
            let Some(pos) = part.next_offset else {
                continue;
            };
            if !part.dirty {
                continue;
            }
            let started = Instant::now();
            let bytes = part.state.encode_snapshot(pos);
            let (path, size) = match self.store.write(&svc.topics.internal, *p, pos, &bytes) {
                Ok(written) => written,
                Err(e) => {
                    // Not fatal: the outputs are committed; only recovery would start from an
                    // older snapshot. The partition stays dirty and the next attempt retries.
                    self.metrics.snapshot_failures.inc();
                    failure.get_or_insert_with(|| format!("partition {p}: {e:#}"));
                    continue;
                }
            };
            self.metrics
                .snapshot_written(started.elapsed().as_secs_f64(), size);
            part.dirty = false;
            self.stats.snapshots.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                partition = p,
                position = pos,
                leads = part.state.lead_count(),
                bytes = size,
                ms = started.elapsed().as_millis() as u64,
                path = %path.display(),
                "snapshot written"
            );
        }
        let mut retry = lock(&self.snapshot_retry);
        match (failure, retry.as_mut()) {
            (Some(why), None) => {
                tracing::error!(error = %why, "snapshot failed; processing goes on, retrying with backoff");
                *retry = Some(SnapshotRetry {
                    backoff: SNAPSHOT_FIRST_BACKOFF,
                    failures: 1,
                    logged: Instant::now(),
                });
                self.view.health.set_problem(
                    "snapshots",
                    format!(
                        "snapshots cannot be written ({}): {why}",
                        svc.snapshot_dir.display()
                    ),
                );
            }
            (Some(why), Some(r)) => {
                r.failures += 1;
                r.backoff =
                    (r.backoff * 2).min(Duration::from_millis(svc.snapshot_interval_ms as u64));
                // One line a minute while it lasts, not one per attempt.
                if r.logged.elapsed() >= Duration::from_secs(60) {
                    r.logged = Instant::now();
                    tracing::error!(error = %why, attempts = r.failures, "snapshots still fail");
                }
            }
            (None, Some(r)) => {
                tracing::info!(failed_attempts = r.failures, "snapshots are written again");
                *retry = None;
                self.view.health.clear_problem("snapshots");
            }
            (None, None) => {}
        }
        drop(retry);
        if !self.txn {
            let tpl = self.positions(shared)?;
            if tpl.count() > 0 {
                // Informational (lag); recovery positions come from snapshots.
                if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
                    tracing::warn!(error = %e, "committing state positions failed");
                }
            }
        }
        Ok(Commit::Done)
    }

    /// When the next checkpoint is due: the snapshot interval, or the retry backoff while
    /// snapshots fail.
    pub(super) fn next_snapshot_in(&self) -> Duration {
        let interval = Duration::from_millis(self.settings.service.snapshot_interval_ms as u64);
        lock(&self.snapshot_retry)
            .as_ref()
            .map_or(interval, |r| r.backoff.min(interval))
    }
}
