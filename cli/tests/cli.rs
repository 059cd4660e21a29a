//! The `bridgechat` binary as a user meets it: real processes, real TCP on
//! loopback, input through stdin pipes, output read line by line.
//!
//! Every wait is for an expected line (or an exit) with a timeout, never a
//! fixed sleep; every child is killed when its `Proc` drops, so a failing
//! test leaves nothing running. Each scenario runs on every transport.

use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{on_each_transport, read_message, Proc, WAIT};

fn server(transport: &str) -> (Proc, String) {
    let mut server = Proc::spawn(
        "server",
        &[
            "server",
            "--listen",
            "127.0.0.1:0",
            "--transport",
            transport,
        ],
    );
    let addr = server.listening();
    (server, addr)
}

fn client(transport: &str, name: &str, server: &str) -> Proc {
    let mut client = Proc::spawn(
        name,
        &[
            "client",
            "--name",
            name,
            "--server",
            server,
            "--transport",
            transport,
        ],
    );
    client.listening();
    client
}

/// Registers `first` and leaves it waiting.
fn wait_for_peer(first: &mut Proc) {
    first.send("/register");
    first.expect_mode("REGISTERED");
    first.send("/bridge");
    first.expect_mode("WAIT MODE");
}

/// `second` finds `first` (who waits) and opens the chat: `second` writes first.
fn start_chat(first: &mut Proc, second: &mut Proc) {
    second.send("/register");
    second.expect_mode("REGISTERED");
    second.send("/bridge");
    let ready = second.expect_mode("READY MODE");
    assert!(ready.contains(&first.name), "{ready}");
    second.send("/chat");
    // Both say how the chat connected, before its first mode line.
    second.expect(&format!("connected to {} directly", first.name));
    second.expect_mode("WRITE MODE");
    first.expect(&format!("connected to {} directly", second.name));
    first.expect_mode("READ MODE");
}

/// A server (and its address), alice waiting, bob chatting with her; bob's turn.
fn chatting(transport: &str) -> (Proc, String, Proc, Proc) {
    let (server, addr) = server(transport);
    let mut alice = client(transport, "alice", &addr);
    let mut bob = client(transport, "bob", &addr);
    wait_for_peer(&mut alice);
    start_chat(&mut alice, &mut bob);
    (server, addr, alice, bob)
}

/// `writer` sends `text`; `reader` prints it exactly and the turn passes.
fn turn(writer: &mut Proc, reader: &mut Proc, text: &str) {
    writer.send(text);
    writer.expect_mode("READ MODE");
    reader.expect_exact(&format!("{}: {text}", writer.name));
    reader.expect_mode("WRITE MODE");
}

fn full_chat_of_20_turns(transport: &str) {
    let (_server, _addr, mut alice, mut bob) = chatting(transport);
    let long: String = "0123456789abcdefghijklmnopqrstuvwxyzé—🙂"
        .chars()
        .cycle()
        .take(4000)
        .collect();
    assert_eq!(long.chars().count(), 4000);
    for i in 0..20 {
        let text = match i {
            3 => "héllo wörld — ✓ 你好 🎉 ∑ ñ".to_owned(),
            8 => long.clone(),
            11 => "  leading and trailing spaces, and a colon: kept  ".to_owned(),
            _ => format!("turn {i}"),
        };
        if i % 2 == 0 {
            turn(&mut bob, &mut alice, &text);
        } else {
            turn(&mut alice, &mut bob, &text);
        }
    }
    bob.send("/quit");
    bob.exits_cleanly();
    alice.expect("bob left");
    alice.expect_mode("REGISTERED");
    alice.send("/quit");
    alice.exits_cleanly();
}

fn held_message_goes_out_on_the_turn(transport: &str) {
    let (_server, _addr, mut alice, mut bob) = chatting(transport);
    // Alice types while it is bob's turn: held, then sent as soon as bob has written.
    alice.send("typed early");
    alice.expect("held");
    turn(&mut bob, &mut alice, "go ahead");
    alice.expect("(sent your held message)");
    bob.expect_exact("alice: typed early");
    bob.expect_mode("WRITE MODE");
    bob.send("/quit");
    bob.exits_cleanly();
}

fn quit_from_the_writer(transport: &str) {
    let (_server, _addr, mut alice, mut bob) = chatting(transport);
    bob.send("/quit");
    bob.exits_cleanly();
    alice.expect("bob left");
    alice.expect_mode("REGISTERED");
    alice.close_stdin(); // end of input acts as /quit
    alice.exits_cleanly();
}

