//! `bridgechat server`: the rendezvous server on a real socket.

use std::net::SocketAddr;

use bridgechat_core::server::{Server, ServerConfig, ServerEvent, ServerInput};
use clap::Args;

use crate::out::{self, Line};
use crate::signals;
use crate::transport::{run_with, Transport};

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  bridgechat server                          listen on 127.0.0.1:7070
  bridgechat server --listen 0.0.0.0:7070    accept clients from other machines
  bridgechat server --listen 127.0.0.1:0     let the system pick a port (printed)
  bridgechat server --trace                  show every request and answer

Prints `listening on ADDR:PORT` once ready, then one line per notable event.
Ctrl+C or SIGTERM stops it cleanly (exit 0).")]
pub struct ServerArgs {
    /// Address and port to listen on (port 0: chosen by the system).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:7070", value_parser = crate::parse_addr)]
    pub listen: SocketAddr,

    /// Event loop to run on.
    #[arg(long, value_enum, default_value_t = Transport::Mio)]
    pub transport: Transport,

    /// Print every wire message sent and received to stderr.
    #[arg(long)]
    pub trace: bool,

    /// Print only `listening on` and errors, not one line per event.
    #[arg(long)]
    pub quiet: bool,
}

impl ServerArgs {
    /// The core's configuration; limits left at the contract's defaults.
    pub fn config(&self) -> ServerConfig {
        ServerConfig {
            listen: self.listen,
            trace: self.trace,
            ..ServerConfig::default()
        }
    }
}

pub fn run(args: ServerArgs) -> Result<(), String> {
    let quiet = args.quiet;
    run_with(
        args.transport,
        Server::new(args.config()),
        |inputs| signals::on_interrupt(move || inputs.send(ServerInput::Shutdown)),
        |event| {
            if let Some(line) = describe(&event, quiet) {
                line.print();
            }
        },
    )?;
    if !quiet {
        out::say("server stopped");
    }
    Ok(())
}

/// The line an event is shown as, if any.
pub fn describe(event: &ServerEvent, quiet: bool) -> Option<Line> {
    let text = match event {
        ServerEvent::Listening(addr) => return Some(Line::Out(format!("listening on {addr}"))),
        ServerEvent::Trace {
            conn,
            direction,
            bytes,
        } => return Some(Line::Trace(out::trace(*conn, *direction, bytes))),
        _ if quiet => return None,
        ServerEvent::Accepted { conn, peer } => format!("{conn} connected from {peer}"),
        ServerEvent::Registered { conn, contact } => format!("{conn} registered {contact}"),
        ServerEvent::Unregistered { conn, name } => format!("{conn} unregistered {name}"),
        ServerEvent::Waiting { conn, name } => format!("{conn} {name} is waiting for a peer"),
        ServerEvent::Paired { asker, waiter } => format!("paired {asker} with {waiter}"),
        ServerEvent::Rejected { conn, rejection } => {
            format!("{conn} rejected: {} ({rejection})", rejection.status())
        }
        ServerEvent::Closed { conn, reason } => format!("{conn} closed: {reason}"),
    };
    Some(Line::Out(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridgechat_core::server::{CloseReason, Rejection};
    use bridgechat_core::{ConnId, Contact, Name};

    fn name(s: &str) -> Name {
        s.parse().unwrap()
    }

    fn shown(event: ServerEvent) -> String {
        match describe(&event, false) {
            Some(Line::Out(text)) => text,
            other => panic!("expected a stdout line, got {other:?}"),
        }
    }

    #[test]
    fn events_read_as_one_line_each() {
        let contact = Contact::new(name("alice"), "127.0.0.1".parse().unwrap(), 9001).unwrap();
        assert_eq!(
            shown(ServerEvent::Listening("127.0.0.1:7070".parse().unwrap())),
            "listening on 127.0.0.1:7070"
        );
        assert_eq!(
            shown(ServerEvent::Registered {
                conn: ConnId(3),
                contact
            }),
            "#3 registered alice at 127.0.0.1:9001"
        );
        assert_eq!(
            shown(ServerEvent::Paired {
                asker: name("bob"),
                waiter: name("alice")
            }),
            "paired bob with alice"
        );
        assert_eq!(
            shown(ServerEvent::Rejected {
                conn: ConnId(4),
                rejection: Rejection::NameTaken(name("alice"))
            }),
            "#4 rejected: 409 Conflict (name already taken: alice)"
        );
        assert_eq!(
            shown(ServerEvent::Closed {
                conn: ConnId(4),
                reason: CloseReason::PeerClosed
            }),
            "#4 closed: closed by the client"
        );
    }

    #[test]
    fn quiet_keeps_only_the_listening_line() {
        let closed = ServerEvent::Closed {
            conn: ConnId(1),
            reason: CloseReason::Shutdown,
        };
        assert_eq!(describe(&closed, true), None);
        assert!(describe(
            &ServerEvent::Listening("127.0.0.1:1".parse().unwrap()),
            true
        )
        .is_some());
    }
}
