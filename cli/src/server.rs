//! `bridgechat server`: the rendezvous server on a real socket.

use std::net::SocketAddr;
use std::time::Duration;

use bridgechat_core::codec::Limits;
use bridgechat_core::codec::Version;
use bridgechat_core::server::{FallThroughReason, Server, ServerConfig, ServerEvent, ServerInput};
use clap::Args;

use crate::logging::{self, LogFormat};
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
  bridgechat server --max-per-ip 20000       let one host (a load generator) hold many clients
  bridgechat server --strict-ip              clients may register only their own address
  bridgechat server --no-relay               never relay chats (peers must reach each other)
  bridgechat server --log-format json        one JSON object per log line, for log shippers
  bridgechat server --metrics-listen 127.0.0.1:9070
                                             /metrics on a private address only

The same port answers `GET /` (a status page), `GET /healthz` (`200 ok`) and
`GET /metrics` (Prometheus text), e.g. `curl http://127.0.0.1:7070/`.
`RUST_LOG` filters the log (default `info`; `warn` keeps refusals under load).

Prints `listening on ADDR:PORT` once ready, then one line per notable event.
Ctrl+C or SIGTERM stops it cleanly (exit 0): no new connections, answers
already decided are sent, every connection is closed.

Limits: past --max-connections or --max-per-ip a new connection gets
`503 Service Unavailable` with `Retry-After` and is closed; the others carry on.
At start-up the open-file limit is raised to its hard limit.

REGISTER refuses an IP no peer could reach (0.0.0.0, ::, 255.255.255.255,
multicast, the cloud metadata address 169.254.169.254) with `400`.

Protocol version 2 (clients that send `Bridgechat: 2`; others get version 1
unchanged): `BRIDGE` with `Peer: NAME` meets that person only; a waiting client is
told at once when it is handed to a peer (MATCHED, with a fresh secret ticket the
peer's CHAT must carry) and when that falls through (UNMATCHED): the asker left,
unregistered, registered or bridged again, or the chat did not start within
--match-timeout. The waiter is then put back first in its place by itself.
A version 1 waiter is handed out at most once, as version 1 says.

An asker whose introductions fall through (for a version 1 waiter: the asker
drops it within --introduction-deadline) is limited: after --max-fallthroughs in
a minute from one connection, or --max-fallthroughs-per-ip from one IP (by
request, not by leaving; many people share one NAT address), BRIDGE from there
gets `429` with `Retry-After` until the minute is over.

The relay: peers that cannot reach each other directly (both behind NAT
routers) each open a new connection to this port and send `RELAY` with their
match's ticket as its first request. The first is held (its peer's server
connection is sent `RELAY`) for up to 10 s, else `504`; when the second comes
both get `200 OK` and every byte from then on is copied verbatim to the other,
never read. A ticket opens one relay, and only while its match is live (before
STARTED, not fallen through): else `403`. A relay ends, closing both, when
either side closes, or past --relay-budget, --relay-rate or --relay-idle.

