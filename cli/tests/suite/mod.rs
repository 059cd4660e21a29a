//! The transport suite: one body of tests, run against every transport.
//!
//! A test file instantiates it with `mod suite; transport_suite!(the_transport_crate);`.
//! Each test is a generic function here, `fn name<T: Transport>()`; add it to
//! the list in `transport_suite!` to run it everywhere. Everything goes through
//! real loopback sockets, every wait is bounded, and each test stops what it starts.

#![allow(dead_code)] // not every test file uses every helper

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bridgechat_core::client::{Client, ClientConfig, ClientEvent, ClientInput, Mode};
use bridgechat_core::server::{Server, ServerConfig, ServerEvent, ServerInput};
use bridgechat_core::Endpoint;

/// How long any single wait in the suite may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// Defines `Transport`: the suite's handle on a transport crate's `Runner` and
/// `Controller`. Shared by the transport and hardening suites.
#[macro_export]
macro_rules! suite_transport {
    ($transport:ident) => {
        struct Transport;

        impl $crate::suite::Transport for Transport {
            fn spawn<E>(
                endpoint: E,
                events: ::std::sync::mpsc::Sender<E::Event>,
            ) -> $crate::suite::Running<E::Input>
            where
                E: ::bridgechat_core::Endpoint + Send + 'static,
                E::Event: Send + 'static,
            {
                $crate::suite::spawn_with(move || {
                    let runner = $transport::Runner::new(endpoint)?;
                    let controller = runner.controller();
                    let run = move || {
                        runner
                            .run(move |event| {
                                let _ = events.send(event);
                            })
                            .map_err(|e| e.to_string())
                    };
                    Ok((move |input| controller.send(input), run))
                })
            }
        }
    };
}

/// Instantiates the suite for a transport crate exposing `Runner` and `Controller`.
#[macro_export]
macro_rules! transport_suite {
    ($transport:ident) => {
        $crate::suite_transport!($transport);

        $crate::suite_tests!(
            Transport;
            listens_on_port_zero_and_reports_the_bound_address,
            listen_failure_ends_the_run_with_the_os_error,
            register_answers_200_echoing_the_stored_contact,
            register_with_a_missing_or_bad_header_is_400_and_keeps_the_connection,
            register_with_a_name_held_by_another_live_connection_is_409,
            registering_again_replaces_the_registration,
            bridge_before_register_is_403,
            bridge_with_another_clients_name_is_403,
            bridge_pairs_in_arrival_order_and_hands_each_waiter_once,
            a_waiting_client_is_never_handed_itself,
            unregister_stops_waiting_and_frees_the_name,
            closing_the_server_connection_stops_waiting_and_frees_the_name,
            a_request_followed_at_once_by_the_end_of_stream_is_answered_and_closed,
            unknown_method_is_501_and_keeps_the_connection,
            pipelined_requests_are_answered_in_order,
            oversized_head_is_431_and_closes,
            oversized_body_is_413_and_closes,
            conflicting_content_length_is_400_and_closes,
            transfer_encoding_is_501_and_closes,
            incomplete_head_gets_408_after_the_head_timeout,
            unregistered_connection_is_closed_after_the_register_timeout,
            connection_over_the_limit_gets_503_and_is_closed,
            thousand_clients_register_and_pair_concurrently,
            a_reader_that_never_reads_does_not_stall_other_clients,
            ipv6_loopback_registers_and_pairs,
            shutdown_closes_every_socket,
            two_clients_chat_200_turns_byte_exact,
            a_peer_that_resets_mid_chat_is_reported_lost,
            chat_to_a_client_that_is_not_waiting_is_409_and_closed,
            peer_messages_arrive_exactly_and_invalid_utf8_shows_as_replacement,
            a_message_typed_out_of_turn_is_held_until_the_turn_comes,
            a_message_out_of_turn_from_the_peer_ends_the_chat,
            quit_from_the_peer_at_any_turn_ends_the_chat,
            quit_in_read_mode_sends_quit_and_exits,
            interrupt_while_waiting_exits_and_frees_the_name,
            an_unreachable_server_ends_the_client_with_an_error,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! suite_tests {
    ($transport:ty; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::suite::$name::<$transport>()
            }
        )*
    };
}

/// What the suite needs from a transport: run an endpoint on its own thread.
pub trait Transport {
    fn spawn<E>(endpoint: E, events: Sender<E::Event>) -> Running<E::Input>
    where
        E: Endpoint + Send + 'static,
        E::Event: Send + 'static;
}

/// An endpoint running on its own thread.
pub struct Running<I> {
    send: Box<dyn Fn(I) -> bool + Send>,
    done: Receiver<Result<(), String>>,
    thread: Option<JoinHandle<()>>,
}

impl<I> Running<I> {
    /// Sends an input; false if the loop has ended.
    pub fn send(&self, input: I) -> bool {
        (self.send)(input)
    }

    /// Waits (bounded) for the loop to end and returns its result.
    pub fn join(mut self) -> Result<(), String> {
        let result = self
            .done
            .recv_timeout(WAIT)
            .expect("the transport's loop did not end in time");
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the transport's thread panicked");
        }
        result
    }
}

/// Builds a runner on a fresh thread (so the runner itself need not be `Send`)
/// and hands back its controller; `build` returns (send an input, run the loop).
pub fn spawn_with<I, S, R>(
    build: impl FnOnce() -> io::Result<(S, R)> + Send + 'static,
) -> Running<I>
where
    I: 'static,
    S: Fn(I) -> bool + Send + 'static,
    R: FnOnce() -> Result<(), String>,
{
    let (controller_tx, controller_rx) = mpsc::channel();
    let (done_tx, done) = mpsc::channel();
    let thread = thread::spawn(move || match build() {
        Ok((send, run)) => {
            let _ = controller_tx.send(Ok(send));
            let _ = done_tx.send(run());
        }
        Err(e) => {
            let _ = controller_tx.send(Err(e));
        }
    });
    let send = controller_rx
        .recv_timeout(WAIT)
        .expect("the runner was not built in time")
        .expect("building the runner failed");
    Running {
        send: Box::new(send),
        done,
        thread: Some(thread),
    }
}

// ---------------------------------------------------------------- server harness

/// A rendezvous server running on the transport under test.
pub struct TestServer {
    pub addr: SocketAddr,
    pub events: Receiver<ServerEvent>,
    running: Option<Running<ServerInput>>,
}

