//! End-to-end benchmark through a Kafka-protocol broker: `leadflow run` as a child process,
//! fed by this process, measured from outside.
//!
//! 1. Backlog: one `lead_upsert` per lead, then the generator's journeys, all produced to the
//!    source topics (Avro) before `leadflow run` starts. Sustained throughput = events / time
//!    from the first to the last event counted by the service's `/metrics`, once the state
//!    stage has folded them all (`leadflow_leads_in_memory` and the consumer lag settle).
//! 2. Latency: events produced at a fixed rate; for every transition record the trigger's
//!    send instant is looked up, so latency = output consumed - input sent (same clock).
//! 3. Peak RSS (VmHWM) and RSS per lead in memory, from /proc.
//!
//! Run with `benches/e2e.sh` (builds the release binary first). Settings, by environment:
//! E2E_LEADS (1000000), E2E_EVENTS (3000000, backlog events including the upserts),
//! E2E_RATE (20000 events/s), E2E_LATENCY_SECS (30), E2E_PARTITIONS (4), E2E_BROKERS
//! (an external cluster instead of the in-process mock; topics are created), E2E_CONFIG (TOML
//! added to the service's config, e.g. `[run]` then `commit_interval = "20ms"`), LEADFLOW_BIN.

mod support;

use std::collections::HashMap;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::bail;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::Offset;

use leadflow::codec::avro;
use leadflow::config::{InputFormat, Settings, Topics};
use leadflow::gen::{generate, GenSpec};
use leadflow::model::event::{Event, EventFields};
use leadflow::model::records::Output;
use support::{env_u64, metric_sum, rss_of, scrape};

const T0: i64 = 1_793_491_200_000; // 2026-11-01T00:00:00Z
const DAY: i64 = 86_400_000;

/// The mock cluster answers an empty fetch only after the full wait (a real broker answers
/// when data arrives), so its consumers must not wait long.
const MOCK_PROPERTIES: &str = r#"
[kafka.properties]
"statistics.interval.ms" = "1000"
"fetch.wait.max.ms" = "10"
# librdkafka warns that producers ignore the consumer property above.
"log_level" = "3"
"#;

