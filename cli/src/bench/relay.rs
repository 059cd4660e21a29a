//! The relay against a direct connection, in one run (`--phase relay`).
//!
//! Sets up `pairs` relayed pairs through a live server exactly as two v2
//! clients would (REGISTER with `Bridgechat: 2`, BRIDGE on both sides for a
//! ticket, then a `RELAY` connection each), holds them (for the server's RSS),
//! then times round trips of `size` opaque bytes over pair 0's relay and over a
//! direct loopback connection, alternating (the far end echoes from its own
//! thread, as a peer would), and a one-way bulk transfer over each. Blocking
//! sockets: what is measured is the server's copy, not this process's event loop.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use bridgechat_core::codec::{self, Decoder, Limits, Response, Version};
use bridgechat_core::{Contact, Name, Status};

use super::hist::Histogram;
use super::load::error_text;

/// What one run measured.
#[derive(Debug, Default)]
pub struct RelayReport {
    pub pairs: usize,
    pub size: usize,
    pub setup: Duration,
    pub relayed: Histogram,
    pub direct: Histogram,
    pub relayed_bytes_per_sec: f64,
    pub direct_bytes_per_sec: f64,
}

/// The two ends of one connection, relayed or direct.
struct Ends {
    a: TcpStream,
    b: TcpStream,
}

/// Bytes moved one way in the bulk measurement.
const BULK: usize = 4 << 20;

pub fn run(
    server: SocketAddr,
    ip: IpAddr,
    pairs: usize,
    rounds: u64,
    size: usize,
    hold: Duration,
) -> Result<RelayReport, String> {
    let started = Instant::now();
    let mut kept = Vec::with_capacity(pairs);
    for i in 0..pairs {
        kept.push(relayed_pair(server, ip, i)?);
    }
    let setup = started.elapsed();
    if !hold.is_zero() {
        eprintln!(
            "holding {pairs} relayed pairs for {:.1} s (read the server's RSS now)",
            hold.as_secs_f64()
        );
        std::thread::sleep(hold);
        eprintln!("hold over");
    }
    let (relay, _server_conns) = kept.swap_remove(0);
    let direct = direct_pair(ip)?;
    let mut report = RelayReport {
        pairs,
        size,
        setup,
        ..RelayReport::default()
    };
    // The far end of each connection echoes from its own thread, as a peer's
    // client would: a round trip wakes that thread on both paths, and the
    // relay's own wake-ups are what the relayed one adds.
    let size = size.max(1);
    let payload = vec![b'x'; size];
    let mut buf = vec![0u8; size];
    std::thread::scope(|scope| -> Result<(), String> {
        let echoes = [&relay.b, &direct.b].map(|end| scope.spawn(move || echo(end, size, rounds)));
        // Alternate so that drift in the machine's load hits both alike.
        for _ in 0..rounds {
            report
                .relayed
                .record(round_trip(&relay.a, &payload, &mut buf)?);
            report
                .direct
                .record(round_trip(&direct.a, &payload, &mut buf)?);
        }
        for echo in echoes {
            echo.join()
                .map_err(|_| "an echo thread panicked".to_string())??;
        }
        Ok(())
    })?;
    report.relayed_bytes_per_sec = bulk(&relay)?;
    report.direct_bytes_per_sec = bulk(&direct)?;
    Ok(report)
}

/// One relayed pair; also returns the two server connections, which stay open.
fn relayed_pair(
    server: SocketAddr,
    ip: IpAddr,
    i: usize,
) -> Result<(Ends, [TcpStream; 2]), String> {
    let mut waiter = Speaker::connect(server)?;
    let mut asker = Speaker::connect(server)?;
    waiter.register(&format!("relay-w{i}"), ip)?;
    asker.register(&format!("relay-a{i}"), ip)?;
    waiter.ask(|out| codec::write_bridge(out, None))?;
    let answer = asker.ask(|out| codec::write_bridge(out, None))?;
    let ticket = answer
        .ticket
        .ok_or("the BRIDGE answer has no ticket: is the server version 2?")?;
    let mut a = Speaker::connect(server)?;
    let mut b = Speaker::connect(server)?;
    a.send(|out| codec::write_relay(out, &ticket))?;
    b.send(|out| codec::write_relay(out, &ticket))?;
    a.expect_ok("RELAY")?;
    b.expect_ok("RELAY")?;
    if !a.rest.is_empty() || !b.rest.is_empty() {
        return Err("bytes arrived on a relay before any were sent".into());
    }
    Ok((
        Ends {
            a: a.stream,
            b: b.stream,
        },
        [waiter.stream, asker.stream],
    ))
}

fn direct_pair(ip: IpAddr) -> Result<Ends, String> {
    let listener =
        TcpListener::bind(SocketAddr::new(ip, 0)).map_err(|e| format!("bind on {ip}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let a = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {}", error_text(&e)))?;
    let (b, _) = listener.accept().map_err(|e| e.to_string())?;
    for s in [&a, &b] {
        s.set_nodelay(true).map_err(|e| e.to_string())?;
    }
    Ok(Ends { a, b })
}

