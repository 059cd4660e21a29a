//! The server fuzz body for the course format on the server's port.

use super::*;

/// The course format on the server's port: what a transport sees of a [`Server`]
/// fed course blocks, HTTP requests and arbitrary bytes on up to 4 connections.
#[derive(Debug, Default)]
struct CourseRig {
    now: Option<Instant>,
    open: HashSet<ConnId>,
    outcomes: Outcomes,
}

impl Transport<ServerEvent> for CourseRig {
    fn now(&mut self) -> Instant {
        self.now.expect("set before driving")
    }
    fn listen(&mut self, _addr: SocketAddr, _shared: bool) {}
    fn connect(&mut self, conn: ConnId, addr: SocketAddr, _from: Option<u16>) {
        panic!("the server opens no connections ({conn} to {addr})");
    }
    fn transmit(&mut self, conn: ConnId, _bytes: &[u8]) {
        assert!(self.open.contains(&conn), "transmit on {conn}, not open");
    }
    fn close(&mut self, conn: ConnId) {
        assert!(self.open.remove(&conn), "close of {conn}, not open");
    }
    fn abort(&mut self, conn: ConnId) {
        self.close(conn);
    }
    fn show(&mut self, _event: ServerEvent) {}
    fn exit(&mut self, _result: Result<(), crate::ExitError>) {}
    fn outcomes(&mut self) -> &mut Outcomes {
        &mut self.outcomes
    }
}

/// Checks: no panic; nothing sent to or closed on a connection that is not open
/// (course registrations held without one included); the connection count leaves
/// held registrations out; timers make progress; every name is registered once.
pub fn course_server(data: &[u8], start: Instant) {
    let config = ServerConfig {
        legacy_ttl: Duration::from_secs(2),
        head_timeout: Duration::from_secs(1),
        ..ServerConfig::default()
    };
    let mut server = Server::new(config, [0; 32]);
    let mut rig = CourseRig {
        now: Some(start),
        ..CourseRig::default()
    };
    let mut conns: [Option<ConnId>; 4] = [None; 4];
    let mut ops = OpReader { data };
    let mut now = start;
    drive(&mut server, &mut rig);
    while let Some(op) = ops.byte() {
        let slot = usize::from(op >> 4) % conns.len();
        let live = conns[slot].filter(|c| rig.open.contains(c));
        let mut out = Vec::new();
        match op & 0x07 {
            0 => {
                if live.is_none() {
                    let peer = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000);
                    let conn = server.handle_accept(now, peer);
                    rig.open.insert(conn);
                    conns[slot] = Some(conn);
                }
            }
            1 => crate::course::write_register(&mut out, &fuzz_contact(ops.arg())),
            2 => crate::course::write_bridge(&mut out, &fuzz_name(ops.arg())),
            3 => out.extend_from_slice(ops.bytes(255)),
            4 => {
                codec::write_register_v2(&mut out, &fuzz_contact(ops.arg()));
                codec::write_bridge(&mut out, None);
            }
            5 => {
                if let Some(conn) = live {
                    server.handle_closed(now, conn);
                    rig.open.remove(&conn);
                }
            }
            6 => now += Duration::from_millis(250) * u32::from(ops.arg()),
            _ => crate::course::write_quit(&mut out),
        }
        if let (Some(conn), false) = (live, out.is_empty()) {
            server.handle_data(now, conn, &out);
        }
        rig.now = Some(now);
        drive(&mut server, &mut rig);
        if server.poll_timeout().is_some_and(|t| t <= now) {
            server.handle_timeout(now);
            drive(&mut server, &mut rig);
            assert!(server.poll_timeout().map_or(true, |t| t > now));
        }
        let stats = server.stats();
        assert_eq!(stats.connections, rig.open.len());
        assert!(stats.registered <= NAMES.len(), "a name registered twice");
    }
}
