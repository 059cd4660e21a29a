//! The server target: a [`Server`] driven through the core's driver, its answers
//! checked against the protocol's registry model.

use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::registry::{Bridged, Note, Registered, RegistryModel};
use super::{fuzz_contact, fuzz_name, other_request, OpReader, NAMES};
use crate::codec::{
    self, DecodeError, Decoder, Header, HeaderError, Inbound, Method, Request, Response, Status,
    Ticket, Version,
};
use crate::driver::{drive, Outcomes, Transport};
use crate::server::{Server, ServerConfig, ServerEvent, ServerInput};
use crate::{ConnId, Endpoint};

mod course;
mod relay;
pub use course::course_server;
use relay::{RelayModel, RelaySlot};

/// One connection of the server target, and what the model expects of it.
#[derive(Debug)]
struct ServerSlot {
    conn: ConnId,
    open: bool,
    /// Decodes what we sent exactly as the server should, so we know which requests it saw.
    mirror: Decoder,
    mirror_error: Option<DecodeError>,
    unanswered: VecDeque<Request>,
    /// Decodes what the server sent; it must always be valid.
    answers: Decoder,
    /// Responses that answered no request: a framing error, 408 or 503, then a close.
    unprompted: usize,
    /// Notifications received since the last check against the model.
    notes: Vec<Note>,
    /// The ticket of the last MATCHED, for STARTED.
    last_ticket: Option<Ticket>,
    /// Whether anything was sent on it yet (its first line picks its format).
    spoke: bool,
    /// What it was sent while the server may still read it as the course format.
    first_bytes: Option<Vec<u8>>,
    /// Requests the mirror decoded: RELAY opens a relay only as the first.
    decoded: usize,
    relay: RelaySlot,
    /// Relayed: bytes its peer sent that it has not received yet.
    expected: Vec<u8>,
    /// Held at a relay: what it sent before its peer came.
    held: Vec<u8>,
}

/// What the server target expects, and the transport it drives the server through.
#[derive(Debug)]
struct ServerModel {
    now: Instant,
    slots: Vec<ServerSlot>,
    registry: RegistryModel<usize>,
    /// The status of every response sent, in order.
    statuses: Vec<Status>,
    /// Every ticket issued so far: none may be issued twice.
    tickets: HashSet<[u8; 16]>,
    exited: bool,
    relays: RelayModel,
    /// Stays empty: nothing the server asks for (a listener) is reported back.
    outcomes: Outcomes,
}

impl ServerModel {
    fn slot_of(&self, conn: ConnId) -> Option<usize> {
        self.slots.iter().position(|s| s.conn == conn)
    }

    fn forget(&mut self, i: usize) {
        self.relay_closed(i);
        self.slots[i].open = false;
        self.registry.close(i);
    }

    /// A notification sent to slot `i`, checked against the model when outputs are drained.
    fn notified(&mut self, i: usize, note: Request) {
        let note = match note {
            Request::Matched(intro) => {
                let pending = self
                    .registry
                    .pending(i)
                    .expect("MATCHED to a waiter not handed out");
                assert_eq!(
                    pending.ticket,
                    Some(intro.ticket),
                    "MATCHED and the asker's answer carry one ticket"
                );
                self.slots[i].last_ticket = intro.ticket;
                Note::Matched {
                    peer: intro.peer.name,
                    ticket: intro.ticket.is_some(),
                }
            }
            Request::Unmatched(unmatched) => Note::Unmatched {
                peer: unmatched.name,
            },
            Request::Relay(ticket) => {
                assert!(self.registry.is_v2(i), "a notification to a v1 connection");
                return self.relay_note(i, ticket);
            }
            other => panic!("the server sent a request that is no notification: {other:?}"),
        };
        assert!(self.registry.is_v2(i), "a notification to a v1 connection");
        self.slots[i].notes.push(note);
    }

