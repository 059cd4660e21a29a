//! The course format on the server's own port (see docs/COURSE.md).
//!
//! A connection whose first line is a bare course verb (see [`detect`]) is
//! served in the course format from then on; any other goes to the HTTP
//! decoder, byte for byte as if nothing had looked at it. Course clients close
//! after every request, so a course REGISTER is *held* without a connection:
//! an entry in `conns` with `held_until` set, no socket and no timer but its
//! TTL (`legacy_ttl`). It is a name in the same registry as everyone else's,
//! and a v1-like waiter: handed out once, never notified. It ends when its TTL
//! passes or when the same clientID registers again.
//!
//! The course format has no error answers: a block the server cannot serve is
//! logged as a rejection and the connection is closed unanswered.

use std::time::Instant;

use crate::codec::Version;
use crate::contact::{self, Contact, Name};
use crate::course::{self, CourseDecoder, CourseMessage, Dialect};
use crate::ConnId;

use super::connections::{Conn, TimerKind};
use super::events::{CloseReason, FallThrough, Rejection, ServerEvent};
use super::matching::Place;
use super::Server;

/// Which format a connection speaks.
#[derive(Debug)]
pub(super) enum Wire {
    /// Its first line has not ended: the bytes so far (at most one head's worth,
    /// since [`detect`] calls a longer first line HTTP).
    Undecided(Vec<u8>),
    Http,
    Course(Box<CourseDecoder>),
}

/// What [`Server::sniff`] made of a read: the bytes to decode are the read's,
/// or (`Some`) everything held since the connection opened.
pub(super) enum Sniffed {
    Http(Option<Vec<u8>>),
    Course(Option<Vec<u8>>),
    /// `started`: a first line has begun (blank lines alone start nothing).
    Undecided {
        started: bool,
    },
}

impl Server {
    /// Decides, once, which format `conn` speaks from its first line.
    pub(super) fn sniff(&mut self, conn: ConnId, bytes: &[u8]) -> Sniffed {
        let limits = self.config.limits;
        let Some(c) = self.conns.get_mut(&conn) else {
            return Sniffed::Http(None);
        };
        let Wire::Undecided(held) = &mut c.wire else {
            return match c.wire {
                Wire::Course(_) => Sniffed::Course(None),
                _ => Sniffed::Http(None),
            };
        };
        held.extend_from_slice(bytes);
        let dialect = course::detect_verb(held, &limits);
        match dialect {
            Dialect::Undecided => Sniffed::Undecided {
                started: held.iter().any(|&b| b != b'\r' && b != b'\n'),
            },
            Dialect::Http => {
                let first = std::mem::take(held);
                c.wire = Wire::Http;
                Sniffed::Http(Some(first))
            }
            Dialect::Course => {
                let first = std::mem::take(held);
                c.wire = Wire::Course(Box::new(CourseDecoder::new(limits)));
                Sniffed::Course(Some(first))
            }
        }
    }

    pub(super) fn speaks_course(&self, conn: ConnId) -> bool {
        self.conns
            .get(&conn)
            .is_some_and(|c| matches!(c.wire, Wire::Course(_)))
    }

    /// Serves every complete course block in `bytes`, several in a row if they come so.
    pub(super) fn receive_course(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        let mut input = bytes;
        let mut completed_any = false;
        loop {
            let Some(Wire::Course(decoder)) = self.conns.get_mut(&conn).map(|c| &mut c.wire) else {
                return; // closed while serving
            };
            match decoder.decode(&mut input) {
                Ok(Some(message)) => {
                    completed_any = true;
                    self.course_request(now, conn, message);
                }
                Ok(None) => break,
                Err(error) => return self.course_refuse(now, conn, Rejection::Course(error)),
            }
        }
        let mid = self.conns.get(&conn).is_some_and(|c| match &c.wire {
            Wire::Course(decoder) => decoder.is_mid_message(),
            _ => false,
        });
        self.track_head(now, conn, mid, completed_any);
    }

    fn course_request(&mut self, now: Instant, conn: ConnId, message: CourseMessage) {
        match message {
            CourseMessage::Register(contact) => self.course_register(now, conn, contact),
            CourseMessage::Bridge(name) => self.course_bridge(now, conn, name),
            CourseMessage::Quit => self.close(now, conn, CloseReason::ClientAsked),
            other => self.course_refuse(now, conn, Rejection::CourseVerb(other.verb())),
        }
    }

