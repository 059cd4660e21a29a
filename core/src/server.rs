//! The rendezvous server as a sans-IO state machine.
//!
//! [`Server`] owns every connection's state, the registry of names and the
//! waiting place. Drive it through [`Endpoint`] (see the crate docs).
//!
//! Introductions that fall through: v1 tells the server nothing about a chat, so
//! when the asker who was handed a waiter sends UNREGISTER, REGISTER or BRIDGE, or
//! its connection ends, within `introduction_deadline` of the introduction, the
//! waiter (whose client still believes it is waiting) goes back to the front of
//! the waiting place. An asker with `fallthrough_limit` such fall-throughs within
//! `fallthrough_window` (counted per connection and per source IP) gets `429` with
//! `Retry-After` on BRIDGE until the window ends. At most one client waits unless
//! a fall-through puts a waiter back in front of a newer one.
//!
//! Costs stay flat as clients pile up: every request does a constant number
//! of hash-map operations (by connection id and by name); timers live in a
//! binary heap with at most two live entries per connection. Entries of
//! connections that closed are dropped lazily: once they outnumber the live
//! ones the heap is rebuilt, so the heap stays within a constant factor of
//! the connections served and the rebuild costs O(1) amortised per close.
//!
//! Empty lines (CR, LF) between requests are skipped by the decoder, as RFC 9112
//! §2.2 asks; they do not start a head, so they cannot trigger the head timeout.
//!
//! DoS bounds, each configurable in [`ServerConfig`]: framing limits per
//! connection ([`Limits`]), a request head must finish within `head_timeout`
//! of its first byte, a connection must register within `register_timeout`,
//! a connection that sends nothing for `idle_timeout` is closed,
//! and `max_connections` / `max_per_ip` cap how many connections are served.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

use rustc_hash::FxHashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::codec::{
    self, AfterError, DecodeError, Decoder, HeaderError, Limits, Method, Request, Status,
};
use crate::contact::{self, Contact, Name, NameKey, UnusableIp};
use crate::operator::{self, PageRequest, Pages, ServerMetrics};
use crate::outputs::OutputQueue;
use crate::{ConnId, Direction, Endpoint, ExitError, IoFailure, Output};

/// How the server is set up; `Default` gives the contract's values.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen: `127.0.0.1:7070` by default.
    pub listen: SocketAddr,
    /// Framing limits per connection: 8 KiB head, 32 headers, 64 KiB body.
    pub limits: Limits,
    /// A request head must complete within this time of its first byte (else 408): 10 s.
    pub head_timeout: Duration,
    /// A connection must register within this time of opening (else closed): 30 s.
    pub register_timeout: Duration,
    /// A connection that sends nothing for this long is closed, registered or not: 1 h.
    /// Long enough for a person waiting for a peer; short enough that abandoned
    /// connections do not hold `max_connections` slots forever.
    pub idle_timeout: Duration,
    /// Connections served at once; past it a new one gets 503 and is closed.
    pub max_connections: usize,
    /// Connections served at once from one IP address; past it 503 and close.
    pub max_per_ip: usize,
    /// Seconds suggested in `Retry-After` on a 503.
    pub retry_after_secs: u32,
    /// Emit `ServerEvent::Trace` for every chunk received and every answer sent.
    pub trace: bool,
    /// REGISTER only the address the connection comes from, or a private address
    /// when it comes from a private one (403 otherwise). Off by default: behind a
    /// NAT or a proxy a client may rightly register an address the server never sees.
    pub strict_ip: bool,
    /// An introduction falls through when its asker unregisters, registers again,
    /// bridges again or leaves within this time of it: 10 s. Zero turns this off.
    pub introduction_deadline: Duration,
    /// Fall-throughs within `fallthrough_window`, from one connection or one IP, after
    /// which BRIDGE gets 429 until the window ends: 3. Zero means never refuse.
    pub fallthrough_limit: u32,
    /// The window in which fall-throughs are counted, from the first one: 60 s.
    pub fallthrough_window: Duration,
    /// Answer `GET /metrics` on this port (false when metrics are served elsewhere: 404).
    pub serve_metrics: bool,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7070),
            limits: Limits::default(),
            head_timeout: Duration::from_secs(10),
            register_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60 * 60),
            max_connections: 100_000,
            max_per_ip: 100_000,
            retry_after_secs: 1,
            trace: false,
            strict_ip: false,
            introduction_deadline: Duration::from_secs(10),
            fallthrough_limit: 3,
            fallthrough_window: Duration::from_secs(60),
            serve_metrics: true,
        }
    }
}

