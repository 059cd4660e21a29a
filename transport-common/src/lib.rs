//! What both bridgechat transports (mio and std) share: the limits and timings
//! they apply to every connection, and how they bind a listener.
//!
//! The core is sans-IO and cannot hold socket code; each transport keeps only
//! its own readiness or thread logic.

#![forbid(unsafe_code)]

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

/// Queued output at which a connection stops being read until it drains.
pub const HIGH_WATER: usize = 64 * 1024;
/// Queued output past which a connection is dropped as a reader that never reads.
pub const MAX_QUEUED: usize = 1024 * 1024;
/// How long a closed connection may take to flush and see the peer's end.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How long `Exit` waits for output to drain before closing anyway.
pub const EXIT_FLUSH: Duration = Duration::from_secs(1);
/// How long accepting pauses after `accept` fails (e.g. `EMFILE`).
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Connections the kernel may queue before we accept them. mio's and std's 128
/// overflow under a burst of connects, and each overflowed client then waits 1-3 s
/// for a SYN retransmit; the kernel caps this at `net.core.somaxconn`.
pub const LISTEN_BACKLOG: i32 = 4096;

/// A listener like `std::net::TcpListener::bind` (SO_REUSEADDR, the system's
/// dual-stack default for IPv6), with a [`LISTEN_BACKLOG`]-deep accept queue.
pub fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// Makes closing `socket` send a reset at once (`SO_LINGER` 0) instead of a
/// graceful end: queued output is dropped and the descriptor is free on close.
#[cfg(unix)]
pub fn reset_on_close<S: std::os::fd::AsFd>(socket: &S) -> io::Result<()> {
    socket2::SockRef::from(socket).set_linger(Some(Duration::ZERO))
}

/// Makes closing `socket` send a reset at once (`SO_LINGER` 0) instead of a
/// graceful end: queued output is dropped and the descriptor is free on close.
#[cfg(windows)]
pub fn reset_on_close<S: std::os::windows::io::AsSocket>(socket: &S) -> io::Result<()> {
    socket2::SockRef::from(socket).set_linger(Some(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    #[test]
    fn a_bound_listener_reports_its_port_and_accepts() {
        let listener = bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        let mut client = TcpStream::connect(addr).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        client.write_all(b"hi").unwrap();
        let mut buf = [0; 2];
        server.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
    }

    #[test]
    fn a_socket_set_to_reset_on_close_resets_its_peer() {
        let listener = bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        reset_on_close(&server).unwrap();
        drop(server);
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let error = client.read(&mut [0; 1]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionReset);
    }

    #[test]
    fn binding_a_taken_port_fails_with_the_os_error() {
        let first = bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let taken = first.local_addr().unwrap();
        let error = bind_listener(taken).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
    }
}
