//! The transport's own guarantees, checked with a scripted endpoint: the test
//! says which outputs to emit and sees every input the transport feeds back.
//! (Protocol behaviour over this transport is the shared suite's job:
//! `cli/tests/transport_std.rs`.)

use std::collections::{HashSet, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use bridgechat_core::{ConnId, Endpoint, ExitError, Output};
use bridgechat_transport_std::{Controller, Runner, MAX_QUEUED};

const WAIT: Duration = Duration::from_secs(20);

/// Outputs the test asks the endpoint to emit, all in one drain.
#[derive(Debug)]
enum Step {
    Listen(SocketAddr),
    Connect(u64, SocketAddr),
    Transmit(u64, Vec<u8>),
    Close(u64),
    Abort(u64),
    Exit,
}

/// What the transport fed the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Listening(SocketAddr),
    ListenFailed(String),
    Accepted(u64, SocketAddr),
    Connected(u64, SocketAddr),
    ConnectFailed(u64, String),
    Data(u64, Vec<u8>),
    Closed(u64),
    /// An input about a connection the endpoint had already closed: a transport bug.
    Stale(&'static str, u64),
}

enum Item {
    Listen(SocketAddr),
    Connect(u64, SocketAddr),
    Transmit(u64, Vec<u8>),
    Close(u64),
    Abort(u64),
    Seen(Seen),
    Exit,
}

#[derive(Default)]
struct Scripted {
    queue: VecDeque<Item>,
    transmitting: Vec<u8>,
    next_accepted: u64,
    closed: HashSet<u64>,
}

impl Scripted {
    fn see(&mut self, seen: Seen) {
        self.queue.push_back(Item::Seen(seen));
    }

    /// Reports `seen`, or a `Stale` if `conn` was closed by us.
    fn see_on(&mut self, conn: ConnId, what: &'static str, seen: Seen) {
        if self.closed.contains(&conn.0) {
            self.see(Seen::Stale(what, conn.0));
        } else {
            self.see(seen);
        }
    }
}

impl Endpoint for Scripted {
    type Input = Vec<Step>;
    type Event = Seen;

    fn handle_listening(&mut self, _: Instant, addr: SocketAddr) {
        self.see(Seen::Listening(addr));
    }
    fn handle_listen_failed(&mut self, _: Instant, _: SocketAddr, error: &std::io::Error) {
        self.see(Seen::ListenFailed(error.to_string()));
    }
    fn handle_accept(&mut self, _: Instant, peer: SocketAddr) -> ConnId {
        self.next_accepted += 1;
        let conn = 1000 + self.next_accepted; // scripts connect with small ids
        self.see(Seen::Accepted(conn, peer));
        ConnId(conn)
    }
    fn handle_connected(&mut self, _: Instant, conn: ConnId, local: SocketAddr) {
        self.see_on(conn, "connected", Seen::Connected(conn.0, local));
    }
    fn handle_connect_failed(&mut self, _: Instant, conn: ConnId, error: &std::io::Error) {
        let seen = Seen::ConnectFailed(conn.0, error.to_string());
        self.see_on(conn, "connect failed", seen);
    }
    fn handle_data(&mut self, _: Instant, conn: ConnId, bytes: &[u8]) {
        self.see_on(conn, "data", Seen::Data(conn.0, bytes.to_vec()));
    }
    fn handle_closed(&mut self, _: Instant, conn: ConnId) {
        self.see_on(conn, "closed", Seen::Closed(conn.0));
        self.closed.insert(conn.0);
    }
    fn handle_input(&mut self, _: Instant, steps: Vec<Step>) {
        for step in steps {
            self.queue.push_back(match step {
                Step::Listen(addr) => Item::Listen(addr),
                Step::Connect(conn, addr) => Item::Connect(conn, addr),
                Step::Transmit(conn, bytes) => Item::Transmit(conn, bytes),
                Step::Close(conn) => {
                    self.closed.insert(conn);
                    Item::Close(conn)
                }
                Step::Abort(conn) => {
                    self.closed.insert(conn);
                    Item::Abort(conn)
                }
                Step::Exit => Item::Exit,
            });
        }
    }
    fn handle_timeout(&mut self, _: Instant) {}
    fn poll_output(&mut self) -> Option<Output<'_, Seen>> {
        Some(match self.queue.pop_front()? {
            Item::Listen(addr) => Output::Listen {
                addr,
                shared: false,
            },
            Item::Connect(conn, addr) => Output::Connect {
                conn: ConnId(conn),
                addr,
                from: None,
            },
            Item::Transmit(conn, bytes) => {
                self.transmitting = bytes;
                Output::Transmit {
                    conn: ConnId(conn),
                    bytes: &self.transmitting,
                }
            }
            Item::Close(conn) => Output::Close { conn: ConnId(conn) },
            Item::Abort(conn) => Output::Abort { conn: ConnId(conn) },
            Item::Seen(seen) => Output::Event(seen),
            Item::Exit => Output::Exit(Ok(())),
        })
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

/// A scripted endpoint running on the std transport.
struct Harness {
    controller: Controller<Vec<Step>>,
    seen: Receiver<Seen>,
    result: Receiver<Result<(), ExitError>>,
    /// Everything seen so far, for the final check.
    log: Vec<Seen>,
}

impl Harness {
    fn start() -> Harness {
        let runner = Runner::new(Scripted::default()).unwrap();
        let controller = runner.controller();
        let (seen_tx, seen) = mpsc::channel();
        let (result_tx, result) = mpsc::channel();
        thread::spawn(move || {
            let _ = result_tx.send(runner.run(|seen| {
                let _ = seen_tx.send(seen);
            }));
        });
        Harness {
            controller,
            seen,
            result,
            log: Vec::new(),
        }
    }

    fn run(&self, steps: Vec<Step>) {
        assert!(self.controller.send(steps), "the loop has ended");
    }

    /// Waits for the first input that `pick` accepts.
    fn wait_for<R>(&mut self, mut pick: impl FnMut(&Seen) -> Option<R>) -> R {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let seen = self
                .seen
                .recv_timeout(left)
                .expect("the awaited input did not come");
            assert!(!matches!(seen, Seen::Stale(..)), "{seen:?}");
            self.log.push(seen.clone());
            if let Some(found) = pick(&seen) {
                return found;
            }
        }
    }

    fn listen(&mut self) -> SocketAddr {
        self.run(vec![Step::Listen("127.0.0.1:0".parse().unwrap())]);
        self.wait_for(|s| match s {
            Seen::Listening(addr) => Some(*addr),
            _ => None,
        })
    }

    /// Connects a test socket to `addr` and waits until the endpoint has it.
    fn accept_from(&mut self, addr: SocketAddr) -> (u64, TcpStream) {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let local = stream.local_addr().unwrap();
        let conn = self.wait_for(|s| match s {
            Seen::Accepted(conn, peer) if *peer == local => Some(*conn),
            _ => None,
        });
        (conn, stream)
    }

    /// Exits, and checks the transport never reported a closed connection again.
    fn exit(mut self) {
        self.run(vec![Step::Exit]);
        let result = self.result.recv_timeout(WAIT).expect("run returned");
        assert_eq!(result, Ok(()));
        self.log.extend(self.seen.try_iter());
        let stale: Vec<&Seen> = self
            .log
            .iter()
            .filter(|s| matches!(s, Seen::Stale(..)))
            .collect();
        assert!(stale.is_empty(), "{stale:?}");
        assert!(!self.controller.send(vec![]), "send after the loop ended");
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Reads until end of stream; a reset counts as an end too.
fn read_to_end(stream: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (got, false),
            Err(e) => panic!("reading: {e}"),
        }
    }
}

#[test]
fn data_arrives_in_order_and_close_flushes_what_is_queued() {
    let mut h = Harness::start();
    let addr = h.listen();
    let (conn, mut peer) = h.accept_from(addr);
    peer.write_all(b"hello").unwrap();
    let mut received = Vec::new();
    while received.len() < 5 {
        received.extend(h.wait_for(|s| match s {
            Seen::Data(c, bytes) if *c == conn => Some(bytes.clone()),
            _ => None,
        }));
    }
    assert_eq!(received, b"hello");
    // Several transmits then a close, in one drain: every byte, in order, then the end.
    let sent = pattern(512 * 1024);
    let (first, second) = sent.split_at(100_000);
    h.run(vec![
        Step::Transmit(conn, first.to_vec()),
        Step::Transmit(conn, second.to_vec()),
        Step::Close(conn),
    ]);
    let (got, clean) = read_to_end(&mut peer);
    assert!(
        got == sent,
        "got {} of {} bytes, or different ones",
        got.len(),
        sent.len()
    );
    assert!(clean, "closed with a reset instead of an end of stream");
    // Bytes sent after the close never reach the endpoint (checked at exit).
    let _ = peer.write_all(b"too late");
    h.exit();
}

#[test]
fn abort_resets_the_peer_instead_of_ending_the_stream() {
    let mut h = Harness::start();
    let addr = h.listen();
    let (conn, mut peer) = h.accept_from(addr);
    // Under MAX_QUEUED: queued, not dropped, when the abort comes.
    h.run(vec![
        Step::Transmit(conn, pattern(512 * 1024)),
        Step::Abort(conn),
    ]);
    let (_, clean) = read_to_end(&mut peer);
    assert!(!clean, "closed with an end of stream instead of a reset");
    // Whatever the peer sends now never reaches the endpoint (checked at exit).
    let _ = peer.write_all(b"too late");
    h.exit();
}

#[test]
fn peer_close_is_reported_once() {
    let mut h = Harness::start();
    let addr = h.listen();
    let (conn, peer) = h.accept_from(addr);
    drop(peer);
    h.wait_for(|s| (*s == Seen::Closed(conn)).then_some(()));
    h.exit(); // a second Closed would show up as Stale
}

#[test]
fn bytes_transmitted_while_connecting_are_sent_once_connected() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut h = Harness::start();
    h.run(vec![
        Step::Connect(1, listener.local_addr().unwrap()),
        Step::Transmit(1, b"early".to_vec()),
    ]);
    let (mut peer, from) = listener.accept().unwrap();
    peer.set_read_timeout(Some(WAIT)).unwrap();
    let mut got = [0; 5];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"early");
    let local = h.wait_for(|s| match s {
        Seen::Connected(1, local) => Some(*local),
        _ => None,
    });
    assert_eq!(local, from);
    h.run(vec![Step::Close(1)]);
    assert_eq!(read_to_end(&mut peer), (vec![], true));
    h.exit();
}

