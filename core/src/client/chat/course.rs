//! A chat with a course peer (`--legacy`, or a peer the server said speaks
//! the course format): no answer to CHAT, raw turns, the course quit.
//!
//! ```text
//! asker:  connected ──course CHAT (our contact), a write of its own──▶ Open, WRITE MODE
//! waiter: a course CHAT accepted (see `course_incoming`), nothing sent ──▶ Open, READ MODE
//! Open:   one write per turn (the text alone) ⇄ one read per message
//!         QUIT\r\n\r\n\r\n or bare QUIT (maybe right after a turn), or end of stream ──▶ none
//! ```
//!
//! Raw turns have no framing, so a read is a message, as the class's programs
//! take it. A turn is at most [`COURSE_TURN_MAX`] bytes, what those programs
//! read at once. A line typed before the chat opened goes out after the mode
//! line that follows the CHAT, so the two are separate writes.

use super::*;
use crate::course::{self, Turn};

/// The longest turn we send a course peer: the class's programs read at most
/// 4096 bytes at once, so a longer turn would reach them as two messages.
pub const COURSE_TURN_MAX: usize = 4096;

impl Chat {
    /// Our connection to a course peer is up: send CHAT; no answer comes, the
    /// chat is open and we write first.
    pub(super) fn open_course(&mut self, ctx: &mut Ctx, me: &Contact) -> ChatNews {
        let Some(session) = self.session.as_mut() else {
            return ChatNews::Quiet;
        };
        ctx.send(session.conn, |out| course::write_chat(out, me));
        session.stage = Stage::Open;
        let (peer, path) = (session.peer, session.path);
        ctx.outputs.event(ClientEvent::Path { peer, path });
        not_protected(ctx, session.peer, session.unprotected);
        ChatNews::Accepted
    }

    /// The next message in `input`, the bytes of one read: a turn and the quit
    /// that came with it in the same read are taken one after the other.
    pub(super) fn course_turn(&mut self, ctx: &mut Ctx, input: &mut &[u8]) -> Option<ChatNews> {
        let read = std::mem::take(input);
        Some(match course::read_turn(read)? {
            Turn::Text(text) => ChatNews::Message(text.to_vec()),
            Turn::Quit => self.peer_quit(ctx),
            Turn::TextThenQuit(text) => {
                *input = &read[text.len()..];
                ChatNews::Message(text.to_vec())
            }
        })
    }

    /// End of stream is one of the course format's ways to quit.
    pub(super) fn course_closed(&mut self, ctx: &mut Ctx) -> ChatNews {
        let Some(session) = self.session.take() else {
            return ChatNews::Quiet;
        };
        ctx.outputs
            .event(ClientEvent::PeerLeft { peer: session.peer });
        ChatNews::Ended
    }
}

/// A course CHAT accepted: it is never answered, and not encrypted.
pub(super) fn accepted(ctx: &mut Ctx, peer: Name) -> (Crypto, Option<Unprotected>) {
    let why = Some(Unprotected::course(ctx));
    not_protected(ctx, peer, why);
    (Crypto::Plain, why)
}

/// One turn, the text alone; false (with an error shown) for an empty one,
/// since an empty write sends nothing.
pub(super) fn send_turn(ctx: &mut Ctx, conn: ConnId, text: &[u8]) -> bool {
    if text.is_empty() {
        ctx.error(ClientError::NotInCourseFormat("empty message"));
        return false;
    }
    ctx.send(conn, |out| out.extend_from_slice(text));
    true
}

impl Security {
    /// Why the chat would not be encrypted, if it would not.
    pub(in crate::client) fn unprotected(&self) -> Option<Unprotected> {
        match self {
            Security::Encrypted(..) => None,
            Security::Plain(why) => *why,
            Security::Course => Some(Unprotected::CoursePeer),
        }
    }
}
