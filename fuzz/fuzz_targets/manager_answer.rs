#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| damocles_operator::dev::fuzzing::manager_answer(data));
