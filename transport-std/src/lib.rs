//! Runs any bridgechat [`Endpoint`] (the server or the client) on blocking
//! `std::net` sockets: the transport to read first.
//!
//! The loop is thin; the core makes every protocol decision. Blocking sockets
//! mean one thread per thing that can block, all feeding one channel:
//!
//! ```text
//!  acceptor  (one per listener)    ── Accepted ─────────┐
//!  reader    (one per connection)  ── Data, Closed ─────┤ bounded       core thread: owns the Endpoint,
//!  writer    (one per connection)  ── Closed, Finished ─┼─ channel ───► feeds each message in, drains
//!  connector (becomes the writer)  ── Connected ────────┤               poll_output, sleeps until the
//!  Controller::send                ── Wake ─────────────┘               message or poll_timeout()
//! ```
//!
//! - **The core thread** is the one that calls [`Runner::run`]. It never
//!   blocks on a socket: `Transmit` copies the bytes into the connection's
//!   *outbox*, a channel to its writer. After every message it runs the core's
//!   [`drive`], which hands each output to this crate's [`Transport`] and feeds
//!   back the queued outcomes (a listener bound, a connect that completed or
//!   failed, a connection that closed) one at a time.
//! - **One socket per connection.** The core, the reader and the writer share
//!   one `Arc<TcpStream>` (`&TcpStream` reads and writes), so a connection
//!   costs [`FDS_PER_CONNECTION`] descriptor and two threads.
//! - **Readers** block in `read` and forward each chunk, then wait until the
//!   core has taken it and carried out what it caused: a peer that sends
//!   faster than the core digests is slowed down by TCP flow control, and a
//!   pipelining peer's answers cannot outrun the [`HIGH_WATER`] pause.
//! - **Acceptors** hand each connection to the core with what it has already
//!   sent (read without waiting), and accept the next only once the core has
//!   taken it, so accepted sockets never pile up in the channel.
//! - **Writers** block in `write_all` on what their outbox holds, so a slow
//!   reader blocks only its own writer. The bytes in an outbox are counted:
//!   at [`HIGH_WATER`] the connection's reader pauses (its requests would only
//!   pile up more answers) until the writer drains below the mark; past
//!   [`MAX_QUEUED`] the core shuts the socket down and reports it closed.
//! - **Aborting** (`Output::Abort`) sets `SO_LINGER` 0 and shuts the read side
//!   down: the reader ends, the writer stops before its next 64 KiB and does
//!   not linger, and the last of them to drop the socket sends the reset. Acceptors wait while
//!   [`MAX_ABORTING`] aborted connections still have threads, so a flood the
//!   core resets as fast as it comes costs a bounded number of threads.
//! - **Closing** is dropping the outbox: the writer sends what is queued,
//!   shuts down its write side, then waits for the peer to close its side (the
//!   reader ending). Without that wait, unread input would make the kernel
//!   answer with a reset that can destroy the final response (say a 413)
//!   before the peer reads it. A peer that takes more than [`CLOSE_GRACE`] to
//!   read our last bytes and close has the socket shut down by the core.
//! - **Connects** run on their own thread (`connect_timeout`), which then
//!   becomes that connection's writer, so bytes transmitted early wait in the
//!   outbox. A connect the core gave up on (it emits `Close`) is closed when it
//!   completes.
//! - **Inputs** from a [`Controller`] go through their own unbounded channel
//!   and a `Wake` message is `try_send`-ed to the core: `send` never blocks,
//!   even when called from `on_event`, and a full channel means the core is
//!   about to wake anyway.
//! - **Exit**: acceptors are stopped (a flag, plus a connection to themselves
//!   to wake `accept`), every outbox is dropped, writers get up to
//!   [`EXIT_FLUSH`] to finish, then every socket left is shut down. Threads
//!   still running (a connect in progress) end on their own.
//!
//! Every thread but the core's gets a [`THREAD_STACK`] stack, so 1,000 clients
//! (2,000 threads, 1,000 descriptors) cost a few tens of MiB.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bridgechat_core::driver::{drive, Outcome, Outcomes, Transport};
use bridgechat_core::{ConnId, Endpoint, ExitError, IoFailure};
use bridgechat_transport_common::{bind_listener, connect_timeout, reset_on_close};
pub use bridgechat_transport_common::{
    ACCEPT_BACKOFF, CLOSE_GRACE, EXIT_FLUSH, HIGH_WATER, LISTEN_BACKLOG, MAX_QUEUED,
};

