//! No heap allocation on the server's hot paths: REGISTER and BRIDGE answered by
//! the `Server` state machine (driven directly, as a transport drives it), and bytes
//! copied by its relay, allocate nothing once its buffers have grown. A counting
//! global allocator counts every `alloc`/`realloc` in this test binary, which holds
//! this one test only (tests run in parallel threads and would count each other).
//!
//! This is the "per request on the server's hot path" figure of docs/PERFORMANCE.md.

// A global allocator can only be written with `unsafe impl GlobalAlloc`; it only
// forwards to the system allocator and counts.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bridgechat_core::codec::{self, Decoder, Limits, Version};
use bridgechat_core::driver::{drive, Outcomes, Transport};
use bridgechat_core::server::{Server, ServerConfig, ServerEvent};
use bridgechat_core::{ConnId, Contact, Endpoint, Name};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through `alloc`/`realloc` above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCS.load(Ordering::Relaxed)
}

/// A transport that keeps nothing: it counts the bytes it is asked to send
/// (and, while setting up, keeps them when `kept` is `Some`).
struct Wire {
    now: Instant,
    sent: usize,
    kept: Option<Vec<u8>>,
    outcomes: Outcomes,
}

impl Transport<ServerEvent> for Wire {
    fn now(&mut self) -> Instant {
        self.now
    }
    fn listen(&mut self, addr: SocketAddr, _shared: bool) {
        black_box(addr);
    }
    fn connect(&mut self, conn: ConnId, addr: SocketAddr, _from: Option<u16>) {
        black_box((conn, addr));
    }
    fn transmit(&mut self, _conn: ConnId, bytes: &[u8]) {
        self.sent += black_box(bytes).len();
        if let Some(kept) = &mut self.kept {
            kept.extend_from_slice(bytes);
        }
    }
    fn close(&mut self, conn: ConnId) {
        black_box(conn);
    }
    fn abort(&mut self, conn: ConnId) {
        black_box(conn);
    }
    fn show(&mut self, event: ServerEvent) {
        drop(black_box(event));
    }
    fn exit(&mut self, result: Result<(), bridgechat_core::ExitError>) {
        drop(black_box(result));
    }
    fn outcomes(&mut self) -> &mut Outcomes {
        &mut self.outcomes
    }
}

/// Carries out every output through the core's driver; returns the bytes sent.
fn drain(server: &mut Server, now: Instant) -> usize {
    let mut wire = Wire {
        now,
        sent: 0,
        kept: None,
        outcomes: Outcomes::default(),
    };
    drive(server, &mut wire);
    wire.sent
}

/// Carries out every output; returns what was sent (setting up only: it allocates).
fn drain_kept(server: &mut Server, now: Instant) -> Vec<u8> {
    let mut wire = Wire {
        now,
        sent: 0,
        kept: Some(Vec::new()),
        outcomes: Outcomes::default(),
    };
    drive(server, &mut wire);
    wire.kept.unwrap_or_default()
}

const CLIENTS: usize = 64;

#[test]
fn register_bridge_and_relayed_bytes_allocate_nothing_after_warm_up() {
    register_and_bridge_allocate_nothing_after_warm_up();
    relayed_bytes_allocate_nothing_after_warm_up();
}

