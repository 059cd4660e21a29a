//! Black-box checks of the `bridgechat` binary against shared/protocol.md that
//! cli.rs and the transport/hardening suites do not make: the exact bytes the
//! client writes (section 7), captured by a scripted server and peer; the
//! registered contact (`--ip`, `--port`, the server connection's local
//! address); Ctrl+C from the modes cli.rs does not try; the binary's default
//! limits and `--register-timeout`; the defaults its `--help` promises.
//!
//! Every wait is for an expected line, message or exit, bounded in time; every
//! child is killed when its `Proc` drops.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self};
use std::thread;
use std::time::{Duration, Instant};

mod common;
use common::{on_each_transport, read_message, server, Proc, Stream, WAIT};

/// Accepts one connection on `listener`, within `WAIT`.
fn accept(listener: &TcpListener) -> TcpStream {
    let listener = listener.try_clone().expect("clone listener");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let accepted = listener.accept();
        // Closed before the caller hears: a caller that drops its listener next
        // must find the port closed, not held open by this clone.
        drop(listener);
        let _ = tx.send(accepted);
    });
    let (stream, _) = rx
        .recv_timeout(WAIT)
        .expect("no connection within the wait")
        .expect("accept");
    stream.set_read_timeout(Some(WAIT)).expect("read timeout");
    stream
}

fn assert_bytes(got: &[u8], want: &str) {
    assert_eq!(
        String::from_utf8_lossy(got),
        want,
        "the bytes on the wire differ from the contract"
    );
}

/// Nothing arrives on `stream` for `quiet`: a bounded negative check.
fn assert_nothing_for(stream: &mut TcpStream, quiet: Duration, why: &str) {
    stream.set_read_timeout(Some(quiet)).expect("read timeout");
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("{why}: got {other:?} ({:?})", byte[0] as char),
    }
    stream.set_read_timeout(Some(WAIT)).expect("read timeout");
}

/// Reads until the peer closes; returns what came before.
fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    match stream.read_to_end(&mut all) {
        Ok(_) => all,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => all,
        Err(e) => panic!("the connection was not closed: {e} (read {all:?})"),
    }
}

fn ok_contact(name: &str, ip: &str, port: u16) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nName: {name}\r\nIP: {ip}\r\nPort: {port}\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The bridgechat client asks for protocol version 2 on REGISTER; a v1 server
/// ignores the header and the rest of the exchange is version 1's, byte for byte.
const OPT_IN: &str = "Bridgechat: 2\r\n";
const OK_EMPTY: &str = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
const BRIDGE: &str = "BRIDGE / HTTP/1.1\r\n\r\n";
const QUIT: &str = "QUIT / HTTP/1.1\r\nContent-Length: 0\r\n\r\n";

fn message(text: &str) -> String {
    format!(
        "MESSAGE / HTTP/1.1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{text}",
        text.len()
    )
}

fn write(stream: &mut TcpStream, bytes: &str) {
    stream.write_all(bytes.as_bytes()).expect("write");
}

