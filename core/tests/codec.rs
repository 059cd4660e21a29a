//! The wire codec held to the contract (`shared/protocol.md`, sections 2 and 7).
//!
//! Table tests take the contract's own bytes and bad inputs; property tests check
//! that encoding and decoding agree for every valid message and for every way the
//! bytes can be split on the way.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use bridgechat_core::codec::{
    self, AfterError, Header, HeaderError, Introduction, Noise, Ticket, Unmatched, Version,
    HEADER_SLOTS, NOISE_LEN,
};
use bridgechat_core::contact::InvalidValue;
use bridgechat_core::server::{Server, ServerConfig};
use bridgechat_core::{
    Contact, DecodeError, Decoder, Endpoint, Limits, Method, Name, Output, Request, Response,
    Status,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// Helpers

fn contact(name: &str, ip: &str, port: u16) -> Contact {
    Contact::new(
        Name::new(name.as_bytes()).unwrap(),
        ip.parse().unwrap(),
        port,
    )
    .unwrap()
}

fn alice() -> Contact {
    contact("alice", "127.0.0.1", 9001)
}

fn bob() -> Contact {
    contact("bob", "127.0.0.1", 9002)
}

/// What a decoder made of a byte stream: the messages, then the error that ended it, if any.
#[derive(Debug, PartialEq)]
struct Outcome<T> {
    messages: Vec<T>,
    error: Option<DecodeError>,
}

/// Feeds `chunks` in order to one decoder with `limits`, draining after each chunk.
fn decode_requests_in<'a>(
    limits: Limits,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Outcome<Request> {
    let mut decoder = Decoder::new(limits);
    let mut outcome = Outcome {
        messages: Vec::new(),
        error: None,
    };
    for chunk in chunks {
        let mut input = chunk;
        loop {
            match decoder.decode_request(&mut input) {
                Ok(Some(request)) => outcome.messages.push(request),
                Ok(None) => {
                    assert!(input.is_empty(), "Ok(None) must take every byte");
                    break;
                }
                Err(error) => {
                    outcome.error = Some(error);
                    return outcome;
                }
            }
        }
    }
    outcome
}

fn decode_responses_in<'a>(
    limits: Limits,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Outcome<Response> {
    let mut decoder = Decoder::new(limits);
    let mut outcome = Outcome {
        messages: Vec::new(),
        error: None,
    };
    for chunk in chunks {
        let mut input = chunk;
        loop {
            match decoder.decode_response(&mut input) {
                Ok(Some(response)) => outcome.messages.push(response),
                Ok(None) => {
                    assert!(input.is_empty(), "Ok(None) must take every byte");
                    break;
                }
                Err(error) => {
                    outcome.error = Some(error);
                    return outcome;
                }
            }
        }
    }
    outcome
}

fn decode_requests(bytes: &[u8]) -> Outcome<Request> {
    decode_requests_in(Limits::default(), [bytes])
}

fn decode_requests_bytewise(bytes: &[u8]) -> Outcome<Request> {
    decode_requests_in(Limits::default(), bytes.chunks(1))
}

fn decode_responses(bytes: &[u8]) -> Outcome<Response> {
    decode_responses_in(Limits::default(), [bytes])
}

/// The one framing error `bytes` must cause, fed whole and one byte at a time.
fn framing_error(bytes: &[u8]) -> DecodeError {
    let whole = decode_requests(bytes);
    let bytewise = decode_requests_bytewise(bytes);
    assert_eq!(whole, bytewise, "split changed the outcome");
    assert!(whole.messages.is_empty(), "decoded {:?}", whole.messages);
    whole.error.expect("expected a framing error")
}

/// The single request in `bytes`, fed whole and one byte at a time.
fn single_request(bytes: &[u8]) -> Request {
    let whole = decode_requests(bytes);
    assert_eq!(
        whole,
        decode_requests_bytewise(bytes),
        "split changed the outcome"
    );
    assert_eq!(whole.error, None);
    assert_eq!(whole.messages.len(), 1, "{:?}", whole.messages);
    whole.messages.into_iter().next().unwrap()
}

fn encoded(request: &Request) -> Vec<u8> {
    let mut out = Vec::new();
    request.encode(&mut out).unwrap();
    out
}

fn register_with(headers: &str) -> Vec<u8> {
    format!("REGISTER / HTTP/1.1\r\n{headers}\r\n").into_bytes()
}

fn invalid(method: Method, error: HeaderError) -> Request {
    Request::Invalid { method, error }
}

/// What the server sends back for `bytes` on a fresh connection, and whether it closes it.
fn server_answer(bytes: &[u8]) -> (Vec<u8>, bool) {
    let now = Instant::now();
    let mut server = Server::new(ServerConfig::default(), [0; 32]);
    let peer: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let conn = server.handle_accept(now, peer);
    server.handle_data(now, conn, bytes);
    let (mut sent, mut closed) = (Vec::new(), false);
    while let Some(output) = server.poll_output() {
        match output {
            Output::Transmit { conn: c, bytes } if c == conn => sent.extend_from_slice(bytes),
            Output::Close { conn: c } if c == conn => closed = true,
            _ => {}
        }
    }
    (sent, closed)
}

// ---------------------------------------------------------------------------
// The contract's section 7, byte for byte

const REGISTER_ALICE: &[u8] =
    b"REGISTER / HTTP/1.1\r\nName: alice\r\nIP: 127.0.0.1\r\nPort: 9001\r\n\r\n";
const OK_ALICE: &[u8] =
    b"HTTP/1.1 200 OK\r\nName: alice\r\nIP: 127.0.0.1\r\nPort: 9001\r\nContent-Length: 0\r\n\r\n";
const BRIDGE: &[u8] = b"BRIDGE / HTTP/1.1\r\n\r\n";
const OK_EMPTY: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
const CHAT_BOB: &[u8] = b"CHAT / HTTP/1.1\r\nName: bob\r\nIP: 127.0.0.1\r\nPort: 9002\r\n\r\n";
const MESSAGE_HI: &[u8] =
    b"MESSAGE / HTTP/1.1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 2\r\n\r\nhi";
const MESSAGE_HELLO: &[u8] =
    b"MESSAGE / HTTP/1.1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\n\r\nhello";
const QUIT: &[u8] = b"QUIT / HTTP/1.1\r\nContent-Length: 0\r\n\r\n";

fn contract_requests() -> Vec<(&'static [u8], Request)> {
    vec![
        (REGISTER_ALICE, Request::Register(alice(), Version::V1)),
        (
            BRIDGE,
            Request::Bridge {
                name: None,
                peer: Ok(None),
            },
        ),
        (CHAT_BOB, Request::Chat(bob(), None, None)),
        (MESSAGE_HI, Request::Message(b"hi".to_vec())),
        (MESSAGE_HELLO, Request::Message(b"hello".to_vec())),
        (QUIT, Request::Quit),
    ]
}

fn contract_responses() -> Vec<(&'static [u8], Response)> {
    vec![
        (
            OK_ALICE,
            Response::v1(Status::OK, Some(alice()), Vec::new()),
        ),
        (OK_EMPTY, Response::v1(Status::OK, None, Vec::new())),
    ]
}

#[test]
fn every_contract_request_decodes_and_reencodes_to_the_same_bytes() {
    for (wire, expected) in contract_requests() {
        let shown = String::from_utf8_lossy(wire);
        assert_eq!(single_request(wire), expected, "{shown}");
        assert_eq!(encoded(&expected), wire, "{shown}");
    }
}

#[test]
fn every_contract_response_decodes_and_reencodes_to_the_same_bytes() {
    for (wire, expected) in contract_responses() {
        let shown = String::from_utf8_lossy(wire);
        let outcome = decode_responses(wire);
        assert_eq!(outcome.error, None, "{shown}");
        assert_eq!(outcome.messages, vec![expected.clone()], "{shown}");

        let mut out = Vec::new();
        expected.encode(&mut out);
        assert_eq!(out, wire, "Response::encode: {shown}");

        let mut out = Vec::new();
        codec::write_ok(&mut out, expected.contact.as_ref());
        assert_eq!(out, wire, "write_ok: {shown}");
    }
}

#[test]
fn the_contract_conversation_decodes_in_order_from_one_stream() {
    let stream: Vec<u8> = [CHAT_BOB, MESSAGE_HI, MESSAGE_HELLO, QUIT].concat();
    let expected = vec![
        Request::Chat(bob(), None, None),
        Request::Message(b"hi".to_vec()),
        Request::Message(b"hello".to_vec()),
        Request::Quit,
    ];
    assert_eq!(decode_requests(&stream).messages, expected);
    assert_eq!(decode_requests_bytewise(&stream).messages, expected);
}

#[test]
fn bridge_with_a_name_header_round_trips() {
    let request = Request::Bridge {
        name: Some(Name::new(b"alice").unwrap()),
        peer: Ok(None),
    };
    let wire = encoded(&request);
    assert_eq!(wire, b"BRIDGE / HTTP/1.1\r\nName: alice\r\n\r\n");
    assert_eq!(single_request(&wire), request);
}

#[test]
fn unregister_round_trips() {
    let wire = encoded(&Request::Unregister);
    assert_eq!(wire, b"UNREGISTER / HTTP/1.1\r\n\r\n");
    assert_eq!(single_request(&wire), Request::Unregister);
}

#[test]
fn receiving_only_requests_cannot_be_encoded() {
    let mut out = Vec::new();
    assert!(Request::Unknown.encode(&mut out).is_err());
    let bad = invalid(Method::Register, HeaderError::Missing(Header::Port));
    assert!(bad.encode(&mut out).is_err());
    assert!(out.is_empty(), "nothing may be written");
}

// ---------------------------------------------------------------------------
// Bad header values: 400, connection kept

#[test]
fn missing_or_malformed_contact_headers_decode_as_invalid_requests() {
    use HeaderError::{Duplicate, Invalid, Missing};
    use InvalidValue::*;
    let name33 = "a".repeat(33);
    let cases: Vec<(String, HeaderError)> = vec![
        (
            "IP: 127.0.0.1\r\nPort: 9001\r\n".into(),
            Missing(Header::Name),
        ),
        ("Name: alice\r\nPort: 9001\r\n".into(), Missing(Header::Ip)),
        (
            "Name: alice\r\nIP: 127.0.0.1\r\n".into(),
            Missing(Header::Port),
        ),
        (
            format!("Name: {name33}\r\nIP: 127.0.0.1\r\nPort: 9001\r\n"),
            Invalid(Header::Name, TooLong),
        ),
        (
            "Name: al ice\r\nIP: 127.0.0.1\r\nPort: 9001\r\n".into(),
            Invalid(Header::Name, BadCharacter),
        ),
        (
            "Name: al/ice\r\nIP: 127.0.0.1\r\nPort: 9001\r\n".into(),
            Invalid(Header::Name, BadCharacter),
        ),
        (
            "Name:\r\nIP: 127.0.0.1\r\nPort: 9001\r\n".into(),
            Invalid(Header::Name, Empty),
        ),
        (
            "Name: alice\r\nIP: localhost\r\nPort: 9001\r\n".into(),
            Invalid(Header::Ip, NotAnAddress),
        ),
        (
            "Name: alice\r\nIP: 127.0.0.256\r\nPort: 9001\r\n".into(),
            Invalid(Header::Ip, NotAnAddress),
        ),
        (
            "Name: alice\r\nIP: 127.0.0.1\r\nPort: 0\r\n".into(),
            Invalid(Header::Port, NotAPort),
        ),
        (
            "Name: alice\r\nIP: 127.0.0.1\r\nPort: 70000\r\n".into(),
            Invalid(Header::Port, NotAPort),
        ),
        (
            "Name: alice\r\nIP: 127.0.0.1\r\nPort: 9001x\r\n".into(),
            Invalid(Header::Port, NotAPort),
        ),
        (
            "Name: alice\r\nIP: 127.0.0.1\r\nPort: -1\r\n".into(),
            Invalid(Header::Port, NotAPort),
        ),
        (
            "Name: alice\r\nName: bob\r\nIP: 127.0.0.1\r\nPort: 9001\r\n".into(),
            Duplicate(Header::Name),
        ),
    ];
    for (headers, error) in cases {
        let wire = register_with(&headers);
        assert_eq!(
            single_request(&wire),
            invalid(Method::Register, error),
            "{headers:?}"
        );
        // The same headers on CHAT are refused the same way.
        let chat = format!("CHAT / HTTP/1.1\r\n{headers}\r\n").into_bytes();
        assert_eq!(
            single_request(&chat),
            invalid(Method::Chat, error),
            "{headers:?}"
        );
    }
}

#[test]
fn bridge_with_a_malformed_name_is_invalid() {
    let wire = b"BRIDGE / HTTP/1.1\r\nName: not valid\r\n\r\n";
    assert_eq!(
        single_request(wire),
        invalid(
            Method::Bridge,
            HeaderError::Invalid(Header::Name, InvalidValue::BadCharacter)
        )
    );
}

#[test]
fn an_invalid_request_leaves_the_connection_usable() {
    let stream = [
        register_with("Name: alice\r\nIP: 127.0.0.1\r\nPort: 0\r\n").as_slice(),
        REGISTER_ALICE,
    ]
    .concat();
    let outcome = decode_requests(&stream);
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.messages.len(), 2);
    assert_eq!(outcome.messages[1], Request::Register(alice(), Version::V1));
}

