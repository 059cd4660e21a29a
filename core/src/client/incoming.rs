//! Incoming connections until they are decided: each must send CHAT; a CHAT
//! is accepted (it becomes the chat), refused (409, or 403 for a wrong ticket),
//! or parked while our BRIDGE is in flight or, through a version 2 server,
//! until MATCHED says whom we expect. Everything that moves [`Incoming`] is in
//! this file.
//!
//! ```text
//! accepted ──CHAT, in WAIT MODE (v2: the match's ticket)──▶ decided: the chat (200)
//!    │   ╲──CHAT, BRIDGE in flight──▶ parked ──BRIDGE over──▶ decided
//!    │   ╲──CHAT, v2 and no MATCHED yet──▶ parked ──MATCHED──▶ decided
//!    │   │                                  └──no MATCHED in 10 s──▶ refused (403)
//!    │   ╲──CHAT, v2 and not the match's ticket──▶ refused (403)
//!    │    ╲─CHAT, not waiting──▶ refused (409)
//!    ├──anything else, malformed, or no CHAT in 10 s──▶ refused (4xx and close)
//!    └──closed by the peer, or pushed out as the oldest silent one──▶ gone
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::Instant;

use super::chat::Security;
use super::course_incoming::{CallerDialect, Heard};
use super::matching::Admission;
use super::reach::{same_addr, Origin, Path};
use super::{request_name, Client, Ctx, Mode, Trigger, Unprotected};
use crate::codec::{self, AfterError, Decoder, Noise, Request, Status, Ticket, Version};
use crate::contact::Contact;
use crate::ConnId;

/// Incoming connections that have not yet sent their CHAT, at most.
pub const MAX_INCOMING: usize = 8;

/// A CHAT as it came: the caller's contact and, version 2, its ticket.
#[derive(Debug, Clone, Copy)]
pub(super) struct ChatAsk {
    contact: Contact,
    ticket: Option<Ticket>,
    /// The first handshake message of an encrypted chat.
    noise: Option<Noise>,
    /// A course CHAT: the chat goes on in raw turns.
    course: bool,
}

/// A CHAT waiting to be decided, and the bytes after it.
type Parked = (ChatAsk, Vec<u8>);

/// An accepted connection that has not sent its CHAT yet.
#[derive(Debug)]
struct Caller {
    /// HTTP or the course format, from its first line.
    dialect: CallerDialect,
    decoder: Decoder,
    /// When it must have sent CHAT; once parked, when MATCHED must have come
    /// (`None` while parked for our BRIDGE's answer).
    deadline: Option<Instant>,
    /// A CHAT that arrived while it could not be decided yet.
    parked: Option<Parked>,
    /// Parked for MATCHED at least once: its deadline is that one's.
    awaits_match: bool,
    /// Where it came from, which says the chat's path.
    origin: Origin,
    /// Sent something.
    heard: bool,
}

#[derive(Debug, Default)]
pub(super) struct Incoming {
    callers: BTreeMap<ConnId, Caller>,
}

impl Incoming {
    pub(super) fn owns(&self, conn: ConnId) -> bool {
        self.callers.contains_key(&conn)
    }

    pub(super) fn deadline(&self) -> Option<Instant> {
        self.callers.values().filter_map(|c| c.deadline).min()
    }

    /// A connection accepted on the chat port (or, version 2, one of ours that
    /// reached the peer and now waits for its CHAT the same way).
    pub(super) fn accept(&mut self, ctx: &mut Ctx, conn: ConnId, origin: Origin) {
        if self.callers.len() >= MAX_INCOMING {
            // Full of connections that have not said CHAT: drop the oldest silent one, so
            // strangers idling at our port cannot lock out the peer the server sent us.
            // A CHAT parked for MATCHED goes next: the real peer's CHAT rarely beats
            // MATCHED, so those are most likely strangers.
            // Nothing is owed to a silent stranger: a reset frees its descriptor at once.
            let oldest_silent = self
                .callers
                .iter()
                .find(|(_, caller)| caller.parked.is_none())
                .or_else(|| self.callers.iter().find(|(_, caller)| caller.awaits_match))
                .map(|(id, _)| *id);
            match oldest_silent {
                Some(oldest) => {
                    self.callers.remove(&oldest);
                    ctx.outputs.abort(oldest);
                }
                None => return ctx.outputs.abort(conn),
            }
        }
        self.callers.insert(
            conn,
            Caller {
                dialect: CallerDialect::new(),
                decoder: Decoder::new(ctx.config.limits),
                deadline: Some(ctx.now + ctx.config.request_timeout),
                parked: None,
                awaits_match: false,
                origin,
                heard: false,
            },
        );
    }

    /// The relay's decoder, which may hold what came behind its 200, goes along.
    pub(super) fn keep_decoder(&mut self, conn: ConnId, decoder: Decoder) {
        if let Some(caller) = self.callers.get_mut(&conn) {
            caller.decoder = decoder;
        }
    }

