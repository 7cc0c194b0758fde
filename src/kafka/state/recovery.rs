//! Recovery of an assigned partition q of the internal log: the newest valid snapshot, then the
//! last output already in partition q of each output topic, so the re-fold emits nothing twice.
//!
//! With transactions, the output tails are read only once no transaction is open on them
//! (last stable offset = high watermark): a transaction left open by an instance that lost q
//! is either committed (its outputs count as emitted) or aborted (they never happened) before
//! the new owner decides where to resume.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::{Part, Shared, StateContext, Stop};
use crate::engine::PartitionState;
use crate::kafka::{header_i64, H_SRC_INDEX, H_SRC_OFFSET};

/// The context of the tail and watermark readers: reaching the end of a partition is how a
/// tail read ends, not an error to log.
pub(super) struct TailContext;

impl rdkafka::ClientContext for TailContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error,
            KafkaError::PartitionEOF(_)
                | KafkaError::Global(rdkafka::error::RDKafkaErrorCode::PartitionEOF)
        ) {
            return;
        }
        tracing::warn!(%error, reason, "kafka client error (output tail reader)");
    }
}

impl rdkafka::consumer::ConsumerContext for TailContext {}

/// How many records before the end the tail search starts with; it doubles while the window
/// holds only aborted records and transaction markers.
const TAIL_WINDOW: i64 = 16;

impl StateContext {
    /// Newest valid snapshot, then the output tails. Returns the partition and the internal
    /// offset to fetch from (`None`: the beginning).
    pub(super) fn recover(&self, p: i32) -> anyhow::Result<(Part, Option<i64>)> {
        let topics = &self.settings.service.topics;
        let leftovers = self.store.remove_leftovers(&topics.internal, p);
        if leftovers > 0 {
            tracing::info!(
                partition = p,
                files = leftovers,
                "removed unfinished snapshot files"
            );
        }
        let (loaded, skipped) = self
            .store
            .load_newest(&topics.internal, p, &self.rules)
            .with_context(|| {
                format!(
                    "recovering {}/{p}: the snapshot store cannot be read, and folding the \
                     log from its start instead could miss deleted records",
                    topics.internal
                )
            })?;
        for s in skipped {
            self.metrics
                .snapshots_skipped
                .with_label_values(&[s.code])
                .inc();
            tracing::warn!(path = %s.path, reason = %s.reason, "unusable snapshot skipped");
        }
        let (state, start) = match loaded {
            Some((state, pos)) => (state, Some(pos)),
            None => (PartitionState::new(Arc::clone(&self.rules)), None),
        };
        if let Some(stop) = self.check_history(p, start)? {
            self.report_stop(p, &stop);
            let mut part = Part::new(state, start, [None, None]);
            part.stopped = Some(stop);
            return Ok((part, start));
        }
        let suppress = [
            self.last_output(&topics.transitions, p)?,
            self.last_output(&topics.sla, p)?,
        ];
        Ok((Part::new(state, start, suppress), start))
    }

