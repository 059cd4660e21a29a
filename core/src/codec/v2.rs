//! The values version 2 adds to the wire: the protocol version, tickets, and the
//! contents of the two server notifications.

use std::fmt;
use std::net::SocketAddr;

use crate::contact::{Contact, InvalidValue, Name};

/// Which protocol a connection (or a peer) speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Version {
    #[default]
    V1,
    V2,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1 => "1",
            Version::V2 => "2",
        }
    }

    /// `Bridgechat: 2` opts in; any other value means version 1.
    pub(crate) fn from_opt_in(value: &[u8]) -> Version {
        if value == b"2" {
            Version::V2
        } else {
            Version::V1
        }
    }

    /// `Peer-Version` must say `1` or `2`.
    pub(crate) fn parse(value: &[u8]) -> Result<Version, InvalidValue> {
        match value {
            b"1" => Ok(Version::V1),
            b"2" => Ok(Version::V2),
            _ => Err(InvalidValue::NotAVersion),
        }
    }
}

/// Bytes in a ticket: 128 random bits.
pub const TICKET_LEN: usize = 16;

/// The secret the server draws for one introduction and gives to both peers.
///
/// `Debug` and `Display` never show the value, so a ticket cannot leak into a log;
/// only [`Ticket::write_hex`] (the wire) and [`Ticket::to_bytes`] reveal it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket([u8; TICKET_LEN]);

impl Ticket {
    pub fn from_bytes(bytes: [u8; TICKET_LEN]) -> Ticket {
        Ticket(bytes)
    }

    pub fn to_bytes(self) -> [u8; TICKET_LEN] {
        self.0
    }

    /// 32 hex digits, either case (written lowercase).
    pub fn parse(hex: &[u8]) -> Result<Ticket, InvalidValue> {
        parse_hex(hex).map(Ticket).ok_or(InvalidValue::NotATicket)
    }

    /// The wire form: 32 lowercase hex digits.
    pub fn write_hex(&self, out: &mut Vec<u8>) {
        write_hex(&self.0, out);
    }
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ticket(…)")
    }
}

impl fmt::Display for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Bytes of one Noise handshake message on CHAT or its answer (see `crate::secure`).
pub const NOISE_LEN: usize = crate::secure::HANDSHAKE_LEN;

/// One handshake message of an encrypted chat: public (an ephemeral key and a
/// tag), so unlike a ticket it may be shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Noise(pub [u8; NOISE_LEN]);

impl Noise {
    /// 96 hex digits, either case.
    pub fn parse(hex: &[u8]) -> Result<Noise, InvalidValue> {
        parse_hex(hex).map(Noise).ok_or(InvalidValue::NotNoise)
    }

    /// The wire form: 96 lowercase hex digits.
    pub fn write_hex(&self, out: &mut Vec<u8>) {
        write_hex(&self.0, out);
    }
}

fn parse_hex<const N: usize>(hex: &[u8]) -> Option<[u8; N]> {
    if hex.len() != 2 * N {
        return None;
    }
    let mut bytes = [0u8; N];
    for (byte, pair) in bytes.iter_mut().zip(hex.chunks_exact(2)) {
        let digit = |d: u8| (d as char).to_digit(16);
        *byte = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(bytes)
}

fn write_hex(bytes: &[u8], out: &mut Vec<u8>) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)]);
        out.push(DIGITS[usize::from(byte & 0x0f)]);
    }
}

/// Who a client has been paired with: the body of `MATCHED` (to the waiter) and,
/// with the contact, of a v2 BRIDGE answer (to the asker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Introduction {
    /// The peer's declared contact.
    pub peer: Contact,
    /// Which protocol the peer speaks.
    pub peer_version: Version,
    /// The peer's server connection as the server sees it.
    pub observed: SocketAddr,
    /// Present when both sides speak version 2.
    pub ticket: Option<Ticket>,
}

/// The body of `UNMATCHED`: the match with `name` fell through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmatched {
    /// The peer who did not come.
    pub name: Name,
    /// The dead ticket, if the match had one.
    pub ticket: Option<Ticket>,
    /// One line saying why, for the person.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_round_trips_through_hex_and_never_prints_its_value() {
        let ticket = Ticket::from_bytes(*b"\x5f\x0c0123456789\xab\xcd\xef\x00");
        let mut hex = Vec::new();
        ticket.write_hex(&mut hex);
        assert_eq!(hex, b"5f0c30313233343536373839abcdef00");
        assert_eq!(Ticket::parse(&hex), Ok(ticket));
        assert_eq!(
            Ticket::parse(b"5F0C30313233343536373839ABCDEF00"),
            Ok(ticket)
        );
        assert_eq!(format!("{ticket} {ticket:?}"), "Ticket(…) Ticket(…)");
        for bad in [&b"5f0c"[..], b"5f0c30313233343536373839abcdef0g", b""] {
            assert_eq!(Ticket::parse(bad), Err(InvalidValue::NotATicket));
        }
    }
}
