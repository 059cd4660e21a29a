//! Scenario tests for the server's relay: two peers of one live match each open a
//! new connection, send RELAY with the match's ticket, and are spliced. Each runs
//! under several chunkings of the bytes on the wire.

mod server_scene;
mod support;

use std::time::Duration;

use bridgechat_core::codec::{Inbound, Ticket};
use bridgechat_core::server::{CloseReason, RelayEnd, ServerConfig, ServerEvent};
use bridgechat_core::{ConnId, Decoder, Request};
use server_scene::*;
use support::wire::*;
use support::*;

const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

/// Bytes no HTTP decoder would take: a relay must not care.
const BINARY: &[u8] = b"\x00\xff\r\n\r\nHTTP/1.1 999 \x80\x81 GET / HTTP/1.1\r\n\r\n";

/// A v2 match: alice waits, bob asks. Their server connections, and the ticket.
struct Match {
    alice: ConnId,
    bob: ConnId,
    ticket: Ticket,
}

fn matched(s: &mut Scene) -> Match {
    let alice = s.registered_v2("alice", 9001);
    assert_eq!(s.ask(alice, &bridge()), ok());
    let bob = s.registered_v2("bob", 9002);
    s.send(bob, &bridge());
    let answer = &responses(s.take(bob).as_bytes())[0];
    let ticket = answer.ticket.expect("both speak v2: a ticket");
    match inbound(&s.take(alice)).as_slice() {
        [Inbound::Request(Request::Matched(intro))] => assert_eq!(intro.ticket, Some(ticket)),
        other => panic!("expected MATCHED, got {other:?}"),
    }
    Match { alice, bob, ticket }
}

fn inbound(text: &str) -> Vec<Inbound> {
    let mut decoder = Decoder::default();
    let mut input = text.as_bytes();
    let mut out = Vec::new();
    while let Some(message) = decoder.decode_message(&mut input).expect("well framed") {
        out.push(message);
    }
    out
}

fn relay(ticket: &Ticket) -> String {
    let mut hex = Vec::new();
    ticket.write_hex(&mut hex);
    let hex = String::from_utf8(hex).unwrap();
    format!("RELAY / HTTP/1.1\r\nTicket: {hex}\r\nContent-Length: 0\r\n\r\n")
}

/// Everything `conn` received, as bytes.
fn received(s: &Scene, conn: ConnId) -> Vec<u8> {
    let raw = s.net.raw(s.client);
    raw.received.get(&conn).cloned().unwrap_or_default()
}

fn send_bytes(s: &mut Scene, conn: ConnId, bytes: &[u8]) {
    s.net.send_raw(s.client, conn, bytes);
    s.net.run();
}

/// The waiter's server connection was told its peer waits at the relay.
fn told_relay(s: &mut Scene, conn: ConnId, ticket: Ticket) {
    match inbound(&s.take(conn)).as_slice() {
        [Inbound::Request(Request::Relay(t))] => assert_eq!(*t, ticket, "the match's ticket"),
        other => panic!("expected a RELAY notification, got {other:?}"),
    }
}

/// Both peers at the relay, spliced: (bob's relay connection, alice's).
fn spliced(s: &mut Scene, m: &Match) -> (ConnId, ConnId) {
    let bob = s.open();
    s.send(bob, &relay(&m.ticket));
    told_relay(s, m.alice, m.ticket);
    let alice = s.open();
    s.send(alice, &relay(&m.ticket));
    assert_eq!(s.take(bob), OK);
    assert_eq!(s.take(alice), OK);
    (bob, alice)
}

fn relay_ended(s: &mut Scene) -> Vec<RelayEnd> {
    s.net
        .take_server_events(s.server)
        .into_iter()
        .filter_map(|e| match e {
            ServerEvent::RelayEnded { why, .. } => Some(why),
            _ => None,
        })
        .collect()
}

fn config(change: impl Fn(&mut ServerConfig)) -> impl Fn() -> ServerConfig {
    move || {
        let mut config = ServerConfig::default();
        change(&mut config);
        config
    }
}

