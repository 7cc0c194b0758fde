//! HTTP delivery, one worker per target: in order (so in order per lead), at the target's
//! rate, retried with exponential backoff and jitter on timeouts, connection errors, 5xx and
//! 429 (honouring `Retry-After`), until `notify.give_up_after`. A 4xx other than 429 is
//! permanent. Runs on the notify stage's tokio runtime; URLs and keys never reach a log line
//! (errors are stripped of their URL).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::notify::{Target, TargetKind};
use crate::metrics::Metrics;

/// One message for one target, and where its record came from.
#[derive(Clone, Debug)]
pub struct Job {
    /// (output topic: 0 transitions, 1 SLA; partition; offset).
    pub source: (u8, i32, i64),
    pub target: usize,
    /// The record's id: the idempotency key.
    pub id: String,
    pub body: Arc<Vec<u8>>,
    /// The record's own bytes, for the dead-letter topic.
    pub raw: Arc<Vec<u8>>,
    /// When the record was written (its Kafka timestamp, ms): delivery latency starts here.
    pub written_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Permanent: goes to the dead-letter topic. `code` is bounded (a metric label):
    /// `rejected` (a 4xx other than 429) or `gave_up` (retries for `notify.give_up_after`).
    Failed {
        code: &'static str,
        reason: String,
    },
}

#[derive(Debug)]
pub struct Done {
    pub job: Job,
    pub outcome: Outcome,
}

