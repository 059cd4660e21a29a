//! Scenario tests for the client's side of protocol version 2: notifications
//! (MATCHED, UNMATCHED), tickets at the waiter and the asker, `/bridge NAME`,
//! and falling back to version 1 against a v1 server or with a v1 peer. Real
//! servers and clients wired together in memory; raw peers pose as a stranger
//! or a v1 server.

mod support;

use std::time::Duration;

use bridgechat_core::client::{ClientConfig, ClientEvent, ClientInput, Mode, Unprotected};
use bridgechat_core::codec::{Noise, Ticket};
use bridgechat_core::secure;
use support::wire;
use support::*;

const CHUNKINGS: [(Chunking, u64); 4] = [
    (Chunking::Whole, 1),
    (Chunking::OneByte, 1),
    (Chunking::Random, 2),
    (Chunking::Random, 3),
];

fn send_lines(net: &mut Net, node: NodeId, lines: &[&str]) {
    for line in lines {
        net.line(node, line);
    }
    net.run();
}

fn modes(net: &Net, node: NodeId) -> Vec<Mode> {
    net.client_events(node)
        .iter()
        .filter_map(|e| match e {
            ClientEvent::ModeChanged { mode, .. } => Some(*mode),
            _ => None,
        })
        .collect()
}

fn errors(net: &Net, node: NodeId) -> Vec<String> {
    net.client_events(node)
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Error(error) => Some(error.to_string()),
            _ => None,
        })
        .collect()
}

/// The names a waiter was told it is matched with, in order.
fn matched(net: &Net, node: NodeId) -> Vec<(String, u8)> {
    net.client_events(node)
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Matched {
                peer, peer_version, ..
            } => Some((peer.to_string(), *peer_version)),
            _ => None,
        })
        .collect()
}

/// The peers whose match fell through, in order.
fn unmatched(net: &Net, node: NodeId) -> Vec<String> {
    net.client_events(node)
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Unmatched { peer, .. } => Some(peer.to_string()),
            _ => None,
        })
        .collect()
}

fn not_protected(net: &Net, node: NodeId) -> Vec<Unprotected> {
    net.client_events(node)
        .iter()
        .filter_map(|e| match e {
            ClientEvent::NotProtected { why, .. } => Some(*why),
            _ => None,
        })
        .collect()
}

