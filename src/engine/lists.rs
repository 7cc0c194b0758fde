//! A lead's out-of-line lists in one allocation (issue 17, item 4): its cooldowns, SLA
//! clocks, SLA clock counts, recent stage changes and keyed cooldowns.
//!
//! The allocation is a run of 8-byte words: a count word (four 16-bit counts), then each
//! list's items in that order, then the keyed cooldowns to the end (each a head word with the
//! rule and the value's length, `t_last`, and the value's bytes in whole words; a value over
//! `KEYED_INLINE_MAX` bytes is kept out of line and the head holds its index). No allocation
//! at all while everything is empty. List items are plain-old-data structs whose sizes are
//! whole words; `bytemuck` casts the words to and from them (checking size and alignment), so
//! each list still reads as a slice, without `unsafe`.
//!
//! Before, each list was a boxed slice of its own (two words in the lead's out-of-line box,
//! plus an allocation rounded to its size class), and each keyed value one more allocation:
//! one allocation instead of up to five plus one per value, and the box 96 -> 32 bytes. Every
//! change makes the allocation again at its exact new size (see `splice`), copying it whole,
//! which is why long values stay out of line.

use bytemuck::{Pod, Zeroable};

use crate::model::event::CrmType;
use crate::model::funnel::Stage;

/// An item of one of the lists: which list it is (its place in the allocation and its count's
/// bits in the count word).
pub trait ListItem: Pod {
    const LIST: usize;
}

/// How many lists, and each one's item size in words (in list order).
const LISTS: usize = 4;
const WORDS: [usize; LISTS] = [
    std::mem::size_of::<Cooldown>() / 8,
    std::mem::size_of::<Clock>() / 8,
    std::mem::size_of::<SlaCount>() / 8,
    std::mem::size_of::<RecentTransition>() / 8,
];

// Each item is a whole number of words and aligned as one, so a list's items cast to and
// from its slice of words exactly.
const _: () = {
    assert!(std::mem::size_of::<Cooldown>() == 8);
    assert!(std::mem::size_of::<Clock>() == 32);
    assert!(std::mem::size_of::<SlaCount>() == 8);
    assert!(std::mem::size_of::<RecentTransition>() == 8);
    assert!(std::mem::align_of::<Cooldown>() == 8);
    assert!(std::mem::align_of::<Clock>() == 8);
    assert!(std::mem::align_of::<SlaCount>() == 8);
    assert!(std::mem::align_of::<RecentTransition>() == 8);
};

/// The last time a rule with a cooldown scored the lead (SPEC §4), in one word: `t_last` in
/// the low 48 bits, the engagement rule's index in the high 16.
///
/// 48 bits hold every event time up to 2^48 - 1 ms (the year 10889) exactly; a later one is
/// kept as that, as the lead's creation time is. With `max_future` on (its default) the
/// service never sees such a time; a replay of one would score a rule with a cooldown again
/// at each event past that bound.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct Cooldown(u64);

const T_LAST_MAX: i64 = (1 << 48) - 1;

impl Cooldown {
    pub fn new(rule: u16, t_last: i64) -> Cooldown {
        Cooldown(u64::from(rule) << 48 | t_last.clamp(0, T_LAST_MAX) as u64)
    }

    /// The engagement rule's index in the config.
    pub fn rule(&self) -> u16 {
        (self.0 >> 48) as u16
    }

    /// Event time (ms) the rule last scored.
    pub fn t_last(&self) -> i64 {
        (self.0 & T_LAST_MAX as u64) as i64
    }

    pub fn set_t_last(&mut self, t_last: i64) {
        *self = Cooldown::new(self.rule(), t_last);
    }
}

impl std::fmt::Debug for Cooldown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cooldown")
            .field("rule", &self.rule())
            .field("t_last", &self.t_last())
            .finish()
    }
}

impl ListItem for Cooldown {
    const LIST: usize = 0;
}

/// A running SLA clock (SPEC §6). Times are event times (ms).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct Clock {
    pub start: i64,
    pub deadline: i64,
    warn: i64,
    /// The clock's number for this lead and policy (the `k` of its record ids).
    pub k: u32,
    /// The SLA policy's index in the config.
    pub policy: u16,
    has_warn: u8,
    _pad: u8,
}

