//! Scenario tests for protocol version 2 at the server: notifications, named waits,
//! tickets, fall-through, and version 1 clients left exactly as they were. Each runs
//! under several chunkings of the bytes on the wire.

mod server_scene;
mod support;

use bridgechat_core::codec::{Inbound, Introduction, Ticket, Unmatched, Version};
use bridgechat_core::server::ServerConfig;
use bridgechat_core::{ConnId, Decoder, Request, Response, Status};
use server_scene::*;
use support::wire::*;
use support::*;

/// Every message received on `conn` since the last look, decoded.
fn messages(s: &mut Scene, conn: ConnId) -> Vec<Inbound> {
    let text = s.take(conn);
    let mut decoder = Decoder::default();
    let mut input = text.as_bytes();
    let mut out = Vec::new();
    while let Some(message) = decoder.decode_message(&mut input).expect("well framed") {
        out.push(message);
    }
    assert!(input.is_empty() && !decoder.is_mid_message(), "{text}");
    out
}

fn one_answer(s: &mut Scene, conn: ConnId) -> Response {
    match messages(s, conn).as_slice() {
        [Inbound::Response(r)] => r.clone(),
        other => panic!("expected one answer, got {other:?}"),
    }
}

fn matched(s: &mut Scene, conn: ConnId) -> Introduction {
    match messages(s, conn).as_slice() {
        [Inbound::Request(Request::Matched(intro))] => *intro,
        other => panic!("expected MATCHED, got {other:?}"),
    }
}

fn unmatched(s: &mut Scene, conn: ConnId) -> Unmatched {
    match messages(s, conn).as_slice() {
        [Inbound::Request(Request::Unmatched(u))] => u.clone(),
        other => panic!("expected UNMATCHED, got {other:?}"),
    }
}

/// The waiter's contact as the asker's answer carries it, and the match's ticket.
fn paired_with(s: &mut Scene, conn: ConnId, waiter: &str) -> Option<Ticket> {
    let answer = one_answer(s, conn);
    assert_eq!(answer.status, Status::OK, "{}", answer.reason_text());
    assert_eq!(answer.contact.map(|c| c.name), Some(name(waiter)));
    let seen = s.net.addr_of(s.client, 0).ip();
    assert_eq!(
        answer.observed.map(|o| o.ip()),
        Some(seen),
        "where the server sees the waiter, beside the contact it declared"
    );
    answer.ticket
}

fn started(ticket: Option<Ticket>) -> String {
    let mut out = Vec::new();
    bridgechat_core::codec::write_started(&mut out, ticket.as_ref());
    String::from_utf8(out).unwrap()
}

fn waiting_names(s: &Scene) -> Vec<String> {
    let server = s.net.server(s.server);
    server
        .waiting_clients()
        .iter()
        .map(|c| c.name.to_string())
        .collect()
}

#[test]
fn register_with_the_opt_in_is_answered_with_the_observed_address() {
    each_chunking(|s| {
        let conn = s.open();
        s.send(conn, &register_v2("alice", "10.0.0.5", 9001));
        let answer = one_answer(s, conn);
        assert_eq!(answer.version, Version::V2);
        let seen = s.net.addr_of(s.client, 0).ip();
        assert_eq!(answer.observed.map(|o| o.ip()), Some(seen));
        assert_ne!(answer.observed.map(|o| o.port()), Some(0));
    });
}

/// The stranded-waiter story: bob is handed alice and leaves without a chat; alice is
/// told at once, waits again first in line, and the next bob is handed her.
#[test]
fn a_waiter_whose_match_falls_through_is_told_and_handed_to_the_next_peer() {
    each_chunking(|s| {
        let alice = s.registered_v2("alice", 9001);
        assert_eq!(s.ask(alice, &bridge()), ok());
        let bob = s.registered_v2("bob", 9002);
        s.send(bob, &bridge());
        let ticket = paired_with(s, bob, "alice");
        assert!(ticket.is_some(), "both speak v2: a ticket");
        let told = matched(s, alice);
        assert_eq!(told.peer.name, name("bob"));
        assert_eq!(told.peer_version, Version::V2);
        assert_eq!(told.ticket, ticket, "one ticket for both");
        assert_eq!(waiting_names(s), Vec::<String>::new());

        s.net.close_raw(s.client, bob);
        s.net.run();
        let fell = unmatched(s, alice);
        assert_eq!(fell.name, name("bob"));
        assert_eq!(fell.ticket, ticket);
        assert_eq!(fell.reason, "bob left the server");
        assert_eq!(waiting_names(s), ["alice"]);

        let bob2 = s.registered_v2("bob", 9002);
        s.send(bob2, &bridge());
        let second = paired_with(s, bob2, "alice");
        assert!(second.is_some() && second != ticket, "a fresh ticket");
        assert_eq!(matched(s, alice).ticket, second);
        assert_eq!(s.ask(alice, &started(second)), ok());
        assert_eq!(s.net.server(s.server).stats().pending_matches, 0);
        // The match is complete: bob leaving now strands nobody.
        s.net.close_raw(s.client, bob2);
        s.net.run();
        assert_eq!(s.take(alice), "");
        assert_eq!(waiting_names(s), Vec::<String>::new());
    });
}

