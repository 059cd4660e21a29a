//! Who meets whom: the waiting places, introductions, tickets and fall-throughs.
//!
//! A client waits in one place: the anyone-place (plain BRIDGE; at most one client,
//! unless a fall-through puts a waiter back in front of a newer one) or, on a v2
//! connection, the place of the peer it named (`Peer`; any number). When a waiter is
//! handed to an asker, a v2 waiter is told at once (MATCHED) and the match stays
//! pending until it reports STARTED. Before that, the asker leaving, unregistering,
//! registering or bridging again, or `match_timeout` passing, makes it fall through:
//! the ticket dies and the waiter goes back to the front of its place (UNMATCHED).
//! A v1 waiter is never put back (it is handed out at most once, as in version 1).
//! Either way the asker gets a strike; too many and its BRIDGE gets 429.

use std::fmt;
use std::time::{Duration, Instant};

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::codec::{self, HeaderError, Introduction, Ticket, Version};
use crate::contact::{self, Contact, Name};
use crate::ConnId;

use super::events::{FallThrough, FallThroughReason, Rejection, ServerEvent};
use super::Server;

/// Where a client waits.
#[derive(Debug, Clone, Copy)]
pub(super) enum Place {
    /// For whoever asks next (plain BRIDGE).
    Anyone,
    /// For this name only (BRIDGE with `Peer`).
    For(Name),
}

/// An asker's side of an introduction.
#[derive(Debug, Clone, Copy)]
pub(super) struct Introduced {
    id: u64,
    waiter: ConnId,
    waiter_name: Name,
    asker_name: Name,
    /// For a v1 waiter, which reports nothing: until when the asker dropping it counts.
    deadline: Option<Instant>,
    /// The waiter's `bridges` when it was handed out: if it asked again, it moved on.
    waiter_bridges: u64,
}

/// A v2 waiter's side of an introduction, until STARTED.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pending {
    id: u64,
    asker: ConnId,
    asker_name: Name,
    ticket: Option<Ticket>,
    /// Where it goes back to if the match falls through.
    place: Place,
    deadline: Option<Instant>,
    /// A peer came to the relay with this match's ticket: the ticket opens no other.
    relay_opened: bool,
}

/// Fall-throughs counted in a fixed window that opens at the first one.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Strikes {
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

    pub(super) fn window_end(&self, window: Duration) -> Option<Instant> {
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

/// Tickets drawn from a ChaCha20 stream seeded by the transport.
pub(super) struct Tickets(ChaCha20Rng);

impl Tickets {
    pub(super) fn new(seed: [u8; 32]) -> Tickets {
        Tickets(ChaCha20Rng::from_seed(seed))
    }

    fn draw(&mut self) -> Ticket {
        let mut bytes = [0u8; codec::v2::TICKET_LEN];
        self.0.fill_bytes(&mut bytes);
        Ticket::from_bytes(bytes)
    }
}

impl fmt::Debug for Tickets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tickets(…)") // the generator's state would reveal every ticket
    }
}

