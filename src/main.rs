use std::fs::File;
use std::io::{self, BufReader, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use leadflow::config::Settings;
use leadflow::engine::PartitionState;
use leadflow::kafka::dev::DevBroker;
use leadflow::replay;

#[global_allocator]
static ALLOC: leadflow::allocator::MiMalloc = leadflow::allocator::MiMalloc;

#[derive(Parser)]
#[command(
    name = "leadflow",
    version,
    about = "Lead scoring, funnel stages and SLA clocks over event streams"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay a JSON Lines event file through the engine and print the output records.
    Replay {
        /// Config file (TOML); LEADFLOW__SECTION__KEY environment variables override it.
        #[arg(long)]
        config: PathBuf,
        /// Input events, one JSON object per line ("-" for standard input).
        input: PathBuf,
        /// Fire every SLA warning and breach due before this time (ms since the epoch) at the end.
        #[arg(long, value_name = "MS")]
        until: Option<i64>,
        /// Treat events more than limits.max_future (default 1d) ahead of this time (ms since
        /// the epoch) as invalid (future_time), as Kafka ingest does against its clock.
        #[arg(long, value_name = "MS")]
        now: Option<i64>,
        /// Write records here instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Let the allocator back memory with transparent huge pages. Off by default for
        /// replay: it builds its state from nothing, and the first touch of each fresh huge
        /// page cost more than they saved on the 2-core development VM (docs/performance.md).
        /// Skips turning them off; cannot turn them on where they are off already.
        #[arg(long)]
        huge_pages: bool,
    },
    /// Report funnel conversion, cohorts, velocity, SLA compliance and revenue over a history,
    /// and compare lead definitions on it (docs/analytics.md).
    Report(ReportArgs),
    /// Validate a config file and print a short summary.
    CheckConfig {
        /// Config file (TOML).
        config: PathBuf,
    },
    /// Run the service: ingest and state stages against the configured Kafka brokers (and the
    /// notify stage when [notify] has routes).
    Run {
        /// Config file (TOML); LEADFLOW__SECTION__KEY environment variables override it.
        #[arg(long)]
        config: PathBuf,
        /// Let the allocator back memory with transparent huge pages (off by default: at a
        /// million leads' traffic the service took less CPU per event, less memory and had
        /// a lower p99 without them; docs/performance.md).
        #[arg(long)]
        huge_pages: bool,
    },
    /// Run only the notify stage: deliver [notify] routes' messages from the output topics.
    Notify {
        /// Config file (TOML); LEADFLOW__SECTION__KEY environment variables override it.
        #[arg(long)]
        config: PathBuf,
        /// Let the allocator back memory with transparent huge pages (off by default, as for
        /// `run`).
        #[arg(long)]
        huge_pages: bool,
    },
    /// Generate deterministic, realistic lead traffic (JSON Lines, or to Kafka topics).
    Gen {
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 1000)]
        leads: u64,
        #[arg(long, default_value_t = 10_000)]
        events: u64,
        /// First event time, ms since the epoch (default: 2026-11-01T00:00:00Z).
        #[arg(long, default_value_t = 1_793_491_200_000)]
        start: i64,
        /// Time span of the journeys' starts, e.g. 30d.
        #[arg(long, default_value = "30d")]
        span: humantime::Duration,
        /// Write JSON Lines here (default: standard output).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Produce to the source topics of this config instead (in their formats).
        #[arg(long, conflicts_with = "output")]
        kafka_config: Option<PathBuf>,
    },
    /// The whole pipeline on a local broker with generated traffic; prints alerts as they happen.
    Demo {
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 300)]
        leads: u64,
        /// Event time per wall time (3600: an hour of lead activity per second).
        #[arg(long, default_value_t = 3600)]
        speed: u64,
        /// Stop after this long, e.g. 60s (default: run until Ctrl-C).
        #[arg(long)]
        duration: Option<humantime::Duration>,
        #[arg(long, default_value_t = 3)]
        partitions: i32,
        /// Serve /metrics here ("" to not serve).
        #[arg(long, default_value = "127.0.0.1:9464")]
        http: String,
    },
    /// Start a local Kafka-protocol broker (librdkafka's mock cluster) with leadflow's topics.
    DevBroker {
        /// Config whose [topics] to create (defaults when omitted).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Bootstrap port on 127.0.0.1 (default: the mock's own random port).
        #[arg(long)]
        port: Option<u16>,
        /// Partitions of every topic.
        #[arg(long, default_value_t = 3)]
        partitions: i32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Replay {
            config,
            input,
            until,
            now,
            output,
            huge_pages,
        } => {
            huge_pages_unless_asked(huge_pages);
            cmd_replay(config, input, until, now, output)
        }
        Command::Report(args) => {
            huge_pages_unless_asked(args.huge_pages);
            cmd_report(args)
        }
        Command::CheckConfig { config } => load_settings(&config).map(|s| {
            print!("{}: ok\n{}", config.display(), s.summary());
        }),
        Command::Run { config, huge_pages } => {
            huge_pages_unless_asked(huge_pages);
            cmd_run(config)
        }
        Command::Notify { config, huge_pages } => {
            huge_pages_unless_asked(huge_pages);
            cmd_notify(config)
        }
        Command::Demo {
            seed,
            leads,
            speed,
            duration,
            partitions,
            http,
        } => (|| {
            let http = match http.as_str() {
                "" => None,
                a => Some(
                    a.parse()
                        .with_context(|| format!("--http {a}: expected IP:PORT"))?,
                ),
            };
            cmd_demo(leadflow::demo::DemoOptions {
                seed,
                leads,
                speed,
                duration: duration.map(Into::into),
                partitions: partitions.max(1),
                http,
            })
        })(),
        Command::Gen {
            seed,
            leads,
            events,
            start,
            span,
            output,
            kafka_config,
        } => cmd_gen(
            leadflow::gen::GenSpec {
                seed,
                leads,
                events,
                start_ms: start,
                span_ms: span.as_millis() as i64,
            },
            output,
            kafka_config,
        ),
        Command::DevBroker {
            config,
            port,
            partitions,
        } => cmd_dev_broker(config, port, partitions),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(if e.is::<leadflow::config::ConfigError>() {
                2
            } else {
                1
            })
        }
    }
}

