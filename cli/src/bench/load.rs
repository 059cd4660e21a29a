//! The load generator against a bridgechat server: one `mio::Poll`, no threads.
//!
//! Stages, each finished before the next starts:
//!
//! 1. **register** — open the N server connections (at most `connect_window`
//!    connects in flight, so the server's accept backlog never overflows into
//!    SYN retries) and send REGISTER on each as soon as it is connected.
//! 2. **hold** (optional) — keep everything open and idle, e.g. to read the
//!    server's RSS; then check from a separate connection that the server
//!    still holds sampled names (it must answer 409).
//! 3. **bridge** — every registered connection sends BRIDGE at once. The
//!    server pairs them in arrival order; a `200` that carries a contact is a
//!    pair, an empty one a waiter. Every waiter must be handed out exactly once.
//!    With a hold time, everything is held idle again afterwards.
//! 4. **chat** (`turns > 0`) — each asker connects to the contact it was given
//!    (the bench's own chat listener, which every connection registered),
//!    sends CHAT, the listener answers `200` as the waiter, then MESSAGE
//!    ping-pong for `turns` messages and QUIT. At most `chat_window` chats run at once.
//! 5. **steady** (`duration > 0`) — each registered connection re-sends its
//!    REGISTER (which replaces its registration) and waits for the answer,
//!    keeping `pipeline` requests in flight, until the time is up.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bridgechat_core::codec::{self, Decoder, Request, Response, Status};
use bridgechat_core::secure;
use bridgechat_core::{Contact, Name};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};

/// What a non-blocking connect() answers while the handshake runs (Linux).
const EINPROGRESS: i32 = 115;

use super::hist::Histogram;

const LISTENER: Token = Token(usize::MAX - 1);
/// Tokens at or above this name chat connections (index = token - CHAT_BASE).
const CHAT_BASE: usize = 1 << 40;
const READ_CHUNK: usize = 64 * 1024;

/// What to run; built from the command line.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Chat turns as sealed frames after a Noise handshake.
    pub encrypted: bool,
    pub server: SocketAddr,
    pub clients: usize,
    pub pipeline: usize,
    pub turns: u64,
    pub message: Vec<u8>,
    pub hold: Duration,
    pub bridge: bool,
    pub duration: Duration,
    pub connect_window: usize,
    pub chat_window: usize,
    /// Give up on a stage when nothing is answered for this long.
    pub stall: Duration,
    pub progress: bool,
    /// Add `Host: <server>` to every REGISTER so a plain HTTP server can take the same load.
    pub host_header: bool,
    /// Bind each client to its own loopback source address and port (see `open_stream`).
    pub spread_sources: bool,
}

/// One stage's figures.
#[derive(Debug, Default, Clone)]
pub struct Stage {
    pub elapsed: Duration,
    /// Requests answered (any status).
    pub answered: u64,
    pub latency: Histogram,
    /// Non-200 answers by status code.
    pub statuses: BTreeMap<u16, u64>,
}

impl Stage {
    pub fn rate(&self, n: u64) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            n as f64 / secs
        } else {
            0.0
        }
    }
}

/// Everything measured in one run.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub connect: Stage,
    pub register: Stage,
    pub registered: usize,
    pub peak_registered: usize,
    /// Sampled names the server still held after the register (and hold) stage.
    pub held_probe: Option<(usize, usize)>,
    pub bridge: Option<Stage>,
    pub pairs: usize,
    pub waiters: usize,
    pub left_waiting: usize,
    /// Problems in the pairing (a waiter handed twice, an unknown contact, ...).
    pub pairing_faults: Vec<String>,
    pub chat_setup: Option<Stage>,
    pub chat: Option<Stage>,
    pub turns: u64,
    pub chats_ok: usize,
    pub chats_failed: usize,
    pub steady: Option<Stage>,
    pub conn_errors: BTreeMap<String, u64>,
    pub protocol_errors: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Register,
    Hold,
    Bridge,
    Chat,
    Steady,
    Drain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnState {
    NotStarted,
    Connecting(Instant),
    Open,
    Dead,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    None,
    Waiter,
    Asker,
}

