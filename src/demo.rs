//! `leadflow demo`: an in-process mock broker, generated traffic replayed in accelerated
//! event time, the full pipeline with the example config, and a readable feed of the
//! transitions and SLA alerts read back from the output topics.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::BaseRecord;

use crate::codec::avro;
use crate::config::Settings;
use crate::gen::{self, GenSpec};
use crate::kafka::dev::DevBroker;
use crate::kafka::{consumer_config, encode_source, producer};
use crate::model::records::{Output, SlaKind};
use crate::service::{self, ServiceStats};

/// The scoring, funnel and SLA definition the demo runs (the conformance example's).
pub const EXAMPLE_CONFIG: &str = include_str!("../examples/config.toml");

#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub seed: u64,
    pub leads: u64,
    /// Milliseconds of event time per millisecond of wall time.
    pub speed: u64,
    /// Stop after this long (None: until Ctrl-C or the traffic ends).
    pub duration: Option<Duration>,
    pub partitions: i32,
    /// Where to serve /metrics (None: not served).
    pub http: Option<std::net::SocketAddr>,
}

/// The demo's `[notify]`: every MQL and every SLA breach to one Slack-style
/// target, the local receiver (`print_inbox`).
fn demo_notify(url_file: &std::path::Path) -> String {
    format!(
        "[notify]\nstart = \"earliest\"\n\
         [notify.targets.sales]\nkind = \"slack\"\nurl_file = \"{}\"\nrate = 0\n\
         [[notify.routes]]\nrecord = \"transition\"\nto_stage = [\"mql\"]\ntarget = \"sales\"\n\
         [[notify.routes]]\nrecord = \"sla\"\nsla_kind = [\"breach\"]\ntarget = \"sales\"\n",
        url_file.display()
    )
}

/// Prints what the notify stage delivers to the local receiver (the first line of each Slack
/// message), as a sales channel would show it.
fn print_inbox(server: &tiny_http::Server, stop: &AtomicBool) {
    for mut req in server.incoming_requests() {
        let mut body = String::new();
        let _ = req.as_reader().read_to_string(&mut body);
        let text = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["text"].as_str().map(str::to_string))
            .unwrap_or(body);
        if !stop.load(Ordering::Relaxed) {
            let first = text.lines().next().unwrap_or("");
            println!("  notify -> #sales (Slack webhook, local receiver): {first}");
        }
        let _ = req.respond(tiny_http::Response::from_string("ok"));
    }
}

