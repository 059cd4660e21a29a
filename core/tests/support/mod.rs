//! An in-memory network for the core's state machines: no sockets, virtual time.
//!
//! A [`Net`] holds servers, clients and scripted raw peers. It is a transport
//! for the core's driver like any other (listen, connect, transmit, close), but
//! delivers bytes in chunks whose sizes follow a [`Chunking`] policy, picks which
//! connection moves next from a seeded generator, and jumps time to the next
//! deadline only when asked. The same seed gives the same run.
#![allow(dead_code)] // each test file uses a different part of the harness

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bridgechat_core::client::{Client, ClientConfig, ClientEvent, ClientInput, Mode};
use bridgechat_core::driver::{drive, Outcome, Outcomes, Transport};
use bridgechat_core::server::{Server, ServerConfig, ServerEvent, ServerInput};
use bridgechat_core::{ConnId, Endpoint, ExitError, Name};

/// How transmitted bytes are cut before delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunking {
    /// Each transmit arrives in one piece.
    Whole,
    /// One byte per delivery.
    OneByte,
    /// Random sizes from 1 to the bytes in flight.
    Random,
}

/// Index of a node in the net.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub usize);

/// One end of a connection: a node and the id that node knows it by.
type End = (NodeId, ConnId);

/// A scripted peer: records what it receives; the test writes what it sends.
#[derive(Debug, Default)]
pub struct RawPeer {
    pub received: BTreeMap<ConnId, Vec<u8>>,
    pub closed: Vec<ConnId>,
    pub accepted: Vec<ConnId>,
}

#[derive(Debug)]
pub enum Machine {
    Server(Box<Server>),
    Client(Box<Client>),
    Raw(RawPeer),
    /// Taken out of its node while the driver carries out its outputs.
    Busy,
}

#[derive(Debug)]
pub struct Node {
    pub ip: IpAddr,
    pub machine: Machine,
    pub server_events: Vec<ServerEvent>,
    pub client_events: Vec<ClientEvent>,
    /// Set once the node emitted `Output::Exit`.
    pub exited: Option<Result<(), String>>,
    next_raw_id: u64,
}

#[derive(Debug)]
struct Link {
    peer: End,
    /// This end's address and the other end's.
    local: SocketAddr,
    remote: SocketAddr,
    /// Bytes sent from this end, not yet delivered to `peer`.
    in_flight: VecDeque<u8>,
    /// This end closed: deliver the close once `in_flight` is empty.
    closing: bool,
}

/// A seeded xorshift generator: tests stay reproducible without a dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

#[derive(Debug)]
pub struct Net {
    pub now: Instant,
    pub chunking: Chunking,
    pub rng: Rng,
    pub nodes: Vec<Node>,
    links: BTreeMap<End, Link>,
    listeners: BTreeMap<SocketAddr, NodeId>,
    /// Connects to these addresses (or any port of these IPs) hang: no answer ever
    /// comes, as behind a router that drops unsolicited packets.
    dropped: Vec<SocketAddr>,
    dropped_ips: Vec<IpAddr>,
    /// Connects that hang, until their node closes them.
    hanging: std::collections::BTreeSet<End>,
    /// Every connect asked for: by whom, to where, from which local port.
    pub connects: Vec<(NodeId, SocketAddr, Option<u16>)>,
    next_port: u16,
    /// Steps taken by `run`; a run longer than `max_steps` is a livelock.
    pub max_steps: usize,
}

/// A server listening on port 7070 of its node.
fn default_server_config() -> ServerConfig {
    ServerConfig {
        listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 7070),
        ..ServerConfig::default()
    }
}

pub fn name(s: &str) -> Name {
    Name::new(s.as_bytes()).expect("test names are valid")
}

