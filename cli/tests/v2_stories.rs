//! Protocol version 2 as people meet it: `bridgechat server` and two or three
//! `bridgechat client` processes over loopback, on both transports. The
//! stranded waiter is told and meets the next peer; a stranger's CHAT is
//! refused while the real peer gets in; `/bridge NAME` meets that person only.

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;

mod common;
use common::{read_message, Proc, WAIT};

fn server(transport: &str) -> (Proc, String) {
    let mut server = Proc::spawn(
        "server",
        &[
            "server",
            "--listen",
            "127.0.0.1:0",
            "--transport",
            transport,
        ],
    );
    let addr = server.listening();
    (server, addr)
}

fn client(transport: &str, name: &str, server: &str) -> (Proc, u16) {
    Proc::client(name, server, transport, &[])
}

fn register(who: &mut Proc) {
    who.send("/register");
    who.expect_mode("REGISTERED");
}

/// `writer` sends `text`; `reader` prints it exactly and the turn passes.
fn turn(writer: &mut Proc, reader: &mut Proc, text: &str) {
    writer.send(text);
    writer.expect_mode("READ MODE");
    reader.expect_exact(&format!("{}: {text}", writer.name));
    reader.expect_mode("WRITE MODE");
}

fn chat(asker: &mut Proc, waiter: &mut Proc) {
    asker.send("/chat");
    asker.expect_mode("WRITE MODE");
    waiter.expect_mode("READ MODE");
    turn(asker, waiter, "hello, it's me");
}

fn stranded_waiter_is_told_and_meets_the_next_peer(transport: &str) {
    let (_server, addr) = server(transport);
    let (mut alice, _) = client(transport, "alice", &addr);
    register(&mut alice);
    alice.send("/bridge");
    alice.expect_mode("WAIT MODE");

    let (mut bob, _) = client(transport, "bob", &addr);
    register(&mut bob);
    bob.send("/bridge");
    bob.expect_mode("READY MODE");
    alice.expect_exact("matched with bob — waiting for bob to connect");
    // Bob leaves before /chat.
    bob.send("/quit");
    bob.exits_cleanly();
    let again = alice.expect("did not come");
    assert!(again.starts_with("bob did not come"), "{again}");
    assert!(again.contains("WAIT MODE: waiting again"), "{again}");

    let (mut bob2, _) = client(transport, "bob", &addr);
    register(&mut bob2);
    bob2.send("/bridge");
    let ready = bob2.expect_mode("READY MODE");
    assert!(ready.contains("alice"), "{ready}");
    alice.expect_exact("matched with bob — waiting for bob to connect");
    chat(&mut bob2, &mut alice);
    turn(&mut alice, &mut bob2, "glad you came");
    bob2.send("/quit");
    bob2.exits_cleanly();
    alice.send("/quit");
    alice.exits_cleanly();
}

fn a_strangers_chat_is_refused_and_the_peer_gets_in(transport: &str) {
    let (_server, addr) = server(transport);
    let (mut alice, alice_port) = client(transport, "alice", &addr);
    register(&mut alice);
    alice.send("/bridge");
    alice.expect_mode("WAIT MODE");
    let (mut bob, _) = client(transport, "bob", &addr);
    register(&mut bob);
    bob.send("/bridge");
    bob.expect_mode("READY MODE");
    alice.expect("matched with bob");

    // A stranger who found alice's port claims to be bob.
    let mut stranger = TcpStream::connect(("127.0.0.1", alice_port)).expect("alice listens");
    stranger.set_read_timeout(Some(WAIT)).unwrap();
    stranger
        .write_all(b"CHAT / HTTP/1.1\r\nName: bob\r\nIP: 127.0.0.1\r\nPort: 9\r\n\r\n")
        .unwrap();
    let answer = String::from_utf8_lossy(&read_message(&mut stranger)).into_owned();
    assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");

    chat(&mut bob, &mut alice);
    bob.send("/quit");
    bob.exits_cleanly();
    alice.send("/quit");
    alice.exits_cleanly();
}

fn named_bridges_meet_and_a_third_takes_neither(transport: &str) {
    let (_server, addr) = server(transport);
    let (mut alice, _) = client(transport, "alice", &addr);
    let (mut bob, _) = client(transport, "bob", &addr);
    let (mut carol, _) = client(transport, "carol", &addr);
    register(&mut alice);
    alice.send("/bridge bob");
    alice.expect_exact("WAIT MODE: waiting for bob...");
    register(&mut carol);
    carol.send("/bridge");
    carol.expect_exact("WAIT MODE: waiting for a peer...");
    register(&mut bob);
    bob.send("/bridge alice");
    let ready = bob.expect_mode("READY MODE");
    assert!(ready.contains("alice"), "{ready}");
    alice.expect_exact("matched with bob — waiting for bob to connect");
    chat(&mut bob, &mut alice);
    // Carol was never handed out: she is still waiting when she leaves.
    carol.send("/quit");
    carol.exits_cleanly();
    let rest = carol.rest_of_output();
    assert!(
        !rest.iter().any(|line| line.contains("matched with")),
        "carol was handed out: {rest:?}"
    );
    bob.send("/quit");
    bob.exits_cleanly();
    alice.send("/quit");
    alice.exits_cleanly();
}

macro_rules! on_each_transport {
    ($($scenario:ident),* $(,)?) => {
        mod on_mio {
            $(#[test] fn $scenario() { super::$scenario("mio") })*
        }
        mod on_std {
            $(#[test] fn $scenario() { super::$scenario("std") })*
        }
    };
}

on_each_transport!(
    stranded_waiter_is_told_and_meets_the_next_peer,
    a_strangers_chat_is_refused_and_the_peer_gets_in,
    named_bridges_meet_and_a_third_takes_neither,
);

#[test]
fn client_help_lists_bridge_name() {
    let output = Command::new(env!("CARGO_BIN_EXE_bridgechat"))
        .args(["client", "--help"])
        .output()
        .expect("run client --help");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("/bridge NAME"), "{text}");
}