#[test]
fn the_relay_copies_bytes_both_ways_verbatim_and_in_order() {
    each_chunking(|s| {
        let m = matched(s);
        let bob = s.open();
        // Bytes pipelined behind the RELAY of the first peer are held until the second comes.
        s.send(bob, &format!("{}CHAT / HTTP/1.1\r\n", relay(&m.ticket)));
        assert_eq!(
            s.take(bob),
            "",
            "the first peer hears nothing until the second comes"
        );
        told_relay(s, m.alice, m.ticket);
        let alice = s.open();
        // ... and so are the second's, after both 200s.
        let mut join = relay(&m.ticket).into_bytes();
        join.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        send_bytes(s, alice, &join);
        send_bytes(s, bob, BINARY);
        send_bytes(s, alice, BINARY);
        send_bytes(s, bob, b"MESSAGE / HTTP/1.1\r\n");
        let want_at_alice = [OK.as_bytes(), b"CHAT / HTTP/1.1\r\n", BINARY].concat();
        let want_at_alice = [&want_at_alice[..], b"MESSAGE / HTTP/1.1\r\n"].concat();
        let want_at_bob = [OK.as_bytes(), b"HTTP/1.1 200 OK\r\n", BINARY].concat();
        assert_eq!(received(s, alice), want_at_alice);
        assert_eq!(received(s, bob), want_at_bob);
        assert!(!s.is_closed(alice) && !s.is_closed(bob));

        let stats = s.net.server(s.server).stats();
        assert_eq!(stats.relays, 1);
        assert_eq!(
            stats.connections, 4,
            "both server connections and both relay sides"
        );
        let events = s.net.take_server_events(s.server);
        assert!(events
            .iter()
            .any(|e| matches!(e, ServerEvent::RelayStarted { .. })));
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, ServerEvent::Rejected { .. })),
            "nothing relayed is parsed: {events:?}"
        );
    });
}

#[test]
fn relayed_connections_are_not_held_to_the_timers_of_http_connections() {
    each_chunking(|s| {
        let m = matched(s);
        let (bob, alice) = spliced(s, &m);
        // Past the register timeout and a half-sent request head's timeout.
        send_bytes(s, bob, b"CHAT / HTTP/1.1\r\nTick");
        s.advance(40);
        send_bytes(s, alice, b"still here");
        assert!(!s.is_closed(alice) && !s.is_closed(bob));
        assert!(received(s, bob).ends_with(b"still here"));
        assert!(received(s, alice).ends_with(b"CHAT / HTTP/1.1\r\nTick"));
    });
}

#[test]
fn the_first_peer_is_held_and_the_waiter_is_told_to_come() {
    each_chunking(|s| {
        let m = matched(s);
        let bob = s.open();
        s.send(bob, &relay(&m.ticket));
        assert_eq!(s.take(bob), "");
        assert!(!s.is_closed(bob));
        assert_eq!(
            s.take(m.bob),
            "",
            "the asker's server connection hears nothing"
        );
        told_relay(s, m.alice, m.ticket);
        let events = s.net.take_server_events(s.server);
        assert!(events
            .iter()
            .any(|e| matches!(e, ServerEvent::RelayJoined { conn } if *conn != m.alice)));
        assert_eq!(s.net.server(s.server).stats().relays, 1);
        s.advance(9);
        assert_eq!(s.take(bob), "", "still held within the join timeout");
    });
}

#[test]
fn a_peer_that_never_comes_leaves_the_first_with_504() {
    each_chunking(|s| {
        let m = matched(s);
        let bob = s.open();
        s.send(bob, &relay(&m.ticket));
        s.advance(11);
        assert_eq!(
            s.take(bob),
            error_closing("504 Gateway Timeout", "peer did not come to the relay")
        );
        assert!(s.is_closed(bob));
        assert_eq!(s.net.server(s.server).stats().relays, 0);
        assert!(relay_ended(s).contains(&RelayEnd::PeerDidNotCome { secs: 10 }));
    });
}

#[test]
fn a_ticket_of_no_match_is_refused_with_403() {
    each_chunking(|s| {
        let _ = matched(s);
        let stranger = s.open();
        let forged = Ticket::from_bytes([7; 16]);
        assert_eq!(
            s.ask(stranger, &relay(&forged)),
            error_closing("403 Forbidden", "unknown ticket")
        );
        assert!(s.is_closed(stranger));
    });
}

