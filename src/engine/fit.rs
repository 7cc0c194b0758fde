//! The fit score (SPEC §4) and [`FitMemo`], the answers of the costly fit rules remembered
//! per value.

use std::hash::BuildHasher;

use compact_str::CompactString;
use hashbrown::DefaultHashBuilder;

use super::lead::Profile;
use crate::model::matcher::Matcher;
use crate::model::rules::{FitTest, Ruleset};

/// The fit score evaluating every rule: the reference [`FitMemo::score`] is held to in tests.
#[cfg(test)]
pub(super) fn fit_score(rules: &Ruleset, profile: Profile<'_>) -> f64 {
    score_with(rules, profile, |i, value| rules.fit[i].matches(value))
}

/// The fit score of a profile (SPEC §4), `matches(i, value)` answering whether fit rule `i`
/// matches the profile's value of its attribute (`None`: absent): the points of the rules
/// that match, summed in config order (so the float sum is the same whatever the walk's
/// order). Up to 64 rules, one walk of the profile in name order finds every value; more
/// fall back to one lookup per rule.
fn score_with(
    rules: &Ruleset,
    profile: Profile<'_>,
    mut matches: impl FnMut(usize, Option<&str>) -> bool,
) -> f64 {
    let fit = &rules.fit;
    let order = rules.fit_by_attribute();
    // The order is built with the ruleset; should `fit` (a public field) have changed since,
    // the per-rule lookup is still right.
    debug_assert_eq!(
        order.len(),
        fit.len(),
        "fit rules changed after Ruleset::new"
    );
    if fit.len() > 64 || order.len() != fit.len() {
        return fit
            .iter()
            .enumerate()
            .filter(|&(i, r)| matches(i, profile.get(&r.attribute)))
            .map(|(_, r)| r.points)
            .sum();
    }
    // Bit i: rule i matches.
    let mut matched = 0u64;
    profile.get_sorted(
        order.iter().map(|&i| fit[i].attribute.as_str()),
        |k, value| {
            let i = order[k];
            if matches(i, value) {
                matched |= 1 << i;
            }
        },
    );
    fit.iter()
        .enumerate()
        .filter(|&(i, _)| matched & (1 << i) != 0)
        .map(|(_, r)| r.points)
        .sum()
}

/// Remembered answers of the fit rules that search a regular expression: through the `regex`
/// crate's meta engine that costs about 650 instructions for a job title (the example
/// config's `senior_title`; callgrind, docs/performance.md), a lookup here about 60. A
/// rule's answer depends on the value alone (SPEC §4), and profiles repeat values (titles),
/// so the answer for a value seen lately is looked up instead. Exact and glob tests cost less
/// than the lookup, and a range's digits are summed (`parse_decimal`) in about as much, and
/// head counts repeat less: those are evaluated each time.
///
/// Per memoized rule `SLOTS` slots, direct-mapped by the value's hash; a slot holds one value
/// and the answer. A value in another value's slot replaces it. Values over
/// `MAX_VALUE_BYTES` are not remembered (evaluated each time), so the memo's memory is
/// bounded by the config, not the traffic: 8 KiB of slots per memoized rule and partition,
/// plus the text of values of 25 to 64 bytes (at most 16 KiB more), allocated at the first
/// lookup of a value a memoized rule reads.
///
/// A pure cache: the score with it is the score without it (`tests::the_memo_changes_no_score`).
/// It lives with the partition's state, built from the state's rules (which never change under
/// it), and is not part of a snapshot.
pub(super) struct FitMemo {
    /// Per fit rule: the first of its slots in `slots`, or `NOT_MEMOIZED`.
    first_slot: Vec<usize>,
    slots: Vec<Slot>,
    /// How many slots `slots` holds once allocated: `per_rule` for each memoized rule.
    slot_count: usize,
    /// Slots per memoized rule, a power of two.
    per_rule: usize,
    hasher: DefaultHashBuilder,
}

/// `FitMemo::first_slot` of a rule evaluated each time.
const NOT_MEMOIZED: usize = usize::MAX;

/// Values remembered per memoized rule.
const SLOTS: usize = 256;

/// Longer values are evaluated each time; up to 24 bytes are held without an allocation.
const MAX_VALUE_BYTES: usize = 64;

