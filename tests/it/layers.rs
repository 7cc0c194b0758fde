//! The crate's layers, checked on its source: every `crate::`, `super::` and `use` path under
//! `src/` names a module of the same layer or one below, and no two modules, nor two files,
//! use each other, directly or around a loop (the project's style notes, habit 6). The pure
//! domain stays at the bottom, the I/O at the edge, and each part reads without the ones
//! above it. Named paths only: a method call on a type of another file is not seen.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top. A module may use its own layer and the ones below; `main.rs` and `lib.rs`
/// sit above them all.
const LAYERS: &[&[&str]] = &[
    // The pure domain, and leaves with no domain in them.
    &["model", "partition", "allocator"],
    // State and traffic from the domain alone.
    &["engine", "gen"],
    // Formats, settings, the snapshot store, telemetry.
    &["codec", "config", "snapshot", "metrics", "health"],
    // Stages and adapters.
    &["kafka", "notify", "analytics", "replay", "fuzzing"],
    &["service"],
    &["http", "demo"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The identifier characters right before `chars[i]` (`b` for a raw byte string's `br"`).
fn word_before(chars: &[char], i: usize) -> String {
    let start = chars[..i]
        .iter()
        .rposition(|c| !(c.is_alphanumeric() || *c == '_'))
        .map_or(0, |p| p + 1);
    chars[start..i].iter().collect()
}

/// Blanks the quoted literal that opens at `chars[i]` (a string or a character) to its
/// closing quote, escapes included (newlines kept); the index after it.
fn blank_quoted(chars: &[char], mut i: usize, out: &mut String) -> usize {
    let quote = chars[i];
    out.push(quote);
    i += 1;
    while i < chars.len() && chars[i] != quote {
        // An escape's next character is part of it (`\"`, `\'`).
        let n = if chars[i] == '\\' { 2 } else { 1 };
        for &c in &chars[i..(i + n).min(chars.len())] {
            out.push(if c == '\n' { '\n' } else { ' ' });
        }
        i += n;
    }
    if i < chars.len() {
        out.push(quote);
        i += 1;
    }
    i
}

/// `text` with the contents of comments, string literals (raw ones too) and character
/// literals blanked out (newlines kept), so that a brace, a `//` or a `crate::` inside them
/// counts for nothing.
fn blank_literals(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            // Block comments nest.
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r'
            && matches!(next, Some('"' | '#'))
            && matches!(word_before(&chars, i).as_str(), "" | "b")
            && chars[i + 1..].iter().find(|&&h| h != '#') == Some(&'"')
        {
            // A raw string: r"…", r#"…"#, …
            let hashes = chars[i + 1..].iter().take_while(|&&h| h == '#').count();
            out.push('r');
            i += 1;
            for _ in 0..hashes + 1 {
                out.push(chars[i]);
                i += 1;
            }
            while i < chars.len() {
                if chars[i] == '"' && chars[i + 1..].iter().take(hashes).all(|&h| h == '#') {
                    // The closing quote and its hashes.
                    for &h in &chars[i..(i + 1 + hashes).min(chars.len())] {
                        out.push(h);
                    }
                    i += 1 + hashes;
                    break;
                }
                out.push(blank(chars[i]));
                i += 1;
            }
        } else if c == '"' {
            i = blank_quoted(&chars, i, &mut out);
        } else if c == '\'' && (chars.get(i + 2) == Some(&'\'') || next == Some('\\')) {
            // A character literal ('x', '\n', '\u{7f}'); a lifetime ('a) has no closing quote.
            i = blank_quoted(&chars, i, &mut out);
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The source without comments and literals (`blank_literals`) and without its test-only
/// modules (`#[cfg(test)]` then `mod … {`, to the matching brace; `mod …;` declares a file):
/// tests may reach further.
fn code_of(text: &str) -> String {
    let code = blank_literals(text);
    let mut kept = String::new();
    let mut lines = code.lines().peekable();
    while let Some(line) = lines.next() {
        let test_module = line.trim() == "#[cfg(test)]"
            && lines.peek().is_some_and(|next| {
                let next = next.trim_start();
                (next.starts_with("mod ") || next.starts_with("pub(crate) mod "))
                    && !next.trim_end().ends_with(';')
            });
        if !test_module {
            kept.push_str(line);
            kept.push('\n');
            continue;
        }
        // Skip to the brace that closes the module.
        let mut depth = 0i32;
        let mut opened = false;
        for line in lines.by_ref() {
            for c in line.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if opened && depth <= 0 {
                break;
            }
        }
    }
    kept
}

/// The module path of a file under `src/`: `kafka/state/fold.rs` is `kafka::state::fold`,
/// `kafka/state/mod.rs` is `kafka::state`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("a file under src/");
    let mut path: Vec<String> = rel
        .components()
        .map(|c| {
            c.as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string()
        })
        .collect();
    if path.last().is_some_and(|l| l == "mod") {
        path.pop();
    }
    path
}

/// The identifier at the start of `s`, without a raw identifier's `r#`.
fn ident(s: &str) -> &str {
    let s = s.strip_prefix("r#").unwrap_or(s);
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The paths of a `use` tree or a path expression starting at `text`, under `prefix`:
/// `a::b::{c, d::{e, self}}` gives `a::b::c`, `a::b::d::e` and `a::b::d`. Each comes with the
/// name it is known by where it is imported: its `as` name, else its last segment.
fn tree(text: &str, prefix: &[String], out: &mut Vec<(String, Vec<String>)>) {
    let mut path = prefix.to_vec();
    let mut rest = text.trim_start();
    loop {
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut start = 0;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        tree(&group[start..j], &path, out);
                        return;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        tree(&group[start..j], &path, out);
                        start = j + 1;
                    }
                    _ => {}
                }
            }
            return;
        }
        let raw = if rest.starts_with("r#") { 2 } else { 0 };
        let name = ident(rest);
        if name.is_empty() {
            break;
        }
        if name != "self" {
            path.push(name.to_string());
        }
        rest = &rest[raw + name.len()..];
        match rest.strip_prefix("::") {
            Some(more) => rest = more,
            None => break,
        }
    }
    if text.trim().is_empty() {
        return;
    }
    let alias = rest
        .trim_start()
        .strip_prefix("as ")
        .map(|a| ident(a.trim_start()));
    let name = match alias {
        Some(a) if !a.is_empty() => a.to_string(),
        _ => path.last().cloned().unwrap_or_default(),
    };
    out.push((name, path));
}

/// Where a path that starts `text`, in module `module`, begins from the crate root, and the
/// rest of it: `crate::`, `self::`, or one `super::` for each level up. `None` otherwise.
fn anchored<'t>(text: &'t str, module: &[String]) -> Option<(Vec<String>, &'t str)> {
    if let Some(rest) = text.strip_prefix("crate::") {
        return Some((Vec::new(), rest));
    }
    if let Some(rest) = text.strip_prefix("self::") {
        return Some((module.to_vec(), rest));
    }
    let mut rest = text.strip_prefix("super::")?;
    let mut base = module[..module.len().saturating_sub(1)].to_vec();
    while let Some(more) = rest.strip_prefix("super::") {
        base.pop();
        rest = more;
    }
    Some((base, rest))
}

