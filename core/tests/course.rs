//! The course-format codec held to the facts of the course's wire format.
//!
//! Table tests take every message of the format byte for byte, every prefix of
//! each, bare LF, garbage and the limits; property tests check that encoding
//! and decoding agree and that no split of the bytes changes what they decode to.

use std::net::IpAddr;

use bridgechat_core::contact::InvalidValue;
use bridgechat_core::course::{
    self, CourseDecoder, CourseError, CourseMessage, Dialect, Field, FieldError, Turn,
    UnencodableText, Verb,
};
use bridgechat_core::{Contact, Limits, Name};
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
    contact("alice", "10.0.0.5", 3000)
}

fn bob() -> Contact {
    contact("bob", "10.0.0.6", 2000)
}

fn name(s: &str) -> Name {
    Name::new(s.as_bytes()).unwrap()
}

type Item = Result<CourseMessage, CourseError>;

/// Everything one decoder with `limits` makes of `chunks`, up to a fatal error.
fn decode_in<'a>(limits: Limits, chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<Item> {
    let mut decoder = CourseDecoder::new(limits);
    let mut items = Vec::new();
    for chunk in chunks {
        let mut input = chunk;
        loop {
            match decoder.decode(&mut input) {
                Ok(None) => {
                    assert!(input.is_empty(), "Ok(None) must take every byte");
                    break;
                }
                Ok(Some(message)) => items.push(Ok(message)),
                Err(error) => {
                    items.push(Err(error));
                    if error.is_fatal() {
                        return items;
                    }
                }
            }
        }
    }
    items
}

/// What `bytes` decode to, checked to be the same whole and one byte at a time.
fn decode(bytes: &[u8]) -> Vec<Item> {
    let whole = decode_in(Limits::default(), [bytes]);
    let bytewise = decode_in(Limits::default(), bytes.chunks(1));
    assert_eq!(whole, bytewise, "the split changed the outcome");
    whole
}

fn encoded(message: &CourseMessage) -> Vec<u8> {
    let mut out = Vec::new();
    message.encode(&mut out).unwrap();
    out
}

// ---------------------------------------------------------------------------
// Every message of the format, byte for byte

/// The format's messages exactly as the course programs write them.
fn the_format() -> Vec<(&'static [u8], CourseMessage)> {
    vec![
        (
            b"REGISTER\r\nclientID: alice\r\nIP: 10.0.0.5\r\nPort: 3000\r\n\r\n",
            CourseMessage::Register(alice()),
        ),
        (
            b"REGACK\r\nclientID: alice\r\nIP: 10.0.0.5\r\nPort: 3000\r\nStatus: registered\r\n\r\n",
            CourseMessage::RegAck {
                contact: alice(),
                registered: true,
            },
        ),
        (
            b"REGACK\r\nclientID: alice\r\nIP: 10.0.0.5\r\nPort: 3000\r\n\r\n",
            CourseMessage::RegAck {
                contact: alice(),
                registered: false,
            },
        ),
        (
            b"BRIDGE\r\nclientID: alice\r\n\r\n",
            CourseMessage::Bridge(name("alice")),
        ),
        (
            b"BRIDGEACK\r\nclientID: bob\r\nIP: 10.0.0.6\r\nPort: 2000\r\n\r\n",
            CourseMessage::BridgeAck(Some(bob())),
        ),
        (
            b"BRIDGEACK\r\nclientID: \r\nIP: \r\nPort: \r\n\r\n",
            CourseMessage::BridgeAck(None),
        ),
        (
            b"CHAT\r\nclientID: bob\r\nIP: 10.0.0.6\r\nPort: 2000\r\n\r\n",
            CourseMessage::Chat(bob()),
        ),
        (b"QUIT\r\n\r\n\r\n", CourseMessage::Quit),
        (
            b"CHAT\r\nType: init\r\n\r\n",
            CourseMessage::ChatInit(None),
        ),
        (
            b"CHAT\r\nType: init\r\nclientID: bob\r\nIP: 10.0.0.6\r\nPort: 2000\r\n\r\n",
            CourseMessage::ChatInit(Some(bob())),
        ),
        (
            b"CHAT\r\nType: message\r\nMessage: hello there\r\n\r\n",
            CourseMessage::ChatMessage(b"hello there".to_vec()),
        ),
        (b"CHAT\r\nType: quit\r\n\r\n", CourseMessage::ChatQuit),
    ]
}

