//! The course stand-ins talk to each other as the course's programs do: two
//! per-request clients meet through the reference-like server and chat raw.
//! This holds the stand-ins to the facts of the format, so that tests of
//! bridgechat against them test bridgechat.

mod common;
mod course_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::on_each_transport;
use course_support::{exchange, CourseClient, QuitForm, Received, ReferenceServer, WAIT};

#[test]
fn two_course_clients_meet_through_the_reference_server_and_chat() {
    let server = ReferenceServer::start().unwrap();
    let alice = CourseClient::new("alice", server.addr()).unwrap();
    let bob = CourseClient::new("bob", server.addr()).unwrap();

    let regack = alice.register().unwrap();
    assert_eq!(
        regack,
        format!(
            "REGACK\r\nclientID: alice\r\nIP: 127.0.0.1\r\nPort: {}\r\n\r\n",
            alice.me.port
        ),
        "the reference server echoes the registration without a Status line"
    );
    bob.register().unwrap();

    // The first to bridge waits; the second is handed the first.
    assert_eq!(alice.bridge().unwrap(), None);
    let contact = bob.bridge().unwrap().expect("bob is handed alice");
    assert_eq!(contact, alice.me);

    let mut bob_side = bob.chat(&contact).unwrap();
    let (initiator, mut alice_side) = alice.accept_chat().unwrap();
    assert_eq!(initiator, bob.me, "CHAT names the initiator");

    // The initiator writes first; each turn is one write, read as one message.
    bob_side.send_turn("hi alice").unwrap();
    assert_eq!(
        alice_side.receive_turn().unwrap(),
        Received::Text("hi alice".to_owned())
    );
    alice_side.send_turn("hello bob, héllo").unwrap();
    assert_eq!(
        bob_side.receive_turn().unwrap(),
        Received::Text("hello bob, héllo".to_owned())
    );

    bob_side.quit(QuitForm::Block).unwrap();
    assert_eq!(alice_side.receive_turn().unwrap(), Received::Quit);
    assert_eq!(alice_side.receive_turn().unwrap(), Received::Closed);
}

#[test]
fn a_bare_quit_and_end_of_stream_also_end_a_raw_chat() {
    let server = ReferenceServer::start().unwrap();
    let carol = CourseClient::new("carol", server.addr()).unwrap();
    let dave = CourseClient::new("dave", server.addr()).unwrap();
    carol.register().unwrap();
    dave.register().unwrap();
    assert_eq!(carol.bridge().unwrap(), None);
    let contact = dave.bridge().unwrap().unwrap();

    let mut dave_side = dave.chat(&contact).unwrap();
    let (_, mut carol_side) = carol.accept_chat().unwrap();
    dave_side.send_turn("bye now").unwrap();
    assert_eq!(
        carol_side.receive_turn().unwrap(),
        Received::Text("bye now".to_owned())
    );
    carol_side.quit(QuitForm::Bare).unwrap();
    assert_eq!(dave_side.receive_turn().unwrap(), Received::Quit);

    // A second chat, ended by closing without a quit.
    assert_eq!(carol.bridge().unwrap(), None);
    let contact = dave.bridge().unwrap().unwrap();
    let dave_side = dave.chat(&contact).unwrap();
    let (_, mut carol_side) = carol.accept_chat().unwrap();
    dave_side.close().unwrap();
    assert_eq!(carol_side.receive_turn().unwrap(), Received::Closed);
}

#[test]
fn the_reference_server_never_hands_a_client_itself() {
    let server = ReferenceServer::start().unwrap();
    let alice = CourseClient::new("alice", server.addr()).unwrap();
    alice.register().unwrap();
    assert_eq!(alice.bridge().unwrap(), None);
    assert_eq!(alice.bridge().unwrap(), None, "still nobody but alice");
    let bob = CourseClient::new("bob", server.addr()).unwrap();
    bob.register().unwrap();
    assert_eq!(bob.bridge().unwrap(), Some(alice.me.clone()));
    // Paired once: alice is no longer waiting.
    assert_eq!(bob.bridge().unwrap(), None);
}

