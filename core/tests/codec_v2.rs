//! Version 2 on the wire: the exact bytes of every new message, and a v2 client's
//! server connection, where answers and notifications share one byte stream.

use std::net::SocketAddr;

use bridgechat_core::codec::{
    self, Header, HeaderError, Inbound, Introduction, Ticket, Unmatched, Version,
};
use bridgechat_core::contact::{Contact, InvalidValue, Name};
use bridgechat_core::{Decoder, Request, Response, Status};

const TICKET_HEX: &str = "5f0c30313233343536373839abcdef00";

fn ticket() -> Ticket {
    Ticket::parse(TICKET_HEX.as_bytes()).unwrap()
}

fn contact(name: &str, ip: &str, port: u16) -> Contact {
    Contact::new(
        Name::new(name.as_bytes()).unwrap(),
        ip.parse().unwrap(),
        port,
    )
    .unwrap()
}

fn observed() -> SocketAddr {
    "203.0.113.7:51234".parse().unwrap()
}

fn decode_one_request(wire: &[u8]) -> Request {
    let mut decoder = Decoder::default();
    let mut input = wire;
    let request = decoder.decode_request(&mut input).unwrap().unwrap();
    assert!(input.is_empty(), "one message, wholly read");
    request
}

fn decode_one_response(wire: &[u8]) -> Response {
    let mut decoder = Decoder::default();
    let mut input = wire;
    let response = decoder.decode_response(&mut input).unwrap().unwrap();
    assert!(input.is_empty(), "one message, wholly read");
    response
}

fn encoded(request: &Request) -> Vec<u8> {
    let mut out = Vec::new();
    request.encode(&mut out).unwrap();
    out
}

#[test]
fn a_v2_register_carries_the_opt_in_and_round_trips() {
    let alice = contact("alice", "10.0.0.5", 9001);
    let mut wire = Vec::new();
    codec::write_register_v2(&mut wire, &alice);
    assert_eq!(
        wire,
        b"REGISTER / HTTP/1.1\r\nName: alice\r\nIP: 10.0.0.5\r\nPort: 9001\r\nBridgechat: 2\r\n\r\n"
    );
    assert_eq!(
        decode_one_request(&wire),
        Request::Register(alice, Version::V2)
    );
    // Any other value, or none, is version 1.
    for other in ["1", "3", "2.0", ""] {
        let wire = format!(
            "REGISTER / HTTP/1.1\r\nName: alice\r\nIP: 10.0.0.5\r\nPort: 9001\r\nBridgechat: {other}\r\n\r\n"
        );
        assert_eq!(
            decode_one_request(wire.as_bytes()),
            Request::Register(alice, Version::V1),
            "Bridgechat: {other}"
        );
    }
}

#[test]
fn the_v2_register_answer_tells_the_observed_address() {
    let alice = contact("alice", "10.0.0.5", 9001);
    let mut wire = Vec::new();
    codec::write_registered_v2(&mut wire, &alice, observed());
    assert_eq!(
        wire,
        &b"HTTP/1.1 200 OK\r\nName: alice\r\nIP: 10.0.0.5\r\nPort: 9001\r\nBridgechat: 2\r\nObserved-IP: 203.0.113.7\r\nObserved-Port: 51234\r\nContent-Length: 0\r\n\r\n"[..]
    );
    let response = decode_one_response(&wire);
    assert_eq!(response.status, Status::OK);
    assert_eq!(response.contact, Some(alice));
    assert_eq!(response.version, Version::V2);
    assert_eq!(response.observed, Some(observed()));
    assert_eq!(response.ticket, None);
    let mut again = Vec::new();
    response.encode(&mut again);
    assert_eq!(again, wire, "a decoded answer encodes to the same bytes");
}

#[test]
fn a_bridge_names_its_peer_and_the_paired_answer_carries_the_introduction() {
    let mut wire = Vec::new();
    codec::write_bridge_for(&mut wire, None, Some(&Name::new(b"bob").unwrap()));
    assert_eq!(wire, b"BRIDGE / HTTP/1.1\r\nPeer: bob\r\n\r\n");
    assert_eq!(
        decode_one_request(&wire),
        Request::Bridge {
            name: None,
            peer: Ok(Some(Name::new(b"bob").unwrap()))
        }
    );

    let intro = Introduction {
        peer: contact("bob", "10.0.0.6", 9002),
        peer_version: Version::V2,
        observed: observed(),
        ticket: Some(ticket()),
    };
    let mut wire = Vec::new();
    codec::write_paired(&mut wire, &intro);
    let expected = format!(
        "HTTP/1.1 200 OK\r\nName: bob\r\nIP: 10.0.0.6\r\nPort: 9002\r\nPeer-Version: 2\r\nObserved-IP: 203.0.113.7\r\nObserved-Port: 51234\r\nTicket: {TICKET_HEX}\r\nContent-Length: 0\r\n\r\n"
    );
    assert_eq!(String::from_utf8(wire.clone()).unwrap(), expected);
    let response = decode_one_response(&wire);
    assert_eq!(response.contact, Some(intro.peer));
    assert_eq!(response.peer_version, Some(Version::V2));
    assert_eq!(response.observed, Some(observed()));
    assert_eq!(response.ticket, Some(ticket()));
    assert_eq!(
        response.version,
        Version::V1,
        "no opt-in header on BRIDGE answers"
    );
}

#[test]
fn a_malformed_peer_is_kept_aside_so_a_v1_connection_can_ignore_it() {
    let request = decode_one_request(b"BRIDGE / HTTP/1.1\r\nPeer: no spaces\r\n\r\n");
    assert_eq!(
        request,
        Request::Bridge {
            name: None,
            peer: Err(HeaderError::Invalid(
                Header::Peer,
                InvalidValue::BadCharacter
            ))
        }
    );
}

