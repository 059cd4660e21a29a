//! Scenario tests for the rendezvous server (contract sections 2 and 3), each run
//! under several chunkings of the bytes on the wire. Assertions are on the exact
//! bytes a user (curl) would see.

mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::panic::{self, AssertUnwindSafe};
use std::time::Duration;

use bridgechat_core::server::{ServerConfig, ServerInput};
use bridgechat_core::{ConnId, Limits};
use support::wire::*;
use support::*;

/// Every scenario runs under each of these: whole transmits, one byte at a time, random cuts.
const CHUNKINGS: [(Chunking, u64); 6] = [
    (Chunking::Whole, 1),
    (Chunking::OneByte, 1),
    (Chunking::Random, 1),
    (Chunking::Random, 2),
    (Chunking::Random, 3),
    (Chunking::Random, 4),
];

/// One server and raw peers (curl-like clients) talking to it.
struct Scene {
    net: Net,
    server: NodeId,
    /// The raw node that `open` connects from.
    client: NodeId,
    /// How much of each connection's received bytes `take` has already returned.
    seen: BTreeMap<(NodeId, ConnId), usize>,
}

impl Scene {
    fn new(chunking: Chunking, seed: u64, config: ServerConfig) -> Scene {
        let mut net = Net::new(seed, chunking);
        let server = net.add_server(ServerConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 7070),
            ..config
        });
        let client = net.add_raw();
        Scene {
            net,
            server,
            client,
            seen: BTreeMap::new(),
        }
    }

    /// Another raw node, with its own IP address.
    fn add_host(&mut self) -> NodeId {
        self.net.add_raw()
    }

    fn open(&mut self) -> ConnId {
        let host = self.client;
        self.open_from(host)
    }

    fn open_from(&mut self, host: NodeId) -> ConnId {
        let addr = self.net.addr_of(self.server, 7070);
        self.net
            .connect_raw(host, addr)
            .expect("server is listening")
    }

    /// Sends `bytes` on `conn` and delivers everything in flight.
    fn send(&mut self, conn: ConnId, bytes: &str) {
        self.send_from(self.client, conn, bytes);
    }

    fn send_from(&mut self, host: NodeId, conn: ConnId, bytes: &str) {
        self.net.send_raw(host, conn, bytes.as_bytes());
        self.net.run();
    }

    /// Sends a request and returns the text received in answer.
    fn ask(&mut self, conn: ConnId, request: &str) -> String {
        self.send(conn, request);
        self.take(conn)
    }

    /// The text received on `conn` since the last `take`.
    fn take(&mut self, conn: ConnId) -> String {
        self.take_from(self.client, conn)
    }

    fn take_from(&mut self, host: NodeId, conn: ConnId) -> String {
        let all = self.net.raw_text(host, conn);
        let seen = self.seen.entry((host, conn)).or_insert(0);
        let new = all[*seen..].to_owned();
        *seen = all.len();
        new
    }

    fn is_closed(&self, conn: ConnId) -> bool {
        self.net.raw_is_closed(self.client, conn)
    }

    /// A connection registered as `name` at 127.0.0.9:`port`.
    fn registered(&mut self, name: &str, port: u16) -> ConnId {
        let conn = self.open();
        let answer = self.ask(conn, &register(name, "127.0.0.9", port));
        assert_eq!(answer, ok_contact(name, "127.0.0.9", port));
        conn
    }

    fn advance(&mut self, secs: u64) {
        self.net.advance(Duration::from_secs(secs));
    }
}

/// Runs `scenario` once per chunking, on a default server; says which chunking failed.
fn each_chunking(scenario: impl Fn(&mut Scene)) {
    each_chunking_with(ServerConfig::default, scenario)
}

fn each_chunking_with(config: impl Fn() -> ServerConfig, scenario: impl Fn(&mut Scene)) {
    for (chunking, seed) in CHUNKINGS {
        let mut scene = Scene::new(chunking, seed, config());
        if let Err(failure) = panic::catch_unwind(AssertUnwindSafe(|| scenario(&mut scene))) {
            eprintln!("scenario failed under {chunking:?} chunking, seed {seed}");
            panic::resume_unwind(failure);
        }
    }
}

#[test]
fn harness_smoke() {
    let mut net = Net::new(1, Chunking::Random);
    let server = net.add_default_server();
    let raw = net.add_raw();
    let conn = net.connect_raw(raw, net.addr_of(server, 7070)).unwrap();
    net.send_raw(raw, conn, b"REGISTER / HTTP/1.1\r\nName: alice\r\nIP: 127.0.0.9\r\nPort: 9001\r\n\r\nBRIDGE / HTTP/1.1\r\n\r\n");
    net.run();
    let r = responses(net.raw(raw).received[&conn].as_slice());
    assert_eq!(r.len(), 2);
}

// ---------------------------------------------------------------------------
// REGISTER

#[test]
fn register_answers_200_echoing_name_ip_and_port() {
    each_chunking(|s| {
        let conn = s.open();
        let answer = s.ask(conn, &register("alice", "127.0.0.9", 9001));
        assert_eq!(
            answer,
            "HTTP/1.1 200 OK\r\nName: alice\r\nIP: 127.0.0.9\r\nPort: 9001\r\nContent-Length: 0\r\n\r\n"
        );
        // IPv6 is echoed in its text form.
        let other = s.open();
        let answer = s.ask(other, &register("bob", "::1", 65535));
        assert_eq!(answer, ok_contact("bob", "::1", 65535));
    });
}

#[test]
fn register_accepts_any_header_case_and_whitespace_and_bare_lf() {
    each_chunking(|s| {
        let conn = s.open();
        let answer = s.ask(
            conn,
            "REGISTER /anything HTTP/1.0\nname:alice \nip:  127.0.0.9\nPORT:\t9001\n\n",
        );
        assert_eq!(answer, ok_contact("alice", "127.0.0.9", 9001));
    });
}