#[derive(Debug)]
struct Conn {
    stream: Option<TcpStream>,
    state: ConnState,
    decoder: Decoder,
    out: Vec<u8>,
    out_pos: usize,
    /// Send times of the requests in flight, oldest first.
    sent: VecDeque<Instant>,
    contact: Contact,
    registered: bool,
    role: Role,
    handed: u32,
    /// For an asker: its index in `pairs`.
    pair: Option<usize>,
    /// Counted in `Engine::opening`: connecting, or its first REGISTER unanswered.
    opening: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChatState {
    Connecting,
    AwaitOk,
    AwaitChat,
    Talking,
    Closing,
}

#[derive(Debug)]
struct Chat {
    /// Unique per chat: slots in `chats` are reused.
    id: u64,
    stream: TcpStream,
    initiator: bool,
    state: ChatState,
    decoder: Decoder,
    out: Vec<u8>,
    out_pos: usize,
    /// Index into `pairs`; for a responder, known once CHAT arrives.
    pair: Option<usize>,
    started: Instant,
    sent_at: Instant,
    /// An encrypted chat's handshake in flight, then its session.
    asking: Option<Box<secure::Initiator>>,
    session: Option<Box<secure::Session>>,
}

/// The ticket both ends of an encrypted bench chat key their handshake with.
const BENCH_TICKET: [u8; secure::TICKET_LEN] = [0x42; secure::TICKET_LEN];

#[derive(Debug)]
struct Pair {
    asker: usize,
    waiter: usize,
    turns_sent: u64,
    finished: bool,
}

struct Engine {
    cfg: LoadConfig,
    poll: Poll,
    listener: TcpListener,
    conns: Vec<Conn>,
    names: HashMap<Name, usize>,
    chats: Vec<Option<Chat>>,
    free_chats: Vec<usize>,
    pairs: Vec<Pair>,
    next_pair: usize,
    active_chats: usize,
    next_chat_id: u64,
    scratch: Vec<u8>,
    seeds: BenchSeeds,
    phase: Phase,
    next_connect: usize,
    /// Connections opened whose first REGISTER is not answered yet. Bounded by
    /// `connect_window`, so the server's accept queue (4096, the transports'
    /// listen backlog) cannot overflow into SYN retransmits (1 s each).
    opening: usize,
    in_flight: usize,
    registered_now: usize,
    stage: Stage,
    chat_setup: Stage,
    steady_until: Option<Instant>,
    last_answer: Instant,
    report: LoadReport,
    register_wire: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("phase", &self.phase)
            .finish()
    }
}

/// Runs every stage against `cfg.server`; `ip` is the address to register.
pub fn run(cfg: LoadConfig, ip: IpAddr) -> Result<LoadReport, String> {
    let poll = Poll::new().map_err(|e| format!("cannot create a poller: {e}"))?;
    let mut listener = TcpListener::bind(SocketAddr::new(ip, 0))
        .map_err(|e| format!("cannot bind the bench's chat listener on {ip}: {e}"))?;
    let chat_port = listener
        .local_addr()
        .map_err(|e| format!("chat listener: {e}"))?
        .port();
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .map_err(|e| format!("cannot poll the chat listener: {e}"))?;
    let pid = std::process::id();
    let mut conns = Vec::with_capacity(cfg.clients);
    let mut names = HashMap::with_capacity(cfg.clients);
    let mut register_wire = Vec::with_capacity(cfg.clients);
    for i in 0..cfg.clients {
        let name =
            Name::new(format!("bc{pid}-{i}").as_bytes()).map_err(|e| format!("bench name: {e}"))?;
        let contact = Contact::new(name, ip, chat_port).map_err(|e| format!("contact: {e}"))?;
        names.insert(name, i);
        let mut wire = Vec::new();
        codec::write_register(&mut wire, &contact);
        if cfg.host_header {
            // Before the blank line that ends the head.
            wire.truncate(wire.len() - 2);
            wire.extend_from_slice(format!("Host: {}\r\n\r\n", cfg.server).as_bytes());
        }
        register_wire.push(wire);
        conns.push(Conn {
            stream: None,
            state: ConnState::NotStarted,
            decoder: Decoder::default(),
            out: Vec::new(),
            out_pos: 0,
            sent: VecDeque::new(),
            contact,
            registered: false,
            role: Role::None,
            handed: 0,
            pair: None,
            opening: false,
        });
    }
    let mut engine = Engine {
        cfg,
        poll,
        listener,
        conns,
        names,
        chats: Vec::new(),
        free_chats: Vec::new(),
        pairs: Vec::new(),
        next_pair: 0,
        active_chats: 0,
        next_chat_id: 0,
        scratch: vec![0; READ_CHUNK],
        seeds: BenchSeeds::default(),
        phase: Phase::Register,
        next_connect: 0,
        opening: 0,
        in_flight: 0,
        registered_now: 0,
        stage: Stage::default(),
        chat_setup: Stage::default(),
        steady_until: None,
        last_answer: Instant::now(),
        report: LoadReport::default(),
        register_wire,
    };
    engine.run_all()?;
    Ok(engine.report)
}

