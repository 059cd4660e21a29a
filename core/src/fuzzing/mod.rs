//! Bodies of the fuzz targets, as plain functions so they also run as ordinary tests.
//!
//! Each function takes the fuzzer's bytes and panics only when an invariant of the
//! crate is broken; bytes from the network must never make it panic otherwise.
//! The state-machine targets read their operations from the bytes by hand, so the
//! crate needs no `arbitrary` dependency. They take the instant virtual time starts
//! at, because this crate reads no clock.
//!
//! Not part of the product: this module exists only with the `fuzzing` feature
//! (which the fuzz crate and this crate's own tests turn on) and in unit tests.

use std::net::{IpAddr, Ipv4Addr};

use crate::codec::{self, DecodeError, Decoder, Limits, Request, Response};
use crate::contact::{Contact, Name};

mod client;
mod registry;
mod secure;
mod server;

pub use crate::course::fuzz::decode as course;
pub use client::client;
pub use registry::{Bridged, Note, PendingMatch, Registered, RegistryModel};
pub use secure::secure;
pub use server::{course_server, server};

/// Small limits, so that a short input can reach every one of them.
const SMALL: Limits = Limits {
    max_head: 96,
    max_headers: 4,
    max_body: 64,
};

/// Decodes `data` as requests, whole and split, under default and small limits.
pub fn decode_request(data: &[u8]) {
    for limits in [Limits::default(), SMALL] {
        check_splits::<Request>(data, limits);
    }
}

/// Decodes `data` as responses, whole and split, under default and small limits.
pub fn decode_response(data: &[u8]) {
    for limits in [Limits::default(), SMALL] {
        check_splits::<Response>(data, limits);
    }
}

/// A message the codec reads and can write back out.
trait Message: Sized + PartialEq + std::fmt::Debug {
    fn reencode(&self) -> Option<Vec<u8>>;
    fn decode(decoder: &mut Decoder, input: &mut &[u8]) -> Result<Option<Self>, DecodeError>;
}

impl Message for Request {
    fn reencode(&self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        self.encode(&mut out).ok().map(|()| out)
    }
    fn decode(decoder: &mut Decoder, input: &mut &[u8]) -> Result<Option<Self>, DecodeError> {
        decoder.decode_request(input)
    }
}

impl Message for Response {
    fn reencode(&self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        self.encode(&mut out);
        Some(out)
    }
    fn decode(decoder: &mut Decoder, input: &mut &[u8]) -> Result<Option<Self>, DecodeError> {
        decoder.decode_response(input)
    }
}

/// The messages decoded from `chunks` in order, and whether a framing error ended them.
fn feed<T: Message>(chunks: &[&[u8]], limits: Limits) -> (Vec<T>, bool) {
    let mut decoder = Decoder::new(limits);
    let mut messages = Vec::new();
    for chunk in chunks {
        let mut input = *chunk;
        loop {
            let result = T::decode(&mut decoder, &mut input);
            assert!(
                decoder.buffered() <= limits.max_head + limits.max_body,
                "decoder holds {} bytes",
                decoder.buffered()
            );
            match result {
                Ok(Some(message)) => messages.push(message),
                Ok(None) => {
                    assert!(input.is_empty(), "Ok(None) left input untaken");
                    break;
                }
                Err(error) => {
                    assert!(error.status.code() >= 400, "framing error {error}");
                    return (messages, true);
                }
            }
        }
    }
    (messages, false)
}

fn check_splits<T: Message>(data: &[u8], limits: Limits) {
    let (whole, whole_failed) = feed::<T>(&[data], limits);
    let bytewise: Vec<&[u8]> = data.chunks(1).collect();
    // Chunk sizes 1..=64 drawn from the data itself, so the fuzzer steers them too.
    let mut uneven = Vec::new();
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = (usize::from(data[i % data.len()]) % 64 + 1).min(rest.len());
        uneven.push(&rest[..n]);
        rest = &rest[n..];
        i += 1;
    }
    for chunks in [bytewise, uneven] {
        let (split, split_failed) = feed::<T>(&chunks, limits);
        if !whole_failed && !split_failed {
            assert_eq!(whole, split, "the split changed the messages");
        } else {
            // A framing error may be noticed at a different byte, never a different message.
            let n = whole.len().min(split.len());
            assert_eq!(whole[..n], split[..n], "the split changed the messages");
        }
    }
    // Whatever decodes, re-encodes to bytes that decode to the same message.
    for message in &whole {
        if let Some(bytes) = message.reencode() {
            let (again, failed) = feed::<T>(&[&bytes], Limits::default());
            assert!(!failed, "re-encoded {message:?} does not decode");
            assert_eq!(again.as_slice(), std::slice::from_ref(message));
        }
    }
}

/// Reads operations from fuzzer bytes, one byte at a time.
struct OpReader<'a> {
    data: &'a [u8],
}

impl<'a> OpReader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    /// A byte, or 0 once the data has run out.
    fn arg(&mut self) -> u8 {
        self.byte().unwrap_or(0)
    }

    fn bytes(&mut self, max: usize) -> &'a [u8] {
        let n = usize::from(self.arg()).min(max).min(self.data.len());
        let (taken, rest) = self.data.split_at(n);
        self.data = rest;
        taken
    }
}

pub(crate) const NAMES: [&str; 4] = ["alice", "bob", "carol", "dave"];

fn fuzz_name(i: u8) -> Name {
    Name::new(NAMES[usize::from(i) % NAMES.len()].as_bytes()).expect("a valid name")
}

fn fuzz_contact(i: u8) -> Contact {
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + i % 3));
    Contact::new(fuzz_name(i), ip, 9000 + u16::from(i)).expect("a valid contact")
}

/// A well-formed request other than REGISTER/BRIDGE/UNREGISTER, chosen by `i`.
fn other_request(i: u8) -> Vec<u8> {
    let mut out = Vec::new();
    match i % 5 {
        0 => codec::write_chat(&mut out, &fuzz_contact(i / 5)),
        1 => codec::write_message(&mut out, "h\u{e9}llo\nworld".as_bytes()),
        2 => codec::write_quit(&mut out),
        3 => out.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        _ => {
            out.extend_from_slice(b"REGISTER / HTTP/1.1\r\nName: x y\r\nIP: ::1\r\nPort: 0\r\n\r\n")
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTER: &[u8] =
        b"REGISTER / HTTP/1.1\r\nName: alice\r\nIP: 127.0.0.1\r\nPort: 9001\r\n\r\n";

    #[test]
    fn decode_request_target_runs_on_valid_and_broken_input() {
        decode_request(b"");
        decode_request(REGISTER);
        decode_request(b"MESSAGE / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiQUIT / HTTP/1.1\r\n\r\n");
        decode_request(b"BRIDGE / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        decode_request(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        decode_request(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]);
    }

    #[test]
    fn decode_response_target_runs_on_valid_and_broken_input() {
        decode_response(
            b"HTTP/1.1 200 OK\r\nName: alice\r\nIP: ::1\r\nPort: 9001\r\nContent-Length: 0\r\n\r\n",
        );
        decode_response(
            b"HTTP/1.1 409 Conflict\r\nContent-Length: 5\r\n\r\ntakenHTTP/1.1 200 OK\r\n\r\n",
        );
        decode_response(b"HTTP/1.1 000 Zero\r\n\r\n");
        decode_response(b"HTTP/1.1 200 OK\r\nName: alice\r\n\r\n");
    }
}
