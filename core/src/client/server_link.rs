//! The server link: the connection to the rendezvous server, start-up,
//! REGISTER and BRIDGE, the one request in flight, and reconnecting on
//! `/register`. Everything that moves [`ServerLink`] is in this file.
//!
//! ```text
//! link:     Down ──connect──▶ Connecting ──connected──▶ Up
//!            ▲                    │ failed / closed / 5 s     │ closed / malformed answer
//!            └────────────────────┴──────────────────────────┘
//! pending:  Startup ──listener bound and first connect over──▶ none
//!           none ──/register, link Up──▶ Register ──answer / 10 s / link lost──▶ none
//!           none ──/register, link Down──▶ Reconnect ──connected──▶ Register
//!           none ──/bridge──▶ Bridge ──answer / 10 s / link lost──▶ none
//! ```
//!
//! Answers come in the order of the requests (`unanswered`): an answer to a
//! request that timed out is skipped, and so is the one to STARTED. A
//! connect that fails while a person waits on it (Startup, Reconnect) is fatal.
//!
//! Version 2: REGISTER asks for it (`Bridgechat: 2`); an answer that says
//! `Bridgechat: 2` makes this connection v2, and from then on the server may
//! also send notifications (MATCHED, UNMATCHED) between its answers.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::{
    Client, ClientError, ClientEvent, Ctx, Mode, NoContact, Trigger, Unprotected, Unreachable,
};
use crate::codec::{
    self, Decoder, Inbound, Introduction, Request, Response, Ticket, Unmatched, Version,
};
use crate::contact::{Contact, Name};
use crate::{ConnId, IoFailure};

/// The one server request the client waits for; lines typed meanwhile are queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    /// Opening the chat listener and the server connection.
    Startup,
    /// `/register` with the server connection down: reconnecting first.
    Reconnect,
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
            Pending::Startup | Pending::Reconnect => None,
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
}