    /// Checks one answer against the request it answers and updates the model.
    fn answered(&mut self, i: usize, request: Request, response: &Response) {
        let status = response.status;
        match request {
            Request::Register(contact, version) => {
                match self
                    .registry
                    .register_as(i, contact, version == Version::V2)
                {
                    Registered::NameTaken => assert_eq!(status, Status::CONFLICT),
                    Registered::Stored => {
                        assert_eq!(status, Status::OK, "{}", response.reason_text());
                        assert_eq!(
                            response.contact,
                            Some(contact),
                            "REGISTER echoes what it stored"
                        );
                        assert_eq!(response.version, version, "v2 is answered as v2");
                        assert_eq!(response.observed.is_some(), version == Version::V2);
                    }
                }
            }
            Request::Bridge { name, peer } => {
                let me = self.registry.registration(i);
                let asker_v2 = self.registry.is_v2(i);
                match self.registry.bridge_for(i, name, peer.map_err(|_| ())) {
                    Bridged::NotRegistered | Bridged::NameMismatch => {
                        assert_eq!(status, Status::FORBIDDEN)
                    }
                    Bridged::BadPeer | Bridged::WithYourself => {
                        assert_eq!(status, Status::BAD_REQUEST)
                    }
                    Bridged::Waits => {
                        assert_eq!(status, Status::OK, "{}", response.reason_text());
                        assert_eq!(response.contact, None, "nobody else was waiting");
                    }
                    Bridged::Paired(waiter) => {
                        assert_eq!(status, Status::OK, "{}", response.reason_text());
                        let peer = response.contact.expect("the waiting client's contact");
                        assert_ne!(
                            Some(peer.name),
                            me.map(|c| c.name),
                            "a client was handed itself"
                        );
                        assert_eq!(peer, waiter);
                        let waiter_slot = self.registry.holder(waiter.name);
                        let waiter_v2 = waiter_slot.is_some_and(|w| self.registry.is_v2(w));
                        assert_eq!(
                            response.ticket.is_some(),
                            asker_v2 && waiter_v2,
                            "a ticket exactly when both speak v2"
                        );
                        assert_eq!(response.peer_version.is_some(), asker_v2);
                        if let Some(ticket) = response.ticket {
                            assert!(
                                self.tickets.insert(ticket.to_bytes()),
                                "a ticket issued twice"
                            );
                        }
                        if let Some(w) = waiter_slot {
                            self.registry.record_ticket(w, response.ticket);
                        }
                    }
                }
            }
            Request::Unregister => {
                assert_eq!(status, Status::OK);
                self.registry.unregister(i);
            }
            Request::Started(ticket) if self.registry.is_v2(i) => {
                assert_eq!(status, Status::OK, "{}", response.reason_text());
                self.registry.started(i, ticket);
            }
            Request::Invalid {
                method: Method::Started | Method::Matched | Method::Unmatched | Method::Relay,
                ..
            }
            | Request::Invalid {
                method: Method::Chat,
                error: HeaderError::Invalid(Header::Ticket, _),
            } if !self.registry.is_v2(i) => assert_eq!(status, Status::NOT_IMPLEMENTED),
            Request::Invalid { .. } => assert_eq!(status, Status::BAD_REQUEST),
            Request::Page(_) => assert!(status == Status::OK || status == Status::NOT_FOUND),
            // Not a first request (the first opens a relay, modelled apart).
            Request::Relay(_) if self.registry.is_v2(i) => assert_eq!(status, Status::BAD_REQUEST),
            Request::Relay(_) => assert_eq!(status, Status::NOT_IMPLEMENTED),
            Request::Chat(..)
            | Request::Message(_)
            | Request::Quit
            | Request::QuitWith { .. }
            | Request::Matched(_)
            | Request::Unmatched(_)
            | Request::Started(_)
            | Request::Unknown => {
                assert_eq!(status, Status::NOT_IMPLEMENTED)
            }
        }
    }
}

/// The server's outputs, checked against the model as they are carried out.
impl Transport<ServerEvent> for ServerModel {
    fn now(&mut self) -> Instant {
        self.now
    }

    fn listen(&mut self, _addr: SocketAddr, _shared: bool) {}

    fn connect(&mut self, conn: ConnId, addr: SocketAddr, _from: Option<u16>) {
        panic!("the server opens no connections ({conn} to {addr})");
    }

