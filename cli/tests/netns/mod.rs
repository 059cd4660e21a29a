//! A small internet in network namespaces, for the reachability tests.
//!
//! One rig per test: an "internet" bridge in its own namespace, a server host
//! on it, hosts with public addresses, and home hosts each behind their own
//! router namespace that masquerades and drops unsolicited inbound packets.
//! Every namespace name carries this process's id and a random tag, so tests
//! running in parallel (and leftovers of a killed run) never collide; the
//! rig deletes every namespace it made when it drops, panic or not.
//!
//! Sockets are made inside a namespace by a short-lived thread that enters it
//! (`setns` is per thread); a socket stays in the namespace it was made in, so
//! the test then uses it from any thread. Processes run under `ip netns exec`.
// Each test uses a different part of the rig.
#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use nix::sched::{setns, CloneFlags};
use socket2::{Domain, Protocol, Socket, Type};

use crate::common::{Proc, WAIT};

/// Set to `1` (CI does) to fail instead of skip where namespaces cannot be made.
pub const REQUIRE_ENV: &str = "BRIDGECHAT_REQUIRE_NETNS";

/// Every namespace this rig makes starts with this, then `PID-TAG-`.
const PREFIX: &str = "bcnet-";

/// The internet segment: TEST-NET-3, never routed anywhere real.
const INTERNET: [u8; 3] = [203, 0, 113];
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// The port `bridgechat server` listens on in the rig.
pub const SERVER_PORT: u16 = 7070;

/// How a home router rewrites the source port of outgoing connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat {
    /// Plain `MASQUERADE`: keeps the source port when it is free.
    PortPreserving,
    /// `MASQUERADE --random-fully`: a random source port per connection.
    PortRandomising,
}

/// A network namespace by name.
#[derive(Debug, Clone)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Runs `work` on a thread inside this namespace; sockets it makes live here.
    pub fn enter<T: Send>(&self, work: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        thread::scope(|scope| {
            let worker = scope.spawn(|| {
                let ns = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                setns(ns, CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("cannot enter {path}: {e}"));
                work()
            });
            worker
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// `program args...` to be run inside this namespace.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.name, program])
            .args(args);
        command
    }

    /// `ip -n NAME args...`, which must succeed.
    fn ip(&self, args: &str) {
        let mut full = vec!["-n", &self.name];
        full.extend(args.split_whitespace());
        must("ip", &full);
    }
}

/// A host: its namespace, its own address, and the address the internet sees it by.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub ns: Netns,
    pub ip: Ipv4Addr,
    /// Its own address if public, else its router's internet-side address.
    pub public_ip: Ipv4Addr,
    /// The router in front of it, if any.
    pub nat: Option<Nat>,
}

impl Host {
    /// A TCP socket made in this host's namespace, with `SO_REUSEADDR` so
    /// several connections can leave from one local port.
    pub fn socket(&self) -> Socket {
        self.ns.enter(|| {
            let socket =
                Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("TCP socket");
            socket.set_reuse_address(true).expect("SO_REUSEADDR");
            socket
        })
    }

