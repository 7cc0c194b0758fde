//! The fast path of JSON event decoding: a hand-written scanner for the lines nearly every
//! producer writes (an object of plain strings, integers, `null`, `true`, `false`, and an
//! `attributes` object of such values), straight into the decoder's [`Top`].
//!
//! It answers `None` for anything else: an escape in a string, a control character, a float,
//! an integer of more than 18 digits, `-0`, a nested value outside `attributes`, invalid UTF-8,
//! any syntax error. The caller then decodes the line with serde_json's parser, so every
//! error text, and every case this scanner does not take, stays serde_json's (and the value
//! tree's before it). When it answers `Some`, the result is the one serde_json's path gives:
//! `tests::the_scanner_agrees_with_serde_json` checks that on generated lines, damaged ones
//! and any JSON value.
//!
//! Why: replay's reader thread spent most of its time in serde_json's generic machinery
//! (a UTF-8 check per string, visitor dispatch), and on two cores the reader shares a core
//! with the output writer while the fold has the other (docs/performance.md).

use super::{Attributes, Text, Time, Top};

/// The top-level object's fields, or `None`: let serde_json decode the line.
pub(super) fn top(bytes: &[u8]) -> Option<Top> {
    // One UTF-8 check for the whole line. A string's bounds are ASCII quotes, so each string
    // slice of a valid line is valid UTF-8 on its own (and `&text[a..b]` checks only that
    // its ends are character boundaries). simdutf8 checks 32 bytes a step (AVX2) where std's
    // ASCII path takes 16: std's check was 4% of replay's reader thread (docs/performance.md).
    let text = simdutf8::basic::from_utf8(bytes).ok()?;
    let mut s = Scanner { text, i: 0 };
    s.ws();
    s.expect(b'{')?;
    let mut top = Top::default();
    s.ws();
    if !s.take(b'}') {
        loop {
            s.ws();
            let field = s.field()?;
            s.ws();
            s.expect(b':')?;
            s.ws();
            // A field given twice counts with its last value, as in serde_json's path.
            match field {
                Field::EventId => top.event_id = s.scalar()?.text(s.text),
                Field::LeadKey => top.lead_key = s.scalar()?.text(s.text),
                Field::Source => top.source = s.scalar()?.text(s.text),
                Field::Type => top.event_type = s.scalar()?.text(s.text),
                Field::OccurredAt => top.occurred_at = s.scalar()?.time(),
                Field::Attributes => top.attributes = s.attributes()?,
                Field::Other => {
                    s.scalar()?;
                }
            }
            s.ws();
            match s.next()? {
                b',' => {}
                b'}' => break,
                _ => return None,
            }
        }
    }
    s.ws();
    (s.i == bytes.len()).then_some(top)
}

/// A top-level key, as `top` reads it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Field {
    EventId,
    LeadKey,
    Source,
    Type,
    OccurredAt,
    Attributes,
    Other,
}

impl Field {
    fn of(key: &str) -> Field {
        match key {
            "event_id" => Field::EventId,
            "lead_key" => Field::LeadKey,
            "source" => Field::Source,
            "type" => Field::Type,
            "occurred_at" => Field::OccurredAt,
            "attributes" => Field::Attributes,
            _ => Field::Other,
        }
    }
}

/// The eight bytes of `s` as a little-endian word, as `field` loads them from the line.
const fn word(s: &[u8; 8]) -> u64 {
    u64::from_le_bytes(*s)
}

/// A scalar value: where it is in the line, and what it is.
#[derive(Clone, Copy)]
enum Scalar {
    /// A string's contents (without the quotes), byte offsets.
    Str(usize, usize),
    Null,
    Bool,
    /// An integer of at most 18 digits (so within i64), its value.
    Int(i64),
}

impl Scalar {
    /// As a string field (serde_json's path: `StrOr::text`).
    fn text<S: for<'s> From<&'s str>>(self, text: &str) -> Text<S> {
        match self {
            Scalar::Str(a, b) => Text::Value(S::from(&text[a..b])),
            Scalar::Null => Text::Absent,
            Scalar::Bool | Scalar::Int(..) => Text::WrongType,
        }
    }

    /// As `occurred_at` (serde_json's path: `TimeVisitor`).
    fn time(self) -> Time {
        match self {
            Scalar::Int(n) => Time::Ms(n),
            Scalar::Null => Time::Absent,
            Scalar::Str(..) | Scalar::Bool => Time::NotNumber,
        }
    }
}