impl TestServer {
    /// Starts a server on `127.0.0.1:0` with the contract's defaults.
    pub fn start<T: Transport>() -> TestServer {
        TestServer::start_with::<T>(config_on(loopback_v4()))
    }

    /// Starts a server and waits until it reports the address it bound.
    pub fn start_with<T: Transport>(config: ServerConfig) -> TestServer {
        TestServer::try_start::<T>(config).expect("the server could not listen")
    }

    /// Like `start_with`, but returns the loop's error if listening failed.
    pub fn try_start<T: Transport>(config: ServerConfig) -> Result<TestServer, String> {
        let (events_tx, events) = mpsc::channel();
        let running = T::spawn(Server::new(config, [5; 32]), events_tx);
        let deadline = Instant::now() + WAIT;
        loop {
            match events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(ServerEvent::Listening(addr)) => {
                    return Ok(TestServer {
                        addr,
                        events,
                        running: Some(running),
                    })
                }
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(running
                        .join()
                        .expect_err("the loop ended without listening"))
                }
                Err(RecvTimeoutError::Timeout) => panic!("the server did not report Listening"),
            }
        }
    }

    /// Waits (bounded) for an event that `wanted` accepts, skipping others.
    pub fn wait_for(&self, what: &str, wanted: impl Fn(&ServerEvent) -> bool) -> ServerEvent {
        let deadline = Instant::now() + WAIT;
        loop {
            match self
                .events
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(event) if wanted(&event) => return event,
                Ok(_) => {}
                Err(e) => panic!("no server event {what}: {e}"),
            }
        }
    }

    /// Waits until the server has forgotten the registration of `name`.
    pub fn wait_unregistered(&self, name: &str) {
        self.wait_for(
            &format!("Unregistered({name})"),
            |e| matches!(e, ServerEvent::Unregistered { name: n, .. } if n.as_str() == name),
        );
    }

    pub fn client(&self) -> Raw {
        Raw::connect(self.addr)
    }

    /// Sends `Shutdown` and waits (bounded) for the loop to end.
    pub fn stop(mut self) -> Result<(), String> {
        let running = self.running.take().expect("stopped twice");
        assert!(
            running.send(ServerInput::Shutdown),
            "the server loop had already ended"
        );
        running.join()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // A failed test still stops its server; the thread ends on its own.
        if let Some(running) = self.running.take() {
            running.send(ServerInput::Shutdown);
        }
    }
}

pub fn loopback_v4() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)
}

pub fn config_on(listen: SocketAddr) -> ServerConfig {
    ServerConfig {
        listen,
        ..ServerConfig::default()
    }
}

// ---------------------------------------------------------------- raw wire client

/// `Name`, `IP`, `Port` as they appear on the wire.
pub type WireContact = (String, String, String);

/// One parsed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The response exactly as received.
    pub raw: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `Name`, `IP` and `Port` it carries, if any.
    pub fn contact(&self) -> Option<WireContact> {
        Some((
            self.header("Name")?.to_string(),
            self.header("IP")?.to_string(),
            self.header("Port")?.to_string(),
        ))
    }
}

/// A plain blocking client that writes raw requests and parses responses.
pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect to the server");
        Raw::wrap(stream)
    }

    /// A client whose kernel receive buffer is tiny, so a server's answers back up
    /// at the server after kilobytes instead of megabytes (slow-reader tests).
    pub fn connect_with_small_receive_buffer(addr: SocketAddr) -> Raw {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )
        .expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        socket
            .connect_timeout(&addr.into(), WAIT)
            .expect("connect to the server");
        Raw::wrap(socket.into())
    }

    pub fn wrap(stream: TcpStream) -> Raw {
        stream
            .set_read_timeout(Some(WAIT))
            .expect("set read timeout");
        stream
            .set_write_timeout(Some(WAIT))
            .expect("set write timeout");
        Raw {
            stream,
            buf: Vec::new(),
            start: 0,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to the server");
    }

    /// Sends one request and reads its response.
    pub fn request(&mut self, request: &str) -> Resp {
        self.send(request.as_bytes());
        self.response()
    }

    pub fn register(&mut self, name: &str, ip: &str, port: u16) -> Resp {
        self.request(&register_request(name, ip, port))
    }

    pub fn bridge(&mut self) -> Resp {
        self.request("BRIDGE / HTTP/1.1\r\n\r\n")
    }

    /// Reads the next response; fails the test on timeout or end of stream.
    pub fn response(&mut self) -> Resp {
        loop {
            if let Some(resp) = self.parse() {
                return resp;
            }
            match self.fill() {
                Ok(0) => panic!("connection closed before a full response"),
                Ok(_) => {}
                Err(e) => panic!("no response: {e}"),
            }
        }
    }

    /// Asserts the server closes the connection (end of stream or reset) in time,
    /// with no bytes left unread.
    pub fn expect_closed(&mut self) {
        loop {
            match self.fill() {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("the server did not close the connection: {e}"),
            }
        }
        let rest = &self.buf[self.start..];
        assert!(
            rest.is_empty(),
            "unread bytes: {:?}",
            String::from_utf8_lossy(rest)
        );
    }

    /// Reads `len` more bytes, or fewer if the connection ends first (bounded
    /// by the read timeout).
    pub fn read_up_to(&mut self, len: usize) -> Vec<u8> {
        while self.buf.len() - self.start < len {
            match self.fill() {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("read failed: {e}"),
            }
        }
        let len = len.min(self.buf.len() - self.start);
        let bytes = self.buf[self.start..self.start + len].to_vec();
        self.start += len;
        bytes
    }

    fn fill(&mut self) -> io::Result<usize> {
        if self.start > 64 * 1024 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    fn parse(&mut self) -> Option<Resp> {
        let (start_line, resp) = self.parse_message()?;
        let mut parts = start_line.splitn(3, ' ');
        assert_eq!(parts.next(), Some("HTTP/1.1"), "status line: {start_line}");
        let status = parts.next().and_then(|code| code.parse().ok());
        let status = status.unwrap_or_else(|| panic!("status line: {start_line}"));
        assert!(
            resp.header("Content-Length").is_some(),
            "every response has Content-Length"
        );
        Some(Resp { status, ..resp })
    }

    /// Reads the next request (as a peer sees the client's CHAT, MESSAGE, QUIT).
    pub fn incoming_request(&mut self) -> Req {
        loop {
            if let Some((start_line, message)) = self.parse_message() {
                let method = start_line.split(' ').next().unwrap_or_default().to_string();
                assert!(
                    start_line.ends_with(" / HTTP/1.1"),
                    "request line: {start_line}"
                );
                return Req { method, message };
            }
            match self.fill() {
                Ok(0) => panic!("connection closed before a full request"),
                Ok(_) => {}
                Err(e) => panic!("no request: {e}"),
            }
        }
    }

    /// One message off the buffer: its start line and the rest (`status` left 0).
    fn parse_message(&mut self) -> Option<(String, Resp)> {
        let data = &self.buf[self.start..];
        let head_end = data.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = std::str::from_utf8(&data[..head_end]).expect("message head is UTF-8");
        let mut lines = head.split("\r\n");
        let start_line = lines.next().unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = lines
            .map(|line| {
                let (name, value) = line.split_once(':').expect("header line has a colon");
                (name.trim().to_string(), value.trim().to_string())
            })
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
            .map_or(0, |(_, v)| v.parse().expect("Content-Length is a number"));
        let body_start = head_end + 4;
        if data.len() < body_start + length {
            return None;
        }
        let body = data[body_start..body_start + length].to_vec();
        let raw = data[..body_start + length].to_vec();
        self.start += body_start + length;
        let message = Resp {
            status: 0,
            headers,
            body,
            raw,
        };
        Some((start_line, message))
    }
}

/// A request as a peer receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Req {
    pub method: String,
    pub message: Resp,
}

