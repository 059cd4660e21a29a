//! End-to-end encryption of version 2 chats, in memory: the handshake on CHAT
//! and its 200, equal safety codes, strangers without the ticket, frames that
//! were tampered with, replayed, reordered or cut, plain text with a version 1
//! peer, and `require_encryption`. Real servers and clients; a raw peer plays
//! the asker when a test must write frames by hand, with a scripted server
//! whose MATCHED hands out a ticket the test knows.

mod support;

use bridgechat_core::client::{ClientConfig, ClientEvent, Mode, Unprotected, SAFETY_CODE_HELP};
use bridgechat_core::codec::{self, Noise, Ticket};
use bridgechat_core::secure::{self, FrameKind, Initiator};
use bridgechat_core::ConnId;
use support::*;

const CHUNKINGS: [(Chunking, u64); 4] = [
    (Chunking::Whole, 1),
    (Chunking::OneByte, 1),
    (Chunking::Random, 2),
    (Chunking::Random, 3),
];

const TICKET: &str = "5f0c30313233343536373839abcdef00";

/// The line a receiver shows, and sends as `Reason`, for a frame that does not open.
const BAD_FRAME: &str =
    "encrypted frame does not verify (tampered, replayed, reordered or truncated)";

fn send_lines(net: &mut Net, node: NodeId, lines: &[&str]) {
    for line in lines {
        net.line(node, line);
    }
    net.run();
}

