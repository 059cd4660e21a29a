//! Behaviour particular to this transport's design (the shared suite is in `std_suite.rs`).

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use bridgechat_core::server::{CloseReason, Server, ServerConfig, ServerEvent, ServerInput};
use bridgechat_transport_std::Runner;

const WAIT: Duration = Duration::from_secs(20);

/// A peer that pipelines requests and never reads is dropped once its outbox is full,
/// rather than having its answers buffered without limit.
#[test]
fn reader_that_never_reads_is_dropped_when_its_outbox_fills() {
    let (events_tx, events) = mpsc::channel();
    let runner = Runner::new(Server::new(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ServerConfig::default()
    }))
    .unwrap();
    let controller = runner.controller();
    let (result_tx, result) = mpsc::channel();
    thread::spawn(move || {
        let _ = result_tx.send(runner.run(|event| {
            let _ = events_tx.send(event);
        }));
    });
    let addr = loop {
        match events.recv_timeout(WAIT).expect("listening") {
            ServerEvent::Listening(addr) => break addr,
            _ => continue,
        }
    };

    let mut flood = TcpStream::connect(addr).unwrap();
    flood.set_write_timeout(Some(WAIT)).unwrap();
    let burst = "UNREGISTER / HTTP/1.1\r\n\r\n".repeat(4096);
    let mut sent = 0usize;
    let error = loop {
        assert!(sent < 1 << 30, "1 GiB of requests and still connected");
        match flood.write_all(burst.as_bytes()) {
            Ok(()) => sent += burst.len(),
            Err(error) => break error,
        }
    };
    assert!(
        matches!(
            error.kind(),
            ErrorKind::BrokenPipe | ErrorKind::ConnectionReset
        ),
        "expected the server to drop us, got {error} after {sent} bytes"
    );
    loop {
        match events
            .recv_timeout(WAIT)
            .expect("the server reports the close")
        {
            ServerEvent::Closed { reason, .. } => {
                break assert_eq!(reason, CloseReason::PeerClosed)
            }
            _ => continue,
        }
    }
    assert!(controller.send(ServerInput::Shutdown));
    assert_eq!(result.recv_timeout(WAIT), Ok(Ok(())));
}