    fn transmit(&mut self, conn: ConnId, bytes: &[u8]) {
        let Some(i) = self.slot_of(conn) else {
            panic!("transmit on {conn}, never handed out");
        };
        let s = &mut self.slots[i];
        assert!(s.open, "transmit on {conn} after it closed");
        if s.relay != RelaySlot::No {
            return self.relay_transmit(i, bytes);
        }
        let mut input = bytes;
        loop {
            let s = &mut self.slots[i];
            let response = match s.answers.decode_message(&mut input) {
                Ok(Some(Inbound::Response(response))) => response,
                Ok(Some(Inbound::Request(note))) => {
                    self.notified(i, note);
                    continue;
                }
                Ok(None) => break,
                Err(error) => panic!("the server sent a malformed message: {error}"),
            };
            self.statuses.push(response.status);
            match s.unanswered.pop_front() {
                Some(request) => self.answered(i, request, &response),
                None => {
                    assert!(!response.status.is_success(), "unprompted {response:?}");
                    s.unprompted += 1;
                    assert!(s.unprompted <= 1, "two answers to no request on {conn}");
                }
            }
        }
    }

    fn close(&mut self, conn: ConnId) {
        let i = self
            .slot_of(conn)
            .expect("close of a connection never handed out");
        assert!(self.slots[i].open, "{conn} closed twice");
        self.forget(i);
    }

    fn abort(&mut self, conn: ConnId) {
        self.close(conn);
    }

    fn show(&mut self, _event: ServerEvent) {}

    fn exit(&mut self, _result: Result<(), crate::ExitError>) {
        self.exited = true;
    }

    fn outcomes(&mut self) -> &mut Outcomes {
        &mut self.outcomes
    }
}

