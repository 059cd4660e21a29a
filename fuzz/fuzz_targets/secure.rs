#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| bridgechat_core::fuzzing::secure(data));