pub fn register_request(name: &str, ip: &str, port: u16) -> String {
    format!("REGISTER / HTTP/1.1\r\nName: {name}\r\nIP: {ip}\r\nPort: {port}\r\n\r\n")
}

/// Asserts a contract error: the status, a plain-text one-line reason.
#[track_caller]
pub fn assert_error(resp: &Resp, status: u16) {
    assert_eq!(resp.status, status, "{resp:?}");
    assert_eq!(
        resp.header("Content-Type"),
        Some("text/plain; charset=utf-8"),
        "{resp:?}"
    );
    let reason = String::from_utf8_lossy(&resp.body);
    assert!(
        !reason.trim().is_empty() && !reason.trim().contains('\n'),
        "{resp:?}"
    );
}

#[track_caller]
pub fn assert_ok_empty(resp: &Resp) {
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("Content-Length"), Some("0"), "{resp:?}");
    assert_eq!(resp.contact(), None, "{resp:?}");
}

#[track_caller]
pub fn assert_ok_contact(resp: &Resp, name: &str, ip: &str, port: u16) {
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("Content-Length"), Some("0"), "{resp:?}");
    assert_eq!(
        resp.contact(),
        Some((name.to_string(), ip.to_string(), port.to_string())),
        "{resp:?}"
    );
}

// ---------------------------------------------------------------- section 3 and the transport

pub fn listens_on_port_zero_and_reports_the_bound_address<T: Transport>() {
    let server = TestServer::start::<T>();
    assert!(server.addr.ip().is_loopback());
    assert_ne!(server.addr.port(), 0, "the bound port, not the asked-for 0");
    let mut alice = server.client();
    assert_ok_contact(
        &alice.register("alice", "127.0.0.1", 9001),
        "alice",
        "127.0.0.1",
        9001,
    );
    server.stop().expect("clean shutdown");
}

pub fn listen_failure_ends_the_run_with_the_os_error<T: Transport>() {
    let taken = std::net::TcpListener::bind(loopback_v4()).expect("bind a port to occupy");
    let addr = taken.local_addr().expect("its address");
    let error = match TestServer::try_start::<T>(config_on(addr)) {
        Ok(_) => panic!("listening on a taken port succeeded"),
        Err(error) => error,
    };
    assert!(error.contains(&addr.to_string()), "{error}");
}

pub fn register_answers_200_echoing_the_stored_contact<T: Transport>() {
    let server = TestServer::start::<T>();
    let mut alice = server.client();
    // Lower-case names and extra whitespace are accepted; the answer is canonical.
    let resp =
        alice.request("REGISTER / HTTP/1.1\r\nname:  alice \r\nip: ::1\r\nPORT: 9001\r\n\r\n");
    assert_ok_contact(&resp, "alice", "::1", 9001);
    server.stop().expect("clean shutdown");
}

pub fn register_with_a_missing_or_bad_header_is_400_and_keeps_the_connection<T: Transport>() {
    let server = TestServer::start::<T>();
    let mut alice = server.client();
    let missing_port = alice.request("REGISTER / HTTP/1.1\r\nName: alice\r\nIP: 127.0.0.1\r\n\r\n");
    assert_error(&missing_port, 400);
    assert!(String::from_utf8_lossy(&missing_port.body).contains("Port"));
    assert_error(&alice.register("al ice", "127.0.0.1", 9001), 400);
    assert_error(&alice.register("alice", "localhost", 9001), 400);
    assert_error(&alice.register("alice", "127.0.0.1", 0), 400);
    assert_error(&alice.register(&"a".repeat(33), "127.0.0.1", 9001), 400);
    // Same connection, now correct.
    assert_ok_contact(
        &alice.register("alice", "127.0.0.1", 9001),
        "alice",
        "127.0.0.1",
        9001,
    );
    server.stop().expect("clean shutdown");
}

pub fn register_with_a_name_held_by_another_live_connection_is_409<T: Transport>() {
    let server = TestServer::start::<T>();
    let mut first = server.client();
    let mut second = server.client();
    assert_ok_contact(
        &first.register("alice", "127.0.0.1", 9001),
        "alice",
        "127.0.0.1",
        9001,
    );
    assert_error(&second.register("alice", "127.0.0.1", 9002), 409);
    // The holder's connection closes: the name is free again, on the same second connection.
    drop(first);
    server.wait_unregistered("alice");
    assert_ok_contact(
        &second.register("alice", "127.0.0.1", 9002),
        "alice",
        "127.0.0.1",
        9002,
    );
    server.stop().expect("clean shutdown");
}