/// Section 7 from alice's side: a scripted server and a scripted bob capture
/// what alice writes. Also: the IP registered is the local address of the
/// server connection, `--port 0` registers the port bound, a request in flight
/// holds back the next input line, and a 4xx answer is not fatal.
fn waiting_client_writes_the_section_7_bytes(transport: &str) {
    let fake = TcpListener::bind("127.0.0.1:0").expect("bind");
    let server = fake.local_addr().expect("addr").to_string();
    let (mut alice, port) = Proc::client("alice", &server, transport, &["--port", "0"]);
    let mut to_alice = accept(&fake);
    let local_ip = to_alice.peer_addr().expect("peer").ip().to_string();

    // Typed together: /bridge waits until REGISTER has its answer.
    alice.send("/register");
    alice.send("/bridge");
    let register = read_message(&mut to_alice);
    assert_bytes(
        &register,
        &format!(
            "REGISTER / HTTP/1.1\r\nName: alice\r\nIP: {local_ip}\r\nPort: {port}\r\n{OPT_IN}\r\n"
        ),
    );
    assert_nothing_for(
        &mut to_alice,
        Duration::from_millis(300),
        "BRIDGE was sent while REGISTER was in flight",
    );
    write(&mut to_alice, &ok_contact("alice", &local_ip, port));
    alice.expect("REGISTERED");

    // A 4xx is not fatal: alice stays REGISTERED and may ask again.
    assert_bytes(&read_message(&mut to_alice), BRIDGE);
    write(
        &mut to_alice,
        "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 14\r\n\r\nregister first",
    );
    alice.expect_err("403");
    assert!(alice.is_running(), "a 403 ended the client");
    alice.send("/bridge");
    assert_bytes(&read_message(&mut to_alice), BRIDGE);
    write(&mut to_alice, OK_EMPTY);
    alice.expect("WAIT MODE");

    let mut bob = TcpStream::connect(("127.0.0.1", port)).expect("connect to alice");
    bob.set_read_timeout(Some(WAIT)).expect("read timeout");
    write(
        &mut bob,
        "CHAT / HTTP/1.1\r\nName: bob\r\nIP: 127.0.0.1\r\nPort: 9002\r\n\r\n",
    );
    assert_bytes(
        &read_message(&mut bob),
        &ok_contact("alice", &local_ip, port),
    );
    alice.expect("READ MODE");
    write(&mut bob, &message("hi"));
    alice.expect_exact("bob: hi");
    alice.expect("WRITE MODE");
    alice.send("hello");
    assert_bytes(&read_message(&mut bob), &message("hello"));
    alice.expect("READ MODE");

    // /quit in READ MODE: QUIT, then the chat connection closes.
    alice.send("/quit");
    assert_bytes(&read_message(&mut bob), QUIT);
    assert_eq!(read_to_close(&mut bob), b"");
    alice.exit_within(WAIT);
}

