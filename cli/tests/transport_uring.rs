//! The shared transport suite, run on the io_uring transport (Linux only),
//! and the backpressure it shares with mio.
#![cfg(target_os = "linux")]

mod suite;

transport_suite!(bridgechat_transport_uring);

/// Like mio, the io_uring loop stops receiving on a connection whose answers
/// pile up instead of dropping it: the slow reader gets every answer once it reads.
#[test]
fn a_reader_that_never_reads_is_paused_then_served_completely() {
    assert_eq!(
        suite::slow_reader_scenario::<Transport>(),
        suite::SlowReaderOutcome::Served
    );
}