pub fn registering_again_replaces_the_registration<T: Transport>() {
    let server = TestServer::start::<T>();
    let mut alice = server.client();
    assert_ok_contact(
        &alice.register("alice", "127.0.0.1", 9001),
        "alice",
        "127.0.0.1",
        9001,
    );
    assert_ok_contact(
        &alice.register("alicia", "127.0.0.1", 9005),
        "alicia",
        "127.0.0.1",
        9005,
    );
    let mut other = server.client();
    assert_error(&other.register("alicia", "127.0.0.1", 9002), 409);
    assert_ok_contact(
        &other.register("alice", "127.0.0.1", 9002),
        "alice",
        "127.0.0.1",
        9002,
    );
    // The replacement is what a peer is handed.
    assert_ok_empty(&alice.bridge());
    assert_ok_contact(&other.bridge(), "alicia", "127.0.0.1", 9005);
    server.stop().expect("clean shutdown");
}

pub fn bridge_before_register_is_403<T: Transport>() {
    let server = TestServer::start::<T>();
    let mut bob = server.client();
    let resp = bob.bridge();
    assert_error(&resp, 403);
    assert_eq!(String::from_utf8_lossy(&resp.body).trim(), "register first");
    assert_ok_contact(
        &bob.register("bob", "127.0.0.1", 9002),
        "bob",
        "127.0.0.1",
        9002,
    );
    assert_ok_empty(&bob.bridge());
    server.stop().expect("clean shutdown");
}

pub fn bridge_with_another_clients_name_is_403<T: Transport>() {
    let server = TestServer::start::<T>();
    let mut bob = server.client();
    bob.register("bob", "127.0.0.1", 9002);
    assert_error(
        &bob.request("BRIDGE / HTTP/1.1\r\nName: alice\r\n\r\n"),
        403,
    );
    assert_ok_empty(&bob.request("BRIDGE / HTTP/1.1\r\nName: bob\r\n\r\n"));
    server.stop().expect("clean shutdown");
}

pub fn bridge_pairs_in_arrival_order_and_hands_each_waiter_once<T: Transport>() {
    let server = TestServer::start::<T>();
    let mut clients: Vec<Raw> = (0..4).map(|_| server.client()).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        client.register(&format!("c{i}"), "127.0.0.1", 9000 + i as u16);
    }
    assert_ok_empty(&clients[0].bridge()); // c0 waits
    assert_ok_contact(&clients[1].bridge(), "c0", "127.0.0.1", 9000);
    assert_ok_empty(&clients[2].bridge()); // c0 was handed out: c2 waits now
    assert_ok_contact(&clients[3].bridge(), "c2", "127.0.0.1", 9002);
    server.stop().expect("clean shutdown");
}

pub fn a_waiting_client_is_never_handed_itself<T: Transport>() {
    let server = TestServer::start::<T>();
    let mut alice = server.client();
    alice.register("alice", "127.0.0.1", 9001);
    assert_ok_empty(&alice.bridge());
    assert_ok_empty(&alice.bridge());
    let mut bob = server.client();
    bob.register("bob", "127.0.0.1", 9002);
    assert_ok_contact(&bob.bridge(), "alice", "127.0.0.1", 9001); // still waiting
    server.stop().expect("clean shutdown");
}

pub fn unregister_stops_waiting_and_frees_the_name<T: Transport>() {
    let server = TestServer::start::<T>();
    let mut alice = server.client();
    alice.register("alice", "127.0.0.1", 9001);
    assert_ok_empty(&alice.bridge());
    assert_ok_empty(&alice.request("UNREGISTER / HTTP/1.1\r\n\r\n"));
    let mut bob = server.client();
    bob.register("bob", "127.0.0.1", 9002);
    assert_ok_empty(&bob.bridge()); // alice is not handed out
    let mut other = server.client();
    assert_ok_contact(
        &other.register("alice", "127.0.0.1", 9003),
        "alice",
        "127.0.0.1",
        9003,
    );
    assert_error(&alice.bridge(), 403); // alice's connection is unregistered
    server.stop().expect("clean shutdown");
}

pub fn closing_the_server_connection_stops_waiting_and_frees_the_name<T: Transport>() {
    let server = TestServer::start::<T>();
    let mut alice = server.client();
    alice.register("alice", "127.0.0.1", 9001);
    assert_ok_empty(&alice.bridge());
    drop(alice);
    server.wait_unregistered("alice");
    let mut bob = server.client();
    bob.register("bob", "127.0.0.1", 9002);
    assert_ok_empty(&bob.bridge());
    let mut other = server.client();
    assert_ok_contact(
        &other.register("alice", "127.0.0.1", 9003),
        "alice",
        "127.0.0.1",
        9003,
    );
    server.stop().expect("clean shutdown");
}

/// A request and the end of stream that arrive together: the transport must read
/// past the request (which does not fill its buffer) to see the end, answer, and close.
pub fn a_request_followed_at_once_by_the_end_of_stream_is_answered_and_closed<T: Transport>() {
    let server = TestServer::start::<T>();
    let mut alice = server.client();
    alice.send(register_request("alice", "127.0.0.1", 9001).as_bytes());
    alice
        .stream
        .shutdown(std::net::Shutdown::Write)
        .expect("shut down the write side");
    assert_ok_contact(&alice.response(), "alice", "127.0.0.1", 9001);
    alice.expect_closed();
    server.wait_unregistered("alice");
    let mut again = server.client();
    assert_ok_contact(
        &again.register("alice", "127.0.0.1", 9002),
        "alice",
        "127.0.0.1",
        9002,
    );
    server.stop().expect("clean shutdown");
}

pub fn unknown_method_is_501_and_keeps_the_connection<T: Transport>() {
    let server = TestServer::start::<T>();
    let mut alice = server.client();
    assert_error(&alice.request("FROBNICATE / HTTP/1.1\r\n\r\n"), 501);
    assert_error(&alice.request("PATCH / HTTP/1.1\r\nHost: x\r\n\r\n"), 501);
    assert_ok_contact(
        &alice.register("alice", "127.0.0.1", 9001),
        "alice",
        "127.0.0.1",
        9001,
    );
    server.stop().expect("clean shutdown");
}

pub fn pipelined_requests_are_answered_in_order<T: Transport>() {
    let server = TestServer::start::<T>();
    let mut alice = server.client();
    let burst = [
        "BRIDGE / HTTP/1.1\r\n\r\n".to_string(),
        register_request("alice", "127.0.0.1", 9001),
        "BRIDGE / HTTP/1.1\r\n\r\n".to_string(),
        "FROBNICATE / HTTP/1.1\r\n\r\n".to_string(),
        "UNREGISTER / HTTP/1.1\r\n\r\n".to_string(),
        "BRIDGE / HTTP/1.1\r\n\r\n".to_string(),
    ]
    .concat();
    alice.send(burst.as_bytes());
    assert_error(&alice.response(), 403);
    assert_ok_contact(&alice.response(), "alice", "127.0.0.1", 9001);
    assert_ok_empty(&alice.response());
    assert_error(&alice.response(), 501);
    assert_ok_empty(&alice.response());
    assert_error(&alice.response(), 403);
    server.stop().expect("clean shutdown");
}