fn quit_from_the_reader(transport: &str) {
    let (_server, _addr, mut alice, mut bob) = chatting(transport);
    alice.send("/quit");
    alice.exits_cleanly();
    bob.expect("alice left");
    bob.expect_mode("REGISTERED");
    bob.close_stdin();
    bob.exits_cleanly();
}

fn ctrl_c_in_read_mode(transport: &str) {
    let (_server, _addr, mut alice, mut bob) = chatting(transport);
    alice.interrupt();
    alice.exits_cleanly();
    bob.expect("alice left");
    bob.expect_mode("REGISTERED");
}

fn ctrl_c_in_wait_mode(transport: &str) {
    let (mut server, addr) = server(transport);
    let mut alice = client(transport, "alice", &addr);
    wait_for_peer(&mut alice);
    server.expect("alice is waiting");
    alice.interrupt();
    alice.exits_cleanly();
    // The server is told: alice no longer waits, so bob waits instead of being
    // handed a peer who is gone.
    server.expect("unregistered alice");
    let mut bob = client(transport, "bob", &addr);
    wait_for_peer(&mut bob);
}

fn unreachable_server(transport: &str) {
    // A port nobody listens on: bind one, note it, close it.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let mut alice = Proc::spawn(
        "alice",
        &[
            "client",
            "--name",
            "alice",
            "--server",
            &addr,
            "--transport",
            transport,
        ],
    );
    alice.send("/register");
    let status = alice.exit_within(Duration::from_secs(5));
    assert!(!status.success(), "exit status {status}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let line = alice.expect_err("error:");
    assert!(
        line.contains(&addr),
        "the error should name the server: {line}"
    );
}

fn server_that_never_answers(transport: &str) {
    // A listener that never accepts, its accept queue filled: further SYNs are
    // dropped, so a connect hangs as it would to a host that is down.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("local addr");
    let mut filler = Vec::new();
    let hangs = loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(stream) => filler.push(stream),
            Err(e) => break e.kind() == std::io::ErrorKind::TimedOut,
        }
        if filler.len() > 4096 {
            break false;
        }
    };
    if !hangs {
        eprintln!("skipped: this kernel never let a loopback connect hang");
        return;
    }
    let addr = addr.to_string();
    let started = Instant::now();
    let mut alice = Proc::spawn(
        "alice",
        &[
            "client",
            "--name",
            "alice",
            "--server",
            &addr,
            "--transport",
            transport,
        ],
    );
    let status = alice.exit_within(Duration::from_secs(5));
    assert!(!status.success(), "exit status {status}");
    let line = alice.expect_err("error:");
    assert!(line.contains(&addr), "{line}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

fn port_already_in_use(transport: &str) {
    let (_server, addr) = server(transport);
    let mut second = Proc::spawn(
        "second server",
        &["server", "--listen", &addr, "--transport", transport],
    );
    assert!(!second.exit_within(WAIT).success());
    let line = second.expect_err("error:");
    assert!(line.contains(&addr) && line.contains("in use"), "{line}");

    // A chat port that is taken is fatal for the client too. (The client listens
    // on all interfaces, which a loopback listener on the same port blocks.)
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let port = taken.local_addr().expect("local addr").port().to_string();
    let mut alice = Proc::spawn(
        "alice",
        &[
            "client",
            "--name",
            "alice",
            "--port",
            &port,
            "--server",
            &addr,
            "--transport",
            transport,
        ],
    );
    assert!(!alice.exit_within(WAIT).success());
    let line = alice.expect_err("error:");
    assert!(line.contains(&port), "{line}");
    drop(taken);

    // The chat port is shared with the client's own outgoing connections (for hole
    // punching), never with another program: a second client on it fails at start.
    let (_carol, carol_port) = Proc::client("carol", &addr, transport, &[]);
    let carol_port = carol_port.to_string();
    let mut dave = Proc::spawn(
        "dave",
        &[
            "client",
            "--name",
            "dave",
            "--port",
            &carol_port,
            "--server",
            &addr,
            "--transport",
            transport,
        ],
    );
    assert!(!dave.exit_within(WAIT).success());
    let line = dave.expect_err("error:");
    assert!(
        line.contains(&carol_port) && line.contains("in use"),
        "{line}"
    );
}

fn a_third_client_chats_with_the_survivor(transport: &str) {
    let (_server, addr, mut alice, mut bob) = chatting(transport);
    turn(&mut bob, &mut alice, "hi alice");
    bob.send("/quit");
    bob.exits_cleanly();
    alice.expect("bob left");
    alice.expect_mode("REGISTERED");
    alice.send("/bridge");
    alice.expect_mode("WAIT MODE");

    // carol finds the server through BRIDGECHAT_SERVER instead of --server.
    let mut carol = Proc::spawn_with_env(
        "carol",
        &["client", "--name", "carol", "--transport", transport],
        &[("BRIDGECHAT_SERVER", &addr)],
    );
    carol.listening();
    start_chat(&mut alice, &mut carol);
    turn(&mut carol, &mut alice, "hi alice, I'm carol");
    turn(&mut alice, &mut carol, "hello carol");
    carol.send("/quit");
    carol.exits_cleanly();
    alice.expect("carol left");
    alice.send("/quit");
    alice.exits_cleanly();
}

fn server_stops_cleanly_on_sigint_and_sigterm(transport: &str) {
    for signal in ["-INT", "-TERM"] {
        let (mut server, addr) = server(transport);
        let mut alice = client(transport, "alice", &addr);
        wait_for_peer(&mut alice);
        server.signal(signal);
        server.exits_cleanly();
        server.expect("closed: server shutting down");
        // The client is told its server connection is gone and keeps running.
        alice.expect_err("error:");
        alice.send("/quit");
        alice.exits_cleanly();
    }
}

fn demo_shows_both_sides(transport: &str) {
    let mut demo = Proc::spawn("demo", &["demo", "--transport", transport]);
    demo.expect("[alice] WAIT MODE");
    // Bob's READY MODE and alice's notification come from two threads, in either order.
    demo.expect("[alice] matched with bob — waiting for bob to connect");
    demo.expect("[bob] WRITE MODE");
    demo.expect("[alice] bob: ");
    demo.expect("[bob] alice: ");
    demo.expect("demo finished");
    demo.exits_cleanly();
}

fn curl_registers_and_bridges(transport: &str) {
    let curl_present = Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !curl_present {
        eprintln!("skipped: curl is not installed");
        return;
    }
    let (mut server, addr) = server(transport);
    let url = format!("http://{addr}/");
    let codes = ["-s", "-o", "/dev/null", "-w", "%{http_code}\\n", "-m", "5"];
    let mut curl = Command::new("curl");
    curl.args(codes)
        .args(["-X", "REGISTER", "-H", "Name: alice", "-H", "IP: 127.0.0.1"])
        .args(["-H", "Port: 9001", &url, "--next"])
        .args(codes)
        .args(["-X", "BRIDGE", &url]);
    let output = curl.output().expect("run curl");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "200\n200\n");
    // One connection served both: the server logs them under the same id.
    let registered = server.expect("registered alice");
    let conn = registered.split(' ').next().unwrap_or_default().to_owned();
    server.expect(&format!("{conn} alice is waiting"));
}

