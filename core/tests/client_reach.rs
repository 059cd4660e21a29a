//! Reaching the peer (protocol version 2), in memory: the declared contact,
//! hole punching from the chat port, and the server's relay, with the path
//! each side shows. The in-memory net drops connects to chosen addresses, as a
//! home router drops unsolicited packets; the relay is played by a scripted
//! server that answers as the protocol says.

mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bridgechat_core::client::{ClientConfig, ClientEvent, Mode, Path, PUNCH_RETRY};
use bridgechat_core::codec::{self, Introduction, Request, Status, Ticket, Version};
use bridgechat_core::{ConnId, Contact, Decoder};
use support::*;

const CHUNKINGS: [(Chunking, u64); 4] = [
    (Chunking::Whole, 1),
    (Chunking::OneByte, 1),
    (Chunking::Random, 2),
    (Chunking::Random, 3),
];

/// An address nobody routes: connects to it hang.
const NOWHERE: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 99, 0, 1));

fn send_lines(net: &mut Net, node: NodeId, lines: &[&str]) {
    for line in lines {
        net.line(node, line);
    }
    net.run();
}

/// The line the person reads when the chat opens.
fn path_line(net: &Net, node: NodeId) -> String {
    net.client_events(node)
        .iter()
        .find_map(|e| match e {
            ClientEvent::Path { peer, path } => Some(format!("connected to {peer}{path}")),
            _ => None,
        })
        .expect("a path line")
}

fn one_turn(net: &mut Net, writer: NodeId, reader: NodeId, text: &str) {
    send_lines(net, writer, &[text]);
    assert_eq!(
        net.received_by(reader).last().map(String::as_str),
        Some(text)
    );
}

/// Alice waits, bob asks: both through the real server.
fn introduce(net: &mut Net, alice: NodeId, bob: NodeId) {
    send_lines(net, alice, &["/register", "/bridge"]);
    send_lines(net, bob, &["/register", "/bridge"]);
    assert_eq!(net.mode(bob), Mode::Ready);
    assert_eq!(net.mode(alice), Mode::Wait);
}

fn chat_both_ways_and_quit(net: &mut Net, alice: NodeId, bob: NodeId) {
    one_turn(net, bob, alice, "hi alice");
    one_turn(net, alice, bob, "hi bob");
    send_lines(net, bob, &["/quit"]);
    assert_eq!(net.mode(alice), Mode::Registered);
}

#[test]
fn a_reachable_declared_contact_is_the_direct_path() {
    for (chunking, seed) in CHUNKINGS {
        let mut net = Net::new(seed, chunking);
        let server = net.add_default_server();
        let alice = net.add_named_client("alice", server);
        let bob = net.add_named_client("bob", server);
        // Bob's router drops what nobody asked for: alice's punch never arrives.
        let bob_chat = net.chat_addr(bob);
        net.drop_connects_to(bob_chat);
        introduce(&mut net, alice, bob);
        // The server connections start from the chat ports.
        let alice_chat = net.chat_addr(alice);
        assert!(net.connects.contains(&(
            alice,
            net.addr_of(server, 7070),
            Some(alice_chat.port())
        )));
        // Bob's plain connect is up before /chat; alice punches towards bob.
        assert!(net.connects.contains(&(bob, alice_chat, None)));
        assert!(net
            .connects
            .contains(&(alice, bob_chat, Some(alice_chat.port()))));

        send_lines(&mut net, bob, &["/chat"]);
        assert_eq!(net.mode(bob), Mode::Write, "{chunking:?} {seed}");
        assert_eq!(net.mode(alice), Mode::Read);
        assert_eq!(net.paths_of(bob), [Path::Direct]);
        assert_eq!(net.paths_of(alice), [Path::Direct]);
        assert_eq!(path_line(&net, bob), "connected to alice directly");
        // Alice's hanging punch was closed when the chat opened: the server
        // connection and the chat, nothing else.
        assert_eq!(net.open_conns(alice), 2);
        assert_eq!(net.open_conns(bob), 2);
        chat_both_ways_and_quit(&mut net, alice, bob);
        assert_eq!(net.errors_of(alice), Vec::<String>::new());
    }
}