fn main() -> anyhow::Result<()> {
    let leads = env_u64("E2E_LEADS", 1_000_000);
    let backlog = env_u64("E2E_EVENTS", 3_000_000).max(leads);
    let rate = env_u64("E2E_RATE", 20_000).max(1);
    let latency_secs = env_u64("E2E_LATENCY_SECS", 30);
    let partitions = env_u64("E2E_PARTITIONS", 4) as i32;
    let bin = support::binary()?;
    // Generated history runs ahead of the wall clock: no future-time guard. E2E_CONFIG adds
    // TOML (e.g. "[run]\ncommit_interval = \"20ms\"") to the service's config.
    let extra = format!(
        "[limits]\nmax_future = \"0s\"\n{}\n",
        std::env::var("E2E_CONFIG").unwrap_or_default()
    );
    let run = support::setup("e2e", partitions, &extra, MOCK_PROPERTIES)?;
    let (bootstrap, topics, http, settings) =
        (&run.bootstrap, &run.topics, run.http, &run.settings);

    // 1. The backlog, produced while the service runs (see `fold_backlog`).
    eprintln!("e2e: generating {backlog} events over {leads} leads");
    let events = backlog_events(leads, backlog);

    let mut child = support::spawn(&bin, &run.config_path)?;
    let result = fold_backlog(&mut child, http, settings, &events).and_then(|fold| {
        drop(events);
        measure(&mut child, fold, bootstrap, topics, rate, latency_secs)
    });
    // What the checkpoints cost during the whole run, from the service's own histograms.
    let metrics = support::scrape(http).unwrap_or_default();
    support::stop(&mut child);
    let m = result?;

    println!();
    println!(
        "leadflow end-to-end ({} partitions, {}, this machine: {} CPUs)",
        partitions,
        if run.mock.is_some() {
            "librdkafka mock cluster in process"
        } else {
            "external brokers, transactional outputs when they support them"
        },
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!("| measure | value |");
    println!("|---|---|");
    println!("| backlog events | {} |", m.n_events);
    println!(
        "| sustained throughput (backlog) | {:.0} events/s |",
        m.throughput
    );
    println!("| time to fold the backlog | {:.1} s |", m.fold_secs);
    println!(
        "| latency run | {} events at {} events/s ({} transitions timed) |",
        m.sent, rate, m.samples
    );
    println!("| produce -> transition latency p50 | {:.1} ms |", m.p50_ms);
    println!("| produce -> transition latency p99 | {:.1} ms |", m.p99_ms);
    println!("| produce -> transition latency max | {:.1} ms |", m.max_ms);
    println!(
        "| of which send -> output written (ingest, fold) p50 / p99 / max | {:.0} / {:.0} / {:.0} ms |",
        m.to_write[0], m.to_write[1], m.to_write[2]
    );
    println!(
        "| of which written -> seen (commit, fetch) p50 / p99 / max | {:.0} / {:.0} / {:.0} ms |",
        m.to_seen[0], m.to_seen[1], m.to_seen[2]
    );
    let hist_row = |label: &str, name: &str| {
        println!(
            "| {label} (whole run) | {:.0}; p50 {}, p99 {}, max {} |",
            support::metric_sum(&metrics, &format!("{name}_count")),
            bucket_quantile(&metrics, name, 0.5),
            bucket_quantile(&metrics, name, 0.99),
            bucket_quantile(&metrics, name, 1.0)
        );
    };
    hist_row("transaction commits", "leadflow_transaction_commit_seconds");
    hist_row(
        "commits the state thread waited for",
        "leadflow_transaction_commit_wait_seconds",
    );
    hist_row(
        "hand-overs to the committer (the state thread's wait for acks)",
        "leadflow_transaction_handover_seconds",
    );
    println!("| leads in memory | {} |", m.leads);
    println!(
        "| snapshots written (whole run) | {:.0}, p50 {} from start to durable |",
        support::metric_sum(&metrics, "leadflow_snapshot_duration_seconds_count"),
        bucket_quantile(&metrics, "leadflow_snapshot_duration_seconds", 0.5)
    );
    println!(
        "| checkpoint slices on the state thread (whole run) | {:.0}; p99 {}, max {} |",
        support::metric_sum(&metrics, "leadflow_checkpoint_pause_seconds_count"),
        bucket_quantile(&metrics, "leadflow_checkpoint_pause_seconds", 0.99),
        bucket_quantile(&metrics, "leadflow_checkpoint_pause_seconds", 1.0)
    );
    println!(
        "| peak RSS (VmHWM) | {:.0} MiB |",
        m.peak_rss as f64 / 1048576.0
    );
    println!(
        "| RSS after the backlog (before the latency run) | {:.0} MiB |",
        m.rss as f64 / 1048576.0
    );
    println!(
        "| RSS per lead | {:.0} bytes |",
        m.rss as f64 / m.leads.max(1) as f64
    );
    Ok(())
}

/// The upper bound of the histogram bucket holding quantile `q` (1.0: the largest observation's
/// bucket), as "≤ N ms"; "n/a" when the service does not expose the histogram.
fn bucket_quantile(text: &str, name: &str, q: f64) -> String {
    let prefix = format!("{name}_bucket{{le=\"");
    let buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect();
    let Some(&(_, total)) = buckets.last() else {
        return "n/a".into();
    };
    if total == 0.0 {
        return "n/a (none)".into();
    }
    let want = (q * total).ceil().max(1.0);
    match buckets.iter().find(|(_, c)| *c >= want) {
        Some((le, _)) if le.is_finite() => format!("≤ {:.1} ms", le * 1000.0),
        _ => "above the largest bucket".into(),
    }
}

struct Measured {
    n_events: u64,
    throughput: f64,
    fold_secs: f64,
    sent: u64,
    samples: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// The same latency split at the transition's write (its Kafka CreateTime, set by
    /// leadflow's producer): [p50, p99, max] of send -> write (ingest and fold) and of
    /// write -> seen (delivery, transaction commit, the reader's fetch). Wall clocks, ms.
    to_write: [f64; 3],
    to_seen: [f64; 3],
    leads: u64,
    peak_rss: u64,
    rss: u64,
}

/// What the backlog phase measured.
struct Fold {
    n_events: u64,
    secs: f64,
    leads: u64,
    rss: u64,
}

/// Produces the backlog while the service folds it, keeping at most `AHEAD` events between
/// what was produced and what ingest has counted: the mock cluster keeps only the last 5 MB
/// of each partition (older data is deleted, as by retention), so a backlog produced ahead in
/// full would be lost. The producer is never the bottleneck (it runs several times faster
/// than ingest), so the service always has work queued and the rate is its own.
fn fold_backlog(
    child: &mut Child,
    http: u16,
    settings: &Settings,
    events: &[Event],
) -> anyhow::Result<Fold> {
    const AHEAD: u64 = 200_000;
    // Idempotent: a retried batch must not land behind a later one (journeys out of order).
    let producer: BaseProducer = leadflow::kafka::client_config(&settings.service)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let n_events = events.len() as u64;
    let progress = |child: &mut Child| -> anyhow::Result<Option<(f64, f64, f64)>> {
        if let Some(status) = child.try_wait()? {
            bail!("leadflow run exited early: {status}");
        }
        Ok(scrape(http).ok().map(|text| {
            (
                metric_sum(&text, "leadflow_events_total"),
                metric_sum(&text, "leadflow_leads_in_memory"),
                metric_sum(&text, "leadflow_consumer_lag_records"),
            )
        }))
    };
    // Wait until the service serves /metrics (it has joined its groups by then or soon).
    let deadline = Instant::now() + Duration::from_secs(60);
    while progress(child)?.is_none() {
        if Instant::now() > deadline {
            bail!("leadflow run did not serve /metrics within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The clock starts at the first event ingest counts (not at group-join time).
    let start = Instant::now();
    let mut first: Option<Instant> = None;
    let mut last_report = Instant::now();
    let mut produced = 0u64;
    for chunk in events.chunks(20_000) {
        loop {
            let (ingested, leads, lag) = progress(child)?.unwrap_or_default();
            if first.is_none() && ingested > 0.0 {
                first = Some(Instant::now());
            }
            if last_report.elapsed() >= Duration::from_secs(2) {
                last_report = Instant::now();
                eprintln!(
                    "e2e: {:>5.1} s  produced {produced}  ingested {ingested:.0}  leads {leads:.0}  lag {lag:.0}",
                    start.elapsed().as_secs_f64()
                );
            }
            if produced < ingested as u64 + AHEAD {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for ev in chunk {
            let value = leadflow::kafka::encode_source(ev, InputFormat::Avro)?;
            support::send_event(&producer, &settings.service.topics, ev, &value);
        }
        producer.poll(Duration::ZERO);
        produced += chunk.len() as u64;
    }
    producer.flush(Duration::from_secs(60))?;
    // Done when ingest has counted every event and the state stage has no lag left and its
    // lead count has stopped moving.
    let mut last_leads = -1.0;
    loop {
        if start.elapsed() > Duration::from_secs(3600) {
            bail!("the backlog was not folded within an hour");
        }
        let (ingested, leads, lag) = progress(child)?.unwrap_or_default();
        if first.is_none() && ingested > 0.0 {
            first = Some(Instant::now());
        }
        if ingested as u64 >= n_events && lag == 0.0 && leads == last_leads && leads > 0.0 {
            break;
        }
        last_leads = leads;
        std::thread::sleep(Duration::from_millis(100));
    }
    // The last poll that saw movement was up to 100 ms before this.
    let secs = first.unwrap_or(start).elapsed().as_secs_f64();
    let (rss, _) = rss_of(child.id())?;
    Ok(Fold {
        n_events,
        secs,
        leads: last_leads as u64,
        rss,
    })
}

fn measure(
    child: &mut Child,
    fold: Fold,
    bootstrap: &str,
    topics: &Topics,
    rate: u64,
    latency_secs: u64,
) -> anyhow::Result<Measured> {
    // Latency at a fixed rate.
    let consumer = support::output_consumer(bootstrap, &topics.transitions, Offset::End)?;
    // Position the consumer at the end before producing.
    for _ in 0..20 {
        consumer.poll(Duration::from_millis(50));
    }
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()?;
    let journeys = generate(&GenSpec {
        seed: 7,
        leads: 50_000,
        events: rate * latency_secs,
        start_ms: T0 + 40 * DAY,
        span_ms: 30 * DAY,
    });
    let mut sent_at: HashMap<String, (Instant, i64)> = HashMap::with_capacity(journeys.len());
    let mut latencies: Vec<f64> = Vec::new();
    let mut to_write: Vec<f64> = Vec::new();
    let mut to_seen: Vec<f64> = Vec::new();
    let begin = Instant::now();
    let mut collect = |consumer: &BaseConsumer,
                       sent_at: &HashMap<String, (Instant, i64)>,
                       wait: Duration| {
        let mut wait = wait;
        while let Some(Ok(m)) = consumer.poll(wait) {
            wait = Duration::ZERO;
            let now = Instant::now();
            if let Ok(Output::Transition(t)) = avro::decode_output(true, m.payload().unwrap_or(&[]))
            {
                if let Some((s, sent_ms)) = sent_at.get(t.trigger_event_id.as_str()) {
                    let ms = now.duration_since(*s).as_secs_f64() * 1000.0;
                    let written = m.timestamp().to_millis().map(|w| (w - sent_ms) as f64);
                    if ms > 200.0 && std::env::var_os("E2E_DEBUG").is_some() {
                        eprintln!(
                            "slow {ms:.0} ms at {:.2} (written after {written:?} ms)",
                            s.duration_since(begin).as_secs_f64()
                        );
                    }
                    latencies.push(ms);
                    if let Some(w) = written {
                        to_write.push(w);
                        to_seen.push(ms - w);
                    }
                }
            }
        }
    };
    let mut sent = 0u64;
    // Paced without spinning (a busy loop would take a core from the pipeline): send what is
    // due, then wait on the output consumer until the next send is due, at least 1 ms. Shorter
    // waits were polls of 0 ms (librdkafka counts in whole ms): at 20k events/s (one every
    // 50 us) this loop spun and took 28% of this 2-core machine from the broker and leadflow
    // (`perf record -a`), which showed as latency.
    for ev in &journeys {
        let due = begin + Duration::from_secs_f64(sent as f64 / rate as f64);
        let now = Instant::now();
        if due > now {
            producer.poll(Duration::ZERO);
            collect(
                &consumer,
                &sent_at,
                (due - now).max(Duration::from_millis(1)),
            );
        }
        let value = leadflow::kafka::encode_source(ev, InputFormat::Avro)?;
        sent_at.insert(ev.event_id.to_string(), (Instant::now(), epoch_ms()));
        support::send_event(&producer, topics, ev, &value);
        sent += 1;
    }
    producer.flush(Duration::from_secs(30))?;
    let tail = Instant::now();
    while tail.elapsed() < Duration::from_secs(3) {
        collect(&consumer, &sent_at, Duration::from_millis(50));
    }
    if latencies.is_empty() {
        bail!("no transition was timed");
    }
    let [p50, p99, max] = [0.5, 0.99, 1.0].map(|p| quantile(&mut latencies, p));
    let split = |v: &mut Vec<f64>| [0.5, 0.99, 1.0].map(|p| quantile(v, p));
    let (to_write, to_seen) = (split(&mut to_write), split(&mut to_seen));
    if let Some(status) = child.try_wait()? {
        bail!("leadflow run exited during the latency run: {status}");
    }
    let (_, peak_rss) = rss_of(child.id())?;
    Ok(Measured {
        n_events: fold.n_events,
        throughput: fold.n_events as f64 / fold.secs.max(1e-9),
        fold_secs: fold.secs,
        sent,
        samples: latencies.len(),
        p50_ms: p50,
        p99_ms: p99,
        max_ms: max,
        to_write,
        to_seen,
        leads: fold.leads,
        peak_rss,
        rss: fold.rss,
    })
}

/// Nearest-rank quantile `p` of `v` (sorted here); NaN when empty.
fn quantile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn epoch_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One profile per lead (so every lead is in memory), then the generator's journeys.
fn backlog_events(leads: u64, total: u64) -> Vec<Event> {
    let mut out = Vec::with_capacity(total as usize);
    let countries = ["US", "UK", "DE", "FR", "UA", "BR"];
    for i in 0..leads {
        let employees = (50 + (i * 37) % 5000).to_string();
        let fields = EventFields::from_parts(
            &format!("p{i}"),
            &format!("lead{i}@company{}.example", i % 997),
            T0 + (i as i64 % DAY),
            "crm",
            "lead_upsert",
            &[
                (
                    "title",
                    if i % 3 == 0 {
                        "VP Marketing"
                    } else {
                        "Engineer"
                    },
                ),
                ("employees", &employees),
                ("country", countries[(i % 6) as usize]),
            ],
        );
        if let Ok(ev) = fields.validate() {
            out.push(ev);
        }
    }
    out.extend(generate(&GenSpec {
        seed: 1,
        leads,
        events: total.saturating_sub(leads),
        start_ms: T0 + DAY,
        span_ms: 30 * DAY,
    }));
    out
}
