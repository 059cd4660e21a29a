//! Runs any bridgechat [`Endpoint`] (the server or the client) on one
//! io_uring: a completion-based event loop, Linux only (on other systems this
//! crate is empty).
//!
//! The core makes every protocol decision; this loop only moves bytes, through
//! the same [`drive`] as the other transports. One turn:
//!
//! 1. Queue the sends that the core's outputs asked for, then hand every queued
//!    operation to the kernel and sleep for the first completion, in one
//!    `io_uring_enter`, at most until the next deadline (the core's
//!    `poll_timeout`, an accept back-off, or a closing connection's grace).
//! 2. For each completion: feed it to the core (`handle_accept`,
//!    `handle_data`, ...) or queue its [`Outcome`], run [`drive`], and queue
//!    the operation that follows (the next receive, the rest of a send).
//! 3. On `Output::Exit`, stop accepting, flush every connection for at most
//!    [`EXIT_FLUSH`], cancel what is left, close every socket and return.
//!
//! Design choices, each bounded:
//!
//! - **Few system calls.** Listeners use one multishot accept. Each open
//!   connection has one receive in flight, into a buffer the kernel picks from
//!   a shared pool of provided buffers (8 MiB of address space however many
//!   connections are open); the buffer goes back to the pool as soon as the
//!   core has seen its bytes. Everything a turn queues is submitted with the
//!   wait of the next turn.
//! - **Output buffers.** What the core transmits during a turn is queued per
//!   connection and sent as one operation; while a send is in flight, new bytes
//!   wait in a second buffer. At [`HIGH_WATER`] queued bytes the connection's
//!   next receive is not queued until the queue drains; past [`MAX_QUEUED`] the
//!   connection is dropped and the core told.
//! - **Closing.** As in the other transports: flush, shut down the write
//!   side, discard input until the peer's end for at most [`CLOSE_GRACE`] and
//!   [`MAX_DISCARD`] bytes.
//! - **Out of file descriptors.** A failed accept (other than an aborted
//!   handshake) pauses accepting for [`ACCEPT_BACKOFF`].
//! - **Memory safety.** A connection whose operations are still in flight is
//!   only marked dead (its operations cancelled); its socket and buffers are
//!   dropped after the last of them completes. The ring is dropped before
//!   anything its operations name, and waits them out first.
//!
//! Sockets are blocking (io_uring waits for them), with `TCP_NODELAY`. Inputs
//! from a [`Controller`] wake the loop through a Unix socket pair whose
//! receive is always in flight. [`probe`] tells whether the kernel offers what
//! the loop needs (Linux 6.0 or later, io_uring not disabled).

#![cfg(target_os = "linux")]
#![deny(unsafe_code)]

mod ring;

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bridgechat_core::driver::{drive, Outcome, Outcomes, Transport};
use bridgechat_core::{ConnId, Endpoint, ExitError, IoFailure};
use bridgechat_transport_common::{bind_listener, reset_on_close, start_connect};
pub use bridgechat_transport_common::{
    ACCEPT_BACKOFF, CLOSE_GRACE, EXIT_FLUSH, HIGH_WATER, LISTEN_BACKLOG, MAX_QUEUED,
};
// Keys and ids are handed out here and by the core, never by peers: a fast hash is safe.
use rustc_hash::FxHashMap as HashMap;

use ring::{Completion, Op, Ring};

/// How much a closed connection may still send us before we drop it outright.
pub const MAX_DISCARD: usize = 1024 * 1024;

/// Submission queue entries; the completion queue has four times as many.
const RING_ENTRIES: u32 = 4096;

/// Whether this system's kernel runs the loop: io_uring is there, allowed, and
/// new enough. The error says why not.
pub fn probe() -> io::Result<()> {
    ring::probe()
}

/// Sends inputs to a running [`Runner`] from any thread.
pub struct Controller<I> {
    inputs: Sender<I>,
    wake: Arc<UnixStream>,
}

impl<I> Clone for Controller<I> {
    fn clone(&self) -> Self {
        Controller {
            inputs: self.inputs.clone(),
            wake: Arc::clone(&self.wake),
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
        if self.inputs.send(input).is_err() {
            return false;
        }
        match (&*self.wake).write_all(&[1]) {
            Ok(()) => true,
            // Full: the loop has wake-ups enough to read.
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        }
    }
}

/// Owns an endpoint and the sockets it asks for; see the crate docs.
pub struct Runner<E: Endpoint> {
    endpoint: E,
    ring: Ring,
    wake_rx: UnixStream,
    wake_tx: Arc<UnixStream>,
    inputs: Receiver<E::Input>,
    sender: Sender<E::Input>,
}

impl<E: Endpoint> fmt::Debug for Runner<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Runner")
    }
}

