//! The chat client as a sans-IO state machine.
//!
//! SKELETON: the public API below is fixed (transports and the CLI build on
//! it); the behaviour is being implemented.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::codec::Limits;
use crate::contact::Name;
use crate::outputs::OutputQueue;
use crate::{ConnId, Direction, Endpoint, Output};

/// How a client is set up; `ClientConfig::new` gives the contract's defaults.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The name to register.
    pub name: Name,
    /// The rendezvous server.
    pub server: SocketAddr,
    /// The chat port to listen on; 0 lets the system choose.
    pub listen_port: u16,
    /// The IP to register (`--ip`); by default the local address of the server connection.
    pub advertise_ip: Option<IpAddr>,
    /// Framing limits for what the server and peers send.
    pub limits: Limits,
    /// How long a TCP connect (to the server or a peer) may take: 5 s.
    pub connect_timeout: Duration,
    /// How long to wait for the answer to a request: 10 s.
    pub request_timeout: Duration,
    /// Emit `ClientEvent::Trace` for every chunk sent and received.
    pub trace: bool,
}

impl ClientConfig {
    pub fn new(name: Name, server: SocketAddr) -> ClientConfig {
        ClientConfig {
            name,
            server,
            listen_port: 0,
            advertise_ip: None,
            limits: Limits::default(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            trace: false,
        }
    }
}

/// The client's modes, as the contract names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    Unregistered,
    Registered,
    Wait,
    Ready,
    Write,
    Read,
}

impl Mode {
    /// The name printed when the mode is entered (`WAIT MODE`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Unregistered => "UNREGISTERED",
            Mode::Registered => "REGISTERED",
            Mode::Wait => "WAIT MODE",
            Mode::Ready => "READY MODE",
            Mode::Write => "WRITE MODE",
            Mode::Read => "READ MODE",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the person does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientInput {
    /// One line typed, without its line end: a `/command` or a message.
    Line(String),
    /// Standard input ended: acts as `/quit`, after the lines before it.
    EndOfInput,
    /// Ctrl+C: quit at once, from any mode (QUIT to the peer if chatting).
    Interrupt,
}

/// What the user interface shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// The chat listener is bound here.
    Listening(SocketAddr),
    /// The client entered `mode`; `peer` is the chat partner in READY/WRITE/READ.
    ModeChanged { mode: Mode, peer: Option<Name> },
    /// The peer's turn arrived: print as `<from>: <text>`.
    MessageReceived { from: Name, text: String },
    /// A message typed out of turn is held; it goes out when the turn comes.
    MessageHeld { pending: usize },
    /// The peer sent QUIT.
    PeerLeft { peer: Name },
    /// The chat connection closed without QUIT, or broke the protocol.
    PeerLost { peer: Name, reason: String },
    /// Information for the person (help text, confirmations).
    Info(String),
    /// Something went wrong; one line. Not fatal: fatal errors come as `Output::Exit(Err)`.
    Error(String),
    /// With `trace` on: bytes that went over `conn`.
    Trace {
        conn: ConnId,
        direction: Direction,
        bytes: Vec<u8>,
    },
}

/// The chat client. See the crate docs for how to drive it.
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    mode: Mode,
    outputs: OutputQueue<ClientEvent>,
}

impl Client {
    /// A client that will listen on its chat port and connect to the server.
    pub fn new(config: ClientConfig, now: Instant) -> Client {
        let _ = now;
        Client {
            config,
            mode: Mode::Unregistered,
            outputs: OutputQueue::default(),
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }
}

impl Endpoint for Client {
    type Input = ClientInput;
    type Event = ClientEvent;

    fn handle_listening(&mut self, _now: Instant, _addr: SocketAddr) {}
    fn handle_listen_failed(&mut self, _now: Instant, _addr: SocketAddr, _error: &str) {}
    fn handle_accept(&mut self, _now: Instant, _peer: SocketAddr) -> ConnId {
        ConnId(0)
    }
    fn handle_connected(&mut self, _now: Instant, _conn: ConnId, _local: SocketAddr) {}
    fn handle_connect_failed(&mut self, _now: Instant, _conn: ConnId, _error: &str) {}
    fn handle_data(&mut self, _now: Instant, _conn: ConnId, _bytes: &[u8]) {}
    fn handle_closed(&mut self, _now: Instant, _conn: ConnId) {}
    fn handle_input(&mut self, _now: Instant, _input: ClientInput) {}
    fn handle_timeout(&mut self, _now: Instant) {}
    fn poll_output(&mut self) -> Option<Output<'_, ClientEvent>> {
        self.outputs.pop()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}
