//! Runs any bridgechat [`Endpoint`] (the server or the client) on one
//! [`mio::Poll`]: the default transport.
//!
//! The loop is thin; the core makes every protocol decision. One turn:
//!
//! 1. Sleep in `poll` until a socket is ready, the [`Controller`] wakes us, or
//!    the next deadline passes (the core's `poll_timeout`, an accept back-off,
//!    or a closing connection's grace period).
//! 2. Feed what happened to the core (`handle_accept`, `handle_data`,
//!    `handle_input`, `handle_timeout`, ...), and after every call run the
//!    core's [`drive`]: it hands each output to this crate's [`Transport`] in
//!    order and feeds back the queued outcomes (a listener bound, a connect
//!    that completed or failed, a connection that closed) one at a time.
//! 3. On `Output::Exit`, drop the listeners, flush every buffer for at most
//!    [`EXIT_FLUSH`], close every socket and return the result.
//!
//! Design choices, each bounded:
//!
//! - **Edge-triggered I/O.** Accepts go until `WouldBlock`; reads stop at a
//!   short read (fewer bytes than the buffer: the socket is drained, and new
//!   data raises a new event), which saves an empty `recv` per request. Once
//!   the peer has closed its side (`is_read_closed`) no new event will come,
//!   so reads then go on until the end of stream. One 64 KiB read buffer
//!   serves every connection. Every accepted and connected
//!   stream gets `TCP_NODELAY`; IPv4 and IPv6 alike. Listeners are mio's, so
//!   `SO_REUSEADDR` is set as with `std`.
//! - **Output buffers.** Each connection queues what the core transmits and
//!   writes as much as the socket takes, so a slow reader blocks no one. At
//!   [`HIGH_WATER`] queued bytes we stop reading that connection (its
//!   requests would only pile up more answers) and read again once the queue
//!   drains below the mark. Past [`MAX_QUEUED`] the connection is dropped and
//!   the core told `handle_closed`.
//! - **Closing.** `Close` flushes the queue, shuts down the write side, then
//!   reads and discards until the peer closes, for at most [`CLOSE_GRACE`]
//!   and [`MAX_DISCARD`] bytes. Without that, unread input would make the
//!   kernel answer with a reset that can destroy the final response (say a
//!   413) before the peer reads it.
//! - **Aborting.** `Abort` sets `SO_LINGER` 0 and drops the socket at once: the
//!   peer sees a reset, nothing is flushed and the descriptor is free now.
//! - **Accepting.** A new connection is read at once, before the next accept,
//!   so what a peer sent right after connecting reaches the core before newer
//!   silent connections can push it out.
//! - **Out of file descriptors.** When `accept` fails for any reason other
//!   than `WouldBlock`, `Interrupted` or an aborted handshake (in practice
//!   `EMFILE`, `ENFILE`, `ENOBUFS`), accepting pauses for [`ACCEPT_BACKOFF`];
//!   pending connections wait in the kernel's backlog. The loop neither spins
//!   nor dies and the core is not told: nothing reached it.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::Instant;

use bridgechat_core::driver::{drive, Outcome, Outcomes, Transport};
use bridgechat_core::{ConnId, Endpoint, ExitError, IoFailure};
use bridgechat_transport_common::{bind_listener, reset_on_close, start_connect};
pub use bridgechat_transport_common::{
    ACCEPT_BACKOFF, CLOSE_GRACE, EXIT_FLUSH, HIGH_WATER, LISTEN_BACKLOG, MAX_QUEUED,
};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
// Tokens and ids are handed out here and by the core, never by peers: a fast hash is safe.
use rustc_hash::FxHashMap as HashMap;

/// File descriptors one connection costs: its socket.
pub const FDS_PER_CONNECTION: u64 = 1;

/// How much a closed connection may still send us before we drop it outright.
pub const MAX_DISCARD: usize = 1024 * 1024;

const READ_BUFFER: usize = 64 * 1024;
const WAKER: Token = Token(0);

/// Sends inputs to a running [`Runner`] from any thread.
pub struct Controller<I> {
    inputs: Sender<I>,
    waker: Arc<Waker>,
}

impl<I> Clone for Controller<I> {
    fn clone(&self) -> Self {
        Controller {
            inputs: self.inputs.clone(),
            waker: Arc::clone(&self.waker),
        }
    }
}

impl<I> fmt::Debug for Controller<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Controller")
    }
}

