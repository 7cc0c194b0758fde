//! HTTP endpoints: `/metrics` (Prometheus text format) and `/health/live`. The metrics are the
//! stages' counters, read at scrape time.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus::{Encoder, IntCounter, Registry, TextEncoder};

use crate::service::ServiceStats;

/// Renders the counters in the Prometheus text format.
pub fn render(stats: &ServiceStats) -> anyhow::Result<String> {
    let registry = Registry::new();
    let (i, s) = (&stats.ingest, &stats.state);
    let counters: [(&str, &str, &AtomicU64); 9] = [
        (
            "leadflow_ingest_records_total",
            "Source records consumed by the ingest stage.",
            &i.consumed,
        ),
        (
            "leadflow_ingest_forwarded_total",
            "Valid events forwarded to the internal topic.",
            &i.forwarded,
        ),
        (
            "leadflow_ingest_dead_lettered_total",
            "Invalid inputs written to the dead-letter topic.",
            &i.invalid,
        ),
        (
            "leadflow_state_records_total",
            "Internal records (events and ticks) folded by the state stage.",
            &s.records_in,
        ),
        (
            "leadflow_state_outputs_total",
            "Transition and SLA records produced.",
            &s.outputs,
        ),
        (
            "leadflow_state_outputs_suppressed_total",
            "Outputs skipped during recovery because they were already in the output topic.",
            &s.suppressed,
        ),
        (
            "leadflow_state_ticks_appended_total",
            "Clock ticks appended to caught-up partitions.",
            &s.ticks_appended,
        ),
        (
            "leadflow_snapshots_total",
            "Snapshots written.",
            &s.snapshots,
        ),
        (
            "leadflow_internal_undecodable_total",
            "Internal records that could not be decoded and were skipped.",
            &s.undecodable,
        ),
    ];
    for (name, help, value) in counters {
        let c = IntCounter::new(name, help).context("defining a metric")?;
        c.inc_by(value.load(Ordering::Relaxed));
        registry
            .register(Box::new(c))
            .context("registering a metric")?;
    }
    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut buf)
        .context("encoding metrics")?;
    String::from_utf8(buf).context("metrics are UTF-8")
}

/// Serves the endpoints on `addr` from a background thread until `stop`; returns the bound
/// address (useful with port 0).
pub fn serve(
    addr: SocketAddr,
    stats: ServiceStats,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<SocketAddr> {
    let server = tiny_http::Server::http(addr)
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (http.listen): {e}"))?;
    let bound = server
        .server_addr()
        .to_ip()
        .context("the HTTP server has no IP address")?;
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok(Some(req)) = server.recv_timeout(Duration::from_millis(200)) else {
                    continue;
                };
                let (code, body, ctype) = match req.url() {
                    "/metrics" => match render(&stats) {
                        Ok(text) => (200, text, "text/plain; version=0.0.4"),
                        Err(e) => (500, format!("{e:#}\n"), "text/plain"),
                    },
                    "/health/live" => (200, "ok\n".to_string(), "text/plain"),
                    _ => (404, "not found\n".to_string(), "text/plain"),
                };
                let header =
                    tiny_http::Header::from_bytes("Content-Type", ctype).unwrap_or_else(|_| {
                        tiny_http::Header::from_bytes("X", "x").expect("static header")
                    });
                let _ = req.respond(
                    tiny_http::Response::from_string(body)
                        .with_status_code(code)
                        .with_header(header),
                );
            }
        })
        .context("starting the HTTP thread")?;
    Ok(bound)
}