/// The high bit of each byte of `word` (little-endian) that is a quote, a backslash or a
/// control character (below 0x20), and maybe of bytes above the lowest such byte: the
/// classic "has a zero byte" bit trick (Hacker's Delight, 6-1) marks every byte it should,
/// and a false mark only ever follows a true one, so the lowest mark is exact. The bytes a
/// JSON string cannot hold as they are: the scanner falls back on them, the writer escapes
/// them.
pub(super) fn special_bytes(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_in = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let quote = zero_in(word ^ (ONES * u64::from(b'"')));
    let backslash = zero_in(word ^ (ONES * u64::from(b'\\')));
    // A byte below 0x20: subtracting 0x20 borrows into its high bit (for bytes under 0x80).
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    quote | backslash | control
}

struct Scanner<'a> {
    text: &'a str,
    i: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.i += 1;
        Some(b)
    }

    /// JSON's whitespace: space, tab, line feed, carriage return.
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn take(&mut self, b: u8) -> bool {
        let found = self.peek() == Some(b);
        if found {
            self.i += 1;
        }
        found
    }

    fn expect(&mut self, b: u8) -> Option<()> {
        self.take(b).then_some(())
    }

    /// The literal `word` (`null`, `true`, `false`). What follows is the caller's to check
    /// (`nulls` fails there: a value must be followed by `,` or `}`).
    fn literal(&mut self, word: &str) -> Option<()> {
        let end = self.i + word.len();
        if self.text.as_bytes().get(self.i..end)? != word.as_bytes() {
            return None;
        }
        self.i = end;
        Some(())
    }

    /// A string without escapes or control characters: its contents' byte offsets.
    fn string_at(&mut self) -> Option<(usize, usize)> {
        self.expect(b'"')?;
        let start = self.i;
        let bytes = self.text.as_bytes();
        // Eight bytes at a time up to the first one that is not plain (most strings here are
        // 5 to 40 bytes); then byte by byte from there.
        while let Some(chunk) = bytes.get(self.i..self.i + 8) {
            let word = u64::from_le_bytes(chunk.try_into().ok()?);
            let special = special_bytes(word);
            if special != 0 {
                self.i += (special.trailing_zeros() / 8) as usize;
                break;
            }
            self.i += 8;
        }
        loop {
            match *bytes.get(self.i)? {
                b'"' => break,
                // An escape (serde_json unescapes it) or a control character (an error).
                b'\\' | 0..=0x1f => return None,
                _ => self.i += 1,
            }
        }
        let end = self.i;
        self.i += 1;
        Some((start, end))
    }

    /// A top-level key. The eight bytes after its opening quote are compared as one word
    /// with the known names' (their closing quote, and the rest of a longer name, checked
    /// after), instead of searching for the closing quote and matching the text: about 36
    /// instructions fewer a key (callgrind, docs/performance.md). Anything else, e.g. a key
    /// near the line's end, an unknown or escaped one, is read as a string and matched.
    fn field(&mut self) -> Option<Field> {
        const EVENT_ID: u64 = word(b"event_id");
        const LEAD_KEY: u64 = word(b"lead_key");
        const OCCURRED: u64 = word(b"occurred");
        const ATTRIBUT: u64 = word(b"attribut");
        // `source"` and `type"`: the name and its closing quote, the bytes after masked off.
        const SOURCE: u64 = word(b"source\"\0");
        const TYPE: u64 = word(b"type\"\0\0\0");
        const LOW_7: u64 = (1 << 56) - 1;
        const LOW_5: u64 = (1 << 40) - 1;
        let bytes = self.text.as_bytes();
        let at = self.i + 1;
        if bytes.get(self.i) == Some(&b'"') {
            if let Some(w) = bytes.get(at..at + 8) {
                let w = u64::from_le_bytes(w.try_into().ok()?);
                let rest = &bytes[at + 8..];
                let known = match w {
                    EVENT_ID if rest.first() == Some(&b'"') => Some((Field::EventId, 9)),
                    LEAD_KEY if rest.first() == Some(&b'"') => Some((Field::LeadKey, 9)),
                    OCCURRED if rest.starts_with(b"_at\"") => Some((Field::OccurredAt, 12)),
                    ATTRIBUT if rest.starts_with(b"es\"") => Some((Field::Attributes, 11)),
                    _ if w & LOW_7 == SOURCE => Some((Field::Source, 7)),
                    _ if w & LOW_5 == TYPE => Some((Field::Type, 5)),
                    _ => None,
                };
                if let Some((field, len)) = known {
                    self.i = at + len;
                    return Some(field);
                }
            }
        }
        self.string().map(Field::of)
    }

    fn string(&mut self) -> Option<&'a str> {
        let (a, b) = self.string_at()?;
        self.text.get(a..b)
    }

    /// `-?(0|[1-9][0-9]*)`, at most 18 digits; not `-0` (serde_json reads it as a float),
    /// not followed by a fraction or an exponent (floats fall back). The value is summed as
    /// the digits are read: 18 digits stay below 10^18 < 2^63, so it cannot overflow.
    fn integer(&mut self) -> Option<Scalar> {
        let negative = self.take(b'-');
        let digits = self.i;
        let mut value = 0i64;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            // Past 18 digits the value is not used (the line falls back below): wrapping
            // keeps a longer run of digits from overflowing before that check.
            value = value.wrapping_mul(10).wrapping_add(i64::from(d - b'0'));
            self.i += 1;
        }
        let n = self.i - digits;
        let leading_zero = self.text.as_bytes().get(digits) == Some(&b'0');
        if n == 0
            || n > 18
            || (leading_zero && (n > 1 || negative))
            || matches!(self.peek(), Some(b'.' | b'e' | b'E'))
        {
            return None;
        }
        Some(Scalar::Int(if negative { -value } else { value }))
    }

    /// A scalar value; `None` for a nested value or anything the fast path leaves alone.
    fn scalar(&mut self) -> Option<Scalar> {
        match self.peek()? {
            b'"' => {
                let (a, b) = self.string_at()?;
                Some(Scalar::Str(a, b))
            }
            b'n' => self.literal("null").map(|()| Scalar::Null),
            b't' => self.literal("true").map(|()| Scalar::Bool),
            b'f' => self.literal("false").map(|()| Scalar::Bool),
            b'-' | b'0'..=b'9' => self.integer(),
            _ => None,
        }
    }

    /// `attributes`: an object of scalars (as serde_json's path: `AttributesVisitor`), or
    /// another scalar.
    fn attributes(&mut self) -> Option<Attributes> {
        if !self.take(b'{') {
            return Some(match self.scalar()? {
                Scalar::Null => Attributes::Absent,
                _ => Attributes::NotObject,
            });
        }
        self.ws();
        if self.take(b'}') {
            // Most events have none: no allocation for them.
            return Some(Attributes::Object(Vec::new()));
        }
        let mut attrs = Vec::with_capacity(4);
        loop {
            self.ws();
            let name = self.string()?;
            self.ws();
            self.expect(b':')?;
            self.ws();
            let value = match self.scalar()? {
                Scalar::Str(a, b) => Some(self.text[a..b].to_string()),
                _ => None,
            };
            attrs.push((name.to_string(), value));
            self.ws();
            match self.next()? {
                b',' => {}
                b'}' => return Some(Attributes::Object(attrs)),
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{damaged, event_like, json_value, key};
    use super::*;
    use proptest::prelude::*;

    /// What serde_json's path makes of `bytes`: the fast path must say the same or nothing.
    fn agrees(bytes: &[u8]) -> Result<(), TestCaseError> {
        if let Some(fast) = top(bytes) {
            let slow = super::super::serde_top(bytes);
            prop_assert_eq!(
                Ok(Some(fast)),
                slow,
                "input {:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        Ok(())
    }

    /// `event_like`'s lines with JSON whitespace between some tokens.
    fn spaced(text: &str, gaps: &[u8]) -> String {
        let mut out = String::new();
        let mut gap = gaps.iter().cycle();
        let mut in_string = false;
        for c in text.chars() {
            if c == '"' {
                in_string = !in_string;
            }
            out.push(c);
            if !in_string && matches!(c, '{' | ':' | ',' | '}' | '"') {
                match gap.next() {
                    Some(0) => out.push(' '),
                    Some(1) => out.push_str("\t\r\n "),
                    _ => {}
                }
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn the_scanner_agrees_with_serde_json(
            text in event_like(),
            gaps in prop::collection::vec(0..4u8, 1..8),
        ) {
            agrees(text.as_bytes())?;
            agrees(spaced(&text, &gaps).as_bytes())?;
        }

        #[test]
        fn the_scanner_agrees_on_damaged_lines(
            text in event_like(),
            at in any::<prop::sample::Index>(),
            edit in 0..3u8,
            byte in prop::sample::select(b"{}[]\":,\\ 0e-.nutf\xff\x01".to_vec()),
        ) {
            agrees(&damaged(text, at, edit, byte))?;
        }

        /// Every field with every kind of scalar (a string, `null`, `true`, integers of any
        /// size and sign, `-0`, floats), and nested values.
        #[test]
        fn the_scanner_agrees_on_any_value_in_any_field(
            fields in prop::collection::vec((key(), json_value(0)), 0..6),
            nested in prop::collection::vec((key(), json_value(2)), 0..2),
        ) {
            let body: Vec<String> = fields
                .into_iter()
                .chain(nested)
                .map(|(k, v)| format!("{k}:{v}"))
                .collect();
            agrees(format!("{{{}}}", body.join(",")).as_bytes())?;
            agrees(format!(r#"{{"attributes":{{{}}}}}"#, body.join(",")).as_bytes())?;
        }

        /// The lowest mark of `special_bytes` is the first quote, backslash or control byte.
        #[test]
        fn special_bytes_finds_the_first_special_byte(
            bytes in prop::array::uniform8(prop_oneof![
                Just(b'"'), Just(b'\\'), 0..0x20u8, 0x20..0x80u8, 0x80..=0xffu8, Just(b' '),
                Just(b'!'), Just(b'#'), Just(b'['), Just(b']'),
            ]),
        ) {
            let first = bytes.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
            let marks = special_bytes(u64::from_le_bytes(bytes));
            let found = (marks != 0).then(|| (marks.trailing_zeros() / 8) as usize);
            prop_assert_eq!(found, first, "{:?}", bytes);
        }

        /// Strings of any length and content (escapes, controls, multi-byte characters), at
        /// every alignment: the eight-byte steps must stop where the byte loop would.
        #[test]
        fn the_scanner_agrees_on_any_string(
            pad in 0..9usize,
            value in "[a-z\\\\\"\u{1}\u{1f} é€😀]{0,40}",
            raw in any::<bool>(),
        ) {
            let quoted = if raw {
                format!("\"{value}\"")
            } else {
                serde_json::to_string(&value).expect("a string")
            };
            let line = format!(
                r#"{{"{}":1,"event_id":{quoted},"attributes":{{"a":{quoted}}}}}"#,
                "x".repeat(pad)
            );
            agrees(line.as_bytes())?;
            if !raw && !value.contains(['\\', '"', '\u{1}', '\u{1f}']) {
                prop_assert!(top(line.as_bytes()).is_some(), "{}", line);
            }
        }

        #[test]
        fn the_scanner_agrees_on_any_json_value(text in json_value(3)) {
            agrees(text.as_bytes())?;
        }
    }

    /// The generator's lines, as `leadflow gen` writes them, all take the fast path (else
    /// the tests above could pass with a scanner that never answers).
    #[test]
    fn generated_lines_take_the_fast_path() {
        let spec = crate::gen::GenSpec {
            seed: 7,
            leads: 200,
            events: 2_000,
            start_ms: 1_790_000_000_000,
            span_ms: 30 * 86_400_000,
        };
        let events = crate::gen::generate(&spec);
        assert_eq!(events.len(), 2_000);
        for ev in &events {
            let line = serde_json::to_vec(&crate::gen::to_json(ev)).expect("json");
            let fast = top(&line);
            assert!(
                fast.is_some(),
                "not taken: {}",
                String::from_utf8_lossy(&line)
            );
            assert_eq!(Ok(fast), super::super::serde_top(&line));
        }
    }

    /// `field`'s word compare reads what reading the key as a string and matching it reads,
    /// to the same position, for the fields' names, names one byte off, and keys close to
    /// the line's end (where fewer than eight bytes follow the quote: the fallback).
    #[test]
    fn field_reads_what_string_and_match_read() {
        let names = [
            "event_id",
            "lead_key",
            "occurred_at",
            "source",
            "type",
            "attributes",
            "event_idx",
            "event_i",
            "lead_keys",
            "occurred",
            "occurred_a",
            "occurred_at_",
            "sourc",
            "sources",
            "typ",
            "types",
            "type_",
            "attribute",
            "attributes_",
            "attributeS",
            "Type",
            "",
            "a",
            "event\\u005fid",
            "source\\\"",
        ];
        for name in names {
            for tail in ["", ":", ":1", ":1}", ":1}   ", r#":"a","b":"c"}"#] {
                let line = format!("\"{name}\"{tail}");
                let text = line.as_str();
                let mut fast = Scanner { text, i: 0 };
                let mut reference = Scanner { text, i: 0 };
                let expected = reference.string().map(Field::of);
                assert_eq!(fast.field(), expected, "{line}");
                if expected.is_some() {
                    assert_eq!(fast.i, reference.i, "{line}");
                }
            }
        }
        // Each known name is recognised as its field (the compare is not always missing).
        for (name, field) in [
            ("event_id", Field::EventId),
            ("lead_key", Field::LeadKey),
            ("occurred_at", Field::OccurredAt),
            ("source", Field::Source),
            ("type", Field::Type),
            ("attributes", Field::Attributes),
        ] {
            let line = format!("\"{name}\":\"a long enough value\"");
            let mut s = Scanner { text: &line, i: 0 };
            assert_eq!(s.field(), Some(field), "{line}");
        }
    }

    #[test]
    fn what_falls_back() {
        for line in [
            r#"{"event_id":"a\"b"}"#,                 // an escape
            "{\"event_id\":\"a\u{1}b\"}",             // a control character
            r#"{"occurred_at":1.5}"#,                 // a float
            r#"{"occurred_at":1e3}"#,                 // an exponent
            r#"{"occurred_at":-0}"#,                  // serde_json's -0 is a float
            r#"{"occurred_at":0123}"#,                // a leading zero is a syntax error
            r#"{"occurred_at":1234567890123456789}"#, // 19 digits
            r#"{"extra":{"a":1}}"#,                   // nested outside attributes
            r#"{"attributes":{"a":[1]}}"#,            // nested inside
            r#"{"attributes":[]}"#,                   // an array
            r#"{"a":1,}"#,                            // a trailing comma
            r#"{"a":1} x"#,                           // trailing characters
            r#"[1]"#,                                 // not an object
            r#"{"a":nul}"#,                           // a broken literal
        ] {
            assert!(top(line.as_bytes()).is_none(), "{line}");
        }
        assert!(top(b"{\"event_id\":\"\xff\"}").is_none(), "invalid UTF-8");
    }

    #[test]
    fn what_it_takes() {
        let t = top(
            br#" { "event_id" : "e1", "occurred_at": -12, "attributes": {"b": "2", "a": null, "c": true}, "x": false, "lead_key": null } "#,
        )
        .expect("taken");
        assert_eq!(t.event_id, Text::Value("e1".into()));
        assert_eq!(t.lead_key, Text::Absent);
        assert_eq!(t.occurred_at, Time::Ms(-12));
        assert_eq!(
            t.attributes,
            Attributes::Object(vec![
                ("b".into(), Some("2".into())),
                ("a".into(), None),
                ("c".into(), None),
            ])
        );
    }

    /// Integers are summed as they are read: 1 to 18 digits, both signs, the 18-digit
    /// extremes and powers of ten (a digit's place off by one shows there).
    #[test]
    fn integers_read_as_serde_json_reads_them() {
        let mut values = vec![0i64, 7, -7, 10, 99, 1_793_491_511_610];
        for digits in 1..=18u32 {
            let power = 10i64.pow(digits - 1);
            values.extend([power, -power, power * 10 - 1, -(power * 10 - 1)]);
        }
        for n in values {
            let line = format!(r#"{{"occurred_at":{n}}}"#);
            let fast = top(line.as_bytes()).expect("taken");
            assert_eq!(fast.occurred_at, Time::Ms(n), "{line}");
            assert_eq!(Ok(Some(fast)), super::super::serde_top(line.as_bytes()));
        }
    }

    /// Whatever std's UTF-8 check rejects, the scanner leaves to serde_json: overlong forms,
    /// surrogates, code points past U+10FFFF, cut and stray sequences, in lines under 64
    /// bytes (simdutf8 hands those to std) and longer ones (64-byte blocks, the tail copied
    /// out), at every offset from 13 to 113 bytes: sequences crossing offset 32 (the two
    /// registers of a block) and 64 (two blocks) included.
    #[test]
    fn invalid_utf8_anywhere_falls_back() {
        let bad: [&[u8]; 7] = [
            b"\xC0\x80",
            b"\xED\xA0\x80",
            b"\xF4\x90\x80\x80",
            b"\xE2\x82",
            b"\x80",
            b"\xFF",
            b"\xF0\x9F\x98",
        ];
        let long_key = format!(r#"","lead_key":"{}@b.c"}}"#, "b".repeat(60));
        for seq in bad {
            for pad in 0..=100usize {
                for tail in [&br#"","lead_key":"a@b.c"}"#[..], long_key.as_bytes()] {
                    let mut line = br#"{"event_id":""#.to_vec();
                    line.extend(std::iter::repeat_n(b'a', pad));
                    line.extend_from_slice(seq);
                    line.extend_from_slice(tail);
                    assert!(std::str::from_utf8(&line).is_err());
                    assert!(
                        top(&line).is_none(),
                        "{seq:?} after {pad} bytes, {} in all",
                        line.len()
                    );
                }
            }
        }
    }
}
