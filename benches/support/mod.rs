//! Shared by the end-to-end and soak benches: a broker (in-process mock or external), a
//! `leadflow run` child with a generated config, and readings from outside the process
//! (/metrics over HTTP, RSS from /proc).
#![allow(dead_code)]

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord};

use leadflow::config::{Settings, Topics};
use leadflow::kafka::dev::DevBroker;
use leadflow::model::event::Event;

/// The whole number in environment variable `name`, else `default`; a value that is not one
/// ends the bench with a message naming it (a typo must not run the full-size default).
pub fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Err(_) => default,
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            eprintln!("{name}={v:?}: expected a whole number, e.g. {name}={default}");
            std::process::exit(2)
        }),
    }
}

/// Topics named after this run.
pub fn topics(run: &str) -> Topics {
    Topics {
        web: format!("{run}.web"),
        email: format!("{run}.email"),
        crm: format!("{run}.crm"),
        internal: format!("{run}.events"),
        transitions: format!("{run}.transitions"),
        sla: format!("{run}.sla"),
        dlq: format!("{run}.dlq"),
    }
}

/// The broker: `E2E_BROKERS` (external, topics created) or an in-process mock cluster.
pub fn broker(topics: &Topics, partitions: i32) -> anyhow::Result<(Option<DevBroker>, String)> {
    match std::env::var("E2E_BROKERS") {
        Ok(b) if !b.trim().is_empty() => {
            create_topics(&b, topics, partitions)?;
            Ok((None, b))
        }
        _ => {
            let mock = DevBroker::start(topics, partitions, None)?;
            let b = mock.bootstrap().to_string();
            Ok((Some(mock), b))
        }
    }
}

/// Everything a bench run needs before it starts the service: the broker (kept alive here),
/// topics, a config file in a temporary folder, the HTTP port and the parsed settings.
pub struct Setup {
    pub mock: Option<DevBroker>,
    pub bootstrap: String,
    pub topics: Topics,
    pub dir: tempfile::TempDir,
    pub http: u16,
    pub config_path: PathBuf,
    pub settings: Settings,
}

/// Sets up a run named `prefix` + pid; `extra` is appended to the config, and
/// `mock_extra` too when the broker is the in-process mock.
pub fn setup(
    prefix: &str,
    partitions: i32,
    extra: &str,
    mock_extra: &str,
) -> anyhow::Result<Setup> {
    let run_id = format!("{prefix}{}", std::process::id());
    let topics = topics(&run_id);
    let (mock, bootstrap) = broker(&topics, partitions)?;
    let dir = tempfile::tempdir()?;
    let http = free_port()?;
    let extra = if mock.is_some() {
        format!("{extra}\n{mock_extra}")
    } else {
        extra.to_string()
    };
    let text = config(
        &bootstrap,
        &topics,
        &dir.path().join("snapshots"),
        http,
        &run_id,
        &extra,
    )?;
    let config_path = dir.path().join("leadflow.toml");
    std::fs::write(&config_path, &text)?;
    let settings = Settings::from_toml(&text).context("bench config")?;
    Ok(Setup {
        mock,
        bootstrap,
        topics,
        dir,
        http,
        config_path,
        settings,
    })
}

/// The leadflow binary: `LEADFLOW_BIN`, else the release build beside this bench (the bench
/// runs from `<target>/release/deps/`, wherever `CARGO_TARGET_DIR` puts `<target>`), else
/// `target/release/leadflow` of this checkout.
pub fn binary() -> anyhow::Result<PathBuf> {
    if let Ok(bin) = std::env::var("LEADFLOW_BIN") {
        let bin = PathBuf::from(bin);
        if !bin.exists() {
            bail!("LEADFLOW_BIN={} does not exist", bin.display());
        }
        return Ok(bin);
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("leadflow")));
    let checkout = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/leadflow");
    beside
        .into_iter()
        .chain([checkout.clone()])
        .find(|b| b.exists())
        .with_context(|| {
            format!(
                "the leadflow binary was not found beside this bench nor at {}: build it with \
                 cargo build --release --bin leadflow, or set LEADFLOW_BIN",
                checkout.display()
            )
        })
}