#[test]
fn an_unreachable_declared_contact_is_reached_by_hole_punching_on_both_sides() {
    for (chunking, seed) in CHUNKINGS {
        let mut net = Net::new(seed, chunking);
        let server = net.add_default_server();
        // Alice registers an address nobody can reach (her LAN address, say);
        // the server sees her chat port on the address that works.
        let config = ClientConfig {
            advertise_ip: Some(NOWHERE),
            ..ClientConfig::new(name("alice"), net.addr_of(server, 7070))
        };
        let alice = net.add_client(config);
        // So does bob: both sit behind routers, so a connection between their
        // chat ports is a hole punched through both.
        let config = ClientConfig {
            advertise_ip: Some(NOWHERE),
            ..ClientConfig::new(name("bob"), net.addr_of(server, 7070))
        };
        let bob = net.add_client(config);
        net.drop_connects_to_ip(NOWHERE);
        introduce(&mut net, alice, bob);
        send_lines(&mut net, bob, &["/chat"]);
        assert_eq!(net.mode(bob), Mode::Write, "{chunking:?} {seed}");
        assert_eq!(net.mode(alice), Mode::Read);
        assert_eq!(net.paths_of(bob), [Path::HolePunched]);
        assert_eq!(net.paths_of(alice), [Path::HolePunched]);
        assert_eq!(
            path_line(&net, alice),
            "connected to bob directly (hole punched)"
        );
        // Bob's plain connect to the dead address was closed as a loser.
        net.run();
        assert_eq!(net.open_conns(bob), 2, "{chunking:?} {seed}");
        assert_eq!(net.open_conns(alice), 2);
        chat_both_ways_and_quit(&mut net, alice, bob);
    }
}

#[test]
fn a_punch_to_a_peer_that_no_router_hides_is_shown_as_plain_direct() {
    for (chunking, seed) in CHUNKINGS {
        let mut net = Net::new(seed, chunking);
        let server = net.add_default_server();
        // Only alice sits behind a router: her declared address is dead, bob's works.
        let config = ClientConfig {
            advertise_ip: Some(NOWHERE),
            ..ClientConfig::new(name("alice"), net.addr_of(server, 7070))
        };
        let alice = net.add_client(config);
        let bob = net.add_named_client("bob", server);
        net.drop_connects_to_ip(NOWHERE);
        introduce(&mut net, alice, bob);
        send_lines(&mut net, bob, &["/chat"]);
        assert_eq!(net.mode(bob), Mode::Write, "{chunking:?} {seed}");
        // The connection left alice's chat port, but no hole was needed in
        // bob's network: both say direct, and neither says punched.
        assert_eq!(net.paths_of(bob), [Path::Direct]);
        assert_eq!(net.paths_of(alice), [Path::Direct]);
        chat_both_ways_and_quit(&mut net, alice, bob);
    }
}

#[test]
fn chat_typed_before_any_path_waits_for_it_and_held_lines_follow() {
    for seed in 1..=10 {
        chat_typed_before_a_path(seed);
    }
}

fn chat_typed_before_a_path(seed: u64) {
    let mut net = Net::new(seed, Chunking::Random);
    let server = net.add_default_server();
    let alice = net.add_named_client("alice", server);
    let bob = net.add_named_client("bob", server);
    send_lines(&mut net, alice, &["/register", "/bridge"]);
    send_lines(&mut net, bob, &["/register"]);
    // Everything typed at once: the pairing, /chat and a first message.
    net.line(bob, "/bridge");
    net.line(bob, "/chat");
    net.line(bob, "typed early");
    net.run();
    assert_eq!(net.mode(alice), Mode::Write);
    assert_eq!(net.received_by(alice), ["typed early"]);
    assert_eq!(net.paths_of(bob).len(), 1);
    // Nothing dropped here: bob's connect and alice's punch both got through;
    // the loser was closed on both sides.
    let bob_chat = net.chat_addr(bob);
    assert!(net
        .connects
        .contains(&(alice, bob_chat, Some(net.chat_addr(alice).port()))));
    assert_eq!(net.open_conns(bob), 2);
    assert_eq!(net.open_conns(alice), 2);
}