impl Engine {
    fn run_all(&mut self) -> Result<(), String> {
        // 1. connect + register
        let start = Instant::now();
        self.begin(Phase::Register);
        self.fill_connect_window();
        self.pump(|e| e.next_connect == e.conns.len() && e.opening == 0 && e.in_flight == 0)?;
        let stage = self.end(start);
        self.report.register = stage;
        self.report.registered = self.registered_now;
        if self.registered_now == 0 {
            return Err(self.nothing_registered());
        }

        // 2. hold, then ask the server whether it still holds sampled names
        if !self.cfg.hold.is_zero() {
            eprintln!(
                "holding {} registered clients for {:.1} s",
                self.registered_now,
                self.cfg.hold.as_secs_f64()
            );
            let until = Instant::now() + self.cfg.hold;
            self.begin(Phase::Hold);
            self.pump(|_| Instant::now() >= until)?;
            eprintln!("hold done: {} registered clients", self.registered_now);
        }
        self.report.held_probe = Some(self.probe_held());

        // 3. bridge everyone at once
        if self.cfg.bridge {
            let start = Instant::now();
            self.begin(Phase::Bridge);
            for i in 0..self.conns.len() {
                if self.conns[i].registered && self.conns[i].state == ConnState::Open {
                    let c = &mut self.conns[i];
                    codec::write_bridge(&mut c.out, None);
                    self.sent(i, Instant::now());
                }
            }
            self.pump(|e| e.in_flight == 0)?;
            self.report.bridge = Some(self.end(start));
            self.check_pairing();
            if !self.cfg.hold.is_zero() {
                // Idle again, so a script can read what pairing cost the server (CPU, RSS).
                eprintln!(
                    "paired {} pairs; holding for {:.1} s",
                    self.pairs.len(),
                    self.cfg.hold.as_secs_f64()
                );
                let until = Instant::now() + self.cfg.hold;
                self.begin(Phase::Hold);
                self.pump(|_| Instant::now() >= until)?;
            }

            // 4. chat turns between the pairs
            if self.cfg.turns > 0 && !self.pairs.is_empty() {
                let start = Instant::now();
                self.begin(Phase::Chat);
                self.fill_chat_window();
                self.pump(|e| e.next_pair == e.pairs.len() && e.active_chats == 0)?;
                let mut stage = self.end(start);
                stage.answered = self.report.turns;
                self.report.chat = Some(stage);
                self.chat_setup.elapsed = self
                    .report
                    .chat
                    .as_ref()
                    .map_or(Duration::ZERO, |s| s.elapsed);
                self.report.chat_setup = Some(std::mem::take(&mut self.chat_setup));
            }
        }

        // 5. steady REGISTER load
        if !self.cfg.duration.is_zero() {
            let start = Instant::now();
            self.begin(Phase::Steady);
            self.steady_until = Some(start + self.cfg.duration);
            let now = Instant::now();
            for i in 0..self.conns.len() {
                if self.conns[i].registered && self.conns[i].state == ConnState::Open {
                    for _ in 0..self.cfg.pipeline {
                        self.conns[i].out.extend_from_slice(&self.register_wire[i]);
                        self.sent(i, now);
                    }
                }
            }
            let until = start + self.cfg.duration;
            self.pump(|_| Instant::now() >= until)?;
            self.phase = Phase::Drain;
            self.pump(|e| e.in_flight == 0)?;
            self.report.steady = Some(self.end(start));
        }
        Ok(())
    }

    fn nothing_registered(&self) -> String {
        let mut why: Vec<String> = self
            .report
            .conn_errors
            .iter()
            .map(|(k, n)| format!("{n}× {k}"))
            .collect();
        why.extend(
            self.report
                .register
                .statuses
                .iter()
                .map(|(code, n)| format!("{n}× status {code}")),
        );
        format!(
            "no connection to {} could register ({})",
            self.cfg.server,
            if why.is_empty() {
                "no answers".to_string()
            } else {
                why.join(", ")
            }
        )
    }

    fn begin(&mut self, phase: Phase) {
        self.phase = phase;
        self.stage = Stage::default();
        self.last_answer = Instant::now();
    }

    fn end(&mut self, start: Instant) -> Stage {
        let mut stage = std::mem::take(&mut self.stage);
        stage.elapsed = start.elapsed();
        stage
    }