/// The first retry waits about this long; each next one twice as long, up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Delivers the jobs of one target, one after the other, until the queue closes.
pub async fn worker(
    target: Target,
    client: reqwest::Client,
    mut jobs: tokio::sync::mpsc::UnboundedReceiver<Job>,
    done: std::sync::mpsc::Sender<Done>,
    give_up: Duration,
    metrics: Arc<Metrics>,
    depth: Arc<AtomicI64>,
) {
    let gap = if target.rate > 0.0 {
        Duration::from_secs_f64(1.0 / target.rate)
    } else {
        Duration::ZERO
    };
    let mut next_slot = tokio::time::Instant::now();
    let mut rng = crate::gen::Rng::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    );
    while let Some(job) = jobs.recv().await {
        let outcome = deliver(
            &target,
            &client,
            &job,
            give_up,
            gap,
            &mut next_slot,
            &mut rng,
            &metrics,
        )
        .await;
        depth.fetch_sub(1, Ordering::Relaxed);
        metrics
            .notify_queue_depth
            .with_label_values(&[&target.name])
            .set(depth.load(Ordering::Relaxed));
        if done.send(Done { job, outcome }).is_err() {
            return; // the stage ended
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn deliver(
    target: &Target,
    client: &reqwest::Client,
    job: &Job,
    give_up: Duration,
    gap: Duration,
    next_slot: &mut tokio::time::Instant,
    rng: &mut crate::gen::Rng,
    metrics: &Metrics,
) -> Outcome {
    let started = Instant::now();
    let mut attempt = 0u32;
    loop {
        // The target's rate: one message per `gap`, retries included.
        let now = tokio::time::Instant::now();
        if *next_slot > now {
            tokio::time::sleep_until(*next_slot).await;
        }
        *next_slot = tokio::time::Instant::now().max(*next_slot) + gap;
        let (wait, last) = match post(target, client, job).await {
            Ok((status, _, _)) if (200..300).contains(&status) => {
                let latency = crate::metrics::now_ms() - job.written_ms;
                metrics
                    .notify_delivered
                    .with_label_values(&[&target.name])
                    .inc();
                metrics
                    .notify_latency_seconds
                    .with_label_values(&[&target.name])
                    .observe(latency.max(0) as f64 / 1000.0);
                return Outcome::Delivered;
            }
            // Never sooner than the backoff: a `Retry-After: 0` would otherwise spin.
            Ok((429, retry_after, _)) => (
                retry_after
                    .unwrap_or(Duration::ZERO)
                    .max(backoff(attempt, rng)),
                "HTTP 429 Too Many Requests".to_string(),
            ),
            Ok((status, _, _)) if status >= 500 => {
                (backoff(attempt, rng), format!("HTTP {status}"))
            }
            Ok((status, _, body)) => {
                return Outcome::Failed {
                    code: "rejected",
                    reason: format!("HTTP {status} from {}: {body}", target.name),
                }
            }
            Err(e) => (backoff(attempt, rng), e),
        };
        // Retried until `give_up` has passed: a wait that would end later is cut short so
        // the last attempt comes at the limit.
        let left = give_up.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Outcome::Failed {
                code: "gave_up",
                reason: format!(
                    "not delivered to {} within notify.give_up_after ({} s, {} attempts); last: {last}",
                    target.name,
                    give_up.as_secs(),
                    attempt + 1
                ),
            };
        }
        metrics
            .notify_retries
            .with_label_values(&[&target.name])
            .inc();
        if attempt == 0 {
            tracing::warn!(target = %target.name, record = %job.id, error = %last, "delivery failed; retrying with backoff");
        }
        attempt += 1;
        tokio::time::sleep(wait.min(left)).await;
    }
}

/// Exponential backoff with jitter: a random wait in [d/2, d], d = 0.5 s × 2^attempt ≤ 60 s.
fn backoff(attempt: u32, rng: &mut crate::gen::Rng) -> Duration {
    let d = FIRST_BACKOFF
        .saturating_mul(1u32 << attempt.min(16))
        .min(MAX_BACKOFF);
    let ms = d.as_millis() as u64;
    Duration::from_millis(ms / 2 + rng.below(ms / 2 + 1))
}

/// One POST: (status, Retry-After, the start of the body), or a transport error without the
/// URL (it is a secret).
async fn post(
    target: &Target,
    client: &reqwest::Client,
    job: &Job,
) -> Result<(u16, Option<Duration>, String), String> {
    let mut req = client
        .post(target.url.expose())
        .timeout(Duration::from_millis(target.timeout_ms as u64))
        .header("content-type", "application/json")
        .header("idempotency-key", header_value(&job.id))
        .body(job.body.as_ref().clone());
    if let (TargetKind::Webhook, Some(secret)) = (target.kind, &target.secret) {
        let now = crate::metrics::now_ms() / 1000;
        req = req.header(
            "x-leadflow-signature",
            super::sign::signature(secret.expose().as_bytes(), now, &job.body),
        );
    }
    let resp = req.send().await.map_err(describe)?;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let body = if (200..300).contains(&status) {
        String::new()
    } else {
        let text = resp.text().await.unwrap_or_default();
        text.chars().take(200).collect()
    };
    Ok((status, retry_after, body))
}

/// A transport error without the URL (a secret), with its causes: "connection refused",
/// "timed out", a DNS or TLS failure.
fn describe(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out: "
    } else if e.is_connect() {
        "cannot connect: "
    } else {
        ""
    };
    let e = e.without_url();
    let mut text = format!("{kind}{e}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// An HTTP header value of `id`: bytes outside visible ASCII (and `%`) percent-encoded as
/// UTF-8, so a lead key such as `jösé@example.de` reaches every receiver the same way.
pub fn header_value(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if (0x21..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `Retry-After`: seconds, or an HTTP date (RFC 9110 §10.2.3).
fn parse_retry_after(v: &str) -> Option<Duration> {
    if let Ok(s) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v.trim()).ok()?;
    let ms = at.timestamp_millis() - crate::metrics::now_ms();
    Some(Duration::from_millis(ms.max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let mut rng = crate::gen::Rng::new(3);
        for attempt in 0..20 {
            let d = FIRST_BACKOFF
                .saturating_mul(1u32 << attempt.min(16))
                .min(MAX_BACKOFF);
            let b = backoff(attempt, &mut rng);
            assert!(
                b >= d / 2 && b <= d,
                "attempt {attempt}: {b:?} not in [{:?}, {d:?}]",
                d / 2
            );
        }
    }

    #[test]
    fn idempotency_keys_are_ascii_on_the_wire() {
        assert_eq!(header_value("ann@acme.io/t/1"), "ann@acme.io/t/1");
        assert_eq!(header_value("jösé@x.de/t/1"), "j%C3%B6s%C3%A9@x.de/t/1");
        assert_eq!(header_value("a b%c"), "a%20b%25c");
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO),
            "a date in the past: now"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
