//! One lead's state, laid out for memory: a partition holds millions of them.
//!
//! What a plain lead needs (key, stage, scores, duplicate window, profile, per-rule
//! contributions) is inline or in one exact-sized allocation each; what only some leads have
//! (cooldowns, SLA clocks and counters, recent transitions) sits behind one optional box.
//! The key and the profile share one packed byte string (`Ident`). `benches/memory.rs` prints
//! what each part costs (docs/performance.md, "Memory per lead").

use crate::model::event::CrmType;
use crate::model::funnel::Stage;
use crate::model::score::{Decay, Engagement};

/// How many recent event ids per lead are remembered for duplicate detection (SPEC §2).
pub const RECENT_IDS: usize = 8;

/// How many stage changes a lead remembers for explanations.
pub const RECENT_TRANSITIONS: usize = 5;

/// Hashes of a lead's last event ids (SPEC §2, `dedupe.recent_ids`), inline when the window
/// is at most `RECENT_IDS` (the default), as 48 bits each ([`event_id_hash`]): a 32-bit low
/// half and a 16-bit high half, 48 bytes for 8 ids instead of 64. The ring's length and next
/// slot live in the lead itself, beside other small fields, so the lead has no padding.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecentIds {
    lo: [u32; RECENT_IDS],
    hi: [u16; RECENT_IDS],
}

impl RecentIds {
    #[inline]
    fn get(&self, i: usize) -> u64 {
        u64::from(self.lo[i]) | (u64::from(self.hi[i]) << 32)
    }

    #[inline]
    fn set(&mut self, i: usize, h: u64) {
        self.lo[i] = h as u32;
        self.hi[i] = (h >> 32) as u16;
    }

    /// Whether `h` (48 bits) is among the first `len` slots.
    #[inline]
    fn contains(&self, len: usize, h: u64) -> bool {
        let (lo, hi) = (h as u32, (h >> 32) as u16);
        (0..len.min(RECENT_IDS)).any(|i| self.lo[i] == lo && self.hi[i] == hi)
    }
}

/// Bits of an event id's hash the duplicate window keeps.
pub const EVENT_ID_HASH_BITS: u32 = 48;
const EVENT_ID_HASH_MASK: u64 = (1 << EVENT_ID_HASH_BITS) - 1;

/// The duplicate window's hash of an event id (SPEC §2): the low 48 bits of [`id_hash`]. A
/// false duplicate (a new id taken for one of the lead's last 8) has a chance of
/// 8 / 2^48 ≈ 2.8e-14 per event, once in about 35 trillion events; the full 64 bits cost
/// every lead 16 bytes more (issue 17, item 4). Being the low bits of the 64-bit hash older
/// snapshots stored, a restored window is that hash cut to 48 bits (`Lead::set_recent_ids`).
#[inline]
pub fn event_id_hash(id: &str) -> u64 {
    id_hash(id) & EVENT_ID_HASH_MASK
}

/// FNV-1a, 64 bit: stable across builds and platforms, so snapshots stay valid.
pub fn id_hash(id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

pub use super::lists::{
    keyed_entry, Clock, Cooldown, KeyedValue, Lists, RecentTransition, SlaCount, KEYED_INLINE_MAX,
};

/// A keyed cooldown with its value, as `Extra::keyed_cooldowns` reads it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KeyedEntry<'a> {
    /// The engagement rule's index in the config.
    pub rule: u16,
    /// The `cooldown_key` attribute's value (UTF-8: it was a `&str`).
    pub value: &'a [u8],
    /// Event time (ms) the rule last scored for this value.
    pub t_last: i64,
    /// Where the entry starts (`Extra::keyed_set_time`, `Extra::keyed_remove`).
    pub at: usize,
}

/// Transition reasons are `score`, `fast_track` or a CRM type: all static strings.
pub fn static_reason(reason: &str) -> Option<&'static str> {
    match reason {
        "score" => Some("score"),
        "fast_track" => Some("fast_track"),
        other => CrmType::parse(other).map(CrmType::as_str),
    }
}

/// Attribute names common in CRM profiles, stored as one byte in a lead's packed profile
/// instead of their text. Only the memory layout depends on this list (snapshots store names
/// as text), so it may grow; its order must not change while a process runs.
const COMMON_NAMES: [&str; 24] = [
    "annual_revenue",
    "campaign",
    "city",
    "company",
    "country",
    "department",
    "email",
    "employees",
    "first_name",
    "industry",
    "job_function",
    "last_name",
    "lead_source",
    "owner_id",
    "phone",
    "region",
    "segment",
    "seniority",
    "source",
    "state",
    "title",
    "utm_campaign",
    "utm_medium",
    "utm_source",
];

/// The index of `name` in [`COMMON_NAMES`], if it is one. Every attribute an upsert sets asks
/// this twice (to size the new profile, then to write it): a hash slot and one comparison,
/// where a binary search made about five `memcmp` calls (5.5% of replay's fold thread).
fn common_name(name: &str) -> Option<usize> {
    let b = name.as_bytes();
    let i = usize::from(NAME_SLOTS[name_slot(b)]).checked_sub(1)?;
    // The slot only narrows the search: equality decides, so any name may share a slot.
    (COMMON_NAMES[i].as_bytes() == b).then_some(i)
}

/// A slot of [`NAME_SLOTS`] for a name: its length, first and next-to-last byte tell the
/// common names apart (checked when the table is built).
const fn name_slot(b: &[u8]) -> usize {
    let n = b.len();
    let first = if n > 0 { b[0] as usize } else { 0 };
    let next_to_last = if n > 1 { b[n - 2] as usize } else { 0 };
    (n + 3 * first + 15 * next_to_last) % NAME_SLOT_COUNT
}

const NAME_SLOT_COUNT: usize = 64;

/// Slot `name_slot(COMMON_NAMES[i])` holds `i + 1`, the others 0. Built at compile time: two
/// common names in one slot fail the build (then change `name_slot`'s factors).
const NAME_SLOTS: [u8; NAME_SLOT_COUNT] = {
    let mut slots = [0u8; NAME_SLOT_COUNT];
    let mut i = 0;
    while i < COMMON_NAMES.len() {
        let slot = name_slot(COMMON_NAMES[i].as_bytes());
        assert!(
            slots[slot] == 0,
            "two common names share a slot of NAME_SLOTS"
        );
        slots[slot] = i as u8 + 1;
        i += 1;
    }
    slots
};

