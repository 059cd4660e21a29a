//! The operator's side of the server: `GET /`, `/healthz`, `/metrics` (and
//! `HEAD`) answered on the protocol's port, and every metric moving when its
//! event happens. The exposition is checked by a strict OpenMetrics parser.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bridgechat_core::server::{Server, ServerConfig, ServerInput};
use bridgechat_core::{ConnId, Endpoint, Output};
use openmetrics_parser::{MetricsExposition, OpenMetricsType, OpenMetricsValue};

/// A server driven directly, as a transport would, on a clock the test moves.
struct Harness {
    server: Server,
    now: Instant,
    received: HashMap<ConnId, Vec<u8>>,
    closed: Vec<ConnId>,
    next_peer: u32,
}

impl Harness {
    fn new(config: ServerConfig) -> Harness {
        let now = Instant::now();
        let mut harness = Harness {
            server: Server::new(config),
            now,
            received: HashMap::new(),
            closed: Vec::new(),
            next_peer: 1,
        };
        harness.drain();
        harness
            .server
            .handle_listening(now, "0.0.0.0:7070".parse().unwrap());
        harness.drain();
        harness
    }

    fn drain(&mut self) {
        while let Some(output) = self.server.poll_output() {
            match output {
                Output::Transmit { conn, bytes } => self
                    .received
                    .entry(conn)
                    .or_default()
                    .extend_from_slice(bytes),
                Output::Close { conn } => self.closed.push(conn),
                _ => {}
            }
        }
    }

    fn connect(&mut self) -> ConnId {
        let peer = SocketAddr::new(
            IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + self.next_peer)),
            5000,
        );
        self.next_peer += 1;
        let conn = self.server.handle_accept(self.now, peer);
        self.drain();
        conn
    }

    fn send(&mut self, conn: ConnId, bytes: &str) {
        self.server.handle_data(self.now, conn, bytes.as_bytes());
        self.drain();
    }

    /// Everything received on `conn` since the last call.
    fn take(&mut self, conn: ConnId) -> String {
        String::from_utf8(self.received.remove(&conn).unwrap_or_default()).unwrap()
    }

    fn ask(&mut self, conn: ConnId, request: &str) -> String {
        self.send(conn, request);
        self.take(conn)
    }

    fn register(&mut self, conn: ConnId, name: &str) {
        let answer = self.ask(
            conn,
            &format!("REGISTER / HTTP/1.1\r\nName: {name}\r\nIP: 10.0.0.1\r\nPort: 9001\r\n\r\n"),
        );
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    }

    /// Scrapes `/metrics` on a fresh connection and parses it strictly.
    fn scrape(&mut self) -> Scrape {
        let conn = self.connect();
        let answer = self.ask(conn, "GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n");
        let (head, body) = answer.split_once("\r\n\r\n").expect("a whole response");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.contains(
                "\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8"
            ),
            "{head}"
        );
        assert!(
            head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())),
            "{head}"
        );
        let parsed = openmetrics_parser::openmetrics::parse_openmetrics(body)
            .unwrap_or_else(|e| panic!("not valid OpenMetrics ({e:?}):\n{body}"));
        Scrape(parsed)
    }
}

struct Scrape(MetricsExposition<OpenMetricsType, OpenMetricsValue>);

impl Scrape {
    /// The value of family `name` at the sample whose labels include `labels`;
    /// 0 for a labelled sample that does not exist yet. Panics if the family is missing.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let family = self
            .0
            .families
            .get(name)
            .unwrap_or_else(|| panic!("no metric {name}"));
        let sample = family.iter_samples().find(|sample| {
            let set = sample.get_labelset().unwrap();
            labels
                .iter()
                .all(|(k, v)| set.get_label_value(k) == Some(*v))
        });
        match sample.map(|s| &s.value) {
            None => 0.0,
            Some(OpenMetricsValue::Counter(c)) => c.value.as_f64(),
            Some(OpenMetricsValue::Gauge(g)) => g.as_f64(),
            Some(OpenMetricsValue::Histogram(h)) => h.count.unwrap_or(0) as f64,
            Some(other) => panic!("{name} has an unexpected value {other:?}"),
        }
    }

    fn histogram_sum(&self, name: &str) -> f64 {
        let family = &self.0.families[name];
        match &family.iter_samples().next().unwrap().value {
            OpenMetricsValue::Histogram(h) => h.sum.as_ref().unwrap().as_f64(),
            other => panic!("{name} is not a histogram: {other:?}"),
        }
    }
}

