//! What the rest of the client does when reaching moves: starting it at the
//! introduction, `/chat` on the path, routing connections and timers to it,
//! and the news it reports.

use super::*;
use crate::client::chat::ChatNews;
use crate::client::{Client, Mode};

impl Client {
    /// `/chat` with a ticketed peer: CHAT on the path, or as soon as it is up.
    /// False when the peer is not reached this way (version 1: connect at `/chat`).
    pub(in crate::client) fn chat_on_path(&mut self) -> bool {
        if !self.reach.is_asker() {
            return false;
        }
        match self.reach.take_path() {
            Some(Ok((conn, path))) => self.ask_on_path(conn, path),
            Some(Err(why)) => self.unreached(why),
            None => {
                if let Some(r) = self.reach.reaching.as_mut() {
                    r.chat_wanted = true;
                    if matches!(r.stage, Stage::Lost | Stage::Handed) {
                        r.try_direct(&mut self.ctx);
                    }
                }
            }
        }
        true
    }

    fn ask_on_path(&mut self, conn: ConnId, path: Path) {
        let me = self.server.me(&self.ctx, self.listening);
        let news = self.chat.ask_on(&mut self.ctx, conn, path, me);
        self.on_chat_news(news);
    }

    /// Reaching failed entirely: the `/chat` fails, as one that cannot connect does.
    fn unreached(&mut self, why: RelayFailure) {
        let peer = self.chat.ready_peer().unwrap_or(self.server.name());
        self.reach.stop(&mut self.ctx);
        self.ctx.error(ClientError::Unreached { peer, why });
        self.on_chat_news(ChatNews::Failed);
    }

    /// The asker got a pairing with a ticket and the waiter's observed address.
    pub(in crate::client) fn reach_asker(
        &mut self,
        ticket: Ticket,
        declared: SocketAddr,
        observed: SocketAddr,
    ) {
        let (Some(peer), Some(listening)) = (self.chat.ready_peer(), self.listening) else {
            return;
        };
        self.reach.start_asker(
            &mut self.ctx,
            peer,
            ticket,
            declared,
            observed,
            listening.port(),
        );
        // The waiter's punch may have reached our chat port before the pairing did.
        if let Some(conn) = self.incoming.take_silent_from(observed) {
            if let Some(news) = self.reach.accepted(&mut self.ctx, conn, observed) {
                self.on_reach_news(news);
            }
        }
    }

    /// The waiter was matched with a ticket: punch towards the asker.
    pub(in crate::client) fn reach_waiter(
        &mut self,
        peer: Name,
        ticket: Ticket,
        observed: SocketAddr,
    ) {
        if let Some(listening) = self.listening {
            self.reach
                .start_waiter(&mut self.ctx, peer, ticket, observed, listening.port());
        }
    }

    /// The mode changed: reaching is over once the asker leaves READY MODE or
    /// the waiter leaves WAIT MODE (the chat opened, or it is over).
    pub(in crate::client) fn reach_mode(&mut self, mode: Mode) {
        let keep = match self.reach.reaching.as_ref().map(|r| r.role) {
            Some(Role::Asker) => mode == Mode::Ready,
            Some(Role::Waiter) => mode == Mode::Wait,
            None => true,
        };
        if !keep {
            self.reach.stop(&mut self.ctx);
        }
    }

    /// The RELAY notification on the server connection.
    pub(in crate::client) fn relay_notified(&mut self, ticket: Ticket) {
        if !self.reach.relay_notified(&mut self.ctx, ticket) {
            self.ctx
                .info("the server offered its relay for a match that is over; ignored".to_owned());
        }
    }

    /// A connection accepted on the chat port.
    pub(in crate::client) fn accept_conn(&mut self, conn: ConnId, remote: SocketAddr) {
        match self.reach.accepted(&mut self.ctx, conn, remote) {
            Some(news) => self.on_reach_news(news),
            None => self
                .incoming
                .accept(&mut self.ctx, conn, Origin::Accepted(remote)),
        }
    }

    pub(in crate::client) fn reach_connected(&mut self, conn: ConnId) -> bool {
        let Some(news) = self.reach.on_connected(&mut self.ctx, conn) else {
            return false;
        };
        self.on_reach_news(news);
        true
    }

    pub(in crate::client) fn reach_connect_failed(
        &mut self,
        conn: ConnId,
        why: Unreachable,
    ) -> bool {
        let Some(news) = self.reach.on_connect_failed(&mut self.ctx, conn, why) else {
            return false;
        };
        self.on_reach_news(news);
        true
    }

    pub(in crate::client) fn reach_closed(&mut self, conn: ConnId) -> bool {
        let Some(news) = self.reach.on_closed(&mut self.ctx, conn) else {
            return false;
        };
        self.on_reach_news(news);
        true
    }

    pub(in crate::client) fn reach_data(&mut self, conn: ConnId, bytes: &[u8]) {
        if let Some(news) = self.reach.on_data(&mut self.ctx, conn, bytes) {
            self.on_reach_news(news);
        }
    }

    pub(in crate::client) fn reach_timeout(&mut self) {
        let news = self.reach.expired(&mut self.ctx);
        self.on_reach_news(news);
    }

    fn on_reach_news(&mut self, news: ReachNews) {
        match news {
            ReachNews::Quiet => {}
            ReachNews::PathUp => {
                if self.reach.chat_wanted() {
                    if let Some(Ok((conn, path))) = self.reach.take_path() {
                        self.ask_on_path(conn, path);
                    }
                }
            }
            ReachNews::Incoming {
                conn,
                origin,
                decoder,
                rest,
            } => {
                self.incoming.accept(&mut self.ctx, conn, origin);
                if let Some(decoder) = decoder {
                    self.incoming.keep_decoder(conn, decoder);
                    // Also when `rest` is empty: the decoder may hold the CHAT already.
                    self.incoming_data(conn, &rest);
                }
            }
            ReachNews::Failed => {
                if self.reach.chat_wanted() {
                    if let Some(Err(why)) = self.reach.take_path() {
                        self.unreached(why);
                    }
                }
            }
        }
    }
}
