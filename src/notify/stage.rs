//! The notify stage: a consumer group of its own on the output topics. Each record is routed
//! (`route.rs`) to zero or more targets and queued for their workers (`deliver.rs`); a
//! record's offset is committed only once every one of its messages is delivered or, failing
//! for good, written to the dead-letter topic: at least once, in order per lead within each
//! output topic. Receivers deduplicate with the idempotency key (the record's id).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::BaseRecord;
use rdkafka::{Offset, TopicPartitionList};

use super::deliver::{self, Done, Job, Outcome};
use super::route;
use crate::codec::avro;
use crate::config::notify::Start;
use crate::config::{OutputFormat, Settings};
use crate::kafka::producer;
use crate::metrics::Metrics;
use crate::model::records::Output;

/// (output topic index, partition)
type Tp = (u8, i32);

/// Offsets in flight per partition: offset → messages not yet done; and the next offset after
/// the last record consumed.
#[derive(Default)]
struct Progress {
    pending: BTreeMap<i64, u32>,
    next: Option<i64>,
    committed: Option<i64>,
}

impl Progress {
    /// The offset to commit: the oldest record still in flight, else the next one.
    fn commit_point(&self) -> Option<i64> {
        self.pending.keys().next().copied().or(self.next)
    }
}

/// Runs the notify stage until `stop`, then drains (within `run.drain_timeout`) and commits.
///
/// Errors: the consumer or the dead-letter producer cannot be created, or a dead letter
/// cannot be written (then nothing past it is committed, and a restart delivers it again).
pub fn run(
    settings: &Settings,
    stop: &AtomicBool,
    metrics: Arc<Metrics>,
    health: Option<&crate::health::Health>,
) -> anyhow::Result<()> {
    let svc = &settings.service;
    let cfg = &settings.notify;
    let topics = [svc.topics.transitions.clone(), svc.topics.sla.clone()];
    check_topics(settings, &topics)?;
    // Standalone (`leadflow notify`): ready once the broker answered and the topics exist.
    if let Some(h) = health {
        h.set_partitions_ready(true);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("notify-io")
        .enable_all()
        .build()
        .context("starting the notify runtime")?;
    let client = reqwest::Client::builder()
        .user_agent(concat!("leadflow/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("creating the HTTP client")?;
    let (done_tx, done_rx) = std::sync::mpsc::channel::<Done>();
    let give_up = Duration::from_millis(cfg.give_up_after_ms as u64);
    let mut queues = Vec::new();
    for target in &cfg.targets {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let depth = Arc::new(AtomicI64::new(0));
        for r in ["rejected", "gave_up"] {
            metrics.notify_failed.with_label_values(&[&target.name, r]);
        }
        metrics.notify_delivered.with_label_values(&[&target.name]);
        metrics.notify_retries.with_label_values(&[&target.name]);
        metrics
            .notify_queue_depth
            .with_label_values(&[&target.name])
            .set(0);
        rt.spawn(deliver::worker(
            target.clone(),
            client.clone(),
            rx,
            done_tx.clone(),
            give_up,
            Arc::clone(&metrics),
            Arc::clone(&depth),
        ));
        queues.push((tx, depth));
    }
    drop(done_tx);

    let (dlq, deliveries) = producer::idempotent(svc, 5, Some(metrics.producer_errors.clone()))?;
    let consumer: BaseConsumer = crate::kafka::consumer_config(svc)
        .set("group.id", &cfg.group)
        .set("enable.auto.commit", "false")
        .set(
            "auto.offset.reset",
            match cfg.start {
                Start::Latest => "latest",
                Start::Earliest => "earliest",
            },
        )
        .set("isolation.level", "read_committed")
        .create()
        .context("creating the notify consumer")?;
    consumer
        .subscribe(&[&topics[0], &topics[1]])
        .context("subscribing to the output topics")?;
    tracing::info!(group = %cfg.group, targets = cfg.targets.len(), routes = cfg.routes.len(), "notify stage started");

    let mut progress: HashMap<Tp, Progress> = HashMap::new();
    let mut last_error_log: Option<Instant> = None;
    let mut paused = false;
    let mut last_commit = Instant::now();
    let limit = cfg.queue_limit as i64;
    let result = (|| -> anyhow::Result<()> {
        while !stop.load(Ordering::Relaxed) {
            // Backpressure: a target far behind pauses consumption (its queue is bounded by
            // `notify.queue_limit`); the other targets' queues drain meanwhile.
            let deepest = queues
                .iter()
                .map(|(_, d)| d.load(Ordering::Relaxed))
                .max()
                .unwrap_or(0);
            if !paused && deepest >= limit {
                consumer.pause(&consumer.assignment()?).context("pausing")?;
                paused = true;
                tracing::warn!(
                    queued = deepest,
                    "a notify target is far behind; consumption paused"
                );
            } else if paused && deepest < limit / 2 {
                consumer
                    .resume(&consumer.assignment()?)
                    .context("resuming")?;
                paused = false;
            }
            let polled = consumer.poll(Duration::from_millis(20));
            if let Some(Err(e)) = &polled {
                // One line a minute while it lasts (a broker away answers every poll).
                if last_error_log.is_none_or(|t: Instant| t.elapsed() >= Duration::from_secs(60)) {
                    last_error_log = Some(Instant::now());
                    tracing::warn!(error = %e, "notify consumer error");
                }
            }
            if let Some(Ok(m)) = polled {
                let ti = if m.topic() == topics[0] { 0u8 } else { 1 };
                let tp = (ti, m.partition());
                let raw = m.payload().unwrap_or(&[]).to_vec();
                let p = progress.entry(tp).or_default();
                p.next = Some(m.offset() + 1);
                let rec = match settings.service.output_format {
                    OutputFormat::Avro => avro::decode_output(ti == 0, &raw),
                    OutputFormat::Json => {
                        serde_json::from_slice::<Output>(&raw).map_err(anyhow::Error::from)
                    }
                };
                match rec {
                    Ok(rec) => {
                        let targets = route::targets_for(cfg, &rec);
                        if !targets.is_empty() {
                            p.pending.insert(m.offset(), targets.len() as u32);
                            let raw = Arc::new(raw);
                            let written_ms = m
                                .timestamp()
                                .to_millis()
                                .unwrap_or_else(crate::metrics::now_ms);
                            for t in targets {
                                let job = Job {
                                    source: (ti, m.partition(), m.offset()),
                                    target: t,
                                    id: route::record_id(&rec).to_string(),
                                    body: Arc::new(route::body(cfg, t, &rec)),
                                    raw: Arc::clone(&raw),
                                    written_ms,
                                };
                                let (tx, depth) = &queues[t];
                                let n = depth.fetch_add(1, Ordering::Relaxed) + 1;
                                metrics
                                    .notify_queue_depth
                                    .with_label_values(&[&cfg.targets[t].name])
                                    .set(n);
                                tx.send(job)
                                    .map_err(|_| anyhow::anyhow!("a notify worker ended"))?;
                            }
                        }
                    }
                    Err(e) => {
                        // Not written by leadflow: nothing to route. Dead-lettered (target
                        // "-") before its offset moves, so it is kept and counted.
                        let reason = format!("undecodable output record: {e:#}");
                        tracing::warn!(topic = m.topic(), partition = m.partition(), offset = m.offset(), error = %reason, "undecodable output record dead-lettered by notify");
                        let source = (ti, m.partition(), m.offset());
                        dead_letter(
                            settings,
                            &dlq,
                            &deliveries,
                            source,
                            "-",
                            "undecodable",
                            &reason,
                            "",
                            &raw,
                        )?;
                        metrics
                            .notify_failed
                            .with_label_values(&["-", "undecodable"])
                            .inc();
                    }
                }
            }
            while let Ok(done) = done_rx.try_recv() {
                finish(settings, &metrics, &dlq, &deliveries, &mut progress, done)?;
            }
            if last_commit.elapsed() >= Duration::from_millis(500) {
                last_commit = Instant::now();
                commit(&consumer, &topics, &mut progress, CommitMode::Async);
            }
            dlq.poll(Duration::ZERO);
        }
        Ok(())
    })();
    // Drain: what is queued may still go out within the drain timeout; what does not is
    // delivered again by the next owner (its offsets are not committed).
    let deadline = Instant::now() + Duration::from_millis(svc.drain_timeout_ms as u64);
    while result.is_ok() && progress.values().any(|p| !p.pending.is_empty()) {
        let left = deadline.saturating_duration_since(Instant::now());
        match done_rx.recv_timeout(left.min(Duration::from_millis(100))) {
            Ok(done) => finish(settings, &metrics, &dlq, &deliveries, &mut progress, done)?,
            Err(_) if Instant::now() >= deadline => {
                tracing::warn!("notify: messages still queued at the drain timeout; the next start delivers them again");
                break;
            }
            Err(_) => {}
        }
    }
    commit(&consumer, &topics, &mut progress, CommitMode::Sync);
    consumer.unsubscribe();
    rt.shutdown_timeout(Duration::from_secs(1));
    tracing::info!("notify stage stopped");
    result
}

/// A message is done: counts it, writes a dead letter for a permanent failure (and waits for
/// its acknowledgement), and moves the record's commit point on.
fn finish(
    settings: &Settings,
    metrics: &Metrics,
    dlq: &producer::LfProducer,
    deliveries: &producer::Deliveries,
    progress: &mut HashMap<Tp, Progress>,
    done: Done,
) -> anyhow::Result<()> {
    let cfg = &settings.notify;
    let target = &cfg.targets[done.job.target].name;
    if let Outcome::Failed { code, reason } = &done.outcome {
        tracing::warn!(target = %target, record = %done.job.id, code, reason = %reason, "notification failed for good; written to the dead-letter topic");
        dead_letter(
            settings,
            dlq,
            deliveries,
            done.job.source,
            target,
            code,
            reason,
            &done.job.id,
            &done.job.raw,
        )?;
        metrics
            .notify_failed
            .with_label_values(&[target.as_str(), code])
            .inc();
    }
    let (ti, p, off) = done.job.source;
    if let Some(pr) = progress.get_mut(&(ti, p)) {
        if let Some(n) = pr.pending.get_mut(&off) {
            *n -= 1;
            if *n == 0 {
                pr.pending.remove(&off);
            }
        }
    }
    Ok(())
}

/// Writes a dead letter (the record as it was, with the reason, the target and where it came
/// from) and waits for its acknowledgement.
#[allow(clippy::too_many_arguments)]
fn dead_letter(
    settings: &Settings,
    dlq: &producer::LfProducer,
    deliveries: &producer::Deliveries,
    (ti, p, off): (u8, i32, i64),
    target: &str,
    code: &str,
    reason: &str,
    key: &str,
    raw: &[u8],
) -> anyhow::Result<()> {
    let topic = if ti == 0 {
        &settings.service.topics.transitions
    } else {
        &settings.service.topics.sla
    };
    let (p_s, off_s) = (p.to_string(), off.to_string());
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "lf-error",
            value: Some(reason.as_bytes()),
        })
        .insert(Header {
            key: "lf-error-code",
            value: Some(code.as_bytes()),
        })
        .insert(Header {
            key: "lf-target",
            value: Some(target.as_bytes()),
        })
        .insert(Header {
            key: "lf-source-topic",
            value: Some(topic.as_bytes()),
        })
        .insert(Header {
            key: "lf-source-partition",
            value: Some(p_s.as_bytes()),
        })
        .insert(Header {
            key: "lf-source-offset",
            value: Some(off_s.as_bytes()),
        });
    let dlq_topic = &settings.notify.dlq;
    producer::send(
        dlq,
        BaseRecord::to(dlq_topic)
            .key(key.as_bytes())
            .payload(raw)
            .headers(headers),
    )?;
    producer::flush(
        dlq,
        deliveries,
        Duration::from_millis(settings.service.drain_timeout_ms as u64),
    )
    .with_context(|| format!("writing a notification dead letter to {dlq_topic}"))
}

/// The output topics and the dead-letter topic exist (and the broker answers): a missing
/// dead-letter topic would otherwise stop the stage at its first permanent failure.
fn check_topics(settings: &Settings, topics: &[String; 2]) -> anyhow::Result<()> {
    let svc = &settings.service;
    let client: BaseConsumer = crate::kafka::client_config(svc)
        .create()
        .context("creating the notify metadata client")?;
    let timeout = Duration::from_millis(svc.connect_timeout_ms.max(1) as u64);
    let md = client.fetch_metadata(None, timeout).with_context(|| {
        format!(
            "the notify stage cannot reach the brokers at {}",
            svc.brokers
        )
    })?;
    for (what, t) in [
        ("output topic", &topics[0]),
        ("output topic", &topics[1]),
        (
            "notify.dlq (the notification dead-letter topic)",
            &settings.notify.dlq,
        ),
    ] {
        let found = md
            .topics()
            .iter()
            .any(|mt| mt.name() == t && mt.error().is_none() && !mt.partitions().is_empty());
        if !found {
            anyhow::bail!(
                "the {what} {t} does not exist: create it (docs/operations.md, topics to create)"
            );
        }
    }
    Ok(())
}

/// Commits each assigned partition's commit point when it moved.
fn commit(
    consumer: &BaseConsumer,
    topics: &[String; 2],
    progress: &mut HashMap<Tp, Progress>,
    mode: CommitMode,
) {
    let assigned: Vec<(String, i32)> = match consumer.assignment() {
        Ok(a) => a
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect(),
        Err(_) => return,
    };
    let mut tpl = TopicPartitionList::new();
    for ((ti, p), pr) in progress.iter_mut() {
        let topic = &topics[*ti as usize];
        if !assigned.iter().any(|(t, q)| t == topic && q == p) {
            continue;
        }
        if let Some(at) = pr.commit_point() {
            if pr.committed != Some(at)
                && tpl
                    .add_partition_offset(topic, *p, Offset::Offset(at))
                    .is_ok()
            {
                pr.committed = Some(at);
            }
        }
    }
    // A partition nothing was read from yet: its position as resolved by `notify.start`,
    // so that records written while no notifier runs are not skipped by a later `latest`.
    if let Ok(pos) = consumer.position() {
        for e in pos.elements() {
            let Some(ti) = topics.iter().position(|t| t == e.topic()) else {
                continue;
            };
            let pr = progress.entry((ti as u8, e.partition())).or_default();
            if let (rdkafka::Offset::Offset(at), None, None) = (e.offset(), pr.next, pr.committed) {
                if tpl
                    .add_partition_offset(e.topic(), e.partition(), Offset::Offset(at))
                    .is_ok()
                {
                    pr.committed = Some(at);
                }
            }
        }
    }
    if tpl.count() > 0 {
        if let Err(e) = consumer.commit(&tpl, mode) {
            tracing::debug!(error = %e, "notify commit");
        }
    }
}
