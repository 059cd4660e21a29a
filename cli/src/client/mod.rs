//! `bridgechat client`: one person's chat program.

use std::fmt;
use std::io::{self, BufRead};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;
use std::thread;
use std::time::{Duration, Instant};

use bridgechat_core::client::{Client, ClientConfig, ClientEvent, ClientInput, Mode};
use bridgechat_core::Name;
use clap::Args;

mod lines;
pub use lines::{describe, styled};

use crate::console::{self, Console, Status};
use crate::out::{self, Line, Tone};
use crate::signals;
use crate::transport::{run_with, Inputs, Transport};

#[derive(Debug, Args)]
#[command(after_help = "\
Commands typed once it runs:
  /register   register NAME, IP and PORT with the server
  /name NAME  register under a new name (after a taken name, say)
  /bridge     ask the server for a peer: WAIT MODE if nobody waits, else READY MODE
  /bridge NAME  meet NAME only: READY MODE if NAME waits, else WAIT MODE for NAME
  /chat       (READY MODE) connect to the peer; you write first
  /quit       leave the chat (the peer is told) and exit; Ctrl+C and end of input too
  /help       list the commands
  //text      send /text as a message
  anything else is a chat message; typed out of turn, it is held until your turn
  At a terminal, a multi-line paste is one message; Up recalls earlier lines.

Examples:
  bridgechat client --name alice
  bridgechat client --name bob --server 192.0.2.10:7070 --port 9002
  BRIDGECHAT_SERVER=192.0.2.10:7070 bridgechat client --name carol --trace
  bridgechat client --name dave --server 192.0.2.20:5000 --legacy   (a course server)")]
pub struct ClientArgs {
    /// Your name, e.g. alice: 1-32 characters from A-Z a-z 0-9 and _ - . (dot)
    #[arg(long, value_name = "NAME", value_parser = parse_name)]
    pub name: Name,

    /// Chat port to listen on, on all interfaces (0: chosen by the system).
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    pub port: u16,

    /// The rendezvous server: an address, or a host name looked up at start.
    #[arg(
        long,
        value_name = "ADDR:PORT",
        env = "BRIDGECHAT_SERVER",
        default_value = "127.0.0.1:7070"
    )]
    pub server: HostPort,

    /// IP address to register, where peers will reach your chat port
    /// [default: the local address of the connection to the server].
    #[arg(long, value_name = "IP")]
    pub ip: Option<IpAddr>,

    /// Event loop to run on.
    #[arg(long, value_enum, default_value_t = Transport::Mio)]
    pub transport: Transport,

    /// Print every wire message sent and received to stderr (and, marked
    /// `decrypted`, the text of encrypted frames; never a key or ticket).
    #[arg(long)]
    pub trace: bool,

    /// Refuse any chat that would not be end-to-end encrypted (a peer or
    /// server speaking protocol version 1).
    #[arg(long, conflicts_with = "legacy")]
    pub require_encryption: bool,

    /// Speak the course's original wire format (REGISTER/REGACK, BRIDGE/BRIDGEACK,
    /// a course CHAT and raw turns) to the server and to peers, to work with the
    /// class's own server and clients. No encryption, no /bridge NAME.
    #[arg(long)]
    pub legacy: bool,

    /// Seconds to try reaching the peer directly (and by hole punching)
    /// before the chat goes through the server's relay.
    #[arg(long, value_name = "SECS", default_value_t = 3.0, value_parser = parse_secs)]
    pub relay_after: f64,
}

fn parse_secs(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(secs) if secs.is_finite() && (0.0..=3600.0).contains(&secs) => Ok(secs),
        _ => Err(format!("expected seconds from 0 to 3600, not {raw}")),
    }
}

fn parse_name(raw: &str) -> Result<Name, String> {
    raw.parse::<Name>().map_err(|e| e.to_string())
}

/// Connects (to the server or a peer) give up after this: the contract's
/// "within 5 s" includes start-up and exit, so the core's 5 s default is cut.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(4);

/// The server as given: `HOST:PORT`, the host a name or an address, looked up at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    host: String,
    port: u16,
}

impl FromStr for HostPort {
    type Err = String;