#[test]
fn the_server_answers_a_bad_header_value_with_400_and_keeps_the_connection() {
    let (sent, closed) = server_answer(&register_with("Name: alice\r\nIP: 127.0.0.1\r\n"));
    assert_eq!(
        sent,
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 20\r\n\r\nmissing header: Port"
    );
    assert!(!closed);
}

// ---------------------------------------------------------------------------
// Framing errors: status, then close

fn too_many_headers(count: usize) -> Vec<u8> {
    let mut wire = b"BRIDGE / HTTP/1.1\r\n".to_vec();
    for i in 0..count {
        wire.extend_from_slice(format!("X-Filler-{i}: {i}\r\n").as_bytes());
    }
    wire.extend_from_slice(b"\r\n");
    wire
}

fn head_of_size(size: usize) -> Vec<u8> {
    let start = b"BRIDGE / HTTP/1.1\r\nX-Pad: ";
    let end = b"\r\n\r\n";
    let pad = size - start.len() - end.len();
    [start.as_slice(), "p".repeat(pad).as_bytes(), end].concat()
}

fn message_with_length(length: usize) -> Vec<u8> {
    let mut wire = format!("MESSAGE / HTTP/1.1\r\nContent-Length: {length}\r\n\r\n").into_bytes();
    wire.resize(wire.len() + length, b'x');
    wire
}