impl Clock {
    pub fn new(policy: u16, k: u32, start: i64, deadline: i64, warn_at: Option<i64>) -> Clock {
        Clock {
            start,
            deadline,
            warn: warn_at.unwrap_or(0),
            k,
            policy,
            has_warn: u8::from(warn_at.is_some()),
            _pad: 0,
        }
    }

    /// When the warning is due, for a policy with `warn_before`.
    pub fn warn_at(&self) -> Option<i64> {
        (self.has_warn != 0).then_some(self.warn)
    }
}

impl ListItem for Clock {
    const LIST: usize = 1;
}

/// How many clocks of an SLA policy the lead has started (the next clock's `k` is one more).
/// Aligned as a word, like every item, so a list of them casts to words.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct SlaCount {
    /// The SLA policy's index in the config.
    pub policy: u16,
    _pad: u16,
    pub started: u32,
}

impl SlaCount {
    pub fn new(policy: u16, started: u32) -> SlaCount {
        SlaCount {
            policy,
            _pad: 0,
            started,
        }
    }
}

impl ListItem for SlaCount {
    const LIST: usize = 2;
}

/// A remembered stage change in one word: the time in the low 54 bits, then the stage before
/// and after (3 bits each: 8 stages) and the reason (4 bits: `score`, `fast_track` and the 10
/// CRM types).
///
/// 54 bits hold every event time up to 2^54 - 1 ms (the year 572,000) exactly; a later time
/// is kept as that (the lead's creation time saturates likewise, at 48 bits). Its one use is
/// when the lead entered its stage (`Lead::stage_entered`), so a lead whose stage changed at
/// a time that late takes an event between that bound and the change as not older than its
/// stage.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct RecentTransition(u64);

const AT_BITS: u32 = 54;
const AT_MAX: i64 = (1 << AT_BITS) - 1;

// The codes fit their bits.
const _: () = assert!(Stage::ALL.len() <= 8 && CrmType::ALL.len() + 2 <= 16);

impl RecentTransition {
    /// `reason` is `score`, `fast_track` or a CRM type (see `static_reason`); any other
    /// reads back as `score`. `at` is clamped to `[0, 2^54 - 1]` (see the type's notes).
    pub fn new(from: Stage, to: Stage, reason: &'static str, at: i64) -> RecentTransition {
        let reason = match reason {
            "score" => 0,
            "fast_track" => 1,
            other => CrmType::ALL
                .iter()
                .position(|c| c.as_str() == other)
                .map_or(0, |i| i as u64 + 2),
        };
        RecentTransition(
            at.clamp(0, AT_MAX) as u64
                | (from.index() as u64) << AT_BITS
                | (to.index() as u64) << (AT_BITS + 3)
                | reason << (AT_BITS + 6),
        )
    }

    /// Event time of the change (ms).
    pub fn at(&self) -> i64 {
        (self.0 & AT_MAX as u64) as i64
    }

    pub fn from(&self) -> Stage {
        Stage::ALL[(self.0 >> AT_BITS) as usize & 7]
    }

    pub fn to(&self) -> Stage {
        Stage::ALL[(self.0 >> (AT_BITS + 3)) as usize & 7]
    }

    pub fn reason(&self) -> &'static str {
        match self.0 >> (AT_BITS + 6) {
            0 => "score",
            1 => "fast_track",
            c => CrmType::ALL
                .get(c as usize - 2)
                .map_or("score", |t| t.as_str()),
        }
    }
}

impl std::fmt::Debug for RecentTransition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecentTransition")
            .field("at", &self.at())
            .field("from", &self.from())
            .field("to", &self.to())
            .field("reason", &self.reason())
            .finish()
    }
}

impl ListItem for RecentTransition {
    const LIST: usize = 3;
}

/// The four lists in one exact-size allocation (see the module's notes). Counts are at most
/// 65535: a lead has at most one cooldown per rule and one clock and count per policy (the
/// config allows at most 65535 of each), and `RECENT_TRANSITIONS` changes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Lists(Box<[u64]>);

impl Lists {
    /// The lists given, in one allocation (none if all are empty).
    pub fn from_parts(
        cooldowns: &[Cooldown],
        clocks: &[Clock],
        counts: &[SlaCount],
        recent: &[RecentTransition],
    ) -> Lists {
        let lens = [cooldowns.len(), clocks.len(), counts.len(), recent.len()];
        let parts: [&[u64]; LISTS] = [
            bytemuck::cast_slice(cooldowns),
            bytemuck::cast_slice(clocks),
            bytemuck::cast_slice(counts),
            bytemuck::cast_slice(recent),
        ];
        Lists::assemble(lens, parts)
    }

