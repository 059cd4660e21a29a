//! Model-based property test of the rendezvous server.
//!
//! Random sequences of operations across up to 8 connections run against the real
//! `Server` and against a reference model written straight from the contract: the
//! registry model the server's fuzz target checks against too (who holds which
//! name, who waits), plus the timers and the exact bytes of every answer. Each connection's received bytes must equal
//! the model's, byte for byte, under every chunking; the server's own state must agree
//! with the model's; and the pairing invariants are checked on what the server did.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bridgechat_core::driver::{drive, Outcomes, Transport};
use bridgechat_core::fuzzing::{Bridged, Registered, RegistryModel};
use bridgechat_core::server::{Server, ServerConfig, ServerEvent};
use bridgechat_core::{ConnId, Contact, Endpoint};
use proptest::prelude::*;
use support::wire::*;
use support::{name, responses, Chunking, Rng};

const SLOTS: usize = 8;
/// A small pool, so names collide often (`BOB` with `bob`: names ignore case).
const NAMES: [&str; 5] = ["ann", "bob", "cy", "dee", "BOB"];
const HEAD_TIMEOUT: u64 = 10;
const REGISTER_TIMEOUT: u64 = 30;

/// The start of a BRIDGE head, left unfinished.
const PARTIAL_HEAD: &str = "BRIDGE / HTTP/1.1\r\nX-Partial: 1\r\n";

#[derive(Debug, Clone)]
enum GarbageKind {
    /// Starts with a byte no method may hold; `noise` follows.
    Binary(Vec<u8>),
    TransferEncoding,
    BadContentLength,
    HeadTooLarge,
}

#[derive(Debug, Clone)]
enum Op {
    Open(usize),
    Register {
        slot: usize,
        name: usize,
        port: u16,
    },
    Bridge {
        slot: usize,
        claim: Option<usize>,
    },
    Unregister(usize),
    Close(usize),
    UnknownMethod(usize),
    Garbage(usize, GarbageKind),
    /// Sends `PARTIAL_HEAD`; the head stays open until `FinishHead` or a timer.
    PartialHead(usize),
    /// Sends an empty line: finishes an open head, or is skipped between requests.
    FinishHead(usize),
    Advance(u64),
}

impl Op {
    /// The bytes a raw client sends for this op, if any.
    fn bytes(&self) -> Option<(usize, Vec<u8>)> {
        let (slot, text) = match self {
            Op::Register { slot, name, port } => {
                (*slot, register(NAMES[*name], &ip_of(*slot), *port))
            }
            Op::Bridge { slot, claim: None } => (*slot, bridge()),
            Op::Bridge {
                slot,
                claim: Some(n),
            } => (*slot, bridge_as(NAMES[*n])),
            Op::Unregister(slot) => (*slot, unregister()),
            Op::UnknownMethod(slot) => (*slot, "FOO / HTTP/1.1\r\n\r\n".to_owned()),
            Op::PartialHead(slot) => (*slot, PARTIAL_HEAD.to_owned()),
            Op::FinishHead(slot) => (*slot, "\r\n".to_owned()),
            Op::Garbage(slot, kind) => {
                let bytes = match kind {
                    GarbageKind::Binary(noise) => {
                        let mut b = vec![0u8];
                        b.extend_from_slice(noise);
                        b.extend_from_slice(b"\r\n\r\n");
                        b
                    }
                    GarbageKind::TransferEncoding => {
                        b"BRIDGE / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec()
                    }
                    GarbageKind::BadContentLength => {
                        b"BRIDGE / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n".to_vec()
                    }
                    GarbageKind::HeadTooLarge => {
                        format!("BRIDGE / HTTP/1.1\r\nX: {}\r\n\r\n", "x".repeat(9000)).into_bytes()
                    }
                };
                return Some((*slot, bytes));
            }
            Op::Open(_) | Op::Close(_) | Op::Advance(_) => return None,
        };
        Some((slot, text.into_bytes()))
    }
}