#[test]
fn register_with_a_missing_or_malformed_header_gets_400_and_the_connection_stays_open() {
    each_chunking(|s| {
        let conn = s.open();
        let answer = s.ask(
            conn,
            "REGISTER / HTTP/1.1\r\nName: alice\r\nIP: 127.0.0.9\r\n\r\n",
        );
        assert_eq!(answer, error("400 Bad Request", "missing header: Port"));
        let answer = s.ask(conn, &register("alice", "127.0.0.9", 0));
        assert_eq!(
            answer,
            error(
                "400 Bad Request",
                "invalid header Port: not a decimal port 1-65535"
            )
        );
        let answer = s.ask(conn, &register("al ice", "127.0.0.9", 9001));
        assert_eq!(
            answer,
            error(
                "400 Bad Request",
                "invalid header Name: only A-Z a-z 0-9 _ - . are allowed"
            )
        );
        let answer = s.ask(conn, &register("alice", "localhost", 9001));
        assert_eq!(
            answer,
            error(
                "400 Bad Request",
                "invalid header IP: not an IPv4 or IPv6 address"
            )
        );
        assert!(!s.is_closed(conn));
        // The same connection can still register.
        let answer = s.ask(conn, &register("alice", "127.0.0.9", 9001));
        assert_eq!(answer, ok_contact("alice", "127.0.0.9", 9001));
    });
}

#[test]
fn a_name_held_by_another_live_connection_gets_409_with_a_reason() {
    each_chunking(|s| {
        let _alice = s.registered("alice", 9001);
        let other = s.open();
        let answer = s.ask(other, &register("alice", "127.0.0.10", 9002));
        assert_eq!(answer, error("409 Conflict", "name already taken: alice"));
        assert!(!s.is_closed(other));
        // A 409 leaves the asker unregistered.
        assert_eq!(
            s.ask(other, &bridge()),
            error("403 Forbidden", "register first")
        );
        assert_eq!(
            s.ask(other, &register("alice2", "127.0.0.10", 9002)),
            ok_contact("alice2", "127.0.0.10", 9002)
        );
    });
}

/// Regression: `0.0.0.0`, `::`, broadcast, multicast and the cloud metadata address were
/// stored and handed out, so a registrant could point others' `/chat` where it liked.
#[test]
fn an_ip_no_peer_could_mean_gets_400_with_the_reason_and_the_connection_stays_open() {
    each_chunking(|s| {
        let conn = s.open();
        for (ip, why) in [
            ("0.0.0.0", "the unspecified address"),
            ("::", "the unspecified address"),
            ("255.255.255.255", "the broadcast address"),
            ("224.0.0.1", "a multicast address"),
            ("ff02::1", "a multicast address"),
            ("::ffff:224.0.0.1", "a multicast address"),
            ("169.254.169.254", "the cloud metadata service"),
        ] {
            assert_eq!(
                s.ask(conn, &register("mallory", ip, 9001)),
                error(
                    "400 Bad Request",
                    &format!("unusable IP {ip}: {why}, no peer could reach you there")
                ),
                "{ip}"
            );
            assert!(!s.is_closed(conn));
        }
        // Nothing was stored: the name is free and nobody waits.
        assert_eq!(
            s.ask(conn, &bridge()),
            error("403 Forbidden", "register first")
        );
        assert_eq!(
            s.ask(conn, &register("mallory", "169.254.1.2", 9001)),
            ok_contact("mallory", "169.254.1.2", 9001)
        );
    });
}

#[test]
fn with_strict_ip_only_the_observed_or_a_private_address_registers() {
    let strict = || ServerConfig {
        strict_ip: true,
        ..ServerConfig::default()
    };
    each_chunking_with(strict, |s| {
        // The harness's hosts connect from loopback (private) addresses.
        let conn = s.open();
        for public in ["8.8.8.8", "2001:db8::1"] {
            let answer = s.ask(conn, &register("alice", public, 9001));
            assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");
            assert!(
                answer.ends_with(&format!(
                    "IP {public} is neither the address you connect from (127.0.0.2) nor private"
                )),
                "{answer}"
            );
            assert!(!s.is_closed(conn));
        }
        for private in ["127.0.0.2", "10.1.2.3", "192.168.0.7", "fd00::7", "fe80::1"] {
            assert_eq!(
                s.ask(conn, &register("alice", private, 9001)),
                ok_contact("alice", private, 9001)
            );
        }
    });
    // Without the flag, a public address from a loopback connection is fine (NAT, proxies).
    each_chunking(|s| {
        let conn = s.open();
        assert_eq!(
            s.ask(conn, &register("alice", "8.8.8.8", 9001)),
            ok_contact("alice", "8.8.8.8", 9001)
        );
    });
}

/// Regression: `bob`, `Bob` and `BOB` could all be registered at once.
#[test]
fn names_are_unique_without_regard_to_case_and_keep_their_spelling() {
    each_chunking(|s| {
        let bob = s.registered("Bob", 9002);
        let other = s.open();
        for spelling in ["bob", "BOB", "bOb"] {
            assert_eq!(
                s.ask(other, &register(spelling, "127.0.0.10", 9003)),
                error("409 Conflict", &format!("name already taken: {spelling}"))
            );
        }
        assert!(!s.is_closed(other));
        // The holder keeps its spelling in every answer, and may respell itself.
        assert_eq!(s.ask(bob, &bridge_as("BOB")), ok());
        assert_eq!(
            s.ask(other, &register("carol", "127.0.0.10", 9003)),
            ok_contact("carol", "127.0.0.10", 9003)
        );
        assert_eq!(
            s.ask(other, &bridge()),
            ok_contact("Bob", "127.0.0.9", 9002)
        );
        assert_eq!(
            s.ask(bob, &register("BOB", "127.0.0.9", 9002)),
            ok_contact("BOB", "127.0.0.9", 9002)
        );
        // Once it unregisters, any spelling is free again.
        assert_eq!(s.ask(bob, &unregister()), ok());
        assert_eq!(
            s.ask(other, &register("bob", "127.0.0.10", 9003)),
            ok_contact("bob", "127.0.0.10", 9003)
        );
    });
}

