//! Attribute matchers (SPEC §4): plain text, `glob:PATTERN`, `regex:PATTERN`.

use regex::Regex;

#[derive(Clone, Debug)]
pub enum Matcher {
    Exact(String),
    /// Compiled to an anchored regex; `*` is any run, `?` one character.
    Glob {
        pattern: String,
        re: Regex,
    },
    /// Unanchored search.
    Regex(Regex),
}

impl Matcher {
    /// Parses a matcher; the error says what is wrong with the pattern.
    pub fn parse(text: &str) -> Result<Matcher, String> {
        if let Some(pattern) = text.strip_prefix("glob:") {
            // Shell users expect classes and alternatives; matching them literally would be a
            // silent surprise, so they are refused.
            if let Some(c) = pattern.chars().find(|c| matches!(c, '[' | ']' | '{' | '}')) {
                return Err(format!(
                    "glob pattern {pattern:?} uses {c:?}: globs support only * and ?; use regex: for classes or alternatives"
                ));
            }
            let re = Regex::new(&glob_to_regex(pattern))
                .map_err(|e| format!("glob pattern {pattern:?} does not compile: {e}"))?;
            Ok(Matcher::Glob {
                pattern: pattern.to_string(),
                re,
            })
        } else if let Some(pattern) = text.strip_prefix("regex:") {
            let re = Regex::new(pattern)
                .map_err(|e| format!("invalid regular expression {pattern:?}: {e}"))?;
            Ok(Matcher::Regex(re))
        } else {
            Ok(Matcher::Exact(text.to_string()))
        }
    }

    pub fn is_match(&self, value: &str) -> bool {
        match self {
            Matcher::Exact(s) => s == value,
            Matcher::Glob { re, .. } => re.is_match(value),
            Matcher::Regex(re) => re.is_match(value),
        }
    }
}

fn glob_to_regex(pattern: &str) -> String {
    // (?s) so that `*` and `?` also match newlines: a glob has no notion of lines.
    let mut out = String::with_capacity(pattern.len() + 8);
    out.push_str("(?s)^");
    let mut buf = [0u8; 4];
    for c in pattern.chars() {
        match c {
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            _ => out.push_str(&regex::escape(c.encode_utf8(&mut buf))),
        }
    }
    out.push('$');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Matcher {
        Matcher::parse(s).expect("valid matcher")
    }

    #[test]
    fn plain_text_is_exact() {
        assert!(m("US").is_match("US"));
        assert!(!m("US").is_match("USA"));
        assert!(!m("US").is_match("us"));
    }

    #[test]
    fn glob_is_anchored_with_star_and_question_mark() {
        let g = m("glob:*/pricing*");
        assert!(g.is_match("https://x.io/pricing"));
        assert!(g.is_match("https://x.io/pricing/enterprise"));
        assert!(!g.is_match("https://x.io/about"));
        let q = m("glob:U?");
        assert!(q.is_match("US"));
        assert!(q.is_match("UK"));
        assert!(!q.is_match("U"));
        assert!(!q.is_match("USA"));
        assert!(q.is_match("Uß"), "? is one character, not one byte");
    }

    #[test]
    fn glob_escapes_regex_metacharacters() {
        let g = m("glob:a.b(c)+");
        assert!(g.is_match("a.b(c)+"));
        assert!(!g.is_match("axb(c)+"));
    }

    #[test]
    fn regex_is_an_unanchored_search() {
        let r = m("regex:@(rivalco|othervendor)\\.com$");
        assert!(r.is_match("ed@rivalco.com"));
        assert!(!r.is_match("ed@rivalco.com.au"));
        let title = m("regex:(?i)\\b(vp|director)\\b");
        assert!(title.is_match("VP Marketing"));
        assert!(!title.is_match("Student"));
    }

    #[test]
    fn glob_classes_are_refused() {
        let err = Matcher::parse("glob:U[SK]").expect_err("must fail");
        assert!(err.contains("only * and ?"), "{err}");
    }

    #[test]
    fn bad_regex_is_reported() {
        let err = Matcher::parse("regex:(unclosed").expect_err("must fail");
        assert!(err.contains("invalid regular expression"), "{err}");
    }
}