#[test]
fn connect_closed_while_connecting_is_never_reported() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let h = Harness::start();
    h.run(vec![
        Step::Connect(1, listener.local_addr().unwrap()),
        Step::Close(1),
    ]);
    // The connect still completes on the wire; the transport closes it.
    let (mut peer, _) = listener.accept().unwrap();
    peer.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(read_to_end(&mut peer), (vec![], true));
    h.exit(); // a Connected(1) would show up as Stale
}

#[test]
fn failed_connect_reports_the_os_error() {
    let closed_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut h = Harness::start();
    h.run(vec![Step::Connect(7, closed_port)]);
    let error = h.wait_for(|s| match s {
        Seen::ConnectFailed(7, error) => Some(error.clone()),
        _ => None,
    });
    assert!(error.to_lowercase().contains("refused"), "{error}");
    h.exit();
}

#[test]
fn listen_failure_reports_the_os_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut h = Harness::start();
    h.run(vec![Step::Listen(taken.local_addr().unwrap())]);
    let error = h.wait_for(|s| match s {
        Seen::ListenFailed(error) => Some(error.clone()),
        _ => None,
    });
    assert!(error.to_lowercase().contains("in use"), "{error}");
    h.exit();
}

#[test]
fn output_past_max_queued_drops_the_connection_and_reports_it() {
    let mut h = Harness::start();
    let addr = h.listen();
    let (conn, mut peer) = h.accept_from(addr);
    h.run(vec![Step::Transmit(conn, vec![0; MAX_QUEUED + 1])]);
    h.wait_for(|s| (*s == Seen::Closed(conn)).then_some(()));
    let (got, _) = read_to_end(&mut peer);
    assert!(got.len() <= MAX_QUEUED);
    h.exit();
}

#[test]
fn exit_flushes_every_connection_closes_it_and_stops_listening() {
    let mut h = Harness::start();
    let addr = h.listen();
    let (a, mut peer_a) = h.accept_from(addr);
    let (b, mut peer_b) = h.accept_from(addr);
    let sent = pattern(300 * 1024);
    h.run(vec![
        Step::Transmit(a, sent.clone()),
        Step::Transmit(b, b"bye".to_vec()),
    ]);
    // No Close: Exit alone must flush and close both. Read meanwhile, as a peer would.
    let reading_a = thread::spawn(move || read_to_end(&mut peer_a).0);
    let reading_b = thread::spawn(move || read_to_end(&mut peer_b).0);
    h.exit();
    assert!(reading_a.join().unwrap() == sent);
    assert_eq!(reading_b.join().unwrap(), b"bye");
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err(),
        "still accepting after exit"
    );
}
