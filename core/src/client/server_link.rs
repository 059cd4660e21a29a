//! The server link: the connection to the rendezvous server, start-up,
//! REGISTER and BRIDGE, the one request in flight, and reconnecting on
//! `/register`. Everything that moves [`ServerLink`] is in this file.
//!
//! ```text
//! link:     Down ──connect──▶ Connecting ──connected──▶ Up
//!            ▲                    │ failed / closed / 5 s     │ closed / malformed answer
//!            └────────────────────┴──────────────────────────┘
//! pending:  Startup ──listener bound and first connect over──▶ none
//!           none ──/register or /name, link Up──▶ Register ──answer / 10 s / link lost──▶ none
//!           none ──/register or /name, link Down──▶ Reconnect ──connected──▶ Register
//!           Reconnect ──attempt failed──▶ Reconnect (after a backoff) or none (gave up)
//!           none ──/bridge──▶ Bridge ──answer / 10 s / link lost──▶ none
//! ```
//!
//! Answers come in the order of the requests (`unanswered`): an answer to a
//! request that timed out is skipped, and so is the one to STARTED. Only the
//! first connect (Startup) is fatal when it fails: the contract makes an
//! unreachable server at start fatal. Reconnecting tries [`RECONNECT_ATTEMPTS`]
//! times, waiting [`RECONNECT_BACKOFF`], then twice as long each time, within
//! [`RECONNECT_WINDOW`], and then gives up with an error; the person may try again.
//!
//! Version 2: REGISTER asks for it (`Bridgechat: 2`); an answer that says
//! `Bridgechat: 2` makes this connection v2, and from then on the server may
//! also send notifications (MATCHED, UNMATCHED) between its answers.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::{ClientError, ClientEvent, Ctx, NoContact, Reconnecting, Unprotected, Unreachable};
use crate::codec::{
    self, Decoder, Inbound, Introduction, Request, Response, Status, Ticket, Unmatched, Version,
};
use crate::contact::{Contact, Name};
use crate::{ConnId, IoFailure};

mod course;
use course::CourseLink;

/// How many connects `/register` tries before giving up.
pub const RECONNECT_ATTEMPTS: u32 = 5;
/// The wait before the second attempt; it doubles for each one after.
pub const RECONNECT_BACKOFF: Duration = Duration::from_millis(500);
/// No attempt starts later than this after the first one.
pub const RECONNECT_WINDOW: Duration = Duration::from_secs(30);

/// The one server request the client waits for; lines typed meanwhile are queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    /// Opening the chat listener and the server connection.
    Startup,
    /// `/register` (or `/name`) with the server connection down: reconnecting
    /// first, then REGISTER as `name`.
    Reconnect {
        name: Name,
        /// The attempt in progress or next, from 1.
        attempt: u32,
        started: Instant,
        /// Waiting to start `attempt` at this time (the link is down meanwhile).
        retry_at: Option<Instant>,
    },
    /// REGISTER sent with this contact.
    Register { contact: Contact, deadline: Instant },
    Bridge {
        deadline: Instant,
        /// Whom `/bridge NAME` asked for.
        peer: Option<Name>,
    },
}

impl Pending {
    fn deadline(&self) -> Option<Instant> {
        match self {
            Pending::Startup => None,
            Pending::Reconnect { retry_at, .. } => *retry_at,
            Pending::Register { deadline, .. } | Pending::Bridge { deadline, .. } => {
                Some(*deadline)
            }
        }
    }
}

#[derive(Debug)]
enum Link {
    Down,
    Connecting {
        conn: ConnId,
        deadline: Instant,
    },
    Up {
        conn: ConnId,
        decoder: Decoder,
        local_ip: IpAddr,
        /// V2 once the server's REGISTER answer said so.
        version: Version,
        /// `--legacy`: the server speaks the course format.
        course: Option<CourseLink>,
    },
}

/// A request sent on the server connection and not answered yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// The one in `pending`.
    Pending,
    /// It timed out: its answer, if it comes, is skipped.
    TimedOut,
    /// STARTED: nobody waits for its answer.
    Started,
}

#[derive(Debug)]
pub(super) struct ServerLink {
    link: Link,
    pending: Option<Pending>,
    /// Requests sent and not answered yet, oldest first: answers come in this order.
    unanswered: VecDeque<Sent>,
    /// What the server last accepted in REGISTER; we send it in CHAT and its answer.
    me: Option<Contact>,
    /// Our name: the configured one until the server accepts another (`/name`).
    name: Name,
    /// The chat port, which the server connection starts from (so the server
    /// observes the port punches come from); `None` until it is bound.
    chat_port: Option<u16>,
    /// The last connect from the chat port failed (the old connection's
    /// addresses may still be taken): the next one starts from any port.
    from_any_port: bool,
    /// The connection in progress started from the chat port.
    connecting_from_chat_port: bool,
}

