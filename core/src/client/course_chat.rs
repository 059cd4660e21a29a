//! The peer side of the course format: a course `CHAT` on our chat port, and
//! the raw turns of a chat with a course peer (`--legacy`, or a peer the
//! server said speaks the course format).
//!
//! ```text
//! asker:  connected ──course CHAT (our contact), one write──▶ open, WRITE MODE (we write first)
//! waiter: a caller's first line is a bare verb ──course CHAT──▶ open, READ MODE (no answer sent)
//!                                             └──anything else──▶ closed without a word
//! open:   one write per turn (the text alone) ⇄ one read per message
//!         QUIT\r\n\r\n\r\n or bare QUIT, or end of stream ──▶ over
//! ```
//!
//! Raw turns have no framing, so a read is a message, as the class's programs
//! take it; a turn is sent as its own write. A turn is at most
//! [`COURSE_TURN_MAX`] bytes, what those programs read at once. The family of
//! programs that frames its turns (`CHAT` with `Type: message`) is not spoken
//! by the client: such a caller is closed.

use std::borrow::Cow;

use crate::codec::Limits;
use crate::contact::Contact;
use crate::course::{self, CourseDecoder, CourseMessage, Dialect, Turn};

/// The longest turn we send a course peer: the class's programs read at most
/// 4096 bytes at once, so a longer turn would reach them as two messages.
pub const COURSE_TURN_MAX: usize = 4096;

/// What a caller on the chat port speaks, learnt from its first line.
#[derive(Debug)]
pub(super) enum CallerDialect {
    /// Its first line has not ended: the bytes so far (at most about `max_head`).
    Undecided(Vec<u8>),
    Http,
    Course(CourseDecoder),
}

/// What a caller's bytes amount to.
#[derive(Debug)]
pub(super) enum Heard<'a> {
    /// Not enough to decide anything.
    More,
    /// HTTP: these bytes (with any held while undecided) go to the HTTP decoder.
    Http(Cow<'a, [u8]>),
    /// A course CHAT with the caller's contact, and the bytes after it (its first turn
    /// if it came in the same read).
    Chat(Contact, Vec<u8>),
    /// A course caller sent something other than a CHAT we speak: close it
    /// without a word (the course format has no error answers).
    Refused,
}

impl CallerDialect {
    pub(super) fn new() -> CallerDialect {
        CallerDialect::Undecided(Vec::new())
    }

    /// Whether a refusal may be answered in HTTP: not to a course caller.
    pub(super) fn answers_http(&self) -> bool {
        !matches!(self, CallerDialect::Course(_))
    }

    pub(super) fn hear<'a>(&mut self, bytes: &'a [u8], limits: &Limits) -> Heard<'a> {
        match self {
            CallerDialect::Http => Heard::Http(Cow::Borrowed(bytes)),
            CallerDialect::Course(decoder) => next_chat(decoder, bytes),
            CallerDialect::Undecided(held) => {
                held.extend_from_slice(bytes);
                match course::detect_verb(held, limits) {
                    Dialect::Undecided => Heard::More,
                    Dialect::Http => {
                        let held = std::mem::take(held);
                        *self = CallerDialect::Http;
                        Heard::Http(Cow::Owned(held))
                    }
                    Dialect::Course => {
                        let held = std::mem::take(held);
                        let mut decoder = CourseDecoder::new(*limits);
                        let heard = next_chat(&mut decoder, &held);
                        *self = CallerDialect::Course(decoder);
                        match heard {
                            Heard::Chat(contact, rest) => Heard::Chat(contact, rest),
                            Heard::More => Heard::More,
                            _ => Heard::Refused,
                        }
                    }
                }
            }
        }
    }
}

/// A course caller's bytes: its CHAT, or a refusal.
fn next_chat<'a>(decoder: &mut CourseDecoder, bytes: &[u8]) -> Heard<'a> {
    let mut input = bytes;
    match decoder.decode(&mut input) {
        Ok(None) => Heard::More,
        Ok(Some(CourseMessage::Chat(contact))) => Heard::Chat(contact, input.to_vec()),
        Ok(Some(_)) | Err(_) => Heard::Refused,
    }
}

/// What one read on a course chat says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PeerTurn {
    Message(Vec<u8>),
    Quit,
}

/// The next message of a course chat in `input`, the bytes of one read; a
/// message and the quit that came with it in one read are taken one by one.
/// `None` once `input` is used up.
pub(super) fn next_turn(input: &mut &[u8]) -> Option<PeerTurn> {
    let read = std::mem::take(input);
    Some(match course::read_turn(read)? {
        Turn::Text(text) => PeerTurn::Message(text.to_vec()),
        Turn::Quit => PeerTurn::Quit,
        Turn::TextThenQuit(text) => {
            *input = &read[text.len()..];
            PeerTurn::Message(text.to_vec())
        }
    })
}

/// One turn, the text alone; `Err` with what the format cannot carry.
pub(super) fn write_turn(out: &mut Vec<u8>, text: &[u8]) -> Result<(), &'static str> {
    course::write_turn(out, text).map_err(|_| "empty message")
}

/// Our course CHAT, with our own contact, as its own write.
pub(super) fn write_chat(out: &mut Vec<u8>, me: &Contact) {
    course::write_chat(out, me);
}

/// `QUIT\r\n\r\n\r\n`, the form most course programs send.
pub(super) fn write_quit(out: &mut Vec<u8>) {
    course::write_quit(out);
}
