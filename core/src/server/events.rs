//! What the server tells its operator and its clients about: refusals, closes, events.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::codec::{DecodeError, HeaderError, Method, Status, Version};
use crate::contact::{self, Contact, Name, UnusableIp};
use crate::course::{CourseError, Verb};
use crate::{ConnId, Direction};

/// Why a request or connection was refused; the text is also the response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The bytes could not be framed as a message (400, 413, 431, 501); closes.
    Framing(DecodeError),
    /// The head did not complete within `head_timeout` (408); closes.
    HeadTimeout,
    /// A missing, duplicate or malformed header value (400).
    BadHeader(HeaderError),
    /// REGISTER for a name another live connection holds (409).
    NameTaken(Name),
    /// REGISTER with an `IP` no peer could mean (400).
    UnusableIp(IpAddr, UnusableIp),
    /// With `strict_ip`: REGISTER with an `IP` that is not where the connection comes from (403).
    IpNotObserved { claimed: IpAddr, observed: IpAddr },
    /// BRIDGE before REGISTER (403).
    NotRegistered,
    /// BRIDGE with a `Name` that is not this connection's (403).
    NameMismatch,
    /// Version 2: BRIDGE with `Peer` naming the asker itself (400).
    BridgeWithYourself,
    /// BRIDGE from a connection or IP whose introductions fell through too often (429).
    TooManyFallthroughs { retry_after: u32 },
    /// A peer request (CHAT, MESSAGE, QUIT) sent to the server (501).
    PeerRequest(Method),
    /// Version 2: a notification (MATCHED, UNMATCHED) sent to the server (501).
    Notification(Method),
    /// A method the protocol does not have, or (on a v1 connection) a v2 method (501).
    UnknownMethod,
    /// `max_connections` reached (503); closes.
    TooManyConnections,
    /// `max_per_ip` reached for this address (503); closes.
    TooManyFromAddress,
    /// Course format: a block the course decoder refused. The course format has no
    /// error answers, so every course refusal closes the connection unanswered.
    Course(CourseError),
    /// Course format: a verb that is not a request to the server (REGACK, CHAT, ...).
    CourseVerb(Verb),
    /// RELAY on a server that does not relay (`relay` off) (503); closes.
    RelayOff,
    /// RELAY with `max_relays` relays open (503); closes.
    RelayFull,
    /// RELAY with a ticket of no live match, or one a relay was already opened for (403);
    /// closes.
    UnknownTicket,
    /// RELAY on a version 2 connection that already made other requests (400): a relay
    /// is joined from a new connection only.
    RelayNotFirst,
    /// The first peer at a relay waited `relay_join_timeout` for the other (504); closes.
    PeerDidNotCome,
    /// The first peer at a relay sent more than the server holds before its peer came
    /// (413); closes.
    RelayHeldTooMuch,
}

