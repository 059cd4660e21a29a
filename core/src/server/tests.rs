//! Unit tests of the server's own bookkeeping (timers, address counts).

use super::*;
use crate::Output;

const SEED: [u8; 32] = [7; 32];

fn drain(server: &mut Server) {
    while server.poll_output().is_some() {}
}

fn peer(i: u32) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + i)), 50_000)
}

/// Sends `request` on `conn` and returns the bytes answered.
fn answer(server: &mut Server, conn: ConnId, request: &str) -> String {
    server.handle_data(Instant::now(), conn, request.as_bytes());
    let mut sent = Vec::new();
    while let Some(output) = server.poll_output() {
        if let Output::Transmit { bytes, .. } = output {
            sent.extend_from_slice(bytes);
        }
    }
    String::from_utf8(sent).unwrap()
}

#[test]
fn a_connection_dropped_for_unread_answers_is_logged_as_that() {
    let mut server = Server::new(ServerConfig::default(), SEED);
    drain(&mut server);
    let now = Instant::now();
    let conn = server.handle_accept(now, peer(1));
    drain(&mut server);
    server.handle_not_reading(now, conn);
    let mut reasons = Vec::new();
    while let Some(output) = server.poll_output() {
        if let Output::Event(ServerEvent::Closed { reason, .. }) = output {
            reasons.push(reason.to_string());
        }
    }
    assert_eq!(reasons, ["dropped: too many answers left unread"]);
}

#[test]
fn with_strict_ip_a_public_connection_registers_only_its_own_address() {
    let mut server = Server::new(
        ServerConfig {
            strict_ip: true,
            ..ServerConfig::default()
        },
        SEED,
    );
    let from: SocketAddr = "203.0.113.7:40000".parse().unwrap();
    let conn = server.handle_accept(Instant::now(), from);
    drain(&mut server);
    let register =
        |ip: &str| format!("REGISTER / HTTP/1.1\r\nName: a\r\nIP: {ip}\r\nPort: 9\r\n\r\n");
    for other in ["203.0.113.8", "10.0.0.1", "127.0.0.1"] {
        let sent = answer(&mut server, conn, &register(other));
        assert!(sent.starts_with("HTTP/1.1 403 Forbidden"), "{sent}");
        assert!(
            sent.ends_with(&format!(
                "IP {other} is not the address you connect from (203.0.113.7)"
            )),
            "{sent}"
        );
    }
    assert!(answer(&mut server, conn, &register("203.0.113.7")).starts_with("HTTP/1.1 200 OK"));
    // The same address written as IPv4-mapped IPv6 is the same address.
    let mapped = answer(&mut server, conn, &register("::ffff:203.0.113.7"));
    assert!(mapped.starts_with("HTTP/1.1 200 OK"), "{mapped}");
}

#[test]
fn connections_that_come_and_go_leave_no_timers_or_address_counts_behind() {
    let mut server = Server::new(ServerConfig::default(), SEED);
    let now = Instant::now();
    for i in 0..10_000 {
        let conn = server.handle_accept(now, peer(i));
        // A head in progress queues the second kind of timer too.
        server.handle_data(now, conn, b"BRID");
        server.handle_closed(now, conn);
        drain(&mut server);
    }
    assert!(
        server.timers.len() <= 128,
        "{} timers left for no connection",
        server.timers.len()
    );
    assert!(server.per_ip.is_empty());
    assert!(server.conns.is_empty());
}

/// Regression: the push that triggers a rebuild must not lose the timer it pushed.
#[test]
fn a_head_timer_whose_push_triggers_compaction_still_fires() {
    // Sweep the number of stale timers so that, for one of them, the head push
    // is the one that crosses the rebuild threshold.
    for stale in 100..300 {
        let mut server = Server::new(ServerConfig::default(), SEED);
        let start = Instant::now();
        let live = server.handle_accept(start, peer(0));
        for i in 1..=stale {
            let conn = server.handle_accept(start, peer(i));
            server.handle_closed(start, conn);
        }
        server.handle_data(start, live, b"BRID");
        drain(&mut server);
        server.handle_timeout(start + server.config.head_timeout);
        let mut closed = false;
        while let Some(output) = server.poll_output() {
            closed |= output == Output::Close { conn: live };
        }
        assert!(closed, "no 408 with {stale} stale timers");
    }
}

#[test]
fn compaction_keeps_the_timers_of_live_connections() {
    let config = ServerConfig::default();
    let (head, register) = (config.head_timeout, config.register_timeout);
    let mut server = Server::new(config, SEED);
    let start = Instant::now();
    let live = server.handle_accept(start, peer(0));
    server.handle_data(start, live, b"BRID");
    for i in 1..1_000 {
        let conn = server.handle_accept(start, peer(i));
        server.handle_closed(start, conn);
    }
    drain(&mut server);
    server.handle_timeout(start + head);
    let sent: Vec<_> = std::iter::from_fn(|| match server.poll_output() {
        Some(Output::Close { conn }) => Some(Some(conn)),
        Some(_) => Some(None),
        None => None,
    })
    .flatten()
    .collect();
    assert_eq!(sent, vec![live], "the head timer survived compaction");

    let idle = server.handle_accept(start, peer(0));
    for i in 1..1_000 {
        let conn = server.handle_accept(start, peer(i));
        server.handle_closed(start, conn);
    }
    drain(&mut server);
    server.handle_timeout(start + register);
    assert_eq!(server.stats().connections, 0, "{idle:?} was not closed");
}