/// Every path `code` (the code of module `module`) names through `crate::` or `super::`,
/// from the crate root. `$crate::` (macros) is left out.
fn used_paths(code: &str, module: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for start in ["crate::", "super::"] {
        for (i, _) in code.match_indices(start) {
            let before = code[..i].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$' || c == ':') {
                continue;
            }
            if let Some((base, rest)) = anchored(&code[i..], module) {
                tree(rest, &base, &mut out);
            }
        }
    }
    out.into_iter().map(|(_, path)| path).collect()
}

/// What the `use` items of `code` (module `module`, whose child modules are `children`) bring
/// in, by the name they are known by there, as paths from the crate root:
/// `pub use stream::{SnapshotStream, Written};` in `snapshot/mod.rs` gives `Written` ->
/// `snapshot::stream::Written`. Paths of other crates are left out.
fn imports(
    code: &str,
    module: &[String],
    children: &BTreeSet<String>,
) -> BTreeMap<String, Vec<String>> {
    let mut found = Vec::new();
    for (i, _) in code.match_indices("use ") {
        if code[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            continue;
        }
        let item = &code[i + "use ".len()..];
        let item = item[..item.find(';').unwrap_or(item.len())].trim_start();
        let (base, rest) = match anchored(item, module) {
            Some(start) => start,
            // A path from a child module of this one (`use store::X` in a `mod.rs`).
            None if children.contains(ident(item)) => (module.to_vec(), item),
            None => continue,
        };
        tree(rest, &base, &mut found);
    }
    found.into_iter().collect()
}

/// The top-level modules that `code` (of module `module`) names: `crate::engine::X`, each
/// first name of a group (`crate::{engine::X, model::{..}}`), what `super::` reaches.
fn used_modules(code: &str, module: &[String]) -> BTreeSet<String> {
    used_paths(code, module)
        .into_iter()
        .filter_map(|p| p.into_iter().next())
        .collect()
}

struct Source {
    /// E.g. `["kafka", "state", "fold"]`.
    module: Vec<String>,
    /// The path under `src/`.
    shown: String,
    code: String,
}