impl<E: Endpoint> Runner<E> {
    /// Sets up the ring; fails where the kernel refuses io_uring (see [`probe`]).
    pub fn new(endpoint: E) -> io::Result<Runner<E>> {
        let ring = Ring::new(RING_ENTRIES)?;
        let (wake_rx, wake_tx) = UnixStream::pair()?;
        wake_tx.set_nonblocking(true)?;
        let (sender, inputs) = mpsc::channel();
        Ok(Runner {
            endpoint,
            ring,
            wake_rx,
            wake_tx: Arc::new(wake_tx),
            inputs,
            sender,
        })
    }

    /// A handle that feeds `handle_input` from other threads (stdin, Ctrl+C, tests).
    pub fn controller(&self) -> Controller<E::Input> {
        Controller {
            inputs: self.sender.clone(),
            wake: Arc::clone(&self.wake_tx),
        }
    }

    /// Runs until the endpoint emits `Output::Exit` and returns its result.
    /// `on_event` sees every `Output::Event`, on this thread.
    pub fn run(self, on_event: impl FnMut(E::Event)) -> Result<(), ExitError> {
        let mut event_loop = EventLoop {
            endpoint: self.endpoint,
            inputs: self.inputs,
            wake_rx: self.wake_rx,
            completions: Vec::new(),
            io: Io {
                ring: self.ring,
                on_event,
                listeners: Vec::new(),
                conns: HashMap::default(),
                keys: HashMap::default(),
                next_key: 1,
                outcomes: Outcomes::default(),
                to_send: Vec::new(),
                starved: Vec::new(),
                closing: VecDeque::new(),
                accept_paused_until: None,
                exit: None,
            },
        };
        drop(self.sender); // only controllers keep the channel open
        drop(self.wake_tx);
        event_loop.run()
    }
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
    socket: TcpStream,
    state: State,
    /// Bytes queued while a send is in flight.
    out: Vec<u8>,
    /// Bytes handed to the kernel; not touched while `send_armed`.
    sending: Vec<u8>,
    /// How much of `sending` the kernel has sent.
    sent: usize,
    send_armed: bool,
    recv_armed: bool,
    connect_armed: bool,
    /// In `Io::to_send` already.
    send_queued: bool,
    /// No receive queued while `HIGH_WATER` or more bytes are queued.
    read_paused: bool,
    peer_eof: bool,
    write_shut: bool,
    discarded: usize,
    /// Removed: dropped once no operation of it is in flight.
    dead: bool,
}

impl Conn {
    fn new(socket: TcpStream, state: State) -> Conn {
        Conn {
            id: ConnId(u64::MAX),
            socket,
            state,
            out: Vec::new(),
            sending: Vec::new(),
            sent: 0,
            send_armed: false,
            recv_armed: false,
            connect_armed: false,
            send_queued: false,
            read_paused: false,
            peer_eof: false,
            write_shut: false,
            discarded: 0,
            dead: false,
        }
    }

    fn queued(&self) -> usize {
        self.out.len() + self.sending.len() - self.sent
    }

    fn busy(&self) -> bool {
        self.send_armed || self.recv_armed || self.connect_armed
    }

    fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

struct Listener {
    socket: TcpListener,
    /// The multishot accept is in flight.
    armed: bool,
}

/// The sockets; everything here works without the endpoint.
struct Io<F> {
    /// First, so that it is dropped (and waits out its operations) before the
    /// connections whose buffers they name.
    ring: Ring,
    /// Shows the core's events.
    on_event: F,
    /// By index, which is the key of their accepts; closed listeners stay as `None`.
    listeners: Vec<Option<Listener>>,
    conns: HashMap<u64, Conn>,
    /// Connections the core knows (`Connecting` and `Open`).
    keys: HashMap<ConnId, u64>,
    next_key: u64,
    /// Outcomes for `drive` to feed back to the core.
    outcomes: Outcomes,
    /// Connections with bytes to send at the end of the turn.
    to_send: Vec<u64>,
    /// Connections whose receive found the pool empty: receive again next turn.
    starved: Vec<u64>,
    /// Grace deadlines of closing connections, in order (the grace is constant).
    closing: VecDeque<(Instant, u64)>,
    accept_paused_until: Option<Instant>,
    exit: Option<Result<(), ExitError>>,
}

struct EventLoop<E: Endpoint, F> {
    endpoint: E,
    inputs: Receiver<E::Input>,
    wake_rx: UnixStream,
    /// Reused between turns.
    completions: Vec<Completion>,
    io: Io<F>,
}

impl<E: Endpoint, F: FnMut(E::Event)> EventLoop<E, F> {
    fn run(&mut self) -> Result<(), ExitError> {
        if let Err(e) = self.io.ring.start() {
            return Err(ExitError::Transport(IoFailure::new(
                e.kind(),
                format!("cannot start the io_uring: {e}"),
            )));
        }
        self.io.ring.wait_wake(self.wake_rx.as_raw_fd());
        self.drain(); // a new endpoint already holds outputs (its Listen, say)
        while self.io.exit.is_none() {
            let timeout = self
                .next_deadline()
                .map(|deadline| deadline.saturating_duration_since(Instant::now()));
            if let Err(e) = self.turn(timeout) {
                return Err(ExitError::Transport(IoFailure::new(
                    e.kind(),
                    format!("io_uring_enter failed: {e}"),
                )));
            }
            if self.io.exit.is_none() {
                self.after_wakeup();
            }
        }
        self.finish()
    }

    /// Submits, waits at most `timeout`, and handles every completion.
    fn turn(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.io.send_queued();
        self.io.ring.submit_and_wait(timeout)?;
        let mut completions = std::mem::take(&mut self.completions);
        self.io.ring.completions(&mut completions);
        for completion in completions.drain(..) {
            self.complete(completion);
        }
        self.completions = completions;
        Ok(())
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

    /// Timers, accept back-off and starved receives, after every turn.
    fn after_wakeup(&mut self) {
        let now = Instant::now();
        if self
            .io
            .accept_paused_until
            .is_some_and(|until| until <= now)
        {
            self.io.accept_paused_until = None;
            for index in 0..self.io.listeners.len() {
                self.io.arm_accept(index);
            }
        }
        while let Some(&(deadline, key)) = self.io.closing.front() {
            if deadline > now {
                break;
            }
            self.io.closing.pop_front();
            if self
                .io
                .conns
                .get(&key)
                .is_some_and(|c| c.state == State::Closing)
            {
                self.io.remove(key);
            }
        }
        if self.endpoint.poll_timeout().is_some_and(|d| d <= now) {
            self.endpoint.handle_timeout(now);
            self.drain();
        }
        for key in std::mem::take(&mut self.io.starved) {
            self.io.arm_recv(key);
        }
    }

    /// Carries out the core's outputs and feeds back their outcomes; nothing
    /// more once the endpoint has exited.
    fn drain(&mut self) {
        if self.io.exit.is_none() {
            drive(&mut self.endpoint, &mut self.io);
        }
    }

    fn complete(&mut self, c: Completion) {
        match c.op {
            Op::Wake => self.woken(c),
            Op::Accept => self.accepted(c),
            Op::Recv => self.received(c),
            Op::Send => {
                self.io.sent(c);
                if !self.io.outcomes.is_empty() {
                    self.drain(); // a failed send reports a close
                }
            }
            Op::Connect => {
                self.io.connect_ended(c);
                self.drain();
            }
            Op::Provide | Op::Cancel => {}
        }
    }

    fn woken(&mut self, c: Completion) {
        if let Some(buffer) = c.buffer {
            self.io.ring.give_back(buffer);
        }
        while self.io.exit.is_none() {
            let Ok(input) = self.inputs.try_recv() else {
                break;
            };
            self.endpoint.handle_input(Instant::now(), input);
            self.drain();
        }
        if self.io.exit.is_none() && c.result != 0 {
            self.io.ring.wait_wake(self.wake_rx.as_raw_fd());
        }
    }

    fn accepted(&mut self, c: Completion) {
        let index = c.key as usize;
        if !c.more {
            if let Some(Some(listener)) = self.io.listeners.get_mut(index) {
                listener.armed = false;
            }
        }
        match c.error() {
            None => {
                let socket = TcpStream::from(self.io.ring.accepted(c.result));
                let listening = matches!(self.io.listeners.get(index), Some(Some(_)));
                if listening && self.io.exit.is_none() {
                    // A peer that already left has no address: it is dropped, the core never knew.
                    if let Ok(peer) = socket.peer_addr() {
                        let _ = socket.set_nodelay(true);
                        let key = self.io.add(Conn::new(socket, State::Open));
                        let id = self.endpoint.handle_accept(Instant::now(), peer);
                        self.io.adopt(key, id);
                        self.io.arm_recv(key);
                        self.drain();
                    }
                }
            }
            Some(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::EAGAIN | libc::ECONNABORTED | libc::ECANCELED)
                ) => {}
            Some(_) => {
                // Out of descriptors, say: the backlog waits in the kernel meanwhile.
                self.io.accept_paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
                if c.more {
                    self.io.cancel_accept(index);
                }
            }
        }
        if !c.more {
            self.io.arm_accept(index);
        }
    }