const REGISTER_ALICE: &str =
    "REGISTER / HTTP/1.1\r\nName: alice\r\nIP: 10.0.0.1\r\nPort: 9001\r\n\r\n";

#[test]
fn healthz_answers_ok_and_the_connection_carries_on() {
    let mut h = Harness::new(ServerConfig::default());
    let conn = h.connect();
    let answer = h.ask(
        conn,
        "GET /healthz HTTP/1.1\r\nHost: localhost:7070\r\n\r\n",
    );
    assert_eq!(
        answer,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\n\
         Cache-Control: no-store\r\n\r\nok\n"
    );
    // HTTP/1.1 keeps the connection: the same client may go on and register.
    assert!(h.closed.is_empty());
    h.register(conn, "alice");
}

#[test]
fn head_sends_the_head_of_get_and_no_body() {
    let mut h = Harness::new(ServerConfig::default());
    let conn = h.connect();
    for path in ["/", "/healthz", "/metrics", "/nowhere"] {
        let get = h.ask(conn, &format!("GET {path} HTTP/1.1\r\n\r\n"));
        let head = h.ask(conn, &format!("HEAD {path} HTTP/1.1\r\n\r\n"));
        let (get_head, _) = get.split_once("\r\n\r\n").unwrap();
        let get_status = get_head.lines().next().unwrap();
        assert!(
            head.ends_with("\r\n\r\n"),
            "HEAD {path} sent a body: {head:?}"
        );
        assert!(
            head.starts_with(get_status),
            "HEAD {path}: {head:?} vs {get_status}"
        );
        assert!(head.contains("\r\nContent-Length: "), "{head}");
    }
}

#[test]
fn other_paths_get_404_and_other_methods_still_get_501() {
    let mut h = Harness::new(ServerConfig::default());
    let conn = h.connect();
    let answer = h.ask(conn, "GET /admin HTTP/1.1\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"), "{answer}");
    assert!(
        answer.contains("Content-Type: text/plain; charset=utf-8\r\n"),
        "{answer}"
    );
    let answer = h.ask(conn, "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert!(
        answer.starts_with("HTTP/1.1 501 Not Implemented\r\n"),
        "{answer}"
    );
    assert!(answer.contains("\r\n\r\nunknown method"), "{answer}");
    let answer = h.ask(conn, "get / HTTP/1.1\r\n\r\n");
    assert!(
        answer.starts_with("HTTP/1.1 501 "),
        "methods are case-sensitive: {answer}"
    );
    assert!(h.closed.is_empty(), "none of these closes the connection");
}

#[test]
fn connection_close_and_http_1_0_close_after_the_answer() {
    let mut h = Harness::new(ServerConfig::default());
    let asked = h.connect();
    let answer = h.ask(asked, "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert!(answer.contains("\r\nConnection: close\r\n"), "{answer}");
    assert!(answer.ends_with("ok\n"));
    assert_eq!(h.closed, vec![asked]);

    let old = h.connect();
    let answer = h.ask(old, "GET / HTTP/1.0\r\n\r\nGET / HTTP/1.0\r\n\r\n");
    assert_eq!(
        answer.matches("HTTP/1.1 200 OK").count(),
        1,
        "nothing after the close"
    );
    assert_eq!(h.closed, vec![asked, old]);

    let kept = h.connect();
    h.ask(kept, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(h.closed, vec![asked, old]);
}

#[test]
fn the_status_page_says_what_this_is_how_busy_and_how_to_connect() {
    let mut h = Harness::new(ServerConfig::default());
    let (alice, bob, carol) = (h.connect(), h.connect(), h.connect());
    h.register(alice, "alice");
    h.register(bob, "bob");
    h.register(carol, "carol");
    h.ask(alice, "BRIDGE / HTTP/1.1\r\n\r\n");
    h.ask(bob, "BRIDGE / HTTP/1.1\r\n\r\n");
    h.ask(carol, "BRIDGE / HTTP/1.1\r\n\r\n");
    h.now += Duration::from_secs(3 * 60 + 5);
    let viewer = h.connect();
    let page = h.ask(
        viewer,
        "GET / HTTP/1.1\r\nHost: chat.example.org:7070\r\n\r\n",
    );
    let (head, body) = page.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())));
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        body.starts_with(&format!("bridgechat {version}: a rendezvous server")),
        "{body}"
    );
    for line in [
        "clients registered   3",
        "waiting for a peer   1",
        "chats introduced     1",
        "connections open     4",
        "uptime               3m 05s",
        "bridgechat client --name YOUR_NAME --server chat.example.org:7070",
    ] {
        assert!(body.contains(line), "no {line:?} in\n{body}");
    }
    // No Host header: the listening port, and a placeholder for an unspecified address.
    let page = h.ask(viewer, "GET / HTTP/1.1\r\n\r\n");
    assert!(page.contains("--server THIS_HOST:7070"), "{page}");
    assert!(!page.contains("alice"), "the page names nobody");
}

