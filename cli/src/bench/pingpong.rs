//! The reference for a chat turn: a raw TCP ping-pong of the same size on loopback.
//!
//! Same process layout and event loop as the chat stage of the load generator
//! (one `mio::Poll` drives both ends, `TCP_NODELAY`, edge-triggered reads until
//! `WouldBlock`), but the bytes are opaque: the initiator writes `size` bytes,
//! the other end echoes whatever arrives, the initiator waits for all `size`
//! bytes back. The difference to the chat stage is what the protocol costs:
//! encoding, decoding, and the CHAT handshake (timed separately there).

use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use super::hist::Histogram;
use super::load::{error_text, write_out};

const LISTENER: Token = Token(usize::MAX - 1);

#[derive(Debug, Default)]
pub struct PingPongReport {
    pub pairs: usize,
    pub size: usize,
    pub round_trips: u64,
    pub elapsed: Duration,
    pub latency: Histogram,
}

#[derive(Debug)]
struct End {
    stream: TcpStream,
    out: Vec<u8>,
    out_pos: usize,
    /// Initiator: bytes of the current echo received so far.
    got: usize,
    rounds_left: u64,
    sent_at: Instant,
    connected: bool,
}

/// Runs `pairs` ping-pongs of `rounds` round trips of `size` bytes on `ip`.
pub fn run(
    ip: IpAddr,
    pairs: usize,
    rounds: u64,
    size: usize,
    progress: bool,
) -> Result<PingPongReport, String> {
    let mut poll = Poll::new().map_err(|e| format!("cannot create a poller: {e}"))?;
    let mut listener = TcpListener::bind(SocketAddr::new(ip, 0))
        .map_err(|e| format!("cannot bind a listener on {ip}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .map_err(|e| e.to_string())?;
    // Even tokens: initiators; odd tokens: echo ends.
    let mut ends: Vec<Option<End>> = Vec::new();
    let payload = vec![b'x'; size];
    for _ in 0..pairs {
        let mut stream =
            TcpStream::connect(addr).map_err(|e| format!("connect: {}", error_text(&e)))?;
        let token = Token(ends.len());
        poll.registry()
            .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| e.to_string())?;
        ends.push(Some(End {
            stream,
            out: Vec::new(),
            out_pos: 0,
            got: 0,
            rounds_left: rounds,
            sent_at: Instant::now(),
            connected: false,
        }));
        ends.push(None);
    }
    let mut report = PingPongReport {
        pairs,
        size,
        ..PingPongReport::default()
    };
    let mut scratch = vec![0u8; 64 * 1024];
    let mut events = Events::with_capacity(1024);
    let mut accepted = 0;
    let mut done = 0;
    let start = Instant::now();
    let mut next_progress = start + Duration::from_secs(1);
    let mut last_activity = start;
    while done < pairs {
        let now = Instant::now();
        if now >= next_progress {
            if progress {
                eprintln!(
                    "[pingpong {:.0}s] {} round trips",
                    (now - start).as_secs_f64(),
                    report.round_trips
                );
            }
            next_progress += Duration::from_secs(1);
        }
        if now - last_activity > Duration::from_secs(10) {
            return Err("raw ping-pong stalled for 10 s".into());
        }
        match poll.poll(&mut events, Some(Duration::from_millis(100))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("poll failed: {e}")),
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            // Pair accepted streams with initiators in order.
                            let slot = 2 * accepted + 1;
                            accepted += 1;
                            if slot >= ends.len() {
                                continue;
                            }
                            let _ = stream.set_nodelay(true);
                            poll.registry()
                                .register(
                                    &mut stream,
                                    Token(slot),
                                    Interest::READABLE | Interest::WRITABLE,
                                )
                                .map_err(|e| e.to_string())?;
                            ends[slot] = Some(End {
                                stream,
                                out: Vec::new(),
                                out_pos: 0,
                                got: 0,
                                rounds_left: 0,
                                sent_at: now,
                                connected: true,
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(format!("accept: {e}")),
                    }
                }
                continue;
            }
            let t = event.token().0;
            let Some(end) = ends.get_mut(t).and_then(Option::as_mut) else {
                continue;
            };
            let initiator = t % 2 == 0;
            if initiator && !end.connected {
                if let Some(e) = end.stream.take_error().map_err(|e| e.to_string())? {
                    return Err(format!("connect: {}", error_text(&e)));
                }
                if end.stream.peer_addr().is_err() {
                    continue;
                }
                end.connected = true;
                let _ = end.stream.set_nodelay(true);
                end.out.extend_from_slice(&payload);
                end.sent_at = Instant::now();
                write_out(&mut end.stream, &mut end.out, &mut end.out_pos)
                    .map_err(|e| e.to_string())?;
                continue;
            }
            if event.is_writable() {
                write_out(&mut end.stream, &mut end.out, &mut end.out_pos)
                    .map_err(|e| e.to_string())?;
            }
            if !event.is_readable() {
                continue;
            }
            loop {
                match end.stream.read(&mut scratch) {
                    Ok(0) => {
                        // The echo end sees its initiator finish.
                        ends[t] = None;
                        break;
                    }
                    Ok(n) => {
                        let now = Instant::now();
                        last_activity = now;
                        if initiator {
                            end.got += n;
                            if end.got >= size {
                                end.got -= size;
                                report.round_trips += 1;
                                report.latency.record(now - end.sent_at);
                                end.rounds_left -= 1;
                                if end.rounds_left == 0 {
                                    done += 1;
                                    ends[t] = None;
                                    break;
                                }
                                end.out.extend_from_slice(&payload);
                                end.sent_at = now;
                                write_out(&mut end.stream, &mut end.out, &mut end.out_pos)
                                    .map_err(|e| e.to_string())?;
                            }
                        } else {
                            end.out.extend_from_slice(&scratch[..n]);
                            write_out(&mut end.stream, &mut end.out, &mut end.out_pos)
                                .map_err(|e| e.to_string())?;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("read: {}", error_text(&e))),
                }
            }
        }
    }
    report.elapsed = start.elapsed();
    Ok(report)
}