fn put_len(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_text(out: &mut Vec<u8>, text: &str) {
    put_len(out, text.len());
    out.extend_from_slice(text.as_bytes());
}

/// A name in the packed profile: `2 * index + 1` for a common name, else `2 * len` and the
/// text.
fn put_name(out: &mut Vec<u8>, name: &str) {
    match common_name(name) {
        Some(i) => put_len(out, 2 * i + 1),
        None => {
            put_len(out, 2 * name.len());
            out.extend_from_slice(name.as_bytes());
        }
    }
}

/// Reads a packed lead identity. The bytes were written by `Ident::pack` from `&str`s, so they
/// always parse; a parse failure ends the iteration rather than panicking.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A LEB128 length (at most 10 bytes).
    fn len(&mut self) -> Option<usize> {
        // Nearly every length (of a key, a name, a value, a profile) is under 128: one byte.
        // Taken first, it keeps the loop below off every profile walk (the loop alone was
        // 5% of replay's fold thread).
        if let Some((&b, rest)) = self.rest.split_first() {
            if b < 0x80 {
                self.rest = rest;
                return Some(usize::from(b));
            }
        }
        let mut n = 0usize;
        for (i, &b) in self.rest.iter().enumerate().take(10) {
            n |= usize::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                self.rest = &self.rest[i + 1..];
                return Some(n);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let bytes = self.rest.get(..n)?;
        self.rest = &self.rest[n..];
        Some(bytes)
    }

    fn bytes(&mut self, n: usize) -> Option<&'a str> {
        std::str::from_utf8(self.take(n)?).ok()
    }

    /// The next profile entry without a UTF-8 check: lookups and updates compare names as
    /// bytes (the order of `str` is the order of its bytes) and copy entries as packed.
    fn raw_entry(&mut self) -> Option<RawEntry<'a>> {
        let start = self.rest;
        let code = self.len()?;
        let name = if code & 1 == 1 {
            COMMON_NAMES.get(code >> 1)?.as_bytes()
        } else {
            self.take(code >> 1)?
        };
        let n = self.len()?;
        let value = self.take(n)?;
        let packed = &start[..start.len() - self.rest.len()];
        Some(RawEntry {
            name,
            value,
            packed,
        })
    }

    fn text(&mut self) -> Option<&'a str> {
        let n = self.len()?;
        self.bytes(n)
    }

    fn name(&mut self) -> Option<&'a str> {
        let code = self.len()?;
        if code & 1 == 1 {
            COMMON_NAMES.get(code >> 1).copied()
        } else {
            self.bytes(code >> 1)
        }
    }
}

/// One entry of a packed profile: its name and value as bytes, and its whole encoding.
#[derive(Clone, Copy)]
struct RawEntry<'a> {
    name: &'a [u8],
    value: &'a [u8],
    packed: &'a [u8],
}

/// One entry of a profile merged with an update, in name order.
enum Merged<'a> {
    /// An entry kept as it was packed.
    Kept(&'a [u8]),
    /// An entry set to a new, non-empty value.
    Set(&'a str, &'a str),
}

/// Merges `attrs` (sorted by name, unique; an empty value removes) into the packed profile
/// `packed`, handing `f` the resulting entries in name order. True when anything changed (an
/// attribute absent and set empty, or set to the value it has, is no change).
fn merge_walk<'a, N: AsRef<str>, V: AsRef<str>>(
    packed: &'a [u8],
    attrs: &'a [(N, V)],
    mut f: impl FnMut(Merged<'a>),
) -> bool {
    let mut changed = false;
    let mut r = Reader { rest: packed };
    let mut cur = r.raw_entry();
    for (name, value) in attrs {
        let (name, value) = (name.as_ref(), value.as_ref());
        while let Some(e) = cur.filter(|e| e.name < name.as_bytes()) {
            f(Merged::Kept(e.packed));
            cur = r.raw_entry();
        }
        let existing = cur.filter(|e| e.name == name.as_bytes());
        if existing.is_some() {
            cur = r.raw_entry();
        }
        if existing.map_or(&b""[..], |e| e.value) == value.as_bytes() {
            if let Some(e) = existing {
                f(Merged::Kept(e.packed));
            }
            continue;
        }
        changed = true;
        if !value.is_empty() {
            f(Merged::Set(name, value));
        }
    }
    while let Some(e) = cur {
        f(Merged::Kept(e.packed));
        cur = r.raw_entry();
    }
    changed
}

/// Bytes `put_len` writes for `n`.
fn len_size(n: usize) -> usize {
    let bits = usize::BITS - (n | 1).leading_zeros();
    bits.div_ceil(7) as usize
}

/// Bytes `put_name` and `put_text` write for the entry `name`, `value`.
fn entry_size(name: &str, value: &str) -> usize {
    let name_size = match common_name(name) {
        Some(i) => len_size(2 * i + 1),
        None => len_size(2 * name.len()) + name.len(),
    };
    name_size + len_size(value.len()) + value.len()
}

/// A lead's key, profile and per-rule contributions in one exact-sized allocation:
/// `len key`, `len` of the profile and the profile (attributes sorted by name as
/// `name len value`, a common name in one byte), then the contributions as 18-byte records
/// (`rule u16, value f64, time i64`, little-endian). Lengths are LEB128.
///
/// One allocation instead of a shared key, a profile and a contribution list: no reference
/// count, no other allocations' rounding, 32 bytes less in the lead, and the contributions a
/// scoring event updates sit beside the key its lookup just compared (one cache miss fewer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ident(Box<[u8]>);

/// Bytes per contribution record.
const CONTRIBUTION: usize = 18;

fn put_contribution(out: &mut [u8], ri: u16, c: Engagement) {
    out[..2].copy_from_slice(&ri.to_le_bytes());
    out[2..10].copy_from_slice(&c.value.to_le_bytes());
    out[10..18].copy_from_slice(&c.at.to_le_bytes());
}

fn read_contribution(b: &[u8]) -> (u16, Engagement) {
    let mut r = [0u8; 2];
    let mut v = [0u8; 8];
    let mut a = [0u8; 8];
    r.copy_from_slice(&b[..2]);
    v.copy_from_slice(&b[2..10]);
    a.copy_from_slice(&b[10..18]);
    (
        u16::from_le_bytes(r),
        Engagement {
            value: f64::from_le_bytes(v),
            at: i64::from_le_bytes(a),
        },
    )
}

