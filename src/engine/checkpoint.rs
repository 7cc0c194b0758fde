//! A snapshot in progress, copy-on-write: it captures the state at one log position while the
//! state goes on folding, so a checkpoint costs the fold small slices instead of one long stall
//! (a full encode of 1M leads takes about half a second).
//!
//! At the start the head (counters, clock, filter) and the timers are encoded whole; they are
//! small. The leads follow in their order at the start, a few at a time ([`Pending::step`]).
//! A lead that is about to change, move or go before its turn is encoded first, as it still is
//! ([`Pending::touch`]), and its bytes wait for their turn. The result is byte for byte what
//! [`PartitionState::encode_snapshot`] returns at the start (a test checks it under evictions).
//!
//! The output is a list of chunks of about 1 MiB, each allocated once (growing one buffer of
//! hundreds of MB would copy it inside one step). The caller takes them as they fill
//! ([`Pending::take_chunks`]) and writes them while the rest is encoded, so a checkpoint holds
//! about one upload part, not the whole snapshot. The CRC is computed step by step too: one
//! pass over hundreds of MB would be its own stall.

use hashbrown::HashMap;

use super::snapshot::{encode_lead, W};
use super::{Lead, PartitionState};
use crate::model::rules::Ruleset;

/// The size at which the output moves on to a new chunk (the next lead still goes into the
/// current one, which has room for it in nearly every case).
/// (Small in unit tests, so they cross many chunks.)
pub const CHUNK: usize = if cfg!(test) { 4096 } else { 1 << 20 };
/// A chunk's room past [`CHUNK`]: a snapshot larger than both went in more than one chunk.
pub const CHUNK_SLACK: usize = if cfg!(test) { 512 } else { 64 << 10 };

pub(super) struct Pending {
    position: i64,
    /// Full chunks, in order; `out` is the one being written.
    chunks: Vec<Vec<u8>>,
    /// Head and the leads emitted so far (after `chunks`).
    out: W,
    /// `out[..hashed]` is in `crc`.
    hashed: usize,
    crc: crc32fast::Hasher,
    /// The timers section as it was at the start; it follows the leads.
    timers: W,
    /// Leads at the start; `next` is the position of the next one to emit.
    len: usize,
    next: usize,
    /// Bit i: the lead now at position i is unchanged since the start and not yet encoded.
    owed: Vec<u64>,
    /// Leads encoded early (before they changed, moved or went), by position at the start.
    early: W,
    early_at: HashMap<u32, (usize, usize)>,
}

impl Pending {
    /// Encodes the head and the timers of `st` and owes every lead.
    pub(super) fn start(st: &PartitionState, position: i64) -> Pending {
        let len = st.leads.len();
        let mut out = W(Vec::with_capacity(CHUNK + CHUNK_SLACK));
        st.encode_head(&mut out, position);
        let mut timers = W(Vec::new());
        st.encode_timers(&mut timers);
        let mut owed = vec![u64::MAX; len.div_ceil(64)];
        if !len.is_multiple_of(64) {
            if let Some(last) = owed.last_mut() {
                *last = (1u64 << (len % 64)) - 1;
            }
        }
        Pending {
            position,
            chunks: Vec::new(),
            out,
            hashed: 0,
            crc: crc32fast::Hasher::new(),
            timers,
            len,
            next: 0,
            owed,
            early: W(Vec::new()),
            early_at: HashMap::new(),
        }
    }

    /// The log position the snapshot is taken at.
    pub(super) fn position(&self) -> i64 {
        self.position
    }

    fn take_owed(&mut self, i: usize) -> bool {
        if i >= self.len {
            return false;
        }
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        let owed = self.owed[word] & bit != 0;
        self.owed[word] &= !bit;
        owed
    }

    /// Call before the lead at position `i` changes, moves or is removed: keeps it as it was
    /// at the start if it is still owed.
    pub(super) fn touch(&mut self, rules: &Ruleset, leads: &[Lead], i: usize) {
        if i < self.next || !self.take_owed(i) {
            return;
        }
        let from = self.early.0.len();
        encode_lead(&mut self.early, rules, &leads[i]);
        self.early_at.insert(i as u32, (from, self.early.0.len()));
    }

    /// Emits up to `max` more leads, in their order at the start; true once all are.
    pub(super) fn step(&mut self, rules: &Ruleset, leads: &[Lead], max: usize) -> bool {
        let end = self.len.min(self.next.saturating_add(max));
        while self.next < end {
            let i = self.next;
            if self.out.0.len() >= CHUNK {
                self.next_chunk();
            }
            if self.take_owed(i) {
                encode_lead(&mut self.out, rules, &leads[i]);
            } else if let Some((a, b)) = self.early_at.remove(&(i as u32)) {
                self.out.0.extend_from_slice(&self.early.0[a..b]);
            } else {
                // Every lead at the start is either still in place (owed) or was encoded
                // early; a gap would be a bug in the hooks, and the snapshot would not decode.
                debug_assert!(false, "lead {i} of the snapshot is neither owed nor kept");
            }
            self.next += 1;
        }
        self.crc.update(&self.out.0[self.hashed..]);
        self.hashed = self.out.0.len();
        if self.early_at.is_empty() && !self.early.0.is_empty() {
            self.early.0 = Vec::new();
        }
        self.next == self.len
    }