/// The IP a slot registers, so contacts tell slots apart.
fn ip_of(slot: usize) -> String {
    format!("10.0.0.{}", slot + 1)
}

fn op() -> impl Strategy<Value = Op> {
    let slot = 0..SLOTS;
    let name = 0..NAMES.len();
    let garbage = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..32).prop_map(GarbageKind::Binary),
        Just(GarbageKind::TransferEncoding),
        Just(GarbageKind::BadContentLength),
        Just(GarbageKind::HeadTooLarge),
    ];
    prop_oneof![
        3 => slot.clone().prop_map(Op::Open),
        4 => (slot.clone(), name.clone(), 1..=3u16)
            .prop_map(|(slot, name, port)| Op::Register { slot, name, port }),
        5 => (slot.clone(), prop::option::weighted(0.2, name))
            .prop_map(|(slot, claim)| Op::Bridge { slot, claim }),
        1 => slot.clone().prop_map(Op::Unregister),
        1 => slot.clone().prop_map(Op::Close),
        1 => slot.clone().prop_map(Op::UnknownMethod),
        1 => (slot.clone(), garbage).prop_map(|(s, g)| Op::Garbage(s, g)),
        1 => slot.clone().prop_map(Op::PartialHead),
        1 => slot.prop_map(Op::FinishHead),
        1 => prop_oneof![0..=3u64, Just(HEAD_TIMEOUT), Just(REGISTER_TIMEOUT)].prop_map(Op::Advance),
    ]
}

// ---------------------------------------------------------------------------
// The reference model

#[derive(Debug)]
struct ModelConn {
    id: ConnId,
    opened_at: u64,
    ever_registered: bool,
    /// When the open head's first byte arrived.
    partial_since: Option<u64>,
}

#[derive(Debug, Default)]
struct Model {
    now: u64,
    slots: [Option<ModelConn>; SLOTS],
    /// Who holds which name and who waits, by slot.
    registry: RegistryModel<usize>,
    /// What each connection should have received, and which ones the server closed.
    expected: BTreeMap<ConnId, Vec<u8>>,
    closed: BTreeSet<ConnId>,
}

impl Model {
    fn answer(&mut self, slot: usize, text: &str) {
        let id = self.slots[slot].as_ref().expect("live slot").id;
        self.expected
            .entry(id)
            .or_default()
            .extend_from_slice(text.as_bytes());
    }

    fn close(&mut self, slot: usize, by_server: bool) {
        self.registry.unregister(slot);
        if let Some(c) = self.slots[slot].take() {
            if by_server {
                self.closed.insert(c.id);
            }
        }
    }

    fn reject_and_close(&mut self, slot: usize, text: &str) {
        self.answer(slot, text);
        self.close(slot, true);
    }