/// File descriptors one connection costs: its socket, shared by the core, its
/// reader and its writer.
pub const FDS_PER_CONNECTION: u64 = 1;

/// Stack size of reader, writer, connector and acceptor threads.
pub const THREAD_STACK: usize = 64 * 1024;
/// Messages waiting for the core thread before readers block (backpressure).
pub const CHANNEL_CAPACITY: usize = 1024;
/// Aborted connections whose threads may still be ending before acceptors wait.
pub const MAX_ABORTING: usize = 16;
/// A backstop for connects; the core times them out sooner itself.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

const READ_CHUNK: usize = 16 * 1024;
const WRITE_PIECE: usize = 64 * 1024;

/// What the other threads tell the core thread.
enum Msg {
    /// An input is waiting in the controller's channel.
    Wake,
    /// A new connection, with what it had already sent when accepted. The
    /// acceptor accepts no more until the core has taken it (its `Backlog`
    /// counts no bytes, only that one is on its way), so accepted sockets
    /// never pile up in the channel.
    Accepted(TcpStream, SocketAddr, Vec<u8>, Arc<Backlog>),
    /// A connect finished: the stream and its local address, or the error.
    Connected(ConnId, io::Result<(Arc<TcpStream>, SocketAddr)>),
    /// Bytes read. The reader reads no more until the core has taken them and
    /// carried out what they caused (see [`Backlog::taken`]).
    Data(ConnId, Vec<u8>, Arc<Backlog>),
    /// The peer closed, the connection broke, or a write failed.
    Closed(ConnId),
    /// Everything queued is written and the write side shut down; the writer
    /// now lingers for the peer's end. Exit needs no more than this.
    Flushed(ConnId),
    /// The writer is done and the socket shut down.
    Finished(ConnId),
}

/// Sends inputs to a running [`Runner`] from any thread.
pub struct Controller<I> {
    inputs: Sender<I>,
    wake: SyncSender<Msg>,
}

impl<I> Clone for Controller<I> {
    fn clone(&self) -> Self {
        Controller {
            inputs: self.inputs.clone(),
            wake: self.wake.clone(),
        }
    }
}

impl<I> fmt::Debug for Controller<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Controller").finish_non_exhaustive()
    }
}

impl<I: Send + 'static> Controller<I> {
    /// Queues `input` for the core and wakes it; false if the loop has ended. Never blocks.
    pub fn send(&self, input: I) -> bool {
        if self.inputs.send(input).is_err() {
            return false;
        }
        // Full means the core has messages to take, and checks inputs after each one.
        !matches!(
            self.wake.try_send(Msg::Wake),
            Err(TrySendError::Disconnected(_))
        )
    }
}

/// Drives one endpoint on blocking sockets; see the crate docs.
pub struct Runner<E: Endpoint> {
    endpoint: E,
    inbox: Receiver<Msg>,
    inputs: Receiver<E::Input>,
    controller: Controller<E::Input>,
    net: Net,
}

impl<E: Endpoint> fmt::Debug for Runner<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runner")
            .field("connections", &self.net.live.len())
            .field("closing", &self.net.closing.len())
            .field("listeners", &self.net.acceptors.len())
            .finish_non_exhaustive()
    }
}

