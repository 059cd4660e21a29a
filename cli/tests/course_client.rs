//! `bridgechat client` with the class's programs: `--legacy` against a
//! reference-like course server and raw-chat peers, two `--legacy` clients
//! through `bridgechat server`, a plain `bridgechat client` chatting with a
//! course client it was paired with (`Dialect: course`), and garbage on a
//! `--legacy` client's chat port.

mod common;
mod course_support;

use std::net::SocketAddr;

use common::{on_each_transport, Proc};
use course_support::{exchange, CourseClient, QuitForm, RawChat, Received, ReferenceServer, WAIT};

on_each_transport!(
    a_legacy_client_registers_bridges_and_chats_through_a_reference_server,
    a_legacy_client_waits_and_a_course_peer_chats_with_it,
    two_legacy_clients_chat_through_bridgechat_server,
    a_course_client_and_a_bridgechat_client_meet_and_chat_both_ways,
    garbage_on_a_legacy_clients_chat_port_is_closed_unanswered,
    legacy_refuses_what_the_course_format_cannot_do,
);

fn client(transport: &str, name: &str, server: SocketAddr, extra: &[&str]) -> Proc {
    Proc::client(name, &server.to_string(), transport, extra).0
}

fn legacy(transport: &str, name: &str, server: SocketAddr) -> Proc {
    client(transport, name, server, &["--legacy"])
}

fn bridgechat_server(transport: &str) -> (Proc, SocketAddr) {
    let (server, addr) = common::server(transport, &[]);
    (server, addr.parse().expect("a listening address"))
}

/// `who` registers and bridges; returns the mode line the answer led to.
fn register_and_bridge(who: &mut Proc, mode: &str) -> String {
    who.send("/register");
    who.expect_mode("REGISTERED");
    who.send("/bridge");
    who.expect_mode(mode)
}

/// The bridgechat client writes a turn; the raw peer reads it as one message.
fn turn_to_raw(writer: &mut Proc, raw: &mut RawChat, text: &str) {
    writer.send(text);
    writer.expect_mode("READ MODE");
    assert_eq!(raw.receive_turn().unwrap(), Received::Text(text.to_owned()));
}

/// The raw peer writes a turn; the bridgechat client shows it and may write.
fn turn_from_raw(raw: &mut RawChat, from: &str, reader: &mut Proc, text: &str) {
    raw.send_turn(text).unwrap();
    reader.expect_exact(&format!("{from}: {text}"));
    reader.expect_mode("WRITE MODE");
}

fn a_legacy_client_registers_bridges_and_chats_through_a_reference_server(transport: &str) {
    let server = ReferenceServer::start().unwrap();
    let bob = CourseClient::new("bob", server.addr()).unwrap();
    bob.register().unwrap();
    assert_eq!(bob.bridge().unwrap(), None, "bob waits");

    let mut alice = legacy(transport, "alice", server.addr());
    let ready = register_and_bridge(&mut alice, "READY MODE");
    assert!(ready.contains("bob"), "{ready}");
    alice.send("/chat");
    alice.expect("not encrypted");
    alice.expect_mode("WRITE MODE");
    let (initiator, mut bob_side) = bob.accept_chat().unwrap();
    assert_eq!(initiator.id, "alice", "the CHAT names alice: {initiator:?}");
    assert_eq!(initiator.ip, "127.0.0.1");

    turn_to_raw(&mut alice, &mut bob_side, "hi bob, héllo");
    turn_from_raw(&mut bob_side, "bob", &mut alice, "hello alice");
    turn_to_raw(&mut alice, &mut bob_side, "  spaces kept: yes  ");
    turn_from_raw(&mut bob_side, "bob", &mut alice, "bye");

    alice.send("/quit");
    assert_eq!(bob_side.receive_turn().unwrap(), Received::Quit);
    assert_eq!(bob_side.receive_turn().unwrap(), Received::Closed);
    alice.exits_cleanly();
}

