//! The relay of `bridgechat server` on loopback, through raw sockets: two v2
//! clients make a real match, two more sockets join its relay with the ticket,
//! and bytes cross verbatim. Every wait is bounded by `WAIT`.

use std::io::{Read, Write};
use std::net::TcpStream;

mod common;
use common::{on_each_transport, read_message, server, WAIT};

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

fn connect(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("set timeout");
    stream
}

/// Sends `request` and reads one message back, as text.
fn ask(stream: &mut TcpStream, request: &str) -> String {
    stream.write_all(request.as_bytes()).expect("write");
    String::from_utf8_lossy(&read_message(stream)).into_owned()
}

fn register_v2(addr: &str, name: &str, port: u16) -> TcpStream {
    let mut stream = connect(addr);
    let answer = ask(
        &mut stream,
        &format!(
            "REGISTER / HTTP/1.1\r\nName: {name}\r\nIP: 127.0.0.1\r\nPort: {port}\r\nBridgechat: 2\r\n\r\n"
        ),
    );
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    stream
}

fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message.split("\r\n").find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

fn relay(ticket: &str) -> String {
    format!("RELAY / HTTP/1.1\r\nTicket: {ticket}\r\nContent-Length: 0\r\n\r\n")
}

fn read_exactly(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut bytes = vec![0; n];
    stream.read_exact(&mut bytes).expect("relayed bytes");
    bytes
}

fn two_sockets_relay_a_real_match(transport: &str) {
    let (mut server, addr) = server(transport, &[]);
    let mut alice = register_v2(&addr, "alice", 9001);
    assert_eq!(
        ask(&mut alice, "BRIDGE / HTTP/1.1\r\n\r\n").as_bytes(),
        OK,
        "alice waits"
    );
    let mut bob = register_v2(&addr, "bob", 9002);
    let paired = ask(&mut bob, "BRIDGE / HTTP/1.1\r\n\r\n");
    let ticket = header(&paired, "Ticket").expect("a ticket").to_owned();
    let matched = String::from_utf8_lossy(&read_message(&mut alice)).into_owned();
    assert!(matched.starts_with("MATCHED / HTTP/1.1\r\n"), "{matched}");
    assert_eq!(header(&matched, "Ticket"), Some(ticket.as_str()));

    // Bob gives up on a direct path and comes to the relay, CHAT pipelined behind.
    let mut bob_relay = connect(&addr);
    let chat = b"CHAT / HTTP/1.1\r\nName: bob\r\n\r\n";
    let mut first = relay(&ticket).into_bytes();
    first.extend_from_slice(chat);
    bob_relay.write_all(&first).expect("write");
    let told = String::from_utf8_lossy(&read_message(&mut alice)).into_owned();
    assert!(told.starts_with("RELAY / HTTP/1.1\r\n"), "{told}");
    assert_eq!(header(&told, "Ticket"), Some(ticket.as_str()));

    let mut alice_relay = connect(&addr);
    alice_relay
        .write_all(relay(&ticket).as_bytes())
        .expect("write");
    assert_eq!(read_exactly(&mut bob_relay, OK.len()), OK);
    assert_eq!(read_exactly(&mut alice_relay, OK.len()), OK);
    assert_eq!(read_exactly(&mut alice_relay, chat.len()), chat);
    server.expect("relaying between");

    let binary: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    alice_relay.write_all(&binary).expect("write");
    assert_eq!(read_exactly(&mut bob_relay, binary.len()), binary);
    bob_relay
        .write_all(b"QUIT / HTTP/1.1\r\n\r\n")
        .expect("write");
    assert_eq!(
        read_exactly(&mut alice_relay, 19),
        b"QUIT / HTTP/1.1\r\n\r\n"
    );

    // The server connections may go; the relay stays until one side closes.
    drop(alice);
    drop(bob);
    server.expect("unregistered bob");
    alice_relay.write_all(b"still here").expect("write");
    assert_eq!(read_exactly(&mut bob_relay, 10), b"still here");
    drop(bob_relay);
    let mut rest = Vec::new();
    alice_relay
        .read_to_end(&mut rest)
        .expect("the other side is closed, not left hanging");
    assert!(rest.is_empty());
    server.expect("relay between");
}

/// A real match between two fresh v2 clients named `waiter` and `asker`;
/// returns their server connections (keep them open) and the ticket.
fn matched(addr: &str, waiter: &str, asker: &str) -> ([TcpStream; 2], String) {
    let mut waiting = register_v2(addr, waiter, 9001);
    assert_eq!(
        ask(&mut waiting, "BRIDGE / HTTP/1.1\r\n\r\n").as_bytes(),
        OK
    );
    let mut asking = register_v2(addr, asker, 9002);
    let paired = ask(&mut asking, "BRIDGE / HTTP/1.1\r\n\r\n");
    let ticket = header(&paired, "Ticket").expect("a ticket").to_owned();
    ([waiting, asking], ticket)
}

/// Both sides of `ticket`'s relay, joined and answered.
fn joined(addr: &str, ticket: &str) -> (TcpStream, TcpStream) {
    let mut one = connect(addr);
    one.write_all(relay(ticket).as_bytes()).expect("write");
    let mut other = connect(addr);
    other.write_all(relay(ticket).as_bytes()).expect("write");
    assert_eq!(read_exactly(&mut one, OK.len()), OK);
    assert_eq!(read_exactly(&mut other, OK.len()), OK);
    (one, other)
}

fn relay_limits_hold_on_real_sockets(transport: &str) {
    let (mut server, addr) = server(transport, &["--max-relays", "1", "--relay-budget", "1000"]);
    let (_first_clients, first) = matched(&addr, "alice", "bob");
    let (mut a, mut b) = joined(&addr, &first);

    // The one relay is taken: another match's RELAY is turned away, and says when to retry.
    let (_second_clients, second) = matched(&addr, "carol", "dave");
    let mut turned_away = connect(&addr);
    let answer = ask(&mut turned_away, &relay(&second));
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{answer}"
    );
    assert!(header(&answer, "Retry-After").is_some(), "{answer}");
    assert!(answer.ends_with("relay full"), "{answer}");

    // Within the budget bytes cross; past it the server ends the relay on both sides.
    a.write_all(&[b'x'; 600]).expect("write");
    assert_eq!(read_exactly(&mut b, 600), vec![b'x'; 600]);
    a.write_all(&[b'y'; 600]).expect("write");
    let mut relayed = 600;
    for side in [&mut a, &mut b] {
        let mut rest = Vec::new();
        side.read_to_end(&mut rest)
            .expect("closed, not left hanging");
        relayed += rest.len();
    }
    assert!(
        relayed <= 1000,
        "{relayed} bytes relayed on a budget of 1000"
    );
    server.expect("budget");

    // The slot is free again: the second match's relay now starts.
    let (mut c, mut d) = joined(&addr, &second);
    c.write_all(b"hello").expect("write");
    assert_eq!(read_exactly(&mut d, 5), b"hello");
}

fn a_server_without_relay_answers_503(transport: &str) {
    let (_server, addr) = server(transport, &["--no-relay"]);
    let mut stream = connect(&addr);
    let answer = ask(&mut stream, &relay(&"0".repeat(32)));
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{answer}"
    );
    assert!(answer.ends_with("this server does not relay"), "{answer}");
}

on_each_transport!(
    two_sockets_relay_a_real_match,
    relay_limits_hold_on_real_sockets,
    a_server_without_relay_answers_503,
);
