//! The wire codec: HTTP/1.1-shaped messages in, typed messages out, and back.
//!
//! [`Decoder`] is streaming and per connection: hand it whatever bytes arrived,
//! in any split, and it returns complete typed messages. It never holds more
//! than [`Limits::max_head`] bytes of an unfinished head plus one body of at
//! most [`Limits::max_body`]; past a limit it fails with the status to answer.
//! Every [`DecodeError`] means "answer this status, then close"; a request that
//! is well framed but carries a bad `Name`/`IP`/`Port` is *not* an error here:
//! it decodes to [`Request::Invalid`] and the connection may carry on.
//!
//! The `write_*` functions append a message to a caller's buffer, byte for byte
//! as in section 7 of the contract, so a server can answer without allocating.
//!
//! Version 2 (opt-in per connection with `Bridgechat: 2`) adds headers and three
//! methods; see [`v2`]. A message without them encodes exactly as in version 1.
//! A v2 client reads both answers and server notifications on one connection:
//! [`Decoder::decode_message`] tells them apart by the first line.

use std::fmt;
use std::net::SocketAddr;

use crate::contact::{Contact, InvalidValue, Name};
use crate::operator::PageRequest;

mod decode;
mod encode;
mod fields;
pub mod v2;

pub use decode::{Decoder, Inbound};
pub use encode::*;
pub use v2::{Introduction, Noise, Ticket, Unmatched, Version, NOISE_LEN};

/// Bounds on what one peer may make us hold. Defaults are the contract's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Start line plus headers, in bytes, including the blank line.
    pub max_head: usize,
    /// Number of header lines.
    pub max_headers: usize,
    /// Body bytes (`Content-Length`).
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_head: 8 * 1024,
            max_headers: 32,
            max_body: 64 * 1024,
        }
    }
}

/// Hard ceiling on `max_headers`: the header array lives on the stack.
pub const HEADER_SLOTS: usize = 128;

/// An HTTP status code the protocol uses.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Status(pub u16);

impl Status {
    pub const OK: Status = Status(200);
    pub const BAD_REQUEST: Status = Status(400);
    pub const FORBIDDEN: Status = Status(403);
    pub const NOT_FOUND: Status = Status(404);
    pub const REQUEST_TIMEOUT: Status = Status(408);
    pub const CONFLICT: Status = Status(409);
    pub const TOO_MANY_REQUESTS: Status = Status(429);
    pub const CONTENT_TOO_LARGE: Status = Status(413);
    pub const HEADERS_TOO_LARGE: Status = Status(431);
    pub const NOT_IMPLEMENTED: Status = Status(501);
    pub const SERVICE_UNAVAILABLE: Status = Status(503);
    pub const GATEWAY_TIMEOUT: Status = Status(504);

    pub fn code(self) -> u16 {
        self.0
    }

    /// The reason phrase written after the code (RFC 9110 wording).
    pub fn reason(self) -> &'static str {
        match self.0 {
            200 => "OK",
            400 => "Bad Request",
            403 => "Forbidden",
            404 => "Not Found",
            408 => "Request Timeout",
            409 => "Conflict",
            413 => "Content Too Large",
            429 => "Too Many Requests",
            431 => "Request Header Fields Too Large",
            501 => "Not Implemented",
            503 => "Service Unavailable",
            504 => "Gateway Timeout",
            _ => "Unknown",
        }
    }

    pub fn is_success(self) -> bool {
        (200..300).contains(&self.0)
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0, self.reason())
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The methods of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Register,
    Bridge,
    Unregister,
    Chat,
    Message,
    Quit,
    /// Version 2, server → waiter: you have just been handed to this peer.
    Matched,
    /// Version 2, server → waiter: the match fell through; you wait again.
    Unmatched,
    /// Version 2, waiter → server: the introduced peer's chat has started.
    Started,
    /// Version 2, a peer → server on a fresh connection: splice me with the other
    /// holder of this ticket. Server → waiter: your peer waits at the relay.
    Relay,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Register => "REGISTER",
            Method::Bridge => "BRIDGE",
            Method::Unregister => "UNREGISTER",
            Method::Chat => "CHAT",
            Method::Message => "MESSAGE",
            Method::Quit => "QUIT",
            Method::Matched => "MATCHED",
            Method::Unmatched => "UNMATCHED",
            Method::Started => "STARTED",
            Method::Relay => "RELAY",
        }
    }

    /// Methods are case-sensitive tokens (RFC 9110 §9.1).
    fn from_token(token: &str) -> Option<Method> {
        Some(match token {
            "REGISTER" => Method::Register,
            "BRIDGE" => Method::Bridge,
            "UNREGISTER" => Method::Unregister,
            "CHAT" => Method::Chat,
            "MESSAGE" => Method::Message,
            "QUIT" => Method::Quit,
            "MATCHED" => Method::Matched,
            "UNMATCHED" => Method::Unmatched,
            "STARTED" => Method::Started,
            "RELAY" => Method::Relay,
            _ => return None,
        })
    }
}

