//! Peer benchmark: leadflow's state stage beside a Kafka Streams application doing the same
//! core job (benches/peers/kafka-streams/), on one broker, one input, the same cores.
//!
//! 1. Input: the generator's web and email events (`PEER_EVENTS` of them, over `PEER_LEADS`
//!    leads), encoded as internal records (`schemas/internal_record.avsc`) and produced once,
//!    byte for byte the same, to one internal topic per processor (partition = murmur2 of the
//!    lead key, as ingest writes it). The expected MQL count comes from folding the same events
//!    with leadflow's engine in this process, under `benches/peers/config.toml`.
//! 2. Backlog: each processor alone, pinned with `taskset -c $PEER_CPUS`, folds its topic from
//!    the start. Progress is read from outside: the offsets its consumer group commits (both
//!    commit them in their transactions). Throughput and CPU are measured from the first
//!    commit to the commit that covers the whole backlog, so start-up (JVM, topic metadata) is
//!    not counted for either (the broker's transaction coordinator is readied before either
//!    starts, so neither's first commit waits for it); CPU-seconds come from /proc/PID/stat (every thread: JIT and GC
//!    included for the JVM).
//! 3. The MQL transitions in its output topic (`read_committed`) must equal the expected count.
//! 4. Latency: fresh leads get four `webinar_attended` events each (30 points: the fourth
//!    crosses 100) at `PEER_RATE` events/s for `PEER_LATENCY_SECS`; latency = the trigger's
//!    send instant to its transition's arrival at a `read_committed` consumer (same clock).
//! 5. Peak RSS (VmHWM) from /proc at the end.
//!
//! Run with `benches/peers/run.sh` (starts Apache Kafka with deploy/kafka-local, builds both
//! processors). Settings, by environment: PEER_BROKERS (required), PEER_LEADS (1000000),
//! PEER_EVENTS (3000000), PEER_PARTITIONS (4), PEER_RATE (20000), PEER_LATENCY_SECS (30),
//! PEER_CPUS (1), PEER_ONLY (leadflow | streams), PEER_JAR, PEER_JVM_OPTS (-Xmx1g),
//! PEER_LOG (leadflow's log filter, warn), PEER_BROKER_PID (the broker's CPU over the same
//! window is printed too), LEADFLOW_BIN, PEER_EXTRA (TOML appended to leadflow's config, e.g.
//! `[kafka.properties]` to try librdkafka settings: docs/performance.md).

mod support;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use leadflow::codec::{avro, fast};
use leadflow::config::Settings;
use leadflow::engine::PartitionState;
use leadflow::gen::{generate, GenSpec};
use leadflow::model::event::{Event, Source};
use leadflow::model::funnel::Stage;
use leadflow::model::records::Output;
use leadflow::partition::partition_for;
use support::{env_u64, rss_of};

const T0: i64 = 1_793_491_200_000; // 2026-11-01T00:00:00Z
const DAY: i64 = 86_400_000;

/// Everything one processor's run measured.
struct Measured {
    name: &'static str,
    events: u64,
    fold_secs: f64,
    cpu_secs: f64,
    /// The broker's CPU-seconds over the same window (`PEER_BROKER_PID`), if known.
    broker_cpu_secs: Option<f64>,
    mqls: u64,
    /// The trigger event ids of the backlog's MQL transitions.
    mql_ids: HashSet<String>,
    sent: u64,
    samples: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    peak_rss: u64,
}

/// Below this the backlog window is too short to time (CPU time comes in 10 ms ticks):
/// the rates print as n/a.
const MIN_WINDOW_SECS: f64 = 1.0;

impl Measured {
    fn timed(&self) -> bool {
        self.fold_secs >= MIN_WINDOW_SECS && self.cpu_secs > 0.0
    }
    fn events_per_sec(&self) -> f64 {
        if !self.timed() {
            return f64::NAN;
        }
        self.events as f64 / self.fold_secs
    }
    fn cpu_per_million(&self) -> f64 {
        if !self.timed() {
            return f64::NAN;
        }
        self.cpu_secs / (self.events as f64 / 1e6)
    }
    fn events_per_cpu_sec(&self) -> f64 {
        if !self.timed() {
            return f64::NAN;
        }
        self.events as f64 / self.cpu_secs
    }
}