/// Inputs from outside the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerInput {
    /// Stop: close every connection after what is already answered, then exit.
    Shutdown,
}

/// Why a request or connection was refused; the text is also the response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The bytes could not be framed as a message (400, 413, 431, 501); closes.
    Framing(DecodeError),
    /// The head did not complete within `head_timeout` (408); closes.
    HeadTimeout,
    /// A missing, duplicate or malformed `Name`/`IP`/`Port` (400).
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
    /// BRIDGE from a connection or IP whose introductions fell through too often (429).
    TooManyFallthroughs { retry_after: u32 },
    /// A peer request (CHAT, MESSAGE, QUIT) sent to the server (501).
    PeerRequest(Method),
    /// A method the protocol does not have (501).
    UnknownMethod,
    /// `max_connections` reached (503); closes.
    TooManyConnections,
    /// `max_per_ip` reached for this address (503); closes.
    TooManyFromAddress,
}

impl Rejection {
    pub fn status(&self) -> Status {
        match self {
            Rejection::Framing(e) => e.status,
            Rejection::HeadTimeout => Status::REQUEST_TIMEOUT,
            Rejection::BadHeader(_) | Rejection::UnusableIp(..) => Status::BAD_REQUEST,
            Rejection::IpNotObserved { .. } => Status::FORBIDDEN,
            Rejection::TooManyFallthroughs { .. } => Status::TOO_MANY_REQUESTS,
            Rejection::NameTaken(_) => Status::CONFLICT,
            Rejection::NotRegistered | Rejection::NameMismatch => Status::FORBIDDEN,
            Rejection::PeerRequest(_) | Rejection::UnknownMethod => Status::NOT_IMPLEMENTED,
            Rejection::TooManyConnections | Rejection::TooManyFromAddress => {
                Status::SERVICE_UNAVAILABLE
            }
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
            Rejection::PeerRequest(m) => {
                write!(f, "{} is a peer request, not a server request", m.as_str())
            }
            Rejection::TooManyFallthroughs { retry_after } => write!(
                f,
                "too many peers handed to you went unused; try again in {retry_after}s"
            ),
            Rejection::UnknownMethod => f.write_str("unknown method"),
            Rejection::TooManyConnections => f.write_str("server is full, try again later"),
            Rejection::TooManyFromAddress => f.write_str("too many connections from your address"),
        }
    }
}

/// Why the server stopped serving a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed it (or it broke).
    PeerClosed,
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
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("closed by the client"),
            CloseReason::Rejected(status) => write!(f, "closed after {status}"),
            CloseReason::RegisterTimeout => f.write_str("did not register in time"),
            CloseReason::IdleTimeout => f.write_str("idle for too long"),
            CloseReason::Overloaded => f.write_str("over the connection limit"),
            CloseReason::ClientAsked => f.write_str("closed as the client asked"),
            CloseReason::Shutdown => f.write_str("server shutting down"),
        }
    }
}

/// Notable things, for the log and for metrics.
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
    },
    Unregistered {
        conn: ConnId,
        name: Name,
    },
    /// `name` asked for a peer, found none, and is now the waiting client.
    Waiting {
        conn: ConnId,
        name: Name,
    },
    /// `asker` was handed `waiter`'s contact; `waiter` no longer waits.
    Paired {
        asker: Name,
        waiter: Name,
    },
    /// The asker on `asker` dropped its introduction to `waiter` within the deadline:
    /// `waiter` is back at the front of the waiting place.
    Requeued {
        asker: ConnId,
        waiter: Name,
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
    pub waiting: bool,
}

#[derive(Debug)]
struct Conn {
    peer: SocketAddr,
    decoder: Decoder,
    registration: Option<Contact>,
    ever_registered: bool,
    /// When the unfinished head in `decoder` began, if one has.
    head_started: Option<Instant>,
    /// Whether a head timer for this connection sits in the heap.
    head_timer_queued: bool,
    /// When bytes last arrived (or the connection opened); its one idle timer
    /// re-arms from here instead of being pushed on every read.
    last_activity: Instant,
    /// The waiter this connection was last handed, until the introduction's deadline.
    introduced: Option<Introduction>,
    /// BRIDGE requests from this connection so far: a waiter that asked again after
    /// being handed out has moved on, and is not put back in line for it.
    bridges: u64,
    /// This connection's introductions that fell through.
    fallthroughs: Strikes,
    /// When the first byte of the unfinished request in `decoder` arrived, for its latency.
    request_started: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Introduction {
    waiter: ConnId,
    deadline: Instant,
    /// The waiter's `bridges` when it was handed out.
    waiter_bridges: u64,
}

/// Fall-throughs counted in a fixed window that opens at the first one.
#[derive(Debug, Clone, Copy, Default)]
struct Strikes {
    since: Option<Instant>,
    count: u32,
}

impl Strikes {
    fn add(&mut self, now: Instant, window: Duration) {
        if !matches!(self.window_end(window), Some(end) if end > now) {
            *self = Strikes {
                since: Some(now),
                count: 0,
            };
        }
        self.count += 1;
    }