fn codes(net: &Net, node: NodeId) -> Vec<String> {
    net.client_events(node)
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Encrypted { safety_code, .. } => Some(safety_code.clone()),
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

fn lost(net: &Net, node: NodeId) -> Vec<String> {
    net.client_events(node)
        .iter()
        .filter_map(|e| match e {
            ClientEvent::PeerLost { reason, .. } => Some(reason.to_string()),
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

fn not_encrypted(net: &Net, node: NodeId) -> Vec<Unprotected> {
    net.client_events(node)
        .iter()
        .filter_map(|e| match e {
            ClientEvent::NotProtected { why, .. } => Some(*why),
            _ => None,
        })
        .collect()
}

fn chat_addr(net: &Net, node: NodeId) -> std::net::SocketAddr {
    let port = net
        .client_events(node)
        .iter()
        .find_map(|e| match e {
            ClientEvent::Listening(addr) => Some(addr.port()),
            _ => None,
        })
        .expect("the client listens");
    net.addr_of(node, port)
}

fn is_safety_code(code: &str) -> bool {
    let b = code.as_bytes();
    b.len() == 9 && b[4] == b' ' && b.iter().filter(|c| c.is_ascii_digit()).count() == 8
}

#[test]
fn both_sides_show_the_same_safety_code_and_the_chat_carries_turns() {
    for (chunking, seed) in CHUNKINGS {
        let mut net = Net::new(seed, chunking);
        let server = net.add_default_server();
        let mut config = ClientConfig::new(name("alice"), net.addr_of(server, 7070));
        config.seed = [1; 32];
        let alice = net.add_client(config);
        let mut config = ClientConfig::new(name("bob"), net.addr_of(server, 7070));
        config.seed = [2; 32];
        let bob = net.add_client(config);
        send_lines(&mut net, alice, &["/register", "/bridge"]);
        send_lines(&mut net, bob, &["/register", "/bridge", "/chat"]);
        assert_eq!(net.mode(bob), Mode::Write, "{chunking:?}");
        let (a, b) = (codes(&net, alice), codes(&net, bob));
        assert_eq!(a.len(), 1, "{chunking:?}");
        assert!(is_safety_code(&a[0]), "{a:?}");
        assert_eq!(a, b, "{chunking:?}");
        assert!(not_encrypted(&net, alice).is_empty());
        send_lines(&mut net, bob, &["hi alice"]);
        send_lines(&mut net, alice, &["hi bob, line one\nline two"]);
        assert_eq!(received(&net, alice), ["hi alice"]);
        assert_eq!(received(&net, bob), ["hi bob, line one\nline two"]);
        // What the code is for is said once.
        let help = |node| {
            net.client_events(node)
                .iter()
                .filter(|e| matches!(e, ClientEvent::Info(t) if t == SAFETY_CODE_HELP))
                .count()
        };
        assert_eq!((help(alice), help(bob)), (1, 1));
        send_lines(&mut net, bob, &["/quit"]);
        assert_eq!(net.mode(alice), Mode::Registered);
        assert!(lost(&net, alice).is_empty(), "{:?}", lost(&net, alice));
    }
}

/// A waiting alice behind a scripted v2 server that matched her with bob
/// under `TICKET`. Returns the net, alice, and a raw node to play peers.
fn matched_alice(chunking: Chunking, seed: u64) -> (Net, NodeId, NodeId) {
    let mut net = Net::new(seed, chunking);
    let (fake, addr) = net.add_raw_listener(7070);
    let alice = net.add_client(ClientConfig::new(name("alice"), addr));
    let conn = net.raw(fake).accepted[0];
    send_lines(&mut net, alice, &["/register"]);
    let ip = net.nodes[alice.0].ip.to_string();
    let port = chat_addr(&net, alice).port();
    let registered = format!(
        "HTTP/1.1 200 OK\r\nName: alice\r\nIP: {ip}\r\nPort: {port}\r\nBridgechat: 2\r\nObserved-IP: 203.0.113.9\r\nObserved-Port: 40404\r\nContent-Length: 0\r\n\r\n"
    );
    net.send_raw(fake, conn, registered.as_bytes());
    net.run();
    send_lines(&mut net, alice, &["/bridge"]);
    net.send_raw(fake, conn, wire::ok().as_bytes());
    let matched = format!(
        "MATCHED / HTTP/1.1\r\nName: bob\r\nIP: 127.0.0.9\r\nPort: 9009\r\nPeer-Version: 2\r\nObserved-IP: 203.0.113.7\r\nObserved-Port: 51234\r\nTicket: {TICKET}\r\nContent-Length: 0\r\n\r\n"
    );
    net.send_raw(fake, conn, matched.as_bytes());
    net.run();
    assert_eq!(net.mode(alice), Mode::Wait);
    let peer = net.add_raw();
    (net, alice, peer)
}

/// A raw asker's CHAT under `ticket`: the wire bytes and its initiator.
fn hello(ticket: &str, seed: u8) -> (Vec<u8>, Initiator) {
    let ticket = Ticket::parse(ticket.as_bytes()).unwrap();
    let (initiator, first) = Initiator::new(&ticket.to_bytes(), [seed; secure::SEED_LEN]);
    let bob =
        bridgechat_core::contact::Contact::new(name("bob"), "127.0.0.9".parse().unwrap(), 9009)
            .unwrap();
    let mut out = Vec::new();
    let first = Noise(first.try_into().unwrap());
    codec::write_chat_v2(&mut out, &bob, None, Some(&first));
    (out, initiator)
}

/// A raw bob completes the handshake with alice; returns his connection and session.
fn handshake(net: &mut Net, alice: NodeId, bob: NodeId) -> (ConnId, secure::Session) {
    let conn = net.connect_raw(bob, chat_addr(net, alice)).unwrap();
    let (chat, initiator) = hello(TICKET, 7);
    net.send_raw(bob, conn, &chat);
    net.run();
    let answers = responses(&net.raw(bob).received[&conn]);
    assert_eq!(answers.len(), 1, "{}", net.raw_text(bob, conn));
    assert!(answers[0].status.is_success());
    let reply = answers[0].noise.expect("the 200 carries the reply");
    let session = initiator.finish(&reply.0).expect("alice holds the ticket");
    (conn, session)
}

fn sealed_message(frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    codec::write_sealed_message(&mut out, frame);
    out
}

#[test]
fn a_stranger_without_the_ticket_gets_403_and_the_real_peer_still_gets_in() {
    for (chunking, seed) in CHUNKINGS {
        let (mut net, alice, raw) = matched_alice(chunking, seed);
        let stranger = net.connect_raw(raw, chat_addr(&net, alice)).unwrap();
        let (chat, _) = hello("00000000000000000000000000000001", 3);
        net.send_raw(raw, stranger, &chat);
        net.run();
        let text = net.raw_text(raw, stranger);
        assert!(text.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{text}");
        assert!(text.contains("wrong ticket"), "{text}");
        assert!(net.raw_is_closed(raw, stranger) || text.contains("Connection: close"));
        assert_eq!(net.mode(alice), Mode::Wait);
        assert!(codes(&net, alice).is_empty());

        let (conn, mut session) = handshake(&mut net, alice, raw);
        assert_eq!(net.mode(alice), Mode::Read);
        assert_eq!(codes(&net, alice), [session.safety_code().to_owned()]);
        // The ticket never crossed between the peers, in either direction.
        assert!(!net.raw_text(raw, conn).contains(TICKET));
        let frame = session.seal(FrameKind::Message, b"it is me").unwrap();
        net.send_raw(raw, conn, &sealed_message(&frame));
        net.run();
        assert_eq!(received(&net, alice), ["it is me"]);
        // Alice's answer is ciphertext that opens to what she typed.
        send_lines(&mut net, alice, &["welcome"]);
        let all = net.raw(raw).received[&conn].clone();
        let at = all.windows(7).position(|w| w == b"MESSAGE").unwrap();
        let mut decoder = bridgechat_core::Decoder::default();
        let mut input = &all[at..];
        let Ok(Some(codec::Request::Message(body))) = decoder.decode_request(&mut input) else {
            panic!("a MESSAGE");
        };
        assert!(!all.windows(7).any(|w| w == b"welcome"));
        assert_eq!(session.open(FrameKind::Message, &body).unwrap(), b"welcome");
    }
}

/// Each attack on bob's frames ends alice's chat with the reason shown, and
/// bob is sent a plain QUIT with it before the connection closes.
#[test]
fn tampered_replayed_reordered_or_cut_frames_end_the_chat_on_both_sides() {
    type Attack = fn(&mut secure::Session) -> Vec<Vec<u8>>;
    let attacks: [(&str, Attack); 5] = [
        ("tampered", |s| {
            let mut frame = s.seal(FrameKind::Message, b"hello").unwrap();
            frame[2] ^= 1;
            vec![sealed_message(&frame)]
        }),
        ("replayed", |s| {
            let frame = s.seal(FrameKind::Message, b"hello").unwrap();
            // Between the two, alice answers: the replay comes in bob's turn.
            vec![sealed_message(&frame), Vec::new(), sealed_message(&frame)]
        }),
        ("reordered", |s| {
            let first = s.seal(FrameKind::Message, b"one").unwrap();
            let second = s.seal(FrameKind::Message, b"two").unwrap();
            vec![sealed_message(&second), sealed_message(&first)]
        }),
        ("truncated", |s| {
            let frame = s.seal(FrameKind::Message, b"hello").unwrap();
            vec![sealed_message(&frame[..frame.len() - 1])]
        }),
        ("a quit frame in a MESSAGE", |s| {
            let frame = s.seal(FrameKind::Quit, b"").unwrap();
            vec![sealed_message(&frame)]
        }),
    ];
    for (what, attack) in attacks {
        for (chunking, seed) in CHUNKINGS {
            let (mut net, alice, bob) = matched_alice(chunking, seed);
            let (conn, mut session) = handshake(&mut net, alice, bob);
            let before = net.raw(bob).received[&conn].len();
            for bytes in attack(&mut session) {
                if bytes.is_empty() {
                    send_lines(&mut net, alice, &["your turn"]);
                } else {
                    net.send_raw(bob, conn, &bytes);
                    net.run();
                }
            }
            let shown = lost(&net, alice);
            assert_eq!(shown.len(), 1, "{what} {chunking:?}: {shown:?}");
            assert!(
                shown[0].contains("does not verify") || shown[0].contains("not the request"),
                "{what}: {shown:?}"
            );
            assert!(
                received(&net, alice).iter().all(|t| t == "hello"),
                "{what}: nothing undecryptable is shown"
            );
            assert_eq!(net.mode(alice), Mode::Registered, "{what}");
            let told =
                String::from_utf8_lossy(&net.raw(bob).received[&conn][before..]).into_owned();
            assert!(
                told.contains("QUIT / HTTP/1.1\r\nReason: "),
                "{what}: {told}"
            );
            assert!(net.raw_is_closed(bob, conn), "{what}");
        }
    }
}

#[test]
fn the_peer_that_could_not_open_our_frame_ends_the_chat_with_its_reason() {
    let (mut net, alice, bob) = matched_alice(Chunking::Random, 4);
    let (conn, mut session) = handshake(&mut net, alice, bob);
    let frame = session.seal(FrameKind::Message, b"hello").unwrap();
    net.send_raw(bob, conn, &sealed_message(&frame));
    net.run();
    send_lines(&mut net, alice, &["answer"]);
    let mut refusal = Vec::new();
    codec::write_quit_with(&mut refusal, b"", Some(BAD_FRAME));
    net.send_raw(bob, conn, &refusal);
    net.run();
    assert_eq!(
        lost(&net, alice),
        [format!("the peer refused our encrypted frame: {BAD_FRAME}")]
    );
    assert_eq!(net.mode(alice), Mode::Registered);
}

#[test]
fn a_sealed_quit_ends_the_chat_as_the_peer_leaving() {
    let (mut net, alice, bob) = matched_alice(Chunking::OneByte, 1);
    let (conn, mut session) = handshake(&mut net, alice, bob);
    let frame = session.seal(FrameKind::Quit, b"").unwrap();
    let mut quit = Vec::new();
    codec::write_quit_with(&mut quit, &frame, None);
    net.send_raw(bob, conn, &quit);
    net.run();
    assert!(lost(&net, alice).is_empty());
    assert!(net
        .client_events(alice)
        .iter()
        .any(|e| matches!(e, ClientEvent::PeerLeft { .. })));
    // An unsealed QUIT in an encrypted chat is not taken for the peer leaving.
    let (mut net, alice, bob) = matched_alice(Chunking::Whole, 1);
    let (conn, _) = handshake(&mut net, alice, bob);
    net.send_raw(bob, conn, b"QUIT / HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    net.run();
    assert_eq!(lost(&net, alice), [BAD_FRAME]);
}

fn v1_client(net: &mut Net, who: &str, server: NodeId) -> NodeId {
    let mut config = ClientConfig::new(name(who), net.addr_of(server, 7070));
    config.version2 = false;
    net.add_client(config)
}

#[test]
fn a_v1_peer_chats_in_plain_text_with_the_not_encrypted_warning() {
    let mut net = Net::new(3, Chunking::Random);
    let server = net.add_default_server();
    let alice = net.add_named_client("alice", server);
    let bob = v1_client(&mut net, "bob", server);
    send_lines(&mut net, alice, &["/register", "/bridge"]);
    send_lines(
        &mut net,
        bob,
        &["/register", "/bridge", "/chat", "hello in clear"],
    );
    assert_eq!(received(&net, alice), ["hello in clear"]);
    assert_eq!(not_encrypted(&net, alice), [Unprotected::PeerVersion1]);
    assert!(codes(&net, alice).is_empty());
}

#[test]
fn require_encryption_refuses_a_v1_peer_in_both_roles() {
    // As the waiter: the v1 peer's CHAT gets 403 and alice keeps waiting.
    let mut net = Net::new(3, Chunking::Random);
    let server = net.add_default_server();
    let mut config = ClientConfig::new(name("alice"), net.addr_of(server, 7070));
    config.require_encryption = true;
    let alice = net.add_client(config);
    let bob = v1_client(&mut net, "bob", server);
    send_lines(&mut net, alice, &["/register", "/bridge"]);
    send_lines(&mut net, bob, &["/register", "/bridge", "/chat"]);
    assert_eq!(net.mode(alice), Mode::Wait);
    let refused = errors(&net, bob);
    assert!(
        refused
            .iter()
            .any(|e| e.contains("403") && e.contains("requires an encrypted chat")),
        "{refused:?}"
    );

    // As the asker: no connection to the v1 waiter, and it says why.
    let mut net = Net::new(4, Chunking::Whole);
    let server = net.add_default_server();
    let carol = v1_client(&mut net, "carol", server);
    let mut config = ClientConfig::new(name("dave"), net.addr_of(server, 7070));
    config.require_encryption = true;
    let dave = net.add_client(config);
    send_lines(&mut net, carol, &["/register", "/bridge"]);
    send_lines(&mut net, dave, &["/register", "/bridge", "/chat"]);
    assert_eq!(net.mode(dave), Mode::Ready);
    assert_eq!(net.mode(carol), Mode::Wait);
    assert_eq!(
        errors(&net, dave),
        ["not chatting with carol: the chat would not be encrypted (the peer speaks protocol version 1) and --require-encryption is set"]
    );
}