#[test]
fn every_asker_signal_and_the_deadline_make_a_match_fall_through_with_its_reason() {
    let endings = [
        ("unregister", "bob unregistered"),
        ("register again", "bob registered again"),
        ("bridge again", "bob asked for another peer"),
        ("time", "bob did not start the chat within 10 s"),
    ];
    for (ending, reason) in endings {
        each_chunking(|s| {
            let alice = s.registered_v2("alice", 9001);
            let carol = s.registered_v2("carol", 9003);
            assert_eq!(s.ask(alice, &bridge()), ok());
            let bob = s.registered_v2("bob", 9002);
            s.send(bob, &bridge());
            paired_with(s, bob, "alice");
            matched(s, alice);
            // carol comes meanwhile: alice, put back, must still be first.
            assert_eq!(s.ask(carol, &bridge()), ok());
            match ending {
                "unregister" => s.send(bob, &unregister()),
                "register again" => s.send(bob, &register_v2("bob", "127.0.0.9", 9002)),
                "bridge again" => s.send(bob, &bridge()),
                _ => {
                    s.advance(9);
                    assert_eq!(s.take(alice), "", "not before the deadline");
                    s.advance(1);
                }
            }
            let told = messages(s, alice);
            let Some(Inbound::Request(Request::Unmatched(fell))) = told.first() else {
                panic!("expected UNMATCHED first after {ending}: {told:?}");
            };
            assert_eq!(fell.reason, reason, "after {ending}");
            let expected: &[&str] = if ending == "bridge again" {
                // bob asked again: alice, back first in line, is handed to him once more.
                assert!(
                    matches!(&told[1..], [Inbound::Request(Request::Matched(m))] if m.peer.name == name("bob")),
                    "{told:?}"
                );
                &["carol"]
            } else {
                assert_eq!(told.len(), 1, "{told:?}");
                &["alice", "carol"]
            };
            assert_eq!(waiting_names(s), expected, "after {ending}");
        });
    }
}

/// The named meeting: bob waits for alice only; carol's plain BRIDGE does not take
/// him; alice's plain BRIDGE prefers him (he asked for her) over the anyone-waiter.
#[test]
fn a_named_waiter_is_handed_only_to_the_one_it_named() {
    each_chunking(|s| {
        let bob = s.registered_v2("bob", 9002);
        let carol = s.registered_v2("carol", 9003);
        let alice = s.registered_v2("alice", 9001);
        assert_eq!(s.ask(bob, &bridge_for("ALICE")), ok(), "names ignore case");
        assert_eq!(s.net.server(s.server).stats().waiting_for_someone, 1);
        assert_eq!(s.ask(carol, &bridge()), ok(), "carol does not take bob");
        assert_eq!(waiting_names(s), ["carol"]);
        s.send(alice, &bridge());
        let ticket = paired_with(s, alice, "bob");
        let told = matched(s, bob);
        assert_eq!((told.peer.name, told.ticket), (name("alice"), ticket));
        assert_eq!(waiting_names(s), ["carol"], "carol still waits for anyone");
        assert_eq!(s.take(carol), "");
    });
}

#[test]
fn two_who_name_each_other_meet_and_a_name_not_yet_registered_is_waited_for() {
    each_chunking(|s| {
        let bob = s.registered_v2("bob", 9002);
        assert_eq!(
            s.ask(bob, &bridge_for("alice")),
            ok(),
            "alice is not here yet"
        );
        let carol = s.registered_v2("carol", 9003);
        assert_eq!(
            s.ask(carol, &bridge_for("bob")),
            ok(),
            "bob waits, but not for carol"
        );
        let alice = s.registered_v2("alice", 9001);
        s.send(alice, &bridge_for("bob"));
        paired_with(s, alice, "bob");
        assert_eq!(matched(s, bob).peer.name, name("alice"));
        let server = s.net.server(s.server);
        let for_bob: Vec<_> = server
            .waiting_for(&name("bob"))
            .iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(for_bob, [name("carol")]);
        assert_eq!(s.take(carol), "");
    });
}