#[test]
fn the_reference_server_answers_several_requests_on_one_connection() {
    let server = ReferenceServer::start().unwrap();
    let mut stream = TcpStream::connect_timeout(&server.addr(), WAIT).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut exchange = |request: &str| -> String {
        stream.write_all(request.as_bytes()).unwrap();
        let mut buf = [0; 4096];
        let n = stream.read(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    };
    assert_eq!(
        exchange("REGISTER\r\nclientID: erin\r\nIP: 127.0.0.1\r\nPort: 3000\r\n\r\n"),
        "REGACK\r\nclientID: erin\r\nIP: 127.0.0.1\r\nPort: 3000\r\n\r\n"
    );
    assert_eq!(
        exchange("REGISTER\r\nclientID: frank\r\nIP: 127.0.0.1\r\nPort: 3001\r\n\r\n"),
        "REGACK\r\nclientID: frank\r\nIP: 127.0.0.1\r\nPort: 3001\r\n\r\n"
    );
    assert_eq!(
        exchange("BRIDGE\r\nclientID: erin\r\n\r\n"),
        "BRIDGEACK\r\nclientID: \r\nIP: \r\nPort: \r\n\r\n"
    );
    assert_eq!(
        exchange("BRIDGE\r\nclientID: frank\r\n\r\n"),
        "BRIDGEACK\r\nclientID: erin\r\nIP: 127.0.0.1\r\nPort: 3000\r\n\r\n"
    );
}

#[test]
fn the_stand_in_client_refuses_a_bridgeack_of_another_shape() {
    // A server that adds a header or drops the space after a colon crashes the
    // course clients that parse by position; the stand-in fails the same way.
    for answer in [
        "BRIDGEACK\r\nclientID: bob\r\nIP: 127.0.0.1\r\nPort: 2000\r\nStatus: ok\r\n\r\n",
        "BRIDGEACK\r\nclientID:bob\r\nIP: 127.0.0.1\r\nPort: 2000\r\n\r\n",
        "BRIDGEACK\r\nIP: 127.0.0.1\r\nclientID: bob\r\nPort: 2000\r\n\r\n",
        "BRIDGEACK\r\nclientID: bob\r\nIP: \r\nPort: \r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    ] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buf = [0; 4096];
            let _ = stream.read(&mut buf).unwrap();
            stream.write_all(answer.as_bytes()).unwrap();
        });
        let client = CourseClient::new("alice", addr).unwrap();
        assert!(client.bridge().is_err(), "accepted {answer:?}");
        server.join().unwrap();
    }
}

// ---------------------------------------------------------------------------
// The course programs against `bridgechat server`

on_each_transport!(
    two_course_clients_meet_through_bridgechat_server_and_chat,
    a_course_registration_outlives_its_connection_until_the_ttl,
    course_and_bridgechat_clients_share_one_registry_and_pair,
    garbage_in_the_course_format_is_dropped_and_others_are_served,
);

fn bridgechat_server(transport: &str, extra: &[&str]) -> (common::Proc, SocketAddr) {
    let (server, addr) = common::server(transport, extra);
    (server, addr.parse().expect("a listening address"))
}

fn two_course_clients_meet_through_bridgechat_server_and_chat(transport: &str) {
    let (_server, addr) = bridgechat_server(transport, &[]);
    let alice = CourseClient::new("alice", addr).unwrap();
    let bob = CourseClient::new("bob", addr).unwrap();

    let regack = alice.register().unwrap();
    assert_eq!(
        regack,
        format!(
            "REGACK\r\nclientID: alice\r\nIP: 127.0.0.1\r\nPort: {}\r\nStatus: registered\r\n\r\n",
            alice.me.port
        )
    );
    bob.register().unwrap();
    // Each request was its own connection, closed since: the registrations hold.
    assert_eq!(alice.bridge().unwrap(), None, "nobody waits yet");
    assert_eq!(alice.bridge().unwrap(), None, "never handed itself");
    let contact = bob.bridge().unwrap().expect("bob is handed alice");
    assert_eq!(contact, alice.me);
    assert_eq!(bob.bridge().unwrap(), None, "alice was handed out once");

    let mut bob_side = bob.chat(&contact).unwrap();
    let (initiator, mut alice_side) = alice.accept_chat().unwrap();
    assert_eq!(initiator, bob.me);
    bob_side.send_turn("hi alice").unwrap();
    assert_eq!(
        alice_side.receive_turn().unwrap(),
        Received::Text("hi alice".to_owned())
    );
    alice_side.send_turn("hello bob").unwrap();
    assert_eq!(
        bob_side.receive_turn().unwrap(),
        Received::Text("hello bob".to_owned())
    );
    bob_side.quit(QuitForm::Block).unwrap();
    assert_eq!(alice_side.receive_turn().unwrap(), Received::Quit);
}

fn a_course_registration_outlives_its_connection_until_the_ttl(transport: &str) {
    let (mut server, addr) = bridgechat_server(transport, &["--legacy-ttl", "1"]);
    let alice = CourseClient::new("alice", addr).unwrap();
    alice.register().unwrap();
    assert_eq!(alice.bridge().unwrap(), None, "alice waits");
    server.expect("alice is waiting for a peer");
    // Its TTL ends: the name is free and nobody waits any more.
    server.expect("unregistered alice");
    let bob = CourseClient::new("bob", addr).unwrap();
    bob.register().unwrap();
    assert_eq!(bob.bridge().unwrap(), None, "alice expired with her wait");
    // The same clientID registering again replaces the old registration at once.
    let alice_again = CourseClient::new("alice", addr).unwrap();
    alice_again.register().unwrap();
    alice_again.register().unwrap();
    assert_eq!(alice_again.bridge().unwrap(), Some(bob.me.clone()));
}

