//! Connections: their state, their timers, and how they open, read and close.
//!
//! Every timer lives in one binary heap with at most four live entries per
//! connection. Entries of connections that closed are dropped lazily: once they
//! outnumber the live ones the heap is rebuilt, so the heap stays within a constant
//! factor of the connections served and the rebuild costs O(1) amortised per close.

use std::cmp::Reverse;
use std::net::SocketAddr;
use std::time::Instant;

use crate::codec::{self, AfterError, Decoder, Status, Version};
use crate::contact::Contact;
use crate::operator;
use crate::ConnId;

use super::course::{Sniffed, Wire};
use super::events::{CloseReason, Rejection, ServerEvent};
use super::matching::{Introduced, Pending, Place, Strikes};
use super::Server;

#[derive(Debug)]
pub(super) struct Conn {
    pub(super) peer: SocketAddr,
    pub(super) decoder: Decoder,
    pub(super) registration: Option<Contact>,
    /// `V2` when its last REGISTER carried `Bridgechat: 2`.
    pub(super) version: Version,
    pub(super) ever_registered: bool,
    /// When the unfinished head in `decoder` began, if one has.
    pub(super) head_started: Option<Instant>,
    /// Whether a head timer for this connection sits in the heap.
    pub(super) head_timer_queued: bool,
    /// When bytes last arrived (or the connection opened); its one idle timer
    /// re-arms from here instead of being pushed on every read.
    pub(super) last_activity: Instant,
    /// Where it waits for a peer, if it does.
    pub(super) wait: Option<Place>,
    /// As an asker: the waiter it was last handed, until that introduction is settled.
    pub(super) introduced: Option<Introduced>,
    /// As a v2 waiter: the introduction waiting for its STARTED.
    pub(super) pending: Option<Pending>,
    /// BRIDGE requests from this connection so far.
    pub(super) bridges: u64,
    /// This connection's introductions that fell through.
    pub(super) fallthroughs: Strikes,
    /// When the first byte of the unfinished request in `decoder` arrived, for its latency.
    pub(super) request_started: Option<Instant>,
    /// Which format the connection speaks, once its first line says.
    pub(super) wire: Wire,
    /// A course registration held without a connection: when it expires. Such an
    /// entry has no socket, no timers but its TTL, and counts in no connection limit.
    pub(super) held_until: Option<Instant>,
    /// Requests decoded and handled so far (RELAY is only taken as the first).
    pub(super) requests_handled: u64,
}