impl Ident {
    fn pack<'a>(
        key: &[u8],
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        contributions: &[u8],
    ) -> Ident {
        let mut profile = Vec::new();
        for (k, v) in pairs {
            put_name(&mut profile, k);
            put_text(&mut profile, v);
        }
        Ident::assemble(
            key,
            profile.len(),
            |out| out.extend_from_slice(&profile),
            contributions,
        )
    }

    /// Builds the allocation at its exact size (one allocation, no copy when boxed):
    /// `write_profile` must write `profile_len` bytes.
    fn assemble(
        key: &[u8],
        profile_len: usize,
        write_profile: impl FnOnce(&mut Vec<u8>),
        contributions: &[u8],
    ) -> Ident {
        let total = len_size(key.len())
            + key.len()
            + len_size(profile_len)
            + profile_len
            + contributions.len();
        let mut out = Vec::with_capacity(total);
        put_len(&mut out, key.len());
        out.extend_from_slice(key);
        put_len(&mut out, profile_len);
        write_profile(&mut out);
        out.extend_from_slice(contributions);
        debug_assert_eq!(out.len(), total, "the profile's length was computed wrong");
        Ident(out.into_boxed_slice())
    }

    /// Sets (or, for an empty value, removes) each attribute of `attrs`, which are sorted by
    /// name and unique, merged with the sorted profile: one walk measures the new profile,
    /// the same walk writes it into one exact-size allocation (none when nothing changes).
    /// True when the profile changed.
    fn merge_sorted<N: AsRef<str>, V: AsRef<str>>(&mut self, attrs: &[(N, V)]) -> bool {
        let (ks, ke, ps, cs) = self.layout();
        let packed = &self.0[ps..cs];
        let mut new_len = 0;
        let changed = merge_walk(packed, attrs, |m| {
            new_len += match m {
                Merged::Kept(entry) => entry.len(),
                Merged::Set(name, value) => entry_size(name, value),
            }
        });
        if !changed {
            return false;
        }
        let write = |out: &mut Vec<u8>| {
            merge_walk(packed, attrs, |m| match m {
                Merged::Kept(entry) => out.extend_from_slice(entry),
                Merged::Set(name, value) => {
                    put_name(out, name);
                    put_text(out, value);
                }
            });
        };
        *self = Ident::assemble(&self.0[ks..ke], new_len, write, &self.0[cs..]);
        true
    }

    /// Offsets in the allocation: `(key start, key end, profile start, contributions
    /// start)`. No UTF-8 check: this runs for every lookup and every scoring event.
    #[inline]
    fn layout(&self) -> (usize, usize, usize, usize) {
        let total = self.0.len();
        let mut r = Reader { rest: &self.0 };
        let key_len = r.len().unwrap_or(0);
        let key_start = total - r.rest.len();
        let key_end = (key_start + key_len).min(total);
        r.rest = &self.0[key_end..];
        let profile_len = r.len().unwrap_or(0);
        let profile_start = total - r.rest.len();
        let contributions_start = (profile_start + profile_len).min(total);
        (key_start, key_end, profile_start, contributions_start)
    }

    /// The key's bytes, the packed profile and the contribution records.
    fn parts(&self) -> (&[u8], &[u8], &[u8]) {
        let (ks, ke, ps, cs) = self.layout();
        (&self.0[ks..ke], &self.0[ps..cs], &self.0[cs..])
    }

    /// The key's bytes (lookups compare these: no UTF-8 check).
    #[inline]
    fn key_bytes(&self) -> &[u8] {
        // The key's length is nearly always one byte (keys under 128 bytes).
        match self.0.first() {
            Some(&n) if n < 0x80 => self.0.get(1..1 + usize::from(n)).unwrap_or(&[]),
            _ => {
                let (ks, ke, _, _) = self.layout();
                &self.0[ks..ke]
            }
        }
    }

    fn key(&self) -> &str {
        std::str::from_utf8(self.key_bytes()).unwrap_or("")
    }

    fn profile(&self) -> Profile<'_> {
        let (_, _, ps, cs) = self.layout();
        Profile {
            packed: &self.0[ps..cs],
        }
    }

    fn contributions(&self) -> &[u8] {
        &self.0[self.contributions_at()..]
    }

    /// Where the contribution records start.
    #[inline]
    fn contributions_at(&self) -> usize {
        self.layout().3
    }

    /// Bytes held (memory accounting).
    pub fn byte_len(&self) -> usize {
        self.0.len()
    }
}

/// A lead's profile attributes, sorted by name (a view of its packed identity).
#[derive(Clone, Copy, Debug)]
pub struct Profile<'a> {
    packed: &'a [u8],
}

/// Iterates a profile's `(name, value)` pairs in name order.
pub struct ProfileIter<'a> {
    r: Reader<'a>,
}

impl<'a> Iterator for ProfileIter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        if self.r.rest.is_empty() {
            return None;
        }
        let name = self.r.name()?;
        let value = self.r.text()?;
        Some((name, value))
    }
}

impl<'a> Profile<'a> {
    pub fn iter(&self) -> ProfileIter<'a> {
        ProfileIter {
            r: Reader { rest: self.packed },
        }
    }

    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.packed.is_empty()
    }

    /// The value of `name`. Compares names as bytes and checks only the value found.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        let mut r = Reader { rest: self.packed };
        while !r.rest.is_empty() {
            let e = r.raw_entry()?;
            if e.name == name.as_bytes() {
                return std::str::from_utf8(e.value).ok();
            }
        }
        None
    }

    /// The value of each of `names`, which must be sorted (byte order; repeats allowed), as
    /// `get` gives it, in one walk of the profile (it is sorted too): `f(k, value)` for the
    /// `k`-th name, in turn. Names out of order are not found after a larger one.
    pub fn get_sorted<'n>(
        &self,
        names: impl IntoIterator<Item = &'n str>,
        mut f: impl FnMut(usize, Option<&'a str>),
    ) {
        let mut r = Reader { rest: self.packed };
        let mut cur = r.raw_entry();
        for (k, name) in names.into_iter().enumerate() {
            while cur.is_some_and(|e| e.name < name.as_bytes()) {
                cur = r.raw_entry();
            }
            let value = cur
                .filter(|e| e.name == name.as_bytes())
                .and_then(|e| std::str::from_utf8(e.value).ok());
            f(k, value);
        }
    }
}

impl PartialEq for Profile<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

/// Per-lead state that only some leads have: kept out of line so a plain lead stays small.
#[derive(Clone, Debug)]
pub struct Extra {
    /// Cooldowns (a rule with a cooldown that has scored this lead: `t_last`), SLA clocks,
    /// SLA clock counts, the last `RECENT_TRANSITIONS` stage changes (oldest first) and the
    /// keyed cooldowns (rules with a `cooldown_key`: rule, value, `t_last`, in the order the
    /// values were first remembered; at most `MAX_COOLDOWN_KEYS` per rule, SPEC §4), in one
    /// allocation. A keyed value over `KEYED_INLINE_MAX` bytes is in `Rare::long_values`.
    lists: Lists,
    /// When the lead last became an MQL ([`NO_MQL`]: never); its grade then is in the lead
    /// (`Lead::mql`). 8 bytes rather than an `Option<MqlMark>`'s 16 keep this box in a 32-byte
    /// size class (issue 17, item 4).
    pub(super) mql_at: i64,
    /// What few leads have, one more box away, so `Extra` is no larger than before SPEC v2.
    pub rare: Option<Box<Rare>>,
}

