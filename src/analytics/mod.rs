//! `leadflow report`: the funnel, cohorts, velocity, breakdowns, SLA compliance and revenue
//! of a history, for one lead definition or several side by side (docs/analytics.md).
//!
//! Each definition runs its own engine over the same events (read once, shared between the
//! definitions' threads); a collector keeps what the engine emits, and `measures` turns that
//! into the report. Reading and folding are here; the measures and the renderings are pure.

mod collect;
pub mod config;
pub mod html;
pub mod live;
mod measures;
pub mod text;

use std::io::BufRead;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use anyhow::Context;

pub use config::ReportSettings;
pub use measures::{
    percentile, Bucket, Cohort, Comparison, Conversion, DefinitionReport, Funnel, Headline,
    HistoryInfo, Money, Outcomes, Percentiles, Quality, Reached, Report, Revenue, Row,
    SettingsInfo, Sla, SlaRow, Spread, Velocity, SCHEMA,
};

use crate::codec::avro::InternalRecord;
use crate::config::Settings;
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

/// Where the history comes from.
pub enum History<R> {
    /// JSON Lines in the replay format (SPEC §2).
    Lines(R),
    /// The internal topic, each partition from its earliest offset to its end when the report
    /// started, read with `isolation.level=read_committed`.
    Kafka(Box<Settings>),
}

/// A batch of history, shared by every definition's fold.
enum Batch {
    Lines(Vec<Parsed>),
    /// `(partition, record)`; `None`: undecodable.
    Log(Vec<(u32, Option<InternalRecord>)>),
}

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
                    match parsed {
                        Parsed::Blank => {}
                        Parsed::Event(ev) => self.event(0, ev),
                        Parsed::Invalid(why) => {
                            self.invalid += 1;
                            self.state(0).note_invalid(why.code());
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
                        None => self.invalid += 1,
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
/// numbers (at most 50).
pub fn parse_sweep(text: &str) -> anyhow::Result<(String, Vec<f64>)> {
    let (key, values) = text.split_once('=').with_context(|| {
        format!("--sweep {text}: expected KEY=V1,V2,... such as funnel.mql_threshold=60,80,100")
    })?;
    let key = key.trim();
    anyhow::ensure!(
        key.starts_with("scoring.") || key.starts_with("funnel."),
        "--sweep {key}: only numeric keys of [scoring] and [funnel] can be swept, e.g. \
         funnel.mql_threshold or scoring.engagement[0].points"
    );
    let values: Vec<f64> = values
        .split(',')
        .map(|v| {
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .with_context(|| format!("--sweep {key}: {v:?} is not a number"))
        })
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(
        (1..=50).contains(&values.len()),
        "--sweep {key}: give 1 to 50 values"
    );
    Ok((key.to_string(), values))
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
    history: History<R>,
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
                scope.spawn(move || crate::replay::read_batches(input, &limits, None, tx, back_rx));
                for batch in rx {
                    let (lines, _) = batch?;
                    if let Some(Batch::Lines(done)) = dispatch(Batch::Lines(lines)) {
                        let _ = back_tx.send(done);
                    }
                }
            }
            History::Kafka(settings) => read_log(&settings, &mut |b| {
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
            end_at: facts.end,
        },
        settings: SettingsInfo::new(&options.settings),
        definitions: defs,
        comparison,
    })
}

/// Reads every partition of the internal topic from its earliest offset up to its end as of
/// now, in batches of (partition, record).
fn read_log(
    settings: &Settings,
    sink: &mut dyn FnMut(Vec<(u32, Option<InternalRecord>)>),
) -> anyhow::Result<()> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Message, Offset, TopicPartitionList};
    use std::time::{Duration, Instant};

    let svc = &settings.service;
    let topic = &svc.topics.internal;
    let consumer: BaseConsumer = crate::kafka::client_config(svc)
        .set("group.id", "leadflow-report")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false")
        .create()
        .context("creating the Kafka consumer for the report")?;
    let timeout = Duration::from_secs(30);
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| format!("reading the metadata of {topic} from {}", svc.brokers))?;
    let parts: Vec<i32> = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    anyhow::ensure!(
        !parts.is_empty(),
        "topic {topic} has no partitions on {} (is it the internal topic of this config?)",
        svc.brokers
    );
    let mut tpl = TopicPartitionList::new();
    let mut ends = std::collections::HashMap::new();
    for &p in &parts {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .with_context(|| format!("reading the offsets of {topic}/{p}"))?;
        if low > 0 {
            tracing::warn!(
                partition = p,
                log_start = low,
                "the internal log no longer starts at 0: the report covers only what is left"
            );
        }
        if high > low {
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .context("assigning a partition")?;
        }
    }
    consumer
        .assign(&tpl)
        .context("assigning the internal topic")?;
    let mut batch = Vec::with_capacity(2048);
    let mut last_progress = Instant::now();
    while !ends.is_empty() {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                last_progress = Instant::now();
                let p = m.partition();
                let rec = crate::codec::avro::decode_internal(m.payload().unwrap_or(&[])).ok();
                batch.push((p as u32, rec));
                if ends.get(&p).is_some_and(|end| m.offset() + 1 >= *end) {
                    ends.remove(&p);
                }
                if batch.len() >= 2048 {
                    sink(std::mem::replace(&mut batch, Vec::with_capacity(2048)));
                }
            }
            Some(Err(e)) => return Err(e).context("reading the internal topic"),
            None => {
                // Transaction markers and aborted records take offsets but never arrive: a
                // partition whose position passed its end is done.
                let pos = consumer.position().context("reading positions")?;
                for el in pos.elements_for_topic(topic) {
                    if let (Offset::Offset(o), Some(end)) = (el.offset(), ends.get(&el.partition()))
                    {
                        if o >= *end {
                            ends.remove(&el.partition());
                        }
                    }
                }
                anyhow::ensure!(
                    last_progress.elapsed() < Duration::from_secs(60),
                    "no records from {topic} for 60 s while partitions {:?} are not read to their end",
                    ends.keys().collect::<Vec<_>>()
                );
            }
        }
    }
    if !batch.is_empty() {
        sink(batch);
    }
    Ok(())
}
