//! `leadflow replay`: JSON Lines in, JSON Lines out, through the same engine as Kafka mode.
//! Streams the input (memory grows with lead state only).

use std::fmt::Write as _;
use std::io::{BufRead, Write};

use anyhow::Context;

use crate::codec::json;
use crate::engine::{Applied, PartitionState, Prepared, Preparer, Stats};
use crate::model::event::{Event, Invalid};
use crate::model::funnel::Stage;
use crate::model::records::Output;
use crate::model::rules::Limits;

/// One rejected input line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub line: u64,
    pub reason: String,
}

/// Totals for the summary.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub lines: u64,
    pub leads: usize,
    pub records: u64,
    pub stats: Stats,
}

impl Summary {
    pub fn render(&self) -> String {
        let s = &self.stats;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "replay: {} lines, {} events ({} duplicates), {} invalid, {} leads, {} records",
            self.lines, s.events, s.duplicates, s.invalid, self.leads, self.records
        );
        let by_stage: Vec<String> = Stage::ALL
            .iter()
            .filter(|st| s.transitions_to[st.index()] > 0)
            .map(|st| format!("{}={}", st, s.transitions_to[st.index()]))
            .collect();
        let _ = writeln!(
            out,
            "transitions by stage: {} (rejected: {})",
            if by_stage.is_empty() {
                "none".to_string()
            } else {
                by_stage.join(" ")
            },
            s.rejected_transitions
        );
        let _ = writeln!(
            out,
            "sla records: warning={} breach={} met={}",
            s.sla[0], s.sla[1], s.sla[2]
        );
        if !s.invalid_by_reason.is_empty() {
            let reasons: Vec<String> = s
                .invalid_by_reason
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let _ = writeln!(out, "invalid by reason: {}", reasons.join(" "));
        }
        out
    }
}

/// One parsed input line: an event with its preparation when the reader was given a
/// [`Preparer`].
pub(crate) enum Parsed {
    Blank,
    Event(Event, Option<Prepared>),
    Invalid(Invalid),
}

/// Lines parsed by the reader thread: (parsed lines, bytes consumed by them).
pub(crate) type Batch = (Vec<Parsed>, u64);

const BATCH_LINES: usize = 2048;

/// Replays `input` into `output`. `on_invalid` hears each rejected line; `on_progress` the
/// bytes consumed so far (called every few thousand lines). With `until`, timers due before
/// it fire at the end. With `now`, events further ahead of it than `limits.max_future` are
/// invalid (`future_time`, SPEC §2).
///
/// Reading, JSON decoding and preparing each event for the state (`engine::Preparer`) run on a
/// second thread, one batch of lines ahead of the fold, and writing the output records as
/// JSON on a third: the fold is the longest of the three at scale, so it keeps a core to
/// itself and the other two share the second. The fold stays on this thread, in input
/// order, and the records are written in the order it made them.
///
/// Errors: reading the input or writing the output (the first that happens).
pub fn run<R: BufRead + Send, W: Write + Send>(
    state: &mut PartitionState,
    input: R,
    output: &mut W,
    until: Option<i64>,
    now: Option<i64>,
    mut on_invalid: impl FnMut(Rejected),
    mut on_progress: impl FnMut(u64),
) -> anyhow::Result<Summary> {
    let mut records = Vec::with_capacity(RECORDS_PER_SEND);
    let mut summary = Summary::default();
    let mut consumed = 0u64;
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<anyhow::Result<Batch>>(4);
        // Parsed batches go back to the reader to be freed there: the allocator frees fastest
        // on the thread that allocated (mimalloc hands a free from another thread back to
        // the owner, which collects it later).
        let (back_tx, back_rx) = std::sync::mpsc::channel::<Vec<Parsed>>();
        let limits = state.rules().limits.clone();
        // The reader prepares each event for the state (the key's and the id's hashes, the
        // rules' conditions): work the fold would otherwise do on the busier core.
        let preparer = state.preparer();
        scope.spawn(move || read_batches(input, &limits, now, Some(&preparer), tx, back_rx));
        let (out_tx, out_rx) = std::sync::mpsc::sync_channel::<Vec<Output>>(8);
        // Written batches come back to be freed here, on the thread that allocated their
        // records, for the same reason: freed by the writer, each block came back to this
        // thread to be collected, which took more of the fold's time than the frees do
        // (docs/performance.md, "Output batches freed where they were made").
        let (spent_tx, spent_rx) = std::sync::mpsc::channel::<Vec<Output>>();
        let writer = scope.spawn(move || write_records(out_rx, output, spent_tx));
        // Hands the records made so far to the writer; false once it has stopped (an error
        // it returns at the join below).
        let send = |records: &mut Vec<Output>| {
            let empty = match spent_rx.try_recv() {
                Ok(mut spent) => {
                    spent.clear();
                    spent
                }
                Err(_) => Vec::with_capacity(RECORDS_PER_SEND),
            };
            let full = std::mem::replace(records, empty);
            out_tx.send(full).is_ok()
        };
        let mut writing = true;
        'batches: for batch in rx {
            let (lines, bytes) = batch?;
            consumed += bytes;
            for (j, parsed) in lines.iter().enumerate() {
                // Cache hints for the leads of the events ahead (no effect on the output).
                state.hint_ahead(|d| match lines.get(j + d) {
                    Some(Parsed::Event(_, p)) => p.as_ref(),
                    _ => None,
                });
                summary.lines += 1;
                match parsed {
                    Parsed::Blank => continue, // e.g. a trailing newline: not an event
                    Parsed::Event(ev, p) => {
                        // Duplicates are counted by the engine; nothing else to do here.
                        let _: Applied = match p {
                            Some(p) => state.apply_prepared(ev, p, &mut records),
                            None => state.apply(ev, &mut records),
                        };
                    }
                    Parsed::Invalid(why) => {
                        state.note_invalid(why.code());
                        on_invalid(Rejected {
                            line: summary.lines,
                            reason: why.to_string(),
                        });
                    }
                }
                if records.len() >= RECORDS_PER_SEND && !send(&mut records) {
                    writing = false;
                    break 'batches;
                }
            }
            let _ = back_tx.send(lines);
            on_progress(consumed);
        }
        if writing {
            if let Some(t) = until {
                state.advance(t, &mut records);
            }
            send(&mut records);
        }
        drop(out_tx);
        summary.records = writer
            .join()
            .map_err(|_| anyhow::anyhow!("the output writer panicked"))??;
        Ok(())
    })?;
    on_progress(consumed);
    summary.leads = state.lead_count();
    summary.stats = state.stats().clone();
    Ok(summary)
}