/// `Extra::mql_at` of a lead that never was an MQL (event times are never negative).
pub(super) const NO_MQL: i64 = i64::MIN;

impl Default for Extra {
    fn default() -> Self {
        Extra {
            lists: Lists::default(),
            mql_at: NO_MQL,
            rare: None,
        }
    }
}

/// When a lead last became an MQL, and its grade then (`None`: below every grade, D).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MqlMark {
    pub at: i64,
    pub grade: Option<u8>,
}

/// Per-lead state that few leads have.
#[derive(Clone, Debug, Default)]
pub struct Rare {
    /// For a lead created again after an eviction: the time of that creation.
    pub reborn: Option<i64>,
    /// The event time of the latest engagement reset on entering `recycled` (SPEC §4: later
    /// arrivals older than it score nothing).
    pub reset_at: Option<i64>,
    /// The duplicate window when `dedupe.recent_ids` is above `RECENT_IDS`: the ring of id
    /// hashes, and its next slot.
    pub ids: Vec<u64>,
    pub ids_next: u16,
    /// Keyed cooldown values longer than `KEYED_INLINE_MAX` bytes, in the order the lists
    /// refer to them (`KeyedValue::Long`).
    pub long_values: Vec<Box<[u8]>>,
}

static NO_RARE: Rare = Rare {
    reborn: None,
    reset_at: None,
    ids: Vec::new(),
    ids_next: 0,
    long_values: Vec::new(),
};

impl Rare {
    fn is_empty(&self) -> bool {
        self.reborn.is_none()
            && self.reset_at.is_none()
            && self.ids.is_empty()
            && self.long_values.is_empty()
    }
}

impl Extra {
    fn is_empty(&self) -> bool {
        self.lists.is_empty()
            && self.mql_at == NO_MQL
            && self.rare.as_deref().is_none_or(Rare::is_empty)
    }

    /// Rules with a cooldown (no `cooldown_key`) that have scored the lead.
    pub fn cooldowns(&self) -> &[Cooldown] {
        self.lists.get()
    }

    /// The running SLA clocks.
    pub fn clocks(&self) -> &[Clock] {
        self.lists.get()
    }

    /// Per SLA policy, the clocks started.
    pub fn sla_started(&self) -> &[SlaCount] {
        self.lists.get()
    }

    /// The last `RECENT_TRANSITIONS` stage changes, oldest first.
    pub fn recent_transitions(&self) -> &[RecentTransition] {
        self.lists.get()
    }

    /// The keyed cooldowns, in the order their values were first remembered.
    pub fn keyed_cooldowns(&self) -> impl Iterator<Item = KeyedEntry<'_>> + '_ {
        let long = &self.rare().long_values;
        self.lists.keyed().map(move |k| KeyedEntry {
            rule: k.rule,
            value: match k.value {
                KeyedValue::Inline(v) => v,
                KeyedValue::Long(i) => long.get(i).map_or(&[][..], |v| &v[..]),
            },
            t_last: k.t_last,
            at: k.at,
        })
    }

    /// Remembers keyed cooldowns `(rule, value, t_last)` after those the lead has, in one
    /// change of the allocation; values longer than `KEYED_INLINE_MAX` go out of line.
    pub fn keyed_push<'v>(&mut self, entries: impl IntoIterator<Item = (u16, &'v [u8], i64)>) {
        let mut words = Vec::new();
        for (rule, value, t_last) in entries {
            let value = if value.len() <= KEYED_INLINE_MAX {
                KeyedValue::Inline(value)
            } else {
                let long = &mut self.rare_mut().long_values;
                long.push(value.into());
                KeyedValue::Long(long.len() - 1)
            };
            keyed_entry(&mut words, rule, value, t_last);
        }
        self.lists.keyed_append(&words);
    }

    /// Sets the `t_last` of the keyed cooldown at `entry` (`KeyedEntry::at`).
    pub fn keyed_set_time(&mut self, entry: usize, t_last: i64) {
        self.lists.keyed_set_time(entry, t_last);
    }

    /// Forgets the keyed cooldown at `entry` (`KeyedEntry::at`), and its value if long.
    pub fn keyed_remove(&mut self, entry: usize) {
        if let Some(i) = self.lists.keyed_remove(entry) {
            let rare = self.rare_mut();
            if i < rare.long_values.len() {
                rare.long_values.remove(i);
            }
            if rare.is_empty() {
                self.rare = None;
            }
            self.lists.keyed_long_removed(i);
        }
    }

    /// The lists, to change.
    pub fn lists_mut(&mut self) -> &mut Lists {
        &mut self.lists
    }

    /// The lists, as one allocation (memory accounting).
    pub fn lists(&self) -> &Lists {
        &self.lists
    }

    /// Installs restored lists.
    pub fn set_lists(&mut self, lists: Lists) {
        self.lists = lists;
    }

    pub fn rare(&self) -> &Rare {
        self.rare.as_deref().unwrap_or(&NO_RARE)
    }

    /// The rare state, created on first use.
    pub fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// Installs restored rare state (nothing is allocated when it is empty).
    pub fn set_rare(&mut self, rare: Rare) {
        self.rare = (!rare.is_empty()).then(|| Box::new(rare));
    }
}

#[derive(Clone, Debug)]
pub struct Lead {
    /// The key, the profile and the per-rule contributions (`Lead::key`, `Lead::profile`,
    /// `Lead::contributions`).
    ident: Ident,
    pub engagement: Engagement,
    pub fit: f64,
    /// The latest event time applied to this lead (eviction age).
    pub last_seen: i64,
    pub recent: RecentIds,
    recent_len: u8,
    recent_next: u8,
    /// The creating event's time (when the lead entered `new`), as 48 bits (exact to the
    /// year 10889) in two fields that fill what would be padding.
    created_hi: u32,
    created_lo: u16,
    pub transitions: u32,
    pub stage: Stage,
    pub grade: Option<u8>,
    /// The grade at the latest MQL (`Lead::mql`) as `index + 1`, 0 for below every grade
    /// (indexes are below `MAX_GRADES` = 255, so it fits): a byte that would be padding here.
    mql_grade: u8,
    extra: Option<Box<Extra>>,
}

/// What a lead without out-of-line state reads (a `Box<[T]>` cannot be made in a const).
static NO_EXTRA: std::sync::LazyLock<Extra> = std::sync::LazyLock::new(Extra::default);