    fn window_end(&self, window: Duration) -> Option<Instant> {
        self.since.and_then(|since| since.checked_add(window))
    }

    /// How long BRIDGE stays refused, if it is.
    fn refused_for(&self, now: Instant, window: Duration, limit: u32) -> Option<Duration> {
        if limit == 0 || self.count < limit {
            return None;
        }
        match self.window_end(window) {
            None => self.since.map(|_| Duration::MAX), // a window too long for the clock
            Some(end) if end > now => Some(end - now),
            Some(_) => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    Head,
    Register,
    Idle,
}

/// The rendezvous server. See the crate docs for how to drive it.
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    next_id: u64,
    /// Keyed by ids the server hands out itself, so a fast non-keyed hash is safe here;
    /// `names` and `per_ip` hold peer-chosen keys and keep std's DoS-resistant SipHash.
    conns: FxHashMap<ConnId, Conn>,
    /// Registered names, folded to lower case: unique without regard to case.
    names: HashMap<NameKey, ConnId>,
    per_ip: HashMap<IpAddr, usize>,
    /// Fall-throughs per source IP, so reconnecting does not reset the count.
    fallthroughs_by_ip: HashMap<IpAddr, Strikes>,
    /// Clients waiting for a peer, first handed out first; each registered, live, once.
    waiting: VecDeque<ConnId>,
    timers: BinaryHeap<Reverse<(Instant, ConnId, TimerKind)>>,
    peak_connections: usize,
    shut_down: bool,
    /// The status of the last answer written, for the request metrics.
    answered: Status,
    outputs: OutputQueue<ServerEvent, ServerMetrics>,
}

impl Server {
    /// A server that will ask its transport to listen on `config.listen`.
    pub fn new(config: ServerConfig) -> Server {
        let mut outputs = OutputQueue::default();
        outputs.listen(config.listen);
        Server {
            config,
            next_id: 0,
            conns: FxHashMap::default(),
            names: HashMap::new(),
            per_ip: HashMap::new(),
            fallthroughs_by_ip: HashMap::new(),
            waiting: VecDeque::new(),
            timers: BinaryHeap::new(),
            peak_connections: 0,
            shut_down: false,
            answered: Status::OK,
            outputs,
        }
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    pub fn stats(&self) -> ServerStats {
        ServerStats {
            connections: self.conns.len(),
            peak_connections: self.peak_connections,
            registered: self.names.len(),
            waiting: !self.waiting.is_empty(),
        }
    }

    /// The operator pages and metrics, to serve them from another thread too.
    pub fn pages(&self) -> Pages {
        self.outputs.observer().pages().clone()
    }

    /// The contact registered on `conn`, if any.
    pub fn registration(&self, conn: ConnId) -> Option<Contact> {
        self.conns.get(&conn).and_then(|c| c.registration)
    }

    /// The client the next BRIDGE will be handed, if any.
    pub fn waiting(&self) -> Option<Contact> {
        self.waiting.front().and_then(|&w| self.registration(w))
    }

    /// Every client waiting for a peer, the next to be handed out first.
    pub fn waiting_clients(&self) -> Vec<Contact> {
        self.waiting
            .iter()
            .filter_map(|&w| self.registration(w))
            .collect()
    }

    fn handle_request(&mut self, now: Instant, conn: ConnId, request: Request) {
        match request {
            Request::Page(page) => self.serve_page(now, conn, page),
            Request::Register(contact) => self.register(now, conn, contact),
            Request::Bridge { name } => self.bridge(now, conn, name),
            Request::Unregister => {
                self.fall_through(now, conn, true);
                self.unregister(conn);
                self.answer_ok(conn, None);
            }
            Request::Invalid { error, .. } => self.reject(conn, Rejection::BadHeader(error)),
            Request::Chat(_) => self.reject(conn, Rejection::PeerRequest(Method::Chat)),
            Request::Message(_) => self.reject(conn, Rejection::PeerRequest(Method::Message)),
            Request::Quit => self.reject(conn, Rejection::PeerRequest(Method::Quit)),
            Request::Unknown => self.reject(conn, Rejection::UnknownMethod),
        }
    }

    fn register(&mut self, now: Instant, conn: ConnId, contact: Contact) {
        if let Some(why) = contact::unusable_ip(contact.ip) {
            return self.reject(conn, Rejection::UnusableIp(contact.ip, why));
        }
        if self.config.strict_ip {
            let Some(c) = self.conns.get(&conn) else {
                return;
            };
            let observed = c.peer.ip().to_canonical();
            let claimed = contact.ip.to_canonical();
            let allowed = claimed == observed
                || (contact::is_private_ip(observed) && contact::is_private_ip(claimed));
            if !allowed {
                return self.reject(conn, Rejection::IpNotObserved { claimed, observed });
            }
        }
        let key = contact.name.key();
        match self.names.get(&key) {
            Some(&owner) if owner != conn => {
                return self.reject(conn, Rejection::NameTaken(contact.name));
            }
            _ => {}
        }
        self.fall_through(now, conn, true);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let previous = c.registration.replace(contact);
        c.ever_registered = true;
        if let Some(previous) = previous {
            if previous.name.key() != key {
                self.names.remove(&previous.name.key());
            }
        }
        self.names.insert(key, conn);
        self.answer_ok(conn, Some(contact));
        self.outputs
            .event(ServerEvent::Registered { conn, contact });
    }

    fn bridge(&mut self, now: Instant, conn: ConnId, claimed: Option<Name>) {
        let Some(me) = self.registration(conn) else {
            return self.reject(conn, Rejection::NotRegistered);
        };
        if claimed.is_some_and(|name| !name.same_as(&me.name)) {
            return self.reject(conn, Rejection::NameMismatch);
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.bridges += 1;
        }
        self.fall_through(now, conn, true);
        if let Some(wait) = self.refused_for(now, conn) {
            // Whole seconds, rounded up, so a client that obeys is not refused again.
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let retry_after = u32::try_from(secs).unwrap_or(u32::MAX);
            return self.reject(conn, Rejection::TooManyFallthroughs { retry_after });
        }
        if self.waiting.front() == Some(&conn) {
            // Never handed itself: it keeps waiting.
            return self.answer_ok(conn, None);
        }
        // A waiter behind a re-queued one is paired with it rather than left waiting.
        self.waiting.retain(|&w| w != conn);
        let Some(waiter) = self.waiting.pop_front() else {
            self.waiting.push_back(conn);
            self.answer_ok(conn, None);
            return self.outputs.event(ServerEvent::Waiting {
                conn,
                name: me.name,
            });
        };
        // The waiting place only ever holds registered, live connections.
        let Some(peer) = self.registration(waiter) else {
            debug_assert!(false, "the waiting place held an unregistered connection");
            self.waiting.push_back(conn);
            return self.answer_ok(conn, None);
        };
        let deadline = now.checked_add(self.config.introduction_deadline);
        let waiter_bridges = self.conns.get(&waiter).map_or(0, |w| w.bridges);
        if let (Some(c), Some(deadline)) = (self.conns.get_mut(&conn), deadline) {
            c.introduced = (deadline > now).then_some(Introduction {
                waiter,
                deadline,
                waiter_bridges,
            });
        }
        self.answer_ok(conn, Some(peer));
        self.outputs.event(ServerEvent::Paired {
            asker: me.name,
            waiter: peer.name,
        });
    }

    /// If `conn` was handed a waiter within the deadline, that introduction fell
    /// through: the waiter goes back to the front and the asker gets a strike.
    /// `by_request`: the asker said so with a request (UNREGISTER, REGISTER, BRIDGE),
    /// which also counts against its address; a connection that just ends does not,
    /// since every client ends so when its person quits, and many share one address.
    fn fall_through(&mut self, now: Instant, conn: ConnId, by_request: bool) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(intro) = c.introduced.take() else {
            return;
        };
        let ip = c.peer.ip();
        let waiter = intro.waiter;
        if intro.deadline <= now || self.waiting.contains(&waiter) {
            return; // too late to tell, or the waiter is in line already
        }
        let Some(w) = self.conns.get(&waiter) else {
            return; // the waiter left: nobody is stranded
        };
        let moved_on = w.bridges != intro.waiter_bridges;
        let Some(contact) = w.registration.filter(|_| !moved_on) else {
            return; // unregistered since, or it asked again itself and moved on
        };
        let name = contact.name;
        self.waiting.push_front(waiter);
        let window = self.config.fallthrough_window;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.fallthroughs.add(now, window);
        }
        if by_request {
            self.fallthroughs_by_ip
                .entry(ip)
                .or_default()
                .add(now, window);
        }
        self.outputs.event(ServerEvent::Requeued {
            asker: conn,
            waiter: name,
        });
    }