/// Drives a [`Server`] with up to 8 connections from operations read out of `data`.
///
/// Checks: no panic; every byte sent decodes as responses; each complete request gets
/// exactly one answer, in order, at once; registry and pairing follow the contract
/// (409 for a taken name, 403 before REGISTER, the waiting client handed out once and
/// never to itself); nothing is sent on a closed connection; timers make progress.
/// Returns the status of every response the server sent, in order.
pub fn server(data: &[u8], start: Instant) -> Vec<Status> {
    let config = ServerConfig {
        max_connections: 6,
        max_per_ip: 4,
        // Time is not in the model: matches fall through by the asker's doing only, and
        // the fall-through limit (tested in tests/server.rs) never refuses.
        match_timeout: Duration::ZERO,
        introduction_deadline: Duration::ZERO,
        fallthrough_limit: 0,
        fallthrough_limit_per_ip: 0,
        ..ServerConfig::default()
    };
    let limits = config.limits;
    let mut server = Server::new(config, [0; 32]);
    let mut model = ServerModel {
        now: start,
        slots: Vec::new(),
        registry: RegistryModel::default(),
        statuses: Vec::new(),
        tickets: HashSet::new(),
        exited: false,
        relays: RelayModel::default(),
        outcomes: Outcomes::default(),
    };
    let mut slots: [Option<usize>; 8] = [None; 8];
    let mut now = start;
    let mut ops = OpReader { data };
    drain_server(&mut server, &mut model);

    while let Some(op) = ops.byte() {
        let slot = usize::from(op >> 4) % slots.len();
        let live = slots[slot].filter(|&i| model.slots[i].open);
        let send = move |server: &mut Server, model: &mut ServerModel, bytes: &[u8]| {
            let Some(i) = live else { return };
            let kept_http;
            let bytes = match model.slots[i].first_bytes.take() {
                None => bytes,
                Some(mut first) => {
                    let sent_before = first.len();
                    first.extend_from_slice(bytes);
                    let bytes = if crate::course::detect_verb(&first, &limits)
                        == crate::course::Dialect::Course
                    {
                        // The course format is `course_server`'s to check, not this
                        // model's: a NUL before these bytes keeps the connection HTTP.
                        kept_http = [&[0u8][..], bytes].concat();
                        first.truncate(sent_before);
                        first.extend_from_slice(&kept_http);
                        &kept_http[..]
                    } else {
                        bytes
                    };
                    if crate::course::may_be_course(&first) {
                        model.slots[i].first_bytes = Some(first);
                    }
                    bytes
                }
            };
            server.handle_data(now, model.slots[i].conn, bytes);
            model.slots[i].spoke = true;
            if model.relayed(i, bytes) {
                return;
            }
            let mut input = bytes;
            while model.slots[i].mirror_error.is_none() {
                let s = &mut model.slots[i];
                match s.mirror.decode_request(&mut input) {
                    Ok(Some(Request::Relay(ticket))) if s.decoded == 0 => {
                        // The connection leaves HTTP: the rest is relayed, verbatim.
                        let mut rest = s.mirror.take_unparsed();
                        rest.extend_from_slice(input);
                        return model.relay_first(i, ticket, &rest);
                    }
                    Ok(Some(request)) => {
                        s.decoded += 1;
                        s.unanswered.push_back(request);
                    }
                    Ok(None) => break,
                    Err(error) => s.mirror_error = Some(error),
                }
            }
        };
        match op & 0x0f {
            0 | 1 => {
                if live.is_none() {
                    let peer = SocketAddr::new(
                        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + ops.arg() % 3)),
                        40000 + slot as u16,
                    );
                    let conn = server.handle_accept(now, peer);
                    assert!(model.slot_of(conn).is_none(), "{conn} reused");
                    slots[slot] = Some(model.slots.len());
                    model.slots.push(ServerSlot {
                        conn,
                        open: true,
                        mirror: Decoder::new(limits),
                        mirror_error: None,
                        unanswered: VecDeque::new(),
                        answers: Decoder::default(),
                        unprompted: 0,
                        notes: Vec::new(),
                        last_ticket: None,
                        spoke: false,
                        first_bytes: Some(Vec::new()),
                        decoded: 0,
                        relay: RelaySlot::No,
                        expected: Vec::new(),
                        held: Vec::new(),
                    });
                }
            }
            2 => {
                let mut out = Vec::new();
                codec::write_register(&mut out, &fuzz_contact(ops.arg()));
                send(&mut server, &mut model, &out);
            }
            3 => {
                let mut out = Vec::new();
                codec::write_register_v2(&mut out, &fuzz_contact(ops.arg()));
                send(&mut server, &mut model, &out);
            }
            5 => {
                // Version 2: meet one person.
                let mut out = Vec::new();
                codec::write_bridge_for(&mut out, None, Some(&fuzz_name(ops.arg())));
                send(&mut server, &mut model, &out);
            }
            4 => {
                let arg = ops.arg();
                let name = match arg % 3 {
                    0 => None,
                    1 => live
                        .and_then(|i| model.registry.registration(i))
                        .map(|c| c.name),
                    _ => Some(fuzz_name(arg / 3)),
                };
                let mut out = Vec::new();
                codec::write_bridge(&mut out, name.as_ref());
                send(&mut server, &mut model, &out);
            }
            6 => {
                let mut out = Vec::new();
                codec::write_unregister(&mut out);
                send(&mut server, &mut model, &out);
            }
            7 => {
                if let Some(i) = live {
                    server.handle_closed(now, model.slots[i].conn);
                    model.forget(i);
                }
            }
            8 => {
                let garbage = ops.bytes(255);
                // A first line of course verbs is the course format, which this model
                // does not know: `course_server` covers it. Keep this one HTTP.
                let first = live.is_some_and(|i| !model.slots[i].spoke);
                let mut line = garbage.iter().skip_while(|&&b| b == b'\r' || b == b'\n');
                if first && line.next().is_some_and(u8::is_ascii_uppercase) {
                    send(&mut server, &mut model, &[&[0u8][..], garbage].concat());
                } else {
                    send(&mut server, &mut model, garbage);
                }
            }
            9 => {
                // A request cut short: the rest may follow as other bytes, or never.
                let mut out = other_request(ops.arg());
                codec::write_register(&mut out, &fuzz_contact(ops.arg()));
                let cut = usize::from(ops.arg()) % out.len();
                send(&mut server, &mut model, &out[..cut]);
            }
            10 => send(&mut server, &mut model, &other_request(ops.arg())),
            11 => {
                // Register and bridge in one write (pipelining).
                let mut out = Vec::new();
                codec::write_register(&mut out, &fuzz_contact(ops.arg()));
                codec::write_bridge(&mut out, None);
                send(&mut server, &mut model, &out);
            }
            12 => {
                now += Duration::from_millis(250) * u32::from(ops.arg());
                model.now = now;
            }
            13 => {
                // STARTED with the last MATCHED's ticket, none, or a stranger's.
                let arg = ops.arg();
                let ticket = match arg % 3 {
                    0 => live.and_then(|i| model.slots[i].last_ticket),
                    1 => None,
                    _ => Some(Ticket::from_bytes([arg; 16])),
                };
                let mut out = Vec::new();
                codec::write_started(&mut out, ticket.as_ref());
                send(&mut server, &mut model, &out);
            }
            14 => {
                // Bytes on a connection the server never handed out, or closed already.
                server.handle_data(
                    now,
                    ConnId(1_000_000 + u64::from(ops.arg())),
                    b"BRIDGE / HTTP/1.1\r\n\r\n",
                );
            }
            _ => {
                let arg = ops.arg();
                if arg != 0xff {
                    // RELAY with a slot's last MATCHED ticket or a stranger's, maybe
                    // with bytes behind it.
                    let from = usize::from(arg & 0x07) % model.slots.len().max(1);
                    let ticket = match arg & 0x08 {
                        0 => model.slots.get(from).and_then(|s| s.last_ticket),
                        _ => None,
                    };
                    let ticket = ticket.unwrap_or(Ticket::from_bytes([arg; 16]));
                    let mut out = Vec::new();
                    codec::write_relay(&mut out, &ticket);
                    if arg & 0x10 != 0 {
                        out.extend_from_slice(b"\x00CHAT / HTTP/1.1\r\n");
                    }
                    send(&mut server, &mut model, &out);
                } else {
                    server.handle_input(now, ServerInput::Shutdown);
                    let exited = drain_server(&mut server, &mut model);
                    assert!(exited, "Shutdown must end in Exit");
                    assert!(
                        model.slots.iter().all(|s| !s.open),
                        "Shutdown left a connection open"
                    );
                    return model.statuses;
                }
            }
        }
        if server.poll_timeout().is_some_and(|t| t <= now) {
            drain_server(&mut server, &mut model);
            server.handle_timeout(now);
            assert!(
                server.poll_timeout().map_or(true, |t| t > now),
                "handle_timeout left a deadline in the past"
            );
        }
        drain_server(&mut server, &mut model);
        check_server_stats(&server, &model);
    }
    model.statuses
}