impl Lead {
    pub fn new(key: &str, t: i64) -> Lead {
        let mut lead = Lead {
            ident: Ident::assemble(key.as_bytes(), 0, |_| {}, &[]),
            engagement: Engagement::zero(t),
            fit: 0.0,
            last_seen: t,
            recent: RecentIds::default(),
            recent_len: 0,
            recent_next: 0,
            created_hi: 0,
            created_lo: 0,
            transitions: 0,
            stage: Stage::New,
            grade: None,
            mql_grade: 0,
            extra: None,
        };
        lead.set_created(t);
        lead
    }

    /// When the lead was created (entered `new`): its creating event's time.
    pub fn created(&self) -> i64 {
        (i64::from(self.created_hi) << 16) | i64::from(self.created_lo)
    }

    /// Sets the creation time, clamped to the 48 bits kept.
    pub fn set_created(&mut self, t: i64) {
        let t = t.clamp(0, (1 << 48) - 1);
        self.created_hi = (t >> 16) as u32;
        self.created_lo = (t & 0xffff) as u16;
    }

    /// When the lead entered its current stage (SPEC §5): the last transition's time, or its
    /// creation for `new`.
    pub fn stage_entered(&self) -> i64 {
        match self.extra().recent_transitions().last() {
            Some(t) if self.transitions > 0 => t.at(),
            _ => self.created(),
        }
    }

    /// Whether `h` (an [`event_id_hash`]) is among the last `window` event ids applied
    /// (SPEC §2).
    pub fn seen_id(&self, h: u64, window: usize) -> bool {
        if window <= RECENT_IDS {
            self.recent.contains(self.recent_len as usize, h)
        } else {
            self.extra().rare().ids.contains(&h)
        }
    }

    /// Remembers `h` (an [`event_id_hash`]) in a window of `window` ids, forgetting the
    /// oldest beyond it.
    pub fn push_id(&mut self, h: u64, window: usize) {
        if window <= RECENT_IDS {
            self.recent.set(self.recent_next as usize, h);
            self.recent_next = ((self.recent_next as usize + 1) % window) as u8;
            self.recent_len = (self.recent_len as usize + 1).min(window) as u8;
        } else {
            let e = self.extra_mut().rare_mut();
            if e.ids.len() < window {
                e.ids.push(h);
                e.ids_next = (e.ids.len() % window) as u16;
            } else {
                e.ids[e.ids_next as usize] = h;
                e.ids_next = ((e.ids_next as usize + 1) % window) as u16;
            }
        }
    }

