//! `bridgechat demo`: a server and two scripted clients (alice and bob) in
//! one process, over real TCP on loopback, each on its own event loop thread.
//!
//! The script reacts to events rather than sleeping: every step waits (with
//! a timeout) for the events its action must cause, so a hang is reported
//! as the step that did not finish instead of a frozen terminal.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use bridgechat_core::client::{Client, ClientConfig, ClientEvent, ClientInput, Mode};
use bridgechat_core::server::{Server, ServerConfig, ServerEvent, ServerInput};
use bridgechat_core::Name;
use clap::Args;

use crate::out::{self, Line};
use crate::transport::{run_with, Inputs, Transport};
use crate::{client, server};

/// How long one step may take before the demo gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// The conversation: (who writes, text), alternating, bob first (he initiates).
const TURNS: [(Who, &str); 4] = [
    (Who::Bob, "hi alice, it's bob 👋"),
    (Who::Alice, "hello bob! the server only introduced us"),
    (
        Who::Bob,
        "right: this text goes peer to peer, straight to you",
    ),
    (Who::Alice, "nice. bye!"),
];

#[derive(Debug, Args)]
#[command(after_help = "\
Runs a server on 127.0.0.1 and two clients, alice and bob, on ports chosen by
the system: register -> bridge (the server tells waiting alice she is matched
with bob) -> chat -> four turns -> quit. Every line is
prefixed with who printed it. Exits 0 when the script completes, 1 with the
step that failed otherwise (each step has 5 s).

Examples:
  bridgechat demo
  bridgechat demo --transport std
  bridgechat demo --trace          also show every wire message (stderr)")]
pub struct DemoArgs {
    /// Event loop for the server and both clients.
    #[arg(long, value_enum, default_value_t = Transport::Mio)]
    pub transport: Transport,

    /// Print every wire message sent and received to stderr.
    #[arg(long)]
    pub trace: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Server,
    Alice,
    Bob,
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Who::Server => "server",
            Who::Alice => "alice",
            Who::Bob => "bob",
        })
    }
}

/// What the loop threads tell the script.
enum Note {
    ServerInputs(Inputs<ServerInput>),
    ClientInputs(Who, Inputs<ClientInput>),
    Server(ServerEvent),
    Client(Who, ClientEvent),
    Exited(Who, Result<(), String>),
}

type Expect = Box<dyn Fn(&Note) -> bool>;

fn mode(who: Who, wanted: Mode) -> Expect {
    Box::new(
        move |note| matches!(note, Note::Client(w, ClientEvent::ModeChanged { mode, .. }) if *w == who && *mode == wanted),
    )
}

fn received(who: Who, wanted: &'static str) -> Expect {
    Box::new(
        move |note| matches!(note, Note::Client(w, ClientEvent::MessageReceived { text, .. }) if *w == who && text == wanted),
    )
}

fn peer_left(who: Who) -> Expect {
    Box::new(move |note| matches!(note, Note::Client(w, ClientEvent::PeerLeft { .. }) if *w == who))
}

/// The server's notification that `who`, waiting, has been handed to a peer.
fn matched(who: Who) -> Expect {
    Box::new(move |note| matches!(note, Note::Client(w, ClientEvent::Matched { .. }) if *w == who))
}

fn listening(who: Who) -> Expect {
    Box::new(move |note| matches!(note, Note::Client(w, ClientEvent::Listening(_)) if *w == who))
}

fn server_saw(what: fn(&ServerEvent) -> bool) -> Expect {
    Box::new(move |note| matches!(note, Note::Server(event) if what(event)))
}

fn exited(who: Who) -> Expect {
    Box::new(move |note| matches!(note, Note::Exited(w, Ok(())) if *w == who))
}

