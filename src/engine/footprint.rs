//! Where a partition's memory goes, per component (issue 17, item 4): an estimate computed
//! from the structures themselves, so a bench can print it beside the process's RSS.
//!
//! Each heap allocation is counted at the size class mimalloc (the binary's allocator) serves
//! it from: 8 bytes, then multiples of 16 up to 64, then four classes per doubling, no header.
//! What RSS holds beyond the sum is the allocator's free space and fragmentation.

use std::mem::{size_of, size_of_val};

use super::lead::{Extra, Lead, Rare};
use super::{PartitionState, Timer};

/// Bytes mimalloc takes for a request of `n` bytes (0: no allocation): its size class, after
/// mimalloc's `mi_bin` on a 64-bit machine, where size classes above one word are whole
/// double words (its `MI_ALIGN2W`): one word, then an even number of words up to 8, then 4 classes per
/// doubling; above 512 KiB (its `MI_LARGE_MAX_OBJ_SIZE`), whole 4 KiB pages. Held to
/// mimalloc's own `mi_good_size` by the tests.
pub fn malloc_chunk(n: usize) -> u64 {
    if n == 0 {
        return 0;
    }
    if n > 512 << 10 {
        return n.next_multiple_of(4096) as u64;
    }
    let words = n.div_ceil(8);
    if words <= 8 {
        let words = if words == 1 {
            1
        } else {
            words.next_multiple_of(2)
        };
        return (words * 8) as u64;
    }
    let b = usize::BITS - 1 - (words - 1).leading_zeros(); // floor(log2(words - 1)) >= 3
    let step = 1usize << (b - 2);
    (words.div_ceil(step) * step * 8) as u64
}

/// The estimated bytes of one partition's state, per component.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    pub leads: u64,
    /// Leads with out-of-line state (`Extra`).
    pub with_extra: u64,
    /// `(component, bytes)`, in a fixed order.
    pub parts: Vec<(&'static str, u64)>,
}

impl Footprint {
    pub fn total(&self) -> u64 {
        self.parts.iter().map(|(_, b)| b).sum()
    }

    /// Adds another partition's figures (component by component).
    pub fn add(&mut self, other: &Footprint) {
        self.leads += other.leads;
        self.with_extra += other.with_extra;
        if self.parts.is_empty() {
            self.parts = other.parts.clone();
            return;
        }
        for ((_, a), (_, b)) in self.parts.iter_mut().zip(&other.parts) {
            *a += b;
        }
    }
}

fn vec_bytes<T>(v: &Vec<T>) -> u64 {
    malloc_chunk(v.capacity() * size_of::<T>())
}

fn list_bytes<T>(v: &[T]) -> u64 {
    malloc_chunk(std::mem::size_of_val(v))
}

fn rare_bytes(r: &Rare) -> u64 {
    malloc_chunk(size_of::<Rare>())
        + vec_bytes(&r.ids)
        + vec_bytes(&r.long_values)
        + r.long_values
            .iter()
            .map(|v| malloc_chunk(v.len()))
            .sum::<u64>()
}

