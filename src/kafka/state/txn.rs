//! The state stage's producers and the commit of their transactions.
//!
//! Without transactions there is one idempotent producer. With them there are two
//! transactional producers, used in turn: while one transaction commits on the committer
//! thread, the fold goes on filling the next one on the other producer. Kafka allows one open
//! transaction per producer and librdkafka's commit blocks, so with one producer the fold
//! stood still for every commit (the state thread's largest stall: issue 17, item 2). Now it
//! waits only for the acks of the records it produced last.
//!
//! Exactly-once and order are kept, because the committed transactions stay a prefix of what
//! the fold produced, in order:
//! - a transaction carries exactly the outputs, ticks and consumed positions produced since
//!   the previous hand-over, and all of its records are acknowledged before the fold sends the
//!   first record of the next (the fold waits for those acks at the hand-over), so its records
//!   precede the next transaction's in every partition;
//! - only one transaction commits at a time: the next is handed over after the previous
//!   committed;
//! - when a transaction aborts, the one being filled is aborted too (it follows from state the
//!   log does not have), and the stage recovers from what is committed;
//! - both producers send the consumer group's metadata with the positions, so the group
//!   coordinator refuses either of them once this instance's generation is stale (zombie
//!   fencing, as with one producer).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer;
use rdkafka::TopicPartitionList;

use super::{lock, StateStats};
use crate::config::Service;
use crate::kafka::producer::{self, Deliveries, LfProducer};
use crate::metrics::Metrics;

/// How a commit ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Commit {
    /// Every output before the committed positions is durable and visible.
    Done,
    /// The transaction was aborted (e.g. this instance's group generation is stale): nothing
    /// since the previous commit happened, and the in-memory state is ahead of the log.
    Aborted,
}

/// One producer and whether a transaction is open on it.
pub(super) struct Slot {
    pub producer: LfProducer,
    pub deliveries: Arc<Deliveries>,
    /// A transaction is open on this producer (transactions only).
    open: AtomicBool,
}

/// What a commit needs besides the producer: the consumed positions and the group's metadata
/// (`None` when no partition has a position yet).
pub(super) struct Positions {
    pub list: TopicPartitionList,
    pub group: Option<ConsumerGroupMetadata>,
}

/// The counters a commit or an abort updates.
#[derive(Clone)]
struct Counters {
    metrics: Arc<Metrics>,
    stats: Arc<StateStats>,
}

/// A commit in progress on the committer thread, or its outcome.
pub(super) enum InFlight {
    /// No transaction is being committed.
    None,
    /// The committer is still at it.
    Running,
    /// It ended: done, aborted (it aborted itself), or an error.
    Ended(anyhow::Result<Commit>),
}

struct Job {
    slot: Arc<Slot>,
    positions: Positions,
}

/// The committer thread's ends of its channels; `None` without transactions.
struct Committer {
    jobs: Sender<Job>,
    ended: Mutex<Receiver<anyhow::Result<Commit>>>,
    running: AtomicBool,
    /// A commit on the committer failed: no later transaction may commit (recovery would
    /// take its outputs for emitted and skip the failed one's), only abort.
    failed: AtomicBool,
    /// Set by the committer thread while it commits.
    busy: Arc<AtomicBool>,
}

/// The stage's producers: the active one takes the fold's records.
pub(super) struct Outputs {
    slots: Vec<Arc<Slot>>,
    active: AtomicUsize,
    committer: Option<Committer>,
    counters: Counters,
    timeout: Duration,
}

/// The second producer's `transactional.id`: the first one's with `-b` appended.
pub(super) fn second_id(id: &str) -> String {
    format!("{id}-b")
}