/// The first bytes of a TLS 1.2/1.3 ClientHello record, as a browser sends them.
const TLS_CLIENT_HELLO: &[u8] = &[
    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0x5a, 0x1b, 0x7e, 0x00,
];
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[test]
fn every_framing_error_of_the_contract_yields_its_status_and_closes() {
    let cases: Vec<(&str, Vec<u8>, Status)> = vec![
        (
            "Transfer-Encoding: chunked",
            b"MESSAGE / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
                .to_vec(),
            Status::NOT_IMPLEMENTED,
        ),
        (
            "Transfer-Encoding in any case",
            b"MESSAGE / HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n".to_vec(),
            Status::NOT_IMPLEMENTED,
        ),
        (
            "two Content-Length that disagree",
            b"MESSAGE / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nhi!".to_vec(),
            Status::BAD_REQUEST,
        ),
        (
            "Content-Length: 1x",
            b"MESSAGE / HTTP/1.1\r\nContent-Length: 1x\r\n\r\nh".to_vec(),
            Status::BAD_REQUEST,
        ),
        (
            "Content-Length: +1",
            b"MESSAGE / HTTP/1.1\r\nContent-Length: +1\r\n\r\nh".to_vec(),
            Status::BAD_REQUEST,
        ),
        (
            "Content-Length as a list",
            b"MESSAGE / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\nh".to_vec(),
            Status::BAD_REQUEST,
        ),
        (
            "empty Content-Length",
            b"MESSAGE / HTTP/1.1\r\nContent-Length:\r\n\r\n".to_vec(),
            Status::BAD_REQUEST,
        ),
        (
            "head over 8 KiB",
            head_of_size(8 * 1024 + 1),
            Status::HEADERS_TOO_LARGE,
        ),
        (
            "33 headers",
            too_many_headers(33),
            Status::HEADERS_TOO_LARGE,
        ),
        (
            "body over 64 KiB",
            message_with_length(64 * 1024 + 1),
            Status::CONTENT_TOO_LARGE,
        ),
        (
            "Content-Length past usize",
            b"MESSAGE / HTTP/1.1\r\nContent-Length: 99999999999999999999999999\r\n\r\n".to_vec(),
            Status::CONTENT_TOO_LARGE,
        ),
        (
            "binary garbage",
            vec![0x00, 0xff, 0x13, 0x37, b'\r', b'\n', 0x80, b'\n'],
            Status::BAD_REQUEST,
        ),
        (
            "a TLS ClientHello",
            TLS_CLIENT_HELLO.to_vec(),
            Status::BAD_REQUEST,
        ),
        (
            "the HTTP/2 preface",
            HTTP2_PREFACE.to_vec(),
            Status::BAD_REQUEST,
        ),
        (
            "an absolute-form target",
            b"BRIDGE http://127.0.0.1:7070/ HTTP/1.1\r\n\r\n".to_vec(),
            Status::BAD_REQUEST,
        ),
        (
            "HTTP/1.2",
            b"BRIDGE / HTTP/1.2\r\n\r\n".to_vec(),
            Status::BAD_REQUEST,
        ),
    ];
    for (what, wire, status) in cases {
        assert_eq!(framing_error(&wire).status, status, "{what}");
    }
}

