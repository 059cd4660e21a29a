//! Incoming connections until they are decided: each must send CHAT; a CHAT
//! is accepted (it becomes the chat), refused (409), or parked while our
//! BRIDGE is in flight. Everything that moves [`Incoming`] is in this file.
//!
//! ```text
//! accepted ──CHAT, in WAIT MODE──▶ decided: the chat (200)
//!    │   ╲──CHAT, BRIDGE in flight──▶ parked ──BRIDGE over──▶ decided
//!    │    ╲─CHAT, not waiting──▶ refused (409)
//!    ├──anything else, malformed, or no CHAT in 10 s──▶ refused (4xx and close)
//!    └──closed by the peer, or pushed out as the oldest silent one──▶ gone
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::Instant;

use super::{request_name, Client, Ctx, Mode, Trigger};
use crate::codec::{self, AfterError, Decoder, Request, Status};
use crate::contact::Contact;
use crate::ConnId;

/// Incoming connections that have not yet sent their CHAT, at most.
pub const MAX_INCOMING: usize = 8;

/// An accepted connection that has not sent its CHAT yet.
#[derive(Debug)]
struct Caller {
    decoder: Decoder,
    /// When it must have sent CHAT; `None` once parked.
    deadline: Option<Instant>,
    /// A CHAT that arrived while our BRIDGE was in flight, and the bytes after it.
    parked: Option<(Contact, Vec<u8>)>,
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

    /// A connection accepted on the chat port.
    pub(super) fn accept(&mut self, ctx: &mut Ctx, conn: ConnId) {
        if self.callers.len() >= MAX_INCOMING {
            // Full of connections that have not said CHAT: drop the oldest silent one, so
            // strangers idling at our port cannot lock out the peer the server sent us.
            let oldest_silent = self
                .callers
                .iter()
                .find(|(_, caller)| caller.parked.is_none())
                .map(|(id, _)| *id);
            match oldest_silent {
                Some(oldest) => {
                    self.callers.remove(&oldest);
                    ctx.outputs.close(oldest);
                }
                None => return ctx.outputs.close(conn),
            }
        }
        self.callers.insert(
            conn,
            Caller {
                decoder: Decoder::new(ctx.config.limits),
                deadline: Some(ctx.now + ctx.config.request_timeout),
                parked: None,
            },
        );
    }

    /// Bytes from a caller; returns its CHAT (and the bytes after it) to decide.
    fn receive(&mut self, ctx: &mut Ctx, conn: ConnId, bytes: &[u8]) -> Option<(Contact, Vec<u8>)> {
        let limit = ctx.config.limits.max_head + ctx.config.limits.max_body;
        let caller = self.callers.get_mut(&conn)?;
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
        let mut input = bytes;
        match caller.decoder.decode_request(&mut input) {
            Ok(None) => {}
            Ok(Some(Request::Chat(contact))) => return Some((contact, input.to_vec())),
            Ok(Some(Request::Invalid { error, .. })) => {
                self.refuse(ctx, conn, Status::BAD_REQUEST, &error)
            }
            Ok(Some(Request::Unknown | Request::Page(_))) => {
                self.refuse(ctx, conn, Status::NOT_IMPLEMENTED, &"unknown method")
            }
            Ok(Some(
                request @ (Request::Register(_) | Request::Bridge { .. } | Request::Unregister),
            )) => {
                let reason = format!(
                    "{} is a server request, not a peer request",
                    request_name(&request)
                );
                self.refuse(ctx, conn, Status::NOT_IMPLEMENTED, &reason)
            }
            Ok(Some(request @ (Request::Message(_) | Request::Quit))) => {
                let reason = format!("{} before CHAT", request_name(&request));
                self.refuse(ctx, conn, Status::BAD_REQUEST, &reason)
            }
            Err(e) => self.refuse(ctx, conn, e.status, &e.reason),
        }
        None
    }

    /// The server may already have handed us out: decide once BRIDGE is over.
    fn park(&mut self, conn: ConnId, contact: Contact, rest: Vec<u8>) {
        if let Some(caller) = self.callers.get_mut(&conn) {
            caller.deadline = None;
            caller.parked = Some((contact, rest));
        }
    }

    fn parked(&self) -> Vec<ConnId> {
        self.callers
            .iter()
            .filter(|(_, caller)| caller.parked.is_some())
            .map(|(conn, _)| *conn)
            .collect()
    }

    fn unpark(&mut self, conn: ConnId) -> Option<(Contact, Vec<u8>)> {
        self.callers.get_mut(&conn)?.parked.take()
    }

    /// The caller becomes the chat: its decoder goes along, it may hold a MESSAGE.
    fn admit(&mut self, conn: ConnId) -> Option<Decoder> {
        self.callers.remove(&conn).map(|caller| caller.decoder)
    }

    fn refuse(&mut self, ctx: &mut Ctx, conn: ConnId, status: Status, reason: &dyn fmt::Display) {
        if self.callers.remove(&conn).is_none() {
            return;
        }
        ctx.send(conn, |out| {
            codec::write_error(out, status, reason, AfterError::Close)
        });
        ctx.outputs.close(conn);
    }

    /// A caller silent past `request_timeout` gets 408.
    pub(super) fn expire(&mut self, ctx: &mut Ctx) {
        let now = ctx.now;
        let expired: Vec<ConnId> = self
            .callers
            .iter()
            .filter(|(_, caller)| caller.deadline.is_some_and(|d| d <= now))
            .map(|(conn, _)| *conn)
            .collect();
        let reason = format!("no CHAT within {:?}", ctx.config.request_timeout);
        for conn in expired {
            self.refuse(ctx, conn, Status::REQUEST_TIMEOUT, &reason);
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
        if let Some((contact, rest)) = self.incoming.receive(&mut self.ctx, conn, bytes) {
            self.incoming_chat(conn, contact, rest);
        }
    }

    /// A peer's CHAT: answer 200 and chat if we are waiting, else 409 and close.
    fn incoming_chat(&mut self, conn: ConnId, contact: Contact, rest: Vec<u8>) {
        if self.mode != Mode::Wait && self.server.bridging() {
            return self.incoming.park(conn, contact, rest);
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
        let Some(decoder) = self.incoming.admit(conn) else {
            return;
        };
        self.chat
            .accept(&mut self.ctx, conn, contact.name, decoder, me);
        self.set_mode(next);
        // Also when `rest` is empty: the decoder may hold a message that came with the CHAT.
        self.chat_data(&rest);
    }

    /// Decides the CHATs that arrived while BRIDGE was in flight.
    pub(super) fn decide_parked(&mut self) {
        for conn in self.incoming.parked() {
            if let Some((contact, rest)) = self.incoming.unpark(conn) {
                self.incoming_chat(conn, contact, rest);
            }
        }
    }
}
