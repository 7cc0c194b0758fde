//! The lead index: lead key hash → position in the dense lead vector.
//!
//! An open-addressing table with linear probing, a one-byte tag and a 4-byte position per
//! bucket, at most 7/8 full: the memory of the `hashbrown::HashTable<u32>` it replaces (5
//! bytes a bucket in one allocation, the same power-of-two bucket counts from 8 entries on).
//! Why our own: a bucket's address follows from the hash alone, so [`LeadIndex::prefetch`]
//! can start loading it several events ahead; hashbrown gives no way to, and at 1M leads its
//! lookups inside the other hints waited on two cold lines (the control bytes, then the slot)
//! per event (docs/performance.md).
//!
//! Keys are not stored: callers compare a candidate position's lead key themselves (`eq`) and
//! hash a position's key again when the table is rebuilt ([`Rehash`]). A removal leaves a
//! tombstone unless the bucket after it is empty: moving the run back instead would hash
//! the key of every entry after it, each a cold lead and a cold key at 1M leads.

/// Tag of an empty bucket: a probe stops here.
const EMPTY: u8 = 0;
/// Tag of a removed entry's bucket: a probe goes on past it, an insert may take it.
const DELETED: u8 = 1;

/// Buckets for `n` entries at most 7/8 full (hashbrown's rule from 8 entries on, so the
/// memory is the same; at least 8 buckets).
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

/// How many entries ahead of its hash a rebuild hints an entry's first load
/// ([`Rehash::prefetch_far`]).
const REHASH_FAR: usize = 16;
/// How many entries ahead of its hash a rebuild hints an entry's second load
/// ([`Rehash::prefetch_near`]).
const REHASH_NEAR: usize = 8;

/// What a rebuild needs from the index's owner: a stored position's hash, and hints.
///
/// Why hints: a rebuild hashes every stored position's key, in bucket order, so at 1M leads
/// each hash waits on a cold lead and then its cold key allocation (6.5% of the replay's fold
/// thread at 466k leads, docs/performance.md). The hints start those loads
/// [`REHASH_FAR`] and [`REHASH_NEAR`] entries ahead, so they overlap.
pub(super) trait Rehash {
    /// The hash of the key stored at position `x` (the one it was inserted under).
    fn hash(&self, x: u32) -> u64;
    /// Hint: starts loading what [`Rehash::hash`] reads first for `x`. Changes nothing.
    fn prefetch_far(&self, _x: u32) {}
    /// Hint: starts loading what [`Rehash::hash`] reads next for `x`, once the far hint's
    /// memory has arrived. Changes nothing.
    fn prefetch_near(&self, _x: u32) {}
}

/// A plain function of the position: no hints.
impl<F: Fn(u32) -> u64> Rehash for F {
    fn hash(&self, x: u32) -> u64 {
        self(x)
    }
}

/// Entries and tombstones `buckets` may hold together (7/8 of them).
fn limit(buckets: usize) -> usize {
    buckets / 8 * 7
}

/// The tag kept for hash `h`: its top byte, never [`EMPTY`] or [`DELETED`]. The bucket comes
/// from the low bits, so the two are independent.
#[inline]
fn tag(h: u64) -> u8 {
    ((h >> 56) as u8).max(2)
}

/// A one in every byte of a group of eight tags.
const ONES: u64 = 0x0101_0101_0101_0101;

/// The high bit of each byte of `v` that is zero, and no other bit (exact, unlike the
/// shorter borrow trick, which may also mark a byte above a zero one).
#[inline]
fn zero_bytes(v: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    // Per byte: the low seven bits plus 0x7f carry into the high bit unless they are all
    // zero; with the byte's own high bit, the high bit is set exactly for non-zero bytes.
    !(((v & LOW7) + LOW7) | v | LOW7)
}

/// Where a probe from bucket `home` starts reading groups: the group's first bucket (groups
/// start on a multiple of 4, as the tag words do) and the mask of its bytes at or after
/// `home` (the buckets before it are not on the probe).
#[inline]
fn first_group(home: usize) -> (usize, u64) {
    let a = home & !3;
    (a, !0u64 << ((home - a) * 8))
}

