//! What one connection costs the std transport, and its flow control: a
//! pipelining peer that reads its answers is never cut off, because the reader
//! reads no further ahead than the core and the writer have absorbed.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;

use bridgechat_core::{ConnId, Endpoint, ExitError, Output};
use bridgechat_transport_std::{Controller, Runner, FDS_PER_CONNECTION};

const WAIT: Duration = Duration::from_secs(60);
/// Each byte received is answered with this many.
const AMPLIFY: usize = 8;

#[derive(Debug)]
enum Seen {
    Listening(SocketAddr),
    Closed,
}

enum Item {
    Listen,
    Transmit(ConnId, Vec<u8>),
    Event(Seen),
    Exit,
}

/// Listens on loopback, then answers every chunk with `AMPLIFY` times its
/// length, slowly, as a loaded core would.
struct Amplifier {
    queue: VecDeque<Item>,
    answer: Vec<u8>,
    accepted: u64,
}

impl Endpoint for Amplifier {
    type Input = ();
    type Event = Seen;
    fn handle_listening(&mut self, _: Instant, addr: SocketAddr) {
        self.queue.push_back(Item::Event(Seen::Listening(addr)));
    }
    fn handle_listen_failed(&mut self, _: Instant, _: SocketAddr, error: &std::io::Error) {
        panic!("cannot listen: {error}");
    }
    fn handle_accept(&mut self, _: Instant, _: SocketAddr) -> ConnId {
        self.accepted += 1;
        ConnId(self.accepted)
    }
    fn handle_connected(&mut self, _: Instant, _: ConnId, _: SocketAddr) {}
    fn handle_connect_failed(&mut self, _: Instant, _: ConnId, _: &std::io::Error) {}
    fn handle_data(&mut self, _: Instant, conn: ConnId, bytes: &[u8]) {
        // A core busy with other work; nothing is waited for.
        thread::sleep(Duration::from_micros(500));
        self.queue
            .push_back(Item::Transmit(conn, bytes.repeat(AMPLIFY)));
    }
    fn handle_closed(&mut self, _: Instant, _: ConnId) {
        self.queue.push_back(Item::Event(Seen::Closed));
    }
    fn handle_input(&mut self, _: Instant, (): ()) {
        self.queue.push_back(Item::Exit);
    }
    fn handle_timeout(&mut self, _: Instant) {}
    fn poll_output(&mut self) -> Option<Output<'_, Seen>> {
        Some(match self.queue.pop_front()? {
            Item::Listen => Output::Listen {
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                shared: false,
            },
            Item::Transmit(conn, bytes) => {
                self.answer = bytes;
                Output::Transmit {
                    conn,
                    bytes: &self.answer,
                }
            }
            Item::Event(seen) => Output::Event(seen),
            Item::Exit => Output::Exit(Ok(())),
        })
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

/// A running amplifier: its address, a way to stop it, its events and its thread.
type Running = (
    SocketAddr,
    Controller<()>,
    Receiver<Seen>,
    JoinHandle<Result<(), ExitError>>,
);

fn start() -> Running {
    let amplifier = Amplifier {
        queue: VecDeque::from([Item::Listen]),
        answer: Vec::new(),
        accepted: 0,
    };
    let runner = Runner::new(amplifier).expect("a runner");
    let controller = runner.controller();
    let (events, seen) = mpsc::channel();
    let looping = thread::spawn(move || {
        runner.run(move |event| {
            let _ = events.send(event);
        })
    });
    let addr = match seen.recv_timeout(WAIT).expect("listening") {
        Seen::Listening(addr) => addr,
        other => panic!("expected Listening, got {other:?}"),
    };
    (addr, controller, seen, looping)
}

/// 4 MiB of requests in one write, answered with 32 MiB, read from `read_after` on.
fn pipelined_and_read_after(read_after: Duration) {
    const SENT: usize = 4 * 1024 * 1024;
    let (addr, controller, seen, looping) = start();
    let mut peer = TcpStream::connect(addr).expect("connect");
    let mut writer = peer.try_clone().expect("clone the stream");
    let sender = thread::spawn(move || writer.write_all(&vec![b'r'; SENT]));
    // The scenario: a peer that does not read at first (nothing is waited for).
    thread::sleep(read_after);
    peer.set_read_timeout(Some(WAIT)).expect("a read timeout");
    let mut received = 0;
    let mut buf = vec![0; 64 * 1024];
    while received < SENT * AMPLIFY {
        match peer.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received += n,
            Err(e) => panic!("after {received} bytes: {e}"),
        }
    }
    assert_eq!(received, SENT * AMPLIFY, "the answers stopped early");
    assert!(
        seen.try_recv().is_err(),
        "the transport reported the reading peer closed"
    );
    sender.join().expect("the writer").expect("all sent");
    assert!(controller.send(()));
    looping.join().expect("the loop").expect("a clean exit");
}

#[test]
fn a_pipelining_peer_that_reads_as_it_goes_is_answered_in_full() {
    pipelined_and_read_after(Duration::ZERO);
}

#[test]
fn a_pipelining_peer_that_reads_a_second_late_is_answered_in_full() {
    pipelined_and_read_after(Duration::from_secs(1));
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// What `FDS_PER_CONNECTION` says (and the server's default connection limit
/// relies on) is what a connection really costs.
#[test]
#[cfg(target_os = "linux")]
fn a_connection_costs_fds_per_connection_descriptors() {
    const PEERS: usize = 200;
    let (addr, controller, _seen, looping) = start();
    let before = open_fds();
    let peers: Vec<TcpStream> = (0..PEERS)
        .map(|_| {
            let mut peer = TcpStream::connect(addr).expect("connect");
            peer.set_read_timeout(Some(WAIT)).expect("a read timeout");
            // Answered: the transport has taken the connection on.
            peer.write_all(b"x").expect("send");
            let mut answer = [0; AMPLIFY];
            peer.read_exact(&mut answer).expect("an answer");
            peer
        })
        .collect();
    let spent = open_fds() - before - PEERS; // the peers' own sockets are ours too
    assert!(
        spent <= PEERS * FDS_PER_CONNECTION as usize + 8,
        "{PEERS} connections cost {spent} descriptors"
    );
    drop(peers);
    assert!(controller.send(()));
    looping.join().expect("the loop").expect("a clean exit");
}