/// The headers whose values the protocol checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    Name,
    Ip,
    Port,
    Peer,
    Ticket,
    Noise,
    PeerVersion,
    ObservedIp,
    ObservedPort,
}

impl Header {
    pub fn as_str(self) -> &'static str {
        match self {
            Header::Name => "Name",
            Header::Ip => "IP",
            Header::Port => "Port",
            Header::Peer => "Peer",
            Header::Ticket => "Ticket",
            Header::Noise => "Noise",
            Header::PeerVersion => "Peer-Version",
            Header::ObservedIp => "Observed-IP",
            Header::ObservedPort => "Observed-Port",
        }
    }
}

/// A well-framed request whose contact headers break the contract (→ 400, connection kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    Missing(Header),
    Duplicate(Header),
    Invalid(Header, InvalidValue),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Missing(h) => write!(f, "missing header: {}", h.as_str()),
            HeaderError::Duplicate(h) => write!(f, "duplicate header: {}", h.as_str()),
            HeaderError::Invalid(h, why) => write!(f, "invalid header {}: {why}", h.as_str()),
        }
    }
}

/// A decoded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `Version::V2` when it carried `Bridgechat: 2` (the connection opts in).
    Register(Contact, Version),
    /// `name` is the optional `Name` header, which must match the registration.
    /// `peer` is version 2's `Peer` header (whom to meet); a v1 connection ignores
    /// it, so a malformed one is kept here rather than failing the request.
    Bridge {
        name: Option<Name>,
        peer: Result<Option<Name>, HeaderError>,
    },
    Unregister,
    /// The asker's contact, and the match's ticket when it speaks version 2
    /// (written with `Bridgechat: 2`; without a ticket it is a v1 CHAT).
    /// `Noise`: the first handshake message of an encrypted chat (then no ticket).
    Chat(Contact, Option<Ticket>, Option<Noise>),
    /// One turn of the chat; the text as sent (UTF-8 expected, not enforced).
    Message(Vec<u8>),
    Quit,
    /// A QUIT with a body (an encrypted chat's sealed quit) or a `Reason` (the
    /// plain QUIT that ends an encrypted chat whose frame did not verify).
    QuitWith {
        body: Vec<u8>,
        reason: Option<String>,
    },
    /// Server → v2 waiter: handed to a peer.
    Matched(Introduction),
    /// Server → v2 waiter: the match fell through.
    Unmatched(Unmatched),
    /// V2 waiter → server: the chat with the match's peer started (ticket, if it had one).
    Started(Option<Ticket>),
    /// Version 2, both ways (see [`Method::Relay`]); the ticket is required.
    Relay(Ticket),
    /// A method the contract does not name (→ 501, connection kept).
    Unknown,
    /// `GET` or `HEAD`: an operator page; a server answers it, anyone else treats it as `Unknown`.
    Page(PageRequest),
    /// A known method with a missing or malformed contact header (→ 400, connection kept).
    Invalid {
        method: Method,
        error: HeaderError,
    },
}