/// How one processor is started and where it reads and writes.
struct Processor {
    name: &'static str,
    input: String,
    output: String,
    /// The consumer group whose committed offsets say how far it got.
    group: String,
    command: Vec<String>,
    /// How a transition record's trigger event id is read from an output value.
    trigger: fn(&[u8]) -> Option<String>,
}

fn main() -> anyhow::Result<()> {
    let brokers = std::env::var("PEER_BROKERS")
        .context("PEER_BROKERS is not set: run benches/peers/run.sh, which starts Kafka")?;
    let leads = env_u64("PEER_LEADS", 1_000_000);
    let n_events = env_u64("PEER_EVENTS", 3_000_000);
    let partitions = env_u64("PEER_PARTITIONS", 4) as i32;
    let rate = env_u64("PEER_RATE", 20_000).max(4);
    let latency_secs = env_u64("PEER_LATENCY_SECS", 30);
    let cpus = std::env::var("PEER_CPUS").unwrap_or_else(|_| "1".into());
    let only = std::env::var("PEER_ONLY").unwrap_or_default();
    if !["", "leadflow", "streams"].contains(&only.as_str()) {
        bail!("PEER_ONLY={only:?}: expected leadflow or streams (or unset for both)");
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let peer_config = std::fs::read_to_string(root.join("benches/peers/config.toml"))?;
    let jar = std::env::var("PEER_JAR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            root.join("benches/peers/kafka-streams/target/leadflow-peer-kafka-streams.jar")
        });
    let jvm_opts = std::env::var("PEER_JVM_OPTS").unwrap_or_else(|_| "-Xmx1g".into());

    // 1. The input, its expected MQLs, and one topic of it per processor.
    eprintln!("peers: generating {n_events} web and email events over {leads} leads");
    let events = input_events(leads, n_events);
    let distinct = events
        .iter()
        .map(|e| e.lead_key.as_str())
        .collect::<HashSet<_>>()
        .len();
    let expected_ids = expected_mqls(&peer_config, &events)?;
    let expected = expected_ids.len() as u64;
    eprintln!(
        "peers: {} events, {distinct} leads; leadflow's engine in this process: {expected} MQLs",
        events.len()
    );
    let run_id = format!("peers{}", std::process::id());
    let dir = tempfile::tempdir()?;
    let mut processors = Vec::new();
    if only.is_empty() || only == "leadflow" {
        processors.push(leadflow_processor(
            &support::binary()?,
            &brokers,
            &run_id,
            &peer_config,
            dir.path(),
            &cpus,
        )?);
    }
    if only.is_empty() || only == "streams" {
        if !jar.exists() {
            bail!(
                "{} not found: build it with mvn -B package in benches/peers/kafka-streams",
                jar.display()
            );
        }
        processors.push(streams_processor(
            &jar,
            &jvm_opts,
            &brokers,
            &run_id,
            dir.path(),
            &cpus,
        ));
    }
    let mut topics: Vec<String> = Vec::new();
    for p in &processors {
        topics.extend([p.input.clone(), p.output.clone()]);
    }
    if processors.iter().any(|p| p.name == "leadflow") {
        topics.extend(
            ["web", "email", "crm", "sla", "dlq"]
                .iter()
                .map(|t| format!("{run_id}.leadflow.{t}")),
        );
    }
    create_topics(&brokers, &topics, partitions)?;
    let inputs: Vec<&str> = processors.iter().map(|p| p.input.as_str()).collect();
    let load_started = Instant::now();
    load(&brokers, &inputs, &events, partitions as u32)?;
    eprintln!(
        "peers: loaded {} events into {} topic(s) in {:.1} s",
        events.len(),
        inputs.len(),
        load_started.elapsed().as_secs_f64()
    );
    let last_time = events.iter().map(|e| e.occurred_at).max().unwrap_or(T0);
    drop(events);
    warm_transactions(&brokers, &run_id)?;

    // 2-5. Each processor alone.
    let mut results = Vec::new();
    for p in &processors {
        eprintln!("peers: {} ({})", p.name, p.command.join(" "));
        let run = Run {
            brokers: &brokers,
            partitions,
            backlog: n_events,
            expected: &expected_ids,
            rate,
            latency_secs,
            latency_start_ms: last_time + DAY,
        };
        let m = run_one(p, &run).with_context(|| format!("the {} run", p.name))?;
        results.push(m);
    }

    println!();
    println!(
        "peer benchmark: {} events over {distinct} leads, {partitions} partitions, one Apache \
         Kafka broker; each processor alone on CPU(s) {cpus} (taskset); this machine: {} CPUs",
        n_events,
        machine_cpus()
    );
    print_table(&results, rate, latency_secs);
    let wrong: Vec<String> = results
        .iter()
        .filter(|m| m.mql_ids != expected_ids)
        .map(|m| {
            let missing: Vec<&String> = expected_ids.difference(&m.mql_ids).take(10).collect();
            let extra: Vec<&String> = m.mql_ids.difference(&expected_ids).take(10).collect();
            format!(
                "{} emitted {} MQLs, expected {expected} (triggers missing: {missing:?}; not expected: {extra:?})",
                m.name, m.mqls
            )
        })
        .collect();
    if !wrong.is_empty() {
        bail!("the processors disagree: {}", wrong.join("; "));
    }
    println!(
        "MQL transitions: {expected} from {}, trigger for trigger as leadflow's engine computes \
         in process: same work done",
        if results.len() > 1 {
            "each processor"
        } else {
            results[0].name
        }
    );
    Ok(())
}