/// Reads one whole response (head and `Content-Length` body) from a raw socket.
fn read_response(stream: &mut TcpStream) -> String {
    stream.set_read_timeout(Some(WAIT)).expect("set timeout");
    String::from_utf8_lossy(&read_message(stream)).into_owned()
}

/// `--max-connections`, `--max-per-ip`, `--head-timeout` and `--max-body` change what clients see.
fn limit_flags_are_enforced(transport: &str) {
    use std::io::Write;
    use std::net::TcpStream;
    let mut server = Proc::spawn(
        "server",
        &[
            "server",
            "--listen",
            "127.0.0.1:0",
            "--transport",
            transport,
            "--max-connections",
            "2",
            "--head-timeout",
            "0.5",
            "--max-body",
            "10",
        ],
    );
    let addr = server.listening();
    let mut first = TcpStream::connect(&addr).expect("connect");
    first
        .write_all(b"REGISTER / HTTP/1.1\r\nName: alice\r\nIP: 127.0.0.1\r\nPort: 9001\r\n\r\n")
        .expect("write");
    assert!(read_response(&mut first).starts_with("HTTP/1.1 200 OK\r\n"));
    let mut slow = TcpStream::connect(&addr).expect("connect");
    server.expect("#2 connected");
    // A third connection is over --max-connections 2: told to come back, then closed.
    let mut over = TcpStream::connect(&addr).expect("connect");
    let refused = read_response(&mut over);
    assert!(
        refused.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{refused}"
    );
    assert!(refused.contains("\r\nRetry-After: "), "{refused}");
    // --head-timeout 0.5: half a head gets 408 and the connection closes.
    slow.write_all(b"BRIDGE / HTT").expect("write");
    let timed_out = read_response(&mut slow);
    assert!(
        timed_out.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{timed_out}"
    );
    drop(slow);
    drop(over);
    server.expect("#2 closed");
    // --max-body 10 applies to the one still served; the slot freed by #2 is usable again.
    let mut fresh = TcpStream::connect(&addr).expect("connect");
    fresh
        .write_all(b"MESSAGE / HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world")
        .expect("write");
    let too_big = read_response(&mut fresh);
    assert!(
        too_big.starts_with("HTTP/1.1 413 Content Too Large\r\n"),
        "{too_big}"
    );
    first
        .write_all(b"BRIDGE / HTTP/1.1\r\n\r\n")
        .expect("write");
    assert!(read_response(&mut first).starts_with("HTTP/1.1 200 OK\r\n"));
}