/// The answer to BRIDGE.
#[derive(Debug)]
pub(super) enum Bridged {
    /// Nobody to meet yet: we wait, for `peer` or for anyone.
    Waiting { peer: Option<Name> },
    /// The waiter to chat with; `ticket` goes in our CHAT; `observed` is where the
    /// server sees the waiter's server connection (version 2).
    Paired {
        contact: Contact,
        /// The peer speaks the course format (`Dialect: course`, or `--legacy`).
        course: bool,
        ticket: Option<Ticket>,
        observed: Option<SocketAddr>,
        unprotected: Option<Unprotected>,
    },
}

/// What the rest of the client has to do after the link moved.
#[derive(Debug)]
pub(super) enum ServerNews {
    /// Nothing (an error may have been shown).
    Quiet,
    /// The request is over and the mode stays: refused or timed out.
    RequestOver,
    /// REGISTER answered 200; `renamed` if under another name than before.
    Registered { renamed: bool },
    /// BRIDGE answered: the peer waiting, or none (we wait now).
    Bridged(Bridged),
    /// Version 2: the server handed us (waiting) to a peer.
    Matched(Introduction),
    /// Version 2: our match fell through; the server queued us again.
    Unmatched(Unmatched),
    /// Version 2: the peer of the match with this ticket waits at the server's relay.
    Relay(Ticket),
    /// The connection is gone, and the request that waited for it; `malformed`
    /// if the server sent bytes that are no answer.
    Lost {
        malformed: Option<crate::DecodeError>,
    },
    /// Nothing more can be done: exit with this error.
    Fatal(ClientError),
}

impl ServerLink {
    pub(super) fn new(name: Name) -> ServerLink {
        ServerLink {
            link: Link::Down,
            pending: Some(Pending::Startup),
            unanswered: VecDeque::new(),
            me: None,
            name,
            chat_port: None,
            from_any_port: false,
            connecting_from_chat_port: false,
        }
    }

    pub(super) fn name(&self) -> Name {
        self.name
    }

    pub(super) fn conn(&self) -> Option<ConnId> {
        match self.link {
            Link::Down => None,
            Link::Connecting { conn, .. } | Link::Up { conn, .. } => Some(conn),
        }
    }

    pub(super) fn is_up(&self) -> bool {
        matches!(self.link, Link::Up { .. })
    }

    /// The protocol this server connection speaks (V1 until REGISTER says otherwise).
    pub(super) fn version(&self) -> Version {
        match self.link {
            Link::Up { version, .. } => version,
            _ => Version::V1,
        }
    }

    /// A request (or start-up) is in flight.
    pub(super) fn busy(&self) -> bool {
        self.pending.is_some()
    }

    pub(super) fn bridging(&self) -> bool {
        matches!(self.pending, Some(Pending::Bridge { .. }))
    }

    /// Our contact as the server accepted it, else as we would register it now.
    pub(super) fn me(
        &self,
        ctx: &Ctx,
        listening: Option<SocketAddr>,
    ) -> Result<Contact, NoContact> {
        self.me.map_or_else(|| self.own_contact(ctx, listening), Ok)
    }

    /// The contact the server accepted; `None` before the first 200 to REGISTER.
    pub(super) fn registered_as(&self) -> Option<Contact> {
        self.me
    }

    pub(super) fn deadline(&self) -> Option<Instant> {
        let connect = match self.link {
            Link::Connecting { deadline, .. } => Some(deadline),
            _ => None,
        };
        let request = self.pending.and_then(|p| p.deadline());
        connect.into_iter().chain(request).min()
    }

    /// The chat listener is bound: the first connect to the server starts from its port.
    pub(super) fn start(&mut self, ctx: &mut Ctx, chat_port: u16) {
        self.chat_port = Some(chat_port);
        self.connect(ctx);
    }

    pub(super) fn connect(&mut self, ctx: &mut Ctx) {
        let conn = ctx.new_conn();
        self.link = Link::Connecting {
            conn,
            deadline: ctx.now + ctx.config.connect_timeout,
        };
        let from = self.chat_port.filter(|_| !self.from_any_port);
        self.connecting_from_chat_port = from.is_some();
        ctx.outputs.connect(conn, ctx.config.server, from);
    }

