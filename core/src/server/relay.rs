//! The relay: two connections that present one live match's ticket, spliced.
//!
//! A connection whose first request is `RELAY` with the ticket of a live match
//! (issued, not fallen through, no STARTED yet) leaves the HTTP side of the server:
//! it is taken out of `conns`, so no request limit, head, register or idle timer
//! touches it again. The first peer is held unanswered while the match's waiter is
//! sent `RELAY`; the second gets `200 OK` together with the first, and from then on
//! every byte received on one side (including bytes pipelined behind its RELAY) is
//! appended to the other's output, never parsed. A ticket opens one relay only.
//!
//! A relay has its own limits: a byte budget (both ways together), a rate averaged
//! over [`RATE_WINDOW`], an idle timeout, and a join timeout for the second peer.
//! Past any of them, or when a side closes, both sides are closed (the remaining
//! one after what is queued for it) and the slot is free again. Both sockets stay
//! counted against `max_connections` and `max_per_ip` until then. The match itself
//! is left alone: the waiter's STARTED completes it as usual, and the relay outlives
//! both server connections.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::codec::{self, AfterError, Status, Ticket, Version};
use crate::ConnId;

use super::events::{CloseReason, Rejection, RelayEnd, ServerEvent};
use super::Server;

/// How long the rate limit averages over.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);

/// What the first peer may send before the second comes: held, then forwarded.
/// The first peer speaks only after its `200`, so this is slack, not a buffer.
const HELD_MAX: usize = 64 * 1024;

#[derive(Debug)]
struct Side {
    conn: ConnId,
    ip: IpAddr,
    /// Bytes received from this side and passed on.
    sent: u64,
}

#[derive(Debug)]
struct Relay {
    first: Side,
    second: Option<Side>,
    ticket: Ticket,
    /// The first peer's bytes before the second came.
    held: Vec<u8>,
    joined: Instant,
    last_activity: Instant,
    window_start: Instant,
    window_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum RelayTimer {
    Join,
    Idle,
}

/// Every relay the server holds, half-joined or spliced.
#[derive(Debug, Default)]
pub(super) struct Relays {
    /// Keyed by the first peer's connection.
    relays: FxHashMap<ConnId, Relay>,
    /// Each side of each relay, to its relay's key.
    sides: FxHashMap<ConnId, ConnId>,
    /// Half-joined relays by ticket. Tickets are drawn by the server, so the keys
    /// are random whatever a peer sends.
    waiting: HashMap<Ticket, ConnId>,
    /// At most one live entry per relay; stale ones are dropped when they fire or
    /// when they outnumber the relays.
    timers: BinaryHeap<Reverse<(Instant, ConnId, RelayTimer)>>,
}

impl Relays {
    /// Relays holding a slot.
    pub(super) fn len(&self) -> usize {
        self.relays.len()
    }

    /// Connections held by relays.
    pub(super) fn sockets(&self) -> usize {
        self.sides.len()
    }

    /// Whether `conn` is a side of a relay (its bytes are relayed, never parsed).
    pub(super) fn carries(&self, conn: ConnId) -> bool {
        self.sides.contains_key(&conn)
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((deadline, ..))| *deadline)
    }

    fn push_timer(&mut self, deadline: Option<Instant>, key: ConnId, kind: RelayTimer) {
        let Some(deadline) = deadline else {
            return; // past what `Instant` holds: never
        };
        self.timers.push(Reverse((deadline, key, kind)));
        if self.timers.len() > 2 * self.relays.len() + 64 {
            let relays = &self.relays;
            self.timers
                .retain(|Reverse((_, key, kind))| match (relays.get(key), kind) {
                    (None, _) => false,
                    (Some(r), RelayTimer::Join) => r.second.is_none(),
                    (Some(r), RelayTimer::Idle) => r.second.is_some(),
                });
        }
    }
}