    /// Connects to `to` from `local_port` (0: any), waiting at most `timeout`.
    pub fn connect_from(
        &self,
        local_port: u16,
        to: SocketAddrV4,
        timeout: Duration,
    ) -> io::Result<TcpStream> {
        let socket = self.socket();
        socket.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, local_port).into())?;
        socket.connect_timeout(&to.into(), timeout)?;
        let stream = TcpStream::from(socket);
        stream.set_read_timeout(Some(WAIT))?;
        stream.set_write_timeout(Some(WAIT))?;
        Ok(stream)
    }

    /// A listener on all of this host's addresses at `port` (0: any).
    pub fn listen(&self, port: u16) -> TcpListener {
        let socket = self.socket();
        socket
            .bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port).into())
            .unwrap_or_else(|e| panic!("{}: bind port {port}: {e}", self.name));
        socket.listen(16).expect("listen");
        TcpListener::from(socket)
    }

    /// `bridgechat args...` running on this host, named `name` in failure messages.
    pub fn bridgechat(&self, name: &str, args: &[&str]) -> Proc {
        let mut command = self.ns.command(env!("CARGO_BIN_EXE_bridgechat"), args);
        command.env_remove("BRIDGECHAT_SERVER");
        Proc::spawn_command(name, command)
    }

    /// `bridgechat server` listening on this host at [`SERVER_PORT`], once it says so.
    pub fn bridgechat_server(&self, extra: &[&str]) -> (Proc, SocketAddrV4) {
        let listen = SocketAddrV4::new(self.ip, SERVER_PORT);
        let listen_arg = listen.to_string();
        let mut args = vec!["server", "--listen", &listen_arg];
        args.extend_from_slice(extra);
        let mut server = self.bridgechat("server", &args);
        server.listening();
        (server, listen)
    }

    /// `bridgechat client --name NAME --server SERVER extra...`, once it listens.
    pub fn bridgechat_client(&self, name: &str, server: SocketAddrV4, extra: &[&str]) -> Proc {
        let server_arg = server.to_string();
        let mut args = vec!["client", "--name", name, "--server", &server_arg];
        args.extend_from_slice(extra);
        let mut client = self.bridgechat(name, &args);
        client.listening();
        client
    }

    /// Connects to `observer` from `local_port` and returns the connection
    /// (keep it open to keep the router's mapping) and the address the
    /// observer saw it come from.
    pub fn observed(&self, observer: &Observer, local_port: u16) -> (TcpStream, SocketAddrV4) {
        let stream = self
            .connect_from(local_port, observer.addr, WAIT)
            .unwrap_or_else(|e| {
                panic!(
                    "{}: cannot reach the observer {}: {e}",
                    self.name, observer.addr
                )
            });
        let mut line = String::new();
        BufReader::new(&stream)
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("{}: no answer from the observer: {e}", self.name));
        let seen = line
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("observer said {line:?}: {e}"));
        (stream, seen)
    }
}

/// A listener on the server host that writes each connection the address it
/// came from (`IP:PORT` and a newline), keeps it open, and reports it.
pub struct Observer {
    pub addr: SocketAddrV4,
    pub peers: Receiver<SocketAddr>,
    /// A handle on the listening socket, shut down to end the accept loop.
    listener: Socket,
    thread: Option<JoinHandle<()>>,
}

impl Observer {
    pub fn start(host: &Host, port: u16) -> Observer {
        let listener = host.listen(port);
        let handle = Socket::from(listener.try_clone().expect("clone listener"));
        let (tx, peers) = mpsc::channel();
        let thread = thread::spawn(move || {
            let mut open = Vec::new();
            // Ends when the listener is shut down.
            while let Ok((mut stream, peer)) = listener.accept() {
                let _ = writeln!(stream, "{peer}");
                open.push(stream);
                if tx.send(peer).is_err() {
                    return;
                }
            }
        });
        Observer {
            addr: SocketAddrV4::new(host.ip, port),
            peers,
            listener: handle,
            thread: Some(thread),
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        // On Linux, shutting a listening socket down wakes a blocked accept with an error.
        let _ = self.listener.shutdown(std::net::Shutdown::Both);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One small internet; every namespace it made is deleted when it drops.
#[derive(Debug)]
pub struct Rig {
    /// `bcnet-PID-TAG-`: the start of every namespace name of this rig.
    prefix: String,
    internet: Netns,
    /// Made so far, in order; deleted in reverse.
    namespaces: Vec<String>,
    /// Ports on the internet bridge so far (one per host or router).
    ports: u8,
    /// Internet addresses handed out so far, from `.21` (the server's is fixed).
    addresses: u8,
    routers: u8,
}

/// Why namespaces cannot be made here, found once per test process.
fn unavailable() -> &'static Option<String> {
    static FOUND: OnceLock<Option<String>> = OnceLock::new();
    FOUND.get_or_init(|| {
        if !nix::unistd::geteuid().is_root() {
            return Some("not running as root".into());
        }
        for (tool, package) in [("ip", "iproute2"), ("iptables", "iptables")] {
            if let Err(e) = run(tool, &["-V"]) {
                return Some(format!("`{tool} -V` failed ({e}); install {package}"));
            }
        }
        remove_leftovers();
        // Make one namespace with a NAT rule and a conntrack match, the rig's needs.
        let probe = format!("{PREFIX}{}-probe", std::process::id());
        let found = run("ip", &["netns", "add", &probe])
            .and_then(|()| {
                run(
                    "ip",
                    &[
                        "netns",
                        "exec",
                        &probe,
                        "iptables",
                        "-t",
                        "nat",
                        "-A",
                        "POSTROUTING",
                        "-j",
                        "MASQUERADE",
                        "--random-fully",
                    ],
                )
            })
            .and_then(|()| {
                run(
                    "ip",
                    &[
                        "netns",
                        "exec",
                        &probe,
                        "iptables",
                        "-A",
                        "FORWARD",
                        "-m",
                        "conntrack",
                        "--ctstate",
                        "ESTABLISHED,RELATED",
                        "-j",
                        "ACCEPT",
                    ],
                )
            })
            .err();
        let _ = run("ip", &["netns", "del", &probe]);
        found
    })
}

/// Deletes namespaces of earlier rigs whose process is gone (killed before
/// its rig could drop). Live processes' namespaces are left alone.
fn remove_leftovers() {
    let Ok(listing) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&listing.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{pid}")).exists() {
            kill_processes_in(name);
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}

/// A rig for `test`, or `None` (after saying why on one line) when namespaces
/// cannot be made here, unless [`REQUIRE_ENV`] is `1`: then it panics.
pub fn rig(test: &str) -> Option<Rig> {
    match unavailable() {
        None => Some(Rig::new()),
        Some(why) if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") => {
            panic!("{test}: {REQUIRE_ENV}=1 but network namespaces cannot be made: {why}")
        }
        Some(why) => {
            // Straight to stderr: libtest would capture an eprintln! of a passing test.
            let _ = writeln!(
                io::stderr(),
                "skipped {test}: network namespaces cannot be made here: {why}"
            );
            None
        }
    }
}

impl Rig {
    fn new() -> Rig {
        static RIGS: AtomicU32 = AtomicU32::new(0);
        let tag = RandomState::new().build_hasher().finish() as u16;
        let prefix = format!(
            "{PREFIX}{}-{tag:04x}{}-",
            std::process::id(),
            RIGS.fetch_add(1, Ordering::Relaxed)
        );
        let mut rig = Rig {
            internet: Netns {
                name: format!("{prefix}internet"),
            },
            prefix,
            namespaces: Vec::new(),
            ports: 0,
            addresses: 0,
            routers: 0,
        };
        let internet = rig.add_namespace("internet");
        internet.ip("link add br0 type bridge");
        internet.ip("link set br0 up");
        rig
    }