impl Net {
    pub fn new(seed: u64, chunking: Chunking) -> Net {
        Net {
            now: Instant::now(),
            chunking,
            rng: Rng::new(seed),
            nodes: Vec::new(),
            links: BTreeMap::new(),
            listeners: BTreeMap::new(),
            dropped: Vec::new(),
            dropped_ips: Vec::new(),
            hanging: std::collections::BTreeSet::new(),
            connects: Vec::new(),
            next_port: 40_000,
            max_steps: 10_000_000,
        }
    }

    fn add_node(&mut self, machine: Machine) -> NodeId {
        let id = NodeId(self.nodes.len());
        // Every node has its own loopback address so registered IPs tell them apart.
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + id.0 as u8));
        self.nodes.push(Node {
            ip,
            machine,
            server_events: Vec::new(),
            client_events: Vec::new(),
            exited: None,
            next_raw_id: 0,
        });
        id
    }

    /// A server; `config.listen` should be on this node's IP (127.0.0.<n+1>), or unspecified.
    pub fn add_server(&mut self, config: ServerConfig) -> NodeId {
        let id = self.add_node(Machine::Server(Box::new(Server::new(config, [3; 32]))));
        self.drain(id);
        id
    }

    /// A server at `127.0.0.1:7070` when it is the first node.
    /// A default server started again on `node` after it exited: the same
    /// address, a fresh state.
    pub fn restart_default_server(&mut self, node: NodeId) {
        assert!(self.nodes[node.0].exited.is_some(), "{node:?} still runs");
        let server = Server::new(default_server_config(), [3; 32]);
        self.nodes[node.0].machine = Machine::Server(Box::new(server));
        self.nodes[node.0].exited = None;
        self.drain(node);
    }

    pub fn add_default_server(&mut self) -> NodeId {
        self.add_server(default_server_config())
    }

    pub fn add_client(&mut self, config: ClientConfig) -> NodeId {
        let now = self.now;
        let id = self.add_node(Machine::Client(Box::new(Client::new(config, now))));
        self.drain(id);
        id
    }

    /// A client named `who` for the server on `server` (which listens on port 7070).
    pub fn add_named_client(&mut self, who: &str, server: NodeId) -> NodeId {
        let addr = SocketAddr::new(self.nodes[server.0].ip, 7070);
        self.add_client(ClientConfig::new(name(who), addr))
    }

    pub fn add_raw(&mut self) -> NodeId {
        self.add_node(Machine::Raw(RawPeer::default()))
    }

    /// A raw peer listening on `port` of its own IP; returns its node and address.
    pub fn add_raw_listener(&mut self, port: u16) -> (NodeId, SocketAddr) {
        let id = self.add_raw();
        let addr = SocketAddr::new(self.nodes[id.0].ip, port);
        self.listeners.insert(addr, id);
        (id, addr)
    }

    pub fn addr_of(&self, node: NodeId, port: u16) -> SocketAddr {
        SocketAddr::new(self.nodes[node.0].ip, port)
    }

    pub fn server(&self, node: NodeId) -> &Server {
        match &self.nodes[node.0].machine {
            Machine::Server(s) => s,
            _ => panic!("node {node:?} is not a server"),
        }
    }

    pub fn client(&self, node: NodeId) -> &Client {
        match &self.nodes[node.0].machine {
            Machine::Client(c) => c,
            _ => panic!("node {node:?} is not a client"),
        }
    }

    pub fn mode(&self, node: NodeId) -> Mode {
        self.client(node).mode()
    }

    pub fn raw(&self, node: NodeId) -> &RawPeer {
        match &self.nodes[node.0].machine {
            Machine::Raw(r) => r,
            _ => panic!("node {node:?} is not a raw peer"),
        }
    }

    /// Everything raw connection `conn` of `node` has received, as text.
    pub fn raw_text(&self, node: NodeId, conn: ConnId) -> String {
        String::from_utf8_lossy(self.raw(node).received.get(&conn).map_or(&[][..], |v| v))
            .into_owned()
    }

    pub fn raw_is_closed(&self, node: NodeId, conn: ConnId) -> bool {
        self.raw(node).closed.contains(&conn)
    }

    pub fn client_events(&self, node: NodeId) -> &[ClientEvent] {
        &self.nodes[node.0].client_events
    }

    /// The modes a client announced, in order.
    pub fn modes_of(&self, node: NodeId) -> Vec<Mode> {
        self.client_events(node)
            .iter()
            .filter_map(|e| match e {
                ClientEvent::ModeChanged { mode, .. } => Some(*mode),
                _ => None,
            })
            .collect()
    }

    /// The texts a client showed as received, in order.
    pub fn received_by(&self, node: NodeId) -> Vec<String> {
        self.client_events(node)
            .iter()
            .filter_map(|e| match e {
                ClientEvent::MessageReceived { text, .. } => Some(text.clone()),
                _ => None,
            })
            .collect()
    }

    /// How each chat a client opened reached its peer, in order.
    pub fn paths_of(&self, node: NodeId) -> Vec<bridgechat_core::client::Path> {
        self.client_events(node)
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Path { path, .. } => Some(*path),
                _ => None,
            })
            .collect()
    }

    /// A client's chat port, at its node's address.
    pub fn chat_addr(&self, node: NodeId) -> SocketAddr {
        let port = self
            .client_events(node)
            .iter()
            .find_map(|e| match e {
                ClientEvent::Listening(addr) => Some(addr.port()),
                _ => None,
            })
            .expect("the client reported its listener");
        self.addr_of(node, port)
    }

    /// The errors a client showed, as their lines.
    pub fn errors_of(&self, node: NodeId) -> Vec<String> {
        self.client_events(node)
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Error(error) => Some(error.to_string()),
                _ => None,
            })
            .collect()
    }

    pub fn take_client_events(&mut self, node: NodeId) -> Vec<ClientEvent> {
        std::mem::take(&mut self.nodes[node.0].client_events)
    }

    pub fn server_events(&self, node: NodeId) -> &[ServerEvent] {
        &self.nodes[node.0].server_events
    }

    pub fn take_server_events(&mut self, node: NodeId) -> Vec<ServerEvent> {
        std::mem::take(&mut self.nodes[node.0].server_events)
    }

    /// Opens a connection from raw peer `from` to `to`; returns the raw side's id.
    pub fn connect_raw(&mut self, from: NodeId, to: SocketAddr) -> Option<ConnId> {
        let local = self.alloc_local(from);
        self.connect_raw_from(from, local, to)
    }

    /// Like `connect_raw`, from a chosen local address (a stranger posing as the peer).
    pub fn connect_raw_from(
        &mut self,
        from: NodeId,
        local: SocketAddr,
        to: SocketAddr,
    ) -> Option<ConnId> {
        let raw_conn = self.alloc_raw_conn(from);
        let accepted = self.accept_at(to, local)?;
        self.links
            .insert((from, raw_conn), Link::new(accepted, local, to));
        self.links
            .insert(accepted, Link::new((from, raw_conn), to, local));
        self.drain(accepted.0);
        Some(raw_conn)
    }

    /// Connects to `addr` hang from now on (a router dropping unsolicited packets).
    pub fn drop_connects_to(&mut self, addr: SocketAddr) {
        self.dropped.push(addr);
    }

    /// Connects to `addr` are answered again.
    pub fn allow_connects_to(&mut self, addr: SocketAddr) {
        self.dropped.retain(|a| *a != addr);
    }

    /// Connects to any port of `ip` hang from now on (an address nobody routes).
    pub fn drop_connects_to_ip(&mut self, ip: IpAddr) {
        self.dropped_ips.push(ip);
    }

    /// The connections `node` holds open, established or still connecting:
    /// what would be its descriptors.
    pub fn open_conns(&self, node: NodeId) -> usize {
        self.links.keys().filter(|(n, _)| *n == node).count()
            + self.hanging.iter().filter(|(n, _)| *n == node).count()
    }

    /// The local and remote address of one of `node`'s connections.
    pub fn conn_addrs(&self, node: NodeId, conn: ConnId) -> Option<(SocketAddr, SocketAddr)> {
        self.links
            .get(&(node, conn))
            .map(|link| (link.local, link.remote))
    }

    /// Queues bytes from a raw peer on one of its connections.
    pub fn send_raw(&mut self, from: NodeId, conn: ConnId, bytes: &[u8]) {
        if let Some(link) = self.links.get_mut(&(from, conn)) {
            if !link.closing {
                link.in_flight.extend(bytes);
            }
        }
    }

    /// The raw peer closes its side (after what it sent is delivered).
    pub fn close_raw(&mut self, from: NodeId, conn: ConnId) {
        if let Some(link) = self.links.get_mut(&(from, conn)) {
            link.closing = true;
        }
    }

    /// The raw peer's connection breaks at once: unsent bytes are lost (a reset).
    pub fn reset_raw(&mut self, from: NodeId, conn: ConnId) {
        if let Some(link) = self.links.get_mut(&(from, conn)) {
            link.in_flight.clear();
            link.closing = true;
        }
    }

    /// Breaks a connection of any node from outside, as a crashed peer or a cut cable would.
    pub fn reset(&mut self, node: NodeId, conn: ConnId) {
        if let Some(link) = self.links.remove(&(node, conn)) {
            self.links.remove(&link.peer);
            self.deliver_close(link.peer);
            self.deliver_close((node, conn));
        }
    }

    /// The connections a node has open, with their peers.
    pub fn links_of(&self, node: NodeId) -> Vec<(ConnId, End)> {
        self.links
            .iter()
            .filter(|((n, _), _)| *n == node)
            .map(|((_, c), l)| (*c, l.peer))
            .collect()
    }

    pub fn client_input(&mut self, node: NodeId, input: ClientInput) {
        let now = self.now;
        if let Machine::Client(c) = &mut self.nodes[node.0].machine {
            c.handle_input(now, input);
        }
        self.drain(node);
    }

    pub fn line(&mut self, node: NodeId, line: &str) {
        self.client_input(node, ClientInput::Line(line.to_owned()));
    }

    pub fn server_input(&mut self, node: NodeId, input: ServerInput) {
        let now = self.now;
        if let Machine::Server(s) = &mut self.nodes[node.0].machine {
            s.handle_input(now, input);
        }
        self.drain(node);
    }

    /// Delivers bytes until nothing is in flight, without moving time.
    pub fn run(&mut self) {
        for _ in 0..self.max_steps {
            if !self.step() {
                return;
            }
        }
        panic!("no quiescence after {} steps: livelock", self.max_steps);
    }

    /// Moves at most `n` chunks (or closes), so a test can act between deliveries.
    /// Returns false once nothing is left in flight.
    pub fn run_steps(&mut self, n: usize) -> bool {
        (0..n).all(|_| self.step())
    }

    /// Runs, then lets `duration` of virtual time pass, firing every timer due on the way.
    pub fn advance(&mut self, duration: Duration) {
        let end = self.now + duration;
        self.run();
        while let Some(deadline) = self.next_deadline().filter(|d| *d <= end) {
            self.now = self.now.max(deadline);
            self.fire_timers();
            self.run();
        }
        self.now = end;
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.nodes
            .iter()
            .filter(|n| n.exited.is_none())
            .filter_map(|n| match &n.machine {
                Machine::Server(s) => s.poll_timeout(),
                Machine::Client(c) => c.poll_timeout(),
                Machine::Raw(_) | Machine::Busy => None,
            })
            .min()
    }

    fn fire_timers(&mut self) {
        let now = self.now;
        for i in 0..self.nodes.len() {
            let due = match &mut self.nodes[i].machine {
                Machine::Server(s) if s.poll_timeout().is_some_and(|d| d <= now) => {
                    s.handle_timeout(now);
                    true
                }
                Machine::Client(c) if c.poll_timeout().is_some_and(|d| d <= now) => {
                    c.handle_timeout(now);
                    true
                }
                _ => false,
            };
            if due {
                self.drain(NodeId(i));
            }
        }
    }

    /// Moves one chunk (or one close) across one link; false when nothing is in flight.
    fn step(&mut self) -> bool {
        let ready: Vec<End> = self
            .links
            .iter()
            .filter(|(_, l)| !l.in_flight.is_empty() || l.closing)
            .map(|(end, _)| *end)
            .collect();
        if ready.is_empty() {
            return false;
        }
        let from = ready[self.rng.below(ready.len())];
        let link = self.links.get_mut(&from).expect("listed above");
        let to = link.peer;
        if link.in_flight.is_empty() {
            // Closed with nothing left to send: the peer sees end of stream.
            self.links.remove(&from);
            self.links.remove(&to);
            self.deliver_close(to);
            return true;
        }
        let n = match self.chunking {
            Chunking::Whole => link.in_flight.len(),
            Chunking::OneByte => 1,
            Chunking::Random => 1 + self.rng.below(link.in_flight.len()),
        };
        let chunk: Vec<u8> = link.in_flight.drain(..n).collect();
        self.deliver_data(to, &chunk);
        true
    }

    fn deliver_data(&mut self, (node, conn): End, bytes: &[u8]) {
        let now = self.now;
        let n = &mut self.nodes[node.0];
        if n.exited.is_some() {
            return;
        }
        match &mut n.machine {
            Machine::Server(s) => s.handle_data(now, conn, bytes),
            Machine::Client(c) => c.handle_data(now, conn, bytes),
            Machine::Raw(r) => r.received.entry(conn).or_default().extend_from_slice(bytes),
            Machine::Busy => unreachable!("bytes are delivered between drains"),
        }
        self.drain(node);
    }

    fn deliver_close(&mut self, (node, conn): End) {
        let now = self.now;
        let n = &mut self.nodes[node.0];
        if n.exited.is_some() {
            return;
        }
        match &mut n.machine {
            Machine::Server(s) => s.handle_closed(now, conn),
            Machine::Client(c) => c.handle_closed(now, conn),
            Machine::Raw(r) => r.closed.push(conn),
            Machine::Busy => unreachable!("closes are delivered between drains"),
        }
        self.drain(node);
    }

    fn alloc_local(&mut self, node: NodeId) -> SocketAddr {
        self.next_port += 1;
        SocketAddr::new(self.nodes[node.0].ip, self.next_port)
    }

    fn alloc_raw_conn(&mut self, node: NodeId) -> ConnId {
        let n = &mut self.nodes[node.0];
        n.next_raw_id += 1;
        ConnId(1_000_000 + n.next_raw_id)
    }

    /// Finds the listener at `to` and lets it accept a connection from `peer`.
    fn accept_at(&mut self, to: SocketAddr, peer: SocketAddr) -> Option<End> {
        let node = *self.listeners.get(&to)?;
        if self.nodes[node.0].exited.is_some() {
            return None;
        }
        let now = self.now;
        let conn = match &mut self.nodes[node.0].machine {
            Machine::Server(s) => s.handle_accept(now, peer),
            Machine::Client(c) => c.handle_accept(now, peer),
            Machine::Raw(_) => {
                let conn = self.alloc_raw_conn(node);
                if let Machine::Raw(r) = &mut self.nodes[node.0].machine {
                    r.accepted.push(conn);
                }
                conn
            }
            Machine::Busy => panic!("{node:?} connects to its own listener"),
        };
        Some((node, conn))
    }

    /// Carries out every output `node` has queued, through the core's driver.
    fn drain(&mut self, node: NodeId) {
        let mut machine = std::mem::replace(&mut self.nodes[node.0].machine, Machine::Busy);
        let mut io = NodeIo {
            net: self,
            node,
            outcomes: Outcomes::default(),
        };
        match &mut machine {
            Machine::Server(s) => drop(drive(&mut **s, &mut io)),
            Machine::Client(c) => drop(drive(&mut **c, &mut io)),
            Machine::Raw(_) | Machine::Busy => {}
        }
        self.nodes[node.0].machine = machine;
    }
}