impl<E: Endpoint> Runner<E> {
    pub fn new(endpoint: E) -> io::Result<Runner<E>> {
        let (to_core, inbox) = mpsc::sync_channel(CHANNEL_CAPACITY);
        let (input_tx, inputs) = mpsc::channel();
        Ok(Runner {
            endpoint,
            inbox,
            inputs,
            controller: Controller {
                inputs: input_tx,
                wake: to_core.clone(),
            },
            net: Net {
                to_core,
                live: HashMap::new(),
                closing: HashMap::new(),
                taken: Vec::new(),
                aborting: Arc::default(),
                grace: VecDeque::new(),
                acceptors: Vec::new(),
                outcomes: Outcomes::default(),
                exit: None,
            },
        })
    }

    /// A handle that sends inputs to this runner from any thread.
    pub fn controller(&self) -> Controller<E::Input> {
        self.controller.clone()
    }

    /// Runs on the calling thread until the endpoint emits `Output::Exit`;
    /// returns its result. Calls `on_event` for each `Output::Event`.
    pub fn run(mut self, mut on_event: impl FnMut(E::Event)) -> Result<(), ExitError> {
        loop {
            let mut transport = Shown {
                net: &mut self.net,
                on_event: &mut on_event,
            };
            if drive(&mut self.endpoint, &mut transport) {
                let result = self.net.exit.take().unwrap_or(Ok(()));
                return self.finish(result);
            }
            // What the last chunks caused is queued now: their readers may go on.
            for backlog in self.net.taken.drain(..) {
                backlog.taken();
            }
            let now = Instant::now();
            let deadline = self.endpoint.poll_timeout();
            // Timers and inputs are checked before waiting, so a steady stream
            // of messages cannot starve them.
            if deadline.is_some_and(|deadline| deadline <= now) {
                self.endpoint.handle_timeout(now);
                continue;
            }
            if let Ok(input) = self.inputs.try_recv() {
                self.endpoint.handle_input(now, input);
                continue;
            }
            self.net.end_grace_periods(now);
            let received = match deadline.into_iter().chain(self.net.next_grace_end()).min() {
                Some(wake) => self.inbox.recv_timeout(wake.saturating_duration_since(now)),
                None => self
                    .inbox
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
            };
            match received {
                Ok(msg) => self.feed(msg),
                Err(RecvTimeoutError::Timeout) => {}
                // Cannot happen while `net` holds a sender; end rather than spin.
                Err(RecvTimeoutError::Disconnected) => {
                    return self.finish(Err(ExitError::Transport(IoFailure::new(
                        ErrorKind::BrokenPipe,
                        "transport channel closed",
                    ))));
                }
            }
        }
    }

    /// Feeds one message from another thread to the core.
    fn feed(&mut self, msg: Msg) {
        let now = Instant::now();
        let endpoint = &mut self.endpoint;
        let net = &mut self.net;
        match msg {
            Msg::Wake => {} // the input is taken on the next turn
            Msg::Accepted(stream, peer, first, accepting) => {
                let conn = endpoint.handle_accept(now, peer);
                if net.adopt(conn, stream) && !first.is_empty() {
                    endpoint.handle_data(now, conn, &first);
                }
                net.taken.push(accepting);
            }
            Msg::Connected(conn, Ok((stream, local))) => {
                if let Some(c) = net.live.get_mut(&conn) {
                    c.stream = Some(stream);
                    net.outcomes.push(Outcome::Connected(conn, local));
                } else if let Some(slot) = net.closing.get_mut(&conn) {
                    // The core gave up on it: its writer closes it, with a grace period from now.
                    *slot = Some(stream);
                    net.grace.push_back((now + CLOSE_GRACE, conn));
                }
            }
            Msg::Connected(conn, Err(error)) => {
                if net.live.remove(&conn).is_some() {
                    net.outcomes.push(Outcome::ConnectFailed(conn, error));
                }
            }
            Msg::Data(conn, bytes, backlog) => {
                // Bytes for a connection the core already closed are dropped.
                if net.live.contains_key(&conn) {
                    endpoint.handle_data(now, conn, &bytes);
                    net.taken.push(backlog);
                } else {
                    backlog.taken();
                }
            }
            Msg::Closed(conn) => {
                if net.close(conn) {
                    net.outcomes.push(Outcome::Closed(conn));
                }
            }
            Msg::Finished(conn) => {
                net.closing.remove(&conn);
            }
            Msg::Flushed(_) => {}
        }
    }