impl Outputs {
    /// One idempotent producer (`transactional_id` `None`), or two transactional producers:
    /// `id` and [`second_id`], each with its transactions initialized (fencing any earlier
    /// producer with the same id), and the committer thread.
    ///
    /// Errors: a producer cannot be created, or its `init_transactions` failed (see
    /// [`producer::transactional`]).
    pub fn new(
        svc: &Service,
        transactional_id: Option<&str>,
        metrics: Arc<Metrics>,
        stats: Arc<StateStats>,
    ) -> anyhow::Result<Outputs> {
        let errors = Some(metrics.producer_errors.clone());
        let counters = Counters { metrics, stats };
        let timeout = Duration::from_millis(svc.drain_timeout_ms as u64);
        let slot = |(producer, deliveries)| {
            Arc::new(Slot {
                producer,
                deliveries,
                open: AtomicBool::new(false),
            })
        };
        let Some(id) = transactional_id else {
            return Ok(Outputs {
                slots: vec![slot(producer::idempotent(svc, 5, errors)?)],
                active: AtomicUsize::new(0),
                committer: None,
                counters,
                timeout,
            });
        };
        let slots = vec![
            slot(producer::transactional(svc, id, 5, errors.clone())?),
            slot(producer::transactional(svc, &second_id(id), 5, errors)?),
        ];
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (ended_tx, ended) = mpsc::channel();
        let thread_counters = counters.clone();
        let busy = Arc::new(AtomicBool::new(false));
        let thread_busy = Arc::clone(&busy);
        std::thread::Builder::new()
            .name("lf-commit".into())
            .spawn(move || {
                // Ends when the stage drops its sender.
                while let Ok(job) = job_rx.recv() {
                    thread_busy.store(true, Ordering::Relaxed);
                    let r = commit_slot(&job.slot, &job.positions, timeout, &thread_counters);
                    thread_busy.store(false, Ordering::Relaxed);
                    if let Err(e) = &r {
                        // Never leave it open (it would hold back read_committed readers and
                        // the next owner until the broker's timeout); after a fatal error
                        // (fenced) the abort fails too, and the stage stops.
                        tracing::warn!(error = %format!("{e:#}"), "a commit failed; aborting it");
                        if let Err(e) = abort_slot(&job.slot, timeout) {
                            tracing::warn!(error = %format!("{e:#}"), "aborting it failed too");
                        }
                    }
                    if ended_tx.send(r).is_err() {
                        break;
                    }
                }
            })
            .context("starting the transaction committer thread")?;
        Ok(Outputs {
            slots,
            active: AtomicUsize::new(0),
            committer: Some(Committer {
                jobs,
                ended: Mutex::new(ended),
                running: AtomicBool::new(false),
                failed: AtomicBool::new(false),
                busy,
            }),
            counters,
            timeout,
        })
    }

    fn slot(&self) -> &Arc<Slot> {
        &self.slots[self.active.load(Ordering::Relaxed) % self.slots.len()]
    }

    /// The producer that takes the fold's records now.
    pub fn producer(&self) -> &LfProducer {
        &self.slot().producer
    }