/// Section 7 from bob's side, with `--ip` and a fixed `--port`: the contact he
/// registers and sends in CHAT is the one given; end of input sends QUIT.
fn initiating_client_writes_the_section_7_bytes(transport: &str) {
    let fake = TcpListener::bind("127.0.0.1:0").expect("bind");
    let server = fake.local_addr().expect("addr").to_string();
    let peer = TcpListener::bind("127.0.0.1:0").expect("bind");
    let alice_port = peer.local_addr().expect("addr").port();
    let fixed = TcpListener::bind("0.0.0.0:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let fixed_text = fixed.to_string();
    let ip = "192.0.2.7";
    let (mut bob, port) = Proc::client(
        "bob",
        &server,
        transport,
        &["--ip", ip, "--port", &fixed_text],
    );
    assert_eq!(port, fixed, "--port {fixed} should be the port bound");
    let mut to_bob = accept(&fake);

    bob.send("/register");
    assert_bytes(
        &read_message(&mut to_bob),
        &format!("REGISTER / HTTP/1.1\r\nName: bob\r\nIP: {ip}\r\nPort: {port}\r\n{OPT_IN}\r\n"),
    );
    write(&mut to_bob, &ok_contact("bob", ip, port));
    bob.expect("REGISTERED");
    bob.send("/bridge");
    assert_bytes(&read_message(&mut to_bob), BRIDGE);
    write(&mut to_bob, &ok_contact("alice", "127.0.0.1", alice_port));
    let ready = bob.expect("READY MODE");
    assert!(ready.contains("alice"), "{ready}");

    bob.send("/chat");
    let mut alice = accept(&peer);
    assert_bytes(
        &read_message(&mut alice),
        &format!("CHAT / HTTP/1.1\r\nName: bob\r\nIP: {ip}\r\nPort: {port}\r\n\r\n"),
    );
    write(&mut alice, &ok_contact("alice", "127.0.0.1", alice_port));
    bob.expect("WRITE MODE");
    bob.send("hi");
    assert_bytes(&read_message(&mut alice), &message("hi"));
    bob.expect("READ MODE");
    write(&mut alice, &message("hello"));
    bob.expect_exact("alice: hello");
    bob.expect("WRITE MODE");

    // End of input acts as /quit: QUIT, the chat connection closes, bob exits.
    bob.close_stdin();
    assert_bytes(&read_message(&mut alice), QUIT);
    assert_eq!(read_to_close(&mut alice), b"");
    bob.exit_within(WAIT);
}

/// Ctrl+C "from any mode": cli.rs tries WAIT and READ MODE; these are the rest.
fn ctrl_c_leaves_from_every_other_mode(transport: &str) {
    let (_server, addr) = server(transport, &[]);

    let (mut fresh, _) = Proc::client("fresh", &addr, transport, &[]);
    fresh.interrupt();
    fresh.exit_within(WAIT);

    let (mut registered, _) = Proc::client("registered", &addr, transport, &[]);
    registered.send("/register");
    registered.expect("REGISTERED");
    registered.interrupt();
    registered.exit_within(WAIT);

    let (mut alice, _) = Proc::client("alice", &addr, transport, &[]);
    alice.send("/register");
    alice.expect("REGISTERED");
    alice.send("/bridge");
    alice.expect("WAIT MODE");
    let (mut ready, _) = Proc::client("ready", &addr, transport, &[]);
    ready.send("/register");
    ready.expect("REGISTERED");
    ready.send("/bridge");
    ready.expect("READY MODE");
    ready.interrupt();
    ready.exit_within(WAIT);

    // alice was handed out once and is not waiting any more: bridge her again.
    alice.send("/quit");
    alice.exit_within(WAIT);
    let (mut alice, _) = Proc::client("alice2", &addr, transport, &[]);
    alice.send("/register");
    alice.expect("REGISTERED");
    alice.send("/bridge");
    alice.expect("WAIT MODE");
    let (mut writer, _) = Proc::client("writer", &addr, transport, &[]);
    writer.send("/register");
    writer.expect("REGISTERED");
    writer.send("/bridge");
    writer.expect("READY MODE");
    writer.send("/chat");
    writer.expect("WRITE MODE");
    alice.expect("READ MODE");
    writer.interrupt();
    writer.exit_within(WAIT);
    alice.expect("writer left");
    alice.expect("REGISTERED");
}

/// "Ctrl+C does the same at once": also while a request waits for its answer.
fn ctrl_c_with_a_request_in_flight_exits_at_once(transport: &str) {
    let fake = TcpListener::bind("127.0.0.1:0").expect("bind");
    let server = fake.local_addr().expect("addr").to_string();
    let (mut alice, _) = Proc::client("alice", &server, transport, &[]);
    let mut to_alice = accept(&fake);
    alice.send("/register");
    read_message(&mut to_alice); // and never answer
    let started = Instant::now();
    alice.interrupt();
    alice.exit_within(WAIT);
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(500),
        "Ctrl+C with REGISTER in flight took {took:?} to exit"
    );
}

/// The binary's defaults are the contract's limits: 8 KiB head, 32 headers,
/// 64 KiB body; one past each is 431/413 and close.
fn the_server_binary_enforces_the_default_limits(transport: &str) {
    let (_server, addr) = server(transport, &[]);
    let head_of = |len: usize| {
        let start = "BRIDGE / HTTP/1.1\r\nX: ";
        format!("{start}{}\r\n\r\n", "a".repeat(len - start.len() - 4))
    };
    let headers = |count: usize| {
        let lines: String = (0..count).map(|i| format!("X-{i}: y\r\n")).collect();
        format!("BRIDGE / HTTP/1.1\r\n{lines}\r\n")
    };
    let body = |len: usize| {
        format!(
            "BRIDGE / HTTP/1.1\r\nContent-Length: {len}\r\n\r\n{}",
            "b".repeat(len)
        )
    };
    for (within, over, status) in [
        (head_of(8192), head_of(8193), "431"),
        (headers(32), headers(33), "431"),
        (body(65536), body(65537), "413"),
    ] {
        let mut conn = TcpStream::connect(&addr).expect("connect");
        conn.set_read_timeout(Some(WAIT)).expect("read timeout");
        write(&mut conn, &within);
        let answer = String::from_utf8_lossy(&read_message(&mut conn)).into_owned();
        assert!(answer.starts_with("HTTP/1.1 403 "), "{answer}");
        write(&mut conn, &over);
        let answer = String::from_utf8_lossy(&read_message(&mut conn)).into_owned();
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{answer}"
        );
        assert!(
            answer.contains("\r\nContent-Type: text/plain; charset=utf-8\r\n"),
            "{answer}"
        );
        assert_eq!(read_to_close(&mut conn), b"", "after {status}");
    }
}