    /// Stops accepting, flushes for at most [`EXIT_FLUSH`], and closes every socket.
    fn finish(mut self, result: Result<(), ExitError>) -> Result<(), ExitError> {
        let woken: Vec<JoinHandle<()>> = self
            .net
            .acceptors
            .drain(..)
            .filter_map(Acceptor::stop)
            .collect();
        let open: Vec<ConnId> = self.net.live.keys().copied().collect();
        for conn in open {
            self.net.close(conn);
        }
        // A connect still under way has nothing to flush: don't wait for it.
        self.net.closing.retain(|_, stream| stream.is_some());
        let deadline = Instant::now() + EXIT_FLUSH;
        while !self.net.closing.is_empty() {
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.inbox.recv_timeout(wait) {
                // Exiting: once the last bytes are out, don't linger for the peer.
                Ok(Msg::Finished(conn) | Msg::Flushed(conn)) => {
                    if let Some(Some(stream)) = self.net.closing.remove(&conn) {
                        let _ = stream.shutdown(Shutdown::Both);
                    }
                }
                Ok(Msg::Connected(conn, Ok((stream, _)))) => {
                    if let Some(slot) = self.net.closing.get_mut(&conn) {
                        *slot = Some(stream);
                    }
                }
                Ok(_) => {} // new connections, data, inputs: dropped, which closes them
                Err(_) => break,
            }
        }
        for stream in self.net.closing.values().flatten() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        // Unblocks any thread waiting to send to the core, so the acceptors can end.
        drop(self.inbox);
        for acceptor in woken {
            let _ = acceptor.join();
        }
        result
    }
}

/// The transport's side of every socket, owned by the core thread.
struct Net {
    to_core: SyncSender<Msg>,
    live: HashMap<ConnId, Conn>,
    /// Connections the core is done with whose writer has not finished yet.
    closing: HashMap<ConnId, Option<Arc<TcpStream>>>,
    /// Readers whose chunk the core has taken: released once its outputs are carried out.
    taken: Vec<Arc<Backlog>>,
    aborting: Arc<Aborting>,
    /// When each closing connection's [`CLOSE_GRACE`] ends, oldest first.
    grace: VecDeque<(Instant, ConnId)>,
    acceptors: Vec<Acceptor>,
    /// Outcomes for `drive` to feed back to the core.
    outcomes: Outcomes,
    /// The result of the first `Output::Exit`.
    exit: Option<Result<(), ExitError>>,
}

/// The core's transport for one `drive`: the sockets, and where events are shown.
struct Shown<'a, F> {
    net: &'a mut Net,
    on_event: &'a mut F,
}

impl<Ev, F: FnMut(Ev)> Transport<Ev> for Shown<'_, F> {
    fn now(&mut self) -> Instant {
        Instant::now()
    }

    fn listen(&mut self, addr: SocketAddr, shared: bool) {
        self.net.listen(addr, shared);
    }

    fn connect(&mut self, conn: ConnId, addr: SocketAddr, from: Option<u16>) {
        self.net.connect(conn, addr, from);
    }

    fn transmit(&mut self, conn: ConnId, bytes: &[u8]) {
        self.net.transmit(conn, bytes);
    }

    fn close(&mut self, conn: ConnId) {
        self.net.close(conn);
    }

    fn abort(&mut self, conn: ConnId) {
        self.net.abort(conn);
    }

    fn show(&mut self, event: Ev) {
        (self.on_event)(event);
    }

    fn exit(&mut self, result: Result<(), ExitError>) {
        self.net.exit.get_or_insert(result);
    }

    fn outcomes(&mut self) -> &mut Outcomes {
        &mut self.net.outcomes
    }
}

