//! Runs of the server target on chosen inputs.

use super::*;

/// Op bytes for the server target: the high nibble picks the connection.
fn op(code: u8, conn: u8) -> u8 {
    conn << 4 | code
}

#[test]
fn server_target_runs_a_whole_rendezvous() {
    #[rustfmt::skip]
    let ops = [
        op(0, 0), 0,            // open #0
        op(0, 1), 1,            // open #1
        op(2, 0), 0,            // #0 registers alice: 200
        op(2, 1), 0,            // #1 registers alice too: 409
        op(2, 1), 1,            // #1 registers bob: 200
        op(4, 0), 0,            // #0 bridges: 200, waits
        op(4, 0), 0,            // #0 bridges again: 200, still waits
        op(4, 1), 1,            // #1 bridges with its own name: 200 with alice
        op(6, 1),               // #1 unregisters: 200
        op(4, 1), 0,            // #1 bridges: 403
        op(10, 1), 1,           // MESSAGE to the server: 501
        op(8, 1), 3, 0xff, 0x00, b'\n', // garbage: 400, closed
        op(0, 2), 2,            // open #2, never registers
        op(12, 0), 200,         // 50 s pass: #2 closed without an answer, #0 kept
        op(4, 0), 0,            // #0 bridges: 200, waits
        op(7, 0),               // #0 closes
        op(15, 0), 0xff,        // shutdown
    ];
    let statuses: Vec<u16> = server(&ops, Instant::now())
        .iter()
        .map(|s| s.code())
        .collect();
    assert_eq!(
        statuses,
        [200, 409, 200, 200, 200, 200, 200, 403, 501, 400, 200]
    );
}

#[test]
fn server_target_models_a_relay() {
    #[rustfmt::skip]
    let ops = [
        op(0, 0), 0, op(0, 1), 1, // open #0, #1
        op(3, 0), 0, op(3, 1), 1, // v2 alice on #0, v2 bob on #1
        op(4, 0), 0, op(4, 1), 0, // alice waits; bob is handed alice: a ticket
        op(0, 2), 2,            // open #2
        op(15, 2), 0x10,        // #2 RELAY with alice's ticket, bytes behind: held
        op(0, 3), 0,            // open #3
        op(15, 3), 0x00,        // #3 RELAY with it too: 200 to both, spliced
        op(8, 3), 3, b'a', b'b', b'c', // relayed to #2 verbatim
        op(8, 2), 2, b'\r', b'\n', // and back
        op(15, 1), 0x00,        // RELAY on bob's server connection: 400
        op(0, 4), 0,            // open #4
        op(15, 4), 0x00,        // a third RELAY with the ticket: 403, closed
        op(12, 0), 60,          // 15 s pass: the relay is not idle long enough to end
        op(8, 2), 1, b'x',      // still relayed
        op(7, 2),               // #2 closes: the server closes #3
        op(15, 0), 0xff,        // shutdown
    ];
    let statuses: Vec<u16> = server(&ops, Instant::now())
        .iter()
        .map(|s| s.code())
        .collect();
    assert_eq!(statuses, [200, 200, 200, 200, 400]);
}

/// Found by the fuzzer: a lone CR before a REGISTER, skipped as a blank line.
#[test]
fn server_target_regression_blank_line_before_a_request() {
    let data = b"\x00\x00\x10\x00\x00\x20\x00\x00\x00\x00\x00\x84\x30\x00\x80\x02\
                 \x10\x00\x00\x20\x04\x00\x00\x36\x88\x00\x88\x05\x00\x80\x02\x10\
                 \x00\x00\x20\x04\x00\x00\x88\x01\x0d\x01\x02";
    assert!(!server(data, Instant::now()).is_empty());
}

#[test]
fn course_bytes_on_the_server_port_keep_every_invariant() {
    #[rustfmt::skip]
    let ops = [
        op(0, 0), op(1, 0), 0,  // open #0, course REGISTER alice
        op(0, 1), op(2, 1), 0,  // open #1, course BRIDGE alice: waits
        op(0, 2), op(4, 2), 1,  // open #2, HTTP v2 bob bridges: handed alice
        op(3, 0), 4, b'Q', b'\n', 0, 1, // garbage on #0: dropped
        op(6, 0), 40,           // 10 s pass: holds expire
        op(7, 1), op(5, 2),     // QUIT on #1, #2 closes
    ];
    course_server(&ops, Instant::now());
    course_server(&(0..=255).collect::<Vec<u8>>(), Instant::now());
}

#[test]
fn server_target_runs_on_odd_input() {
    let start = Instant::now();
    server(b"", start);
    server(&[0xff; 64], start);
    server(b"\x00\x00\x09\x07\x0d\xff\x0c\xff\x0c\xff", start);
    server(&(0..=255).collect::<Vec<u8>>(), start);
}
