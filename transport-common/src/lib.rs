//! What the bridgechat transports (mio, std, io_uring) share: the limits and timings
//! they apply to every connection, how they bind a listener, and how they
//! start a connection (from a given local port when asked).
//!
//! The core is sans-IO and cannot hold socket code; each transport keeps only
//! its own readiness or thread logic.

#![forbid(unsafe_code)]

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

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
///
/// A `shared` listener lets this process's own outgoing connections leave from
/// its port ([`start_connect`] and [`connect_timeout`] with `from`). The bind
/// itself stays exclusive, so a port another program or another bridgechat
/// holds still fails with `AddrInUse`; SO_REUSEPORT is set only once the port
/// is ours, and Linux checks it when a later socket binds the port, not when it
/// is set. Only a socket of this user that asks for SO_REUSEPORT itself can
/// then share the port, and bridgechat's listeners never ask before binding.
pub fn bind_listener(addr: SocketAddr, shared: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    if shared {
        share_port(&socket)?;
    }
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// Starts a non-blocking connect to `addr`, from local port `from` if given
/// (else an ephemeral one). The stream is non-blocking; it is connected once
/// it turns writable and reports no error.
pub fn start_connect(addr: SocketAddr, from: Option<u16>) -> io::Result<TcpStream> {
    let socket = outgoing(addr, from)?;
    socket.set_nonblocking(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if connect_under_way(&e) => {}
        Err(e) => return Err(e),
    }
    Ok(socket.into())
}

/// Connects to `addr`, from local port `from` if given (else an ephemeral
/// one), waiting at most `timeout`. The stream is blocking.
pub fn connect_timeout(
    addr: SocketAddr,
    from: Option<u16>,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let socket = outgoing(addr, from)?;
    socket.connect_timeout(&addr.into(), timeout)?;
    Ok(socket.into())
}

/// A TCP socket for `addr`'s family, bound to port `from` (any address) if
/// given. It may share that port with a [`bind_listener`] `shared` listener
/// or an earlier connection from it; a port held without sharing refuses it.
fn outgoing(addr: SocketAddr, from: Option<u16>) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if let Some(port) = from {
        let any: IpAddr = match addr {
            SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        };
        socket.set_reuse_address(true)?;
        share_port(&socket)?;
        socket.bind(&SocketAddr::new(any, port).into())?;
    }
    Ok(socket)
}

/// Lets other sockets of this user that also ask for it bind the same port.
#[cfg(unix)]
fn share_port(socket: &Socket) -> io::Result<()> {
    socket.set_reuse_port(true)
}

/// Without SO_REUSEPORT nothing shares a port: connects from a listener's
/// port then fail with `AddrInUse`, as any taken port does.
#[cfg(not(unix))]
fn share_port(_: &Socket) -> io::Result<()> {
    Ok(())
}

/// Whether a non-blocking connect's error only says it has not finished yet
/// (`EAGAIN` is not that: it means no local port was free).
#[cfg(unix)]
fn connect_under_way(error: &io::Error) -> bool {
    error.raw_os_error() == Some(libc::EINPROGRESS)
}

/// Whether a non-blocking connect's error only says it has not finished yet.
#[cfg(not(unix))]
fn connect_under_way(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::WouldBlock
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

    const WAIT: Duration = Duration::from_secs(10);

    fn loopback() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    /// Sends a few bytes one way and reads them on the other side.
    fn carries_bytes(mut from: &TcpStream, mut to: &TcpStream) {
        to.set_read_timeout(Some(WAIT)).unwrap();
        from.write_all(b"hi").unwrap();
        let mut buf = [0; 2];
        to.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
    }

    #[test]
    fn a_bound_listener_reports_its_port_and_accepts() {
        let listener = bind_listener(loopback(), false).unwrap();
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
        let listener = bind_listener(loopback(), false).unwrap();
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
        let first = bind_listener(loopback(), false).unwrap();
        let taken = first.local_addr().unwrap();
        let error = bind_listener(taken, false).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn a_connect_from_a_shared_listeners_port_leaves_from_that_port() {
        let shared = bind_listener(loopback(), true).unwrap();
        let port = shared.local_addr().unwrap().port();
        let far = bind_listener(loopback(), false).unwrap();
        let stream = connect_timeout(far.local_addr().unwrap(), Some(port), WAIT).unwrap();
        assert_eq!(stream.local_addr().unwrap().port(), port);
        let (accepted, peer) = far.accept().unwrap();
        assert_eq!(peer.port(), port, "the far side sees the listener's port");
        carries_bytes(&stream, &accepted);

        // The listener still takes connections on the port it now shares.
        let client = TcpStream::connect_timeout(&shared.local_addr().unwrap(), WAIT).unwrap();
        let (served, _) = shared.accept().unwrap();
        carries_bytes(&client, &served);
    }

    #[test]
    fn a_connect_started_without_waiting_leaves_from_the_given_port() {
        let shared = bind_listener(loopback(), true).unwrap();
        let port = shared.local_addr().unwrap().port();
        let far = bind_listener(loopback(), false).unwrap();
        let stream = start_connect(far.local_addr().unwrap(), Some(port)).unwrap();
        // The kernel completes the handshake whether or not we wait for it.
        let (accepted, peer) = far.accept().unwrap();
        assert_eq!(peer.port(), port, "the far side sees the listener's port");
        stream.set_nonblocking(false).unwrap();
        carries_bytes(&stream, &accepted);
    }

    #[test]
    fn a_shared_listeners_port_still_refuses_every_other_listener() {
        let shared = bind_listener(loopback(), true).unwrap();
        let taken = shared.local_addr().unwrap();
        for other_shared in [false, true] {
            let error = bind_listener(taken, other_shared).unwrap_err();
            assert_eq!(
                error.kind(),
                io::ErrorKind::AddrInUse,
                "shared: {other_shared}"
            );
        }
        let error = TcpListener::bind(taken).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn a_listener_that_does_not_share_refuses_connects_from_its_port() {
        let exclusive = bind_listener(loopback(), false).unwrap();
        let port = exclusive.local_addr().unwrap().port();
        let far = bind_listener(loopback(), false).unwrap();
        let error = connect_timeout(far.local_addr().unwrap(), Some(port), WAIT).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
        let error = start_connect(far.local_addr().unwrap(), Some(port)).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn a_connect_from_a_port_nothing_holds_leaves_from_it() {
        // A port the system just gave out and took back, so most likely free.
        let port = bind_listener(loopback(), false)
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let far = bind_listener(loopback(), false).unwrap();
        let stream = connect_timeout(far.local_addr().unwrap(), Some(port), WAIT).unwrap();
        let (accepted, peer) = far.accept().unwrap();
        assert_eq!(peer.port(), port);
        carries_bytes(&stream, &accepted);
    }

    #[test]
    fn a_connect_from_no_given_port_leaves_from_an_ephemeral_one() {
        let shared = bind_listener(loopback(), true).unwrap();
        let far = bind_listener(loopback(), false).unwrap();
        let stream = connect_timeout(far.local_addr().unwrap(), None, WAIT).unwrap();
        let (accepted, peer) = far.accept().unwrap();
        assert_ne!(peer.port(), shared.local_addr().unwrap().port());
        assert_eq!(peer, stream.local_addr().unwrap());
        carries_bytes(&stream, &accepted);
    }
}