/// Sends `bytes`, expects one error response with `status`, then the close.
fn expect_framing_error<T: Transport>(bytes: &[u8], status: u16) {
    let server = TestServer::start::<T>();
    let mut client = server.client();
    client.send(bytes);
    assert_error(&client.response(), status);
    client.expect_closed();
    // Others are unaffected.
    let mut alice = server.client();
    assert_ok_contact(
        &alice.register("alice", "127.0.0.1", 9001),
        "alice",
        "127.0.0.1",
        9001,
    );
    server.stop().expect("clean shutdown");
}

pub fn oversized_head_is_431_and_closes<T: Transport>() {
    let padding = "x".repeat(9 * 1024);
    expect_framing_error::<T>(
        format!("REGISTER / HTTP/1.1\r\nX-Padding: {padding}\r\n\r\n").as_bytes(),
        431,
    );
}

pub fn oversized_body_is_413_and_closes<T: Transport>() {
    // The whole body is sent: the server must answer even though it never reads it all.
    let body = vec![b'x'; 200 * 1024];
    let mut request = format!(
        "REGISTER / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    expect_framing_error::<T>(&request, 413);
}

pub fn conflicting_content_length_is_400_and_closes<T: Transport>() {
    expect_framing_error::<T>(
        b"UNREGISTER / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
        400,
    );
}

pub fn transfer_encoding_is_501_and_closes<T: Transport>() {
    expect_framing_error::<T>(
        b"UNREGISTER / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        501,
    );
}

pub fn incomplete_head_gets_408_after_the_head_timeout<T: Transport>() {
    let head_timeout = Duration::from_millis(300);
    let server = TestServer::start_with::<T>(ServerConfig {
        head_timeout,
        ..config_on(loopback_v4())
    });
    let mut client = server.client();
    let started = Instant::now();
    client.send(b"REGISTER / HTTP/1.1\r\nName: al");
    assert_error(&client.response(), 408);
    assert!(
        started.elapsed() >= head_timeout,
        "answered before the deadline"
    );
    client.expect_closed();
    server.stop().expect("clean shutdown");
}

pub fn unregistered_connection_is_closed_after_the_register_timeout<T: Transport>() {
    let register_timeout = Duration::from_millis(300);
    let server = TestServer::start_with::<T>(ServerConfig {
        register_timeout,
        ..config_on(loopback_v4())
    });
    let mut idle = server.client();
    let mut registered = server.client();
    registered.register("alice", "127.0.0.1", 9001);
    let started = Instant::now();
    idle.expect_closed();
    assert!(started.elapsed() + Duration::from_millis(50) >= register_timeout);
    // The registered one is still served.
    assert_ok_empty(&registered.bridge());
    server.stop().expect("clean shutdown");
}

pub fn connection_over_the_limit_gets_503_and_is_closed<T: Transport>() {
    let server = TestServer::start_with::<T>(ServerConfig {
        max_connections: 1,
        ..config_on(loopback_v4())
    });
    let mut first = server.client();
    first.register("alice", "127.0.0.1", 9001);
    let mut second = server.client();
    assert_error(&second.response(), 503);
    second.expect_closed();
    assert_ok_empty(&first.bridge());
    server.stop().expect("clean shutdown");
}

pub fn thousand_clients_register_and_pair_concurrently<T: Transport>() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 250;
    let server = TestServer::start::<T>();
    let addr = server.addr;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(THREADS));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                let ids: Vec<usize> = (0..PER_THREAD).map(|i| t * PER_THREAD + i).collect();
                let mut clients: Vec<Raw> = ids.iter().map(|_| Raw::connect(addr)).collect();
                barrier.wait(); // all 1,000 connections are open at once
                for (client, id) in clients.iter_mut().zip(&ids) {
                    client.send(
                        register_request(&format!("c{id}"), "127.0.0.1", 10_000 + *id as u16)
                            .as_bytes(),
                    );
                }
                for (client, id) in clients.iter_mut().zip(&ids) {
                    assert_ok_contact(
                        &client.response(),
                        &format!("c{id}"),
                        "127.0.0.1",
                        10_000 + *id as u16,
                    );
                }
                barrier.wait(); // everyone is registered before anyone bridges
                for client in clients.iter_mut() {
                    client.send(b"BRIDGE / HTTP/1.1\r\n\r\n");
                }
                let answers: Vec<(usize, Option<WireContact>)> = clients
                    .iter_mut()
                    .zip(&ids)
                    .map(|(client, id)| {
                        let resp = client.response();
                        assert_eq!(resp.status, 200, "{resp:?}");
                        (*id, resp.contact())
                    })
                    .collect();
                barrier.wait(); // keep every connection open until all have their answer
                answers
            })
        })
        .collect();
    let answers: Vec<_> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("a client thread failed"))
        .collect();
    assert_eq!(answers.len(), THREADS * PER_THREAD);

    let waited: std::collections::HashSet<usize> = answers
        .iter()
        .filter(|(_, c)| c.is_none())
        .map(|(id, _)| *id)
        .collect();
    let mut handed = std::collections::HashSet::new();
    for (asker, contact) in &answers {
        let Some((name, ip, port)) = contact else {
            continue;
        };
        let waiter: usize = name.trim_start_matches('c').parse().expect("a c<N> name");
        assert_ne!(waiter, *asker, "a client was handed itself");
        assert_eq!(
            (ip.as_str(), port.as_str()),
            ("127.0.0.1", (10_000 + waiter).to_string().as_str())
        );
        assert!(
            waited.contains(&waiter),
            "c{waiter} was handed out but never waited"
        );
        assert!(handed.insert(waiter), "c{waiter} was handed out twice");
    }
    // Everyone who waited was handed out, except at most one still waiting.
    assert!(
        waited.len() - handed.len() <= 1,
        "{} waited, {} handed",
        waited.len(),
        handed.len()
    );
    server.stop().expect("clean shutdown");
}