    /// A new namespace `PREFIX-role` with its loopback up.
    fn add_namespace(&mut self, role: &str) -> Netns {
        // iproute2 sets up /run/netns on first use; two at once can trip over each other.
        static CREATING: Mutex<()> = Mutex::new(());
        let name = format!("{}{role}", self.prefix);
        {
            let _one_at_a_time = CREATING.lock().unwrap_or_else(|e| e.into_inner());
            must("ip", &["netns", "add", &name]);
        }
        self.namespaces.push(name.clone());
        let ns = Netns { name };
        ns.ip("link set lo up");
        ns
    }

    /// Plugs `ns` into the internet bridge as `dev`, with the internet address
    /// ending in `last` (default: the next free one from `.21`).
    fn plug_into_internet(&mut self, ns: &Netns, dev: &str, last: Option<u8>) -> Ipv4Addr {
        self.ports += 1;
        let port = format!("p{}", self.ports);
        self.internet.ip(&format!(
            "link add {port} type veth peer name {dev} netns {}",
            ns.name
        ));
        self.internet.ip(&format!("link set {port} master br0 up"));
        let last = last.unwrap_or_else(|| {
            self.addresses += 1;
            20 + self.addresses
        });
        let ip = Ipv4Addr::new(INTERNET[0], INTERNET[1], INTERNET[2], last);
        ns.ip(&format!("addr add {ip}/24 dev {dev}"));
        ns.ip(&format!("link set {dev} up"));
        ip
    }

    /// The server host, at [`SERVER_IP`] on the internet.
    pub fn server_host(&mut self) -> Host {
        assert!(
            !self.namespaces.iter().any(|n| n.ends_with("-server")),
            "one server host per rig"
        );
        let ns = self.add_namespace("server");
        let ip = self.plug_into_internet(&ns, "eth0", Some(SERVER_IP.octets()[3]));
        Host {
            name: "server".into(),
            ns,
            ip,
            public_ip: ip,
            nat: None,
        }
    }

    /// A host on the internet with a public address and no NAT.
    pub fn public_host(&mut self, name: &str) -> Host {
        let ns = self.add_namespace(name);
        let ip = self.plug_into_internet(&ns, "eth0", None);
        Host {
            name: name.into(),
            ns,
            ip,
            public_ip: ip,
            nat: None,
        }
    }

