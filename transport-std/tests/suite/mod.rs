//! Transport tests through real loopback sockets, written once for any transport.
//!
//! `transport_suite!(some_transport_crate)` expands to one `#[test]` per
//! function below, each run on that crate's `Runner`. Every wait is bounded by
//! [`WAIT`]; nothing sleeps to let things settle.
#![allow(dead_code)]

use std::collections::{HashSet, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::{Duration, Instant};

use bridgechat_core::server::{ServerConfig, ServerEvent, ServerInput};
use bridgechat_core::{Decoder, Endpoint, Response, Status};

/// The bound on every wait in this suite.
pub const WAIT: Duration = Duration::from_secs(20);

/// What a transport under test provides: run an endpoint on its own thread.
pub trait Transport {
    fn spawn<E>(endpoint: E, events: Sender<E::Event>) -> Running<E::Input>
    where
        E: Endpoint + Send + 'static,
        E::Event: Send + 'static;
}

/// An endpoint running on a transport's `Runner`.
pub struct Running<I> {
    /// `Controller::send`.
    pub send: Box<dyn Fn(I) -> bool + Send>,
    /// The result of `Runner::run`, once it returns.
    pub result: Receiver<Result<(), String>>,
}

impl<I> Running<I> {
    /// Waits for `Runner::run` to return.
    pub fn result(&self) -> Result<(), String> {
        self.result
            .recv_timeout(WAIT)
            .expect("the runner did not return in time")
    }
}

#[macro_export]
macro_rules! transport_suite {
    ($transport:ident) => {
        struct UnderTest;

        impl suite::Transport for UnderTest {
            fn spawn<E>(
                endpoint: E,
                events: std::sync::mpsc::Sender<E::Event>,
            ) -> suite::Running<E::Input>
            where
                E: bridgechat_core::Endpoint + Send + 'static,
                E::Event: Send + 'static,
            {
                let (controller_tx, controller_rx) = std::sync::mpsc::channel();
                let (result_tx, result_rx) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    let runner = $transport::Runner::new(endpoint).expect("Runner::new");
                    controller_tx.send(runner.controller()).unwrap();
                    let result = runner.run(|event| {
                        let _ = events.send(event);
                    });
                    let _ = result_tx.send(result);
                });
                let controller = controller_rx.recv().expect("runner thread started");
                suite::Running {
                    send: Box::new(move |input| controller.send(input)),
                    result: result_rx,
                }
            }
        }

        $crate::suite_tests!(
            register_echoes_the_stored_contact,
            register_errors_keep_the_connection_open,
            name_is_held_only_while_its_connection_lives,
            register_again_replaces_the_registration,
            bridge_before_register_is_forbidden,
            bridge_with_another_name_is_forbidden,
            bridge_pairs_in_arrival_order_and_hands_each_waiter_once,
            waiting_client_is_never_handed_itself,
            waiter_stops_waiting_when_its_connection_closes,
            unregister_stops_waiting,
            unknown_and_peer_methods_get_501_and_keep_the_connection,
            pipelined_requests_are_answered_in_order,
            one_byte_at_a_time_is_answered,
            framing_errors_are_answered_then_closed,
            oversized_body_gets_413_even_with_unread_input,
            incomplete_head_times_out_with_408,
            unregistered_connection_is_closed_after_register_timeout,
            thousand_clients_register_concurrently_and_pair,
            slow_reader_does_not_stall_other_clients,
            ipv6_loopback_works,
            shutdown_closes_every_socket,
            listen_failure_ends_run_with_an_error,
            controller_reports_a_finished_loop,
        );
    };
}

#[macro_export]
macro_rules! suite_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                suite::$name::<UnderTest>();
            }
        )*
    };
}

// ---------------------------------------------------------------- helpers

/// A rendezvous server on a transport, listening on a system-chosen port.
pub struct TestServer {
    pub addr: SocketAddr,
    pub events: Receiver<ServerEvent>,
    pub running: Running<ServerInput>,
}

impl TestServer {
    pub fn start<T: Transport>(config: ServerConfig) -> TestServer {
        let (events_tx, events) = mpsc::channel();
        let running = T::spawn(bridgechat_core::server::Server::new(config), events_tx);
        let mut server = TestServer {
            addr: "0.0.0.0:0".parse().unwrap(),
            events,
            running,
        };
        server.addr = server.wait_for(|e| match e {
            ServerEvent::Listening(addr) => Some(*addr),
            _ => None,
        });
        server
    }