pub fn run(opts: &DemoOptions, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let base = Settings::from_toml(EXAMPLE_CONFIG)?;
    let broker = DevBroker::start(&base.service.topics, opts.partitions, None)?;
    // Where the notify stage puts what cannot be delivered (it checks it exists).
    broker.create_topic("leads.notify.dlq", 1)?;
    let snapshots = std::env::temp_dir().join(format!("leadflow-demo-{}", std::process::id()));
    std::fs::create_dir_all(&snapshots).context("creating the demo's folder")?;
    // Notifications go to a local receiver standing in for a Slack channel; it prints them.
    let receiver = Arc::new(
        tiny_http::Server::http("127.0.0.1:0")
            .map_err(|e| anyhow::anyhow!("starting the demo's notification receiver: {e}"))?,
    );
    let url_file = snapshots.join("slack-sales.url");
    std::fs::write(
        &url_file,
        format!("http://{}/sales", receiver.server_addr()),
    )
    .context("writing the demo's webhook URL")?;
    // Event time runs `speed` times faster than the wall clock: no future-time guard.
    let settings = Settings::from_toml(&format!(
        "{EXAMPLE_CONFIG}\n[kafka]\nbrokers = \"{}\"\n[snapshots]\ndir = \"{}\"\n[limits]\nmax_future = \"0s\"\n{}",
        broker.bootstrap(),
        snapshots.display(),
        demo_notify(&url_file)
    ))?;
    println!(
        "leadflow demo: broker {} (librdkafka mock), {} partitions, {} leads, event time x{}",
        broker.bootstrap(),
        opts.partitions,
        opts.leads,
        opts.speed
    );
    let stats = ServiceStats::new()?;
    if let Some(addr) = opts.http {
        let bound = crate::http::serve(addr, stats.clone(), Arc::clone(&stop))?;
        println!("metrics: http://{bound}/metrics");
    }
    println!("Scoring, funnel and SLAs: examples/config.toml. Ctrl-C stops.\n");

    let pipeline = {
        let (settings, stop, stats) = (settings.clone(), Arc::clone(&stop), stats.clone());
        thread::Builder::new()
            .name("pipeline".into())
            .spawn(move || service::run(&settings, stop, stats))
            .context("starting the pipeline")?
    };
    let inbox = {
        let (receiver, stop) = (Arc::clone(&receiver), Arc::clone(&stop));
        thread::Builder::new()
            .name("inbox".into())
            .spawn(move || print_inbox(&receiver, &stop))
            .context("starting the notification receiver")?
    };
    let feed = {
        let (settings, stop) = (settings.clone(), Arc::clone(&stop));
        thread::Builder::new()
            .name("feed".into())
            .spawn(move || print_feed(&settings, &stop))
            .context("starting the feed")?
    };

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let events = gen::generate(&GenSpec {
        seed: opts.seed,
        leads: opts.leads,
        events: opts.leads * 12,
        start_ms: now,
        span_ms: 14 * 86_400_000,
    });
    let (producer, deliveries) = producer::idempotent(&settings.service, 5, None)?;
    let started = Instant::now();
    let speed = opts.speed.max(1) as i64;
    let mut sent = 0u64;
    for ev in &events {
        // Each event leaves when its (accelerated) time comes.
        let due = Duration::from_millis(((ev.occurred_at - now).max(0) / speed) as u64);
        while started.elapsed() < due {
            if stop.load(Ordering::Relaxed) || opts.duration.is_some_and(|d| started.elapsed() >= d)
            {
                break;
            }
            producer.poll(Duration::from_millis(10));
        }
        if stop.load(Ordering::Relaxed) || opts.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        let value = encode_source(ev, settings.service.input_formats[ev.source.index()])?;
        producer::send(
            &producer,
            BaseRecord::to(settings.service.topics.input(ev.source))
                .key(ev.lead_key.as_bytes())
                .payload(&value[..]),
        )?;
        sent += 1;
    }
    producer::flush(&producer, &deliveries, Duration::from_secs(10))?;
    // Let the last records come through, then stop everything.
    if let Some(d) = opts.duration {
        while started.elapsed() < d && !stop.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(50));
        }
    } else {
        while !stop.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(50));
        }
    }
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let result = pipeline
        .join()
        .map_err(|_| anyhow::anyhow!("the pipeline panicked"))?;
    let _ = feed.join();
    receiver.unblock();
    let _ = inbox.join();
    let s = &stats;
    println!(
        "\ndemo: {sent} events produced; ingest forwarded {} ({} invalid); state emitted {} records, wrote {} snapshots",
        s.ingest.forwarded.load(Ordering::Relaxed),
        s.ingest.invalid.load(Ordering::Relaxed),
        s.state.outputs.load(Ordering::Relaxed),
        s.state.snapshots.load(Ordering::Relaxed),
    );
    let _ = std::fs::remove_dir_all(&snapshots);
    result
}

fn print_feed(settings: &Settings, stop: &AtomicBool) -> anyhow::Result<()> {
    let svc = &settings.service;
    let consumer: BaseConsumer = consumer_config(svc)
        .set("group.id", "leadflow-demo-feed")
        .set("auto.offset.reset", "earliest")
        .create()
        .context("creating the feed consumer")?;
    consumer
        .subscribe(&[&svc.topics.transitions, &svc.topics.sla])
        .context("subscribing to the output topics")?;
    let mut out = std::io::stdout();
    while !stop.load(Ordering::Relaxed) {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let is_transition = m.topic() == svc.topics.transitions;
        if let Ok(rec) = avro::decode_output(is_transition, m.payload().unwrap_or(&[])) {
            let _ = writeln!(out, "{}", describe(&rec));
        }
    }
    Ok(())
}

/// One readable line per record.
pub fn describe(rec: &Output) -> String {
    match rec {
        Output::Transition(t) => format!(
            "{}  {:<7} {:<32} {} -> {} ({}; engagement {:.1}, fit {} grade {}{})",
            clock(t.occurred_at),
            t.to_stage.as_str().to_uppercase(),
            t.lead_key,
            t.from_stage,
            t.to_stage,
            t.reason,
            t.engagement,
            t.fit,
            t.grade,
            t.owner_id
                .as_deref()
                .map(|o| format!(", owner {o}"))
                .unwrap_or_default()
        ),
        Output::Sla(s) => {
            let what = match s.kind {
                SlaKind::Warning => format!("warning: due {}", clock(s.deadline)),
                SlaKind::Breach => format!("BREACH: was due {}", clock(s.deadline)),
                SlaKind::Met => format!(
                    "met {} after {}",
                    if s.on_time == Some(true) {
                        "on time"
                    } else {
                        "LATE"
                    },
                    humantime::format_duration(Duration::from_secs(
                        (s.response_ms.unwrap_or(0).max(0) / 1000) as u64
                    ))
                ),
            };
            format!(
                "{}  SLA     {:<32} {} {what}{}",
                clock(s.at),
                s.lead_key,
                s.policy,
                s.owner_id
                    .as_deref()
                    .map(|o| format!(" (owner {o})"))
                    .unwrap_or_default()
            )
        }
    }
}

fn clock(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%a %d %b %H:%M UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}
