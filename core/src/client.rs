//! The chat client as a sans-IO state machine.
//!
//! [`Client`] is driven like every [`Endpoint`] (see the crate docs): it never
//! opens a socket, reads a clock or prints; it asks its transport to listen,
//! connect, send and close, and reports what the person should see as
//! [`ClientEvent`]s.
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
//! | REGISTERED, WAIT MODE | the server answers BRIDGE with an empty 200 | WAIT MODE |
//! | REGISTERED, WAIT MODE | the server answers BRIDGE with a contact | READY MODE |
//! | READY MODE | the peer answers our CHAT with 200 | WRITE MODE |
//! | READY MODE | `/chat` fails (refused, unreachable, no answer) | REGISTERED |
//! | WAIT MODE | a peer's CHAT arrives (we answer 200) | READ MODE |
//! | WRITE MODE | we send a MESSAGE | READ MODE |
//! | READ MODE | the peer's MESSAGE arrives | WRITE MODE |
//! | WRITE / READ MODE | QUIT, the chat connection closes, or a MESSAGE out of turn | REGISTERED |
//! | any but chatting | the server connection closes | UNREGISTERED |
//!
//! A chat that ends while the server connection is down ends in UNREGISTERED,
//! since the registration died with that connection.
//!
//! # Inputs
//!
//! - `/register` (UNREGISTERED): REGISTER with our name, the IP
//!   (`advertise_ip`, else the local address of the server connection) and
//!   the chat port actually bound. If the server connection was lost, it is
//!   opened again first.
//! - `/bridge` (REGISTERED, or again in WAIT MODE when a peer never came): BRIDGE.
//! - `/chat` (READY MODE): connect to the peer, send CHAT with our contact.
//! - `/help` (any mode): the list of commands as [`ClientEvent::Info`].
//! - `/quit`, end of input (in order) and Ctrl+C (at once, from any mode):
//!   QUIT to the peer if chatting, close everything, `Output::Exit(Ok)`.
//! - Any other line is a message: sent in WRITE MODE; held in WAIT, READY
//!   and READ MODE (and while our CHAT awaits its answer) and sent when the
//!   turn comes; refused in UNREGISTERED and REGISTERED. Held messages still
//!   unsent when the chat ends are dropped, with an Info saying how many.
//!   Command words are recognised with surrounding whitespace trimmed.
//!
//! One request is in flight at a time (start-up, REGISTER, BRIDGE, CHAT):
//! lines typed meanwhile are queued and handled in order after its answer.
//!
//! # Failures and bounds
//!
//! - Start-up: a listener that cannot be bound, or a server that cannot be
//!   reached within `connect_timeout`, ends the client with `Output::Exit(Err)`.
//! - A 4xx (or any non-2xx) answer from the server is an Error event; the
//!   mode stays. No answer within `request_timeout` is an Error too and the
//!   mode stays; the late answer, if it ever comes, is skipped.
//! - The server connection closing is an Error; a later `/register` reconnects,
//!   and a server that cannot be reached then ends the client (`Exit(Err)`).
//! - Incoming connections: at most [`MAX_INCOMING`] undecided at once (a
//!   newcomer past that closes the oldest one still silent), each
//!   must send its CHAT within `request_timeout` (else 408 and close). A CHAT
//!   that arrives while our BRIDGE is still in flight waits for its answer,
//!   since the server may already have handed us out.
//! - Bytes from the network never panic the client; every message is bounded
//!   by `limits`.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::codec::{self, AfterError, Decoder, Limits, Request, Response, Status};
use crate::contact::{Contact, Name};
use crate::outputs::OutputQueue;
use crate::{ConnId, Direction, Endpoint, Output};

/// Incoming connections that have not yet sent their CHAT, at most.
pub const MAX_INCOMING: usize = 8;

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

/// The help text for `/help`.
pub const HELP: &str = "commands: /register (register with the server), \
/bridge (find a peer), /chat (start the chat with the READY peer), \
/quit (leave the chat and exit), /help (this list); any other line is a message";

/// What may move the client between modes; `next_mode` says where to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    // The person's commands: an allowed one keeps the mode (its answer moves it).
    RegisterCommand,
    BridgeCommand,
    ChatCommand,
    /// A message line: sent in WRITE MODE, held while it is not our turn.
    MessageLine,
    // Answers from the server.
    Registered,
    NoPeerWaiting,
    PeerWaiting,
    // The chat.
    /// The peer answered our CHAT with 200.
    ChatAccepted,
    /// A peer's CHAT arrived on an incoming connection.
    ChatRequested,
    MessageSent,
    MessageReceived,
    /// QUIT either way, the chat connection lost, or a failed `/chat`.
    ChatEnded,
    ServerLost,
}

/// Facts besides the mode that the table needs.
#[derive(Debug, Clone, Copy)]
struct Context {
    server_up: bool,
    /// A chat connection exists (being set up or open).
    chat_link: bool,
}