    pub fn on_loopback<T: Transport>() -> TestServer {
        TestServer::start::<T>(config("127.0.0.1:0"))
    }

    /// Waits for the first event that `pick` accepts, skipping others.
    pub fn wait_for<R>(&self, mut pick: impl FnMut(&ServerEvent) -> Option<R>) -> R {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = self
                .events
                .recv_timeout(left)
                .expect("the awaited server event did not come");
            if let Some(found) = pick(&event) {
                return found;
            }
        }
    }

    pub fn connect(&self) -> RawClient {
        RawClient::connect(self.addr)
    }

    /// Sends `Shutdown` and waits for `run` to return.
    pub fn shut_down(self) -> Result<(), String> {
        assert!((self.running.send)(ServerInput::Shutdown));
        self.running.result()
    }
}

pub fn config(listen: &str) -> ServerConfig {
    ServerConfig {
        listen: listen.parse().unwrap(),
        ..ServerConfig::default()
    }
}

/// A hand-driven connection speaking raw bytes, decoding responses.
pub struct RawClient {
    pub stream: TcpStream,
    decoder: Decoder,
    responses: VecDeque<Response>,
}

impl RawClient {
    pub fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect to the server");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        RawClient {
            stream,
            decoder: Decoder::default(),
            responses: VecDeque::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send to the server");
    }

    /// The next response; panics if none comes in time or the connection ends.
    pub fn response(&mut self) -> Response {
        let mut buf = [0; 4096];
        while self.responses.is_empty() {
            let n = self.stream.read(&mut buf).expect("read a response");
            assert!(n > 0, "connection closed while waiting for a response");
            let mut input = &buf[..n];
            while let Some(r) = self
                .decoder
                .decode_response(&mut input)
                .expect("a valid response")
            {
                self.responses.push_back(r);
            }
        }
        self.responses.pop_front().unwrap()
    }

    /// Sends `request` and returns the answer.
    pub fn ask(&mut self, request: &str) -> Response {
        self.send(request.as_bytes());
        self.response()
    }

    pub fn register(&mut self, name: &str, port: u16) -> Response {
        self.ask(&register(name, "127.0.0.1", port))
    }

    pub fn bridge(&mut self) -> Response {
        self.ask("BRIDGE / HTTP/1.1\r\n\r\n")
    }

    /// Reads (and discards) until the server closes; panics if it does not in time.
    pub fn expect_closed(&mut self) {
        let mut buf = [0; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
                Err(e) => panic!("expected the server to close the connection: {e}"),
            }
        }
    }
}

pub fn register(name: &str, ip: &str, port: u16) -> String {
    format!("REGISTER / HTTP/1.1\r\nName: {name}\r\nIP: {ip}\r\nPort: {port}\r\n\r\n")
}

fn contact_of(r: &Response) -> Option<(String, IpAddr, u16)> {
    r.contact
        .map(|c| (c.name.as_str().to_owned(), c.ip, c.port()))
}

fn assert_ok_empty(r: &Response) {
    assert_eq!(r.status, Status::OK, "{}", r.reason_text());
    assert_eq!(r.contact, None, "expected no contact: {r:?}");
}

fn wait_closed(server: &TestServer) {
    server.wait_for(|e| matches!(e, ServerEvent::Closed { .. }).then_some(()));
}

// ---------------------------------------------------------------- section 3 rules

pub fn register_echoes_the_stored_contact<T: Transport>() {
    let server = TestServer::on_loopback::<T>();
    let mut alice = server.connect();
    let r = alice.register("alice", 9001);
    assert_eq!(r.status, Status::OK);
    assert_eq!(
        contact_of(&r),
        Some(("alice".into(), "127.0.0.1".parse().unwrap(), 9001))
    );
    server.shut_down().unwrap();
}

