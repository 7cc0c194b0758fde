//! Memory per lead (issue 17, item 4): folds generated traffic for `MEM_LEADS` leads (default
//! 1M) under the example config into one partition and prints the resident memory the state
//! added, per lead, beside the engine's own per-component estimate (`PartitionState::footprint`).
//!
//!   cargo bench --bench memory                      # 1M leads
//!   MEM_LEADS=100000 cargo bench --bench memory
//!
//! The bench uses the binary's allocator (mimalloc). The events are generated first and kept,
//! the fold runs on its own thread (its own heap, so it cannot reuse what generating freed),
//! and free memory is returned to the OS before and after it, so the RSS difference is the
//! state's: its allocations plus the allocator's free space around them (the estimate counts
//! mimalloc's size classes; the rest is fragmentation).

use std::sync::Arc;
use std::time::Instant;

use leadflow::config::Settings;
use leadflow::engine::PartitionState;
use leadflow::gen::{generate, GenSpec};

const CONFIG: &str = include_str!("../examples/config.toml");

/// The allocator the `leadflow` binary uses.
#[global_allocator]
static ALLOC: leadflow::allocator::MiMalloc = leadflow::allocator::MiMalloc;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .expect("VmRSS in /proc/self/status")
        * 1024
}

fn trimmed_rss() -> u64 {
    // SAFETY: mi_collect only returns free memory to the OS; no pointer is invalidated.
    unsafe { libmimalloc_sys::mi_collect(true) };
    rss_bytes()
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
        })
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter that does not name this bench skips it.
    if let Some(filter) = std::env::args().skip(1).find(|a| !a.starts_with("--")) {
        if !"memory".contains(&filter) {
            return;
        }
    }
    let leads = env_u64("MEM_LEADS", 1_000_000);
    // About 5.6 events per lead: every lead's first journey starts within the 30-day span.
    let events = env_u64("MEM_EVENTS", leads * 56 / 10);
    let rules = Settings::from_toml(CONFIG).expect("example config").rules;
    let t0 = Instant::now();
    let evs = generate(&GenSpec {
        seed: 1,
        leads,
        events,
        start_ms: 1_793_491_200_000,
        span_ms: 30 * 86_400_000,
    });
    println!(
        "memory: generated {} events in {:.1} s",
        evs.len(),
        t0.elapsed().as_secs_f64()
    );
    // The fold runs on a thread of its own: glibc gives it a fresh malloc arena, so the state
    // cannot reuse what generating the events freed, and the RSS difference is its own.
    let before = trimmed_rss();
    let (st, fold_s) = std::thread::scope(|s| {
        s.spawn(|| {
            let t1 = Instant::now();
            let mut st = PartitionState::new(Arc::clone(&rules));
            let mut out = Vec::with_capacity(64);
            for e in &evs {
                st.apply(e, &mut out);
                out.clear();
            }
            (st, t1.elapsed().as_secs_f64())
        })
        .join()
        .expect("fold thread")
    });
    let after = trimmed_rss();
    let f = st.footprint();
    let n = f.leads.max(1);
    let grown = after.saturating_sub(before);
    println!(
        "memory: {} leads ({} with out-of-line state) from {} events, folded in {:.2} s",
        f.leads,
        f.with_extra,
        evs.len(),
        fold_s
    );
    println!(
        "memory: RSS grew {:.1} MiB = {} bytes per lead",
        grown as f64 / (1 << 20) as f64,
        grown / n
    );
    println!(
        "memory: {:<22} {:>12} {:>10}",
        "component", "bytes", "per lead"
    );
    for (name, bytes) in &f.parts {
        println!(
            "memory: {name:<22} {bytes:>12} {:>10.1}",
            *bytes as f64 / n as f64
        );
    }
    println!(
        "memory: {:<22} {:>12} {:>10.1}",
        "estimate, total",
        f.total(),
        f.total() as f64 / n as f64
    );
    println!(
        "memory: {:<22} {:>12} {:>10.1}",
        "RSS beyond it",
        grown as i64 - f.total() as i64,
        (grown as f64 - f.total() as f64) / n as f64
    );
    // Keep the events alive until after the second reading.
    drop(evs);
}
