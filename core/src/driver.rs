//! The one routine every event loop uses to drain an [`Endpoint`] and feed back
//! what became of its outputs.
//!
//! A transport implements [`Transport`]: it carries out each [`Output`] (bind,
//! connect, send, close, abort, show, exit) and queues what came of it as an
//! [`Outcome`]. [`drive`] does the rest, in one fixed order:
//!
//! 1. Drain `poll_output` until it returns `None`, handing every output to the
//!    transport in the order the endpoint queued it.
//! 2. If the endpoint asked to exit, drop the queued outcomes and stop: the
//!    loop is ending.
//! 3. Otherwise feed back the oldest queued outcome (`handle_listening`,
//!    `handle_connect_failed`, ...), then start again at 1, until no outcome
//!    is left.
//!
//! So the endpoint never sees an input while it is still handing out outputs,
//! and the outputs caused by one outcome are carried out before the next
//! outcome is fed back. A transport may also queue outcomes it notices outside
//! a drain (a connect that completed, a write that failed) and then call
//! [`drive`]: they are fed back the same way.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use crate::{ConnId, Endpoint, ExitError, Output};

/// What became of an output; fed back to the endpoint by [`drive`].
#[derive(Debug)]
pub enum Outcome {
    /// `Output::Listen` bound a listener at this address (the port actually bound).
    Listening(SocketAddr),
    /// `Output::Listen` for this address failed, with the OS error.
    ListenFailed(SocketAddr, io::Error),
    /// `Output::Connect` established the connection, bound locally at this address.
    Connected(ConnId, SocketAddr),
    /// `Output::Connect` could not establish the connection.
    ConnectFailed(ConnId, io::Error),
    /// A connection the endpoint knows ended: the peer closed it, it broke, or a
    /// write failed.
    Closed(ConnId),
    /// A connection the endpoint knows was dropped because its peer left more
    /// than the transport's limit of output unread.
    NotReading(ConnId),
}

/// Outcomes waiting to be fed back, oldest first. A transport owns one.
///
/// Once the endpoint has asked to exit, nothing more is fed back: what is
/// queued is dropped and later pushes are ignored.
#[derive(Debug, Default)]
pub struct Outcomes {
    queue: VecDeque<Outcome>,
    exited: bool,
}