impl Rejection {
    pub fn status(&self) -> Status {
        match self {
            Rejection::Framing(e) => e.status,
            Rejection::HeadTimeout => Status::REQUEST_TIMEOUT,
            Rejection::BadHeader(_) | Rejection::UnusableIp(..) | Rejection::BridgeWithYourself => {
                Status::BAD_REQUEST
            }
            Rejection::IpNotObserved { .. } => Status::FORBIDDEN,
            Rejection::TooManyFallthroughs { .. } => Status::TOO_MANY_REQUESTS,
            Rejection::NameTaken(_) => Status::CONFLICT,
            Rejection::NotRegistered | Rejection::NameMismatch => Status::FORBIDDEN,
            Rejection::PeerRequest(_) | Rejection::Notification(_) | Rejection::UnknownMethod => {
                Status::NOT_IMPLEMENTED
            }
            Rejection::TooManyConnections
            | Rejection::TooManyFromAddress
            | Rejection::RelayOff
            | Rejection::RelayFull => Status::SERVICE_UNAVAILABLE,
            Rejection::UnknownTicket => Status::FORBIDDEN,
            Rejection::RelayNotFirst => Status::BAD_REQUEST,
            Rejection::PeerDidNotCome => Status::GATEWAY_TIMEOUT,
            Rejection::RelayHeldTooMuch => Status::CONTENT_TOO_LARGE,
            // Never written: the course format has no status; for the metrics only.
            Rejection::Course(_) | Rejection::CourseVerb(_) => Status::BAD_REQUEST,
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::Framing(e) => f.write_str(e.reason),
            Rejection::HeadTimeout => f.write_str("request head not complete in time"),
            Rejection::BadHeader(e) => write!(f, "{e}"),
            Rejection::NameTaken(name) => write!(f, "name already taken: {name}"),
            Rejection::UnusableIp(ip, why) => {
                write!(f, "unusable IP {ip}: {why}, no peer could reach you there")
            }
            Rejection::IpNotObserved { claimed, observed } => {
                if contact::is_private_ip(*observed) {
                    write!(f, "IP {claimed} is neither the address you connect from ({observed}) nor private")
                } else {
                    write!(
                        f,
                        "IP {claimed} is not the address you connect from ({observed})"
                    )
                }
            }
            Rejection::NotRegistered => f.write_str("register first"),
            Rejection::NameMismatch => {
                f.write_str("Name does not match this connection's registration")
            }
            Rejection::BridgeWithYourself => f.write_str("cannot bridge with yourself"),
            Rejection::PeerRequest(m) => {
                write!(f, "{} is a peer request, not a server request", m.as_str())
            }
            Rejection::Notification(m) => {
                write!(f, "{} is a server notification, not a request", m.as_str())
            }
            Rejection::TooManyFallthroughs { retry_after } => write!(
                f,
                "too many peers handed to you went unused; try again in {retry_after}s"
            ),
            Rejection::UnknownMethod => f.write_str("unknown method"),
            Rejection::TooManyConnections => f.write_str("server is full, try again later"),
            Rejection::TooManyFromAddress => f.write_str("too many connections from your address"),
            Rejection::Course(e) => write!(f, "course format: {e}"),
            Rejection::CourseVerb(v) => {
                write!(f, "course format: {} is not a server request", v.as_str())
            }
            Rejection::RelayOff => f.write_str("this server does not relay"),
            Rejection::RelayFull => f.write_str("relay full"),
            Rejection::UnknownTicket => f.write_str("unknown ticket"),
            Rejection::RelayNotFirst => {
                f.write_str("RELAY must be the first request on a new connection")
            }
            Rejection::PeerDidNotCome => f.write_str("peer did not come to the relay"),
            Rejection::RelayHeldTooMuch => {
                f.write_str("too many bytes sent before the peer came to the relay")
            }
        }
    }
}

/// Why the server stopped serving a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed it (or it broke).
    PeerClosed,
    /// The client left too many answers unread; the transport dropped it.
    NotReading,
    /// After a framing error or a head timeout.
    Rejected(Status),
    /// No REGISTER within `register_timeout`.
    RegisterTimeout,
    /// Nothing received for `idle_timeout`.
    IdleTimeout,
    /// Over `max_connections` or `max_per_ip`.
    Overloaded,
    /// After an answer to a request that asked to close (`Connection: close`).
    ClientAsked,
    /// The server is shutting down.
    Shutdown,
    /// A course-format request the server could not serve: closed unanswered, since
    /// the course format has no error answers.
    CourseRefused,
    /// The relay this connection was spliced into (or waited at) ended.
    RelayEnded,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("closed by the client"),
            CloseReason::NotReading => f.write_str("dropped: too many answers left unread"),
            CloseReason::Rejected(status) => write!(f, "closed after {status}"),
            CloseReason::RegisterTimeout => f.write_str("did not register in time"),
            CloseReason::IdleTimeout => f.write_str("idle for too long"),
            CloseReason::Overloaded => f.write_str("over the connection limit"),
            CloseReason::ClientAsked => f.write_str("closed as the client asked"),
            CloseReason::Shutdown => f.write_str("server shutting down"),
            CloseReason::CourseRefused => {
                f.write_str("dropped unanswered (the course format has no error answers)")
            }
            CloseReason::RelayEnded => f.write_str("its relay ended"),
        }
    }
}

/// Why an introduction fell through before the waiter's chat started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallThrough {
    /// The asker's server connection ended.
    AskerLeft,
    /// The asker sent UNREGISTER.
    AskerUnregistered,
    /// The asker sent REGISTER again.
    AskerRegistered,
    /// The asker sent BRIDGE again.
    AskerBridged,
    /// No STARTED from the waiter within `match_timeout`.
    Timeout { secs: u64 },
}

/// `FallThrough` with the asker's name: the `Reason` line of UNMATCHED and of the log.
#[derive(Debug, Clone, Copy)]
pub struct FallThroughReason<'a> {
    pub asker: &'a Name,
    pub why: FallThrough,
}

impl fmt::Display for FallThroughReason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let asker = self.asker;
        match self.why {
            FallThrough::AskerLeft => write!(f, "{asker} left the server"),
            FallThrough::AskerUnregistered => write!(f, "{asker} unregistered"),
            FallThrough::AskerRegistered => write!(f, "{asker} registered again"),
            FallThrough::AskerBridged => write!(f, "{asker} asked for another peer"),
            FallThrough::Timeout { secs } => {
                write!(f, "{asker} did not start the chat within {secs} s")
            }
        }
    }
}