#[derive(Clone, Debug, Default)]
pub(super) struct LeadIndex {
    /// One allocation, as hashbrown's (two measured 2 MiB more resident at any size): the
    /// buckets' positions, then their tags packed four to a word.
    words: Box<[u32]>,
    buckets: usize,
    len: usize,
    /// Entries plus tombstones: what [`limit`] bounds.
    used: usize,
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
        // Both tag words of the probe's first group (`group`): the second may start a line.
        let (w, words) = (b / 4, self.buckets / 4);
        super::lead::prefetch_bytes(self.words[self.buckets + w..].as_ptr().cast(), 1);
        let next = self.buckets + ((w + 1) & (words - 1));
        super::lead::prefetch_bytes(self.words[next..].as_ptr().cast(), 1);
    }

    /// The tags of the eight buckets from `a` on (a multiple of 4), wrapping around the
    /// table's end: bucket `a + i`'s tag in bits `8 i .. 8 i + 8`.
    #[inline]
    fn group(&self, a: usize) -> u64 {
        // Tags are packed four to a word, so the group is two words; the second wraps to the
        // first when `a` is the table's last four buckets (tag words are a power of two ≥ 2).
        let w = a / 4;
        let words = self.buckets / 4;
        let lo = self.words[self.buckets + w];
        let hi = self.words[self.buckets + ((w + 1) & (words - 1))];
        u64::from(lo) | u64::from(hi) << 32
    }

    /// The bucket holding the entry under `h` for which `eq` holds, if any.
    ///
    /// The probe is linear from the hash's home bucket to the first empty one, as one bucket
    /// at a time would walk it (`tests::probe_one_at_a_time`), but reads the tags eight at a
    /// time and calls `eq` only where a tag is `h`'s. Why: near 7/8 full a linear probe's
    /// runs are long (to an empty bucket, 8.5 buckets on average at 3/4 full, 32.5 at 7/8:
    /// Knuth's estimate), and a hint walks to the empty bucket, unable to compare keys
    /// (docs/performance.md, "Index probes, the lead found once").
    #[inline]
    fn find_bucket(&self, h: u64, mut eq: impl FnMut(u32) -> bool) -> Option<usize> {
        if self.buckets == 0 {
            return None;
        }
        let mask = self.mask();
        let wanted = ONES * u64::from(tag(h));
        let (mut a, mut from) = first_group(h as usize & mask);
        loop {
            let g = self.group(a);
            let empty = zero_bytes(g) & from;
            let mut hit = zero_bytes(g ^ wanted) & from;
            if empty != 0 {
                // The probe ends at the first empty bucket: only tags before it count.
                hit &= (empty & empty.wrapping_neg()) - 1;
            }
            while hit != 0 {
                let b = (a + (hit.trailing_zeros() / 8) as usize) & mask;
                if eq(self.words[b]) {
                    return Some(b);
                }
                hit &= hit - 1;
            }
            if empty != 0 {
                return None;
            }
            a = (a + 8) & mask;
            from = !0;
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

    /// Makes room for `additional` more entries without growing or rebuilding again.
    pub(super) fn reserve(&mut self, additional: usize, rehash: impl Rehash) {
        if self.used.saturating_add(additional) > limit(self.buckets) {
            let need = buckets_for(self.len.saturating_add(additional));
            self.resize(need.max(self.buckets), rehash);
        }
    }

    /// Rebuilds the table with `buckets` buckets (the same count drops the tombstones).
    fn resize(&mut self, buckets: usize, rehash: impl Rehash) {
        // Buckets are a power of two, at least 8, so the tags fill whole words.
        let old = std::mem::replace(&mut self.words, vec![0; buckets + buckets / 4].into());
        let old_buckets = std::mem::replace(&mut self.buckets, buckets);
        self.used = 0;
        let stored = (0..old_buckets)
            .filter(|&b| (old[old_buckets + b / 4] >> (b % 4 * 8)) as u8 > DELETED)
            .map(|b| old[b]);
        // The last REHASH_FAR entries read, hinted and not yet placed: entry k sits at
        // k % REHASH_FAR until entry k + REHASH_FAR takes its place.
        let mut ahead = [0u32; REHASH_FAR];
        let mut read = 0;
        for x in stored {
            let slot = read % REHASH_FAR;
            if read >= REHASH_FAR {
                let due = ahead[slot];
                self.place(rehash.hash(due), due);
            }
            ahead[slot] = x;
            rehash.prefetch_far(x);
            if let Some(k) = read.checked_sub(REHASH_FAR - REHASH_NEAR) {
                rehash.prefetch_near(ahead[k % REHASH_FAR]);
            }
            read += 1;
        }
        for k in read.saturating_sub(REHASH_FAR)..read {
            let due = ahead[k % REHASH_FAR];
            self.place(rehash.hash(due), due);
        }
    }

    /// Stores `x` under `h` in the first empty bucket or tombstone of its probe (room is
    /// known).
    fn place(&mut self, h: u64, x: u32) {
        let mask = self.mask();
        let (mut a, mut from) = first_group(h as usize & mask);
        let b = loop {
            // EMPTY (0) and DELETED (1) are the tags whose bits above the lowest are zero.
            let free = zero_bytes(self.group(a) & !ONES) & from;
            if free != 0 {
                break (a + (free.trailing_zeros() / 8) as usize) & mask;
            }
            a = (a + 8) & mask;
            from = !0;
        };
        if self.tag_at(b) == EMPTY {
            self.used += 1;
        }
        self.set_tag(b, tag(h));
        self.words[b] = x;
    }

    /// Adds `x` under `h`; the caller knows no entry under `h` is equal to it. `rehash` gives
    /// a stored position's hash when the table is rebuilt: grown, or at the same size when
    /// tombstones fill it and the entries alone take at most half of it (hashbrown's rule).
    pub(super) fn insert_unique(&mut self, h: u64, x: u32, rehash: impl Rehash) {
        if self.used + 1 > limit(self.buckets) {
            let n = self.len + 1;
            let buckets = if n <= limit(self.buckets) / 2 {
                self.buckets
            } else {
                buckets_for(n).max(self.buckets * 2)
            };
            self.resize(buckets, rehash);
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

    /// Removes the position under `h` for which `eq` holds; false when none does. Reads no
    /// other entry: the bucket becomes a tombstone, or empty when the next one is (then the
    /// tombstones just before it become empty too: no probe needs to pass them).
    pub(super) fn remove(&mut self, h: u64, eq: impl FnMut(u32) -> bool) -> bool {
        let Some(b) = self.find_bucket(h, eq) else {
            return false;
        };
        let mask = self.mask();
        self.len -= 1;
        if self.tag_at((b + 1) & mask) != EMPTY {
            self.set_tag(b, DELETED);
            return true;
        }
        let mut e = b;
        loop {
            self.set_tag(e, EMPTY);
            self.used -= 1;
            e = e.wrapping_sub(1) & mask;
            if self.tag_at(e) != DELETED {
                return true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    /// Hashes that collide often: keys equal modulo `spread` share the whole hash, two
    /// neighbours share a home, the tags take two values. Homes have 16 bits, so in any table
    /// up to 65,536 buckets they fall anywhere, near the end too, and runs wrap around it.
    fn h(k: u32, spread: u32) -> u64 {
        let x = u64::from(k % spread.max(1));
        let home = (x / 2).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 48;
        (x % 4) << 56 | home
    }

    /// The probe one bucket at a time (what `find_bucket` reads eight at a time): every
    /// bucket from home to the first empty one whose tag is `h`'s, in probe order.
    fn probe_one_at_a_time(index: &LeadIndex, h: u64) -> Vec<usize> {
        let mut out = Vec::new();
        if index.buckets == 0 {
            return out;
        }
        let mut b = h as usize & index.mask();
        while index.tag_at(b) != EMPTY {
            if index.tag_at(b) == tag(h) {
                out.push(b);
            }
            b = (b + 1) & index.mask();
        }
        out
    }

    /// Where one bucket at a time would place an entry under `h`: the first empty bucket or
    /// tombstone from home.
    fn free_one_at_a_time(index: &LeadIndex, h: u64) -> usize {
        let mut b = h as usize & index.mask();
        while index.tag_at(b) > DELETED {
            b = (b + 1) & index.mask();
        }
        b
    }

    /// The table's own counts agree with its tags.
    fn check_counts(index: &LeadIndex) {
        let (mut full, mut deleted) = (0, 0);
        for b in 0..index.buckets() {
            match index.tag_at(b) {
                EMPTY => {}
                DELETED => deleted += 1,
                _ => full += 1,
            }
        }
        assert_eq!(full, index.len);
        assert_eq!(full + deleted, index.used);
        assert!(index.used <= limit(index.buckets()));
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
            3 => (0u32..300).prop_map(Op::Remove),
            2 => (0u32..300).prop_map(Op::Find),
            1 => any::<u8>().prop_map(Op::Reserve),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Against a `HashSet` model: keys are the stored values themselves, hashed by `h`.
        #[test]
        fn matches_a_set(ops in proptest::collection::vec(op(), 0..600), spread in 1u32..400) {
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
                        let removed = index.remove(hash(k), |x| x == k);
                        prop_assert_eq!(removed, model.remove(&k));
                    }
                    Op::Find(k) => {
                        prop_assert_eq!(index.find(hash(k), |x| x == k), model.contains(&k).then_some(k));
                    }
                    Op::Reserve(n) => index.reserve(usize::from(n), hash),
                }
                check_counts(&index);
            }
            for k in 0..300 {
                prop_assert_eq!(index.find(hash(k), |x| x == k), model.contains(&k).then_some(k));
                let mut seen = false;
                index.candidates(hash(k), |x| seen |= x == k);
                prop_assert_eq!(seen, model.contains(&k));
                // The groups visit what one bucket at a time visits, in the same order.
                let mut visited = Vec::new();
                index.candidates(hash(k), |x| visited.push(x));
                let one_by_one: Vec<u32> = probe_one_at_a_time(&index, hash(k))
                    .into_iter()
                    .map(|b| index.words[b])
                    .collect();
                prop_assert_eq!(visited, one_by_one);
                if index.buckets() > 0 {
                    let b = free_one_at_a_time(&index, hash(k));
                    let mut placed = index.clone();
                    placed.place(hash(k), 12345);
                    prop_assert_eq!(placed.words[b], 12345);
                    prop_assert_eq!(placed.tag_at(b), tag(hash(k)));
                    let fresh = usize::from(index.tag_at(b) == EMPTY);
                    prop_assert_eq!(placed.used, index.used + fresh);
                }
            }
        }

        /// `zero_bytes` marks exactly the zero bytes, wherever they are.
        #[test]
        fn zero_bytes_marks_exactly_the_zero_bytes(
            bytes in proptest::collection::vec(
                prop_oneof![
                    Just(0u8),
                    Just(1u8),
                    Just(0x80u8),
                    Just(0x7fu8),
                    Just(0xffu8),
                    any::<u8>()
                ],
                8,
            ),
        ) {
            let word = u64::from_le_bytes(bytes.clone().try_into().expect("8 bytes"));
            let expected = bytes
                .iter()
                .enumerate()
                .filter(|(_, &b)| b == 0)
                .fold(0u64, |m, (i, _)| m | 0x80 << (8 * i));
            prop_assert_eq!(zero_bytes(word), expected, "{:?}", bytes);
        }
    }

    /// Logs what a rebuild asks of its owner, in order: `('f', x)` far hint, `('n', x)` near
    /// hint, `('h', x)` hash.
    struct Logged<'a, F> {
        hash: F,
        log: &'a std::cell::RefCell<Vec<(char, u32)>>,
    }

    impl<F: Fn(u32) -> u64> Rehash for Logged<'_, F> {
        fn hash(&self, x: u32) -> u64 {
            self.log.borrow_mut().push(('h', x));
            (self.hash)(x)
        }
        fn prefetch_far(&self, x: u32) {
            self.log.borrow_mut().push(('f', x));
        }
        fn prefetch_near(&self, x: u32) {
            self.log.borrow_mut().push(('n', x));
        }
    }

    /// The model of a rebuild: every stored entry placed in bucket order, nothing hinted.
    fn rebuilt_plainly(index: &LeadIndex, buckets: usize, hash: impl Fn(u32) -> u64) -> LeadIndex {
        let mut out = LeadIndex {
            words: vec![0; buckets + buckets / 4].into(),
            buckets,
            len: index.len,
            used: 0,
        };
        for b in (0..index.buckets).filter(|&b| index.tag_at(b) > DELETED) {
            let x = index.words[b];
            let to = free_one_at_a_time(&out, hash(x));
            out.used += 1;
            out.set_tag(to, tag(hash(x)));
            out.words[to] = x;
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// A rebuild with hints leaves the table the model's, bucket for bucket, and hints
        /// every entry ahead of its hash: far `REHASH_FAR - 1` hashes before it, near
        /// `REHASH_NEAR - 1` before it (fewer for the first entries; the last ones get no near
        /// hint, their hashes being due sooner).
        #[test]
        fn a_rebuild_hints_ahead_and_places_as_the_model(
            ops in proptest::collection::vec((any::<bool>(), 0u32..300), 0..600),
            spread in 1u32..400,
            grow in any::<bool>(),
        ) {
            let hash = |x: u32| h(x, spread);
            let mut index = LeadIndex::default();
            for (insert, k) in ops {
                if insert {
                    if index.find(hash(k), |x| x == k).is_none() {
                        index.insert_unique(hash(k), k, hash);
                    }
                } else {
                    index.remove(hash(k), |x| x == k);
                }
            }
            let buckets = if grow { (index.buckets() * 2).max(8) } else { index.buckets().max(8) };
            let model = rebuilt_plainly(&index, buckets, hash);
            let log = std::cell::RefCell::default();
            index.resize(buckets, Logged { hash, log: &log });
            prop_assert_eq!(&index.words, &model.words);
            prop_assert_eq!((index.buckets, index.len, index.used), (model.buckets, model.len, model.used));
            check_counts(&index);

            let hashed = check_hints(&log.into_inner()).map_err(TestCaseError::fail)?;
            prop_assert_eq!(hashed, index.len);
        }
    }

    /// Checks a rebuild's log: every entry hashed once, after its far hint by
    /// `REHASH_FAR - 1` other hashes and after its near hint by `REHASH_NEAR - 1` (fewer for
    /// the first entries; the last `REHASH_FAR - REHASH_NEAR` get no near hint). Returns the
    /// count of entries hashed.
    fn check_hints(log: &[(char, u32)]) -> Result<usize, String> {
        let hashed: Vec<u32> = log.iter().filter(|e| e.0 == 'h').map(|e| e.1).collect();
        let n = hashed.len();
        for (j, &x) in hashed.iter().enumerate() {
            let at = |kind: char| log.iter().position(|&e| e == (kind, x));
            let at_hash = at('h').ok_or("unreachable: hashed")?;
            let hashes_from =
                |hint: usize| log[hint..at_hash].iter().filter(|e| e.0 == 'h').count();
            let far = at('f').ok_or_else(|| format!("entry {j} got no far hint"))?;
            if far > at_hash || hashes_from(far) != j.min(REHASH_FAR - 1) {
                return Err(format!("entry {j}: far hint at {far}, hash at {at_hash}"));
            }
            match at('n') {
                Some(near)
                    if near < far
                        || near > at_hash
                        || hashes_from(near) != j.min(REHASH_NEAR - 1) =>
                {
                    return Err(format!(
                        "entry {j}: near hint at {near}, far at {far}, hash at {at_hash}"
                    ));
                }
                Some(_) => {}
                None if j + REHASH_FAR - REHASH_NEAR < n => {
                    return Err(format!("entry {j} got no near hint"))
                }
                None => {}
            }
        }
        if log.len() != 3 * n - n.min(REHASH_FAR - REHASH_NEAR) {
            return Err(format!("{} calls for {n} entries", log.len()));
        }
        Ok(n)
    }

    /// Tables of the counts around the ring's size, every entry under one home at bucket 0,
    /// so that the order of placement is the order of the buckets: a rebuild keeps the
    /// entries in their order (the property test above cannot see the order of 8 entries or
    /// fewer unless they collide), whether the table stays or doubles, and hints as
    /// `check_hints` says.
    #[test]
    fn a_rebuild_keeps_the_order_of_colliding_entries_at_any_count() {
        // Home 0: the run never wraps, so bucket order is insertion order.
        let hash = |_: u32| 2u64 << 56;
        for n in [0u32, 1, 7, 8, 9, 15, 16, 17, 33, 100] {
            let mut index = LeadIndex::default();
            for x in 0..n {
                index.insert_unique(hash(x), x, hash);
            }
            for buckets in [index.buckets().max(8), index.buckets().max(8) * 2] {
                let log = std::cell::RefCell::default();
                let mut rebuilt = index.clone();
                rebuilt.resize(buckets, Logged { hash, log: &log });
                let order: Vec<u32> = (0..buckets)
                    .take_while(|&b| rebuilt.tag_at(b) != EMPTY)
                    .map(|b| rebuilt.words[b])
                    .collect();
                assert_eq!(
                    order,
                    (0..n).collect::<Vec<_>>(),
                    "{n} entries in {buckets} buckets"
                );
                check_counts(&rebuilt);
                assert_eq!(
                    check_hints(&log.into_inner()),
                    Ok(n as usize),
                    "{n} entries"
                );
            }
        }
    }

    /// A run that wraps around the end of an 8-bucket table (homes 6 and 7, spilling into
    /// 0–2), emptied in every order: after each removal every other key is still found, and
    /// at the end no tombstone is left.
    #[test]
    fn a_wrapping_run_empties_in_any_order() {
        let homes = [6u64, 6, 7, 7, 6];
        let hash = |x: u32| 2u64 << 56 | homes[x as usize];
        let mut orders: Vec<Vec<u32>> = vec![vec![]];
        for _ in 0..homes.len() {
            let mut longer = Vec::new();
            for o in &orders {
                for k in (0..homes.len() as u32).filter(|k| !o.contains(k)) {
                    longer.push([o.as_slice(), &[k]].concat());
                }
            }
            orders = longer;
        }
        assert_eq!(orders.len(), 120);
        for order in orders {
            let mut index = LeadIndex::default();
            for k in 0..homes.len() as u32 {
                index.insert_unique(hash(k), k, hash);
            }
            assert_eq!(index.buckets(), 8);
            for (n, &k) in order.iter().enumerate() {
                assert!(index.remove(hash(k), |x| x == k), "{order:?}");
                for &other in &order[n + 1..] {
                    assert_eq!(index.find(hash(other), |x| x == other), Some(other));
                }
                check_counts(&index);
            }
            assert_eq!(index.used, 0, "{order:?}: tombstones left");
        }
    }

    /// Churn at a steady count: inserts take the tombstones removals leave, or removals empty
    /// the end of a run, so the table keeps its 8 buckets (no rebuild happens here; the
    /// next test makes one); more entries grow it.
    #[test]
    fn churn_at_a_steady_count_keeps_the_table() {
        let hash = |x: u32| h(x, u32::MAX);
        let mut index = LeadIndex::default();
        for k in 0..3 {
            index.insert_unique(hash(k), k, hash);
        }
        for k in 3..1000 {
            assert!(index.remove(hash(k - 3), |x| x == k - 3));
            index.insert_unique(hash(k), k, hash);
            check_counts(&index);
            assert_eq!(index.buckets(), 8, "3 entries in 8 buckets");
        }
        for k in 997..1000 {
            assert_eq!(index.find(hash(k), |x| x == k), Some(k));
        }
        // Past half of the table's room, a full table grows instead.
        for k in 1000..1030 {
            index.insert_unique(hash(k), k, hash);
            check_counts(&index);
        }
        assert_eq!(index.buckets(), 64, "33 entries need 64 buckets");
        for k in 997..1030 {
            assert_eq!(index.find(hash(k), |x| x == k), Some(k));
        }
    }

    /// Tombstones left one after another fill an 8-bucket table's room (7) while one or two
    /// entries live: the insert that finds no room rebuilds the table at the same size.
    #[test]
    fn a_table_full_of_tombstones_is_rebuilt_at_the_same_size() {
        let homes = [0u64, 0, 2, 3, 4, 5, 6, 6];
        let hash = |x: u32| 2u64 << 56 | homes[x as usize];
        let mut index = LeadIndex::default();
        index.insert_unique(hash(0), 0, hash);
        index.insert_unique(hash(1), 1, hash);
        // Each removal's next bucket holds the entry just inserted, so it leaves a tombstone.
        for k in 0..5 {
            assert!(index.remove(hash(k), |x| x == k));
            index.insert_unique(hash(k + 2), k + 2, hash);
            check_counts(&index);
        }
        assert_eq!(index.buckets(), 8);
        assert!(index.remove(hash(5), |x| x == 5));
        assert_eq!(
            (index.len, index.used),
            (1, 7),
            "six tombstones and entry 6"
        );
        index.insert_unique(hash(7), 7, hash);
        assert_eq!(
            (index.len, index.used, index.buckets()),
            (2, 2, 8),
            "rebuilt in place"
        );
        check_counts(&index);
        assert_eq!(index.find(hash(6), |x| x == 6), Some(6));
        assert_eq!(index.find(hash(7), |x| x == 7), Some(7));
    }

    /// An insert takes the first tombstone on its probe rather than a new bucket.
    #[test]
    fn an_insert_takes_a_tombstone() {
        let hash = |_: u32| 2u64 << 56 | 3;
        let mut index = LeadIndex::default();
        for k in 0..3 {
            index.insert_unique(hash(k), k, hash);
        }
        assert!(index.remove(hash(1), |x| x == 1));
        assert_eq!(
            (index.len, index.used),
            (2, 3),
            "bucket 4 became a tombstone"
        );
        index.insert_unique(hash(9), 9, hash);
        assert_eq!((index.len, index.used), (3, 3));
        assert_eq!(index.tag_at(4), tag(hash(9)));
        assert_eq!(index.words[4], 9);
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

    /// Every 8-bucket table (each bucket empty, a tombstone, the key's tag or another tag;
    /// at least one empty) and every home: the groups visit what one bucket at a time
    /// visits, in its order, wrapping or not, and an insert takes the bucket it would.
    #[test]
    fn every_small_table_probes_as_one_bucket_at_a_time() {
        const T: u8 = 0x9c;
        for pattern in 0..4u32.pow(8) {
            let mut index = LeadIndex {
                words: vec![0; 8 + 2].into(),
                buckets: 8,
                len: 0,
                used: 0,
            };
            for b in 0..8 {
                let (tag, x) = match pattern >> (2 * b) & 3 {
                    0 => (EMPTY, 0),
                    1 => (DELETED, 0),
                    2 => (T, 100 + b as u32),
                    _ => (0xf0, 200 + b as u32),
                };
                index.set_tag(b, tag);
                index.words[b] = x;
            }
            if (0..8).all(|b| index.tag_at(b) != EMPTY) {
                continue;
            }
            for home in 0..8u64 {
                let h = u64::from(T) << 56 | home;
                let mut visited = Vec::new();
                index.candidates(h, |x| visited.push(x));
                let walk: Vec<u32> = probe_one_at_a_time(&index, h)
                    .into_iter()
                    .map(|b| index.words[b])
                    .collect();
                assert_eq!(visited, walk, "pattern {pattern:016b}, home {home}");
                for &x in &walk {
                    assert_eq!(index.find(h, |y| y == x), Some(x), "{pattern:016b}, {home}");
                }
                assert_eq!(index.find(h, |y| y == 7), None, "{pattern:016b}, {home}");
                let mut placed = index.clone();
                placed.place(h, 7);
                let b = free_one_at_a_time(&index, h);
                assert_eq!(
                    (placed.words[b], placed.tag_at(b)),
                    (7, T),
                    "pattern {pattern:016b}, home {home}"
                );
                for other in (0..8).filter(|&o| o != b) {
                    assert_eq!(
                        (placed.words[other], placed.tag_at(other)),
                        (index.words[other], index.tag_at(other)),
                        "{pattern:016b}, {home}: bucket {other} changed"
                    );
                }
            }
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
