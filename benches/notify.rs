//! Notification throughput and latency: one notify stage delivering to a local HTTP receiver.
//!
//! 1. Backlog: NOTIFY_ALERTS MQL transitions (30000) already in the output topic, drained by
//!    the notify stage to a webhook on loopback: alerts per second.
//! 2. Steady: NOTIFY_RATE alerts per second (1000) for NOTIFY_SECS (10), produced while it
//!    runs: delivery latency from the record's write to the receiver's 2xx (the stage's own
//!    histogram, bucket bounds).
//!
//! Run: `cargo bench --bench notify` (the in-process mock broker; `E2E_BROKERS=host:port` for
//! a real one).

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::producer::{BaseRecord, Producer};

use leadflow::model::funnel::Stage;
use leadflow::model::records::{Output, Transition};
use support::env_u64;

fn mql(i: u64) -> Output {
    Output::Transition(Transition {
        transition_id: format!("lead{i}@x.io/t/1").into(),
        lead_key: format!("lead{i}@x.io").into(),
        from_stage: Stage::New,
        to_stage: Stage::Mql,
        reason: "score".into(),
        occurred_at: leadflow::metrics::now_ms(),
        trigger_event_id: format!("e{i}").into(),
        engagement: 120.0,
        fit: 40.0,
        grade: "A".into(),
        owner_id: Some(format!("rep-{}", i % 50).into()),
    })
}

fn main() -> anyhow::Result<()> {
    let backlog = env_u64("NOTIFY_ALERTS", 30_000);
    let rate = env_u64("NOTIFY_RATE", 1_000).max(1);
    let secs = env_u64("NOTIFY_SECS", 10);
    let partitions = 4;

    // The receiver: counts and answers 200 at once.
    let server = Arc::new(
        tiny_http::Server::http("127.0.0.1:0").map_err(|e| anyhow::anyhow!("receiver: {e}"))?,
    );
    let received = Arc::new(AtomicU64::new(0));
    {
        let (s, n) = (Arc::clone(&server), Arc::clone(&received));
        std::thread::spawn(move || {
            for mut req in s.incoming_requests() {
                let mut sink = Vec::new();
                let _ = std::io::Read::read_to_end(req.as_reader(), &mut sink);
                n.fetch_add(1, Ordering::Relaxed);
                let _ = req.respond(tiny_http::Response::from_string("ok"));
            }
        });
    }
    let url_dir = tempfile::tempdir()?;
    let url_file = url_dir.path().join("hook.url");
    std::fs::write(&url_file, format!("http://{}/hook", server.server_addr()))?;
    let notify = format!(
        "[notify]\nstart = \"earliest\"\n[notify.targets.hook]\nkind = \"webhook\"\nurl_file = \"{}\"\n\
         [[notify.routes]]\nrecord = \"transition\"\ntarget = \"hook\"\n",
        url_file.display()
    );
    // The mock answers an empty fetch only after the full wait (a real broker answers when
    // data arrives), as in the e2e bench.
    let run = support::setup(
        "notify",
        partitions,
        &notify,
        "[kafka.properties]\n\"fetch.wait.max.ms\" = \"10\"\n",
    )?;
    let settings = run.settings.clone();
    match &run.mock {
        Some(mock) => mock.create_topic(&settings.notify.dlq, 1)?,
        None => anyhow::bail!("the notify bench runs on the mock broker only"),
    }
    let producer: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &run.bootstrap)
        .set("linger.ms", "5")
        .create()?;
    let send = |i: u64| -> anyhow::Result<()> {
        let rec = mql(i);
        let value = leadflow::codec::avro::encode_output(&rec);
        let key = format!("lead{i}@x.io");
        let p = leadflow::partition::partition_for(key.as_bytes(), partitions as u32) as i32;
        loop {
            match producer.send(
                BaseRecord::<[u8], [u8]>::to(&run.topics.transitions)
                    .partition(p)
                    .key(key.as_bytes())
                    .payload(&value),
            ) {
                Ok(()) => return Ok(()),
                Err((_, _)) => {
                    producer.poll(Duration::from_millis(5));
                }
            }
        }
    };
    for i in 0..backlog {
        send(i)?;
    }
    producer.flush(Duration::from_secs(30))?;

    let stop = Arc::new(AtomicBool::new(false));
    let metrics = Arc::new(leadflow::metrics::Metrics::new()?);
    let stage = {
        let (s, m, st) = (Arc::clone(&stop), Arc::clone(&metrics), settings.clone());
        std::thread::spawn(move || leadflow::notify::run(&st, &s, m, None))
    };
    let started = Instant::now();
    while received.load(Ordering::Relaxed) < backlog {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "backlog not drained"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let drain = started.elapsed().as_secs_f64();

    // Steady: `rate` per second for `secs`, paced by the wall clock. Its latency is the
    // histogram's growth during this phase (the backlog's waits are not in it).
    let before_text = leadflow::metrics::Metrics::render(&metrics)?;
    let before = metrics.notify_latency_seconds.with_label_values(&["hook"]);
    let base_count = before.get_sample_count();
    let start = Instant::now();
    let total = rate * secs;
    for k in 0..total {
        let due = Duration::from_secs_f64(k as f64 / rate as f64);
        while start.elapsed() < due {
            producer.poll(Duration::from_millis(1));
        }
        send(backlog + k)?;
    }
    producer.flush(Duration::from_secs(30))?;
    while received.load(Ordering::Relaxed) < backlog + total {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(secs + 120),
            "steady run not delivered"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = stage.join();

    let text = leadflow::metrics::Metrics::render(&metrics)?;
    println!();
    println!(
        "leadflow notify ({} partitions, one webhook target on loopback, this machine: {} CPUs)",
        partitions,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| backlog of {backlog} alerts drained | {drain:.2} s = {:.0} alerts/s |",
        backlog as f64 / drain
    );
    println!(
        "| steady {rate} alerts/s for {secs} s | {} delivered, {} in the latency histogram |",
        total,
        before.get_sample_count() - base_count
    );
    println!(
        "| delivery latency at {rate}/s (record write -> 2xx), p50 / p99 / max bucket | {} / {} / {} |",
        quantile(&before_text, &text, 0.5),
        quantile(&before_text, &text, 0.99),
        quantile(&before_text, &text, 1.0)
    );
    Ok(())
}

/// The bucket bound holding quantile `q` of what `leadflow_notify_delivery_latency_seconds`
/// gained between the `before` and `after` expositions.
fn quantile(before: &str, after: &str, q: f64) -> String {
    let prefix = "leadflow_notify_delivery_latency_seconds_bucket{target=\"hook\",le=\"";
    let read = |text: &str| -> Vec<(String, f64)> {
        text.lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(prefix)?;
                let (le, rest) = rest.split_once('"')?;
                let count = rest.rsplit(' ').next()?.parse().ok()?;
                Some((le.to_string(), count))
            })
            .collect()
    };
    let (b, a) = (read(before), read(after));
    let grown: Vec<(String, f64)> = a
        .iter()
        .map(|(le, c)| {
            let was = b.iter().find(|(l, _)| l == le).map_or(0.0, |x| x.1);
            (le.clone(), c - was)
        })
        .collect();
    let total = grown.last().map_or(0.0, |g| g.1);
    grown
        .iter()
        .find(|(_, c)| *c >= (q * total).ceil().max(1.0))
        .map_or("n/a".into(), |(le, _)| format!("≤ {le} s"))
}