/// `--register-timeout`: a connection that has not registered is closed without
/// an answer; one that registered stays open.
fn register_timeout_closes_only_unregistered_connections(transport: &str) {
    let (_server, addr) = server(transport, &["--register-timeout", "0.5"]);
    let mut registered = TcpStream::connect(&addr).expect("connect");
    registered
        .set_read_timeout(Some(WAIT))
        .expect("read timeout");
    let mut silent = TcpStream::connect(&addr).expect("connect");
    silent.set_read_timeout(Some(WAIT)).expect("read timeout");
    write(
        &mut registered,
        "REGISTER / HTTP/1.1\r\nName: early\r\nIP: 127.0.0.1\r\nPort: 9001\r\n\r\n",
    );
    assert_bytes(
        &read_message(&mut registered),
        &ok_contact("early", "127.0.0.1", 9001),
    );
    let started = Instant::now();
    assert_eq!(read_to_close(&mut silent), b"", "no answer, just a close");
    assert!(started.elapsed() < Duration::from_secs(5));
    write(&mut registered, BRIDGE);
    assert_bytes(&read_message(&mut registered), OK_EMPTY);
}

/// Over an IPv6 server connection the registered IP is `::1`, and the chat port
/// is reachable there.
fn an_ipv6_server_connection_registers_a_reachable_ipv6_contact(transport: &str) {
    let Ok(fake) = TcpListener::bind("[::1]:0") else {
        eprintln!("skipped: no IPv6 loopback");
        return;
    };
    let server = fake.local_addr().expect("addr").to_string();
    let (mut alice, port) = Proc::client("alice", &server, transport, &[]);
    let mut to_alice = accept(&fake);
    alice.send("/register");
    assert_bytes(
        &read_message(&mut to_alice),
        &format!("REGISTER / HTTP/1.1\r\nName: alice\r\nIP: ::1\r\nPort: {port}\r\n{OPT_IN}\r\n"),
    );
    let at: SocketAddr = format!("[::1]:{port}").parse().expect("addr");
    TcpStream::connect_timeout(&at, WAIT).expect("chat port reachable at the registered IP");
}

/// "The chat port must be reachable at the registered IP": `--ip ::1` given,
/// the server reached over IPv4.
fn an_ipv6_ip_flag_is_reachable_over_an_ipv4_server(transport: &str) {
    if TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback");
        return;
    }
    let fake = TcpListener::bind("127.0.0.1:0").expect("bind");
    let server = fake.local_addr().expect("addr").to_string();
    let (_alice, port) = Proc::client("alice", &server, transport, &["--ip", "::1"]);
    let at: SocketAddr = format!("[::1]:{port}").parse().expect("addr");
    TcpStream::connect_timeout(&at, WAIT)
        .unwrap_or_else(|e| panic!("chat port not reachable at the registered [::1]: {e}"));
}

/// "the server cannot be reached (within 5 s) ... exit non-zero" is for
/// start-up: when `/register` reconnects after the server connection was
/// lost, the client retries, then says so on one error line and stays.
/// A listener, and a socket bound to the same port that never listens: once the
/// listener is gone, connecting there is refused, and no test running alongside can
/// take the freed port and answer.
fn listener_with_held_port() -> (TcpListener, socket2::Socket) {
    use socket2::{Domain, Socket, Type};
    let socket = || Socket::new(Domain::IPV4, Type::STREAM, None).expect("a socket");
    // Bound before it may be shared, so the port the system picks is nobody else's.
    let hold = socket();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("an address");
    hold.bind(&any.into()).expect("bind");
    hold.set_reuse_port(true).expect("SO_REUSEPORT");
    let port = hold.local_addr().expect("addr").as_socket().expect("inet");
    let listener = socket();
    listener.set_reuse_port(true).expect("SO_REUSEPORT");
    listener.bind(&port.into()).expect("bind the held port");
    listener.listen(8).expect("listen");
    (listener.into(), hold)
}

