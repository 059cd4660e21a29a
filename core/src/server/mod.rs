//! The rendezvous server as a sans-IO state machine.
//!
//! [`Server`] owns every connection's state, the registry of names and the
//! waiting places. Drive it through [`Endpoint`] (see the crate docs).
//! Each part owns its own transitions:
//! - `connections`: opening, reading, timers, closing;
//! - `matching`: REGISTER, BRIDGE, STARTED, the waiting places, introductions,
//!   tickets and fall-throughs (see there for the rules);
//! - `answers`: what is written back;
//! - `events`: refusals, close reasons and the events for the log;
//! - `relay`: RELAY, and the pairs of connections it splices.
//!
//! Version 2 is opt-in per connection: a REGISTER with `Bridgechat: 2` makes the
//! connection v2 (named waits, MATCHED/UNMATCHED notifications, tickets, observed
//! addresses). A connection that never sends it gets exactly version 1. A new
//! connection whose first request is RELAY opts in by asking: it joins the relay
//! of a live match (see `relay`) and stops being an HTTP connection.
//!
//! Costs stay flat as clients pile up: every request does a constant number
//! of hash-map operations (by connection id and by name); timers live in a
//! binary heap with at most four live entries per connection.
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
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::codec::{self, HeaderError, Limits, Method, Request, Status, Version};
use crate::contact::{Contact, Name, NameKey};
use crate::operator::{Pages, ServerMetrics};
use crate::outputs::OutputQueue;
use crate::{ConnId, Endpoint, ExitError, IoFailure, Output};

mod answers;
mod connections;
mod course;
mod events;
mod matching;
mod relay;
#[cfg(test)]
mod tests;

use connections::{Conn, TimerKind};
pub use events::{
    CloseReason, FallThrough, FallThroughReason, Rejection, RelayEnd, ServerEvent, ServerStats,
};
use matching::{Strikes, Tickets};
use relay::Relays;
pub use relay::RATE_WINDOW as RELAY_RATE_WINDOW;

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
    /// Emit `ServerEvent::Trace` for every chunk received and every answer sent
    /// (ticket values blanked).
    pub trace: bool,
    /// REGISTER only the address the connection comes from, or a private address
    /// when it comes from a private one (403 otherwise). Off by default: behind a
    /// NAT or a proxy a client may rightly register an address the server never sees.
    pub strict_ip: bool,
    /// A v2 waiter's match falls through when its STARTED has not come within this
    /// time of MATCHED: 10 s. Zero: never by time.
    pub match_timeout: Duration,
    /// A v1 waiter reports nothing: its asker dropping it (UNREGISTER, REGISTER,
    /// BRIDGE, leaving) within this time of the introduction counts as a fall-through
    /// for the asker's limit: 10 s. Zero turns this off.
    pub introduction_deadline: Duration,
    /// Fall-throughs within `fallthrough_window` from one connection after which its
    /// BRIDGE gets 429 until the window ends: 3. Zero means never refuse.
    pub fallthrough_limit: u32,
    /// The same, counted per source IP (fall-throughs by request only), so reconnecting
    /// does not reset the count: 30. Many people share one NAT address, so it sits well
    /// above the per-connection limit. Zero means never refuse.
    pub fallthrough_limit_per_ip: u32,
    /// The window in which fall-throughs are counted, from the first one: 60 s.
    pub fallthrough_window: Duration,
    /// Answer `GET /metrics` on this port (false when metrics are served elsewhere: 404).
    pub serve_metrics: bool,
    /// How long a course-format registration outlives the connection that made it
    /// (course clients close after every request), unless the same clientID
    /// registers again: 600 s.
    pub legacy_ttl: Duration,
    /// Splice pairs of connections that present a live match's ticket (RELAY): on.
    /// Off: RELAY gets 503.
    pub relay: bool,
    /// Relays at once, waiting for their second peer or spliced: 1000. Past it 503.
    pub max_relays: usize,
    /// Bytes one relay carries, both ways together, before it is ended: 16 MiB.
    /// Zero: no limit.
    pub relay_budget: u64,
    /// Bytes per second one relay carries, both ways together, averaged over
    /// `RELAY_RATE_WINDOW` (10 s): 64 KiB/s. Zero: no limit.
    pub relay_rate: u64,
    /// A relay that carries nothing either way for this long is ended: 600 s. Zero: never.
    pub relay_idle: Duration,
    /// How long the first peer at a relay is held for the second (then 504): 10 s.
    pub relay_join_timeout: Duration,
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
            match_timeout: Duration::from_secs(10),
            introduction_deadline: Duration::from_secs(10),
            fallthrough_limit: 3,
            fallthrough_limit_per_ip: 30,
            fallthrough_window: Duration::from_secs(60),
            serve_metrics: true,
            legacy_ttl: Duration::from_secs(600),
            relay: true,
            max_relays: 1000,
            relay_budget: 16 * 1024 * 1024,
            relay_rate: 64 * 1024,
            relay_idle: Duration::from_secs(600),
            relay_join_timeout: Duration::from_secs(10),
        }
    }
}