impl Server {
    pub(super) fn register(
        &mut self,
        now: Instant,
        conn: ConnId,
        contact: Contact,
        version: Version,
    ) {
        if let Some(why) = contact::unusable_ip(contact.ip) {
            return self.reject(conn, Rejection::UnusableIp(contact.ip, why));
        }
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let observed = c.peer;
        if self.config.strict_ip {
            let observed = observed.ip().to_canonical();
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
        self.asker_moved_on(now, conn, FallThrough::AskerRegistered);
        if version == Version::V1 {
            // Back to version 1: no notifications, so no pending match and no named wait.
            self.end_pending(conn);
            if matches!(
                self.conns.get(&conn).and_then(|c| c.wait),
                Some(Place::For(_))
            ) {
                self.leave_place(conn);
            }
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let previous = c.registration.replace(contact);
        c.version = version;
        c.ever_registered = true;
        if let Some(previous) = previous {
            if previous.name.key() != key {
                self.names.remove(&previous.name.key());
            }
        }
        self.names.insert(key, conn);
        match version {
            Version::V1 => self.answer_ok(conn, Some(contact)),
            Version::V2 => self.send(conn, |out| {
                codec::write_registered_v2(out, &contact, observed)
            }),
        }
        self.outputs.event(ServerEvent::Registered {
            conn,
            contact,
            version,
            observed,
        });
    }

    pub(super) fn bridge(
        &mut self,
        now: Instant,
        conn: ConnId,
        claimed: Option<Name>,
        peer: Result<Option<Name>, HeaderError>,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(me) = c.registration else {
            return self.reject(conn, Rejection::NotRegistered);
        };
        if claimed.is_some_and(|name| !name.same_as(&me.name)) {
            return self.reject(conn, Rejection::NameMismatch);
        }
        let v2 = c.version == Version::V2;
        c.bridges += 1;
        self.asker_moved_on(now, conn, FallThrough::AskerBridged);
        self.end_pending(conn);
        if let Some(wait) = self.refused_for(now, conn) {
            // Whole seconds, rounded up, so a client that obeys is not refused again.
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let retry_after = u32::try_from(secs).unwrap_or(u32::MAX);
            return self.reject(conn, Rejection::TooManyFallthroughs { retry_after });
        }
        // A v1 connection ignores `Peer`, as a v1 server would.
        let peer = match peer {
            Ok(peer) if v2 => peer,
            Err(error) if v2 => return self.reject(conn, Rejection::BadHeader(error)),
            _ => None,
        };
        if peer.is_some_and(|peer| peer.same_as(&me.name)) {
            return self.reject(conn, Rejection::BridgeWithYourself);
        }
        if let Some((waiter, place)) = self.find_waiter(conn, &me.name, peer) {
            self.leave_place(waiter);
            self.leave_place(conn);
            return self.pair(now, conn, waiter, place);
        }
        let place = peer.map_or(Place::Anyone, Place::For);
        let already = match (self.conns.get(&conn).and_then(|c| c.wait), place) {
            (Some(Place::Anyone), Place::Anyone) => true,
            (Some(Place::For(old)), Place::For(new)) => old.same_as(&new),
            _ => false,
        };
        if !already {
            self.leave_place(conn);
            self.enter_place(conn, place, false);
        }
        self.answer_ok(conn, None);
        if !already {
            self.outputs.event(ServerEvent::Waiting {
                conn,
                name: me.name,
                peer,
            });
        }
    }

    /// The waiter `conn` (named `me`) is paired with, if any, and the place it waits in.
    pub(super) fn find_waiter(
        &self,
        conn: ConnId,
        me: &Name,
        peer: Option<Name>,
    ) -> Option<(ConnId, Place)> {
        match peer {
            None => {
                // Someone who asked for me by name first, then whoever waits for anyone;
                // a waiter at the front of the anyone-place is never handed itself.
                let for_me = self.named.get(&me.key()).and_then(|q| q.front()).copied();
                if let Some(waiter) = for_me.filter(|&w| w != conn) {
                    return Some((waiter, Place::For(*me)));
                }
                let front = self.anyone.front().copied()?;
                (front != conn).then_some((front, Place::Anyone))
            }
            Some(peer) => {
                let waiter = *self.names.get(&peer.key())?;
                let place = self.conns.get(&waiter)?.wait?;
                let takes_me = match place {
                    Place::Anyone => true,
                    Place::For(wanted) => wanted.same_as(me),
                };
                (waiter != conn && takes_me).then_some((waiter, place))
            }
        }
    }

    /// Hands `waiter` (out of `place`) to `asker`: the asker's answer, and MATCHED to a
    /// v2 waiter.
    pub(super) fn pair(&mut self, now: Instant, asker: ConnId, waiter: ConnId, place: Place) {
        let (Some(a), Some(w)) = (self.conns.get(&asker), self.conns.get(&waiter)) else {
            return;
        };
        let (Some(a_contact), Some(w_contact)) = (a.registration, w.registration) else {
            debug_assert!(false, "a waiting place held an unregistered connection");
            return;
        };
        let (a_version, w_version) = (a.version, w.version);
        let (a_course, w_course) = (a.held_until.is_some(), w.held_until.is_some());
        let (a_seen, w_seen, waiter_bridges) = (a.peer, w.peer, w.bridges);
        let both_v2 = a_version == Version::V2 && w_version == Version::V2;
        let ticket = both_v2.then(|| self.tickets.draw());
        self.next_match += 1;
        let id = self.next_match;
        match a_version {
            // A course asker has no connection here: its BRIDGEACK goes where it asked.
            Version::V1 if a_course => {}
            Version::V1 => self.answer_ok(asker, Some(w_contact)),
            Version::V2 => {
                let intro = Introduction {
                    peer: w_contact,
                    peer_version: w_version,
                    observed: w_seen,
                    ticket,
                };
                self.send(asker, |out| {
                    codec::write_paired_dialect(out, &intro, w_course)
                });
            }
        }
        if w_version == Version::V2 {
            let intro = Introduction {
                peer: a_contact,
                peer_version: a_version,
                observed: a_seen,
                ticket,
            };
            self.send(waiter, |out| {
                codec::write_matched_dialect(out, &intro, a_course)
            });
            let deadline = Some(self.config.match_timeout)
                .filter(|t| !t.is_zero())
                .and_then(|t| now.checked_add(t));
            self.set_pending(
                waiter,
                Pending {
                    id,
                    asker,
                    asker_name: a_contact.name,
                    ticket,
                    place,
                    deadline,
                    relay_opened: false,
                },
            );
            if self.push_timer(deadline, waiter, super::connections::TimerKind::Match) {
                self.compact_timers();
            }
        }
        let deadline = now
            .checked_add(self.config.introduction_deadline)
            .filter(|&d| d > now);
        if let Some(a) = self.conns.get_mut(&asker) {
            a.introduced = Some(Introduced {
                id,
                waiter,
                waiter_name: w_contact.name,
                asker_name: a_contact.name,
                deadline,
                waiter_bridges,
            });
        }
        self.outputs.event(ServerEvent::Paired {
            asker: a_contact.name,
            waiter: w_contact.name,
            ticket: ticket.is_some(),
        });
    }

    /// The v2 waiter `conn` reports its chat started; the match completes if the ticket is its.
    pub(super) fn started(&mut self, conn: ConnId, ticket: Option<Ticket>) {
        self.answer_ok(conn, None);
        let Some(pending) = self.conns.get(&conn).and_then(|c| c.pending) else {
            return;
        };
        if pending.ticket != ticket {
            return; // not this match's: it stays pending
        }
        self.end_pending(conn);
        if let Some(a) = self.conns.get_mut(&pending.asker) {
            if a.introduced.is_some_and(|i| i.id == pending.id) {
                a.introduced = None;
            }
        }
        if let Some(waiter) = self.registration(conn) {
            self.outputs.event(ServerEvent::Started {
                waiter: waiter.name,
                asker: pending.asker_name,
            });
        }
    }

    /// The asker `conn` moved on (left, unregistered, registered or bridged again):
    /// the introduction it holds, if still unsettled, falls through.
    pub(super) fn asker_moved_on(&mut self, now: Instant, conn: ConnId, why: FallThrough) {
        let Some(intro) = self.conns.get_mut(&conn).and_then(|c| c.introduced.take()) else {
            return;
        };
        // A connection that just ends does not count against its address: every client
        // ends so when its person quits, and many share one address.
        let by_request = why != FallThrough::AskerLeft;
        let Some(w) = self.conns.get(&intro.waiter) else {
            return; // the waiter left: nobody is stranded
        };
        if w.pending.is_some_and(|p| p.id == intro.id) {
            self.strike(now, conn, by_request);
            return self.requeue(intro.waiter, why);
        }
        let v1_dropped = w.version == Version::V1
            && w.pending.is_none()
            && w.wait.is_none()
            && w.bridges == intro.waiter_bridges
            && w.registration.is_some()
            && intro.deadline.is_some_and(|d| d > now);
        if v1_dropped {
            self.strike(now, conn, by_request);
            self.outputs.event(ServerEvent::FellThrough {
                asker: intro.asker_name,
                waiter: intro.waiter_name,
                why,
                requeued: false,
            });
        }
    }

    /// The v2 waiter `conn`'s match saw no STARTED in time.
    pub(super) fn match_timed_out(&mut self, now: Instant, conn: ConnId) {
        let Some(pending) = self.conns.get(&conn).and_then(|c| c.pending) else {
            return;
        };
        if !pending.deadline.is_some_and(|d| d <= now) {
            return; // a newer match, with its own timer
        }
        if let Some(a) = self.conns.get_mut(&pending.asker) {
            if a.introduced.is_some_and(|i| i.id == pending.id) {
                a.introduced = None;
                self.strike(now, pending.asker, false);
            }
        }
        let secs = self.config.match_timeout.as_secs();
        self.requeue(conn, FallThrough::Timeout { secs });
    }

    /// Ends `waiter`'s pending match: back to the front of its place, told with UNMATCHED.
    fn requeue(&mut self, waiter: ConnId, why: FallThrough) {
        let Some(pending) = self.end_pending(waiter) else {
            return;
        };
        self.enter_place(waiter, pending.place, true);
        let reason = FallThroughReason {
            asker: &pending.asker_name,
            why,
        };
        self.send(waiter, |out| {
            codec::write_unmatched(out, &pending.asker_name, pending.ticket.as_ref(), &reason)
        });
        if let Some(w) = self.registration(waiter) {
            self.outputs.event(ServerEvent::FellThrough {
                asker: pending.asker_name,
                waiter: w.name,
                why,
                requeued: true,
            });
        }
    }

    fn strike(&mut self, now: Instant, asker: ConnId, by_request: bool) {
        let window = self.config.fallthrough_window;
        let Some(c) = self.conns.get_mut(&asker) else {
            return;
        };
        c.fallthroughs.add(now, window);
        let ip = c.peer.ip();
        if by_request {
            self.fallthroughs_by_ip
                .entry(ip)
                .or_default()
                .add(now, window);
        }
    }

    /// How long BRIDGE from `conn` stays refused for fall-throughs, if it is.
    fn refused_for(&mut self, now: Instant, conn: ConnId) -> Option<Duration> {
        let window = self.config.fallthrough_window;
        let c = self.conns.get(&conn)?;
        let by_conn = c
            .fallthroughs
            .refused_for(now, window, self.config.fallthrough_limit);
        let by_ip = self
            .fallthroughs_by_ip
            .get(&c.peer.ip())
            .and_then(|s| s.refused_for(now, window, self.config.fallthrough_limit_per_ip));
        by_conn.max(by_ip)
    }

    /// Drops per-IP counts whose window is over, once they outnumber live connections.
    pub(super) fn prune_fallthroughs(&mut self, now: Instant) {
        if self.fallthroughs_by_ip.len() <= 2 * self.conns.len() + 128 {
            return;
        }
        let window = self.config.fallthrough_window;
        self.fallthroughs_by_ip
            .retain(|_, strikes| !matches!(strikes.window_end(window), Some(end) if end <= now));
    }

    /// Forgets `conn`'s registration, its waiting place and its pending match.
    pub(super) fn unregister(&mut self, conn: ConnId) {
        self.leave_place(conn);
        self.end_pending(conn);
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

    fn set_pending(&mut self, conn: ConnId, pending: Pending) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        match c.pending.replace(pending) {
            None => self.pending_count += 1,
            Some(old) => {
                if let Some(ticket) = old.ticket {
                    self.live_tickets.remove(&ticket);
                }
            }
        }
        if let Some(ticket) = pending.ticket {
            self.live_tickets.insert(ticket, conn);
        }
    }

    /// Drops `conn`'s pending match (its ticket dies); returns it.
    fn end_pending(&mut self, conn: ConnId) -> Option<Pending> {
        let pending = self.conns.get_mut(&conn)?.pending.take()?;
        self.pending_count -= 1;
        if let Some(ticket) = pending.ticket {
            self.live_tickets.remove(&ticket);
        }
        Some(pending)
    }

    /// The waiter of the live match `ticket` belongs to, if no relay was opened with
    /// it yet.
    pub(super) fn relay_ticket_waiter(&self, ticket: &Ticket) -> Option<ConnId> {
        let waiter = *self.live_tickets.get(ticket)?;
        let pending = self.conns.get(&waiter)?.pending?;
        (pending.ticket.as_ref() == Some(ticket) && !pending.relay_opened).then_some(waiter)
    }

    /// A relay was opened with the ticket of `waiter`'s match: it opens no other.
    pub(super) fn spend_relay_ticket(&mut self, waiter: ConnId) {
        if let Some(pending) = self.conns.get_mut(&waiter).and_then(|c| c.pending.as_mut()) {
            pending.relay_opened = true;
        }
    }

    pub(super) fn enter_place(&mut self, conn: ConnId, place: Place, front: bool) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        debug_assert!(c.wait.is_none(), "a client waits in one place at a time");
        c.wait = Some(place);
        let queue = match place {
            Place::Anyone => &mut self.anyone,
            Place::For(name) => {
                self.named_count += 1;
                self.named.entry(name.key()).or_default()
            }
        };
        if front {
            queue.push_front(conn);
        } else {
            queue.push_back(conn);
        }
    }

    pub(super) fn leave_place(&mut self, conn: ConnId) {
        let Some(place) = self.conns.get_mut(&conn).and_then(|c| c.wait.take()) else {
            return;
        };
        match place {
            Place::Anyone => self.anyone.retain(|&w| w != conn),
            Place::For(name) => {
                let key = name.key();
                if let Some(queue) = self.named.get_mut(&key) {
                    queue.retain(|&w| w != conn);
                    self.named_count -= 1;
                    if queue.is_empty() {
                        self.named.remove(&key);
                    }
                }
            }
        }
    }
}