/// The transition table: where `trigger` takes `mode`, or why it may not happen.
fn next_mode(mode: Mode, trigger: Trigger, ctx: Context) -> Result<Mode, &'static str> {
    use Mode::*;
    use Trigger as T;
    let after_chat = if ctx.server_up {
        Registered
    } else {
        Unregistered
    };
    match (mode, trigger) {
        (Unregistered, T::RegisterCommand) => Ok(mode),
        (Registered | Wait | Ready, T::RegisterCommand) => Err("already registered"),
        (Write | Read, T::RegisterCommand) => Err("already in a chat"),

        // Again from WAIT MODE: if the server handed us to a peer who never came,
        // this puts us back in its waiting slot (or pairs us with a newer waiter).
        (Registered | Wait, T::BridgeCommand) => Ok(mode),
        (Unregistered, T::BridgeCommand) => Err("register first: type /register"),
        (Ready, T::BridgeCommand) => Err("a peer is ready: type /chat to start the chat"),
        (Write | Read, T::BridgeCommand) => Err("already in a chat"),

        (Ready, T::ChatCommand) if !ctx.chat_link => Ok(mode),
        (Ready, T::ChatCommand) => Err("already starting the chat"),
        (Unregistered, T::ChatCommand) => Err("register first: type /register"),
        (Registered, T::ChatCommand) => Err("no peer yet: type /bridge first"),
        (Wait, T::ChatCommand) => {
            Err("in WAIT MODE the peer starts the chat: /chat is for the READY side")
        }
        (Write | Read, T::ChatCommand) => Err("already in a chat"),

        (Wait | Ready | Write | Read, T::MessageLine) => Ok(mode),
        (Unregistered, T::MessageLine) => {
            Err("not in a chat: type /register, then /bridge to find a peer")
        }
        (Registered, T::MessageLine) => Err("not in a chat: type /bridge to find a peer"),

        (Unregistered, T::Registered) => Ok(Registered),
        (Registered | Wait, T::NoPeerWaiting) => Ok(Wait),
        (Registered | Wait, T::PeerWaiting) => Ok(Ready),

        (Ready, T::ChatAccepted) => Ok(Write),
        (Wait, T::ChatRequested) => Ok(Read),
        (Write | Read, T::ChatRequested) => Err("already in a chat"),
        (Unregistered | Registered | Ready, T::ChatRequested) => Err("not waiting for a peer"),
        (Write, T::MessageSent) => Ok(Read),
        (Read, T::MessageReceived) => Ok(Write),
        (Write, T::MessageReceived) => Err("a message arrived out of turn"),
        (Ready | Write | Read, T::ChatEnded) => Ok(after_chat),

        // A chat outlives the server connection: the server never carries chat text.
        (Ready | Write | Read, T::ServerLost) if ctx.chat_link => Ok(mode),
        (_, T::ServerLost) => Ok(Unregistered),

        (
            _,
            T::Registered
            | T::NoPeerWaiting
            | T::PeerWaiting
            | T::ChatAccepted
            | T::MessageSent
            | T::MessageReceived
            | T::ChatEnded,
        ) => Err("not expected in this mode"),
    }
}

/// The one request the client waits for; lines typed meanwhile are queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    /// Opening the chat listener and the server connection.
    Startup,
    /// `/register` with the server connection down: reconnecting first.
    Reconnect,
    /// REGISTER sent with this contact.
    Register {
        contact: Contact,
        deadline: Instant,
    },
    Bridge {
        deadline: Instant,
    },
    /// `/chat`: connecting to the peer, then waiting for its answer to CHAT.
    Chat {
        deadline: Instant,
    },
}

impl Pending {
    fn deadline(&self) -> Option<Instant> {
        match self {
            Pending::Startup | Pending::Reconnect => None,
            Pending::Register { deadline, .. }
            | Pending::Bridge { deadline }
            | Pending::Chat { deadline } => Some(*deadline),
        }
    }
}

#[derive(Debug)]
enum ServerLink {
    Down,
    Connecting {
        conn: ConnId,
        deadline: Instant,
    },
    Up {
        conn: ConnId,
        decoder: Decoder,
        local_ip: IpAddr,
    },
}

