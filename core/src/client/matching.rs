//! The match as the waiter sees it (protocol version 2): whom we wait for,
//! the server's MATCHED and UNMATCHED notifications, and which CHAT a match
//! lets in. Everything that moves [`Matching`] is in this file.
//!
//! ```text
//!             BRIDGE answered "wait" (for NAME, or for anyone)
//! [*] ─────────────────────────────────────────────▶ Waiting
//! Waiting ──MATCHED──▶ Matched(peer, ticket)              line: matched with bob
//! Matched ──UNMATCHED──▶ Waiting (the ticket is dead)     line: ... WAIT MODE: waiting again
//! Matched ──the peer's CHAT accepted, STARTED sent──▶ [*]
//! Waiting, Matched ──WAIT MODE left──▶ [*]
//! ```
//!
//! While Matched, only the CHAT carrying the match's ticket gets in (a v1
//! peer, which has none: a CHAT without a ticket under the matched name); any
//! other CHAT is refused with 403. A CHAT that comes before MATCHED is parked
//! by `incoming` until MATCHED comes or its deadline passes. The mode stays
//! WAIT MODE throughout: the table moves it only when a CHAT is accepted.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;

use super::{Client, ClientError, ClientEvent, Ctx, Mode};
use crate::codec::{Introduction, Noise, Ticket, Unmatched, Version};
use crate::contact::Name;
use crate::secure;

/// Dead tickets remembered, so a CHAT still carrying one is refused at once.
const DEAD_TICKETS: usize = 8;

/// Why a chat runs without a ticket the server vouched for; shown with the
/// `not encrypted` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unprotected {
    /// The server speaks version 1: no tickets at all.
    ServerVersion1,
    /// The peer speaks version 1: its CHAT carries no ticket.
    PeerVersion1,
    /// The peer speaks the course format, which has no encryption.
    CoursePeer,
    /// We speak the course format ourselves (`--legacy`).
    Legacy,
}

impl Unprotected {
    /// A chat in the course format: we speak it (`--legacy`), or the peer does.
    pub(super) fn course(ctx: &Ctx) -> Unprotected {
        match ctx.config.legacy {
            true => Unprotected::Legacy,
            false => Unprotected::CoursePeer,
        }
    }

    /// For a chat we start or accept: `None` when a ticket protects it, or when
    /// we speak version 1 ourselves (then nothing is different from version 1).
    pub(super) fn of(ctx: &Ctx, server: Version, ticket: Option<&Ticket>) -> Option<Unprotected> {
        if ctx.config.legacy {
            return Some(Unprotected::Legacy);
        }
        match (ctx.config.version2, server, ticket) {
            (false, _, _) | (true, Version::V2, Some(_)) => None,
            (true, Version::V1, _) => Some(Unprotected::ServerVersion1),
            (true, Version::V2, None) => Some(Unprotected::PeerVersion1),
        }
    }
}

impl fmt::Display for Unprotected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unprotected::ServerVersion1 => "the server speaks protocol version 1",
            Unprotected::PeerVersion1 => "the peer speaks protocol version 1",
            Unprotected::CoursePeer => "the peer speaks the course format, which has no encryption",
            Unprotected::Legacy => "--legacy speaks the course format, which has no encryption",
        })
    }
}

/// The peer the server handed us to.
#[derive(Debug, Clone, Copy)]
struct Matched {
    peer: Name,
    /// `None` for a v1 peer: its CHAT is let in by name.
    ticket: Option<Ticket>,
    /// The peer's server connection as the server sees it.
    observed: SocketAddr,
    /// That address is not the one it registered: a router translates for it.
    behind_router: bool,
}

#[derive(Debug, Default)]
pub(super) struct Matching {
    /// Whom our BRIDGE waits for: `None` is anyone. Meaningful in WAIT MODE only.
    waiting_for: Option<Name>,
    matched: Option<Matched>,
    /// Tickets of matches that fell through or were used, newest last.
    dead: VecDeque<Ticket>,
}

/// How a CHAT that came through a version 2 server is decided in WAIT MODE.
#[derive(Debug)]
pub(super) enum Admission {
    /// It is the matched v1 peer: accept in plain text, report STARTED.
    Accept {
        ticket: Option<Ticket>,
        unprotected: Option<Unprotected>,
    },
    /// Its handshake verified under the match's ticket: the encrypted session
    /// and the reply for the 200; report STARTED with the ticket.
    Encrypted(Ticket, Box<secure::Session>, Noise),
    /// No MATCHED yet: decide when it comes.
    Park,
    /// Anyone else: 403 with this reason.
    Refuse(&'static str),
}

pub(super) const WRONG_TICKET: &str = "wrong ticket";

impl Matching {
    pub(super) fn waiting_for(&self) -> Option<Name> {
        self.waiting_for
    }

    /// The matched peer's observed address: a connection from there is its punch.
    pub(super) fn observed(&self) -> Option<SocketAddr> {
        self.matched.map(|m| m.observed)
    }

    pub(super) fn peer_behind_router(&self) -> bool {
        self.matched.is_some_and(|m| m.behind_router)
    }

