//! Scenario tests for the chat client (contract sections 4-6): real servers and
//! clients wired together in memory, raw peers posing as a server or a peer where
//! a test needs to misbehave. Most scenarios run under several chunkings.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bridgechat_core::client::{
    Client, ClientConfig, ClientEvent, ClientInput, Mode, RECONNECT_ATTEMPTS,
};
use bridgechat_core::server::{ServerConfig, ServerInput};
use bridgechat_core::{ConnId, Direction, Endpoint, Output};
use support::wire;
use support::*;

const CHUNKINGS: [(Chunking, u64); 5] = [
    (Chunking::Whole, 1),
    (Chunking::OneByte, 1),
    (Chunking::Random, 1),
    (Chunking::Random, 2),
    (Chunking::Random, 3),
];

fn chat_request(name: &str, ip: &str, port: u16) -> String {
    format!("CHAT / HTTP/1.1\r\nName: {name}\r\nIP: {ip}\r\nPort: {port}\r\n\r\n")
}

fn message(text: &str) -> String {
    format!(
        "MESSAGE / HTTP/1.1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{text}",
        text.len()
    )
}

/// The raw `peer` asks the server for a peer as a v1 client named `who` would,
/// so the server introduces it to the client waiting there: only then does a
/// (version 2) waiter let its CHAT in. Returns the raw server connection.
fn introduce(net: &mut Net, server: NodeId, peer: NodeId, who: &str) -> ConnId {
    let to_server = net.addr_of(server, 7070);
    let conn = net
        .connect_raw(peer, to_server)
        .expect("the server listens");
    let ask = format!("{}{}", wire::register(who, "127.0.0.9", 9), wire::bridge());
    net.send_raw(peer, conn, ask.as_bytes());
    net.run();
    conn
}

const QUIT: &str = "QUIT / HTTP/1.1\r\nContent-Length: 0\r\n\r\n";

/// The modes a client announced, in order.
fn modes(net: &Net, node: NodeId) -> Vec<Mode> {
    net.client_events(node)
        .iter()
        .filter_map(|e| match e {
            ClientEvent::ModeChanged { mode, .. } => Some(*mode),
            _ => None,
        })
        .collect()
}