    fn received(&mut self, c: Completion) {
        let key = c.key;
        let Some(conn) = self.io.conns.get_mut(&key) else {
            if let Some(buffer) = c.buffer {
                self.io.ring.give_back(buffer);
            }
            return;
        };
        conn.recv_armed = false;
        if conn.dead {
            if let Some(buffer) = c.buffer {
                self.io.ring.give_back(buffer);
            }
            self.io.forget_if_idle(key);
            return;
        }
        match (c.result, c.buffer) {
            (n, Some(buffer)) if n > 0 => {
                let n = n as usize;
                if conn.state == State::Open && self.io.exit.is_none() {
                    let id = conn.id;
                    let bytes = self.io.ring.buffer(buffer, n);
                    self.endpoint.handle_data(Instant::now(), id, bytes);
                    self.io.ring.give_back(buffer);
                    self.drain();
                } else {
                    self.io.ring.give_back(buffer);
                    conn.discarded += n;
                    if conn.discarded > MAX_DISCARD {
                        self.io.remove(key);
                        return;
                    }
                }
            }
            (0, buffer) => {
                if let Some(buffer) = buffer {
                    self.io.ring.give_back(buffer);
                }
                conn.peer_eof = true;
                self.io.start_closing(key, true);
                self.drain();
                return;
            }
            (result, _) if result == -libc::ENOBUFS => {
                self.io.starved.push(key);
                return;
            }
            (result, _) if result == -libc::EINTR || result == -libc::EAGAIN => {}
            (_, buffer) => {
                // A reset, or a receive that came back without its buffer.
                if let Some(buffer) = buffer {
                    self.io.ring.give_back(buffer);
                }
                self.io.broken(key);
                self.drain();
                return;
            }
        }
        self.io.arm_recv(key);
    }

    /// After `Exit`: no more accepting, flush for at most `EXIT_FLUSH`, close all.
    fn finish(&mut self) -> Result<(), ExitError> {
        for index in 0..self.io.listeners.len() {
            self.io.cancel_accept(index);
        }
        // The cancels name the listeners' descriptors: submit them before closing those.
        let _ = self.io.ring.submit();
        self.io.listeners.clear();
        let keys: Vec<u64> = self.io.conns.keys().copied().collect();
        for key in keys {
            self.io.start_closing(key, false);
        }
        let deadline = Instant::now() + EXIT_FLUSH;
        while self.io.conns.values().any(|c| !c.dead && c.queued() > 0) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if self.turn(Some(deadline - now)).is_err() {
                break;
            }
        }
        // Every operation ends before the sockets and buffers it names are dropped;
        // if the kernel will not end them, the connections are leaked, not freed.
        if self.io.ring.cancel_all() {
            self.io.conns.clear();
        } else {
            std::mem::forget(std::mem::take(&mut self.io.conns));
        }
        self.io.exit.take().unwrap_or(Ok(()))
    }
}

impl<Ev, F: FnMut(Ev)> Transport<Ev> for Io<F> {
    fn now(&mut self) -> Instant {
        Instant::now()
    }

    fn listen(&mut self, addr: SocketAddr, shared: bool) {
        let bound = bind_listener(addr, shared).and_then(|socket| {
            let local = socket.local_addr()?;
            self.listeners.push(Some(Listener {
                socket,
                armed: false,
            }));
            self.arm_accept(self.listeners.len() - 1);
            Ok(local)
        });
        self.outcomes.push(match bound {
            Ok(local) => Outcome::Listening(local),
            Err(e) => Outcome::ListenFailed(addr, e),
        });
    }