pub fn run(args: DemoArgs) -> Result<(), String> {
    let (tx, rx) = mpsc::channel();
    let mut demo = Demo {
        rx,
        trace: args.trace,
        server: None,
        alice: None,
        bob: None,
    };

    let config = ServerConfig {
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        trace: args.trace,
        ..ServerConfig::default()
    };
    spawn_server(args.transport, config, tx.clone())?;
    let server_addr = demo.server_address()?;

    for (who, name) in [(Who::Alice, "alice"), (Who::Bob, "bob")] {
        let name: Name = name.parse().map_err(|e| format!("demo name: {e}"))?;
        let config = ClientConfig {
            trace: args.trace,
            seed: crate::server::os_seed()?,
            ..ClientConfig::new(name, server_addr)
        };
        spawn_client(args.transport, who, config, tx.clone())?;
    }
    drop(tx);
    // Each step also waits for the server's side of it, so the log reads in order.
    let accepted = || server_saw(|e| matches!(e, ServerEvent::Accepted { .. }));
    let registered = || server_saw(|e| matches!(e, ServerEvent::Registered { .. }));
    let closed = || server_saw(|e| matches!(e, ServerEvent::Closed { .. }));
    demo.wait(
        "both clients to start",
        vec![
            listening(Who::Alice),
            listening(Who::Bob),
            accepted(),
            accepted(),
        ],
    )?;

    demo.type_line(
        Who::Alice,
        "/register",
        vec![mode(Who::Alice, Mode::Registered), registered()],
    )?;
    demo.type_line(
        Who::Alice,
        "/bridge",
        vec![
            mode(Who::Alice, Mode::Wait),
            server_saw(|e| matches!(e, ServerEvent::Waiting { .. })),
        ],
    )?;
    demo.type_line(
        Who::Bob,
        "/register",
        vec![mode(Who::Bob, Mode::Registered), registered()],
    )?;
    demo.type_line(
        Who::Bob,
        "/bridge",
        vec![
            mode(Who::Bob, Mode::Ready),
            server_saw(|e| matches!(e, ServerEvent::Paired { .. })),
            matched(Who::Alice),
        ],
    )?;
    demo.type_line(
        Who::Bob,
        "/chat",
        vec![mode(Who::Bob, Mode::Write), mode(Who::Alice, Mode::Read)],
    )?;
    for (writer, text) in TURNS {
        let reader = if writer == Who::Alice {
            Who::Bob
        } else {
            Who::Alice
        };
        demo.type_line(
            writer,
            text,
            vec![
                mode(writer, Mode::Read),
                received(reader, text),
                mode(reader, Mode::Write),
            ],
        )?;
    }
    // Bob's turn again; he leaves instead. Alice is told and may bridge again.
    demo.type_line(
        Who::Bob,
        "/quit",
        vec![
            exited(Who::Bob),
            peer_left(Who::Alice),
            mode(Who::Alice, Mode::Registered),
            closed(),
        ],
    )?;
    demo.type_line(Who::Alice, "/quit", vec![exited(Who::Alice), closed()])?;

    let server = demo.server.clone().ok_or("demo: no server handle")?;
    server.send(ServerInput::Shutdown);
    demo.wait("the server to stop", vec![exited(Who::Server)])?;
    out::say(&format!(
        "demo finished: {} turns over real TCP, then both sides quit",
        TURNS.len()
    ));
    Ok(())
}

fn spawn_server(
    transport: Transport,
    config: ServerConfig,
    tx: Sender<Note>,
) -> Result<(), String> {
    let seed = crate::server::os_seed()?;
    thread::Builder::new()
        .name("demo-server".into())
        .spawn(move || {
            let events = tx.clone();
            let inputs = tx.clone();
            let result = run_with(
                transport,
                Server::new(config, seed),
                move |i| {
                    let _ = inputs.send(Note::ServerInputs(i));
                    Ok(())
                },
                move |event| {
                    let _ = events.send(Note::Server(event));
                },
            );
            let _ = tx.send(Note::Exited(Who::Server, result));
        })
        .map(drop)
        .map_err(|e| format!("cannot start the demo server thread: {e}"))
}

fn spawn_client(
    transport: Transport,
    who: Who,
    config: ClientConfig,
    tx: Sender<Note>,
) -> Result<(), String> {
    thread::Builder::new()
        .name(format!("demo-{who}"))
        .spawn(move || {
            let events = tx.clone();
            let inputs = tx.clone();
            let result = run_with(
                transport,
                Client::new(config, Instant::now()),
                move |i| {
                    let _ = inputs.send(Note::ClientInputs(who, i));
                    Ok(())
                },
                move |event| {
                    let _ = events.send(Note::Client(who, event));
                },
            );
            let _ = tx.send(Note::Exited(who, result));
        })
        .map(drop)
        .map_err(|e| format!("cannot start the demo client thread: {e}"))
}