/// The texts a client printed as received.
fn received(net: &Net, node: NodeId) -> Vec<String> {
    net.client_events(node)
        .iter()
        .filter_map(|e| match e {
            ClientEvent::MessageReceived { text, .. } => Some(text.clone()),
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

fn infos(net: &Net, node: NodeId) -> Vec<String> {
    net.client_events(node)
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Info(text) => Some(text.clone()),
            _ => None,
        })
        .collect()
}

/// Where a client's chat listener can be reached (its node IP, the bound port).
fn chat_addr(net: &Net, node: NodeId) -> SocketAddr {
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

/// A client's open connection to `other`.
fn conn_to(net: &Net, node: NodeId, other: NodeId) -> ConnId {
    net.links_of(node)
        .into_iter()
        .find(|(_, (peer, _))| *peer == other)
        .map(|(conn, _)| conn)
        .expect("a connection between the two nodes")
}

fn send_lines(net: &mut Net, node: NodeId, lines: &[&str]) {
    for line in lines {
        net.line(node, line);
    }
    net.run();
}

/// A server and two registered clients; alice waits, bob is READY with alice as his peer.
struct Pair {
    net: Net,
    server: NodeId,
    alice: NodeId,
    bob: NodeId,
}

impl Pair {
    fn ready(chunking: Chunking, seed: u64) -> Pair {
        let mut net = Net::new(seed, chunking);
        let server = net.add_default_server();
        let alice = net.add_named_client("alice", server);
        let bob = net.add_named_client("bob", server);
        send_lines(&mut net, alice, &["/register", "/bridge"]);
        send_lines(&mut net, bob, &["/register", "/bridge"]);
        assert_eq!(net.mode(alice), Mode::Wait);
        assert_eq!(net.mode(bob), Mode::Ready);
        Pair {
            net,
            server,
            alice,
            bob,
        }
    }

    /// Bob starts the chat: bob writes, alice reads.
    fn chatting(chunking: Chunking, seed: u64) -> Pair {
        let mut pair = Pair::ready(chunking, seed);
        send_lines(&mut pair.net, pair.bob, &["/chat"]);
        assert_eq!(pair.net.mode(pair.bob), Mode::Write);
        assert_eq!(pair.net.mode(pair.alice), Mode::Read);
        pair
    }
}

#[test]
fn register_bridge_chat_twenty_turns_and_quit() {
    for (chunking, seed) in CHUNKINGS {
        let Pair {
            mut net,
            server,
            alice,
            bob,
        } = Pair::chatting(chunking, seed);
        assert_eq!(
            modes(&net, alice),
            [Mode::Registered, Mode::Wait, Mode::Read],
            "{chunking:?}"
        );
        assert_eq!(
            modes(&net, bob),
            [Mode::Registered, Mode::Ready, Mode::Write]
        );
        assert_eq!(net.client(alice).peer(), Some(name("bob")));
        assert_eq!(net.client(bob).peer(), Some(name("alice")));
        assert!(!net.server(server).stats().waiting);

        let mut sent_by_bob = Vec::new();
        let mut sent_by_alice = Vec::new();
        for turn in 0..20 {
            let (writer, reader, log) = if turn % 2 == 0 {
                (bob, alice, &mut sent_by_bob)
            } else {
                (alice, bob, &mut sent_by_alice)
            };
            let text = format!("turn {turn}: héllo ✓");
            net.line(writer, &text);
            assert_eq!(net.mode(writer), Mode::Read, "sending ends the turn");
            net.run();
            assert_eq!(net.mode(reader), Mode::Write, "receiving starts the turn");
            log.push(text);
        }
        assert_eq!(received(&net, alice), sent_by_bob);
        assert_eq!(received(&net, bob), sent_by_alice);
        assert!(net.client_events(alice).iter().any(|e| matches!(
            e,
            ClientEvent::MessageReceived { from, .. } if *from == name("bob")
        )));

        // Bob wrote last, so alice writes now; bob quits anyway.
        send_lines(&mut net, bob, &["/quit"]);
        assert_eq!(net.nodes[bob.0].exited, Some(Ok(())));
        assert!(net
            .client_events(alice)
            .contains(&ClientEvent::PeerLeft { peer: name("bob") }));
        assert_eq!(net.mode(alice), Mode::Registered);
        assert_eq!(
            net.server(server).stats().registered,
            1,
            "bob's name is freed"
        );
        assert!(errors(&net, alice).is_empty(), "{:?}", errors(&net, alice));
    }
}

#[test]
fn a_message_typed_out_of_turn_is_held_and_sent_when_the_turn_comes() {
    for (chunking, seed) in CHUNKINGS {
        let Pair {
            mut net,
            alice,
            bob,
            ..
        } = Pair::ready(chunking, seed);
        // READY MODE: not bob's turn yet.
        net.line(bob, "first");
        net.line(bob, "second");
        assert!(net
            .client_events(bob)
            .contains(&ClientEvent::MessageHeld { pending: 2 }));
        // WAIT MODE: alice holds hers too.
        net.line(alice, "from alice");
        net.run();
        assert!(received(&net, alice).is_empty());

        // Entering WRITE MODE sends the oldest held message at once.
        // Alice's turn comes with "first": her held message goes out at once, so bob's turn
        // comes again and his second held message answers it.
        send_lines(&mut net, bob, &["/chat"]);
        assert_eq!(received(&net, bob), ["from alice"], "{chunking:?}");
        assert_eq!(received(&net, alice), ["first", "second"]);
        assert_eq!(net.mode(alice), Mode::Write);
        assert_eq!(net.mode(bob), Mode::Read);
        assert_eq!(net.client(bob).held_messages(), 0);

        // READ MODE: bob's next message waits for alice's.
        net.line(bob, "third");
        net.run();
        assert_eq!(received(&net, alice), ["first", "second"]);
        send_lines(&mut net, alice, &["reply"]);
        assert_eq!(received(&net, alice), ["first", "second", "third"]);
    }
}

#[test]
fn a_message_out_of_turn_closes_the_chat_and_is_reported() {
    for (chunking, seed) in CHUNKINGS {
        let mut net = Net::new(seed, chunking);
        let server = net.add_default_server();
        let alice = net.add_named_client("alice", server);
        send_lines(&mut net, alice, &["/register", "/bridge"]);
        let peer = net.add_raw();
        introduce(&mut net, server, peer, "mallory");
        let to_alice = chat_addr(&net, alice);
        let conn = net.connect_raw(peer, to_alice).expect("alice listens");
        net.send_raw(
            peer,
            conn,
            chat_request("mallory", "127.0.0.9", 9).as_bytes(),
        );
        net.run();
        let alice_ip = net.nodes[alice.0].ip.to_string();
        assert_eq!(
            net.raw_text(peer, conn),
            wire::ok_contact("alice", &alice_ip, to_alice.port())
        );
        assert_eq!(net.mode(alice), Mode::Read);
        // One message is the peer's turn; a second one right after is not.
        net.send_raw(peer, conn, message("one").as_bytes());
        net.send_raw(peer, conn, message("two").as_bytes());
        net.run();
        assert_eq!(received(&net, alice), ["one"], "{chunking:?}");
        assert!(net.client_events(alice).iter().any(|e| matches!(
            e,
            ClientEvent::PeerLost { peer, reason } if *peer == name("mallory") && reason.to_string().contains("out of turn")
        )));
        assert!(net.raw_is_closed(peer, conn));
        assert_eq!(net.mode(alice), Mode::Registered);
        assert_eq!(
            modes(&net, alice),
            [
                Mode::Registered,
                Mode::Wait,
                Mode::Read,
                Mode::Write,
                Mode::Registered
            ]
        );
    }
}

#[test]
fn quit_from_the_reader_while_the_writer_is_typing_ends_the_chat_on_both_sides() {
    for (chunking, seed) in CHUNKINGS {
        let Pair {
            mut net,
            alice,
            bob,
            ..
        } = Pair::chatting(chunking, seed);
        // Alice (reading) quits while bob's message is still on the wire.
        net.line(bob, "are you still th");
        net.line(alice, "/quit");
        net.run();
        assert_eq!(net.nodes[alice.0].exited, Some(Ok(())));
        assert!(net.client_events(bob).contains(&ClientEvent::PeerLeft {
            peer: name("alice")
        }));
        assert_eq!(net.mode(bob), Mode::Registered, "{chunking:?}");
        // Bob's next line finds no chat.
        send_lines(&mut net, bob, &["anyone?"]);
        assert_eq!(
            errors(&net, bob),
            ["not in a chat: type /bridge to find a peer"]
        );
    }
}

#[test]
fn a_message_that_arrives_with_the_rest_of_a_split_chat_is_not_left_behind() {
    let mut net = Net::new(1, Chunking::Whole);
    let server = net.add_default_server();
    let alice = net.add_named_client("alice", server);
    send_lines(&mut net, alice, &["/register", "/bridge"]);
    let peer = net.add_raw();
    introduce(&mut net, server, peer, "bob");
    let conn = net.connect_raw(peer, chat_addr(&net, alice)).unwrap();
    let chat = chat_request("bob", "127.0.0.9", 9);
    let (head, tail) = chat.split_at(20);
    net.send_raw(peer, conn, head.as_bytes());
    net.run();
    net.send_raw(
        peer,
        conn,
        format!("{tail}{}", message("right behind")).as_bytes(),
    );
    net.run();
    assert_eq!(received(&net, alice), ["right behind"]);
    assert_eq!(net.mode(alice), Mode::Write);
}

#[test]
fn quit_sends_quit_on_the_wire_before_closing() {
    let mut net = Net::new(1, Chunking::Whole);
    let server = net.add_default_server();
    let alice = net.add_named_client("alice", server);
    send_lines(&mut net, alice, &["/register", "/bridge"]);
    let peer = net.add_raw();
    introduce(&mut net, server, peer, "bob");
    let conn = net.connect_raw(peer, chat_addr(&net, alice)).unwrap();
    net.send_raw(peer, conn, chat_request("bob", "127.0.0.9", 9).as_bytes());
    net.run();
    let answered = net.raw_text(peer, conn).len();
    send_lines(&mut net, alice, &["/quit"]);
    assert_eq!(&net.raw_text(peer, conn)[answered..], QUIT);
    assert!(net.raw_is_closed(peer, conn));
}

#[test]
fn a_chat_connection_lost_without_quit_is_reported_and_both_return_to_registered() {
    for (chunking, seed) in CHUNKINGS {
        let Pair {
            mut net,
            alice,
            bob,
            ..
        } = Pair::chatting(chunking, seed);
        let chat = conn_to(&net, bob, alice);
        net.reset(bob, chat);
        net.run();
        for (node, peer) in [(alice, "bob"), (bob, "alice")] {
            assert!(
                net.client_events(node).iter().any(|e| matches!(
                    e,
                    ClientEvent::PeerLost { peer: p, reason } if *p == name(peer) && reason.to_string().contains("without QUIT")
                )),
                "{chunking:?}: {:?}",
                net.client_events(node)
            );
            assert_eq!(net.mode(node), Mode::Registered);
        }
    }
}

#[test]
fn chat_to_a_client_that_is_not_waiting_gets_409_and_is_closed() {
    for (chunking, seed) in CHUNKINGS {
        let mut net = Net::new(seed, chunking);
        let server = net.add_default_server();
        let alice = net.add_named_client("alice", server);
        send_lines(&mut net, alice, &["/register"]);
        let peer = net.add_raw();
        let conn = net.connect_raw(peer, chat_addr(&net, alice)).unwrap();
        net.send_raw(peer, conn, chat_request("bob", "127.0.0.9", 9).as_bytes());
        net.run();
        assert_eq!(
            net.raw_text(peer, conn),
            wire::error_closing("409 Conflict", "not waiting for a peer"),
            "{chunking:?}"
        );
        assert!(net.raw_is_closed(peer, conn));
        assert_eq!(net.mode(alice), Mode::Registered);
    }
}

#[test]
fn silent_connections_at_the_chat_port_cannot_lock_out_the_real_peer() {
    let mut net = Net::new(11, Chunking::Random);
    let server = net.add_default_server();
    let alice = net.add_named_client("alice", server);
    send_lines(&mut net, alice, &["/register", "/bridge"]);
    assert_eq!(net.mode(alice), Mode::Wait);
    // Strangers fill every undecided slot and more, and say nothing.
    let stranger = net.add_raw();
    let silent: Vec<ConnId> = (0..bridgechat_core::client::MAX_INCOMING + 3)
        .map(|_| net.connect_raw(stranger, chat_addr(&net, alice)).unwrap())
        .collect();
    net.run();
    let peer = net.add_raw();
    introduce(&mut net, server, peer, "bob");
    let conn = net.connect_raw(peer, chat_addr(&net, alice)).unwrap();
    net.send_raw(peer, conn, chat_request("bob", "127.0.0.9", 9).as_bytes());
    net.run();
    assert!(
        net.raw_text(peer, conn).starts_with("HTTP/1.1 200 OK\r\n"),
        "the real peer was refused: {:?}",
        net.raw_text(peer, conn)
    );
    assert_eq!(net.mode(alice), Mode::Read);
    // The oldest strangers made room; the newest still hold theirs until their timeout.
    assert!(net.raw_is_closed(stranger, silent[0]));
    assert!(!net.raw_is_closed(stranger, *silent.last().unwrap()));
}

#[test]
fn a_second_chat_while_chatting_gets_409_and_the_chat_goes_on() {
    let Pair {
        mut net,
        alice,
        bob,
        ..
    } = Pair::chatting(Chunking::Random, 7);
    let intruder = net.add_raw();
    let conn = net.connect_raw(intruder, chat_addr(&net, alice)).unwrap();
    net.send_raw(
        intruder,
        conn,
        chat_request("eve", "127.0.0.9", 9).as_bytes(),
    );
    net.run();
    assert_eq!(
        net.raw_text(intruder, conn),
        wire::error_closing("409 Conflict", "already in a chat")
    );
    send_lines(&mut net, bob, &["still here"]);
    assert_eq!(received(&net, alice), ["still here"]);
}

#[test]
fn malformed_bytes_on_an_incoming_connection_get_400_and_close() {
    let mut net = Net::new(1, Chunking::Whole);
    let server = net.add_default_server();
    let alice = net.add_named_client("alice", server);
    send_lines(&mut net, alice, &["/register", "/bridge"]);
    let peer = net.add_raw();
    let conn = net.connect_raw(peer, chat_addr(&net, alice)).unwrap();
    net.send_raw(peer, conn, b"\x00\x01 not http\r\n\r\n");
    net.run();
    assert!(net
        .raw_text(peer, conn)
        .starts_with("HTTP/1.1 400 Bad Request\r\n"));
    assert!(net.raw_is_closed(peer, conn));
    assert_eq!(net.mode(alice), Mode::Wait, "still waiting for a real peer");
}

#[test]
fn server_answering_409_name_taken_is_an_error_and_not_fatal() {
    for (chunking, seed) in CHUNKINGS {
        let mut net = Net::new(seed, chunking);
        let server = net.add_default_server();
        let first = net.add_named_client("alice", server);
        let second = net.add_named_client("alice", server);
        send_lines(&mut net, first, &["/register"]);
        send_lines(&mut net, second, &["/register"]);
        assert_eq!(
            errors(&net, second),
            ["the name alice is taken — choose another with /name NEWNAME"],
            "{chunking:?}"
        );
        assert_eq!(net.mode(second), Mode::Unregistered);
        assert_eq!(net.nodes[second.0].exited, None);
    }
}

/// The announced names, in order.
fn renames(net: &Net, node: NodeId) -> Vec<String> {
    net.client_events(node)
        .iter()
        .filter_map(|e| match e {
            ClientEvent::NameChanged(name) => Some(name.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_taken_name_then_slash_name_registers_under_the_new_one() {
    for (chunking, seed) in CHUNKINGS {
        let mut net = Net::new(seed, chunking);
        let server = net.add_default_server();
        let first = net.add_named_client("alice", server);
        let second = net.add_named_client("alice", server);
        send_lines(&mut net, first, &["/register"]);
        send_lines(&mut net, second, &["/register", "/name alice2"]);
        assert_eq!(net.mode(second), Mode::Registered, "{chunking:?}");
        assert_eq!(net.client(second).name(), name("alice2"));
        assert_eq!(renames(&net, second), ["alice2"]);
        assert_eq!(modes(&net, second), [Mode::Registered]);
        assert_eq!(net.server(server).stats().registered, 2);

        // A peer meets it under the new name.
        send_lines(&mut net, second, &["/bridge"]);
        send_lines(&mut net, first, &["/bridge", "/chat"]);
        assert_eq!(net.client(first).peer(), Some(name("alice2")));
        assert_eq!(net.client(second).peer(), Some(name("alice")));
    }
}

#[test]
fn slash_name_while_registered_replaces_the_registration_or_keeps_it_if_taken() {
    let mut net = Net::new(5, Chunking::Random);
    let server = net.add_default_server();
    let alice = net.add_named_client("alice", server);
    let bob = net.add_named_client("bob", server);
    send_lines(&mut net, bob, &["/register"]);
    send_lines(&mut net, alice, &["/register", "/name bob"]);
    assert_eq!(
        errors(&net, alice),
        ["the name bob is taken — choose another with /name NEWNAME"]
    );
    assert_eq!(net.client(alice).name(), name("alice"), "still alice");
    assert_eq!(net.mode(alice), Mode::Registered);

    send_lines(&mut net, alice, &["/name carol"]);
    assert_eq!(net.client(alice).name(), name("carol"));
    assert_eq!(renames(&net, alice), ["carol"]);
    assert_eq!(net.mode(alice), Mode::Registered);
    assert_eq!(
        net.server(server).stats().registered,
        2,
        "replaced, not added"
    );
    // `alice` is free again.
    let other = net.add_named_client("alice", server);
    send_lines(&mut net, other, &["/register"]);
    assert_eq!(net.mode(other), Mode::Registered);
}

#[test]
fn slash_name_is_refused_during_a_chat_and_checks_the_name() {
    let Pair {
        mut net,
        server,
        alice,
        bob,
    } = Pair::chatting(Chunking::Random, 7);
    send_lines(&mut net, bob, &["/name zed"]);
    send_lines(&mut net, alice, &["/name zed"]);
    let refusal =
        "your name cannot change in WAIT MODE, READY MODE or a chat: a peer may know you by it";
    assert_eq!(errors(&net, bob), [refusal]);
    assert_eq!(errors(&net, alice), [refusal]);
    assert_eq!(net.mode(bob), Mode::Write, "the chat goes on");
    send_lines(&mut net, bob, &["still bob"]);
    assert_eq!(received(&net, alice), ["still bob"]);
    assert_eq!(net.client(bob).name(), name("bob"));

    let carol = net.add_named_client("carol", server);
    send_lines(&mut net, carol, &["/name bad name!", "/name", "/name  "]);
    assert_eq!(
        errors(&net, carol),
        [
            "\"bad name!\" cannot be a name: only A-Z a-z 0-9 _ - . are allowed",
            "usage: /name NEWNAME",
            "usage: /name NEWNAME"
        ]
    );
    assert_eq!(net.mode(carol), Mode::Unregistered);
    // Only a word of its own is the command.
    send_lines(&mut net, carol, &["/register", "/bridge", "/names are fun"]);
    assert_eq!(net.mode(carol), Mode::Wait);
    assert_eq!(net.client(carol).held_messages(), 1);
}

#[test]
fn a_message_input_is_text_even_when_it_reads_as_a_command() {
    let Pair {
        mut net,
        alice,
        bob,
        ..
    } = Pair::chatting(Chunking::Random, 9);
    net.client_input(bob, ClientInput::Message("/quit".into()));
    net.run();
    assert_eq!(received(&net, alice), ["/quit"]);
    assert_eq!(net.nodes[bob.0].exited, None);
    // Typed out of turn it is held like any message.
    net.client_input(bob, ClientInput::Message("/bridge".into()));
    net.run();
    assert_eq!(net.client(bob).held_messages(), 1);
    send_lines(&mut net, alice, &["ok"]);
    assert_eq!(received(&net, alice), ["/quit", "/bridge"]);
}

/// A raw node posing as the server at 127.0.0.1:7070, and a client connected to it.
fn fake_server(seed: u64) -> (Net, NodeId, ConnId, NodeId) {
    let mut net = Net::new(seed, Chunking::Random);
    let (fake, addr) = net.add_raw_listener(7070);
    let alice = net.add_client(ClientConfig::new(name("alice"), addr));
    let conn = net.raw(fake).accepted[0];
    (net, fake, conn, alice)
}

#[test]
fn server_answering_403_keeps_the_mode_and_reports_the_reason() {
    let (mut net, fake, conn, alice) = fake_server(3);
    send_lines(&mut net, alice, &["/register"]);
    let ip = net.nodes[alice.0].ip.to_string();
    let port = chat_addr(&net, alice).port();
    assert_eq!(
        net.raw_text(fake, conn),
        wire::client_register("alice", &ip, port)
    );
    net.send_raw(fake, conn, wire::ok_contact("alice", &ip, port).as_bytes());
    send_lines(&mut net, alice, &["/bridge"]);
    net.send_raw(
        fake,
        conn,
        wire::error("403 Forbidden", "register first").as_bytes(),
    );
    net.run();
    assert_eq!(
        errors(&net, alice),
        ["server refused: 403 Forbidden: register first"]
    );
    assert_eq!(net.mode(alice), Mode::Registered);
}

#[test]
fn a_third_client_chats_with_the_survivor_after_the_first_chat_ends() {
    for (chunking, seed) in CHUNKINGS {
        let Pair {
            mut net,
            server,
            alice,
            bob,
        } = Pair::chatting(chunking, seed);
        send_lines(&mut net, bob, &["hi alice", "/quit"]);
        assert_eq!(net.mode(alice), Mode::Registered);

        let carol = net.add_named_client("carol", server);
        send_lines(&mut net, alice, &["/bridge"]);
        send_lines(&mut net, carol, &["/register", "/bridge", "/chat"]);
        assert_eq!(net.mode(alice), Mode::Read, "{chunking:?}");
        assert_eq!(net.mode(carol), Mode::Write);
        assert_eq!(net.client(alice).peer(), Some(name("carol")));
        send_lines(&mut net, carol, &["hello from carol"]);
        send_lines(&mut net, alice, &["hi carol"]);
        assert_eq!(received(&net, alice), ["hi alice", "hello from carol"]);
        assert_eq!(received(&net, carol), ["hi carol"]);
    }
}

#[test]
fn a_server_that_never_answers_times_out_and_the_mode_stays() {
    let (mut net, fake, conn, alice) = fake_server(1);
    send_lines(&mut net, alice, &["/register", "/help"]);
    // The queued /help waits for REGISTER's answer.
    assert!(infos(&net, alice).is_empty());
    let timeout = net.client(alice).config().request_timeout;
    net.advance(timeout - Duration::from_millis(1));
    assert!(errors(&net, alice).is_empty());
    net.advance(Duration::from_millis(1));
    assert_eq!(
        errors(&net, alice),
        ["the server did not answer REGISTER within 10s"]
    );
    assert_eq!(net.mode(alice), Mode::Unregistered);
    assert_eq!(
        infos(&net, alice).len(),
        1,
        "the queued /help ran after the timeout"
    );

    // A late answer belongs to the request that timed out: it must not count for the next one.
    let ip = net.nodes[alice.0].ip.to_string();
    let port = chat_addr(&net, alice).port();
    net.send_raw(fake, conn, wire::ok_contact("alice", &ip, port).as_bytes());
    net.run();
    assert_eq!(net.mode(alice), Mode::Unregistered);
    send_lines(&mut net, alice, &["/register"]);
    net.send_raw(fake, conn, wire::ok_contact("alice", &ip, port).as_bytes());
    net.run();
    assert_eq!(net.mode(alice), Mode::Registered);
}

#[test]
fn ctrl_c_in_read_mode_sends_quit_and_exits_at_once() {
    for (chunking, seed) in CHUNKINGS {
        let Pair {
            mut net,
            alice,
            bob,
            ..
        } = Pair::chatting(chunking, seed);
        net.client_input(alice, ClientInput::Interrupt);
        assert_eq!(net.nodes[alice.0].exited, Some(Ok(())));
        net.run();
        assert!(net.client_events(bob).contains(&ClientEvent::PeerLeft {
            peer: name("alice")
        }));
        assert_eq!(net.mode(bob), Mode::Registered, "{chunking:?}");
    }
}

#[test]
fn ctrl_c_in_wait_mode_exits_and_the_server_stops_waiting() {
    let Pair {
        mut net,
        server,
        alice,
        ..
    } = Pair::ready(Chunking::Random, 5);
    // Bob took alice from the waiting slot; make carol the waiting one.
    let carol = net.add_named_client("carol", server);
    send_lines(&mut net, carol, &["/register", "/bridge"]);
    assert_eq!(net.mode(carol), Mode::Wait);
    assert!(net.server(server).stats().waiting);
    net.client_input(carol, ClientInput::Interrupt);
    net.run();
    assert_eq!(net.nodes[carol.0].exited, Some(Ok(())));
    assert!(!net.server(server).stats().waiting);
    assert_eq!(net.mode(alice), Mode::Wait);
}

#[test]
fn ctrl_c_with_a_request_in_flight_and_lines_queued_exits_at_once() {
    let (mut net, _fake, _conn, alice) = fake_server(2);
    net.line(alice, "/register");
    net.line(alice, "/bridge");
    net.client_input(alice, ClientInput::Interrupt);
    assert_eq!(net.nodes[alice.0].exited, Some(Ok(())));
    assert!(errors(&net, alice).is_empty());
}

#[test]
fn end_of_input_quits_after_the_lines_before_it() {
    let Pair {
        mut net,
        alice,
        bob,
        ..
    } = Pair::chatting(Chunking::Random, 9);
    net.line(bob, "last words");
    net.client_input(bob, ClientInput::EndOfInput);
    net.run();
    assert_eq!(received(&net, alice), ["last words"]);
    assert!(net
        .client_events(alice)
        .contains(&ClientEvent::PeerLeft { peer: name("bob") }));
}

#[test]
fn bridge_again_in_wait_mode_recovers_from_a_peer_who_never_came() {
    // Version 1's recovery (version 2 tells alice and queues her again by itself).
    let mut net = Net::new(5, Chunking::Random);
    let server = net.add_default_server();
    let v1_client = |net: &mut Net, who: &str| {
        let mut config = ClientConfig::new(name(who), net.addr_of(server, 7070));
        config.version2 = false;
        net.add_client(config)
    };
    let alice = v1_client(&mut net, "alice");
    let bob = v1_client(&mut net, "bob");
    let carol = v1_client(&mut net, "carol");
    send_lines(&mut net, alice, &["/register", "/bridge"]);
    send_lines(&mut net, bob, &["/register", "/bridge"]);
    assert_eq!(net.mode(bob), Mode::Ready);
    // bob was handed alice but leaves without /chat, past the server's introduction
    // deadline (so alice is not put back in line): the server no longer has a waiter.
    net.advance(ServerConfig::default().introduction_deadline);
    send_lines(&mut net, bob, &["/quit"]);
    assert_eq!(net.mode(alice), Mode::Wait);
    send_lines(&mut net, carol, &["/register", "/bridge"]);
    assert_eq!(
        net.mode(carol),
        Mode::Wait,
        "alice was handed out once already"
    );
    send_lines(&mut net, alice, &["/bridge"]);
    assert_eq!(net.mode(alice), Mode::Ready);
    assert_eq!(net.client(alice).peer(), Some(name("carol")));
    send_lines(&mut net, alice, &["/chat"]);
    assert_eq!(net.mode(alice), Mode::Write);
    assert_eq!(net.mode(carol), Mode::Read);
}

#[test]
fn bridge_again_while_still_waiting_keeps_waiting() {
    let mut net = Net::new(6, Chunking::OneByte);
    let server = net.add_default_server();
    let alice = net.add_named_client("alice", server);
    send_lines(&mut net, alice, &["/register", "/bridge", "/bridge"]);
    assert_eq!(net.mode(alice), Mode::Wait);
    assert!(errors(&net, alice).is_empty(), "{:?}", errors(&net, alice));
    assert!(net.server(server).stats().waiting);
}

#[test]
fn chat_in_wait_mode_is_an_error_that_changes_nothing() {
    let Pair { mut net, alice, .. } = Pair::ready(Chunking::Whole, 1);
    let before = net.links_of(alice).len();
    send_lines(&mut net, alice, &["/chat"]);
    assert_eq!(
        errors(&net, alice),
        ["in WAIT MODE the peer starts the chat: /chat is for the READY side"]
    );
    assert_eq!(net.mode(alice), Mode::Wait);
    assert_eq!(net.links_of(alice).len(), before, "no connection opened");
}

#[test]
fn commands_that_make_no_sense_in_the_mode_are_refused() {
    let mut net = Net::new(1, Chunking::Whole);
    let server = net.add_default_server();
    let alice = net.add_named_client("alice", server);
    send_lines(&mut net, alice, &["/bridge", "/chat", "hello"]);
    assert_eq!(
        errors(&net, alice),
        [
            "register first: type /register",
            "register first: type /register",
            "not in a chat: type /register, then /bridge to find a peer",
        ]
    );
    assert_eq!(net.mode(alice), Mode::Unregistered);
    assert!(modes(&net, alice).is_empty());

    let Pair { mut net, bob, .. } = Pair::chatting(Chunking::Whole, 1);
    net.take_client_events(bob);
    send_lines(&mut net, bob, &["/bridge", "/register", "/chat"]);
    assert_eq!(errors(&net, bob), ["already in a chat"; 3]);
    assert_eq!(net.mode(bob), Mode::Write);
}

#[test]
fn help_lists_every_command() {
    let mut net = Net::new(1, Chunking::Whole);
    let server = net.add_default_server();
    let alice = net.add_named_client("alice", server);
    send_lines(&mut net, alice, &["/help"]);
    let help = infos(&net, alice);
    assert_eq!(help.len(), 1);
    for command in ["/register", "/bridge", "/chat", "/quit", "/help"] {
        assert!(help[0].contains(command), "{command} missing from {help:?}");
    }
}

#[test]
fn lines_typed_while_a_request_is_in_flight_are_handled_in_order() {
    for (chunking, seed) in CHUNKINGS {
        let mut net = Net::new(seed, chunking);
        let server = net.add_default_server();
        let alice = net.add_named_client("alice", server);
        let bob = net.add_named_client("bob", server);
        // All typed before any answer arrives.
        net.line(alice, "/register");
        net.line(alice, "/bridge");
        net.line(alice, "queued while waiting");
        net.run();
        assert_eq!(net.mode(alice), Mode::Wait, "{chunking:?}");
        assert_eq!(net.client(alice).held_messages(), 1);
        for line in ["/register", "/bridge", "/chat", "hi"] {
            net.line(bob, line);
        }
        net.run();
        assert_eq!(received(&net, alice), ["hi"]);
        assert_eq!(received(&net, bob), ["queued while waiting"]);
    }
}

#[test]
fn held_messages_left_when_the_chat_ends_are_dropped_with_a_count() {
    let Pair {
        mut net,
        alice,
        bob,
        ..
    } = Pair::chatting(Chunking::Whole, 1);
    send_lines(&mut net, alice, &["one", "two"]);
    assert_eq!(net.client(alice).held_messages(), 2);
    send_lines(&mut net, bob, &["/quit"]);
    assert_eq!(net.mode(alice), Mode::Registered);
    assert_eq!(net.client(alice).held_messages(), 0);
    // The chat was encrypted: what the safety code is for came first.
    assert_eq!(
        infos(&net, alice),
        [
            bridgechat_core::client::SAFETY_CODE_HELP,
            "2 held messages were not sent: the chat is over"
        ]
    );
}

#[test]
fn invalid_utf8_is_shown_as_replacement_characters() {
    let mut net = Net::new(1, Chunking::OneByte);
    let server = net.add_default_server();
    let alice = net.add_named_client("alice", server);
    send_lines(&mut net, alice, &["/register", "/bridge"]);
    let peer = net.add_raw();
    introduce(&mut net, server, peer, "bob");
    let conn = net.connect_raw(peer, chat_addr(&net, alice)).unwrap();
    net.send_raw(peer, conn, chat_request("bob", "127.0.0.9", 9).as_bytes());
    net.send_raw(
        peer,
        conn,
        b"MESSAGE / HTTP/1.1\r\nContent-Length: 6\r\n\r\nok\xff\xfe\r\n",
    );
    net.run();
    assert_eq!(received(&net, alice), ["ok\u{fffd}\u{fffd}\r\n"]);
}

#[test]
fn a_message_over_the_body_limit_is_refused() {
    let Pair {
        mut net,
        alice,
        bob,
        ..
    } = Pair::chatting(Chunking::Whole, 1);
    // An encrypted chat's frame holds a little less than a plain-text body.
    let max = bridgechat_core::secure::MAX_PLAINTEXT;
    assert!(max < net.client(bob).config().limits.max_body);
    send_lines(&mut net, bob, &[&"x".repeat(max + 1)]);
    assert_eq!(
        errors(&net, bob),
        [format!(
            "message too long: {} bytes, at most {max}",
            max + 1
        )]
    );
    assert_eq!(net.mode(bob), Mode::Write);
    send_lines(&mut net, bob, &[&"y".repeat(max)]);
    assert_eq!(received(&net, alice), ["y".repeat(max)]);
}

#[test]
fn a_peer_refusing_chat_sends_the_initiator_back_to_registered() {
    let mut net = Net::new(1, Chunking::Random);
    let (peer, peer_addr) = net.add_raw_listener(9100);
    let bob = ready_bob_via_fake_server(&mut net, peer_addr);
    send_lines(&mut net, bob, &["held", "/chat"]);
    let chat = net.raw(peer).accepted[0];
    let ip = net.nodes[bob.0].ip.to_string();
    let port = chat_addr(&net, bob).port();
    assert_eq!(net.raw_text(peer, chat), chat_request("bob", &ip, port));
    net.send_raw(
        peer,
        chat,
        wire::error_closing("409 Conflict", "not waiting for a peer").as_bytes(),
    );
    net.close_raw(peer, chat);
    net.run();
    assert_eq!(
        errors(&net, bob),
        ["alice refused the chat: 409 Conflict: not waiting for a peer"]
    );
    assert_eq!(net.mode(bob), Mode::Registered);
    assert_eq!(
        infos(&net, bob),
        ["1 held message was not sent: the chat is over"]
    );
}

#[test]
fn a_peer_that_cannot_be_reached_sends_the_initiator_back_to_registered() {
    let mut net = Net::new(4, Chunking::Random);
    let bob = ready_bob_via_fake_server(&mut net, "127.0.0.99:1".parse().unwrap());
    send_lines(&mut net, bob, &["/chat"]);
    assert_eq!(
        errors(&net, bob),
        ["cannot reach alice at 127.0.0.99:1: connection refused"]
    );
    assert_eq!(net.mode(bob), Mode::Registered);
}

#[test]
fn losing_the_server_returns_to_unregistered_and_register_reconnects() {
    let mut net = Net::new(1, Chunking::Random);
    let server = net.add_default_server();
    let alice = net.add_named_client("alice", server);
    send_lines(&mut net, alice, &["/register", "/bridge"]);
    let conn = conn_to(&net, alice, server);
    net.reset(alice, conn);
    net.run();
    assert_eq!(
        errors(&net, alice),
        ["lost the server: type /register to reconnect, or /quit"]
    );
    assert_eq!(net.mode(alice), Mode::Unregistered);
    send_lines(&mut net, alice, &["/register"]);
    assert_eq!(net.mode(alice), Mode::Registered);
    assert_eq!(net.server(server).stats().registered, 1);
    assert_eq!(
        reconnect_lines(&net, alice),
        ["reconnecting to the server at 127.0.0.1:7070 (attempt 1 of 5)"]
    );
}

/// The lines a client printed while reconnecting.
fn reconnect_lines(net: &Net, node: NodeId) -> Vec<String> {
    net.client_events(node)
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Reconnecting(attempt) => Some(attempt.to_string()),
            _ => None,
        })
        .collect()
}

/// A registered alice whose server has shut down.
fn server_gone() -> (Net, NodeId, NodeId) {
    let mut net = Net::new(1, Chunking::Random);
    let server = net.add_default_server();
    let alice = net.add_named_client("alice", server);
    send_lines(&mut net, alice, &["/register"]);
    net.server_input(server, ServerInput::Shutdown);
    net.run();
    net.take_client_events(alice);
    (net, server, alice)
}

#[test]
fn register_without_a_server_retries_with_backoff_then_gives_up_and_stays() {
    let (mut net, server, alice) = server_gone();
    send_lines(&mut net, alice, &["/register", "/help"]);
    // Attempt 1 at once, then 0.5 s, 1 s, 2 s, 4 s apart: each a line when it is set up.
    let waits = [500, 1000, 2000, 4000].map(Duration::from_millis);
    for (i, wait) in waits.into_iter().enumerate() {
        assert_eq!(
            reconnect_lines(&net, alice).len(),
            i + 2,
            "attempt {}",
            i + 2
        );
        net.advance(wait - Duration::from_millis(1));
        assert_eq!(
            reconnect_lines(&net, alice).len(),
            i + 2,
            "not before {wait:?}"
        );
        assert!(infos(&net, alice).is_empty(), "/help waits for /register");
        net.advance(Duration::from_millis(1));
    }
    let refused = ": connection refused";
    assert_eq!(
        reconnect_lines(&net, alice),
        [
            "reconnecting to the server at 127.0.0.1:7070 (attempt 1 of 5)".to_owned(),
            format!("cannot reach the server at 127.0.0.1:7070{refused}; trying again in 500ms (attempt 2 of 5)"),
            format!("cannot reach the server at 127.0.0.1:7070{refused}; trying again in 1s (attempt 3 of 5)"),
            format!("cannot reach the server at 127.0.0.1:7070{refused}; trying again in 2s (attempt 4 of 5)"),
            format!("cannot reach the server at 127.0.0.1:7070{refused}; trying again in 4s (attempt 5 of 5)"),
        ]
    );
    assert_eq!(
        errors(&net, alice),
        [format!(
            "cannot reach the server at 127.0.0.1:7070 after {RECONNECT_ATTEMPTS} attempts{refused}; \
             type /register to try again, or /quit"
        )]
    );
    assert_eq!(net.nodes[alice.0].exited, None, "not fatal");
    assert_eq!(net.mode(alice), Mode::Unregistered);
    assert_eq!(infos(&net, alice).len(), 1, "the queued /help ran");
    assert_eq!(net.client(alice).poll_timeout(), None, "no timer left");

    // Back again: the next /register connects.
    net.restart_default_server(server);
    send_lines(&mut net, alice, &["/register"]);
    assert_eq!(net.mode(alice), Mode::Registered);
}

#[test]
fn register_reconnects_when_the_server_comes_back_during_the_backoff() {
    let (mut net, server, alice) = server_gone();
    send_lines(&mut net, alice, &["/register"]);
    net.advance(Duration::from_millis(500));
    assert_eq!(reconnect_lines(&net, alice).len(), 3, "two attempts failed");
    net.restart_default_server(server);
    net.advance(Duration::from_millis(999));
    assert_eq!(net.mode(alice), Mode::Unregistered, "waits for its backoff");
    net.advance(Duration::from_millis(1));
    assert_eq!(net.mode(alice), Mode::Registered);
    assert!(errors(&net, alice).is_empty());
    assert_eq!(net.client(alice).poll_timeout(), None);
}

#[test]
fn the_chat_port_listens_in_the_family_of_the_registered_ip() {
    let v4_server: SocketAddr = "127.0.0.1:7070".parse().unwrap();
    let v6_server: SocketAddr = "[::1]:7070".parse().unwrap();
    let listen_addr = |server, ip: Option<&str>| {
        let mut config = ClientConfig::new(name("alice"), server);
        config.advertise_ip = ip.map(|ip| ip.parse().unwrap());
        let mut client = Client::new(config, Instant::now());
        match client.poll_output() {
            Some(Output::Listen { addr, .. }) => addr.to_string(),
            other => panic!("first output {other:?}"),
        }
    };
    assert_eq!(listen_addr(v4_server, None), "0.0.0.0:0");
    assert_eq!(listen_addr(v6_server, None), "[::]:0");
    // `--ip ::1` over an IPv4 server must still be reachable at ::1.
    assert_eq!(listen_addr(v4_server, Some("::1")), "[::]:0");
    assert_eq!(listen_addr(v6_server, Some("127.0.0.1")), "0.0.0.0:0");
}

#[test]
fn a_chat_survives_losing_the_server_and_ends_unregistered() {
    let Pair {
        mut net,
        server,
        alice,
        bob,
    } = Pair::chatting(Chunking::Random, 11);
    let conn = conn_to(&net, alice, server);
    net.reset(alice, conn);
    net.run();
    assert_eq!(errors(&net, alice), ["lost the server (your chat goes on)"]);
    assert_eq!(net.mode(alice), Mode::Read);
    send_lines(&mut net, bob, &["still works"]);
    assert_eq!(received(&net, alice), ["still works"]);
    send_lines(&mut net, bob, &["/quit"]);
    assert_eq!(net.mode(alice), Mode::Unregistered);
}

#[test]
fn the_registered_ip_is_the_advertised_one_when_given() {
    let mut net = Net::new(1, Chunking::Whole);
    let (fake, addr) = net.add_raw_listener(7070);
    let mut config = ClientConfig::new(name("alice"), addr);
    config.advertise_ip = Some("203.0.113.7".parse().unwrap());
    let alice = net.add_client(config);
    send_lines(&mut net, alice, &["/register"]);
    let conn = net.raw(fake).accepted[0];
    let port = chat_addr(&net, alice).port();
    assert_eq!(
        net.raw_text(fake, conn),
        wire::client_register("alice", "203.0.113.7", port)
    );
}

#[test]
fn trace_reports_every_chunk_sent_and_received() {
    let mut net = Net::new(1, Chunking::OneByte);
    let server = net.add_default_server();
    let addr = net.addr_of(server, 7070);
    let mut config = ClientConfig::new(name("alice"), addr);
    config.trace = true;
    // Version 1, so the server's answer is known byte for byte.
    config.version2 = false;
    let alice = net.add_client(config);
    send_lines(&mut net, alice, &["/register"]);
    let (mut sent, mut got) = (Vec::new(), Vec::new());
    for e in net.client_events(alice) {
        if let ClientEvent::Trace {
            direction, bytes, ..
        } = e
        {
            match direction {
                Direction::Sent => sent.extend_from_slice(bytes),
                Direction::Received => got.extend_from_slice(bytes),
            }
        }
    }
    let ip = net.nodes[alice.0].ip.to_string();
    let port = chat_addr(&net, alice).port();
    assert_eq!(
        String::from_utf8(sent).unwrap(),
        wire::register("alice", &ip, port)
    );
    assert_eq!(
        String::from_utf8(got).unwrap(),
        wire::ok_contact("alice", &ip, port)
    );
}

// ---------------------------------------------------------------------------
// Start-up, driven by hand: the harness connects at once, so hanging connects
// and failures are played out directly on a `Client`.

fn drain(client: &mut Client) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(o) = client.poll_output() {
        out.push(match o {
            Output::Listen { addr, shared } => {
                format!("listen {addr}{}", if shared { " shared" } else { "" })
            }
            Output::Connect { conn, addr, from } => match from {
                Some(port) => format!("connect {conn} {addr} from port {port}"),
                None => format!("connect {conn} {addr}"),
            },
            Output::Transmit { conn, bytes } => {
                format!("send {conn} {}", String::from_utf8_lossy(bytes))
            }
            Output::Close { conn } => format!("close {conn}"),
            Output::Abort { conn } => format!("abort {conn}"),
            // Errors as the person reads them.
            Output::Event(ClientEvent::Error(e)) => format!("error {e}"),
            Output::Event(ClientEvent::Reconnecting(r)) => format!("reconnecting {r}"),
            Output::Event(e) => format!("event {e:?}"),
            Output::Exit(r) => format!("exit {:?}", r.map_err(|e| e.to_string())),
        });
    }
    out
}

fn server_addr() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7070)
}

#[test]
fn start_up_listens_on_the_unspecified_address_of_the_servers_family() {
    let now = Instant::now();
    let mut v4 = ClientConfig::new(name("alice"), server_addr());
    v4.listen_port = 9001;
    let mut client = Client::new(v4, now);
    // The port is shared with the punches; the server connection starts from it,
    // once it is bound.
    assert_eq!(drain(&mut client), ["listen 0.0.0.0:9001 shared"]);
    client.handle_listening(now, "0.0.0.0:9001".parse().unwrap());
    assert_eq!(
        drain(&mut client),
        [
            "event Listening(0.0.0.0:9001)",
            "connect #1 127.0.0.1:7070 from port 9001"
        ]
    );
    let v6 = ClientConfig::new(name("alice"), "[::1]:7070".parse().unwrap());
    assert_eq!(drain(&mut Client::new(v6, now)), ["listen [::]:0 shared"]);
}

#[test]
fn a_server_that_does_not_connect_within_5s_is_fatal() {
    let now = Instant::now();
    let mut client = Client::new(ClientConfig::new(name("alice"), server_addr()), now);
    drain(&mut client);
    client.handle_listening(now, "0.0.0.0:9001".parse().unwrap());
    drain(&mut client);
    // A line typed meanwhile waits for start-up.
    client.handle_input(now, ClientInput::Line("/register".to_owned()));
    assert!(drain(&mut client).is_empty());
    assert_eq!(client.poll_timeout(), Some(now + Duration::from_secs(5)));
    client.handle_timeout(now + Duration::from_secs(5));
    assert_eq!(
        drain(&mut client),
        [
            "close #1",
            "exit Err(\"cannot reach the server at 127.0.0.1:7070 within 5s\")"
        ]
    );
    assert_eq!(client.poll_timeout(), None);
}

#[test]
fn a_connect_that_hangs_while_reconnecting_is_a_failed_attempt_not_fatal() {
    let now = Instant::now();
    let mut client = Client::new(ClientConfig::new(name("alice"), server_addr()), now);
    client.handle_listening(now, "0.0.0.0:9001".parse().unwrap());
    client.handle_connected(now, ConnId(1), "127.0.0.1:40000".parse().unwrap());
    client.handle_closed(now, ConnId(1));
    drain(&mut client);
    client.handle_input(now, ClientInput::Line("/register".to_owned()));
    assert!(drain(&mut client).contains(&"connect #2 127.0.0.1:7070 from port 9001".to_owned()));
    let hung = now + Duration::from_secs(5);
    assert_eq!(client.poll_timeout(), Some(hung));
    client.handle_timeout(hung);
    let retry = "cannot reach the server at 127.0.0.1:7070 within 5s; \
                 trying again in 500ms (attempt 2 of 5)";
    assert_eq!(
        drain(&mut client),
        ["close #2".to_owned(), format!("reconnecting {retry}")]
    );
    let later = hung + Duration::from_millis(500);
    assert_eq!(client.poll_timeout(), Some(later));
    client.handle_timeout(later);
    // The chat port's old connection may hold the addresses: any port this time.
    assert_eq!(drain(&mut client), ["connect #3 127.0.0.1:7070"]);
}

#[test]
fn a_refused_server_connection_at_start_up_is_fatal() {
    let mut net = Net::new(1, Chunking::Whole);
    let alice = net.add_client(ClientConfig::new(name("alice"), server_addr()));
    assert_eq!(
        net.nodes[alice.0].exited,
        Some(Err(
            "cannot reach the server at 127.0.0.1:7070: connection refused".to_owned()
        ))
    );
}

#[test]
fn a_chat_port_that_cannot_be_bound_is_fatal() {
    let now = Instant::now();
    let mut client = Client::new(ClientConfig::new(name("alice"), server_addr()), now);
    drain(&mut client);
    let in_use = std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use");
    client.handle_listen_failed(now, "0.0.0.0:9001".parse().unwrap(), &in_use);
    // Nothing else was opened: the server connection waits for the listener.
    assert_eq!(
        drain(&mut client),
        ["exit Err(\"cannot listen for chats on 0.0.0.0:9001: address in use\")"]
    );
}

#[test]
fn an_incoming_connection_that_never_sends_chat_gets_408() {
    let mut net = Net::new(1, Chunking::Whole);
    let server = net.add_default_server();
    let alice = net.add_named_client("alice", server);
    send_lines(&mut net, alice, &["/register", "/bridge"]);
    let peer = net.add_raw();
    let conn = net.connect_raw(peer, chat_addr(&net, alice)).unwrap();
    net.send_raw(peer, conn, b"CHAT / HTTP/1.1\r\n");
    net.advance(Duration::from_secs(10));
    assert_eq!(
        net.raw_text(peer, conn),
        wire::error_closing("408 Request Timeout", "no CHAT within 10s")
    );
    assert_eq!(net.mode(alice), Mode::Wait);
}

/// A client registered by hand as `who`, reachable at `ip`:`port`, with the server on
/// connection #1; its outputs so far drained.
fn registered_by_hand(who: &str, ip: &str, port: u16, now: Instant) -> Client {
    let mut client = Client::new(ClientConfig::new(name(who), server_addr()), now);
    let local_ip: IpAddr = ip.parse().unwrap();
    client.handle_listening(now, SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port));
    client.handle_connected(now, ConnId(1), SocketAddr::new(local_ip, 50000));
    client.handle_input(now, ClientInput::Line("/register".to_owned()));
    client.handle_data(now, ConnId(1), wire::ok_contact(who, ip, port).as_bytes());
    drain(&mut client);
    client
}

