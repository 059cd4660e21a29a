//! Reaching the peer (protocol version 2): the candidate connections between
//! the introduction and the chat's start, for both roles. Everything that
//! moves [`Reach`] is in this file.
//!
//! It applies only when the introduction carries a ticket and the peer's
//! observed address (the asker: the BRIDGE answer; the waiter: MATCHED);
//! otherwise `/chat` connects to the declared contact, as in version 1.
//!
//! ```text
//! asker:  Trying ──first connection up──▶ Up(path)          (the other attempts are closed)
//!           │  attempts: a plain connect to the declared contact; a punch from the
//!           │  chat port to the observed address (again every 250 ms while it fails
//!           │  fast); a connection accepted from the observed address
//!           └──relay_after──▶ Relaying ──200──▶ Up(relayed)
//!                               └──refused / unreachable / silent──▶ Failed
//!         Up ──/chat──▶ Handed (the chat sends CHAT on it)
//!         Up ──closed, or the peer spoke first──▶ Lost ──/chat──▶ Trying
//! waiter: Punching ──punch up──▶ handed to `incoming` as if accepted
//!         any ──RELAY notification with our ticket──▶ Relaying ──200──▶ handed to `incoming`
//! both:   ──chat opens, match ends, mode left──▶ [*]   (attempts closed)
//! ```
//!
//! `/chat` before a path is up is a request in flight: the CHAT goes when the
//! path comes up. If the relay fails too, the `/chat` fails with a clear error.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::{ClientError, Ctx, RelayFailure, Unreachable};

mod news;
use crate::codec::{self, Decoder, Ticket};
use crate::contact::Name;
use crate::ConnId;

/// A punch whose connect failed fast goes again after this.
pub const PUNCH_RETRY: Duration = Duration::from_millis(250);

/// How the chat connection reached the peer; shown when the chat opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// A connect to the declared contact, or an ordinary incoming connection.
    Direct,
    /// A punch from the chat port (ours, or the peer's arriving from its observed address).
    HolePunched,
    /// Through the server's relay.
    Relayed,
}

/// Follows "connected to bob" (each form brings its own leading space or comma).
impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Path::Direct => " directly",
            Path::HolePunched => " directly (hole punched)",
            Path::Relayed => ", relayed through the server (no direct path could be made)",
        })
    }
}

/// Where a connection handed to `incoming` came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// Accepted on the chat port, from this address.
    Accepted(SocketAddr),
    /// Our punch that completed.
    Punch,
    /// Our relay connection, after the server's 200.
    Relay,
}

impl Origin {
    /// The path a chat on this connection took; `observed` is the match's peer's.
    pub(super) fn path(self, observed: Option<SocketAddr>) -> Path {
        match self {
            Origin::Punch => Path::HolePunched,
            Origin::Relay => Path::Relayed,
            Origin::Accepted(remote) if observed.is_some_and(|o| same_addr(o, remote)) => {
                Path::HolePunched
            }
            Origin::Accepted(_) => Path::Direct,
        }
    }
}

/// One address, however written: a dual-stack socket shows an IPv4 peer as
/// `::ffff:a.b.c.d`, the server may show it plainly.
pub(super) fn same_addr(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

/// Whether a router translates for a client: the server sees it (`seen`) at
/// another IP than the one it registered.
pub(super) fn behind_router(registered: IpAddr, seen: IpAddr) -> bool {
    registered.to_canonical() != seen.to_canonical()
}

/// A connect in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    /// To the declared contact, from an ephemeral port.
    Plain,
    /// From the chat port to the peer's observed address.
    Punch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Asker,
    Waiter,
}

/// A connection to the server's relay.
#[derive(Debug)]
struct Relay {
    conn: ConnId,
    /// Sent RELAY: waiting for the 200.
    asked: bool,
    deadline: Instant,
    decoder: Decoder,
}