impl ServerLink {
    fn conn(&self) -> Option<ConnId> {
        match self {
            ServerLink::Down => None,
            ServerLink::Connecting { conn, .. } | ServerLink::Up { conn, .. } => Some(*conn),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChatStage {
    /// We asked the transport to connect to the READY peer.
    Connecting,
    /// CHAT sent; its answer not yet in.
    Asked,
    /// The chat is on: MESSAGEs and QUIT both ways.
    Open,
}

/// The one chat connection, outgoing (we sent CHAT) or incoming (we answered it).
#[derive(Debug)]
struct Chat {
    conn: ConnId,
    peer: Name,
    /// The READY peer's address, for error messages.
    addr: Option<SocketAddr>,
    decoder: Decoder,
    stage: ChatStage,
}

/// An accepted connection that has not sent its CHAT yet.
#[derive(Debug)]
struct Incoming {
    decoder: Decoder,
    /// When it must have sent CHAT; `None` once parked.
    deadline: Option<Instant>,
    /// A CHAT that arrived while our BRIDGE was in flight, and the bytes after it.
    parked: Option<(Contact, Vec<u8>)>,
}

/// A line (or end of input) waiting for the request in flight to finish.
#[derive(Debug)]
enum Queued {
    Line(String),
    EndOfInput,
}

/// The chat client. See the module docs for its modes and the crate docs for how to drive it.
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    mode: Mode,
    outputs: OutputQueue<ClientEvent>,
    /// The time of the input being handled; never read from a clock.
    now: Instant,
    next_id: u64,
    /// The chat listener's address, once bound.
    listening: Option<SocketAddr>,
    server: ServerLink,
    pending: Option<Pending>,
    /// Server answers to skip: requests that timed out may still be answered.
    stale_answers: usize,
    queue: VecDeque<Queued>,
    /// Messages typed out of turn, oldest first.
    held: VecDeque<Vec<u8>>,
    /// What the server last accepted in REGISTER; we send it in CHAT and its answer.
    me: Option<Contact>,
    /// The peer the server handed us, in READY MODE.
    ready_peer: Option<Contact>,
    chat: Option<Chat>,
    incoming: BTreeMap<ConnId, Incoming>,
    exited: bool,
}

impl Client {
    /// A client that will listen on its chat port and connect to the server.
    pub fn new(config: ClientConfig, now: Instant) -> Client {
        let mut client = Client {
            mode: Mode::Unregistered,
            outputs: OutputQueue::default(),
            now,
            next_id: 0,
            listening: None,
            server: ServerLink::Down,
            pending: Some(Pending::Startup),
            stale_answers: 0,
            queue: VecDeque::new(),
            held: VecDeque::new(),
            me: None,
            ready_peer: None,
            chat: None,
            incoming: BTreeMap::new(),
            exited: false,
            config,
        };
        // The chat port must be reachable at the IP we register: `--ip`, else the local
        // address of the server connection, which has the server's family.
        let registered_ip = client
            .config
            .advertise_ip
            .unwrap_or(client.config.server.ip());
        let any = match registered_ip {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        client
            .outputs
            .listen(SocketAddr::new(any, client.config.listen_port));
        client.connect_server();
        client
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The peer in READY, WRITE or READ MODE.
    pub fn peer(&self) -> Option<Name> {
        match self.mode {
            Mode::Ready => self.ready_peer.map(|c| c.name),
            Mode::Write | Mode::Read => self.chat.as_ref().map(|c| c.peer),
            _ => None,
        }
    }

    /// Messages typed out of turn and not sent yet.
    pub fn held_messages(&self) -> usize {
        self.held.len()
    }

    /// True once the client asked to exit; it ignores every input after that.
    pub fn has_exited(&self) -> bool {
        self.exited
    }

    // -----------------------------------------------------------------------
    // Modes

    fn context(&self) -> Context {
        Context {
            server_up: matches!(self.server, ServerLink::Up { .. }),
            chat_link: self.chat.is_some(),
        }
    }

    /// Looks `trigger` up in the table without changing anything.
    fn check(&self, trigger: Trigger) -> Result<Mode, &'static str> {
        next_mode(self.mode, trigger, self.context())
    }

    /// Looks `trigger` up and enters the mode it leads to.
    fn enter(&mut self, trigger: Trigger) -> Result<(), &'static str> {
        let next = self.check(trigger)?;
        self.set_mode(next);
        Ok(())
    }

    /// The one place the mode changes.
    fn set_mode(&mut self, next: Mode) {
        if next == self.mode {
            return;
        }
        if matches!(next, Mode::Unregistered | Mode::Registered) {
            self.ready_peer = None;
            self.drop_held();
        }
        self.mode = next;
        let peer = self.peer();
        self.outputs
            .event(ClientEvent::ModeChanged { mode: next, peer });
    }

    fn drop_held(&mut self) {
        let n = self.held.len();
        if n > 0 {
            self.held.clear();
            let what = if n == 1 {
                "1 held message was".to_owned()
            } else {
                format!("{n} held messages were")
            };
            self.info(format!("{what} not sent: the chat is over"));
        }
    }

    // -----------------------------------------------------------------------
    // The person's input

    fn is_busy(&self) -> bool {
        self.pending.is_some() || !self.queue.is_empty()
    }

    /// Handles queued lines while no request is in flight.
    fn pump(&mut self) {
        while !self.exited && self.pending.is_none() {
            match self.queue.pop_front() {
                Some(Queued::Line(line)) => self.handle_line(line),
                Some(Queued::EndOfInput) => self.quit(),
                None => return,
            }
        }
    }

    fn handle_line(&mut self, line: String) {
        match line.trim() {
            "/register" => self.command_register(),
            "/bridge" => self.command_bridge(),
            "/chat" => self.command_chat(),
            "/quit" => self.quit(),
            "/help" => self.info(HELP.to_owned()),
            _ => self.message_line(line.into_bytes()),
        }
    }

    fn is_command(line: &str) -> bool {
        matches!(
            line.trim(),
            "/register" | "/bridge" | "/chat" | "/quit" | "/help"
        )
    }

    fn command_register(&mut self) {
        if let Err(reason) = self.check(Trigger::RegisterCommand) {
            return self.error(reason.to_owned());
        }
        match self.server {
            ServerLink::Up { .. } => self.send_register(),
            ServerLink::Down => {
                self.pending = Some(Pending::Reconnect);
                self.connect_server();
            }
            // Start-up holds every line until the first connect has finished.
            ServerLink::Connecting { .. } => {}
        }
    }

    fn command_bridge(&mut self) {
        if let Err(reason) = self.check(Trigger::BridgeCommand) {
            return self.error(reason.to_owned());
        }
        let Some(conn) = self.server.conn() else {
            return self.error("not connected to the server: type /register".to_owned());
        };
        self.send(conn, |out| codec::write_bridge(out, None));
        self.pending = Some(Pending::Bridge {
            deadline: self.now + self.config.request_timeout,
        });
    }

    fn command_chat(&mut self) {
        if let Err(reason) = self.check(Trigger::ChatCommand) {
            return self.error(reason.to_owned());
        }
        let Some(peer) = self.ready_peer else {
            return self.error("no peer to chat with: type /bridge".to_owned());
        };
        let conn = self.new_conn();
        self.chat = Some(Chat {
            conn,
            peer: peer.name,
            addr: Some(peer.socket_addr()),
            decoder: Decoder::new(self.config.limits),
            stage: ChatStage::Connecting,
        });
        self.pending = Some(Pending::Chat {
            deadline: self.now + self.config.connect_timeout,
        });
        self.outputs.connect(conn, peer.socket_addr());
    }

    fn message_line(&mut self, text: Vec<u8>) {
        if let Err(reason) = self.check(Trigger::MessageLine) {
            return self.error(reason.to_owned());
        }
        let max = self.config.limits.max_body;
        if text.len() > max {
            return self.error(format!(
                "message too long: {} bytes, at most {max}",
                text.len()
            ));
        }
        if self.mode == Mode::Write {
            self.send_message(text);
        } else {
            self.held.push_back(text);
            self.outputs.event(ClientEvent::MessageHeld {
                pending: self.held.len(),
            });
        }
    }

    /// `/quit`, end of input and Ctrl+C: QUIT to the peer if chatting, close all, exit.
    fn quit(&mut self) {
        if self.exited {
            return;
        }
        if let Some(chat) = self.chat.take() {
            if chat.stage != ChatStage::Connecting {
                self.send(chat.conn, codec::write_quit);
            }
            self.outputs.close(chat.conn);
        }
        self.drop_held();
        self.finish(Ok(()));
    }

    /// Closes every connection and exits with `result`.
    fn finish(&mut self, result: Result<(), String>) {
        if let Some(chat) = self.chat.take() {
            self.outputs.close(chat.conn);
        }
        for conn in std::mem::take(&mut self.incoming).into_keys() {
            self.outputs.close(conn);
        }
        if let Some(conn) = self.server.conn() {
            self.outputs.close(conn);
        }
        self.server = ServerLink::Down;
        self.pending = None;
        self.queue.clear();
        self.exited = true;
        self.outputs.exit(result);
    }

    // -----------------------------------------------------------------------
    // The server connection

    fn connect_server(&mut self) {
        let conn = self.new_conn();
        self.server = ServerLink::Connecting {
            conn,
            deadline: self.now + self.config.connect_timeout,
        };
        self.outputs.connect(conn, self.config.server);
    }

    /// Start-up is over once the listener is bound and the first connect has finished.
    fn finish_startup(&mut self) {
        if self.pending == Some(Pending::Startup)
            && self.listening.is_some()
            && !matches!(self.server, ServerLink::Connecting { .. })
        {
            self.pending = None;
            self.pump();
        }
    }

    /// The contact to register: our name, the advertised or local IP, the bound port.
    fn own_contact(&self) -> Result<Contact, String> {
        let ip = match (self.config.advertise_ip, &self.server) {
            (Some(ip), _) => ip,
            (None, ServerLink::Up { local_ip, .. }) => *local_ip,
            (None, _) => return Err("not connected to the server".to_owned()),
        };
        let port = self.listening.map_or(0, |a| a.port());
        Contact::new(self.config.name, ip, port)
            .map_err(|_| "the chat listener has no port to register".to_owned())
    }

    fn send_register(&mut self) {
        let contact = match self.own_contact() {
            Ok(contact) => contact,
            Err(reason) => return self.error(format!("cannot register: {reason}")),
        };
        let Some(conn) = self.server.conn() else {
            return;
        };
        self.send(conn, |out| codec::write_register(out, &contact));
        self.pending = Some(Pending::Register {
            contact,
            deadline: self.now + self.config.request_timeout,
        });
    }

    fn server_data(&mut self, bytes: &[u8]) {
        let mut input = bytes;
        while !self.exited {
            let ServerLink::Up { decoder, .. } = &mut self.server else {
                return;
            };
            match decoder.decode_response(&mut input) {
                Ok(Some(response)) => self.server_answer(response),
                Ok(None) => return,
                Err(e) => {
                    return self.lose_server(&format!(
                        "lost connection to the server: it sent a malformed answer ({e})"
                    ));
                }
            }
        }
    }

    fn server_answer(&mut self, response: Response) {
        if self.stale_answers > 0 {
            self.stale_answers -= 1;
            return;
        }
        match self.pending {
            Some(Pending::Register { contact, .. }) => {
                self.pending = None;
                if response.status.is_success() {
                    self.me = Some(contact);
                    let _ = self.enter(Trigger::Registered);
                } else {
                    self.refused_by_server(&response);
                }
            }
            Some(Pending::Bridge { .. }) => {
                self.pending = None;
                if !response.status.is_success() {
                    self.refused_by_server(&response);
                } else if let Some(peer) = response.contact {
                    self.ready_peer = Some(peer);
                    let _ = self.enter(Trigger::PeerWaiting);
                } else {
                    let _ = self.enter(Trigger::NoPeerWaiting);
                }
                self.decide_parked();
            }
            _ => {
                return self.error(format!(
                    "the server sent an answer nobody asked for ({}); ignored",
                    response.status
                ));
            }
        }
        self.pump();
    }

    fn refused_by_server(&mut self, response: &Response) {
        let reason = one_line(&response.reason_text());
        self.error(if reason.is_empty() {
            format!("server refused: {}", response.status)
        } else {
            format!("server refused: {}: {reason}", response.status)
        });
    }

    /// Closes the server connection (if still open) and reports `message`.
    fn lose_server(&mut self, message: &str) {
        if let Some(conn) = self.server.conn() {
            self.outputs.close(conn);
        }
        self.server_gone(message);
    }

    /// The server connection is gone: whatever waited for it is over.
    fn server_gone(&mut self, message: &str) {
        self.server = ServerLink::Down;
        self.stale_answers = 0;
        self.error(message.to_owned());
        let bridging = matches!(self.pending, Some(Pending::Bridge { .. }));
        if matches!(
            self.pending,
            Some(Pending::Reconnect | Pending::Register { .. } | Pending::Bridge { .. })
        ) {
            self.pending = None;
        }
        let _ = self.enter(Trigger::ServerLost);
        if bridging {
            self.decide_parked();
        }
        self.finish_startup();
        self.pump();
    }

    // -----------------------------------------------------------------------
    // The chat connection

    fn send_message(&mut self, text: Vec<u8>) {
        let Some(conn) = self.chat.as_ref().map(|c| c.conn) else {
            return;
        };
        self.send(conn, |out| codec::write_message(out, &text));
        let _ = self.enter(Trigger::MessageSent);
    }

    /// Entering WRITE MODE with held messages sends the oldest at once.
    fn send_held(&mut self) {
        if self.mode == Mode::Write {
            if let Some(text) = self.held.pop_front() {
                self.send_message(text);
            }
        }
    }

    fn chat_data(&mut self, bytes: &[u8]) {
        let mut input = bytes;
        while !self.exited {
            let Some(chat) = self.chat.as_mut() else {
                return;
            };
            match chat.stage {
                ChatStage::Connecting => return,
                ChatStage::Asked => match chat.decoder.decode_response(&mut input) {
                    Ok(Some(response)) => self.chat_answer(response),
                    Ok(None) => return,
                    Err(e) => {
                        let peer = chat.peer;
                        return self.fail_chat(
                            format!("{peer} sent a malformed answer to CHAT ({e})"),
                            true,
                        );
                    }
                },
                ChatStage::Open => match chat.decoder.decode_request(&mut input) {
                    Ok(Some(Request::Message(text))) => self.peer_message(text),
                    Ok(Some(Request::Quit)) => self.peer_quit(),
                    Ok(Some(other)) => {
                        return self.lose_chat(
                            format!("protocol error: {} during the chat", request_name(&other)),
                            true,
                        );
                    }
                    Ok(None) => return,
                    Err(e) => return self.lose_chat(format!("protocol error: {e}"), true),
                },
            }
        }
    }

    fn chat_answer(&mut self, response: Response) {
        let Some(chat) = self.chat.as_mut() else {
            return;
        };
        if !response.status.is_success() {
            let reason = one_line(&response.reason_text());
            let peer = chat.peer;
            let status = response.status;
            let message = if reason.is_empty() {
                format!("{peer} refused the chat: {status}")
            } else {
                format!("{peer} refused the chat: {status}: {reason}")
            };
            return self.fail_chat(message, true);
        }
        // The answer names who actually listens at that address.
        if let Some(contact) = response.contact {
            chat.peer = contact.name;
        }
        chat.stage = ChatStage::Open;
        self.pending = None;
        let _ = self.enter(Trigger::ChatAccepted);
        self.send_held();
        self.pump();
    }

    /// Our `/chat` did not work out: report, close (unless already gone), back to REGISTERED.
    fn fail_chat(&mut self, message: String, close: bool) {
        if let Some(chat) = self.chat.take() {
            if close {
                self.outputs.close(chat.conn);
            }
        }
        self.pending = None;
        self.error(message);
        let _ = self.enter(Trigger::ChatEnded);
        self.pump();
    }

    fn peer_message(&mut self, text: Vec<u8>) {
        let Some(from) = self.chat.as_ref().map(|c| c.peer) else {
            return;
        };
        match self.check(Trigger::MessageReceived) {
            Ok(next) => {
                let text = String::from_utf8_lossy(&text).into_owned();
                self.outputs
                    .event(ClientEvent::MessageReceived { from, text });
                self.set_mode(next);
                self.send_held();
            }
            Err(reason) => self.lose_chat(format!("protocol error: {reason}"), true),
        }
    }

    fn peer_quit(&mut self) {
        let Some(chat) = self.chat.take() else {
            return;
        };
        self.outputs.close(chat.conn);
        self.outputs
            .event(ClientEvent::PeerLeft { peer: chat.peer });
        let _ = self.enter(Trigger::ChatEnded);
    }

    /// The chat broke: close it (unless already gone), report `reason`, back to REGISTERED.
    fn lose_chat(&mut self, reason: String, close: bool) {
        let Some(chat) = self.chat.take() else {
            return;
        };
        if close {
            self.outputs.close(chat.conn);
        }
        self.outputs.event(ClientEvent::PeerLost {
            peer: chat.peer,
            reason,
        });
        let _ = self.enter(Trigger::ChatEnded);
    }

    // -----------------------------------------------------------------------
    // Incoming connections

    fn incoming_data(&mut self, conn: ConnId, bytes: &[u8]) {
        let limit = self.config.limits.max_head + self.config.limits.max_body;
        let Some(inc) = self.incoming.get_mut(&conn) else {
            return;
        };
        if let Some((_, early)) = &mut inc.parked {
            if early.len() + bytes.len() > limit {
                return self.refuse_incoming(
                    conn,
                    Status::BAD_REQUEST,
                    &"wait for the answer to CHAT",
                );
            }
            early.extend_from_slice(bytes);
            return;
        }
        let mut input = bytes;
        match inc.decoder.decode_request(&mut input) {
            Ok(None) => {}
            Ok(Some(Request::Chat(contact))) => self.incoming_chat(conn, contact, input.to_vec()),
            Ok(Some(Request::Invalid { error, .. })) => {
                self.refuse_incoming(conn, Status::BAD_REQUEST, &error)
            }
            Ok(Some(Request::Unknown | Request::Page(_))) => {
                self.refuse_incoming(conn, Status::NOT_IMPLEMENTED, &"unknown method")
            }
            Ok(Some(
                request @ (Request::Register(_) | Request::Bridge { .. } | Request::Unregister),
            )) => {
                let reason = format!(
                    "{} is a server request, not a peer request",
                    request_name(&request)
                );
                self.refuse_incoming(conn, Status::NOT_IMPLEMENTED, &reason)
            }
            Ok(Some(request @ (Request::Message(_) | Request::Quit))) => {
                let reason = format!("{} before CHAT", request_name(&request));
                self.refuse_incoming(conn, Status::BAD_REQUEST, &reason)
            }
            Err(e) => self.refuse_incoming(conn, e.status, &e.reason),
        }
    }

    /// A peer's CHAT: answer 200 and chat if we are waiting, else 409 and close.
    fn incoming_chat(&mut self, conn: ConnId, contact: Contact, rest: Vec<u8>) {
        if self.mode != Mode::Wait && matches!(self.pending, Some(Pending::Bridge { .. })) {
            // The server may already have handed us out: decide once BRIDGE is answered.
            if let Some(inc) = self.incoming.get_mut(&conn) {
                inc.deadline = None;
                inc.parked = Some((contact, rest));
            }
            return;
        }
        let next = self.check(Trigger::ChatRequested);
        let (next, me) = match (next, self.me) {
            (Ok(next), Some(me)) => (next, me),
            (Err(reason), _) => return self.refuse_incoming(conn, Status::CONFLICT, &reason),
            (Ok(_), None) => {
                return self.refuse_incoming(conn, Status::CONFLICT, &"not registered")
            }
        };
        let Some(inc) = self.incoming.remove(&conn) else {
            return;
        };
        self.send(conn, |out| codec::write_ok(out, Some(&me)));
        self.chat = Some(Chat {
            conn,
            peer: contact.name,
            addr: None,
            decoder: inc.decoder,
            stage: ChatStage::Open,
        });
        self.set_mode(next);
        // Also when `rest` is empty: the decoder may hold a message that came with the CHAT.
        self.chat_data(&rest);
    }

    /// Decides the CHATs that arrived while BRIDGE was in flight.
    fn decide_parked(&mut self) {
        let parked: Vec<ConnId> = self
            .incoming
            .iter()
            .filter(|(_, inc)| inc.parked.is_some())
            .map(|(conn, _)| *conn)
            .collect();
        for conn in parked {
            let Some((contact, rest)) = self.incoming.get_mut(&conn).and_then(|i| i.parked.take())
            else {
                continue;
            };
            self.incoming_chat(conn, contact, rest);
        }
    }

    fn refuse_incoming(&mut self, conn: ConnId, status: Status, reason: &dyn fmt::Display) {
        if self.incoming.remove(&conn).is_none() {
            return;
        }
        self.send(conn, |out| {
            codec::write_error(out, status, reason, AfterError::Close)
        });
        self.outputs.close(conn);
    }

    // -----------------------------------------------------------------------
    // Helpers

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

    fn error(&mut self, message: String) {
        self.outputs.event(ClientEvent::Error(message));
    }

    fn info(&mut self, message: String) {
        self.outputs.event(ClientEvent::Info(message));
    }

    fn knows(&self, conn: ConnId) -> bool {
        self.server.conn() == Some(conn)
            || self.chat.as_ref().is_some_and(|c| c.conn == conn)
            || self.incoming.contains_key(&conn)
    }

    fn fire_server_connect(&mut self) {
        let ServerLink::Connecting { conn, deadline } = self.server else {
            return;
        };
        if deadline > self.now {
            return;
        }
        self.outputs.close(conn);
        self.server = ServerLink::Down;
        let why = format!(
            "cannot reach the server at {} within {:?}",
            self.config.server, self.config.connect_timeout
        );
        self.server_connect_failed(why);
    }

    /// Fatal when a person is waiting on it (start-up, or `/register` reconnecting):
    /// the contract makes an unreachable server fatal, and nothing else can be done.
    fn server_connect_failed(&mut self, message: String) {
        self.server = ServerLink::Down;
        match self.pending {
            Some(Pending::Startup | Pending::Reconnect) => self.finish(Err(message)),
            _ => self.error(message),
        }
    }

    fn fire_pending(&mut self) {
        let Some(pending) = self.pending else {
            return;
        };
        match pending.deadline() {
            Some(deadline) if deadline <= self.now => {}
            _ => return,
        }
        let timeout = self.config.request_timeout;
        match pending {
            Pending::Startup | Pending::Reconnect => {}
            Pending::Register { .. } | Pending::Bridge { .. } => {
                let method = if matches!(pending, Pending::Bridge { .. }) {
                    "BRIDGE"
                } else {
                    "REGISTER"
                };
                self.pending = None;
                self.stale_answers += 1;
                self.error(format!(
                    "the server did not answer {method} within {timeout:?}"
                ));
                self.decide_parked();
                self.pump();
            }
            Pending::Chat { .. } => {
                let Some(chat) = self.chat.as_ref() else {
                    self.pending = None;
                    return self.pump();
                };
                let message = match (chat.stage, chat.addr) {
                    (ChatStage::Connecting, Some(addr)) => format!(
                        "cannot reach {} at {addr} within {:?}",
                        chat.peer, self.config.connect_timeout
                    ),
                    _ => format!("{} did not answer CHAT within {timeout:?}", chat.peer),
                };
                // A hanging connect is closed too: the transport may still be trying.
                self.fail_chat(message, true);
            }
        }
    }

    fn fire_incoming(&mut self) {
        let now = self.now;
        let expired: Vec<ConnId> = self
            .incoming
            .iter()
            .filter(|(_, inc)| inc.deadline.is_some_and(|d| d <= now))
            .map(|(conn, _)| *conn)
            .collect();
        let timeout = self.config.request_timeout;
        for conn in expired {
            let reason = format!("no CHAT within {timeout:?}");
            self.refuse_incoming(conn, Status::REQUEST_TIMEOUT, &reason);
        }
    }
}

/// The method of a decoded request, for error messages.
fn request_name(request: &Request) -> &'static str {
    match request {
        Request::Register(_) => "REGISTER",
        Request::Bridge { .. } => "BRIDGE",
        Request::Unregister => "UNREGISTER",
        Request::Chat(_) => "CHAT",
        Request::Message(_) => "MESSAGE",
        Request::Quit => "QUIT",
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

impl Endpoint for Client {
    type Input = ClientInput;
    type Event = ClientEvent;

    fn handle_listening(&mut self, now: Instant, addr: SocketAddr) {
        self.now = now;
        if self.exited || self.listening.is_some() {
            return;
        }
        self.listening = Some(addr);
        self.outputs.event(ClientEvent::Listening(addr));
        self.finish_startup();
    }

    fn handle_listen_failed(&mut self, now: Instant, addr: SocketAddr, error: &str) {
        self.now = now;
        if self.exited {
            return;
        }
        self.finish(Err(format!("cannot listen for chats on {addr}: {error}")));
    }

    fn handle_accept(&mut self, now: Instant, _peer: SocketAddr) -> ConnId {
        self.now = now;
        let conn = self.new_conn();
        if self.exited {
            self.outputs.close(conn);
            return conn;
        }
        if self.incoming.len() >= MAX_INCOMING {
            // Full of connections that have not said CHAT: drop the oldest silent one, so
            // strangers idling at our port cannot lock out the peer the server sent us.
            let oldest_silent = self
                .incoming
                .iter()
                .find(|(_, incoming)| incoming.parked.is_none())
                .map(|(id, _)| *id);
            match oldest_silent {
                Some(oldest) => {
                    self.incoming.remove(&oldest);
                    self.outputs.close(oldest);
                }
                None => {
                    self.outputs.close(conn);
                    return conn;
                }
            }
        }
        self.incoming.insert(
            conn,
            Incoming {
                decoder: Decoder::new(self.config.limits),
                deadline: Some(now + self.config.request_timeout),
                parked: None,
            },
        );
        conn
    }

    fn handle_connected(&mut self, now: Instant, conn: ConnId, local: SocketAddr) {
        self.now = now;
        if self.exited {
            return;
        }
        if matches!(self.server, ServerLink::Connecting { conn: c, .. } if c == conn) {
            self.server = ServerLink::Up {
                conn,
                decoder: Decoder::new(self.config.limits),
                local_ip: local.ip(),
            };
            match self.pending {
                Some(Pending::Startup) => self.finish_startup(),
                Some(Pending::Reconnect) => self.send_register(),
                _ => {}
            }
            return;
        }
        let Some(chat) = self.chat.as_mut().filter(|c| c.conn == conn) else {
            return;
        };
        if chat.stage != ChatStage::Connecting {
            return;
        }
        chat.stage = ChatStage::Asked;
        let me = match self.me.map_or_else(|| self.own_contact(), Ok) {
            Ok(me) => me,
            Err(reason) => {
                return self.fail_chat(format!("cannot start the chat: {reason}"), true);
            }
        };
        self.send(conn, |out| codec::write_chat(out, &me));
        self.pending = Some(Pending::Chat {
            deadline: now + self.config.request_timeout,
        });
    }

    fn handle_connect_failed(&mut self, now: Instant, conn: ConnId, error: &str) {
        self.now = now;
        if self.exited {
            return;
        }
        if matches!(self.server, ServerLink::Connecting { conn: c, .. } if c == conn) {
            let message = format!("cannot reach the server at {}: {error}", self.config.server);
            return self.server_connect_failed(message);
        }
        let Some(chat) = self.chat.as_ref().filter(|c| c.conn == conn) else {
            return;
        };
        let message = match chat.addr {
            Some(addr) => format!("cannot reach {} at {addr}: {error}", chat.peer),
            None => format!("cannot reach {}: {error}", chat.peer),
        };
        self.fail_chat(message, false);
    }

    fn handle_data(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        self.now = now;
        if self.exited || !self.knows(conn) {
            return;
        }
        if self.config.trace {
            self.outputs.event(ClientEvent::Trace {
                conn,
                direction: Direction::Received,
                bytes: bytes.to_vec(),
            });
        }
        if self.server.conn() == Some(conn) {
            self.server_data(bytes);
        } else if self.chat.as_ref().is_some_and(|c| c.conn == conn) {
            self.chat_data(bytes);
        } else {
            self.incoming_data(conn, bytes);
        }
    }

    fn handle_closed(&mut self, now: Instant, conn: ConnId) {
        self.now = now;
        if self.exited {
            return;
        }
        match &self.server {
            ServerLink::Up { conn: c, .. } if *c == conn => {
                return self.server_gone("lost connection to the server");
            }
            ServerLink::Connecting { conn: c, .. } if *c == conn => {
                let message = format!("cannot reach the server at {}", self.config.server);
                return self.server_connect_failed(message);
            }
            _ => {}
        }
        if let Some(chat) = self.chat.as_ref().filter(|c| c.conn == conn) {
            match chat.stage {
                ChatStage::Open => {
                    self.lose_chat("connection closed without QUIT".to_owned(), false)
                }
                ChatStage::Connecting | ChatStage::Asked => {
                    let message =
                        format!("{} closed the connection without answering CHAT", chat.peer);
                    self.fail_chat(message, false);
                }
            }
            return self.pump();
        }
        self.incoming.remove(&conn);
    }

    fn handle_input(&mut self, now: Instant, input: ClientInput) {
        self.now = now;
        if self.exited {
            return;
        }
        match input {
            ClientInput::Interrupt => self.quit(),
            ClientInput::EndOfInput if self.is_busy() => self.queue.push_back(Queued::EndOfInput),
            ClientInput::EndOfInput => self.quit(),
            ClientInput::Line(line) => {
                // While our CHAT awaits its answer a message is held at once (READY MODE),
                // unless earlier lines still wait their turn.
                let hold_now = matches!(self.pending, Some(Pending::Chat { .. }))
                    && self.queue.is_empty()
                    && !Self::is_command(&line);
                if self.is_busy() && !hold_now {
                    self.queue.push_back(Queued::Line(line));
                } else {
                    self.handle_line(line);
                }
            }
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if self.exited {
            return;
        }
        self.fire_server_connect();
        if !self.exited {
            self.fire_pending();
        }
        if !self.exited {
            self.fire_incoming();
        }
    }

    fn poll_output(&mut self) -> Option<Output<'_, ClientEvent>> {
        self.outputs.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.exited {
            return None;
        }
        let server = match self.server {
            ServerLink::Connecting { deadline, .. } => Some(deadline),
            _ => None,
        };
        let pending = self.pending.and_then(|p| p.deadline());
        let incoming = self.incoming.values().filter_map(|i| i.deadline).min();
        [server, pending, incoming].into_iter().flatten().min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UP: Context = Context {
        server_up: true,
        chat_link: false,
    };

    #[test]
    fn the_table_follows_the_contracts_mode_order() {
        let path = [
            (Mode::Unregistered, Trigger::Registered, Mode::Registered),
            (Mode::Registered, Trigger::NoPeerWaiting, Mode::Wait),
            (Mode::Wait, Trigger::ChatRequested, Mode::Read),
            (Mode::Read, Trigger::MessageReceived, Mode::Write),
            (Mode::Write, Trigger::MessageSent, Mode::Read),
            (Mode::Read, Trigger::ChatEnded, Mode::Registered),
            (Mode::Registered, Trigger::PeerWaiting, Mode::Ready),
            (Mode::Ready, Trigger::ChatAccepted, Mode::Write),
        ];
        for (from, trigger, to) in path {
            assert_eq!(next_mode(from, trigger, UP), Ok(to), "{from} + {trigger:?}");
        }
    }

    #[test]
    fn commands_keep_the_mode_or_are_refused() {
        let modes = [
            Mode::Unregistered,
            Mode::Registered,
            Mode::Wait,
            Mode::Ready,
            Mode::Write,
            Mode::Read,
        ];
        let commands = [
            Trigger::RegisterCommand,
            Trigger::BridgeCommand,
            Trigger::ChatCommand,
            Trigger::MessageLine,
        ];
        for mode in modes {
            for command in commands {
                if let Ok(next) = next_mode(mode, command, UP) {
                    assert_eq!(next, mode, "{command:?} must not move {mode}");
                }
            }
        }
        assert!(next_mode(Mode::Wait, Trigger::ChatCommand, UP).is_err());
        assert!(next_mode(Mode::Write, Trigger::MessageReceived, UP).is_err());
    }

    #[test]
    fn a_chat_ending_without_the_server_leaves_the_client_unregistered() {
        let down = Context {
            server_up: false,
            chat_link: true,
        };
        assert_eq!(
            next_mode(Mode::Read, Trigger::ServerLost, down),
            Ok(Mode::Read)
        );
        assert_eq!(
            next_mode(Mode::Read, Trigger::ChatEnded, down),
            Ok(Mode::Unregistered)
        );
        assert_eq!(
            next_mode(Mode::Wait, Trigger::ServerLost, UP),
            Ok(Mode::Unregistered)
        );
    }
}