    /// The items of list `T`.
    pub fn get<T: ListItem>(&self) -> &[T] {
        let r = self.range(T::LIST);
        if r.is_empty() {
            return &[];
        }
        bytemuck::cast_slice(&self.0[r])
    }

    /// The items of list `T`, to change in place.
    pub fn get_mut<T: ListItem>(&mut self) -> &mut [T] {
        let r = self.range(T::LIST);
        if r.is_empty() {
            return &mut [];
        }
        bytemuck::cast_slice_mut(&mut self.0[r])
    }

    /// Appends `item` to list `T` (the allocation grows by the item).
    pub fn push<T: ListItem>(&mut self, item: T) {
        let end = self.range(T::LIST).end;
        let n = self.get::<T>().len();
        self.splice(
            T::LIST,
            n + 1,
            end..end,
            bytemuck::cast_slice(std::slice::from_ref(&item)),
        );
    }

    /// Removes and returns item `i` of list `T`; panics when out of bounds, as `Vec::remove`.
    pub fn remove<T: ListItem>(&mut self, i: usize) -> T {
        let items = self.get::<T>();
        let item = items[i];
        let n = items.len();
        let w = WORDS[T::LIST];
        let at = self.range(T::LIST).start + i * w;
        self.splice(T::LIST, n - 1, at..at + w, &[]);
        item
    }

    /// Empties list `T`, returning its items.
    pub fn take<T: ListItem>(&mut self) -> Vec<T> {
        let items = self.get::<T>().to_vec();
        if !items.is_empty() {
            self.splice(T::LIST, 0, self.range(T::LIST), &[]);
        }
        items
    }

    /// Whether every list is empty (then nothing is allocated).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The allocation, as words (memory accounting and cache hints).
    pub fn words(&self) -> &[u64] {
        &self.0
    }

    fn lens(&self) -> [usize; LISTS] {
        let w = self.0.first().copied().unwrap_or(0);
        std::array::from_fn(|i| ((w >> (16 * i)) & 0xffff) as usize)
    }

    /// List `list`'s words in the allocation.
    fn range(&self, list: usize) -> std::ops::Range<usize> {
        let lens = self.lens();
        let start = 1 + (0..list).map(|i| lens[i] * WORDS[i]).sum::<usize>();
        start..start + lens[list] * WORDS[list]
    }

    /// Replaces `words` of the allocation with `with`, list `list` then having `len` items.
    /// A new exact-size allocation each time: resizing in place measured worse (RSS per lead
    /// 332 -> 340 bytes in `cargo bench --bench memory`: more free space left scattered).
    /// `list` is `KEYED` for the keyed cooldowns (no count: they run to the end).
    fn splice(&mut self, list: usize, len: usize, words: std::ops::Range<usize>, with: &[u64]) {
        let mut lens = self.lens();
        if list < LISTS {
            lens[list] = len;
        }
        let old: &[u64] = if self.0.is_empty() { &[0] } else { &self.0 };
        let new_len = old.len() - words.len() + with.len();
        if new_len == 1 && lens.iter().all(|&n| n == 0) {
            self.0 = Box::default();
            return;
        }
        let mut v = Vec::with_capacity(new_len);
        v.push(count_word(lens));
        v.extend_from_slice(&old[1..words.start]);
        v.extend_from_slice(with);
        v.extend_from_slice(&old[words.end..]);
        self.0 = v.into_boxed_slice();
    }

    /// Where the keyed cooldowns' words start (memory accounting): after the four lists.
    pub fn keyed_start(&self) -> usize {
        self.keyed_range().start.min(self.0.len())
    }

    /// The keyed cooldowns' words: after the four lists, to the end.
    fn keyed_range(&self) -> std::ops::Range<usize> {
        let end = self.range(LISTS - 1).end;
        end..self.0.len().max(end)
    }