struct Conn {
    outbox: Sender<Vec<u8>>,
    backlog: Arc<Backlog>,
    /// The socket, shared with the reader and the writer (one descriptor for
    /// all three); `None` while connecting.
    stream: Option<Arc<TcpStream>>,
}

/// A connection's flow control, shared by the core, the writer and the reader:
/// the reader reads only when the core has taken its last chunk and the
/// outbox is below [`HIGH_WATER`], so a pipelining peer's answers cannot pile
/// up past that by more than what one chunk asks for.
#[derive(Default)]
struct Backlog {
    state: Mutex<Queued>,
    changed: Condvar,
}

#[derive(Default)]
struct Queued {
    /// Bytes in the outbox, not yet written.
    bytes: usize,
    /// A chunk read is on its way to the core, or its outputs are not carried out yet.
    with_core: bool,
    writer_done: bool,
    /// The core is done with the connection: the reader only discards now.
    closed: bool,
    /// Closed with a reset: the writer neither flushes nor lingers.
    aborted: bool,
    /// The reader and the writer have ended.
    finished: bool,
}

/// Aborted connections whose threads have not ended yet. Acceptors wait while
/// there are [`MAX_ABORTING`]: a flood of strangers the core resets as fast as
/// they come cannot pile up threads faster than they end.
#[derive(Default)]
struct Aborting {
    count: Mutex<usize>,
    ended: Condvar,
}

impl Aborting {
    fn lock(&self) -> MutexGuard<'_, usize> {
        self.count.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn ended(&self) {
        *self.lock() -= 1;
        self.ended.notify_all();
    }

    fn wait_for_room(&self) {
        let count = self.lock();
        let wait = self.ended.wait_while(count, |n| *n >= MAX_ABORTING);
        drop(wait.unwrap_or_else(PoisonError::into_inner));
    }
}

impl Backlog {
    fn lock(&self) -> MutexGuard<'_, Queued> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts `n` more bytes queued; returns the total.
    fn add(&self, n: usize) -> usize {
        let mut queued = self.lock();
        queued.bytes += n;
        queued.bytes
    }

    /// The writer is done with `n` bytes.
    fn sent(&self, n: usize) {
        self.lock().bytes -= n;
        self.changed.notify_all();
    }

    fn writer_done(&self) {
        self.lock().writer_done = true;
        self.changed.notify_all();
    }

    /// The core has carried out what the last chunk caused.
    fn taken(&self) {
        self.lock().with_core = false;
        self.changed.notify_all();
    }

    /// The core is done with the connection.
    fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// The core is done with the connection and resets it: counted in
    /// `aborting` until its threads have ended.
    fn abort(&self, aborting: &Aborting) {
        let mut queued = self.lock();
        queued.closed = true;
        if !queued.aborted && !queued.finished {
            queued.aborted = true;
            *aborting.lock() += 1;
        }
        self.changed.notify_all();
    }

    fn aborted(&self) -> bool {
        self.lock().aborted
    }

    /// The connection's threads have ended.
    fn finished(&self, aborting: &Aborting) {
        let mut queued = self.lock();
        queued.finished = true;
        if queued.aborted {
            aborting.ended();
        }
    }

    /// The reader waits here until the core has taken its last chunk and the
    /// peer has read enough answers; true if the chunk it reads next goes to the core.
    fn wait_for_room(&self) -> bool {
        let queued = self.lock();
        let wait = self.changed.wait_while(queued, |q| {
            !q.writer_done && !q.closed && (q.with_core || q.bytes >= HIGH_WATER)
        });
        let mut queued = wait.unwrap_or_else(PoisonError::into_inner);
        let to_core = !queued.closed;
        queued.with_core = to_core;
        to_core
    }
}