    fn from_str(raw: &str) -> Result<HostPort, String> {
        if let Ok(addr) = raw.parse::<SocketAddr>() {
            return Ok(HostPort {
                host: addr.ip().to_string(),
                port: addr.port(),
            });
        }
        let expected = || format!("expected HOST:PORT such as 127.0.0.1:7070, not {raw}");
        let (host, port) = raw.rsplit_once(':').ok_or_else(expected)?;
        let port = port.parse().map_err(|_| expected())?;
        if host.is_empty() || host.contains(':') {
            return Err(expected());
        }
        Ok(HostPort {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, self.port).fmt(f),
            Err(_) => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

impl HostPort {
    /// The first address the host name resolves to.
    pub fn resolve(&self) -> Result<SocketAddr, String> {
        let cannot = || format!("cannot resolve host {}", self.host);
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|_| cannot())?
            .next()
            .ok_or_else(cannot)
    }
}

impl ClientArgs {
    /// The core's config; `seed` (32 bytes from the OS) keys the chats' ephemeral keys.
    pub fn config(&self, server: SocketAddr, seed: [u8; 32]) -> ClientConfig {
        ClientConfig {
            listen_port: self.port,
            advertise_ip: self.ip,
            trace: self.trace,
            connect_timeout: CONNECT_TIMEOUT,
            require_encryption: self.require_encryption,
            legacy: self.legacy,
            seed,
            relay_after: Duration::from_secs_f64(self.relay_after),
            ..ClientConfig::new(self.name, server)
        }
    }
}

pub fn run(args: ClientArgs) -> Result<(), String> {
    let server = args.server.resolve()?;
    // Strangers at the chat port each hold a descriptor until reset: take the
    // hard limit, as the server does, so a desktop's 1,024 is not the ceiling.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let seed = crate::server::os_seed()?;
    let client = Client::new(args.config(server, seed), Instant::now());
    let result = if console::is_interactive() {
        run_at_terminal(&args, client)
    } else {
        run_with(
            args.transport,
            client,
            |inputs| {
                install_ctrl_c(&inputs)?;
                spawn_stdin_reader(inputs)
            },
            {
                let mut screen = Screen::default();
                move |event| {
                    for (_, line) in screen.show(&event) {
                        line.print();
                    }
                }
            },
        )
    };
    result.map_err(with_hint)
}

fn install_ctrl_c(inputs: &Inputs<ClientInput>) -> Result<(), String> {
    let on_signal = inputs.clone();
    signals::on_interrupt(move || on_signal.send(ClientInput::Interrupt))
}

/// The line editor, the prompt, colour, and a goodbye on the way out.
fn run_at_terminal(args: &ClientArgs, client: Client) -> Result<(), String> {
    let console = Console::new(Status {
        name: args.name,
        mode: Mode::Unregistered,
        peer: None,
        held: 0,
        encrypted: None,
    });
    let mut screen = Screen::default();
    let result = run_with(
        args.transport,
        client,
        |inputs| {
            install_ctrl_c(&inputs)?;
            console.start_editor(inputs)
        },
        |event| {
            let lines = screen.show(&event);
            console.update(|status| screen.status(status));
            for (tone, line) in lines {
                console.show(tone, &line);
            }
        },
    );
    console.finish();
    if result.is_ok() {
        console.show(Tone::Hint, &Line::Out(screen.goodbye()));
    }
    result
}

/// An unreachable server is most often one not started yet.
fn with_hint(error: String) -> String {
    if error.starts_with("cannot reach the server") {
        format!("{error} (is it running? start one with `bridgechat server`)")
    } else {
        error
    }
}

/// What the screen shows: `describe`, plus what the core's events leave
/// implicit (the start hint, a held message going out, the goodbye).
#[derive(Debug, Default)]
pub struct Screen {
    /// Messages held, as last reported by the core.
    held: usize,
    mode: Option<Mode>,
    peer: Option<Name>,
    /// Our name, once the server accepted another than the one we started with.
    name: Option<Name>,
    /// Whether the chat on now is encrypted; `None` outside a chat.
    encrypted: Option<bool>,
}

impl Screen {
    pub fn show(&mut self, event: &ClientEvent) -> Vec<(Tone, Line)> {
        let mut lines = vec![styled(event)];
        match event {
            // The core starts unregistered without announcing it: say what to type.
            ClientEvent::Listening(_) => {
                lines.push((Tone::Hint, Line::Out(START_HINT.to_owned())));
            }
            ClientEvent::MessageHeld { pending } => self.held = *pending,
            ClientEvent::NameChanged(name) => self.name = Some(*name),
            ClientEvent::Encrypted { .. } => self.encrypted = Some(true),
            ClientEvent::NotProtected { .. } => self.encrypted = Some(false),
            ClientEvent::ModeChanged { mode, peer } => {
                // WRITE -> READ with messages held: the core just sent the oldest one.
                if *mode == Mode::Read && self.mode == Some(Mode::Write) && self.held > 0 {
                    self.held -= 1;
                    let sent = Line::Out("(sent your held message)".to_owned());
                    lines.insert(0, (Tone::Hint, sent));
                }
                if matches!(mode, Mode::Registered | Mode::Unregistered) {
                    self.held = 0; // the core drops them and says so
                }
                if !matches!(mode, Mode::Read | Mode::Write) {
                    self.encrypted = None;
                }
                self.mode = Some(*mode);
                self.peer = *peer;
            }
            _ => {}
        }
        lines
    }

    /// Copies what the prompt shows.
    pub fn status(&self, status: &mut Status) {
        status.mode = self.mode.unwrap_or(Mode::Unregistered);
        status.peer = self.peer;
        status.held = self.held;
        status.encrypted = self.encrypted;
        if let Some(name) = self.name {
            status.name = name;
        }
    }

    /// The last line: what leaving did, by the mode we left from.
    pub fn goodbye(&self) -> String {
        match (self.mode, self.peer) {
            (Some(Mode::Write | Mode::Read), Some(peer)) => {
                format!("bye: you left the chat with {peer} ({peer} is told) and the server")
            }
            (Some(Mode::Unregistered) | None, _) => "bye".to_owned(),
            _ => "bye: you left the server, which forgets your name".to_owned(),
        }
    }
}

/// Printed once the chat port is bound, so a new user is never left at a silent prompt.
/// (It avoids the word UNREGISTERED: scripts that look for REGISTERED would match it.)
pub const START_HINT: &str =
    "not registered yet: type /register, then /bridge to find a peer (/help lists all commands)";

/// Sends each line of stdin to the loop, in order, then `EndOfInput`.
fn spawn_stdin_reader(inputs: Inputs<ClientInput>) -> Result<(), String> {
    thread::Builder::new()
        .name("stdin".into())
        .spawn(move || read_lines(&inputs))
        .map(drop)
        .map_err(|e| format!("cannot start the input thread: {e}"))
}

/// Plain lines from stdin, each one line (command or message), then `EndOfInput`.
pub fn read_lines(inputs: &Inputs<ClientInput>) {
    let mut stdin = io::stdin().lock();
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match stdin.read_until(b'\n', &mut raw) {
            Ok(0) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&raw);
                let line = line.strip_suffix('\n').unwrap_or(&line);
                let line = line.strip_suffix('\r').unwrap_or(line);
                if !inputs.send(ClientInput::Line(line.to_owned())) {
                    return; // the loop has ended
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                out::complain(&format!("cannot read standard input: {e}"));
                break;
            }
        }
    }
    inputs.send(ClientInput::EndOfInput);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Name {
        "alice".parse().unwrap()
    }
    #[test]
    fn the_screen_says_when_a_held_message_goes_out() {
        let mut screen = Screen::default();
        let mode = |mode| ClientEvent::ModeChanged {
            mode,
            peer: Some(alice()),
        };
        screen.show(&mode(Mode::Read));
        screen.show(&ClientEvent::MessageHeld { pending: 1 });
        screen.show(&mode(Mode::Write));
        assert_eq!(
            screen.show(&mode(Mode::Read)),
            [
                (Tone::Hint, Line::Out("(sent your held message)".into())),
                (
                    Tone::Mode(Mode::Read),
                    Line::Out("READ MODE: waiting for alice".into())
                )
            ]
        );
        screen.show(&mode(Mode::Write));
        assert_eq!(screen.show(&mode(Mode::Read)).len(), 1);
    }

