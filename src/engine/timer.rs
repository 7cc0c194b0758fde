//! A pending SLA warning or breach, and the order SPEC §6 fires them in.

use std::cmp::Ordering;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum TimerKind {
    Warning,
    Breach,
}

/// A pending warning or breach, ordered as SPEC §6 fires them: time, lead key, policy name
/// (rank), warning before breach.
///
/// Many clocks share a due time (business-hours deadlines fall on the same opening hour), so
/// the pending set's searches compare lead keys often. `prefix` holds the key's first 16
/// bytes, zero-padded, read big-endian: it orders two keys as the keys do whenever the two
/// prefixes differ, so most ties are settled inside the B-tree node without loading the key
/// (a cold allocation at scale). Equal prefixes fall back to the whole key.
#[derive(Clone, Debug)]
pub(super) struct Timer {
    pub due: i64,
    prefix: u128,
    pub lead: Arc<str>,
    pub rank: u16,
    pub kind: TimerKind,
    pub policy: u16,
}

impl Timer {
    pub fn new(due: i64, lead: Arc<str>, rank: u16, kind: TimerKind, policy: u16) -> Timer {
        Timer {
            due,
            prefix: key_prefix(&lead),
            lead,
            rank,
            kind,
            policy,
        }
    }

    /// The fields in firing order, the prefix before the key it abbreviates.
    fn order(&self) -> (i64, u128, &str, u16, TimerKind, u16) {
        (
            self.due,
            self.prefix,
            &self.lead,
            self.rank,
            self.kind,
            self.policy,
        )
    }
}

/// The first 16 bytes of `key`, zero-padded, as a big-endian number. For keys `a` and `b`,
/// `key_prefix(a) < key_prefix(b)` implies `a < b`: at the first byte where the padded
/// prefixes differ, either both keys have that byte (and it decides), or the shorter key ends
/// there with every byte before equal, and a key that is a prefix of another is smaller.
fn key_prefix(key: &str) -> u128 {
    let mut bytes = [0u8; 16];
    let n = key.len().min(16);
    bytes[..n].copy_from_slice(&key.as_bytes()[..n]);
    u128::from_be_bytes(bytes)
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Timer {}

impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Timer {
    fn cmp(&self, other: &Self) -> Ordering {
        self.order().cmp(&other.order())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// SPEC §6's order, spelled out on the whole key: the model the prefix must agree with.
    fn spec_order(a: &Timer, b: &Timer) -> Ordering {
        (a.due, &*a.lead, a.rank, a.kind, a.policy)
            .cmp(&(b.due, &*b.lead, b.rank, b.kind, b.policy))
    }

    /// Keys that share long beginnings, end inside or right after the 16 bytes, hold NUL
    /// bytes (the padding's value) and multi-byte characters.
    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a\\x00é]{0,20}",
            "lead[0-9]{1,3}@c[0-9]{0,2}\\.example",
            "[ab]{14,18}",
            ".{0,24}",
        ]
    }

    fn timer() -> impl Strategy<Value = Timer> {
        (0i64..3, key(), 0u16..2, any::<bool>(), 0u16..2).prop_map(|(due, k, rank, breach, p)| {
            let kind = if breach {
                TimerKind::Breach
            } else {
                TimerKind::Warning
            };
            Timer::new(due, Arc::from(k), rank, kind, p)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]
        #[test]
        fn timers_order_as_spec_6_says(a in timer(), b in timer()) {
            prop_assert_eq!(a.cmp(&b), spec_order(&a, &b), "{:?} vs {:?}", a.lead, b.lead);
        }
    }

    #[test]
    fn keys_that_differ_only_after_the_prefix_or_in_padding() {
        let t = |k: &str| Timer::new(5, Arc::from(k), 0, TimerKind::Warning, 0);
        let pairs = [
            ("lead1@company1.example", "lead1@company1.examplf"),
            ("ab", "ab\0"),
            ("ab\0", "ab\0\0"),
            ("", "\0"),
            ("0123456789abcdef", "0123456789abcdef0"),
            ("0123456789abcdef", "0123456789abcdeé"),
        ];
        for (lo, hi) in pairs {
            assert!(lo < hi, "{lo:?} < {hi:?} as strings");
            assert_eq!(t(lo).cmp(&t(hi)), Ordering::Less, "{lo:?} vs {hi:?}");
            assert_eq!(t(hi).cmp(&t(lo)), Ordering::Greater, "{hi:?} vs {lo:?}");
            assert_eq!(t(lo).cmp(&t(lo)), Ordering::Equal);
        }
    }
}
