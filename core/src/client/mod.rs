//! The chat client as a sans-IO state machine.
//!
//! [`Client`] is driven like every [`Endpoint`] (see the crate docs): it never
//! opens a socket, reads a clock or prints; it asks its transport to listen,
//! connect, send and close, and reports what the person should see as
//! [`ClientEvent`]s.
//!
//! # Sub-machines
//!
//! Each part owns its state and every transition of it, in its own file:
//!
//! - `server_link`: the server connection, start-up, REGISTER, BRIDGE, the
//!   request in flight and reconnecting;
//! - `chat`: the READY peer, our `/chat`, the open chat, turns, held messages
//!   and QUIT;
//! - `incoming`: connections on the chat port until their CHAT is decided;
//! - `matching`: version 2's match as the waiter sees it (MATCHED, UNMATCHED,
//!   which CHAT a ticket lets in);
//! - `reach`: version 2's candidate connections to the introduced peer
//!   between the introduction and the chat (plain connect, hole punches from
//!   the chat port, the server's relay), for both roles;
//! - `modes`: the mode table that combines them.
//!
//! The course format (`--legacy`, or a peer the server says speaks it) lives
//! beside the part it extends: `server_link/course.rs` (REGISTER, BRIDGE and
//! their course answers), `chat/course.rs` (a course CHAT and raw turns) and
//! `course_incoming` (a course CHAT on the chat port).
//!
//! A sub-machine reports what happened (a "news" value); [`Client`] turns it
//! into a trigger for the mode table and into what the other parts must do.
//! This file only routes each input to the part that owns it.
//!
//! # Modes
//!
//! `UNREGISTERED → REGISTERED → (WAIT MODE | READY MODE) → (WRITE MODE ⇄ READ MODE) → REGISTERED`
//!
//! Every mode change goes through one function (`set_mode`), which emits
//! [`ClientEvent::ModeChanged`]. Every transition is decided in one table
//! (`next_mode`, a single `match` on mode and trigger); a trigger the table
//! does not allow is refused with a one-line reason and changes nothing.
//!
//! | from | trigger | to |
//! | --- | --- | --- |
//! | UNREGISTERED | the server answers REGISTER with 200 | REGISTERED |
//! | REGISTERED | the server answers REGISTER (`/name`) with 200 | REGISTERED |
//! | REGISTERED, WAIT MODE | the server answers BRIDGE with an empty 200 | WAIT MODE |
//! | REGISTERED, WAIT MODE | the server answers BRIDGE with a contact | READY MODE |
//! | READY MODE | the peer answers our CHAT with 200 (a course peer: our CHAT is sent) | WRITE MODE |
//! | READY MODE | `/chat` fails (refused, unreachable, no answer, no path and no relay) | REGISTERED |
//! | WAIT MODE | a peer's CHAT arrives (we answer 200; a course CHAT is not answered) | READ MODE |
//! | WRITE MODE | we send a MESSAGE | READ MODE |
//! | READ MODE | the peer's MESSAGE arrives | WRITE MODE |
//! | WRITE / READ MODE | QUIT, the chat connection closes, or a MESSAGE out of turn | REGISTERED |
//! | WRITE / READ MODE | the answer to a `/bridge` typed in WAIT MODE, after a peer's CHAT started the chat | unchanged |
//! | any but chatting | the server connection closes | UNREGISTERED |
//!
//! A chat that ends while the server connection is down ends in UNREGISTERED,
//! since the registration died with that connection. Version 2's MATCHED and
//! UNMATCHED notifications keep WAIT MODE (they are shown as lines); only the
//! matched peer's CHAT moves it on.
//!
//! # Inputs
//!
//! - `/register` (UNREGISTERED): REGISTER with our name, the IP
//!   (`advertise_ip`, else the local address of the server connection) and
//!   the chat port actually bound. If the server connection was lost, it is
//!   opened again first, with up to [`RECONNECT_ATTEMPTS`] attempts and a
//!   backoff between them.
//! - `/name NEWNAME` (UNREGISTERED, REGISTERED): REGISTER as `NEWNAME` (again
//!   on the same connection when registered, which replaces the registration);
//!   from its 200 on, `NEWNAME` is our name ([`ClientEvent::NameChanged`]).
//! - `/bridge` (REGISTERED, or again in WAIT MODE when a peer never came): BRIDGE.
//! - `/bridge NAME` (as `/bridge`, on a version 2 server only): BRIDGE with
//!   `Peer: NAME`, to meet NAME only; answered "wait", WAIT MODE for NAME.
//! - `/chat` (READY MODE): connect to the peer, send CHAT with our contact.
//!   Version 2 with a ticket: CHAT goes on the path `reach` found (a request
//!   in flight until one is up); the line `connected to bob directly` (or
//!   `(hole punched)`, or `relayed through the server`) shows when the chat opens.
//! - `/help` (any mode): the list of commands as [`ClientEvent::Info`].
//! - `/quit`, end of input (in order) and Ctrl+C (at once, from any mode):
//!   QUIT to the peer if chatting, close everything, `Output::Exit(Ok)`.
//! - Any other line is a message: sent in WRITE MODE; held in WAIT, READY
//!   and READ MODE (and while our CHAT awaits its answer) and sent when the
//!   turn comes; refused in UNREGISTERED and REGISTERED. Held messages still
//!   unsent when the chat ends are dropped, with an Info saying how many.
//!   Command words are recognised with surrounding whitespace trimmed.
//! - [`ClientInput::Message`] is always a message, whatever its text: a front
//!   end that tells commands from text itself sends a literal `/quit` so.
//!
//! One request is in flight at a time (start-up, REGISTER, BRIDGE, CHAT):
//! lines typed meanwhile are queued and handled in order after its answer.
//!
//! # Failures and bounds
//!
//! - Start-up: the chat listener is bound first (shared with our own
//!   outgoing connections), then the server connection starts from its port.
//!   A listener that cannot be bound, or a server that cannot be reached
//!   within `connect_timeout`, ends the client with `Output::Exit(Err)`.
//! - A 4xx (or any non-2xx) answer from the server is an Error event; the
//!   mode stays. No answer within `request_timeout` is an Error too and the
//!   mode stays; the late answer, if it ever comes, is skipped.
//! - The server connection closing is an Error (saying whether the chat goes
//!   on); a later `/register` reconnects, and a server that cannot be reached
//!   then is an Error after the last attempt: the client stays UNREGISTERED.
//!   Only the first connect, at start-up, is fatal.
//! - Incoming connections: at most [`MAX_INCOMING`] undecided at once (a
//!   newcomer past that closes the oldest one still silent), each
//!   must send its CHAT within `request_timeout` (else 408 and close). A CHAT
//!   that arrives while our BRIDGE is still in flight waits for its answer,
//!   since the server may already have handed us out.
//! - Bytes from the network never panic the client; every message is bounded
//!   by `limits`.

