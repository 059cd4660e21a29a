//! The server side of `--legacy`: REGISTER and BRIDGE go out in the course
//! format, and the course answers (`REGACK`, `BRIDGEACK`) are read back as the
//! answers the server link already knows, so that the link's states, timers
//! and the mode table are the same for both formats.
//!
//! One connection carries every request, one after another, as the
//! instructor's server and `bridgechat server` both allow. It is opened at
//! start-up (an unreachable server is fatal, as without `--legacy`) and, if the
//! server closes it, again by `/register`. A server that answers one request
//! per connection and then closes is not supported: its close ends the
//! registration as far as this client knows.
//!
//! The course format has no error answers: a server that refuses a request
//! says nothing, and the request times out (`request_timeout`).

use super::*;
use crate::codec::{DecodeError, Limits};
use crate::course::{self, CourseDecoder, CourseError, CourseMessage, Verb};

impl ServerLink {
    /// `/bridge`: BRIDGE naming ourselves; `/bridge NAME` has no course form.
    pub(super) fn bridge_course(&mut self, ctx: &mut Ctx, conn: ConnId, peer: Option<Name>) {
        if peer.is_some() {
            return ctx.error(ClientError::NotInCourseFormat("/bridge NAME"));
        }
        let me = self.name;
        ctx.send(conn, |out| course::write_bridge(out, &me));
        self.sent(Pending::Bridge {
            deadline: ctx.now + ctx.config.request_timeout,
            peer,
        });
    }

    /// The next course answer in `input`, taken as the HTTP answer it means;
    /// anything else ends the connection. `None` when more bytes are needed.
    pub(super) fn receive_course(
        &mut self,
        ctx: &mut Ctx,
        input: &mut &[u8],
    ) -> Option<ServerNews> {
        let Link::Up {
            conn,
            course: Some(course),
            ..
        } = &mut self.link
        else {
            return None;
        };
        let conn = *conn;
        let malformed = match course.next_answer(input)? {
            Ok((verb, response)) if self.course_answers(verb) => {
                return Some(self.answer(ctx, response))
            }
            Ok(_) => NOT_AN_ANSWER,
            Err(e) => e,
        };
        ctx.outputs.close(conn);
        Some(self.gone(Some(malformed)))
    }

    /// Whether a course answer of `verb` is the one the oldest request waits for.
    fn course_answers(&self, verb: Verb) -> bool {
        match (self.unanswered.front(), self.pending, verb) {
            (Some(Sent::Pending), Some(Pending::Register { .. }), Verb::RegAck) => true,
            (Some(Sent::Pending), Some(Pending::Bridge { .. }), Verb::BridgeAck) => true,
            (Some(Sent::Pending), _, _) => false,
            // Skipped, or shown as an answer nobody asked for.
            _ => true,
        }
    }
}

/// Reads the server's course answers on one connection.
#[derive(Debug)]
pub(super) struct CourseLink {
    decoder: CourseDecoder,
}

impl CourseLink {
    pub(super) fn new(limits: Limits) -> CourseLink {
        CourseLink {
            decoder: CourseDecoder::new(limits),
        }
    }

    /// The next answer in `input`, as the verb it came as and the answer it
    /// means; `None` when more bytes are needed. An error ends the connection:
    /// the server is not speaking the course format we can follow.
    pub(super) fn next_answer(
        &mut self,
        input: &mut &[u8],
    ) -> Option<Result<(Verb, Response), DecodeError>> {
        Some(match self.decoder.decode(input) {
            Ok(None) => return None,
            Ok(Some(message)) => answer(message),
            Err(error) => Err(malformed(error)),
        })
    }
}

/// A course answer as the answer `server_link` knows: REGACK is a 200 (its
/// content is ignored, as the course clients ignore it); BRIDGEACK a 200 with
/// the other client, who speaks the course format, or without (we wait).
fn answer(message: CourseMessage) -> Result<(Verb, Response), DecodeError> {
    match message {
        CourseMessage::RegAck { contact, .. } => Ok((
            Verb::RegAck,
            Response::v1(Status::OK, Some(contact), Vec::new()),
        )),
        CourseMessage::BridgeAck(peer) => Ok((
            Verb::BridgeAck,
            Response {
                course_peer: peer.is_some(),
                ..Response::v1(Status::OK, peer, Vec::new())
            },
        )),
        _ => Err(NOT_AN_ANSWER),
    }
}

/// A course message the server may send, but not as the answer we wait for.
const NOT_AN_ANSWER: DecodeError = DecodeError {
    status: Status::BAD_REQUEST,
    reason: "the server sent a course message that is not the answer to the request",
};

fn malformed(error: CourseError) -> DecodeError {
    let reason = match error {
        CourseError::HeadTooLarge => "course answer too large",
        CourseError::TooManyHeaders => "too many header lines in a course answer",
        CourseError::ControlByte => "control byte in a course answer",
        CourseError::MalformedHeader => "course answer header without a name and colon",
        CourseError::Failed => "connection already failed",
        CourseError::UnknownVerb => "not a course answer (unknown verb)",
        CourseError::Field { .. } => "course answer with a missing or invalid clientID, IP or Port",
    };
    DecodeError {
        status: Status::BAD_REQUEST,
        reason,
    }
}