#[test]
fn the_server_answers_a_framing_error_with_connection_close_and_closes() {
    for (wire, head) in [
        (
            b"MESSAGE / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
            "HTTP/1.1 501 Not Implemented\r\nConnection: close\r\n",
        ),
        (
            too_many_headers(33),
            "HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n",
        ),
        (
            message_with_length(64 * 1024 + 1),
            "HTTP/1.1 413 Content Too Large\r\nConnection: close\r\n",
        ),
        (
            HTTP2_PREFACE.to_vec(),
            "HTTP/1.1 400 Bad Request\r\nConnection: close\r\n",
        ),
    ] {
        let (sent, closed) = server_answer(&wire);
        let text = String::from_utf8_lossy(&sent);
        assert!(text.starts_with(head), "{text}");
        assert!(
            text.contains("Content-Type: text/plain; charset=utf-8\r\n"),
            "{text}"
        );
        assert!(closed, "{text}");
    }
}

#[test]
fn limits_are_inclusive() {
    assert!(matches!(
        single_request(&head_of_size(8 * 1024)),
        Request::Bridge { .. }
    ));
    assert!(matches!(
        single_request(&too_many_headers(32)),
        Request::Bridge { .. }
    ));
    let body = single_request(&message_with_length(64 * 1024));
    assert_eq!(body, Request::Message(vec![b'x'; 64 * 1024]));
}

#[test]
fn content_length_that_agrees_with_itself_is_accepted() {
    let wire = b"MESSAGE / HTTP/1.1\r\nContent-Length: 2\r\ncontent-length: 02\r\n\r\nhi";
    assert_eq!(single_request(wire), Request::Message(b"hi".to_vec()));
}

#[test]
fn a_failed_decoder_stays_failed() {
    let mut decoder = Decoder::default();
    let mut input: &[u8] = HTTP2_PREFACE;
    assert!(decoder.decode_request(&mut input).is_err());
    let mut input: &[u8] = BRIDGE;
    assert!(decoder.decode_request(&mut input).is_err());
    assert_eq!(decoder.buffered(), 0, "a failed decoder holds nothing");
}

// ---------------------------------------------------------------------------
// What receivers accept

#[test]
fn header_names_match_in_any_case() {
    let wire = b"REGISTER / HTTP/1.1\r\nname: alice\r\nip: 127.0.0.1\r\nPORT: 9001\r\n\r\n";
    assert_eq!(
        single_request(wire),
        Request::Register(alice(), Version::V1)
    );
    let wire = b"MESSAGE / HTTP/1.1\r\ncontent-LENGTH: 2\r\n\r\nhi";
    assert_eq!(single_request(wire), Request::Message(b"hi".to_vec()));
    let wire = b"HTTP/1.1 200 OK\r\nnAmE: alice\r\nIp: 127.0.0.1\r\npOrT: 9001\r\ncontent-length: 0\r\n\r\n";
    assert_eq!(decode_responses(wire).messages[0].contact, Some(alice()));
}

#[test]
fn methods_are_case_sensitive_and_unknown_ones_decode_as_unknown() {
    for wire in [
        &b"register / HTTP/1.1\r\nName: alice\r\nIP: 127.0.0.1\r\nPort: 9001\r\n\r\n"[..],
        b"PATCH / HTTP/1.1\r\nHost: 127.0.0.1:7070\r\n\r\n",
        b"DELETE / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
    ] {
        assert_eq!(
            single_request(wire),
            Request::Unknown,
            "{}",
            String::from_utf8_lossy(wire)
        );
    }
}

#[test]
fn an_unknown_method_keeps_the_stream_in_step() {
    let stream = [
        &b"FROB / HTTP/1.1\r\nContent-Length: 4\r\n\r\nBODYQUIT"[..],
        b" / HTTP/1.1\r\n\r\n",
    ]
    .concat();
    let outcome = decode_requests(&stream);
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.messages, vec![Request::Unknown, Request::Quit]);
}