/// Inputs from outside the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerInput {
    /// Stop: close every connection after what is already answered, then exit.
    Shutdown,
}

/// The rendezvous server. See the crate docs for how to drive it.
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    next_id: u64,
    /// Keyed by ids the server hands out itself, so a fast non-keyed hash is safe here;
    /// `names`, `named` and `per_ip` hold peer-chosen keys and keep std's SipHash.
    conns: FxHashMap<ConnId, Conn>,
    /// Entries of `conns` that are course registrations held without a connection.
    course_held: usize,
    /// Registered names, folded to lower case: unique without regard to case.
    names: HashMap<NameKey, ConnId>,
    per_ip: HashMap<IpAddr, usize>,
    /// Fall-throughs per source IP, so reconnecting does not reset the count.
    fallthroughs_by_ip: HashMap<IpAddr, Strikes>,
    /// Clients waiting for anyone, first handed out first; each registered, live, once.
    anyone: VecDeque<ConnId>,
    /// Clients waiting for one name (the key), first handed out first.
    named: HashMap<NameKey, VecDeque<ConnId>>,
    named_count: usize,
    pending_count: usize,
    next_match: u64,
    tickets: Tickets,
    /// The ticket of every pending match, to its waiter.
    live_tickets: HashMap<codec::Ticket, ConnId>,
    relays: Relays,
    timers: BinaryHeap<Reverse<(Instant, ConnId, TimerKind)>>,
    peak_connections: usize,
    shut_down: bool,
    /// The status of the last answer written, for the request metrics.
    answered: Status,
    outputs: OutputQueue<ServerEvent, ServerMetrics>,
}

