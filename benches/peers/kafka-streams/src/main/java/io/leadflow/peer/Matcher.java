package io.leadflow.peer;

import java.util.regex.Pattern;

/**
 * Attribute matchers (SPEC §4): plain text (equal), {@code glob:PATTERN} (anchored; {@code *}
 * any run, {@code ?} one character), {@code regex:PATTERN} (unanchored search).
 */
public abstract class Matcher {
    public abstract boolean matches(String value);

    public static Matcher parse(String text) {
        if (text.startsWith("glob:")) {
            return new Glob(text.substring(5));
        }
        if (text.startsWith("regex:")) {
            return new Regex(text.substring(6));
        }
        return new Exact(text);
    }

    static final class Exact extends Matcher {
        private final String text;

        Exact(String text) {
            this.text = text;
        }

        @Override
        public boolean matches(String value) {
            return text.equals(value);
        }
    }

    /** A glob matched without regex: the classic two-pointer wildcard match, by code point for {@code ?}. */
    static final class Glob extends Matcher {
        private final String pattern;

        Glob(String pattern) {
            for (char c : new char[] {'[', ']', '{', '}'}) {
                if (pattern.indexOf(c) >= 0) {
                    throw new IllegalArgumentException("glob pattern " + pattern + " uses " + c
                            + ": globs support only * and ?; use regex: for classes or alternatives");
                }
            }
            this.pattern = pattern;
        }

        @Override
        public boolean matches(String v) {
            String p = pattern;
            int pi = 0;
            int vi = 0;
            int star = -1; // position in p just after the last '*'
            int mark = 0; // position in v that the last '*' is matched up to
            while (vi < v.length()) {
                if (pi < p.length() && p.charAt(pi) == '*') {
                    star = ++pi;
                    mark = vi;
                } else if (pi < p.length() && p.charAt(pi) == '?') {
                    pi++;
                    vi += Character.charCount(v.codePointAt(vi));
                } else if (pi < p.length() && p.charAt(pi) == v.charAt(vi)) {
                    pi++;
                    vi++;
                } else if (star >= 0) {
                    // Let the last '*' take one more character and retry from there.
                    mark += Character.charCount(v.codePointAt(mark));
                    vi = mark;
                    pi = star;
                } else {
                    return false;
                }
            }
            while (pi < p.length() && p.charAt(pi) == '*') {
                pi++;
            }
            return pi == p.length();
        }
    }

    /**
     * leadflow's regexes are Rust {@code regex} syntax. Java's engine agrees on the common
     * subset once three defaults are aligned: {@code .} stops only at {@code \n}
     * (UNIX_LINES), {@code \w \d \b} and case folding are Unicode-aware
     * (UNICODE_CHARACTER_CLASS), and {@code $} outside multi-line mode is the end of the text
     * only (Java's {@code $} would also match before a final line terminator: it becomes
     * {@code \z}).
     */
    static final class Regex extends Matcher {
        private final Pattern re;

        Regex(String pattern) {
            this.re = Pattern.compile(translate(pattern), Pattern.UNIX_LINES | Pattern.UNICODE_CHARACTER_CLASS);
        }

        static String translate(String p) {
            if (Pattern.compile("\\(\\?[a-zA-Z]*m").matcher(p).find()) {
                return p; // multi-line mode: $ is the end of a line in both engines
            }
            StringBuilder out = new StringBuilder(p.length() + 4);
            boolean inClass = false;
            for (int i = 0; i < p.length(); i++) {
                char c = p.charAt(i);
                if (c == '\\' && i + 1 < p.length()) {
                    out.append(c).append(p.charAt(++i));
                } else if (c == '[') {
                    inClass = true;
                    out.append(c);
                } else if (c == ']') {
                    inClass = false;
                    out.append(c);
                } else if (c == '$' && !inClass) {
                    out.append("\\z");
                } else {
                    out.append(c);
                }
            }
            return out.toString();
        }

        @Override
        public boolean matches(String value) {
            return re.matcher(value).find();
        }
    }
}