Tickets come from a ChaCha20 stream seeded from the OS random source at start;
the log never shows a ticket.")]
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

    /// Connections served at once [default: the open-file limit minus a reserve].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,

    /// Connections served at once from one IP address.
    #[arg(long, value_name = "N", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_per_ip: u64,

    /// Seconds a request head may take from its first byte before `408` and close.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub head_timeout: Duration,

    /// Seconds a new connection has to REGISTER before it is closed.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_secs)]
    pub register_timeout: Duration,

    /// Seconds without a byte from a client before its connection is closed.
    #[arg(long, value_name = "SECS", default_value = "3600", value_parser = parse_secs)]
    pub idle_timeout: Duration,

    /// Largest request body accepted, in bytes, before `413` and close.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_body)]
    pub max_body: usize,

    /// REGISTER only the IP a client connects from, or a private one (RFC 1918,
    /// loopback, link-local, IPv6 ULA) when it connects from a private one; else `403`.
    /// Leave off when clients reach the server through NAT or a proxy.
    #[arg(long)]
    pub strict_ip: bool,

    /// Seconds a version 2 waiter's match may wait for the chat to start (the
    /// waiter's STARTED) before it falls through and the waiter waits again.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub match_timeout: Duration,

    /// Seconds after handing an asker a version 1 waiter during which the asker's
    /// UNREGISTER, REGISTER, BRIDGE or leaving counts as a fall-through.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub introduction_deadline: Duration,

    /// Fall-throughs within a minute from one connection after which its BRIDGE gets
    /// `429 Too Many Requests` with `Retry-After` (0: never).
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub max_fallthroughs: u32,
    /// How log lines look: the message alone, with timestamp and level, or JSON.
    #[arg(long, value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,

    /// Serve /, /healthz and /metrics on this address too, and stop answering
    /// /metrics on --listen (404). Prints `metrics on ADDR:PORT`.
    #[arg(long, value_name = "ADDR:PORT", value_parser = crate::parse_addr)]
    pub metrics_listen: Option<SocketAddr>,

    /// The same from one IP address, counting those by request, not by leaving
    /// (0: never). Well above the per-connection limit: many people share one address.
    #[arg(long, value_name = "N", default_value_t = 30)]
    pub max_fallthroughs_per_ip: u32,

    /// Seconds a course-format REGISTER (the class's own programs, see
    /// docs/COURSE.md) stays registered after its connection closes, unless the
    /// same clientID registers again. Course clients close after every request.
    #[arg(long, value_name = "SECS", default_value = "600", value_parser = parse_secs)]
    pub legacy_ttl: Duration,

    /// Do not relay: RELAY gets `503 Service Unavailable` (`this server does not
    /// relay`). Peers that cannot reach each other directly then cannot chat.
    #[arg(long)]
    pub no_relay: bool,

    /// Relays held at once, counting those waiting for their second peer; past it
    /// RELAY gets `503` (`relay full`) with `Retry-After`.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub max_relays: usize,

    /// Bytes one relay carries, both ways together, before the server closes both
    /// connections (0: no limit). The default, 16 MiB, is a long text chat.
    #[arg(long, value_name = "BYTES", default_value_t = 16 * 1024 * 1024)]
    pub relay_budget: u64,

    /// Bytes per second one relay may carry, both ways together, averaged over 10 s
    /// windows; a relay that goes faster is closed (0: no limit).
    #[arg(long, value_name = "BYTES_PER_SEC", default_value_t = 64 * 1024)]
    pub relay_rate: u64,

    /// Seconds a relay may carry nothing either way before both connections are closed.
    #[arg(long, value_name = "SECS", default_value = "600", value_parser = parse_secs)]
    pub relay_idle: Duration,
}

/// 32 bytes from the OS random source: the seed of the server's tickets.
pub fn os_seed() -> Result<[u8; 32], String> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| format!("cannot read the OS random source: {e}"))?;
    Ok(seed)
}

/// File descriptors kept back from `--max-connections` for listeners, stdio and the poller.
const RESERVED_FDS: u64 = 64;

/// Parses a positive number of seconds, fractions allowed (`0.5`).
fn parse_secs(raw: &str) -> Result<Duration, String> {
    match raw.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs.is_finite() => {
            Duration::try_from_secs_f64(secs).map_err(|e| format!("{raw} seconds: {e}"))
        }
        _ => Err(format!(
            "expected a positive number of seconds, not {raw:?}"
        )),
    }
}

impl ServerArgs {
    /// The core's configuration. Without `--max-connections`, the cap sits just under
    /// `open_files` so a full server answers 503 instead of failing to accept.
    pub fn config(&self, open_files: Option<u64>) -> ServerConfig {
        let defaults = ServerConfig::default();
        let max_connections = self
            .max_connections
            .or(open_files.map(|n| {
                (n.saturating_sub(RESERVED_FDS) / self.transport.fds_per_connection()).max(1)
            }))
            .map_or(defaults.max_connections, saturating_usize);
        ServerConfig {
            listen: self.listen,
            trace: self.trace,
            limits: Limits {
                max_body: self.max_body,
                ..defaults.limits
            },
            head_timeout: self.head_timeout,
            register_timeout: self.register_timeout,
            idle_timeout: self.idle_timeout,
            max_connections,
            max_per_ip: saturating_usize(self.max_per_ip),
            strict_ip: self.strict_ip,
            match_timeout: self.match_timeout,
            introduction_deadline: self.introduction_deadline,
            fallthrough_limit: self.max_fallthroughs,
            serve_metrics: self.metrics_listen.is_none(),
            fallthrough_limit_per_ip: self.max_fallthroughs_per_ip,
            legacy_ttl: self.legacy_ttl,
            relay: !self.no_relay,
            max_relays: self.max_relays,
            relay_budget: self.relay_budget,
            relay_rate: self.relay_rate,
            relay_idle: self.relay_idle,
            ..defaults
        }
    }
}

