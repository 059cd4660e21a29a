//! The client target: a [`Client`] driven through the core's driver, with the
//! fuzzer deciding what the network does.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::{fuzz_contact, fuzz_name, OpReader};
use crate::client::{Client, ClientConfig, ClientEvent, ClientInput};
use crate::codec::{self, Decoder, Introduction, Request, Status, Ticket, Version};
use crate::contact::{Contact, Name};
use crate::course::{self, CourseDecoder, CourseMessage};
use crate::driver::{drive, Outcome, Outcomes, Transport};
use crate::{ConnId, Endpoint};

/// Drives a [`Client`] from operations read out of `data`: typed lines, Ctrl+C, end of
/// input, and bytes from the server and from peers in any interleaving, with time passing.
///
/// The first byte's low bit makes it a `--legacy` client (the course format to
/// the server and peers); the server and peers may send either format.
///
/// Checks: no panic; connection ids are never reused; nothing is sent on, or closed
/// twice on, a connection that is closed; what goes to the server decodes as requests
/// (course requests with `--legacy`); timers make progress; nothing happens after `Exit`.
pub fn client(data: &[u8], start: Instant) {
    let server_addr: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7070);
    let me = fuzz_name(0);
    let mut ops = OpReader { data };
    let legacy = ops.byte().is_some_and(|b| b % 2 == 1);
    let config = ClientConfig {
        legacy,
        ..ClientConfig::new(me, server_addr)
    };
    let mut client = Client::new(config, start);
    let mut conns = ClientConns::new(server_addr, start, legacy);
    let mut now = start;
    if conns.drain(&mut client) {
        return;
    }
    while let Some(op) = ops.byte() {
        match op % 16 {
            0..=2 => {
                const LINES: [&str; 11] = [
                    "/register",
                    "/bridge",
                    "/bridge peer1",
                    "/bridge b@d",
                    "/chat",
                    "/quit",
                    "/help",
                    "hello",
                    "",
                    "/nope",
                    "multi\u{e9} word message",
                ];
                let line = LINES[usize::from(ops.arg()) % LINES.len()];
                client.handle_input(now, ClientInput::Line(line.to_owned()));
            }
            3 => {
                let text = String::from_utf8_lossy(ops.bytes(64)).into_owned();
                client.handle_input(now, ClientInput::Line(text));
            }
            4 => {
                let input = if ops.arg() % 2 == 0 {
                    ClientInput::EndOfInput
                } else {
                    ClientInput::Interrupt
                };
                client.handle_input(now, input);
            }
            5 => {
                if let Some(addr) = conns.listen.take() {
                    let outcome = if ops.arg() % 8 == 0 {
                        Outcome::ListenFailed(
                            addr,
                            std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use"),
                        )
                    } else {
                        conns.listening = true;
                        Outcome::Listening(SocketAddr::new(addr.ip(), 9000))
                    };
                    conns.outcomes.push(outcome);
                }
            }
            6 => {
                if let Some(conn) = conns.connecting.pop_front() {
                    let outcome = if ops.arg() % 8 == 0 {
                        conns.live.remove(&conn);
                        Outcome::ConnectFailed(
                            conn,
                            std::io::Error::new(
                                std::io::ErrorKind::ConnectionRefused,
                                "connection refused",
                            ),
                        )
                    } else {
                        conns.established.insert(conn);
                        let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 50000);
                        Outcome::Connected(conn, local)
                    };
                    conns.outcomes.push(outcome);
                }
            }
            7 | 8 => {
                // The server connection, or a relay connection to the server's port.
                if let Some(conn) = conns.pick(&conns.servers, ops.arg()) {
                    let bytes = server_says(ops.arg(), me);
                    client.handle_data(now, conn, &bytes);
                }
            }
            9 => {
                // A transport accepts only on a listener the client asked for.
                if conns.listening {
                    // A stranger, or the introduced peer's punch from its observed address.
                    let peer = if ops.arg() % 2 == 0 {
                        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 41000)
                    } else {
                        introduction(true).observed
                    };
                    let conn = client.handle_accept(now, peer);
                    assert!(conns.seen.insert(conn), "{conn} reused by handle_accept");
                    conns.live.insert(conn);
                    conns.established.insert(conn);
                    conns.peers.push(conn);
                }
            }
            10 | 11 => {
                if let Some(conn) = conns.pick(&conns.peers, ops.arg()) {
                    let bytes = peer_says(ops.arg());
                    client.handle_data(now, conn, &bytes);
                }
            }
            12 => {
                let all: Vec<ConnId> = conns.established.iter().copied().collect();
                if let Some(conn) = conns.pick(&all, ops.arg()) {
                    client.handle_data(now, conn, ops.bytes(128));
                }
            }
            13 => {
                let all: Vec<ConnId> = conns.established.iter().copied().collect();
                if let Some(conn) = conns.pick(&all, ops.arg()) {
                    conns.live.remove(&conn);
                    conns.established.remove(&conn);
                    conns.outcomes.push(Outcome::Closed(conn));
                }
            }
            _ => {
                now += Duration::from_millis(100) * u32::from(ops.arg());
                conns.now = now;
            }
        }
        if conns.drain(&mut client) {
            return;
        }
        if client.poll_timeout().is_some_and(|t| t <= now) {
            client.handle_timeout(now);
            if conns.drain(&mut client) {
                return;
            }
            assert!(
                client.poll_timeout().map_or(true, |t| t > now),
                "handle_timeout left a deadline in the past"
            );
        }
    }
}