fn an_unreachable_server_on_reconnect_is_an_error_not_an_exit(transport: &str) {
    let (fake, _held) = listener_with_held_port();
    let server = fake.local_addr().expect("addr").to_string();
    let (mut alice, _) = Proc::client("alice", &server, transport, &[]);
    drop(accept(&fake));
    drop(fake);
    alice.expect_err("lost the server");
    alice.send("/register");
    for attempt in 1..=5 {
        alice.expect_on(Stream::Out, "a reconnect attempt", |l| {
            l.contains(&server) && l.contains(&format!("(attempt {attempt} of 5)"))
        });
    }
    let error = alice.expect_err("after 5 attempts");
    assert!(
        error.starts_with("error: cannot reach the server at "),
        "{error}"
    );
    alice.send("/quit");
    alice.exits_cleanly();
}

on_each_transport!(
    waiting_client_writes_the_section_7_bytes,
    initiating_client_writes_the_section_7_bytes,
    ctrl_c_leaves_from_every_other_mode,
    the_server_binary_enforces_the_default_limits,
    register_timeout_closes_only_unregistered_connections,
    an_ipv6_server_connection_registers_a_reachable_ipv6_contact,
    an_ipv6_ip_flag_is_reachable_over_an_ipv4_server,
    an_unreachable_server_on_reconnect_is_an_error_not_an_exit,
);

#[test]
fn ctrl_c_with_a_request_in_flight_exits_at_once_on_mio() {
    ctrl_c_with_a_request_in_flight_exits_at_once("mio");
}

#[test]
fn ctrl_c_with_a_request_in_flight_exits_at_once_on_std() {
    ctrl_c_with_a_request_in_flight_exits_at_once("std");
}

/// The value of `[default: ...]` in the help paragraph of `flag`.
fn default_of(help: &str, flag: &str) -> String {
    let start = help
        .find(&format!("{flag} "))
        .unwrap_or_else(|| panic!("{flag} missing from --help:\n{help}"));
    let rest = &help[start..];
    let end = rest[flag.len()..]
        .find("\n      --")
        .map_or(rest.len(), |i| i + flag.len());
    let paragraph = &rest[..end];
    let value = paragraph
        .split("[default: ")
        .nth(1)
        .and_then(|v| v.split(']').next())
        .unwrap_or_else(|| panic!("no default for {flag}:\n{paragraph}"));
    value.to_owned()
}

#[test]
fn help_states_the_contract_defaults() {
    let help = |sub: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_bridgechat"))
            .args([sub, "--help"])
            .env_remove("BRIDGECHAT_SERVER")
            .output()
            .expect("run --help");
        assert!(output.status.success(), "{sub} --help: {}", output.status);
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let server = help("server");
    assert_eq!(default_of(&server, "--listen"), "127.0.0.1:7070");
    assert_eq!(default_of(&server, "--transport"), "mio");
    assert_eq!(default_of(&server, "--head-timeout"), "10");
    assert_eq!(default_of(&server, "--register-timeout"), "30");
    assert_eq!(default_of(&server, "--max-body"), "65536");
    let client = help("client");
    assert_eq!(default_of(&client, "--server"), "127.0.0.1:7070");
    assert_eq!(default_of(&client, "--port"), "0");
    assert_eq!(default_of(&client, "--transport"), "mio");
}

#[test]
fn an_invalid_flag_is_reported_on_one_line() {
    for args in [
        &["client", "--name", "alice", "--port", "70000"][..],
        &["client", "--name", "alice", "--bogus"],
        &["client"],
        &["server", "--transport", "tokio"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_bridgechat"))
            .args(args)
            .env_remove("BRIDGECHAT_SERVER")
            .stdin(Stdio::null())
            .output()
            .expect("run bridgechat");
        assert!(!output.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&output.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}:\n{err}");
    }
}