fn course_and_bridgechat_clients_share_one_registry_and_pair(transport: &str) {
    let (_server, addr) = bridgechat_server(transport, &[]);
    let alice = CourseClient::new("alice", addr).unwrap();
    alice.register().unwrap();
    assert_eq!(alice.bridge().unwrap(), None);

    let mut http = TcpStream::connect_timeout(&addr, WAIT).unwrap();
    http.set_read_timeout(Some(WAIT)).unwrap();
    // The name is taken, whatever its case.
    http.write_all(b"REGISTER / HTTP/1.1\r\nName: ALICE\r\nIP: 127.0.0.1\r\nPort: 4000\r\nBridgechat: 2\r\nContent-Length: 0\r\n\r\n").unwrap();
    let answer = common::read_message(&mut http);
    assert!(
        answer.starts_with(b"HTTP/1.1 409 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    http.write_all(b"REGISTER / HTTP/1.1\r\nName: bob\r\nIP: 127.0.0.1\r\nPort: 4000\r\nBridgechat: 2\r\nContent-Length: 0\r\n\r\n").unwrap();
    let answer = common::read_message(&mut http);
    assert!(
        answer.starts_with(b"HTTP/1.1 200 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // A course client cannot take bob's name either: dropped unanswered.
    let taken = exchange(
        addr,
        b"REGISTER\r\nclientID: Bob\r\nIP: 127.0.0.1\r\nPort: 5000\r\n\r\n",
    );
    assert_eq!(taken, b"", "no REGACK for a name a bridgechat client holds");

    // The bridgechat asker is handed the course waiter and told its dialect.
    http.write_all(b"BRIDGE / HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    let answer = String::from_utf8(common::read_message(&mut http)).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("Name: alice\r\n"), "{answer}");
    assert!(
        answer.contains(&format!("Port: {}\r\n", alice.me.port)),
        "{answer}"
    );
    assert!(answer.contains("Peer-Version: 1\r\n"), "{answer}");
    assert!(answer.contains("Dialect: course\r\n"), "{answer}");
    assert!(
        !answer.contains("Ticket"),
        "no ticket for a course peer: {answer}"
    );

    // The other way: bob waits, a course asker is handed bob and bob hears MATCHED.
    http.write_all(b"BRIDGE / HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    let answer = String::from_utf8(common::read_message(&mut http)).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(!answer.contains("Name:"), "bob waits: {answer}");
    let carol = CourseClient::new("carol", addr).unwrap();
    carol.register().unwrap();
    let bob = carol.bridge().unwrap().expect("carol is handed bob");
    assert_eq!((bob.id.as_str(), bob.port), ("bob", 4000));
    let matched = String::from_utf8(common::read_message(&mut http)).unwrap();
    assert!(matched.starts_with("MATCHED / HTTP/1.1\r\n"), "{matched}");
    assert!(matched.contains("Name: carol\r\n"), "{matched}");
    assert!(matched.contains("Dialect: course\r\n"), "{matched}");
}

fn garbage_in_the_course_format_is_dropped_and_others_are_served(transport: &str) {
    let (mut server, addr) = bridgechat_server(transport, &["--head-timeout", "1"]);
    for garbage in [
        &b"REGISTER\r\nclientID: zo\xc3\xab\r\nIP: 127.0.0.1\r\nPort: 3000\r\n\r\n"[..],
        b"REGISTER\r\nclientID: dan\r\nIP: nowhere\r\nPort: 3000\r\n\r\n",
        b"BRIDGE\r\nclientID: nobody\r\n\r\n",
        b"CHAT\r\nType: message\r\nMessage: hi\r\n\r\n",
        b"QUIT\r\n\x00\x01\r\n\r\n",
        b"REGACK\r\nno colon here\r\n\r\n",
    ] {
        let answer = exchange(addr, garbage);
        assert_eq!(
            answer,
            b"",
            "answered {:?}",
            String::from_utf8_lossy(garbage)
        );
    }
    let too_long = [b"BRIDGE\r\nclientID: ".as_slice(), &[b'a'; 9000]].concat();
    assert_eq!(exchange(addr, &too_long), b"");
    // A course head that never ends is dropped after the head timeout.
    let mut slow = TcpStream::connect_timeout(&addr, WAIT).unwrap();
    slow.set_read_timeout(Some(WAIT)).unwrap();
    slow.write_all(b"REGISTER\r\nclientID: slow\r\n").unwrap();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    assert_eq!(rest, b"", "nothing but the close");
    server.expect("closed after 408");

    // Everyone else is served as before, both formats.
    let alice = CourseClient::new("alice", addr).unwrap();
    alice.register().unwrap();
    assert_eq!(alice.bridge().unwrap(), None);
    let mut http = TcpStream::connect_timeout(&addr, WAIT).unwrap();
    http.set_read_timeout(Some(WAIT)).unwrap();
    http.write_all(b"GARBAGE\x00\r\n\r\n").unwrap();
    let answer = common::read_message(&mut http);
    assert!(
        answer.starts_with(b"HTTP/1.1 400 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let bob = CourseClient::new("bob", addr).unwrap();
    bob.register().unwrap();
    assert_eq!(bob.bridge().unwrap(), Some(alice.me.clone()));
}