/// The ticket of the fuzzer's introductions (`n` = 7); peers may send it or another.
fn ticket(n: u8) -> Ticket {
    Ticket::from_bytes([n; 16])
}

/// The first handshake message of an encrypted chat under `ticket(n)`.
fn hello(n: u8) -> codec::Noise {
    let (_, first) = crate::secure::Initiator::new(&ticket(n).to_bytes(), [n; 32]);
    codec::Noise(first.try_into().expect("a handshake message"))
}

/// An introduction of `fuzz_contact(1)`: v2 with the ticket, or v1 without.
fn introduction(v2: bool) -> Introduction {
    Introduction {
        peer: fuzz_contact(1),
        peer_version: if v2 { Version::V2 } else { Version::V1 },
        observed: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)), 51234),
        ticket: v2.then(|| ticket(7)),
    }
}

/// What the server might answer or, version 2, notify, chosen by `i`.
fn server_says(i: u8, me: Name) -> Vec<u8> {
    let mut out = Vec::new();
    match i % 20 {
        14 => course::write_regack(
            &mut out,
            &Contact::new(me, IpAddr::V4(Ipv4Addr::LOCALHOST), 9000).expect("a valid contact"),
            i / 20 % 2 == 0,
        ),
        15 => course::write_bridgeack(&mut out, None),
        16 => course::write_bridgeack(&mut out, Some(&fuzz_contact(1))),
        17 => codec::write_paired_dialect(&mut out, &introduction(false), true),
        18 => codec::write_relay(&mut out, &ticket(7 + i / 20 % 2)),
        19 => codec::write_error(
            &mut out,
            Status::SERVICE_UNAVAILABLE,
            &"this server does not relay",
            codec::AfterError::Close,
        ),
        8 => codec::write_registered_v2(
            &mut out,
            &Contact::new(me, IpAddr::V4(Ipv4Addr::LOCALHOST), 9000).expect("a valid contact"),
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 50000),
        ),
        9 => codec::write_matched(&mut out, &introduction(true)),
        10 => codec::write_matched(&mut out, &introduction(false)),
        11 => codec::write_unmatched(
            &mut out,
            &fuzz_contact(1).name,
            Some(&ticket(7)),
            &"peer1 left the server",
        ),
        12 => codec::write_paired(&mut out, &introduction(i / 20 % 2 == 0)),
        13 => codec::write_started(&mut out, Some(&ticket(7))),
        0 => codec::write_ok(&mut out, None),
        1 => codec::write_ok(&mut out, Some(&fuzz_contact(1))),
        2 => codec::write_ok(
            &mut out,
            Some(
                &Contact::new(me, IpAddr::V4(Ipv4Addr::LOCALHOST), 9000).expect("a valid contact"),
            ),
        ),
        3 => codec::write_error(
            &mut out,
            Status::CONFLICT,
            &"name already taken",
            codec::AfterError::KeepOpen,
        ),
        4 => codec::write_error(
            &mut out,
            Status::FORBIDDEN,
            &"register first",
            codec::AfterError::KeepOpen,
        ),
        5 => codec::write_error(
            &mut out,
            Status::BAD_REQUEST,
            &"malformed",
            codec::AfterError::Close,
        ),
        6 => out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Len"),
        _ => out.extend_from_slice(b"\x16\x03\x01garbage\r\n\r\n"),
    }
    out
}

