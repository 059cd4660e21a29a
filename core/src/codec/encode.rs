//! Encoding: the `write_*` functions append one message to a caller's buffer without
//! allocating beyond it. A message with no v2 part is written exactly as in version 1.

use std::fmt;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};

use super::v2::{Introduction, Noise, Ticket, Version};
use super::{Method, Response, Status};
use crate::contact::{Contact, Name};

const CRLF: &[u8] = b"\r\n";
pub(super) const TEXT_PLAIN: &[u8] = b"Content-Type: text/plain; charset=utf-8\r\n";

fn write_request_line(out: &mut Vec<u8>, method: Method) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.extend_from_slice(b" / HTTP/1.1\r\n");
}

pub(super) fn write_head_line(out: &mut Vec<u8>, status: Status) {
    out.extend_from_slice(b"HTTP/1.1 ");
    // Always three digits: httparse, like RFC 9112, reads no other form.
    if status.code() < 100 {
        out.push(b'0');
    }
    if status.code() < 10 {
        out.push(b'0');
    }
    write_decimal(out, usize::from(status.code()));
    out.push(b' ');
    out.extend_from_slice(status.reason().as_bytes());
    out.extend_from_slice(CRLF);
}

pub(super) fn write_contact_headers(out: &mut Vec<u8>, contact: &Contact) {
    out.extend_from_slice(b"Name: ");
    out.extend_from_slice(contact.name.as_bytes());
    out.extend_from_slice(b"\r\nIP: ");
    write_ip(out, contact.ip);
    out.extend_from_slice(b"\r\nPort: ");
    write_decimal(out, usize::from(contact.port()));
    out.extend_from_slice(CRLF);
}

fn write_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        // By hand: `Display` for an address costs as much as the rest of a REGISTER answer.
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            for (i, octet) in [a, b, c, d].into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                write_decimal(out, usize::from(octet));
            }
        }
        // Writing to a Vec cannot fail.
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

const OPT_IN: &[u8] = b"Bridgechat: 2\r\n";

fn write_observed(out: &mut Vec<u8>, observed: SocketAddr) {
    out.extend_from_slice(b"Observed-IP: ");
    write_ip(out, observed.ip());
    out.extend_from_slice(b"\r\nObserved-Port: ");
    write_decimal(out, usize::from(observed.port()));
    out.extend_from_slice(CRLF);
}

fn write_ticket(out: &mut Vec<u8>, ticket: Option<&Ticket>) {
    if let Some(ticket) = ticket {
        out.extend_from_slice(b"Ticket: ");
        ticket.write_hex(out);
        out.extend_from_slice(CRLF);
    }
}

fn write_peer_version(out: &mut Vec<u8>, version: Version) {
    out.extend_from_slice(b"Peer-Version: ");
    out.extend_from_slice(version.as_str().as_bytes());
    out.extend_from_slice(CRLF);
}

/// An introduction's headers after the peer's contact: `Peer-Version`, `Observed-*`, `Ticket`.
fn write_introduction(out: &mut Vec<u8>, intro: &Introduction) {
    write_contact_headers(out, &intro.peer);
    write_peer_version(out, intro.peer_version);
    write_observed(out, intro.observed);
    write_ticket(out, intro.ticket.as_ref());
}

/// The v2 headers of a [`Response`], in the order the server writes them.
pub(super) fn write_v2_answer_headers(out: &mut Vec<u8>, response: &Response) {
    if response.version == Version::V2 {
        out.extend_from_slice(OPT_IN);
    }
    if let Some(version) = response.peer_version {
        write_peer_version(out, version);
    }
    if let Some(observed) = response.observed {
        write_observed(out, observed);
    }
    write_ticket(out, response.ticket.as_ref());
    write_noise(out, response.noise.as_ref());
    if response.course_peer {
        out.extend_from_slice(COURSE_DIALECT);
    }
}

fn write_noise(out: &mut Vec<u8>, noise: Option<&Noise>) {
    if let Some(noise) = noise {
        out.extend_from_slice(b"Noise: ");
        noise.write_hex(out);
        out.extend_from_slice(CRLF);
    }
}