    /// How long BRIDGE from `conn` stays refused for fall-throughs, if it is.
    fn refused_for(&mut self, now: Instant, conn: ConnId) -> Option<Duration> {
        let (window, limit) = (
            self.config.fallthrough_window,
            self.config.fallthrough_limit,
        );
        let c = self.conns.get(&conn)?;
        let ip = c.peer.ip();
        let by_conn = c.fallthroughs.refused_for(now, window, limit);
        let by_ip = self
            .fallthroughs_by_ip
            .get(&ip)
            .and_then(|strikes| strikes.refused_for(now, window, limit));
        by_conn.max(by_ip)
    }

    /// Forgets `conn`'s registration and stops it waiting.
    fn unregister(&mut self, conn: ConnId) {
        self.waiting.retain(|&w| w != conn);
        let Some(contact) = self
            .conns
            .get_mut(&conn)
            .and_then(|c| c.registration.take())
        else {
            return;
        };
        let key = contact.name.key();
        if self.names.get(&key) == Some(&conn) {
            self.names.remove(&key);
        }
        self.outputs.event(ServerEvent::Unregistered {
            conn,
            name: contact.name,
        });
    }

    /// Answers `GET`/`HEAD`; closes after it if the client asked.
    fn serve_page(&mut self, now: Instant, conn: ConnId, page: PageRequest) {
        self.outputs
            .observer()
            .sync(self.names.len(), !self.waiting.is_empty());
        let pages = self.pages();
        let serve_metrics = self.config.serve_metrics;
        let mut status = Status::OK;
        self.send(conn, |out| {
            status = pages.answer(now, &page, serve_metrics, out);
        });
        self.answered = status;
        if page.close {
            self.close(now, conn, CloseReason::ClientAsked);
        }
    }

