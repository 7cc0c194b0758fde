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
    // A line the input's buffer ends inside of, gathered until its end arrives.
    let mut split = Vec::new();
    let mut first = true;
    let parse = |line: &[u8], first: &mut bool| -> Parsed {
        let mut text = trim_line(line);
        if std::mem::take(first) {
            // A UTF-8 byte order mark, as some Windows tools write: not part of the JSON.
            text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
        }
        if text.is_empty() {
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
        }
    };
    let mut ended = false;
    loop {
        while let Ok(done) = back.try_recv() {
            drop(done);
        }
        let mut batch = Vec::with_capacity(BATCH_LINES);
        let mut bytes = 0u64;
        // Lines as `BufRead::read_until` gives them (the newline included; the last one
        // without, if the input does not end with one), but decoded where they lie in the
        // reader's buffer: no copy, unless one straddles two fills. Why: the copy and std's
        // byte search took 8% of the reader thread (docs/performance.md).
        while batch.len() < BATCH_LINES && !ended {
            let buf = match input.fill_buf() {
                Ok(buf) => buf,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = tx.send(Err(anyhow::Error::new(e).context("reading the input")));
                    return;
                }
            };
            if buf.is_empty() {
                ended = true;
                if !split.is_empty() {
                    bytes += split.len() as u64;
                    batch.push(parse(&split, &mut first));
                }
                break;
            }
            let Some(end) = memchr::memchr(b'\n', buf) else {
                split.extend_from_slice(buf);
                let n = buf.len();
                input.consume(n);
                continue;
            };
            bytes += end as u64 + 1;
            if split.is_empty() {
                batch.push(parse(&buf[..=end], &mut first));
            } else {
                split.extend_from_slice(&buf[..=end]);
                bytes += split.len() as u64 - (end as u64 + 1);
                batch.push(parse(&split, &mut first));
                split.clear();
            }
            input.consume(end + 1);
        }
        let last = ended || batch.len() < BATCH_LINES;
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What a line parsed to, comparable.
    fn shown(p: &Parsed) -> String {
        match p {
            Parsed::Blank => "blank".into(),
            Parsed::Event(ev, _) => format!("event {}", ev.event_id),
            Parsed::Invalid(why) => format!("invalid: {why}"),
        }
    }

    /// Every line `read_batches` parsed from `input` read through a buffer of `capacity`
    /// bytes, and the bytes it counted.
    fn read_all(input: &[u8], capacity: usize) -> (Vec<String>, u64) {
        let limits = crate::config::Settings::from_toml(include_str!("../examples/config.toml"))
            .expect("config")
            .rules
            .limits
            .clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(1024);
        let (_back_tx, back_rx) = std::sync::mpsc::channel();
        let reader = std::io::BufReader::with_capacity(capacity, input);
        read_batches(reader, &limits, None, None, tx, back_rx);
        let mut lines = Vec::new();
        let mut bytes = 0;
        for batch in rx {
            let (parsed, n) = batch.expect("no read error");
            assert!(parsed.len() <= BATCH_LINES);
            lines.extend(parsed.iter().map(shown));
            bytes += n;
        }
        (lines, bytes)
    }

    /// The lines as `BufRead::read_until` splits them (what the reader did before it read
    /// lines in place), each parsed on its own.
    fn model(input: &[u8]) -> Vec<String> {
        let limits = crate::config::Settings::from_toml(include_str!("../examples/config.toml"))
            .expect("config")
            .rules
            .limits
            .clone();
        let mut out = Vec::new();
        let mut reader = input;
        let mut first = true;
        loop {
            let mut line = Vec::new();
            if std::io::BufRead::read_until(&mut reader, b'\n', &mut line).expect("read") == 0 {
                return out;
            }
            let mut text = trim_line(&line);
            if std::mem::take(&mut first) {
                text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
            }
            out.push(shown(&if text.is_empty() {
                Parsed::Blank
            } else {
                match json::decode_event(text).and_then(|ev| ev.admit(&limits, None)) {
                    Ok(ev) => Parsed::Event(ev, None),
                    Err(why) => Parsed::Invalid(why),
                }
            }));
        }
    }

    fn line(kind: u8, n: usize) -> String {
        match kind {
            0 => format!(
                concat!(
                    r#"{{"event_id":"e{n}","lead_key":"l{n}@x.io","occurred_at":1794837600000,"#,
                    r#""source":"web","type":"page_view","#,
                    r#""attributes":{{"url":"https://x.io/{}"}}}}"#
                ),
                "p".repeat(n % 90),
                n = n
            ),
            1 => String::new(),
            2 => "  \t ".into(),
            3 => format!("not json {n}"),
            _ => format!(r#"{{"event_id":"e{n}"}}"#),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Lines read in place give what `read_until`'s lines give, through buffers from one
        /// byte (every line straddles fills) to larger than the input: events, blank and
        /// invalid lines, `\n` or `\r\n` ends, a last line with or without one, a byte
        /// order mark; and the bytes counted are the input's.
        #[test]
        fn lines_read_in_place_are_read_untils_lines(
            kinds in proptest::collection::vec((0u8..5, any::<bool>()), 0..40),
            last_newline in any::<bool>(),
            bom in any::<bool>(),
            capacity in prop_oneof![Just(1usize), 2usize..9, 9usize..300, Just(1 << 20)],
        ) {
            let mut input = if bom { b"\xEF\xBB\xBF".to_vec() } else { Vec::new() };
            for (n, &(kind, crlf)) in kinds.iter().enumerate() {
                input.extend_from_slice(line(kind, n).as_bytes());
                if n + 1 < kinds.len() || last_newline {
                    input.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
                }
            }
            let (lines, bytes) = read_all(&input, capacity);
            prop_assert_eq!(lines, model(&input));
            prop_assert_eq!(bytes, input.len() as u64);
        }
    }

    /// More lines than a batch holds, through a buffer that splits some of them: every line
    /// once, in order, over several batches.
    #[test]
    fn lines_past_a_batch_are_all_read() {
        let mut input = String::new();
        for n in 0..BATCH_LINES * 2 + 5 {
            input.push_str(&line((n % 5) as u8, n));
            input.push('\n');
        }
        let (lines, bytes) = read_all(input.as_bytes(), 100);
        assert_eq!(lines.len(), BATCH_LINES * 2 + 5);
        assert_eq!(lines, model(input.as_bytes()));
        assert_eq!(bytes, input.len() as u64);
    }
}