impl Net {
    fn listen(&mut self, addr: SocketAddr, shared: bool) {
        let started = bind_listener(addr, shared).and_then(|listener| {
            let bound = listener.local_addr()?;
            let aborting = Arc::clone(&self.aborting);
            let acceptor = Acceptor::start(listener, bound, aborting, self.to_core.clone())?;
            Ok((bound, acceptor))
        });
        match started {
            Ok((bound, acceptor)) => {
                self.acceptors.push(acceptor);
                self.outcomes.push(Outcome::Listening(bound));
            }
            Err(error) => self.outcomes.push(Outcome::ListenFailed(addr, error)),
        }
    }

    fn connect(&mut self, conn: ConnId, addr: SocketAddr, from: Option<u16>) {
        let (outbox, writer) = self.writer(conn);
        match spawn("bridgechat-connect", move || writer.connect(addr, from)) {
            Ok(_) => {
                self.live.insert(conn, outbox);
            }
            Err(error) => self.outcomes.push(Outcome::ConnectFailed(conn, error)),
        }
    }

    /// Starts the threads of a connection the core has just named `conn`;
    /// false (and `Closed` queued) if they could not start.
    fn adopt(&mut self, conn: ConnId, stream: TcpStream) -> bool {
        let _ = stream.set_nodelay(true);
        let stream = Arc::new(stream);
        let (mut outbox, writer) = self.writer(conn);
        let handle = Arc::clone(&stream);
        match spawn("bridgechat-write", move || writer.run(stream)) {
            Ok(_) => {
                outbox.stream = Some(handle);
                self.live.insert(conn, outbox);
                true
            }
            Err(_) => {
                self.outcomes.push(Outcome::Closed(conn));
                false
            }
        }
    }

    /// A new connection's outbox, and the writer that empties it.
    fn writer(&self, conn: ConnId) -> (Conn, Writer) {
        let (outbox, queued) = mpsc::channel();
        let backlog = Arc::new(Backlog::default());
        let writer = Writer {
            conn,
            queued,
            backlog: Arc::clone(&backlog),
            aborting: Arc::clone(&self.aborting),
            to_core: self.to_core.clone(),
        };
        let stream = None;
        (
            Conn {
                outbox,
                backlog,
                stream,
            },
            writer,
        )
    }

    fn transmit(&mut self, conn: ConnId, bytes: &[u8]) {
        let Some(c) = self.live.get(&conn) else {
            return; // closed already; the core will not hear of it again
        };
        if c.backlog.add(bytes.len()) <= MAX_QUEUED {
            // An error means the writer failed; its `Closed` is on the way to the core.
            let _ = c.outbox.send(bytes.to_vec());
            return;
        }
        // The peer has stopped reading: drop it rather than buffer without limit.
        if let Some(c) = self.live.remove(&conn) {
            c.backlog.close();
            if let Some(stream) = &c.stream {
                let _ = stream.shutdown(Shutdown::Both);
            }
            self.closing.insert(conn, c.stream);
        }
        self.outcomes.push(Outcome::NotReading(conn));
    }

    /// Lets `conn`'s writer send what is queued and close; false if it was not live.
    fn close(&mut self, conn: ConnId) -> bool {
        let Some(Conn {
            outbox,
            stream,
            backlog,
        }) = self.live.remove(&conn)
        else {
            return false;
        };
        backlog.close();
        drop(outbox); // the writer ends after the last queued chunk
        self.closing.insert(conn, stream);
        self.grace.push_back((Instant::now() + CLOSE_GRACE, conn));
        true
    }