#[test]
fn registering_again_on_the_same_connection_replaces_and_frees_the_old_name() {
    each_chunking(|s| {
        let conn = s.registered("alice", 9001);
        // The same name again, with a new port: allowed, and the new contact is stored.
        assert_eq!(
            s.ask(conn, &register("alice", "127.0.0.9", 9005)),
            ok_contact("alice", "127.0.0.9", 9005)
        );
        assert_eq!(
            s.ask(conn, &register("alicia", "127.0.0.9", 9006)),
            ok_contact("alicia", "127.0.0.9", 9006)
        );
        // `alice` is free again; `alicia` is held.
        let other = s.open();
        assert_eq!(
            s.ask(other, &register("alice", "127.0.0.10", 9002)),
            ok_contact("alice", "127.0.0.10", 9002)
        );
        let third = s.open();
        assert_eq!(
            s.ask(third, &register("alicia", "127.0.0.11", 9003)),
            error("409 Conflict", "name already taken: alicia")
        );
        // The replaced registration is what BRIDGE hands out.
        assert_eq!(s.ask(conn, &bridge()), ok());
        assert_eq!(
            s.ask(other, &bridge()),
            ok_contact("alicia", "127.0.0.9", 9006)
        );
    });
}

#[test]
fn a_failed_reregistration_keeps_the_old_registration() {
    each_chunking(|s| {
        let _bob = s.registered("bob", 9002);
        let conn = s.registered("alice", 9001);
        assert_eq!(
            s.ask(conn, &register("bob", "127.0.0.9", 9009)),
            error("409 Conflict", "name already taken: bob")
        );
        assert_eq!(s.ask(conn, &bridge_as("alice")), ok());
    });
}

#[test]
fn registration_is_bound_to_the_connection_that_made_it() {
    each_chunking(|s| {
        let _alice = s.registered("alice", 9001);
        // Another connection of the same host is not alice, even when it says so.
        let other = s.open();
        assert_eq!(
            s.ask(other, &bridge()),
            error("403 Forbidden", "register first")
        );
        assert_eq!(
            s.ask(other, &bridge_as("alice")),
            error("403 Forbidden", "register first")
        );
        assert_eq!(
            s.ask(other, &unregister()),
            ok(),
            "UNREGISTER on an unregistered connection forgets nothing"
        );
        let third = s.open();
        assert_eq!(
            s.ask(third, &register("alice", "127.0.0.10", 9002)),
            error("409 Conflict", "name already taken: alice"),
            "alice's registration survived the other connection's UNREGISTER"
        );
    });
}

// ---------------------------------------------------------------------------
// BRIDGE

#[test]
fn bridge_before_register_gets_403_register_first() {
    each_chunking(|s| {
        let conn = s.open();
        assert_eq!(
            s.ask(conn, &bridge()),
            "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 14\r\n\r\nregister first"
        );
        assert!(!s.is_closed(conn));
    });
}

#[test]
fn bridge_with_a_name_that_is_not_the_registration_gets_403() {
    each_chunking(|s| {
        let bob = s.registered("bob", 9002);
        let alice = s.registered("alice", 9001);
        assert_eq!(
            s.ask(alice, &bridge_as("bob")),
            error(
                "403 Forbidden",
                "Name does not match this connection's registration"
            )
        );
        assert!(!s.is_closed(alice));
        // The refused BRIDGE did not make alice wait: bob finds nobody and waits.
        assert_eq!(s.ask(bob, &bridge()), ok());
        assert_eq!(
            s.ask(alice, &bridge_as("alice")),
            ok_contact("bob", "127.0.0.9", 9002)
        );
    });
}

#[test]
fn first_bridge_gets_an_empty_200_and_the_asker_waits() {
    each_chunking(|s| {
        let alice = s.registered("alice", 9001);
        assert_eq!(
            s.ask(alice, &bridge()),
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
        );
        let server = s.net.server(s.server);
        assert_eq!(server.waiting().map(|c| c.name), Some(name("alice")));
    });
}

#[test]
fn second_bridge_gets_the_waiters_contact_and_the_waiter_is_handed_out_only_once() {
    each_chunking(|s| {
        let alice = s.registered("alice", 9001);
        let bob = s.registered("bob", 9002);
        let carol = s.registered("carol", 9003);
        assert_eq!(s.ask(alice, &bridge()), ok());
        assert_eq!(
            s.ask(bob, &bridge()),
            "HTTP/1.1 200 OK\r\nName: alice\r\nIP: 127.0.0.9\r\nPort: 9001\r\nContent-Length: 0\r\n\r\n"
        );
        // alice was taken: carol finds nobody and waits herself.
        assert_eq!(s.ask(carol, &bridge()), ok());
        // Past the introduction deadline bob's next BRIDGE does not put alice back.
        s.advance(10);
        assert_eq!(
            s.ask(bob, &bridge()),
            ok_contact("carol", "127.0.0.9", 9003)
        );
        // alice gets nothing on her server connection when she is handed out.
        assert_eq!(s.take(alice), "");
    });
}

#[test]
fn pairing_follows_arrival_order() {
    each_chunking(|s| {
        let clients: Vec<ConnId> = (0..6)
            .map(|i| s.registered(&format!("c{i}"), 9000 + i))
            .collect();
        for pair in clients.chunks(2) {
            assert_eq!(s.ask(pair[0], &bridge()), ok());
            let waiter = s.net.server(s.server).waiting().unwrap();
            assert_eq!(
                s.ask(pair[1], &bridge()),
                ok_contact(waiter.name.as_str(), "127.0.0.9", waiter.port())
            );
        }
    });
}

#[test]
fn a_waiting_client_that_bridges_again_gets_another_empty_200_and_keeps_waiting() {
    each_chunking(|s| {
        let alice = s.registered("alice", 9001);
        assert_eq!(s.ask(alice, &bridge()), ok());
        assert_eq!(s.ask(alice, &bridge()), ok(), "never handed itself");
        assert_eq!(s.ask(alice, &bridge_as("alice")), ok());
        let bob = s.registered("bob", 9002);
        assert_eq!(
            s.ask(bob, &bridge()),
            ok_contact("alice", "127.0.0.9", 9001)
        );
    });
}

#[test]
fn a_handed_out_client_can_bridge_again_and_wait_again() {
    each_chunking(|s| {
        let alice = s.registered("alice", 9001);
        let bob = s.registered("bob", 9002);
        assert_eq!(s.ask(alice, &bridge()), ok());
        assert_eq!(
            s.ask(bob, &bridge()),
            ok_contact("alice", "127.0.0.9", 9001)
        );
        // After their chat both are REGISTERED again; alice waits anew.
        assert_eq!(s.ask(alice, &bridge()), ok());
        assert_eq!(
            s.ask(bob, &bridge()),
            ok_contact("alice", "127.0.0.9", 9001)
        );
    });
}