#[test]
fn every_message_of_the_format_decodes_and_encodes_byte_for_byte() {
    for (wire, message) in the_format() {
        assert_eq!(
            decode(wire),
            [Ok(message.clone())],
            "{}",
            String::from_utf8_lossy(wire)
        );
        assert_eq!(
            encoded(&message),
            wire,
            "{message:?} must be written exactly as the course programs expect"
        );
    }
}

#[test]
fn quit_with_its_extra_line_end_is_one_quit_and_nothing_else() {
    let mut decoder = CourseDecoder::default();
    let mut input: &[u8] = b"QUIT\r\n\r\n\r\n";
    assert_eq!(decoder.decode(&mut input), Ok(Some(CourseMessage::Quit)));
    // The extra CRLF is a blank line between blocks: taken, holding nothing.
    assert_eq!(decoder.decode(&mut input), Ok(None));
    assert!(input.is_empty());
    assert!(!decoder.is_mid_message());
    assert_eq!(decoder.buffered(), 0);
}

#[test]
fn bridgeack_has_exactly_three_headers_in_order_with_one_space() {
    let mut out = Vec::new();
    course::write_bridgeack(&mut out, Some(&bob()));
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.split("\r\n").collect();
    assert_eq!(
        lines,
        [
            "BRIDGEACK",
            "clientID: bob",
            "IP: 10.0.0.6",
            "Port: 2000",
            "",
            ""
        ]
    );
}

#[test]
fn every_prefix_of_every_message_is_incomplete_and_takes_every_byte() {
    for (wire, message) in the_format() {
        // `QUIT\r\n\r\n\r\n` is complete two bytes early; the last CRLF is a blank line.
        let block_len = wire.len() - if wire.ends_with(b"\n\r\n\r\n") { 2 } else { 0 };
        for end in 0..block_len {
            let mut decoder = CourseDecoder::default();
            let mut input = &wire[..end];
            assert_eq!(
                decoder.decode(&mut input),
                Ok(None),
                "prefix {end} of {message:?}"
            );
            assert!(input.is_empty());
            assert_eq!(decoder.is_mid_message(), end > 0);
            // The rest completes it.
            let mut rest = &wire[end..];
            assert_eq!(decoder.decode(&mut rest), Ok(Some(message.clone())));
            assert_eq!(decoder.decode(&mut rest), Ok(None));
            assert!(rest.is_empty());
        }
    }
}

#[test]
fn sequential_requests_on_one_connection_come_out_in_order() {
    let mut wire = Vec::new();
    for (bytes, _) in the_format() {
        wire.extend_from_slice(bytes);
    }
    let expected: Vec<Item> = the_format().into_iter().map(|(_, m)| Ok(m)).collect();
    assert_eq!(decode(&wire), expected);
}

#[test]
fn bytes_after_a_block_stay_in_the_input() {
    // A CHAT and the first raw turn may arrive in one read.
    let mut decoder = CourseDecoder::default();
    let mut input: &[u8] = b"CHAT\r\nclientID: bob\r\nIP: 10.0.0.6\r\nPort: 2000\r\n\r\nhi alice";
    assert_eq!(
        decoder.decode(&mut input),
        Ok(Some(CourseMessage::Chat(bob())))
    );
    assert_eq!(input, b"hi alice");
}

// ---------------------------------------------------------------------------
// Leniency