#[derive(clap::Args)]
struct ReportArgs {
    /// Config file (TOML): the lead definition, and [report] settings.
    #[arg(long)]
    config: PathBuf,
    /// History: events in the replay format (JSON Lines; "-" for standard input).
    #[arg(
        required_unless_present = "kafka_config",
        conflicts_with = "kafka_config"
    )]
    history: Option<PathBuf>,
    /// Read the history from the internal topic of this config's Kafka cluster instead,
    /// every partition from its earliest offset.
    #[arg(long, value_name = "FILE")]
    kafka_config: Option<PathBuf>,
    /// How long after an MQL its outcome counts (default: report.horizon, 90d).
    #[arg(long)]
    horizon: Option<String>,
    /// text, json or html (one self-contained page).
    #[arg(long, default_value = "text")]
    format: String,
    /// Write the report here instead of standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Another definition to compare on the same history (repeatable).
    #[arg(long, value_name = "CONFIG")]
    compare: Vec<PathBuf>,
    /// Sweep a numeric [scoring] or [funnel] key over values, e.g.
    /// funnel.mql_threshold=60,80,100,120.
    #[arg(long, value_name = "KEY=V1,V2,...")]
    sweep: Option<String>,
    /// Let the allocator back memory with transparent huge pages (off by default, as for
    /// replay: see `leadflow replay --help`).
    #[arg(long)]
    huge_pages: bool,
}