fn saturating_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

pub fn run(args: ServerArgs) -> Result<(), String> {
    let quiet = args.quiet;
    // Take all the descriptors the system allows (the hard limit).
    let open_files = rlimit::increase_nofile_limit(u64::MAX).ok();
    logging::init(args.log_format);
    let server = Server::new(args.config(open_files), os_seed()?);
    if let Some(addr) = args.metrics_listen {
        let bound = crate::metrics_listen::start(addr, server.pages())?;
        logging::ready(&format!("metrics on {bound}"));
    }
    run_with(
        args.transport,
        server,
        |inputs| signals::on_interrupt(move || inputs.send(ServerInput::Shutdown)),
        |event| logging::server_event(&event, quiet),
    )?;
    if !quiet {
        logging::info("server stopped");
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
        ServerEvent::Registered {
            conn,
            contact,
            version: Version::V1,
            observed,
        } => format!("{conn} registered {contact} (seen from {observed})"),
        ServerEvent::Registered {
            conn,
            contact,
            version: Version::V2,
            observed,
        } => format!("{conn} registered {contact} with protocol 2 (seen from {observed})"),
        ServerEvent::Unregistered { conn, name } => format!("{conn} unregistered {name}"),
        ServerEvent::Waiting {
            conn,
            name,
            peer: None,
        } => format!("{conn} {name} is waiting for a peer"),
        ServerEvent::Waiting {
            conn,
            name,
            peer: Some(peer),
        } => format!("{conn} {name} is waiting for {peer}"),
        ServerEvent::Paired {
            asker,
            waiter,
            ticket,
        } => {
            let ticket = if *ticket { " (ticket issued)" } else { "" };
            format!("paired {asker} with {waiter}{ticket}")
        }
        ServerEvent::Started { waiter, asker } => {
            format!("{waiter} started the chat with {asker}")
        }
        ServerEvent::FellThrough {
            asker,
            waiter,
            why,
            requeued,
        } => {
            let reason = FallThroughReason { asker, why: *why };
            if *requeued {
                format!("{asker} did not come for {waiter} ({reason}): {waiter} waits again, first in line")
            } else {
                format!("{asker} dropped {waiter} unused ({reason})")
            }
        }
        ServerEvent::Rejected { conn, rejection } => {
            format!("{conn} rejected: {} ({rejection})", rejection.status())
        }
        ServerEvent::Closed { conn, reason } => format!("{conn} closed: {reason}"),
        ServerEvent::RelayJoined { conn } => {
            format!("{conn} came to the relay first: held, its peer told")
        }
        ServerEvent::RelayStarted { first, second } => {
            format!("relaying between {first} and {second}")
        }
        ServerEvent::RelayEnded {
            first,
            second: Some(second),
            why,
            first_to_second,
            second_to_first,
            duration,
        } => format!(
            "relay between {first} and {second} ended: {why} ({first_to_second} bytes from {first}, {second_to_first} from {second}, {:.1} s)",
            duration.as_secs_f64()
        ),
        ServerEvent::RelayEnded {
            first,
            second: None,
            why,
            duration,
            ..
        } => format!(
            "relay held for {first} ended: {why} ({:.1} s)",
            duration.as_secs_f64()
        ),
    };
    Some(Line::Out(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridgechat_core::server::{CloseReason, FallThrough, Rejection, RelayEnd};
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
                contact,
                version: Version::V2,
                observed: "203.0.113.7:51234".parse().unwrap(),
            }),
            "#3 registered alice at 127.0.0.1:9001 with protocol 2 (seen from 203.0.113.7:51234)"
        );
        assert_eq!(
            shown(ServerEvent::Paired {
                asker: name("bob"),
                waiter: name("alice"),
                ticket: true,
            }),
            "paired bob with alice (ticket issued)"
        );
        assert_eq!(
            shown(ServerEvent::Waiting {
                conn: ConnId(3),
                name: name("bob"),
                peer: Some(name("alice")),
            }),
            "#3 bob is waiting for alice"
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
        assert_eq!(
            shown(ServerEvent::FellThrough {
                asker: name("bob"),
                waiter: name("Alice"),
                why: FallThrough::Timeout { secs: 10 },
                requeued: true,
            }),
            "bob did not come for Alice (bob did not start the chat within 10 s): Alice waits again, first in line"
        );
        assert_eq!(
            shown(ServerEvent::FellThrough {
                asker: name("bob"),
                waiter: name("carol"),
                why: FallThrough::AskerUnregistered,
                requeued: false,
            }),
            "bob dropped carol unused (bob unregistered)"
        );
        assert_eq!(
            shown(ServerEvent::Rejected {
                conn: ConnId(5),
                rejection: Rejection::TooManyFallthroughs { retry_after: 42 }
            }),
            "#5 rejected: 429 Too Many Requests (too many peers handed to you went unused; try again in 42s)"
        );
    }

    /// `ServerArgs` as the command line gives them.
    fn parsed(args: &[&str]) -> ServerArgs {
        #[derive(clap::Parser)]
        struct Line {
            #[command(flatten)]
            server: ServerArgs,
        }
        let argv = std::iter::once("server").chain(args.iter().copied());
        <Line as clap::Parser>::try_parse_from(argv)
            .expect("valid flags")
            .server
    }

    #[test]
    fn strict_ip_is_off_unless_asked_for() {
        assert!(!parsed(&[]).config(None).strict_ip);
        assert!(parsed(&["--strict-ip"]).config(None).strict_ip);
    }

    #[test]
    fn fall_through_flags_reach_the_config() {
        let defaults = parsed(&[]).config(None);
        assert_eq!(defaults.introduction_deadline, Duration::from_secs(10));
        assert_eq!(defaults.fallthrough_limit, 3);
        assert_eq!(defaults.fallthrough_limit_per_ip, 30);
        assert_eq!(defaults.match_timeout, Duration::from_secs(10));
        let set = parsed(&[
            "--introduction-deadline",
            "2.5",
            "--max-fallthroughs",
            "0",
            "--max-fallthroughs-per-ip",
            "7",
            "--match-timeout",
            "0.5",
        ])
        .config(None);
        assert_eq!(set.introduction_deadline, Duration::from_millis(2500));
        assert_eq!(set.fallthrough_limit, 0);
        assert_eq!(set.fallthrough_limit_per_ip, 7);
        assert_eq!(set.match_timeout, Duration::from_millis(500));
    }

    #[test]
    fn relay_events_read_as_one_line_each() {
        assert_eq!(
            shown(ServerEvent::RelayStarted {
                first: ConnId(3),
                second: ConnId(5)
            }),
            "relaying between #3 and #5"
        );
        assert_eq!(
            shown(ServerEvent::RelayEnded {
                first: ConnId(3),
                second: Some(ConnId(5)),
                why: RelayEnd::Closed(ConnId(5)),
                first_to_second: 120,
                second_to_first: 80,
                duration: Duration::from_millis(2500),
            }),
            "relay between #3 and #5 ended: #5 closed its connection (120 bytes from #3, 80 from #5, 2.5 s)"
        );
        assert_eq!(
            shown(ServerEvent::RelayEnded {
                first: ConnId(3),
                second: None,
                why: RelayEnd::PeerDidNotCome { secs: 10 },
                first_to_second: 0,
                second_to_first: 0,
                duration: Duration::from_secs(10),
            }),
            "relay held for #3 ended: the peer did not come within 10 s (10.0 s)"
        );
        assert_eq!(
            shown(ServerEvent::Rejected {
                conn: ConnId(4),
                rejection: Rejection::UnknownTicket
            }),
            "#4 rejected: 403 Forbidden (unknown ticket)"
        );
    }

    #[test]
    fn relay_flags_reach_the_config() {
        let defaults = parsed(&[]).config(None);
        assert!(defaults.relay);
        assert_eq!(defaults.max_relays, 1000);
        assert_eq!(defaults.relay_budget, 16 * 1024 * 1024);
        assert_eq!(defaults.relay_rate, 64 * 1024);
        assert_eq!(defaults.relay_idle, Duration::from_secs(600));
        let set = parsed(&[
            "--no-relay",
            "--max-relays",
            "7",
            "--relay-budget",
            "1000",
            "--relay-rate",
            "0",
            "--relay-idle",
            "1.5",
        ])
        .config(None);
        assert!(!set.relay);
        assert_eq!(set.max_relays, 7);
        assert_eq!(set.relay_budget, 1000);
        assert_eq!(set.relay_rate, 0);
        assert_eq!(set.relay_idle, Duration::from_millis(1500));
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