#[test]
fn http_1_0_is_accepted() {
    let wire = b"REGISTER / HTTP/1.0\r\nName: alice\r\nIP: 127.0.0.1\r\nPort: 9001\r\n\r\n";
    assert_eq!(
        single_request(wire),
        Request::Register(alice(), Version::V1)
    );
    let wire = b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(decode_responses(wire).messages.len(), 1);
}

#[test]
fn bare_lf_line_ends_are_accepted() {
    let wire = b"REGISTER / HTTP/1.1\nName: alice\nIP: 127.0.0.1\nPort: 9001\n\n";
    assert_eq!(
        single_request(wire),
        Request::Register(alice(), Version::V1)
    );
    let wire = b"MESSAGE / HTTP/1.1\nContent-Length: 2\n\nhi";
    assert_eq!(single_request(wire), Request::Message(b"hi".to_vec()));
    let wire = b"HTTP/1.1 200 OK\nContent-Length: 0\n\n";
    assert_eq!(decode_responses(wire).messages.len(), 1);
}

#[test]
fn curls_extra_headers_are_ignored() {
    let wire = b"REGISTER / HTTP/1.1\r\nHost: 127.0.0.1:7070\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\nName: alice\r\nIP: 127.0.0.1\r\nPort: 9001\r\n\r\n";
    assert_eq!(
        single_request(wire),
        Request::Register(alice(), Version::V1)
    );
    let wire = b"BRIDGE / HTTP/1.1\r\nHost: 127.0.0.1:7070\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n";
    assert_eq!(
        single_request(wire),
        Request::Bridge {
            name: None,
            peer: Ok(None),
        }
    );
}

#[test]
fn whitespace_around_values_is_ignored() {
    let wire = b"REGISTER / HTTP/1.1\r\nName:alice\r\nIP: \t127.0.0.1 \t\r\nPort:   9001  \r\n\r\n";
    assert_eq!(
        single_request(wire),
        Request::Register(alice(), Version::V1)
    );
}

#[test]
fn any_origin_form_target_is_accepted() {
    let wire =
        b"REGISTER /rendezvous?x=1 HTTP/1.1\r\nName: alice\r\nIP: 127.0.0.1\r\nPort: 9001\r\n\r\n";
    assert_eq!(
        single_request(wire),
        Request::Register(alice(), Version::V1)
    );
}

#[test]
fn ipv6_contacts_round_trip() {
    let wire = b"REGISTER / HTTP/1.1\r\nName: alice\r\nIP: ::1\r\nPort: 9001\r\n\r\n";
    let expected = Request::Register(contact("alice", "::1", 9001), Version::V1);
    assert_eq!(single_request(wire), expected);
    assert_eq!(encoded(&expected), wire);
}

#[test]
fn a_body_on_a_request_that_needs_none_is_skipped() {
    let stream = [
        &b"REGISTER / HTTP/1.1\r\nName: alice\r\nIP: 127.0.0.1\r\nPort: 9001\r\nContent-Length: 6\r\n\r\nBRIDGE"[..],
        BRIDGE,
    ]
    .concat();
    let expected = vec![
        Request::Register(alice(), Version::V1),
        Request::Bridge {
            name: None,
            peer: Ok(None),
        },
    ];
    assert_eq!(decode_requests(&stream).messages, expected);
    assert_eq!(decode_requests_bytewise(&stream).messages, expected);
}

#[test]
fn message_bodies_are_kept_byte_for_byte() {
    let text = "zeile 1\r\nligne 2\n\u{1F600} \u{00e9}\u{0000}";
    let request = Request::Message(text.as_bytes().to_vec());
    assert_eq!(single_request(&encoded(&request)), request);
    let not_utf8 = b"MESSAGE / HTTP/1.1\r\nContent-Length: 3\r\n\r\n\xff\xfeA";
    assert_eq!(
        single_request(not_utf8),
        Request::Message(b"\xff\xfeA".to_vec())
    );
}

#[test]
fn every_prefix_of_a_valid_message_waits_for_more() {
    let mut all_requests: Vec<&[u8]> = contract_requests().into_iter().map(|(w, _)| w).collect();
    all_requests.push(b"BRIDGE / HTTP/1.1\nName: alice\n\n");
    for wire in all_requests {
        for cut in 0..wire.len() {
            let mut decoder = Decoder::default();
            let mut input = &wire[..cut];
            assert_eq!(
                decoder.decode_request(&mut input),
                Ok(None),
                "prefix {:?}",
                String::from_utf8_lossy(&wire[..cut])
            );
            assert!(input.is_empty());
            let mut rest = &wire[cut..];
            assert!(matches!(decoder.decode_request(&mut rest), Ok(Some(_))));
            assert!(rest.is_empty() && !decoder.is_mid_message());
        }
    }
    for (wire, _) in contract_responses() {
        for cut in 0..wire.len() {
            let mut decoder = Decoder::default();
            let mut input = &wire[..cut];
            assert_eq!(
                decoder.decode_response(&mut input),
                Ok(None),
                "cut at {cut}"
            );
        }
    }
}