    pub(super) fn is_matched(&self) -> bool {
        self.matched.is_some()
    }

    /// Our BRIDGE was answered "wait": for `peer`, or for anyone.
    pub(super) fn wait(&mut self, peer: Option<Name>) {
        self.leave();
        self.waiting_for = peer;
    }

    /// WAIT MODE is over: a match still open is dead.
    pub(super) fn leave(&mut self) {
        self.waiting_for = None;
        if let Some(ticket) = self.matched.take().and_then(|m| m.ticket) {
            self.bury(ticket);
        }
    }

    fn bury(&mut self, ticket: Ticket) {
        if !self.dead.contains(&ticket) {
            if self.dead.len() == DEAD_TICKETS {
                self.dead.pop_front();
            }
            self.dead.push_back(ticket);
        }
    }

    /// Who may come in with a CHAT from `name` carrying `ticket` or the first
    /// handshake message `noise`. With a ticket for the match only a handshake
    /// under it gets in: a version 2 peer never chats in plain text, and the
    /// ticket itself never travels between the peers.
    pub(super) fn admit(
        &self,
        ctx: &mut Ctx,
        name: Name,
        ticket: Option<Ticket>,
        noise: Option<Noise>,
    ) -> Admission {
        if ticket.is_some_and(|t| self.dead.contains(&t)) {
            return Admission::Refuse(WRONG_TICKET);
        }
        match self.matched {
            // A handshake under a dead ticket is refused at once, as the ticket would be.
            None if noise.is_some_and(|first| self.under_dead_ticket(ctx, &first)) => {
                Admission::Refuse(WRONG_TICKET)
            }
            None => Admission::Park,
            Some(Matched {
                ticket: Some(expected),
                ..
            }) => match noise {
                Some(first) => {
                    match secure::Responder::accept(&expected.to_bytes(), ctx.draw_seed(), &first.0)
                    {
                        Ok((session, reply)) => {
                            let reply = Noise(reply.try_into().expect("a handshake message"));
                            Admission::Encrypted(expected, Box::new(session), reply)
                        }
                        Err(_) => Admission::Refuse(WRONG_TICKET),
                    }
                }
                None => Admission::Refuse(WRONG_TICKET),
            },
            Some(Matched {
                peer, ticket: None, ..
            }) if ticket.is_none() && noise.is_none() && name.same_as(&peer) => Admission::Accept {
                ticket: None,
                unprotected: Some(Unprotected::PeerVersion1),
            },
            Some(_) => Admission::Refuse(WRONG_TICKET),
        }
    }

    /// Whether `first` verifies under one of the (few) dead tickets.
    fn under_dead_ticket(&self, ctx: &mut Ctx, first: &Noise) -> bool {
        self.dead.iter().any(|ticket| {
            secure::Responder::accept(&ticket.to_bytes(), ctx.draw_seed(), &first.0).is_ok()
        })
    }

    /// The accepted CHAT used the match up.
    pub(super) fn started(&mut self) {
        if let Some(ticket) = self.matched.take().and_then(|m| m.ticket) {
            self.bury(ticket);
        }
    }

    /// MATCHED: the server handed us to `intro.peer`. False if we are not waiting.
    fn on_matched(&mut self, ctx: &mut Ctx, waiting: bool, intro: Introduction) -> bool {
        if !waiting {
            ctx.error(ClientError::UnexpectedNotification("MATCHED"));
            return false;
        }
        if let Some(old) = self.matched.take().and_then(|m| m.ticket) {
            self.bury(old);
        }
        let peer = intro.peer.name;
        self.matched = Some(Matched {
            peer,
            ticket: intro.ticket,
            observed: intro.observed,
            behind_router: super::reach::behind_router(intro.peer.ip, intro.observed.ip()),
        });
        ctx.outputs.event(ClientEvent::Matched {
            peer,
            peer_version: match intro.peer_version {
                Version::V1 => 1,
                Version::V2 => 2,
            },
            observed: Some(intro.observed),
        });
        true
    }

    /// UNMATCHED: the match fell through and the server queued us again. Not
    /// waiting any more (the chat started meanwhile), it changes nothing.
    fn on_unmatched(&mut self, ctx: &mut Ctx, waiting: bool, unmatched: Unmatched) {
        if let Some(ticket) = unmatched.ticket {
            self.bury(ticket);
        }
        let ours = self.matched.is_some_and(|m| {
            m.peer.same_as(&unmatched.name)
                && (unmatched.ticket.is_none() || m.ticket == unmatched.ticket)
        });
        if ours {
            self.matched = None;
        }
        if waiting {
            ctx.outputs.event(ClientEvent::Unmatched {
                peer: unmatched.name,
                reason: super::one_line(&unmatched.reason),
                waiting_for: self.waiting_for,
            });
        }
    }
}

impl Client {
    pub(super) fn matched(&mut self, intro: Introduction) {
        let waiting = self.mode == Mode::Wait;
        let (peer, ticket, observed) = (intro.peer.name, intro.ticket, intro.observed);
        if self.matching.on_matched(&mut self.ctx, waiting, intro) {
            match ticket {
                Some(ticket) => self.reach_waiter(peer, ticket, observed),
                None => self.reach.stop_waiter(&mut self.ctx),
            }
            self.decide_parked();
        }
    }