#[derive(Debug)]
enum Stage {
    /// Direct attempts (asker) or punches (waiter) under way.
    Trying,
    /// Connecting to the relay or waiting for its 200.
    Relaying(Relay),
    /// Asker: the path, waiting for `/chat`.
    Up { conn: ConnId, path: Path },
    /// Asker: the path went to the chat; late punches from the peer are closed.
    Handed,
    /// Asker: the path was lost before `/chat`, which starts again.
    Lost,
    /// Asker: no direct path and no relay; `/chat` fails with this.
    Failed(RelayFailure),
    /// Waiter: a punch or the relay went to `incoming`; nothing left to try.
    Done,
}

/// Reaching one introduced peer.
#[derive(Debug)]
struct Reaching {
    role: Role,
    peer: Name,
    ticket: Ticket,
    /// The peer's server connection as the server sees it.
    observed: SocketAddr,
    /// The asker's view of the waiter's declared contact.
    declared: Option<SocketAddr>,
    /// Our chat port, which punches start from.
    chat_port: u16,
    stage: Stage,
    /// Asker: when to go to the relay; waiter: when to stop punching.
    until: Instant,
    attempts: BTreeMap<ConnId, Attempt>,
    /// A punch failed fast: the next one starts at this time.
    punch_at: Option<Instant>,
    /// Asker: `/chat` was typed and waits for the path.
    chat_wanted: bool,
}

#[derive(Debug, Default)]
pub(super) struct Reach {
    reaching: Option<Reaching>,
}

/// What the rest of the client has to do after reaching moved.
#[derive(Debug)]
pub(super) enum ReachNews {
    Quiet,
    /// Asker: the path is up; it goes to the chat if `/chat` waits.
    PathUp,
    /// Waiter: this connection waits for the asker's CHAT like an accepted one;
    /// a relay's decoder and `rest` hold what came behind its 200.
    Incoming {
        conn: ConnId,
        origin: Origin,
        decoder: Option<Decoder>,
        rest: Vec<u8>,
    },
    /// Asker: neither a direct path nor the relay.
    Failed,
}

impl Reach {
    pub(super) fn owns(&self, conn: ConnId) -> bool {
        self.reaching.as_ref().is_some_and(|r| r.owns(conn))
    }

    /// `/chat` waits for the path: a request in flight.
    pub(super) fn chat_wanted(&self) -> bool {
        self.reaching.as_ref().is_some_and(|r| r.chat_wanted)
    }

    pub(super) fn is_asker(&self) -> bool {
        self.reaching
            .as_ref()
            .is_some_and(|r| r.role == Role::Asker)
    }

    pub(super) fn deadline(&self) -> Option<Instant> {
        let r = self.reaching.as_ref()?;
        let until = match &r.stage {
            Stage::Trying => Some(r.until),
            Stage::Relaying(relay) => Some(relay.deadline),
            _ => None,
        };
        until.into_iter().chain(r.punch_at).min()
    }

    /// The asker was handed the waiter: start the direct attempts at once.
    pub(super) fn start_asker(
        &mut self,
        ctx: &mut Ctx,
        peer: Name,
        ticket: Ticket,
        declared: SocketAddr,
        observed: SocketAddr,
        chat_port: u16,
    ) {
        self.stop(ctx);
        let mut reaching = Reaching::new(Role::Asker, peer, ticket, observed, chat_port, ctx.now);
        reaching.declared = Some(declared);
        reaching.try_direct(ctx);
        self.reaching = Some(reaching);
    }

    /// The waiter was matched: punch towards the asker's observed address.
    pub(super) fn start_waiter(
        &mut self,
        ctx: &mut Ctx,
        peer: Name,
        ticket: Ticket,
        observed: SocketAddr,
        chat_port: u16,
    ) {
        self.stop(ctx);
        let until = ctx.now + ctx.config.request_timeout;
        let mut reaching = Reaching::new(Role::Waiter, peer, ticket, observed, chat_port, until);
        reaching.punch(ctx);
        self.reaching = Some(reaching);
    }

    /// Closes every attempt and forgets the peer.
    pub(super) fn stop(&mut self, ctx: &mut Ctx) {
        if let Some(mut reaching) = self.reaching.take() {
            reaching.close_all(ctx);
        }
    }