#[test]
fn a_pipelined_request_behind_a_split_head_is_not_left_waiting() {
    // The second BRIDGE arrives in the same read that completes the first one's head.
    let outcome = decode_requests_in(
        Limits::default(),
        [
            &b"BRIDGE / HTTP/1.1\r\n"[..],
            b"\r\nBRIDGE / HTTP/1.1\r\n\r\n",
        ],
    );
    assert_eq!(outcome.messages.len(), 2, "{outcome:?}");
    // The same behind a body that finishes from the decoder's buffer.
    let outcome = decode_requests_in(
        Limits::default(),
        [
            &b"MESSAGE / HTTP/1.1\r\nContent-Length: 2\r\n"[..],
            b"\r\nhiQUIT / HTTP/1.1\r\n\r\n",
        ],
    );
    assert_eq!(
        outcome.messages,
        vec![Request::Message(b"hi".to_vec()), Request::Quit]
    );
}

#[test]
fn empty_lines_between_requests_are_ignored() {
    let stream =
        b"\r\n\nBRIDGE / HTTP/1.1\r\n\r\n\r\n\r\rQUIT / HTTP/1.1\r\nContent-Length: 0\r\n\r\n\r\n";
    let expected = vec![
        Request::Bridge {
            name: None,
            peer: Ok(None),
        },
        Request::Quit,
    ];
    assert_eq!(decode_requests(stream).messages, expected);
    assert_eq!(decode_requests_bytewise(stream).messages, expected);

    // Blank lines start no message, so nothing is held and no head is under way.
    let mut decoder = Decoder::default();
    let mut input: &[u8] = &[b'\r', b'\n'].repeat(10_000);
    assert_eq!(decoder.decode_request(&mut input), Ok(None));
    assert!(!decoder.is_mid_message() && decoder.buffered() == 0);
}

// ---------------------------------------------------------------------------
// Configurable limits

#[test]
fn configured_limits_are_honoured() {
    let limits = Limits {
        max_head: 64,
        max_headers: 2,
        max_body: 10,
    };
    let decode_one = |wire: &[u8]| {
        let whole = decode_requests_in(limits, [wire]);
        assert_eq!(
            whole,
            decode_requests_in(limits, wire.chunks(1)),
            "split changed the outcome"
        );
        whole
    };
    let head64 = head_of_size(64);
    assert_eq!(decode_one(&head64).messages.len(), 1);
    assert_eq!(
        decode_one(&head_of_size(65)).error.map(|e| e.status),
        Some(Status::HEADERS_TOO_LARGE)
    );

    let two = b"BRIDGE / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n";
    assert_eq!(decode_one(two).messages.len(), 1);
    let three = b"BRIDGE / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    assert_eq!(
        decode_one(three).error.map(|e| e.status),
        Some(Status::HEADERS_TOO_LARGE)
    );

    assert_eq!(decode_one(&message_with_length(10)).messages.len(), 1);
    assert_eq!(
        decode_one(&message_with_length(11)).error.map(|e| e.status),
        Some(Status::CONTENT_TOO_LARGE)
    );
}

#[test]
fn header_count_limit_is_capped_by_the_slots() {
    let decoder = Decoder::new(Limits {
        max_headers: usize::MAX,
        ..Limits::default()
    });
    assert_eq!(decoder.limits().max_headers, HEADER_SLOTS);
}

#[test]
fn a_slow_oversized_head_is_refused_without_holding_more_than_the_limit() {
    let limits = Limits::default();
    let mut decoder = Decoder::new(limits);
    let mut wire = b"BRIDGE / HTTP/1.1\r\nX-Pad: ".to_vec();
    wire.resize(20_000, b'p');
    let mut result = Ok(None);
    for chunk in wire.chunks(100) {
        let mut input = chunk;
        result = decoder.decode_request(&mut input);
        assert!(decoder.buffered() <= limits.max_head);
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result.map_err(|e| e.status), Err(Status::HEADERS_TOO_LARGE));
}

// ---------------------------------------------------------------------------
// Responses the encoder writes

#[test]
fn error_responses_carry_text_plain_a_one_line_reason_and_content_length() {
    let mut out = Vec::new();
    codec::write_error(
        &mut out,
        Status::CONFLICT,
        &"name already taken: alice",
        AfterError::KeepOpen,
    );
    assert_eq!(
        out,
        b"HTTP/1.1 409 Conflict\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 25\r\n\r\nname already taken: alice"
    );

    let mut out = Vec::new();
    codec::write_error(
        &mut out,
        Status::BAD_REQUEST,
        &"two\r\nlines\n",
        AfterError::Close,
    );
    assert_eq!(
        out,
        b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 11\r\n\r\ntwo  lines "
    );

    let mut out = Vec::new();
    codec::write_error(
        &mut out,
        Status::SERVICE_UNAVAILABLE,
        &"server is full, try again later",
        AfterError::CloseRetryAfter(1),
    );
    assert!(out.starts_with(
        b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 31\r\n\r\n"
    ));
}

#[test]
fn an_overlong_reason_is_cut_at_a_character_boundary() {
    let reason = "\u{00e9}".repeat(500);
    let mut out = Vec::new();
    codec::write_error(&mut out, Status::BAD_REQUEST, &reason, AfterError::KeepOpen);
    let response = decode_responses(&out).messages.remove(0);
    let text = String::from_utf8(response.body).expect("still valid UTF-8");
    assert!(
        !text.is_empty() && text.len() <= 200,
        "{} bytes",
        text.len()
    );
}

#[test]
fn error_responses_decode_with_their_reason() {
    let mut out = Vec::new();
    codec::write_error(
        &mut out,
        Status::FORBIDDEN,
        &"register first",
        AfterError::KeepOpen,
    );
    let outcome = decode_responses(&out);
    assert_eq!(outcome.error, None);
    let response = &outcome.messages[0];
    assert_eq!(response.status, Status::FORBIDDEN);
    assert_eq!(response.contact, None);
    assert_eq!(response.reason_text(), "register first");
    let mut again = Vec::new();
    response.encode(&mut again);
    assert_eq!(again, out);
}