    /// The keyed cooldowns (rules with a `cooldown_key`, SPEC §4), in the order they were
    /// remembered; a value longer than `KEYED_INLINE_MAX` as its index among the lead's long
    /// values (kept out of line by `Extra`).
    pub fn keyed(&self) -> impl Iterator<Item = KeyedCooldown<'_>> + '_ {
        let r = self.keyed_range();
        let words = if r.is_empty() { &[][..] } else { &self.0[..] };
        let mut at = r.start;
        std::iter::from_fn(move || {
            let head = *words.get(at)?;
            let t_last = *words.get(at + 1)? as i64;
            let n = ((head & !LONG) >> 16) as usize;
            let (value, value_words) = if head & LONG != 0 {
                (KeyedValue::Long(n), 0)
            } else {
                let value_words = words.get(at + 2..at + 2 + n.div_ceil(8))?;
                let bytes: &[u8] = bytemuck::cast_slice(value_words);
                (KeyedValue::Inline(&bytes[..n]), n.div_ceil(8))
            };
            let entry = KeyedCooldown {
                rule: head as u16,
                value,
                t_last,
                at,
            };
            at += 2 + value_words;
            Some(entry)
        })
    }

    /// Appends keyed cooldowns encoded by `keyed_entry` (one allocation for all of them).
    pub fn keyed_append(&mut self, entries: &[u64]) {
        if entries.is_empty() {
            return;
        }
        let end = self.keyed_range().end;
        self.splice(KEYED, 0, end..end, entries);
    }

    /// Sets the `t_last` of the keyed cooldown at `entry` (its `KeyedCooldown::at`).
    pub fn keyed_set_time(&mut self, entry: usize, t_last: i64) {
        self.0[entry + 1] = t_last as u64;
    }

    /// Forgets the keyed cooldown at `entry` (its `KeyedCooldown::at`); returns its long
    /// value's index if it had one (the caller drops that value and calls
    /// `keyed_long_removed`).
    pub fn keyed_remove(&mut self, entry: usize) -> Option<usize> {
        let head = self.0[entry];
        let n = ((head & !LONG) >> 16) as usize;
        let (long, value_words) = if head & LONG != 0 {
            (Some(n), 0)
        } else {
            (None, n.div_ceil(8))
        };
        self.splice(KEYED, 0, entry..entry + 2 + value_words, &[]);
        long
    }

    /// Long value `index` is gone: the indexes above it move down by one.
    pub fn keyed_long_removed(&mut self, index: usize) {
        let r = self.keyed_range();
        let mut at = r.start;
        while at < r.end {
            let head = self.0[at];
            let n = ((head & !LONG) >> 16) as usize;
            if head & LONG != 0 {
                if n > index {
                    self.0[at] = head - (1 << 16);
                }
                at += 2;
            } else {
                at += 2 + n.div_ceil(8);
            }
        }
    }

    fn assemble(lens: [usize; LISTS], parts: [&[u64]; LISTS]) -> Lists {
        let words: usize = parts.iter().map(|p| p.len()).sum();
        if words == 0 {
            return Lists::default();
        }
        let mut v = Vec::with_capacity(1 + words);
        v.push(count_word(lens));
        for p in parts {
            v.extend_from_slice(p);
        }
        Lists(v.into_boxed_slice())
    }
}

/// `Lists::splice`'s name for the keyed cooldowns' words.
const KEYED: usize = LISTS;

/// The head word's flag for a value kept out of line (the length field is then its index).
const LONG: u64 = 1 << 63;

/// The longest `cooldown_key` value kept in the allocation (bytes). Longer ones are kept out
/// of line: every change to a lead's lists copies the allocation, and values up to
/// `limits.max_attribute_bytes` (64 values per rule) would make each copy megabytes.
pub const KEYED_INLINE_MAX: usize = 64;

/// Encodes a keyed cooldown for `Lists::keyed_append`: a head word (rule, then the value's
/// length, or its long index with the `LONG` flag), `t_last`, then an inline value's bytes in
/// whole words.
pub fn keyed_entry(out: &mut Vec<u64>, rule: u16, value: KeyedValue<'_>, t_last: i64) {
    match value {
        KeyedValue::Inline(v) => {
            debug_assert!(v.len() <= KEYED_INLINE_MAX);
            out.extend([u64::from(rule) | (v.len() as u64) << 16, t_last as u64]);
            let start = out.len();
            out.resize(start + v.len().div_ceil(8), 0);
            bytemuck::cast_slice_mut::<u64, u8>(&mut out[start..])[..v.len()].copy_from_slice(v);
        }
        KeyedValue::Long(i) => {
            out.extend([u64::from(rule) | (i as u64) << 16 | LONG, t_last as u64]);
        }
    }
}