pub fn register_errors_keep_the_connection_open<T: Transport>() {
    let server = TestServer::on_loopback::<T>();
    let mut c = server.connect();
    let r = c.ask("REGISTER / HTTP/1.1\r\nName: alice\r\nIP: 127.0.0.1\r\n\r\n");
    assert_eq!(r.status, Status::BAD_REQUEST);
    assert_eq!(r.reason_text(), "missing header: Port");
    let r = c.ask(&register("bad name!", "127.0.0.1", 1));
    assert_eq!(r.status, Status::BAD_REQUEST);
    let r = c.ask(&register("alice", "not-an-ip", 1));
    assert_eq!(r.status, Status::BAD_REQUEST);
    let r = c.ask(&register("alice", "127.0.0.1", 0));
    assert_eq!(r.status, Status::BAD_REQUEST);
    // Still open: a good request goes through.
    assert_eq!(c.register("alice", 9001).status, Status::OK);
    server.shut_down().unwrap();
}

pub fn name_is_held_only_while_its_connection_lives<T: Transport>() {
    let server = TestServer::on_loopback::<T>();
    let mut first = server.connect();
    assert_eq!(first.register("alice", 9001).status, Status::OK);
    let mut second = server.connect();
    let r = second.register("alice", 9002);
    assert_eq!(r.status, Status::CONFLICT);
    assert!(r.reason_text().contains("alice"), "{}", r.reason_text());
    drop(first);
    wait_closed(&server);
    assert_eq!(second.register("alice", 9002).status, Status::OK);
    server.shut_down().unwrap();
}

pub fn register_again_replaces_the_registration<T: Transport>() {
    let server = TestServer::on_loopback::<T>();
    let mut c = server.connect();
    assert_eq!(c.register("alice", 9001).status, Status::OK);
    let r = c.register("alicia", 9003);
    assert_eq!(contact_of(&r).unwrap().0, "alicia");
    // The old name is free again.
    assert_eq!(server.connect().register("alice", 9004).status, Status::OK);
    server.shut_down().unwrap();
}

pub fn bridge_before_register_is_forbidden<T: Transport>() {
    let server = TestServer::on_loopback::<T>();
    let mut c = server.connect();
    let r = c.bridge();
    assert_eq!(r.status, Status::FORBIDDEN);
    assert_eq!(r.reason_text(), "register first");
    assert_eq!(c.register("alice", 9001).status, Status::OK);
    assert_ok_empty(&c.bridge());
    server.shut_down().unwrap();
}

pub fn bridge_with_another_name_is_forbidden<T: Transport>() {
    let server = TestServer::on_loopback::<T>();
    let mut c = server.connect();
    assert_eq!(c.register("alice", 9001).status, Status::OK);
    let r = c.ask("BRIDGE / HTTP/1.1\r\nName: bob\r\n\r\n");
    assert_eq!(r.status, Status::FORBIDDEN);
    assert_ok_empty(&c.ask("BRIDGE / HTTP/1.1\r\nName: alice\r\n\r\n"));
    server.shut_down().unwrap();
}

pub fn bridge_pairs_in_arrival_order_and_hands_each_waiter_once<T: Transport>() {
    let server = TestServer::on_loopback::<T>();
    let mut clients: Vec<RawClient> = (0..4).map(|_| server.connect()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(
            c.register(&format!("c{i}"), 9000 + i as u16).status,
            Status::OK
        );
    }
    assert_ok_empty(&clients[0].bridge()); // c0 waits
    let r = clients[1].bridge();
    assert_eq!(
        contact_of(&r),
        Some(("c0".into(), "127.0.0.1".parse().unwrap(), 9000))
    );
    assert_ok_empty(&clients[2].bridge()); // c0 was handed out: c2 waits now
    assert_eq!(contact_of(&clients[3].bridge()).unwrap().0, "c2");
    server.shut_down().unwrap();
}

pub fn waiting_client_is_never_handed_itself<T: Transport>() {
    let server = TestServer::on_loopback::<T>();
    let mut alice = server.connect();
    assert_eq!(alice.register("alice", 9001).status, Status::OK);
    assert_ok_empty(&alice.bridge());
    assert_ok_empty(&alice.bridge());
    let mut bob = server.connect();
    assert_eq!(bob.register("bob", 9002).status, Status::OK);
    assert_eq!(contact_of(&bob.bridge()).unwrap().0, "alice");
    server.shut_down().unwrap();
}

pub fn waiter_stops_waiting_when_its_connection_closes<T: Transport>() {
    let server = TestServer::on_loopback::<T>();
    let mut alice = server.connect();
    assert_eq!(alice.register("alice", 9001).status, Status::OK);
    assert_ok_empty(&alice.bridge());
    drop(alice);
    wait_closed(&server);
    let mut bob = server.connect();
    assert_eq!(bob.register("bob", 9002).status, Status::OK);
    assert_ok_empty(&bob.bridge());
    server.shut_down().unwrap();
}