#[test]
fn a_response_with_part_of_a_contact_is_a_framing_error() {
    let wire = b"HTTP/1.1 200 OK\r\nName: alice\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(
        decode_responses(wire).error.map(|e| e.status),
        Some(Status::BAD_REQUEST)
    );
}

// ---------------------------------------------------------------------------
// Properties

fn name_strategy() -> impl Strategy<Value = Name> {
    "[A-Za-z0-9_.-]{1,32}".prop_map(|s| Name::new(s.as_bytes()).unwrap())
}

fn contact_strategy() -> impl Strategy<Value = Contact> {
    (name_strategy(), any::<IpAddr>(), 1..=u16::MAX)
        .prop_map(|(name, ip, port)| Contact::new(name, ip, port).unwrap())
}

fn body_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => "(?s).{0,200}".prop_map(String::into_bytes),
        2 => "[\r\n a-z]{0,50}".prop_map(String::into_bytes),
        1 => proptest::collection::vec(any::<u8>(), 0..=64 * 1024),
        1 => Just(vec![b'\n'; 64 * 1024]),
    ]
}

fn version_strategy() -> impl Strategy<Value = Version> {
    prop_oneof![Just(Version::V1), Just(Version::V2)]
}

fn ticket_strategy() -> impl Strategy<Value = Ticket> {
    any::<[u8; 16]>().prop_map(Ticket::from_bytes)
}

fn noise_strategy() -> impl Strategy<Value = Noise> {
    proptest::collection::vec(any::<u8>(), NOISE_LEN).prop_map(|v| Noise(v.try_into().unwrap()))
}

fn introduction_strategy() -> impl Strategy<Value = Introduction> {
    (
        contact_strategy(),
        version_strategy(),
        any::<IpAddr>(),
        1..=u16::MAX,
        proptest::option::of(ticket_strategy()),
    )
        .prop_map(|(peer, peer_version, ip, port, ticket)| Introduction {
            peer,
            peer_version,
            observed: SocketAddr::new(ip, port),
            ticket,
        })
}

fn request_strategy() -> impl Strategy<Value = Request> {
    prop_oneof![
        (contact_strategy(), version_strategy()).prop_map(|(c, v)| Request::Register(c, v)),
        (
            proptest::option::of(name_strategy()),
            proptest::option::of(name_strategy())
        )
            .prop_map(|(name, peer)| Request::Bridge {
                name,
                peer: Ok(peer)
            }),
        Just(Request::Unregister),
        (
            contact_strategy(),
            proptest::option::of(ticket_strategy()),
            proptest::option::of(noise_strategy())
        )
            .prop_map(|(c, t, n)| Request::Chat(c, t, n)),
        // What a QUIT carries in an encrypted chat: a frame, or a reason and no body.
        proptest::collection::vec(any::<u8>(), 1..64)
            .prop_map(|body| Request::QuitWith { body, reason: None }),
        "[!-~]([ -~]{0,60}[!-~])?".prop_map(|reason| Request::QuitWith {
            body: Vec::new(),
            reason: Some(reason)
        }),
        body_strategy().prop_map(Request::Message),
        Just(Request::Quit),
        introduction_strategy().prop_map(Request::Matched),
        (
            name_strategy(),
            proptest::option::of(ticket_strategy()),
            "([!-~]([ -~]{0,60}[!-~])?)?"
        )
            .prop_map(|(name, ticket, reason)| Request::Unmatched(Unmatched {
                name,
                ticket,
                reason
            })),
        proptest::option::of(ticket_strategy()).prop_map(Request::Started),
    ]
}

fn response_strategy() -> impl Strategy<Value = Response> {
    let error_status = prop_oneof![
        Just(Status::BAD_REQUEST),
        Just(Status::FORBIDDEN),
        Just(Status::REQUEST_TIMEOUT),
        Just(Status::CONFLICT),
        Just(Status::CONTENT_TOO_LARGE),
        Just(Status::HEADERS_TOO_LARGE),
        Just(Status::NOT_IMPLEMENTED),
        Just(Status::SERVICE_UNAVAILABLE),
    ];
    let observed = proptest::option::of((any::<IpAddr>(), 1..=u16::MAX))
        .prop_map(|o| o.map(|(ip, port)| SocketAddr::new(ip, port)));
    prop_oneof![
        proptest::option::of(contact_strategy()).prop_map(|contact| Response::v1(
            Status::OK,
            contact,
            Vec::new()
        )),
        (error_status, "[ -~]{1,100}").prop_map(|(status, reason)| Response::v1(
            status,
            None,
            reason.into_bytes()
        )),
        (
            proptest::option::of(contact_strategy()),
            version_strategy(),
            observed,
            proptest::option::of(version_strategy()),
            proptest::option::of(ticket_strategy()),
            proptest::option::of(noise_strategy()),
        )
            .prop_map(
                |(contact, version, observed, peer_version, ticket, noise)| Response {
                    version,
                    observed,
                    peer_version,
                    ticket,
                    noise,
                    ..Response::v1(Status::OK, contact, Vec::new())
                }
            ),
    ]
}