#[test]
fn a_third_peer_with_the_same_ticket_is_refused_with_403() {
    each_chunking(|s| {
        let m = matched(s);
        let (bob, alice) = spliced(s, &m);
        let third = s.open();
        assert_eq!(
            s.ask(third, &relay(&m.ticket)),
            error_closing("403 Forbidden", "unknown ticket")
        );
        // The pair carries on.
        send_bytes(s, bob, b"hi");
        assert!(received(s, alice).ends_with(b"hi"));
        // After the relay ends the ticket opens nothing either.
        s.net.close_raw(s.client, bob);
        s.net.run();
        let late = s.open();
        assert_eq!(
            s.ask(late, &relay(&m.ticket)),
            error_closing("403 Forbidden", "unknown ticket")
        );
    });
}

#[test]
fn a_ticket_whose_match_fell_through_or_completed_opens_no_relay() {
    each_chunking(|s| {
        let m = matched(s);
        s.net.close_raw(s.client, m.bob);
        s.net.run();
        assert!(s.take(m.alice).starts_with("UNMATCHED"));
        let late = s.open();
        assert_eq!(
            s.ask(late, &relay(&m.ticket)),
            error_closing("403 Forbidden", "unknown ticket")
        );

        let bob = s.registered_v2("bob2", 9003);
        s.send(bob, &bridge());
        let ticket = responses(s.take(bob).as_bytes())[0].ticket.unwrap();
        let mut started = Vec::new();
        bridgechat_core::codec::write_started(&mut started, Some(&ticket));
        s.take(m.alice);
        assert!(s
            .ask(m.alice, std::str::from_utf8(&started).unwrap())
            .starts_with("HTTP/1.1 200 OK"));
        let late = s.open();
        assert_eq!(
            s.ask(late, &relay(&ticket)),
            error_closing("403 Forbidden", "unknown ticket"),
            "STARTED completed the match"
        );
    });
}

#[test]
fn a_server_that_does_not_relay_answers_503() {
    each_chunking_with(config(|c| c.relay = false), |s| {
        let m = matched(s);
        let bob = s.open();
        assert_eq!(
            s.ask(bob, &relay(&m.ticket)),
            error_closing("503 Service Unavailable", "this server does not relay")
        );
        assert!(s.is_closed(bob));
        assert_eq!(s.take(m.alice), "", "the waiter is not told");
    });
}

#[test]
fn a_full_relay_answers_503_until_a_slot_frees() {
    each_chunking_with(config(|c| c.max_relays = 1), |s| {
        let first = matched(s);
        let (bob, _alice) = spliced(s, &first);
        let carol = s.registered_v2("carol", 9003);
        assert_eq!(s.ask(carol, &bridge()), ok());
        let dave = s.registered_v2("dave", 9004);
        s.send(dave, &bridge());
        let ticket = responses(s.take(dave).as_bytes())[0].ticket.unwrap();
        s.take(carol);
        let refused = s.open();
        assert_eq!(
            s.ask(refused, &relay(&ticket)),
            unavailable(1, "relay full")
        );
        // The first relay ends; its slot serves the second pair's ticket.
        s.net.close_raw(s.client, bob);
        s.net.run();
        assert_eq!(s.net.server(s.server).stats().relays, 0);
        let again = s.open();
        s.send(again, &relay(&ticket));
        assert_eq!(s.take(again), "", "held: the relay has room again");
        told_relay(s, carol, ticket);
    });
}

#[test]
fn one_side_closing_closes_the_other_after_what_was_queued() {
    each_chunking(|s| {
        let m = matched(s);
        let (bob, alice) = spliced(s, &m);
        s.net.send_raw(s.client, bob, b"last words");
        s.net.close_raw(s.client, bob);
        s.net.run();
        assert!(s.is_closed(alice));
        assert!(received(s, alice).ends_with(b"last words"));
        assert!(relay_ended_with_close(s));
        assert_eq!(s.net.server(s.server).stats().relays, 0);
        assert_eq!(s.net.server(s.server).stats().connections, 2);
    });
}

