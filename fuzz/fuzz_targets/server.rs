#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| drop(bridgechat_core::fuzzing::server(
    data,
    std::time::Instant::now()
)));