#[test]
fn bare_lf_and_loose_spacing_and_header_case_and_order_are_accepted() {
    let cases: [(&[u8], CourseMessage); 6] = [
        (
            b"REGISTER\nclientID: alice\nIP: 10.0.0.5\nPort: 3000\n\n",
            CourseMessage::Register(alice()),
        ),
        (
            b"REGISTER\r\nport:3000\r\nCLIENTID:\talice \r\nip:  10.0.0.5\r\n\r\n",
            CourseMessage::Register(alice()),
        ),
        (
            b"BRIDGE \r\nclientID: alice\r\nX-Extra: ignored\r\n\n",
            CourseMessage::Bridge(name("alice")),
        ),
        (
            b"BRIDGEACK\nclientID:\nIP:\nPort:\n\n",
            CourseMessage::BridgeAck(None),
        ),
        (
            b"REGACK\r\nclientID: alice\r\nIP: 10.0.0.5\r\nPort: 3000\r\nStatus: Registered\r\n\r\n",
            CourseMessage::RegAck {
                contact: alice(),
                registered: true,
            },
        ),
        (b"\r\n\n\r\nQUIT\n\n", CourseMessage::Quit),
    ];
    for (wire, message) in cases {
        assert_eq!(
            decode(wire),
            [Ok(message)],
            "{}",
            String::from_utf8_lossy(wire)
        );
    }
}

#[test]
fn a_framed_message_keeps_its_own_spaces_and_utf8() {
    assert_eq!(
        decode("CHAT\r\nType: message\r\nMessage:   héllo  \r\n\r\n".as_bytes()),
        [Ok(CourseMessage::ChatMessage(
            "  héllo  ".as_bytes().to_vec()
        ))]
    );
    assert_eq!(
        decode(b"CHAT\r\nType: message\r\nMessage:\r\n\r\n"),
        [Ok(CourseMessage::ChatMessage(Vec::new()))]
    );
}

#[test]
fn ipv6_contacts_are_accepted_though_course_programs_send_ipv4() {
    assert_eq!(
        decode(b"REGISTER\r\nclientID: alice\r\nIP: ::1\r\nPort: 3000\r\n\r\n"),
        [Ok(CourseMessage::Register(contact("alice", "::1", 3000)))]
    );
}

// ---------------------------------------------------------------------------
// Refusals

fn field_error(verb: Verb, error: FieldError) -> Item {
    Err(CourseError::Field { verb, error })
}

#[test]
fn bad_values_refuse_one_block_and_the_decoder_carries_on() {
    use FieldError::*;
    let cases: Vec<(&[u8], Item)> =
        vec![
        (
            b"REGISTER\r\nIP: 10.0.0.5\r\nPort: 3000\r\n\r\n",
            field_error(Verb::Register, Missing(Field::ClientId)),
        ),
        (
            b"REGISTER\r\nclientID: al ice\r\nIP: 10.0.0.5\r\nPort: 3000\r\n\r\n",
            field_error(
                Verb::Register,
                Invalid(Field::ClientId, InvalidValue::BadCharacter),
            ),
        ),
        (
            b"REGISTER\r\nclientID: alice\r\nIP: localhost\r\nPort: 3000\r\n\r\n",
            field_error(Verb::Register, Invalid(Field::Ip, InvalidValue::NotAnAddress)),
        ),
        (
            b"REGISTER\r\nclientID: alice\r\nIP: 10.0.0.5\r\nPort: 0\r\n\r\n",
            field_error(Verb::Register, Invalid(Field::Port, InvalidValue::NotAPort)),
        ),
        (
            b"REGISTER\r\nclientID: alice\r\nclientID: bob\r\nIP: 10.0.0.5\r\nPort: 3000\r\n\r\n",
            field_error(Verb::Register, Repeated(Field::ClientId)),
        ),
        (
            b"BRIDGE\r\n\r\n",
            field_error(Verb::Bridge, Missing(Field::ClientId)),
        ),
        (
            b"BRIDGE\r\nclientID: \r\n\r\n",
            field_error(Verb::Bridge, Invalid(Field::ClientId, InvalidValue::Empty)),
        ),
        (
            b"BRIDGEACK\r\nclientID: bob\r\nIP: \r\nPort: \r\n\r\n",
            field_error(Verb::BridgeAck, Invalid(Field::Ip, InvalidValue::Empty)),
        ),
        (
            b"BRIDGEACK\r\nclientID: \r\nIP: \r\n\r\n",
            field_error(Verb::BridgeAck, Missing(Field::Port)),
        ),
        (
            b"REGACK\r\nclientID: alice\r\nIP: 10.0.0.5\r\nPort: 3000\r\nStatus: failed\r\n\r\n",
            field_error(Verb::RegAck, UnknownValue(Field::Status)),
        ),
        (
            b"CHAT\r\nType: shout\r\n\r\n",
            field_error(Verb::Chat, UnknownValue(Field::Type)),
        ),
        (
            b"CHAT\r\nType: message\r\n\r\n",
            field_error(Verb::Chat, Missing(Field::Message)),
        ),
        (
            b"CHAT\r\nType: init\r\nclientID: bob\r\n\r\n",
            field_error(Verb::Chat, Missing(Field::Ip)),
        ),
        (
            b"CHAT\r\nclientID: bob\r\n\r\n",
            field_error(Verb::Chat, Missing(Field::Ip)),
        ),
        (b"HELLO\r\n\r\n", Err(CourseError::UnknownVerb)),
        (b"register\r\n\r\n", Err(CourseError::UnknownVerb)),
        (
            b"REGISTER / HTTP/1.1\r\nName: alice\r\n\r\n",
            Err(CourseError::UnknownVerb),
        ),
    ];
    for (wire, expected) in cases {
        let expected_error = expected.clone().unwrap_err();
        assert!(!expected_error.is_fatal());
        // The next block on the same connection is read as usual.
        let mut then_bridge = wire.to_vec();
        then_bridge.extend_from_slice(b"BRIDGE\r\nclientID: alice\r\n\r\n");
        assert_eq!(
            decode(&then_bridge),
            [expected, Ok(CourseMessage::Bridge(name("alice")))],
            "{}",
            String::from_utf8_lossy(wire)
        );
        assert!(!expected_error.to_string().is_empty());
    }
}