    /// Start-up is over once the listener is bound and the first connect has finished.
    pub(super) fn finish_startup(&mut self, listening: bool) -> bool {
        let over = self.pending == Some(Pending::Startup)
            && listening
            && !matches!(self.link, Link::Connecting { .. });
        if over {
            self.pending = None;
        }
        over
    }

    /// `/register` (as our name) or `/name` (as `name`), allowed by the table.
    pub(super) fn register(&mut self, ctx: &mut Ctx, listening: Option<SocketAddr>, name: Name) {
        match self.link {
            Link::Up { .. } => self.send_register(ctx, listening, name),
            Link::Down => {
                self.pending = Some(Pending::Reconnect {
                    name,
                    attempt: 1,
                    started: ctx.now,
                    retry_at: None,
                });
                ctx.outputs.event(ClientEvent::Reconnecting(Reconnecting {
                    server: ctx.config.server,
                    attempt: 1,
                    attempts: RECONNECT_ATTEMPTS,
                    after: None,
                }));
                self.connect(ctx);
            }
            // Start-up holds every line until the first connect has finished.
            Link::Connecting { .. } => {}
        }
    }

    /// `/bridge` (or `/bridge NAME`, `peer`), allowed by the table.
    pub(super) fn bridge(&mut self, ctx: &mut Ctx, peer: Option<Name>) {
        let Some(conn) = self.conn() else {
            return ctx.error(ClientError::NotConnected);
        };
        if ctx.config.legacy {
            return self.bridge_course(ctx, conn, peer);
        }
        if peer.is_some() && self.version() != Version::V2 {
            return ctx.error(ClientError::NamedBridgeNeedsVersion2);
        }
        ctx.send(conn, |out| {
            codec::write_bridge_for(out, None, peer.as_ref())
        });
        self.sent(Pending::Bridge {
            deadline: ctx.now + ctx.config.request_timeout,
            peer,
        });
    }

    fn sent(&mut self, pending: Pending) {
        self.pending = Some(pending);
        self.unanswered.push_back(Sent::Pending);
    }

    /// Version 2: the waiter tells the server the chat with its match started.
    pub(super) fn started(&mut self, ctx: &mut Ctx, ticket: Option<Ticket>) {
        let Some(conn) = self.conn().filter(|_| self.version() == Version::V2) else {
            return;
        };
        ctx.send(conn, |out| codec::write_started(out, ticket.as_ref()));
        self.unanswered.push_back(Sent::Started);
    }

    /// The contact to register: our name, the advertised or local IP, the bound port.
    fn own_contact(&self, ctx: &Ctx, listening: Option<SocketAddr>) -> Result<Contact, NoContact> {
        self.contact_as(ctx, listening, self.name)
    }

    fn contact_as(
        &self,
        ctx: &Ctx,
        listening: Option<SocketAddr>,
        name: Name,
    ) -> Result<Contact, NoContact> {
        let ip = match (ctx.config.advertise_ip, &self.link) {
            (Some(ip), _) => ip,
            (None, Link::Up { local_ip, .. }) => *local_ip,
            (None, _) => return Err(NoContact::NotConnected),
        };
        let port = listening.map_or(0, |a| a.port());
        Contact::new(name, ip, port).map_err(|_| NoContact::NoPort)
    }

    fn send_register(&mut self, ctx: &mut Ctx, listening: Option<SocketAddr>, name: Name) {
        let contact = match self.contact_as(ctx, listening, name) {
            Ok(contact) => contact,
            Err(reason) => return ctx.error(ClientError::CannotRegister(reason)),
        };
        let Some(conn) = self.conn() else {
            return;
        };
        let version = if ctx.config.version2 {
            Version::V2
        } else {
            Version::V1
        };
        let legacy = ctx.config.legacy;
        ctx.send(conn, |out| match legacy {
            true => crate::course::write_register(out, &contact),
            false => codec::write_register_as(out, &contact, version),
        });
        self.sent(Pending::Register {
            contact,
            deadline: ctx.now + ctx.config.request_timeout,
        });
    }

    /// `conn` is established; false if it is not the server connection.
    pub(super) fn on_connected(
        &mut self,
        ctx: &mut Ctx,
        conn: ConnId,
        local: SocketAddr,
        listening: Option<SocketAddr>,
    ) -> bool {
        if !matches!(self.link, Link::Connecting { conn: c, .. } if c == conn) {
            return false;
        }
        self.link = Link::Up {
            conn,
            decoder: Decoder::new(ctx.config.limits),
            local_ip: local.ip(),
            version: Version::V1,
            course: ctx
                .config
                .legacy
                .then(|| CourseLink::new(ctx.config.limits)),
        };
        self.from_any_port = false;
        if let Some(Pending::Reconnect { name, .. }) = self.pending {
            self.pending = None;
            self.send_register(ctx, listening, name);
        }
        true
    }

