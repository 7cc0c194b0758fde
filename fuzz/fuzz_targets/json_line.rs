#![no_main]
// Fuzz target: see leadflow::fuzzing::json_line for what it checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| leadflow::fuzzing::json_line(data));
