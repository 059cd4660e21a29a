//! The sans-IO heart of bridgechat.
//!
//! This crate holds the wire codec ([`codec`]) and the two protocol state
//! machines ([`server::Server`], [`client::Client`]). It opens no sockets,
//! starts no threads, reads no clock and prints nothing.
//!
//! # Driving contract
//!
//! Both state machines are driven the same way, by a transport that owns the
//! sockets and the clock:
//!
//! 1. Feed every input through a `handle_*` method, passing `now`: a
//!    connection opened or accepted, bytes received, a connection closed by
//!    the other side, a person's input line, a timer that fired.
//! 2. After **every** input, drain `poll_output` until it returns `None`, and
//!    carry out each output in order: send these bytes on that connection,
//!    open or close a connection, show an event.
//! 3. Ask `poll_timeout` for the next deadline; when it passes, call
//!    `handle_timeout(now)`. Sleeping in `poll` until then is the transport's job.
//!
//! Connections are named by [`ConnId`]s that the core hands out; they are
//! never reused. A panic in this crate is a bug, never a consequence of bytes
//! from the network.

#![forbid(unsafe_code)]

pub mod codec;
pub mod contact;

pub use codec::{DecodeError, Decoder, Limits, Method, Request, Response, Status};
pub use contact::{Contact, Name};

use std::fmt;

/// Names one connection for as long as the core knows it; never reused.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