impl Server {
    /// `RELAY` with `ticket` on `conn`: join a relay, or be refused.
    pub(super) fn relay(&mut self, now: Instant, conn: ConnId, ticket: Ticket) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if c.requests_handled > 0 {
            // A relay starts a connection; on one that already spoke, RELAY is a
            // mistake (v2) or a method version 1 does not have.
            return match c.version {
                Version::V2 => self.reject(conn, Rejection::RelayNotFirst),
                Version::V1 => self.reject(conn, Rejection::UnknownMethod),
            };
        }
        self.answered = Status::OK;
        if !self.config.relay {
            return self.refuse_relay(now, conn, Rejection::RelayOff);
        }
        if let Some(&key) = self.relays.waiting.get(&ticket) {
            return self.splice(now, key, conn);
        }
        let Some(waiter) = self.relay_ticket_waiter(&ticket) else {
            return self.refuse_relay(now, conn, Rejection::UnknownTicket);
        };
        if self.relays.len() >= self.config.max_relays {
            // The ticket is not spent: the peer may come back when a slot is free.
            return self.refuse_relay(now, conn, Rejection::RelayFull);
        }
        self.spend_relay_ticket(waiter);
        let Some((ip, held)) = self.leave_http(conn) else {
            return;
        };
        let timeout = self.config.relay_join_timeout;
        self.relays.relays.insert(
            conn,
            Relay {
                first: Side { conn, ip, sent: 0 },
                second: None,
                ticket,
                held,
                joined: now,
                last_activity: now,
                window_start: now,
                window_bytes: 0,
            },
        );
        self.relays.sides.insert(conn, conn);
        self.relays.waiting.insert(ticket, conn);
        self.relays
            .push_timer(now.checked_add(timeout), conn, RelayTimer::Join);
        self.send(waiter, |out| codec::write_relay(out, &ticket));
        self.outputs.event(ServerEvent::RelayJoined { conn });
        self.check_held(now, conn);
    }

    /// Answers `rejection` (a 403 or 503) and closes `conn`.
    fn refuse_relay(&mut self, now: Instant, conn: ConnId, rejection: Rejection) {
        self.answered = rejection.status();
        let after = match rejection {
            Rejection::RelayFull => AfterError::CloseRetryAfter(self.config.retry_after_secs),
            _ => AfterError::Close,
        };
        self.send(conn, |out| {
            codec::write_error(out, rejection.status(), &rejection, after)
        });
        self.outputs
            .event(ServerEvent::Rejected { conn, rejection });
        self.close(now, conn, CloseReason::Rejected(rejection.status()));
    }

    /// Takes `conn` out of the HTTP connections, its socket still counted; returns its
    /// address and the bytes its decoder held beyond the RELAY request.
    fn leave_http(&mut self, conn: ConnId) -> Option<(IpAddr, Vec<u8>)> {
        let mut c = self.conns.remove(&conn)?;
        Some((c.peer.ip(), c.decoder.take_unparsed()))
    }

    /// The second peer `conn` came to the relay `key`: `200 OK` to both, then what the
    /// first sent while it waited, then what the second pipelined.
    fn splice(&mut self, now: Instant, key: ConnId, conn: ConnId) {
        let Some((ip, pipelined)) = self.leave_http(conn) else {
            return;
        };
        let Some(relay) = self.relays.relays.get_mut(&key) else {
            return;
        };
        self.relays.waiting.remove(&relay.ticket);
        relay.second = Some(Side { conn, ip, sent: 0 });
        relay.last_activity = now;
        relay.window_start = now;
        let held = std::mem::take(&mut relay.held);
        self.relays.sides.insert(conn, key);
        let idle = Some(self.config.relay_idle).filter(|t| !t.is_zero());
        self.relays
            .push_timer(idle.and_then(|t| now.checked_add(t)), key, RelayTimer::Idle);
        self.send(key, |out| codec::write_ok(out, None));
        self.send(conn, |out| codec::write_ok(out, None));
        self.outputs.event(ServerEvent::RelayStarted {
            first: key,
            second: conn,
        });
        self.relay_data(now, key, &held);
        self.relay_data(now, conn, &pipelined);
    }

    /// Bytes received on a side of a relay: held until the second peer comes, then
    /// passed on verbatim.
    pub(super) fn relay_data(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        let Some(&key) = self.relays.sides.get(&conn) else {
            return;
        };
        let Some(relay) = self.relays.relays.get_mut(&key) else {
            return;
        };
        if bytes.is_empty() {
            return;
        }
        let Some(second) = &mut relay.second else {
            relay
                .held
                .extend_from_slice(&bytes[..bytes.len().min(HELD_MAX + 1)]);
            return self.check_held(now, key);
        };
        let n = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        let total = relay.first.sent + second.sent;
        let budget = self.config.relay_budget;
        if budget > 0 && total.saturating_add(n) > budget {
            return self.end_relay(now, key, RelayEnd::BudgetSpent { budget }, None);
        }
        if relay
            .window_start
            .checked_add(RATE_WINDOW)
            .is_some_and(|end| end <= now)
        {
            relay.window_start = now;
            relay.window_bytes = 0;
        }
        relay.window_bytes = relay.window_bytes.saturating_add(n);
        let rate = self.config.relay_rate;
        let window_secs = RATE_WINDOW.as_secs();
        if rate > 0 && relay.window_bytes > rate.saturating_mul(window_secs) {
            return self.end_relay(now, key, RelayEnd::RateExceeded { rate }, None);
        }
        relay.last_activity = now;
        let to = if conn == key {
            relay.first.sent += n;
            second.conn
        } else {
            second.sent += n;
            relay.first.conn
        };
        self.outputs
            .transmit(to, |out| out.extend_from_slice(bytes));
        self.outputs.observer().relayed(n);
    }

    /// Ends the half-joined relay `key` if its first peer sent more than is held.
    fn check_held(&mut self, now: Instant, key: ConnId) {
        let over = self
            .relays
            .relays
            .get(&key)
            .is_some_and(|r| r.held.len() > HELD_MAX);
        if over {
            self.relay_refusal(now, key, Rejection::RelayHeldTooMuch, RelayEnd::HeldTooMuch);
        }
    }

    /// Answers the half-joined relay `key`'s first peer with `rejection`, then ends it.
    fn relay_refusal(&mut self, now: Instant, key: ConnId, rejection: Rejection, why: RelayEnd) {
        self.send(key, |out| {
            codec::write_error(out, rejection.status(), &rejection, AfterError::Close)
        });
        self.outputs.event(ServerEvent::Rejected {
            conn: key,
            rejection,
        });
        self.end_relay(now, key, why, None);
    }

    /// A side of a relay closed or was dropped by the transport: the relay ends.
    /// False if `conn` is no relay's.
    pub(super) fn relay_side_gone(
        &mut self,
        now: Instant,
        conn: ConnId,
        reason: CloseReason,
    ) -> bool {
        let Some(&key) = self.relays.sides.get(&conn) else {
            return false;
        };
        self.end_relay(now, key, RelayEnd::Closed(conn), Some((conn, reason)));
        true
    }

    /// Ends the relay `key`: closes its sides (all but `gone`, which the transport
    /// already dropped), frees their counts and the slot.
    fn end_relay(
        &mut self,
        now: Instant,
        key: ConnId,
        why: RelayEnd,
        gone: Option<(ConnId, CloseReason)>,
    ) {
        let Some(relay) = self.relays.relays.remove(&key) else {
            return;
        };
        if relay.second.is_none() {
            self.relays.waiting.remove(&relay.ticket);
        }
        self.outputs.event(ServerEvent::RelayEnded {
            first: key,
            second: relay.second.as_ref().map(|s| s.conn),
            why,
            first_to_second: relay.first.sent,
            second_to_first: relay.second.as_ref().map_or(0, |s| s.sent),
            duration: now.saturating_duration_since(relay.joined),
        });
        for side in std::iter::once(&relay.first).chain(&relay.second) {
            self.relays.sides.remove(&side.conn);
            let reason = match gone {
                Some((conn, reason)) if conn == side.conn => reason,
                _ => {
                    self.outputs.close(side.conn);
                    CloseReason::RelayEnded
                }
            };
            self.release_ip(side.ip);
            self.outputs.event(ServerEvent::Closed {
                conn: side.conn,
                reason,
            });
        }
    }

    /// Ends every relay (the server is shutting down).
    pub(super) fn end_relays(&mut self, now: Instant) {
        let mut keys: Vec<ConnId> = self.relays.relays.keys().copied().collect();
        keys.sort_unstable();
        for key in keys {
            self.end_relay(now, key, RelayEnd::Shutdown, None);
        }
        self.relays.timers.clear();
    }

    /// Fires the relay timers due by `now`.
    pub(super) fn expire_relays(&mut self, now: Instant) {
        while let Some(&Reverse((deadline, key, kind))) = self.relays.timers.peek() {
            if deadline > now {
                break;
            }
            self.relays.timers.pop();
            let Some(relay) = self.relays.relays.get(&key) else {
                continue; // ended since
            };
            match (kind, relay.second.is_some()) {
                (RelayTimer::Join, false) => {
                    let secs = self.config.relay_join_timeout.as_secs();
                    let why = RelayEnd::PeerDidNotCome { secs };
                    self.relay_refusal(now, key, Rejection::PeerDidNotCome, why);
                }
                (RelayTimer::Idle, true) => {
                    let idle = self.config.relay_idle;
                    let deadline = relay.last_activity.checked_add(idle);
                    if deadline.is_some_and(|d| d <= now) {
                        let secs = idle.as_secs();
                        self.end_relay(now, key, RelayEnd::Idle { secs }, None);
                    } else {
                        self.relays.push_timer(deadline, key, RelayTimer::Idle);
                    }
                }
                _ => {} // a stale entry: the relay moved on
            }
        }
    }
}