    fn answer_ok(&mut self, conn: ConnId, contact: Option<Contact>) {
        self.answered = Status::OK;
        self.send(conn, |out| codec::write_ok(out, contact.as_ref()));
    }

    /// Answers with the rejection's status; the connection stays open.
    fn reject(&mut self, conn: ConnId, rejection: Rejection) {
        self.answered = rejection.status();
        let after = match rejection {
            Rejection::TooManyFallthroughs { retry_after } => {
                AfterError::KeepOpenRetryAfter(retry_after)
            }
            _ => AfterError::KeepOpen,
        };
        self.send(conn, |out| {
            codec::write_error(out, rejection.status(), &rejection, after)
        });
        self.outputs
            .event(ServerEvent::Rejected { conn, rejection });
    }

    /// Answers with the rejection's status, then closes the connection.
    fn reject_and_close(
        &mut self,
        now: Instant,
        conn: ConnId,
        rejection: Rejection,
        reason: CloseReason,
    ) {
        self.send(conn, |out| {
            codec::write_error(out, rejection.status(), &rejection, AfterError::Close)
        });
        self.outputs
            .event(ServerEvent::Rejected { conn, rejection });
        self.close(now, conn, reason);
    }

    fn send(&mut self, conn: ConnId, write: impl FnOnce(&mut Vec<u8>)) {
        let bytes = self.outputs.transmit(conn, write);
        if self.config.trace {
            let bytes = bytes.to_vec();
            self.outputs.event(ServerEvent::Trace {
                conn,
                direction: Direction::Sent,
                bytes,
            });
        }
    }

    /// Forgets `conn` and tells the transport to close it.
    fn close(&mut self, now: Instant, conn: ConnId, reason: CloseReason) {
        if self.forget(now, conn, reason) {
            self.outputs.close(conn);
        }
    }

