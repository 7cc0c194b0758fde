//! The fuzz regression corpus: every file under tests/fuzz/<target>/ (seeds, and every input
//! that once crashed, hung or broke a property) goes through its target again. The targets
//! are `leadflow::fuzzing`; docs/hardening.md says how to fuzz.

use std::path::PathBuf;

#[test]
fn every_corpus_file_passes_its_target() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz");
    let mut total = 0;
    for (name, target) in leadflow::fuzzing::TARGETS {
        let dir = root.join(name);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no corpus for {name}");
        for f in files {
            let data = std::fs::read(&f).expect("corpus file");
            // A panic names the file through the hook's message; say which one first.
            eprintln!("{name}: {}", f.display());
            target(&data);
            total += 1;
        }
    }
    assert!(total >= 5);
}
