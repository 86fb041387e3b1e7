#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| damocles_operator::dev::fuzzing::step_request(data));
