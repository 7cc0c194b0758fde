//! The lead index: lead key hash → position in the dense lead vector.
//!
//! An open-addressing table with linear probing, a one-byte tag and a 4-byte position per
//! bucket, at most 7/8 full: the memory of the `hashbrown::HashTable<u32>` it replaces (5
//! bytes a bucket in one allocation, the same power-of-two bucket counts). Why our own: a bucket's address
//! follows from the hash alone, so [`LeadIndex::prefetch`] can start loading it several events
//! ahead; hashbrown gives no way to, and at 1M leads its lookups inside the other hints waited
//! on two cold lines (the control bytes, then the slot) per event (docs/performance.md).
//!
//! Keys are not stored: callers compare a candidate position's lead key themselves (`eq`) and
//! hash a position's key again when the table grows or an entry is removed (`rehash`).

/// Tag of an empty bucket; a used bucket's tag is never 0.
const EMPTY: u8 = 0;

/// Buckets for `n` entries at most 7/8 full (hashbrown's rule, so the memory is the same).
fn buckets_for(n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    let wanted = n
        .checked_mul(8)
        .map(|x| x.div_ceil(7))
        .unwrap_or(usize::MAX);
    wanted.max(8).next_power_of_two()
}

/// The tag kept for hash `h`: its top byte, never [`EMPTY`]. The bucket comes from the low
/// bits, so the two are independent.
#[inline]
fn tag(h: u64) -> u8 {
    ((h >> 56) as u8).max(1)
}

#[derive(Clone, Debug, Default)]
pub(super) struct LeadIndex {
    /// One allocation, as hashbrown's (two measured 2 MiB more resident at any size): the
    /// buckets' positions, then their tags packed four to a word.
    words: Box<[u32]>,
    buckets: usize,
    len: usize,
}

impl LeadIndex {
    /// Buckets allocated (0 before the first insert).
    pub(super) fn buckets(&self) -> usize {
        self.buckets
    }

    #[inline]
    fn mask(&self) -> usize {
        self.buckets.wrapping_sub(1)
    }

    #[inline]
    fn tag_at(&self, b: usize) -> u8 {
        (self.words[self.buckets + b / 4] >> (b % 4 * 8)) as u8
    }

    #[inline]
    fn set_tag(&mut self, b: usize, t: u8) {
        let w = &mut self.words[self.buckets + b / 4];
        let shift = b % 4 * 8;
        *w = *w & !(0xff << shift) | u32::from(t) << shift;
    }

    /// Starts loading the bucket where a lookup of hash `h` begins (its tag and its slot).
    /// A hint: changes nothing.
    #[inline]
    pub(super) fn prefetch(&self, h: u64) {
        if self.buckets == 0 {
            return;
        }
        let b = h as usize & self.mask();
        super::lead::prefetch_bytes(self.words[b..].as_ptr().cast(), 4);
        super::lead::prefetch_bytes(self.words[self.buckets + b / 4..].as_ptr().cast(), 1);
    }

    /// The bucket holding the entry under `h` for which `eq` holds, if any.
    #[inline]
    fn find_bucket(&self, h: u64, mut eq: impl FnMut(u32) -> bool) -> Option<usize> {
        if self.buckets == 0 {
            return None;
        }
        let mask = self.mask();
        let t = tag(h);
        let mut b = h as usize & mask;
        loop {
            let here = self.tag_at(b);
            if here == EMPTY {
                return None;
            }
            if here == t && eq(self.words[b]) {
                return Some(b);
            }
            b = (b + 1) & mask;
        }
    }

    /// The position under `h` for which `eq` holds, if any.
    #[inline]
    pub(super) fn find(&self, h: u64, eq: impl FnMut(u32) -> bool) -> Option<u32> {
        self.find_bucket(h, eq).map(|b| self.words[b])
    }

    /// Calls `f` with every position stored under `h`'s tag along its probe (usually one),
    /// without comparing keys (for hints: a comparison would wait on the memory a hint is
    /// meant to load).
    #[inline]
    pub(super) fn candidates(&self, h: u64, mut f: impl FnMut(u32)) {
        let _ = self.find_bucket(h, |x| {
            f(x);
            false
        });
    }

    /// Makes room for `additional` more entries without growing again.
    pub(super) fn reserve(&mut self, additional: usize, rehash: impl Fn(u32) -> u64) {
        let need = self.len.saturating_add(additional);
        if buckets_for(need) > self.buckets {
            self.resize(buckets_for(need), rehash);
        }
    }

    fn resize(&mut self, buckets: usize, rehash: impl Fn(u32) -> u64) {
        // Buckets are a power of two, at least 8, so the tags fill whole words.
        let old = std::mem::replace(&mut self.words, vec![0; buckets + buckets / 4].into());
        let old_buckets = std::mem::replace(&mut self.buckets, buckets);
        for b in 0..old_buckets {
            if (old[old_buckets + b / 4] >> (b % 4 * 8)) as u8 != EMPTY {
                self.place(rehash(old[b]), old[b]);
            }
        }
    }

    /// Stores `x` under `h` in the first empty bucket of its probe (room is known).
    fn place(&mut self, h: u64, x: u32) {
        let mask = self.mask();
        let mut b = h as usize & mask;
        while self.tag_at(b) != EMPTY {
            b = (b + 1) & mask;
        }
        self.set_tag(b, tag(h));
        self.words[b] = x;
    }

