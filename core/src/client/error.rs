//! What the client reports as [`ClientEvent::Error`](super::ClientEvent::Error),
//! [`ClientEvent::PeerLost`](super::ClientEvent::PeerLost),
//! [`ClientEvent::Reconnecting`](super::ClientEvent::Reconnecting) and
//! `Output::Exit(Err)`: typed, so a user interface can match on them;
//! `Display` gives the line shown.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use super::{Mode, Refusal, Unprotected};
use crate::codec::{DecodeError, Status};
use crate::contact::{InvalidValue, Name};
use crate::secure::SecureError;
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
    /// Something the course format (`--legacy`, or a course peer) cannot carry.
    NotInCourseFormat(&'static str),
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
    /// Fatal at start-up (the first connection only).
    ServerUnreachable {
        server: SocketAddr,
        why: Unreachable,
    },
    /// `/register` gave up reconnecting after `attempts`; not fatal.
    ReconnectFailed {
        server: SocketAddr,
        attempts: u32,
        why: Unreachable,
    },
    /// The server connection closed; a chat in progress goes on without it.
    ServerLost {
        chat_goes_on: bool,
    },
    /// The server sent bytes that are no answer; the connection is closed.
    ServerMalformed {
        error: DecodeError,
        chat_goes_on: bool,
    },
    /// REGISTER answered `409`: another connection holds `name`.
    NameTaken(Name),
    /// `/name` with something that is no name; `raw` is made safe to show.
    InvalidName {
        raw: String,
        why: InvalidValue,
    },
    /// `/name` without the name.
    NameMissing,
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
    /// The peer's answer to our encrypted CHAT did not complete the handshake.
    HandshakeFailed {
        peer: Name,
        why: SecureError,
    },
    /// `--require-encryption` and this chat would be in plain text.
    NotEncrypted {
        peer: Name,
        why: Unprotected,
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
    /// `/chat`: no direct path to the peer came up, and the server's relay did
    /// not carry the chat either.
    Unreached {
        peer: Name,
        why: RelayFailure,
    },
    /// The waiter could not join the server's relay its peer waits at.
    RelayFailed {
        peer: Name,
        why: RelayFailure,
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

/// `/register` opening the server connection again: one line per attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconnecting {
    pub server: SocketAddr,
    /// The attempt about to start (from 1), and at most how many there are.
    pub attempt: u32,
    pub attempts: u32,
    /// Why the previous attempt failed and how long until this one; `None` for the first.
    pub after: Option<(Unreachable, Duration)>,
}

impl fmt::Display for Reconnecting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Reconnecting {
            server,
            attempt,
            attempts,
            after,
        } = self;
        match after {
            None => write!(
                f,
                "reconnecting to the server at {server} (attempt {attempt} of {attempts})"
            ),
            Some((why, delay)) => write!(
                f,
                "cannot reach the server at {server}{why}; trying again in {delay:?} \
                 (attempt {attempt} of {attempts})"
            ),
        }
    }
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
    /// A frame of the encrypted chat did not open (we told the peer why).
    Undecryptable(SecureError),
    /// The peer could not open one of our frames: its plain QUIT's `Reason`.
    PeerRefusedFrame(String),
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
            E::NotInCourseFormat(what) => write!(f, "the course format has no {what}"),
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
            E::ReconnectFailed {
                server,
                attempts,
                why,
            } => write!(
                f,
                "cannot reach the server at {server} after {attempts} attempts{why}; \
                 type /register to try again, or /quit"
            ),
            E::ServerLost { chat_goes_on } => {
                write!(f, "lost the server{}", what_now(*chat_goes_on))
            }
            E::ServerMalformed {
                error,
                chat_goes_on,
            } => write!(
                f,
                "lost the server after a malformed answer ({error}){}",
                what_now(*chat_goes_on)
            ),
            E::NameTaken(name) => write!(
                f,
                "the name {name} is taken — choose another with /name NEWNAME"
            ),
            E::InvalidName { raw, why } => {
                write!(f, "{raw:?} cannot be a name: {why}")
            }
            E::NameMissing => f.write_str("usage: /name NEWNAME"),
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
            E::HandshakeFailed { peer, why } => write!(f, "chat with {peer} ended: {why}"),
            E::NotEncrypted { peer, why } => write!(
                f,
                "not chatting with {peer}: the chat would not be encrypted ({why}) \
                 and --require-encryption is set"
            ),
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
            E::Unreached { peer, why } => {
                write!(f, "could not reach {peer}: no direct path, and {why}")
            }
            E::RelayFailed { peer, why } => {
                write!(f, "could not join {peer} at the server's relay: {why}")
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

/// What losing the server means for the person.
fn what_now(chat_goes_on: bool) -> &'static str {
    if chat_goes_on {
        " (your chat goes on)"
    } else {
        ": type /register to reconnect, or /quit"
    }
}

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
            LostReason::Undecryptable(why) => write!(f, "{why}"),
            LostReason::PeerRefusedFrame(reason) => {
                write!(f, "the peer refused our encrypted frame: {reason}")
            }
        }
    }
}

/// Why the server's relay did not carry the chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayFailure {
    /// A non-2xx answer to RELAY; `reason` is made safe to show.
    Refused { status: Status, reason: String },
    /// The connection to the server failed.
    Unreachable(Unreachable),
    /// No answer to RELAY within this.
    Silent(Duration),
    /// The server closed the connection before answering, or answered garbage.
    Closed,
}

impl fmt::Display for RelayFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RelayFailure::Refused { status, reason } if reason.is_empty() => {
                write!(f, "the server's relay answered {status}")
            }
            RelayFailure::Refused { status, reason } => {
                write!(f, "the server's relay answered {status}: {reason}")
            }
            RelayFailure::Unreachable(why) => {
                write!(f, "the server's relay cannot be reached{why}")
            }
            RelayFailure::Silent(after) => {
                write!(f, "the server's relay did not answer within {after:?}")
            }
            RelayFailure::Closed => f.write_str("the server's relay closed the connection"),
        }
    }
}