fn received(net: &Net, node: NodeId) -> Vec<String> {
    net.client_events(node)
        .iter()
        .filter_map(|e| match e {
            ClientEvent::MessageReceived { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

/// Where a client's chat listener can be reached.
fn chat_addr(net: &Net, node: NodeId) -> std::net::SocketAddr {
    let port = net
        .client_events(node)
        .iter()
        .find_map(|e| match e {
            ClientEvent::Listening(addr) => Some(addr.port()),
            _ => None,
        })
        .expect("the client reported its listener");
    net.addr_of(node, port)
}

/// `writer` sends `text`, `reader` shows it.
fn one_turn(net: &mut Net, writer: NodeId, reader: NodeId, text: &str) {
    send_lines(net, writer, &[text]);
    assert_eq!(received(net, reader).last().map(String::as_str), Some(text));
}

fn v1_client(net: &mut Net, who: &str, server: NodeId) -> NodeId {
    let addr = net.addr_of(server, 7070);
    let mut config = ClientConfig::new(name(who), addr);
    config.version2 = false;
    net.add_client(config)
}

/// A peer's CHAT: version 1's, or with a ticket (hex) version 2's, which
/// carries the first handshake message under it (never the ticket itself).
fn chat_request(name: &str, ip: &str, port: u16, ticket: Option<&str>) -> String {
    let v2 = ticket.map_or_else(String::new, |t| {
        let ticket = Ticket::parse(t.as_bytes()).expect("a ticket in hex");
        let (_, first) = secure::Initiator::new(&ticket.to_bytes(), [5; secure::SEED_LEN]);
        let mut hex = Vec::new();
        Noise(first.try_into().unwrap()).write_hex(&mut hex);
        format!(
            "Bridgechat: 2\r\nNoise: {}\r\n",
            String::from_utf8(hex).unwrap()
        )
    });
    format!("CHAT / HTTP/1.1\r\nName: {name}\r\nIP: {ip}\r\nPort: {port}\r\n{v2}\r\n")
}

#[test]
fn a_stranded_waiter_is_told_waits_again_and_chats_with_the_next_peer() {
    for (chunking, seed) in CHUNKINGS {
        let mut net = Net::new(seed, chunking);
        let server = net.add_default_server();
        let alice = net.add_named_client("alice", server);
        let bob = net.add_named_client("bob", server);
        send_lines(&mut net, alice, &["/register", "/bridge"]);
        assert_eq!(net.mode(alice), Mode::Wait);
        assert!(net
            .client_events(alice)
            .iter()
            .any(|e| matches!(e, ClientEvent::ServerVersion2 { observed: Some(_) })));

        send_lines(&mut net, bob, &["/register", "/bridge"]);
        assert_eq!(net.mode(bob), Mode::Ready);
        assert_eq!(matched(&net, alice), [("bob".to_owned(), 2)]);
        assert_eq!(net.mode(alice), Mode::Wait);

        // Bob leaves before /chat: alice hears it at once and waits again.
        net.client_input(bob, ClientInput::Line("/quit".into()));
        net.run();
        assert_eq!(unmatched(&net, alice), ["bob"]);
        assert_eq!(net.mode(alice), Mode::Wait);
        assert_eq!(modes(&net, alice), [Mode::Registered, Mode::Wait]);

        // The next bob is handed alice (she is waiting again) and chats with her.
        let bob2 = net.add_named_client("bob", server);
        send_lines(&mut net, bob2, &["/register", "/bridge"]);
        assert_eq!(net.mode(bob2), Mode::Ready, "{chunking:?} {seed}");
        assert_eq!(matched(&net, alice).len(), 2);
        send_lines(&mut net, bob2, &["/chat"]);
        assert_eq!(net.mode(bob2), Mode::Write);
        assert_eq!(net.mode(alice), Mode::Read);
        one_turn(&mut net, bob2, alice, "hi alice, the other bob left");
        one_turn(&mut net, alice, bob2, "hi bob");
        assert!(not_protected(&net, alice).is_empty());
        assert!(not_protected(&net, bob2).is_empty());
        assert_eq!(errors(&net, alice), Vec::<String>::new());
    }
}

#[test]
fn a_match_that_times_out_puts_the_waiter_back_and_the_ticket_dies() {
    let mut net = Net::new(7, Chunking::Whole);
    let server = net.add_default_server();
    let alice = net.add_named_client("alice", server);
    let bob = net.add_named_client("bob", server);
    send_lines(&mut net, alice, &["/register", "/bridge"]);
    send_lines(&mut net, bob, &["/register", "/bridge"]);
    assert_eq!(matched(&net, alice).len(), 1);
    // Bob sits in READY MODE past the server's deadline.
    net.advance(Duration::from_secs(11));
    assert_eq!(unmatched(&net, alice), ["bob"]);
    assert_eq!(net.mode(alice), Mode::Wait);
    // His CHAT with the dead ticket is refused; alice keeps waiting.
    send_lines(&mut net, bob, &["/chat"]);
    net.run();
    assert_eq!(net.mode(alice), Mode::Wait);
    let refused = errors(&net, bob);
    assert!(
        refused
            .iter()
            .any(|e| e.contains("403") && e.contains("wrong ticket")),
        "{refused:?}"
    );
}

#[test]
fn a_strangers_chat_gets_403_and_the_real_peer_still_gets_in() {
    for (chunking, seed) in CHUNKINGS {
        let mut net = Net::new(seed, chunking);
        let server = net.add_default_server();
        let alice = net.add_named_client("alice", server);
        let bob = net.add_named_client("bob", server);
        send_lines(&mut net, alice, &["/register", "/bridge"]);
        send_lines(&mut net, bob, &["/register", "/bridge"]);
        assert_eq!(matched(&net, alice).len(), 1);

        // Mallory found alice's port: a v1 CHAT in bob's name, then a made-up ticket.
        let mallory = net.add_raw();
        let to = chat_addr(&net, alice);
        for ticket in [None, Some("00112233445566778899aabbccddeeff")] {
            let conn = net.connect_raw(mallory, to).expect("alice listens");
            let chat = chat_request("bob", "127.0.0.9", 9009, ticket);
            net.send_raw(mallory, conn, chat.as_bytes());
            net.run();
            let answer = net.raw_text(mallory, conn);
            assert!(
                answer.starts_with("HTTP/1.1 403 Forbidden\r\n")
                    && answer.ends_with("wrong ticket"),
                "{answer}"
            );
            assert!(net.raw_is_closed(mallory, conn));
            assert_eq!(net.mode(alice), Mode::Wait);
        }

        send_lines(&mut net, bob, &["/chat"]);
        assert_eq!(net.mode(bob), Mode::Write, "{chunking:?} {seed}");
        assert_eq!(net.mode(alice), Mode::Read);
        one_turn(&mut net, bob, alice, "it's really me");
    }
}

#[test]
fn a_chat_before_any_match_is_parked_then_refused() {
    let mut net = Net::new(3, Chunking::Whole);
    let server = net.add_default_server();
    let alice = net.add_named_client("alice", server);
    send_lines(&mut net, alice, &["/register", "/bridge"]);
    let mallory = net.add_raw();
    let conn = net
        .connect_raw(mallory, chat_addr(&net, alice))
        .expect("alice listens");
    net.send_raw(
        mallory,
        conn,
        chat_request("bob", "127.0.0.9", 9009, None).as_bytes(),
    );
    net.run();
    assert_eq!(
        net.raw_text(mallory, conn),
        "",
        "decided before any MATCHED"
    );
    net.advance(Duration::from_secs(11));
    let answer = net.raw_text(mallory, conn);
    assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");
    assert!(net.raw_is_closed(mallory, conn));
    assert_eq!(net.mode(alice), Mode::Wait);
}

#[test]
fn a_chat_that_beats_matched_is_let_in_when_matched_comes() {
    for seed in 1..=20 {
        let mut net = Net::new(seed, Chunking::Random);
        let server = net.add_default_server();
        let alice = net.add_named_client("alice", server);
        let bob = net.add_named_client("bob", server);
        send_lines(&mut net, alice, &["/register", "/bridge"]);
        send_lines(&mut net, bob, &["/register"]);
        // Bob bridges and chats at once, whatever reaches alice first.
        net.line(bob, "/bridge");
        net.line(bob, "/chat");
        net.run();
        assert_eq!(net.mode(bob), Mode::Write, "seed {seed}");
        assert_eq!(net.mode(alice), Mode::Read, "seed {seed}");
    }
}

#[test]
fn named_waits_meet_and_a_third_bridge_takes_neither() {
    for (chunking, seed) in CHUNKINGS {
        let mut net = Net::new(seed, chunking);
        let server = net.add_default_server();
        let alice = net.add_named_client("alice", server);
        let bob = net.add_named_client("bob", server);
        let carol = net.add_named_client("carol", server);
        send_lines(&mut net, alice, &["/register", "/bridge bob"]);
        assert_eq!(net.mode(alice), Mode::Wait);
        assert_eq!(net.client(alice).peer(), Some(name("bob")));
        assert!(net.client_events(alice).iter().any(|e| matches!(
            e,
            ClientEvent::ModeChanged { mode: Mode::Wait, peer: Some(p) } if *p == name("bob")
        )));

        // Carol asks for anyone: alice waits for bob only, so carol waits too.
        send_lines(&mut net, carol, &["/register", "/bridge"]);
        assert_eq!(net.mode(carol), Mode::Wait);
        assert!(matched(&net, alice).is_empty());

        // Bob asks for alice (in another case): they meet.
        send_lines(&mut net, bob, &["/register", "/bridge ALICE"]);
        assert_eq!(net.mode(bob), Mode::Ready);
        assert_eq!(net.client(bob).peer(), Some(name("alice")));
        assert_eq!(matched(&net, alice), [("bob".to_owned(), 2)]);
        assert!(matched(&net, carol).is_empty());
        send_lines(&mut net, bob, &["/chat"]);
        assert_eq!(net.mode(alice), Mode::Read);
        one_turn(&mut net, bob, alice, "you asked for me");
        assert_eq!(net.mode(carol), Mode::Wait);
    }
}

#[test]
fn bridge_with_a_bad_name_is_refused_here() {
    let mut net = Net::new(1, Chunking::Whole);
    let server = net.add_default_server();
    let alice = net.add_named_client("alice", server);
    send_lines(&mut net, alice, &["/register", "/bridge b@d"]);
    assert_eq!(net.mode(alice), Mode::Registered);
    let errors = errors(&net, alice);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("/bridge NAME needs a valid name"),
        "{errors:?}"
    );
}

/// A raw v1 server on 7070 and a v2 client registered with it.
fn v1_server_and_alice() -> (Net, NodeId, bridgechat_core::ConnId, NodeId) {
    let mut net = Net::new(5, Chunking::Whole);
    let (fake, addr) = net.add_raw_listener(7070);
    let alice = net.add_client(ClientConfig::new(name("alice"), addr));
    let conn = net.raw(fake).accepted[0];
    send_lines(&mut net, alice, &["/register"]);
    let ip = net.nodes[alice.0].ip.to_string();
    let port = chat_addr(&net, alice).port();
    // The client asks for version 2; a v1 server ignores the header.
    assert_eq!(
        net.raw_text(fake, conn),
        wire::client_register("alice", &ip, port)
    );
    net.send_raw(fake, conn, wire::ok_contact("alice", &ip, port).as_bytes());
    net.run();
    assert_eq!(net.mode(alice), Mode::Registered);
    (net, fake, conn, alice)
}

#[test]
fn against_a_v1_server_the_client_speaks_v1_and_says_chats_are_not_protected() {
    let (mut net, fake, conn, alice) = v1_server_and_alice();
    let sent_before = net.raw_text(fake, conn).len();
    send_lines(&mut net, alice, &["/bridge bob"]);
    assert_eq!(net.raw_text(fake, conn).len(), sent_before, "nothing sent");
    let errors = errors(&net, alice);
    assert!(
        errors[0].contains("not supported by this server"),
        "{errors:?}"
    );
    assert_eq!(net.mode(alice), Mode::Registered);

    send_lines(&mut net, alice, &["/bridge"]);
    assert!(net.raw_text(fake, conn).ends_with(&wire::bridge()));
    net.send_raw(fake, conn, wire::ok().as_bytes());
    net.run();
    assert_eq!(net.mode(alice), Mode::Wait);

    // Any CHAT gets in, as in version 1, and the chat says it is not encrypted.
    let bob = net.add_raw();
    let chat = net
        .connect_raw(bob, chat_addr(&net, alice))
        .expect("alice listens");
    net.send_raw(
        bob,
        chat,
        chat_request("bob", "127.0.0.9", 9009, None).as_bytes(),
    );
    net.run();
    assert!(net.raw_text(bob, chat).starts_with("HTTP/1.1 200 OK\r\n"));
    assert_eq!(net.mode(alice), Mode::Read);
    assert_eq!(not_protected(&net, alice), [Unprotected::ServerVersion1]);
    // No STARTED: the v1 server would not know it.
    assert!(!net.raw_text(fake, conn).contains("STARTED"));
}

#[test]
fn a_v1_client_against_a_v1_server_is_unchanged() {
    let mut net = Net::new(5, Chunking::Whole);
    let (fake, addr) = net.add_raw_listener(7070);
    let mut config = ClientConfig::new(name("alice"), addr);
    config.version2 = false;
    let alice = net.add_client(config);
    let conn = net.raw(fake).accepted[0];
    send_lines(&mut net, alice, &["/register"]);
    let ip = net.nodes[alice.0].ip.to_string();
    let port = chat_addr(&net, alice).port();
    assert_eq!(net.raw_text(fake, conn), wire::register("alice", &ip, port));
    net.send_raw(fake, conn, wire::ok_contact("alice", &ip, port).as_bytes());
    send_lines(&mut net, alice, &["/bridge"]);
    net.send_raw(fake, conn, wire::ok().as_bytes());
    net.run();
    let bob = net.add_raw();
    let chat = net
        .connect_raw(bob, chat_addr(&net, alice))
        .expect("alice listens");
    net.send_raw(
        bob,
        chat,
        chat_request("bob", "127.0.0.9", 9009, None).as_bytes(),
    );
    net.run();
    assert_eq!(net.mode(alice), Mode::Read);
    assert!(not_protected(&net, alice).is_empty());
}

#[test]
fn a_v1_peer_is_let_in_by_name_and_the_chat_is_not_protected() {
    for (chunking, seed) in CHUNKINGS {
        let mut net = Net::new(seed, chunking);
        let server = net.add_default_server();
        let alice = net.add_named_client("alice", server);
        let bob = v1_client(&mut net, "bob", server);
        send_lines(&mut net, alice, &["/register", "/bridge"]);
        send_lines(&mut net, bob, &["/register", "/bridge"]);
        assert_eq!(net.mode(bob), Mode::Ready);
        assert_eq!(matched(&net, alice), [("bob".to_owned(), 1)]);

        // Someone else's v1 CHAT is refused: the server introduced bob.
        let mallory = net.add_raw();
        let conn = net
            .connect_raw(mallory, chat_addr(&net, alice))
            .expect("alice listens");
        net.send_raw(
            mallory,
            conn,
            chat_request("mallory", "127.0.0.9", 9009, None).as_bytes(),
        );
        net.run();
        assert!(net
            .raw_text(mallory, conn)
            .starts_with("HTTP/1.1 403 Forbidden\r\n"));

        send_lines(&mut net, bob, &["/chat"]);
        assert_eq!(net.mode(alice), Mode::Read, "{chunking:?} {seed}");
        assert_eq!(not_protected(&net, alice), [Unprotected::PeerVersion1]);
        // Bob speaks version 1: nothing new for him.
        assert!(not_protected(&net, bob).is_empty());
        one_turn(&mut net, bob, alice, "hello from version 1");
    }
}

#[test]
fn a_v2_asker_of_a_v1_waiter_sends_a_v1_chat_and_says_not_protected() {
    let mut net = Net::new(9, Chunking::Whole);
    let server = net.add_default_server();
    let carol = v1_client(&mut net, "carol", server);
    let dave = net.add_named_client("dave", server);
    send_lines(&mut net, carol, &["/register", "/bridge"]);
    send_lines(&mut net, dave, &["/register", "/bridge", "/chat"]);
    assert_eq!(net.mode(dave), Mode::Write);
    assert_eq!(net.mode(carol), Mode::Read);
    assert_eq!(not_protected(&net, dave), [Unprotected::PeerVersion1]);
    assert!(not_protected(&net, carol).is_empty());
}

/// A raw server that speaks version 2 by hand, and alice registered with it.
fn v2_script_and_alice() -> (Net, NodeId, bridgechat_core::ConnId, NodeId) {
    let mut net = Net::new(5, Chunking::OneByte);
    let (fake, addr) = net.add_raw_listener(7070);
    let alice = net.add_client(ClientConfig::new(name("alice"), addr));
    let conn = net.raw(fake).accepted[0];
    send_lines(&mut net, alice, &["/register"]);
    let ip = net.nodes[alice.0].ip.to_string();
    let port = chat_addr(&net, alice).port();
    let answer = format!(
        "HTTP/1.1 200 OK\r\nName: alice\r\nIP: {ip}\r\nPort: {port}\r\nBridgechat: 2\r\nObserved-IP: 203.0.113.9\r\nObserved-Port: 40404\r\nContent-Length: 0\r\n\r\n"
    );
    net.send_raw(fake, conn, answer.as_bytes());
    net.run();
    assert_eq!(net.mode(alice), Mode::Registered);
    assert!(net.client_events(alice).iter().any(|e| matches!(
        e,
        ClientEvent::ServerVersion2 { observed: Some(a) } if a.to_string() == "203.0.113.9:40404"
    )));
    (net, fake, conn, alice)
}

const TICKET: &str = "5f0c30313233343536373839abcdef00";

fn matched_wire(peer: &str, ticket: &str) -> String {
    format!(
        "MATCHED / HTTP/1.1\r\nName: {peer}\r\nIP: 127.0.0.9\r\nPort: 9009\r\nPeer-Version: 2\r\nObserved-IP: 203.0.113.7\r\nObserved-Port: 51234\r\nTicket: {ticket}\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn a_notification_while_a_request_is_in_flight_is_not_its_answer() {
    let (mut net, fake, conn, alice) = v2_script_and_alice();
    send_lines(&mut net, alice, &["/bridge"]);
    net.send_raw(fake, conn, wire::ok().as_bytes());
    net.send_raw(fake, conn, matched_wire("bob", TICKET).as_bytes());
    net.run();
    assert_eq!(net.mode(alice), Mode::Wait);
    assert_eq!(matched(&net, alice), [("bob".to_owned(), 2)]);

    // Alice bridges again; the match falls through before the answer comes.
    send_lines(&mut net, alice, &["/bridge"]);
    let unmatched_wire = format!(
        "UNMATCHED / HTTP/1.1\r\nName: bob\r\nTicket: {TICKET}\r\nReason: bob left the server\r\nContent-Length: 0\r\n\r\n"
    );
    net.send_raw(fake, conn, unmatched_wire.as_bytes());
    net.run();
    assert_eq!(unmatched(&net, alice), ["bob"]);
    assert_eq!(net.mode(alice), Mode::Wait);
    let shown = net.client_events(alice).iter().find_map(|e| match e {
        ClientEvent::Unmatched { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert_eq!(shown.as_deref(), Some("bob left the server"));

    // The answer that does come is BRIDGE's: carol waits for us.
    net.send_raw(
        fake,
        conn,
        wire::ok_contact("carol", "127.0.0.8", 9008).as_bytes(),
    );
    net.run();
    assert_eq!(net.mode(alice), Mode::Ready);
    assert_eq!(net.client(alice).peer(), Some(name("carol")));
    assert_eq!(errors(&net, alice), Vec::<String>::new());
}

#[test]
fn the_waiter_reports_started_and_skips_its_answer() {
    let (mut net, fake, conn, alice) = v2_script_and_alice();
    send_lines(&mut net, alice, &["/bridge"]);
    net.send_raw(fake, conn, wire::ok().as_bytes());
    net.send_raw(fake, conn, matched_wire("bob", TICKET).as_bytes());
    net.run();
    let bob = net.add_raw();
    let chat = net
        .connect_raw(bob, chat_addr(&net, alice))
        .expect("alice listens");
    net.send_raw(
        bob,
        chat,
        chat_request("bob", "127.0.0.9", 9009, Some(TICKET)).as_bytes(),
    );
    net.run();
    assert!(net.raw_text(bob, chat).starts_with("HTTP/1.1 200 OK\r\n"));
    assert_eq!(net.mode(alice), Mode::Read);
    let to_server = net.raw_text(fake, conn);
    assert!(
        to_server.ends_with(&format!(
            "STARTED / HTTP/1.1\r\nTicket: {TICKET}\r\nContent-Length: 0\r\n\r\n"
        )),
        "{to_server}"
    );
    // The server's 200 to STARTED is nobody's answer to show.
    net.send_raw(fake, conn, wire::ok().as_bytes());
    net.run();
    assert_eq!(errors(&net, alice), Vec::<String>::new());
    assert_eq!(net.mode(alice), Mode::Read);
    // The used ticket is dead: a second CHAT with it is not let in.
    let again = net
        .connect_raw(bob, chat_addr(&net, alice))
        .expect("alice listens");
    net.send_raw(
        bob,
        again,
        chat_request("bob", "127.0.0.9", 9009, Some(TICKET)).as_bytes(),
    );
    net.run();
    assert!(!net.raw_text(bob, again).starts_with("HTTP/1.1 200"));
}
