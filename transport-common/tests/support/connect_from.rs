//! A check every transport passes the same way, included by each transport's
//! tests (`#[path]`) and run on its own runner: a listener asked to be shared
//! keeps accepting while an `Output::Connect` with `from: Some(its port)`
//! leaves from that port, as the far side sees it.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bridgechat_core::{ConnId, Endpoint, ExitError, Output};

const WAIT: Duration = Duration::from_secs(20);
/// The one connection the script opens; accepted ones are numbered from 1.
const OUTGOING: ConnId = ConnId(1000);

/// Inputs the test gives the endpoint.
#[derive(Debug)]
pub enum Do {
    /// Connect to this address from this local port.
    Connect(SocketAddr, u16),
    Exit,
}

/// What the transport told the endpoint.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    Listening(SocketAddr),
    Accepted(ConnId),
    Connected(ConnId, SocketAddr),
    ConnectFailed(ConnId, String),
    Closed(ConnId),
}

/// Listens shared on loopback, connects when told, and reports what it sees.
#[derive(Debug)]
pub struct Scripted {
    accepted: u64,
    queue: VecDeque<Step>,
}

#[derive(Debug)]
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
        self.accepted += 1;
        let conn = ConnId(self.accepted);
        self.queue.push_back(Step::Event(Seen::Accepted(conn)));
        conn
    }
    fn handle_connected(&mut self, _: Instant, conn: ConnId, local: SocketAddr) {
        let seen = Seen::Connected(conn, local);
        self.queue.push_back(Step::Event(seen));
    }
    fn handle_connect_failed(&mut self, _: Instant, conn: ConnId, error: &io::Error) {
        let seen = Seen::ConnectFailed(conn, error.to_string());
        self.queue.push_back(Step::Event(seen));
    }
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
                shared: true,
            },
            Step::Do(Do::Connect(addr, port)) => Output::Connect {
                conn: OUTGOING,
                addr,
                from: Some(port),
            },
            Step::Do(Do::Exit) => Output::Exit(Ok(())),
            Step::Event(seen) => Output::Event(seen),
        })
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

/// Runs the check on one transport. `start` runs the endpoint on its loop
/// thread, handing every event to the callback, and returns how to give the
/// endpoint an input (false once the loop has ended) and the loop's thread.
pub fn a_connect_from_the_shared_listeners_port_leaves_from_it<S: Fn(Do) -> bool>(
    start: impl FnOnce(Scripted, Box<dyn FnMut(Seen) + Send>) -> (S, JoinHandle<Result<(), ExitError>>),
) {
    let endpoint = Scripted {
        accepted: 0,
        queue: VecDeque::from([Step::Listen]),
    };
    let (seen_tx, seen) = mpsc::channel();
    let (send, thread) = start(
        endpoint,
        Box::new(move |event| {
            let _ = seen_tx.send(event);
        }),
    );
    let next = || seen.recv_timeout(WAIT).expect("an event in time");

    let Seen::Listening(listening) = next() else {
        panic!("the first event is Listening");
    };
    let far = TcpListener::bind("127.0.0.1:0").expect("bind the far side");
    let far_addr = far.local_addr().expect("far address");
    assert!(send(Do::Connect(far_addr, listening.port())));
    match next() {
        Seen::Connected(OUTGOING, local) => assert_eq!(local.port(), listening.port()),
        other => panic!("expected Connected, got {other:?}"),
    }
    // Connected: the far side's accept queue holds it, so this does not wait.
    let (accepted, peer) = far.accept().expect("accept");
    assert_eq!(
        peer.port(),
        listening.port(),
        "the far side sees the listener's port"
    );

    // The shared listener still accepts, on the port it shares.
    let client = TcpStream::connect_timeout(&listening, WAIT).expect("connect");
    assert_eq!(next(), Seen::Accepted(ConnId(1)));

    drop((accepted, client));
    assert!(send(Do::Exit));
    let (done_tx, done) = mpsc::channel();
    thread::spawn(move || {
        let _ = done_tx.send(thread.join());
    });
    let result = done.recv_timeout(WAIT).expect("the loop ends in time");
    result.expect("the loop thread").expect("Exit(Ok)");
}