    /// Closes `conn` now with a reset: its threads end at once and the last of
    /// them to drop the socket frees the descriptor.
    fn abort(&mut self, conn: ConnId) {
        let Some(c) = self.live.get(&conn) else {
            return;
        };
        let Some(stream) = c.stream.clone() else {
            // Still connecting: closed when the connect completes.
            self.close(conn);
            return;
        };
        let Some(Conn {
            outbox, backlog, ..
        }) = self.live.remove(&conn)
        else {
            return;
        };
        let _ = reset_on_close(&*stream);
        backlog.abort(&self.aborting);
        drop(outbox);
        // Wakes the reader without sending anything (shutting the write side would
        // send a FIN first); the writer stops at its next piece. A writer blocked on
        // a peer that reads nothing is shut down at the end of the grace period.
        let _ = stream.shutdown(Shutdown::Read);
        self.closing.insert(conn, Some(stream));
        self.grace.push_back((Instant::now() + CLOSE_GRACE, conn));
    }

    fn next_grace_end(&self) -> Option<Instant> {
        self.grace.front().map(|(end, _)| *end)
    }

    /// Shuts down closing connections whose peer did not read and close in time.
    fn end_grace_periods(&mut self, now: Instant) {
        while let Some(&(end, conn)) = self.grace.front() {
            if end > now {
                break;
            }
            self.grace.pop_front();
            if let Some(Some(stream)) = self.closing.get(&conn) {
                let _ = stream.shutdown(Shutdown::Both); // the writer then finishes
            }
        }
    }
}

/// A listener's thread, blocked in `accept`.
struct Acceptor {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Whether the last connection accepted is still on its way to the core.
    accepting: Arc<Backlog>,
    thread: JoinHandle<()>,
}

impl Acceptor {
    fn start(
        listener: TcpListener,
        addr: SocketAddr,
        aborting: Arc<Aborting>,
        to_core: SyncSender<Msg>,
    ) -> io::Result<Acceptor> {
        let stop = Arc::new(AtomicBool::new(false));
        let accepting = Arc::new(Backlog::default());
        let (stopped, credit) = (Arc::clone(&stop), Arc::clone(&accepting));
        let thread = spawn("bridgechat-accept", move || {
            accept_loop(listener, &stopped, &credit, &aborting, to_core)
        })?;
        Ok(Acceptor {
            addr,
            stop,
            accepting,
            thread,
        })
    }

    /// Asks the thread to end; returns it to join if it could be woken.
    fn stop(self) -> Option<JoinHandle<()>> {
        self.stop.store(true, Ordering::SeqCst);
        self.accepting.close();
        // `accept` has no timeout: a connection to ourselves wakes it to see the flag.
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let wake = SocketAddr::new(ip, self.addr.port());
        // If that fails the thread stays blocked, harmlessly, until the process ends.
        TcpStream::connect_timeout(&wake, EXIT_FLUSH)
            .ok()
            .map(|_| self.thread)
    }
}

fn accept_loop(
    listener: TcpListener,
    stop: &AtomicBool,
    accepting: &Arc<Backlog>,
    aborting: &Aborting,
    to_core: SyncSender<Msg>,
) {
    loop {
        accepting.wait_for_room();
        aborting.wait_for_room();
        let accepted = listener.accept();
        if stop.load(Ordering::SeqCst) {
            return; // drops the listener: new connections are refused
        }
        match accepted {
            Ok((stream, peer)) => {
                let first = already_sent(&stream);
                let msg = Msg::Accepted(stream, peer, first, Arc::clone(accepting));
                if to_core.send(msg).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::Interrupted | ErrorKind::ConnectionAborted
                ) =>
            {
                accepting.taken();
            }
            // Out of file descriptors or memory: the connection waits in the backlog.
            Err(_) => {
                accepting.taken();
                thread::sleep(ACCEPT_BACKOFF);
            }
        }
    }
}

