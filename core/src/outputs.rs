//! The queue behind `poll_output`, shared by the server and the client.
//!
//! Bytes to send are appended to one buffer and handed out as slices, so
//! answering a request allocates nothing once the buffer has grown; back-to-back
//! transmits on one connection are merged so a pipelined burst is one write.

use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::{ConnId, ExitError, Output};

#[derive(Debug)]
enum Item<E> {
    Listen(SocketAddr, bool),
    Connect(ConnId, SocketAddr, Option<u16>),
    Transmit {
        conn: ConnId,
        start: usize,
        end: usize,
    },
    Close(ConnId),
    Abort(ConnId),
    Event(E),
    Exit(Result<(), ExitError>),
}

/// Sees every event as it is queued (the server's metrics count them).
pub(crate) trait Observe<E> {
    fn observe(&mut self, event: &E);
}

impl<E> Observe<E> for () {
    fn observe(&mut self, _event: &E) {}
}

#[derive(Debug)]
pub(crate) struct OutputQueue<E, O = ()> {
    items: VecDeque<Item<E>>,
    tx: Vec<u8>,
    observer: O,
}

impl<E, O: Default> Default for OutputQueue<E, O> {
    fn default() -> Self {
        OutputQueue {
            items: VecDeque::new(),
            tx: Vec::new(),
            observer: O::default(),
        }
    }
}

impl<E, O: Observe<E>> OutputQueue<E, O> {
    pub(crate) fn observer(&self) -> &O {
        &self.observer
    }

    pub(crate) fn observer_mut(&mut self) -> &mut O {
        &mut self.observer
    }

    /// Appends bytes for `conn` written by `write`; returns the range written.
    pub(crate) fn transmit(&mut self, conn: ConnId, write: impl FnOnce(&mut Vec<u8>)) -> &[u8] {
        let start = self.tx.len();
        write(&mut self.tx);
        let end = self.tx.len();
        match self.items.back_mut() {
            Some(Item::Transmit {
                conn: last,
                end: last_end,
                ..
            }) if *last == conn && *last_end == start => *last_end = end,
            _ => self.items.push_back(Item::Transmit { conn, start, end }),
        }
        &self.tx[start..end]
    }

    pub(crate) fn listen(&mut self, addr: SocketAddr, shared: bool) {
        self.items.push_back(Item::Listen(addr, shared));
    }

    pub(crate) fn connect(&mut self, conn: ConnId, addr: SocketAddr, from: Option<u16>) {
        self.items.push_back(Item::Connect(conn, addr, from));
    }

    pub(crate) fn close(&mut self, conn: ConnId) {
        self.items.push_back(Item::Close(conn));
    }

    pub(crate) fn abort(&mut self, conn: ConnId) {
        self.items.push_back(Item::Abort(conn));
    }

    pub(crate) fn event(&mut self, event: E) {
        self.observer.observe(&event);
        self.items.push_back(Item::Event(event));
    }

    pub(crate) fn exit(&mut self, result: Result<(), ExitError>) {
        self.items.push_back(Item::Exit(result));
    }

    pub(crate) fn pop(&mut self) -> Option<Output<'_, E>> {
        let Some(item) = self.items.pop_front() else {
            // Everything handed out has been consumed: reuse the buffer from the start.
            self.tx.clear();
            return None;
        };
        Some(match item {
            Item::Listen(addr, shared) => Output::Listen { addr, shared },
            Item::Connect(conn, addr, from) => Output::Connect { conn, addr, from },
            Item::Transmit { conn, start, end } => Output::Transmit {
                conn,
                bytes: &self.tx[start..end],
            },
            Item::Close(conn) => Output::Close { conn },
            Item::Abort(conn) => Output::Abort { conn },
            Item::Event(e) => Output::Event(e),
            Item::Exit(result) => Output::Exit(result),
        })
    }
}