pub fn a_reader_that_never_reads_does_not_stall_other_clients<T: Transport>() {
    slow_reader_scenario::<T>();
}

/// What became of a client that pipelined requests without reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowReaderOutcome {
    /// Its connection was paused and then served: every answer, in order, and it still works.
    Served,
    /// The transport dropped it once its backlog passed the transport's bound.
    Dropped,
}

/// A client floods requests and reads nothing until its writes block, while two
/// others must be served promptly. Then the slow one reads: whatever it gets is
/// its answers in order, either all of them or a prefix ended by a close.
pub fn slow_reader_scenario<T: Transport>() -> SlowReaderOutcome {
    let server = TestServer::start::<T>();
    // The slow client pipelines requests and reads nothing until its writes block:
    // every buffer between it and the server is then full.
    let mut slow = Raw::connect_with_small_receive_buffer(server.addr);
    slow.stream
        .set_write_timeout(Some(Duration::from_millis(500)))
        .expect("set write timeout");
    // Padding fills the kernel's buffers on the request side with fewer requests.
    let request = format!(
        "BRIDGE / HTTP/1.1\r\nX-Padding: {}\r\n\r\n",
        "p".repeat(1000)
    );
    let request = request.as_bytes();
    let burst = request.repeat(64);
    let started = Instant::now();
    let mut written = 0usize; // counted exactly: a `write` may take part of a request
    while let Ok(n) = slow.stream.write(&burst[written % request.len()..]) {
        written += n;
        // Generous: on a loaded 2-core machine filling every buffer on the way
        // takes seconds; the bound only has to catch a server that never pauses.
        assert!(
            started.elapsed() < 6 * WAIT,
            "the server never stopped reading the slow client"
        );
    }
    let requests = written.div_ceil(request.len());
    assert!(
        requests > 1000,
        "writes blocked after only {requests} requests"
    );

    // Meanwhile everyone else is served promptly.
    let mut alice = server.client();
    let mut bob = server.client();
    for round in 0..20 {
        let served = Instant::now();
        assert_ok_contact(
            &alice.register("alice", "127.0.0.1", 9001),
            "alice",
            "127.0.0.1",
            9001,
        );
        assert_ok_empty(&alice.bridge());
        bob.register("bob", "127.0.0.1", 9002);
        assert_ok_contact(&bob.bridge(), "alice", "127.0.0.1", 9001);
        assert!(
            served.elapsed() < Duration::from_secs(2),
            "round {round} was slow"
        );
    }

    // Whatever reached the slow client is its answers, in order (byte-compared with
    // the first: parsing 10^5 answers is slow in debug builds).
    let first = slow.response();
    assert_error(&first, 403);
    let rest = written / request.len() - 1;
    let received = slow.read_up_to(first.raw.len() * rest);
    assert!(
        first.raw.repeat(rest).starts_with(&received),
        "answers to a slow reader came out different or out of order"
    );
    let outcome = if received.len() < first.raw.len() * rest {
        SlowReaderOutcome::Dropped
    } else {
        let partial = written % request.len();
        if partial > 0 {
            slow.send(&request[partial..]);
            assert_error(&slow.response(), 403);
        }
        let carol = slow.register("carol", "127.0.0.1", 9003);
        assert_ok_contact(&carol, "carol", "127.0.0.1", 9003);
        SlowReaderOutcome::Served
    };
    server.stop().expect("clean shutdown");
    outcome
}

pub fn ipv6_loopback_registers_and_pairs<T: Transport>() {
    let listen = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 0);
    if std::net::TcpListener::bind(listen).is_err() {
        eprintln!("skipped: [::1] cannot be bound on this machine");
        return;
    }
    let server = TestServer::start_with::<T>(config_on(listen));
    assert!(
        server.addr.is_ipv6() && server.addr.port() != 0,
        "{}",
        server.addr
    );
    let mut alice = server.client();
    let mut bob = server.client();
    assert_ok_contact(&alice.register("alice", "::1", 9001), "alice", "::1", 9001);
    assert_ok_contact(&bob.register("bob", "::1", 9002), "bob", "::1", 9002);
    assert_ok_empty(&alice.bridge());
    assert_ok_contact(&bob.bridge(), "alice", "::1", 9001);
    server.stop().expect("clean shutdown");
}

pub fn shutdown_closes_every_socket<T: Transport>() {
    let server = TestServer::start::<T>();
    let addr = server.addr;
    let mut idle = server.client();
    let mut registered = server.client();
    registered.register("alice", "127.0.0.1", 9001);
    let mut waiting = server.client();
    waiting.register("bob", "127.0.0.1", 9002);
    assert_ok_empty(&waiting.bridge());
    let mut mid_request = server.client();
    mid_request.send(b"REGISTER / HTTP/1.1\r\nName: ca");
    for _ in 0..4 {
        server.wait_for("Accepted", |e| matches!(e, ServerEvent::Accepted { .. }));
    }

    server.stop().expect("clean shutdown");
    for client in [&mut idle, &mut registered, &mut waiting, &mut mid_request] {
        client.expect_closed();
    }
    let refused = TcpStream::connect_timeout(&addr, Duration::from_secs(2));
    assert!(
        refused.is_err(),
        "the listener is still open after shutdown"
    );
}

// ---------------------------------------------------------------- client harness

/// A chat client running on the transport under test.
pub struct TestClient {
    pub name: String,
    /// Where its chat listener is bound (as reported; may be a wildcard address).
    pub listening: SocketAddr,
    /// The server it talks to.
    pub server: SocketAddr,
    pub events: Receiver<ClientEvent>,
    running: Option<Running<ClientInput>>,
}

impl TestClient {
    /// Starts a client for `server` and waits until its chat port is bound.
    pub fn start<T: Transport>(name: &str, server: SocketAddr) -> TestClient {
        let config = ClientConfig::new(name.parse().expect("a valid name"), server);
        TestClient::start_with::<T>(config)
    }

    pub fn start_with<T: Transport>(config: ClientConfig) -> TestClient {
        let name = config.name.as_str().to_string();
        let server = config.server;
        let (events_tx, events) = mpsc::channel();
        let running = T::spawn(Client::new(config, Instant::now()), events_tx);
        let mut client = TestClient {
            name,
            listening: loopback_v4(),
            server,
            events,
            running: Some(running),
        };
        let listening = client.wait_for("Listening", |e| matches!(e, ClientEvent::Listening(_)));
        let ClientEvent::Listening(addr) = listening else {
            unreachable!()
        };
        client.listening = addr;
        client
    }

