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
//!    open or close a connection, show an event; then feed back what came of
//!    them, one at a time, draining again after each.
//! 3. Ask `poll_timeout` for the next deadline; when it passes, call
//!    `handle_timeout(now)`. Sleeping in `poll` until then is the transport's job.
//!
//! Both implement [`Endpoint`]. Step 2, with feeding back what came of each
//! output (a listener bound, a connect that completed, a connection that
//! closed), is written once, in [`driver::drive`]; a transport implements
//! [`driver::Transport`] and keeps only its readiness or thread logic:
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use std::time::Instant;
//!
//! use bridgechat_core::driver::{drive, Outcome, Outcomes, Transport};
//! use bridgechat_core::server::{Server, ServerConfig, ServerEvent};
//! use bridgechat_core::{ConnId, Endpoint, ExitError};
//!
//! /// A transport's sockets (left out here) and what came of each output.
//! #[derive(Default)]
//! struct Sockets {
//!     outcomes: Outcomes,
//!     exit: Option<Result<(), ExitError>>,
//! }
//!
//! impl Transport<ServerEvent> for Sockets {
//!     fn now(&mut self) -> Instant {
//!         Instant::now()
//!     }
//!     fn listen(&mut self, addr: SocketAddr, _shared: bool) {
//!         // Bind a listener, then say what came of it.
//!         self.outcomes.push(Outcome::Listening(addr));
//!     }
//!     fn connect(&mut self, _conn: ConnId, _addr: SocketAddr, _from: Option<u16>) {
//!         // Start connecting; push `Connected` or `ConnectFailed` once it is decided.
//!     }
//!     fn transmit(&mut self, _conn: ConnId, _bytes: &[u8]) {
//!         // Queue the bytes on that connection, after what is queued there.
//!     }
//!     fn close(&mut self, _conn: ConnId) {
//!         // Send what is queued on it, then close it.
//!     }
//!     fn abort(&mut self, _conn: ConnId) {
//!         // Close it now with a reset, dropping what is queued.
//!     }
//!     fn show(&mut self, event: ServerEvent) {
//!         println!("{event:?}");
//!     }
//!     fn exit(&mut self, result: Result<(), ExitError>) {
//!         self.exit = Some(result);
//!     }
//!     fn outcomes(&mut self) -> &mut Outcomes {
//!         &mut self.outcomes
//!     }
//! }
//!
//! let mut server = Server::new(ServerConfig::default(), [0; 32]); // the CLI seeds from the OS
//! let mut sockets = Sockets::default();
//! // A new endpoint already holds outputs (its Listen): drive before the first wait.
//! while !drive(&mut server, &mut sockets) {
//!     // Wait for socket readiness, an input, or `poll_timeout()`, then feed what
//!     // happened: handle_accept, handle_data, handle_input, handle_timeout, or an
//!     // outcome such as `Outcome::Closed(conn)` for a connection the peer ended.
//!     let now = Instant::now();
//!     if server.poll_timeout().is_some_and(|deadline| deadline <= now) {
//!         server.handle_timeout(now);
//!     }
//! }
//! let result = sockets.exit.take().unwrap_or(Ok(()));
//! # let _ = result;
//! ```
//!
//! Connections are named by [`ConnId`]s that the core hands out; they are
//! never reused. Every protocol decision (answers, timeouts, limits, modes)
//! is made here; a transport never looks inside the bytes. A panic in this
//! crate is a bug, never a consequence of bytes from the network.

#![forbid(unsafe_code)]

pub mod client;
pub mod codec;
pub mod contact;
pub mod course;
pub mod driver;
mod error;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod operator;
mod outputs;
pub mod secure;
pub mod server;

pub use codec::{DecodeError, Decoder, Limits, Method, Request, Response, Status};
pub use contact::{Contact, Name};
pub use error::{ExitError, IoFailure};

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

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

/// Which way bytes went, for `--trace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Received,
    Sent,
}

/// What the core asks its transport to do. Drain with `poll_output` after every input.
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub enum Output<'a, E> {
    /// Bind a TCP listener on `addr`; report with `handle_listening` or `handle_listen_failed`.
    /// The bind is exclusive: it fails if anything holds the port. `shared`: outgoing
    /// connections asked for with `from: Some(port)` will bind this same port afterwards
    /// (`SO_REUSEADDR` and `SO_REUSEPORT`), so a peer or router sees them come from it.
    Listen { addr: SocketAddr, shared: bool },
    /// Open a TCP connection to `addr`; report with `handle_connected` or `handle_connect_failed`.
    /// `from`: bind this local port first (the shared listener's port), else an ephemeral one.
    /// The core times out connects itself (it emits `Close` for one that hangs).
    Connect {
        conn: ConnId,
        addr: SocketAddr,
        from: Option<u16>,
    },
    /// Send these bytes on `conn`, after everything queued before them.
    Transmit { conn: ConnId, bytes: &'a [u8] },
    /// Send what is queued on `conn`, then close it. The core has already forgotten it.
    Close { conn: ConnId },
    /// Close `conn` at once with a reset (`SO_LINGER` 0), dropping what is queued and
    /// freeing its socket now rather than after a graceful close. The core has already
    /// forgotten it. For a connection nothing is owed to, such as a silent stranger.
    Abort { conn: ConnId },
    /// Something to show or log.
    Event(E),
    /// Stop: flush what is queued, close everything, and end the loop with this result.
    Exit(Result<(), ExitError>),
}

/// The inputs every state machine takes; see the crate docs for the call order.
pub trait Endpoint {
    /// Inputs from outside the network: typed lines, Ctrl+C, a shutdown request.
    type Input: Send + 'static;
    /// Events for the user interface or the log.
    type Event;

    /// A listener asked for by `Output::Listen` is bound at `addr` (the port actually bound).
    fn handle_listening(&mut self, now: Instant, addr: SocketAddr);
    /// Binding the listener failed with the OS error `error`.
    fn handle_listen_failed(&mut self, now: Instant, addr: SocketAddr, error: &io::Error);
    /// The listener accepted a connection from `peer`; returns the id it goes by.
    fn handle_accept(&mut self, now: Instant, peer: SocketAddr) -> ConnId;
    /// A connection asked for by `Output::Connect` is established.
    fn handle_connected(&mut self, now: Instant, conn: ConnId, local: SocketAddr);
    /// A connection asked for by `Output::Connect` could not be established.
    fn handle_connect_failed(&mut self, now: Instant, conn: ConnId, error: &io::Error);
    /// Bytes arrived on `conn`.
    fn handle_data(&mut self, now: Instant, conn: ConnId, bytes: &[u8]);
    /// The other side closed `conn` (end of stream, reset, or a failed write).
    fn handle_closed(&mut self, now: Instant, conn: ConnId);
    /// The transport dropped `conn`: its peer left more than the transport's
    /// limit of output unread. By default the same as a close by the peer.
    fn handle_not_reading(&mut self, now: Instant, conn: ConnId) {
        self.handle_closed(now, conn);
    }
    /// An input from outside the network.
    fn handle_input(&mut self, now: Instant, input: Self::Input);
    /// Time has reached (or passed) the deadline from `poll_timeout`.
    fn handle_timeout(&mut self, now: Instant);
    /// The next thing to do, or `None` when drained.
    fn poll_output(&mut self) -> Option<Output<'_, Self::Event>>;
    /// When to call `handle_timeout` next, if ever.
    fn poll_timeout(&self) -> Option<Instant>;
}