    /// Whether the internal log still holds what `position` (the next offset to fold; `None`:
    /// from the beginning) says: not beyond its end, not before its start.
    fn check_history(&self, p: i32, position: Option<i64>) -> anyhow::Result<Option<Stop>> {
        let internal = &self.settings.service.topics.internal;
        let (low, high) = self
            .hw
            .fetch_watermarks(internal, p, Duration::from_secs(10))
            .with_context(|| format!("reading the watermarks of {internal}/{p}"))?;
        let snapshots = self.store.url();
        let here = format!("{snapshots}/{internal}-{p}/");
        Ok(match position {
            Some(s) if s > high => Some(Stop {
                reason: "log_recreated",
                message: format!(
                    "{internal}/{p}: the newest usable snapshot is at position {s}, beyond the \
                     end of the log ({high}): the topic was deleted and recreated, or \
                     truncated, so folding on would skip or misplace records. Remedies \
                     (docs/operations.md, \"A stopped partition\"): point leadflow back at \
                     the original topic; or rebuild from the source topics into a new set of \
                     topics, consumer groups and snapshot prefix"
                ),
            }),
            Some(s) if s < low => Some(Stop {
                reason: "history_deleted",
                message: format!(
                    "{internal}/{p}: the newest usable snapshot is at position {s}, below the \
                     start of the log ({low}): records {s} to {} were deleted (retention or \
                     DeleteRecords) before a snapshot covered them, and Kafka cannot bring \
                     them back; folding on would build a state without them. Remedies \
                     (docs/operations.md, \"A stopped partition\"): if a newer snapshot \
                     exists (one skipped above as unusable, another store, a backup), put it \
                     in {here} and restart; otherwise rebuild from the source topics into a \
                     new set of topics, consumer groups and snapshot prefix. Then keep the \
                     internal topic's retention above the snapshots' age plus the longest \
                     snapshot outage you will sit out",
                    low - 1
                ),
            }),
            None if low > 0 => Some(Stop {
                reason: "history_deleted",
                message: format!(
                    "{internal}/{p}: no usable snapshot in {here}, and the log starts at \
                     {low}, not 0: records before {low} were deleted, so the state cannot be \
                     rebuilt from the log. Remedies (docs/operations.md, \"A stopped \
                     partition\"): if this partition's snapshots exist elsewhere (another \
                     snapshots.url, a backup), put them in {here} and restart; otherwise \
                     rebuild from the source topics into a new set of topics, consumer groups \
                     and snapshot prefix"
                ),
            }),
            _ => None,
        })
    }

    fn report_stop(&self, p: i32, stop: &Stop) {
        tracing::error!(
            partition = p,
            reason = stop.reason,
            "partition stopped: {}",
            stop.message
        );
        self.metrics
            .partition_stops
            .with_label_values(&[stop.reason])
            .inc();
    }

    /// After the consumer refused to reset a position: stops (and pauses) every partition
    /// whose position is outside its log now.
    pub(super) fn stop_out_of_range(
        &self,
        shared: &mut Shared,
        consumer: &BaseConsumer<Self>,
    ) -> anyhow::Result<()> {
        let internal = self.settings.service.topics.internal.clone();
        let mut pause = TopicPartitionList::new();
        for (p, part) in shared.parts.iter_mut() {
            if part.stopped.is_some() {
                continue;
            }
            if let Some(mut stop) = self.check_history(*p, part.next_offset)? {
                stop.reason = "offset_reset";
                self.report_stop(*p, &stop);
                part.stopped = Some(stop);
                pause.add_partition(&internal, *p);
            }
        }
        if pause.count() > 0 {
            consumer
                .pause(&pause)
                .context("pausing the stopped partitions")?;
        }
        self.view.publish(shared, &self.metrics);
        Ok(())
    }

    /// Recovers every assigned partition again and moves the consumer back to each one's
    /// start: after an aborted transaction the in-memory state is ahead of what was committed.
    pub(super) fn recover_assigned(
        &self,
        shared: &mut Shared,
        consumer: &BaseConsumer<Self>,
    ) -> anyhow::Result<()> {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let internal = self.settings.service.topics.internal.clone();
        let partitions: Vec<i32> = shared.parts.keys().copied().collect();
        for p in partitions {
            let (mut part, start) = self.recover(p)?;
            part.snapshot_due = self.first_snapshot_due(p, shared.internal_partitions);
            let offset = start.map_or(Offset::Beginning, Offset::Offset);
            consumer
                .seek(&internal, p, offset, Duration::from_secs(10))
                .with_context(|| {
                    format!("rewinding {internal}/{p} after an aborted transaction")
                })?;
            tracing::info!(partition = p, start = ?start, "partition recovered after an aborted transaction");
            shared.parts.insert(p, part);
        }
        Ok(())
    }