    /// The chat port on loopback, reachable whatever address the listener took.
    pub fn chat_addr(&self) -> SocketAddr {
        let ip = match self.listening.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        };
        SocketAddr::new(ip, self.listening.port())
    }

    /// Types `line` (without its line end).
    pub fn line(&self, line: &str) {
        self.input(ClientInput::Line(line.to_string()));
    }

    pub fn input(&self, input: ClientInput) {
        let running = self.running.as_ref().expect("the client was finished");
        assert!(
            running.send(input),
            "{}'s loop has already ended",
            self.name
        );
    }

    /// Waits (bounded) for an event that `wanted` accepts, skipping others; an
    /// `Error` that is not wanted fails the test.
    pub fn wait_for(&self, what: &str, wanted: impl Fn(&ClientEvent) -> bool) -> ClientEvent {
        let deadline = Instant::now() + WAIT;
        loop {
            match self
                .events
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(event) if wanted(&event) => return event,
                Ok(ClientEvent::Error(e)) => {
                    panic!("{}: error while waiting for {what}: {e}", self.name)
                }
                Ok(_) => {}
                Err(e) => panic!("{}: no event {what}: {e}", self.name),
            }
        }
    }

    pub fn wait_mode(&self, mode: Mode) {
        self.wait_for(
            mode.as_str(),
            |e| matches!(e, ClientEvent::ModeChanged { mode: m, .. } if *m == mode),
        );
    }

    /// `/register`, then `/bridge`; returns once in `expected` (WAIT or READY MODE).
    pub fn register_and_bridge(&self, expected: Mode) {
        self.line("/register");
        self.wait_mode(Mode::Registered);
        self.line("/bridge");
        self.wait_mode(expected);
    }

    /// Waits (bounded) for the loop to end and returns its result.
    pub fn finish(mut self) -> Result<(), String> {
        self.running.take().expect("finished twice").join()
    }
}

impl Drop for TestClient {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.send(ClientInput::Interrupt);
        }
    }
}

/// A hand-driven version 1 chat initiator: registers `name`, is handed `waiter`
/// (who waits for anyone) by the server, CHATs it and returns the open chat
/// connection. A v2 waiter lets in only the peer the server introduced.
pub fn raw_chat_with(waiter: &TestClient, name: &str) -> Raw {
    let mut asker = Raw::connect(waiter.server);
    assert_eq!(asker.register(name, "127.0.0.1", 9).status, 200);
    let handed = asker.bridge();
    assert_eq!(
        handed.header("Name"),
        Some(waiter.name.as_str()),
        "{handed:?}"
    );
    raw_chat_after_bridge(waiter, name)
}

/// CHATs `waiter` as `name`, who has already been handed `waiter` by the server.
pub fn raw_chat_after_bridge(waiter: &TestClient, name: &str) -> Raw {
    let mut peer = Raw::connect(waiter.chat_addr());
    let answer = peer.request(&format!(
        "CHAT / HTTP/1.1\r\nName: {name}\r\nIP: 127.0.0.1\r\nPort: 9\r\n\r\n"
    ));
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.header("Name"),
        Some(waiter.name.as_str()),
        "{answer:?}"
    );
    assert_eq!(
        answer.header("Port"),
        Some(waiter.listening.port().to_string().as_str())
    );
    waiter.wait_mode(Mode::Read);
    peer
}

pub fn message_request(text: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "MESSAGE / HTTP/1.1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
        text.len()
    )
    .into_bytes();
    request.extend_from_slice(text);
    request
}

fn wait_message(client: &TestClient, from: &str) -> String {
    let event = client.wait_for(&format!("a message from {from}"), |e| {
        matches!(e, ClientEvent::MessageReceived { .. })
    });
    let ClientEvent::MessageReceived { from: sender, text } = event else {
        unreachable!()
    };
    assert_eq!(sender.as_str(), from);
    text
}

// ---------------------------------------------------------------- section 4, client to client

pub fn two_clients_chat_200_turns_byte_exact<T: Transport>() {
    let server = TestServer::start::<T>();
    let alice = TestClient::start::<T>("alice", server.addr);
    let bob = TestClient::start::<T>("bob", server.addr);
    alice.register_and_bridge(Mode::Wait);
    bob.register_and_bridge(Mode::Ready);
    bob.line("/chat");
    bob.wait_mode(Mode::Write);
    alice.wait_mode(Mode::Read);

    // Turns alternate bob, alice, bob, ...; texts vary in script, length and spacing.
    let samples = [
        "hi",
        "  leading and trailing  ",
        "héllo wörld ✓ 日本語 🎉",
        "tab\there",
        "x",
    ];
    for turn in 0..200usize {
        let (from, to) = if turn % 2 == 0 {
            (&bob, &alice)
        } else {
            (&alice, &bob)
        };
        let mut text = format!("{turn}: {}", samples[turn % samples.len()]);
        if turn % 50 == 7 {
            text.push_str(&"long ".repeat(10_000)); // 50 KB, under the 64 KiB body limit
        }
        from.line(&text);
        assert_eq!(wait_message(to, &from.name), text, "turn {turn}");
        to.wait_mode(Mode::Write);
    }

    bob.line("/quit");
    alice.wait_for(
        "PeerLeft",
        |e| matches!(e, ClientEvent::PeerLeft { peer } if peer.as_str() == "bob"),
    );
    alice.wait_mode(Mode::Registered);
    bob.finish().expect("bob exits cleanly");
    alice.line("/quit");
    alice.finish().expect("alice exits cleanly");
    server.stop().expect("clean shutdown");
}

pub fn a_peer_that_resets_mid_chat_is_reported_lost<T: Transport>() {
    let server = TestServer::start::<T>();
    let alice = TestClient::start::<T>("alice", server.addr);
    alice.register_and_bridge(Mode::Wait);
    let mut peer = raw_chat_with(&alice, "mallory");
    peer.send(&message_request(b"ping"));
    assert_eq!(wait_message(&alice, "mallory"), "ping");
    alice.wait_mode(Mode::Write);
    alice.line(&"pong ".repeat(1000));
    // Read a little of the answer and drop the rest unread: the kernel sends a reset.
    let mut first = [0u8; 8];
    peer.stream
        .read_exact(&mut first)
        .expect("alice's message starts");
    drop(peer);
    alice.wait_for(
        "PeerLost",
        |e| matches!(e, ClientEvent::PeerLost { peer, .. } if peer.as_str() == "mallory"),
    );
    alice.wait_mode(Mode::Registered);
    // Still usable: the server connection survived.
    alice.line("/bridge");
    alice.wait_mode(Mode::Wait);
    alice.line("/quit");
    alice.finish().expect("alice exits cleanly");
    server.stop().expect("clean shutdown");
}