    pub(super) fn on_connect_failed(
        &mut self,
        ctx: &mut Ctx,
        conn: ConnId,
        error: IoFailure,
    ) -> Option<ServerNews> {
        if !matches!(self.link, Link::Connecting { conn: c, .. } if c == conn) {
            return None;
        }
        Some(self.unreachable(ctx, Unreachable::Failed(error)))
    }

    pub(super) fn on_closed(&mut self, ctx: &mut Ctx, conn: ConnId) -> Option<ServerNews> {
        match self.link {
            Link::Up { conn: c, .. } if c == conn => Some(self.gone(None)),
            Link::Connecting { conn: c, .. } if c == conn => {
                Some(self.unreachable(ctx, Unreachable::Closed))
            }
            _ => None,
        }
    }

    /// A connect that hangs past `connect_timeout` is closed and fails.
    pub(super) fn connect_expired(&mut self, ctx: &mut Ctx) -> Option<ServerNews> {
        let Link::Connecting { conn, deadline } = self.link else {
            return None;
        };
        if deadline > ctx.now {
            return None;
        }
        ctx.outputs.close(conn);
        let after = ctx.config.connect_timeout;
        Some(self.unreachable(ctx, Unreachable::Timeout(after)))
    }

    /// The backoff before the next reconnect attempt is over: connect again.
    pub(super) fn retry_due(&mut self, ctx: &mut Ctx) {
        let Some(Pending::Reconnect { retry_at, .. }) = &mut self.pending else {
            return;
        };
        if retry_at.is_some_and(|at| at <= ctx.now) {
            *retry_at = None;
        } else {
            return;
        }
        self.connect(ctx);
    }

    /// A request unanswered past `request_timeout` is over; its answer will be skipped.
    pub(super) fn request_expired(&mut self, ctx: &mut Ctx) -> Option<ServerNews> {
        let request = match self.pending? {
            Pending::Bridge { deadline, .. } if deadline <= ctx.now => "BRIDGE",
            Pending::Register { deadline, .. } if deadline <= ctx.now => "REGISTER",
            _ => return None,
        };
        self.pending = None;
        if let Some(sent) = self.unanswered.iter_mut().find(|s| **s == Sent::Pending) {
            *sent = Sent::TimedOut;
        }
        ctx.error(ClientError::ServerSilent {
            request,
            after: ctx.config.request_timeout,
        });
        Some(ServerNews::RequestOver)
    }

    /// Decodes the next answer (or, on a v2 connection, notification) from `input`;
    /// `None` when more bytes are needed.
    pub(super) fn receive(&mut self, ctx: &mut Ctx, input: &mut &[u8]) -> Option<ServerNews> {
        if let Link::Up {
            course: Some(_), ..
        } = self.link
        {
            return self.receive_course(ctx, input);
        }
        let Link::Up {
            conn,
            decoder,
            version,
            ..
        } = &mut self.link
        else {
            return None;
        };
        let decoded = match version {
            Version::V1 => decoder
                .decode_response(input)
                .map(|r| r.map(Inbound::Response)),
            Version::V2 => decoder.decode_message(input),
        };
        match decoded {
            Ok(Some(Inbound::Response(response))) => Some(self.answer(ctx, response)),
            Ok(Some(Inbound::Request(request))) => Some(notification(ctx, request)),
            Ok(None) => None,
            Err(e) => {
                ctx.outputs.close(*conn);
                Some(self.gone(Some(e)))
            }
        }
    }