/// Carries out the server's outputs against the model; true once it asked to exit.
fn drain_server(server: &mut Server, model: &mut ServerModel) -> bool {
    let exited = drive(server, model);
    for i in 0..model.slots.len() {
        let got = std::mem::take(&mut model.slots[i].notes);
        let owed = model.registry.take_notes(i);
        if model.slots[i].open {
            assert_eq!(got, owed, "notifications to {}", model.slots[i].conn);
        }
    }
    for s in &model.slots {
        if s.open {
            assert!(
                s.unanswered.is_empty(),
                "{} left a request unanswered",
                s.conn
            );
            assert!(
                s.mirror_error.is_none(),
                "{} kept open after a framing error",
                s.conn
            );
        }
    }
    model.check_relays();
    exited
}

fn check_server_stats(server: &Server, model: &ServerModel) {
    let stats = server.stats();
    let open = model.slots.iter().filter(|s| s.open).count();
    let registered = model.registry.len();
    assert_eq!(stats.connections, open);
    assert_eq!(stats.registered, registered);
    assert_eq!(stats.waiting, model.registry.waiting().is_some());
    assert_eq!(server.waiting(), model.registry.waiting());
    // A waiter is handed to at most one peer at a time; a fallen-through one waits again.
    assert_eq!(server.waiting_clients(), model.registry.waiting_clients());
    assert_eq!(stats.waiting_for_someone, model.registry.named_count());
    assert_eq!(stats.pending_matches, model.registry.pending_count());
    for name in NAMES {
        let name = crate::contact::Name::new(name.as_bytes()).expect("a valid name");
        assert_eq!(
            server.waiting_for(&name),
            model.registry.waiting_for(name),
            "waiting for {name}"
        );
    }
}
#[cfg(test)]
mod tests;