fn print_table(results: &[Measured], rate: u64, latency_secs: u64) {
    let head: Vec<&str> = results.iter().map(|m| m.name).collect();
    let ratio = results.len() == 2;
    println!(
        "| measure | {} |{}",
        head.join(" | "),
        if ratio {
            " leadflow / Kafka Streams |"
        } else {
            ""
        }
    );
    println!(
        "|---|{}{}",
        "---|".repeat(results.len()),
        if ratio { "---|" } else { "" }
    );
    type Row<'a> = (&'a str, Box<dyn Fn(&Measured) -> f64>, &'a str, bool);
    let rows: Vec<Row> = vec![
        (
            "throughput (backlog)",
            Box::new(|m| m.events_per_sec()),
            "events/s",
            true,
        ),
        (
            "events per CPU-second",
            Box::new(|m| m.events_per_cpu_sec()),
            "",
            true,
        ),
        (
            "CPU-seconds per million events",
            Box::new(|m| m.cpu_per_million()),
            "s",
            false,
        ),
        (
            "peak RSS (VmHWM)",
            Box::new(|m| m.peak_rss as f64 / 1048576.0),
            "MiB",
            false,
        ),
        ("latency p50", Box::new(|m| m.p50_ms), "ms", false),
        ("latency p99", Box::new(|m| m.p99_ms), "ms", false),
        ("latency max", Box::new(|m| m.max_ms), "ms", false),
    ];
    for (label, f, unit, higher_better) in rows {
        let cells: Vec<String> = results
            .iter()
            .map(|m| {
                let v = f(m);
                let text = if v.is_nan() {
                    "n/a".to_string()
                } else if v >= 100.0 {
                    format!("{v:.0} {unit}")
                } else {
                    format!("{v:.2} {unit}")
                };
                text.trim_end().to_string()
            })
            .collect();
        let r = if ratio {
            let (a, b) = (f(&results[0]), f(&results[1]));
            if a.is_nan() || b.is_nan() {
                println!("| {label} | {} | n/a |", cells.join(" | "));
                continue;
            }
            format!(
                " {:.2}x{} |",
                a / b.max(1e-12),
                if higher_better {
                    ""
                } else {
                    " (lower is better)"
                }
            )
        } else {
            String::new()
        };
        println!("| {label} | {} |{r}", cells.join(" | "));
    }
    for m in results.iter().filter(|m| !m.timed()) {
        println!(
            "{}: the backlog window ({:.2} s, {:.2} CPU-s) is too short to time: raise PEER_EVENTS",
            m.name, m.fold_secs, m.cpu_secs
        );
    }
    for m in results {
        let broker = m
            .broker_cpu_secs
            .map(|b| format!(" (the broker meanwhile: {b:.1} CPU-s)"))
            .unwrap_or_default();
        println!(
            "{}: backlog {} events in {:.1} s, {:.1} CPU-s{broker}; latency run {} events at \
             {rate}/s for {latency_secs} s, {} transitions timed",
            m.name, m.events, m.fold_secs, m.cpu_secs, m.sent, m.samples
        );
    }
}