fn a_legacy_client_waits_and_a_course_peer_chats_with_it(transport: &str) {
    let server = ReferenceServer::start().unwrap();
    let mut alice = legacy(transport, "alice", server.addr());
    register_and_bridge(&mut alice, "WAIT MODE");

    let carol = CourseClient::new("carol", server.addr()).unwrap();
    carol.register().unwrap();
    let contact = carol.bridge().unwrap().expect("carol is handed alice");
    assert_eq!(contact.id, "alice");
    let mut carol_side = carol.chat(&contact).unwrap();
    alice.expect("not encrypted");
    alice.expect_mode("READ MODE");
    turn_from_raw(&mut carol_side, "carol", &mut alice, "hi alice");
    turn_to_raw(&mut alice, &mut carol_side, "hi carol");
    // Some course programs quit with a bare QUIT.
    carol_side.quit(QuitForm::Bare).unwrap();
    alice.expect("carol left");
    alice.expect_mode("REGISTERED");

    // Again, and the peer just closes: end of stream ends the chat too.
    alice.send("/bridge");
    alice.expect_mode("WAIT MODE");
    let contact = carol
        .bridge()
        .unwrap()
        .expect("carol is handed alice again");
    let mut carol_side = carol.chat(&contact).unwrap();
    alice.expect_mode("READ MODE");
    turn_from_raw(&mut carol_side, "carol", &mut alice, "one more");
    carol_side.close().unwrap();
    alice.expect("carol left");
    alice.expect_mode("REGISTERED");
    alice.send("/quit");
    alice.exits_cleanly();
}

fn two_legacy_clients_chat_through_bridgechat_server(transport: &str) {
    let (mut server, addr) = bridgechat_server(transport);
    let mut alice = legacy(transport, "alice", addr);
    let mut bob = legacy(transport, "bob", addr);
    register_and_bridge(&mut alice, "WAIT MODE");
    // The server sees course requests, not HTTP.
    server.expect("alice is waiting for a peer");
    let ready = register_and_bridge(&mut bob, "READY MODE");
    assert!(ready.contains("alice"), "{ready}");
    bob.send("/chat");
    bob.expect("not encrypted");
    bob.expect_mode("WRITE MODE");
    alice.expect("not encrypted");
    alice.expect_mode("READ MODE");
    for (i, text) in ["hi alice", "hi bob", "how are you?", "fine, bye"]
        .iter()
        .enumerate()
    {
        let (writer, reader) = if i % 2 == 0 {
            (&mut bob, &mut alice)
        } else {
            (&mut alice, &mut bob)
        };
        writer.send(text);
        writer.expect_mode("READ MODE");
        reader.expect_exact(&format!("{}: {text}", writer.name));
        reader.expect_mode("WRITE MODE");
    }
    alice.send("/quit");
    bob.expect("alice left");
    bob.expect_mode("REGISTERED");
    alice.exits_cleanly();
    bob.send("/quit");
    bob.exits_cleanly();
}