/// A keyed cooldown's value as the allocation holds it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KeyedValue<'a> {
    /// Up to `KEYED_INLINE_MAX` bytes (UTF-8: it was a `&str`).
    Inline(&'a [u8]),
    /// Index among the lead's long values (`Extra`).
    Long(usize),
}

/// A keyed cooldown as `Lists::keyed` reads it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KeyedCooldown<'a> {
    /// The engagement rule's index in the config.
    pub rule: u16,
    /// The `cooldown_key` attribute's value, or where it is.
    pub value: KeyedValue<'a>,
    /// Event time (ms) the rule last scored for this value.
    pub t_last: i64,
    /// Where the entry starts (`Lists::keyed_set_time`, `Lists::keyed_remove`).
    pub at: usize,
}

/// The four counts in one word, 16 bits each.
fn count_word(lens: [usize; LISTS]) -> u64 {
    let mut count = 0u64;
    for (i, &n) in lens.iter().enumerate() {
        // The config's limits keep every list below 2^16 items (see `Lists`).
        assert!(n <= 0xffff, "a lead's list {i} has {n} items");
        count |= (n as u64) << (16 * i);
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(policy: u16, k: u32) -> Clock {
        let warn = k.is_multiple_of(2).then_some(i64::from(k) * 10 + 5);
        Clock::new(policy, k, i64::from(k) * 10, i64::from(k) * 10 + 9, warn)
    }

    #[test]
    fn each_list_reads_back_what_was_put_whatever_the_others_hold() {
        let mut l = Lists::default();
        assert!(l.is_empty() && l.words().is_empty(), "nothing allocated");
        l.push(clock(3, 1));
        l.push(RecentTransition::new(Stage::New, Stage::Mql, "score", 7));
        l.push(Cooldown::new(2, 100));
        l.push(clock(4, 2));
        l.push(SlaCount::new(3, 1));
        l.push(Cooldown::new(9, 200));
        assert_eq!(
            l.get::<Cooldown>(),
            [Cooldown::new(2, 100), Cooldown::new(9, 200)]
        );
        assert_eq!(l.get::<Clock>(), [clock(3, 1), clock(4, 2)]);
        assert_eq!(l.get::<SlaCount>(), [SlaCount::new(3, 1)]);
        let rt = l.get::<RecentTransition>();
        assert_eq!(rt.len(), 1);
        assert_eq!(
            (rt[0].from(), rt[0].to(), rt[0].reason(), rt[0].at()),
            (Stage::New, Stage::Mql, "score", 7)
        );
        // One count word, 1 + 2 × 4 + 1 + 1 words of items.
        assert_eq!(l.words().len(), 1 + 2 + 8 + 1 + 1);

        l.get_mut::<Clock>()[1].deadline = 77;
        assert_eq!(l.get::<Clock>()[1].deadline, 77);
        assert_eq!(l.get::<Clock>()[1].warn_at(), Some(25));
        assert_eq!(l.get::<Clock>()[0].warn_at(), None);
        assert_eq!(l.remove::<Cooldown>(0), Cooldown::new(2, 100));
        assert_eq!(l.take::<Clock>().len(), 2);
        assert!(l.get::<Clock>().is_empty());
        assert_eq!(l.get::<Cooldown>(), [Cooldown::new(9, 200)]);
        assert_eq!(l.get::<SlaCount>(), [SlaCount::new(3, 1)]);
        assert_eq!(l.remove::<Cooldown>(0).rule(), 9);
        l.take::<SlaCount>();
        l.take::<RecentTransition>();
        assert!(l.is_empty(), "the allocation goes with the last item");
        assert_eq!(
            Lists::from_parts(&[Cooldown::new(1, 2)], &[], &[SlaCount::new(0, 4)], &[]),
            {
                let mut m = Lists::default();
                m.push(SlaCount::new(0, 4));
                m.push(Cooldown::new(1, 2));
                m
            }
        );
    }

    #[test]
    fn stages_and_reasons_round_trip() {
        for from in Stage::ALL {
            for to in Stage::ALL {
                let t = RecentTransition::new(from, to, "fast_track", 1);
                assert_eq!((t.from(), t.to(), t.reason()), (from, to, "fast_track"));
            }
        }
        for crm in CrmType::ALL {
            let t = RecentTransition::new(Stage::Mql, Stage::Sal, crm.as_str(), 1);
            assert_eq!(t.reason(), crm.as_str());
        }
        assert_eq!(
            RecentTransition::new(Stage::New, Stage::Mql, "other", 1).reason(),
            "score"
        );
    }

    #[test]
    fn a_cooldown_keeps_its_rule_and_48_bits_of_time() {
        // Exact up to 2^48 - 1 ms; saturates after, its rule kept.
        for t_last in [0, 1_796_083_200_000, (1 << 48) - 1] {
            let c = Cooldown::new(u16::MAX, t_last);
            assert_eq!((c.rule(), c.t_last()), (u16::MAX, t_last));
        }
        let mut c = Cooldown::new(7, i64::MAX);
        assert_eq!((c.rule(), c.t_last()), (7, (1 << 48) - 1));
        c.set_t_last(5);
        assert_eq!((c.rule(), c.t_last()), (7, 5));
    }

    /// One edit of the model: which list, and push (an item made from `x`), remove (at
    /// `x` mod the length) or change in place (item `x` mod the length).
    #[derive(Clone, Debug)]
    enum Op {
        Push(usize, u16),
        Remove(usize, u16),
        Take(usize),
        Change(usize, u16),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            3 => (0..LISTS, any::<u16>()).prop_map(|(l, x)| Op::Push(l, x)),
            1 => (0..LISTS, any::<u16>()).prop_map(|(l, x)| Op::Remove(l, x)),
            1 => (0..LISTS).prop_map(Op::Take),
            1 => (0..LISTS, any::<u16>()).prop_map(|(l, x)| Op::Change(l, x)),
        ]
    }

    /// The model: four `Vec`s. Each op is applied to both; every list must read the same.
    fn apply<T: ListItem + PartialEq + std::fmt::Debug>(
        lists: &mut Lists,
        model: &mut Vec<T>,
        op: &Op,
        make: impl Fn(u16) -> T,
        change: impl Fn(&mut T, u16),
    ) {
        match *op {
            Op::Push(_, x) => {
                lists.push(make(x));
                model.push(make(x));
            }
            Op::Remove(_, x) if !model.is_empty() => {
                let i = usize::from(x) % model.len();
                assert_eq!(lists.remove::<T>(i), model.remove(i));
            }
            Op::Take(_) => assert_eq!(lists.take::<T>(), std::mem::take(model)),
            Op::Change(_, x) if !model.is_empty() => {
                let i = usize::from(x) % model.len();
                change(&mut lists.get_mut::<T>()[i], x);
                change(&mut model[i], x);
            }
            _ => {}
        }
    }

    proptest::proptest! {
        #[test]
        fn lists_behave_like_four_vecs(ops in proptest::collection::vec(op(), 0..80)) {
            let mut lists = Lists::default();
            let (mut a, mut b, mut c, mut d) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for op in &ops {
                let list = match *op {
                    Op::Push(l, _) | Op::Remove(l, _) | Op::Take(l) | Op::Change(l, _) => l,
                };
                match list {
                    0 => apply(&mut lists, &mut a, op, |x| Cooldown::new(x, -i64::from(x)), |c, x| c.set_t_last(c.t_last() + i64::from(x))),
                    1 => apply(&mut lists, &mut b, op, |x| clock(x, u32::from(x)), |c, x| c.deadline = i64::from(x)),
                    2 => apply(&mut lists, &mut c, op, |x| SlaCount::new(x, 1), |c, _| c.started += 1),
                    _ => apply(
                        &mut lists,
                        &mut d,
                        op,
                        |x| RecentTransition::new(Stage::ALL[usize::from(x) % 8], Stage::Mql, "score", i64::from(x)),
                        |t, x| *t = RecentTransition::new(t.from(), t.to(), t.reason(), i64::from(x)),
                    ),
                }
                proptest::prop_assert_eq!(lists.get::<Cooldown>(), &a[..]);
                proptest::prop_assert_eq!(lists.get::<Clock>(), &b[..]);
                proptest::prop_assert_eq!(lists.get::<SlaCount>(), &c[..]);
                proptest::prop_assert_eq!(lists.get::<RecentTransition>(), &d[..]);
                let words = a.len() + 4 * b.len() + c.len() + d.len();
                let expected = if words == 0 { 0 } else { 1 + words };
                proptest::prop_assert_eq!(lists.words().len(), expected, "one exact allocation");
            }
        }
    }
}
