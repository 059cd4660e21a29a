//! The server's log, through `tracing`: one line per event on stdout, in the
//! format `--log-format` picks, filtered by `RUST_LOG` (default `info`).
//!
//! `plain` (the default) is the message alone, as the server has always
//! printed it; journald and most supervisors stamp each line themselves.
//! `full` adds an RFC 3339 UTC timestamp and the level; `json` writes one
//! object per line for log shippers. Only what the protocol says in the open
//! is logged (names, addresses, statuses); the server never sees chat text.

use std::fmt;

use bridgechat_core::server::ServerEvent;
use clap::ValueEnum;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{Directive, EnvFilter, LevelFilter};
use tracing_subscriber::fmt::format::{debug_fn, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::out::Line;
use crate::server::describe;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    /// The message alone, one line per event.
    #[default]
    Plain,
    /// Timestamp (UTC), level and message.
    Full,
    /// One JSON object per line: timestamp, level, message and the event's fields.
    Json,
}

/// The target of the readiness lines (`listening on ...`), which `RUST_LOG`
/// cannot hide: scripts and tests wait for them.
const READY: &str = "bridgechat::ready";

/// Installs the global subscriber; call once, before the server starts.
pub fn init(format: LogFormat) {
    let ready: Directive = format!("{READY}=info").parse().expect("a valid directive");
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env_lossy()
        .add_directive(ready);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .with_ansi(false);
    // A second init (only in tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Plain => builder.event_format(MessageOnly).try_init(),
        // The fields repeat what the message says: shown in JSON only.
        LogFormat::Full => builder
            .with_target(false)
            .fmt_fields(debug_fn(|writer, field, value| match field.name() {
                "message" => write!(writer, "{value:?}"),
                _ => Ok(()),
            }))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

/// Logs one server event (nothing for an event `--quiet` hides).
pub fn server_event(event: &ServerEvent, quiet: bool) {
    let Some(line) = describe(event, quiet) else {
        return;
    };
    let text = match line {
        Line::Out(text) => text,
        // `--trace` output is a teaching view of the wire, not a log line.
        other => return other.print(),
    };
    match event {
        ServerEvent::Listening(addr) => {
            tracing::info!(target: READY, event = "listening", addr = %addr, "{text}")
        }
        ServerEvent::Accepted { conn, peer } => {
            tracing::info!(event = "accepted", conn = conn.0, peer = %peer, "{text}")
        }
        ServerEvent::Registered { conn, contact, .. } => tracing::info!(
            event = "registered",
            conn = conn.0,
            name = %contact.name,
            "{text}"
        ),
        ServerEvent::Unregistered { conn, name } => {
            tracing::info!(event = "unregistered", conn = conn.0, name = %name, "{text}")
        }
        ServerEvent::Waiting { conn, name, .. } => {
            tracing::info!(event = "waiting", conn = conn.0, name = %name, "{text}")
        }
        ServerEvent::Paired { asker, waiter, .. } => {
            tracing::info!(event = "paired", asker = %asker, waiter = %waiter, "{text}")
        }
        ServerEvent::Started { waiter, asker } => {
            tracing::info!(event = "started", waiter = %waiter, asker = %asker, "{text}")
        }
        ServerEvent::FellThrough {
            asker,
            waiter,
            requeued,
            ..
        } => tracing::info!(
            event = "fell_through",
            asker = %asker,
            waiter = %waiter,
            requeued,
            "{text}"
        ),
        ServerEvent::Rejected { conn, rejection } => {
            let status = rejection.status().code();
            if status == 503 {
                tracing::warn!(event = "rejected", conn = conn.0, status, "{text}")
            } else {
                tracing::info!(event = "rejected", conn = conn.0, status, "{text}")
            }
        }
        ServerEvent::Closed { conn, .. } => {
            tracing::info!(event = "closed", conn = conn.0, "{text}")
        }
        ServerEvent::RelayJoined { conn } => {
            tracing::info!(event = "relay_joined", conn = conn.0, "{text}")
        }
        ServerEvent::RelayStarted { first, second } => tracing::info!(
            event = "relay_started",
            first = first.0,
            second = second.0,
            "{text}"
        ),
        ServerEvent::RelayEnded {
            first,
            second,
            why,
            first_to_second,
            second_to_first,
            duration,
        } => tracing::info!(
            event = "relay_ended",
            first = first.0,
            second = second.map(|c| c.0),
            why = %why,
            first_to_second,
            second_to_first,
            seconds = duration.as_secs_f64(),
            "{text}"
        ),
        ServerEvent::Trace { .. } => {}
    }
}

/// A readiness line such as `metrics on ADDR`, shown whatever `RUST_LOG` says.
pub fn ready(text: &str) {
    tracing::info!(target: READY, "{text}");
}

/// An informational line (`server stopped`).
pub fn info(text: &str) {
    tracing::event!(Level::INFO, "{text}");
}

/// The `plain` format: the message and nothing else.
struct MessageOnly;

impl<S, N> FormatEvent<S, N> for MessageOnly
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut message = Message {
            writer: &mut writer,
            result: Ok(()),
        };
        event.record(&mut message);
        message.result?;
        writeln!(writer)
    }
}

struct Message<'a, 'w> {
    writer: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl Visit for Message<'_, '_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.result = write!(self.writer, "{value:?}");
        }
    }
}
