//! Reaching the peer through the real server's relay, in memory: every direct
//! path dropped, the asker goes to the relay after `relay_after`, the server
//! tells the waiter, both join, the chat runs through it; and a server
//! without a relay fails the asker's `/chat` with a clear line.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bridgechat_core::client::{ClientConfig, Mode, Path};
use bridgechat_core::server::{ServerConfig, ServerEvent};
use support::*;

const NOWHERE: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 99, 0, 1));

/// Alice waits, bob asks; no direct path between them can be made.
fn unreachable_pair(relay: bool, seed: u64, chunking: Chunking) -> (Net, NodeId, NodeId, NodeId) {
    let mut net = Net::new(seed, chunking);
    let server = net.add_server(ServerConfig {
        listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 7070),
        relay,
        ..ServerConfig::default()
    });
    let config = |who: &str, net: &Net| ClientConfig {
        advertise_ip: Some(NOWHERE),
        ..ClientConfig::new(name(who), net.addr_of(server, 7070))
    };
    let alice = net.add_client(config("alice", &net));
    let bob = net.add_client(config("bob", &net));
    net.drop_connects_to_ip(NOWHERE);
    for node in [alice, bob] {
        let addr = net.chat_addr(node);
        net.drop_connects_to(addr);
    }
    for line in ["/register", "/bridge"] {
        net.line(alice, line);
        net.run();
    }
    for line in ["/register", "/bridge", "/chat"] {
        net.line(bob, line);
        net.run();
    }
    assert_eq!(net.mode(bob), Mode::Ready);
    (net, server, alice, bob)
}

#[test]
fn with_no_direct_path_the_servers_relay_carries_the_chat() {
    for (chunking, seed) in [
        (Chunking::Whole, 1),
        (Chunking::OneByte, 1),
        (Chunking::Random, 2),
    ] {
        let (mut net, server, alice, bob) = unreachable_pair(true, seed, chunking);
        net.advance(Duration::from_secs(3));
        net.run();
        assert_eq!(net.mode(bob), Mode::Write, "{chunking:?} {seed}");
        assert_eq!(net.mode(alice), Mode::Read);
        assert_eq!(net.paths_of(bob), [Path::Relayed]);
        assert_eq!(net.paths_of(alice), [Path::Relayed]);
        for (from, to, text) in [(bob, alice, "hi alice"), (alice, bob, "hi bob")] {
            net.line(from, text);
            net.run();
            assert_eq!(net.received_by(to).last().map(String::as_str), Some(text));
        }
        assert!(net
            .server_events(server)
            .iter()
            .any(|e| matches!(e, ServerEvent::RelayStarted { .. })));
        // Each side: its server connection and the relayed chat.
        assert_eq!(net.open_conns(alice), 2);
        assert_eq!(net.open_conns(bob), 2);
        net.line(bob, "/quit");
        net.run();
        assert_eq!(net.mode(alice), Mode::Registered);
        assert_eq!(net.errors_of(alice), Vec::<String>::new());
    }
}

#[test]
fn a_server_without_a_relay_fails_the_chat_with_a_clear_line() {
    let (mut net, _server, _alice, bob) = unreachable_pair(false, 1, Chunking::Whole);
    net.advance(Duration::from_secs(3));
    net.run();
    assert_eq!(net.mode(bob), Mode::Registered);
    assert_eq!(
        net.errors_of(bob),
        [
            "could not reach alice: no direct path, and the server's relay answered \
          503 Service Unavailable: this server does not relay"
        ]
    );
    assert_eq!(net.open_conns(bob), 1);
}