    /// Drops every trace of `conn`; false if it was already gone.
    fn forget(&mut self, now: Instant, conn: ConnId, reason: CloseReason) -> bool {
        self.fall_through(now, conn, false);
        self.unregister(conn);
        let Some(c) = self.conns.remove(&conn) else {
            return false;
        };
        let ip = c.peer.ip();
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
        self.outputs.event(ServerEvent::Closed { conn, reason });
        self.compact_timers();
        self.prune_fallthroughs(now);
        true
    }

    /// Drops per-IP counts whose window is over, once they outnumber live connections.
    fn prune_fallthroughs(&mut self, now: Instant) {
        if self.fallthroughs_by_ip.len() <= 2 * self.conns.len() + 128 {
            return;
        }
        let window = self.config.fallthrough_window;
        self.fallthroughs_by_ip
            .retain(|_, strikes| !matches!(strikes.window_end(window), Some(end) if end <= now));
    }

    /// Queues a timer; a deadline past what `Instant` can hold means "never".
    /// Callers record the timer in `Conn` before calling `compact_timers`, which keeps
    /// only the timers `Conn` says are queued.
    fn push_timer(&mut self, deadline: Option<Instant>, conn: ConnId, kind: TimerKind) -> bool {
        let Some(deadline) = deadline else {
            return false;
        };
        self.timers.push(Reverse((deadline, conn, kind)));
        true
    }

    /// Drops heap entries that can no longer fire for anyone, once they outnumber live ones.
    fn compact_timers(&mut self) {
        // Live entries are at most 3 per connection; rebuilding only past 4 per connection
        // keeps the rebuild's O(heap) cost amortised over at least as many pushes and closes.
        if self.timers.len() <= 4 * self.conns.len() + 128 {
            return;
        }
        let conns = &self.conns;
        self.timers
            .retain(|Reverse((_, conn, kind))| match (conns.get(conn), kind) {
                (None, _) => false,
                (Some(c), TimerKind::Register) => !c.ever_registered,
                (Some(c), TimerKind::Head) => c.head_timer_queued,
                (Some(_), TimerKind::Idle) => true,
            });
    }

    fn expire(&mut self, now: Instant, conn: ConnId, kind: TimerKind) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return; // closed since the timer was set
        };
        match kind {
            TimerKind::Register => {
                if !c.ever_registered {
                    self.close(now, conn, CloseReason::RegisterTimeout);
                }
            }
            TimerKind::Idle => {
                let deadline = c.last_activity.checked_add(self.config.idle_timeout);
                if deadline.is_some_and(|deadline| deadline <= now) {
                    self.close(now, conn, CloseReason::IdleTimeout);
                } else {
                    self.push_timer(deadline, conn, TimerKind::Idle);
                    self.compact_timers();
                }
            }
            TimerKind::Head => {
                c.head_timer_queued = false;
                let Some(started) = c.head_started else {
                    return;
                };
                let deadline = started.checked_add(self.config.head_timeout);
                if deadline.is_some_and(|deadline| deadline <= now) {
                    self.reject_and_close(
                        now,
                        conn,
                        Rejection::HeadTimeout,
                        CloseReason::Rejected(Status::REQUEST_TIMEOUT),
                    );
                } else {
                    // A newer head started after this timer was set: wait for its own deadline.
                    let queued = self.push_timer(deadline, conn, TimerKind::Head);
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.head_timer_queued = queued;
                    }
                    self.compact_timers();
                }
            }
        }
    }
}

impl Endpoint for Server {
    type Input = ServerInput;
    type Event = ServerEvent;

    fn handle_listening(&mut self, now: Instant, addr: SocketAddr) {
        self.outputs.observer().started(now);
        self.outputs.event(ServerEvent::Listening(addr));
    }

    fn handle_listen_failed(&mut self, _now: Instant, addr: SocketAddr, error: &io::Error) {
        self.shut_down = true;
        let error = IoFailure::from(error);
        self.outputs.exit(Err(ExitError::Listen { addr, error }));
    }