/// The net as one node's transport.
struct NodeIo<'a> {
    net: &'a mut Net,
    node: NodeId,
    outcomes: Outcomes,
}

/// An event a node records for the test to read.
trait Record {
    fn record(self, node: &mut Node);
}

impl Record for ServerEvent {
    fn record(self, node: &mut Node) {
        node.server_events.push(self);
    }
}

impl Record for ClientEvent {
    fn record(self, node: &mut Node) {
        node.client_events.push(self);
    }
}

impl<Ev: Record> Transport<Ev> for NodeIo<'_> {
    fn now(&mut self) -> Instant {
        self.net.now
    }

    fn listen(&mut self, addr: SocketAddr, _shared: bool) {
        let net = &mut *self.net;
        let ip = if addr.ip().is_unspecified() {
            net.nodes[self.node.0].ip
        } else {
            addr.ip()
        };
        let port = if addr.port() == 0 {
            net.next_port += 1;
            net.next_port
        } else {
            addr.port()
        };
        let bound = SocketAddr::new(ip, port);
        if ip != net.nodes[self.node.0].ip || net.listeners.contains_key(&bound) {
            let error = io::Error::new(io::ErrorKind::AddrInUse, "address in use or not local");
            return self.outcomes.push(Outcome::ListenFailed(addr, error));
        }
        net.listeners.insert(bound, self.node);
        let reported = SocketAddr::new(addr.ip(), port);
        self.outcomes.push(Outcome::Listening(reported));
    }

    /// `from` binds that port of the node's IP, as the transports do; a second
    /// connection with the same two addresses fails, as the kernel's would.
    fn connect(&mut self, conn: ConnId, addr: SocketAddr, from: Option<u16>) {
        let net = &mut *self.net;
        let node = self.node;
        net.connects.push((node, addr, from));
        let local = match from {
            Some(port) => SocketAddr::new(net.nodes[node.0].ip, port),
            None => net.alloc_local(node),
        };
        let taken = net
            .links
            .iter()
            .any(|((n, _), l)| *n == node && l.local == local && l.remote == addr);
        if taken {
            let error = io::Error::new(io::ErrorKind::AddrInUse, "address in use");
            return self.outcomes.push(Outcome::ConnectFailed(conn, error));
        }
        if net.dropped.contains(&addr) || net.dropped_ips.contains(&addr.ip()) {
            net.hanging.insert((node, conn));
            return;
        }
        let Some(accepted) = net.accept_at(addr, local) else {
            let error = io::Error::new(io::ErrorKind::ConnectionRefused, "connection refused");
            return self.outcomes.push(Outcome::ConnectFailed(conn, error));
        };
        net.links
            .insert((node, conn), Link::new(accepted, local, addr));
        net.links
            .insert(accepted, Link::new((node, conn), addr, local));
        net.drain(accepted.0);
        self.outcomes.push(Outcome::Connected(conn, local));
    }

    fn transmit(&mut self, conn: ConnId, bytes: &[u8]) {
        let node = self.node;
        if let Some(link) = self.net.links.get_mut(&(node, conn)) {
            assert!(
                !link.closing,
                "{node:?} transmitted on {conn:?} after closing it"
            );
            link.in_flight.extend(bytes);
        }
    }

    fn close(&mut self, conn: ConnId) {
        self.net.hanging.remove(&(self.node, conn));
        if let Some(link) = self.net.links.get_mut(&(self.node, conn)) {
            link.closing = true;
        }
    }

    /// A reset: what this end had not delivered yet is lost, the peer sees the end.
    fn abort(&mut self, conn: ConnId) {
        self.net.hanging.remove(&(self.node, conn));
        if let Some(link) = self.net.links.get_mut(&(self.node, conn)) {
            link.in_flight.clear();
            link.closing = true;
        }
    }

    fn show(&mut self, event: Ev) {
        event.record(&mut self.net.nodes[self.node.0]);
    }

    fn exit(&mut self, result: Result<(), ExitError>) {
        let net = &mut *self.net;
        let node = self.node;
        // Tests compare what the person would read.
        net.nodes[node.0].exited = Some(result.map_err(|e| e.to_string()));
        // The process ends: flush what it queued, then its connections close.
        for (_, link) in net
            .links
            .range_mut((node, ConnId(0))..=(node, ConnId(u64::MAX)))
        {
            link.closing = true;
        }
        net.listeners.retain(|_, n| *n != node);
        net.hanging.retain(|(n, _)| *n != node);
    }

    fn outcomes(&mut self) -> &mut Outcomes {
        &mut self.outcomes
    }
}

