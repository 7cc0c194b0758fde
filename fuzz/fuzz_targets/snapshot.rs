#![no_main]
// Fuzz target: see leadflow::fuzzing::snapshot for what it checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| leadflow::fuzzing::snapshot(data));
