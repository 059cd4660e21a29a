//! How the loop carries out `Transmit`, `Close` and `Exit`, driven by a
//! scripted endpoint: tests hand it outputs through the controller and see
//! what the loop reported back as events.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{self, Receiver};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bridgechat_core::{ConnId, Endpoint, Output};
use bridgechat_transport_mio::{Controller, Runner, MAX_QUEUED};

const WAIT: Duration = Duration::from_secs(10);

/// Outputs the test asks for.
#[derive(Debug)]
enum Do {
    Transmit(ConnId, Vec<u8>),
    Close(ConnId),
    Abort(ConnId),
    Exit,
}

/// What the loop told the endpoint.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Listening(SocketAddr),
    Accepted(ConnId),
    Closed(ConnId),
}

/// Listens on loopback, numbers accepted connections, and otherwise emits
/// exactly the outputs it is given.
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
    fn handle_data(&mut self, _: Instant, _: ConnId, _: &[u8]) {}
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
            Step::Do(Do::Abort(conn)) => Output::Abort { conn },
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
    thread: JoinHandle<Result<(), bridgechat_core::ExitError>>,
    addr: SocketAddr,
}

impl Running {
    fn start() -> Running {
        let mut endpoint = Scripted::default();
        endpoint.queue.push_back(Step::Listen);
        let runner = Runner::new(endpoint).expect("create the runner");
        let controller = runner.controller();
        let (events_tx, events) = mpsc::channel();
        let thread = thread::spawn(move || {
            runner.run(move |seen| {
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

    fn exit(self) {
        self.send(Do::Exit);
        let (done_tx, done) = mpsc::channel();
        thread::spawn(move || {
            let _ = done_tx.send(self.thread.join());
        });
        let result = done.recv_timeout(WAIT).expect("the loop ends in time");
        result.expect("the loop thread").expect("Exit(Ok)");
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

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn close_sends_everything_queued_first() {
    let running = Running::start();
    let (mut client, conn) = running.accept();
    let bytes = pattern(512 * 1024); // more than the socket takes at once
    running.send(Do::Transmit(conn, bytes.clone()));
    running.send(Do::Close(conn));
    assert!(
        read_to_close(&mut client) == bytes,
        "bytes lost or reordered"
    );
    running.exit();
}

#[test]
fn abort_resets_the_peer_instead_of_ending_the_stream() {
    let running = Running::start();
    let (mut client, conn) = running.accept();
    // Under MAX_QUEUED: queued, not dropped, when the abort comes.
    running.send(Do::Transmit(conn, pattern(512 * 1024)));
    running.send(Do::Abort(conn));
    client
        .set_read_timeout(Some(WAIT))
        .expect("set a read timeout");
    let mut buf = [0; 64 * 1024];
    let ended = loop {
        match client.read(&mut buf) {
            Ok(0) => break None,
            Ok(_) => {}
            Err(e) => break Some(e.kind()),
        }
    };
    assert_eq!(ended, Some(io::ErrorKind::ConnectionReset), "not a reset");
    running.exit();
}

#[test]
fn exit_flushes_every_connection_then_closes_it() {
    let running = Running::start();
    let (mut first, a) = running.accept();
    let (mut second, b) = running.accept();
    running.send(Do::Transmit(a, pattern(300 * 1024)));
    running.send(Do::Transmit(b, b"bye".to_vec()));
    let thread = thread::spawn(move || read_to_close(&mut first));
    running.exit();
    assert_eq!(read_to_close(&mut second), b"bye");
    assert!(thread.join().expect("reader thread") == pattern(300 * 1024));
}

#[test]
fn a_reader_that_never_reads_is_dropped_past_the_hard_bound() {
    let running = Running::start();
    let (mut client, conn) = running.accept();
    // Far more than the kernel's buffers and MAX_QUEUED together; the client reads nothing.
    let chunk = pattern(64 * 1024);
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
fn a_closing_peer_is_reported_and_outputs_for_it_are_ignored() {
    let running = Running::start();
    let (client, conn) = running.accept();
    drop(client);
    assert_eq!(running.events.recv_timeout(WAIT), Ok(Seen::Closed(conn)));
    running.send(Do::Transmit(conn, b"too late".to_vec()));
    running.send(Do::Close(conn));
    running.send(Do::Transmit(ConnId(999), b"never known".to_vec()));
    running.exit();
}