    /// Adds `x` under `h`; the caller knows no entry under `h` is equal to it. `rehash` gives
    /// a stored position's hash when the table grows.
    pub(super) fn insert_unique(&mut self, h: u64, x: u32, rehash: impl Fn(u32) -> u64) {
        if self.len + 1 > self.buckets / 8 * 7 {
            self.resize(buckets_for(self.len + 1).max(self.buckets * 2), rehash);
        }
        self.place(h, x);
        self.len += 1;
    }

    /// Replaces the position under `h` for which `eq` holds with `to`; false when none does.
    pub(super) fn replace(&mut self, h: u64, eq: impl FnMut(u32) -> bool, to: u32) -> bool {
        match self.find_bucket(h, eq) {
            Some(b) => {
                self.words[b] = to;
                true
            }
            None => false,
        }
    }

    /// Removes the position under `h` for which `eq` holds; false when none does. The entries
    /// after it in its run move back (no tombstones), so `rehash` must give every stored
    /// position's hash.
    pub(super) fn remove(
        &mut self,
        h: u64,
        eq: impl FnMut(u32) -> bool,
        rehash: impl Fn(u32) -> u64,
    ) -> bool {
        let Some(mut hole) = self.find_bucket(h, eq) else {
            return false;
        };
        let mask = self.mask();
        let mut b = (hole + 1) & mask;
        while self.tag_at(b) != EMPTY {
            // The entry at `b` may fill the hole unless its home lies cyclically after the
            // hole and at or before `b` (then the hole is not on its probe).
            let home = rehash(self.words[b]) as usize & mask;
            if (b.wrapping_sub(home) & mask) >= (b.wrapping_sub(hole) & mask) {
                let t = self.tag_at(b);
                self.set_tag(hole, t);
                self.words[hole] = self.words[b];
                hole = b;
            }
            b = (b + 1) & mask;
        }
        self.set_tag(hole, EMPTY);
        self.len -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    /// Hashes that collide often (keys equal modulo `spread` share the whole hash, others
    /// often the tag), spread over 512 homes so runs wrap around the end in small and large
    /// tables, and removals move entries.
    fn h(k: u32, spread: u32) -> u64 {
        let x = u64::from(k % spread.max(1));
        x.wrapping_mul(0x9E37_79B9_7F4A_7C15) & 0x0300_0000_0000_01ff
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u32),
        Remove(u32),
        Find(u32),
        Reserve(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u32..300).prop_map(Op::Insert),
            2 => (0u32..300).prop_map(Op::Remove),
            2 => (0u32..300).prop_map(Op::Find),
            1 => any::<u8>().prop_map(Op::Reserve),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Against a `HashSet` model: keys are the stored values themselves, hashed by `h`.
        #[test]
        fn matches_a_map(ops in proptest::collection::vec(op(), 0..400), spread in 1u32..400) {
            let mut index = LeadIndex::default();
            let mut model: HashSet<u32> = HashSet::new();
            let hash = |x: u32| h(x, spread);
            for o in ops {
                match o {
                    Op::Insert(k) => {
                        if model.insert(k) {
                            index.insert_unique(hash(k), k, hash);
                        }
                    }
                    Op::Remove(k) => {
                        let removed = index.remove(hash(k), |x| x == k, hash);
                        prop_assert_eq!(removed, model.remove(&k));
                    }
                    Op::Find(k) => {
                        prop_assert_eq!(index.find(hash(k), |x| x == k), model.contains(&k).then_some(k));
                    }
                    Op::Reserve(n) => index.reserve(usize::from(n), hash),
                }
                prop_assert_eq!(index.len, model.len());
                prop_assert!(index.len <= index.buckets() / 8 * 7 || index.buckets() == 0);
            }
            for k in 0..300 {
                prop_assert_eq!(index.find(hash(k), |x| x == k), model.contains(&k).then_some(k));
                let mut seen = false;
                index.candidates(hash(k), |x| seen |= x == k);
                prop_assert_eq!(seen, model.contains(&k));
            }
        }
    }

    #[test]
    fn replace_changes_only_the_entry_found() {
        let mut index = LeadIndex::default();
        let hash = |x: u32| h(x % 1000, 4);
        for k in 0..20 {
            index.insert_unique(hash(k), k, hash);
        }
        assert!(index.replace(hash(5), |x| x == 5, 1005));
        assert!(!index.replace(hash(5), |x| x == 5, 7));
        assert_eq!(index.find(hash(5), |x| x == 1005), Some(1005));
        for k in (0..20).filter(|&k| k != 5) {
            assert_eq!(index.find(hash(k), |x| x == k), Some(k));
        }
    }

    #[test]
    fn buckets_match_hashbrowns_rule() {
        assert_eq!(buckets_for(0), 0);
        assert_eq!(buckets_for(1), 8);
        assert_eq!(buckets_for(7), 8);
        assert_eq!(buckets_for(8), 16);
        // 859,318 leads (the memory bench) fit 2^20 buckets; 1M need 2^21.
        assert_eq!(buckets_for(859_318), 1 << 20);
        assert_eq!(buckets_for(1_000_000), 1 << 21);
    }
}
