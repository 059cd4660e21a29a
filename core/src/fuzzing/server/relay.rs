//! The server target's model of the relay: which RELAY is held, refused or spliced,
//! and the bytes each relayed connection must receive, verbatim.

use super::*;

/// A connection's part in a relay, as the model expects it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum RelaySlot {
    /// An HTTP connection.
    #[default]
    No,
    /// First at a relay: unanswered until its peer comes (or 504/413, then closed).
    Held,
    /// Spliced with this slot: every byte it receives is expected, verbatim.
    Spliced(usize),
    /// Answered an error (403, 504, 413): it must be closed by the end of the drain.
    Refused,
}

/// What the server holds for relays.
#[derive(Debug, Default)]
pub(super) struct RelayModel {
    /// Tickets a relay was opened with: they open none again.
    spent: HashSet<[u8; 16]>,
    /// Half-joined relays: the ticket and its first slot.
    held: Vec<([u8; 16], usize)>,
    /// RELAY notifications owed: the waiter's slot and the ticket.
    owed_notes: Vec<(usize, Ticket)>,
}

/// What the server holds for a first peer before the second comes.
const HELD_MAX: usize = 64 * 1024;

impl ServerModel {
    /// Slot `i` sends RELAY with `ticket` (and `pipelined` bytes behind it) as its
    /// first request: the model decides what must come of it.
    pub(super) fn relay_first(&mut self, i: usize, ticket: Ticket, pipelined: &[u8]) {
        let key = ticket.to_bytes();
        if let Some(at) = self.relays.held.iter().position(|(t, _)| *t == key) {
            let (_, first) = self.relays.held.swap_remove(at);
            let held = std::mem::take(&mut self.slots[first].held);
            let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
            self.slots[first].relay = RelaySlot::Spliced(i);
            self.slots[first].expected.extend_from_slice(ok);
            self.slots[i].relay = RelaySlot::Spliced(first);
            self.slots[i].expected.extend_from_slice(ok);
            self.slots[i].expected.extend_from_slice(&held);
            self.relayed(i, pipelined);
            return;
        }
        let waiter = (0..self.slots.len()).find(|&w| {
            self.slots[w].open
                && self
                    .registry
                    .pending(w)
                    .is_some_and(|p| p.ticket == Some(Some(ticket)))
        });
        match waiter {
            Some(w) if self.relays.spent.insert(key) => {
                self.slots[i].relay = RelaySlot::Held;
                self.relays.held.push((key, i));
                self.relays.owed_notes.push((w, ticket));
                self.relayed(i, pipelined);
            }
            _ => self.slots[i].relay = RelaySlot::Refused,
        }
    }

    /// Bytes sent on slot `i`; false if it is no relay's (they are HTTP).
    pub(super) fn relayed(&mut self, i: usize, bytes: &[u8]) -> bool {
        match self.slots[i].relay {
            RelaySlot::No => false,
            RelaySlot::Held => {
                self.slots[i].held.extend_from_slice(bytes);
                true
            }
            RelaySlot::Spliced(peer) => {
                self.slots[peer].expected.extend_from_slice(bytes);
                true
            }
            RelaySlot::Refused => true,
        }
    }

    /// The server sent a RELAY notification to slot `i`.
    pub(super) fn relay_note(&mut self, i: usize, ticket: Ticket) {
        let at = self
            .relays
            .owed_notes
            .iter()
            .position(|&(w, t)| w == i && t == ticket)
            .expect("a RELAY notification nobody came to the relay for");
        self.relays.owed_notes.swap_remove(at);
    }

    /// Bytes the server sent on relay slot `i`.
    pub(super) fn relay_transmit(&mut self, i: usize, bytes: &[u8]) {
        let s = &mut self.slots[i];
        match s.relay {
            RelaySlot::Spliced(_) => {
                assert!(
                    s.expected.starts_with(bytes),
                    "a relay sent bytes its peer never sent, or out of order"
                );
                s.expected.drain(..bytes.len());
            }
            RelaySlot::Held | RelaySlot::Refused => {
                let mut input = bytes;
                while let Some(response) = s.answers.decode_response(&mut input).ok().flatten() {
                    let allowed: &[Status] = match s.relay {
                        RelaySlot::Held if s.held.len() > HELD_MAX => &[Status::CONTENT_TOO_LARGE],
                        RelaySlot::Held => &[Status::GATEWAY_TIMEOUT],
                        _ => &[Status::FORBIDDEN],
                    };
                    assert!(allowed.contains(&response.status), "{response:?}");
                    s.relay = RelaySlot::Refused;
                }
                assert!(input.is_empty(), "a refusal that is no HTTP response");
            }
            RelaySlot::No => unreachable!("checked by the caller"),
        }
    }

    /// Slot `i` closed (by either end): its relay ends.
    pub(super) fn relay_closed(&mut self, i: usize) {
        self.relays.held.retain(|&(_, first)| first != i);
        if let RelaySlot::Spliced(_) = self.slots[i].relay {
            assert!(
                self.slots[i].expected.is_empty(),
                "a relay side closed before what its peer sent reached it"
            );
        }
    }

    /// After a drain: relays end as a whole, refusals close, notifications arrived.
    pub(super) fn check_relays(&self) {
        for (i, s) in self.slots.iter().enumerate() {
            if !s.open {
                continue;
            }
            match s.relay {
                RelaySlot::Spliced(peer) => {
                    assert!(self.slots[peer].open, "one side of a relay left open");
                    assert!(s.expected.is_empty(), "relayed bytes not passed on");
                }
                RelaySlot::Refused => panic!("{} left open after a refused RELAY", s.conn),
                RelaySlot::Held | RelaySlot::No => {}
            }
            assert!(
                !self.relays.owed_notes.iter().any(|&(w, _)| w == i),
                "the waiter was not told its peer waits at the relay"
            );
        }
    }
}