    fn apply(&mut self, op: &Op, opened: Option<ConnId>) {
        if let Op::Advance(secs) = op {
            self.now += secs;
            return self.expire();
        }
        if let Op::Open(slot) = op {
            if let Some(id) = opened {
                self.expected.insert(id, Vec::new());
                self.slots[*slot] = Some(ModelConn {
                    id,
                    opened_at: self.now,
                    ever_registered: false,
                    partial_since: None,
                });
            }
            return;
        }
        let slot = match op {
            Op::Register { slot, .. } | Op::Bridge { slot, .. } => *slot,
            Op::Unregister(s)
            | Op::Close(s)
            | Op::UnknownMethod(s)
            | Op::Garbage(s, _)
            | Op::PartialHead(s)
            | Op::FinishHead(s) => *s,
            Op::Open(_) | Op::Advance(_) => unreachable!("handled above"),
        };
        let Some(conn) = &self.slots[slot] else {
            return; // nothing is open there
        };
        if let Op::Close(_) = op {
            return self.close(slot, false);
        }
        if conn.partial_since.is_some() {
            if let Op::FinishHead(_) = op {
                // The empty line ends the open BRIDGE head.
                self.slots[slot].as_mut().expect("live").partial_since = None;
                return self.bridge(slot, None);
            }
            // A request line where a header line belongs.
            return self
                .reject_and_close(slot, &error_closing("400 Bad Request", "malformed message"));
        }
        match op {
            Op::Register { name, port, .. } => self.register(slot, NAMES[*name], *port),
            Op::Bridge { claim, .. } => self.bridge(slot, claim.map(|n| NAMES[n])),
            Op::Unregister(_) => {
                self.registry.unregister(slot);
                self.answer(slot, &ok());
            }
            Op::UnknownMethod(_) => {
                self.answer(slot, &error("501 Not Implemented", "unknown method"))
            }
            Op::Garbage(_, kind) => {
                let (status, reason) = match kind {
                    GarbageKind::Binary(_) => ("400 Bad Request", "malformed message"),
                    GarbageKind::TransferEncoding => {
                        ("501 Not Implemented", "Transfer-Encoding is not supported")
                    }
                    GarbageKind::BadContentLength => ("400 Bad Request", "invalid Content-Length"),
                    GarbageKind::HeadTooLarge => (
                        "431 Request Header Fields Too Large",
                        "request head too large",
                    ),
                };
                self.reject_and_close(slot, &error_closing(status, reason));
            }
            Op::PartialHead(_) => {
                self.slots[slot].as_mut().expect("live").partial_since = Some(self.now);
            }
            Op::FinishHead(_) => {} // an empty line between requests is skipped
            Op::Open(_) | Op::Close(_) | Op::Advance(_) => unreachable!("handled above"),
        }
    }

    fn register(&mut self, slot: usize, who: &str, port: u16) {
        let ip = ip_of(slot);
        let contact = Contact::new(name(who), ip.parse().unwrap(), port).unwrap();
        match self.registry.register(slot, contact) {
            Registered::NameTaken => self.answer(
                slot,
                &error("409 Conflict", &format!("name already taken: {who}")),
            ),
            Registered::Stored => {
                self.slots[slot].as_mut().expect("live").ever_registered = true;
                self.answer(slot, &ok_contact(who, &ip, port));
            }
        }
    }

    fn bridge(&mut self, slot: usize, claim: Option<&str>) {
        let text = match self.registry.bridge(slot, claim.map(name)) {
            Bridged::NotRegistered => error("403 Forbidden", "register first"),
            Bridged::NameMismatch => error(
                "403 Forbidden",
                "Name does not match this connection's registration",
            ),
            Bridged::BadPeer | Bridged::WithYourself => {
                unreachable!("these connections speak version 1, which ignores Peer")
            }
            Bridged::Waits => ok(),
            Bridged::Paired(peer) => {
                ok_contact(peer.name.as_str(), &peer.ip.to_string(), peer.port())
            }
        };
        self.answer(slot, &text);
    }