#[derive(Clone, Default)]
struct Slot {
    value: CompactString,
    /// The rule's answer for `value`; `None`: an empty slot.
    matched: Option<bool>,
}

impl FitMemo {
    /// A memo for `rules`' fit rules, empty.
    pub(super) fn new(rules: &Ruleset) -> FitMemo {
        FitMemo::with_slots(rules, SLOTS)
    }

    /// `slots` per memoized rule (rounded up to a power of two; the tests use few, so values
    /// share slots).
    pub(super) fn with_slots(rules: &Ruleset, slots: usize) -> FitMemo {
        let per_rule = slots.max(1).next_power_of_two();
        let mut n = 0;
        let first_slot = rules
            .fit
            .iter()
            .map(|r| {
                if matches!(r.test, FitTest::Match(Matcher::Regex(_))) {
                    n += 1;
                    (n - 1) * per_rule
                } else {
                    NOT_MEMOIZED
                }
            })
            .collect();
        FitMemo {
            first_slot,
            // Allocated at the first lookup, so a partition without one holds none.
            slots: Vec::new(),
            slot_count: n * per_rule,
            per_rule,
            hasher: DefaultHashBuilder::default(),
        }
    }

    /// The fit score of `profile` under `rules` (SPEC §4), which must be the rules the memo
    /// was made for: the score of evaluating every rule, to the bit.
    pub(super) fn score(&mut self, rules: &Ruleset, profile: Profile<'_>) -> f64 {
        debug_assert_eq!(
            self.first_slot.len(),
            rules.fit.len(),
            "a fit memo used with rules it was not made for"
        );
        score_with(rules, profile, |i, value| self.matches(rules, i, value))
    }

