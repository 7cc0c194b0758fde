//! `leadflow report`: the funnel, cohorts, velocity, breakdowns, SLA compliance and revenue
//! of a history, for one lead definition or several side by side (docs/analytics.md).
//!
//! Each definition runs its own engine over the same events (read once, shared between the
//! definitions' threads); a collector keeps what the engine emits, and `measures` turns that
//! into the report. Reading files and folding are here (the Kafka reader is
//! `kafka::history`, so this module needs nothing of Kafka); the measures and the renderings
//! are pure. Its settings, `[report]`, are `config` (`src/config/report.rs`, beside the other
//! sections).

mod collect;
pub use crate::config::report as config;
pub mod html;
pub mod live;
mod measures;
pub mod text;

use std::io::BufRead;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

pub use config::ReportSettings;
pub use measures::{
    percentile, Bucket, Cohort, Comparison, Conversion, DefinitionReport, Funnel, Headline,
    HistoryInfo, Money, Outcomes, Percentiles, Quality, Reached, Report, Revenue, Row,
    SettingsInfo, Sla, SlaRow, Spread, Velocity, SCHEMA,
};

use crate::codec::avro::InternalRecord;
use crate::config::{invalid, ConfigError, Settings};
use crate::engine::PartitionState;
use crate::model::event::Event;
use crate::model::records::Output;
use crate::replay::Parsed;
use collect::{Collector, Facts};

/// One lead definition to measure: a config and what to call it.
pub struct Definition {
    /// A config file name, or `KEY=VALUE` for a sweep point.
    pub label: String,
    pub settings: Settings,
}

/// `(partition, record)` pairs of an internal log; `None`: an undecodable record.
pub type LogBatch = Vec<(u32, Option<InternalRecord>)>;

/// Reads a whole log, handing each batch to the sink in log order per partition.
pub type LogReader<'a> = Box<dyn FnOnce(&mut dyn FnMut(LogBatch)) -> anyhow::Result<()> + 'a>;

/// Where the history comes from.
pub enum History<'a, R> {
    /// JSON Lines in the replay format (SPEC §2).
    Lines(R),
    /// An internal log (the Kafka reader is `kafka::history::read_internal_log`); each
    /// partition folds on its own engine, as in the service.
    Log(LogReader<'a>),
}

/// A batch of history, shared by every definition's fold.
enum Batch {
    Lines(Vec<Parsed>),
    /// `(partition, record)`; `None`: undecodable.
    Log(LogBatch),
}

/// How many invalid lines a report names (all are counted).
pub const MAX_INVALID_SHOWN: usize = 20;

/// One definition's engines (one per partition) and collector.
struct Folder {
    label: String,
    definition: String,
    settings: Settings,
    states: Vec<PartitionState>,
    collector: Collector,
    /// Kept by the first definition only (the same for all).
    facts: Option<Facts>,
    invalid: u64,
    /// Lines read (blank ones included), for the line numbers of invalid ones.
    lines: u64,
    /// The first invalid lines: (line number, reason); and all of them by reason code.
    invalid_lines: Vec<(u64, String)>,
    invalid_by_reason: std::collections::BTreeMap<&'static str, u64>,
    out: Vec<Output>,
}

impl Folder {
    fn new(def: Definition, facts: Option<Facts>) -> Folder {
        let collector = Collector::new(&def.settings.rules);
        Folder {
            label: def.label,
            definition: def.settings.definition.clone(),
            states: Vec::new(),
            collector,
            facts,
            invalid: 0,
            lines: 0,
            invalid_lines: Vec::new(),
            invalid_by_reason: Default::default(),
            out: Vec::new(),
            settings: def.settings,
        }
    }

    fn state(&mut self, p: u32) -> &mut PartitionState {
        while self.states.len() <= p as usize {
            self.states
                .push(PartitionState::new(Arc::clone(&self.settings.rules)));
        }
        &mut self.states[p as usize]
    }