impl Link {
    fn new(peer: End, local: SocketAddr, remote: SocketAddr) -> Link {
        Link {
            peer,
            local,
            remote,
            in_flight: VecDeque::new(),
            closing: false,
        }
    }
}

/// Splits a response stream into complete responses (test-side parsing).
pub fn responses(bytes: &[u8]) -> Vec<bridgechat_core::Response> {
    let mut decoder = bridgechat_core::Decoder::default();
    let mut input = bytes;
    let mut out = Vec::new();
    while let Ok(Some(r)) = decoder.decode_response(&mut input) {
        out.push(r);
    }
    out
}

pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);

/// What a user (curl) sees for each server answer, written out by hand from the contract
/// rather than with the codec, so the tests check the wire bytes themselves.
pub mod wire {
    /// `200 OK` with no contact (BRIDGE that waits, UNREGISTER).
    pub fn ok() -> String {
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_owned()
    }

    /// `200 OK` echoing a contact (REGISTER, BRIDGE that pairs).
    pub fn ok_contact(name: &str, ip: &str, port: u16) -> String {
        format!("HTTP/1.1 200 OK\r\nName: {name}\r\nIP: {ip}\r\nPort: {port}\r\nContent-Length: 0\r\n\r\n")
    }

    /// An error that keeps the connection open (400 bad value, 403, 409, 501 unknown method).
    pub fn error(status: &str, reason: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{reason}",
            reason.len()
        )
    }

    /// An error after which the server closes the connection (framing errors, 408).
    pub fn error_closing(status: &str, reason: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{reason}",
            reason.len()
        )
    }

    /// A 503 with `Retry-After`, then close.
    pub fn unavailable(retry_after: u32, reason: &str) -> String {
        format!(
            "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: {retry_after}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{reason}",
            reason.len()
        )
    }

    pub fn register(name: &str, ip: &str, port: u16) -> String {
        format!("REGISTER / HTTP/1.1\r\nName: {name}\r\nIP: {ip}\r\nPort: {port}\r\n\r\n")
    }

    /// What the bridgechat client sends: REGISTER asking for protocol version 2.
    pub fn client_register(name: &str, ip: &str, port: u16) -> String {
        format!("REGISTER / HTTP/1.1\r\nName: {name}\r\nIP: {ip}\r\nPort: {port}\r\nBridgechat: 2\r\n\r\n")
    }

    pub fn bridge() -> String {
        "BRIDGE / HTTP/1.1\r\n\r\n".to_owned()
    }

    pub fn bridge_as(name: &str) -> String {
        format!("BRIDGE / HTTP/1.1\r\nName: {name}\r\n\r\n")
    }

    pub fn unregister() -> String {
        "UNREGISTER / HTTP/1.1\r\n\r\n".to_owned()
    }
}