pub fn chat_to_a_client_that_is_not_waiting_is_409_and_closed<T: Transport>() {
    let server = TestServer::start::<T>();
    let alice = TestClient::start::<T>("alice", server.addr);
    alice.line("/register");
    alice.wait_mode(Mode::Registered);
    let mut peer = Raw::connect(alice.chat_addr());
    let answer =
        peer.request("CHAT / HTTP/1.1\r\nName: mallory\r\nIP: 127.0.0.1\r\nPort: 9\r\n\r\n");
    assert_error(&answer, 409);
    peer.expect_closed();
    alice.line("/quit");
    alice.finish().expect("alice exits cleanly");
    server.stop().expect("clean shutdown");
}

pub fn peer_messages_arrive_exactly_and_invalid_utf8_shows_as_replacement<T: Transport>() {
    let server = TestServer::start::<T>();
    let alice = TestClient::start::<T>("alice", server.addr);
    alice.register_and_bridge(Mode::Wait);
    let mut peer = raw_chat_with(&alice, "mallory");
    peer.send(&message_request(b"two\nlines\r\nand bad \xff bytes"));
    assert_eq!(
        wait_message(&alice, "mallory"),
        "two\nlines\r\nand bad \u{FFFD} bytes"
    );
    alice.line("reply");
    let reply = peer.incoming_request();
    assert_eq!(reply.method, "MESSAGE");
    assert_eq!(
        reply.message.header("Content-Type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(reply.message.body, b"reply");
    alice.line("/quit");
    assert_eq!(peer.incoming_request().method, "QUIT");
    peer.expect_closed();
    alice.finish().expect("alice exits cleanly");
    server.stop().expect("clean shutdown");
}

pub fn a_message_typed_out_of_turn_is_held_until_the_turn_comes<T: Transport>() {
    let server = TestServer::start::<T>();
    let alice = TestClient::start::<T>("alice", server.addr);
    alice.register_and_bridge(Mode::Wait);
    let mut peer = raw_chat_with(&alice, "mallory");
    alice.line("early bird"); // READ MODE: not alice's turn
    alice.wait_for("MessageHeld", |e| {
        matches!(e, ClientEvent::MessageHeld { .. })
    });
    peer.send(&message_request(b"go ahead"));
    assert_eq!(wait_message(&alice, "mallory"), "go ahead");
    let held = peer.incoming_request();
    assert_eq!(
        (held.method.as_str(), held.message.body.as_slice()),
        ("MESSAGE", &b"early bird"[..])
    );
    alice.wait_mode(Mode::Read);
    alice.line("/quit");
    alice.finish().expect("alice exits cleanly");
    server.stop().expect("clean shutdown");
}

pub fn a_message_out_of_turn_from_the_peer_ends_the_chat<T: Transport>() {
    let server = TestServer::start::<T>();
    let alice = TestClient::start::<T>("alice", server.addr);
    alice.register_and_bridge(Mode::Wait);
    let mut peer = raw_chat_with(&alice, "mallory");
    let mut twice = message_request(b"one");
    twice.extend_from_slice(&message_request(b"two")); // the second is out of turn
    peer.send(&twice);
    alice.wait_for("PeerLost", |e| matches!(e, ClientEvent::PeerLost { .. }));
    alice.wait_mode(Mode::Registered);
    peer.expect_closed();
    alice.line("/quit");
    alice.finish().expect("alice exits cleanly");
    server.stop().expect("clean shutdown");
}

pub fn quit_from_the_peer_at_any_turn_ends_the_chat<T: Transport>() {
    let server = TestServer::start::<T>();
    let alice = TestClient::start::<T>("alice", server.addr);
    alice.register_and_bridge(Mode::Wait);
    let mut peer = raw_chat_with(&alice, "mallory");
    peer.send(&message_request(b"hi"));
    alice.wait_mode(Mode::Write);
    peer.send(b"QUIT / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"); // alice's turn, not ours
    alice.wait_for("PeerLeft", |e| matches!(e, ClientEvent::PeerLeft { .. }));
    alice.wait_mode(Mode::Registered);
    alice.line("/quit");
    alice.finish().expect("alice exits cleanly");
    server.stop().expect("clean shutdown");
}

pub fn quit_in_read_mode_sends_quit_and_exits<T: Transport>() {
    let server = TestServer::start::<T>();
    let alice = TestClient::start::<T>("alice", server.addr);
    alice.register_and_bridge(Mode::Wait);
    let mut peer = raw_chat_with(&alice, "mallory"); // alice is in READ MODE
    alice.line("/quit");
    assert_eq!(peer.incoming_request().method, "QUIT");
    peer.expect_closed();
    alice.finish().expect("alice exits cleanly");
    server.wait_unregistered("alice");
    server.stop().expect("clean shutdown");
}

pub fn interrupt_while_waiting_exits_and_frees_the_name<T: Transport>() {
    let server = TestServer::start::<T>();
    let alice = TestClient::start::<T>("alice", server.addr);
    alice.register_and_bridge(Mode::Wait);
    alice.input(ClientInput::Interrupt);
    alice.finish().expect("alice exits cleanly");
    server.wait_unregistered("alice");
    let mut bob = server.client();
    bob.register("bob", "127.0.0.1", 9002);
    assert_ok_empty(&bob.bridge()); // alice no longer waits
    server.stop().expect("clean shutdown");
}

pub fn an_unreachable_server_ends_the_client_with_an_error<T: Transport>() {
    // A port that was just free: nothing listens there.
    let addr = std::net::TcpListener::bind(loopback_v4())
        .and_then(|l| l.local_addr())
        .expect("find a free port");
    let (events_tx, _events) = mpsc::channel();
    let config = ClientConfig::new("alice".parse().expect("a valid name"), addr);
    let running = T::spawn(Client::new(config, Instant::now()), events_tx);
    let error = running.join().expect_err("the client must fail");
    assert!(!error.is_empty());
}