    fn connect(&mut self, conn: ConnId, addr: SocketAddr, from: Option<u16>) {
        match start_connect(addr, from) {
            Ok(socket) => {
                let key = self.add(Conn::new(socket, State::Connecting));
                self.adopt(key, conn);
                let c = self.conns.get_mut(&key).expect("just added");
                c.connect_armed = true;
                let fd = c.fd();
                self.ring.wait_connected(fd, key);
            }
            Err(e) => self.outcomes.push(Outcome::ConnectFailed(conn, e)),
        }
    }

    fn transmit(&mut self, conn: ConnId, bytes: &[u8]) {
        let Some(&key) = self.keys.get(&conn) else {
            return;
        };
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        if c.queued() + bytes.len() > MAX_QUEUED {
            // The peer leaves its answers unread: drop it and say why.
            if let Some((id, State::Open)) = self.remove(key) {
                self.outcomes.push(Outcome::NotReading(id));
            }
            return;
        }
        c.out.extend_from_slice(bytes);
        if !c.send_queued {
            c.send_queued = true;
            self.to_send.push(key);
        }
    }

    fn close(&mut self, conn: ConnId) {
        if let Some(&key) = self.keys.get(&conn) {
            self.start_closing(key, false);
        }
    }

    fn abort(&mut self, conn: ConnId) {
        let Some(key) = self.keys.remove(&conn) else {
            return;
        };
        if let Some(c) = self.conns.get_mut(&key) {
            // Closing the socket then sends a reset: nothing is owed to this peer.
            let _ = reset_on_close(&c.socket);
            c.state = State::Closing; // the core forgot it: nothing to report
        }
        self.remove(key);
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
    fn add(&mut self, conn: Conn) -> u64 {
        let key = self.next_key;
        self.next_key += 1;
        self.conns.insert(key, conn);
        key
    }

    fn adopt(&mut self, key: u64, id: ConnId) {
        if let Some(conn) = self.conns.get_mut(&key) {
            conn.id = id;
            self.keys.insert(id, key);
        }
    }

    fn arm_accept(&mut self, index: usize) {
        if self.accept_paused_until.is_some() || self.exit.is_some() {
            return;
        }
        if let Some(Some(listener)) = self.listeners.get_mut(index) {
            if !listener.armed {
                listener.armed = true;
                let fd = listener.socket.as_raw_fd();
                self.ring.accept(fd, index as u64);
            }
        }
    }

    fn cancel_accept(&mut self, index: usize) {
        if let Some(Some(listener)) = self.listeners.get(index) {
            if listener.armed {
                self.ring.cancel_fd(listener.socket.as_raw_fd());
            }
        }
    }

    /// Queues the connection's next receive, unless it must not read now.
    fn arm_recv(&mut self, key: u64) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if conn.dead || conn.recv_armed || conn.peer_eof || conn.state == State::Connecting {
            return;
        }
        if conn.state == State::Open && conn.queued() >= HIGH_WATER {
            conn.read_paused = true;
            return;
        }
        conn.read_paused = false;
        conn.recv_armed = true;
        let fd = conn.fd();
        self.ring.recv(fd, key);
    }

    /// Sends what the turn queued, one operation per connection.
    fn send_queued(&mut self) {
        for key in std::mem::take(&mut self.to_send) {
            if let Some(conn) = self.conns.get_mut(&key) {
                conn.send_queued = false;
            }
            self.send(key);
        }
    }