    /// The waiter's match is over: its punches and relay stop.
    pub(super) fn stop_waiter(&mut self, ctx: &mut Ctx) {
        if self
            .reaching
            .as_ref()
            .is_some_and(|r| r.role == Role::Waiter)
        {
            self.stop(ctx);
        }
    }

    /// The asker's path, taken for the chat. `Err` holds a failure to report.
    fn take_path(&mut self) -> Option<Result<(ConnId, Path), RelayFailure>> {
        let r = self.reaching.as_mut()?;
        match std::mem::replace(&mut r.stage, Stage::Handed) {
            Stage::Up { conn, path } => {
                r.chat_wanted = false;
                Some(Ok((conn, path)))
            }
            Stage::Failed(why) => {
                r.chat_wanted = false;
                Some(Err(why))
            }
            other => {
                r.stage = other;
                None
            }
        }
    }

    /// A connection accepted on the chat port: the asker takes one from the
    /// waiter's observed address (a punch that reached us) as a candidate, or
    /// closes it once the path is chosen. `None`: not ours, `incoming` decides it.
    fn accepted(&mut self, ctx: &mut Ctx, conn: ConnId, remote: SocketAddr) -> Option<ReachNews> {
        let r = self
            .reaching
            .as_mut()
            .filter(|r| r.role == Role::Asker && same_addr(r.observed, remote))?;
        if matches!(r.stage, Stage::Trying) {
            Some(r.path_up(ctx, conn, Path::HolePunched))
        } else {
            // A late punch: the path is chosen already.
            ctx.outputs.close(conn);
            Some(ReachNews::Quiet)
        }
    }

    fn on_connected(&mut self, ctx: &mut Ctx, conn: ConnId) -> Option<ReachNews> {
        let r = self.reaching.as_mut().filter(|r| r.owns(conn))?;
        if let Stage::Relaying(relay) = &mut r.stage {
            if relay.conn == conn {
                let ticket = r.ticket;
                ctx.send(conn, |out| codec::write_relay(out, &ticket));
                relay.asked = true;
                relay.deadline = ctx.now + ctx.config.request_timeout + ctx.config.connect_timeout;
                return Some(ReachNews::Quiet);
            }
        }
        let attempt = r.attempts.remove(&conn)?;
        let path = match attempt {
            Attempt::Plain => Path::Direct,
            Attempt::Punch => Path::HolePunched,
        };
        Some(match r.role {
            Role::Asker => r.path_up(ctx, conn, path),
            Role::Waiter => {
                r.close_attempts(ctx);
                r.stage = Stage::Done;
                ReachNews::Incoming {
                    conn,
                    origin: Origin::Punch,
                    decoder: None,
                    rest: Vec::new(),
                }
            }
        })
    }

    fn on_connect_failed(
        &mut self,
        ctx: &mut Ctx,
        conn: ConnId,
        why: Unreachable,
    ) -> Option<ReachNews> {
        let r = self.reaching.as_mut().filter(|r| r.owns(conn))?;
        if let Some(attempt) = r.attempts.remove(&conn) {
            if attempt == Attempt::Punch && matches!(r.stage, Stage::Trying) {
                let at = ctx.now + PUNCH_RETRY;
                r.punch_at = (at < r.until).then_some(at);
            }
            return Some(ReachNews::Quiet);
        }
        Some(r.relay_failed(ctx, RelayFailure::Unreachable(why), false))
    }

    fn on_closed(&mut self, ctx: &mut Ctx, conn: ConnId) -> Option<ReachNews> {
        let r = self.reaching.as_mut().filter(|r| r.owns(conn))?;
        if r.attempts.remove(&conn).is_some() {
            return Some(ReachNews::Quiet);
        }
        match &r.stage {
            Stage::Up { .. } => {
                r.stage = Stage::Lost;
                Some(ReachNews::Quiet)
            }
            Stage::Relaying(relay) if relay.asked => {
                Some(r.relay_failed(ctx, RelayFailure::Closed, false))
            }
            _ => Some(r.relay_failed(ctx, RelayFailure::Unreachable(Unreachable::Closed), false)),
        }
    }

