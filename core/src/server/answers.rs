//! Writing to clients: answers, refusals, and the trace of what went over the wire.

use std::time::Instant;

use crate::codec::{self, AfterError, Status};
use crate::contact::Contact;
use crate::operator::PageRequest;
use crate::{ConnId, Direction};

use super::events::{CloseReason, Rejection, ServerEvent};
use super::Server;

impl Server {
    pub(super) fn answer_ok(&mut self, conn: ConnId, contact: Option<Contact>) {
        self.answered = Status::OK;
        self.send(conn, |out| codec::write_ok(out, contact.as_ref()));
    }

    /// Answers with the rejection's status; the connection stays open.
    pub(super) fn reject(&mut self, conn: ConnId, rejection: Rejection) {
        self.answered = rejection.status();
        let after = match rejection {
            Rejection::TooManyFallthroughs { retry_after } => {
                AfterError::KeepOpenRetryAfter(retry_after)
            }
            _ => AfterError::KeepOpen,
        };
        self.send(conn, |out| {
            codec::write_error(out, rejection.status(), &rejection, after)
        });
        self.outputs
            .event(ServerEvent::Rejected { conn, rejection });
    }

    /// Answers with the rejection's status, then closes the connection.
    pub(super) fn reject_and_close(
        &mut self,
        now: Instant,
        conn: ConnId,
        rejection: Rejection,
        reason: CloseReason,
    ) {
        if !self.speaks_course(conn) {
            self.send(conn, |out| {
                codec::write_error(out, rejection.status(), &rejection, AfterError::Close)
            });
        }
        self.outputs
            .event(ServerEvent::Rejected { conn, rejection });
        self.close(now, conn, reason);
    }

    /// Writes one message to `conn`: an answer, or (v2) a notification between answers.
    pub(super) fn send(&mut self, conn: ConnId, write: impl FnOnce(&mut Vec<u8>)) {
        let bytes = self.outputs.transmit(conn, write);
        if self.config.trace {
            let bytes = bytes.to_vec();
            self.trace(conn, Direction::Sent, &bytes);
        }
    }

    /// A `Trace` event with every ticket value blanked: the log never holds one.
    pub(super) fn trace(&mut self, conn: ConnId, direction: Direction, bytes: &[u8]) {
        let mut bytes = bytes.to_vec();
        redact_tickets(&mut bytes);
        self.outputs.event(ServerEvent::Trace {
            conn,
            direction,
            bytes,
        });
    }
}

/// Overwrites the value of every `Ticket:` header (any case) with `*`.
fn redact_tickets(bytes: &mut [u8]) {
    const HEADER: &[u8] = b"ticket:";
    let mut i = 0;
    while i + HEADER.len() <= bytes.len() {
        let at_line_start = i == 0 || bytes[i - 1] == b'\n';
        if at_line_start && bytes[i..i + HEADER.len()].eq_ignore_ascii_case(HEADER) {
            i += HEADER.len();
            while i < bytes.len() && bytes[i] != b'\r' && bytes[i] != b'\n' {
                if bytes[i] != b' ' && bytes[i] != b'\t' {
                    bytes[i] = b'*';
                }
                i += 1;
            }
        } else {
            i += 1;
        }
    }
}

impl Server {
    /// Answers `GET`/`HEAD`; closes after it if the client asked.
    pub(super) fn serve_page(&mut self, now: Instant, conn: ConnId, page: PageRequest) {
        self.sync_gauges();
        let pages = self.pages();
        let serve_metrics = self.config.serve_metrics;
        let mut status = Status::OK;
        self.send(conn, |out| {
            status = pages.answer(now, &page, serve_metrics, out);
        });
        self.answered = status;
        if page.close {
            self.close(now, conn, CloseReason::ClientAsked);
        }
    }

    /// Brings the gauges that mirror state up to date.
    pub(super) fn sync_gauges(&self) {
        self.outputs
            .observer()
            .sync(self.names.len(), !self.anyone.is_empty(), self.relays.len());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_trace_never_shows_a_ticket() {
        let mut wire =
            b"MATCHED / HTTP/1.1\r\nName: a\r\nTICKET: 5f0c\r\nContent-Length: 0\r\n\r\nticket: x"
                .to_vec();
        super::redact_tickets(&mut wire);
        assert_eq!(
            wire,
            b"MATCHED / HTTP/1.1\r\nName: a\r\nTICKET: ****\r\nContent-Length: 0\r\n\r\nticket: *"
        );
    }
}
