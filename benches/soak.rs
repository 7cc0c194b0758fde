//! Soak run (not in CI): `leadflow run` against a broker for a set time, fed by the generator
//! at a set rate, with the `[limits]` bounds on; one line per minute with RSS, lag, snapshot
//! age, leads in memory and evictions, and a verdict at the end.
//!
//! Event time runs faster than wall time (SOAK_DAYS of journeys over the run), so leads
//! arrive, go quiet, finish and get evicted within the run, as over months in production.
//! About 1 in 1000 messages is garbage, to keep the dead-letter path busy.
//!
//! Run with `benches/soak.sh`. Settings: SOAK_MINUTES (30), SOAK_RATE (2000 events/s),
//! SOAK_LEADS (200000), SOAK_DAYS (120), E2E_PARTITIONS (4), E2E_BROKERS, LEADFLOW_BIN.

mod support;

use std::time::{Duration, Instant};

use anyhow::bail;
use rdkafka::producer::{BaseProducer, Producer};

use leadflow::config::InputFormat;
use leadflow::gen::{generate, GenSpec};
use support::{env_u64, metric_sum, rss_of, scrape};

const T0: i64 = 1_793_491_200_000; // 2026-11-01T00:00:00Z
const DAY: i64 = 86_400_000;

const LIMITS: &str = r#"
[limits]
max_leads_per_partition = 20000
evict_inactive_after = "30d"
evict_terminal_after = "7d"
# Generated history runs ahead of the wall clock: no future-time guard.
max_future = "0s"

# The in-process mock cluster scans its log linearly on every fetch, so frequent fetches of
# small batches cost it more CPU than leadflow uses; a soak is about memory and lag over
# time, not latency, so consumers wait longer and the generator batches more.
[kafka.properties]
"statistics.interval.ms" = "1000"
"fetch.wait.max.ms" = "100"
"log_level" = "3"
"#;

fn main() -> anyhow::Result<()> {
    let minutes = env_u64("SOAK_MINUTES", 30);
    let rate = env_u64("SOAK_RATE", 2000).max(1);
    let leads = env_u64("SOAK_LEADS", 200_000);
    let days = env_u64("SOAK_DAYS", 120) as i64;
    let partitions = env_u64("E2E_PARTITIONS", 4) as i32;
    let bin = support::binary()?;
    let run = support::setup("soak", partitions, LIMITS, "")?;
    let (topics, http, settings) = (&run.topics, run.http, &run.settings);

    let total = rate * minutes * 60;
    eprintln!("soak: generating {total} events over {leads} leads and {days} days of event time");
    let events = generate(&GenSpec {
        seed: 11,
        leads,
        events: total,
        start_ms: T0,
        span_ms: days * DAY,
    });
    let mut child = support::spawn(&bin, &run.config_path)?;
    let producer: BaseProducer = leadflow::kafka::client_config(&settings.service)
        .set("linger.ms", "100")
        .set("compression.type", "lz4")
        .create()?;

    println!("| minute | events sent | ingested | dead-lettered | leads in memory | evicted | RSS MiB | lag | snapshot age s |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let begin = Instant::now();
    let mut next_report = begin + Duration::from_secs(60);
    let mut rss_by_minute = Vec::new();
    let mut sent = 0u64;
    let result = (|| -> anyhow::Result<()> {
        for (i, ev) in events.iter().enumerate() {
            let due = begin + Duration::from_secs_f64(sent as f64 / rate as f64);
            let now = Instant::now();
            if due > now {
                producer.poll(due - now);
            }
            if Instant::now() >= next_report {
                next_report += Duration::from_secs(60);
                if let Some(status) = child.try_wait()? {
                    bail!("leadflow run exited: {status}");
                }
                let text = scrape(http).unwrap_or_default();
                let (rss, _) = rss_of(child.id())?;
                rss_by_minute.push(rss);
                println!(
                    "| {} | {sent} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
                    rss_by_minute.len(),
                    metric_sum(&text, "leadflow_events_total"),
                    metric_sum(&text, "leadflow_invalid_events_total"),
                    metric_sum(&text, "leadflow_leads_in_memory"),
                    metric_sum(&text, "leadflow_evicted_leads_total"),
                    rss as f64 / 1048576.0,
                    metric_sum(&text, "leadflow_consumer_lag_records"),
                    metric_sum(&text, "leadflow_snapshot_age_seconds"),
                );
            }
            let garbage = i % 1000 == 999;
            let value = if garbage {
                b"\x00\x00\x00\x00\x07not an event".to_vec()
            } else {
                leadflow::kafka::encode_source(ev, InputFormat::Avro)?
            };
            support::send_event(&producer, topics, ev, &value);
            sent += 1;
        }
        producer.flush(Duration::from_secs(30))?;
        Ok(())
    })();
    support::stop(&mut child);
    result?;
    // Memory must level off: compare the last third of the run with the middle third.
    let n = rss_by_minute.len();
    if n >= 3 {
        let max = |s: &[u64]| s.iter().copied().max().unwrap_or(0) as f64 / 1048576.0;
        let (mid, last) = (
            &rss_by_minute[n / 3..2 * n / 3],
            &rss_by_minute[2 * n / 3..],
        );
        println!();
        println!(
            "RSS peak: middle third {:.0} MiB, last third {:.0} MiB ({:+.1}%)",
            max(mid),
            max(last),
            (max(last) / max(mid).max(1.0) - 1.0) * 100.0
        );
    }
    Ok(())
}