#[test]
fn a_stranger_from_the_askers_observed_address_still_needs_the_ticket() {
    let mut net = Net::new(9, Chunking::Whole);
    let server = net.add_default_server();
    let alice = net.add_named_client("alice", server);
    let bob = net.add_named_client("bob", server);
    introduce(&mut net, alice, bob);
    // Mallory comes from the very address the server saw bob at.
    let mallory = net.add_raw();
    let bob_observed = net.chat_addr(bob);
    let conn = net
        .connect_raw_from(mallory, bob_observed, net.chat_addr(alice))
        .expect("alice listens");
    let chat = "CHAT / HTTP/1.1\r\nName: bob\r\nIP: 127.0.0.3\r\nPort: 9\r\n\r\n";
    net.send_raw(mallory, conn, chat.as_bytes());
    net.run();
    let answer = net.raw_text(mallory, conn);
    assert!(
        answer.starts_with("HTTP/1.1 403 Forbidden\r\n") && answer.ends_with("wrong ticket"),
        "{answer}"
    );
    assert_eq!(net.mode(alice), Mode::Wait);
    send_lines(&mut net, bob, &["/chat"]);
    assert_eq!(net.mode(bob), Mode::Write);
    one_turn(&mut net, bob, alice, "it is me");
}

#[test]
fn a_v1_peer_is_reached_at_its_declared_contact_at_chat_and_the_line_says_direct() {
    let mut net = Net::new(4, Chunking::Whole);
    let server = net.add_default_server();
    let config = ClientConfig {
        version2: false,
        ..ClientConfig::new(name("alice"), net.addr_of(server, 7070))
    };
    let alice = net.add_client(config);
    let bob = net.add_named_client("bob", server);
    introduce(&mut net, alice, bob);
    let alice_chat = net.chat_addr(alice);
    // No ticket: nothing is tried before /chat, as in version 1.
    assert!(!net
        .connects
        .iter()
        .any(|(who, to, _)| *who == bob && *to == alice_chat));
    send_lines(&mut net, bob, &["/chat"]);
    assert_eq!(net.connects.last(), Some(&(bob, alice_chat, None)));
    assert_eq!(net.paths_of(bob), [Path::Direct]);
    assert_eq!(net.paths_of(alice), [Path::Direct]);
    chat_both_ways_and_quit(&mut net, alice, bob);
}

// ---------------------------------------------------------------------------
// A scripted server: registrations, the introduction and the relay, by hand.

const TICKET: [u8; 16] = [0x5a; 16];

/// The scripted server and the two clients it serves.
struct Scripted {
    net: Net,
    server: NodeId,
    alice: NodeId,
    bob: NodeId,
    /// Bytes of each server connection already read.
    read: BTreeMap<ConnId, usize>,
}

