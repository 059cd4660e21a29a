//! What the person running a server sees: a status page, a health check and
//! Prometheus metrics, answered to `GET` and `HEAD` on the protocol's own port.
//!
//! The numbers are the server's state, so they live here in the core: they
//! move with the events the [`Server`](crate::server::Server) emits
//! ([`ServerMetrics`] watches its output queue) and with every request it
//! answers, using the `now` it is given. Each metric is a shared atomic, so a
//! [`Pages`] handle can render the same numbers on another thread (a private
//! metrics address) while the server's hot path takes no lock: a counted
//! REGISTER costs a hash lookup and two atomic adds, and allocates nothing.
//!
//! Adding a metric is one line in the [`metrics!`] list below, plus the line
//! that moves it.

use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::encoding::{text, EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use rustc_hash::FxHashMap;

use crate::codec::{Method, Request, Status};
use crate::outputs::Observe;
use crate::server::{CloseReason, Rejection, ServerEvent};

mod request;
pub use request::{Page, PageRequest};

/// The server's version, shown on the status page and in `bridgechat_build_info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Upper bounds of the latency histogram, in microseconds (then `+Inf`).
const LATENCY_BUCKETS_MICROS: [u64; 10] = [
    500, 1_000, 5_000, 10_000, 50_000, 100_000, 500_000, 1_000_000, 5_000_000, 10_000_000,
];

/// A `reason` label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// The labels of `bridgechat_requests_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: &'static str,
    pub status: u16,
}

/// Declares [`Metrics`]: one line per metric, `name: Type [= constructor], "help";`
/// (no final period: the exposition adds one).
/// Exported names get the `bridgechat_` prefix (and `_total` for counters).
macro_rules! metrics {
    (@make $kind:ty) => { <$kind>::default() };
    (@make $kind:ty, $make:expr) => { $make };
    ($($name:ident: $kind:ty $(= $make:expr)?, $help:literal;)*) => {
        /// Every metric the server exports.
        #[derive(Debug, Clone)]
        pub struct Metrics {
            $(#[doc = $help] pub $name: $kind,)*
        }

        impl Metrics {
            fn register(registry: &mut Registry) -> Metrics {
                let metrics = Metrics { $($name: metrics!(@make $kind $(, $make)?),)* };
                $(registry.register(stringify!($name), $help, metrics.$name.clone());)*
                metrics
            }
        }
    };
}

metrics! {
    connections_open: Gauge, "Connections being served now";
    connections_accepted: Counter, "Connections accepted, including those refused at once";
    connections_rejected: Family<ReasonLabel, Counter>, "Connections refused at once with 503, by the limit reached";
    connections_closed: Family<ReasonLabel, Counter>, "Connections closed, by reason";
    clients_registered: Gauge, "Clients registered now";
    clients_waiting: Gauge, "Clients waiting for a peer now";
    registrations: Counter, "Successful REGISTER requests";
    introductions: Counter, "Chats introduced: BRIDGE answered with a waiting client's contact";
    fallthroughs: Counter, "Introductions that fell through before the chat started";
    chats_started: Counter, "Chats a version 2 waiter reported started (STARTED)";
    relays_active: Gauge, "Relays holding a slot now: waiting for their second peer or spliced";
    relays: Counter, "Relays spliced: both peers came with one ticket";
    relayed_bytes: Counter, "Bytes passed through relays, both ways";
    requests: Family<RequestLabels, Counter>, "Requests answered, by method and status";
    request_duration_seconds: LatencyHistogram, "Time from a request's first byte to its answer, as the server's event loop saw it";
    uptime_seconds: Gauge<f64, AtomicU64>, "Seconds since the server started listening";
}

/// A histogram of durations with fixed buckets, moved by relaxed atomic adds:
/// no lock, so a scrape on another thread never holds up the event loop, and an
/// observation costs a few compares and three adds. prometheus-client renders it.
#[derive(Debug, Clone, Default)]
pub struct LatencyHistogram {
    inner: Arc<LatencyCounts>,
}

#[derive(Debug, Default)]
struct LatencyCounts {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS_MICROS.len() + 1],
    sum_micros: AtomicU64,
}