mod chat;
mod course_incoming;
mod endpoint;
pub use chat::SAFETY_CODE_HELP;
mod error;
mod incoming;
mod matching;
mod modes;
mod reach;
mod server_link;
mod server_news;

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::codec::{Limits, Request};
use crate::contact::{InvalidValue, Name};
use crate::outputs::OutputQueue;
use crate::{ConnId, Direction, Endpoint, ExitError, IoFailure, Output};

use chat::Chat;
pub use error::{ClientError, LostReason, NoContact, Reconnecting, RelayFailure, Unreachable};
use incoming::Incoming;
pub use incoming::MAX_INCOMING;
use matching::Matching;
pub use matching::Unprotected;
use modes::Trigger;
pub use modes::{Mode, Refusal};
use reach::Reach;
pub use reach::{Path, PUNCH_RETRY};
use server_link::ServerLink;
pub use server_link::{RECONNECT_ATTEMPTS, RECONNECT_BACKOFF, RECONNECT_WINDOW};

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
    /// Ask the server for protocol version 2 (`Bridgechat: 2` on REGISTER); a
    /// version 1 server ignores the ask and the client speaks version 1 to it.
    /// False speaks version 1 only.
    pub version2: bool,
    /// Refuse a chat that would not be end-to-end encrypted (a version 1 peer or server).
    pub require_encryption: bool,
    /// Speak the course format (`--legacy`) to the server and to every peer we
    /// ask; see `course_link` and `course_chat`. No encryption, no `/bridge NAME`.
    pub legacy: bool,
    /// Seeds the ephemeral keys of every encrypted chat: 32 bytes from the OS
    /// random source in the CLI; tests fix it. All zeros only in tests.
    pub seed: [u8; crate::secure::SEED_LEN],
    /// Version 2: how long the asker tries direct paths before the server's relay: 3 s.
    pub relay_after: Duration,
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
            version2: true,
            require_encryption: false,
            legacy: false,
            seed: [0; crate::secure::SEED_LEN],
            relay_after: Duration::from_secs(3),
        }
    }
}