struct Demo {
    rx: Receiver<Note>,
    trace: bool,
    server: Option<Inputs<ServerInput>>,
    alice: Option<Inputs<ClientInput>>,
    bob: Option<Inputs<ClientInput>>,
}

impl Demo {
    /// Waits for the server's `Listening` event.
    fn server_address(&mut self) -> Result<SocketAddr, String> {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            match self.next(deadline, "the server to listen")? {
                Note::Server(ServerEvent::Listening(addr)) => return Ok(addr),
                Note::Exited(Who::Server, result) => {
                    return Err(format!(
                        "demo: the server stopped before listening: {}",
                        result.err().unwrap_or_default()
                    ))
                }
                _ => {}
            }
        }
    }

    /// `who` types `line`, then the script waits for what it must cause.
    fn type_line(&mut self, who: Who, line: &str, expect: Vec<Expect>) -> Result<(), String> {
        let what = format!("{who}'s {line:?} to take effect");
        let deadline = Instant::now() + STEP_TIMEOUT;
        let inputs = loop {
            let handle = if who == Who::Alice {
                &self.alice
            } else {
                &self.bob
            };
            if let Some(inputs) = handle.clone() {
                break inputs;
            }
            self.next(deadline, &format!("{who}'s client to start"))?;
        };
        out::say(&format!("[{who}] > {line}"));
        if !inputs.send(ClientInput::Line(line.to_owned())) {
            return Err(format!("demo: {who}'s client has stopped"));
        }
        self.wait(&what, expect)
    }

    /// Shows notes as they come until every expectation has been met.
    fn wait(&mut self, what: &str, mut expect: Vec<Expect>) -> Result<(), String> {
        let deadline = Instant::now() + STEP_TIMEOUT;
        while !expect.is_empty() {
            let note = self.next(deadline, what)?;
            if let Some(i) = expect.iter().position(|e| e(&note)) {
                drop(expect.swap_remove(i));
            } else if let Note::Exited(who, result) = note {
                return Err(match result {
                    Ok(()) => format!("demo: {who} exited while waiting for {what}"),
                    Err(e) => format!("demo: {who} failed: {e}"),
                });
            }
        }
        Ok(())
    }

    /// The next note, shown; an error naming `what` if none comes by `deadline`.
    fn next(&mut self, deadline: Instant, what: &str) -> Result<Note, String> {
        let timeout = deadline.saturating_duration_since(Instant::now());
        let note = match self.rx.recv_timeout(timeout) {
            Ok(note) => note,
            Err(RecvTimeoutError::Timeout) => {
                return Err(format!(
                    "demo stalled: waited {} s for {what}",
                    STEP_TIMEOUT.as_secs()
                ))
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(format!("demo: every loop stopped while waiting for {what}"))
            }
        };
        match &note {
            Note::ServerInputs(inputs) => self.server = Some(inputs.clone()),
            Note::ClientInputs(Who::Alice, inputs) => self.alice = Some(inputs.clone()),
            Note::ClientInputs(_, inputs) => self.bob = Some(inputs.clone()),
            Note::Server(event) => {
                if let Some(line) = server::describe(event, false) {
                    self.show(Who::Server, line);
                }
            }
            Note::Client(who, event) => self.show(*who, client::describe(event)),
            Note::Exited(who, Ok(())) => out::say(&format!("[{who}] exited")),
            Note::Exited(who, Err(e)) => out::say(&format!("[{who}] exited with an error: {e}")),
        }
        Ok(note)
    }

    fn show(&self, who: Who, line: Line) {
        match line {
            Line::Out(text) => out::say(&format!("[{who}] {text}")),
            Line::Error(text) => out::say(&format!("[{who}] error: {text}")),
            Line::Trace(text) if self.trace => {
                let prefixed: String = text.lines().map(|l| format!("[{who}] {l}\n")).collect();
                Line::Trace(prefixed).print();
            }
            Line::Trace(_) => {}
        }
    }
}