/// Records handed to the writer thread at a time.
const RECORDS_PER_SEND: usize = 1024;

/// The writer thread: records to JSON lines in 64 KiB writes, until the fold is done; then a
/// flush. Each written batch goes back on `spent`, to be freed by the fold thread that made
/// it. Returns the number of records written.
fn write_records<W: Write>(
    batches: std::sync::mpsc::Receiver<Vec<Output>>,
    output: &mut W,
    spent: std::sync::mpsc::Sender<Vec<Output>>,
) -> anyhow::Result<u64> {
    let mut buf = Vec::with_capacity(72 * 1024);
    let mut written = 0u64;
    for batch in batches {
        for r in &batch {
            json::write_record(&mut buf, r);
            written += 1;
            if buf.len() >= 64 * 1024 {
                output.write_all(&buf).context("writing the output")?;
                buf.clear();
            }
        }
        let _ = spent.send(batch); // to be freed by the fold; gone if it has finished
    }
    output.write_all(&buf).context("writing the output")?;
    output.flush().context("flushing the output")?;
    Ok(written)
}

/// The reader thread: lines to parsed batches, until the input ends, a read fails, or the
/// fold stops listening. With `preparer`, each event comes prepared for its state.
pub(crate) fn read_batches<R: BufRead>(
    mut input: R,
    limits: &Limits,
    now: Option<i64>,
    preparer: Option<&Preparer>,
    tx: std::sync::mpsc::SyncSender<anyhow::Result<Batch>>,
    back: std::sync::mpsc::Receiver<Vec<Parsed>>,
) {
    let mut line = Vec::with_capacity(1024);
    let mut first = true;
    loop {
        while let Ok(done) = back.try_recv() {
            drop(done);
        }
        let mut batch = Vec::with_capacity(BATCH_LINES);
        let mut bytes = 0u64;
        while batch.len() < BATCH_LINES {
            line.clear();
            match input.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(n) => bytes += n as u64,
                Err(e) => {
                    let _ = tx.send(Err(anyhow::Error::new(e).context("reading the input")));
                    return;
                }
            }
            let mut text = trim_line(&line);
            if std::mem::take(&mut first) {
                // A UTF-8 byte order mark, as some Windows tools write: not part of the JSON.
                text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
            }
            batch.push(if text.is_empty() {
                Parsed::Blank
            } else if text.len() > limits.max_message_bytes {
                Parsed::Invalid(Invalid::TooLarge(text.len(), limits.max_message_bytes))
            } else {
                match json::decode_event(text).and_then(|ev| ev.admit(limits, now)) {
                    Ok(ev) => {
                        let p = preparer.map(|pr| pr.prepare(&ev));
                        Parsed::Event(ev, p)
                    }
                    Err(why) => Parsed::Invalid(why),
                }
            });
        }
        let last = batch.len() < BATCH_LINES;
        if !batch.is_empty() && tx.send(Ok((batch, bytes))).is_err() {
            return;
        }
        if last {
            return;
        }
    }
}

fn trim_line(line: &[u8]) -> &[u8] {
    let mut end = line.len();
    while end > 0 && matches!(line[end - 1], b'\n' | b'\r' | b' ' | b'\t') {
        end -= 1;
    }
    &line[..end]
}