#[test]
fn every_metric_is_present_and_moves_when_its_event_happens() {
    let mut h = Harness::new(ServerConfig {
        max_per_ip: 100,
        ..ServerConfig::default()
    });
    let before = h.scrape();
    for name in [
        "bridgechat_connections_open",
        "bridgechat_connections_accepted",
        "bridgechat_connections_rejected",
        "bridgechat_connections_closed",
        "bridgechat_clients_registered",
        "bridgechat_clients_waiting",
        "bridgechat_registrations",
        "bridgechat_introductions",
        "bridgechat_request_duration_seconds",
        "bridgechat_uptime_seconds",
        "bridgechat_build",
    ] {
        assert!(
            before.0.families.contains_key(name),
            "no {name} in the first scrape"
        );
    }
    assert_eq!(
        before.value("bridgechat_connections_open", &[]),
        1.0,
        "the scraper itself"
    );
    assert_eq!(before.value("bridgechat_connections_accepted", &[]), 1.0);

    // Alice's REGISTER arrives in two pieces 250 ms apart: that is its latency.
    let alice = h.connect();
    let (first, rest) = REGISTER_ALICE.split_at(20);
    h.send(alice, first);
    h.now += Duration::from_millis(250);
    h.send(alice, rest);
    assert!(h.take(alice).starts_with("HTTP/1.1 200 OK"));
    h.ask(alice, "BRIDGE / HTTP/1.1\r\n\r\n");
    let bob = h.connect();
    h.register(bob, "bob");
    // A name already taken, an unknown method, a page that is not there.
    let mallory = h.connect();
    h.ask(mallory, &REGISTER_ALICE.replace("9001", "9002"));
    h.ask(mallory, "PATCH / HTTP/1.1\r\n\r\n");
    h.ask(mallory, "GET /secret HTTP/1.1\r\n\r\n");
    let waiting = h.scrape();
    assert!(
        waiting.0.families.contains_key("bridgechat_requests"),
        "requests appear once answered"
    );
    assert_eq!(
        waiting.value(
            "bridgechat_requests",
            &[("method", "GET"), ("status", "200")]
        ),
        1.0,
        "a scrape is counted once answered: the first one, not this one"
    );
    assert_eq!(waiting.value("bridgechat_clients_registered", &[]), 2.0);
    assert_eq!(waiting.value("bridgechat_clients_waiting", &[]), 1.0);
    assert_eq!(waiting.value("bridgechat_registrations", &[]), 2.0);
    assert_eq!(waiting.value("bridgechat_connections_open", &[]), 4.0);
    h.ask(bob, "BRIDGE / HTTP/1.1\r\n\r\n");
    h.server.handle_closed(h.now, mallory);
    h.drain();
    // A framing error closes with 400.
    let broken = h.connect();
    h.ask(broken, "REGISTER / HTTP/1.1\r\nContent-Length: x\r\n\r\n");
    h.now += Duration::from_secs(2);
    let after = h.scrape();

    let moved = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };
    assert_eq!(moved("bridgechat_introductions", &[]), 1.0);
    assert_eq!(after.value("bridgechat_clients_waiting", &[]), 0.0);
    assert_eq!(after.value("bridgechat_clients_registered", &[]), 2.0);
    assert_eq!(
        moved("bridgechat_connections_accepted", &[]),
        6.0,
        "4 clients, 2 scrapers"
    );
    assert_eq!(
        after.value("bridgechat_connections_open", &[]),
        3.0,
        "alice, bob, the scraper"
    );
    for (labels, count) in [
        ([("method", "REGISTER"), ("status", "200")], 2.0),
        ([("method", "REGISTER"), ("status", "409")], 1.0),
        ([("method", "BRIDGE"), ("status", "200")], 2.0),
        ([("method", "other"), ("status", "501")], 1.0),
        ([("method", "GET"), ("status", "404")], 1.0),
        ([("method", "GET"), ("status", "200")], 2.0),
    ] {
        assert_eq!(
            after.value("bridgechat_requests", &labels),
            count,
            "{labels:?}"
        );
    }
    for (reason, count) in [
        ("client_asked", 2.0),
        ("peer_closed", 1.0),
        ("rejected", 1.0),
    ] {
        assert_eq!(
            after.value("bridgechat_connections_closed", &[("reason", reason)]),
            count,
            "{reason}"
        );
    }
    assert_eq!(after.value("bridgechat_request_duration_seconds", &[]), 9.0);
    let latency = after.histogram_sum("bridgechat_request_duration_seconds");
    assert!((0.25..0.26).contains(&latency), "latency sum {latency}");
    assert_eq!(after.value("bridgechat_uptime_seconds", &[]), 2.25);
    assert_eq!(
        after.value(
            "bridgechat_connections_rejected",
            &[("reason", "max_per_ip")]
        ),
        0.0
    );
}