    /// A host at home: `192.168.N.2` behind its own router (`192.168.N.1`
    /// inside, a public address outside) doing `nat`.
    pub fn home_host(&mut self, name: &str, nat: Nat) -> Host {
        self.routers += 1;
        let lan = self.routers;
        let router = self.add_namespace(&format!("{name}-router"));
        let wan_ip = self.plug_into_internet(&router, "wan", None);
        let host = self.add_namespace(name);
        let router_ip = Ipv4Addr::new(192, 168, lan, 1);
        let ip = Ipv4Addr::new(192, 168, lan, 2);
        router.ip(&format!(
            "link add lan type veth peer name eth0 netns {}",
            host.name
        ));
        router.ip(&format!("addr add {router_ip}/24 dev lan"));
        router.ip("link set lan up");
        host.ip(&format!("addr add {ip}/24 dev eth0"));
        host.ip("link set eth0 up");
        host.ip(&format!("route add default via {router_ip}"));
        let mut forward = router.command("sh", &["-c", "echo 1 >/proc/sys/net/ipv4/ip_forward"]);
        check("enable forwarding", forward.output());
        let mut restore = router.command("iptables-restore", &[]);
        restore.stdin(Stdio::piped());
        let rules = router_rules(nat);
        check(
            "iptables-restore",
            restore.spawn().and_then(|mut child| {
                child
                    .stdin
                    .take()
                    .expect("piped stdin")
                    .write_all(rules.as_bytes())?;
                child.wait_with_output()
            }),
        );
        Host {
            name: name.into(),
            ns: host,
            ip,
            public_ip: wan_ip,
            nat: Some(nat),
        }
    }

    /// Routes `from`'s packets for `to`'s home network to `to`'s router, as a
    /// neighbour on the same segment could: only the router's filter stands
    /// between them.
    pub fn route_to_home_network(&self, from: &Host, to: &Host) {
        assert!(to.nat.is_some(), "{} is not behind a router", to.name);
        let [a, b, c, _] = to.ip.octets();
        from.ns
            .ip(&format!("route add {a}.{b}.{c}.0/24 via {}", to.public_ip));
    }
}

/// A home router's rules (`iptables-restore` input): masquerade on the way
/// out; in, only packets of connections the inside started (conntrack
/// ESTABLISHED/RELATED); everything new from the internet is dropped, both to
/// the router itself (INPUT) and through it (FORWARD).
pub fn router_rules(nat: Nat) -> String {
    let random = match nat {
        Nat::PortPreserving => "",
        Nat::PortRandomising => " --random-fully",
    };
    format!(
        "*nat\n\
         :PREROUTING ACCEPT [0:0]\n\
         :INPUT ACCEPT [0:0]\n\
         :OUTPUT ACCEPT [0:0]\n\
         :POSTROUTING ACCEPT [0:0]\n\
         -A POSTROUTING -o wan -j MASQUERADE{random}\n\
         COMMIT\n\
         *filter\n\
         :INPUT DROP [0:0]\n\
         :FORWARD DROP [0:0]\n\
         :OUTPUT ACCEPT [0:0]\n\
         -A INPUT -i lo -j ACCEPT\n\
         -A INPUT -i lan -j ACCEPT\n\
         -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n\
         -A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n\
         -A FORWARD -i lan -o wan -j ACCEPT\n\
         COMMIT\n"
    )
}

impl Drop for Rig {
    fn drop(&mut self) {
        for name in self.namespaces.iter().rev() {
            kill_processes_in(name);
            if let Err(e) = run("ip", &["netns", "del", name]) {
                let _ = writeln!(io::stderr(), "rig teardown: {e}");
            }
        }
    }
}

/// Kills every process whose network namespace is `name` (never this one).
fn kill_processes_in(name: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() else {
        return;
    };
    let me = std::process::id().to_string();
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if pid != me {
            let _ = Command::new("kill").args(["-KILL", pid]).output();
        }
    }
}

/// Runs `program args...` to completion; the error says what failed and why.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let what = format!("{program} {}", args.join(" "));
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output();
    checked(&what, output)
}

fn must(program: &str, args: &[&str]) {
    if let Err(e) = run(program, args) {
        panic!("rig setup: {e}");
    }
}

fn check(what: &str, output: io::Result<Output>) {
    if let Err(e) = checked(what, output) {
        panic!("rig setup: {e}");
    }
}

fn checked(what: &str, output: io::Result<Output>) -> Result<(), String> {
    match output {
        Err(e) => Err(format!("`{what}` could not run: {e}")),
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "`{what}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}