on_each_transport!(
    full_chat_of_20_turns,
    held_message_goes_out_on_the_turn,
    quit_from_the_writer,
    quit_from_the_reader,
    ctrl_c_in_read_mode,
    ctrl_c_in_wait_mode,
    unreachable_server,
    server_that_never_answers,
    port_already_in_use,
    a_third_client_chats_with_the_survivor,
    server_stops_cleanly_on_sigint_and_sigterm,
    demo_shows_both_sides,
    curl_registers_and_bridges,
    limit_flags_are_enforced,
);

#[test]
fn every_subcommand_explains_itself() {
    for sub in ["server", "client", "demo"] {
        let output = Command::new(env!("CARGO_BIN_EXE_bridgechat"))
            .args([sub, "--help"])
            .output()
            .expect("run --help");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{sub} --help: {}", output.status);
        assert!(text.contains("Examples:"), "{sub} --help:\n{text}");
        assert!(text.contains("--transport"), "{sub} --help:\n{text}");
    }
    let output = Command::new(env!("CARGO_BIN_EXE_bridgechat"))
        .arg("--version")
        .output()
        .expect("run --version");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.starts_with("bridgechat "), "{text}");
}

#[test]
fn an_invalid_flag_is_one_clear_error() {
    for args in [
        &["client", "--name", "not a name"][..],
        &["client", "--name", "alice", "--port", "70000"],
        &["client", "--name", "alice", "--ip", "localhost"],
        &["server", "--transport", "tokio"],
        &["server", "--listen", "nowhere"],
        &["server", "--head-timeout", "0"],
        &["server", "--max-connections", "0"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_bridgechat"))
            .args(args)
            .env_remove("BRIDGECHAT_SERVER")
            .stdin(Stdio::null())
            .output()
            .expect("run bridgechat");
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(err.starts_with("error: "), "{args:?}:\n{err}");
    }
}

/// The first ticket a fresh `bridgechat server` process issues (two v2 clients meet).
fn first_ticket() -> String {
    use std::io::Write;
    let (mut server, addr) = server("mio");
    let ask = |stream: &mut TcpStream, request: &str| {
        stream.write_all(request.as_bytes()).expect("send");
        String::from_utf8(read_message(stream)).expect("text")
    };
    let register = |name: &str, port: u16| {
        format!("REGISTER / HTTP/1.1\r\nName: {name}\r\nIP: 127.0.0.1\r\nPort: {port}\r\nBridgechat: 2\r\n\r\n")
    };
    let mut alice = TcpStream::connect(&addr).expect("connect");
    let mut bob = TcpStream::connect(&addr).expect("connect");
    for stream in [&alice, &bob] {
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
    }
    assert!(ask(&mut alice, &register("alice", 9001)).contains("Bridgechat: 2"));
    ask(&mut alice, "BRIDGE / HTTP/1.1\r\n\r\n");
    ask(&mut bob, &register("bob", 9002));
    let paired = ask(&mut bob, "BRIDGE / HTTP/1.1\r\n\r\n");
    let ticket = paired
        .lines()
        .find_map(|line| line.strip_prefix("Ticket: "))
        .unwrap_or_else(|| panic!("no ticket in {paired:?}"))
        .to_owned();
    let matched = String::from_utf8(read_message(&mut alice)).expect("text");
    assert!(matched.contains(&format!("Ticket: {ticket}")), "{matched}");
    drop((alice, bob));
    server.interrupt();
    server.exits_cleanly();
    ticket
}

/// Tickets come from the OS random source: two server processes draw different ones.
#[test]
fn two_server_processes_issue_different_tickets() {
    let (first, second) = (first_ticket(), first_ticket());
    assert_eq!(first.len(), 32, "{first}");
    assert!(first.bytes().all(|b| b.is_ascii_hexdigit()), "{first}");
    assert_ne!(first, second);
}