// ---------------------------------------------------------------------------
// UNREGISTER and closing

#[test]
fn unregister_answers_200_stops_waiting_and_frees_the_name() {
    each_chunking(|s| {
        let alice = s.registered("alice", 9001);
        assert_eq!(s.ask(alice, &bridge()), ok());
        assert_eq!(
            s.ask(alice, &unregister()),
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
        );
        // Nobody waits any more: bob becomes the waiter instead of getting alice.
        let bob = s.registered("bob", 9002);
        assert_eq!(s.ask(bob, &bridge()), ok());
        // alice is unregistered, and her name is free for someone else.
        assert_eq!(
            s.ask(alice, &bridge()),
            error("403 Forbidden", "register first")
        );
        let other = s.open();
        assert_eq!(
            s.ask(other, &register("alice", "127.0.0.10", 9010)),
            ok_contact("alice", "127.0.0.10", 9010)
        );
        assert!(!s.is_closed(alice));
    });
}

#[test]
fn closing_the_connection_forgets_the_registration_and_stops_waiting() {
    each_chunking(|s| {
        let alice = s.registered("alice", 9001);
        assert_eq!(s.ask(alice, &bridge()), ok());
        s.net.close_raw(s.client, alice);
        s.net.run();
        let bob = s.registered("bob", 9002);
        assert_eq!(
            s.ask(bob, &bridge()),
            ok(),
            "a closed waiter is never handed out"
        );
        let other = s.open();
        assert_eq!(
            s.ask(other, &register("alice", "127.0.0.10", 9010)),
            ok_contact("alice", "127.0.0.10", 9010)
        );
        assert_eq!(s.net.server(s.server).stats().connections, 2);
    });
}

#[test]
fn a_reset_connection_is_forgotten_like_a_closed_one() {
    each_chunking(|s| {
        let alice = s.registered("alice", 9001);
        s.send(alice, &bridge());
        s.net.reset_raw(s.client, alice);
        s.net.run();
        let bob = s.registered("bob", 9002);
        assert_eq!(s.ask(bob, &bridge()), ok());
    });
}

// ---------------------------------------------------------------------------
// Other methods, pipelining

#[test]
fn an_unknown_method_gets_501_and_the_connection_stays_usable() {
    each_chunking(|s| {
        let conn = s.open();
        assert_eq!(
            s.ask(conn, "PATCH / HTTP/1.1\r\nHost: localhost\r\n\r\n"),
            error("501 Not Implemented", "unknown method")
        );
        assert_eq!(
            s.ask(conn, "register / HTTP/1.1\r\n\r\n"),
            error("501 Not Implemented", "unknown method"),
            "methods are case-sensitive"
        );
        // A peer request sent to the server is not a server request either.
        assert_eq!(
            s.ask(
                conn,
                "CHAT / HTTP/1.1\r\nName: a\r\nIP: 127.0.0.1\r\nPort: 1\r\n\r\n"
            ),
            error(
                "501 Not Implemented",
                "CHAT is a peer request, not a server request"
            )
        );
        // An unknown method's body is read and skipped, not taken as the next request.
        assert_eq!(
            s.ask(conn, "PUT / HTTP/1.1\r\nContent-Length: 6\r\n\r\nBRIDGE"),
            error("501 Not Implemented", "unknown method")
        );
        assert!(!s.is_closed(conn));
        assert_eq!(
            s.ask(conn, &register("alice", "127.0.0.9", 9001)),
            ok_contact("alice", "127.0.0.9", 9001)
        );
    });
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    each_chunking(|s| {
        let alice = s.open();
        let bob = s.open();
        let burst = [
            "FOO / HTTP/1.1\r\n\r\n".to_owned(),
            bridge(),
            register("alice", "127.0.0.9", 9001),
            register("alice", "127.0.0.9", 9001),
            bridge_as("bob"),
            bridge(),
            unregister(),
            bridge(),
        ]
        .concat();
        assert_eq!(
            s.ask(alice, &burst),
            [
                error("501 Not Implemented", "unknown method"),
                error("403 Forbidden", "register first"),
                ok_contact("alice", "127.0.0.9", 9001),
                ok_contact("alice", "127.0.0.9", 9001),
                error(
                    "403 Forbidden",
                    "Name does not match this connection's registration"
                ),
                ok(),
                ok(),
                error("403 Forbidden", "register first"),
            ]
            .concat()
        );
        let burst = [
            register("bob", "127.0.0.9", 9002),
            bridge(),
            register("alice", "127.0.0.9", 9003),
        ]
        .concat();
        assert_eq!(
            s.ask(bob, &burst),
            [
                ok_contact("bob", "127.0.0.9", 9002),
                ok(),
                ok_contact("alice", "127.0.0.9", 9003)
            ]
            .concat()
        );
    });
}

/// Regression: a pipelined request that ends in the same read as the end of a request
/// whose head began in an earlier read must be answered without waiting for more bytes.
#[test]
fn a_pipelined_request_completed_in_the_same_read_as_a_split_one_is_answered() {
    each_chunking(|s| {
        let conn = s.registered("alice", 9001);
        s.send(conn, "UNREG");
        s.send(conn, &format!("ISTER / HTTP/1.1\r\n\r\n{}", bridge()));
        assert_eq!(
            s.take(conn),
            [ok(), error("403 Forbidden", "register first")].concat()
        );
    });
}

// ---------------------------------------------------------------------------
// Framing errors and limits

#[test]
fn a_head_over_8_kib_gets_431_and_the_connection_closes() {
    each_chunking(|s| {
        let conn = s.registered("alice", 9001);
        let padding = "x".repeat(8 * 1024);
        let answer = s.ask(
            conn,
            &format!("BRIDGE / HTTP/1.1\r\nX-Pad: {padding}\r\n\r\n"),
        );
        assert_eq!(
            answer,
            error_closing(
                "431 Request Header Fields Too Large",
                "request head too large"
            )
        );
        assert!(s.is_closed(conn));
        // Closing freed the name.
        let other = s.open();
        assert_eq!(
            s.ask(other, &register("alice", "127.0.0.10", 9002)),
            ok_contact("alice", "127.0.0.10", 9002)
        );
    });
}