/// `payload` out on `end` and back: the time for both ways.
fn round_trip(end: &TcpStream, payload: &[u8], buf: &mut [u8]) -> Result<Duration, String> {
    let sent = Instant::now();
    let mut end = end;
    end.write_all(payload).map_err(io_error)?;
    end.read_exact(buf).map_err(io_error)?;
    Ok(sent.elapsed())
}

/// Sends back each `size` bytes that arrive on `end`, `rounds` times.
fn echo(mut end: &TcpStream, size: usize, rounds: u64) -> Result<(), String> {
    let mut buf = vec![0u8; size];
    for _ in 0..rounds {
        end.read_exact(&mut buf).map_err(io_error)?;
        end.write_all(&buf).map_err(io_error)?;
    }
    Ok(())
}

/// Bytes per second from a to b for [`BULK`] bytes.
fn bulk(ends: &Ends) -> Result<f64, String> {
    let started = Instant::now();
    let chunk = vec![b'y'; 64 << 10];
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut got = 0;
            let mut buf = vec![0u8; 64 << 10];
            while got < BULK {
                match (&ends.b).read(&mut buf) {
                    Ok(0) => return Err("the connection closed during the bulk transfer".into()),
                    Ok(n) => got += n,
                    Err(e) => return Err(io_error(e)),
                }
            }
            Ok(())
        });
        let mut sent = 0;
        while sent < BULK {
            let n = chunk.len().min(BULK - sent);
            (&ends.a).write_all(&chunk[..n]).map_err(io_error)?;
            sent += n;
        }
        reader
            .join()
            .map_err(|_| "the reader panicked".to_string())?
    })?;
    Ok(BULK as f64 / started.elapsed().as_secs_f64())
}

fn io_error(e: io::Error) -> String {
    format!(
        "{} (a relay closed? start the server with a large --relay-budget and --relay-rate)",
        error_text(&e)
    )
}

/// A blocking request/answer connection to the server.
struct Speaker {
    stream: TcpStream,
    decoder: Decoder,
    /// Bytes read past the last answer.
    rest: Vec<u8>,
    out: Vec<u8>,
}

impl Speaker {
    fn connect(server: SocketAddr) -> Result<Speaker, String> {
        let stream = TcpStream::connect_timeout(&server, Duration::from_secs(5))
            .map_err(|e| format!("connect {server}: {}", error_text(&e)))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .map_err(|e| e.to_string())?;
        Ok(Speaker {
            stream,
            decoder: Decoder::new(Limits::default()),
            rest: Vec::new(),
            out: Vec::new(),
        })
    }

    fn send(&mut self, write: impl FnOnce(&mut Vec<u8>)) -> Result<(), String> {
        self.out.clear();
        write(&mut self.out);
        self.stream.write_all(&self.out).map_err(io_error)
    }

    /// Reads the next answer (skipping requests the server sends, such as MATCHED).
    fn answer(&mut self) -> Result<Response, String> {
        let mut buf = [0u8; 4096];
        loop {
            if self.rest.starts_with(b"HTTP/") {
                let mut input = &self.rest[..];
                let decoded = self
                    .decoder
                    .decode_response(&mut input)
                    .map_err(|e| format!("bad answer from the server: {e}"))?;
                let used = self.rest.len() - input.len();
                self.rest.drain(..used);
                if let Some(response) = decoded {
                    return Ok(response);
                }
            } else if !self.rest.is_empty() {
                let mut input = &self.rest[..];
                let decoded = self
                    .decoder
                    .decode_request(&mut input)
                    .map_err(|e| format!("bad notification from the server: {e}"))?;
                let used = self.rest.len() - input.len();
                self.rest.drain(..used);
                if decoded.is_some() {
                    continue;
                }
            }
            let n = self.stream.read(&mut buf).map_err(io_error)?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
            self.rest.extend_from_slice(&buf[..n]);
        }
    }

    fn ask(&mut self, write: impl FnOnce(&mut Vec<u8>)) -> Result<Response, String> {
        self.send(write)?;
        self.expect_ok("the request")
    }

    fn expect_ok(&mut self, what: &str) -> Result<Response, String> {
        let response = self.answer()?;
        if response.status != Status::OK {
            return Err(format!(
                "{what} was answered {} {}",
                response.status.code(),
                response.reason_text()
            ));
        }
        Ok(response)
    }

    fn register(&mut self, name: &str, ip: IpAddr) -> Result<(), String> {
        let name = Name::new(name.as_bytes()).map_err(|e| format!("name {name}: {e}"))?;
        let contact = Contact::new(name, ip, 9).map_err(|e| e.to_string())?;
        self.ask(|out| codec::write_register_as(out, &contact, Version::V2))?;
        Ok(())
    }
}