impl Scripted {
    /// Alice waits; bob is introduced to her. Nothing of the chat ports can be
    /// reached from outside: direct paths all hang.
    fn introduced(seed: u64, chunking: Chunking) -> Scripted {
        let mut net = Net::new(seed, chunking);
        let (server, server_addr) = net.add_raw_listener(7070);
        let config = |who: &str| ClientConfig {
            advertise_ip: Some(NOWHERE),
            ..ClientConfig::new(name(who), server_addr)
        };
        let alice = net.add_client(config("alice"));
        let bob = net.add_client(config("bob"));
        net.drop_connects_to_ip(NOWHERE);
        let mut s = Scripted {
            net,
            server,
            alice,
            bob,
            read: BTreeMap::new(),
        };
        s.net.drop_connects_to(s.net.chat_addr(alice));
        s.net.drop_connects_to(s.net.chat_addr(bob));
        let (a, b) = (s.conn(0), s.conn(1));
        for (node, conn) in [(alice, a), (bob, b)] {
            send_lines(&mut s.net, node, &["/register"]);
            let Some(Request::Register(contact, _)) = s.requests(conn).pop() else {
                panic!("REGISTER expected");
            };
            let observed = s.observed(conn);
            s.answer(conn, |out| {
                codec::write_registered_v2(out, &contact, observed)
            });
        }
        send_lines(&mut s.net, alice, &["/bridge"]);
        s.requests(a);
        s.answer(a, |out| codec::write_ok(out, None));
        send_lines(&mut s.net, bob, &["/bridge"]);
        s.requests(b);
        let intro = |contact: Contact, observed| Introduction {
            peer: contact,
            peer_version: Version::V2,
            observed,
            ticket: Some(Ticket::from_bytes(TICKET)),
        };
        let alice_intro = intro(s.contact("alice", alice), s.observed(a));
        let bob_intro = intro(s.contact("bob", bob), s.observed(b));
        s.answer(b, |out| codec::write_paired(out, &alice_intro));
        s.answer(a, |out| codec::write_matched(out, &bob_intro));
        assert_eq!(s.net.mode(bob), Mode::Ready);
        s
    }

    /// The `i`th connection the server accepted.
    fn conn(&self, i: usize) -> ConnId {
        self.net.raw(self.server).accepted[i]
    }

    fn contact(&self, who: &str, node: NodeId) -> Contact {
        Contact::new(name(who), NOWHERE, self.net.chat_addr(node).port()).unwrap()
    }

    /// Where the server sees `conn` come from.
    fn observed(&self, conn: ConnId) -> SocketAddr {
        self.net.conn_addrs(self.server, conn).expect("open").1
    }

    /// Requests that arrived on `conn` since the last look.
    fn requests(&mut self, conn: ConnId) -> Vec<Request> {
        let bytes = self
            .net
            .raw(self.server)
            .received
            .get(&conn)
            .cloned()
            .unwrap_or_default();
        let from = self.read.insert(conn, bytes.len()).unwrap_or(0);
        let mut decoder = Decoder::default();
        let mut input = &bytes[from..];
        let mut out = Vec::new();
        while let Ok(Some(request)) = decoder.decode_request(&mut input) {
            out.push(request);
        }
        out
    }

    fn answer(&mut self, conn: ConnId, write: impl FnOnce(&mut Vec<u8>)) {
        let mut out = Vec::new();
        write(&mut out);
        self.net.send_raw(self.server, conn, &out);
        self.net.run();
    }

    /// Copies what arrived on each of the pair to the other, until quiet: the relay.
    fn splice(&mut self, pair: [ConnId; 2]) {
        self.net.run();
        loop {
            let mut moved = false;
            for (from, to) in [(pair[0], pair[1]), (pair[1], pair[0])] {
                let bytes = self
                    .net
                    .raw(self.server)
                    .received
                    .get(&from)
                    .cloned()
                    .unwrap_or_default();
                let done = self.read.insert(from, bytes.len()).unwrap_or(0);
                if bytes.len() > done {
                    self.net.send_raw(self.server, to, &bytes[done..]);
                    moved = true;
                }
            }
            if !moved {
                return;
            }
            self.net.run();
        }
    }

    /// After `relay_after`, bob's RELAY on a new connection, with the ticket.
    fn bobs_relay(&mut self) -> ConnId {
        let before = self.net.raw(self.server).accepted.len();
        self.net.advance(Duration::from_secs(3));
        assert_eq!(
            self.net.raw(self.server).accepted.len(),
            before + 1,
            "bob joins the relay"
        );
        let conn = self.conn(before);
        assert_eq!(
            self.requests(conn),
            [Request::Relay(Ticket::from_bytes(TICKET))]
        );
        conn
    }
}