#[test]
fn a_chat_that_arrives_before_the_bridge_answer_is_accepted_once_waiting() {
    // Played by hand: the server's answer to BRIDGE is slower than the peer's CHAT.
    let now = Instant::now();
    let mut alice = registered_by_hand("alice", "127.0.0.1", 9001, now);
    alice.handle_input(now, ClientInput::Line("/bridge".to_owned()));
    drain(&mut alice);
    let chat = alice.handle_accept(now, "127.0.0.2:40000".parse().unwrap());
    alice.handle_data(now, chat, chat_request("bob", "127.0.0.2", 9002).as_bytes());
    alice.handle_data(now, chat, message("early").as_bytes());
    assert!(
        drain(&mut alice).is_empty(),
        "undecided until BRIDGE is answered"
    );
    alice.handle_data(now, ConnId(1), wire::ok().as_bytes());
    let out = drain(&mut alice);
    assert!(out.contains(&format!(
        "send {chat} {}",
        wire::ok_contact("alice", "127.0.0.1", 9001)
    )));
    assert_eq!(alice.mode(), Mode::Write);
    assert!(out.contains(&format!(
        "event {:?}",
        ClientEvent::MessageReceived {
            from: name("bob"),
            text: "early".to_owned()
        }
    )));
}

#[test]
fn a_bridge_answer_that_comes_after_a_peers_chat_leaves_the_chat_alone() {
    // Played by hand: alice types /bridge again in WAIT MODE, and bob's CHAT is faster
    // than the server's answer.
    let now = Instant::now();
    let mut alice = registered_by_hand("alice", "127.0.0.1", 9001, now);
    alice.handle_input(now, ClientInput::Line("/bridge".to_owned()));
    alice.handle_data(now, ConnId(1), wire::ok().as_bytes());
    assert_eq!(alice.mode(), Mode::Wait);
    alice.handle_input(now, ClientInput::Line("/bridge".to_owned()));
    let chat = alice.handle_accept(now, "127.0.0.2:40000".parse().unwrap());
    alice.handle_data(now, chat, chat_request("bob", "127.0.0.2", 9002).as_bytes());
    assert_eq!(alice.mode(), Mode::Read);
    drain(&mut alice);
    alice.handle_data(
        now,
        ConnId(1),
        wire::ok_contact("carol", "127.0.0.4", 9004).as_bytes(),
    );
    assert!(
        drain(&mut alice).is_empty(),
        "the late answer changes nothing"
    );
    assert_eq!(alice.mode(), Mode::Read);
    assert_eq!(alice.peer(), Some(name("bob")));
    alice.handle_data(now, chat, message("hi").as_bytes());
    assert_eq!(alice.mode(), Mode::Write);
}