    fn handle_accept(&mut self, now: Instant, peer: SocketAddr) -> ConnId {
        self.next_id += 1;
        let conn = ConnId(self.next_id);
        self.outputs.event(ServerEvent::Accepted { conn, peer });
        let from_ip = self.per_ip.get(&peer.ip()).copied().unwrap_or(0);
        let over = if self.shut_down || self.conns.len() >= self.config.max_connections {
            Some(Rejection::TooManyConnections)
        } else if from_ip >= self.config.max_per_ip {
            Some(Rejection::TooManyFromAddress)
        } else {
            None
        };
        if let Some(rejection) = over {
            // Never stored: answer and close at once.
            let retry_after = self.config.retry_after_secs;
            self.send(conn, |out| {
                codec::write_error(
                    out,
                    rejection.status(),
                    &rejection,
                    AfterError::CloseRetryAfter(retry_after),
                )
            });
            self.outputs
                .event(ServerEvent::Rejected { conn, rejection });
            self.outputs.event(ServerEvent::Closed {
                conn,
                reason: CloseReason::Overloaded,
            });
            self.outputs.close(conn);
            return conn;
        }
        self.conns.insert(
            conn,
            Conn {
                peer,
                decoder: Decoder::new(self.config.limits),
                registration: None,
                ever_registered: false,
                head_started: None,
                head_timer_queued: false,
                last_activity: now,
                introduced: None,
                bridges: 0,
                fallthroughs: Strikes::default(),
                request_started: None,
            },
        );
        *self.per_ip.entry(peer.ip()).or_insert(0) += 1;
        self.peak_connections = self.peak_connections.max(self.conns.len());
        let deadline = now.checked_add(self.config.register_timeout);
        self.push_timer(deadline, conn, TimerKind::Register);
        let deadline = now.checked_add(self.config.idle_timeout);
        self.push_timer(deadline, conn, TimerKind::Idle);
        self.compact_timers();
        conn
    }

    fn handle_connected(&mut self, _now: Instant, _conn: ConnId, _local: SocketAddr) {
        // The server opens no connections.
    }

    fn handle_connect_failed(&mut self, _now: Instant, _conn: ConnId, _error: &io::Error) {}

