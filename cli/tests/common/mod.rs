//! A running `bridgechat` process for the binary's end-to-end tests (cli.rs,
//! contract.rs): output read line by line on threads, every wait bounded by
//! [`WAIT`], the child killed when its `Proc` drops.
// Each test file uses a different part of this helper.
#![allow(dead_code, unused_macros, unused_imports)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// How long any one expected line may take.
pub const WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Out,
    Err,
}

/// Starts `bridgechat server` on a free loopback port with `extra` flags and `env`.
pub fn spawn_server(transport: &str, extra: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut args = vec![
        "server",
        "--listen",
        "127.0.0.1:0",
        "--transport",
        transport,
    ];
    args.extend_from_slice(extra);
    Proc::spawn_with_env("server", &args, env)
}

/// [`spawn_server`], then waits for `listening on`; returns the server and its address.
pub fn server(transport: &str, extra: &[&str]) -> (Proc, String) {
    let mut server = spawn_server(transport, extra, &[]);
    let addr = server.listening();
    (server, addr)
}

/// Declares each scenario `fn name(transport: &str)` as a test on every transport.
macro_rules! on_each_transport {
    ($($(#[$attr:meta])* $scenario:ident),* $(,)?) => {
        mod on_mio {
            $($(#[$attr])* #[test] fn $scenario() { super::$scenario("mio") })*
        }
        mod on_std {
            $($(#[$attr])* #[test] fn $scenario() { super::$scenario("std") })*
        }
        #[cfg(target_os = "linux")]
        mod on_uring {
            $($(#[$attr])* #[test] fn $scenario() { super::$scenario("uring") })*
        }
    };
}
pub(crate) use on_each_transport;

/// A running `bridgechat` with its output arriving line by line.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub lines: Receiver<(Stream, String)>,
    /// Received and not yet consumed by an `expect`.
    pending: VecDeque<(Stream, String)>,
    /// Everything received, for failure messages.
    transcript: Vec<String>,
    status: Option<ExitStatus>,
}

impl Proc {
    pub fn spawn(name: &str, args: &[&str]) -> Proc {
        Proc::spawn_with_env(name, args, &[])
    }

    pub fn spawn_with_env(name: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut command = Command::new(env!("CARGO_BIN_EXE_bridgechat"));
        command.args(args).env_remove("BRIDGECHAT_SERVER");
        for (key, value) in env {
            command.env(key, value);
        }
        Proc::spawn_command(name, command)
    }

    /// Runs it after `ulimit` with `limit` (say `-Sn 1024`), as a shell would.
    pub fn spawn_with_ulimit(name: &str, limit: &str, args: &[&str]) -> Proc {
        let mut command = Command::new("sh");
        command
            .args([
                "-c",
                &format!("ulimit {limit} && exec \"$0\" \"$@\""),
                env!("CARGO_BIN_EXE_bridgechat"),
            ])
            .args(args)
            .env_remove("BRIDGECHAT_SERVER");
        Proc::spawn_command(name, command)
    }

    /// Starts `command` (its stdio is piped here), e.g. `bridgechat` under `ip netns exec`.
    pub fn spawn_command(name: &str, mut command: Command) -> Proc {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        for (stream, pipe) in [
            (Stream::Out, Box::new(stdout) as Box<dyn Read + Send>),
            (Stream::Err, Box::new(stderr)),
        ] {
            let tx = tx.clone();
            thread::spawn(move || {
                let mut reader = BufReader::new(pipe);
                let mut raw = Vec::new();
                loop {
                    raw.clear();
                    match reader.read_until(b'\n', &mut raw) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {
                            let line = String::from_utf8_lossy(&raw);
                            let line = line.strip_suffix('\n').unwrap_or(&line).to_owned();
                            if tx.send((stream, line)).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
        Proc {
            name: name.to_owned(),
            stdin: child.stdin.take(),
            child,
            lines,
            pending: VecDeque::new(),
            transcript: Vec::new(),
            status: None,
        }
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Types one line.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("{}: cannot type {line:?}: {e}", self.name));
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Ctrl+C.
    pub fn interrupt(&self) {
        self.signal("-INT");
    }

    pub fn signal(&self, which: &str) {
        let status = Command::new("kill")
            .args([which, &self.pid()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {which} {} failed", self.pid());
    }

    pub fn fail(&mut self, what: &str) -> ! {
        while let Ok((s, line)) = self.lines.try_recv() {
            let tag = if s == Stream::Out { "out" } else { "err" };
            self.transcript.push(format!("[{tag}] {line}"));
        }
        panic!(
            "{}: {what}\n--- everything {} printed ---\n{}\n---",
            self.name,
            self.name,
            self.transcript.join("\n")
        )
    }

    /// Waits for a line on `stream` that satisfies `wanted`; lines before it
    /// on the same stream are consumed, lines on the other stream are kept.
    pub fn expect_on(
        &mut self,
        stream: Stream,
        what: &str,
        wanted: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + WAIT;
        let mut checked = 0;
        loop {
            while checked < self.pending.len() {
                let (s, line) = &self.pending[checked];
                if *s == stream && wanted(line) {
                    let line = line.clone();
                    let mut i = 0;
                    self.pending.retain(|(s, _)| {
                        let keep = *s != stream || i > checked;
                        i += 1;
                        keep
                    });
                    return line;
                }
                checked += 1;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((s, line)) => {
                    let tag = if s == Stream::Out { "out" } else { "err" };
                    self.transcript.push(format!("[{tag}] {line}"));
                    self.pending.push_back((s, line));
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.fail(&format!("no line {what} within {} s", WAIT.as_secs()))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.fail(&format!("output ended before a line {what}"))
                }
            }
        }
    }

    /// Waits for a stdout line containing `needle`.
    pub fn expect(&mut self, needle: &str) -> String {
        self.expect_on(Stream::Out, &format!("containing {needle:?}"), |l| {
            l.contains(needle)
        })
    }

    /// Waits for the line announcing `mode` (`REGISTERED`, `WAIT MODE`, ...).
    pub fn expect_mode(&mut self, mode: &str) -> String {
        self.expect_on(Stream::Out, &format!("announcing {mode}"), |l| {
            l.starts_with(mode)
        })
    }

    /// Waits for a stdout line equal to `exact`.
    pub fn expect_exact(&mut self, exact: &str) -> String {
        let what = format!("equal to {:?}", shorten(exact));
        self.expect_on(Stream::Out, &what, |l| l == exact)
    }

    /// Waits for a stderr line containing `needle`.
    pub fn expect_err(&mut self, needle: &str) -> String {
        self.expect_on(Stream::Err, &format!("containing {needle:?}"), |l| {
            l.contains(needle)
        })
    }

    /// The `ADDR:PORT` from the `listening on` line.
    pub fn listening(&mut self) -> String {
        let line = self.expect("listening on ");
        line.rsplit(' ').next().unwrap_or_default().to_owned()
    }

    /// Waits for the process to exit, at most `within`.
    pub fn exit_within(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.status = Some(status);
                    // Collect what it printed last, for assertions and failure messages.
                    while let Ok((s, line)) = self.lines.recv_timeout(Duration::from_millis(500)) {
                        let tag = if s == Stream::Out { "out" } else { "err" };
                        self.transcript.push(format!("[{tag}] {line}"));
                        self.pending.push_back((s, line));
                    }
                    return status;
                }
                Ok(None) if Instant::now() < deadline => {
                    // Polling the child is the only portable way to wait with a bound.
                    thread::sleep(Duration::from_millis(10));
                }
                Ok(None) => self.fail(&format!("still running after {within:?}")),
                Err(e) => self.fail(&format!("cannot wait: {e}")),
            }
        }
    }

    pub fn exits_cleanly(&mut self) {
        let status = self.exit_within(WAIT);
        if !status.success() {
            self.fail(&format!("exited with {status}, expected 0"));
        }
    }
    /// A client of the server at `server` on `transport`, with `extra` flags;
    /// returns it and the chat port from its `listening on` line.
    pub fn client(name: &str, server: &str, transport: &str, extra: &[&str]) -> (Proc, u16) {
        let mut args = vec![
            "client",
            "--name",
            name,
            "--server",
            server,
            "--transport",
            transport,
        ];
        args.extend_from_slice(extra);
        let mut client = Proc::spawn(name, &args);
        let port = client.listening_port();
        (client, port)
    }

    /// The port of the `listening on ADDR:PORT` line.
    pub fn listening_port(&mut self) -> u16 {
        let addr = self.listening();
        let port = addr.rsplit(':').next().and_then(|p| p.parse().ok());
        port.unwrap_or_else(|| self.fail(&format!("no port in {addr:?}")))
    }

    /// Once it has exited: every output line no `expect` consumed, to the end.
    pub fn rest_of_output(&mut self) -> Vec<String> {
        let mut rest: Vec<String> = self.pending.drain(..).map(|(_, line)| line).collect();
        while let Ok((_, line)) = self.lines.recv_timeout(WAIT) {
            rest.push(line);
        }
        rest
    }

    /// The first stdout line received so far that contains `needle`, whether an
    /// `expect` consumed it or not.
    pub fn seen(&self, needle: &str) -> Option<&str> {
        self.transcript
            .iter()
            .filter_map(|line| line.strip_prefix("[out] "))
            .find(|line| line.contains(needle))
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn shorten(text: &str) -> String {
    if text.chars().count() > 60 {
        let head: String = text.chars().take(60).collect();
        format!("{head}... ({} chars)", text.chars().count())
    } else {
        text.to_owned()
    }
}

/// Reads one whole message (head, then a `Content-Length` body) byte by byte,
/// so nothing after it is consumed.
pub fn read_message(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => seen.push(byte[0]),
            other => panic!(
                "message cut short ({other:?}): {:?}",
                String::from_utf8_lossy(&seen)
            ),
        }
    }
    let head = String::from_utf8_lossy(&seen).into_owned();
    let length: usize = head
        .split("\r\n")
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).expect("body");
    seen.extend_from_slice(&body);
    seen
}