    fn on_data(&mut self, ctx: &mut Ctx, conn: ConnId, bytes: &[u8]) -> Option<ReachNews> {
        let r = self.reaching.as_mut().filter(|r| r.owns(conn))?;
        match &mut r.stage {
            // The waiter never speaks first: this is no peer of ours.
            Stage::Up { conn, .. } => {
                ctx.outputs.close(*conn);
                r.stage = Stage::Lost;
                Some(ReachNews::Quiet)
            }
            Stage::Relaying(relay) => {
                let mut input = bytes;
                match relay.decoder.decode_response(&mut input) {
                    Ok(None) => Some(ReachNews::Quiet),
                    Ok(Some(answer)) if answer.status.is_success() => {
                        let conn = relay.conn;
                        let rest = input.to_vec();
                        let spoke = !rest.is_empty() || relay.decoder.is_mid_message();
                        Some(
                            match (r.role, std::mem::replace(&mut r.stage, Stage::Done)) {
                                (Role::Asker, _) if !spoke => r.path_up(ctx, conn, Path::Relayed),
                                // The waiter never speaks first.
                                (Role::Asker, _) => {
                                    ctx.outputs.close(conn);
                                    r.stage = Stage::Lost;
                                    ReachNews::Quiet
                                }
                                (Role::Waiter, Stage::Relaying(relay)) => ReachNews::Incoming {
                                    conn,
                                    origin: Origin::Relay,
                                    decoder: Some(relay.decoder),
                                    rest,
                                },
                                (Role::Waiter, _) => ReachNews::Quiet,
                            },
                        )
                    }
                    Ok(Some(answer)) => {
                        let why = RelayFailure::Refused {
                            status: answer.status,
                            reason: super::one_line(&answer.reason_text()),
                        };
                        Some(r.relay_failed(ctx, why, true))
                    }
                    Err(_) => Some(r.relay_failed(ctx, RelayFailure::Closed, true)),
                }
            }
            _ => None,
        }
    }

    fn expired(&mut self, ctx: &mut Ctx) -> ReachNews {
        let Some(r) = self.reaching.as_mut() else {
            return ReachNews::Quiet;
        };
        // A retry due with the deadline is not started only to be closed.
        let over = matches!(r.stage, Stage::Trying) && r.until <= ctx.now;
        if !over && r.punch_at.is_some_and(|at| at <= ctx.now) {
            r.punch_at = None;
            r.punch(ctx);
        }
        match &r.stage {
            Stage::Trying if r.until <= ctx.now => match r.role {
                Role::Asker => {
                    r.close_attempts(ctx);
                    r.join_relay(ctx);
                    ReachNews::Quiet
                }
                Role::Waiter => {
                    r.close_attempts(ctx);
                    r.stage = Stage::Done;
                    ReachNews::Quiet
                }
            },
            Stage::Relaying(relay) if relay.deadline <= ctx.now => {
                let why = if relay.asked {
                    RelayFailure::Silent(ctx.config.request_timeout + ctx.config.connect_timeout)
                } else {
                    RelayFailure::Unreachable(Unreachable::Timeout(ctx.config.connect_timeout))
                };
                r.relay_failed(ctx, why, true)
            }
            _ => ReachNews::Quiet,
        }
    }

    /// The server says the asker waits at its relay: the waiter joins it, if
    /// the ticket is its live match's.
    fn relay_notified(&mut self, ctx: &mut Ctx, ticket: Ticket) -> bool {
        let Some(r) = self
            .reaching
            .as_mut()
            .filter(|r| r.role == Role::Waiter && r.ticket == ticket)
        else {
            return false;
        };
        if !matches!(r.stage, Stage::Relaying(_)) {
            r.close_attempts(ctx);
            r.join_relay(ctx);
        }
        true
    }
}