fn cmd_report(a: ReportArgs) -> anyhow::Result<()> {
    use leadflow::analytics::{self, Definition, History};
    let format = match a.format.as_str() {
        f @ ("text" | "json" | "html") => f,
        other => {
            return Err(leadflow::config::ConfigError::Invalid {
                key: "--format".into(),
                value: format!("{other:?}"),
                allowed: "allowed: text, json, html".into(),
            }
            .into())
        }
    };
    let base_text = std::fs::read_to_string(&a.config)
        .with_context(|| format!("cannot read {}", a.config.display()))?;
    let base = load_settings(&a.config)?;
    let mut settings = base.report.clone();
    if let Some(h) = &a.horizon {
        settings.horizon_ms = analytics::config::positive_horizon("--horizon", h)?;
    }
    let name = |p: &std::path::Path| {
        p.file_name().map_or_else(
            || p.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    };
    let mut defs = vec![Definition {
        label: name(&a.config),
        settings: base,
    }];
    for other in &a.compare {
        defs.push(Definition {
            label: name(other),
            settings: load_settings(other)?,
        });
    }
    if let Some(sweep) = &a.sweep {
        let (key, values) = analytics::parse_sweep(sweep)?;
        analytics::check_sweep_key(&base_text, &key)?;
        for v in values {
            let settings = Settings::with_overrides(&base_text, None, &[(key.clone(), v)])
                .with_context(|| format!("--sweep {key}={v}"))?;
            defs.push(Definition {
                label: format!("{key}={v}"),
                settings,
            });
        }
    }
    let options = |source: String| analytics::Options {
        settings: settings.clone(),
        source,
    };
    let report = match (&a.history, &a.kafka_config) {
        (_, Some(k)) => {
            let ks = load_settings(k)?;
            let source = format!("kafka:{}", ks.service.topics.internal);
            let read: analytics::LogReader<'_> =
                Box::new(|sink| leadflow::kafka::history::read_internal_log(&ks, sink));
            analytics::run::<io::Empty>(defs, History::Log(read), &options(source))?
        }
        (Some(h), None) if h.as_os_str() == "-" => analytics::run(
            defs,
            History::Lines(BufReader::new(io::stdin())),
            &options("standard input".to_string()),
        )?,
        (Some(h), None) => {
            let file = File::open(h).with_context(|| format!("cannot open {}", h.display()))?;
            analytics::run(
                defs,
                History::Lines(BufReader::with_capacity(1 << 20, file)),
                &options(h.display().to_string()),
            )?
        }
        (None, None) => anyhow::bail!("give a history file, or --kafka-config"),
    };
    // Invalid input is reported as replay reports it, and skipped (SPEC §2).
    for (line, reason) in &report.history.invalid_lines {
        eprintln!("{}: line {line}: {reason}", report.history.source);
    }
    if report.history.invalid > 0 {
        let reasons: Vec<String> = report
            .history
            .invalid_by_reason
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        eprintln!(
            "{}: {} invalid lines skipped ({})",
            report.history.source,
            report.history.invalid,
            reasons.join(" ")
        );
    }
    let body = match format {
        "json" => serde_json::to_string_pretty(&report).context("encoding the report")? + "\n",
        "html" => analytics::html::render(&report),
        _ => analytics::text::render(&report),
    };
    match &a.output {
        Some(p) => std::fs::write(p, body).with_context(|| format!("writing {}", p.display()))?,
        None => io::stdout()
            .lock()
            .write_all(body.as_bytes())
            .context("writing the report")?,
    }
    Ok(())
}

fn load_settings(path: &std::path::Path) -> anyhow::Result<Settings> {
    Settings::load(path).map_err(anyhow::Error::from)
}

/// Whether `a` and `b` name the same existing file (the same device and inode: also through
/// links or another spelling of the path).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Replay, report, run and notify turn transparent huge pages off unless `asked`
/// (`--huge-pages`), before their state exists, so every page it touches is a small one
/// (`allocator::disable_transparent_huge_pages` says why). A failure is reported and the
/// command goes on with them.
fn huge_pages_unless_asked(asked: bool) {
    if asked {
        return;
    }
    if let Err(e) = leadflow::allocator::disable_transparent_huge_pages() {
        eprintln!("leadflow: could not turn transparent huge pages off ({e}); going on with them");
    }
}

fn cmd_replay(
    config: PathBuf,
    input: PathBuf,
    until: Option<i64>,
    now: Option<i64>,
    output: Option<PathBuf>,
) -> anyhow::Result<()> {
    let settings = load_settings(&config)?;
    let mut state = PartitionState::new(settings.rules.clone());

    let (reader, size): (Box<dyn io::BufRead + Send>, Option<u64>) = if input.as_os_str() == "-" {
        (
            Box::new(BufReader::with_capacity(1 << 20, io::stdin())),
            None,
        )
    } else {
        let f = File::open(&input).with_context(|| format!("opening {}", input.display()))?;
        let size = f.metadata().ok().map(|m| m.len());
        (Box::new(BufReader::with_capacity(1 << 20, f)), size)
    };
    // Written on replay's writer thread: `Send`, so stdout unlocked (replay writes 64 KiB at
    // a time, so the lock taken per write costs nothing).
    let mut writer: Box<dyn Write + Send> = match &output {
        Some(p) if input.as_os_str() != "-" && same_file(p, &input) => anyhow::bail!(
            "the output {} is the input file: creating it would empty the input before it is read",
            p.display()
        ),
        Some(p) => Box::new(BufWriter::new(
            File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(BufWriter::new(io::stdout())),
    };

    // A progress bar only for a person watching a file being read.
    let bar = match size {
        Some(n) if io::stderr().is_terminal() => {
            let pb = ProgressBar::new(n);
            pb.set_style(
                ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            Some(pb)
        }
        _ => None,
    };
    let summary = replay::run(
        &mut state,
        reader,
        &mut writer,
        until,
        now,
        |r| {
            let msg = format!("{}: line {}: {}", input.display(), r.line, r.reason);
            match &bar {
                Some(pb) => pb.println(msg),
                None => eprintln!("{msg}"),
            }
        },
        |pos| {
            if let Some(pb) = &bar {
                pb.set_position(pos);
            }
        },
    )?;
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
    drop(writer);
    eprint!("{}", summary.render());
    Ok(())
}

/// Logs to stderr: `level` unless LEADFLOW_LOG is set; JSON lines or human-readable.
fn init_logs(level: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LEADFLOW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.with_ansi(io::stderr().is_terminal()).try_init()
    };
}

/// A flag set by SIGTERM or SIGINT.
fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    Ok(stop)
}

fn cmd_run(config: PathBuf) -> anyhow::Result<()> {
    serve_stages(config, leadflow::service::run)
}

fn cmd_notify(config: PathBuf) -> anyhow::Result<()> {
    serve_stages(config, leadflow::service::run_notify)
}

/// Loads the config, starts logging, signal handling and the HTTP endpoints, then runs
/// `stages` (`run`: every stage; `notify`: the notify stage alone) until a signal.
fn serve_stages(
    config: PathBuf,
    stages: fn(&Settings, Arc<AtomicBool>, leadflow::service::ServiceStats) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let settings = load_settings(&config)?;
    init_logs(&settings.service.log_level, settings.service.log_json);
    let stop = stop_flag()?;
    let stats = leadflow::service::ServiceStats::new()?;
    if let Some(addr) = settings.service.http_listen {
        let bound = leadflow::http::serve(addr, stats.clone(), Arc::clone(&stop))?;
        tracing::info!(%bound, "serving /metrics and /health/live");
    }
    stages(&settings, stop, stats)
}

fn cmd_dev_broker(
    config: Option<PathBuf>,
    port: Option<u16>,
    partitions: i32,
) -> anyhow::Result<()> {
    let settings = match &config {
        Some(p) => load_settings(p)?,
        None => Settings::from_toml("[funnel]\nmql_threshold = 100\n")?,
    };
    init_logs(&settings.service.log_level, settings.service.log_json);
    let stop = stop_flag()?;
    let broker = DevBroker::start(&settings.service.topics, partitions.max(1), port)?;
    println!("{}", broker.bootstrap());
    tracing::info!(
        bootstrap = broker.bootstrap(),
        partitions,
        topics = ?settings.service.topics.all(),
        "dev broker running; Ctrl-C stops it"
    );
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(())
}

fn cmd_gen(
    spec: leadflow::gen::GenSpec,
    output: Option<PathBuf>,
    kafka_config: Option<PathBuf>,
) -> anyhow::Result<()> {
    let events = leadflow::gen::generate(&spec);
    if let Some(cfg) = kafka_config {
        let settings = load_settings(&cfg)?;
        let n = leadflow::kafka::produce_events(&settings.service, &events)?;
        eprintln!("produced {n} events to {}", settings.service.brokers);
        return Ok(());
    }
    let mut writer: Box<dyn Write> = match &output {
        Some(p) => Box::new(BufWriter::new(
            File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(BufWriter::new(io::stdout().lock())),
    };
    for ev in &events {
        serde_json::to_writer(&mut writer, &leadflow::gen::to_json(ev))?;
        writer.write_all(b"\n")?;
    }
    writer.flush()?;
    Ok(())
}

fn cmd_demo(opts: leadflow::demo::DemoOptions) -> anyhow::Result<()> {
    // The feed is the demo's output; service logs only when something is wrong.
    init_logs("warn", false);
    let stop = stop_flag()?;
    leadflow::demo::run(&opts, stop)
}