    fn next_chunk(&mut self) {
        self.crc.update(&self.out.0[self.hashed..]);
        self.hashed = 0;
        let full = std::mem::replace(&mut self.out, W(Vec::with_capacity(CHUNK + CHUNK_SLACK)));
        self.chunks.push(full.0);
    }

    /// The full chunks so far, in order; later ones and [`Pending::finish`]'s follow them.
    pub(super) fn take_chunks(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.chunks)
    }

    /// The rest of the snapshot (after the chunks taken by [`Pending::take_chunks`]), as
    /// chunks to be written one after the other (after [`Pending::step`] returned true).
    pub(super) fn finish(mut self) -> Vec<Vec<u8>> {
        self.crc.update(&self.out.0[self.hashed..]);
        self.crc.update(&self.timers.0);
        let crc = self.crc.finalize();
        let mut tail = self.timers;
        tail.u32(crc);
        self.chunks.push(self.out.0);
        self.chunks.push(tail.0);
        self.chunks.retain(|c| !c.is_empty());
        self.chunks
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::config::Settings;
    use crate::engine::PartitionState;
    use crate::gen::{self, GenSpec};
    use crate::model::event::Event;

    fn events(seed: u64, n: u64, leads: u64) -> Vec<Event> {
        gen::generate(&GenSpec {
            seed,
            events: n,
            leads,
            start_ms: 1_767_225_600_000,
            span_ms: 30 * 86_400_000,
        })
    }

    /// The example config with eviction by count and by age, so leads move and go while a
    /// snapshot is in progress.
    fn rules(extra: &str) -> Arc<crate::model::rules::Ruleset> {
        let toml = format!("{}\n{extra}", include_str!("../../examples/config.toml"));
        Settings::from_toml(&toml).expect("config").rules
    }

    /// For several start points and step sizes, with events applied between the steps: the
    /// incremental snapshot equals the full encode at its start, byte for byte.
    #[test]
    fn a_snapshot_in_progress_is_the_state_at_its_start() {
        for limits in [
            "",
            "[limits]\nmax_leads_per_partition = 150\n",
            "[limits]\nevict_inactive_after = \"3d\"\nevict_terminal_after = \"1d\"\n",
        ] {
            let rules = rules(limits);
            let evs = events(7, 6_000, 400);
            for (cut, step) in [(1_000usize, 1usize), (2_500, 7), (4_000, 64), (0, 3)] {
                let mut st = PartitionState::new(Arc::clone(&rules));
                let mut out = Vec::new();
                for ev in &evs[..cut] {
                    st.apply(ev, &mut out);
                }
                let expected = st.encode_snapshot(cut as i64);
                st.begin_snapshot(cut as i64);
                assert_eq!(st.snapshot_in_progress(), Some(cut as i64));
                // Chunks taken as they fill (as the service streams them), then the rest.
                let mut taken: Vec<Vec<u8>> = Vec::new();
                let mut done = None;
                for ev in &evs[cut..] {
                    st.apply(ev, &mut out);
                    if done.is_none() {
                        done = st.snapshot_step(step);
                        if done.is_none() {
                            taken.extend(st.take_snapshot_chunks());
                        }
                    }
                }
                while done.is_none() {
                    done = st.snapshot_step(step);
                    if done.is_none() {
                        taken.extend(st.take_snapshot_chunks());
                    }
                }
                let (pos, chunks) = done.expect("complete");
                assert!(
                    cut == 0 || !taken.is_empty(),
                    "chunks were taken on the way"
                );
                taken.extend(chunks);
                assert!(cut == 0 || taken.len() > 2, "the test crosses chunks");
                let bytes = taken.concat();
                assert_eq!(pos, cut as i64);
                assert!(
                    bytes == expected,
                    "limits {limits:?}, cut {cut}, step {step}: {} bytes, expected {}",
                    bytes.len(),
                    expected.len()
                );
                assert_eq!(st.snapshot_in_progress(), None);
                if !limits.is_empty() {
                    let evicted: u64 = st.stats().evicted.iter().sum();
                    assert!(
                        evicted > 0,
                        "limits {limits:?} evicted nothing: test the moves"
                    );
                }
                // And it restores to a state that folds on like the original.
                let (restored, at) =
                    PartitionState::decode_snapshot(Arc::clone(&rules), &bytes).expect("decode");
                assert_eq!(at, cut as i64);
                assert_eq!(restored.encode_snapshot(at), expected);
            }
        }
    }

    #[test]
    fn an_empty_state_and_a_cancelled_snapshot() {
        let rules = rules("");
        let mut st = PartitionState::new(Arc::clone(&rules));
        st.begin_snapshot(0);
        let (_, chunks) = st.snapshot_step(10).expect("nothing to step");
        assert_eq!(
            chunks.concat(),
            PartitionState::new(Arc::clone(&rules)).encode_snapshot(0)
        );
        st.begin_snapshot(5);
        st.cancel_snapshot();
        assert_eq!(st.snapshot_step(10), None);
    }
}