#[test]
fn matched_unmatched_and_started_have_exact_wire_forms() {
    let intro = Introduction {
        peer: contact("bob", "10.0.0.6", 9002),
        peer_version: Version::V1,
        observed: observed(),
        ticket: None,
    };
    let matched = Request::Matched(intro);
    let wire = encoded(&matched);
    assert_eq!(
        wire,
        &b"MATCHED / HTTP/1.1\r\nName: bob\r\nIP: 10.0.0.6\r\nPort: 9002\r\nPeer-Version: 1\r\nObserved-IP: 203.0.113.7\r\nObserved-Port: 51234\r\nContent-Length: 0\r\n\r\n"[..]
    );
    assert_eq!(decode_one_request(&wire), matched);

    let mut wire = Vec::new();
    codec::write_unmatched(
        &mut wire,
        &Name::new(b"bob").unwrap(),
        Some(&ticket()),
        &"bob left\r\nthe server",
    );
    let expected = format!(
        "UNMATCHED / HTTP/1.1\r\nName: bob\r\nTicket: {TICKET_HEX}\r\nReason: bob left  the server\r\nContent-Length: 0\r\n\r\n"
    );
    assert_eq!(String::from_utf8(wire.clone()).unwrap(), expected);
    assert_eq!(
        decode_one_request(&wire),
        Request::Unmatched(Unmatched {
            name: Name::new(b"bob").unwrap(),
            ticket: Some(ticket()),
            reason: "bob left  the server".to_owned(),
        })
    );

    let started = Request::Started(Some(ticket()));
    let wire = encoded(&started);
    let expected =
        format!("STARTED / HTTP/1.1\r\nTicket: {TICKET_HEX}\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(String::from_utf8(wire.clone()).unwrap(), expected);
    assert_eq!(decode_one_request(&wire), started);
    assert_eq!(
        encoded(&Request::Started(None)),
        b"STARTED / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
    );
}

#[test]
fn a_chat_with_a_ticket_is_version_2_and_without_one_is_version_1_byte_for_byte() {
    let bob = contact("bob", "10.0.0.6", 9002);
    let with = Request::Chat(bob, Some(ticket()), None);
    let expected = format!(
        "CHAT / HTTP/1.1\r\nName: bob\r\nIP: 10.0.0.6\r\nPort: 9002\r\nBridgechat: 2\r\nTicket: {TICKET_HEX}\r\n\r\n"
    );
    assert_eq!(String::from_utf8(encoded(&with)).unwrap(), expected);
    assert_eq!(decode_one_request(expected.as_bytes()), with);
    assert_eq!(
        encoded(&Request::Chat(bob, None, None)),
        b"CHAT / HTTP/1.1\r\nName: bob\r\nIP: 10.0.0.6\r\nPort: 9002\r\n\r\n"
    );
    let bad = decode_one_request(
        b"CHAT / HTTP/1.1\r\nName: bob\r\nIP: 10.0.0.6\r\nPort: 9002\r\nTicket: 1234\r\n\r\n",
    );
    assert_eq!(
        bad,
        Request::Invalid {
            method: bridgechat_core::Method::Chat,
            error: HeaderError::Invalid(Header::Ticket, InvalidValue::NotATicket)
        }
    );
}

#[test]
fn a_server_connection_carries_answers_and_notifications_in_order_in_any_split() {
    let bob = contact("bob", "10.0.0.6", 9002);
    let alice = contact("alice", "10.0.0.5", 9001);
    let mut stream = Vec::new();
    codec::write_registered_v2(&mut stream, &alice, observed());
    codec::write_ok(&mut stream, None);
    let intro = Introduction {
        peer: bob,
        peer_version: Version::V2,
        observed: observed(),
        ticket: Some(ticket()),
    };
    codec::write_matched(&mut stream, &intro);
    stream.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
    codec::write_unmatched(
        &mut stream,
        &bob.name,
        Some(&ticket()),
        &"bob left the server",
    );
    codec::write_ok(&mut stream, None);

    let decode = |chunks: &mut dyn Iterator<Item = &[u8]>| {
        let mut decoder = Decoder::default();
        let mut got = Vec::new();
        for chunk in chunks {
            let mut input = chunk;
            while let Some(message) = decoder.decode_message(&mut input).unwrap() {
                got.push(message);
            }
            assert!(input.is_empty());
        }
        got
    };
    let whole = decode(&mut std::iter::once(&stream[..]));
    let bytewise = decode(&mut stream.chunks(1));
    assert_eq!(whole, bytewise);
    let kinds: Vec<&str> = whole
        .iter()
        .map(|m| match m {
            Inbound::Response(_) => "answer",
            Inbound::Request(Request::Matched(_)) => "MATCHED",
            Inbound::Request(Request::Unmatched(_)) => "UNMATCHED",
            Inbound::Request(_) => "other request",
        })
        .collect();
    assert_eq!(
        kinds,
        ["answer", "answer", "MATCHED", "UNMATCHED", "answer"],
        "the interim 100 is skipped, everything else arrives in order"
    );
    assert_eq!(whole[2], Inbound::Request(Request::Matched(intro)));
}

#[test]
fn a_matched_without_its_introduction_headers_is_a_bad_request_not_a_crash() {
    let request = decode_one_request(
        b"MATCHED / HTTP/1.1\r\nName: bob\r\nIP: 10.0.0.6\r\nPort: 9002\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(
        request,
        Request::Invalid {
            method: bridgechat_core::Method::Matched,
            error: HeaderError::Missing(Header::PeerVersion)
        }
    );
}