fn sources() -> Vec<Source> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files
        .iter()
        .map(|file| {
            let text = std::fs::read_to_string(file).expect("read a source file");
            Source {
                module: module_path(&src, file),
                shown: file
                    .strip_prefix(&src)
                    .unwrap_or(file)
                    .display()
                    .to_string(),
                code: code_of(&text),
            }
        })
        .filter(|s| s.module != ["main"] && s.module != ["lib"])
        .collect()
}

/// Node -> (node it uses -> the files that use it).
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// Between top-level modules.
fn graph() -> Graph {
    let sources = sources();
    let known: BTreeSet<&str> = sources.iter().map(|s| s.module[0].as_str()).collect();
    let mut graph = Graph::new();
    for s in &sources {
        let module = &s.module[0];
        let uses = graph.entry(module.clone()).or_default();
        for used in used_modules(&s.code, &s.module) {
            if &used != module && known.contains(used.as_str()) {
                uses.entry(used).or_default().insert(s.shown.clone());
            }
        }
    }
    graph
}

/// Between files. A path goes to the file that defines what it names: the deepest module
/// file in it, and on through that file's `use` items when they bring the name in from
/// elsewhere (`crate::snapshot::Written`, which `snapshot/mod.rs` re-exports, is
/// `snapshot/stream.rs`'s). A file and the `mod.rs` files above it are no edge either way: a
/// parent declares its children and holds what they share.
fn file_graph() -> Graph {
    let sources = sources();
    let by_module: BTreeMap<&[String], &str> = sources
        .iter()
        .map(|s| (s.module.as_slice(), s.shown.as_str()))
        .collect();
    let imports_of: BTreeMap<&[String], BTreeMap<String, Vec<String>>> = sources
        .iter()
        .map(|s| {
            let children: BTreeSet<String> = sources
                .iter()
                .filter(|c| c.module.len() == s.module.len() + 1 && c.module.starts_with(&s.module))
                .map(|c| c.module[s.module.len()].clone())
                .collect();
            (s.module.as_slice(), imports(&s.code, &s.module, &children))
        })
        .collect();
    let deepest = |path: &[String]| -> Option<Vec<String>> {
        (1..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|m| by_module.contains_key(m.as_slice()))
    };
    let mut graph = Graph::new();
    for s in &sources {
        let uses = graph.entry(s.shown.clone()).or_default();
        for mut path in used_paths(&s.code, &s.module) {
            let Some(mut target) = deepest(&path) else {
                continue;
            };
            // Through re-exports, a few steps at most.
            for _ in 0..8 {
                let Some(name) = path.get(target.len()) else {
                    break;
                };
                let Some(to) = imports_of[target.as_slice()].get(name) else {
                    break;
                };
                let next: Vec<String> = to
                    .iter()
                    .chain(&path[target.len() + 1..])
                    .cloned()
                    .collect();
                match deepest(&next) {
                    Some(t) if next != path => {
                        path = next;
                        target = t;
                    }
                    _ => break,
                }
            }
            if s.module.starts_with(&target) || target.starts_with(&s.module) {
                continue;
            }
            uses.entry(by_module[target.as_slice()].to_string())
                .or_default()
                .insert(s.shown.clone());
        }
    }
    graph
}

