//! Interim `1xx` answers (RFC 9110 §15.2) seen by a real client: skipped until the
//! final answer, on the server connection and on the chat connection. A server
//! or peer that says `100 Continue` first must not leave the client believing
//! the opposite of what the final answer said.

mod support;

use std::net::SocketAddr;

use bridgechat_core::client::{ClientConfig, ClientEvent, Mode};
use support::wire;
use support::*;

const CONTINUE: &str = "HTTP/1.1 100 Continue\r\n\r\n";

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

fn errors(net: &Net, node: NodeId) -> Vec<String> {
    net.client_events(node)
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Error(error) => Some(error.to_string()),
            _ => None,
        })
        .collect()
}

fn send_lines(net: &mut Net, node: NodeId, lines: &[&str]) {
    for line in lines {
        net.line(node, line);
    }
    net.run();
}

/// Regression: `100 Continue` then `200 OK` to REGISTER left the client UNREGISTERED
/// while the server held its name; likewise for BRIDGE and for CHAT on the chat connection.
#[test]
fn continue_before_the_final_answer_is_skipped_on_both_connections() {
    for (seed, chunking) in [
        (1, Chunking::Whole),
        (2, Chunking::OneByte),
        (3, Chunking::Random),
    ] {
        let mut net = Net::new(seed, chunking);
        let (fake, server_addr) = net.add_raw_listener(7070);
        let (peer, peer_addr) = net.add_raw_listener(9100);
        let bob = net.add_client(ClientConfig::new(name("bob"), server_addr));
        let conn = net.raw(fake).accepted[0];
        let ip = net.nodes[bob.0].ip.to_string();
        let port = chat_addr(&net, bob).port();

        send_lines(&mut net, bob, &["/register"]);
        net.send_raw(fake, conn, CONTINUE.as_bytes());
        net.run();
        assert_eq!(net.mode(bob), Mode::Unregistered, "a 1xx is not the answer");
        net.send_raw(fake, conn, wire::ok_contact("bob", &ip, port).as_bytes());
        net.run();
        assert_eq!(net.mode(bob), Mode::Registered, "{chunking:?}");

        send_lines(&mut net, bob, &["/bridge"]);
        let answer = format!(
            "{CONTINUE}HTTP/1.1 102 Processing\r\n\r\n{}",
            wire::ok_contact("alice", &peer_addr.ip().to_string(), peer_addr.port())
        );
        net.send_raw(fake, conn, answer.as_bytes());
        net.run();
        assert_eq!(net.mode(bob), Mode::Ready, "{chunking:?}");

        send_lines(&mut net, bob, &["/chat"]);
        let chat = net.raw(peer).accepted[0];
        let answer = format!(
            "{CONTINUE}{}",
            wire::ok_contact("alice", &peer_addr.ip().to_string(), peer_addr.port())
        );
        net.send_raw(peer, chat, answer.as_bytes());
        net.run();
        assert_eq!(net.mode(bob), Mode::Write, "{chunking:?}");
        assert_eq!(errors(&net, bob), Vec::<String>::new());
    }
}

/// `101 Switching Protocols` was never asked for: a protocol error, not a registration.
#[test]
fn switching_protocols_to_register_is_an_error_not_a_registration() {
    let mut net = Net::new(4, Chunking::Random);
    let (fake, server_addr) = net.add_raw_listener(7070);
    let bob = net.add_client(ClientConfig::new(name("bob"), server_addr));
    let conn = net.raw(fake).accepted[0];
    let ip = net.nodes[bob.0].ip.to_string();
    let port = chat_addr(&net, bob).port();
    send_lines(&mut net, bob, &["/register"]);
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n{}",
        wire::ok_contact("bob", &ip, port)
    );
    net.send_raw(fake, conn, answer.as_bytes());
    net.run();
    assert_eq!(net.mode(bob), Mode::Unregistered);
    assert!(!errors(&net, bob).is_empty(), "the 101 was not reported");
}