/// What the person does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientInput {
    /// One line typed, without its line end: a `/command` or a message.
    Line(String),
    /// A message, never read as a command (may hold line breaks).
    Message(String),
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
    PeerLost { peer: Name, reason: LostReason },
    /// Information for the person (help text, confirmations).
    Info(String),
    /// The server accepted us under a new name (`/name`): our name from now on.
    NameChanged(Name),
    /// `/register` is connecting to the server again; one per attempt.
    Reconnecting(Reconnecting),
    /// Something went wrong; one line. Not fatal: fatal errors come as `Output::Exit(Err)`.
    Error(ClientError),
    /// The server answered REGISTER speaking protocol version 2; it sees our
    /// server connection coming from `observed`.
    ServerVersion2 { observed: Option<SocketAddr> },
    /// WAIT MODE (version 2): the server has just handed us to `peer`, whose CHAT
    /// should come now. `observed` is where the server sees the peer's server connection.
    Matched {
        peer: Name,
        peer_version: u8,
        observed: Option<SocketAddr>,
    },
    /// WAIT MODE (version 2): the match with `peer` fell through for `reason`; the
    /// server put us back in our waiting place (for `waiting_for`, or anyone).
    Unmatched {
        peer: Name,
        reason: String,
        waiting_for: Option<Name>,
    },
    /// A chat started without a ticket the server vouched for: the peer or the
    /// server speaks version 1.
    NotProtected { peer: Name, why: Unprotected },
    /// The chat connection is up (sent once as the chat opens): how it reached
    /// the peer. Shown as `connected to {peer}{path}`.
    Path { peer: Name, path: Path },
    /// An encrypted chat started: the safety code both people compare.
    Encrypted { peer: Name, safety_code: String },
    /// With `trace` on: the text of an encrypted frame that opened, or that we sealed.
    Decrypted {
        conn: ConnId,
        direction: Direction,
        text: Vec<u8>,
    },
    /// With `trace` on: bytes that went over `conn`.
    Trace {
        conn: ConnId,
        direction: Direction,
        bytes: Vec<u8>,
    },
}

/// The help text for `/help`.
pub const HELP: &str = "commands: /register (register with the server), \
/name NEWNAME (register under a new name), /bridge (find a peer), /bridge NAME (meet NAME only), \
/chat (start the chat with the READY peer), \
/quit (leave the chat and exit), /help (this list); any other line is a message";

/// What every sub-machine acts through: the config, the time of the input
/// being handled (never read from a clock), and the output queue.
#[derive(Debug)]
struct Ctx {
    config: ClientConfig,
    outputs: OutputQueue<ClientEvent>,
    now: Instant,
    next_id: u64,
    /// Seeds for handshakes, a ChaCha20 stream from `config.seed`.
    seeds: Seeds,
    /// The server sees our server connection at another IP than the one we
    /// registered: a router translates our addresses (version 2 servers say).
    behind_router: bool,
}

/// One fresh seed per handshake, from the config's seed.
pub(super) struct Seeds(rand_chacha::ChaCha20Rng);

impl Seeds {
    pub(super) fn new(seed: [u8; crate::secure::SEED_LEN]) -> Seeds {
        use rand_chacha::rand_core::SeedableRng;
        Seeds(rand_chacha::ChaCha20Rng::from_seed(seed))
    }
}

impl std::fmt::Debug for Seeds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seeds(…)")
    }
}

impl Ctx {
    fn draw_seed(&mut self) -> [u8; crate::secure::SEED_LEN] {
        use rand_chacha::rand_core::RngCore;
        let mut seed = [0; crate::secure::SEED_LEN];
        self.seeds.0.fill_bytes(&mut seed);
        seed
    }