impl LatencyHistogram {
    pub fn observe(&self, duration: Duration) {
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BUCKETS_MICROS
            .iter()
            .position(|&bound| micros <= bound)
            .unwrap_or(LATENCY_BUCKETS_MICROS.len());
        self.inner.buckets[bucket].fetch_add(1, Relaxed);
        self.inner.sum_micros.fetch_add(micros, Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.inner.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        let bounds = LATENCY_BUCKETS_MICROS
            .iter()
            .map(|&micros| micros as f64 / 1e6)
            .chain([f64::INFINITY]);
        // The count is the buckets' total, so `+Inf` and `_count` always agree.
        let mut count = 0;
        let buckets: Vec<(f64, u64)> = bounds
            .zip(&self.inner.buckets)
            .map(|(bound, n)| {
                count += n.load(Relaxed);
                (bound, count)
            })
            .collect();
        let sum = self.inner.sum_micros.load(Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// The shared half: the registry and the numbers the pages show.
#[derive(Debug)]
struct Shared {
    registry: Registry,
    metrics: Metrics,
    /// When the listener was bound, for the uptime.
    started: OnceLock<Instant>,
    /// The address clients connect to.
    listening: OnceLock<SocketAddr>,
}

/// Renders the operator pages from the server's numbers; cheap to clone and
/// usable from any thread.
#[derive(Debug, Clone)]
pub struct Pages {
    shared: Arc<Shared>,
}

impl Pages {
    fn new() -> Pages {
        let mut registry = Registry::with_prefix("bridgechat");
        let metrics = Metrics::register(&mut registry);
        // Every reason shows from the start, at 0, so a rate or an alert has a series to read.
        for reason in ["max_connections", "max_per_ip"] {
            drop(
                metrics
                    .connections_rejected
                    .get_or_create(&ReasonLabel { reason }),
            );
        }
        for reason in CLOSE_REASONS {
            drop(
                metrics
                    .connections_closed
                    .get_or_create(&ReasonLabel { reason }),
            );
        }
        registry.register(
            "build",
            "The server's version",
            Info::new([("version", VERSION)]),
        );
        Pages {
            shared: Arc::new(Shared {
                registry,
                metrics,
                started: OnceLock::new(),
                listening: OnceLock::new(),
            }),
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Appends the whole answer to `request` to `out`; returns its status.
    /// `serve_metrics` false answers `/metrics` with 404 (metrics served elsewhere).
    pub fn answer(
        &self,
        now: Instant,
        request: &PageRequest,
        serve_metrics: bool,
        out: &mut Vec<u8>,
    ) -> Status {
        const TEXT: &str = "text/plain; charset=utf-8";
        let mut body = String::new();
        let (status, content_type) = match request.page {
            Page::Health => {
                body.push_str("ok\n");
                (Status::OK, TEXT)
            }
            Page::Status => {
                self.render_status(now, request.host.as_deref(), &mut body);
                (Status::OK, TEXT)
            }
            Page::Metrics if serve_metrics => {
                self.render_metrics(now, &mut body);
                (
                    Status::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
            }
            Page::Metrics | Page::NotFound => {
                body.push_str("no such page: try /, /healthz or /metrics\n");
                (Status::NOT_FOUND, TEXT)
            }
        };
        write_page(out, status, content_type, &body, request);
        status
    }

    /// The Prometheus text exposition (OpenMetrics 1.0), ending in `# EOF`.
    pub fn render_metrics(&self, now: Instant, out: &mut String) {
        self.shared
            .metrics
            .uptime_seconds
            .set(self.uptime(now).as_secs_f64());
        text::encode(out, &self.shared.registry).expect("writing to a String cannot fail");
    }

    /// The status page: what this is, how busy it is, how to connect.
    pub fn render_status(&self, now: Instant, host: Option<&str>, out: &mut String) {
        let m = &self.shared.metrics;
        let listening = self.shared.listening.get();
        let server = match (host, listening) {
            (Some(host), Some(addr)) => format!("{host}:{}", addr.port()),
            (None, Some(addr)) if !addr.ip().is_unspecified() => addr.to_string(),
            (_, Some(addr)) => format!("THIS_HOST:{}", addr.port()),
            (_, None) => "THIS_HOST:PORT".to_owned(),
        };
        let _ = write!(
            out,
            "bridgechat {VERSION}: a rendezvous server for peer-to-peer chat\n\
             \n\
             clients registered   {}\n\
             waiting for a peer   {}\n\
             chats introduced     {}\n\
             relays open          {}\n\
             connections open     {}\n\
             uptime               {}\n\
             \n\
             Connect a client:\n  bridgechat client --name YOUR_NAME --server {server}\n\
             then type /register and /bridge; once paired, /chat.\n\
             \n\
             Health check: /healthz    Prometheus metrics: /metrics\n",
            m.clients_registered.get(),
            m.clients_waiting.get(),
            m.introductions.get(),
            m.relays_active.get(),
            m.connections_open.get(),
            Uptime(self.uptime(now)),
        );
    }

    fn uptime(&self, now: Instant) -> Duration {
        self.shared
            .started
            .get()
            .map_or(Duration::ZERO, |&started| {
                now.saturating_duration_since(started)
            })
    }
}

/// `1d 02h 03m 04s`, leading zero units left out.
struct Uptime(Duration);

impl fmt::Display for Uptime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
        match (d, h, m) {
            (0, 0, 0) => write!(f, "{s}s"),
            (0, 0, _) => write!(f, "{m}m {s:02}s"),
            (0, _, _) => write!(f, "{h}h {m:02}m {s:02}s"),
            _ => write!(f, "{d}d {h:02}h {m:02}m {s:02}s"),
        }
    }
}

fn write_page(
    out: &mut Vec<u8>,
    status: Status,
    content_type: &str,
    body: &str,
    request: &PageRequest,
) {
    use std::io::Write as _;
    let connection = if request.close {
        "Connection: close\r\n"
    } else {
        ""
    };
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\n{connection}\r\n",
        status.code(),
        status.reason(),
        body.len(),
    );
    if !request.head_only {
        out.extend_from_slice(body.as_bytes());
    }
}

/// `now - started`; a request that arrived in one read skips the arithmetic.
pub(crate) fn elapsed(started: Instant, now: Instant) -> Duration {
    if started == now {
        Duration::ZERO
    } else {
        now.saturating_duration_since(started)
    }
}

/// The `method` label a request is counted under.
/// Compared and hashed by address, which is cheaper than the text on the hot path:
/// the labels are a few constants. A copy of one at another address would only get
/// a second cache entry, resolving to the same series.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MethodLabel(&'static str);

impl PartialEq for MethodLabel {
    fn eq(&self, other: &MethodLabel) -> bool {
        std::ptr::eq(self.0, other.0)
    }
}

impl Eq for MethodLabel {}

impl std::hash::Hash for MethodLabel {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::ptr::hash(self.0, state);
    }
}

/// The label a request is counted under.
pub(crate) fn method_label(request: &Request) -> MethodLabel {
    MethodLabel(match request {
        Request::Register(..) => Method::Register.as_str(),
        Request::Bridge { .. } => Method::Bridge.as_str(),
        Request::Unregister => Method::Unregister.as_str(),
        Request::Chat(..) => Method::Chat.as_str(),
        Request::Message(_) => Method::Message.as_str(),
        Request::Quit | Request::QuitWith { .. } => Method::Quit.as_str(),
        Request::Matched(_) => Method::Matched.as_str(),
        Request::Unmatched(_) => Method::Unmatched.as_str(),
        Request::Started(_) => Method::Started.as_str(),
        Request::Relay(_) => Method::Relay.as_str(),
        Request::Invalid { method, .. } => method.as_str(),
        Request::Page(page) if page.head_only => "HEAD",
        Request::Page(_) => "GET",
        Request::Unknown => "other",
    })
}

const CLOSE_REASONS: [&str; 9] = [
    "peer_closed",
    "not_reading",
    "rejected",
    "register_timeout",
    "idle_timeout",
    "overloaded",
    "client_asked",
    "shutdown",
    "relay_ended",
];

fn close_label(reason: &CloseReason) -> &'static str {
    match reason {
        CloseReason::PeerClosed => "peer_closed",
        CloseReason::NotReading => "not_reading",
        CloseReason::Rejected(_) => "rejected",
        CloseReason::RegisterTimeout => "register_timeout",
        CloseReason::IdleTimeout => "idle_timeout",
        CloseReason::Overloaded => "overloaded",
        CloseReason::ClientAsked => "client_asked",
        CloseReason::Shutdown => "shutdown",
        CloseReason::CourseRefused => "course_refused",
        CloseReason::RelayEnded => "relay_ended",
    }
}

/// The server's side: moves the numbers. Owned by the server's output queue,
/// which shows it every event as it is queued.
#[derive(Debug)]
pub struct ServerMetrics {
    pages: Pages,
    /// Each (method, status) counter looked up once, so counting a request
    /// later takes no lock and allocates nothing.
    requests: FxHashMap<(MethodLabel, u16), Counter>,
}

impl Default for ServerMetrics {
    fn default() -> ServerMetrics {
        ServerMetrics {
            pages: Pages::new(),
            requests: FxHashMap::default(),
        }
    }
}

impl ServerMetrics {
    pub fn pages(&self) -> &Pages {
        &self.pages
    }

    /// The server started serving at `now`.
    pub(crate) fn started(&self, now: Instant) {
        let _ = self.pages.shared.started.set(now);
    }

    /// Brings the gauges that mirror server state up to date.
    pub(crate) fn sync(&self, registered: usize, waiting: bool, relays: usize) {
        let m = &self.pages.shared.metrics;
        m.relays_active
            .set(i64::try_from(relays).unwrap_or(i64::MAX));
        m.clients_registered
            .set(i64::try_from(registered).unwrap_or(i64::MAX));
        m.clients_waiting.set(i64::from(waiting));
    }

    /// A relay passed on `bytes`.
    pub(crate) fn relayed(&self, bytes: u64) {
        self.pages.shared.metrics.relayed_bytes.inc_by(bytes);
    }

    /// A request was answered with `status`, `latency` after its first byte arrived.
    pub(crate) fn request(&mut self, method: MethodLabel, status: Status, latency: Duration) {
        let family = &self.pages.shared.metrics.requests;
        self.requests
            .entry((method, status.code()))
            .or_insert_with(|| {
                family
                    .get_or_create(&RequestLabels {
                        method: method.0,
                        status: status.code(),
                    })
                    .clone()
            })
            .inc();
        self.pages
            .shared
            .metrics
            .request_duration_seconds
            .observe(latency);
    }
}

impl Observe<ServerEvent> for ServerMetrics {
    fn observe(&mut self, event: &ServerEvent) {
        let m = &self.pages.shared.metrics;
        match event {
            ServerEvent::Listening(addr) => {
                let _ = self.pages.shared.listening.set(*addr);
            }
            ServerEvent::Accepted { .. } => {
                m.connections_accepted.inc();
                m.connections_open.inc();
            }
            ServerEvent::Registered { .. } => {
                m.registrations.inc();
            }
            ServerEvent::Paired { .. } => {
                m.introductions.inc();
            }
            ServerEvent::FellThrough { .. } => {
                m.fallthroughs.inc();
            }
            ServerEvent::Started { .. } => {
                m.chats_started.inc();
            }
            ServerEvent::RelayStarted { .. } => {
                m.relays.inc();
            }
            ServerEvent::Rejected { rejection, .. } => {
                let reason = match rejection {
                    Rejection::TooManyConnections => "max_connections",
                    Rejection::TooManyFromAddress => "max_per_ip",
                    _ => return,
                };
                m.connections_rejected
                    .get_or_create(&ReasonLabel { reason })
                    .inc();
            }
            ServerEvent::Closed { reason, .. } => {
                m.connections_open.dec();
                m.connections_closed
                    .get_or_create(&ReasonLabel {
                        reason: close_label(reason),
                    })
                    .inc();
            }
            ServerEvent::Unregistered { .. }
            | ServerEvent::Waiting { .. }
            | ServerEvent::RelayJoined { .. }
            | ServerEvent::RelayEnded { .. }
            | ServerEvent::Trace { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests;