fn relay_ended_with_close(s: &mut Scene) -> bool {
    let events = s.net.take_server_events(s.server);
    let ended = events.iter().any(|e| {
        matches!(
            e,
            ServerEvent::RelayEnded {
                why: RelayEnd::Closed(_),
                first_to_second: 10,
                second_to_first: 0,
                ..
            }
        )
    });
    let closes = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                ServerEvent::Closed {
                    reason: CloseReason::PeerClosed | CloseReason::RelayEnded,
                    ..
                }
            )
        })
        .count();
    ended && closes == 2
}

#[test]
fn a_reset_side_ends_the_relay_too() {
    each_chunking(|s| {
        let m = matched(s);
        let (bob, alice) = spliced(s, &m);
        s.net.reset_raw(s.client, alice);
        s.net.run();
        assert!(s.is_closed(bob));
    });
}

#[test]
fn a_relay_outlives_both_server_connections() {
    each_chunking(|s| {
        let m = matched(s);
        let (bob, alice) = spliced(s, &m);
        s.net.close_raw(s.client, m.bob);
        s.net.close_raw(s.client, m.alice);
        s.net.run();
        assert_eq!(s.net.server(s.server).stats().registered, 0);
        send_bytes(s, bob, b"still there?");
        send_bytes(s, alice, b"yes");
        assert!(received(s, alice).ends_with(b"still there?"));
        assert!(received(s, bob).ends_with(b"yes"));
        assert!(!s.is_closed(alice) && !s.is_closed(bob));
    });
}

#[test]
fn past_its_byte_budget_a_relay_ends_both_sides() {
    each_chunking_with(config(|c| c.relay_budget = 100), |s| {
        let m = matched(s);
        let (bob, alice) = spliced(s, &m);
        send_bytes(s, bob, &[b'a'; 60]);
        send_bytes(s, alice, &[b'b'; 40]);
        assert!(!s.is_closed(alice) && !s.is_closed(bob), "100 bytes fit");
        send_bytes(s, bob, b"!");
        assert!(s.is_closed(alice) && s.is_closed(bob));
        assert!(
            !received(s, alice).ends_with(b"!"),
            "nothing past the budget"
        );
        assert_eq!(relay_ended(s), [RelayEnd::BudgetSpent { budget: 100 }]);
    });
}

#[test]
fn faster_than_its_rate_a_relay_ends_both_sides() {
    each_chunking_with(config(|c| c.relay_rate = 10), |s| {
        let m = matched(s);
        let (bob, alice) = spliced(s, &m);
        // 10 bytes/s over a 10 s window: 100 bytes a window.
        send_bytes(s, bob, &[b'a'; 90]);
        s.advance(10);
        send_bytes(s, bob, &[b'a'; 90]);
        assert!(!s.is_closed(alice), "a new window");
        send_bytes(s, alice, &[b'b'; 11]);
        assert!(s.is_closed(alice) && s.is_closed(bob));
        assert_eq!(relay_ended(s), [RelayEnd::RateExceeded { rate: 10 }]);
    });
}

#[test]
fn an_idle_relay_ends_both_sides() {
    each_chunking_with(config(|c| c.relay_idle = Duration::from_secs(60)), |s| {
        let m = matched(s);
        let (bob, alice) = spliced(s, &m);
        s.advance(50);
        send_bytes(s, bob, b"ping");
        s.advance(50);
        assert!(!s.is_closed(alice), "traffic 50 s ago");
        s.advance(11);
        assert!(s.is_closed(alice) && s.is_closed(bob));
        assert_eq!(relay_ended(s), [RelayEnd::Idle { secs: 60 }]);
    });
}

#[test]
fn relay_is_a_first_request_only() {
    each_chunking(|s| {
        let m = matched(s);
        // On a v2 server connection: a mistake, said plainly; the connection stays.
        assert_eq!(
            s.ask(m.bob, &relay(&m.ticket)),
            error(
                "400 Bad Request",
                "RELAY must be the first request on a new connection"
            )
        );
        // A version 1 connection learns nothing new.
        let v1 = s.registered("carol", 9003);
        assert_eq!(
            s.ask(v1, &relay(&m.ticket)),
            error("501 Not Implemented", "unknown method")
        );
        // Without a ticket it is no request a v1 server knows either.
        let fresh = s.open();
        assert_eq!(
            s.ask(fresh, "RELAY / HTTP/1.1\r\n\r\n"),
            error("501 Not Implemented", "unknown method")
        );
        // The ticket is not spent by any of these.
        let bob = s.open();
        s.send(bob, &relay(&m.ticket));
        assert_eq!(s.take(bob), "");
        told_relay(s, m.alice, m.ticket);
    });
}

