//! Reachability on a small internet in network namespaces (`netns/mod.rs`):
//! first what the network itself does (the rig's own proof: NAT, dropped
//! inbound, port preservation, simultaneous open), then chats between
//! `bridgechat` processes placed on it.
//!
//! Needs root, `ip` and `iptables`; elsewhere each test says on one line why
//! it is skipped and passes, unless `BRIDGECHAT_REQUIRE_NETNS=1` (CI).
#![cfg(target_os = "linux")]

use std::io::{self, BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::sync::Barrier;
use std::thread;
use std::time::Duration;

mod common;
mod netns;

use common::{read_message, Proc, WAIT};
use netns::{rig, Host, Nat, Observer};

/// How long a connection that the network drops is given before we call it dropped.
const DROPPED_AFTER: Duration = Duration::from_secs(2);
/// The observer's port on the server host (STUN's, for the reader's eye).
const OBSERVER_PORT: u16 = 3478;

/// Sends a raw REGISTER for `name` and returns the server's answer.
fn register(stream: &mut TcpStream, name: &str, host: &Host) -> String {
    let request = format!(
        "REGISTER / HTTP/1.1\r\nName: {name}\r\nIP: {}\r\nPort: 9000\r\nContent-Length: 0\r\n\r\n",
        host.ip
    );
    stream.write_all(request.as_bytes()).expect("send REGISTER");
    String::from_utf8_lossy(&read_message(stream)).into_owned()
}

#[test]
fn hosts_on_the_internet_and_behind_either_router_reach_the_server() {
    let Some(mut rig) = rig("hosts_on_the_internet_and_behind_either_router_reach_the_server")
    else {
        return;
    };
    let server_host = rig.server_host();
    let hosts = [
        rig.public_host("public"),
        rig.home_host("keeps", Nat::PortPreserving),
        rig.home_host("shuffles", Nat::PortRandomising),
    ];
    let (mut server, server_addr) = server_host.bridgechat_server(&[]);
    for host in &hosts {
        let mut stream = host
            .connect_from(0, server_addr, WAIT)
            .unwrap_or_else(|e| panic!("{} cannot reach the server: {e}", host.name));
        let answer = register(&mut stream, &host.name, host);
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(
            answer.contains(&format!("Name: {}\r\n", host.name)),
            "{answer}"
        );
        // The server sees the router's internet address, never the home one.
        let seen = server.expect(" connected from ");
        let expected = match host.nat {
            None => format!(" connected from {}:{}", host.ip, local_port(&stream)),
            Some(_) => format!(" connected from {}:", host.public_ip),
        };
        assert!(seen.contains(&expected), "{}: {seen}", host.name);
    }
}

fn local_port(stream: &TcpStream) -> u16 {
    stream.local_addr().expect("local address").port()
}

/// Whether a connect to `to` from `from` was dropped: no answer at all
/// (a refusal would mean a packet came back) within [`DROPPED_AFTER`].
fn dropped(from: &Host, to: SocketAddrV4) -> Result<(), String> {
    match from.connect_from(0, to, DROPPED_AFTER) {
        Err(e) if e.kind() == ErrorKind::TimedOut => Ok(()),
        Err(e) => Err(format!("{} → {to}: an answer came back: {e}", from.name)),
        Ok(_) => Err(format!("{} → {to}: connected", from.name)),
    }
}

#[test]
fn unsolicited_connections_from_the_internet_never_reach_a_home_host() {
    let Some(mut rig) = rig("unsolicited_connections_from_the_internet_never_reach_a_home_host")
    else {
        return;
    };
    let stranger = rig.public_host("stranger");
    let open = rig.public_host("open");
    let homes = [
        rig.home_host("keeps", Nat::PortPreserving),
        rig.home_host("shuffles", Nat::PortRandomising),
    ];
    const PORT: u16 = 9000;
    // The stranger can reach a listener that nothing protects.
    let open_listener = open.listen(PORT);
    stranger
        .connect_from(0, SocketAddrV4::new(open.ip, PORT), WAIT)
        .expect("the stranger reaches a public host");
    open_listener.accept().expect("the public host accepts");

    let listeners: Vec<_> = homes.iter().map(|home| home.listen(PORT)).collect();
    let mut attempts = Vec::new();
    for home in &homes {
        // At the router's own address, and straight at the home address
        // through the router, as a neighbour on the internet segment could.
        rig.route_to_home_network(&stranger, home);
        attempts.push(SocketAddrV4::new(home.public_ip, PORT));
        attempts.push(SocketAddrV4::new(home.ip, PORT));
    }
    let outcomes: Vec<_> = thread::scope(|scope| {
        let tries: Vec<_> = attempts
            .iter()
            .map(|to| scope.spawn(|| dropped(&stranger, *to)))
            .collect();
        tries.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let failures: Vec<_> = outcomes.into_iter().filter_map(Result::err).collect();
    assert!(failures.is_empty(), "{failures:#?}");
    for (home, listener) in homes.iter().zip(listeners) {
        listener.set_nonblocking(true).unwrap();
        match listener.accept() {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            other => panic!("{} got a connection from outside: {other:?}", home.name),
        }
    }
}

#[test]
fn the_port_preserving_router_keeps_source_ports_and_the_randomising_one_changes_them() {
    let Some(mut rig) =
        rig("the_port_preserving_router_keeps_source_ports_and_the_randomising_one_changes_them")
    else {
        return;
    };
    let server_host = rig.server_host();
    let public = rig.public_host("public");
    let keeps = rig.home_host("keeps", Nat::PortPreserving);
    let shuffles = rig.home_host("shuffles", Nat::PortRandomising);
    let observer = Observer::start(&server_host, OBSERVER_PORT);
    let ports = [20001, 20002, 20003];
    for host in [&public, &keeps, &shuffles] {
        let mut changed = 0;
        for port in ports {
            let (_open, seen) = host.observed(&observer, port);
            assert_eq!(*seen.ip(), host.public_ip, "{} from port {port}", host.name);
            if seen.port() != port {
                changed += 1;
            }
        }
        match host.nat {
            None | Some(Nat::PortPreserving) => {
                assert_eq!(changed, 0, "{} changed a source port", host.name)
            }
            // Two of three: a random port may land on the old one by chance.
            Some(Nat::PortRandomising) => assert!(
                changed >= 2,
                "{} kept {} of 3 source ports",
                host.name,
                3 - changed
            ),
        }
    }
}

const PUNCH_PORTS: (u16, u16) = (20001, 20002);
const PUNCH_TRIES: usize = 3;

/// Each host connects to the observer from its punch port and keeps that
/// connection open (as a client keeps its server connection, and with it the
/// router's mapping); returns the connections and the addresses seen (a's, b's).
fn mapped(a: &Host, b: &Host, observer: &Observer) -> ([TcpStream; 2], SocketAddrV4, SocketAddrV4) {
    let (open_a, seen_a) = a.observed(observer, PUNCH_PORTS.0);
    let (open_b, seen_b) = b.observed(observer, PUNCH_PORTS.1);
    ([open_a, open_b], seen_a, seen_b)
}

/// TCP hole punching: both hosts dial the other's mapped address from their
/// punch port at the same moment. Returns the two ends (a's, b's) of the
/// first attempt where both connected.
fn punch(
    a: &Host,
    b: &Host,
    seen_a: SocketAddrV4,
    seen_b: SocketAddrV4,
) -> Option<(TcpStream, TcpStream)> {
    for _ in 0..PUNCH_TRIES {
        let together = Barrier::new(2);
        let dial = |from: &Host, port, to| {
            together.wait();
            from.connect_from(port, to, DROPPED_AFTER)
        };
        let (end_a, end_b) = thread::scope(|scope| {
            let end_a = scope.spawn(|| dial(a, PUNCH_PORTS.0, seen_b));
            let end_b = scope.spawn(|| dial(b, PUNCH_PORTS.1, seen_a));
            (end_a.join().unwrap(), end_b.join().unwrap())
        });
        if let (Ok(end_a), Ok(end_b)) = (end_a, end_b) {
            return Some((end_a, end_b));
        }
    }
    None
}

/// One line each way over a punched connection.
fn talk(a: &mut TcpStream, b: &mut TcpStream) -> io::Result<(String, String)> {
    writeln!(a, "from a")?;
    writeln!(b, "from b")?;
    let mut at_b = String::new();
    let mut at_a = String::new();
    BufReader::new(&*b).read_line(&mut at_b)?;
    BufReader::new(&*a).read_line(&mut at_a)?;
    Ok((at_a, at_b))
}

#[test]
fn simultaneous_open_connects_two_hosts_behind_port_preserving_routers() {
    let Some(mut rig) = rig("simultaneous_open_connects_two_hosts_behind_port_preserving_routers")
    else {
        return;
    };
    let server_host = rig.server_host();
    let a = rig.home_host("a", Nat::PortPreserving);
    let b = rig.home_host("b", Nat::PortPreserving);
    let observer = Observer::start(&server_host, OBSERVER_PORT);
    let (_mappings, seen_a, seen_b) = mapped(&a, &b, &observer);
    assert_eq!(seen_a, SocketAddrV4::new(a.public_ip, PUNCH_PORTS.0));
    assert_eq!(seen_b, SocketAddrV4::new(b.public_ip, PUNCH_PORTS.1));
    // b's mapping is open, yet a dialling it alone is unsolicited: dropped.
    dropped(&a, seen_b).unwrap();
    let (mut end_a, mut end_b) =
        punch(&a, &b, seen_a, seen_b).expect("no attempt connected both hosts");
    assert_eq!(end_a.peer_addr().unwrap(), seen_b.into());
    assert_eq!(end_b.peer_addr().unwrap(), seen_a.into());
    let (at_a, at_b) = talk(&mut end_a, &mut end_b).expect("talk over the punched connection");
    assert_eq!((at_a.as_str(), at_b.as_str()), ("from b\n", "from a\n"));
}

#[test]
fn simultaneous_open_fails_between_port_randomising_routers() {
    let Some(mut rig) = rig("simultaneous_open_fails_between_port_randomising_routers") else {
        return;
    };
    let server_host = rig.server_host();
    let a = rig.home_host("a", Nat::PortRandomising);
    let b = rig.home_host("b", Nat::PortRandomising);
    let observer = Observer::start(&server_host, OBSERVER_PORT);
    let (_mappings, seen_a, seen_b) = mapped(&a, &b, &observer);
    assert!(
        punch(&a, &b, seen_a, seen_b).is_none(),
        "two randomising routers let a punched connection through"
    );
}

/// alice waits, bob finds her and opens the chat, a message each way, both quit.
fn chat_both_ways_and_quit(alice: &mut Proc, bob: &mut Proc) {
    meet(alice, bob);
    bob.expect_mode("WRITE MODE");
    alice.expect_mode("READ MODE");
    bob.send("hello from bob");
    bob.expect_mode("READ MODE");
    alice.expect_exact("bob: hello from bob");
    alice.expect_mode("WRITE MODE");
    alice.send("hello from alice");
    alice.expect_mode("READ MODE");
    bob.expect_exact("alice: hello from alice");
    bob.expect_mode("WRITE MODE");
    bob.send("/quit");
    bob.exits_cleanly();
    alice.expect("bob left");
    alice.send("/quit");
    alice.exits_cleanly();
}

#[test]
fn two_clients_on_the_internet_chat_both_ways() {
    let Some(mut rig) = rig("two_clients_on_the_internet_chat_both_ways") else {
        return;
    };
    let server_host = rig.server_host();
    let alice_host = rig.public_host("alice");
    let bob_host = rig.public_host("bob");
    let (mut server, server_addr) = server_host.bridgechat_server(&[]);
    let mut alice = alice_host.bridgechat_client("alice", server_addr, &[]);
    let mut bob = bob_host.bridgechat_client("bob", server_addr, &[]);
    chat_both_ways_and_quit(&mut alice, &mut bob);
    for host in [&alice_host, &bob_host] {
        server.expect(&format!(" connected from {}:", host.ip));
    }
}

/// The line each side printed when the chat connection came up (`connected to PEER …`).
fn path_line<'a>(who: &'a Proc, peer: &str) -> &'a str {
    who.seen(&format!("connected to {peer}"))
        .unwrap_or_else(|| panic!("{} never said how it reached {peer}", who.name))
}

/// Both sides say they reached each other directly, punched or not as `punched`.
fn assert_direct(alice: &Proc, bob: &Proc, punched: bool) {
    for (who, peer) in [(alice, "bob"), (bob, "alice")] {
        let line = path_line(who, peer);
        assert!(
            line.contains("direct") && !line.contains("relayed"),
            "{}: {line}",
            who.name
        );
        assert_eq!(
            line.contains("hole punched"),
            punched,
            "{}: {line}",
            who.name
        );
    }
}

/// A server, alice (the waiter) on `alice_host` and bob (the asker) on `bob_host`,
/// chatting both ways through the rig; returns the processes for the path checks.
fn chat_across(
    server_host: &Host,
    alice_host: &Host,
    bob_host: &Host,
    server_flags: &[&str],
) -> (Proc, Proc, Proc) {
    let (server, server_addr) = server_host.bridgechat_server(server_flags);
    let mut alice = alice_host.bridgechat_client("alice", server_addr, &[]);
    let mut bob = bob_host.bridgechat_client("bob", server_addr, &[]);
    chat_both_ways_and_quit(&mut alice, &mut bob);
    (server, alice, bob)
}

#[test]
fn clients_on_the_internet_reach_each_other_directly() {
    let Some(mut rig) = rig("clients_on_the_internet_reach_each_other_directly") else {
        return;
    };
    let server_host = rig.server_host();
    let alice_host = rig.public_host("alice");
    let bob_host = rig.public_host("bob");
    let (_server, alice, bob) = chat_across(&server_host, &alice_host, &bob_host, &[]);
    assert_direct(&alice, &bob, false);
}

#[test]
fn a_client_at_home_and_one_on_the_internet_reach_each_other_directly_either_way_round() {
    let Some(mut rig) =
        rig("a_client_at_home_and_one_on_the_internet_reach_each_other_directly_either_way_round")
    else {
        return;
    };
    let server_host = rig.server_host();
    let home = rig.home_host("home", Nat::PortPreserving);
    let public = rig.public_host("public");
    // The waiter at home, then the asker at home.
    for (alice_host, bob_host) in [(&home, &public), (&public, &home)] {
        let (_server, alice, bob) = chat_across(&server_host, alice_host, bob_host, &[]);
        for (who, peer) in [(&alice, "bob"), (&bob, "alice")] {
            let line = path_line(who, peer);
            assert!(
                line.contains("direct") && !line.contains("relayed"),
                "alice at {}, bob at {}: {}: {line}",
                alice_host.name,
                bob_host.name,
                who.name
            );
        }
    }
}

#[test]
fn clients_behind_port_preserving_routers_are_hole_punched_never_relayed() {
    let Some(mut rig) =
        rig("clients_behind_port_preserving_routers_are_hole_punched_never_relayed")
    else {
        return;
    };
    let server_host = rig.server_host();
    let alice_host = rig.home_host("alice", Nat::PortPreserving);
    let bob_host = rig.home_host("bob", Nat::PortPreserving);
    let (mut server, alice, bob) = chat_across(&server_host, &alice_host, &bob_host, &[]);
    assert_direct(&alice, &bob, true);
    server.interrupt();
    server.exits_cleanly();
    assert!(
        server.seen("relay").is_none(),
        "the server relayed a chat that could be punched"
    );
}

#[test]
fn clients_behind_port_randomising_routers_chat_through_the_relay() {
    let Some(mut rig) = rig("clients_behind_port_randomising_routers_chat_through_the_relay")
    else {
        return;
    };
    let server_host = rig.server_host();
    let alice_host = rig.home_host("alice", Nat::PortRandomising);
    let bob_host = rig.home_host("bob", Nat::PortRandomising);
    let (mut server, alice, bob) = chat_across(&server_host, &alice_host, &bob_host, &[]);
    for (who, peer) in [(&alice, "bob"), (&bob, "alice")] {
        let line = path_line(who, peer);
        assert!(line.contains("relayed"), "{}: {line}", who.name);
    }
    server.interrupt();
    server.exits_cleanly();
    assert!(
        server.seen("relay").is_some(),
        "the server never said it relayed"
    );
}

/// alice waits, bob registers, is handed alice and types `/chat`.
fn meet(alice: &mut Proc, bob: &mut Proc) {
    alice.send("/register");
    alice.expect_mode("REGISTERED");
    alice.send("/bridge");
    alice.expect_mode("WAIT MODE");
    bob.send("/register");
    bob.expect_mode("REGISTERED");
    bob.send("/bridge");
    let ready = bob.expect_mode("READY MODE");
    assert!(ready.contains("alice"), "{ready}");
    bob.send("/chat");
}

/// alice on `alice_host` and bob on `bob_host` have met; bob has typed `/chat`.
fn introduce_across(server_addr: SocketAddrV4, alice_host: &Host, bob_host: &Host) -> (Proc, Proc) {
    let mut alice = alice_host.bridgechat_client("alice", server_addr, &[]);
    let mut bob = bob_host.bridgechat_client("bob", server_addr, &[]);
    meet(&mut alice, &mut bob);
    (alice, bob)
}

#[test]
fn without_the_relay_clients_behind_port_randomising_routers_are_told_why_they_cannot_chat() {
    let Some(mut rig) = rig(
        "without_the_relay_clients_behind_port_randomising_routers_are_told_why_they_cannot_chat",
    ) else {
        return;
    };
    let server_host = rig.server_host();
    let alice_host = rig.home_host("alice", Nat::PortRandomising);
    let bob_host = rig.home_host("bob", Nat::PortRandomising);
    let (_server, server_addr) = server_host.bridgechat_server(&["--no-relay"]);
    let (mut alice, mut bob) = introduce_across(server_addr, &alice_host, &bob_host);
    let error = bob.expect_err("could not reach alice");
    assert!(error.contains("does not relay"), "{error}");
    bob.expect_mode("REGISTERED");
    // Alice was never reached: still waiting, and her match falls through.
    alice.expect("waiting again");
    assert!(alice.seen("connected to bob").is_none());
    bob.send("/quit");
    bob.exits_cleanly();
    alice.send("/quit");
    alice.exits_cleanly();
}

#[test]
fn a_peer_vanishing_mid_relay_ends_the_other_sides_chat_with_a_reason() {
    let Some(mut rig) = rig("a_peer_vanishing_mid_relay_ends_the_other_sides_chat_with_a_reason")
    else {
        return;
    };
    let server_host = rig.server_host();
    let alice_host = rig.home_host("alice", Nat::PortRandomising);
    let bob_host = rig.home_host("bob", Nat::PortRandomising);
    let (mut server, server_addr) = server_host.bridgechat_server(&[]);
    let (mut alice, mut bob) = introduce_across(server_addr, &alice_host, &bob_host);
    bob.expect_mode("WRITE MODE");
    alice.expect_mode("READ MODE");
    assert!(path_line(&bob, "alice").contains("relayed"));
    bob.send("still there?");
    alice.expect_exact("bob: still there?");
    alice.expect_mode("WRITE MODE");
    // Bob's machine dies: no QUIT, his end of the relay just closes.
    bob.signal("-KILL");
    let lost = alice.expect_err("lost the chat with bob");
    assert!(lost.contains("closed without QUIT"), "{lost}");
    alice.expect_mode("REGISTERED");
    server.expect("relay");
    alice.send("/quit");
    alice.exits_cleanly();
}

#[test]
fn a_port_preserving_and_a_port_randomising_router_still_chat() {
    let Some(mut rig) = rig("a_port_preserving_and_a_port_randomising_router_still_chat") else {
        return;
    };
    let server_host = rig.server_host();
    let alice_host = rig.home_host("alice", Nat::PortPreserving);
    let bob_host = rig.home_host("bob", Nat::PortRandomising);
    let (_server, alice, bob) = chat_across(&server_host, &alice_host, &bob_host, &[]);
    for (who, peer) in [(&alice, "bob"), (&bob, "alice")] {
        let line = path_line(who, peer);
        assert!(
            line.contains("direct") || line.contains("relayed"),
            "{}: {line}",
            who.name
        );
    }
}

/// Rounds per rig case in the setup-time benchmark.
const SETUP_ROUNDS: usize = 10;

/// Benchmark, run by hand (`cargo test -p bridgechat --test reachability -- --ignored
/// --nocapture`; numbers in docs/PERFORMANCE.md): for each rig case, the time from
/// the introduction (bob's READY MODE line) to bob's WRITE MODE after an immediate
/// `/chat`, median and range of [`SETUP_ROUNDS`] fresh pairs of clients.
#[test]
#[ignore = "a benchmark: run by hand with --ignored --nocapture"]
fn bench_introduction_to_write_mode() {
    let Some(mut rig) = rig("bench_introduction_to_write_mode") else {
        return;
    };
    let server_host = rig.server_host();
    let (_server, server_addr) = server_host.bridgechat_server(&[]);
    let cases = [
        (
            "1 both on the internet",
            rig.public_host("a1"),
            rig.public_host("b1"),
        ),
        (
            "2 waiter at home (keeps ports), asker on the internet",
            rig.home_host("a2", Nat::PortPreserving),
            rig.public_host("b2"),
        ),
        (
            "3 both at home (keep ports)",
            rig.home_host("a3", Nat::PortPreserving),
            rig.home_host("b3", Nat::PortPreserving),
        ),
        (
            "4 both at home (random ports)",
            rig.home_host("a4", Nat::PortRandomising),
            rig.home_host("b4", Nat::PortRandomising),
        ),
        (
            "5 one of each",
            rig.home_host("a5", Nat::PortPreserving),
            rig.home_host("b5", Nat::PortRandomising),
        ),
    ];
    for (case, alice_host, bob_host) in &cases {
        let mut times = Vec::new();
        let mut path = String::new();
        for round in 0..SETUP_ROUNDS {
            let (alice_name, bob_name) = (format!("alice{round}"), format!("bob{round}"));
            let mut alice = alice_host.bridgechat_client(&alice_name, server_addr, &[]);
            let mut bob = bob_host.bridgechat_client(&bob_name, server_addr, &[]);
            alice.send("/register");
            alice.expect_mode("REGISTERED");
            alice.send("/bridge");
            alice.expect_mode("WAIT MODE");
            bob.send("/register");
            bob.expect_mode("REGISTERED");
            bob.send("/bridge");
            bob.expect_mode("READY MODE");
            let introduced = std::time::Instant::now();
            bob.send("/chat");
            bob.expect_mode("WRITE MODE");
            times.push(introduced.elapsed());
            path = path_line(&bob, &alice_name).to_owned();
            bob.send("/quit");
            bob.exits_cleanly();
            alice.send("/quit");
            alice.exits_cleanly();
        }
        times.sort();
        println!(
            "case {case}: median {:?}, range {:?}..{:?} over {SETUP_ROUNDS} pairs; last path: {path}",
            times[SETUP_ROUNDS / 2],
            times[0],
            times[SETUP_ROUNDS - 1]
        );
    }
}