    /// Whether fit rule `i` matches `value`, remembered or evaluated.
    fn matches(&mut self, rules: &Ruleset, i: usize, value: Option<&str>) -> bool {
        let rule = &rules.fit[i];
        let first = self.first_slot.get(i).copied().unwrap_or(NOT_MEMOIZED);
        let Some(value) = value else {
            return false;
        };
        if first == NOT_MEMOIZED || value.len() > MAX_VALUE_BYTES {
            return rule.matches(Some(value));
        }
        if self.slots.is_empty() {
            self.slots = vec![Slot::default(); self.slot_count];
        }
        let at = first + (self.hasher.hash_one(value) as usize & (self.per_rule - 1));
        let slot = &mut self.slots[at];
        match slot.matched {
            Some(matched) if slot.value == value => matched,
            _ => {
                let matched = rule.matches(Some(value));
                slot.value = CompactString::from(value);
                slot.matched = Some(matched);
                matched
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::lead::Lead;
    use crate::model::rules::FitRule;

    /// Fit rules of every kind, two on one attribute, reading the attributes the profiles
    /// below set.
    fn rules() -> Ruleset {
        let rule = |name: &str, attribute: &str, test: FitTest, points: f64| FitRule {
            name: name.into(),
            attribute: attribute.into(),
            test,
            points,
        };
        let m = |text: &str| FitTest::Match(Matcher::parse(text).expect("a matcher"));
        let fit = vec![
            rule("senior", "title", m(r"regex:(?i)\b(vp|chief|head)\b"), 30.0),
            rule(
                "mid",
                "employees",
                FitTest::Range {
                    gte: Some(200.0),
                    lt: Some(2000.0),
                },
                20.0,
            ),
            rule(
                "big",
                "employees",
                FitTest::Range {
                    gte: Some(2000.0),
                    lt: None,
                },
                15.0,
            ),
            rule("us", "country", m("glob:U?"), 10.0 / 3.0),
            rule("exact", "title", m("CTO"), 7.0),
            rule("empty", "title", m("regex:^$"), 1.0 / 3.0),
        ];
        crate::engine::test_support::fit_only_rules(fit)
    }

    /// Titles inline (up to 24 bytes), held on the heap (25 to 64), and over 64 (never
    /// kept); pairs at 64 and 65 bytes that differ only in their last word, which `senior`
    /// reads (a memo keyed by a prefix would answer both alike).
    const TITLES: [&str; 14] = [
        "VP Sales",
        "vp",
        "Head of Growth",
        "Engineer",
        "CTO",
        "",
        "Chief Executive Officer of a company with a very long name, over 64 bytes",
        "Chief Executive Officer of a company with a very long name, over 64 bytez",
        "chiefly",
        "Director of Revenue Operations",
        "Manager of Sales and Marketing Operations, Americas and Asia, vp",
        "Manager of Sales and Marketing Operations, Americas and Asia, vq",
        "Manager of Sales and Marketing Operations, Americas and Asias, vp",
        "Manager of Sales and Marketing Operations, Americas and Asias, vq",
    ];
    const HEADCOUNTS: [&str; 8] = ["199", "200", "1999", "2000", " 2500 ", "1e3", "many", ""];
    const COUNTRIES: [&str; 4] = ["US", "UK", "FR", "USA"];

    proptest::proptest! {
        /// A stream of profile changes scored with a memo of one, two or 256 slots per rule
        /// (values share slots and replace each other) and without one: the same score, to
        /// the bit, after every change.
        #[test]
        fn the_memo_changes_no_score(
            changes in proptest::collection::vec(
                (0..TITLES.len() + 1, 0..HEADCOUNTS.len() + 1, 0..COUNTRIES.len() + 1),
                1..60,
            ),
            slots in proptest::sample::select(vec![1usize, 2, 256]),
        ) {
            let rules = rules();
            let mut memo = FitMemo::with_slots(&rules, slots);
            let mut lead = Lead::new("lead@x.io", 0);
            for (t, e, c) in changes {
                // The last index of each list is "leave the attribute as it is".
                let mut attrs = Vec::new();
                if let Some(v) = TITLES.get(t) {
                    attrs.push(("title", *v));
                }
                if let Some(v) = HEADCOUNTS.get(e) {
                    attrs.push(("employees", *v));
                }
                if let Some(v) = COUNTRIES.get(c) {
                    attrs.push(("country", *v));
                }
                lead.set_attributes(&attrs);
                let want = fit_score(&rules, lead.profile());
                let got = memo.score(&rules, lead.profile());
                proptest::prop_assert_eq!(got.to_bits(), want.to_bits(), "{} vs {}", got, want);
            }
        }
    }

    /// The memo holds what it should: the regex rules' slots only, filled on use, and a
    /// value over 64 bytes is not kept.
    #[test]
    fn only_regex_rules_and_short_values_are_remembered() {
        let rules = rules();
        let mut memo = FitMemo::with_slots(&rules, 4);
        let memoized: Vec<bool> = memo.first_slot.iter().map(|&f| f != NOT_MEMOIZED).collect();
        assert_eq!(memoized, [true, false, false, false, false, true]);
        assert!(
            memo.slots.is_empty(),
            "nothing allocated before a profile change"
        );
        let mut lead = Lead::new("lead@x.io", 0);
        lead.set_attributes(&[("title", TITLES[6]), ("employees", "250")]);
        // `senior` (the long title has "Chief") and `mid`.
        assert_eq!(memo.score(&rules, lead.profile()), 50.0);
        assert!(memo.slots.is_empty(), "the long title is not kept");
        lead.set_attributes(&[("title", "Head of Sales")]);
        assert_eq!(memo.score(&rules, lead.profile()), 50.0);
        assert_eq!(memo.slots.len(), 2 * 4);
        let kept: Vec<(&str, Option<bool>)> = memo
            .slots
            .iter()
            .filter(|s| s.matched.is_some())
            .map(|s| (s.value.as_str(), s.matched))
            .collect();
        // `senior` matches, `empty` does not.
        assert_eq!(
            kept,
            [
                ("Head of Sales", Some(true)),
                ("Head of Sales", Some(false))
            ]
        );
    }

    /// The memo is read, not only written: an answer changed in its slot is the answer given.
    #[test]
    fn a_remembered_answer_is_the_answer_given() {
        let rules = rules();
        let mut memo = FitMemo::with_slots(&rules, 4);
        let mut lead = Lead::new("lead@x.io", 0);
        lead.set_attributes(&[("title", "VP Sales")]);
        assert_eq!(memo.score(&rules, lead.profile()), 30.0);
        for slot in &mut memo.slots {
            if slot.matched.is_some() {
                slot.matched = slot.matched.map(|m| !m);
            }
        }
        // `senior` now remembered as not matching, `empty` as matching.
        assert_eq!(memo.score(&rules, lead.profile()), 1.0 / 3.0);
    }
}