/// The answer to BRIDGE.
#[derive(Debug)]
pub(super) enum Bridged {
    /// Nobody to meet yet: we wait, for `peer` or for anyone.
    Waiting { peer: Option<Name> },
    /// The waiter to chat with; `ticket` goes in our CHAT.
    Paired {
        contact: Contact,
        ticket: Option<Ticket>,
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
    Registered,
    /// BRIDGE answered: the peer waiting, or none (we wait now).
    Bridged(Bridged),
    /// Version 2: the server handed us (waiting) to a peer.
    Matched(Introduction),
    /// Version 2: our match fell through; the server queued us again.
    Unmatched(Unmatched),
    /// The connection is gone, and the request that waited for it.
    Lost,
    /// Nothing more can be done: exit with this error.
    Fatal(ClientError),
}

impl ServerLink {
    pub(super) fn new() -> ServerLink {
        ServerLink {
            link: Link::Down,
            pending: Some(Pending::Startup),
            unanswered: VecDeque::new(),
            me: None,
        }
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

    pub(super) fn connect(&mut self, ctx: &mut Ctx) {
        let conn = ctx.new_conn();
        self.link = Link::Connecting {
            conn,
            deadline: ctx.now + ctx.config.connect_timeout,
        };
        ctx.outputs.connect(conn, ctx.config.server);
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

    /// `/register`, allowed by the table.
    pub(super) fn register(&mut self, ctx: &mut Ctx, listening: Option<SocketAddr>) {
        match self.link {
            Link::Up { .. } => self.send_register(ctx, listening),
            Link::Down => {
                self.pending = Some(Pending::Reconnect);
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
        let ip = match (ctx.config.advertise_ip, &self.link) {
            (Some(ip), _) => ip,
            (None, Link::Up { local_ip, .. }) => *local_ip,
            (None, _) => return Err(NoContact::NotConnected),
        };
        let port = listening.map_or(0, |a| a.port());
        Contact::new(ctx.config.name, ip, port).map_err(|_| NoContact::NoPort)
    }

    fn send_register(&mut self, ctx: &mut Ctx, listening: Option<SocketAddr>) {
        let contact = match self.own_contact(ctx, listening) {
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
        ctx.send(conn, |out| codec::write_register_as(out, &contact, version));
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
        };
        if self.pending == Some(Pending::Reconnect) {
            self.send_register(ctx, listening);
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
            Link::Up { conn: c, .. } if c == conn => Some(self.gone(ctx, ClientError::ServerLost)),
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

    /// A request unanswered past `request_timeout` is over; its answer will be skipped.
    pub(super) fn request_expired(&mut self, ctx: &mut Ctx) -> Option<ServerNews> {
        let pending = self.pending?;
        match pending.deadline() {
            Some(deadline) if deadline <= ctx.now => {}
            _ => return None,
        }
        let request = match pending {
            Pending::Bridge { .. } => "BRIDGE",
            _ => "REGISTER",
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
                Some(self.gone(ctx, ClientError::ServerMalformed(e)))
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
                    if let (Link::Up { version, .. }, Version::V2) =
                        (&mut self.link, response.version)
                    {
                        *version = Version::V2;
                        ctx.outputs.event(ClientEvent::ServerVersion2 {
                            observed: response.observed,
                        });
                    }
                    ServerNews::Registered
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
                            ticket: response.ticket,
                            unprotected: Unprotected::of(
                                ctx,
                                self.version(),
                                response.ticket.as_ref(),
                            ),
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

    /// Fatal when a person is waiting on it (start-up, or `/register` reconnecting):
    /// the contract makes an unreachable server fatal, and nothing else can be done.
    fn unreachable(&mut self, ctx: &mut Ctx, why: Unreachable) -> ServerNews {
        self.link = Link::Down;
        let error = ClientError::ServerUnreachable {
            server: ctx.config.server,
            why,
        };
        match self.pending {
            Some(Pending::Startup | Pending::Reconnect) => ServerNews::Fatal(error),
            _ => {
                ctx.error(error);
                ServerNews::Quiet
            }
        }
    }

    /// The server connection is gone: whatever waited for it is over.
    fn gone(&mut self, ctx: &mut Ctx, error: ClientError) -> ServerNews {
        self.link = Link::Down;
        self.unanswered.clear();
        ctx.error(error);
        if matches!(
            self.pending,
            Some(Pending::Reconnect | Pending::Register { .. } | Pending::Bridge { .. })
        ) {
            self.pending = None;
        }
        ServerNews::Lost
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

impl Client {
    pub(super) fn command_register(&mut self) {
        if self.allowed(Trigger::RegisterCommand) {
            self.server.register(&mut self.ctx, self.listening);
        }
    }

    pub(super) fn command_bridge(&mut self, peer: Option<Name>) {
        if self.allowed(Trigger::BridgeCommand) {
            self.server.bridge(&mut self.ctx, peer);
        }
    }

    pub(super) fn server_data(&mut self, bytes: &[u8]) {
        let mut input = bytes;
        while !self.exited {
            match self.server.receive(&mut self.ctx, &mut input) {
                Some(news) => self.on_server_news(news),
                None => return,
            }
        }
    }

    pub(super) fn server_timeout(&mut self) {
        if let Some(news) = self.server.connect_expired(&mut self.ctx) {
            self.on_server_news(news);
        }
        if self.exited {
            return;
        }
        if let Some(news) = self.server.request_expired(&mut self.ctx) {
            self.on_server_news(news);
        }
    }

    /// Moves the rest of the client after the server link moved.
    pub(super) fn on_server_news(&mut self, news: ServerNews) {
        match news {
            ServerNews::Quiet => return,
            ServerNews::Fatal(error) => return self.finish(Err(error.into())),
            ServerNews::RequestOver => {}
            ServerNews::Registered => self.enter(Trigger::Registered),
            ServerNews::Bridged(Bridged::Paired {
                contact,
                ticket,
                unprotected,
            }) => {
                self.chat.set_ready_peer(contact, ticket, unprotected);
                self.enter(Trigger::PeerWaiting);
            }
            ServerNews::Bridged(Bridged::Waiting { peer }) => {
                if self.mode != Mode::Write && self.mode != Mode::Read {
                    self.matching.wait(peer);
                }
                self.enter(Trigger::NoPeerWaiting);
            }
            ServerNews::Matched(intro) => return self.matched(intro),
            ServerNews::Unmatched(unmatched) => return self.unmatched(unmatched),
            ServerNews::Lost => self.enter(Trigger::ServerLost),
        }
        // CHATs parked while BRIDGE was in flight are decided now that it is over.
        self.decide_parked();
        self.finish_startup();
        self.pump();
    }
}