    /// Polls and dispatches until `done`, printing progress each second.
    fn pump(&mut self, done: impl Fn(&Engine) -> bool) -> Result<(), String> {
        let mut events = Events::with_capacity(1024);
        let started = Instant::now();
        let mut next_progress = started + Duration::from_secs(1);
        while !done(self) {
            let now = Instant::now();
            if now >= next_progress {
                if self.cfg.progress {
                    eprintln!("{}", self.progress_line(now - started));
                }
                next_progress += Duration::from_secs(1);
            }
            let waiting_for_answers = matches!(
                self.phase,
                Phase::Register | Phase::Bridge | Phase::Chat | Phase::Steady | Phase::Drain
            );
            if waiting_for_answers && now.duration_since(self.last_answer) > self.cfg.stall {
                return Err(format!(
                    "{:?} stage stalled: nothing answered for {:.0} s ({} requests in flight, {} connects pending, {} chats active)",
                    self.phase,
                    self.cfg.stall.as_secs_f64(),
                    self.in_flight,
                    self.opening + (self.conns.len() - self.next_connect),
                    self.active_chats,
                ));
            }
            let mut timeout = next_progress.saturating_duration_since(now);
            if let Some(until) = self.steady_until.filter(|_| self.phase == Phase::Steady) {
                timeout = timeout.min(until.saturating_duration_since(now));
            }
            match self
                .poll
                .poll(&mut events, Some(timeout.min(Duration::from_millis(100))))
            {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("poll failed: {e}")),
            }
            for event in events.iter() {
                let token = event.token();
                if token == LISTENER {
                    self.accept_chats();
                } else if token.0 >= CHAT_BASE {
                    self.chat_event(
                        token.0 - CHAT_BASE,
                        event.is_readable(),
                        event.is_writable(),
                    );
                } else {
                    self.conn_event(
                        token.0,
                        event.is_readable() || event.is_read_closed(),
                        event.is_writable() || event.is_error(),
                    );
                }
            }
        }
        Ok(())
    }

    fn progress_line(&self, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64();
        match self.phase {
            Phase::Register => format!(
                "[register {secs:.0}s] {} of {} registered, {} opening, {} errors",
                self.registered_now,
                self.conns.len(),
                self.opening,
                self.error_count()
            ),
            Phase::Hold => format!("[hold {secs:.0}s] {} registered", self.registered_now),
            Phase::Bridge => format!(
                "[bridge {secs:.0}s] {} answered, {} in flight",
                self.stage.answered, self.in_flight
            ),
            Phase::Chat => format!(
                "[chat {secs:.0}s] {} of {} chats done, {} turns, {:.0} turns/s",
                self.next_pair - self.active_chats,
                self.pairs.len(),
                self.report.turns,
                self.report.turns as f64 / secs.max(1e-9)
            ),
            Phase::Steady | Phase::Drain => format!(
                "[steady {secs:.0}s] {} requests, {:.0} req/s, {} errors",
                self.stage.answered,
                self.stage.answered as f64 / secs.max(1e-9),
                self.error_count()
            ),
        }
    }

    fn error_count(&self) -> u64 {
        self.report.conn_errors.values().sum::<u64>()
            + self.stage.statuses.values().sum::<u64>()
            + self.report.protocol_errors
    }

    fn conn_error(&mut self, what: String) {
        *self.report.conn_errors.entry(what).or_insert(0) += 1;
    }

    // ---------------------------------------------------------------------
    // Server connections

    fn fill_connect_window(&mut self) {
        while self.opening < self.cfg.connect_window && self.next_connect < self.conns.len() {
            let i = self.next_connect;
            self.next_connect += 1;
            match self.open_stream(i) {
                Ok(mut stream) => {
                    if let Err(e) = self.poll.registry().register(
                        &mut stream,
                        Token(i),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        self.conn_error(format!("poll register: {e}"));
                        self.conns[i].state = ConnState::Dead;
                        continue;
                    }
                    self.conns[i].stream = Some(stream);
                    self.conns[i].state = ConnState::Connecting(Instant::now());
                    self.conns[i].opening = true;
                    self.opening += 1;
                }
                Err(e) => {
                    self.conn_error(format!("connect: {}", error_text(&e)));
                    self.conns[i].state = ConnState::Dead;
                    self.last_answer = Instant::now();
                }
            }
        }
    }

    /// Starts a non-blocking connect for client `i`.
    ///
    /// Against a server on IPv4 loopback, each client binds its own source address
    /// and port first: 127.0.0.2–201, ports spread from a per-run offset. Without
    /// that, every connect() asks the kernel for an ephemeral port towards the one
    /// server address, and once about half of the range is in use (connect takes
    /// even ports first) each search walks thousands of taken ports: with 19,000
    /// clients the register stage took 10–20 s, 84 % of the bench's CPU in
    /// `__inet_hash_connect` / `__inet_check_established` (perf, cpu-clock).
    fn open_stream(&self, i: usize) -> io::Result<TcpStream> {
        if !self.cfg.spread_sources {
            return TcpStream::connect(self.cfg.server);
        }
        const ADDRS: usize = 200;
        let ip = Ipv4Addr::new(127, 0, 0, 2 + (i % ADDRS) as u8);
        let offset = (std::process::id() as usize).wrapping_mul(7919);
        let mut last = io::Error::from(io::ErrorKind::AddrInUse);
        for attempt in 0..16 {
            // Ports 10000–59999; retries jump far, past whatever holds this one.
            let port = 10_000 + (offset + i / ADDRS + attempt * 4_999) % 50_000;
            let local = SocketAddr::new(ip.into(), port as u16);
            let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
            socket.set_reuse_address(true)?;
            socket.set_nonblocking(true)?;
            if let Err(e) = socket.bind(&local.into()) {
                last = e;
                continue;
            }
            match socket.connect(&self.cfg.server.into()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(EINPROGRESS) => {}
                // The same four-tuple may still be in TIME_WAIT from an earlier run.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::AddrInUse | io::ErrorKind::AddrNotAvailable
                    ) =>
                {
                    last = e;
                    continue;
                }
                Err(e) => return Err(e),
            }
            return Ok(TcpStream::from_std(socket.into()));
        }
        Err(last)
    }

    fn conn_event(&mut self, i: usize, readable: bool, writable: bool) {
        let Some(c) = self.conns.get_mut(i) else {
            return;
        };
        if let ConnState::Connecting(since) = c.state {
            let Some(stream) = c.stream.as_ref() else {
                return;
            };
            let result = match stream.take_error() {
                Ok(Some(e)) | Err(e) => Err(e),
                Ok(None) => match stream.peer_addr() {
                    Ok(_) => Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => return, // not yet
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(()) => {
                    let now = Instant::now();
                    c.state = ConnState::Open;
                    self.report.connect.latency.record(now - since);
                    self.report.connect.answered += 1;
                    if let Some(s) = c.stream.as_ref() {
                        let _ = s.set_nodelay(true);
                    }
                    c.out.extend_from_slice(&self.register_wire[i]);
                    self.sent(i, now);
                }
                Err(e) => {
                    self.conn_error(format!("connect: {}", error_text(&e)));
                    self.kill(i);
                    self.last_answer = Instant::now();
                }
            }
            self.fill_connect_window();
            return;
        }
        if c.state != ConnState::Open {
            return;
        }
        if writable {
            self.flush(i);
        }
        if readable {
            self.read_conn(i);
        }
    }

    /// The bytes just appended to `out` are one request sent at `now`.
    fn sent(&mut self, i: usize, now: Instant) {
        self.conns[i].sent.push_back(now);
        self.in_flight += 1;
        self.flush(i);
    }

    fn flush(&mut self, i: usize) {
        let c = &mut self.conns[i];
        let Some(stream) = c.stream.as_mut() else {
            return;
        };
        if let Err(e) = write_out(stream, &mut c.out, &mut c.out_pos) {
            self.conn_error(format!("write: {}", error_text(&e)));
            self.kill(i);
        }
    }

    /// `i` no longer counts against the connect window.
    fn opened(&mut self, i: usize) {
        if std::mem::take(&mut self.conns[i].opening) {
            self.opening -= 1;
            self.fill_connect_window();
        }
    }

    fn kill(&mut self, i: usize) {
        self.opened(i);
        let c = &mut self.conns[i];
        if c.registered {
            c.registered = false;
            self.registered_now -= 1;
        }
        self.in_flight -= c.sent.len();
        c.sent.clear();
        c.stream = None; // closes the socket and leaves the poll set
        c.state = ConnState::Dead;
    }

    fn read_conn(&mut self, i: usize) {
        let mut scratch = std::mem::take(&mut self.scratch);
        while let Some(stream) = self.conns[i].stream.as_mut() {
            match stream.read(&mut scratch) {
                Ok(0) => {
                    self.conn_error("closed by the server".into());
                    self.kill(i);
                    break;
                }
                Ok(n) => {
                    let now = Instant::now();
                    let mut input = &scratch[..n];
                    loop {
                        match self.conns[i].decoder.decode_response(&mut input) {
                            Ok(Some(response)) => self.on_response(i, now, response),
                            Ok(None) => break,
                            Err(e) => {
                                self.report.protocol_errors += 1;
                                self.conn_error(format!("bad response: {e}"));
                                self.kill(i);
                                break;
                            }
                        }
                        if self.conns[i].state != ConnState::Open {
                            break;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.conn_error(format!("read: {}", error_text(&e)));
                    self.kill(i);
                    break;
                }
            }
        }
        self.scratch = scratch;
    }

    fn on_response(&mut self, i: usize, now: Instant, response: Response) {
        let Some(sent_at) = self.conns[i].sent.pop_front() else {
            self.report.protocol_errors += 1;
            self.conn_error("answer to no request".into());
            return self.kill(i);
        };
        self.in_flight -= 1;
        self.last_answer = now;
        self.stage.answered += 1;
        self.stage.latency.record(now - sent_at);
        let ok = response.status == Status::OK;
        if !ok {
            *self
                .stage
                .statuses
                .entry(response.status.code())
                .or_insert(0) += 1;
        }
        match self.phase {
            Phase::Register | Phase::Hold => {
                self.opened(i);
                if ok && !self.conns[i].registered {
                    self.conns[i].registered = true;
                    self.registered_now += 1;
                    self.report.peak_registered =
                        self.report.peak_registered.max(self.registered_now);
                }
            }
            Phase::Bridge => {
                if !ok {
                    return;
                }
                match response.contact {
                    None => self.conns[i].role = Role::Waiter,
                    Some(peer) => {
                        self.conns[i].role = Role::Asker;
                        match self.names.get(&peer.name).copied() {
                            Some(w) if w != i => {
                                self.conns[w].handed += 1;
                                self.conns[i].pair = Some(self.pairs.len());
                                self.pairs.push(Pair {
                                    asker: i,
                                    waiter: w,
                                    turns_sent: 0,
                                    finished: false,
                                });
                            }
                            Some(_) => self
                                .report
                                .pairing_faults
                                .push(format!("{} was handed itself", peer.name)),
                            None => self
                                .report
                                .pairing_faults
                                .push(format!("handed an unknown contact {peer}")),
                        }
                    }
                }
            }
            Phase::Steady => {
                let c = &mut self.conns[i];
                c.out.extend_from_slice(&self.register_wire[i]);
                self.sent(i, now);
            }
            Phase::Chat | Phase::Drain => {}
        }
    }

    fn check_pairing(&mut self) {
        let mut waiters = 0;
        let mut left = 0;
        for c in &self.conns {
            match (c.role, c.handed) {
                (Role::Waiter, 1) => waiters += 1,
                (Role::Waiter, 0) => {
                    waiters += 1;
                    left += 1;
                }
                (Role::Waiter, n) => {
                    waiters += 1;
                    self.report
                        .pairing_faults
                        .push(format!("{} handed out {n} times", c.contact.name));
                }
                (_, 0) => {}
                (_, n) => self.report.pairing_faults.push(format!(
                    "{} handed out {n} times but never told it was waiting",
                    c.contact.name
                )),
            }
        }
        if left > 1 {
            self.report.pairing_faults.push(format!(
                "{left} waiters never handed out (at most one may be)"
            ));
        }
        self.report.pairs = self.pairs.len();
        self.report.waiters = waiters;
        self.report.left_waiting = left;
    }

    /// From a separate connection, tries to REGISTER a few held names: a 409 proves
    /// the server still holds them for their own (live) connections.
    fn probe_held(&mut self) -> (usize, usize) {
        let registered: Vec<usize> = (0..self.conns.len())
            .filter(|&i| self.conns[i].registered)
            .collect();
        if registered.is_empty() {
            return (0, 0);
        }
        let mut sample = vec![
            registered[0],
            registered[registered.len() / 2],
            registered[registered.len() - 1],
        ];
        sample.dedup();
        let Ok(mut probe) =
            std::net::TcpStream::connect_timeout(&self.cfg.server, Duration::from_secs(5))
        else {
            return (0, sample.len());
        };
        let _ = probe.set_read_timeout(Some(Duration::from_secs(5)));
        let mut held = 0;
        let mut decoder = Decoder::default();
        let mut buf = [0u8; 4096];
        for &i in &sample {
            if probe.write_all(&self.register_wire[i]).is_err() {
                break;
            }
            let answer = loop {
                match probe.read(&mut buf) {
                    Ok(0) | Err(_) => break None,
                    Ok(n) => match decoder.decode_response(&mut &buf[..n]) {
                        Ok(Some(r)) => break Some(r),
                        Ok(None) => {}
                        Err(_) => break None,
                    },
                }
            };
            if answer.is_some_and(|r| r.status == Status::CONFLICT) {
                held += 1;
            }
        }
        (held, sample.len())
    }

    // ---------------------------------------------------------------------
    // Chat connections

    fn fill_chat_window(&mut self) {
        while self.active_chats < self.cfg.chat_window && self.next_pair < self.pairs.len() {
            let p = self.next_pair;
            self.next_pair += 1;
            self.active_chats += 1;
            let addr = self.conns[self.pairs[p].waiter].contact.socket_addr();
            match TcpStream::connect(addr) {
                Ok(stream) => {
                    let now = Instant::now();
                    let k = self.add_chat(Chat {
                        id: 0,
                        stream,
                        initiator: true,
                        state: ChatState::Connecting,
                        decoder: Decoder::default(),
                        out: Vec::new(),
                        out_pos: 0,
                        pair: Some(p),
                        started: now,
                        sent_at: now,
                        asking: None,
                        session: None,
                    });
                    if k.is_none() {
                        self.finish_pair(p, false);
                    }
                }
                Err(e) => {
                    self.conn_error(format!("chat connect: {}", error_text(&e)));
                    self.finish_pair(p, false);
                }
            }
        }
    }

    fn add_chat(&mut self, mut chat: Chat) -> Option<usize> {
        let k = self.free_chats.pop().unwrap_or_else(|| {
            self.chats.push(None);
            self.chats.len() - 1
        });
        if let Err(e) = self.poll.registry().register(
            &mut chat.stream,
            Token(CHAT_BASE + k),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.conn_error(format!("poll register: {e}"));
            self.free_chats.push(k);
            return None;
        }
        let _ = chat.stream.set_nodelay(true);
        self.next_chat_id += 1;
        chat.id = self.next_chat_id;
        self.chats[k] = Some(chat);
        Some(k)
    }

    fn drop_chat(&mut self, k: usize) {
        if self.chats[k].take().is_some() {
            self.free_chats.push(k);
        }
    }

    fn finish_pair(&mut self, p: usize, ok: bool) {
        let pair = &mut self.pairs[p];
        if pair.finished {
            return;
        }
        pair.finished = true;
        self.active_chats -= 1;
        self.last_answer = Instant::now();
        if ok {
            self.report.chats_ok += 1;
        } else {
            self.report.chats_failed += 1;
        }
        self.fill_chat_window();
    }

    fn accept_chats(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    let now = Instant::now();
                    self.add_chat(Chat {
                        id: 0,
                        stream,
                        initiator: false,
                        state: ChatState::AwaitChat,
                        decoder: Decoder::default(),
                        out: Vec::new(),
                        out_pos: 0,
                        pair: None,
                        asking: None,
                        session: None,
                        started: now,
                        sent_at: now,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.conn_error(format!("chat accept: {}", error_text(&e)));
                    return;
                }
            }
        }
    }

    fn chat_fail(&mut self, k: usize, what: String) {
        self.conn_error(what);
        let pair = self.chats[k].as_ref().and_then(|c| c.pair);
        self.drop_chat(k);
        if let Some(p) = pair {
            self.finish_pair(p, false);
        }
    }

    fn chat_event(&mut self, k: usize, readable: bool, writable: bool) {
        let Some(chat) = self.chats.get_mut(k).and_then(Option::as_mut) else {
            return;
        };
        if chat.state == ChatState::Connecting {
            let result = match chat.stream.take_error() {
                Ok(Some(e)) | Err(e) => Err(e),
                Ok(None) => match chat.stream.peer_addr() {
                    Ok(_) => Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(()) => {
                    let Some(p) = chat.pair else { return };
                    let asker = self.conns[self.pairs[p].asker].contact;
                    chat.state = ChatState::AwaitOk;
                    chat.sent_at = Instant::now();
                    if self.cfg.encrypted {
                        let seed = self.seeds.next_seed();
                        let (initiator, first) = secure::Initiator::new(&BENCH_TICKET, seed);
                        let first = codec::Noise(first.try_into().expect("a handshake message"));
                        chat.asking = Some(Box::new(initiator));
                        codec::write_chat_v2(&mut chat.out, &asker, None, Some(&first));
                    } else {
                        codec::write_chat(&mut chat.out, &asker);
                    }
                    self.chat_flush(k);
                }
                Err(e) => self.chat_fail(k, format!("chat connect: {}", error_text(&e))),
            }
            return;
        }
        if writable {
            self.chat_flush(k);
        }
        if readable {
            self.chat_read(k);
        }
    }

    fn chat_flush(&mut self, k: usize) {
        let Some(chat) = self.chats.get_mut(k).and_then(Option::as_mut) else {
            return;
        };
        match write_out(&mut chat.stream, &mut chat.out, &mut chat.out_pos) {
            Err(e) => self.chat_fail(k, format!("chat write: {}", error_text(&e))),
            Ok(()) => {
                if chat.state == ChatState::Closing && chat.out.is_empty() {
                    // The initiator sent QUIT: it is done; the responder ends the pair.
                    self.drop_chat(k);
                }
            }
        }
    }

    fn chat_read(&mut self, k: usize) {
        let Some(id) = self.chats.get(k).and_then(Option::as_ref).map(|c| c.id) else {
            return;
        };
        let mut scratch = std::mem::take(&mut self.scratch);
        'read: while let Some(chat) = self
            .chats
            .get_mut(k)
            .and_then(Option::as_mut)
            .filter(|c| c.id == id)
        {
            match chat.stream.read(&mut scratch) {
                Ok(0) => {
                    if chat.state == ChatState::Closing {
                        self.drop_chat(k);
                    } else {
                        self.chat_fail(k, "chat closed without QUIT".into());
                    }
                    break;
                }
                Ok(n) => {
                    let now = Instant::now();
                    let mut input = &scratch[..n];
                    while !input.is_empty() {
                        let Some(chat) = self
                            .chats
                            .get_mut(k)
                            .and_then(Option::as_mut)
                            .filter(|c| c.id == id)
                        else {
                            break 'read;
                        };
                        let step = if chat.state == ChatState::AwaitOk {
                            chat.decoder
                                .decode_response(&mut input)
                                .map(|r| r.map(Incoming::Response))
                        } else {
                            chat.decoder
                                .decode_request(&mut input)
                                .map(|r| r.map(Incoming::Request))
                        };
                        match step {
                            Ok(Some(msg)) => self.on_chat_message(k, now, msg),
                            Ok(None) => break,
                            Err(e) => {
                                self.report.protocol_errors += 1;
                                self.chat_fail(k, format!("bad chat message: {e}"));
                                break 'read;
                            }
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.chat_fail(k, format!("chat read: {}", error_text(&e)));
                    break;
                }
            }
        }
        self.scratch = scratch;
    }

    fn on_chat_message(&mut self, k: usize, now: Instant, msg: Incoming) {
        let turns = self.cfg.turns;
        let Some(chat) = self.chats.get_mut(k).and_then(Option::as_mut) else {
            return;
        };
        match (chat.initiator, chat.state, msg) {
            // Initiator: the waiter accepted the chat.
            (true, ChatState::AwaitOk, Incoming::Response(r)) => {
                let Some(p) = chat.pair else { return };
                let waiter = self.conns[self.pairs[p].waiter].contact;
                if r.status != Status::OK || r.contact.map(|c| c.name) != Some(waiter.name) {
                    self.report.protocol_errors += 1;
                    return self.chat_fail(
                        k,
                        format!("CHAT answered {} without the waiter's contact", r.status),
                    );
                }
                if let Some(initiator) = chat.asking.take() {
                    let finished = r.noise.ok_or(secure::SecureError::Handshake);
                    match finished.and_then(|reply| initiator.finish(&reply.0)) {
                        Ok(session) => chat.session = Some(Box::new(session)),
                        Err(e) => {
                            self.report.protocol_errors += 1;
                            return self.chat_fail(k, format!("handshake: {e}"));
                        }
                    }
                }
                self.chat_setup.latency.record(now - chat.started);
                self.chat_setup.answered += 1;
                chat.state = ChatState::Talking;
                self.send_turn(k, p, now);
            }
            // Initiator: the peer's turn came back.
            (true, ChatState::Talking, Incoming::Request(Request::Message(body))) => {
                let Some(p) = chat.pair else { return };
                if let Some(session) = &mut chat.session {
                    if let Err(e) = session.open(secure::FrameKind::Message, &body) {
                        self.report.protocol_errors += 1;
                        return self.chat_fail(k, format!("frame: {e}"));
                    }
                }
                self.stage.latency.record(now - chat.sent_at);
                self.last_answer = now;
                if self.pairs[p].turns_sent < turns {
                    self.send_turn(k, p, now);
                } else {
                    self.send_quit(k);
                }
            }
            // Responder: the initiator asks to chat.
            (false, ChatState::AwaitChat, Incoming::Request(Request::Chat(asker, _, noise))) => {
                let pair = self
                    .names
                    .get(&asker.name)
                    .and_then(|&a| self.conns[a].pair)
                    .filter(|&p| !self.pairs[p].finished);
                let Some(p) = pair else {
                    self.report.protocol_errors += 1;
                    return self.chat_fail(
                        k,
                        format!("CHAT from {} who was handed no waiter", asker.name),
                    );
                };
                let waiter = self.conns[self.pairs[p].waiter].contact;
                chat.pair = Some(p);
                chat.state = ChatState::Talking;
                match noise {
                    Some(first) => {
                        let seed = self.seeds.next_seed();
                        match secure::Responder::accept(&BENCH_TICKET, seed, &first.0) {
                            Ok((session, reply)) => {
                                chat.session = Some(Box::new(session));
                                let reply = codec::Noise(reply.try_into().expect("a handshake"));
                                codec::write_ok_noise(&mut chat.out, Some(&waiter), Some(&reply));
                            }
                            Err(e) => {
                                self.report.protocol_errors += 1;
                                return self.chat_fail(k, format!("handshake: {e}"));
                            }
                        }
                    }
                    None => codec::write_ok(&mut chat.out, Some(&waiter)),
                }
                self.chat_flush(k);
            }
            // Responder: the initiator's turn.
            (false, ChatState::Talking, Incoming::Request(Request::Message(body))) => {
                let Some(p) = chat.pair else { return };
                if let Some(session) = &mut chat.session {
                    if let Err(e) = session.open(secure::FrameKind::Message, &body) {
                        self.report.protocol_errors += 1;
                        return self.chat_fail(k, format!("frame: {e}"));
                    }
                }
                if self.pairs[p].turns_sent < turns {
                    self.send_turn(k, p, now);
                }
            }
            (
                false,
                ChatState::Talking,
                Incoming::Request(Request::Quit | Request::QuitWith { .. }),
            ) => {
                let p = chat.pair;
                self.drop_chat(k);
                if let Some(p) = p {
                    self.finish_pair(p, true);
                }
            }
            (_, state, msg) => {
                self.report.protocol_errors += 1;
                self.chat_fail(
                    k,
                    format!("unexpected chat message in {state:?}: {}", msg.describe()),
                );
            }
        }
    }

    fn send_turn(&mut self, k: usize, p: usize, now: Instant) {
        let Some(chat) = self.chats.get_mut(k).and_then(Option::as_mut) else {
            return;
        };
        match &mut chat.session {
            Some(session) => {
                let frame = session
                    .seal(secure::FrameKind::Message, &self.cfg.message)
                    .expect("the bench message fits a frame");
                codec::write_sealed_message(&mut chat.out, &frame);
            }
            None => codec::write_message(&mut chat.out, &self.cfg.message),
        }
        chat.sent_at = now;
        self.pairs[p].turns_sent += 1;
        self.report.turns += 1;
        self.last_answer = now;
        // An initiator that sent the last turn says QUIT right after it.
        if chat.initiator && self.pairs[p].turns_sent >= self.cfg.turns {
            write_quit(chat);
            chat.state = ChatState::Closing;
        }
        self.chat_flush(k);
    }

    fn send_quit(&mut self, k: usize) {
        let Some(chat) = self.chats.get_mut(k).and_then(Option::as_mut) else {
            return;
        };
        write_quit(chat);
        chat.state = ChatState::Closing;
        self.chat_flush(k);
    }
}

/// QUIT, sealed in an encrypted chat.
fn write_quit(chat: &mut Chat) {
    match &mut chat.session {
        Some(session) => {
            let frame = session
                .seal(secure::FrameKind::Quit, b"")
                .expect("a quit frame");
            codec::write_quit_with(&mut chat.out, &frame, None);
        }
        None => codec::write_quit(&mut chat.out),
    }
}

/// Seeds for the bench's ephemeral keys: a counter is enough to measure with.
#[derive(Debug, Default)]
struct BenchSeeds(u64);

impl BenchSeeds {
    fn next_seed(&mut self) -> [u8; secure::SEED_LEN] {
        self.0 += 1;
        let mut seed = [0; secure::SEED_LEN];
        seed[..8].copy_from_slice(&self.0.to_le_bytes());
        seed
    }
}

enum Incoming {
    Request(Request),
    Response(Response),
}

impl Incoming {
    fn describe(&self) -> String {
        match self {
            Incoming::Request(r) => format!("{r:?}"),
            Incoming::Response(r) => format!("{}", r.status),
        }
    }
}

/// Writes as much of `out[pos..]` as the socket takes; clears `out` once all is sent.
pub(super) fn write_out(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    pos: &mut usize,
) -> io::Result<()> {
    while *pos < out.len() {
        match stream.write(&out[*pos..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => *pos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    out.clear();
    *pos = 0;
    Ok(())
}

/// The OS error without the "(os error N)" tail, for grouping.
pub(super) fn error_text(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(cut) => text[..cut].to_string(),
        None => text,
    }
}