    /// Starts a send of what is queued, unless one is in flight.
    #[allow(unsafe_code)]
    fn send(&mut self, key: u64) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if conn.dead || conn.send_armed || conn.state == State::Connecting {
            return;
        }
        if conn.sent == conn.sending.len() {
            conn.sending.clear();
            conn.sent = 0;
            std::mem::swap(&mut conn.sending, &mut conn.out);
        }
        if conn.sent < conn.sending.len() {
            conn.send_armed = true;
            let rest = &conn.sending[conn.sent..];
            let fd = conn.fd();
            // SAFETY: `sending` is neither changed nor dropped while `send_armed`: only
            // `sent` clears it, and a connection with an operation in flight is only
            // marked dead, its buffers dropped after that operation's completion (or
            // leaked, if the ring cannot end it).
            unsafe { self.ring.send(fd, key, rest.as_ptr(), rest.len()) };
        }
    }

    /// A send completed.
    fn sent(&mut self, c: Completion) {
        let key = c.key;
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        conn.send_armed = false;
        if conn.dead {
            self.forget_if_idle(key);
            return;
        }
        if c.result <= 0 {
            return self.broken(key);
        }
        conn.sent += c.result as usize;
        self.send(key);
        self.after_send(key);
    }

    /// Resumes a paused connection, and finishes a closing one once its queue is empty.
    fn after_send(&mut self, key: u64) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if conn.dead {
            return;
        }
        if conn.read_paused && conn.queued() < HIGH_WATER {
            self.arm_recv(key);
            return;
        }
        if conn.state == State::Closing && conn.queued() == 0 && !conn.write_shut {
            conn.write_shut = true;
            let _ = conn.socket.shutdown(Shutdown::Write);
            if conn.peer_eof {
                self.remove(key);
            }
        }
    }

    /// A connect finished one way or the other, or is still under way.
    fn connect_ended(&mut self, c: Completion) {
        let key = c.key;
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        conn.connect_armed = false;
        if conn.dead {
            self.forget_if_idle(key);
            return;
        }
        let outcome = match c.error() {
            Some(e) => Err(e),
            None => match conn.socket.take_error() {
                Ok(Some(e)) | Err(e) => Err(e),
                Ok(None) => match conn.socket.peer_addr() {
                    Ok(_) => conn.socket.local_addr(),
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                        conn.connect_armed = true; // not yet
                        let fd = conn.fd();
                        self.ring.wait_connected(fd, key);
                        return;
                    }
                    Err(e) => Err(e),
                },
            },
        };
        let outcome = outcome.and_then(|local| {
            conn.socket.set_nonblocking(false)?;
            Ok(local)
        });
        match outcome {
            Ok(local) => {
                let _ = conn.socket.set_nodelay(true);
                conn.state = State::Open;
                self.outcomes.push(Outcome::Connected(conn.id, local));
                self.send(key);
                self.arm_recv(key);
            }
            Err(e) => {
                let id = conn.id;
                self.remove(key);
                self.outcomes.push(Outcome::ConnectFailed(id, e));
            }
        }
    }

    /// The core forgot the connection (`Close`), or the peer ended it (`peer_closed`):
    /// flush, then close. A connection still connecting is just dropped.
    fn start_closing(&mut self, key: u64, peer_closed: bool) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if conn.dead {
            return;
        }
        let was = conn.state;
        self.keys.remove(&conn.id);
        match was {
            State::Connecting => {
                conn.state = State::Closing; // not reported: the core forgot it
                self.remove(key);
                return;
            }
            State::Open if peer_closed => self.outcomes.push(Outcome::Closed(conn.id)),
            _ => {}
        }
        if was != State::Closing {
            conn.state = State::Closing;
            self.closing.push_back((Instant::now() + CLOSE_GRACE, key));
        }
        self.send(key);
        self.arm_recv(key); // discard what still comes
        self.after_send(key);
        if let Some(conn) = self.conns.get(&key) {
            if !conn.dead && conn.peer_eof && conn.write_shut {
                self.remove(key);
            }
        }
    }

    /// The connection failed (reset, write error, unbounded queue): drop it now
    /// and tell the core if it still knew it.
    fn broken(&mut self, key: u64) {
        if let Some((id, State::Open)) = self.remove(key) {
            self.outcomes.push(Outcome::Closed(id));
        }
    }

    /// Drops the connection, or marks it dead and cancels its operations if
    /// some are in flight. Returns its id and state if it was alive.
    fn remove(&mut self, key: u64) -> Option<(ConnId, State)> {
        let conn = self.conns.get_mut(&key)?;
        if conn.dead {
            return None;
        }
        conn.dead = true;
        if conn.state != State::Closing {
            self.keys.remove(&conn.id);
        }
        let alive = (conn.id, conn.state);
        if conn.busy() {
            let fd = conn.fd();
            self.ring.cancel_fd(fd);
        } else {
            self.conns.remove(&key);
        }
        Some(alive)
    }

    /// Drops a dead connection once nothing of it is in flight.
    fn forget_if_idle(&mut self, key: u64) {
        if self.conns.get(&key).is_some_and(|c| c.dead && !c.busy()) {
            self.conns.remove(&key);
        }
    }
}
