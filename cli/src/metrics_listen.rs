//! `--metrics-listen ADDR`: the operator pages (`/`, `/healthz`, `/metrics`)
//! on a separate, private address, served by one thread from the server's
//! shared numbers, so a scrape never waits on or slows the event loop.
//!
//! Connections are served one at a time (this address is for a scraper and
//! an operator, not the public), each bounded by a short read timeout.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use bridgechat_core::codec::{self, AfterError, Decoder, Limits, Request, Status};
use bridgechat_core::operator::Pages;

/// How long a connection may stay silent before it is closed.
const IDLE: Duration = Duration::from_secs(2);

/// Binds `addr` (so a bad address fails at start-up) and serves it on a thread;
/// returns the address actually bound.
pub fn start(addr: SocketAddr, pages: Pages) -> Result<SocketAddr, String> {
    let listener =
        TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr} for metrics: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("cannot listen on {addr} for metrics: {e}"))?;
    thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                // A client that breaks the connection only ends its own turn.
                let _ = serve(stream, &pages);
            }
        })
        .map_err(|e| format!("cannot start the metrics thread: {e}"))?;
    Ok(bound)
}

fn serve(mut stream: TcpStream, pages: &Pages) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE))?;
    stream.set_write_timeout(Some(IDLE))?;
    let mut decoder = Decoder::new(Limits::default());
    let mut buf = [0u8; 4096];
    let mut out = Vec::new();
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        let mut input = &buf[..n];
        loop {
            out.clear();
            let close = match decoder.decode_request(&mut input) {
                Ok(None) => break,
                Ok(Some(Request::Page(page))) => {
                    pages.answer(Instant::now(), &page, true, &mut out);
                    page.close
                }
                Ok(Some(_)) => {
                    let reason = "this address serves only GET /, /healthz and /metrics";
                    codec::write_error(
                        &mut out,
                        Status::NOT_IMPLEMENTED,
                        &reason,
                        AfterError::Close,
                    );
                    true
                }
                Err(error) => {
                    codec::write_error(&mut out, error.status, &error.reason, AfterError::Close);
                    true
                }
            };
            stream.write_all(&out)?;
            if close {
                return Ok(());
            }
        }
    }
}
