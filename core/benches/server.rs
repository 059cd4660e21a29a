//! What the server state machine costs, driven in memory through `Endpoint`.
//!
//! - one REGISTER+BRIDGE pair: two clients each register and bridge, so one pairing;
//! - with 100,000 clients registered: bytes held per registration (printed; counted by
//!   the allocator below) and the time to pair 50,000 pairs among them.
//!
//! Run: `cargo bench -p bridgechat-core --bench server -- --warm-up-time 1 --measurement-time 3`

// A global allocator can only be written with `unsafe`; it lives in this bench binary,
// never in the library, which forbids unsafe code.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use bridgechat_core::driver::{drive, Outcomes, Transport};
use bridgechat_core::server::{Server, ServerConfig, ServerEvent};
use bridgechat_core::{codec, ConnId, Contact, Endpoint, Name};
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};

/// Counts the bytes currently allocated (as requested, without the allocator's own overhead).
struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc(layout);
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc_zeroed(layout);
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = System.realloc(ptr, layout, new_size);
        if !new.is_null() {
            LIVE_BYTES.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const CLIENTS: usize = 100_000;
const PAIRS: usize = CLIENTS / 2;

/// Feeds inputs to a `Server` and drives its outputs after each, as a transport would.
struct Driver {
    server: Server,
    now: Instant,
    wire: Wire,
}

/// A transport that only counts what it is asked to send.
#[derive(Default)]
struct Wire {
    /// Bytes the server asked to send, summed so the work cannot be optimised away.
    sent: usize,
    outcomes: Outcomes,
}

impl Transport<ServerEvent> for Wire {
    fn now(&mut self) -> Instant {
        Instant::now()
    }
    fn listen(&mut self, _addr: SocketAddr, _shared: bool) {}
    fn connect(&mut self, _conn: ConnId, _addr: SocketAddr, _from: Option<u16>) {}
    fn transmit(&mut self, _conn: ConnId, bytes: &[u8]) {
        self.sent += bytes.len();
    }
    fn close(&mut self, _conn: ConnId) {}
    fn abort(&mut self, _conn: ConnId) {}
    fn show(&mut self, _event: ServerEvent) {}
    fn exit(&mut self, _result: Result<(), bridgechat_core::ExitError>) {}
    fn outcomes(&mut self) -> &mut Outcomes {
        &mut self.outcomes
    }
}

impl Driver {
    fn new() -> Driver {
        let config = ServerConfig {
            max_connections: CLIENTS,
            max_per_ip: CLIENTS,
            ..ServerConfig::default()
        };
        let mut driver = Driver {
            server: Server::new(config, [0; 32]),
            now: Instant::now(),
            wire: Wire::default(),
        };
        driver.drain();
        driver
    }

    fn drain(&mut self) {
        drive(&mut self.server, &mut self.wire);
    }

    fn accept(&mut self, peer: SocketAddr) -> ConnId {
        let conn = self.server.handle_accept(self.now, peer);
        self.drain();
        conn
    }

    fn data(&mut self, conn: ConnId, bytes: &[u8]) {
        self.server.handle_data(self.now, conn, bytes);
        self.drain();
    }

    fn close(&mut self, conn: ConnId) {
        self.server.handle_closed(self.now, conn);
        self.drain();
    }
}

/// Client `i`'s address (each its own IP, the worst case for the per-IP map) and REGISTER.
fn client(i: usize) -> (SocketAddr, Vec<u8>) {
    let ip = IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + i as u32));
    let name = Name::new(format!("client{i}").as_bytes()).expect("valid name");
    let contact = Contact::new(name, ip, 9000).expect("valid port");
    let mut register = Vec::new();
    codec::write_register(&mut register, &contact);
    (SocketAddr::new(ip, 40_000), register)
}

fn bridge_request() -> Vec<u8> {
    let mut out = Vec::new();
    codec::write_bridge(&mut out, None);
    out
}

/// A server with `CLIENTS` connections, each registered.
fn registered_server(requests: &[(SocketAddr, Vec<u8>)]) -> (Driver, Vec<ConnId>) {
    let mut driver = Driver::new();
    let conns = requests
        .iter()
        .map(|(peer, register)| {
            let conn = driver.accept(*peer);
            driver.data(conn, register);
            conn
        })
        .collect();
    (driver, conns)
}

/// Prints the bytes the server holds per registered client.
fn report_memory_per_registration(requests: &[(SocketAddr, Vec<u8>)]) {
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let (driver, conns) = registered_server(requests);
    let after = LIVE_BYTES.load(Ordering::Relaxed);
    assert_eq!(driver.server.stats().registered, CLIENTS);
    // The bench's own list of connection ids is not the server's.
    let ids = conns.capacity() * std::mem::size_of::<ConnId>();
    let per = (after - before - ids as isize) as f64 / CLIENTS as f64;
    println!("server/memory: {per:.0} bytes held per registration ({CLIENTS} registered)");
    black_box((driver.wire.sent, conns.len()));
}

fn bench_pair(c: &mut Criterion) {
    let mut group = c.benchmark_group("server");
    group.throughput(Throughput::Elements(1));
    let (peer_a, register_a) = client(0);
    let (peer_b, register_b) = client(1);
    let bridge = bridge_request();

    // Two connected clients re-register (same names: replaced) and bridge: one pairing.
    let mut driver = Driver::new();
    let a = driver.accept(peer_a);
    let b = driver.accept(peer_b);
    group.bench_function("REGISTER+BRIDGE pair", |bench| {
        bench.iter(|| {
            driver.data(a, black_box(&register_a));
            driver.data(a, black_box(&bridge));
            driver.data(b, black_box(&register_b));
            driver.data(b, black_box(&bridge));
        })
    });
    assert!(!driver.server.stats().waiting, "every iteration paired");

    // The same with each client's connection opened and closed around it.
    let mut driver = Driver::new();
    group.bench_function("accept+REGISTER+BRIDGE+close pair", |bench| {
        bench.iter(|| {
            let a = driver.accept(peer_a);
            let b = driver.accept(peer_b);
            driver.data(a, black_box(&register_a));
            driver.data(a, black_box(&bridge));
            driver.data(b, black_box(&register_b));
            driver.data(b, black_box(&bridge));
            driver.close(a);
            driver.close(b);
        })
    });
    group.finish();
}

fn bench_pairing_at_scale(c: &mut Criterion, requests: &[(SocketAddr, Vec<u8>)]) {
    let mut group = c.benchmark_group("server");
    // Each iteration rebuilds the 100,000-client server (not timed): few, flat samples.
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.throughput(Throughput::Elements(PAIRS as u64));
    let bridge = bridge_request();
    group.bench_function(
        BenchmarkId::new("pair 50,000 pairs", "100,000 registered"),
        |bench| {
            bench.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (mut driver, conns) = registered_server(requests);
                    let start = Instant::now();
                    for &conn in &conns {
                        driver.data(conn, &bridge);
                    }
                    total += start.elapsed();
                    assert!(!driver.server.stats().waiting, "all 50,000 pairs formed");
                    black_box(driver.wire.sent);
                }
                total
            })
        },
    );
    group.finish();
}

fn main() {
    let requests: Vec<_> = (0..CLIENTS).map(client).collect();
    report_memory_per_registration(&requests);
    let mut criterion = Criterion::default().configure_from_args();
    bench_pair(&mut criterion);
    bench_pairing_at_scale(&mut criterion, &requests);
    criterion.final_summary();
}