    /// Closes what the head and register timers would have closed by `now`.
    fn expire(&mut self) {
        for slot in 0..SLOTS {
            let Some(c) = &self.slots[slot] else { continue };
            let head_due = c.partial_since.map(|t| t + HEAD_TIMEOUT);
            let register_due = (!c.ever_registered).then_some(c.opened_at + REGISTER_TIMEOUT);
            // The earlier deadline wins; on a tie the head timer fires first.
            let head_first = match (head_due, register_due) {
                (Some(h), Some(r)) => h <= r,
                (Some(_), None) => true,
                _ => false,
            };
            if head_first && head_due.is_some_and(|d| d <= self.now) {
                self.reject_and_close(
                    slot,
                    &error_closing("408 Request Timeout", "request head not complete in time"),
                );
            } else if register_due.is_some_and(|d| d <= self.now) {
                self.close(slot, true);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Driving the real server

struct Driver {
    server: Server,
    start: Instant,
    now: u64,
    chunking: Chunking,
    rng: Rng,
    slots: [Option<ConnId>; SLOTS],
    received: BTreeMap<ConnId, Vec<u8>>,
    closed: BTreeSet<ConnId>,
}

impl Driver {
    fn new(chunking: Chunking, seed: u64) -> Driver {
        let mut driver = Driver {
            // The model is one waiting slot; fall-throughs have their own tests in server.rs.
            server: Server::new(
                ServerConfig {
                    introduction_deadline: Duration::ZERO,
                    ..ServerConfig::default()
                },
                [0; 32],
            ),
            start: Instant::now(),
            now: 0,
            chunking,
            rng: Rng::new(seed),
            slots: [None; SLOTS],
            received: BTreeMap::new(),
            closed: BTreeSet::new(),
        };
        driver.drain();
        driver
    }

    fn instant(&self) -> Instant {
        self.start + Duration::from_secs(self.now)
    }

    fn drain(&mut self) {
        let mut wire = Wire {
            now: self.instant(),
            slots: &mut self.slots,
            received: &mut self.received,
            closed: &mut self.closed,
            outcomes: Outcomes::default(),
        };
        drive(&mut self.server, &mut wire);
    }

    /// Carries out `op`; returns the id of a connection it opened.
    fn apply(&mut self, op: &Op) -> Option<ConnId> {
        if let Some((slot, bytes)) = op.bytes() {
            let conn = self.slots[slot]?;
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let n = match self.chunking {
                    Chunking::Whole => rest.len(),
                    Chunking::OneByte => 1,
                    Chunking::Random => 1 + self.rng.below(rest.len()),
                };
                let now = self.instant();
                self.server.handle_data(now, conn, &rest[..n]);
                self.drain();
                rest = &rest[n..];
            }
            return None;
        }
        match *op {
            Op::Open(slot) if self.slots[slot].is_none() => {
                let peer = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 40_000);
                let now = self.instant();
                let conn = self.server.handle_accept(now, peer);
                self.drain();
                self.slots[slot] = Some(conn);
                Some(conn)
            }
            Op::Close(slot) => {
                let conn = self.slots[slot].take()?;
                let now = self.instant();
                self.server.handle_closed(now, conn);
                self.drain();
                None
            }
            Op::Advance(secs) => {
                let end = self.now + secs;
                // Visit each deadline in turn, as a transport sleeping on poll_timeout would.
                while let Some(deadline) = self.server.poll_timeout() {
                    let at = deadline
                        .saturating_duration_since(self.start)
                        .as_secs_f64()
                        .ceil() as u64;
                    if at > end {
                        break;
                    }
                    self.now = self.now.max(at);
                    let now = self.instant();
                    self.server.handle_timeout(now);
                    self.drain();
                }
                self.now = end;
                None
            }
            _ => None,
        }
    }
}

/// What the server's outputs do to the test's record of the wire.
struct Wire<'a> {
    now: Instant,
    slots: &'a mut [Option<ConnId>; SLOTS],
    received: &'a mut BTreeMap<ConnId, Vec<u8>>,
    closed: &'a mut BTreeSet<ConnId>,
    /// Stays empty: the listener is never reported, as before a transport binds it.
    outcomes: Outcomes,
}

impl Transport<ServerEvent> for Wire<'_> {
    fn now(&mut self) -> Instant {
        self.now
    }

    fn listen(&mut self, _addr: SocketAddr, _shared: bool) {}

    fn connect(&mut self, conn: ConnId, addr: SocketAddr, _from: Option<u16>) {
        panic!("unexpected connect of {conn} to {addr}");
    }

    fn transmit(&mut self, conn: ConnId, bytes: &[u8]) {
        assert!(!self.closed.contains(&conn), "{conn} written after close");
        self.received
            .entry(conn)
            .or_default()
            .extend_from_slice(bytes);
    }

    fn close(&mut self, conn: ConnId) {
        assert!(self.closed.insert(conn), "{conn} closed twice");
        for slot in self.slots.iter_mut() {
            if *slot == Some(conn) {
                *slot = None;
            }
        }
    }