impl Conn {
    pub(super) fn new(peer: SocketAddr, decoder: Decoder, now: Instant) -> Conn {
        Conn {
            peer,
            decoder,
            registration: None,
            version: Version::V1,
            ever_registered: false,
            head_started: None,
            head_timer_queued: false,
            last_activity: now,
            wait: None,
            introduced: None,
            pending: None,
            bridges: 0,
            fallthroughs: Strikes::default(),
            request_started: None,
            wire: Wire::Undecided(Vec::new()),
            held_until: None,
            requests_handled: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum TimerKind {
    Head,
    Register,
    Idle,
    /// A v2 waiter's match must see STARTED by then.
    Match,
    /// A course registration's TTL.
    CourseHold,
}

impl Server {
    /// Takes a new connection, or answers 503 and closes it at once.
    pub(super) fn accept(&mut self, now: Instant, peer: SocketAddr) -> ConnId {
        self.next_id += 1;
        let conn = ConnId(self.next_id);
        self.outputs.event(ServerEvent::Accepted { conn, peer });
        let from_ip = self.per_ip.get(&peer.ip()).copied().unwrap_or(0);
        let served = self.conns.len() - self.course_held + self.relays.sockets();
        let over = if self.shut_down || served >= self.config.max_connections {
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
        let decoder = Decoder::new(self.config.limits);
        self.conns.insert(conn, Conn::new(peer, decoder, now));
        *self.per_ip.entry(peer.ip()).or_insert(0) += 1;
        self.peak_connections = self.peak_connections.max(served + 1);
        let deadline = now.checked_add(self.config.register_timeout);
        self.push_timer(deadline, conn, TimerKind::Register);
        let deadline = now.checked_add(self.config.idle_timeout);
        self.push_timer(deadline, conn, TimerKind::Idle);
        self.compact_timers();
        conn
    }

    /// Decodes and handles every complete request in `bytes`, then arms the head timer
    /// if a request is left half-read.
    pub(super) fn receive(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        if self.relays.carries(conn) {
            return self.relay_data(now, conn, bytes);
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return; // already closed by us; the transport may still have had bytes
        };
        c.last_activity = now;
        if self.config.trace {
            self.trace(conn, crate::Direction::Received, bytes);
        }
        let held;
        let mut input = match self.sniff(conn, bytes) {
            Sniffed::Http(None) => bytes,
            Sniffed::Http(Some(first)) => {
                held = first;
                &held[..]
            }
            Sniffed::Course(None) => return self.receive_course(now, conn, bytes),
            Sniffed::Course(Some(first)) => return self.receive_course(now, conn, &first),
            Sniffed::Undecided { started } => return self.track_head(now, conn, started, false),
        };
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
                    if self.relays.carries(conn) {
                        // Joined a relay: the rest of this read is the peer's, verbatim.
                        return self.relay_data(now, conn, input);
                    }
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.requests_handled += 1;
                    }
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
        let mid_head = self
            .conns
            .get(&conn)
            .is_some_and(|c| c.decoder.is_mid_head());
        self.track_head(now, conn, mid_head, completed_any);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.request_started = match c.decoder.is_mid_message() {
                true => c.request_started.or(Some(now)),
                false => None,
            };
        }
    }

    /// Arms the head timer while a head is half-read (`restart`: a new one began in
    /// this read), and disarms it when none is.
    pub(super) fn track_head(&mut self, now: Instant, conn: ConnId, mid_head: bool, restart: bool) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if mid_head {
            if restart || c.head_started.is_none() {
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
    }

    /// Forgets `conn` and tells the transport to close it.
    pub(super) fn close(&mut self, now: Instant, conn: ConnId, reason: CloseReason) {
        let socket = self
            .conns
            .get(&conn)
            .is_some_and(|c| c.held_until.is_none());
        if self.forget(now, conn, reason) && socket {
            self.outputs.close(conn);
        }
    }

    /// Drops every trace of `conn`; false if it was already gone.
    pub(super) fn forget(&mut self, now: Instant, conn: ConnId, reason: CloseReason) -> bool {
        if !self.conns.contains_key(&conn) {
            return false;
        }
        self.asker_moved_on(now, conn, super::events::FallThrough::AskerLeft);
        self.unregister(conn);
        let Some(c) = self.conns.remove(&conn) else {
            return false;
        };
        if c.held_until.is_some() {
            // No socket: nothing was counted for it but the hold itself.
            self.course_held -= 1;
            self.compact_timers();
            return true;
        }
        self.release_ip(c.peer.ip());
        self.outputs.event(ServerEvent::Closed { conn, reason });
        self.compact_timers();
        self.prune_fallthroughs(now);
        true
    }

    /// A connection from `ip` is no longer served.
    pub(super) fn release_ip(&mut self, ip: std::net::IpAddr) {
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    /// Queues a timer; a deadline past what `Instant` can hold means "never".
    /// Callers record the timer in `Conn` before calling `compact_timers`, which keeps
    /// only the timers `Conn` says are queued.
    pub(super) fn push_timer(
        &mut self,
        deadline: Option<Instant>,
        conn: ConnId,
        kind: TimerKind,
    ) -> bool {
        let Some(deadline) = deadline else {
            return false;
        };
        self.timers.push(Reverse((deadline, conn, kind)));
        true
    }

    /// Drops heap entries that can no longer fire for anyone, once they outnumber live ones.
    pub(super) fn compact_timers(&mut self) {
        // Live entries are at most 4 per connection; rebuilding only past 5 per connection
        // keeps the rebuild's O(heap) cost amortised over at least as many pushes and closes.
        if self.timers.len() <= 5 * self.conns.len() + 128 {
            return;
        }
        let conns = &self.conns;
        self.timers
            .retain(|Reverse((_, conn, kind))| match (conns.get(conn), kind) {
                (None, _) => false,
                (Some(c), TimerKind::Register) => !c.ever_registered,
                (Some(c), TimerKind::Head) => c.head_timer_queued,
                (Some(_), TimerKind::Idle) => true,
                (Some(c), TimerKind::Match) => c.pending.is_some(),
                (Some(c), TimerKind::CourseHold) => c.held_until.is_some(),
            });
    }

    pub(super) fn expire(&mut self, now: Instant, conn: ConnId, kind: TimerKind) {
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
            TimerKind::Match => self.match_timed_out(now, conn),
            TimerKind::CourseHold => self.course_hold_ended(now, conn),
        }
    }
}
