//! HTTP endpoints: `/metrics` (Prometheus text format), `/health/live`, `/health/ready` (every
//! assigned partition recovered) and `GET /leads/{lead_key}` (score explanation).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::kafka::state::NoExplanation;
use crate::service::ServiceStats;

/// Status, body and content type of a GET on `url`.
pub fn respond(stats: &ServiceStats, url: &str) -> (u16, String, &'static str) {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    match path {
        // Neither /metrics nor /health/* takes the state stage's lock: they answer while it
        // folds, snapshots or waits on Kafka.
        "/metrics" => match stats.metrics.render() {
            Ok(text) => (200, text, "text/plain; version=0.0.4"),
            Err(e) => (500, format!("{e:#}\n"), "text/plain"),
        },
        "/health/live" => (200, "ok\n".into(), "text/plain"),
        "/health/ready" if stats.view.ready() => (200, "ready\n".into(), "text/plain"),
        "/health/ready" => {
            let stopped = stats.view.stopped();
            let problems = stats.view.health.problems();
            let mut body = String::from("not ready: ");
            body += match (problems.is_empty(), stopped.is_empty()) {
                (true, true) => "partitions recovering\n",
                (false, true) => "problems\n",
                (true, false) => "partitions stopped\n",
                (false, false) => "problems, partitions stopped\n",
            };
            for line in problems.iter().chain(&stopped) {
                body += line;
                body.push('\n');
            }
            (503, body, "text/plain")
        }
        _ => match path.strip_prefix("/leads/") {
            Some(raw) if !raw.is_empty() => {
                let key = percent_decode(raw);
                let as_of = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("as_of="))
                    .and_then(|v| v.parse().ok());
                let (code, body) = match stats.view.explain(&key, as_of) {
                    Ok(x) => (200, serde_json::to_string_pretty(&x)),
                    Err(e @ NoExplanation::NotHere(_)) => (404, serde_json::to_string_pretty(&e)),
                    Err(e @ NoExplanation::Busy { .. }) => (503, serde_json::to_string_pretty(&e)),
                };
                (code, body.unwrap_or_default() + "\n", "application/json")
            }
            _ => (404, "not found\n".into(), "text/plain"),
        },
    }
}

/// `%XX` escapes and `+` in a path segment (lead keys are often emails).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                // Byte-wise, so an escape next to a multi-byte character cannot split it.
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push(hi << 4 | lo);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// HTTP worker threads.
const HTTP_WORKERS: usize = 4;

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
    // Several workers, so a slow request (a large /metrics, a /leads waiting on the state)
    // never queues a liveness probe behind it.
    let server = Arc::new(server);
    for i in 0..HTTP_WORKERS {
        let (server, stats, stop) = (Arc::clone(&server), stats.clone(), Arc::clone(&stop));
        std::thread::Builder::new()
            .name(format!("http-{i}"))
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(Some(req)) = server.recv_timeout(Duration::from_millis(200)) else {
                        continue;
                    };
                    let (code, body, ctype) = respond(&stats, req.url());
                    let mut response =
                        tiny_http::Response::from_string(body).with_status_code(code);
                    if let Ok(h) = tiny_http::Header::from_bytes("Content-Type", ctype) {
                        response = response.with_header(h);
                    }
                    let _ = req.respond(response);
                }
            })
            .context("starting an HTTP thread")?;
    }
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::{percent_decode, respond};
    use crate::service::ServiceStats;

    #[test]
    fn not_ready_before_any_assignment_and_404s() {
        let stats = ServiceStats::new().expect("metrics");
        assert_eq!(respond(&stats, "/health/ready").0, 503);
        assert_eq!(respond(&stats, "/health/live").0, 200);
        let (code, body, _) = respond(&stats, "/leads/ana%40acme.io");
        assert_eq!(code, 404);
        assert!(body.contains("\"lead_key\": \"ana@acme.io\""), "{body}");
        assert_eq!(respond(&stats, "/nope").0, 404);
        let (code, metrics, _) = respond(&stats, "/metrics");
        assert_eq!(code, 200);
        assert!(metrics.contains("leadflow_ready 0"), "{metrics}");
    }

    #[test]
    fn decodes_escapes_and_keeps_bad_ones() {
        assert_eq!(percent_decode("ana%40acme.io"), "ana@acme.io");
        assert_eq!(percent_decode("a%2Bb"), "a+b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("x%zz"), "x%zz");
        assert_eq!(percent_decode("%aé"), "%aé");
        assert_eq!(percent_decode("%C3%A9"), "é");
    }
}