    /// What a connection made from a chat port is: a hole punched through two
    /// routers only when both ends sit behind one; else a plain direct connection.
    fn punched_or_direct(&self, peer_behind_router: bool) -> reach::Path {
        if self.behind_router && peer_behind_router {
            reach::Path::HolePunched
        } else {
            reach::Path::Direct
        }
    }

    fn new_conn(&mut self) -> ConnId {
        self.next_id += 1;
        ConnId(self.next_id)
    }

    fn send(&mut self, conn: ConnId, write: impl FnOnce(&mut Vec<u8>)) {
        let bytes = self.outputs.transmit(conn, write);
        if self.config.trace {
            let bytes = bytes.to_vec();
            self.outputs.event(ClientEvent::Trace {
                conn,
                direction: Direction::Sent,
                bytes,
            });
        }
    }

    fn error(&mut self, error: ClientError) {
        self.outputs.event(ClientEvent::Error(error));
    }

    fn info(&mut self, message: String) {
        self.outputs.event(ClientEvent::Info(message));
    }
}

/// A line (or end of input) waiting for the request in flight to finish.
#[derive(Debug)]
enum Queued {
    Line(String),
    Message(String),
    EndOfInput,
}

/// The chat client. See the module docs for its modes and the crate docs for how to drive it.
#[derive(Debug)]
pub struct Client {
    ctx: Ctx,
    mode: Mode,
    /// The chat listener's address, once bound.
    listening: Option<SocketAddr>,
    server: ServerLink,
    chat: Chat,
    incoming: Incoming,
    matching: Matching,
    reach: Reach,
    /// The peer the last `ModeChanged` named: WAIT MODE is announced again when it changes.
    announced_peer: Option<Name>,
    queue: VecDeque<Queued>,
    exited: bool,
}

