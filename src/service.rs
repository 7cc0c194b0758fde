//! `leadflow run`: the ingest and state stages in one process, as two consumer groups (and the
//! notify stage as a third when `[notify]` has routes), with a bounded drain on stop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::config::Settings;
use crate::kafka::ingest::IngestStats;
use crate::kafka::state::{StateStats, StateView};
use crate::kafka::{admin, ingest, state};
use crate::metrics::Metrics;

/// Handles to the counters, metrics and live state of a running service.
#[derive(Clone)]
pub struct ServiceStats {
    pub ingest: Arc<IngestStats>,
    pub state: Arc<StateStats>,
    pub metrics: Arc<Metrics>,
    pub view: StateView,
}

impl ServiceStats {
    pub fn new() -> anyhow::Result<ServiceStats> {
        let metrics = Arc::new(Metrics::new()?);
        let health = crate::health::Health::new(metrics.ready.clone());
        Ok(ServiceStats {
            ingest: Arc::default(),
            state: Arc::default(),
            metrics,
            view: StateView::new(health),
        })
    }
}

/// `leadflow notify`: the notify stage alone (it scales apart from the others), until `stop`.
pub fn run_notify(
    settings: &Settings,
    stop: Arc<AtomicBool>,
    stats: ServiceStats,
) -> anyhow::Result<()> {
    if settings.notify.routes.is_empty() {
        anyhow::bail!("[notify] has no routes: nothing to deliver (docs/notifications.md)");
    }
    // No partitions of the internal log to recover: ready once the stage has checked its
    // topics on the broker.
    let r = crate::notify::run(
        settings,
        &stop,
        Arc::clone(&stats.metrics),
        Some(&stats.view.health),
    );
    if let Err(e) = &r {
        stats
            .view
            .health
            .set_problem("stage_failed", format!("notify stage: {e:#}"));
    }
    r
}

/// Runs until `stop` is set (or a stage fails), then drains within `run.drain_timeout`.
pub fn run(settings: &Settings, stop: Arc<AtomicBool>, stats: ServiceStats) -> anyhow::Result<()> {
    let svc = &settings.service;
    let layout = admin::check(svc, &settings.rules.limits)?;
    tracing::info!(
        brokers = %svc.brokers,
        internal_partitions = layout.internal_partitions,
        transactions = layout.transactions,
        "connected; topics checked"
    );
    // Detached: it only reads, and ends with `stop` within one read.
    let _lag = crate::kafka::lag::spawn(svc, Arc::clone(&stats.metrics), Arc::clone(&stop))?;
    let (done_tx, done_rx) = mpsc::channel::<(&'static str, anyhow::Result<()>)>();
    let ingest_handle = {
        let (svc, stop, tx, st) = (
            svc.clone(),
            Arc::clone(&stop),
            done_tx.clone(),
            stats.clone(),
        );
        let layout = layout.clone();
        let limits = settings.rules.limits.clone();
        thread::Builder::new()
            .name("ingest".into())
            .spawn(move || {
                let r = ingest::run(
                    &svc,
                    &layout,
                    &limits,
                    &stop,
                    &st.ingest,
                    &st.metrics,
                    &st.view.health,
                );
                let _ = tx.send(("ingest", r));
            })
            .context("starting the ingest thread")?
    };
    let mut stages = 2;
    let notify_handle = if settings.notify.enabled {
        stages += 1;
        let (settings, stop, tx, metrics) = (
            settings.clone(),
            Arc::clone(&stop),
            done_tx.clone(),
            Arc::clone(&stats.metrics),
        );
        Some(
            thread::Builder::new()
                .name("notify".into())
                .spawn(move || {
                    let r = crate::notify::run(&settings, &stop, metrics, None);
                    let _ = tx.send(("notify", r));
                })
                .context("starting the notify thread")?,
        )
    } else {
        None
    };
    let state_handle = {
        let (settings, stop, tx, st) =
            (settings.clone(), Arc::clone(&stop), done_tx, stats.clone());
        let layout = layout.clone();
        thread::Builder::new()
            .name("state".into())
            .spawn(move || {
                let r = state::run(
                    &settings,
                    &layout,
                    &stop,
                    Arc::clone(&st.state),
                    Arc::clone(&st.metrics),
                    &st.view,
                );
                let _ = tx.send(("state", r));
            })
            .context("starting the state thread")?
    };

    // Wait for a stop request or for a stage to end on its own (an error).
    let mut finished = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match done_rx.recv_timeout(Duration::from_millis(100)) {
            Ok(r) => {
                if let (stage, Err(e)) = &r {
                    // Not ready from the failure on, while the other stage drains.
                    stats
                        .view
                        .health
                        .set_problem("stage_failed", format!("{stage} stage: {e:#}"));
                }
                finished.push(r);
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    stop.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_millis(svc.drain_timeout_ms as u64);
    while finished.len() < stages {
        let left = deadline.saturating_duration_since(Instant::now());
        match done_rx.recv_timeout(left) {
            Ok(r) => finished.push(r),
            Err(_) => anyhow::bail!(
                "drain did not finish within {} ms (run.drain_timeout)",
                svc.drain_timeout_ms
            ),
        }
    }
    let _ = ingest_handle.join();
    let _ = state_handle.join();
    if let Some(h) = notify_handle {
        let _ = h.join();
    }
    let mut first_error = None;
    for (stage, r) in finished {
        if let Err(e) = r {
            tracing::error!(stage, error = %format!("{e:#}"), "stage failed");
            first_error.get_or_insert(e.context(format!("{stage} stage")));
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