/// The loops of `graph`, each as `a -> b -> a`.
fn loops(graph: &Graph) -> Vec<String> {
    // Depth-first search; a node met again on the current path closes a loop.
    fn visit<'a>(
        node: &'a str,
        graph: &'a Graph,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
        loops: &mut Vec<String>,
    ) {
        if let Some(i) = path.iter().position(|p| *p == node) {
            loops.push([&path[i..], &[node]].concat().join(" -> "));
            return;
        }
        if !done.insert(node) {
            return;
        }
        path.push(node);
        for used in graph.get(node).into_iter().flat_map(|u| u.keys()) {
            visit(used, graph, path, done, loops);
        }
        path.pop();
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, graph, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

#[test]
fn test_modules_are_left_out() {
    let code = "use crate::model::event::Event;\n\
                #[cfg(test)]\n\
                pub(crate) mod test_support {\n\
                    use crate::config::Settings;\n\
                    fn f() { if true { crate::kafka::x(); } }\n\
                }\n\
                // crate::service is named in a comment only\n\
                fn g() { crate::codec::json::decode(); }\n";
    let found: Vec<String> = used_modules(&code_of(code), &[]).into_iter().collect();
    assert_eq!(found, ["codec", "model"]);
}

#[test]
fn the_parser_finds_plain_and_grouped_paths() {
    let code = "use crate::engine::PartitionState;\n\
                use crate::{codec::avro, model::{event::Event, rules}, self};\n\
                let x = crate::metrics::Metrics::new();\n\
                macro_rules! m { () => { $crate::kafka::x() } }";
    let found: Vec<String> = used_modules(code, &[]).into_iter().collect();
    assert_eq!(found, ["codec", "engine", "metrics", "model"]);
}

#[test]
fn every_module_uses_only_its_layer_and_below() {
    let graph = graph();
    let mut wrong = Vec::new();
    for (module, uses) in &graph {
        let Some(own) = layer_of(module) else {
            wrong.push(format!("src/{module}: in no layer; add it to LAYERS"));
            continue;
        };
        for (used, files) in uses {
            match layer_of(used) {
                Some(layer) if layer <= own => {}
                Some(_) => wrong.push(format!(
                    "{module} uses {used}, a layer above it, in {files:?}"
                )),
                None => wrong.push(format!("{module} uses {used} (in no layer) in {files:?}")),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The graph was read at all: the stages do use the engine.
    assert!(graph["kafka"].contains_key("engine"), "{graph:?}");
}

#[test]
fn paths_resolve_from_the_crate_root() {
    let module = ["kafka".to_string(), "state".to_string(), "txn".to_string()];
    let code = "use super::{lock, checkpoint::Commit};\n\
                use super::super::producer::{self, Deliveries};\n\
                let m = crate::metrics::Metrics::new();";
    let mut found: Vec<String> = used_paths(code, &module)
        .iter()
        .map(|p| p.join("::"))
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            "kafka::producer",
            "kafka::producer::Deliveries",
            "kafka::state::checkpoint::Commit",
            "kafka::state::lock",
            "metrics::Metrics::new",
        ]
    );
}

#[test]
fn no_modules_use_each_other() {
    let found = loops(&graph());
    assert!(found.is_empty(), "import loops: {found:?}");
}

#[test]
fn no_files_use_each_other() {
    let graph = file_graph();
    let found = loops(&graph);
    assert!(found.is_empty(), "import loops between files: {found:?}");
    // The graph was read at all: the fold uses the engine, the engine's snapshot encoder
    // the lead layout.
    assert!(graph["kafka/state/fold.rs"].contains_key("engine/mod.rs"));
    assert!(graph["engine/checkpoint.rs"].contains_key("engine/snapshot.rs"));
}

#[test]
fn literals_and_comments_count_for_nothing() {
    let code = "let a = \"crate::service } // {\";\n\
                let b = r#\"crate::kafka \"quoted\" }\"#;\n\
                let c = b'{'; let d = '\\''; let e: &'static str = \"\";\n\
                /* crate::demo /* nested */ crate::http */\n\
                fn f<'a>(x: &'a str) { crate::codec::json::decode(x); }\n\
                let url = \"http://example.com\"; crate::model::event::Event::new();\n";
    let found: Vec<String> = used_modules(&code_of(code), &[]).into_iter().collect();
    assert_eq!(found, ["codec", "model"]);
    // Braces inside literals do not end a test module early.
    let code = "#[cfg(test)]\nmod tests {\n    const X: &str = \"}\";\n    use crate::kafka;\n}\n\
                use crate::engine;\n";
    let found: Vec<String> = used_modules(&code_of(code), &[]).into_iter().collect();
    assert_eq!(found, ["engine"]);
}

#[test]
fn re_exports_are_followed_to_where_they_point() {
    let module = ["snapshot".to_string()];
    let children: BTreeSet<String> = ["store", "stream"].map(String::from).into();
    let code = "mod store;\nmod stream;\n\
                pub use store::{check_url, SnapshotStore};\n\
                pub use stream::{SnapshotStream, Written};\n\
                pub use crate::config::report as config;\n\
                use std::sync::Arc;\n";
    let found = imports(code, &module, &children);
    let shown: Vec<String> = found
        .iter()
        .map(|(name, path)| format!("{name}={}", path.join("::")))
        .collect();
    assert_eq!(
        shown,
        [
            "SnapshotStore=snapshot::store::SnapshotStore",
            "SnapshotStream=snapshot::stream::SnapshotStream",
            "Written=snapshot::stream::Written",
            "check_url=snapshot::store::check_url",
            "config=config::report",
        ]
    );
}

/// `super::` is resolved from the file's module: an inline module outside the tests would
/// move it, so there are none.
#[test]
fn no_inline_modules_outside_tests() {
    let inline: Vec<String> = sources()
        .iter()
        .filter(|s| {
            s.code.lines().any(|l| {
                let l = l.trim_start();
                let l = l
                    .strip_prefix("pub ")
                    .or_else(|| l.strip_prefix("pub(crate) "))
                    .unwrap_or(l);
                l.starts_with("mod ") && l.trim_end().ends_with('{')
            })
        })
        .map(|s| s.shown.clone())
        .collect();
    assert!(inline.is_empty(), "inline modules in {inline:?}");
}
