//! The client as an [`Endpoint`]: each input routed to the sub-machine that owns it.

use super::*;

/// Routes every input to the sub-machine that owns it.
impl Endpoint for Client {
    type Input = ClientInput;
    type Event = ClientEvent;

    fn handle_listening(&mut self, now: Instant, addr: SocketAddr) {
        self.ctx.now = now;
        if self.exited || self.listening.is_some() {
            return;
        }
        self.listening = Some(addr);
        self.ctx.outputs.event(ClientEvent::Listening(addr));
        self.server.start(&mut self.ctx, addr.port());
        self.finish_startup();
    }

    fn handle_listen_failed(&mut self, now: Instant, addr: SocketAddr, error: &io::Error) {
        self.ctx.now = now;
        if self.exited {
            return;
        }
        let error = IoFailure::from(error);
        self.finish(Err(ClientError::ChatListen { addr, error }.into()));
    }

    fn handle_accept(&mut self, now: Instant, peer: SocketAddr) -> ConnId {
        self.ctx.now = now;
        let conn = self.ctx.new_conn();
        if self.exited {
            self.ctx.outputs.close(conn);
        } else {
            self.accept_conn(conn, peer);
        }
        conn
    }

    fn handle_connected(&mut self, now: Instant, conn: ConnId, local: SocketAddr) {
        self.ctx.now = now;
        if self.exited {
            return;
        }
        if self
            .server
            .on_connected(&mut self.ctx, conn, local, self.listening)
        {
            self.finish_startup();
        } else if !self.reach_connected(conn) {
            self.chat_connected(conn);
        }
    }

    fn handle_connect_failed(&mut self, now: Instant, conn: ConnId, error: &io::Error) {
        self.ctx.now = now;
        if self.exited {
            return;
        }
        let error = IoFailure::from(error);
        match self
            .server
            .on_connect_failed(&mut self.ctx, conn, error.clone())
        {
            Some(news) => self.on_server_news(news),
            None => {
                if !self.reach_connect_failed(conn, Unreachable::Failed(error.clone())) {
                    self.chat_connect_failed(conn, error);
                }
            }
        }
    }

    fn handle_data(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        self.ctx.now = now;
        if self.exited || !self.knows(conn) {
            return;
        }
        if self.ctx.config.trace {
            self.ctx.outputs.event(ClientEvent::Trace {
                conn,
                direction: Direction::Received,
                bytes: bytes.to_vec(),
            });
        }
        if self.server.conn() == Some(conn) {
            self.server_data(bytes);
        } else if self.chat.owns(conn) {
            self.chat_data(bytes);
        } else if self.reach.owns(conn) {
            self.reach_data(conn, bytes);
        } else {
            self.incoming_data(conn, bytes);
        }
    }

    fn handle_closed(&mut self, now: Instant, conn: ConnId) {
        self.ctx.now = now;
        if self.exited {
            return;
        }
        if let Some(news) = self.server.on_closed(&mut self.ctx, conn) {
            return self.on_server_news(news);
        }
        if !self.chat_closed(conn) && !self.reach_closed(conn) {
            self.incoming.forget(conn);
        }
    }

    fn handle_input(&mut self, now: Instant, input: ClientInput) {
        self.ctx.now = now;
        if self.exited {
            return;
        }
        match input {
            ClientInput::Interrupt => self.quit(),
            ClientInput::EndOfInput if self.is_busy() => self.queue.push_back(Queued::EndOfInput),
            ClientInput::EndOfInput => self.quit(),
            ClientInput::Line(line) => {
                if self.waits(!Self::is_command(&line)) {
                    self.queue.push_back(Queued::Line(line));
                } else {
                    self.handle_line(line);
                }
            }
            ClientInput::Message(text) => {
                if self.waits(true) {
                    self.queue.push_back(Queued::Message(text));
                } else {
                    self.message_line(text.into_bytes());
                }
            }
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.ctx.now = now;
        if self.exited {
            return;
        }
        self.server_timeout();
        if !self.exited {
            self.chat_timeout();
        }
        if !self.exited {
            self.reach_timeout();
        }
        if !self.exited {
            self.incoming.expire(&mut self.ctx);
        }
    }

    fn poll_output(&mut self) -> Option<Output<'_, ClientEvent>> {
        self.ctx.outputs.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.exited {
            return None;
        }
        [
            self.server.deadline(),
            self.chat.deadline(),
            self.incoming.deadline(),
            self.reach.deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}