/// What a peer might send on a chat connection, chosen by `i`.
fn peer_says(i: u8) -> Vec<u8> {
    let mut out = Vec::new();
    match i % 13 {
        // The course format: its CHAT, raw turns, a turn and the quit in one read.
        9 => course::write_chat(&mut out, &fuzz_contact(1)),
        10 => out.extend_from_slice("hi there, h\u{e9}llo".as_bytes()),
        11 => out.extend_from_slice(b"byeQUIT\r\n\r\n\r\n"),
        12 => out.extend_from_slice(b"QUIT"),
        0 => codec::write_chat(&mut out, &fuzz_contact(1)),
        // The first handshake message under the match's ticket: an encrypted chat.
        7 => codec::write_chat_v2(&mut out, &fuzz_contact(1), None, Some(&hello(7))),
        // A frame that cannot open (the session's keys are unknown here).
        8 => codec::write_sealed_message(&mut out, &[8; 40]),
        1 => codec::write_message(&mut out, b"hi there"),
        2 => codec::write_message(&mut out, b"\xff\xfe not utf-8\nsecond line"),
        3 => codec::write_quit(&mut out),
        4 => codec::write_ok(&mut out, Some(&fuzz_contact(1))),
        5 => codec::write_error(
            &mut out,
            Status::CONFLICT,
            &"not waiting",
            codec::AfterError::Close,
        ),
        _ => out.extend_from_slice(b"MESSAGE / HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort"),
    }
    out
}

/// The connections of the client target as its transport would see them.
#[derive(Debug)]
struct ClientConns {
    /// The rendezvous server's address, to tell its connection from peers'.
    server_addr: SocketAddr,
    /// Virtual time, at which outcomes are fed back.
    now: Instant,
    /// A listener asked for and not yet reported.
    listen: Option<SocketAddr>,
    /// Whether the listener is bound, so connections can be accepted.
    listening: bool,
    /// Connects asked for and not yet reported.
    connecting: VecDeque<ConnId>,
    /// Connections to the rendezvous server's port: the server connection, and relays.
    servers: Vec<ConnId>,
    /// Chat connections, accepted or opened.
    peers: Vec<ConnId>,
    /// Every id ever handed out.
    seen: BTreeSet<ConnId>,
    /// Ids not closed by either side.
    live: BTreeSet<ConnId>,
    /// Live ids whose TCP connection is up: bytes can arrive on them.
    established: BTreeSet<ConnId>,
    /// Decodes what goes to the server; the client must speak the protocol.
    to_server: BTreeMap<ConnId, Decoder>,
    /// With `--legacy`, the server connection, which speaks the course format instead.
    course_server: Option<ConnId>,
    to_course_server: Option<CourseDecoder>,
    legacy: bool,
    /// Set at `Exit`: nothing may follow it.
    exited: bool,
    /// What the fuzzer decided became of listens, connects and connections.
    outcomes: Outcomes,
}

impl ClientConns {
    fn new(server_addr: SocketAddr, now: Instant, legacy: bool) -> ClientConns {
        ClientConns {
            server_addr,
            now,
            listen: None,
            listening: false,
            connecting: VecDeque::new(),
            servers: Vec::new(),
            peers: Vec::new(),
            seen: BTreeSet::new(),
            live: BTreeSet::new(),
            established: BTreeSet::new(),
            to_server: BTreeMap::new(),
            course_server: None,
            to_course_server: None,
            legacy,
            exited: false,
            outcomes: Outcomes::default(),
        }
    }

    /// The `i`th established connection of `among`, if any is.
    fn pick(&self, among: &[ConnId], i: u8) -> Option<ConnId> {
        let up: Vec<ConnId> = among
            .iter()
            .copied()
            .filter(|c| self.established.contains(c))
            .collect();
        (!up.is_empty()).then(|| up[usize::from(i) % up.len()])
    }

    /// Carries out the client's outputs and feeds back outcomes; true once it asked to exit.
    fn drain(&mut self, client: &mut Client) -> bool {
        drive(client, self)
    }

