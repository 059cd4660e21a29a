#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let now = std::time::Instant::now();
    drop(bridgechat_core::fuzzing::server(data, now));
    bridgechat_core::fuzzing::course_server(data, now);
});