/// CPUs online on this machine (not this process's affinity: the script pins the driver).
fn machine_cpus() -> usize {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0)
}

/// The generator's journeys, web and email only (the peer job has no CRM stages), first
/// `n` of them in time order.
fn input_events(leads: u64, n: u64) -> Vec<Event> {
    // About 57% of generated events are web or email: generate enough to keep n of them.
    let mut events = generate(&GenSpec {
        seed: 1,
        leads,
        events: n * 2,
        start_ms: T0,
        span_ms: 30 * DAY,
    });
    events.retain(|e| e.source != Source::Crm);
    events.truncate(n as usize);
    events
}

/// MQLs from folding `events` in order with leadflow's engine under the peer config. One
/// engine for all leads gives the same per-lead results as one per partition: the peer
/// config has no timers, and each lead's events keep their order within its partition.
fn expected_mqls(config: &str, events: &[Event]) -> anyhow::Result<HashSet<String>> {
    let rules = Settings::from_toml(config)
        .context("benches/peers/config.toml")?
        .rules;
    let mut state = PartitionState::new(Arc::clone(&rules));
    let mut out = Vec::new();
    let mut mqls = HashSet::new();
    for ev in events {
        state.apply(ev, &mut out);
        for o in out.drain(..) {
            if let Output::Transition(t) = o {
                if t.to_stage == Stage::Mql {
                    mqls.insert(t.trigger_event_id.into());
                }
            }
        }
    }
    Ok(mqls)
}

fn leadflow_processor(
    bin: &Path,
    brokers: &str,
    run_id: &str,
    peer_config: &str,
    dir: &Path,
    cpus: &str,
) -> anyhow::Result<Processor> {
    let run = format!("{run_id}.leadflow");
    let topics = support::topics(&run);
    let config = support::config_with(
        peer_config,
        brokers,
        &topics,
        &dir.join("leadflow-snapshots"),
        None,
        support::free_port()?,
        &run,
        &std::env::var("PEER_EXTRA").unwrap_or_default(),
    );
    Settings::from_toml(&config).context("the leadflow config of the peer bench")?;
    let path = dir.join("leadflow.toml");
    std::fs::write(&path, config)?;
    Ok(Processor {
        name: "leadflow",
        input: topics.internal.clone(),
        output: topics.transitions.clone(),
        group: format!("{run}-state"),
        command: vec![
            "taskset".into(),
            "-c".into(),
            cpus.into(),
            bin.display().to_string(),
            "run".into(),
            "--config".into(),
            path.display().to_string(),
        ],
        // Avro (the default) or JSON (`LEADFLOW__FORMATS__OUTPUT=json`, to read them by eye).
        trigger: |v| {
            if v.first() == Some(&b'{') {
                let j: serde_json::Value = serde_json::from_slice(v).ok()?;
                (j.get("to_stage")?.as_str()? == "mql").then_some(())?;
                return Some(j.get("trigger_event_id")?.as_str()?.to_string());
            }
            match avro::decode_output(true, v) {
                Ok(Output::Transition(t)) if t.to_stage == Stage::Mql => {
                    Some(t.trigger_event_id.into())
                }
                _ => None,
            }
        },
    })
}