    fn event(&mut self, p: u32, ev: &Event) {
        if let Some(f) = &mut self.facts {
            f.observe(ev);
        }
        let mut out = std::mem::take(&mut self.out);
        self.state(p).apply(ev, &mut out);
        if !out.is_empty() {
            self.collector.observe(Some(ev), &out);
            out.clear();
        }
        self.out = out;
    }

    fn fold(&mut self, batch: &Batch) {
        match batch {
            Batch::Lines(lines) => {
                for parsed in lines {
                    self.lines += 1;
                    match parsed {
                        Parsed::Blank => {}
                        // Not prepared: each definition's state hashes with its own seed.
                        Parsed::Event(ev, _) => self.event(0, ev),
                        Parsed::Invalid(why) => {
                            self.invalid += 1;
                            self.state(0).note_invalid(why.code());
                            *self.invalid_by_reason.entry(why.code()).or_default() += 1;
                            if self.facts.is_some() && self.invalid_lines.len() < MAX_INVALID_SHOWN
                            {
                                self.invalid_lines.push((self.lines, why.to_string()));
                            }
                        }
                    }
                }
            }
            Batch::Log(records) => {
                for (p, rec) in records {
                    match rec {
                        Some(InternalRecord::Event(ev)) => self.event(*p, ev),
                        Some(InternalRecord::Tick(t)) => {
                            let mut out = std::mem::take(&mut self.out);
                            self.state(*p).advance(*t, &mut out);
                            self.collector.observe(None, &out);
                            out.clear();
                            self.out = out;
                        }
                        None => {
                            self.invalid += 1;
                            *self.invalid_by_reason.entry("undecodable").or_default() += 1;
                        }
                    }
                }
            }
        }
    }

    fn created(&self) -> u64 {
        self.states
            .iter()
            .map(|s| s.lead_count() as u64 + s.stats().evicted.iter().sum::<u64>())
            .sum()
    }
}

/// Splits `--sweep KEY=V1,V2,...`: the key must be under `scoring.` or `funnel.`, the values
/// numbers (1 to 50). Errors are config errors naming `--sweep`. That the key holds a number
/// in the base config is checked by [`check_sweep_key`].
pub fn parse_sweep(text: &str) -> Result<(String, Vec<f64>), ConfigError> {
    let bad = |value: &str, allowed: &str| invalid("--sweep", value, allowed);
    let (key, values) = text
        .split_once('=')
        .ok_or_else(|| bad(text, "KEY=V1,V2,... such as funnel.mql_threshold=60,80,100"))?;
    let key = key.trim();
    if !(key.starts_with("scoring.") || key.starts_with("funnel.")) {
        return Err(bad(
            key,
            "only numeric keys of [scoring] and [funnel] can be swept, e.g. \
             funnel.mql_threshold or scoring.engagement[0].points",
        ));
    }
    let values: Vec<f64> = values
        .split(',')
        .map(|v| {
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| bad(v, &format!("{key}: each value must be a number")))
        })
        .collect::<Result<_, _>>()?;
    if !(1..=50).contains(&values.len()) {
        return Err(bad(text, "give 1 to 50 values"));
    }
    Ok((key.to_string(), values))
}

/// Checks that `key` holds a number in the base config `toml` (so a sweep never turns a
/// boolean, a string or a missing rule into something else): an error names what is there.
pub fn check_sweep_key(toml: &str, key: &str) -> Result<(), ConfigError> {
    use ::config::ValueKind;
    let cfg = ::config::Config::builder()
        .add_source(::config::File::from_str(toml, ::config::FileFormat::Toml))
        .build()
        .map_err(|e| ConfigError::Source(e.to_string()))?;
    let found = match cfg.get::<::config::Value>(key) {
        Ok(v) => match v.kind {
            ValueKind::I64(_)
            | ValueKind::I128(_)
            | ValueKind::U64(_)
            | ValueKind::U128(_)
            | ValueKind::Float(_) => return Ok(()),
            ValueKind::Boolean(b) => format!("the boolean {b}"),
            ValueKind::String(s) => format!("the string {s:?}"),
            ValueKind::Table(_) => "a table".to_string(),
            ValueKind::Array(_) => "a list".to_string(),
            ValueKind::Nil => "nothing".to_string(),
        },
        Err(_) => "nothing (set it in the config first; list indexes start at 0)".to_string(),
    };
    Err(invalid(
        "--sweep",
        key,
        format!("the base config holds {found} there; only keys with a number can be swept"),
    ))
}