    fn handle_data(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return; // already closed by us; the transport may still have had bytes
        };
        c.last_activity = now;
        if self.config.trace {
            self.outputs.event(ServerEvent::Trace {
                conn,
                direction: Direction::Received,
                bytes: bytes.to_vec(),
            });
        }
        let mut input = bytes;
        let mut completed_any = false;
        loop {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            match c.decoder.decode_request(&mut input) {
                Ok(Some(request)) => {
                    let started = match completed_any {
                        false => c.request_started.take().unwrap_or(now),
                        true => now,
                    };
                    completed_any = true;
                    let method = operator::method_label(&request);
                    self.handle_request(now, conn, request);
                    let latency = operator::elapsed(started, now);
                    let answered = self.answered;
                    self.outputs
                        .observer_mut()
                        .request(method, answered, latency);
                }
                Ok(None) => break,
                Err(error) => {
                    return self.reject_and_close(
                        now,
                        conn,
                        Rejection::Framing(error),
                        CloseReason::Rejected(error.status),
                    );
                }
            }
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.decoder.is_mid_head() {
            if completed_any || c.head_started.is_none() {
                c.head_started = Some(now);
            }
            if !c.head_timer_queued {
                let deadline = now.checked_add(self.config.head_timeout);
                let queued = self.push_timer(deadline, conn, TimerKind::Head);
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.head_timer_queued = queued;
                }
                self.compact_timers();
            }
        } else {
            c.head_started = None;
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.request_started = match c.decoder.is_mid_message() {
                true => c.request_started.or(Some(now)),
                false => None,
            };
        }
    }

    fn handle_closed(&mut self, now: Instant, conn: ConnId) {
        self.forget(now, conn, CloseReason::PeerClosed);
    }

    fn handle_input(&mut self, now: Instant, input: ServerInput) {
        match input {
            ServerInput::Shutdown => {
                if self.shut_down {
                    return;
                }
                self.shut_down = true;
                let mut open: Vec<ConnId> = self.conns.keys().copied().collect();
                open.sort_unstable();
                for conn in open {
                    self.close(now, conn, CloseReason::Shutdown);
                }
                self.timers.clear();
                self.outputs.exit(Ok(()));
            }
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        while let Some(&Reverse((deadline, conn, kind))) = self.timers.peek() {
            if deadline > now {
                break;
            }
            self.timers.pop();
            self.expire(now, conn, kind);
        }
    }

    fn poll_output(&mut self) -> Option<Output<'_, ServerEvent>> {
        // The gauges that mirror state catch up before any output of an input is
        // carried out, so an answer never reaches a client ahead of its numbers.
        self.outputs
            .observer()
            .sync(self.names.len(), !self.waiting.is_empty());
        self.outputs.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((deadline, ..))| *deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(server: &mut Server) {
        while server.poll_output().is_some() {}
    }

    fn peer(i: u32) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + i)), 50_000)
    }

    /// Sends `request` on `conn` and returns the bytes answered.
    fn answer(server: &mut Server, conn: ConnId, request: &str) -> String {
        server.handle_data(Instant::now(), conn, request.as_bytes());
        let mut sent = Vec::new();
        while let Some(output) = server.poll_output() {
            if let Output::Transmit { bytes, .. } = output {
                sent.extend_from_slice(bytes);
            }
        }
        String::from_utf8(sent).unwrap()
    }

    #[test]
    fn with_strict_ip_a_public_connection_registers_only_its_own_address() {
        let mut server = Server::new(ServerConfig {
            strict_ip: true,
            ..ServerConfig::default()
        });
        let from: SocketAddr = "203.0.113.7:40000".parse().unwrap();
        let conn = server.handle_accept(Instant::now(), from);
        drain(&mut server);
        let register =
            |ip: &str| format!("REGISTER / HTTP/1.1\r\nName: a\r\nIP: {ip}\r\nPort: 9\r\n\r\n");
        for other in ["203.0.113.8", "10.0.0.1", "127.0.0.1"] {
            let sent = answer(&mut server, conn, &register(other));
            assert!(sent.starts_with("HTTP/1.1 403 Forbidden"), "{sent}");
            assert!(
                sent.ends_with(&format!(
                    "IP {other} is not the address you connect from (203.0.113.7)"
                )),
                "{sent}"
            );
        }
        assert!(answer(&mut server, conn, &register("203.0.113.7")).starts_with("HTTP/1.1 200 OK"));
        // The same address written as IPv4-mapped IPv6 is the same address.
        let mapped = answer(&mut server, conn, &register("::ffff:203.0.113.7"));
        assert!(mapped.starts_with("HTTP/1.1 200 OK"), "{mapped}");
    }

    #[test]
    fn connections_that_come_and_go_leave_no_timers_or_address_counts_behind() {
        let mut server = Server::new(ServerConfig::default());
        let now = Instant::now();
        for i in 0..10_000 {
            let conn = server.handle_accept(now, peer(i));
            // A head in progress queues the second kind of timer too.
            server.handle_data(now, conn, b"BRID");
            server.handle_closed(now, conn);
            drain(&mut server);
        }
        assert!(
            server.timers.len() <= 128,
            "{} timers left for no connection",
            server.timers.len()
        );
        assert!(server.per_ip.is_empty());
        assert!(server.conns.is_empty());
    }

    /// Regression: the push that triggers a rebuild must not lose the timer it pushed.
    #[test]
    fn a_head_timer_whose_push_triggers_compaction_still_fires() {
        // Sweep the number of stale timers so that, for one of them, the head push
        // is the one that crosses the rebuild threshold.
        for stale in 100..300 {
            let mut server = Server::new(ServerConfig::default());
            let start = Instant::now();
            let live = server.handle_accept(start, peer(0));
            for i in 1..=stale {
                let conn = server.handle_accept(start, peer(i));
                server.handle_closed(start, conn);
            }
            server.handle_data(start, live, b"BRID");
            drain(&mut server);
            server.handle_timeout(start + server.config.head_timeout);
            let mut closed = false;
            while let Some(output) = server.poll_output() {
                closed |= output == Output::Close { conn: live };
            }
            assert!(closed, "no 408 with {stale} stale timers");
        }
    }

    #[test]
    fn compaction_keeps_the_timers_of_live_connections() {
        let config = ServerConfig::default();
        let (head, register) = (config.head_timeout, config.register_timeout);
        let mut server = Server::new(config);
        let start = Instant::now();
        let live = server.handle_accept(start, peer(0));
        server.handle_data(start, live, b"BRID");
        for i in 1..1_000 {
            let conn = server.handle_accept(start, peer(i));
            server.handle_closed(start, conn);
        }
        drain(&mut server);
        server.handle_timeout(start + head);
        let sent: Vec<_> = std::iter::from_fn(|| match server.poll_output() {
            Some(Output::Close { conn }) => Some(Some(conn)),
            Some(_) => Some(None),
            None => None,
        })
        .flatten()
        .collect();
        assert_eq!(sent, vec![live], "the head timer survived compaction");

        let idle = server.handle_accept(start, peer(0));
        for i in 1..1_000 {
            let conn = server.handle_accept(start, peer(i));
            server.handle_closed(start, conn);
        }
        drain(&mut server);
        server.handle_timeout(start + register);
        assert_eq!(server.stats().connections, 0, "{idle:?} was not closed");
    }
}