impl<I: Send + 'static> Controller<I> {
    /// Hands `input` to the loop and wakes it; false if the loop has ended.
    pub fn send(&self, input: I) -> bool {
        self.inputs.send(input).is_ok() && self.waker.wake().is_ok()
    }
}

/// Owns an endpoint and the sockets it asks for; see the crate docs.
pub struct Runner<E: Endpoint> {
    endpoint: E,
    poll: Poll,
    waker: Arc<Waker>,
    inputs: Receiver<E::Input>,
    sender: Sender<E::Input>,
}

impl<E: Endpoint> fmt::Debug for Runner<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Runner")
    }
}

impl<E: Endpoint> Runner<E> {
    pub fn new(endpoint: E) -> io::Result<Runner<E>> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (sender, inputs) = mpsc::channel();
        Ok(Runner {
            endpoint,
            poll,
            waker,
            inputs,
            sender,
        })
    }

    /// A handle that feeds `handle_input` from other threads (stdin, Ctrl+C, tests).
    pub fn controller(&self) -> Controller<E::Input> {
        Controller {
            inputs: self.sender.clone(),
            waker: Arc::clone(&self.waker),
        }
    }

    /// Runs until the endpoint emits `Output::Exit` and returns its result.
    /// `on_event` sees every `Output::Event`, on this thread.
    pub fn run(self, on_event: impl FnMut(E::Event)) -> Result<(), ExitError> {
        let mut event_loop = EventLoop {
            endpoint: self.endpoint,
            inputs: self.inputs,
            read_buf: vec![0; READ_BUFFER].into_boxed_slice(),
            io: Io {
                on_event,
                poll: self.poll,
                listeners: Vec::new(),
                conns: HashMap::default(),
                tokens: HashMap::default(),
                next_token: WAKER.0 + 1,
                outcomes: Outcomes::default(),
                to_resume: Vec::new(),
                closing: VecDeque::new(),
                accept_paused_until: None,
                exit: None,
            },
        };
        drop(self.sender); // only controllers keep the channel open
        event_loop.run()
    }
}

/// How far one readiness event reads a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Until {
    /// To the first read that does not fill the buffer (the socket is drained).
    Short,
    /// To `WouldBlock` or the end of stream.
    End,
}

/// What the core knows about a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Asked for by `Output::Connect`, not established yet.
    Connecting,
    /// Known to the core.
    Open,
    /// Forgotten by the core: flush, shut down writing, discard input until the peer's end.
    Closing,
}

struct Conn {
    id: ConnId,
    stream: TcpStream,
    state: State,
    out: Vec<u8>,
    /// How much of `out` has been written.
    sent: usize,
    /// Not read while `out` holds `HIGH_WATER` or more; see `Io::to_resume`.
    read_paused: bool,
    peer_eof: bool,
    write_shut: bool,
    discarded: usize,
}

impl Conn {
    fn queued(&self) -> usize {
        self.out.len() - self.sent
    }
}

/// The sockets; everything here works without the endpoint.
struct Io<F> {
    /// Shows the core's events.
    on_event: F,
    poll: Poll,
    listeners: Vec<(Token, TcpListener)>,
    conns: HashMap<Token, Conn>,
    /// Connections the core knows (`Connecting` and `Open`).
    tokens: HashMap<ConnId, Token>,
    next_token: usize,
    /// Outcomes for `drive` to feed back to the core.
    outcomes: Outcomes,
    /// Paused connections whose queue drained below `HIGH_WATER`: read them again.
    to_resume: Vec<Token>,
    /// Grace deadlines of closing connections, in order (the grace is constant).
    closing: VecDeque<(Instant, Token)>,
    accept_paused_until: Option<Instant>,
    exit: Option<Result<(), ExitError>>,
}

struct EventLoop<E: Endpoint, F> {
    endpoint: E,
    inputs: Receiver<E::Input>,
    read_buf: Box<[u8]>,
    io: Io<F>,
}

