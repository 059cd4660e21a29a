//! Stand-ins for the class's own programs, written from what the course's wire
//! format is known to be, to test bridgechat against:
//!
//! - [`CourseClient`]: a student's client. Every request to the server is a new
//!   TCP connection, one write, one read of at most 4096 bytes, and a close. It
//!   parses `BRIDGEACK` by position, as several clients do, and fails on any
//!   other shape. Its listener takes a `CHAT` in one read.
//! - [`ReferenceServer`]: like the instructor's server. It answers requests one
//!   after another on one connection, `REGACK` without a `Status` line, and
//!   `BRIDGEACK` naming the other client or the empty form, pairing clients in
//!   the order their `BRIDGE`s arrive.
//! - [`RawChat`]: a raw peer chat. Each turn is one write of the bare text; one
//!   read is one message; `QUIT` ends it, and so does end of stream.
//!
//! They are plain blocking `std::net` code and use nothing from bridgechat, so
//! that they check bridgechat's reading of the format rather than share it.
//! Every wait is bounded by [`WAIT`].
// Each test file uses a different part of these stand-ins.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long any one step may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// What the course programs read at most in one read.
const READ_SIZE: usize = 4096;

/// The address the course programs register and listen on.
const LOOPBACK: &str = "127.0.0.1";

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, what.into())
}

/// Connects with every later read and write bounded by [`WAIT`].
fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, WAIT)?;
    stream.set_read_timeout(Some(WAIT))?;
    stream.set_write_timeout(Some(WAIT))?;
    Ok(stream)
}

/// One read of at most [`READ_SIZE`] bytes: what the course programs call a message.
fn read_once(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; READ_SIZE];
    let n = stream.read(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// The `key: value` lines of a block, by position, the verb line first.
fn block_lines(block: &str) -> Vec<&str> {
    block.split("\r\n").collect()
}

/// A client as the course knows it: a name, a chat address and a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: String,
    pub ip: String,
    pub port: u16,
}

impl Peer {
    pub fn addr(&self) -> io::Result<SocketAddr> {
        format!("{}:{}", self.ip, self.port)
            .parse()
            .map_err(|_| invalid(format!("not an address: {}:{}", self.ip, self.port)))
    }

    /// The three headers every course message that names a client carries.
    fn headers(&self) -> String {
        format!(
            "clientID: {}\r\nIP: {}\r\nPort: {}\r\n",
            self.id, self.ip, self.port
        )
    }

    /// Reads `clientID`, `IP`, `Port` from lines 1-3, anchored, as the clients do.
    fn from_lines(lines: &[&str]) -> io::Result<Peer> {
        let value = |i: usize, key: &str| -> io::Result<String> {
            lines
                .get(i)
                .and_then(|line| line.strip_prefix(key))
                .and_then(|rest| rest.strip_prefix(": "))
                .map(str::to_owned)
                .ok_or_else(|| invalid(format!("line {i} is not `{key}: ...`: {lines:?}")))
        };
        let id = value(1, "clientID")?;
        let ip = value(2, "IP")?;
        let port = value(3, "Port")?;
        let port = if port.is_empty() {
            0
        } else {
            port.parse()
                .map_err(|_| invalid(format!("bad port {port:?}")))?
        };
        Ok(Peer { id, ip, port })
    }
}

/// One exchange on a fresh connection, as the course clients do it, except
/// that it reads until the other side closes (within [`WAIT`], else it
/// panics): what a server or peer answered before closing.
pub fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = connect(addr).expect("a connection");
    stream.write_all(request).expect("the request sent");
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("not closed within {WAIT:?}: {e}"),
    }
    answer
}

// ---------------------------------------------------------------------------
// The per-request client and its chat listener

/// A student's course client: per-request server connections, a chat listener.
#[derive(Debug)]
pub struct CourseClient {
    pub me: Peer,
    server: SocketAddr,
    listener: TcpListener,
}

impl CourseClient {
    /// Listens on 127.0.0.1 (an OS-chosen port) and will register that address.
    pub fn new(id: &str, server: SocketAddr) -> io::Result<CourseClient> {
        let listener = TcpListener::bind((LOOPBACK, 0))?;
        let me = Peer {
            id: id.to_owned(),
            ip: LOOPBACK.to_owned(),
            port: listener.local_addr()?.port(),
        };
        Ok(CourseClient {
            me,
            server,
            listener,
        })
    }