/// `Content-Length`, the blank line, and the body.
pub(super) fn write_body(out: &mut Vec<u8>, body: &[u8]) {
    out.extend_from_slice(b"Content-Length: ");
    write_decimal(out, body.len());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
}

fn write_decimal(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// `REGISTER / HTTP/1.1` with `Name`, `IP`, `Port`.
pub fn write_register(out: &mut Vec<u8>, contact: &Contact) {
    write_request_line(out, Method::Register);
    write_contact_headers(out, contact);
    out.extend_from_slice(CRLF);
}

/// Version 2's REGISTER: the contact and `Bridgechat: 2`.
pub fn write_register_v2(out: &mut Vec<u8>, contact: &Contact) {
    write_request_line(out, Method::Register);
    write_contact_headers(out, contact);
    out.extend_from_slice(OPT_IN);
    out.extend_from_slice(CRLF);
}

/// REGISTER in the given version.
pub fn write_register_as(out: &mut Vec<u8>, contact: &Contact, version: Version) {
    match version {
        Version::V1 => write_register(out, contact),
        Version::V2 => write_register_v2(out, contact),
    }
}

/// `BRIDGE / HTTP/1.1`, with the optional `Name` header.
pub fn write_bridge(out: &mut Vec<u8>, name: Option<&Name>) {
    write_bridge_for(out, name, None);
}

/// BRIDGE with version 2's optional `Peer` header: whom to meet.
pub fn write_bridge_for(out: &mut Vec<u8>, name: Option<&Name>, peer: Option<&Name>) {
    write_request_line(out, Method::Bridge);
    if let Some(name) = name {
        out.extend_from_slice(b"Name: ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(CRLF);
    }
    if let Some(peer) = peer {
        out.extend_from_slice(b"Peer: ");
        out.extend_from_slice(peer.as_bytes());
        out.extend_from_slice(CRLF);
    }
    out.extend_from_slice(CRLF);
}

pub fn write_unregister(out: &mut Vec<u8>) {
    write_request_line(out, Method::Unregister);
    out.extend_from_slice(CRLF);
}

/// `CHAT / HTTP/1.1` with the initiator's own `Name`, `IP`, `Port`.
pub fn write_chat(out: &mut Vec<u8>, contact: &Contact) {
    write_chat_v2(out, contact, None, None);
}

/// CHAT; with a ticket or a handshake message it is version 2's (`Bridgechat: 2`,
/// `Ticket`, `Noise`), else version 1's.
pub fn write_chat_v2(
    out: &mut Vec<u8>,
    contact: &Contact,
    ticket: Option<&Ticket>,
    noise: Option<&Noise>,
) {
    write_request_line(out, Method::Chat);
    write_contact_headers(out, contact);
    if ticket.is_some() || noise.is_some() {
        out.extend_from_slice(OPT_IN);
        write_ticket(out, ticket);
        write_noise(out, noise);
    }
    out.extend_from_slice(CRLF);
}

/// Server → v2 waiter: `MATCHED` with the peer's contact, version, observed address, ticket.
pub fn write_matched(out: &mut Vec<u8>, intro: &Introduction) {
    write_matched_dialect(out, intro, false);
}

/// Says that the peer introduced speaks the course format (raw chat turns, no HTTP).
const COURSE_DIALECT: &[u8] = b"Dialect: course\r\n";

/// `MATCHED`, with `Dialect: course` when the peer is a course-format client.
pub fn write_matched_dialect(out: &mut Vec<u8>, intro: &Introduction, course_peer: bool) {
    write_request_line(out, Method::Matched);
    write_introduction(out, intro);
    if course_peer {
        out.extend_from_slice(COURSE_DIALECT);
    }
    write_body(out, b"");
}

/// Server → v2 waiter: `UNMATCHED` naming the peer who did not come, and why (one line).
pub fn write_unmatched(
    out: &mut Vec<u8>,
    name: &Name,
    ticket: Option<&Ticket>,
    reason: &dyn fmt::Display,
) {
    write_request_line(out, Method::Unmatched);
    out.extend_from_slice(b"Name: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(CRLF);
    write_ticket(out, ticket);
    let mut line = ReasonLine::default();
    let _ = fmt::write(&mut line, format_args!("{reason}"));
    let text = line.as_bytes();
    if !text.is_empty() {
        out.extend_from_slice(b"Reason: ");
        out.extend_from_slice(text);
        out.extend_from_slice(CRLF);
    }
    write_body(out, b"");
}

/// V2 waiter → server: `STARTED`, with the match's ticket when it had one.
pub fn write_started(out: &mut Vec<u8>, ticket: Option<&Ticket>) {
    write_request_line(out, Method::Started);
    write_ticket(out, ticket);
    write_body(out, b"");
}

/// `RELAY` with the match's ticket: a peer joining the relay, or the server
/// telling the waiter that its peer waits there.
pub fn write_relay(out: &mut Vec<u8>, ticket: &Ticket) {
    write_request_line(out, Method::Relay);
    write_ticket(out, Some(ticket));
    write_body(out, b"");
}

/// One chat turn: `MESSAGE` with a `text/plain` body.
pub fn write_message(out: &mut Vec<u8>, text: &[u8]) {
    write_request_line(out, Method::Message);
    out.extend_from_slice(TEXT_PLAIN);
    write_body(out, text);
}

pub fn write_quit(out: &mut Vec<u8>) {
    write_request_line(out, Method::Quit);
    write_body(out, b"");
}

/// `200 OK`, echoing a contact when there is one, with `Content-Length: 0`.
pub fn write_ok(out: &mut Vec<u8>, contact: Option<&Contact>) {
    write_ok_noise(out, contact, None);
}

/// `200 OK` to a CHAT, with the handshake's reply when the chat is encrypted.
pub fn write_ok_noise(out: &mut Vec<u8>, contact: Option<&Contact>, noise: Option<&Noise>) {
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    if let Some(contact) = contact {
        write_contact_headers(out, contact);
    }
    write_noise(out, noise);
    write_body(out, b"");
}

/// One sealed frame of an encrypted chat: `MESSAGE` with an octet-stream body.
pub fn write_sealed_message(out: &mut Vec<u8>, frame: &[u8]) {
    write_request_line(out, Method::Message);
    out.extend_from_slice(OCTET_STREAM);
    write_body(out, frame);
}

/// QUIT with a sealed frame, or (empty body) with a one-line `Reason`.
pub fn write_quit_with(out: &mut Vec<u8>, frame: &[u8], reason: Option<&str>) {
    write_request_line(out, Method::Quit);
    if let Some(reason) = reason {
        let mut line = ReasonLine::default();
        let _ = fmt::write(&mut line, format_args!("{reason}"));
        out.extend_from_slice(b"Reason: ");
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(CRLF);
    }
    if !frame.is_empty() {
        out.extend_from_slice(OCTET_STREAM);
    }
    write_body(out, frame);
}

const OCTET_STREAM: &[u8] = b"Content-Type: application/octet-stream\r\n";

/// A v2 REGISTER's answer: the contact echoed, `Bridgechat: 2`, and the address the
/// server sees for this connection.
pub fn write_registered_v2(out: &mut Vec<u8>, contact: &Contact, observed: SocketAddr) {
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    write_contact_headers(out, contact);
    out.extend_from_slice(OPT_IN);
    write_observed(out, observed);
    write_body(out, b"");
}

/// A v2 BRIDGE's answer when paired: the waiter's contact, version, observed address
/// and, when both speak version 2, the ticket.
pub fn write_paired(out: &mut Vec<u8>, intro: &Introduction) {
    write_paired_dialect(out, intro, false);
}

/// A v2 BRIDGE's paired answer, with `Dialect: course` when the waiter is a course client.
pub fn write_paired_dialect(out: &mut Vec<u8>, intro: &Introduction, course_peer: bool) {
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    write_introduction(out, intro);
    if course_peer {
        out.extend_from_slice(COURSE_DIALECT);
    }
    write_body(out, b"");
}

/// How an error response ends the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterError {
    /// The connection stays open (bad header value, 403, 409, unknown method).
    KeepOpen,
    /// The connection stays open, and the client should wait this many seconds (429).
    KeepOpenRetryAfter(u32),
    /// The connection closes after this response (framing errors); says `Connection: close`.
    Close,
    /// Like `Close`, and tells the client when to retry (503).
    CloseRetryAfter(u32),
}

/// An error response with a one-line `text/plain` reason.
pub fn write_error(
    out: &mut Vec<u8>,
    status: Status,
    reason: &dyn fmt::Display,
    after: AfterError,
) {
    write_head_line(out, status);
    match after {
        AfterError::KeepOpen => {}
        AfterError::KeepOpenRetryAfter(seconds) => {
            out.extend_from_slice(b"Retry-After: ");
            write_decimal(out, seconds as usize);
            out.extend_from_slice(CRLF);
        }
        AfterError::Close => out.extend_from_slice(b"Connection: close\r\n"),
        AfterError::CloseRetryAfter(seconds) => {
            out.extend_from_slice(b"Connection: close\r\nRetry-After: ");
            write_decimal(out, seconds as usize);
            out.extend_from_slice(CRLF);
        }
    }
    out.extend_from_slice(TEXT_PLAIN);
    let mut line = ReasonLine::default();
    let _ = fmt::write(&mut line, format_args!("{reason}"));
    write_body(out, line.as_bytes());
}

/// A reason formatted on the stack: one line, at most `REASON_MAX` bytes.
const REASON_MAX: usize = 200;

struct ReasonLine {
    bytes: [u8; REASON_MAX],
    len: usize,
}

impl Default for ReasonLine {
    fn default() -> ReasonLine {
        ReasonLine {
            bytes: [0; REASON_MAX],
            len: 0,
        }
    }
}

impl ReasonLine {
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl fmt::Write for ReasonLine {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for ch in s.chars() {
            // Line breaks would break "one line"; overlong reasons are cut at a char boundary.
            let ch = if ch == '\r' || ch == '\n' { ' ' } else { ch };
            let mut utf8 = [0u8; 4];
            let encoded = ch.encode_utf8(&mut utf8).as_bytes();
            if self.len + encoded.len() > REASON_MAX {
                return Ok(());
            }
            self.bytes[self.len..self.len + encoded.len()].copy_from_slice(encoded);
            self.len += encoded.len();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::codec::{DecodeError, Decoder, Header, HeaderError, Request};

    fn decode_all(bytes: &[u8]) -> Vec<Result<Request, DecodeError>> {
        let mut d = Decoder::default();
        let mut input = bytes;
        let mut out = Vec::new();
        loop {
            match d.decode_request(&mut input) {
                Ok(Some(r)) => out.push(Ok(r)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e));
                    break;
                }
            }
        }
        out
    }

    #[test]
    fn register_from_the_contract_round_trips() {
        let wire = b"REGISTER / HTTP/1.1\r\nName: alice\r\nIP: 127.0.0.1\r\nPort: 9001\r\n\r\n";
        let got = decode_all(wire);
        let contact = Contact::new(
            Name::new(b"alice").unwrap(),
            "127.0.0.1".parse().unwrap(),
            9001,
        )
        .unwrap();
        assert_eq!(got, vec![Ok(Request::Register(contact, Version::V1))]);
        let mut out = Vec::new();
        Request::Register(contact, Version::V1)
            .encode(&mut out)
            .unwrap();
        assert_eq!(out, wire);
    }

    #[test]
    fn one_byte_at_a_time_gives_the_same_messages() {
        let wire: &[u8] = b"BRIDGE / HTTP/1.1\r\n\r\nMESSAGE / HTTP/1.1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 2\r\n\r\nhiQUIT / HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
        let mut d = Decoder::default();
        let mut got = Vec::new();
        for b in wire.chunks(1) {
            let mut input = b;
            while let Some(r) = d.decode_request(&mut input).unwrap() {
                got.push(r);
            }
            assert!(input.is_empty());
        }
        assert_eq!(
            got,
            vec![
                Request::Bridge {
                    name: None,
                    peer: Ok(None)
                },
                Request::Message(b"hi".to_vec()),
                Request::Quit
            ]
        );
    }

    #[test]
    fn error_reason_is_one_line_with_exact_length() {
        let mut out = Vec::new();
        write_error(
            &mut out,
            Status::BAD_REQUEST,
            &HeaderError::Missing(Header::Port),
            AfterError::KeepOpen,
        );
        assert_eq!(
            out,
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 20\r\n\r\nmissing header: Port"
        );
    }
}
