//! The fuzz regression corpus: every file under tests/fuzz/<target>/ (seeds, and every input
//! that once crashed, hung or broke a property) goes through its target again. The targets
//! are `leadflow::fuzzing`; docs/hardening.md says how to fuzz.
//!
//! A test binary of its own, outside `tests/it`: apache-avro's allocation cap is process-wide
//! and the first call sets it (`codec::avro::bound_generic_allocations`). The fuzz targets set
//! the service's cap, as its startup does; in a process where other tests had already decoded
//! with apache-avro, its 512 MB default would be in force and a hostile map count would abort
//! the process, as it did when this file ran inside `tests/it`.

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