/// Bob registered and READY with alice at `peer_addr`, through a fake server.
fn ready_bob_via_fake_server(net: &mut Net, peer_addr: SocketAddr) -> NodeId {
    let (fake, addr) = net.add_raw_listener(7070);
    let bob = net.add_client(ClientConfig::new(name("bob"), addr));
    let conn = net.raw(fake).accepted[0];
    let ip = net.nodes[bob.0].ip.to_string();
    let port = chat_addr(net, bob).port();
    send_lines(net, bob, &["/register"]);
    net.send_raw(fake, conn, wire::ok_contact("bob", &ip, port).as_bytes());
    send_lines(net, bob, &["/bridge"]);
    let peer_ip = peer_addr.ip().to_string();
    net.send_raw(
        fake,
        conn,
        wire::ok_contact("alice", &peer_ip, peer_addr.port()).as_bytes(),
    );
    net.run();
    assert_eq!(net.mode(bob), Mode::Ready);
    bob
}

#[test]
fn a_peer_that_never_answers_chat_times_out_back_to_registered() {
    let mut net = Net::new(1, Chunking::Random);
    let (peer, peer_addr) = net.add_raw_listener(9100);
    let bob = ready_bob_via_fake_server(&mut net, peer_addr);
    send_lines(&mut net, bob, &["/chat", "/help"]);
    assert!(
        infos(&net, bob).is_empty(),
        "/help waits for the CHAT answer"
    );
    net.advance(Duration::from_secs(10));
    assert_eq!(errors(&net, bob), ["alice did not answer CHAT within 10s"]);
    assert_eq!(net.mode(bob), Mode::Registered);
    assert_eq!(infos(&net, bob).len(), 1);
    let chat = net.raw(peer).accepted[0];
    assert!(net.raw_is_closed(peer, chat));
}

#[test]
fn a_peer_connect_that_hangs_for_5s_is_closed_and_reported() {
    // The harness connects at once, so the hanging connect is played by hand.
    let now = Instant::now();
    let mut bob = registered_by_hand("bob", "127.0.0.2", 9002, now);
    bob.handle_input(now, ClientInput::Line("/bridge".to_owned()));
    bob.handle_data(
        now,
        ConnId(1),
        wire::ok_contact("alice", "127.0.0.3", 9003).as_bytes(),
    );
    bob.handle_input(now, ClientInput::Line("/chat".to_owned()));
    let out = drain(&mut bob);
    assert!(
        out.contains(&"connect #2 127.0.0.3:9003".to_owned()),
        "{out:?}"
    );
    assert_eq!(bob.poll_timeout(), Some(now + Duration::from_secs(5)));
    bob.handle_timeout(now + Duration::from_secs(5));
    let out = drain(&mut bob);
    assert_eq!(out[0], "close #2");
    assert!(out.contains(&"error cannot reach alice at 127.0.0.3:9003 within 5s".to_owned()));
    assert_eq!(bob.mode(), Mode::Registered);
}
