//! The io_uring loop's own guarantees, driven by a scripted endpoint: bytes
//! in and out intact past the size of one receive buffer and past the pool's
//! count of buffers, flush on close and exit, the outbox bound, and the
//! loop's end as seen from a controller.
#![cfg(target_os = "linux")]

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{self, Receiver};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bridgechat_core::{ConnId, Endpoint, ExitError, Output};
use bridgechat_transport_uring::{Controller, Runner, MAX_QUEUED};

const WAIT: Duration = Duration::from_secs(20);

/// Outputs the test asks for.
#[derive(Debug)]
enum Do {
    Transmit(ConnId, Vec<u8>),
    Close(ConnId),
    Exit,
}

/// What the loop told the endpoint.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Listening(SocketAddr),
    Accepted(ConnId),
    Data(ConnId, Vec<u8>),
    Closed(ConnId),
}

/// Listens on loopback, numbers accepted connections, reports what it
/// receives, and otherwise emits exactly the outputs it is given.
#[derive(Default)]
struct Scripted {
    next_id: u64,
    queue: VecDeque<Step>,
    /// The bytes of the `Transmit` handed out last (outputs borrow the endpoint).
    current: Vec<u8>,
}

enum Step {
    Listen,
    Do(Do),
    Event(Seen),
}

impl Endpoint for Scripted {
    type Input = Do;
    type Event = Seen;

    fn handle_listening(&mut self, _: Instant, addr: SocketAddr) {
        self.queue.push_back(Step::Event(Seen::Listening(addr)));
    }
    fn handle_listen_failed(&mut self, _: Instant, _: SocketAddr, error: &io::Error) {
        panic!("cannot listen: {error}");
    }
    fn handle_accept(&mut self, _: Instant, _: SocketAddr) -> ConnId {
        self.next_id += 1;
        let conn = ConnId(self.next_id);
        self.queue.push_back(Step::Event(Seen::Accepted(conn)));
        conn
    }
    fn handle_connected(&mut self, _: Instant, _: ConnId, _: SocketAddr) {}
    fn handle_connect_failed(&mut self, _: Instant, _: ConnId, _: &io::Error) {}
    fn handle_data(&mut self, _: Instant, conn: ConnId, bytes: &[u8]) {
        self.queue
            .push_back(Step::Event(Seen::Data(conn, bytes.to_vec())));
    }
    fn handle_closed(&mut self, _: Instant, conn: ConnId) {
        self.queue.push_back(Step::Event(Seen::Closed(conn)));
    }
    fn handle_input(&mut self, _: Instant, input: Do) {
        self.queue.push_back(Step::Do(input));
    }
    fn handle_timeout(&mut self, _: Instant) {}
    fn poll_output(&mut self) -> Option<Output<'_, Seen>> {
        Some(match self.queue.pop_front()? {
            Step::Listen => Output::Listen {
                addr: "127.0.0.1:0".parse().expect("an address"),
                shared: false,
            },
            Step::Event(seen) => Output::Event(seen),
            Step::Do(Do::Transmit(conn, bytes)) => {
                self.current = bytes;
                Output::Transmit {
                    conn,
                    bytes: &self.current,
                }
            }
            Step::Do(Do::Close(conn)) => Output::Close { conn },
            Step::Do(Do::Exit) => Output::Exit(Ok(())),
        })
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

struct Running {
    controller: Controller<Do>,
    events: Receiver<Seen>,
    thread: JoinHandle<Result<(), ExitError>>,
    addr: SocketAddr,
}

impl Running {
    fn start() -> Running {
        Running::start_gated(None)
    }

    /// With a gate, the loop thread stops at the first `Data` event until the
    /// gate opens (or is dropped): completions pile up in the ring meanwhile.
    fn start_gated(gate: Option<Receiver<()>>) -> Running {
        let mut endpoint = Scripted::default();
        endpoint.queue.push_back(Step::Listen);
        let runner = Runner::new(endpoint).expect("create the runner");
        let controller = runner.controller();
        let (events_tx, events) = mpsc::channel();
        let thread = thread::spawn(move || {
            let mut gate = gate;
            runner.run(move |seen| {
                if matches!(seen, Seen::Data(..)) {
                    if let Some(gate) = gate.take() {
                        let _ = gate.recv_timeout(WAIT);
                    }
                }
                let _ = events_tx.send(seen);
            })
        });
        let Seen::Listening(addr) = events.recv_timeout(WAIT).expect("Listening") else {
            panic!("the first event is Listening");
        };
        Running {
            controller,
            events,
            thread,
            addr,
        }
    }

    /// Connects a client and returns it with the id the endpoint gave it.
    fn accept(&self) -> (TcpStream, ConnId) {
        let client = TcpStream::connect_timeout(&self.addr, WAIT).expect("connect");
        client
            .set_read_timeout(Some(WAIT))
            .expect("set read timeout");
        match self.events.recv_timeout(WAIT).expect("Accepted") {
            Seen::Accepted(conn) => (client, conn),
            other => panic!("expected Accepted, got {other:?}"),
        }
    }

    fn send(&self, what: Do) {
        assert!(self.controller.send(what), "the loop has ended");
    }

    /// Exits the loop and waits (bounded) for it to end.
    fn exit(self) -> Controller<Do> {
        self.send(Do::Exit);
        let (done_tx, done) = mpsc::channel();
        let thread = self.thread;
        thread::spawn(move || {
            let _ = done_tx.send(thread.join());
        });
        let result = done.recv_timeout(WAIT).expect("the loop ends in time");
        result.expect("the loop thread").expect("Exit(Ok)");
        self.controller
    }
}

/// Reads until the peer closes; a reset counts as a close.
fn read_to_close(client: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        match client.read(&mut chunk) {
            Ok(0) => return received,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return received,
            Err(e) => panic!("the connection was not closed: {e}"),
        }
    }
}

fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| ((i + seed) % 251) as u8).collect()
}

/// Every accepted connection's bytes, by connection, until each has `len`.
fn receive_all(running: &Running, conns: &[ConnId], len: usize) -> Vec<Vec<u8>> {
    let mut got: Vec<Vec<u8>> = conns.iter().map(|_| Vec::new()).collect();
    let deadline = Instant::now() + WAIT;
    while got.iter().any(|bytes| bytes.len() < len) {
        let left = deadline.saturating_duration_since(Instant::now());
        match running.events.recv_timeout(left) {
            Ok(Seen::Data(conn, bytes)) => {
                let at = conns.iter().position(|c| *c == conn).expect("a known id");
                got[at].extend_from_slice(&bytes);
            }
            Ok(other) => panic!("expected data, got {other:?}"),
            Err(e) => panic!("not all bytes arrived: {e}"),
        }
    }
    got
}

#[test]
fn a_megabyte_arrives_intact_across_many_receive_buffers() {
    let running = Running::start();
    let (mut client, conn) = running.accept();
    let bytes = pattern(1024 * 1024, 0);
    let writer = {
        let bytes = bytes.clone();
        thread::spawn(move || client.write_all(&bytes).map(|()| client))
    };
    let got = receive_all(&running, &[conn], bytes.len());
    assert!(got[0] == bytes, "bytes lost or reordered");
    drop(writer.join().expect("writer thread").expect("write"));
    assert_eq!(running.events.recv_timeout(WAIT), Ok(Seen::Closed(conn)));
    running.exit();
}

#[test]
fn more_connections_sending_at_once_than_the_pool_has_buffers_all_arrive() {
    // 600 connections each send 40 KiB while the loop is held: more receives
    // complete at once than the pool has buffers (512), and those that find it
    // empty must receive again once buffers come back.
    let (open_gate, gate) = mpsc::channel();
    let running = Running::start_gated(Some(gate));
    let clients: Vec<(TcpStream, ConnId)> = (0..600).map(|_| running.accept()).collect();
    let conns: Vec<ConnId> = clients.iter().map(|(_, conn)| *conn).collect();
    let len = 40 * 1024;
    let writers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, (mut client, _))| {
            thread::spawn(move || client.write_all(&pattern(len, i)).map(|()| client))
        })
        .collect();
    let clients: Vec<TcpStream> = writers
        .into_iter()
        .map(|w| w.join().expect("writer thread").expect("write"))
        .collect();
    open_gate.send(()).expect("the loop waits at the gate");
    let got = receive_all(&running, &conns, len);
    for (i, bytes) in got.iter().enumerate() {
        assert!(
            *bytes == pattern(len, i),
            "connection {i}: bytes lost or mixed"
        );
    }
    drop(clients);
    running.exit();
}

#[test]
fn close_sends_everything_queued_first() {
    let running = Running::start();
    let (mut client, conn) = running.accept();
    let bytes = pattern(512 * 1024, 7); // more than the socket takes at once
    running.send(Do::Transmit(conn, bytes.clone()));
    running.send(Do::Close(conn));
    assert!(
        read_to_close(&mut client) == bytes,
        "bytes lost or reordered"
    );
    running.exit();
}

#[test]
fn exit_flushes_every_connection_then_closes_it() {
    let running = Running::start();
    let (mut first, a) = running.accept();
    let (mut second, b) = running.accept();
    running.send(Do::Transmit(a, pattern(300 * 1024, 3)));
    running.send(Do::Transmit(b, b"bye".to_vec()));
    let reader = thread::spawn(move || read_to_close(&mut first));
    running.exit();
    assert_eq!(read_to_close(&mut second), b"bye");
    assert!(reader.join().expect("reader thread") == pattern(300 * 1024, 3));
}

#[test]
fn a_reader_that_never_reads_is_dropped_past_the_hard_bound() {
    let running = Running::start();
    let (mut client, conn) = running.accept();
    let chunk = pattern(64 * 1024, 0);
    for _ in 0..(16 * MAX_QUEUED / chunk.len()) {
        running.send(Do::Transmit(conn, chunk.clone()));
    }
    match running.events.recv_timeout(WAIT) {
        Ok(Seen::Closed(closed)) => assert_eq!(closed, conn),
        other => panic!("expected the connection to be dropped, got {other:?}"),
    }
    let received = read_to_close(&mut client);
    assert!(received.len() < 16 * MAX_QUEUED, "nothing was dropped");
    running.exit();
}

#[test]
fn after_the_loop_ends_a_controller_says_so_and_the_port_is_free() {
    let running = Running::start();
    let addr = running.addr;
    let (mut client, _) = running.accept();
    let controller = running.exit();
    assert_eq!(read_to_close(&mut client), b"");
    assert!(
        !controller.send(Do::Exit),
        "a send to an ended loop must fail"
    );
    assert!(
        TcpStream::connect_timeout(&addr, WAIT).is_err(),
        "the listener is still open"
    );
}

#[test]
fn a_runner_dropped_without_running_releases_its_ring() {
    for _ in 0..50 {
        let runner = Runner::new(Scripted::default()).expect("create the runner");
        let controller = runner.controller();
        drop(runner);
        assert!(!controller.send(Do::Exit));
    }
}