impl PartitionState {
    /// Estimates this partition's memory per component (see the module's notes).
    pub fn footprint(&self) -> Footprint {
        let mut idents = 0;
        let mut contributions = 0;
        // The out-of-line box, its cooldowns (plain, keyed), clocks, SLA counters, recent
        // transitions, rare state, and the lists' count word and rounding.
        let mut extra = [0u64; 8];
        let mut with_extra = 0;
        for lead in &self.leads {
            // One allocation: the contributions count their bytes, the key and profile the
            // rest of its size class.
            let records = (lead.contributions().len() * 18) as u64;
            idents += malloc_chunk(lead.ident().byte_len()) - records;
            contributions += records;
            if let Some(e) = lead.extra_box() {
                with_extra += 1;
                extra[0] += malloc_chunk(size_of::<Extra>());
                // The lists' one allocation: each list its items' bytes, the count word
                // and the size class's rounding apart.
                let items = [
                    size_of_val(e.cooldowns()),
                    size_of_val(e.clocks()),
                    size_of_val(e.sla_started()),
                    size_of_val(e.recent_transitions()),
                ]
                .map(|b| b as u64);
                extra[1] += items[0];
                let keyed = e.lists().words().len() - e.lists().keyed_start();
                extra[2] += (keyed * 8) as u64;
                extra[3] += items[1];
                extra[4] += items[2];
                extra[5] += items[3];
                extra[7] +=
                    list_bytes(e.lists().words()) - items.iter().sum::<u64>() - (keyed * 8) as u64;
                extra[6] += e.rare.as_deref().map_or(0, rare_bytes);
            }
        }
        // A power-of-two bucket count at most 7/8 full: a 4-byte slot and a tag byte per
        // bucket, in one allocation (`index.rs`).
        let index = malloc_chunk(self.index.buckets() * 5);
        // B-tree nodes hold up to 11 timers and are about two thirds full on average.
        let timers = (self.timers.len() * size_of::<Timer>() * 3 / 2) as u64;
        let evicted = self
            .evicted
            .as_ref()
            .map_or(0, |f| malloc_chunk(f.words.len() * 8));
        Footprint {
            leads: self.leads.len() as u64,
            with_extra,
            parts: vec![
                // What is resident: a vector this large is mapped on its own, and pages
                // past its length are never touched.
                (
                    "lead (inline)",
                    (self.leads.len() * size_of::<Lead>()) as u64,
                ),
                ("index", index),
                ("keys and profiles", idents),
                ("  contributions", contributions),
                ("out-of-line box", extra[0]),
                ("  cooldowns", extra[1]),
                ("  keyed cooldowns", extra[2]),
                ("  SLA clocks", extra[3]),
                ("  SLA clock counts", extra[4]),
                ("  recent transitions", extra[5]),
                ("  rare state", extra[6]),
                ("  list count, rounding", extra[7]),
                ("timers", timers),
                ("evicted-key filter", evicted),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::test_support::{example_rules, upsert};

    #[test]
    fn malloc_chunks_follow_mimalloc_size_classes() {
        assert_eq!(malloc_chunk(0), 0);
        assert_eq!(malloc_chunk(1), 8);
        assert_eq!(malloc_chunk(9), 16);
        assert_eq!(
            malloc_chunk(17),
            32,
            "no 24-byte class: above 8, multiples of 16"
        );
        assert_eq!(malloc_chunk(40), 48);
        assert_eq!(malloc_chunk(64), 64);
        // Then 80, 96, 112, 128, 160, 192, 224, 256, 320, ...
        let classes: Vec<u64> = (65..=320).map(malloc_chunk).collect();
        let mut distinct = classes.clone();
        distinct.dedup();
        assert_eq!(distinct, vec![80, 96, 112, 128, 160, 192, 224, 256, 320]);
        assert_eq!(malloc_chunk(104), 112, "the out-of-line box");
    }

    #[test]
    fn malloc_chunks_are_mimallocs_own_size_classes() {
        let large = [
            65_536,
            100_000,
            262_144,
            524_288,
            524_289,
            600_000,
            (1 << 20) + 1,
        ];
        for n in (1..=20_000).chain(large) {
            // SAFETY: mi_good_size only computes; it allocates nothing.
            let good = unsafe { libmimalloc_sys::mi_good_size(n) } as u64;
            assert_eq!(malloc_chunk(n), good, "a request of {n} bytes");
        }
    }

    #[test]
    fn a_lead_counts_its_key_profile_and_contributions() {
        let mut st = PartitionState::new(example_rules());
        let mut out = Vec::new();
        let ev = upsert("e1", "lead1@x.io", 1_794_837_600_000);
        st.apply(&ev, &mut out);
        let f = st.footprint();
        assert_eq!(f.leads, 1);
        let part = |name: &str| {
            f.parts
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, b)| *b)
                .expect("component")
        };
        // 1 + 10 key, 1 profile length, 1 + 1 + 2 profile: 16 bytes, class 16.
        assert_eq!(part("keys and profiles"), 16);
        assert_eq!(part("  contributions"), 0, "an upsert scores no engagement");
        assert!(part("lead (inline)") >= size_of::<Lead>() as u64);
    }
}