pub fn unregister_stops_waiting<T: Transport>() {
    let server = TestServer::on_loopback::<T>();
    let mut alice = server.connect();
    assert_eq!(alice.register("alice", 9001).status, Status::OK);
    assert_ok_empty(&alice.bridge());
    assert_ok_empty(&alice.ask("UNREGISTER / HTTP/1.1\r\n\r\n"));
    let mut bob = server.connect();
    assert_eq!(bob.register("bob", 9002).status, Status::OK);
    assert_ok_empty(&bob.bridge());
    // alice's name is free and she must register again to bridge.
    assert_eq!(alice.bridge().status, Status::FORBIDDEN);
    server.shut_down().unwrap();
}

pub fn unknown_and_peer_methods_get_501_and_keep_the_connection<T: Transport>() {
    let server = TestServer::on_loopback::<T>();
    let mut c = server.connect();
    assert_eq!(
        c.ask("DANCE / HTTP/1.1\r\n\r\n").status,
        Status::NOT_IMPLEMENTED
    );
    assert_eq!(
        c.ask("QUIT / HTTP/1.1\r\n\r\n").status,
        Status::NOT_IMPLEMENTED
    );
    assert_eq!(c.register("alice", 9001).status, Status::OK);
    server.shut_down().unwrap();
}

pub fn pipelined_requests_are_answered_in_order<T: Transport>() {
    let server = TestServer::on_loopback::<T>();
    let mut c = server.connect();
    let burst = format!(
        "{}BRIDGE / HTTP/1.1\r\n\r\nDANCE / HTTP/1.1\r\n\r\nUNREGISTER / HTTP/1.1\r\n\r\nBRIDGE / HTTP/1.1\r\n\r\n",
        register("alice", "127.0.0.1", 9001)
    );
    c.send(burst.as_bytes());
    let statuses: Vec<u16> = (0..5).map(|_| c.response().status.code()).collect();
    assert_eq!(statuses, [200, 200, 501, 200, 403]);
    server.shut_down().unwrap();
}

pub fn one_byte_at_a_time_is_answered<T: Transport>() {
    let server = TestServer::on_loopback::<T>();
    let mut c = server.connect();
    c.stream.set_nodelay(true).unwrap();
    for byte in register("alice", "::1", 9001).as_bytes() {
        c.send(&[*byte]);
    }
    let r = c.response();
    assert_eq!(contact_of(&r).unwrap().1, IpAddr::V6(Ipv6Addr::LOCALHOST));
    server.shut_down().unwrap();
}

pub fn framing_errors_are_answered_then_closed<T: Transport>() {
    let server = TestServer::on_loopback::<T>();
    let cases: [(&str, u16); 4] = [
        (
            "REGISTER / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            501,
        ),
        (
            "REGISTER / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            400,
        ),
        ("REGISTER / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", 400),
        ("this is not http\r\n\r\n", 400),
    ];
    for (request, status) in cases {
        let mut c = server.connect();
        let r = c.ask(request);
        assert_eq!(
            r.status.code(),
            status,
            "for {request:?}: {}",
            r.reason_text()
        );
        c.expect_closed();
    }
    // A head past 8 KiB.
    let mut c = server.connect();
    let mut big = b"REGISTER / HTTP/1.1\r\nX-Filler: ".to_vec();
    big.resize(9 * 1024, b'a');
    c.send(&big);
    assert_eq!(c.response().status.code(), 431);
    c.expect_closed();
    server.shut_down().unwrap();
}

/// The server closes while our input is unread on its side; the answer must still arrive.
pub fn oversized_body_gets_413_even_with_unread_input<T: Transport>() {
    let server = TestServer::on_loopback::<T>();
    let mut c = server.connect();
    let body_len = 200 * 1024;
    let mut request =
        format!("MESSAGE / HTTP/1.1\r\nContent-Length: {body_len}\r\n\r\n").into_bytes();
    request.resize(request.len() + body_len, b'x');
    // The server may close before taking it all; a failed write is fine.
    let _ = c.stream.write_all(&request);
    assert_eq!(c.response().status.code(), 413);
    c.expect_closed();
    server.shut_down().unwrap();
}