    /// Logs the refusal and closes: the course format has no way to say why.
    fn course_refuse(&mut self, now: Instant, conn: ConnId, rejection: Rejection) {
        self.answered = rejection.status();
        self.outputs
            .event(ServerEvent::Rejected { conn, rejection });
        self.close(now, conn, CloseReason::CourseRefused);
    }

    /// REGISTER: holds the registration for `legacy_ttl`, replacing an earlier course
    /// registration of the same clientID; a bridgechat client's name is refused.
    fn course_register(&mut self, now: Instant, conn: ConnId, contact: Contact) {
        if let Some(why) = contact::unusable_ip(contact.ip) {
            return self.course_refuse(now, conn, Rejection::UnusableIp(contact.ip, why));
        }
        let Some(peer) = self.conns.get(&conn).map(|c| c.peer) else {
            return;
        };
        let key = contact.name.key();
        if let Some(&owner) = self.names.get(&key) {
            match self.conns.get(&owner).and_then(|o| o.held_until) {
                Some(_) => {
                    self.forget(now, owner, CloseReason::ClientAsked);
                }
                None => return self.course_refuse(now, conn, Rejection::NameTaken(contact.name)),
            }
        }
        if self.course_held >= self.config.max_connections {
            // Holds cost memory like connections do, so they are capped alike.
            return self.course_refuse(now, conn, Rejection::TooManyConnections);
        }
        let until = now.checked_add(self.config.legacy_ttl);
        self.next_id += 1;
        let holder = ConnId(self.next_id);
        let mut held = Conn::new(peer, crate::codec::Decoder::new(self.config.limits), now);
        held.registration = Some(contact);
        held.ever_registered = true;
        // A TTL past what `Instant` can hold never ends; `Some(now)` still marks the hold.
        held.held_until = Some(until.unwrap_or(now));
        self.conns.insert(holder, held);
        self.course_held += 1;
        self.names.insert(key, holder);
        if self.push_timer(until, holder, TimerKind::CourseHold) {
            self.compact_timers();
        }
        self.served_course(conn);
        self.send(conn, |out| course::write_regack(out, &contact, true));
        self.outputs.event(ServerEvent::Registered {
            conn: holder,
            contact,
            version: Version::V1,
            observed: peer,
        });
    }

    /// BRIDGE: the other client's contact, or the empty form and the asker waits.
    fn course_bridge(&mut self, now: Instant, conn: ConnId, name: Name) {
        let holder = self.names.get(&name.key()).copied();
        let Some((holder, me)) = holder.and_then(|h| {
            let c = self.conns.get(&h)?;
            c.held_until?;
            Some((h, c.registration?))
        }) else {
            return self.course_refuse(now, conn, Rejection::NotRegistered);
        };
        self.served_course(conn);
        if let Some(h) = self.conns.get_mut(&holder) {
            h.bridges += 1;
        }
        self.asker_moved_on(now, holder, FallThrough::AskerBridged);
        if let Some((waiter, place)) = self.find_waiter(holder, &me.name, None) {
            let peer = self.registration(waiter);
            self.leave_place(waiter);
            self.leave_place(holder);
            self.pair(now, holder, waiter, place);
            return self.send(conn, |out| course::write_bridgeack(out, peer.as_ref()));
        }
        let waits = self.conns.get(&holder).and_then(|h| h.wait).is_some();
        if !waits {
            self.enter_place(holder, Place::Anyone, false);
            self.outputs.event(ServerEvent::Waiting {
                conn: holder,
                name: me.name,
                peer: None,
            });
        }
        self.send(conn, |out| course::write_bridgeack(out, None));
    }

    /// A course connection that made a request is served: the register timer does not
    /// apply to it (its registration is held elsewhere); the idle timer still does.
    fn served_course(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.ever_registered = true;
        }
    }

    /// A course registration's TTL timer fired.
    pub(super) fn course_hold_ended(&mut self, now: Instant, holder: ConnId) {
        let ended = self
            .conns
            .get(&holder)
            .and_then(|c| c.held_until)
            .is_some_and(|until| until <= now);
        if ended {
            self.forget(now, holder, CloseReason::IdleTimeout);
        }
    }
}
