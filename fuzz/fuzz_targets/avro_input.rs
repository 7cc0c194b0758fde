#![no_main]
// Fuzz target: see leadflow::fuzzing::avro_input for what it checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| leadflow::fuzzing::avro_input(data));