    fn abort(&mut self, conn: ConnId) {
        self.close(conn);
    }

    fn show(&mut self, _event: ServerEvent) {}

    fn exit(&mut self, result: Result<(), bridgechat_core::ExitError>) {
        panic!("unexpected exit: {result:?}");
    }

    fn outcomes(&mut self) -> &mut Outcomes {
        &mut self.outcomes
    }
}

/// Runs `ops` under one chunking, checking the server against the model after every op.
/// Returns what each connection received and which ones the server closed.
fn run(ops: &[Op], chunking: Chunking, seed: u64) -> (BTreeMap<ConnId, Vec<u8>>, BTreeSet<ConnId>) {
    let mut driver = Driver::new(chunking, seed);
    let mut model = Model::default();
    for (step, op) in ops.iter().enumerate() {
        let waiting_before = driver.server.waiting();
        let asker = match op {
            Op::Bridge { slot, .. } | Op::FinishHead(slot) => driver.slots[*slot],
            _ => None,
        };
        let asker_contact = asker.and_then(|c| driver.server.registration(c));
        let before = asker.map_or(0, |c| driver.received.get(&c).map_or(0, Vec::len));

        let opened = driver.apply(op);
        model.apply(op, opened);
        let at = || format!("step {step} ({op:?}) under {chunking:?}");

        // Each waiting client is handed out at most once, and never to itself.
        if let Some(asker) = asker {
            let new = &driver.received.get(&asker).map_or(&[][..], |v| v)[before..];
            for answer in responses(new) {
                if let Some(handed) = answer.contact {
                    assert_ne!(Some(handed), asker_contact, "{}: handed itself", at());
                    assert_eq!(
                        Some(handed),
                        waiting_before,
                        "{}: handed a non-waiter",
                        at()
                    );
                    assert_eq!(driver.server.waiting(), None, "{}: still waiting", at());
                }
            }
        }

        // Only a registered live connection waits; names are unique among live ones.
        let live: Vec<ConnId> = driver.slots.iter().flatten().copied().collect();
        let registrations: Vec<Contact> = live
            .iter()
            .filter_map(|&c| driver.server.registration(c))
            .collect();
        let names: BTreeSet<String> = registrations
            .iter()
            .map(|c| c.name.as_str().to_ascii_lowercase())
            .collect();
        assert_eq!(
            names.len(),
            registrations.len(),
            "{}: a name is held twice",
            at()
        );
        if let Some(waiter) = driver.server.waiting() {
            assert!(
                registrations.contains(&waiter),
                "{}: {waiter} waits unregistered",
                at()
            );
        }

        // The server agrees with the model, on the wire and in its state.
        assert_eq!(driver.closed, model.closed, "{}: closed connections", at());
        for (conn, expected) in &model.expected {
            let got = driver.received.get(conn).map_or(&[][..], |v| v);
            assert_eq!(
                String::from_utf8_lossy(got),
                String::from_utf8_lossy(expected),
                "{}: bytes received on {conn}",
                at()
            );
        }
        assert_eq!(
            driver.server.waiting(),
            model.registry.waiting(),
            "{}: waiting client",
            at()
        );
        for slot in 0..SLOTS {
            let model_conn = model.slots[slot].as_ref();
            assert_eq!(
                driver.slots[slot],
                model_conn.map(|c| c.id),
                "{}: slot {slot}",
                at()
            );
            if let Some(c) = model_conn {
                assert_eq!(
                    driver.server.registration(c.id),
                    model.registry.registration(slot),
                    "{}: slot {slot}",
                    at()
                );
            }
        }
        let stats = driver.server.stats();
        assert_eq!(stats.connections, live.len(), "{}", at());
        assert_eq!(stats.registered, model.registry.len(), "{}", at());
    }
    (driver.received, driver.closed)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn server_matches_the_model_under_every_chunking(
        ops in prop::collection::vec(op(), 1..80),
        seed in any::<u64>(),
    ) {
        let whole = run(&ops, Chunking::Whole, seed);
        let one_byte = run(&ops, Chunking::OneByte, seed);
        let random = run(&ops, Chunking::Random, seed);
        prop_assert_eq!(&whole, &one_byte, "outputs depend on the split (one byte)");
        prop_assert_eq!(&whole, &random, "outputs depend on the split (random)");
    }
}

