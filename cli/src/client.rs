//! `bridgechat client`: one person's chat program.

use std::io::{self, BufRead};
use std::net::{IpAddr, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

use bridgechat_core::client::{Client, ClientConfig, ClientEvent, ClientInput, Mode};
use bridgechat_core::Name;
use clap::Args;

use crate::out::{self, Line};
use crate::signals;
use crate::transport::{run_with, Inputs, Transport};

#[derive(Debug, Args)]
#[command(after_help = "\
Commands typed once it runs:
  /register   register NAME, IP and PORT with the server
  /bridge     ask the server for a peer: WAIT MODE if nobody waits, else READY MODE
  /chat       (READY MODE) connect to the peer; you write first
  /quit       leave the chat (the peer is told) and exit; Ctrl+C and end of input too
  /help       list the commands
  anything else is a chat message; typed out of turn, it is held until your turn

Examples:
  bridgechat client --name alice
  bridgechat client --name bob --server 192.0.2.10:7070 --port 9002
  BRIDGECHAT_SERVER=192.0.2.10:7070 bridgechat client --name carol --trace")]
pub struct ClientArgs {
    /// Your name, e.g. alice: 1-32 characters from A-Z a-z 0-9 and _ - . (dot)
    #[arg(long, value_name = "NAME", value_parser = parse_name)]
    pub name: Name,

    /// Chat port to listen on, on all interfaces (0: chosen by the system).
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    pub port: u16,

    /// The rendezvous server.
    #[arg(
        long,
        value_name = "ADDR:PORT",
        env = "BRIDGECHAT_SERVER",
        default_value = "127.0.0.1:7070",
        value_parser = crate::parse_addr
    )]
    pub server: SocketAddr,

    /// IP address to register, where peers will reach your chat port
    /// [default: the local address of the connection to the server].
    #[arg(long, value_name = "IP")]
    pub ip: Option<IpAddr>,

    /// Event loop to run on.
    #[arg(long, value_enum, default_value_t = Transport::Mio)]
    pub transport: Transport,

    /// Print every wire message sent and received to stderr.
    #[arg(long)]
    pub trace: bool,
}

fn parse_name(raw: &str) -> Result<Name, String> {
    raw.parse::<Name>().map_err(|e| e.to_string())
}

/// Connects (to the server or a peer) give up after this: the contract's
/// "within 5 s" includes start-up and exit, so the core's 5 s default is cut.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(4);

impl ClientArgs {
    pub fn config(&self) -> ClientConfig {
        ClientConfig {
            listen_port: self.port,
            advertise_ip: self.ip,
            trace: self.trace,
            connect_timeout: CONNECT_TIMEOUT,
            ..ClientConfig::new(self.name, self.server)
        }
    }
}

pub fn run(args: ClientArgs) -> Result<(), String> {
    let client = Client::new(args.config(), Instant::now());
    run_with(
        args.transport,
        client,
        |inputs| {
            let on_signal = inputs.clone();
            signals::on_interrupt(move || on_signal.send(ClientInput::Interrupt))?;
            spawn_stdin_reader(inputs)
        },
        {
            let mut screen = Screen::default();
            move |event| screen.show(&event).iter().for_each(Line::print)
        },
    )
}

/// What the terminal shows: `describe`, plus two things the core's events
/// leave implicit.
#[derive(Debug, Default)]
pub struct Screen {
    /// Messages held, as last reported by the core.
    held: usize,
    mode: Option<Mode>,
}