impl Server {
    /// A server that will ask its transport to listen on `config.listen`.
    /// `seed` seeds the tickets' random stream: the transport draws it from the OS
    /// (tests pass fixed values), since the core never asks the OS itself.
    pub fn new(config: ServerConfig, seed: [u8; 32]) -> Server {
        let mut outputs = OutputQueue::default();
        outputs.listen(config.listen, false);
        Server {
            config,
            next_id: 0,
            conns: FxHashMap::default(),
            course_held: 0,
            names: HashMap::new(),
            per_ip: HashMap::new(),
            fallthroughs_by_ip: HashMap::new(),
            anyone: VecDeque::new(),
            named: HashMap::new(),
            named_count: 0,
            pending_count: 0,
            next_match: 0,
            tickets: Tickets::new(seed),
            live_tickets: HashMap::new(),
            relays: Relays::default(),
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
            connections: self.conns.len() - self.course_held + self.relays.sockets(),
            peak_connections: self.peak_connections,
            registered: self.names.len(),
            waiting: !self.anyone.is_empty(),
            waiting_for_someone: self.named_count,
            pending_matches: self.pending_count,
            relays: self.relays.len(),
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

    /// The client the next plain BRIDGE will be handed, if any.
    pub fn waiting(&self) -> Option<Contact> {
        self.anyone.front().and_then(|&w| self.registration(w))
    }

    /// Every client waiting for anyone, the next to be handed out first.
    pub fn waiting_clients(&self) -> Vec<Contact> {
        self.anyone
            .iter()
            .filter_map(|&w| self.registration(w))
            .collect()
    }

    /// Every client waiting for `name` only, the next to be handed out first.
    pub fn waiting_for(&self, name: &Name) -> Vec<Contact> {
        self.named
            .get(&name.key())
            .into_iter()
            .flatten()
            .filter_map(|&w| self.registration(w))
            .collect()
    }

    fn handle_request(&mut self, now: Instant, conn: ConnId, request: Request) {
        let v2 = self
            .conns
            .get(&conn)
            .is_some_and(|c| c.version == Version::V2);
        match request {
            Request::Page(page) => self.serve_page(now, conn, page),
            Request::Register(contact, version) => self.register(now, conn, contact, version),
            Request::Bridge { name, peer } => self.bridge(now, conn, name, peer),
            Request::Unregister => {
                self.asker_moved_on(now, conn, FallThrough::AskerUnregistered);
                self.unregister(conn);
                self.answer_ok(conn, None);
            }
            Request::Started(ticket) if v2 => self.started(conn, ticket),
            Request::Matched(_) if v2 => {
                self.reject(conn, Rejection::Notification(Method::Matched))
            }
            Request::Unmatched(_) if v2 => {
                self.reject(conn, Rejection::Notification(Method::Unmatched))
            }
            // Version 1 knows none of these methods, whatever their headers.
            // Any connection that has not spoken yet may ask for a relay: asking opts in.
            Request::Relay(ticket) => self.relay(now, conn, ticket),
            Request::Started(_) | Request::Matched(_) | Request::Unmatched(_) => {
                self.reject(conn, Rejection::UnknownMethod)
            }
            Request::Invalid {
                method: Method::Started | Method::Matched | Method::Unmatched | Method::Relay,
                ..
            } if !v2 => self.reject(conn, Rejection::UnknownMethod),
            // A v1 server never reads `Ticket`: such a CHAT is a peer request to it.
            Request::Invalid {
                method: Method::Chat,
                error: HeaderError::Invalid(crate::codec::Header::Ticket, _),
            } if !v2 => self.reject(conn, Rejection::PeerRequest(Method::Chat)),
            Request::Invalid { error, .. } => self.reject(conn, Rejection::BadHeader(error)),
            Request::Chat(..) => self.reject(conn, Rejection::PeerRequest(Method::Chat)),
            Request::Message(_) => self.reject(conn, Rejection::PeerRequest(Method::Message)),
            Request::Quit | Request::QuitWith { .. } => {
                self.reject(conn, Rejection::PeerRequest(Method::Quit))
            }
            Request::Unknown => self.reject(conn, Rejection::UnknownMethod),
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
        self.accept(now, peer)
    }

    fn handle_connected(&mut self, _now: Instant, _conn: ConnId, _local: SocketAddr) {
        // The server opens no connections.
    }

    fn handle_connect_failed(&mut self, _now: Instant, _conn: ConnId, _error: &io::Error) {}

    fn handle_data(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        self.receive(now, conn, bytes);
    }

    fn handle_closed(&mut self, now: Instant, conn: ConnId) {
        if !self.relay_side_gone(now, conn, CloseReason::PeerClosed) {
            self.forget(now, conn, CloseReason::PeerClosed);
        }
    }

    fn handle_not_reading(&mut self, now: Instant, conn: ConnId) {
        if !self.relay_side_gone(now, conn, CloseReason::NotReading) {
            self.forget(now, conn, CloseReason::NotReading);
        }
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
                self.end_relays(now);
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
        self.expire_relays(now);
    }

    fn poll_output(&mut self) -> Option<Output<'_, ServerEvent>> {
        // The gauges that mirror state catch up before any output of an input is
        // carried out, so an answer never reaches a client ahead of its numbers.
        self.sync_gauges();
        self.outputs.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let http = self.timers.peek().map(|Reverse((deadline, ..))| *deadline);
        match (http, self.relays.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