    /// One request: a new connection, one write, one read of at most 4096 bytes, close.
    pub fn request(&self, request: &[u8]) -> io::Result<Vec<u8>> {
        let mut stream = connect(self.server)?;
        stream.write_all(request)?;
        let answer = read_once(&mut stream)?;
        drop(stream);
        Ok(answer)
    }

    /// `REGISTER`; returns the answer, whose content the course clients ignore.
    pub fn register(&self) -> io::Result<String> {
        let request = format!("REGISTER\r\n{}\r\n", self.me.headers());
        let answer = self.request(request.as_bytes())?;
        let answer = String::from_utf8(answer).map_err(|_| invalid("REGACK is not UTF-8"))?;
        if !answer.starts_with("REGACK\r\n") {
            return Err(invalid(format!("expected REGACK, got {answer:?}")));
        }
        Ok(answer)
    }

    /// `BRIDGE`; the peer named by the answer, or `None` for the empty form.
    /// Fails, as the course clients crash, on any answer of another shape.
    pub fn bridge(&self) -> io::Result<Option<Peer>> {
        let request = format!("BRIDGE\r\nclientID: {}\r\n\r\n", self.me.id);
        let answer = self.request(request.as_bytes())?;
        let answer = String::from_utf8(answer).map_err(|_| invalid("BRIDGEACK is not UTF-8"))?;
        let lines = block_lines(&answer);
        if lines.len() != 6 || lines[0] != "BRIDGEACK" || lines[4..] != ["", ""] {
            return Err(invalid(format!("not a BRIDGEACK: {answer:?}")));
        }
        let peer = Peer::from_lines(&lines)?;
        match (peer.id.is_empty(), peer.ip.is_empty(), peer.port) {
            (true, true, 0) => Ok(None),
            (false, false, port) if port != 0 => Ok(Some(peer)),
            _ => Err(invalid(format!("half-empty BRIDGEACK: {answer:?}"))),
        }
    }

    /// Starts a chat with `peer`: connects and sends `CHAT` as its own write.
    /// The initiator writes the first turn.
    pub fn chat(&self, peer: &Peer) -> io::Result<RawChat> {
        let mut stream = connect(peer.addr()?)?;
        let chat = format!("CHAT\r\n{}\r\n", self.me.headers());
        stream.write_all(chat.as_bytes())?;
        Ok(RawChat { stream })
    }

    /// Waits (at most [`WAIT`]) for a peer to connect, takes its `CHAT` in one read,
    /// and returns who it says it is. The `CHAT` must be alone in that read: a
    /// course program would lose whatever came with it.
    pub fn accept_chat(&self) -> io::Result<(Peer, RawChat)> {
        let mut stream = accept_within(&self.listener, WAIT)?;
        stream.set_read_timeout(Some(WAIT))?;
        stream.set_write_timeout(Some(WAIT))?;
        let chat = read_once(&mut stream)?;
        let chat = String::from_utf8(chat).map_err(|_| invalid("CHAT is not UTF-8"))?;
        let lines = block_lines(&chat);
        if lines.len() != 6 || lines[0] != "CHAT" || lines[4..] != ["", ""] {
            return Err(invalid(format!("not a CHAT alone in one read: {chat:?}")));
        }
        Ok((Peer::from_lines(&lines)?, RawChat { stream }))
    }
}

/// Accepts one connection, polling a non-blocking listener until `within` runs out.
fn accept_within(listener: &TcpListener, within: Duration) -> io::Result<TcpStream> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + within;
    let accepted = loop {
        match listener.accept() {
            Ok((stream, _)) => break Ok(stream),
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                break Err(io::Error::new(ErrorKind::TimedOut, "nobody connected"))
            }
            Err(e) => break Err(e),
        }
    };
    listener.set_nonblocking(false)?;
    let stream = accepted?;
    stream.set_nonblocking(false)?;
    Ok(stream)
}

// ---------------------------------------------------------------------------
// Raw peer chat

/// How a peer says it quits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuitForm {
    /// `QUIT\r\n\r\n\r\n`, what most course programs send.
    Block,
    /// `QUIT` alone, what some send.
    Bare,
}

/// What one read on a raw chat delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    Text(String),
    Quit,
    Closed,
}

/// One side of a raw peer chat: one write per turn, one read per message.
#[derive(Debug)]
pub struct RawChat {
    stream: TcpStream,
}