pub fn incomplete_head_times_out_with_408<T: Transport>() {
    let server = TestServer::start::<T>(ServerConfig {
        head_timeout: Duration::from_millis(200),
        ..config("127.0.0.1:0")
    });
    let mut c = server.connect();
    c.send(b"REGISTER / HTTP/1.1\r\nName: al");
    let r = c.response();
    assert_eq!(r.status.code(), 408);
    c.expect_closed();
    server.shut_down().unwrap();
}

pub fn unregistered_connection_is_closed_after_register_timeout<T: Transport>() {
    let server = TestServer::start::<T>(ServerConfig {
        register_timeout: Duration::from_millis(200),
        ..config("127.0.0.1:0")
    });
    let mut idle = server.connect();
    let mut registered = server.connect();
    assert_eq!(registered.register("alice", 9001).status, Status::OK);
    idle.expect_closed();
    // The registered one outlives the timeout.
    assert_ok_empty(&registered.bridge());
    server.shut_down().unwrap();
}

// ---------------------------------------------------------------- load and abuse

/// 1,000 server connections open at once, registering from several threads,
/// then bridging: answers alternate wait/pair and every waiter is handed once.
pub fn thousand_clients_register_concurrently_and_pair<T: Transport>() {
    const CLIENTS: usize = 1000;
    const THREADS: usize = 8;
    let server = TestServer::on_loopback::<T>();
    let addr = server.addr;
    let (registered_tx, registered_rx) = mpsc::channel::<()>();
    let (bridge_tx, bridge_rx) = mpsc::channel::<()>();
    let bridge_rx = std::sync::Arc::new(std::sync::Mutex::new(bridge_rx));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let registered_tx = registered_tx.clone();
            let bridge_rx = std::sync::Arc::clone(&bridge_rx);
            thread::spawn(move || {
                let names: Vec<String> = (t..CLIENTS)
                    .step_by(THREADS)
                    .map(|i| format!("c{i}"))
                    .collect();
                let mut clients: Vec<RawClient> =
                    names.iter().map(|_| RawClient::connect(addr)).collect();
                // Send every REGISTER before reading any answer: they overlap on the server.
                for (c, name) in clients.iter_mut().zip(&names) {
                    c.send(register(name, "127.0.0.1", 9000).as_bytes());
                }
                for c in &mut clients {
                    assert_eq!(c.response().status, Status::OK);
                }
                registered_tx.send(()).unwrap();
                bridge_rx.lock().unwrap().recv_timeout(WAIT).unwrap();
                let answers: Vec<(String, Option<String>)> = clients
                    .iter_mut()
                    .zip(&names)
                    .map(|(c, name)| {
                        let r = c.bridge();
                        assert_eq!(r.status, Status::OK);
                        (name.clone(), contact_of(&r).map(|(n, ..)| n))
                    })
                    .collect();
                (answers, clients)
            })
        })
        .collect();
    for _ in 0..THREADS {
        registered_rx
            .recv_timeout(WAIT)
            .expect("all clients registered");
    }
    // All 1,000 are registered and connected at this point.
    for _ in 0..THREADS {
        bridge_tx.send(()).unwrap();
    }
    let mut waiters = HashSet::new();
    let mut handed = Vec::new();
    let mut keep_open = Vec::new();
    for worker in workers {
        let (answers, clients) = worker.join().expect("client thread");
        keep_open.extend(clients);
        for (name, peer) in answers {
            match peer {
                Some(peer) => handed.push((name, peer)),
                None => {
                    waiters.insert(name);
                }
            }
        }
    }
    assert_eq!(keep_open.len(), CLIENTS);
    assert_eq!(waiters.len(), CLIENTS / 2);
    assert_eq!(handed.len(), CLIENTS / 2);
    let handed_names: HashSet<&String> = handed.iter().map(|(_, peer)| peer).collect();
    assert_eq!(
        handed_names.len(),
        handed.len(),
        "a waiter was handed out twice"
    );
    for (asker, peer) in &handed {
        assert!(
            waiters.contains(peer),
            "{asker} was handed {peer}, who never waited"
        );
        assert_ne!(asker, peer);
    }
    server.shut_down().unwrap();
}