fn streams_processor(
    jar: &Path,
    jvm_opts: &str,
    brokers: &str,
    run_id: &str,
    dir: &Path,
    cpus: &str,
) -> Processor {
    let t = |name: &str| format!("{run_id}.streams.{name}");
    let app_id = format!("{run_id}-streams");
    let mut command: Vec<String> = vec!["taskset".into(), "-c".into(), cpus.into(), "java".into()];
    command.extend(jvm_opts.split_whitespace().map(String::from));
    command.extend([
        "-jar".into(),
        jar.display().to_string(),
        "--bootstrap".into(),
        brokers.into(),
        "--input".into(),
        t("events"),
        "--output".into(),
        t("transitions"),
        "--application-id".into(),
        app_id.clone(),
        "--state-dir".into(),
        dir.join("streams-state").display().to_string(),
    ]);
    Processor {
        name: "Kafka Streams",
        input: t("events"),
        output: t("transitions"),
        group: app_id,
        command,
        trigger: |v| {
            let j: serde_json::Value = serde_json::from_slice(v).ok()?;
            (j.get("to")?.as_str()? == "mql").then_some(())?;
            Some(j.get("event_id")?.as_str()?.to_string())
        },
    }
}

fn create_topics(brokers: &str, names: &[String], partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let new: Vec<NewTopic> = names
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    for r in futures_executor::block_on(admin.create_topics(&new, &AdminOptions::new()))? {
        r.map_err(|(t, e)| anyhow::anyhow!("creating {t}: {e}"))?;
    }
    Ok(())
}

/// Produces every event to each topic in `topics`, in order, to the partition ingest would
/// choose, and waits for every acknowledgement.
fn load(brokers: &str, topics: &[&str], events: &[Event], partitions: u32) -> anyhow::Result<()> {
    // Idempotent, so a retried batch cannot land after a later one: without it, the first
    // batches to a fresh broker (partition leaders not known yet) were retried behind later
    // ones, a few leads' events were folded out of order, and the two processors, reading
    // differently reordered copies, disagreed on a few MQLs (found by the count check).
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    for ev in events {
        let value = fast::encode_internal_event(ev);
        let partition = partition_for(ev.lead_key.as_bytes(), partitions) as i32;
        for topic in topics {
            send(&producer, topic, partition, &ev.lead_key, &value);
        }
    }
    producer.flush(Duration::from_secs(120))?;
    Ok(())
}

fn send(producer: &BaseProducer, topic: &str, partition: i32, key: &str, value: &[u8]) {
    let record = BaseRecord::to(topic)
        .partition(partition)
        .key(key.as_bytes())
        .payload(value);
    support::send_record(producer, record);
}

/// utime + stime of a process (all its threads), in seconds.
fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("/proc/PID/stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): utime is field 14, stime 15.
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    Ok(ticks as f64 / clock_ticks_per_sec())
}

/// `getconf CLK_TCK` (the unit of /proc/PID/stat's times; 100 on Linux).
fn clock_ticks_per_sec() -> f64 {
    static HZ: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The sum of `group`'s committed offsets on `topic` (0 for a partition without one).
fn committed(watcher: &BaseConsumer, topic: &str, partitions: i32) -> anyhow::Result<u64> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let c = watcher.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok(c.elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o.max(0) as u64,
            _ => 0,
        })
        .sum())
}

/// What every processor's run shares: the broker, the input and the latency run's settings.
struct Run<'a> {
    brokers: &'a str,
    partitions: i32,
    /// Events in the backlog (each processor's input topic holds exactly these first).
    backlog: u64,
    /// The trigger event ids of the MQLs leadflow's engine computes in process.
    expected: &'a HashSet<String>,
    rate: u64,
    latency_secs: u64,
    /// Event time of the latency run's first event (after the backlog's last).
    latency_start_ms: i64,
}