    fn answer(&mut self, ctx: &mut Ctx, response: Response) -> ServerNews {
        match self.unanswered.pop_front() {
            Some(Sent::TimedOut) => return ServerNews::Quiet,
            Some(Sent::Started) => {
                if !response.status.is_success() {
                    refused(ctx, &response);
                }
                return ServerNews::Quiet;
            }
            Some(Sent::Pending) | None => {}
        }
        match self.pending {
            Some(Pending::Register { contact, .. }) => {
                self.pending = None;
                if response.status.is_success() {
                    self.me = Some(contact);
                    ctx.behind_router = response
                        .observed
                        .is_some_and(|seen| super::reach::behind_router(contact.ip, seen.ip()));
                    if let (Link::Up { version, .. }, Version::V2) =
                        (&mut self.link, response.version)
                    {
                        if *version != Version::V2 {
                            *version = Version::V2;
                            ctx.outputs.event(ClientEvent::ServerVersion2 {
                                observed: response.observed,
                            });
                        }
                    }
                    let renamed = contact.name != self.name;
                    self.name = contact.name;
                    ServerNews::Registered { renamed }
                } else if response.status == Status::CONFLICT {
                    // The status is in `--trace`; the person needs a way out.
                    ctx.error(ClientError::NameTaken(contact.name));
                    ServerNews::RequestOver
                } else {
                    refused(ctx, &response);
                    ServerNews::RequestOver
                }
            }
            Some(Pending::Bridge { peer, .. }) => {
                self.pending = None;
                if response.status.is_success() {
                    ServerNews::Bridged(match response.contact {
                        None => Bridged::Waiting { peer },
                        Some(contact) => Bridged::Paired {
                            contact,
                            course: response.course_peer,
                            ticket: response.ticket,
                            observed: response.observed,
                            unprotected: if response.course_peer {
                                Some(Unprotected::course(ctx))
                            } else {
                                Unprotected::of(ctx, self.version(), response.ticket.as_ref())
                            },
                        },
                    })
                } else {
                    refused(ctx, &response);
                    ServerNews::RequestOver
                }
            }
            _ => {
                ctx.error(ClientError::UnexpectedAnswer(response.status));
                ServerNews::Quiet
            }
        }
    }

    /// A connect failed. Fatal at start-up (the contract makes an unreachable
    /// server at start fatal); reconnecting tries again after a backoff, or gives up.
    fn unreachable(&mut self, ctx: &mut Ctx, why: Unreachable) -> ServerNews {
        self.link = Link::Down;
        self.from_any_port = self.connecting_from_chat_port;
        let server = ctx.config.server;
        match &mut self.pending {
            Some(Pending::Startup) => {
                ServerNews::Fatal(ClientError::ServerUnreachable { server, why })
            }
            Some(Pending::Reconnect {
                attempt,
                started,
                retry_at,
                ..
            }) => {
                let delay = RECONNECT_BACKOFF * 2u32.pow(*attempt - 1);
                let at = ctx.now + delay;
                if *attempt >= RECONNECT_ATTEMPTS || at > *started + RECONNECT_WINDOW {
                    let attempts = *attempt;
                    self.pending = None;
                    ctx.error(ClientError::ReconnectFailed {
                        server,
                        attempts,
                        why,
                    });
                    return ServerNews::RequestOver;
                }
                *attempt += 1;
                *retry_at = Some(at);
                let attempt = *attempt;
                ctx.outputs.event(ClientEvent::Reconnecting(Reconnecting {
                    server,
                    attempt,
                    attempts: RECONNECT_ATTEMPTS,
                    after: Some((why, delay)),
                }));
                ServerNews::Quiet
            }
            _ => {
                ctx.error(ClientError::ServerUnreachable { server, why });
                ServerNews::Quiet
            }
        }
    }

    /// The server connection is gone: whatever waited for it is over. The
    /// client says so, knowing whether a chat goes on.
    fn gone(&mut self, malformed: Option<crate::DecodeError>) -> ServerNews {
        self.link = Link::Down;
        self.unanswered.clear();
        if matches!(
            self.pending,
            Some(Pending::Reconnect { .. } | Pending::Register { .. } | Pending::Bridge { .. })
        ) {
            self.pending = None;
        }
        ServerNews::Lost { malformed }
    }

    /// Exiting: close the connection, forget the request.
    pub(super) fn close(&mut self, ctx: &mut Ctx) {
        if let Some(conn) = self.conn() {
            ctx.outputs.close(conn);
        }
        self.link = Link::Down;
        self.pending = None;
    }
}

/// A request the server sent on a v2 connection: only notifications are expected.
fn notification(ctx: &mut Ctx, request: Request) -> ServerNews {
    match request {
        Request::Matched(intro) => ServerNews::Matched(intro),
        Request::Unmatched(unmatched) => ServerNews::Unmatched(unmatched),
        Request::Relay(ticket) => ServerNews::Relay(ticket),
        other => {
            ctx.error(ClientError::UnexpectedNotification(super::request_name(
                &other,
            )));
            ServerNews::Quiet
        }
    }
}

fn refused(ctx: &mut Ctx, response: &Response) {
    ctx.error(ClientError::ServerRefused {
        status: response.status,
        reason: super::one_line(&response.reason_text()),
    });
}
