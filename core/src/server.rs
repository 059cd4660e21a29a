//! The rendezvous server as a sans-IO state machine.
//!
//! [`Server`] owns every connection's state, the registry of names and the
//! single waiting slot. Drive it through [`Endpoint`] (see the crate docs).
//!
//! Costs stay flat as clients pile up: every request does a constant number
//! of hash-map operations (by connection id and by name); timers live in a
//! binary heap with at most two live entries per connection. Entries of
//! connections that closed are dropped lazily: once they outnumber the live
//! ones the heap is rebuilt, so the heap stays within a constant factor of
//! the connections served and the rebuild costs O(1) amortised per close.
//!
//! Empty lines (CR, LF) between requests are skipped, as RFC 9112 §2.2 asks;
//! they do not start a head, so they cannot trigger the head timeout.
//!
//! DoS bounds, each configurable in [`ServerConfig`]: framing limits per
//! connection ([`Limits`]), a request head must finish within `head_timeout`
//! of its first byte, a connection must register within `register_timeout`,
//! a connection that sends nothing for `idle_timeout` is closed,
//! and `max_connections` / `max_per_ip` cap how many connections are served.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use rustc_hash::FxHashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::codec::{
    self, AfterError, DecodeError, Decoder, HeaderError, Limits, Method, Request, Status,
};
use crate::contact::{Contact, Name};
use crate::operator::{self, PageRequest, Pages, ServerMetrics};
use crate::outputs::OutputQueue;
use crate::{ConnId, Direction, Endpoint, Output};

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
    /// BRIDGE before REGISTER (403).
    NotRegistered,
    /// BRIDGE with a `Name` that is not this connection's (403).
    NameMismatch,
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
            Rejection::BadHeader(_) => Status::BAD_REQUEST,
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
            Rejection::NotRegistered => f.write_str("register first"),
            Rejection::NameMismatch => {
                f.write_str("Name does not match this connection's registration")
            }
            Rejection::PeerRequest(m) => {
                write!(f, "{} is a peer request, not a server request", m.as_str())
            }
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
    /// When the first byte of the unfinished request in `decoder` arrived, for its latency.
    request_started: Option<Instant>,
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
    names: HashMap<Name, ConnId>,
    per_ip: HashMap<IpAddr, usize>,
    /// The one client waiting for a peer; always registered and live.
    waiting: Option<ConnId>,
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
            waiting: None,
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
            waiting: self.waiting.is_some(),
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

    /// The client waiting for a peer, if any.
    pub fn waiting(&self) -> Option<Contact> {
        self.waiting.and_then(|w| self.registration(w))
    }

    fn handle_request(&mut self, now: Instant, conn: ConnId, request: Request) {
        match request {
            Request::Page(page) => self.serve_page(now, conn, page),
            Request::Register(contact) => self.register(conn, contact),
            Request::Bridge { name } => self.bridge(conn, name),
            Request::Unregister => {
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

    fn register(&mut self, conn: ConnId, contact: Contact) {
        match self.names.get(&contact.name) {
            Some(&owner) if owner != conn => {
                return self.reject(conn, Rejection::NameTaken(contact.name));
            }
            _ => {}
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let previous = c.registration.replace(contact);
        c.ever_registered = true;
        if let Some(previous) = previous {
            if previous.name != contact.name {
                self.names.remove(&previous.name);
            }
        }
        self.names.insert(contact.name, conn);
        self.answer_ok(conn, Some(contact));
        self.outputs
            .event(ServerEvent::Registered { conn, contact });
    }

    fn bridge(&mut self, conn: ConnId, claimed: Option<Name>) {
        let Some(me) = self.registration(conn) else {
            return self.reject(conn, Rejection::NotRegistered);
        };
        if claimed.is_some_and(|name| name != me.name) {
            return self.reject(conn, Rejection::NameMismatch);
        }
        match self.waiting {
            Some(waiter) if waiter != conn => {
                // The waiting slot only ever holds a registered, live connection.
                let Some(peer) = self.registration(waiter) else {
                    debug_assert!(false, "waiting slot held an unregistered connection");
                    self.waiting = Some(conn);
                    return self.answer_ok(conn, None);
                };
                self.waiting = None;
                self.answer_ok(conn, Some(peer));
                self.outputs.event(ServerEvent::Paired {
                    asker: me.name,
                    waiter: peer.name,
                });
            }
            Some(_) => self.answer_ok(conn, None),
            None => {
                self.waiting = Some(conn);
                self.answer_ok(conn, None);
                self.outputs.event(ServerEvent::Waiting {
                    conn,
                    name: me.name,
                });
            }
        }
    }

    /// Forgets `conn`'s registration and stops it waiting.
    fn unregister(&mut self, conn: ConnId) {
        if self.waiting == Some(conn) {
            self.waiting = None;
        }
        let Some(contact) = self
            .conns
            .get_mut(&conn)
            .and_then(|c| c.registration.take())
        else {
            return;
        };
        if self.names.get(&contact.name) == Some(&conn) {
            self.names.remove(&contact.name);
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
            .sync(self.names.len(), self.waiting.is_some());
        let pages = self.pages();
        let serve_metrics = self.config.serve_metrics;
        let mut status = Status::OK;
        self.send(conn, |out| {
            status = pages.answer(now, &page, serve_metrics, out);
        });
        self.answered = status;
        if page.close {
            self.close(conn, CloseReason::ClientAsked);
        }
    }

    fn answer_ok(&mut self, conn: ConnId, contact: Option<Contact>) {
        self.answered = Status::OK;
        self.send(conn, |out| codec::write_ok(out, contact.as_ref()));
    }

    /// Answers with the rejection's status; the connection stays open.
    fn reject(&mut self, conn: ConnId, rejection: Rejection) {
        self.answered = rejection.status();
        self.send(conn, |out| {
            codec::write_error(out, rejection.status(), &rejection, AfterError::KeepOpen)
        });
        self.outputs
            .event(ServerEvent::Rejected { conn, rejection });
    }

    /// Answers with the rejection's status, then closes the connection.
    fn reject_and_close(&mut self, conn: ConnId, rejection: Rejection, reason: CloseReason) {
        let after = match rejection {
            Rejection::TooManyConnections | Rejection::TooManyFromAddress => {
                AfterError::CloseRetryAfter(self.config.retry_after_secs)
            }
            _ => AfterError::Close,
        };
        self.send(conn, |out| {
            codec::write_error(out, rejection.status(), &rejection, after)
        });
        self.outputs
            .event(ServerEvent::Rejected { conn, rejection });
        self.close(conn, reason);
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
    fn close(&mut self, conn: ConnId, reason: CloseReason) {
        if self.forget(conn, reason) {
            self.outputs.close(conn);
        }
    }

    /// Drops every trace of `conn`; false if it was already gone.
    fn forget(&mut self, conn: ConnId, reason: CloseReason) -> bool {
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
        true
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
                    self.close(conn, CloseReason::RegisterTimeout);
                }
            }
            TimerKind::Idle => {
                let deadline = c.last_activity.checked_add(self.config.idle_timeout);
                if deadline.is_some_and(|deadline| deadline <= now) {
                    self.close(conn, CloseReason::IdleTimeout);
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

    fn handle_listen_failed(&mut self, _now: Instant, addr: SocketAddr, error: &str) {
        self.shut_down = true;
        self.outputs
            .exit(Err(format!("cannot listen on {addr}: {error}")));
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

    fn handle_connect_failed(&mut self, _now: Instant, _conn: ConnId, _error: &str) {}

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
            if !c.decoder.is_mid_message() {
                input = skip_empty_lines(input);
            }
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

    fn handle_closed(&mut self, _now: Instant, conn: ConnId) {
        self.forget(conn, CloseReason::PeerClosed);
    }

    fn handle_input(&mut self, _now: Instant, input: ServerInput) {
        match input {
            ServerInput::Shutdown => {
                if self.shut_down {
                    return;
                }
                self.shut_down = true;
                let mut open: Vec<ConnId> = self.conns.keys().copied().collect();
                open.sort_unstable();
                for conn in open {
                    self.close(conn, CloseReason::Shutdown);
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
            .sync(self.names.len(), self.waiting.is_some());
        self.outputs.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((deadline, ..))| *deadline)
    }
}

/// Drops the CR and LF bytes a client may send between requests (RFC 9112 §2.2).
fn skip_empty_lines(mut input: &[u8]) -> &[u8] {
    while let [b'\r' | b'\n', rest @ ..] = input {
        input = rest;
    }
    input
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