fn a_course_client_and_a_bridgechat_client_meet_and_chat_both_ways(transport: &str) {
    let (_server, addr) = bridgechat_server(transport);

    // The course client waits; the bridgechat client (no --legacy) is told its
    // dialect and speaks the course format to it.
    let carol = CourseClient::new("carol", addr).unwrap();
    carol.register().unwrap();
    assert_eq!(carol.bridge().unwrap(), None);
    let mut bob = client(transport, "bob", addr, &[]);
    let ready = register_and_bridge(&mut bob, "READY MODE");
    assert!(ready.contains("carol"), "{ready}");
    bob.send("/chat");
    bob.expect("not encrypted: the peer speaks the course format");
    bob.expect_mode("WRITE MODE");
    let (initiator, mut carol_side) = carol.accept_chat().unwrap();
    assert_eq!(initiator.id, "bob");
    turn_to_raw(&mut bob, &mut carol_side, "hi carol");
    turn_from_raw(&mut carol_side, "carol", &mut bob, "hi bob");
    bob.send("/quit");
    assert_eq!(carol_side.receive_turn().unwrap(), Received::Quit);
    bob.exits_cleanly();

    // The bridgechat client waits; the course client is handed it and sends a
    // course CHAT, which the bridgechat client takes on its chat port.
    let mut dave = client(transport, "dave", addr, &[]);
    register_and_bridge(&mut dave, "WAIT MODE");
    let erin = CourseClient::new("erin", addr).unwrap();
    erin.register().unwrap();
    let contact = erin.bridge().unwrap().expect("erin is handed dave");
    assert_eq!(contact.id, "dave");
    let mut erin_side = erin.chat(&contact).unwrap();
    dave.expect("not encrypted: the peer speaks the course format");
    dave.expect_mode("READ MODE");
    turn_from_raw(&mut erin_side, "erin", &mut dave, "hello dave");
    turn_to_raw(&mut dave, &mut erin_side, "hello erin");
    erin_side.quit(QuitForm::Block).unwrap();
    dave.expect("erin left");
    dave.expect_mode("REGISTERED");
    dave.send("/quit");
    dave.exits_cleanly();
}

fn garbage_on_a_legacy_clients_chat_port_is_closed_unanswered(transport: &str) {
    let (_server, addr) = bridgechat_server(transport);
    let (mut alice, port) = Proc::client("alice", &addr.to_string(), transport, &["--legacy"]);
    register_and_bridge(&mut alice, "WAIT MODE");
    let chat_port: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for garbage in [
        &b"REGISTER\r\nclientID: mallory\r\nIP: 127.0.0.1\r\nPort: 3000\r\n\r\n"[..],
        b"CHAT\r\nclientID: zo\xc3\xab\r\nIP: 127.0.0.1\r\nPort: 3000\r\n\r\n",
        b"CHAT\r\nclientID: mallory\r\nIP: nowhere\r\nPort: 3000\r\n\r\n",
        b"CHAT\r\n\x00\x01\r\n\r\n",
        b"QUIT\r\n\r\n\r\n",
        b"CHAT\r\nType: message\r\nMessage: hi\r\n\r\n",
    ] {
        let answer = exchange(chat_port, garbage);
        assert_eq!(
            answer,
            b"",
            "answered {:?}",
            String::from_utf8_lossy(garbage)
        );
    }
    let too_long = [b"CHAT\r\nclientID: ".as_slice(), &[b'a'; 9000]].concat();
    assert_eq!(exchange(chat_port, &too_long), b"");

    // Still waiting, and a real course peer gets in.
    let frank = CourseClient::new("frank", addr).unwrap();
    frank.register().unwrap();
    let contact = frank.bridge().unwrap().expect("frank is handed alice");
    let mut frank_side = frank.chat(&contact).unwrap();
    alice.expect_mode("READ MODE");
    turn_from_raw(&mut frank_side, "frank", &mut alice, "it is me");
    alice.send("/quit");
    assert_eq!(frank_side.receive_turn().unwrap(), Received::Quit);
    alice.exits_cleanly();
}

fn legacy_refuses_what_the_course_format_cannot_do(transport: &str) {
    let (_server, addr) = bridgechat_server(transport);
    let mut both = Proc::spawn(
        "both",
        &[
            "client",
            "--name",
            "alice",
            "--server",
            &addr.to_string(),
            "--transport",
            transport,
            "--legacy",
            "--require-encryption",
        ],
    );
    both.expect_err("cannot be used with");
    assert!(!both.exit_within(WAIT).success());

    let mut alice = legacy(transport, "alice", addr);
    alice.send("/register");
    alice.expect_mode("REGISTERED");
    alice.send("/bridge bob");
    alice.expect_err("the course format has no /bridge NAME");
    alice.send("/bridge");
    alice.expect_mode("WAIT MODE");
    alice.send("/quit");
    alice.exits_cleanly();
}