impl Request {
    /// Appends the wire form; `Unknown` and `Invalid` have none and write nothing.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), Unencodable> {
        match self {
            Request::Register(contact, version) => write_register_as(out, contact, *version),
            Request::Bridge {
                name,
                peer: Ok(peer),
            } => write_bridge_for(out, name.as_ref(), peer.as_ref()),
            Request::Unregister => write_unregister(out),
            Request::Chat(contact, ticket, noise) => {
                write_chat_v2(out, contact, ticket.as_ref(), noise.as_ref())
            }
            Request::Message(text) => write_message(out, text),
            Request::Quit => write_quit(out),
            Request::QuitWith { body, reason } => {
                encode::write_quit_with(out, body, reason.as_deref())
            }
            Request::Matched(intro) => write_matched(out, intro),
            Request::Unmatched(unmatched) => write_unmatched(
                out,
                &unmatched.name,
                unmatched.ticket.as_ref(),
                &unmatched.reason,
            ),
            Request::Started(ticket) => write_started(out, ticket.as_ref()),
            Request::Relay(ticket) => write_relay(out, ticket),
            Request::Bridge { peer: Err(_), .. }
            | Request::Unknown
            | Request::Invalid { .. }
            | Request::Page(_) => return Err(Unencodable),
        }
        Ok(())
    }
}

/// Returned when asked to encode a request that only exists on the receiving side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unencodable;

/// A decoded response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: Status,
    /// Present when the response carried all of `Name`, `IP` and `Port`.
    pub contact: Option<Contact>,
    /// For errors, the one-line reason.
    pub body: Vec<u8>,
    /// `V2` when the answer carried `Bridgechat: 2` (a v2 server's REGISTER answer).
    pub version: Version,
    /// `Observed-IP`/`Observed-Port`: in a REGISTER answer yours, in a pairing the waiter's.
    pub observed: Option<SocketAddr>,
    /// `Peer-Version` of a v2 pairing.
    pub peer_version: Option<Version>,
    /// `Ticket` of a v2 pairing where both sides speak version 2.
    pub ticket: Option<Ticket>,
    /// `Noise` on a peer's 200 to an encrypted CHAT: the handshake's reply.
    pub noise: Option<Noise>,
}

impl Response {
    /// A version 1 answer: no v2 header.
    pub fn v1(status: Status, contact: Option<Contact>, body: Vec<u8>) -> Response {
        Response {
            status,
            contact,
            body,
            version: Version::V1,
            observed: None,
            peer_version: None,
            ticket: None,
            noise: None,
        }
    }

    fn has_v2_headers(&self) -> bool {
        self.version == Version::V2
            || self.observed.is_some()
            || self.peer_version.is_some()
            || self.ticket.is_some()
            || self.noise.is_some()
    }

    /// The body as text, invalid UTF-8 shown as U+FFFD.
    pub fn reason_text(&self) -> String {
        String::from_utf8_lossy(&self.body).trim_end().to_owned()
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        if self.status == Status::OK && self.body.is_empty() && !self.has_v2_headers() {
            write_ok(out, self.contact.as_ref());
        } else {
            encode::write_head_line(out, self.status);
            if let Some(c) = &self.contact {
                encode::write_contact_headers(out, c);
            }
            encode::write_v2_answer_headers(out, self);
            // Error responses are text/plain even when a caller left the reason empty.
            if !self.body.is_empty() || !self.status.is_success() {
                out.extend_from_slice(encode::TEXT_PLAIN);
            }
            encode::write_body(out, &self.body);
        }
    }
}

/// A framing failure: answer `status` with `reason`, then close the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeError {
    pub status: Status,
    pub reason: &'static str,
}

impl DecodeError {
    pub(crate) const fn new(status: Status, reason: &'static str) -> DecodeError {
        DecodeError { status, reason }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status, self.reason)
    }
}

impl std::error::Error for DecodeError {}