/// Starts `leadflow run --config <config>` (logs at `E2E_LOG`, default warn, on stderr).
pub fn spawn(bin: &Path, config: &Path) -> anyhow::Result<Child> {
    Command::new(bin)
        .args(["run", "--config"])
        .arg(config)
        .env(
            "LEADFLOW_LOG",
            std::env::var("E2E_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))
}

/// Queues an encoded event to its source topic, keyed by lead, polling while the producer's
/// queue is full.
pub fn send_event(producer: &BaseProducer, topics: &Topics, ev: &Event, value: &[u8]) {
    let record = BaseRecord::to(topics.input(ev.source))
        .key(ev.lead_key.as_bytes())
        .payload(value);
    send_record(producer, record);
}

/// Queues `record`, polling while the producer's queue is full.
pub fn send_record(producer: &BaseProducer, mut record: BaseRecord<'_, [u8], [u8]>) {
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((_, r)) => {
                producer.poll(Duration::from_millis(1));
                record = r;
            }
        }
    }
}

/// Stops the child with SIGTERM (a clean drain) and waits for it.
pub fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// The example scoring plus this broker, topics, snapshot folder (snapshots every 10 s), HTTP
/// port and `extra`.
pub fn config(
    bootstrap: &str,
    t: &Topics,
    snapshots: &Path,
    http: u16,
    run_id: &str,
    extra: &str,
) -> anyhow::Result<String> {
    let example = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/config.toml"),
    )?;
    Ok(config_with(
        &example,
        bootstrap,
        t,
        snapshots,
        Some("10s"),
        http,
        run_id,
        extra,
    ))
}

/// A service config: `definition` (scoring, funnel, SLA) plus this broker, topics (groups
/// `{run_id}-ingest` and `{run_id}-state`), snapshot folder and interval (None: the default),
/// HTTP port and `extra`.
#[allow(clippy::too_many_arguments)]
pub fn config_with(
    definition: &str,
    bootstrap: &str,
    t: &Topics,
    snapshots: &Path,
    snapshot_interval: Option<&str>,
    http: u16,
    run_id: &str,
    extra: &str,
) -> String {
    let interval = snapshot_interval
        .map(|i| format!("interval = \"{i}\"\n"))
        .unwrap_or_default();
    format!(
        r#"{definition}
[kafka]
brokers = "{bootstrap}"
ingest_group = "{run_id}-ingest"
state_group = "{run_id}-state"


[topics]
web = "{}"
email = "{}"
crm = "{}"
internal = "{}"
transitions = "{}"
sla = "{}"
dlq = "{}"

[snapshots]
dir = "{}"
{interval}
[http]
listen = "127.0.0.1:{http}"

{extra}
"#,
        t.web,
        t.email,
        t.crm,
        t.internal,
        t.transitions,
        t.sla,
        t.dlq,
        snapshots.display()
    )
}

pub fn create_topics(bootstrap: &str, topics: &Topics, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let new: Vec<NewTopic> = topics
        .all()
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let results = futures_executor::block_on(admin.create_topics(&new, &AdminOptions::new()))?;
    for r in results {
        r.map_err(|(t, e)| anyhow::anyhow!("creating {t}: {e}"))?;
    }
    Ok(())
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// GET /metrics over a plain TCP connection (HTTP/1.0: the body ends at close).
pub fn scrape(port: u16) -> anyhow::Result<String> {
    use std::io::Write;
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text)
}

/// The sum of every sample of `name` (any labels).
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// (VmRSS, VmHWM) of a process, in bytes.
pub fn rss_of(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

/// A `read_committed` reader of every partition of `topic` from `from`, outside any group
/// (records count once their transaction commits, as consumers of transactional outputs must).
pub fn output_consumer(
    bootstrap: &str,
    topic: &str,
    from: rdkafka::Offset,
) -> anyhow::Result<rdkafka::consumer::BaseConsumer> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("bench-reader-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .set("isolation.level", "read_committed")
        .create()?;
    let parts = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))?
        .topics()
        .first()
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..parts as i32 {
        tpl.add_partition_offset(topic, p, from)?;
    }
    consumer.assign(&tpl)?;
    Ok(consumer)
}