#[test]
fn a_course_client_id_outside_bridgechat_names_is_refused_with_its_reason() {
    let long = format!(
        "REGISTER\r\nclientID: {}\r\nIP: 10.0.0.5\r\nPort: 3000\r\n\r\n",
        "a".repeat(33)
    );
    assert_eq!(
        decode(long.as_bytes()),
        [field_error(
            Verb::Register,
            FieldError::Invalid(Field::ClientId, InvalidValue::TooLong)
        )]
    );
    assert_eq!(
        decode("BRIDGE\r\nclientID: zoë\r\n\r\n".as_bytes()),
        [field_error(
            Verb::Bridge,
            FieldError::Invalid(Field::ClientId, InvalidValue::BadCharacter)
        )]
    );
}

#[test]
fn broken_shapes_are_fatal_and_the_decoder_stays_failed() {
    let cases: [(&[u8], CourseError); 6] = [
        (
            b"REGISTER\r\nclientID alice\r\n\r\n",
            CourseError::MalformedHeader,
        ),
        (b"REGISTER\r\n: alice\r\n\r\n", CourseError::MalformedHeader),
        (
            b"REGISTER\r\nclientID: al\x00ice\r\n\r\n",
            CourseError::ControlByte,
        ),
        (b"REG\rISTER\r\n\r\n", CourseError::ControlByte),
        (b"\x16\x03\x01\x02\x00\x01", CourseError::ControlByte),
        (b"QUIT\r\n\x7f\r\n\r\n", CourseError::ControlByte),
    ];
    for (wire, error) in cases {
        assert!(error.is_fatal());
        assert_eq!(
            decode(wire),
            [Err(error)],
            "{}",
            String::from_utf8_lossy(wire)
        );
        let mut decoder = CourseDecoder::default();
        let mut input = wire;
        assert_eq!(decoder.decode(&mut input), Err(error));
        assert_eq!(decoder.buffered(), 0, "a failed decoder holds nothing");
        let mut more: &[u8] = b"QUIT\r\n\r\n";
        assert_eq!(decoder.decode(&mut more), Err(CourseError::Failed));
        let mut nothing: &[u8] = b"";
        assert_eq!(decoder.decode(&mut nothing), Err(CourseError::Failed));
    }
}

#[test]
fn a_block_may_be_max_head_bytes_and_not_one_more() {
    let wire = b"BRIDGE\r\nclientID: alice\r\n\r\n";
    let exact = Limits {
        max_head: wire.len(),
        ..Limits::default()
    };
    assert_eq!(
        decode_in(exact, [&wire[..]]),
        [Ok(CourseMessage::Bridge(name("alice")))]
    );
    let short = Limits {
        max_head: wire.len() - 1,
        ..Limits::default()
    };
    assert_eq!(
        decode_in(short, [&wire[..]]),
        [Err(CourseError::HeadTooLarge)]
    );
    assert_eq!(
        decode_in(short, wire.chunks(1)),
        [Err(CourseError::HeadTooLarge)]
    );
}

