//! The shared transport suite, run on the mio transport, and what only mio promises.

mod suite;

transport_suite!(bridgechat_transport_mio);

/// mio stops reading a connection whose answers pile up (backpressure) instead
/// of dropping it: the slow reader gets every answer once it reads.
#[test]
fn a_reader_that_never_reads_is_paused_then_served_completely() {
    assert_eq!(
        suite::slow_reader_scenario::<Transport>(),
        suite::SlowReaderOutcome::Served
    );
}
