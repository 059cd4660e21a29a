//! A course `CHAT` on our chat port: a caller whose first line is a bare
//! course verb speaks the course format (see `crate::course::detect_verb`);
//! its `CHAT` opens a chat in raw turns (`chat::course`) and is never answered.
//! Anything else from a course caller (another verb, a `clientID` that is no
//! name, a malformed block, the framed `Type:` family, which the client does
//! not speak) is closed without a word: the course format has no error answers.
//! Every other caller is read as HTTP, as before.

use std::borrow::Cow;

use crate::codec::Limits;
use crate::contact::Contact;
use crate::course::{self, CourseDecoder, CourseMessage, Dialect};

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
