//! The server scenario harness shared by the server scenario tests: one server and
//! raw peers (curl-like clients) talking to it, run under several chunkings.
#![allow(dead_code)] // each test file uses part of it

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::panic::{self, AssertUnwindSafe};
use std::time::Duration;

use bridgechat_core::server::ServerConfig;
use bridgechat_core::ConnId;

use crate::support::wire::*;
use crate::support::*;

/// Every scenario runs under each of these: whole transmits, one byte at a time, random cuts.
pub const CHUNKINGS: [(Chunking, u64); 6] = [
    (Chunking::Whole, 1),
    (Chunking::OneByte, 1),
    (Chunking::Random, 1),
    (Chunking::Random, 2),
    (Chunking::Random, 3),
    (Chunking::Random, 4),
];

/// One server and raw peers (curl-like clients) talking to it.
pub struct Scene {
    pub net: Net,
    pub server: NodeId,
    /// The raw node that `open` connects from.
    pub client: NodeId,
    /// How much of each connection's received bytes `take` has already returned.
    seen: BTreeMap<(NodeId, ConnId), usize>,
}

impl Scene {
    pub fn new(chunking: Chunking, seed: u64, config: ServerConfig) -> Scene {
        let mut net = Net::new(seed, chunking);
        let server = net.add_server(ServerConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 7070),
            ..config
        });
        let client = net.add_raw();
        Scene {
            net,
            server,
            client,
            seen: BTreeMap::new(),
        }
    }

    /// Another raw node, with its own IP address.
    pub fn add_host(&mut self) -> NodeId {
        self.net.add_raw()
    }

    pub fn open(&mut self) -> ConnId {
        let host = self.client;
        self.open_from(host)
    }

    pub fn open_from(&mut self, host: NodeId) -> ConnId {
        let addr = self.net.addr_of(self.server, 7070);
        self.net
            .connect_raw(host, addr)
            .expect("server is listening")
    }

    /// Sends `bytes` on `conn` and delivers everything in flight.
    pub fn send(&mut self, conn: ConnId, bytes: &str) {
        self.send_from(self.client, conn, bytes);
    }

    pub fn send_from(&mut self, host: NodeId, conn: ConnId, bytes: &str) {
        self.net.send_raw(host, conn, bytes.as_bytes());
        self.net.run();
    }

    /// Sends a request and returns the text received in answer.
    pub fn ask(&mut self, conn: ConnId, request: &str) -> String {
        self.send(conn, request);
        self.take(conn)
    }

    /// The text received on `conn` since the last `take`.
    pub fn take(&mut self, conn: ConnId) -> String {
        self.take_from(self.client, conn)
    }

    pub fn take_from(&mut self, host: NodeId, conn: ConnId) -> String {
        let all = self.net.raw_text(host, conn);
        let seen = self.seen.entry((host, conn)).or_insert(0);
        let new = all[*seen..].to_owned();
        *seen = all.len();
        new
    }

    pub fn is_closed(&self, conn: ConnId) -> bool {
        self.net.raw_is_closed(self.client, conn)
    }

    /// A connection registered as `name` at 127.0.0.9:`port`.
    pub fn registered(&mut self, name: &str, port: u16) -> ConnId {
        let conn = self.open();
        let answer = self.ask(conn, &register(name, "127.0.0.9", port));
        assert_eq!(answer, ok_contact(name, "127.0.0.9", port));
        conn
    }

    /// A connection registered as `name` at 127.0.0.9:`port`, opted in to version 2.
    pub fn registered_v2(&mut self, name: &str, port: u16) -> ConnId {
        let conn = self.open();
        let answer = self.ask(conn, &register_v2(name, "127.0.0.9", port));
        assert!(
            answer.starts_with(&format!(
                "HTTP/1.1 200 OK\r\nName: {name}\r\nIP: 127.0.0.9\r\nPort: {port}\r\nBridgechat: 2\r\nObserved-IP: "
            )),
            "{answer}"
        );
        conn
    }

    pub fn advance(&mut self, secs: u64) {
        self.net.advance(Duration::from_secs(secs));
    }
}

/// Runs `scenario` once per chunking, on a default server; says which chunking failed.
pub fn each_chunking(scenario: impl Fn(&mut Scene)) {
    each_chunking_with(ServerConfig::default, scenario)
}

pub fn each_chunking_with(config: impl Fn() -> ServerConfig, scenario: impl Fn(&mut Scene)) {
    for (chunking, seed) in CHUNKINGS {
        let mut scene = Scene::new(chunking, seed, config());
        if let Err(failure) = panic::catch_unwind(AssertUnwindSafe(|| scenario(&mut scene))) {
            eprintln!("scenario failed under {chunking:?} chunking, seed {seed}");
            panic::resume_unwind(failure);
        }
    }
}

/// REGISTER opting in to version 2.
pub fn register_v2(name: &str, ip: &str, port: u16) -> String {
    format!(
        "REGISTER / HTTP/1.1\r\nName: {name}\r\nIP: {ip}\r\nPort: {port}\r\nBridgechat: 2\r\n\r\n"
    )
}

/// BRIDGE asking for one person (version 2).
pub fn bridge_for(peer: &str) -> String {
    format!("BRIDGE / HTTP/1.1\r\nPeer: {peer}\r\n\r\n")
}
