//! The chat: the READY peer, our `/chat` (connect, CHAT, its answer), a chat
//! accepted from an incoming connection, the turns, held messages and QUIT.
//! Everything that moves [`Chat`] is in this file.
//!
//! ```text
//! none ──/chat──▶ Connecting ──connected, CHAT sent──▶ Asked ──200──▶ Open
//!   ▲                 │ failed / closed / 5 s            │ non-2xx / malformed / closed / 10 s
//!   ├─────────────────┴──────────────────────────────────┘  (an Error; REGISTERED)
//! none ──a peer's CHAT accepted (see `incoming`)──────────────────────▶ Open
//! Open ──QUIT either way, closed, protocol error──▶ none
//! ```
//!
//! In Open the turn is the mode: WRITE MODE sends one MESSAGE and moves to
//! READ MODE; the peer's MESSAGE moves READ MODE to WRITE MODE, and one out of
//! turn ends the chat. Lines typed while it is not our turn are held, and the
//! oldest goes out as soon as WRITE MODE is entered.
//!
//! Version 2: the BRIDGE answer's ticket keys a Noise handshake: our CHAT
//! carries its first message (`Noise`, never the ticket), the 200 its reply,
//! and from then on every MESSAGE and QUIT body is a sealed frame
//! ([`crate::secure`]). Without a ticket (a v1 server or a v1 waiter) the CHAT
//! is version 1's and the chat is shown as not encrypted when it opens.
//!
//! ```text
//! Asked(Initiator) ──200 whose Noise verifies──▶ Open(Session): safety code shown
//!        └──no Noise / does not verify──▶ none (encryption handshake failed)
//! Open(Session) ──a frame that does not open──▶ plain QUIT with Reason, close, none
//! ```

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use super::reach::Path;
use super::Unprotected;
use super::{request_name, Unreachable};
use super::{ClientError, ClientEvent, Ctx, LostReason, NoContact};

mod course;
mod news;
use crate::codec::{self, Decoder, Noise, Request, Response, Ticket};
use crate::contact::{Contact, Name};
use crate::secure::{self, FrameKind, Initiator, SecureError};
use crate::{ConnId, Direction, IoFailure};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// We asked the transport to connect to the READY peer.
    Connecting { deadline: Instant },
    /// CHAT sent; its answer not yet in.
    Asked { deadline: Instant },
    /// The chat is on: MESSAGEs and QUIT both ways.
    Open,
}

/// The encryption of the chat connection.
#[derive(Debug)]
enum Crypto {
    /// No ticket: plain text (version 1's chat).
    Plain,
    /// Our CHAT carried the handshake's first message; its answer finishes it.
    Asking(Box<Initiator>),
    /// Every body is a sealed frame.
    On(secure::Session),
}

/// The one chat connection, outgoing (we sent CHAT) or incoming (we answered it).
#[derive(Debug)]
struct Session {
    conn: ConnId,
    peer: Name,
    /// The READY peer's address, for error messages.
    addr: Option<SocketAddr>,
    decoder: Decoder,
    stage: Stage,
    /// Our CHAT's ticket, from the BRIDGE answer.
    ticket: Option<Ticket>,
    /// Why no ticket protects this chat, said when it opens.
    unprotected: Option<Unprotected>,
    crypto: Crypto,
    /// The peer speaks the course format: a course CHAT, raw turns (`course`).
    course: bool,
    /// How the connection reached the peer, shown when the chat opens.
    path: Path,
}

/// The peer the server handed us, in READY MODE, and how to ask it.
#[derive(Debug, Clone, Copy)]
struct ReadyPeer {
    contact: Contact,
    ticket: Option<Ticket>,
    unprotected: Option<Unprotected>,
    course: bool,
}

#[derive(Debug, Default)]
pub(super) struct Chat {
    /// The peer the server handed us, in READY MODE.
    ready_peer: Option<ReadyPeer>,
    session: Option<Session>,
    /// Messages typed out of turn, oldest first.
    held: VecDeque<Vec<u8>>,
    /// What the safety code is for was said (once per run).
    code_explained: bool,
}

/// What the rest of the client has to do after the chat moved.
#[derive(Debug)]
pub(super) enum ChatNews {
    Quiet,
    /// The peer answered our CHAT with 200: the chat is open.
    Accepted,
    /// Our `/chat` did not work out (the error is shown).
    Failed,
    /// The chat is over (PeerLeft or PeerLost shown).
    Ended,
    /// The peer's MESSAGE; whether it was its turn is the table's call.
    Message(Vec<u8>),
}