    /// `(lf-src-offset, lf-src-index)` of the last committed record in partition `p` of
    /// `topic`, or `None` when it has none.
    fn last_output(&self, topic: &str, p: i32) -> anyhow::Result<Option<(i64, i64)>> {
        let timeout = Duration::from_secs(10);
        let (low, end) = self.stable_end(topic, p)?;
        if end <= low {
            return Ok(None);
        }
        // The last record before `end` may be a transaction marker or an aborted record,
        // which a read_committed reader never sees: search backwards in growing windows.
        let mut window = TAIL_WINDOW;
        loop {
            let from = (end - window).max(low);
            if let Some(found) = self.last_in(topic, p, from, end, timeout)? {
                return Ok(Some(found));
            }
            if from == low {
                return Ok(None);
            }
            window *= 2;
        }
    }

    /// The log start and the end up to which partition `p` of `topic` is stable. With
    /// transactions, waits until no transaction is open on it (last stable offset = high
    /// watermark), at most the transaction timeout plus the broker's abort check interval.
    fn stable_end(&self, topic: &str, p: i32) -> anyhow::Result<(i64, i64)> {
        let timeout = Duration::from_secs(10);
        let watermarks = |c: &BaseConsumer<_>| {
            c.fetch_watermarks(topic, p, timeout)
                .with_context(|| format!("reading the watermarks of {topic}/{p}"))
        };
        if !self.txn {
            return watermarks(&self.tail);
        }
        let hw_reader = &self.hw;
        let wait = Duration::from_millis(self.settings.service.transaction_timeout_ms as u64)
            + Duration::from_secs(60);
        let deadline = Instant::now() + wait;
        let mut logged = false;
        loop {
            // The read_committed reader's high watermark is the last stable offset.
            let (low, stable) = watermarks(&self.tail)?;
            let (_, high) = watermarks(hw_reader)?;
            if stable >= high {
                return Ok((low, stable));
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "{topic}/{p} still has an open transaction after {wait:?} (last stable offset \
                     {stable}, high watermark {high}); is kafka.transaction_timeout longer than \
                     the broker's transaction.max.timeout.ms?"
                );
            }
            if !logged {
                tracing::info!(
                    topic,
                    partition = p,
                    stable,
                    high,
                    "waiting for an open transaction (of the previous owner) to end"
                );
                logged = true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The headers of the last committed record of `topic`/`p` in `[from, end)`.
    fn last_in(
        &self,
        topic: &str,
        p: i32,
        from: i64,
        end: i64,
        timeout: Duration,
    ) -> anyhow::Result<Option<(i64, i64)>> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, Offset::Offset(from))
            .context("building the tail assignment")?;
        self.tail
            .assign(&tpl)
            .context("assigning the tail reader")?;
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if Instant::now() >= deadline {
                anyhow::bail!("timed out reading the end of {topic}/{p} (from {from} to {end})");
            }
            match self.tail.poll(Duration::from_millis(200)) {
                Some(Ok(m)) if m.topic() == topic && m.partition() == p => {
                    if m.offset() >= end {
                        break;
                    }
                    let (Some(o), Some(i)) =
                        (header_i64(&m, H_SRC_OFFSET), header_i64(&m, H_SRC_INDEX))
                    else {
                        anyhow::bail!(
                            "record {} of {topic}/{p} has no {H_SRC_OFFSET}/{H_SRC_INDEX} \
                             headers: is another producer writing to leadflow's output topics?",
                            m.offset()
                        );
                    };
                    last = Some((o, i));
                    if m.offset() == end - 1 {
                        break;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(q))) if q == p => break,
                Some(Ok(_)) | None => {}
                Some(Err(e)) => tracing::debug!(error = %e, "tail reader"),
            }
        }
        self.tail
            .unassign()
            .context("unassigning the tail reader")?;
        Ok(last)
    }
}