#[test]
fn a_named_waiter_whose_match_falls_through_waits_for_the_same_name_again() {
    each_chunking(|s| {
        let bob = s.registered_v2("bob", 9002);
        assert_eq!(s.ask(bob, &bridge_for("alice")), ok());
        let alice = s.registered_v2("alice", 9001);
        s.send(alice, &bridge());
        paired_with(s, alice, "bob");
        matched(s, bob);
        assert_eq!(s.ask(alice, &unregister()), ok());
        assert_eq!(unmatched(s, bob).reason, "alice unregistered");
        let server = s.net.server(s.server);
        let for_alice: Vec<_> = server
            .waiting_for(&name("alice"))
            .iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(for_alice, [name("bob")]);
        assert_eq!(server.waiting(), None, "not in the anyone-place");
    });
}

#[test]
fn bridging_with_yourself_is_400() {
    each_chunking(|s| {
        let alice = s.registered_v2("alice", 9001);
        assert_eq!(
            s.ask(alice, &bridge_for("Alice")),
            error("400 Bad Request", "cannot bridge with yourself")
        );
    });
}

#[test]
fn started_with_a_stranger_ticket_does_not_complete_the_match() {
    each_chunking(|s| {
        let alice = s.registered_v2("alice", 9001);
        assert_eq!(s.ask(alice, &bridge()), ok());
        let bob = s.registered_v2("bob", 9002);
        s.send(bob, &bridge());
        let ticket = paired_with(s, bob, "alice");
        matched(s, alice);
        let stranger = Some(Ticket::from_bytes([9; 16]));
        assert_ne!(stranger, ticket);
        assert_eq!(s.ask(alice, &started(stranger)), ok());
        assert_eq!(s.net.server(s.server).stats().pending_matches, 1);
        s.advance(10);
        assert_eq!(unmatched(s, alice).ticket, ticket);
    });
}

/// Version 1 clients get exactly version 1, byte for byte, whoever they meet.
#[test]
fn a_v1_client_gets_exactly_version_1_from_the_v2_server() {
    each_chunking(|s| {
        // A v1 waiter handed to a v2 asker: the asker is told it speaks v1; no ticket.
        let alice = s.registered("alice", 9001);
        assert_eq!(s.ask(alice, "BRIDGE / HTTP/1.1\r\nPeer: bob\r\n\r\n"), ok());
        let bob = s.registered_v2("bob", 9002);
        s.send(bob, &bridge());
        let answer = one_answer(s, bob);
        assert_eq!(answer.peer_version, Some(Version::V1));
        assert_eq!(answer.ticket, None);
        assert_eq!(s.take(alice), "", "a v1 waiter is never notified");

        // A v2 waiter handed to a v1 asker: the v1 answer is the contract's, exactly.
        let carol = s.registered_v2("carol", 9003);
        assert_eq!(s.ask(carol, &bridge()), ok());
        let dave = s.registered("dave", 9004);
        assert_eq!(
            s.ask(dave, &bridge()),
            ok_contact("carol", "127.0.0.9", 9003)
        );
        let told = matched(s, carol);
        assert_eq!((told.peer_version, told.ticket), (Version::V1, None));
        assert_eq!(s.ask(carol, &started(None)), ok());

        // v2 methods are unknown to a v1 connection.
        assert_eq!(
            s.ask(dave, &started(None)),
            error("501 Not Implemented", "unknown method")
        );
        assert_eq!(
            s.ask(dave, "STARTED / HTTP/1.1\r\nTicket: nothex\r\n\r\n"),
            error("501 Not Implemented", "unknown method")
        );
    });
}

/// The ticket a fresh server seeded with `seed` issues for its first introduction.
fn first_ticket(seed: [u8; 32]) -> Option<Ticket> {
    use bridgechat_core::server::Server;
    use bridgechat_core::{Endpoint, Output};
    let now = std::time::Instant::now();
    let mut server = Server::new(ServerConfig::default(), seed);
    let answers = |server: &mut Server, conn, bytes: String| {
        server.handle_data(now, conn, bytes.as_bytes());
        let mut sent = Vec::new();
        while let Some(output) = server.poll_output() {
            if let Output::Transmit { conn: to, bytes } = output {
                if to == conn {
                    sent.extend_from_slice(bytes);
                }
            }
        }
        responses(&sent)
    };
    let alice = server.handle_accept(now, "127.0.0.2:5000".parse().unwrap());
    let bob = server.handle_accept(now, "127.0.0.3:5000".parse().unwrap());
    answers(&mut server, alice, register_v2("alice", "127.0.0.2", 9001));
    answers(&mut server, alice, bridge());
    answers(&mut server, bob, register_v2("bob", "127.0.0.3", 9002));
    answers(&mut server, bob, bridge())
        .pop()
        .and_then(|r| r.ticket)
}

#[test]
fn tickets_come_from_the_seed_the_transport_gives() {
    let first = first_ticket([3; 32]);
    assert!(first.is_some());
    assert_eq!(
        first,
        first_ticket([3; 32]),
        "the core draws only from its seed"
    );
    assert_ne!(first, first_ticket([4; 32]));
}
