//! Readiness of the whole process: every assigned partition recovered (published by the state
//! stage) and no open problem (a stage failed, ingest held by the schema registry, snapshots
//! failing, ticks withheld by clock skew). Lock-cheap, never waits on Kafka or the fold loop:
//! `/health/ready` and `/metrics` read it from any thread.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use prometheus::IntGauge;

/// Shared readiness; clones share the same state.
#[derive(Clone)]
pub struct Health {
    partitions_ready: Arc<AtomicBool>,
    /// Open problems: a bounded name (`stage_failed`, `schema_registry`, `snapshots`,
    /// `clock_skew`) -> what is wrong, with its cause.
    problems: Arc<Mutex<BTreeMap<&'static str, String>>>,
    /// `leadflow_ready`, kept equal to [`Health::ready`].
    gauge: IntGauge,
}

impl Health {
    pub fn new(gauge: IntGauge) -> Health {
        Health {
            partitions_ready: Arc::default(),
            problems: Arc::default(),
            gauge,
        }
    }

    /// Ready: partitions recovered and no open problem.
    pub fn ready(&self) -> bool {
        self.partitions_ready.load(Ordering::Relaxed) && self.problems().is_empty()
    }

    /// The open problems, as `name: why` lines.
    pub fn problems(&self) -> Vec<String> {
        self.lock()
            .iter()
            .map(|(name, why)| format!("{name}: {why}"))
            .collect()
    }

    /// Whether problem `name` is open.
    pub fn has(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }

    pub(crate) fn set_partitions_ready(&self, ready: bool) {
        self.partitions_ready.store(ready, Ordering::Relaxed);
        self.refresh();
    }

    /// Opens (or updates) problem `name`: not ready until it is cleared.
    pub fn set_problem(&self, name: &'static str, why: impl Into<String>) {
        self.lock().insert(name, why.into());
        self.refresh();
    }

    /// Clears problem `name` (no effect when it is not open).
    pub fn clear_problem(&self, name: &'static str) {
        if self.lock().remove(name).is_some() {
            self.refresh();
        }
    }

    fn refresh(&self) {
        self.gauge.set(i64::from(self.ready()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, String>> {
        // A poisoned lock means a panic elsewhere; the map is still whole.
        self.problems.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_makes_a_recovered_instance_not_ready_until_cleared() {
        let gauge = IntGauge::new("g", "g").expect("gauge");
        let h = Health::new(gauge.clone());
        assert!(!h.ready(), "not ready before any assignment");
        h.set_partitions_ready(true);
        assert!(h.ready());
        assert_eq!(gauge.get(), 1);
        h.set_problem("snapshots", "writing x: No space left on device");
        assert!(!h.ready());
        assert_eq!(gauge.get(), 0);
        assert_eq!(
            h.problems(),
            vec!["snapshots: writing x: No space left on device"]
        );
        h.clear_problem("snapshots");
        assert!(h.ready());
        assert_eq!(gauge.get(), 1);
    }
}