impl Screen {
    pub fn show(&mut self, event: &ClientEvent) -> Vec<Line> {
        let mut lines = vec![describe(event)];
        match event {
            // The core starts unregistered without announcing it: say what to type.
            ClientEvent::Listening(_) => lines.push(Line::Out(START_HINT.to_owned())),
            ClientEvent::MessageHeld { pending } => self.held = *pending,
            ClientEvent::ModeChanged { mode, .. } => {
                // WRITE -> READ with messages held: the core just sent the oldest one.
                if *mode == Mode::Read && self.mode == Some(Mode::Write) && self.held > 0 {
                    self.held -= 1;
                    lines.insert(0, Line::Out("(sent your held message)".to_owned()));
                }
                if matches!(mode, Mode::Registered | Mode::Unregistered) {
                    self.held = 0; // the core drops them and says so
                }
                self.mode = Some(*mode);
            }
            _ => {}
        }
        lines
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
        .spawn(move || {
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
        })
        .map(drop)
        .map_err(|e| format!("cannot start the input thread: {e}"))
}

/// The line a mode change is shown as: always starts with the mode's name.
pub fn mode_line(mode: Mode, peer: Option<Name>) -> String {
    let peer = peer.map_or_else(|| "your peer".to_owned(), |p| p.to_string());
    match mode {
        Mode::Unregistered => "UNREGISTERED: type /register to register with the server".into(),
        Mode::Registered => "REGISTERED: type /bridge to find a peer".into(),
        Mode::Wait => "WAIT MODE: waiting for a peer...".into(),
        Mode::Ready => format!("READY MODE: peer {peer} is waiting — type /chat"),
        Mode::Write => "WRITE MODE: your turn".into(),
        Mode::Read => format!("READ MODE: waiting for {peer}"),
    }
}

/// The line an event is shown as.
pub fn describe(event: &ClientEvent) -> Line {
    match event {
        ClientEvent::Listening(addr) => Line::Out(format!("listening on {addr}")),
        ClientEvent::ModeChanged { mode, peer } => Line::Out(mode_line(*mode, *peer)),
        ClientEvent::MessageReceived { from, text } => {
            Line::Out(format!("{from}: {}", defang(text)))
        }
        ClientEvent::MessageHeld { pending } => Line::Out(match pending {
            1 => "(held: will send when it is your turn)".to_owned(),
            n => format!("(held: will send when it is your turn; {n} messages waiting)"),
        }),
        ClientEvent::PeerLeft { peer } => Line::Out(format!("{peer} left the chat")),
        ClientEvent::PeerLost { peer, reason } => {
            Line::Error(format!("lost the chat with {peer}: {reason}"))
        }
        ClientEvent::Info(text) => Line::Out(text.clone()),
        ClientEvent::Error(error) => Line::Error(error.to_string()),
        ClientEvent::Trace {
            conn,
            direction,
            bytes,
        } => Line::Trace(out::trace(*conn, *direction, bytes)),
    }
}

/// A peer's text with terminal control characters (escape sequences that could
/// move the cursor, recolour or retitle the terminal) shown as U+FFFD; line
/// breaks and tabs are kept. Printable text is untouched, so it stays byte-exact.
fn defang(text: &str) -> std::borrow::Cow<'_, str> {
    let harmful = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.contains(harmful) {
        return text.into();
    }
    text.chars()
        .map(|c| if harmful(c) { '\u{FFFD}' } else { c })
        .collect::<String>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridgechat_core::client::ClientError;

    fn alice() -> Name {
        "alice".parse().unwrap()
    }

    #[test]
    fn every_mode_line_starts_with_the_mode_name_in_capitals() {
        for mode in [
            Mode::Unregistered,
            Mode::Registered,
            Mode::Wait,
            Mode::Ready,
            Mode::Write,
            Mode::Read,
        ] {
            let line = mode_line(mode, Some(alice()));
            assert!(line.starts_with(mode.as_str()), "{line}");
        }
        assert_eq!(
            mode_line(Mode::Read, Some(alice())),
            "READ MODE: waiting for alice"
        );
    }

    #[test]
    fn a_received_message_is_printed_as_peer_colon_text() {
        let event = ClientEvent::MessageReceived {
            from: alice(),
            text: "héllo: two\nlines".into(),
        };
        assert_eq!(
            describe(&event),
            Line::Out("alice: héllo: two\nlines".into())
        );
    }

    #[test]
    fn a_peer_cannot_send_terminal_escape_sequences() {
        let event = ClientEvent::MessageReceived {
            from: alice(),
            text: "\u{1b}]0;pwned\u{7}\u{1b}[2Jhi\tthere\r".into(),
        };
        assert_eq!(
            describe(&event),
            Line::Out("alice: \u{FFFD}]0;pwned\u{FFFD}\u{FFFD}[2Jhi\tthere\u{FFFD}".into())
        );
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
                Line::Out("(sent your held message)".into()),
                Line::Out("READ MODE: waiting for alice".into())
            ]
        );
        screen.show(&mode(Mode::Write));
        assert_eq!(screen.show(&mode(Mode::Read)).len(), 1);
    }

    #[test]
    fn errors_go_to_stderr() {
        let event = ClientEvent::Error(ClientError::ServerRefused {
            status: bridgechat_core::Status::CONFLICT,
            reason: "name already taken: alice".into(),
        });
        assert!(matches!(describe(&event), Line::Error(_)));
    }
}