    /// The remembered ids, oldest first (no allocation: snapshots of millions of leads call
    /// this once per lead).
    pub fn recent_id_iter(&self, window: usize) -> impl ExactSizeIterator<Item = u64> + '_ {
        let (len, next) = if window <= RECENT_IDS {
            (self.recent_len as usize, self.recent_next as usize)
        } else {
            let rare = self.extra().rare();
            (rare.ids.len(), rare.ids_next as usize)
        };
        // Not full yet: in order from slot 0; full: from the next slot round.
        let first = if len < window { 0 } else { next.min(len) };
        (0..len).map(move |j| {
            let i = (first + j) % len;
            if window <= RECENT_IDS {
                self.recent.get(i)
            } else {
                self.extra().rare().ids[i]
            }
        })
    }

    /// The remembered ids, oldest first.
    pub fn recent_ids(&self, window: usize) -> Vec<u64> {
        self.recent_id_iter(window).collect()
    }

    /// Replaces the duplicate window by `ids` (oldest first), keeping the newest `window`.
    pub fn set_recent_ids(&mut self, ids: &[u64], window: usize) {
        self.recent = RecentIds::default();
        self.recent_len = 0;
        self.recent_next = 0;
        if let Some(rare) = self
            .extra
            .as_deref_mut()
            .and_then(|e| e.rare.as_deref_mut())
        {
            rare.ids = Vec::new();
            rare.ids_next = 0;
        }
        let keep = &ids[ids.len().saturating_sub(window)..];
        if window > RECENT_IDS && !keep.is_empty() {
            self.extra_mut().rare_mut().ids.reserve_exact(keep.len());
        }
        for &h in keep {
            // Snapshots before the 48-bit window hold 64-bit hashes: their low bits are the
            // hashes of the same ids now.
            self.push_id(h & EVENT_ID_HASH_MASK, window);
        }
    }

    /// The lead key (SPEC §1).
    pub fn key(&self) -> &str {
        self.ident.key()
    }

    /// This lead's key against `other`'s, in the order of `str` (the order of their bytes),
    /// without a UTF-8 check: the tie order of timers due at the same time (SPEC §6) and of
    /// eviction's candidates.
    #[inline]
    pub fn cmp_key(&self, other: &Lead) -> std::cmp::Ordering {
        self.ident.key_bytes().cmp(other.ident.key_bytes())
    }

    /// Whether this is the lead of `key` (the lookup's comparison, without a UTF-8 check).
    #[inline]
    pub fn has_key(&self, key: &str) -> bool {
        self.ident.key_bytes() == key.as_bytes()
    }

    /// The profile attributes, sorted by name (SPEC §3).
    pub fn profile(&self) -> Profile<'_> {
        self.ident.profile()
    }

    /// The packed key and profile (memory accounting).
    pub fn ident(&self) -> &Ident {
        &self.ident
    }

    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.profile().get(name)
    }

    /// Sets (or, for an empty value, removes) a profile attribute; true when it changed.
    pub fn set_attribute(&mut self, name: &str, value: &str) -> bool {
        self.ident.merge_sorted(&[(name, value)])
    }

    /// Sets (or, for empty values, removes) each attribute of `attrs` in turn, the result and
    /// the answer those `set_attribute` calls give (a name given twice: the last value);
    /// true when the profile changed. Sorted, unique names (as events carry them) take one
    /// pass and at most one allocation.
    pub fn set_attributes<N: AsRef<str>, V: AsRef<str>>(&mut self, attrs: &[(N, V)]) -> bool {
        if attrs.windows(2).all(|w| w[0].0.as_ref() < w[1].0.as_ref()) {
            return self.ident.merge_sorted(attrs);
        }
        let mut changed = false;
        for (name, value) in attrs {
            changed |= self.set_attribute(name.as_ref(), value.as_ref());
        }
        changed
    }

    /// Replaces the profile by `pairs`, which are sorted by name and unique (a restore).
    pub fn set_profile_sorted<'a>(&mut self, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let (key, _, contributions) = self.ident.parts();
        self.ident = Ident::pack(key, pairs, contributions);
    }

    pub fn owner_id(&self) -> Option<&str> {
        self.attribute("owner_id")
    }

    pub fn extra(&self) -> &Extra {
        self.extra.as_deref().unwrap_or(&NO_EXTRA)
    }

    /// Starts loading the lead's own field that points to its key allocation, wherever the
    /// compiler placed it in the struct (both ends: it may cross a cache line). Reads nothing.
    #[inline]
    pub(super) fn prefetch_ident_field(&self) {
        let field = (&self.ident as *const Ident).cast::<u8>();
        prefetch_bytes(field, 1);
        prefetch_bytes(field.wrapping_add(std::mem::size_of::<Ident>() - 1), 1);
    }

    /// Starts loading the first line of the lead's key allocation, without waiting: it holds
    /// the key's length and the key, unless the key crosses into the next line. Reads only
    /// this lead's own fields.
    #[inline]
    pub(super) fn prefetch_key(&self) {
        prefetch_bytes(self.ident.0.as_ptr(), 1);
    }

    /// Starts loading the lead's key allocation (key, profile, contributions) and its
    /// out-of-line state into the CPU caches, without waiting; reads only this lead's own
    /// fields. See `PartitionState::prefetch_state`.
    #[inline]
    pub(super) fn prefetch_parts(&self) {
        prefetch_bytes(self.ident.0.as_ptr(), self.ident.0.len());
        if let Some(x) = self.extra.as_deref() {
            prefetch_bytes((x as *const Extra).cast(), std::mem::size_of::<Extra>());
        }
    }

    /// Starts loading the lists of the out-of-line state that every event reads (their one
    /// allocation: cooldowns, SLA clocks, keyed cooldowns and the rest); reads the box
    /// (loaded by `prefetch_parts` by now).
    #[inline]
    pub(super) fn prefetch_lists(&self) {
        if let Some(x) = self.extra.as_deref() {
            let words = x.lists.words();
            if !words.is_empty() {
                prefetch_bytes(words.as_ptr().cast(), std::mem::size_of_val(words));
            }
        }
    }

    /// The out-of-line state if the lead has any (memory accounting).
    pub fn extra_box(&self) -> Option<&Extra> {
        self.extra.as_deref()
    }

    /// The out-of-line state, created on first use.
    pub fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// Installs restored out-of-line state (nothing is allocated when it is empty).
    pub fn set_extra(&mut self, extra: Extra) {
        self.extra = (!extra.is_empty()).then(|| Box::new(extra));
    }

    /// The lead's latest MQL, if it ever was one.
    pub fn mql(&self) -> Option<MqlMark> {
        let at = self.extra().mql_at;
        (at != NO_MQL).then(|| MqlMark {
            at,
            grade: self.mql_grade.checked_sub(1),
        })
    }

    /// Marks the lead's latest MQL (or, with `None`, none).
    pub fn set_mql(&mut self, mql: Option<MqlMark>) {
        match mql {
            Some(m) => {
                self.extra_mut().mql_at = m.at;
                // Grades are at most `MAX_GRADES` (config), so index + 1 fits.
                self.mql_grade = m.grade.map_or(0, |g| g.saturating_add(1));
            }
            None => {
                if let Some(x) = self.extra.as_deref_mut() {
                    x.mql_at = NO_MQL;
                }
                self.mql_grade = 0;
            }
        }
    }

    pub fn clocks(&self) -> &[Clock] {
        self.extra().clocks()
    }

    /// Per engagement rule that scored: `(rule index, its own decayed sum, no clamp)`, in the
    /// order the rules first scored (for explanations).
    pub fn contributions(&self) -> impl ExactSizeIterator<Item = (u16, Engagement)> + '_ {
        self.ident
            .contributions()
            .chunks_exact(CONTRIBUTION)
            .map(read_contribution)
    }

    /// Replaces the contributions (a restore, or a reset on entering `recycled`).
    pub fn set_contributions(&mut self, list: &[(u16, Engagement)]) {
        let mut bytes = vec![0u8; list.len() * CONTRIBUTION];
        for (slot, &(ri, c)) in bytes.chunks_exact_mut(CONTRIBUTION).zip(list) {
            put_contribution(slot, ri, c);
        }
        let (key, profile, _) = self.ident.parts();
        self.ident = Ident::assemble(
            key,
            profile.len(),
            |out| out.extend_from_slice(profile),
            &bytes,
        );
    }

    /// Adds `points` at `t` to rule `ri`'s contribution: in place, or as a new record (the
    /// allocation grows only for a rule that had not scored).
    pub fn add_contribution(&mut self, ri: u16, points: f64, t: i64, unclamped: &Decay) {
        let at = self.ident.contributions_at();
        let records = &mut self.ident.0[at..];
        for slot in records.chunks_exact_mut(CONTRIBUTION) {
            let (r, mut c) = read_contribution(slot);
            if r == ri {
                c.add(points, t, unclamped);
                put_contribution(slot, ri, c);
                return;
            }
        }
        let mut c = Engagement::zero(t);
        c.add(points, t, unclamped);
        let mut v = std::mem::take(&mut self.ident.0).into_vec();
        v.reserve_exact(CONTRIBUTION);
        let end = v.len();
        v.resize(end + CONTRIBUTION, 0);
        put_contribution(&mut v[end..], ri, c);
        self.ident.0 = v.into_boxed_slice();
    }
}