impl<E: Endpoint, F: FnMut(E::Event)> EventLoop<E, F> {
    fn run(&mut self) -> Result<(), ExitError> {
        self.drain(); // a new endpoint already holds outputs (its Listen, say)
        let mut events = Events::with_capacity(1024);
        while self.io.exit.is_none() {
            let timeout = self.next_deadline().map(|deadline| {
                deadline.saturating_duration_since(Instant::now()) // mio rounds up to whole ms
            });
            if let Err(e) = self.io.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(ExitError::Transport(IoFailure::new(
                    e.kind(),
                    format!("poll failed: {e}"),
                )));
            }
            for event in events.iter() {
                if self.io.exit.is_some() {
                    break;
                }
                let token = event.token();
                if token == WAKER {
                    self.take_inputs();
                } else if self.io.listeners.iter().any(|(t, _)| *t == token) {
                    self.accept_all(token);
                } else {
                    self.conn_ready(token, event.is_writable(), event.is_read_closed());
                }
            }
            if self.io.exit.is_none() {
                self.after_wakeup();
            }
        }
        self.finish()
    }

    fn next_deadline(&self) -> Option<Instant> {
        [
            self.endpoint.poll_timeout(),
            self.io.accept_paused_until,
            self.io.closing.front().map(|(deadline, _)| *deadline),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Timers, accept back-off and read resumption, after every wake-up.
    fn after_wakeup(&mut self) {
        let now = Instant::now();
        if self
            .io
            .accept_paused_until
            .is_some_and(|until| until <= now)
        {
            self.io.accept_paused_until = None;
            let tokens: Vec<Token> = self.io.listeners.iter().map(|(t, _)| *t).collect();
            for token in tokens {
                self.accept_all(token); // edge-triggered: the backlog raises no new event
            }
        }
        while let Some(&(deadline, token)) = self.io.closing.front() {
            if deadline > now {
                break;
            }
            self.io.closing.pop_front();
            if self
                .io
                .conns
                .get(&token)
                .is_some_and(|c| c.state == State::Closing)
            {
                self.io.remove(token);
            }
        }
        if self.endpoint.poll_timeout().is_some_and(|d| d <= now) {
            self.endpoint.handle_timeout(now);
            self.drain();
        }
        while let Some(token) = self.io.to_resume.pop() {
            let Some(conn) = self.io.conns.get_mut(&token) else {
                continue;
            };
            if conn.read_paused && conn.queued() < HIGH_WATER {
                conn.read_paused = false;
                self.read_all(token); // edge-triggered: data that came meanwhile raises no new event
            }
        }
    }

    fn take_inputs(&mut self) {
        while self.io.exit.is_none() {
            let Ok(input) = self.inputs.try_recv() else {
                return;
            };
            self.endpoint.handle_input(Instant::now(), input);
            self.drain();
        }
    }

    /// Carries out the core's outputs and feeds back their outcomes.
    fn drain(&mut self) {
        drive(&mut self.endpoint, &mut self.io);
    }

    fn accept_all(&mut self, listener: Token) {
        while self.io.accept_paused_until.is_none() && self.io.exit.is_none() {
            let Some((_, socket)) = self.io.listeners.iter().find(|(t, _)| *t == listener) else {
                return;
            };
            match socket.accept() {
                Ok((stream, peer)) => {
                    let Some(token) = self.io.add(stream) else {
                        continue; // could not register: the stream is dropped, the core never knew
                    };
                    let id = self.endpoint.handle_accept(Instant::now(), peer);
                    self.io.adopt(token, id, State::Open);
                    self.drain();
                    // What it already sent reaches the core before the next accept: a peer
                    // that spoke at once is heard before newer silent ones can push it out.
                    self.read_all(token);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(_) => self.io.accept_paused_until = Some(Instant::now() + ACCEPT_BACKOFF),
            }
        }
    }

    fn conn_ready(&mut self, token: Token, writable: bool, read_closed: bool) {
        let Some(conn) = self.io.conns.get(&token) else {
            return;
        };
        if conn.state == State::Connecting {
            self.io.check_connected(token);
            self.drain();
        }
        if writable {
            self.io.write_out(token);
            self.drain(); // a failed write may have reported a close
        }
        // After the peer's FIN no further event comes: read on to the end of stream.
        self.read(
            token,
            if read_closed {
                Until::End
            } else {
                Until::Short
            },
        );
    }

    /// Reads until `WouldBlock`, handing bytes to the core (or discarding them
    /// on a closing connection); stops early at the high-water mark.
    fn read_all(&mut self, token: Token) {
        self.read(token, Until::End);
    }

    /// Reads as [`Self::read_all`], but with `Until::Short` also returns after a
    /// read that did not fill the buffer: the socket had nothing more.
    fn read(&mut self, token: Token, until: Until) {
        loop {
            let Some(conn) = self.io.conns.get_mut(&token) else {
                return;
            };
            match conn.state {
                State::Connecting => return,
                State::Open if conn.queued() >= HIGH_WATER => {
                    conn.read_paused = true;
                    return;
                }
                State::Open if conn.read_paused => return,
                _ => {}
            }
            match conn.stream.read(&mut self.read_buf) {
                Ok(0) => {
                    conn.peer_eof = true;
                    self.io.start_closing(token, true);
                    self.drain();
                    return;
                }
                Ok(n) if conn.state == State::Open => {
                    let id = conn.id;
                    self.endpoint
                        .handle_data(Instant::now(), id, &self.read_buf[..n]);
                    self.drain();
                    if until == Until::Short && n < self.read_buf.len() {
                        return;
                    }
                }
                Ok(n) => {
                    conn.discarded += n;
                    if conn.discarded > MAX_DISCARD {
                        self.io.remove(token);
                        return;
                    }
                    if until == Until::Short && n < self.read_buf.len() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.io.broken(token);
                    self.drain();
                    return;
                }
            }
        }
    }

    /// After `Exit`: no more accepting, flush for at most `EXIT_FLUSH`, close all.
    fn finish(&mut self) -> Result<(), ExitError> {
        self.io.listeners.clear();
        let tokens: Vec<Token> = self.io.conns.keys().copied().collect();
        for token in tokens {
            self.io.start_closing(token, false);
        }
        let deadline = Instant::now() + EXIT_FLUSH;
        let mut events = Events::with_capacity(1024);
        while self.io.conns.values().any(|c| c.queued() > 0) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if let Err(e) = self.io.poll.poll(&mut events, Some(deadline - now)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                break;
            }
            for event in events.iter() {
                if event.is_writable() {
                    self.io.write_out(event.token());
                }
                self.read_all(event.token()); // closing: only discards
            }
        }
        self.io.conns.clear(); // dropping a stream closes it
        self.io.exit.take().unwrap_or(Ok(()))
    }
}

impl<Ev, F: FnMut(Ev)> Transport<Ev> for Io<F> {
    fn now(&mut self) -> Instant {
        Instant::now()
    }

    fn listen(&mut self, addr: SocketAddr, shared: bool) {
        let bound = bind_listener(addr, shared).and_then(|listener| {
            listener.set_nonblocking(true)?;
            let mut listener = TcpListener::from_std(listener);
            let token = Token(self.next_token);
            self.next_token += 1;
            self.poll
                .registry()
                .register(&mut listener, token, Interest::READABLE)?;
            let local = listener.local_addr()?;
            self.listeners.push((token, listener));
            Ok(local)
        });
        self.outcomes.push(match bound {
            Ok(local) => Outcome::Listening(local),
            Err(e) => Outcome::ListenFailed(addr, e),
        });
    }

    fn connect(&mut self, conn: ConnId, addr: SocketAddr, from: Option<u16>) {
        match start_connect(addr, from).map(TcpStream::from_std) {
            Ok(stream) => match self.add(stream) {
                Some(token) => self.adopt(token, conn, State::Connecting),
                None => self.outcomes.push(Outcome::ConnectFailed(
                    conn,
                    io::Error::other("cannot register the socket"),
                )),
            },
            Err(e) => self.outcomes.push(Outcome::ConnectFailed(conn, e)),
        }
    }

    fn transmit(&mut self, conn: ConnId, bytes: &[u8]) {
        let Some(&token) = self.tokens.get(&conn) else {
            return;
        };
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        if c.queued() + bytes.len() > MAX_QUEUED {
            // The peer has stopped reading: drop it rather than buffer without limit.
            if let Some(conn) = self.remove(token) {
                self.outcomes.push(Outcome::NotReading(conn.id));
            }
            return;
        }
        c.out.extend_from_slice(bytes);
        self.write_out(token);
    }

    fn close(&mut self, conn: ConnId) {
        if let Some(&token) = self.tokens.get(&conn) {
            self.start_closing(token, false);
        }
    }

    fn abort(&mut self, conn: ConnId) {
        let Some(token) = self.tokens.remove(&conn) else {
            return;
        };
        if let Some(conn) = self.remove(token) {
            // Dropping the stream closes it: with a reset, and nothing to wait for.
            let _ = reset_on_close(&conn.stream);
        }
    }

    fn show(&mut self, event: Ev) {
        (self.on_event)(event);
    }

    fn exit(&mut self, result: Result<(), ExitError>) {
        self.exit.get_or_insert(result);
    }

    fn outcomes(&mut self) -> &mut Outcomes {
        &mut self.outcomes
    }
}

impl<F> Io<F> {
    /// Registers a new stream for both directions; `None` if that fails.
    fn add(&mut self, mut stream: TcpStream) -> Option<Token> {
        let token = Token(self.next_token);
        self.next_token += 1;
        self.poll
            .registry()
            .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
            .ok()?;
        let _ = stream.set_nodelay(true); // may fail while connecting; set again once connected
        self.conns.insert(
            token,
            Conn {
                id: ConnId(u64::MAX),
                stream,
                state: State::Connecting,
                out: Vec::new(),
                sent: 0,
                read_paused: false,
                peer_eof: false,
                write_shut: false,
                discarded: 0,
            },
        );
        Some(token)
    }

    fn adopt(&mut self, token: Token, id: ConnId, state: State) {
        if let Some(conn) = self.conns.get_mut(&token) {
            conn.id = id;
            conn.state = state;
            self.tokens.insert(id, token);
        }
    }

    /// A connect finished one way or the other, or is still under way.
    fn check_connected(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let outcome = match conn.stream.take_error() {
            Ok(Some(e)) | Err(e) => Err(e),
            Ok(None) => match conn.stream.peer_addr() {
                Ok(_) => conn.stream.local_addr(),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotConnected | io::ErrorKind::WouldBlock
                    ) =>
                {
                    return; // not yet
                }
                Err(e) => Err(e),
            },
        };
        match outcome {
            Ok(local) => {
                let _ = conn.stream.set_nodelay(true);
                conn.state = State::Open;
                self.outcomes.push(Outcome::Connected(conn.id, local));
                self.write_out(token);
            }
            Err(e) => {
                let id = conn.id;
                self.tokens.remove(&id);
                self.conns.remove(&token);
                self.outcomes.push(Outcome::ConnectFailed(id, e));
            }
        }
    }

    /// Writes what the socket takes; finishes closing once a closing queue is empty.
    fn write_out(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if conn.state == State::Connecting {
            return;
        }
        while conn.sent < conn.out.len() {
            match conn.stream.write(&conn.out[conn.sent..]) {
                Ok(0) => return self.broken(token),
                Ok(n) => conn.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.broken(token),
            }
        }
        if conn.sent == conn.out.len() {
            conn.out.clear();
            conn.sent = 0;
        } else if conn.sent > conn.out.len() / 2 {
            conn.out.drain(..conn.sent);
            conn.sent = 0;
        }
        if conn.read_paused && conn.queued() < HIGH_WATER {
            self.to_resume.push(token);
        }
        if conn.state == State::Closing && conn.queued() == 0 && !conn.write_shut {
            conn.write_shut = true;
            let _ = conn.stream.shutdown(Shutdown::Write);
            if conn.peer_eof {
                self.remove(token);
            }
        }
    }

    /// The core forgot the connection (`Close`), or the peer ended it (`peer_closed`):
    /// flush, then close. A connection still connecting is just dropped.
    fn start_closing(&mut self, token: Token, peer_closed: bool) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let was = conn.state;
        self.tokens.remove(&conn.id);
        match was {
            State::Connecting => {
                self.conns.remove(&token);
                return;
            }
            State::Open if peer_closed => self.outcomes.push(Outcome::Closed(conn.id)),
            _ => {}
        }
        if was != State::Closing {
            conn.state = State::Closing;
            self.closing
                .push_back((Instant::now() + CLOSE_GRACE, token));
        }
        self.write_out(token);
        if let Some(conn) = self.conns.get(&token) {
            if conn.peer_eof && conn.write_shut {
                self.remove(token);
            }
        }
    }

    /// The connection failed (reset, write error, unbounded queue): drop it now
    /// and tell the core if it still knew it.
    fn broken(&mut self, token: Token) {
        if let Some(conn) = self.remove(token) {
            if conn.state == State::Open {
                self.outcomes.push(Outcome::Closed(conn.id));
            }
        }
    }

    fn remove(&mut self, token: Token) -> Option<Conn> {
        let mut conn = self.conns.remove(&token)?;
        if conn.state != State::Closing {
            self.tokens.remove(&conn.id);
        }
        let _ = self.poll.registry().deregister(&mut conn.stream);
        Some(conn)
    }
}