impl Reaching {
    fn new(
        role: Role,
        peer: Name,
        ticket: Ticket,
        observed: SocketAddr,
        chat_port: u16,
        until: Instant,
    ) -> Reaching {
        Reaching {
            role,
            peer,
            ticket,
            observed,
            declared: None,
            chat_port,
            stage: Stage::Trying,
            until,
            attempts: BTreeMap::new(),
            punch_at: None,
            chat_wanted: false,
        }
    }

    fn owns(&self, conn: ConnId) -> bool {
        self.attempts.contains_key(&conn)
            || match &self.stage {
                Stage::Relaying(relay) => relay.conn == conn,
                Stage::Up { conn: c, .. } => *c == conn,
                _ => false,
            }
    }

    /// Asker: the plain connect and the punch, with the relay deadline.
    fn try_direct(&mut self, ctx: &mut Ctx) {
        self.stage = Stage::Trying;
        self.until = ctx.now + ctx.config.relay_after;
        if let Some(declared) = self.declared {
            let conn = ctx.new_conn();
            self.attempts.insert(conn, Attempt::Plain);
            ctx.outputs.connect(conn, declared, None);
        }
        if !self.declared.is_some_and(|d| same_addr(d, self.observed)) {
            self.punch(ctx);
        }
    }

    /// A connect from the chat port to the peer's observed address.
    fn punch(&mut self, ctx: &mut Ctx) {
        if !matches!(self.stage, Stage::Trying) {
            return;
        }
        let conn = ctx.new_conn();
        self.attempts.insert(conn, Attempt::Punch);
        ctx.outputs
            .connect(conn, self.observed, Some(self.chat_port));
    }

    /// Asker: `conn` is the path; every other attempt is closed.
    fn path_up(&mut self, ctx: &mut Ctx, conn: ConnId, path: Path) -> ReachNews {
        let peer_behind_router = self
            .declared
            .is_some_and(|d| behind_router(d.ip(), self.observed.ip()));
        let path = match path {
            Path::HolePunched => ctx.punched_or_direct(peer_behind_router),
            path => path,
        };
        self.attempts.remove(&conn);
        self.close_attempts(ctx);
        if let Stage::Relaying(relay) = &self.stage {
            if relay.conn != conn {
                ctx.outputs.close(relay.conn);
            }
        }
        self.stage = Stage::Up { conn, path };
        ReachNews::PathUp
    }

    fn join_relay(&mut self, ctx: &mut Ctx) {
        let conn = ctx.new_conn();
        self.stage = Stage::Relaying(Relay {
            conn,
            asked: false,
            deadline: ctx.now + ctx.config.connect_timeout,
            decoder: Decoder::new(ctx.config.limits),
        });
        ctx.outputs.connect(conn, ctx.config.server, None);
    }

    /// The relay did not work out: the asker has no way left; the waiter says so and
    /// keeps waiting for a CHAT on its chat port.
    fn relay_failed(&mut self, ctx: &mut Ctx, why: RelayFailure, close: bool) -> ReachNews {
        if let Stage::Relaying(relay) = &self.stage {
            if close {
                ctx.outputs.close(relay.conn);
            }
        }
        match self.role {
            Role::Asker => {
                self.stage = Stage::Failed(why);
                ReachNews::Failed
            }
            Role::Waiter => {
                self.stage = Stage::Done;
                ctx.error(ClientError::RelayFailed {
                    peer: self.peer,
                    why,
                });
                ReachNews::Quiet
            }
        }
    }

    fn close_attempts(&mut self, ctx: &mut Ctx) {
        for conn in std::mem::take(&mut self.attempts).into_keys() {
            ctx.outputs.close(conn);
        }
        self.punch_at = None;
    }

    fn close_all(&mut self, ctx: &mut Ctx) {
        self.close_attempts(ctx);
        match &self.stage {
            Stage::Relaying(relay) => ctx.outputs.close(relay.conn),
            Stage::Up { conn, .. } => ctx.outputs.close(*conn),
            _ => {}
        }
        self.stage = Stage::Done;
    }
}

#[cfg(test)]
mod tests;
