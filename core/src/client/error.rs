//! What the client reports as [`ClientEvent::Error`](super::ClientEvent::Error),
//! [`ClientEvent::PeerLost`](super::ClientEvent::PeerLost) and `Output::Exit(Err)`:
//! typed, so a user interface can match on them; `Display` gives the line shown.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use super::{Mode, Refusal};
use crate::codec::{DecodeError, Status};
use crate::contact::{InvalidValue, Name};
use crate::IoFailure;

/// Something went wrong; one line when shown.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientError {
    /// The mode table refused a command or a message line.
    Refused(Refusal),
    /// `/bridge` while the server connection is down.
    NotConnected,
    /// `/chat` with no peer handed out.
    NoPeer,
    /// `/bridge NAME` with a NAME that is not a valid name.
    BadPeerName(InvalidValue),
    /// `/bridge NAME` while the server speaks version 1, which has no named meetings.
    NamedBridgeNeedsVersion2,
    /// The server sent a request other than a notification we can take now
    /// (MATCHED while not waiting, for instance); ignored.
    UnexpectedNotification(&'static str),
    MessageTooLong {
        len: usize,
        max: usize,
    },
    CannotRegister(NoContact),
    CannotStartChat(NoContact),
    /// The chat listener could not be bound (fatal).
    ChatListen {
        addr: SocketAddr,
        error: IoFailure,
    },
    /// Fatal at start-up and when `/register` reconnects.
    ServerUnreachable {
        server: SocketAddr,
        why: Unreachable,
    },
    ServerLost,
    ServerMalformed(DecodeError),
    /// A non-2xx answer; `reason` is the server's text, made safe to show.
    ServerRefused {
        status: Status,
        reason: String,
    },
    /// No answer to `request` (REGISTER or BRIDGE) within `after`.
    ServerSilent {
        request: &'static str,
        after: Duration,
    },
    /// An answer while no request was in flight.
    UnexpectedAnswer(Status),
    /// Our `/chat` could not connect; `addr` is where the server said the peer is.
    PeerUnreachable {
        peer: Name,
        addr: Option<SocketAddr>,
        why: Unreachable,
    },
    /// No answer to our CHAT within `after`.
    PeerSilent {
        peer: Name,
        after: Duration,
    },
    PeerMalformed {
        peer: Name,
        error: DecodeError,
    },
    /// The peer answered our CHAT with a non-2xx status.
    PeerRefused {
        peer: Name,
        status: Status,
        reason: String,
    },
    /// The peer closed the connection before answering our CHAT.
    PeerClosed {
        peer: Name,
    },
    /// A bug in the client: the mode table refused a transition its own logic asked for.
    Bug {
        trigger: &'static str,
        mode: Mode,
        refusal: Refusal,
    },
}

/// Why a connection could not be established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreachable {
    Timeout(Duration),
    Failed(IoFailure),
    /// Closed before it was established.
    Closed,
}

/// Why the client has no contact to register or to send in CHAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoContact {
    NotConnected,
    NoPort,
}

/// Why a chat ended without QUIT ([`ClientEvent::PeerLost`](super::ClientEvent::PeerLost)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LostReason {
    ClosedWithoutQuit,
    /// A request other than MESSAGE or QUIT, by method name.
    UnexpectedRequest(&'static str),
    Malformed(DecodeError),
    /// The table refused the peer's move (a MESSAGE out of turn).
    Protocol(Refusal),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ClientError as E;
        match self {
            E::Refused(refusal) => refusal.fmt(f),
            E::NotConnected => f.write_str("not connected to the server: type /register"),
            E::NoPeer => f.write_str("no peer to chat with: type /bridge"),
            E::BadPeerName(why) => write!(f, "/bridge NAME needs a valid name: {why}"),
            E::NamedBridgeNeedsVersion2 => f.write_str(
                "/bridge NAME is not supported by this server (it speaks protocol version 1): \
                 type /bridge to meet whoever comes",
            ),
            E::UnexpectedNotification(method) => {
                write!(
                    f,
                    "the server sent {method}, which was not expected now; ignored"
                )
            }
            E::MessageTooLong { len, max } => {
                write!(f, "message too long: {len} bytes, at most {max}")
            }
            E::CannotRegister(why) => write!(f, "cannot register: {why}"),
            E::CannotStartChat(why) => write!(f, "cannot start the chat: {why}"),
            E::ChatListen { addr, error } => {
                write!(f, "cannot listen for chats on {addr}: {error}")
            }
            E::ServerUnreachable { server, why } => {
                write!(f, "cannot reach the server at {server}{why}")
            }
            E::ServerLost => f.write_str("lost connection to the server"),
            E::ServerMalformed(error) => write!(
                f,
                "lost connection to the server: it sent a malformed answer ({error})"
            ),
            E::ServerRefused { status, reason } => {
                write!(f, "server refused: {status}{}", colon_reason(reason))
            }
            E::ServerSilent { request, after } => {
                write!(f, "the server did not answer {request} within {after:?}")
            }
            E::UnexpectedAnswer(status) => write!(
                f,
                "the server sent an answer nobody asked for ({status}); ignored"
            ),
            E::PeerUnreachable { peer, addr, why } => match addr {
                Some(addr) => write!(f, "cannot reach {peer} at {addr}{why}"),
                None => write!(f, "cannot reach {peer}{why}"),
            },
            E::PeerSilent { peer, after } => {
                write!(f, "{peer} did not answer CHAT within {after:?}")
            }
            E::PeerMalformed { peer, error } => {
                write!(f, "{peer} sent a malformed answer to CHAT ({error})")
            }
            E::PeerRefused {
                peer,
                status,
                reason,
            } => write!(
                f,
                "{peer} refused the chat: {status}{}",
                colon_reason(reason)
            ),
            E::PeerClosed { peer } => {
                write!(f, "{peer} closed the connection without answering CHAT")
            }
            E::Bug {
                trigger,
                mode,
                refusal,
            } => write!(
                f,
                "internal error: {trigger} refused in {mode} ({refusal}); please report it"
            ),
        }
    }
}

impl std::error::Error for ClientError {}

/// `: reason`, or nothing for an empty reason.
fn colon_reason(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    }
}

/// Follows "cannot reach ...": how it failed.
impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unreachable::Timeout(after) => write!(f, " within {after:?}"),
            Unreachable::Failed(error) => write!(f, ": {error}"),
            Unreachable::Closed => Ok(()),
        }
    }
}

impl fmt::Display for NoContact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NoContact::NotConnected => "not connected to the server",
            NoContact::NoPort => "the chat listener has no port to register",
        })
    }
}

impl fmt::Display for LostReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LostReason::ClosedWithoutQuit => f.write_str("connection closed without QUIT"),
            LostReason::UnexpectedRequest(method) => {
                write!(f, "protocol error: {method} during the chat")
            }
            LostReason::Malformed(error) => write!(f, "protocol error: {error}"),
            LostReason::Protocol(refusal) => write!(f, "protocol error: {refusal}"),
        }
    }
}