impl Chat {
    pub(super) fn has_link(&self) -> bool {
        self.session.is_some()
    }

    pub(super) fn owns(&self, conn: ConnId) -> bool {
        self.session.as_ref().is_some_and(|s| s.conn == conn)
    }

    /// Our CHAT is on its way or awaits its answer: a request in flight.
    pub(super) fn awaiting_answer(&self) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| s.stage != Stage::Open)
    }

    pub(super) fn peer(&self) -> Option<Name> {
        self.session.as_ref().map(|s| s.peer)
    }

    pub(super) fn ready_peer(&self) -> Option<Name> {
        self.ready_peer.map(|p| p.contact.name)
    }

    pub(super) fn set_ready_peer(
        &mut self,
        contact: Contact,
        ticket: Option<Ticket>,
        unprotected: Option<Unprotected>,
        course: bool,
    ) {
        self.ready_peer = Some(ReadyPeer {
            contact,
            ticket,
            unprotected,
            course,
        });
    }

    pub(super) fn forget_ready_peer(&mut self) {
        self.ready_peer = None;
    }

    pub(super) fn held(&self) -> usize {
        self.held.len()
    }

    pub(super) fn deadline(&self) -> Option<Instant> {
        match self.session.as_ref()?.stage {
            Stage::Connecting { deadline } | Stage::Asked { deadline } => Some(deadline),
            Stage::Open => None,
        }
    }

    /// `/chat`, allowed by the table: connect to the READY peer.
    fn start(&mut self, ctx: &mut Ctx) {
        let Some(ReadyPeer {
            contact: peer,
            ticket,
            unprotected,
            course,
        }) = self.ready_peer
        else {
            return ctx.error(ClientError::NoPeer);
        };
        if let (true, Some(why)) = (ctx.config.require_encryption, unprotected) {
            let peer = peer.name;
            return ctx.error(ClientError::NotEncrypted { peer, why });
        }
        let conn = ctx.new_conn();
        self.session = Some(Session {
            conn,
            peer: peer.name,
            addr: Some(peer.socket_addr()),
            decoder: Decoder::new(ctx.config.limits),
            stage: Stage::Connecting {
                deadline: ctx.now + ctx.config.connect_timeout,
            },
            ticket,
            unprotected,
            crypto: Crypto::Plain,
            course,
            path: Path::Direct,
        });
        ctx.outputs.connect(conn, peer.socket_addr(), None);
    }

    /// `/chat` on a connection reaching the READY peer found: CHAT goes at once.
    pub(super) fn ask_on(
        &mut self,
        ctx: &mut Ctx,
        conn: ConnId,
        path: Path,
        me: Result<Contact, NoContact>,
    ) -> ChatNews {
        let Some(ReadyPeer {
            contact,
            ticket,
            unprotected,
            course,
        }) = self.ready_peer
        else {
            ctx.outputs.close(conn);
            ctx.error(ClientError::NoPeer);
            return ChatNews::Failed;
        };
        self.session = Some(Session {
            conn,
            peer: contact.name,
            addr: None,
            decoder: Decoder::new(ctx.config.limits),
            stage: Stage::Connecting { deadline: ctx.now },
            ticket,
            unprotected,
            crypto: Crypto::Plain,
            course,
            path,
        });
        self.on_connected(ctx, conn, me).unwrap_or(ChatNews::Quiet)
    }

    /// A peer's CHAT accepted on an incoming connection: answer 200 with our
    /// contact (and the handshake's reply when the chat is encrypted).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn accept(
        &mut self,
        ctx: &mut Ctx,
        conn: ConnId,
        peer: Name,
        decoder: Decoder,
        me: Contact,
        security: Security,
        path: Path,
    ) {
        ctx.outputs.event(ClientEvent::Path { peer, path });
        let course = matches!(security, Security::Course);
        let (crypto, unprotected) = match security {
            Security::Course => course::accepted(ctx, peer),
            Security::Encrypted(session, reply) => {
                ctx.send(conn, |out| {
                    codec::write_ok_noise(out, Some(&me), Some(&reply))
                });
                encrypted(ctx, peer, &session, &mut self.code_explained);
                (Crypto::On(*session), None)
            }
            Security::Plain(unprotected) => {
                ctx.send(conn, |out| codec::write_ok(out, Some(&me)));
                not_protected(ctx, peer, unprotected);
                (Crypto::Plain, unprotected)
            }
        };
        self.session = Some(Session {
            conn,
            peer,
            addr: None,
            decoder,
            stage: Stage::Open,
            ticket: None,
            unprotected,
            crypto,
            course,
            path,
        });
    }

    /// The longest line we may send now: a sealed frame holds a little less.
    pub(super) fn max_text(&self, plain: usize) -> usize {
        match self.session.as_ref().map(|s| (&s.crypto, s.course)) {
            Some((Crypto::On(_), _)) => secure::MAX_PLAINTEXT.min(plain),
            Some((_, true)) => course::COURSE_TURN_MAX.min(plain),
            _ => plain,
        }
    }

    /// `conn` is established: send CHAT with `me`. `None` if `conn` is not ours.
    fn on_connected(
        &mut self,
        ctx: &mut Ctx,
        conn: ConnId,
        me: Result<Contact, NoContact>,
    ) -> Option<ChatNews> {
        let session = self.session.as_mut().filter(|s| s.conn == conn)?;
        if !matches!(session.stage, Stage::Connecting { .. }) {
            return Some(ChatNews::Quiet);
        }
        let me = match me {
            Ok(me) => me,
            Err(reason) => return Some(self.fail(ctx, ClientError::CannotStartChat(reason), true)),
        };
        if session.course {
            return Some(self.open_course(ctx, &me));
        }
        session.stage = Stage::Asked {
            deadline: ctx.now + ctx.config.request_timeout,
        };
        match session.ticket {
            Some(ticket) => {
                let (initiator, first) = Initiator::new(&ticket.to_bytes(), ctx.draw_seed());
                let first = Noise(first.try_into().expect("a handshake message"));
                session.crypto = Crypto::Asking(Box::new(initiator));
                ctx.send(conn, |out| {
                    codec::write_chat_v2(out, &me, None, Some(&first))
                });
            }
            None => ctx.send(conn, |out| codec::write_chat_v2(out, &me, None, None)),
        }
        Some(ChatNews::Quiet)
    }

    fn on_connect_failed(
        &mut self,
        ctx: &mut Ctx,
        conn: ConnId,
        error: IoFailure,
    ) -> Option<ChatNews> {
        let session = self.session.as_ref().filter(|s| s.conn == conn)?;
        let error = ClientError::PeerUnreachable {
            peer: session.peer,
            addr: session.addr,
            why: Unreachable::Failed(error),
        };
        Some(self.fail(ctx, error, false))
    }

    fn on_closed(&mut self, ctx: &mut Ctx, conn: ConnId) -> Option<ChatNews> {
        let session = self.session.as_ref().filter(|s| s.conn == conn)?;
        Some(match session.stage {
            Stage::Open if session.course => self.course_closed(ctx),
            Stage::Open => self.lose(ctx, LostReason::ClosedWithoutQuit, false),
            Stage::Connecting { .. } | Stage::Asked { .. } => {
                let error = ClientError::PeerClosed { peer: session.peer };
                self.fail(ctx, error, false)
            }
        })
    }

    /// A connect or CHAT past its deadline; a hanging connect is closed too, since the
    /// transport may still be trying.
    fn expired(&mut self, ctx: &mut Ctx) -> Option<ChatNews> {
        match self.deadline() {
            Some(deadline) if deadline <= ctx.now => {}
            _ => return None,
        }
        let session = self.session.as_ref()?;
        let error = match (session.stage, session.addr) {
            (Stage::Connecting { .. }, Some(addr)) => ClientError::PeerUnreachable {
                peer: session.peer,
                addr: Some(addr),
                why: Unreachable::Timeout(ctx.config.connect_timeout),
            },
            _ => ClientError::PeerSilent {
                peer: session.peer,
                after: ctx.config.request_timeout,
            },
        };
        Some(self.fail(ctx, error, true))
    }

    /// Decodes the next answer or request from `input`; `None` when more bytes are needed.
    fn receive(&mut self, ctx: &mut Ctx, input: &mut &[u8]) -> Option<ChatNews> {
        let session = self.session.as_mut()?;
        let peer = session.peer;
        match session.stage {
            Stage::Open if session.course => self.course_turn(ctx, input),
            Stage::Connecting { .. } => None,
            Stage::Asked { .. } => match session.decoder.decode_response(input) {
                Ok(Some(response)) => Some(self.answer(ctx, response)),
                Ok(None) => None,
                Err(error) => {
                    Some(self.fail(ctx, ClientError::PeerMalformed { peer, error }, true))
                }
            },
            Stage::Open => match session.decoder.decode_request(input) {
                Ok(Some(Request::Message(body))) => Some(self.open(ctx, FrameKind::Message, body)),
                Ok(Some(Request::Quit)) => Some(self.open(ctx, FrameKind::Quit, Vec::new())),
                Ok(Some(Request::QuitWith { body, reason })) => match (reason, body.is_empty()) {
                    (Some(reason), true) if matches!(session.crypto, Crypto::On(_)) => {
                        let reason = LostReason::PeerRefusedFrame(super::one_line(&reason));
                        Some(self.lose(ctx, reason, true))
                    }
                    _ => Some(self.open(ctx, FrameKind::Quit, body)),
                },
                Ok(Some(other)) => {
                    let reason = LostReason::UnexpectedRequest(request_name(&other));
                    Some(self.lose(ctx, reason, true))
                }
                Ok(None) => None,
                Err(e) => Some(self.lose(ctx, LostReason::Malformed(e), true)),
            },
        }
    }

    /// A MESSAGE or QUIT body of the open chat: plain, or a frame to open first.
    fn open(&mut self, ctx: &mut Ctx, kind: FrameKind, body: Vec<u8>) -> ChatNews {
        let Some(session) = self.session.as_mut() else {
            return ChatNews::Quiet;
        };
        let text = match &mut session.crypto {
            Crypto::On(secure) => match secure.open(kind, &body) {
                Ok(text) => {
                    let conn = session.conn;
                    trace_decrypted(ctx, conn, Direction::Received, &text);
                    text
                }
                Err(why) => return self.undecryptable(ctx, why),
            },
            Crypto::Plain | Crypto::Asking(_) => body,
        };
        match kind {
            FrameKind::Message => ChatNews::Message(text),
            FrameKind::Quit => self.peer_quit(ctx),
        }
    }

    /// A frame did not open: tell the peer why in a plain QUIT, close, and say so.
    fn undecryptable(&mut self, ctx: &mut Ctx, why: SecureError) -> ChatNews {
        if let Some(session) = &self.session {
            let reason = why.to_string();
            ctx.send(session.conn, |out| {
                codec::write_quit_with(out, b"", Some(&reason))
            });
        }
        self.lose(ctx, LostReason::Undecryptable(why), true)
    }

    fn answer(&mut self, ctx: &mut Ctx, response: Response) -> ChatNews {
        let Some(session) = self.session.as_mut() else {
            return ChatNews::Quiet;
        };
        if !response.status.is_success() {
            let error = ClientError::PeerRefused {
                peer: session.peer,
                status: response.status,
                reason: super::one_line(&response.reason_text()),
            };
            return self.fail(ctx, error, true);
        }
        // The answer names who actually listens at that address.
        if let Some(contact) = response.contact {
            session.peer = contact.name;
        }
        let peer = session.peer;
        let path = ClientEvent::Path {
            peer,
            path: session.path,
        };
        match std::mem::replace(&mut session.crypto, Crypto::Plain) {
            Crypto::Asking(initiator) => {
                let finished = match response.noise {
                    Some(reply) => initiator.finish(&reply.0),
                    None => Err(SecureError::Handshake),
                };
                match finished {
                    Ok(secure) => {
                        ctx.outputs.event(path);
                        encrypted(ctx, peer, &secure, &mut self.code_explained);
                        session.crypto = Crypto::On(secure);
                    }
                    Err(why) => {
                        return self.fail(ctx, ClientError::HandshakeFailed { peer, why }, true)
                    }
                }
            }
            crypto => {
                session.crypto = crypto;
                ctx.outputs.event(path);
                not_protected(ctx, peer, session.unprotected);
            }
        }
        session.stage = Stage::Open;
        ChatNews::Accepted
    }

    /// Our `/chat` did not work out: close (unless already gone) and report.
    fn fail(&mut self, ctx: &mut Ctx, error: ClientError, close: bool) -> ChatNews {
        if let Some(session) = self.session.take() {
            if close {
                ctx.outputs.close(session.conn);
            }
        }
        ctx.error(error);
        ChatNews::Failed
    }

    fn peer_quit(&mut self, ctx: &mut Ctx) -> ChatNews {
        let Some(session) = self.session.take() else {
            return ChatNews::Quiet;
        };
        ctx.outputs.close(session.conn);
        ctx.outputs
            .event(ClientEvent::PeerLeft { peer: session.peer });
        ChatNews::Ended
    }

    /// The chat broke: close it (unless already gone) and report `reason`.
    fn lose(&mut self, ctx: &mut Ctx, reason: LostReason, close: bool) -> ChatNews {
        let Some(session) = self.session.take() else {
            return ChatNews::Quiet;
        };
        if close {
            ctx.outputs.close(session.conn);
        }
        ctx.outputs.event(ClientEvent::PeerLost {
            peer: session.peer,
            reason,
        });
        ChatNews::Ended
    }

    /// Sends a MESSAGE (sealed in an encrypted chat); false without a chat connection.
    fn send(&mut self, ctx: &mut Ctx, text: &[u8]) -> bool {
        let Some(session) = self.session.as_mut() else {
            return false;
        };
        let conn = session.conn;
        match &mut session.crypto {
            _ if session.course => return course::send_turn(ctx, conn, text),
            Crypto::On(secure) => match secure.seal(FrameKind::Message, text) {
                Ok(frame) => {
                    trace_decrypted(ctx, conn, Direction::Sent, text);
                    ctx.send(conn, |out| codec::write_sealed_message(out, &frame));
                }
                // The line was checked against the frame's limit: this is a broken session.
                Err(why) => {
                    self.lose(ctx, LostReason::Undecryptable(why), true);
                    return false;
                }
            },
            Crypto::Plain | Crypto::Asking(_) => {
                ctx.send(conn, |out| codec::write_message(out, text))
            }
        }
        true
    }

    fn hold(&mut self, ctx: &mut Ctx, text: Vec<u8>) {
        self.held.push_back(text);
        ctx.outputs.event(ClientEvent::MessageHeld {
            pending: self.held.len(),
        });
    }

    /// The chat is over: held messages are dropped, with an Info saying how many.
    pub(super) fn drop_held(&mut self, ctx: &mut Ctx) {
        let n = self.held.len();
        if n > 0 {
            self.held.clear();
            let what = if n == 1 {
                "1 held message was".to_owned()
            } else {
                format!("{n} held messages were")
            };
            ctx.info(format!("{what} not sent: the chat is over"));
        }
    }

    /// `/quit`: QUIT to the peer if CHAT went out, then close.
    pub(super) fn quit(&mut self, ctx: &mut Ctx) {
        if let Some(mut session) = self.session.take() {
            match (&mut session.crypto, session.stage) {
                (_, Stage::Connecting { .. }) => {}
                _ if session.course => ctx.send(session.conn, crate::course::write_quit),
                (Crypto::On(secure), _) => {
                    if let Ok(frame) = secure.seal(FrameKind::Quit, b"") {
                        ctx.send(session.conn, |out| {
                            codec::write_quit_with(out, &frame, None)
                        });
                    }
                }
                _ => ctx.send(session.conn, codec::write_quit),
            }
            ctx.outputs.close(session.conn);
        }
    }

    /// Exiting on an error: close without a word.
    pub(super) fn close(&mut self, ctx: &mut Ctx) {
        if let Some(session) = self.session.take() {
            ctx.outputs.close(session.conn);
        }
    }
}