/// Readies the broker's transaction coordinator before either processor starts: the first
/// transactional producer on a fresh broker has it create `__transaction_state` (50
/// partitions), which takes seconds here. Without this the first processor's first commit
/// waited for it while its fold went on, so the window measured from that commit missed
/// most of a small backlog ("too short to time"), and the second processor found it ready.
fn warm_transactions(brokers: &str, run_id: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("transactional.id", format!("{run_id}.warmup"))
        .create()?;
    producer
        .init_transactions(Duration::from_secs(120))
        .context("initializing a transactional producer (the coordinator warm-up)")?;
    producer.begin_transaction()?;
    producer
        .commit_transaction(Duration::from_secs(120))
        .context("committing the warm-up transaction")?;
    eprintln!(
        "peers: the broker's transaction coordinator is ready ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn run_one(p: &Processor, run: &Run) -> anyhow::Result<Measured> {
    let Run {
        brokers,
        partitions,
        ..
    } = *run;
    let watcher: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", &p.group)
        .set("enable.auto.commit", "false")
        .create()?;
    // The group coordinator must answer before the processor starts: otherwise the first
    // commits it makes go unseen, and the measured window starts late.
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Err(e) = committed(&watcher, &p.input, partitions) {
        if Instant::now() > deadline {
            return Err(e.context(format!("the group coordinator for {}", p.group)));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut child = Command::new(&p.command[0])
        .args(&p.command[1..])
        .env(
            "LEADFLOW_LOG",
            std::env::var("PEER_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", p.command.join(" ")))?;
    let result = measure(p, run, &mut child, &watcher);
    stop(&mut child);
    result
}

fn measure(
    p: &Processor,
    run: &Run,
    child: &mut Child,
    watcher: &BaseConsumer,
) -> anyhow::Result<Measured> {
    let Run {
        brokers,
        partitions,
        backlog,
        expected,
        rate,
        latency_secs,
        latency_start_ms,
    } = *run;
    let pid = child.id();
    let broker: Option<u32> = std::env::var("PEER_BROKER_PID")
        .ok()
        .and_then(|v| v.parse().ok());
    let broker_cpu = || broker.and_then(|b| cpu_secs(b).ok());
    // Backlog: from the first committed offset to the commit covering every event.
    let deadline = Instant::now() + Duration::from_secs(1800);
    let mut first: Option<(Instant, u64, f64, Option<f64>)> = None;
    let end = loop {
        if let Some(status) = child.try_wait()? {
            bail!("{} exited during the backlog: {status}", p.name);
        }
        if Instant::now() > deadline {
            bail!("{} did not fold the backlog in 30 minutes", p.name);
        }
        // A fresh broker may not have its group coordinator yet: retry until the deadline.
        let done = match committed(watcher, &p.input, partitions) {
            Ok(done) => done,
            Err(e) if Instant::now() + Duration::from_secs(60) < deadline => {
                eprintln!(
                    "peers: reading {}'s committed offsets: {e:#} (retrying)",
                    p.group
                );
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            Err(e) => return Err(e),
        };
        let now = Instant::now();
        if done > 0 && first.is_none() {
            first = Some((now, done, cpu_secs(pid)?, broker_cpu()));
        }
        if done >= backlog {
            break (now, cpu_secs(pid)?, broker_cpu());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (t0, n0, cpu0, broker0) = first.context("no commit seen")?;
    let broker_cpu_secs = broker0.zip(end.2).map(|(a, b)| b - a);
    let events = backlog - n0;
    let fold_secs = end.0.duration_since(t0).as_secs_f64();
    let cpu = end.1 - cpu0;
    let mql_ids = count_mqls(p, brokers, expected)?;
    let mqls = mql_ids.len() as u64;
    eprintln!(
        "peers: {} folded {events} events in {fold_secs:.1} s ({:.0}/s), {cpu:.1} CPU-s, {mqls} MQLs",
        p.name,
        events as f64 / fold_secs.max(1e-9)
    );
    let (sent, mut latencies) = latency(p, brokers, rate, latency_secs, latency_start_ms)?;
    if let Some(status) = child.try_wait()? {
        bail!("{} exited during the latency run: {status}", p.name);
    }
    let (_, peak_rss) = rss_of(pid)?;
    if latencies.is_empty() {
        bail!("no transition was timed");
    }
    latencies.sort_by(f64::total_cmp);
    let q = |x: f64| latencies[((latencies.len() - 1) as f64 * x).round() as usize];
    Ok(Measured {
        name: p.name,
        events,
        fold_secs,
        cpu_secs: cpu,
        broker_cpu_secs,
        mqls,
        mql_ids,
        sent,
        samples: latencies.len(),
        p50_ms: q(0.5),
        p99_ms: q(0.99),
        max_ms: q(1.0),
        peak_rss,
    })
}

/// The trigger event ids of the MQL transitions in the output topic, read `read_committed`
/// from the start: until they equal `expected` and nothing more arrives for 3 s, else for at
/// most 60 s (the processor has committed the whole backlog when this starts; the markers of
/// its last transaction may land a little after its offsets). A transition emitted twice
/// counts twice (an id suffixed `#2`).
fn count_mqls(
    p: &Processor,
    brokers: &str,
    expected: &HashSet<String>,
) -> anyhow::Result<HashSet<String>> {
    let consumer = support::output_consumer(brokers, &p.output, Offset::Beginning)?;
    let mut ids = HashSet::new();
    let mut last = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (last.elapsed() < Duration::from_secs(3) || ids != *expected) && Instant::now() < deadline
    {
        while let Some(m) = consumer.poll(Duration::from_millis(100)) {
            if let Some(id) = (p.trigger)(m?.payload().unwrap_or(&[])) {
                let mut id = id;
                while ids.contains(&id) {
                    id.push_str("#2");
                }
                ids.insert(id);
            }
            last = Instant::now();
        }
    }
    Ok(ids)
}

/// Fresh leads, four webinars each, at `rate` events/s; returns the events sent and the
/// produce-to-transition latency of every MQL seen, in ms.
fn latency(
    p: &Processor,
    brokers: &str,
    rate: u64,
    secs: u64,
    start_ms: i64,
) -> anyhow::Result<(u64, Vec<f64>)> {
    let consumer = support::output_consumer(brokers, &p.output, Offset::End)?;
    // Position the reader at the end before producing.
    for _ in 0..20 {
        consumer.poll(Duration::from_millis(50));
    }
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "1")
        .create()?;
    let parts = consumer
        .fetch_metadata(Some(&p.input), Duration::from_secs(10))?
        .topics()
        .first()
        .map(|t| t.partitions().len() as u32)
        .unwrap_or(1);
    let total = rate * secs;
    let mut sent_at: HashMap<String, Instant> = HashMap::with_capacity(total as usize / 4);
    let mut latencies = Vec::new();
    let collect = |wait: Duration, sent_at: &HashMap<String, Instant>, out: &mut Vec<f64>| {
        let mut wait = wait;
        while let Some(Ok(m)) = consumer.poll(wait) {
            wait = Duration::ZERO;
            let now = Instant::now();
            if let Some(id) = (p.trigger)(m.payload().unwrap_or(&[])) {
                if let Some(s) = sent_at.get(&id) {
                    out.push(now.duration_since(*s).as_secs_f64() * 1000.0);
                }
            }
        }
    };
    let begin = Instant::now();
    for n in 0..total {
        let due = begin + Duration::from_secs_f64(n as f64 / rate as f64);
        let now = Instant::now();
        if due > now {
            // At least 1 ms: a shorter wait is a 0 ms poll (librdkafka counts whole ms), and
            // the loop would spin a core away from the processor and the broker.
            producer.poll(Duration::ZERO);
            collect(
                (due - now).max(Duration::from_millis(1)),
                &sent_at,
                &mut latencies,
            );
        }
        let lead = format!("latency{}@peers.example", n / 4);
        let id = format!("lat-{n}");
        let ev = Event {
            event_id: id.as_str().into(),
            lead_key: lead.clone(),
            occurred_at: start_ms + n as i64,
            source: Source::Web,
            event_type: "webinar_attended".into(),
            crm: None,
            attributes: Vec::new(),
        };
        let value = fast::encode_internal_event(&ev);
        if n % 4 == 3 {
            sent_at.insert(id, Instant::now());
        }
        send(
            &producer,
            &p.input,
            partition_for(lead.as_bytes(), parts) as i32,
            &lead,
            &value,
        );
    }
    producer.flush(Duration::from_secs(30))?;
    // The last transitions: until every trigger is timed, at most 10 s.
    let tail = Instant::now();
    while latencies.len() < sent_at.len() && tail.elapsed() < Duration::from_secs(10) {
        collect(Duration::from_millis(50), &sent_at, &mut latencies);
    }
    Ok((total, latencies))
}

/// SIGTERM (both drain and close cleanly on it), then SIGKILL after 30 s.
fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}