#[test]
fn with_no_direct_path_the_chat_goes_through_the_relay_on_both_sides() {
    for (chunking, seed) in CHUNKINGS {
        let mut s = Scripted::introduced(seed, chunking);
        let (alice, bob) = (s.alice, s.bob);
        // /chat before any path: a request in flight.
        send_lines(&mut s.net, bob, &["/chat", "held until the chat opens"]);
        assert_eq!(s.net.mode(bob), Mode::Ready);
        let bob_relay = s.bobs_relay();
        // The direct attempts were closed when bob went to the relay.
        assert_eq!(s.net.open_conns(bob), 2);
        // The server tells alice; she joins with the same ticket.
        let a = s.conn(0);
        s.answer(a, |out| {
            codec::write_relay(out, &Ticket::from_bytes(TICKET))
        });
        let alice_relay = s.conn(3);
        assert_eq!(
            s.requests(alice_relay),
            [Request::Relay(Ticket::from_bytes(TICKET))]
        );
        // Her punch stopped when she went to the relay.
        assert_eq!(s.net.open_conns(alice), 2);
        for conn in [bob_relay, alice_relay] {
            s.answer(conn, |out| codec::write_ok(out, None));
        }
        s.splice([bob_relay, alice_relay]);
        assert_eq!(s.net.mode(bob), Mode::Read, "{chunking:?} {seed}");
        assert_eq!(s.net.mode(alice), Mode::Write);
        assert_eq!(s.net.received_by(alice), ["held until the chat opens"]);
        assert_eq!(s.net.paths_of(bob), [Path::Relayed]);
        assert_eq!(s.net.paths_of(alice), [Path::Relayed]);
        assert_eq!(
            path_line(&s.net, bob),
            "connected to alice, relayed through the server (no direct path could be made)"
        );
        // The chat runs over the relay, encrypted as any v2 chat.
        assert!(s
            .net
            .client_events(bob)
            .iter()
            .any(|e| matches!(e, ClientEvent::Encrypted { .. })));
        s.net.line(alice, "over the relay");
        s.splice([bob_relay, alice_relay]);
        assert_eq!(s.net.received_by(bob), ["over the relay"]);
        assert_eq!(s.net.errors_of(bob), Vec::<String>::new());
        assert_eq!(s.net.errors_of(alice), Vec::<String>::new());
    }
}

#[test]
fn a_relay_refused_fails_the_chat_with_a_clear_error_and_back_to_registered() {
    for chat_first in [true, false] {
        let mut s = Scripted::introduced(1, Chunking::Whole);
        let bob = s.bob;
        if chat_first {
            send_lines(&mut s.net, bob, &["/chat"]);
        }
        let relay = s.bobs_relay();
        s.answer(relay, |out| {
            codec::write_error(
                out,
                Status::SERVICE_UNAVAILABLE,
                &"this server does not relay",
                codec::AfterError::Close,
            )
        });
        s.net.close_raw(s.server, relay);
        s.net.run();
        if !chat_first {
            assert_eq!(s.net.mode(bob), Mode::Ready);
            send_lines(&mut s.net, bob, &["/chat"]);
        }
        assert_eq!(s.net.mode(bob), Mode::Registered);
        assert_eq!(
            s.net.errors_of(bob),
            [
                "could not reach alice: no direct path, and the server's relay answered \
              503 Service Unavailable: this server does not relay"
            ]
        );
        // Nothing left open but the server connection.
        assert_eq!(s.net.open_conns(bob), 1);
        assert!(s.net.paths_of(bob).is_empty());
    }
}