#[test]
fn a_block_that_never_ends_fails_at_the_head_limit_holding_no_more() {
    let limits = Limits::default();
    let mut decoder = CourseDecoder::new(limits);
    let mut input: &[u8] = b"REGISTER\r\n";
    assert_eq!(decoder.decode(&mut input), Ok(None));
    let mut fed = 10;
    let error = loop {
        let mut input: &[u8] = b"aaaaaaaaaaaaaaaa";
        match decoder.decode(&mut input) {
            Ok(None) => fed += 16,
            Err(error) => break error,
            Ok(Some(m)) => panic!("decoded {m:?}"),
        }
        assert!(decoder.buffered() <= limits.max_head);
        assert!(fed <= limits.max_head + 16, "no error past the limit");
    };
    assert_eq!(error, CourseError::HeadTooLarge);
}

#[test]
fn header_count_is_limited() {
    let limits = Limits {
        max_headers: 4,
        ..Limits::default()
    };
    let four = b"REGISTER\r\nclientID: alice\r\nIP: 10.0.0.5\r\nPort: 3000\r\nX: y\r\n\r\n";
    assert_eq!(
        decode_in(limits, [&four[..]]),
        [Ok(CourseMessage::Register(alice()))]
    );
    let five = b"REGISTER\r\nclientID: alice\r\nIP: 10.0.0.5\r\nPort: 3000\r\nX: y\r\nZ: w\r\n\r\n";
    assert_eq!(
        decode_in(limits, [&five[..]]),
        [Err(CourseError::TooManyHeaders)]
    );
}

#[test]
fn blank_lines_between_blocks_hold_nothing() {
    let mut decoder = CourseDecoder::default();
    for _ in 0..10_000 {
        let mut input: &[u8] = b"\r\n\n\r";
        assert_eq!(decoder.decode(&mut input), Ok(None));
        assert_eq!(decoder.buffered(), 0);
        assert!(!decoder.is_mid_message());
    }
}

// ---------------------------------------------------------------------------
// Framed chat text

#[test]
fn framed_chat_text_must_be_one_line() {
    let mut out = Vec::new();
    assert_eq!(
        course::write_chat_message(&mut out, b"two\nlines"),
        Err(UnencodableText::ControlByte)
    );
    assert_eq!(
        course::write_chat_message(&mut out, b"bell\x07"),
        Err(UnencodableText::ControlByte)
    );
    assert!(out.is_empty(), "nothing written for refused text");
    course::write_chat_message(&mut out, b"tab\tok").unwrap();
    assert_eq!(out, b"CHAT\r\nType: message\r\nMessage: tab\tok\r\n\r\n");
}

// ---------------------------------------------------------------------------
// Raw chat turns