#[test]
fn a_head_that_never_ends_gets_431_once_it_passes_8_kib() {
    each_chunking(|s| {
        let conn = s.open();
        // No line end at all: the server must not buffer without bound.
        s.send(conn, &"A".repeat(8 * 1024 + 1));
        assert_eq!(
            s.take(conn),
            error_closing(
                "431 Request Header Fields Too Large",
                "request head too large"
            )
        );
        assert!(s.is_closed(conn));
    });
}

#[test]
fn a_head_of_exactly_8_kib_is_served() {
    each_chunking(|s| {
        let conn = s.registered("alice", 9001);
        let frame = "BRIDGE / HTTP/1.1\r\nX-Pad: \r\n\r\n".len();
        let padding = "x".repeat(8 * 1024 - frame);
        let request = format!("BRIDGE / HTTP/1.1\r\nX-Pad: {padding}\r\n\r\n");
        assert_eq!(request.len(), 8 * 1024);
        assert_eq!(s.ask(conn, &request), ok());
    });
}

#[test]
fn more_than_32_headers_get_431_and_the_connection_closes() {
    each_chunking(|s| {
        let conn = s.registered("alice", 9001);
        let headers: String = (0..33).map(|i| format!("X-{i}: y\r\n")).collect();
        let answer = s.ask(conn, &format!("BRIDGE / HTTP/1.1\r\n{headers}\r\n"));
        assert_eq!(
            answer,
            error_closing("431 Request Header Fields Too Large", "too many headers")
        );
        assert!(s.is_closed(conn));
        // 32 headers are fine.
        let other = s.registered("bob", 9002);
        let headers: String = (0..32).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(
            s.ask(other, &format!("BRIDGE / HTTP/1.1\r\n{headers}\r\n")),
            ok()
        );
    });
}

#[test]
fn a_body_over_64_kib_gets_413_and_the_connection_closes() {
    each_chunking(|s| {
        let conn = s.registered("alice", 9001);
        let answer = s.ask(conn, "BRIDGE / HTTP/1.1\r\nContent-Length: 65537\r\n\r\n");
        assert_eq!(
            answer,
            error_closing("413 Content Too Large", "body too large")
        );
        assert!(s.is_closed(conn));
        // A length too big for any integer is also 413, not a panic.
        let other = s.open();
        let answer = s.ask(
            other,
            "BRIDGE / HTTP/1.1\r\nContent-Length: 99999999999999999999999999\r\n\r\n",
        );
        assert_eq!(
            answer,
            error_closing("413 Content Too Large", "body too large")
        );
    });
}

#[test]
fn a_body_of_64_kib_is_read_and_skipped() {
    each_chunking(|s| {
        let conn = s.registered("alice", 9001);
        let body = "b".repeat(64 * 1024);
        let request = format!(
            "BRIDGE / HTTP/1.1\r\nContent-Length: 65536\r\n\r\n{body}{}",
            bridge()
        );
        assert_eq!(s.ask(conn, &request), [ok(), ok()].concat());
    });
}