    fn not_exited(&self, what: std::fmt::Arguments<'_>) {
        assert!(!self.exited, "output after Exit: {what}");
    }
}

/// The client's outputs, checked as they are carried out.
impl Transport<ClientEvent> for ClientConns {
    fn now(&mut self) -> Instant {
        self.now
    }

    fn listen(&mut self, addr: SocketAddr, _shared: bool) {
        self.not_exited(format_args!("Listen {addr}"));
        self.listen = Some(addr);
    }

    fn connect(&mut self, conn: ConnId, addr: SocketAddr, _from: Option<u16>) {
        self.not_exited(format_args!("Connect {conn} {addr}"));
        assert!(self.seen.insert(conn), "{conn} reused by Connect");
        self.live.insert(conn);
        self.connecting.push_back(conn);
        if addr == self.server_addr {
            self.servers.push(conn);
            if self.legacy {
                self.course_server = Some(conn);
                self.to_course_server = Some(CourseDecoder::default());
            } else {
                self.to_server.insert(conn, Decoder::default());
            }
        } else {
            self.peers.push(conn);
        }
    }

    fn transmit(&mut self, conn: ConnId, bytes: &[u8]) {
        self.not_exited(format_args!("Transmit {conn}"));
        assert!(
            self.live.contains(&conn),
            "transmit on closed or unknown {conn}"
        );
        if let Some(decoder) = self
            .to_course_server
            .as_mut()
            .filter(|_| self.course_server == Some(conn))
        {
            let mut input = bytes;
            while let Some(message) = decoder
                .decode(&mut input)
                .unwrap_or_else(|e| panic!("the client sent a malformed course request: {e}"))
            {
                assert!(
                    matches!(
                        message,
                        CourseMessage::Register(_) | CourseMessage::Bridge(_)
                    ),
                    "the client sent {message:?} to a course server"
                );
            }
        }
        if let Some(decoder) = self.to_server.get_mut(&conn) {
            let mut input = bytes;
            let mut relayed = false;
            while let Some(request) = decoder
                .decode_request(&mut input)
                .unwrap_or_else(|e| panic!("the client sent a malformed request: {e}"))
            {
                assert!(
                    !matches!(
                        request,
                        Request::Unknown | Request::Invalid { .. } | Request::Page(_)
                    ),
                    "the client sent {request:?}"
                );
                if matches!(request, Request::Relay(_)) {
                    // From here on the connection carries the chat (answers
                    // included), which the server never reads.
                    relayed = true;
                    break;
                }
            }
            if relayed {
                self.to_server.remove(&conn);
            }
        }
    }

    fn close(&mut self, conn: ConnId) {
        self.not_exited(format_args!("Close {conn}"));
        assert!(self.live.remove(&conn), "close of closed or unknown {conn}");
        self.established.remove(&conn);
        self.connecting.retain(|&c| c != conn);
    }

    fn abort(&mut self, conn: ConnId) {
        self.close(conn);
    }

    fn show(&mut self, event: ClientEvent) {
        self.not_exited(format_args!("Event {event:?}"));
    }

    fn exit(&mut self, _result: Result<(), crate::ExitError>) {
        self.exited = true;
    }

    fn outcomes(&mut self) -> &mut Outcomes {
        &mut self.outcomes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_target_runs_on_a_few_inputs() {
        let start = Instant::now();
        client(b"", start);
        // --legacy: register, bridge, chat with a course peer.
        client(
            &[
                1, 5, 1, 6, 1, 0, 0, 7, 14, 0, 1, 7, 16, 0, 4, 6, 1, 10, 10, 10, 0, 10, 11, 13, 0,
            ],
            start,
        );
        client(
            &[5, 1, 6, 1, 0, 0, 7, 0, 0, 1, 9, 10, 0, 10, 1, 0, 3, 13, 0],
            start,
        );
        client(&(0..=255).rev().collect::<Vec<u8>>(), start);
    }

    /// Many pseudo-random inputs (seeded: the same every run), so the body's
    /// checks meet the punches and relays without a fuzzer.
    #[test]
    fn client_target_holds_on_seeded_random_inputs() {
        let start = Instant::now();
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..std::env::var("FUZZ_SMOKE").map_or(300, |n| n.parse().unwrap_or(300)) {
            let data: Vec<u8> = (0..400)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 32) as u8
                })
                .collect();
            client(&data, start);
        }
    }
}