/// Hints the CPU to load the cache lines of `len` bytes at `p` (at most the first two lines:
/// what an event reads first). A prefetch never faults and changes no value, so a stale or
/// dangling address only wastes the hint.
#[inline(always)]
pub(super) fn prefetch_bytes(p: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: `prefetch` is a hint: it does not access memory architecturally and
        // cannot fault, whatever the address.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(p.cast());
            if len > 64 {
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64).cast());
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, len);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The profile update as it was before the one-pass merge, kept as the model: the
    /// profile decoded to pairs, one attribute changed, all packed again.
    fn model_set_attribute(lead: &mut Lead, name: &str, value: &str) -> bool {
        let profile = lead.profile();
        if profile
            .iter()
            .find(|(k, _)| *k == name)
            .map_or("", |(_, v)| v)
            == value
        {
            return false;
        }
        let mut pairs: Vec<(&str, &str)> = profile.iter().filter(|(k, _)| *k != name).collect();
        if !value.is_empty() {
            let at = pairs.partition_point(|(k, _)| *k < name);
            pairs.insert(at, (name, value));
        }
        let (key, _, contributions) = lead.ident.parts();
        lead.ident = Ident::pack(key, pairs, contributions);
        true
    }

    /// Names from the common list (one byte), others (as text), near each other in order.
    fn attr_name() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec!["country", "employees", "owner_id", "title", "city"])
                .prop_map(str::to_string),
            prop::sample::select(vec!["a", "countrz", "c", "zz_custom", "title2", ""])
                .prop_map(str::to_string),
            "[a-z_]{1,6}",
        ]
    }

    /// Empty (a removal), short, or past one LEB128 length byte.
    fn attr_value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            prop::sample::select(vec!["DE", "US", "CTO", "1200"]).prop_map(str::to_string),
            "[a-zé]{0,4}",
            (120usize..140).prop_map(|n| "v".repeat(n)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Keys compare as their `str`s do: shared prefixes, two-byte characters, keys past
        /// 127 bytes (two length bytes), equal keys.
        #[test]
        fn keys_compare_as_their_text(
            a in "[aé]{0,3}|a{125,130}[aé]{0,4}|é{62,66}",
            b in "[aé]{0,3}|a{125,130}[aé]{0,4}|é{62,66}",
        ) {
            let (la, lb) = (Lead::new(&a, 0), Lead::new(&b, 0));
            prop_assert_eq!(la.cmp_key(&lb), a.cmp(&b));
        }

        /// The slot table finds exactly what a search of the list finds, for common names,
        /// names one byte off them, and any short name.
        #[test]
        fn common_name_is_a_search_of_the_list(
            name in prop_oneof![
                prop::sample::select(COMMON_NAMES.to_vec()).prop_map(str::to_string),
                (prop::sample::select(COMMON_NAMES.to_vec()), any::<prop::sample::Index>(), b'_'..=b'z')
                    .prop_map(|(n, at, b)| {
                        let mut v = n.as_bytes().to_vec();
                        v[at.index(n.len())] = b;
                        String::from_utf8(v).expect("ASCII")
                    }),
                "[a-z_]{0,16}",
            ]
        ) {
            prop_assert_eq!(
                common_name(&name),
                COMMON_NAMES.iter().position(|c| *c == name)
            );
        }

        /// Setting an event's attributes at once gives the profile, the bytes and the answer
        /// of setting them one by one the old way, sorted or not, names repeated or not; the
        /// key and the contributions stay.
        #[test]
        fn set_attributes_matches_one_by_one(
            before in prop::collection::vec((attr_name(), attr_value()), 0..8),
            attrs in prop::collection::vec((attr_name(), attr_value()), 0..8),
            sorted in any::<bool>(),
        ) {
            let mut model = Lead::new("lead@x.io", 0);
            let none = Decay { half_life_ms: None, min: None, max: None };
            model.add_contribution(3, 5.0, 7, &none);
            for (k, v) in &before {
                model_set_attribute(&mut model, k, v);
            }
            let mut lead = model.clone();
            let mut attrs = attrs;
            if sorted {
                attrs.sort();
                attrs.dedup_by(|a, b| a.0 == b.0);
            }
            let mut expected = false;
            for (k, v) in &attrs {
                expected |= model_set_attribute(&mut model, k, v);
            }
            prop_assert_eq!(lead.set_attributes(&attrs), expected);
            prop_assert_eq!(&lead.ident, &model.ident);
            prop_assert_eq!(lead.key(), "lead@x.io");
            prop_assert_eq!(lead.contributions().len(), 1);
            for (k, _) in &attrs {
                let found = model.profile().iter().find(|(n, _)| n == k).map(|(_, v)| v);
                prop_assert_eq!(lead.attribute(k), found);
            }
        }
    }

    #[test]
    fn a_lead_has_no_padding_to_spare_and_did_not_grow() {
        // v1's lead was 168 bytes; v2's creation time fills what was padding; the key, the
        // profile and the contributions now share one allocation; the duplicate window keeps
        // 48-bit hashes (136 -> 120), and the MQL grade takes the last spare byte (issue 17,
        // item 4).
        assert_eq!(std::mem::size_of::<Lead>(), 120);
        // v1's out-of-line part was 112 bytes; v2's additions sit one box further. The MQL
        // time (for the live conversion metrics) is here: MQL'd leads are too many for the
        // rare box, whose allocation would cost them more.
        // Exact-sized lists (two words each) and keyed cooldowns moved in from `Rare`, the
        // MQL mark 16 -> 8 bytes: 96 bytes, mimalloc's 96-byte class (was 104 in the 112-byte
        // class; 128 in glibc's 144-byte chunk before). Then four of the lists in one
        // allocation (`Lists`): 48 bytes; the keyed cooldowns there too: 32 (issue 17, item 4).
        assert_eq!(std::mem::size_of::<Extra>(), 32);
        assert_eq!(std::mem::size_of::<RecentTransition>(), 8);
    }

    #[test]
    fn the_mql_mark_keeps_its_time_and_grade() {
        let mut l = Lead::new("a", 0);
        assert_eq!(l.mql(), None, "never an MQL");
        l.extra_mut();
        assert_eq!(l.mql(), None, "out-of-line state alone is no MQL");
        for (at, grade) in [
            (1_796_033_000_123, None),
            (0, Some(0)),
            (i64::MAX, Some(254)),
        ] {
            let m = MqlMark { at, grade };
            l.set_mql(Some(m));
            assert_eq!(l.mql(), Some(m));
        }
        l.set_mql(None);
        assert_eq!(l.mql(), None);
    }

    #[test]
    fn creation_time_round_trips_through_48_bits() {
        let mut l = Lead::new("a", 1_796_033_000_000);
        assert_eq!(l.created(), 1_796_033_000_000);
        l.set_created(0);
        assert_eq!(l.created(), 0);
        l.set_created(i64::MAX);
        assert_eq!(l.created(), (1 << 48) - 1, "saturates past the year 10889");
    }

    #[test]
    fn the_duplicate_window_keeps_the_last_n_ids_in_order() {
        for window in [1, 3, 8, 9, 20] {
            let mut l = Lead::new("a", 0);
            for h in 1..=30u64 {
                assert!(!l.seen_id(h, window));
                l.push_id(h, window);
                assert!(l.seen_id(h, window));
                let first = h.saturating_sub(window as u64) + 1;
                let expected: Vec<u64> = (first.max(1)..=h).collect();
                assert_eq!(l.recent_ids(window), expected, "window {window} after {h}");
                if h > window as u64 {
                    assert!(!l.seen_id(h - window as u64, window), "forgotten");
                }
            }
            // A narrower window on restore keeps the newest.
            let ids = l.recent_ids(window);
            l.set_recent_ids(&ids, 2);
            let newest: Vec<u64> = if window == 1 { vec![30] } else { vec![29, 30] };
            assert_eq!(l.recent_ids(2), newest);
        }
    }

    #[test]
    fn the_duplicate_window_keeps_48_bits_and_takes_older_snapshots_64_bit_hashes() {
        for window in [8, 16] {
            let mut l = Lead::new("a", 0);
            // Hashes that differ only in the high 16 of the 48 bits, or only past them.
            let a = (1 << 47) | (7 << 32) | 5;
            l.push_id(a, window);
            assert!(l.seen_id(a, window));
            assert!(
                !l.seen_id(a ^ (1 << 40), window),
                "the high half is compared"
            );
            assert!(!l.seen_id(5, window), "the low half alone is not a match");
            assert_eq!(l.recent_ids(window), vec![a], "48 bits read back");
            // An older snapshot's window holds the full 64-bit hash of an id; the same id
            // arriving after the restore is a duplicate.
            l.set_recent_ids(&[id_hash("e-1"), id_hash("e-2")], window);
            assert!(
                id_hash("e-1") >> 48 != 0,
                "the test needs a hash past 48 bits"
            );
            assert!(l.seen_id(event_id_hash("e-1"), window));
            assert!(l.seen_id(event_id_hash("e-2"), window));
            assert!(!l.seen_id(event_id_hash("e-3"), window));
            assert_eq!(
                l.recent_ids(window),
                vec![event_id_hash("e-1"), event_id_hash("e-2")]
            );
        }
    }

    #[test]
    fn profile_keeps_attributes_sorted_and_removes_empty_values() {
        let mut p = Lead::new("lead@x.io", 0);
        assert!(p.profile().is_empty());
        assert!(p.set_attribute("title", "CTO"));
        assert!(p.set_attribute("country", "DE"));
        assert!(p.set_attribute("employees", "1200"));
        assert!(
            p.set_attribute("zz_custom", "yes"),
            "a name not in the common list"
        );
        assert!(!p.set_attribute("country", "DE"), "same value: no change");
        assert!(
            !p.set_attribute("missing", ""),
            "removing an absent attribute: no change"
        );
        let long = "x".repeat(300); // a length above one LEB128 byte
        assert!(p.set_attribute("notes", &long));
        assert_eq!(
            p.profile().iter().collect::<Vec<_>>(),
            vec![
                ("country", "DE"),
                ("employees", "1200"),
                ("notes", long.as_str()),
                ("title", "CTO"),
                ("zz_custom", "yes"),
            ]
        );
        assert!(p.set_attribute("title", ""));
        assert_eq!(p.attribute("title"), None);
        assert_eq!(p.attribute("notes"), Some(long.as_str()));
        assert_eq!(p.profile().len(), 4);
        assert_eq!(p.key(), "lead@x.io", "the key survives profile changes");
    }

    proptest::proptest! {
        /// Lengths read back as written, one after another, across the one-byte fast path's
        /// edge (127, 128) and up to the largest; a length cut short reads as none.
        #[test]
        fn lengths_read_back_as_written(
            ns in proptest::collection::vec(
                proptest::prop_oneof![0..300usize, Just(127usize), Just(128), proptest::num::usize::ANY],
                1..8,
            ),
        ) {
            let mut out = Vec::new();
            for &n in &ns {
                put_len(&mut out, n);
            }
            let mut r = Reader { rest: &out };
            for &n in &ns {
                proptest::prop_assert_eq!(r.len(), Some(n));
            }
            proptest::prop_assert!(r.rest.is_empty());
            if let Some(&last) = ns.last() {
                let mut one = Vec::new();
                put_len(&mut one, last);
                one.pop();
                proptest::prop_assert_eq!(Reader { rest: &one }.len(), None);
            }
        }
    }

    #[test]
    fn every_transition_reason_survives_its_one_byte_code() {
        let mut reasons = vec!["score", "fast_track"];
        reasons.extend(CrmType::ALL.iter().map(|c| c.as_str()));
        for reason in reasons {
            let t = RecentTransition::new(Stage::New, Stage::Mql, reason, 7);
            assert_eq!(t.reason(), reason);
            assert_eq!(static_reason(reason), Some(t.reason()));
            assert_eq!((t.from(), t.to(), t.at()), (Stage::New, Stage::Mql, 7));
        }
    }

    #[test]
    fn common_names_are_found_and_take_one_byte() {
        for (i, name) in COMMON_NAMES.iter().enumerate() {
            assert_eq!(common_name(name), Some(i), "{name}");
            // A name in a common name's slot (same length, first and next-to-last byte) is
            // not that name.
            let mut near = name.as_bytes().to_vec();
            near[1] ^= 0x20; // common names have at least 4 bytes: not one the slot reads
            let near = String::from_utf8(near).expect("ASCII");
            assert_eq!(name_slot(near.as_bytes()), name_slot(name.as_bytes()));
            assert_eq!(common_name(&near), None, "{near}");
        }
        for other in [
            "", "c", "ci", "cit", "cityy", "Country", "title ", "utm_", "owner",
        ] {
            assert_eq!(common_name(other), None, "{other:?}");
        }
        let mut l = Lead::new("k", 0);
        l.set_attribute("country", "US");
        // len "k" | profile length | code of country | len "US"
        assert_eq!(l.ident().byte_len(), 2 + 1 + 1 + 3);
        let long_key = "k".repeat(200);
        let mut l = Lead::new(&long_key, 0);
        l.set_attribute("custom", "v");
        assert_eq!(l.key(), long_key);
        assert_eq!(l.attribute("custom"), Some("v"));
    }

    #[test]
    fn key_profile_and_contributions_share_one_allocation_and_stay_apart() {
        let none = Decay {
            half_life_ms: None,
            min: None,
            max: None,
        };
        let mut l = Lead::new("lead@x.io", 0);
        l.add_contribution(3, 10.0, 5, &none);
        l.set_attribute("title", "CTO");
        l.add_contribution(1, 2.5, 7, &none);
        l.add_contribution(3, 1.0, 9, &none); // in place
        l.set_attribute("zz_custom", "x".repeat(200).as_str());
        let expected = vec![
            (3, Engagement { value: 11.0, at: 9 }),
            (1, Engagement { value: 2.5, at: 7 }),
        ];
        assert_eq!(l.contributions().collect::<Vec<_>>(), expected);
        assert_eq!(l.key(), "lead@x.io");
        assert_eq!(l.attribute("title"), Some("CTO"));
        assert_eq!(l.profile().len(), 2);
        // Key 1 + 9; profile: title 1 + 1 + 3, zz_custom 1 + 9 + 2 + 200 = 217 bytes, its
        // length 2 bytes of LEB128; 2 contributions of 18.
        assert_eq!(l.ident().byte_len(), 10 + 2 + 217 + 36);
        l.set_contributions(&[]);
        assert_eq!(l.contributions().len(), 0);
        assert_eq!(
            l.attribute("zz_custom").map(str::len),
            Some(200),
            "profile kept"
        );
        l.set_contributions(&expected);
        assert_eq!(l.contributions().collect::<Vec<_>>(), expected);
    }
}