/// A client that pipelines requests and never reads its answers: others are still served,
/// and shutting down does not hang on it.
pub fn slow_reader_does_not_stall_other_clients<T: Transport>() {
    let server = TestServer::on_loopback::<T>();
    let mut slow = server.connect();
    assert_eq!(slow.register("slow", 9001).status, Status::OK);
    let mut flood = slow.stream.try_clone().unwrap();
    flood
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let (progress_tx, progress_rx) = mpsc::channel();
    let flooder = thread::spawn(move || {
        let burst = "BRIDGE / HTTP/1.1\r\n\r\n".repeat(2048);
        let mut sent = 0usize;
        // Until the server stops taking our bytes (or drops us), at most 64 MiB.
        while sent < 64 << 20 {
            if flood.write_all(burst.as_bytes()).is_err() {
                break;
            }
            sent += burst.len();
            let _ = progress_tx.send(sent);
        }
        sent
    });
    // Serve others while the flood is going on: far more answers than buffers hold.
    let mut rounds = 0;
    let mut flooded = 0;
    while flooded < (8 << 20) {
        let mut other = server.connect();
        let name = format!("other{rounds}");
        assert_eq!(other.register(&name, 9002).status, Status::OK);
        assert_eq!(
            other.ask("UNREGISTER / HTTP/1.1\r\n\r\n").status,
            Status::OK
        );
        rounds += 1;
        match progress_rx.recv_timeout(WAIT) {
            Ok(sent) => flooded = sent,
            Err(_) => break, // the flooder stopped: blocked or dropped
        }
        while let Ok(sent) = progress_rx.try_recv() {
            flooded = sent;
        }
    }
    let mut last = server.connect();
    assert_eq!(last.register("last", 9003).status, Status::OK);
    assert!(rounds > 0);
    let started = Instant::now();
    server.shut_down().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown hung on the slow reader"
    );
    slow.stream.shutdown(Shutdown::Both).ok();
    flooder.join().unwrap();
}

pub fn ipv6_loopback_works<T: Transport>() {
    if TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: IPv6 loopback is not available here");
        return;
    }
    let server = TestServer::start::<T>(config("[::1]:0"));
    assert!(server.addr.is_ipv6());
    assert_ne!(server.addr.port(), 0);
    let mut alice = server.connect();
    let r = alice.ask(&register("alice", "::1", 9001));
    assert_eq!(contact_of(&r).unwrap().1, IpAddr::V6(Ipv6Addr::LOCALHOST));
    assert_ok_empty(&alice.bridge());
    let mut bob = server.connect();
    assert_eq!(bob.ask(&register("bob", "::1", 9002)).status, Status::OK);
    assert_eq!(
        contact_of(&bob.bridge()),
        Some(("alice".into(), IpAddr::V6(Ipv6Addr::LOCALHOST), 9001))
    );
    server.shut_down().unwrap();
}

pub fn shutdown_closes_every_socket<T: Transport>() {
    let server = TestServer::on_loopback::<T>();
    let addr = server.addr;
    let mut clients: Vec<RawClient> = (0..20).map(|_| server.connect()).collect();
    for (i, c) in clients.iter_mut().enumerate().take(10) {
        assert_eq!(c.register(&format!("c{i}"), 9000).status, Status::OK);
    }
    assert_ok_empty(&clients[0].bridge()); // one waiting
    clients[11].send(b"REGISTER / HTTP/1.1\r\nNa"); // one mid-head
                                                    // The others are connected but silent; make sure the server has them all.
    for _ in 0..20 {
        server.wait_for(|e| matches!(e, ServerEvent::Accepted { .. }).then_some(()));
    }
    let started = Instant::now();
    assert_eq!(server.shut_down(), Ok(()));
    assert!(started.elapsed() < Duration::from_secs(5));
    for c in &mut clients {
        c.expect_closed();
    }
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err(),
        "the listener is still accepting after shutdown"
    );
}

pub fn listen_failure_ends_run_with_an_error<T: Transport>() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let (events_tx, _events) = mpsc::channel();
    let running = T::spawn(
        bridgechat_core::server::Server::new(config(&addr.to_string())),
        events_tx,
    );
    let error = running
        .result()
        .expect_err("listening on a taken port must fail");
    assert!(error.contains(&addr.to_string()), "{error}");
}

pub fn controller_reports_a_finished_loop<T: Transport>() {
    let server = TestServer::on_loopback::<T>();
    let send = &server.running.send;
    assert!(send(ServerInput::Shutdown));
    assert_eq!(server.running.result(), Ok(()));
    assert!(!send(ServerInput::Shutdown));
}