    #[test]
    fn goodbye_says_what_leaving_did() {
        let mut screen = Screen::default();
        assert_eq!(screen.goodbye(), "bye");
        screen.show(&ClientEvent::ModeChanged {
            mode: Mode::Write,
            peer: Some(alice()),
        });
        assert!(screen.goodbye().contains("left the chat with alice"));
    }

    #[test]
    fn the_prompt_follows_a_new_name() {
        let mut screen = Screen::default();
        let mut status = Status {
            name: alice(),
            mode: Mode::Unregistered,
            peer: None,
            held: 0,
            encrypted: None,
        };
        let renamed = ClientEvent::NameChanged("alice2".parse().unwrap());
        assert_eq!(
            screen.show(&renamed),
            [(Tone::Plain, Line::Out("your name is now alice2".into()))]
        );
        screen.show(&ClientEvent::ModeChanged {
            mode: Mode::Registered,
            peer: None,
        });
        screen.status(&mut status);
        assert_eq!(status.prompt(), "[REGISTERED] alice2");
    }

    #[test]
    fn an_unreachable_server_hints_at_starting_one() {
        let error = with_hint("cannot reach the server at 127.0.0.1:1: refused".into());
        assert!(
            error.ends_with("start one with `bridgechat server`)"),
            "{error}"
        );
        assert_eq!(with_hint("other".into()), "other");
    }
}
