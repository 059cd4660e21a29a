//! The course stand-ins talk to each other as the course's programs do: two
//! per-request clients meet through the reference-like server and chat raw.
//! This holds the stand-ins to the facts of the format, so that tests of
//! bridgechat against them test bridgechat.

mod course_support;

use std::io::{Read, Write};
use std::net::TcpStream;

use course_support::{CourseClient, QuitForm, Received, ReferenceServer, WAIT};

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