/// Options of one report.
pub struct Options {
    pub settings: ReportSettings,
    /// Shown as the history's source.
    pub source: String,
}

/// Runs every definition over `history` and builds the report. The events are read once;
/// with several definitions, each folds on its own thread.
pub fn run<R: BufRead + Send>(
    definitions: Vec<Definition>,
    history: History<'_, R>,
    options: &Options,
) -> anyhow::Result<Report> {
    anyhow::ensure!(!definitions.is_empty(), "no definition to report on");
    let limits = definitions[0].settings.rules.limits.clone();
    let mut folders: Vec<Folder> = definitions
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            let facts = (i == 0).then(|| Facts::new(&options.settings.source_attribute));
            Folder::new(d, facts)
        })
        .collect();

    std::thread::scope(|scope| -> anyhow::Result<()> {
        // The first definition folds on this thread; every other on its own.
        let (first, rest) = folders.split_first_mut().expect("at least one");
        let mut senders: Vec<SyncSender<Arc<Batch>>> = Vec::new();
        for folder in rest.iter_mut() {
            let (tx, rx): (SyncSender<Arc<Batch>>, Receiver<Arc<Batch>>) = sync_channel(8);
            senders.push(tx);
            scope.spawn(move || {
                for batch in rx {
                    folder.fold(&batch);
                }
            });
        }
        // Returns a batch once every fold is done with it, for the reader to free.
        let mut dispatch = |batch: Batch| -> Option<Batch> {
            let batch = Arc::new(batch);
            for tx in &senders {
                // A fold thread only stops early by panicking, which the scope reports.
                let _ = tx.send(Arc::clone(&batch));
            }
            first.fold(&batch);
            Arc::try_unwrap(batch).ok()
        };
        match history {
            History::Lines(input) => {
                let (tx, rx) = sync_channel::<anyhow::Result<crate::replay::Batch>>(4);
                // Batches go back to the reader to be freed there: glibc frees fastest on the
                // thread (arena) that allocated them (as in replay).
                let (back_tx, back_rx) = std::sync::mpsc::channel::<Vec<Parsed>>();
                let limits = limits.clone();
                scope.spawn(move || {
                    crate::replay::read_batches(input, &limits, None, None, tx, back_rx)
                });
                for batch in rx {
                    let (lines, _) = batch?;
                    if let Some(Batch::Lines(done)) = dispatch(Batch::Lines(lines)) {
                        let _ = back_tx.send(done);
                    }
                }
            }
            History::Log(read) => read(&mut |b| {
                dispatch(Batch::Log(b));
            })?,
        }
        Ok(())
    })?;

    let facts = folders[0]
        .facts
        .take()
        .expect("the first folder keeps the facts");
    let invalid = folders[0].invalid;
    let invalid_lines = std::mem::take(&mut folders[0].invalid_lines);
    let invalid_by_reason = std::mem::take(&mut folders[0].invalid_by_reason);
    let mut defs = Vec::with_capacity(folders.len());
    for f in &folders {
        defs.push(measures::build(
            measures::RunResult {
                label: f.label.clone(),
                definition: f.definition.clone(),
                rules: &f.settings.rules,
                collector: &f.collector,
                created: f.created(),
            },
            &facts,
            &options.settings,
        ));
    }
    let comparison = measures::compare(&defs);
    Ok(Report {
        schema: SCHEMA,
        generated_by: format!("leadflow {}", env!("CARGO_PKG_VERSION")),
        history: HistoryInfo {
            source: options.source.clone(),
            events: facts.events,
            invalid,
            invalid_by_reason,
            invalid_lines,
            end_at: facts.end,
        },
        settings: SettingsInfo::new(&options.settings),
        definitions: defs,
        comparison,
    })
}
