//! The crate's layers, checked on its source: every `crate::` path under `src/` names a module
//! of the same layer or one below, and no two modules use each other, directly or around a
//! loop (../shared/STYLE.md, habit 6). The pure domain stays at the bottom, the I/O at the
//! edge, and each part reads without the ones above it.

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

/// The top-level module a file under `src/` belongs to (`src/kafka/state/fold.rs`: `kafka`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("a file under src/");
    let first = rel.components().next().expect("a path");
    let name = first.as_os_str().to_string_lossy();
    name.trim_end_matches(".rs").to_string()
}

/// The source without line comments (docs name modules freely) and without its test-only
/// modules (`#[cfg(test)]` then `mod ...{`, to the matching brace): tests may reach further.
fn code_of(text: &str) -> String {
    let code: Vec<&str> = text
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect();
    let mut kept = String::new();
    let mut lines = code.iter().peekable();
    while let Some(line) = lines.next() {
        let test_module = line.trim() == "#[cfg(test)]"
            && lines.peek().is_some_and(|next| {
                let next = next.trim_start();
                next.starts_with("mod ") || next.starts_with("pub(crate) mod ")
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

/// The top-level modules that `code` names through `crate::`: `crate::engine::X` and each
/// first name of a group, `crate::{engine::X, model::{..}}`.
fn used_modules(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut used = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        // `$crate::` (macros) is not a use of this crate's module tree.
        if code[..i].ends_with('$') {
            continue;
        }
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut at_name = true;
            let mut end = group.len();
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        end = j;
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => at_name = true,
                    c if at_name && !c.is_whitespace() => {
                        at_name = false;
                        let name = ident(&group[j..end.min(group.len())]);
                        if !name.is_empty() && name != "self" {
                            used.insert(name);
                        }
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                used.insert(name);
            }
        }
    }
    used
}

/// Module -> (module it uses -> the files that use it).
fn graph() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for file in files {
        let module = module_of(&src, &file);
        if module == "main" || module == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read a source file");
        let shown = file
            .strip_prefix(&src)
            .unwrap_or(&file)
            .display()
            .to_string();
        let uses = graph.entry(module.clone()).or_default();
        for used in used_modules(&code_of(&text)) {
            if used != module {
                uses.entry(used).or_default().insert(shown.clone());
            }
        }
    }
    graph
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
    let found: Vec<String> = used_modules(&code_of(code)).into_iter().collect();
    assert_eq!(found, ["codec", "model"]);
}

#[test]
fn the_parser_finds_plain_and_grouped_paths() {
    let code = "use crate::engine::PartitionState;\n\
                use crate::{codec::avro, model::{event::Event, rules}, self};\n\
                let x = crate::metrics::Metrics::new();\n\
                macro_rules! m { () => { $crate::kafka::x() } }";
    let found: Vec<String> = used_modules(code).into_iter().collect();
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
fn no_modules_use_each_other() {
    let graph = graph();
    // Depth-first search; a module met again on the current path closes a loop.
    fn visit<'a>(
        m: &'a str,
        graph: &'a BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
        loops: &mut Vec<String>,
    ) {
        if let Some(i) = path.iter().position(|p| *p == m) {
            loops.push([&path[i..], &[m]].concat().join(" -> "));
            return;
        }
        if !done.insert(m) {
            return;
        }
        path.push(m);
        for used in graph.get(m).into_iter().flat_map(|u| u.keys()) {
            visit(used, graph, path, done, loops);
        }
        path.pop();
    }
    let mut loops = Vec::new();
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        visit(module, &graph, &mut Vec::new(), &mut done, &mut loops);
    }
    assert!(loops.is_empty(), "import loops: {loops:?}");
}