/// A fixed sequence that walks every kind of op once, so the model's own logic is exercised
/// even if proptest's generator drifts.
#[test]
fn a_scripted_sequence_matches_the_model() {
    use Op::*;
    let ops = vec![
        Open(0),
        Open(1),
        Open(2),
        Register {
            slot: 0,
            name: 0,
            port: 1,
        },
        Register {
            slot: 1,
            name: 0,
            port: 2,
        },
        Register {
            slot: 1,
            name: 1,
            port: 2,
        },
        Bridge {
            slot: 2,
            claim: None,
        },
        Bridge {
            slot: 0,
            claim: Some(1),
        },
        Bridge {
            slot: 0,
            claim: Some(0),
        },
        Bridge {
            slot: 0,
            claim: None,
        },
        Bridge {
            slot: 1,
            claim: None,
        },
        Bridge {
            slot: 1,
            claim: None,
        },
        PartialHead(0),
        Advance(5),
        FinishHead(0),
        FinishHead(0),
        UnknownMethod(0),
        PartialHead(1),
        Register {
            slot: 1,
            name: 2,
            port: 3,
        },
        Open(3),
        Garbage(3, GarbageKind::HeadTooLarge),
        Open(3),
        Garbage(3, GarbageKind::Binary(vec![1, 2, 3])),
        Open(4),
        Garbage(4, GarbageKind::TransferEncoding),
        Open(5),
        Garbage(5, GarbageKind::BadContentLength),
        Open(6),
        PartialHead(6),
        Advance(HEAD_TIMEOUT),
        Unregister(0),
        Close(0),
        Advance(REGISTER_TIMEOUT),
    ];
    let whole = run(&ops, Chunking::Whole, 7);
    assert_eq!(whole, run(&ops, Chunking::OneByte, 7));
    assert_eq!(whole, run(&ops, Chunking::Random, 7));
    assert!(
        whole.1.len() >= 6,
        "the sequence closes connections: {:?}",
        whole.1
    );
}

// ---------------------------------------------------------------------------
// Version 2: the server target's model (named waits, MATCHED/UNMATCHED, STARTED,
// fall-through, tickets) checked over generated sessions of v1 and v2 clients.

/// One operation of the server target, as its op bytes: `slot << 4 | code`, then an
/// argument for the codes that read one.
fn v2_op() -> impl Strategy<Value = Vec<u8>> {
    let slot = 0..4u8;
    let code = prop_oneof![
        2 => Just(0u8), // open
        2 => Just(2),   // REGISTER (v1)
        4 => Just(3),   // REGISTER with Bridgechat: 2
        3 => Just(4),   // BRIDGE
        3 => Just(5),   // BRIDGE with Peer
        1 => Just(6),   // UNREGISTER
        1 => Just(7),   // close
        2 => Just(13),  // STARTED
    ];
    (slot, code, 0..8u8).prop_map(|(slot, code, arg)| {
        let op = slot << 4 | code;
        if matches!(code, 6 | 7) {
            vec![op]
        } else {
            vec![op, arg]
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Invariants checked by the target at every step: a waiter is handed to at most one
    /// peer at a time, a named waiter only to the name it gave, a v2 waiter whose match
    /// fell through waits again (first in its place) and is told so, every notification
    /// is owed and arrives, both peers get one ticket, and no ticket is issued twice.
    #[test]
    fn v2_sessions_follow_the_model(ops in proptest::collection::vec(v2_op(), 0..120)) {
        let bytes: Vec<u8> = ops.concat();
        bridgechat_core::fuzzing::server(&bytes, Instant::now());
    }
}
