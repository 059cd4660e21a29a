//! The client speaking the course format, in memory: `--legacy` (course
//! requests to the server, a course CHAT and raw turns to peers), and a
//! bridgechat client paired with a course client through a bridgechat server.
//! Raw turns are one read each, so the chats run with whole deliveries; the
//! server's course answers are also read split in every way.

mod support;

use std::net::SocketAddr;
use std::time::Instant;

use bridgechat_core::client::{Client, ClientConfig, ClientEvent, ClientInput, Mode, Unprotected};
use bridgechat_core::{ConnId, Endpoint, Output};
use support::*;

const CHUNKINGS: [(Chunking, u64); 4] = [
    (Chunking::Whole, 1),
    (Chunking::OneByte, 1),
    (Chunking::Random, 1),
    (Chunking::Random, 2),
];

fn legacy_config(who: &str, server: SocketAddr) -> ClientConfig {
    ClientConfig {
        legacy: true,
        ..ClientConfig::new(name(who), server)
    }
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

fn left(net: &Net, node: NodeId) -> bool {
    net.client_events(node)
        .iter()
        .any(|e| matches!(e, ClientEvent::PeerLeft { .. }))
}

fn chat_port(net: &Net, node: NodeId) -> u16 {
    net.client_events(node)
        .iter()
        .find_map(|e| match e {
            ClientEvent::Listening(addr) => Some(addr.port()),
            _ => None,
        })
        .expect("the client reported its listener")
}

fn send_lines(net: &mut Net, node: NodeId, lines: &[&str]) {
    for line in lines {
        net.line(node, line);
    }
    net.run();
}

/// The one connection the raw node accepted.
fn accepted(net: &Net, raw: NodeId) -> ConnId {
    let accepted = &net.raw(raw).accepted;
    assert_eq!(accepted.len(), 1, "one connection: {accepted:?}");
    accepted[0]
}

/// A `--legacy` alice with a raw course server (port 7070) and a raw course peer
/// bob (port 2000); alice is registered and READY with bob.
struct Legacy {
    net: Net,
    alice: NodeId,
    bob: NodeId,
}

fn legacy_ready_with_bob(chunking: Chunking, seed: u64) -> Legacy {
    let mut net = Net::new(seed, chunking);
    let (server, server_addr) = net.add_raw_listener(7070);
    let (bob, bob_addr) = net.add_raw_listener(2000);
    let alice = net.add_client(legacy_config("alice", server_addr));
    net.run();
    let server_conn = accepted(&net, server);
    let alice_ip = net.addr_of(alice, 0).ip();
    let port = chat_port(&net, alice);

    send_lines(&mut net, alice, &["/register"]);
    let register = format!("REGISTER\r\nclientID: alice\r\nIP: {alice_ip}\r\nPort: {port}\r\n\r\n");
    assert_eq!(net.raw_text(server, server_conn), register);
    // The instructor's server echoes without a Status line.
    let regack = format!("REGACK\r\nclientID: alice\r\nIP: {alice_ip}\r\nPort: {port}\r\n\r\n");
    net.send_raw(server, server_conn, regack.as_bytes());
    net.run();
    assert_eq!(net.mode(alice), Mode::Registered);

    send_lines(&mut net, alice, &["/bridge"]);
    let bridge = "BRIDGE\r\nclientID: alice\r\n\r\n";
    assert_eq!(net.raw_text(server, server_conn), register + bridge);
    let bridgeack = format!(
        "BRIDGEACK\r\nclientID: bob\r\nIP: {}\r\nPort: 2000\r\n\r\n",
        bob_addr.ip()
    );
    net.send_raw(server, server_conn, bridgeack.as_bytes());
    net.run();
    assert_eq!(net.mode(alice), Mode::Ready);
    assert_eq!(net.client(alice).peer(), Some(name("bob")));
    Legacy { net, alice, bob }
}

#[test]
fn legacy_registers_and_bridges_in_the_course_format_however_the_answers_are_split() {
    for (chunking, seed) in CHUNKINGS {
        let Legacy { net, alice, .. } = legacy_ready_with_bob(chunking, seed);
        assert_eq!(
            net.modes_of(alice),
            [Mode::Registered, Mode::Ready],
            "{chunking:?}"
        );
        assert!(
            net.errors_of(alice).is_empty(),
            "{:?}",
            net.errors_of(alice)
        );
    }
}

#[test]
fn legacy_chats_in_raw_turns_and_quits_with_the_course_quit() {
    let Legacy {
        mut net,
        alice,
        bob,
        ..
    } = legacy_ready_with_bob(Chunking::Whole, 1);
    send_lines(&mut net, alice, &["/chat"]);
    let conn = accepted(&net, bob);
    let alice_ip = net.addr_of(alice, 0).ip();
    let chat = format!(
        "CHAT\r\nclientID: alice\r\nIP: {alice_ip}\r\nPort: {}\r\n\r\n",
        chat_port(&net, alice)
    );
    assert_eq!(net.raw_text(bob, conn), chat, "CHAT, and no answer awaited");
    assert_eq!(net.mode(alice), Mode::Write, "the initiator writes first");
    assert_eq!(not_protected(&net, alice), [Unprotected::Legacy]);

    send_lines(&mut net, alice, &["hi bob"]);
    assert_eq!(
        net.raw_text(bob, conn),
        format!("{chat}hi bob"),
        "the text alone"
    );
    assert_eq!(net.mode(alice), Mode::Read);
    net.send_raw(bob, conn, b"hello alice");
    net.run();
    assert_eq!(net.received_by(alice), ["hello alice"]);
    assert_eq!(net.mode(alice), Mode::Write);

    send_lines(&mut net, alice, &["/quit"]);
    assert_eq!(
        net.raw_text(bob, conn),
        format!("{chat}hi bobQUIT\r\n\r\n\r\n")
    );
    assert!(net.raw_is_closed(bob, conn), "closed after the quit");
}

#[test]
fn a_turn_and_the_quit_in_one_read_are_the_turn_then_the_quit() {
    let Legacy {
        mut net,
        alice,
        bob,
        ..
    } = legacy_ready_with_bob(Chunking::Whole, 1);
    send_lines(&mut net, alice, &["/chat", "hi bob"]);
    let conn = accepted(&net, bob);
    net.send_raw(bob, conn, b"byeQUIT\r\n\r\n\r\n");
    net.run();
    assert_eq!(net.received_by(alice), ["bye"]);
    assert!(left(&net, alice), "bob left");
    assert_eq!(net.mode(alice), Mode::Registered);
}

#[test]
fn end_of_stream_ends_a_course_chat_as_the_peer_leaving() {
    let Legacy {
        mut net,
        alice,
        bob,
        ..
    } = legacy_ready_with_bob(Chunking::Whole, 1);
    send_lines(&mut net, alice, &["/chat"]);
    let conn = accepted(&net, bob);
    net.close_raw(bob, conn);
    net.run();
    assert!(left(&net, alice));
    assert_eq!(net.mode(alice), Mode::Registered);
}

#[test]
fn an_answer_that_is_not_the_awaited_course_answer_ends_the_server_connection() {
    for answer in [
        // BRIDGEACK to REGISTER.
        &b"BRIDGEACK\r\nclientID: \r\nIP: \r\nPort: \r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"REGACK\r\n\x00\r\n\r\n",
        b"REGACK\r\nclientID: zo\xc3\xab\r\nIP: 127.0.0.1\r\nPort: 1\r\n\r\n",
    ] {
        let mut net = Net::new(1, Chunking::Whole);
        let (server, server_addr) = net.add_raw_listener(7070);
        let alice = net.add_client(legacy_config("alice", server_addr));
        net.run();
        let conn = accepted(&net, server);
        send_lines(&mut net, alice, &["/register"]);
        net.send_raw(server, conn, answer);
        net.run();
        let shown = String::from_utf8_lossy(answer);
        assert_eq!(net.mode(alice), Mode::Unregistered, "{shown}");
        assert!(net.raw_is_closed(server, conn), "{shown}");
        assert_eq!(
            net.errors_of(alice).len(),
            1,
            "{shown}: {:?}",
            net.errors_of(alice)
        );
    }
}

#[test]
fn legacy_has_no_named_bridge() {
    let mut net = Net::new(1, Chunking::Whole);
    let (server, server_addr) = net.add_raw_listener(7070);
    let alice = net.add_client(legacy_config("alice", server_addr));
    net.run();
    let conn = accepted(&net, server);
    send_lines(&mut net, alice, &["/register"]);
    let regack = b"REGACK\r\nclientID: alice\r\nIP: 10.0.0.1\r\nPort: 1\r\n\r\n";
    net.send_raw(server, conn, regack);
    net.run();
    assert_eq!(net.mode(alice), Mode::Registered);
    let sent = net.raw_text(server, conn);
    send_lines(&mut net, alice, &["/bridge bob"]);
    assert_eq!(net.raw_text(server, conn), sent, "nothing sent");
    assert_eq!(
        net.errors_of(alice),
        ["the course format has no /bridge NAME"]
    );
}

/// A course client (raw) registered at the in-memory bridgechat server with its
/// listener at port 3000, and waiting there or asking.
fn course_client(net: &mut Net, server: NodeId, who: &str) -> (NodeId, ConnId) {
    let (raw, listen) = net.add_raw_listener(3000);
    let conn = net
        .connect_raw(raw, net.addr_of(server, 7070))
        .expect("the server listens");
    let ask = format!(
        "REGISTER\r\nclientID: {who}\r\nIP: {}\r\nPort: 3000\r\n\r\nBRIDGE\r\nclientID: {who}\r\n\r\n",
        listen.ip()
    );
    net.send_raw(raw, conn, ask.as_bytes());
    net.run();
    (raw, conn)
}

#[test]
fn a_bridgechat_client_told_dialect_course_speaks_the_course_format_to_that_peer() {
    let mut net = Net::new(1, Chunking::Whole);
    let server = net.add_default_server();
    let (carol, _) = course_client(&mut net, server, "carol");
    let bob = net.add_named_client("bob", server);
    send_lines(&mut net, bob, &["/register", "/bridge"]);
    assert_eq!(net.mode(bob), Mode::Ready);
    send_lines(&mut net, bob, &["/chat"]);
    let conn = accepted(&net, carol);
    let chat = net.raw_text(carol, conn);
    assert!(
        chat.starts_with("CHAT\r\nclientID: bob\r\nIP: ") && chat.ends_with("\r\n\r\n"),
        "a course CHAT: {chat:?}"
    );
    assert_eq!(net.mode(bob), Mode::Write);
    assert_eq!(not_protected(&net, bob), [Unprotected::CoursePeer]);

    send_lines(&mut net, bob, &["hi carol"]);
    assert_eq!(net.raw_text(carol, conn), format!("{chat}hi carol"));
    net.send_raw(carol, conn, "héllo bob".as_bytes());
    net.run();
    assert_eq!(net.received_by(bob), ["héllo bob"]);
    // A turn longer than the course programs read at once cannot be sent.
    let long = "x".repeat(4097);
    send_lines(&mut net, bob, &[&long]);
    assert_eq!(net.errors_of(bob).len(), 1, "{:?}", net.errors_of(bob));
    assert_eq!(net.raw_text(carol, conn), format!("{chat}hi carol"));
    send_lines(&mut net, bob, &["/quit"]);
    assert_eq!(
        net.raw_text(carol, conn),
        format!("{chat}hi carolQUIT\r\n\r\n\r\n")
    );
}

#[test]
fn a_bridgechat_waiter_takes_a_course_chat_and_answers_nothing() {
    let mut net = Net::new(1, Chunking::Whole);
    let server = net.add_default_server();
    let alice = net.add_named_client("alice", server);
    send_lines(&mut net, alice, &["/register", "/bridge"]);
    assert_eq!(net.mode(alice), Mode::Wait);
    let (carol, _) = course_client(&mut net, server, "carol");
    let alice_addr = net.addr_of(alice, chat_port(&net, alice));
    let conn = net.connect_raw(carol, alice_addr).unwrap();
    let chat = format!(
        "CHAT\r\nclientID: carol\r\nIP: {}\r\nPort: 3000\r\n\r\n",
        net.addr_of(carol, 0).ip()
    );
    net.send_raw(carol, conn, chat.as_bytes());
    net.run();
    assert_eq!(
        net.mode(alice),
        Mode::Read,
        "the course initiator writes first"
    );
    assert_eq!(
        net.raw_text(carol, conn),
        "",
        "a course CHAT gets no answer"
    );
    assert_eq!(not_protected(&net, alice), [Unprotected::CoursePeer]);
    net.send_raw(carol, conn, b"hi alice");
    net.run();
    assert_eq!(net.received_by(alice), ["hi alice"]);
    send_lines(&mut net, alice, &["hi carol"]);
    assert_eq!(net.raw_text(carol, conn), "hi carol");
    net.send_raw(carol, conn, b"QUIT");
    net.run();
    assert!(left(&net, alice), "a bare QUIT ends the chat");
    assert_eq!(net.mode(alice), Mode::Registered);
}

#[test]
fn course_garbage_on_the_chat_port_is_closed_unanswered_and_the_wait_goes_on() {
    for garbage in [
        &b"REGISTER\r\nclientID: m\r\nIP: 127.0.0.1\r\nPort: 1\r\n\r\n"[..],
        b"CHAT\r\nclientID: m\r\nIP: nowhere\r\nPort: 1\r\n\r\n",
        b"CHAT\r\n\x00\r\n\r\n",
        b"CHAT\r\nType: init\r\n\r\n",
        b"QUIT\r\n\r\n\r\n",
    ] {
        let mut net = Net::new(1, Chunking::Whole);
        let server = net.add_default_server();
        let alice = net.add_client(ClientConfig {
            legacy: true,
            ..ClientConfig::new(name("alice"), net.addr_of(server, 7070))
        });
        send_lines(&mut net, alice, &["/register", "/bridge"]);
        assert_eq!(net.mode(alice), Mode::Wait);
        let stranger = net.add_raw();
        let alice_addr = net.addr_of(alice, chat_port(&net, alice));
        let conn = net.connect_raw(stranger, alice_addr).unwrap();
        net.send_raw(stranger, conn, garbage);
        net.run();
        let shown = String::from_utf8_lossy(garbage);
        assert_eq!(net.raw_text(stranger, conn), "", "{shown}");
        assert!(net.raw_is_closed(stranger, conn), "{shown}");
        assert_eq!(net.mode(alice), Mode::Wait, "{shown}");
    }
}

/// What a client asked its transport for, with the bytes owned.
#[derive(Debug, PartialEq, Eq)]
enum Asked {
    Connect(ConnId, SocketAddr),
    Transmit(ConnId, Vec<u8>),
    Other,
}

fn drain(client: &mut Client) -> Vec<Asked> {
    let mut asked = Vec::new();
    while let Some(output) = client.poll_output() {
        asked.push(match output {
            Output::Connect { conn, addr, .. } => Asked::Connect(conn, addr),
            Output::Transmit { conn, bytes } => Asked::Transmit(conn, bytes.to_vec()),
            _ => Asked::Other,
        });
    }
    asked
}

fn connects(asked: &[Asked]) -> Vec<ConnId> {
    asked
        .iter()
        .filter_map(|a| match a {
            Asked::Connect(conn, _) => Some(*conn),
            _ => None,
        })
        .collect()
}

#[test]
fn a_turn_held_before_the_chat_opened_goes_out_as_a_write_of_its_own() {
    let now = Instant::now();
    let server: SocketAddr = "10.0.0.1:7070".parse().unwrap();
    let mut client = Client::new(legacy_config("alice", server), now);
    drain(&mut client);
    // The server connection leaves from the chat port, so it starts once that is bound.
    client.handle_listening(now, "0.0.0.0:4000".parse().unwrap());
    let server_conn = connects(&drain(&mut client))[0];
    client.handle_connected(now, server_conn, "10.0.0.2:5000".parse().unwrap());
    client.handle_input(now, ClientInput::Line("/register".into()));
    client.handle_data(
        now,
        server_conn,
        b"REGACK\r\nclientID: alice\r\nIP: 10.0.0.2\r\nPort: 4000\r\n\r\n",
    );
    client.handle_input(now, ClientInput::Line("/bridge".into()));
    client.handle_data(
        now,
        server_conn,
        b"BRIDGEACK\r\nclientID: bob\r\nIP: 10.0.0.3\r\nPort: 2000\r\n\r\n",
    );
    drain(&mut client);
    client.handle_input(now, ClientInput::Line("/chat".into()));
    client.handle_input(now, ClientInput::Line("typed early".into()));
    let chat_conn = connects(&drain(&mut client))[0];
    client.handle_connected(now, chat_conn, "10.0.0.2:5001".parse().unwrap());
    let writes: Vec<Vec<u8>> = drain(&mut client)
        .into_iter()
        .filter_map(|a| match a {
            Asked::Transmit(conn, bytes) if conn == chat_conn => Some(bytes),
            _ => None,
        })
        .collect();
    assert_eq!(
        writes,
        [
            b"CHAT\r\nclientID: alice\r\nIP: 10.0.0.2\r\nPort: 4000\r\n\r\n".to_vec(),
            b"typed early".to_vec()
        ],
        "a course program reads the CHAT alone"
    );
    assert_eq!(client.mode(), Mode::Read);
}

#[test]
fn a_waiting_legacy_client_also_takes_a_version_1_http_chat() {
    let mut net = Net::new(1, Chunking::Whole);
    let server = net.add_default_server();
    let alice = net.add_client(legacy_config("alice", net.addr_of(server, 7070)));
    send_lines(&mut net, alice, &["/register", "/bridge"]);
    assert_eq!(net.mode(alice), Mode::Wait);
    let dave = net.add_raw();
    let alice_addr = net.addr_of(alice, chat_port(&net, alice));
    let conn = net.connect_raw(dave, alice_addr).unwrap();
    net.send_raw(
        dave,
        conn,
        b"CHAT / HTTP/1.1\r\nName: dave\r\nIP: 10.0.0.9\r\nPort: 9\r\n\r\n",
    );
    net.run();
    assert_eq!(net.mode(alice), Mode::Read);
    assert!(
        net.raw_text(dave, conn).starts_with("HTTP/1.1 200 OK\r\n"),
        "{}",
        net.raw_text(dave, conn)
    );
    assert_eq!(not_protected(&net, alice), [Unprotected::Legacy]);
}

#[test]
fn require_encryption_closes_a_course_chat_unanswered() {
    let mut net = Net::new(1, Chunking::Whole);
    let server = net.add_default_server();
    let alice = net.add_client(ClientConfig {
        require_encryption: true,
        ..ClientConfig::new(name("alice"), net.addr_of(server, 7070))
    });
    send_lines(&mut net, alice, &["/register", "/bridge"]);
    let (carol, _) = course_client(&mut net, server, "carol");
    let alice_addr = net.addr_of(alice, chat_port(&net, alice));
    let conn = net.connect_raw(carol, alice_addr).unwrap();
    let chat = format!(
        "CHAT\r\nclientID: carol\r\nIP: {}\r\nPort: 3000\r\n\r\n",
        net.addr_of(carol, 0).ip()
    );
    net.send_raw(carol, conn, chat.as_bytes());
    net.run();
    assert_eq!(
        net.raw_text(carol, conn),
        "",
        "no HTTP answer to a course CHAT"
    );
    assert!(net.raw_is_closed(carol, conn));
    assert_eq!(net.mode(alice), Mode::Wait);
}