/// How a chat we accept is protected.
#[derive(Debug)]
pub(super) enum Security {
    /// The handshake verified: the session and the reply for our 200.
    Encrypted(Box<secure::Session>, Noise),
    /// Plain text, and why (`None`: we speak version 1 ourselves).
    Plain(Option<Unprotected>),
    /// A course CHAT: raw turns, no answer, no encryption.
    Course,
}

/// An encrypted chat opening shows its safety code, before its first mode line.
/// The first time in a run, it also says what the code is for.
fn encrypted(ctx: &mut Ctx, peer: Name, session: &secure::Session, explained: &mut bool) {
    let safety_code = session.safety_code().to_owned();
    ctx.outputs
        .event(ClientEvent::Encrypted { peer, safety_code });
    if !std::mem::replace(explained, true) {
        ctx.info(SAFETY_CODE_HELP.to_owned());
    }
}

/// Said once per run, after the first safety code.
pub const SAFETY_CODE_HELP: &str = "compare the safety code with your peer over another \
channel (phone, in person): the same code on both sides means nobody is in the middle; \
different codes mean someone is";

/// With `--trace`, the plaintext of a frame, marked as such.
fn trace_decrypted(ctx: &mut Ctx, conn: ConnId, direction: Direction, text: &[u8]) {
    if ctx.config.trace {
        let text = text.to_vec();
        ctx.outputs.event(ClientEvent::Decrypted {
            conn,
            direction,
            text,
        });
    }
}

/// A chat opening without a ticket says so, before its first mode line.
fn not_protected(ctx: &mut Ctx, peer: Name, why: Option<Unprotected>) {
    if let Some(why) = why {
        ctx.outputs.event(ClientEvent::NotProtected { peer, why });
    }
}