/// What a just-accepted connection has already sent, read without waiting.
/// It reaches the core with the accept, ahead of connections accepted after
/// it: a peer that spoke at once is heard before newer silent ones can push it out.
fn already_sent(stream: &TcpStream) -> Vec<u8> {
    let mut first = Vec::new();
    if stream.set_nonblocking(true).is_ok() {
        let mut buf = [0; 4096];
        if let Ok(n) = (&*stream).read(&mut buf) {
            first.extend_from_slice(&buf[..n]);
        }
        let _ = stream.set_nonblocking(false);
    }
    first
}

/// A connection's writer thread: sends what the outbox holds, then closes.
struct Writer {
    conn: ConnId,
    queued: Receiver<Vec<u8>>,
    backlog: Arc<Backlog>,
    aborting: Arc<Aborting>,
    to_core: SyncSender<Msg>,
}

impl Writer {
    /// Connects first; bytes transmitted meanwhile wait in the outbox.
    fn connect(self, addr: SocketAddr, from: Option<u16>) {
        let connected = connect_timeout(addr, from, CONNECT_TIMEOUT).and_then(|stream| {
            stream.set_nodelay(true)?;
            let local = stream.local_addr()?;
            Ok((local, Arc::new(stream)))
        });
        match connected {
            Ok((local, stream)) => {
                let connected = Msg::Connected(self.conn, Ok((Arc::clone(&stream), local)));
                if self.to_core.send(connected).is_ok() {
                    self.run(stream);
                }
            }
            Err(error) => {
                let failed = Msg::Connected(self.conn, Err(error));
                let _ = self.to_core.send(failed);
                let _ = self.to_core.send(Msg::Finished(self.conn));
            }
        }
    }

    /// Starts the reader, writes until the core drops the outbox, and closes.
    fn run(self, stream: Arc<TcpStream>) {
        let Writer {
            conn,
            queued,
            backlog,
            aborting,
            to_core,
        } = self;
        // `reader_gone` disconnects when the reader ends.
        let (reader_alive, reader_gone) = mpsc::channel::<()>();
        let reader = {
            let (stream, backlog, to_core) =
                (Arc::clone(&stream), Arc::clone(&backlog), to_core.clone());
            spawn("bridgechat-read", move || {
                read_loop(conn, &stream, &backlog, to_core, reader_alive)
            })
        };
        let wrote_all = reader.is_ok()
            && queued.iter().all(|bytes| {
                // In pieces, so that an abort stops the writer between two of them.
                let sent = bytes
                    .chunks(WRITE_PIECE)
                    .all(|piece| !backlog.aborted() && (&*stream).write_all(piece).is_ok());
                backlog.sent(bytes.len());
                sent
            });
        backlog.writer_done();
        if backlog.aborted() {
            // No flush, no linger: the last handle dropped sends the reset.
            let _ = reader_gone.recv();
        } else if wrote_all {
            // Lingering close: the peer reads our last bytes and closes first
            // (or the core shuts the socket down after `CLOSE_GRACE`).
            let _ = stream.shutdown(Shutdown::Write);
            let _ = to_core.send(Msg::Flushed(conn));
            let _ = reader_gone.recv();
        } else {
            let _ = stream.shutdown(Shutdown::Both);
            let _ = to_core.send(Msg::Closed(conn));
        }
        backlog.finished(&aborting);
        let _ = to_core.send(Msg::Finished(conn));
    }
}

fn read_loop(
    conn: ConnId,
    stream: &TcpStream,
    backlog: &Arc<Backlog>,
    to_core: SyncSender<Msg>,
    _alive: Sender<()>,
) {
    let mut buf = vec![0; READ_CHUNK];
    let mut stream = stream;
    loop {
        let to_core_next = backlog.wait_for_room();
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(_) if !to_core_next => {} // closing: discarded until the peer's end
            Ok(n) => {
                let data = Msg::Data(conn, buf[..n].to_vec(), Arc::clone(backlog));
                if to_core.send(data).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = to_core.send(Msg::Closed(conn));
}

fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name(name.to_owned())
        .stack_size(THREAD_STACK)
        .spawn(body)
}
