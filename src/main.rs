use std::fs::File;
use std::io::{self, BufReader, BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use leadflow::config::Settings;
use leadflow::engine::PartitionState;
use leadflow::replay;

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
        /// Write records here instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Validate a config file and print a short summary.
    CheckConfig {
        /// Config file (TOML).
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Replay {
            config,
            input,
            until,
            output,
        } => cmd_replay(config, input, until, output),
        Command::CheckConfig { config } => load_settings(&config).map(|s| {
            print!("{}: ok\n{}", config.display(), s.summary());
        }),
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

fn load_settings(path: &std::path::Path) -> anyhow::Result<Settings> {
    Settings::load(path).map_err(anyhow::Error::from)
}

fn cmd_replay(
    config: PathBuf,
    input: PathBuf,
    until: Option<i64>,
    output: Option<PathBuf>,
) -> anyhow::Result<()> {
    let settings = load_settings(&config)?;
    let mut state = PartitionState::new(settings.rules.clone());

    let (reader, size): (Box<dyn io::BufRead>, Option<u64>) = if input.as_os_str() == "-" {
        (Box::new(io::stdin().lock()), None)
    } else {
        let f = File::open(&input).with_context(|| format!("opening {}", input.display()))?;
        let size = f.metadata().ok().map(|m| m.len());
        (Box::new(BufReader::with_capacity(1 << 20, f)), size)
    };
    let mut writer: Box<dyn Write> = match &output {
        Some(p) => Box::new(BufWriter::new(
            File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(BufWriter::new(io::stdout().lock())),
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