#[test]
fn the_log_never_shows_a_ticket() {
    each_chunking_with(config(|c| c.trace = true), |s| {
        let m = matched(s);
        let (bob, _alice) = spliced(s, &m);
        send_bytes(s, bob, b"x");
        let mut hex = Vec::new();
        m.ticket.write_hex(&mut hex);
        let hex = String::from_utf8(hex).unwrap();
        for event in s.net.take_server_events(s.server) {
            let shown = match &event {
                ServerEvent::Trace { bytes, .. } => String::from_utf8_lossy(bytes).into(),
                other => format!("{other:?}"),
            };
            assert!(!shown.contains(&hex), "{shown}");
        }
    });
}

#[test]
fn the_metrics_count_relays_and_relayed_bytes() {
    let mut s = Scene::new(Chunking::Whole, 1, ServerConfig::default());
    let m = matched(&mut s);
    let (bob, alice) = spliced(&mut s, &m);
    send_bytes(&mut s, bob, b"12345");
    send_bytes(&mut s, alice, b"678");
    let pages = s.net.server(s.server).pages();
    let mut text = String::new();
    pages.render_metrics(s.net.now, &mut text);
    assert!(text.contains("bridgechat_relays_active 1\n"), "{text}");
    assert!(text.contains("bridgechat_relays_total 1\n"), "{text}");
    assert!(
        text.contains("bridgechat_relayed_bytes_total 8\n"),
        "{text}"
    );
    let mut status = String::new();
    pages.render_status(s.net.now, None, &mut status);
    assert!(status.contains("relays open          1\n"), "{status}");
    s.net.close_raw(s.client, bob);
    s.net.run();
    let mut text = String::new();
    pages.render_metrics(s.net.now, &mut text);
    assert!(text.contains("bridgechat_relays_active 0\n"), "{text}");
}

#[test]
fn a_first_peer_that_leaves_frees_its_slot_and_spends_the_ticket() {
    each_chunking_with(config(|c| c.max_relays = 1), |s| {
        let m = matched(s);
        let bob = s.open();
        s.send(bob, &relay(&m.ticket));
        told_relay(s, m.alice, m.ticket);
        let joined = s
            .net
            .take_server_events(s.server)
            .into_iter()
            .find_map(|e| match e {
                ServerEvent::RelayJoined { conn } => Some(conn),
                _ => None,
            });
        s.net.close_raw(s.client, bob);
        s.net.run();
        assert_eq!(s.net.server(s.server).stats().relays, 0);
        let joined = joined.expect("bob joined the relay");
        assert_eq!(relay_ended(s), [RelayEnd::Closed(joined)]);
        let alice = s.open();
        assert_eq!(
            s.ask(alice, &relay(&m.ticket)),
            error_closing("403 Forbidden", "unknown ticket"),
            "the relay this ticket opened is over"
        );
    });
}

#[test]
fn shutting_down_closes_every_relay() {
    each_chunking(|s| {
        let m = matched(s);
        let (bob, alice) = spliced(s, &m);
        let carol = s.registered_v2("carol", 9003);
        assert_eq!(s.ask(carol, &bridge()), ok());
        let dave = s.registered_v2("dave", 9004);
        s.send(dave, &bridge());
        let ticket = responses(s.take(dave).as_bytes())[0].ticket.unwrap();
        let held = s.open();
        s.send(held, &relay(&ticket));
        s.net
            .server_input(s.server, bridgechat_core::server::ServerInput::Shutdown);
        s.net.run();
        assert!(s.is_closed(bob) && s.is_closed(alice) && s.is_closed(held));
        assert_eq!(
            relay_ended(s),
            [RelayEnd::Shutdown, RelayEnd::Shutdown],
            "one spliced, one half-joined"
        );
    });
}