/// Cuts `bytes` at the given points (taken modulo its length).
fn split_at_points(bytes: &[u8], points: &[usize]) -> Vec<Vec<u8>> {
    let mut cuts: Vec<usize> = points.iter().map(|p| p % (bytes.len() + 1)).collect();
    cuts.push(0);
    cuts.push(bytes.len());
    cuts.sort_unstable();
    cuts.windows(2)
        .map(|w| bytes[w[0]..w[1]].to_vec())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn encode_then_decode_is_the_identity_for_requests(request in request_strategy()) {
        let wire = encoded(&request);
        let mut decoder = Decoder::default();
        let mut input = wire.as_slice();
        prop_assert_eq!(decoder.decode_request(&mut input), Ok(Some(request)));
        prop_assert!(input.is_empty());
        prop_assert!(!decoder.is_mid_message());
    }

    #[test]
    fn encode_then_decode_is_the_identity_for_responses(response in response_strategy()) {
        let mut wire = Vec::new();
        response.encode(&mut wire);
        let mut decoder = Decoder::default();
        let mut input = wire.as_slice();
        prop_assert_eq!(decoder.decode_response(&mut input), Ok(Some(response)));
        prop_assert!(input.is_empty());
    }

    #[test]
    fn any_split_of_a_request_stream_yields_the_same_requests(
        requests in proptest::collection::vec(request_strategy(), 1..6),
        points in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        let mut stream = Vec::new();
        for r in &requests {
            r.encode(&mut stream).unwrap();
        }
        let chunks = split_at_points(&stream, &points);
        let split = decode_requests_in(Limits::default(), chunks.iter().map(Vec::as_slice));
        prop_assert_eq!(&split.messages, &requests);
        prop_assert_eq!(split.error, None);
        if stream.len() <= 16 * 1024 {
            let bytewise = decode_requests_in(Limits::default(), stream.chunks(1));
            prop_assert_eq!(&bytewise.messages, &requests);
        }
    }

    #[test]
    fn any_split_of_a_response_stream_yields_the_same_responses(
        responses in proptest::collection::vec(response_strategy(), 1..6),
        points in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        let mut stream = Vec::new();
        for r in &responses {
            r.encode(&mut stream);
        }
        let chunks = split_at_points(&stream, &points);
        let split = decode_responses_in(Limits::default(), chunks.iter().map(Vec::as_slice));
        prop_assert_eq!(&split.messages, &responses);
        let bytewise = decode_responses_in(Limits::default(), stream.chunks(1));
        prop_assert_eq!(&bytewise.messages, &responses);
    }

    #[test]
    fn arbitrary_bytes_never_panic_nor_outgrow_the_limits(
        prefix in proptest::collection::vec(request_strategy(), 0..3),
        garbage in proptest::collection::vec(any::<u8>(), 0..4096),
        points in proptest::collection::vec(any::<usize>(), 0..40),
        small in any::<bool>(),
    ) {
        let limits = if small {
            Limits { max_head: 64, max_headers: 4, max_body: 128 }
        } else {
            Limits::default()
        };
        let mut stream = Vec::new();
        for r in &prefix {
            r.encode(&mut stream).unwrap();
        }
        stream.extend_from_slice(&garbage);
        for chunks in [split_at_points(&stream, &points), stream.chunks(1).map(<[u8]>::to_vec).collect()] {
            let mut requests = Decoder::new(limits);
            let mut responses = Decoder::new(limits);
            for chunk in &chunks {
                let mut input = chunk.as_slice();
                while let Ok(Some(_)) = requests.decode_request(&mut input) {}
                prop_assert!(requests.buffered() <= limits.max_head + limits.max_body);
                let mut input = chunk.as_slice();
                while let Ok(Some(_)) = responses.decode_response(&mut input) {}
                prop_assert!(responses.buffered() <= limits.max_head + limits.max_body);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Interim (1xx) answers, RFC 9110 §15.2

#[test]
fn interim_answers_are_skipped_until_the_final_one() {
    let ok = b"HTTP/1.1 200 OK\r\nName: alice\r\nIP: 127.0.0.1\r\nPort: 9001\r\nContent-Length: 0\r\n\r\n";
    let mut stream = Vec::new();
    stream.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
    // A 1xx has no body whatever it claims, and its headers are not a contact.
    stream.extend_from_slice(b"HTTP/1.1 102 Processing\r\nContent-Length: 5\r\nName: x\r\n\r\n");
    stream.extend_from_slice(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n");
    stream.extend_from_slice(ok);
    let expected = Response::v1(Status::OK, Some(alice()), Vec::new());
    let whole = decode_responses(&stream);
    assert_eq!(whole.messages, vec![expected.clone()]);
    assert_eq!(whole.error, None);
    let bytewise = decode_responses_in(Limits::default(), stream.chunks(1));
    assert_eq!(bytewise, whole, "split changed the outcome");
}

#[test]
fn an_interim_answer_alone_is_not_an_answer_yet() {
    let outcome = decode_responses(b"HTTP/1.1 100 Continue\r\n\r\n");
    assert_eq!(outcome.messages, vec![]);
    assert_eq!(outcome.error, None);
}

#[test]
fn switching_protocols_is_a_framing_error() {
    let outcome = decode_responses(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(outcome.messages, vec![]);
    let error = outcome.error.expect("101 must fail the decoder");
    assert!(error.reason.contains("101"), "{error}");
}

#[test]
fn a_server_does_not_take_a_1xx_status_line_as_a_request() {
    let outcome = decode_requests(b"HTTP/1.1 100 Continue\r\n\r\n");
    assert_eq!(outcome.messages, vec![]);
    assert_eq!(outcome.error.map(|e| e.status), Some(Status::BAD_REQUEST));
}