impl RawChat {
    /// One turn: the text alone, in one write, no newline.
    pub fn send_turn(&mut self, text: &str) -> io::Result<()> {
        self.stream.write_all(text.as_bytes())
    }

    /// One read: a message, the peer's quit, or the end of the chat.
    pub fn receive_turn(&mut self) -> io::Result<Received> {
        let read = read_once(&mut self.stream)?;
        if read.is_empty() {
            return Ok(Received::Closed);
        }
        let text = String::from_utf8_lossy(&read).into_owned();
        if text.trim() == "QUIT" {
            return Ok(Received::Quit);
        }
        Ok(Received::Text(text))
    }

    /// Sends the quit and closes the connection.
    pub fn quit(mut self, form: QuitForm) -> io::Result<()> {
        let bytes: &[u8] = match form {
            QuitForm::Block => b"QUIT\r\n\r\n\r\n",
            QuitForm::Bare => b"QUIT",
        };
        self.stream.write_all(bytes)?;
        self.stream.shutdown(Shutdown::Both)
    }

    /// Closes without a quit: end of stream also ends a chat.
    pub fn close(self) -> io::Result<()> {
        self.stream.shutdown(Shutdown::Both)
    }
}

// ---------------------------------------------------------------------------
// The reference-like server

/// Who is registered and who waits for a peer.
#[derive(Debug, Default)]
struct Registry {
    clients: HashMap<String, Peer>,
    waiting: Option<String>,
}

impl Registry {
    /// The answer to one request block, or `None` for a request it ignores.
    fn answer(&mut self, block: &str) -> Option<String> {
        let lines = block_lines(block);
        let header = |key: &str| {
            lines[1..].iter().find_map(|line| {
                line.strip_prefix(key)
                    .and_then(|rest| rest.strip_prefix(": "))
                    .map(str::to_owned)
            })
        };
        match lines[0] {
            "REGISTER" => {
                let peer = Peer {
                    id: header("clientID")?,
                    ip: header("IP")?,
                    port: header("Port")?.parse().ok()?,
                };
                let answer = format!("REGACK\r\n{}\r\n", peer.headers());
                self.clients.insert(peer.id.clone(), peer);
                Some(answer)
            }
            "BRIDGE" => {
                let asker = header("clientID")?;
                let other = match self.waiting.take() {
                    Some(waiting) if waiting != asker => self.clients.get(&waiting).cloned(),
                    _ => None,
                };
                match other {
                    Some(peer) => Some(format!("BRIDGEACK\r\n{}\r\n", peer.headers())),
                    None => {
                        if self.clients.contains_key(&asker) {
                            self.waiting = Some(asker);
                        }
                        Some("BRIDGEACK\r\nclientID: \r\nIP: \r\nPort: \r\n\r\n".to_owned())
                    }
                }
            }
            _ => None,
        }
    }
}

/// A course server like the instructor's, on 127.0.0.1; stops when dropped.
#[derive(Debug)]
pub struct ReferenceServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl ReferenceServer {
    pub fn start() -> io::Result<ReferenceServer> {
        let listener = TcpListener::bind((LOOPBACK, 0))?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let registry = Arc::new(Mutex::new(Registry::default()));
        let acceptor = {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let registry = Arc::clone(&registry);
                    thread::spawn(move || serve(stream, &registry));
                }
            })
        };
        Ok(ReferenceServer {
            addr,
            stop,
            acceptor: Some(acceptor),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ReferenceServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the acceptor so that it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, WAIT);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Answers the requests of one connection in order until it closes or idles past [`WAIT`].
fn serve(mut stream: TcpStream, registry: &Mutex<Registry>) {
    if stream.set_read_timeout(Some(WAIT)).is_err() {
        return;
    }
    let mut pending = String::new();
    loop {
        let Ok(read) = read_once(&mut stream) else {
            return;
        };
        if read.is_empty() {
            return;
        }
        pending.push_str(&String::from_utf8_lossy(&read));
        if pending.len() > 64 * 1024 {
            return;
        }
        while let Some(end) = pending.find("\r\n\r\n") {
            let block = pending[..end + 2].trim_start_matches("\r\n").to_owned();
            pending.drain(..end + 4);
            if block.is_empty() {
                continue;
            }
            let answer = registry
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .answer(&block);
            if let Some(answer) = answer {
                if stream.write_all(answer.as_bytes()).is_err() {
                    return;
                }
            }
        }
    }
}