impl Outcomes {
    pub fn push(&mut self, outcome: Outcome) {
        if !self.exited {
            self.queue.push_back(outcome);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether the endpoint has asked to exit.
    pub fn exited(&self) -> bool {
        self.exited
    }

    fn pop(&mut self) -> Option<Outcome> {
        self.queue.pop_front()
    }

    fn exit(&mut self) {
        self.exited = true;
        self.queue.clear();
    }
}

/// What a transport does for an endpoint whose events are `Event`.
///
/// Each method carries out one output at once or starts it; none calls back
/// into the endpoint. Results go into [`Transport::outcomes`].
pub trait Transport<Event> {
    /// The time outcomes are fed back at.
    fn now(&mut self) -> Instant;
    /// Bind a listener (see `Output::Listen` for `shared`); queue `Listening` or `ListenFailed`.
    fn listen(&mut self, addr: SocketAddr, shared: bool);
    /// Start connecting, from local port `from` when given (see `Output::Connect`);
    /// queue `Connected` or `ConnectFailed`, now or later.
    fn connect(&mut self, conn: ConnId, addr: SocketAddr, from: Option<u16>);
    /// Send `bytes` on `conn` after what is queued there. Unknown `conn`s are
    /// ignored; if the connection breaks, queue `Closed`.
    fn transmit(&mut self, conn: ConnId, bytes: &[u8]);
    /// Send what is queued on `conn`, then close it. The endpoint has already forgotten it.
    fn close(&mut self, conn: ConnId);
    /// Close `conn` now with a reset (`SO_LINGER` 0), dropping what is queued, so its
    /// descriptor is free at once. The endpoint has already forgotten it.
    fn abort(&mut self, conn: ConnId);
    /// Show or log an event.
    fn show(&mut self, event: Event);
    /// Stop: flush what is queued, close everything, and end the loop with `result`.
    /// Called once, for the first `Output::Exit`; outputs after it are still carried out.
    fn exit(&mut self, result: Result<(), ExitError>);
    /// The transport's queue of outcomes not yet fed back.
    fn outcomes(&mut self) -> &mut Outcomes;
}

/// Drains `endpoint` into `transport` and feeds back the outcomes, one at a
/// time, until neither has anything left (see the module docs for the order).
/// Returns true once the endpoint has asked to exit.
pub fn drive<E, T>(endpoint: &mut E, transport: &mut T) -> bool
where
    E: Endpoint,
    T: Transport<E::Event>,
{
    loop {
        while let Some(output) = endpoint.poll_output() {
            match output {
                Output::Listen { addr, shared } => transport.listen(addr, shared),
                Output::Connect { conn, addr, from } => transport.connect(conn, addr, from),
                Output::Transmit { conn, bytes } => transport.transmit(conn, bytes),
                Output::Close { conn } => transport.close(conn),
                Output::Abort { conn } => transport.abort(conn),
                Output::Event(event) => transport.show(event),
                Output::Exit(result) => {
                    if !transport.outcomes().exited() {
                        transport.outcomes().exit();
                        transport.exit(result);
                    }
                }
            }
        }
        if transport.outcomes().exited() {
            return true;
        }
        let Some(outcome) = transport.outcomes().pop() else {
            return false;
        };
        let now = transport.now();
        match outcome {
            Outcome::Listening(addr) => endpoint.handle_listening(now, addr),
            Outcome::ListenFailed(addr, error) => endpoint.handle_listen_failed(now, addr, &error),
            Outcome::Connected(conn, local) => endpoint.handle_connected(now, conn, local),
            Outcome::ConnectFailed(conn, error) => {
                endpoint.handle_connect_failed(now, conn, &error)
            }
            Outcome::Closed(conn) => endpoint.handle_closed(now, conn),
            Outcome::NotReading(conn) => endpoint.handle_not_reading(now, conn),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::rc::Rc;

    type Log = Rc<RefCell<Vec<String>>>;

    /// An output the scripted endpoint queues, with its bytes owned.
    #[derive(Clone)]
    enum Step {
        Listen(SocketAddr),
        Connect(u64),
        Transmit(u64, &'static str),
        Event(&'static str),
        Exit,
    }

    /// An endpoint that logs every input and answers each with the outputs scripted for it.
    struct Scripted {
        log: Log,
        queue: VecDeque<Step>,
        replies: HashMap<&'static str, Vec<Step>>,
        bytes: Vec<u8>,
    }

    impl Scripted {
        fn input(&mut self, what: &'static str) {
            self.log.borrow_mut().push(format!("in {what}"));
            let replies = self.replies.get(what).cloned().unwrap_or_default();
            self.queue.extend(replies);
        }
    }

    impl Endpoint for Scripted {
        type Input = ();
        type Event = &'static str;
        fn handle_listening(&mut self, _now: Instant, _addr: SocketAddr) {
            self.input("listening");
        }
        fn handle_listen_failed(&mut self, _now: Instant, _addr: SocketAddr, _error: &io::Error) {
            self.input("listen failed");
        }
        fn handle_accept(&mut self, _now: Instant, _peer: SocketAddr) -> ConnId {
            self.input("accept");
            ConnId(0)
        }
        fn handle_connected(&mut self, _now: Instant, _conn: ConnId, _local: SocketAddr) {
            self.input("connected");
        }
        fn handle_connect_failed(&mut self, _now: Instant, _conn: ConnId, _error: &io::Error) {
            self.input("connect failed");
        }
        fn handle_data(&mut self, _now: Instant, _conn: ConnId, _bytes: &[u8]) {
            self.input("data");
        }
        fn handle_closed(&mut self, _now: Instant, _conn: ConnId) {
            self.input("closed");
        }
        fn handle_input(&mut self, _now: Instant, _input: ()) {
            self.input("input");
        }
        fn handle_timeout(&mut self, _now: Instant) {
            self.input("timeout");
        }
        fn poll_output(&mut self) -> Option<Output<'_, &'static str>> {
            Some(match self.queue.pop_front()? {
                Step::Listen(addr) => Output::Listen {
                    addr,
                    shared: false,
                },
                Step::Connect(id) => Output::Connect {
                    conn: ConnId(id),
                    addr: addr(),
                    from: None,
                },
                Step::Transmit(id, text) => {
                    self.bytes = text.as_bytes().to_vec();
                    Output::Transmit {
                        conn: ConnId(id),
                        bytes: &self.bytes,
                    }
                }
                Step::Event(e) => Output::Event(e),
                Step::Exit => Output::Exit(Ok(())),
            })
        }
        fn poll_timeout(&self) -> Option<Instant> {
            None
        }
    }

    /// A transport that logs every output; listens succeed and connects fail at once.
    struct Logging {
        log: Log,
        outcomes: Outcomes,
        exits: usize,
    }

    impl Transport<&'static str> for Logging {
        fn now(&mut self) -> Instant {
            Instant::now()
        }
        fn listen(&mut self, addr: SocketAddr, _shared: bool) {
            self.log.borrow_mut().push("out listen".into());
            self.outcomes.push(Outcome::Listening(addr));
        }
        fn connect(&mut self, conn: ConnId, _addr: SocketAddr, _from: Option<u16>) {
            self.log.borrow_mut().push(format!("out connect {conn}"));
            self.outcomes.push(Outcome::ConnectFailed(
                conn,
                io::Error::new(io::ErrorKind::ConnectionRefused, "refused"),
            ));
        }
        fn transmit(&mut self, conn: ConnId, bytes: &[u8]) {
            let text = String::from_utf8_lossy(bytes);
            self.log
                .borrow_mut()
                .push(format!("out transmit {conn} {text}"));
        }
        fn close(&mut self, conn: ConnId) {
            self.log.borrow_mut().push(format!("out close {conn}"));
        }
        fn abort(&mut self, conn: ConnId) {
            self.log.borrow_mut().push(format!("out abort {conn}"));
        }
        fn show(&mut self, event: &'static str) {
            self.log.borrow_mut().push(format!("out show {event}"));
        }
        fn exit(&mut self, _result: Result<(), ExitError>) {
            self.exits += 1;
            self.log.borrow_mut().push("out exit".into());
        }
        fn outcomes(&mut self) -> &mut Outcomes {
            &mut self.outcomes
        }
    }

    fn addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 7070))
    }

    fn setup(first: Vec<Step>, replies: Vec<(&'static str, Vec<Step>)>) -> (Scripted, Logging) {
        let log = Log::default();
        let endpoint = Scripted {
            log: Rc::clone(&log),
            queue: first.into(),
            replies: replies.into_iter().collect(),
            bytes: Vec::new(),
        };
        let transport = Logging {
            log,
            outcomes: Outcomes::default(),
            exits: 0,
        };
        (endpoint, transport)
    }

    #[test]
    fn outcomes_are_fed_back_one_at_a_time_after_the_outputs_before_them() {
        let (mut endpoint, mut transport) = setup(
            vec![
                Step::Listen(addr()),
                Step::Connect(1),
                Step::Event("queued"),
            ],
            vec![
                ("listening", vec![Step::Event("bound"), Step::Connect(2)]),
                ("connect failed", vec![Step::Transmit(3, "hi")]),
            ],
        );
        assert!(!drive(&mut endpoint, &mut transport));
        assert_eq!(
            *transport.log.borrow(),
            [
                "out listen",
                "out connect #1",
                "out show queued",
                "in listening",
                "out show bound",
                "out connect #2",
                "in connect failed",
                "out transmit #3 hi",
                "in connect failed",
                "out transmit #3 hi",
            ]
        );
        assert!(transport.outcomes.is_empty());
    }

    #[test]
    fn after_exit_outputs_are_still_carried_out_but_nothing_is_fed_back() {
        let (mut endpoint, mut transport) = setup(
            vec![
                Step::Listen(addr()),
                Step::Exit,
                Step::Transmit(1, "last words"),
                Step::Exit,
            ],
            vec![("listening", vec![Step::Event("bound")])],
        );
        assert!(drive(&mut endpoint, &mut transport));
        transport.outcomes.push(Outcome::Closed(ConnId(1)));
        assert!(drive(&mut endpoint, &mut transport));
        assert_eq!(
            *transport.log.borrow(),
            ["out listen", "out exit", "out transmit #1 last words"]
        );
        assert_eq!(transport.exits, 1, "exit is carried out once");
    }

    #[test]
    fn an_outcome_queued_between_drives_is_fed_back_by_the_next() {
        let (mut endpoint, mut transport) =
            setup(vec![], vec![("closed", vec![Step::Event("gone")])]);
        assert!(!drive(&mut endpoint, &mut transport));
        transport.outcomes.push(Outcome::Closed(ConnId(4)));
        assert!(!drive(&mut endpoint, &mut transport));
        assert_eq!(*transport.log.borrow(), ["in closed", "out show gone"]);
    }
}