#[test]
fn transfer_encoding_gets_501_and_the_connection_closes() {
    each_chunking(|s| {
        let conn = s.registered("alice", 9001);
        let answer = s.ask(
            conn,
            "BRIDGE / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        );
        assert_eq!(
            answer,
            error_closing("501 Not Implemented", "Transfer-Encoding is not supported")
        );
        assert!(s.is_closed(conn));
    });
}

#[test]
fn a_bad_content_length_gets_400_and_the_connection_closes() {
    for (length_headers, reason) in [
        ("Content-Length: abc\r\n", "invalid Content-Length"),
        ("Content-Length: -1\r\n", "invalid Content-Length"),
        ("Content-Length: +5\r\n", "invalid Content-Length"),
        (
            "Content-Length: 1\r\nContent-Length: 2\r\n",
            "conflicting Content-Length",
        ),
    ] {
        each_chunking(|s| {
            let conn = s.registered("alice", 9001);
            let answer = s.ask(conn, &format!("BRIDGE / HTTP/1.1\r\n{length_headers}\r\n"));
            assert_eq!(
                answer,
                error_closing("400 Bad Request", reason),
                "{length_headers:?}"
            );
            assert!(s.is_closed(conn));
        });
    }
}

#[test]
fn a_malformed_message_gets_400_and_the_connection_closes() {
    for garbage in [
        "\u{16}\u{3}\u{1}\0\0 hello\r\n\r\n",
        "BRIDGE / HTTP/1.1\r\nno colon here\r\n\r\n",
        "BRIDGE / HTTP/9.9\r\n\r\n",
    ] {
        each_chunking(|s| {
            let conn = s.registered("alice", 9001);
            let answer = s.ask(conn, garbage);
            assert_eq!(
                answer,
                error_closing("400 Bad Request", "malformed message"),
                "{garbage:?}"
            );
            assert!(s.is_closed(conn));
        });
    }
}

#[test]
fn requests_before_a_framing_error_are_answered_and_nothing_after_it() {
    each_chunking(|s| {
        let conn = s.open();
        let burst = [
            register("alice", "127.0.0.9", 9001),
            "BRIDGE / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_owned(),
            bridge(),
        ]
        .concat();
        assert_eq!(
            s.ask(conn, &burst),
            [
                ok_contact("alice", "127.0.0.9", 9001),
                error_closing("501 Not Implemented", "Transfer-Encoding is not supported"),
            ]
            .concat()
        );
        assert!(s.is_closed(conn));
    });
}

// ---------------------------------------------------------------------------
// Timers

#[test]
fn a_head_not_complete_within_10_s_of_its_first_byte_gets_408_and_close() {
    each_chunking(|s| {
        let conn = s.registered("alice", 9001);
        assert_eq!(s.ask(conn, &bridge()), ok());
        s.send(conn, "BRIDGE / HT");
        s.advance(9);
        // More bytes do not restart the clock: it runs from the head's first byte.
        s.send(conn, "TP/1.1\r\nX-Slow: ");
        assert_eq!(s.take(conn), "");
        s.advance(1);
        assert_eq!(
            s.take(conn),
            error_closing("408 Request Timeout", "request head not complete in time")
        );
        assert!(s.is_closed(conn));
        // The timed-out waiter is forgotten: bob waits instead of pairing with alice.
        let bob = s.registered("bob", 9002);
        assert_eq!(s.ask(bob, &bridge()), ok());
    });
}

#[test]
fn a_slow_head_that_completes_in_time_is_served() {
    each_chunking(|s| {
        let conn = s.open();
        s.send(conn, "REGISTER / HTTP/1.1\r\n");
        s.advance(3);
        s.send(conn, "Name: alice\r\nIP: 127.0.0.9\r\n");
        s.advance(6);
        s.send(conn, "Port: 9001\r\n\r");
        s.advance(0);
        assert_eq!(s.take(conn), "");
        s.advance(0);
        s.send(conn, "\n");
        assert_eq!(s.take(conn), ok_contact("alice", "127.0.0.9", 9001));
        // The old head's timer must not fire against the connection later.
        s.advance(60);
        assert_eq!(s.take(conn), "");
        assert!(!s.is_closed(conn));
    });
}

#[test]
fn each_pipelined_head_gets_its_own_10_s_from_its_first_byte() {
    each_chunking(|s| {
        let conn = s.registered("alice", 9001);
        s.send(conn, "UNREGISTER / HT");
        s.advance(8);
        // Ends the first head and starts the second in the same read.
        s.send(
            conn,
            &format!(
                "TP/1.1\r\n\r\n{}BRIDGE / HT",
                register("alice", "127.0.0.9", 9001)
            ),
        );
        assert_eq!(
            s.take(conn),
            [ok(), ok_contact("alice", "127.0.0.9", 9001)].concat()
        );
        s.advance(9);
        assert_eq!(
            s.take(conn),
            "",
            "the second head started 9 s ago, not 17 s"
        );
        s.send(conn, "TP/1.1\r\n\r\n");
        assert_eq!(s.take(conn), ok());
        s.send(conn, "BRI");
        s.advance(10);
        assert_eq!(
            s.take(conn),
            error_closing("408 Request Timeout", "request head not complete in time")
        );
    });
}

#[test]
fn an_idle_connection_between_requests_is_not_timed_out() {
    each_chunking(|s| {
        let conn = s.registered("alice", 9001);
        // Far past the head and register timers, within the default idle timeout (1 h).
        s.advance(3000);
        assert!(!s.is_closed(conn));
        assert_eq!(s.ask(conn, &bridge()), ok());
    });
}

#[test]
fn a_connection_that_has_not_registered_within_30_s_is_closed() {
    each_chunking(|s| {
        let conn = s.open();
        // Failed attempts do not count as registering.
        assert_eq!(
            s.ask(conn, &bridge()),
            error("403 Forbidden", "register first")
        );
        s.advance(29);
        assert!(!s.is_closed(conn));
        s.advance(1);
        assert!(s.is_closed(conn));
        assert_eq!(s.take(conn), "", "closed without an answer");
        assert_eq!(s.net.server(s.server).stats().connections, 0);
    });
}

#[test]
fn a_connection_that_registered_within_30_s_is_kept() {
    each_chunking(|s| {
        let conn = s.open();
        s.advance(29);
        assert_eq!(
            s.ask(conn, &register("alice", "127.0.0.9", 9001)),
            ok_contact("alice", "127.0.0.9", 9001)
        );
        s.advance(120);
        assert!(!s.is_closed(conn));
        assert_eq!(s.ask(conn, &bridge()), ok());
    });
}

#[test]
fn configured_timers_are_honoured() {
    let config = || ServerConfig {
        head_timeout: Duration::from_secs(2),
        register_timeout: Duration::from_secs(5),
        ..ServerConfig::default()
    };
    each_chunking_with(config, |s| {
        let idle = s.open();
        let slow = s.open();
        s.send(slow, "REG");
        s.advance(1);
        assert!(!s.is_closed(slow));
        s.advance(1);
        assert_eq!(
            s.take(slow),
            error_closing("408 Request Timeout", "request head not complete in time")
        );
        assert!(s.is_closed(slow));
        s.advance(2);
        assert!(!s.is_closed(idle));
        s.advance(1);
        assert!(s.is_closed(idle));
    });
}

#[test]
fn configured_limits_are_honoured() {
    let config = || ServerConfig {
        limits: Limits {
            max_head: 128,
            max_headers: 4,
            max_body: 16,
        },
        ..ServerConfig::default()
    };
    each_chunking_with(config, |s| {
        let conn = s.registered("alice", 9001);
        assert_eq!(
            s.ask(
                conn,
                "BRIDGE / HTTP/1.1\r\nContent-Length: 16\r\n\r\n0123456789abcdef"
            ),
            ok()
        );
        assert_eq!(
            s.ask(conn, "BRIDGE / HTTP/1.1\r\nContent-Length: 17\r\n\r\n"),
            error_closing("413 Content Too Large", "body too large")
        );
        let conn = s.registered("bob", 9002);
        let four: String = (0..4).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(
            s.ask(conn, &format!("BRIDGE / HTTP/1.1\r\n{four}\r\n")),
            ok()
        );
        assert_eq!(
            s.ask(conn, &format!("BRIDGE / HTTP/1.1\r\n{four}X-4: y\r\n\r\n")),
            error_closing("431 Request Header Fields Too Large", "too many headers")
        );
        let conn = s.registered("carol", 9003);
        let padding = "x".repeat(100);
        assert_eq!(
            s.ask(
                conn,
                &format!("BRIDGE / HTTP/1.1\r\nX-Pad: {padding}\r\n\r\n")
            ),
            error_closing(
                "431 Request Header Fields Too Large",
                "request head too large"
            )
        );
    });
}

// ---------------------------------------------------------------------------
// Connection limits and shutdown

#[test]
fn past_max_connections_a_new_connection_gets_503_with_retry_after_and_close() {
    let config = || ServerConfig {
        max_connections: 2,
        retry_after_secs: 7,
        ..ServerConfig::default()
    };
    each_chunking_with(config, |s| {
        let alice = s.registered("alice", 9001);
        let second = s.open();
        let refused = s.open();
        s.net.run();
        assert_eq!(
            s.take(refused),
            unavailable(7, "server is full, try again later")
        );
        assert!(s.is_closed(refused));
        // Those already in are unaffected.
        assert_eq!(s.ask(alice, &bridge()), ok());
        assert_eq!(
            s.ask(second, &register("bob", "127.0.0.9", 9002)),
            ok_contact("bob", "127.0.0.9", 9002)
        );
        assert_eq!(
            s.ask(second, &bridge()),
            ok_contact("alice", "127.0.0.9", 9001)
        );
        // A slot that frees up is served again.
        s.net.close_raw(s.client, alice);
        s.net.run();
        let next = s.open();
        assert_eq!(
            s.ask(next, &register("alice", "127.0.0.9", 9003)),
            ok_contact("alice", "127.0.0.9", 9003)
        );
    });
}

#[test]
fn past_max_per_ip_a_new_connection_from_that_address_gets_503_and_others_are_served() {
    let config = || ServerConfig {
        max_per_ip: 1,
        ..ServerConfig::default()
    };
    each_chunking_with(config, |s| {
        let alice = s.registered("alice", 9001);
        let refused = s.open();
        s.net.run();
        assert_eq!(
            s.take(refused),
            unavailable(1, "too many connections from your address")
        );
        assert!(s.is_closed(refused));
        // Another address is still served.
        let host = s.add_host();
        let bob = s.open_from(host);
        s.send_from(host, bob, &register("bob", "127.0.0.10", 9002));
        assert_eq!(
            s.take_from(host, bob),
            ok_contact("bob", "127.0.0.10", 9002)
        );
        assert_eq!(s.ask(alice, &bridge()), ok());
        // Once alice leaves, her address may connect again.
        s.net.close_raw(s.client, alice);
        s.net.run();
        let again = s.open();
        assert_eq!(
            s.ask(again, &register("alice", "127.0.0.9", 9001)),
            ok_contact("alice", "127.0.0.9", 9001)
        );
    });
}

#[test]
fn shutdown_closes_every_connection_after_its_answers_and_exits() {
    each_chunking(|s| {
        let alice = s.registered("alice", 9001);
        let idle = s.open();
        s.send(alice, &bridge());
        s.net.server_input(s.server, ServerInput::Shutdown);
        s.net.run();
        assert_eq!(s.take(alice), ok());
        assert!(s.is_closed(alice));
        assert!(s.is_closed(idle));
        assert_eq!(s.net.nodes[s.server.0].exited, Some(Ok(())));
        let addr = s.net.addr_of(s.server, 7070);
        assert_eq!(
            s.net.connect_raw(s.client, addr),
            None,
            "no longer listening"
        );
    });
}

#[test]
fn empty_lines_between_requests_are_skipped_and_do_not_start_a_head() {
    each_chunking(|s| {
        let conn = s.open();
        let burst = format!(
            "\r\n{}\r\n\n{}\r\n",
            register("alice", "127.0.0.9", 9001),
            bridge()
        );
        assert_eq!(
            s.ask(conn, &burst),
            [ok_contact("alice", "127.0.0.9", 9001), ok()].concat()
        );
        // The trailing empty line is not a head in progress: no 408 later.
        s.advance(60);
        assert!(!s.is_closed(conn));
        assert_eq!(s.take(conn), "");
    });
}

#[test]
fn timeouts_too_long_for_the_clock_mean_never_rather_than_a_panic() {
    let config = || ServerConfig {
        head_timeout: Duration::MAX,
        register_timeout: Duration::MAX,
        idle_timeout: Duration::MAX,
        ..ServerConfig::default()
    };
    each_chunking_with(config, |s| {
        let conn = s.open();
        s.send(conn, "BRI");
        s.advance(3600);
        assert!(!s.is_closed(conn));
        s.send(conn, "DGE / HTTP/1.1\r\n\r\n");
        assert_eq!(s.take(conn), error("403 Forbidden", "register first"));
    });
}

#[test]
fn a_connection_silent_for_the_idle_timeout_is_closed_and_its_name_freed() {
    let config = || ServerConfig {
        idle_timeout: Duration::from_secs(60),
        ..ServerConfig::default()
    };
    each_chunking_with(config, |s| {
        let quiet = s.registered("alice", 9001);
        let chatty = s.registered("bob", 9002);
        s.advance(40);
        // Any bytes count as activity and push the deadline back.
        assert_eq!(s.ask(chatty, &bridge()), ok());
        s.advance(20);
        assert!(s.is_closed(quiet), "60 s without a byte");
        assert!(!s.is_closed(chatty), "spoke 20 s ago");
        assert_eq!(s.take(quiet), "", "closed without an answer");
        // alice's registration died with her connection; bob still waits.
        let again = s.open();
        assert_eq!(
            s.ask(again, &register("alice", "127.0.0.9", 9003)),
            ok_contact("alice", "127.0.0.9", 9003)
        );
        assert_eq!(
            s.ask(again, &bridge()),
            ok_contact("bob", "127.0.0.9", 9002)
        );
        s.advance(40);
        assert!(s.is_closed(chatty));
    });
}

// ---------------------------------------------------------------------------
// Introductions that fall through

/// `429` with `Retry-After` and the reason, the connection kept.
fn too_many_fallthroughs(retry_after: u64) -> String {
    let reason = format!("too many peers handed to you went unused; try again in {retry_after}s");
    format!(
        "HTTP/1.1 429 Too Many Requests\r\nRetry-After: {retry_after}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{reason}",
        reason.len()
    )
}

/// Regression: an asker handed a waiter that then unregistered left the waiter
/// stranded; the waiter now goes back to the front, whatever ends the introduction.
#[test]
fn an_introduction_that_falls_through_puts_the_waiter_back_first_in_line() {
    for ending in ["unregister", "register again", "bridge again", "close"] {
        each_chunking(|s| {
            let host = s.add_host();
            let alice = s.registered("alice", 9001);
            assert_eq!(s.ask(alice, &bridge()), ok());
            let asker = s.open_from(host);
            s.send_from(host, asker, &register("mallory", "127.0.0.66", 6666));
            s.send_from(host, asker, &bridge());
            let answers = s.take_from(host, asker);
            assert!(
                answers.ends_with(&ok_contact("alice", "127.0.0.9", 9001)),
                "{answers}"
            );
            // carol arrives meanwhile and waits: alice must still come first.
            let carol = s.registered("carol", 9003);
            assert_eq!(s.ask(carol, &bridge()), ok());
            s.advance(9);
            match ending {
                "unregister" => s.send_from(host, asker, &unregister()),
                "register again" => {
                    s.send_from(host, asker, &register("mallory", "127.0.0.66", 6666))
                }
                "bridge again" => s.send_from(host, asker, &bridge()),
                _ => {
                    s.net.close_raw(host, asker);
                    s.net.run();
                }
            }
            let server = s.net.server(s.server);
            let waiting: Vec<String> = server
                .waiting_clients()
                .iter()
                .map(|c| c.name.to_string())
                .collect();
            let expected: &[&str] = if ending == "bridge again" {
                &["carol"] // the asker was handed alice again
            } else {
                &["alice", "carol"]
            };
            assert_eq!(waiting, expected, "after {ending}");
            // alice heard nothing: her v1 client still believes it is waiting.
            assert_eq!(s.take(alice), "");
        });
    }
}

#[test]
fn past_the_deadline_an_introduction_stands() {
    each_chunking(|s| {
        let alice = s.registered("alice", 9001);
        let bob = s.registered("bob", 9002);
        assert_eq!(s.ask(alice, &bridge()), ok());
        assert_eq!(
            s.ask(bob, &bridge()),
            ok_contact("alice", "127.0.0.9", 9001)
        );
        s.advance(10);
        assert_eq!(s.ask(bob, &unregister()), ok());
        assert_eq!(s.net.server(s.server).waiting(), None);
    });
}

/// Regression: one connection looping REGISTER, BRIDGE, UNREGISTER took every waiter.
/// Now its third fall-through within a minute earns `429` until the minute is up,
/// from that connection and from its IP, and waiters are served to real askers.
#[test]
fn an_asker_whose_introductions_keep_falling_through_gets_429_per_connection_and_ip() {
    each_chunking(|s| {
        let hostile = s.add_host();
        let alice = s.registered("alice", 9001);
        assert_eq!(s.ask(alice, &bridge()), ok());
        let conn = s.open_from(hostile);
        for round in 0..3 {
            s.send_from(hostile, conn, &register("mallory", "127.0.0.66", 6666));
            s.send_from(hostile, conn, &bridge());
            s.send_from(hostile, conn, &unregister());
            let answers = s.take_from(hostile, conn);
            assert!(
                answers.contains(&ok_contact("alice", "127.0.0.9", 9001)),
                "round {round}: {answers}"
            );
            s.advance(1);
        }
        // Three fall-throughs from 0 s to 2 s: refused until 60 s after the first.
        s.send_from(hostile, conn, &register("mallory", "127.0.0.66", 6666));
        s.take_from(hostile, conn);
        s.send_from(hostile, conn, &bridge());
        assert_eq!(s.take_from(hostile, conn), too_many_fallthroughs(57));
        // A new connection from the same IP inherits the count.
        s.net.close_raw(hostile, conn);
        s.net.run();
        let again = s.open_from(hostile);
        s.send_from(hostile, again, &register("mallory2", "127.0.0.66", 6666));
        s.take_from(hostile, again);
        s.send_from(hostile, again, &bridge());
        assert_eq!(s.take_from(hostile, again), too_many_fallthroughs(57));
        // A real asker from another address is handed alice, still first in line.
        let bob = s.registered("bob", 9002);
        assert_eq!(
            s.ask(bob, &bridge()),
            ok_contact("alice", "127.0.0.9", 9001)
        );
        // Once the minute is up the hostile IP may bridge again.
        s.advance(57);
        s.send_from(hostile, again, &bridge());
        assert_eq!(s.take_from(hostile, again), ok());
    });
}

#[test]
fn a_zero_fallthrough_limit_never_refuses() {
    let lenient = || ServerConfig {
        fallthrough_limit: 0,
        ..ServerConfig::default()
    };
    each_chunking_with(lenient, |s| {
        let alice = s.registered("alice", 9001);
        assert_eq!(s.ask(alice, &bridge()), ok());
        let conn = s.open();
        for _ in 0..5 {
            s.send(conn, &register("mallory", "127.0.0.66", 6666));
            s.send(conn, &bridge());
            s.send(conn, &unregister());
        }
        let answers = s.take(conn);
        assert!(!answers.contains("429"), "{answers}");
        assert_eq!(
            s.net.server(s.server).waiting().map(|c| c.name),
            Some(name("alice"))
        );
    });
}

/// A connection that just ends puts its waiter back but is not held against its address:
/// every client ends so when its person quits, and many people can share one address.
#[test]
fn askers_that_simply_leave_requeue_their_waiter_but_their_address_is_not_refused() {
    each_chunking(|s| {
        let crowd = s.add_host();
        let alice = s.registered("alice", 9001);
        assert_eq!(s.ask(alice, &bridge()), ok());
        for i in 0..5 {
            let conn = s.open_from(crowd);
            s.send_from(crowd, conn, &register(&format!("p{i}"), "127.0.0.66", 6666));
            s.send_from(crowd, conn, &bridge());
            let answers = s.take_from(crowd, conn);
            assert!(
                answers.ends_with(&ok_contact("alice", "127.0.0.9", 9001)),
                "{i}: {answers}"
            );
            s.net.close_raw(crowd, conn);
            s.net.run();
        }
        assert_eq!(
            s.net.server(s.server).waiting().map(|c| c.name),
            Some(name("alice"))
        );
    });
}

/// A waiter that asked again after being handed out has moved on (here it was
/// handed a newer waiter itself): its first asker dropping it does not put it back.
#[test]
fn a_waiter_that_bridged_again_since_is_not_put_back() {
    each_chunking(|s| {
        let alice = s.registered("alice", 9001);
        let mallory = s.registered("mallory", 9666);
        let carol = s.registered("carol", 9003);
        assert_eq!(s.ask(alice, &bridge()), ok());
        assert_eq!(
            s.ask(mallory, &bridge()),
            ok_contact("alice", "127.0.0.9", 9001)
        );
        assert_eq!(s.ask(carol, &bridge()), ok());
        assert_eq!(
            s.ask(alice, &bridge()),
            ok_contact("carol", "127.0.0.9", 9003)
        );
        assert_eq!(s.ask(mallory, &unregister()), ok());
        assert_eq!(s.net.server(s.server).waiting(), None);
    });
}