#[test]
fn refused_connections_are_counted_by_the_limit_they_hit() {
    let mut h = Harness::new(ServerConfig {
        max_connections: 3,
        max_per_ip: 1,
        ..ServerConfig::default()
    });
    let first = h.connect();
    // Same address as `first`: over max_per_ip.
    let peer = SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0A00_0001)), 6000);
    h.server.handle_accept(h.now, peer);
    h.drain();
    h.connect();
    h.connect(); // fills the last of the 3 slots
    let over = h.connect();
    assert!(h.take(over).starts_with("HTTP/1.1 503 "));
    h.server.handle_closed(h.now, first);
    h.drain();
    let scrape = h.scrape();
    assert_eq!(
        scrape.value(
            "bridgechat_connections_rejected",
            &[("reason", "max_per_ip")]
        ),
        1.0
    );
    assert_eq!(
        scrape.value(
            "bridgechat_connections_rejected",
            &[("reason", "max_connections")]
        ),
        1.0
    );
    assert_eq!(
        scrape.value("bridgechat_connections_closed", &[("reason", "overloaded")]),
        2.0
    );
}

#[test]
fn with_metrics_served_elsewhere_this_port_answers_404_and_pages_still_render() {
    let mut h = Harness::new(ServerConfig {
        serve_metrics: false,
        ..ServerConfig::default()
    });
    let conn = h.connect();
    assert!(h
        .ask(conn, "GET /metrics HTTP/1.1\r\n\r\n")
        .starts_with("HTTP/1.1 404 "));
    assert!(h
        .ask(conn, "GET /healthz HTTP/1.1\r\n\r\n")
        .starts_with("HTTP/1.1 200 "));
    assert!(h
        .ask(conn, "GET / HTTP/1.1\r\n\r\n")
        .starts_with("HTTP/1.1 200 "));
    h.register(conn, "alice");
    // The handle another thread serves from sees the same numbers.
    let pages = h.server.pages();
    let mut text = String::new();
    pages.render_metrics(h.now, &mut text);
    let parsed = openmetrics_parser::openmetrics::parse_openmetrics(&text).expect("valid");
    assert_eq!(
        Scrape(parsed).value("bridgechat_clients_registered", &[]),
        1.0
    );
}

#[test]
fn after_shutdown_new_connections_are_refused_so_health_checks_fail() {
    let mut h = Harness::new(ServerConfig::default());
    h.server.handle_input(h.now, ServerInput::Shutdown);
    h.drain();
    let conn = h.connect();
    assert!(h.take(conn).starts_with("HTTP/1.1 503 "));
}

#[test]
fn the_codec_decodes_get_and_head_as_pages_and_skips_their_body() {
    use bridgechat_core::operator::{Page, PageRequest};
    use bridgechat_core::{Decoder, Request};
    let mut decoder = Decoder::default();
    let wire = b"GET /metrics HTTP/1.1\r\nHost: [::1]:7070\r\nContent-Length: 3\r\n\r\nabc\
                 HEAD / HTTP/1.0\r\n\r\nQUIT / HTTP/1.1\r\n\r\n";
    let mut input = &wire[..];
    let mut decoded = Vec::new();
    while let Some(request) = decoder.decode_request(&mut input).unwrap() {
        decoded.push(request);
    }
    assert_eq!(
        decoded,
        vec![
            Request::Page(PageRequest {
                page: Page::Metrics,
                head_only: false,
                close: false,
                host: Some("[::1]".into()),
            }),
            Request::Page(PageRequest {
                page: Page::Status,
                head_only: true,
                close: true,
                host: None,
            }),
            Request::Quit,
        ]
    );
}