fn register_and_bridge_allocate_nothing_after_warm_up() {
    let now = Instant::now();
    let mut server = Server::new(ServerConfig::default(), [0; 32]);
    drain(&mut server, now);
    server.handle_listening(now, "127.0.0.1:7070".parse().unwrap());
    drain(&mut server, now);

    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut conns: Vec<ConnId> = Vec::new();
    let mut registers: Vec<Vec<u8>> = Vec::new();
    for i in 0..CLIENTS {
        conns.push(server.handle_accept(now, SocketAddr::new(ip, 40_000 + i as u16)));
        drain(&mut server, now);
        let name = Name::new(format!("client-{i}").as_bytes()).unwrap();
        let mut wire = Vec::new();
        codec::write_register(&mut wire, &Contact::new(name, ip, 9000 + i as u16).unwrap());
        registers.push(wire);
    }
    let mut bridge = Vec::new();
    codec::write_bridge(&mut bridge, None);
    // Three pipelined REGISTERs in one read, as a pipelining client sends them.
    let pipelined: Vec<Vec<u8>> = registers.iter().map(|w| w.repeat(3)).collect();

    let round = |server: &mut Server| -> usize {
        let mut sent = 0;
        for (i, &conn) in conns.iter().enumerate() {
            server.handle_data(now, conn, &registers[i]);
            sent += drain(server, now);
            server.handle_data(now, conn, &bridge);
            sent += drain(server, now);
            server.handle_data(now, conn, &pipelined[i]);
            sent += drain(server, now);
        }
        sent
    };

    // Warm-up: maps, the output queue and its byte buffer grow to their working size.
    for _ in 0..3 {
        assert!(round(&mut server) > 0);
    }

    // The counter is live: a Vec allocates.
    let probe = allocations();
    drop(black_box(vec![0u8; 64]));
    assert!(
        allocations() > probe,
        "the counting allocator is not in use"
    );

    let rounds = 100;
    let before = allocations();
    let mut sent = 0;
    for _ in 0..rounds {
        sent += round(&mut server);
    }
    let allocated = allocations() - before;
    let requests = rounds * CLIENTS * 5; // REGISTER, BRIDGE, 3 pipelined REGISTERs
    assert!(
        sent > requests * 30,
        "every request was answered ({sent} bytes)"
    );
    assert_eq!(
        allocated, 0,
        "{allocated} heap allocations for {requests} requests (REGISTER and BRIDGE) after warm-up"
    );
    eprintln!("{requests} requests (REGISTER, BRIDGE, pipelined REGISTER) after warm-up: {allocated} heap allocations");
}

/// A v2 client registered on a new connection; returns the connection.
fn registered_v2(server: &mut Server, now: Instant, name: &str, port: u16) -> ConnId {
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let conn = server.handle_accept(now, SocketAddr::new(ip, port));
    drain(server, now);
    let contact = Contact::new(Name::new(name.as_bytes()).unwrap(), ip, 9000).unwrap();
    let mut wire = Vec::new();
    codec::write_register_as(&mut wire, &contact, Version::V2);
    server.handle_data(now, conn, &wire);
    drain(server, now);
    conn
}

fn relayed_bytes_allocate_nothing_after_warm_up() {
    let now = Instant::now();
    let config = ServerConfig {
        relay_budget: 0,
        relay_rate: 0,
        ..ServerConfig::default()
    };
    let mut server = Server::new(config, [0; 32]);
    drain(&mut server, now);
    server.handle_listening(now, "127.0.0.1:7070".parse().unwrap());
    drain(&mut server, now);
    let waiter = registered_v2(&mut server, now, "waiter", 41_000);
    let asker = registered_v2(&mut server, now, "asker", 41_001);
    let mut bridge = Vec::new();
    codec::write_bridge(&mut bridge, None);
    server.handle_data(now, waiter, &bridge);
    drain(&mut server, now);
    server.handle_data(now, asker, &bridge);
    let answer = drain_kept(&mut server, now);
    let ticket = Decoder::new(Limits::default())
        .decode_response(&mut &answer[..])
        .expect("a well-formed answer")
        .and_then(|response| response.ticket)
        .expect("the asker's answer carries a ticket");
    let mut relay = Vec::new();
    codec::write_relay(&mut relay, &ticket);
    let ends: Vec<ConnId> = (0..2)
        .map(|i| {
            let conn =
                server.handle_accept(now, SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 42_000 + i));
            server.handle_data(now, conn, &relay);
            drain(&mut server, now);
            conn
        })
        .collect();
    // One chat turn's worth of opaque bytes each way.
    let turn = [b'x'; 120];
    let round = |server: &mut Server| -> usize {
        let mut sent = 0;
        for &end in &ends {
            server.handle_data(now, end, &turn);
            sent += drain(server, now);
        }
        sent
    };
    for _ in 0..3 {
        assert_eq!(
            round(&mut server),
            2 * turn.len(),
            "the relay copies both ways"
        );
    }
    let rounds = 1000;
    let before = allocations();
    let mut sent = 0;
    for _ in 0..rounds {
        sent += round(&mut server);
    }
    let allocated = allocations() - before;
    assert_eq!(sent, rounds * 2 * turn.len(), "every byte was relayed");
    assert_eq!(
        allocated,
        0,
        "{allocated} heap allocations for {} relayed messages after warm-up",
        rounds * 2
    );
    eprintln!(
        "{} relayed messages after warm-up: {allocated} heap allocations",
        rounds * 2
    );
}