    pub(super) fn unmatched(&mut self, unmatched: Unmatched) {
        let waiting = self.mode == Mode::Wait;
        self.matching
            .on_unmatched(&mut self.ctx, waiting, unmatched);
        if !self.matching.is_matched() {
            self.reach.stop_waiter(&mut self.ctx);
        }
        // A CHAT parked with the ticket that just died is refused now.
        self.decide_parked();
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Instant;

    use super::*;
    use crate::client::ClientConfig;
    use crate::contact::Contact;
    use crate::outputs::OutputQueue;

    fn ctx() -> Ctx {
        let server: SocketAddr = "127.0.0.1:7070".parse().unwrap();
        let config = ClientConfig::new("alice".parse().unwrap(), server);
        Ctx {
            seeds: crate::client::Seeds::new(config.seed),
            config,
            outputs: OutputQueue::default(),
            now: Instant::now(),
            next_id: 0,
            behind_router: false,
        }
    }

    fn intro(peer: &str, ticket: Option<Ticket>) -> Introduction {
        Introduction {
            peer: Contact::new(peer.parse().unwrap(), "127.0.0.9".parse().unwrap(), 9).unwrap(),
            peer_version: if ticket.is_some() {
                Version::V2
            } else {
                Version::V1
            },
            observed: "203.0.113.7:51234".parse().unwrap(),
            ticket,
        }
    }

    fn name(n: &str) -> Name {
        n.parse().unwrap()
    }

    /// The decision in a word, for comparing.
    fn admit(
        ctx: &mut Ctx,
        matching: &Matching,
        who: &str,
        ticket: Option<Ticket>,
        noise: Option<Noise>,
    ) -> &'static str {
        match matching.admit(ctx, name(who), ticket, noise) {
            Admission::Accept {
                unprotected: Some(Unprotected::PeerVersion1),
                ..
            } => "plain v1",
            Admission::Accept { .. } => "plain",
            Admission::Encrypted(..) => "encrypted",
            Admission::Park => "park",
            Admission::Refuse(WRONG_TICKET) => "refuse",
            Admission::Refuse(_) => "refuse, other reason",
        }
    }

    fn hello(ticket: Ticket) -> Noise {
        let (_, first) = secure::Initiator::new(&ticket.to_bytes(), [9; secure::SEED_LEN]);
        Noise(first.try_into().unwrap())
    }

    #[test]
    fn only_a_handshake_under_the_matchs_ticket_gets_in_and_a_dead_one_never_does() {
        let (mut ctx, mut matching) = (ctx(), Matching::default());
        let (t1, t2) = (Ticket::from_bytes([1; 16]), Ticket::from_bytes([2; 16]));
        matching.wait(None);
        assert_eq!(
            admit(&mut ctx, &matching, "bob", None, Some(hello(t1))),
            "park"
        );
        assert!(matching.on_matched(&mut ctx, true, intro("bob", Some(t1))));
        assert_eq!(
            admit(&mut ctx, &matching, "bob", None, Some(hello(t2))),
            "refuse"
        );
        assert_eq!(admit(&mut ctx, &matching, "bob", None, None), "refuse");
        // The ticket in clear is a downgrade: refused.
        assert_eq!(admit(&mut ctx, &matching, "bob", Some(t1), None), "refuse");
        assert_eq!(
            admit(&mut ctx, &matching, "mallory", None, Some(hello(t1))),
            "encrypted"
        );
        let unmatched = Unmatched {
            name: name("bob"),
            ticket: Some(t1),
            reason: "bob left the server".into(),
        };
        matching.on_unmatched(&mut ctx, true, unmatched);
        assert_eq!(admit(&mut ctx, &matching, "bob", Some(t1), None), "refuse");
        assert_eq!(
            admit(&mut ctx, &matching, "bob", None, Some(hello(t2))),
            "park"
        );
    }

    #[test]
    fn a_v1_peer_gets_in_by_its_matched_name_in_any_case() {
        let (mut ctx, mut matching) = (ctx(), Matching::default());
        matching.wait(Some(name("bob")));
        assert!(matching.on_matched(&mut ctx, true, intro("bob", None)));
        assert_eq!(admit(&mut ctx, &matching, "BOB", None, None), "plain v1");
        assert_eq!(admit(&mut ctx, &matching, "carol", None, None), "refuse");
        assert_eq!(matching.waiting_for(), Some(name("bob")));
    }

    #[test]
    fn matched_while_not_waiting_is_an_error_and_changes_nothing() {
        let (mut ctx, mut matching) = (ctx(), Matching::default());
        assert!(!matching.on_matched(&mut ctx, false, intro("bob", None)));
        assert_eq!(admit(&mut ctx, &matching, "bob", None, None), "park");
    }
}