/// Why a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEnd {
    /// This side closed its connection (or it broke); the other was closed after
    /// what was already queued for it.
    Closed(ConnId),
    /// Carrying the next bytes would have passed `relay_budget` (both ways together).
    BudgetSpent { budget: u64 },
    /// More than `relay_rate` bytes per second, averaged over a 10 s window.
    RateExceeded { rate: u64 },
    /// Nothing relayed either way for `relay_idle`.
    Idle { secs: u64 },
    /// The second peer did not come within `relay_join_timeout` (the first got 504).
    PeerDidNotCome { secs: u64 },
    /// The first peer sent more than the server holds before its peer came (413).
    HeldTooMuch,
    /// The server is shutting down.
    Shutdown,
}

impl fmt::Display for RelayEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RelayEnd::Closed(conn) => write!(f, "{conn} closed its connection"),
            RelayEnd::BudgetSpent { budget } => write!(f, "byte budget of {budget} spent"),
            RelayEnd::RateExceeded { rate } => {
                write!(f, "over {rate} bytes/s averaged over 10 s")
            }
            RelayEnd::Idle { secs } => write!(f, "nothing relayed for {secs} s"),
            RelayEnd::PeerDidNotCome { secs } => {
                write!(f, "the peer did not come within {secs} s")
            }
            RelayEnd::HeldTooMuch => f.write_str("too many bytes before the peer came"),
            RelayEnd::Shutdown => f.write_str("server shutting down"),
        }
    }
}

/// Notable things, for the log and for metrics. No event carries a ticket's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// The listener is bound at this address.
    Listening(SocketAddr),
    Accepted {
        conn: ConnId,
        peer: SocketAddr,
    },
    Registered {
        conn: ConnId,
        contact: Contact,
        version: Version,
        /// The connection's address as the server sees it.
        observed: SocketAddr,
    },
    Unregistered {
        conn: ConnId,
        name: Name,
    },
    /// `name` asked for a peer, found none, and now waits: for anyone (`peer: None`,
    /// the one anyone-slot) or for `peer` only.
    Waiting {
        conn: ConnId,
        name: Name,
        peer: Option<Name>,
    },
    /// `asker` was handed `waiter`'s contact; `waiter` no longer waits.
    /// `ticket`: both speak version 2 and were given a ticket (never logged).
    Paired {
        asker: Name,
        waiter: Name,
        ticket: bool,
    },
    /// The v2 waiter reported that its chat with `asker` started: the match is complete.
    Started {
        waiter: Name,
        asker: Name,
    },
    /// The introduction of `waiter` to `asker` fell through. `requeued`: `waiter` (v2)
    /// is back at the front of its waiting place and was sent UNMATCHED; a v1 waiter is
    /// never put back (it was handed out once), the asker's strike still counts.
    FellThrough {
        asker: Name,
        waiter: Name,
        why: FallThrough,
        requeued: bool,
    },
    /// `conn` came to the relay first with a live ticket: it is held, unanswered,
    /// and the match's waiter was sent RELAY.
    RelayJoined {
        conn: ConnId,
    },
    /// The second peer came: both were answered `200` and are spliced from now on.
    RelayStarted {
        first: ConnId,
        second: ConnId,
    },
    /// A relay ended and its connections were closed. `duration` runs from the first
    /// peer's arrival; bytes count what each side sent through it.
    RelayEnded {
        first: ConnId,
        second: Option<ConnId>,
        why: RelayEnd,
        first_to_second: u64,
        second_to_first: u64,
        duration: Duration,
    },
    Rejected {
        conn: ConnId,
        rejection: Rejection,
    },
    Closed {
        conn: ConnId,
        reason: CloseReason,
    },
    /// With `trace` on: bytes that went over `conn`.
    Trace {
        conn: ConnId,
        direction: Direction,
        bytes: Vec<u8>,
    },
}

/// Counters a transport or a test can read at any time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServerStats {
    pub connections: usize,
    pub peak_connections: usize,
    pub registered: usize,
    /// Someone waits for anyone (the v1 waiting place).
    pub waiting: bool,
    /// Clients waiting for a named peer (version 2).
    pub waiting_for_someone: usize,
    /// Introductions handed to a v2 waiter whose chat has not started yet.
    pub pending_matches: usize,
    /// Relays holding a slot: waiting for their second peer or spliced.
    pub relays: usize,
}