    /// A caller from `remote` that has said nothing yet, taken out (the asker's
    /// reaching claims the waiter's punch that arrived before the pairing).
    pub(super) fn take_silent_from(&mut self, remote: std::net::SocketAddr) -> Option<ConnId> {
        let conn = self
            .callers
            .iter()
            .find(|(_, c)| {
                !c.heard && matches!(c.origin, Origin::Accepted(from) if same_addr(from, remote))
            })
            .map(|(conn, _)| *conn)?;
        self.callers.remove(&conn);
        Some(conn)
    }

    /// Bytes from a caller; returns its CHAT (and the bytes after it) to decide.
    fn receive(&mut self, ctx: &mut Ctx, conn: ConnId, bytes: &[u8]) -> Option<Parked> {
        let limit = ctx.config.limits.max_head + ctx.config.limits.max_body;
        let caller = self.callers.get_mut(&conn)?;
        caller.heard = true;
        if let Some((_, early)) = &mut caller.parked {
            if early.len() + bytes.len() > limit {
                self.refuse(
                    ctx,
                    conn,
                    Status::BAD_REQUEST,
                    &"wait for the answer to CHAT",
                );
            } else {
                early.extend_from_slice(bytes);
            }
            return None;
        }
        let bytes = match caller.dialect.hear(bytes, &ctx.config.limits) {
            Heard::Http(bytes) => bytes,
            Heard::More => return None,
            Heard::Chat(contact, rest) => {
                let ask = ChatAsk {
                    contact,
                    ticket: None,
                    noise: None,
                    course: true,
                };
                return Some((ask, rest));
            }
            Heard::Refused => {
                self.refuse(ctx, conn, Status::BAD_REQUEST, &"not a course CHAT");
                return None;
            }
        };
        let mut input: &[u8] = &bytes;
        match caller.decoder.decode_request(&mut input) {
            Ok(None) => {}
            Ok(Some(Request::Chat(contact, ticket, noise))) => {
                let ask = ChatAsk {
                    contact,
                    ticket,
                    noise,
                    course: false,
                };
                return Some((ask, input.to_vec()));
            }
            Ok(Some(Request::Invalid { error, .. })) => {
                self.refuse(ctx, conn, Status::BAD_REQUEST, &error)
            }
            Ok(Some(Request::Unknown | Request::Page(_))) => {
                self.refuse(ctx, conn, Status::NOT_IMPLEMENTED, &"unknown method")
            }
            Ok(Some(
                request @ (Request::Register(..)
                | Request::Bridge { .. }
                | Request::Unregister
                | Request::Matched(_)
                | Request::Unmatched(_)
                | Request::Started(_)
                | Request::Relay(_)),
            )) => {
                let reason = format!(
                    "{} is a server request, not a peer request",
                    request_name(&request)
                );
                self.refuse(ctx, conn, Status::NOT_IMPLEMENTED, &reason)
            }
            Ok(Some(
                request @ (Request::Message(_) | Request::Quit | Request::QuitWith { .. }),
            )) => {
                let reason = format!("{} before CHAT", request_name(&request));
                self.refuse(ctx, conn, Status::BAD_REQUEST, &reason)
            }
            Err(e) => self.refuse(ctx, conn, e.status, &e.reason),
        }
        None
    }

    /// The server may already have handed us out: decide once BRIDGE is over.
    fn park(&mut self, conn: ConnId, chat: Parked) {
        if let Some(caller) = self.callers.get_mut(&conn) {
            if !caller.awaits_match {
                caller.deadline = None;
            }
            caller.parked = Some(chat);
        }
    }

    /// Version 2, no MATCHED yet: decide when it comes, refuse if it does not in time.
    fn park_for_match(&mut self, ctx: &Ctx, conn: ConnId, chat: Parked) {
        if let Some(caller) = self.callers.get_mut(&conn) {
            if !caller.awaits_match {
                caller.awaits_match = true;
                caller.deadline = Some(ctx.now + ctx.config.request_timeout);
            }
            caller.parked = Some(chat);
        }
    }

    fn parked(&self) -> Vec<ConnId> {
        self.callers
            .iter()
            .filter(|(_, caller)| caller.parked.is_some())
            .map(|(conn, _)| *conn)
            .collect()
    }

    fn unpark(&mut self, conn: ConnId) -> Option<Parked> {
        self.callers.get_mut(&conn)?.parked.take()
    }

    /// The caller becomes the chat: its decoder goes along, it may hold a MESSAGE.
    fn admit(&mut self, conn: ConnId) -> Option<(Decoder, Origin)> {
        self.callers
            .remove(&conn)
            .map(|caller| (caller.decoder, caller.origin))
    }

    fn refuse(&mut self, ctx: &mut Ctx, conn: ConnId, status: Status, reason: &dyn fmt::Display) {
        let Some(caller) = self.callers.remove(&conn) else {
            return;
        };
        // The course format has no error answers: a course caller is just closed.
        if caller.dialect.answers_http() {
            ctx.send(conn, |out| {
                codec::write_error(out, status, reason, AfterError::Close)
            });
        }
        ctx.outputs.close(conn);
    }