#[test]
fn punches_that_fail_fast_go_again_and_stop_when_the_match_ends() {
    let mut s = Scripted::introduced(2, Chunking::Whole);
    let alice = s.alice;
    // The server matches alice again, with a peer whose address refuses at once.
    let refusing: SocketAddr = "127.0.0.99:4444".parse().unwrap();
    let ticket = Ticket::from_bytes([0x6b; 16]);
    let intro = Introduction {
        peer: Contact::new(name("carol"), NOWHERE, 4444).unwrap(),
        peer_version: Version::V2,
        observed: refusing,
        ticket: Some(ticket),
    };
    let a = s.conn(0);
    s.answer(a, |out| codec::write_matched(out, &intro));
    // The punch towards bob, hanging, was closed with his match.
    assert_eq!(s.net.open_conns(alice), 1);
    let punches = |net: &Net| {
        net.connects
            .iter()
            .filter(|(who, to, _)| *who == alice && *to == refusing)
            .count()
    };
    assert_eq!(punches(&s.net), 1);
    s.net.advance(PUNCH_RETRY * 4);
    assert_eq!(punches(&s.net), 5, "again every {PUNCH_RETRY:?}");
    s.answer(a, |out| {
        codec::write_unmatched(out, &name("carol"), Some(&ticket), &"carol left")
    });
    s.net.advance(Duration::from_secs(5));
    assert_eq!(punches(&s.net), 5, "no punch after UNMATCHED");
    assert_eq!(s.net.mode(alice), Mode::Wait);
    assert_eq!(s.net.open_conns(alice), 1);
}

#[test]
fn the_waiter_ignores_a_relay_offer_for_another_match_and_says_when_its_relay_fails() {
    let mut s = Scripted::introduced(6, Chunking::Whole);
    let alice = s.alice;
    let a = s.conn(0);
    let joined = |s: &Scripted| s.net.raw(s.server).accepted.len();
    let before = joined(&s);
    s.answer(a, |out| {
        codec::write_relay(out, &Ticket::from_bytes([1; 16]))
    });
    assert_eq!(
        joined(&s),
        before,
        "no relay for a ticket that is not the match's"
    );
    assert!(s.net.client_events(alice).iter().any(
        |e| matches!(e, ClientEvent::Info(text) if text.contains("relay") && text.contains("ignored"))
    ));
    s.answer(a, |out| {
        codec::write_relay(out, &Ticket::from_bytes(TICKET))
    });
    assert_eq!(joined(&s), before + 1);
    let relay = s.conn(before);
    s.requests(relay);
    s.answer(relay, |out| {
        codec::write_error(
            out,
            Status(504),
            &"peer did not come to the relay",
            codec::AfterError::Close,
        )
    });
    // The status's phrase is the codec's; the reason is the server's.
    let errors = s.net.errors_of(alice);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with(
            "could not join bob at the server's relay: the server's relay answered 504"
        ) && errors[0].ends_with(": peer did not come to the relay"),
        "{errors:?}"
    );
    assert_eq!(s.net.mode(alice), Mode::Wait);
    assert_eq!(s.net.open_conns(alice), 1);
}

#[test]
fn a_path_lost_before_chat_is_sought_again_at_chat() {
    let mut net = Net::new(8, Chunking::Whole);
    let server = net.add_default_server();
    let alice = net.add_named_client("alice", server);
    let bob = net.add_named_client("bob", server);
    introduce(&mut net, alice, bob);
    // Bob's path (his connection to alice's chat port) breaks before /chat.
    let alice_chat = net.chat_addr(alice);
    let path = net
        .links_of(bob)
        .into_iter()
        .find(|(conn, _)| {
            net.conn_addrs(bob, *conn)
                .is_some_and(|(_, to)| to == alice_chat)
        })
        .map(|(conn, _)| conn)
        .expect("bob's path to alice");
    net.reset(bob, path);
    net.run();
    assert_eq!(net.mode(bob), Mode::Ready);
    send_lines(&mut net, bob, &["/chat"]);
    assert_eq!(net.mode(bob), Mode::Write);
    assert_eq!(net.mode(alice), Mode::Read);
    one_turn(&mut net, bob, alice, "second try");
}
