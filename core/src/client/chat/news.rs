//! What the rest of the client does when the chat moves: `/chat`, message lines,
//! and the news the chat reports, turned into mode-table triggers.

use super::super::*;
use super::*;

impl Client {
    pub(in crate::client) fn command_chat(&mut self) {
        if self.allowed(Trigger::ChatCommand) && !self.chat_on_path() {
            self.chat.start(&mut self.ctx);
        }
    }

    /// A line that is not a command: sent in WRITE MODE, else held for our turn.
    pub(in crate::client) fn message_line(&mut self, text: Vec<u8>) {
        if !self.allowed(Trigger::MessageLine) {
            return;
        }
        let max = self.chat.max_text(self.ctx.config.limits.max_body);
        if text.len() > max {
            let len = text.len();
            return self.ctx.error(ClientError::MessageTooLong { len, max });
        }
        if self.mode == Mode::Write {
            self.send_message(text);
        } else {
            self.chat.hold(&mut self.ctx, text);
        }
    }

    fn send_message(&mut self, text: Vec<u8>) {
        if self.chat.send(&mut self.ctx, &text) {
            self.enter(Trigger::MessageSent);
        }
    }

    /// Entering WRITE MODE with held messages sends the oldest at once.
    fn send_held(&mut self) {
        if self.mode == Mode::Write {
            if let Some(text) = self.chat.held.pop_front() {
                self.send_message(text);
            }
        }
    }

    pub(in crate::client) fn chat_connected(&mut self, conn: ConnId) {
        let me = self.server.me(&self.ctx, self.listening);
        if let Some(news) = self.chat.on_connected(&mut self.ctx, conn, me) {
            self.on_chat_news(news);
        }
    }

    pub(in crate::client) fn chat_connect_failed(&mut self, conn: ConnId, error: IoFailure) {
        if let Some(news) = self.chat.on_connect_failed(&mut self.ctx, conn, error) {
            self.on_chat_news(news);
        }
    }

    /// True if `conn` was the chat connection.
    pub(in crate::client) fn chat_closed(&mut self, conn: ConnId) -> bool {
        let Some(news) = self.chat.on_closed(&mut self.ctx, conn) else {
            return false;
        };
        self.on_chat_news(news);
        self.pump();
        true
    }

    pub(in crate::client) fn chat_timeout(&mut self) {
        if let Some(news) = self.chat.expired(&mut self.ctx) {
            self.on_chat_news(news);
        }
    }

    pub(in crate::client) fn chat_data(&mut self, bytes: &[u8]) {
        let mut input = bytes;
        while !self.exited {
            match self.chat.receive(&mut self.ctx, &mut input) {
                Some(news) => self.on_chat_news(news),
                None => return,
            }
        }
    }

    /// Moves the rest of the client after the chat moved.
    pub(in crate::client) fn on_chat_news(&mut self, news: ChatNews) {
        match news {
            ChatNews::Quiet => {}
            ChatNews::Accepted => {
                self.enter(Trigger::ChatAccepted);
                self.send_held();
                self.pump();
            }
            ChatNews::Failed => {
                self.enter(Trigger::ChatEnded);
                self.pump();
            }
            ChatNews::Ended => self.enter(Trigger::ChatEnded),
            ChatNews::Message(text) => self.peer_message(text),
        }
    }

    /// The peer's MESSAGE: shown if it is the peer's turn, else the chat breaks.
    fn peer_message(&mut self, text: Vec<u8>) {
        let Some(from) = self.chat.peer() else {
            return;
        };
        match self.check(Trigger::MessageReceived) {
            Ok(next) => {
                let text = String::from_utf8_lossy(&text).into_owned();
                self.ctx
                    .outputs
                    .event(ClientEvent::MessageReceived { from, text });
                self.set_mode(next);
                self.send_held();
            }
            Err(refusal) => {
                let news = self
                    .chat
                    .lose(&mut self.ctx, LostReason::Protocol(refusal), true);
                self.on_chat_news(news);
            }
        }
    }
}