#[test]
fn a_raw_turn_is_whatever_one_read_delivered() {
    let cases: [(&[u8], Option<Turn<'_>>); 12] = [
        (b"", None),
        (b"hello bob", Some(Turn::Text(b"hello bob"))),
        (b"hello\r\n", Some(Turn::Text(b"hello\r\n"))),
        (b"QUIT\r\n\r\n\r\n", Some(Turn::Quit)),
        (b"QUIT", Some(Turn::Quit)),
        (b"QUIT\n", Some(Turn::Quit)),
        (b"QUIT\r\n\r\n", Some(Turn::Quit)),
        (b"byeQUIT\r\n\r\n\r\n", Some(Turn::TextThenQuit(b"bye"))),
        (b"byeQUIT\n\n", Some(Turn::TextThenQuit(b"bye"))),
        (b"I QUIT", Some(Turn::Text(b"I QUIT"))),
        (b"I QUIT\r\n", Some(Turn::Text(b"I QUIT\r\n"))),
        (b"quit", Some(Turn::Text(b"quit"))),
    ];
    for (read, turn) in cases {
        assert_eq!(
            course::read_turn(read),
            turn,
            "{}",
            String::from_utf8_lossy(read)
        );
    }
    // Two turns that arrived in one read are one message, as in the course programs.
    assert_eq!(course::read_turn(b"hihello"), Some(Turn::Text(b"hihello")));
}

#[test]
fn a_raw_turn_is_written_as_the_text_alone() {
    let mut out = Vec::new();
    course::write_turn(&mut out, "héllo".as_bytes()).unwrap();
    assert_eq!(out, "héllo".as_bytes());
    assert_eq!(
        course::write_turn(&mut out, b""),
        Err(UnencodableText::Empty)
    );
    assert_eq!(
        course::read_turn(&out),
        Some(Turn::Text("héllo".as_bytes()))
    );
}

// ---------------------------------------------------------------------------
// Telling the course format from HTTP

#[test]
fn detection_reads_the_first_line() {
    let limits = Limits::default();
    let cases: [(&[u8], Dialect); 14] = [
        (b"", Dialect::Undecided),
        (b"\r\n", Dialect::Undecided),
        (b"REGIS", Dialect::Undecided),
        (b"REGISTER", Dialect::Undecided),
        (b"REGISTER\r", Dialect::Undecided),
        (b"REGISTER\r\n", Dialect::Course),
        (b"REGISTER\n", Dialect::Course),
        (b"\r\nBRIDGE\r\nclientID: alice\r\n\r\n", Dialect::Course),
        (b"CHAT\r\nclientID: bob\r\n", Dialect::Course),
        (b"REGISTER / HTTP/1.1\r\n", Dialect::Http),
        (b"REGISTER / HTTP/1.0\r\nName: a", Dialect::Http),
        // Decided before the line ends once the version is in sight.
        (b"BRIDGE / HTTP/1.1", Dialect::Http),
        (b"HTTP/1.1 200 OK\r\n", Dialect::Http),
        (b"BRIDGE / HT", Dialect::Undecided),
    ];
    for (bytes, dialect) in cases {
        assert_eq!(
            course::detect(bytes, &limits),
            dialect,
            "{}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn detection_gives_an_endless_first_line_to_http_at_the_head_limit() {
    let limits = Limits {
        max_head: 64,
        ..Limits::default()
    };
    assert_eq!(course::detect(&[b'A'; 63], &limits), Dialect::Undecided);
    assert_eq!(course::detect(&[b'A'; 64], &limits), Dialect::Http);
    let mut blank_then_line = vec![b'\n'; 60];
    blank_then_line.extend_from_slice(b"QUIT");
    assert_eq!(course::detect(&blank_then_line, &limits), Dialect::Http);
}

#[test]
fn every_message_of_the_format_is_detected_as_course() {
    for (wire, message) in the_format() {
        assert_eq!(
            course::detect(wire, &Limits::default()),
            Dialect::Course,
            "{message:?}"
        );
    }
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

/// One-line text: anything but control bytes (tab allowed), UTF-8 or not.
fn line_text_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[^\\x00-\\x08\\x0a-\\x1f\\x7f]{0,100}".prop_map(String::into_bytes),
        proptest::collection::vec(
            any::<u8>().prop_filter("no control bytes", |&b| b == b'\t'
                || (b >= 0x20 && b != 0x7f)),
            0..100
        ),
    ]
}

fn message_strategy() -> impl Strategy<Value = CourseMessage> {
    prop_oneof![
        contact_strategy().prop_map(CourseMessage::Register),
        (contact_strategy(), any::<bool>()).prop_map(|(contact, registered)| {
            CourseMessage::RegAck {
                contact,
                registered,
            }
        }),
        name_strategy().prop_map(CourseMessage::Bridge),
        proptest::option::of(contact_strategy()).prop_map(CourseMessage::BridgeAck),
        contact_strategy().prop_map(CourseMessage::Chat),
        Just(CourseMessage::Quit),
        proptest::option::of(contact_strategy()).prop_map(CourseMessage::ChatInit),
        line_text_strategy().prop_map(CourseMessage::ChatMessage),
        Just(CourseMessage::ChatQuit),
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

/// Bytes that look like course blocks more often than uniform noise does.
fn course_ish_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"REGISTER".to_vec()),
        Just(b"BRIDGEACK".to_vec()),
        Just(b"CHAT".to_vec()),
        Just(b"QUIT".to_vec()),
        Just(b"clientID: ".to_vec()),
        Just(b"IP: 10.0.0.5".to_vec()),
        Just(b"Port: 3000".to_vec()),
        Just(b"Type: message".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b":".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..8),
    ];
    proptest::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn encode_then_decode_is_the_identity(message in message_strategy()) {
        let wire = encoded(&message);
        let mut decoder = CourseDecoder::default();
        let mut input = wire.as_slice();
        prop_assert_eq!(decoder.decode(&mut input), Ok(Some(message)));
        prop_assert_eq!(decoder.decode(&mut input), Ok(None));
        prop_assert!(input.is_empty());
        prop_assert!(!decoder.is_mid_message());
        prop_assert_eq!(course::detect(&wire, &Limits::default()), Dialect::Course);
    }

    #[test]
    fn a_stream_of_messages_decodes_the_same_however_it_is_split(
        messages in proptest::collection::vec(message_strategy(), 1..6),
        points in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let mut wire = Vec::new();
        for message in &messages {
            message.encode(&mut wire).unwrap();
        }
        let chunks = split_at_points(&wire, &points);
        let decoded = decode_in(Limits::default(), chunks.iter().map(Vec::as_slice));
        let expected: Vec<Item> = messages.into_iter().map(Ok).collect();
        prop_assert_eq!(decoded, expected);
    }

    #[test]
    fn any_bytes_decode_the_same_whole_and_split(
        bytes in prop_oneof![course_ish_bytes(), proptest::collection::vec(any::<u8>(), 0..300)],
        points in proptest::collection::vec(any::<usize>(), 0..12),
        max_head in prop_oneof![Just(Limits::default().max_head), 8..120usize],
        max_headers in prop_oneof![Just(Limits::default().max_headers), 0..6usize],
    ) {
        let limits = Limits { max_head, max_headers, ..Limits::default() };
        let whole = decode_in(limits, [bytes.as_slice()]);
        let chunks = split_at_points(&bytes, &points);
        prop_assert_eq!(decode_in(limits, chunks.iter().map(Vec::as_slice)), whole.clone());
        prop_assert_eq!(decode_in(limits, bytes.chunks(1)), whole);
    }
}

// ---------------------------------------------------------------------------
// `Dialect: course` in a bridgechat answer

fn one_response(wire: &[u8]) -> bridgechat_core::Response {
    let mut decoder = bridgechat_core::Decoder::default();
    let mut input = wire;
    let response = decoder.decode_response(&mut input).unwrap().unwrap();
    assert!(input.is_empty(), "one message, wholly read");
    response
}

#[test]
fn a_pairing_says_whether_the_peer_speaks_the_course_format() {
    use bridgechat_core::codec::{self, Introduction, Version};
    let intro = Introduction {
        peer: Contact::new(
            Name::new(b"carol").unwrap(),
            "127.0.0.1".parse().unwrap(),
            3000,
        )
        .unwrap(),
        peer_version: Version::V1,
        observed: "127.0.0.1:5000".parse().unwrap(),
        ticket: None,
    };
    for course_peer in [true, false] {
        let mut wire = Vec::new();
        codec::write_paired_dialect(&mut wire, &intro, course_peer);
        let response = one_response(&wire);
        assert_eq!(response.course_peer, course_peer);
        assert_eq!(response.contact, Some(intro.peer));
        // It survives a round trip through the generic encoder.
        let mut again = Vec::new();
        response.encode(&mut again);
        assert_eq!(one_response(&again), response);
    }
    // Another dialect, or the header twice, is none the client knows.
    for dialect in [
        "Dialect: pigeon\r\n",
        "Dialect: course\r\nDialect: course\r\n",
    ] {
        let wire = format!("HTTP/1.1 200 OK\r\n{dialect}Content-Length: 0\r\n\r\n");
        assert!(!one_response(wire.as_bytes()).course_peer, "{dialect}");
    }
    let wire = b"HTTP/1.1 200 OK\r\ndialect:  COURSE \r\nContent-Length: 0\r\n\r\n";
    assert!(one_response(wire).course_peer, "any case, spaces around");
}
