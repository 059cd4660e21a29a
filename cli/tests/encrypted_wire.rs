//! What an eavesdropper between two `bridgechat client` processes sees: a
//! byte-recording TCP proxy sits on the chat connection, and the typed text
//! never appears in what it recorded, while the chat works and both people see
//! the same safety code.
//!
//! The rig: the asker must reach the waiter through the recording proxy, so
//! the waiter has to be registered at the proxy's port instead of its own. The
//! waiter's server connection goes through a second small proxy that rewrites
//! `Port: P` (its chat port) to `Port: Q` (the recording proxy's) in what it
//! sends and back in what it receives, as a port-forwarding NAT would; the
//! server then hands out Q, and the recording proxy forwards Q to P. Nothing
//! else is touched; the chat bytes pass the recording proxy unchanged.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

mod common;
use common::{server, Proc};

type Recording = Arc<Mutex<Vec<u8>>>;

/// Replaces every `from` with `to` in a byte stream, holding back only a tail
/// that may be the start of `from` (so a message is never stalled).
struct Rewrite {
    from: Vec<u8>,
    to: Vec<u8>,
    pending: Vec<u8>,
}

impl Rewrite {
    fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.pending.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.pending.len() {
            let rest = &self.pending[i..];
            if rest.starts_with(&self.from) {
                out.extend_from_slice(&self.to);
                i += self.from.len();
            } else if self.from.starts_with(rest) {
                break; // maybe the start of `from`: wait for more
            } else {
                out.push(self.pending[i]);
                i += 1;
            }
        }
        self.pending.drain(..i);
        out
    }
}

/// Copies `from` to `to`, through `rewrite` if any, recording what passed.
fn pump(mut from: TcpStream, mut to: TcpStream, mut rewrite: Option<Rewrite>, record: Recording) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let bytes = match &mut rewrite {
            Some(r) => r.feed(&buf[..n]),
            None => buf[..n].to_vec(),
        };
        record.lock().unwrap().extend_from_slice(&bytes);
        if to.write_all(&bytes).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// Forwards every connection to `listener` to `target`, both ways; `rewrite`
/// gives the (outbound, inbound) replacements.
fn relay(
    listener: TcpListener,
    target: String,
    rewrite: Option<(Vec<u8>, Vec<u8>)>,
    record: Recording,
) {
    thread::spawn(move || {
        for inbound in listener.incoming() {
            let Ok(inbound) = inbound else { break };
            let Ok(outbound) = TcpStream::connect(&target) else {
                break;
            };
            let make = |from: &Vec<u8>, to: &Vec<u8>| Rewrite {
                from: from.clone(),
                to: to.clone(),
                pending: Vec::new(),
            };
            let (up, down) = match &rewrite {
                Some((from, to)) => (Some(make(from, to)), Some(make(to, from))),
                None => (None, None),
            };
            let (a, b) = (inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
            let r = record.clone();
            thread::spawn(move || pump(a, outbound, up, r));
            let r = record.clone();
            thread::spawn(move || pump(b, inbound, down, r));
        }
    });
}

fn encrypted_chat_through_a_recording_proxy(transport: &str) {
    let (_server, server_addr) = server(transport, &[]);
    let nat = TcpListener::bind("127.0.0.1:0").unwrap();
    let nat_addr = nat.local_addr().unwrap().to_string();
    let tap = TcpListener::bind("127.0.0.1:0").unwrap();
    let tap_port = tap.local_addr().unwrap().port();

    let (mut alice, alice_port) =
        Proc::client("alice", &nat_addr, transport, &["--ip", "127.0.0.1"]);
    let recorded: Recording = Arc::default();
    relay(
        tap,
        format!("127.0.0.1:{alice_port}"),
        None,
        recorded.clone(),
    );
    relay(
        nat,
        server_addr.clone(),
        Some((
            format!("Port: {alice_port}\r\n").into_bytes(),
            format!("Port: {tap_port}\r\n").into_bytes(),
        )),
        Arc::default(),
    );
    alice.send("/register");
    alice.expect_mode("REGISTERED");
    alice.send("/bridge");
    alice.expect_mode("WAIT MODE");

    let (mut bob, _) = Proc::client("bob", &server_addr, transport, &[]);
    bob.send("/register");
    bob.expect_mode("REGISTERED");
    bob.send("/bridge");
    let ready = bob.expect_mode("READY MODE");
    assert!(
        ready.contains(&tap_port.to_string()) || ready.contains("alice"),
        "{ready}"
    );
    bob.send("/chat");
    let bob_code = bob.expect("safety code: ");
    let alice_code = alice.expect("safety code: ");
    let code = |line: &str| line.split("safety code: ").nth(1).unwrap()[..9].to_owned();
    assert_eq!(code(&bob_code), code(&alice_code));
    bob.expect_mode("WRITE MODE");
    alice.expect_mode("READ MODE");

    let secrets = ["the eagle lands at midnight", "understood, bring the maps"];
    bob.send(secrets[0]);
    alice.expect_exact(&format!("bob: {}", secrets[0]));
    alice.expect_mode("WRITE MODE");
    alice.send(secrets[1]);
    bob.expect_exact(&format!("alice: {}", secrets[1]));
    bob.send("/quit");
    bob.exits_cleanly();
    alice.expect("bob left the chat");
    alice.send("/quit");
    alice.exits_cleanly();

    let wire = recorded.lock().unwrap().clone();
    let has = |needle: &[u8]| wire.windows(needle.len()).any(|w| w == needle);
    assert!(
        has(b"CHAT / HTTP/1.1\r\n"),
        "the chat went through the proxy"
    );
    assert!(has(b"\r\nNoise: "), "the handshake is on the wire");
    assert!(has(b"Content-Type: application/octet-stream\r\n"));
    assert!(
        !has(b"Ticket"),
        "the ticket never crosses between the peers"
    );
    for secret in secrets {
        assert!(
            !has(secret.as_bytes()),
            "{secret:?} crossed the wire in clear"
        );
        assert!(!has(&secret.as_bytes()[..8]), "part of {secret:?} in clear");
    }
}

#[test]
fn encrypted_chat_through_a_recording_proxy_on_mio() {
    encrypted_chat_through_a_recording_proxy("mio");
}

#[test]
fn encrypted_chat_through_a_recording_proxy_on_std() {
    encrypted_chat_through_a_recording_proxy("std");
}