impl Client {
    /// A client that will listen on its chat port and connect to the server.
    pub fn new(config: ClientConfig, now: Instant) -> Client {
        // The chat port must be reachable at the IP we register: `--ip`, else the local
        // address of the server connection, which has the server's family.
        let registered_ip = config.advertise_ip.unwrap_or(config.server.ip());
        let any = match registered_ip {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let listen = SocketAddr::new(any, config.listen_port);
        let config_name = config.name;
        let seeds = Seeds::new(config.seed);
        let mut client = Client {
            ctx: Ctx {
                config,
                outputs: OutputQueue::default(),
                now,
                next_id: 0,
                seeds,
                behind_router: false,
            },
            mode: Mode::Unregistered,
            listening: None,
            server: ServerLink::new(config_name),
            chat: Chat::default(),
            incoming: Incoming::default(),
            matching: Matching::default(),
            reach: Reach::default(),
            announced_peer: None,
            queue: VecDeque::new(),
            exited: false,
        };
        // The server connection starts from the chat port once it is bound, so the
        // server observes (and tells peers) the address punches come from.
        client.ctx.outputs.listen(listen, true);
        client
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn config(&self) -> &ClientConfig {
        &self.ctx.config
    }

    /// Our name: the configured one until the server accepts another (`/name`).
    pub fn name(&self) -> Name {
        self.server.name()
    }

    /// The peer in READY, WRITE or READ MODE; in WAIT MODE the one `/bridge NAME` waits for.
    pub fn peer(&self) -> Option<Name> {
        match self.mode {
            Mode::Wait => self.matching.waiting_for(),
            Mode::Ready => self.chat.ready_peer(),
            Mode::Write | Mode::Read => self.chat.peer(),
            _ => None,
        }
    }

    /// Messages typed out of turn and not sent yet.
    pub fn held_messages(&self) -> usize {
        self.chat.held()
    }

    // -----------------------------------------------------------------------
    // The person's input

    /// A request is in flight: start-up, REGISTER, BRIDGE or our CHAT (also
    /// while it waits for a path to the peer).
    fn in_flight(&self) -> bool {
        self.server.busy() || self.chat_starting()
    }

    /// Our CHAT waits for a path, or for its answer.
    fn chat_starting(&self) -> bool {
        self.chat.awaiting_answer() || self.reach.chat_wanted()
    }

    fn is_busy(&self) -> bool {
        self.in_flight() || !self.queue.is_empty()
    }

    /// Whether a new input must wait in the queue. While our CHAT awaits its
    /// answer a message is held at once (READY MODE), unless earlier lines
    /// still wait their turn.
    fn waits(&self, message: bool) -> bool {
        let hold_now = message && self.chat_starting() && self.queue.is_empty();
        self.is_busy() && !hold_now
    }

    /// Handles queued lines while no request is in flight.
    fn pump(&mut self) {
        while !self.exited && !self.in_flight() {
            match self.queue.pop_front() {
                Some(Queued::Line(line)) => self.handle_line(line),
                Some(Queued::Message(text)) => self.message_line(text.into_bytes()),
                Some(Queued::EndOfInput) => self.quit(),
                None => return,
            }
        }
    }

    fn handle_line(&mut self, line: String) {
        if let Some(raw) = name_argument(&line) {
            return self.command_name(raw);
        }
        match line.trim() {
            "/register" => self.command_register(),
            "/bridge" => self.command_bridge(None),
            "/chat" => self.command_chat(),
            "/quit" => self.quit(),
            "/help" => self.ctx.info(HELP.to_owned()),
            other => match bridge_argument(other) {
                Some(Ok(peer)) => self.command_bridge(Some(peer)),
                Some(Err(why)) => self.ctx.error(ClientError::BadPeerName(why)),
                None => self.message_line(line.into_bytes()),
            },
        }
    }

    fn is_command(line: &str) -> bool {
        let line = line.trim();
        matches!(line, "/register" | "/bridge" | "/chat" | "/quit" | "/help")
            || name_argument(line).is_some()
            || bridge_argument(line).is_some()
    }

    /// `/quit`, end of input and Ctrl+C: QUIT to the peer if chatting, close all, exit.
    fn quit(&mut self) {
        if self.exited {
            return;
        }
        self.chat.quit(&mut self.ctx);
        self.chat.drop_held(&mut self.ctx);
        self.finish(Ok(()));
    }

    /// Closes every connection and exits with `result`.
    fn finish(&mut self, result: Result<(), ExitError>) {
        self.chat.close(&mut self.ctx);
        self.reach.stop(&mut self.ctx);
        self.incoming.close_all(&mut self.ctx);
        self.server.close(&mut self.ctx);
        self.queue.clear();
        self.exited = true;
        self.ctx.outputs.exit(result);
    }

    /// Start-up is over once the listener is bound and the first connect has finished.
    fn finish_startup(&mut self) {
        if self.server.finish_startup(self.listening.is_some()) {
            self.pump();
        }
    }

    fn knows(&self, conn: ConnId) -> bool {
        self.server.conn() == Some(conn)
            || self.chat.owns(conn)
            || self.reach.owns(conn)
            || self.incoming.owns(conn)
    }
}

/// What follows `/name` (trimmed, maybe empty), if `line` is that command.
fn name_argument(line: &str) -> Option<&str> {
    let rest = line.trim().strip_prefix("/name")?;
    (rest.is_empty() || rest.starts_with(char::is_whitespace)).then(|| rest.trim())
}

/// The NAME of `/bridge NAME` (a trimmed line); `None` if the line is not one.
fn bridge_argument(line: &str) -> Option<Result<Name, InvalidValue>> {
    let (word, argument) = line.split_once(char::is_whitespace)?;
    (word == "/bridge").then(|| argument.trim().parse())
}

/// The method of a decoded request, for error messages.
fn request_name(request: &Request) -> &'static str {
    match request {
        Request::Register(..) => "REGISTER",
        Request::Bridge { .. } => "BRIDGE",
        Request::Unregister => "UNREGISTER",
        Request::Chat(..) => "CHAT",
        Request::Matched(_) => "MATCHED",
        Request::Unmatched(_) => "UNMATCHED",
        Request::Started(_) => "STARTED",
        Request::Relay(_) => "RELAY",
        Request::Message(_) => "MESSAGE",
        Request::Quit | Request::QuitWith { .. } => "QUIT",
        Request::Unknown | Request::Page(_) => "an unknown method",
        Request::Invalid { method, .. } => method.as_str(),
    }
}

/// Text from the network made safe to show as one line: no control characters, bounded.
fn one_line(text: &str) -> String {
    const MAX_CHARS: usize = 200;
    text.chars()
        .take(MAX_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