    /// A caller silent past `request_timeout` gets 408; a CHAT the server never
    /// introduced (no MATCHED in time) gets 403.
    pub(super) fn expire(&mut self, ctx: &mut Ctx) {
        let now = ctx.now;
        let expired: Vec<(ConnId, bool)> = self
            .callers
            .iter()
            .filter(|(_, caller)| caller.deadline.is_some_and(|d| d <= now))
            .map(|(conn, caller)| (*conn, caller.parked.is_some()))
            .collect();
        let silent = format!("no CHAT within {:?}", ctx.config.request_timeout);
        for (conn, parked) in expired {
            if parked {
                let reason = "the server introduced nobody with this CHAT";
                self.refuse(ctx, conn, Status::FORBIDDEN, &reason);
            } else {
                self.refuse(ctx, conn, Status::REQUEST_TIMEOUT, &silent);
            }
        }
    }

    /// The caller closed the connection.
    pub(super) fn forget(&mut self, conn: ConnId) {
        self.callers.remove(&conn);
    }

    pub(super) fn close_all(&mut self, ctx: &mut Ctx) {
        for conn in std::mem::take(&mut self.callers).into_keys() {
            ctx.outputs.close(conn);
        }
    }
}

impl Client {
    pub(super) fn incoming_data(&mut self, conn: ConnId, bytes: &[u8]) {
        if let Some((chat, rest)) = self.incoming.receive(&mut self.ctx, conn, bytes) {
            self.incoming_chat(conn, chat, rest);
        }
    }

    /// A peer's CHAT: answer 200 and chat if we are waiting (version 2: for this
    /// peer), else 409 (403: a wrong ticket) and close.
    fn incoming_chat(&mut self, conn: ConnId, chat: ChatAsk, rest: Vec<u8>) {
        if self.mode != Mode::Wait && self.server.bridging() {
            return self.incoming.park(conn, (chat, rest));
        }
        // A refusal here is the peer's to read: it gets 409 with the table's reason.
        let next = self.check(Trigger::ChatRequested);
        let (next, me) = match (next, self.server.registered_as()) {
            (Ok(next), Some(me)) => (next, me),
            (Err(reason), _) => {
                return self
                    .incoming
                    .refuse(&mut self.ctx, conn, Status::CONFLICT, &reason)
            }
            (Ok(_), None) => {
                return self.incoming.refuse(
                    &mut self.ctx,
                    conn,
                    Status::CONFLICT,
                    &"not registered",
                )
            }
        };
        let version = self.server.version();
        let (ticket, security) = match version {
            Version::V1 => (
                None,
                Security::Plain(Unprotected::of(&self.ctx, version, None)),
            ),
            Version::V2 => {
                match self
                    .matching
                    .admit(&mut self.ctx, chat.contact.name, chat.ticket, chat.noise)
                {
                    Admission::Accept {
                        ticket,
                        unprotected,
                    } => (ticket, Security::Plain(unprotected)),
                    Admission::Encrypted(ticket, session, reply) => {
                        (Some(ticket), Security::Encrypted(session, reply))
                    }
                    Admission::Park => {
                        return self.incoming.park_for_match(&self.ctx, conn, (chat, rest))
                    }
                    Admission::Refuse(reason) => {
                        return self.incoming.refuse(
                            &mut self.ctx,
                            conn,
                            Status::FORBIDDEN,
                            &reason,
                        )
                    }
                }
            }
        };
        let security = if chat.course {
            Security::Course
        } else {
            security
        };
        if let (true, Some(why)) = (self.ctx.config.require_encryption, security.unprotected()) {
            let reason = format!("this client requires an encrypted chat ({why})");
            return self
                .incoming
                .refuse(&mut self.ctx, conn, Status::FORBIDDEN, &reason);
        }
        let Some((decoder, origin)) = self.incoming.admit(conn) else {
            return;
        };
        let path = match origin.path(self.matching.observed()) {
            Path::HolePunched => self
                .ctx
                .punched_or_direct(self.matching.peer_behind_router()),
            path => path,
        };
        if version == Version::V2 {
            self.matching.started();
            self.server.started(&mut self.ctx, ticket);
        }
        let peer = chat.contact.name;
        self.chat
            .accept(&mut self.ctx, conn, peer, decoder, me, security, path);
        self.set_mode(next);
        // Also when `rest` is empty: the decoder may hold a message that came with the CHAT.
        self.chat_data(&rest);
    }

    /// Decides the CHATs that arrived while BRIDGE was in flight.
    pub(super) fn decide_parked(&mut self) {
        for conn in self.incoming.parked() {
            if let Some((chat, rest)) = self.incoming.unpark(conn) {
                self.incoming_chat(conn, chat, rest);
            }
        }
    }
}