    /// Opens a transaction on the active producer if none is open (transactions only).
    pub fn begin(&self) -> anyhow::Result<()> {
        let slot = self.slot();
        if self.committer.is_some() && !slot.open.load(Ordering::Relaxed) {
            slot.producer
                .begin_transaction()
                .context("beginning a transaction")?;
            slot.open.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Whether the active producer has a transaction open.
    pub fn open(&self) -> bool {
        self.slot().open.load(Ordering::Relaxed)
    }

    /// Without transactions: waits until every record is acknowledged.
    pub fn flush(&self) -> anyhow::Result<()> {
        let slot = self.slot();
        producer::flush(&slot.producer, &slot.deliveries, self.timeout)
    }

    /// The commit on the committer thread: still running, or how it ended (taken: the next
    /// call says `None`).
    pub fn in_flight(&self) -> InFlight {
        let Some(c) = &self.committer else {
            return InFlight::None;
        };
        if !c.running.load(Ordering::Relaxed) {
            return InFlight::None;
        }
        let r = match lock(&c.ended).try_recv() {
            Ok(r) => r,
            Err(TryRecvError::Empty) => return InFlight::Running,
            Err(TryRecvError::Disconnected) => Err(anyhow::anyhow!(
                "the transaction committer thread has ended"
            )),
        };
        c.running.store(false, Ordering::Relaxed);
        if r.is_err() {
            c.failed.store(true, Ordering::SeqCst);
        }
        InFlight::Ended(r)
    }

    /// Waits for the commit on the committer thread, if any, and returns how it ended.
    pub fn wait_in_flight(&self) -> Option<anyhow::Result<Commit>> {
        let c = self.committer.as_ref()?;
        if !c.running.load(Ordering::Relaxed) {
            return None;
        }
        c.running.store(false, Ordering::Relaxed);
        let r = lock(&c.ended).recv().unwrap_or_else(|_| {
            Err(anyhow::anyhow!(
                "the transaction committer thread has ended"
            ))
        });
        if r.is_err() {
            c.failed.store(true, Ordering::SeqCst);
        }
        Some(r)
    }

    /// Refuses to commit after a commit on the committer failed.
    fn check_not_failed(&self) -> anyhow::Result<()> {
        match &self.committer {
            Some(c) if c.failed.load(Ordering::SeqCst) => anyhow::bail!(
                "not committing: an earlier transaction failed to commit, and a later one must not \
                 commit without it"
            ),
            _ => Ok(()),
        }
    }

    /// Whether the committer thread is committing at this moment.
    pub fn committing(&self) -> bool {
        self.committer
            .as_ref()
            .is_some_and(|c| c.busy.load(Ordering::Relaxed))
    }

    /// Hands the active transaction to the committer with `positions` and makes the other
    /// producer the active one. The caller has checked that no commit is in flight.
    ///
    /// Waits here until every record of the transaction is acknowledged: two producers give
    /// no order between them, and a record of the next transaction written before one of this
    /// transaction would reverse two outputs of a lead for every reader, and mislead recovery,
    /// which takes the last output in a partition for the last one emitted. Only the ends of
    /// the transaction (the positions, the commit, the markers) overlap the fold.
    ///
    /// Errors: a delivery failed or timed out (`service.drain_timeout`).
    pub fn hand_over(&self, positions: Positions) -> anyhow::Result<()> {
        let Some(c) = &self.committer else {
            anyhow::bail!("no transactions to hand over");
        };
        debug_assert!(!c.running.load(Ordering::Relaxed));
        self.check_not_failed()?;
        let slot = Arc::clone(self.slot());
        producer::flush(&slot.producer, &slot.deliveries, self.timeout)?;
        c.jobs
            .send(Job { slot, positions })
            .map_err(|_| anyhow::anyhow!("the transaction committer thread has ended"))?;
        c.running.store(true, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Commits the active transaction on this thread (no commit may be in flight).
    ///
    /// Errors: as [`commit_slot`], or a commit on the committer failed before.
    pub fn commit_here(&self, positions: &Positions) -> anyhow::Result<Commit> {
        self.check_not_failed()?;
        commit_slot(self.slot(), positions, self.timeout, &self.counters)
    }

    /// Aborts every open transaction (the caller has waited for the commit in flight).
    /// `count`: this is an incident of its own for `leadflow_transactions_aborted_total`
    /// (not the follow-up of an abort on the committer, already counted).
    ///
    /// Errors: the first abort that failed (each one is tried).
    pub fn abort(&self, count: bool) -> anyhow::Result<()> {
        let mut aborted = false;
        let mut first_err = None;
        for slot in &self.slots {
            match abort_slot(slot, self.timeout) {
                Ok(was_open) => aborted |= was_open,
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if aborted && count {
            self.counters.count_abort();
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// Makes a slot's open transaction durable with `positions`: waits for its acks, sends the
/// positions with the group's metadata, commits. A transaction the broker requires to abort
/// (e.g. a stale group generation) is aborted here: `Commit::Aborted`.
///
/// Errors: a delivery failure, or a fatal transaction error (this producer was fenced, e.g.
/// the broker aborted a transaction that outlived `kafka.transaction_timeout`).
fn commit_slot(
    slot: &Slot,
    positions: &Positions,
    timeout: Duration,
    counters: &Counters,
) -> anyhow::Result<Commit> {
    if !slot.open.load(Ordering::Relaxed) {
        return Ok(Commit::Done);
    }
    let started = Instant::now();
    // Wait for the acks here, in 1 ms steps: commit_transaction's own flush polls in 100 ms
    // steps, which held every commit for 100 ms.
    producer::flush(&slot.producer, &slot.deliveries, timeout)?;
    // Positions first: the group coordinator checks this instance's generation there. A
    // retriable error (a timeout) may be retried with the same call.
    let deadline = Instant::now() + timeout;
    let mut offsets_sent = positions.group.is_none();
    let result = loop {
        let step = match (&positions.group, offsets_sent) {
            (Some(g), false) => slot
                .producer
                .send_offsets_to_transaction(&positions.list, g, timeout)
                .map(|()| offsets_sent = true),
            _ => Ok(()),
        };
        let r = step.and_then(|()| slot.producer.commit_transaction(timeout));
        match &r {
            Err(KafkaError::Transaction(e)) if e.is_retriable() && Instant::now() < deadline => {}
            _ => break r,
        }
    };
    match result {
        Ok(()) => {
            slot.open.store(false, Ordering::Relaxed);
            counters
                .metrics
                .transaction_commit_seconds
                .observe(started.elapsed().as_secs_f64());
            Ok(Commit::Done)
        }
        Err(KafkaError::Transaction(e)) if e.txn_requires_abort() => {
            tracing::warn!(error = %e, "transaction aborted: its outputs will not be seen");
            abort_slot(slot, timeout)?;
            counters.count_abort();
            Ok(Commit::Aborted)
        }
        Err(e) => Err(anyhow::Error::new(e).context(
            "committing the state stage's transaction (if fenced: another instance took over \
             this instance's partitions or its transactional.id; a restart rejoins)",
        )),
    }
}

/// Aborts a slot's open transaction; its records stay invisible to `read_committed` readers.
/// Returns whether one was open.
fn abort_slot(slot: &Slot, timeout: Duration) -> anyhow::Result<bool> {
    if !slot.open.load(Ordering::Relaxed) {
        return Ok(false);
    }
    slot.producer
        .abort_transaction(timeout)
        .context("aborting the state stage's transaction")?;
    slot.open.store(false, Ordering::Relaxed);
    // What the aborted transaction carried is void, failed deliveries included.
    slot.deliveries.failed.store(0, Ordering::Relaxed);
    Ok(true)
}

impl Counters {
    /// One abort incident: a refused commit, with the transaction filled meanwhile, counts
    /// once (`leadflow_transactions_aborted_total` feeds an alert).
    fn count_abort(&self) {
        self.stats.aborted.fetch_add(1, Ordering::Relaxed);
        self.metrics.transactions_aborted.inc();
    }
}
